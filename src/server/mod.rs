//! The socket side: bind the listener, accept connections, shut down cleanly.
//!
//! Each connection is a task that reads frames, spawns one task per request (so a client
//! may pipeline and replies may come in any order), and writes replies through a single
//! writer. The transport knows nothing about pools: it hands typed requests to the
//! [`Engine`](crate::engine::Engine).

mod auth;
mod conn;

pub use auth::{Role, Roles};

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use smol::Async;

use crate::config::Config;
use crate::engine::Engine;

/// Settings the server reads on every connection; a config reload updates them.
#[derive(Debug)]
pub struct Settings {
    /// Largest frame accepted.
    pub max_frame_size: AtomicU32,
    /// Requests in flight per connection.
    pub max_in_flight: AtomicUsize,
    /// The roles in force.
    pub roles: std::sync::RwLock<Arc<Roles>>,
}

impl Settings {
    /// Settings from a config.
    /// Settings from a config and its resolved roles.
    pub fn from_config(c: &Config, roles: Roles) -> Self {
        Settings {
            max_frame_size: AtomicU32::new(c.max_frame_size),
            max_in_flight: AtomicUsize::new(c.max_in_flight),
            roles: std::sync::RwLock::new(Arc::new(roles)),
        }
    }

    /// Take the reloadable values of a new config.
    pub fn update(&self, c: &Config, roles: Roles) {
        self.max_frame_size
            .store(c.max_frame_size, Ordering::Relaxed);
        self.max_in_flight.store(c.max_in_flight, Ordering::Relaxed);
        *self.roles.write().expect("roles lock") = Arc::new(roles);
    }

    /// The roles in force now.
    pub fn roles(&self) -> Arc<Roles> {
        self.roles.read().expect("roles lock").clone()
    }
}

/// How long a frame body may take to arrive once its header has been read.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Bind the socket at `path` with mode 0660 (and group `gid` when given), replacing a
/// stale socket file but never a live one. The socket is bound under a temporary name and
/// renamed into place, so clients never see a socket with the wrong mode or group.
pub fn bind(path: &Path, gid: Option<u32>) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create socket directory {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "socket {} is in use by a running server; refusing to replace it",
                path.display()
            ));
        }
        log::info!("replacing stale socket {}", path.display());
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).map_err(|e| format!("cannot bind {}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("cannot chmod {}: {e}", tmp.display()))?;
    if let Some(g) = gid {
        crate::sys::users::chgrp(&tmp, g)
            .map_err(|e| format!("cannot give {} to group {g}: {e}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path)
        .map_err(|e| format!("cannot move socket into place at {}: {e}", path.display()))?;
    Ok(listener)
}

/// A running server: accept connections until `stop` closes, then drain.
#[derive(Debug)]
pub struct Server {
    engine: Arc<Engine>,
    settings: Arc<Settings>,
    next_conn: AtomicU64,
}

impl Server {
    /// A server over an engine.
    pub fn new(engine: Arc<Engine>, settings: Arc<Settings>) -> Arc<Self> {
        Arc::new(Server {
            engine,
            settings,
            next_conn: AtomicU64::new(1),
        })
    }

    /// Accept connections until `stop` is closed; then stop reading new requests, wait up
    /// to [`DRAIN_TIMEOUT`] for the ones in flight, and return.
    pub async fn run(self: Arc<Self>, listener: UnixListener, stop: smol::channel::Receiver<()>) {
        let listener = match Async::new(listener) {
            Ok(l) => l,
            Err(e) => {
                log::error!("cannot watch the listening socket: {e}");
                return;
            }
        };
        // Every connection task holds a clone of `alive`; when all are dropped, draining ends.
        let (alive, drained) = smol::channel::bounded::<()>(1);
        loop {
            let accepted = future::or(async { Some(listener.accept().await) }, async {
                let _ = stop.recv().await;
                None
            })
            .await;
            match accepted {
                None => break,
                Some(Ok((stream, _))) => {
                    let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
                    let me = self.clone();
                    let (alive, stop) = (alive.clone(), stop.clone());
                    smol::spawn(async move {
                        conn::serve(me, id, stream, stop).await;
                        drop(alive);
                    })
                    .detach();
                }
                Some(Err(e)) => {
                    log::warn!("accept failed: {e}");
                    smol::Timer::after(Duration::from_millis(50)).await;
                }
            }
        }
        drop(listener);
        drop(alive);
        log::info!("no longer accepting connections; waiting for requests in flight");
        let drained_in_time = future::or(
            async {
                let _ = drained.recv().await;
                true
            },
            async {
                smol::Timer::after(DRAIN_TIMEOUT).await;
                false
            },
        )
        .await;
        if !drained_in_time {
            log::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; stopping anyway (recovery finishes them at next start)");
        }
    }
}
