//! Who needs what: the computers that scan against upcache, the groups
//! they are in, and the state of every update on each, from what they
//! report over [MS-WUSP] (`RegisterComputer`, `SyncUpdates`,
//! `ReportEventBatch`).
//!
//! - `schema`: the tables, in the catalog's SQLite file, migrated in place;
//! - `computers`: registration and the times of last contact;
//! - `groups`: which groups a computer is in, set by an administrator or
//!   by the client's own target group names (`targeting = "client"`);
//!   the groups themselves, and approvals per group, are the catalog's;
//! - `status`: the states of an update on a computer and how an event
//!   moves them (pure);
//! - `report`: a batch of events stored with its effect, in one transaction;
//! - `checkpoint`: the WAL copied back to the database off the report path;
//! - `attention`: the updates computers need that no group approved;
//! - `views`: what the admin API reads (listings, one computer, one
//!   update's counts per group, the compliance rows).
//!
//! One writer connection and one reader: a burst of reports never holds
//! up the console, and the reads see the last committed state (WAL).

pub mod attention;
mod checkpoint;
pub mod computers;
pub mod groups;
mod report;
mod schema;
pub mod status;
pub mod views;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

pub use computers::{Computer, Registration, StoredEvent};
pub use status::{Event, State};

/// Who decides which groups a computer is in.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Targeting {
    /// Administrators (API, CLI, console).
    #[default]
    Server,
    /// The client: the target group names its policy sets (`TargetGroup`),
    /// sent with every authorization; names no group has are ignored.
    Client,
}

/// Computers, groups and status reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct FleetSettings {
    /// Who puts computers in groups: `server` (administrators) or `client`
    /// (the target group names the client sends, as WSUS's client-side
    /// targeting).
    pub targeting: Targeting,
    /// A computer silent this many days (no scan, no report) is stale.
    pub stale_after_days: u64,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            targeting: Targeting::Server,
            stale_after_days: 30,
        }
    }
}

impl FleetSettings {
    pub fn validate(&self) -> Result<(), crate::settings::Invalid> {
        if self.stale_after_days == 0 {
            return Err(crate::settings::Invalid {
                setting: "stale_after_days",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// Why a fleet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("fleet database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("no computer {0:?}")]
    UnknownComputer(String),
    #[error("no group {0:?}")]
    UnknownGroup(String),
    #[error("{0}")]
    Invalid(String),
    #[error("group membership is the clients' (targeting = \"client\")")]
    ClientTargeting,
    #[error("starting the fleet's checkpoint thread: {0}")]
    Thread(std::io::Error),
}

/// The database file read through a memory map up to this size: a report
/// lands on a few hundred random pages of the status index, and reading
/// each with a system call was a third of a batch's time.
const MMAP_BYTES: i64 = 4 << 30;

/// The fleet's store.
pub struct Fleet {
    db: Mutex<Connection>,
    reader: Mutex<Connection>,
    checkpointer: checkpoint::Checkpointer,
    settings: FleetSettings,
}

impl Fleet {
    /// Opens (creating or migrating the tables) `DATA/catalog.sqlite3`;
    /// the catalog must have been opened first (its groups).
    pub fn open(data_dir: &Path, settings: FleetSettings) -> Result<Fleet, FleetError> {
        let path = data_dir.join("catalog.sqlite3");
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: an acknowledged report survives power loss, as an approval does.
        // NORMAL (in WAL mode): a committed report survives a crash or a
        // kill of upcache, not a power loss in the last moments before
        // the next checkpoint. FULL's fsync at every batch costs ~10 ms;
        // a 200-event batch is stored in under 5 ms without it.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Reports land at random places of the status index (50,000
        // computers × 2,000 updates is ~10 M rows): 32 MB of pages kept.
        conn.pragma_update(None, "cache_size", -32768)?;
        conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            checkpoint::WRITER_BACKSTOP_PAGES,
        )?;
        conn.busy_timeout(Duration::from_secs(30))?;
        schema::prepare(&conn)?;
        let reader = Connection::open(&path)?;
        reader.pragma_update(None, "query_only", "ON")?;
        reader.pragma_update(None, "mmap_size", MMAP_BYTES)?;
        reader.busy_timeout(Duration::from_secs(30))?;
        Ok(Fleet {
            db: Mutex::new(conn),
            reader: Mutex::new(reader),
            checkpointer: checkpoint::Checkpointer::start(&path)?,
            settings,
        })
    }

    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `cid` of client `id`, which must be known.
fn find_cid(db: &Connection, id: &str) -> Result<i64, FleetError> {
    use rusqlite::OptionalExtension;
    db.prepare_cached("SELECT cid FROM computers WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| FleetError::UnknownComputer(id.to_owned()))
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
