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

/// One read whose reply the bench does not decode: the request, then the frame's bytes,
/// checked to be `{id, ok: ...}` (an error is decoded, to say what it was); returns the
/// bytes of `ok`. Decoding a list of 100 shares into values costs the client ~0.3 ms,
/// more than the server's whole answer, so neither the shelfd runs nor the floor's
/// client decode what a read answers: both sides of the ratio do the same client work.
pub fn read_reply(c: &mut Client, r: &Request) -> Res<Vec<u8>> {
    c.send_request(r, None)
        .map_err(|e| format!("{}: {e}", r.op()))?;
    let frame = c
        .recv_frame()
        .map_err(|e| format!("{}: {e}", r.op()))?
        .ok_or_else(|| format!("{}: shelfd closed the connection", r.op()))?;
    // `{` "id": <uint> "ok": ... `}`: a map of two, the id an unsigned integer.
    let id_len = match frame.get(4) {
        Some(b) if *b < 24 => 1,
        Some(24) => 2,
        Some(25) => 3,
        Some(26) => 5,
        Some(27) => 9,
        _ => 0,
    };
    let ok = 4 + id_len;
    if id_len > 0
        && frame.starts_with(&[0xa2, 0x62, b'i', b'd'])
        && frame.get(ok..ok + 3) == Some(&[0x62, b'o', b'k'][..])
    {
        return Ok(frame[ok + 3..].to_vec());
    }
    let v = shelf::proto::frame::decode_body(&frame)
        .map_err(|e| format!("{}: undecodable reply: {e}", r.op()))?;
    Err(format!("{}: {}", r.op(), shelf::client::to_json(&v)))
}

/// The length of the CBOR array that `bytes` starts with.
pub fn array_len(bytes: &[u8]) -> Res<usize> {
    let n = match bytes {
        [b, ..] if (0x80..0x98).contains(b) => (*b - 0x80) as usize,
        [0x98, n, ..] => *n as usize,
        [0x99, a, b, ..] => u16::from_be_bytes([*a, *b]) as usize,
        [0x9a, a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]) as usize,
        _ => return Err("the reply is not a CBOR array".into()),
    };
    Ok(n)
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
