//! One connection: read frames, run requests concurrently, write replies in any order.

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use smol::Async;

use super::auth::Role;
use super::events::{subscribe, Sub};
use super::limits::{Charge, ConnState, Refusal, FREE_BYTES};
use super::refuse::{refuse, refuse_roleless};
use super::Server;
use crate::error::Error;
use crate::proto::frame::{self, FrameError};
use crate::proto::{encode_reply, parse_request, Envelope, ErrorCode, Reply, Request};
use crate::store::AuditEntry;
use crate::sys::process::{peer_credentials, PeerCred};
use crate::sys::users::groups_of;

/// Replies at least this large are followed by giving freed memory back to the kernel
/// (a list of thousands of objects would otherwise stay in the allocator's pools).
const LARGE_REPLY: usize = 64 << 10;

/// What the writer sends: a reply, or an event of a subscription.
pub(super) enum Out {
    Reply(Reply),
    Event(ciborium::Value),
}

enum Next {
    Frame(Result<Option<(Vec<u8>, Charge)>, FrameError>),
    /// Shutdown, or this connection was shed to make room for an admin.
    Stop,
    /// Nothing in flight and nothing received for the idle timeout.
    Idle,
}

/// Decoded off the executor when large: a frame's value checked into a request.
enum Decoded {
    BadFrame(FrameError),
    BadRequest(crate::proto::ArgsError),
    Request(Envelope),
}

fn decode(body: &[u8]) -> Decoded {
    match frame::decode_body(body) {
        Err(e) => Decoded::BadFrame(e),
        Ok(v) => match parse_request(v) {
            Ok(env) => Decoded::Request(env),
            Err(e) => Decoded::BadRequest(e),
        },
    }
}

/// Closes the connection's entry in the table when the connection ends.
struct Registered<'a> {
    server: &'a Server,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.server.conns.remove(self.id);
    }
}

pub(super) async fn serve(
    server: Arc<Server>,
    conn_id: u64,
    stream: Async<UnixStream>,
    stop: smol::channel::Receiver<()>,
) {
    let cred = match peer_credentials(stream.get_ref()) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("conn {conn_id}: cannot read peer credentials: {e}; closing");
            return;
        }
    };
    let (uid, gid) = (cred.uid, cred.gid);
    let roles = server.settings.roles();
    // The user database is read only when a role is given to a group.
    let groups = if roles.names_groups() {
        smol::unblock(move || groups_of(uid, gid)).await
    } else {
        vec![gid]
    };
    let peer = Arc::new(Peer { cred, groups });
    let role = roles.role_of(uid, &peer.groups);
    drop(roles);
    if role == Role::None {
        refuse_roleless(&server, conn_id, &peer, stream).await;
        return;
    }
    let (shed_tx, shed_rx) = smol::channel::bounded::<()>(1);
    let state = Arc::new(ConnState {
        uid,
        role,
        opened: Instant::now(),
        last_active_ms: Default::default(),
        busy: Default::default(),
        shed: Default::default(),
        shed_tx,
    });
    let s = &server.settings;
    let (max_total, max_per_uid) = (
        s.max_connections.load(Ordering::Relaxed),
        s.max_connections_per_uid.load(Ordering::Relaxed),
    );
    if let Err(why) = server
        .conns
        .admit(conn_id, state.clone(), max_total, max_per_uid)
    {
        let message = match why {
            Refusal::Total(n) => format!("shelfd has its maximum of {n} connections open; retry later (limits.max_connections)"),
            Refusal::PerUid(n) => format!("uid {uid} has its maximum of {n} connections open; close some (limits.max_connections_per_uid)"),
        };
        log::debug!("conn {conn_id}: {message}");
        refuse(&server, stream, ErrorCode::Busy, message).await;
        return;
    }
    let _registered = Registered {
        server: &server,
        id: conn_id,
    };
    log::debug!(
        "conn {conn_id}: open (uid {} pid {}, {})",
        peer.cred.uid,
        peer.cred.pid,
        role.as_str()
    );
    run_connection(&server, conn_id, peer, state, stream, stop, shed_rx).await;
    log::debug!("conn {conn_id}: closed");
}

