//! Exports (NFS, iSCSI, NVMe/TCP), attachments and connectors, and the validation of everything a
//! client can put into an exports line or a target ACL.

use serde::{Deserialize, Serialize};

use super::ShareState;

mod clients;

pub use clients::{
    nfs_connector_client, validate_connector, validate_iqn, validate_nfs_client, validate_nqn,
    validate_single_host,
};

/// The protocol of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// NFS (the share's directory, holding its `volume` file).
    Nfs,
    /// iSCSI (the volume as LUN 1 of a target).
    Iscsi,
    /// NVMe over TCP (the volume as namespace 1 of a subsystem).
    Nvme,
}

/// What an export hands a client: the share's volume as a block device, or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// The volume itself (a LUN, a namespace).
    Block,
    /// A directory holding the volume file, or a formatted share's mount.
    Directory,
}

impl Protocol {
    /// Wire and stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Nfs => "nfs",
            Protocol::Iscsi => "iscsi",
            Protocol::Nvme => "nvme",
        }
    }

    /// Every protocol, in the order an unspecified detach looks for the connector.
    pub const ALL: [Protocol; 3] = [Protocol::Iscsi, Protocol::Nfs, Protocol::Nvme];

    /// What an export over this protocol hands out.
    pub fn medium(self) -> Medium {
        match self {
            Protocol::Nfs => Medium::Directory,
            Protocol::Iscsi | Protocol::Nvme => Medium::Block,
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "nfs" => Some(Protocol::Nfs),
            "iscsi" => Some(Protocol::Iscsi),
            "nvme" => Some(Protocol::Nvme),
            _ => None,
        }
    }
}

/// The software that serves an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// Kernel nfsd, driven through an exports file and `exportfs`.
    Kernel,
    /// nfs-ganesha, driven through an included config file and SIGHUP.
    Ganesha,
    /// The tgt userspace target, driven with `tgtadm`.
    Tgt,
    /// The kernel LIO target, driven with `targetcli`.
    Lio,
    /// The kernel NVMe target, driven through configfs.
    Nvmet,
}

impl Driver {
    /// Wire and stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Kernel => "kernel",
            Driver::Ganesha => "ganesha",
            Driver::Tgt => "tgt",
            Driver::Lio => "lio",
            Driver::Nvmet => "nvmet",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "kernel" => Some(Driver::Kernel),
            "ganesha" => Some(Driver::Ganesha),
            "tgt" => Some(Driver::Tgt),
            "lio" => Some(Driver::Lio),
            "nvmet" => Some(Driver::Nvmet),
            _ => None,
        }
    }

    /// The protocol this driver serves.
    pub fn protocol(self) -> Protocol {
        match self {
            Driver::Kernel | Driver::Ganesha => Protocol::Nfs,
            Driver::Tgt | Driver::Lio => Protocol::Iscsi,
            Driver::Nvmet => Protocol::Nvme,
        }
    }
}

/// Read-write or read-only access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Read and write (default).
    #[default]
    Rw,
    /// Read only.
    Ro,
}

impl Access {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Rw => "rw",
            Access::Ro => "ro",
        }
    }
}

/// The settings of an export, as given at creation and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportOptions {
    /// NFS: the hosts, networks or wildcards that may mount it (besides attached hosts).
    /// iSCSI: the initiator IQNs allowed (besides attached initiators).
    pub clients: Vec<String>,
    /// Read-write or read-only (NFS).
    pub access: Access,
    /// NFS `sync` (default) or `async`.
    pub sync: bool,
    /// NFS `root_squash` (default) or `no_root_squash`.
    pub root_squash: bool,
    /// iSCSI: require CHAP (default).
    pub chap: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            clients: Vec::new(),
            access: Access::Rw,
            sync: true,
            root_squash: true,
            chap: true,
        }
    }
}

/// An export of a share, as `export.show` reports it (never with its CHAP secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Export {
    /// UUID.
    pub id: String,
    /// The share's id.
    pub share: String,
    /// The share's name.
    pub share_name: String,
    /// NFS or iSCSI.
    pub protocol: Protocol,
    /// Which software serves it.
    pub driver: Driver,
    /// Life-cycle state.
    pub state: ShareState,
    /// Its settings.
    pub options: ExportOptions,
    /// NFS: the exported path. iSCSI: the target IQN.
    pub target: String,
    /// tgt's target id (shelfd allocates and remembers it).
    pub tid: Option<u32>,
    /// NFS: the stable fsid.
    pub fsid: Option<u32>,
    /// iSCSI: the CHAP user name (the secret is only given to attaching hosts).
    pub chap_user: Option<String>,
    /// Clients and initiators added by attachments, with the access each was given.
    pub attached: Vec<Attached>,
    /// Unix time of creation.
    pub created_at: i64,
}

/// A client or initiator that an attachment added to an export's access list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    /// The initiator IQN or NFS client.
    pub client: String,
    /// The access it was given.
    pub mode: Access,
}

impl Export {
    /// Everyone allowed, with their access: the static list (at the export's access) and
    /// the attached clients (at the lesser of theirs and the export's), without duplicates.
    pub fn allowed_with_access(&self) -> Vec<(String, Access)> {
        let mut all: Vec<(String, Access)> = self
            .options
            .clients
            .iter()
            .map(|c| (c.clone(), self.options.access))
            .collect();
        for a in &self.attached {
            let mode = if a.mode == Access::Ro || self.options.access == Access::Ro {
                Access::Ro
            } else {
                Access::Rw
            };
            match all.iter_mut().find(|(c, _)| *c == a.client) {
                Some(existing) => {
                    if mode == Access::Rw {
                        existing.1 = Access::Rw;
                    }
                }
                None => all.push((a.client.clone(), mode)),
            }
        }
        all
    }

    /// Everyone allowed (names only).
    pub fn allowed(&self) -> Vec<String> {
        self.allowed_with_access()
            .into_iter()
            .map(|(c, _)| c)
            .collect()
    }
}

/// The host side of an attach, as Nova's connector describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Connector {
    /// The host's name (first on the wire, as clients send it).
    pub host: String,
    /// The host's IP address (used as the NFS client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The host's iSCSI initiator IQN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<String>,
    /// The host's NVMe qualified name (its host NQN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nqn: Option<String>,
}

/// A recorded attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// UUID.
    pub id: String,
    /// The share's id.
    pub share: String,
    /// The share's name.
    pub share_name: String,
    /// NFS or iSCSI.
    pub protocol: Protocol,
    /// What was added to the ACL: the initiator IQN or the NFS client address.
    pub client: String,
    /// The connector's host name.
    pub host: String,
    /// The connector's IP.
    pub ip: Option<String>,
    /// The connector's initiator.
    pub initiator: Option<String>,
    /// `rw` or `ro`.
    pub mode: Access,
    /// Unix time of the attach.
    pub created_at: i64,
}
