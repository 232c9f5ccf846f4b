//! Issue 11 §3 against a real shelfd: memory, descriptors and time are bounded, and
//! admins always get in. Peers of other uids are real processes (`setpriv` to a uid with a
//! role or none); descriptor exhaustion is real (`prlimit` on the running daemon).
//! Figures (resident memory, admin latency, attach latency) are printed; only bounds of
//! memory and "an admin gets an answer at all" are asserted, never a timing.

mod common;
mod peer;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ciborium::Value;
use common::*;
use peer::{open_to_all, request, NOGROUP};
use shelf::client::{args, get_text, Client};
use shelf::proto::frame;

const MIB: u64 = 1 << 20;
const READER: u32 = 4242;
const NOBODY_ROLE: u32 = 4244;
/// How long an admin call may take before the test calls it locked out (a bound of the
/// protocol: the admin gets an answer at all; the latency itself is printed).
const ADMIN_ANSWER: Duration = Duration::from_secs(20);

fn rss_kib(pid: i32) -> u64 {
    proc_kib(pid, "VmRSS:")
}

/// A `kB` line of /proc/PID/status.
fn proc_kib(pid: i32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a /proc status line")
}

/// Read one reply frame: `(code or "ok", message)`.
fn reply(s: &mut UnixStream) -> (String, String) {
    let body = frame::read_frame_blocking(s, 64 << 20)
        .expect("a reply")
        .expect("a reply before the end of the stream");
    let v = frame::decode_body_with_depth(&body, 1024).unwrap();
    if shelf::client::get(&v, "ok").is_some() {
        return ("ok".into(), String::new());
    }
    let e = shelf::client::get(&v, "err").expect("ok or err");
    (
        get_text(e, "code").unwrap().into(),
        get_text(e, "message").unwrap().into(),
    )
}

/// Admin calls on fresh connections until stopped; each latency in milliseconds.
struct AdminProbe {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Result<Vec<f64>, String>>,
}

impl AdminProbe {
    fn start(socket: &Path, op: &'static str) -> AdminProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, socket) = (stop.clone(), socket.to_path_buf());
        let handle = thread::spawn(move || {
            let mut times = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let mut c = Client::connect(&socket).map_err(|e| format!("connect: {e}"))?;
                c.set_timeout(Some(ADMIN_ANSWER)).unwrap();
                c.call(op, args(vec![]))
                    .map_err(|e| format!("admin {op} after {:?}: {e}", t0.elapsed()))?;
                times.push(t0.elapsed().as_secs_f64() * 1000.0);
                thread::sleep(Duration::from_millis(20));
            }
            Ok(times)
        });
        AdminProbe { stop, handle }
    }

    /// Stop; `(calls, median ms, max ms)`, or the call that got no answer.
    fn finish(self) -> Result<(usize, f64, f64), String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut times = self.handle.join().expect("admin thread")?;
        assert!(!times.is_empty(), "no admin call completed");
        times.sort_by(f64::total_cmp);
        Ok((times.len(), times[times.len() / 2], times[times.len() - 1]))
    }
}

/// A peer of another uid: python3 under `setpriv`, opening `count` connections that each
/// send `hello` (and, with `read`, read its answer), then holding them until told to stop.
const PEER_PY: &str = r#"
import socket, sys, time
path, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
HELLO = bytes.fromhex("0000000ea262696401626f706568656c6c6f")
socks, failed, refused, answered = [], 0, 0, 0
deadline = time.time() + 90
for i in range(count):
    if time.time() > deadline:
        break
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(path)
        s.sendall(HELLO)
        socks.append(s)
        if mode == "read":
            data = s.recv(65536)
            if b"permission_denied" in data:
                refused += 1
            elif b"bok" in data:
                answered += 1
    except OSError:
        failed += 1
