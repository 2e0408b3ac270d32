//! Counters and histograms for operators, rendered in the Prometheus text
//! format at `GET /metrics` on the admin listener, and the figures the web
//! console and `/api/v1/status` show (hit ratio, bytes saved, the last hour).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// How a content request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the store.
    Hit,
    /// Not stored: started an upstream download.
    Miss,
    /// Not stored: joined a download already running.
    Coalesced,
    /// A range far ahead of a running download, passed through from the upstream.
    Passthrough,
    /// Metadata-only: sent to the upstream.
    Redirect,
    /// Unknown, forbidden or malformed: nothing served.
    Refused,
}

impl Outcome {
    /// Every outcome, in the order of their histograms.
    pub const ALL: [Outcome; 6] = [
        Outcome::Hit,
        Outcome::Miss,
        Outcome::Coalesced,
        Outcome::Passthrough,
        Outcome::Redirect,
        Outcome::Refused,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Coalesced => "coalesced",
            Outcome::Passthrough => "passthrough",
            Outcome::Redirect => "redirect",
            Outcome::Refused => "refused",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerificationLabels {
    verification: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Why the cross-site guard refused an admin request (`admin::browser`).
pub const ADMIN_REFUSED_REASONS: [&str; 4] = ["host", "origin", "cross_site", "content_type"];

/// What can happen with the shared tier: lookups (found, absent, error),
/// uploads, downloads from it that failed (the copy to blame), and
/// lookups skipped for such a copy (passed over).
pub const SHARED_TIER_EVENTS: [&str; 7] = [
    "found",
    "absent",
    "error",
    "uploaded",
    "upload_failed",
    "failed",
    "passed_over",
];

/// Why a Delivery Optimization request was refused (`delivery::origin`).
pub const DO_REFUSED_REASONS: [&str; 10] = [
    "missing",
    "duplicate",
    "encoded",
    "userinfo",
    "port",
    "not_a_name",
    "too_long",
    "not_allowed",
    "address",
    "private_answer",
];

/// How a stored Delivery Optimization object was checked.
const DO_VERIFICATIONS: [&str; 2] = ["verified", "unverified"];

/// How an upstream download ends.
const FETCH_RESULTS: [&str; 2] = ["stored", "failed"];

/// The status codes a content response can have: the plans (200, 206, 304,
/// 412, 416), the redirect, and every error's in `http::error`.
const RESPONSE_CODES: [u16; 16] = [
    200, 206, 302, 304, 400, 403, 404, 405, 412, 414, 416, 500, 502, 503, 504, 507,
];

/// A series at 0 for each known label value: a counter that has not moved
/// yet still shows on a dashboard (Prometheus's own advice), and `rate()`
/// sees its first increment.
fn zero_series<L, M>(family: &Family<L, M, impl Fn() -> M>, labels: impl IntoIterator<Item = L>)
where
    L: Clone + std::hash::Hash + Eq,
{
    for l in labels {
        let _ = family.get_or_create(&l);
    }
}

/// Request durations: 0.5 ms to about 2 minutes, ×4 per bucket (a warm
/// range takes well under a millisecond; a cold multi-GB file, minutes).
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 4.0, 10))
}

/// Upstream downloads: 10 ms to about 45 minutes.
fn download_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 4.0, 12))
}

/// The server's counters. One per server, shared by `http` and `fetch`.
pub struct Metrics {
    registry: Registry,
    requests: Family<OutcomeLabels, Counter>,
    responses: Family<CodeLabels, Counter>,
    fetches: Family<ResultLabels, Counter>,
    upstream_bytes: Counter,
    verify_failures: Counter,
    scrub_bad_files: Counter,
    clients_refused: Counter,
    send_timeouts: Counter,
    over_ip_cap: Counter,
    resumes: Counter,
    evicted_files: Counter,
    evicted_bytes: Counter,
    admin_refused: Family<ReasonLabels, Counter>,
    /// Delivery Optimization: origins refused, objects stored, identity changes.
    do_refused: Family<ReasonLabels, Counter>,
    do_stored: Family<VerificationLabels, Counter>,
    do_identity_changed: Counter,
    sendfile_responses: Counter,
    served_bytes: Counter,
    /// One per outcome (resolved once: an observation is one lock, no lookup).
    request_durations: [Histogram; 6],
    download_durations: Family<ResultLabels, Histogram, fn() -> Histogram>,
    access_log_dropped: Counter,
    shared_tier: Family<EventLabels, Counter>,
    timeline: Timeline,
    store_bytes: Gauge,
    store_files: Gauge,
    store_max_bytes: Gauge,
    downloads_running: Gauge,
    downloads_queued: Gauge,
    /// Only listeners with a certificate have a series: an absent one is
    /// not a certificate expired in 1970.
    tls_not_after: Family<ListenerLabels, Gauge>,
}

