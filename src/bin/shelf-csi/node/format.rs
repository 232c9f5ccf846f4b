//! Filesystems on block volumes: probe with `blkid`, make one with `mkfs.*` ONLY when the
//! device carries no signature at all (no filesystem, no partition table, nothing
//! ambiguous), grow one with `resize2fs` / `xfs_growfs`. A device with data is never
//! formatted: anything `blkid` recognises is mounted as it is or refused.
//!
//! Trust: the device's bytes are the tenant's (whoever wrote the volume); `blkid -p` only
//! reads signatures, and its output is parsed as `KEY=value` lines, bounded by the runner.

use std::io::{Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use tonic::Status;

use super::tools::{cmd_status, Tools};

/// How long making a filesystem may take (a large volume with ext4's tables).
const MKFS_TIMEOUT: Duration = Duration::from_secs(600);

/// `blkid -p -o export`'s exit status when it found no signature, and also when it could
/// not open the device at all (`blkid -p /nonexistent` exits 2 with nothing on stderr):
/// never proof of a blank device on its own ([`read_ends`]).
const BLKID_NOTHING: i32 = 2;

/// How much of each end of a device the node reads before believing blkid's "nothing".
const END_PROBE: u64 = 1 << 20;

/// What a device holds, as far as blkid sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// No signature at all: safe to format.
    Blank,
    /// A filesystem of this type.
    Filesystem(String),
    /// Something else (a partition table, a RAID member, an ambiguous result): never
    /// formatted, never mounted.
    Other(String),
}

/// Read `blkid -p -o export` output.
pub fn parse_blkid(out: &str) -> Content {
    let mut fs = None;
    let mut other = None;
    for line in out.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "TYPE" if matches!(v, "ext4" | "xfs") => fs = Some(v.to_string()),
            "TYPE" => other = Some(format!("a {v} signature")),
            "PTTYPE" => other = Some(format!("a {v} partition table")),
            _ => {}
        }
    }
    match (other, fs) {
        (Some(o), _) => Content::Other(o),
        (None, Some(f)) => Content::Filesystem(f),
        (None, None) => Content::Other("a signature blkid could not name".into()),
    }
}

/// Probe `device` (low-level, so a cache cannot hide a signature).
pub async fn probe(tools: &Tools, device: &Path) -> Result<Content, Status> {
    let cmd = tools
        .cmd("blkid")?
        .args(["-p", "-o", "export"])
        .arg(device.to_string_lossy());
    match tools.try_run(cmd).await {
        Ok(out) => Ok(parse_blkid(&out.stdout_text())),
        Err(e) if e.exit_code() == Some(BLKID_NOTHING) && e.stderr().trim().is_empty() => {
            let dev = device.to_path_buf();
            let read = tokio::task::spawn_blocking(move || read_ends(&dev))
                .await
                .map_err(|e| Status::internal(format!("reading the device: {e}")))?;
            read.map_err(|e| {
                Status::internal(format!(
                    "blkid found no signature on {}, but the node cannot read it ({e}); not formatting",
                    device.display()
                ))
            })?;
            Ok(Content::Blank)
        }
        Err(e) => Err(cmd_status(e)),
    }
}

/// Open `device` and read its first and last MiB (blocking): what blkid's "nothing"
/// needs before the node believes the device is blank and readable. An empty device is
/// an error too.
pub fn read_ends(device: &Path) -> std::io::Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(device)?;
    let size = f.seek(SeekFrom::End(0))?;
    if size == 0 {
        return Err(std::io::Error::other("the device is empty"));
    }
    let len = size.min(END_PROBE);
    let mut buf = vec![0u8; len as usize];
    for at in [0, size - len] {
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut buf)?;
    }
    Ok(())
}

/// Make sure `device` holds a filesystem to mount, and say which: an existing ext4/xfs is
/// kept (FAILED_PRECONDITION when `wanted` names another type); a blank device gets
/// `wanted` when `may_format` (not for a read-only volume); anything else is
/// FAILED_PRECONDITION and left untouched.
pub async fn ensure_filesystem(
    tools: &Tools,
    device: &Path,
    wanted: &str,
    may_format: bool,
) -> Result<String, Status> {
    match probe(tools, device).await? {
        Content::Filesystem(have) if have == wanted => Ok(have),
        Content::Filesystem(have) => Err(Status::failed_precondition(format!(
            "{} already holds {have}, not {wanted}; not reformatting a volume with data",
            device.display()
        ))),
        Content::Other(what) => Err(Status::failed_precondition(format!(
            "{} holds {what}; not formatting or mounting it",
            device.display()
        ))),
        Content::Blank if !may_format => Err(Status::failed_precondition(format!(
            "{} is blank and staged read-only: no filesystem to mount",
            device.display()
        ))),
        Content::Blank => {
            let program = format!("mkfs.{wanted}");
            let cmd = tools
                .cmd(&program)?
                .arg("-q")
                .arg(device.to_string_lossy())
                .timeout(MKFS_TIMEOUT);
            tools.run(cmd).await?;
            log::info!("made {wanted} on blank {}", device.display());
            Ok(wanted.to_string())
        }
    }
}

