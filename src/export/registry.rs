//! The one table of drivers and protocols: what the engine is built with. Adding a driver
//! is a file in `src/export/` and one line in [`build`] (docs/exports.md, "Adding a driver").

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::ganesha::GaneshaExporter;
use super::iscsi::Iscsi;
use super::lio::LioExporter;
use super::nfs::Nfs;
use super::nfs_kernel::NfsKernelExporter;
use super::nvme::Nvme;
use super::nvmet::NvmetExporter;
use super::protocol::ProtocolHandler;
use super::tgt::TgtExporter;
use super::Exporter;
use crate::config::Config;
use crate::model::{Driver, Protocol};
use crate::sys::cmd::Runner;

/// Every driver's exporter and every protocol's rules.
#[derive(Debug, Clone)]
pub struct Registry {
    /// The exporters, by driver.
    pub exporters: BTreeMap<Driver, Arc<dyn Exporter>>,
    /// The protocols' rules, by protocol.
    pub protocols: BTreeMap<Protocol, Arc<dyn ProtocolHandler>>,
}

/// The address NFS clients mount from: `nfs.host`, else this host's name.
fn nfs_host(config: &Config) -> String {
    if !config.nfs.host.is_empty() {
        return config.nfs.host.clone();
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Build the registry from the config (validated: portals parse).
pub fn build(config: &Config) -> Registry {
    let runner = Runner::new(Duration::from_secs(config.command_timeout));
    let mut roots: Vec<PathBuf> = config
        .resolved_pools()
        .into_values()
        .map(|(_, path)| path)
        .collect();
    // Formatted shares are exported from their mounts.
    roots.push(config.mount_base());
    let (iscsi, nfs, nvme) = (&config.iscsi, &config.nfs, &config.nvme);
    let nvme_portal = nvme.portal.parse().expect("nvme.portal was validated");
    let exporters: Vec<Arc<dyn Exporter>> = vec![
        Arc::new(TgtExporter::new(
            runner.clone(),
            iscsi.tgt_control_port,
            &iscsi.iqn_prefix,
            iscsi.tgt_transport,
        )),
        Arc::new(LioExporter::new(
            PathBuf::from(super::lio::CONFIGFS_TARGET),
            &iscsi.iqn_prefix,
            iscsi.portal.parse().expect("iscsi.portal was validated"),
        )),
        Arc::new(NfsKernelExporter::new(
            runner,
            nfs.exports_file.clone(),
            roots,
        )),
        Arc::new(GaneshaExporter::new(
            nfs.ganesha_exports.clone(),
            nfs.ganesha_pidfile.clone(),
        )),
        Arc::new(NvmetExporter::new(
            nvme.configfs.clone(),
            &nvme.nqn_prefix,
            nvme.port_id,
            nvme_portal,
        )),
    ];
    let protocols: Vec<Arc<dyn ProtocolHandler>> = vec![
        Arc::new(Iscsi {
            iqn_prefix: iscsi.iqn_prefix.clone(),
            portal: iscsi.portal.clone(),
            driver: iscsi.driver,
        }),
        Arc::new(Nfs {
            host: nfs_host(config),
            driver: nfs.driver,
        }),
        Arc::new(Nvme {
            nqn_prefix: nvme.nqn_prefix.clone(),
            portal: nvme_portal,
            driver: nvme.driver,
        }),
    ];
    Registry {
        exporters: exporters.into_iter().map(|x| (x.driver(), x)).collect(),
        protocols: protocols.into_iter().map(|p| (p.protocol(), p)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_driver_and_protocol_is_registered_once() {
        let config = Config::parse("state_dir='/a'\nsocket='/b'\n", "t").unwrap();
        let r = build(&config);
        for d in [
            Driver::Kernel,
            Driver::Ganesha,
            Driver::Tgt,
            Driver::Lio,
            Driver::Nvmet,
        ] {
            assert_eq!(r.exporters[&d].driver(), d);
            // Each driver's protocol has rules, and its default driver is registered.
            let p = &r.protocols[&d.protocol()];
            assert!(r.exporters.contains_key(&p.default_driver()));
        }
        assert_eq!(r.protocols.len(), Protocol::ALL.len());
    }
}
