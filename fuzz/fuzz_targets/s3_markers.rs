//! The shared tier's markers, read from a bucket that is not trusted: a
//! SHA-1 marker (`<sha256 hex> <size>`) and a Delivery Optimization
//! object marker (the same line, then `etag:` / `last-modified:` lines).
//! Neither parser panics or reads past the bound; an object marker that
//! parses keeps only values that are valid header values, writes back to
//! the same marker, and names the SHA-256 a SHA-1 marker reader sees.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::store::s3::{parse_sha1_marker, ObjectMarker};

fuzz_target!(|data: &[u8]| {
    let sha256 = parse_sha1_marker(data);
    let Some(marker) = ObjectMarker::parse(data) else {
        return;
    };
    assert!(data.len() <= 4096, "a marker past the bound was read");
    assert_eq!(sha256, Some(marker.sha256), "the first field is read alike");
    for value in [&marker.etag, &marker.last_modified].into_iter().flatten() {
        assert!(http::HeaderValue::from_str(value).is_ok(), "{value:?}");
    }
    let text = marker.to_text();
    assert_eq!(ObjectMarker::parse(text.as_bytes()), Some(marker.clone()));
    assert_eq!(parse_sha1_marker(text.as_bytes()), Some(marker.sha256));
});
