//! The node service's one door to external programs (STYLE.md rules 4, 13, 21).
//!
//! Every program the node runs is listed in [`NODE_PROGRAMS`], resolved once at start from
//! shelf's fixed directories ([`SEARCH_DIRS`], never `$PATH`), and the missing ones are
//! logged with what needs them. Commands run through [`Tools::run`] only: shelf's runner
//! (`shelf::sys::cmd`: argv vector, no shell, timeout, output captured, an error naming
//! the escaped argv, exit status and stderr) on tokio's blocking pool, so a slow `mkfs`
//! never stalls another RPC. No secret is ever put in an argv: the one secret the node
//! handles (a CHAP secret) goes into open-iscsi's node record file (iscsi.rs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shelf::sys::cmd::{Cmd, CmdError, Output, Runner, SEARCH_DIRS};
use tonic::Status;

/// Every program the node may run, and what needs it (for the start-up report).
pub const NODE_PROGRAMS: &[(&str, &str)] = &[
    ("mount", "every volume"),
    ("umount", "every volume"),
    ("iscsiadm", "iSCSI volumes"),
    ("nvme", "NVMe/TCP volumes"),
    ("mount.nfs", "NFS volumes (run by mount)"),
    ("blkid", "formatting block volumes"),
    ("losetup", "read-only publishes of block volumes"),
    ("mkfs.ext4", "ext4 volumes"),
    ("mkfs.xfs", "xfs volumes"),
    ("resize2fs", "expanding ext4 volumes"),
    ("xfs_growfs", "expanding xfs volumes"),
];

/// How long a blocking file-system call ([`offload`]) may take: a hung NFS server or a
/// dead device can make statvfs, fsync or a mountinfo read block for ever.
pub const BLOCKING_TIMEOUT: Duration = Duration::from_secs(30);

/// Run the blocking `f` (syscalls, file reads, fsyncs, sysfs scans) on tokio's blocking
/// pool, never on a runtime worker (STYLE rule 7), waiting at most [`BLOCKING_TIMEOUT`]:
/// DEADLINE_EXCEEDED naming `what` when it expires (the thread finishes on its own).
pub async fn offload<T, F>(what: &str, f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Status> + Send + 'static,
{
    offload_for(what, BLOCKING_TIMEOUT, f).await
}

/// [`offload`] with another limit.
pub async fn offload_for<T, F>(what: &str, limit: Duration, f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Status> + Send + 'static,
{
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(Status::internal(format!("{what}: {e}"))),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{what} did not finish within {} s",
            limit.as_secs()
        ))),
    }
}

/// How long a command may run unless it says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The programs as resolved at start, and the runner that runs them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tools {
    paths: BTreeMap<&'static str, Option<PathBuf>>,
    runner: Runner,
}

impl Tools {
    /// Resolve [`NODE_PROGRAMS`] in [`SEARCH_DIRS`] and log one line of what was found
    /// and what is missing (a warning when something is). A missing program does not
    /// stop the plugin: the RPC that needs it fails with FAILED_PRECONDITION naming it.
    pub fn at_start() -> Tools {
        let dirs: Vec<&Path> = SEARCH_DIRS.iter().map(Path::new).collect();
        let tools = Tools::resolve_in(&dirs, DEFAULT_TIMEOUT);
        let missing = tools.missing();
        let line = tools.summary();
        if missing.is_empty() {
            log::info!("{line}");
        } else {
            log::warn!("{line}");
        }
        tools
    }

