//! Queries on the `exports` table.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::queries::{given_only, is_unique_violation};
use crate::error::{Error, Result};
use crate::model::ShareState;

/// A stored export row, with its secret (the engine never sends the secret in `export.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRow {
    /// The export (attached clients filled in).
    pub export: crate::model::Export,
    /// CHAP secret, for iSCSI.
    pub chap_secret: Option<String>,
}

const EXPORT_COLS: &str = "e.id, e.share_id, s.name, e.protocol, e.driver, e.state, e.options, \
                           e.target, e.tid, e.fsid, e.chap_user, e.chap_secret, e.created_at";

fn export_from_row(r: &Row<'_>) -> rusqlite::Result<ExportRow> {
    use crate::model::{Driver, Export, Protocol};
    let protocol: String = r.get(3)?;
    let driver: String = r.get(4)?;
    let state: String = r.get(5)?;
    let options: String = r.get(6)?;
    Ok(ExportRow {
        export: Export {
            id: r.get(0)?,
            share: r.get(1)?,
            share_name: r.get(2)?,
            protocol: Protocol::parse(&protocol).unwrap_or(Protocol::Nfs),
            driver: Driver::parse(&driver).unwrap_or(Driver::Kernel),
            state: ShareState::parse(&state).unwrap_or(ShareState::Error),
            options: serde_json::from_str(&options).unwrap_or_default(),
            target: r.get(7)?,
            tid: r.get(8)?,
            fsid: r.get(9)?,
            chap_user: r.get(10)?,
            attached: Vec::new(),
            created_at: r.get(12)?,
        },
        chap_secret: r.get(11)?,
    })
}

/// Fill in each export's attached clients.
fn with_attached(c: &Connection, mut rows: Vec<ExportRow>) -> Result<Vec<ExportRow>> {
    for row in &mut rows {
        let mut stmt = c.prepare_cached(
            "SELECT client, mode FROM attachments WHERE share_id = ?1 AND protocol = ?2 ORDER BY created_at, rowid",
        )?;
        let attached = stmt.query_map(
            params![row.export.share, row.export.protocol.as_str()],
            |r| {
                let mode: String = r.get(1)?;
                Ok(crate::model::Attached {
                    client: r.get(0)?,
                    mode: if mode == "ro" {
                        crate::model::Access::Ro
                    } else {
                        crate::model::Access::Rw
                    },
                })
            },
        )?;
        row.export.attached = attached.collect::<rusqlite::Result<_>>()?;
    }
    Ok(rows)
}

/// Insert an export row. A second export of the same protocol on a share is
/// `already_exists`.
pub fn insert_export(c: &Connection, e: &crate::model::Export, secret: Option<&str>) -> Result<()> {
    let options = serde_json::to_string(&e.options).expect("options serialise");
    c.execute(
        "INSERT INTO exports (id, share_id, protocol, driver, state, options, target, tid, fsid,
                              chap_user, chap_secret, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            e.id,
            e.share,
            e.protocol.as_str(),
            e.driver.as_str(),
            e.state.as_str(),
            options,
            e.target,
            e.tid,
            e.fsid,
            e.chap_user,
            secret,
            e.created_at
        ],
    )
    .map_err(|err| {
        if is_unique_violation(&err) {
            Error::AlreadyExists(format!(
                "share {} already has an {} export",
                e.share_name,
                e.protocol.as_str()
            ))
        } else {
            err.into()
        }
    })?;
    Ok(())
}

/// Exports, optionally of one share and/or one driver.
pub fn list_exports(
    c: &Connection,
    share_id: Option<&str>,
    driver: Option<crate::model::Driver>,
) -> Result<Vec<ExportRow>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {EXPORT_COLS} FROM exports e JOIN shares s ON s.id = e.share_id
         WHERE {} ORDER BY s.name, e.protocol",
        given_only(&[
            (share_id.is_some(), "e.share_id = ?1"),
            (driver.is_some(), "e.driver = ?2")
        ])
    ))?;
    let rows = stmt
        .query_map(
            params![share_id, driver.map(|d| d.as_str())],
            export_from_row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    with_attached(c, rows)
}

/// The export of a share for a protocol.
pub fn get_export(
    c: &Connection,
    share_id: &str,
    protocol: crate::model::Protocol,
) -> Result<Option<ExportRow>> {
    let row = c
        .query_row(
            &format!(
                "SELECT {EXPORT_COLS} FROM exports e JOIN shares s ON s.id = e.share_id
                 WHERE e.share_id = ?1 AND e.protocol = ?2"
            ),
            params![share_id, protocol.as_str()],
            export_from_row,
        )
        .optional()?;
    Ok(with_attached(c, row.into_iter().collect())?.pop())
}

/// An export by id.
pub fn get_export_by_id(c: &Connection, id: &str) -> Result<Option<ExportRow>> {
    let row = c
        .query_row(
            &format!("SELECT {EXPORT_COLS} FROM exports e JOIN shares s ON s.id = e.share_id WHERE e.id = ?1"),
            [id],
            export_from_row,
        )
        .optional()?;
    Ok(with_attached(c, row.into_iter().collect())?.pop())
}

/// Set an export's state.
pub fn set_export_state(c: &Connection, id: &str, state: ShareState) -> Result<()> {
    c.execute(
        "UPDATE exports SET state = ?2 WHERE id = ?1",
        params![id, state.as_str()],
    )?;
    Ok(())
}

/// Remove an export row.
pub fn delete_export_row(c: &Connection, id: &str) -> Result<()> {
    c.execute("DELETE FROM exports WHERE id = ?1", [id])?;
    Ok(())
}

/// The next free tgt target id and NFS fsid (both start at 1 and are never reused while
/// the export that holds them exists).
pub fn next_ids(c: &Connection) -> Result<(u32, u32)> {
    let (tid, fsid): (i64, i64) = c.query_row(
        "SELECT coalesce(max(tid), 0) + 1, coalesce(max(fsid), 1000) + 1 FROM exports",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((tid as u32, fsid as u32))
}
