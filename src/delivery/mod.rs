//! Delivery Optimization (DO) content: `/filestreamingservice/files/<guid>`
//! objects, cached by their path alone (never the query, which holds DO's
//! short-lived token), fetched once from the origin the client names in
//! `cacheHostOrigin` after that origin has passed the administrator's
//! policy, and stored in the same content-addressed store as update files.
//!
//! - `path`: GUID paths → object keys.
//! - `origin`: `cacheHostOrigin` → a checked origin (patterns, networks).
//! - `resolve`: origin names resolved, checked and pinned for the connection.
//! - `index`: object key → stored SHA-256, identity, verified or not.
//! - `bindings`: administrators' digest bindings, this node's and its
//!   primary's, and their list's wire form.
//! - `settings`: the wing's settings.
//!
//! The download itself is `fetch`'s (see `fetch/object.rs`): one per key,
//! streamed to every waiting client, resumed with a fresher token.

pub mod bindings;
pub mod index;
pub mod origin;
pub mod path;
pub mod resolve;
pub mod settings;

use std::sync::Arc;

use crate::fetch::{FetchError, FetchSettings, Fetcher, Joined, ObjectOutcome, ObjectRequest};
use crate::store::{Hit, Storage, StoreError};
use crate::telemetry::metrics::Metrics;
use index::{Index, Stored};
use origin::{Host, OriginError, OriginPolicy, OriginQuery};
use path::{ObjectKey, PathError};
use resolve::{PinnedResolver, ResolveError};
pub use settings::{DeliverySettings, Mode, Scheme};

/// Why a DO request gets no object.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("Delivery Optimization content is not served here (delivery_optimization = off)")]
    Off,
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] index::IndexError),
}

impl DeliveryError {
    /// The refusal's reason, for `upcache_do_refused_total`, if it is one.
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            DeliveryError::Origin(e) | DeliveryError::Resolve(ResolveError::Refused(e)) => {
                Some(e.reason())
            }
            _ => None,
        }
    }
}

/// Marks a response (its extensions) as carrying an unverified object.
#[derive(Debug, Clone, Copy)]
pub struct Unverified;

/// What to answer a DO request with.
pub enum Answer {
    /// Stored: serve it.
    Stored { hit: Hit, stored: Stored },
    /// Being downloaded (started or joined).
    Fetching {
        key: ObjectKey,
        joined: Joined,
        /// No digest from elsewhere will check these bytes.
        unverified: bool,
    },
    /// `pass-through`: relay the request to this URL with this client.
    PassThrough {
        url: String,
        client: reqwest::Client,
    },
}

/// The wing in `status`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DeliveryStatus {
    /// `delivery_optimization`: cache, pass-through or off.
    pub mode: String,
    /// Objects verified against a digest known from elsewhere.
    pub verified_objects: u64,
    pub verified_bytes: u64,
    /// Objects stored with only the SHA-256 computed on the way in.
    pub unverified_objects: u64,
    pub unverified_bytes: u64,
    /// `do_max_bytes`, if set.
    pub max_unverified_bytes: Option<u64>,
    /// Objects whose digests are known from elsewhere (an administrator's
    /// binding, or a file an update names at its DO URL): their downloads
    /// are verified.
    #[serde(default)]
    pub known_objects: u64,
}

/// The DO wing, as the request path uses it.
pub struct Delivery {
    mode: Mode,
    scheme: Scheme,
    policy: Arc<OriginPolicy>,
    resolver: Arc<PinnedResolver>,
    /// Origins reached directly: addresses from `resolver` only, no proxy.
    direct: reqwest::Client,
    /// The HQ upcache every request goes to instead (`upstream`).
    upstream: Option<reqwest::Url>,
    /// `upstream_proxy` is set: the proxy resolves; names are checked alone.
    proxied: bool,
    max_unverified: Option<u64>,
    index: Arc<Index>,
    fetcher: Arc<Fetcher>,
    store: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
}

