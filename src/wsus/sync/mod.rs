//! Server-to-server sync ([MS-WSUSSS]) from an upstream: Microsoft Update,
//! a WSUS, or another upcache.
//!
//! One sync: the handshake (`GetAuthConfig`, DSS `GetAuthorizationCookie`,
//! `GetCookie`, `GetConfigData`), then the categories (`GetRevisionIdList`
//! with `GetConfig` true: products, classifications, detectoids), then the
//! updates of the selected products and classifications; each list's
//! revisions not stored yet are fetched with `GetUpdateData` in batches,
//! each batch one transaction. The anchors are saved only once everything
//! listed is stored, so an interrupted or partly failed sync asks again
//! next time and skips what it already has; an unchanged upstream then
//! lists nothing and no document is fetched. New updates finally reach the
//! catalog (`metadata::project`).

pub mod blob;
pub mod client;
pub mod messages;
pub mod replica;
mod schedule;
pub mod service;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

pub use schedule::Schedule;

use self::client::Session;
use self::messages::{Filter, IdAndDelta, RawFileUrl, RawUpdate, RevisionKey};
use crate::catalog::{Catalog, ImportReport};
use crate::digest::Sha1Digest;
use crate::metadata::project::{self, ProjectError};
use crate::metadata::store::{FileUrl, Packed};
use crate::metadata::update_xml::{self, Kind, UpdateInfo};
use crate::metadata::{Category, MetaError, MetaStore};
use crate::wsus::soap::{ErrorCode, Fault, SoapError};

/// Microsoft Update's server-sync service.
pub const MICROSOFT_UPDATE: &str = "https://sws.update.microsoft.com";

/// Server sync: update metadata from an upstream server over [MS-WSUSSS].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct SyncSettings {
    /// The upstream that `upcache sync --server`, the admin API and the
    /// schedule sync update metadata from: Microsoft Update's server-sync
    /// service, a WSUS (`http://wsus:8530`) or another upcache's content
    /// listener.
    pub upstream_server: String,
    /// Products to sync, by title or GUID. Empty: only categories are
    /// synced, until `upcache categories --select` (or this) names some.
    #[schemars(example = &["Microsoft Defender Antivirus"])]
    pub sync_products: Vec<String>,
    /// Classifications to sync, by title or GUID. Empty: only categories.
    #[schemars(example = &["Security Updates", "Definition Updates"])]
    pub sync_classifications: Vec<String>,
    /// Languages of the updates' metadata (`ShortLanguage`: en, de, fr ...),
    /// synced or imported from wsusscn2.cab.
    pub sync_languages: Vec<String>,
    /// When to sync by itself: `off`, every day at `HH:MM` (UTC), or every
    /// interval (`30m`, `6h`, `1d`).
    pub sync_schedule: String,
    /// Replica mode, as a WSUS replica server: after each sync, the
    /// upstream's approvals (`GetDeployments`) replace this server's for
    /// the synced updates, and changing theirs here is refused. Off:
    /// approvals stay this server's own.
    pub sync_replica: bool,
}

impl SyncSettings {
    /// What the types cannot check.
    pub fn validate(&self) -> Result<(), crate::settings::Invalid> {
        let invalid =
            |setting: &'static str, message: String| crate::settings::Invalid { setting, message };
        let u = &self.upstream_server;
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(invalid(
                "upstream_server",
                format!("{u:?} is not an http(s) URL"),
            ));
        }
        Schedule::parse(&self.sync_schedule).map_err(|m| invalid("sync_schedule", m))?;
        Ok(())
    }
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            upstream_server: MICROSOFT_UPDATE.into(),
            sync_products: Vec::new(),
            sync_classifications: Vec::new(),
            sync_languages: vec!["en".into()],
            sync_schedule: "off".into(),
            sync_replica: false,
        }
    }
}

/// Why a sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("setting up the HTTP client: {0}")]
    Setup(String),
    #[error("upstream unreachable or failing: {0}")]
    Transport(String),
    #[error("upstream answered with {0}")]
    Fault(Fault),
    #[error("upstream answer not understood: {0}")]
    Soap(#[from] SoapError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error("{0}")]
    Selection(String),
    #[error("a server sync is running already")]
    Running,
}