    /// Resolve [`NODE_PROGRAMS`] in `dirs`, in order, for a runner with `timeout`.
    pub fn resolve_in(dirs: &[&Path], timeout: Duration) -> Tools {
        use std::os::unix::fs::PermissionsExt;
        let find = |name: &str| {
            dirs.iter().map(|d| d.join(name)).find(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
        };
        Tools {
            paths: NODE_PROGRAMS.iter().map(|(n, _)| (*n, find(n))).collect(),
            runner: Runner::new(timeout),
        }
    }

    /// The programs not found, each with what needs it.
    pub fn missing(&self) -> Vec<(&'static str, &'static str)> {
        NODE_PROGRAMS
            .iter()
            .filter(|(n, _)| matches!(self.paths.get(n), Some(None)))
            .copied()
            .collect()
    }

    /// `node programs: found a (/usr/bin/a), ...; missing: b (for c), ...`.
    pub fn summary(&self) -> String {
        let found: Vec<String> = self
            .paths
            .iter()
            .filter_map(|(n, p)| p.as_ref().map(|p| format!("{n} ({})", p.display())))
            .collect();
        let missing: Vec<String> = self
            .missing()
            .iter()
            .map(|(n, what)| format!("{n} (for {what})"))
            .collect();
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        format!(
            "node programs: found {}; missing: {}",
            list(found),
            list(missing)
        )
    }

    /// Whether `program` was found at start.
    pub fn has(&self, program: &str) -> bool {
        matches!(self.paths.get(program), Some(Some(_)))
    }

    /// A command for `program` (one of [`NODE_PROGRAMS`]) by the path resolved at start;
    /// FAILED_PRECONDITION when it is not installed.
    pub fn cmd(&self, program: &str) -> Result<Cmd, Status> {
        match self.paths.get(program) {
            Some(Some(path)) => Ok(Cmd::new(&path.to_string_lossy())),
            Some(None) => Err(Status::failed_precondition(format!(
                "program {program} is not installed on this node (looked in {})",
                SEARCH_DIRS.join(", ")
            ))),
            None => Err(Status::internal(format!(
                "program {program} is not in the node's program table"
            ))),
        }
    }

    /// Run `cmd` to completion off the event loop; the [`CmdError`] when it fails, for a
    /// caller that tells one exit code from another (`blkid` 2, `iscsiadm` 15 and 21).
    pub async fn try_run(&self, cmd: Cmd) -> Result<Output, CmdError> {
        let runner = self.runner.clone();
        let argv = cmd.display();
        tokio::task::spawn_blocking(move || runner.run_blocking(&cmd))
            .await
            .unwrap_or_else(|e| {
                Err(CmdError::Spawn {
                    argv,
                    reason: e.to_string(),
                })
            })
    }

    /// Run `cmd`; a failure is INTERNAL with the error's text (escaped argv with secrets
    /// redacted, exit status, stdout and stderr).
    pub async fn run(&self, cmd: Cmd) -> Result<Output, Status> {
        self.try_run(cmd).await.map_err(cmd_status)
    }
}

/// A failed command as a status: INTERNAL, naming the command and what it printed.
pub fn cmd_status(e: CmdError) -> Status {
    Status::internal(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn offloaded_work_that_hangs_is_deadline_exceeded() {
        let e = offload_for("a stuck statvfs", Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_millis(500));
            Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded);
        assert!(e.message().contains("a stuck statvfs"), "{}", e.message());
        assert_eq!(offload("quick", || Ok(7)).await.unwrap(), 7);
    }

    #[test]
    fn resolves_from_the_given_dirs_only_and_names_the_missing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mount");
        std::fs::write(&p, b"").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let t = Tools::resolve_in(&[dir.path()], DEFAULT_TIMEOUT);
        assert!(t.cmd("mount").is_ok());
        let e = t.cmd("iscsiadm").unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains("iscsiadm"), "{}", e.message());
        assert_eq!(t.cmd("cat").unwrap_err().code(), tonic::Code::Internal);
        let line = t.summary();
        assert!(line.contains(&format!("mount ({})", p.display())), "{line}");
        assert!(line.contains("iscsiadm (for iSCSI volumes)"), "{line}");
        assert_eq!(t.missing().len(), NODE_PROGRAMS.len() - 1);
    }

    #[tokio::test]
    async fn a_failure_carries_argv_exit_and_stderr() {
        let t = Tools::resolve_in(&[Path::new("/usr/bin"), Path::new("/bin")], DEFAULT_TIMEOUT);
        let e = t
            .run(t.cmd("umount").unwrap().arg("/no/such/mount/point"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Internal);
        let m = e.message();
        assert!(m.contains("umount /no/such/mount/point"), "{m}");
        assert!(m.contains("exit status"), "{m}");
        assert!(m.contains("stderr"), "{m}");
    }
}
