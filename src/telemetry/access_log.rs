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
use serde::{Deserialize, Serialize};
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::telemetry::metrics::{Metrics, Outcome};

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

/// The access log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct AccessLogSettings {
    /// One line per content request: a file path, "-" for stdout, or "off".
    /// SIGHUP (`systemctl reload`) reopens it, for logrotate.
    pub access_log: String,
    /// "combined" (nginx/Apache combined + cache status + seconds, for
    /// GoAccess) or "json" (one object per line).
    pub access_log_format: Format,
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        AccessLogSettings {
            access_log: "off".into(),
            access_log_format: Format::Combined,
        }
    }
}

impl AccessLogSettings {
    /// Where lines go; `None`: off (also an empty value).
    pub fn destination(&self) -> Result<Option<Destination>, crate::settings::Invalid> {
        match self.access_log.trim() {
            "" | "off" => Ok(None),
            v if v.ends_with('/') => Err(crate::settings::Invalid::new(
                "access_log",
                format!("{v:?} is a directory; name a file (or - for stdout)"),
            )),
            v => Ok(Some(Destination::parse(v))),
        }
    }
}

/// How lines look.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `combined`, then the cache status and the duration in seconds.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

/// What the cache did for a request, as logged: how it was answered, unless
/// the server failed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Answered(Outcome),
    /// A server-side failure: a 5xx other than a busy 503, or a body cut
    /// short by a failed download.
    Error,
}

