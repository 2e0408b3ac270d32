//! The running server's shared state, and the follow-up work every admin
//! write triggers (the background download plan).

use std::sync::Arc;
use std::time::Instant;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::fetch::Fetcher;
use crate::store::DiskStore;
use crate::telemetry::metrics::Metrics;
use crate::upkeep::cleanup::{CleanupError, CleanupReport};
use crate::upkeep::quota::Quota;
use crate::upkeep::scrub::{ScrubRequest, ScrubStatus};

/// The shared state of a running server.
pub struct App {
    pub config: Config,
    /// The local disk store (the only tier today): maintenance, status.
    pub store: Arc<DiskStore>,
    pub catalog: Arc<Catalog>,
    pub fetcher: Arc<Fetcher>,
    pub metrics: Arc<Metrics>,
    pub quota: Arc<Quota>,
    pub started: Instant,
    /// Set on a follower: pulls the primary's catalog; admin writes are refused.
    pub follower: Option<Arc<super::follow::Follower>>,
    /// Set on a follower: sends its clients' reports to the primary.
    pub forwarder: Option<Arc<super::forward::Forwarder>>,
    /// The admin listener's TLS, when it has a certificate.
    pub admin_tls: Option<Arc<crate::net::tls::Terminator>>,
    /// The HTTPS content listener's TLS, when there is one.
    pub content_tls: Option<Arc<crate::net::tls::Terminator>>,
    /// Held by the cleanup running now: one at a time.
    pub cleaning: tokio::sync::Mutex<()>,
    pub scrubber: Arc<crate::upkeep::scrub::Scrubber>,
    /// Delivery Optimization's objects (their index, status).
    pub delivery: Arc<crate::delivery::Delivery>,
    /// Server-to-server sync from an upstream ([MS-WSUSSS]) and the
    /// synced metadata.
    pub server_sync: Arc<crate::wsus::sync::service::SyncService>,
    /// The update server Windows clients scan against ([MS-WUSP]).
    pub update_server: Arc<crate::wsus::client::ClientServices>,
    /// Computers, their groups and the state of updates on each.
    pub fleet: Arc<crate::fleet::Fleet>,
    /// The server side of [MS-WSUSSS], for downstream servers.
    pub sync_upstream: Arc<crate::wsus::upstream::UpstreamService>,
}

impl App {
    /// Starts background downloads the policy asks for (at-sync), e.g. after
    /// an import, a policy change or a restart.
    ///
    /// The queue is derived from what the database already holds (policy,
    /// approvals, what is stored), so it survives a restart with no queue
    /// of its own: at start this picks up where the last run stopped.
    pub fn sync_downloads(&self) {
        let policy = self.catalog.policy();
        let files = self
            .catalog
            .missing_where(|a| policy.fetches_in_background(a));
        if !files.is_empty() {
            tracing::info!(
                files = files.len(),
                ?policy,
                "downloading missing files in the background"
            );
        }
        // Always: a new plan replaces the running one (an empty plan stops it).
        self.fetcher.prefetch(files);
    }

    /// After an import, a server sync or a follower's pull: the DO objects
    /// the catalog's files and the synced file locations now name are
    /// learned (their downloads are verified against those digests), and
    /// the background downloads are replanned.
    pub fn catalog_changed(self: &Arc<Self>) {
        let index = self.delivery.index().clone();
        tokio::task::spawn_blocking(move || match index.learn() {
            Ok(n) => tracing::debug!(objects = n, "DO digests learned from the catalog"),
            Err(e) => tracing::warn!(error = %e, "learning DO digests from the catalog"),
        });
        self.sync_downloads();
    }

    /// Starts a server sync in the background; when it ends, new updates
    /// are in the catalog and the download plan is recomputed (at-sync
    /// downloads their files), as after an import.
    pub fn start_server_sync(
        self: &Arc<Self>,
        upstream: Option<String>,
    ) -> Result<crate::wsus::sync::service::RunningStatus, crate::wsus::sync::SyncError> {
        let app = self.clone();
        self.server_sync
            .start(upstream, move |_| app.catalog_changed())
    }

    /// Starts re-hashing the store while serving, unless one is running.
    pub fn start_scrub(
        &self,
        asked: ScrubRequest,
    ) -> Result<ScrubStatus, crate::upkeep::scrub::ScrubError> {
        let parts = crate::upkeep::scrub::Parts {
            store: self.store.clone(),
            catalog: self.catalog.clone(),
            metrics: self.metrics.clone(),
        };
        self.scrubber.start(parts, asked)
    }

    /// Finds (and with `remove`, removes) the stored files the policy no
    /// longer needs, while serving. Blocking: a walk of the store.
    pub fn cleanup(&self, remove: bool) -> Result<CleanupReport, CleanupError> {
        let _running = self
            .cleaning
            .try_lock()
            .map_err(|_| CleanupError::Running)?;
        let r = crate::upkeep::cleanup::run(
            &self.store,
            &self.catalog,
            &self.delivery.index().sha256s(),
            remove,
            self.config.upkeep.cleanup_settle,
        );
        log_cleanup(&r, "local disk");
        Ok(r)
    }

    /// The same over the shared tier's bucket, which this node's catalog
    /// decides for every node: refused on a follower.
    pub async fn cleanup_shared(&self, remove: bool) -> Result<CleanupReport, CleanupError> {
        let tier = self.fetcher.shared().ok_or(CleanupError::NoSharedTier)?;
        if self.follower.is_some() {
            return Err(CleanupError::Follower);
        }
        let _running = self
            .cleaning
            .try_lock()
            .map_err(|_| CleanupError::Running)?;
        let settle = self.config.upkeep.cleanup_settle;
        let r = crate::upkeep::cleanup::run_shared(tier, &self.catalog, remove, settle).await?;
        log_cleanup(&r, "shared tier");
        Ok(r)
    }
}

fn log_cleanup(r: &CleanupReport, tier: &'static str) {
    if r.removed && r.files > 0 {
        tracing::info!(
            tier,
            files = r.files,
            bytes = r.bytes,
            failed = r.failed,
            "cleanup removed unneeded files"
        );
    }
}
