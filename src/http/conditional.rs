//! Conditional requests (RFC 9110 §13): `If-Match`, `If-Unmodified-Since`,
//! `If-None-Match`, `If-Modified-Since` and `If-Range`, evaluated in the
//! order the RFC gives.

use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderName};

/// Where a plan reads a request's headers from: hyper's `HeaderMap`, or the
/// fast path's values borrowed from the connection's buffer (no map, no
/// copy). Only the first value of a header counts, as `HeaderMap::get`.
pub trait RequestHeaders {
    fn value(&self, name: &HeaderName) -> Option<&[u8]>;

    /// The value as text, if it is visible ASCII (as `HeaderValue::to_str`).
    fn text(&self, name: &HeaderName) -> Option<&str> {
        let v = self.value(name)?;
        let visible = v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
        visible.then(|| std::str::from_utf8(v).ok()).flatten()
    }
}

impl RequestHeaders for HeaderMap {
    fn value(&self, name: &HeaderName) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }
}

/// The validators of one file.
#[derive(Debug, Clone)]
pub struct Validators {
    /// Strong entity tags that all name this content, e.g. `"sha256:<hex>"`,
    /// `"sha1:<hex>"`. The first is the one sent in `ETag`.
    pub etags: Vec<String>,
    pub last_modified: Option<SystemTime>,
}

/// The outcome of the preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Go on; `honour_range` is false when `If-Range` did not match.
    Proceed { honour_range: bool },
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// Evaluates the conditional headers of a GET or HEAD.
pub fn evaluate(headers: &impl RequestHeaders, v: &Validators) -> Precondition {
    if let Some(im) = headers.text(&header::IF_MATCH) {
        if !matches_any(im, v, true) {
            return Precondition::Failed;
        }
    } else if let Some(date) = date(headers, header::IF_UNMODIFIED_SINCE) {
        if v.last_modified.is_some_and(|lm| truncate(lm) > date) {
            return Precondition::Failed;
        }
    }
    if let Some(inm) = headers.text(&header::IF_NONE_MATCH) {
        if matches_any(inm, v, false) {
            return Precondition::NotModified;
        }
    } else if let Some(date) = date(headers, header::IF_MODIFIED_SINCE) {
        if v.last_modified.is_some_and(|lm| truncate(lm) <= date) {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed {
        honour_range: if_range_holds(headers, v),
    }
}

/// `If-Range`: the range applies only if the client's validator is current.
/// An entity tag must match strongly; a date must equal `Last-Modified`.
fn if_range_holds(headers: &impl RequestHeaders, v: &Validators) -> bool {
    let Some(value) = headers.text(&header::IF_RANGE) else {
        return true;
    };
    let value = value.trim();
    if value.starts_with('"') {
        return v.etags.iter().any(|e| e == value);
    }
    if value.starts_with("W/") {
        return false;
    }
    match (httpdate::parse_http_date(value), v.last_modified) {
        (Ok(date), Some(lm)) => truncate(lm) == date,
        _ => false,
    }
}

/// Whether a comma-separated entity-tag list (or `*`) names this content.
fn matches_any(list: &str, v: &Validators, strong: bool) -> bool {
    list.split(',').map(str::trim).any(|tag| {
        if tag == "*" {
            return true;
        }
        let tag = match tag.strip_prefix("W/") {
            Some(_) if strong => return false,
            Some(weak) => weak,
            None => tag,
        };
        v.etags.iter().any(|e| e == tag)
    })
}

fn date(headers: &impl RequestHeaders, name: HeaderName) -> Option<SystemTime> {
    headers
        .text(&name)
        .and_then(|s| httpdate::parse_http_date(s).ok())
}

/// HTTP dates have whole seconds (dropped arithmetically: no formatting).
fn truncate(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn validators() -> Validators {
        Validators {
            etags: vec!["\"sha256:aa\"".into(), "\"sha1:bb\"".into()],
            last_modified: Some(UNIX_EPOCH + Duration::from_secs(1_704_758_400)),
        }
    }

    fn eval(pairs: &[(header::HeaderName, &str)]) -> Precondition {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), v.parse().unwrap());
        }
        evaluate(&h, &validators())
    }

    const GO: Precondition = Precondition::Proceed { honour_range: true };
    const LM: &str = "Tue, 09 Jan 2024 00:00:00 GMT";

    #[test]
    fn if_none_match_gives_304_on_any_of_our_tags() {
        assert_eq!(
            eval(&[(header::IF_NONE_MATCH, "\"sha256:aa\"")]),
            Precondition::NotModified
        );
        assert_eq!(
            eval(&[(header::IF_NONE_MATCH, "\"x\", W/\"sha1:bb\"")]),
            Precondition::NotModified
        );
        assert_eq!(
            eval(&[(header::IF_NONE_MATCH, "*")]),
            Precondition::NotModified
        );
        assert_eq!(eval(&[(header::IF_NONE_MATCH, "\"other\"")]), GO);
    }

    #[test]
    fn if_modified_since_is_ignored_when_if_none_match_is_present() {
        assert_eq!(
            eval(&[(header::IF_MODIFIED_SINCE, LM)]),
            Precondition::NotModified
        );
        assert_eq!(
            eval(&[
                (header::IF_NONE_MATCH, "\"other\""),
                (header::IF_MODIFIED_SINCE, LM)
            ]),
            GO
        );
        assert_eq!(
            eval(&[(header::IF_MODIFIED_SINCE, "Mon, 08 Jan 2024 00:00:00 GMT")]),
            GO
        );
    }

    #[test]
    fn if_match_and_if_unmodified_since_fail_with_412() {
        assert_eq!(
            eval(&[(header::IF_MATCH, "\"other\"")]),
            Precondition::Failed
        );
        assert_eq!(
            eval(&[(header::IF_MATCH, "W/\"sha256:aa\"")]),
            Precondition::Failed
        );
        assert_eq!(eval(&[(header::IF_MATCH, "\"sha256:aa\"")]), GO);
        assert_eq!(
            eval(&[(header::IF_UNMODIFIED_SINCE, "Mon, 08 Jan 2024 00:00:00 GMT")]),
            Precondition::Failed
        );
    }

    #[test]
    fn if_range_needs_a_strong_match_or_the_exact_date() {
        let stale = Precondition::Proceed {
            honour_range: false,
        };
        assert_eq!(eval(&[(header::IF_RANGE, "\"sha256:aa\"")]), GO);
        assert_eq!(eval(&[(header::IF_RANGE, "\"sha256:old\"")]), stale);
        assert_eq!(eval(&[(header::IF_RANGE, "W/\"sha256:aa\"")]), stale);
        assert_eq!(eval(&[(header::IF_RANGE, LM)]), GO);
        assert_eq!(
            eval(&[(header::IF_RANGE, "Mon, 08 Jan 2024 00:00:00 GMT")]),
            stale
        );
    }
}
