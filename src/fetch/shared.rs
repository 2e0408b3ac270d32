//! The shared tier (S3) as the fetcher sees it: asked before the origin,
//! given every file the origin sent, and told to forget a copy that failed
//! verification. Without a bucket each step does nothing.

use std::sync::Arc;

use crate::catalog::FileEntry;
use crate::digest::{Sha1Digest, Sha256Digest};
use crate::store::s3::{Located, ObjectMarker, S3Tier};
use crate::store::Storage;
use crate::telemetry::metrics::Metrics;

/// Uploads to the shared tier at once.
const MAX_UPLOADS: usize = 4;

pub(super) struct Shared {
    tier: Option<Arc<S3Tier>>,
    /// Where uploads read the file from.
    store: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
    /// Bounds uploads running at once.
    uploads: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    pub(super) fn new(
        tier: Option<Arc<S3Tier>>,
        store: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
    ) -> Shared {
        Shared {
            tier,
            store,
            metrics,
            uploads: Arc::new(tokio::sync::Semaphore::new(MAX_UPLOADS)),
        }
    }

    /// The bucket, when there is one (for the shared cleanup).
    pub(super) fn tier(&self) -> Option<&S3Tier> {
        self.tier.as_deref()
    }

    /// Where a file is downloaded from: the shared tier if it has it (a
    /// presigned URL), else the origin. The shared tier failing is a miss.
    pub(super) async fn source(&self, file: &FileEntry, origin: String) -> (String, bool) {
        let Some(shared) = &self.tier else {
            return (origin, false);
        };
        match shared.locate(&file.sha1, file.sha256).await {
            Ok(Some(found)) => {
                self.metrics.shared_tier("found");
                tracing::info!(sha1 = %file.sha1, sha256 = %found.sha256, "fetching from the shared tier");
                (found.url, true)
            }
            Ok(None) => {
                self.metrics.shared_tier("absent");
                (origin, false)
            }
            Err(e) => {
                self.metrics.shared_tier("error");
                tracing::warn!(sha1 = %file.sha1, error = %e, "shared tier unavailable; fetching from the origin");
                (origin, false)
            }
        }
    }

    /// Uploads a file the origin sent to the shared tier, in the background
    /// (clients never wait for it); a failure leaves it in the local tier only.
    pub(super) fn share(&self, sha1: Sha1Digest, sha256: Sha256Digest) {
        let Some(shared) = self.tier.clone() else {
            return;
        };
        let (store, metrics, uploads) = (
            self.store.clone(),
            self.metrics.clone(),
            self.uploads.clone(),
        );
        tokio::spawn(async move {
            let _permit = uploads.acquire_owned().await;
            let bytes = match store.lookup(&sha256) {
                Ok(Some(hit)) => hit.into_bytes(),
                _ => return, // evicted meanwhile: the next fetch uploads it
            };
            match shared.upload(&sha1, &sha256, bytes).await {
                Ok(_) => metrics.shared_tier("uploaded"),
                Err(e) => {
                    metrics.shared_tier("upload_failed");
                    tracing::warn!(%sha1, error = %e, "upload to the shared tier failed; the file stays local only");
                }
            }
        });
    }

    /// The Delivery Optimization object of `key`, if a node uploaded it:
    /// where to download it and its marker. The shared tier failing is a miss.
    pub(super) async fn object_source(&self, key: &str) -> Option<(Located, ObjectMarker)> {
        let shared = self.tier.as_ref()?;
        match shared.locate_object(key).await {
            Ok(Some(found)) => {
                self.metrics.shared_tier("found");
                tracing::info!(key, sha256 = %found.1.sha256, "fetching a DO object from the shared tier");
                Some(found)
            }
            Ok(None) => {
                self.metrics.shared_tier("absent");
                None
            }
            Err(e) => {
                self.metrics.shared_tier("error");
                tracing::warn!(key, error = %e, "shared tier unavailable; fetching from the origin");
                None
            }
        }
    }

    /// Uploads a Delivery Optimization object its origin sent, in the
    /// background, as [`Shared::share`] does a catalog file.
    pub(super) fn share_object(&self, key: String, marker: ObjectMarker) {
        let Some(shared) = self.tier.clone() else {
            return;
        };
        let (store, metrics, uploads) = (
            self.store.clone(),
            self.metrics.clone(),
            self.uploads.clone(),
        );
        tokio::spawn(async move {
            let _permit = uploads.acquire_owned().await;
            let bytes = match store.lookup(&marker.sha256) {
                Ok(Some(hit)) => hit.into_bytes(),
                _ => return,
            };
            match shared.upload_object(&key, &marker, bytes).await {
                Ok(_) => metrics.shared_tier("uploaded"),
                Err(e) => {
                    metrics.shared_tier("upload_failed");
                    tracing::warn!(key, error = %e, "upload to the shared tier failed; the object stays local only");
                }
            }
        });
    }

    /// A shared copy of a DO object that failed its check is removed with
    /// its marker: the next request fetches it from its origin.
    pub(super) async fn forget_object(&self, key: &str, sha256: &Sha256Digest) {
        let Some(shared) = &self.tier else { return };
        tracing::warn!(key, %sha256, "the shared tier's copy of a DO object is bad; removed");
        if let Err(e) = shared.delete_object(key, sha256).await {
            tracing::warn!(error = %e, "removing the bad shared copy failed");
        }
    }

    /// A shared copy that failed verification is removed (with its marker),
    /// so the next request fetches from the origin and uploads a good one.
    pub(super) async fn forget(&self, file: &FileEntry) {
        let Some(shared) = &self.tier else { return };
        let Ok(Some(found)) = shared.locate(&file.sha1, file.sha256).await else {
            return;
        };
        tracing::warn!(sha1 = %file.sha1, sha256 = %found.sha256, "the shared tier's copy is bad; removed");
        if let Err(e) = shared.delete(Some(&file.sha1), &found.sha256).await {
            tracing::warn!(error = %e, "removing the bad shared copy failed");
        }
    }
}
