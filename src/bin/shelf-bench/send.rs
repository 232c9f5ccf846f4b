//! Send streams: `snapshot.send` full and incremental, read to the end through the
//! client, against a floor of `pread` + SHA-256 of the same bytes (what the stream must
//! at least do: read the data it carries and hash it for the trailer).

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use ciborium::Value;
use sha2::{Digest, Sha256};
use shelf::client::{get, get_text, get_u64, Client};
use shelf::proto::{Request, SnapshotSendArgs, StreamReadArgs};

use crate::calls::{call, fill, share_create, snapshot_create, volume};
use crate::env::{Res, Shelfd};
use crate::stats::{ms, ratio, Samples, Table};

const MIB: u64 = 1 << 20;

/// One measured stream: its label, the snapshot, the base, the ranges the floor reads.
type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a [(u64, u64)]);

/// `snapshot.send` of a `size`-byte share filled with data (full, snapshot s1) and after
/// 1 % of it was rewritten in scattered 1 MiB writes (incremental s2 from s1), `runs`
/// times each, against the floor. Returns the table.
pub fn send_streams(d: &Shelfd, pool_dir: &Path, size: u64, runs: usize) -> Res<String> {
    let mut c = d.client()?;
    let share = call(&mut c, share_create("sendsrc", size, None))?;
    let vol = volume(pool_dir, get(&share, "share").ok_or("no share")?)?;
    fill(&vol, size)?;
    let s1 = snapshot_id(&call(&mut c, snapshot_create("sendsrc", "s1"))?)?;
    let changed = rewrite_one_percent(&vol, size)?;
    let s2 = snapshot_id(&call(&mut c, snapshot_create("sendsrc", "s2"))?)?;
    let snapshot_file = |id: &str| pool_dir.join("snapshots").join(id);
    let whole = [(0, size)];
    let cases: [Case<'_>; 2] = [
        ("full (s1)", &s1, None, &whole),
        ("incremental (s2 from s1, 1 %)", &s2, Some(&s1), &changed),
    ];
    let mut table = Table::new(&[
        "stream",
        "bytes sent",
        "data bytes",
        "p50 ms",
        "floor p50 ms",
        "ratio to floor",
        "s/GiB sent",
    ]);
    for (label, snap, from, ranges) in cases {
        let (mut sent, mut floor) = (Samples::default(), Samples::default());
        let mut bytes = 0;
        for _ in 0..runs.max(1) {
            let t0 = Instant::now();
            bytes = send_to_end(&mut c, snap, from)?;
            sent.lat.push(t0.elapsed());
            let t0 = Instant::now();
            pread_and_hash(&snapshot_file(snap), ranges)?;
            floor.lat.push(t0.elapsed());
        }
        let data: u64 = ranges.iter().map(|r| r.1).sum();
        table.row(vec![
            label.to_string(),
            bytes.to_string(),
            data.to_string(),
            ms(sent.p50()),
            ms(floor.p50()),
            ratio(sent.p50(), floor.p50()),
            per_gib(sent.p50(), bytes),
        ]);
    }
    Ok(table.render())
}

/// The id in a `snapshot.create` answer.
fn snapshot_id(answer: &Value) -> Res<String> {
    get(answer, "snapshot")
        .and_then(|s| get_text(s, "id"))
        .map(str::to_string)
        .ok_or_else(|| "snapshot.create answered no id".into())
}

/// Rewrite 1 % of the volume (at least 1 MiB) in 1 MiB writes spread evenly over it, with
/// bytes unlike the fill's; fsync. Returns the ranges written.
fn rewrite_one_percent(vol: &Path, size: u64) -> Res<Vec<(u64, u64)>> {
    let pieces = (size / 100 / MIB).max(1);
    let stride = (size / pieces) / MIB * MIB;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(vol)
        .map_err(|e| format!("{}: {e}", vol.display()))?;
    let mut ranges = Vec::new();
    for i in 0..pieces {
        let block: Vec<u8> = (0..MIB).map(|b| (b as u8) ^ (i as u8) ^ 0xa5).collect();
        // Half a stride in, so no piece touches the start or the end of the volume.
        let at = i * stride + stride / 2 / MIB * MIB;
        f.write_all_at(&block, at).map_err(|e| e.to_string())?;
        ranges.push((at, MIB));
    }
    f.sync_all().map_err(|e| e.to_string())?;
    Ok(ranges)
}

/// Open `snapshot.send` of `snap` (from `from`) and read the stream to its end; returns
/// its length, checked against the size the server announced.
fn send_to_end(c: &mut Client, snap: &str, from: Option<&str>) -> Res<u64> {
    let opened = call(
        c,
        Request::SnapshotSend(SnapshotSendArgs {
            snapshot: snap.to_string(),
            from: from.map(str::to_string),
            share: None,
            pool: None,
        }),
    )?;
    let stream = get_text(&opened, "stream").ok_or("no stream")?.to_string();
    let announced = get_u64(&opened, "size").ok_or("no size")?;
    let mut at = 0u64;
    loop {
        let v = call(
            c,
            Request::StreamRead(StreamReadArgs {
                stream: stream.clone(),
                max: None,
            }),
        )?;
        if let Some(Value::Bytes(b)) = get(&v, "data") {
            at += b.len() as u64;
        }
        if matches!(get(&v, "end"), Some(Value::Bool(true))) {
            break;
        }
    }
    if at != announced {
        return Err(format!("stream of {at} bytes, {announced} announced"));
    }
    Ok(at)
}

/// The floor: read `ranges` of `path` with `pread` (1 MiB at a time) into SHA-256.
fn pread_and_hash(path: &Path, ranges: &[(u64, u64)]) -> Res<()> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    for &(offset, len) in ranges {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(MIB) as usize;
            f.read_exact_at(&mut buf[..n], offset + done)
                .map_err(|e| e.to_string())?;
            hash.update(&buf[..n]);
            done += n as u64;
        }
    }
    std::hint::black_box(hash.finalize());
    Ok(())
}

/// Seconds per GiB of `bytes` moved in `d`.
fn per_gib(d: Duration, bytes: u64) -> String {
    if bytes == 0 {
        return "-".into();
    }
    format!(
        "{:.2}",
        d.as_secs_f64() * (1u64 << 30) as f64 / bytes as f64
    )
}
