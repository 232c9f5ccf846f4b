//! The audit log: who asked for what and what came of it. Changes and refusals are kept
//! apart (refusals aggregated per uid, role, op and minute), each with its own retention,
//! and `audit_totals` counts what was recorded, aggregated and dropped.

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::error::Result;

/// State-change entries kept; older ones are dropped as new ones are written. Refusals
/// never count against this: they have their own retention ([`KEEP_REFUSALS`]).
pub const KEEP_CHANGES: u64 = 100_000;
/// Refusal entries kept (each aggregates a peer's refusals of one op in one minute).
pub const KEEP_REFUSALS: u64 = 100_000;
/// Refusals of one uid, role and op within this many milliseconds share one entry.
pub const REFUSAL_BUCKET_MS: i64 = 60_000;

/// The outcome that makes an entry a refusal.
pub const REFUSED: &str = "permission_denied";

/// One audited request, as the server records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Sequence number (assigned when written; 0 before).
    pub seq: u64,
    /// When the answer was given, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The peer's uid, gid and pid (`SO_PEERCRED`).
    pub uid: u32,
    /// The peer's gid.
    pub gid: u32,
    /// The peer's pid.
    pub pid: i32,
    /// The role the peer had.
    pub role: String,
    /// The op.
    pub op: String,
    /// The object the request named. The peer chose this text: it is stored exactly and
    /// escaped when printed (`shelfctl audit`).
    pub target: String,
    /// `ok`, or the error code.
    pub outcome: String,
    /// The error message (empty on success). Never holds a secret: error messages do not.
    pub message: String,
    /// The idempotency key, if one was sent.
    pub key: Option<String>,
}

/// The two kinds of entries, kept apart so that one cannot evict the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditKind {
    /// A state-changing request the peer's role allowed (whatever its outcome).
    Change,
    /// A request refused with `permission_denied`; aggregated per uid, role, op and minute.
    Refusal,
}

impl AuditKind {
    /// The name stored and sent (`kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Change => "change",
            AuditKind::Refusal => "refusal",
        }
    }
}

impl AuditEntry {
    /// Which kind of entry this is: a refusal by its outcome, else a change.
    pub fn kind(&self) -> AuditKind {
        if self.outcome == REFUSED {
            AuditKind::Refusal
        } else {
            AuditKind::Change
        }
    }

    /// A refusal of `op` to a peer (for refusals that are not a parsed request's, e.g. a
    /// connection refused for want of a role: `op` is then `"connect"`). Refusals of one
    /// uid, role and op in one minute are kept as one entry with a count.
    pub fn refusal(uid: u32, gid: u32, pid: i32, role: &str, op: &str, message: &str) -> Self {
        AuditEntry {
            seq: 0,
            at_ms: crate::store::now_ms(),
            uid,
            gid,
            pid,
            role: role.to_string(),
            op: op.to_string(),
            target: String::new(),
            outcome: REFUSED.to_string(),
            message: message.chars().take(1000).collect(),
            key: None,
        }
    }
}

/// The audit entry of one state-changing request while the request runs. The operation's
/// final transaction takes it ([`crate::store::Store::write_recorded`]) and writes it as
/// `ok` in the same commit as the change, so an acknowledged change costs no commit of its
/// own; an entry no transaction took is written once the outcome is known.
#[derive(Debug, Default)]
pub struct AuditSlot(std::sync::Mutex<Slot>);

#[derive(Debug, Default)]
enum Slot {
    /// Nothing to record (the request is not audited, or its entry was taken).
    #[default]
    Empty,
    /// The entry, waiting for a transaction to take it.
    Waiting(Box<AuditEntry>),
    /// Written, with this sequence number.
    Written(u64),
}

