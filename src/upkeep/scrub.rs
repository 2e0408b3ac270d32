//! Scrub: re-hashes every stored file while the server serves, at a
//! bounded rate, and quarantines any whose bytes no longer match their
//! SHA-256 (a failing disk, a hand edit): the next request for it fetches a
//! good copy. `upcache verify` does the same with the server stopped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::digest::Sha256Digest;
use crate::store::DiskStore;
use crate::telemetry::metrics::Metrics;

/// The slowest pace a scrub may be given: below it a large store would take
/// weeks.
pub const MIN_SCRUB_RATE: u64 = 1 << 20;

/// Bad files named in the status (the count covers them all).
const LISTED_BAD: usize = 100;

/// What a scrub is asked (`POST /api/v1/scrub`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubRequest {
    /// Bytes hashed a second at most (`null`: as fast as the disk reads),
    /// so that serving keeps its disk and CPU.
    #[serde(default)]
    pub bytes_per_sec: Option<u64>,
}

/// Where the last scrub stands.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScrubStatus {
    pub running: bool,
    /// Stopped before the end (asked to, or the server stopping).
    pub stopped: bool,
    pub bytes_per_sec: Option<u64>,
    pub files_total: u64,
    pub files_done: u64,
    pub bytes_done: u64,
    /// Files whose bytes did not match their name, quarantined.
    pub bad_files: u64,
    /// The first of them.
    pub bad: Vec<Sha256Digest>,
    /// Unix seconds.
    pub started: Option<u64>,
    pub finished: Option<u64>,
}

/// Why a scrub does not start.
#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    #[error("a scrub is already running (DELETE /api/v1/scrub stops it)")]
    Running,
    #[error("bytes_per_sec: {0} is below the least, {MIN_SCRUB_RATE} (1MiB); null for no limit")]
    BelowLeastRate(u64),
}

/// Runs one scrub at a time and keeps the last one's status.
#[derive(Default)]
pub struct Scrubber {
    status: Mutex<ScrubStatus>,
    stop: Mutex<CancellationToken>,
}

/// What a scrub reads and tells.
pub struct Parts {
    pub store: Arc<DiskStore>,
    pub catalog: Arc<Catalog>,
    pub metrics: Arc<Metrics>,
}

impl Scrubber {
    pub fn status(&self) -> ScrubStatus {
        self.status.lock().unwrap().clone()
    }

    /// Starts a scrub on a blocking thread, unless one is running or the
    /// pace asked is too slow.
    pub fn start(
        self: &Arc<Self>,
        parts: Parts,
        asked: ScrubRequest,
    ) -> Result<ScrubStatus, ScrubError> {
        if let Some(rate) = asked.bytes_per_sec.filter(|&r| r < MIN_SCRUB_RATE) {
            return Err(ScrubError::BelowLeastRate(rate));
        }
        let stop = {
            let mut status = self.status.lock().unwrap();
            if status.running {
                return Err(ScrubError::Running);
            }
            *status = ScrubStatus {
                running: true,
                bytes_per_sec: asked.bytes_per_sec,
                started: Some(unix_now()),
                ..ScrubStatus::default()
            };
            let token = CancellationToken::new();
            *self.stop.lock().unwrap() = token.clone();
            token
        };
        let scrubber = self.clone();
        tokio::task::spawn_blocking(move || scrubber.run(&parts, asked.bytes_per_sec, &stop));
        Ok(self.status())
    }

    /// Asks the running scrub (if any) to stop after its current MiB.
    pub fn stop(&self) {
        self.stop.lock().unwrap().cancel();
    }

    fn run(&self, parts: &Parts, rate: Option<u64>, stop: &CancellationToken) {
        let files = parts.store.published();
        self.update(|s| s.files_total = files.len() as u64);
        let started = Instant::now();
        let mut hashed = 0u64;
        // Sleeps so that `hashed` bytes take at least `hashed / rate` seconds.
        let mut pace = |n: usize| {
            hashed += n as u64;
            self.update(|s| s.bytes_done = hashed);
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64(hashed as f64 / rate as f64);
                if let Some(ahead) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(ahead);
                }
            }
            !stop.is_cancelled()
        };
        for digest in files {
            match parts.store.verify_with(&digest, &mut pace) {
                Ok(Some(true)) => {}
                Ok(Some(false)) => self.quarantine(parts, &digest),
                Ok(None) => break, // asked to stop
                // Removed meanwhile (eviction, cleanup): nothing to check.
                Err(e) => tracing::debug!(%digest, error = %e, "scrub: not read"),
            }
            self.update(|s| s.files_done += 1);
            if stop.is_cancelled() {
                break;
            }
        }
        self.update(|s| {
            s.running = false;
            s.stopped = stop.is_cancelled();
            s.finished = Some(unix_now());
        });
        let status = self.status();
        tracing::info!(
            files = status.files_done,
            bytes = status.bytes_done,
            bad = status.bad_files,
            stopped = status.stopped,
            "scrub finished"
        );
    }

    fn quarantine(&self, parts: &Parts, digest: &Sha256Digest) {
        let moved = parts.store.quarantine_published(digest);
        if let Some(entry) = parts.catalog.lookup_sha256(digest) {
            parts.catalog.record_absent(&entry.sha1);
        }
        parts.metrics.scrub_bad_file();
        tracing::error!(%digest, ?moved, "scrub: stored bytes do not match their SHA-256; quarantined, fetched again when asked");
        self.update(|s| {
            s.bad_files += 1;
            if s.bad.len() < LISTED_BAD {
                s.bad.push(*digest);
            }
        });
    }

    fn update(&self, change: impl FnOnce(&mut ScrubStatus)) {
        change(&mut self.status.lock().unwrap());
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
