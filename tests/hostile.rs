//! Hostile input against a real shelfd on a scratch XFS, with a real tgtd and a private
//! exports file: every case of the catalogue (`tests/catalogue/`) gets its exact error
//! code and a message that says what is wrong; the connection continues or is closed
//! cleanly as documented; a second client works the whole time; a stalled frame is cut
//! off; memory stays bounded; the daemon never panics and the tree survives. Hostile config
//! files are in `tests/hostile_config.rs`.

mod catalogue;
mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use catalogue::{After, Case, Expect};
use ciborium::Value;
use common::*;
use shelf::client::{get, get_text, Client};
use shelf::proto::frame::{self, FrameError};

const MIB: u64 = 1 << 20;
/// A request that gets no answer in this long has hung.
const HANG: Duration = Duration::from_secs(60);
/// Longest error message accepted from the server: it must say what is wrong, not echo a
/// megabyte back.
const MESSAGE_BOUND: usize = 2048;

/// One reply as read off the socket.
#[derive(Debug)]
enum Read1 {
    Reply(Option<u64>, Result<Value, (String, String)>),
    /// Clean end of stream between frames.
    Eof,
    /// The peer reset the connection (allowed after an oversized frame).
    Reset,
}

/// A raw connection, for bytes no well-behaved client would send.
struct Raw {
    s: UnixStream,
}

impl Raw {
    fn connect(path: &Path) -> Raw {
        let s = UnixStream::connect(path).expect("connect");
        s.set_read_timeout(Some(HANG)).unwrap();
        Raw { s }
    }

    /// Write everything; `false` if the server closed first (EPIPE/ECONNRESET).
    fn send(&mut self, bytes: &[u8]) -> bool {
        self.s.write_all(bytes).is_ok()
    }

    fn read(&mut self) -> Read1 {
        match frame::read_frame_blocking(&mut self.s, 64 << 20) {
            Ok(None) => Read1::Eof,
            Ok(Some(body)) => {
                let v = frame::decode_body_with_depth(&body, 1024).expect("reply is CBOR");
                let id = match get(&v, "id") {
                    Some(Value::Integer(i)) => Some(u64::try_from(*i).expect("id")),
                    Some(Value::Null) => None,
                    other => panic!("reply id {other:?}"),
                };
                if let Some(ok) = get(&v, "ok") {
                    return Read1::Reply(id, Ok(ok.clone()));
                }
                let e = get(&v, "err").expect("ok or err");
                let code = get_text(e, "code").expect("code").to_string();
                let message = get_text(e, "message").expect("message").to_string();
                Read1::Reply(id, Err((code, message)))
            }
            Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                Read1::Reset
            }
            Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("no reply within {HANG:?}: the server hangs")
            }
            Err(e) => panic!("reading a reply: {e}"),
        }
    }

    fn hello(&mut self, id: u64) -> Result<(), String> {
        let req = catalogue::req(id, "hello", vec![]);
        if !self.send(&catalogue::frame_of(&req)) {
            return Err("cannot send hello".into());
        }
        match self.read() {
            Read1::Reply(Some(got), Ok(_)) if got == id => Ok(()),
            other => Err(format!("hello answered {other:?}")),
        }
    }
}

/// Send one case on a fresh connection and check the reply and what becomes of the
/// connection. Returns a description of every deviation.
fn run_case(socket: &Path, c: &Case) -> Result<(), String> {
    let mut conn = Raw::connect(socket);
    let sent = conn.send(&c.bytes);
    match &c.expect {
        Expect::Nothing => {
            assert!(sent, "{}: cannot send", c.name);
            conn.s.shutdown(std::net::Shutdown::Write).unwrap();
            match conn.read() {
                Read1::Eof => Ok(()),
                other => Err(format!("expected no reply and a close, got {other:?}")),
            }
        }
        Expect::Ok { id } => match conn.read() {
            Read1::Reply(Some(got), Ok(_)) if got == *id => conn.hello(id.wrapping_add(1)),
            other => Err(format!("expected ok for id {id}, got {other:?}")),
        },
        Expect::Error {
            id,
            code,
            says,
            after,
        } => {
            let (got_id, (got_code, message)) = match conn.read() {
                Read1::Reply(i, Err(e)) => (i, e),
                other => return Err(format!("expected {code}, got {other:?}")),
            };
            let mut wrong = Vec::new();
            if got_id != *id || got_code != *code {
                wrong.push(format!("reply id {got_id:?} code {got_code}"));
            }
            if message.trim().is_empty() || message.len() > MESSAGE_BOUND {
                wrong.push(format!("message of {} bytes", message.len()));
            }
            for s in says {
                if !message.contains(s) {
                    wrong.push(format!("message lacks {s:?}"));
                }
            }
            match after {
                After::Continues => {
                    if let Err(e) = conn.hello(4242) {
                        wrong.push(format!("connection unusable after the error: {e}"));
                    }
                }
                After::Closes => match conn.read() {
                    Read1::Eof | Read1::Reset => {}
                    other => wrong.push(format!("connection not closed: {other:?}")),
                },
            }
            if wrong.is_empty() {
                Ok(())
            } else {
                let shown: String = message.chars().take(200).collect();
                Err(format!("{} (message: {shown:?})", wrong.join("; ")))
            }
        }
    }
}

