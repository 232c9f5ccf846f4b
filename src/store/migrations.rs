//! Versioned schema migrations, kept in code. `PRAGMA user_version` holds the version a
//! database is at; [`migrate`] applies every later step in one transaction each.

use rusqlite::Connection;

use crate::error::{Error, Result};

/// The migrations, in order; `MIGRATIONS[i]` takes a database from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the tree.
    "CREATE TABLE shares (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        pool TEXT NOT NULL,
        size INTEGER NOT NULL,
        sparse INTEGER NOT NULL,
        state TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        origin_snapshot TEXT,
        origin_share TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        UNIQUE (pool, name)
    );
    CREATE TABLE snapshots (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        share_id TEXT NOT NULL REFERENCES shares(id),
        size INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (share_id, name)
    );",
    // 2: snapshots get a life-cycle state (so a crash mid-snapshot can be undone), lookups
    // by share get an index, and steps that a state column cannot describe get a journal.
    "ALTER TABLE snapshots ADD COLUMN state TEXT NOT NULL DEFAULT 'available';
     CREATE INDEX snapshots_by_share ON snapshots (share_id);
     CREATE INDEX shares_by_origin ON shares (origin_snapshot);
     CREATE TABLE intents (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        op TEXT NOT NULL,
        object TEXT NOT NULL,
        data TEXT NOT NULL,
        started_at INTEGER NOT NULL
     );",
    // 3: exports and attachments. A share may be exported once per protocol; CHAP secrets
    // live here, which is why the database files are kept mode 0600.
    "ALTER TABLE shares ADD COLUMN multiattach INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE exports (
        id TEXT PRIMARY KEY,
        share_id TEXT NOT NULL REFERENCES shares(id),
        protocol TEXT NOT NULL,
        driver TEXT NOT NULL,
        state TEXT NOT NULL,
        options TEXT NOT NULL,
        target TEXT NOT NULL,
        tid INTEGER,
        fsid INTEGER,
        chap_user TEXT,
        chap_secret TEXT,
        created_at INTEGER NOT NULL,
        UNIQUE (share_id, protocol)
     );
     CREATE TABLE attachments (
        id TEXT PRIMARY KEY,
        share_id TEXT NOT NULL REFERENCES shares(id),
        protocol TEXT NOT NULL,
        client TEXT NOT NULL,
        host TEXT NOT NULL,
        ip TEXT,
        initiator TEXT,
        mode TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (share_id, protocol, client)
     );",
    // 4: the audit log of state-changing and refused requests, and the answers kept for
    // idempotency keys.
    "CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        gid INTEGER NOT NULL,
        pid INTEGER NOT NULL,
        role TEXT NOT NULL,
        op TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL,
        message TEXT NOT NULL,
        key TEXT
     );
     CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,
        op TEXT NOT NULL,
        digest TEXT NOT NULL,
        reply BLOB NOT NULL,
        at INTEGER NOT NULL
     );",
    // 5: formatted shares: the layout (`block` or `filesystem`) and the filesystem.
    "ALTER TABLE shares ADD COLUMN layout TEXT NOT NULL DEFAULT 'block';
     ALTER TABLE shares ADD COLUMN filesystem TEXT;",
    // 6: the image cache and long-running jobs.
    "CREATE TABLE images (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        pool TEXT NOT NULL,
        size INTEGER NOT NULL,
        source_format TEXT NOT NULL,
        checksum TEXT,
        state TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (pool, name)
     );
     CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        op TEXT NOT NULL,
        target TEXT NOT NULL,
        state TEXT NOT NULL,
        done INTEGER NOT NULL,
        total INTEGER NOT NULL,
        result TEXT,
        error_code TEXT,
        error_message TEXT,
        created_at INTEGER NOT NULL,
        finished_at INTEGER
     );
     ALTER TABLE shares ADD COLUMN origin_image TEXT;",
    // 7: each pool's provisioned total, kept by triggers, so a capacity check is one row
    // read instead of a sum over every share of the pool.
    "CREATE TABLE pool_usage (pool TEXT PRIMARY KEY, provisioned INTEGER NOT NULL);
     INSERT INTO pool_usage SELECT pool, sum(size) FROM shares GROUP BY pool;
     CREATE TRIGGER shares_usage_insert AFTER INSERT ON shares BEGIN
        INSERT OR IGNORE INTO pool_usage (pool, provisioned) VALUES (NEW.pool, 0);
        UPDATE pool_usage SET provisioned = provisioned + NEW.size WHERE pool = NEW.pool;
     END;
     CREATE TRIGGER shares_usage_delete AFTER DELETE ON shares BEGIN
        UPDATE pool_usage SET provisioned = provisioned - OLD.size WHERE pool = OLD.pool;
     END;
     CREATE TRIGGER shares_usage_update AFTER UPDATE OF size, pool ON shares BEGIN
        UPDATE pool_usage SET provisioned = provisioned - OLD.size WHERE pool = OLD.pool;
        INSERT OR IGNORE INTO pool_usage (pool, provisioned) VALUES (NEW.pool, 0);
        UPDATE pool_usage SET provisioned = provisioned + NEW.size WHERE pool = NEW.pool;
     END;",
    // 8: the audit log keeps state changes and refusals apart, so a flood of refusals
    // cannot evict a change: refusals are aggregated per (uid, role, op, minute) into one
    // row with a count, each kind has its own retention, and `audit_totals` counts what
    // was recorded, aggregated and dropped (from this version on). Kept attach answers
    // with CHAP secrets in them are forgotten.
    "ALTER TABLE audit ADD COLUMN kind TEXT NOT NULL DEFAULT 'change';
     ALTER TABLE audit ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
     ALTER TABLE audit ADD COLUMN last_at_ms INTEGER;
     ALTER TABLE audit ADD COLUMN bucket INTEGER;
     UPDATE audit SET kind = 'refusal' WHERE outcome = 'permission_denied';
     CREATE INDEX audit_by_kind ON audit (kind, seq);
     CREATE UNIQUE INDEX audit_refusal_bucket ON audit (uid, role, op, bucket)
        WHERE bucket IS NOT NULL;
     CREATE TABLE audit_totals (
        kind TEXT PRIMARY KEY,
        entries INTEGER NOT NULL,
        requests INTEGER NOT NULL,
        aggregated INTEGER NOT NULL DEFAULT 0,
        dropped_entries INTEGER NOT NULL DEFAULT 0,
        dropped_requests INTEGER NOT NULL DEFAULT 0
     );
     INSERT INTO audit_totals (kind, entries, requests)
        SELECT k, (SELECT count(*) FROM audit WHERE kind = k), (SELECT count(*) FROM audit WHERE kind = k)
        FROM (SELECT 'change' AS k UNION ALL SELECT 'refusal');
     -- Kept attach answers held CHAP secrets; they are now kept without them. Forget the
     -- old ones: a retry attaches again, which answers the same (changed: false).
     DELETE FROM idempotency WHERE op = 'share.attach';",
    // 9: durable flags of the database. The start-up move of an earlier shelf's
    // `user.shelf.*` stamps runs until it has made one complete pass; a database that
    // holds no share yet (created by this version, or rebuilt) has nothing to move.
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     INSERT INTO settings (key, value)
        SELECT 'legacy_stamps_moved', 'at creation' WHERE NOT EXISTS (SELECT 1 FROM shares);",
    // Group snapshots (snapshot.create_group): a group row, and each member snapshot's
    // group. Deleting a group row leaves no member pointing at it.
    "CREATE TABLE snapshot_groups (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        pool TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (pool, name)
     );
     ALTER TABLE snapshots ADD COLUMN group_id TEXT
        REFERENCES snapshot_groups(id) ON DELETE SET NULL;
     CREATE INDEX snapshots_by_group ON snapshots(group_id);",
];

