//! shelfctl: the command-line client of shelfd.

use std::path::PathBuf;
use std::process::ExitCode;

use ciborium::Value;
use clap::{Parser, Subcommand};

use shelf::client::{args, from_json, to_json, Client, ClientError};
use shelf::model::parse_size;

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
    /// The share → snapshot → clone lineage.
    Tree {
        /// Only this pool.
        #[arg(long)]
        pool: Option<String>,
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
        Command::Call { op, args: json } => {
            let j: serde_json::Value =
                serde_json::from_str(&json).map_err(|e| format!("arguments are not JSON: {e}"))?;
            return Ok((op, from_json(&j), Kind::Raw));
        }
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
            } => {
                a.push(("name", text(name)));
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
            } => {
                a.push(("share", text(share)));
                opt(&mut a, "pool", pool);
                if recursive {
                    a.push(("recursive", Value::Bool(true)));
                }
                ("share.delete", Kind::Deleted)
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
            SnapshotCmd::Show { snapshot, share } => {
                a.push(("snapshot", text(snapshot)));
                opt(&mut a, "share", share);
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
    let socket = cli
        .socket
        .or_else(|| std::env::var_os("SHELF_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/run/shelf/shelf.sock"));
    let (op, a, kind) = match request(cli.command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shelfctl: {e}");
            return ExitCode::from(2);
        }
    };
    let result = Client::connect(&socket).and_then(|mut c| c.call(&op, a));
    match result {
        Ok(v) => {
            if cli.json || matches!(kind, output::Kind::Raw) {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&to_json(&v)).unwrap_or_default()
                );
            } else {
                print!("{}", output::render(&kind, &v));
            }
            ExitCode::SUCCESS
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
