//! Upstream fetches: one download per missing file, shared by every client
//! that asks for it while it runs.
//!
//! A [`Download`] writes into an [`Ingest`](crate::store::Ingest) (temp
//! file + hashes) on a blocking thread and publishes its progress on a
//! `watch` channel. Clients read the temp file through their own handle as
//! bytes land, so they are streamed the file without waiting for the end,
//! and a slow client costs a file offset, not memory. The file is committed to the store only after its
//! size and digests check out; a failed download ends every waiting
//! client's body with an error so no one receives a well-formed wrong file.

mod download;
mod object;
mod parts;
mod settings;
mod shared;
mod throttle;
mod transfer;
mod upstream;

pub use download::{Download, Follow, Phase, Progress};
pub use object::{
    stored_etag, Identity, ObjectOutcome, ObjectRequest, ObjectSource, OnDone, DOWNLOADING_ETAG,
};
pub use settings::FetchSettings;
pub use throttle::{Throttle, MIN_RATE};
pub use upstream::UpstreamProxy;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, FileEntry};
use crate::digest::Sha1Digest;
use crate::store::s3::S3Tier;
use crate::store::Storage;
use crate::telemetry::metrics::Metrics;
use crate::upkeep::quota::Quota;
use shared::Shared;

/// Why a download failed. Cloneable: every waiting client gets a copy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("upstream answered {status} for {url}")]
    UpstreamStatus { status: u16, url: String },
    #[error("upstream unreachable: {0}")]
    Connect(String),
    #[error("upstream timed out: {0}")]
    Timeout(String),
    #[error("upstream transfer failed: {0}")]
    Transfer(String),
    #[error("download failed verification: {0}")]
    Verification(String),
    #[error("disk full while storing the download")]
    DiskFull,
    #[error("the file ({size} bytes) is larger than max_store_bytes ({max})")]
    LargerThanStore { size: u64, max: u64 },
    #[error("the file (at least {size} bytes) is larger than max_file_bytes ({max})")]
    LargerThanLimit { size: u64, max: u64 },
    #[error("the file is no longer in the catalog")]
    NotInCatalog,
    #[error("store error: {0}")]
    Store(String),
    #[error("upstream client setup: {0}")]
    Setup(String),
    #[error("no progress for {0:?}: download abandoned")]
    Stalled(Duration),
    #[error("{0}; try again later")]
    Busy(&'static str),
    /// An object without a catalog entry changed identity mid-download
    /// (another length, `ETag` or `Last-Modified` on a resume).
    #[error("the origin's object changed mid-download: {0}")]
    Changed(String),
}

impl FetchError {
    /// What a client is told: no upstream URL (it may be a presigned URL of
    /// the shared tier, signature included) and no local path; the log
    /// has the whole error.
    pub fn client_text(&self) -> String {
        match self {
            Self::UpstreamStatus { status, .. } => format!("upstream answered {status}"),
            Self::Connect(_) => "upstream unreachable".into(),
            Self::Timeout(_) => "upstream timed out".into(),
            Self::Transfer(_) => "upstream transfer failed".into(),
            Self::Store(_) => "store error".into(),
            Self::Setup(_) => "upstream client setup failed".into(),
            Self::Changed(_) => "the origin's object changed mid-download".into(),
            other => other.to_string(),
        }
    }
}

/// Progress of background downloads (at-sync, prefetch) since the server started.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackgroundStatus {
    /// Files handed to background downloading.
    pub files_queued: u64,
    /// Of those, finished (stored, already present, or failed).
    pub files_done: u64,
    pub files_failed: u64,
    /// Bytes of the finished ones.
    pub bytes_done: u64,
}

/// Progress of the current background plan.
#[derive(Default)]
struct BackgroundCounters {
    /// Which plan is current; older drivers stop and stop counting.
    plan: AtomicU64,
    queued: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
}

impl BackgroundCounters {
    /// Starts counting a new plan of `files`; returns its number.
    fn start_plan(&self, files: u64) -> u64 {
        let plan = self.plan.fetch_add(1, Ordering::SeqCst) + 1;
        for counter in [&self.done, &self.failed, &self.bytes] {
            counter.store(0, Ordering::Relaxed);
        }
        self.queued.store(files, Ordering::Relaxed);
        plan
    }

    fn is_current(&self, plan: u64) -> bool {
        self.plan.load(Ordering::SeqCst) == plan
    }

