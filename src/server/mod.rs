//! The socket side: bind the listener, accept connections, shut down cleanly.
//!
//! Each connection is a task that reads frames, spawns one task per request (so a client
//! may pipeline and replies may come in any order), and writes replies through a single
//! writer. The transport knows nothing about pools: it hands typed requests to the
//! [`Engine`](crate::engine::Engine).

mod auth;
mod conn;
mod events;
mod limits;
mod refuse;

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
    /// Open connections in all.
    pub max_connections: AtomicUsize,
    /// Open connections per uid (admins exempt).
    pub max_connections_per_uid: AtomicUsize,
    /// Seconds a frame may take once its first byte has arrived.
    pub frame_timeout: AtomicU64,
    /// Seconds an unused connection may stay silent (0: forever).
    pub idle_timeout: AtomicU64,
    /// Seconds one outgoing frame may take to be written.
    pub write_timeout: AtomicU64,
    /// Event subscriptions in all.
    pub max_subscriptions: AtomicUsize,
    /// Bytes of requests buffered in all (read at start only).
    pub request_buffer_bytes: u64,
}

impl Settings {
    /// Settings from a config.
    /// Settings from a config and its resolved roles.
    pub fn from_config(c: &Config, roles: Roles) -> Self {
        let l = &c.limits;
        Settings {
            max_frame_size: AtomicU32::new(c.max_frame_size),
            max_in_flight: AtomicUsize::new(c.max_in_flight),
            roles: std::sync::RwLock::new(Arc::new(roles)),
            max_connections: AtomicUsize::new(l.max_connections),
            max_connections_per_uid: AtomicUsize::new(l.max_connections_per_uid),
            frame_timeout: AtomicU64::new(l.frame_timeout),
            idle_timeout: AtomicU64::new(l.idle_timeout),
            write_timeout: AtomicU64::new(l.write_timeout),
            max_subscriptions: AtomicUsize::new(l.max_subscriptions),
            request_buffer_bytes: l.request_buffer_bytes,
        }
    }

    /// Take the reloadable values of a new config.
    pub fn update(&self, c: &Config, roles: Roles) {
        self.max_frame_size
            .store(c.max_frame_size, Ordering::Relaxed);
        self.max_in_flight.store(c.max_in_flight, Ordering::Relaxed);
        let l = &c.limits;
        self.max_connections
            .store(l.max_connections, Ordering::Relaxed);
        self.max_connections_per_uid
            .store(l.max_connections_per_uid, Ordering::Relaxed);
        self.frame_timeout.store(l.frame_timeout, Ordering::Relaxed);
        self.idle_timeout.store(l.idle_timeout, Ordering::Relaxed);
        self.write_timeout.store(l.write_timeout, Ordering::Relaxed);
        self.max_subscriptions
            .store(l.max_subscriptions, Ordering::Relaxed);
        *self.roles.write().expect("roles lock") = Arc::new(roles);
    }

    /// The roles in force now.
    pub fn roles(&self) -> Arc<Roles> {
        self.roles.read().expect("roles lock").clone()
    }
}

/// Large frames decoded at the same time, on the blocking pool.
pub const DECODE_SLOTS: usize = 4;
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

/// Wait `every`: true when it passed, false when `stop` closed (or was sent to) first. The
/// pace of shelfd's periodic tasks, each of which ends when its `stop` channel closes.
pub async fn tick_or_stop(every: Duration, stop: &smol::channel::Receiver<()>) -> bool {
    future::or(
        async {
            smol::Timer::after(every).await;
            true
        },
        async {
            let _ = stop.recv().await;
            false
        },
    )
    .await
}

/// Give the allocator's free pages back once the large frames that needed them are gone
/// (glibc keeps them otherwise: 1,000 parked megabyte frames left shelfd 50 MiB larger).
async fn trim_after_large_frames(server: Arc<Server>, stop: smol::channel::Receiver<()>) {
    loop {
        if !tick_or_stop(Duration::from_secs(2), &stop).await {
            return;
        }
        if server.budget.take_trim() {
            smol::unblock(crate::sys::process::release_free_memory).await;
        }
    }
}

/// The reserve descriptor (see [`Server::run`]).
fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// A running server: accept connections until `stop` closes, then drain.
#[derive(Debug)]
pub struct Server {
    engine: Arc<Engine>,
    settings: Arc<Settings>,
    next_conn: AtomicU64,
    /// Request bytes buffered by all connections.
    budget: limits::Budget,
    /// The open connections.
    conns: limits::ConnTable,
    /// Refused connections, for the audit's rate limit.
    refusals: limits::RefusalLog,
    /// Event subscriptions open.
    subscriptions: AtomicUsize,
    /// Refused connections waiting for their peer's first request.
    lingering: AtomicUsize,
    /// Large frames decoded at once (each may briefly take ~50 bytes per item).
    decode_slots: async_lock::Semaphore,
}

impl Server {
    /// A server over an engine.
    pub fn new(engine: Arc<Engine>, settings: Arc<Settings>) -> Arc<Self> {
        Arc::new(Server {
            budget: limits::Budget::new(settings.request_buffer_bytes),
            engine,
            settings,
            next_conn: AtomicU64::new(1),
            conns: limits::ConnTable::default(),
            refusals: limits::RefusalLog::default(),
            subscriptions: AtomicUsize::new(0),
            lingering: AtomicUsize::new(0),
            decode_slots: async_lock::Semaphore::new(DECODE_SLOTS),
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
        // A descriptor kept in reserve: when accept runs out of descriptors, it is given up
        // so the waiting peer can be accepted and judged (an admin is served, and the
        // idlest non-admin connection is shed to make room).
        let mut reserve = open_reserve();
        let mut warned = false;
        let trimmer = smol::spawn(trim_after_large_frames(self.clone(), stop.clone()));
        loop {
            if reserve.is_none() {
                reserve = open_reserve();
            }
            let accepted = future::or(async { Some(listener.accept().await) }, async {
                let _ = stop.recv().await;
                None
            })
            .await;
            let stream = match accepted {
                None => break,
                Some(Ok((stream, _))) => stream,
                Some(Err(e)) if out_of_descriptors(&e) => {
                    if !warned {
                        log::warn!(
                            "accept: {e} ({} connections open, {} bytes of requests \
                             buffered); shedding idle non-admin connections",
                            self.conns.len(),
                            self.budget.used_bytes()
                        );
                        warned = true;
                    }
                    let shed = self.conns.shed_idlest();
                    match reserve.take() {
                        Some(fd) => {
                            drop(fd);
                            let retried =
                                future::or(async { Some(listener.accept().await) }, async {
                                    let _ = stop.recv().await;
                                    None
                                })
                                .await;
                            match retried {
                                None => break,
                                Some(Ok((stream, _))) => stream,
                                Some(Err(e)) => {
                                    log::debug!("accept with the reserve descriptor: {e}");
                                    continue;
                                }
                            }
                        }
                        None => {
                            if !shed {
                                smol::Timer::after(Duration::from_millis(10)).await;
                            }
                            smol::future::yield_now().await;
                            continue;
                        }
                    }
                }
                Some(Err(e)) => {
                    log::warn!("accept failed: {e}");
                    smol::Timer::after(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
            let me = self.clone();
            let (alive, stop) = (alive.clone(), stop.clone());
            smol::spawn(async move {
                conn::serve(me, id, stream, stop).await;
                drop(alive);
            })
            .detach();
        }
        drop(listener);
        drop(alive);
        trimmer.cancel().await;
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
