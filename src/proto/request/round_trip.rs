//! Round trips: every request, encoded as a client encodes it ([`Request::to_wire`]), is
//! parsed by the server's own frame decoder and parser back into the same request.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::model::{Access, Connector, Driver, FsKind, Layout, Protocol};
use crate::proto::frame;

/// Every variant gets a number here; the match has no wildcard, so a new operation
/// does not compile until it is numbered, and [`samples`] must then cover it.
fn index(r: &Request) -> usize {
    match r {
        Request::Hello => 0,
        Request::PoolList => 1,
        Request::PoolShow(_) => 2,
        Request::ShareCreate(_) => 3,
        Request::ShareList(_) => 4,
        Request::ShareShow(_) => 5,
        Request::ShareResize(_) => 6,
        Request::ShareDelete(_) => 7,
        Request::ShareSetMetadata(_) => 8,
        Request::ShareClone(_) => 9,
        Request::SnapshotCreate(_) => 10,
        Request::SnapshotList(_) => 11,
        Request::SnapshotShow(_) => 12,
        Request::SnapshotDelete(_) => 13,
        Request::Tree(_) => 14,
        Request::ExportCreate(_) => 15,
        Request::ExportList(_) => 16,
        Request::ExportShow(_) => 17,
        Request::ExportDelete(_) => 18,
        Request::ShareAttach(_) => 19,
        Request::ShareDetach(_) => 20,
        Request::AttachmentList(_) => 21,
        Request::Reconcile => 22,
        Request::Verify => 23,
        Request::AuditList(_) => 24,
        Request::ImageImport(_) => 25,
        Request::ImageList(_) => 26,
        Request::UploadBegin(_) => 27,
        Request::UploadChunk(_) => 28,
        Request::UploadFinish(_) => 29,
        Request::UploadAbort(_) => 30,
        Request::ImageShow(_) => 31,
        Request::ImageDelete(_) => 32,
        Request::JobList => 33,
        Request::JobShow(_) => 34,
        Request::JobCancel(_) => 35,
        Request::EventsSubscribe(_) => 36,
        Request::SnapshotSend(_) => 37,
        Request::ReceiveBegin(_) => 38,
        Request::ReceiveChunk(_) => 39,
        Request::ReceiveFinish(_) => 40,
        Request::ReceiveAbort(_) => 41,
        Request::StreamRead(_) => 42,
        Request::StreamClose(_) => 43,
    }
}
const VARIANTS: usize = 44;

fn s(x: &str) -> String {
    x.to_string()
}

fn meta() -> BTreeMap<String, String> {
    [(s("k"), s("v")), (s("a b"), s("ü"))].into_iter().collect()
}

fn connector() -> Connector {
    Connector {
        host: s("h1"),
        ip: Some(s("10.0.0.1")),
        initiator: Some(s("iqn.2020-01.org.example:h1")),
        nqn: Some(s("nqn.2014-08.org.nvmexpress:uuid:h1")),
    }
}

