//! The stamp every volume and snapshot carries (docs/security.md §2, "The stamp").
//!
//! A tenant with root on an NFS client of its share can read and write the `user.*`
//! extended attributes of its volume (NFSv4.2, RFC 8276; `root_squash: false`). shelf
//! stamps identity and exports in `trusted.shelf.*`, which no NFS server exposes, and never
//! reads `user.shelf.*` except to move an earlier shelf's stamp. Each test writes the
//! forged attributes the way such a client would: as root, on the share's volume or on a
//! file put in its place. (The NFS transport itself is not in the loop: it only carries
//! the same setxattr to the same inode.)

mod common;

use std::path::{Path, PathBuf};

use ciborium::Value;
use common::*;
use shelf::client::get;

const MIB: u64 = 1 << 20;
const INIT: &str = "iqn.2026-11.org.example:tenant-client";
const ATTACKER: &str = "iqn.2026-11.org.example:attacker";
const FORGED_SECRET: &str = "forged-chap-secret-0123";

/// The rig (shelfd, tgtd, exports file, a 1 GiB XFS) and what these tests do with it.
type Setup = Rig;

fn setup(tag: &str) -> Setup {
    Rig::start(tag, 1 << 30, "", true)
}

impl Setup {
    fn create(&self, name: &str, size: u64) -> String {
        let s = self
            .d
            .ok("share.create", vec![("name", t(name)), ("size", n(size))]);
        field(sub(&s, "share"), "id")
    }

    /// Snapshot `share` as `name`; returns the snapshot's file in the pool.
    fn snapshot(&self, share: &str, name: &str) -> PathBuf {
        let snap = self.d.ok(
            "snapshot.create",
            vec![("share", t(share)), ("name", t(name))],
        );
        self.pool()
            .join("snapshots")
            .join(field(sub(&snap, "snapshot"), "id"))
    }

    /// Attach `share` over iSCSI; returns its CHAP secret.
    fn attach(&self, share: &str) -> String {
        let a = self.d.ok(
            "share.attach",
            vec![
                ("share", t(share)),
                ("protocol", t("iscsi")),
                (
                    "connector",
                    Value::Map(vec![
                        (t("host"), t("tenant-host")),
                        (t("ip"), t("127.0.0.1")),
                        (t("initiator"), t(INIT)),
                    ]),
                ),
            ],
        );
        field(sub(sub(&a, "connection_info"), "data"), "auth_password")
    }

    /// Stop the daemon and lose its database.
    fn lose_db(&mut self) {
        self.d.stop();
        self.d.lose_db(Some(b"this is not a database"));
    }

    /// Stop the daemon and take its database back to the schema an earlier shelf left
    /// (version 8, before the `settings` table and its `legacy_stamps_moved` flag): every
    /// migration after 8 is undone, newest first, so start-up runs them all again as it
    /// would on that shelf's database.
    fn make_db_old(&mut self) {
        self.d.stop();
        let c = rusqlite::Connection::open(self.d.state.join("shelf.db")).unwrap();
        let version: u32 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            version, 10,
            "a migration after 10 was added: undo it here too, before 10's"
        );
        c.execute_batch(
            "DROP INDEX snapshots_by_group;
             ALTER TABLE snapshots DROP COLUMN group_id;
             DROP TABLE snapshot_groups;
             DROP TABLE settings;
             PRAGMA user_version = 8;",
        )
        .unwrap();
        c.close().unwrap();
    }

    /// `shelfd recover --rebuild-db` with `extra` flags; its output, asserted successful.
    fn rebuild(&self, extra: &[&str]) -> String {
        self.d.rebuild(extra)
    }
}

/// The attributes of `path` in namespace `prefix` (`"user.shelf."`, `"trusted.shelf."`),
/// keyed without it.
fn attrs(path: &Path, prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in xattr::list(path).unwrap() {
        let name = name.to_string_lossy().into_owned();
        if let Some(k) = name.strip_prefix(prefix) {
            let v = xattr::get(path, &name).unwrap().unwrap_or_default();
            out.push((k.to_string(), String::from_utf8_lossy(&v).into_owned()));
        }
    }
    out.sort();
    out
}

