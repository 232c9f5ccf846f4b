//! The rig of the export crash walk (shelfd, a private tgtd, a private exports file on a
//! scratch XFS) and the check that the tree and the drivers agree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ciborium::Value;
use shelf::export::tgt::{parse_show_accounts, parse_show_target, CHAP_USER_PREFIX};
use shelf::model::{Attachment, Export, Protocol};

use crate::common::*;

/// The IQN prefix shelfd's targets get (from `Tgtd::config`).
pub const PREFIX: &str = "iqn.2026-11.org.example.shelf";

pub fn proto_name(p: Protocol) -> &'static str {
    p.as_str()
}

pub fn connector(initiator: &str, ip: &str, host: &str) -> Value {
    Value::Map(vec![
        (t("host"), t(host)),
        (t("ip"), t(ip)),
        (t("initiator"), t(initiator)),
    ])
}

pub fn texts(list: &[&str]) -> Value {
    Value::Array(list.iter().map(|c| t(c)).collect())
}

/// Fields drop in order: the daemon, then tgtd, the exports file, the filesystem.
pub struct Rig {
    pub d: Daemon,
    pub tgtd: Tgtd,
    pub ef: ExportsFile,
    pub xfs: Xfs,
}

impl Rig {
    pub fn new(tag: &str) -> Rig {
        let xfs = Xfs::new(tag, 512 << 20);
        let tgtd = Tgtd::start();
        let ef = ExportsFile::new(tag);
        let layout = Layout::on_xfs(
            &xfs,
            &format!("reconcile_interval = 0\n{}{}", tgtd.config(), ef.config()),
        );
        let d = Daemon::start(&layout);
        Rig { d, tgtd, ef, xfs }
    }

    pub fn pool(&self) -> std::path::PathBuf {
        self.xfs.mount.join("pool")
    }
}

/// What an initiator needs to log in, from connection_info.
#[derive(Debug, Clone)]
pub struct Login {
    url: String,
    initiator: String,
}

impl Login {
    pub fn from(reply: &Value, initiator: &str) -> Login {
        let data = sub(sub(reply, "connection_info"), "data");
        Login {
            url: format!(
                "iscsi://{}%{}@{}/{}/1",
                field(data, "auth_username"),
                field(data, "auth_password"),
                field(data, "target_portal"),
                field(data, "target_iqn")
            ),
            initiator: initiator.to_string(),
        }
    }

    /// Log in and run INQUIRY on LUN 1.
    pub fn inquiry(&self) -> Result<(), String> {
        match try_run(&["iscsi-inq", "-i", &self.initiator, &self.url]) {
            (true, _, _) => Ok(()),
            (false, out, err) => Err(format!("{out}{err}")),
        }
    }
}

pub fn exports(d: &Daemon) -> Vec<Export> {
    d.ok("export.list", vec![]).deserialized().unwrap()
}

pub fn attachments(d: &Daemon) -> Vec<Attachment> {
    d.ok("attachment.list", vec![]).deserialized().unwrap()
}

pub fn share_names(d: &Daemon) -> Vec<String> {
    let list = d.ok("share.list", vec![]);
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(field(s, "state"), "available", "{s:?}");
            field(s, "name")
        })
        .collect()
}

/// Everyone an export lets in: its static clients and its attached ones.
pub fn allowed(e: &Export) -> BTreeSet<String> {
    e.options
        .clients
        .iter()
        .cloned()
        .chain(e.attached.iter().map(|a| a.client.clone()))
        .collect()
}

/// The exports file as path → clients.
pub fn file_lines(path: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let p = words.next().unwrap().to_string();
        let clients = words
            .map(|w| w.split('(').next().unwrap().to_string())
            .collect();
        assert!(out.insert(p, clients).is_none(), "duplicate line: {line}");
    }
    out
}

/// The kernel's export table (exportfs -v) for paths under `root`, as path → clients.
pub fn live_nfs(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (p, c, _) in exportfs_v() {
        if Path::new(&p).starts_with(root) {
            out.entry(p).or_default().insert(c);
        }
    }
    out
}

/// Rows, tgtd, the exports file and the kernel's table agree; attached initiators log in.
pub fn check_agree(r: &Rig, ctx: &str) {
    share_names(&r.d);
    let rows = exports(&r.d);
    for e in &rows {
        assert_eq!(
            e.state.as_str(),
            "available",
            "{ctx}: unsettled export {e:?}"
        );
    }
    check_tgt(r, &rows, ctx);
    check_nfs(r, &rows, ctx);
    check_attachments(r, &rows, ctx);
}