/// What is stored and running at the moment of a scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub store_bytes: u64,
    pub store_files: u64,
    /// `max_store_bytes`; 0 when unbounded.
    pub store_max_bytes: u64,
    pub downloads_running: u64,
    pub downloads_queued: u64,
    /// The admin certificate's `notAfter` (Unix seconds), with TLS on.
    pub admin_tls_not_after: Option<i64>,
    /// The HTTPS content listener's, when there is one.
    pub content_tls_not_after: Option<i64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("upcache");
        let requests = Family::<OutcomeLabels, Counter>::default();
        let responses = Family::<CodeLabels, Counter>::default();
        let fetches = Family::<ResultLabels, Counter>::default();
        let upstream_bytes = Counter::default();
        let verify_failures = Counter::default();
        let scrub_bad_files = Counter::default();
        let clients_refused = Counter::default();
        let send_timeouts = Counter::default();
        let over_ip_cap = Counter::default();
        let resumes = Counter::default();
        let evicted_files = Counter::default();
        let evicted_bytes = Counter::default();
        let admin_refused = Family::<ReasonLabels, Counter>::default();
        let do_refused = Family::<ReasonLabels, Counter>::default();
        let do_stored = Family::<VerificationLabels, Counter>::default();
        let do_identity_changed = Counter::default();
        let sendfile_responses = Counter::default();
        let served_bytes = Counter::default();
        let durations = Family::<OutcomeLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            request_buckets,
        );
        let request_durations = Outcome::ALL.map(|o| {
            durations
                .get_or_create(&OutcomeLabels { outcome: o.label() })
                .clone()
        });
        let download_durations =
            Family::<ResultLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                download_buckets,
            );
        let access_log_dropped = Counter::default();
        let shared_tier = Family::<EventLabels, Counter>::default();
        registry.register(
            "s3",
            "Shared tier (S3) events: found, absent, error (lookups), uploaded, upload_failed",
            shared_tier.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let store_bytes = gauge(&mut registry, "store_bytes", "Bytes of the stored files");
        let store_files = gauge(&mut registry, "store_files", "Stored files");
        let store_max_bytes = gauge(
            &mut registry,
            "store_max_bytes",
            "max_store_bytes (0: unbounded)",
        );
        let downloads_running = gauge(
            &mut registry,
            "downloads_running",
            "Upstream downloads holding a slot",
        );
        let downloads_queued = gauge(
            &mut registry,
            "downloads_queued",
            "Upstream downloads waiting for a slot",
        );
        let tls_not_after = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "tls_cert_not_after_seconds",
            "When the listener's TLS certificate expires (Unix seconds); alert well before",
            tls_not_after.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Content requests from the head read to the last body byte sent, by outcome",
            durations,
        );
        registry.register(
            "upstream_download_duration_seconds",
            "Upstream downloads from taking a slot to stored or failed, by result",
            download_durations.clone(),
        );
        registry.register(
            "served_bytes",
            "File bytes sent to clients from the store or a download in progress (not passed-through ranges)",
            served_bytes.clone(),
        );
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        registry.register(
            "sendfile_responses",
            "Content responses sent by the HTTP/1.1 fast path (body by sendfile)",
            sendfile_responses.clone(),
        );
        registry.register(
            "do_refused",
            "Delivery Optimization requests refused before any upstream connection, by reason (missing, duplicate, encoded, userinfo, port, not_a_name, too_long, not_allowed, address, private_answer)",
            do_refused.clone(),
        );
        registry.register(
            "do_stored",
            "Delivery Optimization objects stored, verified against a known digest or unverified",
            do_stored.clone(),
        );
        registry.register(
            "do_identity_changed",
            "Delivery Optimization downloads discarded because the origin's length, ETag or Last-Modified changed mid-download",
            do_identity_changed.clone(),
        );
        registry.register(
            "admin_refused",
            "Admin API requests refused as what a web page could send (host, origin, cross_site, content_type)",
            admin_refused.clone(),
        );
        registry.register(
            "evicted_files",
            "Stored files evicted to stay under max_store_bytes",
            evicted_files.clone(),
        );
        registry.register(
            "evicted_bytes",
            "Bytes evicted to stay under max_store_bytes",
            evicted_bytes.clone(),
        );
        registry.register(
            "upstream_resumes",
            "Interrupted downloads resumed with a Range request",
            resumes.clone(),
        );
        registry.register(
            "content_requests",
            "Content requests by outcome",
            requests.clone(),
        );
        registry.register(
            "content_responses",
            "Content responses by status code",
            responses.clone(),
        );
        registry.register(
            "upstream_fetches",
            "Finished upstream downloads by result",
            fetches.clone(),
        );
        registry.register(
            "upstream_bytes",
            "Bytes received from upstreams",
            upstream_bytes.clone(),
        );
        registry.register(
            "verify_failures",
            "Downloads whose size or digest did not match the catalog",
            verify_failures.clone(),
        );
        registry.register(
            "scrub_bad_files",
            "Stored files a scrub found not matching their SHA-256 (quarantined)",
            scrub_bad_files.clone(),
        );
        registry.register(
            "clients_refused",
            "Connections to a content listener from clients outside allow_clients",
            clients_refused.clone(),
        );
        registry.register(
            "send_timeouts",
            "Responses cut because the client took no bytes for send_timeout_secs (both listeners, every protocol)",
            send_timeouts.clone(),
        );
        registry.register(
            "connections_over_ip_cap",
            "Connections closed at once because their address already held max_connections_per_ip",
            over_ip_cap.clone(),
        );
        zero_series(
            &requests,
            Outcome::ALL.map(|o| OutcomeLabels { outcome: o.label() }),
        );
        zero_series(&responses, RESPONSE_CODES.map(|code| CodeLabels { code }));
        zero_series(
            &fetches,
            FETCH_RESULTS.map(|result| ResultLabels { result }),
        );
        zero_series(
            &download_durations,
            FETCH_RESULTS.map(|result| ResultLabels { result }),
        );
        zero_series(
            &admin_refused,
            ADMIN_REFUSED_REASONS.map(|reason| ReasonLabels { reason }),
        );
        zero_series(
            &shared_tier,
            SHARED_TIER_EVENTS.map(|event| EventLabels { event }),
        );
        zero_series(
            &do_refused,
            DO_REFUSED_REASONS.map(|reason| ReasonLabels { reason }),
        );
        zero_series(
            &do_stored,
            DO_VERIFICATIONS.map(|verification| VerificationLabels { verification }),
        );
        Metrics {
            registry,
            requests,
            responses,
            fetches,
            upstream_bytes,
            verify_failures,
            scrub_bad_files,
            clients_refused,
            send_timeouts,
            over_ip_cap,
            resumes,
            evicted_files,
            evicted_bytes,
            admin_refused,
            do_refused,
            do_stored,
            do_identity_changed,
            sendfile_responses,
            served_bytes,
            request_durations,
            download_durations,
            access_log_dropped,
            shared_tier,
            timeline: Timeline::default(),
            store_bytes,
            store_files,
            store_max_bytes,
            downloads_running,
            downloads_queued,
            tls_not_after,
        }
    }
}