impl SyncError {
    /// Worth another attempt after a pause.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Transport(_) => true,
            SyncError::Fault(f) => f.error_code == Some(ErrorCode::ServerBusy),
            _ => false,
        }
    }

    /// No batch retry can cure it: the sync stops.
    fn is_fatal(&self) -> bool {
        match self {
            SyncError::Fault(f) => matches!(
                f.error_code,
                Some(
                    ErrorCode::IncompatibleProtocolVersion
                        | ErrorCode::ServerChanged
                        | ErrorCode::InvalidCookie
                        | ErrorCode::CookieExpired
                        | ErrorCode::InvalidAuthorizationCookie
                )
            ),
            SyncError::Meta(_) | SyncError::Project(_) | SyncError::Setup(_) => true,
            _ => false,
        }
    }
}

/// Where a running sync is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// `connecting`, `categories`, `updates`, `catalog`.
    pub phase: String,
    pub documents_done: u64,
    pub documents_total: u64,
    pub bytes: u64,
}

/// What a sync did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncReport {
    pub upstream: String,
    /// Unix seconds.
    pub started: i64,
    pub seconds: f64,
    /// Category, classification, product and detectoid documents fetched.
    pub categories: u64,
    /// Revisions the upstream listed (both lists).
    pub revisions_listed: u64,
    /// Revisions of updates not known before.
    pub revisions_new: u64,
    /// New revisions of known updates.
    pub revisions_changed: u64,
    /// Revisions whose document says the update expired.
    pub revisions_removed: u64,
    /// Listed revisions already stored (a resumed sync skips them).
    pub already_stored: u64,
    /// Documents fetched and stored.
    pub documents: u64,
    /// Their uncompressed size.
    pub bytes: u64,
    /// Every fault and transport error met (some were recovered from).
    pub faults: Vec<String>,
    /// Revisions that could not be fetched or read, each with why.
    pub failed: Vec<String>,
    /// What reached the catalog.
    pub catalog: Option<ImportReport>,
    /// Replica mode: updates whose approval changed to the upstream's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals_changed: Option<u64>,
    /// Whether every listed revision is stored and the anchors moved on.
    pub complete: bool,
    /// No product or classification selected: only categories synced.
    pub categories_only: bool,
    /// The error that stopped the sync, if one did.
    pub error: Option<String>,
}

impl std::fmt::Display for SyncReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} categories; revisions {} new, {} changed, {} removed ({} listed, {} already stored); \
             {} documents, {} bytes; {:.1} s",
            self.categories,
            self.revisions_new,
            self.revisions_changed,
            self.revisions_removed,
            self.revisions_listed,
            self.already_stored,
            self.documents,
            self.bytes,
            self.seconds
        )?;
        if self.categories_only {
            write!(f, "; categories only (select products and classifications)")?;
        }
        if !self.failed.is_empty() {
            write!(f, "; {} failed", self.failed.len())?;
        }
        if !self.faults.is_empty() {
            write!(f, "; {} faults", self.faults.len())?;
        }
        Ok(())
    }
}

/// Tuning that is not a setting of its own (tests shorten the pauses).
#[derive(Debug, Clone)]
pub struct Tuning {
    /// The most revisions asked per `GetUpdateData` (the upstream's own
    /// `MaxNumberOfUpdatesPerRequest` caps it further).
    pub max_batch: usize,
    pub retry_delay: Duration,
    /// Extra trust roots (PEM) for an HTTPS upstream with a private CA: the
    /// content upstream's `upstream_ca`, which every client of the
    /// corporate CA shares.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            max_batch: 100,
            retry_delay: Duration::from_secs(2),
            ca_file: None,
        }
    }
}

/// Attempts of one batch before it is split, and of one revision before
/// it is given up for this sync.
const BATCH_ATTEMPTS: u32 = 3;
/// Times one revision is asked for without coming back before it is given up.
const MAX_ASKS: u32 = 4;

