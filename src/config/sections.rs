//! The smaller sections of the config: `[iscsi]`, `[nfs]`, `[access]`, `[filesystem]`,
//! `[images]` and `[limits]`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::model::{Driver, FsKind};

/// Settings of the image cache (`image.import`, `image.upload.*`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// Directories `image.import {source}` may read from (absolute; none by default, so
    /// only uploads work). A source is opened beneath one of them without following any
    /// symlink.
    pub import_dirs: Vec<PathBuf>,
    /// Uploads that may be in progress at once (1 to 1024).
    pub max_uploads: usize,
    /// Directories `snapshot.export {path}` may write into (absolute; none by default, so
    /// exports go over the socket only). A destination is created beneath one of them
    /// without following any symlink, and never over an existing file.
    pub export_dirs: Vec<PathBuf>,
}

/// Default of `images.max_uploads`.
pub const DEFAULT_MAX_UPLOADS: usize = 4;

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            import_dirs: Vec::new(),
            max_uploads: DEFAULT_MAX_UPLOADS,
            export_dirs: Vec::new(),
        }
    }
}

impl ImagesConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        for (key, dirs) in [
            ("import_dirs", &self.import_dirs),
            ("export_dirs", &self.export_dirs),
        ] {
            for d in dirs {
                if !d.is_absolute() || d.components().any(|c| c.as_os_str() == "..") {
                    return Err(format!(
                        "images.{key}: {d:?} must be an absolute path without `..`"
                    ));
                }
            }
        }
        if !(1..=1024).contains(&self.max_uploads) {
            return Err(format!(
                "images.max_uploads {} must be between 1 and 1024",
                self.max_uploads
            ));
        }
        Ok(())
    }
}

/// Bounds on what peers may cost the daemon (see docs/security.md, section 3).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Bytes of request frames all connections together may hold while they arrive,
    /// beyond the first 4 KiB of each frame (1 MiB to 4 GiB). Read at start-up only.
    pub request_buffer_bytes: u64,
    /// Open connections in all (16 to 65536); admins may go past it by shedding idle
    /// non-admin connections.
    pub max_connections: usize,
    /// Open connections per uid (1 to 65536); admins are exempt.
    pub max_connections_per_uid: usize,
    /// Seconds a frame may take to arrive once its first byte has (1 to 3600).
    pub frame_timeout: u64,
    /// Seconds a connection with nothing in flight and no subscription may stay silent
    /// before it is closed (0: never).
    pub idle_timeout: u64,
    /// Seconds one reply or event frame may take to be written before the connection is
    /// closed (1 to 3600): a peer that stops reading cannot hold its requests' slots, its
    /// queued replies or its descriptor.
    pub write_timeout: u64,
    /// Event subscriptions open in all (1 to 65536).
    pub max_subscriptions: usize,
    /// Seconds between background probes of the export drivers that `hello` and
    /// `pool.show` report (1 to 3600).
    pub driver_probe_interval: u64,
    /// Byte streams (`stream.read`: `snapshot.export` without a path, `snapshot.send`)
    /// open at once (1 to 4096); `busy` beyond.
    pub max_streams: usize,
    /// Seconds a stream may go unread before it is aborted and removed (1 to 86400).
    pub stream_idle_timeout: u64,
    /// Seconds a snapshot receive may go without a chunk before it is dropped and its
    /// staging file removed (1 to 86400).
    pub receive_idle_timeout: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            request_buffer_bytes: 32 << 20,
            max_connections: 1024,
            max_connections_per_uid: 128,
            frame_timeout: 30,
            idle_timeout: 3600,
            write_timeout: 30,
            max_subscriptions: 1024,
            driver_probe_interval: 30,
            max_streams: 16,
            stream_idle_timeout: 300,
            receive_idle_timeout: 600,
        }
    }
}

impl LimitsConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        let l = self;
        let checks: [(&str, u64, u64, u64); 10] = [
            (
                "request_buffer_bytes",
                l.request_buffer_bytes,
                1 << 20,
                4 << 30,
            ),
            ("max_connections", l.max_connections as u64, 16, 65536),
            (
                "max_connections_per_uid",
                l.max_connections_per_uid as u64,
                1,
                65536,
            ),
            ("frame_timeout", l.frame_timeout, 1, 3600),
            ("write_timeout", l.write_timeout, 1, 3600),
            ("max_subscriptions", l.max_subscriptions as u64, 1, 65536),
            ("driver_probe_interval", l.driver_probe_interval, 1, 3600),
            ("max_streams", l.max_streams as u64, 1, 4096),
            ("stream_idle_timeout", l.stream_idle_timeout, 1, 86400),
            ("receive_idle_timeout", l.receive_idle_timeout, 1, 86400),
        ];
        for (name, v, lo, hi) in checks {
            if !(lo..=hi).contains(&v) {
                return Err(format!("limits.{name} {v} must be between {lo} and {hi}"));
            }
        }
        Ok(())
    }
}

