//! NVMe over TCP through the kernel's nvmet target, written to configfs directly (nvmetcli is
//! not packaged; TrueNAS writes configfs too). Layout (drivers/nvme/target/configfs.c):
//!
//! ```text
//! <configfs>/hosts/<host-nqn>/                              one per allowed host
//! <configfs>/subsystems/<nqn_prefix>:<share>/               one per export
//!     attr_allow_any_host = 0, attr_serial
//!     namespaces/1/{device_path, device_uuid, device_nguid, enable = 1}
//!     allowed_hosts/<host-nqn> -> hosts/<host-nqn>
//! <configfs>/ports/<port_id>/{addr_trtype = tcp, addr_adrfam, addr_traddr, addr_trsvcid}
//!     subsystems/<nqn> -> subsystems/<nqn>
//! ```
//!
//! What to change is a pure plan ([`plan_converge`], [`plan_remove`], [`plan_port`]: lists
//! of [`Op`]s, tested below) from what configfs holds ([`Subsystem`], read back each time,
//! never remembered) to what the export wants ([`desired`]); [`crate::sys::configfs`] carries
//! it out off the event loop. The port link is made last, so a subsystem is never reachable
//! before its namespace and access list are in place, and taken first on removal.
//!
//! Revoking a host: nvmet checks `allowed_hosts` when a host connects, and leaves connected
//! controllers alone when an entry goes. So a change that removes a host also unlinks the
//! subsystem from the port and links it again, which drops every controller of the
//! subsystem; the hosts still allowed reconnect (nvme-cli's default `reconnect_delay`).
//!
//! Shelf owns the subsystems under its NQN prefix and the host entries it made or that its
//! exports name; reconcile removes nothing else. The host kernel of this machine has no
//! nvmet: the plans are tested here, the driver against a real kernel in the VM tier.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{action, check_backing_store, BoxFut, ExportSpec, Exporter, Finding};
use crate::error::{Error, Result};
use crate::model::Driver;
use crate::sys::configfs::{self, Op};

/// The namespace id every export's volume gets.
pub const NSID: u32 = 1;

/// The longest serial nvmet takes (`NVMET_SN_MAX_SIZE`).
const SERIAL_MAX: usize = 20;

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

fn subsystem_dir(nqn: &str) -> PathBuf {
    Path::new("subsystems").join(nqn)
}

fn namespace_dir(nqn: &str) -> PathBuf {
    subsystem_dir(nqn).join("namespaces").join(NSID.to_string())
}

fn port_dir(port_id: u16) -> PathBuf {
    Path::new("ports").join(port_id.to_string())
}

fn port_link(port_id: u16, nqn: &str) -> PathBuf {
    port_dir(port_id).join("subsystems").join(nqn)
}

fn host_dir(host: &str) -> PathBuf {
    Path::new("hosts").join(host)
}

