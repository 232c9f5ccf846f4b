//! Each family's typed result encodes to the bytes the hand-built maps of the engine
//! sent before typed outcomes (captured from that code: `map(vec![...])` in
//! `src/engine/*.rs` at commit bafae72).

use std::collections::BTreeMap;

use ciborium::Value;

use super::*;
use crate::model::{Access, Protocol, Share, ShareState, Snapshot};

/// The CBOR bytes of a value, as a frame carries them.
fn bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

/// The old engine's `map(vec![...])`.
fn old_map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::Text(k.to_string()), v))
            .collect(),
    )
}

pub(super) fn share() -> Share {
    Share {
        id: "5b1c".into(),
        name: "vol1".into(),
        pool: "default".into(),
        size: 1 << 20,
        sparse: true,
        multiattach: false,
        state: ShareState::Available,
        created_at: 1_700_000_000,
        origin_snapshot: None,
        origin_share: None,
        metadata: BTreeMap::from([("k".to_string(), "v".to_string())]),
        layout: crate::model::Layout::Block,
        filesystem: None,
    }
}

pub(super) fn attachment() -> Attachment {
    Attachment {
        id: "a77".into(),
        share: "5b1c".into(),
        share_name: "vol1".into(),
        protocol: Protocol::Iscsi,
        client: "iqn.1994-05.com.example:h1".into(),
        host: "h1".into(),
        ip: Some("192.0.2.1".into()),
        initiator: Some("iqn.1994-05.com.example:h1".into()),
        mode: Access::Rw,
        created_at: 1_700_000_001,
    }
}

/// The bytes of an answer's `ok`, whatever its body.
fn answer_bytes(a: &Answer) -> Vec<u8> {
    match &a.value {
        Body::Value(v) => bytes(v),
        Body::Cbor(b) => b.clone(),
    }
}

fn same(new: &Answer, old: Value) {
    assert_eq!(answer_bytes(new), bytes(&old));
}

#[test]
fn a_share_outcome_is_the_old_share_and_changed_map() {
    let s = share();
    let old_changed = |changed: bool| {
        old_map(vec![
            ("share", Value::serialized(&s).unwrap()),
            ("changed", Value::Bool(changed)),
        ])
    };
    let created = Answer::object(&Outcome::Created(s.clone())).unwrap();
    same(&created, old_changed(true));
    assert_eq!(
        created.event(),
        Some(&Change {
            kind: EventKind::Created,
            object: "5b1c".into()
        })
    );
    let again = Answer::object(&Outcome::AlreadyThere(s.clone())).unwrap();
    same(&again, old_changed(false));
    assert_eq!(again.event(), None);
}

#[test]
fn an_attach_outcome_is_the_old_connection_info_map() {
    let info = old_map(vec![("driver_volume_type", Value::Text("iscsi".into()))]);
    let att = attachment();
    let new = Answer::attached(&Outcome::Created(att.clone()), info.clone()).unwrap();
    same(
        &new,
        old_map(vec![
            ("connection_info", info.clone()),
            ("attachment", Value::serialized(&att).unwrap()),
            ("changed", Value::Bool(true)),
        ]),
    );
    let again = Answer::attached(&Outcome::AlreadyThere(att), info.clone()).unwrap();
    same(
        &again,
        old_map(vec![
            ("connection_info", info),
            ("changed", Value::Bool(false)),
        ]),
    );
    assert!(again.event().is_none());
}

fn snapshot() -> crate::model::Snapshot {
    crate::model::Snapshot {
        id: "9e".into(),
        name: "s1".into(),
        share: "5b1c".into(),
        share_name: "vol1".into(),
        pool: "default".into(),
        size: 1 << 20,
        state: ShareState::Creating,
        created_at: 1_700_000_002,
        group: None,
    }
}

