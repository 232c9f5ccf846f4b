//! iSCSI with open-iscsi: create the node record, put the CHAP credentials in it, log in,
//! wait for the LUN's disk; log out and delete the record on unstage.
//!
//! The CHAP secret never appears in an argv (`iscsiadm -o update -n
//! node.session.auth.password -v SECRET` would show it to every user through
//! /proc/<pid>/cmdline). Instead the node writes it into the node record file itself:
//! `iscsiadm -m node -o new` creates the record (open-iscsi's idbm: the file
//! `<nodes>/<iqn>/<address>,<port>` for a record without a portal group tag, or
//! `<nodes>/<iqn>/<address>,<port>,<tpgt>/<iface>` in the newer layout), and the node
//! rewrites that file, mode 0600 through a temporary file and a rename, with the
//! `node.session.auth.*` lines set. `iscsiadm --login` then reads the record and hands the
//! credentials to iscsid over its unix socket. Once the login succeeded the node rewrites
//! the record once more without the `node.session.auth.*` lines, so the secret is on disk
//! only for the moment of the login (see [`strip_chap_after_login`] for why recovery
//! does not need it); NodeUnstage deletes the record with `-o delete`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tonic::Status;
use zeroize::Zeroizing;

use super::tools::{cmd_status, Tools};

/// `iscsiadm`'s exit status for "session exists" (already logged in).
const ISCSI_ERR_SESS_EXISTS: i32 = 15;
/// `iscsiadm`'s exit status for "no records/sessions found".
const ISCSI_ERR_NO_OBJS_FOUND: i32 = 21;
/// `iscsiadm`'s exit status for a login the target refused for its credentials.
const ISCSI_ERR_LOGIN_AUTH_FAILED: i32 = 24;
/// How long to wait for the LUN's disk after login.
pub const DEVICE_WAIT: Duration = Duration::from_secs(30);

/// The CHAP credentials of a login; the secret is wiped from memory when dropped and
/// never shown by `Debug`.
pub struct Chap {
    /// The CHAP user name.
    pub user: String,
    /// The CHAP secret (opened from publish_context's sealed one).
    pub secret: Zeroizing<String>,
}

impl std::fmt::Debug for Chap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chap")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// `address` and `port` of a portal `address:port` or `[v6]:port` (port 3260 when absent).
pub fn split_portal(portal: &str) -> Result<(String, String), Status> {
    let bad = || Status::invalid_argument(format!("target_portal {portal:?} is not address:port"));
    let (address, port) = if let Some(rest) = portal.strip_prefix('[') {
        let (a, p) = rest.split_once(']').ok_or_else(bad)?;
        (
            a.to_string(),
            p.strip_prefix(':').unwrap_or("3260").to_string(),
        )
    } else {
        match portal.rsplit_once(':') {
            Some((a, p)) => (a.to_string(), p.to_string()),
            None => (portal.to_string(), "3260".to_string()),
        }
    };
    let ok_addr = !address.is_empty()
        && address
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".:-".contains(c));
    if !ok_addr || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok((address, port))
}

/// The udev name of LUN `lun` of `iqn` behind `portal` (systemd's path_id:
/// `ip-<address>:<port>-iscsi-<iqn>-lun-<lun>`).
pub fn by_path(portal: &str, iqn: &str, lun: u32) -> Result<PathBuf, Status> {
    let (address, port) = split_portal(portal)?;
    Ok(PathBuf::from(format!(
        "/dev/disk/by-path/ip-{address}:{port}-iscsi-{iqn}-lun-{lun}"
    )))
}

/// The record file `iscsiadm -o new` wrote for `iqn` at `portal` under `nodes`: the old
/// single file, or the newer `<address>,<port>,<tpgt>/default` one.
pub fn record_path(nodes: &Path, iqn: &str, portal: &str) -> Result<Option<PathBuf>, Status> {
    let (address, port) = split_portal(portal)?;
    let dir = nodes.join(iqn);
    let old = dir.join(format!("{address},{port}"));
    if old.is_file() {
        return Ok(Some(old));
    }
    let prefix = format!("{address},{port},");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(None);
    };
    Ok(entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().join("default"))
        .find(|p| p.is_file()))
}

/// The record text with its CHAP lines replaced by `chap`'s (pure; the secret is only in
/// the returned text, which is wiped when dropped).
pub fn with_chap(record: &str, chap: &Chap) -> Zeroizing<String> {
    let mut out = without_chap(record);
    out.push_str("node.session.auth.authmethod = CHAP\n");
    out.push_str(&format!("node.session.auth.username = {}\n", chap.user));
    out.push_str("node.session.auth.password = ");
    out.push_str(&chap.secret);
    out.push('\n');
    out
}

/// The record text without its CHAP lines (pure).
pub fn without_chap(record: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(record.len()));
    for line in record.lines() {
        if !line.trim_start().starts_with("node.session.auth.") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The temporary file `write_private` writes `path` through: `.<file name>.shelf-csi.tmp`
/// in the same directory (not `with_extension`, which turns `192.0.2.1,3260` into
/// `192.0.2.shelf-csi.tmp`).
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.shelf-csi.tmp"))
}

