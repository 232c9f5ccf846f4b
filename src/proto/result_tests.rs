//! Each family's typed result encodes to the bytes the hand-built maps of the engine
//! sent before typed outcomes (captured from that code: `map(vec![...])` in
//! `src/engine/*.rs` at commit bafae72).

use std::collections::BTreeMap;

use ciborium::Value;

use super::*;
use crate::model::{Access, Protocol, Share, ShareState};

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

fn same(new: &Answer, old: Value) {
    assert_eq!(bytes(new.value()), bytes(&old));
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
