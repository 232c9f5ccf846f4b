//! NFS's rules (drivers: [`super::nfs_kernel`], [`super::ganesha`]): an export publishes
//! the share's directory (a formatted share's mount), its static list names hosts,
//! networks or wildcards and must be given (never the world by default), an attach adds
//! the connector's IP or single host name (which must resolve), and `connection_info` is
//! os-brick's `nfs` shape with `export = <nfs.host>:<path the driver serves>`.

use std::time::Duration;

use ciborium::Value;
use serde::Serialize;

use super::protocol::{
    check_clients, cinder_shape, Attaching, Naming, OptionArgs, ProtocolHandler,
};
use super::BoxFut;
use crate::error::{Error, Result};
use crate::model::{
    nfs_connector_client, validate_nfs_client, Access, Connector, Driver, ExportOptions, Protocol,
};

/// How long an NFS client's host name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// NFS.
#[derive(Debug, Clone)]
pub struct Nfs {
    /// The address clients mount from (`nfs.host`, else this host's name).
    pub host: String,
    /// `nfs.driver`.
    pub driver: Driver,
}

/// `connection_info.data` of an NFS attach.
#[derive(Debug, Serialize)]
struct NfsData<'a> {
    export: String,
    name: &'a str,
    options: Option<&'a str>,
    volume_id: &'a str,
    access_mode: &'a str,
}

/// Check that an NFS client attached by host name resolves, as exportfs (and ganesha)
/// will need it to: a name that does not resolve is silently left out of the kernel's
/// export table (`exportfs -r` says "Failed to resolve" and exits 0), so the attach would
/// grant nothing while answering ok. IP addresses need no lookup. The lookup runs off the
/// event loop and is abandoned after [`RESOLVE_TIMEOUT`] (`busy`: retry, or give an IP).
async fn check_resolves(client: &str) -> Result<()> {
    let bare = client.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let name = client.to_string();
    let lookup = smol::unblock(move || {
        use std::net::ToSocketAddrs;
        (name.as_str(), 2049u16)
            .to_socket_addrs()
            .map(|mut addrs| addrs.next().is_some())
    });
    let outcome = futures_lite::future::or(async { Some(lookup.await) }, async {
        smol::Timer::after(RESOLVE_TIMEOUT).await;
        None
    })
    .await;
    let why = match outcome {
        Some(Ok(true)) => return Ok(()),
        Some(Ok(false)) => "it has no address".to_string(),
        Some(Err(e)) => e.to_string(),
        None => {
            return Err(Error::Busy(format!(
                "resolving NFS client {client:?} took more than {} s; retry, or give connector.ip",
                RESOLVE_TIMEOUT.as_secs()
            )))
        }
    };
    Err(Error::Invalid(format!(
        "NFS client {client:?} does not resolve ({why}), so the export could not admit it; \
         give connector.ip (the client's IP address) or a host name this server resolves"
    )))
}

impl ProtocolHandler for Nfs {
    fn protocol(&self) -> Protocol {
        Protocol::Nfs
    }

    fn title(&self) -> &'static str {
        "NFS"
    }

    fn default_driver(&self) -> Driver {
        self.driver
    }

    fn export_options(&self, a: &OptionArgs) -> Result<ExportOptions> {
        let Some(clients) = a.clients.clone() else {
            return Err(Error::Invalid(
                "an NFS export needs clients (hosts or networks allowed to mount it; [] for \
                 attached hosts only): shelf never exports to the world by default"
                    .into(),
            ));
        };
        let clients = check_clients(clients, validate_nfs_client)?;
        if a.chap.is_some() {
            return Err(Error::Invalid("chap is an iSCSI option".into()));
        }
        Ok(ExportOptions {
            clients,
            access: a.access.unwrap_or(Access::Rw),
            sync: a.sync.unwrap_or(true),
            root_squash: a.root_squash.unwrap_or(true),
            chap: true,
        })
    }

    fn connector_client(&self, c: &Connector) -> Result<String> {
        Ok(nfs_connector_client(c)?)
    }

    fn admit<'a>(&'a self, client: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(check_resolves(client))
    }

    fn naming(&self, _share_id: &str, _share_name: &str, export_dir: &str) -> Naming {
        Naming {
            targets: vec![export_dir.to_string()],
            fsid: true,
            credentials: None,
        }
    }

    fn connection_info(&self, a: &Attaching<'_>) -> Result<Value> {
        cinder_shape(
            "nfs",
            &NfsData {
                export: format!("{}:{}", self.host, a.client_path),
                name: "volume",
                options: None,
                volume_id: a.share_id,
                access_mode: a.mode.as_str(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nfs() -> Nfs {
        Nfs {
            host: "server".into(),
            driver: Driver::Kernel,
        }
    }

    #[test]
    fn an_export_needs_its_clients_and_no_chap() {
        assert!(nfs().export_options(&OptionArgs::default()).is_err());
        let chap = OptionArgs {
            clients: Some(vec![]),
            chap: Some(true),
            ..OptionArgs::default()
        };
        assert!(nfs().export_options(&chap).is_err());
        let bad = OptionArgs {
            clients: Some(vec!["*(rw)".into()]),
            ..OptionArgs::default()
        };
        assert!(nfs().export_options(&bad).is_err());
    }

    #[test]
    fn ip_addresses_need_no_lookup() {
        smol::block_on(async {
            check_resolves("192.0.2.1").await.unwrap();
            check_resolves("[::1]").await.unwrap();
            let e = check_resolves("no-such-host.invalid").await.unwrap_err();
            assert!(matches!(e, Error::Invalid(_) | Error::Busy(_)), "{e}");
        });
    }
}
