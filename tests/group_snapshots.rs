//! Group snapshots against the real shelfd on a real XFS: every member holds its share's
//! content at the group's instant (byte for byte, SHA-256), a formatted share among them
//! is frozen and thawed, the group is all or nothing (a conflict or a planted volume on
//! one member leaves no member behind), a crash at every step is undone or finished at
//! start-up, and hostile member lists are refused.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use ciborium::Value;
use common::*;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

fn sha(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn shares(names: &[&str]) -> Value {
    Value::Array(names.iter().map(|s| t(s)).collect())
}

fn group_args(name: &str, names: &[&str]) -> Vec<(&'static str, Value)> {
    vec![("name", t(name)), ("shares", shares(names))]
}

fn snapshot_files(pool: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(pool.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Block shares `names` of 4 MiB, each holding its own pattern; their ids.
fn block_shares(d: &Daemon, pool: &Path, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let r = d.ok(
                "share.create",
                vec![("name", t(name)), ("size", n(4 * MIB))],
            );
            let id = field(sub(&r, "share"), "id");
            write_at(
                &volume(pool, &id),
                0,
                &pattern(10 + i as u8, (4 * MIB) as usize),
            );
            id
        })
        .collect()
}

fn clean(d: &Daemon) -> bool {
    let v = d.ok("verify", vec![]);
    shelf::client::get(&v, "clean") == Some(&Value::Bool(true))
}

#[test]
fn a_group_holds_every_share_at_one_instant_and_goes_as_one() {
    let xfs = Xfs::new("groups", 2 << 30);
    let layout = Layout::on_xfs(&xfs, "reconcile_interval = 0\n");
    let pool = xfs.mount.join("pool");
    let base = layout.state.join("mounts");
    let _mounts = MountsUnder(base.clone());
    let d = Daemon::start(&layout);
    let ids = block_shares(&d, &pool, &["a", "b"]);
    let fs_id = create_formatted(&d, "f", 320 * MIB, "xfs");
    let mp = base.join(&fs_id);
    std::fs::write(mp.join("hello.txt"), b"in the group").unwrap();
    let want: Vec<String> = ids
        .iter()
        .map(|id| sha(&std::fs::read(volume(&pool, id)).unwrap()))
        .collect();

    let r = d.ok("snapshot.create_group", group_args("g1", &["a", "b", "f"]));
    assert_eq!(shelf::client::get(&r, "changed"), Some(&Value::Bool(true)));
    let g = sub(&r, "group");
    let gid = field(g, "id");
    assert_eq!(field(g, "state"), "available");
    let members = shelf::client::get(g, "snapshots")
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(members.len(), 3);
    let at: Vec<_> = members
        .iter()
        .map(|m| shelf::client::get_u64(m, "created_at"))
        .collect();
    assert!(at.windows(2).all(|w| w[0] == w[1]), "one instant: {at:?}");
    for m in members {
        assert_eq!(field(m, "group"), gid);
        assert_eq!(field(m, "name"), "g1");
        assert_eq!(field(m, "state"), "available");
    }
    // Each block member is its share's content byte for byte.
    for (id, want) in ids.iter().zip(&want) {
        let m = members.iter().find(|m| field(m, "share") == *id).unwrap();
        let file = pool.join("snapshots").join(field(m, "id"));
        assert_eq!(&sha(&std::fs::read(file).unwrap()), want);
        write_at(&volume(&pool, id), 0, b"after the group");
    }
    // The filesystem was frozen and thawed: it takes writes again.
    std::fs::write(mp.join("hello.txt"), b"after the group").unwrap();
    assert!(clean(&d));
    // Members are ordinary snapshots: listed with their group, revertible.
    let listed = d.ok("snapshot.list", vec![("share", t("a"))]);
    assert_eq!(field(&listed.as_array().unwrap()[0], "group"), gid);
    d.ok(
        "share.revert",
        vec![("share", t("a")), ("snapshot", t("g1"))],
    );
    assert_eq!(
        sha(&std::fs::read(volume(&pool, &ids[0])).unwrap()),
        want[0]
    );
    d.ok(
        "share.revert",
        vec![("share", t("f")), ("snapshot", t("g1"))],
    );
    assert_eq!(
        std::fs::read(mp.join("hello.txt")).unwrap(),
        b"in the group"
    );

    // A retry (same name, same shares in any order) is answered with the group; the name
    // with other shares is taken.
    let again = d.ok("snapshot.create_group", group_args("g1", &["f", "b", "a"]));
    assert_eq!(
        shelf::client::get(&again, "changed"),
        Some(&Value::Bool(false))
    );
    assert_eq!(field(sub(&again, "group"), "id"), gid);
    d.err(
        "snapshot.create_group",
        group_args("g1", &["a"]),
        "already_exists",
    );

    let list = d.ok("group_snapshot.list", vec![]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let shown = d.ok("group_snapshot.show", vec![("group", t("g1"))]);
    assert_eq!(field(&shown, "id"), gid);
    assert_eq!(snapshot_files(&pool).len(), 3);

    // A member alone is not deleted (the group would no longer be its shares at one
    // instant): the refusal says to delete the group, and nothing goes.
    let m = d.err(
        "snapshot.delete",
        vec![("share", t("a")), ("snapshot", t("g1"))],
        "has_dependents",
    );
    assert!(
        m.contains("member of group snapshot g1") && m.contains("group_snapshot.delete"),
        "{m}"
    );
    assert_eq!(snapshot_files(&pool).len(), 3);
    assert_eq!(d.ok("snapshot.list", vec![]).as_array().unwrap().len(), 3);

    let r = d.ok("group_snapshot.delete", vec![("group", t(&gid))]);
    assert_eq!(field(&r, "deleted"), gid);
    assert!(snapshot_files(&pool).is_empty());
    assert_eq!(d.ok("snapshot.list", vec![]).as_array().unwrap().len(), 0);
    d.err("group_snapshot.show", vec![("group", t("g1"))], "not_found");
    d.err(
        "group_snapshot.delete",
        vec![("group", t("g1"))],
        "not_found",
    );
    let audit = format!("{:?}", d.ok("audit.list", vec![]));
    assert!(audit.contains("snapshot.create_group") && audit.contains("group_snapshot.delete"));
    assert!(clean(&d));
}

#[test]
fn rebuild_db_brings_back_groups_with_their_members() {
    let xfs = Xfs::new("groups-rebuild", 1 << 30);
    let layout = Layout::on_xfs(&xfs, "reconcile_interval = 0\n");
    let pool = xfs.mount.join("pool");
    let mut d = Daemon::start(&layout);
    block_shares(&d, &pool, &["a", "b", "c"]);
    d.ok("snapshot.create_group", group_args("g1", &["a", "b"]));
    d.ok("snapshot.create_group", group_args("g2", &["a", "b", "c"]));
    d.ok(
        "snapshot.create",
        vec![("share", t("c")), ("name", t("plain"))],
    );
    let groups = d.ok("group_snapshot.list", vec![]);
    let shown = d.ok("group_snapshot.show", vec![("group", t("g2"))]);
    let snaps = d.ok("snapshot.list", vec![]);
    assert_eq!(groups.as_array().unwrap().len(), 2);

    d.lose_db(Some(b"this is not a database"));
    let (ok, text) = d.try_rebuild(&[]);
    assert!(ok, "{text}");
    assert!(
        text.contains(
            "rebuilt: 3 share(s), 6 snapshot(s), 0 export(s), 0 attachment(s), 2 group snapshot(s)"
        ),
        "{text}"
    );
    assert!(!text.contains("skipped"), "{text}");
    d.restart();
    // The same groups (id, name, created_at, state) with the same members.
    assert_eq!(d.ok("group_snapshot.list", vec![]), groups);
    assert_eq!(d.ok("group_snapshot.show", vec![("group", t("g2"))]), shown);
    assert_eq!(d.ok("snapshot.list", vec![]), snaps);
    assert!(clean(&d));
    // And they behave as groups: a member alone is refused, the group goes as one.
    d.err(
        "snapshot.delete",
        vec![("share", t("c")), ("snapshot", t("g2"))],
        "has_dependents",
    );
    d.ok("group_snapshot.delete", vec![("group", t("g2"))]);
    assert_eq!(snapshot_files(&pool).len(), 3);
    d.ok(
        "snapshot.delete",
        vec![("share", t("c")), ("snapshot", t("plain"))],
    );
}

#[test]
fn a_group_is_all_or_nothing_and_refuses_hostile_member_lists() {
    let xfs = Xfs::new("groups-hostile", 512 << 20);
    let layout = Layout::on_xfs(&xfs, "reconcile_interval = 0\n");
    let pool = xfs.mount.join("pool");
    let d = Daemon::start(&layout);
    let ids = block_shares(&d, &pool, &["a", "b", "c"]);

    // Duplicates, by name and by id for the same share; none; too many; unknown shares.
    let m = d.err(
        "snapshot.create_group",
        group_args("g", &["a", "b", "a"]),
        "invalid_argument",
    );
    assert!(m.contains("twice"), "{m}");
    d.err(
        "snapshot.create_group",
        group_args("g", &["a", &ids[0]]),
        "invalid_argument",
    );
    d.err(
        "snapshot.create_group",
        group_args("g", &[]),
        "invalid_argument",
    );
    let many: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let m = d.err(
        "snapshot.create_group",
        group_args("g", &many),
        "invalid_argument",
    );
    assert!(m.contains("at most 64"), "{m}");
    d.err(
        "snapshot.create_group",
        group_args("g", &["a", "nope"]),
        "not_found",
    );
    d.err(
        "snapshot.create_group",
        group_args("../g", &["a"]),
        "invalid_argument",
    );
    d.err(
        "snapshot.create_group",
        vec![("name", t("g")), ("shares", t("a"))],
        "invalid_argument",
    );

    // One member's snapshot name is taken: nothing is made for the others.
    d.ok(
        "snapshot.create",
        vec![("share", t("c")), ("name", t("g2"))],
    );
    d.err(
        "snapshot.create_group",
        group_args("g2", &["a", "b", "c"]),
        "already_exists",
    );
    assert_eq!(snapshot_files(&pool).len(), 1);
    assert_eq!(
        d.ok("group_snapshot.list", vec![])
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // One member's volume was replaced through NFS by a symbolic link: tampered, and the
    // members already reflinked are removed.
    let outside = xfs.mount.join("outside");
    std::fs::write(&outside, b"not yours").unwrap();
    let vol = volume(&pool, &ids[2]);
    std::fs::rename(&vol, pool.join("shares").join(&ids[2]).join("moved")).unwrap();
    std::os::unix::fs::symlink(&outside, &vol).unwrap();
    d.err(
        "snapshot.create_group",
        group_args("g3", &["a", "b", "c"]),
        "tampered",
    );
    assert_eq!(
        snapshot_files(&pool).len(),
        1,
        "{:?}",
        snapshot_files(&pool)
    );
    assert_eq!(
        d.ok("group_snapshot.list", vec![])
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(d.ok("snapshot.list", vec![]).as_array().unwrap().len(), 1);
    assert_eq!(std::fs::read(&outside).unwrap(), b"not yours");
}

#[test]
fn a_crash_at_every_group_step_is_undone_or_finished() {
    let xfs = Xfs::new("groups-crash", 512 << 20);
    let layout = Layout::on_xfs(&xfs, "reconcile_interval = 0\n");
    let pool = xfs.mount.join("pool");
    let mut d = Daemon::start(&layout);
    let ids = block_shares(&d, &pool, &["a", "b"]);
    let data: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| std::fs::read(volume(&pool, id)).unwrap())
        .collect();
    for fp in shelf::engine::failpoint::GROUP_POINTS {
        let deleting = fp.starts_with("group_snapshot.delete");
        if deleting {
            d.ok("snapshot.create_group", group_args("g", &["a", "b"]));
            assert_eq!(snapshot_files(&pool).len(), 2);
        }
        d.stop();
        d.restart_with_env(&[("SHELF_FAILPOINT", fp)]);
        let r = if deleting {
            d.call("group_snapshot.delete", vec![("group", t("g"))])
        } else {
            d.call("snapshot.create_group", group_args("g", &["a", "b"]))
        };
        assert!(r.is_err(), "{fp}: answered {r:?} instead of crashing");
        assert!(!d.wait_exit().success(), "{fp}: shelfd did not abort");
        d.restart();
        assert!(
            snapshot_files(&pool).is_empty(),
            "{fp}: {:?}",
            snapshot_files(&pool)
        );
        assert_eq!(
            d.ok("snapshot.list", vec![]).as_array().unwrap().len(),
            0,
            "{fp}"
        );
        assert_eq!(
            d.ok("group_snapshot.list", vec![])
                .as_array()
                .unwrap()
                .len(),
            0,
            "{fp}"
        );
        assert!(clean(&d), "{fp}");
        for (id, want) in ids.iter().zip(&data) {
            assert_eq!(
                &std::fs::read(volume(&pool, id)).unwrap(),
                want,
                "{fp}: data"
            );
        }
        println!("{fp}: recovered");
    }
}

/// A member snapshot's trusted stamp set to `value` for `key` (what damage, or a root
/// process other than shelf, could leave).
fn stamp(pool: &Path, snap_id: &str, key: &str, value: &str) {
    let file = pool.join("snapshots").join(snap_id);
    xattr::set(&file, format!("trusted.shelf.{key}"), value.as_bytes()).unwrap();
}

/// A group's members: (share id, snapshot id).
fn members(d: &Daemon, group: &str) -> Vec<(String, String)> {
    let g = d.ok("group_snapshot.show", vec![("group", t(group))]);
    shelf::client::get(&g, "snapshots")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (field(m, "share"), field(m, "id")))
        .collect()
}

#[test]
fn rebuild_db_believes_no_damaged_or_disputed_group_stamp() {
    let xfs = Xfs::new("groups-stamps", 1 << 30);
    let layout = Layout::on_xfs(&xfs, "reconcile_interval = 0\n");
    let pool = xfs.mount.join("pool");
    let mut d = Daemon::start(&layout);
    let ids = block_shares(&d, &pool, &["a", "b", "c"]);
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    let mut m = BTreeMap::new();
    for (g, on) in [
        ("g1", &["a", "b"][..]),
        ("g2", &["a", "b", "c"]),
        ("g3", &["b", "c"]),
        ("g4", &["a", "c"]),
        ("g5", &["a", "b"]),
    ] {
        d.ok("snapshot.create_group", group_args(g, on));
        m.insert(g, members(&d, g).into_iter().collect::<BTreeMap<_, _>>());
    }
    d.ok(
        "snapshot.create",
        vec![("share", t("c")), ("name", t("plain"))],
    );
    let plain = field(
        &d.ok("snapshot.list", vec![("share", t("c"))])
            .as_array()
            .unwrap()
            .iter()
            .find(|s| field(s, "name") == "plain")
            .unwrap()
            .clone(),
        "id",
    );
    let g1_id = field(&d.ok("group_snapshot.show", vec![("group", t("g1"))]), "id");
    // g1: one member's group id is not an id (a path); that member cannot be tied to any
    // group, the other member still names g1 soundly.
    stamp(&pool, &m["g1"][a], "group", "../../../etc/passwd");
    // g2: a member's group name is one shelf would refuse.
    stamp(&pool, &m["g2"][c], "group_name", "bad\nname");
    // g3: a member's creation time is not a number.
    stamp(&pool, &m["g3"][b], "group_created_at", "soon");
    // g4: the members disagree on the group's name (each is a valid name).
    stamp(&pool, &m["g4"][c], "group_name", "other");
    // g5: the group id in upper case names the same UUID but not as shelf writes it.
    stamp(&pool, &m["g5"][b], "group", &g1_id.to_uppercase());
    // A plain snapshot whose own name is one shelf would refuse is not restored at all.
    stamp(&pool, &plain, "name", "../x");

    d.lose_db(None);
    let (ok, text) = d.try_rebuild(&[]);
    assert!(ok, "{text}");
    // 11 group members restored (none lost), the plain snapshot skipped and left on disk;
    // only g1 and g5 (each from its one sound member) are groups again.
    assert!(
        text.contains(
            "rebuilt: 3 share(s), 11 snapshot(s), 0 export(s), 0 attachment(s), 2 group snapshot(s)"
        ),
        "{text}"
    );
    for why in [
        "is not a group id",
        "must start with a letter or digit",
        "contains '\\n'",
        "attribute group_created_at is not a number",
        "disagree or are damaged",
    ] {
        assert!(text.contains(why), "{why}: {text}");
    }
    assert!(pool.join("snapshots").join(&plain).exists());
    d.restart();
    let groups: Vec<String> = d
        .ok("group_snapshot.list", vec![])
        .as_array()
        .unwrap()
        .iter()
        .map(|g| field(g, "name"))
        .collect();
    assert_eq!(groups, ["g1", "g5"]);
    assert_eq!(members(&d, "g1"), [(b.clone(), m["g1"][b].clone())]);
    assert_eq!(members(&d, "g5"), [(a.clone(), m["g5"][a].clone())]);
    // Members of a disbelieved group are plain snapshots: each can go on its own.
    let snaps = d.ok("snapshot.list", vec![]);
    let listed = snaps.as_array().unwrap();
    assert_eq!(listed.len(), 11);
    for s in listed {
        let grouped = shelf::client::get(s, "group").is_some_and(|g| !g.is_null());
        let id = field(s, "id");
        let in_sound = id == m["g1"][b] || id == m["g5"][a];
        assert_eq!(grouped, in_sound, "{s:?}");
    }
    d.ok(
        "snapshot.delete",
        vec![("share", t("c")), ("snapshot", t("g2"))],
    );
    // What verify finds is the one snapshot left on disk, and nothing else.
    let v = d.ok("verify", vec![]);
    let found = shelf::client::get(&v, "differences")
        .unwrap()
        .as_array()
        .unwrap();
    assert_eq!(found.len(), 1, "{v:?}");
    assert_eq!(field(&found[0], "object"), plain, "{v:?}");
}

#[test]
fn a_recursive_share_delete_leaves_a_group_whole() {
    let xfs = Xfs::new("groups-share-delete", 1 << 30);
    let layout = Layout::on_xfs(&xfs, "reconcile_interval = 0\n");
    let pool = xfs.mount.join("pool");
    let d = Daemon::start(&layout);
    let ids = block_shares(&d, &pool, &["a", "b"]);
    d.ok(
        "snapshot.create",
        vec![("share", t("a")), ("name", t("plain"))],
    );
    d.ok("snapshot.create_group", group_args("g1", &["a", "b"]));
    let before = d.ok("snapshot.list", vec![]);
    let msg = d.err(
        "share.delete",
        vec![("share", t("a")), ("recursive", Value::Bool(true))],
        "has_dependents",
    );
    assert!(msg.contains("member of group snapshot \"g1\""), "{msg}");
    // Nothing went: not the plain snapshot, not the member, not the share.
    assert_eq!(d.ok("snapshot.list", vec![]), before);
    assert_eq!(snapshot_files(&pool).len(), 3);
    assert!(volume(&pool, &ids[0]).exists());
    assert!(clean(&d));
    d.ok("group_snapshot.delete", vec![("group", t("g1"))]);
    let r = d.ok(
        "share.delete",
        vec![("share", t("a")), ("recursive", Value::Bool(true))],
    );
    assert_eq!(shelf::client::get_u64(&r, "snapshots_deleted"), Some(1));
    assert!(snapshot_files(&pool).is_empty());
    assert!(clean(&d));
}
