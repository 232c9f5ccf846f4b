//! The nvmet driver's model of configfs: what configfs holds ([`Subsystem`], [`Port`], read
//! back each time), what an export wants ([`desired`]), and the plans ([`plan_converge`],
//! [`plan_remove`], [`plan_port`]) that take one to the other as lists of configfs [`Op`]s.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::export::ExportSpec;
use crate::sys::configfs::{self, Op};

/// The namespace id every export's volume gets.
pub const NSID: u32 = 1;

/// The longest serial nvmet takes (`NVMET_SN_MAX_SIZE`).
pub(super) const SERIAL_MAX: usize = 20;

/// Namespace 1 of a subsystem, as configfs holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// The backing file or block device.
    pub device_path: String,
    /// `device_uuid` (the share id): what os-brick finds the device by (`vol_uuid`).
    pub uuid: String,
    /// `device_nguid` (the share id again).
    pub nguid: String,
    /// `enable`.
    pub enabled: bool,
}

/// A subsystem, as configfs holds it or as an export wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subsystem {
    /// The subsystem NQN (the export's target).
    pub nqn: String,
    /// `attr_serial`.
    pub serial: String,
    /// `attr_allow_any_host` (never wanted).
    pub allow_any_host: bool,
    /// Namespace 1, when it exists.
    pub namespace: Option<Namespace>,
    /// The host NQNs linked under `allowed_hosts`.
    pub hosts: BTreeSet<String>,
    /// Whether shelf's port links to it.
    pub on_port: bool,
}

/// A port's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// `addr_trtype` (`tcp`).
    pub trtype: String,
    /// `addr_adrfam` (`ipv4`, `ipv6`).
    pub adrfam: String,
    /// `addr_traddr`.
    pub traddr: String,
    /// `addr_trsvcid` (the TCP port).
    pub trsvcid: String,
}

impl Port {
    /// The TCP port for a portal address.
    pub fn tcp(portal: SocketAddr) -> Port {
        Port {
            trtype: "tcp".into(),
            adrfam: if portal.is_ipv4() { "ipv4" } else { "ipv6" }.into(),
            traddr: portal.ip().to_string(),
            trsvcid: portal.port().to_string(),
        }
    }
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}:{}",
            self.trtype, self.adrfam, self.traddr, self.trsvcid
        )
    }
}

pub(super) fn subsystem_dir(nqn: &str) -> PathBuf {
    Path::new("subsystems").join(nqn)
}

pub(super) fn namespace_dir(nqn: &str) -> PathBuf {
    subsystem_dir(nqn).join("namespaces").join(NSID.to_string())
}

pub(super) fn port_dir(port_id: u16) -> PathBuf {
    Path::new("ports").join(port_id.to_string())
}

pub(super) fn port_link(port_id: u16, nqn: &str) -> PathBuf {
    port_dir(port_id).join("subsystems").join(nqn)
}

pub(super) fn host_dir(host: &str) -> PathBuf {
    Path::new("hosts").join(host)
}

pub(super) fn allowed_link(nqn: &str, host: &str) -> PathBuf {
    subsystem_dir(nqn).join("allowed_hosts").join(host)
}

/// The serial of a share's subsystem: its id's first 20 hex digits.
pub fn serial_of(share_id: &str) -> String {
    share_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(SERIAL_MAX)
        .collect()
}

/// A name that goes into a configfs path must be one path component.
pub(super) fn one_component(what: &str, name: &str) -> Result<()> {
    crate::model::validate_nqn(name)
        .map_err(|e| Error::Internal(format!("{what}: {e}")))
        .map(|_| ())
}

/// What configfs should hold for an export.
pub fn desired(spec: &ExportSpec) -> Result<Subsystem> {
    let e = &spec.export;
    one_component("subsystem", &e.target)?;
    let id = uuid::Uuid::parse_str(&e.share)
        .map_err(|_| Error::Internal(format!("share id {:?} is not a UUID", e.share)))?
        .hyphenated()
        .to_string();
    let mut hosts = BTreeSet::new();
    for h in e.allowed() {
        one_component("allowed host", &h)?;
        hosts.insert(h);
    }
    Ok(Subsystem {
        nqn: e.target.clone(),
        serial: serial_of(&id),
        allow_any_host: false,
        namespace: Some(Namespace {
            device_path: spec.path.display().to_string(),
            uuid: id.clone(),
            nguid: id,
            enabled: true,
        }),
        hosts,
        on_port: true,
    })
}

