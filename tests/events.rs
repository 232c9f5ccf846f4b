//! The event stream says what operations did, taken from their outcomes: a request that
//! changed nothing (a create that finds the share there, a resize to the same size, an
//! idempotent replay, a refused request) publishes nothing, and each change publishes one
//! event naming the object's id.

mod common;

use std::time::Duration;

use common::*;
use shelf::client::{args, get, Client};

const MIB: u64 = 1 << 20;

fn event(c: &mut Client) -> (String, String, String) {
    let e = c
        .recv_event()
        .expect("the event stream")
        .expect("an event before the connection closed");
    (field(&e, "kind"), field(&e, "op"), field(&e, "object"))
}

#[test]
fn events_come_from_outcomes_and_no_op_requests_publish_nothing() {
    let mut rig = Rig::new("events");
    let d = &rig.d;
    let mut sub = d.client();
    // A bound on a wait that should end at once, so a missing event fails the test
    // instead of hanging it.
    sub.set_timeout(Some(Duration::from_secs(120))).unwrap();
    sub.call("events.subscribe", args(vec![])).unwrap();

    let a = d.ok("share.create", vec![("name", t("a")), ("size", n(MIB))]);
    let a_id = field(get(&a, "share").unwrap(), "id");
    // The same create again: already there.
    d.ok("share.create", vec![("name", t("a")), ("size", n(MIB))]);
    // A keyed create, and its replay.
    let mut k = d.client();
    let create_b = args(vec![("name", t("b")), ("size", n(MIB))]);
    let b = k
        .call_keyed("share.create", create_b.clone(), Some("events-key-1"))
        .unwrap();
    let replay = k
        .call_keyed("share.create", create_b, Some("events-key-1"))
        .unwrap();
    assert_eq!(b, replay, "the replay answers the first answer");
    let b_id = field(get(&b, "share").unwrap(), "id");
    // A resize to the size it has: unchanged. Then a real one.
    d.ok("share.resize", vec![("share", t("a")), ("size", n(MIB))]);
    d.ok(
        "share.resize",
        vec![("share", t("a")), ("size", n(2 * MIB))],
    );
    // Refused requests change nothing.
    d.err(
        "share.resize",
        vec![("share", t("a")), ("size", n(MIB))],
        "invalid_argument",
    );
    d.err("share.delete", vec![("share", t("nosuch"))], "not_found");
    let snap = d.ok(
        "snapshot.create",
        vec![("share", t("a")), ("name", t("s1"))],
    );
    let s_id = field(get(&snap, "snapshot").unwrap(), "id");
    d.ok("snapshot.delete", vec![("snapshot", t(&s_id))]);
    d.ok("share.delete", vec![("share", t("b"))]);
    // An export; a reconcile that finds the daemons as the tree has them repairs nothing,
    // nor does one that cannot reach tgtd (`unavailable`); one that puts the target back
    // into a fresh tgtd changes the daemon.
    let x = d.ok(
        "export.create",
        vec![("share", t("a")), ("protocol", t("iscsi"))],
    );
    let x_id = field(get(&x, "export").unwrap(), "id");
    d.ok("reconcile", vec![]);
    rig.tgtd.stop();
    let r = d.ok("reconcile", vec![]);
    assert!(format!("{r:?}").contains("unavailable"), "{r:?}");
    rig.tgtd.restart();
    let r = d.ok("reconcile", vec![]);
    assert!(format!("{r:?}").contains("missing"), "{r:?}");
    // The last event: everything before it has been published.
    let z = d.ok("share.create", vec![("name", t("z")), ("size", n(MIB))]);
    let z_id = field(get(&z, "share").unwrap(), "id");

    let mut seen = Vec::new();
    loop {
        let e = event(&mut sub);
        let last = e.2 == z_id;
        seen.push(e);
        if last {
            break;
        }
    }
    let want = vec![
        ("object.created", "share.create", a_id.clone()),
        ("object.created", "share.create", b_id.clone()),
        ("object.changed", "share.resize", a_id),
        ("object.created", "snapshot.create", s_id.clone()),
        ("object.deleted", "snapshot.delete", s_id),
        ("object.deleted", "share.delete", b_id),
        ("object.created", "export.create", x_id),
        ("object.changed", "reconcile", String::new()),
        ("object.created", "share.create", z_id),
    ];
    let want: Vec<(String, String, String)> = want
        .into_iter()
        .map(|(k, o, id)| (k.to_string(), o.to_string(), id))
        .collect();
    assert_eq!(seen, want, "one event per change, none for a no-op");
}
