//! The fast path's request-head parser: never panics, and a head it takes
//! is no longer than the input, names an origin-form path without its
//! query, and carries only the headers a response plan reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::http::fast::{parse_head, Parsed};

fuzz_target!(|data: &[u8]| {
    if let Parsed::Fast(head) = parse_head(data) {
        assert!(head.len <= data.len());
        assert!(head.path.starts_with('/') && !head.path.contains('?'));
        assert!(head.headers.len() <= 64);
        for name in head.headers.keys() {
            assert!(name.as_str().starts_with("if-") || name == http::header::RANGE);
        }
        // Parsing what follows the head (pipelining) never panics either.
        let _ = parse_head(&data[head.len..]);
    }
});