fn allowed_link(nqn: &str, host: &str) -> PathBuf {
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
fn one_component(what: &str, name: &str) -> Result<()> {
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
fn read_subsystem(root: &Path, nqn: &str, port_id: u16) -> std::io::Result<Option<Subsystem>> {
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
fn read_port(root: &Path, port_id: u16) -> std::io::Result<Option<(Port, Vec<String>)>> {
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
fn hosts_in_use(root: &Path) -> std::io::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for s in configfs::names(&root.join("subsystems"))? {
        out.extend(configfs::names(
            &root.join("subsystems").join(s).join("allowed_hosts"),
        )?);
    }
    Ok(out)
}

/// The NVMe/TCP exporter.
#[derive(Debug)]
pub struct NvmetExporter {
    root: PathBuf,
    prefix: String,
    port_id: u16,
    port: Port,
    /// Host entries shelf may remove once unused: those it made and those its exports name.
    known_hosts: std::sync::Mutex<BTreeSet<String>>,
    /// One configfs change at a time: each plan is made from what configfs holds.
    serial: async_lock::Mutex<()>,
}

impl NvmetExporter {
    /// An exporter for configfs root `root` (the kernel's is `/sys/kernel/config/nvmet`),
    /// owning the subsystems named `<nqn_prefix>:...`, linked to port `port_id` on `portal`.
    pub fn new(root: PathBuf, nqn_prefix: &str, port_id: u16, portal: SocketAddr) -> Self {
        NvmetExporter {
            root,
            prefix: nqn_prefix.to_string(),
            port_id,
            port: Port::tcp(portal),
            known_hosts: Default::default(),
            serial: async_lock::Mutex::new(()),
        }
    }

    /// Whether a subsystem carries shelf's naming.
    fn owns(&self, nqn: &str) -> bool {
        nqn.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.starts_with(':'))
    }

    fn io_error(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(format!("nvmet {what} ({})", self.root.display()), e)
    }

    /// Run `ops` off the event loop; a failed step names itself.
    async fn run(&self, ops: Vec<Op>) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let root = self.root.clone();
        let linking_port = ops
            .iter()
            .any(|o| matches!(o, Op::Link { link, .. } if link.starts_with("ports")));
        smol::unblock(move || configfs::run(&root, &ops))
            .await
            .map_err(|e| {
                let hint = if linking_port {
                    " (enabling an nvmet port needs the nvmet-tcp module and a free address)"
                } else {
                    ""
                };
                Error::io(format!("nvmet configfs: {}{hint}", e.op), e.error)
            })
    }

    async fn read(&self, nqn: &str) -> Result<(Option<Subsystem>, Option<(Port, Vec<String>)>)> {
        let (root, nqn, id) = (self.root.clone(), nqn.to_string(), self.port_id);
        smol::unblock(move || Ok((read_subsystem(&root, &nqn, id)?, read_port(&root, id)?)))
            .await
            .map_err(|e| self.io_error("reading configfs", e))
    }

    /// Bring configfs in line with `spec`; the caller holds `serial`.
    async fn converge(&self, spec: &ExportSpec) -> Result<()> {
        let want = desired(spec)?;
        let (have, port) = self.read(&want.nqn).await?;
        if grants(have.as_ref(), &want) {
            check_backing_store(spec).await?;
        }
        let (port, linked) = match &port {
            Some((p, l)) => (Some(p), l.len()),
            None => (None, 0),
        };
        let mut ops = plan_port(port, &self.port, self.port_id, linked).map_err(Error::Busy)?;
        ops.extend(plan_converge(have.as_ref(), &want, self.port_id));
        self.known_hosts
            .lock()
            .expect("nvmet hosts")
            .extend(want.hosts.iter().cloned());
        self.run(ops).await?;
        self.drop_unused_hosts().await.map(|_| ())
    }

    /// Remove the host entries shelf may remove that nothing links to; returns them.
    async fn drop_unused_hosts(&self) -> Result<Vec<String>> {
        let root = self.root.clone();
        let in_use = smol::unblock(move || hosts_in_use(&root))
            .await
            .map_err(|e| self.io_error("reading allowed hosts", e))?;
        let unused = {
            let known = self.known_hosts.lock().expect("nvmet hosts");
            unused_hosts(&known, &in_use)
        };
        let ops = unused.iter().map(|h| Op::Rmdir(host_dir(h))).collect();
        self.run(ops).await?;
        let mut known = self.known_hosts.lock().expect("nvmet hosts");
        for h in &unused {
            known.remove(h);
        }
        Ok(unused)
    }

    async fn remove_subsystem(&self, nqn: &str) -> Result<()> {
        if let (Some(have), _) = self.read(nqn).await? {
            self.known_hosts
                .lock()
                .expect("nvmet hosts")
                .extend(have.hosts.iter().cloned());
            self.run(plan_remove(&have, self.port_id)).await?;
        }
        self.drop_unused_hosts().await.map(|_| ())
    }
}

impl Exporter for NvmetExporter {
    fn driver(&self) -> Driver {
        Driver::Nvmet
    }

    fn probe(&self) -> BoxFut<'_, Result<()>> {
        Box::pin(async move {
            let root = self.root.clone();
            let kernel = root.starts_with("/sys/kernel/config");
            let (present, missing, tcp) = smol::unblock(move || {
                let missing = ["subsystems", "ports", "hosts"]
                    .into_iter()
                    .find(|d| !configfs::is_dir(&root.join(d)));
                (
                    configfs::is_dir(&root),
                    missing,
                    configfs::module_loaded("nvmet_tcp"),
                )
            })
            .await;
            let root = self.root.display();
            if !present {
                return Err(Error::Unsupported(format!(
                    "configfs root {root} absent: module nvmet not loaded (modprobe nvmet nvmet-tcp)"
                )));
            }
            if let Some(d) = missing {
                return Err(Error::Unsupported(format!(
                    "configfs root {root} is not nvmet's: it has no {d}/"
                )));
            }
            if kernel && !tcp {
                return Err(Error::Unsupported(
                    "nvmet-tcp not loaded (modprobe nvmet-tcp): nvmet ports cannot take tcp".into(),
                ));
            }
            Ok(())
        })
    }

    fn load(&self, specs: &[ExportSpec]) {
        let mut known = self.known_hosts.lock().expect("nvmet hosts");
        for s in specs {
            known.extend(s.export.allowed());
        }
    }

    fn apply<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let _serial = self.serial.lock().await;
            self.converge(spec).await
        })
    }

    fn remove<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let _serial = self.serial.lock().await;
            if spec.export.target.is_empty() {
                return Ok(());
            }
            one_component("subsystem", &spec.export.target)?;
            self.remove_subsystem(&spec.export.target).await
        })
    }

    fn refresh_size<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            check_backing_store(spec).await?;
            let _serial = self.serial.lock().await;
            let ns = namespace_dir(&desired(spec)?.nqn);
            let attr = self.root.join(ns.join("revalidate_size"));
            let has_revalidate = smol::unblock(move || attr.exists()).await;
            // Kernels before 5.11 have no revalidate_size: re-enabling re-reads the size.
            let ops = if has_revalidate {
                vec![Op::Write(ns.join("revalidate_size"), "1".into())]
            } else {
                vec![
                    Op::Write(ns.join("enable"), "0".into()),
                    Op::Write(ns.join("enable"), "1".into()),
                ]
            };
            self.run(ops).await
        })
    }

    fn reconcile<'a>(
        &'a self,
        specs: &'a [ExportSpec],
        repair: bool,
    ) -> BoxFut<'a, Result<Vec<Finding>>> {
        Box::pin(async move {
            let _serial = self.serial.lock().await;
            let mut findings = Vec::new();
            let mut wanted = BTreeSet::new();
            for spec in specs {
                let want = desired(spec)?;
                wanted.insert(want.nqn.clone());
                if let Err(Error::Tampered(why)) = check_backing_store(spec).await {
                    // Never given a planted object; what nvmet has now is left as it is.
                    findings.push(Finding::new(Driver::Nvmet, "tampered", &want.nqn, why));
                    continue;
                }
                let (have, port) = self.read(&want.nqn).await?;
                let port_ok = port.as_ref().is_some_and(|(p, _)| *p == self.port);
                if in_line(have.as_ref(), &want) && port_ok {
                    continue;
                }
                let (kind, done) = match have {
                    None => (
                        "missing",
                        "re-created subsystem, namespace, hosts and port link",
                    ),
                    Some(_) => ("drifted", "brought back in line"),
                };
                if repair {
                    self.converge(spec).await?;
                }
                findings.push(Finding::new(
                    Driver::Nvmet,
                    kind,
                    &want.nqn,
                    action(repair, done),
                ));
            }
            let root = self.root.clone();
            let live = smol::unblock(move || configfs::names(&root.join("subsystems")))
                .await
                .map_err(|e| self.io_error("listing subsystems", e))?;
            for nqn in live {
                if self.owns(&nqn) && !wanted.contains(&nqn) {
                    if repair {
                        self.remove_subsystem(&nqn).await?;
                    }
                    findings.push(Finding::new(
                        Driver::Nvmet,
                        "orphan",
                        &nqn,
                        action(repair, "removed: not in the tree"),
                    ));
                }
            }
            if repair {
                for h in self.drop_unused_hosts().await? {
                    findings.push(Finding::new(
                        Driver::Nvmet,
                        "orphan",
                        format!("host {h}"),
                        "removed: no subsystem allows it",
                    ));
                }
            }
            Ok(findings)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Access, Attached, Export, ExportOptions, Protocol, ShareState};

    const SHARE: &str = "0b9f3c1e-7a52-4d7e-9d1c-3f5e2a8b6c4d";
    const NQN: &str = "nqn.2026-12.io.shelf:vol1";
    const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3ccabcd";

    fn spec(hosts: &[&str]) -> ExportSpec {
        ExportSpec {
            export: Export {
                id: "e".into(),
                share: SHARE.into(),
                share_name: "vol1".into(),
                protocol: Protocol::Nvme,
                driver: Driver::Nvmet,
                state: ShareState::Available,
                options: ExportOptions {
                    chap: false,
                    ..ExportOptions::default()
                },
                target: NQN.into(),
                tid: None,
                fsid: None,
                chap_user: None,
                attached: hosts
                    .iter()
                    .map(|h| Attached {
                        client: h.to_string(),
                        mode: Access::Rw,
                    })
                    .collect(),
                created_at: 0,
            },
            path: "/srv/pool/vol1/volume".into(),
            chap_secret: None,
        }
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn an_export_from_nothing_is_reachable_only_once_complete() {
        let want = desired(&spec(&[HOST])).unwrap();
        assert_eq!(want.serial, "0b9f3c1e7a524d7e9d1c");
        let ops = plan_converge(None, &want, 1);
        let s = format!("subsystems/{NQN}");
        let ns = format!("{s}/namespaces/1");
        assert_eq!(
            ops,
            vec![
                Op::Mkdir(p(&format!("hosts/{HOST}"))),
                Op::Mkdir(p(&s)),
                Op::Write(p(&format!("{s}/attr_allow_any_host")), "0".into()),
                Op::Write(
                    p(&format!("{s}/attr_serial")),
                    "0b9f3c1e7a524d7e9d1c".into()
                ),
                Op::Mkdir(p(&ns)),
                Op::Write(
                    p(&format!("{ns}/device_path")),
                    "/srv/pool/vol1/volume".into()
                ),
                Op::Write(p(&format!("{ns}/device_uuid")), SHARE.into()),
                Op::Write(p(&format!("{ns}/device_nguid")), SHARE.into()),
                Op::Write(p(&format!("{ns}/enable")), "1".into()),
                Op::Link {
                    target: p(&format!("hosts/{HOST}")),
                    link: p(&format!("{s}/allowed_hosts/{HOST}")),
                },
                Op::Link {
                    target: p(&s),
                    link: p(&format!("ports/1/subsystems/{NQN}")),
                },
            ]
        );
        assert!(grants(None, &want));
    }

    #[test]
    fn a_matching_subsystem_needs_nothing() {
        let want = desired(&spec(&[HOST])).unwrap();
        assert!(plan_converge(Some(&want), &want, 1).is_empty());
        assert!(!grants(Some(&want), &want));
    }

    #[test]
    fn revoking_a_host_drops_connected_controllers_through_the_port_link() {
        let have = desired(&spec(&[HOST, "nqn.2026-01.org.example:other"])).unwrap();
        let want = desired(&spec(&[HOST])).unwrap();
        assert!(!grants(Some(&have), &want));
        let s = format!("subsystems/{NQN}");
        assert_eq!(
            plan_converge(Some(&have), &want, 7),
            vec![
                Op::Unlink(p(&format!("ports/7/subsystems/{NQN}"))),
                Op::Unlink(p(&format!(
                    "{s}/allowed_hosts/nqn.2026-01.org.example:other"
                ))),
                Op::Link {
                    target: p(&s),
                    link: p(&format!("ports/7/subsystems/{NQN}")),
                },
            ]
        );
    }

    #[test]
    fn a_drifted_device_is_changed_while_disabled() {
        let want = desired(&spec(&[])).unwrap();
        let mut have = want.clone();
        have.allow_any_host = true;
        have.namespace.as_mut().unwrap().device_path = "/elsewhere".into();
        assert!(grants(Some(&have), &want));
        let ns = format!("subsystems/{NQN}/namespaces/1");
        assert_eq!(
            plan_converge(Some(&have), &want, 1),
            vec![
                Op::Write(
                    p(&format!("subsystems/{NQN}/attr_allow_any_host")),
                    "0".into()
                ),
                Op::Write(p(&format!("{ns}/enable")), "0".into()),
                Op::Write(
                    p(&format!("{ns}/device_path")),
                    "/srv/pool/vol1/volume".into()
                ),
                Op::Write(p(&format!("{ns}/device_uuid")), SHARE.into()),
                Op::Write(p(&format!("{ns}/device_nguid")), SHARE.into()),
                Op::Write(p(&format!("{ns}/enable")), "1".into()),
            ]
        );
        // A disabled namespace that is otherwise right is only enabled again.
        let mut off = want.clone();
        off.namespace.as_mut().unwrap().enabled = false;
        assert_eq!(
            plan_converge(Some(&off), &want, 1),
            vec![Op::Write(p(&format!("{ns}/enable")), "1".into())]
        );
        // The kernel prints ids in its own case: not a drift.
        let mut upper = want.clone();
        upper.namespace.as_mut().unwrap().uuid = SHARE.to_uppercase();
        assert!(plan_converge(Some(&upper), &want, 1).is_empty());
        assert!(in_line(Some(&upper), &want));
        // Nor is a serial the kernel made before shelf could give its own.
        let mut serial = want.clone();
        serial.serial = "1a2b3c4d5e6f7a8b".into();
        assert!(plan_converge(Some(&serial), &want, 1).is_empty());
        assert!(in_line(Some(&serial), &want));
        assert!(!in_line(Some(&off), &want) && !in_line(None, &want));
    }

    #[test]
    fn teardown_goes_in_the_order_configfs_allows() {
        let have = desired(&spec(&[HOST])).unwrap();
        let s = format!("subsystems/{NQN}");
        assert_eq!(
            plan_remove(&have, 1),
            vec![
                Op::Unlink(p(&format!("ports/1/subsystems/{NQN}"))),
                Op::Write(p(&format!("{s}/namespaces/1/enable")), "0".into()),
                Op::Rmdir(p(&format!("{s}/namespaces/1"))),
                Op::Unlink(p(&format!("{s}/allowed_hosts/{HOST}"))),
                Op::Rmdir(p(&s)),
            ]
        );
        // Half made (no namespace, not on the port): only what exists is taken apart.
        let half = Subsystem {
            namespace: None,
            on_port: false,
            hosts: BTreeSet::new(),
            ..have
        };
        assert_eq!(plan_remove(&half, 1), vec![Op::Rmdir(p(&s))]);
    }

    #[test]
    fn a_port_serving_others_is_not_rebound() {
        let want = Port::tcp("192.0.2.1:4420".parse().unwrap());
        assert_eq!(want.adrfam, "ipv4");
        let fresh = plan_port(None, &want, 3, 0).unwrap();
        assert_eq!(fresh[0], Op::Mkdir(p("ports/3")));
        assert_eq!(fresh[1], Op::Write(p("ports/3/addr_trtype"), "tcp".into()));
        assert_eq!(fresh.len(), 5);
        assert!(plan_port(Some(&want), &want, 3, 5).unwrap().is_empty());
        let other = Port::tcp("[::1]:4421".parse().unwrap());
        assert_eq!(other.adrfam, "ipv6");
        assert_eq!(plan_port(Some(&other), &want, 3, 0).unwrap().len(), 4);
        let e = plan_port(Some(&other), &want, 3, 2).unwrap_err();
        assert!(e.contains("port 3") && e.contains("nvme.port_id"), "{e}");
    }

    #[test]
    fn names_that_are_not_one_path_component_are_refused() {
        let mut bad = spec(&["nqn.2026-01.org.example:../../x"]);
        assert!(desired(&bad).is_err());
        bad = spec(&[]);
        bad.export.target = "nqn.2026-12.io.shelf:a/b".into();
        assert!(desired(&bad).is_err());
    }

    #[test]
    fn ownership_is_by_prefix_and_colon() {
        let x = NvmetExporter::new(
            "/x".into(),
            "nqn.2026-12.io.shelf",
            1,
            "127.0.0.1:4420".parse().unwrap(),
        );
        assert!(x.owns("nqn.2026-12.io.shelf:vol"));
        assert!(!x.owns("nqn.2026-12.io.shelfish:vol"));
        assert!(!x.owns("nqn.2026-12.io.other:vol"));
    }

    #[test]
    fn only_unlinked_known_hosts_go() {
        let known: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        let in_use: BTreeSet<String> = ["b", "z"].map(String::from).into();
        assert_eq!(unused_hosts(&known, &in_use), vec!["a", "c"]);
    }
}