#[test]
fn a_change_finished_by_a_job_is_the_old_object_job_changed_map() {
    let snap = snapshot();
    let new = Answer::object_by_job(&Outcome::Created(snap.clone()), "j1").unwrap();
    same(
        &new,
        old_map(vec![
            ("snapshot", Value::serialized(&snap).unwrap()),
            ("job", Value::Text("j1".into())),
            ("changed", Value::Bool(true)),
        ]),
    );
    assert_eq!(new.event().unwrap().object, "9e");
}

#[test]
fn a_resize_with_warnings_is_the_old_map_with_warnings_last() {
    let s = share();
    let warnings = Value::Array(vec![Value::Text("export e1 kept its size".into())]);
    let new = Answer::object(&Outcome::Changed(s.clone()))
        .unwrap()
        .with("warnings", warnings.clone());
    same(
        &new,
        old_map(vec![
            ("share", Value::serialized(&s).unwrap()),
            ("changed", Value::Bool(true)),
            ("warnings", warnings),
        ]),
    );
    assert_eq!(new.event().unwrap().kind, EventKind::Changed);
    let unchanged = Answer::object(&Outcome::Unchanged(s)).unwrap();
    assert!(unchanged.event().is_none());
}

#[test]
fn removals_are_the_old_deleted_maps() {
    let new = Answer::deleted(&Outcome::Deleted("9e".into()));
    same(
        &new,
        old_map(vec![
            ("deleted", Value::Text("9e".into())),
            ("changed", Value::Bool(true)),
        ]),
    );
    assert_eq!(
        new.event(),
        Some(&Change {
            kind: EventKind::Deleted,
            object: "9e".into()
        })
    );
    let share = Answer::share_deleted(&Outcome::Deleted("5b1c".into()), 2);
    same(
        &share,
        old_map(vec![
            ("deleted", Value::Text("5b1c".into())),
            ("snapshots_deleted", Value::Integer(2.into())),
            ("changed", Value::Bool(true)),
        ]),
    );
}

#[test]
fn a_detach_is_the_old_detached_map() {
    let att = attachment();
    let new = Answer::detached(&Outcome::Deleted(Some(att.clone()))).unwrap();
    same(
        &new,
        old_map(vec![
            ("detached", Value::serialized(&att).unwrap()),
            ("changed", Value::Bool(true)),
        ]),
    );
    assert_eq!(new.event().unwrap().object, "a77");
    let none = Answer::detached(&Outcome::AlreadyGone(None)).unwrap();
    same(
        &none,
        old_map(vec![
            ("detached", Value::Null),
            ("changed", Value::Bool(false)),
        ]),
    );
    assert!(none.event().is_none());
}

/// An object outside the model (the image cache's row lives in the store).
#[derive(serde::Serialize)]
struct Image {
    id: String,
    name: String,
}

impl Object for Image {
    const KIND: &'static str = "image";
    fn id(&self) -> &str {
        &self.id
    }
}

#[test]
fn images_uploads_and_jobs_are_the_old_maps() {
    let image = Image {
        id: "i1".into(),
        name: "debian".into(),
    };
    let started = Answer::import_started("j2", &image).unwrap();
    same(
        &started,
        old_map(vec![
            ("job", Value::Text("j2".into())),
            ("image", Value::serialized(&image).unwrap()),
        ]),
    );
    assert_eq!(started.event().unwrap().object, "i1");
    same(
        &Answer::upload_begun("u1"),
        old_map(vec![("upload", Value::Text("u1".into()))]),
    );
    let chunk = Answer::received(4096);
    same(
        &chunk,
        old_map(vec![("received", Value::Integer(4096.into()))]),
    );
    assert!(chunk.event().is_none());
    for cancelled in [true, false] {
        let new = Answer::job_cancelled(&Outcome::changed_if(cancelled, "j2".to_string()));
        same(
            &new,
            old_map(vec![
                ("job", Value::Text("j2".into())),
                ("changed", Value::Bool(cancelled)),
            ]),
        );
        assert_eq!(new.event().is_some(), cancelled);
    }
}