    /// One file of `plan` is done (stored, skipped or failed).
    fn finished(&self, plan: u64, bytes: u64, failed: bool) {
        if self.is_current(plan) {
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
            self.failed.fetch_add(u64::from(failed), Ordering::Relaxed);
            self.done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `upstream_rate_limit` as the admin API reads and sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Bytes a second, all upstream downloads together; `null`: none.
    /// Required: a body that forgets it does not lift the limit.
    #[serde(deserialize_with = "Option::deserialize")]
    pub bytes_per_sec: Option<u64>,
}

/// How this server reaches its upstream, for status (what the operator set).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpstreamStatus {
    /// `upstream_proxy`, without its password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Hosts reached without it (`upstream_no_proxy`, and the shared tier's endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_proxy: Option<String>,
    /// `upstream_rate_limit`, bytes a second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u64>,
}

/// One download in progress, for status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchStatus {
    pub sha1: String,
    pub name: String,
    /// Waiting for a download slot.
    pub queued: bool,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    /// Over the last quarter second; for a download in parts, the average
    /// since the first answer.
    pub bytes_per_second: u64,
    /// Clients streaming from it.
    pub clients: usize,
    /// Resumes after interruptions, its parts' included.
    pub resumes: u32,
    pub seconds: f64,
}

/// The single-flight table of downloads.
pub struct Fetcher {
    client: reqwest::Client,
    /// `upstream_rate_limit`, shared by every transfer from the upstream
    /// (changed at run time by the admin API).
    throttle: Arc<Throttle>,
    store: Arc<dyn Storage>,
    catalog: Arc<Catalog>,
    quota: Arc<Quota>,
    settings: FetchSettings,
    metrics: Arc<Metrics>,
    inflight: Mutex<HashMap<Sha1Digest, Arc<Download>>>,
    /// Downloads of objects without a catalog entry, by their key.
    objects: object::Objects,
    /// Bounds upstream downloads of any kind.
    slots: Arc<tokio::sync::Semaphore>,
    /// Downloads waiting for a slot (bounded by `max_queued`).
    queued: AtomicUsize,
    /// Bounds background (at-sync, prefetch) downloads, so clients' misses
    /// always find slots.
    background: Arc<tokio::sync::Semaphore>,
    background_progress: Arc<BackgroundCounters>,
    /// The shared tier (S3): asked before the origin, given every file the
    /// origin sent.
    shared: Shared,
    /// The proxy upstream downloads go through, as resolved at start.
    proxy: Option<UpstreamProxy>,
}

/// A download joined by [`Fetcher::join`].
pub struct Joined {
    pub download: Arc<Download>,
    /// This call started it (a miss) rather than joining a running one.
    pub started: bool,
}

impl Fetcher {
    pub fn new(
        store: Arc<dyn Storage>,
        catalog: Arc<Catalog>,
        quota: Arc<Quota>,
        settings: FetchSettings,
        metrics: Arc<Metrics>,
        shared: Option<Arc<S3Tier>>,
    ) -> Result<Arc<Fetcher>, FetchError> {
        let mut proxy = settings
            .proxy()
            .map_err(|e| FetchError::Setup(e.to_string()))?;
        if let (Some(proxy), Some(endpoint)) =
            (&mut proxy, shared.as_ref().and_then(|s| s.endpoint()))
        {
            // Downloads from the shared tier go to its endpoint, not out.
            proxy.reach_directly(endpoint);
        }
        let client = upstream::client(&settings, proxy.as_ref())?;
        if let Some(bytes_per_sec) = settings.rate_limit {
            tracing::info!(bytes_per_sec, "upstream downloads limited");
        }
        let shared = Shared::new(shared, store.clone(), metrics.clone());
        Ok(Arc::new(Fetcher {
            client,
            throttle: Arc::new(Throttle::new(settings.rate_limit)),
            store,
            catalog,
            quota,
            background: Arc::new(tokio::sync::Semaphore::new(
                settings.background_concurrency.max(1),
            )),
            slots: Arc::new(tokio::sync::Semaphore::new(settings.max_downloads.max(1))),
            queued: AtomicUsize::new(0),
            background_progress: Arc::default(),
            settings,
            metrics,
            inflight: Mutex::new(HashMap::new()),
            objects: Mutex::default(),
            shared,
            proxy,
        }))
    }

    /// The URL a file is downloaded from (and redirected to in metadata-only mode).
    pub fn upstream_url(&self, catalog_url: &str) -> String {
        let Some(base) = &self.settings.upstream else {
            return catalog_url.to_owned();
        };
        let Ok(mut url) = reqwest::Url::parse(catalog_url) else {
            return catalog_url.to_owned();
        };
        // Host and port first: set_scheme refuses some changes on odd URLs,
        // and the catalog validated these as http(s) already.
        let _ = url.set_scheme(base.scheme());
        let _ = url.set_host(base.host_str());
        let _ = url.set_port(base.port());
        url.to_string()
    }

