//! The metadata module: updates, their files and digests, approvals and the
//! storage policy, persisted in SQLite under the data directory.
//!
//! Every write is one transaction, so a crash at any moment leaves either
//! the old or the new catalog. Reads on the request path go to the
//! in-memory [`index::Index`] instead of the database.

pub mod cabinet;
mod index;
pub mod json;
pub mod package_xml;
pub mod rules;
mod schema;
mod xml_import;

pub use index::{FileEntry, StoredFile};
pub use json::CatalogDoc;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::digest::{Sha1Digest, Sha256Digest};
use crate::policy::{Approval, Policy};
use crate::store::{Ingested, Store};
use index::Index;
use json::{FileDoc, UpdateDoc, ValidUpdate};

/// An update's approval state, as an administrator sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateState {
    NotApproved,
    Approved,
    Declined,
}

impl UpdateState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotApproved => "not-approved",
            Self::Approved => "approved",
            Self::Declined => "declined",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::NotApproved, Self::Approved, Self::Declined]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

/// Errors of the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("invalid catalog at {at}: {reason}")]
    Invalid { at: String, reason: String },
    #[error("no update with id {0:?}")]
    UnknownUpdate(String),
    #[error("catalog database: {0}")]
    Db(#[from] rusqlite::Error),
}

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

    fn start(&self) {
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

    fn finish(&self) {
        *self.slot() = None;
    }

    fn snapshot(&self) -> Option<ImportStatus> {
        self.slot().as_ref().map(|(started, s)| ImportStatus {
            seconds: started.elapsed().as_secs_f64(),
            ..s.clone()
        })
    }
}

/// One update in a listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateSummary {
    pub id: String,
    pub revision: u32,
    pub title: String,
    pub kb: Option<String>,
    pub msrc: Option<String>,
    pub classification: Option<String>,
    pub products: Vec<String>,
    pub release_date: Option<String>,
    pub state: UpdateState,
    pub file_count: u64,
    /// A newer update replaces this one (from package.xml's `SupersededBy`).
    #[serde(default)]
    pub superseded: bool,
}

/// One file of an update, with its local state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileDetail {
    pub name: String,
    pub sha1: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
    pub url: String,
    /// `absent`, `fetching` or `stored`.
    pub local_state: String,
}

/// One update with its files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateDetail {
    #[serde(flatten)]
    pub summary: UpdateSummary,
    pub description: String,
    pub files: Vec<FileDetail>,
}

/// Filters of `GET /api/v1/updates` and of bulk approvals.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<UpdateState>,
    /// Case-insensitive substring of title, KB, MSRC number or id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// KB number, exactly (`5034122` or `KB5034122`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kb: Option<String>,
    /// Classification (name or GUID), exactly, case-insensitive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    /// Product (name or GUID), one of the update's products.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded: Option<bool>,
    /// Case-insensitive substring of the title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
}

impl UpdateQuery {
    /// Whether any filter is set (bulk approval refuses "everything" by accident).
    pub fn selects_something(&self) -> bool {
        self.state.is_some()
            || self.q.is_some()
            || self.kb.is_some()
            || self.classification.is_some()
            || self.product.is_some()
            || self.superseded.is_some()
            || self.title.is_some()
    }

    /// The filters as the named SQL parameters of [`FILTER`].
    fn filter_params(&self) -> FilterParams {
        let like = |s: &String| format!("%{}%", s.to_lowercase());
        FilterParams([
            self.state.map(|s| s.as_str().to_owned()),
            self.q.as_ref().map(like),
            self.kb
                .as_ref()
                .map(|k| k.trim_start_matches(['K', 'k', 'B', 'b']).to_owned()),
            self.classification.as_ref().map(|c| c.to_lowercase()),
            self.product
                .as_ref()
                .map(|p| format!("%\"{}\"%", p.to_lowercase())),
            self.superseded.map(|b| u8::from(b).to_string()),
            self.title.as_ref().map(like),
        ])
    }
}

