//! What a send reads from a thin pool's metadata: the commands (`dmsetup message` to
//! reserve and release the pool's metadata snapshot, `thin_delta` and `thin_dump` on it,
//! from thin-provisioning-tools) as argv builders, and the parsers of their XML output.
//!
//! A thin device maps its virtual blocks to the pool's data blocks. A thin snapshot starts
//! with its origin's mappings, and a write to a shared block goes to a new data block
//! (copy on write): so a block of the new snapshot mapped to the same data block as the
//! same block of the base holds the same bytes. `thin_delta` walks both devices' mapping
//! trees and says, per range of blocks, `same`, `different`, `left_only` (mapped in the
//! base, not in the new snapshot: discarded since) or `right_only` (mapped only in the new
//! one); `thin_dump --dev-id` lists one device's mapped ranges, for a full stream. Units are
//! the pool's data blocks (`data_block_size` sectors of 512 bytes). Nothing reads data.
//!
//! Pure: text in, ranges out, so tested against the output of the tools of the guest image
//! (thin-provisioning-tools 0.9.0) in `tests/fixtures/lvm/thin/`.

use crate::replication::diff::push_merged;
use crate::replication::format::{Extent, ExtentKind};
use crate::sys::cmd::Cmd;

/// device-mapper's name of LV `lv` of VG `vg` (each `-` in a name doubled, then joined by
/// `-`), as under `/dev/mapper`.
pub fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// The thin-pool target of `vg/thin_pool` (LVM's `-tpool` layer, there while any of its
/// thin LVs is active), which takes the pool's messages.
pub fn pool_target(vg: &str, thin_pool: &str) -> String {
    format!("{}-tpool", dm_name(vg, thin_pool))
}

/// The thin pool's metadata device.
pub fn metadata_device(vg: &str, thin_pool: &str) -> String {
    format!("/dev/mapper/{}", dm_name(vg, &format!("{thin_pool}_tmeta")))
}

/// `dmsetup message TARGET 0 MESSAGE`: `reserve_metadata_snap` or `release_metadata_snap`.
pub fn pool_message(target: &str, message: &str) -> Cmd {
    Cmd::new("dmsetup").args(["message", target, "0", message])
}

/// `thin_delta` of thin devices `left` (the base) and `right` on the reserved metadata
/// snapshot of `metadata`.
pub fn delta(metadata: &str, left: u64, right: u64) -> Cmd {
    Cmd::new("thin_delta").args([
        "--metadata-snap",
        "--snap1",
        &left.to_string(),
        "--snap2",
        &right.to_string(),
        metadata,
    ])
}

/// `thin_dump` of thin device `dev` on the reserved metadata snapshot of `metadata`.
pub fn dump(metadata: &str, dev: u64) -> Cmd {
    Cmd::new("thin_dump").args(["--metadata-snap", "--dev-id", &dev.to_string(), metadata])
}

/// What a range of blocks is between the base and the new snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The same data blocks in both: not sent.
    Same,
    /// Mapped in both, to different data blocks: sent as data.
    Different,
    /// Mapped in the base only: sent as a hole.
    LeftOnly,
    /// Mapped in the new snapshot only: sent as data.
    RightOnly,
}

/// Ranges of a thin device's blocks, and the block size they are counted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranges {
    /// Bytes per block (`data_block_size` × 512).
    pub block_bytes: u64,
    /// `(change, first block, blocks)`, in the order printed (ascending).
    pub ranges: Vec<(Change, u64, u64)>,
}

/// One XML element's name and attributes, as these tools print them (one element per line,
/// attribute values in double quotes without escapes).
struct Element<'a> {
    name: &'a str,
    attrs: Vec<(&'a str, &'a str)>,
}

impl Element<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn number(&self, key: &str) -> Result<u64, String> {
        let v = self
            .get(key)
            .ok_or_else(|| format!("<{}> has no {key}", self.name))?;
        v.parse()
            .map_err(|_| format!("<{}> {key}={v:?} is not a number", self.name))
    }
}

