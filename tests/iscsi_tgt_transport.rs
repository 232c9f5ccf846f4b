//! How shelfd chooses its way to tgtd (`iscsi.tgt_transport = "auto"`), against a real
//! tgtd reached through a relay on tgtd's socket namespace (`socket.<port>`), the way
//! tests/fixtures/tgt-ipc/record.py records exchanges. The relay forwards each request to
//! the real tgtd, except what the test makes it spoil:
//!
//! - a first connection cut short (as when tgtd restarts mid-reply) chooses nothing: shelfd
//!   tries the socket again and ends on it, never on tgtadm;
//! - an answer in another protocol version, every time, makes shelfd fall back to tgtadm
//!   (which the relay lets through to tgtd), with a warning, and `driver_transports` says so;
//! - a listener that is not root is not tgtd: nothing is sent to it and there is no fallback.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use common::world::IQN_PREFIX;
use common::*;
use shelf::client::get_text;

const MIB: u64 = 1 << 20;
const NS: &str = "/var/run/tgtd/socket";

/// What the relay does with a connection from shelfd.
#[derive(Clone, Copy, PartialEq)]
enum Spoil {
    /// Cut the first connection short, forward the rest.
    FirstCutShort,
    /// Answer every request from anything but tgtadm as another version would.
    Foreign,
}

/// A relay on `socket.<control>` to the real tgtd's socket; what it did, per connection.
struct Relay {
    control: u32,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

fn read_exactly(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).expect("request bytes");
    b
}

fn peer_comm(s: &UnixStream) -> String {
    let pid = nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials)
        .unwrap()
        .pid();
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default()
}

