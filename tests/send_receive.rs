//! Send and receive between two real shelfd nodes, each in its own network namespace on
//! its own XFS loop mount, the stream going `shelfctl send | ssh node2 shelfctl receive`
//! through a real sshd listening in the second namespace (docs/replication.md):
//!
//! * a full send of a 1 GiB volume, then a 1% change sent as an incremental that carries
//!   about 1% of the bytes (the figures are printed), data identical by checksum;
//! * a chain of three incrementals, checked after each;
//! * receiving the same snapshot again is `changed: false`;
//! * a corrupted stream is refused and leaves nothing;
//! * the receiving shelfd killed at random moments of a receive leaves the receiver clean
//!   (`verify` clean, no staging file, no row) and a retry succeeds.

mod common;
#[path = "send_receive/net.rs"]
mod net;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ciborium::Value;
use common::rig::Shelfd;
use common::{field, n, sub, t, volume, Daemon, Layout, Xfs};
use net::{NetPair, Sshd};
use sha2::{Digest, Sha256};
use shelf::client::{get, get_u64};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const SHELFCTL: &str = env!("CARGO_BIN_EXE_shelfctl");

/// One node: its XFS, its shelfd running inside its namespace.
struct Node {
    xfs: Xfs,
    daemon: Daemon,
}

impl Node {
    fn start(ns: &str, tag: &str) -> Node {
        let xfs = Xfs::new(tag, 6 * GIB);
        let layout = Layout::on_xfs(&xfs, "");
        // shelfd runs in the node's namespace: `ip netns exec` execs it, so the pid the
        // harness holds (and kills) is shelfd's own.
        let wrapper = xfs.base().join("shelfd-in-netns");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec ip netns exec {ns} {} \"$@\"\n",
                env!("CARGO_BIN_EXE_shelfd")
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut daemon = Shelfd::new(
            wrapper,
            layout.config.clone(),
            layout.state.clone(),
            layout.socket.clone(),
            layout.config.with_extension("log"),
        );
        daemon.restart_with_env(&[]);
        Node { xfs, daemon }
    }

    fn pool(&self) -> PathBuf {
        self.xfs.mount.join("pool")
    }

    fn socket(&self) -> String {
        self.daemon.socket.display().to_string()
    }

    fn snapshot_file(&self, id: &str) -> PathBuf {
        self.pool().join("snapshots").join(id)
    }

    fn staging_files(&self) -> Vec<String> {
        std::fs::read_dir(self.pool().join("receiving"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn assert_clean(&self, ctx: &str) {
        let v = self.daemon.ok("verify", vec![]);
        assert_eq!(
            get(&v, "clean"),
            Some(&Value::Bool(true)),
            "{ctx}: verify: {v:?}"
        );
        assert!(
            self.staging_files().is_empty(),
            "{ctx}: staging {:?}",
            self.staging_files()
        );
    }

    fn snapshot_ids(&self) -> Vec<String> {
        match self.daemon.ok("snapshot.list", vec![]) {
            Value::Array(a) => a.iter().map(|s| field(s, "id")).collect(),
            v => panic!("{v:?}"),
        }
    }
}

fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    format!("{:x}", h.finalize())
}

/// Deterministic bytes for a write (xorshift), so the 1 GiB does not compress or dedupe.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write_noise(path: &Path, offset: u64, len: u64, seed: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut at = 0;
    while at < len {
        let k = (len - at).min(8 * MIB);
        f.write_all_at(&noise(seed ^ (offset + at), k as usize), offset + at)
            .unwrap();
        at += k;
    }
    f.sync_all().unwrap();
}

struct World {
    net: NetPair,
    sshd: Sshd,
    n1: Node,
    n2: Node,
    _dir: tempfile::TempDir,
}

/// What a send | ssh receive pipeline did.
struct Sent {
    ok: bool,
    bytes: u64,
    reply: String,
    stderr: String,
}

impl World {
    fn new() -> World {
        let dir = common::scratch("send-ssh");
        let net = NetPair::new();
        let sshd = Sshd::start(&net.b, &net.addr_b, dir.path());
        let n1 = Node::start(&net.a, "send-n1");
        let n2 = Node::start(&net.b, "send-n2");
        World {
            net,
            sshd,
            n1,
            n2,
            _dir: dir,
        }
    }

    fn remote_receive(&self, name: &str) -> String {
        format!("{SHELFCTL} --socket {} receive {name}", self.n2.socket())
    }

