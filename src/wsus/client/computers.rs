//! The computers that registered (`RegisterComputer`) and the events they
//! reported (`ReportEventBatch`), in the catalog's SQLite file beside the
//! catalog's tables. Versioned under `clients_schema_version` in
//! `meta_state`, so later releases migrate in place. Events are kept whole
//! (their element tree as JSON), so reports (the next issue) lose nothing.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::wsus::soap::Element;

const VERSION: i64 = 1;
const V1: &str = "
CREATE TABLE computers (
    id           TEXT PRIMARY KEY,     -- the client's id (SimpleAuth clientId)
    name         TEXT NOT NULL DEFAULT '',
    os           TEXT NOT NULL DEFAULT '',
    os_version   TEXT NOT NULL DEFAULT '',
    manufacturer TEXT NOT NULL DEFAULT '',
    model        TEXT NOT NULL DEFAULT '',
    target_group TEXT NOT NULL DEFAULT '',
    address      TEXT NOT NULL DEFAULT '',
    registered   INTEGER NOT NULL,     -- unix seconds
    last_scan    INTEGER,              -- unix seconds of the last SyncUpdates
    last_report  INTEGER
);
CREATE TABLE computer_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    computer_id TEXT NOT NULL,
    received    INTEGER NOT NULL,
    event_id    TEXT NOT NULL DEFAULT '',
    update_id   TEXT NOT NULL DEFAULT '',
    hresult     TEXT NOT NULL DEFAULT '',
    event       TEXT NOT NULL          -- the whole ReportingEvent, as JSON
);
CREATE INDEX computer_events_by_computer ON computer_events(computer_id, seq);
";

#[derive(Debug, thiserror::Error)]
pub enum ComputerError {
    #[error("computers database: {0}")]
    Db(#[from] rusqlite::Error),
}

/// A computer as `GET /api/v1/computers` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Computer {
    pub id: String,
    pub name: String,
    pub os: String,
    pub os_version: String,
    pub manufacturer: String,
    pub model: String,
    pub target_group: String,
    pub address: String,
    pub registered: i64,
    pub last_scan: Option<i64>,
    pub last_report: Option<i64>,
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

/// What a registration records.
pub struct Registration<'a> {
    pub id: &'a str,
    pub info: &'a super::requests::ComputerInfo,
    pub target_group: &'a str,
    pub address: Option<std::net::IpAddr>,
}

pub struct Computers {
    db: Mutex<Connection>,
}