print(f"opened {len(socks)} failed {failed} refused {refused} answered {answered}", flush=True)
sys.stdin.read()
closed = 0
for s in socks:
    s.setblocking(False)
    try:
        while True:
            d = s.recv(65536)
            if d == b"":
                closed += 1
                break
    except BlockingIOError:
        pass
    except OSError:
        closed += 1
print(f"closed {closed}", flush=True)
"#;

struct Peer {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Peer {
    fn start(uid: u32, socket: &Path, count: usize, mode: &str) -> Peer {
        let mut child = Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={NOGROUP}"),
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                PEER_PY,
            ])
            .arg(socket)
            .arg(count.to_string())
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("setpriv python3");
        let out = BufReader::new(child.stdout.take().unwrap());
        Peer { child, out }
    }

    /// The line the peer prints once all its connections are open.
    fn opened(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    /// Tell it to stop; the number of its connections the server had closed.
    fn finish(mut self) -> usize {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        self.out.read_to_string(&mut rest).unwrap();
        let _ = self.child.wait();
        rest.trim()
            .strip_prefix("closed ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("peer said {rest:?}"))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field_of(line: &str, key: &str) -> usize {
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == key).expect(key);
    words[i + 1].parse().unwrap()
}

/// Lower the running daemon's descriptor limit.
fn limit_descriptors(pid: i32, n: u32) {
    sh(&[
        "prlimit",
        "--pid",
        &pid.to_string(),
        &format!("--nofile={n}:{n}"),
    ]);
}

fn daemon_for_peers(xfs: &Xfs, extra: &str) -> Daemon {
    let layout = Layout::on_xfs(
        xfs,
        &format!(
            "reconcile_interval = 0\n{extra}\n[access]\nsocket_group = \"{NOGROUP}\"\nreader_users = [\"{READER}\"]\n"
        ),
    );
    let d = Daemon::start(&layout);
    open_to_all(&[xfs.base(), d.socket.parent().unwrap()]);
    d
}

#[test]
fn parked_frames_cost_the_shared_budget_not_their_announced_length() {
    let xfs = Xfs::new("bounds-park", 512 * MIB);
    let d = Daemon::start(&Layout::on_xfs(&xfs, "reconcile_interval = 0\n"));
    for _ in 0..20 {
        d.ok("hello", vec![]);
    }
    let pid = d.pid();
    let before = rss_kib(pid);
    // 1,000 connections each announce a 1 MiB frame and send all of it but one byte.
    let len = 1u32 << 20;
    let mut conns: Vec<(UnixStream, usize, bool)> = (0..1000)
        .map(|_| {
            let mut s = UnixStream::connect(&d.socket).unwrap();
            s.write_all(&len.to_be_bytes()).unwrap();
            s.set_nonblocking(true).unwrap();
            (s, 0, false)
        })
        .collect();
    let chunk = vec![0x61u8; 64 << 10];
    let want = len as usize - 1;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(3) {
        let mut progress = false;
        for (s, sent, closed) in conns.iter_mut() {
            while *sent < want && !*closed {
                match s.write(&chunk[..chunk.len().min(want - *sent)]) {
                    Ok(k) => {
                        *sent += k;
                        progress = true;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    // Refused (`busy`) and closed by shelfd: the budget stayed spent.
                    Err(_) => *closed = true,
                }
            }
        }
        if progress {
            quiet_since = Instant::now();
        } else {
            thread::sleep(Duration::from_millis(50));
        }
    }
    let sent: usize = conns.iter().map(|c| c.1).sum();
    let refused = conns.iter().filter(|c| c.2).count();
    if let Some((s, _, _)) = conns.iter_mut().find(|c| c.2) {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (code, m) = reply(s);
        assert_eq!(code, "busy", "{m}");
        assert!(m.contains("limits.request_buffer_bytes"), "{m}");
    }
    let after = rss_kib(pid);
    let peak = proc_kib(pid, "VmHWM:");
    // While the budget is spent, an admin's small request is still read and answered.
    let t0 = Instant::now();
    let mut c = d.client();
    c.set_timeout(Some(ADMIN_ANSWER)).unwrap();
    c.call("share.list", args(vec![]))
        .expect("an admin is answered while the budget is spent");
    let admin_ms = t0.elapsed().as_secs_f64() * 1000.0;
    println!(
        "1000 connections parking 1 MiB - 1 bytes ({} MiB written by the clients, {refused} \
         connections refused busy and closed): shelfd VmRSS {before} KiB before, {after} KiB \
         parked, peak (VmHWM) {peak} KiB (+{} KiB; target <= 65536 KiB); admin share.list \
         meanwhile {admin_ms:.1} ms",
        sent >> 20,
        peak.saturating_sub(before)
    );
    assert!(
        peak.saturating_sub(before) <= 64 * 1024,
        "parked frames cost {} KiB of resident memory at their peak",
        peak - before
    );
    drop(conns);
    // shelfd gives the pages back within a few seconds of the last large frame.
    thread::sleep(Duration::from_secs(3));
    d.ok("hello", vec![]);
    println!("after the parkers left: VmRSS {} KiB", rss_kib(pid));
}

#[test]
fn a_peer_with_no_role_is_refused_at_connect_and_audited_once() {
    let xfs = Xfs::new("bounds-roleless", 512 * MIB);
    let d = daemon_for_peers(&xfs, "");
    d.ok("share.create", vec![("name", t("s1")), ("size", n(MIB))]);
    limit_descriptors(d.pid(), 1200);
    let admin = AdminProbe::start(&d.socket, "share.list");
    let mut peer = Peer::start(NOBODY_ROLE, &d.socket, 1300, "read");
    let line = peer.opened();
    thread::sleep(Duration::from_millis(500));
    let figures = admin.finish();
    let closed = peer.finish();
    println!("peer with no role, 1300 connections against 1200 descriptors: {line}; closed by shelfd: {closed}");
    let (calls, median, max) = figures.expect("the admin always gets in");
    println!(
        "admin share.list on fresh connections meanwhile: {calls} calls, median {median:.1} ms, \
         max {max:.1} ms (target: within 100 ms)"
    );
    assert!(field_of(&line, "refused") > 0, "{line}");
    assert_eq!(field_of(&line, "answered"), 0, "{line}");
    // One audit entry for the peer (per minute), not one per connection or request.
    let log = d.ok("audit.list", vec![("limit", n(1000))]);
    let mine: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| shelf::client::get_u64(e, "uid") == Some(u64::from(NOBODY_ROLE)))
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(get_text(mine[0], "op"), Some("connect"));
    assert_eq!(get_text(mine[0], "outcome"), Some("permission_denied"));
}

#[test]
fn running_out_of_descriptors_sheds_idle_readers_for_admins() {
    let xfs = Xfs::new("bounds-fds", 512 * MIB);
    let d = daemon_for_peers(
        &xfs,
        "[limits]\nmax_connections = 4096\nmax_connections_per_uid = 4096\n",
    );
    d.ok("share.create", vec![("name", t("s1")), ("size", n(MIB))]);
    limit_descriptors(d.pid(), 1200);
    let admin = AdminProbe::start(&d.socket, "share.list");
    let mut peer = Peer::start(READER, &d.socket, 1300, "read");
    let line = peer.opened();
    thread::sleep(Duration::from_millis(500));
    let figures = admin.finish();
    // An admin connection opened now, with the readers' connections still held.
    let mut c = d.client();
    c.set_timeout(Some(ADMIN_ANSWER)).unwrap();
    c.call("share.list", args(vec![]))
        .expect("an admin gets in while readers hold every descriptor");
    let closed = peer.finish();
    println!("reader, 1300 connections against 1200 descriptors: {line}; shed by shelfd: {closed}");
    let (calls, median, max) = figures.expect("the admin always gets in");
    println!(
        "admin share.list on fresh connections meanwhile: {calls} calls, median {median:.1} ms, \
         max {max:.1} ms (target: within 100 ms)"
    );
    assert!(closed > 0, "no reader connection was shed: {line}");
    assert!(d.log_text().contains("shedding idle non-admin connections"));
}

#[test]
fn connection_caps_refuse_with_busy() {
    let xfs = Xfs::new("bounds-caps", 512 * MIB);
    let d = daemon_for_peers(&xfs, "[limits]\nmax_connections_per_uid = 5\n");
    let mut peer = Peer::start(READER, &d.socket, 8, "read");
    let line = peer.opened();
    assert_eq!(field_of(&line, "answered"), 5, "{line}");
    // Admins have no per-uid cap.
    let admins: Vec<Client> = (0..8).map(|_| d.client()).collect();
    d.ok("hello", vec![]);
    drop(admins);
    let closed = peer.finish();
    assert!(closed >= 3, "the refused connections were closed: {closed}");
    assert!(d
        .log_text()
        .contains("has its maximum of 5 connections open"));
}

#[test]
fn decoding_hostile_frames_is_bounded_and_holds_up_nobody() {
    let xfs = Xfs::new("bounds-decode", 512 * MIB);
    let d = Daemon::start(&Layout::on_xfs(&xfs, "reconcile_interval = 0\n"));
    let pid = d.pid();
    let before = rss_kib(pid);
    // A 1 MiB request map whose args hold one array of a million one-byte integers.
    let mut body = vec![0xa3, 0x62, b'i', b'd', 0x01, 0x62, b'o', b'p'];
    body.extend_from_slice(&[
        0x65, b'h', b'e', b'l', b'l', b'o', 0x64, b'a', b'r', b'g', b's',
    ]);
    body.extend_from_slice(&[0xa1, 0x61, b'x', 0x9f]);
    let max = 1usize << 20;
    body.resize(max - 1, 0x00);
    body.push(0xff);
    let mut hostile = (body.len() as u32).to_be_bytes().to_vec();
    hostile.extend_from_slice(&body);
    let stop = Arc::new(AtomicBool::new(false));
    let messages = Arc::new(Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..16)
        .map(|_| {
            let (socket, bytes, stop, messages) = (
                d.socket.clone(),
                hostile.clone(),
                stop.clone(),
                messages.clone(),
            );
            thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) && sent < 200 {
                    s.write_all(&bytes).unwrap();
                    let (code, m) = reply(&mut s);
                    messages.lock().unwrap().push(format!("{code}: {m}"));
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let admin = AdminProbe::start(&d.socket, "hello");
    thread::sleep(Duration::from_secs(3));
    let figures = admin.finish();
    let peak = rss_kib(pid);
    stop.store(true, Ordering::Relaxed);
    let frames: usize = senders.into_iter().map(|h| h.join().unwrap()).sum();
    let (calls, median, max_ms) = figures.expect("admin hello answered");
    println!(
        "16 connections sending 1 MiB frames of one-byte items ({frames} frames): admin hello \
         {calls} calls, median {median:.1} ms, max {max_ms:.1} ms; VmRSS {before} KiB before, \
         {peak} KiB during"
    );
    let messages = messages.lock().unwrap();
    assert!(!messages.is_empty());
    for m in messages.iter() {
        assert!(
            m.starts_with("invalid_argument: ") && m.contains("data items"),
            "{m}"
        );
    }
    assert!(
        peak.saturating_sub(before) <= 128 * 1024,
        "decoding cost {} KiB",
        peak - before
    );
}

#[test]
fn one_subscription_per_connection_a_global_cap_and_queues_on_demand() {
    let xfs = Xfs::new("bounds-events", 512 * MIB);
    // The default cap (1024), so that the test also runs against a shelfd without one.
    let d = Daemon::start(&Layout::on_xfs(&xfs, "reconcile_interval = 0\n"));
    let pid = d.pid();
    for _ in 0..20 {
        d.ok("hello", vec![]);
    }
    let before = rss_kib(pid);
    let mut subs: Vec<UnixStream> = Vec::new();
    for i in 0..1024 {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.write_all(&request(1, "events.subscribe", vec![]))
            .unwrap();
        let (code, m) = reply(&mut s);
        assert_eq!(code, "ok", "subscription {i}: {m}");
        subs.push(s);
        if i == 999 {
            let after = rss_kib(pid);
            println!(
                "1000 event subscriptions: shelfd VmRSS {before} KiB before, {after} KiB with \
                 them (+{} KiB)",
                after.saturating_sub(before)
            );
            assert!(
                after.saturating_sub(before) <= 64 * 1024,
                "1000 subscriptions cost {} KiB",
                after - before
            );
        }
    }
    // A second subscription on one connection is refused.
    subs[0]
        .write_all(&request(2, "events.subscribe", vec![]))
        .unwrap();
    let (code, m) = reply(&mut subs[0]);
    assert_eq!(code, "invalid_argument", "{m}");
    assert!(m.contains("one per connection"), "{m}");
    // Past the global cap: busy, until one goes.
    let mut extra = UnixStream::connect(&d.socket).unwrap();
    extra
        .write_all(&request(1, "events.subscribe", vec![]))
        .unwrap();
    let (code, m) = reply(&mut extra);
    assert_eq!(code, "busy", "{m}");
    assert!(m.contains("limits.max_subscriptions"), "{m}");
    drop(subs.pop());
    assert!(eventually(10, || {
        let mut again = UnixStream::connect(&d.socket).unwrap();
        again
            .write_all(&request(1, "events.subscribe", vec![]))
            .unwrap();
        reply(&mut again).0 == "ok"
    }));
    // The subscribers still get events.
    d.ok("share.create", vec![("name", t("e1")), ("size", n(MIB))]);
    let body = frame::read_frame_blocking(&mut subs[1], 1 << 20)
        .unwrap()
        .unwrap();
    let event = frame::decode_body(&body).unwrap();
    assert!(shelf::client::get(&event, "event").is_some(), "{event:?}");
}

/// Median milliseconds of `rounds` attach+detach pairs.
fn attach_ms(d: &Daemon, rounds: usize) -> f64 {
    let mut c = d.client();
    let mut times: Vec<f64> = (0..rounds)
        .map(|_| {
            let a = vec![
                ("share", t("vol")),
                (
                    "connector",
                    connector("iqn.2026-12.org.example:c1", "127.0.0.1", "compute-1"),
                ),
            ];
            let t0 = Instant::now();
            c.call("share.attach", args(a.clone())).expect("attach");
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            c.call("share.detach", args(a)).expect("detach");
            ms
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The `execve` lines of every command shelfd starts while `f` runs (strace on all its
/// threads and children).
fn commands_started(d: &Daemon, f: impl FnOnce()) -> Vec<String> {
    let trace = d.state.parent().unwrap().join("execve.trace");
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=execve", "-o"])
        .arg(&trace)
        .args(["-p", &d.pid().to_string()])
        .stderr(Stdio::null())
        .spawn()
        .expect("strace");
    wait_until_traced(&mut strace, d.pid());
    f();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(strace.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    strace.wait().unwrap();
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    let _ = std::fs::remove_file(&trace);
    text.lines()
        .filter(|l| l.contains("execve("))
        .map(str::to_string)
        .collect()
}

/// A reader's `hello` flood: 8 connections for `secs` seconds; prints its count at the end.
fn hello_flood(socket: &Path, secs: u32) -> Child {
    Command::new("setpriv")
        .args([
            &format!("--reuid={READER}"),
            &format!("--regid={NOGROUP}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            r#"
import socket, sys, threading, time
HELLO = bytes.fromhex("0000000ea262696401626f706568656c6c6f")
count = [0]
def run():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    end = time.time() + int(sys.argv[2])
    while time.time() < end:
        s.sendall(HELLO)
        s.recv(65536)
        count[0] += 1
ts = [threading.Thread(target=run) for _ in range(8)]
[t.start() for t in ts]
[t.join() for t in ts]
print(count[0])
"#,
        ])
        .arg(socket)
        .arg(secs.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv python3")
}

fn flood_count(flood: Child) -> usize {
    let out = flood.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn hello_reads_driver_status_from_a_cache_and_spawns_nothing() {
    let xfs = Xfs::new("bounds-hello", 512 * MIB);
    let tgtd = Tgtd::start();
    // No background probe during the test: whatever shelfd runs, a request made it. tgt
    // goes through tgtadm here, so an attach starts a command the trace must see.
    let d = daemon_for_peers(
        &xfs,
        &format!(
            "{}tgt_transport = \"tgtadm\"\n[limits]\ndriver_probe_interval = 3600\n",
            tgtd.config()
        ),
    );
    d.ok(
        "share.create",
        vec![("name", t("vol")), ("size", n(8 * MIB))],
    );
    let hello = d.ok("hello", vec![]);
    assert_eq!(get_text(sub(&hello, "drivers"), "tgt"), Some("usable"));
    assert!(shelf::client::get_u64(&hello, "drivers_age_ms").is_some());
    let quiet = attach_ms(&d, 10);
    // strace sees the commands an attach starts (tgtadm)...
    let attach_execs = commands_started(&d, || {
        attach_ms(&d, 1);
    });
    assert!(
        attach_execs.iter().any(|l| l.contains("tgtadm")),
        "strace saw no command of an attach: {attach_execs:?}"
    );
    // ...and none while a reader floods hello.
    let mut traced_hellos = 0;
    let execs = commands_started(&d, || {
        traced_hellos = flood_count(hello_flood(&d.socket, 3));
    });
    // The same flood untraced, with attaches measured meanwhile.
    let flood = hello_flood(&d.socket, 3);
    thread::sleep(Duration::from_millis(300));
    let flooded = attach_ms(&d, 10);
    let hellos = flood_count(flood);
    println!(
        "reader hello flood (8 connections, 3 s): {traced_hellos} hellos under strace, \
         commands shelfd started for them: {}; attach median {quiet:.1} ms quiet, \
         {flooded:.1} ms during a flood of {hellos} hellos",
        execs.len()
    );
    assert!(traced_hellos > 100, "the flood ran: {traced_hellos}");
    assert!(execs.is_empty(), "hello started commands: {execs:?}");
}

#[test]
fn header_and_idle_timeouts_close_connections() {
    let xfs = Xfs::new("bounds-timeouts", 512 * MIB);
    let d = Daemon::start(&Layout::on_xfs(
        &xfs,
        "reconcile_interval = 0\n[limits]\nidle_timeout = 2\nframe_timeout = 2\n",
    ));
    let open = |d: &Daemon| {
        let s = UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    let at_end = |s: &mut UnixStream| {
        let mut b = [0u8; 1];
        matches!(s.read(&mut b), Ok(0))
    };
    // Half a header, then nothing: told why, then closed.
    let mut half = open(&d);
    half.write_all(&[0, 0]).unwrap();
    // Silent from the start: closed without a word once idle.
    let mut silent = open(&d);
    // A subscriber is never idle, however quiet.
    let mut subscriber = open(&d);
    subscriber
        .write_all(&request(1, "events.subscribe", vec![]))
        .unwrap();
    assert_eq!(reply(&mut subscriber).0, "ok");
    let t0 = Instant::now();
    let (code, m) = reply(&mut half);
    assert_eq!(code, "invalid_argument", "{m}");
    assert!(m.contains("frame header did not arrive within 2 s"), "{m}");
    assert!(at_end(&mut half));
    assert!(at_end(&mut silent), "the idle connection is closed");
    println!(
        "half a header answered and closed, a silent connection closed, within {:?}",
        t0.elapsed()
    );
    thread::sleep(Duration::from_secs(3));
    d.ok("share.create", vec![("name", t("t1")), ("size", n(MIB))]);
    let body = frame::read_frame_blocking(&mut subscriber, 1 << 20)
        .unwrap()
        .expect("the subscriber is still open");
    let event = frame::decode_body(&body).unwrap();
    assert!(shelf::client::get(&event, "event").is_some(), "{event:?}");
    // A connection that keeps asking, every half second for twice the idle timeout, is
    // never idle: its idle timer fires, finds it active and is moved on, each time.
    let mut active = open(&d);
    for i in 0..9 {
        active.write_all(&request(10 + i, "hello", vec![])).unwrap();
        assert_eq!(reply(&mut active).0, "ok", "request {i}");
        thread::sleep(Duration::from_millis(500));
    }
    // Then, silent, it is closed once idle.
    assert!(at_end(&mut active), "closed once idle");
}

/// A reader of another uid that opens `count` connections and either pipelines `n` `hello`
/// requests on each without ever reading (`pipeline`), or announces a frame of `n` bytes
/// on each and sends all of it but one byte (`park`); then holds them until stdin closes.
const HOSTILE_PY: &str = r#"
import socket, sys, time
path, count, mode, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
HELLO = bytes.fromhex("0000000ea262696401626f706568656c6c6f")
socks = []
for i in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.setblocking(False)
    data = HELLO * n if mode == "pipeline" else n.to_bytes(4, "big") + b"a" * (n - 1)
    socks.append([s, data, 0, False])
quiet = time.time()
while time.time() - quiet < 1.5:
    progress = False
    for c in socks:
        while c[2] < len(c[1]) and not c[3]:
            try:
                k = c[0].send(c[1][c[2]:c[2] + 65536])
                c[2] += k
                progress = True
            except BlockingIOError:
                break
            except OSError:
                c[3] = True
    if progress:
        quiet = time.time()
    else:
        time.sleep(0.05)
sent = sum(c[2] for c in socks)
print(f"opened {len(socks)} sent {sent} closed {sum(1 for c in socks if c[3])}", flush=True)
sys.stdin.read()
"#;

fn hostile_reader(socket: &Path, count: usize, mode: &str, n: u32) -> Peer {
    let mut child = Command::new("setpriv")
        .args([
            &format!("--reuid={READER}"),
            &format!("--regid={NOGROUP}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            HOSTILE_PY,
        ])
        .arg(socket)
        .arg(count.to_string())
        .arg(mode)
        .arg(n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv python3");
    let out = BufReader::new(child.stdout.take().unwrap());
    Peer { child, out }
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Wait (up to `limit`) until the daemon holds at most `want` descriptors; the count then.
fn fds_fall_to(pid: i32, want: usize, limit: Duration) -> (usize, Duration) {
    let t0 = Instant::now();
    loop {
        let now = fd_count(pid);
        if now <= want || t0.elapsed() > limit {
            return (now, t0.elapsed());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_reader_that_never_reads_its_replies_is_closed_by_the_write_timeout() {
    let xfs = Xfs::new("bounds-wtimeout", 512 * MIB);
    let d = daemon_for_peers(&xfs, "[limits]\nwrite_timeout = 2\n");
    d.ok("share.create", vec![("name", t("s1")), ("size", n(MIB))]);
    let pid = d.pid();
    let before = fd_count(pid);
    let mut peer = hostile_reader(&d.socket, 40, "pipeline", 20000);
    let line = peer.opened();
    let held = fd_count(pid);
    // The admin is answered meanwhile.
    let t0 = Instant::now();
    d.ok("share.list", vec![]);
    let admin_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let (after, took) = fds_fall_to(pid, before + 2, Duration::from_secs(60));
    println!(
        "reader pipelining 20000 hellos on 40 connections and never reading: {line}; shelfd \
         descriptors {before} before, {held} held, {after} after {took:?} (write_timeout 2 s); \
         admin share.list meanwhile {admin_ms:.1} ms"
    );
    assert!(
        held >= before + 30,
        "the reader's connections were open: {held}"
    );
    assert!(
        after <= before + 2,
        "the reader's connections never closed: {after} descriptors (from {before})"
    );
    drop(peer);
}

#[test]
fn a_reader_that_never_reads_is_shed_for_admins_and_really_goes() {
    let xfs = Xfs::new("bounds-wshed", 512 * MIB);
    // The write timeout is long: here it is shedding that must close them.
    let d = daemon_for_peers(
        &xfs,
        "[limits]\nwrite_timeout = 3600\nmax_connections_per_uid = 4096\n",
    );
    d.ok("share.create", vec![("name", t("s1")), ("size", n(MIB))]);
    let pid = d.pid();
    let before = fd_count(pid);
    let readers = 40;
    let mut peer = hostile_reader(&d.socket, readers, "pipeline", 20000);
    let line = peer.opened();
    let held = fd_count(pid);
    assert!(
        held >= before + 30,
        "the reader's connections were open: {held}"
    );
    // Leave room for two more connections only: each admin after those needs a shed.
    limit_descriptors(pid, (held + 2) as u32);
    let mut admins = Vec::new();
    let mut times = Vec::new();
    for i in 0..10 {
        let t0 = Instant::now();
        let mut c = d.client();
        c.set_timeout(Some(ADMIN_ANSWER)).unwrap();
        c.call("share.list", args(vec![]))
            .unwrap_or_else(|e| panic!("admin {i} locked out after {:?}: {e}", t0.elapsed()));
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        admins.push(c);
    }
    let with_admins = fd_count(pid);
    drop(admins);
    let (after, _) = fds_fall_to(pid, held - 8, Duration::from_secs(10));
    println!(
        "reader pipelining on {readers} connections and never reading: {line}; descriptors \
         {before} before, {held} held, limit {}; 10 held admin connections answered in \
         {times:.0?} ms; descriptors {with_admins} with the admins, {after} once they left",
        held + 2
    );
    assert!(d.log_text().contains("shedding idle non-admin connections"));
    assert!(
        after <= held - 8,
        "shed reader connections did not go: {after} descriptors (from {held})"
    );
    drop(peer);
}

#[test]
fn readers_parking_the_whole_budget_do_not_stop_an_admin_upload() {
    let xfs = Xfs::new("bounds-adminbudget", 1 << 30);
    let d = daemon_for_peers(
        &xfs,
        "max_frame_size = 2097152\n[limits]\nrequest_buffer_bytes = 4194304\n",
    );
    // 12 connections parking 1 MiB - 1 bytes each against a 4 MiB budget.
    let mut peer = hostile_reader(&d.socket, 12, "park", 1 << 20);
    let line = peer.opened();
    assert!(
        field_of(&line, "sent") >= 4 << 20,
        "the budget was spent: {line}"
    );
    let mut c = d.client();
    c.set_timeout(Some(ADMIN_ANSWER)).unwrap();
    let data = vec![0u8; MIB as usize];
    let begin = c
        .call(
            "image.upload.begin",
            args(vec![("name", t("adm")), ("size", n(MIB))]),
        )
        .unwrap();
    let upload = get_text(&begin, "upload").unwrap().to_string();
    let t0 = Instant::now();
    let chunk = c.call(
        "image.upload.chunk",
        args(vec![
            ("upload", t(&upload)),
            ("offset", n(0)),
            ("data", Value::Bytes(data)),
        ]),
    );
    let chunk_ms = t0.elapsed().as_secs_f64() * 1000.0;
    println!(
        "readers parking frames on a 4 MiB budget: {line}; admin 1 MiB upload chunk: \
         {chunk_ms:.1} ms, {}",
        if chunk.is_ok() {
            "ok".to_string()
        } else {
            format!("{chunk:?}")
        }
    );
    chunk.expect("an admin's 1 MiB chunk is read while readers hold the budget");
    let fin = c
        .call("image.upload.finish", args(vec![("upload", t(&upload))]))
        .expect("the upload finishes");
    println!("finish: {fin:?}");
    drop(peer);
}
