//! The floor: the bare steps of each operation, done without shelfd, in the same run.
//!
//! Each floor operation does what shelfd must do at the least: the same file system
//! calls as the file pool (mkdir, create with mode, ftruncate, the ten `trusted.shelf.*`
//! xattrs, FICLONE, fsync of the file and its directories), the same two SQLite commits
//! (WAL, `synchronous = FULL`, one serialised writer), the same tgtadm and exportfs
//! commands (or, in the raw-IPC rows, the same tgtd requests sent straight on its
//! management socket, see `floor_ipc.rs`), and one unix-socket round trip to an in-process server that answers the
//! read-only requests from SQLite with CBOR. What is left in `shelfd / floor` is shelfd's
//! own cost: protocol, dispatch, locks, extra queries, extra commands.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use rusqlite::Connection;
use shelf::sys::fs;

use crate::env::{path_str, sh, Res, Tgtd};
pub use crate::floor_server::FloorConn;

#[path = "floor_ipc.rs"]
mod ipc;
use crate::floor_server::{open_db, serve};

/// IQN prefix of the floor's targets.
pub const FLOOR_IQN: &str = "iqn.2026-11.org.example.floor";

pub(crate) fn e<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |err| format!("floor: {what}: {err}")
}

/// The floor's state: a pool directory, a database, a tgtd and an exports file.
#[derive(Debug)]
pub struct Floor {
    root: PathBuf,
    db: Mutex<Connection>,
    /// The tgtd the floor's targets go to.
    pub tgtd: Tgtd,
    exports_file: PathBuf,
    exports: Mutex<BTreeMap<String, String>>,
    next_tid: AtomicU32,
    ids: Mutex<HashMap<String, String>>,
    targets: Mutex<Vec<(u32, String, String)>>,
    socket: PathBuf,
}

