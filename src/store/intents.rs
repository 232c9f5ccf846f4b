//! The intent journal: the `intents` table (see `engine::recover`).

use rusqlite::{params, Connection};

use crate::error::Result;

/// An unfinished step recorded before it was taken (see `engine::recover`).
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// Row id.
    pub id: i64,
    /// What is being done (`share.resize`, ...).
    pub op: String,
    /// The object's id.
    pub object: String,
    /// The step's parameters, JSON.
    pub data: serde_json::Value,
}

/// Record an intent; returns its id.
pub fn insert_intent(
    c: &Connection,
    op: &str,
    object: &str,
    data: &serde_json::Value,
) -> Result<i64> {
    c.execute(
        "INSERT INTO intents (op, object, data, started_at) VALUES (?1, ?2, ?3, ?4)",
        params![op, object, data.to_string(), crate::store::now()],
    )?;
    Ok(c.last_insert_rowid())
}

/// Forget a finished intent.
pub fn delete_intent(c: &Connection, id: i64) -> Result<()> {
    c.execute("DELETE FROM intents WHERE id = ?1", [id])?;
    Ok(())
}

/// Every unfinished intent, oldest first.
pub fn list_intents(c: &Connection) -> Result<Vec<Intent>> {
    let mut stmt = c.prepare("SELECT id, op, object, data FROM intents ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        let data: String = r.get(3)?;
        Ok(Intent {
            id: r.get(0)?,
            op: r.get(1)?,
            object: r.get(2)?,
            data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
