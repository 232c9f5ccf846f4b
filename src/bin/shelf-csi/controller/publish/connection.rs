//! `share.attach`'s `connection_info` (docs/exports.md, "Attach contract") as the
//! `publish_context` NodeStageVolume reads (keys in context.rs). The CHAP secret is the only
//! secret in it: it is sealed for the volume and node (seal.rs) and never copied in the
//! clear, and no error here quotes it.

use std::collections::HashMap;

use ciborium::Value;
use shelf::client::{get, get_text};
use tonic::Status;
use zeroize::Zeroizing;

use crate::context;
use crate::seal;

/// What the publish context is built for: the ids the seal binds, and the key (the
/// [`seal::CHAP_KEY`] value of the publish secrets) when the CO gave one. Its `Debug`
/// leaves the key out.
pub struct For<'a> {
    /// The CSI volume id, as the CO sent it.
    pub volume_id: &'a str,
    /// The CSI node id, as the CO sent it.
    pub node_id: &'a str,
    /// The sealing key, if the publish secrets have one.
    pub key: Option<&'a str>,
}

impl std::fmt::Debug for For<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("For")
            .field("volume_id", &self.volume_id)
            .field("node_id", &self.node_id)
            .field("key", &self.key.map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a connection_info could not become a publish context.
#[derive(Debug)]
pub enum Refusal {
    /// The export has CHAP and the CO gave no key to seal its secret with.
    NoKey,
    /// Anything else (a malformed reply, a seal failure): the status to answer.
    Status(Status),
}

/// The publish context for `info` (`connection_info`).
pub fn publish_context(info: &Value, f: &For<'_>) -> Result<HashMap<String, String>, Refusal> {
    let bad = |what: &str| {
        Refusal::Status(Status::internal(format!(
            "share.attach's connection_info has no {what}"
        )))
    };
    let kind = get_text(info, "driver_volume_type").ok_or_else(|| bad("driver_volume_type"))?;
    let data = get(info, "data").ok_or_else(|| bad("data"))?;
    let text = |key: &str| {
        get_text(data, key)
            .map(str::to_string)
            .ok_or_else(|| bad(key))
    };
    let mut ctx = HashMap::new();
    let mode = get_text(data, "access_mode").unwrap_or("rw");
    ctx.insert(context::ACCESS_MODE.to_string(), mode.to_string());
    // shelf's word on whether the target unmaps; absent (an older shelfd) means it does not.
    let discard = get(data, "discard")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    ctx.insert(context::DISCARD.to_string(), discard.to_string());
    match kind {
        "iscsi" => {
            ctx.insert(context::PROTOCOL.into(), "iscsi".into());
            ctx.insert(context::TARGET_PORTAL.into(), text("target_portal")?);
            ctx.insert(context::TARGET_IQN.into(), text("target_iqn")?);
            let lun = get(data, "target_lun")
                .and_then(Value::as_integer)
                .map(|i| i128::from(i).to_string())
                .ok_or_else(|| bad("target_lun"))?;
            ctx.insert(context::TARGET_LUN.into(), lun);
            if let Some(user) = get_text(data, "auth_username") {
                let secret = get_text(data, "auth_password").ok_or_else(|| bad("auth_password"))?;
                let secret = Zeroizing::new(secret.to_string());
                let key = f.key.ok_or(Refusal::NoKey)?;
                ctx.insert(context::CHAP_USER.into(), user.to_string());
                let bound = context::seal_binding(f.volume_id, f.node_id, &ctx)
                    .ok_or_else(|| bad("target_portal, target_iqn or auth_username"))?;
                let sealed = seal::seal(key, &bound, &secret)
                    .map_err(|e| Refusal::Status(Status::failed_precondition(e.to_string())))?;
                ctx.insert(context::CHAP_SECRET_SEALED.into(), sealed);
            }
        }
        "nfs" => {
            ctx.insert(context::PROTOCOL.into(), "nfs".into());
            ctx.insert(context::NFS_EXPORT.into(), text("export")?);
        }
        "nvmeof" => {
            ctx.insert(context::PROTOCOL.into(), "nvme".into());
            ctx.insert(context::TARGET_NQN.into(), text("target_nqn")?);
            ctx.insert(context::NVME_NGUID.into(), text("volume_nguid")?);
            let portal = get(data, "portals")
                .and_then(Value::as_array)
                .and_then(|p| p.first())
                .and_then(Value::as_array)
                .ok_or_else(|| bad("portals"))?;
            let field = |i: usize| {
                portal
                    .get(i)
                    .and_then(Value::as_text)
                    .map(str::to_string)
                    .ok_or_else(|| bad("portals[0]"))
            };
            ctx.insert(context::NVME_ADDRESS.into(), field(0)?);
            ctx.insert(context::NVME_PORT.into(), field(1)?);
        }
        other => {
            return Err(Refusal::Status(Status::internal(format!(
                "share.attach answered driver_volume_type {other:?}, which this plugin cannot stage"
            ))))
        }
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelf::client::{args, from_json};

    const KEY: &str = "a-key-of-enough-length";

    fn iscsi(chap: bool) -> Value {
        let mut data = serde_json::json!({
            "target_iqn": "iqn.2024-01.io.shelf:vol1", "target_portal": "127.0.0.1:3260",
            "target_lun": 1, "target_discovered": false, "volume_id": "v1",
            "access_mode": "rw", "discard": false, "encrypted": false});
        if chap {
            data["auth_method"] = "CHAP".into();
            data["auth_username"] = "shelf-u".into();
            data["auth_password"] = "the-chap-secret".into();
        }
        from_json(&serde_json::json!({"driver_volume_type": "iscsi", "data": data}))
    }

    fn ids(key: Option<&str>) -> For<'_> {
        For {
            volume_id: "a1:v1",
            node_id: "host=n1",
            key,
        }
    }

    #[test]
    fn iscsi_with_chap_is_sealed_and_opens_for_the_same_volume_and_node() {
        let ctx = publish_context(&iscsi(true), &ids(Some(KEY))).unwrap();
        assert_eq!(ctx[context::PROTOCOL], "iscsi");
        assert_eq!(ctx[context::TARGET_PORTAL], "127.0.0.1:3260");
        assert_eq!(ctx[context::TARGET_IQN], "iqn.2024-01.io.shelf:vol1");
        assert_eq!(ctx[context::TARGET_LUN], "1");
        assert_eq!(ctx[context::CHAP_USER], "shelf-u");
        assert!(
            ctx.values().all(|v| !v.contains("the-chap-secret")),
            "{ctx:?}"
        );
        let sealed = &ctx[context::CHAP_SECRET_SEALED];
        let bound = context::seal_binding("a1:v1", "host=n1", &ctx).unwrap();
        assert_eq!(bound.target_portal, "127.0.0.1:3260");
        assert_eq!(
            seal::open(KEY, &bound, sealed).unwrap().as_str(),
            "the-chap-secret"
        );
        // An edited context that sends the node to another portal does not open.
        let mut edited = ctx.clone();
        edited.insert(context::TARGET_PORTAL.into(), "10.6.6.6:3260".into());
        let bound = context::seal_binding("a1:v1", "host=n1", &edited).unwrap();
        assert_eq!(
            seal::open(KEY, &bound, sealed),
            Err(seal::SealError::Refused)
        );
    }

    #[test]
    fn discard_is_shelfs_word() {
        let ctx = publish_context(&iscsi(false), &ids(None)).unwrap();
        assert_eq!(ctx[context::DISCARD], "false");
        let data = serde_json::json!({
            "target_iqn": "iqn.2024-01.io.shelf:vol1", "target_portal": "127.0.0.1:3260",
            "target_lun": 1, "access_mode": "rw", "discard": true});
        let info = from_json(&serde_json::json!({"driver_volume_type": "iscsi", "data": data}));
        let ctx = publish_context(&info, &ids(None)).unwrap();
        assert_eq!(ctx[context::DISCARD], "true");
    }

    #[test]
    fn the_key_is_not_in_debug_output() {
        let shown = format!("{:?}", ids(Some(KEY)));
        assert!(
            !shown.contains(KEY) && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[test]
    fn chap_without_a_key_is_refused_and_without_chap_needs_none() {
        assert!(matches!(
            publish_context(&iscsi(true), &ids(None)),
            Err(Refusal::NoKey)
        ));
        let ctx = publish_context(&iscsi(false), &ids(None)).unwrap();
        assert!(!ctx.contains_key(context::CHAP_SECRET_SEALED));
        match publish_context(&iscsi(true), &ids(Some("short"))) {
            Err(Refusal::Status(s)) => assert!(!s.message().contains("the-chap-secret")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nfs_and_nvme_shapes_map_to_their_keys() {
        let nfs = from_json(&serde_json::json!({"driver_volume_type": "nfs", "data": {
            "export": "10.0.0.1:/srv/v1", "name": "volume", "options": null,
            "volume_id": "v1", "access_mode": "ro"}}));
        let ctx = publish_context(&nfs, &ids(None)).unwrap();
        assert_eq!(ctx[context::NFS_EXPORT], "10.0.0.1:/srv/v1");
        assert_eq!(ctx[context::ACCESS_MODE], "ro");
        let nvme = from_json(
            &serde_json::json!({"driver_volume_type": "nvmeof", "data": {
            "target_nqn": "nqn.2024-01.io.shelf:vol1", "portals": [["10.0.0.1", "4420", "tcp"]],
            "vol_uuid": "v1", "volume_nguid": "v1", "ns_id": "1", "host_nqn": "nqn.x",
            "volume_id": "v1", "access_mode": "rw"}}),
        );
        let ctx = publish_context(&nvme, &ids(None)).unwrap();
        assert_eq!(ctx[context::PROTOCOL], "nvme");
        assert_eq!(ctx[context::NVME_ADDRESS], "10.0.0.1");
        assert_eq!(ctx[context::NVME_PORT], "4420");
        assert_eq!(ctx[context::NVME_NGUID], "v1");
        assert_eq!(
            ctx[context::DISCARD],
            "false",
            "absent: the target does not unmap"
        );
        let odd = args(vec![("driver_volume_type", Value::Text("fc".into()))]);
        assert!(publish_context(&odd, &ids(None)).is_err());
    }
}
