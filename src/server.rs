//! Wiring: opens the store and catalog, starts the fetcher and both
//! listeners, and shuts them down together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogError};
use crate::config::Config;
use crate::fetch::{FetchError, Fetcher};
use crate::http::content::ContentService;
use crate::net::tls::Terminator;
use crate::net::Gate;
pub use crate::node::App;
use crate::store::{DataLock, DiskStore, Storage, StoreError};
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::metrics::Metrics;
use crate::upkeep::quota::Quota;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Setting(#[from] crate::settings::Invalid),
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
    AdminTls(#[source] crate::net::tls::TlsError),
    #[error("content TLS: {0}")]
    ContentTls(#[source] crate::net::tls::TlsError),
    #[error("follow_ca: {0}")]
    FollowCa(String),
    #[error("update server: {0}")]
    UpdateServer(String),
    #[error("Delivery Optimization: {0}")]
    Delivery(String),
    #[error("server sync: {0}")]
    ServerSync(Box<crate::wsus::sync::SyncError>),
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

/// Opens everything under `config.store.data_dir` and starts both listeners.
pub async fn start(mut config: Config) -> Result<Running, StartError> {
    config.validate()?;
    config.net.max_connections = connections_allowed(config.net.max_connections, raise_fd_limit());
    let data = Data::open(&config).await?;
    let metrics = Arc::new(Metrics::default());
    let quota = Quota::new(
        config.store.max_store_bytes,
        data.catalog.clone(),
        data.store.clone(),
        metrics.clone(),
    );
    // A lowered max_store_bytes applies at once.
    quota.enforce();
    let fetcher = start_fetcher(&config, &data, &quota, &metrics)?;
    let access_log = start_access_log(&config, &metrics)?;
    let listeners = Listeners::bind(&config).await?;
    let follower = follower_of(&config)?;
    let delivery = crate::delivery::Delivery::new(
        &config.delivery,
        &config.fetch,
        &config.store.data_dir,
        data.store.clone(),
        fetcher.clone(),
        metrics.clone(),
    )
    .map_err(|e| StartError::Delivery(format!("{e:#}")))?;
    // DO objects share max_store_bytes with catalog files.
    quota.admit(delivery.clone());
    quota.enforce();
    let meta = open_metadata(&config)?;
    let server_sync = server_sync_of(&config, &meta, &data.catalog)?;
    let fleet = Arc::new(
        crate::fleet::Fleet::open(&config.store.data_dir, config.fleet.clone())
            .map_err(|e| StartError::UpdateServer(e.to_string()))?,
    );
    let update_server = Arc::new(
        crate::wsus::client::ClientServices::open(
            &config.store.data_dir,
            meta.clone(),
            data.catalog.clone(),
            fleet.clone(),
            config.update_server.clone(),
        )
        .map_err(StartError::UpdateServer)?,
    );
    let sync_upstream = Arc::new(
        crate::wsus::upstream::UpstreamService::open(
            &config.store.data_dir,
            meta,
            data.catalog.clone(),
        )
        .map_err(StartError::UpdateServer)?,
    );
    // Before the listeners open: no report is taken without being kept.
    let forwarder = follower.as_ref().map(|f| {
        Arc::new(crate::node::forward::Forwarder::new(
            f.clone(),
            update_server.outbox.clone(),
        ))
    });
    let app = Arc::new(App {
        config,
        store: data.disk,
        catalog: data.catalog.clone(),
        fetcher: fetcher.clone(),
        metrics: metrics.clone(),
        quota,
        started: Instant::now(),
        follower,
        forwarder,
        admin_tls: listeners.admin_tls.clone(),
        content_tls: listeners.content_tls.as_ref().map(|(_, tls)| tls.clone()),
        cleaning: tokio::sync::Mutex::new(()),
        scrubber: Arc::default(),
        delivery: delivery.clone(),
        server_sync,
        update_server,
        fleet,
        sync_upstream,
    });
    let content = Arc::new(ContentService {
        store: data.store,
        catalog: data.catalog,
        fetcher,
        metrics,
        access_log: access_log.clone(),
        validators: crate::http::content::ValidatorCache::new(app.config.store.open_file_cache),
        delivery: Some(delivery),
    });
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let addrs = listeners.spawn(&app, content, &mut tasks, &shutdown);
    let certificates: Vec<_> = [&app.admin_tls, &app.content_tls]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    reload_on_hangup(certificates, shutdown.clone());
    if let Some(follower) = app.follower.clone() {
        tracing::info!(
            primary = follower.primary(),
            "following the primary's catalog"
        );
        let app_ = app.clone();
        let changed = move || app_.catalog_changed();
        tasks.spawn(follower.run(
            app.catalog.clone(),
            app.fleet.clone(),
            app.delivery.index().clone(),
            changed,
            shutdown.clone(),
        ));
    }
    if let Some(forwarder) = app.forwarder.clone() {
        tasks.spawn(forwarder.run(shutdown.clone()));
    }
    tasks.spawn(crate::fleet::retention::run(
        app.fleet.clone(),
        shutdown.clone(),
    ));
    if app.follower.is_none() {
        let app_ = app.clone();
        let changed = move |_: &crate::wsus::sync::SyncReport| app_.catalog_changed();
        let schedule = app.server_sync.clone().run_schedule(changed);
        let stop = shutdown.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = schedule => {}
                () = stop.cancelled() => {}
            }
        });
    }
    app.sync_downloads();
    tracing::info!(content_addr = %addrs.content, admin_url = %addrs.admin_url, data_dir = %app.config.store.data_dir.display(), "upcache serving");
    Ok(Running {
        content_addr: addrs.content,
        content_tls_addr: addrs.content_tls,
        admin_addr: addrs.admin,
        admin_url: addrs.admin_url,
        app,
        shutdown,
        tasks,
        access_log,
        _lock: data.lock,
    })
}

