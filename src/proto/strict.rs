//! What the CBOR decoder lets through but protocol v1 does not: tags, and maps that repeat
//! a key.
//!
//! Both are refused so that a request has exactly one meaning. With repeated keys, the
//! decoder keeps every pair and the envelope parser and serde each keep the last one, so
//! `{"op": "share.delete", "op": "hello"}` ran `hello`, while a proxy or log reading the
//! first `op` saw `share.delete`; a repeated metadata key silently dropped a value. Tags
//! were skipped by the argument parser, so `32("vol")` (a URI) was taken as the name
//! `vol` and a bignum as a size: the protocol defines no tags, so none is accepted.

use std::collections::HashSet;

use ciborium::Value;

/// Deepest nesting checked; decoded frames are at most [`super::frame::MAX_DEPTH`] deep,
/// this only guards values built in memory.
const MAX_CHECK_DEPTH: usize = 2 * super::frame::MAX_DEPTH;
/// Longest path shown in a message.
const PATH_SHOWN: usize = 120;

/// Check the pairs of a request map; the error says what is wrong and where.
pub(super) fn check_request(entries: &[(Value, Value)]) -> Result<(), String> {
    let mut path = Vec::new();
    check_map(entries, &mut path)
}

/// The request's id, when it has exactly one `id` key holding an unsigned integer.
pub(super) fn unambiguous_id(entries: &[(Value, Value)]) -> Option<u64> {
    let mut ids = entries.iter().filter(|(k, _)| k.as_text() == Some("id"));
    match (ids.next(), ids.next()) {
        (Some((_, Value::Integer(i))), None) => u64::try_from(*i).ok(),
        _ => None,
    }
}

fn check_map(entries: &[(Value, Value)], path: &mut Vec<String>) -> Result<(), String> {
    let mut seen = HashSet::with_capacity(entries.len());
    for (k, v) in entries {
        let segment = match k {
            Value::Text(s) => {
                if !seen.insert(s.as_str()) {
                    return Err(format!("duplicate key {:?} in {}", shorten(s), show(path)));
                }
                shorten(s)
            }
            Value::Tag(..) => return check_value(k, path),
            _ => "(non-text key)".to_string(),
        };
        path.push(segment);
        check_value(v, path)?;
        path.pop();
    }
    Ok(())
}

fn check_value(v: &Value, path: &mut Vec<String>) -> Result<(), String> {
    if path.len() > MAX_CHECK_DEPTH {
        return Err(format!("nested deeper than {MAX_CHECK_DEPTH} levels"));
    }
    match v {
        Value::Tag(tag, _) => Err(format!(
            "CBOR tag {tag} at {}: protocol v1 uses no tags (send plain integers and text)",
            show(path)
        )),
        Value::Map(m) => check_map(m, path),
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                path.push(format!("[{i}]"));
                check_value(x, path)?;
                path.pop();
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(32).collect()
}

fn show(path: &[String]) -> String {
    if path.is_empty() {
        return "the request".to_string();
    }
    let mut out = String::new();
    for p in path {
        if !out.is_empty() && !p.starts_with('[') {
            out.push('.');
        }
        out.push_str(p);
    }
    if out.chars().count() > PATH_SHOWN {
        out = format!("{}…", out.chars().take(PATH_SHOWN).collect::<String>());
    }
    format!("{out:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn refuses_repeated_keys_and_tags_with_their_place() {
        let dup = vec![(t("id"), t("a")), (t("id"), t("b"))];
        assert_eq!(
            check_request(&dup).unwrap_err(),
            "duplicate key \"id\" in the request"
        );
        let nested = vec![(
            t("args"),
            Value::Map(vec![(
                t("clients"),
                Value::Array(vec![t("a"), Value::Tag(32, Box::new(t("b")))]),
            )]),
        )];
        let e = check_request(&nested).unwrap_err();
        assert!(e.contains("CBOR tag 32 at \"args.clients[1]\""), "{e}");
        let fine = vec![(t("id"), Value::Integer(1.into())), (t("op"), t("hello"))];
        assert_eq!(check_request(&fine), Ok(()));
        assert_eq!(unambiguous_id(&fine), Some(1));
        assert_eq!(unambiguous_id(&dup), None);
    }

    #[test]
    fn messages_stay_short_and_deep_values_do_not_recurse_forever() {
        let long = "k".repeat(10_000);
        let dup = vec![(t(&long), t("a")), (t(&long), t("b"))];
        assert!(check_request(&dup).unwrap_err().len() < 100);
        let mut deep = Value::Null;
        for _ in 0..1_000 {
            deep = Value::Map(vec![(t(&"p".repeat(40)), deep)]);
        }
        let e = check_request(&[(t("args"), deep)]).unwrap_err();
        assert!(e.contains("nested deeper"), "{e}");
    }
}
