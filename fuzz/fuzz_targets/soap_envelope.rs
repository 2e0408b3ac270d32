//! The SOAP envelope parser: never panics on any bytes, and what it
//! returns as a fault is written back and read again to the same fault.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::wsus::soap::{parse_envelope, SoapError};

fuzz_target!(|data: &[u8]| {
    match parse_envelope(data) {
        Ok(op) => assert!(!op.name.is_empty()),
        Err(SoapError::Fault(f)) => {
            let again = parse_envelope(f.to_envelope().as_bytes());
            assert!(matches!(again, Err(SoapError::Fault(g)) if g.error_code == f.error_code));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
