//! Where LIO keeps an export in configfs (relative to its `target` directory), and what
//! configfs holds for one export, read back each time ([`read_state`]) and never remembered.
//! Layout (drivers/target/target_core_configfs.c, iscsi/iscsi_target_configfs.c):
//!
//! ```text
//! core/<fileio|iblock>_<n>/shelf-<share>/   one HBA per backstore, as targetcli makes them
//!     control, udev_path, enable, info, wwn/vpd_unit_serial, attrib/emulate_tpu ...
//! iscsi/<iqn>/tpgt_1/                       enable, attrib/{authentication, ...}
//!     np/<address>:<port>/
//!     lun/lun_1/<link> -> core/<hba>/<backstore>
//!     acls/<initiator>/{auth/userid, auth/password}
//!     acls/<initiator>/lun_1/<link> -> iscsi/<iqn>/tpgt_1/lun/lun_1
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use crate::sys::configfs::{self, Secret};

/// The backstore's kind: which LIO backend opens the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `fileio`: a file pool's volume file (its size fixed when the backstore is made).
    File,
    /// `iblock`: a block device (an LVM pool's thin LV; its size read live).
    Block,
}

impl Kind {
    /// The HBA prefix in `core/` (`fileio`, `iblock`).
    pub fn hba_prefix(self) -> &'static str {
        match self {
            Kind::File => "fileio",
            Kind::Block => "iblock",
        }
    }
}

/// The backstore name of an export's share (`shelf-<share-id>`).
pub fn backstore_name(share: &str) -> String {
    format!("shelf-{share}")
}

/// The TPG every export uses.
pub const TPG: &str = "tpgt_1";
/// The LUN every export's volume gets (in the TPG and in each ACL).
pub const LUN: &str = "lun_1";

/// `iscsi/<iqn>`.
pub fn target_dir(iqn: &str) -> PathBuf {
    Path::new("iscsi").join(iqn)
}

/// `iscsi/<iqn>/tpgt_1`.
pub fn tpg_dir(iqn: &str) -> PathBuf {
    target_dir(iqn).join(TPG)
}

/// `iscsi/<iqn>/tpgt_1/lun/lun_1`.
pub fn lun_dir(iqn: &str) -> PathBuf {
    tpg_dir(iqn).join("lun").join(LUN)
}

/// `iscsi/<iqn>/tpgt_1/acls/<initiator>`.
pub fn acl_dir(iqn: &str, initiator: &str) -> PathBuf {
    tpg_dir(iqn).join("acls").join(initiator)
}

/// `core/<hba>/<name>`.
pub fn backstore_dir(hba: &str, name: &str) -> PathBuf {
    Path::new("core").join(hba).join(name)
}

/// A name that goes into a configfs path must be one plain path component.
pub fn one_component(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 223
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0', '\n'])
}

/// A backstore as configfs holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backstore {
    /// Its HBA (`fileio_3`).
    pub hba: String,
    /// Whether the HBA holds nothing else (it is removed with the backstore).
    pub hba_alone: bool,
    /// `enable`: configured and usable.
    pub enabled: bool,
    /// `udev_path`: the volume it was given (shelf writes the path there).
    pub udev_path: String,
    /// A fileio backstore's size, from `info` ([`parse_fileio_size`]).
    pub size: Option<u64>,
    /// Both unmap attributes on (`Some(true)`), both off, or mixed/unreadable (`None`).
    pub unmap: Option<bool>,
}

/// One ACL as configfs holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Acl {
    /// Its mapped LUN directories (`lun_1`) and the links in each.
    pub mapped: BTreeMap<String, Vec<String>>,
    /// `auth/userid` (empty: none).
    pub userid: String,
    /// `auth/password` (empty: none).
    pub password: Option<Secret>,
}

/// The TPG of a target as configfs holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tpg {
    /// `enable`.
    pub enabled: bool,
    /// `attrib/<name>` values shelf sets ([`super::plan::TPG_ATTRIBUTES`]).
    pub attributes: BTreeMap<String, String>,
    /// The network portals (`np/<address>:<port>`).
    pub portals: BTreeSet<String>,
    /// The LUN directories and, in each, its links with where they point (the last
    /// three components: `core/<hba>/<name>`).
    pub luns: BTreeMap<String, Vec<(String, String)>>,
    /// The ACLs, by initiator.
    pub acls: BTreeMap<String, Acl>,
}

/// What configfs holds for one export.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    /// The backstore, under an HBA of the export's kind.
    pub backstore: Option<Backstore>,
    /// The lowest free HBA index of that kind (for a new backstore).
    pub free_hba: u32,
    /// `None`: no target; `Some(None)`: a target without `tpgt_1`.
    pub target: Option<Option<Tpg>>,
}

