//! The `auto` decision and the reply bound (transport.rs); the decision against a real
//! tgtd behind relays is in tests/iscsi_tgt_transport.rs.

use super::*;

fn fail(why: &str) -> SocketProbe {
    SocketProbe::Failed(TgtFailure::Other(Error::Busy(why.into())))
}

#[test]
fn io_failures_and_timeouts_never_choose() {
    let mut last = None;
    for _ in 0..5 {
        let d = decide(TgtTransport::Auto, fail("timed out"), &mut last, true);
        assert!(matches!(d, Decision::Fail(_)), "{d:?}");
    }
    let d = decide(TgtTransport::Auto, SocketProbe::Speaks, &mut last, true);
    assert!(matches!(d, Decision::Pin(Chosen::Socket)), "{d:?}");
}

#[test]
fn one_garbled_answer_is_retried_the_same_twice_falls_back() {
    let g = || SocketProbe::Garbled("a reply of 3 bytes".into());
    let mut last = None;
    assert!(matches!(
        decide(TgtTransport::Auto, g(), &mut last, true),
        Decision::Fail(TgtFailure::Garbled(_))
    ));
    // Once, then a good answer: the socket.
    assert!(matches!(
        decide(TgtTransport::Auto, SocketProbe::Speaks, &mut last, true),
        Decision::Pin(Chosen::Socket)
    ));
    // Garbled, an I/O error between, garbled again: not twice in a row.
    decide(TgtTransport::Auto, g(), &mut last, true);
    decide(TgtTransport::Auto, fail("reset"), &mut last, true);
    assert!(matches!(
        decide(TgtTransport::Auto, g(), &mut last, true),
        Decision::Fail(_)
    ));
    // Twice in a row.
    assert!(matches!(
        decide(TgtTransport::Auto, g(), &mut last, true),
        Decision::Fallback(why) if why.contains("twice")
    ));
}

#[test]
fn a_foreign_answer_falls_back_only_in_auto_with_tgtadm() {
    let f = || SocketProbe::Foreign("`system show` refused".into());
    let mut last = None;
    assert!(matches!(
        decide(TgtTransport::Auto, f(), &mut last, true),
        Decision::Fallback(_)
    ));
    for (allowed, tgtadm) in [(TgtTransport::Socket, true), (TgtTransport::Auto, false)] {
        let d = decide(allowed, f(), &mut last, tgtadm);
        assert!(
            matches!(d, Decision::Fail(TgtFailure::Other(Error::Unsupported(_)))),
            "{d:?}"
        );
    }
}

#[test]
fn a_socket_elsewhere_is_not_called_tgtd_not_running() {
    let why = socket_elsewhere(3260, std::path::Path::new("/var/run/tgtd/socket.3260"));
    assert!(why.contains("tgtadm -C 3260") && why.contains("not at /var/run/tgtd/socket.3260"));
    assert!(!why.contains("not running"));
}

#[test]
fn replies_are_bounded_by_what_they_can_hold() {
    // A change is answered by the bare header.
    assert_eq!(reply_bound(&TgtRequest::delete_target(1), 10_000), 64 << 10);
    // A show of 10,000 targets as shelf makes them (1,177 bytes each, measured) fits.
    let show = TgtRequest::show_targets();
    assert!(reply_bound(&show, 10_000) > 10_000 * 1_177 * 3);
    assert_eq!(reply_bound(&show, 0), 4 << 20);
    assert!(reply_bound(&show, usize::MAX) == usize::MAX);
}
