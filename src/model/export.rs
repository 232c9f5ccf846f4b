//! Exports (NFS, iSCSI, NVMe/TCP), attachments and connectors, and the validation of everything a
//! client can put into an exports line or a target ACL.

use serde::{Deserialize, Serialize};

use super::{Invalid, ShareState};

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
    /// The host's IP address (used as the NFS client).
    #[serde(default)]
    pub ip: Option<String>,
    /// The host's iSCSI initiator IQN.
    #[serde(default)]
    pub initiator: Option<String>,
    /// The host's NVMe qualified name (its host NQN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nqn: Option<String>,
    /// The host's name.
    pub host: String,
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

const CLIENT_MAX: usize = 255;

/// Check an NFS client spec (host, IP, CIDR network, wildcard or @netgroup). Anything that
/// could end the entry or start another (spaces, parentheses, commas, quotes, newlines,
/// `#`, backslash) is refused.
pub fn validate_nfs_client(c: &str) -> Result<(), Invalid> {
    if c.is_empty() || c.len() > CLIENT_MAX {
        return Err(Invalid::new(format!(
            "NFS client must be 1 to {CLIENT_MAX} bytes"
        )));
    }
    if let Some(bad) = c
        .chars()
        .find(|ch| !(ch.is_ascii_alphanumeric() || ".-_*?/:@[]".contains(*ch)))
    {
        return Err(Invalid::new(format!(
            "NFS client {:?} contains {bad:?}; only letters, digits and . - _ * ? / : @ [ ] are allowed",
            c.chars().take(64).collect::<String>()
        )));
    }
    if c.starts_with('-') {
        return Err(Invalid::new(format!(
            "NFS client {c:?} must not start with '-'"
        )));
    }
    Ok(())
}

/// An attach adds exactly one host: without `ip`, `connector.host` becomes the NFS client,
/// so it must be a host name, never a wildcard (`*`), a network (`10.0.0.0/8`) or a
/// netgroup (`@all`), which `validate_nfs_client` allows in an export's static list but
/// which would open the export to many hosts (`*` to the world) on one attach.
pub fn validate_single_host(host: &str) -> Result<(), Invalid> {
    let single = host
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || ".-_".contains(ch))
        && host.starts_with(|ch: char| ch.is_ascii_alphanumeric());
    if single {
        return Ok(());
    }
    Err(Invalid::new(format!(
        "connector.host {:?} is not a single host name (letters, digits, '.', '-', '_'); \
         wildcards, networks and netgroups cannot be attached: give connector.ip or a host name",
        host.chars().take(64).collect::<String>()
    )))
}

/// Check an iSCSI initiator or target name: `iqn.YYYY-MM.naming-authority[:unique]`,
/// `eui.` + 16 hex digits, or `naa.` + 16 or 32 hex digits (RFC 3720 §3.2.6.3), lower case.
pub fn validate_iqn(name: &str) -> Result<(), Invalid> {
    let err = |why: &str| {
        Invalid::new(format!(
            "iSCSI name {:?} is invalid: {why}",
            name.chars().take(80).collect::<String>()
        ))
    };
    if name.len() > 223 {
        return Err(err("longer than 223 bytes"));
    }
    if let Some(rest) = name.strip_prefix("iqn.") {
        let date = rest.get(..7).ok_or_else(|| err("no date"))?;
        let b = date.as_bytes();
        let date_ok = b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b[5..].iter().all(u8::is_ascii_digit);
        if !date_ok || rest.as_bytes().get(7) != Some(&b'.') {
            return Err(err("expected iqn.YYYY-MM.<reversed domain>[:<name>]"));
        }
        let tail = &rest[8..];
        if tail.is_empty() {
            return Err(err("no naming authority"));
        }
        if let Some(bad) = tail
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || ".-:".contains(*c)))
        {
            return Err(err(&format!(
                "contains {bad:?} (lower-case letters, digits, . - : only)"
            )));
        }
        return Ok(());
    }
    for (prefix, lens) in [("eui.", &[16usize][..]), ("naa.", &[16, 32][..])] {
        if let Some(hex) = name.strip_prefix(prefix) {
            if lens.contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Ok(());
            }
            return Err(err("wrong number of hex digits"));
        }
    }
    Err(err("must start with iqn., eui. or naa."))
}

/// Check what every connector carries, whatever the protocol: `host` (1 to 255 printable
/// bytes) and, when given, `ip` (an IP address). Each protocol then checks the field it
/// uses (`crate::export::protocol`).
pub fn validate_connector(c: &Connector) -> Result<(), Invalid> {
    if c.host.is_empty() || c.host.len() > 255 || c.host.chars().any(|ch| ch.is_control()) {
        return Err(Invalid::new(
            "connector.host must be 1 to 255 printable bytes",
        ));
    }
    if let Some(ip) = &c.ip {
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| Invalid::new(format!("connector.ip {ip:?} is not an IP address")))?;
    }
    Ok(())
}

