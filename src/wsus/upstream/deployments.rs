//! `GetDeployments` for a replica downstream: this server's approvals as
//! [MS-WSUSSS] deployments. upcache approves per update, for every
//! computer, so each approved update is one `Install` deployment to the
//! built-in "All Computers" group (and its bundled updates a `Bundle`
//! deployment each, as WSUS sends them); a declined update is a hidden
//! one. The answer is always whole: a replica that applies it as a whole
//! (as upcache does) ends with exactly these approvals.

use sha2::Digest as _;

use super::UpstreamError;
use crate::catalog::{Catalog, UpdateState};
use crate::metadata::{Kind, MetaStore};
use crate::wsus::sync::messages::{
    Deployment, Deployments, TargetGroup, ACTION_BUNDLE, ACTION_INSTALL,
};

/// WSUS's built-in "All Computers" target group.
pub const ALL_COMPUTERS: &str = "a0a08746-4dbe-4a37-9adf-9e7652c0b421";
const NO_GROUP: &str = "00000000-0000-0000-0000-000000000000";
/// "No deadline".
const NO_DEADLINE: &str = "9999-12-31T23:59:59Z";

/// The approvals of every synced update, as deployments.
pub fn current(
    meta: &MetaStore,
    catalog: &Catalog,
    now: &str,
) -> Result<Deployments, UpstreamError> {
    let latest = meta.latest_revisions(&[Kind::Software, Kind::Driver])?;
    let ids: Vec<&str> = latest.iter().map(|(id, _)| id.as_str()).collect();
    let states = catalog.states_of(&ids)?;
    let mut out = Deployments {
        anchor: Some(format!("upcache-deployments:{now}")),
        groups: vec![TargetGroup {
            id: ALL_COMPUTERS.into(),
            parent_id: NO_GROUP.into(),
            name: "All Computers".into(),
            builtin: true,
        }],
        ..Deployments::default()
    };
    for (id, revision) in &latest {
        match states.get(id) {
            Some(UpdateState::Approved) => {
                out.deployments
                    .push(deployment(id, *revision, ACTION_INSTALL, now));
                for (link, _, leaf) in meta.links(id)? {
                    if link != "bundles" {
                        continue;
                    }
                    if let Some((_, rev)) = latest.iter().find(|(l, _)| *l == leaf) {
                        out.deployments
                            .push(deployment(&leaf, *rev, ACTION_BUNDLE, now));
                    }
                }
            }
            Some(UpdateState::Declined) => out.hidden.push(id.clone()),
            _ => {}
        }
    }
    Ok(out)
}

fn deployment(update_id: &str, revision: u32, action: i32, now: &str) -> Deployment {
    Deployment {
        update_id: update_id.to_owned(),
        revision,
        action,
        admin_name: "upcache".into(),
        deadline: NO_DEADLINE.into(),
        is_assigned: true,
        go_live_time: now.to_owned(),
        guid: stable_guid(&format!("{update_id}/{revision}/{action}")),
        target_group_id: ALL_COMPUTERS.into(),
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
    fn deployment_guids_are_stable_and_distinct() {
        let a = stable_guid("x/1/0");
        assert_eq!(a, stable_guid("x/1/0"));
        assert_ne!(a, stable_guid("x/2/0"));
        assert_eq!(a.len(), 36);
    }
}
