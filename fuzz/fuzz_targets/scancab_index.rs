//! `wsusscn2.cab`'s `index.xml`: never panics on any bytes, is
//! deterministic, and every cabinet it names is a plain file name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::catalog::scancab::parse_index;

fuzz_target!(|data: &[u8]| {
    let first = parse_index(data);
    assert_eq!(first, parse_index(data));
    match first {
        Ok(cabs) => {
            for c in cabs {
                assert!(!c.name.contains(['/', '\\']));
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
