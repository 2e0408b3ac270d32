//! Delivery Optimization content paths → the key of the object they name.
//!
//! `/filestreamingservice/files/<guid>[/<name>]`: the key is the GUID in
//! lowercase plus the tail as written (`/pieceshash`, `/Microsoft.png`,
//! Edge's `/<name>.msi` are objects of their own). The query (DO's
//! short-lived `P1`..`P4` token, `cacheHostOrigin`) never takes part: the
//! same GUID is fetched with a different token every few minutes.

use std::fmt;

/// Longest path looked at: a GUID path with a file name is under 200 bytes.
pub const MAX_PATH: usize = 512;
/// Longest tail (one file name).
const MAX_TAIL: usize = 255;
/// The fixed part, compared without regard to case (as the CDN does).
const PREFIX: &str = "/filestreamingservice/files/";
const GUID_LEN: usize = 36;

/// The object a DO content path names: `<lowercase guid>[/<name>]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The GUID part, lowercase.
    pub fn guid(&self) -> &str {
        &self.0[..GUID_LEN]
    }

    /// The name after the GUID (`pieceshash`, `Microsoft.png`), if any.
    pub fn name(&self) -> Option<&str> {
        self.0.get(GUID_LEN + 1..)
    }

    /// The content path that names this object (the GUID in lowercase).
    pub fn path(&self) -> String {
        format!("{PREFIX}{}", self.0)
    }

    /// Parses a key as [`ObjectKey::as_str`] wrote it (from the index).
    pub fn from_stored(s: &str) -> Option<ObjectKey> {
        parse(&format!("{PREFIX}{s}")).ok()
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a path names no DO object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not under `/filestreamingservice/` at all: another route's.
    #[error("not a Delivery Optimization path")]
    NotDelivery,
    /// Under it, but not a GUID object path (400).
    #[error("malformed Delivery Optimization path: {0}")]
    Malformed(&'static str),
    /// Longer than any DO path (414).
    #[error("Delivery Optimization path longer than {MAX_PATH} bytes")]
    TooLong,
}

/// Whether `path` (without query) is under `/filestreamingservice/`: the
/// DO wing answers it, whatever it holds.
pub fn is_delivery(path: &str) -> bool {
    let first = path
        .strip_prefix('/')
        .and_then(|p| p.split('/').next())
        .unwrap_or("");
    first.eq_ignore_ascii_case("filestreamingservice")
}

/// Parses a request path (without query) into an [`ObjectKey`].
pub fn parse(path: &str) -> Result<ObjectKey, PathError> {
    if !is_delivery(path) {
        return Err(PathError::NotDelivery);
    }
    if path.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    let rest = path
        .get(..PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(PREFIX))
        .map(|_| &path[PREFIX.len()..])
        .ok_or(PathError::Malformed(
            "expected /filestreamingservice/files/<guid>",
        ))?;
    let (guid, tail) = match rest.split_once('/') {
        Some((guid, tail)) => (guid, Some(tail)),
        None => (rest, None),
    };
    if !is_guid(guid) {
        return Err(PathError::Malformed(
            "expected a GUID (8-4-4-4-12 hex digits)",
        ));
    }
    let mut key = String::with_capacity(rest.len());
    key.push_str(guid);
    key.make_ascii_lowercase();
    if let Some(name) = tail {
        check_name(name)?;
        key.push('/');
        key.push_str(name);
    }
    Ok(ObjectKey(key))
}

/// The object an absolute `http(s)://` URL names (a catalog file's or a
/// synced update file's location), if it is a DO content URL.
pub fn key_of_url(url: &str) -> Option<ObjectKey> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let path = &rest[rest.find('/')?..];
    let path = path.split(['?', '#']).next().unwrap_or(path);
    parse(path).ok()
}