/// State keys in `meta_state`.
mod key {
    pub const UPSTREAM: &str = "sync.upstream";
    pub const CONFIG_ANCHOR: &str = "sync.anchor.config";
    pub const CATEGORIES_ANCHOR: &str = "sync.anchor.categories";
    pub const UPDATES_ANCHOR: &str = "sync.anchor.updates";
    /// The filter (JSON) the updates anchor was taken with.
    pub const UPDATES_FILTER: &str = "sync.anchor.filter";
    pub const DEPLOYMENTS_ANCHOR: &str = "sync.anchor.deployments";
    pub const ACCOUNT_GUID: &str = "sync.account_guid";
    pub const PRODUCTS: &str = "selection.products";
    pub const CLASSIFICATIONS: &str = "selection.classifications";
    pub const LAST_REPORT: &str = "sync.last_report";
}

/// The products and classifications chosen: the stored selection
/// (`upcache categories --select`, `PUT /api/v1/categories`) if one was
/// made, else the settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Selection {
    pub products: Vec<String>,
    pub classifications: Vec<String>,
}

pub fn selection(store: &MetaStore, settings: &SyncSettings) -> Result<Selection, MetaError> {
    let read = |k: &str| -> Result<Option<Vec<String>>, MetaError> {
        Ok(store.state(k)?.and_then(|v| serde_json::from_str(&v).ok()))
    };
    Ok(Selection {
        products: read(key::PRODUCTS)?.unwrap_or_else(|| settings.sync_products.clone()),
        classifications: read(key::CLASSIFICATIONS)?
            .unwrap_or_else(|| settings.sync_classifications.clone()),
    })
}

/// Stores a new selection (titles or GUIDs, checked against the categories).
pub fn set_selection(store: &MetaStore, wanted: &Selection) -> Result<Selection, SyncError> {
    let categories = store.categories()?;
    resolve(&categories, &wanted.products, "Product")?;
    resolve(&categories, &wanted.classifications, "UpdateClassification")?;
    let json = |v: &Vec<String>| serde_json::to_string(v).expect("strings serialise");
    store.set_states(&[
        (key::PRODUCTS, &json(&wanted.products)),
        (key::CLASSIFICATIONS, &json(&wanted.classifications)),
    ])?;
    Ok(wanted.clone())
}

/// The last finished sync's report.
pub fn last_report(store: &MetaStore) -> Result<Option<SyncReport>, MetaError> {
    Ok(store
        .state(key::LAST_REPORT)?
        .and_then(|v| serde_json::from_str(&v).ok()))
}

/// Names (titles, case-insensitive, or GUIDs) to category ids of one type.
fn resolve(
    categories: &[Category],
    names: &[String],
    category_type: &str,
) -> Result<Vec<String>, SyncError> {
    names
        .iter()
        .map(|n| {
            let n = n.trim();
            categories
                .iter()
                .filter(|c| c.category_type == category_type)
                .find(|c| c.id.eq_ignore_ascii_case(n) || c.title.eq_ignore_ascii_case(n))
                .map(|c| c.id.clone())
                .ok_or_else(|| {
                    let what = if category_type == "Product" {
                        "product"
                    } else {
                        "classification"
                    };
                    SyncError::Selection(format!(
                        "no {what} named {n:?} among the synced categories (`upcache categories` lists them)"
                    ))
                })
        })
        .collect()
}

/// A sync to run: what it needs.
pub struct SyncJob {
    pub settings: SyncSettings,
    pub store: Arc<MetaStore>,
    /// Where new updates go (none: metadata only, as in unit tests).
    pub catalog: Option<Arc<Catalog>>,
    pub progress: Arc<Mutex<Progress>>,
    pub tuning: Tuning,
}

/// Runs one sync to its end. The report is also returned (and stored as
/// the last one) when the sync stopped on an error: it then names it.
pub async fn run(job: SyncJob) -> SyncReport {
    let started = Instant::now();
    let mut run = Run::new(&job);
    let result = run.all(&job).await;
    let mut report = run.report;
    report.seconds = started.elapsed().as_secs_f64();
    report.faults = run.session.map(|s| s.faults).unwrap_or_default();
    if let Err(e) = result {
        tracing::error!(upstream = %report.upstream, "server sync stopped: {e}");
        report.error = Some(e.to_string());
        report.complete = false;
    } else {
        tracing::info!(upstream = %report.upstream, %report, "server sync done");
    }
    let json = serde_json::to_string(&report).expect("reports serialise");
    if let Err(e) = job.store.set_state(key::LAST_REPORT, &json) {
        tracing::warn!("recording the sync's report: {e}");
    }
    report
}

