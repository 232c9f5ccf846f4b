//! The stream format: round trips, and every way a hostile stream is refused.

use proptest::prelude::*;

use super::*;

fn header(size: u64, base: Option<&str>) -> Header {
    Header {
        size,
        created_at: 1_700_000_000,
        snapshot_id: "5f0c2d9e-0000-4000-8000-000000000001".into(),
        snapshot_name: "s1".into(),
        share_id: "5f0c2d9e-0000-4000-8000-0000000000aa".into(),
        share_name: "vol".into(),
        node: Some("node1".into()),
        base: base.map(str::to_string),
        node_id: Some(NodeId::parse(NODE_ID).unwrap()),
    }
}

const NODE_ID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

/// A whole stream of `vol`'s bytes for `extents`.
fn encode(h: &Header, extents: &[Extent], vol: &[u8]) -> Vec<u8> {
    let (mut enc, mut out) = Encoder::start(h, extents);
    for e in extents.iter().filter(|e| e.kind == ExtentKind::Data) {
        let d = &vol[e.offset as usize..e.end() as usize];
        enc.data(d);
        out.extend_from_slice(d);
    }
    out.extend_from_slice(&enc.finish());
    out
}

type Decoded = (Header, Vec<Extent>, Vec<u8>);

/// Decode in pieces of `piece` bytes onto a zeroed volume.
fn decode(bytes: &[u8], piece: usize) -> Result<Decoded, StreamError> {
    let mut d = Decoder::new();
    let mut head = None;
    let mut vol = Vec::new();
    for chunk in bytes.chunks(piece.max(1)) {
        d.feed::<()>(chunk, &mut |ev| {
            match ev {
                // A corrupted size may be huge: this test volume is not (a real
                // receiver writes into a sparse file, after the capacity check).
                Event::Head(h, _) if h.size > 1 << 20 => return Err(()),
                Event::Head(h, e) => {
                    vol = vec![0; h.size as usize];
                    head = Some((h.clone(), e.to_vec()));
                }
                Event::Data { offset, bytes } => {
                    vol[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes)
                }
            }
            Ok(())
        })
        .map_err(|e| match e {
            FeedError::Stream(s) => s,
            FeedError::Sink(()) => StreamError::HeaderMalformed("test: size over 1 MiB".into()),
        })?;
    }
    d.finish()?;
    assert_eq!(d.consumed(), bytes.len() as u64);
    let (h, e) = head.expect("a finished stream had a head");
    Ok((h, e, vol))
}

fn sample() -> (Header, Vec<Extent>, Vec<u8>) {
    let vol: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    let extents = vec![
        Extent {
            kind: ExtentKind::Data,
            offset: 0,
            len: 100,
        },
        Extent {
            kind: ExtentKind::Hole,
            offset: 100,
            len: 900,
        },
        Extent {
            kind: ExtentKind::Data,
            offset: 4096,
            len: 4096,
        },
    ];
    (header(8192, Some("base-id")), extents, vol)
}

#[test]
fn a_stream_round_trips_in_any_piece_size() {
    let (h, e, vol) = sample();
    let bytes = encode(&h, &e, &vol);
    assert_eq!(bytes.len() as u64, stream_len(&h, &e));
    for piece in [1, 3, 16, 17, 40, 4096, 1 << 20] {
        let (h2, e2, v2) = decode(&bytes, piece).unwrap();
        assert_eq!((&h2, &e2), (&h, &e));
        assert_eq!(&v2[..100], &vol[..100]);
        assert!(v2[100..4096].iter().all(|&b| b == 0));
        assert_eq!(&v2[4096..], &vol[4096..]);
    }
}

#[test]
fn an_empty_stream_and_a_full_one_without_node_round_trip() {
    let mut h = header(0, None);
    h.node = None;
    let bytes = encode(&h, &[], &[]);
    assert_eq!(decode(&bytes, 5).unwrap().0, h);
}

/// The preamble and header of a stream as a sender before `node_id` wrote them, built
/// by hand from docs/replication.md §2 (not by the encoder): six texts, then the end.
fn old_head(h: &Header) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&h.size.to_be_bytes());
    body.extend_from_slice(&h.created_at.to_be_bytes());
    body.extend_from_slice(&0u32.to_be_bytes());
    for t in [
        &h.snapshot_id,
        &h.snapshot_name,
        &h.share_id,
        &h.share_name,
        h.node.as_deref().unwrap_or(""),
        h.base.as_deref().unwrap_or(""),
    ] {
        body.extend_from_slice(&(t.len() as u16).to_be_bytes());
        body.extend_from_slice(t.as_bytes());
    }
    let mut out = b"SHELFSND\x00\x01\x00\x00".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[test]
