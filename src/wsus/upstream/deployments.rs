//! `GetDeployments` for a replica downstream: this server's approvals as
//! [MS-WSUSSS] deployments. Each computer group is a target group (`All
//! Computers` and `Unassigned Computers` with WSUS's own GUIDs, the others
//! with a GUID derived from their name); each group approval of an update
//! is one `Install` deployment to that group, with its deadline, and the
//! updates it bundles a `Bundle` deployment each, as WSUS sends them; a
//! declined update is a hidden one. The answer is always whole: a replica
//! that applies it as a whole (as upcache does) ends with exactly these
//! approvals.
//!
//! A WSUS replica applies deployments as changes and forgets one only
//! when told it is dead (3.2.4.3), so every deployment sent is recorded:
//! one no longer in force is listed in `DeadDeployments` to every replica
//! whose anchor is older than the call that found it withdrawn (the
//! anchor carries the call's number). Given again later, it comes under a
//! new `DeploymentGuid`, as a replica may keep a dead one dead.

use std::collections::HashMap;

use sha2::Digest as _;

use super::UpstreamError;
use crate::catalog::groups::{Group, ALL_COMPUTERS as ALL_ID, UNASSIGNED as UNASSIGNED_ID};
use crate::catalog::{Catalog, UpdateState};
use crate::metadata::{Kind, MetaStore};
use crate::wsus::sync::messages::{
    Deployment, Deployments, TargetGroup, ACTION_BUNDLE, ACTION_INSTALL,
};

/// WSUS's built-in "All Computers" target group.
pub const ALL_COMPUTERS: &str = "a0a08746-4dbe-4a37-9adf-9e7652c0b421";
/// WSUS's built-in "Unassigned Computers" target group.
pub const UNASSIGNED: &str = "b73ca6ed-5727-47f3-84de-015e03f6a88a";
const NO_GROUP: &str = "00000000-0000-0000-0000-000000000000";
/// "No deadline".
pub const NO_DEADLINE: &str = "9999-12-31T23:59:59Z";

/// The target group GUID of a computer group.
pub fn group_guid(g: &Group) -> String {
    match g.id {
        ALL_ID => ALL_COMPUTERS.into(),
        UNASSIGNED_ID => UNASSIGNED.into(),
        _ => stable_guid(&format!("group/{}", g.name.to_lowercase())),
    }
}

/// The call number in a deployment anchor this server gave
/// (`upcache-deployments:<call>:<time>`); `None` for any other anchor.
pub fn anchor_call(anchor: Option<&str>) -> Option<u64> {
    anchor?
        .strip_prefix("upcache-deployments:")?
        .split(':')
        .next()?
        .parse()
        .ok()
}

/// The approvals of every synced update, as deployments; `DeadDeployments`
/// are those withdrawn since the replica's `anchor`.
pub fn current(
    meta: &MetaStore,
    catalog: &Catalog,
    now: &str,
    anchor: Option<&str>,
) -> Result<Deployments, UpstreamError> {
    let latest = meta.latest_revisions(&[Kind::Software, Kind::Driver])?;
    let ids: Vec<&str> = latest.iter().map(|(id, _)| id.as_str()).collect();
    let states = catalog.states_of(&ids)?;
    let approvals = catalog.group_approvals_of(&ids)?;
    let groups = catalog.groups()?;
    let guids: HashMap<i64, String> = groups.iter().map(|g| (g.id, group_guid(g))).collect();
    let mut out = Deployments {
        groups: groups
            .iter()
            .map(|g| TargetGroup {
                id: guids[&g.id].clone(),
                parent_id: if g.id == ALL_ID {
                    NO_GROUP
                } else {
                    ALL_COMPUTERS
                }
                .into(),
                name: g.name.clone(),
                builtin: g.builtin,
            })
            .collect(),
        ..Deployments::default()
    };
    let revision_of: HashMap<&str, u32> = latest.iter().map(|(id, r)| (id.as_str(), *r)).collect();
    for (id, revision) in &latest {
        match states.get(id) {
            Some(UpdateState::Approved) => {
                let leaves: Vec<String> = meta
                    .links(id)?
                    .into_iter()
                    .filter(|(link, _, _)| link == "bundles")
                    .map(|(_, _, leaf)| leaf)
                    .collect();
                for a in approvals.get(id).into_iter().flatten() {
                    let Some(group) = guids.get(&a.gid) else {
                        continue;
                    };
                    let deadline = a
                        .deadline
                        .map(crate::catalog::approvals::deadline_text::format)
                        .unwrap_or_else(|| NO_DEADLINE.into());
                    let at = |id: &str, rev: u32, action: i32| {
                        deployment(id, rev, action, group, &deadline, now)
                    };
                    out.deployments.push(at(id, *revision, ACTION_INSTALL));
                    for leaf in &leaves {
                        if let Some(rev) = revision_of.get(leaf.as_str()) {
                            out.deployments.push(at(leaf, *rev, ACTION_BUNDLE));
                        }
                    }
                }
            }
            Some(UpdateState::Declined) => out.hidden.push(id.clone()),
            _ => {}
        }
    }
    // `guid` holds each deployment's key until its generation is known.
    let keys: Vec<String> = out.deployments.iter().map(|d| d.guid.clone()).collect();
    let sent = meta.deployments_in_force(&keys, anchor_call(anchor))?;
    for (d, generation) in out.deployments.iter_mut().zip(&sent.generations) {
        d.guid = guid_of(&d.guid, *generation);
    }
    out.dead = sent
        .dead
        .iter()
        .map(|(key, generation)| guid_of(key, *generation))
        .collect();
    out.anchor = Some(format!("upcache-deployments:{}:{now}", sent.call));
    Ok(out)
}