/// shelfd's resident memory, from /proc.
fn rss_bytes(pid: i32) -> u64 {
    proc_status_kib(pid, "VmRSS:") * 1024
}

/// A `kB` line of /proc/PID/status.
fn proc_status_kib(pid: i32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .expect("a /proc status line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(false)
}

/// A client that keeps calling `hello` and `share.list` until told to stop; counts calls
/// and records the first failure.
struct Bystander {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    handle: thread::JoinHandle<Result<(), String>>,
}

impl Bystander {
    fn start(socket: &Path) -> Bystander {
        let (stop, calls) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, n, socket) = (stop.clone(), calls.clone(), socket.to_path_buf());
        let handle = thread::spawn(move || {
            let mut c = Client::connect(&socket).map_err(|e| e.to_string())?;
            c.set_timeout(Some(HANG)).unwrap();
            while !s.load(Ordering::Relaxed) {
                c.call("hello", shelf::client::args(vec![]))
                    .map_err(|e| format!("hello: {e}"))?;
                let list = c
                    .call("share.list", shelf::client::args(vec![]))
                    .map_err(|e| format!("share.list: {e}"))?;
                if list.as_array().is_none_or(|a| a.is_empty()) {
                    return Err(format!("share.list gave {list:?}"));
                }
                n.fetch_add(2, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        });
        Bystander {
            stop,
            calls,
            handle,
        }
    }

    fn finish(self) -> (Result<(), String>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let r = self.handle.join().expect("bystander thread");
        (r, self.calls.load(Ordering::Relaxed))
    }
}

/// Announce 100 bytes, send 50, stall: after its body timeout the server answers with an
/// id-null error and closes the connection. Returns what the stalled client saw.
fn stall(socket: &Path) -> thread::JoinHandle<Result<(), String>> {
    let socket = socket.to_path_buf();
    thread::spawn(move || {
        let mut conn = Raw::connect(&socket);
        let mut bytes = 100u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0xa3; 50]);
        conn.send(&bytes);
        // The body timeout is 30 s; HANG (60 s) is the read timeout. The server says why
        // (id null), then closes.
        match conn.read() {
            Read1::Reply(None, Err((code, m)))
                if code == "invalid_argument" && m.contains("did not arrive within") => {}
            other => return Err(format!("stalled connection got {other:?}")),
        }
        match conn.read() {
            Read1::Eof => Ok(()),
            other => Err(format!("stalled connection not closed: {other:?}")),
        }
    })
}

/// Make the tree the catalogue refers to; returns the share ids.
fn make_tree(d: &Daemon) -> Vec<String> {
    let victim = d.ok(
        "share.create",
        vec![("name", t(catalogue::VICTIM)), ("size", n(8 * MIB))],
    );
    d.ok(
        "snapshot.create",
        vec![
            ("share", t(catalogue::VICTIM)),
            ("name", t(catalogue::VICTIM_SNAPSHOT)),
        ],
    );
    let fat = d.ok(
        "share.create",
        vec![
            ("name", t(catalogue::FAT)),
            ("size", n(8 * MIB)),
            ("sparse", Value::Bool(false)),
        ],
    );
    let exported = d.ok(
        "share.create",
        vec![("name", t(catalogue::EXPORTED)), ("size", n(8 * MIB))],
    );
    d.ok(
        "export.create",
        vec![
            ("share", t(catalogue::EXPORTED)),
            ("protocol", t("nfs")),
            ("clients", Value::Array(vec![t(catalogue::GOOD_NFS_CLIENT)])),
        ],
    );
    d.ok(
        "export.create",
        vec![
            ("share", t(catalogue::EXPORTED)),
            ("protocol", t("iscsi")),
            ("clients", Value::Array(vec![t(catalogue::GOOD_INITIATOR)])),
        ],
    );
    vec![
        field(sub(&victim, "share"), "id"),
        field(sub(&fat, "share"), "id"),
        field(sub(&exported, "share"), "id"),
    ]
}

/// What the exports file and tgtd hold: only the good client and initiator of the one
/// exported share, whatever the catalogue tried.
fn assert_targets_clean(rig: &Rig, exported_id: &str) {
    let exports = std::fs::read_to_string(&rig.ef.path).expect("the exports file");
    let entries: Vec<&str> = exports
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(entries.len(), 1, "exports file:\n{exports}");
    assert!(
        entries[0].contains(exported_id)
            && entries[0].contains(&format!(" {}(", catalogue::GOOD_NFS_CLIENT))
            && entries[0].matches('(').count() == 1,
        "exports file:\n{exports}"
    );
    let show = rig.tgtd.show();
    let acl: Vec<&str> = show
        .split("ACL information:")
        .skip(1)
        .flat_map(|block| {
            // The entries are the indented lines up to the next "Target N:" line.
            block
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with(' '))
                .map(str::trim)
        })
        .collect();
    assert_eq!(acl, vec![catalogue::GOOD_INITIATOR], "tgtd:\n{show}");
}

