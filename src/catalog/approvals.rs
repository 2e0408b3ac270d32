//! Approvals per computer group, each with an optional deadline, as WSUS
//! deploys an update to a target group.
//!
//! An update's `state` stays the summary the rest of the house reads:
//! `approved` while at least one group has it approved (so a file is
//! served when its update is approved for some group: content gating is
//! unchanged), `declined` for everyone, and neither leaves no group
//! approval behind. Triggers (schema V6) keep the two together whatever
//! writes the state: an approval without a group (a rule, a bulk approval,
//! an import with approvals, an old catalog) is one for `All Computers`,
//! and a decline or unapproval drops every group's.

use std::collections::HashMap;

use rusqlite::{params, Connection, Transaction};
use serde::{Deserialize, Serialize};

use super::groups::ALL_COMPUTERS;
use super::CatalogError;

/// Each update's group approvals: (group id, deadline).
pub type ByUpdate = HashMap<String, Vec<(i64, Option<i64>)>>;

/// One group's approval of an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupApproval {
    pub group: String,
    pub group_id: i64,
    /// Unix seconds by which computers must install it, if any.
    #[serde(with = "deadline_text")]
    pub deadline: Option<i64>,
}

/// Deadlines travel as RFC 3339 text (`2026-12-10T00:00:00Z`).
pub mod deadline_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(t) => s.serialize_str(&format(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| parse(&t).map_err(serde::de::Error::custom))
            .transpose()
    }

    /// `2026-12-10T00:00:00Z`.
    pub fn format(unix: i64) -> String {
        time::OffsetDateTime::from_unix_timestamp(unix)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }

    /// RFC 3339, or a plain date (midnight UTC).
    pub fn parse(text: &str) -> Result<i64, String> {
        use time::format_description::well_known::Rfc3339;
        let text = text.trim();
        let date_only = format!("{text}T00:00:00Z");
        let full = if text.len() == 10 { &date_only } else { text };
        time::OffsetDateTime::parse(full, &Rfc3339)
            .map(|t| t.unix_timestamp())
            .map_err(|_| format!("{text:?} is not an RFC 3339 time or a YYYY-MM-DD date"))
    }
}

/// Approves `uid` for group `gid` (replacing that group's deadline);
/// whether that changed anything.
pub(super) fn approve(
    tx: &Transaction<'_>,
    uid: i64,
    gid: i64,
    deadline: Option<i64>,
) -> Result<bool, CatalogError> {
    let changed = tx
        .prepare_cached(
            "INSERT INTO update_approvals(uid, gid, deadline) VALUES (?1, ?2, ?3)
             ON CONFLICT(uid, gid) DO UPDATE SET deadline = excluded.deadline
             WHERE deadline IS NOT excluded.deadline",
        )?
        .execute(params![uid, gid, deadline])?
        > 0;
    if !changed {
        return Ok(false);
    }
    // The row is there first, so the state trigger adds no `All Computers`
    // approval; the update is stamped for followers either way.
    tx.prepare_cached("UPDATE updates SET state = 'approved' WHERE uid = ?1")?
        .execute([uid])?;
    super::import::touch_files_of(tx, uid)?;
    Ok(true)
}

/// Takes group `gid`'s approval of `uid` back; the last one taken back
/// leaves the update not approved.
pub(super) fn withdraw(tx: &Transaction<'_>, uid: i64, gid: i64) -> Result<(), CatalogError> {
    tx.prepare_cached("DELETE FROM update_approvals WHERE uid = ?1 AND gid = ?2")?
        .execute(params![uid, gid])?;
    tx.prepare_cached(
        "UPDATE updates SET state = 'not-approved' WHERE uid = ?1 AND state = 'approved'
           AND NOT EXISTS (SELECT 1 FROM update_approvals WHERE uid = ?1)",
    )?
    .execute([uid])?;
    super::import::touch_files_of(tx, uid)
}

/// The updates group `gid` has approved.
pub(super) fn of_group(db: &Connection, gid: i64) -> Result<Vec<i64>, CatalogError> {
    let uids = db
        .prepare_cached("SELECT uid FROM update_approvals WHERE gid = ?1")?
        .query_map([gid], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(uids)
}

/// The groups `uid` is approved for, `All Computers` first.
pub(super) fn of_update(db: &Connection, uid: i64) -> Result<Vec<GroupApproval>, CatalogError> {
    let mut q = db.prepare_cached(
        "SELECT g.name, a.gid, a.deadline FROM update_approvals a
         JOIN computer_groups g ON g.gid = a.gid WHERE a.uid = ?1 ORDER BY a.gid",
    )?;
    let rows = q.query_map([uid], |r| {
        Ok(GroupApproval {
            group: r.get(0)?,
            group_id: r.get(1)?,
            deadline: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The group approvals (group id, deadline) of these updates (ids
/// lowercase): what a scan offers to whom.
pub(super) fn for_updates(db: &Connection, ids: &[&str]) -> Result<ByUpdate, CatalogError> {
    let mut q = db.prepare_cached(
        "SELECT a.gid, a.deadline FROM updates u JOIN update_approvals a ON a.uid = u.uid
         WHERE u.id = ?1",
    )?;
    let mut out = HashMap::new();
    for id in ids {
        let rows: Vec<(i64, Option<i64>)> = q
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if !rows.is_empty() {
            out.insert((*id).to_owned(), rows);
        }
    }
    Ok(out)
}

/// What an approval for `groups` (a computer's groups, `All Computers`
/// included) comes to: approved when one of them has it, with the
/// earliest deadline among them.
pub fn effective(approvals: &[(i64, Option<i64>)], groups: &[i64]) -> Option<Option<i64>> {
    let mut hit = false;
    let mut deadline: Option<i64> = None;
    for (gid, d) in approvals {
        if *gid == ALL_COMPUTERS || groups.contains(gid) {
            hit = true;
            deadline = match (deadline, *d) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    hit.then_some(deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_computer_gets_the_approvals_of_its_groups_and_the_earliest_deadline() {
        let pilot = 3;
        let staff = 4;
        let approvals = [(pilot, Some(200)), (staff, Some(100))];
        assert_eq!(effective(&approvals, &[pilot]), Some(Some(200)));
        assert_eq!(effective(&approvals, &[pilot, staff]), Some(Some(100)));
        assert_eq!(effective(&approvals, &[5]), None);
        assert_eq!(effective(&[(ALL_COMPUTERS, None)], &[]), Some(None));
        assert_eq!(
            effective(&[(ALL_COMPUTERS, None), (pilot, Some(7))], &[pilot]),
            Some(Some(7))
        );
    }

    #[test]
    fn deadlines_are_rfc3339_or_dates() {
        use deadline_text::{format, parse};
        assert_eq!(parse("2026-12-10").unwrap(), 1_796_860_800);
        assert_eq!(format(1_796_860_800), "2026-12-10T00:00:00Z");
        assert_eq!(parse("2026-12-10T01:00:00+01:00").unwrap(), 1_796_860_800);
        assert!(parse("next tuesday").is_err());
    }
}