/// The metadata store (the catalog file's metadata tables), shared by the
/// sync and the update server.
fn open_metadata(config: &Config) -> Result<Arc<crate::metadata::MetaStore>, StartError> {
    let store = crate::metadata::MetaStore::open(&config.store.data_dir)
        .map_err(|e| StartError::ServerSync(Box::new(crate::wsus::sync::SyncError::Meta(e))))?;
    Ok(Arc::new(store))
}

/// The sync service over the catalog's metadata tables.
fn server_sync_of(
    config: &Config,
    store: &Arc<crate::metadata::MetaStore>,
    catalog: &Arc<crate::catalog::Catalog>,
) -> Result<Arc<crate::wsus::sync::service::SyncService>, StartError> {
    use crate::wsus::sync::{service::SyncService, SyncError, Tuning};
    let failed = |e: SyncError| StartError::ServerSync(Box::new(e));
    let service = SyncService::new(
        store.clone(),
        catalog.clone(),
        config.server_sync.clone(),
        Tuning {
            ca_file: config.fetch.upstream_ca_file.clone(),
            ..Tuning::default()
        },
    )
    .map_err(failed)?;
    Ok(Arc::new(service))
}

/// The data directory, opened: its lock, the store and the catalog.
struct Data {
    /// Held until the server is dropped.
    lock: DataLock,
    disk: Arc<DiskStore>,
    store: Arc<dyn Storage>,
    catalog: Arc<Catalog>,
}

impl Data {
    async fn open(config: &Config) -> Result<Data, StartError> {
        std::fs::create_dir_all(&config.store.data_dir).map_err(|source| StoreError::Io {
            path: config.store.data_dir.clone(),
            source,
        })?;
        // Before anything touches tmp/: another server's downloads live there.
        let lock = DataLock::acquire(&config.store.data_dir)?;
        let disk = DiskStore::open(&config.store.data_dir, config.store.open_file_cache)?;
        disk.limit_quarantine(config.store.quarantine_max_bytes);
        let store: Arc<dyn Storage> = disk.clone();
        let catalog = {
            let (dir, store) = (config.store.data_dir.clone(), store.clone());
            tokio::task::spawn_blocking(move || Catalog::open(&dir, store))
                .await
                .expect("catalog open does not panic")?
        };
        Ok(Data {
            lock,
            disk,
            store,
            catalog,
        })
    }
}

/// The fetcher, with the shared tier in front of the origin if configured.
fn start_fetcher(
    config: &Config,
    data: &Data,
    quota: &Arc<Quota>,
    metrics: &Arc<Metrics>,
) -> Result<Arc<Fetcher>, StartError> {
    let shared = match config.shared.tier()? {
        Some(settings) => {
            let tier = crate::store::s3::S3Tier::new(&settings)?;
            tracing::info!(bucket = tier.bucket(), endpoint = ?settings.endpoint, "shared tier (S3) in front of the origin");
            Some(Arc::new(tier))
        }
        None => None,
    };
    Ok(Fetcher::new(
        data.store.clone(),
        data.catalog.clone(),
        quota.clone(),
        config.fetch.clone(),
        metrics.clone(),
        shared,
    )?)
}

