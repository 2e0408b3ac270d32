//! The catalog's tables. Versioned with `PRAGMA user_version` so later
//! releases can migrate in place.

use rusqlite::Connection;

const VERSION: i64 = 9;

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

/// Integer keys: updates and files get a rowid, digests are stored as bytes.
/// A 500k-update catalog has ~2M update-file links; keyed by two hex
/// strings their indexes were ~350 MB inserted in random order (every insert
/// a cache miss), keyed by two small integers they are ~40 MB and appended.
const V4: &str = "
CREATE TABLE updates_v4 (
    uid            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    revision       INTEGER NOT NULL,
    title          TEXT NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    kb             TEXT,
    msrc           TEXT,
    classification TEXT,
    products       TEXT NOT NULL DEFAULT '[]',  -- JSON array
    release_date   TEXT,
    state          TEXT NOT NULL DEFAULT 'not-approved'
                   CHECK (state IN ('not-approved', 'approved', 'declined')),
    revision_id    INTEGER,
    is_bundle      INTEGER NOT NULL DEFAULT 0,
    superseded     INTEGER NOT NULL DEFAULT 0
);
INSERT INTO updates_v4(id, revision, title, description, kb, msrc, classification, products,
                       release_date, state, revision_id, is_bundle, superseded)
    SELECT id, revision, title, description, kb, msrc, classification, products,
           release_date, state, revision_id, is_bundle, superseded FROM updates ORDER BY id;
CREATE TABLE files_v4 (
    fid      INTEGER PRIMARY KEY,
    sha1     BLOB NOT NULL UNIQUE,      -- 20 bytes
    sha256   BLOB,                      -- 32 bytes: from the catalog or learned at ingest
    size     INTEGER,
    name     TEXT NOT NULL DEFAULT '',
    url      TEXT NOT NULL DEFAULT '',  -- '' only inside an import, until its FileLocation
    modified INTEGER                    -- unix seconds, for Last-Modified
);
INSERT INTO files_v4(sha1, sha256, size, name, url, modified)
    SELECT unhex(sha1), unhex(sha256), size, name, url, modified FROM files ORDER BY sha1;
CREATE TABLE update_files_v4 (
    uid INTEGER NOT NULL REFERENCES updates_v4(uid) ON DELETE CASCADE,
    fid INTEGER NOT NULL REFERENCES files_v4(fid),
    PRIMARY KEY (uid, fid)
) WITHOUT ROWID;
INSERT INTO update_files_v4(uid, fid)
    SELECT u.uid, f.fid FROM update_files uf
    JOIN updates_v4 u ON u.id = uf.update_id JOIN files_v4 f ON f.sha1 = unhex(uf.sha1)
    ORDER BY 1, 2;
DROP TABLE update_files;
DROP TABLE files;
DROP TABLE updates;
ALTER TABLE updates_v4 RENAME TO updates;
ALTER TABLE files_v4 RENAME TO files;
ALTER TABLE update_files_v4 RENAME TO update_files;
CREATE INDEX update_files_fid ON update_files(fid);
CREATE INDEX files_sha256 ON files(sha256) WHERE sha256 IS NOT NULL;
CREATE INDEX files_unlocated ON files(fid) WHERE url = '';
";