async fn run_connection(
    server: &Arc<Server>,
    conn_id: u64,
    peer: Arc<Peer>,
    state: Arc<ConnState>,
    stream: Async<UnixStream>,
    stop: smol::channel::Receiver<()>,
    shed: smol::channel::Receiver<()>,
) {
    let stream = Arc::new(stream);
    let in_flight = server.settings.max_in_flight.load(Ordering::Relaxed);
    let (reply_tx, reply_rx) = smol::channel::bounded::<Out>(in_flight);
    // Closed when the writer ends (the peer stopped reading or went away): then the
    // connection closes at once, whatever the reader was waiting for.
    let (gone_tx, gone) = smol::channel::bounded::<()>(1);
    let writer = spawn_writer(
        server,
        conn_id,
        stream.clone(),
        state.clone(),
        reply_rx,
        gone_tx,
    );
    let ends = Ends {
        stop: &stop,
        shed: &shed,
        gone: &gone,
    };
    let slots = Arc::new(async_lock::Semaphore::new(in_flight));
    // Closed when the connection stops reading, so event forwarders let it close.
    let (closing_tx, closing_rx) = smol::channel::bounded::<()>(1);
    let subscribed = Arc::new(AtomicBool::new(false));
    let answer = |id: Option<u64>, code: ErrorCode, message: String| {
        let tx = reply_tx.clone();
        async move {
            let _ = tx
                .send(Out::Reply(Reply {
                    id,
                    result: Err((code, message)),
                }))
                .await;
        }
    };
    loop {
        // Wait for a free request slot before reading more: a client that pipelines faster
        // than we answer is slowed down, not buffered without bound. A peer that never
        // reads its replies keeps every slot taken, so the wait also ends on stop, shed or
        // the writer's end (its write timeout).
        let permit = match future::or(async { Some(slots.acquire_arc().await) }, async {
            ends.any().await;
            None
        })
        .await
        {
            Some(p) => p,
            None => break,
        };
        let (body, charge) = match next_frame(server, &state, &stream, &ends).await {
            Next::Stop => break,
            Next::Idle => {
                log::debug!("conn {conn_id}: idle; closing");
                break;
            }
            Next::Frame(Ok(None)) => break,
            Next::Frame(Ok(Some(frame))) => frame,
            Next::Frame(Err(e)) => {
                // The framing is lost (or the peer is gone): say why, then close.
                log::debug!("conn {conn_id}: {e}; closing");
                let code = match e {
                    FrameError::BudgetSpent { .. } => ErrorCode::Busy,
                    _ => ErrorCode::InvalidArgument,
                };
                if !matches!(e, FrameError::Io(_) | FrameError::Truncated { .. }) {
                    answer(None, code, e.to_string()).await;
                }
                break;
            }
        };
        state.touch();
        let decoded = decode_frame(server, body).await;
        drop(charge);
        let envelope = match decoded {
            Decoded::Request(env) => env,
            Decoded::BadFrame(e) => {
                // The frame was well delimited, so the stream is still in step: answer and
                // go on.
                answer(None, ErrorCode::InvalidArgument, e.to_string()).await;
                continue;
            }
            Decoded::BadRequest(e) => {
                let code = if e.unknown_op {
                    ErrorCode::Unsupported
                } else {
                    ErrorCode::InvalidArgument
                };
                log::debug!("conn {conn_id}: bad request (id {:?}): {}", e.id, e.message);
                answer(e.id, code, e.message).await;
                continue;
            }
        };
        let ctx = RequestCtx {
            server: server.clone(),
            conn_id,
            peer: peer.clone(),
            state: state.clone(),
            subscribed: subscribed.clone(),
            closing: closing_rx.clone(),
            tx: reply_tx.clone(),
        };
        dispatch(ctx, envelope, permit);
    }
    closing_tx.close();
    if state.shed.load(Ordering::Relaxed) || gone.is_closed() {
        // Shed, or the peer does not take its replies: close now. Requests in flight finish
        // on their own tasks; their replies have nowhere to go (the writer is gone).
        writer.cancel().await;
        log::debug!("conn {conn_id}: closed without waiting for requests in flight");
        return;
    }
    // Let requests in flight finish and their replies go out before closing.
    let mut all = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        all.push(slots.acquire().await);
    }
    drop(reply_tx);
    writer.await;
}

