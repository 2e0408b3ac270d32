//! `max_store_bytes`: keeps the store under a size by evicting the files
//! served longest ago.
//!
//! An evicted file is only bytes: the catalog keeps it, its approval and its
//! digests, and the next request for it fetches it again. A file a response
//! is sending is never evicted, and a file being downloaded is not in the
//! store yet; downloads reserve their size first so that concurrent ones
//! cannot overshoot together.

use std::sync::{Arc, Mutex};

use crate::catalog::Catalog;
use crate::store::Storage;
use crate::telemetry::metrics::Metrics;

/// The store's size limit and the bytes promised to running downloads.
pub struct Quota {
    max: Option<u64>,
    catalog: Arc<Catalog>,
    store: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
    /// Held while evicting, so two evictions never pick the same files.
    reserved: Mutex<u64>,
}

/// Room held for one download until it is stored or fails.
pub struct Reservation {
    quota: Arc<Quota>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        *self.quota.reserved() -= self.bytes;
    }
}

/// What one eviction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    pub files: u64,
    pub bytes: u64,
}

impl Quota {
    pub fn new(
        max: Option<u64>,
        catalog: Arc<Catalog>,
        store: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
    ) -> Arc<Quota> {
        if max.is_some() {
            store.track_serving();
        }
        Arc::new(Quota {
            max,
            catalog,
            store,
            metrics,
            reserved: Mutex::new(0),
        })
    }

    pub fn max(&self) -> Option<u64> {
        self.max
    }

    /// Makes room for a download of `bytes` (0 when unknown: the pass after
    /// it is stored catches up) and holds it until the reservation drops.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Reservation {
        // A file larger than the whole store is refused by the download
        // itself; evicting for it would empty the store for nothing.
        let bytes = if self.max.is_some_and(|max| bytes > max) {
            0
        } else {
            bytes
        };
        let mut reserved = self.reserved();
        *reserved += bytes;
        self.evict_over(*reserved);
        Reservation {
            quota: self.clone(),
            bytes,
        }
    }

    /// Evicts until the store and the running downloads fit.
    pub fn enforce(&self) -> Evicted {
        let reserved = self.reserved();
        self.evict_over(*reserved)
    }

    fn reserved(&self) -> std::sync::MutexGuard<'_, u64> {
        self.reserved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes least-recently-served files until `stored + reserved <= max`.
    fn evict_over(&self, reserved: u64) -> Evicted {
        let mut evicted = Evicted::default();
        let Some(max) = self.max else {
            return evicted;
        };
        let mut stored = self.catalog.stored_bytes();
        if stored + reserved <= max {
            return evicted;
        }
        for file in self.catalog.stored_by_last_served() {
            if stored + reserved <= max {
                break;
            }
            if self.store.is_serving(&file.sha256) {
                continue;
            }
            if let Err(e) = self.store.remove(&file.sha256) {
                tracing::warn!(sha256 = %file.sha256, error = %e, "eviction failed");
                continue;
            }
            self.catalog.record_absent(&file.sha1);
            stored = stored.saturating_sub(file.size);
            evicted.files += 1;
            evicted.bytes += file.size;
            self.metrics.evicted(file.size);
            tracing::info!(sha1 = %file.sha1, bytes = file.size, "evicted (max_store_bytes)");
        }
        if stored + reserved > max {
            tracing::warn!(
                stored,
                reserved,
                max,
                "store over max_store_bytes: the remaining files are being served"
            );
        }
        evicted
    }
}
