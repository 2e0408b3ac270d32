//! Objects no catalog entry describes (Delivery Optimization content),
//! fetched through the same single-flight download, followers and transfer
//! as catalog files, keyed by the caller's object key instead of a SHA-1.
//!
//! What differs:
//! - The URL carries a client's short-lived token. Every join offers its
//!   own ([`ObjectSource::offer`]); a resume the origin refuses with 403 or
//!   410 (the token expired) waits for a fresher one, which the next
//!   client's request brings, and goes on from the bytes written. (Not
//!   from the shared tier: its presigned URL has no successor.)
//! - The identity (length, `ETag`, `Last-Modified`) is pinned from the first
//!   response. Resumes send `If-Range`; a response of another identity
//!   fails the download ([`FetchError::Changed`]): nothing is stored, the
//!   followers' bodies are cut, and the next request starts afresh.
//! - With a digest known from elsewhere the bytes are verified as a catalog
//!   file's; without one they are stored *unverified*, under the SHA-256
//!   computed on the way in, and the caller is told so.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures_util::StreamExt;
use tokio::sync::watch;

use super::download::{Download, Phase};
use super::{transfer, FetchError, Fetcher, Joined};
use crate::digest::Sha256Digest;
use crate::store::s3::{Located, ObjectMarker};
use crate::store::{Expected, Ingested};

/// The weak `ETag` an upcache gives an object it is still downloading
/// when the origin gave no strong one (a weak tag is never a range match).
pub const DOWNLOADING_ETAG: &str = "W/\"upcache-downloading\"";

/// The strong `ETag` an upcache gives stored bytes: their SHA-256.
pub fn stored_etag(sha256: &Sha256Digest) -> String {
    format!("\"sha256:{sha256}\"")
}

/// The SHA-256 in a [`stored_etag`].
fn stored_etag_digest(tag: &str) -> Option<Sha256Digest> {
    tag.strip_prefix("\"sha256:")?
        .strip_suffix('"')?
        .parse()
        .ok()
}

/// What the origin said the object is, from its first response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub len: Option<u64>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Identity {
    /// The identity a response announces. A 206's length is the total in
    /// its `Content-Range`.
    pub(super) fn of(response: &reqwest::Response) -> Identity {
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let len = match response.status() {
            reqwest::StatusCode::PARTIAL_CONTENT => header(reqwest::header::CONTENT_RANGE)
                .and_then(|cr| cr.rsplit_once('/').and_then(|(_, t)| t.parse().ok())),
            _ => response.content_length(),
        };
        Identity {
            len,
            etag: header(reqwest::header::ETAG),
            last_modified: header(reqwest::header::LAST_MODIFIED),
        }
    }

    /// Whether `other` may be the same bytes: every field both know agrees.
    pub fn agrees(&self, other: &Identity) -> bool {
        fn same<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
            a.is_none() || b.is_none() || a == b
        }
        same(&self.len, &other.len)
            && same(&self.etag, &other.etag)
            && same(&self.last_modified, &other.last_modified)
    }

    /// The SHA-256 an HQ upcache gives the object, when `later` is its
    /// answer for the same object across the moment it was stored (pinned
    /// [`DOWNLOADING_ETAG`], then [`stored_etag`]) or fetched again after
    /// an eviction (the other way round), all else equal: the same bytes,
    /// to be checked against that digest, not another object.
    pub(super) fn same_upcache_object(&self, later: &Identity) -> Option<Sha256Digest> {
        let unchanged = Identity {
            etag: self.etag.clone(),
            ..later.clone()
        };
        let tags = (self.etag.as_deref()?, later.etag.as_deref()?);
        let digest = match tags {
            (DOWNLOADING_ETAG, stored) => stored_etag_digest(stored)?,
            (stored, DOWNLOADING_ETAG) => stored_etag_digest(stored)?,
            _ => return None,
        };
        self.agrees(&unchanged).then_some(digest)
    }

    /// The `If-Range` validator: a strong `ETag`, else `Last-Modified`.
    pub(super) fn if_range(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|e| !e.starts_with("W/"))
            .or(self.last_modified.as_deref())
    }
}

/// How a download of an object ended, for its caller.
pub type ObjectOutcome = Result<(Ingested, Identity), FetchError>;

/// Called once when the download ends, before later requests can start
/// another: record the stored object there and it is found at once.
pub type OnDone = Box<dyn FnOnce(&ObjectOutcome) + Send>;

