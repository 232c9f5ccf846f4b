//! How the tgt driver reaches tgtd: its management socket (the protocol in [`super::ipc`]),
//! or, only when that socket does not speak tgt 1.0's protocol, `tgtadm` through the
//! command runner.
//!
//! The transport is chosen by the first probe that gets a definite answer from tgtd's
//! socket, logged, and reported (`driver_transports` in `hello` and `pool.show`). Over the socket no process
//! is started and no CHAP secret is ever in a command line; through tgtadm the secret is
//! in tgtadm's argv while it runs (tgtadm has no other way to take it), which is why that
//! is the fallback only. `iscsi.tgt_transport` pins either (docs/exports.md).
//!
//! `auto` falls back to tgtadm only on a complete, well-framed answer that is not tgt
//! 1.0's (or the same garbled answer twice in a row): a connection cut short, a timeout
//! or any I/O error chooses nothing, and the socket is tried again by the next call or
//! the periodic probe. A listener that does not run as root is not tgtd: nothing is sent
//! to it, and no fallback either (tgtadm would talk to the same listener).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::ipc::{announced_len, decode_reply, is_system_show, TgtCode, TgtReply, TgtRequest};
use super::reply::RESPONSE_HEADER;
use crate::config::TgtTransport;
use crate::error::Error;
use crate::sys::cmd::{find_program, CmdError, Runner};
use crate::sys::exchange::{exchange, ExchangeError, ReplyFrame};

pub use super::choice::{decide, Decision, SocketProbe};

/// tgtd's management socket namespace (`TGT_IPC_NAMESPACE`); the socket of control port
/// N is `<namespace>.N`.
pub const SOCKET_NAMESPACE: &str = "/var/run/tgtd/socket";
/// The most bytes an answer to a change may have: tgtd answers every request but a
/// `show` with the bare 8-byte `tgtadm_rsp` (tests/fixtures/tgt-ipc/).
const MAX_CHANGE_REPLY: usize = 64 << 10;
/// The part of a `show` answer's bound that does not depend on the targets shelfd knows:
/// room for tgtd's own text and for targets other than shelf's (about 3,000 of ours).
const SHOW_BASE: usize = 4 << 20;
/// A `show`'s bound per target shelfd expects tgtd to hold. A target as shelf makes it
/// (LUN 0 and a backing-store LUN, thin provisioning, an ACL, a CHAP account) shows as
/// 1,177 bytes (measured with tgt 1.0.85: 100 such targets show as 117,685 bytes), so
/// 10,000 of them about 11.2 MiB, within their bound of 43 MiB; the rest is room for
/// sessions, connections and longer names.
const SHOW_PER_TARGET: usize = 4 << 10;
/// tgtd runs as root, and only talks to root (it checks its peer's credentials).
const TGTD_UID: u32 = 0;

/// The most bytes tgtd's answer to `req` may have, when tgtd is expected to hold
/// `targets` targets.
pub fn reply_bound(req: &TgtRequest, targets: usize) -> usize {
    if req.is_show() {
        SHOW_BASE.saturating_add(SHOW_PER_TARGET.saturating_mul(targets))
    } else {
        MAX_CHANGE_REPLY
    }
}

/// The transport in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// tgtd's management socket.
    Socket,
    /// The tgtadm program.
    Tgtadm,
}

impl Chosen {
    /// `"socket"` or `"tgtadm"` (as `driver_transports` reports it).
    pub fn as_str(self) -> &'static str {
        match self {
            Chosen::Socket => "socket",
            Chosen::Tgtadm => "tgtadm",
        }
    }
}

/// Why a request to tgtd did not succeed.
#[derive(Debug)]
pub enum TgtFailure {
    /// tgtd refused it, with its reason.
    Refused {
        /// The request in tgtadm's form.
        request: String,
        /// tgtd's reason.
        code: TgtCode,
    },
    /// Nothing answers on the control port.
    NotRunning(String),
    /// An answer that came whole but is not framed as tgt 1.0 frames it.
    Garbled(String),
    /// Anything else (a timeout, a connection cut short, a check of ours).
    Other(Error),
}

