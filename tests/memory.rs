//! shelfd's resident memory does not keep what a large reply needed. One `share.list` or
//! `tree` of thousands of shares needs tens of MiB for a moment (rows, CBOR values, the
//! frame); glibc kept those pages for reuse, so one listing left the daemon three times
//! its size for good. Memory figures, not timings, are asserted.

mod common;

use common::*;

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn large_listings_do_not_stay_resident() {
    let xfs = Xfs::new("memory", 1 << 30);
    let d = Daemon::start(&Layout::on_xfs(&xfs, "reconcile_interval = 0\n"));
    let count = 4000;
    std::thread::scope(|s| {
        for th in 0..8 {
            let d = &d;
            s.spawn(move || {
                let mut c = d.client();
                for i in (th..count).step_by(8) {
                    c.call(
                        "share.create",
                        shelf::client::args(vec![("name", t(&format!("m-{i}"))), ("size", n(512))]),
                    )
                    .unwrap();
                }
            });
        }
    });
    // Settle the allocator once (first use of every code path), then measure.
    d.ok("share.show", vec![("share", t("m-1"))]);
    let before = rss_kib(d.pid());
    for _ in 0..3 {
        let list = d.ok("share.list", vec![]);
        assert_eq!(list.as_array().map(Vec::len), Some(count));
        d.ok("tree", vec![]);
    }
    let after = rss_kib(d.pid());
    assert!(
        after <= before + 4096,
        "listing {count} shares left shelfd at {after} KiB resident, from {before} KiB"
    );
}