struct Run {
    report: SyncReport,
    session: Option<Session>,
    progress: Arc<Mutex<Progress>>,
    store: Arc<MetaStore>,
    language: String,
    batch: usize,
}

impl Run {
    fn new(job: &SyncJob) -> Run {
        Run {
            report: SyncReport {
                upstream: job.settings.upstream_server.clone(),
                started: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
                ..SyncReport::default()
            },
            session: None,
            progress: job.progress.clone(),
            store: job.store.clone(),
            language: job
                .settings
                .sync_languages
                .first()
                .cloned()
                .unwrap_or_else(|| "en".into()),
            batch: job.tuning.max_batch.max(1),
        }
    }

    fn session(&mut self) -> &mut Session {
        self.session.as_mut().expect("connected first")
    }

    fn phase(&self, phase: &str) {
        let mut p = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        phase.clone_into(&mut p.phase);
    }

    async fn all(&mut self, job: &SyncJob) -> Result<(), SyncError> {
        let upstream = job
            .settings
            .upstream_server
            .trim_end_matches('/')
            .to_owned();
        self.forget_anchors_of_another_upstream(&upstream)?;
        self.phase("connecting");
        self.session = Some(Session::new(
            &upstream,
            &account_name(),
            &self.account_guid()?,
            job.tuning.retry_delay,
            job.tuning.ca_file.as_deref(),
        )?);
        let config_anchor = self.store.state(key::CONFIG_ANCHOR)?;
        let op = self
            .session()
            .call("GetConfigData", |c| {
                messages::get_config_data(c, config_anchor.as_deref())
            })
            .await?;
        let config = messages::decode_config_data(&op)?;
        if config.max_updates_per_request > 0 {
            self.batch = self.batch.min(config.max_updates_per_request);
        }

        self.phase("categories");
        let categories_anchor = self.store.state(key::CATEGORIES_ANCHOR)?;
        let filter = Filter {
            anchor: categories_anchor,
            get_config: true,
            ..Filter::default()
        };
        let (anchor, ids) = self.revision_ids(&filter).await?;
        self.fetch(ids).await?;
        let categories_done = self.report.failed.is_empty();
        if categories_done {
            // The categories are all stored: later failures of updates do
            // not make the next sync list every category again.
            self.save_anchor(key::CATEGORIES_ANCHOR, anchor.as_deref())?;
        }

        let chosen = selection(&self.store, &job.settings)?;
        let updates_anchor = if chosen.products.is_empty() || chosen.classifications.is_empty() {
            self.report.categories_only = true;
            None
        } else {
            self.phase("updates");
            let filter = self.update_filter(&chosen, &config.languages, &job.settings)?;
            let (anchor, ids) = self.revision_ids(&filter).await?;
            self.fetch(ids).await?;
            Some((anchor, filter))
        };

        if let Some(catalog) = &job.catalog {
            self.phase("catalog");
            let (store, into) = (self.store.clone(), catalog.clone());
            let up = upstream.clone();
            let r = tokio::task::spawn_blocking(move || project::project(&store, &into, &up))
                .await
                .map_err(|e| SyncError::Setup(format!("catalog task: {e}")))??;
            self.report.catalog = Some(r);
            if job.settings.sync_replica {
                self.phase("approvals");
                self.replicate(catalog, &updates_anchor).await?;
            }
        }

        if self.report.failed.is_empty() {
            self.save_anchor(key::CONFIG_ANCHOR, config.new_config_anchor.as_deref())?;
            if let Some((anchor, filter)) = updates_anchor {
                let used = serde_json::to_string(&filter_ids(&filter)).expect("serialises");
                self.save_anchor(key::UPDATES_ANCHOR, anchor.as_deref())?;
                self.store.set_state(key::UPDATES_FILTER, &used)?;
            }
            self.report.complete = true;
        }
        Ok(())
    }