impl TgtFailure {
    /// tgtd's reason, when it refused.
    pub fn code(&self) -> Option<TgtCode> {
        match self {
            TgtFailure::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<Error> for TgtFailure {
    fn from(e: Error) -> Self {
        TgtFailure::Other(e)
    }
}

impl From<TgtFailure> for Error {
    fn from(f: TgtFailure) -> Self {
        match f {
            TgtFailure::Refused { request, code } => {
                Error::Internal(format!("tgtd refused `{request}`: {code}"))
            }
            TgtFailure::NotRunning(why) => Error::Busy(why),
            TgtFailure::Garbled(why) => Error::Internal(why),
            TgtFailure::Other(e) => e,
        }
    }
}

/// The way to tgtd on one control port.
#[derive(Debug)]
pub struct TgtLink {
    runner: Runner,
    control_port: u32,
    socket: PathBuf,
    allowed: TgtTransport,
    chosen: OnceLock<Chosen>,
    /// The last probe's garbled answer, if the last probe got one (a second one alike
    /// decides `auto` for tgtadm).
    last_garbled: Mutex<Option<String>>,
    /// How many targets tgtd is expected to hold (bounds a `show`'s answer).
    targets: AtomicUsize,
}

impl TgtLink {
    /// A link to the tgtd on `control_port`; nothing is contacted yet.
    pub fn new(runner: Runner, control_port: u32, allowed: TgtTransport) -> Self {
        TgtLink {
            runner,
            control_port,
            socket: PathBuf::from(format!("{SOCKET_NAMESPACE}.{control_port}")),
            allowed,
            chosen: OnceLock::new(),
            last_garbled: Mutex::new(None),
            targets: AtomicUsize::new(0),
        }
    }

    /// Tell the link how many targets tgtd is expected to hold (what shelfd configured,
    /// or the exports a reconcile is about to replay): a `show`'s answer is bounded by it.
    pub fn expect_targets(&self, targets: usize) {
        self.targets.store(targets, Ordering::Relaxed);
    }

    /// The transport in use, once a probe has chosen it.
    pub fn chosen(&self) -> Option<Chosen> {
        self.chosen.get().copied()
    }

    fn not_running(&self, why: impl std::fmt::Display) -> TgtFailure {
        TgtFailure::NotRunning(format!(
            "tgtd is not running (no answer on control port {}): {why}",
            self.control_port
        ))
    }

    /// Choose the transport if none is chosen yet, and check tgtd answers on it.
    pub async fn probe(&self) -> Result<Chosen, TgtFailure> {
        if let Some(c) = self.chosen() {
            self.call(&TgtRequest::show_system()).await?;
            return Ok(c);
        }
        let chosen = match self.allowed {
            TgtTransport::Tgtadm => {
                if find_program("tgtadm").is_none() {
                    return Err(
                        Error::Unsupported("tgtadm is not installed (package tgt)".into()).into(),
                    );
                }
                self.via_tgtadm(&TgtRequest::show_system()).await?;
                Chosen::Tgtadm
            }
            TgtTransport::Auto | TgtTransport::Socket => {
                let probe = self.probe_socket().await;
                let decision = {
                    let mut last = self.last_garbled.lock().expect("tgt probe state");
                    decide(
                        self.allowed,
                        probe,
                        &mut last,
                        find_program("tgtadm").is_some(),
                    )
                };
                match decision {
                    Decision::Pin(c) => c,
                    Decision::Fallback(why) => {
                        log::warn!("tgt: {why}; falling back to tgtadm (CHAP secrets pass through its command line)");
                        self.via_tgtadm(&TgtRequest::show_system()).await?;
                        Chosen::Tgtadm
                    }
                    Decision::Fail(TgtFailure::NotRunning(why)) => {
                        return Err(self.socket_missing(why).await)
                    }
                    Decision::Fail(f) => return Err(f),
                }
            }
        };
        if self.chosen.set(chosen).is_ok() {
            match chosen {
                Chosen::Socket => log::info!(
                    "tgt: talking to tgtd over its management socket {}",
                    self.socket.display()
                ),
                Chosen::Tgtadm => {
                    log::info!("tgt: talking to tgtd with tgtadm -C {}", self.control_port)
                }
            }
        }
        Ok(self.chosen().unwrap_or(chosen))
    }

    /// Ask tgtd's socket `system show` and say what kind of answer came.
    async fn probe_socket(&self) -> SocketProbe {
        let unexpected = |why: String| {
            format!(
                "tgtd's management socket {} does not speak tgt 1.0's protocol ({why})",
                self.socket.display()
            )
        };
        match self.via_socket(&TgtRequest::show_system()).await {
            Ok(text) if is_system_show(&text) => SocketProbe::Speaks,
            Ok(text) => SocketProbe::Foreign(unexpected(format!(
                "`system show` answered {:?}",
                text.chars().take(40).collect::<String>()
            ))),
            Err(TgtFailure::Refused { code, .. }) => {
                SocketProbe::Foreign(unexpected(format!("`system show` refused: {code}")))
            }
            Err(TgtFailure::Garbled(why)) => SocketProbe::Garbled(unexpected(why)),
            Err(f) => SocketProbe::Failed(f),
        }
    }

    /// Nothing answers on the socket: say whether tgtd is really down, or runs but its
    /// socket is not where shelfd looks (then tgtadm, built with another path, reaches it).
    async fn socket_missing(&self, why: String) -> TgtFailure {
        if self.socket.exists() || find_program("tgtadm").is_none() {
            return TgtFailure::NotRunning(why);
        }
        match self.via_tgtadm(&TgtRequest::show_system()).await {
            Ok(_) => TgtFailure::Other(Error::Unsupported(socket_elsewhere(
                self.control_port,
                &self.socket,
            ))),
            Err(_) => TgtFailure::NotRunning(why),
        }
    }

    /// Send one request on the chosen transport (choosing it first if need be); tgtd's
    /// text answer.
    pub async fn call(&self, req: &TgtRequest) -> Result<String, TgtFailure> {
        req.check().map_err(Error::Invalid)?;
        let chosen = match self.chosen() {
            Some(c) => c,
            None => Box::pin(self.probe()).await?,
        };
        match chosen {
            Chosen::Socket => self.via_socket(req).await,
            Chosen::Tgtadm => self.via_tgtadm(req).await,
        }
    }

    fn timeout(&self) -> Duration {
        self.runner.timeout()
    }

    async fn via_socket(&self, req: &TgtRequest) -> Result<String, TgtFailure> {
        let request = || req.display(self.control_port);
        let frame = ReplyFrame {
            header: RESPONSE_HEADER,
            total_len: announced_len,
            max_reply: reply_bound(req, self.targets.load(Ordering::Relaxed)),
            peer_uid: TGTD_UID,
        };
        let bytes = match exchange(&self.socket, &req.encode(), self.timeout(), frame).await {
            Ok(b) => b,
            Err(e) if e.nobody_listens() => return Err(self.not_running(e)),
            Err(e) if e.is_malformed() => {
                return Err(TgtFailure::Garbled(format!("`{}`: {e}", request())))
            }
            Err(ExchangeError::TimedOut { path, secs }) => {
                return Err(Error::Busy(format!(
                "tgtd did not answer `{}` on {path} within {secs} s: the request did not finish",
                request()
            ))
                .into())
            }
            Err(e) => return Err(Error::Internal(format!("`{}`: {e}", request())).into()),
        };
        match decode_reply(&bytes) {
            Ok(TgtReply::Done(text)) => Ok(text),
            Ok(TgtReply::Refused(code)) => Err(TgtFailure::Refused {
                request: request(),
                code,
            }),
            Err(why) => Err(TgtFailure::Garbled(format!(
                "tgtd's reply to `{}` is not tgt 1.0's protocol: {why}",
                request()
            ))),
        }
    }

    async fn via_tgtadm(&self, req: &TgtRequest) -> Result<String, TgtFailure> {
        let cmd = req.tgtadm_cmd(self.control_port);
        match self.runner.run(&cmd).await {
            Ok(out) => Ok(out.stdout_text()),
            Err(e) => Err(self.tgtadm_failure(e, cmd.display())),
        }
    }

    fn tgtadm_failure(&self, e: CmdError, request: String) -> TgtFailure {
        if e.exit_code() == Some(107) || e.stderr().contains("Transport endpoint is not connected")
        {
            return self.not_running(e);
        }
        match TgtCode::from_tgtadm_stderr(e.stderr()) {
            Some(code) => TgtFailure::Refused { request, code },
            None => TgtFailure::Other(Error::Command(e)),
        }
    }
}

/// The error when tgtadm reaches tgtd on `control_port` but nothing listens at `socket`.
pub fn socket_elsewhere(control_port: u32, socket: &std::path::Path) -> String {
    format!(
        "tgtd answers `tgtadm -C {control_port}`, but its management socket is not at {}: \
         this tgt keeps it elsewhere; set iscsi.tgt_transport = \"tgtadm\" to use tgtadm \
         (CHAP secrets then pass through its command line)",
        socket.display()
    )
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
