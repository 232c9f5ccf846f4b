//! The connection's frames (part of [`super`]): waiting for and reading the next one
//! within the idle and frame timeouts, decoding it into a request (off the executor when
//! large), and the writer that sends replies and events.

use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use smol::Async;

use super::Out;
use crate::proto::frame::{self, FrameError};
use crate::proto::{encode_reply, parse_request, Envelope};
use crate::server::auth::Role;
use crate::server::limits::{Charge, ConnState, FREE_BYTES};
use crate::server::Server;

/// Replies at least this large are followed by giving freed memory back to the kernel
/// (a list of thousands of objects would otherwise stay in the allocator's pools).
pub(super) const LARGE_REPLY: usize = 64 << 10;

pub(super) enum Next {
    Frame(Result<Option<(Vec<u8>, Charge)>, FrameError>),
    /// Shutdown, or this connection was shed to make room for an admin.
    Stop,
    /// Nothing in flight and nothing received for the idle timeout.
    Idle,
}

/// Decoded off the executor when large: a frame's value checked into a request.
pub(super) enum Decoded {
    BadFrame(FrameError),
    BadRequest(crate::proto::ArgsError),
    Request(Envelope),
}

pub(super) fn decode(body: &[u8]) -> Decoded {
    match frame::decode_body(body) {
        Err(e) => Decoded::BadFrame(e),
        Ok(v) => match parse_request(v) {
            Ok(env) => Decoded::Request(env),
            Err(e) => Decoded::BadRequest(e),
        },
    }
}

/// The connection's writer: replies and events, in the order they are ready.
/// Each frame must be written within `limits.write_timeout`, or the writer ends and with
/// it the connection: a peer that stops reading holds no slot, reply or descriptor longer.
pub(super) fn spawn_writer(
    server: &Arc<Server>,
    conn_id: u64,
    stream: Arc<Async<UnixStream>>,
    state: Arc<ConnState>,
    rx: smol::channel::Receiver<Out>,
    gone: smol::channel::Sender<()>,
) -> smol::Task<()> {
    let server = server.clone();
    smol::spawn(async move {
        let _gone = gone;
        let mut w = &*stream;
        while let Ok(out) = rx.recv().await {
            let bytes = match out {
                Out::Reply(reply) => encode_reply(reply),
                Out::Event(event) => frame::encode(&event),
            };
            let secs = server.settings.write_timeout.load(Ordering::Relaxed);
            let wrote = future::or(
                async { Some(frame::write_frame(&mut w, &bytes).await) },
                async {
                    smol::Timer::after(Duration::from_secs(secs)).await;
                    None
                },
            )
            .await;
            match wrote {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    log::debug!("conn {conn_id}: write failed: {e}");
                    break;
                }
                None => {
                    log::debug!(
                        "conn {conn_id}: the peer took no reply within {secs} s \
                         (limits.write_timeout); closing"
                    );
                    break;
                }
            }
            state.touch();
            if bytes.len() >= LARGE_REPLY {
                drop(bytes);
                smol::unblock(crate::sys::process::release_free_memory).await;
            }
        }
    })
}

/// A large frame is decoded on the blocking pool, so its cost never holds up other
/// connections, and at most [`super::DECODE_SLOTS`] at once (the values a frame decodes
/// into are bounded by its item count, their sum by the slots). A small one (at most
/// 4 KiB, so a few thousand items) costs less than the hand-over.
pub(super) async fn decode_frame(server: &Server, body: Vec<u8>) -> Decoded {
    if body.len() > FREE_BYTES {
        let _slot = server.decode_slots.acquire().await;
        smol::unblock(move || decode(&body)).await
    } else {
        decode(&body)
    }
}

/// What ends a connection from outside its reader: shutdown, a shed, the writer's end.
pub(super) struct Ends<'a> {
    pub(super) stop: &'a smol::channel::Receiver<()>,
    pub(super) shed: &'a smol::channel::Receiver<()>,
    pub(super) gone: &'a smol::channel::Receiver<()>,
}