fn a_stream_without_node_id_is_still_read_and_written_as_before() {
    let mut h = header(0, Some("5f0c2d9e-0000-4000-8000-000000000000"));
    h.node_id = None;
    let mut old = old_head(&h);
    assert_eq!(
        encode_head(&h, &[]),
        old,
        "no node_id: the old layout, byte for byte"
    );
    let trailer = Sha256::digest(&old);
    old.extend_from_slice(TRAILER_MAGIC);
    old.extend_from_slice(&trailer);
    assert_eq!(decode(&old, 3).unwrap().0, h);
}

#[test]
fn node_id_comes_after_base_and_must_be_a_node_id() {
    let h = header(0, None);
    let with = encode_head(&h, &[]);
    let mut without = h.clone();
    without.node_id = None;
    let mut expected = encode_head(&without, &[]);
    expected[12..16].copy_from_slice(&((with.len() - PREAMBLE_LEN) as u32).to_be_bytes());
    expected.extend_from_slice(&36u16.to_be_bytes());
    expected.extend_from_slice(NODE_ID.as_bytes());
    assert_eq!(with, expected);
    assert_eq!(decode(&encode(&h, &[], &[]), 9).unwrap().0, h);
    for bad in [
        "",
        "node1",
        &NODE_ID.to_uppercase(),
        "0f8fad5b-d9cb-469f-a165-70867728950e\n",
    ] {
        let mut b = encode_head(&without, &[]);
        let len = (b.len() - PREAMBLE_LEN + 2 + bad.len()) as u32;
        b[12..16].copy_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&(bad.len() as u16).to_be_bytes());
        b.extend_from_slice(bad.as_bytes());
        match decode(&b, 64).unwrap_err() {
            StreamError::HeaderMalformed(m) => assert!(m.contains("node_id"), "{bad:?}: {m}"),
            e => panic!("{bad:?}: {e:?}"),
        }
    }
    // Still nothing after the last field.
    let mut b = with.clone();
    b[12..16].copy_from_slice(&((with.len() - PREAMBLE_LEN + 1) as u32).to_be_bytes());
    b.push(0);
    match decode(&b, 64).unwrap_err() {
        StreamError::HeaderMalformed(m) => assert!(m.contains("after the last field"), "{m}"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn every_truncation_is_refused_as_truncated() {
    let (h, e, vol) = sample();
    let bytes = encode(&h, &e, &vol);
    for cut in 0..bytes.len() {
        match decode(&bytes[..cut], 64) {
            Err(StreamError::Truncated(_)) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn trailing_garbage_is_refused() {
    let (h, e, vol) = sample();
    let mut bytes = encode(&h, &e, &vol);
    bytes.push(0);
    assert_eq!(decode(&bytes, 7).unwrap_err(), StreamError::TrailingBytes);
}

#[test]
fn a_flipped_data_byte_fails_the_checksum() {
    let (h, e, vol) = sample();
    let mut bytes = encode(&h, &e, &vol);
    let n = bytes.len();
    bytes[n - TRAILER_LEN - 10] ^= 1;
    assert_eq!(decode(&bytes, 100).unwrap_err(), StreamError::Checksum);
    let mut bytes = encode(&h, &e, &vol);
    bytes[n - 1] ^= 0x80;
    assert_eq!(decode(&bytes, 100).unwrap_err(), StreamError::Checksum);
    let mut bytes = encode(&h, &e, &vol);
    bytes[n - TRAILER_LEN] = b'X';
    assert_eq!(decode(&bytes, 100).unwrap_err(), StreamError::TrailerMagic);
}

#[test]
fn wrong_magic_version_flags_and_header_size_are_each_named() {
    let (h, e, vol) = sample();
    let good = encode(&h, &e, &vol);
    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(decode(&b, 64).unwrap_err(), StreamError::BadMagic);
    let mut b = good.clone();
    b[9] = 2;
    assert_eq!(decode(&b, 64).unwrap_err(), StreamError::Version(2));
    let mut b = good.clone();
    b[11] = 1;
    assert_eq!(decode(&b, 64).unwrap_err(), StreamError::Flags(1));
    let mut b = good.clone();
    b[12..16].copy_from_slice(&(MAX_HEADER + 1).to_be_bytes());
    assert_eq!(
        decode(&b, 64).unwrap_err(),
        StreamError::HeaderTooLarge(MAX_HEADER + 1)
    );
}

/// A stream whose extent table is `extents` verbatim (the encoder's table, unchecked).
fn with_extents(size: u64, extents: &[Extent]) -> Vec<u8> {
    let vol = vec![1u8; size.min(1 << 16) as usize];
    let (enc, mut out) = Encoder::start(&header(size, None), extents);
    out.extend_from_slice(&enc.finish());
    let _ = vol;
    out
}

#[test]
fn bad_extents_are_each_named() {
    let d = |offset, len| Extent {
        kind: ExtentKind::Hole,
        offset,
        len,
    };
    assert_eq!(
        decode(&with_extents(100, &[d(0, 0)]), 9).unwrap_err(),
        StreamError::ExtentEmpty { index: 0 }
    );
    assert_eq!(
        decode(&with_extents(100, &[d(10, 10), d(15, 10)]), 9).unwrap_err(),
        StreamError::ExtentOrder { index: 1 }
    );
    assert_eq!(
        decode(&with_extents(100, &[d(50, 10), d(0, 10)]), 9).unwrap_err(),
        StreamError::ExtentOrder { index: 1 }
    );
    assert_eq!(
        decode(&with_extents(100, &[d(90, 11)]), 9).unwrap_err(),
        StreamError::ExtentBounds { index: 0 }
    );
    assert_eq!(
        decode(&with_extents(u64::MAX, &[d(u64::MAX - 1, 5)]), 9).unwrap_err(),
        StreamError::ExtentBounds { index: 0 }
    );
    let mut b = with_extents(100, &[d(0, 10)]);
    let at = b.len() - TRAILER_LEN - EXTENT_LEN;
    b[at] = 9;
    assert_eq!(
        decode(&b, 9).unwrap_err(),
        StreamError::ExtentKind { index: 0, kind: 9 }
    );
}

#[test]
fn an_extent_count_over_the_limit_is_refused_before_any_table_is_read() {
    let mut b = with_extents(100, &[]);
    // size u64 · created_at i64 · count u32 at 16 + 16.
    b[32..36].copy_from_slice(&(MAX_EXTENTS + 1).to_be_bytes());
    assert_eq!(
        decode(&b, 64).unwrap_err(),
        StreamError::TooManyExtents(MAX_EXTENTS + 1)
    );
}

#[test]
fn a_malformed_header_is_refused() {
    let mut b = with_extents(100, &[]);
    // The first text's length, past the header's end.
    b[36..38].copy_from_slice(&2000u16.to_be_bytes());
    assert!(matches!(
        decode(&b, 64).unwrap_err(),
        StreamError::HeaderMalformed(_)
    ));
    let mut h = header(1, None);
    h.snapshot_id = String::new();
    let b = encode(&h, &[], &[0]);
    assert!(matches!(
        decode(&b, 64).unwrap_err(),
        StreamError::HeaderMalformed(_)
    ));
    let mut b = with_extents(100, &[]);
    b[38] = 0xff;
    assert!(matches!(
        decode(&b, 64).unwrap_err(),
        StreamError::HeaderMalformed(_)
    ));
}

fn arb_extents() -> impl Strategy<Value = (u64, Vec<Extent>)> {
    proptest::collection::vec((0u64..64, 1u64..64, any::<bool>()), 0..20).prop_map(|v| {
        let mut at = 0;
        let mut out = Vec::new();
        for (gap, len, data) in v {
            let kind = if data {
                ExtentKind::Data
            } else {
                ExtentKind::Hole
            };
            out.push(Extent {
                kind,
                offset: at + gap,
                len,
            });
            at += gap + len;
        }
        (at + 7, out)
    })
}

proptest! {
    #[test]
    fn any_stream_round_trips((size, extents) in arb_extents(), piece in 1usize..200) {
        let vol: Vec<u8> = (0..size).map(|i| (i % 253) as u8 + 1).collect();
        let h = header(size, Some("b"));
        let bytes = encode(&h, &extents, &vol);
        let (h2, e2, v2) = decode(&bytes, piece).unwrap();
        prop_assert_eq!(h2, h);
        prop_assert_eq!(&e2, &extents);
        for e in &extents {
            let want = if e.kind == ExtentKind::Data { vol[e.offset as usize..e.end() as usize].to_vec() } else { vec![0; e.len as usize] };
            prop_assert_eq!(&v2[e.offset as usize..e.end() as usize], &want[..]);
        }
    }

    #[test]
    fn any_corruption_is_refused((size, extents) in arb_extents(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let vol: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let mut bytes = encode(&header(size, None), &extents, &vol);
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        prop_assert!(decode(&bytes, 13).is_err());
    }
}

#[test]
fn a_text_over_the_limit_is_cut_at_a_character_boundary() {
    let mut h = header(1, None);
    // 1 + 2 × 600 bytes: byte 1024 falls inside a two-byte character.
    h.share_name = format!("a{}", "é".repeat(600));
    let b = encode(&h, &[], &[0]);
    let (got, _, _) = decode(&b, 64).unwrap();
    assert_eq!(got.share_name.len(), 1023);
    assert!(h.share_name.starts_with(&got.share_name));
}
