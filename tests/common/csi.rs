//! The CSI tests' harness: N real shelfd appliances (each a [`Rig`]: a scratch XFS, a
//! private tgtd and exports file, shelfd), the real `shelf-csi` binary serving a unix
//! socket in a scratch directory with a config naming them `a1`, `a2`, ..., and tonic
//! clients of its Identity, Controller and Node services over that socket. Sync tests
//! drive the async clients with [`Csi::block_on`].
//!
//! Drop kills the plugin first (printing its log when the test is failing), then unmounts
//! whatever formatted shares an appliance still has mounted, then each appliance's rig
//! stops its shelfd, tgtd and exports file and unmounts its XFS.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bpfman_csi::v1::controller_client::ControllerClient;
use bpfman_csi::v1::identity_client::IdentityClient;
use bpfman_csi::v1::node_client::NodeClient;
use tonic::transport::{Channel, Endpoint};

use super::world::{scratch, MountsUnder, Rig};

/// The driver name the harness gives the plugin.
pub const DRIVER: &str = "csi.test.shelf.io";

/// The topology key (the plugin's `config::TOPOLOGY_KEY`).
pub const TOPOLOGY_KEY: &str = "topology.shelf.io/node";

/// How long the plugin may take to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One appliance: its name in the plugin's config and its rig.
#[derive(Debug)]
pub struct Appliance {
    /// `a1`, `a2`, ...: the topology segment and the first part of volume ids.
    pub name: String,
    /// Unmounts the formatted shares shelfd left mounted; drops before `rig`.
    _mounts: MountsUnder,
    /// shelfd, its tgtd and exports file, its XFS.
    pub rig: Rig,
}

/// What to start: the sizes of the appliances' filesystems (one appliance each), the
/// plugin's mode, and extra plugin config (e.g. a `[node]` table).
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    /// One XFS size in bytes per appliance (sparse images: a large size costs nothing).
    pub sizes: &'a [u64],
    /// `controller`, `node` or `all`.
    pub mode: &'a str,
    /// Extra shelfd config for every appliance (before the drivers' sections).
    pub shelfd_extra: &'a str,
    /// Extra TOML appended to the plugin's config.
    pub plugin_extra: &'a str,
}

/// The plugin, its appliances and clients. Fields drop in order after `Drop::drop` killed
/// the plugin: the clients, their runtime, then the appliances, then the scratch directory.
#[derive(Debug)]
pub struct Csi {
    /// Identity client.
    pub identity: IdentityClient<Channel>,
    /// Controller client (served in modes `controller` and `all`).
    pub controller: ControllerClient<Channel>,
    /// Node client (served in modes `node` and `all`).
    pub node: NodeClient<Channel>,
    /// The runtime the clients run on.
    pub rt: tokio::runtime::Runtime,
    /// The plugin process.
    child: Child,
    /// The plugin's socket.
    pub socket: PathBuf,
    /// The plugin's config file.
    pub config: PathBuf,
    /// The plugin's log (stdout and stderr).
    pub log: PathBuf,
    /// The appliances, in config order.
    pub appliances: Vec<Appliance>,
    /// The plugin's scratch directory (socket, config, log); removed last.
    _dir: tempfile::TempDir,
}

impl Csi {
    /// A controller plugin over appliances with these filesystem sizes.
    pub fn controller(tag: &str, sizes: &[u64]) -> Csi {
        Csi::start(
            tag,
            Spec {
                sizes,
                mode: "controller",
                shelfd_extra: "",
                plugin_extra: "",
            },
        )
    }

    /// Start the appliances and the plugin, and connect the clients; panics (cleaning up)
    /// when something does not come up.
    pub fn start(tag: &str, spec: Spec<'_>) -> Csi {
        let dir = scratch(&format!("csi-{tag}"));
        let mut appliances = Vec::new();
        let mut text = format!("driver_name = {DRIVER:?}\n");
        for (i, size) in spec.sizes.iter().enumerate() {
            let name = format!("a{}", i + 1);
            let rig = Rig::start(&format!("{tag}-{name}"), *size, spec.shelfd_extra, true);
            text.push_str(&format!(
                "\n[[appliance]]\nname = {name:?}\nsocket = {:?}\n",
                rig.d.socket.display().to_string()
            ));
            let mounts = MountsUnder(rig.d.state.join("mounts"));
            appliances.push(Appliance {
                name,
                _mounts: mounts,
                rig,
            });
        }
        text.push_str(spec.plugin_extra);
        let config = dir.path().join("shelf-csi.toml");
        std::fs::write(&config, &text).unwrap();
        let socket = dir.path().join("csi.sock");
        let log = dir.path().join("shelf-csi.log");
        let child = spawn(&socket, &config, &log, spec.mode);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // From here on a panic drops `guard`, which kills the plugin and cleans up.
        let mut guard = Partial {
            child: Some(child),
            log: log.clone(),
        };
        let channel = rt.block_on(wait_for_socket(&socket, &mut guard));
        let child = guard.child.take().unwrap();
        Csi {
            identity: IdentityClient::new(channel.clone()),
            controller: ControllerClient::new(channel.clone()),
            node: NodeClient::new(channel),
            rt,
            child,
            socket,
            config,
            log,
            appliances,
            _dir: dir,
        }
    }

    /// Run a future (an RPC) to completion on the harness's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The appliance called `name`.
    pub fn appliance(&self, name: &str) -> &Appliance {
        self.appliances
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no appliance {name}"))
    }

    /// The accessible-topology segment of appliance `name`.
    pub fn segment(name: &str) -> HashMap<String, String> {
        HashMap::from([(TOPOLOGY_KEY.to_string(), name.to_string())])
    }

    /// The plugin's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the plugin process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Csi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- shelf-csi log ---\n{}", self.log_text());
        }
    }
}

/// The plugin before the clients are connected: killed (log printed) if start-up panics.
struct Partial {
    child: Option<Child>,
    log: PathBuf,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- shelf-csi log ---\n{text}");
        }
    }
}

/// Spawn the real binary with its output in `log`.
fn spawn(socket: &Path, config: &Path, log: &Path, mode: &str) -> Child {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    Command::new(env!("CARGO_BIN_EXE_shelf-csi"))
        .arg("--endpoint")
        .arg(format!("unix://{}", socket.display()))
        .arg("--config")
        .arg(config)
        .arg("--mode")
        .arg(mode)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn shelf-csi")
}

/// A channel to the plugin once its socket accepts; panics if the plugin exits or the
/// socket does not come within [`START_TIMEOUT`].
async fn wait_for_socket(socket: &Path, guard: &mut Partial) -> Channel {
    let start = Instant::now();
    loop {
        let child = guard.child.as_mut().unwrap();
        if let Ok(Some(status)) = child.try_wait() {
            panic!("shelf-csi exited at start-up ({status})");
        }
        if socket.exists() {
            if let Ok(ch) = connect(socket).await {
                return ch;
            }
        }
        assert!(
            start.elapsed() < START_TIMEOUT,
            "shelf-csi did not open {} within {START_TIMEOUT:?}",
            socket.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A tonic channel over the unix socket (the URI is a placeholder tonic needs).
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_| {
            tokio::net::UnixStream::connect(path.clone())
        }))
        .await
}
