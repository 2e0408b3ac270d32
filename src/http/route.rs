//! Content URLs → the digest of the file they name.
//!
//! This is the only place a client's path is interpreted, and its output is
//! a digest, never a path: nothing a client sends reaches the filesystem.

use crate::digest::{Sha1Digest, Sha256Digest};

/// The file a content URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKey {
    Sha1(Sha1Digest),
    Sha256(Sha256Digest),
}

/// Why a path names no file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not one of the content URL shapes (404).
    #[error("no such content path")]
    NoRoute,
    /// The right shape with a malformed part (400).
    #[error("malformed content path: {0}")]
    Malformed(&'static str),
    /// Longer than any content path (414, which RFC 9112 requires for a
    /// target the server will not parse).
    #[error("content path longer than {MAX_PATH} bytes")]
    TooLong,
}

/// Longest path we look at; real ones are under 200 bytes.
const MAX_PATH: usize = 1024;

/// Parses a request path (without query) into a [`FileKey`].
///
/// Shapes, case-insensitive in their fixed parts:
/// - `/Content/{XX}/{SHA1}.{ext}`: WSUS; `XX` is the SHA-1's last byte,
///   with or without a leading zero; a mismatch is 404, as a real WSUS gives.
/// - `/microsoftupdate/content/{SHA1 or SHA256}`
/// - `/blobs/sha256/{SHA256}`
/// - `/{mu/path}/{name}_{SHA1}.{ext}`: Microsoft Update download paths.
/// - `/filestreamingservice/...` (Delivery Optimization's own) is never ours.
///
/// The query is never looked at: a Delivery Optimization cache host's
/// `?cacheHostOrigin=...` (or anything else) cannot change the file.
pub fn parse(path: &str) -> Result<FileKey, RouteError> {
    if path.len() > MAX_PATH {
        return Err(RouteError::TooLong);
    }
    let rest = path.strip_prefix('/').ok_or(RouteError::NoRoute)?;
    // Checked without collecting the segments: a hit allocates nothing.
    let mut three = [""; 3];
    let mut count = 0;
    for segment in rest.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(RouteError::Malformed("empty, '.' or '..' path segment"));
        }
        if !segment.bytes().all(is_path_byte) {
            return Err(RouteError::Malformed("unexpected character in path"));
        }
        if let Some(slot) = three.get_mut(count) {
            *slot = segment;
        }
        count += 1;
    }
    let last = rest.rsplit('/').next().unwrap_or(rest);
    // Delivery Optimization's own content URLs name no digest we can
    // check: a 404, from which DO falls back to its other sources.
    if three[0].eq_ignore_ascii_case("filestreamingservice") {
        return Err(RouteError::NoRoute);
    }
    if count == 3 {
        match three {
            [c, folder, file] if c.eq_ignore_ascii_case("content") => {
                return wsus_content(folder, file)
            }
            [m, c, digest]
                if m.eq_ignore_ascii_case("microsoftupdate")
                    && c.eq_ignore_ascii_case("content") =>
            {
                return by_either_digest(digest)
            }
            [b, s, digest]
                if b.eq_ignore_ascii_case("blobs") && s.eq_ignore_ascii_case("sha256") =>
            {
                return digest
                    .parse()
                    .map(FileKey::Sha256)
                    .map_err(|_| RouteError::Malformed("expected 64 hex digits"))
            }
            _ => {}
        }
    }
    mu_file_name(last)
}

/// The extension of the last path segment (as written), for `Content-Type`.
pub fn extension(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?;
    let (_, ext) = name.rsplit_once('.')?;
    (!ext.is_empty() && ext.len() <= 8).then_some(ext)
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'~')
}

fn wsus_content(folder: &str, file: &str) -> Result<FileKey, RouteError> {
    let stem = file.split_once('.').map_or(file, |(stem, _)| stem);
    let sha1: Sha1Digest = stem
        .parse()
        .map_err(|_| RouteError::Malformed("expected {SHA1}.{ext} with 40 hex digits"))?;
    if folder.len() > 2 {
        return Err(RouteError::Malformed("folder is one byte in hex"));
    }
    let folder =
        u8::from_str_radix(folder, 16).map_err(|_| RouteError::Malformed("folder is not hex"))?;
    if folder != sha1.last_byte() {
        return Err(RouteError::NoRoute);
    }
    Ok(FileKey::Sha1(sha1))
}

