//! One connection: read frames, run requests concurrently, write replies in any order.

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use smol::Async;

use super::auth::Role;
use super::limits::{Charge, ConnState, Refusal, FREE_BYTES};
use super::Server;
use crate::error::Error;
use crate::proto::frame::{self, FrameError};
use crate::proto::{
    encode_reply, parse_request, Envelope, ErrorCode, EventsSubscribeArgs, Reply, Request,
};
use crate::store::AuditEntry;
use crate::sys::process::{peer_credentials, PeerCred};
use crate::sys::users::groups_of;

/// Replies at least this large are followed by giving freed memory back to the kernel
/// (a list of thousands of objects would otherwise stay in the allocator's pools).
const LARGE_REPLY: usize = 64 << 10;

/// Peers refused at connect whose close waits for their first request, at most.
const MAX_LINGERING: usize = 64;

/// What the writer sends: a reply, or an event of a subscription.
enum Out {
    Reply(Reply),
    Event(ciborium::Value),
}

/// The connection a subscription belongs to.
struct Sub {
    id: u64,
    state: Arc<ConnState>,
    subscribed: Arc<AtomicBool>,
}

/// Gives back a subscription's place in the global count and the connection's one slot.
struct SubGuard {
    server: Arc<Server>,
    state: Arc<ConnState>,
    subscribed: Arc<AtomicBool>,
}

impl Drop for SubGuard {
    fn drop(&mut self) {
        self.server.subscriptions.fetch_sub(1, Ordering::Relaxed);
        self.state.busy.fetch_sub(1, Ordering::Relaxed);
        self.subscribed.store(false, Ordering::Relaxed);
    }
}

