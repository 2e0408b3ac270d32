//! Cleanup: removes the stored files no update needs any more (WSUS's
//! "unneeded update files"): those of declined updates, those of updates
//! nobody approved (unless the policy downloads them at sync), and files the
//! catalog does not name at all. The same rule online (`POST
//! /api/v1/cleanup`, `upcache cleanup`) and offline (`upcache gc`).
//!
//! Removing is always safe for clients: a response sending a file keeps its
//! open descriptor, and a file asked for again is fetched again.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::digest::{Sha1Digest, Sha256Digest};
use crate::policy::Approval;
use crate::store::{DiskStore, Storage};

/// Files listed in a report, largest first; the totals count them all.
pub const LISTED: usize = 1000;

/// A file published this recently online is left for the next cleanup: a
/// download that has just published its file may not have told the catalog
/// its SHA-256 yet, and would look unknown.
pub const SETTLE: Duration = Duration::from_secs(60);

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
/// left alone.
pub fn run(store: &DiskStore, catalog: &Catalog, remove: bool, settle: Duration) -> CleanupReport {
    let policy = catalog.policy();
    let mut report = CleanupReport {
        removed: remove,
        ..CleanupReport::default()
    };
    let now = SystemTime::now();
    for sha256 in store.published() {
        let entry = catalog.lookup_sha256(&sha256);
        let why = match entry.map(|e| e.approval) {
            Some(a) if policy.keeps_stored(a) => continue,
            Some(Approval::Declined) => Unneeded::Declined,
            Some(_) => Unneeded::NotApproved,
            None => Unneeded::NotInCatalog,
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
        report.files += 1;
        report.bytes += size;
        report.listed.push(UnneededFile {
            sha256,
            sha1: entry.map(|e| e.sha1),
            size,
            why,
        });
        if report.listed.len() == 2 * LISTED {
            keep_largest(&mut report.listed);
        }
    }
    keep_largest(&mut report.listed);
    report
}

/// The [`LISTED`] largest, largest first: the list stays bounded however
/// many files a cleanup finds.
fn keep_largest(files: &mut Vec<UnneededFile>) {
    files.sort_by_key(|f| std::cmp::Reverse(f.size));
    files.truncate(LISTED);
}