impl Metrics {
    pub fn request(&self, outcome: Outcome) {
        self.requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
        self.timeline.count(outcome, SystemTime::now());
    }

    /// A content response ended (its last byte sent, or the client gone)
    /// after `elapsed`, having sent `file_bytes` of a file.
    pub fn request_finished(&self, outcome: Outcome, elapsed: Duration, file_bytes: u64) {
        self.request_durations[outcome as usize].observe(elapsed.as_secs_f64());
        if file_bytes > 0 {
            self.served_bytes.inc_by(file_bytes);
        }
    }

    /// Something happened with the shared tier (S3).
    pub fn shared_tier(&self, event: &'static str) {
        debug_assert!(SHARED_TIER_EVENTS.contains(&event), "{event}");
        self.shared_tier.get_or_create(&EventLabels { event }).inc();
    }

    /// An access log line was dropped (the writer is behind).
    pub fn access_log_dropped(&self) {
        self.access_log_dropped.inc();
    }

    pub fn response(&self, code: u16) {
        self.responses.get_or_create(&CodeLabels { code }).inc();
    }

    pub fn upstream_bytes(&self, n: u64) {
        self.upstream_bytes.inc_by(n);
    }

    pub fn resume(&self) {
        self.resumes.inc();
    }

    /// A scrub found a stored file whose bytes no longer match its name.
    pub fn scrub_bad_file(&self) {
        self.scrub_bad_files.inc();
    }