/// An object to fetch.
pub struct ObjectRequest {
    /// The single-flight key: one download per key.
    pub key: String,
    /// This client's URL (its token), offered to a running download too.
    pub url: String,
    /// The client to fetch with; `None`: the upstream client (proxy and all).
    pub client: Option<reqwest::Client>,
    /// Digests known from elsewhere; none: stored unverified.
    pub expected: Expected,
    /// Told the outcome if this request starts the download.
    pub on_done: OnDone,
}

/// Where a running object download gets its URL and identity.
pub struct ObjectSource {
    url: watch::Sender<String>,
    identity: OnceLock<Identity>,
    client: reqwest::Client,
    /// Clients bring fresh URLs (their tokens): a URL refused on a resume
    /// is waited past. A presigned URL of the shared tier has no successor.
    renewable: bool,
    /// The SHA-256 an HQ upcache gives the object, learned on a resume
    /// across its change of tag: the bytes are checked against it.
    vouched: OnceLock<Sha256Digest>,
}

impl ObjectSource {
    /// A source whose URL each joining client renews with its token.
    fn new(url: String, client: reqwest::Client) -> ObjectSource {
        ObjectSource {
            url: watch::Sender::new(url),
            identity: OnceLock::new(),
            client,
            renewable: true,
            vouched: OnceLock::new(),
        }
    }

    /// A source whose one URL nobody renews (the shared tier's presigned
    /// URL, valid for hours: a refusal there is not a token's expiry).
    fn fixed(url: String, client: reqwest::Client) -> ObjectSource {
        ObjectSource {
            renewable: false,
            ..ObjectSource::new(url, client)
        }
    }

    /// Whether a URL refused on a resume may be followed by a fresher one.
    pub(super) fn is_renewable(&self) -> bool {
        self.renewable
    }

    /// A client's URL: the freshest token is used from the next request on.
    pub fn offer(&self, url: &str) {
        self.url.send_if_modified(|u| {
            let changed = u != url;
            if changed {
                url.clone_into(u);
            }
            changed
        });
    }

    /// The URL to ask now.
    pub(super) fn url(&self) -> String {
        self.url.borrow().clone()
    }

    pub(super) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Waits until a client offers a URL other than `used` (the stall
    /// watchdog bounds the wait).
    pub(super) async fn fresher_than(&self, used: &str) {
        let mut rx = self.url.subscribe();
        let _ = rx.wait_for(|u| u != used).await;
    }

    /// Pins the identity of the first response; later ones must agree.
    pub(super) fn pin(&self, identity: Identity) {
        let _ = self.identity.set(identity);
    }

    pub(super) fn identity(&self) -> Option<&Identity> {
        self.identity.get()
    }

    /// Checks a later response against the pinned identity. An HQ
    /// upcache that has stored what it was downloading answers with its
    /// SHA-256 for a tag: that is no change, and the digest is kept to
    /// check the bytes against ([`ObjectSource::vouched`]).
    pub(super) fn check(&self, response: &reqwest::Response) -> Result<(), FetchError> {
        let got = Identity::of(response);
        let Some(pinned) = self.identity().filter(|p| !p.agrees(&got)) else {
            return Ok(());
        };
        match pinned.same_upcache_object(&got) {
            Some(digest) if *self.vouched.get_or_init(|| digest) == digest => Ok(()),
            _ => Err(FetchError::Changed(format!(
                "pinned {pinned:?}, the origin now answers {got:?}"
            ))),
        }
    }

    /// The SHA-256 an HQ upcache vouched for on a resume, if any.
    pub(super) fn vouched(&self) -> Option<Sha256Digest> {
        self.vouched.get().copied()
    }

    /// The identity to record with the stored object: the pinned one, its
    /// tag the HQ's stored one once that was vouched for.
    fn identity_to_record(&self) -> Identity {
        let mut identity = self.identity().cloned().unwrap_or_default();
        if let Some(digest) = self.vouched() {
            identity.etag = Some(stored_etag(&digest));
        }
        identity
    }
}

/// Far-ahead ranges of one object fetched from its origin at once. DO's
/// clients ask for shuffled ranges, so while a download is slow nearly
/// every range is far ahead of it; unbounded, each would be fetched twice
/// (on its own and by the download), and on a busy host the copies slow
/// the download further. Beyond this, a client follows the download.
const FAR_AHEAD_PER_OBJECT: usize = 2;

/// The far-ahead bytes of one download, in all: an eighth of the object,
/// or [`FAR_AHEAD_FLOOR`] if that is more. Two at a time is not enough of
/// a bound when the origin paces each response (a CDN does): for the
/// whole of a slow download two ranges were always on their way, and a
/// 256 MiB object cost its origin 1,227 MiB (`benches/README.md`). Every
/// byte beyond the object's own is one the origin sends twice.
const FAR_AHEAD_SHARE: u64 = 8;
/// Two 1 MiB ranges (DO's size): a small object may still send some.
const FAR_AHEAD_FLOOR: u64 = 2 << 20;

/// A running object download.
#[derive(Clone)]
pub(super) struct RunningObject {
    pub dl: Arc<Download>,
    pub source: Arc<ObjectSource>,
    /// Far-ahead ranges sent from the origin now (see [`FAR_AHEAD_PER_OBJECT`]).
    far_ahead: Arc<tokio::sync::Semaphore>,
    /// Far-ahead bytes asked of the origin so far (see [`FAR_AHEAD_SHARE`]).
    far_ahead_bytes: Arc<AtomicU64>,
}

impl RunningObject {
    /// The download's far-ahead budget in bytes, once its length is known.
    fn far_ahead_budget(&self) -> Option<u64> {
        let total = self.dl.progress().total?;
        Some((total / FAR_AHEAD_SHARE).max(FAR_AHEAD_FLOOR))
    }

