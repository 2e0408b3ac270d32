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

/// Each update's group approvals.
pub type ByUpdate = HashMap<String, Vec<Approval>>;

/// One group's approval of an update, as a scan reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Approval {
    pub gid: i64,
    /// Unix seconds by which computers must install it, if any.
    pub deadline: Option<i64>,
    /// Unix seconds when it was made or its deadline last changed.
    pub approved: i64,
}

/// What a computer's groups make of an update's approvals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    /// The earliest deadline among them.
    pub deadline: Option<i64>,
    /// The latest of their `approved` times: when the deployment last
    /// changed for this computer.
    pub changed: i64,
}

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
/// whether that changed anything. A new approval or a new deadline is
/// dated now; approving again as it stands changes nothing, its date
/// included.
pub(super) fn approve(
    tx: &Transaction<'_>,
    uid: i64,
    gid: i64,
    deadline: Option<i64>,
) -> Result<bool, CatalogError> {
    if !upsert(tx, uid, gid, deadline)? {
        return Ok(false);
    }
    // The row is there first, so the state trigger adds no `All Computers`
    // approval; the update is stamped for followers either way.
    tx.prepare_cached("UPDATE updates SET state = 'approved' WHERE uid = ?1")?
        .execute([uid])?;
    super::import::touch_files_of(tx, uid)?;
    Ok(true)
}

/// Writes group `gid`'s approval of `uid` with `deadline`, dated now when
/// new or when its deadline changes; whether it changed.
pub(super) fn upsert(
    tx: &Transaction<'_>,
    uid: i64,
    gid: i64,
    deadline: Option<i64>,
) -> Result<bool, CatalogError> {
    let changed = tx
        .prepare_cached(
            "INSERT INTO update_approvals(uid, gid, deadline) VALUES (?1, ?2, ?3)
             ON CONFLICT(uid, gid) DO UPDATE SET deadline = excluded.deadline,
                                                 approved = unixepoch()
             WHERE deadline IS NOT excluded.deadline",
        )?
        .execute(params![uid, gid, deadline])?;
    Ok(changed > 0)
}

