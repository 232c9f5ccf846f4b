//! Cases about what reaches the target daemons: NFS export clients, iSCSI initiators and
//! attach connectors.

use ciborium::Value;

use super::*;

fn nfs_export(clients: Value) -> Vec<(&'static str, Value)> {
    vec![
        ("share", t(VICTIM)),
        ("protocol", t("nfs")),
        ("clients", clients),
    ]
}

fn iscsi_export(clients: Value) -> Vec<(&'static str, Value)> {
    vec![
        ("share", t(VICTIM)),
        ("protocol", t("iscsi")),
        ("clients", clients),
    ]
}

fn exports() -> Vec<Case> {
    let mut cases = Vec::new();
    for (tag, client, says) in [
        ("space-options", "* (rw,no_root_squash)", "contains ' '"),
        ("options", "*(rw,no_root_squash)", "contains '('"),
        ("newline-path", "host\n/etc", "contains '\\n'"),
        ("comma", "a,b", "contains ','"),
        ("dash-o", "-o", "must not start with '-'"),
        ("quote", "a\"b", "contains '\"'"),
        ("command-substitution", "$(reboot)", "contains '$'"),
        ("backtick", "`id`", "contains '`'"),
        ("comment", "a#comment", "contains '#'"),
        ("tab", "a\tb", "contains '\\t'"),
        ("empty", "", "1 to 255 bytes"),
        ("10000-chars", &"c".repeat(10_000), "1 to 255 bytes"),
    ] {
        cases.push(engine_err(
            &format!("nfs-client-{tag}"),
            "export.create",
            nfs_export(Value::Array(vec![t(client)])),
            "invalid_argument",
            &["NFS client", says],
        ));
    }
    cases.push(engine_err(
        "nfs-clients-257",
        "export.create",
        nfs_export(Value::Array(
            (0..257)
                .map(|i| t(&format!("10.0.{}.{}", i / 256, i % 256)))
                .collect(),
        )),
        "invalid_argument",
        &["at most 256 clients"],
    ));
    cases.push(engine_err(
        "nfs-clients-missing",
        "export.create",
        vec![("share", t(VICTIM)), ("protocol", t("nfs"))],
        "invalid_argument",
        &["needs clients"],
    ));
    cases.push(bad_args(
        "nfs-clients-text",
        "export.create",
        nfs_export(t("*")),
        &["invalid type: string"],
    ));
    cases.push(bad_args(
        "nfs-clients-integer",
        "export.create",
        nfs_export(Value::Array(vec![n(1)])),
        &["invalid type: integer"],
    ));
    for (tag, iqn, says) in [
        ("space", "iqn.2026-11.org.example:a b", "contains ' '"),
        (
            "newline",
            "iqn.2026-11.org.example:x\nIncomingUser",
            "contains '\\n'",
        ),
        ("tgt-all", "ALL", "must start with iqn."),
        ("semicolon", "iqn.2026-11.org.example;rm", "contains ';'"),
        (
            "uppercase",
            "IQN.2026-11.ORG.EXAMPLE",
            "must start with iqn.",
        ),
        (
            "10000-chars",
            &format!("iqn.2026-11.org.example:{}", "i".repeat(10_000)),
            "longer than 223",
        ),
    ] {
        cases.push(engine_err(
            &format!("iscsi-client-{tag}"),
            "export.create",
            iscsi_export(Value::Array(vec![t(iqn)])),
            "invalid_argument",
            &["iSCSI name", says],
        ));
    }
    cases.push(engine_err(
        "iscsi-export-with-nfs-option",
        "export.create",
        vec![
            ("share", t(VICTIM)),
            ("protocol", t("iscsi")),
            ("root_squash", Value::Bool(false)),
        ],
        "invalid_argument",
        &["NFS options"],
    ));
    cases.push(engine_err(
        "export-driver-for-other-protocol",
        "export.create",
        vec![
            ("share", t(VICTIM)),
            ("protocol", t("nfs")),
            ("driver", t("tgt")),
            ("clients", Value::Array(vec![])),
        ],
        "invalid_argument",
        &["does not serve"],
    ));
    cases.push(bad_args(
        "export-protocol-unknown",
        "export.create",
        nfs_export(Value::Array(vec![]))
            .into_iter()
            .map(|(k, v)| {
                if k == "protocol" {
                    (k, t("smb"))
                } else {
                    (k, v)
                }
            })
            .collect(),
        &["unknown variant `smb`"],
    ));
    cases.push(bad_args(
        "export-driver-injection",
        "export.create",
        vec![
            ("share", t(VICTIM)),
            ("protocol", t("nfs")),
            ("driver", t("kernel; rm -rf /")),
            ("clients", Value::Array(vec![])),
        ],
        &["unknown variant"],
    ));
    cases
}