/// Whether going from `have` to `want` gives anything (a namespace, a device, a host, a
/// port link): such a change first checks the backing store.
pub fn grants(have: Option<&Subsystem>, want: &Subsystem) -> bool {
    let Some(have) = have else { return true };
    have.namespace != want.namespace
        || !want.hosts.is_subset(&have.hosts)
        || (want.on_port && !have.on_port)
}

/// Whether configfs holds what the export wants (the serial aside: see [`plan_converge`]).
pub fn in_line(have: Option<&Subsystem>, want: &Subsystem) -> bool {
    have.is_some_and(|h| {
        let mut h = h.clone();
        h.serial.clone_from(&want.serial);
        // The kernel prints ids in its own case.
        if let (Some(n), Some(w)) = (h.namespace.as_mut(), want.namespace.as_ref()) {
            if n.uuid.eq_ignore_ascii_case(&w.uuid) && n.nguid.eq_ignore_ascii_case(&w.nguid) {
                n.uuid.clone_from(&w.uuid);
                n.nguid.clone_from(&w.nguid);
            }
        }
        h == *want
    })
}

/// The steps from `have` (None: nothing there) to `want`, linked to port `port_id`.
pub fn plan_converge(have: Option<&Subsystem>, want: &Subsystem, port_id: u16) -> Vec<Op> {
    let nqn = &want.nqn;
    let s = subsystem_dir(nqn);
    let ns = namespace_dir(nqn);
    let empty = BTreeSet::new();
    let have_hosts = have.map_or(&empty, |h| &h.hosts);
    let on_port = have.is_some_and(|h| h.on_port);
    let added: Vec<&String> = want.hosts.difference(have_hosts).collect();
    let removed: Vec<&String> = have_hosts.difference(&want.hosts).collect();
    let mut ops: Vec<Op> = added.iter().map(|h| Op::Mkdir(host_dir(h))).collect();
    if have.is_none() {
        ops.push(Op::Mkdir(s.clone()));
    }
    if have.is_none_or(|h| h.allow_any_host) {
        ops.push(Op::Write(s.join("attr_allow_any_host"), "0".into()));
    }
    // Revoke first; a connected host is only dropped by taking the port link away.
    let relink = on_port && !removed.is_empty();
    if relink {
        ops.push(Op::Unlink(port_link(port_id, nqn)));
    }
    ops.extend(removed.iter().map(|h| Op::Unlink(allowed_link(nqn, h))));
    // nvmet refuses a new serial once a host has identified the subsystem: it is given
    // once, at creation, and never counts as drift ([`in_line`]).
    if have.is_none() {
        ops.push(Op::Write(s.join("attr_serial"), want.serial.clone()));
    }
    let have_ns = have.and_then(|h| h.namespace.as_ref());
    if let Some(w) = &want.namespace {
        let same_device = have_ns.is_some_and(|n| {
            n.device_path == w.device_path
                && n.uuid.eq_ignore_ascii_case(&w.uuid)
                && n.nguid.eq_ignore_ascii_case(&w.nguid)
        });
        if !same_device {
            // The device and its ids can only change while the namespace is disabled.
            match have_ns {
                Some(n) if n.enabled => ops.push(Op::Write(ns.join("enable"), "0".into())),
                Some(_) => {}
                None => ops.push(Op::Mkdir(ns.clone())),
            }
            ops.push(Op::Write(ns.join("device_path"), w.device_path.clone()));
            ops.push(Op::Write(ns.join("device_uuid"), w.uuid.clone()));
            ops.push(Op::Write(ns.join("device_nguid"), w.nguid.clone()));
        }
        if !same_device || have_ns.is_some_and(|n| !n.enabled) {
            ops.push(Op::Write(ns.join("enable"), "1".into()));
        }
    }
    ops.extend(added.iter().map(|h| Op::Link {
        target: host_dir(h),
        link: allowed_link(nqn, h),
    }));
    if want.on_port && (!on_port || relink) {
        ops.push(Op::Link {
            target: s,
            link: port_link(port_id, nqn),
        });
    }
    ops
}

