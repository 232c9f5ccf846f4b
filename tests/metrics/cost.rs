//! What scrapes cost and what the request counts see: a burst of scrapes within
//! `min_interval` costs one collection, and requests the connection answers itself (a frame
//! that is not a request, bad arguments, an unknown op) and `events.subscribe` are counted
//! under fixed op labels.

use shelf::client::args;

use crate::common::{free_port, n, scratch, t, Daemon, Layout};
use crate::must_pass_promtool;
use crate::support::{get, sample};

const COLLECTIONS: &str = "shelf_metrics_collections_total";

/// A daemon on the scratch directory's default pool with the listener on `addr`.
fn start(name: &str, addr: &str, metrics: &str) -> (tempfile::TempDir, Daemon) {
    let dir = scratch(name);
    let layout = Layout::new(
        dir.path(),
        &format!("reconcile_interval = 0\n[metrics]\nlisten = \"{addr}\"\n{metrics}\n"),
    );
    let d = Daemon::start(&layout);
    (dir, d)
}

/// The collections counted in one scrape.
fn collections(addr: &str) -> Option<f64> {
    let r = get(addr, "/metrics");
    assert!(matches!(r.status, 200 | 503), "{r:?}");
    (r.status == 200).then(|| sample(&r.body, COLLECTIONS).expect(COLLECTIONS))
}

#[test]
fn a_burst_of_scrapes_costs_one_collection() {
    let addr = format!("127.0.0.1:{}", free_port());
    // 300 s: the burst below is far shorter, so the test does not depend on its speed.
    let (_dir, d) = start(
        "metrics-burst",
        &addr,
        "min_interval = 300\nmax_scrapes = 4",
    );
    let first = collections(&addr).expect("the first scrape is served");
    // A write meanwhile does not make a scrape collect again.
    d.ok(
        "share.create",
        vec![("name", t("b1")), ("size", n(1 << 20))],
    );
    for _ in 0..40 {
        assert_eq!(collections(&addr), Some(first), "a sequential scrape");
    }
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || (0..10).filter_map(|_| collections(&addr)).collect())
        })
        .collect();
    for th in threads {
        let seen: Vec<f64> = th.join().unwrap();
        assert!(seen.iter().all(|c| *c == first), "{seen:?} (first {first})");
    }
    drop(d);

    // Without the interval every scrape collects, and the counter says so.
    let addr = format!("127.0.0.1:{}", free_port());
    let (_dir, _d) = start("metrics-burst-0", &addr, "min_interval = 0");
    let first = collections(&addr).unwrap();
    for i in 1..=5 {
        assert_eq!(collections(&addr), Some(first + f64::from(i)));
    }
}

#[test]
fn requests_refused_while_decoding_and_subscribe_are_counted() {
    let addr = format!("127.0.0.1:{}", free_port());
    let (_dir, d) = start("metrics-refused", &addr, "min_interval = 0");
    let mut c = d.client();
    // A well-delimited frame whose body is not CBOR (a lone "break"): answered with id null.
    c.send_raw(&[0, 0, 0, 2, 0xff, 0xff]).unwrap();
    let (id, answer) = c.recv().unwrap().expect("a reply");
    assert_eq!(id, None);
    assert_eq!(answer.unwrap_err().code, "invalid_argument");
    // An op shelfd does not have, whose name must never become a label.
    let e = c.call("zz.hostile", args(vec![])).unwrap_err();
    assert_eq!(e.code(), Some("unsupported"), "{e}");
    // A known op with arguments that do not parse.
    let e = c
        .call("share.create", args(vec![("name", n(5))]))
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_argument"), "{e}");
    // The connection is still in step.
    c.call("hello", args(vec![])).unwrap();
    let mut events = d.client();
    events.call("events.subscribe", args(vec![])).unwrap();
    let again = events.call("events.subscribe", args(vec![])).unwrap_err();
    assert_eq!(again.code(), Some("invalid_argument"), "{again}");

    let r = get(&addr, "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    let m = &r.body;
    must_pass_promtool(m, "listener after refused requests");
    let has = |series: &str| sample(m, series).unwrap_or_else(|| panic!("no {series} in\n{m}"));
    let count = |op: &str, outcome: &str| {
        has(&format!(
            "shelf_request_duration_seconds_count{{op=\"{op}\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(count("unknown", "invalid_argument"), 2.0);
    assert_eq!(count("unknown", "unsupported"), 1.0);
    assert_eq!(count("events.subscribe", "ok"), 1.0);
    assert_eq!(count("events.subscribe", "invalid_argument"), 1.0);
    assert_eq!(has("shelf_refusals_total{reason=\"bad_request\"}"), 2.0);
    assert_eq!(has("shelf_refusals_total{reason=\"unknown_op\"}"), 1.0);
    assert!(
        !m.contains("zz.hostile"),
        "the peer's op became a label:\n{m}"
    );
}
