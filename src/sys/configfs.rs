//! configfs, the kernel's directory-shaped control interface (nvmet, LIO): an object is made with
//! `mkdir`, configured by writing one value to each attribute file, connected to another with
//! a symbolic link, and taken apart with `unlink` and `rmdir` in the reverse order.
//!
//! Drivers describe a change as a list of [`Op`]s relative to a root (a pure plan they test
//! in-file) and [`run`] carries it out. Every call here blocks: run them on `smol::unblock`.
//! Each step is idempotent (a directory or link already there, or already gone, is done), so
//! a plan interrupted half-way is finished by running it again.

use std::io;
use std::path::{Path, PathBuf};

/// One configfs step, with paths relative to the root it is run against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Make an object (the kernel fills it with its attribute files).
    Mkdir(PathBuf),
    /// Write one value to an attribute.
    Write(PathBuf, String),
    /// Write a secret (a CHAP password) to an attribute: shown as `(secret)` in every
    /// message and debug print, never as its value.
    WriteSecret(PathBuf, Secret),
    /// Link `link` to `target` (both under the root).
    Link {
        /// The object linked to.
        target: PathBuf,
        /// The link made.
        link: PathBuf,
    },
    /// Remove a link.
    Unlink(PathBuf),
    /// Remove an (empty of user-made children) object.
    Rmdir(PathBuf),
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Mkdir(p) => write!(f, "mkdir {}", p.display()),
            Op::Write(p, v) => write!(f, "write {v:?} to {}", p.display()),
            Op::WriteSecret(p, _) => write!(f, "write (secret) to {}", p.display()),
            Op::Link { target, link } => {
                write!(f, "link {} -> {}", link.display(), target.display())
            }
            Op::Unlink(p) => write!(f, "unlink {}", p.display()),
            Op::Rmdir(p) => write!(f, "rmdir {}", p.display()),
        }
    }
}

/// A secret value (a CHAP password): its `Debug` and `Display` never show it, so an [`Op`]
/// or [`OpError`] carrying one can be logged and returned in errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself: only for writing it where it goes, or comparing it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(secret)")
    }
}

/// A step that failed, and why.
#[derive(Debug)]
pub struct OpError {
    /// The step.
    pub op: Op,
    /// The kernel's answer.
    pub error: io::Error,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.op, self.error)
    }
}

/// Carry out `ops` in order against `root`; stops at the first step that fails.
pub fn run(root: &Path, ops: &[Op]) -> Result<(), OpError> {
    for op in ops {
        run_one(root, op).map_err(|error| OpError {
            op: op.clone(),
            error,
        })?;
    }
    Ok(())
}

fn run_one(root: &Path, op: &Op) -> io::Result<()> {
    let tolerate = |r: io::Result<()>, done: io::ErrorKind| match r {
        Err(e) if e.kind() == done => Ok(()),
        other => other,
    };
    match op {
        Op::Mkdir(p) => tolerate(
            std::fs::create_dir(root.join(p)),
            io::ErrorKind::AlreadyExists,
        ),
        Op::Write(p, v) => write_attr(&root.join(p), v),
        Op::WriteSecret(p, v) => write_attr(&root.join(p), v.expose()),
        Op::Link { target, link } => tolerate(
            std::os::unix::fs::symlink(root.join(target), root.join(link)),
            io::ErrorKind::AlreadyExists,
        ),
        Op::Unlink(p) => tolerate(std::fs::remove_file(root.join(p)), io::ErrorKind::NotFound),
        Op::Rmdir(p) => tolerate(std::fs::remove_dir(root.join(p)), io::ErrorKind::NotFound),
    }
}

/// Write `value` to an attribute in one `write` (configfs stores each write whole), without
/// creating it: an attribute that does not exist is not one this kernel has.
pub fn write_attr(path: &Path, value: &str) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    let n = f.write(value.as_bytes())?;
    if n != value.len() {
        return Err(io::Error::other(format!(
            "short write ({n} of {} bytes)",
            value.len()
        )));
    }
    Ok(())
}

/// An attribute's value without its trailing newline; `None` when it does not exist.
pub fn read_attr(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim_end_matches('\n').to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The names in a directory, sorted (empty when it does not exist).
pub fn names(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries {
        out.push(e?.file_name().to_string_lossy().into_owned());
    }
    out.sort();
    Ok(out)
}

/// The names of the symbolic links in a directory, sorted (empty when it does not exist).
pub fn links(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for n in names(dir)? {
        if std::fs::symlink_metadata(dir.join(&n)).is_ok_and(|m| m.file_type().is_symlink()) {
            out.push(n);
        }
    }
    Ok(out)
}

/// The names of the directories in a directory, sorted (empty when it does not exist).
pub fn dirs(dir: &Path) -> io::Result<Vec<String>> {
    Ok(names(dir)?
        .into_iter()
        .filter(|n| is_dir(&dir.join(n)))
        .collect())
}

/// Whether `path` is a directory (an object, or the root itself).
pub fn is_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Whether the kernel module `name` is loaded (`/sys/module/<name>`).
pub fn module_loaded(name: &str) -> bool {
    Path::new("/sys/module").join(name).is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain directory is not configfs (mkdir creates no attribute files there); this only
    /// checks that each step is idempotent and that a failure names its step.
    #[test]
    fn steps_are_idempotent_on_a_plain_directory_not_configfs() {
        let root = std::env::temp_dir().join(format!("shelf-configfs-ops-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("attr"), "").unwrap();
        let ops = vec![
            Op::Mkdir("a".into()),
            Op::Mkdir("b".into()),
            Op::Write("attr".into(), "1".into()),
            Op::Link {
                target: "a".into(),
                link: "b/a".into(),
            },
        ];
        run(&root, &ops).unwrap();
        run(&root, &ops).unwrap();
        assert_eq!(read_attr(&root.join("attr")).unwrap().as_deref(), Some("1"));
        assert_eq!(names(&root.join("b")).unwrap(), vec!["a".to_string()]);
        let undo = vec![
            Op::Unlink("b/a".into()),
            Op::Rmdir("b".into()),
            Op::Rmdir("a".into()),
        ];
        run(&root, &undo).unwrap();
        run(&root, &undo).unwrap();
        assert!(!root.join("a").exists());
        let e = run(&root, &[Op::Write("absent".into(), "1".into())]).unwrap_err();
        assert!(e.to_string().contains("absent"), "{e}");
        // A secret is written as it is, and never shown.
        let secret = Op::WriteSecret("attr".into(), Secret::new("s3cret-value"));
        run(&root, std::slice::from_ref(&secret)).unwrap();
        assert_eq!(
            read_attr(&root.join("attr")).unwrap().as_deref(),
            Some("s3cret-value")
        );
        let e = run(
            &root,
            &[Op::WriteSecret(
                "absent".into(),
                Secret::new("s3cret-value"),
            )],
        )
        .unwrap_err();
        for shown in [e.to_string(), format!("{e:?}"), format!("{secret:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
