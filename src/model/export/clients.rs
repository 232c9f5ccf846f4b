//! The validation of everything a client can put into an exports line or a target ACL
//! (NFS client specs, IQNs, NQNs, connectors).

use super::Connector;
use crate::model::Invalid;

const CLIENT_MAX: usize = 255;

/// Check an NFS client spec (host, IP, CIDR network, wildcard or @netgroup). Anything that
/// could end the entry or start another (spaces, parentheses, commas, quotes, newlines,
/// `#`, backslash) is refused.
pub fn validate_nfs_client(c: &str) -> Result<(), Invalid> {
    if c.is_empty() || c.len() > CLIENT_MAX {
        return Err(Invalid::new(format!(
            "NFS client must be 1 to {CLIENT_MAX} bytes"
        )));
    }
    if let Some(bad) = c
        .chars()
        .find(|ch| !(ch.is_ascii_alphanumeric() || ".-_*?/:@[]".contains(*ch)))
    {
        return Err(Invalid::new(format!(
            "NFS client {:?} contains {bad:?}; only letters, digits and . - _ * ? / : @ [ ] are allowed",
            c.chars().take(64).collect::<String>()
        )));
    }
    if c.starts_with('-') {
        return Err(Invalid::new(format!(
            "NFS client {c:?} must not start with '-'"
        )));
    }
    Ok(())
}

/// An attach adds exactly one host: without `ip`, `connector.host` becomes the NFS client,
/// so it must be a host name, never a wildcard (`*`), a network (`10.0.0.0/8`) or a
/// netgroup (`@all`), which `validate_nfs_client` allows in an export's static list but
/// which would open the export to many hosts (`*` to the world) on one attach.
pub fn validate_single_host(host: &str) -> Result<(), Invalid> {
    let single = host
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || ".-_".contains(ch))
        && host.starts_with(|ch: char| ch.is_ascii_alphanumeric());
    if single {
        return Ok(());
    }
    Err(Invalid::new(format!(
        "connector.host {:?} is not a single host name (letters, digits, '.', '-', '_'); \
         wildcards, networks and netgroups cannot be attached: give connector.ip or a host name",
        host.chars().take(64).collect::<String>()
    )))
}

/// Check an iSCSI initiator or target name: `iqn.YYYY-MM.naming-authority[:unique]`,
/// `eui.` + 16 hex digits, or `naa.` + 16 or 32 hex digits (RFC 3720 §3.2.6.3), lower case.
pub fn validate_iqn(name: &str) -> Result<(), Invalid> {
    let err = |why: &str| {
        Invalid::new(format!(
            "iSCSI name {:?} is invalid: {why}",
            name.chars().take(80).collect::<String>()
        ))
    };
    if name.len() > 223 {
        return Err(err("longer than 223 bytes"));
    }
    if let Some(rest) = name.strip_prefix("iqn.") {
        let date = rest.get(..7).ok_or_else(|| err("no date"))?;
        let b = date.as_bytes();
        let date_ok = b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b[5..].iter().all(u8::is_ascii_digit);
        if !date_ok || rest.as_bytes().get(7) != Some(&b'.') {
            return Err(err("expected iqn.YYYY-MM.<reversed domain>[:<name>]"));
        }
        let tail = &rest[8..];
        if tail.is_empty() {
            return Err(err("no naming authority"));
        }
        if let Some(bad) = tail
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || ".-:".contains(*c)))
        {
            return Err(err(&format!(
                "contains {bad:?} (lower-case letters, digits, . - : only)"
            )));
        }
        return Ok(());
    }
    for (prefix, lens) in [("eui.", &[16usize][..]), ("naa.", &[16, 32][..])] {
        if let Some(hex) = name.strip_prefix(prefix) {
            if lens.contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Ok(());
            }
            return Err(err("wrong number of hex digits"));
        }
    }
    Err(err("must start with iqn., eui. or naa."))
}

/// Check what every connector carries, whatever the protocol: `host` (1 to 255 printable
/// bytes) and, when given, `ip` (an IP address). Each protocol then checks the field it
/// uses (`crate::export::protocol`).
pub fn validate_connector(c: &Connector) -> Result<(), Invalid> {
    if c.host.is_empty() || c.host.len() > 255 || c.host.chars().any(|ch| ch.is_control()) {
        return Err(Invalid::new(
            "connector.host must be 1 to 255 printable bytes",
        ));
    }
    if let Some(ip) = &c.ip {
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| Invalid::new(format!("connector.ip {ip:?} is not an IP address")))?;
    }
    Ok(())
}

/// The NFS client an attach adds: the connector's IP, else its host name (which must then
/// be one host, [`validate_single_host`]).
pub fn nfs_connector_client(c: &Connector) -> Result<String, Invalid> {
    validate_connector(c)?;
    let client = c.ip.clone().unwrap_or_else(|| c.host.clone());
    validate_nfs_client(&client)?;
    if c.ip.is_none() {
        validate_single_host(&c.host)?;
    }
    Ok(client)
}

