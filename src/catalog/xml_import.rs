//! Writing a streamed `package.xml` into the catalog tables.
//!
//! One pass, one row at a time, with every key an integer: file locations
//! come after the updates that use them, so a payload file first gets a row
//! holding only its SHA-1 (its `fid`) and its `<FileLocation>` fills it in.

use std::collections::HashSet;
use std::io::BufRead;
use std::sync::RwLock;

use rusqlite::{params, CachedStatement, OptionalExtension, Transaction};

use super::import::{compare_revision, touch_files_of, ImportReport, ImportTracker, Revision};
use super::index::Index;
use super::package_xml::{self, Item, XmlUpdate};
use super::CatalogError;
use crate::digest::Sha1Digest;

/// Imports the document inside `tx` (the caller commits and refreshes the
/// files it lists in `x_touched`).
pub(super) fn run<R: BufRead>(
    tx: &Transaction<'_>,
    input: R,
    index: &RwLock<Index>,
    progress: &ImportTracker,
) -> Result<ImportReport, CatalogError> {
    tx.execute_batch("DELETE FROM x_rev; DELETE FROM x_bundle;")?;
    super::rules::begin(tx)?;
    let mut writer = Writer::new(tx, index)?;
    let (mut updates, mut files) = (0u64, 0u64);
    package_xml::parse(input, |item| {
        match item {
            Item::Update(u) => {
                updates += 1;
                writer.update(&u)?;
            }
            Item::FileLocation { sha1, url } => {
                files += 1;
                writer.location(&sha1, &url)?;
            }
        }
        if (updates + files) % 4096 == 0 {
            progress.read(updates, files);
        }
        Ok(())
    })?;
    progress.read(updates, files);
    let mut report = writer.report;
    if let Some(sha1) = tx
        .query_row("SELECT sha1 FROM files WHERE url = '' LIMIT 1", [], |r| {
            r.get::<_, Sha1Digest>(0)
        })
        .optional()?
    {
        return Err(CatalogError::Invalid {
            at: "FileLocations".into(),
            reason: format!("payload file {sha1} has no <FileLocation>"),
        });
    }
    progress.phase("linking bundles");
    link_bundles(tx)?;
    progress.phase("naming by KB");
    name_by_kb(tx)?;
    progress.phase("applying rules");
    report.changed_by_rules = super::rules::apply_to_new(tx)?;
    Ok(report)
}

/// The prepared statements of one import and what it counted.
struct Writer<'t> {
    tx: &'t Transaction<'t>,
    /// The committed catalog's files: an unchanged location is skipped.
    index: &'t RwLock<Index>,
    /// Files whose location this import changed (the index is stale for them).
    relocated: HashSet<Sha1Digest>,
    /// Files with a larger `fid` were created by this import.
    last_fid_before: i64,
    /// The largest `fid` so far.
    last_fid: i64,
    seen: HashSet<i64>,
    report: ImportReport,
    find_file: CachedStatement<'t>,
    new_file: CachedStatement<'t>,
    link: CachedStatement<'t>,
    touch: CachedStatement<'t>,
    locate: CachedStatement<'t>,
    rev: CachedStatement<'t>,
    bundle: CachedStatement<'t>,
}

