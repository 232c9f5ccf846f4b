//! One valid request of every operation: the corpus seeds the fuzzer mutates.

use ciborium::Value;

use super::*;

/// One valid request per operation (two for ops with protocol variants).
pub fn valid_requests() -> Vec<(String, Value)> {
    let iqn = "iqn.1993-08.org.debian:01:seed";
    let list = vec![
        ("hello", vec![]),
        ("pool.list", vec![]),
        ("pool.show", vec![("name", t("default"))]),
        (
            "share.create",
            vec![
                ("name", t("vol1")),
                ("size", n(10 << 30)),
                ("pool", t("default")),
                ("sparse", Value::Bool(true)),
                ("multiattach", Value::Bool(false)),
                ("metadata", map(vec![("owner", t("web-1"))])),
            ],
        ),
        (
            "share.list",
            vec![
                ("pool", t("default")),
                ("name", t("vol1")),
                ("id", Value::Null),
            ],
        ),
        (
            "share.show",
            vec![("share", t("vol1")), ("pool", t("default"))],
        ),
        (
            "share.resize",
            vec![("share", t("vol1")), ("size", n(20 << 30))],
        ),
        (
            "share.delete",
            vec![
                ("share", t("vol1")),
                ("recursive", Value::Bool(true)),
                ("force", Value::Bool(false)),
            ],
        ),
        (
            "share.clone",
            vec![
                ("snapshot", t("s1")),
                ("share", t("vol1")),
                ("name", t("copy")),
                ("metadata", map(vec![])),
            ],
        ),
        (
            "snapshot.create",
            vec![("share", t("vol1")), ("name", t("s1"))],
        ),
        ("snapshot.list", vec![("share", t("vol1"))]),
        (
            "snapshot.show",
            vec![("snapshot", t("s1")), ("share", t("vol1"))],
        ),
        (
            "snapshot.delete",
            vec![("snapshot", t("s1")), ("share", t("vol1"))],
        ),
        ("tree", vec![("pool", t("default"))]),
        (
            "export.create",
            vec![
                ("share", t("vol1")),
                ("protocol", t("nfs")),
                ("driver", t("kernel")),
                (
                    "clients",
                    Value::Array(vec![t("10.0.0.0/8"), t("*.example.com")]),
                ),
                ("access", t("ro")),
                ("sync", Value::Bool(true)),
                ("root_squash", Value::Bool(true)),
            ],
        ),
        (
            "export.create",
            vec![
                ("share", t("vol1")),
                ("protocol", t("iscsi")),
                ("clients", Value::Array(vec![t(iqn)])),
                ("chap", Value::Bool(true)),
            ],
        ),
        ("export.list", vec![("share", t("vol1"))]),
        (
            "export.show",
            vec![("share", t("vol1")), ("protocol", t("iscsi"))],
        ),
        (
            "export.delete",
            vec![
                ("share", t("vol1")),
                ("protocol", t("nfs")),
                ("force", Value::Bool(true)),
            ],
        ),
        (
            "share.attach",
            vec![
                ("share", t("vol1")),
                (
                    "connector",
                    map(vec![
                        ("host", t("compute-1")),
                        ("ip", t("192.0.2.10")),
                        ("initiator", t(iqn)),
                    ]),
                ),
                ("protocol", t("iscsi")),
                ("mode", t("rw")),
            ],
        ),
        (
            "share.detach",
            vec![
                ("share", t("vol1")),
                (
                    "connector",
                    map(vec![("host", t("compute-1")), ("initiator", t(iqn))]),
                ),
            ],
        ),
        ("attachment.list", vec![]),
        ("reconcile", vec![]),
        (
            "share.set_metadata",
            vec![
                ("share", t("vol1")),
                ("metadata", map(vec![("owner", t("web-2"))])),
                ("remove", Value::Array(vec![t("old")])),
            ],
        ),
        (
            "share.revert",
            vec![
                ("share", t("vol1")),
                ("snapshot", t("snap1")),
                ("force", Value::Bool(true)),
            ],
        ),
        (
            "snapshot.create_group",
            vec![
                ("shares", Value::Array(vec![t("vol1"), t("vol2")])),
                ("name", t("g1")),
            ],
        ),
        ("group_snapshot.list", vec![]),
        ("group_snapshot.show", vec![("group", t("g1"))]),
        (
            "group_snapshot.delete",
            vec![("group", t("g1")), ("pool", t("default"))],
        ),
    ];
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    list.into_iter()
        .enumerate()
        .map(|(i, (op, args))| {
            let k = seen.entry(op).or_default();
            *k += 1;
            let name = if *k == 1 {
                format!("valid-{op}")
            } else {
                format!("valid-{op}-{k}")
            };
            (name, req(i as u64 + 1, op, args))
        })
        .collect()
}
