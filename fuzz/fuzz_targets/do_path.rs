//! Delivery Optimization paths: never panics; whatever parses is the GUID
//! (lowercase) and at most one safe name, found in the path as written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::delivery::path;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = std::str::from_utf8(data) else { return };
    if let Ok(key) = path::parse(p) {
        assert!(p.len() <= path::MAX_PATH);
        assert!(p.to_ascii_lowercase().contains(key.guid()));
        assert_eq!(key.guid(), key.guid().to_ascii_lowercase());
        if let Some(name) = key.name() {
            assert!(!name.contains('/') && name != "." && name != "..");
            assert!(p.ends_with(name));
        }
        assert_eq!(path::ObjectKey::from_stored(key.as_str()), Some(key));
    }
});
