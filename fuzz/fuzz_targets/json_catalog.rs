//! The JSON catalog parser: never panics, errors always name a place.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = upcache::catalog::json::parse(data) {
        assert!(!e.to_string().is_empty());
    }
});