/// A change counter for followers: every write transaction bumps `seq`
/// (see [`bump_change_seq`]), and every update row it writes, or whose
/// files' learned digests or sizes it writes, takes that number in
/// `changed`. A follower asks for `changed > <the seq it last saw>`.
/// Imports stamp the rows they insert themselves (a trigger catches an
/// insert that does not); a trigger stamps any other write, once per row
/// and transaction (a row already stamped in
/// this one is left alone: an import's later passes over its new rows,
/// bundles, supersedence, KB names, cost nothing extra).
const V5: &str = "
CREATE TABLE change_seq (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
INSERT INTO change_seq VALUES (1, 1);
ALTER TABLE updates ADD COLUMN changed INTEGER NOT NULL DEFAULT 1;
CREATE INDEX updates_changed ON updates(changed);
CREATE TRIGGER updates_inserted AFTER INSERT ON updates
    WHEN NEW.changed != (SELECT seq FROM change_seq) BEGIN
    UPDATE updates SET changed = (SELECT seq FROM change_seq) WHERE uid = NEW.uid;
END;
CREATE TRIGGER updates_updated AFTER UPDATE ON updates
    WHEN NEW.changed = OLD.changed AND OLD.changed != (SELECT seq FROM change_seq) BEGIN
    UPDATE updates SET changed = (SELECT seq FROM change_seq) WHERE uid = NEW.uid;
END;
CREATE TRIGGER files_learned AFTER UPDATE OF sha256, size ON files
    WHEN NEW.sha256 IS NOT OLD.sha256 OR NEW.size IS NOT OLD.size BEGIN
    UPDATE updates SET changed = (SELECT seq FROM change_seq)
     WHERE uid IN (SELECT uid FROM update_files WHERE fid = NEW.fid)
       AND changed != (SELECT seq FROM change_seq);
END;
";

/// Computer groups and approvals per group (see `approvals`): every
/// approved update of an older catalog becomes an `All Computers`
/// approval, and triggers keep `updates.state` and the group approvals
/// together whatever writes the state.
const V6: &str = "
CREATE TABLE computer_groups (
    gid     INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created INTEGER NOT NULL DEFAULT 0
);
INSERT INTO computer_groups(gid, name) VALUES (1, 'All Computers'), (2, 'Unassigned Computers');
CREATE TABLE update_approvals (
    uid      INTEGER NOT NULL REFERENCES updates(uid) ON DELETE CASCADE,
    gid      INTEGER NOT NULL REFERENCES computer_groups(gid) ON DELETE CASCADE,
    deadline INTEGER,                   -- unix seconds
    PRIMARY KEY (uid, gid)
) WITHOUT ROWID;
CREATE INDEX update_approvals_gid ON update_approvals(gid);
INSERT INTO update_approvals(uid, gid) SELECT uid, 1 FROM updates WHERE state = 'approved';
ALTER TABLE rules ADD COLUMN gid INTEGER REFERENCES computer_groups(gid) ON DELETE CASCADE;
CREATE TRIGGER approvals_follow_state AFTER UPDATE OF state ON updates
    WHEN NEW.state != 'approved' BEGIN
    DELETE FROM update_approvals WHERE uid = NEW.uid;
END;
CREATE TRIGGER approved_for_all AFTER UPDATE OF state ON updates
    WHEN NEW.state = 'approved' BEGIN
    INSERT INTO update_approvals(uid, gid) SELECT NEW.uid, 1
     WHERE NOT EXISTS (SELECT 1 FROM update_approvals WHERE uid = NEW.uid);
END;
CREATE TRIGGER approved_on_insert AFTER INSERT ON updates
    WHEN NEW.state = 'approved' BEGIN
    INSERT OR IGNORE INTO update_approvals(uid, gid) VALUES (NEW.uid, 1);
END;
";

/// When each update came into the catalog (unix seconds): a computer's
/// status report older than that says nothing of it (its state is
/// unknown, not "not applicable"). Updates of an older catalog have none.
const V7: &str = "
ALTER TABLE updates ADD COLUMN added INTEGER;
";

/// Followers take the primary's groups by the primary's id (names change):
/// `primary_gid` is that id on a follower. `groups_changed` is the change
/// number of the last write to any group (created, renamed, deleted): a
/// follower asks for the list again only after it moved.
const V8: &str = "
ALTER TABLE computer_groups ADD COLUMN primary_gid INTEGER;
CREATE UNIQUE INDEX computer_groups_primary ON computer_groups(primary_gid)
    WHERE primary_gid IS NOT NULL;
ALTER TABLE change_seq ADD COLUMN groups_changed INTEGER NOT NULL DEFAULT 0;
UPDATE change_seq SET groups_changed = seq;
CREATE TRIGGER groups_inserted AFTER INSERT ON computer_groups BEGIN
    UPDATE change_seq SET groups_changed = seq;
END;
CREATE TRIGGER groups_renamed AFTER UPDATE OF name ON computer_groups BEGIN
    UPDATE change_seq SET groups_changed = seq;
END;
CREATE TRIGGER groups_deleted AFTER DELETE ON computer_groups BEGIN
    UPDATE change_seq SET groups_changed = seq;
END;
";

/// When each group's approval was made or last changed (unix seconds):
/// what a scan sends as its deployment's `LastChangeTime`. Approvals of an
/// older catalog are dated at the upgrade (made by then, when exactly is
/// not known). Any insert that names no time (the state triggers of `V6`,
/// rules, imports) is dated by the trigger; a change of deadline dates the
/// row anew where it is written (`approvals::approve`).
const V9: &str = "
ALTER TABLE update_approvals ADD COLUMN approved INTEGER;
UPDATE update_approvals SET approved = unixepoch();
CREATE TRIGGER approvals_dated AFTER INSERT ON update_approvals
    WHEN NEW.approved IS NULL BEGIN
    UPDATE update_approvals SET approved = unixepoch() WHERE uid = NEW.uid AND gid = NEW.gid;
END;
";

/// Starts a write transaction's change number (see `V5`).
pub fn bump_change_seq(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute("UPDATE change_seq SET seq = seq + 1", [])?;
    Ok(())
}

/// The change number of the last write to a computer group (see `V8`).
pub fn groups_changed(db: &Connection) -> rusqlite::Result<u64> {
    db.query_row("SELECT groups_changed FROM change_seq", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|s| s as u64)
}

/// The change number of the last write transaction.
pub fn change_seq(db: &Connection) -> rusqlite::Result<u64> {
    db.query_row("SELECT seq FROM change_seq", [], |r| r.get::<_, i64>(0))
        .map(|s| s as u64)
}

/// Per-connection scratch tables of multi-statement writes (imports,
/// bulk approvals): never persisted, so a crash leaves nothing behind.
const SCRATCH: &str = "
CREATE TEMP TABLE IF NOT EXISTS x_touched (fid INTEGER PRIMARY KEY);  -- files to refresh in the index
CREATE TEMP TABLE IF NOT EXISTS x_new (uid INTEGER PRIMARY KEY);      -- updates an import wrote
CREATE TEMP TABLE IF NOT EXISTS x_rev (revision_id INTEGER PRIMARY KEY, uid INTEGER NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS x_bundle (child_rev INTEGER NOT NULL, bundle_rev INTEGER NOT NULL);
";

/// Sets connection pragmas and creates or migrates the schema.
pub fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    // WAL: readers do not block the writer; FULL: a committed approval
    // survives power loss, not only a process crash.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
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
        conn.execute_batch(&format!("BEGIN; {V3} PRAGMA user_version = 3; COMMIT;"))?;
    }
    if version < 4 {
        // Foreign keys are still off here: the tables are rebuilt and renamed.
        conn.execute_batch(&format!("BEGIN; {V4} PRAGMA user_version = 4; COMMIT;"))?;
    }
    if version < 5 {
        conn.execute_batch(&format!("BEGIN; {V5} PRAGMA user_version = 5; COMMIT;"))?;
    }
    if version < 6 {
        conn.execute_batch(&format!("BEGIN; {V6} PRAGMA user_version = 6; COMMIT;"))?;
    }
    if version < 7 {
        conn.execute_batch(&format!("BEGIN; {V7} PRAGMA user_version = 7; COMMIT;"))?;
    }
    if version < 8 {
        conn.execute_batch(&format!("BEGIN; {V8} PRAGMA user_version = 8; COMMIT;"))?;
    }
    if version < 9 {
        conn.execute_batch(&format!(
            "BEGIN; {V9} PRAGMA user_version = {VERSION}; COMMIT;"
        ))?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.execute_batch(SCRATCH)?;
    Ok(())
}

/// Digests are stored as their bytes (half the size of hex in every index).
macro_rules! digest_column {
    ($ty:ty) => {
        impl rusqlite::types::ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::Borrowed(
                    rusqlite::types::ValueRef::Blob(&self.0),
                ))
            }
        }

        impl rusqlite::types::FromSql for $ty {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                let blob = value.as_blob()?;
                Self::from_slice(blob).ok_or(rusqlite::types::FromSqlError::InvalidBlobSize {
                    expected_size: std::mem::size_of::<Self>(),
                    blob_size: blob.len(),
                })
            }
        }
    };
}