/// One shelf target per iSCSI row, with its LUN, CHAP account and ACL; nothing else.
fn check_tgt(r: &Rig, rows: &[Export], ctx: &str) {
    let live = parse_show_target(&r.tgtd.show());
    let ours: Vec<_> = live
        .iter()
        .filter(|t| t.iqn.starts_with(&format!("{PREFIX}:")))
        .collect();
    let iscsi: Vec<&Export> = rows
        .iter()
        .filter(|e| e.protocol == Protocol::Iscsi)
        .collect();
    for t in &ours {
        assert!(
            iscsi.iter().any(|e| e.target == t.iqn),
            "{ctx}: target {} has no row",
            t.iqn
        );
    }
    assert_eq!(ours.len(), iscsi.len(), "{ctx}: targets {ours:?}");
    for e in &iscsi {
        let t = live
            .iter()
            .find(|t| t.iqn == e.target)
            .unwrap_or_else(|| panic!("{ctx}: no target for {e:?}"));
        assert_eq!(Some(t.tid), e.tid, "{ctx}: tid of {}", e.target);
        let vol = volume(&r.pool(), &e.share).display().to_string();
        assert_eq!(t.luns.get(&1), Some(&vol), "{ctx}: LUN of {}", e.target);
        let account: BTreeSet<String> = e.chap_user.iter().cloned().collect();
        assert_eq!(t.accounts, account, "{ctx}: CHAP of {}", e.target);
        assert_eq!(t.acl, allowed(e), "{ctx}: ACL of {}", e.target);
    }
    let accounts = r
        .tgtd
        .tgtadm(&["--mode", "account", "--op", "show"])
        .unwrap();
    let shelf_accounts: BTreeSet<String> = parse_show_accounts(&accounts)
        .into_iter()
        .filter(|u| u.starts_with(CHAP_USER_PREFIX))
        .collect();
    let row_accounts: BTreeSet<String> = iscsi.iter().filter_map(|e| e.chap_user.clone()).collect();
    assert_eq!(shelf_accounts, row_accounts, "{ctx}: CHAP accounts");
}

/// One exports-file line per NFS row that lets anyone in, with exactly those clients; the
/// kernel's table (`exportfs -v`) says the same.
fn check_nfs(r: &Rig, rows: &[Export], ctx: &str) {
    let mut want = BTreeMap::new();
    for e in rows.iter().filter(|e| e.protocol == Protocol::Nfs) {
        let clients = allowed(e);
        if !clients.is_empty() {
            want.insert(e.target.clone(), clients);
        }
    }
    assert_eq!(file_lines(&r.ef.path), want, "{ctx}: exports file");
    assert_eq!(live_nfs(&r.xfs.mount), want, "{ctx}: exportfs -v");
}

/// Attachments and the rows' attached lists are the same set, and every attached
/// initiator can log in with the CHAP account attach hands out (asked again: the same
/// connector answers the same, changing nothing).
fn check_attachments(r: &Rig, rows: &[Export], ctx: &str) {
    let atts = attachments(&r.d);
    let from_rows: BTreeSet<(String, Protocol, String)> = rows
        .iter()
        .flat_map(|e| {
            e.attached
                .iter()
                .map(|a| (e.share.clone(), e.protocol, a.client.clone()))
        })
        .collect();
    let from_atts: BTreeSet<(String, Protocol, String)> = atts
        .iter()
        .map(|a| (a.share.clone(), a.protocol, a.client.clone()))
        .collect();
    assert_eq!(from_rows, from_atts, "{ctx}: attachments vs export rows");
    for a in atts.iter().filter(|a| a.protocol == Protocol::Iscsi) {
        let initiator = a.initiator.clone().unwrap();
        let again = r.d.ok(
            "share.attach",
            vec![
                ("share", t(&a.share)),
                ("protocol", t("iscsi")),
                (
                    "connector",
                    connector(&initiator, a.ip.as_deref().unwrap(), &a.host),
                ),
            ],
        );
        assert_eq!(sub(&again, "changed"), &Value::Bool(false), "{ctx}");
        Login::from(&again, &initiator)
            .inquiry()
            .unwrap_or_else(|e| panic!("{ctx}: {initiator} cannot log in: {e}"));
    }
}
