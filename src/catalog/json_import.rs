//! Writing a validated JSON catalog update into the catalog tables.

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, OptionalExtension};

use super::import::{compare_revision, touch_files_of, ImportReport, Revision};
use super::json::{ValidFile, ValidUpdate};
use super::{rules, CatalogError, UpdateState};
use crate::digest::{Sha1Digest, Sha256Digest};

/// How much of a document an import takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Metadata only: a catalog file cannot approve anything.
    Metadata,
    /// And the approval states (`upcache sync` from another upcache).
    States,
    /// All of it, the primary's word: states, supersedence, and digests and
    /// sizes the primary learned, even for a revision already here (a follower).
    Primary,
}

/// Writes one validated update: new, newer revision (replaces metadata and
/// file links, keeps the approval), same revision (untouched but for an
/// imported state; rewritten whole from a primary) or older (ignored).
pub(super) fn import_update(
    tx: &rusqlite::Transaction<'_>,
    u: &ValidUpdate,
    trust: Trust,
    stored: &dyn Fn(&Sha1Digest) -> bool,
    report: &mut ImportReport,
) -> Result<(), CatalogError> {
    let known = match row_to_write(tx, u, trust, report)? {
        Row::Leave => return Ok(()),
        Row::Write(known) => known,
    };
    let uid = write_update(tx, u, trust, known)?;
    if imported_state(u, trust).is_some() {
        import_approvals(tx, uid, u)?;
    }
    if trust != Trust::Primary {
        rules::mark_new(tx, uid)?;
    }
    let modified = u.released.unwrap_or_else(now_secs);
    for f in &u.files {
        let fid = write_file(tx, &u.doc.id, f, modified, stored, report)?;
        tx.prepare_cached("INSERT OR IGNORE INTO update_files(uid, fid) VALUES (?1, ?2)")?
            .execute([uid, fid])?;
        tx.prepare_cached("INSERT OR IGNORE INTO x_touched(fid) VALUES (?1)")?
            .execute([fid])?;
    }
    Ok(())
}

/// What an import does with an update's row.
enum Row {
    /// Nothing more (an older revision, or the same one: its state at most).
    Leave,
    /// Writes it: over this `uid` (its file links already dropped), or new.
    Write(Option<i64>),
}

/// Compares the document's revision with the one held and does what a
/// same revision needs (an imported state); a row to be rewritten loses
/// its file links here.
fn row_to_write(
    tx: &rusqlite::Transaction<'_>,
    u: &ValidUpdate,
    trust: Trust,
    report: &mut ImportReport,
) -> Result<Row, CatalogError> {
    let d = &u.doc;
    let rewrite = |uid: i64| -> Result<Row, CatalogError> {
        touch_files_of(tx, uid)?;
        tx.execute("DELETE FROM update_files WHERE uid = ?1", [uid])?;
        Ok(Row::Write(Some(uid)))
    };
    match compare_revision(tx, &d.id, d.revision, report)? {
        Revision::Stale(_) => Ok(Row::Leave),
        Revision::Same(uid) if trust == Trust::Primary => rewrite(uid),
        Revision::Same(uid) => {
            if let Some(state) = imported_state(u, trust) {
                let changed = tx.execute(
                    "UPDATE updates SET state = ?2 WHERE uid = ?1 AND state != ?2",
                    params![uid, state],
                )?;
                if changed > 0 {
                    touch_files_of(tx, uid)?;
                }
                import_approvals(tx, uid, u)?;
            }
            Ok(Row::Leave)
        }
        Revision::Newer(uid) => rewrite(uid),
        Revision::New => Ok(Row::Write(None)),
    }
}

/// The group approvals the document lists for an approved update, in place
/// of the update's (groups missing here are made, by name); none listed
/// leaves the `All Computers` approval the state brought. An approval the
/// update already has, with the same deadline, keeps its date (a follower
/// takes an update again whenever its primary writes it).
fn import_approvals(
    tx: &rusqlite::Transaction<'_>,
    uid: i64,
    u: &ValidUpdate,
) -> Result<(), CatalogError> {
    if u.doc.state != Some(UpdateState::Approved) || u.doc.approvals.is_empty() {
        return Ok(());
    }
    let mut listed = Vec::with_capacity(u.doc.approvals.len());
    for a in &u.doc.approvals {
        let name = super::groups::check_name(&a.group)?;
        tx.prepare_cached("INSERT OR IGNORE INTO computer_groups(name) VALUES (?1)")?
            .execute([name])?;
        let gid: i64 = tx
            .prepare_cached("SELECT gid FROM computer_groups WHERE name = ?1")?
            .query_row([name], |r| r.get(0))?;
        super::approvals::upsert(tx, uid, gid, a.deadline)?;
        listed.push(gid);
    }
    let held: Vec<i64> = tx
        .prepare_cached("SELECT gid FROM update_approvals WHERE uid = ?1")?
        .query_map([uid], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for gid in held.into_iter().filter(|g| !listed.contains(g)) {
        tx.prepare_cached("DELETE FROM update_approvals WHERE uid = ?1 AND gid = ?2")?
            .execute(params![uid, gid])?;
    }
    touch_files_of(tx, uid)
}

/// The approval state the document sets, when the import takes states.
fn imported_state(u: &ValidUpdate, trust: Trust) -> Option<&'static str> {
    u.doc
        .state
        .filter(|_| trust != Trust::Metadata)
        .map(UpdateState::as_str)
}