/// What a tenant's NFS client can do: set a `user.*` attribute.
fn forge(path: &Path, key: &str, value: &str) {
    xattr::set(path, format!("user.shelf.{key}"), value.as_bytes()).unwrap();
}

/// Turn a volume's trusted stamp into the `user.shelf.*` one an earlier shelf wrote.
fn make_old(path: &Path) {
    let trusted = attrs(path, "trusted.shelf.");
    assert!(
        !trusted.is_empty(),
        "{} has no trusted stamp",
        path.display()
    );
    for (k, v) in trusted {
        forge(path, &k, &v);
        xattr::remove(path, format!("trusted.shelf.{k}")).unwrap();
    }
}

fn names(d: &Daemon) -> Vec<(String, u64)> {
    let Value::Array(list) = d.ok("share.list", vec![]) else {
        panic!("share.list is not a list")
    };
    let mut out: Vec<(String, u64)> = list
        .iter()
        .map(|s| {
            let size = match get(s, "size") {
                Some(Value::Integer(i)) => u64::try_from(*i).unwrap(),
                other => panic!("size {other:?}"),
            };
            (field(s, "name"), size)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn forged_user_stamps_on_a_volume_are_never_adopted_by_a_rebuild() {
    let mut s = setup("forged");
    let mine = s.create("mine", 8 * MIB);
    s.create("theirs", 8 * MIB);
    let secret = s.attach("mine");
    let vol = volume(&s.pool(), &mine);
    // Nothing of the stamp, and so no CHAP secret, is in the namespace an NFS client reads.
    assert_eq!(attrs(&vol, "user."), vec![]);
    let record = attrs(&vol, "trusted.shelf.")
        .into_iter()
        .find(|(k, _)| k == "exports")
        .map(|(_, v)| v)
        .expect("an exports record");
    assert!(record.contains(&secret));
    let before_exports = s.d.ok("export.list", vec![]);
    let before_attach = s.d.ok("attachment.list", vec![]);
    let before = names(&s.d);

    // The tenant's forgery: another share's name, a huge size, and its share granted to
    // an initiator of its own with a CHAP secret of its choosing (the record in the form
    // an earlier shelf stamped and adopted).
    let forged = record
        .replace(&secret, FORGED_SECRET)
        .replace(INIT, ATTACKER);
    for (k, v) in attrs(&vol, "trusted.shelf.") {
        forge(&vol, &k, &v);
    }
    forge(&vol, "exports", &forged);
    forge(&vol, "name", "theirs");
    forge(&vol, "size", &(1u64 << 40).to_string());
    forge(&vol, "metadata", r#"{"owner":"attacker"}"#);

    s.lose_db();
    let text = s.rebuild(&[]);
    assert!(
        text.contains("rebuilt: 2 share(s), 0 snapshot(s), 1 export(s), 1 attachment(s)"),
        "{text}"
    );
    s.d.restart();
    assert_eq!(names(&s.d), before, "no forged name or size");
    assert_eq!(s.d.ok("export.list", vec![]), before_exports);
    assert_eq!(s.d.ok("attachment.list", vec![]), before_attach);
    let everything = format!(
        "{:?}{:?}",
        s.d.ok("export.list", vec![]),
        s.d.ok("attachment.list", vec![])
    );
    assert!(!everything.contains(ATTACKER), "{everything}");
    assert!(!everything.contains("attacker"), "{everything}");
    // The secret is the one the database had: attaching again hands it out unchanged.
    assert_eq!(s.attach("mine"), secret);
    let v = s.d.ok("verify", vec![]);
    assert_eq!(get(&v, "clean"), Some(&Value::Bool(true)), "{v:?}");
}

#[test]
fn a_volume_replaced_by_a_file_with_a_forged_user_stamp_is_tampered() {
    let mut s = setup("replaced");
    let mine = s.create("mine", 8 * MIB);
    let vol = volume(&s.pool(), &mine);
    // The tenant moves its volume aside and puts a file of its own in its place, stamped
    // with the identity it knows (its share's id is in the path), in the only namespace
    // it can write: what an earlier shelf's open and rebuild accepted.
    std::fs::rename(&vol, vol.with_file_name("volume.mine")).unwrap();
    std::fs::write(&vol, pattern(7, MIB as usize)).unwrap();
    let size = (8 * MIB).to_string();
    for (k, v) in [
        ("kind", "share"),
        ("id", &mine),
        ("name", "mine"),
        ("pool", "default"),
        ("size", &size),
        ("sparse", "true"),
        ("multiattach", "false"),
        ("created_at", "1"),
        ("origin_snapshot", ""),
        ("origin_share", ""),
        ("metadata", "{}"),
    ] {
        forge(&vol, k, v);
    }
    let why = s.d.err(
        "share.resize",
        vec![("share", t("mine")), ("size", n(16 * MIB))],
        "tampered",
    );
    eprintln!("share.resize: {why}");
    let why = s.d.err(
        "export.create",
        vec![("share", t("mine")), ("protocol", t("iscsi"))],
        "tampered",
    );
    eprintln!("export.create: {why}");
    let v = s.d.ok("verify", vec![]);
    assert_eq!(get(&v, "clean"), Some(&Value::Bool(false)), "{v:?}");
    assert_eq!(std::fs::metadata(&vol).unwrap().len(), MIB);

    // A rebuild does not adopt it, and says why.
    s.lose_db();
    let text = s.rebuild(&[]);
    assert!(text.contains("rebuilt: 0 share(s)"), "{text}");
    assert!(text.contains("only user.shelf.*"), "{text}");
    assert!(text.contains("--trust-user-xattrs"), "{text}");
}

#[test]
fn an_earlier_shelfs_user_stamps_move_to_trusted_at_start_up() {
    let mut s = setup("upgrade");
    let a = s.create("a", 8 * MIB);
    let b = s.create("b", 4 * MIB);
    let snap = s.snapshot("a", "s1");
    let secret = s.attach("a");
    let files = [volume(&s.pool(), &a), volume(&s.pool(), &b), snap];
    let genuine: Vec<_> = files.iter().map(|f| attrs(f, "trusted.shelf.")).collect();
    let before = names(&s.d);
    s.make_db_old();

    // The pool as an earlier shelf left it, and what a tenant may have forged since.
    for f in &files {
        make_old(f);
    }
    forge(&files[1], "name", "forged");
    forge(&files[0], "exports", "{\"exports\":[],\"attachments\":[]}");

    s.d.restart();
    let log = s.d.log_text();
    let moved = log.matches("moved to trusted.shelf.*").count();
    eprintln!("start-up moved {moved} stamp(s)");
    assert_eq!(moved, 3, "{log}");
    for (f, want) in files.iter().zip(&genuine) {
        // The database's view, not the forged values; nothing left in user.shelf.*.
        let mut have = attrs(f, "trusted.shelf.");
        if !want.iter().any(|(k, _)| k == "exports") {
            // A share never exported had no record; the move writes the empty one.
            let at = have.iter().position(|(k, _)| k == "exports");
            if let Some(at) = at.filter(|_| f.ends_with("volume")) {
                assert_eq!(have.remove(at).1, r#"{"exports":[],"attachments":[]}"#);
            }
        }
        assert_eq!(&have, want, "{}", f.display());
        assert_eq!(attrs(f, "user.shelf."), vec![], "{}", f.display());
    }
    assert_eq!(names(&s.d), before);
    assert_eq!(s.attach("a"), secret);
    let v = s.d.ok("verify", vec![]);
    assert_eq!(get(&v, "clean"), Some(&Value::Bool(true)), "{v:?}");

    assert!(log.contains("the move of user.shelf.* stamps"), "{log}");

    // From now on user.shelf.* is never read: a forgery after the move changes nothing,
    // and is left where the tenant wrote it (ignored, not moved nor removed).
    forge(&files[1], "name", "forged-later");
    s.d.stop();
    let seen = s.d.log_text().len();
    s.d.restart();
    let log = s.d.log_text()[seen..].to_string();
    assert!(!log.contains("user.shelf"), "{log}");
    assert_eq!(
        attrs(&files[1], "user.shelf."),
        vec![("name".to_string(), "forged-later".to_string())]
    );
    let name = attrs(&files[1], "trusted.shelf.")
        .into_iter()
        .find(|(k, _)| k == "name");
    assert_eq!(name, Some(("name".to_string(), "b".to_string())));
    s.lose_db();
    s.rebuild(&[]);
    s.d.restart();
    assert_eq!(names(&s.d), before);
}

#[test]
fn a_pool_with_only_user_stamps_is_rebuilt_only_with_trust_user_xattrs() {
    let mut s = setup("legacy");
    let a = s.create("a", 8 * MIB);
    let snap = s.snapshot("a", "s1");
    let secret = s.attach("a");
    let before = names(&s.d);
    let files = [volume(&s.pool(), &a), snap];
    s.lose_db();
    for f in &files {
        make_old(f);
    }

    let text = s.rebuild(&[]);
    assert!(
        text.contains("rebuilt: 0 share(s), 0 snapshot(s), 0 export(s), 0 attachment(s)"),
        "{text}"
    );
    assert_eq!(text.matches("only user.shelf.*").count(), 2, "{text}");
    let text = s.rebuild(&["--force", "--trust-user-xattrs"]);
    assert!(
        text.contains("rebuilt: 1 share(s), 1 snapshot(s), 1 export(s), 1 attachment(s)"),
        "{text}"
    );
    // The start-up after it moves the adopted stamps to trusted.shelf.*.
    s.d.restart();
    for f in &files {
        assert!(!attrs(f, "trusted.shelf.").is_empty(), "{}", f.display());
        assert_eq!(attrs(f, "user.shelf."), vec![], "{}", f.display());
    }
    assert_eq!(names(&s.d), before);
    assert_eq!(s.attach("a"), secret);
    let v = s.d.ok("verify", vec![]);
    assert_eq!(get(&v, "clean"), Some(&Value::Bool(true)), "{v:?}");
}

#[test]
fn a_volume_replaced_after_the_upgrade_stays_tampered_across_restarts() {
    let mut s = setup("replaced-later");
    let mine = s.create("mine", 8 * MIB);
    let vol = volume(&s.pool(), &mine);
    let genuine = attrs(&vol, "trusted.shelf.");
    // What a root NFS client of the share can do: move the volume aside, create its own
    // file in its place, and stamp it in user.shelf.* with the id it reads in the path.
    std::fs::rename(&vol, vol.with_file_name("v.old")).unwrap();
    std::fs::write(&vol, pattern(3, MIB as usize)).unwrap();
    forge(&vol, "kind", "share");
    forge(&vol, "id", &mine);
    let tampered = |s: &Setup| {
        let why = s.d.err(
            "share.resize",
            vec![("share", t("mine")), ("size", n(16 * MIB))],
            "tampered",
        );
        eprintln!("share.resize: {why}");
        let v = s.d.ok("verify", vec![]);
        assert_eq!(get(&v, "clean"), Some(&Value::Bool(false)), "{v:?}");
    };
    tampered(&s);
    for round in 0..2 {
        s.d.stop();
        s.d.restart();
        eprintln!("after restart {round}:");
        tampered(&s);
        // The database's identity was not written onto the tenant's file.
        assert_eq!(attrs(&vol, "trusted.shelf."), vec![], "round {round}");
        assert_eq!(std::fs::metadata(&vol).unwrap().len(), MIB);
    }
    // The genuine volume, put back, is the share again.
    std::fs::rename(vol.with_file_name("v.old"), &vol).unwrap();
    assert_eq!(attrs(&vol, "trusted.shelf."), genuine);
    let v = s.d.ok("verify", vec![]);
    assert_eq!(get(&v, "clean"), Some(&Value::Bool(true)), "{v:?}");
}
