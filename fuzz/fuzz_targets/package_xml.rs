//! The streaming package.xml parser: never panics on any bytes; whatever it
//! accepts is a document with a closed root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut items = 0usize;
    let result = upcache::catalog::package_xml::parse(data, |_| {
        items += 1;
        Ok(())
    });
    if let Err(e) = result {
        assert!(!e.to_string().is_empty());
    }
});
