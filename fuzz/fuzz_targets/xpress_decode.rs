//! The `xpress` content coding ([MS-WUSP] 2.1.1): any bytes as a body never
//! panic and never decode past the limit; any bytes encoded decode back to
//! themselves, in blocks within the format's bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::wsus::client::xpress::{decode, encode, MAX_BLOCK};

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = decode(data, 1 << 20) {
        assert!(out.len() <= 1 << 20);
    }
    let body = encode(data);
    let mut rest = &body[..];
    while !rest.is_empty() {
        let original = i32::from_le_bytes(rest[..4].try_into().unwrap());
        let size = i32::from_le_bytes(rest[4..8].try_into().unwrap());
        assert!((0..=MAX_BLOCK as i32).contains(&original));
        assert!((0..=MAX_BLOCK as i32).contains(&size));
        rest = &rest[8 + size as usize..];
    }
    assert_eq!(decode(&body, data.len()).as_deref(), Ok(data));
});
