//! The invariants checked after a run: rows settled, the tree well formed, the pool
//! directories and the target daemons matching the rows one to one, nothing to reconcile.

use std::collections::{BTreeMap, BTreeSet};

use ciborium::Value;
use shelf::client::{get, get_u64};

use crate::common::*;
use crate::Setup;

pub fn list(d: &Daemon, op: &str) -> Vec<Value> {
    d.ok(op, vec![]).into_array().unwrap()
}

pub fn ids(v: &[Value]) -> BTreeSet<String> {
    v.iter().map(|x| field(x, "id")).collect()
}

pub fn dir_names(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Walk the tree: every share and snapshot appears exactly once, in the right place.
pub fn check_tree(d: &Daemon, shares: &[Value], snaps: &[Value]) {
    let share_ids = ids(shares);
    let snap_by_id: BTreeMap<String, &Value> = snaps.iter().map(|s| (field(s, "id"), s)).collect();
    for s in snaps {
        assert!(
            share_ids.contains(&field(s, "share")),
            "snapshot without its share: {s:?}"
        );
    }
    let origin = |id: &str| {
        shares
            .iter()
            .find(|s| field(s, "id") == id)
            .and_then(|s| get(s, "origin_snapshot"))
            .and_then(Value::as_text)
            .map(str::to_string)
    };
    let (mut seen_shares, mut seen_snaps) = (Vec::new(), Vec::new());
    let mut stack: Vec<(Value, Option<String>)> =
        list(d, "tree").into_iter().map(|v| (v, None)).collect();
    while let Some((node, parent)) = stack.pop() {
        let id = field(&node, "id");
        match &parent {
            Some(p) => assert_eq!(
                origin(&id).as_ref(),
                Some(p),
                "clone under the wrong snapshot"
            ),
            // A root is an original share, or a clone whose origin snapshot is gone.
            None => {
                if let Some(o) = origin(&id) {
                    assert!(
                        !snap_by_id.contains_key(&o),
                        "clone {id} of live {o} is a root"
                    );
                }
            }
        }
        for snap in sub(&node, "snapshots").as_array().unwrap() {
            let sid = field(snap, "id");
            let row = snap_by_id
                .get(&sid)
                .unwrap_or_else(|| panic!("tree has unknown snapshot {sid}"));
            assert_eq!(field(row, "share"), id, "snapshot under the wrong share");
            for c in sub(snap, "clones").as_array().unwrap() {
                stack.push((c.clone(), Some(sid.clone())));
            }
            seen_snaps.push(sid);
        }
        seen_shares.push(id);
    }
    let n_shares = seen_shares.len();
    let n_snaps = seen_snaps.len();
    assert_eq!(seen_shares.into_iter().collect::<BTreeSet<_>>(), share_ids);
    assert_eq!(n_shares, shares.len(), "a share appears twice in the tree");
    assert_eq!(
        seen_snaps.into_iter().collect::<BTreeSet<_>>().len(),
        snaps.len()
    );
    assert_eq!(n_snaps, snaps.len(), "a snapshot appears twice in the tree");
}

/// The pool directory holds exactly the rows' files, at the rows' sizes.
pub fn check_disk(pool: &std::path::Path, shares: &[Value], snaps: &[Value]) {
    assert_eq!(
        dir_names(&pool.join("shares")),
        ids(shares),
        "share directories vs rows"
    );
    assert_eq!(
        dir_names(&pool.join("snapshots")),
        ids(snaps),
        "snapshot files vs rows"
    );
    for s in shares {
        let vol = volume(pool, &field(s, "id"));
        let len = std::fs::metadata(&vol).unwrap().len();
        assert_eq!(Some(len), get_u64(s, "size"), "volume size of {s:?}");
        check_identity(&vol, s, &["id", "name", "pool", "size", "sparse"]);
    }
    for s in snaps {
        let file = pool.join("snapshots").join(field(s, "id"));
        let len = std::fs::metadata(&file).unwrap().len();
        assert_eq!(Some(len), get_u64(s, "size"), "snapshot size of {s:?}");
        check_identity(
            &file,
            s,
            &["id", "name", "share", "share_name", "pool", "size"],
        );
    }
}

/// The `trusted.shelf.*` attributes a volume carries (to rebuild the database from) agree
/// with its row.
pub fn check_identity(path: &std::path::Path, row: &Value, keys: &[&str]) {
    let on_disk = shelf::sys::fs::get_identity(path).unwrap();
    for k in keys {
        let want = match get(row, k).unwrap() {
            Value::Text(x) => x.clone(),
            Value::Bool(x) => x.to_string(),
            Value::Integer(x) => i128::from(*x).to_string(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(
            on_disk.get(*k),
            Some(&want),
            "xattr {k} of {path:?} vs {row:?}"
        );
    }
}

/// Who may reach an export: its clients and its attached clients.
pub fn allowed(e: &Value) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = sub(sub(e, "options"), "clients")
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_text().unwrap().to_string())
        .collect();
    for a in sub(e, "attached").as_array().unwrap() {
        out.insert(field(a, "client"));
    }
    out
}

/// tgtd holds exactly the iSCSI rows' targets (LUN, CHAP account, ACL), and the exports
/// file and the kernel's table exactly the NFS rows' (the harness's agreement checker).
pub fn check_exports(s: &Setup, exports: &[Value]) {
    let rows: Vec<shelf::model::Export> = Value::Array(exports.to_vec()).deserialized().unwrap();
    agree::check_tgt(s, &rows, "tgt vs rows");
    agree::check_nfs(s, &rows, "exports vs rows");
}

/// Attachments and the exports' attached lists say the same.
pub fn check_attachments(d: &Daemon, exports: &[Value]) {
    let mut from_exports = BTreeSet::new();
    for e in exports {
        for a in sub(e, "attached").as_array().unwrap() {
            from_exports.insert((field(e, "share"), field(e, "protocol"), field(a, "client")));
        }
    }
    let rows: BTreeSet<_> = list(d, "attachment.list")
        .iter()
        .map(|a| (field(a, "share"), field(a, "protocol"), field(a, "client")))
        .collect();
    assert_eq!(rows, from_exports, "attachments vs exports' attached lists");
}

/// Every invariant; returns the rows, to compare across a restart.
pub fn check_invariants(s: &Setup) -> Vec<Vec<Value>> {
    let d = &s.d;
    let shares = list(d, "share.list");
    let snaps = list(d, "snapshot.list");
    let exports = list(d, "export.list");
    for x in shares.iter().chain(&snaps).chain(&exports) {
        assert_eq!(field(x, "state"), "available", "unsettled: {x:?}");
    }
    check_tree(d, &shares, &snaps);
    for p in list(d, "pool.list") {
        let name = field(&p, "name");
        let in_pool = |v: &&Value| field(v, "pool") == name;
        let pool_shares: Vec<Value> = shares.iter().filter(in_pool).cloned().collect();
        let pool_snaps: Vec<Value> = snaps.iter().filter(in_pool).cloned().collect();
        check_disk(
            std::path::Path::new(&field(&p, "path")),
            &pool_shares,
            &pool_snaps,
        );
    }
    check_exports(s, &exports);
    check_attachments(d, &exports);
    let report = d.ok("reconcile", vec![]);
    assert_eq!(
        sub(&report, "findings"),
        &Value::Array(vec![]),
        "reconcile found work"
    );
    assert!(!d.log_text().contains("panicked"), "the daemon panicked");
    let attachments = list(d, "attachment.list");
    vec![shares, snaps, exports, attachments]
}
