//! Events are kept `event_retention_days` (default 90), then deleted; the
//! states they set in `update_status` stay, as do the computers (a silent
//! computer is flagged stale, never removed).
//!
//! `computer_events` holds every event whole (about 1 KB each) and would
//! otherwise grow forever. The deletion runs hourly on a thread of the
//! blocking pool, in transactions of [`BATCH_ROWS`] rows: the writer is
//! shared with `ReportEventBatch`, and a report waits at most for one such
//! batch.
//!
//! Events go in the order they were stored (`seq`), up to the first one
//! received within the retention period: no index on `received` (it cost
//! every batch of reports ~10%), and each pass reads only the rows it
//! deletes. The order of storing is the order of `received`, except for
//! reports a follower forwarded late (they carry the time their client
//! sent them): such an event is deleted once the events stored before it
//! are old enough too, late by as long as it was held.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Fleet, FleetError};

/// Rows deleted per transaction.
pub const BATCH_ROWS: usize = 10_000;
/// How often old events are looked for.
const EVERY: Duration = Duration::from_secs(3600);
/// A pause between two batches, so reports waiting for the writer get it.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    pub events: u64,
    /// Transactions it took.
    pub batches: u64,
}

impl Fleet {
    /// Deletes the events received more than `event_retention_days` before
    /// `now` (nothing with `0`), while `go_on()` says so between batches.
    pub fn expire_events(&self, now: i64, go_on: impl Fn() -> bool) -> Result<Expired, FleetError> {
        match self.settings.event_retention_days {
            0 => Ok(Expired::default()),
            days => {
                let before = now.saturating_sub((days as i64).saturating_mul(86_400));
                self.expire_before(before, BATCH_ROWS, go_on)
            }
        }
    }

    /// Deletes the events received before `before`, `rows` at a time.
    pub(super) fn expire_before(
        &self,
        before: i64,
        rows: usize,
        go_on: impl Fn() -> bool,
    ) -> Result<Expired, FleetError> {
        let mut done = Expired::default();
        while go_on() {
            let (deleted, more) = {
                let mut db = self.db();
                // Immediate: read then delete, as the catalog's writers do.
                let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                // The first `rows` events; those before the first one
                // received since `before` go.
                let first: Vec<(i64, i64)> = tx
                    .prepare_cached(
                        "SELECT seq, received FROM computer_events ORDER BY seq LIMIT ?1",
                    )?
                    .query_map([rows as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                let old = first.iter().take_while(|&&(_, at)| at < before).count();
                let deleted = match old.checked_sub(1).map(|i| first[i].0) {
                    Some(last) => tx
                        .prepare_cached("DELETE FROM computer_events WHERE seq <= ?1")?
                        .execute([last])?,
                    None => 0,
                };
                tx.commit()?;
                (deleted, old == rows)
            };
            if deleted == 0 {
                break;
            }
            done.events += deleted as u64;
            done.batches += 1;
            self.checkpointer.nudge();
            if !more {
                break;
            }
            std::thread::sleep(BETWEEN_BATCHES);
        }
        Ok(done)
    }
}

/// Expires events now and every hour until `shutdown` (which also ends a
/// pass under way after its current batch).
pub async fn run(fleet: Arc<Fleet>, shutdown: CancellationToken) {
    if fleet.settings().event_retention_days == 0 {
        return;
    }
    loop {
        let (f, stop) = (fleet.clone(), shutdown.clone());
        let pass = move || f.expire_events(super::now(), || !stop.is_cancelled());
        match tokio::task::spawn_blocking(pass).await {
            Ok(Ok(e)) if e.events > 0 => {
                tracing::info!(
                    events = e.events,
                    batches = e.batches,
                    "deleted events past event_retention_days"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "deleting old fleet events"),
            Err(e) => tracing::warn!(error = %e, "deleting old fleet events"),
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
