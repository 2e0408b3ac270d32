//! What the admin API reads: computers (filtered by group, state and
//! staleness), one computer with its updates and events, one update's
//! counts by state and group, and the compliance rows. Titles and KB
//! numbers come from the catalog's `updates` table, joined by update id.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::computers::{
    computer_from_row, events_of, Computer, StoredEvent, COLUMNS, LAST_CONTACT,
};
use super::status::State;
use super::{find_cid, Fleet, FleetError};
use crate::catalog::groups::{ALL_COMPUTERS, UNASSIGNED};

/// The largest page of a listing.
const MAX_PAGE: u32 = 1000;
/// Events shown with one computer.
const EVENTS_SHOWN: u32 = 200;

/// Filters of `GET /api/v1/computers`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputerQuery {
    /// In this group (by name).
    pub group: Option<String>,
    /// With an update in this state (`failed`, `needed`, ...; `unknown`:
    /// never sent a status report). With `update`: that update's state.
    pub status: Option<String>,
    /// With `status`: this update's state.
    pub update: Option<String>,
    /// Silent for `stale_after_days` (or, `false`, not).
    pub stale: Option<bool>,
    /// Case-insensitive substring of the name or the client id.
    pub q: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

/// A page of computers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComputerList {
    pub total: u64,
    pub computers: Vec<Computer>,
}

/// One update on one computer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateOnComputer {
    pub update_id: String,
    pub title: Option<String>,
    pub kb: Option<String>,
    pub state: State,
    /// The failure's HRESULT, `0x80240017`.
    pub error: Option<String>,
    /// Unix seconds the state was reported.
    pub time: i64,
}

/// `GET /api/v1/computers/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComputerDetail {
    #[serde(flatten)]
    pub computer: Computer,
    /// Counts of its updates by state (`not-applicable` and `unknown` are
    /// every other update).
    pub counts: BTreeMap<State, u64>,
    pub updates: Vec<UpdateOnComputer>,
    /// Its last events, oldest first.
    pub recent_events: Vec<StoredEvent>,
}

/// Counts of computers by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts {
    pub computers: u64,
    pub unknown: u64,
    pub not_applicable: u64,
    pub needed: u64,
    pub downloaded: u64,
    pub failed: u64,
    pub installed_pending_reboot: u64,
    pub installed: u64,
}

impl StateCounts {
    fn add(&mut self, state: State, n: u64) {
        let slot = match state {
            State::Unknown => &mut self.unknown,
            State::NotApplicable => &mut self.not_applicable,
            State::Needed => &mut self.needed,
            State::Downloaded => &mut self.downloaded,
            State::Failed => &mut self.failed,
            State::InstalledPendingReboot => &mut self.installed_pending_reboot,
            State::Installed => &mut self.installed,
        };
        *slot += n;
    }

    /// From the stored rows, how many computers there are, how many sent
    /// a status report, and how many of the rows are of computers that did
    /// not (an install event before any status report): the computers with
    /// no row are not applicable (reported) or unknown (never reported).
    fn complete(mut self, computers: u64, reported: u64, rows_unreported: u64) -> StateCounts {
        let stored = self.needed
            + self.downloaded
            + self.failed
            + self.installed_pending_reboot
            + self.installed;
        self.computers = computers;
        self.unknown = (computers - reported).saturating_sub(rows_unreported);
        self.not_applicable = reported.saturating_sub(stored - rows_unreported.min(stored));
        self
    }
}

/// One group's counts of one update.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupCounts {
    pub group: String,
    pub group_id: i64,
    #[serde(flatten)]
    pub counts: StateCounts,
}

/// `GET /api/v1/updates/{id}/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub update_id: String,
    pub title: Option<String>,
    pub kb: Option<String>,
    /// Every computer (`All Computers`).
    pub total: StateCounts,
    /// Each group, `All Computers` and `Unassigned Computers` first.
    pub groups: Vec<GroupCounts>,
}

