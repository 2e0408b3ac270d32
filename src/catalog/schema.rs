//! The catalog's tables. Versioned with `PRAGMA user_version` so later
//! releases can migrate in place.

use rusqlite::Connection;

const VERSION: i64 = 3;

const V1: &str = "
CREATE TABLE updates (
    id             TEXT PRIMARY KEY,
    revision       INTEGER NOT NULL,
    title          TEXT NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    kb             TEXT,
    msrc           TEXT,
    classification TEXT,
    products       TEXT NOT NULL DEFAULT '[]',  -- JSON array
    release_date   TEXT,
    state          TEXT NOT NULL DEFAULT 'not-approved'
                   CHECK (state IN ('not-approved', 'approved', 'declined'))
);
CREATE TABLE files (
    sha1     TEXT PRIMARY KEY,  -- lowercase hex
    sha256   TEXT,              -- known from the catalog or learned at ingest
    size     INTEGER,
    name     TEXT NOT NULL,
    url      TEXT NOT NULL,
    modified INTEGER            -- unix seconds, for Last-Modified
);
CREATE INDEX files_sha256 ON files(sha256);
CREATE TABLE update_files (
    update_id TEXT NOT NULL REFERENCES updates(id) ON DELETE CASCADE,
    sha1      TEXT NOT NULL REFERENCES files(sha1),
    PRIMARY KEY (update_id, sha1)
) WITHOUT ROWID;
CREATE INDEX update_files_sha1 ON update_files(sha1);
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Microsoft's package.xml: revision ids link bundles and supersedence.
const V2: &str = "
ALTER TABLE updates ADD COLUMN revision_id INTEGER;
ALTER TABLE updates ADD COLUMN is_bundle INTEGER NOT NULL DEFAULT 0;
ALTER TABLE updates ADD COLUMN superseded INTEGER NOT NULL DEFAULT 0;
";

/// Automatic approval rules.
const V3: &str = "
CREATE TABLE rules (
    id             INTEGER PRIMARY KEY,
    action         TEXT NOT NULL CHECK (action IN ('approve', 'decline')),
    classification TEXT,
    product        TEXT,
    title          TEXT
);
";

/// Sets connection pragmas and creates or migrates the schema.
pub fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    // WAL: readers do not block the writer; FULL: a committed approval
    // survives power loss, not only a process crash.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Imports insert millions of rows in random key order (digests): with
    // SQLite's default 2 MB page cache every insert misses. 64 MB keeps the
    // hot B-tree pages in memory.
    conn.pragma_update(None, "cache_size", -65536)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version < 1 {
        conn.execute_batch(&format!("BEGIN; {V1} PRAGMA user_version = 1; COMMIT;"))?;
    }
    if version < 2 {
        conn.execute_batch(&format!("BEGIN; {V2} PRAGMA user_version = 2; COMMIT;"))?;
    }
    if version < 3 {
        conn.execute_batch(&format!(
            "BEGIN; {V3} PRAGMA user_version = {VERSION}; COMMIT;"
        ))?;
    }
    Ok(())
}