    /// Joins the download of `file`, starting it if none runs. A new
    /// download is queued for a slot and costs nothing else until it has
    /// one (no temp file, no thread); a full queue refuses it.
    pub fn join(self: &Arc<Self>, file: &FileEntry) -> Result<Joined, FetchError> {
        let mut inflight = self.inflight.lock().unwrap();
        if let Some(dl) = inflight.get(&file.sha1) {
            return Ok(Joined {
                download: dl.clone(),
                started: dl.take_start(),
            });
        }
        let location = self
            .catalog
            .location(&file.sha1)
            .ok_or(FetchError::NotInCatalog)?;
        if self.queued.load(Ordering::SeqCst) >= self.settings.max_queued
            && self.slots.available_permits() == 0
        {
            return Err(FetchError::Busy("the download queue is full"));
        }
        self.queued.fetch_add(1, Ordering::SeqCst);
        let dl = Arc::new(Download::new(file, &location.name));
        inflight.insert(file.sha1, dl.clone());
        let url = self.upstream_url(&location.url);
        tracing::info!(sha1 = %file.sha1, %url, "fetch queued");
        tokio::spawn(self.clone().run(dl.clone(), *file, url));
        Ok(Joined {
            download: dl,
            started: true,
        })
    }

    /// Replaces the background download plan (at-sync, prefetch) with
    /// `files`, downloaded a bounded number at a time. Each file is checked
    /// against the policy and the catalog when its turn comes, so switching
    /// to metadata-only, declining or storing it meanwhile skips it; a newer
    /// plan stops this one (its running downloads finish).
    pub fn prefetch(self: &Arc<Self>, files: Vec<Sha1Digest>) {
        // One driver walks the list, starting at most `background_concurrency`
        // downloads at a time: a million-file at-sync costs one task and a
        // list of digests, not a million tasks.
        let fetcher = self.clone();
        let progress = self.background_progress.clone();
        let plan = progress.start_plan(files.len() as u64);
        tokio::spawn(async move {
            for sha1 in files {
                let Ok(permit) = fetcher.background.clone().acquire_owned().await else {
                    return;
                };
                if !progress.is_current(plan) {
                    return;
                }
                let policy = fetcher.catalog.policy();
                let wanted = fetcher
                    .catalog
                    .lookup_sha1(&sha1)
                    .filter(|f| !f.stored && policy.fetches_in_background(f.approval));
                let Some(file) = wanted else {
                    progress.finished(plan, 0, false);
                    continue;
                };
                let joined = loop {
                    match fetcher.join(&file) {
                        // Clients' misses filled the queue: wait for room.
                        Err(FetchError::Busy(_)) => {
                            tokio::time::sleep(Duration::from_millis(500)).await
                        }
                        other => break other,
                    }
                };
                match joined {
                    Ok(joined) => {
                        let progress = progress.clone();
                        tokio::spawn(async move {
                            let result = joined.download.finished().await;
                            let written = joined.download.progress().written;
                            progress.finished(plan, written, result.is_err());
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(%sha1, error = %e, "prefetch failed");
                        progress.finished(plan, 0, true);
                    }
                }
            }
        });
    }

    /// Bytes `range` of `file` straight from the upstream, not stored and not
    /// verifiable on their own (the client checks the whole file's digest, as
    /// Windows Update does). For a range far ahead of a running download, so
    /// a client does not wait for gigabytes it did not ask for. `None` when
    /// the upstream does not answer with exactly that range: the caller then
    /// waits for the main download instead.
    pub async fn range_from_upstream(
        &self,
        dl: &Download,
        file: &FileEntry,
        range: std::ops::Range<u64>,
        len: u64,
    ) -> Option<futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>> {
        let url = match dl.source() {
            Some(source) => source.to_owned(),
            None => self.upstream_url(&self.catalog.location(&file.sha1)?.url),
        };
        self.range_via(&self.client, &url, None, dl, range, len)
            .await
    }

    /// [`Fetcher::range_from_upstream`] from `url` through `client`, with
    /// `If-Range` when given (an object's pinned identity).
    async fn range_via(
        &self,
        client: &reqwest::Client,
        url: &str,
        if_range: Option<&str>,
        dl: &Download,
        range: std::ops::Range<u64>,
        len: u64,
    ) -> Option<futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>> {
        use futures_util::StreamExt;
        let want = format!("bytes {}-{}/{len}", range.start, range.end - 1);
        let mut request = client.get(url).header(
            reqwest::header::RANGE,
            format!("bytes={}-{}", range.start, range.end - 1),
        );
        if let Some(validator) = if_range {
            request = request.header(reqwest::header::IF_RANGE, validator);
        }
        let request = request.send();
        let response = tokio::time::timeout(self.settings.read_timeout, request)
            .await
            .ok()?
            .ok()?;
        let content_range = response
            .headers()
            .get(reqwest::header::CONTENT_RANGE)?
            .to_str()
            .ok()?;
        if response.status() != reqwest::StatusCode::PARTIAL_CONTENT || content_range != want {
            tracing::debug!(%url, status = %response.status(), "upstream range not usable; waiting instead");
            return None;
        }
        let remaining = range.end - range.start;
        let read_timeout = self.settings.read_timeout;
        let mut body = response.bytes_stream().boxed();
        if !dl.from_shared_tier() {
            body = self.throttle.limit(body);
        }
        let chunks = futures_util::stream::unfold(
            (body, remaining, false),
            move |(mut body, mut remaining, failed)| async move {
                use std::io::Error;
                if failed {
                    return None;
                }
                let next = tokio::time::timeout(read_timeout, body.next()).await;
                let item = match next {
                    Err(_) => Err(Error::other("upstream range stalled")),
                    Ok(Some(Ok(chunk))) if chunk.len() as u64 <= remaining => {
                        remaining -= chunk.len() as u64;
                        Ok(chunk)
                    }
                    Ok(Some(Ok(_))) => Err(Error::other("upstream sent more than the range")),
                    Ok(Some(Err(e))) => Err(Error::other(e)),
                    Ok(None) if remaining == 0 => return None,
                    Ok(None) => Err(Error::other("upstream range ended early")),
                };
                let failed = item.is_err();
                Some((item, (body, remaining, failed)))
            },
        );
        Some(chunks.boxed())
    }

    /// Whether a range starting at `start` is worth its own upstream
    /// request: the download would reach it later than `far_ahead_wait` at
    /// its current rate. Time, not bytes: 8 MiB is a blink on a LAN and
    /// seconds behind a WAN link. A download just begun has no rate yet;
    /// the first one is measured within tens of milliseconds, and waiting
    /// for it keeps a herd of ranged clients on one upstream request.
    pub async fn is_far_ahead(&self, dl: &Download, start: u64) -> bool {
        let wait = self.settings.far_ahead_wait;
        dl.measured(start, wait)
            .await
            .reaches(start)
            .is_none_or(|eta| eta > wait)
    }

    /// [`Fetcher::is_far_ahead`] for an object's range. Delivery
    /// Optimization's clients ask for shuffled ranges from the first
    /// moment, so nearly every early range is ahead of the download, and a
    /// rate judged on the first tens of milliseconds (slow start, a burst
    /// of clients on the same cores) would send most of them to the origin
    /// on their own, each byte fetched twice. The rate is judged once the
    /// download has been measured over a whole window.
    pub async fn is_far_ahead_object(&self, dl: &Download, start: u64) -> bool {
        let wait = self.settings.far_ahead_wait;
        // The first estimate comes after a fifth of a window, the next
        // after a whole one more.
        let measured = transfer::RATE_WINDOW + transfer::RATE_WINDOW / 5;
        dl.received_for(start, measured, wait).await;
        self.is_far_ahead(dl, start).await
    }

    /// The upstream client (with `upstream_proxy` and `upstream_ca`).
    pub fn upstream_client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// The longest wait for an upstream's response head or next chunk.
    pub fn read_timeout(&self) -> Duration {
        self.settings.read_timeout
    }

    /// How long a client waits for its download to get a slot.
    pub fn queue_wait(&self) -> Duration {
        self.settings.queue_wait
    }

    /// Downloads in progress.
    pub fn status(&self) -> Vec<FetchStatus> {
        let inflight = self.inflight.lock().unwrap();
        let mut list: Vec<_> = inflight.values().map(|d| d.status()).collect();
        drop(inflight);
        let objects = self.objects.lock().unwrap();
        list.extend(objects.values().map(|o| o.dl.status()));
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// The rate limit of upstream transfers (`None`: none), from their next
    /// 64 KiB on.
    pub fn set_rate_limit(&self, bytes_per_sec: Option<u64>) {
        self.throttle.set(bytes_per_sec);
        tracing::info!(bytes_per_sec, "upstream rate limit changed");
    }

    /// The proxy and rate limit upstream transfers go by.
    pub fn upstream_status(&self) -> UpstreamStatus {
        let proxy = self.proxy.as_ref();
        UpstreamStatus {
            proxy: proxy.map(UpstreamProxy::shown),
            no_proxy: proxy.and_then(|p| p.no_proxy.clone()),
            rate_limit: self.throttle.bytes_per_sec(),
        }
    }

    /// Background download progress.
    pub fn background_status(&self) -> BackgroundStatus {
        use std::sync::atomic::Ordering::Relaxed;
        let p = &self.background_progress;
        BackgroundStatus {
            files_queued: p.queued.load(Relaxed),
            files_done: p.done.load(Relaxed),
            files_failed: p.failed.load(Relaxed),
            bytes_done: p.bytes.load(Relaxed),
        }
    }

    /// Whether a file is being downloaded right now.
    pub fn is_fetching(&self, sha1: &Sha1Digest) -> bool {
        self.inflight.lock().unwrap().contains_key(sha1)
    }

    /// The shared tier in front of the origin, when there is one.
    pub fn shared(&self) -> Option<&S3Tier> {
        self.shared.tier()
    }

    async fn run(self: Arc<Self>, dl: Arc<Download>, file: FileEntry, url: String) {
        let slot = self.slots.clone().acquire_owned().await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        let _slot = slot.expect("never closed");
        let began = std::time::Instant::now();
        dl.update(|p| p.phase = Phase::Connecting);
        let (url, from_shared) = self.shared.source(&file, url).await;
        dl.set_source(url.clone(), from_shared);
        let reservation = self.quota.reserve(file.size.unwrap_or(0));
        let outcome = match self.begin(&dl) {
            Ok(ingest) => {
                let transfer = transfer::Transfer {
                    client: &self.client,
                    throttle: (!from_shared).then_some(&self.throttle),
                    settings: &self.settings,
                    metrics: &self.metrics,
                    url: &url,
                    max_store: self.quota.max(),
                    object: None,
                };
                let expected = crate::store::Expected {
                    size: file.size,
                    sha1: Some(file.sha1),
                    sha256: file.sha256,
                };
                transfer.run(&dl, ingest, &expected).await
            }
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(got) => {
                self.catalog.record_stored(&file.sha1, got);
                if !from_shared {
                    self.shared.share(file.sha1, got.sha256);
                }
            }
            Err(e) if from_shared => {
                if matches!(e, FetchError::Verification(_)) {
                    self.shared.forget(&file).await;
                }
                self.shared.download_failed(Shared::file_key(&file), e);
            }
            Err(_) => {}
        }
        self.metrics.fetch_finished(
            outcome.is_ok(),
            matches!(outcome, Err(FetchError::Verification(_))),
            began.elapsed(),
        );
        match &outcome {
            Ok(got) => {
                tracing::info!(sha1 = %file.sha1, sha256 = %got.sha256, bytes = got.size, "fetch stored")
            }
            Err(e) => tracing::warn!(sha1 = %file.sha1, error = %e, "fetch failed"),
        }
        drop(reservation);
        if outcome.is_ok() {
            self.quota.enforce();
        }
        // Out of the table first: a request arriving after the failure starts afresh.
        self.inflight.lock().unwrap().remove(&file.sha1);
        dl.finish(outcome.map(|_| ()));
    }

    /// The temp file of a download that now holds a slot.
    fn begin(&self, dl: &Download) -> Result<crate::store::Ingest, FetchError> {
        let store_error = |e: &dyn std::fmt::Display| FetchError::Store(e.to_string());
        let ingest = self
            .store
            .clone()
            .begin_ingest()
            .map_err(|e| store_error(&e))?;
        dl.attach(&ingest).map_err(|e| store_error(&e))?;
        Ok(ingest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_not_told_urls_or_paths() {
        let url = "http://s3.local/bucket/sha256/ab?X-Amz-Signature=secret";
        let errors = [
            FetchError::UpstreamStatus {
                status: 404,
                url: url.into(),
            },
            FetchError::Connect(format!("{url}: refused")),
            FetchError::Timeout(format!("{url}: 30s")),
            FetchError::Transfer(format!("{url}: reset")),
            FetchError::Store("store I/O on /var/lib/upcache/tmp/1: denied".into()),
            FetchError::Setup(format!("{url}: bad")),
        ];
        for e in errors {
            let text = e.client_text();
            assert!(
                !text.contains("Signature") && !text.contains("/var/"),
                "{text}"
            );
            assert!(e.to_string().len() > text.len(), "the log keeps the detail");
        }
        let status = FetchError::UpstreamStatus {
            status: 503,
            url: url.into(),
        };
        assert_eq!(status.client_text(), "upstream answered 503");
    }
}
