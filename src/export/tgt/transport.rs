//! How the tgt driver reaches tgtd: its management socket (the protocol in [`super::ipc`]),
//! or, only when that socket does not speak tgt 1.0's protocol, `tgtadm` through the
//! command runner.
//!
//! The transport is chosen once, by the first probe that reaches tgtd, logged, and
//! reported (`driver_transports` in `hello` and `pool.show`). Over the socket no process
//! is started and no CHAP secret is ever in a command line; through tgtadm the secret is
//! in tgtadm's argv while it runs (tgtadm has no other way to take it), which is why that
//! is the fallback only. `iscsi.tgt_transport` pins either (docs/exports.md).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use super::ipc::{decode_reply, is_system_show, TgtCode, TgtReply, TgtRequest};
use crate::config::TgtTransport;
use crate::error::Error;
use crate::sys::cmd::{find_program, CmdError, Runner};
use crate::sys::exchange::{exchange, ExchangeError};

/// tgtd's management socket namespace (`TGT_IPC_NAMESPACE`); the socket of control port
/// N is `<namespace>.N`.
pub const SOCKET_NAMESPACE: &str = "/var/run/tgtd/socket";
/// The most bytes a reply may have (a `show` of every target: about 1.3 KiB a target).
const MAX_REPLY: usize = 64 << 20;

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
    /// Anything else (a timeout, a reply that is not the protocol, a check of ours).
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
        }
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
            TgtTransport::Auto | TgtTransport::Socket => match self.socket_speaks_tgt().await {
                Ok(()) => Chosen::Socket,
                Err(TgtFailure::Other(Error::Unsupported(why)))
                    if self.allowed == TgtTransport::Auto && find_program("tgtadm").is_some() =>
                {
                    log::warn!("tgt: {why}; falling back to tgtadm (CHAP secrets pass through its command line)");
                    self.via_tgtadm(&TgtRequest::show_system()).await?;
                    Chosen::Tgtadm
                }
                Err(e) => return Err(e),
            },
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

    /// Whether tgtd's socket answers `system show` the way tgt 1.0 does.
    async fn socket_speaks_tgt(&self) -> Result<(), TgtFailure> {
        let req = TgtRequest::show_system();
        let unexpected = |why: String| {
            TgtFailure::Other(Error::Unsupported(format!(
                "tgtd's management socket {} does not speak tgt 1.0's protocol ({why})",
                self.socket.display()
            )))
        };
        match self.via_socket(&req).await {
            Ok(text) if is_system_show(&text) => Ok(()),
            Ok(text) => Err(unexpected(format!(
                "`system show` answered {:?}",
                text.chars().take(40).collect::<String>()
            ))),
            Err(TgtFailure::Refused { code, .. }) => {
                Err(unexpected(format!("`system show` refused: {code}")))
            }
            Err(TgtFailure::Other(Error::Internal(why))) => Err(unexpected(why)),
            Err(e) => Err(e),
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
        let bytes = match exchange(&self.socket, &req.encode(), self.timeout(), MAX_REPLY).await {
            Ok(b) => b,
            Err(e) if e.nobody_listens() => return Err(self.not_running(e)),
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
            Err(why) => Err(Error::Internal(format!(
                "tgtd's reply to `{}` is not tgt 1.0's protocol: {why}",
                request()
            ))
            .into()),
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
