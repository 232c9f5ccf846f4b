//! `shelfctl extstorage install DIR`: write a Ganeti ExtStorage provider directory.
//!
//! Each script is a two-line `#!/bin/sh` wrapper that `exec`s shelfctl with its action, so
//! the logic lives once, in shelfctl; `parameters.list` declares the `EXTP_*` parameters.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::env::{Action, PARAMETERS};

/// What `install` writes into the provider directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Install {
    /// The provider directory, e.g. `/srv/ganeti/extstorage/shelf`.
    pub dir: PathBuf,
    /// The shelfctl the scripts run (absolute).
    pub shelfctl: PathBuf,
    /// A socket baked into the scripts (`EXTP_SOCKET` still overrides it).
    pub socket: Option<PathBuf>,
}

/// Quote a word for /bin/sh (single quotes; `'` as `'\''`).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The text of one script.
pub fn script(i: &Install, action: Action) -> String {
    let mut cmd = vec![sh_quote(&i.shelfctl.display().to_string())];
    if let Some(s) = &i.socket {
        cmd.push("--socket".into());
        cmd.push(sh_quote(&s.display().to_string()));
    }
    cmd.push("extstorage".into());
    cmd.push(action.name().into());
    format!(
        "#!/bin/sh\n# Ganeti ExtStorage provider backed by shelf (written by shelfctl extstorage install).\nexec {} \"$@\"\n",
        cmd.join(" ")
    )
}

/// The text of `parameters.list`: `name description`, one a line.
pub fn parameters_list() -> String {
    PARAMETERS
        .iter()
        .map(|(n, d)| format!("{n} {d}\n"))
        .collect()
}

/// Parse `install DIR [--shelfctl PATH] [--socket PATH]`.
pub fn parse(args: &[String], global_socket: Option<PathBuf>) -> Result<Install, String> {
    let mut dir = None;
    let mut shelfctl = None;
    let mut socket = global_socket;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("{flag} needs a path"))
        };
        match a.as_str() {
            "--shelfctl" => shelfctl = Some(value("--shelfctl")?),
            "--socket" => socket = Some(value("--socket")?),
            s if s.starts_with('-') => return Err(format!("unknown option {s:?}")),
            s if dir.is_none() => dir = Some(PathBuf::from(s)),
            s => return Err(format!("unexpected argument {s:?}")),
        }
    }
    let dir =
        dir.ok_or("install needs the provider directory, e.g. /srv/ganeti/extstorage/shelf")?;
    let shelfctl = match shelfctl {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(|e| format!("cannot tell where this shelfctl is ({e}); pass --shelfctl"))?,
    };
    if !shelfctl.is_absolute() {
        return Err(format!(
            "--shelfctl {} must be an absolute path (Ganeti runs scripts without PATH)",
            shelfctl.display()
        ));
    }
    Ok(Install {
        dir,
        shelfctl,
        socket,
    })
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("renaming to {}: {e}", path.display()))
}

/// Write every script and `parameters.list` (replacing earlier ones); returns the files.
pub fn install(i: &Install) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(&i.dir).map_err(|e| format!("creating {}: {e}", i.dir.display()))?;
    let mut written = Vec::new();
    for a in Action::ALL {
        let p = i.dir.join(a.name());
        write(&p, &script(i, a), 0o755)?;
        written.push(p);
    }
    let p = i.dir.join("parameters.list");
    write(&p, &parameters_list(), 0o644)?;
    written.push(p);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_exec_shelfctl_with_their_action() {
        let i = Install {
            dir: "/x".into(),
            shelfctl: "/opt/it's/shelfctl".into(),
            socket: Some("/run/s.sock".into()),
        };
        let s = script(&i, Action::Grow);
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.ends_with(
            "exec '/opt/it'\\''s/shelfctl' --socket '/run/s.sock' extstorage grow \"$@\"\n"
        ));
        assert!(parameters_list().starts_with("pool "));
        assert_eq!(parameters_list().lines().count(), PARAMETERS.len());
    }

    #[test]
    fn parses_install_arguments() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let i = parse(&a(&["/d", "--shelfctl", "/usr/bin/shelfctl"]), None).unwrap();
        assert_eq!((i.dir, i.socket), ("/d".into(), None));
        assert!(parse(&a(&[]), None).is_err());
        assert!(parse(&a(&["/d", "--shelfctl", "rel/shelfctl"]), None).is_err());
        assert!(parse(&a(&["/d", "/e"]), None).is_err());
        assert!(parse(&a(&["/d", "--frob"]), None).is_err());
    }
}
