//! NVMe over TCP's rules (driver: [`super::nvmet`]): one subsystem per export, named
//! `<nqn_prefix>:<share-name>`, its static list and the connector carrying host NQNs, no
//! per-host read-only, and `connection_info` as os-brick's NVMeOFConnector reads it
//! (`driver_volume_type: "nvmeof"`, the "new" format of its `NVMeOFConnProps`: `target_nqn`,
//! `portals` as `[address, port, "tcp"]`, `vol_uuid` that it finds the device by).

use ciborium::Value;
use serde::Serialize;

use super::protocol::{
    check_clients, cinder_shape, name_suffix, refuse_nfs_options, Attaching, Naming, OptionArgs,
    ProtocolHandler,
};
use crate::error::{Error, Result};
use crate::model::{
    validate_connector, validate_nqn, Access, Connector, Driver, ExportOptions, Protocol,
};

/// NVMe over TCP.
#[derive(Debug, Clone)]
pub struct Nvme {
    /// `nvme.nqn_prefix`.
    pub nqn_prefix: String,
    /// `nvme.portal`, as address and port.
    pub portal: std::net::SocketAddr,
    /// `nvme.driver`.
    pub driver: Driver,
}

/// `connection_info.data` of an NVMe/TCP attach.
#[derive(Debug, Serialize)]
struct NvmeData<'a> {
    target_nqn: &'a str,
    portals: Vec<(String, String, &'a str)>,
    vol_uuid: &'a str,
    volume_nguid: &'a str,
    ns_id: String,
    host_nqn: &'a str,
    volume_id: &'a str,
    access_mode: &'a str,
    discard: bool,
    encrypted: bool,
}

impl ProtocolHandler for Nvme {
    fn protocol(&self) -> Protocol {
        Protocol::Nvme
    }

    fn title(&self) -> &'static str {
        "NVMe/TCP"
    }

    fn default_driver(&self) -> Driver {
        self.driver
    }

    fn export_options(&self, a: &OptionArgs) -> Result<ExportOptions> {
        let clients = check_clients(a.clients.clone().unwrap_or_default(), validate_nqn)?;
        refuse_nfs_options(a)?;
        if a.chap.is_some() {
            return Err(Error::Invalid(
                "chap is an iSCSI option (NVMe/TCP exports admit hosts by NQN)".into(),
            ));
        }
        Ok(ExportOptions {
            clients,
            ..self.attach_options()
        })
    }

    fn attach_options(&self) -> ExportOptions {
        ExportOptions {
            chap: false,
            ..ExportOptions::default()
        }
    }

    fn connector_client(&self, c: &Connector) -> Result<String> {
        validate_connector(c)?;
        let nqn = c
            .nqn
            .as_deref()
            .ok_or_else(|| Error::Invalid("an NVMe attach needs connector.nqn".into()))?;
        validate_nqn(nqn)?;
        Ok(nqn.to_string())
    }

    fn check_mode(&self, mode: Access) -> Result<()> {
        if mode == Access::Ro {
            return Err(Error::Unsupported(
                "read-only attach is not supported over NVMe/TCP (nvmet has no per-host \
                 read-only namespaces); use NFS"
                    .into(),
            ));
        }
        Ok(())
    }

    fn naming(&self, share_id: &str, share_name: &str, _export_dir: &str) -> Naming {
        let prefix = &self.nqn_prefix;
        Naming {
            targets: vec![
                format!("{prefix}:{}", name_suffix(share_name)),
                format!("{prefix}:{share_id}"),
            ],
            fsid: false,
            credentials: None,
        }
    }

    fn connection_info(&self, a: &Attaching<'_>) -> Result<Value> {
        cinder_shape(
            "nvmeof",
            &NvmeData {
                target_nqn: &a.export.target,
                portals: vec![(
                    self.portal.ip().to_string(),
                    self.portal.port().to_string(),
                    "tcp",
                )],
                vol_uuid: a.share_id,
                volume_nguid: a.share_id,
                ns_id: super::nvmet::NSID.to_string(),
                host_nqn: a.client,
                volume_id: a.share_id,
                access_mode: a.mode.as_str(),
                discard: a.discard,
                encrypted: false,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Export, ShareState};

    const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3ccabcd";

    fn nvme() -> Nvme {
        Nvme {
            nqn_prefix: "nqn.2026-12.io.shelf".into(),
            portal: "192.0.2.5:4420".parse().unwrap(),
            driver: Driver::Nvmet,
        }
    }

    #[test]
    fn connectors_need_a_host_nqn() {
        let mut c = Connector {
            ip: None,
            initiator: Some("iqn.1993-08.org.debian:01:abc".into()),
            nqn: Some(HOST.into()),
            host: "compute-1".into(),
        };
        assert_eq!(nvme().connector_client(&c).unwrap(), HOST);
        c.nqn = Some("nqn.2014-08.org.nvmexpress:uuid:../x".into());
        assert!(nvme().connector_client(&c).is_err());
        c.nqn = None;
        let e = nvme().connector_client(&c).unwrap_err();
        assert!(e.to_string().contains("connector.nqn"), "{e}");
        assert!(nvme().check_mode(Access::Ro).is_err());
    }

    #[test]
    fn options_are_host_nqns_only() {
        let ok = nvme()
            .export_options(&OptionArgs {
                clients: Some(vec![HOST.into()]),
                ..OptionArgs::default()
            })
            .unwrap();
        assert_eq!(
            ok,
            ExportOptions {
                clients: vec![HOST.into()],
                ..nvme().attach_options()
            }
        );
        for bad in [
            OptionArgs {
                clients: Some(vec!["iqn.1993-08.org.debian:01:abc".into()]),
                ..OptionArgs::default()
            },
            OptionArgs {
                chap: Some(true),
                ..OptionArgs::default()
            },
            OptionArgs {
                access: Some(Access::Ro),
                ..OptionArgs::default()
            },
        ] {
            assert!(nvme().export_options(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn connection_info_is_what_os_brick_reads() {
        let share = "0b9f3c1e-7a52-4d7e-9d1c-3f5e2a8b6c4d";
        let export = Export {
            id: "e".into(),
            share: share.into(),
            share_name: "vol1".into(),
            protocol: Protocol::Nvme,
            driver: Driver::Nvmet,
            state: ShareState::Available,
            options: nvme().attach_options(),
            target: "nqn.2026-12.io.shelf:vol1".into(),
            tid: None,
            fsid: None,
            chap_user: None,
            attached: vec![],
            created_at: 0,
        };
        let v = nvme()
            .connection_info(&Attaching {
                share_id: share,
                export: &export,
                chap_secret: None,
                mode: Access::Rw,
                client: HOST,
                client_path: &export.target,
                discard: true,
            })
            .unwrap();
        let json: serde_json::Value = v.deserialized().unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "driver_volume_type": "nvmeof",
                "data": {
                    "target_nqn": "nqn.2026-12.io.shelf:vol1",
                    "portals": [["192.0.2.5", "4420", "tcp"]],
                    "vol_uuid": share,
                    "volume_nguid": share,
                    "ns_id": "1",
                    "host_nqn": HOST,
                    "volume_id": share,
                    "access_mode": "rw",
                    "discard": true,
                    "encrypted": false,
                }
            })
        );
    }
}
