//! `Range` header → the byte ranges to send (RFC 9110 §14).
//!
//! Syntax comes from `http-range-header`; the semantics are ours: an invalid
//! header is ignored (200), unsatisfiable ranges are dropped and 416 is sent
//! only when none is left, overlapping or adjacent ranges are merged, and a
//! request with absurdly many ranges is served whole so it cannot amplify load.

use std::ops::Range;

use http_range_header::{EndPosition, StartPosition};

/// Ranges kept after merging; beyond this the header is ignored.
pub const MAX_RANGES: usize = 64;

/// What a `Range` header asks of a representation of known length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (usable) header: send everything with 200.
    Full,
    /// 206 with these half-open ranges, sorted and disjoint.
    Partial(Vec<Range<u64>>),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Resolves a `Range` header value against a length.
pub fn resolve(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(value) = header else {
        return RangeRequest::Full;
    };
    let Ok(parsed) = http_range_header::parse_range_header(value.trim()) else {
        return RangeRequest::Full; // syntactically invalid: ignore
    };
    if parsed.ranges.len() > MAX_RANGES * 4 {
        return RangeRequest::Full;
    }
    let mut ranges = Vec::with_capacity(parsed.ranges.len());
    for r in &parsed.ranges {
        let (start, end) = match (r.start, r.end) {
            (StartPosition::Index(s), EndPosition::Index(e)) if e < s => return RangeRequest::Full,
            (StartPosition::Index(s), EndPosition::Index(e)) => (s, e.saturating_add(1).min(len)),
            (StartPosition::Index(s), EndPosition::LastByte) => (s, len),
            (StartPosition::FromLast(n), _) => (len.saturating_sub(n), len),
        };
        if start < end {
            ranges.push(start..end);
        }
    }
    if ranges.is_empty() {
        return RangeRequest::Unsatisfiable;
    }
    let merged = coalesce(ranges);
    if merged.len() > MAX_RANGES {
        return RangeRequest::Full;
    }
    RangeRequest::Partial(merged)
}

/// Sorts and merges overlapping or adjacent ranges, in place.
fn coalesce(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_unstable_by_key(|r| r.start);
    let mut kept = 0usize;
    for i in 0..ranges.len() {
        let r = ranges[i].clone();
        match kept.checked_sub(1).map(|last| &mut ranges[last]) {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => {
                ranges[kept] = r;
                kept += 1;
            }
        }
    }
    ranges.truncate(kept);
    ranges
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // a one-range Partial is what we mean
mod tests {
    use super::*;
    use RangeRequest::*;

    fn r(h: &str, len: u64) -> RangeRequest {
        resolve(Some(h), len)
    }

    #[test]
    fn single_open_and_suffix_ranges() {
        assert_eq!(r("bytes=0-99", 1000), Partial(vec![0..100]));
        assert_eq!(r("bytes=900-", 1000), Partial(vec![900..1000]));
        assert_eq!(r("bytes=-100", 1000), Partial(vec![900..1000]));
        assert_eq!(r("bytes=-5000", 1000), Partial(vec![0..1000]));
        assert_eq!(r("bytes=990-2000", 1000), Partial(vec![990..1000]));
    }

    #[test]
    fn multiple_ranges_are_sorted_and_merged() {
        assert_eq!(
            r("bytes=500-599,0-99", 1000),
            Partial(vec![0..100, 500..600])
        );
        assert_eq!(r("bytes=0-99,50-149,150-159", 1000), Partial(vec![0..160]));
    }

    #[test]
    fn unsatisfiable_only_when_no_range_is_left() {
        assert_eq!(r("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(r("bytes=1000-1100,2000-", 1000), Unsatisfiable);
        assert_eq!(r("bytes=1000-1100,0-0", 1000), Partial(vec![0..1]));
        assert_eq!(r("bytes=0-", 0), Unsatisfiable);
    }

    #[test]
    fn invalid_headers_are_ignored() {
        for h in [
            "bytes=abc",
            "items=0-1",
            "bytes=5-1",
            "bytes=",
            "bytes=--1",
            "0-1",
        ] {
            assert_eq!(r(h, 1000), Full, "{h}");
        }
        assert_eq!(resolve(None, 1000), Full);
    }

    #[test]
    fn absurd_range_counts_are_served_whole() {
        let many: Vec<String> = (0..10_000)
            .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
            .collect();
        assert_eq!(r(&format!("bytes={}", many.join(",")), 1_000_000), Full);
        // ...but many overlapping ranges that merge into one are fine.
        let same: Vec<&str> = vec!["0-9"; 100];
        assert_eq!(
            r(&format!("bytes={}", same.join(",")), 1000),
            Partial(vec![0..10])
        );
    }
}
