//! The userspace (KVM) path: a share's iSCSI export, granted to the initiator KVM
//! presents, as QEMU's `iscsi://` URI.

use ciborium::Value;
use shelf::client::{get, get_text, get_u64, Client};
use shelf::model::{Connector, Protocol};
use shelf::proto::{AttachArgs, Request, ShareFilter};

use super::{remote, Run};

impl Run {
    pub(super) fn iscsi_export(&self, c: &mut Client, share_id: &str) -> Result<bool, String> {
        let list = c
            .request(&Request::ExportList(ShareFilter {
                share: Some(share_id.into()),
                pool: None,
            }))
            .map_err(remote)?;
        Ok(list
            .as_array()
            .is_some_and(|a| a.iter().any(|e| get_text(e, "protocol") == Some("iscsi"))))
    }

    /// `iscsi://[user%secret@]portal/iqn/lun` for KVM when `EXTP_INITIATOR` is set and the
    /// share is exported over iSCSI (granting that initiator through `share.attach`).
    pub(super) fn iscsi_uri(
        &self,
        c: &mut Client,
        share_id: &str,
    ) -> Result<Option<String>, String> {
        let Some(initiator) = self.env.param("initiator") else {
            return if self.env.userspace()? {
                Err("EXTP_INITIATOR is not set".into())
            } else {
                Ok(None)
            };
        };
        if !self.iscsi_export(c, share_id)? {
            return if self.env.userspace()? {
                Err("the share has no iSCSI export".into())
            } else {
                Ok(None)
            };
        }
        let a = iscsi_attach_args(share_id, initiator);
        let r = c.request(&Request::ShareAttach(a)).map_err(remote)?;
        let data = get(&r, "connection_info")
            .and_then(|ci| get(ci, "data"))
            .ok_or("share.attach gave no connection_info")?;
        Ok(Some(uri_of(data)?))
    }
}

/// Attach or detach `share` over iSCSI for this node and the initiator KVM presents.
pub(super) fn iscsi_attach_args(share: &str, initiator: &str) -> AttachArgs {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    AttachArgs {
        share: share.into(),
        pool: None,
        connector: Connector {
            host,
            ip: None,
            initiator: Some(initiator.into()),
            nqn: None,
        },
        protocol: Some(Protocol::Iscsi),
        mode: None,
    }
}

/// Percent-encode all but RFC 3986's unreserved characters.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// QEMU's iSCSI URI from an iSCSI `connection_info.data`.
fn uri_of(data: &Value) -> Result<String, String> {
    let portal = get_text(data, "target_portal").ok_or("no target_portal")?;
    let iqn = get_text(data, "target_iqn").ok_or("no target_iqn")?;
    let lun = get_u64(data, "target_lun").ok_or("no target_lun")?;
    let auth = match (
        get_text(data, "auth_username"),
        get_text(data, "auth_password"),
    ) {
        (Some(u), Some(p)) => format!("{}%{}@", pct(u), pct(p)),
        _ => String::new(),
    };
    Ok(format!("iscsi://{auth}{portal}/{iqn}/{lun}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelf::client::args;

    fn text(s: &str) -> Value {
        Value::Text(s.to_string())
    }

    #[test]
    fn builds_qemu_iscsi_uris() {
        let data = args(vec![
            ("target_portal", text("127.0.0.1:3260")),
            ("target_iqn", text("iqn.2026-11.org.example.shelf:vol1")),
            ("target_lun", Value::Integer(1.into())),
            ("auth_username", text("shelf-ab")),
            ("auth_password", text("p@ss/w%rd")),
        ]);
        assert_eq!(
            uri_of(&data).unwrap(),
            "iscsi://shelf-ab%p%40ss%2Fw%25rd@127.0.0.1:3260/iqn.2026-11.org.example.shelf:vol1/1"
        );
        let open = args(vec![
            ("target_portal", text("10.0.0.1:3260")),
            ("target_iqn", text("iqn.x:y")),
            ("target_lun", Value::Integer(1.into())),
        ]);
        assert_eq!(uri_of(&open).unwrap(), "iscsi://10.0.0.1:3260/iqn.x:y/1");
        assert!(uri_of(&args(vec![])).is_err());
    }
}
