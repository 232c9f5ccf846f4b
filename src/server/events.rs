//! `events.subscribe` on a connection: one subscription per connection, a global cap,
//! and the task that forwards the backlog and live events to the connection's writer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_lite::future;

use super::conn::Out;
use super::limits::ConnState;
use super::Server;
use crate::proto::{ErrorCode, EventsSubscribeArgs, Reply};

/// The connection a subscription belongs to.
pub(super) struct Sub {
    pub(super) id: u64,
    pub(super) state: Arc<ConnState>,
    pub(super) subscribed: Arc<AtomicBool>,
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
/// Returns how it was answered (`Err` with the code of a refusal), for the metrics.
pub(super) async fn subscribe(
    server: &Arc<Server>,
    conn: Sub,
    a: &EventsSubscribeArgs,
    tx: smol::channel::Sender<Out>,
    closing: smol::channel::Receiver<()>,
) -> Result<(), ErrorCode> {
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
        return Err(ErrorCode::InvalidArgument);
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
        crate::metrics::refused("max_subscriptions");
        return Err(ErrorCode::Busy);
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
            result: Ok(reply.into()),
        }))
        .await
        .is_err()
    {
        return Ok(());
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
    Ok(())
}