fn by_either_digest(s: &str) -> Result<FileKey, RouteError> {
    match s.len() {
        40 => s.parse().map(FileKey::Sha1).ok(),
        64 => s.parse().map(FileKey::Sha256).ok(),
        _ => None,
    }
    .ok_or(RouteError::Malformed("expected 40 or 64 hex digits"))
}

/// `windows10.0-kb5034122-x64_<sha1>.msu` → the SHA-1.
fn mu_file_name(file: &str) -> Result<FileKey, RouteError> {
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    let (_, digest) = stem.rsplit_once('_').ok_or(RouteError::NoRoute)?;
    if digest.len() != Sha1Digest::HEX_LEN {
        return Err(RouteError::NoRoute);
    }
    digest
        .parse()
        .map(FileKey::Sha1)
        .map_err(|_| RouteError::Malformed("file name digest is not hex"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA1: &str = "0011223344556677889900aabbccddeeff00110a";

    fn sha1() -> FileKey {
        FileKey::Sha1(SHA1.parse().unwrap())
    }

    #[test]
    fn delivery_optimization_file_urls_are_not_ours() {
        for path in [
            "/filestreamingservice/files/2f7c5a3e-1b2d-4c1e-9f00-0123456789ab",
            &format!("/filestreamingservice/files/x_{SHA1}.cab"),
            "/FileStreamingService/files/abc",
        ] {
            assert_eq!(parse(path), Err(RouteError::NoRoute), "{path}");
        }
    }

    #[test]
    fn wsus_content_paths_accept_either_folder_spelling() {
        assert_eq!(parse(&format!("/Content/0A/{SHA1}.cab")), Ok(sha1()));
        assert_eq!(
            parse(&format!("/content/a/{}.CAB", SHA1.to_uppercase())),
            Ok(sha1())
        );
        assert_eq!(
            parse(&format!("/Content/0B/{SHA1}.cab")),
            Err(RouteError::NoRoute)
        );
        assert!(matches!(
            parse(&format!("/Content/zz/{SHA1}.cab")),
            Err(RouteError::Malformed(_))
        ));
    }

    #[test]
    fn microsoft_update_paths_name_the_file_by_its_suffix() {
        let p = format!(
            "/c/msdownload/update/software/secu/2024/01/windows10.0-kb5034122-x64_{SHA1}.msu"
        );
        assert_eq!(parse(&p), Ok(sha1()));
        assert_eq!(parse("/c/msdownload/setup.exe"), Err(RouteError::NoRoute));
    }

    #[test]
    fn digest_routes() {
        let sha256 = "ab".repeat(32);
        assert_eq!(
            parse(&format!("/microsoftupdate/content/{SHA1}")),
            Ok(sha1())
        );
        assert_eq!(
            parse(&format!("/blobs/sha256/{sha256}")),
            Ok(FileKey::Sha256(sha256.parse().unwrap()))
        );
        assert!(parse(&format!("/blobs/sha256/{SHA1}")).is_err());
    }

    #[test]
    fn traversal_and_junk_never_parse() {
        for p in [
            "/Content/../../etc/passwd",
            "/Content/0A/../../x_0011223344556677889900aabbccddeeff00110a.cab",
            "/Content//0011223344556677889900aabbccddeeff00110a.cab",
            "/Content/0A/%2e%2e",
            "/Content/0A/0011223344556677889900aabbccddeeff00110.cab",
            "/Content/0A/g011223344556677889900aabbccddeeff00110a.cab",
            "relative",
            "/",
        ] {
            assert!(parse(p).is_err(), "{p} parsed");
        }
        assert_eq!(parse(&"/a".repeat(600)), Err(RouteError::TooLong));
    }

    #[test]
    fn extensions_are_lowercased() {
        assert_eq!(extension("/Content/0A/x.CAB"), Some("CAB"));
        assert_eq!(extension("/blobs/sha256/abc"), None);
    }
}
