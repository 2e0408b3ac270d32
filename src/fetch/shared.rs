//! The shared tier (S3) as the fetcher sees it: asked before the origin,
//! given every file the origin sent, told to forget a copy that failed
//! verification, and to pass over for a while a copy it failed to send.
//! Without a bucket each step does nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::catalog::FileEntry;
use crate::digest::{Sha1Digest, Sha256Digest};
use crate::store::s3::{Located, ObjectMarker, S3Tier};
use crate::store::Storage;
use crate::telemetry::metrics::Metrics;

use super::FetchError;

/// Uploads to the shared tier at once.
const MAX_UPLOADS: usize = 4;

/// How long a shared copy the bucket failed to send is passed over, the
/// origin asked instead: a bucket that refuses or breaks off a download
/// (a policy changed, a node of it down) is rarely mended in seconds, and
/// every request meanwhile would fail the same way.
const PASS_OVER: Duration = Duration::from_secs(600);
/// The most copies passed over at once; past it a failing copy is asked
/// again, and the log says so.
const MAX_PASSED_OVER: usize = 4096;

/// Why a download from the shared tier failed, as far as the copy is to
/// blame: the link, the bucket's answer or the bytes (a bad copy whose
/// delete failed, as with read-only credentials, would fail every request
/// otherwise), not the local disk or a limit.
fn the_copys_fault(e: &FetchError) -> bool {
    matches!(
        e,
        FetchError::UpstreamStatus { .. }
            | FetchError::Connect(_)
            | FetchError::Timeout(_)
            | FetchError::Transfer(_)
            | FetchError::Stalled(_)
            | FetchError::Changed(_)
            | FetchError::Verification(_)
    )
}

pub(super) struct Shared {
    tier: Option<Arc<S3Tier>>,
    /// Where uploads read the file from.
    store: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
    /// Bounds uploads running at once.
    uploads: Arc<tokio::sync::Semaphore>,
    /// Copies the bucket failed to send, by key, until when they are
    /// passed over ([`PASS_OVER`]).
    passed_over: Mutex<HashMap<String, Instant>>,
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
            passed_over: Mutex::default(),
        }
    }

    /// A download from the shared tier ended with `error`: a copy the
    /// bucket failed to send (not one the local disk refused) is passed
    /// over for [`PASS_OVER`].
    pub(super) fn download_failed(&self, key: String, error: &FetchError) {
        if !the_copys_fault(error) {
            return;
        }
        self.metrics.shared_tier("failed");
        tracing::warn!(key, %error, "the shared tier failed to send a copy; the origin serves it for {PASS_OVER:?}");
        let mut passed = self.passed_over.lock().unwrap();
        let now = Instant::now();
        passed.retain(|_, until| *until > now);
        if passed.len() < MAX_PASSED_OVER {
            passed.insert(key, now + PASS_OVER);
        } else {
            tracing::warn!(
                "{MAX_PASSED_OVER} shared copies are passed over already; this one is asked again"
            );
        }
    }

    /// Whether the copy of `key` is being passed over; each `true` is
    /// counted (`passed_over`), as the lookup it saves.
    fn is_passed_over(&self, key: &str) -> bool {
        let passed = self.passed_over.lock().unwrap();
        let over = passed.get(key).is_some_and(|until| *until > Instant::now());
        if over {
            self.metrics.shared_tier("passed_over");
        }
        over
    }

    /// The key a catalog file's copy is passed over by.
    pub(super) fn file_key(file: &FileEntry) -> String {
        format!("sha1/{}", file.sha1)
    }

    /// The key a DO object's copy is passed over by.
    pub(super) fn object_key(key: &str) -> String {
        format!("do/{key}")
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
        if self.is_passed_over(&Shared::file_key(file)) {
            return (origin, false);
        }
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
        if self.is_passed_over(&Shared::object_key(key)) {
            return None;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_copy_is_to_blame_for_passes_it_over() {
        let status = FetchError::UpstreamStatus {
            status: 403,
            url: "u".into(),
        };
        for blamed in [
            status,
            FetchError::Transfer("cut".into()),
            FetchError::Stalled(Duration::from_secs(60)),
            FetchError::Verification("bad".into()),
        ] {
            assert!(the_copys_fault(&blamed), "{blamed:?}");
        }
        for local in [
            FetchError::DiskFull,
            FetchError::Store("io".into()),
            FetchError::Busy("slots"),
        ] {
            assert!(!the_copys_fault(&local), "{local:?}");
        }
    }
}