impl Computers {
    /// Opens (creating or migrating the tables) `DATA/catalog.sqlite3`.
    pub fn open(data_dir: &Path) -> Result<Computers, ComputerError> {
        let conn = Connection::open(data_dir.join("catalog.sqlite3"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.busy_timeout(Duration::from_secs(30))?;
        prepare(&conn)?;
        Ok(Computers {
            db: Mutex::new(conn),
        })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, r: &Registration<'_>, now: i64) -> Result<(), ComputerError> {
        self.db().execute(
            "INSERT INTO computers(id, name, os, os_version, manufacturer, model, target_group, address, registered)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, os = excluded.os,
               os_version = excluded.os_version, manufacturer = excluded.manufacturer,
               model = excluded.model, target_group = excluded.target_group, address = excluded.address",
            params![
                r.id,
                r.info.dns_name,
                r.info.os,
                r.info.os_version,
                r.info.manufacturer,
                r.info.model,
                r.target_group,
                r.address.map(|a| a.to_string()).unwrap_or_default(),
                now
            ],
        )?;
        Ok(())
    }

    /// Notes a scan (a computer that never registered is noted too: WSUS
    /// asks a client to register only when it does not know it).
    pub fn scanned(
        &self,
        id: &str,
        address: Option<std::net::IpAddr>,
        now: i64,
    ) -> Result<(), ComputerError> {
        self.db().execute(
            "INSERT INTO computers(id, address, registered, last_scan) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT(id) DO UPDATE SET last_scan = excluded.last_scan,
               address = CASE WHEN excluded.address = '' THEN address ELSE excluded.address END",
            params![id, address.map(|a| a.to_string()).unwrap_or_default(), now],
        )?;
        Ok(())
    }

    /// Stores a batch of events of one computer, in one transaction.
    pub fn report(&self, id: &str, events: &[Element], now: i64) -> Result<usize, ComputerError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "INSERT INTO computers(id, registered, last_report) VALUES (?1, ?2, ?2)
             ON CONFLICT(id) DO UPDATE SET last_report = excluded.last_report",
            params![id, now],
        )?;
        for e in events {
            let basic = e.child("BasicData");
            let text = |path: &[&str]| {
                basic
                    .and_then(|b| b.path(path))
                    .map(|x| x.text.trim().to_owned())
                    .unwrap_or_default()
            };
            tx.prepare_cached(
                "INSERT INTO computer_events(computer_id, received, event_id, update_id, hresult, event)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                id,
                now,
                text(&["EventID"]),
                text(&["UpdateID", "UpdateID"]),
                text(&["Win32HResult"]),
                to_json(e).to_string(),
            ])?;
        }
        tx.commit()?;
        Ok(events.len())
    }

    pub fn list(&self) -> Result<Vec<Computer>, ComputerError> {
        let db = self.db();
        let mut q = db.prepare(
            "SELECT c.id, c.name, c.os, c.os_version, c.manufacturer, c.model, c.target_group,
                    c.address, c.registered, c.last_scan, c.last_report,
                    (SELECT count(*) FROM computer_events e WHERE e.computer_id = c.id)
             FROM computers c ORDER BY c.name, c.id",
        )?;
        let rows = q.query_map([], |r| {
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
                events: r.get::<_, i64>(11)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A computer's events, oldest first.
    pub fn events(&self, id: &str) -> Result<Vec<StoredEvent>, ComputerError> {
        let db = self.db();
        let mut q = db.prepare(
            "SELECT seq, received, event_id, update_id, hresult, event FROM computer_events
             WHERE computer_id = ?1 ORDER BY seq",
        )?;
        let rows = q.query_map([id], |r| {
            Ok(StoredEvent {
                seq: r.get(0)?,
                received: r.get(1)?,
                event_id: r.get(2)?,
                update_id: r.get(3)?,
                hresult: r.get(4)?,
                event: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn exists(&self, id: &str) -> Result<bool, ComputerError> {
        Ok(self
            .db()
            .query_row("SELECT 1 FROM computers WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some())
    }
}

/// An element as JSON: `{name: text}` for a leaf, `{name: [children]}` else.
fn to_json(e: &Element) -> serde_json::Value {
    let value = if e.children.is_empty() {
        serde_json::Value::String(e.text.clone())
    } else {
        serde_json::Value::Array(e.children.iter().map(to_json).collect())
    };
    serde_json::json!({ e.name.clone(): value })
}

fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    crate::metadata::apply_once(conn, "clients_schema_version", VERSION, V1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wsus::client::requests::ComputerInfo;

    #[test]
    fn computers_and_their_events_are_kept_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let c = Computers::open(dir.path()).unwrap();
        let info = ComputerInfo {
            dns_name: "pc1.example".into(),
            os: "Windows 11 Pro".into(),
            os_version: "10.0.26200".into(),
            ..ComputerInfo::default()
        };
        let reg = Registration {
            id: "e1da06a3",
            info: &info,
            target_group: "Pilot",
            address: Some("192.0.2.7".parse().unwrap()),
        };
        c.register(&reg, 100).unwrap();
        c.scanned("e1da06a3", None, 150).unwrap();
        let event = crate::wsus::soap::parse_tree(
            b"<ReportingEvent><BasicData><EventID>183</EventID><Win32HResult>0</Win32HResult>\
              <UpdateID><UpdateID>a2fef9b0</UpdateID><RevisionNumber>200</RevisionNumber></UpdateID></BasicData></ReportingEvent>",
        )
        .unwrap();
        assert_eq!(c.report("e1da06a3", &[event], 160).unwrap(), 1);
        drop(c);
        let c = Computers::open(dir.path()).unwrap();
        let list = c.list().unwrap();
        assert_eq!(list.len(), 1);
        let pc = &list[0];
        assert_eq!(
            (
                pc.name.as_str(),
                pc.address.as_str(),
                pc.last_scan,
                pc.events
            ),
            ("pc1.example", "192.0.2.7", Some(150), 1)
        );
        let events = c.events("e1da06a3").unwrap();
        assert_eq!(events[0].event_id, "183");
        assert_eq!(events[0].update_id, "a2fef9b0");
        assert!(events[0].event.to_string().contains("RevisionNumber"));
    }
}
