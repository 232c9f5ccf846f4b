//! Discard end to end on the host: tgt LUNs of thin volumes advertise logical block
//! provisioning and UNMAP punches holes in the volume file; preallocated volumes never
//! do; formatted shares mount with `discard` so a tenant's deletes give space back; and
//! `share.show`/`pool.show` report what is really allocated. Real initiators throughout
//! (libiscsi's iscsi-test-cu, qemu's iscsi driver), a real tgtd on private ports, XFS on
//! a loop device.

mod common;
#[path = "discard/cu.rs"]
mod cu;
#[path = "discard/target.rs"]
mod target;

use std::collections::BTreeSet;
use std::path::Path;

use ciborium::Value;
use common::*;
use shelf::client::get_u64;
use target::{blocks, raw_unmap, thin_luns};

const MIB: u64 = 1 << 20;
const INIT: &str = "iqn.2026-12.org.example:discard-client";

fn attach(d: &Daemon, share: &str) -> Value {
    d.ok(
        "share.attach",
        vec![
            ("share", t(share)),
            ("connector", connector(INIT, "127.0.0.1", "compute-1")),
        ],
    )
}

fn discard_flag(reply: &Value) -> Value {
    sub(sub(sub(reply, "connection_info"), "data"), "discard").clone()
}

fn allocated(v: &Value) -> u64 {
    get_u64(v, "allocated").unwrap_or_else(|| panic!("no allocated in {v:?}"))
}

fn share_allocated(d: &Daemon, share: &str) -> u64 {
    allocated(&d.ok("share.show", vec![("share", t(share))]))
}

/// Whether a `reconcile` reply has a tgt finding of `kind` about target `iqn`.
fn has_finding(report: &Value, kind: &str, iqn: &str) -> bool {
    sub(report, "findings").as_array().unwrap().iter().any(|f| {
        field(f, "driver") == "tgt" && field(f, "kind") == kind && field(f, "object") == iqn
    })
}

/// (a) The provisioning tests of iscsi-test-cu that pass on a bare tgtd LUN with
/// `thin_provisioning=1` on a sparse file pass on shelf's target too; on a preallocated
/// share's target no UNMAP test passes (the LUN says it is fully provisioned).
#[test]
fn libiscsi_provisioning_tests_that_pass_on_bare_tgtd_pass_on_shelfs_target() {
    let s = Rig::start("discard-cu", 1 << 30, "", false);
    let bare_tgtd = Tgtd::start();
    let bare_url = target::bare_thin_lun(&bare_tgtd, &s.xfs.mount.join("bare.img"), 64 * MIB, INIT);
    let bare = cu::passed(&bare_url, &[], INIT, cu::SUITES);
    eprintln!("passing on bare tgtd: {bare:?}");
    assert!(
        bare.iter().any(|t| t.starts_with("Unmap.")),
        "no UNMAP test passes on the bare thin LUN, so it proves nothing: {bare:?}"
    );

    let d = &s.d;
    d.ok(
        "share.create",
        vec![("name", t("thin")), ("size", n(64 * MIB))],
    );
    let r = attach(d, "thin");
    assert_eq!(discard_flag(&r), Value::Bool(true));
    let login = Login::from_reply(&r, INIT);
    let shelf = cu::passed(&login.url(), &login.env(), INIT, cu::SUITES);
    eprintln!("passing on shelf's target: {shelf:?}");
    let missing: BTreeSet<_> = bare.difference(&shelf).collect();
    assert!(
        missing.is_empty(),
        "pass on bare tgtd, not on shelf's target: {missing:?}"
    );

    d.ok(
        "share.create",
        vec![
            ("name", t("thick")),
            ("size", n(32 * MIB)),
            ("sparse", Value::Bool(false)),
        ],
    );
    let r = attach(d, "thick");
    assert_eq!(discard_flag(&r), Value::Bool(false));
    let login = Login::from_reply(&r, INIT);
    let thick = cu::passed(&login.url(), &login.env(), INIT, &["SCSI.Unmap"]);
    assert!(
        thick.is_empty(),
        "UNMAP tests pass on a preallocated LUN: {thick:?}"
    );
}

