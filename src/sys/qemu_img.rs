//! `qemu-img convert`, the image cache's one converter: the argv (format fixed, source
//! through an inherited descriptor, confined by Landlock) and its run with progress.
//! The job around it (hashing, cancellation, stamping, the cache's rows) is the
//! engine's (`engine/import.rs`).

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use super::cmd::{Cmd, CmdError, Output, Runner};
use super::landlock::Confinement;

/// How long one conversion may take.
const CONVERT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Parse `qemu-img convert -p` output: the last `(NN.NN/100%)` seen.
pub fn parse_progress(text: &str) -> Option<f64> {
    text.rsplit('(').find_map(|part| {
        part.split_once("/100%)")
            .and_then(|(p, _)| p.trim().parse().ok())
    })
}

/// `qemu-img convert` from `format` to raw, reading the source through an inherited
/// descriptor, confined by Landlock to it, the output file and the system libraries.
/// An error is Landlock's (the ruleset could not be built).
pub fn convert_command(source: &File, format: &str, out: &Path) -> std::io::Result<Cmd> {
    let mut c = Confinement::new()?;
    let fd = c.allow_read(source)?;
    c.allow_write(out)?;
    Ok(Cmd::new("qemu-img")
        .args([
            "convert".to_string(),
            "-p".into(),
            "-f".into(),
            format.to_string(),
            "-O".into(),
            "raw".into(),
            format!("/dev/fd/{fd}"),
            out.display().to_string(),
        ])
        .timeout(CONVERT_TIMEOUT)
        .confined(c))
}

/// `qemu-img convert -f raw -O <format>` of a snapshot (an export): reading the source
/// through an inherited descriptor, writing only the file `out` (opened by shelfd; the
/// converter is given its path `out_path`), confined by Landlock like an import.
pub fn export_command(
    source: &File,
    format: &str,
    out: &File,
    out_path: &Path,
) -> std::io::Result<Cmd> {
    let mut c = Confinement::new()?;
    let fd = c.allow_read(source)?;
    c.allow_write_file(out)?;
    Ok(Cmd::new("qemu-img")
        .args([
            "convert".to_string(),
            "-p".into(),
            "-f".into(),
            "raw".into(),
            "-O".into(),
            format.to_string(),
            format!("/dev/fd/{fd}"),
            out_path.display().to_string(),
        ])
        .timeout(CONVERT_TIMEOUT)
        .confined(c))
}

/// Run a [`convert_command`], calling `progress` with each percentage qemu-img reports.
pub async fn convert(
    runner: &Runner,
    cmd: &Cmd,
    mut progress: impl FnMut(f64),
) -> Result<Output, CmdError> {
    runner
        .run_streaming(cmd, move |chunk| {
            if let Some(pct) = parse_progress(&String::from_utf8_lossy(chunk)) {
                progress(pct);
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_img_output_is_read() {
        assert_eq!(
            parse_progress("    (0.00/100%)\r    (42.50/100%)\r"),
            Some(42.5)
        );
        assert_eq!(parse_progress("nothing"), None);
    }
}
