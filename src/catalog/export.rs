//! The catalog as an upcache JSON document, written one update at a time.

use std::io::Write;

use rusqlite::Connection;

use super::json::{FileDoc, UpdateDoc};
use super::{CatalogError, UpdateState};
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
    let mut stmt = db.prepare(
        "SELECT uid, id, revision, title, description, kb, msrc, classification, products,
                release_date, state, superseded FROM updates WHERE changed > ?1 ORDER BY id",
    )?;
    let mut rows = stmt.query([since.map_or(-1, |s| s as i64)])?;
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
            superseded: r.get(11)?,
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
