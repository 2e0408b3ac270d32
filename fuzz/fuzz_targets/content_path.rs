//! Content-path routing: never panics, and whatever parses names a digest
//! whose text appears in the path, from a path with no `.`/`..` segments
//! (there is no other way from a URL to a file).
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::http::route::{self, FileKey};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if let Ok(key) = route::parse(path) {
        let hex = match key {
            FileKey::Sha1(d) => d.to_hex(),
            FileKey::Sha256(d) => d.to_hex(),
        };
        assert!(path.to_ascii_lowercase().contains(&hex));
        assert!(path.split('/').all(|s| s != ".." && s != "."));
    }
    let _ = route::extension(path);
});
