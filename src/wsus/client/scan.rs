//! What `SyncUpdates` answers ([MS-WUSP] 3.1.5.7, the message in
//! 2.2.2.2.4): the revisions whose
//! prerequisites the client has reported installed, not already in its
//! cache, each with a deployment; the non-leaf ones (categories,
//! detectoids, anything another update requires) before any leaf, so the
//! client evaluates them and reports them on its next call; at most a page
//! at a time, `Truncated` when more remain.
//!
//! Stateless: the client's own lists say what it has, so the next page is
//! simply the next call.

use std::collections::{HashMap, HashSet};

use crate::catalog::UpdateState;
use crate::metadata::store::ScanRevision;
use crate::metadata::Kind;

/// The revisions the store holds, indexed for scans: built once per new
/// revision in the store, read by every `SyncUpdates`. A call walks every
/// revision, so the walk touches only positions and flags: prerequisites
/// are positions in `revisions`, the client's lists become flags.
pub struct ScanIndex {
    /// The store's largest `rid` when built (newer: rebuild).
    pub last_rid: i64,
    revisions: Vec<ScanRevision>,
    by_rid: HashMap<i64, usize>,
    by_id: HashMap<String, usize>,
    /// Per revision, its prerequisites as (group, position of the required
    /// update), sorted by group; `NONE` when the store lacks the update.
    prerequisites: Vec<Vec<(u32, u32)>>,
    /// Per revision: whether some revision requires it (not a leaf).
    required: Vec<bool>,
    /// Leaf id → the bundles that carry it.
    bundled_by: HashMap<String, Vec<String>>,
}

/// A prerequisite the store does not hold: never installed.
const NONE: u32 = u32::MAX;

/// The deployment action of [MS-WUSP] 2.2.2.2.4 (`UpdateInfo/Deployment/Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Install,
    Bundle,
    Evaluate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Install => "Install",
            Action::Bundle => "Bundle",
            Action::Evaluate => "Evaluate",
        }
    }
}

/// One revision in an answer.
#[derive(Debug, Clone)]
pub struct Offered<'a> {
    pub revision: &'a ScanRevision,
    pub action: Action,
    pub is_leaf: bool,
}

/// What a call asks.
pub struct Ask<'a> {
    pub installed_non_leaf: &'a [i64],
    pub other_cached: &'a [i64],
    /// The driver pass: drivers only (else: everything but drivers).
    pub drivers: bool,
    /// The driver pass's `SystemSpec`: the hardware and compatible ids of
    /// the computer's devices, lowercase.
    pub hardware_ids: &'a [String],
    pub page: usize,
}

/// An answer: the page, whether more remain, the client's cached updates
/// whose deployment is not the plain `Evaluate` it got them with, and the
/// cached ids this server no longer offers.
pub struct Answer<'a> {
    pub new: Vec<Offered<'a>>,
    pub truncated: bool,
    pub changed: Vec<Offered<'a>>,
    pub out_of_scope: Vec<i64>,
}

impl ScanIndex {
    pub fn new(revisions: Vec<ScanRevision>, last_rid: i64) -> ScanIndex {
        let mut by_rid = HashMap::with_capacity(revisions.len());
        let mut by_id = HashMap::with_capacity(revisions.len());
        let mut bundled_by: HashMap<String, Vec<String>> = HashMap::new();
        for (i, r) in revisions.iter().enumerate() {
            by_rid.insert(r.rid, i);
            by_id.insert(r.update_id.clone(), i);
            for leaf in &r.bundles {
                bundled_by
                    .entry(leaf.clone())
                    .or_default()
                    .push(r.update_id.clone());
            }
        }
        let mut required = vec![false; revisions.len()];
        let prerequisites = revisions
            .iter()
            .map(|r| {
                let mut p: Vec<(u32, u32)> = r
                    .prerequisites
                    .iter()
                    .map(|(group, id)| match by_id.get(id) {
                        Some(&at) => {
                            required[at] = true;
                            (*group, at as u32)
                        }
                        None => (*group, NONE),
                    })
                    .collect();
                p.sort_unstable();
                p
            })
            .collect();
        ScanIndex {
            last_rid,
            revisions,
            by_rid,
            by_id,
            prerequisites,
            required,
            bundled_by,
        }
    }

