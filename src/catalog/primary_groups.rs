//! The primary's computer groups on a follower: the follower's own groups
//! made the primary's list, each known by the primary's id, so that a
//! rename there renames here and keeps its approvals and members. Apart
//! from `groups` because it withdraws approvals (`approvals` names the
//! built-in groups of `groups`) and reads the primary's document (`json`
//! checks names with `groups`).

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::groups::UNASSIGNED;
use super::json::GroupDoc;
use super::CatalogError;

/// Makes the follower's own groups the primary's `list` (its own, the
/// whole list), each known by the primary's id, so a rename there renames
/// here and keeps its approvals and members; a group the primary no longer
/// has is deleted with its approvals (as on the primary). A group made
/// here by name before (an approval or rule named it) is taken as the
/// primary's group of that name.
pub(super) fn follow(tx: &Transaction<'_>, list: &[GroupDoc]) -> Result<(), CatalogError> {
    let wanted: HashMap<i64, &str> = list.iter().map(|g| (g.id, g.name.as_str())).collect();
    let mapped: Vec<(i64, i64, String)> = tx
        .prepare_cached(
            "SELECT gid, primary_gid, name FROM computer_groups WHERE primary_gid IS NOT NULL",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (gid, pid, name) in &mapped {
        match wanted.get(pid) {
            None => delete_here(tx, *gid)?,
            // Out of the way first: names may be swapped.
            Some(new) if new != name => {
                tx.prepare_cached("UPDATE computer_groups SET name = ?2 WHERE gid = ?1")?
                    .execute(params![gid, format!("\u{1}{gid}")])?;
            }
            Some(_) => {}
        }
    }
    for g in list {
        let mine: Option<i64> = tx
            .prepare_cached("SELECT gid FROM computer_groups WHERE primary_gid = ?1")?
            .query_row([g.id], |r| r.get(0))
            .optional()?;
        let named: Option<i64> = tx
            .prepare_cached("SELECT gid FROM computer_groups WHERE name = ?1")?
            .query_row([&g.name], |r| r.get(0))
            .optional()?;
        if named.is_some_and(|gid| gid <= UNASSIGNED) {
            return Err(CatalogError::BuiltinGroup(g.name.clone()));
        }
        match (mine, named) {
            (Some(gid), Some(other)) if other != gid => {
                merge_into(tx, other, gid)?;
                set_name(tx, gid, &g.name)?;
            }
            (Some(gid), _) => set_name(tx, gid, &g.name)?,
            (None, Some(gid)) => {
                tx.prepare_cached(
                    "UPDATE computer_groups SET primary_gid = ?2, name = ?3 WHERE gid = ?1",
                )?
                .execute(params![gid, g.id, g.name])?;
            }
            (None, None) => {
                tx.prepare_cached(
                    "INSERT INTO computer_groups(name, primary_gid) VALUES (?1, ?2)",
                )?
                .execute(params![g.name, g.id])?;
            }
        }
    }
    let unknown: Vec<i64> = tx
        .prepare_cached("SELECT gid FROM computer_groups WHERE primary_gid IS NULL AND gid > ?1")?
        .query_map([UNASSIGNED], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for gid in unknown {
        delete_here(tx, gid)?;
    }
    Ok(())
}

/// The group here of the primary's group `primary_gid`, if known.
pub(super) fn of_primary(db: &Connection, primary_gid: i64) -> Result<Option<i64>, CatalogError> {
    Ok(db
        .prepare_cached("SELECT gid FROM computer_groups WHERE primary_gid = ?1")?
        .query_row([primary_gid], |r| r.get(0))
        .optional()?)
}

fn set_name(tx: &Transaction<'_>, gid: i64, name: &str) -> Result<(), CatalogError> {
    tx.prepare_cached("UPDATE computer_groups SET name = ?2 WHERE gid = ?1 AND name IS NOT ?2")?
        .execute(params![gid, name])?;
    Ok(())
}

/// Deletes group `gid` with its approvals (the state of an update approved
/// for it alone follows) and, by cascade, its members and rules.
fn delete_here(tx: &Transaction<'_>, gid: i64) -> Result<(), CatalogError> {
    for uid in super::approvals::of_group(tx, gid)? {
        super::approvals::withdraw(tx, uid, gid)?;
    }
    tx.prepare_cached("DELETE FROM computer_groups WHERE gid = ?1")?
        .execute([gid])?;
    Ok(())
}

/// Moves the approvals and rules of group `from` to `into`, and deletes it.
fn merge_into(tx: &Transaction<'_>, from: i64, into: i64) -> Result<(), CatalogError> {
    tx.prepare_cached("UPDATE OR IGNORE update_approvals SET gid = ?2 WHERE gid = ?1")?
        .execute(params![from, into])?;
    tx.prepare_cached("UPDATE rules SET gid = ?2 WHERE gid = ?1")?
        .execute(params![from, into])?;
    tx.prepare_cached("DELETE FROM computer_groups WHERE gid = ?1")?
        .execute([from])?;
    Ok(())
}
