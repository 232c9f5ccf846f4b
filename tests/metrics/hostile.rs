//! Hostile scrapers of the metrics listener: wrong paths and methods, an oversized head,
//! silence and a trickle, a flood of connections. Each cost is bounded, and shelfd keeps
//! answering both of its sockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::{eventually, free_port, scratch, Daemon, Layout};
use crate::must_pass_promtool;
use crate::support::{self, descriptors, get, raw, sample};

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

    // Many connections at once, half of them sending a scraper's head at once: at any
    // moment shelfd holds at most its two slots, two 503s waiting for their peer to close
    // (and the one it is accepting); the rest are answered 503 and closed as they are
    // accepted. Every reply arrives whole and ends with a clean close: a reset (a socket
    // closed with the head unread) could destroy it.
    let mut many = Vec::new();
    let mut most = 0;
    for i in 0..200 {
        let mut s = TcpStream::connect(&addr).unwrap();
        if i % 2 == 0 {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: shelf\r\n\r\n");
        }
        many.push(s);
        if i % 10 == 0 {
            most = most.max(descriptors(d.pid()));
        }
    }
    eprintln!("descriptors: {baseline} before the flood, at most {most} during it");
    // Room for the background driver probe's pipes besides the slots.
    assert!(
        most <= baseline + 2 + 2 + 1 + 8,
        "shelfd held {most} descriptors during a flood of 200 scrapers (baseline {baseline})"
    );
    d.ok("hello", vec![]);
    for (i, s) in many.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut out = Vec::new();
        if let Err(e) = s.read_to_end(&mut out) {
            panic!(
                "flooding scraper {i}: {e} after {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        let r = support::parse_reply(&out);
        assert!(
            matches!(r.status, 200 | 408 | 503),
            "flooding scraper {i}: {r:?}"
        );
        let length = r
            .head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.parse::<usize>().ok());
        assert_eq!(length, Some(r.body.len()), "flooding scraper {i}: {r:?}");
    }
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
