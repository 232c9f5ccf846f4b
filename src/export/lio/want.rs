//! What an export wants of LIO, worked out from its spec and its volume ([`want_of`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use super::discard::wants_unmap;
use super::layout::{self, backstore_name, Kind};
use super::plan::{Chap, Want};
use crate::error::{Error, Result};
use crate::export::ExportSpec;
use crate::sys::configfs::Secret;

/// The portal a TPG listens on: every address of the family of `portal`, at its port, as
/// targetcli's default portal did (so targets it made share the kernel's listener). Pure.
pub fn listen_portal(portal: SocketAddr) -> String {
    match portal {
        SocketAddr::V4(a) => format!("0.0.0.0:{}", a.port()),
        SocketAddr::V6(a) => format!("[::]:{}", a.port()),
    }
}

/// A block device under `/dev` (an LVM pool's volume). A path elsewhere is a file pool's
/// volume whatever it is now: a link planted there to a host disk is never taken for one.
fn is_block_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    path.starts_with("/dev/")
        && std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// The backstore kind for a volume (blocking: a stat).
pub fn kind_of(path: &Path) -> Kind {
    if is_block_device(path) {
        Kind::Block
    } else {
        Kind::File
    }
}

/// What configfs should hold for `spec`, listening on `portal` (blocking: stats the volume).
pub fn want_of(spec: &ExportSpec, portal: &str) -> Result<Want> {
    let e = &spec.export;
    let bad = |what: &str, v: &str| {
        Error::Invalid(format!(
            "LIO {what} {:?} cannot be a configfs name",
            v.chars().take(80).collect::<String>()
        ))
    };
    if !layout::one_component(&e.target) {
        return Err(bad("target", &e.target));
    }
    if !layout::one_component(&e.share) {
        return Err(bad("share id", &e.share));
    }
    let path = spec.path.display().to_string();
    // The kernel splits `control` at commas and newlines.
    if path.contains([',', '\n']) || path.len() > 255 {
        return Err(Error::Invalid(format!(
            "LIO cannot take the volume path {path:?} (a comma, a newline, or over 255 bytes)"
        )));
    }
    let kind = kind_of(&spec.path);
    let size = match kind {
        Kind::File => std::fs::metadata(&spec.path)
            .map_err(|err| Error::io(format!("LIO backstore {path}"), err))?
            .len(),
        Kind::Block => 0,
    };
    let block = kind == Kind::Block;
    let chap = match (e.options.chap, &e.chap_user, &spec.chap_secret) {
        (true, Some(user), Some(secret)) => Some(Chap {
            user: user.clone(),
            secret: Secret::new(secret.clone()),
        }),
        _ => None,
    };
    let mut acls = BTreeMap::new();
    for who in e.allowed() {
        if !layout::one_component(&who) {
            return Err(bad("initiator", &who));
        }
        acls.insert(who, chap.clone());
    }
    Ok(Want {
        iqn: e.target.clone(),
        name: backstore_name(&e.share),
        kind,
        path,
        size,
        serial: e.share.clone(),
        unmap: wants_unmap(
            spec.thin,
            block,
            block && crate::sys::block::discards(&spec.path),
        ),
        chap_required: e.options.chap,
        portal: portal.to_string(),
        acls,
    })
}