/// Inserts or rewrites the update's row (keeping its approval unless the
/// document sets one); returns its `uid`.
fn write_update(
    tx: &rusqlite::Transaction<'_>,
    u: &ValidUpdate,
    trust: Trust,
    known: Option<i64>,
) -> Result<i64, CatalogError> {
    let d = &u.doc;
    let superseded = (trust == Trust::Primary).then_some(d.superseded);
    let products = serde_json::to_string(&d.products).expect("strings serialise");
    let uid = tx.query_row(
        "INSERT INTO updates(uid, id, revision, title, description, kb, msrc, classification,
                             products, release_date, state, superseded, changed, added)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, coalesce(?11, 'not-approved'),
                 coalesce(?12, 0), (SELECT seq FROM change_seq), unixepoch())
         ON CONFLICT(uid) DO UPDATE SET revision = excluded.revision, title = excluded.title,
            description = excluded.description, kb = excluded.kb, msrc = excluded.msrc,
            classification = excluded.classification, products = excluded.products,
            release_date = excluded.release_date, state = coalesce(?11, updates.state),
            superseded = coalesce(?12, updates.superseded)
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
            imported_state(u, trust),
            superseded,
        ],
        |r| r.get(0),
    )?;
    Ok(uid)
}

/// Inserts a file new to the catalog, or updates a known one (newer
/// metadata wins; a learned size is kept; see [`settle_sha256`]); returns
/// its `fid`.
fn write_file(
    tx: &rusqlite::Transaction<'_>,
    update_id: &str,
    f: &ValidFile,
    modified: i64,
    stored: &dyn Fn(&Sha1Digest) -> bool,
    report: &mut ImportReport,
) -> Result<i64, CatalogError> {
    if let Some(sha256) = f.sha256 {
        refuse_shared_sha256(tx, update_id, f.sha1, sha256)?;
    }
    let known: Option<(i64, Option<Sha256Digest>)> = tx
        .prepare_cached("SELECT fid, sha256 FROM files WHERE sha1 = ?1")?
        .query_row([f.sha1], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let size = f.size.map(|s| s as i64);
    let Some((fid, had)) = known else {
        tx.prepare_cached(
            "INSERT INTO files(sha1, sha256, size, name, url, modified)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![f.sha1, f.sha256, size, f.name, f.url, modified])?;
        report.files_added += 1;
        return Ok(tx.last_insert_rowid());
    };
    let sha256 = settle_sha256(f.sha1, had, f.sha256, stored(&f.sha1), report);
    tx.prepare_cached(
        "UPDATE files SET name = ?2, url = ?3, sha256 = ?4,
                          size = coalesce(size, ?5) WHERE fid = ?1",
    )?
    .execute(params![fid, f.name, f.url, sha256, size])?;
    Ok(fid)
}

/// The SHA-256 a known file keeps when a newer revision names one. A
/// different claim replaces the one held (a corrected catalog: a wrong
/// claim would otherwise fail every download of the file for good), unless
/// the file is stored now: its bytes, verified when they came, prove the
/// one held, and the claim is counted as a conflict and logged.
fn settle_sha256(
    sha1: Sha1Digest,
    had: Option<Sha256Digest>,
    claimed: Option<Sha256Digest>,
    stored: bool,
    report: &mut ImportReport,
) -> Option<Sha256Digest> {
    match (had, claimed) {
        (Some(had), Some(claimed)) if had != claimed => {
            if stored {
                tracing::warn!(%sha1, stored_sha256 = %had, %claimed, "the catalog claims another SHA-256 for a stored file; the stored bytes' is kept");
                report.sha256_conflicts += 1;
                Some(had)
            } else {
                tracing::info!(%sha1, was = %had, now = %claimed, "a newer revision corrects a file's SHA-256");
                report.files_changed += 1;
                Some(claimed)
            }
        }
        (had, claimed) => had.or(claimed),
    }
}

/// Two files with different SHA-1s cannot have the same SHA-256: a catalog
/// that says so is wrong, and taking it would serve one file's bytes under
/// the other's name (the store is addressed by SHA-256). The whole import
/// is refused and rolled back.
fn refuse_shared_sha256(
    tx: &rusqlite::Transaction<'_>,
    update: &str,
    sha1: Sha1Digest,
    sha256: Sha256Digest,
) -> Result<(), CatalogError> {
    let holder: Option<Sha1Digest> = tx
        .prepare_cached("SELECT sha1 FROM files WHERE sha256 = ?1 AND sha1 != ?2 LIMIT 1")?
        .query_row(params![sha256, sha1], |r| r.get(0))
        .optional()?;
    match holder {
        None => Ok(()),
        Some(other) => Err(CatalogError::Invalid {
            at: format!("update {update}, file {}", sha1.to_hex()),
            reason: format!(
                "sha256 {} is already file {}'s; two different files cannot share a SHA-256",
                sha256.to_hex(),
                other.to_hex()
            ),
        }),
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
