//! The stamp: the `trusted.shelf.*` extended attributes that record what a volume,
//! snapshot or image is (and the legacy `user.shelf.*` ones, read only to be moved).

use super::*;

/// The namespace of the identity and exports record every volume, snapshot and image
/// carries. `trusted.*` needs CAP_SYS_ADMIN to read or write, and no NFS server (kernel
/// nfsd, nfs-ganesha) exposes any namespace but `user.*` to its clients (RFC 8276), so a
/// tenant who can write its share's volume can neither read nor forge this record
/// (docs/security.md §2, "The stamp").
pub const STAMP_PREFIX: &str = "trusted.shelf.";

/// Where shelf before the stamp moved to [`STAMP_PREFIX`] wrote it: readable and writable
/// by any NFS client of the share. Read only to move it ([`get_legacy_identity_fd`]).
pub const LEGACY_STAMP_PREFIX: &str = "user.shelf.";

/// Set the stamp attributes `trusted.shelf.<key>` on a file.
pub fn set_identity(path: &Path, attrs: &BTreeMap<String, String>) -> io::Result<()> {
    for (k, v) in attrs {
        xattr::set(path, format!("{STAMP_PREFIX}{k}"), v.as_bytes())?;
    }
    Ok(())
}

/// Read every `trusted.shelf.*` attribute of a file.
pub fn get_identity(path: &Path) -> io::Result<BTreeMap<String, String>> {
    read_prefixed(xattr::list(path)?, |n| xattr::get(path, n), STAMP_PREFIX)
}

/// The attributes among `names` that start with `prefix`, keyed without it.
fn read_prefixed(
    names: impl Iterator<Item = std::ffi::OsString>,
    get: impl Fn(&str) -> io::Result<Option<Vec<u8>>>,
    prefix: &str,
) -> io::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for name in names {
        let name = name.to_string_lossy().into_owned();
        if let Some(key) = name.strip_prefix(prefix) {
            if let Some(v) = get(&name)? {
                out.insert(key.to_string(), String::from_utf8_lossy(&v).into_owned());
            }
        }
    }
    Ok(out)
}

/// Set the stamp attributes `trusted.shelf.<key>` on an open file.
pub fn set_identity_fd(file: &File, attrs: &BTreeMap<String, String>) -> io::Result<()> {
    for (k, v) in attrs {
        file.set_xattr(format!("{STAMP_PREFIX}{k}"), v.as_bytes())?;
    }
    Ok(())
}

/// Read every `trusted.shelf.*` attribute of an open file.
pub fn get_identity_fd(file: &File) -> io::Result<BTreeMap<String, String>> {
    read_prefixed(file.list_xattr()?, |n| file.get_xattr(n), STAMP_PREFIX)
}

/// Read every `user.shelf.*` attribute of an open file: the stamp of a shelf before
/// [`STAMP_PREFIX`], or a tenant's forgery; the two cannot be told apart.
pub fn get_legacy_identity_fd(file: &File) -> io::Result<BTreeMap<String, String>> {
    read_prefixed(
        file.list_xattr()?,
        |n| file.get_xattr(n),
        LEGACY_STAMP_PREFIX,
    )
}

/// Remove every `user.shelf.*` attribute of an open file.
pub fn remove_legacy_identity_fd(file: &File) -> io::Result<()> {
    for key in get_legacy_identity_fd(file)?.keys() {
        match file.remove_xattr(format!("{LEGACY_STAMP_PREFIX}{key}")) {
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            r => r?,
        }
    }
    Ok(())
}

/// Can shelfd stamp files in this directory? Writes and reads back a `trusted.shelf.*`
/// attribute on a scratch file: fails without CAP_SYS_ADMIN, or on a filesystem without
/// trusted extended attributes.
pub fn probe_stamp(dir: &Path) -> io::Result<()> {
    let path = dir.join(format!(".stamp-probe-{}", std::process::id()));
    let result = (|| -> io::Result<()> {
        let f = create_new(&path, 0o600)?;
        let attrs = [("probe".to_string(), "1".to_string())].into();
        set_identity_fd(&f, &attrs)?;
        match get_identity_fd(&f)?.get("probe").map(String::as_str) {
            Some("1") => Ok(()),
            _ => Err(io::Error::other("the attribute did not read back")),
        }
    })();
    let _ = std::fs::remove_file(&path);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_shelf_stamp_is_no_identity_and_is_only_read_to_be_moved() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("shares/a")).unwrap();
        let vol = root.join("shares/a/volume");
        let f = create_new(&vol, 0o660).unwrap();
        // What a tenant's NFS client (or an earlier shelf) can write.
        for (k, v) in [("kind", "share"), ("id", "a"), ("name", "forged")] {
            xattr::set(&vol, format!("user.shelf.{k}"), v.as_bytes()).unwrap();
        }
        let d = open_dir(root).unwrap();
        let rel = Path::new("shares/a/volume");
        let expect = Expect {
            kind: "share",
            id: "a",
        };
        assert!(matches!(
            open_checked(&d, rel, expect, false),
            Err(OpenError::Unidentified)
        ));
        assert_eq!(get_identity_fd(&f).unwrap(), BTreeMap::new());
        let legacy = get_legacy_identity_fd(&open_regular(&d, rel, false).unwrap()).unwrap();
        assert_eq!(legacy.get("name").map(String::as_str), Some("forged"));
        let ident: BTreeMap<String, String> = [("kind", "share"), ("id", "a")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        set_identity_fd(&f, &ident).unwrap();
        assert!(open_checked(&d, rel, expect, false).is_ok());
        assert_eq!(get_identity_fd(&f).unwrap(), ident);
        remove_legacy_identity_fd(&f).unwrap();
        assert_eq!(get_legacy_identity_fd(&f).unwrap(), BTreeMap::new());
        assert!(xattr::get(&vol, "trusted.shelf.id").unwrap().is_some());
        probe_stamp(root).unwrap();
        assert_eq!(
            std::fs::read_dir(root).unwrap().count(),
            1,
            "the probe left nothing"
        );
    }
}
