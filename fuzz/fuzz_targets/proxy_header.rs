//! The PROXY protocol reader: never panics, and whatever it decides keeps
//! every byte after the header (the request) intact, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::net::proxy_protocol::{classify_all, Start};

fuzz_target!(|data: &[u8]| {
    match classify_all(data) {
        Some(Ok(Start::Direct(rest))) | Some(Ok(Start::Proxied(_, rest))) => {
            assert!(data.ends_with(&rest));
            // Bytes that are not a header are all handed on, untouched.
            if !data.starts_with(b"PROXY ") && !data.starts_with(b"\r\n\r\n\0\r\nQUIT\n") {
                assert_eq!(&rest[..], data);
            }
        }
        Some(Err(_)) | None => {}
    }
});
