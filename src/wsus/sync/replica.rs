//! Replica mode: a downstream that takes its upstream's approvals, as a
//! WSUS replica server does (3.2.4.3, `GetDeployments`). upcache approves
//! per update, so an `Install` deployment to any group approves the
//! update, a hidden update is declined, and every other synced update is
//! not approved: after a replica sync, the synced updates' states are the
//! upstream's. Updates imported by other means keep theirs.

use crate::catalog::{Catalog, CatalogError, UpdateState};
use crate::metadata::project::ProjectError;
use crate::metadata::{Kind, MetaStore};

use super::messages::{Deployments, ACTION_INSTALL};

/// Applies the upstream's approvals; returns how many updates changed state.
pub fn apply(d: &Deployments, meta: &MetaStore, catalog: &Catalog) -> Result<u64, ProjectError> {
    let approved: std::collections::HashSet<&str> = d
        .deployments
        .iter()
        .filter(|x| x.action == ACTION_INSTALL && !d.dead.contains(&x.guid))
        .map(|x| x.update_id.as_str())
        .collect();
    let hidden: std::collections::HashSet<&str> = d.hidden.iter().map(String::as_str).collect();
    let synced = meta.latest_revisions(&[Kind::Software, Kind::Driver])?;
    let ids: Vec<&str> = synced.iter().map(|(id, _)| id.as_str()).collect();
    let states = catalog.states_of(&ids)?;
    let mut changed = 0;
    for (id, state) in states {
        let want = if approved.contains(id.as_str()) {
            UpdateState::Approved
        } else if hidden.contains(id.as_str()) {
            UpdateState::Declined
        } else {
            UpdateState::NotApproved
        };
        if want == state {
            continue;
        }
        match catalog.set_state(&id, want) {
            Ok(_) => changed += 1,
            // Gone from the catalog meanwhile: nothing to approve.
            Err(CatalogError::UnknownUpdate(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(changed)
}
