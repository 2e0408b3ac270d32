//! Where synced update documents live: each revision's whole document,
//! compressed, with what is derived from it (kind, titles, relationships,
//! files), in the catalog's SQLite file.
//!
//! One transaction per batch: a sync killed at any moment leaves whole
//! batches or nothing, and a revision already stored is never written
//! twice (its `(update_id, revision)` is unique), so a resumed sync skips
//! it.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use sha2::Digest as _;

use super::update_xml::{Kind, UpdateInfo};
use crate::digest::{Sha1Digest, Sha256Digest};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("metadata document of {0}: {1}")]
    Document(String, std::io::Error),
}

/// One revision to store: what was parsed, and the document's UTF-8 bytes.
pub struct Incoming {
    pub info: UpdateInfo,
    pub doc: Vec<u8>,
}

/// One revision ready to write: its document compressed at once, so a
/// batch waiting for its transaction holds compressed documents only.
pub struct Packed {
    pub info: UpdateInfo,
    z: Vec<u8>,
    sha256: [u8; 32],
    len: usize,
}

impl Packed {
    pub fn new(info: UpdateInfo, doc: &[u8]) -> Packed {
        Packed {
            info,
            z: deflate(doc),
            sha256: sha2::Sha256::digest(doc).into(),
            len: doc.len(),
        }
    }
}

impl From<&Incoming> for Packed {
    fn from(d: &Incoming) -> Packed {
        Packed::new(d.info.clone(), &d.doc)
    }
}

/// A file location from `GetUpdateData`'s `fileUrls`.
#[derive(Debug, Clone)]
pub struct FileUrl {
    pub sha1: Sha1Digest,
    pub mu_url: String,
    pub uss_url: String,
}

/// What one batch changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchCounts {
    /// Revisions of update ids not seen before.
    pub new: u64,
    /// New revisions of update ids already known.
    pub changed: u64,
    /// Revisions already stored (a resumed sync).
    pub present: u64,
    /// Documents that say the update is expired.
    pub expired: u64,
    pub bytes: u64,
}

/// A category as listed for selection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Category {
    pub id: String,
    pub title: String,
    /// `Product`, `UpdateClassification`, `ProductFamily`, `Company`, ...
    pub category_type: String,
}

/// An update ready for the catalog (see `project`).
#[derive(Debug, Clone)]
pub struct Projected {
    pub rid: i64,
    pub update_id: String,
    pub revision: u32,
    pub title: String,
    pub description: String,
    pub kb: Option<String>,
    pub created: Option<String>,
    pub classification: Option<String>,
    pub products: Vec<String>,
    pub files: Vec<RevisionFile>,
    /// Whether a newer stored update supersedes it.
    pub superseded: bool,
}

/// The metadata store (its own connection to the catalog's file).
pub struct MetaStore {
    db: Mutex<Connection>,
    path: std::path::PathBuf,
}

impl MetaStore {
    /// Opens (creating the tables) `DATA/catalog.sqlite3`.
    pub fn open(data_dir: &Path) -> Result<MetaStore, MetaError> {
        Self::open_path(&data_dir.join("catalog.sqlite3"))
    }

    pub fn open_path(path: &Path) -> Result<MetaStore, MetaError> {
        let conn = connect(path)?;
        super::schema::prepare(&conn)?;
        Ok(MetaStore {
            db: Mutex::new(conn),
            path: path.to_owned(),
        })
    }

