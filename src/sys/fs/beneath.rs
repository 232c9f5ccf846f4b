//! Opening what tenants' NFS clients can reach: beneath a directory descriptor, never
//! through a symbolic link, checking type, link count and identity ([`open_checked`]).

use super::*;

/// What [`open_checked`] expects to find: a regular file with one link whose
/// `trusted.shelf.kind` and `trusted.shelf.id` attributes are these.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// `share` or `snapshot`.
    pub kind: &'a str,
    /// The share's or snapshot's id.
    pub id: &'a str,
}

/// Why a volume or snapshot could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Nothing is at the path.
    Missing(io::Error),
    /// Something is at the path that is not the file shelf made (the text says what).
    Tampered(String),
    /// A regular file with one link, but without any shelf identity in `trusted.shelf.*`:
    /// planted in place of a volume (whatever `user.shelf.*` a tenant wrote on it), left by
    /// a crash before its identity was written, or stamped by a shelf that predates
    /// [`STAMP_PREFIX`] and not moved yet.
    Unidentified,
    /// Any other failure.
    Io(io::Error),
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(e)
    }
}

/// Open a directory (for `*_at` calls beneath it).
pub fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}

/// Set once `openat2` has answered `ENOSYS`: a seccomp sandbox refuses it (systemd's
/// `RestrictSUIDSGID=`, which cannot inspect `open_how`, and container runtimes' default
/// profiles do this so that callers fall back to `openat`), or the kernel predates 5.6.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Open `rel` beneath `dir` with `flags` (and `mode` when creating), never through a
/// symbolic link or a `/proc` magic link, and never out of `dir`: `openat2` with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, or, where `openat2` is
/// not available, [`open_beneath_walk`], which gives the same guarantees one component at
/// a time. `O_NOFOLLOW` and `O_CLOEXEC` are always added.
pub fn open_beneath(dir: &File, rel: &Path, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let how = OpenHow::new().flags(flags).mode(mode).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
        match nix::fcntl::openat2(dir, rel, how) {
            Err(Errno::ENOSYS) => {
                log::warn!("openat2 is not available here (ENOSYS); resolving paths one component at a time");
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            other => return other,
        }
    }
    open_beneath_walk(dir, rel, flags, mode)
}

/// [`open_beneath`] without `openat2`: every component but the last is opened with
/// `O_PATH | O_DIRECTORY | O_NOFOLLOW` relative to the one before (a symbolic link there
/// fails with `ENOTDIR` or `ELOOP`), the last with `flags | O_NOFOLLOW` (a link there is
/// `ELOOP`, or, with `O_PATH`, a handle on the link itself, which callers refuse by type).
/// An absolute path or `..` is `EXDEV`, as `RESOLVE_BENEATH` answers.
pub fn open_beneath_walk(dir: &File, rel: &Path, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    use std::path::Component;
    let parts: Vec<&std::ffi::OsStr> = rel
        .components()
        .filter(|c| *c != Component::CurDir)
        .map(|c| match c {
            Component::Normal(p) => Ok(p),
            _ => Err(Errno::EXDEV),
        })
        .collect::<nix::Result<_>>()?;
    let Some((last, walk)) = parts.split_last() else {
        return Err(Errno::ENOENT);
    };
    let mut cur: Option<OwnedFd> = None;
    for part in walk {
        let at = cur.as_ref().map_or(dir.as_fd(), |f| f.as_fd());
        let next = nix::fcntl::openat(
            at,
            *part,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        cur = Some(next);
    }
    let at = cur.as_ref().map_or(dir.as_fd(), |f| f.as_fd());
    nix::fcntl::openat(
        at,
        *last,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        mode,
    )
}

/// Create the new file `rel` beneath `dir` with `mode`, never through a symbolic link.
pub fn create_new_at(dir: &File, rel: &Path, mode: u32) -> io::Result<File> {
    let f = File::from(
        open_beneath(
            dir,
            rel,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
            Mode::from_bits_truncate(mode as libc::mode_t),
        )
        .map_err(io::Error::from)?,
    );
    nix::sys::stat::fchmod(
        &f,
        nix::sys::stat::Mode::from_bits_truncate(mode as libc::mode_t),
    )
    .map_err(io::Error::from)?;
    Ok(f)
}

/// What a file type is called in an error message.
fn describe(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFREG => "a regular file",
        _ => "an object of unknown type",
    }
}

