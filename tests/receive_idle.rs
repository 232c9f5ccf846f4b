//! A receive whose sender vanished without `abort` does not linger: once it has had no
//! chunk for `[limits] receive_idle_timeout` it is dropped and its staging file removed,
//! by the daemon's own sweep (no other request needed); a receive that keeps sending,
//! however slowly, past that time is not. And a header naming ids in any form but shelf's
//! own is refused before anything is made.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ciborium::Value;
use common::*;

const MIB: u64 = 1 << 20;

fn staging(pool: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(pool.join("receiving")) {
        Ok(d) => d.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// A snapshot `s1` of a 4 MiB share `vol` on `a`, 1 MiB of it written; its id.
fn snapshot_on(a: &Daemon, pool: &Path) -> String {
    let share = create_share(a, "vol", 4 * MIB);
    write_at(&volume(pool, &share), 0, &pattern(3, MIB as usize));
    let snap = a.ok(
        "snapshot.create",
        vec![("share", t("vol")), ("name", t("s1"))],
    );
    if let Some(job) = shelf::client::get_text(&snap, "job") {
        assert_eq!(field(&wait_job(a, job), "state"), "done");
    }
    field(sub(&snap, "snapshot"), "id")
}

/// The next piece of at most `max` bytes of `stream` on `a`, and whether it ended.
fn read(a: &Daemon, stream: &str, max: u64) -> (Vec<u8>, bool) {
    let c = a.ok("stream.read", vec![("stream", t(stream)), ("max", n(max))]);
    let data = match shelf::client::get(&c, "data") {
        Some(Value::Bytes(d)) => d.clone(),
        v => panic!("stream.read data: {v:?}"),
    };
    (
        data,
        shelf::client::get(&c, "end") == Some(&Value::Bool(true)),
    )
}

fn chunk(b: &Daemon, receive: &str, offset: u64, data: Vec<u8>) -> Result<Value, String> {
    b.call(
        "snapshot.receive.chunk",
        vec![
            ("receive", t(receive)),
            ("offset", n(offset)),
            ("data", Value::Bytes(data)),
        ],
    )
    .map_err(|e| format!("{e:?}"))
}

#[test]
fn an_abandoned_receive_is_dropped_and_a_slow_one_is_not() {
    let (base_a, base_b) = (scratch("recv-idle-a"), scratch("recv-idle-b"));
    let a = Daemon::start(&Layout::new(base_a.path(), ""));
    let b = Daemon::start(&Layout::new(
        base_b.path(),
        "[limits]\nreceive_idle_timeout = 2\n",
    ));
    let (pool_a, pool_b) = (
        base_a.path().join("state/pools/default"),
        base_b.path().join("state/pools/default"),
    );
    let snap = snapshot_on(&a, &pool_a);

    // Abandoned: the header and some data arrive, then nothing more.
    let (stream, gone) = (open_send(&a, &snap), begin_receive(&b, "left"));
    let (data, _) = read(&a, &stream, 256 << 10);
    let sent = data.len() as u64;
    chunk(&b, &gone, 0, data).unwrap();
    assert_eq!(staging(&pool_b).len(), 1, "a staging file while it runs");
    a.ok("stream.close", vec![("stream", t(&stream))]);

    // Slow but alive: a chunk every second for five seconds (past the 2 s timeout).
    let (stream, alive) = (open_send(&a, &snap), begin_receive(&b, "slow"));
    let mut offset = 0;
    for _ in 0..5 {
        let (data, _) = read(&a, &stream, 4096);
        let len = data.len() as u64;
        chunk(&b, &alive, offset, data).unwrap();
        offset += len;
        std::thread::sleep(Duration::from_secs(1));
    }
    // By now the abandoned one is gone, with no request to it or to `begin` since.
    assert!(
        eventually(10, || staging(&pool_b).len() == 1),
        "{:?}",
        staging(&pool_b)
    );
    let refused = chunk(&b, &gone, sent, vec![0; 16]).unwrap_err();
    assert!(refused.contains("not_found"), "{refused}");
    assert!(b.log_text().contains("receive_idle_timeout"));

    // The slow one finishes whole.
    loop {
        let (data, end) = read(&a, &stream, 256 << 10);
        if !data.is_empty() {
            let len = data.len() as u64;
            chunk(&b, &alive, offset, data).unwrap();
            offset += len;
        }
        if end {
            break;
        }
    }
    let done = b.ok("snapshot.receive.finish", vec![("receive", t(&alive))]);
    assert_eq!(
        shelf::client::get(&done, "changed"),
        Some(&Value::Bool(true))
    );
    assert!(staging(&pool_b).is_empty());
    let v = b.ok("verify", vec![]);
    assert_eq!(
        shelf::client::get(&v, "clean"),
        Some(&Value::Bool(true)),
        "{v:?}"
    );
}

/// A stream's header names ids that become file and LV names on the receiver: only the
/// one form shelf writes (hyphenated, lowercase) is taken. The same UUID braced, as a URN
/// or in capitals parses as a UUID, and is refused before anything is made.
#[test]
fn a_header_whose_ids_are_not_in_shelfs_form_is_refused() {
    use shelf::replication::format::{encode_head, Header};
    let base = scratch("recv-header-ids");
    let b = Daemon::start(&Layout::new(base.path(), ""));
    let pool = base.path().join("state/pools/default");
    let id = "0f8e2c5a-1b2c-4d5e-8f90-123456789abc";
    for (what, snapshot_id, base_id) in [
        ("braced", format!("{{{id}}}"), None),
        ("urn", format!("urn:uuid:{id}"), None),
        ("capitals", id.to_uppercase(), None),
        ("simple", id.replace('-', ""), None),
        ("base in capitals", id.to_string(), Some(id.to_uppercase())),
    ] {
        let h = Header {
            size: MIB,
            created_at: 1,
            snapshot_id,
            snapshot_name: "s1".into(),
            share_id: id.into(),
            share_name: "vol".into(),
            node: None,
            base: base_id,
            node_id: None,
        };
        let receive = begin_receive(&b, "vol");
        let refused = chunk(&b, &receive, 0, encode_head(&h, &[])).unwrap_err();
        assert!(
            refused.contains("invalid_argument") && refused.contains("not a UUID"),
            "{what}: {refused}"
        );
        assert!(staging(&pool).is_empty(), "{what}: {:?}", staging(&pool));
    }
    let shares = b.ok("share.list", vec![]);
    assert!(
        matches!(&shares, Value::Array(a) if a.is_empty()),
        "{shares:?}"
    );
}

/// A snapshot whose send stream is open is not deleted under it (`busy`, naming the
/// send): on an LVM pool the LV could not be removed while the send reads it, and on a
/// file pool the stream would go on reading a snapshot that no longer exists. Once the
/// stream's end is read, the delete goes through.
#[test]
fn a_snapshot_being_sent_is_not_deleted_under_its_stream() {
    let base = scratch("send-hold");
    let a = Daemon::start(&Layout::new(base.path(), ""));
    let pool = base.path().join("state/pools/default");
    let snap = snapshot_on(&a, &pool);
    let stream = open_send(&a, &snap);
    let refused = a
        .call("snapshot.delete", vec![("snapshot", t(&snap))])
        .unwrap_err();
    let refused = format!("{refused:?}");
    assert!(
        refused.contains("busy") && refused.contains("sent"),
        "{refused}"
    );
    while !read(&a, &stream, 1 << 20).1 {}
    assert!(
        eventually(10, || a
            .call("snapshot.delete", vec![("snapshot", t(&snap))])
            .is_ok()),
        "the delete after the stream's end"
    );
}
