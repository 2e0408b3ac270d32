//! The catalog as an upcache JSON document, written one update at a time.

use std::io::Write;

use rusqlite::Connection;

use super::json::{FileDoc, UpdateDoc};
use super::query::{update_from_row, UPDATE_COLUMNS};
use super::CatalogError;
use crate::digest::{Sha1Digest, Sha256Digest};

/// Writes every update with its files and approval state to `out` (with
/// `since`, only those changed after that change number), then the change
/// number of this snapshot, the policy and the rules: all read in one
/// transaction, so a follower that asks `since` this `seq` next misses
/// nothing and gets nothing twice.
pub(super) fn write_catalog<W: Write>(
    db: &Connection,
    mut out: W,
    since: Option<u64>,
) -> Result<(), CatalogError> {
    let snapshot = db.unchecked_transaction()?;
    write_updates(&snapshot, &mut out, since)?;
    let extras = super::json::DocExtras {
        seq: Some(super::schema::change_seq(&snapshot)?),
        policy: Some(super::load_policy(&snapshot)?),
        rules: Some(super::rules::list(&snapshot)?),
    };
    let extras = serde_json::to_string(&extras).expect("extras serialise");
    // `{"seq":..,...}` continues the document after the updates array.
    let io = CatalogError::Export;
    out.write_all(b",").map_err(io)?;
    out.write_all(&extras.as_bytes()[1..]).map_err(io)?;
    out.write_all(b"\n").map_err(io)?;
    out.flush().map_err(io)?;
    snapshot.finish()?;
    Ok(())
}

fn write_updates<W: Write>(
    db: &Connection,
    mut out: W,
    since: Option<u64>,
) -> Result<(), CatalogError> {
    let io = CatalogError::Export;
    let mut files_stmt = db.prepare(
        "SELECT f.name, f.sha1, f.sha256, f.size, f.url FROM update_files uf
         JOIN files f ON f.fid = uf.fid WHERE uf.uid = ?1 ORDER BY f.name",
    )?;
    let mut stmt = db.prepare(&format!(
        "SELECT {UPDATE_COLUMNS}, uid, description FROM updates WHERE changed > ?1 ORDER BY id"
    ))?;
    let mut rows = stmt.query([since.map_or(-1, |s| s as i64)])?;
    out.write_all(b"{\"updates\":[").map_err(io)?;
    let mut first = true;
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
        };
        if !first {
            out.write_all(b",\n").map_err(io)?;
        }
        first = false;
        serde_json::to_writer(&mut out, &update).map_err(|e| io(e.into()))?;
    }
    out.write_all(b"]").map_err(io)
}
