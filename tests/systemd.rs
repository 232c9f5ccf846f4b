//! systemd integration against the real binary: readiness and status over a real
//! `$NOTIFY_SOCKET`, the watchdog, reload and stop notifications; socket activation with
//! systemd's own `systemd-socket-activate`; and the unit files checked by
//! `systemd-analyze verify`. (No systemd runs as PID 1 here: the manager's side is the
//! test, or systemd's own tools.)

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Receive notifications until one contains `want` (or 20 s pass); returns all received.
fn until(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) -> bool {
    let t0 = Instant::now();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < Duration::from_secs(20) {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = msg.lines().any(|l| l == want);
            seen.push(msg);
            if hit {
                return true;
            }
        }
    }
    false
}

#[test]
fn readiness_status_watchdog_reload_and_stop_are_notified() {
    let dir = scratch("notify");
    let layout = Layout::new(dir.path(), "");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut d = Daemon::start_with_env(
        &layout,
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut seen = Vec::new();
    assert!(until(&sock, "READY=1", &mut seen), "{seen:?}");
    let ready_at = seen.len() - 1;
    let statuses: Vec<&String> = seen[..ready_at]
        .iter()
        .filter(|m| m.starts_with("STATUS="))
        .collect();
    assert!(
        statuses.iter().any(|m| m.contains("recovering"))
            && statuses.iter().any(|m| m.contains("exports")),
        "STATUS lines before READY: {seen:?}"
    );
    assert!(
        seen[ready_at].contains(&format!("MAINPID={}", d.pid())),
        "{seen:?}"
    );
    // The socket answers once READY was sent.
    d.ok("hello", vec![]);
    assert!(
        until(&sock, "WATCHDOG=1", &mut seen),
        "no watchdog: {seen:?}"
    );
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(until(&sock, "RELOADING=1", &mut seen), "{seen:?}");
    assert!(until(&sock, "READY=1", &mut seen), "{seen:?}");
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(until(&sock, "STOPPING=1", &mut seen), "{seen:?}");
    assert!(d.wait_exit().success());
}

/// Kills the socket activator (and the daemon it became) on drop.
struct Activated(std::process::Child);

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_inherited_socket_is_used_and_left_to_its_owner() {
    let dir = scratch("activate");
    let layout = Layout::new(dir.path(), "");
    std::fs::create_dir_all(layout.socket.parent().unwrap()).unwrap();
    let log = std::fs::File::create(dir.path().join("activate.log")).unwrap();
    let mut child = Activated(
        Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(&layout.socket)
            .arg(env!("CARGO_BIN_EXE_shelfd"))
            .arg("--config")
            .arg(&layout.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("systemd-socket-activate"),
    );
    // The socket exists before shelfd runs; the first client starts it and is answered.
    let t0 = Instant::now();
    while !layout.socket.exists() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = shelf::client::Client::connect(&layout.socket).expect("connect");
    c.set_timeout(Some(Duration::from_secs(30))).unwrap();
    c.call("hello", shelf::client::args(vec![]))
        .expect("hello through the inherited socket");
    c.call(
        "share.create",
        shelf::client::args(vec![("name", t("v")), ("size", n(1 << 20))]),
    )
    .unwrap();
    let text = std::fs::read_to_string(dir.path().join("activate.log")).unwrap();
    assert!(text.contains("socket systemd passed"), "{text}");
    // On stop the socket file stays: it belongs to whoever made it.
    let pid = child.0.id() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        layout.socket.exists(),
        "shelfd removed a socket it did not make"
    );
}

#[test]
fn the_unit_files_pass_systemd_analyze_verify() {
    let dir = scratch("units");
    let root = env!("CARGO_MANIFEST_DIR");
    let service = std::fs::read_to_string(format!("{root}/image/systemd/shelfd.service"))
        .unwrap()
        .replace("/usr/sbin/shelfd", env!("CARGO_BIN_EXE_shelfd"));
    std::fs::write(dir.path().join("shelfd.service"), service).unwrap();
    std::fs::copy(
        format!("{root}/image/systemd/shelf.socket"),
        dir.path().join("shelf.socket"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("shelfd.service"))
        .arg(dir.path().join("shelf.socket"))
        .output()
        .expect("systemd-analyze");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("shelf"), "warnings about our units: {text}");
}

#[test]
fn image_install_lays_out_an_appliance_root() {
    let dir = scratch("install");
    let root = env!("CARGO_MANIFEST_DIR");
    let dest = dir.path().join("root");
    let out = Command::new(format!("{root}/image/install"))
        .arg("--debug")
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "usr/sbin/shelfd",
        "usr/bin/shelfctl",
        "lib/systemd/system/shelfd.service",
        "lib/systemd/system/shelf.socket",
        "usr/lib/tmpfiles.d/shelf.conf",
        "usr/lib/sysusers.d/shelf.conf",
        "etc/shelf/shelf.toml",
        "usr/share/doc/shelf/docs/recovery.md",
    ] {
        assert!(dest.join(f).exists(), "{f} missing");
    }
    // The installed config is the embedded default, and it validates.
    let check = Command::new(dest.join("usr/sbin/shelfd"))
        .arg("--config")
        .arg(dest.join("etc/shelf/shelf.toml"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // An operator's config survives a reinstall.
    std::fs::write(dest.join("etc/shelf/shelf.toml"), "# mine\n").unwrap();
    let out = Command::new(format!("{root}/image/install"))
        .arg("--debug")
        .arg(&dest)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/shelf/shelf.toml")).unwrap(),
        "# mine\n"
    );
}
