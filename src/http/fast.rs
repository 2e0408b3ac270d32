//! The HTTP/1.1 fast path: warm hits and download followers sent with
//! `sendfile(2)`.
//!
//! Through hyper, a stored file's bytes are copied from the mapped file into
//! the socket (`_copy_from_iter` was a third of the CPU under range load).
//! Here the connection's keep-alive loop is ours: heads are parsed with
//! `httparse`, and a GET or HEAD of a stored file the policy lets us serve
//! gets its head in one `send(MSG_MORE)` and its body straight from the
//! page cache with `sendfile`; the store hands us the open file ([`Hit`]).
//! A GET or HEAD of the whole of a file not stored yet joins (or starts)
//! its download and is sent the same way from the download's temp file as
//! the bytes land; the download's errors are answered here too.
//!
//! Everything else — h2c, a range of a file not stored yet (the far-ahead
//! choice), a download of unknown length, a redirect, a refusal, a request
//! with a body, an odd or malformed head — is handed to hyper with the
//! bytes read so far, and hyper keeps the connection from then on. So the
//! fast path only ever answers simple, well-formed requests, and every
//! response it sends is a [`Plan`] the hyper path would send too
//! (differential tests compare them).

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use http::header::{self, HeaderName};
use http::Method;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::body::Part;
use super::conditional::RequestHeaders;
use super::content::{ContentService, FastSource};
use super::observe::Answer;
use super::plan::Plan;
use crate::fetch::Follow;
use crate::net::{Exit, FastPath, Limits};
use crate::store::Hit;
use crate::telemetry::access_log;

/// Largest head the fast path reads; a larger one goes to hyper (which
/// answers 431 at the same size).
const MAX_HEAD: usize = crate::net::MAX_HEAD_BYTES;
/// Headers parsed at most; more go to hyper.
const MAX_HEADERS: usize = 64;
/// Largest `sendfile` call before the connection lets others run, as
/// nginx's `sendfile_max_chunk` (2m): one client on loopback can take
/// megabytes at a time, and a hundred starting together waited for each
/// other's. The first call is smaller still, so that every client of a
/// burst gets its first bytes soon.
const SENDFILE_CHUNK: usize = 2 << 20;
const FIRST_SENDFILE: usize = 64 << 10;
/// Bodies up to this size are gathered with their head into one write;
/// larger ones go by `sendfile` (see [`send`]).
const GATHER_MAX: u64 = 256 * 1024;

/// A request head the fast path may answer, borrowed from the
/// connection's buffer (parsing it copies nothing).
#[derive(Debug)]
pub struct Head<'a> {
    pub method: Method,
    /// The path, without the query.
    pub path: &'a str,
    /// The query, if any (Delivery Optimization's `cacheHostOrigin`).
    pub query: Option<&'a str>,
    /// The headers a response plan reads (ranges and preconditions).
    pub headers: PlanHeaders<'a>,
    /// `Connection: close`.
    pub close: bool,
    /// Bytes of the head.
    pub len: usize,
    /// What the access log shows of the request, when it is on.
    pub log: Option<access_log::Fields>,
}

/// What a buffer's start is. Lives on the stack for one parse: boxing the
/// head would cost an allocation per request.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Parsed<'a> {
    /// Not a whole head yet.
    Partial,
    /// A head the fast path answers if its file is stored or to be
    /// followed whole (see [`ContentService::plan_fast`]).
    Fast(Head<'a>),
    /// Anything else: hyper's to answer.
    Other,
}

/// The headers [`Plan`]s read.
const PLAN_HEADERS: [HeaderName; 6] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// The values of `PLAN_HEADERS` in a request, by index; the first of a
/// repeated header counts, as with `HeaderMap::get`.
#[derive(Debug, Default)]
pub struct PlanHeaders<'a>([Option<&'a [u8]>; 6]);

impl PlanHeaders<'_> {
    /// The plan headers the request has, with their values.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &[u8])> {
        PLAN_HEADERS
            .iter()
            .zip(self.0)
            .filter_map(|(name, value)| Some((name, value?)))
    }

    /// How many of the plan headers the request has.
    pub fn len(&self) -> usize {
        self.0.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RequestHeaders for PlanHeaders<'_> {
    fn value(&self, name: &HeaderName) -> Option<&[u8]> {
        let i = PLAN_HEADERS.iter().position(|k| k == name)?;
        self.0[i]
    }
}