/// (b) Bytes written through the target allocate blocks; a discard through the target
/// punches them out again: `stat -c %b`, `share.show` and `pool.show` all see it. The
/// LUN keeps its thin provisioning across a resize (LUN re-created), a tgtd restart
/// (reconcile re-creates everything) and a drift made behind shelf's back.
#[test]
fn writes_allocate_and_discards_through_the_target_give_back() {
    let mut s = Rig::start("discard-b", 1 << 30, "", false);
    let created = s.d.ok(
        "share.create",
        vec![("name", t("vol")), ("size", n(64 * MIB))],
    );
    let id = field(sub(&created, "share"), "id");
    let vol = volume(&s.pool(), &id);
    let r = attach(&s.d, "vol");
    assert_eq!(discard_flag(&r), Value::Bool(true));
    let iqn = field(sub(sub(&r, "connection_info"), "data"), "target_iqn");
    assert_eq!(thin_luns(&s.tgtd, &iqn), BTreeSet::from([1]));
    let login = Login::from_reply(&r, INIT);

    let write_then_discard = |s: &Rig, offset: u64, what: &str| {
        let before = blocks(&vol);
        login.write(offset, 16 * MIB, 0xab).unwrap();
        let written = blocks(&vol);
        assert!(
            written >= before + 16 * MIB / 512,
            "{what}: 16 MiB written, blocks {before} -> {written}"
        );
        assert_eq!(share_allocated(&s.d, "vol"), written * 512, "{what}");
        login.discard(offset, 16 * MIB).unwrap();
        let after = blocks(&vol);
        assert!(
            after + 16 * MIB / 512 <= written,
            "{what}: 16 MiB discarded, blocks {written} -> {after}"
        );
        assert_eq!(share_allocated(&s.d, "vol"), after * 512, "{what}");
        assert_eq!(
            read_at(&vol, offset, 4096),
            vec![0u8; 4096],
            "{what}: a hole reads 0"
        );
        (written, after)
    };

    let (written, after) = write_then_discard(&s, 8 * MIB, "first");
    eprintln!("blocks: written {written}, after discard {after}");
    // The pool's figure comes from a cached pass (at most a few seconds old).
    let pool_allocated = || allocated(&s.d.ok("pool.show", vec![("name", t("default"))]));
    assert!(
        eventually(30, || pool_allocated() == after * 512),
        "pool.show allocated {} != the only volume's {}",
        pool_allocated(),
        after * 512
    );
    let pools = s.d.ok("pool.list", vec![]);
    assert!(get_u64(&pools.as_array().unwrap()[0], "allocated").is_some());

    // A raw UNMAP (tests/discard/unmap.py, the one test (c) sends a preallocated LUN) is
    // answered GOOD here and frees the range.
    login.write(32 * MIB, 16 * MIB, 0xab).unwrap();
    let written = blocks(&vol);
    let answer = raw_unmap(&login, 32 * MIB / 512, 16 * MIB / 512);
    assert!(answer.starts_with("status=0 "), "{answer}");
    assert!(
        blocks(&vol) + 16 * MIB / 512 <= written,
        "raw UNMAP freed nothing"
    );

    s.d.ok(
        "share.resize",
        vec![("share", t("vol")), ("size", n(128 * MIB))],
    );
    assert_eq!(
        thin_luns(&s.tgtd, &iqn),
        BTreeSet::from([1]),
        "after resize"
    );
    write_then_discard(&s, 96 * MIB, "after resize");

    s.tgtd.restart();
    let report = s.d.ok("reconcile", vec![]);
    assert!(has_finding(&report, "missing", &iqn), "{report:?}");
    assert_eq!(
        thin_luns(&s.tgtd, &iqn),
        BTreeSet::from([1]),
        "after tgtd restart"
    );
    write_then_discard(&s, 0, "after tgtd restart");

    // Thin provisioning switched off behind shelf's back is drift, and repaired.
    let tid = shelf::export::tgt::parse_show_target(&s.tgtd.show())
        .into_iter()
        .find(|t| t.iqn == iqn)
        .unwrap()
        .tid
        .to_string();
    s.tgtd
        .tgtadm(&[
            "--mode",
            "logicalunit",
            "--op",
            "update",
            "--tid",
            &tid,
            "--lun",
            "1",
            "--params",
            "thin_provisioning=0",
        ])
        .unwrap();
    let report = s.d.ok("reconcile", vec![]);
    assert!(has_finding(&report, "drifted", &iqn), "{report:?}");
    assert_eq!(thin_luns(&s.tgtd, &iqn), BTreeSet::from([1]), "after drift");
}

/// (c) A preallocated share: `discard: false`, a LUN without thin provisioning, a
/// discard through the target frees nothing, and a raw UNMAP sent anyway is refused.
#[test]
fn a_preallocated_volume_keeps_its_blocks() {
    let s = Rig::start("discard-c", 1 << 30, "", false);
    let created = s.d.ok(
        "share.create",
        vec![
            ("name", t("thick")),
            ("size", n(32 * MIB)),
            ("sparse", Value::Bool(false)),
        ],
    );
    let vol = volume(&s.pool(), &field(sub(&created, "share"), "id"));
    let r = attach(&s.d, "thick");
    assert_eq!(discard_flag(&r), Value::Bool(false));
    let iqn = field(sub(sub(&r, "connection_info"), "data"), "target_iqn");
    assert!(thin_luns(&s.tgtd, &iqn).is_empty());
    let login = Login::from_reply(&r, INIT);
    login.write(0, 16 * MIB, 0xcd).unwrap();
    let full = blocks(&vol);
    assert!(full >= 32 * MIB / 512, "preallocated: {full} blocks");
    login.discard(0, 16 * MIB).unwrap();
    assert_eq!(
        blocks(&vol),
        full,
        "a discard freed blocks of a preallocated volume"
    );
    // qemu sends nothing to a LUN that does not advertise provisioning; an initiator that
    // sends UNMAP anyway is refused: CHECK CONDITION (2), ILLEGAL REQUEST.
    let answer = raw_unmap(&login, 0, 16 * MIB / 512);
    assert!(
        answer.starts_with("status=2 ") && answer.contains("ILLEGAL_REQUEST"),
        "{answer}"
    );
    assert_eq!(blocks(&vol), full, "a raw UNMAP freed preallocated blocks");
    assert_eq!(read_at(&vol, 0, 4), vec![0xcd; 4]);
    assert_eq!(share_allocated(&s.d, "thick"), full * 512);
    s.d.ok(
        "share.resize",
        vec![("share", t("thick")), ("size", n(48 * MIB))],
    );
    assert!(thin_luns(&s.tgtd, &iqn).is_empty(), "after resize");
}

