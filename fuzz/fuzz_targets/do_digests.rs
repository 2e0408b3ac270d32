//! A primary's list of DO digest bindings, read by its followers: never
//! panics, reads nothing past the bound, and whatever parses binds DO
//! object keys whose content paths name them again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::delivery::{bindings, path};

fuzz_target!(|data: &[u8]| {
    let Ok(keys) = bindings::parse_list(data) else {
        return;
    };
    assert!(data.len() <= bindings::MAX_LIST_BYTES, "a list past the bound was read");
    for key in keys.keys() {
        assert_eq!(path::parse(&key.path()).as_ref(), Ok(key));
    }
});
