//! SQLite: the schema, its migrations, and typed queries, on a thread of their own.
//!
//! One connection lives on a dedicated thread fed by a channel, so writes are serialised
//! without locks while the event loop only awaits replies. The database runs in WAL mode
//! with `synchronous = FULL`: when a call that commits returns, the change is on disk.

mod attachments;
mod audit;
mod counts;
mod exports;
mod groups;
mod idempotency;
mod images;
mod index;
mod intents;
mod migrations;
mod queries;
mod settings;
mod shares;
mod snapshots;
mod totals;

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::error::{Error, Result};

pub use attachments::*;
pub use audit::*;
pub use counts::*;
pub use exports::*;
pub use groups::*;
pub use idempotency::*;
pub use images::*;
pub use index::Index;
pub use intents::*;
pub use migrations::{migrate, CURRENT_VERSION, MIGRATIONS};
pub use settings::*;
pub use shares::*;
pub use snapshots::*;
pub use totals::*;

type Job = Box<dyn for<'a> FnOnce(&mut Connection, &mut AuditQueue<'a>) + Send>;

/// What the database thread is asked to do.
enum Msg {
    /// Run a closure. `records` says whether it writes the queued audit entries in its
    /// own transaction ([`Store::write_recorded`]): then the queue is not flushed first.
    Run { job: Job, records: bool },
    /// Record an audit entry; entries are written in batches (group commit). With a
    /// sender, it is told once the batch holding the entry is committed.
    Audit(Box<AuditEntry>, Option<smol::channel::Sender<()>>),
    /// Write the audit entries queued so far.
    Flush(smol::channel::Sender<()>),
    /// Sent every [`AUDIT_TICK`]: write the refusals queued so far.
    Tick,
}

/// Audit entries written in one transaction at most.
const AUDIT_BATCH: usize = 4096;
/// Refusals wait at most about this long before they are committed, so that a flood of
/// them costs one commit per interval instead of one per refusal.
pub const AUDIT_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// A handle to the database thread. Cloning shares the thread.
#[derive(Debug, Clone)]
pub struct Store {
    tx: smol::channel::Sender<Msg>,
    path: PathBuf,
    thread: std::sync::Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    /// Audit entries that could not be written (the database was closed or failed).
    unwritten: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Audit entries queued and not yet written (the metrics' audit backlog).
    queued: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Shares and snapshots in memory, synced after every job (index.rs): the reads.
    index: std::sync::Arc<Index>,
}

impl Store {
    /// Open (creating if needed) the database at `path` and bring it to the current schema.
    pub async fn open(path: &Path) -> Result<Store> {
        let (tx, rx) = smol::channel::unbounded::<Msg>();
        let (ready_tx, ready_rx) = smol::channel::bounded::<Result<()>>(1);
        let db_path = path.to_path_buf();
        let unwritten = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let lost = unwritten.clone();
        let queued = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let backlog = queued.clone();
        let index = std::sync::Arc::new(Index::default());
        let kept = index.clone();
        let thread = std::thread::Builder::new()
            .name("shelf-db".into())
            .spawn(move || {
                let opened = open_connection(&db_path).and_then(|mut c| {
                    kept.install(&mut c)?;
                    Ok(c)
                });
                let mut conn = match opened {
                    Ok(c) => {
                        let _ = ready_tx.send_blocking(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send_blocking(Err(e));
                        return;
                    }
                };
                serve(&mut conn, &rx, &lost, &backlog, &kept);
                if let Err((_, e)) = conn.close() {
                    log::warn!("closing the database: {e}");
                }
                log::debug!("database closed");
            })
            .map_err(|e| Error::io("starting the database thread", e))?;
        // A weak sender: the ticker does not keep the database thread alive, and ends
        // when the store is closed or every handle is gone.
        let ticks = tx.downgrade();
        std::thread::Builder::new()
            .name("shelf-db-tick".into())
            .spawn(move || {
                while let Some(t) = ticks.upgrade() {
                    if t.send_blocking(Msg::Tick).is_err() {
                        break;
                    }
                    drop(t);
                    std::thread::sleep(AUDIT_TICK);
                }
            })
            .map_err(|e| Error::io("starting the database ticker", e))?;
        ready_rx
            .recv()
            .await
            .map_err(|_| Error::Internal("database thread exited".into()))??;
        Ok(Store {
            tx,
            path: path.to_path_buf(),
            thread: std::sync::Arc::new(std::sync::Mutex::new(Some(thread))),
            unwritten,
            queued,
            index,
        })
    }

    /// The in-memory index of shares and snapshots: what every committed write through
    /// [`Store::call`] or [`Store::write`] made, once that call has returned.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Run `f` on the database thread and await its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    {
        self.run(false, move |conn, _| f(conn)).await?
    }

