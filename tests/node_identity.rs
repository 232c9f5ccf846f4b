//! The node's identity: an id made at the first start in `<state_dir>/node-id`, the same
//! across restarts and `recover --rebuild-db`, refused when damaged (and then left as it
//! is), not settable in the config; `hello` and `shelfctl hello` show it with the name.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use ciborium::Value;
use common::*;
use shelf::model::NodeId;

const MIB: u64 = 1 << 20;

/// `hello`'s `node`: (id, name).
fn hello_node(d: &Daemon) -> (String, String) {
    let h = d.ok("hello", vec![]);
    let node = sub(&h, "node");
    (field(node, "id"), field(node, "name"))
}

fn id_file(layout: &Layout) -> std::path::PathBuf {
    layout.state.join("node-id")
}

#[test]
fn the_node_id_is_made_once_and_kept_across_restart_and_rebuild_db() {
    let base = scratch("node-id");
    let layout = Layout::new(base.path(), "");
    assert!(!id_file(&layout).exists());
    let mut d = Daemon::start(&layout);

    let (id, name) = hello_node(&d);
    let text = std::fs::read_to_string(id_file(&layout)).unwrap();
    assert_eq!(
        text,
        format!("{id}\n"),
        "the file holds the id and a newline"
    );
    assert_eq!(NodeId::parse(&id).unwrap().as_str(), id, "a canonical UUID");
    let v = uuid::Uuid::parse_str(&id).unwrap().get_version_num();
    assert_eq!(v, 4, "a random UUID");
    let mode = std::fs::metadata(id_file(&layout))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    assert!(
        !layout.state.join(".node-id.tmp").exists(),
        "no temporary file left"
    );
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok());
    assert_eq!(name, shelf::model::default_node_name(host.as_deref()));

    // A share, so that the rebuild below has something to rebuild.
    d.ok(
        "share.create",
        vec![("name", t("keep")), ("size", n(4 * MIB))],
    );

    d.stop();
    d.restart();
    assert_eq!(hello_node(&d).0, id, "the same id after a restart");

    d.lose_db(Some(b"this is not a database"));
    let out = d.rebuild(&[]);
    assert!(out.contains("rebuilt: 1 share(s)"), "{out}");
    assert_eq!(std::fs::read_to_string(id_file(&layout)).unwrap(), text);
    d.restart();
    assert_eq!(hello_node(&d).0, id, "the same id after --rebuild-db");
    let shares = d.ok("share.list", vec![]);
    assert!(format!("{shares:?}").contains("keep"), "{shares:?}");
}

#[test]
fn node_name_names_the_node_and_shelfctl_hello_shows_both() {
    let base = scratch("node-name");
    let layout = Layout::new(base.path(), "node_name = \"shelf-a.example\"\n");
    let d = Daemon::start(&layout);
    let (id, name) = hello_node(&d);
    assert_eq!(name, "shelf-a.example");
    let out = d.shelfctl(&["hello"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l == format!("node {id} (shelf-a.example)")),
        "{text}"
    );
    // The rest of hello is as before.
    let h = d.ok("hello", vec![]);
    assert_eq!(field(&h, "server"), "shelfd");
    assert!(matches!(sub(&h, "protocols"), Value::Array(_)));
}

/// Start shelfd on `layout` until it exits by itself (it must refuse to start); its log.
fn refused_start(layout: &Layout) -> String {
    let mut d = Daemon::new(
        env!("CARGO_BIN_EXE_shelfd").into(),
        layout.config.clone(),
        layout.state.clone(),
        layout.socket.clone(),
        layout.config.with_extension("log"),
    );
    let st = d.restart_until_exit(&[]);
    assert!(!st.success(), "shelfd started on a damaged node-id file");
    assert!(!layout.socket.exists(), "no socket was opened");
    d.log_text()
}

#[test]
fn a_damaged_node_id_file_stops_start_up_and_is_left_untouched() {
    let base = scratch("node-id-bad");
    let layout = Layout::new(base.path(), "");
    let good = "0f8fad5b-d9cb-469f-a165-70867728950e";
    std::fs::create_dir_all(&layout.state).unwrap();
    for bad in [
        b"".to_vec(),
        b"not a uuid\n".to_vec(),
        format!("{good}\n{good}\n").into_bytes(),
        format!(" {good}\n").into_bytes(),
        good.to_uppercase().into_bytes(),
        vec![0xff; 37],
    ] {
        std::fs::write(id_file(&layout), &bad).unwrap();
        let log = refused_start(&layout);
        let path = id_file(&layout).display().to_string();
        assert!(
            log.contains(&format!("node id file {path} is damaged")),
            "{bad:?}:\n{log}"
        );
        assert_eq!(
            std::fs::read(id_file(&layout)).unwrap(),
            bad,
            "left as it was"
        );
        assert!(
            !layout.state.join("shelf.db").exists(),
            "stopped before the database"
        );
    }
    // A directory where the file should be: named too, and not replaced.
    std::fs::remove_file(id_file(&layout)).unwrap();
    std::fs::create_dir(id_file(&layout)).unwrap();
    let log = refused_start(&layout);
    assert!(log.contains("cannot read node id file"), "{log}");
    assert!(id_file(&layout).is_dir());
    // The good file it is again: shelfd starts on it and keeps it.
    std::fs::remove_dir(id_file(&layout)).unwrap();
    std::fs::write(id_file(&layout), format!("{good}\n")).unwrap();
    let d = Daemon::start(&layout);
    assert_eq!(hello_node(&d).0, good);
}

