//! `shelfctl group-snapshot create|list|show|delete` against the real shelfd on a real
//! XFS: the group is made, listed and shown with its members, a member alone is refused,
//! and the delete removes every member.

mod common;

use std::process::Output;

use common::*;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn shelfctl_creates_lists_shows_and_deletes_group_snapshots() {
    let xfs = Xfs::new("ctl-groups", 512 << 20);
    let layout = Layout::on_xfs(&xfs, "reconcile_interval = 0\n");
    let d = Daemon::start(&layout);
    let ctl = |args: &[&str]| d.shelfctl(args);
    for name in ["a", "b"] {
        let o = ctl(&["share", "create", name, "4M"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = ctl(&["group-snapshot", "create", "g1", "a", "b"]);
    assert!(o.status.success(), "{}", text(&o));
    let made: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let gid = made["group"]["id"].as_str().unwrap().to_string();
    assert_eq!(made["changed"], true);
    assert_eq!(made["group"]["snapshots"].as_array().unwrap().len(), 2);
    // Without shares: refused by the command line, nothing sent.
    assert!(!ctl(&["group-snapshot", "create", "g2"]).status.success());

    let o = ctl(&["group-snapshot", "list"]);
    assert!(o.status.success(), "{}", text(&o));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], gid.as_str());
    let o = ctl(&["group-snapshot", "show", "g1"]);
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(shown["name"], "g1");
    let mut members: Vec<&str> = shown["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["share_name"].as_str().unwrap())
        .collect();
    members.sort_unstable();
    assert_eq!(members, ["a", "b"]);

    let o = ctl(&["snapshot", "delete", "g1", "--share", "a"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("has_dependents"), "{}", text(&o));
    let o = ctl(&["group-snapshot", "delete", "g1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&format!("deleted {gid}")), "{}", text(&o));
    let o = ctl(&["--json", "snapshot", "list"]);
    let snaps: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(snaps.as_array().unwrap().is_empty(), "{snaps}");
    let o = ctl(&["group-snapshot", "show", "g1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not_found"), "{}", text(&o));
}
