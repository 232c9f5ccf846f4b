//! Prometheus metrics against the real tools: promtool checks shelfd's exposition (from the
//! HTTP listener and the textfile), a real Prometheus scrapes shelfd and answers a query
//! for a pool's free bytes, and hostile scrapers (oversized heads, silence, wrong methods,
//! floods of connections) find every cost bounded while shelfd keeps answering.

mod common;
mod peer;
#[path = "metrics/support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{eventually, free_port, n, scratch, t, Daemon, Layout, Xfs};
use peer::{open_to_all, NOGROUP};
use support::{descriptors, get, promtool, raw, sample, Prometheus};

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

fn must_pass_promtool(text: &str, from: &str) {
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
            "textfile = {:?}\ntextfile_interval = 1\n",
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

/// Read what the server sends until it closes (or 30 s pass).
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Whether the server has sent something (or closed) on `s` already.
fn answered(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let r = s.peek(&mut [0u8; 1]);
    s.set_nonblocking(false).unwrap();
    r.is_ok()
}

/// Two connections that hold the listener's two slots: a third is answered 503 while
/// neither of them has been answered. (Connections are accepted in order, so a slot still
/// held by an earlier scrape shows as one of the two answered 503 first: then try again.)
fn hold_both_slots(addr: &str) -> (TcpStream, TcpStream) {
    let mut held = None;
    let ok = eventually(30, || {
        let a = TcpStream::connect(addr).unwrap();
        let b = TcpStream::connect(addr).unwrap();
        let mut probe = TcpStream::connect(addr).unwrap();
        if support::parse_reply(&read_all(&mut probe)).status != 503 {
            return false;
        }
        if answered(&a) || answered(&b) {
            return false;
        }
        held = Some((a, b));
        true
    });
    assert!(ok, "two silent connections never held both slots");
    held.unwrap()
}

#[test]
fn hostile_scrapers_find_every_cost_bounded() {
    // No pool figures are compared here: the default pool under the scratch directory.
    let dir = scratch("metrics-hostile");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let layout = Layout::new(
        dir.path(),
        &format!(
            "reconcile_interval = 0\n[metrics]\nlisten = \"{addr}\"\nmax_scrapes = 2\nrequest_timeout = 2\n"
        ),
    );
    let d = Daemon::start(&layout);
    assert_eq!(get(&addr, "/metrics").status, 200);
    let baseline = descriptors(d.pid());

    // Wrong paths and methods, and what is not HTTP.
    assert_eq!(get(&addr, "/").status, 404);
    assert_eq!(get(&addr, "/metrics/../etc/passwd").status, 404);
    let post = raw(
        &addr,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(post.status, 405);
    assert!(post.head.contains("Allow: GET"), "{}", post.head);
    assert_eq!(raw(&addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").status, 405);
    assert_eq!(raw(&addr, b"hello there\r\n\r\n").status, 400);
    assert_eq!(raw(&addr, b"GET /metrics HTTP/3\r\n\r\n").status, 505);

    // A head past 8 KiB is refused with 431, and the reply reaches the peer.
    let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
    while big.len() < 64 << 10 {
        big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let mut s = TcpStream::connect(&addr).unwrap();
    let _ = s.write_all(&big);
    let r = support::parse_reply(&read_all(&mut s));
    assert_eq!(r.status, 431, "{r:?}");
    drop(s);

    // Slowloris: a connection that sends nothing and one that sends a head a byte at a
    // time hold the two slots; the next connection is answered 503 at once, and the two get
    // 408 when their time for the whole head is up, however steadily the bytes come.
    let (silent, drip) = hold_both_slots(&addr);
    let mut w = drip.try_clone().unwrap();
    let dripping = std::thread::spawn(move || {
        for b in b"GET /metrics HTTP/1.1\r\nX-Slow: "
            .iter()
            .cycle()
            .take(200)
        {
            if w.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // While they hold the slots, the management socket answers.
    d.ok("hello", vec![]);
    for mut s in [silent, drip] {
        let r = support::parse_reply(&read_all(&mut s));
        assert_eq!(r.status, 408, "{r:?}");
    }
    dripping.join().unwrap();

    // Many connections at once: at any moment shelfd holds at most its two slots (and the
    // one it is accepting); the rest are answered 503 and closed as they are accepted.
    let mut many = Vec::new();
    let mut most = 0;
    for i in 0..200 {
        many.push(TcpStream::connect(&addr).unwrap());
        if i % 10 == 0 {
            most = most.max(descriptors(d.pid()));
        }
    }
    // Room for the background driver probe's pipes besides the slots.
    assert!(
        most <= baseline + 3 + 8,
        "shelfd held {most} descriptors during a flood of 200 scrapers (baseline {baseline})"
    );
    d.ok("hello", vec![]);
    let (mut turned_away, mut timed_out) = (0, 0);
    for s in many.iter_mut() {
        match support::parse_reply(&read_all(s)).status {
            503 => turned_away += 1,
            408 => timed_out += 1,
            other => panic!("a flooding scraper got {other}"),
        }
    }
    assert_eq!(turned_away + timed_out, 200);
    assert!(
        turned_away >= 100,
        "only {turned_away} of 200 were turned away"
    );
    drop(many);

    // shelfd is up, answers both sockets, and counted what it refused.
    d.ok("hello", vec![]);
    assert!(eventually(30, || get(&addr, "/metrics").status == 200));
    let m = get(&addr, "/metrics").body;
    must_pass_promtool(&m, "listener after the flood");
    for code in [404, 405, 400, 431, 408, 503] {
        let series = format!("shelf_metrics_http_replies_total{{code=\"{code}\"}}");
        assert!(sample(&m, &series).unwrap_or(0.0) >= 1.0, "{series}\n{m}");
    }
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
