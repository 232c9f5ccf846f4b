//! Prometheus metrics against the real tools: promtool checks shelfd's exposition (from the
//! HTTP listener and the textfile), a real Prometheus scrapes shelfd and answers a query
//! for a pool's free bytes, and (in `metrics/hostile.rs`) hostile scrapers (oversized
//! heads, silence, wrong methods, floods of connections) find every cost bounded while
//! shelfd keeps answering.

mod common;
#[path = "metrics/cost.rs"]
mod cost;
#[path = "metrics/hostile.rs"]
mod hostile;
mod peer;
#[path = "metrics/support.rs"]
mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;

use common::{eventually, free_port, n, scratch, t, Daemon, Layout, Xfs};
use peer::{open_to_all, NOGROUP};
use support::{get, promtool, sample, Prometheus};

const MIB: u64 = 1 << 20;

/// A daemon on a scratch XFS with the listener on `port` and the given extra `[metrics]`
/// lines, socket open to `nogroup` (for a roleless peer).
fn start(xfs: &Xfs, port: u16, metrics: &str) -> Daemon {
    let layout = Layout::on_xfs(
        xfs,
        &format!(
            "reconcile_interval = 0\n[access]\nsocket_group = \"{NOGROUP}\"\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n{metrics}\n"
        ),
    );
    Daemon::start(&layout)
}

pub(crate) fn must_pass_promtool(text: &str, from: &str) {
    let (ok, said) = promtool(text);
    assert!(
        ok && said.trim().is_empty(),
        "promtool on the {from}: {said}\n{text}"
    );
}

#[test]
fn metrics_pass_promtool_from_the_listener_and_the_textfile() {
    let xfs = Xfs::new("metrics-promtool", 512 << 20);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let dir = xfs.base().join("textfile");
    std::fs::create_dir_all(&dir).unwrap();
    let textfile = dir.join("shelf.prom");
    let mut d = start(
        &xfs,
        port,
        &format!(
            // min_interval = 0: the textfile's collection every second must not answer the
            // scrape below with figures read before the requests it counts.
            "textfile = {:?}\ntextfile_interval = 1\nmin_interval = 0\n",
            textfile.display().to_string()
        ),
    );
    let share = d.ok(
        "share.create",
        vec![("name", t("m1")), ("size", n(64 * MIB))],
    );
    let id = common::field(common::sub(&share, "share"), "id");
    common::write_at(
        &common::volume(&xfs.mount.join("pool"), &id),
        0,
        &vec![7u8; 4 << 20],
    );
    d.ok(
        "snapshot.create",
        vec![("share", t("m1")), ("name", t("s1"))],
    );
    // Allocation is a cached pass: wait until it has seen the write, so the exposition
    // and pool.show below read the same settled figure.
    let allocated = || {
        let p = d.ok("pool.show", vec![("name", t("default"))]);
        shelf::client::get_u64(&p, "allocated").unwrap()
    };
    assert!(
        eventually(60, || allocated() >= 4 * MIB),
        "allocated stays {}",
        allocated()
    );
    for _ in 0..3 {
        d.err("share.show", vec![("share", t("absent"))], "not_found");
    }
    d.ok("reconcile", vec![]);
    // A peer with no role is refused at connect.
    open_to_all(&[xfs.base(), d.socket.parent().unwrap()]);
    let mut roleless = peer::connect_as(65534, NOGROUP, &d.socket, xfs.base());
    let mut buf = Vec::new();
    let _ = roleless.read_to_end(&mut buf);
    // One open connection the exposition must count (open once it has been answered).
    let mut open = d.client();
    open.call("hello", shelf::client::args(vec![])).unwrap();

    let r = get(&addr, "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.head
            .contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        r.head
    );
    assert!(r.head.contains("Connection: close"), "{}", r.head);
    must_pass_promtool(&r.body, "HTTP listener");
    let m = &r.body;
    let pool = d.ok("pool.show", vec![("name", t("default"))]);
    let figure = |k: &str| shelf::client::get_u64(&pool, k).unwrap_or_else(|| panic!("{k}")) as f64;
    for (metric, key) in [
        ("shelf_pool_size_bytes", "size"),
        ("shelf_pool_provisioned_bytes", "provisioned"),
        ("shelf_pool_allocated_bytes", "allocated"),
        ("shelf_pool_reserved_bytes", "reserved"),
        ("shelf_pool_provisioning_limit_bytes", "provisioning_limit"),
    ] {
        assert_eq!(
            sample(m, &format!("{metric}{{pool=\"default\"}}")),
            Some(figure(key)),
            "{metric}\n{m}"
        );
    }
    let has = |series: &str| sample(m, series).unwrap_or_else(|| panic!("no {series} in\n{m}"));
    assert_eq!(
        has("shelf_pool_provisioned_bytes{pool=\"default\"}"),
        (64 * MIB) as f64
    );
    assert_eq!(
        has("shelf_shares{pool=\"default\",state=\"available\"}"),
        1.0
    );
    assert_eq!(
        has("shelf_snapshots{pool=\"default\",state=\"available\"}"),
        1.0
    );
    assert_eq!(
        has("shelf_request_duration_seconds_count{op=\"share.show\",outcome=\"not_found\"}"),
        3.0
    );
    assert_eq!(
        has("shelf_request_duration_seconds_bucket{op=\"share.show\",outcome=\"not_found\",le=\"+Inf\"}"),
        3.0
    );
    assert_eq!(
        has("shelf_request_duration_seconds_count{op=\"share.create\",outcome=\"ok\"}"),
        1.0
    );
    assert_eq!(has("shelf_refusals_total{reason=\"no_role\"}"), 1.0);
    assert!(has("shelf_connections_open{role=\"admin\"}") >= 1.0, "{m}");
    assert!(has("shelf_connections_total{role=\"admin\"}") >= 2.0, "{m}");
    // The start-up reconcile and the one asked for.
    assert_eq!(has("shelf_reconciles_total"), 2.0);
    assert_eq!(
        has("shelf_build_info{server=\"shelfd\",version=\"0.1.0\"}"),
        1.0
    );
    assert_eq!(has("shelf_collect_success"), 1.0);
    assert_eq!(has("shelf_audit_backlog_entries"), 0.0);

    // The textfile: written, whole, mode 0644, and it passes too.
    assert!(
        eventually(30, || textfile.exists()),
        "no {}",
        textfile.display()
    );
    let text = std::fs::read_to_string(&textfile).unwrap();
    must_pass_promtool(&text, "textfile");
    assert!(sample(&text, "shelf_shares{pool=\"default\",state=\"available\"}") == Some(1.0));
    let mode = std::fs::metadata(&textfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("shelf.prom")],
        "only the file, no temporary"
    );
    d.stop();
    assert!(
        !textfile.exists(),
        "a stopped shelfd's figures do not linger"
    );
}

