//! The metadata tables, in the catalog's SQLite file beside the catalog's
//! own (one file to back up, one WAL). Versioned in `meta_state` under
//! `schema_version`, so later releases migrate in place as the catalog does.

use rusqlite::{Connection, OptionalExtension};

/// Revisions and their documents.
///
/// `rid` is the stable local revision id: `AUTOINCREMENT` never hands out
/// an id again, and a revision (update id + revision number) keeps its row
/// across re-syncs and restarts, because clients cache it.
const V1: &str = "
CREATE TABLE meta_revisions (
    rid           INTEGER PRIMARY KEY AUTOINCREMENT,
    update_id     TEXT NOT NULL,           -- lowercase GUID
    revision      INTEGER NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('category', 'detectoid', 'software', 'driver')),
    category_type TEXT,                    -- Product, UpdateClassification, ... for categories
    title         TEXT NOT NULL DEFAULT '',
    description   TEXT NOT NULL DEFAULT '',
    kb            TEXT,
    state         TEXT,                    -- PublicationState
    created       TEXT,                    -- CreationDate
    doc           BLOB NOT NULL,           -- the whole document, UTF-8, zlib-compressed
    doc_sha256    BLOB NOT NULL,           -- of the uncompressed document
    doc_len       INTEGER NOT NULL,
    projected     INTEGER NOT NULL DEFAULT 0,  -- 1 once written into the catalog
    UNIQUE (update_id, revision)
);
CREATE INDEX meta_revisions_kind ON meta_revisions(kind, update_id);
CREATE INDEX meta_revisions_unprojected ON meta_revisions(rid) WHERE projected = 0;
-- Prerequisites (grp 0: required; n: one AtLeastOne), bundles, supersedence.
CREATE TABLE meta_links (
    rid             INTEGER NOT NULL REFERENCES meta_revisions(rid) ON DELETE CASCADE,
    link            TEXT NOT NULL CHECK (link IN ('prerequisite', 'bundles', 'supersedes')),
    grp             INTEGER NOT NULL DEFAULT 0,
    target_id       TEXT NOT NULL,
    target_revision INTEGER,
    PRIMARY KEY (rid, link, grp, target_id)
) WITHOUT ROWID;
CREATE INDEX meta_links_target ON meta_links(target_id, link);
CREATE TABLE meta_files (
    rid    INTEGER NOT NULL REFERENCES meta_revisions(rid) ON DELETE CASCADE,
    sha1   BLOB NOT NULL,
    sha256 BLOB,
    name   TEXT NOT NULL,
    size   INTEGER,
    PRIMARY KEY (rid, sha1)
) WITHOUT ROWID;
-- Where the upstream says a file is (GetUpdateData fileUrls), by SHA-1.
CREATE TABLE meta_file_urls (
    sha1    BLOB PRIMARY KEY,
    mu_url  TEXT NOT NULL DEFAULT '',
    uss_url TEXT NOT NULL DEFAULT ''
);
";

/// Where a document came from: `sync` (an upstream's `GetUpdateData`, the
/// reference) or `cabinet` (assembled from `wsusscn2.cab`'s fragments,
/// replaced by a sync of the same revision, never replacing one).
const V2: &str = "
ALTER TABLE meta_revisions ADD COLUMN origin TEXT NOT NULL DEFAULT 'sync'
    CHECK (origin IN ('sync', 'cabinet'));
";

/// The deployments this server has sent as an upstream ([MS-WSUSSS]
/// `GetDeployments`), by what they deploy (`update/revision/action/group`):
/// `generation` counts the times one was withdrawn and given again (each
/// time under a new `DeploymentGuid`), `dead_call` is the call that first
/// found it withdrawn (`NULL`: in force).
const V3: &str = "
CREATE TABLE meta_sent_deployments (
    key        TEXT PRIMARY KEY,
    generation INTEGER NOT NULL DEFAULT 0,
    dead_call  INTEGER
) WITHOUT ROWID;
CREATE INDEX meta_sent_deployments_dead ON meta_sent_deployments(dead_call) WHERE dead_call IS NOT NULL;
";

/// Every withdrawn generation of a deployment, with the call that found it
/// withdrawn: a deployment given again starts a new generation in
/// `meta_sent_deployments`, and a replica that still holds an older one
/// must yet be told that one is dead.
const V4: &str = "
CREATE TABLE meta_dead_deployments (
    key        TEXT NOT NULL,
    generation INTEGER NOT NULL,
    dead_call  INTEGER NOT NULL,
    PRIMARY KEY (key, generation)
) WITHOUT ROWID;
INSERT INTO meta_dead_deployments(key, generation, dead_call)
    SELECT key, generation, dead_call FROM meta_sent_deployments WHERE dead_call IS NOT NULL;
CREATE INDEX meta_dead_deployments_by_call ON meta_dead_deployments(dead_call);
";

/// Creates or migrates the tables (on the caller's connection).
pub fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    apply_once(conn, "schema_version", 1, V1)?;
    apply_once(conn, "schema_version", 2, V2)?;
    apply_once(conn, "schema_version", 3, V3)?;
    apply_once(conn, "schema_version", 4, V4)
}

/// Runs `ddl` once, in one transaction: `key` in `meta_state` records the
/// version it brought, so a restart (or a crash before the commit) never
/// applies it twice or half.
pub fn apply_once(conn: &Connection, key: &str, version: i64, ddl: &str) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    )?;
    let current: i64 = conn
        .query_row("SELECT value FROM meta_state WHERE key = ?1", [key], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if current < version {
        conn.execute_batch(&format!(
            "BEGIN; {ddl} INSERT OR REPLACE INTO meta_state VALUES ('{key}', '{version}'); COMMIT;"
        ))?;
    }
    Ok(())
}
