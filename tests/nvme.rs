//! NVMe/TCP on this machine, whose kernel has no nvmet: the driver says precisely why it is
//! unusable, refuses cleanly and keeps nothing half made; the connector and option rules of
//! the protocol; and the engine's undo of a failed create through the seam, against a plain
//! directory standing in for configfs (named as such: real configfs makes attribute files on
//! mkdir, a plain directory does not, so every apply fails there). The real driver runs in
//! the VM tier against the guest kernel's nvmet.

mod common;

use ciborium::Value;
use common::*;
use shelf::client::get_text;

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3ccabcd";

fn connector(nqn: &str) -> Value {
    Value::Map(vec![(t("host"), t("compute-1")), (t("nqn"), t(nqn))])
}

fn daemon(xfs: &Xfs, configfs: &std::path::Path) -> Daemon {
    let layout = Layout::on_xfs(
        xfs,
        &format!(
            "[nvme]\nconfigfs = {:?}\nportal = \"127.0.0.1:4420\"\n",
            configfs.display().to_string()
        ),
    );
    Daemon::start(&layout)
}

#[test]
fn an_absent_nvmet_is_named_in_hello_and_refused_cleanly() {
    let xfs = Xfs::new("nvme-absent", 512 << 20);
    let configfs = xfs.base().join("no-nvmet");
    let d = daemon(&xfs, &configfs);
    let hello = d.ok("hello", vec![]);
    let status = get_text(sub(&hello, "drivers"), "nvmet")
        .unwrap()
        .to_string();
    assert!(
        status.contains("absent: module nvmet not loaded") && status.contains("no-nvmet"),
        "{status}"
    );
    let features = sub(&hello, "features");
    assert!(
        matches!(features, Value::Array(a) if a.contains(&t("export.nvme"))),
        "{features:?}"
    );
    d.ok("share.create", vec![("name", t("v")), ("size", n(1 << 20))]);
    let m = d.err(
        "export.create",
        vec![("share", t("v")), ("protocol", t("nvme"))],
        "unsupported",
    );
    assert!(m.contains("module nvmet not loaded"), "{m}");
    // An attach with only an NQN picks NVMe/TCP for a share without exports.
    let m = d.err(
        "share.attach",
        vec![("share", t("v")), ("connector", connector(HOST))],
        "unsupported",
    );
    assert!(m.contains("nvmet"), "{m}");
    assert_eq!(d.ok("export.list", vec![]), Value::Array(vec![]));
    assert_eq!(d.ok("attachment.list", vec![]), Value::Array(vec![]));
}

#[test]
fn nvme_connectors_and_options_are_checked_before_anything_is_done() {
    let xfs = Xfs::new("nvme-rules", 512 << 20);
    let d = daemon(&xfs, &xfs.base().join("no-nvmet"));
    d.ok("share.create", vec![("name", t("v")), ("size", n(1 << 20))]);
    let nvme = || ("protocol", t("nvme"));
    let m = d.err(
        "share.attach",
        vec![
            ("share", t("v")),
            nvme(),
            ("connector", Value::Map(vec![(t("host"), t("h"))])),
        ],
        "invalid_argument",
    );
    assert!(m.contains("connector.nqn"), "{m}");
    // A host NQN names a directory in nvmet's configfs: anything that could leave its
    // directory, or cost more than nvmet's 223 bytes, is refused before configfs is touched.
    let long = format!("nqn.2014-08.org.example:{}", "a".repeat(300));
    for bad in [
        "nqn.x/../y",
        "nqn.2014-08.org.example:../../../../etc",
        "nqn.2014-08.org.example:a/b",
        "nqn.2014-08.org.example:a\nb",
        long.as_str(),
    ] {
        let m = d.err(
            "share.attach",
            vec![("share", t("v")), nvme(), ("connector", connector(bad))],
            "invalid_argument",
        );
        assert!(m.contains("NVMe name"), "{bad}: {m}");
    }
    let m = d.err(
        "share.attach",
        vec![
            ("share", t("v")),
            nvme(),
            ("connector", connector(HOST)),
            ("mode", t("ro")),
        ],
        "unsupported",
    );
    assert!(m.contains("NVMe/TCP"), "{m}");
    for (key, value) in [("chap", Value::Bool(true)), ("sync", Value::Bool(false))] {
        d.err(
            "export.create",
            vec![("share", t("v")), nvme(), (key, value)],
            "invalid_argument",
        );
    }
    d.err(
        "export.create",
        vec![
            ("share", t("v")),
            nvme(),
            (
                "clients",
                Value::Array(vec![t("iqn.1993-08.org.debian:01:abc")]),
            ),
        ],
        "invalid_argument",
    );
    d.err(
        "export.create",
        vec![("share", t("v")), nvme(), ("driver", t("tgt"))],
        "invalid_argument",
    );
    assert_eq!(d.ok("export.list", vec![]), Value::Array(vec![]));
}

