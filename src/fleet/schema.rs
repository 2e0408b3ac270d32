//! The fleet's tables, in the catalog's SQLite file beside the catalog's
//! (the groups they name are the catalog's `computer_groups`). Versioned
//! under `clients_schema_version` in `meta_state`, the line the update
//! server's first computers table started, so a data directory of any
//! earlier release migrates in place.
//!
//! Sized for 50,000 computers × 2,000 updates: the state of each update on
//! each computer is one row of `update_status`, written when a report
//! changes it and never recomputed from the raw events on a read. Its
//! primary key serves one computer's page; the `(n, state, cid)` index
//! serves one update's counts without touching the table.

use rusqlite::Connection;

/// Release 0.1.0: computers by their client id, events whole.
pub(super) const V1: &str = "
CREATE TABLE computers (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL DEFAULT '',
    os           TEXT NOT NULL DEFAULT '',
    os_version   TEXT NOT NULL DEFAULT '',
    manufacturer TEXT NOT NULL DEFAULT '',
    model        TEXT NOT NULL DEFAULT '',
    target_group TEXT NOT NULL DEFAULT '',
    address      TEXT NOT NULL DEFAULT '',
    registered   INTEGER NOT NULL,
    last_scan    INTEGER,
    last_report  INTEGER
);
CREATE TABLE computer_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    computer_id TEXT NOT NULL,
    received    INTEGER NOT NULL,
    event_id    TEXT NOT NULL DEFAULT '',
    update_id   TEXT NOT NULL DEFAULT '',
    hresult     TEXT NOT NULL DEFAULT '',
    event       TEXT NOT NULL
);
CREATE INDEX computer_events_by_computer ON computer_events(computer_id, seq);
";

/// Integer keys (a computer's `cid`, an update's `n`), group memberships,
/// and the state of every update on every computer.
const V2: &str = "
CREATE TABLE computers_v2 (
    cid          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,   -- the client's id (SimpleAuth clientId)
    name         TEXT NOT NULL DEFAULT '',
    os           TEXT NOT NULL DEFAULT '',
    os_version   TEXT NOT NULL DEFAULT '',
    manufacturer TEXT NOT NULL DEFAULT '',
    model        TEXT NOT NULL DEFAULT '',
    target_group TEXT NOT NULL DEFAULT '', -- what the client asks for (client-side targeting)
    address      TEXT NOT NULL DEFAULT '',
    registered   INTEGER NOT NULL,       -- unix seconds
    last_scan    INTEGER,                -- the last SyncUpdates
    last_report  INTEGER,                -- the last ReportEventBatch
    last_status  INTEGER                 -- the last status report (what is installed, what is needed)
);
INSERT INTO computers_v2(id, name, os, os_version, manufacturer, model, target_group, address,
                         registered, last_scan, last_report)
    SELECT id, name, os, os_version, manufacturer, model, target_group, address,
           registered, last_scan, last_report FROM computers ORDER BY registered, id;
CREATE TABLE computer_events_v2 (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    cid       INTEGER NOT NULL REFERENCES computers_v2(cid) ON DELETE CASCADE,
    received  INTEGER NOT NULL,
    event_id  TEXT NOT NULL DEFAULT '',
    update_id TEXT NOT NULL DEFAULT '',
    hresult   TEXT NOT NULL DEFAULT '',
    event     TEXT NOT NULL              -- the whole ReportingEvent, as JSON
);
INSERT INTO computer_events_v2(seq, cid, received, event_id, update_id, hresult, event)
    SELECT e.seq, c.cid, e.received, e.event_id, e.update_id, e.hresult, e.event
    FROM computer_events e JOIN computers_v2 c ON c.id = e.computer_id ORDER BY e.seq;
DROP TABLE computer_events;
DROP TABLE computers;
ALTER TABLE computers_v2 RENAME TO computers;
ALTER TABLE computer_events_v2 RENAME TO computer_events;
CREATE INDEX computer_events_by_computer ON computer_events(cid, seq);
CREATE TABLE group_members (
    cid INTEGER NOT NULL REFERENCES computers(cid) ON DELETE CASCADE,
    gid INTEGER NOT NULL REFERENCES computer_groups(gid) ON DELETE CASCADE,
    PRIMARY KEY (cid, gid)
) WITHOUT ROWID;
CREATE INDEX group_members_by_group ON group_members(gid, cid);
CREATE TABLE status_updates (
    n         INTEGER PRIMARY KEY,
    update_id TEXT NOT NULL UNIQUE       -- lowercase
);
CREATE TABLE update_status (
    cid   INTEGER NOT NULL REFERENCES computers(cid) ON DELETE CASCADE,
    n     INTEGER NOT NULL REFERENCES status_updates(n),
    state INTEGER NOT NULL,              -- status::State
    error INTEGER,                       -- the HRESULT of a failure
    at    INTEGER NOT NULL,              -- unix seconds the state was reported
    PRIMARY KEY (cid, n)
) WITHOUT ROWID;
CREATE INDEX update_status_by_update ON update_status(n, state, cid);
CREATE INDEX computers_unreported ON computers(cid) WHERE last_status IS NULL;
";

