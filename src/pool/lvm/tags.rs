//! A volume's identity as LVM tags.
//!
//! LVM tags allow only a few characters, so each identity attribute `key = value` becomes
//! one or more tags `shelf.<key>.<n>.<chunk>`: `n` is the chunk's index, and the chunk is
//! `r<text>` when the value is made only of tag-safe characters (`[A-Za-z0-9_+.-]`, kept
//! as it is, so sizes and names stay readable in `lvs`), or `b<base32>` (RFC 4648,
//! lowercase, no padding) of the value's bytes otherwise. A value longer than one tag
//! holds is split over several tags; tags are a set, so the index puts them back in order.
//!
//! Every tag lives in the VG's metadata, which LVM rewrites on each change and keeps in a
//! fixed area on every PV, so one volume's tags are capped at [`MAX_TAG_BYTES`] in total.

use std::collections::BTreeMap;

/// The prefix of every tag shelf writes.
pub const PREFIX: &str = "shelf.";
/// The most characters of one tag shelf writes (LVM 2.03 accepts longer ones; older
/// releases stopped at 128, and short tags keep `lvs` output readable).
pub const MAX_TAG_LEN: usize = 256;
/// The most characters all of one volume's tags may add up to.
pub const MAX_TAG_BYTES: usize = 8192;

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

fn tag_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_+.-".contains(&b))
}

fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in data {
        buf = (buf << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = BASE32.iter().position(|&x| x == c)? as u32;
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

/// The tags carrying `identity`; an error names the first key that cannot be a tag, or says
/// the whole is over [`MAX_TAG_BYTES`].
pub fn encode(identity: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    let mut tags = Vec::new();
    for (key, value) in identity {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(format!("identity key {key:?} cannot be an LVM tag"));
        }
        let body = if tag_safe(value) {
            format!("r{value}")
        } else {
            format!("b{}", base32_encode(value.as_bytes()))
        };
        let (kind, mut rest) = body.split_at(1);
        let mut n = 0usize;
        loop {
            let head = format!("{PREFIX}{key}.{n}.{kind}");
            let room = MAX_TAG_LEN - head.len();
            // Cut base32 at whole 8-character groups so each chunk decodes to whole bytes.
            let take = if kind == "b" { room / 8 * 8 } else { room }.min(rest.len());
            tags.push(format!("{head}{}", &rest[..take]));
            rest = &rest[take..];
            n += 1;
            if rest.is_empty() {
                break;
            }
        }
    }
    let total: usize = tags.iter().map(String::len).sum();
    if total > MAX_TAG_BYTES {
        return Err(format!(
            "the identity needs {total} characters of LVM tags; at most {MAX_TAG_BYTES} fit on \
             one volume (keep share metadata small on LVM pools)"
        ));
    }
    Ok(tags)
}

/// The key a shelf tag belongs to, or `None` for a tag that is not shelf's.
pub fn key_of(tag: &str) -> Option<&str> {
    tag.strip_prefix(PREFIX)?.split('.').next()
}

/// The identity a volume's tags carry. Tags that are not shelf's are ignored; a malformed
/// shelf tag is an error naming it.
pub fn decode<'a>(
    tags: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeMap<String, String>, String> {
    let mut chunks: BTreeMap<String, BTreeMap<usize, (char, String)>> = BTreeMap::new();
    for tag in tags {
        let Some(rest) = tag.strip_prefix(PREFIX) else {
            continue;
        };
        let bad = || format!("malformed shelf tag {tag:?}");
        let mut parts = rest.splitn(3, '.');
        let (key, n, body) = (parts.next(), parts.next(), parts.next());
        let (Some(key), Some(n), Some(body)) = (key, n, body) else {
            return Err(bad());
        };
        let n: usize = n.parse().map_err(|_| bad())?;
        let mut cs = body.chars();
        let kind = cs
            .next()
            .filter(|k| *k == 'r' || *k == 'b')
            .ok_or_else(bad)?;
        chunks
            .entry(key.to_string())
            .or_default()
            .insert(n, (kind, cs.as_str().to_string()));
    }
    let mut out = BTreeMap::new();
    for (key, parts) in chunks {
        if parts.keys().copied().ne(0..parts.len()) {
            return Err(format!("shelf tags of {key:?} miss a chunk"));
        }
        let kind = parts[&0].0;
        if parts.values().any(|(k, _)| *k != kind) {
            return Err(format!("shelf tags of {key:?} mix encodings"));
        }
        let joined: String = parts.into_values().map(|(_, s)| s).collect();
        let value = if kind == 'r' {
            joined
        } else {
            let bytes = base32_decode(&joined).ok_or_else(|| format!("bad base32 in {key:?}"))?;
            String::from_utf8(bytes).map_err(|_| format!("{key:?} is not UTF-8"))?
        };
        out.insert(key, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn safe_values_stay_readable_and_others_are_base32() {
        let tags = encode(&map(&[
            ("size", "1073741824"),
            ("metadata", "{\"a\":\"b c\"}"),
        ]))
        .unwrap();
        assert!(
            tags.contains(&"shelf.size.0.r1073741824".to_string()),
            "{tags:?}"
        );
        assert!(
            tags.iter().any(|t| t.starts_with("shelf.metadata.0.b")),
            "{tags:?}"
        );
        for t in &tags {
            assert!(tag_safe(t) && t.len() <= MAX_TAG_LEN, "{t}");
        }
    }

    #[test]
    fn round_trips_empty_long_and_unicode_values() {
        let long = "x/y ".repeat(300);
        let id = map(&[
            ("origin_snapshot", ""),
            ("name", "web-1.disk0"),
            ("metadata", "{\"owner\":\"Zoë\"}"),
            ("exports", &long),
        ]);
        let tags = encode(&id).unwrap();
        assert!(
            tags.iter()
                .filter(|t| t.starts_with("shelf.exports."))
                .count()
                > 3
        );
        // Order of tags as LVM reports them is not ours: reverse to prove it does not matter.
        let mut shuffled = tags.clone();
        shuffled.reverse();
        shuffled.push("someone.elses_tag".into());
        assert_eq!(decode(shuffled.iter().map(String::as_str)).unwrap(), id);
    }

    #[test]
    fn refuses_oversized_identity_and_bad_keys() {
        let huge = "é".repeat(MAX_TAG_BYTES);
        assert!(encode(&map(&[("metadata", &huge)]))
            .unwrap_err()
            .contains("at most"));
        assert!(encode(&map(&[("Bad.Key", "v")])).is_err());
    }

    #[test]
    fn reports_malformed_and_incomplete_tags() {
        assert!(decode(["shelf.name"]).is_err());
        assert!(decode(["shelf.name.x.rweb"]).is_err());
        assert!(decode(["shelf.name.0.qweb"]).is_err());
        assert!(decode(["shelf.name.1.rweb"])
            .unwrap_err()
            .contains("miss a chunk"));
        assert_eq!(key_of("shelf.exports.3.babc"), Some("exports"));
        assert_eq!(key_of("other"), None);
    }

    #[test]
    fn base32_matches_rfc4648() {
        for (plain, enc) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foobar", "mzxw6ytboi"),
        ] {
            assert_eq!(base32_encode(plain.as_bytes()), enc);
            assert_eq!(base32_decode(enc).unwrap(), plain.as_bytes());
        }
    }
}
