//! CBOR values as tests build and read them, and files read and written at an offset.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ciborium::Value;
use shelf::client::{get, get_text};

use super::Daemon;

/// Text value.
pub fn t(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// Integer value.
pub fn n(x: u64) -> Value {
    Value::Integer(x.into())
}

/// Field `key` of a map as text.
pub fn field(v: &Value, key: &str) -> String {
    get_text(v, key)
        .unwrap_or_else(|| panic!("no text {key} in {v:?}"))
        .to_string()
}

/// Sub-map `key`.
pub fn sub<'a>(v: &'a Value, key: &str) -> &'a Value {
    get(v, key).unwrap_or_else(|| panic!("no {key} in {v:?}"))
}

/// Make a share `name` of `size` bytes on `d`; its id.
pub fn create_share(d: &Daemon, name: &str, size: u64) -> String {
    let r = d.ok("share.create", vec![("name", t(name)), ("size", n(size))]);
    field(sub(&r, "share"), "id")
}

/// Open a send stream of `snapshot` on `d`; its id.
pub fn open_send(d: &Daemon, snapshot: &str) -> String {
    field(
        &d.ok("snapshot.send", vec![("snapshot", t(snapshot))]),
        "stream",
    )
}

/// Begin a receive into share `name` on `d`; its id.
pub fn begin_receive(d: &Daemon, name: &str) -> String {
    field(
        &d.ok("snapshot.receive.begin", vec![("name", t(name))]),
        "receive",
    )
}

/// Create a formatted share `name` of `size` bytes with filesystem `fs` (`xfs`, `ext4`);
/// its id.
pub fn create_formatted(d: &Daemon, name: &str, size: u64, fs: &str) -> String {
    let r = d.ok(
        "share.create",
        vec![("name", t(name)), ("size", n(size)), ("filesystem", t(fs))],
    );
    field(sub(&r, "share"), "id")
}

/// Wait for a job to end; returns its final state.
pub fn wait_job(d: &Daemon, job: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let v = d.ok("job.show", vec![("job", t(job))]);
        if get_text(&v, "state") != Some("running") {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "job {job} hangs: {v:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The volume file of a share in a file pool.
pub fn volume(pool_dir: &Path, share_id: &str) -> PathBuf {
    pool_dir.join("shares").join(share_id).join("volume")
}

/// Write `data` at `offset` of a file, and fsync.
pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// Read `len` bytes at `offset` of a file.
pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// A recognisable pattern of `len` bytes seeded by `seed`.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