/// A fileio backstore's size from its `info` attribute (`... File: <path>  Size: <n>  Mode:
/// ...`, fd_show_configfs_dev_params); `None` when there is no such field. Pure.
pub fn parse_fileio_size(info: &str) -> Option<u64> {
    let mut words = info.split_whitespace();
    while let Some(w) = words.next() {
        if w == "Size:" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// The last three components of a link's target (configfs answers `readlink` with a
/// relative path: `../../../../../../target/core/fileio_0/shelf-x`).
fn link_tail(link: &Path) -> String {
    let t = std::fs::read_link(link).unwrap_or_default();
    let parts: Vec<String> = t
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts[parts.len().saturating_sub(3)..].join("/")
}

fn attr(path: &Path) -> io::Result<String> {
    configfs::read_attr(path).map(Option::unwrap_or_default)
}

/// Read the backstore `name` of `kind` under `root` (blocking): `(backstore, free index)`.
pub fn read_backstore(root: &Path, kind: Kind, name: &str) -> io::Result<(Option<Backstore>, u32)> {
    let prefix = format!("{}_", kind.hba_prefix());
    let core = root.join("core");
    let mut used = BTreeSet::new();
    let mut found = None;
    for hba in configfs::dirs(&core)? {
        let Some(n) = hba
            .strip_prefix(&prefix)
            .and_then(|i| i.parse::<u32>().ok())
        else {
            continue;
        };
        used.insert(n);
        let dir = core.join(&hba).join(name);
        if found.is_none() && configfs::is_dir(&dir) {
            let others = configfs::dirs(&core.join(&hba))?;
            let size = match kind {
                Kind::File => parse_fileio_size(&attr(&dir.join("info"))?),
                Kind::Block => None,
            };
            found = Some(Backstore {
                hba: hba.clone(),
                hba_alone: others.iter().all(|o| o == name),
                enabled: attr(&dir.join("enable"))? == "1",
                udev_path: attr(&dir.join("udev_path"))?,
                size,
                unmap: super::discard::read_unmap(&dir),
            });
        }
    }
    let free = (0..).find(|i| !used.contains(i)).unwrap_or(0);
    Ok((found, free))
}

fn read_acl(dir: &Path) -> io::Result<Acl> {
    let mut mapped = BTreeMap::new();
    for d in configfs::dirs(dir)? {
        if d.starts_with("lun_") {
            mapped.insert(d.clone(), configfs::links(&dir.join(&d))?);
        }
    }
    let password = attr(&dir.join("auth/password"))?;
    Ok(Acl {
        mapped,
        userid: attr(&dir.join("auth/userid"))?,
        password: (!password.is_empty()).then(|| Secret::new(password)),
    })
}

fn read_tpg(dir: &Path, attributes: &[&str]) -> io::Result<Tpg> {
    let mut tpg = Tpg {
        enabled: attr(&dir.join("enable"))? == "1",
        portals: configfs::dirs(&dir.join("np"))?.into_iter().collect(),
        ..Tpg::default()
    };
    for a in attributes {
        tpg.attributes
            .insert(a.to_string(), attr(&dir.join("attrib").join(a))?);
    }
    for l in configfs::dirs(&dir.join("lun"))? {
        let ldir = dir.join("lun").join(&l);
        let links = configfs::links(&ldir)?
            .into_iter()
            .map(|n| {
                let tail = link_tail(&ldir.join(&n));
                (n, tail)
            })
            .collect();
        tpg.luns.insert(l, links);
    }
    for who in configfs::dirs(&dir.join("acls"))? {
        let acl = read_acl(&dir.join("acls").join(&who))?;
        tpg.acls.insert(who, acl);
    }
    Ok(tpg)
}

/// Read target `iqn` under `root` (blocking): `None` when it does not exist, `Some(None)`
/// when it has no `tpgt_1`.
pub fn read_target(root: &Path, iqn: &str) -> io::Result<Option<Option<Tpg>>> {
    if !configfs::is_dir(&root.join(target_dir(iqn))) {
        return Ok(None);
    }
    let tpg = root.join(tpg_dir(iqn));
    Ok(Some(if configfs::is_dir(&tpg) {
        Some(read_tpg(&tpg, &super::plan::TPG_ATTRIBUTES)?)
    } else {
        None
    }))
}

/// Read what configfs's `target` directory `root` holds for the export of target `iqn`
/// with backstore `name` of `kind` (blocking).
pub fn read_state(root: &Path, iqn: &str, kind: Kind, name: &str) -> io::Result<State> {
    let (backstore, free_hba) = read_backstore(root, kind, name)?;
    Ok(State {
        backstore,
        free_hba,
        target: read_target(root, iqn)?,
    })
}

/// Read what configfs holds for a target found there (an orphan): the target, and the
/// backstore its LUN links to when that is one of shelf's (blocking). Returns the state and
/// the backstore's name.
pub fn read_found(root: &Path, iqn: &str) -> io::Result<(State, String)> {
    let target = read_target(root, iqn)?;
    let linked = match &target {
        Some(Some(tpg)) => linked_backstore(tpg),
        _ => None,
    };
    let Some((hba, name)) = linked else {
        return Ok((
            State {
                target,
                ..State::default()
            },
            String::new(),
        ));
    };
    let kind = if hba.starts_with("iblock_") {
        Kind::Block
    } else {
        Kind::File
    };
    let (backstore, free_hba) = read_backstore(root, kind, &name)?;
    Ok((
        State {
            backstore,
            free_hba,
            target,
        },
        name,
    ))
}

/// The backstore a target's LUN links to (`(hba, name)`), when it is one of shelf's.
pub fn linked_backstore(tpg: &Tpg) -> Option<(String, String)> {
    tpg.luns.values().flatten().find_map(|(_, tail)| {
        let mut p = tail.split('/');
        match (p.next(), p.next(), p.next()) {
            (Some("core"), Some(hba), Some(name)) if name.starts_with("shelf-") => {
                Some((hba.to_string(), name.to_string()))
            }
            _ => None,
        }
    })
}
