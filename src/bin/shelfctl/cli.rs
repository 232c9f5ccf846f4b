//! shelfctl's command line: the clap tree of commands and their flags. `request` turns a
//! parsed command into a typed request; `main` sends it and prints the answer.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::jobs;

/// Talk to shelfd over its management socket.
#[derive(Debug, Parser)]
#[command(name = "shelfctl", version)]
pub struct Cli {
    /// The socket (default: $SHELF_SOCKET, else /run/shelf/shelf.sock).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Print the server's result as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Idempotency key: a retry with the same key is answered with the first answer
    /// instead of doing the work twice.
    #[arg(long, global = true)]
    pub key: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Server name, version, protocols and features.
    Hello,
    /// Pools.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Shares.
    #[command(subcommand)]
    Share(ShareCmd),
    /// Snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Group snapshots: several shares of one pool at one instant.
    #[command(subcommand)]
    GroupSnapshot(crate::group::GroupSnapshotCmd),
    /// NFS and iSCSI exports.
    #[command(subcommand)]
    Export(ExportCmd),
    /// Attachments (who has what).
    #[command(subcommand)]
    Attachment(AttachmentCmd),
    /// Compare exports with the target daemons and repair differences.
    Reconcile,
    /// Compare database, pools and exports and list every difference; repairs nothing.
    /// Exits 1 when there is a difference.
    Verify,
    /// The audit log: state-changing and refused requests, newest first, and how many
    /// were aggregated or dropped. Peer-chosen text is printed escaped (`--json`: exact).
    Audit {
        /// Only entries after this sequence number, oldest first.
        #[arg(long)]
        since: Option<u64>,
        /// At most this many entries (1 to 1000; default 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Only this op.
        #[arg(long)]
        op: Option<String>,
        /// Only this peer uid.
        #[arg(long)]
        uid: Option<u32>,
    },
    /// The share → snapshot → clone lineage.
    Tree {
        /// Only this pool.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Cached images (imported as jobs).
    #[command(subcommand)]
    Image(jobs::ImageCmd),
    /// Long-running jobs.
    #[command(subcommand)]
    Job(jobs::JobCmd),
    /// Follow the event stream (one JSON line per event).
    Events {
        /// Resume after this sequence number.
        #[arg(long)]
        since: Option<u64>,
        /// The epoch that sequence number belongs to.
        #[arg(long)]
        epoch: Option<String>,
    },
    /// Write a snapshot's send stream to stdout (docs/replication.md), incremental from
    /// `--from`: `shelfctl send vol@s2 --from s1 | ssh node2 shelfctl receive vol`.
    Send {
        /// The snapshot: its id, or SHARE@NAME.
        snapshot: String,
        /// The base snapshot (id or name, of the same share): send only what changed.
        #[arg(long)]
        from: Option<String>,
        /// Pool, when the share's name is ambiguous.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Read a send stream from stdin into the share NAME (made by the first full stream).
    Receive {
        /// The share that holds the received snapshots.
        name: String,
        /// Pool (the only one when absent).
        #[arg(long)]
        pool: Option<String>,
        /// Bytes per chunk request (keep it under the server's max_frame_size).
        #[arg(long, default_value_t = 256 * 1024)]
        chunk: usize,
    },
    /// Ganeti ExtStorage provider: `extstorage <action>` reads Ganeti's environment
    /// (VOL_NAME, VOL_SIZE, EXTP_*...); `extstorage install DIR [--shelfctl PATH]` writes
    /// the provider directory. See docs/ganeti.md.
    Extstorage {
        /// The action (create, attach, detach, remove, grow, setinfo, verify, snapshot,
        /// open, close) or `install DIR`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Send any operation with JSON arguments (see docs/protocol.md).
    Call {
        /// Operation, e.g. share.show.
        op: String,
        /// Arguments as a JSON object.
        #[arg(default_value = "{}")]
        args: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PoolCmd {
    /// List pools with their figures.
    List,
    /// Show one pool.
    Show {
        /// Pool name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ShareCmd {
    /// Create a share.
    Create {
        /// Name.
        name: String,
        /// Size: bytes, or with a unit (512M, 10G, 1T).
        size: String,
        /// Pool (default: "default", or the only pool).
        #[arg(long)]
        pool: Option<String>,
        /// Preallocate the space instead of making a sparse volume.
        #[arg(long)]
        preallocate: bool,
        /// Metadata entry KEY=VALUE (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
        /// Make a formatted share with this filesystem (xfs or ext4), mounted by shelfd and
        /// exported over NFS.
        #[arg(long, value_name = "xfs|ext4")]
        filesystem: Option<String>,
        /// Make it from a cached image (a reflink of its raw base, grown to SIZE).
        #[arg(long)]
        from_image: Option<String>,
    },
    /// List shares.
    List {
        /// Only this pool.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Show a share (by id or name).
    Show {
        /// Id or name.
        share: String,
        /// Pool, when the name is in several.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Grow a share.
    Resize {
        /// Id or name.
        share: String,
        /// New size (must not be smaller).
        size: String,
        /// Pool, when the name is in several.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Revert a share to one of its snapshots (its content becomes the snapshot's; it
    /// keeps its size).
    Revert {
        /// Id or name.
        share: String,
        /// The snapshot (one of the share's own): id or name.
        snapshot: String,
        /// Pool, when the name is in several.
        #[arg(long)]
        pool: Option<String>,
        /// Revert even while the share is attached.
        #[arg(long)]
        force: bool,
    },
    /// Delete a share.
    Delete {
        /// Id or name.
        share: String,
        /// Pool, when the name is in several.
        #[arg(long)]
        pool: Option<String>,
        /// Delete its snapshots too.
        #[arg(long, short)]
        recursive: bool,
        /// Remove its exports and attachments first.
        #[arg(long)]
        force: bool,
    },
    /// Attach a share to a host (returns connection_info).
    Attach {
        /// Id or name.
        share: String,
        #[command(flatten)]
        connector: ConnectorArgs,
        /// Read-only (NFS).
        #[arg(long)]
        ro: bool,
    },
    /// Detach a share from a host.
    Detach {
        /// Id or name.
        share: String,
        #[command(flatten)]
        connector: ConnectorArgs,
    },
    /// Change a share's metadata (the other entries are kept).
    SetMeta {
        /// Id or name.
        share: String,
        /// Entry KEY=VALUE to add or overwrite (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
        /// Key to remove (repeatable).
        #[arg(long = "remove", value_name = "KEY")]
        remove: Vec<String>,
        /// Pool, when the name is in several.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Make a new share from a snapshot.
    Clone {
        /// The snapshot: id, or name with --share.
        snapshot: String,
        /// The new share's name.
        name: String,
        /// The snapshot's share, when the snapshot is given by name.
        #[arg(long)]
        share: Option<String>,
        /// Pool, when the share's name is in several.
        #[arg(long)]
        pool: Option<String>,
        /// Metadata entry KEY=VALUE (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExportCmd {
    /// Export a share over NFS, iSCSI or NVMe/TCP.
    Create {
        /// The share: id or name.
        share: String,
        /// nfs, iscsi or nvme.
        protocol: String,
        /// Driver: kernel or ganesha (NFS), tgt or lio (iSCSI), nvmet (NVMe/TCP).
        #[arg(long)]
        driver: Option<String>,
        /// NFS client (host, IP, network), iSCSI initiator IQN or NVMe host NQN allowed
        /// (repeatable).
        #[arg(long = "client")]
        clients: Vec<String>,
        /// NFS: read-only.
        #[arg(long)]
        ro: bool,
        /// NFS: async instead of sync.
        #[arg(long = "async")]
        async_writes: bool,
        /// NFS: no_root_squash.
        #[arg(long)]
        no_root_squash: bool,
        /// iSCSI: no CHAP.
        #[arg(long)]
        no_chap: bool,
        /// Pool, when the share's name is in several.
        #[arg(long)]
        pool: Option<String>,
    },
    /// List exports.
    List {
        /// Only this share's.
        share: Option<String>,
    },
    /// Show one export.
    Show {
        /// The share.
        share: String,
        /// nfs or iscsi.
        protocol: String,
    },
    /// Remove an export.
    Delete {
        /// The share.
        share: String,
        /// nfs or iscsi.
        protocol: String,
        /// Also drop its attachments.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AttachmentCmd {
    /// List attachments.
    List {
        /// Only this share's.
        share: Option<String>,
    },
}

/// The connector of an attach or detach.
#[derive(Debug, clap::Args)]
pub struct ConnectorArgs {
    /// The attaching host's name.
    #[arg(long)]
    pub host: String,
    /// Its IP address (the NFS client).
    #[arg(long)]
    pub ip: Option<String>,
    /// Its iSCSI initiator IQN.
    #[arg(long)]
    pub initiator: Option<String>,
    /// Its NVMe host NQN.
    #[arg(long)]
    pub nqn: Option<String>,
    /// nfs, iscsi or nvme (default: the share's export, iSCSI first).
    #[arg(long)]
    pub protocol: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Snapshot a share.
    Create {
        /// The share: id or name.
        share: String,
        /// The snapshot's name.
        name: String,
        /// Pool, when the share's name is in several.
        #[arg(long)]
        pool: Option<String>,
    },
    /// List snapshots.
    List {
        /// Only this share's.
        share: Option<String>,
        /// Only this pool's.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Show a snapshot.
    Show {
        /// Id, or name with --share.
        snapshot: String,
        /// The share, when the snapshot is given by name.
        #[arg(long)]
        share: Option<String>,
        /// Pool, when the share's name is in several.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Export a snapshot as a raw or qcow2 image: over the socket into FILE (holes kept)
    /// or stdout (`-`), or with --server-path into a file shelfd writes under its
    /// `[images] export_dirs`.
    Export(crate::export::ExportArgs),
    /// Delete a snapshot (clones made from it are not affected).
    Delete {
        /// Id, or name with --share.
        snapshot: String,
        /// The share, when the snapshot is given by name.
        #[arg(long)]
        share: Option<String>,
        /// Pool, when the share's name is in several.
        #[arg(long)]
        pool: Option<String>,
    },
}