/// Open the volume or snapshot `rel` beneath `dir` for reading (and writing, with
/// `write`), refusing anything but the file shelf made: the path is resolved beneath
/// `dir` without following any symbolic link, the object is first opened with `O_PATH`
/// (so a FIFO or a device is never really opened), and it must be a regular file with a
/// single link (a hard link to a file elsewhere is refused) carrying `expect`'s identity.
/// Only then is that same inode re-opened, through `/proc/self/fd`, for I/O; every later
/// call acts on the returned descriptor, never on the path again.
pub fn open_checked(
    dir: &File,
    rel: &Path,
    expect: Expect<'_>,
    write: bool,
) -> Result<File, OpenError> {
    let f = open_regular(dir, rel, write)?;
    let attr = |k: &str| -> io::Result<Option<String>> {
        Ok(f.get_xattr(format!("{STAMP_PREFIX}{k}"))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    };
    match (attr("kind")?, attr("id")?) {
        (Some(k), Some(i)) if k == expect.kind && i == expect.id => Ok(f),
        (None, None) => Err(OpenError::Unidentified),
        (k, i) => Err(OpenError::Tampered(format!(
            "it carries the identity of {} {}",
            k.as_deref().unwrap_or("(no kind)"),
            i.as_deref().unwrap_or("(no id)")
        ))),
    }
}

/// [`open_checked`] without the identity check: `rel` beneath `dir`, no symbolic link
/// followed, a regular file with a single link, re-opened through `/proc/self/fd`. For
/// reading or moving a stamp that is not (yet) in `trusted.shelf.*`; nothing else.
pub fn open_regular(dir: &File, rel: &Path, write: bool) -> Result<File, OpenError> {
    let handle = match open_beneath(dir, rel, OFlag::O_PATH, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(Errno::ENOENT) => return Err(OpenError::Missing(Errno::ENOENT.into())),
        Err(Errno::ELOOP) | Err(Errno::EXDEV) => {
            return Err(OpenError::Tampered(
                "its path goes through a symbolic link".into(),
            ))
        }
        Err(Errno::ENOTDIR) => {
            return Err(OpenError::Tampered(
                "a directory on its path is not a directory".into(),
            ))
        }
        Err(e) => return Err(OpenError::Io(e.into())),
    };
    let st = fstat(&handle).map_err(io::Error::from)?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Err(OpenError::Tampered(format!(
            "it is {}, not a regular file",
            describe(&st)
        )));
    }
    if st.st_nlink != 1 {
        return Err(OpenError::Tampered(format!(
            "it has {} hard links (a volume has one)",
            st.st_nlink
        )));
    }
    let f = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))?;
    let again = fstat(&f).map_err(io::Error::from)?;
    if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
        return Err(OpenError::Tampered("it changed while being opened".into()));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of object a tenant can plant is refused, by what it is, without being
    /// opened for I/O (a FIFO would block) and without following a link out.
    #[test]
    fn the_walk_without_openat2_refuses_what_openat2_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("secret"), b"secret").unwrap();
        std::fs::create_dir_all(root.join("pool/a")).unwrap();
        std::fs::write(root.join("pool/a/volume"), b"v").unwrap();
        std::os::unix::fs::symlink("a", root.join("pool/l")).unwrap();
        std::os::unix::fs::symlink("../../secret", root.join("pool/a/ln")).unwrap();
        std::os::unix::fs::symlink(root.join("secret"), root.join("pool/a/abs")).unwrap();
        let d = open_dir(&root.join("pool")).unwrap();
        let ro = OFlag::O_RDONLY;
        let walk = |rel: &str, flags| open_beneath_walk(&d, Path::new(rel), flags, Mode::empty());
        let both = |rel: &str, flags| {
            let w = walk(rel, flags).map(|_| ());
            let how = OpenHow::new()
                .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
                .resolve(
                    ResolveFlag::RESOLVE_BENEATH
                        | ResolveFlag::RESOLVE_NO_SYMLINKS
                        | ResolveFlag::RESOLVE_NO_MAGICLINKS,
                );
            let o = nix::fcntl::openat2(&d, Path::new(rel), how).map(|_| ());
            (w, o)
        };
        // What both accept and both refuse.
        assert_eq!(both("a/volume", ro), (Ok(()), Ok(())));
        assert_eq!(both("./a/./volume", ro), (Ok(()), Ok(())));
        // Each refusal is the same error from both, so callers' messages agree.
        for (rel, want) in [
            ("a/ln", Errno::ELOOP),
            ("a/abs", Errno::ELOOP),
            ("../secret", Errno::EXDEV),
            ("a/../../secret", Errno::EXDEV),
            ("/etc/hostname", Errno::EXDEV),
            ("a/missing", Errno::ENOENT),
            ("a/volume/x", Errno::ENOTDIR),
        ] {
            let (w, o) = both(rel, ro);
            assert_eq!((w, o), (Err(want), Err(want)), "{rel}");
        }
        // A symbolic link on the way is refused (ENOTDIR or ELOOP), never followed.
        let w = walk("l/volume", ro).unwrap_err();
        assert!(matches!(w, Errno::ENOTDIR | Errno::ELOOP), "{w:?}");
        // Leaving the directory is EXDEV, as RESOLVE_BENEATH answers.
        assert_eq!(walk("../secret", ro).unwrap_err(), Errno::EXDEV);
        assert_eq!(walk("/etc/hostname", ro).unwrap_err(), Errno::EXDEV);
        // The last component as a link: ELOOP, or with O_PATH a handle on the link itself
        // (which open_checked refuses by its type).
        assert_eq!(walk("a/ln", ro).unwrap_err(), Errno::ELOOP);
        let h = File::from(walk("a/ln", OFlag::O_PATH).unwrap());
        let st = fstat(&h).unwrap();
        assert_eq!(
            SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()),
            SFlag::S_IFLNK
        );
    }

    #[test]
    fn open_checked_refuses_every_planted_kind() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let secret = root.join("secret");
        std::fs::write(&secret, b"secret").unwrap();
        std::fs::create_dir_all(root.join("shares/a")).unwrap();
        let ident: BTreeMap<String, String> = [("kind", "share"), ("id", "a")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let vol = root.join("shares/a/volume");
        let d = open_dir(root).unwrap();
        let rel = Path::new("shares/a/volume");
        let expect = Expect {
            kind: "share",
            id: "a",
        };
        let why = |write| match open_checked(&d, rel, expect, write) {
            Ok(_) => "ok".to_string(),
            Err(OpenError::Tampered(w)) => w,
            Err(OpenError::Unidentified) => "unidentified".into(),
            Err(OpenError::Missing(_)) => "missing".into(),
            Err(OpenError::Io(e)) => format!("io: {e}"),
        };
        assert_eq!(why(false), "missing");
        let f = create_new(&vol, 0o660).unwrap();
        assert_eq!(why(false), "unidentified");
        set_identity_fd(&f, &ident).unwrap();
        assert_eq!(why(true), "ok");
        let t0 = std::time::Instant::now();
        for _ in 0..1000 {
            open_checked(&d, rel, expect, true).unwrap();
        }
        eprintln!(
            "open_checked: {:.1} us per open (openat2, fstat, reopen, two fgetxattr)",
            t0.elapsed().as_secs_f64() * 1000.0
        );
        let other: BTreeMap<String, String> = [("id".to_string(), "b".to_string())].into();
        set_identity_fd(&f, &other).unwrap();
        assert_eq!(why(false), "it carries the identity of share b");
        drop(f);
        type Plant<'a> = (&'a str, &'a dyn Fn(&Path));
        let planted: [Plant; 4] = [
            ("it is a symbolic link, not a regular file", &|v| {
                std::os::unix::fs::symlink(&secret, v).unwrap()
            }),
            ("it has 2 hard links (a volume has one)", &|v| {
                std::fs::hard_link(&secret, v).unwrap()
            }),
            ("it is a FIFO, not a regular file", &|v| {
                nix::unistd::mkfifo(v, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
            }),
            ("it is a directory, not a regular file", &|v| {
                std::fs::create_dir(v).unwrap()
            }),
        ];
        for (want, plant) in planted {
            let _ = std::fs::remove_file(&vol);
            let _ = std::fs::remove_dir(&vol);
            plant(&vol);
            assert_eq!(why(true), want);
        }
        // A directory on the path replaced by a symbolic link is not followed either.
        std::fs::remove_dir(&vol).unwrap();
        std::fs::rename(root.join("shares/a"), root.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("shares/a")).unwrap();
        assert_eq!(why(false), "its path goes through a symbolic link");
        assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
    }
}