/// Grow the filesystem `fs_type` on `device`, mounted at `mount_point`, to the device's
/// size.
pub async fn grow(
    tools: &Tools,
    fs_type: &str,
    device: &Path,
    mount_point: &Path,
) -> Result<(), Status> {
    let cmd = match fs_type {
        "ext4" => tools.cmd("resize2fs")?.arg(device.to_string_lossy()),
        "xfs" => tools.cmd("xfs_growfs")?.arg(mount_point.to_string_lossy()),
        other => {
            return Err(Status::failed_precondition(format!(
                "cannot grow a {other} filesystem"
            )))
        }
    };
    tools.run(cmd.timeout(MKFS_TIMEOUT)).await.map(|_| ())
}

/// The size in bytes of a block device (or a file), read by seeking to its end.
pub fn device_size(device: &Path) -> std::io::Result<u64> {
    std::fs::File::open(device)?.seek(SeekFrom::End(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `blkid -p -o export` output as util-linux 2.38 prints it (the ext4 lines recorded on this machine).
    #[test]
    fn parses_blkid_export() {
        let ext4 = "DEVNAME=/dev/loop3\nUUID=5b1f\nVERSION=1.0\nBLOCK_SIZE=4096\nTYPE=ext4\nUSAGE=filesystem\n";
        assert_eq!(parse_blkid(ext4), Content::Filesystem("ext4".into()));
        let gpt = "DEVNAME=/dev/loop3\nPTUUID=0b3a\nPTTYPE=gpt\n";
        assert_eq!(
            parse_blkid(gpt),
            Content::Other("a gpt partition table".into())
        );
        let swap = "DEVNAME=/dev/loop3\nTYPE=swap\nUSAGE=other\n";
        assert!(matches!(parse_blkid(swap), Content::Other(_)));
        assert!(matches!(parse_blkid(""), Content::Other(_)));
    }

    /// The real blkid and mkfs on image files: a blank one is formatted, a formatted one is
    /// kept (and never reformatted to another type), one with another signature (swap) is
    /// refused, and a blank read-only one is not formatted.
    #[tokio::test]
    async fn mkfs_only_on_a_blank_device() {
        let dirs = [
            Path::new("/usr/sbin"),
            Path::new("/usr/bin"),
            Path::new("/sbin"),
            Path::new("/bin"),
        ];
        let tools = Tools::resolve_in(&dirs, super::super::tools::DEFAULT_TIMEOUT);
        let dir = tempfile::tempdir().unwrap();
        let img = |name: &str| {
            let p = dir.path().join(name);
            std::fs::File::create(&p)
                .unwrap()
                .set_len(64 << 20)
                .unwrap();
            p
        };
        let blank = img("blank.img");
        assert_eq!(probe(&tools, &blank).await.unwrap(), Content::Blank);
        let e = ensure_filesystem(&tools, &blank, "ext4", false)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            probe(&tools, &blank).await.unwrap(),
            Content::Blank,
            "read-only: untouched"
        );
        assert_eq!(
            ensure_filesystem(&tools, &blank, "ext4", true)
                .await
                .unwrap(),
            "ext4"
        );
        let uuid = |p: &Path| {
            std::process::Command::new("blkid")
                .args(["-p", "-s", "UUID", "-o", "value"])
                .arg(p)
                .output()
                .unwrap()
                .stdout
        };
        let first = uuid(&blank);
        assert_eq!(
            ensure_filesystem(&tools, &blank, "ext4", true)
                .await
                .unwrap(),
            "ext4"
        );
        assert_eq!(uuid(&blank), first, "an existing filesystem is not remade");
        let e = ensure_filesystem(&tools, &blank, "xfs", true)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert_eq!(uuid(&blank), first);
        let swap = img("swap.img");
        assert!(std::process::Command::new("mkswap")
            .arg(&swap)
            .output()
            .unwrap()
            .status
            .success());
        let e = ensure_filesystem(&tools, &swap, "ext4", true)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("swap"), "{}", e.message());
    }

    /// blkid exits 2 with nothing on stderr for a device it cannot open; the node's own
    /// read of the ends must then refuse, so nothing is formatted.
    #[tokio::test]
    async fn blkid_nothing_is_not_blank_when_the_device_cannot_be_read() {
        let dirs = [Path::new("/usr/sbin"), Path::new("/sbin")];
        let tools = Tools::resolve_in(&dirs, super::super::tools::DEFAULT_TIMEOUT);
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.img");
        std::fs::File::create(&empty).unwrap();
        for p in [dir.path().join("absent"), dir.path().to_path_buf(), empty] {
            let e = probe(&tools, &p).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::Internal, "{p:?}: {e:?}");
            assert!(e.message().contains("not formatting"), "{}", e.message());
            let e = ensure_filesystem(&tools, &p, "ext4", true)
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::Internal, "{p:?}: never mkfs");
        }
        assert!(!dir.path().join("absent").exists());
    }

    #[test]
    fn device_size_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
        assert_eq!(device_size(&p).unwrap(), 1 << 20);
    }
}