    /// Replica mode: the upstream's approvals (`GetDeployments`) applied.
    async fn replicate(
        &mut self,
        catalog: &Arc<Catalog>,
        updates: &Option<(Option<String>, Filter)>,
    ) -> Result<(), SyncError> {
        let sync_anchor = updates
            .as_ref()
            .and_then(|(a, _)| a.clone())
            .unwrap_or_default();
        let anchor = self.store.state(key::DEPLOYMENTS_ANCHOR)?;
        let op = self
            .session()
            .call("GetDeployments", |c| {
                messages::get_deployments(c, anchor.as_deref(), &sync_anchor)
            })
            .await?;
        let d = messages::decode_deployments(&op)?;
        let (store, catalog) = (self.store.clone(), catalog.clone());
        let answer = d.clone();
        let changed =
            tokio::task::spawn_blocking(move || replica::apply(&answer, &store, &catalog))
                .await
                .map_err(|e| SyncError::Setup(format!("catalog task: {e}")))??;
        self.report.approvals_changed = Some(changed);
        if let Some(a) = &d.anchor {
            self.store.set_state(key::DEPLOYMENTS_ANCHOR, a)?;
        }
        Ok(())
    }

    fn forget_anchors_of_another_upstream(&self, upstream: &str) -> Result<(), SyncError> {
        if self.store.state(key::UPSTREAM)?.as_deref() != Some(upstream) {
            self.store.remove_states(&[
                key::CONFIG_ANCHOR,
                key::CATEGORIES_ANCHOR,
                key::UPDATES_ANCHOR,
                key::UPDATES_FILTER,
                key::DEPLOYMENTS_ANCHOR,
            ])?;
            self.store.set_state(key::UPSTREAM, upstream)?;
        }
        Ok(())
    }

    fn save_anchor(&self, k: &str, anchor: Option<&str>) -> Result<(), SyncError> {
        match anchor {
            Some(a) => self.store.set_state(k, a)?,
            None => self.store.remove_states(&[k])?,
        }
        Ok(())
    }

    /// This server's identity towards the upstream (kept, so the upstream
    /// sees one downstream server across syncs).
    fn account_guid(&self) -> Result<String, SyncError> {
        if let Some(g) = self.store.state(key::ACCOUNT_GUID)? {
            return Ok(g);
        }
        let g = new_guid();
        self.store.set_state(key::ACCOUNT_GUID, &g)?;
        Ok(g)
    }

    /// The filter for updates: the selection, each with `Delta` when the
    /// last anchor was taken with it (a newly chosen one is asked whole).
    fn update_filter(
        &self,
        chosen: &Selection,
        languages: &[(u32, String)],
        settings: &SyncSettings,
    ) -> Result<Filter, SyncError> {
        let categories = self.store.categories()?;
        let products = resolve(&categories, &chosen.products, "Product")?;
        let classifications =
            resolve(&categories, &chosen.classifications, "UpdateClassification")?;
        let anchor = self.store.state(key::UPDATES_ANCHOR)?;
        let before: FilterIds = self
            .store
            .state(key::UPDATES_FILTER)?
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default();
        let has_anchor = anchor.is_some();
        let with_delta = |ids: Vec<String>, old: &[String]| -> Vec<IdAndDelta> {
            ids.into_iter()
                .map(|id| IdAndDelta {
                    delta: has_anchor && old.contains(&id),
                    id,
                })
                .collect()
        };
        let language_ids: Vec<u32> = settings
            .sync_languages
            .iter()
            .filter_map(|l| {
                languages
                    .iter()
                    .find(|(_, short)| short.eq_ignore_ascii_case(l))
                    .map(|(id, _)| *id)
            })
            .collect();
        Ok(Filter {
            anchor,
            get_config: false,
            categories: with_delta(products, &before.categories),
            classifications: with_delta(classifications, &before.classifications),
            languages: language_ids
                .into_iter()
                .map(|id| (id, has_anchor && before.languages.contains(&id)))
                .collect(),
        })
    }

