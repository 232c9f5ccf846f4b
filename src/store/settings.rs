//! Durable flags of the database itself (the `settings` table, schema version 9).

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::Result;

/// Set once the one-time move of an earlier shelf's `user.shelf.*` stamps to
/// `trusted.shelf.*` has made a complete pass (or, in a database created by a shelf that
/// stamps in `trusted.shelf.*`, at creation: there is nothing to move). From then on
/// `user.shelf.*` is never adopted (docs/security.md §2).
pub const LEGACY_STAMPS_MOVED: &str = "legacy_stamps_moved";

/// The value of setting `key`, if it is set.
pub fn get_setting(c: &Connection, key: &str) -> Result<Option<String>> {
    Ok(
        c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?,
    )
}

/// Set `key` to `value`.
pub fn set_setting(c: &Connection, key: &str, value: &str) -> Result<()> {
    c.execute(
        "INSERT INTO settings (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Unset `key`.
pub fn clear_setting(c: &Connection, key: &str) -> Result<()> {
    c.execute("DELETE FROM settings WHERE key = ?1", [key])?;
    Ok(())
}
