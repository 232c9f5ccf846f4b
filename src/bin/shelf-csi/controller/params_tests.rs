//! Unit tests of params.rs.

use super::*;
use bpfman_csi::v1::volume_capability::{AccessMode, BlockVolume, MountVolume};

fn cap(mode: Mode, block: bool, fs: &str) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                ..Default::default()
            })
        }),
    }
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn parameters_are_checked_and_sidecar_ones_recorded() {
    let p = Params::parse(&map(&[
        ("pool", "fast"),
        ("protocol", "nfs"),
        ("fsType", "ext4"),
        ("layout", "filesystem"),
        ("sparse", "false"),
        ("csi.storage.k8s.io/pvc/name", "data"),
        ("csi.storage.k8s.io/pvc/namespace", "web"),
        ("csi.storage.k8s.io/pv/name", "pvc-1"),
        ("csi.storage.k8s.io/whatever", "x"),
    ]))
    .unwrap();
    assert_eq!(p.pool.as_deref(), Some("fast"));
    assert_eq!(p.protocol(), Protocol::Nfs);
    assert_eq!(p.fs_type.as_deref(), Some("ext4"));
    assert_eq!(p.sparse, Some(false));
    assert_eq!(p.k8s.len(), 3);
    assert_eq!(
        Params::parse(&map(&[])).unwrap().protocol(),
        Protocol::Iscsi
    );
    for bad in [
        &[("colour", "red")][..],
        &[("protocol", "fc")],
        &[("sparse", "yes")],
        &[("pool", "../x")],
        &[("layout", "filesystem")],
        &[("protocol", "nfs"), ("layout", "block")],
        &[("fsType", "xfs"), ("csi.storage.k8s.io/fstype", "ext4")],
    ] {
        let e = Params::parse(&map(bad)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
    }
}

#[test]
fn capabilities_fit_the_protocol() {
    use Protocol::*;
    let ok = |caps: &[VolumeCapability], p| check_capabilities(caps, p, None);
    assert!(ok(&[], Iscsi).is_err());
    assert!(ok(&[cap(Mode::SingleNodeWriter, true, "")], Nfs).is_err());
    assert!(
        !ok(&[cap(Mode::SingleNodeWriter, true, "")], Iscsi)
            .unwrap()
            .multiattach
    );
    assert!(
        ok(&[cap(Mode::MultiNodeMultiWriter, true, "")], Nvme)
            .unwrap()
            .multiattach
    );
    assert!(ok(&[cap(Mode::MultiNodeMultiWriter, false, "")], Iscsi).is_err());
    assert!(ok(&[cap(Mode::MultiNodeSingleWriter, false, "")], Iscsi).is_err());
    assert!(
        ok(&[cap(Mode::MultiNodeReaderOnly, false, "ext4")], Iscsi)
            .unwrap()
            .multiattach
    );
    assert!(
        ok(&[cap(Mode::MultiNodeMultiWriter, false, "nfs")], Nfs)
            .unwrap()
            .multiattach
    );
    assert!(ok(&[cap(Mode::Unknown, false, "")], Nfs).is_err());
    assert!(ok(&[cap(Mode::SingleNodeWriter, false, "btrfs")], Iscsi).is_err());
    let two = [
        cap(Mode::SingleNodeWriter, false, "xfs"),
        cap(Mode::SingleNodeWriter, false, "ext4"),
    ];
    assert!(ok(&two, Iscsi).is_err());
    let e = check_capabilities(
        &[cap(Mode::SingleNodeWriter, false, "xfs")],
        Iscsi,
        Some("ext4"),
    );
    assert!(e.is_err());
    let n = ok(&[cap(Mode::SingleNodeWriter, false, "xfs")], Nfs).unwrap();
    assert_eq!(n.fs_type.as_deref(), Some("xfs"));
    let no_type = VolumeCapability {
        access_mode: Some(AccessMode { mode: 1 }),
        access_type: None,
    };
    assert!(ok(&[no_type], Iscsi).is_err());
}

#[test]
fn sizes_follow_the_range() {
    let r = |required, limit| CapacityRange {
        required_bytes: required,
        limit_bytes: limit,
    };
    assert_eq!(size_for(None, DEFAULT_SIZE, 512).unwrap(), DEFAULT_SIZE);
    assert_eq!(
        size_for(Some(&r(1000, 0)), DEFAULT_SIZE, 512).unwrap(),
        1024
    );
    assert_eq!(
        size_for(Some(&r(0, 4096)), DEFAULT_SIZE, 512).unwrap(),
        4096
    );
    assert_eq!(
        size_for(Some(&r(1, 0)), DEFAULT_SIZE, 300 << 20).unwrap(),
        300 << 20
    );
    for (range, min) in [
        (r(1000, 1020), 512),
        (r(2048, 1024), 512),
        (r(0, 100 << 20), 300 << 20),
        (r(MAX_SIZE as i64 + 1, 0), 512),
    ] {
        let e = size_for(Some(&range), DEFAULT_SIZE, min).unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange, "{range:?}");
    }
    assert_eq!(
        size_for(Some(&r(-1, 0)), DEFAULT_SIZE, 512)
            .unwrap_err()
            .code(),
        tonic::Code::InvalidArgument
    );
}
