//! What a stream must carry: the extents of a snapshot, or what changed between a base
//! snapshot and a newer one, from the two files' extent maps (FIEMAP on XFS).
//!
//! On a reflink filesystem a snapshot is a clone of its share, and the share's later
//! writes go to new blocks (copy on write), so a range of the new snapshot that maps to
//! the same physical address as the same range of the base holds the same bytes: shared
//! blocks are never written in place. Comparing the two maps costs O(extents of both),
//! never a read of the data. docs/replication.md §3 records how this was checked on XFS.
//!
//! Pure: the maps come in as [`Mapped`] lists; no I/O.

use super::format::{Extent, ExtentKind, MAX_EXTENTS};

pub use crate::sys::fiemap::Mapped;

/// What one elementary range of a map is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Hole,
    /// Mapped: the physical address of the range's first byte, and whether comparable.
    Data(u64, bool),
}

/// The state of `map` at `at` and where that state ends, advancing `i` past extents
/// that end at or before `at`. `map` is sorted and non-overlapping.
fn state(map: &[Mapped], i: &mut usize, at: u64, limit: u64) -> (At, u64) {
    while *i < map.len() && map[*i].logical + map[*i].len <= at {
        *i += 1;
    }
    match map.get(*i) {
        Some(m) if m.logical <= at => (
            At::Data(m.physical + (at - m.logical), m.comparable),
            (m.logical + m.len).min(limit),
        ),
        Some(m) => (At::Hole, m.logical.min(limit)),
        None => (At::Hole, limit),
    }
}

/// The extents to send for `new` (of `size` bytes) over `base` (of `base_size` bytes;
/// an empty map and 0 for a full stream): a data extent for every range of `new` not
/// shared with `base`, a hole extent for every range allocated in `base` and not in
/// `new`. Adjacent extents of one kind are merged; past [`MAX_EXTENTS`] the nearest ones
/// are coalesced into data (the bytes between are then sent too).
pub fn changed_extents(base: &[Mapped], base_size: u64, new: &[Mapped], size: u64) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::new();
    let (mut bi, mut ni) = (0, 0);
    let mut at = 0;
    while at < size {
        let (n, n_end) = state(new, &mut ni, at, size);
        let (b, b_end) = if at < base_size {
            state(base, &mut bi, at, base_size)
        } else {
            (At::Hole, size)
        };
        let end = n_end.min(b_end).max(at + 1).min(size);
        let kind = match (n, b) {
            (At::Data(p, true), At::Data(q, true)) if p == q => None,
            (At::Data(..), _) => Some(ExtentKind::Data),
            (At::Hole, At::Data(..)) => Some(ExtentKind::Hole),
            (At::Hole, At::Hole) => None,
        };
        if let Some(kind) = kind {
            push_merged(&mut out, kind, at, end);
        }
        at = end;
    }
    coalesce(out, MAX_EXTENTS as usize)
}

/// Append an extent of `kind` over `at..end` to `out` (sorted), merged into the last one
/// when that is of the same kind and ends at `at`; nothing for an empty range.
pub fn push_merged(out: &mut Vec<Extent>, kind: ExtentKind, at: u64, end: u64) {
    if at >= end {
        return;
    }
    match out.last_mut() {
        Some(l) if l.kind == kind && l.end() == at => l.len = end - l.offset,
        _ => out.push(Extent {
            kind,
            offset: at,
            len: end - at,
        }),
    }
}

/// Merge the closest extents into data until at most `max` remain.
pub fn coalesce(mut extents: Vec<Extent>, max: usize) -> Vec<Extent> {
    let mut gap = 4096u64;
    while extents.len() > max {
        let mut out: Vec<Extent> = Vec::with_capacity(extents.len());
        for e in extents {
            match out.last_mut() {
                Some(l) if e.offset - l.end() <= gap => {
                    l.kind = ExtentKind::Data;
                    l.len = e.end() - l.offset;
                }
                _ => out.push(e),
            }
        }
        extents = out;
        gap = gap.saturating_mul(4);
    }
    extents
}

/// The bytes of data a list of extents carries.
pub fn data_bytes(extents: &[Extent]) -> u64 {
    extents
        .iter()
        .filter(|e| e.kind == ExtentKind::Data)
        .map(|e| e.len)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(logical: u64, physical: u64, len: u64) -> Mapped {
        Mapped {
            logical,
            physical,
            len,
            comparable: true,
        }
    }
    fn data(offset: u64, len: u64) -> Extent {
        Extent::data(offset, len)
    }
    fn hole(offset: u64, len: u64) -> Extent {
        Extent::hole(offset, len)
    }

    #[test]
    fn a_full_stream_is_the_allocated_ranges() {
        let new = [m(0, 1000, 10), m(10, 5000, 10), m(50, 20, 5)];
        assert_eq!(
            changed_extents(&[], 0, &new, 100),
            vec![data(0, 20), data(50, 5)]
        );
    }

    #[test]
    fn shared_ranges_are_left_out_even_when_split_differently() {
        // Base: one extent. New: the same blocks, split around a rewritten middle.
        let base = [m(0, 1000, 100)];
        let new = [m(0, 1000, 40), m(40, 9000, 10), m(50, 1050, 50)];
        assert_eq!(changed_extents(&base, 100, &new, 100), vec![data(40, 10)]);
        // And the other way: base split, new merged over the same blocks.
        let base = [m(0, 1000, 40), m(40, 1040, 60)];
        assert_eq!(changed_extents(&base, 100, &[m(0, 1000, 100)], 100), vec![]);
    }

    #[test]
    fn a_range_that_became_a_hole_is_sent_as_a_hole_and_holes_stay_holes() {
        let base = [m(0, 1000, 100)];
        let new = [m(0, 1000, 30), m(60, 1060, 40)];
        assert_eq!(changed_extents(&base, 100, &new, 100), vec![hole(30, 30)]);
        // A hole in both sends nothing; growth past the base's size that is a hole too.
        let base = [m(0, 1000, 10)];
        assert_eq!(changed_extents(&base, 100, &[m(0, 1000, 10)], 200), vec![]);
    }

    #[test]
    fn moved_blocks_and_uncomparable_extents_count_as_changed() {
        let base = [m(0, 1000, 10)];
        assert_eq!(
            changed_extents(&base, 10, &[m(0, 2000, 10)], 10),
            vec![data(0, 10)]
        );
        let mut delalloc = m(0, 1000, 10);
        delalloc.comparable = false;
        assert_eq!(
            changed_extents(&base, 10, &[delalloc], 10),
            vec![data(0, 10)]
        );
        // The same physical block at another offset is not the same data there.
        assert_eq!(
            changed_extents(&[m(0, 1000, 10)], 20, &[m(10, 1000, 10)], 20),
            vec![hole(0, 10), data(10, 10)]
        );
    }

    #[test]
    fn extents_past_the_size_are_cut() {
        assert_eq!(
            changed_extents(&[], 0, &[m(0, 0, 4096)], 100),
            vec![data(0, 100)]
        );
    }

    #[test]
    fn coalescing_bounds_the_count() {
        let many: Vec<Extent> = (0..100).map(|i| data(i * 8192, 10)).collect();
        let out = coalesce(many, 10);
        assert!(out.len() <= 10);
        assert_eq!(out[0].offset, 0);
        assert_eq!(out.last().unwrap().end(), 99 * 8192 + 10);
    }
}
