//! Process-level OS facts: the state-dir lock, a unix peer's credentials, and giving
//! freed memory back to the kernel.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// An exclusive lock on a state directory, held for the life of the daemon.
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<File>,
}

/// Take the exclusive lock on `<state_dir>/shelfd.lock`, or say who holds it.
pub fn lock_state_dir(state_dir: &Path) -> Result<StateLock, String> {
    let path = state_dir.join("shelfd.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open lock file {}: {e}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            use std::io::{Seek, Write};
            let _ = lock.set_len(0);
            let _ = lock.seek(std::io::SeekFrom::Start(0));
            let _ = writeln!(lock, "{}", std::process::id());
            Ok(StateLock { _lock: lock })
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            Err(format!(
                "another shelfd (pid {}) is already running on state directory {}",
                holder.trim(),
                state_dir.display()
            ))
        }
        Err((_, e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// The credentials of the process at the other end of a unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process id.
    pub pid: i32,
}

/// Read `SO_PEERCRED` of a connected unix socket.
pub fn peer_credentials(sock: &impl AsFd) -> std::io::Result<PeerCred> {
    let c = nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(std::io::Error::from)?;
    Ok(PeerCred {
        uid: c.uid(),
        gid: c.gid(),
        pid: c.pid(),
    })
}

/// Send SIGHUP to the process whose pid is in `pidfile` (a daemon's reload request).
pub fn hup_pidfile(pidfile: &Path) -> std::io::Result<i32> {
    let text = std::fs::read_to_string(pidfile)?;
    let pid: i32 = text.trim().parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} does not hold a pid", pidfile.display()),
        )
    })?;
    if pid <= 1 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} holds pid {pid}", pidfile.display()),
        ));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(std::io::Error::from)?;
    Ok(pid)
}

/// Whether the process in `pidfile` is alive.
pub fn pidfile_alive(pidfile: &Path) -> bool {
    std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|p| *p > 1)
        .is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok())
}

/// At most this many glibc arenas (its default is 8 per core): each blocking-pool thread
/// that allocates otherwise gets an arena of its own, whose freed pages stay resident
/// between the large replies that trim them.
const ARENAS: i32 = 2;

/// Allocations at least this large are mapped for themselves and unmapped when freed.
/// glibc's own threshold starts at 128 KiB but rises to the size of each large block
/// freed (up to 32 MiB), after which the multi-MiB buffers of a list of 10,000 objects
/// come from the arenas' heaps and stay resident in them; a fixed threshold keeps them
/// out.
const MMAP_THRESHOLD: i32 = 256 << 10;

/// Set the allocator up for a long-running daemon whose replies are small but for the
/// rare list of thousands of objects (docs/performance.md, "Resident memory"): few
/// arenas, and large buffers mapped on their own. Call first thing in `main`, before
/// any thread starts. Does nothing with other C libraries.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and only sets glibc's own tunables; called
    // before any other thread exists, nothing is allocating concurrently.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Give memory the allocator holds free back to the kernel.
///
/// glibc keeps the freed pages of every thread's arena for reuse, so one `share.list` or
/// `tree` of 10,000 objects (tens of MiB of transient rows, CBOR values and frame) stayed
/// resident for the life of the daemon: ~40 MiB instead of ~12. `malloc_trim(0)` returns
/// the free pages of every arena (measured with the bench, docs/performance.md). It
/// walks the allocator's free lists, so call it off the event loop, after large replies
/// only. Does nothing with other C libraries.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer of ours; it only walks glibc's own free lists,
    // locking each arena, so it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Raise the soft limit on open descriptors to the hard limit; returns the limit now in
/// force. Connections cost a descriptor each: shelfd sizes its caps against this.
pub fn raise_descriptor_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own and pass by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _first = lock_state_dir(dir.path()).unwrap();
        let err = lock_state_dir(dir.path()).unwrap_err();
        assert!(err.contains("already running"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
    }

    #[test]
    fn peer_credentials_of_a_socketpair_are_ours() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let c = peer_credentials(&a).unwrap();
        assert_eq!(c.pid as u32, std::process::id());
        assert_eq!(c.uid, nix::unistd::getuid().as_raw());
    }
}