/// The WHERE clause of a selection of updates.
const FILTER: &str = "(:state IS NULL OR state = :state)
    AND (:q IS NULL OR lower(title) LIKE :q OR kb LIKE :q OR lower(msrc) LIKE :q OR id LIKE :q)
    AND (:kb IS NULL OR kb = :kb)
    AND (:classification IS NULL OR lower(classification) = :classification)
    AND (:product IS NULL OR lower(products) LIKE :product)
    AND (:superseded IS NULL OR superseded = CAST(:superseded AS INTEGER))
    AND (:title IS NULL OR lower(title) LIKE :title)";

/// Values for [`FILTER`]'s parameters.
struct FilterParams([Option<String>; 7]);

impl FilterParams {
    const NAMES: [&'static str; 7] = [
        ":state",
        ":q",
        ":kb",
        ":classification",
        ":product",
        ":superseded",
        ":title",
    ];

    /// The filter's parameters plus a statement's own.
    fn with<'a>(
        &'a self,
        extra: &[(&'static str, &'a dyn rusqlite::ToSql)],
    ) -> Vec<(&'static str, &'a dyn rusqlite::ToSql)> {
        let mut all: Vec<(&'static str, &'a dyn rusqlite::ToSql)> = Self::NAMES
            .iter()
            .zip(&self.0)
            .map(|(name, value)| (*name, value as &dyn rusqlite::ToSql))
            .collect();
        all.extend_from_slice(extra);
        all
    }
}

/// A page of updates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateList {
    pub total: u64,
    pub updates: Vec<UpdateSummary>,
}

/// Catalog-wide counts for status.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    pub updates_not_approved: u64,
    pub updates_approved: u64,
    pub updates_declined: u64,
    pub files: u64,
    pub files_stored: u64,
    pub bytes_stored: u64,
}

/// The catalog: database plus in-memory index.
pub struct Catalog {
    path: std::path::PathBuf,
    /// The one writer (and its per-connection scratch tables).
    db: Mutex<Connection>,
    /// Listings and status read the last committed state here (WAL), so
    /// they answer while an import holds the writer.
    reader: Mutex<Connection>,
    /// Ingests recorded while the writer was busy; written by its next user.
    pending_stored: Mutex<Vec<(Sha1Digest, Ingested)>>,
    import: ImportTracker,
    index: RwLock<Index>,
    policy: RwLock<Policy>,
    store: Arc<Store>,
}

const POLICY_KEY: &str = "policy";
const MAX_PAGE: u32 = 1000;
/// Index entries loaded per write-lock: requests wait at most one batch.
const REFRESH_BATCH: usize = 8192;

/// Which files an index refresh reloads.
#[derive(Clone, Copy)]
enum Scope {
    All,
    /// The files listed in `x_touched` by the last write.
    Touched,
}

