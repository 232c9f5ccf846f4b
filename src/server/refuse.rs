//! Refusing a connection when it opens: a peer with no role, or one past a connection cap.

use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::future;
use smol::Async;

use super::auth::Role;
use super::conn::Peer;
use super::Server;
use crate::proto::frame;
use crate::proto::{encode_reply, ErrorCode, Reply};

/// Peers refused at connect whose close waits for their first request, at most.
const MAX_LINGERING: usize = 64;

/// One frame written straight to the socket (before the writer task exists), with a
/// bound on how long a peer that does not read can hold it up.
async fn send_direct(stream: &Async<UnixStream>, code: ErrorCode, message: String) {
    let bytes = encode_reply(Reply {
        id: None,
        result: Err((code, message)),
    });
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
pub(super) async fn refuse(
    server: &Server,
    stream: Async<UnixStream>,
    code: ErrorCode,
    message: String,
) {
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
pub(super) async fn refuse_roleless(
    server: &Server,
    conn_id: u64,
    peer: &Peer,
    stream: Async<UnixStream>,
) {
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
        server.engine.record_refusal(
            uid,
            peer.cred.gid,
            peer.cred.pid,
            Role::None.as_str(),
            "connect",
            &format!("{message}{note}"),
        );
    }
    log::debug!("conn {conn_id}: uid {uid} has no role; refused");
    crate::metrics::refused("no_role");
    refuse(server, stream, ErrorCode::PermissionDenied, message).await;
}