    /// Run `f` on the database thread with the audit queue, and await what it returns.
    async fn run<R, F>(&self, records: bool, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: for<'a> FnOnce(&mut Connection, &mut AuditQueue<'a>) -> R + Send + 'static,
    {
        let (tx, rx) = smol::channel::bounded(1);
        let index = self.index.clone();
        let job: Job = Box::new(move |conn, queue| {
            let r = f(conn, queue);
            // Before the caller hears of the write: a read after it sees it.
            index.sync(conn);
            let _ = tx.send_blocking(r);
        });
        self.tx
            .send(Msg::Run { job, records })
            .await
            .map_err(|_| Error::Internal("database is closed".into()))?;
        rx.recv()
            .await
            .map_err(|_| Error::Internal("database thread dropped a request".into()))
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

    /// Like [`Store::write`], for an operation's final transaction: it also writes the
    /// request's audit entry from `slot` (as `ok`), and the entries queued before it, in
    /// the same commit. The change and its entry are on disk together when this returns,
    /// so the reply needs no commit of its own. An entry that cannot be written is counted
    /// as unwritten and does not undo the change (as with a separate commit); when `f`
    /// fails or the commit does, the entry goes back to `slot`. With no entry waiting in
    /// `slot`, this is [`Store::write`].
    pub async fn write_recorded<R, F>(&self, slot: &AuditSlot, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<R> + Send + 'static,
    {
        let Some(mut entry) = slot.take() else {
            return self.write(f).await;
        };
        let ran = self
            .run(true, move |conn, queue| {
                let tx = match conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                {
                    Ok(tx) => tx,
                    Err(e) => return (Err(e.into()), Err(entry)),
                };
                let r = match f(&tx) {
                    Ok(r) => r,
                    Err(e) => return (Err(e), Err(entry)),
                };
                entry.at_ms = now_ms();
                match queue.commit_with(tx, entry) {
                    Ok(seq) => (Ok(r), Ok(seq)),
                    Err(failed) => {
                        let (e, entry) = *failed;
                        (Err(e), Err(entry))
                    }
                }
            })
            .await;
        let (r, written) = match ran {
            Ok(done) => done,
            Err(e) => {
                // The database thread is gone; the entry went with the job.
                self.unwritten
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                log::error!("an audit entry was not written: the database is closed");
                return Err(e);
            }
        };
        match written {
            Ok(Some(seq)) => slot.set_written(seq),
            // Written, but its number is unknown (the entry itself failed and was counted).
            Ok(None) => {}
            Err(entry) => slot.give_back(entry),
        }
        r
    }

    /// Queue an audit entry without waiting for it. Such entries are committed together
    /// within [`AUDIT_TICK`] (sooner when a change's entry is committed, the log is read,
    /// or [`AUDIT_BATCH`] are queued); a crash can lose those of the last tick. Used for
    /// refusals, which are aggregated, so a flood costs a few commits a second.
    pub fn audit(&self, entry: AuditEntry) {
        self.queued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.tx.try_send(Msg::Audit(Box::new(entry), None)).is_err() {
            self.lost_audit(1, "the database is closed");
        }
    }

    /// Record an audit entry and return once it is committed (synchronous=FULL: on disk).
    /// Entries that arrive together still share one commit (group commit). Used for state
    /// changes, so that an `ok` reply is never sent for an unrecorded change.
    pub async fn audit_durable(&self, entry: AuditEntry) {
        let (tx, rx) = smol::channel::bounded(1);
        self.queued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self
            .tx
            .send(Msg::Audit(Box::new(entry), Some(tx)))
            .await
            .is_err()
        {
            self.lost_audit(1, "the database is closed");
            return;
        }
        let _ = rx.recv().await;
    }

    fn lost_audit(&self, n: u64, why: &str) {
        self.queued
            .fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
        self.unwritten
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        log::error!("{n} audit entry(ies) not written: {why}");
    }

    /// Audit entries this process could not write (database closed or failing).
    pub fn audit_unwritten(&self) -> u64 {
        self.unwritten.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Audit entries queued for the database thread and not yet written (or lost).
    pub fn audit_backlog(&self) -> u64 {
        self.queued.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Wait until every audit entry queued so far is written.
    pub async fn flush_audit(&self) {
        let (tx, rx) = smol::channel::bounded(1);
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.recv().await;
        }
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

/// Audit entries queued on the database thread, and who waits for their commit.
pub(crate) struct AuditQueue<'a> {
    entries: Vec<AuditEntry>,
    waiting: Vec<smol::channel::Sender<()>>,
    /// Messages handled since the first of `waiting` arrived.
    since_waiter: usize,
    /// Entries that could not be written (the store's `unwritten`).
    lost: &'a std::sync::atomic::AtomicU64,
    /// Entries queued and not yet written (the store's `queued`).
    queued: &'a std::sync::atomic::AtomicU64,
}

/// A change's entry waits for at most this many further messages before its commit.
const CHANGE_GROUP: usize = 64;

impl AuditQueue<'_> {
    /// Write the queued entries in a transaction of their own.
    fn write(&mut self, conn: &mut Connection) {
        if self.entries.is_empty() {
            return;
        }
        let written = conn.transaction().map_err(Error::from).and_then(|tx| {
            insert_audit(&tx, &self.entries, AuditKeep::default())?;
            tx.commit().map_err(Error::from)
        });
        if let Err(e) = written {
            let n = self.entries.len() as u64;
            self.lost.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            log::error!("writing {n} audit entries failed: {e}");
        }
        self.done();
    }

    /// Write the queued entries and then `entry` (a change's, `ok`) in `tx`, and commit
    /// it: the entry's sequence number, or the commit's error with the entry (the queued
    /// ones stay queued). The entries go under a savepoint: if they cannot be written,
    /// they are counted as unwritten and the change is committed without them.
    fn commit_with(
        &mut self,
        tx: rusqlite::Transaction<'_>,
        entry: AuditEntry,
    ) -> std::result::Result<Option<u64>, Box<(Error, AuditEntry)>> {
        let mut batch = std::mem::take(&mut self.entries);
        batch.push(entry);
        let inserted = tx
            .execute_batch("SAVEPOINT audit")
            .map_err(Error::from)
            .and_then(|()| {
                let seq = insert_audit(&tx, &batch, AuditKeep::default())?;
                tx.execute_batch("RELEASE audit")?;
                Ok(seq)
            });
        let seq = match inserted {
            Ok(seq) => seq,
            Err(e) => {
                let undone = tx.execute_batch("ROLLBACK TO audit; RELEASE audit");
                if let Err(u) = undone {
                    let entry = batch.pop().expect("the batch holds the entry");
                    self.entries = batch;
                    return Err(Box::new((
                        Error::Db(format!("{e}; and undoing it: {u}")),
                        entry,
                    )));
                }
                let n = batch.len() as u64;
                self.lost.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                log::error!("writing {n} audit entries with a change failed: {e}");
                None
            }
        };
        if let Err(e) = tx.commit() {
            let entry = batch.pop().expect("the batch holds the entry");
            self.entries = batch;
            return Err(Box::new((e.into(), entry)));
        }
        // The entry of this write was never counted as queued: leave it out of `done`.
        batch.pop();
        self.entries = batch;
        self.done();
        Ok(seq)
    }

    /// The queued entries are written (or counted as lost): tell whoever waits.
    fn done(&mut self) {
        self.queued.fetch_sub(
            self.entries.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.entries.clear();
        self.since_waiter = 0;
        // Whoever waits is told either way: a failed write is counted and logged, and the
        // change it records is already made.
        for w in self.waiting.drain(..) {
            let _ = w.try_send(());
        }
    }
}

/// The database thread's loop: run jobs in order; write audit entries in batches.
fn serve(
    conn: &mut Connection,
    rx: &smol::channel::Receiver<Msg>,
    lost: &std::sync::atomic::AtomicU64,
    queued: &std::sync::atomic::AtomicU64,
    index: &Index,
) {
    let mut pending = AuditQueue {
        entries: Vec::new(),
        waiting: Vec::new(),
        since_waiter: 0,
        lost,
        queued,
    };
    while let Ok(msg) = rx.recv_blocking() {
        match msg {
            Msg::Run { job, records } => {
                // A change waits for its entry: commit it before later work, not after
                // (a write that records commits it with its own).
                if !records && !pending.waiting.is_empty() {
                    pending.write(conn);
                }
                job(conn, &mut pending)
            }
            Msg::Audit(e, wait) => {
                pending.entries.push(*e);
                pending.waiting.extend(wait);
            }
            Msg::Flush(done) => {
                pending.write(conn);
                let _ = done.try_send(());
            }
            Msg::Tick => {
                pending.write(conn);
                // Catches a commit by another connection within a tick.
                index.sync(conn);
            }
        }
        // A change's entry is committed as soon as nothing else is queued (entries queued
        // meanwhile share its commit), or after [`CHANGE_GROUP`] more messages (a flood of
        // refusals does not hold it back); refusals wait for the tick or a full batch.
        if !pending.waiting.is_empty() {
            pending.since_waiter += 1;
        }
        let change_waits =
            !pending.waiting.is_empty() && (rx.is_empty() || pending.since_waiter >= CHANGE_GROUP);
        if change_waits || pending.entries.len() >= AUDIT_BATCH {
            pending.write(conn);
        }
    }
    pending.write(conn);
}

/// Open a connection with shelf's pragmas and run migrations.
pub fn open_connection(path: &Path) -> Result<Connection> {
    // The database holds CHAP secrets: only its owner may read it. SQLite gives the WAL
    // and shared-memory files the main file's mode.
    restrict_mode(path)?;
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

/// Create the database file 0600 if it is missing, and take group and other rights away
/// from it and its WAL files if it exists.
fn restrict_mode(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("restricting {}", p.display()), e)),
        }
    }
    Ok(())
}

/// The current Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The current Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod recorded_tests;