fn attach(connector: Value, protocol: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("share", t(VICTIM)),
        ("connector", connector),
        ("protocol", t(protocol)),
    ]
}

fn connectors() -> Vec<Case> {
    let iqn = "iqn.1993-08.org.debian:01:hostile";
    let mut cases = Vec::new();
    for (tag, connector, protocol, says) in [
        (
            "host-empty",
            map(vec![("host", t("")), ("initiator", t(iqn))]),
            "iscsi",
            "connector.host",
        ),
        (
            "host-newline",
            map(vec![("host", t("h\nx")), ("initiator", t(iqn))]),
            "iscsi",
            "connector.host",
        ),
        (
            "host-10000-chars",
            map(vec![
                ("host", t(&"h".repeat(10_000))),
                ("initiator", t(iqn)),
            ]),
            "iscsi",
            "connector.host",
        ),
        (
            "ip-injection",
            map(vec![
                ("host", t("h")),
                ("ip", t("192.0.2.1; rm -rf /")),
                ("initiator", t(iqn)),
            ]),
            "iscsi",
            "not an IP address",
        ),
        (
            "ip-with-options",
            map(vec![
                ("host", t("h")),
                ("ip", t("192.0.2.1(rw,no_root_squash)")),
            ]),
            "nfs",
            "not an IP address",
        ),
        (
            "initiator-space",
            map(vec![
                ("host", t("h")),
                ("initiator", t("iqn.2026-11.org.example:a b")),
            ]),
            "iscsi",
            "iSCSI name",
        ),
        (
            "initiator-newline",
            map(vec![
                ("host", t("h")),
                ("initiator", t("iqn.2026-11.org.example:a\nb")),
            ]),
            "iscsi",
            "iSCSI name",
        ),
        (
            "initiator-tgt-all",
            map(vec![("host", t("h")), ("initiator", t("ALL"))]),
            "iscsi",
            "iSCSI name",
        ),
        (
            "initiator-missing",
            map(vec![("host", t("h"))]),
            "iscsi",
            "needs connector.initiator",
        ),
        (
            "nfs-host-options",
            map(vec![("host", t("evil(rw,no_root_squash)"))]),
            "nfs",
            "NFS client",
        ),
        (
            "nfs-host-wildcard",
            map(vec![("host", t("*"))]),
            "nfs",
            "connector.host",
        ),
        (
            "nfs-host-network",
            map(vec![("host", t("10.0.0.0/8"))]),
            "nfs",
            "connector.host",
        ),
        (
            "nfs-host-netgroup",
            map(vec![("host", t("@all"))]),
            "nfs",
            "connector.host",
        ),
    ] {
        cases.push(engine_err(
            &format!("connector-{tag}"),
            "share.attach",
            attach(connector, protocol),
            "invalid_argument",
            &[says],
        ));
    }
    cases.push(engine_err(
        "attach-iscsi-read-only",
        "share.attach",
        vec![
            ("share", t(VICTIM)),
            (
                "connector",
                map(vec![("host", t("h")), ("initiator", t(iqn))]),
            ),
            ("protocol", t("iscsi")),
            ("mode", t("ro")),
        ],
        "unsupported",
        &["read-only attach is not supported over iSCSI"],
    ));
    cases.push(bad_args(
        "connector-unknown-field",
        "share.attach",
        attach(
            map(vec![
                ("host", t("h")),
                ("initiator", t(iqn)),
                ("auth_password", t("x")),
            ]),
            "iscsi",
        ),
        &["unknown field `auth_password`"],
    ));
    cases.push(bad_args(
        "connector-text",
        "share.attach",
        attach(t("h"), "iscsi"),
        &["invalid type"],
    ));
    cases.push(bad_args(
        "connector-missing",
        "share.attach",
        vec![("share", t(VICTIM)), ("protocol", t("iscsi"))],
        &["missing field `connector`"],
    ));
    cases.push(bad_args(
        "attach-mode-injection",
        "share.attach",
        vec![
            ("share", t(VICTIM)),
            ("connector", map(vec![("host", t("h"))])),
            ("mode", t("rw,no_root_squash")),
        ],
        &["unknown variant"],
    ));
    cases
}

/// Export and attach cases.
pub fn cases() -> Vec<Case> {
    let mut all = exports();
    all.extend(connectors());
    all
}
