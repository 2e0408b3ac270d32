//! The update-document parser ([MS-WUSP] 2.2): never panics on any bytes,
//! is deterministic, and every error has a message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::metadata::update_xml::parse;

fuzz_target!(|data: &[u8]| {
    let first = parse(data, "en");
    assert_eq!(first, parse(data, "en"));
    if let Err(e) = first {
        assert!(!e.to_string().is_empty());
    }
});
