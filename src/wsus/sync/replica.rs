//! Replica mode: a downstream that takes its upstream's approvals, as a
//! WSUS replica server does (3.2.4.3, `GetDeployments`). The upstream's
//! target groups become computer groups of the same names (created when
//! missing; none is deleted: computers may be in them); each `Install`
//! deployment approves the update for its group, with its deadline; a
//! hidden update is declined; every other synced update is not approved.
//! After a replica sync the synced updates' approvals are the upstream's;
//! updates imported by other means keep theirs.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::catalog::{Catalog, CatalogError, UpdateState};
use crate::metadata::project::ProjectError;
use crate::metadata::{Kind, MetaStore};

use super::messages::{Deployments, ACTION_INSTALL};

/// A group name (lowercase: names match case-insensitively) and its
/// deadline (unix seconds).
type Wanted = BTreeMap<String, Option<i64>>;

/// Applies the upstream's approvals; returns how many updates changed.
pub fn apply(d: &Deployments, meta: &MetaStore, catalog: &Catalog) -> Result<u64, ProjectError> {
    let names: HashMap<&str, &str> = d
        .groups
        .iter()
        .map(|g| (g.id.as_str(), g.name.as_str()))
        .collect();
    let mut known: HashSet<String> = catalog
        .groups()?
        .into_iter()
        .map(|g| g.name.to_lowercase())
        .collect();
    let mut wanted: HashMap<&str, Wanted> = HashMap::new();
    for x in d
        .deployments
        .iter()
        .filter(|x| x.action == ACTION_INSTALL && !d.dead.contains(&x.guid))
    {
        let group = names
            .get(x.target_group_id.as_str())
            .copied()
            .unwrap_or("All Computers");
        if known.insert(group.to_lowercase()) {
            catalog.create_group(group)?;
        }
        let deadline = crate::catalog::approvals::deadline_text::parse(&x.deadline)
            .ok()
            .filter(|t| *t < 253_402_300_000); // year 9999: no deadline
        wanted
            .entry(x.update_id.as_str())
            .or_default()
            .insert(group.to_lowercase(), deadline);
    }
    let hidden: HashSet<&str> = d.hidden.iter().map(String::as_str).collect();
    let synced = meta.latest_revisions(&[Kind::Software, Kind::Driver])?;
    let ids: Vec<&str> = synced.iter().map(|(id, _)| id.as_str()).collect();
    let states = catalog.states_of(&ids)?;
    let group_names: HashMap<i64, String> = catalog
        .groups()?
        .into_iter()
        .map(|g| (g.id, g.name.to_lowercase()))
        .collect();
    let current = catalog.group_approvals_of(&ids)?;
    let mut changed = 0;
    for (id, state) in states {
        let now: Wanted = current
            .get(&id)
            .into_iter()
            .flatten()
            .filter_map(|a| Some((group_names.get(&a.gid)?.clone(), a.deadline)))
            .collect();
        let result = if hidden.contains(id.as_str()) {
            (state != UpdateState::Declined)
                .then(|| catalog.set_state(&id, UpdateState::Declined).map(drop))
        } else {
            let want = wanted.get(id.as_str()).cloned().unwrap_or_default();
            let differs = want != now || (want.is_empty() && state == UpdateState::Declined);
            differs.then(|| replace(catalog, &id, &now, &want))
        };
        match result {
            None => {}
            Some(Ok(())) => changed += 1,
            // Gone from the catalog meanwhile: nothing to approve.
            Some(Err(CatalogError::UnknownUpdate(_))) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
    Ok(changed)
}

/// Makes an update's group approvals `want` (none: not approved).
fn replace(catalog: &Catalog, id: &str, now: &Wanted, want: &Wanted) -> Result<(), CatalogError> {
    if want.is_empty() {
        return catalog.set_state(id, UpdateState::NotApproved).map(drop);
    }
    for (group, deadline) in want {
        if now.get(group) != Some(deadline) {
            catalog.approve_for(id, Some(group), *deadline)?;
        }
    }
    for group in now.keys().filter(|g| !want.contains_key(*g)) {
        catalog.unapprove_for(id, group)?;
    }
    Ok(())
}
