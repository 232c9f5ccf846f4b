//! The LIO readers and [`want_of`]: on a configfs tree recorded in the VM tier
//! (`tests/fixtures/lio/`), on `info` text, and on volumes in a temporary directory.

use std::collections::BTreeMap;
use std::path::Path;

use super::tests::want;
use super::*;
use crate::model::{Driver, Export, ExportOptions, Protocol, ShareState};

const IQN: &str = "iqn.2026-11.org.example.shelf:vol";
const INI: &str = "iqn.1993-08.org.debian:01:abc";

fn spec(path: &Path) -> ExportSpec {
    ExportSpec {
        export: Export {
            id: "e".into(),
            share: "5f1c".into(),
            share_name: "vol".into(),
            protocol: Protocol::Iscsi,
            driver: Driver::Lio,
            state: ShareState::Available,
            options: ExportOptions {
                clients: vec![INI.into()],
                ..ExportOptions::default()
            },
            target: IQN.into(),
            tid: None,
            fsid: None,
            chap_user: Some("shelf-ab12".into()),
            attached: vec![],
            created_at: 0,
        },
        path: path.to_path_buf(),
        chap_secret: Some("s3cret-value".into()),
        thin: true,
        backing: Default::default(),
    }
}

#[test]
fn an_export_wants_its_file_its_initiators_and_chap() {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("volume");
    std::fs::write(&vol, vec![0u8; 4096]).unwrap();
    let got = want_of(&spec(&vol), "0.0.0.0:3260").unwrap();
    let mut expected = want();
    expected.path = vol.display().to_string();
    expected.size = 4096;
    assert_eq!(got, expected);
    // Names that would leave their configfs directory, or split `control`, are refused.
    let mut s = spec(&vol);
    s.export.options.clients = vec!["../../core".into()];
    let e = want_of(&s, "0.0.0.0:3260").unwrap_err().to_string();
    assert!(e.contains("initiator") && !e.contains("s3cret"), "{e}");
    let comma = dir.path().join("a,b");
    std::fs::write(&comma, b"").unwrap();
    assert!(want_of(&spec(&comma), "0.0.0.0:3260").is_err());
    let mut s = spec(&vol);
    s.export.options.chap = false;
    let got = want_of(&s, "0.0.0.0:3260").unwrap();
    assert!(!got.chap_required && got.acls[INI].is_none());
}

#[test]
fn fileio_info_gives_the_size() {
    let info = "Status: ACTIVATED  Max Queue Depth: 128  SectorSize: 512  HwMaxSectors: 16384\n\
                TCM FILEIO ID: 0        File: /srv/files/pool/shares/x/volume  Size: 67108864  \
                Mode: O_DSYNC Async: 1\n";
    assert_eq!(parse_fileio_size(info), Some(67108864));
    assert_eq!(parse_fileio_size("Status: DEACTIVATED"), None);
    assert_eq!(parse_fileio_size("Size: x"), None);
}

/// The configfs tree of one LIO export as the VM tier recorded it (tests/fixtures/lio/),
/// read back: what the readers make of the kernel's own files and links.
#[test]
fn the_recorded_tree_reads_as_the_export_made_it() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lio");
    let root = tempfile::tempdir().unwrap();
    unpack(&fixture.join("tree.txt"), root.path());
    let iqn = std::fs::read_to_string(fixture.join("iqn.txt")).unwrap();
    let name = std::fs::read_to_string(fixture.join("backstore.txt")).unwrap();
    let (iqn, name) = (iqn.trim(), name.trim());
    let have = read_state(root.path(), iqn, Kind::File, name).unwrap();
    let b = have.backstore.as_ref().expect("backstore read");
    assert!(
        b.enabled && b.size.is_some() && b.unmap == Some(true),
        "{b:?}"
    );
    let tpg = have.target.as_ref().unwrap().as_ref().unwrap();
    assert!(tpg.enabled, "{tpg:?}");
    assert_eq!(tpg.luns.len(), 1);
    let want = Want {
        iqn: iqn.into(),
        name: name.into(),
        kind: Kind::File,
        path: b.udev_path.clone(),
        size: b.size.unwrap(),
        serial: String::new(),
        unmap: true,
        chap_required: tpg.attributes["authentication"] == "1",
        portal: tpg.portals.iter().next().unwrap().clone(),
        acls: tpg
            .acls
            .iter()
            .map(|(who, a)| {
                let chap = a.password.clone().map(|secret| Chap {
                    user: a.userid.clone(),
                    secret,
                });
                (who.clone(), chap)
            })
            .collect::<BTreeMap<_, _>>(),
    };
    assert!(!want.acls.is_empty());
    assert_eq!(plan_converge(&have, &want, false), vec![], "{have:#?}");
}

/// Make the recorded tree under `root`: each line is `d PATH`, `f PATH<TAB>VALUE` (value
/// with `\n` escaped) or `l PATH<TAB>LINK-TARGET`.
fn unpack(listing: &Path, root: &Path) {
    for line in std::fs::read_to_string(listing).unwrap().lines() {
        let (kind, rest) = line.split_at(2);
        let (path, value) = rest.split_once('\t').unwrap_or((rest, ""));
        let at = root.join(path);
        match kind.trim() {
            "d" => std::fs::create_dir_all(&at).unwrap(),
            "f" => std::fs::write(&at, value.replace("\\n", "\n")).unwrap(),
            "l" => std::os::unix::fs::symlink(value, &at).unwrap(),
            other => panic!("bad line kind {other:?}"),
        }
    }
}
