//! The access log: one line per content request, in the Apache/nginx
//! `combined` format (plus cache status and duration) or as JSON.
//!
//! The request path only fills a [`Record`] and sends it down a bounded
//! channel; a writer thread formats and writes lines in batches, so a slow
//! disk never holds up a response. When the writer falls behind, lines
//! are dropped and counted (`upcache_access_log_dropped_total`) rather than
//! memory growing. `SIGHUP` reopens the file (for logrotate).

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, Version};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::{Metrics, Outcome};

/// Lines waiting for the writer at most; beyond, lines are dropped.
const QUEUE: usize = 64 * 1024;
/// Bytes buffered between writes to the file.
const BUFFER: usize = 256 * 1024;

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl Destination {
    /// `-` is stdout; anything else a file path.
    pub fn parse(s: &str) -> Destination {
        match s {
            "-" => Destination::Stdout,
            path => Destination::File(path.into()),
        }
    }
}

/// How lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `combined`, then the cache status and the duration in seconds.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

/// What the cache did for a request, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Coalesced,
    Passthrough,
    Redirect,
    Refused,
    /// A server-side failure: a 5xx other than a busy 503, or a body cut
    /// short by a failed download.
    Error,
}

impl CacheStatus {
    /// The status of a request that got `status` by `outcome`; `failed`
    /// when its body ended in an error.
    pub fn of(outcome: Outcome, status: u16, failed: bool) -> CacheStatus {
        if failed || (status >= 500 && status != 503) {
            return CacheStatus::Error;
        }
        match outcome {
            Outcome::Hit => CacheStatus::Hit,
            Outcome::Miss => CacheStatus::Miss,
            Outcome::Coalesced => CacheStatus::Coalesced,
            Outcome::Passthrough => CacheStatus::Passthrough,
            Outcome::Redirect => CacheStatus::Redirect,
            Outcome::Refused => CacheStatus::Refused,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Coalesced => "COALESCED",
            CacheStatus::Passthrough => "PASSTHROUGH",
            CacheStatus::Redirect => "REDIRECT",
            CacheStatus::Refused => "REFUSED",
            CacheStatus::Error => "ERROR",
        }
    }
}

/// What is known of a request when its head is read.
#[derive(Debug, Clone)]
pub struct Request {
    pub time: SystemTime,
    pub remote: Option<IpAddr>,
    pub method: Method,
    /// The request target as sent: path and query.
    pub target: Box<str>,
    pub version: Version,
    pub range: Option<Box<str>>,
    pub referer: Option<Box<str>>,
    pub user_agent: Option<Box<str>>,
}

impl Request {
    /// The logged fields of a request head.
    pub fn new(
        remote: Option<IpAddr>,
        method: Method,
        target: &str,
        version: Version,
        headers: &HeaderMap,
    ) -> Request {
        let text = |name: http::HeaderName| {
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into())
        };
        Request {
            time: SystemTime::now(),
            remote,
            method,
            target: target.into(),
            version,
            range: text(http::header::RANGE),
            referer: text(http::header::REFERER),
            user_agent: text(http::header::USER_AGENT),
        }
    }
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct Record {
    pub request: Request,
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    pub duration: Duration,
    pub cache: CacheStatus,
}

enum Message {
    Line(Box<Record>),
    Reopen,
    Flush(oneshot::Sender<()>),
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<Message>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Opens `destination` (failing at start, not at the first request) and
    /// starts the writer thread and the `SIGHUP` watcher.
    pub fn start(
        destination: Destination,
        format: Format,
        metrics: Arc<Metrics>,
    ) -> io::Result<AccessLog> {
        let out = Output::open(&destination)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, out, destination, format))?;
        let log = AccessLog { tx, metrics };
        log.reopen_on_sighup()?;
        Ok(log)
    }

    /// Queues a line; drops (and counts) it if the writer is behind.
    pub fn log(&self, record: Record) {
        if self.tx.try_send(Message::Line(Box::new(record))).is_err() {
            self.metrics.access_log_dropped();
        }
    }

    /// Waits until every line queued so far is written.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    fn reopen_on_sighup(&self) -> io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        let tx = self.tx.downgrade();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let Some(tx) = tx.upgrade() else { return };
                if tx.send(Message::Reopen).await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    }
}

/// The open destination.
enum Output {
    Stdout(io::Stdout),
    File(std::fs::File),
}

impl Output {
    fn open(destination: &Destination) -> io::Result<Output> {
        match destination {
            Destination::Stdout => Ok(Output::Stdout(io::stdout())),
            Destination::File(path) => open_append(path).map(Output::File),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout(s) => {
                let mut s = s.lock();
                s.write_all(bytes)?;
                s.flush()
            }
            Output::File(f) => f.write_all(bytes),
        }
    }
}