/// One row of the compliance report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplianceRow {
    pub computer: String,
    pub computer_id: String,
    pub groups: String,
    pub update_id: String,
    pub title: String,
    pub kb: String,
    pub state: State,
    pub error: Option<i32>,
    pub time: Option<i64>,
}

impl Fleet {
    fn stale_before(&self, now: i64) -> i64 {
        now - self.settings.stale_after_days as i64 * 86_400
    }

    /// A page of computers, by name.
    pub fn computers(&self, q: &ComputerQuery, now: i64) -> Result<ComputerList, FleetError> {
        let db = self.reader();
        let stale_before = self.stale_before(now);
        let (filter, args) = self.filter(&db, q, stale_before)?;
        let total: i64 = db.query_row(
            &format!("SELECT count(*) FROM computers c WHERE {filter}"),
            rusqlite::params_from_iter(args.iter()),
            |r| r.get(0),
        )?;
        let limit = q.limit.unwrap_or(100).min(MAX_PAGE);
        let offset = q.offset.unwrap_or(0);
        let mut stmt = db.prepare(&format!(
            "SELECT {COLUMNS} FROM computers c WHERE {filter}
             ORDER BY c.name, c.id LIMIT {limit} OFFSET {offset}"
        ))?;
        let computers = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                computer_from_row(r, stale_before)
            })?
            .collect::<Result<_, _>>()?;
        Ok(ComputerList {
            total: total as u64,
            computers,
        })
    }

    /// The WHERE clause of a listing and its arguments.
    fn filter(
        &self,
        db: &Connection,
        q: &ComputerQuery,
        stale_before: i64,
    ) -> Result<(String, Vec<rusqlite::types::Value>), FleetError> {
        use rusqlite::types::Value;
        let mut clauses = vec!["1".to_owned()];
        let mut args: Vec<Value> = Vec::new();
        if let Some(name) = &q.group {
            let gid: i64 = db
                .query_row(
                    "SELECT gid FROM computer_groups WHERE name = ?1",
                    [name.trim()],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| FleetError::UnknownGroup(name.clone()))?;
            match gid {
                ALL_COMPUTERS => {}
                UNASSIGNED => clauses
                    .push("NOT EXISTS (SELECT 1 FROM group_members m WHERE m.cid = c.cid)".into()),
                _ => {
                    clauses.push(
                        "EXISTS (SELECT 1 FROM group_members m WHERE m.cid = c.cid AND m.gid = ?)"
                            .into(),
                    );
                    args.push(Value::Integer(gid));
                }
            }
        }
        if let Some(stale) = q.stale {
            let op = if stale { "<" } else { ">=" };
            clauses.push(format!("{LAST_CONTACT} {op} ?"));
            args.push(Value::Integer(stale_before));
        }
        if let Some(text) = &q.q {
            clauses.push("(lower(c.name) LIKE ? OR c.id LIKE ?)".into());
            let like = format!("%{}%", text.to_lowercase());
            args.push(Value::Text(like.clone()));
            args.push(Value::Text(like));
        }
        if let Some(status) = &q.status {
            let state = State::parse(status)
                .ok_or_else(|| FleetError::Invalid(format!("no state {status:?}")))?;
            let (clause, more) = state_clause(db, state, q.update.as_deref())?;
            clauses.push(clause);
            args.extend(more);
        } else if q.update.is_some() {
            return Err(FleetError::Invalid("`update` goes with a `status`".into()));
        }
        Ok((clauses.join(" AND "), args))
    }

    /// One computer with its updates and its last events.
    pub fn computer(&self, id: &str, now: i64) -> Result<ComputerDetail, FleetError> {
        let db = self.reader();
        let cid = find_cid(&db, id)?;
        let computer = db.query_row(
            &format!("SELECT {COLUMNS} FROM computers c WHERE c.cid = ?1"),
            [cid],
            |r| computer_from_row(r, self.stale_before(now)),
        )?;
        let mut q = db.prepare_cached(
            "SELECT su.update_id, u.title, u.kb, s.state, s.error, s.at FROM update_status s
             JOIN status_updates su ON su.n = s.n LEFT JOIN updates u ON u.id = su.update_id
             WHERE s.cid = ?1 ORDER BY s.state, u.title, su.update_id",
        )?;
        let updates: Vec<UpdateOnComputer> = q
            .query_map([cid], |r| {
                Ok(UpdateOnComputer {
                    update_id: r.get(0)?,
                    title: r.get(1)?,
                    kb: r.get(2)?,
                    state: State::from_i64(r.get(3)?),
                    error: r.get::<_, Option<i32>>(4)?.map(super::status::hresult_hex),
                    time: r.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut counts = BTreeMap::new();
        for u in &updates {
            *counts.entry(u.state).or_default() += 1;
        }
        Ok(ComputerDetail {
            computer,
            counts,
            updates,
            recent_events: events_of(&db, cid, EVENTS_SHOWN)?,
        })
    }

    /// One update's counts, in all and per group.
    pub fn update_status(&self, update_id: &str) -> Result<UpdateStatus, FleetError> {
        let update_id = update_id.to_ascii_lowercase();
        let db = self.reader();
        let (title, kb) = db
            .query_row(
                "SELECT title, kb FROM updates WHERE id = ?1",
                [&update_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((None, None));
        let since = arrived(&db, &update_id)?;
        let n: Option<i64> = db
            .prepare_cached("SELECT n FROM status_updates WHERE update_id = ?1")?
            .query_row([&update_id], |r| r.get(0))
            .optional()?;
        let n = n.unwrap_or(-1);
        let groups = group_counts(&db, n, since)?;
        let total = groups
            .iter()
            .find(|g| g.group_id == ALL_COMPUTERS)
            .map(|g| g.counts.clone())
            .unwrap_or_default();
        if title.is_none() && n < 0 {
            return Err(FleetError::Invalid(format!(
                "no update {update_id:?} in the catalog or in any report"
            )));
        }
        Ok(UpdateStatus {
            update_id,
            title,
            kb,
            total,
            groups,
        })
    }

    /// Every stored state, computer by computer (and a row of state
    /// `unknown` for a computer that never sent a status report), handed
    /// to `row` as they are read: the report streams.
    pub fn compliance(
        &self,
        mut row: impl FnMut(&ComplianceRow) -> std::io::Result<()>,
    ) -> Result<(), FleetError> {
        // Its own connection: a long export holds no lock the console needs.
        let path: String = self.reader().query_row(
            "SELECT file FROM pragma_database_list WHERE name = 'main'",
            [],
            |r| r.get(0),
        )?;
        let db = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut q = db.prepare(
            "SELECT c.name, c.id,
                    coalesce((SELECT group_concat(g.name, '; ') FROM group_members m
                      JOIN computer_groups g ON g.gid = m.gid WHERE m.cid = c.cid),
                      'Unassigned Computers'),
                    su.update_id, coalesce(u.title, ''), coalesce(u.kb, ''),
                    s.state, s.error, s.at, c.last_status
             FROM computers c
             LEFT JOIN update_status s ON s.cid = c.cid
             LEFT JOIN status_updates su ON su.n = s.n
             LEFT JOIN updates u ON u.id = su.update_id
             WHERE s.cid IS NOT NULL OR c.last_status IS NULL
             ORDER BY c.name, c.id, u.title, su.update_id",
        )?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let state: Option<i64> = r.get(6)?;
            let line = ComplianceRow {
                computer: r.get(0)?,
                computer_id: r.get(1)?,
                groups: r.get(2)?,
                update_id: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                title: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                kb: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
                state: state.map_or(State::Unknown, State::from_i64),
                error: r.get(7)?,
                time: r.get(8)?,
            };
            row(&line).map_err(|e| FleetError::Invalid(format!("writing the report: {e}")))?;
        }
        Ok(())
    }
}

/// The clause of `status` (for one update, or any).
fn state_clause(
    db: &Connection,
    state: State,
    update: Option<&str>,
) -> Result<(String, Vec<rusqlite::types::Value>), FleetError> {
    use rusqlite::types::Value;
    let n = match update {
        Some(id) => Some(
            db.query_row(
                "SELECT n FROM status_updates WHERE update_id = ?1",
                [id.to_ascii_lowercase()],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .unwrap_or(-1),
        ),
        None => None,
    };
    let since = match update {
        Some(id) => arrived(db, id)?,
        None => 0,
    };
    Ok(match (state, n) {
        (State::Unknown, Some(n)) => (
            format!(
                "{} AND NOT EXISTS
                   (SELECT 1 FROM update_status s WHERE s.cid = c.cid AND s.n = ?)",
                unreported_since("?")
            ),
            vec![Value::Integer(since), Value::Integer(n)],
        ),
        (State::Unknown, None) => ("c.last_status IS NULL".into(), vec![]),
        (State::NotApplicable, Some(n)) => (
            "c.last_status >= ? AND NOT EXISTS
               (SELECT 1 FROM update_status s WHERE s.cid = c.cid AND s.n = ?)"
                .into(),
            vec![Value::Integer(since), Value::Integer(n)],
        ),
        (State::NotApplicable, None) => (
            "c.last_status IS NOT NULL AND NOT EXISTS (SELECT 1 FROM update_status s WHERE s.cid = c.cid)"
                .into(),
            vec![],
        ),
        // Both read the `(n, state, cid)` index: for one update, its range;
        // for any, one range per update (a skip scan over the few updates).
        (state, Some(n)) => (
            "c.cid IN (SELECT s.cid FROM update_status s WHERE s.n = ? AND s.state = ?)".into(),
            vec![Value::Integer(n), Value::Integer(state as i64)],
        ),
        (state, None) => (
            "c.cid IN (SELECT s.cid FROM status_updates su
               JOIN update_status s ON s.n = su.n AND s.state = ?)"
                .into(),
            vec![Value::Integer(state as i64)],
        ),
    })
}

/// A computer that has not sent a status report since an update arrived
/// (bound to that time): what it would say of the update is unknown. One
/// whose last report came after has it not applicable, unless it listed it.
/// `param`: the time's placeholder (`?`, `?1`).
fn unreported_since(param: &str) -> String {
    format!("(c.last_status IS NULL OR c.last_status < {param})")
}

/// When update `id` came into the catalog (0: before this was recorded,
/// or not in the catalog).
fn arrived(db: &Connection, id: &str) -> Result<i64, FleetError> {
    Ok(db
        .prepare_cached("SELECT coalesce(added, 0) FROM updates WHERE id = ?1")?
        .query_row([id.to_ascii_lowercase()], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Counts of update `n` for every group: stored states by group, then the
/// group's size and how many of it have reported since the update arrived
/// (`since`, unix seconds).
fn group_counts(db: &Connection, n: i64, since: i64) -> Result<Vec<GroupCounts>, FleetError> {
    let mut by_group: BTreeMap<i64, StateCounts> = BTreeMap::new();
    let mut all =
        db.prepare_cached("SELECT state, count(*) FROM update_status WHERE n = ?1 GROUP BY state")?;
    for row in all.query_map([n], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
        let (state, count) = row?;
        by_group
            .entry(ALL_COMPUTERS)
            .or_default()
            .add(State::from_i64(state), count as u64);
    }
    let mut own = db.prepare_cached(
        "SELECT coalesce(m.gid, 2), s.state, count(*) FROM update_status s
         LEFT JOIN group_members m ON m.cid = s.cid WHERE s.n = ?1 GROUP BY 1, 2",
    )?;
    for row in own.query_map([n], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })? {
        let (gid, state, count) = row?;
        by_group
            .entry(gid)
            .or_default()
            .add(State::from_i64(state), count as u64);
    }
    // Rows of computers that have not reported since: few, by the
    // `last_status` index, unless the update is new.
    let mut unreported_rows: BTreeMap<i64, u64> = BTreeMap::new();
    let mut q = db.prepare_cached(&format!(
        "SELECT coalesce(m.gid, 2), count(*) FROM computers c
         JOIN update_status s ON s.cid = c.cid AND s.n = ?2
         LEFT JOIN group_members m ON m.cid = c.cid
         WHERE {} GROUP BY 1",
        unreported_since("?1")
    ))?;
    for row in q.query_map([since, n], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
    })? {
        let (gid, count) = row?;
        *unreported_rows.entry(gid).or_default() += count;
    }
    let all_unreported_rows: u64 = db
        .prepare_cached(&format!(
            "SELECT count(*) FROM computers c JOIN update_status s ON s.cid = c.cid AND s.n = ?2
             WHERE {}",
            unreported_since("?1")
        ))?
        .query_row([since, n], |r| r.get::<_, i64>(0))? as u64;
    unreported_rows.insert(ALL_COMPUTERS, all_unreported_rows);
    let sizes = group_sizes(db, since)?;
    let mut groups = db.prepare_cached("SELECT gid, name FROM computer_groups ORDER BY gid")?;
    let rows = groups.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (gid, group) = row?;
        let size = sizes.get(&gid).copied().unwrap_or_default();
        let (computers, reported) = (size.computers, size.computers - size.unreported);
        let counts = by_group.remove(&gid).unwrap_or_default();
        out.push(GroupCounts {
            group,
            group_id: gid,
            counts: counts.complete(
                computers,
                reported,
                unreported_rows.get(&gid).copied().unwrap_or(0),
            ),
        });
    }
    Ok(out)
}

/// A group's size, and how many of it sent no status report since a time.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    computers: u64,
    unreported: u64,
}

/// Every group's [`Size`] (unreported since `since`), from the membership
/// index and the `last_status` index: no pass over the computers table.
fn group_sizes(
    db: &Connection,
    since: i64,
) -> Result<std::collections::HashMap<i64, Size>, FleetError> {
    let mut sizes: std::collections::HashMap<i64, Size> = std::collections::HashMap::new();
    let mut q = db.prepare_cached("SELECT gid, count(*) FROM group_members GROUP BY gid")?;
    for row in q.query_map([], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
    })? {
        let (gid, n) = row?;
        sizes.entry(gid).or_default().computers = n;
    }
    let all: i64 = db.query_row("SELECT count(*) FROM computers", [], |r| r.get(0))?;
    let in_groups: i64 = db.query_row(
        "SELECT count(*) FROM (SELECT DISTINCT cid FROM group_members)",
        [],
        |r| r.get(0),
    )?;
    sizes.entry(ALL_COMPUTERS).or_default().computers = all as u64;
    sizes.entry(UNASSIGNED).or_default().computers = (all - in_groups) as u64;
    let mut q = db.prepare_cached(&format!(
        "SELECT coalesce(m.gid, 2), count(*) FROM computers c
         LEFT JOIN group_members m ON m.cid = c.cid WHERE {} GROUP BY 1",
        unreported_since("?1")
    ))?;
    for row in q.query_map([since], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
    })? {
        let (gid, n) = row?;
        sizes.entry(gid).or_default().unreported = n;
    }
    let unreported: i64 = db.query_row(
        &format!(
            "SELECT count(*) FROM computers c WHERE {}",
            unreported_since("?1")
        ),
        [since],
        |r| r.get(0),
    )?;
    sizes.entry(ALL_COMPUTERS).or_default().unreported = unreported as u64;
    Ok(sizes)
}

impl Fleet {
    /// How many computers each group has (`All Computers` and `Unassigned
    /// Computers` too).
    pub fn group_sizes(&self) -> Result<std::collections::HashMap<i64, u64>, FleetError> {
        Ok(group_sizes(&self.reader(), 0)?
            .into_iter()
            .map(|(gid, s)| (gid, s.computers))
            .collect())
    }
}
