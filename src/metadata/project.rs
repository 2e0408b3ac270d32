//! The catalog's view of synced metadata: each new update (a bundle with
//! its leaves' files) becomes a catalog update through the same import an
//! administrator's JSON catalog takes, so automatic approval rules run on
//! it, its files are served, fetched and verified as any other, and the
//! background plan (at-sync) picks them up.
//!
//! The catalog's import is strict (one bad field fails it), so every field
//! is made valid here first: a title, a plain file name, a KB of digits,
//! an absolute URL.

use crate::catalog::json::{CatalogDoc, FileDoc, UpdateDoc};
use crate::catalog::{Catalog, CatalogError, ImportReport};

use super::store::{MetaError, MetaStore, Projected, RevisionFile};

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("writing synced updates into the catalog: {0}")]
    Catalog(#[from] CatalogError),
}

/// Writes every update not yet in the catalog into it, then marks them;
/// `upstream` resolves relative `UssUrl`s. Returns the catalog's report.
pub fn project(
    store: &MetaStore,
    catalog: &Catalog,
    upstream: &str,
) -> Result<ImportReport, ProjectError> {
    let (updates, rids) = store.unprojected()?;
    let mut report = ImportReport::default();
    if !updates.is_empty() {
        let doc = CatalogDoc {
            updates: updates.iter().map(|u| to_doc(u, upstream)).collect(),
        };
        let json = serde_json::to_vec(&doc).expect("catalog documents serialise");
        report = catalog.import_json(&json[..], false)?;
        catalog.mark_superseded(&store.superseded_ids()?)?;
    }
    store.mark_projected(&rids)?;
    Ok(report)
}

fn to_doc(u: &Projected, upstream: &str) -> UpdateDoc {
    let title = if u.title.trim().is_empty() {
        u.update_id.clone()
    } else {
        u.title.clone()
    };
    let kb =
        u.kb.as_deref()
            .map(|k| k.trim().trim_start_matches("KB").to_owned())
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_digit()));
    // CreationDate is `YYYY-MM-DDThh:mm:ss…`; the catalog keeps the day.
    let release_date = u
        .created
        .as_deref()
        .and_then(|c| c.get(..10))
        .filter(|d| d.as_bytes().get(4) == Some(&b'-'))
        .map(str::to_owned);
    UpdateDoc {
        id: u.update_id.clone(),
        revision: u.revision,
        title,
        description: u.description.clone(),
        kb,
        msrc: None,
        classification: u.classification.clone(),
        products: u.products.clone(),
        release_date,
        state: None,
        superseded: u.superseded,
        files: u
            .files
            .iter()
            .filter_map(|f| to_file(f, upstream))
            .collect(),
        approvals: Vec::new(),
    }
}

/// A file the catalog can fetch: it needs an absolute URL.
fn to_file(f: &RevisionFile, upstream: &str) -> Option<FileDoc> {
    let url = location(f, upstream)?;
    let plain = !f.name.is_empty() && f.name.len() <= 255 && !f.name.contains(['/', '\\', '\0']);
    let name = if plain {
        f.name.clone()
    } else {
        url.rsplit('/').next().unwrap_or_default().to_owned()
    };
    let name = if name.is_empty() {
        f.sha1.to_hex()
    } else {
        name
    };
    Some(FileDoc {
        name,
        sha1: f.sha1.to_hex(),
        sha256: f.sha256.map(|d| d.to_hex()),
        size: f.size,
        url,
    })
}

/// The Microsoft Update URL when the upstream gave one, else the
/// upstream's own copy (`UssUrl`, relative to it).
fn location(f: &RevisionFile, upstream: &str) -> Option<String> {
    let absolute = |u: &str| u.starts_with("http://") || u.starts_with("https://");
    if absolute(&f.mu_url) {
        return Some(f.mu_url.clone());
    }
    if f.uss_url.is_empty() {
        return None;
    }
    if absolute(&f.uss_url) {
        return Some(f.uss_url.clone());
    }
    Some(format!(
        "{}/{}",
        upstream.trim_end_matches('/'),
        f.uss_url.trim_start_matches('/')
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Sha1Digest;

    #[test]
    fn relative_uss_urls_resolve_against_the_upstream() {
        let f = RevisionFile {
            name: "a/b.cab".into(),
            sha1: Sha1Digest([7; 20]),
            sha256: None,
            size: None,
            mu_url: String::new(),
            uss_url: "Content/07/0707.cab".into(),
        };
        let doc = to_file(&f, "http://hq:8530/").unwrap();
        assert_eq!(doc.url, "http://hq:8530/Content/07/0707.cab");
        assert_eq!(doc.name, "0707.cab");
        let none = RevisionFile {
            uss_url: String::new(),
            ..f
        };
        assert!(to_file(&none, "http://hq").is_none());
    }
}