    /// Whether `len` more far-ahead bytes would fit the budget.
    fn far_ahead_budget_left(&self, len: u64) -> bool {
        self.far_ahead_budget()
            .is_some_and(|budget| self.far_ahead_bytes.load(Ordering::SeqCst) + len <= budget)
    }

    /// Takes `len` bytes of the budget, if they are left.
    fn spend_far_ahead(&self, len: u64) -> bool {
        let Some(budget) = self.far_ahead_budget() else {
            return false;
        };
        self.far_ahead_bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |spent| {
                (spent + len <= budget).then_some(spent + len)
            })
            .is_ok()
    }
}

/// Object downloads running, by key.
pub(super) type Objects = Mutex<HashMap<String, RunningObject>>;

impl Fetcher {
    /// Joins the download of an object, starting it if none runs; a running
    /// one takes this request's URL (a fresher token) for its next request.
    pub fn join_object(self: &Arc<Self>, req: ObjectRequest) -> Result<Joined, FetchError> {
        let mut objects = self.objects.lock().unwrap();
        if let Some(running) = objects.get(&req.key) {
            running.source.offer(&req.url);
            return Ok(Joined {
                download: running.dl.clone(),
                started: running.dl.take_start(),
            });
        }
        if self.queued.load(Ordering::SeqCst) >= self.settings.max_queued
            && self.slots.available_permits() == 0
        {
            return Err(FetchError::Busy("the download queue is full"));
        }
        self.queued.fetch_add(1, Ordering::SeqCst);
        let client = req.client.unwrap_or_else(|| self.client.clone());
        let source = Arc::new(ObjectSource::new(req.url, client));
        let dl = Arc::new(Download::new_object(&req.key, req.expected.size));
        let running = RunningObject {
            dl: dl.clone(),
            source: source.clone(),
            far_ahead: Arc::new(tokio::sync::Semaphore::new(FAR_AHEAD_PER_OBJECT)),
            far_ahead_bytes: Arc::default(),
        };
        objects.insert(req.key.clone(), running);
        tracing::info!(key = %req.key, "object fetch queued");
        let job = ObjectJob {
            key: req.key,
            expected: req.expected,
            on_done: req.on_done,
        };
        tokio::spawn(self.clone().run_object(dl.clone(), source, job));
        Ok(Joined {
            download: dl,
            started: true,
        })
    }

    /// The running download of `key` and its source, if any.
    pub(super) fn running_object(&self, key: &str) -> Option<RunningObject> {
        self.objects.lock().unwrap().get(key).cloned()
    }

    /// Whether an object download of `key` is running.
    pub fn is_fetching_object(&self, key: &str) -> bool {
        self.objects.lock().unwrap().contains_key(key)
    }

    /// The identity pinned by the running download of `key`, if any.
    pub fn object_identity(&self, key: &str) -> Option<Identity> {
        self.running_object(key)?.source.identity().cloned()
    }

    /// Whether a far-ahead range of `key`, `len` bytes, may go to its
    /// origin now: the download is not in parts, fewer than
    /// `FAR_AHEAD_PER_OBJECT` ranges are on their way, and its far-ahead
    /// budget has room for it.
    pub fn far_ahead_room(&self, key: &str, len: u64) -> bool {
        // In parts, every byte is on its way already.
        self.running_object(key).is_some_and(|r| {
            !r.dl.is_parted() && r.far_ahead.available_permits() > 0 && r.far_ahead_budget_left(len)
        })
    }