    pub fn by_rid(&self, rid: i64) -> Option<&ScanRevision> {
        self.by_rid.get(&rid).map(|&i| &self.revisions[i])
    }

    pub fn by_id(&self, id: &str) -> Option<&ScanRevision> {
        self.by_id.get(id).map(|&i| &self.revisions[i])
    }

    /// The bundles that carry a leaf (by update id); none for others.
    pub fn bundles_of(&self, leaf: &str) -> &[String] {
        self.bundled_by
            .get(leaf)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn revisions(&self) -> impl Iterator<Item = &ScanRevision> {
        self.revisions.iter()
    }

    /// Whether any driver is approved: without one, the client's driver
    /// pass has nothing to find (`DriverSyncNotNeeded`).
    pub fn has_approved_drivers(&self, states: &HashMap<String, UpdateState>) -> bool {
        self.revisions
            .iter()
            .any(|r| r.kind == Kind::Driver && self.action(r, states) == Some(Action::Install))
    }

    pub fn is_leaf(&self, r: &ScanRevision) -> bool {
        self.by_id
            .get(&r.update_id)
            .is_none_or(|&at| !self.required[at])
    }

    /// The updates (software and drivers, bundles not their leaves) whose
    /// approval decides deployments: the catalog holds their states.
    pub fn approvable_ids<'a>(
        &'a self,
        revisions: impl Iterator<Item = &'a ScanRevision>,
    ) -> Vec<&'a str> {
        let mut ids = Vec::new();
        for r in revisions {
            if !is_update(r.kind) {
                continue;
            }
            ids.push(r.update_id.as_str());
            if let Some(bundles) = self.bundled_by.get(&r.update_id) {
                ids.extend(bundles.iter().map(String::as_str));
            }
        }
        ids
    }

    /// The action of a revision under `states` (the catalog's approvals);
    /// `None`: not offered at all (declined).
    pub fn action(
        &self,
        r: &ScanRevision,
        states: &HashMap<String, UpdateState>,
    ) -> Option<Action> {
        if !is_update(r.kind) {
            return Some(Action::Evaluate);
        }
        if let Some(bundles) = self.bundled_by.get(&r.update_id) {
            let approved = bundles
                .iter()
                .any(|b| states.get(b) == Some(&UpdateState::Approved));
            return Some(if approved {
                Action::Bundle
            } else {
                Action::Evaluate
            });
        }
        match states.get(&r.update_id) {
            Some(UpdateState::Approved) => Some(Action::Install),
            Some(UpdateState::Declined) => None,
            _ => Some(Action::Evaluate),
        }
    }

    /// Answers one call; `states` must cover [`Self::approvable_ids`] of
    /// every revision.
    pub fn answer<'a>(
        &'a self,
        ask: &Ask<'_>,
        states: &HashMap<String, UpdateState>,
    ) -> Answer<'a> {
        let n = self.revisions.len();
        // The client's lists as flags by position; cached ids this store
        // does not hold are out of scope.
        let mut installed = vec![false; n];
        let mut cached = vec![false; n];
        let mut out_of_scope = Vec::new();
        for &rid in ask.installed_non_leaf {
            match self.by_rid.get(&rid) {
                Some(&at) => (installed[at], cached[at]) = (true, true),
                None => out_of_scope.push(rid),
            }
        }
        for &rid in ask.other_cached {
            match self.by_rid.get(&rid) {
                Some(&at) => cached[at] = true,
                None => out_of_scope.push(rid),
            }
        }
        let devices: HashSet<&str> = ask.hardware_ids.iter().map(String::as_str).collect();
        let mut non_leaf = Vec::new();
        let mut leaf = Vec::new();
        for (at, r) in self.revisions.iter().enumerate() {
            if cached[at] || (r.kind == Kind::Driver) != ask.drivers {
                continue;
            }
            if !satisfied(&self.prerequisites[at], &installed) {
                continue;
            }
            let Some(action) = self.action(r, states) else {
                continue;
            };
            // The driver pass: approved drivers for this computer's devices.
            if ask.drivers && !(action == Action::Install && fits(r, &devices)) {
                continue;
            }
            let offered = Offered {
                revision: r,
                action,
                is_leaf: !self.required[at],
            };
            if offered.is_leaf {
                leaf.push(offered);
            } else {
                non_leaf.push(offered);
            }
        }
        // Non-leaf revisions first: leaves wait until the client has
        // evaluated (and reported) what they depend on.
        let mut new = if non_leaf.is_empty() { leaf } else { non_leaf };
        let truncated = new.len() > ask.page;
        new.truncate(ask.page);
        let mut changed = Vec::new();
        for (at, r) in self.revisions.iter().enumerate() {
            if !cached[at] {
                continue;
            }
            match self.action(r, states) {
                None => out_of_scope.push(r.rid),
                Some(Action::Evaluate) => {}
                Some(action) => changed.push(Offered {
                    revision: r,
                    action,
                    is_leaf: !self.required[at],
                }),
            }
        }
        out_of_scope.sort_unstable();
        out_of_scope.dedup();
        changed.sort_by_key(|o| o.revision.rid);
        Answer {
            new,
            truncated,
            changed,
            out_of_scope,
        }
    }
}

