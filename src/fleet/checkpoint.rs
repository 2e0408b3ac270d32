//! WAL checkpoints off the report path.
//!
//! A batch of 200 events changes a few hundred pages spread over the
//! status index; SQLite's automatic checkpoint (every 1,000 WAL pages, run
//! by whichever commit crosses the line) then copies them into the
//! database and syncs it, which made every second or third report wait
//! 30–40 ms for work that was not its own. Here the writer leaves that to
//! a thread of its own, nudged after each commit: a report costs its own
//! rows, and the commits made while one checkpoint runs share the next.
//!
//! The writer keeps a high automatic threshold as a backstop, so the WAL
//! stays bounded even if this thread falls behind.

use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Duration;

use rusqlite::Connection;

use super::FleetError;

/// Pages the WAL may grow to before the writer checkpoints itself.
pub(super) const WRITER_BACKSTOP_PAGES: i64 = 8_000;

/// The handle the writer nudges; the thread ends when it is dropped.
pub(super) struct Checkpointer {
    nudge: SyncSender<()>,
}

impl Checkpointer {
    /// Starts the thread with its own connection to `path`.
    pub(super) fn start(path: &Path) -> Result<Checkpointer, FleetError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let (nudge, nudged) = sync_channel(1);
        std::thread::Builder::new()
            .name("fleet-checkpoint".into())
            .spawn(move || run(conn, nudged))
            .map_err(FleetError::Thread)?;
        Ok(Checkpointer { nudge })
    }

    /// Something was committed: checkpoint soon. Never blocks.
    pub(super) fn nudge(&self) {
        let _ = self.nudge.try_send(());
    }
}

fn run(conn: Connection, nudged: Receiver<()>) {
    while nudged.recv().is_ok() {
        // PASSIVE: copies what no reader still needs, never waits for a
        // writer or blocks one.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "fleet WAL checkpoint (the writer's backstop still applies)");
        }
    }
}