/// Parses the head at the start of `buf`: a bodiless HTTP/1.1 GET or HEAD
/// in origin form with one valid `Host` and nothing the fast path does not
/// do (upgrades, expectations, bodies) is `Fast`; anything else, malformed
/// included, is `Other`. With `for_log`, the target and the headers the
/// access log shows are kept too.
pub fn parse_head(buf: &[u8], for_log: bool) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::Other,
    };
    let (Some(1), Some(target)) = (req.version, req.path) else {
        return Parsed::Other;
    };
    if !target.starts_with('/') || !uri_accepts(target.as_bytes()) {
        return Parsed::Other; // hyper's 400 for the characters it refuses
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.split_once('#').map_or(q, |(q, _)| q))),
        None => (target, None),
    };
    let hosts = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    if !super::host_fields_valid(true, hosts.map(|h| h.value)) {
        return Parsed::Other; // hyper's 400
    }
    let mut plan_headers = PlanHeaders::default();
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
            || (name.eq_ignore_ascii_case("content-length") && h.value != b"0")
        {
            return Parsed::Other;
        }
        if name.eq_ignore_ascii_case("connection") {
            let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if value.contains("upgrade") {
                return Parsed::Other;
            }
            close |= value.split(',').any(|t| t.trim() == "close");
            continue;
        }
        if let Some(i) = PLAN_HEADERS
            .iter()
            .position(|k| name.eq_ignore_ascii_case(k.as_str()))
        {
            if !is_header_value(h.value) {
                return Parsed::Other;
            }
            plan_headers.0[i].get_or_insert(h.value);
        }
    }
    Parsed::Fast(Head {
        method,
        path,
        query,
        headers: plan_headers,
        close,
        len,
        log: for_log.then(|| {
            let value = |wanted: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(wanted))
                    .map(|h| h.value)
            };
            access_log::Fields::new(
                target.as_bytes(),
                value("range"),
                value("referer"),
                value("user-agent"),
            )
        }),
    })
}

/// What the `http` crate's URI parser (hyper's) accepts in an origin-form
/// target: the same bytes as its tables (WHATWG path and query states),
/// so that both paths give one answer; httparse is laxer (`"`, `<`, `>` in
/// a query).
fn uri_accepts(target: &[u8]) -> bool {
    let path_byte = |b: u8| matches!(b, 0x21..=0x3B | 0x3D | 0x40..=0x5F | 0x61..=0x7E | 0x80..);
    let query_byte = |b: u8| matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x7E | 0x80..);
    let (before_fragment, _) = match target.iter().position(|&b| b == b'#') {
        Some(i) => target.split_at(i),
        None => (target, &[][..]),
    };
    let (path, query) = match before_fragment.iter().position(|&b| b == b'?') {
        Some(i) => (&before_fragment[..i], &before_fragment[i + 1..]),
        None => (before_fragment, &[][..]),
    };
    path.iter().all(|&b| path_byte(b)) && query.iter().all(|&b| query_byte(b))
}

/// What `HeaderValue::from_bytes` accepts (httparse is laxer).
fn is_header_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

impl FastPath for ContentService {
    fn serve<'a>(
        &'a self,
        stream: &'a mut TcpStream,
        client: std::net::IpAddr,
        limits: Limits,
        shutdown: &'a CancellationToken,
        read: BytesMut,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Exit> + Send + 'a>> {
        Box::pin(serve(stream, client, self, limits, shutdown, read))
    }
}

