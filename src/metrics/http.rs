//! The metrics listener: a minimal HTTP/1.1 server for `GET /metrics`, on the event loop.
//!
//! Trust: anyone who can reach the address (loopback by default; see `metrics.allow_remote`)
//! or the socket (mode 0660). So every byte is hostile and every cost is bounded: at most
//! `max_scrapes` connections are served at once (the next is answered 503 without reading
//! its head, and closed as [`super::linger`] says), a request head is read into at most [`MAX_HEAD`] bytes within `request_timeout`,
//! the reply must be taken within `request_timeout` too, and every reply closes the
//! connection (`Connection: close`, no keep-alive, no body read).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::Async;

use super::collect::Collector;
use super::render::CONTENT_TYPE;
use crate::config::{MetricsConfig, MetricsListen};

/// Largest request head read (request line and headers); a longer one is answered 431.
pub const MAX_HEAD: usize = 8 << 10;

/// The bound socket.
#[derive(Debug)]
pub enum Listener {
    /// A TCP address.
    Tcp(Async<TcpListener>),
    /// A unix socket, removed when the listener stops.
    Unix(Async<UnixListener>, PathBuf),
}

impl Listener {
    /// Bind what the config names.
    pub fn bind(at: &MetricsListen) -> Result<Listener, String> {
        match at {
            MetricsListen::Tcp(addr) => {
                let l = TcpListener::bind(addr)
                    .map_err(|e| format!("metrics.listen: cannot bind {addr}: {e}"))?;
                Async::new(l)
                    .map(Listener::Tcp)
                    .map_err(|e| format!("metrics.listen: cannot watch {addr}: {e}"))
            }
            MetricsListen::Unix(path) => {
                let l =
                    crate::server::bind(path, None).map_err(|e| format!("metrics.listen: {e}"))?;
                Async::new(l)
                    .map(|l| Listener::Unix(l, path.clone()))
                    .map_err(|e| format!("metrics.listen: cannot watch {}: {e}", path.display()))
            }
        }
    }

    /// Where it listens, for the log.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .get_ref()
                .local_addr()
                .map(|a| format!("http://{a}/metrics"))
                .unwrap_or_else(|_| "a TCP address".into()),
            Listener::Unix(_, p) => format!("unix socket {}", p.display()),
        }
    }
}

/// A connection that can say it will write no more (so the peer reads a reply to the end
/// before the socket closes).
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn shutdown_write(&self);
    /// Write `bytes` now if the socket takes them, without waiting.
    fn try_write(&self, bytes: &[u8]);
    /// Read what has arrived, without waiting.
    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize>;
}

impl Stream for Async<std::net::TcpStream> {
    fn shutdown_write(&self) {
        let _ = self.get_ref().shutdown(std::net::Shutdown::Write);
    }
    fn try_write(&self, bytes: &[u8]) {
        let mut s = self.get_ref();
        let _ = s.write(bytes);
    }
    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut s = self.get_ref();
        s.read(buf)
    }
}

impl Stream for Async<std::os::unix::net::UnixStream> {
    fn shutdown_write(&self) {
        let _ = self.get_ref().shutdown(std::net::Shutdown::Write);
    }
    fn try_write(&self, bytes: &[u8]) {
        let mut s = self.get_ref();
        let _ = s.write(bytes);
    }
    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut s = self.get_ref();
        s.read(buf)
    }
}

/// Serve scrapes until `stop` closes.
pub async fn serve(
    listener: Listener,
    collector: Arc<Collector>,
    config: &MetricsConfig,
    stop: smol::channel::Receiver<()>,
) {
    let slots = Arc::new(async_lock::Semaphore::new(config.max_scrapes));
    // Connections answered 503 that wait for their peer to close (see `linger`).
    let lingering = Arc::new(async_lock::Semaphore::new(config.max_scrapes));
    let timeout = Duration::from_secs(config.request_timeout);
    loop {
        let accepted = future::or(
            async {
                Some(match &listener {
                    Listener::Tcp(l) => l.accept().await.map(|(s, _)| {
                        start_scrape(s, &slots, &lingering, &collector, timeout);
                    }),
                    Listener::Unix(l, _) => l.accept().await.map(|(s, _)| {
                        start_scrape(s, &slots, &lingering, &collector, timeout);
                    }),
                })
            },
            async {
                let _ = stop.recv().await;
                None
            },
        )
        .await;
        match accepted {
            None => break,
            Some(Ok(())) => {}
            Some(Err(e)) => {
                // Out of descriptors, or the peer left before accept: wait, so a loop of
                // failures does not spin.
                log::debug!("metrics: accept: {e}");
                smol::Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

/// Serve one connection on its own task, or answer 503 at once when every slot is taken.
/// `slots`: the scrapes served; `lingering`: the 503s waiting for their peer to close.
fn start_scrape<S: Stream>(
    stream: S,
    slots: &Arc<async_lock::Semaphore>,
    lingering: &Arc<async_lock::Semaphore>,
    collector: &Arc<Collector>,
    timeout: Duration,
) {
    let Some(permit) = slots.try_acquire_arc() else {
        // No head read: one write into the fresh socket's empty buffer, the end of the
        // reply, and then what the peer sent (its head) is taken before closing, so the
        // close is not a reset that may destroy the 503. As many linger for their peer as
        // scrapes may be served; past that, only what has arrived is taken.
        stream.try_write(&reply_head(503, "text/plain", 0));
        super::registry().http_reply(503);
        stream.shutdown_write();
        match lingering.try_acquire_arc() {
            Some(linger) => smol::spawn(async move {
                let mut stream = stream;
                super::linger::drain(&mut stream).await;
                drop(linger);
            })
            .detach(),
            None => super::linger::drain_now(|buf| stream.try_read(buf)),
        }
        return;
    };
    let collector = collector.clone();
    smol::spawn(async move {
        scrape(stream, &collector, timeout).await;
        drop(permit);
    })
    .detach();
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// `GET /metrics`.
    Metrics,
    /// An answer without a body: 400, 404, 405, 505.
    Status(u16),
}

/// Route a complete head (request line and headers, without the blank line).
pub(super) fn route(head: &[u8]) -> Route {
    let Ok(text) = std::str::from_utf8(head) else {
        return Route::Status(400);
    };
    let line = text.split("\r\n").next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::Status(400);
    };
    if !version.starts_with("HTTP/") {
        return Route::Status(400);
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Route::Status(505);
    }
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return Route::Status(404);
    }
    if method != "GET" {
        return Route::Status(405);
    }
    Route::Metrics
}

/// How reading a head ended, short of a head.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeadError {
    /// [`MAX_HEAD`] bytes without the blank line that ends a head.
    TooLarge,
    /// The peer closed or the read failed.
    Closed,
}

/// Read until the blank line that ends the head (`\r\n\r\n`), into at most [`MAX_HEAD`]
/// bytes; returns the head without it.
pub(super) async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, HeadError> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut n = 0;
    loop {
        if n == buf.len() {
            return Err(HeadError::TooLarge);
        }
        let got = r.read(&mut buf[n..]).await.map_err(|_| HeadError::Closed)?;
        if got == 0 {
            return Err(HeadError::Closed);
        }
        let from = n.saturating_sub(3);
        n += got;
        if let Some(at) = buf[from..n].windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(from + at);
            return Ok(buf);
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// A reply's status line and headers.
pub(super) fn reply_head(status: u16, content_type: &str, len: usize) -> Vec<u8> {
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\
         {allow}Connection: close\r\n\r\n",
        reason(status)
    )
    .into_bytes()
}

/// `f`, or `None` when `limit` passes first.
async fn within<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    future::or(async { Some(f.await) }, async {
        smol::Timer::after(limit).await;
        None
    })
    .await
}

