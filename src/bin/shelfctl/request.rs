//! A parsed command as a typed request: the argument structs the server parses, so
//! shelfctl cannot send a field the protocol does not have.

use std::collections::BTreeMap;

use ciborium::Value;

use shelf::client::from_json;
use shelf::model::{parse_size, Access, Connector, Driver, FsKind, Protocol};
use shelf::proto::{
    AttachArgs, AuditListArgs, CloneArgs, ExportCreateArgs, ExportRef, PoolRef, Request,
    ShareCreateArgs, ShareDeleteArgs, ShareFilter, ShareListArgs, ShareRef, ShareResizeArgs,
    ShareRevertArgs, ShareSetMetadataArgs, SnapshotCreateArgs, SnapshotListArgs, SnapshotRef,
    TreeArgs,
};

use crate::cli::{
    AttachmentCmd, Command, ConnectorArgs, ExportCmd, PoolCmd, ShareCmd, SnapshotCmd,
};
use crate::output::Kind;

/// What shelfctl sends: a typed request, or `shelfctl call`'s op and JSON arguments as given.
#[derive(Debug)]
pub enum Call {
    /// A request built from a command.
    Typed(Request),
    /// `shelfctl call OP ARGS`.
    Raw(String, Value),
}

impl Call {
    /// The op's name (for error messages).
    pub fn op(&self) -> &str {
        match self {
            Call::Typed(r) => r.op(),
            Call::Raw(op, _) => op,
        }
    }
}

fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

/// `--meta KEY=VALUE` entries; a key given twice is refused (as the server refuses a
/// repeated map key).
fn meta_arg(entries: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut m = BTreeMap::new();
    for e in entries {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| format!("metadata {e:?} is not KEY=VALUE"))?;
        if m.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("metadata key {k:?} is given twice"));
        }
    }
    Ok(m)
}

fn protocol_arg(s: &str) -> Result<Protocol, String> {
    Protocol::parse(s).ok_or_else(|| format!("unknown protocol {s:?} (nfs, iscsi or nvme)"))
}

fn attach_args(
    share: String,
    c: ConnectorArgs,
    mode: Option<Access>,
) -> Result<AttachArgs, String> {
    Ok(AttachArgs {
        share,
        pool: None,
        connector: Connector {
            host: c.host,
            ip: c.ip,
            initiator: c.initiator,
            nqn: c.nqn,
        },
        protocol: c.protocol.as_deref().map(protocol_arg).transpose()?,
        mode,
    })
}

/// Turn a command into what to send and how to print the result. Image, job, events and
/// extstorage commands run on their own (`jobs`, `extstorage`).
pub fn request(cmd: Command) -> Result<(Call, Kind), String> {
    let (r, kind) = match cmd {
        Command::Hello => (Request::Hello, Kind::Hello),
        Command::Tree { pool } => (Request::Tree(TreeArgs { pool }), Kind::Tree),
        Command::Image(_)
        | Command::Job(_)
        | Command::Events { .. }
        | Command::Send { .. }
        | Command::Receive { .. } => {
            return Err("image, job and events commands run on their own".into())
        }
        Command::Call { op, args: json } => {
            let j: serde_json::Value =
                serde_json::from_str(&json).map_err(|e| format!("arguments are not JSON: {e}"))?;
            return Ok((Call::Raw(op, from_json(&j)), Kind::Raw));
        }
        Command::Reconcile => (Request::Reconcile, Kind::Raw),
        Command::Extstorage { .. } => return Err("extstorage runs on its own".into()),
        Command::Verify => (Request::Verify, Kind::Verify),
        Command::Audit {
            since,
            limit,
            op,
            uid,
        } => {
            let a = AuditListArgs {
                since,
                limit,
                op,
                uid,
                totals: Some(true),
            };
            (Request::AuditList(a), Kind::Audit)
        }
        Command::Attachment(AttachmentCmd::List { share }) => {
            let a = ShareFilter { share, pool: None };
            (Request::AttachmentList(a), Kind::Attachments)
        }
        Command::Export(c) => export(c)?,
        Command::Pool(PoolCmd::List) => (Request::PoolList, Kind::Pools),
        Command::Pool(PoolCmd::Show { name }) => (Request::PoolShow(PoolRef { name }), Kind::Pool),
        Command::Share(c) => share(c)?,
        Command::Snapshot(c) => snapshot(c),
        Command::GroupSnapshot(c) => crate::group::request(c),
    };
    Ok((Call::Typed(r), kind))
}

