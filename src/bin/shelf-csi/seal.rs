//! Sealing an iSCSI CHAP secret for `publish_context`: the controller puts the secret of
//! `share.attach`'s `connection_info` into the VolumeAttachment (which any reader of the
//! cluster's API objects can see), so it travels sealed, never in the clear.
//!
//! The seal is XChaCha20-Poly1305 (an AEAD) under a 32-byte key derived with HKDF-SHA256
//! from the value of [`CHAP_KEY`] in the Kubernetes Secret that both the controller's
//! publish secrets and the node's stage secrets name. Each seal has a fresh random 24-byte
//! nonce (OS randomness), and binds what it is for as associated data ([`Bound`]): the
//! volume id, the node id, the target portal, the target IQN and the CHAP user. A sealed
//! secret copied into another volume's or another node's attachment does not open, nor
//! does one whose publish_context was edited (by whoever can write VolumeAttachments) to
//! send the node to another portal or target, which would otherwise receive the secret in
//! the node's CHAP login.
//!
//! Text form: `v1.` followed by lower-case hex of `nonce ‖ ciphertext ‖ tag`. Nothing of
//! the secret's value or length beyond the ciphertext's size is visible in it; the errors
//! here never carry any part of the key, the secret or the sealed text.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The name of the key in the CSI secrets maps (ControllerPublishVolumeRequest.secrets and
/// NodeStageVolumeRequest.secrets) whose value the sealing key is derived from.
pub const CHAP_KEY: &str = "chapKey";

/// Shortest key value accepted: a shorter one could be guessed offline against a sealed
/// text read from the API server.
pub const MIN_KEY_BYTES: usize = 16;

/// Version prefix of the text form (a later format gets another).
const PREFIX: &str = "v1.";
/// HKDF `info`: ties the derived key to this one use.
const KEY_LABEL: &[u8] = b"shelf-csi chap-secret seal v1";
/// Domain label that starts the associated data.
const AD_LABEL: &[u8] = b"shelf-csi chap-secret v2";
/// XChaCha20 nonce length.
const NONCE_BYTES: usize = 24;
/// Poly1305 tag length.
const TAG_BYTES: usize = 16;

/// Why a secret could not be sealed or opened. No variant carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The key value in the Secret is shorter than [`MIN_KEY_BYTES`].
    #[error("the {CHAP_KEY:?} value in the CSI secret is shorter than {MIN_KEY_BYTES} bytes")]
    KeyTooShort,
    /// The text is not a sealed secret of this format.
    #[error("the sealed CHAP secret is malformed (not v1 hex of nonce, ciphertext and tag)")]
    Malformed,
    /// The key, the volume, the node or the text does not match what was sealed.
    #[error(
        "the sealed CHAP secret does not open: the {CHAP_KEY:?} value differs from the \
         controller's, or it was sealed for another volume, node, target or user, or it was \
         altered"
    )]
    Refused,
}

/// What a sealed secret is for: all of it is associated data, so the secret opens only
/// for the same volume, node, target and user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound<'a> {
    /// The CSI volume id.
    pub volume_id: &'a str,
    /// The CSI node id.
    pub node_id: &'a str,
    /// The iSCSI portal `address:port` the node logs in to.
    pub target_portal: &'a str,
    /// The target IQN.
    pub target_iqn: &'a str,
    /// The CHAP user name.
    pub chap_user: &'a str,
}

/// Seal `secret` for `bound` under the key derived from `key` (the [`CHAP_KEY`] value).
/// Returns the text to put in `publish_context`.
pub fn seal(key: &str, bound: &Bound<'_>, secret: &str) -> Result<String, SealError> {
    let cipher = cipher_for(key)?;
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let aad = associated_data(bound);
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: secret.as_bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Malformed)?;
    let mut out = String::with_capacity(PREFIX.len() + 2 * (NONCE_BYTES + sealed.len()));
    out.push_str(PREFIX);
    push_hex(&mut out, &nonce);
    push_hex(&mut out, &sealed);
    Ok(out)
}

/// Open a text made by [`seal`] with the same key and [`Bound`]. The secret is returned in
/// memory that is wiped when dropped.
pub fn open(key: &str, bound: &Bound<'_>, sealed: &str) -> Result<Zeroizing<String>, SealError> {
    let cipher = cipher_for(key)?;
    let hex = sealed.strip_prefix(PREFIX).ok_or(SealError::Malformed)?;
    let bytes = parse_hex(hex).ok_or(SealError::Malformed)?;
    if bytes.len() < NONCE_BYTES + TAG_BYTES {
        return Err(SealError::Malformed);
    }
    let (nonce, body) = bytes.split_at(NONCE_BYTES);
    let aad = associated_data(bound);
    let plain = cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Refused)?;
    let plain = Zeroizing::new(plain);
    let text = std::str::from_utf8(&plain).map_err(|_| SealError::Refused)?;
    Ok(Zeroizing::new(text.to_string()))
}

/// The cipher keyed with HKDF-SHA256(`key`), refusing a short key value.
fn cipher_for(key: &str) -> Result<XChaCha20Poly1305, SealError> {
    if key.len() < MIN_KEY_BYTES {
        return Err(SealError::KeyTooShort);
    }
    let mut okm = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, key.as_bytes())
        .expand(KEY_LABEL, okm.as_mut())
        .map_err(|_| SealError::KeyTooShort)?;
    Ok(XChaCha20Poly1305::new(okm.as_ref().into()))
}

