//! The JSON catalog parser: never panics, errors always name a place; the
//! same of a primary's export with its groups and memberships.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = upcache::catalog::json::parse(data) {
        assert!(!e.to_string().is_empty());
    }
    match upcache::catalog::json::parse_follow(data) {
        Ok((_, items)) => {
            for item in items {
                if let upcache::catalog::json::FleetItem::Member(m) = item {
                    assert!(m.groups.len() <= upcache::catalog::json::MAX_MEMBER_GROUPS);
                }
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
