//! `Range` and conditional headers: never panic; ranges that come back are
//! sorted, disjoint, non-empty, inside the file and few.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::http::conditional::{evaluate, Validators};
use upcache::http::range::{resolve, RangeRequest, MAX_RANGES};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let len = u64::from_le_bytes(data[..8].try_into().unwrap()) % (1 << 40);
    let Ok(header) = std::str::from_utf8(&data[8..]) else { return };
    if let RangeRequest::Partial(ranges) = resolve(Some(header), len) {
        assert!(!ranges.is_empty() && ranges.len() <= MAX_RANGES);
        for r in &ranges {
            assert!(r.start < r.end && r.end <= len);
        }
        for w in ranges.windows(2) {
            assert!(w[0].end < w[1].start);
        }
    }
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(header) {
        for name in [http::header::IF_NONE_MATCH, http::header::IF_RANGE, http::header::IF_MODIFIED_SINCE, http::header::IF_MATCH] {
            headers.insert(name, v.clone());
        }
    }
    let v = Validators { etags: vec!["\"sha256:ab\"".into()], last_modified: Some(std::time::UNIX_EPOCH) };
    let _ = evaluate(&headers, &v);
});
