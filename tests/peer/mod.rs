//! Peers with other uids for the trust tests: a process started as `uid:gid` (no
//! supplementary groups, through `setpriv`) connects to shelfd's socket and hands the
//! connected descriptor back over SCM_RIGHTS, so this process can pipeline on a connection
//! whose `SO_PEERCRED` names that uid. Also `shelfctl` run as another uid.
#![allow(dead_code)]

use std::io::{IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use ciborium::Value;
use shelf::proto::frame;

/// The `nogroup` gid on Debian; the tests' unprivileged peers run with it, and it is the
/// socket's group in their configs.
pub const NOGROUP: u32 = 65534;

const HAND_OVER: &str = "import socket, sys\n\
s = socket.socket(socket.AF_UNIX)\n\
s.connect(sys.argv[1])\n\
b = socket.socket(socket.AF_UNIX)\n\
b.connect(sys.argv[2])\n\
socket.send_fds(b, [b'x'], [s.fileno()])\n";

/// Let other uids reach a socket under these directories.
pub fn open_to_all(dirs: &[&Path]) {
    for d in dirs {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A connection to `socket` opened by a process running as `uid`:`gid`. `scratch` is a
/// directory other uids can reach (for the hand-over socket).
pub fn connect_as(uid: u32, gid: u32, socket: &Path, scratch: &Path) -> UnixStream {
    let back = scratch.join(format!("hand-over-{uid}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&back);
    let listener = UnixListener::bind(&back).unwrap();
    std::fs::set_permissions(&back, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .args(["/usr/bin/python3", "-c", HAND_OVER])
        .arg(socket)
        .arg(&back)
        .current_dir("/")
        .output()
        .expect("run setpriv python3");
    assert!(
        out.status.success(),
        "hand-over as uid {uid} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (conn, _) = listener.accept().unwrap();
    let _ = std::fs::remove_file(&back);
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    for c in msg.cmsgs().unwrap() {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed this descriptor in our table for us
            // (SCM_RIGHTS); nothing else owns it.
            return unsafe { UnixStream::from_raw_fd(fds[0]) };
        }
    }
    panic!("no descriptor was handed over");
}

/// One request frame `{id, op, args}`.
pub fn request(id: u64, op: &str, args: Vec<(&str, Value)>) -> Vec<u8> {
    let args = shelf::client::args(args);
    frame::encode(&Value::Map(vec![
        (Value::Text("id".into()), Value::Integer(id.into())),
        (Value::Text("op".into()), Value::Text(op.into())),
        (Value::Text("args".into()), args),
    ]))
}

/// What a pipelined flood got back.
#[derive(Debug, Default)]
pub struct Flood {
    /// Replies read.
    pub replies: u64,
    /// Of which `permission_denied`.
    pub denied: u64,
    /// Whether the server closed the connection before answering everything.
    pub closed_early: bool,
}

/// Send `frames` on `conn` from a writer thread while reading replies until `expect`
/// have arrived or the server closes.
pub fn flood(conn: UnixStream, frames: Vec<u8>, expect: u64) -> Flood {
    let mut w = conn.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&frames);
    });
    let mut r = conn;
    r.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let mut got = Flood::default();
    while got.replies < expect {
        match frame::read_frame_blocking(&mut r, 1 << 20) {
            Ok(Some(body)) => {
                got.replies += 1;
                let v = frame::decode_body(&body).expect("reply is CBOR");
                let code = shelf::client::get(&v, "err")
                    .and_then(|e| shelf::client::get_text(e, "code"))
                    .unwrap_or("");
                if code == "permission_denied" {
                    got.denied += 1;
                }
            }
            Ok(None) | Err(_) => {
                got.closed_early = true;
                break;
            }
        }
    }
    let _ = r.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
    got
}

/// Run shelfctl as `uid`:`gid` (no supplementary groups); (exit code, stdout, stderr).
pub fn shelfctl_as(uid: u32, gid: u32, socket: &Path, argv: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shelfctl"))
        .arg("--socket")
        .arg(socket)
        .args(argv)
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .output()
        .expect("run shelfctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