/// Takes group `gid`'s approval of `uid` back; the last one taken back
/// leaves the update not approved.
pub(super) fn withdraw(tx: &Transaction<'_>, uid: i64, gid: i64) -> Result<(), CatalogError> {
    tx.prepare_cached("DELETE FROM update_approvals WHERE uid = ?1 AND gid = ?2")?
        .execute(params![uid, gid])?;
    // The state follows; the row is written either way, so followers
    // (which take changed rows) see the approval go.
    tx.prepare_cached(
        "UPDATE updates SET state = CASE WHEN EXISTS
           (SELECT 1 FROM update_approvals WHERE uid = ?1) THEN state
           WHEN state = 'approved' THEN 'not-approved' ELSE state END
         WHERE uid = ?1",
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

/// The group approvals of these updates (ids lowercase): what a scan
/// offers to whom.
pub(super) fn for_updates(db: &Connection, ids: &[&str]) -> Result<ByUpdate, CatalogError> {
    let mut q = db.prepare_cached(
        "SELECT a.gid, a.deadline, a.approved FROM updates u
         JOIN update_approvals a ON a.uid = u.uid WHERE u.id = ?1",
    )?;
    let mut out = HashMap::new();
    for id in ids {
        let rows: Vec<Approval> = q
            .query_map([id], |r| {
                Ok(Approval {
                    gid: r.get(0)?,
                    deadline: r.get(1)?,
                    approved: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                })
            })?
            .collect::<Result<_, _>>()?;
        if !rows.is_empty() {
            out.insert((*id).to_owned(), rows);
        }
    }
    Ok(out)
}

/// What an approval for `groups` (a computer's groups, `All Computers`
/// included) comes to: approved when one of them has it, with the
/// earliest deadline among them, changed when the last of them changed.
pub fn effective(approvals: &[Approval], groups: &[i64]) -> Option<Effective> {
    let mut out: Option<Effective> = None;
    for a in approvals {
        if a.gid != ALL_COMPUTERS && !groups.contains(&a.gid) {
            continue;
        }
        out = Some(match out {
            None => Effective {
                deadline: a.deadline,
                changed: a.approved,
            },
            Some(e) => Effective {
                deadline: match (e.deadline, a.deadline) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                },
                changed: e.changed.max(a.approved),
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(gid: i64, deadline: Option<i64>, approved: i64) -> Approval {
        Approval {
            gid,
            deadline,
            approved,
        }
    }

    #[test]
    fn a_computer_gets_the_approvals_of_its_groups_and_the_earliest_deadline() {
        let pilot = 3;
        let staff = 4;
        let approvals = [
            approval(pilot, Some(200), 10),
            approval(staff, Some(100), 20),
        ];
        let at = |groups: &[i64]| effective(&approvals, groups).map(|e| e.deadline);
        assert_eq!(at(&[pilot]), Some(Some(200)));
        assert_eq!(at(&[pilot, staff]), Some(Some(100)));
        assert_eq!(at(&[5]), None);
        assert_eq!(
            effective(&[approval(ALL_COMPUTERS, None, 1)], &[]).map(|e| e.deadline),
            Some(None)
        );
        assert_eq!(
            effective(
                &[
                    approval(ALL_COMPUTERS, None, 1),
                    approval(pilot, Some(7), 2)
                ],
                &[pilot]
            )
            .map(|e| e.deadline),
            Some(Some(7))
        );
    }

    /// The deployment a computer gets changed when the latest of its
    /// groups' approvals did; other groups' do not count.
    #[test]
    fn a_computer_s_deployment_changed_when_its_groups_last_approval_did() {
        let (pilot, staff) = (3, 4);
        let approvals = [
            approval(ALL_COMPUTERS, None, 100),
            approval(pilot, Some(7), 300),
            approval(staff, None, 200),
        ];
        let changed = |groups: &[i64]| effective(&approvals, groups).map(|e| e.changed);
        assert_eq!(changed(&[]), Some(100));
        assert_eq!(changed(&[staff]), Some(200));
        assert_eq!(changed(&[pilot, staff]), Some(300));
    }

    const U: &str = "3f1e1a36-0c3f-4d8e-9a6c-0b5a0e7c2d11";

    fn catalog() -> (tempfile::TempDir, std::sync::Arc<crate::catalog::Catalog>) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::DiskStore::open(dir.path(), 16).unwrap();
        let catalog = crate::catalog::Catalog::open(dir.path(), store).unwrap();
        (dir, catalog)
    }

    /// A primary's export of `U`, approved for Pilot with `deadline`.
    fn approved_for_pilot(deadline: &str) -> String {
        serde_json::json!({
            "updates": [{
                "id": U, "revision": 1, "title": "U", "files": [], "state": "approved",
                "approvals": [{"group": "Pilot", "deadline": deadline}],
            }],
            "seq": 1,
            "policy": crate::policy::Policy::default(),
            "rules": [],
        })
        .to_string()
    }

    /// When `U`'s approvals were dated.
    fn dates(c: &crate::catalog::Catalog) -> Vec<i64> {
        let mut by_update = c.group_approvals_of(&[U]).unwrap();
        let rows = by_update.remove(U).unwrap_or_default();
        rows.iter().map(|a| a.approved).collect()
    }

    /// Dates every approval long ago, as one made a while back.
    fn backdate(c: &crate::catalog::Catalog) {
        c.db()
            .execute("UPDATE update_approvals SET approved = 1000", [])
            .unwrap();
    }

    fn a_minute_ago() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            - 60
    }

    #[test]
    fn an_approval_is_dated_when_made_and_when_its_deadline_changes_not_when_repeated() {
        let (_dir, c) = catalog();
        let doc =
            serde_json::json!({"updates": [{"id": U, "revision": 1, "title": "U", "files": []}]});
        c.import_json(doc.to_string().as_bytes(), false).unwrap();
        c.approve_for(U, None, None).unwrap();
        assert!(dates(&c)[0] >= a_minute_ago(), "dated when made");
        backdate(&c);
        c.approve_for(U, None, None).unwrap();
        assert_eq!(dates(&c), [1000], "approving again as it stands");
        c.approve_for(U, None, Some(1_900_000_000)).unwrap();
        assert!(dates(&c)[0] >= a_minute_ago(), "a new deadline");
    }

    #[test]
    fn a_follower_keeps_the_date_of_an_approval_its_primary_sends_again() {
        let (_dir, c) = catalog();
        let import = |doc: String| c.import_from_primary(doc.as_bytes(), None).unwrap();
        import(approved_for_pilot("2027-01-01"));
        assert!(dates(&c)[0] >= a_minute_ago());
        backdate(&c);
        import(approved_for_pilot("2027-01-01"));
        assert_eq!(dates(&c), [1000], "the same approval, sent again");
        import(approved_for_pilot("2027-02-01"));
        assert!(dates(&c)[0] >= a_minute_ago(), "a new deadline");
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