digest_column!(crate::digest::Sha1Digest);
digest_column!(crate::digest::Sha256Digest);

#[cfg(test)]
mod tests {
    use super::*;

    /// Version 5 approvals become `All Computers` approvals, and the
    /// triggers keep state and group approvals together from then on.
    #[test]
    fn version_5_approvals_become_all_computers_approvals() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!("{V1} {V2} {V3} PRAGMA user_version = 3;"))
            .unwrap();
        conn.execute_batch(
            "INSERT INTO updates(id, revision, title, state) VALUES
               ('a', 1, 'A', 'approved'), ('b', 1, 'B', 'declined'), ('c', 1, 'C', 'not-approved');",
        )
        .unwrap();
        prepare(&conn).unwrap();
        let approvals = |conn: &Connection| -> Vec<(String, i64)> {
            conn.prepare(
                "SELECT u.id, a.gid FROM update_approvals a JOIN updates u USING (uid) ORDER BY 1, 2",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        assert_eq!(approvals(&conn), [("a".to_owned(), 1)]);
        conn.execute_batch(
            "UPDATE updates SET state = 'declined' WHERE id = 'a';
             UPDATE updates SET state = 'approved' WHERE id = 'c';
             INSERT INTO updates(id, revision, title, state) VALUES ('d', 1, 'D', 'approved');",
        )
        .unwrap();
        assert_eq!(approvals(&conn), [("c".to_owned(), 1), ("d".to_owned(), 1)]);
    }

    /// Approvals of a version 8 catalog are dated at the upgrade; an
    /// approval written afterwards without a date (the state triggers, a
    /// rule) is dated when written.
    #[test]
    fn version_8_approvals_are_dated_at_the_upgrade_and_new_ones_when_made() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!(
            "{V1} {V2} {V3} {V4} {V5} {V6} {V7} {V8} PRAGMA user_version = 8;"
        ))
        .unwrap();
        conn.execute_batch(
            "INSERT INTO updates(id, revision, title, state) VALUES ('a', 1, 'A', 'approved');",
        )
        .unwrap();
        let before: i64 = conn
            .query_row("SELECT unixepoch()", [], |r| r.get(0))
            .unwrap();
        prepare(&conn).unwrap();
        conn.execute_batch(
            "INSERT INTO updates(id, revision, title, state) VALUES ('b', 1, 'B', 'approved');",
        )
        .unwrap();
        let after: i64 = conn
            .query_row("SELECT unixepoch()", [], |r| r.get(0))
            .unwrap();
        let dates: Vec<(String, Option<i64>)> = conn
            .prepare("SELECT u.id, a.approved FROM update_approvals a JOIN updates u USING (uid) ORDER BY 1")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(dates.len(), 2, "{dates:?}");
        for (id, at) in dates {
            let at = at.unwrap_or_else(|| panic!("{id}: no date"));
            assert!(
                (before..=after).contains(&at),
                "{id}: {at} not in {before}..={after}"
            );
        }
    }

    /// A catalog written by version 3 (hex text keys) keeps its updates,
    /// files, digests and links after the move to integer keys.
    #[test]
    fn version_3_catalogs_migrate_in_place() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!("{V1} {V2} {V3} PRAGMA user_version = 3;"))
            .unwrap();
        let sha1 = "00112233445566778899aabbccddeeff00112233";
        let sha256 = "ab".repeat(32);
        conn.execute_batch(&format!(
            "INSERT INTO updates(id, revision, title, state) VALUES ('u-1', 2, 'One', 'approved');
             INSERT INTO files(sha1, sha256, size, name, url, modified)
                 VALUES ('{sha1}', '{sha256}', 3, 'a.cab', 'http://h/a.cab', 1);
             INSERT INTO update_files(update_id, sha1) VALUES ('u-1', '{sha1}');"
        ))
        .unwrap();

        prepare(&conn).unwrap();

        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, VERSION);
        let (id, state, digest, stored_sha256): (String, String, Vec<u8>, Vec<u8>) = conn
            .query_row(
                "SELECT u.id, u.state, f.sha1, f.sha256 FROM updates u
                 JOIN update_files uf ON uf.uid = u.uid JOIN files f ON f.fid = uf.fid",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!((id.as_str(), state.as_str()), ("u-1", "approved"));
        assert_eq!(hex::encode(digest), sha1);
        assert_eq!(hex::encode(stored_sha256), sha256);
        let fk_errors: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(fk_errors, 0);
    }
}