/// Computers by the time of their last status report: the ones that have
/// not reported since an update arrived are a range of it (their state of
/// that update is unknown).
const V3: &str = "
DROP INDEX computers_unreported;
CREATE INDEX computers_by_last_status ON computers(last_status);
";

/// Memberships for followers. On a primary, `groups_changed` is the
/// catalog's change number (`change_seq`) of the last change to a
/// computer's groups, so that a follower asks for the computers whose
/// groups moved since its last pull (those in groups now are stamped here,
/// so a follower's first pull brings them). On a follower,
/// `primary_members` holds the primary's memberships by client id, for
/// computers this node has not seen too: one that registers or scans here
/// later is put in its groups as its row is made.
const V4: &str = "
ALTER TABLE computers ADD COLUMN groups_changed INTEGER;
CREATE INDEX computers_groups_changed ON computers(groups_changed, cid)
    WHERE groups_changed IS NOT NULL;
UPDATE computers SET groups_changed = (SELECT seq FROM change_seq)
    WHERE cid IN (SELECT cid FROM group_members);
CREATE TABLE primary_members (
    id  TEXT NOT NULL,                   -- the client's id
    gid INTEGER NOT NULL REFERENCES computer_groups(gid) ON DELETE CASCADE,
    PRIMARY KEY (id, gid)
) WITHOUT ROWID;
CREATE INDEX primary_members_by_group ON primary_members(gid);
CREATE TRIGGER computers_from_primary AFTER INSERT ON computers BEGIN
    INSERT OR IGNORE INTO group_members(cid, gid)
        SELECT NEW.cid, gid FROM primary_members WHERE id = NEW.id;
END;
";

/// Each event once.
///
/// `instance` is the event's `EventInstanceID` (16 bytes), unique per
/// computer: a batch sent again adds nothing. The index is keyed by the
/// computer first, so a batch's lookups and inserts land on the few pages
/// of that computer, and it is partial: events without an instance id
/// (and every event stored before this version, whose column is NULL, so
/// duplicates stored by an earlier release cannot fail the migration) are
/// not in it. (Retention needs no index of its own: the oldest events are
/// the first by `seq`. An index on `received` made a batch ~10% slower.)
const V5: &str = "
ALTER TABLE computer_events ADD COLUMN instance BLOB;
CREATE UNIQUE INDEX computer_events_once ON computer_events(cid, instance)
    WHERE instance IS NOT NULL;
";

/// A follower's memberships for its own followers. `primary_computers`
/// stamps each client id the primary's memberships named with this node's
/// change number (`change_seq`) of the pull that last brought its groups,
/// or of the full pull that replaced them all; a follower of this follower
/// asks for the ones stamped since its last pull, as it would ask a
/// primary by `computers.groups_changed`. A row stays when its computer
/// leaves every group: that is a change to pass on too.
const V6: &str = "
CREATE TABLE primary_computers (
    pcid    INTEGER PRIMARY KEY,
    id      TEXT NOT NULL UNIQUE,        -- the client's id
    changed INTEGER NOT NULL             -- change_seq of the pull that brought its groups
);
CREATE INDEX primary_computers_changed ON primary_computers(changed, pcid);
INSERT INTO primary_computers(id, changed)
    SELECT DISTINCT id, (SELECT seq FROM change_seq) FROM primary_members ORDER BY id;
";

/// Creates or migrates the tables (the catalog's must exist: the groups).
pub fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    prepare_to(conn, 6)
}

/// [`prepare`] up to version `last` (tests make older data directories).
pub(super) fn prepare_to(conn: &Connection, last: i64) -> rusqlite::Result<()> {
    let key = "clients_schema_version";
    let steps: [(i64, &str); 6] = [(1, V1), (2, V2), (3, V3), (4, V4), (5, V5), (6, V6)];
    for (version, ddl) in steps.into_iter().take_while(|&(v, _)| v <= last) {
        // Foreign keys off while V2 rebuilds and renames the tables.
        conn.pragma_update(
            None,
            "foreign_keys",
            if version == 2 { "OFF" } else { "ON" },
        )?;
        crate::metadata::apply_once(conn, key, version, ddl)?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")
}