/// The steps that take a subsystem apart, in the order configfs allows: the port link, the
/// namespace (disabled, then removed), the access list, the subsystem. Host entries are
/// removed separately once nothing links to them ([`unused_hosts`]).
pub fn plan_remove(have: &Subsystem, port_id: u16) -> Vec<Op> {
    let nqn = &have.nqn;
    let ns = namespace_dir(nqn);
    let mut ops = Vec::new();
    if have.on_port {
        ops.push(Op::Unlink(port_link(port_id, nqn)));
    }
    if let Some(n) = &have.namespace {
        if n.enabled {
            ops.push(Op::Write(ns.join("enable"), "0".into()));
        }
        ops.push(Op::Rmdir(ns));
    }
    ops.extend(have.hosts.iter().map(|h| Op::Unlink(allowed_link(nqn, h))));
    ops.push(Op::Rmdir(subsystem_dir(nqn)));
    ops
}

/// The steps that give port `port_id` the address `want`. A port with another address can
/// only be changed while no subsystem links to it (`linked` is how many do): otherwise it
/// serves someone else, and the error says so.
pub fn plan_port(
    have: Option<&Port>,
    want: &Port,
    port_id: u16,
    linked: usize,
) -> std::result::Result<Vec<Op>, String> {
    let dir = port_dir(port_id);
    let writes = || {
        vec![
            Op::Write(dir.join("addr_trtype"), want.trtype.clone()),
            Op::Write(dir.join("addr_adrfam"), want.adrfam.clone()),
            Op::Write(dir.join("addr_traddr"), want.traddr.clone()),
            Op::Write(dir.join("addr_trsvcid"), want.trsvcid.clone()),
        ]
    };
    match have {
        None => {
            let mut ops = vec![Op::Mkdir(dir.clone())];
            ops.extend(writes());
            Ok(ops)
        }
        Some(p) if p == want => Ok(Vec::new()),
        Some(_) if linked == 0 => Ok(writes()),
        Some(p) => Err(format!(
            "nvmet port {port_id} is bound to {p}, not {want}, and {linked} subsystem(s) link \
             to it; set nvme.port_id to a port shelf may own"
        )),
    }
}

/// The hosts among `candidates` that no subsystem links to any more.
pub fn unused_hosts(candidates: &BTreeSet<String>, in_use: &BTreeSet<String>) -> Vec<String> {
    candidates.difference(in_use).cloned().collect()
}

/// Read subsystem `nqn` from configfs (blocking); `None` when it does not exist.
pub(super) fn read_subsystem(
    root: &Path,
    nqn: &str,
    port_id: u16,
) -> std::io::Result<Option<Subsystem>> {
    let s = root.join(subsystem_dir(nqn));
    if !configfs::is_dir(&s) {
        return Ok(None);
    }
    let attr = |p: PathBuf| configfs::read_attr(&p).map(Option::unwrap_or_default);
    let ns = root.join(namespace_dir(nqn));
    let namespace = if configfs::is_dir(&ns) {
        Some(Namespace {
            device_path: attr(ns.join("device_path"))?,
            uuid: attr(ns.join("device_uuid"))?,
            nguid: attr(ns.join("device_nguid"))?,
            enabled: attr(ns.join("enable"))? == "1",
        })
    } else {
        None
    };
    Ok(Some(Subsystem {
        nqn: nqn.to_string(),
        serial: attr(s.join("attr_serial"))?,
        allow_any_host: attr(s.join("attr_allow_any_host"))? != "0",
        namespace,
        hosts: configfs::names(&s.join("allowed_hosts"))?
            .into_iter()
            .collect(),
        on_port: std::fs::symlink_metadata(root.join(port_link(port_id, nqn))).is_ok(),
    }))
}

/// Read port `port_id` (blocking): its address and the subsystems linked to it.
pub(super) fn read_port(root: &Path, port_id: u16) -> std::io::Result<Option<(Port, Vec<String>)>> {
    let dir = root.join(port_dir(port_id));
    if !configfs::is_dir(&dir) {
        return Ok(None);
    }
    let attr = |n: &str| configfs::read_attr(&dir.join(n)).map(Option::unwrap_or_default);
    let port = Port {
        trtype: attr("addr_trtype")?,
        adrfam: attr("addr_adrfam")?,
        traddr: attr("addr_traddr")?,
        trsvcid: attr("addr_trsvcid")?,
    };
    Ok(Some((port, configfs::names(&dir.join("subsystems"))?)))
}

/// Every host NQN any subsystem (shelf's or not) allows (blocking).
pub(super) fn hosts_in_use(root: &Path) -> std::io::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for s in configfs::names(&root.join("subsystems"))? {
        out.extend(configfs::names(
            &root.join("subsystems").join(s).join("allowed_hosts"),
        )?);
    }
    Ok(out)
}