fn export(c: ExportCmd) -> Result<(Request, Kind), String> {
    let export_ref = |share, protocol: String, force| -> Result<ExportRef, String> {
        Ok(ExportRef {
            share: Some(share),
            protocol: Some(protocol_arg(&protocol)?),
            force,
            ..Default::default()
        })
    };
    Ok(match c {
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
            let protocol = protocol_arg(&protocol)?;
            let driver = driver
                .map(|d| Driver::parse(&d).ok_or_else(|| format!("unknown driver {d:?}")))
                .transpose()?;
            // NFS needs the list (`[]`: attached hosts only); iSCSI sends it when given.
            let clients = (protocol == Protocol::Nfs || !clients.is_empty()).then_some(clients);
            let a = ExportCreateArgs {
                share,
                protocol,
                driver,
                pool,
                clients,
                access: ro.then_some(Access::Ro),
                sync: async_writes.then_some(false),
                root_squash: no_root_squash.then_some(false),
                chap: no_chap.then_some(false),
            };
            (Request::ExportCreate(a), Kind::Changed("export"))
        }
        ExportCmd::List { share } => (
            Request::ExportList(ShareFilter { share, pool: None }),
            Kind::Exports,
        ),
        ExportCmd::Show { share, protocol } => (
            Request::ExportShow(export_ref(share, protocol, false)?),
            Kind::Export,
        ),
        ExportCmd::Delete {
            share,
            protocol,
            force,
        } => (
            Request::ExportDelete(export_ref(share, protocol, force)?),
            Kind::Deleted,
        ),
    })
}

fn share(c: ShareCmd) -> Result<(Request, Kind), String> {
    let changed = Kind::Changed("share");
    Ok(match c {
        ShareCmd::Create {
            name,
            size,
            pool,
            preallocate,
            meta,
            filesystem,
            from_image,
        } => {
            let filesystem = filesystem
                .map(|f| FsKind::parse(&f).ok_or_else(|| format!("unknown filesystem {f:?}")))
                .transpose()?;
            let a = ShareCreateArgs {
                name,
                filesystem,
                from_image,
                size: size_arg(&size)?,
                pool,
                sparse: preallocate.then_some(false),
                metadata: meta_arg(&meta)?,
                ..Default::default()
            };
            (Request::ShareCreate(a), changed)
        }
        ShareCmd::List { pool } => {
            let a = ShareListArgs {
                pool,
                ..Default::default()
            };
            (Request::ShareList(a), Kind::Shares)
        }
        ShareCmd::Show { share, pool } => {
            (Request::ShareShow(ShareRef { share, pool }), Kind::Share)
        }
        ShareCmd::Resize { share, size, pool } => {
            let a = ShareResizeArgs {
                share,
                size: size_arg(&size)?,
                pool,
            };
            (Request::ShareResize(a), changed)
        }
        ShareCmd::Revert {
            share,
            snapshot,
            pool,
            force,
        } => {
            let a = ShareRevertArgs {
                share,
                snapshot,
                force,
                pool,
            };
            (Request::ShareRevert(a), changed)
        }
        ShareCmd::Delete {
            share,
            pool,
            recursive,
            force,
        } => {
            let a = ShareDeleteArgs {
                share,
                pool,
                recursive,
                force,
            };
            (Request::ShareDelete(a), Kind::Deleted)
        }
        ShareCmd::SetMeta {
            share,
            meta,
            remove,
            pool,
        } => {
            let a = ShareSetMetadataArgs {
                share,
                pool,
                metadata: meta_arg(&meta)?,
                remove,
            };
            (Request::ShareSetMetadata(a), changed)
        }
        ShareCmd::Attach {
            share,
            connector,
            ro,
        } => {
            let a = attach_args(share, connector, ro.then_some(Access::Ro))?;
            (Request::ShareAttach(a), Kind::Raw)
        }
        ShareCmd::Detach { share, connector } => (
            Request::ShareDetach(attach_args(share, connector, None)?),
            Kind::Raw,
        ),
        ShareCmd::Clone {
            snapshot,
            name,
            share,
            pool,
            meta,
        } => {
            let a = CloneArgs {
                snapshot,
                name,
                share,
                pool,
                metadata: meta_arg(&meta)?,
            };
            (Request::ShareClone(a), changed)
        }
    })
}