/// 1000 oversized headers (each closes its connection) and 1000 malformed bodies on one
/// connection; every one answered.
fn flood(socket: &Path) {
    for i in 0..1000u32 {
        let mut conn = Raw::connect(socket);
        conn.send(&(catalogue::MAX_FRAME + 1 + i).to_be_bytes());
        match conn.read() {
            Read1::Reply(None, Err((code, _))) if code == "invalid_argument" => {}
            other => panic!("oversized header {i}: {other:?}"),
        }
    }
    let mut conn = Raw::connect(socket);
    let junk: Vec<Vec<u8>> = vec![
        catalogue::frame(&[0xff; 4096]),
        catalogue::frame(&[0x9f; 64]),
        catalogue::frame(&[0x81; 40_000]),
        catalogue::frame(&[0x7a, 0xff, 0xff, 0xff, 0xff, b'x']),
    ];
    for i in 0..1000 {
        assert!(conn.send(&junk[i % junk.len()]));
        match conn.read() {
            Read1::Reply(None, Err((code, _))) if code == "invalid_argument" => {}
            other => panic!("malformed body {i}: {other:?}"),
        }
    }
    conn.hello(1).expect("the flooded connection still works");
}

/// A client that pipelines 20,000 bad frames and never reads a reply: the server stops
/// reading it (bounded buffers) while everyone else is served.
fn never_reads(d: &Daemon) {
    let mut conn = Raw::connect(&d.socket);
    conn.s
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sent = 0;
    for _ in 0..20_000 {
        if conn.s.write_all(&0u32.to_be_bytes()).is_err() {
            break; // the server stopped reading: our socket buffer is full
        }
        sent += 1;
    }
    assert!(sent > 0);
    d.ok("hello", vec![]);
    drop(conn);
}

/// Many concurrent 1 MiB frames of tiny CBOR items (each decodes into far more memory
/// than it occupies on the wire).
fn amplification(socket: &Path) {
    let mut body = vec![0x9f];
    body.extend(std::iter::repeat_n(
        0x80u8,
        catalogue::MAX_FRAME as usize - 2,
    ));
    body.push(0xff);
    let bytes = catalogue::frame(&body);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (socket, bytes) = (socket.to_path_buf(), bytes.clone());
            thread::spawn(move || {
                let mut conn = Raw::connect(&socket);
                for _ in 0..4 {
                    assert!(conn.send(&bytes));
                    match conn.read() {
                        Read1::Reply(None, Err((code, m))) if code == "invalid_argument" => {
                            assert!(!m.is_empty())
                        }
                        other => panic!("amplification frame: {other:?}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn rig() -> Rig {
    Rig::start("hostile", catalogue::POOL_FS_BYTES, "", true)
}

#[test]
fn hostile_input_catalogue_against_a_real_shelfd() {
    let rig = rig();
    let d = &rig.d;
    let ids = make_tree(d);
    let tree_before = d.ok("tree", vec![]);
    let pid = d.pid();

    let bystander = Bystander::start(&d.socket);
    let stalled = stall(&d.socket);
    // Warm up (thread pools, SQLite caches) before taking the baseline.
    for _ in 0..50 {
        d.ok("share.list", vec![]);
    }
    let rss_before = rss_bytes(pid);

    let cases = catalogue::cases();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            run_case(&d.socket, c)
                .err()
                .map(|e| format!("{}: {e}", c.name))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    flood(&d.socket);
    never_reads(d);
    amplification(&d.socket);
    let rss_after = rss_bytes(pid);
    eprintln!(
        "shelfd VmRSS: {} KiB before, {} KiB after {} cases, 2000 flood frames, \
         20000 unread frames and 32 amplification frames; peak (VmHWM) {} KiB",
        rss_before / 1024,
        rss_after / 1024,
        cases.len(),
        proc_status_kib(pid, "VmHWM:")
    );
    assert!(
        rss_after < rss_before + 32 * MIB,
        "shelfd grew from {rss_before} to {rss_after} bytes"
    );

    stalled
        .join()
        .unwrap()
        .expect("the stalled connection is closed");
    let (bystander_result, calls) = bystander.finish();
    bystander_result.expect("the bystander client never fails");
    assert!(calls > 0);

    assert!(process_alive(pid), "shelfd died");
    d.ok("hello", vec![]);
    let log = d.log_text();
    assert!(!log.contains("panicked"), "shelfd panicked:\n{log}");
    assert_targets_clean(&rig, &ids[2]);
    let listed = d.ok("share.list", vec![]);
    for id in &ids {
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .any(|s| get_text(s, "id") == Some(id)),
            "share {id} vanished"
        );
    }
    // The only change the catalogue makes is the thin 1 PiB share it may create.
    d.ok(
        "share.delete",
        vec![("share", t("thin-4x")), ("recursive", Value::Bool(true))],
    );
    assert_eq!(d.ok("tree", vec![]), tree_before, "the tree changed");
}