impl Floor {
    /// Set up under `root` (on the scratch XFS), with its tgtd and exports file; its
    /// socket server listens on `socket` (off the XFS, so it does not pin the mount).
    pub fn new(root: &Path, socket: PathBuf, tgtd: Tgtd, exports_file: PathBuf) -> Res<Floor> {
        for d in ["shares", "snapshots"] {
            std::fs::create_dir_all(root.join(d)).map_err(e("pool dir"))?;
        }
        let db_path = root.join("floor.db");
        let db = open_db(&db_path)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS objects (id TEXT PRIMARY KEY, kind TEXT NOT NULL,
               name TEXT NOT NULL, pool TEXT NOT NULL, size INTEGER NOT NULL,
               state TEXT NOT NULL, created_at INTEGER NOT NULL, meta TEXT NOT NULL,
               UNIQUE (pool, kind, name));
             CREATE TABLE IF NOT EXISTS intents (id INTEGER PRIMARY KEY, op TEXT, obj TEXT);",
        )
        .map_err(e("schema"))?;
        let listener = UnixListener::bind(&socket).map_err(e("bind"))?;
        let (serve_db, serve_root) = (db_path, root.to_path_buf());
        std::thread::Builder::new()
            .name("floor-server".into())
            .spawn(move || serve(listener, serve_db, serve_root))
            .map_err(e("server thread"))?;
        Ok(Floor {
            root: root.to_path_buf(),
            db: Mutex::new(db),
            tgtd,
            exports_file,
            exports: Mutex::new(BTreeMap::new()),
            next_tid: AtomicU32::new(1),
            ids: Mutex::new(HashMap::new()),
            targets: Mutex::new(Vec::new()),
            socket,
        })
    }

    /// A new client connection.
    pub fn connect(&self) -> Res<FloorConn> {
        FloorConn::connect(&self.socket)
    }

    /// One commit of one statement, as shelfd's store thread does it.
    fn commit(&self, sql: &str, params: &[&dyn rusqlite::ToSql]) -> Res<()> {
        let mut c = self.db.lock().expect("floor db");
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(e("begin"))?;
        tx.execute(sql, params).map_err(e("statement"))?;
        tx.commit().map_err(e("commit"))
    }

    fn insert(&self, id: &str, kind: &str, name: &str, pool: &str, size: u64) -> Res<()> {
        self.commit(
            "INSERT INTO objects (id, kind, name, pool, size, state, created_at, meta)
             VALUES (?1, ?2, ?3, ?4, ?5, 'creating', strftime('%s','now'), '{}')",
            &[&id, &kind, &name, &pool, &(size as i64)],
        )
    }

    fn set_state(&self, id: &str, state: &str) -> Res<()> {
        self.commit(
            "UPDATE objects SET state = ?2 WHERE id = ?1",
            &[&id, &state],
        )
    }

    /// The volume path of a floor share.
    pub fn volume(&self, name: &str) -> Res<PathBuf> {
        let id = self.id_of(name)?;
        Ok(self.root.join("shares").join(id).join("volume"))
    }

    /// The file of a floor snapshot.
    pub fn snapshot_file(&self, name: &str) -> Res<PathBuf> {
        Ok(self.root.join("snapshots").join(self.id_of(name)?))
    }

    fn id_of(&self, name: &str) -> Res<String> {
        self.ids
            .lock()
            .expect("ids")
            .get(name)
            .cloned()
            .ok_or_else(|| format!("floor: no object {name}"))
    }

    /// share.create: two commits around a durable sparse volume with its identity.
    pub fn create_share(&self, pool: &str, name: &str, size: u64) -> Res<String> {
        let id = uuid::Uuid::new_v4().to_string();
        self.insert(&id, "share", name, pool, size)?;
        let dir = self.root.join("shares").join(&id);
        std::fs::create_dir(&dir).map_err(e("mkdir"))?;
        let path = dir.join("volume");
        let f = fs::create_new(&path, 0o660).map_err(e("create"))?;
        f.set_len(size).map_err(e("ftruncate"))?;
        fs::set_identity(&path, &identity("share", &id, name, pool, size)).map_err(e("xattr"))?;
        f.sync_all().map_err(e("fsync"))?;
        fs::fsync_dir(&dir).map_err(e("fsync dir"))?;
        fs::fsync_dir(&self.root.join("shares")).map_err(e("fsync dir"))?;
        self.set_state(&id, "available")?;
        self.ids
            .lock()
            .expect("ids")
            .insert(name.to_string(), id.clone());
        Ok(id)
    }

    /// share.create + an iSCSI export: the share, two commits, and the tgtadm commands
    /// shelfd's tgt driver runs (target, LUN 1, its thin provisioning, CHAP account,
    /// account binding).
    pub fn create_iscsi(&self, name: &str, size: u64) -> Res<u32> {
        self.create_share("default", name, size)?;
        self.export_iscsi(name)
    }

    /// export.create over iSCSI of an existing floor share: two commits around the
    /// backing-store check and the tgtadm commands, then the exports record on the volume
    /// (as shelfd: an export the volume cannot record is refused). Returns the target id.
    pub fn export_iscsi(&self, name: &str) -> Res<u32> {
        let id = self.id_of(name)?;
        let eid = format!("x-{id}");
        self.insert(&eid, "export", name, "default", 0)?;
        let tid = self.next_tid.fetch_add(1, Ordering::SeqCst);
        let vol = self.volume(name)?;
        fs::check_backing_store(&vol, &id).map_err(|e| format!("floor: backing store: {e:?}"))?;
        self.new_target(tid, name, &id)?;
        self.set_state(&eid, "available")?;
        stamp_exports(&vol, &exports_record(&id, "", None))?;
        self.targets
            .lock()
            .expect("targets")
            .push((tid, name.to_string(), id));
        Ok(tid)
    }

    /// Every target the floor made: (tid, share name, share id).
    pub fn targets(&self) -> Vec<(u32, String, String)> {
        self.targets.lock().expect("targets").clone()
    }

    /// The tgtadm commands of one target with LUN 1 (thin provisioned) and a CHAP account.
    pub fn new_target(&self, tid: u32, name: &str, share_id: &str) -> Res<()> {
        let (t, iqn) = (tid.to_string(), format!("{FLOOR_IQN}:{name}"));
        let vol = self.root.join("shares").join(share_id).join("volume");
        let user = format!("floor-{tid}");
        let g = &self.tgtd;
        g.tgtadm(&[
            "--mode",
            "target",
            "--op",
            "new",
            "--tid",
            &t,
            "--targetname",
            &iqn,
        ])?;
        g.tgtadm(&[
            "--mode",
            "logicalunit",
            "--op",
            "new",
            "--tid",
            &t,
            "--lun",
            "1",
            "--backing-store",
            path_str(&vol),
        ])?;
        // Floor volumes are sparse: shelfd's tgt driver gives their LUN logical block
        // provisioning with one more update (docs/exports.md, "Discard").
        g.tgtadm(&[
            "--mode",
            "logicalunit",
            "--op",
            "update",
            "--tid",
            &t,
            "--lun",
            "1",
            "--params",
            "thin_provisioning=1",
        ])?;
        g.tgtadm(&[
            "--mode",
            "account",
            "--op",
            "new",
            "--user",
            &user,
            "--password",
            "floorsecret12345",
        ])?;
        g.tgtadm(&[
            "--mode", "account", "--op", "bind", "--tid", &t, "--user", &user,
        ])?;
        Ok(())
    }

    /// share.create + an NFS export: the share, two commits, and (serialised, one per
    /// change: no coalescing) an atomic rewrite of the exports file and `exportfs -r`.
    pub fn create_nfs(&self, name: &str, size: u64) -> Res<()> {
        let id = self.create_share("default", name, size)?;
        let eid = format!("x-{id}");
        self.insert(&eid, "export", name, "default", 0)?;
        let dir = self.root.join("shares").join(&id);
        {
            let mut set = self.exports.lock().expect("exports");
            let fsid = 500_000 + set.len();
            set.insert(
                id,
                format!(
                    "{} 127.0.0.1(rw,sync,root_squash,no_subtree_check,fsid={fsid})\n",
                    dir.display()
                ),
            );
            let text: String = set.values().cloned().collect();
            shelf::export::write_atomically(&self.exports_file, &text, 0o644)
                .map_err(e("exports file"))?;
            crate::calls::retry_foreign_exportfs(|| sh(&["exportfs", "-r"]))?;
        }
        self.set_state(&eid, "available")?;
        stamp_exports(&self.volume(name)?, &exports_record(&eid, "", None))
    }

    /// snapshot.create: two commits around a durable FICLONE of the volume.
    pub fn snapshot(&self, volume: &Path, name: &str) -> Res<()> {
        let id = uuid::Uuid::new_v4().to_string();
        let src = std::fs::File::open(volume).map_err(e("open"))?;
        let size = src.metadata().map_err(e("stat"))?.len();
        self.insert(&id, "snapshot", name, "default", size)?;
        let dst_path = self.root.join("snapshots").join(&id);
        let dst = fs::create_new(&dst_path, 0o440).map_err(e("create"))?;
        fs::ficlone(&src, &dst).map_err(e("FICLONE"))?;
        dst.set_len(size).map_err(e("ftruncate"))?;
        fs::set_identity(&dst_path, &identity("snapshot", &id, name, "default", size))
            .map_err(e("xattr"))?;
        dst.sync_all().map_err(e("fsync"))?;
        fs::fsync_dir(&self.root.join("snapshots")).map_err(e("fsync dir"))?;
        self.set_state(&id, "available")?;
        self.ids.lock().expect("ids").insert(name.to_string(), id);
        Ok(())
    }

    /// share.clone: two commits around a durable FICLONE into a new volume.
    pub fn clone_share(&self, snapshot: &Path, name: &str) -> Res<()> {
        let id = uuid::Uuid::new_v4().to_string();
        let src = std::fs::File::open(snapshot).map_err(e("open"))?;
        let size = src.metadata().map_err(e("stat"))?.len();
        self.insert(&id, "share", name, "default", size)?;
        let dir = self.root.join("shares").join(&id);
        std::fs::create_dir(&dir).map_err(e("mkdir"))?;
        let path = dir.join("volume");
        let dst = fs::create_new(&path, 0o660).map_err(e("create"))?;
        fs::ficlone(&src, &dst).map_err(e("FICLONE"))?;
        dst.set_len(size).map_err(e("ftruncate"))?;
        fs::set_identity(&path, &identity("share", &id, name, "default", size))
            .map_err(e("xattr"))?;
        dst.sync_all().map_err(e("fsync"))?;
        fs::fsync_dir(&dir).map_err(e("fsync dir"))?;
        fs::fsync_dir(&self.root.join("shares")).map_err(e("fsync dir"))?;
        self.set_state(&id, "available")?;
        self.ids.lock().expect("ids").insert(name.to_string(), id);
        Ok(())
    }

    /// share.attach + share.detach of an initiator on an existing target of share `name`,
    /// with the steps crash safety needs on both sides (docs/performance.md, "Method"):
    /// attach journals the attachment (commit), checks the backing store is the share's
    /// volume (access is never granted to a planted file), binds the initiator, clears the
    /// journal (commit: acknowledged) and records the share's exports on its volume
    /// (xattr + fsync, for a database rebuild); detach records the exports without it on
    /// the volume first (a rebuild must not bring revoked access back), journals the
    /// detach (commit), unbinds, and deletes the attachment (commit).
    pub fn attach_detach(&self, name: &str, tid: u32, initiator: &str) -> Res<()> {
        let t = tid.to_string();
        let g = &self.tgtd;
        self.attach_detach_with(name, initiator, &mut |bind| {
            let op = if bind { "bind" } else { "unbind" };
            g.tgtadm(&[
                "--mode",
                "target",
                "--op",
                op,
                "--tid",
                &t,
                "--initiator-name",
                initiator,
            ])
            .map(|_| ())
        })
    }

    /// The journal, volume and record steps of [`Floor::attach_detach`] around `acl`
    /// (called with true to bind, false to unbind).
    pub(crate) fn attach_detach_with(
        &self,
        name: &str,
        initiator: &str,
        acl: &mut dyn FnMut(bool) -> Res<()>,
    ) -> Res<()> {
        let (id, vol) = (self.id_of(name)?, self.volume(name)?);
        let aid = uuid::Uuid::new_v4().to_string();
        self.commit(
            "INSERT INTO intents (op, obj) VALUES ('share.attach', ?1)",
            &[&aid],
        )?;
        fs::check_backing_store(&vol, &id).map_err(|e| format!("floor: backing store: {e:?}"))?;
        acl(true)?;
        self.commit("DELETE FROM intents WHERE obj = ?1", &[&aid])?;
        stamp_exports(&vol, &exports_record(&id, initiator, Some(&aid)))?;
        stamp_exports(&vol, &exports_record(&id, initiator, None))?;
        self.commit(
            "INSERT INTO intents (op, obj) VALUES ('share.detach', ?1)",
            &[&aid],
        )?;
        acl(false)?;
        self.commit("DELETE FROM intents WHERE obj = ?1", &[&aid])
    }

    /// share.resize: an intent commit; the volume opened as shelfd must open what it
    /// changes (beneath its directory, no link followed, its identity read and checked:
    /// a file planted in a volume's place through an export is never grown); ftruncate +
    /// identity + fsync; a commit.
    pub fn resize(&self, name: &str, size: u64) -> Res<()> {
        let id = self.id_of(name)?;
        self.commit(
            "INSERT INTO intents (op, obj) VALUES ('share.resize', ?1)",
            &[&id],
        )?;
        let dir = fs::open_dir(&self.root.join("shares").join(&id)).map_err(e("open dir"))?;
        let expect = fs::Expect {
            kind: "share",
            id: &id,
        };
        let f = fs::open_checked(&dir, Path::new("volume"), expect, true)
            .map_err(|err| format!("floor: open the volume: {err:?}"))?;
        f.set_len(size).map_err(e("ftruncate"))?;
        fs::set_identity_fd(&f, &identity("share", &id, name, "default", size))
            .map_err(e("xattr"))?;
        f.sync_all().map_err(e("fsync"))?;
        let mut c = self.db.lock().expect("floor db");
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(e("begin"))?;
        tx.execute(
            "UPDATE objects SET size = ?2 WHERE id = ?1",
            rusqlite::params![id, size as i64],
        )
        .map_err(e("update"))?;
        tx.execute("DELETE FROM intents WHERE obj = ?1", [&id])
            .map_err(e("intent"))?;
        tx.commit().map_err(e("commit"))
    }

    /// share.delete: a commit, removing the share's directory durably, a commit.
    pub fn delete_share(&self, name: &str) -> Res<()> {
        let id = self.id_of(name)?;
        self.set_state(&id, "deleting")?;
        std::fs::remove_dir_all(self.root.join("shares").join(&id)).map_err(e("remove"))?;
        fs::fsync_dir(&self.root.join("shares")).map_err(e("fsync dir"))?;
        self.commit("DELETE FROM objects WHERE id = ?1", &[&id])?;
        self.ids.lock().expect("ids").remove(name);
        Ok(())
    }
}