    /// A client outside `allow_clients` was turned away.
    pub fn client_refused(&self) {
        self.clients_refused.inc();
    }

    /// A response was cut: its client took nothing for `send_timeout`.
    pub fn send_timeout(&self) {
        self.send_timeouts.inc();
    }

    /// A connection was closed at once: its address held its cap already.
    pub fn over_ip_cap(&self) {
        self.over_ip_cap.inc();
    }

    /// A stored file was evicted (max_store_bytes).
    pub fn evicted(&self, bytes: u64) {
        self.evicted_files.inc();
        self.evicted_bytes.inc_by(bytes);
    }

    /// A download ended: stored, or failed (and whether verification failed).
    pub fn fetch_finished(&self, stored: bool, verification_failed: bool, took: Duration) {
        let result = if stored { "stored" } else { "failed" };
        self.fetches.get_or_create(&ResultLabels { result }).inc();
        self.download_durations
            .get_or_create(&ResultLabels { result })
            .observe(took.as_secs_f64());
        if verification_failed {
            self.verify_failures.inc();
        }
    }

    /// An admin request was refused by the cross-site guard, for `reason`.
    /// A DO origin refused (see `delivery::origin::OriginError::reason`).
    pub fn do_refused(&self, reason: &'static str) {
        debug_assert!(DO_REFUSED_REASONS.contains(&reason), "{reason}");
        self.do_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A DO object stored, unverified or verified.
    pub fn do_stored(&self, unverified: bool) {
        let verification = if unverified { "unverified" } else { "verified" };
        self.do_stored
            .get_or_create(&VerificationLabels { verification })
            .inc();
    }

    /// A DO download discarded: the origin's object changed mid-way.
    pub fn do_identity_changed(&self) {
        self.do_identity_changed.inc();
    }

    pub fn admin_refused(&self, reason: &'static str) {
        debug_assert!(ADMIN_REFUSED_REASONS.contains(&reason), "{reason}");
        self.admin_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A response went out by the fast path.
    pub fn sendfile_response(&self) {
        self.sendfile_responses.inc();
    }

    /// The figures of the console and `/api/v1/status`.
    pub fn traffic(&self) -> Traffic {
        let count = |o: Outcome| {
            self.requests
                .get_or_create(&OutcomeLabels { outcome: o.label() })
                .get()
        };
        let requests: std::collections::BTreeMap<String, u64> = Outcome::ALL
            .iter()
            .map(|&o| (o.label().to_owned(), count(o)))
            .collect();
        let hits = count(Outcome::Hit);
        let cacheable = hits + count(Outcome::Miss) + count(Outcome::Coalesced);
        Traffic {
            hit_ratio: (cacheable > 0).then(|| hits as f64 / cacheable as f64),
            requests,
            bytes_served: self.served_bytes.get(),
            bytes_upstream: self.upstream_bytes.get(),
            last_hour: self.timeline.minutes(SystemTime::now()),
        }
    }

    /// Sets the gauges read at a scrape.
    pub fn snapshot(&self, s: Snapshot) {
        let set = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.store_bytes, s.store_bytes);
        set(&self.store_files, s.store_files);
        set(&self.store_max_bytes, s.store_max_bytes);
        set(&self.downloads_running, s.downloads_running);
        set(&self.downloads_queued, s.downloads_queued);
        for (listener, not_after) in [
            ("admin", s.admin_tls_not_after),
            ("content", s.content_tls_not_after),
        ] {
            if let Some(t) = not_after {
                self.tls_not_after
                    .get_or_create(&ListenerLabels { listener })
                    .set(t);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// What the content listener has done since start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Traffic {
    /// Hits over hits, misses and coalesced requests (the requests that
    /// wanted a stored file); `null` before the first.
    pub hit_ratio: Option<f64>,
    /// Content requests by outcome.
    pub requests: std::collections::BTreeMap<String, u64>,
    /// File bytes sent to clients from the store or a running download.
    pub bytes_served: u64,
    /// Bytes received from upstreams.
    pub bytes_upstream: u64,
    /// Hits and misses per minute, oldest first, the current minute last.
    pub last_hour: Vec<Minute>,
}

/// One minute of the last hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Minute {
    /// Start of the minute, in seconds since the Unix epoch.
    pub start: u64,
    pub hits: u64,
    /// Misses and coalesced requests (both waited on the upstream).
    pub misses: u64,
}

const MINUTES: usize = 60;

/// Hits and misses per minute over the last hour: a ring of 60 slots, each
/// stamped with its minute and reset when reused. Counting is two atomic
/// operations; a count racing a slot's reset at the turn of a minute may
/// be lost, which a chart does not show.
struct Timeline {
    slots: [Slot; MINUTES],
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }
}

#[derive(Default)]
struct Slot {
    minute: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

fn minute_of(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

impl Timeline {
    fn count(&self, outcome: Outcome, now: SystemTime) {
        let hit = match outcome {
            Outcome::Hit => true,
            Outcome::Miss | Outcome::Coalesced => false,
            _ => return,
        };
        let minute = minute_of(now);
        let slot = &self.slots[minute as usize % MINUTES];
        if slot.minute.load(Ordering::Relaxed) != minute
            && slot.minute.swap(minute, Ordering::Relaxed) != minute
        {
            slot.hits.store(0, Ordering::Relaxed);
            slot.misses.store(0, Ordering::Relaxed);
        }
        let counter = if hit { &slot.hits } else { &slot.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn minutes(&self, now: SystemTime) -> Vec<Minute> {
        let current = minute_of(now);
        (0..MINUTES as u64)
            .rev()
            .filter_map(|ago| current.checked_sub(ago))
            .map(|minute| {
                let slot = &self.slots[minute as usize % MINUTES];
                let live = slot.minute.load(Ordering::Relaxed) == minute;
                let read = |c: &AtomicU64| if live { c.load(Ordering::Relaxed) } else { 0 };
                Minute {
                    start: minute * 60,
                    hits: read(&slot.hits),
                    misses: read(&slot.misses),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.request(Outcome::Hit);
        m.request(Outcome::Hit);
        m.response(206);
        m.upstream_bytes(42);
        m.fetch_finished(false, true, Duration::from_millis(20));
        m.request_finished(Outcome::Hit, Duration::from_millis(1), 4096);
        let text = m.render();
        assert!(
            text.contains("upcache_content_requests_total{outcome=\"hit\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("upcache_content_responses_total{code=\"206\"} 1"),
            "{text}"
        );
        assert!(text.contains("upcache_upstream_bytes_total 42"), "{text}");
        assert!(text.contains("upcache_verify_failures_total 1"), "{text}");
        assert!(text.contains("upcache_served_bytes_total 4096"), "{text}");
        assert!(
            text.contains("upcache_request_duration_seconds_count{outcome=\"hit\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("upcache_upstream_download_duration_seconds_count{result=\"failed\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
        let t = m.traffic();
        assert_eq!(t.requests["hit"], 2);
        assert_eq!(t.hit_ratio, Some(1.0));
        assert_eq!(t.bytes_served, 4096);
        assert_eq!(t.bytes_upstream, 42);
    }

    #[test]
    fn the_last_hour_counts_per_minute_and_forgets_older_minutes() {
        let tl = Timeline::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 / 60 * 60);
        tl.count(Outcome::Hit, t0);
        tl.count(Outcome::Hit, t0 + Duration::from_secs(59));
        tl.count(Outcome::Coalesced, t0);
        tl.count(Outcome::Refused, t0);
        tl.count(Outcome::Miss, t0 + Duration::from_secs(60));
        let m = tl.minutes(t0 + Duration::from_secs(60));
        assert_eq!(m.len(), MINUTES);
        let [.., before, last] = m.as_slice() else {
            unreachable!()
        };
        assert_eq!((before.hits, before.misses), (2, 1));
        assert_eq!((last.hits, last.misses), (0, 1));
        assert_eq!(last.start - before.start, 60);
        // An hour later the same slots are reused: nothing old shows.
        let later = t0 + Duration::from_secs(3660);
        tl.count(Outcome::Hit, later);
        let m = tl.minutes(later);
        assert_eq!(m.iter().map(|x| x.hits).sum::<u64>(), 1, "{m:?}");
        assert_eq!(m.iter().map(|x| x.misses).sum::<u64>(), 0, "{m:?}");
    }
}