/// Serves `stream` until it closes or holds a request the fast path does
/// not answer. Waits are bounded as hyper's are: a head must arrive within
/// the header timeout (and the idle timeout between requests), and a
/// client that takes no bytes for the send timeout is dropped.
pub async fn serve(
    stream: &mut TcpStream,
    peer: std::net::IpAddr,
    content: &ContentService,
    limits: Limits,
    shutdown: &CancellationToken,
    read: BytesMut,
) -> Exit {
    // What was read before (past a PROXY protocol header), if anything.
    let mut buf = read;
    buf.reserve(4096);
    // The response head is written here, reused request after request.
    let mut head_out = Vec::with_capacity(512);
    loop {
        let wait = if buf.is_empty() {
            limits.header_timeout.min(limits.idle_timeout)
        } else {
            limits.header_timeout
        };
        let deadline = Instant::now() + wait;
        // Plans are owned: the head borrowed from `buf` is done with before
        // `buf` is read into or advanced.
        let (started, method, close, len, log, (plan, mut source, outcome, unverified)) = loop {
            match parse_head(&buf, content.access_log.is_some()) {
                // The update server's `?wsdl` GETs are hyper's, as its POSTs
                // are, and so are the server-sync services'.
                Parsed::Fast(head)
                    if crate::wsus::client::service_of(head.path).is_some()
                        || crate::wsus::upstream::service_of(head.path).is_some() =>
                {
                    return Exit::Handoff(buf.freeze());
                }
                Parsed::Fast(head) => {
                    let started = std::time::Instant::now();
                    let planned = content.plan_fast(head.path, head.query, &head.headers);
                    let Some(planned) = planned.await else {
                        return Exit::Handoff(buf.freeze());
                    };
                    break (
                        started,
                        head.method,
                        head.close,
                        head.len,
                        head.log,
                        planned,
                    );
                }
                Parsed::Other => return Exit::Handoff(buf.freeze()),
                Parsed::Partial if buf.len() >= MAX_HEAD => return Exit::Handoff(buf.freeze()),
                Parsed::Partial => {}
            }
            let read = tokio::select! {
                _ = shutdown.cancelled(), if buf.is_empty() => return Exit::Closed,
                read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => read,
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Exit::Closed, // closed, failed or too slow
            }
        };
        buf.advance(len);
        let close = close || shutdown.is_cancelled();
        serialize_head(&plan, close, &mut head_out);
        let mut written = Written::default();
        let result = send(
            stream,
            &plan,
            &mut source,
            &head_out,
            method == Method::HEAD,
            limits.send_timeout,
            &mut written,
        )
        .await;
        let sent = written.bytes.saturating_sub(head_out.len() as u64);
        let ended = written.last.unwrap_or_else(std::time::Instant::now);
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::TimedOut) {
            content.metrics.send_timeout();
        }
        let answer = Answer {
            unverified,
            outcome,
            status: plan.status.as_u16(),
            started,
            request: log.map(|fields| access_log::Request {
                time: SystemTime::now(),
                remote: Some(peer),
                method,
                version: http::Version::HTTP_11,
                fields,
            }),
        };
        let failed = result.is_err() && matches!(&source, FastSource::Following(f) if f.failed());
        answer.finish(
            &content.metrics,
            content.access_log.as_ref(),
            sent,
            failed,
            ended,
        );
        if result.is_err() || close {
            return Exit::Closed;
        }
    }
}

/// Writes one planned response, by what measured fastest here (loopback,
/// `wrk`, server CPU per request alongside): a small body goes out with its
/// head in one gathered write from the mapped file (64 KiB ranges: 36–40k
/// req/s, against 33–35k by `sendfile`); a larger one gets its head with
/// `MSG_MORE`, so the head and the first body bytes share a segment, then
/// `sendfile` (1 MiB files: 3.6–4.7k req/s, against 2.3–2.9k without
/// `MSG_MORE` and 2.9–3.9k copied at twice the CPU).
async fn send(
    stream: &TcpStream,
    plan: &Plan,
    source: &mut FastSource,
    head: &[u8],
    head_only: bool,
    stall: Duration,
    written: &mut Written,
) -> io::Result<()> {
    match source {
        FastSource::Stored(hit) => {
            send_stored(stream, plan, hit, head, head_only, stall, written).await
        }
        FastSource::Following(follow) => {
            send_following(stream, plan, follow, head, head_only, stall, written).await
        }
    }
}

/// What a response has written so far.
#[derive(Default)]
struct Written {
    bytes: u64,
    /// Just before the latest write: after the last, when the response
    /// ended as a client could see (see `observe`).
    last: Option<std::time::Instant>,
}

/// Slices gathered on the stack: a head and one part, or a short multipart.
const STACK_SLICES: usize = 8;

/// [`send`]'s writes for a stored file, counting the bytes that went into
/// the socket.
async fn send_stored<'p>(
    stream: &TcpStream,
    plan: &'p Plan,
    hit: &'p Hit,
    head: &'p [u8],
    head_only: bool,
    stall: Duration,
    written: &mut Written,
) -> io::Result<()> {
    if head_only {
        return write_all(stream, &mut [io::IoSlice::new(head)], false, stall, written).await;
    }
    let parts = plan.parts();
    if plan.body_len() <= GATHER_MAX {
        let map = hit.bytes();
        let slice = |part: &'p Part| match part {
            Part::Literal(b) => io::IoSlice::new(b),
            Part::File(r) => io::IoSlice::new(&map[r.start as usize..r.end as usize]),
        };
        let slices = std::iter::once(io::IoSlice::new(head)).chain(parts.iter().map(slice));
        if parts.len() < STACK_SLICES {
            let mut array = [io::IoSlice::new(&[]); STACK_SLICES];
            let mut n = 0;
            for (to, from) in array.iter_mut().zip(slices) {
                *to = from;
                n += 1;
            }
            return write_all(stream, &mut array[..n], false, stall, written).await;
        }
        let mut vec: Vec<io::IoSlice<'_>> = slices.collect();
        return write_all(stream, &mut vec, false, stall, written).await;
    }
    write_all(stream, &mut [io::IoSlice::new(head)], true, stall, written).await?;
    for (i, part) in parts.iter().enumerate() {
        let more = i + 1 < parts.len();
        match part {
            Part::Literal(b) => {
                write_all(stream, &mut [io::IoSlice::new(b)], more, stall, written).await?
            }
            Part::File(r) => {
                send_file(stream, hit.file(), r.start, r.end - r.start, stall, written).await?
            }
        }
    }
    Ok(())
}

