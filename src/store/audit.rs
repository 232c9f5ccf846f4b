//! The audit log and the answers kept for idempotency keys.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::error::Result;

/// Audit entries kept; older ones are dropped as new ones are written.
pub const AUDIT_KEEP: i64 = 100_000;
/// Seconds an idempotency key's answer is kept.
pub const KEY_TTL_SECS: i64 = 24 * 3600;

/// One audited request.
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
    /// The object the request named.
    pub target: String,
    /// `ok`, or the error code.
    pub outcome: String,
    /// The error message (empty on success). Never holds a secret: error messages do not.
    pub message: String,
    /// The idempotency key, if one was sent.
    pub key: Option<String>,
}

/// Write audit entries (one transaction for the batch) and drop the oldest beyond
/// [`AUDIT_KEEP`].
pub fn insert_audit(c: &Connection, entries: &[AuditEntry]) -> Result<()> {
    let mut stmt = c.prepare_cached(
        "INSERT INTO audit (at_ms, uid, gid, pid, role, op, target, outcome, message, key)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for e in entries {
        stmt.execute(params![
            e.at_ms, e.uid, e.gid, e.pid, e.role, e.op, e.target, e.outcome, e.message, e.key
        ])?;
    }
    c.execute(
        "DELETE FROM audit WHERE seq <= (SELECT max(seq) FROM audit) - ?1",
        [AUDIT_KEEP],
    )?;
    Ok(())
}

/// Audit entries: after `since` oldest first, else the newest first; filtered by op/uid.
pub fn list_audit(
    c: &Connection,
    since: Option<u64>,
    limit: u32,
    op: Option<&str>,
    uid: Option<u32>,
) -> Result<Vec<AuditEntry>> {
    let order = if since.is_some() { "ASC" } else { "DESC" };
    let mut stmt = c.prepare(&format!(
        "SELECT seq, at_ms, uid, gid, pid, role, op, target, outcome, message, key FROM audit
         WHERE seq > ?1 AND (?2 IS NULL OR op = ?2) AND (?3 IS NULL OR uid = ?3)
         ORDER BY seq {order} LIMIT ?4"
    ))?;
    let rows = stmt.query_map(params![since.unwrap_or(0) as i64, op, uid, limit], |r| {
        Ok(AuditEntry {
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
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The kept answer for an idempotency key: `(op, digest, reply)`.
pub fn get_keyed_reply(c: &Connection, key: &str) -> Result<Option<(String, String, Vec<u8>)>> {
    let cutoff = crate::store::now() - KEY_TTL_SECS;
    Ok(c.query_row(
        "SELECT op, digest, reply FROM idempotency WHERE key = ?1 AND at >= ?2",
        params![key, cutoff],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()?)
}

/// Keep the answer to a keyed request, and forget answers older than [`KEY_TTL_SECS`].
pub fn put_keyed_reply(
    c: &Connection,
    key: &str,
    op: &str,
    digest: &str,
    reply: &[u8],
) -> Result<()> {
    let now = crate::store::now();
    c.execute(
        "DELETE FROM idempotency WHERE at < ?1",
        [now - KEY_TTL_SECS],
    )?;
    c.execute(
        "INSERT OR REPLACE INTO idempotency (key, op, digest, reply, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![key, op, digest, reply, now],
    )?;
    Ok(())
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

    #[test]
    fn audit_round_trips_in_both_orders() {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::migrate(&mut c).unwrap();
        insert_audit(&c, &[entry("share.create", 0), entry("share.delete", 5)]).unwrap();
        let newest = list_audit(&c, None, 10, None, None).unwrap();
        assert_eq!(newest[0].op, "share.delete");
        let after = list_audit(&c, Some(newest[1].seq), 10, None, None).unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(list_audit(&c, None, 10, None, Some(5)).unwrap().len(), 1);
        assert_eq!(
            list_audit(&c, None, 10, Some("share.create"), None).unwrap()[0].uid,
            0
        );
    }

    #[test]
    fn keyed_replies_are_kept() {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::migrate(&mut c).unwrap();
        assert!(get_keyed_reply(&c, "k").unwrap().is_none());
        put_keyed_reply(&c, "k", "share.create", "d", b"x").unwrap();
        let (op, digest, reply) = get_keyed_reply(&c, "k").unwrap().unwrap();
        assert_eq!(
            (op.as_str(), digest.as_str(), reply.as_slice()),
            ("share.create", "d", &b"x"[..])
        );
    }
}
