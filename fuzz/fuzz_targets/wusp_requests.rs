//! The update server's request parsers ([MS-WUSP]): any bytes as any
//! operation's body, and any bytes as an update document split into
//! fragments, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::wsus::client::{fragments, requests};

fuzz_target!(|data: &[u8]| {
    let _ = requests::parse_any(data);
    let _ = fragments::split(data);
});
