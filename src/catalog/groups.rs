//! Computer groups: what an approval names, as in WSUS. `All Computers`
//! and `Unassigned Computers` exist from the start and are never renamed or
//! deleted; administrators add their own. Which computers are in a group
//! is the fleet's (`fleet::groups`); the catalog holds the groups because
//! approvals and rules name them, and followers take them with the
//! approvals.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::CatalogError;

/// The group every computer is in; an approval for it applies to all.
pub const ALL_COMPUTERS: i64 = 1;
/// The group of computers in no group of their own.
pub const UNASSIGNED: i64 = 2;
/// Longest group name (WSUS allows 256 characters).
const MAX_NAME: usize = 256;

/// One group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: i64,
    pub name: String,
    /// `All Computers` or `Unassigned Computers`.
    pub builtin: bool,
}

/// A trimmed, usable group name. `;` separates the names a client asks for
/// (client-side targeting), so a name cannot hold one.
pub fn check_name(name: &str) -> Result<&str, CatalogError> {
    let name = name.trim();
    let why = if name.is_empty() {
        "a group needs a name"
    } else if name.chars().count() > MAX_NAME {
        "a group name has at most 256 characters"
    } else if name.chars().any(|c| c.is_control() || c == ';') {
        "a group name holds no control characters and no ';'"
    } else {
        return Ok(name);
    };
    Err(CatalogError::Invalid {
        at: "group".into(),
        reason: why.into(),
    })
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Group> {
    let id: i64 = r.get(0)?;
    Ok(Group {
        id,
        name: r.get(1)?,
        builtin: id == ALL_COMPUTERS || id == UNASSIGNED,
    })
}

pub(super) fn list(db: &Connection) -> Result<Vec<Group>, CatalogError> {
    let mut q = db.prepare_cached("SELECT gid, name FROM computer_groups ORDER BY gid")?;
    let groups = q.query_map([], from_row)?.collect::<Result<_, _>>()?;
    Ok(groups)
}

/// The group named `name` (case-insensitive, as WSUS compares them).
pub(super) fn by_name(db: &Connection, name: &str) -> Result<Group, CatalogError> {
    db.prepare_cached("SELECT gid, name FROM computer_groups WHERE name = ?1")?
        .query_row([name.trim()], from_row)
        .optional()?
        .ok_or_else(|| CatalogError::UnknownGroup(name.trim().to_owned()))
}

pub(super) fn by_id(db: &Connection, id: i64) -> Result<Group, CatalogError> {
    db.prepare_cached("SELECT gid, name FROM computer_groups WHERE gid = ?1")?
        .query_row([id], from_row)
        .optional()?
        .ok_or_else(|| CatalogError::UnknownGroup(id.to_string()))
}

pub(super) fn create(tx: &Transaction<'_>, name: &str, now: i64) -> Result<Group, CatalogError> {
    let name = check_name(name)?;
    if by_name(tx, name).is_ok() {
        return Err(CatalogError::GroupExists(name.to_owned()));
    }
    tx.execute(
        "INSERT INTO computer_groups(name, created) VALUES (?1, ?2)",
        params![name, now],
    )?;
    by_id(tx, tx.last_insert_rowid())
}

/// A group of the administrator's own, found by name or id (the built-in
/// groups are refused: they are never renamed or deleted).
pub(super) fn own(tx: &Transaction<'_>, name: &str) -> Result<Group, CatalogError> {
    let group = by_name(tx, name)?;
    if group.builtin {
        return Err(CatalogError::BuiltinGroup(group.name));
    }
    Ok(group)
}

pub(super) fn rename(tx: &Transaction<'_>, from: &str, to: &str) -> Result<Group, CatalogError> {
    let group = own(tx, from)?;
    let to = check_name(to)?;
    if by_name(tx, to).is_ok_and(|g| g.id != group.id) {
        return Err(CatalogError::GroupExists(to.to_owned()));
    }
    tx.execute(
        "UPDATE computer_groups SET name = ?2 WHERE gid = ?1",
        params![group.id, to],
    )?;
    by_id(tx, group.id)
}

/// Deletes a group (its memberships and rules cascade); its approvals
/// must have been withdrawn (see `Catalog::delete_group`).
pub(super) fn delete(tx: &Transaction<'_>, name: &str) -> Result<Group, CatalogError> {
    let group = own(tx, name)?;
    tx.execute("DELETE FROM computer_groups WHERE gid = ?1", [group.id])?;
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(check_name("  Pilot ").unwrap(), "Pilot");
        for bad in ["", "   ", "a;b", "line\nbreak", &"x".repeat(257)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"é".repeat(256)).is_ok());
    }
}