impl Ends<'_> {
    /// Wait until one of them happens.
    pub(super) async fn any(&self) {
        future::or(
            async {
                let _ = self.stop.recv().await;
            },
            future::or(
                async {
                    let _ = self.shed.recv().await;
                },
                async {
                    let _ = self.gone.recv().await;
                },
            ),
        )
        .await;
    }
}

/// A connection's idle timer: one reactor timer for the connection's life, moved only
/// when it fires while the connection was not idle, or when `limits.idle_timeout` was
/// reloaded. A new timer per frame would cost every request a timer insert, and each
/// insert wakes the thread polling the reactor (async-io notifies it).
pub(super) struct IdleTimer {
    timer: smol::Timer,
    /// The `idle_timeout` it was armed for (0: never).
    secs: u64,
}

impl IdleTimer {
    pub(super) fn new(secs: u64) -> IdleTimer {
        IdleTimer {
            timer: Self::armed(secs, Duration::from_secs(secs)),
            secs,
        }
    }

    fn armed(secs: u64, left: Duration) -> smol::Timer {
        if secs == 0 {
            smol::Timer::never()
        } else {
            smol::Timer::after(left)
        }
    }
}

/// Wait for the next frame: its first byte may take as long as the connection may stay
/// idle; from then on, the whole frame must arrive within the frame timeout.
pub(super) async fn next_frame(
    server: &Server,
    state: &ConnState,
    stream: &Async<UnixStream>,
    ends: &Ends<'_>,
    clock: &mut IdleTimer,
) -> Next {
    let ended = || async {
        ends.any().await;
        Next::Stop
    };
    loop {
        let idle = server.settings.idle_timeout.load(Ordering::Relaxed);
        if idle != clock.secs {
            let left = Duration::from_secs(idle).saturating_sub(state.idle_for());
            *clock = IdleTimer {
                timer: IdleTimer::armed(idle, left),
                secs: idle,
            };
        }
        let timer = &mut clock.timer;
        let woke = future::or(
            async {
                let _ = stream.readable().await;
                None
            },
            future::or(async { Some(ended().await) }, async {
                timer.await;
                Some(Next::Idle)
            }),
        )
        .await;
        match woke {
            None => break,
            Some(Next::Idle)
                if state.busy.load(Ordering::Relaxed) > 0
                    || state.idle_for() < Duration::from_secs(idle) =>
            {
                // Active since it was armed: fire again when the connection will have
                // been idle that long (a request running counts as activity).
                let busy = state.busy.load(Ordering::Relaxed) > 0;
                let left = if busy {
                    Duration::from_secs(idle)
                } else {
                    Duration::from_secs(idle).saturating_sub(state.idle_for())
                };
                clock.timer.set_after(left.max(Duration::from_millis(10)));
                continue;
            }
            Some(other) => return other,
        }
    }
    let secs = server.settings.frame_timeout.load(Ordering::Relaxed);
    let max = server.settings.max_frame_size.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    future::or(
        async {
            let admin = state.role == Role::Admin;
            Next::Frame(read_one(server, stream, max, deadline, secs, admin).await)
        },
        ended(),
    )
    .await
}

pub(super) async fn read_one(
    server: &Server,
    stream: &Async<UnixStream>,
    max: u32,
    deadline: Instant,
    secs: u64,
    admin: bool,
) -> Result<Option<(Vec<u8>, Charge)>, FrameError> {
    let mut r = stream;
    let header = future::or(frame::read_header(&mut r, max), async {
        smol::Timer::at(deadline).await;
        Err(FrameError::HeaderTimeout { secs })
    })
    .await?;
    let Some(len) = header else {
        return Ok(None);
    };
    // A frame beyond its first bytes is charged to the budget of non-admins, or to the
    // admins' own: no reader can make an admin's upload wait for room.
    let charge = if admin {
        server.budget.admin_charge()
    } else {
        server.budget.charge()
    };
    let body = future::or(
        frame::read_body_growing(&mut r, len, FREE_BYTES, |n| charge.grow(n)),
        async {
            smol::Timer::at(deadline).await;
            Err(FrameError::Timeout { len, secs })
        },
    )
    .await?;
    Ok(Some((body, charge)))
}