    async fn revision_ids(
        &mut self,
        filter: &Filter,
    ) -> Result<(Option<String>, Vec<RevisionKey>), SyncError> {
        let op = self
            .session()
            .call("GetRevisionIdList", |c| {
                messages::get_revision_id_list(c, filter)
            })
            .await?;
        let (anchor, ids) = messages::decode_revision_id_list(&op)?;
        self.report.revisions_listed += ids.len() as u64;
        Ok((anchor, ids))
    }

    /// Fetches and stores every listed revision not stored yet.
    async fn fetch(&mut self, ids: Vec<RevisionKey>) -> Result<(), SyncError> {
        let stored = self.store.stored(&ids)?;
        self.report.already_stored += stored.len() as u64;
        let mut seen = HashSet::new();
        let mut pending: VecDeque<RevisionKey> = ids
            .into_iter()
            .filter(|k| !stored.contains(k) && seen.insert(k.clone()))
            .collect();
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .documents_total += pending.len() as u64;
        let mut asks: HashMap<RevisionKey, u32> = HashMap::new();
        let mut attempts = 0;
        // > 0: asking one revision at a time, to find the one that fails.
        let mut singles = 0usize;
        while !pending.is_empty() {
            let size = if singles > 0 { 1 } else { self.batch };
            let batch: Vec<RevisionKey> = pending.iter().take(size).cloned().collect();
            for k in &batch {
                *asks.entry(k.clone()).or_default() += 1;
            }
            match self.batch_once(&batch).await {
                Ok(got) => {
                    attempts = 0;
                    singles = singles.saturating_sub(1);
                    pending.retain(|k| !got.contains(k));
                    // Asked again and again, never answered: given up.
                    let stuck: Vec<_> = pending
                        .iter()
                        .filter(|k| asks.get(*k).copied().unwrap_or(0) >= MAX_ASKS)
                        .cloned()
                        .collect();
                    for k in stuck {
                        self.fail(&k, "the upstream never returned it");
                        pending.retain(|p| *p != k);
                    }
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    self.session().note(&e);
                    attempts += 1;
                    if attempts < BATCH_ATTEMPTS {
                        let pause = self.session().retry_delay * attempts;
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    attempts = 0;
                    if batch.len() > 1 {
                        singles = batch.len();
                        continue;
                    }
                    self.fail(&batch[0], &e.to_string());
                    pending.retain(|p| *p != batch[0]);
                    singles = singles.saturating_sub(1);
                }
            }
        }
        Ok(())
    }

    fn fail(&mut self, k: &RevisionKey, why: &str) {
        let line = format!("{} revision {}: {why}", k.0, k.1);
        tracing::warn!("server sync: {line}");
        self.report.failed.push(line);
    }

    /// One `GetUpdateData`: stores what came back (one transaction) and
    /// returns the revisions it answered for. Answering none is an error.
    ///
    /// The answer is spooled to a temporary file and read one document at
    /// a time: each is decoded, parsed, compressed and dropped before the
    /// next is read, so memory holds one document uncompressed and the
    /// batch compressed, never the answer.
    async fn batch_once(
        &mut self,
        batch: &[RevisionKey],
    ) -> Result<HashSet<RevisionKey>, SyncError> {
        let answer = self
            .session()
            .call_spooled("GetUpdateData", |c| messages::get_update_data(c, batch))
            .await?;
        let asked: HashSet<&RevisionKey> = batch.iter().collect();
        let mut got = HashSet::new();
        let mut packed = Vec::new();
        let mut urls = Vec::new();
        let mut unreadable = Vec::new();
        let language = self.language.clone();
        let op = crate::wsus::soap::stream_items(
            answer,
            &[messages::UPDATE_ITEM, messages::URL_ITEM],
            |item| -> Result<(), SyncError> {
                if item.name == messages::URL_ITEM {
                    urls.extend(file_url(&messages::decode_url_item(&item)));
                    return Ok(());
                }
                let raw = messages::decode_update_item(&item)?;
                drop(item);
                if asked.contains(&raw.key) {
                    got.insert(raw.key.clone());
                    match read_document(&raw, &language) {
                        Ok((info, doc)) => packed.push(Packed::new(info, &doc)),
                        Err(why) => unreadable.push((raw.key, why)),
                    }
                }
                Ok(())
            },
        )?;
        if op != "GetUpdateDataResponse" {
            return Err(SyncError::Soap(crate::wsus::soap::SoapError::Unexpected {
                expected: "<GetUpdateDataResponse>".into(),
                got: format!("<{op}>"),
            }));
        }
        for (key, why) in unreadable {
            self.fail(&key, &why);
        }
        if got.is_empty() {
            return Err(SyncError::Transport(format!(
                "GetUpdateData returned none of the {} revisions asked",
                batch.len()
            )));
        }
        let incoming = packed;
        let counts = self.store.write_packed(&incoming, &urls)?;
        let r = &mut self.report;
        r.revisions_new += counts.new;
        r.revisions_changed += counts.changed;
        r.revisions_removed += counts.expired;
        r.already_stored += counts.present;
        r.documents += counts.new + counts.changed;
        r.bytes += counts.bytes;
        r.categories += incoming
            .iter()
            .filter(|d| matches!(d.info.kind, Kind::Category | Kind::Detectoid))
            .count() as u64;
        let mut p = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        p.documents_done += got.len() as u64;
        p.bytes += counts.bytes;
        Ok(got)
    }
}

/// A document out of its blob, parsed and checked against its identity.
fn read_document(r: &RawUpdate, language: &str) -> Result<(UpdateInfo, Vec<u8>), String> {
    let doc = blob::decode(&r.blob).map_err(|e| e.to_string())?;
    let info = update_xml::parse(&doc, language).map_err(|e| e.to_string())?;
    if (info.id.as_str(), info.revision) != (r.key.0.as_str(), r.key.1) {
        return Err(format!(
            "the document is {} revision {}, not what was asked",
            info.id, info.revision
        ));
    }
    Ok((info, doc))
}

/// The ids a filter was taken with (to set `Delta` next time).
#[derive(Debug, Default, Serialize, Deserialize)]
struct FilterIds {
    categories: Vec<String>,
    classifications: Vec<String>,
    languages: Vec<u32>,
}

fn filter_ids(f: &Filter) -> FilterIds {
    FilterIds {
        categories: f.categories.iter().map(|c| c.id.clone()).collect(),
        classifications: f.classifications.iter().map(|c| c.id.clone()).collect(),
        languages: f.languages.iter().map(|(id, _)| *id).collect(),
    }
}

fn file_url(u: &RawFileUrl) -> Option<FileUrl> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&u.digest)
        .ok()?;
    Some(FileUrl {
        sha1: Sha1Digest::from_slice(&bytes)?,
        mu_url: u.mu_url.clone(),
        uss_url: u.uss_url.clone(),
    })
}

