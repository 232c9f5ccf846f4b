//! One request and its reply on a local daemon's unix stream socket (tgtd's management
//! socket): connect, send, read until the daemon closes. Async, on the event loop's
//! terms: nothing blocks, the whole exchange has a deadline, and the reply is bounded in
//! bytes. The daemon answering is trusted (it is the one shelfd was configured to use),
//! its bytes are still bounded here and checked by the caller's decoder.

use std::path::Path;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Nothing listens on the socket (no such file, or refused).
    #[error("connecting to {path}: {source}")]
    Connect {
        /// The socket's path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Sending or receiving failed.
    #[error("talking to {path}: {source}")]
    Io {
        /// The socket's path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No complete reply within the deadline.
    #[error("no reply on {path} within {secs} s")]
    TimedOut {
        /// The socket's path.
        path: String,
        /// The deadline.
        secs: u64,
    },
    /// The reply was longer than the caller allows.
    #[error("the reply on {path} is longer than {max} bytes")]
    TooLong {
        /// The socket's path.
        path: String,
        /// The bound.
        max: usize,
    },
}

impl ExchangeError {
    /// Whether nothing listens: the socket file is missing, or no process accepts on it.
    pub fn nobody_listens(&self) -> bool {
        matches!(self, ExchangeError::Connect { source, .. }
            if matches!(source.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ECONNREFUSED) | Some(libc::ENOTDIR)))
    }
}

/// Send `request` on a new connection to `path` and read the reply until the peer closes,
/// at most `max_reply` bytes, everything within `timeout`. Dropping the future closes
/// the connection.
pub async fn exchange(
    path: &Path,
    request: &[u8],
    timeout: Duration,
    max_reply: usize,
) -> Result<Vec<u8>, ExchangeError> {
    let shown = || path.display().to_string();
    let talk = async {
        let mut s = smol::net::unix::UnixStream::connect(path)
            .await
            .map_err(|source| ExchangeError::Connect {
                path: shown(),
                source,
            })?;
        let io = |source| ExchangeError::Io {
            path: shown(),
            source,
        };
        s.write_all(request).await.map_err(io)?;
        s.flush().await.map_err(io)?;
        let mut reply = Vec::new();
        // One byte past the bound tells a reply that is too long from one that fits.
        let mut limited = (&mut s).take(max_reply as u64 + 1);
        limited.read_to_end(&mut reply).await.map_err(io)?;
        if reply.len() > max_reply {
            return Err(ExchangeError::TooLong {
                path: shown(),
                max: max_reply,
            });
        }
        Ok(reply)
    };
    let expired = async {
        smol::Timer::after(timeout).await;
        Err(ExchangeError::TimedOut {
            path: shown(),
            secs: timeout.as_secs(),
        })
    };
    future::or(talk, expired).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    fn serve(reply: Vec<u8>, hold: bool) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let l = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = [0u8; 4];
            c.read_exact(&mut req).unwrap();
            c.write_all(&reply).unwrap();
            if hold {
                std::thread::sleep(Duration::from_secs(3));
            }
        });
        (dir, path)
    }

    #[test]
    fn reads_the_reply_to_the_close() {
        let (_d, path) = serve(b"answer".to_vec(), false);
        let r = smol::block_on(exchange(&path, b"ping", Duration::from_secs(5), 100));
        assert_eq!(r.unwrap(), b"answer");
    }

    #[test]
    fn bounds_bytes_and_time() {
        let (_d, path) = serve(vec![b'x'; 200], false);
        let r = smol::block_on(exchange(&path, b"ping", Duration::from_secs(5), 100));
        assert!(matches!(r, Err(ExchangeError::TooLong { .. })), "{r:?}");
        let (_d, path) = serve(b"partial".to_vec(), true);
        let r = smol::block_on(exchange(&path, b"ping", Duration::from_millis(200), 100));
        assert!(matches!(r, Err(ExchangeError::TimedOut { .. })), "{r:?}");
    }

    #[test]
    fn a_missing_socket_is_nobody_listening() {
        let dir = tempfile::tempdir().unwrap();
        let r = smol::block_on(exchange(
            &dir.path().join("none"),
            b"ping",
            Duration::from_secs(1),
            10,
        ));
        assert!(r.unwrap_err().nobody_listens());
    }
}
