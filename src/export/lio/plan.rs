//! What an export wants of LIO ([`Want`]) and the plans that take configfs there from what
//! it holds ([`plan_converge`], [`plan_remove`]): lists of configfs [`Op`]s, pure, tested in
//! `tests.rs`. Order: the backstore is configured and given its unmap attributes before any
//! LUN links to it; access is revoked before it is granted; the TPG is enabled last, so a
//! new target is never reachable half made.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::layout::{
    acl_dir, backstore_dir, lun_dir, target_dir, tpg_dir, Acl, Backstore, Kind, State, Tpg, LUN,
};
use crate::sys::configfs::{Op, Secret};

/// The TPG attributes shelf sets, in the order it writes them.
pub const TPG_ATTRIBUTES: [&str; 3] = [
    "generate_node_acls",
    "demo_mode_write_protect",
    "authentication",
];

use super::discard::ATTRIBUTES as UNMAP_ATTRIBUTES;

/// CHAP credentials of an ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chap {
    /// `auth/userid`.
    pub user: String,
    /// `auth/password`.
    pub secret: Secret,
}

/// What configfs should hold for one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The target IQN.
    pub iqn: String,
    /// The backstore name (`shelf-<share>`).
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The volume (file or block device).
    pub path: String,
    /// A file's size in bytes (`fd_dev_size`); ignored for a block device.
    pub size: u64,
    /// `wwn/vpd_unit_serial` (the share id), given once at creation.
    pub serial: String,
    /// Whether the backstore unmaps.
    pub unmap: bool,
    /// `attrib/authentication`: CHAP required.
    pub chap_required: bool,
    /// The network portal (`0.0.0.0:3260`, `[::]:3260`).
    pub portal: String,
    /// The allowed initiators, each with its CHAP credentials when the export has CHAP.
    pub acls: BTreeMap<String, Option<Chap>>,
}

impl Want {
    /// The TPG attribute values wanted, in [`TPG_ATTRIBUTES`] order.
    fn tpg_attributes(&self) -> [(&'static str, &'static str); 3] {
        [
            (TPG_ATTRIBUTES[0], "0"),
            (TPG_ATTRIBUTES[1], "1"),
            (
                TPG_ATTRIBUTES[2],
                if self.chap_required { "1" } else { "0" },
            ),
        ]
    }

    /// Where the LUN's link points: `core/<hba>/<name>`.
    fn lun_target(&self, hba: &str) -> String {
        format!("core/{hba}/{}", self.name)
    }
}

/// The `control` writes that configure a backstore (target_core_file.c, _iblock.c).
fn control(want: &Want) -> Vec<String> {
    match want.kind {
        Kind::File => vec![
            format!("fd_dev_name={}", want.path),
            format!("fd_dev_size={}", want.size),
        ],
        Kind::Block => vec![format!("udev_path={}", want.path), "readonly=0".into()],
    }
}

/// Whether a backstore must be made again: it holds another volume, or (a file) another
/// size; `force`: also when its size cannot be read back (a resize).
fn must_recreate(b: &Backstore, want: &Want, force: bool) -> bool {
    b.enabled
        && (b.udev_path != want.path
            || (want.kind == Kind::File && b.size.map_or(force, |s| s != want.size)))
}

/// Whether a LUN holds exactly one link, to the backstore in `hba`.
fn lun_ok(links: Option<&Vec<(String, String)>>, want: &Want, hba: &str) -> bool {
    links.is_some_and(|l| l.len() == 1 && l[0].1 == want.lun_target(hba))
}

/// Whether an ACL maps exactly LUN 1, through one link.
fn mapped_ok(acl: &Acl) -> bool {
    acl.mapped.len() == 1 && acl.mapped.get(LUN).is_some_and(|l| l.len() == 1)
}

/// Take an ACL's mapped LUNs apart.
fn unmap_acl(ops: &mut Vec<Op>, iqn: &str, who: &str, acl: &Acl) {
    let dir = acl_dir(iqn, who);
    for (lun, links) in &acl.mapped {
        ops.extend(links.iter().map(|l| Op::Unlink(dir.join(lun).join(l))));
        ops.push(Op::Rmdir(dir.join(lun)));
    }
}

/// Take a TPG's LUNs apart, with every ACL's mapped LUNs first.
fn remove_luns(ops: &mut Vec<Op>, iqn: &str, tpg: &Tpg) {
    for (who, acl) in &tpg.acls {
        unmap_acl(ops, iqn, who, acl);
    }
    for (lun, links) in &tpg.luns {
        let dir = tpg_dir(iqn).join("lun").join(lun);
        ops.extend(links.iter().map(|(l, _)| Op::Unlink(dir.join(l))));
        ops.push(Op::Rmdir(dir));
    }
}

