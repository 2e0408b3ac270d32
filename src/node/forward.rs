//! A follower's clients report to it; this sends their reports on to the
//! primary, so that the primary sees the whole fleet.
//!
//! Each report is in the follower's outbox before its client is answered
//! (`wsus::client::outbox`). This task sends the oldest waiting reports,
//! in order, to the primary's `POST /api/v1/reports/forwarded`, and deletes
//! them only once the primary says it has applied them. Woken by each new
//! report; while the primary cannot be reached or refuses, it tries again
//! after 1 s, then twice as long each time up to `follow_interval_secs`,
//! and the reports wait, however many and however long, surviving
//! restarts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::follow::Follower;
use crate::wsus::client::outbox::{Applied, Outbox, OutboxError};

/// Most reports in one request.
const BATCH_REPORTS: usize = 500;
/// Most bytes of reports in one request (one larger report goes alone).
const BATCH_BYTES: usize = 4 << 20;
/// The first wait after a failure.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Why a forward failed (the reports stay and are sent again).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot reach the primary: {0}")]
    Unreachable(#[from] reqwest::Error),
    #[error("the primary answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error(transparent)]
    Store(#[from] OutboxError),
}

/// Where forwarding stands, for `/api/v1/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ForwardStatus {
    /// Reports taken here and not yet applied by the primary.
    pub waiting: u64,
    /// Reports the primary has applied since start.
    pub forwarded: u64,
    /// Unix seconds of the last batch the primary applied.
    pub last_forward: Option<u64>,
    /// Why the last try failed, if it did (cleared by the next success).
    pub error: Option<String>,
}

/// The sending side.
pub struct Forwarder {
    follower: Arc<Follower>,
    outbox: Arc<Outbox>,
    queued: Arc<Notify>,
    status: Mutex<ForwardStatus>,
}

impl Forwarder {
    /// Turns `outbox` on: call before the listeners open,
    /// so that no report is taken without being kept.
    pub fn new(follower: Arc<Follower>, outbox: Arc<Outbox>) -> Forwarder {
        let queued = outbox.keep_for_primary();
        Forwarder {
            follower,
            outbox,
            queued,
            status: Mutex::default(),
        }
    }

    pub fn status(&self) -> ForwardStatus {
        let mut s = self.status.lock().unwrap().clone();
        s.waiting = self.outbox.waiting().unwrap_or(0);
        s
    }

    /// Sends what waits, then whatever comes, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut retry = FIRST_RETRY;
        loop {
            let wait = match self.forward_once().await {
                // More may be waiting: at once.
                Ok(true) => continue,
                Ok(false) => {
                    retry = FIRST_RETRY;
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "forwarding client reports to the primary failed; they are kept");
                    self.status.lock().unwrap().error = Some(e.to_string());
                    let this = retry;
                    retry = (retry * 2).min(self.follower.interval().max(FIRST_RETRY));
                    Some(this)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                // Without a failure, a new report wakes it; the interval
                // is a backstop.
                _ = self.queued.notified(), if wait.is_none() => {}
                _ = tokio::time::sleep(wait.unwrap_or(self.follower.interval())) => {}
            }
        }
    }

    /// Sends one batch; `Ok(true)` if one was sent and applied.
    async fn forward_once(&self) -> Result<bool, ForwardError> {
        let outbox = self.outbox.clone();
        let batch =
            tokio::task::spawn_blocking(move || outbox.next_batch(BATCH_REPORTS, BATCH_BYTES))
                .await
                .expect("reading the outbox does not panic")?;
        let Some((body, last)) = batch else {
            return Ok(false);
        };
        let resp = self
            .follower
            .post_json("/api/v1/reports/forwarded", body)
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(ForwardError::Refused {
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            });
        }
        let applied: Applied = resp.json().await?;
        // What the primary holds, never past what was sent.
        let through = applied.applied_through.min(last);
        let outbox = self.outbox.clone();
        let (deleted, after) = tokio::task::spawn_blocking(move || {
            Ok::<_, OutboxError>((outbox.acknowledge(through)?, outbox.waiting()?))
        })
        .await
        .expect("deleting from the outbox does not panic")?;
        let mut s = self.status.lock().unwrap();
        s.forwarded += deleted as u64;
        s.last_forward = Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        );
        s.error = None;
        Ok(through >= last && after > 0)
    }
}