/// The NFS client an attach adds: the connector's IP, else its host name (which must then
/// be one host, [`validate_single_host`]).
pub fn nfs_connector_client(c: &Connector) -> Result<String, Invalid> {
    validate_connector(c)?;
    let client = c.ip.clone().unwrap_or_else(|| c.host.clone());
    validate_nfs_client(&client)?;
    if c.ip.is_none() {
        validate_single_host(&c.host)?;
    }
    Ok(client)
}

/// Check an NVMe qualified name (NVMe Base Specification §4.5): `nqn.YYYY-MM.<reversed
/// domain>:<name>` or `nqn.2014-08.org.nvmexpress:uuid:<uuid>`, at most 223 bytes. As it
/// becomes a configfs directory name, only letters, digits and `. - : _` are accepted.
pub fn validate_nqn(name: &str) -> Result<(), Invalid> {
    let err = |why: &str| {
        Invalid::new(format!(
            "NVMe name {:?} is invalid: {why}",
            name.chars().take(80).collect::<String>()
        ))
    };
    if name.len() > 223 {
        return Err(err("longer than 223 bytes"));
    }
    let rest = name
        .strip_prefix("nqn.")
        .ok_or_else(|| err("must start with nqn."))?;
    let b = rest.as_bytes();
    let date_ok = b.len() > 8
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'.';
    if !date_ok {
        return Err(err("expected nqn.YYYY-MM.<reversed domain>:<name>"));
    }
    if let Some(bad) = rest
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ".-:_".contains(*c)))
    {
        return Err(err(&format!(
            "contains {bad:?} (letters, digits, . - : _ only)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nfs_clients() {
        for ok in [
            "127.0.0.1",
            "10.0.0.0/8",
            "*.example.com",
            "host-1",
            "@netgroup",
            "fe80::1",
            "[::1]",
        ] {
            assert!(validate_nfs_client(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a(rw)",
            "a,b",
            "a\nb",
            "a\"b",
            "a#b",
            "a\\b",
            "-o",
            "x(rw,no_root_squash)",
            "*(rw) evil(rw)",
            "a\tb",
        ] {
            assert!(validate_nfs_client(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn iscsi_names() {
        for ok in [
            "iqn.1993-08.org.debian:01:abcdef",
            "iqn.2026-11.org.example.shelf:vol1",
            "eui.0123456789abcdef",
            "naa.0123456789abcdef",
        ] {
            assert!(validate_iqn(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "iqn.",
            "iqn.2026-1.x",
            "iqn.2026-11.",
            "iqn.2026-11.Org.Example",
            "iqn.2026-11.org ex",
            "iqn.2026-11.org.example;rm",
            "eui.123",
            "foo",
        ] {
            assert!(validate_iqn(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn connectors() {
        let c = Connector {
            ip: Some("192.0.2.10".into()),
            initiator: Some("iqn.1993-08.org.debian:01:abc".into()),
            nqn: None,
            host: "compute-1".into(),
        };
        assert_eq!(nfs_connector_client(&c).unwrap(), "192.0.2.10");
        let bad = Connector {
            ip: Some("not-an-ip".into()),
            ..c.clone()
        };
        assert!(nfs_connector_client(&bad).is_err());
        assert!(validate_connector(&bad).is_err());
        let no_host = Connector {
            host: String::new(),
            ..c
        };
        assert!(validate_connector(&no_host).is_err());
    }

    #[test]
    fn nvme_names() {
        for ok in [
            "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3ccabcd",
            "nqn.2026-12.io.shelf:vol-1",
            "nqn.2026-12.io.shelf:Vol_1",
        ] {
            assert!(validate_nqn(ok).is_ok(), "{ok}");
        }
        let long = format!("nqn.2026-12.io.shelf:{}", "a".repeat(210));
        for bad in [
            "",
            "nqn.",
            "iqn.2026-12.io.shelf:x",
            "nqn.2026-1.io",
            "nqn.2026-12.io.shelf:a/b",
            "nqn.2026-12.io.shelf:a b",
            "nqn.2026-12.io.shelf:..\n",
            long.as_str(),
        ] {
            assert!(validate_nqn(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_nfs_connector_is_one_host() {
        for host in [
            "*",
            "*.example.com",
            "10.0.0.0/8",
            "@all",
            "host?",
            "[::1]",
            "-x",
        ] {
            let c = Connector {
                host: host.into(),
                ..Connector::default()
            };
            let e = nfs_connector_client(&c).unwrap_err();
            assert!(
                e.0.contains("connector.host") || e.0.contains("NFS client"),
                "{host}: {e}"
            );
        }
        let named = Connector {
            host: "compute-1.example.com".into(),
            ..Connector::default()
        };
        assert_eq!(
            nfs_connector_client(&named).unwrap(),
            "compute-1.example.com"
        );
        // With an IP, the host is only a label.
        let with_ip = Connector {
            host: "*".into(),
            ip: Some("192.0.2.7".into()),
            initiator: None,
            nqn: None,
        };
        assert_eq!(nfs_connector_client(&with_ip).unwrap(), "192.0.2.7");
    }

    proptest! {
        #[test]
        fn accepted_clients_cannot_inject(s in "\\PC{0,40}") {
            if validate_nfs_client(&s).is_ok() {
                prop_assert!(!s.contains([' ', '(', ')', ',', '\n', '"', '#', '\\']));
            }
        }
    }
}
