//! The image cache's rows and the job log.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::ShareState;

/// A cached base image: raw, in a pool, cloned (reflinked) into new shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    /// UUID.
    pub id: String,
    /// Name, unique within the pool.
    pub name: String,
    /// The pool holding the raw base.
    pub pool: String,
    /// Virtual size in bytes (the smallest share made from it).
    pub size: u64,
    /// The format it was imported from (`raw`, `qcow2`, `vmdk`, ...).
    pub source_format: String,
    /// The verified checksum (`md5:<hex>` or `sha256:<hex>`), if one was given.
    pub checksum: Option<String>,
    /// `creating` while importing, then `available`.
    pub state: ShareState,
    /// Unix time of the import.
    pub created_at: i64,
}

impl crate::model::Object for Image {
    const KIND: &'static str = "image";
    fn id(&self) -> &str {
        &self.id
    }
}

const IMAGE_COLS: &str = "id, name, pool, size, source_format, checksum, state, created_at";

fn image_from_row(r: &Row<'_>) -> rusqlite::Result<Image> {
    let state: String = r.get(6)?;
    Ok(Image {
        id: r.get(0)?,
        name: r.get(1)?,
        pool: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        source_format: r.get(4)?,
        checksum: r.get(5)?,
        state: ShareState::parse(&state).unwrap_or(ShareState::Error),
        created_at: r.get(7)?,
    })
}

/// Insert an image row; a name taken in the pool is `already_exists`.
pub fn insert_image(c: &Connection, i: &Image) -> Result<()> {
    c.execute(
        &format!("INSERT INTO images ({IMAGE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
        params![
            i.id,
            i.name,
            i.pool,
            i.size as i64,
            i.source_format,
            i.checksum,
            i.state.as_str(),
            i.created_at
        ],
    )
    .map_err(|e| match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            Error::AlreadyExists(format!(
                "image {} already exists in pool {}",
                i.name, i.pool
            ))
        }
        _ => e.into(),
    })?;
    Ok(())
}

/// Mark an import finished, with the image's virtual size and the format it came in.
pub fn finish_image(c: &Connection, id: &str, size: u64, format: &str) -> Result<()> {
    c.execute(
        "UPDATE images SET state = 'available', size = ?2, source_format = ?3 WHERE id = ?1",
        params![id, size as i64, format],
    )?;
    Ok(())
}

/// Set an image's state.
pub fn set_image_state(c: &Connection, id: &str, state: ShareState) -> Result<()> {
    c.execute(
        "UPDATE images SET state = ?2 WHERE id = ?1",
        params![id, state.as_str()],
    )?;
    Ok(())
}

/// Remove an image row.
pub fn delete_image_row(c: &Connection, id: &str) -> Result<()> {
    c.execute("DELETE FROM images WHERE id = ?1", [id])?;
    Ok(())
}

/// Every image, optionally of one pool.
pub fn list_images(c: &Connection, pool: Option<&str>) -> Result<Vec<Image>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {IMAGE_COLS} FROM images WHERE (?1 IS NULL OR pool = ?1) ORDER BY pool, name"
    ))?;
    let rows = stmt.query_map(params![pool], image_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// An image by id, or by name (with the pool when names repeat).
pub fn find_image(c: &Connection, reference: &str, pool: Option<&str>) -> Result<Image> {
    let by_id = c
        .query_row(
            &format!("SELECT {IMAGE_COLS} FROM images WHERE id = ?1"),
            [reference],
            image_from_row,
        )
        .optional()?;
    if let Some(i) = by_id {
        return Ok(i);
    }
    let mut found: Vec<Image> = list_images(c, pool)?
        .into_iter()
        .filter(|i| i.name == reference)
        .collect();
    match found.len() {
        0 => Err(Error::NotFound(format!(
            "no image {:?}",
            reference.chars().take(80).collect::<String>()
        ))),
        1 => Ok(found.remove(0)),
        n => Err(Error::Invalid(format!(
            "{n} images are named {reference}; say which pool"
        ))),
    }
}

/// Shares made from an image (informational: they do not depend on it).
pub fn count_shares_from_image(c: &Connection, image_id: &str) -> Result<u64> {
    let n: i64 = c.query_row(
        "SELECT count(*) FROM shares WHERE origin_image = ?1",
        [image_id],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

/// Record which image a share was made from.
pub fn set_share_origin_image(c: &Connection, share_id: &str, image_id: &str) -> Result<()> {
    c.execute(
        "UPDATE shares SET origin_image = ?2 WHERE id = ?1",
        params![share_id, image_id],
    )?;
    Ok(())
}

/// A job as the log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    /// UUID.
    pub id: String,
    /// The op that started it.
    pub op: String,
    /// The object it works on.
    pub target: String,
    /// `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    /// Bytes (or units) done.
    pub done: u64,
    /// Bytes (or units) in all; 0 when unknown.
    pub total: u64,
    /// The result, as JSON text, when done.
    pub result: Option<String>,
    /// The error code, when failed or cancelled.
    pub error_code: Option<String>,
    /// The error message.
    pub error_message: Option<String>,
    /// Unix time it started.
    pub created_at: i64,
    /// Unix time it ended.
    pub finished_at: Option<i64>,
}

/// Insert or replace a job row.
pub fn put_job(c: &Connection, j: &JobRow) -> Result<()> {
    c.execute(
        "INSERT OR REPLACE INTO jobs (id, op, target, state, done, total, result, error_code,
                                      error_message, created_at, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            j.id,
            j.op,
            j.target,
            j.state,
            j.done as i64,
            j.total as i64,
            j.result,
            j.error_code,
            j.error_message,
            j.created_at,
            j.finished_at
        ],
    )?;
    c.execute(
        "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?1",
        [crate::store::now() - 7 * 24 * 3600],
    )?;
    Ok(())
}

/// Jobs, newest first.
pub fn list_jobs(c: &Connection) -> Result<Vec<JobRow>> {
    let mut stmt = c.prepare(
        "SELECT id, op, target, state, done, total, result, error_code, error_message,
                created_at, finished_at FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT 1000",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(JobRow {
            id: r.get(0)?,
            op: r.get(1)?,
            target: r.get(2)?,
            state: r.get(3)?,
            done: r.get::<_, i64>(4)? as u64,
            total: r.get::<_, i64>(5)? as u64,
            result: r.get(6)?,
            error_code: r.get(7)?,
            error_message: r.get(8)?,
            created_at: r.get(9)?,
            finished_at: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Jobs a restart interrupted: marked failed.
pub fn fail_running_jobs(c: &Connection) -> Result<usize> {
    Ok(c.execute(
        "UPDATE jobs SET state = 'failed', error_code = 'internal',
                error_message = 'interrupted by a restart of shelfd', finished_at = ?1
         WHERE state = 'running'",
        [crate::store::now()],
    )?)
}