impl AuditSlot {
    /// A slot holding `entry`, to be written with the operation's final commit.
    pub fn new(entry: AuditEntry) -> AuditSlot {
        AuditSlot(std::sync::Mutex::new(Slot::Waiting(Box::new(entry))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        // A panic while holding the lock leaves a valid state: carry on with it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take the waiting entry, to write it in a transaction.
    pub(crate) fn take(&self) -> Option<AuditEntry> {
        let mut s = self.lock();
        match std::mem::take(&mut *s) {
            Slot::Waiting(e) => Some(*e),
            other => {
                *s = other;
                None
            }
        }
    }

    /// The transaction that took the entry did not commit: it waits again.
    pub(crate) fn give_back(&self, entry: AuditEntry) {
        *self.lock() = Slot::Waiting(Box::new(entry));
    }

    /// The entry was committed as `seq`.
    pub(crate) fn set_written(&self, seq: u64) {
        *self.lock() = Slot::Written(seq);
    }

    /// The sequence number of the entry, once a transaction has written it.
    pub fn written(&self) -> Option<u64> {
        match *self.lock() {
            Slot::Written(seq) => Some(seq),
            _ => None,
        }
    }
}

/// One entry of the log as `audit.list` returns it: the first request it records, plus
/// how many requests it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    /// Sequence number.
    pub seq: u64,
    /// When the (first) answer was given, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The peer's uid.
    pub uid: u32,
    /// The peer's gid (of the first request).
    pub gid: u32,
    /// The peer's pid (of the first request).
    pub pid: i32,
    /// The role the peer had.
    pub role: String,
    /// The op.
    pub op: String,
    /// The object the (first) request named, exactly as sent.
    pub target: String,
    /// `ok`, or the error code.
    pub outcome: String,
    /// The (first) error message.
    pub message: String,
    /// The idempotency key, if one was sent.
    pub key: Option<String>,
    /// `change` or `refusal`.
    pub kind: String,
    /// How many requests this entry stands for (1 for a change; refusals aggregate).
    pub count: u64,
    /// When the last request it stands for was answered.
    pub last_at_ms: i64,
}

/// What one kind of entry has cost the log: `audit.list {totals: true}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditTotals {
    /// Entries kept now.
    pub entries: u64,
    /// Requests recorded since the log began counting (schema version 8).
    pub requests: u64,
    /// Requests folded into an existing entry instead of getting their own.
    pub aggregated: u64,
    /// Entries dropped by retention (the oldest of their kind).
    pub dropped_entries: u64,
    /// Requests those dropped entries stood for.
    pub dropped_requests: u64,
}

/// How many entries of each kind are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditKeep {
    /// State changes kept.
    pub changes: u64,
    /// Refusal entries kept.
    pub refusals: u64,
}

impl Default for AuditKeep {
    fn default() -> Self {
        AuditKeep {
            changes: KEEP_CHANGES,
            refusals: KEEP_REFUSALS,
        }
    }
}

/// Refusals of one batch folded by (uid, role, op, minute): the first entry, the count and
/// the last time.
type Folded = Vec<((u32, String, String, i64), (AuditEntry, u64, i64))>;

fn fold_refusals<'a>(entries: impl Iterator<Item = &'a AuditEntry>) -> Folded {
    let mut out: Folded = Vec::new();
    let mut index = std::collections::HashMap::new();
    for e in entries {
        let key = (
            e.uid,
            e.role.clone(),
            e.op.clone(),
            e.at_ms.div_euclid(REFUSAL_BUCKET_MS),
        );
        match index.get(&key) {
            Some(&i) => {
                let (_, (_, n, last)): &mut (_, (AuditEntry, u64, i64)) = &mut out[i];
                *n += 1;
                *last = (*last).max(e.at_ms);
            }
            None => {
                index.insert(key.clone(), out.len());
                out.push((key, (e.clone(), 1, e.at_ms)));
            }
        }
    }
    out
}

/// Write audit entries (call inside one transaction for the batch): changes get a row
/// each, in order; refusals are added to their (uid, role, op, minute) entry; then each
/// kind is cut back to its retention, and the totals follow. Returns the sequence number
/// of the last change written.
pub fn insert_audit(
    c: &Connection,
    entries: &[AuditEntry],
    keep: AuditKeep,
) -> Result<Option<u64>> {
    let mut changes = 0u64;
    let mut last_change = None;
    for e in entries.iter().filter(|e| e.kind() == AuditKind::Change) {
        insert_row(c, e, AuditKind::Change, 1, e.at_ms, None)?;
        last_change = Some(c.last_insert_rowid() as u64);
        changes += 1;
    }
    bump_totals(c, AuditKind::Change, changes, changes, 0)?;
    let folded = fold_refusals(entries.iter().filter(|e| e.kind() == AuditKind::Refusal));
    let (mut new_rows, mut requests, mut aggregated) = (0u64, 0u64, 0u64);
    for ((uid, role, op, bucket), (first, n, last)) in &folded {
        requests += n;
        let grew = c
            .prepare_cached(
                "UPDATE audit SET count = count + ?1, last_at_ms = max(last_at_ms, ?2)
                 WHERE bucket = ?3 AND uid = ?4 AND role = ?5 AND op = ?6",
            )?
            .execute(params![*n as i64, last, bucket, uid, role, op])?;
        if grew == 0 {
            insert_row(c, first, AuditKind::Refusal, *n, *last, Some(*bucket))?;
            new_rows += 1;
            aggregated += n - 1;
        } else {
            aggregated += n;
        }
    }
    bump_totals(c, AuditKind::Refusal, new_rows, requests, aggregated)?;
    enforce_retention(c, AuditKind::Change, keep.changes)?;
    enforce_retention(c, AuditKind::Refusal, keep.refusals)?;
    Ok(last_change)
}

