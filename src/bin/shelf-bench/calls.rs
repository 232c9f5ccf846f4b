//! The calls both runs make to shelfd, and helpers on volume files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use ciborium::Value;
use shelf::client::{get_text, Client};
use shelf::model::Protocol;
use shelf::proto::{
    ExportCreateArgs, Request, ShareCreateArgs, ShareListArgs, ShareRef, SnapshotCreateArgs,
};

use crate::env::Res;

/// One call that must succeed.
pub fn call(c: &mut Client, r: Request) -> Res<Value> {
    c.request(&r).map_err(|e| format!("{}: {e}", r.op()))
}

/// `share.create` of `name` (sparse), in `pool` or the default one.
pub fn share_create(name: &str, size: u64, pool: Option<&str>) -> Request {
    Request::ShareCreate(ShareCreateArgs {
        name: name.into(),
        size,
        pool: pool.map(str::to_string),
        ..Default::default()
    })
}

/// `share.show` of `share`.
pub fn share_show(share: &str) -> Request {
    Request::ShareShow(ShareRef {
        share: share.into(),
        pool: None,
    })
}

/// `share.list`, of one pool or of all.
pub fn share_list(pool: Option<&str>) -> Request {
    Request::ShareList(ShareListArgs {
        pool: pool.map(str::to_string),
        ..Default::default()
    })
}

/// `snapshot.create` of `share`'s snapshot `name`.
pub fn snapshot_create(share: &str, name: &str) -> Request {
    Request::SnapshotCreate(SnapshotCreateArgs {
        share: share.into(),
        name: name.into(),
        pool: None,
    })
}

/// `export.create` of `share` with the default driver, allowing `clients`.
pub fn export_create(share: &str, protocol: Protocol, clients: &[&str]) -> Request {
    Request::ExportCreate(ExportCreateArgs {
        share: share.into(),
        protocol,
        driver: None,
        pool: None,
        clients: Some(clients.iter().map(|c| c.to_string()).collect()),
        access: None,
        sync: None,
        root_squash: None,
        chap: None,
    })
}

/// Requests retried because `exportfs -r` failed on another program's exports file
/// (another process on this machine removed its file while exportfs was reading the
/// directory). Reported with the results.
pub static EXPORTFS_RETRIES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// Retry `f` while it fails because a foreign exports file vanished under `exportfs -r`.
pub fn retry_foreign_exportfs<T>(mut f: impl FnMut() -> Res<T>) -> Res<T> {
    let mut tries = 0;
    loop {
        match f() {
            Err(e)
                if tries < 5
                    && e.contains("exportfs")
                    && e.contains("can't open")
                    && !e.contains("shelf-bench-") =>
            {
                tries += 1;
                EXPORTFS_RETRIES.fetch_add(1, Ordering::SeqCst);
            }
            other => return other,
        }
    }
}

/// export.create over NFS for 127.0.0.1.
pub fn export_nfs(c: &mut Client, share: &str) -> Res<()> {
    retry_foreign_exportfs(|| {
        call(c, export_create(share, Protocol::Nfs, &["127.0.0.1"])).map(|_| ())
    })
}

/// Fill `path` with `len` bytes of data (1 MiB writes) and fsync.
pub fn fill(path: &Path, len: u64) -> Res<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8 + 1).collect();
    let mut done = 0;
    while done < len {
        let n = chunk.len().min((len - done) as usize);
        f.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
        done += n as u64;
    }
    f.sync_all().map_err(|e| e.to_string())
}

/// The volume file of a shelfd share, from its id.
pub fn volume(pool_dir: &Path, share: &Value) -> Res<PathBuf> {
    let id = get_text(share, "id").ok_or("share without id")?;
    Ok(pool_dir.join("shares").join(id).join("volume"))
}