/// A share's exports record as the file pool stamps it (`trusted.shelf.exports`): its
/// iSCSI export with CHAP user and secret, and the attachment `attachment` if given.
pub(crate) fn exports_record(share_id: &str, initiator: &str, attachment: Option<&str>) -> String {
    let export = format!(
        r#"{{"export":{{"id":"x-{share_id}","share":"{share_id}","protocol":"iscsi","driver":"tgt","state":"available","target":"{FLOOR_IQN}:{share_id}","tid":1,"chap_user":"floor-1","attached":[{{"client":"{initiator}","mode":"rw"}}]}},"chap_secret":"floorsecret12345"}}"#
    );
    let attachments = match attachment {
        Some(aid) => format!(
            r#"[{{"id":"{aid}","share":"{share_id}","protocol":"iscsi","client":"{initiator}","host":"h","initiator":"{initiator}","mode":"rw"}}]"#
        ),
        None => "[]".into(),
    };
    format!(r#"{{"exports":[{export}],"attachments":{attachments}}}"#)
}

/// Write a share's exports record on its volume and make it durable (xattr, fsync), as
/// shelfd does after every change to its exports or attachments.
pub(crate) fn stamp_exports(volume: &Path, record: &str) -> Res<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(volume)
        .map_err(e("open"))?;
    let attrs = [("exports".to_string(), record.to_string())].into();
    fs::set_identity_fd(&f, &attrs).map_err(e("xattr"))?;
    f.sync_all().map_err(e("fsync"))
}

/// The ten `trusted.shelf.*` attributes the file pool writes.
fn identity(kind: &str, id: &str, name: &str, pool: &str, size: u64) -> BTreeMap<String, String> {
    let created = shelf::store::now().to_string();
    [
        ("kind", kind.to_string()),
        ("id", id.to_string()),
        ("name", name.to_string()),
        ("pool", pool.to_string()),
        ("size", size.to_string()),
        ("created_at", created),
        ("sparse", "true".into()),
        ("origin_snapshot", String::new()),
        ("origin_share", String::new()),
        ("metadata", "{}".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
