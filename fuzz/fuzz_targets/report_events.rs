//! `ReportEventBatch` bodies read into the fleet's events and their effect
//! on update states (the status event's `U=`/`V=` lists, `Win32HResult`,
//! update ids): any bytes, never a panic, and the lists stay bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::fleet::status::{Effect, MAX_LISTED};
use upcache::wsus::client::reporting;

fuzz_target!(|data: &[u8]| {
    if let Ok(effects) = reporting::effects_of(data) {
        for e in effects {
            if let Effect::Status { needed, installed } = e {
                assert!(needed.len() + installed.len() <= MAX_LISTED);
            }
        }
    }
});