impl CacheStatus {
    /// The status of a request that got `status` by `outcome`; `failed`
    /// when its body ended in an error.
    pub fn of(outcome: Outcome, status: u16, failed: bool) -> CacheStatus {
        if failed || (status >= 500 && status != 503) {
            CacheStatus::Error
        } else {
            CacheStatus::Answered(outcome)
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Answered(Outcome::Hit) => "HIT",
            CacheStatus::Answered(Outcome::Miss) => "MISS",
            CacheStatus::Answered(Outcome::Coalesced) => "COALESCED",
            CacheStatus::Answered(Outcome::Passthrough) => "PASSTHROUGH",
            CacheStatus::Answered(Outcome::Redirect) => "REDIRECT",
            CacheStatus::Answered(Outcome::Refused) => "REFUSED",
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
    pub version: Version,
    pub fields: Fields,
}

impl Request {
    /// The logged fields of a request head parsed by hyper.
    pub fn new(
        remote: Option<IpAddr>,
        method: Method,
        target: &str,
        version: Version,
        headers: &HeaderMap,
    ) -> Request {
        let value = |name: http::HeaderName| headers.get(name).map(|v| v.as_bytes());
        Request {
            time: SystemTime::now(),
            remote,
            method,
            version,
            fields: Fields::new(
                target.as_bytes(),
                value(http::header::RANGE),
                value(http::header::REFERER),
                value(http::header::USER_AGENT),
            ),
        }
    }
}

/// The client-supplied text of a line (target, `Range`, `Referer`,
/// `User-Agent`) in one allocation: a request costs the log one string.
#[derive(Debug, Clone)]
pub struct Fields {
    text: String,
    /// End of each field in `text`; `None` for an absent header.
    ends: [Option<u32>; 4],
}

impl Fields {
    pub fn new(
        target: &[u8],
        range: Option<&[u8]>,
        referer: Option<&[u8]>,
        user_agent: Option<&[u8]>,
    ) -> Fields {
        let parts = [Some(target), range, referer, user_agent];
        let len = parts.iter().flatten().map(|p| p.len()).sum();
        let mut text = String::with_capacity(len);
        let ends = parts.map(|part| {
            part.map(|bytes| {
                text.push_str(&String::from_utf8_lossy(bytes));
                text.len() as u32
            })
        });
        Fields { text, ends }
    }

    fn get(&self, i: usize) -> Option<&str> {
        let end = self.ends[i]? as usize;
        let start = self.ends[..i].iter().rev().find_map(|e| *e).unwrap_or(0) as usize;
        Some(&self.text[start..end])
    }

    /// The request target as sent: path and query.
    pub fn target(&self) -> &str {
        self.get(0).unwrap_or("")
    }

    pub fn range(&self) -> Option<&str> {
        self.get(1)
    }

    pub fn referer(&self) -> Option<&str> {
        self.get(2)
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.get(3)
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
    /// A Delivery Optimization object no digest from elsewhere verified:
    /// ` UNVERIFIED` after the time (combined), `"unverified":true` (JSON).
    pub unverified: bool,
}

/// What else the writer is asked, on a channel of its own: sending one
/// never blocks the runtime, and lines queued before it are written first.
enum Control {
    Reopen,
    Flush(oneshot::Sender<()>),
}

/// The sending side; cheap to clone. Lines go down a bounded lock-free
/// channel (`sync_channel`: one slot write, no allocation, no wake-up).
#[derive(Clone)]
pub struct AccessLog {
    lines: mpsc::SyncSender<Record>,
    control: mpsc::Sender<Control>,
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
        let (lines, line_rx) = mpsc::sync_channel(QUEUE);
        let (control, control_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(line_rx, control_rx, out, destination, format))?;
        let log = AccessLog {
            lines,
            control,
            metrics,
        };
        log.reopen_on_sighup()?;
        Ok(log)
    }

    /// Queues a line; drops (and counts) it if the writer is behind.
    pub fn log(&self, record: Record) {
        if self.lines.try_send(record).is_err() {
            self.metrics.access_log_dropped();
        }
    }

    /// Waits until every line queued so far is written.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.control.send(Control::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }

    fn reopen_on_sighup(&self) -> io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        let control = self.control.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                if control.send(Control::Reopen).is_err() {
                    return; // the writer is gone
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

/// How often the writer takes what is queued. It sleeps in between
/// rather than waiting on the channel, so sending a line never wakes a
/// thread (a futex call per request, at tens of thousands a second).
const WRITE_INTERVAL: Duration = Duration::from_millis(50);

/// The writer thread: every [`WRITE_INTERVAL`], formats whatever is queued
/// into one buffer and writes it with one call (or more, past [`BUFFER`]),
/// then answers the control messages that came before; ends when every
/// sender is gone.
fn write_lines(
    lines: mpsc::Receiver<Record>,
    control: mpsc::Receiver<Control>,
    mut out: Output,
    destination: Destination,
    format: Format,
) {
    let mut buf = String::with_capacity(BUFFER);
    let mut clock = LineClock::default();
    loop {
        // Taken first: every line queued before these is in the channel now.
        let asked: Vec<Control> = control.try_iter().collect();
        let closed = loop {
            match lines.try_recv() {
                Ok(record) => {
                    format_record(&mut buf, &record, format, &mut clock);
                    if buf.len() >= BUFFER {
                        write_out(&mut out, &mut buf);
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break false,
                Err(mpsc::TryRecvError::Disconnected) => break true,
            }
        };
        write_out(&mut out, &mut buf);
        for message in asked {
            match message {
                Control::Flush(done) => {
                    let _ = done.send(());
                }
                Control::Reopen => match Output::open(&destination) {
                    Ok(reopened) => {
                        out = reopened;
                        tracing::info!(?destination, "access log reopened (SIGHUP)");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "access log reopen failed; writing to the old file")
                    }
                },
            }
        }
        if closed {
            return;
        }
        std::thread::sleep(WRITE_INTERVAL);
    }
}

fn write_out(out: &mut Output, buf: &mut String) {
    if buf.is_empty() {
        return;
    }
    if let Err(e) = out.write_all(buf.as_bytes()) {
        tracing::warn!(error = %e, lines = buf.lines().count(), "access log write failed; lines lost");
    }
    buf.clear();
}

/// The time fields of lines, formatted once per second.
#[derive(Default)]
struct LineClock {
    second: Option<u64>,
    /// `10/Oct/2026:13:55:36 +0000`
    clf: String,
    /// `2026-10-10T13:55:36`
    rfc3339: String,
}

impl LineClock {
    fn at(&mut self, t: SystemTime) -> (&str, &str, u32) {
        let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let second = since.as_secs();
        if self.second != Some(second) {
            let dt =
                time::OffsetDateTime::from(SystemTime::UNIX_EPOCH + Duration::from_secs(second));
            self.clf.clear();
            let _ = write!(
                self.clf,
                "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
                dt.day(),
                MONTHS[dt.month() as usize - 1],
                dt.year(),
                dt.hour(),
                dt.minute(),
                dt.second()
            );
            self.rfc3339.clear();
            let _ = write!(
                self.rfc3339,
                "{}-{:02}-{:02}T{:02}:{:02}:{:02}",
                dt.year(),
                dt.month() as u8,
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second()
            );
            self.second = Some(second);
        }
        (&self.clf, &self.rfc3339, since.subsec_millis())
    }
}

/// Appends one line for `r` to `buf`.
fn format_record(buf: &mut String, r: &Record, format: Format, clock: &mut LineClock) {
    match format {
        Format::Combined => combined(buf, r, clock),
        Format::Json => json(buf, r, clock),
    }
}

/// `host - - [time] "request" status bytes "referer" "ua" CACHE seconds`:
/// what nginx's `combined` says, then the cache status and the request
/// time in seconds with millisecond resolution, as GoAccess's `%C %T` read.
fn combined(buf: &mut String, r: &Record, clock: &mut LineClock) {
    let q = &r.request;
    let (clf, _, _) = clock.at(q.time);
    let _ = writeln!(
        buf,
        "{} - - [{clf}] \"{} {} {:?}\" {} {} \"{}\" \"{}\" {} {}",
        Remote(q.remote),
        q.method,
        Escaped(q.fields.target()),
        q.version,
        r.status,
        r.bytes,
        Escaped(q.fields.referer().unwrap_or("-")),
        Escaped(q.fields.user_agent().unwrap_or("-")),
        r.cache.as_str(),
        Thousandths(r.duration.as_millis()),
    );
    if r.unverified {
        buf.pop();
        buf.push_str(" UNVERIFIED\n");
    }
}

/// Thousandths as a decimal with three places (milliseconds as seconds,
/// microseconds as milliseconds: `1.500`), by integer arithmetic.
struct Thousandths(u128);

impl std::fmt::Display for Thousandths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
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
        // Runs of printable ASCII go out as they are (one write each); any
        // other byte, a multi-byte character's included, is escaped alone.
        for run in self.0.as_bytes().split_inclusive(|b| !is_plain(*b)) {
            let (last, head) = run
                .split_last()
                .expect("split_inclusive yields no empty run");
            let (head, escaped) = if is_plain(*last) {
                (run, None)
            } else {
                (head, Some(*last))
            };
            f.write_str(std::str::from_utf8(head).expect("printable ASCII"))?;
            if let Some(b) = escaped {
                write!(f, "\\x{b:02X}")?;
            }
        }
        Ok(())
    }
}

/// Printable ASCII other than the quote and the backslash.
fn is_plain(b: u8) -> bool {
    (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'
}

/// One JSON object with exactly the documented fields, written directly
/// (strings escaped by serde_json) rather than built as a map.
fn json(buf: &mut String, r: &Record, clock: &mut LineClock) {
    let q = &r.request;
    let (_, rfc3339, millis) = clock.at(q.time);
    let _ = write!(buf, "{{\"time\":\"{rfc3339}.{millis:03}Z\",\"remote\":");
    match q.remote {
        Some(ip) => {
            let _ = write!(buf, "\"{ip}\"");
        }
        None => buf.push_str("null"),
    }
    let _ = write!(buf, ",\"method\":\"{}\",\"path\":", q.method);
    json_string(buf, Some(q.fields.target()));
    let _ = write!(
        buf,
        ",\"status\":{},\"bytes\":{},\"duration_ms\":{},\"cache\":\"{}\",\"range\":",
        r.status,
        r.bytes,
        Thousandths(r.duration.as_micros()),
        r.cache.as_str()
    );
    json_string(buf, q.fields.range());
    buf.push_str(",\"ua\":");
    json_string(buf, q.fields.user_agent());
    if r.unverified {
        buf.push_str(",\"unverified\":true");
    }
    buf.push_str("}\n");
}

/// A JSON string (or null); the common case, printable ASCII with
/// nothing to escape, is copied as it is.
fn json_string(buf: &mut String, s: Option<&str>) {
    match s {
        Some(s) if s.bytes().all(is_plain) => {
            buf.push('"');
            buf.push_str(s);
            buf.push('"');
        }
        Some(s) => buf.push_str(&serde_json::to_string(s).expect("a str serializes")),
        None => buf.push_str("null"),
    }
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
            cache: CacheStatus::Answered(Outcome::Hit),
            unverified: false,
        }
    }

    #[test]
    fn combined_is_nginx_combined_then_cache_and_seconds() {
        let mut buf = String::new();
        format_record(
            &mut buf,
            &record(),
            Format::Combined,
            &mut LineClock::default(),
        );
        assert_eq!(
            buf,
            "10.1.2.3 - - [21/Sep/2026:14:13:20 +0000] \"GET /c/msdownload/update/a_0123.cab?cacheHostOrigin=x HTTP/1.1\" 206 100 \"-\" \"Microsoft BITS/7.8 \\x22quoted\\x22\" HIT 0.001\n"
        );
    }

    #[test]
    fn json_has_exactly_the_documented_fields() {
        let mut buf = String::new();
        format_record(&mut buf, &record(), Format::Json, &mut LineClock::default());
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
        assert_eq!(v["time"], "2026-09-21T14:13:20.250Z");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["range"], "bytes=0-99");
        assert_eq!(v["cache"], "HIT");
        let mut no_range = record();
        no_range.request.fields = Fields::new(b"/x", None, None, Some(b"ua"));
        let mut buf = String::new();
        format_record(&mut buf, &no_range, Format::Json, &mut LineClock::default());
        let v: serde_json::Value = serde_json::from_str(&buf).unwrap();
        assert!(v["range"].is_null());
    }

    #[test]
    fn a_client_cannot_forge_a_line() {
        let mut r = record();
        r.request.fields = Fields::new(
            "/é?\\".as_bytes(),
            None,
            None,
            Some(b"x\"\n1.2.3.4 - - [forged]"),
        );
        let mut buf = String::new();
        format_record(&mut buf, &r, Format::Combined, &mut LineClock::default());
        assert_eq!(buf.lines().count(), 1, "{buf}");
        assert!(buf.contains("x\\x22\\x0A1.2.3.4 - - [forged]"), "{buf}");
        assert!(buf.contains("GET /\\xC3\\xA9?\\x5C HTTP/1.1"), "{buf}");
        let mut buf = String::new();
        format_record(&mut buf, &r, Format::Json, &mut LineClock::default());
        let v: serde_json::Value = serde_json::from_str(&buf).unwrap();
        assert_eq!(v["ua"], "x\"\n1.2.3.4 - - [forged]");
        assert_eq!(v["path"], "/é?\\");
    }

    #[test]
    fn fields_keep_absent_and_empty_apart() {
        let f = Fields::new(b"/a?b", Some(b""), None, Some(b"curl/8"));
        assert_eq!(f.target(), "/a?b");
        assert_eq!(f.range(), Some(""));
        assert_eq!(f.referer(), None);
        assert_eq!(f.user_agent(), Some("curl/8"));
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
            CacheStatus::Answered(Outcome::Refused)
        );
        assert_eq!(
            CacheStatus::of(Outcome::Coalesced, 206, false),
            CacheStatus::Answered(Outcome::Coalesced)
        );
    }
}
