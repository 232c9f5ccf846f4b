//! One connection: read frames, run requests concurrently, write replies in any order.

use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures_lite::future;
use smol::Async;

use super::auth::Role;
use super::{Server, BODY_TIMEOUT};
use crate::error::Error;
use crate::proto::frame::{self, FrameError};
use crate::proto::{encode_reply, parse_request, ErrorCode, EventsSubscribeArgs, Reply, Request};
use crate::store::AuditEntry;
use crate::sys::process::{peer_credentials, PeerCred};
use crate::sys::users::groups_of;

/// Replies at least this large are followed by giving freed memory back to the kernel
/// (a list of thousands of objects would otherwise stay in the allocator's pools).
const LARGE_REPLY: usize = 64 << 10;

/// What the writer sends: a reply, or an event of a subscription.
enum Out {
    Reply(Reply),
    Event(ciborium::Value),
}

/// `events.subscribe`: answer with the epoch, then forward the backlog and every new
/// event on this connection until it closes (or falls too far behind, which it is told).
async fn subscribe(
    server: &Arc<Server>,
    id: u64,
    a: &EventsSubscribeArgs,
    tx: smol::channel::Sender<Out>,
    closing: smol::channel::Receiver<()>,
) {
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
    Frame(Result<Option<Vec<u8>>, FrameError>),
    Stop,
}

pub(super) async fn serve(
    server: Arc<Server>,
    conn_id: u64,
    stream: Async<UnixStream>,
    stop: smol::channel::Receiver<()>,
) {
    let peer = match peer_credentials(stream.get_ref()) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("conn {conn_id}: cannot read peer credentials: {e}; closing");
            return;
        }
    };
    let (uid, gid) = (peer.uid, peer.gid);
    let groups = smol::unblock(move || groups_of(uid, gid)).await;
    let peer = Arc::new(Peer { cred: peer, groups });
    log::debug!(
        "conn {conn_id}: open (uid {} pid {})",
        peer.cred.uid,
        peer.cred.pid
    );
    let stream = Arc::new(stream);
    let in_flight = server.settings.max_in_flight.load(Ordering::Relaxed);
    let (reply_tx, reply_rx) = smol::channel::bounded::<Out>(in_flight);
    let writer_stream = stream.clone();
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
            if bytes.len() >= LARGE_REPLY {
                drop(bytes);
                smol::unblock(crate::sys::process::release_free_memory).await;
            }
        }
    });
    let slots = Arc::new(async_lock::Semaphore::new(in_flight));
    // Closed when the connection stops reading, so event forwarders let it close.
    let (closing_tx, closing_rx) = smol::channel::bounded::<()>(1);
    loop {
        // Wait for a free request slot before reading more: a client that pipelines faster
        // than we answer is slowed down, not buffered without bound.
        let permit = slots.acquire_arc().await;
        let max = server.settings.max_frame_size.load(Ordering::Relaxed);
        let next = future::or(async { Next::Frame(read_one(&stream, max).await) }, async {
            let _ = stop.recv().await;
            Next::Stop
        })
        .await;
        let body = match next {
            Next::Stop => break,
            Next::Frame(Ok(None)) => break,
            Next::Frame(Ok(Some(body))) => body,
            Next::Frame(Err(e)) => {
                // The framing is lost (or the peer is gone): say why, then close.
                log::debug!("conn {conn_id}: {e}; closing");
                if !matches!(e, FrameError::Io(_) | FrameError::Truncated { .. }) {
                    let _ = reply_tx
                        .send(Out::Reply(Reply {
                            id: None,
                            result: Err((ErrorCode::InvalidArgument, e.to_string())),
                        }))
                        .await;
                }
                break;
            }
        };
        let value = match frame::decode_body(&body) {
            Ok(v) => v,
            Err(e) => {
                // The frame was well delimited, so the stream is still in step: answer and
                // go on.
                let _ = reply_tx
                    .send(Out::Reply(Reply {
                        id: None,
                        result: Err((ErrorCode::InvalidArgument, e.to_string())),
                    }))
                    .await;
                continue;
            }
        };
        drop(body);
        let envelope = match parse_request(value) {
            Ok(env) => env,
            Err(e) => {
                let code = if e.unknown_op {
                    ErrorCode::Unsupported
                } else {
                    ErrorCode::InvalidArgument
                };
                log::debug!("conn {conn_id}: bad request (id {:?}): {}", e.id, e.message);
                let _ = reply_tx
                    .send(Out::Reply(Reply {
                        id: e.id,
                        result: Err((code, e.message)),
                    }))
                    .await;
                continue;
            }
        };
        let (server, tx, peer) = (server.clone(), reply_tx.clone(), peer.clone());
        let closing = closing_rx.clone();
        smol::spawn(async move {
            let role = server.settings.roles().role_of(peer.cred.uid, &peer.groups);
            match &envelope.request {
                Request::EventsSubscribe(a) if role.permits(&envelope.request) => {
                    subscribe(&server, envelope.id, a, tx, closing).await;
                }
                // Everything else, and a refused subscribe (answered and audited there).
                _ => {
                    let reply = run_request(&server, conn_id, &peer, envelope).await;
                    let _ = tx.send(Out::Reply(reply)).await;
                }
            }
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
    log::debug!("conn {conn_id}: closed");
}

async fn read_one(stream: &Async<UnixStream>, max: u32) -> Result<Option<Vec<u8>>, FrameError> {
    let mut r = stream;
    let Some(len) = frame::read_header(&mut r, max).await? else {
        return Ok(None);
    };
    future::or(
        async { frame::read_body(&mut r, len).await.map(Some) },
        async {
            smol::Timer::after(BODY_TIMEOUT).await;
            Err(FrameError::Timeout {
                len,
                secs: BODY_TIMEOUT.as_secs(),
            })
        },
    )
    .await
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
