//! Writing a streamed `package.xml` into the catalog tables.

use std::collections::HashSet;
use std::io::BufRead;

use rusqlite::{params, OptionalExtension, Transaction};

use super::package_xml::{self, Item, XmlUpdate};
use super::{compare_revision, CatalogError, ImportReport, Revision};

/// Imports the document inside `tx` (the caller commits).
pub fn run<R: BufRead>(tx: &Transaction<'_>, input: R) -> Result<ImportReport, CatalogError> {
    // File locations come after the updates that use them: check the links
    // at commit, and name a missing location ourselves before that.
    tx.execute_batch(
        "PRAGMA defer_foreign_keys = ON;
         CREATE TEMP TABLE IF NOT EXISTS x_rev (revision_id INTEGER PRIMARY KEY, update_id TEXT NOT NULL);
         CREATE TEMP TABLE IF NOT EXISTS x_bundle (child_rev INTEGER NOT NULL, bundle_rev INTEGER NOT NULL);
         DELETE FROM x_rev; DELETE FROM x_bundle;",
    )?;
    let mut report = ImportReport::default();
    super::rules::begin(tx)?;
    {
        let mut rev =
            tx.prepare("INSERT OR REPLACE INTO x_rev(revision_id, update_id) VALUES (?1, ?2)")?;
        let mut bundle =
            tx.prepare("INSERT INTO x_bundle(child_rev, bundle_rev) VALUES (?1, ?2)")?;
        let mut new_file = tx.prepare(
            "INSERT OR IGNORE INTO files(sha1, name, url, modified)
             VALUES (?1, ?2, ?3, strftime('%s','now'))",
        )?;
        let mut known_file = tx.prepare(
            "UPDATE files SET name = ?2, url = ?3 WHERE sha1 = ?1 AND (name != ?2 OR url != ?3)",
        )?;
        let mut seen = HashSet::new();
        package_xml::parse(input, |item| {
            match item {
                Item::Update(u) => {
                    if !seen.insert(u.update_id.clone()) {
                        return Err(CatalogError::Invalid {
                            at: format!("Update {}", u.update_id),
                            reason: "the same UpdateId appears twice".into(),
                        });
                    }
                    rev.execute(params![u.revision_id as i64, u.update_id])?;
                    for b in &u.bundled_by {
                        bundle.execute(params![u.revision_id as i64, *b as i64])?;
                    }
                    write_update(tx, &u, &mut report)?;
                }
                Item::FileLocation { sha1, url } => {
                    let name = check_url(&url)?;
                    let hex = sha1.to_hex();
                    if new_file.execute(params![hex, name, url])? == 1 {
                        report.files_added += 1;
                    } else {
                        report.files_changed += known_file.execute(params![hex, name, url])? as u64;
                    }
                }
            }
            Ok(())
        })?;
    }
    let missing: Option<String> = tx
        .query_row(
            "SELECT uf.sha1 FROM update_files uf LEFT JOIN files f ON f.sha1 = uf.sha1
             WHERE f.sha1 IS NULL LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(sha1) = missing {
        return Err(CatalogError::Invalid {
            at: "FileLocations".into(),
            reason: format!("payload file {sha1} has no <FileLocation>"),
        });
    }
    tx.execute(
        "INSERT OR IGNORE INTO update_files(update_id, sha1)
         SELECT b.update_id, uf.sha1 FROM x_bundle xb
         JOIN x_rev c ON c.revision_id = xb.child_rev
         JOIN x_rev b ON b.revision_id = xb.bundle_rev
         JOIN update_files uf ON uf.update_id = c.update_id",
        [],
    )?;
    name_by_kb(tx)?;
    report.changed_by_rules = super::rules::apply_to_new(tx)?;
    Ok(report)
}

/// Inserts or replaces one update and its payload links, by revision.
fn write_update(
    tx: &Transaction<'_>,
    u: &XmlUpdate,
    report: &mut ImportReport,
) -> Result<(), CatalogError> {
    match compare_revision(tx, &u.update_id, u.revision_number, report)? {
        Revision::Stale | Revision::Same => return Ok(()),
        Revision::Newer => {
            tx.prepare_cached("DELETE FROM update_files WHERE update_id = ?1")?
                .execute([&u.update_id])?;
        }
        Revision::New => {}
    }
    super::rules::mark_new(tx, &u.update_id)?;
    let products = serde_json::to_string(&u.products).expect("strings serialise");
    let release_date = u.creation_date.as_deref().and_then(|d| d.get(..10));
    tx.prepare_cached(
        "INSERT INTO updates(id, revision, title, classification, products, release_date,
                             revision_id, is_bundle, superseded)
         VALUES (?1, ?2, ?1, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(id) DO UPDATE SET revision = excluded.revision,
            classification = excluded.classification, products = excluded.products,
            release_date = excluded.release_date, revision_id = excluded.revision_id,
            is_bundle = excluded.is_bundle, superseded = excluded.superseded",
    )?
    .execute(params![
        u.update_id,
        u.revision_number,
        u.classification,
        products,
        release_date,
        u.revision_id as i64,
        u.is_bundle,
        !u.superseded_by.is_empty(),
    ])?;
    tx.execute(
        "DELETE FROM update_files WHERE update_id = ?1",
        [&u.update_id],
    )?;
    let mut link =
        tx.prepare_cached("INSERT OR IGNORE INTO update_files(update_id, sha1) VALUES (?1, ?2)")?;
    for sha1 in &u.payload {
        link.execute(params![u.update_id, sha1.to_hex()])?;
    }
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

/// Titles are not in package.xml: updates still titled by their id get
/// "KB<number>" from their files' URLs (bundles from their children's).
fn name_by_kb(tx: &Transaction<'_>) -> Result<(), CatalogError> {
    let pairs: Vec<(String, String)> = {
        let mut stmt = tx.prepare(
            "SELECT u.id, f.url FROM updates u
             JOIN update_files uf ON uf.update_id = u.id JOIN files f ON f.sha1 = uf.sha1
             WHERE u.kb IS NULL",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut set = tx.prepare(
        "UPDATE updates SET kb = ?2, title = CASE WHEN title = id THEN 'KB' || ?2 ELSE title END
         WHERE id = ?1 AND kb IS NULL",
    )?;
    for (id, url) in pairs {
        if let Some(kb) = package_xml::kb_from_url(&url) {
            set.execute(params![id, kb])?;
        }
    }
    Ok(())
}
