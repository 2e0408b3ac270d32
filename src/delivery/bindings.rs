//! An administrator's digest bindings (`/api/v1/delivery/digests`): a DO
//! object key bound to the SHA-256 its bytes must have. A node holds its
//! own (`local`: made on it) and, on a follower, a copy of its primary's
//! list (`primary`: replaced whole at each pull, so a binding removed
//! there goes here too). For the same key the local binding wins: a
//! node's administrator has the last word on what that node stores.
//!
//! The list's wire form is what `GET` answers and what a follower reads
//! from its primary: a JSON array of `{"path", "sha256", "source"}`, one
//! per key (the binding that applies), read within [`MAX_LIST_BYTES`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::path::{self, ObjectKey, PathError};
use crate::digest::Sha256Digest;

/// The longest list a follower reads from its primary: about 25,000
/// bindings.
pub const MAX_LIST_BYTES: usize = 4 << 20;

/// Where a binding held by this node came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Made on this node (`PUT /api/v1/delivery/digests`).
    Local,
    /// The primary's list, as of the last pull (a follower's).
    Primary,
}

impl Source {
    /// As stored in the `source` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Primary => "primary",
        }
    }

    /// The column's value; `None` for anything else.
    pub fn from_stored(s: &str) -> Option<Source> {
        match s {
            "local" => Some(Source::Local),
            "primary" => Some(Source::Primary),
            _ => None,
        }
    }
}

/// One binding as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// `/filestreamingservice/files/<guid>[/<name>]`.
    pub path: String,
    pub sha256: Sha256Digest,
    pub source: Source,
}

/// Why a list of bindings (a primary's answer) was refused.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("a list of digest bindings is at most {MAX_LIST_BYTES} bytes")]
    TooLong,
    #[error("not a list of digest bindings: {0}")]
    Json(#[from] serde_json::Error),
    #[error("a binding of {path:?}: {source}")]
    Path {
        path: String,
        #[source]
        source: PathError,
    },
    #[error("{0} is bound twice in the list")]
    Twice(String),
}

/// One entry as read: where it came from is the reader's to say.
/// Unknown fields are ignored (a later release may add some).
#[derive(Deserialize)]
struct Listed {
    path: String,
    sha256: Sha256Digest,
}

/// Reads a list as `GET` answers it: each path a DO object path, each key
/// once. Refuses more than [`MAX_LIST_BYTES`].
pub fn parse_list(body: &[u8]) -> Result<HashMap<ObjectKey, Sha256Digest>, ListError> {
    if body.len() > MAX_LIST_BYTES {
        return Err(ListError::TooLong);
    }
    let listed: Vec<Listed> = serde_json::from_slice(body)?;
    let mut keys = HashMap::with_capacity(listed.len());
    for Listed { path, sha256 } in listed {
        let key = match path::parse(&path) {
            Ok(key) => key,
            Err(source) => return Err(ListError::Path { path, source }),
        };
        if keys.insert(key, sha256).is_some() {
            return Err(ListError::Twice(path));
        }
    }
    Ok(keys)
}

/// The bindings in memory: this node's own and its primary's, apart.
#[derive(Debug, Default)]
pub(super) struct Bindings {
    pub local: HashMap<ObjectKey, Sha256Digest>,
    pub primary: HashMap<ObjectKey, Sha256Digest>,
}

impl Bindings {
    /// The digest `key` is bound to on this node: the local binding wins.
    pub fn get(&self, key: &ObjectKey) -> Option<&Sha256Digest> {
        self.local.get(key).or_else(|| self.primary.get(key))
    }

    pub fn contains(&self, key: &ObjectKey) -> bool {
        self.get(key).is_some()
    }

    /// Keys bound, each counted once.
    pub fn len(&self) -> usize {
        self.local.len() + self.primary_only().count()
    }

    /// The bindings that apply, one per key, by path.
    pub fn list(&self) -> Vec<Binding> {
        let listed = |(key, sha256): (&ObjectKey, &Sha256Digest), source| Binding {
            path: key.path(),
            sha256: *sha256,
            source,
        };
        let mut list: Vec<Binding> = self
            .local
            .iter()
            .map(|b| listed(b, Source::Local))
            .chain(self.primary_only().map(|b| listed(b, Source::Primary)))
            .collect();
        list.sort_by(|a, b| a.path.cmp(&b.path));
        list
    }

    /// The primary's bindings no local one overrides.
    fn primary_only(&self) -> impl Iterator<Item = (&ObjectKey, &Sha256Digest)> {
        self.primary
            .iter()
            .filter(|(k, _)| !self.local.contains_key(*k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/filestreamingservice/files/2f7c5a3e-1b2d-4c1e-9f00-0123456789ab";

    #[test]
    fn a_list_reads_back_as_written_and_ignores_the_source() {
        let sha256 = "ab".repeat(32);
        // The GUID in any case: the key is its lowercase.
        let upper = "/filestreamingservice/files/2F7C5A3E-1B2D-4C1E-9F00-0123456789AB";
        let body = format!(
            r#"[{{"path": "{upper}", "sha256": "{sha256}", "source": "local", "later": 1}}]"#
        );
        let keys = parse_list(body.as_bytes()).unwrap();
        let key = path::parse(A).unwrap();
        assert_eq!(keys.get(&key), Some(&sha256.parse().unwrap()));
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn a_bad_list_is_refused_whole() {
        let sha = "ab".repeat(32);
        let refused = |body: String| parse_list(body.as_bytes()).unwrap_err().to_string();
        let twice = format!(
            r#"[{{"path": "{A}", "sha256": "{sha}"}}, {{"path": "{A}", "sha256": "{sha}"}}]"#
        );
        assert!(refused(twice).contains("bound twice"));
        let path = format!(r#"[{{"path": "/Content/0A/x.cab", "sha256": "{sha}"}}]"#);
        assert!(refused(path).contains("/Content/0A/x.cab"));
        let digest = format!(r#"[{{"path": "{A}", "sha256": "abc"}}]"#);
        assert!(refused(digest).starts_with("not a list"));
        assert!(refused(r#"{"path": "x"}"#.into()).starts_with("not a list"));
        let long = format!("[{}]", " ".repeat(MAX_LIST_BYTES));
        assert!(matches!(
            parse_list(long.as_bytes()),
            Err(ListError::TooLong)
        ));
    }
}
