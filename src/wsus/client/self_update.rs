//! The self-update content directory, `/SelfUpdate` ([MS-WUSP] 2.1 and
//! 3.1.5.1): a virtual directory a server MUST expose and answer HTTP GETs
//! on. Which files a client reads there, and what it does with them, the
//! specification leaves to the implementation; Windows Update Agent asks
//! for `selfupdate/wuident.cab` (and, on older clients, the setup files
//! that cab names) before it scans, and a scan can fail when the directory
//! is missing.
//!
//! Those files are Microsoft-signed: upcache cannot make them. It serves
//! what the administrator puts in `DATA/selfupdate/` (a WSUS server's
//! `Selfupdate` folder copied as it is), matched without regard to case as
//! IIS does, read-only, GET and HEAD only. A name that is not there is a
//! 404, as on a WSUS whose directory is empty.

use std::path::{Path, PathBuf};

use bytes::Bytes;

/// The directory's path on the content listener (case-insensitive).
const PREFIX: &str = "/selfupdate";
/// The folder under the data directory that holds the files.
pub const FOLDER: &str = "selfupdate";
/// Deepest path below the directory (`wsus3/x64/...` is three).
const MAX_DEPTH: usize = 8;
/// Longest name of one path segment.
const MAX_SEGMENT: usize = 128;
/// Entries read from one directory while matching a name.
const MAX_ENTRIES: usize = 10_000;
/// Largest file served (WSUS's self-update cabs are a few MB).
pub const MAX_FILE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SelfUpdateError {
    #[error("no such self-update file")]
    NotFound,
    #[error("the self-update directory answers GET and HEAD only")]
    Method,
    #[error("malformed self-update path")]
    BadPath,
    #[error("self-update file larger than {MAX_FILE} bytes")]
    TooLarge,
    #[error("self-update file: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether `path` is in the self-update directory.
pub fn is_self_update(path: &str) -> bool {
    let b = path.as_bytes();
    b.len() >= PREFIX.len()
        && path.is_char_boundary(PREFIX.len())
        && path[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
        && (b.len() == PREFIX.len() || b[PREFIX.len()] == b'/')
}

/// A file found for a request.
#[derive(Debug)]
pub struct SelfUpdateFile {
    pub bytes: Bytes,
    pub content_type: &'static str,
    pub modified: Option<std::time::SystemTime>,
}

/// The file at request path `path` under `root` (`DATA/selfupdate`).
/// Blocking: call it off the async threads.
pub fn read(
    root: &Path,
    method: &http::Method,
    path: &str,
) -> Result<SelfUpdateFile, SelfUpdateError> {
    if method != http::Method::GET && method != http::Method::HEAD {
        return Err(SelfUpdateError::Method);
    }
    let file = resolve(root, segments(path)?)?;
    let meta = std::fs::metadata(&file)?;
    if !meta.is_file() {
        return Err(SelfUpdateError::NotFound);
    }
    if meta.len() > MAX_FILE {
        return Err(SelfUpdateError::TooLarge);
    }
    let bytes = std::fs::read(&file)?;
    Ok(SelfUpdateFile {
        bytes: Bytes::from(bytes),
        content_type: content_type(&file),
        modified: meta.modified().ok(),
    })
}

/// The path's segments below the directory, each a plain file name (no
/// `..`, no separator, nothing hidden): the fuzz target's entry point.
pub fn segments(path: &str) -> Result<Vec<&str>, SelfUpdateError> {
    if !is_self_update(path) {
        return Err(SelfUpdateError::NotFound);
    }
    let rest = &path[PREFIX.len()..];
    let parts: Vec<&str> = rest.split('/').skip(1).collect();
    if parts.is_empty() || parts.iter().all(|p| p.is_empty()) {
        // The directory itself: no listing, as IIS without browsing.
        return Err(SelfUpdateError::NotFound);
    }
    if parts.len() > MAX_DEPTH {
        return Err(SelfUpdateError::BadPath);
    }
    for p in &parts {
        let plain = p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if p.is_empty() || p.len() > MAX_SEGMENT || !plain || p.starts_with('.') {
            return Err(SelfUpdateError::BadPath);
        }
    }
    Ok(parts)
}

/// Walks `root` one segment at a time, each matched without regard to case.
fn resolve(root: &Path, parts: Vec<&str>) -> Result<PathBuf, SelfUpdateError> {
    let mut here = root.to_path_buf();
    for part in parts {
        let exact = here.join(part);
        if exact.symlink_metadata().is_ok() {
            here = exact;
            continue;
        }
        let entries = match std::fs::read_dir(&here) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SelfUpdateError::NotFound)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(SelfUpdateError::NotFound)
            }
            Err(e) => return Err(e.into()),
        };
        let found = entries.take(MAX_ENTRIES).filter_map(Result::ok).find(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(part))
        });
        match found {
            Some(e) => here = e.path(),
            None => return Err(SelfUpdateError::NotFound),
        }
    }
    Ok(here)
}

fn content_type(file: &Path) -> &'static str {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "cab" => "application/vnd.ms-cab-compressed",
        "xml" => "text/xml",
        "txt" | "inf" | "ini" => "text/plain",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_matched_without_regard_to_case() {
        assert!(is_self_update("/selfupdate/wuident.cab"));
        assert!(is_self_update("/SelfUpdate/WUIDENT.CAB"));
        assert!(is_self_update("/SELFUPDATE"));
        assert!(!is_self_update("/selfupdates/x"));
        assert!(!is_self_update("/Content/AB/x.cab"));
        assert!(!is_self_update("/self"));
    }

    #[test]
    fn files_are_found_whatever_their_case_and_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(FOLDER);
        std::fs::create_dir_all(root.join("WSUS3/x64")).unwrap();
        std::fs::write(root.join("wuident.cab"), b"MSCF ident").unwrap();
        std::fs::write(
            root.join("WSUS3/x64/WUClient-SelfUpdate.cab"),
            b"MSCF setup",
        )
        .unwrap();
        std::fs::write(dir.path().join("catalog.sqlite3"), b"secret").unwrap();
        let get = http::Method::GET;
        let f = read(&root, &get, "/selfupdate/WUIDENT.cab").unwrap();
        assert_eq!(&f.bytes[..], b"MSCF ident");
        assert_eq!(f.content_type, "application/vnd.ms-cab-compressed");
        let f = read(
            &root,
            &http::Method::HEAD,
            "/SelfUpdate/wsus3/X64/wuclient-selfupdate.CAB",
        )
        .unwrap();
        assert_eq!(&f.bytes[..], b"MSCF setup");
        for (path, bad) in [
            ("/selfupdate/missing.cab", false),
            ("/selfupdate/", false),
            ("/selfupdate", false),
            ("/selfupdate/WSUS3", false),
            ("/selfupdate/../catalog.sqlite3", true),
            ("/selfupdate/%2e%2e/catalog.sqlite3", true),
            ("/selfupdate/.hidden", true),
            ("/selfupdate/a//b", true),
        ] {
            let e = read(&root, &get, path).unwrap_err();
            match bad {
                true => assert!(matches!(e, SelfUpdateError::BadPath), "{path}: {e}"),
                false => assert!(matches!(e, SelfUpdateError::NotFound), "{path}: {e}"),
            }
        }
        assert!(matches!(
            read(&root, &http::Method::POST, "/selfupdate/wuident.cab"),
            Err(SelfUpdateError::Method)
        ));
        // No directory at all: every name is simply not there.
        let none = dir.path().join("absent");
        assert!(matches!(
            read(&none, &get, "/selfupdate/wuident.cab"),
            Err(SelfUpdateError::NotFound)
        ));
    }
}