#[test]
fn hello_reconcile_and_reads_are_the_old_values() {
    let hello = Answer::read(&Hello {
        server: "shelfd",
        version: "0.1.0",
        protocols: &[1],
        features: &["pipelining", "events"],
        node: crate::model::Node {
            id: crate::model::NodeId::parse("0f8fad5b-d9cb-469f-a165-70867728950e").unwrap(),
            name: "n1".into(),
        },
    })
    .unwrap()
    .with("drivers", old_map(vec![]))
    .with("drivers_age_ms", Value::Integer(12.into()));
    same(
        &hello,
        old_map(vec![
            ("server", Value::Text("shelfd".into())),
            ("version", Value::Text("0.1.0".into())),
            ("protocols", Value::Array(vec![Value::Integer(1.into())])),
            (
                "features",
                Value::Array(vec![
                    Value::Text("pipelining".into()),
                    Value::Text("events".into()),
                ]),
            ),
            (
                "node",
                old_map(vec![
                    (
                        "id",
                        Value::Text("0f8fad5b-d9cb-469f-a165-70867728950e".into()),
                    ),
                    ("name", Value::Text("n1".into())),
                ]),
            ),
            ("drivers", old_map(vec![])),
            ("drivers_age_ms", Value::Integer(12.into())),
        ]),
    );
    assert!(hello.event().is_none());
    let shares = vec![share()];
    same(
        &Answer::read(&shares).unwrap(),
        Value::serialized(&shares).unwrap(),
    );
    let listed = Answer::list(&shares).unwrap();
    assert!(listed.value().is_none(), "a list is encoded, not a value");
    same(&listed, Value::serialized(&shares).unwrap());
    let report = BTreeMap::from([("checked", 3)]);
    let quiet = Answer::reconciled(&Outcome::Unchanged(report.clone())).unwrap();
    same(&quiet, Value::serialized(&report).unwrap());
    assert!(quiet.event().is_none());
    let repaired = Answer::reconciled(&Outcome::Changed(report)).unwrap();
    assert_eq!(repaired.event().unwrap().object, "");
}

/// A list written straight into bytes is byte for byte the list its value encoded to
/// (the wire did not change when lists stopped being built as values): shares with
/// and without origins, metadata, filesystems; snapshots; the tree of both.
#[test]
fn encoded_lists_are_the_bytes_of_their_values() {
    let mut clone = share();
    clone.id = "c10e".into();
    clone.name = "vol2 é".into();
    clone.origin_snapshot = Some("5a9".into());
    clone.origin_share = Some("5b1c".into());
    clone.metadata = BTreeMap::new();
    clone.layout = crate::model::Layout::Filesystem;
    clone.filesystem = Some(crate::model::FsKind::Xfs);
    clone.size = u64::MAX;
    let shares = vec![share(), clone];
    let snap = Snapshot {
        id: "5a9".into(),
        name: "s1".into(),
        share: "5b1c".into(),
        share_name: "vol1".into(),
        pool: "default".into(),
        size: 1 << 20,
        state: ShareState::Available,
        created_at: -1,
        group: None,
    };
    let grouped = Snapshot {
        id: "5aa".into(),
        name: "g1".into(),
        group: Some("0f8fad5b-d9cb-469f-a165-70867728950e".into()),
        ..snap.clone()
    };
    let snaps = vec![snap, grouped];
    let tree = crate::model::build_tree(&shares, &snaps);
    same(
        &Answer::list(&shares).unwrap(),
        Value::serialized(&shares).unwrap(),
    );
    same(
        &Answer::list(&snaps).unwrap(),
        Value::serialized(&snaps).unwrap(),
    );
    same(
        &Answer::list(&tree).unwrap(),
        Value::serialized(&tree).unwrap(),
    );
    let empty: Vec<Share> = Vec::new();
    same(&Answer::list(&empty).unwrap(), Value::Array(vec![]));
}
