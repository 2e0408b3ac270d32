//! Assembling a revision's document from `wsusscn2.cab` fragments: never
//! panics on any bytes, is deterministic, and what it assembles is a
//! document the update-document parser reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::catalog::scancab::{assemble, member};

fuzz_target!(|data: &[u8]| {
    // Split the input in three: core, extended, localized.
    let mut parts = data.splitn(3, |b| *b == 0xFF);
    let core = parts.next().unwrap_or_default();
    let extended = parts.next();
    let localized: Vec<&[u8]> = parts.next().into_iter().collect();
    let first = assemble(core, extended, &localized);
    assert_eq!(first, assemble(core, extended, &localized));
    match first {
        Ok(doc) => {
            upcache::metadata::update_xml::parse(doc.as_bytes(), "en")
                .expect("an assembled document parses");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    let _ = member(&String::from_utf8_lossy(core));
});
