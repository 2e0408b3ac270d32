//! Counters for operators, rendered in the Prometheus text format at
//! `GET /metrics` on the admin listener.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// How a content request was answered.
#[derive(Debug, Clone, Copy)]
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
    fn label(self) -> &'static str {
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
struct ResultLabels {
    result: &'static str,
}

/// The server's counters. One per server, shared by `http` and `fetch`.
pub struct Metrics {
    registry: Registry,
    requests: Family<OutcomeLabels, Counter>,
    responses: Family<CodeLabels, Counter>,
    fetches: Family<ResultLabels, Counter>,
    upstream_bytes: Counter,
    verify_failures: Counter,
    resumes: Counter,
    evicted_files: Counter,
    evicted_bytes: Counter,
    admin_refused: Family<ReasonLabels, Counter>,
    sendfile_responses: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("upcache");
        let requests = Family::<OutcomeLabels, Counter>::default();
        let responses = Family::<CodeLabels, Counter>::default();
        let fetches = Family::<ResultLabels, Counter>::default();
        let upstream_bytes = Counter::default();
        let verify_failures = Counter::default();
        let resumes = Counter::default();
        let evicted_files = Counter::default();
        let evicted_bytes = Counter::default();
        let admin_refused = Family::<ReasonLabels, Counter>::default();
        let sendfile_responses = Counter::default();
        registry.register(
            "sendfile_responses",
            "Content responses sent by the HTTP/1.1 fast path (body by sendfile)",
            sendfile_responses.clone(),
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
        Metrics {
            registry,
            requests,
            responses,
            fetches,
            upstream_bytes,
            verify_failures,
            resumes,
            evicted_files,
            evicted_bytes,
            admin_refused,
            sendfile_responses,
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

    /// A stored file was evicted (max_store_bytes).
    pub fn evicted(&self, bytes: u64) {
        self.evicted_files.inc();
        self.evicted_bytes.inc_by(bytes);
    }

    /// A download ended: stored, or failed (and whether verification failed).
    pub fn fetch_finished(&self, stored: bool, verification_failed: bool) {
        let result = if stored { "stored" } else { "failed" };
        self.fetches.get_or_create(&ResultLabels { result }).inc();
        if verification_failed {
            self.verify_failures.inc();
        }
    }

    /// An admin request was refused by the cross-site guard, for `reason`.
    pub fn admin_refused(&self, reason: &'static str) {
        self.admin_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A response went out by the fast path.
    pub fn sendfile_response(&self) {
        self.sendfile_responses.inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
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
        m.fetch_finished(false, true);
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
        assert!(text.ends_with("# EOF\n"));
    }
}
