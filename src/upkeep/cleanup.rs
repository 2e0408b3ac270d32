//! Cleanup: removes the stored files no update needs any more (WSUS's
//! "unneeded update files"): those of declined updates, those of updates
//! nobody approved (unless the policy downloads them at sync), and files the
//! catalog does not name at all. The same rule online (`POST
//! /api/v1/cleanup`, `upcache cleanup`), offline (`upcache gc`), and over
//! the shared tier's bucket (`upcache cleanup --shared`).
//!
//! Removing is always safe for clients: a response sending a file keeps its
//! open descriptor, and a file asked for again is fetched again.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, FileEntry};
use crate::digest::{Sha1Digest, Sha256Digest};
use crate::policy::{Approval, Policy};
use crate::store::s3::{S3Error, S3Tier};
use crate::store::{DiskStore, Storage};

/// Files listed in a report, largest first; the totals count them all.
pub const LISTED: usize = 1000;

/// Why a cleanup did not run (or not to its end).
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("a cleanup is already running")]
    Running,
    #[error("no shared tier is configured (s3_bucket)")]
    NoSharedTier,
    #[error("this node follows a primary, whose catalog decides what the shared tier keeps: run the shared cleanup there")]
    Follower,
    #[error("shared tier: {0}")]
    Shared(#[from] S3Error),
}

/// Why a stored file is not needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unneeded {
    /// Every update that has it is declined.
    Declined,
    /// No update that has it is approved, and the policy does not download
    /// it ahead.
    NotApproved,
    /// No update in the catalog has it.
    NotInCatalog,
}

/// One file a cleanup removed (or would remove).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnneededFile {
    pub sha256: Sha256Digest,
    pub sha1: Option<Sha1Digest>,
    pub size: u64,
    pub why: Unneeded,
}

/// What a cleanup found and did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CleanupReport {
    /// `false`: a dry run; nothing was removed.
    pub removed: bool,
    pub files: u64,
    pub bytes: u64,
    /// Unneeded files left because they were published moments ago.
    pub recent: u64,
    /// Unneeded files that could not be removed (logged; not counted above).
    #[serde(default)]
    pub failed: u64,
    /// The largest [`LISTED`] of them.
    pub listed: Vec<UnneededFile>,
}

/// Finds the stored files the policy no longer needs and, with `remove`,
/// removes them (telling the catalog). Files published within `settle` are
/// left alone, and so are those in `keep`: Delivery Optimization objects,
/// which no catalog entry names and `do_max_bytes` bounds instead.
pub fn run(
    store: &DiskStore,
    catalog: &Catalog,
    keep: &std::collections::HashSet<Sha256Digest>,
    remove: bool,
    settle: Duration,
) -> CleanupReport {
    let policy = catalog.policy();
    let mut report = CleanupReport {
        removed: remove,
        ..CleanupReport::default()
    };
    let now = SystemTime::now();
    for sha256 in store.published() {
        if keep.contains(&sha256) {
            continue;
        }
        let entry = catalog.lookup_sha256(&sha256);
        let Some(why) = unneeded(entry.as_ref(), &policy) else {
            continue;
        };
        let Some(published) = store.published_at(&sha256) else {
            continue; // gone meanwhile
        };
        if now.duration_since(published).unwrap_or_default() < settle {
            report.recent += 1;
            continue;
        }
        let size = store.size_of(&sha256).unwrap_or(0);
        if remove {
            if let Err(e) = store.remove(&sha256) {
                // One file that cannot go does not stop the others.
                tracing::warn!(%sha256, error = %e, "cleanup: not removed");
                report.failed += 1;
                continue;
            }
            if let Some(e) = &entry {
                catalog.record_absent(&e.sha1);
            }
            tracing::info!(%sha256, bytes = size, ?why, "removed (cleanup)");
        }
        report.count(UnneededFile {
            sha256,
            sha1: entry.map(|e| e.sha1),
            size,
            why,
        });
    }
    keep_largest(&mut report.listed);
    report
}

/// Why a file with this catalog entry (`None`: the catalog has none) is
/// not needed; `None` when it is.
fn unneeded(entry: Option<&FileEntry>, policy: &Policy) -> Option<Unneeded> {
    match entry.map(|e| e.approval) {
        Some(a) if policy.keeps_stored(a) => None,
        Some(Approval::Declined) => Some(Unneeded::Declined),
        Some(_) => Some(Unneeded::NotApproved),
        None => Some(Unneeded::NotInCatalog),
    }
}

impl CleanupReport {
    /// Counts an unneeded file, and lists it if it is among the largest.
    fn count(&mut self, file: UnneededFile) {
        self.files += 1;
        self.bytes += file.size;
        self.listed.push(file);
        if self.listed.len() == 2 * LISTED {
            keep_largest(&mut self.listed);
        }
    }
}

/// The same rule over the shared tier's bucket, which every node reads and
/// writes: this node's catalog decides (run it on the primary: a
/// follower's may lag). An object the catalog does not know by SHA-256
/// (a catalog with SHA-1s only, and another node downloaded the file) is
/// looked up through its SHA-1 marker before it counts as not in the
/// catalog. Objects a Delivery Optimization marker names are kept (no
/// catalog knows them; the bucket keeps every node's). Objects written
/// within `settle` are left: a marker is written after its object.
pub async fn run_shared(
    tier: &S3Tier,
    catalog: &Catalog,
    remove: bool,
    settle: Duration,
) -> Result<CleanupReport, S3Error> {
    let objects = tier.list_files().await?;
    let unknown = (objects.iter()).any(|o| catalog.lookup_sha256(&o.sha256).is_none());
    let markers = match unknown {
        true => tier.marker_index().await?,
        false => Default::default(),
    };
    // Delivery Optimization objects: no catalog names them, their markers do.
    let objects_kept = match unknown {
        true => tier.object_sha256s().await?,
        false => Default::default(),
    };
    let policy = catalog.policy();
    let mut report = CleanupReport {
        removed: remove,
        ..CleanupReport::default()
    };
    let now = SystemTime::now();
    for object in objects {
        let entry = catalog.lookup_sha256(&object.sha256).or_else(|| {
            let sha1 = markers.get(&object.sha256)?;
            catalog.lookup_sha1(sha1)
        });
        if entry.is_none() && objects_kept.contains(&object.sha256) {
            continue;
        }
        let Some(why) = unneeded(entry.as_ref(), &policy) else {
            continue;
        };
        if now.duration_since(object.modified).unwrap_or_default() < settle {
            report.recent += 1;
            continue;
        }
        let sha1 = entry
            .map(|e| e.sha1)
            .or(markers.get(&object.sha256).copied());
        if remove {
            if let Err(e) = tier.delete(sha1.as_ref(), &object.sha256).await {
                tracing::warn!(sha256 = %object.sha256, error = %e, "shared cleanup: not removed");
                report.failed += 1;
                continue;
            }
            tracing::info!(sha256 = %object.sha256, bytes = object.size, ?why, "removed from the shared tier (cleanup)");
        }
        report.count(UnneededFile {
            sha256: object.sha256,
            sha1,
            size: object.size,
            why,
        });
    }
    keep_largest(&mut report.listed);
    Ok(report)
}

/// The [`LISTED`] largest, largest first: the list stays bounded however
/// many files a cleanup finds.
fn keep_largest(files: &mut Vec<UnneededFile>) {
    files.sort_by_key(|f| std::cmp::Reverse(f.size));
    files.truncate(LISTED);
}
