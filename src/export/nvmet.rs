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
//! Discard: a thin volume's namespace deallocates ([`discard`]); the answer for each
//! subsystem is worked out when it is applied or reconciled, off the event loop. A
//! preallocated volume file is never exported ([`check_preallocated`]): nvmet would let
//! any host punch holes in it.
//!
//! Shelf owns the subsystems under its NQN prefix and the host entries it made or that its
//! exports name; reconcile removes nothing else. The host kernel of this machine has no
//! nvmet: the plans are tested here, the driver against a real kernel in the VM tier.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use super::{action, check_backing_store, BoxFut, ExportSpec, Exporter, Finding};
use crate::error::{Error, Result};
use crate::model::Driver;
use crate::sys::configfs::{self, Op};
mod discard;
mod plan;
#[cfg(test)]
mod tests;

pub use discard::{backing_deallocates, check_preallocated};
pub use plan::*;

/// The NVMe/TCP exporter.
#[derive(Debug)]
pub struct NvmetExporter {
    root: PathBuf,
    prefix: String,
    port_id: u16,
    port: Port,
    /// Host entries shelf may remove once unused: those it made and those its exports name.
    known_hosts: std::sync::Mutex<BTreeSet<String>>,
    /// Per subsystem: whether its namespace gives deallocated blocks back.
    deallocating: std::sync::Mutex<BTreeMap<String, bool>>,
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
            deallocating: Default::default(),
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

    /// Work out whether the namespace of `spec` deallocates (a thin volume only).
    async fn note_deallocation(&self, nqn: &str, spec: &ExportSpec) {
        let path = spec.path.clone();
        let on = spec.thin && smol::unblock(move || backing_deallocates(&path)).await;
        self.deallocating
            .lock()
            .expect("nvmet deallocating")
            .insert(nqn.to_string(), on);
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
        self.note_deallocation(&want.nqn, spec).await;
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

    fn discards(&self, spec: &ExportSpec) -> bool {
        spec.thin
            && self
                .deallocating
                .lock()
                .expect("nvmet deallocating")
                .get(&spec.export.target)
                .copied()
                .unwrap_or(false)
    }

    fn check_volume<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            if spec.thin {
                return Ok(());
            }
            let path = spec.path.clone();
            let kind = smol::unblock(move || std::fs::symlink_metadata(&path)).await;
            check_preallocated(
                &spec.export.share_name,
                &spec.path,
                kind.map(|m| m.file_type()),
            )
        })
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
            self.remove_subsystem(&spec.export.target).await?;
            self.deallocating
                .lock()
                .expect("nvmet deallocating")
                .remove(&spec.export.target);
            Ok(())
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

    fn reopen<'a>(&'a self, spec: &'a ExportSpec) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            // A namespace opens its device_path when enabled: disable and enable it so it
            // holds the new file (revalidate_size would keep the old one).
            check_backing_store(spec).await?;
            let _serial = self.serial.lock().await;
            let ns = namespace_dir(&desired(spec)?.nqn);
            self.run(vec![
                Op::Write(ns.join("enable"), "0".into()),
                Op::Write(ns.join("enable"), "1".into()),
            ])
            .await
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
                self.note_deallocation(&want.nqn, spec).await;
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