/// Settings of formatted shares.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesystemConfig {
    /// The filesystem a `filesystem` share gets when the request names none.
    pub default: FsKind,
    /// Where shares are mounted, one directory per share id; empty: `<state_dir>/mounts`.
    pub mount_base: PathBuf,
}

impl Default for FilesystemConfig {
    fn default() -> Self {
        FilesystemConfig {
            default: FsKind::Xfs,
            mount_base: PathBuf::new(),
        }
    }
}

/// Access control: the socket's group and the two roles. Users and groups are names or
/// numeric ids. root, and the user shelfd runs as, are always `admin`; a peer with
/// neither role is refused every request with `permission_denied`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// The group the socket belongs to (mode 0660); empty: shelfd's own group.
    pub socket_group: String,
    /// Users with every right.
    pub admin_users: Vec<String>,
    /// Groups whose members have every right.
    pub admin_groups: Vec<String>,
    /// Users who may only read (hello, list, show, tree).
    pub reader_users: Vec<String>,
    /// Groups whose members may only read.
    pub reader_groups: Vec<String>,
}

/// iSCSI settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IscsiConfig {
    /// Default driver for iSCSI exports: `tgt` or `lio`.
    pub driver: Driver,
    /// Targets are named `<iqn_prefix>:<share-name>`.
    pub iqn_prefix: String,
    /// The portal initiators are told to log in to (`connection_info.target_portal`).
    pub portal: String,
    /// tgtd's control port (`tgtadm -C N`; 0 is tgtd's default instance).
    pub tgt_control_port: u32,
    /// How the tgt driver talks to tgtd: `auto` (its management socket, tgtadm if the
    /// socket does not speak tgt 1.0's protocol), `socket` or `tgtadm`.
    pub tgt_transport: TgtTransport,
}

/// Which transport the tgt driver may use (`iscsi.tgt_transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TgtTransport {
    /// The socket when it speaks tgt 1.0's protocol, else tgtadm.
    #[default]
    Auto,
    /// The socket only: a tgtd speaking anything else is unusable.
    Socket,
    /// tgtadm only (CHAP secrets pass through its argv while it runs).
    Tgtadm,
}

impl Default for IscsiConfig {
    fn default() -> Self {
        IscsiConfig {
            driver: Driver::Tgt,
            iqn_prefix: "iqn.2026-11.org.example.shelf".into(),
            portal: "127.0.0.1:3260".into(),
            tgt_control_port: 0,
            tgt_transport: TgtTransport::Auto,
        }
    }
}

/// NFS settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NfsConfig {
    /// Default driver for NFS exports: `kernel` or `ganesha`.
    pub driver: Driver,
    /// The exports file shelfd owns (kernel driver).
    pub exports_file: PathBuf,
    /// The file of EXPORT blocks shelfd owns, included from ganesha's config.
    pub ganesha_exports: PathBuf,
    /// ganesha's pid file (shelfd sends it SIGHUP to reload exports).
    pub ganesha_pidfile: PathBuf,
    /// The address NFS clients mount from (`host:/path`); empty: this host's name.
    pub host: String,
}

impl Default for NfsConfig {
    fn default() -> Self {
        NfsConfig {
            driver: Driver::Kernel,
            exports_file: PathBuf::from("/etc/exports.d/shelf.exports"),
            ganesha_exports: PathBuf::from("/etc/ganesha/shelf-exports.conf"),
            ganesha_pidfile: PathBuf::from("/run/ganesha/ganesha.pid"),
            host: String::new(),
        }
    }
}

/// NVMe over TCP settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NvmeConfig {
    /// Default driver for NVMe exports: `nvmet` (the kernel target, through configfs).
    pub driver: Driver,
    /// Subsystems are named `<nqn_prefix>:<share-name>`; shelf owns every subsystem
    /// under this prefix (reconcile removes the ones the tree does not hold).
    pub nqn_prefix: String,
    /// The TCP portal (`ADDRESS:PORT`) the nvmet port listens on and hosts are told to
    /// connect to (`connection_info.data.portals`).
    pub portal: String,
    /// The nvmet port id (`<configfs>/ports/<port_id>`) shelf links its subsystems to.
    pub port_id: u16,
    /// nvmet's configfs directory (the kernel's is `/sys/kernel/config/nvmet`).
    pub configfs: PathBuf,
}

impl Default for NvmeConfig {
    fn default() -> Self {
        NvmeConfig {
            driver: Driver::Nvmet,
            nqn_prefix: "nqn.2026-12.io.shelf".into(),
            portal: "127.0.0.1:4420".into(),
            port_id: 1,
            configfs: PathBuf::from("/sys/kernel/config/nvmet"),
        }
    }
}
