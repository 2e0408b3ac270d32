//! The content request path: route → catalog → policy → store or fetch →
//! conditional and range handling → response.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use super::body::{self, ResponseBody, Source, UpstreamRange};
use super::conditional::{self, Precondition, RequestHeaders, Validators};
use super::error::HttpStatus;
use super::observe::{Answer, Observed};
use super::plan::{self, FileValidators, Plan};
use super::range::{self, RangeRequest};
use super::route::{self, FileKey};
use super::RequestError;
use crate::catalog::{Catalog, FileEntry};
use crate::fetch::{Download, FetchError, Fetcher, Follow};
use crate::net::Peer;
use crate::policy::{self, Decision, Refusal};
use crate::store::{Hit, Storage};
use crate::telemetry::access_log::{self, AccessLog};
use crate::telemetry::metrics::{Metrics, Outcome};

mod delivery;

/// What a busy server asks a client to wait before retrying, in seconds.
const RETRY_AFTER_SECS: &str = "5";

/// Everything a content request needs.
pub struct ContentService {
    pub store: Arc<dyn Storage>,
    pub catalog: Arc<Catalog>,
    pub fetcher: Arc<Fetcher>,
    pub metrics: Arc<Metrics>,
    pub access_log: Option<AccessLog>,
    pub validators: ValidatorCache,
    /// Delivery Optimization's `/filestreamingservice/` content; `None`:
    /// those paths are 404, as any unknown path.
    pub delivery: Option<Arc<crate::delivery::Delivery>>,
}

/// What the fast path sends a plan's file parts from.
pub enum FastSource {
    /// A stored file: mapped, and open for `sendfile`.
    Stored(Hit),
    /// A download under way: sent from its temp file as it lands, the last
    /// byte once verified (as the full path's followers are).
    Following(Follow),
}

/// Why a request could not follow a download, and how it counts.
struct JoinFailure {
    error: FetchError,
    outcome: Outcome,
    /// The download joined, if one was (the failure is then its own).
    download: Option<Arc<Download>>,
}

/// A download the fast path joined.
enum Following {
    /// Receiving, `len` bytes long.
    Ready(Follow, u64, Outcome),
    /// Not to be had: the error's plan.
    Failed(Plan, Follow, Outcome),
}

/// The representation being served.
struct Representation {
    len: Option<u64>,
    content_type: &'static str,
    validators: Arc<FileValidators>,
}

/// What a file's validators depend on.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ValidatorKey {
    sha1: crate::digest::Sha1Digest,
    sha256: Option<crate::digest::Sha256Digest>,
    modified: Option<SystemTime>,
    by_sha256: bool,
}

/// The validators of recently served files (bounded like the open-file cache).
pub struct ValidatorCache(moka::sync::Cache<ValidatorKey, Arc<FileValidators>>);

impl ValidatorCache {
    pub fn new(files: u64) -> ValidatorCache {
        ValidatorCache(moka::sync::Cache::new(files))
    }

    fn get(&self, entry: &FileEntry, key: FileKey) -> Arc<FileValidators> {
        let k = ValidatorKey {
            sha1: entry.sha1,
            sha256: entry.sha256,
            modified: entry.modified,
            by_sha256: matches!(key, FileKey::Sha256(_)),
        };
        // `get` first: moka's `get_with` allocates even when the key is there.
        if let Some(found) = self.0.get(&k) {
            return found;
        }
        self.0
            .get_with(k, || Arc::new(FileValidators::new(entry, key)))
    }
}

