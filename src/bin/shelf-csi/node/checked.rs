//! Checks on publish_context values before the node hands them to iscsiadm, nvme, mount or
//! an iscsid record file. Trust: the controller wrote them, but they reach the node
//! through the CO (VolumeAttachment objects), so each is bounded and checked for the
//! syntax it must have; a failure is INVALID_ARGUMENT naming the key (never a secret's
//! value).

use tonic::Status;

use super::iscsi::split_portal;

/// The longest CHAP user name or secret accepted (open-iscsi's AUTH_STR_MAX_LEN is 256).
pub const CHAP_MAX: usize = 255;

fn bad(key: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("publish_context: {key}: {why}"))
}

/// An iSCSI target name (shelf's own validator, model::validate_iqn).
pub fn iqn(key: &str, value: &str) -> Result<(), Status> {
    shelf::model::validate_iqn(value).map_err(|e| bad(key, e))
}

/// An NVMe subsystem NQN (model::validate_nqn).
pub fn nqn(key: &str, value: &str) -> Result<(), Status> {
    shelf::model::validate_nqn(value).map_err(|e| bad(key, e))
}

/// An NVMe/TCP portal: the address as [`split_portal`] accepts one, the port a u16.
pub fn nvme_portal(
    address_key: &str,
    address: &str,
    port_key: &str,
    port: &str,
) -> Result<(), Status> {
    if port.parse::<u16>().is_err() {
        return Err(bad(port_key, format!("{port:?} is not a port number")));
    }
    let (a, _) = split_portal(&format!("[{address}]:{port}"))
        .map_err(|_| bad(address_key, format!("{address:?} is not an address")))?;
    if a.starts_with('-') {
        return Err(bad(address_key, format!("{address:?} is not an address")));
    }
    Ok(())
}

/// A namespace NGUID or UUID: hex digits and dashes, at most 36 characters.
pub fn nguid(key: &str, value: &str) -> Result<(), Status> {
    let ok = value.len() <= 36
        && value.chars().any(|c| c.is_ascii_hexdigit())
        && value.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(bad(key, format!("{value:?} is not an NGUID or UUID")))
    }
}

/// An NFS export `host:/absolute/path`: a host (name, IPv4, or `[v6]`) not starting with
/// `-`, an absolute path, nothing that is whitespace, a control character or a comma.
pub fn nfs_export(key: &str, value: &str) -> Result<(), Status> {
    let why = || bad(key, format!("{value:?} is not host:/absolute/path"));
    let (host, path) = if let Some(rest) = value.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(why)?;
        (h, p)
    } else {
        value.split_once(':').ok_or_else(why)?
    };
    let host_ok = !host.is_empty()
        && !host.starts_with('-')
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c));
    let path_ok = path.starts_with('/')
        && path.len() <= 4096
        && !path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',');
    if host_ok && path_ok {
        Ok(())
    } else {
        Err(why())
    }
}

/// A CHAP user name or secret as written into an iscsid record line: printable ASCII
/// without spaces, 1..=[`CHAP_MAX`] bytes. `show` says whether the value may appear in
/// the error (never for the secret).
pub fn chap_word(key: &str, value: &str, show: bool) -> Result<(), Status> {
    let ok =
        !value.is_empty() && value.len() <= CHAP_MAX && value.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        return Ok(());
    }
    let what = if show {
        format!("{value:?} ")
    } else {
        String::new()
    };
    Err(bad(
        key,
        format!("{what}must be 1 to {CHAP_MAX} printable ASCII characters without spaces"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn invalid(r: Result<(), Status>, key: &str) {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(key), "{}", e.message());
    }

    #[test]
    fn names_portals_and_exports() {
        iqn("target_iqn", "iqn.2026-01.io.shelf:v1").unwrap();
        invalid(
            iqn("target_iqn", "iqn.x:v1\nnode.session.auth.password = x"),
            "target_iqn",
        );
        invalid(iqn("target_iqn", "../../etc"), "target_iqn");
        nqn("target_nqn", "nqn.2014-08.io.shelf:v1").unwrap();
        invalid(nqn("target_nqn", "-n x"), "target_nqn");
        nvme_portal("nvme_address", "192.0.2.1", "nvme_port", "4420").unwrap();
        nvme_portal("nvme_address", "fd00::1", "nvme_port", "4420").unwrap();
        invalid(
            nvme_portal("nvme_address", "192.0.2.1", "nvme_port", "99999"),
            "nvme_port",
        );
        invalid(
            nvme_portal("nvme_address", "-a", "nvme_port", "4420"),
            "nvme_address",
        );
        invalid(
            nvme_portal("nvme_address", "a b", "nvme_port", "4420"),
            "nvme_address",
        );
        nguid("nvme_nguid", "6f1c2b9a-0d4e-4c1e-9a53-3d1a2b3c4d5e").unwrap();
        invalid(nguid("nvme_nguid", "x/../y"), "nvme_nguid");
        nfs_export("nfs_export", "192.0.2.1:/shelf/v1").unwrap();
        nfs_export("nfs_export", "[fd00::1]:/shelf/v1").unwrap();
        for bad in [
            "-oremount:/x",
            "host",
            "host:rel",
            ":/x",
            "h:/a b",
            "h:/a,b",
            "h:/a\n",
        ] {
            invalid(nfs_export("nfs_export", bad), "nfs_export");
        }
    }

    #[test]
    fn chap_words_are_bounded_and_the_secret_never_shown() {
        chap_word("chap_user", "shelf-u", true).unwrap();
        invalid(chap_word("chap_user", "a\nb", true), "chap_user");
        invalid(chap_word("chap_user", "", true), "chap_user");
        invalid(
            chap_word("chap_user", &"a".repeat(CHAP_MAX + 1), true),
            "chap_user",
        );
        let e = chap_word("chap_secret_sealed", "zzqq ww\nline", false).unwrap_err();
        assert!(!e.message().contains("zzqq"), "{}", e.message());
    }
}