fn open_append(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// The writer thread: takes whatever is queued, formats it into one
/// buffer, writes it with one call, and waits for more.
fn write_lines(
    mut rx: mpsc::Receiver<Message>,
    mut out: Output,
    destination: Destination,
    format: Format,
) {
    let mut buf = String::with_capacity(BUFFER);
    let mut acks = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        let mut reopen = false;
        while let Some(message) = next.take() {
            match message {
                Message::Line(record) => format_record(&mut buf, &record, format),
                Message::Reopen => reopen = true,
                Message::Flush(ack) => acks.push(ack),
            }
            if buf.len() < BUFFER && !reopen {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = out.write_all(buf.as_bytes()) {
            tracing::warn!(error = %e, lines = buf.lines().count(), "access log write failed; lines lost");
        }
        buf.clear();
        if reopen {
            match Output::open(&destination) {
                Ok(reopened) => {
                    out = reopened;
                    tracing::info!(?destination, "access log reopened (SIGHUP)");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "access log reopen failed; writing to the old file")
                }
            }
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

/// Appends one line for `r` to `buf`.
pub fn format_record(buf: &mut String, r: &Record, format: Format) {
    match format {
        Format::Combined => combined(buf, r),
        Format::Json => json(buf, r),
    }
}

/// `host - - [time] "request" status bytes "referer" "ua" CACHE seconds`:
/// what nginx's `combined` says, then the cache status and the request
/// time in seconds with millisecond resolution, as GoAccess's `%C %T` read.
fn combined(buf: &mut String, r: &Record) {
    let q = &r.request;
    let time = time::OffsetDateTime::from(q.time);
    let _ = writeln!(
        buf,
        "{} - - [{:02}/{}/{}:{:02}:{:02}:{:02} +0000] \"{} {} {:?}\" {} {} \"{}\" \"{}\" {} {:.3}",
        Remote(q.remote),
        time.day(),
        &MONTHS[time.month() as usize - 1],
        time.year(),
        time.hour(),
        time.minute(),
        time.second(),
        q.method,
        Escaped(&q.target),
        q.version,
        r.status,
        r.bytes,
        Escaped(q.referer.as_deref().unwrap_or("-")),
        Escaped(q.user_agent.as_deref().unwrap_or("-")),
        r.cache.as_str(),
        r.duration.as_secs_f64(),
    );
}

/// The client address, `-` when unknown (no allocation either way).
struct Remote(Option<IpAddr>);

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => f.write_char('-'),
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A client-supplied string inside a quoted field: `"` and `\` escaped,
/// control and non-ASCII bytes as `\xHH` (as nginx does), so no client can
/// forge a line or a field.
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0.bytes() {
            match b {
                b'"' | b'\\' => write!(f, "\\x{b:02X}")?,
                0x20..=0x7e => f.write_char(b as char)?,
                _ => write!(f, "\\x{b:02X}")?,
            }
        }
        Ok(())
    }
}

/// One JSON object with exactly the documented fields.
fn json(buf: &mut String, r: &Record) {
    let q = &r.request;
    let time = time::OffsetDateTime::from(q.time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let line = serde_json::json!({
        "time": time,
        "remote": q.remote.map(|ip| ip.to_string()),
        "method": q.method.as_str(),
        "path": &*q.target,
        "status": r.status,
        "bytes": r.bytes,
        "duration_ms": (r.duration.as_secs_f64() * 1e6).round() / 1e3,
        "cache": r.cache.as_str(),
        "range": q.range.as_deref(),
        "ua": q.user_agent.as_deref(),
    });
    let _ = writeln!(buf, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RANGE, "bytes=0-99".parse().unwrap());
        headers.insert(
            http::header::USER_AGENT,
            "Microsoft BITS/7.8 \"quoted\"".parse().unwrap(),
        );
        let mut request = Request::new(
            Some("10.1.2.3".parse().unwrap()),
            Method::GET,
            "/c/msdownload/update/a_0123.cab?cacheHostOrigin=x",
            Version::HTTP_11,
            &headers,
        );
        request.time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_790_000_000_250);
        Record {
            request,
            status: 206,
            bytes: 100,
            duration: Duration::from_micros(1500),
            cache: CacheStatus::Hit,
        }
    }

    #[test]
    fn combined_is_nginx_combined_then_cache_and_seconds() {
        let mut buf = String::new();
        format_record(&mut buf, &record(), Format::Combined);
        assert_eq!(
            buf,
            "10.1.2.3 - - [21/Sep/2026:14:13:20 +0000] \"GET /c/msdownload/update/a_0123.cab?cacheHostOrigin=x HTTP/1.1\" 206 100 \"-\" \"Microsoft BITS/7.8 \\x22quoted\\x22\" HIT 0.002\n"
        );
    }

    #[test]
    fn json_has_exactly_the_documented_fields() {
        let mut buf = String::new();
        format_record(&mut buf, &record(), Format::Json);
        assert!(buf.ends_with('\n') && buf.lines().count() == 1);
        let v: serde_json::Value = serde_json::from_str(&buf).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "bytes",
                "cache",
                "duration_ms",
                "method",
                "path",
                "range",
                "remote",
                "status",
                "time",
                "ua"
            ]
        );
        assert_eq!(v["time"], "2026-09-21T14:13:20.25Z");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["range"], "bytes=0-99");
        assert_eq!(v["cache"], "HIT");
        let mut no_range = record();
        no_range.request.range = None;
        let mut buf = String::new();
        format_record(&mut buf, &no_range, Format::Json);
        let v: serde_json::Value = serde_json::from_str(&buf).unwrap();
        assert!(v["range"].is_null());
    }

    #[test]
    fn a_client_cannot_forge_a_line() {
        let mut r = record();
        r.request.user_agent = Some("x\"\n1.2.3.4 - - [forged]".into());
        let mut buf = String::new();
        format_record(&mut buf, &r, Format::Combined);
        assert_eq!(buf.lines().count(), 1, "{buf}");
        assert!(buf.contains("x\\x22\\x0A1.2.3.4"), "{buf}");
    }

    #[test]
    fn cache_status_names_failures() {
        assert_eq!(
            CacheStatus::of(Outcome::Miss, 200, true),
            CacheStatus::Error
        );
        assert_eq!(
            CacheStatus::of(Outcome::Miss, 502, false),
            CacheStatus::Error
        );
        assert_eq!(
            CacheStatus::of(Outcome::Refused, 503, false),
            CacheStatus::Refused
        );
        assert_eq!(
            CacheStatus::of(Outcome::Coalesced, 206, false),
            CacheStatus::Coalesced
        );
    }
}