impl ContentService {
    /// Answers one content request, counting how; its duration and log
    /// line are recorded when the body ends.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ResponseBody> {
        // For load balancers (HAProxy's `option httpchk`): not a content
        // request, so neither counted nor logged.
        if req.uri().path() == "/healthz" {
            return plain(StatusCode::OK, "ok\n");
        }
        let started = std::time::Instant::now();
        let logged = self.access_log.as_ref().map(|_| {
            let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            access_log::Request::new(
                req.extensions().get::<Peer>().map(|p| p.0),
                req.method().clone(),
                target,
                req.version(),
                req.headers(),
            )
        });
        let (response, outcome) = self.answer(req).await;
        let status = response.status().as_u16();
        self.metrics.request(outcome);
        self.metrics.response(status);
        let unverified = response
            .extensions()
            .get::<crate::delivery::Unverified>()
            .is_some();
        let answer = Answer {
            unverified,
            outcome,
            status,
            started,
            request: logged,
        };
        let (metrics, log) = (self.metrics.clone(), self.access_log.clone());
        response.map(|body| {
            http_body_util::BodyExt::boxed_unsync(Observed::new(body, answer, metrics, log))
        })
    }

    async fn answer<B>(&self, req: Request<B>) -> (Response<ResponseBody>, Outcome) {
        let refused = |r| (r, Outcome::Refused);
        let hosts = req.headers().get_all(header::HOST).iter();
        if !super::host_fields_valid(
            req.version() == Version::HTTP_11,
            hosts.map(|v| v.as_bytes()),
        ) {
            return refused(error_text(&RequestError::Host));
        }
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD {
            let mut r = error_text(&RequestError::Method);
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return refused(r);
        }
        let path = req.uri().path();
        if let Some(delivery) = self
            .delivery
            .as_ref()
            .filter(|_| crate::delivery::path::is_delivery(path))
        {
            return self
                .delivery_answer(delivery, &method, req.headers(), req.uri())
                .await;
        }
        let key = match route::parse(path) {
            Ok(key) => key,
            Err(e) => return refused(error_text(&e)),
        };
        let content_type = content_type(route::extension(path));
        let entry = self.lookup(key);
        let headers = req.headers();
        match self.decide(entry) {
            (Decision::Refused(refusal), _) => refused(error_text(&refusal)),
            (_, None) => refused(error_text(&Refusal::NotFound)),
            (Decision::Redirect, Some(entry)) => (self.redirect(&entry), Outcome::Redirect),
            (Decision::Serve(sha256), Some(entry)) => match self.store.lookup(&sha256) {
                Ok(Some(hit)) => {
                    if self.store.tracks_serving() {
                        self.catalog.record_served(&entry.sha1);
                    }
                    let len = Some(hit.len());
                    let rep = self.representation(&entry, key, content_type, len);
                    let r = respond(&method, headers, rep, Source::Stored(hit.into_bytes()));
                    (r, Outcome::Hit)
                }
                Ok(None) => {
                    // Removed behind our back: forget it and fetch again.
                    self.catalog.record_absent(&entry.sha1);
                    self.fetch(&method, headers, &entry, key, content_type)
                        .await
                }
                Err(e) => {
                    // The client is not told the store's paths; the log is.
                    tracing::error!(error = %e, "reading a stored file");
                    refused(plain(e.status(), "store error\n"))
                }
            },
            (Decision::Fetch, Some(entry)) => {
                self.fetch(&method, headers, &entry, key, content_type)
                    .await
            }
        }
    }

    /// The policy's decision on `entry`, with the entry the doing needs.
    fn decide(&self, entry: Option<FileEntry>) -> (Decision, Option<FileEntry>) {
        let known = entry.map(|e| e.known());
        (policy::decide(&self.catalog.policy(), known), entry)
    }

    /// The plan for a GET or HEAD of `path` the fast path can send, counted
    /// as answered: a stored file the policy lets us serve (a warm hit),
    /// or the whole of a file to download, followed as it lands (the
    /// download started or joined here, its errors answered here too).
    /// `None` for anything else, which the full path answers: ranges of a
    /// file not stored (they may be far ahead of its download), redirects,
    /// refusals, a download of unknown length.
    /// The last field: the response carries an unverified DO object.
    pub async fn plan_fast(
        &self,
        path: &str,
        query: Option<&str>,
        req: &impl RequestHeaders,
    ) -> Option<(Plan, FastSource, Outcome, bool)> {
        if let Some(delivery) =
            (self.delivery.as_ref()).filter(|_| crate::delivery::path::is_delivery(path))
        {
            return self.plan_fast_delivery(delivery, path, query, req).await;
        }
        let key = route::parse(path).ok()?;
        let (entry, len, source, outcome) = match self.decide(self.lookup(key)) {
            (Decision::Serve(sha256), Some(entry)) => {
                let hit = self.store.lookup(&sha256).ok()??;
                if self.store.tracks_serving() {
                    self.catalog.record_served(&entry.sha1);
                }
                (entry, hit.len(), FastSource::Stored(hit), Outcome::Hit)
            }
            (Decision::Fetch, Some(entry)) if req.value(&header::RANGE).is_none() => {
                match self.follow(&entry).await? {
                    Following::Ready(follow, len, outcome) => {
                        (entry, len, FastSource::Following(follow), outcome)
                    }
                    Following::Failed(plan, follow, outcome) => {
                        self.count_fast(&plan, outcome);
                        return Some((plan, FastSource::Following(follow), outcome, false));
                    }
                }
            }
            _ => return None,
        };
        let content_type = content_type(route::extension(path));
        let rep = self.representation(&entry, key, content_type, Some(len));
        let plan = Plan::new(req, &rep.validators, rep.content_type, len);
        self.count_fast(&plan, outcome);
        Some((plan, source, outcome, false))
    }

    /// Starts or joins the download of `entry` and waits for the upstream's
    /// answer: the download, its length if known, and how the request
    /// counts. A client waits a bounded time for a slot (the download itself
    /// stays queued for whoever asks next); then 503 and `Retry-After`.
    async fn join_download(
        &self,
        entry: &FileEntry,
    ) -> Result<(Arc<Download>, Option<u64>, Outcome), JoinFailure> {
        let (dl, outcome) = match self.fetcher.join(entry) {
            Ok(j) if j.started => (j.download, Outcome::Miss),
            Ok(j) => (j.download, Outcome::Coalesced),
            Err(error) => {
                return Err(JoinFailure {
                    error,
                    outcome: Outcome::Refused,
                    download: None,
                })
            }
        };
        if !dl.left_queue(self.fetcher.queue_wait()).await {
            return Err(JoinFailure {
                error: FetchError::Busy("all download slots are taken"),
                outcome: Outcome::Refused,
                download: Some(dl),
            });
        }
        match dl.started().await {
            Ok(len) => Ok((dl, len, outcome)),
            Err(error) => Err(JoinFailure {
                error,
                outcome,
                download: Some(dl),
            }),
        }
    }

    /// [`ContentService::join_download`] for the fast path: its failures as
    /// error plans. `None` when the full path should answer: the download
    /// could not be joined (nothing was started: the full path tries again
    /// and answers the refusal), or its length is unknown (the full path
    /// joins the same download and sends it chunked).
    async fn follow(&self, entry: &FileEntry) -> Option<Following> {
        match self.join_download(entry).await {
            Ok((dl, Some(len), outcome)) => Some(Following::Ready(dl.follow(), len, outcome)),
            Ok((dl, None, outcome)) => {
                if matches!(outcome, Outcome::Miss) {
                    dl.hand_over_start();
                }
                None
            }
            Err(JoinFailure {
                error,
                outcome,
                download: Some(dl),
            }) => Some(Following::Failed(error_plan(&error), dl.follow(), outcome)),
            Err(JoinFailure { download: None, .. }) => None,
        }
    }

    /// Counts a fast-path answer as the full path counts its own.
    fn count_fast(&self, plan: &Plan, outcome: Outcome) {
        self.metrics.request(outcome);
        self.metrics.response(plan.status.as_u16());
        self.metrics.sendfile_response();
    }

    /// The catalog's entry for a file named by either digest.
    fn lookup(&self, key: FileKey) -> Option<FileEntry> {
        match key {
            FileKey::Sha1(d) => self.catalog.lookup_sha1(&d),
            FileKey::Sha256(d) => self.catalog.lookup_sha256(&d),
        }
    }

    fn redirect(&self, entry: &FileEntry) -> Response<ResponseBody> {
        let Some(location) = self.catalog.location(&entry.sha1) else {
            return error_text(&Refusal::NotFound);
        };
        let url = self.fetcher.upstream_url(&location.url);
        let mut r = plain(
            StatusCode::FOUND,
            format!("metadata-only: download from {url}\n"),
        );
        if let Ok(v) = HeaderValue::from_str(&url) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    }

    /// Joins (or starts) the download and streams it as it lands.
    async fn fetch(
        &self,
        method: &Method,
        headers: &HeaderMap,
        entry: &FileEntry,
        key: FileKey,
        content_type: &'static str,
    ) -> (Response<ResponseBody>, Outcome) {
        let (dl, len, outcome) = match self.join_download(entry).await {
            Ok(joined) => joined,
            Err(JoinFailure { error, outcome, .. }) => return (error_response(&error), outcome),
        };
        let rep = self.representation(entry, key, content_type, len);
        if let Some(range) = far_ahead_candidate(method, headers, &rep) {
            if self.fetcher.is_far_ahead(&dl, range.start).await {
                let len = rep.len.expect("ranges need a length");
                if let Some(body) = self
                    .fetcher
                    .range_from_upstream(&dl, entry, range.clone(), len)
                    .await
                {
                    let source = Source::Upstream(Arc::new(UpstreamRange::new(range, body)));
                    return (respond(method, headers, rep, source), Outcome::Passthrough);
                }
            }
        }
        (
            respond(method, headers, rep, Source::Downloading(dl)),
            outcome,
        )
    }
}