impl Catalog {
    /// Opens `DATA/catalog.sqlite3`, creating or migrating it, and loads the
    /// index. Files the store no longer has are marked absent (and vice versa).
    pub fn open(data_dir: &Path, store: Arc<Store>) -> Result<Arc<Catalog>, CatalogError> {
        let path = data_dir.join("catalog.sqlite3");
        let conn = Connection::open(&path)?;
        schema::prepare(&conn)?;
        register_functions(&conn)?;
        let policy = load_policy(&conn)?;
        let reader = Connection::open(&path)?;
        reader.pragma_update(None, "query_only", "ON")?;
        reader.busy_timeout(Duration::from_secs(5))?;
        let catalog = Catalog {
            path,
            db: Mutex::new(conn),
            reader: Mutex::new(reader),
            pending_stored: Mutex::default(),
            import: ImportTracker::default(),
            index: RwLock::new(Index::default()),
            policy: RwLock::new(policy),
            store,
        };
        {
            let db = catalog.db();
            catalog.refresh(&db, Scope::All)?;
            db.execute_batch("PRAGMA shrink_memory")?;
        }
        Ok(Arc::new(catalog))
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `change` in one transaction, then reloads into the index the
    /// files it listed in `x_touched`.
    fn write<T>(
        &self,
        change: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        let mut db = self.db();
        self.flush_stored(&db)?;
        let out = (|| -> Result<T, CatalogError> {
            let tx = db.transaction()?;
            tx.execute("DELETE FROM x_touched", [])?;
            let out = change(&tx)?;
            self.import.phase("committing");
            tx.commit()?;
            Ok(out)
        })();
        // Ingests that landed meanwhile, whatever the change did (and before
        // the refresh reads their rows back).
        self.flush_stored(&db)?;
        let out = out?;
        self.import.phase("indexing");
        self.refresh(&db, Scope::Touched)?;
        db.execute("DELETE FROM x_touched", [])?;
        // An import leaves the page cache full; the memory is the index's now.
        db.execute_batch("PRAGMA shrink_memory")?;
        Ok(out)
    }

    /// The file a SHA-1 names, if any update references it.
    pub fn lookup_sha1(&self, sha1: &Sha1Digest) -> Option<FileEntry> {
        self.index().get(sha1)
    }

    /// The file a SHA-256 names, if the catalog or an ingest taught us it.
    pub fn lookup_sha256(&self, sha256: &Sha256Digest) -> Option<FileEntry> {
        self.index().get_by_sha256(sha256)
    }

    pub fn policy(&self) -> Policy {
        *self.policy.read().unwrap()
    }

    pub fn set_policy(&self, policy: Policy) -> Result<(), CatalogError> {
        let json = serde_json::to_string(&policy).expect("policy serialises");
        self.db().execute(
            "INSERT INTO settings(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![POLICY_KEY, json],
        )?;
        *self.policy.write().unwrap() = policy;
        Ok(())
    }

    /// Imports a JSON catalog, streamed, in one transaction. With
    /// `honour_state`, the approval states in the document are applied
    /// (downstream sync).
    pub fn import_json<R: std::io::Read>(
        &self,
        input: R,
        honour_state: bool,
    ) -> Result<ImportReport, CatalogError> {
        self.import.start();
        let result = self.write(|tx| {
            let mut report = ImportReport::default();
            rules::begin(tx)?;
            let mut n = 0;
            json::parse_stream(input, |u| {
                import_update(tx, &u, honour_state, &mut report)?;
                n += 1;
                if n % 1024 == 0 {
                    self.import.read(n, 0);
                }
                Ok(())
            })?;
            self.import.phase("applying rules");
            report.changed_by_rules = rules::apply_to_new(tx)?;
            Ok(report)
        });
        self.import.finish();
        result
    }

    /// Imports Microsoft's `package.xml`, streamed, in one transaction.
    /// Bundles pass their children's files on to themselves (approving a
    /// bundle makes what it bundles servable); updates with a `SupersededBy`
    /// are marked superseded; KB numbers come from the file URLs.
    pub fn import_package_xml<R: std::io::BufRead>(
        &self,
        input: R,
    ) -> Result<ImportReport, CatalogError> {
        let started = std::time::Instant::now();
        self.import.start();
        let result = self.write(|tx| xml_import::run(tx, input, &self.index, &self.import));
        self.import.finish();
        let report = result?;
        tracing::info!(took = ?started.elapsed(), %report, "package.xml imported");
        Ok(report)
    }

    /// The import running now, if any.
    pub fn import_status(&self) -> Option<ImportStatus> {
        self.import.snapshot()
    }

    /// Sets an update's approval state and refreshes its files in the index.
    pub fn set_state(&self, id: &str, state: UpdateState) -> Result<UpdateSummary, CatalogError> {
        let id = id.to_ascii_lowercase();
        self.write(|tx| {
            let uid: i64 = tx
                .query_row(
                    "UPDATE updates SET state = ?2 WHERE id = ?1 RETURNING uid",
                    params![id, state.as_str()],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| CatalogError::UnknownUpdate(id.clone()))?;
            touch_files_of(tx, uid)
        })?;
        self.summary(&id)
    }

    /// Sets the approval state of every update a query selects (by KB,
    /// classification, product, title, supersedence...). Returns how many changed.
    pub fn set_state_where(
        &self,
        q: &UpdateQuery,
        state: UpdateState,
    ) -> Result<u64, CatalogError> {
        if !q.selects_something() {
            return Err(CatalogError::Invalid {
                at: "selection".into(),
                reason:
                    "select updates by kb, classification, product, title, q, superseded or state"
                        .into(),
            });
        }
        let filter = q.filter_params();
        let new_state = state.as_str();
        let args = filter.with(&[(":new_state", &new_state)]);
        self.write(|tx| {
            tx.execute(
                &format!(
                    "INSERT OR IGNORE INTO x_touched(fid) SELECT uf.fid FROM updates
                     JOIN update_files uf ON uf.uid = updates.uid
                     WHERE state != :new_state AND {FILTER}"
                ),
                args.as_slice(),
            )?;
            let changed = tx.execute(
                &format!(
                    "UPDATE updates SET state = :new_state WHERE state != :new_state AND {FILTER}"
                ),
                args.as_slice(),
            )?;
            Ok(changed as u64)
        })
    }

    /// The automatic approval rules.
    pub fn rules(&self) -> Result<Vec<rules::Rule>, CatalogError> {
        rules::list(&self.reader())
    }

    /// Adds a rule; it applies to updates imported from now on.
    pub fn add_rule(&self, rule: rules::Rule) -> Result<rules::Rule, CatalogError> {
        rules::add(&self.db(), rule)
    }

    /// Removes a rule; `false` if there was none with that id.
    pub fn remove_rule(&self, id: i64) -> Result<bool, CatalogError> {
        rules::remove(&self.db(), id)
    }

    /// Records a committed ingest: served from now on, and the SHA-256 is
    /// persisted so the file is found again after a restart. Never waits for
    /// the writer (download tasks run on the async threads): while an import
    /// holds it, the import writes this down when it is done.
    pub fn record_stored(&self, sha1: &Sha1Digest, got: &Ingested) -> Result<(), CatalogError> {
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .mark_stored(sha1, got.sha256, got.size);
        self.pending_stored().push((*sha1, *got));
        let db = match self.db.try_lock() {
            Ok(db) => db,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
        };
        self.flush_stored(&db)
    }

    /// Writes down ingests recorded while the writer was busy (at shutdown).
    pub fn flush_pending(&self) -> Result<(), CatalogError> {
        self.flush_stored(&self.db())
    }

    fn pending_stored(&self) -> MutexGuard<'_, Vec<(Sha1Digest, Ingested)>> {
        self.pending_stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the recorded ingests down (kept for the next try on failure).
    fn flush_stored(&self, db: &Connection) -> Result<(), CatalogError> {
        let pending = std::mem::take(&mut *self.pending_stored());
        if pending.is_empty() {
            return Ok(());
        }
        let written = (|| {
            let tx = db.unchecked_transaction()?;
            {
                let mut stmt =
                    tx.prepare_cached("UPDATE files SET sha256 = ?2, size = ?3 WHERE sha1 = ?1")?;
                for (sha1, got) in &pending {
                    stmt.execute(params![sha1, got.sha256, got.size as i64])?;
                }
            }
            tx.commit()
        })();
        if written.is_err() {
            self.pending_stored().extend(pending);
        }
        Ok(written?)
    }

    /// Forgets that a file is stored (after gc, eviction or a failed verify).
    pub fn record_absent(&self, sha1: &Sha1Digest) {
        self.index.write().unwrap().mark_absent(sha1);
    }

    /// Notes that a stored file was just served (for eviction order).
    pub fn record_served(&self, sha1: &Sha1Digest) {
        self.index().mark_served(sha1);
    }

    /// Bytes of the stored files the catalog knows.
    pub fn stored_bytes(&self) -> u64 {
        self.index().stored_totals().1
    }

    /// Stored files, least recently served first (eviction candidates).
    pub fn stored_by_last_served(&self) -> Vec<StoredFile> {
        self.index().stored_by_last_served()
    }

    /// SHA-256s of the stored files some approved update references: what `gc` keeps.
    pub fn approved_sha256s(&self) -> std::collections::HashSet<Sha256Digest> {
        self.index()
            .stored_sha256s(|a| a == Approval::Approved)
            .into_iter()
            .collect()
    }

    /// Files of every non-declined update that are not stored yet (at-sync).
    pub fn files_to_sync(&self) -> Vec<Sha1Digest> {
        self.index()
            .select(|a, stored| !stored && a != Approval::Declined)
    }

    /// Files of approved updates that are not stored yet (prefetch on approve).
    pub fn approved_missing(&self) -> Vec<Sha1Digest> {
        self.index()
            .select(|a, stored| !stored && a == Approval::Approved)
    }

    /// The files of one update, as the index has them.
    pub fn files_of(&self, id: &str) -> Result<Vec<FileEntry>, CatalogError> {
        let sha1s: Vec<Sha1Digest> = {
            let db = self.reader();
            let mut stmt = db.prepare_cached(
                "SELECT f.sha1 FROM updates u JOIN update_files uf ON uf.uid = u.uid
                 JOIN files f ON f.fid = uf.fid WHERE u.id = ?1",
            )?;
            let rows = stmt.query_map([id.to_ascii_lowercase()], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let index = self.index();
        Ok(sha1s.iter().filter_map(|s| index.get(s)).collect())
    }

    /// A page of updates, newest release first.
    pub fn list_updates(&self, q: &UpdateQuery) -> Result<UpdateList, CatalogError> {
        let limit = q.limit.unwrap_or(100).min(MAX_PAGE);
        let offset = q.offset.unwrap_or(0);
        let filter = q.filter_params();
        let db = self.reader();
        let total: i64 = db.query_row(
            &format!("SELECT count(*) FROM updates WHERE {FILTER}"),
            filter.with(&[]).as_slice(),
            |r| r.get(0),
        )?;
        let mut stmt = db.prepare(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM updates u WHERE {FILTER}
             ORDER BY release_date DESC, id LIMIT :limit OFFSET :offset"
        ))?;
        let updates = stmt
            .query_map(
                filter
                    .with(&[(":limit", &limit), (":offset", &offset)])
                    .as_slice(),
                summary_from_row,
            )?
            .collect::<Result<_, _>>()?;
        Ok(UpdateList {
            total: total as u64,
            updates,
        })
    }

    /// One update with its files.
    pub fn update(&self, id: &str) -> Result<UpdateDetail, CatalogError> {
        let id = id.to_ascii_lowercase();
        let summary = self.summary(&id)?;
        let description: String = self.reader().query_row(
            "SELECT description FROM updates WHERE id = ?1",
            [&id],
            |r| r.get(0),
        )?;
        let files = self
            .files_of(&id)?
            .into_iter()
            .map(|f| FileDetail {
                name: f.name.to_string(),
                sha1: f.sha1.to_hex(),
                sha256: f.sha256.map(|d| d.to_hex()),
                size: f.size,
                url: f.url.to_string(),
                local_state: if f.stored { "stored" } else { "absent" }.into(),
            })
            .collect();
        Ok(UpdateDetail {
            summary,
            description,
            files,
        })
    }

    /// Writes the whole catalog with approval states, in the import format,
    /// one update at a time (a downstream sync of a million files never
    /// holds them in memory). Reads on its own connection, so listings and
    /// status are not held up meanwhile.
    pub fn export_to<W: std::io::Write>(&self, mut out: W) -> Result<(), CatalogError> {
        let db = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let io = |e: std::io::Error| CatalogError::Invalid {
            at: "export".into(),
            reason: e.to_string(),
        };
        let mut files_stmt = db.prepare(
            "SELECT f.name, f.sha1, f.sha256, f.size, f.url FROM update_files uf
             JOIN files f ON f.fid = uf.fid WHERE uf.uid = ?1 ORDER BY f.name",
        )?;
        let mut stmt = db.prepare(
            "SELECT uid, id, revision, title, description, kb, msrc, classification, products,
                    release_date, state FROM updates ORDER BY id",
        )?;
        let mut rows = stmt.query([])?;
        out.write_all(b"{\"updates\":[").map_err(io)?;
        let mut first = true;
        while let Some(r) = rows.next()? {
            let uid: i64 = r.get(0)?;
            let files = files_stmt
                .query_map([uid], |f| {
                    Ok(FileDoc {
                        name: f.get(0)?,
                        sha1: f.get::<_, Sha1Digest>(1)?.to_hex(),
                        sha256: f.get::<_, Option<Sha256Digest>>(2)?.map(|d| d.to_hex()),
                        size: f.get::<_, Option<i64>>(3)?.map(|s| s as u64),
                        url: f.get(4)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            let update = UpdateDoc {
                id: r.get(1)?,
                revision: r.get(2)?,
                title: r.get(3)?,
                description: r.get(4)?,
                kb: r.get(5)?,
                msrc: r.get(6)?,
                classification: r.get(7)?,
                products: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default(),
                release_date: r.get(9)?,
                state: UpdateState::parse(&r.get::<_, String>(10)?),
                files,
            };
            if !first {
                out.write_all(b",\n").map_err(io)?;
            }
            first = false;
            serde_json::to_writer(&mut out, &update).map_err(|e| io(e.into()))?;
        }
        out.write_all(b"]}\n").map_err(io)?;
        out.flush().map_err(io)
    }

    /// Counts for status; stored bytes come from the index (no disk walk).
    pub fn counts(&self) -> Result<Counts, CatalogError> {
        let mut c = Counts::default();
        {
            let db = self.reader();
            let mut stmt = db.prepare("SELECT state, count(*) FROM updates GROUP BY state")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let n: i64 = r.get(1)?;
                match UpdateState::parse(&r.get::<_, String>(0)?) {
                    Some(UpdateState::Approved) => c.updates_approved = n as u64,
                    Some(UpdateState::Declined) => c.updates_declined = n as u64,
                    _ => c.updates_not_approved += n as u64,
                }
            }
        }
        let index = self.index();
        c.files = index.len() as u64;
        (c.files_stored, c.bytes_stored) = index.stored_totals();
        Ok(c)
    }

    fn summary(&self, id: &str) -> Result<UpdateSummary, CatalogError> {
        self.reader()
            .query_row(
                &format!("SELECT {SUMMARY_COLUMNS} FROM updates u WHERE id = ?1"),
                [id],
                summary_from_row,
            )
            .optional()?
            .ok_or_else(|| CatalogError::UnknownUpdate(id.to_owned()))
    }

    /// Reloads files from the database into the index, in batches so
    /// requests are never held up for long; files no update references any
    /// more leave the index.
    fn refresh(&self, db: &Connection, scope: Scope) -> Result<(), CatalogError> {
        let from = match scope {
            Scope::All => "files f",
            Scope::Touched => "x_touched t JOIN files f ON f.fid = t.fid",
        };
        if let Scope::All = scope {
            let files: i64 = db.query_row("SELECT count(*) FROM files", [], |r| r.get(0))?;
            self.index
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .reserve(files as usize);
        }
        let mut stmt = db.prepare(&format!(
            "SELECT f.sha1, f.sha256, f.size, f.name, f.url, f.modified,
                    max(u.state = 'approved'), min(u.state = 'declined'), count(u.uid)
             FROM {from} LEFT JOIN update_files uf ON uf.fid = f.fid
             LEFT JOIN updates u ON u.uid = uf.uid
             GROUP BY f.fid"
        ))?;
        let mut rows = stmt.query([])?;
        let mut batch = Vec::with_capacity(REFRESH_BATCH);
        loop {
            let row = rows.next()?;
            if let Some(r) = row {
                batch.push(self.entry_from_row(r)?);
            }
            if batch.len() == REFRESH_BATCH || (row.is_none() && !batch.is_empty()) {
                self.apply(&mut batch);
            }
            if row.is_none() {
                return Ok(());
            }
        }
    }

    /// Puts a batch of refreshed files into the index.
    fn apply(&self, batch: &mut Vec<Refreshed>) {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for refreshed in batch.drain(..) {
            match refreshed {
                Refreshed::Referenced { entry, stored_at } => {
                    let sha1 = entry.sha1;
                    index.insert(entry);
                    if let Some(millis) = stored_at {
                        index.seed_served(&sha1, millis);
                    }
                }
                Refreshed::Unreferenced(sha1) => index.remove(&sha1),
            }
        }
    }

    fn entry_from_row(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<Refreshed> {
        let sha1: Sha1Digest = r.get(0)?;
        if r.get::<_, i64>(8)? == 0 {
            return Ok(Refreshed::Unreferenced(sha1));
        }
        let sha256: Option<Sha256Digest> = r.get(1)?;
        let stored_at = sha256.and_then(|d| self.store.published_at(&d));
        let (approved, all_declined): (bool, bool) = (r.get(6)?, r.get(7)?);
        let entry = FileEntry {
            sha1,
            sha256,
            size: r.get::<_, Option<i64>>(2)?.map(|s| s as u64),
            name: r.get::<_, String>(3)?.into(),
            url: r.get::<_, String>(4)?.into(),
            modified: r
                .get::<_, Option<i64>>(5)?
                .map(|s| UNIX_EPOCH + Duration::from_secs(s.max(0) as u64)),
            approval: match (approved, all_declined) {
                (true, _) => Approval::Approved,
                (false, true) => Approval::Declined,
                (false, false) => Approval::NotApproved,
            },
            stored: stored_at.is_some(),
        };
        let stored_at = stored_at
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        Ok(Refreshed::Referenced { entry, stored_at })
    }
}

/// One file as an index refresh read it.
enum Refreshed {
    Referenced {
        entry: FileEntry,
        /// When the store published it (unix milliseconds), if it is stored.
        stored_at: Option<u64>,
    },
    /// No update references it any more.
    Unreferenced(Sha1Digest),
}

/// Lists an update's files for the index refresh after this write.
pub(crate) fn touch_files_of(tx: &rusqlite::Transaction<'_>, uid: i64) -> Result<(), CatalogError> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO x_touched(fid) SELECT fid FROM update_files WHERE uid = ?1",
    )?
    .execute([uid])?;
    Ok(())
}

/// SQL functions the imports use.
fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "kb_from_url",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            Ok(package_xml::kb_from_url(
                ctx.get_raw(0).as_str().unwrap_or(""),
            ))
        },
    )
}

const SUMMARY_COLUMNS: &str = "id, revision, title, kb, msrc, classification, products,
    release_date, state, (SELECT count(*) FROM update_files uf WHERE uf.uid = u.uid),
    superseded";

fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UpdateSummary> {
    Ok(UpdateSummary {
        id: r.get(0)?,
        revision: r.get(1)?,
        title: r.get(2)?,
        kb: r.get(3)?,
        msrc: r.get(4)?,
        classification: r.get(5)?,
        products: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
        release_date: r.get(7)?,
        state: UpdateState::parse(&r.get::<_, String>(8)?).ok_or_else(|| bad_column(8))?,
        file_count: r.get::<_, i64>(9)? as u64,
        superseded: r.get(10)?,
    })
}

fn bad_column(i: usize) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(i, "unexpected value".into(), rusqlite::types::Type::Text)
}

fn load_policy(conn: &Connection) -> Result<Policy, CatalogError> {
    let json: Option<String> = conn
        .query_row(
            "SELECT value FROM settings WHERE key = ?1",
            [POLICY_KEY],
            |r| r.get(0),
        )
        .optional()?;
    Ok(json
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default())
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

/// Writes one validated update: new, newer revision (replaces metadata and
/// file links, keeps the approval), same revision (untouched but for an
/// imported state) or older (ignored).
fn import_update(
    tx: &rusqlite::Transaction<'_>,
    u: &ValidUpdate,
    honour_state: bool,
    report: &mut ImportReport,
) -> Result<(), CatalogError> {
    let d = &u.doc;
    let imported_state = d.state.filter(|_| honour_state).map(UpdateState::as_str);
    let known = match compare_revision(tx, &d.id, d.revision, report)? {
        Revision::Stale(_) => return Ok(()),
        Revision::Same(uid) => {
            if let Some(state) = imported_state {
                let changed = tx.execute(
                    "UPDATE updates SET state = ?2 WHERE uid = ?1 AND state != ?2",
                    params![uid, state],
                )?;
                if changed > 0 {
                    touch_files_of(tx, uid)?;
                }
            }
            return Ok(());
        }
        Revision::Newer(uid) => {
            touch_files_of(tx, uid)?;
            tx.execute("DELETE FROM update_files WHERE uid = ?1", [uid])?;
            Some(uid)
        }
        Revision::New => None,
    };
    let products = serde_json::to_string(&d.products).expect("strings serialise");
    let uid: i64 = tx.query_row(
        "INSERT INTO updates(uid, id, revision, title, description, kb, msrc, classification,
                             products, release_date, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, coalesce(?11, 'not-approved'))
         ON CONFLICT(uid) DO UPDATE SET revision = excluded.revision, title = excluded.title,
            description = excluded.description, kb = excluded.kb, msrc = excluded.msrc,
            classification = excluded.classification, products = excluded.products,
            release_date = excluded.release_date, state = coalesce(?11, updates.state)
         RETURNING uid",
        params![
            known,
            d.id,
            d.revision,
            d.title,
            d.description,
            d.kb,
            d.msrc,
            d.classification,
            products,
            d.release_date,
            imported_state,
        ],
        |r| r.get(0),
    )?;
    rules::mark_new(tx, uid)?;
    let modified = u.released.unwrap_or_else(now_secs);
    for f in &u.files {
        let known: Option<i64> = tx
            .prepare_cached("SELECT fid FROM files WHERE sha1 = ?1")?
            .query_row([f.sha1], |r| r.get(0))
            .optional()?;
        let size = f.size.map(|s| s as i64);
        let fid = match known {
            Some(fid) => {
                // Newer metadata wins; learned digests and sizes are kept.
                tx.prepare_cached(
                    "UPDATE files SET name = ?2, url = ?3, sha256 = coalesce(sha256, ?4),
                                      size = coalesce(size, ?5) WHERE fid = ?1",
                )?
                .execute(params![fid, f.name, f.url, f.sha256, size])?;
                fid
            }
            None => {
                tx.prepare_cached(
                    "INSERT INTO files(sha1, sha256, size, name, url, modified)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![f.sha1, f.sha256, size, f.name, f.url, modified])?;
                report.files_added += 1;
                tx.last_insert_rowid()
            }
        };
        tx.prepare_cached("INSERT OR IGNORE INTO update_files(uid, fid) VALUES (?1, ?2)")?
            .execute([uid, fid])?;
        tx.prepare_cached("INSERT OR IGNORE INTO x_touched(fid) VALUES (?1)")?
            .execute([fid])?;
    }
    Ok(())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