impl<'t> Writer<'t> {
    fn new(tx: &'t Transaction<'t>, index: &'t RwLock<Index>) -> Result<Self, CatalogError> {
        let last_fid_before =
            tx.query_row("SELECT coalesce(max(fid), 0) FROM files", [], |r| r.get(0))?;
        Ok(Writer {
            tx,
            index,
            relocated: HashSet::new(),
            last_fid_before,
            last_fid: last_fid_before,
            seen: HashSet::new(),
            report: ImportReport::default(),
            find_file: tx.prepare_cached("SELECT fid FROM files WHERE sha1 = ?1")?,
            new_file: tx.prepare_cached(
                "INSERT INTO files(sha1, modified) VALUES (?1, strftime('%s','now'))",
            )?,
            link: tx
                .prepare_cached("INSERT OR IGNORE INTO update_files(uid, fid) VALUES (?1, ?2)")?,
            touch: tx.prepare_cached("INSERT OR IGNORE INTO x_touched(fid) VALUES (?1)")?,
            // A row back: inserted, or its location changed; none: unchanged.
            locate: tx.prepare_cached(
                "INSERT INTO files(sha1, name, url, modified)
                 VALUES (?1, ?2, ?3, strftime('%s','now'))
                 ON CONFLICT(sha1) DO UPDATE SET name = excluded.name, url = excluded.url
                    WHERE files.name != excluded.name OR files.url != excluded.url
                 RETURNING fid",
            )?,
            rev: tx
                .prepare_cached("INSERT OR REPLACE INTO x_rev(revision_id, uid) VALUES (?1, ?2)")?,
            bundle: tx
                .prepare_cached("INSERT INTO x_bundle(child_rev, bundle_rev) VALUES (?1, ?2)")?,
        })
    }

    /// Inserts or revises one update and its payload links.
    fn update(&mut self, u: &XmlUpdate) -> Result<(), CatalogError> {
        let uid =
            match compare_revision(self.tx, &u.update_id, u.revision_number, &mut self.report)? {
                Revision::Stale(uid) | Revision::Same(uid) => uid,
                Revision::Newer(uid) => {
                    touch_files_of(self.tx, uid)?;
                    self.tx
                        .prepare_cached("DELETE FROM update_files WHERE uid = ?1")?
                        .execute([uid])?;
                    self.write_row(Some(uid), u)?
                }
                Revision::New => self.write_row(None, u)?,
            };
        if !self.seen.insert(uid) {
            return Err(CatalogError::Invalid {
                at: format!("Update {}", u.update_id),
                reason: "the same UpdateId appears twice".into(),
            });
        }
        self.rev.execute(params![u.revision_id as i64, uid])?;
        for b in &u.bundled_by {
            self.bundle
                .execute(params![u.revision_id as i64, *b as i64])?;
        }
        Ok(())
    }

    /// Writes the update's row (new when `uid` is `None`) and its payload links.
    fn write_row(&mut self, uid: Option<i64>, u: &XmlUpdate) -> Result<i64, CatalogError> {
        let products = serde_json::to_string(&u.products).expect("strings serialise");
        let release_date = u.creation_date.as_deref().and_then(|d| d.get(..10));
        let superseded = !u.superseded_by.is_empty();
        let values = params![
            uid,
            u.update_id,
            u.revision_number,
            u.classification,
            products,
            release_date,
            u.revision_id as i64,
            u.is_bundle,
            superseded,
        ];
        let uid = match uid {
            Some(uid) => {
                self.tx
                    .prepare_cached(
                        "UPDATE updates SET revision = ?3, classification = ?4, products = ?5,
                            release_date = ?6, revision_id = ?7, is_bundle = ?8, superseded = ?9
                         WHERE uid = ?1 AND id = ?2",
                    )?
                    .execute(values)?;
                uid
            }
            None => {
                self.tx
                    .prepare_cached(
                        "INSERT INTO updates(uid, id, revision, title, classification, products,
                                             release_date, revision_id, is_bundle, superseded,
                                             changed, added)
                         VALUES (?1, ?2, ?3, ?2, ?4, ?5, ?6, ?7, ?8, ?9,
                                 (SELECT seq FROM change_seq), unixepoch())",
                    )?
                    .execute(values)?;
                self.tx.last_insert_rowid()
            }
        };
        super::rules::mark_new(self.tx, uid)?;
        for sha1 in &u.payload {
            let fid = self.file_id(sha1)?;
            self.link.execute([uid, fid])?;
            self.touch.execute([fid])?;
        }
        Ok(uid)
    }

    /// The file's row id, creating a row awaiting its location if needed.
    fn file_id(&mut self, sha1: &Sha1Digest) -> Result<i64, CatalogError> {
        if let Some(fid) = self.find_file.query_row([sha1], |r| r.get(0)).optional()? {
            return Ok(fid);
        }
        self.new_file.execute([sha1])?;
        self.report.files_added += 1;
        self.last_fid = self.tx.last_insert_rowid();
        Ok(self.last_fid)
    }

    /// Fills in (or changes) a file's location.
    fn location(&mut self, sha1: &Sha1Digest, url: &str) -> Result<(), CatalogError> {
        if self.unchanged(sha1, url) {
            return Ok(());
        }
        let name = check_url(url)?;
        let changed: Option<i64> = self
            .locate
            .query_row(params![sha1, name, url], |r| r.get(0))
            .optional()?;
        if changed.is_some() {
            self.relocated.insert(*sha1);
        }
        match changed {
            Some(fid) if fid <= self.last_fid_before => {
                self.report.files_changed += 1;
                self.touch.execute([fid])?;
            }
            Some(fid) if fid > self.last_fid => {
                // A location no update uses (yet): kept for later imports.
                self.report.files_added += 1;
                self.last_fid = fid;
            }
            Some(_) => {} // the location of a file this import created
            None => {}    // unchanged
        }
        Ok(())
    }
}