impl Delivery {
    pub fn new(
        settings: &DeliverySettings,
        fetch: &FetchSettings,
        data_dir: &std::path::Path,
        store: Arc<dyn Storage>,
        fetcher: Arc<Fetcher>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Delivery>> {
        let policy = Arc::new(settings.origin_policy()?);
        let resolver = PinnedResolver::new(policy.clone(), fetch.connect_timeout);
        let mut direct = reqwest::Client::builder()
            .connect_timeout(fetch.connect_timeout)
            .user_agent(concat!("upcache/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .dns_resolver(Arc::new(resolve::ForClient(resolver.clone())));
        // `do_origin_scheme = "https"` to an origin reached directly trusts
        // `upstream_ca` as every other upstream connection does.
        if let Some(ca) = &fetch.upstream_ca_file {
            direct = crate::net::pem::trust_roots_from(direct, ca)?;
        }
        let direct = direct.build()?;
        let index = Index::open(data_dir, &*store)?;
        if settings.do_max_bytes.is_some() {
            // Eviction must see which files responses are sending.
            store.track_serving();
        }
        Ok(Arc::new(Delivery {
            mode: settings.delivery_optimization,
            scheme: settings.do_origin_scheme,
            policy,
            resolver,
            direct,
            upstream: fetch.upstream.clone(),
            proxied: fetch.proxy()?.is_some(),
            max_unverified: settings.do_max_bytes,
            index,
            fetcher,
            store,
            metrics,
        }))
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn status(&self) -> DeliveryStatus {
        let ((verified_objects, verified_bytes), (unverified_objects, unverified_bytes)) =
            self.index.totals();
        DeliveryStatus {
            mode: self.mode.as_str().into(),
            verified_objects,
            verified_bytes,
            unverified_objects,
            unverified_bytes,
            max_unverified_bytes: self.max_unverified,
            known_objects: self.index.known_count(),
        }
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Decides a GET or HEAD of `path?query`: every check first, then the
    /// store, then the one download of the object. Refusals happen before
    /// any upstream connection.
    pub async fn answer(
        self: &Arc<Self>,
        path: &str,
        query: Option<&str>,
    ) -> Result<Answer, DeliveryError> {
        let refused = |e: DeliveryError| {
            if let Some(reason) = e.refusal() {
                self.metrics.do_refused(reason);
                tracing::info!(path, error = %e, "DO origin refused");
            }
            e
        };
        if self.mode == Mode::Off {
            return Err(DeliveryError::Off);
        }
        let key = path::parse(path)?;
        let origin = origin::split_query(query).map_err(|e| refused(e.into()))?;
        self.policy
            .check_host(&origin.host)
            .map_err(|e| refused(e.into()))?;
        if self.mode == Mode::Cache {
            if let Some(answer) = self.stored(&key)? {
                return Ok(answer);
            }
        }
        let (url, client) = self.source(path, query, &origin).await.map_err(refused)?;
        if self.mode == Mode::PassThrough {
            let client = client.unwrap_or_else(|| self.fetcher.upstream_client());
            return Ok(Answer::PassThrough { url, client });
        }
        let known = self.index.known(&key);
        let unverified = known.is_none();
        let joined = self.fetcher.join_object(ObjectRequest {
            key: key.as_str().to_owned(),
            url,
            client,
            expected: known.unwrap_or_default(),
            on_done: self.on_done(key.clone()),
        })?;
        Ok(Answer::Fetching {
            key,
            joined,
            unverified,
        })
    }

    /// [`Delivery::answer`] for the HTTP/1.1 fast path: only what it can
    /// answer without a side effect that must be counted once. A stored
    /// object, or a download of it already running (this request joins it
    /// and offers its token); `None` for everything else (a refusal, a new
    /// download, pass-through), which the full path then answers.
    pub async fn answer_fast(self: &Arc<Self>, path: &str, query: Option<&str>) -> Option<Answer> {
        if self.mode != Mode::Cache {
            return None;
        }
        let key = path::parse(path).ok()?;
        let origin = origin::split_query(query).ok()?;
        self.policy.check_host(&origin.host).ok()?;
        if let Some(answer) = self.stored(&key).ok()? {
            return Some(answer);
        }
        if !self.fetcher.is_fetching_object(key.as_str()) {
            return None;
        }
        let (url, client) = self.source(path, query, &origin).await.ok()?;
        let known = self.index.known(&key);
        let unverified = known.is_none();
        let joined = self
            .fetcher
            .join_object(ObjectRequest {
                key: key.as_str().to_owned(),
                url,
                client,
                expected: known.unwrap_or_default(),
                on_done: self.on_done(key.clone()),
            })
            .ok()?;
        Some(Answer::Fetching {
            key,
            joined,
            unverified,
        })
    }

    /// The stored object of `key`, if its bytes are still there.
    fn stored(&self, key: &ObjectKey) -> Result<Option<Answer>, DeliveryError> {
        let Some(stored) = self.index.get(key) else {
            return Ok(None);
        };
        match self.store.lookup(&stored.sha256)? {
            Some(hit) => {
                self.index.served(key);
                Ok(Some(Answer::Stored { hit, stored }))
            }
            None => {
                // Removed behind our back: forget it and fetch again.
                self.index.remove(key)?;
                Ok(None)
            }
        }
    }

    /// Where the bytes come from, and through which client (`None`: the
    /// upstream client, with `upstream_proxy` if set).
    async fn source(
        &self,
        path: &str,
        query: Option<&str>,
        origin: &OriginQuery,
    ) -> Result<(String, Option<reqwest::Client>), DeliveryError> {
        if let Some(hq) = &self.upstream {
            // A branch below an HQ upcache: the same path and query,
            // cacheHostOrigin included, so HQ caches the object too.
            let base = hq.as_str().trim_end_matches('/');
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            return Ok((format!("{base}{path}{query}"), None));
        }
        let mut url = format!(
            "{}://{}{path}",
            self.scheme.as_str(),
            origin.host.to_authority()
        );
        if !origin.forward.is_empty() {
            url.push('?');
            url.push_str(&origin.forward);
        }
        if self.proxied {
            return Ok((url, None));
        }
        if let Host::Name(name) = &origin.host {
            // Resolved and checked now, pinned for the connection.
            self.resolver.checked(name).await?;
        }
        Ok((url, Some(self.direct.clone())))
    }

    /// Records a finished download: its key → its SHA-256, then keeps the
    /// unverified objects under `do_max_bytes`.
    fn on_done(self: &Arc<Self>, key: ObjectKey) -> crate::fetch::OnDone {
        let this = self.clone();
        Box::new(move |outcome: &ObjectOutcome| match outcome {
            Ok((got, identity)) => {
                let unverified = this.index.known(&key).is_none();
                let stored = Stored {
                    sha256: got.sha256,
                    size: got.size,
                    unverified,
                    identity: index::Identity {
                        len: Some(got.size),
                        etag: identity.etag.clone(),
                        last_modified: identity.last_modified.clone(),
                    },
                };
                if let Err(e) = this.index.insert(&key, stored) {
                    tracing::error!(%key, error = %e, "recording a DO object");
                }
                this.metrics.do_stored(unverified);
                this.evict_unverified();
            }
            Err(FetchError::Changed(why)) => {
                this.metrics.do_identity_changed();
                tracing::warn!(%key, why, "DO object changed mid-download; nothing stored");
            }
            Err(_) => {}
        })
    }

    /// Evicts unverified objects, least recently served first, until they
    /// fit `do_max_bytes` (one being sent is left).
    pub fn evict_unverified(&self) {
        let Some(max) = self.max_unverified else {
            return;
        };
        let (_, (_, mut bytes)) = self.index.totals();
        for (key, sha256, size) in self.index.unverified_by_last_served() {
            if bytes <= max {
                break;
            }
            if self.remove_object(&key, &sha256) {
                bytes = bytes.saturating_sub(size);
                self.metrics.evicted(size);
                tracing::info!(%key, bytes = size, "evicted (do_max_bytes)");
            }
        }
    }

    /// Removes one object's bytes (unless being sent; kept if another key
    /// names the same bytes) and forgets it; whether it did.
    fn remove_object(&self, key: &ObjectKey, sha256: &crate::digest::Sha256Digest) -> bool {
        if self.store.is_serving(sha256) {
            return false;
        }
        if !self.index.shared_by_other(key, sha256) {
            if let Err(e) = self.store.remove(sha256) {
                tracing::warn!(%key, error = %e, "DO eviction failed");
                return false;
            }
        }
        if let Err(e) = self.index.remove(key) {
            tracing::warn!(%key, error = %e, "DO eviction failed");
            return false;
        }
        true
    }
}

/// DO objects count toward `max_store_bytes` and are evicted in the same
/// least-recently-served order as catalog files.
impl crate::upkeep::quota::Tenant for Delivery {
    fn stored_bytes(&self) -> u64 {
        let ((_, verified), (_, unverified)) = self.index.totals();
        verified + unverified
    }

    fn by_last_served(&self) -> Vec<crate::upkeep::quota::TenantObject> {
        self.index
            .by_last_served()
            .into_iter()
            .map(
                |(key, sha256, size, last_served)| crate::upkeep::quota::TenantObject {
                    key: key.as_str().to_owned(),
                    sha256,
                    size,
                    last_served,
                },
            )
            .collect()
    }

    fn evict(&self, object: &crate::upkeep::quota::TenantObject) -> bool {
        ObjectKey::from_stored(&object.key)
            .is_some_and(|key| self.remove_object(&key, &object.sha256))
    }
}
