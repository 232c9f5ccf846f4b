//! One request and its reply on a local daemon's unix stream socket (tgtd's management
//! socket): connect, check who listens, send, read one length-prefixed reply. Async, on
//! the event loop's terms: nothing blocks, the whole exchange has a deadline, and the
//! reply is bounded before it is read: the header is read first and a reply announcing
//! more than the caller allows is refused without reading it, so one reply costs at most
//! the bound (one buffer of exactly the announced size). The daemon answering is trusted
//! only once its `SO_PEERCRED` uid is the one the caller expects; its bytes are still
//! bounded here and checked by the caller's decoder.

use std::path::Path;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

use super::process::peer_credentials;

/// How the reply is framed and bounded, and who must answer.
#[derive(Debug, Clone, Copy)]
pub struct ReplyFrame {
    /// Bytes of the fixed header that announces the reply's length.
    pub header: usize,
    /// The reply's total length (header included) as the header announces it, or why the
    /// header is not one.
    pub total_len: fn(&[u8]) -> Result<usize, String>,
    /// The most bytes a reply may have, header included.
    pub max_reply: usize,
    /// The uid the listening process must run as (checked before anything is sent).
    pub peer_uid: u32,
}

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
    /// The process listening on the socket is not the daemon: it runs as another user.
    /// Nothing was sent.
    #[error("the process listening on {path} (pid {pid}) runs as uid {uid}, not uid {want}: not the daemon, nothing sent")]
    NotTheDaemon {
        /// The socket's path.
        path: String,
        /// The listener's uid.
        uid: u32,
        /// The listener's pid.
        pid: i32,
        /// The uid expected.
        want: u32,
    },
    /// Sending or receiving failed.
    #[error("talking to {path}: {source}")]
    Io {
        /// The socket's path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The peer closed before the whole announced reply came.
    #[error("the reply on {path} stopped after {got} of {want} bytes")]
    Truncated {
        /// The socket's path.
        path: String,
        /// Bytes received.
        got: usize,
        /// Bytes announced (or the header's size).
        want: usize,
    },
    /// No complete reply within the deadline.
    #[error("no reply on {path} within {secs} s")]
    TimedOut {
        /// The socket's path.
        path: String,
        /// The deadline.
        secs: u64,
    },
    /// The reply announced more bytes than the caller allows; it was not read.
    #[error("the reply on {path} announces {announced} bytes, more than the {max} allowed")]
    TooLong {
        /// The socket's path.
        path: String,
        /// The announced length.
        announced: usize,
        /// The bound.
        max: usize,
    },
    /// The reply is not framed as the protocol says (a bad header, or bytes after it).
    #[error("the reply on {path} is not framed as expected: {why}")]
    Malformed {
        /// The socket's path.
        path: String,
        /// What is wrong.
        why: String,
    },
}

impl ExchangeError {
    /// Whether nothing listens: the socket file is missing, or no process accepts on it.
    pub fn nobody_listens(&self) -> bool {
        matches!(self, ExchangeError::Connect { source, .. }
            if matches!(source.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ECONNREFUSED) | Some(libc::ENOTDIR)))
    }

    /// Whether the socket file is missing (as opposed to present with nobody accepting).
    pub fn no_socket_file(&self) -> bool {
        matches!(self, ExchangeError::Connect { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)))
    }

    /// Whether a complete answer came that does not follow the framing: the peer speaks
    /// something else (as opposed to a connection cut short or a timeout).
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            ExchangeError::Malformed { .. } | ExchangeError::TooLong { .. }
        )
    }
}