#[test]
fn a_real_prometheus_scrapes_shelfd_and_answers_a_pools_free_bytes() {
    let xfs = Xfs::new("metrics-prometheus", 512 << 20);
    let port = free_port();
    let d = start(&xfs, port, "");
    d.ok(
        "share.create",
        vec![("name", t("p1")), ("size", n(32 * MIB))],
    );
    let dir = scratch("metrics-prometheus-tsdb");
    let prom = Prometheus::start(dir.path(), free_port(), &format!("127.0.0.1:{port}"));
    assert!(
        eventually(60, || prom.ready()),
        "Prometheus did not start: {}",
        prom.log_text()
    );
    // The target is healthy: Prometheus parsed the exposition without error.
    let mut last = serde_json::Value::Null;
    let up = eventually(60, || {
        last = prom.query("up{job=\"shelf\"}");
        last["data"]["result"][0]["value"][1] == "1"
    });
    assert!(up, "the target is not up: {last}\n{}", prom.log_text());
    let free = |d: &Daemon| {
        let p = d.ok("pool.show", vec![("name", t("default"))]);
        shelf::client::get_u64(&p, "free").unwrap().to_string()
    };
    // The pool is idle, so the free bytes Prometheus scraped are pool.show's.
    let mut answer = String::new();
    let same = eventually(60, || {
        let v = prom.query("shelf_pool_free_bytes{pool=\"default\"}");
        answer = v["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap_or("")
            .to_string();
        answer == free(&d)
    });
    assert!(
        same,
        "Prometheus says {answer:?}, pool.show says {}",
        free(&d)
    );
    let v = prom.query("shelf_shares{pool=\"default\",state=\"available\"}");
    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{v}");
}

#[test]
fn the_listener_on_a_unix_socket() {
    use std::os::unix::net::UnixStream;
    let dir = scratch("metrics-unix");
    let sock = dir.path().join("run").join("metrics.sock");
    let layout = Layout::new(
        dir.path(),
        &format!(
            "reconcile_interval = 0\n[metrics]\nlisten = {:?}\n",
            sock.display().to_string()
        ),
    );
    let mut d = Daemon::start(&layout);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: shelf\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let r = support::parse_reply(&out);
    assert_eq!(r.status, 200);
    must_pass_promtool(&r.body, "unix socket listener");
    d.stop();
    assert!(!sock.exists(), "the socket is removed at stop");
}

#[test]
fn a_remote_listen_address_needs_allow_remote() {
    let dir = scratch("metrics-remote");
    let check = |metrics: &str| {
        let layout = Layout::new(dir.path(), &format!("[metrics]\n{metrics}\n"));
        std::process::Command::new(env!("CARGO_BIN_EXE_shelfd"))
            .arg("--config")
            .arg(&layout.config)
            .arg("--check-config")
            .output()
            .unwrap()
    };
    let out = check("listen = \"0.0.0.0:9469\"");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("allow_remote"), "{err}");
    let out = check("listen = \"0.0.0.0:9469\"\nallow_remote = true");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check("listen = \"127.0.0.1:9469\"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("metrics: http://127.0.0.1:9469/metrics"),
        "{said}"
    );
    let said = String::from_utf8_lossy(&check("").stdout).into_owned();
    assert!(said.contains("metrics: off"), "{said}");
}

#[test]
fn a_listener_that_cannot_be_bound_stops_start_up() {
    let dir = scratch("metrics-taken");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let layout = Layout::new(
        dir.path(),
        &format!("reconcile_interval = 0\n[metrics]\nlisten = \"{addr}\"\n"),
    );
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_shelfd"));
    cmd.arg("--config").arg(&layout.config);
    let out = common::output_within(cmd, std::time::Duration::from_secs(60));
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("metrics.listen: cannot bind {addr}")),
        "{}",
        out.stderr
    );
    assert!(!layout.socket.exists(), "no socket left behind");
}
