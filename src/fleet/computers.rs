//! The computers that registered (`RegisterComputer`) or scanned, and the
//! times they were last heard from. A computer is its client id; the
//! integer `cid` keys everything else.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{find_cid, Fleet, FleetError};

/// What a registration records (`RegisterComputer`'s `computerInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    pub id: String,
    pub name: String,
    pub os: String,
    pub os_version: String,
    pub manufacturer: String,
    pub model: String,
    /// The target group names the client asked for (`;`-separated).
    pub target_group: String,
    pub address: Option<std::net::IpAddr>,
}

/// A computer as the listings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Computer {
    pub id: String,
    pub name: String,
    pub os: String,
    pub os_version: String,
    pub manufacturer: String,
    pub model: String,
    /// The target group names the client asks for.
    pub target_group: String,
    pub address: String,
    pub registered: i64,
    pub last_scan: Option<i64>,
    pub last_report: Option<i64>,
    /// The last status report (its installed and needed updates).
    pub last_status: Option<i64>,
    /// Unix seconds of the last scan, report or registration.
    pub last_contact: i64,
    /// Silent for `stale_after_days`.
    pub stale: bool,
    /// The groups it is in (`Unassigned Computers` when none of its own).
    pub groups: Vec<String>,
    /// How many of its events are kept (each once; `event_retention_days`
    /// deletes old ones).
    pub events: u64,
}

/// One stored event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub received: i64,
    pub event_id: String,
    pub update_id: String,
    pub hresult: String,
    pub event: serde_json::Value,
}

/// The columns [`computer_from_row`] reads, for a table aliased `c`.
pub(super) const COLUMNS: &str = "c.id, c.name, c.os, c.os_version, c.manufacturer, c.model,
    c.target_group, c.address, c.registered, c.last_scan, c.last_report, c.last_status,
    max(c.registered, coalesce(c.last_scan, 0), coalesce(c.last_report, 0)),
    (SELECT count(*) FROM computer_events e WHERE e.cid = c.cid),
    (SELECT group_concat(g.name, char(10)) FROM group_members m
       JOIN computer_groups g ON g.gid = m.gid WHERE m.cid = c.cid)";

/// The SQL of "last heard from", for a table aliased `c`.
pub(super) const LAST_CONTACT: &str =
    "max(c.registered, coalesce(c.last_scan, 0), coalesce(c.last_report, 0))";

pub(super) fn computer_from_row(
    r: &rusqlite::Row<'_>,
    stale_before: i64,
) -> rusqlite::Result<Computer> {
    let last_contact: i64 = r.get(12)?;
    let groups: Option<String> = r.get(14)?;
    let mut groups: Vec<String> = groups
        .map(|g| g.split('\n').map(str::to_owned).collect())
        .unwrap_or_default();
    groups.sort();
    if groups.is_empty() {
        groups.push("Unassigned Computers".into());
    }
    Ok(Computer {
        id: r.get(0)?,
        name: r.get(1)?,
        os: r.get(2)?,
        os_version: r.get(3)?,
        manufacturer: r.get(4)?,
        model: r.get(5)?,
        target_group: r.get(6)?,
        address: r.get(7)?,
        registered: r.get(8)?,
        last_scan: r.get(9)?,
        last_report: r.get(10)?,
        last_status: r.get(11)?,
        last_contact,
        stale: last_contact < stale_before,
        groups,
        events: r.get::<_, i64>(13)? as u64,
    })
}

/// The `cid` of client `id`, created at `now` if new.
pub(super) fn cid_of(db: &Connection, id: &str, now: i64) -> rusqlite::Result<i64> {
    db.prepare_cached(
        "INSERT INTO computers(id, registered) VALUES (?1, ?2)
         ON CONFLICT(id) DO UPDATE SET id = id RETURNING cid",
    )?
    .query_row(params![id, now], |r| r.get(0))
}

fn address_text(a: Option<std::net::IpAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_default()
}

impl Fleet {
    /// Records a registration (again: the details are replaced).
    pub fn register(&self, r: &Registration, now: i64) -> Result<(), FleetError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "INSERT INTO computers(id, name, os, os_version, manufacturer, model, target_group, address, registered)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, os = excluded.os,
               os_version = excluded.os_version, manufacturer = excluded.manufacturer,
               model = excluded.model, target_group = excluded.target_group, address = excluded.address",
            params![
                r.id,
                r.name,
                r.os,
                r.os_version,
                r.manufacturer,
                r.model,
                r.target_group,
                address_text(r.address),
                now
            ],
        )?;
        let cid = find_cid(&tx, &r.id)?;
        self.follow_targeting(&tx, cid, &r.target_group)?;
        tx.commit()?;
        Ok(())
    }

    /// Notes a scan (`SyncUpdates`) of client `id`, asking for
    /// `target_group`; returns the groups it is in, for the scan's
    /// approvals. A computer that never registered is noted too: WSUS asks
    /// a client to register only when it does not know it.
    pub fn scanned(
        &self,
        id: &str,
        target_group: &str,
        address: Option<std::net::IpAddr>,
        now: i64,
    ) -> Result<Vec<i64>, FleetError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let cid: i64 = tx
            .prepare_cached(
                "INSERT INTO computers(id, target_group, address, registered, last_scan)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT(id) DO UPDATE SET last_scan = excluded.last_scan,
                   target_group = excluded.target_group,
                   address = CASE WHEN excluded.address = '' THEN address ELSE excluded.address END
                 RETURNING cid",
            )?
            .query_row(params![id, target_group, address_text(address), now], |r| {
                r.get(0)
            })?;
        self.follow_targeting(&tx, cid, target_group)?;
        let groups = super::groups::of_cid(&tx, cid)?;
        tx.commit()?;
        Ok(groups)
    }

    pub fn exists(&self, id: &str) -> Result<bool, FleetError> {
        Ok(self
            .reader()
            .prepare_cached("SELECT 1 FROM computers WHERE id = ?1")?
            .query_row([id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// A computer's last `limit` events, oldest first.
    pub fn events(&self, id: &str, limit: u32) -> Result<Vec<StoredEvent>, FleetError> {
        let db = self.reader();
        let cid = find_cid(&db, id)?;
        events_of(&db, cid, limit)
    }
}

pub(super) fn events_of(
    db: &Connection,
    cid: i64,
    limit: u32,
) -> Result<Vec<StoredEvent>, FleetError> {
    let mut q = db.prepare_cached(
        "SELECT seq, received, event_id, update_id, hresult, event FROM computer_events
         WHERE cid = ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let rows = q.query_map(params![cid, limit], |r| {
        Ok(StoredEvent {
            seq: r.get(0)?,
            received: r.get(1)?,
            event_id: r.get(2)?,
            update_id: r.get(3)?,
            hresult: r.get(4)?,
            event: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
        })
    })?;
    let mut events: Vec<StoredEvent> = rows.collect::<Result<_, _>>()?;
    events.reverse();
    Ok(events)
}