    /// Writes the documents of one `wsusscn2.cab` detail cabinet in one
    /// transaction, on a connection of its own: scans keep reading the
    /// store meanwhile, and an import cut short (an error in `fill`, a
    /// killed process) leaves nothing of it.
    pub fn write_cabinet<E: From<MetaError>>(
        &self,
        fill: impl FnOnce(&mut CabinetWriter<'_>) -> Result<(), E>,
    ) -> Result<CabinetCounts, E> {
        let mut conn = connect(&self.path)?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(MetaError::from)?;
        let mut writer = CabinetWriter {
            tx: &tx,
            counts: CabinetCounts::default(),
        };
        fill(&mut writer)?;
        let counts = writer.counts;
        tx.commit().map_err(MetaError::from)?;
        Ok(counts)
    }

    /// Records a `GetDeployments` answer: `live` are the keys of the
    /// deployments in force now. Returns this call's number, the
    /// generation of each live key, and the (key, generation) of every
    /// deployment found withdrawn after call `since` (all of them without
    /// `since`), in one transaction.
    pub fn deployments_in_force(
        &self,
        live: &[String],
        since: Option<u64>,
    ) -> Result<DeploymentsInForce, MetaError> {
        let mut db = self.db();
        // Immediate: it reads, then writes; a deferred one could find its
        // snapshot stale at the first write (another connection's commit).
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let call: u64 = tx
            .query_row(
                "SELECT value FROM meta_state WHERE key = 'deployments_call'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            + 1;
        let wanted: HashSet<&str> = live.iter().map(String::as_str).collect();
        let in_force: Vec<(String, u32)> = tx
            .prepare("SELECT key, generation FROM meta_sent_deployments WHERE dead_call IS NULL")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (key, generation) in in_force
            .iter()
            .filter(|(k, _)| !wanted.contains(k.as_str()))
        {
            tx.prepare_cached("UPDATE meta_sent_deployments SET dead_call = ?2 WHERE key = ?1")?
                .execute(params![key, call as i64])?;
            // Kept when it is given again: replicas that hold this
            // generation are told of its death even then.
            tx.prepare_cached(
                "INSERT OR REPLACE INTO meta_dead_deployments(key, generation, dead_call)
                 VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key, generation, call as i64])?;
        }
        let mut generations = Vec::with_capacity(live.len());
        for key in live {
            // In force again after being withdrawn: a new generation.
            let generation: u32 = tx
                .prepare_cached(
                    "INSERT INTO meta_sent_deployments(key) VALUES (?1)
                     ON CONFLICT(key) DO UPDATE SET
                        generation = generation + (dead_call IS NOT NULL), dead_call = NULL
                     RETURNING generation",
                )?
                .query_row([key], |r| r.get(0))?;
            generations.push(generation);
        }
        let dead: Vec<(String, u32)> = tx
            .prepare(
                "SELECT key, generation FROM meta_dead_deployments
                 WHERE dead_call > ?1 ORDER BY key, generation",
            )?
            .query_map([since.unwrap_or(0) as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        tx.execute(
            "INSERT OR REPLACE INTO meta_state(key, value) VALUES ('deployments_call', ?1)",
            [call.to_string()],
        )?;
        tx.commit()?;
        Ok(DeploymentsInForce {
            call,
            generations,
            dead,
        })
    }

    /// Which of these update ids are software or drivers with a document
    /// stored by a sync (the updates a replica's sync gives the upstream's
    /// approvals; a cabinet's documents keep local approvals), lowercase.
    pub fn synced_updates(&self, ids: &[String]) -> Result<Vec<String>, MetaError> {
        let db = self.db();
        let mut q = db.prepare_cached(
            "SELECT 1 FROM meta_revisions
             WHERE update_id = ?1 AND kind IN ('software', 'driver') AND origin = 'sync'",
        )?;
        let mut out = Vec::new();
        for id in ids {
            let id = id.to_ascii_lowercase();
            if q.exists([&id])? {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Documents stored, by origin (`sync`, `cabinet`).
    pub fn origins(&self) -> Result<Vec<(String, u64)>, MetaError> {
        let db = self.db();
        let mut q =
            db.prepare("SELECT origin, count(*) FROM meta_revisions GROUP BY origin ORDER BY 1")?;
        let rows = q.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A value of the sync's own state (anchors, selection, last result).
    pub fn state(&self, key: &str) -> Result<Option<String>, MetaError> {
        Ok(self
            .db()
            .query_row("SELECT value FROM meta_state WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_state(&self, key: &str, value: &str) -> Result<(), MetaError> {
        self.db().execute(
            "INSERT OR REPLACE INTO meta_state(key, value) VALUES (?1, ?2)",
            [key, value],
        )?;
        Ok(())
    }

    /// Sets several values in one transaction (anchors move together).
    pub fn set_states(&self, values: &[(&str, &str)]) -> Result<(), MetaError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        for (k, v) in values {
            tx.execute(
                "INSERT OR REPLACE INTO meta_state(key, value) VALUES (?1, ?2)",
                [k, v],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn remove_states(&self, keys: &[&str]) -> Result<(), MetaError> {
        let db = self.db();
        for k in keys {
            db.execute("DELETE FROM meta_state WHERE key = ?1", [k])?;
        }
        Ok(())
    }

    /// Which of these revisions are stored already from a sync (a
    /// cabinet's document of one is fetched again, to replace it).
    pub fn stored(&self, ids: &[(String, u32)]) -> Result<HashSet<(String, u32)>, MetaError> {
        let db = self.db();
        let mut q = db.prepare_cached(
            "SELECT 1 FROM meta_revisions WHERE update_id = ?1 AND revision = ?2 AND origin = 'sync'",
        )?;
        let mut out = HashSet::new();
        for (id, rev) in ids {
            if q.exists(params![id, rev])? {
                out.insert((id.clone(), *rev));
            }
        }
        Ok(out)
    }

    /// The stable local id of a revision.
    pub fn rid(&self, update_id: &str, revision: u32) -> Result<Option<i64>, MetaError> {
        Ok(self
            .db()
            .query_row(
                "SELECT rid FROM meta_revisions WHERE update_id = ?1 AND revision = ?2",
                params![update_id.to_ascii_lowercase(), revision],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Writes one batch (documents and file locations) in one transaction.
    pub fn write_batch(
        &self,
        docs: &[Incoming],
        urls: &[FileUrl],
    ) -> Result<BatchCounts, MetaError> {
        let packed: Vec<Packed> = docs.iter().map(Packed::from).collect();
        self.write_packed(&packed, urls)
    }

    /// [`MetaStore::write_batch`] of documents compressed already.
    pub fn write_packed(
        &self,
        docs: &[Packed],
        urls: &[FileUrl],
    ) -> Result<BatchCounts, MetaError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let mut counts = BatchCounts::default();
        for d in docs {
            write_revision(&tx, d, &mut counts)?;
        }
        for u in urls {
            tx.prepare_cached(
                "INSERT INTO meta_file_urls(sha1, mu_url, uss_url) VALUES (?1, ?2, ?3)
                 ON CONFLICT(sha1) DO UPDATE SET mu_url = excluded.mu_url, uss_url = excluded.uss_url",
            )?
            .execute(params![u.sha1, u.mu_url, u.uss_url])?;
        }
        tx.commit()?;
        Ok(counts)
    }

    /// The latest stored revision's whole document of an update.
    pub fn document(&self, update_id: &str) -> Result<Option<(u32, Vec<u8>)>, MetaError> {
        let id = update_id.to_ascii_lowercase();
        let row: Option<(u32, Vec<u8>)> = self
            .db()
            .query_row(
                "SELECT revision, doc FROM meta_revisions WHERE update_id = ?1
                 ORDER BY revision DESC LIMIT 1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(rev, z)| {
            Ok((
                rev,
                inflate(&z).map_err(|e| MetaError::Document(id.clone(), e))?,
            ))
        })
        .transpose()
    }

    /// Every category (latest revision of each), by type then title.
    pub fn categories(&self) -> Result<Vec<Category>, MetaError> {
        let db = self.db();
        let mut q = db.prepare(
            "SELECT update_id, title, coalesce(category_type, '') FROM meta_revisions r
             WHERE kind = 'category'
               AND revision = (SELECT max(revision) FROM meta_revisions WHERE update_id = r.update_id)
             ORDER BY 3, 2",
        )?;
        let rows = q.query_map([], |r| {
            Ok(Category {
                id: r.get(0)?,
                title: r.get(1)?,
                category_type: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Counts by kind (latest revisions), for status.
    pub fn counts(&self) -> Result<Vec<(String, u64)>, MetaError> {
        let db = self.db();
        let mut q =
            db.prepare("SELECT kind, count(*) FROM meta_revisions GROUP BY kind ORDER BY 1")?;
        let rows = q.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The updates whose new revisions have not reached the catalog yet:
    /// software and drivers (latest revision), not those only bundled by
    /// another update (their files travel with the bundle, as WSUS shows
    /// bundles and hides their leaves). Returns them and every unprojected
    /// `rid` (to mark once the catalog has them).
    pub fn unprojected(&self) -> Result<(Vec<Projected>, Vec<i64>), MetaError> {
        let db = self.db();
        let rids: Vec<i64> = db
            .prepare("SELECT rid FROM meta_revisions WHERE projected = 0")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut q = db.prepare(
            "SELECT rid, update_id, revision, title, description, kb, created FROM meta_revisions r
             WHERE projected = 0 AND kind IN ('software', 'driver')
               AND revision = (SELECT max(revision) FROM meta_revisions WHERE update_id = r.update_id)
               AND NOT EXISTS (SELECT 1 FROM meta_links l WHERE l.link = 'bundles'
                               AND l.target_id = r.update_id)
             ORDER BY rid",
        )?;
        let rows: Vec<Projected> = q
            .query_map([], |r| {
                Ok(Projected {
                    rid: r.get(0)?,
                    update_id: r.get(1)?,
                    revision: r.get(2)?,
                    title: r.get(3)?,
                    description: r.get(4)?,
                    kb: r.get(5)?,
                    created: r.get(6)?,
                    classification: None,
                    products: Vec::new(),
                    files: Vec::new(),
                    superseded: false,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for mut p in rows {
            fill_projection(&db, &mut p)?;
            out.push(p);
        }
        Ok((out, rids))
    }

    pub fn mark_projected(&self, rids: &[i64]) -> Result<(), MetaError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        for rid in rids {
            tx.prepare_cached("UPDATE meta_revisions SET projected = 1 WHERE rid = ?1")?
                .execute([rid])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Update ids that a stored update supersedes (for the catalog's mark).
    pub fn superseded_ids(&self) -> Result<Vec<String>, MetaError> {
        let db = self.db();
        let mut q = db.prepare(
            "SELECT DISTINCT target_id FROM meta_links WHERE link = 'supersedes' ORDER BY 1",
        )?;
        let rows = q.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Relationships of an update's latest revision: (link, group, target).
    pub fn links(&self, update_id: &str) -> Result<Vec<(String, u32, String)>, MetaError> {
        let db = self.db();
        let mut q = db.prepare(
            "SELECT link, grp, target_id FROM meta_links WHERE rid =
               (SELECT rid FROM meta_revisions WHERE update_id = ?1 ORDER BY revision DESC LIMIT 1)
             ORDER BY 1, 2, 3",
        )?;
        let rows = q.query_map([update_id.to_ascii_lowercase()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// One revision as a scanning client needs it: the latest revision of
/// each update, with its prerequisites and the updates it bundles.
#[derive(Debug, Clone)]
pub struct ScanRevision {
    pub rid: i64,
    pub update_id: String,
    pub revision: u32,
    pub kind: Kind,
    /// (group, target update id): group 0 is required, the same non-zero
    /// group is one `AtLeastOne`.
    pub prerequisites: Vec<(u32, String)>,
    pub bundles: Vec<String>,
    pub supersedes: Vec<String>,
    /// A driver's hardware ids, lowercase (empty for anything else).
    pub hardware_ids: Vec<String>,
}

/// A file of a revision, with where the upstream keeps it.
#[derive(Debug, Clone)]
pub struct RevisionFile {
    pub name: String,
    pub sha1: Sha1Digest,
    pub sha256: Option<Sha256Digest>,
    pub size: Option<u64>,
    pub mu_url: String,
    pub uss_url: String,
}

/// The columns [`revision_file`] reads, for `meta_files f` joined with
/// `meta_file_urls u`.
const FILE_COLUMNS: &str =
    "f.name, f.sha1, f.sha256, f.size, coalesce(u.mu_url, ''), coalesce(u.uss_url, '')";

/// A row of [`FILE_COLUMNS`].
fn revision_file(r: &rusqlite::Row<'_>) -> rusqlite::Result<RevisionFile> {
    Ok(RevisionFile {
        name: r.get(0)?,
        sha1: r.get(1)?,
        sha256: r.get(2)?,
        size: r.get::<_, Option<i64>>(3)?.map(|s| s as u64),
        mu_url: r.get(4)?,
        uss_url: r.get(5)?,
    })
}

impl MetaStore {
    /// The latest revision of every update with its links, by `rid`
    /// (what [MS-WUSP] `SyncUpdates` answers from).
    pub fn scan_index(&self) -> Result<Vec<ScanRevision>, MetaError> {
        let db = self.db();
        let mut q = db.prepare_cached(
            "SELECT rid, update_id, revision, kind FROM meta_revisions r
             WHERE revision = (SELECT max(revision) FROM meta_revisions WHERE update_id = r.update_id)
             ORDER BY rid",
        )?;
        let mut out: Vec<ScanRevision> = q
            .query_map([], |r| {
                Ok(ScanRevision {
                    rid: r.get(0)?,
                    update_id: r.get(1)?,
                    revision: r.get(2)?,
                    kind: Kind::parse(&r.get::<_, String>(3)?).unwrap_or(Kind::Software),
                    prerequisites: Vec::new(),
                    bundles: Vec::new(),
                    supersedes: Vec::new(),
                    hardware_ids: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut links = db.prepare_cached(
            "SELECT link, grp, target_id FROM meta_links WHERE rid = ?1 ORDER BY link, grp, target_id",
        )?;
        for rev in &mut out {
            for row in links.query_map([rev.rid], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })? {
                let (link, grp, target) = row?;
                match link.as_str() {
                    "prerequisite" => rev.prerequisites.push((grp, target)),
                    "bundles" => rev.bundles.push(target),
                    _ => rev.supersedes.push(target),
                }
            }
            if rev.kind == Kind::Driver {
                rev.hardware_ids = driver_hardware_ids(&db, rev.rid)?;
            }
        }
        Ok(out)
    }

    /// The largest `rid` stored (0 when empty): a scan index older than it
    /// is stale.
    pub fn last_rid(&self) -> Result<i64, MetaError> {
        Ok(self.db().query_row(
            "SELECT coalesce(max(rid), 0) FROM meta_revisions",
            [],
            |r| r.get(0),
        )?)
    }

    /// The whole document of one revision, by its stable local id.
    pub fn document_by_rid(&self, rid: i64) -> Result<Option<Vec<u8>>, MetaError> {
        let z: Option<Vec<u8>> = self
            .db()
            .query_row(
                "SELECT doc FROM meta_revisions WHERE rid = ?1",
                [rid],
                |r| r.get(0),
            )
            .optional()?;
        z.map(|z| inflate(&z).map_err(|e| MetaError::Document(rid.to_string(), e)))
            .transpose()
    }

    /// The files of one revision (its own, not its bundled updates').
    pub fn files_by_rid(&self, rid: i64) -> Result<Vec<RevisionFile>, MetaError> {
        let db = self.db();
        let mut q = db.prepare_cached(&format!(
            "SELECT {FILE_COLUMNS}
             FROM meta_files f LEFT JOIN meta_file_urls u ON u.sha1 = f.sha1
             WHERE f.rid = ?1 ORDER BY f.name"
        ))?;
        let rows = q.query_map([rid], revision_file)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A file by its SHA-1, with the upstream's URL (for `GetFileLocations`).
    pub fn file_by_sha1(&self, sha1: &Sha1Digest) -> Result<Option<RevisionFile>, MetaError> {
        Ok(self
            .db()
            .query_row(
                &format!(
                    "SELECT {FILE_COLUMNS}
                     FROM meta_files f LEFT JOIN meta_file_urls u ON u.sha1 = f.sha1
                     WHERE f.sha1 = ?1 LIMIT 1"
                ),
                [sha1],
                revision_file,
            )
            .optional()?)
    }
}

/// One stored revision with the links an upstream filters on (see
/// `wsus::upstream`): every revision, not only the latest.
#[derive(Debug, Clone)]
pub struct GraphRevision {
    pub rid: i64,
    pub update_id: String,
    pub revision: u32,
    pub kind: Kind,
    /// Prerequisite targets (categories and updates), any group.
    pub prerequisites: Vec<String>,
    pub bundles: Vec<String>,
}

impl MetaStore {
    /// Every stored revision with its prerequisites and bundled updates,
    /// by `rid` (two queries, whatever the count).
    pub fn revision_graph(&self) -> Result<Vec<GraphRevision>, MetaError> {
        let db = self.db();
        let mut q = db.prepare_cached(
            "SELECT rid, update_id, revision, kind FROM meta_revisions ORDER BY rid",
        )?;
        let mut out: Vec<GraphRevision> = q
            .query_map([], |r| {
                Ok(GraphRevision {
                    rid: r.get(0)?,
                    update_id: r.get(1)?,
                    revision: r.get(2)?,
                    kind: Kind::parse(&r.get::<_, String>(3)?).unwrap_or(Kind::Software),
                    prerequisites: Vec::new(),
                    bundles: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        let at: std::collections::HashMap<i64, usize> =
            out.iter().enumerate().map(|(i, r)| (r.rid, i)).collect();
        let mut links = db.prepare_cached(
            "SELECT rid, link, target_id FROM meta_links WHERE link IN ('prerequisite', 'bundles')",
        )?;
        let rows = links.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (rid, link, target) = row?;
            let Some(&i) = at.get(&rid) else { continue };
            match link.as_str() {
                "prerequisite" => out[i].prerequisites.push(target),
                _ => out[i].bundles.push(target),
            }
        }
        Ok(out)
    }

    /// The document of one revision with its `rid`, if stored.
    pub fn revision_document(
        &self,
        update_id: &str,
        revision: u32,
    ) -> Result<Option<(i64, Vec<u8>)>, MetaError> {
        let Some(rid) = self.rid(update_id, revision)? else {
            return Ok(None);
        };
        Ok(self.document_by_rid(rid)?.map(|d| (rid, d)))
    }

    /// The latest revision number of each update of these kinds.
    pub fn latest_revisions(&self, kinds: &[Kind]) -> Result<Vec<(String, u32)>, MetaError> {
        let db = self.db();
        let mut q = db.prepare_cached(
            "SELECT update_id, max(revision) FROM meta_revisions WHERE kind = ?1
             GROUP BY update_id ORDER BY update_id",
        )?;
        let mut out = Vec::new();
        for k in kinds {
            for row in q.query_map([k.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))? {
                out.push(row?);
            }
        }
        Ok(out)
    }
}

/// The hardware ids a stored driver document names. They are read from
/// the document (not kept in a table), so drivers synced before this was
/// read get them too; a document that no longer parses has none.
fn driver_hardware_ids(db: &Connection, rid: i64) -> Result<Vec<String>, MetaError> {
    let z: Vec<u8> = db
        .prepare_cached("SELECT doc FROM meta_revisions WHERE rid = ?1")?
        .query_row([rid], |r| r.get(0))?;
    let doc = inflate(&z).map_err(|e| MetaError::Document(rid.to_string(), e))?;
    Ok(super::update_xml::parse(&doc, "en")
        .map(|u| u.hardware_ids)
        .unwrap_or_default())
}

/// Inserts one revision unless a sync stored it already; a cabinet's
/// document of it is replaced (under a new `rid`: see [`replace_revision`]).
fn write_revision(
    tx: &rusqlite::Transaction<'_>,
    d: &Packed,
    counts: &mut BatchCounts,
) -> Result<(), MetaError> {
    let u = &d.info;
    let known_id: bool = tx
        .prepare_cached("SELECT 1 FROM meta_revisions WHERE update_id = ?1")?
        .exists([&u.id])?;
    let rid = match stored_origin(tx, &u.id, u.revision)? {
        Some((_, origin)) if origin == "sync" => None,
        Some((old, _)) => Some(replace_revision(tx, old, d, "sync")?),
        None => insert_revision(tx, d, "sync")?,
    };
    if rid.is_none() {
        counts.present += 1;
        return Ok(());
    }
    if known_id {
        counts.changed += 1;
    } else {
        counts.new += 1;
    }
    if u.publication_state.as_deref() == Some("Expired") {
        counts.expired += 1;
    }
    counts.bytes += d.len as u64;
    Ok(())
}

/// The stored revision's `rid` and origin, if any.
fn stored_origin(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    revision: u32,
) -> Result<Option<(i64, String)>, MetaError> {
    Ok(tx
        .prepare_cached(
            "SELECT rid, origin FROM meta_revisions WHERE update_id = ?1 AND revision = ?2",
        )?
        .query_row(params![id, revision], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Inserts a revision with its links and files; `None` when stored already.
fn insert_revision(
    tx: &rusqlite::Transaction<'_>,
    d: &Packed,
    origin: &str,
) -> Result<Option<i64>, MetaError> {
    let u = &d.info;
    let rid: Option<i64> = tx
        .prepare_cached(
            "INSERT INTO meta_revisions(update_id, revision, kind, category_type, title, description,
                                        kb, state, created, doc, doc_sha256, doc_len, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT(update_id, revision) DO NOTHING RETURNING rid",
        )?
        .query_row(
            params![
                u.id,
                u.revision,
                u.kind.as_str(),
                u.category_type,
                u.title,
                u.description,
                u.kb,
                u.publication_state,
                u.creation_date,
                &d.z,
                d.sha256.as_slice(),
                d.len as i64,
                origin,
            ],
            |r| r.get(0),
        )
        .optional()?;
    let Some(rid) = rid else { return Ok(None) };
    write_links(tx, rid, u)?;
    for f in &u.files {
        let Some(sha1) = f.sha1 else { continue };
        tx.prepare_cached(
            "INSERT OR IGNORE INTO meta_files(rid, sha1, sha256, name, size) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![rid, sha1, f.sha256, f.name, f.size.map(|s| s as i64)])?;
    }
    Ok(Some(rid))
}

/// Replaces the stored row `old` of the same revision. The new document
/// takes a new `rid`: a `rid` names one document for good (clients and
/// the fragment cache keep what they got by it), and the scan index sees
/// a larger `rid` and is rebuilt.
fn replace_revision(
    tx: &rusqlite::Transaction<'_>,
    old: i64,
    d: &Packed,
    origin: &str,
) -> Result<i64, MetaError> {
    tx.prepare_cached("DELETE FROM meta_revisions WHERE rid = ?1")?
        .execute([old])?;
    Ok(insert_revision(tx, d, origin)?.expect("the revision's row was just deleted"))
}

/// What [`MetaStore::deployments_in_force`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentsInForce {
    /// This call's number (the anchor a replica sends back next time).
    pub call: u64,
    /// The generation of each live key, in order.
    pub generations: Vec<u32>,
    /// (key, generation) of the deployments withdrawn since.
    pub dead: Vec<(String, u32)>,
}

/// What a cabinet's documents did to the store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CabinetCounts {
    /// Revisions not stored before.
    pub added: u64,
    /// Documents of an earlier cabinet, replaced by this one's.
    pub replaced: u64,
    /// The same document, stored already from a cabinet.
    pub unchanged: u64,
    /// Revisions a sync stored: its document is kept.
    pub kept_synced: u64,
}

/// Writes one cabinet's documents inside [`MetaStore::write_cabinet`].
pub struct CabinetWriter<'t> {
    tx: &'t rusqlite::Transaction<'t>,
    counts: CabinetCounts,
}

impl CabinetWriter<'_> {
    /// Stores one document assembled from a cabinet: a new revision is
    /// added, another cabinet's different document of it replaced, a
    /// synced one never touched.
    pub fn write(&mut self, d: &Packed) -> Result<(), MetaError> {
        let u = &d.info;
        match stored_origin(self.tx, &u.id, u.revision)? {
            Some((_, origin)) if origin == "sync" => self.counts.kept_synced += 1,
            Some((old, _)) => {
                let same: bool = self
                    .tx
                    .prepare_cached("SELECT doc_sha256 = ?2 FROM meta_revisions WHERE rid = ?1")?
                    .query_row(params![old, d.sha256.as_slice()], |r| r.get(0))?;
                if same {
                    self.counts.unchanged += 1;
                } else {
                    replace_revision(self.tx, old, d, "cabinet")?;
                    self.counts.replaced += 1;
                }
            }
            None => {
                insert_revision(self.tx, d, "cabinet")?;
                self.counts.added += 1;
            }
        }
        Ok(())
    }
}

/// A connection to the catalog's file as the store uses it.
fn connect(path: &Path) -> Result<Connection, MetaError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // The catalog's writer may hold the file for an import's length.
    conn.busy_timeout(Duration::from_secs(120))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn write_links(tx: &rusqlite::Transaction<'_>, rid: i64, u: &UpdateInfo) -> Result<(), MetaError> {
    let mut link = tx.prepare_cached(
        "INSERT OR IGNORE INTO meta_links(rid, link, grp, target_id, target_revision)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for p in &u.prerequisites {
        link.execute(params![rid, "prerequisite", p.group, p.id, None::<u32>])?;
    }
    for (id, rev) in &u.bundled {
        link.execute(params![rid, "bundles", 0, id, rev])?;
    }
    for id in &u.superseded {
        link.execute(params![rid, "supersedes", 0, id, None::<u32>])?;
    }
    Ok(())
}

/// Classification, products, files (its own and its bundled updates'),
/// supersedence of one update headed for the catalog.
fn fill_projection(db: &Connection, p: &mut Projected) -> Result<(), MetaError> {
    let mut cats = db.prepare_cached(
        "SELECT c.category_type, c.title FROM meta_links l
         JOIN meta_revisions c ON c.update_id = l.target_id AND c.kind = 'category'
         WHERE l.rid = ?1 AND l.link = 'prerequisite'
         ORDER BY c.revision",
    )?;
    for row in cats.query_map([p.rid], |r| Ok((r.get::<_, Option<String>>(0)?, r.get(1)?)))? {
        let (kind, title): (Option<String>, String) = row?;
        match kind.as_deref() {
            Some("UpdateClassification") => p.classification = Some(title),
            Some("Product") if !p.products.contains(&title) => p.products.push(title),
            _ => {}
        }
    }
    let mut files = db.prepare_cached(&format!(
        "SELECT {FILE_COLUMNS}
         FROM meta_files f LEFT JOIN meta_file_urls u ON u.sha1 = f.sha1
         WHERE f.rid = ?1
            OR f.rid IN (SELECT b.rid FROM meta_links l JOIN meta_revisions b
                           ON b.update_id = l.target_id
                          AND b.revision = (SELECT max(revision) FROM meta_revisions
                                             WHERE update_id = l.target_id)
                         WHERE l.rid = ?1 AND l.link = 'bundles')"
    ))?;
    let mut seen = HashSet::new();
    for row in files.query_map([p.rid], revision_file)? {
        let f = row?;
        if seen.insert(f.sha1) {
            p.files.push(f);
        }
    }
    p.superseded = db
        .prepare_cached("SELECT 1 FROM meta_links WHERE link = 'supersedes' AND target_id = ?1")?
        .exists([&p.update_id])?;
    Ok(())
}

/// zlib, as every SQLite tool can inflate it; level 1: on a full sync of
/// 840 MB of XML, level 6 cost 28 s more for 10% less disk (sync_bench).
pub fn deflate(doc: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(doc).expect("writing to memory");
    z.finish().expect("writing to memory")
}

pub fn inflate(z: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(z).read_to_end(&mut out)?;
    Ok(out)
}

impl Kind {
    /// Whether revisions of this kind go to the catalog as updates.
    pub fn is_update(self) -> bool {
        matches!(self, Kind::Software | Kind::Driver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::update_xml;

    fn doc(id: &str, rev: u32, extra: &str) -> Incoming {
        let xml = format!(
            r#"<upd:Update xmlns:upd="u"><upd:UpdateIdentity UpdateID="{id}" RevisionNumber="{rev}"/>
            <upd:Properties UpdateType="Software"/><upd:LocalizedPropertiesCollection><upd:LocalizedProperties>
            <upd:Language>en</upd:Language><upd:Title>T {id}</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection>
            {extra}</upd:Update>"#
        );
        Incoming {
            info: update_xml::parse(xml.as_bytes(), "en").unwrap(),
            doc: xml.into_bytes(),
        }
    }

    #[test]
    fn revision_ids_are_stable_and_writes_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(dir.path()).unwrap();
        let a = doc("a", 1, "");
        let c = store.write_batch(&[a, doc("b", 1, "")], &[]).unwrap();
        assert_eq!((c.new, c.changed, c.present), (2, 0, 0));
        let rid_a = store.rid("a", 1).unwrap().unwrap();
        drop(store);
        let store = MetaStore::open(dir.path()).unwrap();
        let c = store
            .write_batch(&[doc("a", 1, ""), doc("a", 2, "")], &[])
            .unwrap();
        assert_eq!((c.new, c.changed, c.present), (0, 1, 1));
        assert_eq!(store.rid("a", 1).unwrap(), Some(rid_a));
        assert!(store.rid("a", 2).unwrap().unwrap() > rid_a);
        let (rev, bytes) = store.document("A").unwrap().unwrap();
        assert_eq!(rev, 2);
        assert_eq!(bytes, doc("a", 2, "").doc);
    }

    #[test]
    fn a_sync_replaces_a_cabinets_document_and_a_cabinet_never_a_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(dir.path()).unwrap();
        let from_cabinet =
            |d: &Incoming| store.write_cabinet(|w| w.write(&Packed::from(d))).unwrap();
        let cab = doc("a", 1, "<!-- cabinet -->");
        let c = from_cabinet(&cab);
        assert_eq!(c.added, 1);
        assert_eq!(from_cabinet(&cab).unchanged, 1);
        // A newer cabinet's different document replaces it, under a new rid.
        let rid = store.rid("a", 1).unwrap().unwrap();
        assert_eq!(from_cabinet(&doc("a", 1, "<!-- newer -->")).replaced, 1);
        let rid2 = store.rid("a", 1).unwrap().unwrap();
        assert!(rid2 > rid);
        // A sync does not count it stored, and replaces it.
        let key = vec![("a".to_owned(), 1)];
        assert!(store.stored(&key).unwrap().is_empty());
        // Nor is it a synced update: a replica keeps local approvals of it.
        assert!(store.synced_updates(&["a".into()]).unwrap().is_empty());
        let synced = doc("a", 1, "");
        let c = store
            .write_batch(std::slice::from_ref(&synced), &[])
            .unwrap();
        assert_eq!((c.changed, c.present), (1, 0));
        assert_eq!(store.document("a").unwrap().unwrap().1, synced.doc);
        assert!(store.rid("a", 1).unwrap().unwrap() > rid2);
        assert_eq!(store.stored(&key).unwrap().len(), 1);
        assert_eq!(store.synced_updates(&["A".into()]).unwrap(), ["a"]);
        // From now on the cabinet leaves it alone.
        assert_eq!(from_cabinet(&cab).kept_synced, 1);
        assert_eq!(store.document("a").unwrap().unwrap().1, synced.doc);
        assert_eq!(store.origins().unwrap(), vec![("sync".to_owned(), 1)]);
        // An error inside the cabinet's transaction leaves nothing of it.
        let failed: Result<_, MetaError> = store.write_cabinet(|w| {
            w.write(&Packed::from(&doc("b", 1, "")))?;
            Err(MetaError::Document(
                "b".into(),
                std::io::Error::other("cut"),
            ))
        });
        assert!(failed.is_err());
        assert_eq!(store.rid("b", 1).unwrap(), None);
    }

    #[test]
    fn bundles_carry_their_leaves_files_and_leaves_stay_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(dir.path()).unwrap();
        let leaf = doc(
            "leaf",
            1,
            r#"<upd:Files><upd:File Digest="h/W9BGlYUAaqXTp30cZi/SiV3c0=" FileName="x.exe" Size="3"/></upd:Files>"#,
        );
        let bundle = doc(
            "bundle",
            1,
            r#"<upd:Relationships><upd:BundledUpdates><upd:UpdateIdentity UpdateID="leaf" RevisionNumber="1"/></upd:BundledUpdates>
               <upd:SupersededUpdates><upd:UpdateIdentity UpdateID="old"/></upd:SupersededUpdates></upd:Relationships>"#,
        );
        let sha1 = leaf.info.files[0].sha1.unwrap();
        let url = FileUrl {
            sha1,
            mu_url: "http://dl.example/x.exe".into(),
            uss_url: String::new(),
        };
        store
            .write_batch(&[bundle, leaf, doc("old", 1, "")], &[url])
            .unwrap();
        let (updates, rids) = store.unprojected().unwrap();
        assert_eq!(rids.len(), 3);
        let ids: Vec<_> = updates.iter().map(|u| u.update_id.as_str()).collect();
        assert_eq!(ids, ["bundle", "old"]);
        assert_eq!(updates[0].files.len(), 1);
        assert_eq!(updates[0].files[0].mu_url, "http://dl.example/x.exe");
        assert!(updates[1].superseded);
        store.mark_projected(&rids).unwrap();
        assert!(store.unprojected().unwrap().0.is_empty());
    }
}