/// Map LUN 1 into an ACL (its directory exists).
fn map_acl(ops: &mut Vec<Op>, want: &Want, who: &str) {
    let dir = acl_dir(&want.iqn, who).join(LUN);
    ops.push(Op::Mkdir(dir.clone()));
    ops.push(Op::Link {
        target: lun_dir(&want.iqn),
        link: dir.join(&want.name),
    });
}

/// The CHAP writes that take an ACL from `have` to `want` (`NULL` clears an attribute).
fn plan_chap(ops: &mut Vec<Op>, dir: PathBuf, have: Option<&Acl>, want: Option<&Chap>) {
    let auth = dir.join("auth");
    let (user, secret) = have.map_or((None, None), |a| {
        (
            (!a.userid.is_empty()).then_some(a.userid.as_str()),
            a.password.as_ref(),
        )
    });
    match want {
        Some(c) => {
            if user != Some(c.user.as_str()) {
                ops.push(Op::Write(auth.join("userid"), c.user.clone()));
            }
            if secret != Some(&c.secret) {
                ops.push(Op::WriteSecret(auth.join("password"), c.secret.clone()));
            }
        }
        None => {
            if user.is_some() {
                ops.push(Op::Write(auth.join("userid"), "NULL".into()));
            }
            if secret.is_some() {
                ops.push(Op::WriteSecret(auth.join("password"), Secret::new("NULL")));
            }
        }
    }
}

/// The backstore steps: configured, with its serial and unmap attributes. Returns its HBA
/// and whether it was (re)made, which re-makes the LUN too.
fn plan_backstore(ops: &mut Vec<Op>, have: &State, want: &Want, force: bool) -> (String, bool) {
    let fresh_hba = format!("{}_{}", want.kind.hba_prefix(), have.free_hba);
    let (hba, configured, unmap) = match &have.backstore {
        None => {
            ops.push(Op::Mkdir(PathBuf::from("core").join(&fresh_hba)));
            ops.push(Op::Mkdir(backstore_dir(&fresh_hba, &want.name)));
            (fresh_hba, false, Some(false))
        }
        Some(b) if must_recreate(b, want, force) => {
            if let Some(Some(tpg)) = &have.target {
                remove_luns(ops, &want.iqn, tpg);
            }
            ops.push(Op::Rmdir(backstore_dir(&b.hba, &want.name)));
            ops.push(Op::Mkdir(backstore_dir(&b.hba, &want.name)));
            (b.hba.clone(), false, Some(false))
        }
        Some(b) => (b.hba.clone(), b.enabled, b.unmap),
    };
    let dir = backstore_dir(&hba, &want.name);
    if !configured {
        ops.extend(
            control(want)
                .into_iter()
                .map(|c| Op::Write(dir.join("control"), c)),
        );
        ops.push(Op::Write(dir.join("udev_path"), want.path.clone()));
        ops.push(Op::Write(dir.join("enable"), "1".into()));
        ops.push(Op::Write(
            dir.join("wwn/vpd_unit_serial"),
            want.serial.clone(),
        ));
    }
    if unmap != Some(want.unmap) {
        let v = u8::from(want.unmap).to_string();
        for a in UNMAP_ATTRIBUTES {
            ops.push(Op::Write(dir.join("attrib").join(a), v.clone()));
        }
    }
    (hba, !configured)
}

/// The allowed ACLs: made, given CHAP, and mapping LUN 1 (`lun_fine`: the LUN was kept, so
/// mappings that are right stay).
fn plan_acls(ops: &mut Vec<Op>, tpg: &Tpg, want: &Want, lun_fine: bool) {
    for (who, chap) in &want.acls {
        let have_acl = tpg.acls.get(who);
        let dir = acl_dir(&want.iqn, who);
        if have_acl.is_none() {
            ops.push(Op::Mkdir(dir.clone()));
        }
        plan_chap(ops, dir, have_acl, chap.as_ref());
        match have_acl {
            Some(a) if lun_fine && mapped_ok(a) => {}
            Some(a) if lun_fine => {
                unmap_acl(ops, &want.iqn, who, a);
                map_acl(ops, want, who);
            }
            // The LUN was re-made, and every mapping with it.
            _ => map_acl(ops, want, who),
        }
    }
}

