//! What a protocol knows, behind one trait: how its exports are named, which clients and
//! options `export.create` takes, what a connector must carry to attach, and the
//! `connection_info` (Cinder's shape) an attach answers with. The engine never asks which
//! protocol it holds: it asks the protocol's [`ProtocolHandler`]. One impl per protocol
//! ([`super::iscsi`], [`super::nfs`], [`super::nvme`]), registered in [`super::registry`].

use ciborium::Value;
use serde::Serialize;

use super::BoxFut;
use crate::error::{Error, Result};
use crate::model::{Access, Connector, Driver, Export, ExportOptions, Protocol};

/// The protocol-specific arguments of `export.create`, as given (None: not given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionArgs {
    /// The clients allowed besides attached ones.
    pub clients: Option<Vec<String>>,
    /// NFS: read-write or read-only.
    pub access: Option<Access>,
    /// NFS: `sync`.
    pub sync: Option<bool>,
    /// NFS: `root_squash`.
    pub root_squash: Option<bool>,
    /// iSCSI: CHAP.
    pub chap: Option<bool>,
}

/// The most clients one export's static list may hold.
pub const MAX_CLIENTS: usize = 256;

/// What an attach's answer is built from.
#[derive(Debug, Clone, Copy)]
pub struct Attaching<'a> {
    /// The share's id (Cinder's `volume_id`).
    pub share_id: &'a str,
    /// The export attached through.
    pub export: &'a Export,
    /// Its CHAP secret (iSCSI), given only to attaching hosts.
    pub chap_secret: Option<&'a str>,
    /// The access given.
    pub mode: Access,
    /// The ACL entry the attach added (initiator IQN, NFS client, host NQN).
    pub client: &'a str,
    /// Where the client finds the export ([`super::Exporter::client_path`]).
    pub client_path: &'a str,
    /// Whether the export's target really unmaps/deallocates for this volume
    /// ([`super::Exporter::discards`]): `connection_info.data.discard`.
    pub discard: bool,
}

/// How a new export is named and what it is given, decided by its protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Naming {
    /// Target names in order of preference; the first no other export has is taken (the
    /// last one if all are: it is unique by construction).
    pub targets: Vec<String>,
    /// Whether the export gets an NFS fsid.
    pub fsid: bool,
    /// The CHAP user and secret it gets, if any.
    pub credentials: Option<(String, String)>,
}

/// One protocol's rules.
pub trait ProtocolHandler: Send + Sync + std::fmt::Debug {
    /// Which protocol this is.
    fn protocol(&self) -> Protocol;
    /// Its name in messages (`iSCSI`, `NFS`, `NVMe/TCP`).
    fn title(&self) -> &'static str;
    /// The driver an export gets when `export.create` or an attach names none.
    fn default_driver(&self) -> Driver;
    /// Check `export.create`'s protocol-specific arguments and give the export's options.
    fn export_options(&self, args: &OptionArgs) -> Result<ExportOptions>;
    /// The options of an export that an attach creates.
    fn attach_options(&self) -> ExportOptions {
        ExportOptions::default()
    }
    /// Check a connector and give the one ACL entry an attach adds for it.
    fn connector_client(&self, connector: &Connector) -> Result<String>;
    /// Whether the connector carries what this protocol needs (an unspecified attach
    /// prefers an existing export the connector can use).
    fn fits(&self, connector: &Connector) -> bool {
        self.connector_client(connector).is_ok()
    }
    /// Refuse an access mode the protocol cannot give one host.
    fn check_mode(&self, mode: Access) -> Result<()> {
        let _ = mode;
        Ok(())
    }
    /// Check, before it is granted, that a new client can be admitted (an NFS host name
    /// must resolve). May take time; runs off the event loop.
    fn admit<'a>(&'a self, client: &'a str) -> BoxFut<'a, Result<()>> {
        let _ = client;
        Box::pin(async { Ok(()) })
    }
    /// How a new export of share `share_id` (named `share_name`) is named; `export_dir`
    /// is the directory an NFS export publishes.
    fn naming(&self, share_id: &str, share_name: &str, export_dir: &str) -> Naming;
    /// The `connection_info` of an attach.
    fn connection_info(&self, a: &Attaching<'_>) -> Result<Value>;
}

/// Check a static client list with `check` (at most [`MAX_CLIENTS`]).
pub fn check_clients(
    clients: Vec<String>,
    check: impl Fn(&str) -> std::result::Result<(), crate::model::Invalid>,
) -> Result<Vec<String>> {
    if clients.len() > MAX_CLIENTS {
        return Err(Error::Invalid(format!(
            "at most {MAX_CLIENTS} clients per export"
        )));
    }
    for c in &clients {
        check(c)?;
    }
    Ok(clients)
}

/// Refuse the NFS-only options on a block protocol.
pub fn refuse_nfs_options(args: &OptionArgs) -> Result<()> {
    if args.access.is_some() || args.sync.is_some() || args.root_squash.is_some() {
        return Err(Error::Invalid(
            "access, sync and root_squash are NFS options".into(),
        ));
    }
    Ok(())
}

/// `{driver_volume_type, data}` as Cinder's connectors read it.
pub fn cinder_shape<T: Serialize>(driver_volume_type: &str, data: &T) -> Result<Value> {
    #[derive(Serialize)]
    struct Shape<'a, T> {
        driver_volume_type: &'a str,
        data: &'a T,
    }
    Value::serialized(&Shape {
        driver_volume_type,
        data,
    })
    .map_err(|e| Error::Internal(format!("encoding connection_info: {e}")))
}

