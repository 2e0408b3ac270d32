//! Which revisions a `GetRevisionIdList` lists: pure functions over the
//! stored revisions and their links, unit-tested.
//!
//! An anchor is the largest local revision id (`rid`) the downstream has
//! seen. `rid`s only grow, so "changed since the anchor" is `rid > anchor`.
//! An update matches the filter when one of its revisions names a chosen
//! product and a chosen classification among its prerequisites (empty
//! lists choose all); the updates it bundles and the software it requires
//! come with it, so a downstream can install what it lists. A product or
//! classification asked without `Delta` (newly chosen downstream) lists its
//! updates whole; with `Delta`, only what changed.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::metadata::store::GraphRevision;
use crate::metadata::Kind;
use crate::wsus::sync::messages::{Filter, RevisionKey};

/// Categories and detectoids newer than `since` (`GetConfig` true).
pub fn categories(graph: &[GraphRevision], since: i64) -> Vec<RevisionKey> {
    graph
        .iter()
        .filter(|r| matches!(r.kind, Kind::Category | Kind::Detectoid) && r.rid > since)
        .map(|r| (r.update_id.clone(), r.revision))
        .collect()
}

/// The software and driver revisions the filter selects, newer than
/// `since` unless asked whole, in `rid` order.
pub fn updates(graph: &[GraphRevision], filter: &Filter, since: i64) -> Vec<RevisionKey> {
    let products: HashMap<&str, bool> = filter
        .categories
        .iter()
        .map(|c| (c.id.as_str(), c.delta))
        .collect();
    let classes: HashMap<&str, bool> = filter
        .classifications
        .iter()
        .map(|c| (c.id.as_str(), c.delta))
        .collect();
    let is_update = |r: &GraphRevision| r.kind.is_update();
    let mut by_id: HashMap<&str, Vec<&GraphRevision>> = HashMap::new();
    for r in graph.iter().filter(|r| is_update(r)) {
        by_id.entry(r.update_id.as_str()).or_default().push(r);
    }
    // update id -> asked whole
    let mut chosen: HashMap<&str, bool> = HashMap::new();
    for (id, revs) in &by_id {
        let mut hit = None;
        for r in revs {
            let in_set = |set: &HashMap<&str, bool>| -> Option<bool> {
                if set.is_empty() {
                    return Some(true);
                }
                let deltas: Vec<bool> = r
                    .prerequisites
                    .iter()
                    .filter_map(|p| set.get(p.as_str()).copied())
                    .collect();
                (!deltas.is_empty()).then(|| deltas.iter().all(|d| *d))
            };
            if let (Some(p), Some(c)) = (in_set(&products), in_set(&classes)) {
                let whole =
                    since == 0 || (!products.is_empty() && !p) || (!classes.is_empty() && !c);
                hit = Some(hit.unwrap_or(false) || whole);
            }
        }
        if let Some(whole) = hit {
            chosen.insert(*id, whole);
        }
    }
    // What the chosen bundle or require comes with them.
    let mut queue: VecDeque<&str> = chosen.keys().copied().collect();
    while let Some(id) = queue.pop_front() {
        let whole = chosen[id];
        let targets: HashSet<&str> = by_id[id]
            .iter()
            .flat_map(|r| r.bundles.iter().chain(&r.prerequisites))
            .map(String::as_str)
            .filter(|t| by_id.contains_key(t))
            .collect();
        for t in targets {
            match chosen.get(t) {
                Some(w) if *w || !whole => {}
                _ => {
                    chosen.insert(t, whole);
                    queue.push_back(t);
                }
            }
        }
    }
    let mut out: Vec<&GraphRevision> = chosen
        .iter()
        .flat_map(|(id, whole)| {
            by_id[id]
                .iter()
                .filter(move |r| *whole || r.rid > since)
                .copied()
        })
        .collect();
    out.sort_by_key(|r| r.rid);
    out.into_iter()
        .map(|r| (r.update_id.clone(), r.revision))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wsus::sync::messages::IdAndDelta;

    fn rev(rid: i64, id: &str, kind: Kind, prereqs: &[&str], bundles: &[&str]) -> GraphRevision {
        GraphRevision {
            rid,
            update_id: id.into(),
            revision: rid as u32,
            kind,
            prerequisites: prereqs.iter().map(|s| s.to_string()).collect(),
            bundles: bundles.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn graph() -> Vec<GraphRevision> {
        vec![
            rev(1, "product", Kind::Category, &[], &[]),
            rev(2, "security", Kind::Category, &[], &[]),
            rev(3, "detectoid", Kind::Detectoid, &[], &[]),
            rev(4, "leaf", Kind::Software, &["detectoid"], &[]),
            rev(
                5,
                "bundle",
                Kind::Software,
                &["product", "security", "base"],
                &["leaf"],
            ),
            rev(6, "base", Kind::Software, &[], &[]),
            rev(7, "other", Kind::Software, &["product", "drivers"], &[]),
            rev(
                8,
                "bundle",
                Kind::Software,
                &["product", "security", "base"],
                &["leaf"],
            ),
        ]
    }

    fn filter(delta: bool) -> Filter {
        let one = |id: &str| {
            vec![IdAndDelta {
                id: id.into(),
                delta,
            }]
        };
        Filter {
            categories: one("product"),
            classifications: one("security"),
            ..Filter::default()
        }
    }

    fn ids(keys: Vec<RevisionKey>) -> Vec<String> {
        keys.into_iter()
            .map(|(id, rev)| format!("{id}/{rev}"))
            .collect()
    }

    #[test]
    fn an_update_comes_with_its_leaves_and_prerequisites_and_others_stay_out() {
        let got = ids(updates(&graph(), &filter(false), 0));
        assert_eq!(got, ["leaf/4", "bundle/5", "base/6", "bundle/8"]);
        assert_eq!(
            ids(categories(&graph(), 0)),
            ["product/1", "security/2", "detectoid/3"]
        );
    }

    #[test]
    fn with_delta_only_revisions_after_the_anchor_come_and_without_it_all() {
        assert_eq!(ids(updates(&graph(), &filter(true), 7)), ["bundle/8"]);
        assert!(updates(&graph(), &filter(true), 8).is_empty());
        assert_eq!(updates(&graph(), &filter(false), 8).len(), 4);
        assert!(categories(&graph(), 3).is_empty());
    }
}