/// The schema version this build writes.
pub const CURRENT_VERSION: u32 = MIGRATIONS.len() as u32;

/// Bring `conn` to [`CURRENT_VERSION`]. A database newer than this build is refused.
pub fn migrate(conn: &mut Connection) -> Result<u32> {
    let mut version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > CURRENT_VERSION {
        return Err(Error::Db(format!(
            "database schema version {version} is newer than this shelfd ({CURRENT_VERSION}); \
             refusing to touch it"
        )));
    }
    while version < CURRENT_VERSION {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[version as usize])?;
        version += 1;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        log::info!("database migrated to schema version {version}");
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_and_old_databases_end_at_current() {
        let mut fresh = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut fresh).unwrap(), CURRENT_VERSION);

        let mut old = Connection::open_in_memory().unwrap();
        old.execute_batch(MIGRATIONS[0]).unwrap();
        old.pragma_update(None, "user_version", 1).unwrap();
        old.execute(
            "INSERT INTO shares (id, name, pool, size, sparse, state, created_at)
             VALUES ('a', 'v', 'default', 4096, 1, 'available', 0)",
            [],
        )
        .unwrap();
        old.execute(
            "INSERT INTO snapshots (id, name, share_id, size, created_at)
             VALUES ('s', 'snap', 'a', 4096, 0)",
            [],
        )
        .unwrap();
        assert_eq!(migrate(&mut old).unwrap(), CURRENT_VERSION);
        let state: String = old
            .query_row("SELECT state FROM snapshots WHERE id = 's'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(state, "available", "old rows get the default state");
        let moved = |c: &Connection| crate::store::get_setting(c, "legacy_stamps_moved").unwrap();
        assert_eq!(
            moved(&old),
            None,
            "an old database with shares has stamps to move"
        );
        assert_eq!(moved(&fresh).as_deref(), Some("at creation"));
        assert_eq!(migrate(&mut old).unwrap(), CURRENT_VERSION, "idempotent");
    }

    #[test]
    fn provisioned_totals_follow_every_change() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c).unwrap();
        let add = |c: &Connection, id: &str, pool: &str, size: i64| {
            c.execute(
                "INSERT INTO shares (id, name, pool, size, sparse, state, created_at)
                 VALUES (?1, ?1, ?2, ?3, 1, 'available', 0)",
                rusqlite::params![id, pool, size],
            )
            .unwrap();
        };
        add(&c, "a", "p", 100);
        add(&c, "b", "p", 50);
        add(&c, "c", "q", 7);
        c.execute("UPDATE shares SET size = 150 WHERE id = 'a'", [])
            .unwrap();
        c.execute("DELETE FROM shares WHERE id = 'b'", []).unwrap();
        let total = |pool: &str| -> i64 {
            c.query_row(
                "SELECT provisioned FROM pool_usage WHERE pool = ?1",
                [pool],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!((total("p"), total("q")), (150, 7));
    }

    #[test]
    fn audit_rows_of_version_7_are_sorted_into_changes_and_refusals() {
        let mut c = Connection::open_in_memory().unwrap();
        for m in &MIGRATIONS[..7] {
            c.execute_batch(m).unwrap();
        }
        c.pragma_update(None, "user_version", 7).unwrap();
        for outcome in ["ok", "not_found", "permission_denied"] {
            c.execute(
                "INSERT INTO audit (at_ms, uid, gid, pid, role, op, target, outcome, message)
                 VALUES (1, 0, 0, 1, 'admin', 'share.create', 'v', ?1, '')",
                [outcome],
            )
            .unwrap();
        }
        c.execute(
            "INSERT INTO idempotency (key, op, digest, reply, at) VALUES ('k', 'share.attach', 'd', x'00', 1)",
            [],
        )
        .unwrap();
        migrate(&mut c).unwrap();
        let (changes, refusals) = crate::store::audit_totals(&c).unwrap();
        assert_eq!((changes.entries, refusals.entries), (2, 1));
        let kept: i64 = c
            .query_row("SELECT count(*) FROM idempotency", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 0, "kept attach answers (with secrets) are forgotten");
    }

    #[test]
    fn newer_database_is_refused() {
        let mut c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "user_version", CURRENT_VERSION + 1)
            .unwrap();
        assert!(migrate(&mut c).is_err());
    }
}