/// [`send`]'s writes for a file being downloaded: each part's bytes by
/// `sendfile` from the temp file as they are written, woken by the
/// download; the last byte only once the file is verified. A failed
/// download ends in an error, and the connection is cut mid-body.
async fn send_following(
    stream: &TcpStream,
    plan: &Plan,
    follow: &mut Follow,
    head: &[u8],
    head_only: bool,
    stall: Duration,
    written: &mut Written,
) -> io::Result<()> {
    let parts = plan.parts();
    let more = !head_only && !parts.is_empty();
    write_all(stream, &mut [io::IoSlice::new(head)], more, stall, written).await?;
    if head_only {
        return Ok(());
    }
    for (i, part) in parts.iter().enumerate() {
        match part {
            Part::Literal(b) => {
                let more = i + 1 < parts.len();
                write_all(stream, &mut [io::IoSlice::new(b)], more, stall, written).await?
            }
            Part::File(r) => {
                let mut pos = r.start;
                while pos < r.end {
                    let available = follow.readable(pos, r.end).await?.unwrap_or(r.end);
                    let upto = available.min(r.end);
                    let file = follow
                        .file()
                        .ok_or_else(|| io::Error::other("no temp file to follow"))?;
                    send_file(stream, file.file(), pos, upto - pos, stall, written).await?;
                    pos = upto;
                }
            }
        }
    }
    Ok(())
}

/// Writes into `out` (cleared first): `HTTP/1.1 <status>`, the plan's
/// headers, `Date` and, when closing, `Connection: close`.
fn serialize_head(plan: &Plan, close: bool, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(plan.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(plan.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    plan.for_each_header(|name, value| {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    });
    out.extend_from_slice(b"date: ");
    with_date(|date| out.extend_from_slice(date.as_bytes()));
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Calls `f` with the current `Date` value, formatted once a second per
/// thread (as hyper does).
fn with_date(f: impl FnOnce(&str)) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second {
            *at = second;
            text.clear();
            let _ =
                std::fmt::Write::write_fmt(text, format_args!("{}", httpdate::HttpDate::from(now)));
        }
        f(text)
    })
}

/// Runs a non-blocking socket write until it makes progress: at once
/// when the socket has room (no timer, no wake-up), else after waiting for
/// room at most `stall` (a client that stopped reading is dropped).
async fn write_some(
    stream: &TcpStream,
    stall: Duration,
    mut write: impl FnMut() -> io::Result<usize>,
) -> io::Result<usize> {
    loop {
        match stream.try_io(Interest::WRITABLE, &mut write) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::timeout(stall, stream.writable())
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")
                    })??;
            }
            other => return other,
        }
    }
}

/// Writes every byte of `slices`, gathered (`sendmsg`); with `more`, tells
/// the kernel more follows (`MSG_MORE`) so it waits to fill a segment.
async fn write_all(
    stream: &TcpStream,
    slices: &mut [io::IoSlice<'_>],
    more: bool,
    stall: Duration,
    written: &mut Written,
) -> io::Result<()> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    let mut left: &mut [io::IoSlice<'_>] = slices;
    while !left.is_empty() {
        written.last = Some(std::time::Instant::now());
        let n = write_some(stream, stall, || {
            // SAFETY: a zeroed msghdr is valid; IoSlice is ABI-compatible
            // with iovec and the buffers outlive the call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = left.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = left.len().min(1024) as _; // IOV_MAX
            syscall_result(unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, flags) })
        })
        .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        written.bytes += n as u64;
        io::IoSlice::advance_slices(&mut left, n);
    }
    Ok(())
}