#[test]
fn a_failed_create_is_undone_on_a_plain_directory_not_configfs() {
    let xfs = Xfs::new("nvme-plain", 512 << 20);
    let root = xfs.base().join("fake-nvmet");
    for dir in ["subsystems", "ports", "hosts"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let d = daemon(&xfs, &root);
    let hello = d.ok("hello", vec![]);
    assert_eq!(get_text(sub(&hello, "drivers"), "nvmet"), Some("usable"));
    d.ok("share.create", vec![("name", t("v")), ("size", n(1 << 20))]);
    // The port is made first (mkdir), then its first attribute cannot be written: a plain
    // directory has no addr_trtype file.
    let m = d.err(
        "export.create",
        vec![("share", t("v")), ("protocol", t("nvme"))],
        "internal",
    );
    assert!(m.contains("addr_trtype"), "{m}");
    assert_eq!(d.ok("export.list", vec![]), Value::Array(vec![]));
    let subsystems: Vec<_> = std::fs::read_dir(root.join("subsystems"))
        .unwrap()
        .collect();
    assert!(
        subsystems.is_empty(),
        "nothing half made is left in the subsystems"
    );
}

/// Rows of `table` in the daemon's database (read-only, beside the running daemon).
fn rows(d: &Daemon, table: &str) -> i64 {
    let c = rusqlite::Connection::open_with_flags(
        d.state.join("shelf.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_preallocated_file_share_is_refused_before_configfs_is_touched() {
    let xfs = Xfs::new("nvme-prealloc", 512 << 20);
    let root = xfs.base().join("fake-nvmet");
    let parts = ["subsystems", "ports", "hosts"];
    for dir in parts {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let d = daemon(&xfs, &root);
    d.ok(
        "share.create",
        vec![
            ("name", t("p")),
            ("size", n(1 << 20)),
            ("sparse", Value::Bool(false)),
        ],
    );
    let nvme = || ("protocol", t("nvme"));
    // nvmet would punch holes in the file wherever a host deallocates: refused, by
    // export.create and by an attach that would make the export (with or without a
    // protocol: an NQN-only connector picks NVMe/TCP).
    let m = d.err(
        "export.create",
        vec![("share", t("p")), nvme()],
        "unsupported",
    );
    assert!(
        m.contains("nvmet deallocates") && m.contains("preallocat"),
        "{m}"
    );
    for args in [
        vec![("share", t("p")), nvme(), ("connector", connector(HOST))],
        vec![("share", t("p")), ("connector", connector(HOST))],
    ] {
        let m = d.err("share.attach", args, "unsupported");
        assert!(m.contains("nvmet deallocates"), "{m}");
    }
    for dir in parts {
        let left: Vec<_> = std::fs::read_dir(root.join(dir)).unwrap().collect();
        assert!(left.is_empty(), "{dir}: {left:?}");
    }
    assert_eq!(d.ok("export.list", vec![]), Value::Array(vec![]));
    for table in ["exports", "attachments", "intents"] {
        assert_eq!(rows(&d, table), 0, "{table}");
    }
    // The same stand-in with a thin share: the refusal above was not the apply failure.
    d.ok("share.create", vec![("name", t("v")), ("size", n(1 << 20))]);
    let m = d.err("export.create", vec![("share", t("v")), nvme()], "internal");
    assert!(m.contains("addr_trtype"), "{m}");
}