/// Whether a driver is for one of the computer's devices.
fn fits(r: &ScanRevision, devices: &HashSet<&str>) -> bool {
    r.hardware_ids
        .iter()
        .any(|id| devices.contains(id.as_str()))
}

fn is_update(kind: Kind) -> bool {
    matches!(kind, Kind::Software | Kind::Driver)
}

/// Every required prerequisite installed (group 0), and one of each
/// `AtLeastOne` group; `prerequisites` sorted by group.
fn satisfied(prerequisites: &[(u32, u32)], installed: &[bool]) -> bool {
    let (mut group, mut any) = (0, true);
    for &(g, at) in prerequisites {
        let have = at != NONE && installed[at as usize];
        if g == 0 {
            if !have {
                return false;
            }
        } else if g != group {
            if !any {
                return false;
            }
            (group, any) = (g, have);
        } else {
            any |= have;
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(
        rid: i64,
        id: &str,
        kind: Kind,
        prereqs: &[(u32, &str)],
        bundles: &[&str],
    ) -> ScanRevision {
        ScanRevision {
            rid,
            update_id: id.into(),
            revision: 1,
            kind,
            prerequisites: prereqs.iter().map(|(g, i)| (*g, (*i).to_owned())).collect(),
            bundles: bundles.iter().map(|s| (*s).to_owned()).collect(),
            supersedes: Vec::new(),
            hardware_ids: Vec::new(),
        }
    }

    fn index() -> ScanIndex {
        ScanIndex::new(
            vec![
                rev(1, "product", Kind::Category, &[], &[]),
                rev(2, "detectoid", Kind::Detectoid, &[], &[]),
                rev(3, "middle", Kind::Software, &[(0, "detectoid")], &[]),
                rev(
                    4,
                    "top",
                    Kind::Software,
                    &[(0, "middle"), (1, "product")],
                    &[],
                ),
                rev(5, "bundle", Kind::Software, &[(1, "product")], &["leaf"]),
                rev(6, "leaf", Kind::Software, &[(0, "detectoid")], &[]),
                rev(7, "declined", Kind::Software, &[(1, "product")], &[]),
                rev(8, "driver", Kind::Driver, &[], &[]),
            ],
            8,
        )
    }

    fn ask<'a>(installed: &'a [i64], other: &'a [i64], page: usize) -> Ask<'a> {
        Ask {
            installed_non_leaf: installed,
            other_cached: other,
            drivers: false,
            hardware_ids: &[],
            page,
        }
    }

    fn ids<'a>(a: &'a Answer<'a>) -> Vec<&'a str> {
        a.new
            .iter()
            .map(|o| o.revision.update_id.as_str())
            .collect()
    }

    #[test]
    fn a_chain_is_reached_one_step_at_a_time_non_leaves_first() {
        let i = index();
        let states = HashMap::from([
            ("bundle".to_owned(), UpdateState::Approved),
            ("declined".to_owned(), UpdateState::Declined),
        ]);
        // Nothing reported: the roots (no prerequisites), non-leaves first.
        let a = i.answer(&ask(&[], &[], 30), &states);
        assert_eq!(ids(&a), ["product", "detectoid"]);
        assert!(!a.truncated);
        // Both installed: middle (required by top) before the leaves.
        let a = i.answer(&ask(&[1, 2], &[], 30), &states);
        assert_eq!(ids(&a), ["middle"]);
        // Middle installed: top, the bundle and its leaf; declined never.
        let a = i.answer(&ask(&[1, 2, 3], &[], 30), &states);
        assert_eq!(ids(&a), ["top", "bundle", "leaf"]);
        let actions: Vec<_> = a.new.iter().map(|o| o.action).collect();
        assert_eq!(actions, [Action::Evaluate, Action::Install, Action::Bundle]);
        // Pages: a page of one is truncated, the next call gets the next.
        let a = i.answer(&ask(&[1, 2, 3], &[], 1), &states);
        assert_eq!((ids(&a), a.truncated), (vec!["top"], true));
        let a = i.answer(&ask(&[1, 2, 3], &[4], 1), &states);
        assert_eq!((ids(&a), a.truncated), (vec!["bundle"], true));
        // Cached approved updates come back as changed; unknown and
        // declined cached ids are out of scope.
        let a = i.answer(&ask(&[1, 2, 3], &[4, 5, 6, 7, 99], 30), &states);
        assert!(ids(&a).is_empty());
        let changed: Vec<_> = a.changed.iter().map(|o| o.revision.rid).collect();
        assert_eq!(changed, [5, 6]);
        assert_eq!(a.out_of_scope, [7, 99]);
    }

    #[test]
    fn the_driver_pass_offers_approved_drivers_for_the_computers_devices() {
        let driver = |rid, id: &str, hwids: &[&str]| {
            let mut r = rev(rid, id, Kind::Driver, &[(1, "product")], &[]);
            r.hardware_ids = hwids.iter().map(|h| (*h).to_owned()).collect();
            r
        };
        let i = ScanIndex::new(
            vec![
                rev(1, "product", Kind::Category, &[], &[]),
                driver(2, "nic", &["pci\\ven_8086&dev_10d3"]),
                driver(3, "gpu", &["pci\\ven_10de&dev_2204"]),
                driver(4, "nic-unapproved", &["pci\\ven_8086&dev_10d3"]),
                driver(5, "compatible", &["pci\\ven_8086&cc_0200"]),
                rev(6, "software", Kind::Software, &[(1, "product")], &[]),
            ],
            6,
        );
        let states = HashMap::from([
            ("nic".to_owned(), UpdateState::Approved),
            ("gpu".to_owned(), UpdateState::Approved),
            ("compatible".to_owned(), UpdateState::Approved),
            ("software".to_owned(), UpdateState::Approved),
        ]);
        let devices = [
            "pci\\ven_8086&dev_10d3&subsys_11001af4".to_owned(),
            "pci\\ven_8086&dev_10d3".to_owned(),
            "pci\\ven_8086&cc_0200".to_owned(),
        ];
        let mut a = ask(&[1], &[], 30);
        a.drivers = true;
        a.hardware_ids = &devices;
        let answer = i.answer(&a, &states);
        // By hardware id and by compatible id; not another device's driver,
        // not an unapproved one, no software.
        assert_eq!(ids(&answer), ["nic", "compatible"]);
        assert!(answer.new.iter().all(|o| o.action == Action::Install));
        // No devices, or the product not reported installed: nothing.
        a.hardware_ids = &[];
        assert!(i.answer(&a, &states).new.is_empty());
        a.hardware_ids = &devices;
        a.installed_non_leaf = &[];
        assert!(i.answer(&a, &states).new.is_empty());
        // The software pass never offers a driver.
        let soft = i.answer(&ask(&[1], &[], 30), &states);
        assert_eq!(ids(&soft), ["software"]);
        assert!(i.has_approved_drivers(&states));
        assert!(!i.has_approved_drivers(&HashMap::new()));
    }

    #[test]
    fn an_empty_store_offers_nothing() {
        let empty = ScanIndex::new(Vec::new(), 0);
        let answer = empty.answer(&ask(&[], &[], 30), &HashMap::new());
        assert!(answer.new.is_empty() && !answer.truncated);
    }
}