/// Give the entry `seq` (a change recorded with its operation's final commit as `ok`)
/// the outcome the request ended with after all: a step after that commit failed.
pub fn set_audit_outcome(c: &Connection, seq: u64, outcome: &str, message: &str) -> Result<()> {
    c.execute(
        "UPDATE audit SET outcome = ?2, message = ?3 WHERE seq = ?1",
        params![seq as i64, outcome, message],
    )?;
    Ok(())
}

/// One new row: `count` requests, the last at `last`; refusals carry their minute.
fn insert_row(
    c: &Connection,
    e: &AuditEntry,
    kind: AuditKind,
    count: u64,
    last: i64,
    bucket: Option<i64>,
) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO audit (at_ms, uid, gid, pid, role, op, target, outcome, message, key,
                            kind, count, last_at_ms, bucket)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        e.at_ms,
        e.uid,
        e.gid,
        e.pid,
        e.role,
        e.op,
        e.target,
        e.outcome,
        e.message,
        e.key,
        kind.as_str(),
        count as i64,
        last,
        bucket
    ])?;
    Ok(())
}

fn bump_totals(
    c: &Connection,
    kind: AuditKind,
    entries: u64,
    requests: u64,
    aggregated: u64,
) -> Result<()> {
    if requests == 0 {
        return Ok(());
    }
    c.prepare_cached(
        "UPDATE audit_totals SET entries = entries + ?1, requests = requests + ?2,
                                 aggregated = aggregated + ?3
         WHERE kind = ?4",
    )?
    .execute(params![
        entries as i64,
        requests as i64,
        aggregated as i64,
        kind.as_str()
    ])?;
    Ok(())
}