/// A failed allocation pass (here: the pool's snapshot directory cannot be listed) costs
/// only the `allocated` key: `pool.show` and `pool.list` still answer, without it, and
/// the figure comes back (from a pass in the background) once the pool can be read.
#[test]
fn pool_show_answers_without_allocated_when_the_pass_fails() {
    let s = Rig::start("discard-pass", 1 << 30, "", false);
    s.d.ok(
        "share.create",
        vec![("name", t("vol")), ("size", n(16 * MIB))],
    );
    let (snapshots, away) = (s.pool().join("snapshots"), s.pool().join("snapshots.away"));
    std::fs::rename(&snapshots, &away).unwrap();
    let shown = s.d.ok("pool.show", vec![("name", t("default"))]);
    let listed = s.d.ok("pool.list", vec![]);
    std::fs::rename(&away, &snapshots).unwrap();
    assert!(get_u64(&shown, "allocated").is_none(), "{shown:?}");
    assert!(get_u64(&shown, "size").is_some(), "{shown:?}");
    let first = &listed.as_array().unwrap()[0];
    assert!(get_u64(first, "allocated").is_none(), "{first:?}");
    assert!(
        eventually(30, || get_u64(
            &s.d.ok("pool.show", vec![("name", t("default"))]),
            "allocated"
        )
        .is_some()),
        "allocated never came back"
    );
}

/// Item 5: a thin formatted share is mounted with `discard`, so a file its tenant writes
/// and deletes gives its blocks back to the pool; a preallocated one is mounted without.
#[test]
fn a_formatted_share_gives_back_what_its_tenant_deletes() {
    let xfs = Xfs::new("discard-fs", 2 << 30);
    let layout = Layout::on_xfs(&xfs, "reconcile_interval = 0\n");
    let base = layout.state.join("mounts");
    let _mounts = MountsUnder(base.clone());
    let d = Daemon::start(&layout);
    let pool = xfs.mount.join("pool");
    let make = |name: &str, sparse: bool| {
        let r = d.ok(
            "share.create",
            vec![
                ("name", t(name)),
                ("size", n(320 * MIB)),
                ("filesystem", t("xfs")),
                ("sparse", Value::Bool(sparse)),
            ],
        );
        let id = field(sub(&r, "share"), "id");
        (volume(&pool, &id), base.join(&id))
    };

    let (vol, mp) = make("thin", true);
    let opts = target::mount_options(&mp).expect("mounted");
    assert!(opts.iter().any(|o| o == "discard"), "{opts:?}");
    // Write a 64 MiB file, sync, delete it, sync: the volume's blocks with the file.
    let churn = |vol: &Path, mp: &Path| {
        let file = mp.join("scratch.bin");
        std::fs::write(&file, pattern(7, (64 * MIB) as usize)).unwrap();
        sh(&["sync", "-f", file.to_str().unwrap()]);
        let full = blocks(vol);
        std::fs::remove_file(&file).unwrap();
        sh(&["sync", "-f", mp.to_str().unwrap()]);
        full
    };
    let full = churn(&vol, &mp);
    // XFS frees an unlinked file's extents in background inode inactivation, after the
    // `sync` above forced the log, and discards them when the log next checkpoints (its
    // own worker does that every 30 s): force the log on each look so the test waits
    // for the discard, not for the log worker.
    let settled = eventually(30, || {
        sh(&["sync", "-f", mp.to_str().unwrap()]);
        blocks(&vol) + 60 * MIB / 512 <= full
    });
    assert!(
        settled,
        "blocks {full} -> {} after the delete",
        blocks(&vol)
    );
    eprintln!(
        "formatted share: {full} blocks with the file, {} after",
        blocks(&vol)
    );

    let (thick, thick_mp) = make("thick", false);
    let opts = target::mount_options(&thick_mp).expect("mounted");
    assert!(!opts.iter().any(|o| o == "discard"), "{opts:?}");
    churn(&thick, &thick_mp);
    assert!(
        blocks(&thick) >= 320 * MIB / 512,
        "a preallocated share lost blocks"
    );
}