fn start_access_log(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Option<AccessLog>, StartError> {
    let Some(destination) = config.access_log.destination()? else {
        return Ok(None);
    };
    AccessLog::start(
        destination,
        config.access_log.access_log_format,
        metrics.clone(),
    )
    .map(Some)
    .map_err(StartError::AccessLog)
}

/// A follower's link to its primary, when `follow` is set.
fn follower_of(config: &Config) -> Result<Option<Arc<crate::node::follow::Follower>>, StartError> {
    let Some(primary) = config.follow.follow.clone() else {
        return Ok(None);
    };
    let follower = crate::node::follow::Follower::new(
        primary,
        config.follow.follow_token.clone(),
        config.follow.follow_ca.as_deref(),
        config.follow.follow_interval,
    )
    .map_err(StartError::FollowCa)?;
    Ok(Some(Arc::new(follower)))
}

/// The bound sockets, with their TLS: bound before anything is served, so
/// that a port in use stops the start.
struct Listeners {
    content: TcpListener,
    content_tls: Option<(TcpListener, Arc<Terminator>)>,
    admin: TcpListener,
    admin_tls: Option<Arc<Terminator>>,
}

/// Where a started server listens.
struct Addrs {
    content: SocketAddr,
    content_tls: Option<SocketAddr>,
    admin: SocketAddr,
    /// `https://` when the admin API speaks TLS.
    admin_url: String,
}

impl Listeners {
    async fn bind(config: &Config) -> Result<Listeners, StartError> {
        let admin_tls = load_admin_tls(config)?;
        let content_tls = match config.content.https()? {
            Some((addr, files)) => {
                let tls = Terminator::load(files).map_err(StartError::ContentTls)?;
                Some((bind(addr).await?, Arc::new(tls)))
            }
            None => None,
        };
        Ok(Listeners {
            content: bind(config.content.listen).await?,
            content_tls,
            admin: bind(config.admin.admin_listen).await?,
            admin_tls,
        })
    }

    /// Serves content (plain, and HTTPS when configured) and the admin API
    /// until `shutdown`.
    fn spawn(
        self,
        app: &Arc<App>,
        content: Arc<ContentService>,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> Addrs {
        let admin = self.admin.local_addr().expect("bound");
        let scheme = if self.admin_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let addrs = Addrs {
            content: self.content.local_addr().expect("bound"),
            content_tls: (self.content_tls.as_ref()).map(|(l, _)| l.local_addr().expect("bound")),
            admin,
            admin_url: format!("{scheme}://{admin}"),
        };
        let front = match app.config.content.fast_path {
            true => crate::net::Front::Fast(content.clone()),
            false => crate::net::Front::Plain,
        };
        let access_log = content.access_log.clone();
        let handler = |tls: bool| {
            let (content, updates) = (content.clone(), app.update_server.clone());
            let sync_upstream = app.sync_upstream.clone();
            hyper::service::service_fn(move |req| {
                let (content, updates) = (content.clone(), updates.clone());
                let sync_upstream = sync_upstream.clone();
                async move {
                    use crate::wsus::client::Service;
                    let path = req.uri().path();
                    let response = if let Some(service) = crate::wsus::client::service_of(path) {
                        match service {
                            Service::SelfUpdate => self_update(updates, req).await,
                            service => update_server(&updates, service, req, tls).await,
                        }
                    } else if let Some(service) = crate::wsus::upstream::service_of(path) {
                        server_sync_upstream(&sync_upstream, service, req, tls).await
                    } else {
                        content.handle(req).await
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            })
        };
        let gate = Arc::new(Gate {
            proxies: app.config.net.proxy_protocol_from.clone(),
            allow: app.config.net.allow_clients.clone(),
            metrics: Some(app.metrics.clone()),
            access_log,
        });
        let limits = app.config.net.content_limits();
        if let Some((listener, tls)) = self.content_tls {
            // Hyper answers (no sendfile under TLS).
            let front = crate::net::Front::Tls(tls);
            let serving = crate::net::serve(
                listener,
                handler(true),
                limits,
                front,
                gate.clone(),
                shutdown.clone(),
            );
            tasks.spawn(serving);
        }
        tasks.spawn(crate::net::serve(
            self.content,
            handler(false),
            limits,
            front,
            gate,
            shutdown.clone(),
        ));
        tasks.spawn(crate::admin::serve(
            self.admin,
            app.clone(),
            self.admin_tls,
            shutdown.clone(),
        ));
        addrs
    }
}

/// The admin listener's TLS, if configured. Exposed without it, the bearer
/// token crosses the network in clear: allowed (behind a TLS proxy or an
/// SSH tunnel it does not), but said.
fn load_admin_tls(config: &Config) -> Result<Option<Arc<Terminator>>, StartError> {
    let Some(files) = config.admin.tls()? else {
        if !config.admin.admin_listen.ip().is_loopback() {
            tracing::warn!(
                admin_listen = %config.admin.admin_listen,
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

/// A GET of the self-update directory ([MS-WUSP] 3.1.5.1): the file read
/// off the async threads, whole (they are small), no ranges.
async fn self_update<B>(
    updates: Arc<crate::wsus::client::ClientServices>,
    req: hyper::Request<B>,
) -> hyper::Response<crate::http::body::ResponseBody> {
    use crate::http::error::HttpStatus as _;
    use http_body_util::BodyExt as _;
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let found = tokio::task::spawn_blocking(move || updates.self_update_file(&method, &path))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()).into()));
    let mut response = hyper::Response::builder();
    let body = match found {
        Ok(file) => {
            response = response
                .header(hyper::header::CONTENT_TYPE, file.content_type)
                .header(hyper::header::CACHE_CONTROL, "no-cache");
            if let Some(at) = file.modified {
                response =
                    response.header(hyper::header::LAST_MODIFIED, httpdate::fmt_http_date(at));
            }
            file.bytes
        }
        Err(e) => {
            response = response
                .status(e.status())
                .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8");
            if e.status() == hyper::StatusCode::METHOD_NOT_ALLOWED {
                response = response.header(hyper::header::ALLOW, "GET, HEAD");
            }
            bytes::Bytes::from(format!("{e}\n"))
        }
    };
    response
        .body(
            http_body_util::Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("static headers")
}

/// A request to the update server ([MS-WUSP]): its body read within the
/// bound (413 over it), answered, counted as a refusal-free SOAP call.
async fn update_server<B>(
    updates: &crate::wsus::client::ClientServices,
    service: crate::wsus::client::Service,
    req: hyper::Request<B>,
    tls: bool,
) -> hyper::Response<crate::http::body::ResponseBody>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt as _;
    let (parts, body) = read_soap_body(req, updates.max_body()).await;
    let host = host_of(&parts);
    let call = crate::wsus::client::Call {
        host: &host,
        tls,
        peer: parts.extensions.get::<crate::net::Peer>().map(|p| p.0),
        xpress: crate::wsus::client::xpress::accepted(&parts.headers),
    };
    let response = match body {
        Some(body) => {
            updates
                .answer(service, &parts.method, parts.uri.query(), &body, &call)
                .await
        }
        // Over the bound, or the body broke off.
        None => updates.too_large(),
    };
    response.map(|b| {
        http_body_util::Full::new(b)
            .map_err(|never| match never {})
            .boxed_unsync()
    })
}

/// A SOAP request's head and its body read within `limit` (`None` over it,
/// or when the body broke off).
async fn read_soap_body<B>(
    req: hyper::Request<B>,
    limit: usize,
) -> (http::request::Parts, Option<bytes::Bytes>)
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt as _;
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match declared {
        Some(len) if len > limit as u64 => None,
        _ => http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .ok()
            .map(|b| b.to_bytes()),
    };
    (parts, body)
}

/// The `Host` the caller named this listener by.
fn host_of(parts: &http::request::Parts) -> String {
    parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost")
        .to_owned()
}

/// A downstream server's [MS-WSUSSS] call: its body read within the
/// bound, answered whole or, for `GetUpdateData`, document by document.
async fn server_sync_upstream<B>(
    upstream: &Arc<crate::wsus::upstream::UpstreamService>,
    service: crate::wsus::upstream::Service,
    req: hyper::Request<B>,
    tls: bool,
) -> hyper::Response<crate::http::body::ResponseBody>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use crate::wsus::upstream::{Answer, UpstreamService, MAX_REQUEST};
    use http_body_util::BodyExt as _;
    let (parts, body) = read_soap_body(req, MAX_REQUEST).await;
    let scheme = if tls { "https" } else { "http" };
    let base = format!("{scheme}://{}", host_of(&parts));
    let response = match body {
        Some(body) => upstream.answer(service, &parts.method, body, base).await,
        None => UpstreamService::too_large(),
    };
    response.map(|answer| match answer {
        Answer::Whole(b) => http_body_util::Full::new(b)
            .map_err(|never| match never {})
            .boxed_unsync(),
        Answer::Streamed(rx) => {
            let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                let piece = rx.recv().await?;
                Some((piece.map(hyper::body::Frame::data), rx))
            });
            http_body_util::StreamBody::new(frames).boxed_unsync()
        }
    })
}
