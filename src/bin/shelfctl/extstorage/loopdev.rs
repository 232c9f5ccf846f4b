//! Loop devices over volume files: how `attach` gives Ganeti a block device when Ganeti runs
//! on the appliance itself.
//!
//! `losetup` runs through the library's command runner ([`shelf::sys::cmd`]): found in
//! its fixed directories (never `$PATH`: Ganeti runs scripts with a scrubbed environment),
//! no shell, a timeout, and a failure that names the argv, exit status and stderr. Attach and detach take an exclusive lock on a lock file, so two
//! attaches of the same volume at once cannot set up two loop devices.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use shelf::sys::cmd::{Cmd, Runner};

/// How long one `losetup` may take before it is killed.
const LOSETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The lock that serialises loop-device changes made by this provider on this node.
const LOCK_FILE: &str = "/run/lock/shelf-extstorage.lock";

/// argv (after the program) listing the loop devices backed by `file`, one name a line.
pub fn list_args(file: &Path) -> Vec<String> {
    vec![
        "--noheadings".into(),
        "--output".into(),
        "NAME".into(),
        "--associated".into(),
        file.display().to_string(),
    ]
}

/// argv setting up a new loop device for `file` and printing its name.
pub fn setup_args(file: &Path, read_only: bool) -> Vec<String> {
    let mut a = vec!["--find".into(), "--show".into()];
    if read_only {
        a.push("--read-only".into());
    }
    a.push(file.display().to_string());
    a
}

/// argv making a loop device re-read the size of its backing file.
pub fn refresh_args(dev: &str) -> Vec<String> {
    vec!["--set-capacity".into(), dev.into()]
}

/// argv detaching a loop device.
pub fn detach_args(dev: &str) -> Vec<String> {
    vec!["--detach".into(), dev.into()]
}

/// The device names in `losetup --noheadings --output NAME` output.
pub fn parse_names(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("/dev/"))
        .map(str::to_string)
        .collect()
}

/// Run losetup (shelfctl is synchronous: the runner's blocking entry); its stdout, or the
/// runner's error naming the command, exit status and stderr.
fn run(args: &[String]) -> Result<String, String> {
    Runner::new(LOSETUP_TIMEOUT)
        .run_blocking(&Cmd::new("losetup").args(args.iter().cloned()))
        .map(|out| out.stdout_text())
        .map_err(|e| e.to_string())
}

/// Hold the provider's lock until the returned file is dropped.
fn lock() -> Result<nix::fcntl::Flock<File>, String> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .map_err(|e| format!("cannot open the lock file {LOCK_FILE}: {e}"))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock {LOCK_FILE}: {e}"))
}

/// The loop devices backed by `file`.
pub fn devices_of(file: &Path) -> Result<Vec<String>, String> {
    Ok(parse_names(&run(&list_args(file))?))
}

/// The loop device of `file`: the existing one, else a new one. Idempotent.
pub fn attach(file: &Path, read_only: bool) -> Result<String, String> {
    let _lock = lock()?;
    if let Some(dev) = devices_of(file)?.into_iter().next() {
        return Ok(dev);
    }
    parse_names(&run(&setup_args(file, read_only))?)
        .into_iter()
        .next()
        .ok_or_else(|| format!("losetup set up no device for {}", file.display()))
}

/// Detach every loop device of `file`; returns how many. Nothing attached is success.
pub fn detach(file: &Path) -> Result<usize, String> {
    let _lock = lock()?;
    let devs = devices_of(file)?;
    for d in &devs {
        run(&detach_args(d))?;
    }
    Ok(devs.len())
}

/// Make every loop device of `file` see its current size (after a grow).
pub fn refresh(file: &Path) -> Result<(), String> {
    for d in devices_of(file)? {
        run(&refresh_args(&d))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recorded_losetup_output() {
        // `losetup --noheadings --output NAME --associated FILE`, util-linux 2.38.1.
        assert_eq!(
            parse_names("/dev/loop1\n/dev/loop7\n"),
            vec!["/dev/loop1", "/dev/loop7"]
        );
        assert!(parse_names("").is_empty());
        assert!(parse_names("losetup: warning\n").is_empty());
    }

    #[test]
    fn builds_argv_without_a_shell() {
        let f = Path::new("/srv/p/shares/a b/volume");
        assert_eq!(list_args(f).last().unwrap(), "/srv/p/shares/a b/volume");
        assert_eq!(
            setup_args(f, true),
            vec![
                "--find",
                "--show",
                "--read-only",
                "/srv/p/shares/a b/volume"
            ]
        );
        assert_eq!(
            refresh_args("/dev/loop3"),
            vec!["--set-capacity", "/dev/loop3"]
        );
        assert_eq!(detach_args("/dev/loop3"), vec!["--detach", "/dev/loop3"]);
    }
}