/// `events.subscribe`: answer with the epoch, then forward the backlog and every new
/// event on this connection until it closes (or falls too far behind, which it is told).
/// One subscription per connection, and at most `limits.max_subscriptions` in all.
async fn subscribe(
    server: &Arc<Server>,
    conn: Sub,
    a: &EventsSubscribeArgs,
    tx: smol::channel::Sender<Out>,
    closing: smol::channel::Receiver<()>,
) {
    let id = conn.id;
    let refuse = |code: ErrorCode, message: String| {
        Out::Reply(Reply {
            id: Some(id),
            result: Err((code, message)),
        })
    };
    if conn.subscribed.swap(true, Ordering::Relaxed) {
        let _ = tx
            .send(refuse(
                ErrorCode::InvalidArgument,
                "this connection already has an event subscription (one per connection)".into(),
            ))
            .await;
        return;
    }
    let max = server.settings.max_subscriptions.load(Ordering::Relaxed);
    if server.subscriptions.fetch_add(1, Ordering::Relaxed) >= max {
        server.subscriptions.fetch_sub(1, Ordering::Relaxed);
        conn.subscribed.store(false, Ordering::Relaxed);
        let _ = tx
            .send(refuse(
                ErrorCode::Busy,
                format!(
                    "shelfd has its maximum of {max} event subscriptions open \
                     (limits.max_subscriptions); retry later"
                ),
            ))
            .await;
        return;
    }
    conn.state.busy.fetch_add(1, Ordering::Relaxed);
    let guard = SubGuard {
        server: server.clone(),
        state: conn.state,
        subscribed: conn.subscribed,
    };
    let sub = server
        .engine
        .events()
        .subscribe(a.since, a.epoch.as_deref());
    let reply = crate::engine::map_value(vec![
        ("epoch", ciborium::Value::Text(sub.epoch.clone())),
        ("gap", ciborium::Value::Bool(sub.gap)),
        (
            "backlog",
            ciborium::Value::Integer(sub.backlog.len().into()),
        ),
    ]);
    if tx
        .send(Out::Reply(Reply {
            id: Some(id),
            result: Ok(reply),
        }))
        .await
        .is_err()
    {
        return;
    }
    let frame = |e: &crate::engine::jobs::Event| {
        let v = ciborium::Value::serialized(e).unwrap_or(ciborium::Value::Null);
        Out::Event(ciborium::Value::Map(vec![(
            ciborium::Value::Text("event".into()),
            v,
        )]))
    };
    let tx2 = tx.clone();
    smol::spawn(async move {
        let _guard = guard;
        for e in &sub.backlog {
            if tx2.send(frame(e)).await.is_err() {
                return;
            }
        }
        loop {
            let next = future::or(async { sub.live.recv().await.ok().map(Some) }, async {
                let _ = closing.recv().await;
                Some(None)
            })
            .await;
            match next {
                // The connection is closing: stop forwarding so it can.
                Some(None) => return,
                Some(Some(e)) => {
                    if tx2.send(frame(&e)).await.is_err() {
                        return;
                    }
                }
                None => break,
            }
        }
        // The bus dropped us (we fell behind): say so; the client resubscribes with since.
        let overflow = ciborium::Value::Map(vec![(
            ciborium::Value::Text("event".into()),
            ciborium::Value::Map(vec![
                (
                    ciborium::Value::Text("kind".into()),
                    ciborium::Value::Text("overflow".into()),
                ),
                (
                    ciborium::Value::Text("epoch".into()),
                    ciborium::Value::Text(sub.epoch.clone()),
                ),
            ]),
        )]);
        let _ = tx2.send(Out::Event(overflow)).await;
    })
    .detach();
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

/// One frame written straight to the socket (before the writer task exists), with a
/// bound on how long a peer that does not read can hold it up.
async fn send_direct(stream: &Async<UnixStream>, code: ErrorCode, message: String) {
    let bytes = frame::encode(&encode_reply(&Reply {
        id: None,
        result: Err((code, message)),
    }));
    let mut w = stream;
    let _ = future::or(
        async {
            let _ = frame::write_frame(&mut w, &bytes).await;
        },
        async {
            smol::Timer::after(Duration::from_secs(1)).await;
        },
    )
    .await;
}

/// Refuse a peer at connect: one error frame, then close. The close waits (up to a
/// second, and only for a bounded number of such peers at once) for the peer's first
/// request or its end, so a client that writes before it reads still reads the refusal
/// instead of a broken pipe.
async fn refuse(server: &Server, stream: Async<UnixStream>, code: ErrorCode, message: String) {
    send_direct(&stream, code, message).await;
    if server.lingering.fetch_add(1, Ordering::Relaxed) < MAX_LINGERING {
        let _ = future::or(
            async {
                let _ = stream.readable().await;
            },
            async {
                smol::Timer::after(Duration::from_secs(1)).await;
            },
        )
        .await;
    }
    server.lingering.fetch_sub(1, Ordering::Relaxed);
}

/// A peer with no role: refused at connect, audited once per uid and minute.
async fn refuse_roleless(server: &Server, conn_id: u64, peer: &Peer, stream: Async<UnixStream>) {
    let uid = peer.cred.uid;
    let message = format!(
        "uid {uid} has no role on this socket; ask for one in the [access] section of shelf.toml"
    );
    if let Some(suppressed) = server.refusals.note(uid) {
        let note = if suppressed > 0 {
            format!(" ({suppressed} more refused connections of this uid since the last entry)")
        } else {
            String::new()
        };
        server.engine.audit(AuditEntry {
            seq: 0,
            at_ms: crate::store::now_ms(),
            uid,
            gid: peer.cred.gid,
            pid: peer.cred.pid,
            role: Role::None.as_str().to_string(),
            op: "connect".to_string(),
            target: String::new(),
            outcome: ErrorCode::PermissionDenied.as_str().to_string(),
            message: format!("{message}{note}"),
            key: None,
        });
    }
    log::debug!("conn {conn_id}: uid {uid} has no role; refused");
    refuse(server, stream, ErrorCode::PermissionDenied, message).await;
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
    let writer_stream = stream.clone();
    let writer_state = state.clone();
    let writer = smol::spawn(async move {
        let mut w = &*writer_stream;
        while let Ok(out) = reply_rx.recv().await {
            let value = match out {
                Out::Reply(reply) => encode_reply(&reply),
                Out::Event(event) => event,
            };
            let bytes = frame::encode(&value);
            drop(value);
            if let Err(e) = frame::write_frame(&mut w, &bytes).await {
                log::debug!("conn {conn_id}: write failed: {e}");
                break;
            }
            writer_state.touch();
            if bytes.len() >= LARGE_REPLY {
                drop(bytes);
                smol::unblock(crate::sys::process::release_free_memory).await;
            }
        }
    });
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
        // than we answer is slowed down, not buffered without bound.
        let permit = slots.acquire_arc().await;
        let (body, charge) = match next_frame(server, &state, &stream, &stop, &shed).await {
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
        // A large frame is decoded on the blocking pool, so its cost never holds up other
        // connections; a small one costs less than the hand-over.
        let decoded = if body.len() > FREE_BYTES {
            smol::unblock(move || decode(&body)).await
        } else {
            decode(&body)
        };
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
        let (server, tx, peer) = (server.clone(), reply_tx.clone(), peer.clone());
        let (closing, state, subscribed) = (closing_rx.clone(), state.clone(), subscribed.clone());
        state.busy.fetch_add(1, Ordering::Relaxed);
        smol::spawn(async move {
            let role = server.settings.roles().role_of(peer.cred.uid, &peer.groups);
            match &envelope.request {
                Request::EventsSubscribe(a) if role.permits(&envelope.request) => {
                    let sub = Sub {
                        id: envelope.id,
                        state: state.clone(),
                        subscribed,
                    };
                    subscribe(&server, sub, a, tx, closing).await;
                }
                // Everything else, and a refused subscribe (answered and audited there).
                _ => {
                    let reply = run_request(&server, conn_id, &peer, envelope).await;
                    let _ = tx.send(Out::Reply(reply)).await;
                }
            }
            state.busy.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        })
        .detach();
    }
    closing_tx.close();
    // Let requests in flight finish and their replies go out before closing.
    let mut all = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        all.push(slots.acquire().await);
    }
    drop(reply_tx);
    writer.await;
}

/// Wait for the next frame: its first byte may take as long as the connection may stay
/// idle; from then on, the whole frame must arrive within the frame timeout.
async fn next_frame(
    server: &Server,
    state: &ConnState,
    stream: &Async<UnixStream>,
    stop: &smol::channel::Receiver<()>,
    shed: &smol::channel::Receiver<()>,
) -> Next {
    let ended = || async {
        future::or(
            async {
                let _ = stop.recv().await;
            },
            async {
                let _ = shed.recv().await;
            },
        )
        .await;
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
        async { Next::Frame(read_one(server, stream, max, deadline, secs).await) },
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
    let charge = server.budget.charge();
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
struct Peer {
    cred: PeerCred,
    groups: Vec<u32>,
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
    let (result, replayed) = if !role.permits(&env.request) {
        (
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
            ))),
            false,
        )
    } else {
        match (&env.key, &env.digest) {
            (Some(key), Some(digest)) if audited => {
                server
                    .engine
                    .handle_keyed(key, &env.op, digest, env.request)
                    .await
            }
            _ => (server.engine.handle(env.request).await, false),
        }
    };
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    // A replayed answer changed nothing now: no event for it.
    if let (true, false, Ok(v)) = (audited, replayed, &result) {
        server.engine.publish_change(&env.op, &target, v);
    }
    let denied = matches!(result, Err(Error::PermissionDenied(_)));
    if audited || denied {
        server.engine.audit(AuditEntry {
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
        });
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