/// Replace `path` with `text`, mode 0600, atomically; the temporary file is removed when
/// anything fails (it may hold the secret).
fn write_private(path: &Path, text: &str) -> Result<(), Status> {
    let err = |e: std::io::Error| Status::internal(format!("{}: {e}", path.display()));
    let tmp = temp_path(path);
    let _ = std::fs::remove_file(&tmp);
    let written = shelf::sys::fs::create_new(&tmp, 0o600).and_then(|mut f| {
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

/// Read a record file into memory that is wiped when dropped (it may hold the secret).
fn read_record(record: &Path) -> Result<Zeroizing<String>, Status> {
    std::fs::read_to_string(record)
        .map(Zeroizing::new)
        .map_err(|e| Status::internal(format!("{}: {e}", record.display())))
}

/// After a successful login, rewrite `record` without its CHAP lines. iscsid does not
/// need them again for this session: it copies the record, credentials included, into
/// the session when it creates it (open-iscsi usr/initiator.c, `session_create`:
/// `memcpy(&session->nrec, rec, ...)`, `iscsi_setup_authentication`), and connection
/// recovery (`session_conn_reopen`) logs in again from that copy; a restarted iscsid
/// takes the CHAP values of a running session from the kernel's sysfs, not from the
/// record (usr/iscsid.c `sync_session`: "we will use the CHAP, target, portal and iface
/// values from sysfs"). A new login (after a reboot) goes through NodeStageVolume again,
/// with the secret.
fn strip_chap_after_login(record: &Path) -> Result<(), Status> {
    let text = read_record(record)?;
    write_private(record, &without_chap(&text))
}

fn node_cmd(tools: &Tools, iqn: &str, portal: &str) -> Result<shelf::sys::cmd::Cmd, Status> {
    Ok(tools
        .cmd("iscsiadm")?
        .args(["-m", "node", "-T", iqn, "-p", portal]))
}

/// Log in to `iqn` at `portal` (with `chap` when given) and wait for LUN `lun`'s disk;
/// returns its by-path name. Logging in again to a session that exists is fine.
pub async fn login(
    tools: &Tools,
    nodes: &Path,
    portal: &str,
    iqn: &str,
    lun: u32,
    chap: Option<&Chap>,
) -> Result<PathBuf, Status> {
    let device = by_path(portal, iqn, lun)?;
    tools
        .run(node_cmd(tools, iqn, portal)?.args(["-o", "new"]))
        .await?;
    if let Some(chap) = chap {
        let record = record_path(nodes, iqn, portal)?.ok_or_else(|| {
            Status::internal(format!(
                "iscsiadm made no node record for {iqn} at {portal} under {} (set node.iscsi_nodes_dir)",
                nodes.display()
            ))
        })?;
        let text = read_record(&record)?;
        write_private(&record, &with_chap(&text, chap))?;
    }
    let refused = match tools
        .try_run(node_cmd(tools, iqn, portal)?.arg("--login"))
        .await
    {
        Ok(_) => None,
        Err(e) if e.exit_code() == Some(ISCSI_ERR_SESS_EXISTS) => None,
        Err(e) if e.exit_code() == Some(ISCSI_ERR_LOGIN_AUTH_FAILED) => {
            Some(Status::permission_denied(format!(
                "the target {iqn} at {portal} refused the CHAP credentials: {}",
                cmd_status(e).message()
            )))
        }
        Err(e) => Some(cmd_status(e)),
    };
    let refused = match (refused, chap) {
        (None, Some(_)) => match record_path(nodes, iqn, portal)? {
            Some(record) => strip_chap_after_login(&record).err(),
            None => None,
        },
        (refused, _) => refused,
    };
    if let Some(status) = refused {
        // No session came of it: the record (holding the CHAP secret) goes now rather
        // than waiting for an unstage the CO may never send.
        if let Err(e) = logout(tools, portal, iqn).await {
            log::warn!("after a failed login to {iqn}: {}", e.message());
        }
        return Err(status);
    }
    wait_for(&device, DEVICE_WAIT).await?;
    Ok(device)
}

/// Wait until `path` exists.
pub async fn wait_for(path: &Path, limit: Duration) -> Result<(), Status> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > limit {
            return Err(Status::deadline_exceeded(format!(
                "{} did not appear within {} s",
                path.display(),
                limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Log out of `iqn` at `portal` and delete its record (and with it the CHAP secret);
/// nothing to log out of or delete is fine.
pub async fn logout(tools: &Tools, portal: &str, iqn: &str) -> Result<(), Status> {
    for op in [vec!["--logout"], vec!["-o", "delete"]] {
        match tools.try_run(node_cmd(tools, iqn, portal)?.args(op)).await {
            Ok(_) => {}
            Err(e) if e.exit_code() == Some(ISCSI_ERR_NO_OBJS_FOUND) => {}
            Err(e) => return Err(cmd_status(e)),
        }
    }
    Ok(())
}

/// Rescan the sessions to `iqn` at `portal`, so a grown LUN shows its new size.
pub async fn rescan(tools: &Tools, portal: &str, iqn: &str) -> Result<(), Status> {
    tools
        .run(node_cmd(tools, iqn, portal)?.arg("-R"))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portals_split_and_by_path_names() {
        assert_eq!(
            split_portal("192.0.2.1:3261").unwrap(),
            ("192.0.2.1".into(), "3261".into())
        );
        assert_eq!(
            split_portal("[fd00::1]:3260").unwrap(),
            ("fd00::1".into(), "3260".into())
        );
        assert_eq!(
            split_portal("host.example").unwrap(),
            ("host.example".into(), "3260".into())
        );
        for bad in ["", ":3260", "a:b", "a/../b:3260", "[fd00::1"] {
            assert!(split_portal(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            by_path("192.0.2.1:3260", "iqn.2026-01.io.shelf:v1", 1).unwrap(),
            Path::new("/dev/disk/by-path/ip-192.0.2.1:3260-iscsi-iqn.2026-01.io.shelf:v1-lun-1")
        );
    }

    /// A record as `iscsiadm -o new` writes it (excerpt of open-iscsi 2.1's format).
    const RECORD: &str = "# BEGIN RECORD 2.1.8\nnode.name = iqn.2026-01.io.shelf:v1\nnode.tpgt = -1\n\
node.session.auth.authmethod = None\nnode.session.auth.username = old\nnode.conn[0].address = 192.0.2.1\n# END RECORD\n";

    #[test]
    fn chap_lines_replace_the_old_ones() {
        let chap = Chap {
            user: "shelf-u".into(),
            secret: Zeroizing::new("s3cret-value".into()),
        };
        assert!(
            !format!("{chap:?}").contains("s3cret"),
            "Debug hides the secret"
        );
        let text = with_chap(RECORD, &chap);
        assert!(
            !text.contains("= old") && !text.contains("= None"),
            "{}",
            *text
        );
        assert!(text.contains("node.session.auth.authmethod = CHAP\n"));
        assert!(text.contains("node.session.auth.username = shelf-u\n"));
        assert!(text.contains("node.session.auth.password = s3cret-value\n"));
        assert!(text.contains("node.conn[0].address = 192.0.2.1\n"));
    }

    #[test]
    fn after_login_the_record_keeps_no_chap_line() {
        let chap = Chap {
            user: "shelf-u".into(),
            secret: Zeroizing::new("s3cret-value".into()),
        };
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("192.0.2.1,3260");
        std::fs::write(&record, with_chap(RECORD, &chap).as_bytes()).unwrap();
        strip_chap_after_login(&record).unwrap();
        let text = std::fs::read_to_string(&record).unwrap();
        assert!(
            !text.contains("s3cret") && !text.contains("node.session.auth."),
            "{text}"
        );
        assert!(text.contains("node.conn[0].address = 192.0.2.1\n"));
    }

    #[test]
    fn the_temporary_file_sits_beside_the_record_and_goes_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("192.0.2.1,3260");
        assert_eq!(
            temp_path(&record),
            dir.path().join(".192.0.2.1,3260.shelf-csi.tmp")
        );
        // A rename that fails (the record is a non-empty directory) leaves no temp file
        // holding the text.
        std::fs::create_dir(&record).unwrap();
        std::fs::write(record.join("x"), b"").unwrap();
        assert!(write_private(&record, "node.session.auth.password = s\n").is_err());
        assert!(!temp_path(&record).exists());
    }

    #[test]
    fn finds_old_and_new_record_layouts_and_writes_them_private() {
        use std::os::unix::fs::PermissionsExt;
        let nodes = tempfile::tempdir().unwrap();
        let iqn = "iqn.2026-01.io.shelf:v1";
        assert_eq!(
            record_path(nodes.path(), iqn, "192.0.2.1:3260").unwrap(),
            None
        );
        let dir = nodes.path().join(iqn).join("192.0.2.1,3260,1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("default"), RECORD).unwrap();
        let found = record_path(nodes.path(), iqn, "192.0.2.1:3260")
            .unwrap()
            .unwrap();
        assert_eq!(found, dir.join("default"));
        let old = nodes.path().join(iqn).join("192.0.2.1,3260");
        std::fs::write(&old, RECORD).unwrap();
        assert_eq!(
            record_path(nodes.path(), iqn, "192.0.2.1:3260").unwrap(),
            Some(old.clone())
        );
        write_private(&old, "x = y\n").unwrap();
        assert!(
            !nodes
                .path()
                .join(iqn)
                .join(".192.0.2.1,3260.shelf-csi.tmp")
                .exists(),
            "no temporary file left"
        );
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "x = y\n");
        assert_eq!(
            std::fs::metadata(&old).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