/// A byte count from a syscall that returns -1 and sets `errno` on failure.
fn syscall_result(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Sends `len` bytes of the hit's file from `offset` with `sendfile(2)`:
/// page cache to socket, no copy through user space.
async fn send_file(
    stream: &TcpStream,
    file: &std::fs::File,
    offset: u64,
    len: u64,
    stall: Duration,
    written: &mut Written,
) -> io::Result<()> {
    let mut offset = offset as libc::off_t;
    let mut left = len as usize;
    let mut most = FIRST_SENDFILE;
    while left > 0 {
        if most == SENDFILE_CHUNK {
            tokio::task::yield_now().await;
        }
        written.last = Some(std::time::Instant::now());
        let n = write_some(stream, stall, || {
            let chunk = left.min(most);
            // SAFETY: valid descriptors; the kernel advances `offset`.
            syscall_result(unsafe {
                libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut offset, chunk)
            })
        })
        .await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stored file shorter than its plan",
            ));
        }
        written.bytes += n as u64;
        left -= n;
        most = SENDFILE_CHUNK;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(raw: &str) -> Head<'_> {
        match parse_head(raw.as_bytes(), false) {
            Parsed::Fast(h) => h,
            other => panic!("{raw:?} → {other:?}"),
        }
    }

    fn other(raw: &str) {
        assert!(
            matches!(parse_head(raw.as_bytes(), false), Parsed::Other),
            "{raw:?}"
        );
    }

    #[test]
    fn simple_gets_and_heads_are_fast() {
        let h = fast("GET /Content/AB/x.cab?cacheHostOrigin=h HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nUser-Agent: BITS\r\n\r\n");
        assert_eq!(h.path, "/Content/AB/x.cab");
        assert_eq!(h.headers.value(&header::RANGE), Some(&b"bytes=0-9"[..]));
        assert_eq!(h.headers.len(), 1, "only the headers plans read");
        assert!(!h.close);
        assert!(h.log.is_none());
        let Parsed::Fast(logged) = parse_head(
            b"GET /Content/AB/x.cab?cacheHostOrigin=h HTTP/1.1\r\nHost: x\r\nUser-Agent: BITS\r\nReferer: r\r\n\r\n",
            true,
        ) else {
            panic!("fast")
        };
        assert_eq!(
            logged.headers.len(),
            0,
            "logged fields are not plan headers"
        );
        let fields = logged.log.unwrap();
        assert_eq!(fields.target(), "/Content/AB/x.cab?cacheHostOrigin=h");
        assert_eq!(fields.user_agent(), Some("BITS"));
        assert_eq!(fields.referer(), Some("r"));
        assert_eq!(fields.range(), None);
        let h = fast(
            "HEAD / HTTP/1.1\r\nHost: [::1]:8530\r\nConnection: Keep-Alive, close\r\nContent-Length: 0\r\n\r\nGET",
        );
        assert_eq!(h.method, Method::HEAD);
        assert!(h.close);
        assert_eq!(
            h.len,
            "HEAD / HTTP/1.1\r\nHost: [::1]:8530\r\nConnection: Keep-Alive, close\r\nContent-Length: 0\r\n\r\n".len()
        );
    }

    #[test]
    fn everything_else_is_hypers() {
        other("POST / HTTP/1.1\r\nHost: x\r\n\r\n");
        other("GET / HTTP/1.0\r\nHost: x\r\n\r\n");
        other("GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n");
        other("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        other("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n");
        other("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
        other("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n");
        other("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        other("GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n");
        // Characters hyper's URI parser refuses (a 400 there).
        for target in ["/x?a=\"b\"", "/x?<a>", "/x?a>b", "/x<y", "/x`y"] {
            other(&format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n"));
        }
        fast("GET /x?a=b&c=%22{}|^ HTTP/1.1\r\nHost: x\r\n\r\n");
        fast("GET /x\"{}y HTTP/1.1\r\nHost: x\r\n\r\n");
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect();
        other(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n"));
        // RFC 9112 §3.2: exactly one valid Host, or hyper's 400.
        fast("GET / HTTP/1.1\r\nHost: \r\n\r\n");
        other("GET / HTTP/1.1\r\n\r\n");
        other("GET / HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n");
        other("GET / HTTP/1.1\r\nHost: a b\r\n\r\n");
        other("GET / HTTP/1.1\r\nHost: user@x\r\n\r\n");
        other("GET / HTTP/1.1\r\nHost: x/y\r\n\r\n");
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nHost", false),
            Parsed::Partial
        ));
        assert!(matches!(parse_head(b"", false), Parsed::Partial));
    }
}