/// The steps from `have` to `want`. `force_recreate`: a file backstore whose size cannot
/// be read back is made again (a resize).
pub fn plan_converge(have: &State, want: &Want, force_recreate: bool) -> Vec<Op> {
    let mut ops = Vec::new();
    let (hba, remade) = plan_backstore(&mut ops, have, want, force_recreate);
    let tpg_dir = tpg_dir(&want.iqn);
    let empty = Tpg::default();
    let tpg = match &have.target {
        None => {
            ops.push(Op::Mkdir("iscsi".into()));
            ops.push(Op::Mkdir(target_dir(&want.iqn)));
            ops.push(Op::Mkdir(tpg_dir.clone()));
            &empty
        }
        Some(None) => {
            ops.push(Op::Mkdir(tpg_dir.clone()));
            &empty
        }
        Some(Some(t)) => t,
    };
    for (a, v) in want.tpg_attributes() {
        if tpg.attributes.get(a).map(String::as_str) != Some(v) {
            ops.push(Op::Write(tpg_dir.join("attrib").join(a), v.into()));
        }
    }
    // Revoke first: ACLs no longer allowed (LIO ends their sessions), foreign portals.
    for (who, acl) in &tpg.acls {
        if !want.acls.contains_key(who) {
            unmap_acl(&mut ops, &want.iqn, who, acl);
            ops.push(Op::Rmdir(acl_dir(&want.iqn, who)));
        }
    }
    for p in &tpg.portals {
        if *p != want.portal {
            ops.push(Op::Rmdir(tpg_dir.join("np").join(p)));
        }
    }
    if !tpg.portals.contains(&want.portal) {
        ops.push(Op::Mkdir(tpg_dir.join("np").join(&want.portal)));
    }
    // The LUN: one, linked to the backstore. Re-made with every mapping when it is not.
    let lun_fine = !remade && lun_ok(tpg.luns.get(LUN), want, &hba) && tpg.luns.len() == 1;
    if !lun_fine {
        if !remade {
            remove_luns(&mut ops, &want.iqn, tpg);
        }
        ops.push(Op::Mkdir(lun_dir(&want.iqn)));
        ops.push(Op::Link {
            target: backstore_dir(&hba, &want.name),
            link: lun_dir(&want.iqn).join(&want.name),
        });
    }
    plan_acls(&mut ops, tpg, want, lun_fine);
    if !tpg.enabled {
        ops.push(Op::Write(tpg_dir.join("enable"), "1".into()));
    }
    ops
}

/// The steps that take the export of `iqn` apart: ACLs (mapped LUNs first), LUNs, portals,
/// the TPG and the target, then the backstore `name` and its HBA when it holds nothing else.
pub fn plan_remove(have: &State, iqn: &str, name: &str) -> Vec<Op> {
    let mut ops = Vec::new();
    if let Some(target) = &have.target {
        if let Some(tpg) = target {
            remove_luns(&mut ops, iqn, tpg);
            for who in tpg.acls.keys() {
                ops.push(Op::Rmdir(acl_dir(iqn, who)));
            }
            for p in &tpg.portals {
                ops.push(Op::Rmdir(tpg_dir(iqn).join("np").join(p)));
            }
            ops.push(Op::Rmdir(tpg_dir(iqn)));
        }
        ops.push(Op::Rmdir(target_dir(iqn)));
    }
    if let Some(b) = &have.backstore {
        ops.push(Op::Rmdir(backstore_dir(&b.hba, name)));
        if b.hba_alone {
            ops.push(Op::Rmdir(PathBuf::from("core").join(&b.hba)));
        }
    }
    ops
}

/// What differs between `have` and `want`, in words for a finding (never a secret's value).
pub fn drift(have: &State, want: &Want) -> Vec<String> {
    let mut out = Vec::new();
    match &have.backstore {
        None => out.push("backstore missing".to_string()),
        Some(b) if !b.enabled => out.push("backstore not enabled".into()),
        Some(b) if must_recreate(b, want, false) => {
            out.push("backstore holds another volume or size".into())
        }
        Some(b) if b.unmap != Some(want.unmap) => out.push(format!(
            "emulate_tpu and emulate_tpws not {}",
            u8::from(want.unmap)
        )),
        Some(_) => {}
    }
    let Some(Some(tpg)) = &have.target else {
        out.push("target or TPG missing".into());
        return out;
    };
    let hba = have.backstore.as_ref().map_or("", |b| b.hba.as_str());
    if !lun_ok(tpg.luns.get(LUN), want, hba) || tpg.luns.len() != 1 {
        out.push("LUN missing or not linked to the backstore".into());
    }
    if want
        .tpg_attributes()
        .iter()
        .any(|(a, v)| tpg.attributes.get(*a).map(String::as_str) != Some(*v))
    {
        out.push("TPG attributes".into());
    }
    if !tpg.enabled {
        out.push("TPG not enabled".into());
    }
    if tpg.portals.len() != 1 || !tpg.portals.contains(&want.portal) {
        out.push(format!("portals are not {} alone", want.portal));
    }
    for (who, chap) in &want.acls {
        match tpg.acls.get(who) {
            None => out.push(format!("ACL {who} missing")),
            Some(a) => {
                if !mapped_ok(a) {
                    out.push(format!("ACL {who} does not map the LUN"));
                }
                let mut writes = Vec::new();
                plan_chap(&mut writes, PathBuf::new(), Some(a), chap.as_ref());
                if !writes.is_empty() {
                    out.push(format!("CHAP credentials of ACL {who}"));
                }
            }
        }
    }
    for who in tpg.acls.keys().filter(|w| !want.acls.contains_key(*w)) {
        out.push(format!("ACL {who} not allowed"));
    }
    out
}