fn snapshot(c: SnapshotCmd) -> (Request, Kind) {
    match c {
        SnapshotCmd::Create { share, name, pool } => {
            let a = SnapshotCreateArgs { share, name, pool };
            (Request::SnapshotCreate(a), Kind::Changed("snapshot"))
        }
        SnapshotCmd::List { share, pool } => (
            Request::SnapshotList(SnapshotListArgs { share, pool }),
            Kind::Snapshots,
        ),
        SnapshotCmd::Show {
            snapshot,
            share,
            pool,
        } => {
            let a = SnapshotRef {
                snapshot,
                share,
                pool,
            };
            (Request::SnapshotShow(a), Kind::Snapshot)
        }
        SnapshotCmd::Export(a) => (Request::SnapshotExport(a.request()), Kind::Raw),
        SnapshotCmd::Delete {
            snapshot,
            share,
            pool,
        } => {
            let a = SnapshotRef {
                snapshot,
                share,
                pool,
            };
            (Request::SnapshotDelete(a), Kind::Deleted)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    /// The requests the hand-built argument maps of the previous shelfctl sent, captured
    /// before they were replaced: command line, op, hex of the CBOR argument map. The
    /// typed requests must encode to the same bytes.
    const BEFORE: &str = include_str!("../../../tests/fixtures/shelfctl-requests.tsv");

    fn wire(line: &str) -> Result<(String, String), String> {
        let argv = std::iter::once("shelfctl").chain(line.split(' '));
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let (call, _) = request(cli.command)?;
        let Call::Typed(r) = call else {
            return Err("not typed".into());
        };
        let (op, args) = r.to_wire();
        let mut bytes = Vec::new();
        ciborium::into_writer(&args, &mut bytes).map_err(|e| e.to_string())?;
        Ok((
            op.to_string(),
            bytes.iter().map(|b| format!("{b:02x}")).collect(),
        ))
    }

    #[test]
    fn typed_requests_encode_as_the_hand_built_maps_did() {
        let mut n = 0;
        for row in BEFORE.lines() {
            let [line, op, hex] = row.split('\t').collect::<Vec<_>>()[..] else {
                panic!("bad fixture row {row:?}");
            };
            assert_eq!(
                wire(line).unwrap(),
                (op.to_string(), hex.to_string()),
                "{line}"
            );
            n += 1;
        }
        assert!(n >= 40, "only {n} fixture rows");
    }

    #[test]
    fn bad_words_are_refused_before_sending() {
        for line in [
            "export create v1 nfz",
            "export create v1 nfs --driver knl",
            "share create v1 1G --filesystem zfs",
            "share create v1 1G --meta a=1 --meta a=2",
            "share create v1 1G --meta a",
            "share attach v1 --host h --protocol smb",
        ] {
            assert!(wire(line).is_err(), "{line}");
        }
    }
}
