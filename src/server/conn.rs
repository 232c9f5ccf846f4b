//! One connection: read frames, run requests concurrently, write replies in any order.

use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures_lite::future;
use smol::Async;

use super::{Server, BODY_TIMEOUT};
use crate::proto::frame::{self, FrameError};
use crate::proto::{encode_reply, parse_request, ErrorCode, Reply};
use crate::sys::process::{peer_credentials, PeerCred};

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
    log::debug!("conn {conn_id}: open (uid {} pid {})", peer.uid, peer.pid);
    let stream = Arc::new(stream);
    let in_flight = server.settings.max_in_flight.load(Ordering::Relaxed);
    let (reply_tx, reply_rx) = smol::channel::bounded::<Reply>(in_flight);
    let writer_stream = stream.clone();
    let writer = smol::spawn(async move {
        let mut w = &*writer_stream;
        while let Ok(reply) = reply_rx.recv().await {
            if let Err(e) = frame::write_frame(&mut w, &encode_reply(&reply)).await {
                log::debug!("conn {conn_id}: write failed: {e}");
                break;
            }
        }
    });
    let slots = Arc::new(async_lock::Semaphore::new(in_flight));
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
                        .send(Reply {
                            id: None,
                            result: Err((ErrorCode::InvalidArgument, e.to_string())),
                        })
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
                    .send(Reply {
                        id: None,
                        result: Err((ErrorCode::InvalidArgument, e.to_string())),
                    })
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
                    .send(Reply {
                        id: e.id,
                        result: Err((code, e.message)),
                    })
                    .await;
                continue;
            }
        };
        let (server, tx) = (server.clone(), reply_tx.clone());
        smol::spawn(async move {
            let reply = run_request(&server, conn_id, peer, envelope).await;
            let _ = tx.send(reply).await;
            drop(permit);
        })
        .detach();
    }
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

async fn run_request(
    server: &Server,
    conn_id: u64,
    peer: PeerCred,
    env: crate::proto::Envelope,
) -> Reply {
    let t0 = Instant::now();
    let result = server.engine.handle(env.request).await;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
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
