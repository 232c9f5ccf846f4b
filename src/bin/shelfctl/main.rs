//! shelfctl: the command-line client of shelfd.

use std::path::PathBuf;
use std::process::ExitCode;

use ciborium::Value;
use clap::{Parser, Subcommand};

use shelf::client::{args, from_json, to_json, Client, ClientError};
use shelf::model::parse_size;

mod extstorage;
mod jobs;
mod output;

/// Talk to shelfd over its management socket.
#[derive(Debug, Parser)]
#[command(name = "shelfctl", version)]
struct Cli {
    /// The socket (default: $SHELF_SOCKET, else /run/shelf/shelf.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Print the server's result as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Idempotency key: a retry with the same key is answered with the first answer
    /// instead of doing the work twice.
    #[arg(long, global = true)]
    key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
enum PoolCmd {
    /// List pools with their figures.
    List,
    /// Show one pool.
    Show {
        /// Pool name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum ShareCmd {
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
enum ExportCmd {
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
enum AttachmentCmd {
    /// List attachments.
    List {
        /// Only this share's.
        share: Option<String>,
    },
}

/// The connector of an attach or detach.
#[derive(Debug, clap::Args)]
struct ConnectorArgs {
    /// The attaching host's name.
    #[arg(long)]
    host: String,
    /// Its IP address (the NFS client).
    #[arg(long)]
    ip: Option<String>,
    /// Its iSCSI initiator IQN.
    #[arg(long)]
    initiator: Option<String>,
    /// Its NVMe host NQN.
    #[arg(long)]
    nqn: Option<String>,
    /// nfs, iscsi or nvme (default: the share's export, iSCSI first).
    #[arg(long)]
    protocol: Option<String>,
}

#[derive(Debug, Subcommand)]
enum SnapshotCmd {
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

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

fn opt(pairs: &mut Vec<(&'static str, Value)>, key: &'static str, v: Option<String>) {
    if let Some(v) = v {
        pairs.push((key, text(v)));
    }
}

fn size_arg(s: &str) -> Result<Value, String> {
    parse_size(s)
        .map(|n| Value::Integer(n.into()))
        .map_err(|e| e.to_string())
}

fn meta_arg(entries: &[String]) -> Result<Value, String> {
    let mut m = Vec::new();
    for e in entries {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| format!("metadata {e:?} is not KEY=VALUE"))?;
        m.push((text(k), text(v)));
    }
    Ok(Value::Map(m))
}

fn connector_args(a: &mut Vec<(&'static str, Value)>, c: ConnectorArgs) {
    let mut m = vec![(text("host"), text(c.host))];
    if let Some(ip) = c.ip {
        m.push((text("ip"), text(ip)));
    }
    if let Some(i) = c.initiator {
        m.push((text("initiator"), text(i)));
    }
    if let Some(n) = c.nqn {
        m.push((text("nqn"), text(n)));
    }
    a.push(("connector", Value::Map(m)));
    opt(a, "protocol", c.protocol);
}

/// Turn a command into (op, args, how to print the result).
fn request(cmd: Command) -> Result<(String, Value, output::Kind), String> {
    use output::Kind;
    let mut a: Vec<(&'static str, Value)> = Vec::new();
    let (op, kind) = match cmd {
        Command::Hello => ("hello", Kind::Hello),
        Command::Tree { pool } => {
            opt(&mut a, "pool", pool);
            ("tree", Kind::Tree)
        }
        Command::Image(_) | Command::Job(_) | Command::Events { .. } => {
            return Err("image, job and events commands run on their own".into())
        }
        Command::Call { op, args: json } => {
            let j: serde_json::Value =
                serde_json::from_str(&json).map_err(|e| format!("arguments are not JSON: {e}"))?;
            return Ok((op, from_json(&j), Kind::Raw));
        }
        Command::Reconcile => ("reconcile", Kind::Raw),
        Command::Extstorage { .. } => return Err("extstorage runs on its own".into()),
        Command::Verify => ("verify", Kind::Verify),
        Command::Audit {
            since,
            limit,
            op,
            uid,
        } => {
            if let Some(s) = since {
                a.push(("since", Value::Integer(s.into())));
            }
            if let Some(l) = limit {
                a.push(("limit", Value::Integer(l.into())));
            }
            opt(&mut a, "op", op);
            if let Some(u) = uid {
                a.push(("uid", Value::Integer(u.into())));
            }
            a.push(("totals", Value::Bool(true)));
            ("audit.list", Kind::Audit)
        }
        Command::Attachment(AttachmentCmd::List { share }) => {
            opt(&mut a, "share", share);
            ("attachment.list", Kind::Attachments)
        }
        Command::Export(c) => match c {
            ExportCmd::Create {
                share,
                protocol,
                driver,
                clients,
                ro,
                async_writes,
                no_root_squash,
                no_chap,
                pool,
            } => {
                let nfs = protocol == "nfs";
                a.push(("share", text(share)));
                a.push(("protocol", text(protocol)));
                opt(&mut a, "driver", driver);
                opt(&mut a, "pool", pool);
                if nfs || !clients.is_empty() {
                    a.push((
                        "clients",
                        Value::Array(clients.into_iter().map(text).collect()),
                    ));
                }
                if ro {
                    a.push(("access", text("ro")));
                }
                if async_writes {
                    a.push(("sync", Value::Bool(false)));
                }
                if no_root_squash {
                    a.push(("root_squash", Value::Bool(false)));
                }
                if no_chap {
                    a.push(("chap", Value::Bool(false)));
                }
                ("export.create", Kind::Changed("export"))
            }
            ExportCmd::List { share } => {
                opt(&mut a, "share", share);
                ("export.list", Kind::Exports)
            }
            ExportCmd::Show { share, protocol } => {
                a.push(("share", text(share)));
                a.push(("protocol", text(protocol)));
                ("export.show", Kind::Export)
            }
            ExportCmd::Delete {
                share,
                protocol,
                force,
            } => {
                a.push(("share", text(share)));
                a.push(("protocol", text(protocol)));
                if force {
                    a.push(("force", Value::Bool(true)));
                }
                ("export.delete", Kind::Deleted)
            }
        },
        Command::Pool(PoolCmd::List) => ("pool.list", Kind::Pools),
        Command::Pool(PoolCmd::Show { name }) => {
            a.push(("name", text(name)));
            ("pool.show", Kind::Pool)
        }
        Command::Share(c) => match c {
            ShareCmd::Create {
                name,
                size,
                pool,
                preallocate,
                meta,
                filesystem,
                from_image,
            } => {
                a.push(("name", text(name)));
                opt(&mut a, "filesystem", filesystem);
                opt(&mut a, "from_image", from_image);
                a.push(("size", size_arg(&size)?));
                opt(&mut a, "pool", pool);
                if preallocate {
                    a.push(("sparse", Value::Bool(false)));
                }
                if !meta.is_empty() {
                    a.push(("metadata", meta_arg(&meta)?));
                }
                ("share.create", Kind::Changed("share"))
            }
            ShareCmd::List { pool } => {
                opt(&mut a, "pool", pool);
                ("share.list", Kind::Shares)
            }
            ShareCmd::Show { share, pool } => {
                a.push(("share", text(share)));
                opt(&mut a, "pool", pool);
                ("share.show", Kind::Share)
            }
            ShareCmd::Resize { share, size, pool } => {
                a.push(("share", text(share)));
                a.push(("size", size_arg(&size)?));
                opt(&mut a, "pool", pool);
                ("share.resize", Kind::Changed("share"))
            }
            ShareCmd::Delete {
                share,
                pool,
                recursive,
                force,
            } => {
                a.push(("share", text(share)));
                opt(&mut a, "pool", pool);
                if recursive {
                    a.push(("recursive", Value::Bool(true)));
                }
                if force {
                    a.push(("force", Value::Bool(true)));
                }
                ("share.delete", Kind::Deleted)
            }
            ShareCmd::SetMeta {
                share,
                meta,
                remove,
                pool,
            } => {
                a.push(("share", text(share)));
                opt(&mut a, "pool", pool);
                a.push(("metadata", meta_arg(&meta)?));
                if !remove.is_empty() {
                    a.push((
                        "remove",
                        Value::Array(remove.into_iter().map(text).collect()),
                    ));
                }
                ("share.set_metadata", Kind::Changed("share"))
            }
            ShareCmd::Attach {
                share,
                connector,
                ro,
            } => {
                a.push(("share", text(share)));
                connector_args(&mut a, connector);
                if ro {
                    a.push(("mode", text("ro")));
                }
                ("share.attach", Kind::Raw)
            }
            ShareCmd::Detach { share, connector } => {
                a.push(("share", text(share)));
                connector_args(&mut a, connector);
                ("share.detach", Kind::Raw)
            }
            ShareCmd::Clone {
                snapshot,
                name,
                share,
                pool,
                meta,
            } => {
                a.push(("snapshot", text(snapshot)));
                a.push(("name", text(name)));
                opt(&mut a, "share", share);
                opt(&mut a, "pool", pool);
                if !meta.is_empty() {
                    a.push(("metadata", meta_arg(&meta)?));
                }
                ("share.clone", Kind::Changed("share"))
            }
        },
        Command::Snapshot(c) => match c {
            SnapshotCmd::Create { share, name, pool } => {
                a.push(("share", text(share)));
                a.push(("name", text(name)));
                opt(&mut a, "pool", pool);
                ("snapshot.create", Kind::Changed("snapshot"))
            }
            SnapshotCmd::List { share, pool } => {
                opt(&mut a, "share", share);
                opt(&mut a, "pool", pool);
                ("snapshot.list", Kind::Snapshots)
            }
            SnapshotCmd::Show {
                snapshot,
                share,
                pool,
            } => {
                a.push(("snapshot", text(snapshot)));
                opt(&mut a, "share", share);
                opt(&mut a, "pool", pool);
                ("snapshot.show", Kind::Snapshot)
            }
            SnapshotCmd::Delete {
                snapshot,
                share,
                pool,
            } => {
                a.push(("snapshot", text(snapshot)));
                opt(&mut a, "share", share);
                opt(&mut a, "pool", pool);
                ("snapshot.delete", Kind::Deleted)
            }
        },
    };
    Ok((op.to_string(), args(a), kind))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Extstorage { args } = &cli.command {
        return extstorage::main(args, cli.socket);
    }
    let socket = cli
        .socket
        .or_else(|| std::env::var_os("SHELF_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/run/shelf/shelf.sock"));
    let key = cli.key.clone();
    let command = match cli.command {
        Command::Image(c) => return jobs::image(&socket, key.as_deref(), c),
        Command::Job(c) => return jobs::job(&socket, c),
        Command::Events { since, epoch } => return jobs::events(&socket, since, epoch),
        other => other,
    };
    let (op, a, kind) = match request(command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shelfctl: {e}");
            return ExitCode::from(2);
        }
    };
    let result =
        Client::connect(&socket).and_then(|mut c| c.call_keyed(&op, a, cli.key.as_deref()));
    match result {
        Ok(v) => {
            let unclean = matches!(kind, output::Kind::Verify)
                && !matches!(shelf::client::get(&v, "clean"), Some(Value::Bool(true)));
            if cli.json || matches!(kind, output::Kind::Raw) {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&to_json(&v)).unwrap_or_default()
                );
            } else {
                print!("{}", output::render(&kind, &v));
            }
            if unclean {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(ClientError::Remote(e)) => {
            eprintln!("shelfctl: {op}: {}: {}", e.code, e.message);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("shelfctl: {e}");
            ExitCode::from(3)
        }
    }
}
