//! One connection: read frames, run requests concurrently, write replies in any order.

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures_lite::future;
use smol::Async;

use super::auth::Role;
use super::events::{subscribe, Sub};
use super::limits::{ConnState, Refusal};
use super::refuse::{refuse, refuse_roleless};
use super::Server;
use crate::error::Error;
use crate::proto::frame::FrameError;
use crate::proto::{Envelope, ErrorCode, Reply, Request};
use crate::store::{AuditEntry, AuditSlot};
use crate::sys::process::{peer_credentials, PeerCred};
use crate::sys::users::groups_of;

mod frames;

use frames::{decode_frame, next_frame, spawn_writer, Decoded, Ends, IdleTimer, Next};

/// What the writer sends: a reply, or an event of a subscription.
pub(super) enum Out {
    Reply(Reply),
    Event(ciborium::Value),
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
        crate::metrics::refused(why.reason());
        refuse(&server, stream, ErrorCode::Busy, message).await;
        return;
    }
    let _registered = Registered {
        server: &server,
        id: conn_id,
    };
    let _counted = crate::metrics::connection(role.as_str());
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
    let mut clock = IdleTimer::new(server.settings.idle_timeout.load(Ordering::Relaxed));
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
        let (body, charge) = match next_frame(server, &state, &stream, &ends, &mut clock).await {
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
                    crate::metrics::refused(crate::metrics::frame_reason(code));
                    answer(None, code, e.to_string()).await;
                }
                break;
            }
        };
        state.touch();
        let read_at = Instant::now();
        let decoded = decode_frame(server, body).await;
        drop(charge);
        let envelope = match decoded {
            Decoded::Request(env) => env,
            Decoded::BadFrame(e) => {
                // The frame was well delimited, so the stream is still in step: answer and
                // go on.
                crate::metrics::rejected(ErrorCode::InvalidArgument, read_at.elapsed());
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
                crate::metrics::rejected(code, read_at.elapsed());
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
        let t0 = Instant::now();
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
                let outcome = subscribe(&c.server, sub, a, c.tx, c.closing).await;
                crate::metrics::answered(&envelope.op, outcome, t0.elapsed());
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
    // The entry as it will be recorded; its outcome is set when the request ends, unless
    // the operation's final commit writes it first (as `ok`).
    let entry = |outcome: String, message: String| AuditEntry {
        seq: 0,
        at_ms: crate::store::now_ms(),
        uid: peer.cred.uid,
        gid: peer.cred.gid,
        pid: peer.cred.pid,
        role: role.as_str().to_string(),
        op: env.op.clone(),
        target: target.clone(),
        outcome,
        message,
        key: env.key.clone(),
    };
    let permitted = role.permits(&env.request);
    let slot = if audited && permitted {
        AuditSlot::new(entry("ok".to_string(), String::new()))
    } else {
        AuditSlot::default()
    };
    let result = if !permitted {
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
            // Boxed: the engine's futures would otherwise make every request's task as
            // large as the largest of them (src/engine/mod.rs, `dispatch`).
            (Some(key), Some(digest)) if audited => {
                Box::pin(
                    server
                        .engine
                        .handle_keyed(key, &env.op, digest, env.request, &slot),
                )
                .await
            }
            _ => Box::pin(server.engine.handle(env.request, &slot)).await,
        }
    };
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    crate::metrics::request(&env.op, &result, t0.elapsed());
    let denied = matches!(result, Err(Error::PermissionDenied(_)));
    if audited || denied {
        let (outcome, message) = match &result {
            Ok(_) => ("ok".to_string(), String::new()),
            Err(e) => (
                e.code().as_str().to_string(),
                e.to_string().chars().take(1000).collect(),
            ),
        };
        server
            .engine
            .finish_audit(&slot, entry(outcome, message))
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
