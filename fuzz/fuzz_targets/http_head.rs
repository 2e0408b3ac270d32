//! The fast path's request-head parser: never panics, and a head it takes
//! is no longer than the input, names an origin-form path without its
//! query, and carries only the headers a response plan reads (and, when
//! logging, the access log's fields, the target first).
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::http::fast::{parse_head, Parsed};

fuzz_target!(|data: &[u8]| {
    let for_log = data.first().is_some_and(|b| b & 1 == 1);
    if let Parsed::Fast(head) = parse_head(data, for_log) {
        assert!(head.len <= data.len());
        assert_eq!(head.log.is_some(), for_log);
        if let Some(fields) = &head.log {
            assert!(fields.target().starts_with(&*head.path));
            let _ = (fields.range(), fields.referer(), fields.user_agent());
        }
        assert!(head.path.starts_with('/') && !head.path.contains('?'));
        assert!(head.headers.len() <= 6);
        for (name, value) in head.headers.iter() {
            assert!(name.as_str().starts_with("if-") || name == http::header::RANGE);
            assert!(http::HeaderValue::from_bytes(value).is_ok(), "{value:?}");
        }
        // Parsing what follows the head (pipelining) never panics either.
        let _ = parse_head(&data[head.len..], for_log);
    }
});
