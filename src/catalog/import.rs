//! What every import shares: the report, the progress shown in status, and
//! the revision rule (newer replaces, same is left, older is ignored).

use std::sync::{Mutex, MutexGuard};

use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use super::CatalogError;

/// What an import did.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportReport {
    pub updates_added: u64,
    pub updates_replaced: u64,
    pub updates_unchanged: u64,
    /// Older revisions than the ones already known: ignored.
    pub updates_stale: u64,
    pub files_added: u64,
    /// Known files whose name or location changed.
    #[serde(default)]
    pub files_changed: u64,
    /// New updates approved or declined by the automatic approval rules.
    #[serde(default)]
    pub changed_by_rules: u64,
    /// Files stored now for which the catalog claimed another SHA-256: the
    /// stored bytes' one was kept.
    #[serde(default)]
    pub sha256_conflicts: u64,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} added, {} replaced, {} unchanged, {} stale; {} new files",
            self.updates_added,
            self.updates_replaced,
            self.updates_unchanged,
            self.updates_stale,
            self.files_added
        )?;
        if self.sha256_conflicts > 0 {
            write!(
                f,
                "; {} SHA-256 claims refused (the stored bytes say otherwise)",
                self.sha256_conflicts
            )?;
        }
        if self.changed_by_rules > 0 {
            write!(
                f,
                "; {} approved or declined by rules",
                self.changed_by_rules
            )?;
        }
        Ok(())
    }
}

impl ImportReport {
    /// Whether the import changed anything (a no-op re-import skips the
    /// index rebuild, which costs seconds and memory on large catalogs).
    pub fn changed_anything(&self) -> bool {
        self.updates_added + self.updates_replaced + self.files_added + self.files_changed > 0
    }
}

/// A running import, for status: long imports never look hung.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImportStatus {
    /// `reading`, `linking bundles`, `naming by KB`, `applying rules`,
    /// `committing` or `indexing`.
    pub phase: String,
    /// Updates read so far.
    pub updates: u64,
    /// File locations read so far.
    pub files: u64,
    pub seconds: f64,
}

/// Where the running import is (one at a time: it holds the writer).
#[derive(Default)]
pub(crate) struct ImportTracker(Mutex<Option<(std::time::Instant, ImportStatus)>>);

impl ImportTracker {
    fn slot(&self) -> MutexGuard<'_, Option<(std::time::Instant, ImportStatus)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn start(&self) {
        *self.slot() = Some((
            std::time::Instant::now(),
            ImportStatus {
                phase: "reading".into(),
                updates: 0,
                files: 0,
                seconds: 0.0,
            },
        ));
    }

    /// Updates the counts read so far.
    pub(crate) fn read(&self, updates: u64, files: u64) {
        if let Some((_, s)) = self.slot().as_mut() {
            (s.updates, s.files) = (updates, files);
        }
    }

    /// Moves on to the next phase (no-op when no import runs).
    pub(crate) fn phase(&self, phase: &str) {
        if let Some((_, s)) = self.slot().as_mut() {
            phase.clone_into(&mut s.phase);
        }
    }

    pub(super) fn finish(&self) {
        *self.slot() = None;
    }

    pub(super) fn snapshot(&self) -> Option<ImportStatus> {
        self.slot().as_ref().map(|(started, s)| ImportStatus {
            seconds: started.elapsed().as_secs_f64(),
            ..s.clone()
        })
    }
}

/// How an imported update's revision relates to the one the catalog has
/// (carrying the known update's row id).
pub(crate) enum Revision {
    /// Older than the stored one: ignored.
    Stale(i64),
    /// The same: left as it is.
    Same(i64),
    /// Newer: replaces metadata and file links, keeps the approval.
    Newer(i64),
    New,
}

/// Compares an imported revision with the stored one, counting it in `report`.
pub(crate) fn compare_revision(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    revision: u32,
    report: &mut ImportReport,
) -> Result<Revision, CatalogError> {
    let known: Option<(i64, u32)> = tx
        .prepare_cached("SELECT uid, revision FROM updates WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match known {
        Some((uid, rev)) if rev > revision => {
            report.updates_stale += 1;
            Revision::Stale(uid)
        }
        Some((uid, rev)) if rev == revision => {
            report.updates_unchanged += 1;
            Revision::Same(uid)
        }
        Some((uid, _)) => {
            report.updates_replaced += 1;
            Revision::Newer(uid)
        }
        None => {
            report.updates_added += 1;
            Revision::New
        }
    })
}

/// Lists an update's files for the index refresh after this write.
pub(crate) fn touch_files_of(tx: &rusqlite::Transaction<'_>, uid: i64) -> Result<(), CatalogError> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO x_touched(fid) SELECT fid FROM update_files WHERE uid = ?1",
    )?
    .execute([uid])?;
    Ok(())
}
