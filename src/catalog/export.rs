//! The catalog as an upcache JSON document, written one page of updates at
//! a time; for a follower that asks (`members_since`), with the primary's
//! groups before the updates and the computers' memberships after them,
//! paged the same way.

use std::io::Write;

use rusqlite::Connection;

use super::json::{ApprovalDoc, FileDoc, GroupDoc, MemberDoc, UpdateDoc};
use super::query::{update_from_row, UPDATE_COLUMNS};
use super::CatalogError;
use crate::digest::{Sha1Digest, Sha256Digest};

/// Updates read per page. Each page is read in its own short transaction
/// and serialised into memory before a byte of it is written, so a client
/// that stops reading never holds a read snapshot open: a snapshot held
/// while writers run keeps the WAL from being checkpointed, and it grows
/// without bound (185 MB in 40 s under approvals, with 20 stalled exports).
const PAGE: usize = 256;

/// Computers whose groups are read per page (a page of 1,024 is ~100 KB).
const MEMBERS_PAGE: usize = 1024;

/// What a follower asks of the fleet with its pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetExport {
    /// The change number of the last memberships it applied (0: none yet,
    /// send them all).
    pub since: u64,
    /// Which memberships this node gives (`targeting = "server"`; none
    /// with `"client"`); the group list goes either way.
    pub members: Option<Memberships>,
}

/// Whose memberships an export gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memberships {
    /// A primary's: its computers' groups, as its administrators set them
    /// (`computers.groups_changed` stamps them).
    Own,
    /// A follower's: those it took from its primary, by client id, known
    /// here or not (`primary_computers` stamps them), so that they pass
    /// down a chain of followers.
    Mirrored,
}

