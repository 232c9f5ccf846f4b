//! Issue 11 §5, the smaller defences, against a real shelfd:
//!
//! * a keyed `share.attach` keeps its answer without the CHAP secret (read from the SQLite
//!   file), and a replay still answers the same `connection_info`, secret included;
//! * a reader may run exactly the operations of docs/protocol.md §2.1, nothing else;
//! * metadata keys and values with control characters or bidi overrides are refused;
//! * an NFS attach by a host name exportfs cannot resolve is refused (not answered ok
//!   while the kernel's export table leaves the client out), and README's quickstart
//!   attach (by IP) takes effect.

mod common;
mod peer;

use ciborium::Value;
use common::*;
use peer::*;
use shelf::client::{args, get, get_text};

const MIB: u64 = 1 << 20;
const READER: u32 = 4311;
const INIT: &str = "iqn.2026-11.org.example:trust-small";

#[test]
fn a_kept_attach_answer_holds_no_chap_secret_and_its_replay_does() {
    let rig = Rig::start("trust-chap", 512 * MIB, "", false);
    let d = &rig.d;
    d.ok(
        "share.create",
        vec![("name", t("c1")), ("size", n(8 * MIB))],
    );
    let attach = args(vec![
        ("share", t("c1")),
        (
            "connector",
            Value::Map(vec![
                (t("host"), t("compute-1")),
                (t("ip"), t("127.0.0.1")),
                (t("initiator"), t(INIT)),
            ]),
        ),
        ("protocol", t("iscsi")),
    ]);
    let first = d
        .client()
        .call_keyed("share.attach", attach.clone(), Some("attach-c1-1"))
        .unwrap();
    let info = get(&first, "connection_info").unwrap().clone();
    let secret = field(sub(&info, "data"), "auth_password");
    assert!(secret.len() >= 12, "{info:?}");

    let db = rusqlite::Connection::open_with_flags(
        d.state.join("shelf.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let kept: Vec<Vec<u8>> = db
        .prepare("SELECT reply FROM idempotency WHERE key = 'attach-c1-1'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kept.len(), 1, "the answer is kept");
    assert!(
        !kept[0]
            .windows(secret.len())
            .any(|w| w == secret.as_bytes()),
        "the kept answer holds the CHAP secret"
    );
    let everywhere: i64 = db
        .query_row(
            "SELECT count(*) FROM idempotency WHERE instr(reply, ?1) > 0",
            [secret.as_bytes()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(everywhere, 0);

    let replay = d
        .client()
        .call_keyed("share.attach", attach, Some("attach-c1-1"))
        .unwrap();
    assert_eq!(
        get(&replay, "connection_info"),
        Some(&info),
        "a replay answers the same connection_info, secret included"
    );
    assert_eq!(get(&replay, "attachment"), get(&first, "attachment"));
}

#[test]
fn readers_run_exactly_the_operations_of_protocol_section_2_1() {
    let xfs = Xfs::new("trust-reader", 512 * MIB);
    let d = Daemon::start(&Layout::on_xfs(
        &xfs,
        &format!("[access]\nsocket_group = \"{NOGROUP}\"\nreader_users = [\"{READER}\"]\n"),
    ));
    open_to_all(&[xfs.base(), d.socket.parent().unwrap()]);
    let made = d.ok(
        "share.create",
        vec![("name", t("r1")), ("size", n(4 * MIB))],
    );
    let sid = field(sub(&made, "share"), "id");
    d.ok(
        "snapshot.create",
        vec![("share", t("r1")), ("name", t("s1"))],
    );
    let as_reader =
        |op: &str, json: &str| shelfctl_as(READER, NOGROUP, &d.socket, &["call", op, json]);

    let share = format!("{{\"share\": \"{sid}\"}}");
    let allowed: Vec<(&str, String)> = vec![
        ("hello", "{}".into()),
        ("pool.list", "{}".into()),
        ("pool.show", "{\"name\": \"default\"}".into()),
        ("share.list", "{}".into()),
        ("share.show", share.clone()),
        ("snapshot.list", share.clone()),
        (
            "snapshot.show",
            "{\"share\": \"r1\", \"snapshot\": \"s1\"}".into(),
        ),
        ("tree", "{}".into()),
        ("export.list", "{}".into()),
        ("attachment.list", "{}".into()),
    ];
    for (op, json) in &allowed {
        let (code, out, err) = as_reader(op, json);
        assert_eq!(code, 0, "a reader may run {op}: {out}{err}");
    }
    // export.show of an export that does not exist: refused for what it names, not for
    // the role.
    let (_, _, err) = as_reader("export.show", &share);
    assert!(!err.contains("permission_denied"), "{err}");

    let refused = [
        ("share.create", "{\"name\": \"x\", \"size\": 1048576}"),
        (
            "share.set_metadata",
            "{\"share\": \"r1\", \"metadata\": {\"a\": \"b\"}}",
        ),
        ("image.list", "{}"),
        ("image.show", "{\"image\": \"i1\"}"),
        ("image.delete", "{\"image\": \"i1\"}"),
        (
            "image.import",
            "{\"name\": \"i1\", \"source\": \"/etc/hostname\"}",
        ),
        ("image.upload.begin", "{\"name\": \"i1\", \"size\": 1024}"),
        ("image.upload.finish", "{\"upload\": \"u1\"}"),
        ("image.upload.abort", "{\"upload\": \"u1\"}"),
        ("job.list", "{}"),
        ("job.show", "{\"job\": \"j1\"}"),
        ("job.cancel", "{\"job\": \"j1\"}"),
        ("events.subscribe", "{}"),
        ("audit.list", "{}"),
        ("verify", "{}"),
        ("reconcile", "{}"),
    ];
    for (op, json) in refused {
        let (code, out, err) = as_reader(op, json);
        assert_eq!(code, 1, "a reader ran {op}: {out}{err}");
        assert!(
            err.contains("permission_denied"),
            "{op}: refused for the role, not for its arguments: {err}"
        );
    }
    // Each refusal is in the audit log.
    let log = d.ok(
        "audit.list",
        vec![("uid", n(READER.into())), ("limit", n(100))],
    );
    let Value::Array(entries) = log else {
        panic!("{log:?}")
    };
    for (op, _) in refused {
        assert!(
            entries.iter().any(|e| get_text(e, "op") == Some(op)
                && get_text(e, "outcome") == Some("permission_denied")),
            "{op} refusal not audited"
        );
    }
}

#[test]
fn metadata_with_control_characters_or_bidi_overrides_is_refused() {
    let xfs = Xfs::new("trust-meta", 512 * MIB);
    let d = Daemon::start(&Layout::on_xfs(&xfs, ""));
    d.ok(
        "share.create",
        vec![
            ("name", t("m1")),
            ("size", n(4 * MIB)),
            ("metadata", Value::Map(vec![(t("owner"), t("Grüße"))])),
        ],
    );
    let hostile = [
        "\u{1b}[31mred",
        "two\nlines",
        "tab\there",
        "cr\rhere",
        "del\u{7f}",
        "csi\u{9b}2J",
        "nel\u{85}",
        "evil\u{202e}txt.exe",
        "iso\u{2066}late\u{2069}",
        "lre\u{202a}",
        "ls\u{2028}",
    ];
    for (i, bad) in hostile.iter().enumerate() {
        for meta in [
            Value::Map(vec![(t(&format!("k{bad}")), t("v"))]),
            Value::Map(vec![(t("k"), t(bad))]),
        ] {
            let m = d.err(
                "share.create",
                vec![
                    ("name", t(&format!("x{i}"))),
                    ("size", n(4 * MIB)),
                    ("metadata", meta.clone()),
                ],
                "invalid_argument",
            );
            assert!(m.contains("U+"), "{m}");
            d.err(
                "share.set_metadata",
                vec![("share", t("m1")), ("metadata", meta)],
                "invalid_argument",
            );
        }
    }
    let shares = d.ok("share.list", vec![]);
    assert_eq!(shares.as_array().map(Vec::len), Some(1), "{shares:?}");
    let m1 = d.ok("share.show", vec![("share", t("m1"))]);
    assert_eq!(
        get(&m1, "metadata"),
        Some(&Value::Map(vec![(t("owner"), t("Grüße"))])),
        "set_metadata changed nothing"
    );
}

#[test]
fn an_nfs_attach_by_a_name_that_does_not_resolve_is_refused() {
    let xfs = Xfs::new("trust-nfs", 512 * MIB);
    let ef = ExportsFile::new("trust-nfs");
    let d = Daemon::start(&Layout::on_xfs(
        &xfs,
        &format!("reconcile_interval = 0\n{}", ef.config()),
    ));
    // README's quickstart: a share with an NFS export for a network.
    let made = d.ok(
        "share.create",
        vec![
            ("name", t("q1")),
            ("size", n(8 * MIB)),
            ("multiattach", Value::Bool(true)),
        ],
    );
    let id = field(sub(&made, "share"), "id");
    let path = xfs
        .mount
        .join("pool/shares")
        .join(&id)
        .display()
        .to_string();
    d.ok(
        "export.create",
        vec![
            ("share", t("q1")),
            ("protocol", t("nfs")),
            ("clients", Value::Array(vec![t("10.0.0.0/8")])),
        ],
    );
    let connector =
        |pairs: &[(&str, &str)]| Value::Map(pairs.iter().map(|(k, v)| (t(k), t(v))).collect());
    let live = || -> Vec<String> {
        exportfs_v()
            .into_iter()
            .filter(|(p, _, _)| *p == path)
            .map(|(_, c, _)| c)
            .collect()
    };
    assert!(
        std::net::ToSocketAddrs::to_socket_addrs(&("compute-1", 2049)).is_err(),
        "this test needs compute-1 not to resolve"
    );
    let m = d.err(
        "share.attach",
        vec![
            ("share", t("q1")),
            ("connector", connector(&[("host", "compute-1")])),
        ],
        "invalid_argument",
    );
    assert!(m.contains("resolve") && m.contains("connector.ip"), "{m}");
    let atts = d.ok("attachment.list", vec![("share", t("q1"))]);
    assert_eq!(atts, Value::Array(vec![]), "nothing was recorded");
    assert_eq!(live(), ["10.0.0.0/8"], "nothing was exported");

    // The quickstart's attach, fixed: the host with its IP address.
    let r = d.ok(
        "share.attach",
        vec![
            ("share", t("q1")),
            (
                "connector",
                connector(&[("host", "compute-1"), ("ip", "10.0.0.21")]),
            ),
        ],
    );
    assert_eq!(
        get_text(sub(&r, "connection_info"), "driver_volume_type"),
        Some("nfs")
    );
    // A name that resolves (the machine's own) is accepted too.
    d.ok(
        "share.attach",
        vec![
            ("share", t("q1")),
            ("connector", connector(&[("host", "localhost")])),
        ],
    );
    let mut now = live();
    now.sort();
    assert_eq!(
        now,
        ["10.0.0.0/8", "10.0.0.21", "localhost"],
        "both took effect"
    );
    d.ok(
        "share.detach",
        vec![
            ("share", t("q1")),
            (
                "connector",
                connector(&[("host", "compute-1"), ("ip", "10.0.0.21")]),
            ),
        ],
    );
    drop(d);
    drop(ef);
}