/// Drop the oldest entries of `kind` beyond `keep`, counting what was dropped.
fn enforce_retention(c: &Connection, kind: AuditKind, keep: u64) -> Result<()> {
    let kept: i64 = c.query_row(
        "SELECT entries FROM audit_totals WHERE kind = ?1",
        [kind.as_str()],
        |r| r.get(0),
    )?;
    let excess = (kept as u64).saturating_sub(keep);
    if excess == 0 {
        return Ok(());
    }
    let (rows, requests, last): (i64, i64, Option<i64>) = c.query_row(
        "SELECT count(*), coalesce(sum(count), 0), max(seq) FROM
            (SELECT seq, count FROM audit WHERE kind = ?1 ORDER BY seq LIMIT ?2)",
        params![kind.as_str(), excess as i64],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let Some(last) = last else {
        return Ok(());
    };
    c.execute(
        "DELETE FROM audit WHERE kind = ?1 AND seq <= ?2",
        params![kind.as_str(), last],
    )?;
    c.execute(
        "UPDATE audit_totals SET entries = entries - ?1, dropped_entries = dropped_entries + ?1,
                                 dropped_requests = dropped_requests + ?2
         WHERE kind = ?3",
        params![rows, requests, kind.as_str()],
    )?;
    Ok(())
}

/// The totals of each kind: `(changes, refusals)`.
pub fn audit_totals(c: &Connection) -> Result<(AuditTotals, AuditTotals)> {
    let one = |kind: AuditKind| -> Result<AuditTotals> {
        Ok(c.query_row(
            "SELECT entries, requests, aggregated, dropped_entries, dropped_requests
             FROM audit_totals WHERE kind = ?1",
            [kind.as_str()],
            |r| {
                Ok(AuditTotals {
                    entries: r.get::<_, i64>(0)? as u64,
                    requests: r.get::<_, i64>(1)? as u64,
                    aggregated: r.get::<_, i64>(2)? as u64,
                    dropped_entries: r.get::<_, i64>(3)? as u64,
                    dropped_requests: r.get::<_, i64>(4)? as u64,
                })
            },
        )?)
    };
    Ok((one(AuditKind::Change)?, one(AuditKind::Refusal)?))
}

/// Audit entries: after `since` oldest first, else the newest first; filtered by op/uid.
pub fn list_audit(
    c: &Connection,
    since: Option<u64>,
    limit: u32,
    op: Option<&str>,
    uid: Option<u32>,
) -> Result<Vec<AuditRow>> {
    let order = if since.is_some() { "ASC" } else { "DESC" };
    let mut stmt = c.prepare(&format!(
        "SELECT seq, at_ms, uid, gid, pid, role, op, target, outcome, message, key,
                kind, count, coalesce(last_at_ms, at_ms) FROM audit
         WHERE seq > ?1 AND (?2 IS NULL OR op = ?2) AND (?3 IS NULL OR uid = ?3)
         ORDER BY seq {order} LIMIT ?4"
    ))?;
    let rows = stmt.query_map(params![since.unwrap_or(0) as i64, op, uid, limit], |r| {
        Ok(AuditRow {
            seq: r.get::<_, i64>(0)? as u64,
            at_ms: r.get(1)?,
            uid: r.get(2)?,
            gid: r.get(3)?,
            pid: r.get(4)?,
            role: r.get(5)?,
            op: r.get(6)?,
            target: r.get(7)?,
            outcome: r.get(8)?,
            message: r.get(9)?,
            key: r.get(10)?,
            kind: r.get(11)?,
            count: r.get::<_, i64>(12)? as u64,
            last_at_ms: r.get(13)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(op: &str, uid: u32) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at_ms: 1,
            uid,
            gid: 0,
            pid: 9,
            role: "admin".into(),
            op: op.into(),
            target: "v1".into(),
            outcome: "ok".into(),
            message: String::new(),
            key: None,
        }
    }

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::migrate(&mut c).unwrap();
        c
    }

    #[test]
    fn audit_round_trips_in_both_orders() {
        let c = db();
        let keep = AuditKeep::default();
        insert_audit(
            &c,
            &[entry("share.create", 0), entry("share.delete", 5)],
            keep,
        )
        .unwrap();
        let newest = list_audit(&c, None, 10, None, None).unwrap();
        assert_eq!(newest[0].op, "share.delete");
        assert_eq!((newest[0].kind.as_str(), newest[0].count), ("change", 1));
        let after = list_audit(&c, Some(newest[1].seq), 10, None, None).unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(list_audit(&c, None, 10, None, Some(5)).unwrap().len(), 1);
        assert_eq!(
            list_audit(&c, None, 10, Some("share.create"), None).unwrap()[0].uid,
            0
        );
    }

    #[test]
    fn refusals_aggregate_per_peer_op_and_minute_and_never_evict_changes() {
        let c = db();
        let keep = AuditKeep {
            changes: 3,
            refusals: 2,
        };
        insert_audit(
            &c,
            &[entry("share.create", 0), entry("share.delete", 0)],
            keep,
        )
        .unwrap();
        let refusal = |uid: u32, op: &str, at_ms: i64| AuditEntry {
            at_ms,
            ..AuditEntry::refusal(uid, 1, 2, "none", op, "no role")
        };
        // 1000 refusals of one op in one minute, across two batches: one entry.
        let burst: Vec<AuditEntry> = (0..500).map(|i| refusal(7, "hello", 60_000 + i)).collect();
        insert_audit(&c, &burst, keep).unwrap();
        insert_audit(&c, &burst, keep).unwrap();
        let rows = list_audit(&c, None, 10, None, Some(7)).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!((rows[0].count, rows[0].last_at_ms), (1000, 60_499));
        // Refusals of other minutes and ops: the oldest refusal entries go, changes stay.
        let spread: Vec<AuditEntry> = (0..5)
            .map(|m| refusal(7, "share.list", 120_000 + m * 60_000))
            .collect();
        insert_audit(&c, &spread, keep).unwrap();
        let (changes, refusals) = audit_totals(&c).unwrap();
        assert_eq!((changes.entries, changes.dropped_entries), (2, 0));
        assert_eq!(
            (refusals.entries, refusals.requests, refusals.aggregated),
            (2, 1005, 999)
        );
        assert_eq!(
            (refusals.dropped_entries, refusals.dropped_requests),
            (4, 1003)
        );
        assert_eq!(
            list_audit(&c, None, 10, Some("share.delete"), None)
                .unwrap()
                .len(),
            1
        );
        // Changes have their own limit.
        let more: Vec<AuditEntry> = (0..4).map(|_| entry("share.resize", 0)).collect();
        insert_audit(&c, &more, keep).unwrap();
        let (changes, refusals) = audit_totals(&c).unwrap();
        assert_eq!((changes.entries, changes.dropped_entries), (3, 3));
        assert_eq!(refusals.entries, 2);
        let counted: i64 = c
            .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
            .unwrap();
        assert_eq!(counted, 5);
    }
}