/// For every operation: every field set, and only the required ones.
fn samples() -> Vec<Request> {
    let pool = || Some(s("p"));
    vec![
        Request::Hello,
        Request::PoolList,
        Request::PoolShow(PoolRef { name: s("p") }),
        Request::ShareCreate(ShareCreateArgs {
            name: s("v"),
            size: 1 << 30,
            ..Default::default()
        }),
        Request::ShareCreate(ShareCreateArgs {
            name: s("v"),
            filesystem: Some(FsKind::Ext4),
            from_image: Some(s("img")),
            size: u64::MAX,
            pool: pool(),
            sparse: Some(false),
            multiattach: true,
            metadata: meta(),
            layout: Some(Layout::Filesystem),
        }),
        Request::ShareList(ShareListArgs::default()),
        Request::ShareList(ShareListArgs {
            pool: pool(),
            name: Some(s("v")),
            id: Some(s("0b5e")),
        }),
        Request::ShareShow(ShareRef {
            share: s("v"),
            pool: pool(),
        }),
        Request::ShareResize(ShareResizeArgs {
            share: s("v"),
            size: 4096,
            pool: None,
        }),
        Request::ShareDelete(ShareDeleteArgs {
            share: s("v"),
            pool: pool(),
            recursive: true,
            force: true,
        }),
        Request::ShareDelete(ShareDeleteArgs {
            share: s("v"),
            ..Default::default()
        }),
        Request::ShareSetMetadata(ShareSetMetadataArgs {
            share: s("v"),
            ..Default::default()
        }),
        Request::ShareSetMetadata(ShareSetMetadataArgs {
            share: s("v"),
            pool: pool(),
            metadata: meta(),
            remove: vec![s("x"), s("y")],
        }),
        Request::ShareClone(CloneArgs {
            snapshot: s("s"),
            name: s("c"),
            share: Some(s("v")),
            pool: pool(),
            metadata: meta(),
        }),
        Request::SnapshotCreate(SnapshotCreateArgs {
            share: s("v"),
            name: s("s"),
            pool: None,
        }),
        Request::SnapshotList(SnapshotListArgs {
            share: Some(s("v")),
            pool: pool(),
        }),
        Request::SnapshotShow(SnapshotRef {
            snapshot: s("s"),
            share: Some(s("v")),
            pool: pool(),
        }),
        Request::SnapshotDelete(SnapshotRef {
            snapshot: s("7f"),
            ..Default::default()
        }),
        Request::Tree(TreeArgs::default()),
        Request::Tree(TreeArgs { pool: pool() }),
        Request::ExportCreate(ExportCreateArgs {
            share: s("v"),
            protocol: Protocol::Nfs,
            driver: Some(Driver::Ganesha),
            pool: pool(),
            clients: Some(vec![]),
            access: Some(Access::Ro),
            sync: Some(false),
            root_squash: Some(false),
            chap: Some(true),
        }),
        Request::ExportCreate(ExportCreateArgs {
            share: s("v"),
            protocol: Protocol::Iscsi,
            driver: None,
            pool: None,
            clients: None,
            access: None,
            sync: None,
            root_squash: None,
            chap: None,
        }),
        Request::ExportList(ShareFilter::default()),
        Request::ExportShow(ExportRef {
            share: Some(s("v")),
            protocol: Some(Protocol::Iscsi),
            ..Default::default()
        }),
        Request::ExportDelete(ExportRef {
            export: Some(s("e1")),
            share: Some(s("v")),
            pool: pool(),
            protocol: Some(Protocol::Nfs),
            force: true,
        }),
        Request::ShareAttach(AttachArgs {
            share: s("v"),
            pool: pool(),
            connector: connector(),
            protocol: Some(Protocol::Iscsi),
            mode: Some(Access::Rw),
        }),
        Request::ShareDetach(AttachArgs {
            share: s("v"),
            connector: Connector {
                host: s("h2"),
                ..Default::default()
            },
            ..Default::default()
        }),
        Request::AttachmentList(ShareFilter {
            share: Some(s("v")),
            pool: pool(),
        }),
        Request::Reconcile,
        Request::Verify,
        Request::AuditList(AuditListArgs::default()),
        Request::AuditList(AuditListArgs {
            since: Some(9),
            limit: Some(1000),
            op: Some(s("share.create")),
            uid: Some(0),
            totals: Some(true),
        }),
        Request::ImageImport(ImageImportArgs {
            name: s("img"),
            source: s("/srv/a.qcow2"),
            format: Some(s("qcow2")),
            checksum: Some(s("md5:00")),
            pool: pool(),
        }),
        Request::ImageList(PoolFilter { pool: pool() }),
        Request::UploadBegin(UploadBeginArgs {
            name: s("img"),
            size: 512,
            ..Default::default()
        }),
        Request::UploadChunk(UploadChunkArgs {
            upload: s("u1"),
            offset: 0,
            data: ciborium::Value::Bytes(vec![0, 1, 255]),
        }),
        Request::UploadFinish(UploadRef { upload: s("u1") }),
        Request::UploadAbort(UploadRef { upload: s("u1") }),
        Request::StreamRead(StreamReadArgs {
            stream: s("s1"),
            max: None,
        }),
        Request::StreamRead(StreamReadArgs {
            stream: s("s1"),
            max: Some(u64::MAX),
        }),
        Request::StreamClose(StreamRef { stream: s("s1") }),
        Request::ImageShow(ImageRef {
            image: s("img"),
            pool: pool(),
        }),
        Request::ImageDelete(ImageRef {
            image: s("img"),
            pool: None,
        }),
        Request::JobList,
        Request::JobShow(JobRef { job: s("j1") }),
        Request::JobCancel(JobRef { job: s("j1") }),
        Request::EventsSubscribe(EventsSubscribeArgs::default()),
        Request::EventsSubscribe(EventsSubscribeArgs {
            since: Some(3),
            epoch: Some(s("e")),
        }),
        Request::SnapshotSend(SnapshotSendArgs {
            snapshot: s("s2"),
            from: Some(s("s1")),
            share: Some(s("v")),
            pool: pool(),
        }),
        Request::SnapshotSend(SnapshotSendArgs {
            snapshot: s("s2"),
            ..Default::default()
        }),
        Request::ReceiveBegin(ReceiveBeginArgs {
            name: s("v"),
            pool: pool(),
        }),
        Request::ReceiveChunk(ReceiveChunkArgs {
            receive: s("r1"),
            offset: 4096,
            data: ciborium::Value::Bytes(vec![0, 1, 255]),
        }),
        Request::ReceiveFinish(ReceiveRef { receive: s("r1") }),
        Request::ReceiveAbort(ReceiveRef { receive: s("r1") }),
    ]
}