/// Check an NVMe qualified name (NVMe Base Specification §4.5): `nqn.YYYY-MM.<reversed
/// domain>:<name>` or `nqn.2014-08.org.nvmexpress:uuid:<uuid>`, at most 223 bytes. As it
/// becomes a configfs directory name, only letters, digits and `. - : _` are accepted.
pub fn validate_nqn(name: &str) -> Result<(), Invalid> {
    let err = |why: &str| {
        Invalid::new(format!(
            "NVMe name {:?} is invalid: {why}",
            name.chars().take(80).collect::<String>()
        ))
    };
    if name.len() > 223 {
        return Err(err("longer than 223 bytes"));
    }
    let rest = name
        .strip_prefix("nqn.")
        .ok_or_else(|| err("must start with nqn."))?;
    let b = rest.as_bytes();
    let date_ok = b.len() > 8
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'.';
    if !date_ok {
        return Err(err("expected nqn.YYYY-MM.<reversed domain>:<name>"));
    }
    if let Some(bad) = rest
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ".-:_".contains(*c)))
    {
        return Err(err(&format!(
            "contains {bad:?} (letters, digits, . - : _ only)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nfs_clients() {
        for ok in [
            "127.0.0.1",
            "10.0.0.0/8",
            "*.example.com",
            "host-1",
            "@netgroup",
            "fe80::1",
            "[::1]",
        ] {
            assert!(validate_nfs_client(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a(rw)",
            "a,b",
            "a\nb",
            "a\"b",
            "a#b",
            "a\\b",
            "-o",
            "x(rw,no_root_squash)",
            "*(rw) evil(rw)",
            "a\tb",
        ] {
            assert!(validate_nfs_client(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn iscsi_names() {
        for ok in [
            "iqn.1993-08.org.debian:01:abcdef",
            "iqn.2026-11.org.example.shelf:vol1",
            "eui.0123456789abcdef",
            "naa.0123456789abcdef",
        ] {
            assert!(validate_iqn(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "iqn.",
            "iqn.2026-1.x",
            "iqn.2026-11.",
            "iqn.2026-11.Org.Example",
            "iqn.2026-11.org ex",
            "iqn.2026-11.org.example;rm",
            "eui.123",
            "foo",
        ] {
            assert!(validate_iqn(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn connectors() {
        let c = Connector {
            ip: Some("192.0.2.10".into()),
            initiator: Some("iqn.1993-08.org.debian:01:abc".into()),
            nqn: None,
            host: "compute-1".into(),
        };
        assert_eq!(nfs_connector_client(&c).unwrap(), "192.0.2.10");
        let bad = Connector {
            ip: Some("not-an-ip".into()),
            ..c.clone()
        };
        assert!(nfs_connector_client(&bad).is_err());
        assert!(validate_connector(&bad).is_err());
        let no_host = Connector {
            host: String::new(),
            ..c
        };
        assert!(validate_connector(&no_host).is_err());
    }

    #[test]
    fn nvme_names() {
        for ok in [
            "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3ccabcd",
            "nqn.2026-12.io.shelf:vol-1",
            "nqn.2026-12.io.shelf:Vol_1",
        ] {
            assert!(validate_nqn(ok).is_ok(), "{ok}");
        }
        let long = format!("nqn.2026-12.io.shelf:{}", "a".repeat(210));
        for bad in [
            "",
            "nqn.",
            "iqn.2026-12.io.shelf:x",
            "nqn.2026-1.io",
            "nqn.2026-12.io.shelf:a/b",
            "nqn.2026-12.io.shelf:a b",
            "nqn.2026-12.io.shelf:..\n",
            long.as_str(),
        ] {
            assert!(validate_nqn(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_nfs_connector_is_one_host() {
        for host in [
            "*",
            "*.example.com",
            "10.0.0.0/8",
            "@all",
            "host?",
            "[::1]",
            "-x",
        ] {
            let c = Connector {
                host: host.into(),
                ..Connector::default()
            };
            let e = nfs_connector_client(&c).unwrap_err();
            assert!(
                e.0.contains("connector.host") || e.0.contains("NFS client"),
                "{host}: {e}"
            );
        }
        let named = Connector {
            host: "compute-1.example.com".into(),
            ..Connector::default()
        };
        assert_eq!(
            nfs_connector_client(&named).unwrap(),
            "compute-1.example.com"
        );
        // With an IP, the host is only a label.
        let with_ip = Connector {
            host: "*".into(),
            ip: Some("192.0.2.7".into()),
            initiator: None,
            nqn: None,
        };
        assert_eq!(nfs_connector_client(&with_ip).unwrap(), "192.0.2.7");
    }

    proptest! {
        #[test]
        fn accepted_clients_cannot_inject(s in "\\PC{0,40}") {
            if validate_nfs_client(&s).is_ok() {
                prop_assert!(!s.contains([' ', '(', ')', ',', '\n', '"', '#', '\\']));
            }
        }
    }
}