    /// Bytes `range` of a running object download straight from its origin
    /// (the far-ahead case), through the object's own client and its
    /// freshest URL; `None` when not usable, when `FAR_AHEAD_PER_OBJECT`
    /// ranges are on their way already, or when the download's far-ahead
    /// budget is spent (the caller then follows the download).
    pub async fn object_range_from_upstream(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        len: u64,
    ) -> Option<futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>> {
        let running = self.running_object(key)?;
        let permit = running.far_ahead.clone().try_acquire_owned().ok()?;
        if !running.spend_far_ahead(range.end - range.start) {
            return None;
        }
        let url = running.source.url();
        let if_range = running
            .source
            .identity()
            .and_then(|i| i.if_range().map(str::to_owned));
        let body = self
            .range_via(
                running.source.client(),
                &url,
                if_range.as_deref(),
                &running.dl,
                range,
                len,
            )
            .await?;
        // The permit is the body's: released when it ends or is dropped.
        Some(
            body.map(move |chunk| {
                let _held = &permit;
                chunk
            })
            .boxed(),
        )
    }

    async fn run_object(
        self: Arc<Self>,
        dl: Arc<Download>,
        source: Arc<ObjectSource>,
        job: ObjectJob,
    ) {
        let slot = self.slots.clone().acquire_owned().await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        let _slot = slot.expect("never closed");
        let began = std::time::Instant::now();
        dl.update(|p| p.phase = Phase::Connecting);
        let shared = self.shared.object_source(&job.key).await;
        // Objects count toward max_store_bytes as catalog files do.
        let size = shared.as_ref().map(|(found, _)| found.size);
        let reservation = self.quota.reserve(size.or(job.expected.size).unwrap_or(0));
        let outcome = match &shared {
            Some((found, marker)) => {
                self.object_from_shared(&dl, &source, &job.expected, found, marker)
                    .await
            }
            None => {
                dl.set_source(source.url(), false);
                match self.begin(&dl) {
                    Ok(ingest) => {
                        let transfer = transfer::Transfer {
                            client: source.client(),
                            throttle: Some(&self.throttle),
                            settings: &self.settings,
                            metrics: &self.metrics,
                            url: &source.url(),
                            max_store: self.quota.max(),
                            object: Some(&source),
                        };
                        transfer.run(&dl, ingest, &job.expected).await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let outcome: ObjectOutcome = outcome.map(|got| (got, source.identity_to_record()));
        match (&outcome, &shared) {
            (Ok((got, identity)), None) => self.shared.share_object(
                job.key.clone(),
                ObjectMarker {
                    sha256: got.sha256,
                    size: got.size,
                    etag: identity.etag.clone(),
                    last_modified: identity.last_modified.clone(),
                },
            ),
            (Err(e), Some((_, marker))) => {
                if matches!(e, FetchError::Verification(_)) {
                    self.shared.forget_object(&job.key, &marker.sha256).await;
                }
                let key = super::shared::Shared::object_key(&job.key);
                self.shared.download_failed(key, e);
            }
            _ => {}
        }
        self.metrics.fetch_finished(
            outcome.is_ok(),
            matches!(outcome, Err(FetchError::Verification(_))),
            began.elapsed(),
        );
        match &outcome {
            Ok((got, _)) => {
                tracing::info!(key = %job.key, sha256 = %got.sha256, bytes = got.size, "object fetch stored")
            }
            Err(e) => tracing::warn!(key = %job.key, error = %e, "object fetch failed"),
        }
        (job.on_done)(&outcome);
        drop(reservation);
        if outcome.is_ok() {
            self.quota.enforce();
        }
        // Out of the table first: a request arriving after the failure starts afresh.
        self.objects.lock().unwrap().remove(&job.key);
        dl.finish(outcome.map(|_| ()));
    }
}

impl Fetcher {
    /// Downloads an object from the shared tier's copy, another node's:
    /// checked against the SHA-256 its marker names (and a digest known
    /// from elsewhere, if any), not rate-limited. The origin's validators
    /// from the marker are pinned on `source`, so that followers and a
    /// far-ahead range sent to the origin use the origin's.
    async fn object_from_shared(
        &self,
        dl: &Arc<Download>,
        source: &ObjectSource,
        known: &Expected,
        found: &Located,
        marker: &ObjectMarker,
    ) -> Result<Ingested, FetchError> {
        source.pin(Identity {
            len: Some(marker.size),
            etag: marker.etag.clone(),
            last_modified: marker.last_modified.clone(),
        });
        if known.sha256.is_some_and(|d| d != found.sha256) {
            return Err(FetchError::Verification(format!(
                "the shared tier's copy is {}, the known digest another",
                found.sha256
            )));
        }
        // Checked against the marker's SHA-256, unless a SHA-1 known from
        // elsewhere is what verifies it (the node that uploaded it may not
        // have known it: its copy was stored unverified).
        let expected = match known.sha1 {
            Some(_) if known.sha256.is_none() => Expected {
                size: Some(found.size),
                ..known.clone()
            },
            _ => Expected {
                size: Some(found.size),
                sha256: Some(found.sha256),
                ..known.clone()
            },
        };
        dl.set_source(found.url.clone(), true);
        let ingest = self.begin(dl)?;
        // The bucket's own identity (its ETag) is pinned on a source of its
        // own: a resume from the bucket is checked against it.
        let bucket = ObjectSource::fixed(found.url.clone(), self.client.clone());
        let transfer = transfer::Transfer {
            client: &self.client,
            throttle: None,
            settings: &self.settings,
            metrics: &self.metrics,
            url: &found.url,
            max_store: self.quota.max(),
            object: Some(&bucket),
        };
        transfer.run(dl, ingest, &expected).await
    }
}

/// What a started object download carries to its end.
struct ObjectJob {
    key: String,
    expected: Expected,
    on_done: OnDone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_agree_on_what_both_know() {
        let pinned = Identity {
            len: Some(10),
            etag: Some("\"a\"".into()),
            last_modified: None,
        };
        assert!(pinned.agrees(&Identity {
            len: Some(10),
            etag: None,
            last_modified: Some("Tue, 14 Nov 2023 22:13:20 GMT".into()),
        }));
        assert!(!pinned.agrees(&Identity {
            etag: Some("\"b\"".into()),
            ..pinned.clone()
        }));
        assert!(!pinned.agrees(&Identity {
            len: Some(11),
            ..pinned.clone()
        }));
        assert_eq!(pinned.if_range(), Some("\"a\""));
        let weak = Identity {
            etag: Some("W/\"a\"".into()),
            last_modified: Some("date".into()),
            ..pinned
        };
        assert_eq!(weak.if_range(), Some("date"));
    }

    fn tagged(tag: &str) -> Identity {
        Identity {
            len: Some(10),
            etag: Some(tag.into()),
            last_modified: None,
        }
    }

    #[test]
    fn only_an_upcache_s_own_change_of_tag_is_the_same_object() {
        let digest: Sha256Digest = "ab".repeat(32).parse().unwrap();
        let stored = tagged(&stored_etag(&digest));
        let downloading = tagged(DOWNLOADING_ETAG);
        assert!(!downloading.agrees(&stored));
        assert_eq!(downloading.same_upcache_object(&stored), Some(digest));
        assert_eq!(
            stored.same_upcache_object(&downloading),
            Some(digest),
            "fetched again after an eviction"
        );
        // Every other pair of tags is compared as it stands.
        assert_eq!(tagged("W/\"other\"").same_upcache_object(&stored), None);
        assert_eq!(downloading.same_upcache_object(&tagged("\"v2\"")), None);
        assert_eq!(stored.same_upcache_object(&stored), None, "agrees anyway");
        let longer = Identity {
            len: Some(11),
            ..stored.clone()
        };
        assert_eq!(
            downloading.same_upcache_object(&longer),
            None,
            "the length counts"
        );
    }

    fn answer_tagged(tag: &str) -> reqwest::Response {
        http::Response::builder()
            .header("etag", tag)
            .header("content-length", "10")
            .body("0123456789")
            .unwrap()
            .into()
    }

    #[test]
    fn a_source_keeps_the_digest_its_upcache_vouched_for_and_refuses_another() {
        let source = ObjectSource::new("http://hq/x".into(), reqwest::Client::new());
        source.pin(tagged(DOWNLOADING_ETAG));
        let (d1, d2): (Sha256Digest, Sha256Digest) = (
            "ab".repeat(32).parse().unwrap(),
            "cd".repeat(32).parse().unwrap(),
        );
        assert!(source.check(&answer_tagged(DOWNLOADING_ETAG)).is_ok());
        assert_eq!(source.vouched(), None);
        assert!(source.check(&answer_tagged(&stored_etag(&d1))).is_ok());
        assert_eq!(source.vouched(), Some(d1));
        assert_eq!(source.identity_to_record().etag, Some(stored_etag(&d1)));
        assert!(matches!(
            source.check(&answer_tagged(&stored_etag(&d2))),
            Err(FetchError::Changed(_))
        ));
        assert!(matches!(
            source.check(&answer_tagged("\"origin\"")),
            Err(FetchError::Changed(_))
        ));
    }
}
