//! systemd integration without libsystemd: readiness and status notifications
//! (`sd_notify(3)` over `$NOTIFY_SOCKET`), the watchdog interval (`$WATCHDOG_USEC`), and a
//! listening socket passed by socket activation (`sd_listen_fds(3)`: `$LISTEN_FDS`,
//! `$LISTEN_PID`, fd 3). Outside systemd every function is a no-op.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::time::Duration;

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Send one notification (e.g. `READY=1`, `STATUS=...`, `WATCHDOG=1`) to the service
/// manager. Returns `false` when there is no manager to tell or the send failed.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path))
    };
    if let Err(e) = &sent {
        log::debug!("sd_notify {state:?}: {e}");
    }
    sent.is_ok()
}

/// How often to send `WATCHDOG=1`: half the interval systemd set, when it set one for us.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The listening unix socket systemd passed us, if any. The environment variables are
/// removed so that children do not inherit them. More than one socket is refused.
pub fn listener_from_systemd() -> Result<Option<UnixListener>, String> {
    let Ok(pid) = std::env::var("LISTEN_PID") else {
        return Ok(None);
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let count: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    match count {
        0 => Ok(None),
        1 => {
            // SAFETY: systemd passed fd 3 to this process for it to own (LISTEN_PID is our
            // pid, checked above); we take ownership exactly once, and the variables that
            // announced it are gone, so nothing else will.
            let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) };
            let st =
                nix::sys::stat::fstat(&fd).map_err(|e| format!("socket activation: fd 3: {e}"))?;
            if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
                return Err("socket activation: fd 3 is not a socket".into());
            }
            nix::fcntl::fcntl(
                &fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(|e| format!("socket activation: fd 3: {e}"))?;
            Ok(Some(UnixListener::from(fd)))
        }
        n => Err(format!(
            "socket activation passed {n} sockets; shelf.socket must listen on exactly one"
        )),
    }
}