/// The name this server gives itself upstream (an FQDN is expected).
fn account_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    if host.is_empty() {
        "upcache.local".into()
    } else {
        host
    }
}

/// A random GUID (from the clock, the process and a hash: no RNG crate).
pub(crate) fn new_guid() -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(format!("{:?}", std::time::SystemTime::now()));
    h.update(std::process::id().to_le_bytes());
    h.update(format!("{:?}", std::thread::current().id()));
    let b = h.finalize();
    let hex = hex::encode(&b[..16]);
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat(id: &str, title: &str, t: &str) -> Category {
        Category {
            id: id.into(),
            title: title.into(),
            category_type: t.into(),
        }
    }

    #[test]
    fn selections_resolve_by_title_or_guid_within_their_type() {
        let cats = [
            cat("p1", "Windows 11", "Product"),
            cat("c1", "Security Updates", "UpdateClassification"),
        ];
        let ids = resolve(&cats, &["windows 11".into(), "P1".into()], "Product").unwrap();
        assert_eq!(ids, ["p1", "p1"]);
        let err = resolve(&cats, &["Security Updates".into()], "Product").unwrap_err();
        assert!(err.to_string().contains("no product named"));
    }

    #[test]
    fn guids_look_like_guids_and_differ() {
        let a = new_guid();
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        std::thread::sleep(Duration::from_millis(1));
        assert_ne!(a, new_guid());
    }
}