/// Send `request` on a new connection to `path` and read one reply framed by `frame`,
/// everything within `timeout`. The listener's uid is checked before anything is sent;
/// the header is read before the body, whose buffer has exactly the announced size; the
/// peer must then close (one request per connection). Dropping the future closes the
/// connection.
pub async fn exchange(
    path: &Path,
    request: &[u8],
    timeout: Duration,
    frame: ReplyFrame,
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
        let cred = peer_credentials(&s).map_err(io)?;
        if cred.uid != frame.peer_uid {
            return Err(ExchangeError::NotTheDaemon {
                path: shown(),
                uid: cred.uid,
                pid: cred.pid,
                want: frame.peer_uid,
            });
        }
        s.write_all(request).await.map_err(io)?;
        s.flush().await.map_err(io)?;
        let mut reply = vec![0u8; frame.header];
        read_full(&mut s, &mut reply, frame.header, path).await?;
        let total = (frame.total_len)(&reply)
            .map_err(|why| ExchangeError::Malformed { path: shown(), why })?;
        if total > frame.max_reply {
            return Err(ExchangeError::TooLong {
                path: shown(),
                announced: total,
                max: frame.max_reply,
            });
        }
        if total < frame.header {
            return Err(ExchangeError::Malformed {
                path: shown(),
                why: format!("a length of {total}, shorter than the header"),
            });
        }
        reply.resize(total, 0);
        read_full(&mut s, &mut reply[frame.header..], total, path).await?;
        let mut more = [0u8; 1];
        if s.read(&mut more).await.map_err(io)? != 0 {
            return Err(ExchangeError::Malformed {
                path: shown(),
                why: format!("more bytes after the announced {total}"),
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

/// Fill `buf` from `s`; a close before it is full is [`ExchangeError::Truncated`]
/// (`want`: the length announced, for the message).
async fn read_full(
    s: &mut smol::net::unix::UnixStream,
    buf: &mut [u8],
    want: usize,
    path: &Path,
) -> Result<(), ExchangeError> {
    let shown = || path.display().to_string();
    let start = want - buf.len();
    let mut got = 0;
    while got < buf.len() {
        let n = s
            .read(&mut buf[got..])
            .await
            .map_err(|source| ExchangeError::Io {
                path: shown(),
                source,
            })?;
        if n == 0 {
            return Err(ExchangeError::Truncated {
                path: shown(),
                got: start + got,
                want,
            });
        }
        got += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;

    /// 8-byte header, total length in bytes 4..8 (tgtadm_rsp's shape).
    fn frame(max_reply: usize) -> ReplyFrame {
        ReplyFrame {
            header: 8,
            total_len: |h| Ok(u32::from_ne_bytes(h[4..8].try_into().unwrap()) as usize),
            max_reply,
            peer_uid: nix::unistd::geteuid().as_raw(),
        }
    }

    fn reply(text: &[u8], announce: usize) -> Vec<u8> {
        let mut r = 0u32.to_ne_bytes().to_vec();
        r.extend_from_slice(&(announce as u32).to_ne_bytes());
        r.extend_from_slice(text);
        r
    }

    /// A one-connection server: answers `reply`, holds the connection open if `hold`;
    /// sends back how many request bytes it received.
    fn serve(
        reply: Vec<u8>,
        hold: bool,
    ) -> (tempfile::TempDir, std::path::PathBuf, mpsc::Receiver<usize>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let l = UnixListener::bind(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut req = [0u8; 4];
            let got = c.read(&mut req).unwrap_or(0);
            let _ = tx.send(got);
            let _ = c.write_all(&reply);
            if hold {
                std::thread::sleep(Duration::from_secs(3));
            }
        });
        (dir, path, rx)
    }

    fn run(path: &Path, secs: u64, f: ReplyFrame) -> Result<Vec<u8>, ExchangeError> {
        smol::block_on(exchange(path, b"ping", Duration::from_secs(secs), f))
    }

    #[test]
    fn reads_exactly_the_announced_reply() {
        let r = reply(b"answer", 14);
        let (_d, path, _rx) = serve(r.clone(), false);
        assert_eq!(run(&path, 5, frame(100)).unwrap(), r);
    }

    #[test]
    fn a_reply_announcing_more_than_the_bound_is_refused_unread() {
        // The server sends only the header; the announced 64 MiB is never read or
        // allocated: the refusal comes from the header alone.
        let (_d, path, _rx) = serve(reply(b"", 64 << 20), true);
        match run(&path, 5, frame(4 << 20)) {
            Err(ExchangeError::TooLong { announced, max, .. }) => {
                assert_eq!((announced, max), (64 << 20, 4 << 20))
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn short_long_and_slow_replies_are_each_named() {
        let (_d, path, _rx) = serve(reply(b"par", 20), false);
        let r = run(&path, 5, frame(100));
        assert!(
            matches!(
                r,
                Err(ExchangeError::Truncated {
                    got: 11,
                    want: 20,
                    ..
                })
            ),
            "{r:?}"
        );
        let (_d, path, _rx) = serve(vec![1, 2, 3], false);
        let r = run(&path, 5, frame(100));
        assert!(
            matches!(
                r,
                Err(ExchangeError::Truncated {
                    got: 3,
                    want: 8,
                    ..
                })
            ),
            "{r:?}"
        );
        let (_d, path, _rx) = serve(reply(b"abc", 9), false);
        let r = run(&path, 5, frame(100));
        assert!(
            matches!(&r, Err(e @ ExchangeError::Malformed { .. }) if e.is_malformed()),
            "{r:?}"
        );
        let (_d, path, _rx) = serve(reply(b"", 4), false);
        let r = run(&path, 5, frame(100));
        assert!(matches!(r, Err(ExchangeError::Malformed { .. })), "{r:?}");
        let (_d, path, _rx) = serve(reply(b"part", 20), true);
        let r = smol::block_on(exchange(
            &path,
            b"ping",
            Duration::from_millis(200),
            frame(100),
        ));
        assert!(matches!(r, Err(ExchangeError::TimedOut { .. })), "{r:?}");
    }

    #[test]
    fn a_listener_of_another_uid_gets_nothing() {
        let (_d, path, rx) = serve(reply(b"", 8), false);
        let mut f = frame(100);
        f.peer_uid = f.peer_uid.wrapping_add(4242);
        let r = run(&path, 5, f);
        assert!(
            matches!(r, Err(ExchangeError::NotTheDaemon { .. })),
            "{r:?}"
        );
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            0,
            "nothing was sent"
        );
    }

    #[test]
    fn a_missing_socket_is_nobody_listening() {
        let dir = tempfile::tempdir().unwrap();
        let r = run(&dir.path().join("none"), 1, frame(10));
        let e = r.unwrap_err();
        assert!(e.nobody_listens() && e.no_socket_file());
    }
}
