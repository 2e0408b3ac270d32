//! `cacheHostOrigin`: never panics, never accepts an encoded, credentialed
//! or ported origin, and an accepted one passes the default patterns only
//! as a plain lowercase name that ends in one of them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::delivery::origin::{self, Host, OriginPolicy};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    let Ok(q) = origin::split_query(Some(query)) else { return };
    let names = q.forward.split('&').map(|p| p.split('=').next().unwrap_or(""));
    assert!(names.clone().all(|n| !n.eq_ignore_ascii_case(origin::ORIGIN_PARAM)));
    assert!(!q.origin_param.contains('%') && !q.origin_param.contains('@'));
    if OriginPolicy::default().check_host(&q.host).is_ok() {
        let Host::Name(name) = &q.host else {
            panic!("an address passed without networks")
        };
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'));
        assert!(origin::DEFAULT_PATTERNS
            .iter()
            .any(|p| name.ends_with(p.trim_start_matches('*'))));
    }
});
