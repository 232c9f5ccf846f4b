//! The destination file of `snapshot.export {path}`: made beneath an export directory's
//! descriptor, never through a symbolic link, never over an existing file.
//!
//! The bytes go into a new file with a unique temporary name in the destination's
//! directory (`O_CREAT | O_EXCL`, beneath the directory's descriptor); at the end it is
//! synced and renamed to its name with `RENAME_NOREPLACE`, so a finished export is the
//! only thing ever seen under that name, and something that appeared there meanwhile is
//! never replaced. A failed or cancelled export removes its temporary file (checking it
//! is still the inode it made), and so does the recovery after a crash, from the journal.
//!
//! Input trust: the path is an admin's; the export directories are the config's.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::Mode;

use super::fs::{create_new_at, open_beneath, open_dir};

/// Why a destination could not be made or committed.
#[derive(Debug, thiserror::Error)]
pub enum DestError {
    /// The path is not beneath an export directory, has `..`, or is empty.
    #[error("{0}")]
    Outside(String),
    /// A symbolic link in the path.
    #[error("a symbolic link in its path is refused")]
    Symlink,
    /// Something is at the path already (what it is).
    #[error("{0} is there already; an export never replaces a file")]
    Exists(&'static str),
    /// The directory it goes in does not exist.
    #[error("its directory does not exist")]
    NoDirectory,
    /// Anything else.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A destination being written: the temporary file and where it goes.
#[derive(Debug)]
pub struct Destination {
    /// The directory it goes in (opened beneath the export directory).
    parent: File,
    name: OsString,
    tmp: OsString,
    /// The temporary file (read-write).
    pub file: File,
    /// The temporary file's path, for a confined converter to write (its Landlock rule is
    /// on this inode, so the path leads nowhere else).
    pub tmp_path: PathBuf,
    /// Where the temporary file is, relative to its export directory (for the journal).
    pub tmp_rel: PathBuf,
}

/// The export directory `path` is beneath, and the path relative to it: the path must be
/// absolute and name a file beneath one of `dirs`, without `.` or `..` components.
pub fn split_path<'a>(dirs: &'a [PathBuf], path: &Path) -> Result<(&'a Path, PathBuf), DestError> {
    let shown = path.display();
    if !path.is_absolute() {
        return Err(DestError::Outside(format!(
            "{shown} is not an absolute path"
        )));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(DestError::Outside(format!("{shown}: `..` is refused")));
    }
    dirs.iter()
        .find_map(|d| {
            path.strip_prefix(d)
                .ok()
                .filter(|r| !r.as_os_str().is_empty())
                .map(|r| (d.as_path(), r.to_path_buf()))
        })
        .ok_or_else(|| {
            DestError::Outside(format!(
                "{shown} is not beneath an export directory ({})",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

fn map_open(e: Errno) -> DestError {
    match e {
        Errno::ELOOP => DestError::Symlink,
        Errno::EXDEV => DestError::Outside("the path leads out of its export directory".into()),
        Errno::ENOENT | Errno::ENOTDIR => DestError::NoDirectory,
        e => DestError::Io(e.into()),
    }
}

/// What is at `name` in `parent`, if anything (not following a symbolic link).
fn present(parent: &File, name: &OsString) -> Result<Option<&'static str>, DestError> {
    match nix::sys::stat::fstatat(parent, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(
            match nix::sys::stat::SFlag::from_bits_truncate(
                st.st_mode & nix::sys::stat::SFlag::S_IFMT.bits(),
            ) {
                nix::sys::stat::SFlag::S_IFLNK => "a symbolic link",
                nix::sys::stat::SFlag::S_IFDIR => "a directory",
                nix::sys::stat::SFlag::S_IFIFO => "a FIFO",
                nix::sys::stat::SFlag::S_IFSOCK => "a socket",
                nix::sys::stat::SFlag::S_IFREG => "a file",
                _ => "a device",
            },
        )),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(DestError::Io(e.into())),
    }
}

/// Start writing `rel` beneath the export directory `dir`: refused if anything is at
/// `rel` already; the bytes go to a new temporary file named after `id`.
pub fn create(dir: &Path, rel: &Path, id: &str) -> Result<Destination, DestError> {
    let root = open_dir(dir)?;
    let name = rel
        .file_name()
        .ok_or_else(|| DestError::Outside("the path names no file".into()))?
        .to_os_string();
    let parent_rel = rel.parent().unwrap_or(Path::new(""));
    let parent_rel = if parent_rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent_rel
    };
    let parent = File::from(
        open_beneath(
            &root,
            parent_rel,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .map_err(map_open)?,
    );
    if let Some(what) = present(&parent, &name)? {
        return Err(DestError::Exists(what));
    }
    let tmp = OsString::from(format!(".shelf-export-{id}"));
    let file =
        create_new_at(&parent, Path::new(&tmp), 0o640).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => DestError::Symlink,
            _ => DestError::Io(e),
        })?;
    let tmp_rel = parent_rel.join(&tmp);
    Ok(Destination {
        parent,
        name,
        tmp_path: dir.join(&tmp_rel),
        tmp,
        file,
        tmp_rel,
    })
}

impl Destination {
    /// Sync the file and give it its name (never replacing what appeared there).
    pub fn commit(&self) -> Result<(), DestError> {
        self.file.sync_all()?;
        nix::fcntl::renameat2(
            self.parent.as_fd(),
            self.tmp.as_os_str(),
            self.parent.as_fd(),
            self.name.as_os_str(),
            RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|e| match e {
            Errno::EEXIST => DestError::Exists("something"),
            e => DestError::Io(e.into()),
        })?;
        self.parent.sync_all()?;
        Ok(())
    }

    /// Remove the temporary file, if it is still the one this destination made.
    pub fn discard(&self) {
        let ours = self.file.metadata().ok().map(|m| (m.dev(), m.ino()));
        let there = nix::sys::stat::fstatat(
            &self.parent,
            self.tmp.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()
        .map(|st| (st.st_dev, st.st_ino));
        if ours.is_some() && ours == there {
            let _ = nix::unistd::unlinkat(
                &self.parent,
                self.tmp.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

/// Remove the temporary file an interrupted export left at `tmp_rel` beneath `dir`
/// (recovery): only a regular file whose name is an export's temporary name.
pub fn remove_leftover(dir: &Path, tmp_rel: &Path) -> io::Result<bool> {
    let Some(name) = tmp_rel.file_name() else {
        return Ok(false);
    };
    if !name.to_string_lossy().starts_with(".shelf-export-")
        || tmp_rel
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::RootDir))
    {
        return Ok(false);
    }
    let root = open_dir(dir)?;
    let parent_rel = tmp_rel.parent().unwrap_or(Path::new("."));
    let parent_rel = if parent_rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent_rel
    };
    let parent = match open_beneath(
        &root,
        parent_rel,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    ) {
        Ok(p) => File::from(p),
        Err(Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    match nix::sys::stat::fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st)
            if st.st_mode & nix::sys::stat::SFlag::S_IFMT.bits()
                == nix::sys::stat::SFlag::S_IFREG.bits() =>
        {
            nix::unistd::unlinkat(&parent, name, nix::unistd::UnlinkatFlags::NoRemoveDir)?;
            Ok(true)
        }
        Ok(_) | Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The stretch of `file` that `pos` is in: `(hole, end)`, `hole` when it reads as zeros
/// with nothing allocated, `end` where that stretch stops (at most `size`), from
/// `SEEK_DATA`/`SEEK_HOLE`.
pub fn segment_at(file: &File, pos: u64, size: u64) -> io::Result<(bool, u64)> {
    use nix::unistd::{lseek, Whence};
    let at = pos as i64;
    match lseek(file, at, Whence::SeekData) {
        Ok(d) if d > at => Ok((true, (d as u64).min(size))),
        Ok(_) => {
            let h = lseek(file, at, Whence::SeekHole).map_err(io::Error::from)?;
            Ok((false, (h as u64).min(size).max(pos + 1)))
        }
        Err(Errno::ENXIO) => Ok((true, size)),
        Err(e) => Err(e.into()),
    }
}

/// Allocated bytes of an open file (`st_blocks` × 512).
pub fn allocated_bytes(file: &File) -> io::Result<u64> {
    Ok(file.metadata()?.blocks() * 512)
}

/// Copy `len` bytes at `pos` of `src` to the same offset of `dst` in the kernel
/// (`copy_file_range`: a reflink on a filesystem that can, no copy through user space
/// elsewhere); falls back to reading and writing through `buf` where the kernel cannot
/// (across filesystems on older kernels). Returns the bytes copied (0 at `src`'s end).
pub fn copy_range(
    src: &File,
    dst: &File,
    pos: u64,
    len: usize,
    buf: &mut [u8],
) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let (mut off_in, mut off_out) = (pos as i64, pos as i64);
    match nix::fcntl::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), len) {
        Ok(n) => Ok(n),
        Err(Errno::EXDEV | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOSYS) => {
            let n = len.min(buf.len());
            let got = src.read_at(&mut buf[..n], pos)?;
            dst.write_all_at(&buf[..got], pos)?;
            Ok(got)
        }
        Err(e) => Err(e.into()),
    }
}
