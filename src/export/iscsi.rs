//! iSCSI's rules (drivers: [`super::tgt`], [`super::lio`]): targets are named
//! `<iqn_prefix>:<share-name>`, the static list and the connector carry initiator IQNs,
//! every export gets a CHAP account, and `connection_info` is os-brick's `iscsi` shape.

use ciborium::Value;
use serde::Serialize;

use super::protocol::{
    check_clients, cinder_shape, name_suffix, refuse_nfs_options, Attaching, Naming, OptionArgs,
    ProtocolHandler,
};
use crate::error::{Error, Result};
use crate::model::{
    validate_connector, validate_iqn, Access, Connector, Driver, ExportOptions, Protocol,
};

/// The prefix of the CHAP user names shelfd creates (accounts without it are never touched,
/// by either iSCSI driver).
pub const CHAP_USER_PREFIX: &str = "shelf-";

/// A random string of `n` letters and digits (CHAP user suffixes and secrets).
pub fn random_token(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in uuid::Uuid::new_v4().as_bytes() {
            if out.len() < n {
                out.push(ALPHABET[*b as usize % ALPHABET.len()] as char);
            }
        }
    }
    out
}

/// iSCSI.
#[derive(Debug, Clone)]
pub struct Iscsi {
    /// `iscsi.iqn_prefix`.
    pub iqn_prefix: String,
    /// `iscsi.portal` (`connection_info.data.target_portal`).
    pub portal: String,
    /// `iscsi.driver`.
    pub driver: Driver,
}

/// `connection_info.data` of an iSCSI attach, in os-brick's field order.
#[derive(Debug, Serialize)]
struct IscsiData<'a> {
    target_iqn: &'a str,
    target_portal: &'a str,
    target_lun: u32,
    target_discovered: bool,
    volume_id: &'a str,
    access_mode: &'a str,
    discard: bool,
    encrypted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_password: Option<&'a str>,
}

impl ProtocolHandler for Iscsi {
    fn protocol(&self) -> Protocol {
        Protocol::Iscsi
    }

    fn title(&self) -> &'static str {
        "iSCSI"
    }

    fn default_driver(&self) -> Driver {
        self.driver
    }

    fn export_options(&self, a: &OptionArgs) -> Result<ExportOptions> {
        let clients = check_clients(a.clients.clone().unwrap_or_default(), validate_iqn)?;
        refuse_nfs_options(a)?;
        Ok(ExportOptions {
            clients,
            chap: a.chap.unwrap_or(true),
            ..ExportOptions::default()
        })
    }

    fn connector_client(&self, c: &Connector) -> Result<String> {
        validate_connector(c)?;
        let i = c
            .initiator
            .as_deref()
            .ok_or_else(|| Error::Invalid("an iSCSI attach needs connector.initiator".into()))?;
        validate_iqn(i)?;
        Ok(i.to_string())
    }

    fn check_mode(&self, mode: Access) -> Result<()> {
        if mode == Access::Ro {
            return Err(Error::Unsupported(
                "read-only attach is not supported over iSCSI (tgt has no per-initiator read-only LUNs); use NFS"
                    .into(),
            ));
        }
        Ok(())
    }

    fn naming(&self, share_id: &str, share_name: &str, _export_dir: &str) -> Naming {
        let prefix = &self.iqn_prefix;
        Naming {
            targets: vec![
                format!("{prefix}:{}", name_suffix(share_name)),
                format!("{prefix}:{share_id}"),
            ],
            fsid: false,
            credentials: Some((
                format!("{CHAP_USER_PREFIX}{}", random_token(12)),
                random_token(16),
            )),
        }
    }

    fn connection_info(&self, a: &Attaching<'_>) -> Result<Value> {
        let e = a.export;
        let chap = e.options.chap;
        cinder_shape(
            "iscsi",
            &IscsiData {
                target_iqn: &e.target,
                target_portal: &self.portal,
                target_lun: 1,
                target_discovered: false,
                volume_id: a.share_id,
                access_mode: a.mode.as_str(),
                discard: a.discard,
                encrypted: false,
                auth_method: chap.then_some("CHAP"),
                auth_username: chap.then(|| e.chap_user.as_deref().unwrap_or("")),
                auth_password: chap.then(|| a.chap_secret.unwrap_or("")),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iscsi() -> Iscsi {
        Iscsi {
            iqn_prefix: "iqn.2026-11.org.example.shelf".into(),
            portal: "127.0.0.1:3260".into(),
            driver: Driver::Tgt,
        }
    }

    #[test]
    fn connectors_need_an_initiator() {
        let c = Connector {
            ip: Some("192.0.2.10".into()),
            initiator: Some("iqn.1993-08.org.debian:01:abc".into()),
            nqn: None,
            host: "compute-1".into(),
        };
        assert_eq!(
            iscsi().connector_client(&c).unwrap(),
            "iqn.1993-08.org.debian:01:abc"
        );
        let no_iqn = Connector {
            initiator: None,
            ..c.clone()
        };
        assert!(iscsi().connector_client(&no_iqn).is_err());
        let bad_ip = Connector {
            ip: Some("x".into()),
            ..c
        };
        assert!(iscsi().connector_client(&bad_ip).is_err());
    }

    #[test]
    fn nfs_options_are_refused() {
        let a = OptionArgs {
            sync: Some(false),
            ..OptionArgs::default()
        };
        assert!(iscsi().export_options(&a).is_err());
        let ok = iscsi().export_options(&OptionArgs::default()).unwrap();
        assert!(ok.chap && ok.clients.is_empty());
    }

    #[test]
    fn targets_prefer_the_share_name() {
        let n = iscsi().naming("0b9f3c1e-7a52-4d7e-9d1c-3f5e2a8b6c4d", "Vol_1", "/x");
        assert_eq!(n.targets[0], "iqn.2026-11.org.example.shelf:vol-1");
        let (user, secret) = n.credentials.unwrap();
        assert!(user.starts_with(CHAP_USER_PREFIX) && user.len() == 18);
        assert_eq!(secret.len(), 16);
    }
}