/// Through the bytes a client writes and the server's own frame decoder and parser.
fn round_trip(r: &Request, key: Option<&str>) -> Envelope {
    let (op, args) = r.to_wire();
    let bytes = frame::encode(&envelope_value(7, op, args, key));
    let v = frame::decode_body(&bytes[4..]).unwrap();
    parse_request(v).unwrap_or_else(|e| panic!("{op}: {e}"))
}

#[test]
fn every_request_parses_back_to_itself() {
    let all = samples();
    let mut seen = [false; VARIANTS];
    for r in &all {
        seen[index(r)] = true;
        let e = round_trip(r, None);
        assert_eq!((e.id, e.op.as_str()), (7, r.op()));
        assert_eq!(&e.request, r);
    }
    let missing: Vec<usize> = (0..VARIANTS).filter(|&i| !seen[i]).collect();
    assert!(missing.is_empty(), "no sample of variants {missing:?}");
    assert_eq!(round_trip(&all[0], Some("k-1")).key.as_deref(), Some("k-1"));
}

#[test]
fn absent_options_are_left_out() {
    let r = Request::ShareDelete(ShareDeleteArgs {
        share: s("v"),
        ..Default::default()
    });
    let (op, args) = r.to_wire();
    let mut bytes = Vec::new();
    ciborium::into_writer(&args, &mut bytes).unwrap();
    // {"share": "v"}: no pool, no false flags.
    assert_eq!(
        (op, bytes),
        ("share.delete", b"\xa1\x65share\x61v".to_vec())
    );
    assert_eq!(Request::Verify.to_wire().1, ciborium::Value::Map(vec![]));
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(".{0,12}")
}

proptest! {
    #[test]
    fn share_create_round_trips(
        name in ".{0,16}", size: u64, pool in opt_text(), sparse: Option<bool>,
        multiattach: bool, from_image in opt_text(),
        metadata in proptest::collection::btree_map(".{0,6}", ".{0,6}", 0..4),
        fs in proptest::option::of(prop_oneof![Just(FsKind::Xfs), Just(FsKind::Ext4)]),
    ) {
        let r = Request::ShareCreate(ShareCreateArgs {
            name, size, pool, sparse, multiattach, metadata, from_image,
            filesystem: fs, layout: fs.map(|_| Layout::Filesystem),
        });
        prop_assert_eq!(round_trip(&r, None).request, r);
    }

    #[test]
    fn attach_and_export_round_trip(
        share in ".{0,16}", host in ".{0,16}", ip in opt_text(), initiator in opt_text(),
        nqn in opt_text(),
        clients in proptest::option::of(proptest::collection::vec(".{0,8}", 0..3)),
        ro: bool, flags: [Option<bool>; 3],
    ) {
        let mode = ro.then_some(Access::Ro);
        let attach = Request::ShareAttach(AttachArgs {
            share: share.clone(), pool: None, protocol: Some(Protocol::Nfs), mode,
            connector: Connector { host, ip, initiator, nqn },
        });
        prop_assert_eq!(round_trip(&attach, None).request, attach);
        let export = Request::ExportCreate(ExportCreateArgs {
            share, protocol: Protocol::Nfs, driver: Some(Driver::Kernel), pool: None,
            clients, access: mode, sync: flags[0], root_squash: flags[1], chap: flags[2],
        });
        prop_assert_eq!(round_trip(&export, None).request, export);
    }
}
