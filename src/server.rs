//! Wiring: opens the store and catalog, starts the fetcher and both
//! listeners, and shuts them down together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
pub use crate::app::App;
use crate::catalog::{Catalog, CatalogError};
use crate::config::Config;
use crate::fetch::{FetchError, Fetcher};
use crate::http::content::ContentService;
use crate::http::tls::Terminator;
use crate::http::Gate;
use crate::metrics::Metrics;
use crate::quota::Quota;
use crate::store::{DataLock, DiskStore, Storage, StoreError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lock(#[from] crate::store::LockError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    SharedTier(#[from] crate::store::s3::S3Error),
    #[error("admin TLS: {0}")]
    AdminTls(#[source] crate::http::tls::TlsError),
    #[error("content TLS: {0}")]
    ContentTls(#[source] crate::http::tls::TlsError),
    #[error("follow_ca: {0}")]
    FollowCa(String),
    #[error("access log: {0}")]
    AccessLog(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How long shutdown waits for running downloads.
const DOWNLOAD_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A running server: its bound addresses and the means to stop it.
pub struct Running {
    pub content_addr: SocketAddr,
    /// The HTTPS content listener's address, when there is one.
    pub content_tls_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    /// The admin API's base URL (`https://` when it speaks TLS).
    pub admin_url: String,
    pub app: Arc<App>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    access_log: Option<AccessLog>,
    /// Held until the server is dropped.
    _lock: DataLock,
}

impl Running {
    /// Stops accepting, lets open requests drain, gives running downloads a
    /// bounded time to finish (so their bytes are not thrown away), and
    /// returns when both listeners are down. Whatever is cut is consistent
    /// anyway: temp files are deleted at the next start.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        self.app.scrubber.stop();
        while self.tasks.join_next().await.is_some() {}
        let deadline = Instant::now() + DOWNLOAD_GRACE;
        while !self.app.fetcher.status().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let catalog = self.app.catalog.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || catalog.flush_pending()).await {
            tracing::warn!(error = %e, "recording stored files at shutdown");
        }
        if let Some(log) = &self.access_log {
            log.flush().await;
        }
    }

    /// Waits until every access log line so far is written (tests, shutdown).
    pub async fn flush_access_log(&self) {
        if let Some(log) = &self.access_log {
            log.flush().await;
        }
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until the token is cancelled, then drains.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.shutdown().await;
    }
}

/// File descriptors kept for what is not a client connection: temp files,
/// mapped store files, upstream sockets, the catalog, logs.
const RESERVED_FDS: u64 = 1024;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (a shell or service
/// manager often hands over 1024), logs both, and returns the soft limit
/// now in force.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, properly sized struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return u64::MAX;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            ..limit
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    tracing::info!(
        soft_before = before,
        soft = limit.rlim_cur,
        hard = limit.rlim_max,
        "open file limit"
    );
    limit.rlim_cur
}

/// `max_connections` as far as the open file limit allows.
fn connections_allowed(configured: usize, fd_limit: u64) -> usize {
    let room = fd_limit.saturating_sub(RESERVED_FDS).max(64);
    if configured as u64 > room {
        tracing::warn!(
            max_connections = configured,
            fd_limit,
            allowed = room,
            "the open file limit is too low for max_connections; holding fewer (raise LimitNOFILE / ulimit -Hn)"
        );
        return room as usize;
    }
    configured
}

/// Opens everything under `config.data_dir` and starts both listeners.
pub async fn start(mut config: Config) -> Result<Running, StartError> {
    config.validate()?;
    config.max_connections = connections_allowed(config.max_connections, raise_fd_limit());
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StoreError::Io {
        path: config.data_dir.clone(),
        source,
    })?;
    // Before anything touches tmp/: another server's downloads live there.
    let lock = DataLock::acquire(&config.data_dir)?;
    let disk = DiskStore::open(&config.data_dir, config.open_file_cache)?;
    disk.limit_quarantine(config.quarantine_max_bytes);
    let store: Arc<dyn Storage> = disk.clone();
    let catalog = {
        let (dir, store) = (config.data_dir.clone(), store.clone());
        tokio::task::spawn_blocking(move || Catalog::open(&dir, store))
            .await
            .expect("catalog open does not panic")?
    };
    let metrics = Arc::new(Metrics::default());
    let quota = Quota::new(
        config.max_store_bytes,
        catalog.clone(),
        store.clone(),
        metrics.clone(),
    );
    // A lowered max_store_bytes applies at once.
    quota.enforce();
    let shared = match &config.s3 {
        Some(settings) => {
            let tier = crate::store::s3::S3Tier::new(settings)?;
            tracing::info!(bucket = tier.bucket(), endpoint = ?settings.endpoint, "shared tier (S3) in front of the origin");
            Some(Arc::new(tier))
        }
        None => None,
    };
    let mut fetch = config.fetch.clone();
    let s3_endpoint = config.s3.as_ref().and_then(|s| s.endpoint.as_deref());
    if let (Some(proxy), Some(endpoint)) = (&mut fetch.proxy, s3_endpoint) {
        // Downloads from the shared tier go to its endpoint, not out.
        proxy.reach_directly(endpoint);
    }
    let fetcher = Fetcher::new(
        store.clone(),
        catalog.clone(),
        quota.clone(),
        fetch,
        metrics.clone(),
        shared,
    )?;
    let access_log = match &config.access_log {
        Some(destination) => Some(
            AccessLog::start(
                destination.clone(),
                config.access_log_format,
                metrics.clone(),
            )
            .map_err(StartError::AccessLog)?,
        ),
        None => None,
    };
    let admin_tls = load_admin_tls(&config)?;
    let content_tls = match &config.listen_tls {
        Some((addr, files)) => {
            let tls = Terminator::load(files.clone()).map_err(StartError::ContentTls)?;
            Some((bind(*addr).await?, Arc::new(tls)))
        }
        None => None,
    };
    let content_listener = bind(config.listen).await?;
    let admin_listener = bind(config.admin_listen).await?;
    let content_addr = content_listener.local_addr().expect("bound");
    let content_tls_addr = content_tls
        .as_ref()
        .map(|(listener, _)| listener.local_addr().expect("bound"));
    let admin_addr = admin_listener.local_addr().expect("bound");

    let follower = match config.follow.clone() {
        Some(primary) => Some(Arc::new(
            crate::follow::Follower::new(
                primary,
                config.follow_token.clone(),
                config.follow_ca.as_deref(),
                config.follow_interval,
            )
            .map_err(StartError::FollowCa)?,
        )),
        None => None,
    };
    let app = Arc::new(App {
        config,
        store: disk,
        catalog: catalog.clone(),
        fetcher: fetcher.clone(),
        metrics: metrics.clone(),
        quota,
        started: Instant::now(),
        follower,
        admin_tls: admin_tls.clone(),
        content_tls: content_tls.as_ref().map(|(_, tls)| tls.clone()),
        cleaning: std::sync::Mutex::new(()),
        scrubber: Arc::default(),
    });
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();

    let content = Arc::new(ContentService {
        store,
        catalog,
        fetcher,
        metrics,
        access_log: access_log.clone(),
        validators: crate::http::content::ValidatorCache::new(app.config.open_file_cache),
    });
    let front = match app.config.fast_path {
        true => crate::http::Front::Fast(content.clone()),
        false => crate::http::Front::Plain,
    };
    let handler = hyper::service::service_fn(move |req| {
        let content = content.clone();
        async move { Ok::<_, std::convert::Infallible>(content.handle(req).await) }
    });
    let gate = Gate {
        proxies: app.config.proxy_protocol_from.clone(),
        allow: app.config.allow_clients.clone(),
        metrics: Some(app.metrics.clone()),
    };
    if let Some((listener, tls)) = content_tls {
        // Hyper answers (no sendfile under TLS).
        tasks.spawn(crate::http::serve(
            listener,
            handler.clone(),
            app.config.content_limits(),
            crate::http::Front::Tls(tls),
            Arc::new(gate.clone()),
            shutdown.clone(),
        ));
    }
    tasks.spawn(crate::http::serve(
        content_listener,
        handler,
        app.config.content_limits(),
        front,
        Arc::new(gate),
        shutdown.clone(),
    ));
    let certificates: Vec<_> = [&admin_tls, &app.content_tls]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    reload_on_hangup(certificates, shutdown.clone());
    let admin_url = match &admin_tls {
        Some(_) => format!("https://{admin_addr}"),
        None => format!("http://{admin_addr}"),
    };
    tasks.spawn(crate::admin::serve(
        admin_listener,
        app.clone(),
        admin_tls,
        shutdown.clone(),
    ));
    if let Some(follower) = app.follower.clone() {
        tracing::info!(
            primary = follower.primary(),
            "following the primary's catalog"
        );
        tasks.spawn(follower.run(app.clone(), shutdown.clone()));
    }
    app.sync_downloads();
    tracing::info!(%content_addr, %admin_url, data_dir = %app.config.data_dir.display(), "upcache serving");
    Ok(Running {
        content_addr,
        content_tls_addr,
        admin_addr,
        admin_url,
        app,
        shutdown,
        tasks,
        access_log,
        _lock: lock,
    })
}

/// The admin listener's TLS, if configured. Exposed without it, the bearer
/// token crosses the network in clear: allowed (behind a TLS proxy or an
/// SSH tunnel it does not), but said.
fn load_admin_tls(config: &Config) -> Result<Option<Arc<Terminator>>, StartError> {
    let Some(files) = &config.admin_tls else {
        if !config.admin_listen.ip().is_loopback() {
            tracing::warn!(
                admin_listen = %config.admin_listen,
                "the admin API is exposed over plain HTTP: its token crosses the network in clear (set admin_tls_cert and admin_tls_key)"
            );
        }
        return Ok(None);
    };
    let tls = Terminator::load(files.clone()).map_err(StartError::AdminTls)?;
    tracing::info!(cert = %files.cert.display(), "the admin API speaks HTTPS");
    Ok(Some(Arc::new(tls)))
}

/// SIGHUP (`systemctl reload`) re-reads the certificates and keys: a
/// renewed certificate takes effect without a restart. A bad pair is
/// logged and the one in force stays.
fn reload_on_hangup(certificates: Vec<Arc<Terminator>>, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    if certificates.is_empty() {
        return;
    }
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler: certificates are read at start only");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            for tls in &certificates {
                let cert = tls.files().cert.display();
                match tls.reload() {
                    Ok(()) => tracing::info!(%cert, "SIGHUP: TLS certificate re-read"),
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: TLS certificate not re-read; the one in force stays")
                    }
                }
            }
        }
    });
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}