    /// `shelfctl send SNAP [--from BASE] | ssh node2 shelfctl receive NAME`, from node 1's
    /// namespace.
    fn send(&self, snap: &str, from: Option<&str>, name: &str) -> Sent {
        let s1 = self.n1.socket();
        let mut argv = vec![SHELFCTL, "--socket", &s1, "send", snap];
        if let Some(f) = from {
            argv.extend(["--from", f]);
        }
        let mut sender = NetPair::exec(&self.net.a, &argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let receiver = self
            .sshd
            .ssh(&self.net.a, &self.remote_receive(name))
            .stdin(sender.stdout.take().unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let r = receiver.wait_with_output().unwrap();
        let s = sender.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&s.stderr).into_owned();
        let bytes = stderr
            .split("sent ")
            .nth(1)
            .and_then(|x| x.split(' ').next())
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        Sent {
            ok: r.status.success() && s.status.success(),
            bytes,
            reply: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: format!("{stderr}{}", String::from_utf8_lossy(&r.stderr)),
        }
    }

    /// The bytes of a stream from `ssh node2 shelfctl receive NAME < file`.
    fn receive_file(&self, file: &Path, name: &str) -> std::process::Child {
        self.sshd
            .ssh(&self.net.a, &self.remote_receive(name))
            .stdin(std::fs::File::open(file).unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn snapshot(&self, share: &str, name: &str) -> String {
        let v = self.n1.daemon.ok(
            "snapshot.create",
            vec![("share", t(share)), ("name", t(name))],
        );
        field(sub(&v, "snapshot"), "id")
    }

    /// Node 2 has snapshot `id` with node 1's bytes, and share `name` holds them.
    fn check_same(&self, id: &str, share_id2: &str, ctx: &str) {
        let want = sha256_file(&self.n1.snapshot_file(id));
        assert_eq!(
            sha256_file(&self.n2.snapshot_file(id)),
            want,
            "{ctx}: snapshot"
        );
        assert_eq!(
            sha256_file(&volume(&self.n2.pool(), share_id2)),
            want,
            "{ctx}: share"
        );
    }
}

fn share_id_on(node: &Node, name: &str) -> String {
    field(
        &node.daemon.ok("share.show", vec![("share", t(name))]),
        "id",
    )
}

fn changed(reply: &str) -> bool {
    let j: serde_json::Value =
        serde_json::from_str(reply).unwrap_or_else(|e| panic!("{e}: {reply}"));
    j["changed"].as_bool().unwrap()
}

#[test]
fn send_and_receive_between_two_nodes_over_ssh() {
    let mut w = World::new();
    let d1 = &w.n1.daemon;
    d1.ok(
        "share.create",
        vec![
            ("name", t("vol")),
            ("size", n(GIB)),
            ("sparse", Value::Bool(true)),
        ],
    );
    let v1 = volume(&w.n1.pool(), &share_id_on(&w.n1, "vol"));
    // 1 GiB of data but for a 64 MiB hole in the middle: holes stay holes.
    write_noise(&v1, 0, 512 * MIB, 1);
    write_noise(&v1, 576 * MIB, GIB - 576 * MIB, 2);
    let s1 = w.snapshot("vol", "s1");

    let t0 = Instant::now();
    let full = w.send(&s1, None, "replica");
    assert!(full.ok, "full send: {}", full.stderr);
    let data = GIB - 64 * MIB;
    println!(
        "full send: {} bytes for {} data bytes ({:.4}), {:.2} s",
        full.bytes,
        data,
        full.bytes as f64 / data as f64,
        t0.elapsed().as_secs_f64()
    );
    assert!(
        full.bytes >= data && full.bytes < data + MIB,
        "{}",
        full.bytes
    );
    assert!(changed(&full.reply));
    let share2 = share_id_on(&w.n2, "replica");
    w.check_same(&s1, &share2, "full");
    // The hole came across as a hole.
    let alloc = std::fs::metadata(w.n2.snapshot_file(&s1)).unwrap();
    assert!(std::os::unix::fs::MetadataExt::blocks(&alloc) * 512 <= data + 8 * MIB);

    // 1%: 41 scattered writes of 256 KiB (10.25 MiB), and 1 MiB punched into a hole.
    for i in 0..41u64 {
        write_noise(&v1, (i * 24 + 3) * MIB, 256 * 1024, 100 + i);
    }
    {
        let f = std::fs::OpenOptions::new().write(true).open(&v1).unwrap();
        nix::fcntl::fallocate(
            &f,
            nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            (700 * MIB) as i64,
            MIB as i64,
        )
        .unwrap();
    }
    let s2 = w.snapshot("vol", "s2");
    let t0 = Instant::now();
    let inc = w.send(&s2, Some(&s1), "replica");
    assert!(inc.ok, "incremental: {}", inc.stderr);
    let changed_bytes = 41 * 256 * 1024;
    println!(
        "1% incremental: {} bytes sent for {} bytes changed of {} ({:.3}% of the volume), {:.2} s",
        inc.bytes,
        changed_bytes,
        GIB,
        inc.bytes as f64 * 100.0 / GIB as f64,
        t0.elapsed().as_secs_f64()
    );
    assert!(
        inc.bytes >= changed_bytes && inc.bytes < changed_bytes * 13 / 10,
        "{}",
        inc.bytes
    );
    w.check_same(&s2, &share2, "incremental 1");

    // A chain: two more incrementals on top (three in all).
    let mut prev = s2.clone();
    for k in 3..=4u64 {
        write_noise(&v1, k * 100 * MIB + 12345 * 512, 3 * MIB, 1000 + k);
        let s = w.snapshot("vol", &format!("s{k}"));
        let sent = w.send(&s, Some(&prev), "replica");
        assert!(
            sent.ok && changed(&sent.reply),
            "incremental {k}: {}",
            sent.stderr
        );
        w.check_same(&s, &share2, &format!("incremental {k}"));
        prev = s;
    }
    // The same snapshot again: changed false, nothing written.
    let again = w.send(&prev, Some(&s2), "replica");
    assert!(again.ok, "{}", again.stderr);
    assert!(!changed(&again.reply), "{}", again.reply);
    w.n2.assert_clean("after the chain");

    corrupted_and_killed(&mut w, &prev);
}

/// A corrupted stream is refused; a receive killed at random moments leaves nothing and
/// a retry succeeds.
fn corrupted_and_killed(w: &mut World, base: &str) {
    let v1 = volume(&w.n1.pool(), &share_id_on(&w.n1, "vol"));
    write_noise(&v1, 0, 64 * MIB, 77);
    let s5 = w.snapshot("vol", "s5");
    let file = w.n1.xfs.base().join("s5.stream");
    let out = Command::new(SHELFCTL)
        .args(["--socket", &w.n1.socket(), "send", &s5, "--from", base])
        .stdout(std::fs::File::create(&file).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&file).unwrap();
    let mut bad = bytes.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x40;
    let bad_file = w.n1.xfs.base().join("s5.bad");
    std::fs::File::create(&bad_file)
        .unwrap()
        .write_all(&bad)
        .unwrap();
    let r = w
        .receive_file(&bad_file, "replica")
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("checksum"), "{err}");
    assert!(!w.n2.snapshot_ids().contains(&s5));
    w.n2.assert_clean("corrupted stream");

    // Kills at random moments of a full 1 GiB receive into a new share.
    let full_file = w.n1.xfs.base().join("s5.full");
    let out = Command::new(SHELFCTL)
        .args(["--socket", &w.n1.socket(), "send", &s5])
        .stdout(std::fs::File::create(&full_file).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::remove_file(&file).ok();
    let seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
    println!("kill moments seeded with {seed}");
    let mut x = seed | 1;
    for round in 0..4 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let wait = Duration::from_millis(x % 3000);
        let child = w.receive_file(&full_file, "copy");
        std::thread::sleep(wait);
        w.n2.daemon.kill();
        let _ = child.wait_with_output();
        w.n2.daemon.restart_with_env(&[]);
        let ctx = format!("kill {round} after {wait:?}");
        w.n2.assert_clean(&ctx);
        if w.n2.snapshot_ids().contains(&s5) {
            // The kill came after the commit: then it is whole.
            let id = share_id_on(&w.n2, "copy");
            w.check_same(&s5, &id, &ctx);
            w.n2.daemon.ok(
                "share.delete",
                vec![("share", t("copy")), ("recursive", Value::Bool(true))],
            );
        }
        println!("{ctx}: receiver clean");
    }
    let r = w
        .receive_file(&full_file, "copy")
        .wait_with_output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let _ = get_u64;
    w.n2.assert_clean("after the retry");
}
