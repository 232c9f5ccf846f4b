//! No CHAP secret in any process's command line: shelfd is traced with
//! `strace -f -e trace=execve` (every process it and its threads start) while it attaches
//! and detaches iSCSI initiators with CHAP, against a real tgtd on a private port.
//!
//! Over tgtd's management socket (the default transport) an attach starts no process at
//! all. The same trace of the tgtadm fallback sees tgtadm and the secret in its argv:
//! the check finds a secret when one is there, which is why tgtadm is only the fallback.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use shelf::client::get_text;

const MIB: u64 = 1 << 20;

/// Run `f` while strace follows every process and thread of `pid` (`execve` and
/// `connect`); the trace's lines. strace says nothing once attached (`-qq`), so this
/// waits, bounded, until every thread of shelfd shows strace as its tracer, and fails
/// the test if that does not happen.
fn trace_during(pid: i32, trace: &Path, f: impl FnOnce()) -> Vec<String> {
    let mut strace = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-s",
            "4096",
            "-e",
            "trace=execve,connect",
            "-o",
        ])
        .arg(trace)
        .args(["-p", &pid.to_string()])
        .stderr(Stdio::null())
        .spawn()
        .expect("strace (package strace)");
    wait_until_traced(&mut strace, pid);
    f();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(strace.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    strace.wait().unwrap();
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    let _ = std::fs::remove_file(trace);
    text.lines().map(str::to_string).collect()
}

/// The `execve` lines of a trace.
fn execs(trace: &[String]) -> Vec<String> {
    trace
        .iter()
        .filter(|l| l.contains("execve("))
        .cloned()
        .collect()
}

/// Create `count` shares, attach each with CHAP, detach and attach again; the CHAP secrets.
fn attach_with_chap(d: &Daemon, tag: &str, count: usize) -> Vec<String> {
    let mut secrets = Vec::new();
    for i in 0..count {
        let (name, host) = (format!("{tag}{i}"), format!("h{i}"));
        let init = format!("iqn.2026-11.org.example:{tag}{i}");
        d.ok(
            "share.create",
            vec![("name", t(&name)), ("size", n(8 * MIB))],
        );
        let attach = |op: &str| {
            d.ok(
                op,
                vec![
                    ("share", t(&name)),
                    ("connector", connector(&init, "127.0.0.1", &host)),
                ],
            )
        };
        let r = attach("share.attach");
        let login = Login::from_reply(&r, &init);
        assert!(login.password.len() >= 12, "a CHAP secret was handed out");
        secrets.push(login.password);
        attach("share.detach");
        attach("share.attach");
    }
    secrets
}

fn transport(d: &Daemon) -> Option<String> {
    let hello = d.ok("hello", vec![]);
    get_text(sub(&hello, "driver_transports"), "tgt").map(str::to_string)
}

#[test]
fn attaches_over_the_socket_start_no_process_and_show_no_secret() {
    let s = Rig::start("argv-socket", 512 * MIB, "", false);
    assert_eq!(transport(&s.d).as_deref(), Some("socket"));
    assert!(
        s.d.log_text().contains("management socket"),
        "the choice is logged"
    );
    let mut secrets = Vec::new();
    let trace = trace_during(s.d.pid(), &s.base().join("execve.trace"), || {
        secrets = attach_with_chap(&s.d, "sock", 3);
    });
    // The trace saw shelfd work: its connections to tgtd's management socket.
    let socket = format!(
        "{}.{}",
        shelf::export::tgt::transport::SOCKET_NAMESPACE,
        s.tgtd.control
    );
    assert!(
        trace
            .iter()
            .any(|l| l.contains("connect(") && l.contains(&socket)),
        "the trace saw no connect to {socket}: {trace:?}"
    );
    let execs = execs(&trace);
    assert_eq!(secrets.len(), 3);
    for secret in &secrets {
        assert!(
            !execs.iter().any(|l| l.contains(secret.as_str())),
            "a CHAP secret in a command line: {execs:?}"
        );
    }
    assert!(
        !execs.iter().any(|l| l.contains("tgtadm")),
        "tgtadm ran although the socket works: {execs:?}"
    );
    // tgtd really holds the targets, accounts and ACLs the attaches made.
    let show = s.tgtd.show();
    assert_eq!(
        shelf::export::tgt::parse_show_target(&show).len(),
        3,
        "{show}"
    );
}

#[test]
fn the_same_trace_sees_the_tgtadm_fallback_and_its_secret() {
    let xfs = Xfs::new("argv-tgtadm", 512 * MIB);
    let tgtd = Tgtd::start();
    let layout = Layout::on_xfs(
        &xfs,
        &format!(
            "reconcile_interval = 0\n{}tgt_transport = \"tgtadm\"\n",
            tgtd.config()
        ),
    );
    let d = Daemon::start(&layout);
    assert_eq!(transport(&d).as_deref(), Some("tgtadm"));
    let mut secrets = Vec::new();
    let trace = trace_during(d.pid(), &xfs.base().join("execve.trace"), || {
        secrets = attach_with_chap(&d, "cli", 1);
    });
    let execs = execs(&trace);
    assert!(
        execs.iter().any(|l| l.contains("tgtadm")),
        "the trace saw no tgtadm: {execs:?}"
    );
    assert!(
        execs.iter().any(|l| l.contains(secrets[0].as_str())),
        "tgtadm takes the secret in its argv, and the trace sees it: {execs:?}"
    );
    drop(d);
    drop(tgtd);
}
