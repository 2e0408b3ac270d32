//! Which groups a computer is in. Every computer is in `All Computers`; one
//! in none of the administrators' groups is in `Unassigned Computers`; a
//! computer may be in several, as in WSUS. With `targeting = "server"`
//! administrators set them; with `"client"` the target group names the
//! client sends (its `TargetGroup` policy, `;` between names) do, at every
//! registration and scan, and administrators cannot.

use rusqlite::{params, Connection, OptionalExtension};

use super::{Fleet, FleetError, Targeting};
use crate::catalog::groups::{ALL_COMPUTERS, UNASSIGNED};

/// Most group names a client may ask for at once.
const MAX_CLIENT_GROUPS: usize = 32;

/// The groups `cid` is in, `All Computers` first.
pub(super) fn of_cid(db: &Connection, cid: i64) -> rusqlite::Result<Vec<i64>> {
    let mut own: Vec<i64> = db
        .prepare_cached("SELECT gid FROM group_members WHERE cid = ?1 ORDER BY gid")?
        .query_map([cid], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if own.is_empty() {
        own.push(UNASSIGNED);
    }
    own.insert(0, ALL_COMPUTERS);
    Ok(own)
}

/// The ids of the groups named (case-insensitive); unknown names are an error.
fn gids_named(db: &Connection, names: &[String]) -> Result<Vec<i64>, FleetError> {
    let mut q = db.prepare_cached("SELECT gid FROM computer_groups WHERE name = ?1")?;
    let mut gids = Vec::with_capacity(names.len());
    for name in names {
        let gid: i64 = q
            .query_row([name.trim()], |r| r.get(0))
            .map_err(|_| FleetError::UnknownGroup(name.trim().to_owned()))?;
        if gid == ALL_COMPUTERS || gid == UNASSIGNED {
            return Err(FleetError::Invalid(format!(
                "{name:?} is a built-in group: computers are in it or not by themselves"
            )));
        }
        gids.push(gid);
    }
    gids.sort_unstable();
    gids.dedup();
    Ok(gids)
}

/// Makes `cid`'s own groups exactly `gids` (sorted), writing only a
/// change; whether there was one.
fn set_members(db: &Connection, cid: i64, gids: &[i64]) -> rusqlite::Result<bool> {
    let current: Vec<i64> = db
        .prepare_cached("SELECT gid FROM group_members WHERE cid = ?1 ORDER BY gid")?
        .query_map([cid], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if current == gids {
        return Ok(false);
    }
    db.prepare_cached("DELETE FROM group_members WHERE cid = ?1")?
        .execute([cid])?;
    let mut insert = db.prepare_cached("INSERT INTO group_members(cid, gid) VALUES (?1, ?2)")?;
    for gid in gids {
        insert.execute(params![cid, gid])?;
    }
    Ok(true)
}

/// Stamps `cid`'s groups with a new change number of the catalog's, for
/// followers (`GET /api/v1/catalog?members_since=`).
fn stamp(db: &Connection, cid: i64) -> rusqlite::Result<()> {
    crate::catalog::bump_change_seq(db)?;
    db.prepare_cached(
        "UPDATE computers SET groups_changed = (SELECT seq FROM change_seq) WHERE cid = ?1",
    )?
    .execute([cid])?;
    Ok(())
}

/// A follower's keeper of the primary's memberships (server-side
/// targeting): by client id in `primary_members`, so that a computer
/// that first comes here later lands in its groups (a trigger does it as
/// its row is made), and at once for the computers known here. Each id
/// is stamped in `primary_computers` with this pull's change number, so
/// that this node passes the memberships on to its own followers.
#[derive(Debug, Default)]
pub struct FromPrimary {
    /// Computers whose groups a pull brought.
    pub computers: u64,
}

impl crate::catalog::PrimaryMembers for FromPrimary {
    fn clear(&mut self, db: &Connection) -> rusqlite::Result<()> {
        // Every id held is passed on again: in the groups this pull
        // brings, or in none if it brings none for it.
        db.execute_batch(
            "DELETE FROM primary_members; DELETE FROM group_members;
             UPDATE primary_computers SET changed = (SELECT seq FROM change_seq);",
        )
    }

    fn set(&mut self, db: &Connection, id: &str, gids: &[i64]) -> rusqlite::Result<()> {
        self.computers += 1;
        db.prepare_cached("DELETE FROM primary_members WHERE id = ?1")?
            .execute([id])?;
        db.prepare_cached(
            "INSERT INTO primary_computers(id, changed) VALUES (?1, (SELECT seq FROM change_seq))
             ON CONFLICT(id) DO UPDATE SET changed = excluded.changed",
        )?
        .execute([id])?;
        let mut insert =
            db.prepare_cached("INSERT OR IGNORE INTO primary_members(id, gid) VALUES (?1, ?2)")?;
        for gid in gids {
            insert.execute(params![id, gid])?;
        }
        let cid: Option<i64> = db
            .prepare_cached("SELECT cid FROM computers WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        if let Some(cid) = cid {
            set_members(db, cid, gids)?;
        }
        Ok(())
    }
}

/// The names of a client's `targetGroupName` (bounded).
pub fn client_group_names(target_group: &str) -> Vec<String> {
    target_group
        .split(';')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .take(MAX_CLIENT_GROUPS)
        .map(str::to_owned)
        .collect()
}

impl Fleet {
    /// With client-side targeting, puts `cid` in the groups it asks for
    /// that exist (a name no group has is ignored, as WSUS does).
    pub(super) fn follow_targeting(
        &self,
        db: &Connection,
        cid: i64,
        target_group: &str,
    ) -> rusqlite::Result<()> {
        if self.settings.targeting != Targeting::Client {
            return Ok(());
        }
        let mut q = db.prepare_cached(
            "SELECT gid FROM computer_groups WHERE name = ?1 AND gid NOT IN (1, 2)",
        )?;
        let mut gids = Vec::new();
        for name in client_group_names(target_group) {
            if let Ok(gid) = q.query_row([&name], |r| r.get::<_, i64>(0)) {
                gids.push(gid);
            }
        }
        gids.sort_unstable();
        gids.dedup();
        set_members(db, cid, &gids).map(drop)
    }

    /// Puts computer `id` in exactly the groups `names` (none: Unassigned).
    pub fn set_groups(&self, id: &str, names: &[String]) -> Result<(), FleetError> {
        if self.settings.targeting == Targeting::Client {
            return Err(FleetError::ClientTargeting);
        }
        let mut db = self.db();
        // Immediate: it writes the catalog's change number.
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let cid = super::find_cid(&tx, id)?;
        let gids = gids_named(&tx, names)?;
        if set_members(&tx, cid, &gids)? {
            stamp(&tx, cid)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The groups computer `id` is in, `All Computers` first (what a scan
    /// offers it is approved for one of these).
    pub fn groups_of(&self, id: &str) -> Result<Vec<i64>, FleetError> {
        let db = self.reader();
        let cid = super::find_cid(&db, id)?;
        Ok(of_cid(&db, cid)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_may_ask_for_several_groups() {
        assert_eq!(client_group_names(" Pilot ;Ring 1;;"), ["Pilot", "Ring 1"]);
        assert!(client_group_names("").is_empty());
        assert_eq!(
            client_group_names(&"g;".repeat(100)).len(),
            MAX_CLIENT_GROUPS
        );
    }
}