/// Writes every update with its files and approval state to `out` (with
/// `since`, only those changed after that change number), then the change
/// number, the policy and the rules read before the first update.
///
/// With `fleet`: first the own groups (all of them, when one changed after
/// `fleet.since` or that is 0), and after the updates the groups of every
/// computer whose groups changed after `fleet.since` (with `members`: on
/// a follower, those it mirrors, stamped with its own change numbers).
/// Groups are read with the change number; memberships page by page, as
/// updates are, with the same guarantee: one that moves meanwhile is
/// stamped above the `seq` written and comes again next time.
///
/// Pages are separate snapshots, so an update changed during the export may
/// come in its newer state; its change number is then above the `seq`
/// written, so a follower that asks `since` this `seq` next gets it again.
/// It misses nothing: every change after `seq` is stamped above it.
pub(super) fn write_catalog<W: Write>(
    db: &Connection,
    mut out: W,
    since: Option<u64>,
    fleet: Option<FleetExport>,
) -> Result<(), CatalogError> {
    let (extras, groups) = {
        let snapshot = db.unchecked_transaction()?;
        let extras = super::json::DocExtras {
            seq: Some(super::schema::change_seq(&snapshot)?),
            policy: Some(super::load_policy(&snapshot)?),
            rules: Some(super::rules::list(&snapshot)?),
        };
        let groups = match fleet {
            Some(f) if f.since == 0 || super::schema::groups_changed(&snapshot)? > f.since => {
                Some(own_groups(&snapshot)?)
            }
            _ => None,
        };
        snapshot.finish()?;
        let extras = serde_json::to_string(&extras).expect("extras serialise");
        (extras, groups)
    };
    let io = CatalogError::Export;
    out.write_all(b"{").map_err(io)?;
    if let Some(groups) = groups {
        out.write_all(b"\"groups\":").map_err(io)?;
        serde_json::to_writer(&mut out, &groups).map_err(|e| io(e.into()))?;
        out.write_all(b",\n").map_err(io)?;
    }
    out.write_all(b"\"updates\":[").map_err(io)?;
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
    out.write_all(b"],").map_err(io)?;
    if let Some((since, whose)) = fleet.and_then(|f| Some((f.since, f.members?))) {
        out.write_all(b"\n\"members\":[").map_err(io)?;
        let sql = match whose {
            Memberships::Own => MEMBERS_PAGE_SQL,
            Memberships::Mirrored => MIRRORED_PAGE_SQL,
        };
        let mut after = (0, 0);
        let mut first = true;
        loop {
            page.clear();
            let Some(last) = read_members(db, sql, &mut page, since, after, first)? else {
                break;
            };
            out.write_all(&page).map_err(io)?;
            after = last;
            first = false;
        }
        out.write_all(b"],").map_err(io)?;
    }
    // `{"seq":..,...}` continues the document after the updates array.
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

/// The administrators' groups, by their ids here.
fn own_groups(db: &Connection) -> Result<Vec<GroupDoc>, CatalogError> {
    let groups = db
        .prepare_cached("SELECT gid, name FROM computer_groups WHERE gid > ?1 ORDER BY gid")?
        .query_map([super::groups::UNASSIGNED], |r| {
            Ok(GroupDoc {
                id: r.get(0)?,
                name: r.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(groups)
}

/// One page of memberships, in one query: the next `?3` computers whose
/// groups changed, in `(groups_changed, cid)` order after the key
/// `(?1, ?2)`, each joined with its own groups (a row per membership; one
/// row with a NULL group for a computer in none). The key is sought, not
/// scanned to: `(groups_changed, cid) > (?1, ?2)` as one condition is a
/// range from `groups_changed > ?1` on, filtered, so every page re-read
/// the computers before it (a first pull of 50,000 read ~1.2 million index
/// entries); the two halves of this union each seek in
/// `computers_groups_changed`, and their merge stops at the page's end.
pub(crate) const MEMBERS_PAGE_SQL: &str = "
    WITH page AS (
        SELECT groups_changed, cid, id FROM computers WHERE groups_changed = ?1 AND cid > ?2
        UNION ALL
        SELECT groups_changed, cid, id FROM computers WHERE groups_changed > ?1
        ORDER BY 1, 2 LIMIT ?3)
    SELECT p.groups_changed, p.cid, p.id, m.gid FROM page p
    LEFT JOIN group_members m ON m.cid = p.cid AND m.gid > 2
    ORDER BY p.groups_changed, p.cid, m.gid";

/// [`MEMBERS_PAGE_SQL`] for the memberships a follower took from its
/// primary: the client ids `primary_computers` stamps, each with its
/// groups in `primary_members` (sought the same way).
pub(crate) const MIRRORED_PAGE_SQL: &str = "
    WITH page AS (
        SELECT changed, pcid, id FROM primary_computers WHERE changed = ?1 AND pcid > ?2
        UNION ALL
        SELECT changed, pcid, id FROM primary_computers WHERE changed > ?1
        ORDER BY 1, 2 LIMIT ?3)
    SELECT p.changed, p.pcid, p.id, m.gid FROM page p
    LEFT JOIN primary_members m ON m.id = p.id AND m.gid > 2
    ORDER BY p.changed, p.pcid, m.gid";

/// Serialises the next page of computers whose groups changed after
/// `since` (in `(stamp, key)` order, after `after`) into `page`, in one
/// read transaction and one query (`sql`: [`MEMBERS_PAGE_SQL`] or
/// [`MIRRORED_PAGE_SQL`]); the key of its last one, or `None` at the end.
fn read_members(
    db: &Connection,
    sql: &str,
    page: &mut Vec<u8>,
    since: u64,
    after: (i64, i64),
    mut first: bool,
) -> Result<Option<(i64, i64)>, CatalogError> {
    // Before the first page: after every computer stamped `since`.
    let from = if after.0 <= since as i64 {
        (since as i64, i64::MAX)
    } else {
        after
    };
    let snapshot = db.unchecked_transaction()?;
    let mut stmt = snapshot.prepare_cached(sql)?;
    let mut rows = stmt.query(rusqlite::params![from.0, from.1, MEMBERS_PAGE as i64])?;
    let mut last = None;
    let mut member: Option<MemberDoc> = None;
    let mut flush = |member: MemberDoc, page: &mut Vec<u8>| {
        if !first {
            page.extend_from_slice(b",\n");
        }
        first = false;
        serde_json::to_writer(&mut *page, &member).expect("memberships serialise");
    };
    while let Some(r) = rows.next()? {
        let key: (i64, i64) = (r.get(0)?, r.get(1)?);
        if last != Some(key) {
            if let Some(done) = member.take() {
                flush(done, page);
            }
            member = Some(MemberDoc {
                id: r.get(2)?,
                groups: Vec::new(),
            });
            last = Some(key);
        }
        // No row of `group_members` (NULL): in none of the own groups.
        if let Some(gid) = r.get::<_, Option<i64>>(3)? {
            member.as_mut().expect("set above").groups.push(gid);
        }
    }
    if let Some(done) = member.take() {
        flush(done, page);
    }
    drop(rows);
    drop(stmt);
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
