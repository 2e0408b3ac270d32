//! How the primary sees the whole fleet: a follower keeps every report its
//! clients make (a [`ClientReport`]) in an outbox until its primary has
//! it, and the primary remembers, per follower, the last report it applied.
//!
//! Why the follower pushes and the primary does not pull: the follower
//! knows its primary (URL, token, CA), as it already pulls the catalog
//! from it, and the primary knows nothing of its followers. The outbox is
//! a table of the catalog file, committed (`synchronous=FULL`) before the
//! report is applied here and before the client is answered: a report the
//! client was told was taken is on disk for the primary, whatever happens
//! to the process next.
//!
//! Reports are numbered by the outbox (`seq`, never reused) and sent in
//! that order (`node::forward`), under the follower's random origin name.
//! The primary applies the reports past its mark for that origin and moves
//! the mark report by report, so a batch sent again after a lost answer is
//! skipped, not counted twice. The follower deletes what the primary says
//! it has.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::requests::ComputerInfo;
use crate::wsus::soap::Element;

const VERSION: i64 = 1;
const V1: &str = "
CREATE TABLE report_outbox (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: the primary's mark relies on it
    report TEXT NOT NULL                        -- a ClientReport, as JSON
);
CREATE TABLE report_origin (name TEXT NOT NULL); -- this node as a sender, chosen once
INSERT INTO report_origin VALUES (lower(hex(randomblob(16))));
CREATE TABLE reports_applied (
    origin  TEXT PRIMARY KEY,                   -- a follower's report_origin
    through INTEGER NOT NULL                    -- the last of its seqs applied here
);
";

/// What a client reported, its cookie checked: the way every report
/// enters the node (`ClientServices::take`), so that a follower can keep
/// it for its primary, which applies it with the same code. A new kind of
/// report is a new variant, and reaches the primary with no other change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClientReport {
    /// `RegisterComputer`.
    Registered {
        id: String,
        info: ComputerInfo,
        target_group: String,
        /// The client's address, as the node it reported to saw it.
        address: Option<std::net::IpAddr>,
        /// Unix seconds on the node that took it.
        at: i64,
    },
    /// A `SyncUpdates` scan.
    Scanned {
        id: String,
        target_group: String,
        address: Option<std::net::IpAddr>,
        at: i64,
    },
    /// `ReportEventBatch`: the events, whole.
    Events {
        id: String,
        events: Vec<Element>,
        at: i64,
    },
}

/// A batch of reports as a follower sends it to its primary.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardBatch {
    /// The sending node's origin name.
    pub origin: String,
    /// Reports in the order they were taken, `seq` increasing.
    pub reports: Vec<Forwarded>,
}

/// One report of a batch.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forwarded {
    pub seq: i64,
    pub report: ClientReport,
}