impl Writer<'_> {
    /// Whether the committed catalog has this location already: most of a
    /// re-import, answered by the in-memory index instead of a row read.
    /// Only plain URLs, whose last segment is the name `check_url` derives.
    fn unchanged(&self, sha1: &Sha1Digest, url: &str) -> bool {
        if url.contains(['?', '#', '%', '\\']) || self.relocated.contains(sha1) {
            return false;
        }
        let name = url.rsplit('/').next().unwrap_or("");
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .has_location(sha1, url, name)
    }
}

/// Bundle → child pairs where either side was written by this import.
const BUNDLED: &str = "FROM x_bundle xb
    JOIN x_rev c ON c.revision_id = xb.child_rev
    JOIN x_rev b ON b.revision_id = xb.bundle_rev
    JOIN update_files uf ON uf.uid = c.uid
    WHERE b.uid IN (SELECT uid FROM x_new) OR c.uid IN (SELECT uid FROM x_new)";

/// Bundles get their children's files: approving a bundle makes them servable.
fn link_bundles(tx: &Transaction<'_>) -> Result<(), CatalogError> {
    tx.execute(
        &format!("INSERT OR IGNORE INTO update_files(uid, fid) SELECT b.uid, uf.fid {BUNDLED} ORDER BY 1, 2"),
        [],
    )?;
    tx.execute(
        &format!("INSERT OR IGNORE INTO x_touched(fid) SELECT uf.fid {BUNDLED}"),
        [],
    )?;
    Ok(())
}

/// The file name of a location URL, which must be absolute http(s).
fn check_url(url: &str) -> Result<String, CatalogError> {
    let invalid = |reason: String| CatalogError::Invalid {
        at: "FileLocation@Url".into(),
        reason,
    };
    let parsed = super::json::http_url(url).map_err(invalid)?;
    let name = parsed
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or("");
    if name.is_empty() {
        return Err(invalid(format!("{url:?} names no file")));
    }
    Ok(name.to_owned())
}

/// Titles are not in package.xml: updates this import wrote that are still
/// titled by their id get "KB<number>" from their files' URLs (bundles from
/// their children's), in one statement (`kb_from_url` is registered on the
/// connection).
fn name_by_kb(tx: &Transaction<'_>) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE updates SET kb = k.kb, title = CASE WHEN title = id THEN 'KB' || k.kb ELSE title END
         FROM (SELECT uf.uid, max(kb_from_url(f.url)) AS kb
               FROM x_new n JOIN update_files uf ON uf.uid = n.uid JOIN files f ON f.fid = uf.fid
               GROUP BY uf.uid) k
         WHERE updates.uid = k.uid AND updates.kb IS NULL AND k.kb IS NOT NULL",
        [],
    )?;
    Ok(())
}
