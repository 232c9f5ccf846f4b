//! shelf-csi: a Container Storage Interface (spec v1.9) plugin backed by shelf appliances.
//!
//! One binary serves the Identity service and, by `--mode`, the Controller service (talks
//! to one or more shelfd nodes, each one topology segment) and/or the Node service (stages
//! and publishes volumes on the machine it runs on). Argument parsing and start-up only;
//! the services are in their modules. See docs/csi.md.

// Every gRPC handler's error is tonic's Status (176 bytes), as tonic's traits want it.
#![allow(clippy::result_large_err)]

mod appliance;
mod config;
mod context;
mod controller;
mod identity;
mod ids;
mod node;
mod nodeid;
mod objects;
mod seal;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use bpfman_csi::v1::controller_server::ControllerServer;
use bpfman_csi::v1::identity_server::IdentityServer;
use bpfman_csi::v1::node_server::NodeServer;
use clap::Parser;

use crate::config::{Config, Mode};

/// The shelf CSI plugin.
#[derive(Debug, Parser)]
#[command(name = "shelf-csi", version)]
struct Args {
    /// The gRPC endpoint to serve: `unix:///path/csi.sock` or a plain path.
    #[arg(long, default_value = "unix:///csi/csi.sock")]
    endpoint: String,
    /// Config file (TOML; see docs/csi.md).
    #[arg(long, default_value = "/etc/shelf-csi/config.toml")]
    config: PathBuf,
    /// Which services to serve besides Identity.
    #[arg(long, value_enum, default_value = "all")]
    mode: Mode,
    /// Validate the config, print it, and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let cfg = match Config::load(&args.config, args.mode) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shelf-csi: {}: {e}", args.config.display());
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("{cfg:#?}");
        return ExitCode::SUCCESS;
    }
    let socket = match endpoint_path(&args.endpoint) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("shelf-csi: --endpoint: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shelf-csi: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(cfg, socket)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shelf-csi: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The socket path of a `unix://` endpoint (CSI endpoints are unix sockets; TCP is refused
/// because the plugin trusts whoever can reach it).
fn endpoint_path(endpoint: &str) -> Result<PathBuf, String> {
    let path = endpoint
        .strip_prefix("unix://")
        .unwrap_or(endpoint)
        .to_string();
    if endpoint.contains("://") && !endpoint.starts_with("unix://") {
        return Err(format!("{endpoint}: only unix:// endpoints are served"));
    }
    if !path.starts_with('/') {
        return Err(format!("{endpoint}: the socket path must be absolute"));
    }
    Ok(PathBuf::from(path))
}

/// Bind the unix socket with umask 077, so it is never, even for a moment, reachable by
/// another user (the chmod to 0600 after it only confirms). The old umask is restored
/// at once: the programs the node runs (mkfs makes a filesystem's root directory) and the
/// directories it makes inherit it. Nothing else runs yet, so no other file is created
/// in the window.
fn bind_private(socket: &std::path::Path) -> Result<tokio::net::UnixListener, String> {
    use nix::sys::stat::{umask, Mode};
    let old = umask(Mode::from_bits_truncate(0o077));
    let bound = tokio::net::UnixListener::bind(socket);
    umask(old);
    bound.map_err(|e| format!("cannot listen on {}: {e}", socket.display()))
}

/// Bind the socket and serve until SIGTERM or SIGINT.
async fn serve(cfg: Config, socket: PathBuf) -> Result<(), String> {
    let cfg = Arc::new(cfg);
    // A stale socket from a previous run is replaced; anything else at that path is not.
    if let Ok(meta) = std::fs::symlink_metadata(&socket) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{}: exists and is not a socket; not replacing it",
                socket.display()
            ));
        }
        std::fs::remove_file(&socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    }
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let listener = bind_private(&socket)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", socket.display()))?;
    }
    let incoming = Box::pin(futures_lite::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(stream, _)| stream);
        Some((next, l))
    }));
    let identity = identity::IdentityService::new(cfg.clone());
    let mut router = tonic::transport::Server::builder().add_service(IdentityServer::new(identity));
    if cfg.mode.serves_controller() {
        let controller = controller::ControllerService::new(cfg.clone());
        router = router.add_service(ControllerServer::new(controller));
    }
    if cfg.mode.serves_node() {
        let node = node::NodeService::new(cfg.clone()).map_err(|e| e.to_string())?;
        router = router.add_service(NodeServer::new(node));
    }
    log::info!(
        "shelf-csi {} serving {:?} on {} ({} appliance(s))",
        env!("CARGO_PKG_VERSION"),
        cfg.mode,
        socket.display(),
        cfg.appliances.len()
    );
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        log::info!("shelf-csi: stopping");
    };
    let result = router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| format!("serving: {e}"));
    let _ = std::fs::remove_file(&socket);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket has no group or other bits as bind makes it, before any chmod (the
    /// default umask 022 gives 0755, a window in which another user could connect).
    #[tokio::test]
    async fn the_socket_is_private_from_its_bind() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("csi.sock");
        let _listener = bind_private(&socket).unwrap();
        let mode = std::fs::symlink_metadata(&socket)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "no group or other bits: {mode:o}");
    }
}
