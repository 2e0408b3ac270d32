//! A follower keeps its catalog, approvals, rules and policy in step with a
//! primary upcache's, by pulling the primary's changes since the last pull
//! (`GET /api/v1/catalog?since=<seq>`) every `follow_interval_secs`. With
//! `targeting = "server"` it asks for the primary's groups and the
//! computers' memberships in the same pull (`&members_since=<seq>`), so a
//! computer an administrator put in a group there is in it here too; a
//! follower of this follower gets them from here in turn.
//!
//! A pull is streamed from the socket into one import transaction: it
//! applies whole or not at all, and the change number it reached is stored
//! in the same transaction, so a crash or a cut connection never skips or
//! half-applies changes. A primary that cannot be reached changes nothing:
//! the follower serves what it knows and tries again next interval.
//!
//! Each pull also reads the primary's DO digest bindings
//! (`GET /api/v1/delivery/digests`, a small bounded list) and replaces the
//! follower's copy of them whole, beside the follower's own bindings;
//! a follower of a follower gets its primary's merged list, so bindings
//! travel down a chain.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogError, FollowMembers, ImportReport};
use crate::delivery::bindings::{self, ListError};
use crate::delivery::index::{Index, IndexError};
use crate::fleet::{groups::FromPrimary, Fleet, Targeting};

/// Following a primary.
#[derive(Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct FollowSettings {
    /// Follow a primary upcache (its admin API): its catalog, approvals,
    /// rules and policy are pulled every follow_interval_secs (changes
    /// only), and admin writes here answer 409. Unset: this node is a
    /// primary.
    #[serde(with = "crate::settings::opt_http_url")]
    #[schemars(with = "Option<String>", example = &"https://upcache-primary.corp.example:8531")]
    pub follow: Option<reqwest::Url>,
    /// Bearer token for the primary's admin API.
    #[serde(with = "crate::settings::nonempty")]
    #[schemars(with = "Option<String>", example = &"the-primary's-admin-token")]
    pub follow_token: Option<String>,
    /// An https:// primary's CA (PEM), if it is not publicly trusted.
    #[schemars(example = &"/etc/upcache/primary-ca.pem")]
    pub follow_ca: Option<std::path::PathBuf>,
    /// Seconds between pulls of the primary's changes.
    #[serde(rename = "follow_interval_secs", with = "crate::settings::secs")]
    #[schemars(with = "u64")]
    pub follow_interval: Duration,
}

impl Default for FollowSettings {
    fn default() -> Self {
        FollowSettings {
            follow: None,
            follow_token: None,
            follow_ca: None,
            follow_interval: Duration::from_secs(10),
        }
    }
}

/// The token is never printed.
impl std::fmt::Debug for FollowSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowSettings")
            .field("follow", &self.follow.as_ref().map(|u| u.as_str()))
            .field("follow_token", &self.follow_token.as_ref().map(|_| "<set>"))
            .field("follow_ca", &self.follow_ca)
            .field("follow_interval", &self.follow_interval)
            .finish()
    }
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("cannot reach the primary at {url}: {}", with_causes(source))]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the primary answered {status} for {url}")]
    Refused { url: String, status: u16 },
    #[error("the primary's answer for {url} is longer than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the primary's DO digest bindings: {0}")]
    Bindings(#[from] ListError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// An error with its causes (a certificate the primary's CA does not
/// vouch for is only said by the innermost one).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Where a follower stands, for `/api/v1/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FollowStatus {
    /// The primary's admin API.
    pub primary: String,
    /// The primary's change number this catalog is at.
    pub seq: u64,
    /// Unix seconds of the last pull that succeeded.
    pub last_pull: Option<u64>,
    /// Updates the last successful pull brought (0: nothing had changed).
    pub last_updates: u64,
    /// Computers whose groups the last successful pull brought.
    #[serde(default)]
    pub last_members: u64,
    /// The primary's change number the memberships here are at (`None`:
    /// not taken: `targeting = "client"`, or not yet).
    #[serde(default)]
    pub members_seq: Option<u64>,
    /// Why the last pull failed, if it did (cleared by the next success).
    pub error: Option<String>,
    /// The primary's DO digest bindings held here, as of the last pull
    /// that read them.
    #[serde(default)]
    pub primary_digests: u64,
    /// Why the last pull of those bindings failed, if it did (the copy
    /// held stays; cleared by the next success).
    #[serde(default)]
    pub digests_error: Option<String>,
}

/// The pulling side.
pub struct Follower {
    primary: reqwest::Url,
    token: Option<String>,
    interval: Duration,
    http: reqwest::Client,
    status: Mutex<FollowStatus>,
    /// When the primary last refused `members_since` (a release before
    /// memberships): pulls leave it out for [`ASK_MEMBERS_AGAIN`] after.
    members_refused: Mutex<Option<std::time::Instant>>,
}