/// The connection's writer: replies and events, in the order they are ready.
/// Each frame must be written within `limits.write_timeout`, or the writer ends and with
/// it the connection: a peer that stops reading holds no slot, reply or descriptor longer.
fn spawn_writer(
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
            let value = match out {
                Out::Reply(reply) => encode_reply(&reply),
                Out::Event(event) => event,
            };
            let bytes = frame::encode(&value);
            drop(value);
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
async fn decode_frame(server: &Server, body: Vec<u8>) -> Decoded {
    if body.len() > FREE_BYTES {
        let _slot = server.decode_slots.acquire().await;
        smol::unblock(move || decode(&body)).await
    } else {
        decode(&body)
    }
}

/// What a request's task needs of its connection.
struct RequestCtx {
    server: Arc<Server>,
    conn_id: u64,
    peer: Arc<Peer>,
    state: Arc<ConnState>,
    subscribed: Arc<AtomicBool>,
    closing: smol::channel::Receiver<()>,
    tx: smol::channel::Sender<Out>,
}

/// Run one request on its own task; its slot is given back when it is answered.
fn dispatch(c: RequestCtx, envelope: Envelope, permit: async_lock::SemaphoreGuardArc) {
    c.state.busy.fetch_add(1, Ordering::Relaxed);
    smol::spawn(async move {
        let role = c
            .server
            .settings
            .roles()
            .role_of(c.peer.cred.uid, &c.peer.groups);
        match &envelope.request {
            Request::EventsSubscribe(a) if role.permits(&envelope.request) => {
                let sub = Sub {
                    id: envelope.id,
                    state: c.state.clone(),
                    subscribed: c.subscribed,
                };
                subscribe(&c.server, sub, a, c.tx, c.closing).await;
            }
            // Everything else, and a refused subscribe (answered and audited there).
            _ => {
                let reply = run_request(&c.server, c.conn_id, &c.peer, envelope).await;
                let _ = c.tx.send(Out::Reply(reply)).await;
            }
        }
        c.state.busy.fetch_sub(1, Ordering::Relaxed);
        drop(permit);
    })
    .detach();
}

/// What ends a connection from outside its reader: shutdown, a shed, the writer's end.
struct Ends<'a> {
    stop: &'a smol::channel::Receiver<()>,
    shed: &'a smol::channel::Receiver<()>,
    gone: &'a smol::channel::Receiver<()>,
}

impl Ends<'_> {
    /// Wait until one of them happens.
    async fn any(&self) {
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

/// Wait for the next frame: its first byte may take as long as the connection may stay
/// idle; from then on, the whole frame must arrive within the frame timeout.
async fn next_frame(
    server: &Server,
    state: &ConnState,
    stream: &Async<UnixStream>,
    ends: &Ends<'_>,
) -> Next {
    let ended = || async {
        ends.any().await;
        Next::Stop
    };
    loop {
        let idle = server.settings.idle_timeout.load(Ordering::Relaxed);
        let timer = if idle == 0 {
            smol::Timer::never()
        } else {
            smol::Timer::after(Duration::from_secs(idle))
        };
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
                continue
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

async fn read_one(
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

/// Who is at the other end: `SO_PEERCRED` and the groups of that user.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) cred: PeerCred,
    pub(super) groups: Vec<u32>,
}

async fn run_request(
    server: &Server,
    conn_id: u64,
    peer: &Peer,
    env: crate::proto::Envelope,
) -> Reply {
    let t0 = Instant::now();
    let role = server.settings.roles().role_of(peer.cred.uid, &peer.groups);
    let audited = env.request.is_mutation();
    let target = env.request.target();
    let result = if !role.permits(&env.request) {
        Err(Error::PermissionDenied(format!(
            "uid {} (role {}) may not run {}{}",
            peer.cred.uid,
            role.as_str(),
            env.op,
            if role == Role::Reader {
                "; readers may only use hello, list, show and tree"
            } else {
                "; ask for a role in the [access] section of shelf.toml"
            }
        )))
    } else {
        // The engine publishes the event an operation's outcome stands for; a kept answer
        // replayed for an idempotency key publishes none.
        match (&env.key, &env.digest) {
            (Some(key), Some(digest)) if audited => {
                server
                    .engine
                    .handle_keyed(key, &env.op, digest, env.request)
                    .await
            }
            _ => server.engine.handle(env.request).await,
        }
    };
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let denied = matches!(result, Err(Error::PermissionDenied(_)));
    if audited || denied {
        server
            .engine
            .audit(AuditEntry {
                seq: 0,
                at_ms: crate::store::now_ms(),
                uid: peer.cred.uid,
                gid: peer.cred.gid,
                pid: peer.cred.pid,
                role: role.as_str().to_string(),
                op: env.op.clone(),
                target,
                outcome: match &result {
                    Ok(_) => "ok".to_string(),
                    Err(e) => e.code().as_str().to_string(),
                },
                message: match &result {
                    Ok(_) => String::new(),
                    Err(e) => e.to_string().chars().take(1000).collect(),
                },
                key: env.key.clone(),
            })
            .await;
    }
    let peer = peer.cred;
    match &result {
        Ok(_) => log::debug!(
            "conn {conn_id} uid {} req {} {}: ok ({ms:.3} ms)",
            peer.uid,
            env.id,
            env.op
        ),
        Err(e) => log::debug!(
            "conn {conn_id} uid {} req {} {}: {} {e} ({ms:.3} ms)",
            peer.uid,
            env.id,
            env.op,
            e.code()
        ),
    }
    Reply {
        id: Some(env.id),
        result: result.map_err(|e| (e.code(), e.to_string())),
    }
}
