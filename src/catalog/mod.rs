//! The metadata module: updates, their files and digests, approvals and the
//! storage policy, persisted in SQLite under the data directory.
//!
//! Every write is one transaction, so a crash at any moment leaves either
//! the old or the new catalog. Reads on the request path go to the
//! in-memory `index::Index` instead of the database.

pub mod approvals;
pub mod cabinet;
mod export;
pub mod groups;
mod import;
mod index;
pub mod json;
mod json_import;
pub mod package_xml;
mod primary_groups;
mod query;
pub mod rules;
pub mod scancab;
mod schema;
mod xml_import;

pub use export::{FleetExport, Memberships};
#[cfg(test)]
pub(crate) use export::{MEMBERS_PAGE_SQL, MIRRORED_PAGE_SQL};
pub use import::{ImportReport, ImportStatus};
pub use index::{FileEntry, Location, StoredFile};
pub use json::CatalogDoc;
pub use query::{Counts, Facets, FileDetail, UpdateDetail, UpdateList, UpdateQuery, UpdateSummary};
pub use schema::bump_change_seq;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::digest::{Sha1Digest, Sha256Digest};
use crate::policy::{Approval, Policy};
use crate::store::{Ingested, Storage};
use import::ImportTracker;
use index::Index;

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
    #[error("no computer group {0:?}")]
    UnknownGroup(String),
    #[error("a computer group {0:?} exists already")]
    GroupExists(String),
    #[error("{0:?} is a built-in group: it is never renamed or deleted")]
    BuiltinGroup(String),
    #[error("catalog database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("writing the catalog out: {0}")]
    Export(#[source] std::io::Error),
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
    store: Arc<dyn Storage>,
}

const POLICY_KEY: &str = "policy";
/// Where a follower keeps the primary's change number it has applied.
const FOLLOW_SEQ_KEY: &str = "follow_seq";
/// ... and the one its memberships are at.
const FOLLOW_MEMBERS_KEY: &str = "follow_members_seq";

/// Where a follower keeps the primary's memberships (the fleet's tables,
/// in the same transaction as the rest of a pull).
pub trait PrimaryMembers {
    /// Forgets every membership (a pull of all of them follows).
    fn clear(&mut self, db: &Connection) -> rusqlite::Result<()>;
    /// Client `id` is in exactly the groups `gids` (ids here; none: in
    /// none of the own groups), whether or not it is known here yet.
    fn set(&mut self, db: &Connection, id: &str, gids: &[i64]) -> rusqlite::Result<()>;
}

