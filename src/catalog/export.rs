//! The catalog as an upcache JSON document, written one page of updates at
//! a time.

use std::io::Write;

use rusqlite::Connection;

use super::json::{ApprovalDoc, FileDoc, UpdateDoc};
use super::query::{update_from_row, UPDATE_COLUMNS};
use super::CatalogError;
use crate::digest::{Sha1Digest, Sha256Digest};

/// Updates read per page. Each page is read in its own short transaction
/// and serialised into memory before a byte of it is written, so a client
/// that stops reading never holds a read snapshot open: a snapshot held
/// while writers run keeps the WAL from being checkpointed, and it grows
/// without bound (185 MB in 40 s under approvals, with 20 stalled exports).
const PAGE: usize = 256;

/// Writes every update with its files and approval state to `out` (with
/// `since`, only those changed after that change number), then the change
/// number, the policy and the rules read before the first update.
///
/// Pages are separate snapshots, so an update changed during the export may
/// come in its newer state; its change number is then above the `seq`
/// written, so a follower that asks `since` this `seq` next gets it again.
/// It misses nothing: every change after `seq` is stamped above it.
pub(super) fn write_catalog<W: Write>(
    db: &Connection,
    mut out: W,
    since: Option<u64>,
) -> Result<(), CatalogError> {
    let extras = {
        let snapshot = db.unchecked_transaction()?;
        let extras = super::json::DocExtras {
            seq: Some(super::schema::change_seq(&snapshot)?),
            policy: Some(super::load_policy(&snapshot)?),
            rules: Some(super::rules::list(&snapshot)?),
        };
        snapshot.finish()?;
        serde_json::to_string(&extras).expect("extras serialise")
    };
    let io = CatalogError::Export;
    out.write_all(b"{\"updates\":[").map_err(io)?;
    let mut after: Option<String> = None;
    let mut page = Vec::with_capacity(64 << 10);
    loop {
        page.clear();
        let first = after.is_none();
        let Some(last) = read_page(db, &mut page, since, after.as_deref(), first)? else {
            break;
        };
        // No transaction is open here: the client may take its time.
        out.write_all(&page).map_err(io)?;
        after = Some(last);
    }
    // `{"seq":..,...}` continues the document after the updates array.
    out.write_all(b"],").map_err(io)?;
    out.write_all(&extras.as_bytes()[1..]).map_err(io)?;
    out.write_all(b"\n").map_err(io)?;
    out.flush().map_err(io)?;
    Ok(())
}

/// Serialises the next page of updates (ids after `after`) into `page`, in
/// one read transaction; the id of its last update, or `None` at the end.
fn read_page(
    db: &Connection,
    page: &mut Vec<u8>,
    since: Option<u64>,
    after: Option<&str>,
    mut first: bool,
) -> Result<Option<String>, CatalogError> {
    let snapshot = db.unchecked_transaction()?;
    let mut files_stmt = snapshot.prepare_cached(
        "SELECT f.name, f.sha1, f.sha256, f.size, f.url FROM update_files uf
         JOIN files f ON f.fid = uf.fid WHERE uf.uid = ?1 ORDER BY f.name",
    )?;
    let mut stmt = snapshot.prepare_cached(&format!(
        "SELECT {UPDATE_COLUMNS}, uid, description FROM updates
         WHERE changed > ?1 AND id > ?2 ORDER BY id LIMIT ?3"
    ))?;
    let mut rows = stmt.query(rusqlite::params![
        since.map_or(-1, |s| s as i64),
        after.unwrap_or(""),
        PAGE as i64
    ])?;
    let mut last = None;
    while let Some(r) = rows.next()? {
        let uid: i64 = r.get(10)?;
        let files: Vec<FileDoc> = files_stmt
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
        let update = update_from_row(r, files.len() as u64)?;
        let update = UpdateDoc {
            id: update.id,
            revision: update.revision,
            title: update.title,
            description: r.get(11)?,
            kb: update.kb,
            msrc: update.msrc,
            classification: update.classification,
            products: update.products,
            release_date: update.release_date,
            state: Some(update.state),
            superseded: update.superseded,
            files,
            approvals: exported_approvals(&snapshot, uid)?,
        };
        if !first {
            page.extend_from_slice(b",\n");
        }
        first = false;
        serde_json::to_writer(&mut *page, &update).expect("updates serialise");
        last = Some(update.id.clone());
    }
    drop(rows);
    drop(stmt);
    drop(files_stmt);
    snapshot.finish()?;
    Ok(last)
}

/// An approved update's group approvals, by group name; none when it is
/// approved for `All Computers` alone with no deadline (what an importer
/// assumes of an approval that lists none, as releases before groups did).
fn exported_approvals(db: &Connection, uid: i64) -> Result<Vec<ApprovalDoc>, CatalogError> {
    let approvals = super::approvals::of_update(db, uid)?;
    let plain = approvals.len() == 1
        && approvals[0].group_id == super::groups::ALL_COMPUTERS
        && approvals[0].deadline.is_none();
    if plain {
        return Ok(Vec::new());
    }
    Ok(approvals
        .into_iter()
        .map(|a| ApprovalDoc {
            group: a.group,
            deadline: a.deadline,
        })
        .collect())
}
