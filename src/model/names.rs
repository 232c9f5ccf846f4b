//! Names of shares, snapshots and pools, and share metadata.

use std::collections::BTreeMap;

use super::Invalid;

/// Most metadata entries a share may carry.
pub const MAX_METADATA_ENTRIES: usize = 64;
const MAX_METADATA_KEY: usize = 255;
const MAX_METADATA_VALUE: usize = 4096;
/// The whole metadata map, encoded as JSON: it is stamped on the volume as one extended
/// attribute (`trusted.shelf.metadata`), which Linux caps at 64 KiB; half of that leaves room.
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

/// Whether a character can change how a terminal or a text view shows what follows it:
/// C0 controls (newline, escape...), DEL, C1 controls, the line and paragraph separators,
/// and the bidirectional embeddings, overrides and isolates (U+202A–U+202E,
/// U+2066–U+2069), which reorder text so that it reads differently from what it holds.
pub fn is_display_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every [display-unsafe](is_display_unsafe) character and every backslash
/// written as a visible escape (`\n`, `\t`, `\r`, `\\`, `\x1b`, `\u{202e}`), so that
/// text a peer chose prints on one line and looks like what it is. Safe text is returned
/// unchanged.
pub fn escape_for_display(s: &str) -> String {
    if !s.chars().any(|c| c == '\\' || is_display_unsafe(c)) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 && is_display_unsafe(c) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if is_display_unsafe(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Check a metadata map: bounded count and lengths; keys and values without control
/// characters or bidirectional overrides ([`is_display_unsafe`]), keys without `=`.
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
        if let Some(bad) = k.chars().find(|&c| is_display_unsafe(c) || c == '=') {
            return Err(Invalid::new(format!(
                "metadata key {:?} contains {}: a control character or '=' (or a \
                 bidirectional override) is not allowed in a key",
                shorten(k),
                char_name(bad)
            )));
        }
        if v.len() > MAX_METADATA_VALUE {
            return Err(Invalid::new(format!(
                "metadata value of {k:?} is {} bytes; at most {MAX_METADATA_VALUE} are allowed",
                v.len()
            )));
        }
        if let Some(bad) = v.chars().find(|&c| is_display_unsafe(c)) {
            return Err(Invalid::new(format!(
                "metadata value of {:?} contains {}: control characters and bidirectional \
                 overrides are not allowed in a value",
                shorten(k),
                char_name(bad)
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

/// A character as an error message names it: `U+001B`.
fn char_name(c: char) -> String {
    if c == '=' {
        "'='".into()
    } else if c == '\0' {
        "NUL (U+0000)".into()
    } else {
        format!("U+{:04X}", c as u32)
    }
}

/// Whether `text` is a UUID in the one form shelf writes: hyphenated, lowercase. Ids of
/// shares, snapshots, groups and nodes end up in paths and LV names, so an id read from
/// outside (a stream's header, a stamp on disk) must be exactly that, not merely parse.
pub fn is_canonical_uuid(text: &str) -> bool {
    uuid::Uuid::try_parse(text).is_ok_and(|u| u.hyphenated().to_string() == text)
}

/// A text from outside cut to a printable length for a message: past 70 characters, its
/// first 64 and `…`.
pub fn shorten(s: &str) -> String {
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

    #[test]
    fn metadata_refuses_controls_and_bidi_overrides_in_keys_and_values() {
        for bad in [
            "a\nb",
            "a\tb",
            "\u{1b}[31m",
            "\u{7f}",
            "\u{85}",
            "\u{9b}",
            "x\u{202e}y",
            "\u{2066}",
            "\u{2069}",
            "\u{202a}",
            "\u{2028}",
            "\0",
        ] {
            let key: BTreeMap<String, String> = [(format!("k{bad}"), "v".into())].into();
            assert!(validate_metadata(&key).is_err(), "key {bad:?} accepted");
            let value: BTreeMap<String, String> = [("k".into(), format!("v{bad}"))].into();
            let err = validate_metadata(&value).unwrap_err();
            assert!(err.0.contains("U+"), "{err}");
            assert!(!err.0.chars().any(is_display_unsafe), "{err:?}");
        }
        let fine: BTreeMap<String, String> =
            [("name".into(), "Grüße, שלום \u{200f}ok".into())].into();
        assert!(validate_metadata(&fine).is_ok());
    }

    #[test]
    fn escaped_text_is_one_visible_line() {
        let forged = "v1\n2026-12-01 0 admin share.delete vol9 ok\u{1b}[2K\r\u{202e}\\n\u{9b}";
        let shown = escape_for_display(forged);
        assert!(!shown.chars().any(is_display_unsafe), "{shown:?}");
        assert_eq!(
            shown,
            "v1\\n2026-12-01 0 admin share.delete vol9 ok\\x1b[2K\\r\\u{202e}\\\\n\\u{009b}"
        );
        assert_eq!(escape_for_display("default/vol1"), "default/vol1");
    }

    proptest! {
        #[test]
        fn escaping_leaves_nothing_unsafe_and_is_injective(a in "\\PC{0,20}", b in any::<String>()) {
            let (ea, eb) = (escape_for_display(&a), escape_for_display(&b));
            prop_assert!(!eb.chars().any(is_display_unsafe));
            prop_assert_eq!(ea == eb, a == b);
        }
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
