//! SQLite: the schema, its migrations, and typed queries, on a thread of their own.
//!
//! One connection lives on a dedicated thread fed by a channel, so writes are serialised
//! without locks while the event loop only awaits replies. The database runs in WAL mode
//! with `synchronous = FULL`: when a call that commits returns, the change is on disk.

mod migrations;
mod queries;

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::error::{Error, Result};

pub use migrations::{migrate, CURRENT_VERSION, MIGRATIONS};
pub use queries::*;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A handle to the database thread. Cloning shares the thread.
#[derive(Debug, Clone)]
pub struct Store {
    tx: smol::channel::Sender<Job>,
    path: PathBuf,
    thread: std::sync::Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Store {
    /// Open (creating if needed) the database at `path` and bring it to the current schema.
    pub async fn open(path: &Path) -> Result<Store> {
        let (tx, rx) = smol::channel::unbounded::<Job>();
        let (ready_tx, ready_rx) = smol::channel::bounded::<Result<()>>(1);
        let db_path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("shelf-db".into())
            .spawn(move || {
                let mut conn = match open_connection(&db_path) {
                    Ok(c) => {
                        let _ = ready_tx.send_blocking(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send_blocking(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv_blocking() {
                    job(&mut conn);
                }
                if let Err((_, e)) = conn.close() {
                    log::warn!("closing the database: {e}");
                }
                log::debug!("database closed");
            })
            .map_err(|e| Error::io("starting the database thread", e))?;
        ready_rx
            .recv()
            .await
            .map_err(|_| Error::Internal("database thread exited".into()))??;
        Ok(Store {
            tx,
            path: path.to_path_buf(),
            thread: std::sync::Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    /// Run `f` on the database thread and await its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = smol::channel::bounded(1);
        let job: Job = Box::new(move |conn| {
            let _ = tx.send_blocking(f(conn));
        });
        self.tx
            .send(job)
            .await
            .map_err(|_| Error::Internal("database is closed".into()))?;
        rx.recv()
            .await
            .map_err(|_| Error::Internal("database thread dropped a request".into()))?
    }

    /// Run `f` inside one `IMMEDIATE` transaction, committed when `f` returns `Ok`.
    pub async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<R> + Send + 'static,
    {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let r = f(&tx)?;
            tx.commit()?;
            Ok(r)
        })
        .await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stop the database thread after the calls already queued, and wait until it has
    /// closed the database (which checkpoints the WAL).
    pub async fn close(self) {
        self.tx.close();
        let handle = self.thread.lock().expect("store lock").take();
        if let Some(h) = handle {
            let _ = smol::unblock(move || h.join()).await;
        }
    }
}

/// Open a connection with shelf's pragmas and run migrations.
pub fn open_connection(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if mode != "wal" {
        return Err(Error::Db(format!(
            "could not switch {} to WAL (got {mode})",
            path.display()
        )));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(Error::Db(format!(
            "{} failed its integrity check: {check}",
            path.display()
        )));
    }
    migrate(&mut conn)?;
    Ok(conn)
}

/// The current Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
