//! The self-update directory's path reading ([MS-WUSP] 3.1.5.1): any
//! request path either is refused or names plain file names below the
//! directory, never a way out of it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::wsus::client::self_update;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parts) = self_update::segments(path) {
        for p in parts {
            assert!(!p.is_empty() && !p.starts_with('.'), "{path:?}");
            assert!(!p.contains('/') && !p.contains('\\'), "{path:?}");
        }
    }
});