/// The primary's answer: every seq up to this one is applied there.
#[derive(Debug, Serialize, Deserialize)]
pub struct Applied {
    pub applied_through: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("report outbox: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("forwarded reports must come in increasing seq order ({seq} after {after})")]
    OutOfOrder { seq: i64, after: i64 },
}

/// The outbox (on a follower) and the marks of what was applied (on a
/// primary), on their own connection to the catalog file.
pub struct Outbox {
    db: Mutex<Connection>,
    /// On a follower: every report is kept for the primary.
    keeping: AtomicBool,
    /// Woken when a report joins the outbox.
    queued: Arc<tokio::sync::Notify>,
}

impl Outbox {
    /// Opens (creating the tables) `DATA/catalog.sqlite3`.
    pub fn open(data_dir: &Path) -> Result<Outbox, OutboxError> {
        let conn = Connection::open(data_dir.join("catalog.sqlite3"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // A report is acknowledged once committed: it must survive a crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(30))?;
        crate::metadata::apply_once(&conn, "report_outbox_schema_version", VERSION, V1)?;
        Ok(Outbox {
            db: Mutex::new(conn),
            keeping: AtomicBool::new(false),
            queued: Arc::default(),
        })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on every report is kept for the primary (a follower's,
    /// before its listeners open); the signal wakes the sender when one is.
    pub fn keep_for_primary(&self) -> Arc<tokio::sync::Notify> {
        self.keeping.store(true, Ordering::SeqCst);
        self.queued.clone()
    }

    /// Keeps `report` for the primary, if this node has one.
    pub fn keep(&self, report: &ClientReport) -> Result<(), OutboxError> {
        if !self.keeping.load(Ordering::SeqCst) {
            return Ok(());
        }
        let json = serde_json::to_string(report).expect("a report serializes");
        self.db()
            .prepare_cached("INSERT INTO report_outbox(report) VALUES (?1)")?
            .execute([json])?;
        self.queued.notify_one();
        Ok(())
    }

    /// The oldest reports waiting, as the JSON body of a [`ForwardBatch`],
    /// and the last seq in it: at most `max_reports`, and no more than
    /// `max_bytes` of reports unless the first alone is larger (it must go
    /// too, or it would hold every later one back).
    pub fn next_batch(
        &self,
        max_reports: usize,
        max_bytes: usize,
    ) -> Result<Option<(String, i64)>, OutboxError> {
        let db = self.db();
        let origin: String = db.query_row("SELECT name FROM report_origin", [], |r| r.get(0))?;
        let mut q =
            db.prepare_cached("SELECT seq, report FROM report_outbox ORDER BY seq LIMIT ?1")?;
        let mut rows = q.query([max_reports as i64])?;
        // The stored JSON goes into the body as it is: no parse and re-encode.
        let mut body = format!(
            "{{\"origin\":{},\"reports\":[",
            serde_json::Value::String(origin)
        );
        let (mut last, mut bytes) = (None, 0usize);
        while let Some(row) = rows.next()? {
            let (seq, report): (i64, String) = (row.get(0)?, row.get(1)?);
            if last.is_some() && bytes + report.len() > max_bytes {
                break;
            }
            if last.is_some() {
                body.push(',');
            }
            bytes += report.len();
            body.push_str(&format!("{{\"seq\":{seq},\"report\":{report}}}"));
            last = Some(seq);
        }
        body.push_str("]}");
        Ok(last.map(|last| (body, last)))
    }

    /// Forgets the reports the primary has applied; how many.
    pub fn acknowledge(&self, through: i64) -> Result<usize, OutboxError> {
        Ok(self
            .db()
            .execute("DELETE FROM report_outbox WHERE seq <= ?1", [through])?)
    }

    /// Reports waiting for the primary.
    pub fn waiting(&self) -> Result<u64, OutboxError> {
        let n: i64 = self
            .db()
            .query_row("SELECT count(*) FROM report_outbox", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Applies with `apply`, in order, the reports of `origin` past its
    /// mark, moving the mark after each: a batch sent again is skipped. The
    /// mark after it. A crash of this node between a report's apply and
    /// its mark applies that one report again when it is sent again.
    pub fn apply_forwarded<E: From<OutboxError>>(
        &self,
        origin: &str,
        reports: &[Forwarded],
        mut apply: impl FnMut(&ClientReport) -> Result<(), E>,
    ) -> Result<i64, E> {
        let mut previous = i64::MIN;
        for f in reports {
            if f.seq <= previous {
                return Err(OutboxError::OutOfOrder {
                    seq: f.seq,
                    after: previous,
                }
                .into());
            }
            previous = f.seq;
        }
        let mut mark = self.applied_through(origin)?;
        let first_new = reports.partition_point(|f| f.seq <= mark);
        for f in &reports[first_new..] {
            apply(&f.report)?;
            self.set_applied(origin, f.seq)?;
            mark = f.seq;
        }
        Ok(mark)
    }

    fn applied_through(&self, origin: &str) -> Result<i64, OutboxError> {
        Ok(self
            .db()
            .query_row(
                "SELECT through FROM reports_applied WHERE origin = ?1",
                [origin],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    fn set_applied(&self, origin: &str, through: i64) -> Result<(), OutboxError> {
        self.db().execute(
            "INSERT INTO reports_applied(origin, through) VALUES (?1, ?2)
             ON CONFLICT(origin) DO UPDATE SET through = excluded.through",
            params![origin, through],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(id: &str, n: u32) -> ClientReport {
        ClientReport::Events {
            id: id.into(),
            events: vec![Element {
                name: "ReportingEvent".into(),
                text: n.to_string(),
                children: vec![],
            }],
            at: 100,
        }
    }

    #[test]
    fn kept_reports_survive_a_reopen_and_go_in_order_in_bounded_batches() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path()).unwrap();
        o.keep(&events("pc", 0)).unwrap();
        assert_eq!(o.waiting().unwrap(), 0, "a primary keeps nothing");
        o.keep_for_primary();
        for n in 1..=5 {
            o.keep(&events("pc", n)).unwrap();
        }
        drop(o);
        let o = Outbox::open(dir.path()).unwrap();
        assert_eq!(o.waiting().unwrap(), 5);
        let one = serde_json::to_string(&events("pc", 1)).unwrap().len();
        let (body, last) = o.next_batch(10, 2 * one).unwrap().unwrap();
        let batch: ForwardBatch = serde_json::from_str(&body).unwrap();
        assert_eq!(batch.reports.len(), 2);
        assert_eq!(batch.reports[1].report, events("pc", 2));
        assert_eq!(last, batch.reports[1].seq);
        // One report larger than the budget still goes, alone.
        let (body, _) = o.next_batch(10, 1).unwrap().unwrap();
        assert_eq!(
            serde_json::from_str::<ForwardBatch>(&body)
                .unwrap()
                .reports
                .len(),
            1
        );
        assert_eq!(o.acknowledge(last).unwrap(), 2);
        let (body, _) = o.next_batch(10, 1 << 20).unwrap().unwrap();
        let rest: ForwardBatch = serde_json::from_str(&body).unwrap();
        assert_eq!(rest.reports.len(), 3);
        assert_eq!(rest.origin, batch.origin, "one origin per node");
    }

    #[test]
    fn a_batch_applied_twice_applies_once() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path()).unwrap();
        let batch = |seqs: &[i64]| -> Vec<Forwarded> {
            seqs.iter()
                .map(|&seq| Forwarded {
                    seq,
                    report: events("pc", seq as u32),
                })
                .collect()
        };
        let mut applied = Vec::new();
        let mut apply = |r: &ClientReport| {
            applied.push(r.clone());
            Ok::<_, OutboxError>(())
        };
        assert_eq!(
            o.apply_forwarded("f1", &batch(&[1, 2]), &mut apply)
                .unwrap(),
            2
        );
        assert_eq!(
            o.apply_forwarded("f1", &batch(&[1, 2]), &mut apply)
                .unwrap(),
            2
        );
        assert_eq!(
            o.apply_forwarded("f1", &batch(&[2, 3]), &mut apply)
                .unwrap(),
            3
        );
        assert_eq!(
            o.apply_forwarded("f2", &batch(&[1]), &mut apply).unwrap(),
            1
        );
        assert!(matches!(
            o.apply_forwarded("f1", &batch(&[5, 4]), &mut apply),
            Err(OutboxError::OutOfOrder { .. })
        ));
        assert_eq!(applied, [1, 2, 3, 1].map(|n| events("pc", n)));
    }
}