/// The `DeploymentGuid` of a deployment's generation (the first keeps
/// the GUID earlier releases gave).
fn guid_of(key: &str, generation: u32) -> String {
    match generation {
        0 => stable_guid(key),
        g => stable_guid(&format!("{key}/{g}")),
    }
}

fn deployment(
    update_id: &str,
    revision: u32,
    action: i32,
    group: &str,
    deadline: &str,
    now: &str,
) -> Deployment {
    Deployment {
        update_id: update_id.to_owned(),
        revision,
        action,
        admin_name: "upcache".into(),
        deadline: deadline.to_owned(),
        is_assigned: true,
        go_live_time: now.to_owned(),
        // The key, made a GUID by `current` once its generation is known.
        guid: format!("{update_id}/{revision}/{action}/{group}"),
        target_group_id: group.to_owned(),
        download_priority: 1,
    }
}

/// The same approval keeps the same `DeploymentGuid` across calls.
fn stable_guid(key: &str) -> String {
    let h = hex::encode(&sha2::Sha256::digest(key.as_bytes())[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_carry_the_call_number() {
        assert_eq!(
            anchor_call(Some("upcache-deployments:7:2026-12-02T10:00:00Z")),
            Some(7)
        );
        assert_eq!(
            anchor_call(Some("upcache-deployments:2026-12-02T10:00:00Z")),
            None
        );
        assert_eq!(anchor_call(Some("wsus")), None);
        assert_eq!(anchor_call(None), None);
    }

    #[test]
    fn withdrawn_deployments_are_dead_for_older_anchors_and_come_back_anew() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open(dir.path()).unwrap();
        let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let first = meta.deployments_in_force(&keys(&["a", "b"]), None).unwrap();
        assert_eq!((first.call, first.generations.clone()), (1, vec![0, 0]));
        let second = meta.deployments_in_force(&keys(&["a"]), Some(1)).unwrap();
        assert_eq!(second.dead, vec![("b".to_owned(), 0)]);
        // A replica whose anchor is the second call's was told already.
        let third = meta.deployments_in_force(&keys(&["a"]), Some(2)).unwrap();
        assert!(third.dead.is_empty());
        // A replica without an anchor hears of every dead one.
        let fresh = meta.deployments_in_force(&keys(&["a"]), None).unwrap();
        assert_eq!(fresh.dead.len(), 1);
        // Given again: a new generation, so a new GUID.
        let again = meta
            .deployments_in_force(&keys(&["a", "b"]), Some(4))
            .unwrap();
        assert_eq!(again.generations, vec![0, 1]);
        assert_ne!(guid_of("b", 0), guid_of("b", 1));
        assert_eq!(guid_of("b", 0), stable_guid("b"));
        // A replica that synced at call 1 and slept through the withdrawal
        // and the new approval still holds generation 0: it is told it is
        // dead, beside the live generation 1.
        let sleeper = meta
            .deployments_in_force(&keys(&["a", "b"]), Some(1))
            .unwrap();
        assert_eq!(sleeper.generations, vec![0, 1]);
        assert_eq!(sleeper.dead, vec![("b".to_owned(), 0)]);
        // Withdrawn again: both generations are dead to it.
        let later = meta.deployments_in_force(&keys(&["a"]), Some(1)).unwrap();
        assert_eq!(later.dead, vec![("b".to_owned(), 0), ("b".to_owned(), 1)]);
    }

    #[test]
    fn deployment_guids_are_stable_and_distinct() {
        let a = stable_guid("x/1/0");
        assert_eq!(a, stable_guid("x/1/0"));
        assert_ne!(a, stable_guid("x/2/0"));
        assert_eq!(a.len(), 36);
    }
}