fn is_guid(s: &str) -> bool {
    s.len() == GUID_LEN
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// One file name: no further segment, no dot segments, the same safe
/// bytes as every other content path.
fn check_name(name: &str) -> Result<(), PathError> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(PathError::Malformed("empty, '.' or '..' name"));
    }
    if name.len() > MAX_TAIL {
        return Err(PathError::Malformed("name longer than 255 bytes"));
    }
    if !name.bytes().all(is_name_byte) {
        return Err(PathError::Malformed("unexpected character in name"));
    }
    Ok(())
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "7bc846e0-af9c-49be-a03d-bb04428c9bb5";

    #[test]
    fn the_key_is_the_lowercase_guid_and_the_name() {
        let upper = GUID.to_uppercase();
        let key = parse(&format!("/filestreamingservice/files/{upper}")).unwrap();
        assert_eq!(key.as_str(), GUID);
        assert_eq!(key.guid(), GUID);
        assert_eq!(key.name(), None);
        let key = parse(&format!("/FileStreamingService/Files/{GUID}/Microsoft.png")).unwrap();
        assert_eq!(key.as_str(), format!("{GUID}/Microsoft.png"));
        assert_eq!(key.name(), Some("Microsoft.png"));
        let pieces = parse(&format!("/filestreamingservice/files/{GUID}/pieceshash")).unwrap();
        assert_ne!(
            pieces,
            parse(&format!("/filestreamingservice/files/{GUID}")).unwrap()
        );
        assert_eq!(ObjectKey::from_stored(pieces.as_str()), Some(pieces));
    }

    #[test]
    fn other_routes_are_not_ours() {
        assert_eq!(parse("/Content/0A/x.cab"), Err(PathError::NotDelivery));
        assert_eq!(parse("/"), Err(PathError::NotDelivery));
        assert!(is_delivery("/filestreamingservice"));
        assert!(!is_delivery("/filestreamingservicex/files"));
    }

    #[test]
    fn malformed_paths_never_parse() {
        for p in [
            "/filestreamingservice",
            "/filestreamingservice/files/",
            "/filestreamingservice/other/7bc846e0-af9c-49be-a03d-bb04428c9bb5",
            "/filestreamingservice/files/7bc846e0af9c49bea03dbb04428c9bb5",
            "/filestreamingservice/files/7bc846e0-af9c-49be-a03d-bb04428c9bbg",
            "/filestreamingservice/files/7bc846e0-af9c-49be-a03d-bb04428c9bb5x",
            "/filestreamingservice/files/7bc846e0-af9c-49be-a03d-bb04428c9bb5/",
            "/filestreamingservice/files/7bc846e0-af9c-49be-a03d-bb04428c9bb5/..",
            "/filestreamingservice/files/7bc846e0-af9c-49be-a03d-bb04428c9bb5/a/b",
            "/filestreamingservice/files/7bc846e0-af9c-49be-a03d-bb04428c9bb5/%2e%2e",
            "/filestreamingservice/files/7bc846e0-af9c-49be-a03d-bb04428c9bb5/a b",
        ] {
            assert!(matches!(parse(p), Err(PathError::Malformed(_))), "{p}");
        }
        let long = format!("/filestreamingservice/files/{GUID}/{}", "a".repeat(600));
        assert_eq!(parse(&long), Err(PathError::TooLong));
    }

    #[test]
    fn urls_of_do_content_name_their_object() {
        let key = key_of_url(
            "http://tlu.dl.delivery.mp.microsoft.com/filestreamingservice/files/2F7C5A3E-1b2d-4c1e-9f00-0123456789ab?P1=1&P2=2",
        );
        assert_eq!(
            key.unwrap().as_str(),
            "2f7c5a3e-1b2d-4c1e-9f00-0123456789ab"
        );
        let named = key_of_url(
            "https://x.delivery.mp.microsoft.com/filestreamingservice/files/2f7c5a3e-1b2d-4c1e-9f00-0123456789ab/pieceshash#f",
        );
        assert_eq!(named.unwrap().name(), Some("pieceshash"));
        for not in [
            "http://download.windowsupdate.com/c/msdownload/update/x.cab",
            "/filestreamingservice/files/2f7c5a3e-1b2d-4c1e-9f00-0123456789ab",
            "ftp://h/filestreamingservice/files/2f7c5a3e-1b2d-4c1e-9f00-0123456789ab",
            "http://host-without-path",
        ] {
            assert_eq!(key_of_url(not), None, "{not}");
        }
    }
}
