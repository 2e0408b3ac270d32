//! A `ReportEventBatch`, stored: the events whole, their effect on the
//! computer's `update_status` rows, and the report time, in one
//! transaction. The client is told `true` only after the commit, so a
//! report it saw acknowledged is on disk, and one it did not see is sent
//! again (its effect is the same twice).

use std::collections::HashMap;

use rusqlite::{params, Transaction};

use super::status::{self, Effect, Event, State};
use super::{Fleet, FleetError};

impl Fleet {
    /// Stores a batch of client `id`'s events; returns how many.
    pub fn report(&self, id: &str, events: &[Event], now: i64) -> Result<usize, FleetError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let cid = super::computers::cid_of(&tx, id, now)?;
        tx.prepare_cached("UPDATE computers SET last_report = ?2 WHERE cid = ?1")?
            .execute(params![cid, now])?;
        for e in events {
            tx.prepare_cached(
                "INSERT INTO computer_events(cid, received, event_id, update_id, hresult, event)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                cid,
                now,
                e.event_id_text,
                e.update_id,
                e.hresult_text,
                e.raw.to_string()
            ])?;
            match status::effect(e) {
                Effect::One {
                    update_id,
                    state,
                    error,
                } => set_one(&tx, cid, &update_id, state, error, now)?,
                Effect::Status { needed, installed } => {
                    set_all(&tx, cid, &needed, &installed, now)?
                }
                Effect::None => {}
            }
        }
        tx.commit()?;
        Ok(events.len())
    }
}

/// The `n` of an update id (interned on first sight).
fn update_n(tx: &Transaction<'_>, update_id: &str) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO status_updates(update_id) VALUES (?1)
         ON CONFLICT(update_id) DO UPDATE SET update_id = update_id RETURNING n",
    )?
    .query_row([update_id], |r| r.get(0))
}

fn current(tx: &Transaction<'_>, cid: i64, n: i64) -> rusqlite::Result<Option<State>> {
    use rusqlite::OptionalExtension;
    tx.prepare_cached("SELECT state FROM update_status WHERE cid = ?1 AND n = ?2")?
        .query_row(params![cid, n], |r| r.get::<_, i64>(0))
        .optional()
        .map(|s| s.map(State::from_i64))
}

fn write(
    tx: &Transaction<'_>,
    cid: i64,
    n: i64,
    state: State,
    error: Option<i32>,
    now: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO update_status(cid, n, state, error, at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(cid, n) DO UPDATE SET state = excluded.state, error = excluded.error,
           at = excluded.at",
    )?
    .execute(params![cid, n, state as i64, error, now])?;
    Ok(())
}

fn set_one(
    tx: &Transaction<'_>,
    cid: i64,
    update_id: &str,
    state: State,
    error: Option<i32>,
    now: i64,
) -> rusqlite::Result<()> {
    let n = update_n(tx, update_id)?;
    let was = current(tx, cid, n)?;
    let state = status::next(was, state, false);
    let error = if state == State::Failed { error } else { None };
    write(tx, cid, n, state, error, now)
}

/// A status report: the listed updates take their state, every other row
/// of the computer goes (not applicable), and only changes are written.
fn set_all(
    tx: &Transaction<'_>,
    cid: i64,
    needed: &[String],
    installed: &[String],
    now: i64,
) -> rusqlite::Result<()> {
    let mut rows: HashMap<i64, State> = tx
        .prepare_cached("SELECT n, state FROM update_status WHERE cid = ?1")?
        .query_map([cid], |r| Ok((r.get(0)?, State::from_i64(r.get(1)?))))?
        .collect::<Result<_, _>>()?;
    let listed = needed
        .iter()
        .map(|id| (id, State::Needed))
        .chain(installed.iter().map(|id| (id, State::Installed)));
    for (id, incoming) in listed {
        let n = update_n(tx, id)?;
        let was = rows.remove(&n);
        let state = status::next(was, incoming, true);
        if was != Some(state) {
            write(tx, cid, n, state, None, now)?;
        }
    }
    for n in rows.into_keys() {
        tx.prepare_cached("DELETE FROM update_status WHERE cid = ?1 AND n = ?2")?
            .execute(params![cid, n])?;
    }
    tx.prepare_cached("UPDATE computers SET last_status = ?2 WHERE cid = ?1")?
        .execute(params![cid, now])?;
    Ok(())
}
