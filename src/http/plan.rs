//! A response decided for a file of known length, before it is sent:
//! status, headers and the body as parts of the file and literal framing.
//!
//! The hyper path and the fast path both send plans, so preconditions and
//! ranges live in one place. A plan keeps its headers as values, not as a
//! `HeaderMap`: the fast path writes them straight into the connection's
//! head buffer, so a warm hit builds no map and formats only its lengths.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use super::body::Part;
use super::conditional::{self, Precondition, RequestHeaders, Validators};
use super::range::{self, RangeRequest};

/// Content named by its digest never changes.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const BYTES: HeaderValue = HeaderValue::from_static("bytes");
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// A file's validators and their header values, computed once per file
/// (and digest set) and kept in a cache: a warm hit formats no `ETag` or
/// `Last-Modified` and allocates nothing for them.
pub struct FileValidators {
    pub validators: Validators,
    pub etag: HeaderValue,
    pub last_modified: Option<HeaderValue>,
}

/// See the [module](self) documentation.
pub struct Plan {
    pub status: StatusCode,
    /// `Accept-Ranges`, `Cache-Control`, `ETag`, `Last-Modified`: on every
    /// response about the file, 304s included (not on a 412).
    file: Option<Arc<FileValidators>>,
    /// Static per extension; formatted only for a multipart boundary.
    content_type: Option<Cow<'static, str>>,
    content_range: Option<ContentRange>,
    /// Absent on a 304.
    content_length: Option<u64>,
    /// An error's `Cache-Control: no-store` and `Retry-After`.
    error: Option<ErrorHeaders>,
    body: PlanBody,
}

/// What an error response carries besides its text.
struct ErrorHeaders {
    retry_after: Option<&'static str>,
}

enum ContentRange {
    /// `bytes <first>-<last>/<len>`
    Bytes { range: Range<u64>, len: u64 },
    /// `bytes */<len>`, on a 416.
    Unsatisfied { len: u64 },
}

/// One part needs no list.
enum PlanBody {
    Empty,
    One(Part),
    Many(Vec<Part>),
}

impl Plan {
    /// The plan for a request's preconditions and `Range` over a file of
    /// `len` bytes with these validators and type.
    pub fn new(
        req: &impl RequestHeaders,
        file: &Arc<FileValidators>,
        content_type: &'static str,
        len: u64,
    ) -> Plan {
        let honour_range = match conditional::evaluate(req, &file.validators) {
            Precondition::NotModified => {
                return Plan {
                    status: StatusCode::NOT_MODIFIED,
                    file: Some(file.clone()),
                    content_type: None,
                    content_range: None,
                    content_length: None,
                    error: None,
                    body: PlanBody::Empty,
                }
            }
            Precondition::Failed => {
                return Plan::text(
                    StatusCode::PRECONDITION_FAILED,
                    None,
                    "precondition failed\n",
                )
            }
            Precondition::Proceed { honour_range } => honour_range,
        };
        let range_header = req.text(&header::RANGE).filter(|_| honour_range);
        let file_plan = |status, content_type, content_range, body| {
            let mut plan = Plan {
                status,
                file: Some(file.clone()),
                content_type: Some(content_type),
                content_range,
                content_length: None,
                error: None,
                body,
            };
            plan.content_length = Some(plan.body_len());
            plan
        };
        match range::resolve(range_header, len) {
            RangeRequest::Full => file_plan(
                StatusCode::OK,
                Cow::Borrowed(content_type),
                None,
                PlanBody::One(Part::File(0..len)),
            ),
            RangeRequest::Unsatisfiable => {
                let mut plan = Plan::text(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    Some(file.clone()),
                    "range not satisfiable\n",
                );
                plan.content_range = Some(ContentRange::Unsatisfied { len });
                plan
            }
            RangeRequest::Partial(ranges) if ranges.len() == 1 => {
                let range = ranges[0].clone();
                file_plan(
                    StatusCode::PARTIAL_CONTENT,
                    Cow::Borrowed(content_type),
                    Some(ContentRange::Bytes {
                        range: range.clone(),
                        len,
                    }),
                    PlanBody::One(Part::File(range)),
                )
            }
            RangeRequest::Partial(ranges) => {
                let boundary = boundary();
                let parts = multipart(&ranges, len, content_type, &boundary);
                file_plan(
                    StatusCode::PARTIAL_CONTENT,
                    Cow::Owned(format!("multipart/byteranges; boundary={boundary}")),
                    None,
                    PlanBody::Many(parts),
                )
            }
        }
    }

    /// A short text body (412, 416).
    fn text(status: StatusCode, file: Option<Arc<FileValidators>>, body: &'static str) -> Plan {
        Plan {
            status,
            file,
            content_type: Some(Cow::Borrowed("text/plain; charset=utf-8")),
            content_range: None,
            content_length: Some(body.len() as u64),
            error: None,
            body: PlanBody::One(Part::Literal(Bytes::from_static(body.as_bytes()))),
        }
    }

    /// An error as text, as the full path's `plain` responses are: never
    /// stored by a cache in front, with `Retry-After` when worth a retry.
    pub fn error(status: StatusCode, message: String, retry_after: Option<&'static str>) -> Plan {
        Plan {
            status,
            file: None,
            content_type: Some(Cow::Borrowed("text/plain; charset=utf-8")),
            content_range: None,
            content_length: Some(message.len() as u64),
            error: Some(ErrorHeaders { retry_after }),
            body: PlanBody::One(Part::Literal(Bytes::from(message))),
        }
    }

