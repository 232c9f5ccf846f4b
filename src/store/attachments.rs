//! Queries on the `attachments` table.

use rusqlite::{params, Connection, Row};

use super::exports::delete_export_row;
use super::queries::given_only;
use crate::error::Result;

const ATTACH_COLS: &str = "a.id, a.share_id, s.name, a.protocol, a.client, a.host, a.ip, a.initiator, a.mode, a.created_at";

fn attachment_from_row(r: &Row<'_>) -> rusqlite::Result<crate::model::Attachment> {
    let protocol: String = r.get(3)?;
    let mode: String = r.get(8)?;
    Ok(crate::model::Attachment {
        id: r.get(0)?,
        share: r.get(1)?,
        share_name: r.get(2)?,
        protocol: crate::model::Protocol::parse(&protocol).unwrap_or(crate::model::Protocol::Nfs),
        client: r.get(4)?,
        host: r.get(5)?,
        ip: r.get(6)?,
        initiator: r.get(7)?,
        mode: if mode == "ro" {
            crate::model::Access::Ro
        } else {
            crate::model::Access::Rw
        },
        created_at: r.get(9)?,
    })
}

/// Insert an attachment.
pub fn insert_attachment(c: &Connection, a: &crate::model::Attachment) -> Result<()> {
    c.execute(
        "INSERT INTO attachments (id, share_id, protocol, client, host, ip, initiator, mode, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            a.id,
            a.share,
            a.protocol.as_str(),
            a.client,
            a.host,
            a.ip,
            a.initiator,
            a.mode.as_str(),
            a.created_at
        ],
    )?;
    Ok(())
}

/// Attachments, optionally of one share.
pub fn list_attachments(
    c: &Connection,
    share_id: Option<&str>,
) -> Result<Vec<crate::model::Attachment>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {ATTACH_COLS} FROM attachments a JOIN shares s ON s.id = a.share_id
         WHERE {} ORDER BY s.name, a.created_at, a.rowid",
        given_only(&[(share_id.is_some(), "a.share_id = ?1")])
    ))?;
    let rows = stmt.query_map(params![share_id], attachment_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Remove an attachment row.
pub fn delete_attachment_row(c: &Connection, id: &str) -> Result<()> {
    c.execute("DELETE FROM attachments WHERE id = ?1", [id])?;
    Ok(())
}

/// Remove an export row together with the share's attachments over its protocol.
pub fn delete_export_and_attachments(
    c: &Connection,
    export_id: &str,
    share_id: &str,
    protocol: crate::model::Protocol,
) -> Result<()> {
    c.execute(
        "DELETE FROM attachments WHERE share_id = ?1 AND protocol = ?2",
        params![share_id, protocol.as_str()],
    )?;
    delete_export_row(c, export_id)
}
