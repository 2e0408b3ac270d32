//! A `ReportEventBatch`, stored: the events whole, their effect on the
//! computer's `update_status` rows, and the report time, in one
//! transaction. The client is told `true` only after the commit, so a
//! report it saw acknowledged is on disk, and one it did not see is sent
//! again (its effect is the same twice).
//!
//! An event the computer sent before (the same `EventInstanceID`: a
//! batch whose acknowledgement was lost, sent again) is neither stored
//! again nor applied again: a stale copy cannot move a state back.
//!
//! A batch's effects are worked out in memory first and each row is
//! written once at the end: a client that reports downloaded, then
//! installed, for the same update in one batch moves its index entry once,
//! and the 200 random places a batch touches are touched in order.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension, Transaction};

use super::status::{self, Effect, Event, State};
use super::{Fleet, FleetError};

impl Fleet {
    /// Stores a batch of client `id`'s events; returns how many were new
    /// (an event it sent before is not stored again).
    pub fn report(&self, id: &str, events: &[Event], now: i64) -> Result<usize, FleetError> {
        let mut stored = 0;
        {
            let mut db = self.db();
            // Immediate: it reads, then writes; a deferred one could find
            // its snapshot stale at the first write (a catalog commit).
            let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let cid = super::computers::cid_of(&tx, id, now)?;
            tx.prepare_cached("UPDATE computers SET last_report = ?2 WHERE cid = ?1")?
                .execute(params![cid, now])?;
            let mut batch = Batch::new(&tx, cid, now);
            for e in events {
                if !store_event(&tx, cid, now, e)? {
                    // Stored before, with its effect: a batch sent again.
                    continue;
                }
                stored += 1;
                match status::effect(e) {
                    Effect::One {
                        update_id,
                        state,
                        error,
                    } => batch.set_one(&update_id, state, error)?,
                    Effect::Status { needed, installed } => batch.set_all(&needed, &installed)?,
                    Effect::None => {}
                }
            }
            batch.write()?;
            tx.commit()?;
        }
        if stored > 0 {
            self.checkpointer.nudge();
        }
        Ok(stored)
    }
}

/// Stores an event; `false`: the computer sent it before (its instance
/// id is stored), and nothing was written.
fn store_event(tx: &Transaction<'_>, cid: i64, now: i64, e: &Event) -> rusqlite::Result<bool> {
    let stored = tx
        .prepare_cached(
            "INSERT INTO computer_events(cid, received, event_id, update_id, hresult, event, instance)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            cid,
            now,
            e.event_id_text,
            e.update_id,
            e.hresult_text,
            e.raw.to_string(),
            e.instance.as_ref().map(|i| &i[..])
        ])?;
    Ok(stored == 1)
}

/// A row as the batch leaves it: its state and failure code, or gone.
type Row = Option<(State, Option<i32>)>;

/// One computer's rows as a batch changes them, before they are written.
struct Batch<'t> {
    tx: &'t Transaction<'t>,
    cid: i64,
    now: i64,
    /// Update ids interned during this batch.
    ns: HashMap<String, i64>,
    /// Rows to write, by update `n`.
    changed: HashMap<i64, Row>,
    /// A status report came: the computer's `last_status` moves.
    status_reported: bool,
}

impl<'t> Batch<'t> {
    fn new(tx: &'t Transaction<'t>, cid: i64, now: i64) -> Self {
        Batch {
            tx,
            cid,
            now,
            ns: HashMap::new(),
            changed: HashMap::new(),
            status_reported: false,
        }
    }

    /// The `n` of an update id, interned on first sight. Looked up before
    /// it is inserted: an upsert would rewrite the existing row.
    fn n(&mut self, update_id: &str) -> rusqlite::Result<i64> {
        if let Some(&n) = self.ns.get(update_id) {
            return Ok(n);
        }
        let found: Option<i64> = self
            .tx
            .prepare_cached("SELECT n FROM status_updates WHERE update_id = ?1")?
            .query_row([update_id], |r| r.get(0))
            .optional()?;
        let n = match found {
            Some(n) => n,
            None => self
                .tx
                .prepare_cached("INSERT INTO status_updates(update_id) VALUES (?1) RETURNING n")?
                .query_row([update_id], |r| r.get(0))?,
        };
        self.ns.insert(update_id.to_owned(), n);
        Ok(n)
    }

    /// The state of update `n` now: this batch's, else the stored one.
    fn current(&self, n: i64) -> rusqlite::Result<Option<State>> {
        if let Some(row) = self.changed.get(&n) {
            return Ok(row.map(|(state, _)| state));
        }
        self.tx
            .prepare_cached("SELECT state FROM update_status WHERE cid = ?1 AND n = ?2")?
            .query_row(params![self.cid, n], |r| r.get::<_, i64>(0))
            .optional()
            .map(|s| s.map(State::from_i64))
    }

    /// One update moves (its time too, even to the same state).
    fn set_one(
        &mut self,
        update_id: &str,
        state: State,
        error: Option<i32>,
    ) -> rusqlite::Result<()> {
        let n = self.n(update_id)?;
        let state = status::next(self.current(n)?, state, false);
        let error = if state == State::Failed { error } else { None };
        self.changed.insert(n, Some((state, error)));
        Ok(())
    }

    /// A status report: the listed updates take their state, every other
    /// row of the computer goes (not applicable), and only changes are
    /// written.
    fn set_all(&mut self, needed: &[String], installed: &[String]) -> rusqlite::Result<()> {
        let mut rows: HashMap<i64, State> = self
            .tx
            .prepare_cached("SELECT n, state FROM update_status WHERE cid = ?1")?
            .query_map([self.cid], |r| Ok((r.get(0)?, State::from_i64(r.get(1)?))))?
            .collect::<Result<_, _>>()?;
        for (&n, row) in &self.changed {
            match row {
                Some((state, _)) => rows.insert(n, *state),
                None => rows.remove(&n),
            };
        }
        let listed = needed
            .iter()
            .map(|id| (id, State::Needed))
            .chain(installed.iter().map(|id| (id, State::Installed)));
        for (id, incoming) in listed {
            let n = self.n(id)?;
            let was = rows.remove(&n);
            let state = status::next(was, incoming, true);
            if was != Some(state) {
                self.changed.insert(n, Some((state, None)));
            }
        }
        for n in rows.into_keys() {
            self.changed.insert(n, None);
        }
        self.status_reported = true;
        Ok(())
    }

    /// Writes every changed row once, in index order.
    fn write(self) -> rusqlite::Result<()> {
        let mut changed: Vec<(i64, Row)> = self.changed.into_iter().collect();
        changed.sort_unstable_by_key(|&(n, _)| n);
        for (n, row) in changed {
            match row {
                Some((state, error)) => {
                    self.tx
                        .prepare_cached(
                            "INSERT INTO update_status(cid, n, state, error, at)
                             VALUES (?1, ?2, ?3, ?4, ?5)
                             ON CONFLICT(cid, n) DO UPDATE SET state = excluded.state,
                               error = excluded.error, at = excluded.at",
                        )?
                        .execute(params![self.cid, n, state as i64, error, self.now])?;
                }
                None => {
                    self.tx
                        .prepare_cached("DELETE FROM update_status WHERE cid = ?1 AND n = ?2")?
                        .execute(params![self.cid, n])?;
                }
            }
        }
        if self.status_reported {
            self.tx
                .prepare_cached("UPDATE computers SET last_status = ?2 WHERE cid = ?1")?
                .execute(params![self.cid, self.now])?;
        }
        Ok(())
    }
}