/// The single range of a GET, if it has one that will be honoured: the
/// only kind worth its own upstream request (see `Fetcher::is_far_ahead`).
fn far_ahead_candidate(
    method: &Method,
    headers: &HeaderMap,
    rep: &Representation,
) -> Option<std::ops::Range<u64>> {
    if method != Method::GET {
        return None;
    }
    let len = rep.len?;
    let value = headers.get(header::RANGE)?.to_str().ok()?;
    let Precondition::Proceed { honour_range: true } =
        conditional::evaluate(headers, &rep.validators.validators)
    else {
        return None;
    };
    let RangeRequest::Partial(ranges) = range::resolve(Some(value), len) else {
        return None;
    };
    let [range] = ranges.as_slice() else {
        return None;
    };
    Some(range.clone())
}

/// [`error_response`] as a plan, for the fast path.
fn error_plan(e: &FetchError) -> Plan {
    let retry_after = matches!(e, FetchError::Busy(_)).then_some(RETRY_AFTER_SECS);
    Plan::error(e.status(), format!("{}\n", e.client_text()), retry_after)
}

/// A fetch error as the client sees it; a busy server says when to retry.
fn error_response(e: &FetchError) -> Response<ResponseBody> {
    let mut r = plain(e.status(), format!("{}\n", e.client_text()));
    if matches!(e, FetchError::Busy(_)) {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    r
}

impl ContentService {
    /// The representation of a file as named by `key` (validators cached).
    fn representation(
        &self,
        entry: &FileEntry,
        key: FileKey,
        content_type: &'static str,
        len: Option<u64>,
    ) -> Representation {
        Representation {
            len,
            content_type,
            validators: self.validators.get(entry, key),
        }
    }
}

impl FileValidators {
    /// The validators of a file as named by `key`.
    ///
    /// The `ETag` is the digest the URL names: `"sha1:<hex>"` for WSUS and
    /// Microsoft Update paths, `"sha256:<hex>"` for SHA-256 routes. It is known
    /// before the first byte and never changes, whereas a file's SHA-256 is often
    /// learned only when its first download completes (Microsoft's catalogs give
    /// SHA-1 only): a SHA-256 tag would change between the first response and
    /// the next, breaking `If-Range` resumption. The other digest is accepted in
    /// conditionals too.
    fn new(entry: &FileEntry, key: FileKey) -> FileValidators {
        let sha1_tag = format!("\"sha1:{}\"", entry.sha1);
        let sha256_tag = entry.sha256.as_ref().map(crate::fetch::stored_etag);
        let etags = match (key, sha256_tag) {
            (FileKey::Sha256(_), Some(sha256)) => vec![sha256, sha1_tag],
            (_, Some(sha256)) => vec![sha1_tag, sha256],
            (_, None) => vec![sha1_tag],
        };
        FileValidators {
            etag: header_value(etags[0].clone()),
            last_modified: entry
                .modified
                .map(|lm| header_value(httpdate::fmt_http_date(lm))),
            validators: Validators {
                etags,
                last_modified: entry.modified,
            },
        }
    }
}

impl Plan {
    /// The hyper response of this plan, its body read from `source`.
    fn into_response(self, method: &Method, source: &Source) -> Response<ResponseBody> {
        let mut r = Response::new(body::empty());
        *r.status_mut() = self.status;
        *r.headers_mut() = self.header_map();
        let parts = self.into_parts();
        if method != Method::HEAD && !parts.is_empty() {
            *r.body_mut() = body::from_parts(source, parts);
        }
        r
    }
}

/// Builds the response for a representation: preconditions, ranges, headers, body.
fn respond(
    method: &Method,
    req: &HeaderMap,
    rep: Representation,
    source: Source,
) -> Response<ResponseBody> {
    let Some(len) = rep.len else {
        return open_ended(method, req, rep, source);
    };
    Plan::new(req, &rep.validators, rep.content_type, len).into_response(method, &source)
}

/// A download whose length is unknown until it ends: preconditions, then
/// the whole file, chunked (no range can be resolved without a length).
fn open_ended(
    method: &Method,
    req: &HeaderMap,
    rep: Representation,
    source: Source,
) -> Response<ResponseBody> {
    match conditional::evaluate(req, &rep.validators.validators) {
        Precondition::NotModified => {
            let mut r = Response::new(body::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            *r.headers_mut() = plan::file_header_map(&rep.validators);
            return r;
        }
        Precondition::Failed => {
            return plain(StatusCode::PRECONDITION_FAILED, "precondition failed\n")
        }
        Precondition::Proceed { .. } => {}
    }
    let Source::Downloading(dl) = source else {
        unreachable!("stored files have a length")
    };
    let mut headers = plan::file_header_map(&rep.validators);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(rep.content_type),
    );
    let body = if method == Method::HEAD {
        body::empty()
    } else {
        body::open_ended(dl)
    };
    let mut r = Response::new(body);
    *r.headers_mut() = headers;
    r
}

/// A header value we formatted ourselves (digits, hex, ASCII).
fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).expect("formatted header values are ASCII")
}

