//! Names of shares, snapshots and pools, and share metadata.

use std::collections::BTreeMap;

use super::Invalid;

/// Most metadata entries a share may carry.
pub const MAX_METADATA_ENTRIES: usize = 64;
const MAX_METADATA_KEY: usize = 255;
const MAX_METADATA_VALUE: usize = 4096;
/// The whole metadata map, encoded as JSON: it is stamped on the volume as one extended
/// attribute (`user.shelf.metadata`), which Linux caps at 64 KiB; half of that leaves room.
pub const MAX_METADATA_BYTES: usize = 32 * 1024;

/// Check a share, snapshot or pool name: `[A-Za-z0-9][A-Za-z0-9._-]{0,62}`.
///
/// The rule keeps names safe to use as path components, IQN suffixes and LV names: no `/`,
/// no `..` start, no spaces or control characters.
pub fn validate_name(kind: &str, name: &str) -> Result<(), Invalid> {
    let shown = shorten(name);
    if name.is_empty() {
        return Err(Invalid::new(format!("{kind} name must not be empty")));
    }
    if name.len() > 63 {
        return Err(Invalid::new(format!(
            "{kind} name is {} bytes long; at most 63 are allowed",
            name.len()
        )));
    }
    let mut chars = name.chars();
    let first = chars.next().unwrap_or(' ');
    if !first.is_ascii_alphanumeric() {
        return Err(Invalid::new(format!(
            "{kind} name {shown:?} must start with a letter or digit"
        )));
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Invalid::new(format!(
            "{kind} name {shown:?} contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed"
        )));
    }
    Ok(())
}

/// Check a metadata map: bounded count and lengths, keys without control characters.
pub fn validate_metadata(meta: &BTreeMap<String, String>) -> Result<(), Invalid> {
    if meta.len() > MAX_METADATA_ENTRIES {
        return Err(Invalid::new(format!(
            "metadata has {} entries; at most {MAX_METADATA_ENTRIES} are allowed",
            meta.len()
        )));
    }
    for (k, v) in meta {
        if k.is_empty() || k.len() > MAX_METADATA_KEY {
            return Err(Invalid::new(format!(
                "metadata key {:?} must be 1 to {MAX_METADATA_KEY} bytes",
                shorten(k)
            )));
        }
        if k.chars().any(|c| c.is_control() || c == '=') {
            return Err(Invalid::new(format!(
                "metadata key {:?} contains a control character or '='",
                shorten(k)
            )));
        }
        if v.len() > MAX_METADATA_VALUE {
            return Err(Invalid::new(format!(
                "metadata value of {k:?} is {} bytes; at most {MAX_METADATA_VALUE} are allowed",
                v.len()
            )));
        }
        if v.contains('\0') {
            return Err(Invalid::new(format!(
                "metadata value of {k:?} contains NUL"
            )));
        }
    }
    let encoded = serde_json::to_string(meta)
        .map(|j| j.len())
        .unwrap_or(usize::MAX);
    if encoded > MAX_METADATA_BYTES {
        return Err(Invalid::new(format!(
            "metadata is {encoded} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed in all"
        )));
    }
    Ok(())
}

/// A name cut to a printable length for error messages.
fn shorten(s: &str) -> String {
    if s.chars().count() > 70 {
        let cut: String = s.chars().take(64).collect();
        format!("{cut}…")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_good_names() {
        for n in ["a", "vol1", "A.b_c-d", "0", &"x".repeat(63)] {
            assert_eq!(validate_name("share", n), Ok(()), "{n}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        let long = "x".repeat(64);
        let huge = "y".repeat(10_000);
        for n in [
            "", ".hidden", "-x", "_x", "a/b", "..", "../etc", "a b", "a\0b", "a\nb", "é", &long,
            &huge, "a,b", "a(b)",
        ] {
            assert!(validate_name("share", n).is_err(), "{n:?} accepted");
        }
    }

    #[test]
    fn huge_name_message_is_bounded() {
        let err = validate_name("share", &"z".repeat(10_000)).unwrap_err();
        assert!(err.0.len() < 200, "{}", err.0);
    }

    #[test]
    fn metadata_rules() {
        let mut m = BTreeMap::new();
        m.insert("instance".into(), "web-1".into());
        assert!(validate_metadata(&m).is_ok());
        m.insert("bad\nkey".into(), "v".into());
        assert!(validate_metadata(&m).is_err());
        let many: BTreeMap<String, String> = (0..65)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(validate_metadata(&many).is_err());
    }

    proptest! {
        #[test]
        fn valid_names_are_path_safe(name in "[A-Za-z0-9][A-Za-z0-9._-]{0,62}") {
            prop_assert!(validate_name("share", &name).is_ok());
            prop_assert!(!name.contains('/'));
            prop_assert!(!name.starts_with('.'));
        }

        #[test]
        fn any_accepted_name_matches_the_rule(name in "\\PC{0,80}") {
            if validate_name("share", &name).is_ok() {
                prop_assert!(name.len() <= 63);
                prop_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
            }
        }
    }
}