    /// The body's parts, in order.
    pub fn parts(&self) -> &[Part] {
        match &self.body {
            PlanBody::Empty => &[],
            PlanBody::One(part) => std::slice::from_ref(part),
            PlanBody::Many(parts) => parts,
        }
    }

    /// The body's parts, owned (for the hyper body).
    pub fn into_parts(self) -> Vec<Part> {
        match self.body {
            PlanBody::Empty => Vec::new(),
            PlanBody::One(part) => vec![part],
            PlanBody::Many(parts) => parts,
        }
    }

    /// Bytes of the body.
    pub fn body_len(&self) -> u64 {
        self.parts().iter().map(Part::len).sum()
    }

    /// Calls `emit` with each header, lengths formatted on the stack.
    pub fn for_each_header(&self, mut emit: impl FnMut(&HeaderName, &[u8])) {
        if let Some(file) = &self.file {
            file_headers(file, |name, value| emit(name, value.as_bytes()));
        }
        self.content_headers(emit);
    }

    /// The headers about this response's body (type, range, length) and an
    /// error's.
    fn content_headers(&self, mut emit: impl FnMut(&HeaderName, &[u8])) {
        if let Some(t) = &self.content_type {
            emit(&header::CONTENT_TYPE, t.as_bytes());
        }
        if let Some(error) = &self.error {
            emit(&header::CACHE_CONTROL, b"no-store");
            emit(&header::X_CONTENT_TYPE_OPTIONS, b"nosniff");
            if let Some(after) = error.retry_after {
                emit(&header::RETRY_AFTER, after.as_bytes());
            }
        }
        let mut text = StackText::default();
        if let Some(range) = &self.content_range {
            let written = match range {
                ContentRange::Bytes { range, len } => {
                    write!(text, "bytes {}-{}/{len}", range.start, range.end - 1)
                }
                ContentRange::Unsatisfied { len } => write!(text, "bytes */{len}"),
            };
            written.expect("a range fits");
            emit(&header::CONTENT_RANGE, text.as_bytes());
        }
        if let Some(len) = self.content_length {
            text.clear();
            write!(text, "{len}").expect("a length fits");
            emit(&header::CONTENT_LENGTH, text.as_bytes());
        }
    }

    /// The headers as a map, for hyper (the file's cached values shared,
    /// not copied).
    pub fn header_map(&self) -> HeaderMap {
        let mut map = match &self.file {
            Some(file) => file_header_map(file),
            None => HeaderMap::with_capacity(8),
        };
        self.content_headers(|name, value| {
            let value = HeaderValue::from_bytes(value).expect("plan headers are valid values");
            map.insert(name.clone(), value);
        });
        map
    }
}

/// `Accept-Ranges`, `Cache-Control`, `ETag` and `Last-Modified`, as the
/// values kept for the file (shared by a map, written out by the fast path).
fn file_headers(file: &FileValidators, mut emit: impl FnMut(&HeaderName, &HeaderValue)) {
    emit(&header::ACCEPT_RANGES, &BYTES);
    emit(&header::CACHE_CONTROL, &IMMUTABLE);
    // A payload is never to be taken for a page or a script, whatever its
    // bytes look like (a `.txt` or `.xml` file of an update included).
    emit(&header::X_CONTENT_TYPE_OPTIONS, &NOSNIFF);
    emit(&header::ETAG, &file.etag);
    if let Some(lm) = &file.last_modified {
        emit(&header::LAST_MODIFIED, lm);
    }
}

/// `file_headers` as a map: the start of every response about a file
/// (and the whole head of one whose length is not known yet).
pub fn file_header_map(file: &FileValidators) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(8);
    file_headers(file, |name, value| {
        map.insert(name.clone(), value.clone());
    });
    map
}

/// Text formatted on the stack: the longest `Content-Range` is 68 bytes.
struct StackText {
    buf: [u8; 80],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            buf: [0; 80],
            len: 0,
        }
    }
}

impl StackText {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `multipart/byteranges` framing (RFC 9110 §14.6).
fn multipart(ranges: &[Range<u64>], len: u64, content_type: &str, boundary: &str) -> Vec<Part> {
    let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
    for (i, r) in ranges.iter().enumerate() {
        let lead = if i == 0 { "" } else { "\r\n" };
        let head = format!(
            "{lead}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{len}\r\n\r\n",
            r.start,
            r.end - 1
        );
        parts.push(Part::Literal(Bytes::from(head)));
        parts.push(Part::File(r.clone()));
    }
    parts.push(Part::Literal(Bytes::from(format!(
        "\r\n--{boundary}--\r\n"
    ))));
    parts
}

/// A boundary that cannot be predicted by whoever supplied the file's bytes.
fn boundary() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("upcache-{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_content_range_fits_on_the_stack() {
        let mut text = StackText::default();
        write!(text, "bytes {}-{}/{}", u64::MAX, u64::MAX, u64::MAX).unwrap();
        assert_eq!(text.as_bytes().len(), 68);
        assert!(
            write!(text, "{}", "x".repeat(13)).is_err(),
            "overflow is an error"
        );
    }
}