/// A follower's pull of memberships: the change number it asked them
/// `since` (0: all of them, replacing what it holds), and where they go.
pub struct FollowMembers<'a> {
    pub since: u64,
    pub sink: &'a mut dyn PrimaryMembers,
}
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
    pub fn open(data_dir: &Path, store: Arc<dyn Storage>) -> Result<Arc<Catalog>, CatalogError> {
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
        catalog.refresh(&catalog.db(), Scope::All)?;
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
            schema::bump_change_seq(&tx)?;
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
        Ok(out)
    }

    /// Whether the file is in the store now (its bytes verified).
    fn is_stored(&self, sha1: &Sha1Digest) -> bool {
        self.index().get(sha1).is_some_and(|e| e.stored)
    }

    /// The file a SHA-1 names, if any update references it.
    pub fn lookup_sha1(&self, sha1: &Sha1Digest) -> Option<FileEntry> {
        self.index().get(sha1)
    }

    /// Where a file is downloaded from (for fetches and redirects).
    pub fn location(&self, sha1: &Sha1Digest) -> Option<Location> {
        self.index().location(sha1)
    }

    /// The file a SHA-256 names, if the catalog or an ingest taught us it.
    pub fn lookup_sha256(&self, sha256: &Sha256Digest) -> Option<FileEntry> {
        self.index().get_by_sha256(sha256)
    }

    pub fn policy(&self) -> Policy {
        *self.policy.read().unwrap()
    }

    pub fn set_policy(&self, policy: Policy) -> Result<(), CatalogError> {
        write_policy(&self.db(), &policy)?;
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
        let trust = if honour_state {
            json_import::Trust::States
        } else {
            json_import::Trust::Metadata
        };
        let stored = |sha1: &Sha1Digest| self.is_stored(sha1);
        self.write_import(|tx| {
            let mut report = ImportReport::default();
            rules::begin(tx)?;
            let mut n = 0;
            json::parse_stream(input, |u| {
                json_import::import_update(tx, &u, trust, &stored, &mut report)?;
                n += 1;
                if n % 1024 == 0 {
                    self.import.read(n, 0);
                }
                Ok(())
            })?;
            self.import.phase("applying rules");
            report.changed_by_rules = rules::apply_to_new(tx)?;
            Ok(report)
        })
    }

    /// Applies a primary's export (`GET /api/v1/catalog?since=`), streamed,
    /// in one transaction: its updates as it has them (states, supersedence,
    /// learned digests), its policy, and its rules in place of ours; and
    /// records the change number to ask `since` next time. Rules are not
    /// run here: the primary's states already carry them.
    ///
    /// With `members` (asked with `members_since`): the primary's groups
    /// (renames and deletions follow) and its computers' memberships, which
    /// `members.sink` keeps (the fleet's tables); the change number they
    /// reached is recorded too ([`Catalog::follow_members_seq`]). Without,
    /// that number is forgotten, so that asking again starts from all.
    pub fn import_from_primary<R: std::io::Read>(
        &self,
        input: R,
        mut members: Option<FollowMembers<'_>>,
    ) -> Result<(ImportReport, u64), CatalogError> {
        let mut policy = None;
        let mut seq = 0;
        let stored = |sha1: &Sha1Digest| self.is_stored(sha1);
        let report = self.write_import(|tx| {
            let mut report = ImportReport::default();
            let mut members_seen = false;
            let asked = members.is_some();
            let mut fleet = |item: json::FleetItem| -> Result<(), CatalogError> {
                let Some(m) = members.as_mut() else {
                    unreachable!("the parser hands on fleet items only with a sink")
                };
                match item {
                    json::FleetItem::Groups(list) => primary_groups::follow(tx, &list)?,
                    json::FleetItem::MembersBegin => {
                        members_seen = true;
                        if m.since == 0 {
                            m.sink.clear(tx)?;
                        }
                    }
                    json::FleetItem::Member(doc) => {
                        // A group made after the export's `seq` is not
                        // known yet; the membership is stamped above that
                        // `seq` too, so it comes again with the group.
                        let mut gids = Vec::with_capacity(doc.groups.len());
                        for pid in doc.groups {
                            if let Some(gid) = primary_groups::of_primary(tx, pid)? {
                                gids.push(gid);
                            }
                        }
                        gids.sort_unstable();
                        gids.dedup();
                        m.sink.set(tx, &doc.id, &gids)?;
                    }
                }
                Ok(())
            };
            let extras = json::parse_stream_with(
                input,
                |u| {
                    let trust = json_import::Trust::Primary;
                    json_import::import_update(tx, &u, trust, &stored, &mut report)
                },
                if asked { Some(&mut fleet) } else { None },
            )?;
            let (Some(primary_seq), Some(p), Some(primary_rules)) =
                (extras.seq, extras.policy, extras.rules)
            else {
                return Err(CatalogError::Invalid {
                    at: "document".into(),
                    reason: "not a primary's export: seq, policy and rules are missing".into(),
                });
            };
            write_policy(tx, &p)?;
            rules::replace_all(tx, &primary_rules)?;
            let mut put = tx.prepare_cached(
                "INSERT INTO settings(key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )?;
            put.execute(params![FOLLOW_SEQ_KEY, primary_seq.to_string()])?;
            if members_seen {
                put.execute(params![FOLLOW_MEMBERS_KEY, primary_seq.to_string()])?;
            } else if !asked {
                tx.execute("DELETE FROM settings WHERE key = ?1", [FOLLOW_MEMBERS_KEY])?;
            }
            policy = Some(p);
            seq = primary_seq;
            Ok(report)
        })?;
        if let Some(p) = policy {
            *self.policy.write().unwrap() = p;
        }
        Ok((report, seq))
    }

    /// The primary's change number this follower's catalog is at (0: none yet).
    pub fn follow_seq(&self) -> Result<u64, CatalogError> {
        Ok(self.setting_u64(FOLLOW_SEQ_KEY)?.unwrap_or(0))
    }

    /// The primary's change number this follower's memberships are at
    /// (`None`: none taken yet).
    pub fn follow_members_seq(&self) -> Result<Option<u64>, CatalogError> {
        self.setting_u64(FOLLOW_MEMBERS_KEY)
    }

    fn setting_u64(&self, key: &str) -> Result<Option<u64>, CatalogError> {
        let value: Option<String> = self
            .reader()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(value.and_then(|v| v.parse().ok()))
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
        let report =
            self.write_import(|tx| xml_import::run(tx, input, &self.index, &self.import))?;
        tracing::info!(took = ?started.elapsed(), %report, "package.xml imported");
        Ok(report)
    }

    /// Marks these updates superseded (synced metadata names what each
    /// update supersedes); returns how many changed.
    pub fn mark_superseded(&self, ids: &[String]) -> Result<u64, CatalogError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.write(|tx| {
            let mut changed = 0;
            for id in ids {
                changed += tx
                    .prepare_cached(
                        "UPDATE updates SET superseded = 1 WHERE id = ?1 AND superseded = 0",
                    )?
                    .execute([id.to_ascii_lowercase()])? as u64;
            }
            Ok(changed)
        })
    }

    /// A [`Catalog::write`] that status shows as the running import.
    fn write_import(
        &self,
        change: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<ImportReport, CatalogError>,
    ) -> Result<ImportReport, CatalogError> {
        self.import.start();
        let result = self.write(change);
        self.import.finish();
        result
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
            import::touch_files_of(tx, uid)
        })?;
        self.summary(&id)
    }

    /// Approves an update for a group (`None`: `All Computers`), with an
    /// optional deadline (unix seconds); other groups' approvals stay.
    pub fn approve_for(
        &self,
        id: &str,
        group: Option<&str>,
        deadline: Option<i64>,
    ) -> Result<UpdateSummary, CatalogError> {
        let id = id.to_ascii_lowercase();
        self.write(|tx| {
            let uid = uid_of(tx, &id)?;
            let gid = group_id(tx, group)?;
            approvals::approve(tx, uid, gid, deadline).map(drop)
        })?;
        self.summary(&id)
    }

    /// Takes one group's approval of an update back (the last one leaves
    /// it not approved).
    pub fn unapprove_for(&self, id: &str, group: &str) -> Result<UpdateSummary, CatalogError> {
        let id = id.to_ascii_lowercase();
        self.write(|tx| {
            let uid = uid_of(tx, &id)?;
            let gid = groups::by_name(tx, group)?.id;
            approvals::withdraw(tx, uid, gid)
        })?;
        self.summary(&id)
    }

    /// Approves for a group every update a query selects; returns how many.
    pub fn approve_where_for(
        &self,
        q: &UpdateQuery,
        group: Option<&str>,
        deadline: Option<i64>,
    ) -> Result<u64, CatalogError> {
        self.write(|tx| {
            let gid = group_id(tx, group)?;
            let mut changed = 0;
            for uid in query::select_uids(tx, q)? {
                changed += u64::from(approvals::approve(tx, uid, gid, deadline)?);
            }
            Ok(changed)
        })
    }

    /// The groups an update is approved for, with their deadlines.
    pub fn approvals_of(&self, id: &str) -> Result<Vec<approvals::GroupApproval>, CatalogError> {
        let db = self.reader();
        let uid = uid_of(&db, &id.to_ascii_lowercase())?;
        approvals::of_update(&db, uid)
    }

    /// The group approvals (group id, deadline) of these updates (ids
    /// lowercase), for a scan; an update approved for none is absent.
    pub fn group_approvals_of(&self, ids: &[&str]) -> Result<approvals::ByUpdate, CatalogError> {
        approvals::for_updates(&self.reader(), ids)
    }

    /// Every computer group, `All Computers` and `Unassigned Computers` first.
    pub fn groups(&self) -> Result<Vec<groups::Group>, CatalogError> {
        groups::list(&self.reader())
    }

    /// The group of this name (case-insensitive).
    pub fn group(&self, name: &str) -> Result<groups::Group, CatalogError> {
        groups::by_name(&self.reader(), name)
    }

    pub fn create_group(&self, name: &str) -> Result<groups::Group, CatalogError> {
        let now = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.write(|tx| groups::create(tx, name, now))
    }

    pub fn rename_group(&self, from: &str, to: &str) -> Result<groups::Group, CatalogError> {
        self.write(|tx| groups::rename(tx, from, to))
    }

    /// Deletes a group with its approvals (an update approved for it alone
    /// is not approved any more), memberships and rules.
    pub fn delete_group(&self, name: &str) -> Result<groups::Group, CatalogError> {
        self.write(|tx| {
            let group = groups::own(tx, name)?;
            for uid in approvals::of_group(tx, group.id)? {
                approvals::withdraw(tx, uid, group.id)?;
            }
            groups::delete(tx, name)
        })
    }

    /// Sets the approval state of every update a query selects (by KB,
    /// classification, product, title, supersedence...). Returns how many changed.
    /// The ids of the updates a bulk change with `q` would touch.
    pub fn ids_where(&self, q: &UpdateQuery) -> Result<Vec<String>, CatalogError> {
        query::select_ids(&self.reader(), q)
    }

    pub fn set_state_where(
        &self,
        q: &UpdateQuery,
        state: UpdateState,
    ) -> Result<u64, CatalogError> {
        self.write(|tx| query::set_state(tx, q, state))
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
    /// holds it, the import writes this down when it is done. A failed write
    /// is retried by the next one; the file is served meanwhile.
    pub fn record_stored(&self, sha1: &Sha1Digest, got: &Ingested) {
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .mark_stored(sha1, got.sha256, got.size);
        self.pending_stored().push((*sha1, *got));
        let db = match self.db.try_lock() {
            Ok(db) => db,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if let Err(e) = self.flush_stored(&db) {
            tracing::warn!(error = %e, "recording stored files (will retry)");
        }
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
            schema::bump_change_seq(&tx)?;
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

    /// Files not stored yet whose approval `wanted` accepts (the background
    /// downloads' plan).
    pub fn missing_where(&self, wanted: impl Fn(Approval) -> bool) -> Vec<Sha1Digest> {
        self.index().select(|a, stored| !stored && wanted(a))
    }

    /// The files of one update, as the index has them.
    fn files_of(&self, id: &str) -> Result<Vec<(FileEntry, Location)>, CatalogError> {
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
        Ok(sha1s
            .iter()
            .filter_map(|s| Some((index.get(s)?, index.location(s)?)))
            .collect())
    }

    /// A page of updates, newest release first.
    pub fn list_updates(&self, q: &UpdateQuery) -> Result<UpdateList, CatalogError> {
        query::list(&self.reader(), q)
    }

    /// The approval states of these updates (ids lowercase); an id the
    /// catalog does not hold is absent from the answer.
    pub fn states_of(&self, ids: &[&str]) -> Result<HashMap<String, UpdateState>, CatalogError> {
        let db = self.reader();
        let mut q = db.prepare_cached("SELECT state FROM updates WHERE id = ?1")?;
        let mut out = HashMap::with_capacity(ids.len());
        for id in ids {
            let state: Option<String> = q.query_row([id], |r| r.get(0)).optional()?;
            if let Some(state) = state.as_deref().and_then(UpdateState::parse) {
                out.insert((*id).to_owned(), state);
            }
        }
        Ok(out)
    }

    /// The change number of the last write: any approval, import or
    /// policy change moves it (what caches of approvals are keyed on).
    pub fn change_seq(&self) -> Result<u64, CatalogError> {
        Ok(schema::change_seq(&self.reader())?)
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
            .map(|(f, at)| FileDetail {
                name: at.name,
                sha1: f.sha1.to_hex(),
                sha256: f.sha256.map(|d| d.to_hex()),
                size: f.size,
                url: at.url,
                local_state: if f.stored { "stored" } else { "absent" }.into(),
            })
            .collect();
        Ok(UpdateDetail {
            summary,
            description,
            files,
            approvals: self.approvals_of(&id)?,
        })
    }

    /// Writes the whole catalog with approval states, in the import format,
    /// one update at a time (a downstream sync of a million files never
    /// holds them in memory). Reads on its own connection, so listings and
    /// status are not held up meanwhile.
    pub fn export_to<W: std::io::Write>(
        &self,
        out: W,
        since: Option<u64>,
        fleet: Option<export::FleetExport>,
    ) -> Result<(), CatalogError> {
        let db = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        export::write_catalog(&db, out, since, fleet)
    }

    /// Files stored and their bytes (from the in-memory index).
    pub fn stored_totals(&self) -> (u64, u64) {
        self.index().stored_totals()
    }

    /// The classifications and products updates name.
    pub fn facets(&self) -> Result<Facets, CatalogError> {
        Ok(query::facets(&self.reader())?)
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
            let superseded: i64 =
                db.query_row("SELECT count(*) FROM updates WHERE superseded", [], |r| {
                    r.get(0)
                })?;
            c.updates_superseded = superseded as u64;
        }
        let index = self.index();
        c.files = index.len() as u64;
        (c.files_stored, c.bytes_stored) = index.stored_totals();
        Ok(c)
    }

    fn summary(&self, id: &str) -> Result<UpdateSummary, CatalogError> {
        query::summary(&self.reader(), id)
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
                Refreshed::Referenced {
                    entry,
                    location,
                    stored_at,
                } => {
                    let sha1 = entry.sha1;
                    index.insert(entry, &location);
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
        let location = Location {
            name: r.get(3)?,
            url: r.get(4)?,
        };
        Ok(Refreshed::Referenced {
            entry,
            location,
            stored_at,
        })
    }
}

/// One file as an index refresh read it.
enum Refreshed {
    Referenced {
        entry: FileEntry,
        location: Location,
        /// When the store published it (unix milliseconds), if it is stored.
        stored_at: Option<u64>,
    },
    /// No update references it any more.
    Unreferenced(Sha1Digest),
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

fn write_policy(conn: &Connection, policy: &Policy) -> Result<(), CatalogError> {
    let json = serde_json::to_string(policy).expect("policy serialises");
    conn.execute(
        "INSERT INTO settings(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![POLICY_KEY, json],
    )?;
    Ok(())
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

/// The row id of update `id` (lowercase).
fn uid_of(db: &Connection, id: &str) -> Result<i64, CatalogError> {
    db.prepare_cached("SELECT uid FROM updates WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| CatalogError::UnknownUpdate(id.to_owned()))
}

/// The id of group `name` (`None`: `All Computers`).
fn group_id(db: &Connection, name: Option<&str>) -> Result<i64, CatalogError> {
    match name {
        None => Ok(groups::ALL_COMPUTERS),
        Some(name) => Ok(groups::by_name(db, name)?.id),
    }
}