/// Where the primary lists its DO digest bindings.
const DIGESTS_PATH: &str = "/api/v1/delivery/digests";

/// How long a follower pulls without memberships from a primary that
/// refused them, before it asks again (the primary may have been upgraded).
const ASK_MEMBERS_AGAIN: Duration = Duration::from_secs(3600);

impl Follower {
    /// A follower of `primary`; `ca`: a PEM file of extra roots for an
    /// HTTPS primary with a private CA. `Err`: that file cannot be used.
    pub fn new(
        primary: reqwest::Url,
        token: Option<String>,
        ca: Option<&std::path::Path>,
        interval: Duration,
    ) -> Result<Follower, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // A whole first pull of a large catalog takes a while; a stalled
            // one is cut by the read timeout.
            .read_timeout(Duration::from_secs(60));
        if let Some(ca) = ca {
            builder = crate::net::pem::trust_roots_from(builder, ca).map_err(|e| e.to_string())?;
        }
        let http = builder.build().map_err(|e| e.to_string())?;
        if token.is_some() && primary.scheme() == "http" {
            // The token rides every pull in clear: anyone on the path can
            // take it and drive the primary's admin API.
            tracing::warn!(
                %primary,
                "follow_token is sent to the primary over plain http://: use https:// (admin_tls on the primary) so that it cannot be read on the way"
            );
        }
        let status = FollowStatus {
            primary: primary.to_string(),
            ..FollowStatus::default()
        };
        Ok(Follower {
            primary,
            token,
            interval,
            http,
            status: Mutex::new(status),
            members_refused: Mutex::new(None),
        })
    }

    pub fn status(&self) -> FollowStatus {
        self.status.lock().unwrap().clone()
    }

    /// The primary's admin API, as named in 409 answers.
    pub fn primary(&self) -> &str {
        self.primary.as_str()
    }

    /// Seconds between pulls (and the longest wait before another try of
    /// a report forward that failed).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A `GET` of `url` on the primary's admin API, with the token.
    fn get(&self, url: reqwest::Url) -> reqwest::RequestBuilder {
        let req = self.http.get(url);
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// A `POST` of JSON to `path` on the primary's admin API, with the token.
    pub(crate) fn post_json(&self, path: &str, body: String) -> reqwest::RequestBuilder {
        let url = self.primary.join(path).expect("a fixed path joins");
        let mut req = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    /// Pulls into `catalog` (and the primary's DO digest bindings into
    /// `index`) now and then every interval until `shutdown`; `changed`
    /// runs after a pull that brought updates (the node's background
    /// downloads follow the new catalog).
    pub async fn run(
        self: Arc<Self>,
        catalog: Arc<Catalog>,
        fleet: Arc<Fleet>,
        index: Arc<Index>,
        changed: impl Fn() + Send + Sync + 'static,
        shutdown: CancellationToken,
    ) {
        loop {
            self.pull_once(&catalog, &fleet, &changed).await;
            self.mirror_digests(&index).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One pull, recorded in the status; a failure is logged and kept for
    /// status, and the catalog stays as it was.
    pub async fn pull_once(
        &self,
        catalog: &Arc<Catalog>,
        fleet: &Fleet,
        changed: &(dyn Fn() + Send + Sync),
    ) {
        let since = catalog.follow_seq().unwrap_or(0);
        // Server-side targeting: the primary's administrators place
        // computers, and this node takes their choice.
        let members = (fleet.settings().targeting == Targeting::Server)
            .then(|| catalog.follow_members_seq().ok().flatten().unwrap_or(0));
        let mut result = self.pull(catalog, since, members).await;
        if let Ok((_, seq, _)) = &result {
            if *seq < since {
                // The primary's counter went back (a new or restored
                // database): what we hold may be stale, take it all again.
                tracing::warn!(
                    since,
                    seq,
                    "the primary's change number went back; pulling everything"
                );
                result = self.pull(catalog, 0, members.map(|_| 0)).await;
            }
        }
        let mut status = self.status.lock().unwrap();
        match result {
            Ok((report, seq, computers)) => {
                let updates =
                    report.updates_added + report.updates_replaced + report.updates_unchanged;
                if updates > 0 {
                    tracing::info!(seq, %report, "followed the primary");
                }
                status.seq = seq;
                status.last_updates = updates;
                status.last_members = computers;
                status.members_seq = catalog.follow_members_seq().ok().flatten();
                status.last_pull = Some(unix_now());
                status.error = None;
                drop(status);
                if updates > 0 {
                    changed();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "following the primary failed; serving what we know");
                status.error = Some(e.to_string());
            }
        }
    }

    /// Streams the primary's changes since `since` (and with `members`,
    /// its memberships changed since then) into one import; the report,
    /// the change number reached and how many computers' groups came.
    async fn pull(
        &self,
        catalog: &Arc<Catalog>,
        since: u64,
        members: Option<u64>,
    ) -> Result<(ImportReport, u64, u64), FollowError> {
        let refused_lately = self
            .members_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < ASK_MEMBERS_AGAIN);
        let members = members.filter(|_| !refused_lately);
        let mut result = self.pull_as(catalog, since, members).await;
        if let (Err(FollowError::Refused { status: 400, .. }), Some(_)) = (&result, members) {
            // A primary of an earlier release knows no `members_since`:
            // the catalog still follows, the memberships do not, and the
            // next pulls do not ask for an hour.
            tracing::warn!(
                "the primary does not give its computers' groups (upgrade it): following its catalog without them, asking again in an hour"
            );
            *self
                .members_refused
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
            result = self.pull_as(catalog, since, None).await;
        }
        result
    }

    /// Takes the primary's DO digest bindings into `index`, recorded in
    /// the status; a failure is kept for status (logged when it is not
    /// the last one again: a primary of an earlier release lists none,
    /// every pull), and the copy held stays as it was.
    async fn mirror_digests(&self, index: &Arc<Index>) {
        let result = self.pull_digests(index).await;
        let mut status = self.status.lock().unwrap();
        match result {
            Ok(held) => {
                status.primary_digests = held as u64;
                status.digests_error = None;
            }
            Err(e) => {
                let error = e.to_string();
                if status.digests_error.as_ref() != Some(&error) {
                    tracing::warn!(%error, "taking the primary's DO digest bindings failed; keeping the copy held");
                }
                status.digests_error = Some(error);
            }
        }
    }

    /// Reads the primary's bindings (bounded) and replaces the copy held
    /// in `index` with them, whole; how many the primary binds.
    async fn pull_digests(&self, index: &Arc<Index>) -> Result<usize, FollowError> {
        let url = self.primary.join(DIGESTS_PATH).expect("a fixed path joins");
        let resp =
            self.get(url.clone())
                .send()
                .await
                .map_err(|source| FollowError::Unreachable {
                    url: url.to_string(),
                    source,
                })?;
        if !resp.status().is_success() {
            return Err(FollowError::Refused {
                url: url.to_string(),
                status: resp.status().as_u16(),
            });
        }
        let body = body_within(resp, bindings::MAX_LIST_BYTES, &url).await?;
        let primary = bindings::parse_list(&body)?;
        let held = primary.len();
        let index = index.clone();
        let changed = tokio::task::spawn_blocking(move || index.replace_primary_digests(primary))
            .await
            .expect("replacing bindings does not panic")?;
        if changed {
            tracing::info!(bindings = held, "took the primary's DO digest bindings");
        }
        Ok(held)
    }

    async fn pull_as(
        &self,
        catalog: &Arc<Catalog>,
        since: u64,
        members: Option<u64>,
    ) -> Result<(ImportReport, u64, u64), FollowError> {
        let mut url = self
            .primary
            .join("/api/v1/catalog")
            .expect("a fixed path joins");
        match members {
            Some(m) => url.set_query(Some(&format!("since={since}&members_since={m}"))),
            None => url.set_query(Some(&format!("since={since}"))),
        }
        let req = self.get(url.clone());
        let unreachable = |source| FollowError::Unreachable {
            url: url.to_string(),
            source,
        };
        let resp = req.send().await.map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(FollowError::Refused {
                url: url.to_string(),
                status: resp.status().as_u16(),
            });
        }
        let body = resp.bytes_stream().map_err(std::io::Error::other);
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(body));
        let catalog = catalog.clone();
        let imported = tokio::task::spawn_blocking(move || {
            let input = std::io::BufReader::with_capacity(1 << 18, reader);
            let mut sink = FromPrimary::default();
            let follow = members.map(|since| FollowMembers {
                since,
                sink: &mut sink,
            });
            let (report, seq) = catalog.import_from_primary(input, follow)?;
            Ok::<_, CatalogError>((report, seq, sink.computers))
        })
        .await
        .expect("an import does not panic")?;
        Ok(imported)
    }
}

/// The body of `resp`, refused beyond `limit` bytes, announced or read.
async fn body_within(
    mut resp: reqwest::Response,
    limit: usize,
    url: &reqwest::Url,
) -> Result<Vec<u8>, FollowError> {
    let too_large = || FollowError::TooLarge {
        url: url.to_string(),
        limit,
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|source| FollowError::Unreachable {
            url: url.to_string(),
            source,
        })?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