fn check_config(config: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shelfd"))
        .arg("--config")
        .arg(config)
        .arg("--check-config")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn node_id_in_the_config_is_refused_and_node_name_is_checked() {
    let base = scratch("node-id-config");
    let layout = Layout::new(
        base.path(),
        "node_id = \"0f8fad5b-d9cb-469f-a165-70867728950e\"\n",
    );
    let (ok, err) = check_config(&layout.config);
    assert!(!ok);
    assert!(
        err.contains("node_id cannot be set in the config") && err.contains("node-id"),
        "{err}"
    );
    let layout = Layout::new(base.path(), "node_name = \"a b\"\n");
    let (ok, err) = check_config(&layout.config);
    assert!(!ok);
    assert!(err.contains("node_name"), "{err}");
    let layout = Layout::new(base.path(), "node_name = \"ok\"\n");
    assert!(check_config(&layout.config).0);
    // The refusal does not depend on --check-config: the daemon does not start either.
    let layout = Layout::new(
        base.path(),
        "node_id = \"0f8fad5b-d9cb-469f-a165-70867728950e\"\n",
    );
    let log = refused_start(&layout);
    assert!(log.contains("node_id cannot be set"), "{log}");
    assert!(!id_file(&layout).exists());
}

/// Pipe `snapshot`'s send stream from `a` into a receive of share `name` on `b`; the
/// receive's `finish` reply.
fn send_into(a: &Daemon, b: &Daemon, snapshot: &str, name: &str) -> Value {
    let (stream, receive) = (open_send(a, snapshot), begin_receive(b, name));
    let mut offset = 0u64;
    loop {
        let c = a.ok(
            "stream.read",
            vec![("stream", t(&stream)), ("max", n(256 << 10))],
        );
        let data = match shelf::client::get(&c, "data") {
            Some(Value::Bytes(d)) => d.clone(),
            v => panic!("stream.read data: {v:?}"),
        };
        if !data.is_empty() {
            let len = data.len() as u64;
            b.ok(
                "snapshot.receive.chunk",
                vec![
                    ("receive", t(&receive)),
                    ("offset", n(offset)),
                    ("data", Value::Bytes(data)),
                ],
            );
            offset += len;
        }
        if shelf::client::get(&c, "end") == Some(&Value::Bool(true)) {
            break;
        }
    }
    b.ok("snapshot.receive.finish", vec![("receive", t(&receive))])
}

#[test]
fn a_received_stream_names_the_node_it_came_from() {
    let (base_a, base_b) = (scratch("node-send-a"), scratch("node-send-b"));
    let a = Daemon::start(&Layout::new(base_a.path(), "node_name = \"sender\"\n"));
    let b = Daemon::start(&Layout::new(base_b.path(), ""));
    let (id_a, id_b) = (hello_node(&a).0, hello_node(&b).0);
    assert_ne!(id_a, id_b, "two state directories, two nodes");
    let share = create_share(&a, "vol", 4 * MIB);
    write_at(
        &volume(&base_a.path().join("state/pools/default"), &share),
        MIB,
        &pattern(7, 64 << 10),
    );
    let snap = a.ok(
        "snapshot.create",
        vec![("share", t("vol")), ("name", t("s1"))],
    );
    // Without reflink (this pool is not on XFS) the snapshot is a copy made by a job.
    if let Some(job) = shelf::client::get_text(&snap, "job") {
        assert_eq!(field(&wait_job(&a, job), "state"), "done");
    }
    let snap = field(sub(&snap, "snapshot"), "id");
    let done = send_into(&a, &b, &snap, "replica");
    assert_eq!(field(&done, "origin_node"), id_a, "{done:?}");
    assert_eq!(
        shelf::client::get(&done, "changed"),
        Some(&Value::Bool(true))
    );
    let log = b.log_text();
    assert!(
        log.contains(&format!("from node sender ({id_a})")),
        "the receiver logs where the stream came from:\n{log}"
    );
    // Not stored: nothing of it in the snapshot or share the receiver shows.
    let shown = format!("{:?}", b.ok("snapshot.show", vec![("snapshot", t(&snap))]));
    assert!(!shown.contains(&id_a), "{shown}");
}