/// An IQN- or NQN-safe form of a share name: lower case, `_` as `-`.
pub fn name_suffix(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// The protocol an attach or detach is about when none is asked for: NFS for a
/// filesystem share; else an existing iSCSI export; else an existing NVMe export when the
/// connector carries an NQN; else, with no export, iSCSI unless the connector carries only
/// an NQN; else the share's other export (NFS, or NVMe).
pub fn choose(existing: &[Protocol], connector: &Connector, filesystem: bool) -> Protocol {
    if filesystem {
        return Protocol::Nfs;
    }
    let has = |p| existing.contains(&p);
    if has(Protocol::Iscsi) {
        return Protocol::Iscsi;
    }
    if has(Protocol::Nvme) && connector.nqn.is_some() {
        return Protocol::Nvme;
    }
    if existing.is_empty() {
        if connector.initiator.is_none() && connector.nqn.is_some() {
            return Protocol::Nvme;
        }
        return Protocol::Iscsi;
    }
    if has(Protocol::Nfs) {
        Protocol::Nfs
    } else {
        Protocol::Nvme
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(initiator: bool, nqn: bool) -> Connector {
        Connector {
            ip: None,
            initiator: initiator.then(|| "iqn.1993-08.org.debian:01:abc".into()),
            nqn: nqn.then(|| "nqn.2014-08.org.nvmexpress:uuid:x".into()),
            host: "h".into(),
        }
    }

    #[test]
    fn an_unspecified_attach_keeps_its_old_choices() {
        use Protocol::*;
        // As before NVMe: iSCSI if there is an iSCSI export or none, else NFS.
        assert_eq!(choose(&[], &conn(true, false), false), Iscsi);
        assert_eq!(choose(&[Iscsi, Nfs], &conn(true, false), false), Iscsi);
        assert_eq!(choose(&[Nfs], &conn(true, false), false), Nfs);
        assert_eq!(choose(&[Iscsi], &conn(true, true), true), Nfs);
    }

    #[test]
    fn nvme_is_chosen_for_an_nqn_and_an_nvme_export() {
        use Protocol::*;
        assert_eq!(choose(&[Nvme], &conn(true, true), false), Nvme);
        assert_eq!(choose(&[Nvme, Nfs], &conn(true, true), false), Nvme);
        assert_eq!(choose(&[Iscsi, Nvme], &conn(true, true), false), Iscsi);
        assert_eq!(choose(&[], &conn(false, true), false), Nvme);
        assert_eq!(choose(&[], &conn(true, true), false), Iscsi);
        // Without an NQN the NVMe export is not picked over NFS.
        assert_eq!(choose(&[Nvme, Nfs], &conn(true, false), false), Nfs);
        assert_eq!(choose(&[Nvme], &conn(true, false), false), Nvme);
    }

    #[test]
    fn clients_are_bounded() {
        let many = vec!["a".to_string(); MAX_CLIENTS + 1];
        assert!(check_clients(many, |_| Ok(())).is_err());
        assert!(check_clients(vec!["a".into()], crate::model::validate_iqn).is_err());
    }
}
