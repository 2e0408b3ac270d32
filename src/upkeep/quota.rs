//! `max_store_bytes`: keeps the store under a size by evicting the files
//! served longest ago.
//!
//! An evicted file is only bytes: the catalog keeps it, its approval and its
//! digests, and the next request for it fetches it again. Objects no
//! catalog names (Delivery Optimization's) share the quota through
//! [`Tenant`]: their bytes count, and they are evicted in the same
//! least-recently-served order as catalog files. A file a response
//! is sending is never evicted, and a file being downloaded is not in the
//! store yet; downloads reserve their size first so that concurrent ones
//! cannot overshoot together.

use std::sync::{Arc, Mutex, OnceLock};

use crate::catalog::Catalog;
use crate::digest::Sha256Digest;
use crate::store::Storage;
use crate::telemetry::metrics::Metrics;

/// Stored objects outside the catalog, under the same quota: the seam
/// that lets `upkeep` evict them without knowing their wing.
pub trait Tenant: Send + Sync {
    /// Bytes of their stored objects.
    fn stored_bytes(&self) -> u64;
    /// Their stored objects, least recently served first.
    fn by_last_served(&self) -> Vec<TenantObject>;
    /// Removes one (its bytes and its record); whether it did.
    fn evict(&self, object: &TenantObject) -> bool;
}

/// One object of a [`Tenant`], as eviction sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantObject {
    /// The tenant's own name for it (a DO object key).
    pub key: String,
    pub sha256: Sha256Digest,
    pub size: u64,
    /// Unix milliseconds, as the catalog's.
    pub last_served: u64,
}

/// The store's size limit and the bytes promised to running downloads.
pub struct Quota {
    max: Option<u64>,
    catalog: Arc<Catalog>,
    /// Objects outside the catalog, once their wing has started.
    tenant: OnceLock<Arc<dyn Tenant>>,
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
            tenant: OnceLock::new(),
            reserved: Mutex::new(0),
        })
    }

    /// Puts a tenant's objects under the quota (once, at start).
    pub fn admit(&self, tenant: Arc<dyn Tenant>) {
        if self.tenant.set(tenant).is_err() {
            tracing::warn!("a second quota tenant was refused");
        }
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

    /// Removes least-recently-served files (catalog files and the tenant's
    /// objects, in one order) until `stored + reserved <= max`.
    fn evict_over(&self, reserved: u64) -> Evicted {
        let mut evicted = Evicted::default();
        let Some(max) = self.max else {
            return evicted;
        };
        let tenant = self.tenant.get();
        let mut stored = self.catalog.stored_bytes() + tenant.map_or(0, |t| t.stored_bytes());
        if stored + reserved <= max {
            return evicted;
        }
        let files = self.catalog.stored_by_last_served();
        let objects = tenant.map(|t| t.by_last_served()).unwrap_or_default();
        let (mut files, mut objects) =
            (files.into_iter().peekable(), objects.into_iter().peekable());
        while stored + reserved > max {
            let file_first = match (files.peek(), objects.peek()) {
                (Some(f), Some(o)) => f.last_served <= o.last_served,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let size = if file_first {
                let file = files.next().expect("peeked");
                if self.store.is_serving(&file.sha256) {
                    continue;
                }
                if let Err(e) = self.store.remove(&file.sha256) {
                    tracing::warn!(sha256 = %file.sha256, error = %e, "eviction failed");
                    continue;
                }
                self.catalog.record_absent(&file.sha1);
                tracing::info!(sha1 = %file.sha1, bytes = file.size, "evicted (max_store_bytes)");
                file.size
            } else {
                let object = objects.next().expect("peeked");
                let tenant = tenant.expect("objects come from the tenant");
                if !tenant.evict(&object) {
                    continue;
                }
                tracing::info!(key = %object.key, bytes = object.size, "evicted (max_store_bytes)");
                object.size
            };
            stored = stored.saturating_sub(size);
            evicted.files += 1;
            evicted.bytes += size;
            self.metrics.evicted(size);
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
