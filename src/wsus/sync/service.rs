//! The server's sync service: one sync at a time, started by the admin
//! API, the CLI or the schedule; its progress while it runs, the last
//! report after, the next scheduled run; and the category selection.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::{Progress, Schedule, Selection, SyncError, SyncJob, SyncReport, SyncSettings, Tuning};
use crate::catalog::Catalog;
use crate::metadata::{MetaError, MetaStore};

pub struct SyncService {
    store: Arc<MetaStore>,
    catalog: Arc<Catalog>,
    settings: SyncSettings,
    schedule: Schedule,
    tuning: Tuning,
    running: Mutex<Option<Running>>,
}

struct Running {
    upstream: String,
    started: i64,
    progress: Arc<Mutex<Progress>>,
}

/// `POST /api/v1/server-sync` body (optional).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Another upstream for this run only (`upcache sync --server URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

/// `GET /api/v1/server-sync`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncStatus {
    /// `idle` or `running`.
    pub state: String,
    /// The upstream a sync without `--server` uses.
    pub upstream_server: String,
    pub schedule: String,
    /// The running sync's upstream, start and progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<RunningStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<SyncReport>,
    /// Unix seconds of the next scheduled sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningStatus {
    pub upstream: String,
    pub started: i64,
    pub progress: Progress,
}

/// One category as `GET /api/v1/categories` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CategoryChoice {
    pub id: String,
    pub title: String,
    pub selected: bool,
}

/// `GET /api/v1/categories`: products and classifications, the selected marked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Categories {
    pub products: Vec<CategoryChoice>,
    pub classifications: Vec<CategoryChoice>,
}

impl SyncService {
    pub fn new(
        store: Arc<MetaStore>,
        catalog: Arc<Catalog>,
        settings: SyncSettings,
        tuning: Tuning,
    ) -> Result<SyncService, SyncError> {
        let schedule = Schedule::parse(&settings.sync_schedule).map_err(SyncError::Selection)?;
        Ok(SyncService {
            store,
            catalog,
            settings,
            schedule,
            tuning,
            running: Mutex::new(None),
        })
    }

    fn running(&self) -> MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn store(&self) -> &Arc<MetaStore> {
        &self.store
    }

    /// The upstream whose approvals this server takes, in replica mode
    /// (`sync_replica`).
    pub fn replica_of(&self) -> Option<&str> {
        self.settings
            .sync_replica
            .then_some(self.settings.upstream_server.as_str())
    }

    /// The languages documents keep (`sync_languages`).
    pub fn languages(&self) -> &[String] {
        &self.settings.sync_languages
    }

    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// Starts a sync in the background (`Err(Running)` while one runs);
    /// `done` runs after it with its report (the server replans downloads
    /// there). `upstream` overrides the setting for this run.
    pub fn start(
        self: &Arc<Self>,
        upstream: Option<String>,
        done: impl FnOnce(&SyncReport) + Send + 'static,
    ) -> Result<RunningStatus, SyncError> {
        let mut settings = self.settings.clone();
        if let Some(u) = upstream.filter(|u| !u.trim().is_empty()) {
            settings.upstream_server = u.trim().to_owned();
        }
        let progress = Arc::new(Mutex::new(Progress {
            phase: "starting".into(),
            ..Progress::default()
        }));
        let status = {
            let mut slot = self.running();
            if slot.is_some() {
                return Err(SyncError::Running);
            }
            let r = Running {
                upstream: settings.upstream_server.clone(),
                started: now(),
                progress: progress.clone(),
            };
            let status = r.status();
            *slot = Some(r);
            status
        };
        let job = SyncJob {
            settings,
            store: self.store.clone(),
            catalog: Some(self.catalog.clone()),
            progress,
            tuning: self.tuning.clone(),
        };
        let me = self.clone();
        tokio::spawn(async move {
            let report = super::run(job).await;
            *me.running() = None;
            done(&report);
        });
        Ok(status)
    }

    pub fn status(&self) -> Result<SyncStatus, MetaError> {
        let running = self.running().as_ref().map(Running::status);
        let last = super::last_report(&self.store)?;
        let next_run = self.schedule.next(now(), last.as_ref().map(|l| l.started));
        Ok(SyncStatus {
            state: if running.is_some() { "running" } else { "idle" }.into(),
            upstream_server: self.settings.upstream_server.clone(),
            schedule: self.settings.sync_schedule.clone(),
            running,
            last,
            next_run,
        })
    }

    pub fn categories(&self) -> Result<Categories, MetaError> {
        let chosen = super::selection(&self.store, &self.settings)?;
        let all = self.store.categories()?;
        let list = |t: &str, names: &[String]| -> Vec<CategoryChoice> {
            all.iter()
                .filter(|c| c.category_type == t)
                .map(|c| CategoryChoice {
                    id: c.id.clone(),
                    title: c.title.clone(),
                    selected: names.iter().any(|n| {
                        n.trim().eq_ignore_ascii_case(&c.id)
                            || n.trim().eq_ignore_ascii_case(&c.title)
                    }),
                })
                .collect()
        };
        Ok(Categories {
            products: list("Product", &chosen.products),
            classifications: list("UpdateClassification", &chosen.classifications),
        })
    }

    pub fn select(&self, wanted: &Selection) -> Result<Categories, SyncError> {
        super::set_selection(&self.store, wanted)?;
        Ok(self.categories()?)
    }

    /// Runs the schedule until the server stops: each due time starts a
    /// sync (one already running is left alone).
    pub async fn run_schedule(
        self: Arc<Self>,
        done: impl Fn(&SyncReport) + Send + Sync + Clone + 'static,
    ) {
        loop {
            let last = super::last_report(&self.store).ok().flatten();
            let Some(next) = self.schedule.next(now(), last.map(|l| l.started)) else {
                return;
            };
            let wait = (next - now()).max(1) as u64;
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            let hook = done.clone();
            match self.start(None, move |r| hook(r)) {
                Ok(_) => tracing::info!("scheduled server sync started"),
                Err(e) => tracing::info!("scheduled server sync skipped: {e}"),
            }
            // Let this run's start be recorded before the next is computed.
            while self.running().is_some() {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        }
    }
}

impl Running {
    fn status(&self) -> RunningStatus {
        RunningStatus {
            upstream: self.upstream.clone(),
            started: self.started,
            progress: self
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
