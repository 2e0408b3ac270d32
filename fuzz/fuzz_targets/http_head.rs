//! The fast path's request-head parser: never panics, and a head it takes
//! is no longer than the input, names an origin-form path without its
//! query, and carries only the headers a response plan (and, when
//! logging, the access log) reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::http::fast::{parse_head, Parsed};

fuzz_target!(|data: &[u8]| {
    let for_log = data.first().is_some_and(|b| b & 1 == 1);
    if let Parsed::Fast(head) = parse_head(data, for_log) {
        assert!(head.len <= data.len());
        assert_eq!(head.target.is_some(), for_log);
        if let Some(target) = &head.target {
            assert!(target.starts_with(&*head.path));
        }
        assert!(head.path.starts_with('/') && !head.path.contains('?'));
        assert!(head.headers.len() <= 64);
        for name in head.headers.keys() {
            let logged = name == http::header::USER_AGENT || name == http::header::REFERER;
            assert!(
                name.as_str().starts_with("if-") || name == http::header::RANGE || (for_log && logged)
            );
        }
        // Parsing what follows the head (pipelining) never panics either.
        let _ = parse_head(&data[head.len..], for_log);
    }
});