/// An error as the client sees it: its status, its message on a line.
fn error_text<E: HttpStatus + std::fmt::Display>(e: &E) -> Response<ResponseBody> {
    plain(e.status(), format!("{e}\n"))
}

/// A short text response (errors, redirects). Never stored by a cache in
/// front (a CDN): a 403 turns into the file once the update is approved,
/// a 503 once a slot is free, a redirect when the policy changes.
pub fn plain(status: StatusCode, msg: impl Into<String>) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(body::text(msg))
        .expect("valid response")
}

/// `Content-Type` by extension, in any case: Windows update payload types first.
pub fn content_type(ext: Option<&str>) -> &'static str {
    let mut lower = [0u8; 8];
    let ext = match ext.filter(|e| e.len() <= lower.len()) {
        Some(e) => {
            let lower = &mut lower[..e.len()];
            lower.copy_from_slice(e.as_bytes());
            lower.make_ascii_lowercase();
            std::str::from_utf8(lower).unwrap_or("")
        }
        None => "",
    };
    match ext {
        "cab" => "application/vnd.ms-cab-compressed",
        "msu" => "application/x-ms-update",
        "exe" | "dll" => "application/vnd.microsoft.portable-executable",
        "msi" | "msp" => "application/x-msi",
        "psf" => "application/octet-stream",
        "esd" | "wim" => "application/x-ms-wim",
        "zip" | "appx" | "msix" | "appxbundle" | "msixbundle" => "application/zip",
        "xml" => "application/xml",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Approval;

    fn entry(sha256: Option<&str>) -> FileEntry {
        FileEntry {
            sha1: "ab".repeat(20).parse().unwrap(),
            sha256: sha256.map(|s| s.parse().unwrap()),
            size: Some(10),
            modified: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)),
            approval: Approval::Approved,
            stored: true,
        }
    }

    #[test]
    fn validators_are_computed_once_per_file_and_follow_what_is_learned() {
        let cache = ValidatorCache::new(16);
        let sha1_key = FileKey::Sha1("ab".repeat(20).parse().unwrap());
        let first = cache.get(&entry(None), sha1_key);
        let again = cache.get(&entry(None), sha1_key);
        assert!(
            Arc::ptr_eq(&first, &again),
            "a warm hit reuses the header values"
        );
        assert_eq!(first.etag, format!("\"sha1:{}\"", "ab".repeat(20)).as_str());
        assert_eq!(
            first.last_modified.as_ref().unwrap(),
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
        // The SHA-256 learned at the first download joins the tags.
        let learned = cache.get(&entry(Some(&"cd".repeat(32))), sha1_key);
        assert!(!Arc::ptr_eq(&first, &learned));
        assert_eq!(learned.validators.etags.len(), 2);
        assert_eq!(learned.etag, first.etag, "the ETag sent stays the SHA-1's");
    }
}