impl Relay {
    fn start(upstream: u32, spoil: Spoil) -> Relay {
        let control = free_control_port();
        let path = PathBuf::from(format!("{NS}.{control}"));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop2, log2) = (stop.clone(), log.clone());
        let thread = thread::spawn(move || {
            for (n, c) in listener.incoming().enumerate() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut c) = c else { continue };
                let what = Self::serve(&mut c, n, upstream, spoil);
                log2.lock().unwrap().push(what);
            }
        });
        Relay {
            control,
            path,
            stop,
            log,
            thread: Some(thread),
        }
    }

    fn serve(c: &mut UnixStream, n: usize, upstream: u32, spoil: Spoil) -> String {
        let comm = peer_comm(c);
        let head = read_exactly(c, 120);
        let len = u32::from_ne_bytes(head[72..76].try_into().unwrap()) as usize;
        let body = read_exactly(c, len.saturating_sub(120));
        if spoil == Spoil::FirstCutShort && n == 0 {
            // A header announcing 100 bytes, 4 of them, then the close.
            let mut r = 0u32.to_ne_bytes().to_vec();
            r.extend_from_slice(&100u32.to_ne_bytes());
            r.extend_from_slice(b"Syst");
            let _ = c.write_all(&r);
            return "cut".into();
        }
        if spoil == Spoil::Foreign && comm.trim() != "tgtadm" {
            // A well-framed answer refusing the request, as a tgtd speaking another
            // version of the protocol does (TGTADM_INVALID_REQUEST).
            let mut r = 17u32.to_ne_bytes().to_vec();
            r.extend_from_slice(&8u32.to_ne_bytes());
            let _ = c.write_all(&r);
            return "foreign".into();
        }
        let mut up = UnixStream::connect(format!("{NS}.{upstream}")).unwrap();
        up.write_all(&head).unwrap();
        up.write_all(&body).unwrap();
        let mut reply = Vec::new();
        up.read_to_end(&mut reply).unwrap();
        let _ = c.write_all(&reply);
        format!("forwarded for {}", comm.trim())
    }

    fn seen(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// shelfd's config for this relay's control port and tgtd's portal.
    fn config(&self, tgtd: &Tgtd) -> String {
        format!(
            "reconcile_interval = 0\n[iscsi]\nportal = \"127.0.0.1:{}\"\ntgt_control_port = {}\niqn_prefix = {IQN_PREFIX:?}\n",
            tgtd.port, self.control
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn transport(d: &Daemon) -> Option<String> {
    let hello = d.ok("hello", vec![]);
    get_text(sub(&hello, "driver_transports"), "tgt").map(str::to_string)
}

fn create_and_attach(
    d: &Daemon,
    name: &str,
) -> Result<ciborium::Value, shelf::client::ClientError> {
    d.ok(
        "share.create",
        vec![("name", t(name)), ("size", n(8 * MIB))],
    );
    let init = format!("iqn.2026-11.org.example:{name}");
    d.call(
        "share.attach",
        vec![
            ("share", t(name)),
            ("connector", connector(&init, "127.0.0.1", "h1")),
        ],
    )
}

#[test]
fn a_reply_cut_short_chooses_nothing_and_shelfd_ends_on_the_socket() {
    let xfs = Xfs::new("tgt-cut", 512 * MIB);
    let tgtd = Tgtd::start();
    let relay = Relay::start(tgtd.control, Spoil::FirstCutShort);
    let d = Daemon::start(&Layout::on_xfs(&xfs, &relay.config(&tgtd)));
    create_and_attach(&d, "cut1").expect("attach after a cut reply");
    assert_eq!(transport(&d).as_deref(), Some("socket"), "{}", d.log_text());
    let seen = relay.seen();
    assert_eq!(seen.first().map(String::as_str), Some("cut"), "{seen:?}");
    assert!(
        !seen.iter().any(|s| s.contains("tgtadm")),
        "tgtadm was used: {seen:?}"
    );
    assert!(!d.log_text().contains("falling back"), "{}", d.log_text());
    assert_eq!(shelf::export::tgt::parse_show_target(&tgtd.show()).len(), 1);
    drop(d);
    drop(relay);
}

#[test]
fn a_foreign_protocol_falls_back_to_tgtadm_with_a_warning() {
    let xfs = Xfs::new("tgt-foreign", 512 * MIB);
    let tgtd = Tgtd::start();
    let relay = Relay::start(tgtd.control, Spoil::Foreign);
    let d = Daemon::start(&Layout::on_xfs(&xfs, &relay.config(&tgtd)));
    create_and_attach(&d, "fgn1").expect("attach through tgtadm");
    assert_eq!(transport(&d).as_deref(), Some("tgtadm"));
    let log = d.log_text();
    assert!(
        log.contains("does not speak tgt 1.0's protocol") && log.contains("falling back to tgtadm"),
        "{log}"
    );
    let seen = relay.seen();
    assert!(seen.iter().any(|s| s == "forwarded for tgtadm"), "{seen:?}");
    assert_eq!(shelf::export::tgt::parse_show_target(&tgtd.show()).len(), 1);
    drop(d);
    drop(relay);
}

/// A listener bound by `nobody` in a private directory, reached through a symlink at
/// tgtd's socket path; it writes down how many bytes each connection brought.
struct NobodyListener {
    link: PathBuf,
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl NobodyListener {
    fn start(control: u32) -> NobodyListener {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let sock = dir.path().join("sock");
        let script = "import socket,sys\n\
            s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)\n\
            print('ready', flush=True)\n\
            while True:\n\
            \x20   c,_=s.accept(); c.settimeout(1); n=0\n\
            \x20   try:\n\
            \x20       while True:\n\
            \x20           b=c.recv(4096)\n\
            \x20           if not b: break\n\
            \x20           n+=len(b)\n\
            \x20   except Exception: pass\n\
            \x20   c.close(); f=open(sys.argv[2],'a'); f.write(f'got {n}\\n'); f.close()\n";
        let mut child = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .args(["/usr/bin/python3", "-c", script])
            .arg(&sock)
            .arg(dir.path().join("received"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("setpriv (util-linux)");
        let mut ready = [0u8; 6];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut ready)
            .unwrap();
        assert_eq!(&ready, b"ready\n");
        let link = PathBuf::from(format!("{NS}.{control}"));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&sock, &link).unwrap();
        NobodyListener { link, dir, child }
    }

    /// One line per connection: `got N` (bytes received).
    fn received(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("received")).unwrap_or_default()
    }
}

impl Drop for NobodyListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.link);
    }
}

#[test]
fn a_listener_that_is_not_root_gets_nothing_and_no_fallback() {
    let xfs = Xfs::new("tgt-nobody", 512 * MIB);
    let tgtd = Tgtd::start();
    let control = free_control_port();
    let fake = NobodyListener::start(control);
    let config = format!(
        "reconcile_interval = 0\n[iscsi]\nportal = \"127.0.0.1:{}\"\ntgt_control_port = {control}\niqn_prefix = {IQN_PREFIX:?}\n",
        tgtd.port
    );
    let d = Daemon::start(&Layout::on_xfs(&xfs, &config));
    let err = create_and_attach(&d, "nob1").expect_err("an attach through a non-root listener");
    let text = format!("{err}");
    assert!(
        text.contains("runs as uid 65534") && text.contains("nothing sent"),
        "{text}"
    );
    assert_eq!(transport(&d), None, "no transport was chosen");
    assert!(
        eventually(10, || !fake.received().is_empty()),
        "shelfd connected"
    );
    let got = fake.received();
    assert!(
        got.lines().all(|l| l == "got 0"),
        "the listener got bytes: {got}"
    );
    assert!(!d.log_text().contains("falling back"), "{}", d.log_text());
    drop(d);
    drop(fake);
}