/// The opening (or empty) elements of `text`, in order; closing tags are skipped.
fn elements(text: &str) -> Result<Vec<Element<'_>>, String> {
    let mut out = Vec::new();
    for piece in text.split('<').skip(1) {
        let Some(end) = piece.find('>') else {
            return Err("an element is not closed".into());
        };
        let body = piece[..end].trim_end_matches('/').trim();
        if body.starts_with(['/', '?', '!']) {
            continue;
        }
        let (name, mut rest) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
        let mut attrs = Vec::new();
        loop {
            rest = rest.trim_start();
            if rest.is_empty() {
                break;
            }
            let (key, after) = rest
                .split_once("=\"")
                .ok_or_else(|| format!("<{name}>: an attribute without a quoted value"))?;
            let (value, after) = after
                .split_once('"')
                .ok_or_else(|| format!("<{name}>: an unterminated attribute value"))?;
            attrs.push((key.trim(), value));
            rest = after;
        }
        out.push(Element { name, attrs });
    }
    Ok(out)
}

/// The superblock's block size in bytes (it must come first).
fn block_bytes(els: &[Element<'_>], tool: &str) -> Result<u64, String> {
    let sb = els
        .first()
        .filter(|e| e.name == "superblock")
        .ok_or_else(|| format!("{tool} printed no <superblock>"))?;
    let sectors = sb.number("data_block_size")?;
    if sectors == 0 || sectors > (1 << 21) {
        return Err(format!(
            "{tool}: data_block_size {sectors} is not a block size"
        ));
    }
    Ok(sectors * 512)
}

/// Output cut short (at an element's end) would drop ranges without a parse error: the
/// element holding them and the superblock must both be closed.
fn whole(text: &str, element: &str, tool: &str) -> Result<(), String> {
    if text.contains(&format!("</{element}>")) && text.trim_end().ends_with("</superblock>") {
        Ok(())
    } else {
        Err(format!(
            "{tool}'s output ends before its <{element}> and <superblock> close"
        ))
    }
}

fn change_of(name: &str) -> Option<Change> {
    Some(match name {
        "same" => Change::Same,
        "different" => Change::Different,
        "left_only" => Change::LeftOnly,
        "right_only" => Change::RightOnly,
        _ => return None,
    })
}

/// Push a range, refusing more than `max` and ranges out of order.
fn push(out: &mut Ranges, max: usize, c: Change, begin: u64, len: u64) -> Result<(), String> {
    if len == 0 {
        return Ok(());
    }
    if let Some(&(_, b, l)) = out.ranges.last() {
        if begin < b + l {
            return Err(format!(
                "range at block {begin} overlaps or precedes the one before"
            ));
        }
    }
    if out.ranges.len() >= max {
        return Err(format!("more than {max} ranges"));
    }
    out.ranges.push((c, begin, len));
    Ok(())
}

/// Parse `thin_delta` output for thin devices `left` and `right`: the terse form
/// (`<different begin= length=/>`) or the verbose one (`<different>` around `<range>`s).
/// At most `max` ranges.
pub fn parse_delta(text: &str, left: u64, right: u64, max: usize) -> Result<Ranges, String> {
    let els = elements(text).map_err(|e| format!("thin_delta: {e}"))?;
    let mut out = Ranges {
        block_bytes: block_bytes(&els, "thin_delta")?,
        ranges: Vec::new(),
    };
    let mut diff = false;
    let mut group = None;
    for e in &els[1..] {
        match e.name {
            "diff" => {
                let (l, r) = (e.number("left")?, e.number("right")?);
                if (l, r) != (left, right) || diff {
                    return Err(format!(
                        "thin_delta: a diff of devices {l} and {r}, asked for {left} and {right}"
                    ));
                }
                diff = true;
            }
            "range" if diff => {
                let c = group.ok_or("thin_delta: a <range> outside a change")?;
                push(&mut out, max, c, e.number("begin")?, e.number("length")?)
                    .map_err(|m| format!("thin_delta: {m}"))?;
            }
            name if diff && change_of(name).is_some() => {
                let c = change_of(name).expect("checked");
                if e.get("begin").is_some() {
                    push(&mut out, max, c, e.number("begin")?, e.number("length")?)
                        .map_err(|m| format!("thin_delta: {m}"))?;
                } else {
                    group = Some(c);
                }
            }
            other => return Err(format!("thin_delta: unexpected <{other}>")),
        }
    }
    if !diff {
        return Err("thin_delta printed no <diff>".into());
    }
    whole(text, "diff", "thin_delta")?;
    Ok(out)
}

/// Parse `thin_dump --dev-id DEV` output: device `dev`'s mapped ranges (as
/// [`Change::RightOnly`]), adjacent ones merged. At most `max` ranges.
pub fn parse_dump(text: &str, dev: u64, max: usize) -> Result<Ranges, String> {
    let els = elements(text).map_err(|e| format!("thin_dump: {e}"))?;
    let mut out = Ranges {
        block_bytes: block_bytes(&els, "thin_dump")?,
        ranges: Vec::new(),
    };
    let mut found = false;
    for e in &els[1..] {
        let (begin, len) = match e.name {
            "device" => {
                let id = e.number("dev_id")?;
                if id != dev || found {
                    return Err(format!("thin_dump: device {id}, asked for {dev}"));
                }
                found = true;
                continue;
            }
            "range_mapping" if found => (e.number("origin_begin")?, e.number("length")?),
            "single_mapping" if found => (e.number("origin_block")?, 1),
            other => return Err(format!("thin_dump: unexpected <{other}>")),
        };
        match out.ranges.last_mut() {
            Some((_, b, l)) if *b + *l == begin => *l += len,
            _ => push(&mut out, max, Change::RightOnly, begin, len)
                .map_err(|m| format!("thin_dump: {m}"))?,
        }
    }
    if !found {
        return Err(format!("thin_dump: the metadata has no thin device {dev}"));
    }
    whole(text, "device", "thin_dump")?;
    Ok(out)
}

/// The extents a stream of a `size`-byte snapshot carries for `ranges` over a base of
/// `base_size` bytes (0 for a full stream): below `base_size`, data for `different` and
/// `right_only`, a hole for `left_only`, nothing for `same`; at and past `base_size`, data
/// for every block the new snapshot maps (`same` included: the base's LV holds blocks
/// past its size, a rounding to whole extents a tenant can write, that the base's stream
/// never carried) and a hole for `left_only`. In bytes, cut at `size`, adjacent extents
/// of one kind merged.
pub fn extents(ranges: &Ranges, base_size: u64, size: u64) -> Result<Vec<Extent>, String> {
    let mut out: Vec<Extent> = Vec::new();
    for &(c, begin, len) in &ranges.ranges {
        let at = begin
            .checked_mul(ranges.block_bytes)
            .ok_or("a block address past 2^64 bytes")?;
        if at >= size {
            continue;
        }
        let end = begin
            .checked_add(len)
            .and_then(|e| e.checked_mul(ranges.block_bytes))
            .ok_or("a range past 2^64 bytes")?
            .min(size);
        let split = base_size.clamp(at, end);
        let (below, past) = match c {
            Change::Same => (None, Some(ExtentKind::Data)),
            Change::Different | Change::RightOnly => {
                (Some(ExtentKind::Data), Some(ExtentKind::Data))
            }
            Change::LeftOnly => (Some(ExtentKind::Hole), Some(ExtentKind::Hole)),
        };
        if let Some(k) = below {
            push_merged(&mut out, k, at, split);
        }
        if let Some(k) = past {
            push_merged(&mut out, k, split, end);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELTA: &str = include_str!("../../../tests/fixtures/lvm/thin/delta-1-2.xml");
    const VERBOSE: &str = include_str!("../../../tests/fixtures/lvm/thin/delta-1-2-verbose.xml");
    const DUMP: &str = include_str!("../../../tests/fixtures/lvm/thin/dump-2.xml");
    const MISSING: &str = include_str!("../../../tests/fixtures/lvm/thin/dump-missing.xml");
    const LIVE_DELTA: &str = include_str!("../../../tests/fixtures/lvm/thin/live-delta.xml");
    const LIVE_DUMP: &str = include_str!("../../../tests/fixtures/lvm/thin/live-dump.xml");

    fn data(offset: u64, len: u64) -> Extent {
        Extent::data(offset, len)
    }

    fn hole(offset: u64, len: u64) -> Extent {
        Extent::hole(offset, len)
    }

    #[test]
    fn names_follow_device_mapper() {
        assert_eq!(dm_name("shelf-vg", "tp"), "shelf--vg-tp");
        assert_eq!(pool_target("vg0", "my-tp"), "vg0-my--tp-tpool");
        assert_eq!(metadata_device("vg0", "tp"), "/dev/mapper/vg0-tp_tmeta");
        assert_eq!(
            delta("/dev/mapper/vg0-tp_tmeta", 1, 2).display(),
            "thin_delta --metadata-snap --snap1 1 --snap2 2 /dev/mapper/vg0-tp_tmeta"
        );
        assert_eq!(
            pool_message("vg0-tp-tpool", "reserve_metadata_snap").display(),
            "dmsetup message vg0-tp-tpool 0 reserve_metadata_snap"
        );
        assert_eq!(
            dump("/m", 7).display(),
            "thin_dump --metadata-snap --dev-id 7 /m"
        );
    }

    /// The metadata of tests/fixtures/lvm/thin/restored-from.xml (restored with
    /// thin_restore): device 2 is device 1 with blocks 40-49 rewritten, 90-99 discarded,
    /// and 150-159 and 170 written.
    #[test]
    fn reads_recorded_delta_output_terse_and_verbose() {
        let want = vec![
            (Change::Same, 0, 40),
            (Change::Different, 40, 10),
            (Change::Same, 50, 40),
            (Change::LeftOnly, 90, 10),
            (Change::RightOnly, 150, 10),
            (Change::RightOnly, 170, 1),
        ];
        for text in [DELTA, VERBOSE] {
            let r = parse_delta(text, 1, 2, 100).unwrap();
            assert_eq!(r.block_bytes, 64 << 10);
            assert_eq!(r.ranges, want);
        }
        let b = 64u64 << 10;
        let r = parse_delta(DELTA, 1, 2, 100).unwrap();
        assert_eq!(
            extents(&r, 100 << 20, 1 << 30).unwrap(),
            vec![
                data(40 * b, 10 * b),
                hole(90 * b, 10 * b),
                data(150 * b, 10 * b),
                data(170 * b, b),
            ]
        );
        // Cut at the snapshot's size: what lies past it is not sent.
        assert_eq!(
            extents(&r, 95 * b, 95 * b).unwrap(),
            vec![data(40 * b, 10 * b), hole(90 * b, 5 * b)]
        );
        assert!(parse_delta(DELTA, 1, 3, 100).is_err(), "another pair");
        assert!(parse_delta(DELTA, 1, 2, 3).is_err(), "too many ranges");
    }

    #[test]
    fn reads_recorded_dump_output_and_refuses_a_missing_device() {
        let r = parse_dump(DUMP, 2, 100).unwrap();
        assert_eq!(
            r.ranges,
            vec![
                (Change::RightOnly, 0, 90),
                (Change::RightOnly, 150, 10),
                (Change::RightOnly, 170, 1)
            ]
        );
        let b = 64u64 << 10;
        assert_eq!(
            extents(&r, 0, 1 << 30).unwrap(),
            vec![data(0, 90 * b), data(150 * b, 10 * b), data(170 * b, b)]
        );
        let e = parse_dump(MISSING, 9, 100).unwrap_err();
        assert!(e.contains("no thin device 9"), "{e}");
        assert!(parse_dump(DUMP, 3, 100).is_err());
    }

    /// Recorded by the VM tier (tests/vm/send.sh) on the live thin pool, through its
    /// reserved metadata snapshot: sx1 (16 MiB at 0 and 4 MiB at 100 MiB written) is thin
    /// device 2, sx2 (then 2 MiB written at 50 MiB and the 4 MiB discarded) device 3.
    #[test]
    fn reads_the_live_pools_output() {
        let mib = 1u64 << 20;
        let r = parse_delta(LIVE_DELTA, 2, 3, 100).unwrap();
        assert_eq!(
            extents(&r, 256 * mib, 256 * mib).unwrap(),
            vec![data(50 * mib, 2 * mib), hole(100 * mib, 4 * mib)]
        );
        let d = parse_dump(LIVE_DUMP, 2, 100).unwrap();
        assert_eq!(
            extents(&d, 0, 256 * mib).unwrap(),
            vec![data(0, 16 * mib), data(100 * mib, 4 * mib)]
        );
    }

    /// Past the base's size every block the new snapshot maps is sent, `same` ones too:
    /// the base's LV (whole extents) can hold data past the base's size, which the base's
    /// stream never carried, and a grown share's snapshot shares those blocks with it.
    #[test]
    fn blocks_past_the_bases_size_are_sent_even_when_shared() {
        let r = Ranges {
            block_bytes: 4096,
            ranges: vec![
                (Change::Same, 0, 10),
                (Change::LeftOnly, 10, 2),
                (Change::Different, 12, 2),
            ],
        };
        // Base of 5.5 blocks: its tail block (5) and everything after it mapped are data.
        let base = 5 * 4096 + 2048;
        assert_eq!(
            extents(&r, base, 20 * 4096).unwrap(),
            vec![
                data(base, 10 * 4096 - base),
                hole(10 * 4096, 2 * 4096),
                data(12 * 4096, 2 * 4096),
            ]
        );
        // The same ranges over a base as large as the snapshot: only the changes.
        assert_eq!(
            extents(&r, 20 * 4096, 20 * 4096).unwrap(),
            vec![hole(10 * 4096, 2 * 4096), data(12 * 4096, 2 * 4096)]
        );
    }

    #[test]
    fn refuses_malformed_output() {
        for bad in [
            "",
            "<superblock>",
            r#"<superblock data_block_size="0"><diff left="1" right="2"></diff></superblock>"#,
            r#"<superblock data_block_size="128"></superblock>"#,
            r#"<superblock data_block_size="128"><diff left="1" right="2"><same begin="x" length="1"/></diff></superblock>"#,
            r#"<superblock data_block_size="128"><diff left="1" right="2"><same begin="5" length="1"/><different begin="2" length="1"/></diff></superblock>"#,
            r#"<superblock data_block_size="128"><diff left="1" right="2"><bogus/></diff></superblock>"#,
            r#"<superblock data_block_size="128"><diff left="1" right="2"><same begin="1" length="1"</superblock>"#,
        ] {
            assert!(parse_delta(bad, 1, 2, 10).is_err(), "{bad}");
        }
        // Cut at an element's end: every element parses, but ranges may be missing.
        let cut = &DELTA[..DELTA.find("<left_only").unwrap()];
        assert!(parse_delta(cut, 1, 2, 10)
            .unwrap_err()
            .contains("ends before"));
        let cut = &DUMP[..DUMP.find("</device>").unwrap()];
        assert!(parse_dump(cut, 2, 10).unwrap_err().contains("ends before"));
        let huge = r#"<superblock data_block_size="128"><diff left="1" right="2"><different begin="18446744073709551000" length="1"/></diff></superblock>"#;
        let r = parse_delta(huge, 1, 2, 10).unwrap();
        assert!(extents(&r, 0, u64::MAX).is_err());
    }
}
