//! Closing a metrics connection so its reply survives: a socket closed with input still
//! unread is reset (RST) rather than closed (FIN), and a reset can destroy the reply before
//! the peer reads it (the kernel drops what it has not sent yet, and the peer may see
//! "connection reset" first). So after the reply the write side is shut down (the peer
//! reads the reply to its end) and what the peer sends is read and thrown away, within
//! bounds of bytes and time, before the socket is closed.
//!
//! Trust: the peer is anyone who reaches the listener; it may send forever, so both bounds
//! hold whatever it does.

use std::time::Duration;

use futures_lite::{future, AsyncRead, AsyncReadExt};

use super::http::MAX_HEAD;

/// Most bytes read from a peer after its reply.
pub const DRAIN_BYTES: usize = 16 * MAX_HEAD;
/// Longest wait for a peer to close after its reply.
pub const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Read and discard what the peer sends until it closes, [`DRAIN_BYTES`] are read or
/// [`DRAIN_TIME`] passes.
pub async fn drain<R: AsyncRead + Unpin>(r: &mut R) {
    let mut sink = [0u8; 4096];
    let reading = async {
        let mut left = DRAIN_BYTES;
        while left > 0 {
            match r.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(k) => left = left.saturating_sub(k),
            }
        }
    };
    let waited = async {
        smol::Timer::after(DRAIN_TIME).await;
    };
    future::or(reading, waited).await;
}

/// Read and discard what has already arrived, without waiting (at most [`DRAIN_BYTES`]):
/// `try_read` is a non-blocking read of the socket.
pub fn drain_now(mut try_read: impl FnMut(&mut [u8]) -> std::io::Result<usize>) {
    let mut sink = [0u8; 4096];
    let mut left = DRAIN_BYTES;
    while left > 0 {
        match try_read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(k) => left = left.saturating_sub(k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draining_stops_at_the_end_or_the_byte_bound() {
        smol::block_on(async {
            let mut short = futures_lite::io::Cursor::new(b"GET / HTTP/1.1\r\n\r\n".to_vec());
            drain(&mut short).await;
            assert_eq!(short.position(), 18);
            let mut endless = futures_lite::io::repeat(b'a');
            drain(&mut endless).await;
        });
        let mut calls = 0;
        drain_now(|b| {
            calls += 1;
            Ok(b.len())
        });
        assert_eq!(calls, DRAIN_BYTES / 4096);
        let mut calls = 0;
        drain_now(|_| {
            calls += 1;
            Err(std::io::ErrorKind::WouldBlock.into())
        });
        assert_eq!(calls, 1);
    }
}
