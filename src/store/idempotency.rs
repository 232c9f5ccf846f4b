//! The answers kept for idempotency keys (docs/protocol.md §7.7).

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::Result;

/// Seconds an idempotency key's answer is kept.
pub const KEY_TTL_SECS: i64 = 24 * 3600;

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

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::migrate(&mut c).unwrap();
        c
    }

    #[test]
    fn keyed_replies_are_kept() {
        let c = db();
        assert!(get_keyed_reply(&c, "k").unwrap().is_none());
        put_keyed_reply(&c, "k", "share.create", "d", b"x").unwrap();
        let (op, digest, reply) = get_keyed_reply(&c, "k").unwrap().unwrap();
        assert_eq!(
            (op.as_str(), digest.as_str(), reply.as_slice()),
            ("share.create", "d", &b"x"[..])
        );
    }
}