/// Associated data: the label, then each part of `b` with its length in front, so no two
/// bindings give the same bytes.
fn associated_data(b: &Bound<'_>) -> Vec<u8> {
    let mut ad = AD_LABEL.to_vec();
    for part in [
        b.volume_id,
        b.node_id,
        b.target_portal,
        b.target_iqn,
        b.chap_user,
    ] {
        ad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        ad.extend_from_slice(part.as_bytes());
    }
    ad
}

/// Append `bytes` as lower-case hex.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

/// Parse lower-case hex; `None` for odd length or any other character.
fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    b.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a-key-of-enough-length";
    const VOL: &str = "a1:0b0e6f1c-9d2e-4c1a-8f00-123456789abc";
    const NODE: &str = "host=n1;iqn=iqn.1993-08.org.debian:01:n1";
    const SECRET: &str = "s3cr3t-Chap-Value";
    const B: Bound<'static> = Bound {
        volume_id: VOL,
        node_id: NODE,
        target_portal: "10.0.0.1:3260",
        target_iqn: "iqn.2024-01.io.shelf:vol1",
        chap_user: "shelf-u",
    };

    #[test]
    fn a_sealed_secret_opens_with_the_same_key_volume_and_node() {
        let sealed = seal(KEY, &B, SECRET).unwrap();
        assert_eq!(open(KEY, &B, &sealed).unwrap().as_str(), SECRET);
        // A fresh nonce each time: two seals of one secret differ.
        assert_ne!(sealed, seal(KEY, &B, SECRET).unwrap());
    }

    #[test]
    fn another_key_volume_or_node_is_refused() {
        let sealed = seal(KEY, &B, SECRET).unwrap();
        let other = "another-key-of-enough-length";
        assert_eq!(open(other, &B, &sealed), Err(SealError::Refused));
        // Any other part of the binding: another volume, node, portal, target or user.
        let others = [
            Bound {
                volume_id: "a1:other",
                ..B
            },
            Bound {
                node_id: "host=n2",
                ..B
            },
            Bound {
                target_portal: "10.6.6.6:3260",
                ..B
            },
            Bound {
                target_iqn: "iqn.2024-01.io.evil:vol1",
                ..B
            },
            Bound {
                chap_user: "other-u",
                ..B
            },
        ];
        for other in others {
            assert_eq!(
                open(KEY, &other, &sealed),
                Err(SealError::Refused),
                "{other:?}"
            );
        }
        // The length prefixes keep the boundary between the parts.
        let s2 = seal(
            KEY,
            &Bound {
                volume_id: "a1:x",
                node_id: "yz",
                ..B
            },
            SECRET,
        )
        .unwrap();
        let shifted = Bound {
            volume_id: "a1:xy",
            node_id: "z",
            ..B
        };
        assert_eq!(open(KEY, &shifted, &s2), Err(SealError::Refused));
    }

    #[test]
    fn tampered_or_malformed_text_is_refused() {
        let sealed = seal(KEY, &B, SECRET).unwrap();
        for i in PREFIX.len()..sealed.len() {
            let mut b = sealed.clone().into_bytes();
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            let t = String::from_utf8(b).unwrap();
            assert_eq!(open(KEY, &B, &t), Err(SealError::Refused), "byte {i}");
        }
        let truncated = &sealed[..sealed.len() - 2];
        assert_eq!(open(KEY, &B, truncated), Err(SealError::Refused));
        for bad in [
            "",
            "v1.",
            "v1.abc",
            "v2.00",
            "v1.ZZ",
            &sealed[PREFIX.len()..],
        ] {
            assert_eq!(open(KEY, &B, bad), Err(SealError::Malformed), "{bad:?}");
        }
        assert_eq!(
            open(KEY, &B, &format!("v1.{}", "00".repeat(39))),
            Err(SealError::Malformed)
        );
    }

    #[test]
    fn a_short_key_is_refused_both_ways() {
        assert_eq!(seal("short", &B, SECRET), Err(SealError::KeyTooShort));
        let sealed = seal(KEY, &B, SECRET).unwrap();
        assert_eq!(open("short", &B, &sealed), Err(SealError::KeyTooShort));
    }

    #[test]
    fn nothing_of_the_secret_or_key_is_in_the_text_or_the_errors() {
        let sealed = seal(KEY, &B, SECRET).unwrap();
        let mut hex_secret = String::new();
        push_hex(&mut hex_secret, SECRET.as_bytes());
        for needle in [SECRET, KEY, &hex_secret, &SECRET[..6]] {
            assert!(!sealed.contains(needle), "{needle:?} in {sealed}");
        }
        for e in [
            SealError::KeyTooShort,
            SealError::Malformed,
            SealError::Refused,
        ] {
            let m = e.to_string();
            assert!(!m.contains(SECRET) && !m.contains(KEY), "{m}");
        }
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut s = String::new();
        push_hex(&mut s, &bytes);
        assert_eq!(parse_hex(&s).unwrap(), bytes);
        assert_eq!(parse_hex("0"), None);
        assert_eq!(parse_hex("0A"), None);
    }
}