/// One connection: read the head, answer, close.
async fn scrape<S: Stream>(mut s: S, collector: &Collector, timeout: Duration) {
    let (status, body) = match within(timeout, read_head(&mut s)).await {
        None => (408, None),
        Some(Err(HeadError::TooLarge)) => (431, None),
        Some(Err(HeadError::Closed)) => return,
        Some(Ok(head)) => match route(&head) {
            Route::Metrics => (200, Some(collector.text().await)),
            Route::Status(code) => (code, None),
        },
    };
    super::registry().http_reply(status);
    let mut out = match &body {
        Some(b) => reply_head(status, CONTENT_TYPE, b.len()),
        None => reply_head(status, "text/plain", 0),
    };
    if let Some(b) = &body {
        out.extend_from_slice(b.as_bytes());
    }
    let written = within(timeout, async {
        s.write_all(&out).await?;
        s.flush().await
    })
    .await;
    if !matches!(written, Some(Ok(()))) {
        return;
    }
    // The end of the reply; then read what the peer still sends (a head past MAX_HEAD, a
    // body, a pipelined request), up to a bound, so closing does not reset the connection
    // before it reads the reply.
    s.shutdown_write();
    super::linger::drain(&mut s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        let r = |s: &str| route(s.as_bytes());
        assert_eq!(r("GET /metrics HTTP/1.1\r\nHost: x"), Route::Metrics);
        assert_eq!(r("GET /metrics?name[]=x HTTP/1.0"), Route::Metrics);
        assert_eq!(r("POST /metrics HTTP/1.1"), Route::Status(405));
        assert_eq!(r("HEAD /metrics HTTP/1.1"), Route::Status(405));
        assert_eq!(r("GET / HTTP/1.1"), Route::Status(404));
        assert_eq!(r("GET /metrics/ HTTP/1.1"), Route::Status(404));
        assert_eq!(r("GET /metrics HTTP/2.0"), Route::Status(505));
        assert_eq!(r("GET /metrics"), Route::Status(400));
        assert_eq!(r("GET  /metrics HTTP/1.1"), Route::Status(400));
        assert_eq!(r("GET /metrics SMTP"), Route::Status(400));
        assert_eq!(route(b"GET /\xff HTTP/1.1"), Route::Status(400));
    }

    #[test]
    fn a_head_ends_at_the_blank_line_and_is_bounded() {
        smol::block_on(async {
            // Delivered a byte at a time, the terminator split across reads.
            let mut slow =
                futures_lite::io::Cursor::new(b"GET /metrics HTTP/1.1\r\n\r\nrest".to_vec());
            let mut one = OneByte(&mut slow);
            assert_eq!(read_head(&mut one).await.unwrap(), b"GET /metrics HTTP/1.1");
            let big = vec![b'a'; MAX_HEAD + 10];
            let mut c = futures_lite::io::Cursor::new(big);
            assert_eq!(read_head(&mut c).await, Err(HeadError::TooLarge));
            let mut short = futures_lite::io::Cursor::new(b"GET /".to_vec());
            assert_eq!(read_head(&mut short).await, Err(HeadError::Closed));
        });
    }

    /// A reader that gives one byte per read.
    struct OneByte<'a, R>(&'a mut R);

    impl<R: AsyncRead + Unpin> AsyncRead for OneByte<'_, R> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(1);
            std::pin::Pin::new(&mut *self.0).poll_read(cx, &mut buf[..n])
        }
    }

    #[test]
    fn replies_close_the_connection() {
        let h = String::from_utf8(reply_head(405, "text/plain", 0)).unwrap();
        assert!(h.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(h.contains("Allow: GET\r\n") && h.contains("Connection: close\r\n"));
        assert!(h.ends_with("\r\n\r\n"));
    }
}
