//! The fragments of the revisions clients ask for, split once from the
//! stored document and kept escaped, ready for the SOAP body.
//!
//! A scan storm asks every client for the same few pages: without this,
//! each answer would read, inflate, parse and escape the same documents
//! again (the largest are megabytes of applicability rules). A revision's
//! document never changes (`rid` names one revision), so entries are never
//! stale; the cache is bounded by bytes and forgets the least used.

use std::sync::Arc;

use super::fragments::{self, Fragments};
use super::ClientError;
use crate::metadata::MetaStore;

/// Bytes of escaped fragments kept (a page of 30 typical updates is
/// ~130 KB unescaped: this holds thousands of revisions).
pub const CAPACITY: u64 = 64 << 20;

pub struct FragmentCache {
    cache: moka::sync::Cache<i64, Arc<Fragments>>,
}

impl FragmentCache {
    pub fn new(capacity: u64) -> FragmentCache {
        FragmentCache {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .weigher(|_, f: &Arc<Fragments>| weight(f))
                .build(),
        }
    }

    /// The escaped fragments of revision `rid`; `None` when the store has
    /// no such revision.
    pub fn get(&self, meta: &MetaStore, rid: i64) -> Result<Option<Arc<Fragments>>, ClientError> {
        if let Some(f) = self.cache.get(&rid) {
            return Ok(Some(f));
        }
        let Some(doc) = meta.document_by_rid(rid)? else {
            return Ok(None);
        };
        let f = Arc::new(escaped(fragments::split(&doc).map_err(|e| {
            ClientError::Parameter {
                name: "revisionIDs",
                why: e.to_string(),
            }
        })?));
        self.cache.insert(rid, f.clone());
        Ok(Some(f))
    }
}

/// The same fragments, each escaped as the text of an element.
fn escaped(f: Fragments) -> Fragments {
    let esc = |s: &str| quick_xml::escape::escape(s).into_owned();
    Fragments {
        core: esc(&f.core),
        extended: esc(&f.extended),
        localized: f
            .localized
            .iter()
            .map(|(lang, l)| (lang.clone(), esc(l)))
            .collect(),
    }
}

fn weight(f: &Fragments) -> u32 {
    let bytes = f.core.len()
        + f.extended.len()
        + f.localized
            .iter()
            .map(|(a, b)| a.len() + b.len())
            .sum::<usize>();
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_are_split_once_and_kept_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open(dir.path()).unwrap();
        let xml = r#"<upd:Update xmlns:upd="u"><upd:UpdateIdentity UpdateID="a" RevisionNumber="1"/>
            <upd:Properties UpdateType="Software"/><upd:LocalizedPropertiesCollection><upd:LocalizedProperties>
            <upd:Language>en</upd:Language><upd:Title>A &amp; B</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection>
            </upd:Update>"#;
        let info = crate::metadata::update_xml::parse(xml.as_bytes(), "en").unwrap();
        meta.write_batch(
            &[crate::metadata::store::Incoming {
                info,
                doc: xml.as_bytes().to_vec(),
            }],
            &[],
        )
        .unwrap();
        let rid = meta.rid("a", 1).unwrap().unwrap();
        let cache = FragmentCache::new(1 << 20);
        let f = cache.get(&meta, rid).unwrap().unwrap();
        assert!(f.core.starts_with("&lt;UpdateIdentity"), "{}", f.core);
        let l = f.localized_for(&["en".into()]).unwrap();
        assert!(l.contains("A &amp;amp; B"), "{l}");
        // The second read is the same value, not a new split.
        assert!(Arc::ptr_eq(&f, &cache.get(&meta, rid).unwrap().unwrap()));
        assert!(cache.get(&meta, rid + 100).unwrap().is_none());
    }
}
