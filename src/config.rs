//! Configuration: flags > `UPCACHE_*` environment > `upcache.toml` > defaults.
//!
//! Flags and environment come in through clap (`ServeArgs`); the file fills
//! whatever they leave unset. Every value is validated here, so a bad setting
//! stops the server at start with a message naming it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::fetch::{FetchSettings, UpstreamProxy, MIN_RATE};
pub use crate::net::tls::TlsFiles;
pub use crate::store::s3::{S3Credentials, S3Settings};
pub use crate::telemetry::access_log::{
    Destination as AccessLogDestination, Format as AccessLogFormat,
};

pub const DEFAULT_DATA_DIR: &str = "./upcache-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8530";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8531";
pub const DEFAULT_CONFIG_FILE: &str = "./upcache.toml";
pub const DEFAULT_FOLLOW_INTERVAL_SECS: u64 = 10;

/// Errors in the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

/// `upcache serve` flags (each also read from its `UPCACHE_*` variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Configuration file [default: ./upcache.toml if present]
    #[arg(long, env = "UPCACHE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (store, catalog) [default: ./upcache-data]
    #[arg(long, env = "UPCACHE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Content listener address [default: 127.0.0.1:8530]
    #[arg(long, env = "UPCACHE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// A second content listener, over HTTPS (with --tls-cert and --tls-key)
    #[arg(long, env = "UPCACHE_LISTEN_TLS")]
    pub listen_tls: Option<SocketAddr>,
    /// PEM certificate chain of the HTTPS content listener
    #[arg(long, env = "UPCACHE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (re-read with it on SIGHUP)
    #[arg(long, env = "UPCACHE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Admin API listener address [default: 127.0.0.1:8531]
    #[arg(long, env = "UPCACHE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token for the admin API (required off loopback)
    #[arg(long, env = "UPCACHE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// PEM certificate chain: the admin API speaks HTTPS (with --admin-tls-key)
    #[arg(long, env = "UPCACHE_ADMIN_TLS_CERT")]
    pub admin_tls_cert: Option<PathBuf>,
    /// PEM private key of --admin-tls-cert (re-read with it on SIGHUP)
    #[arg(long, env = "UPCACHE_ADMIN_TLS_KEY")]
    pub admin_tls_key: Option<PathBuf>,
    /// Replace scheme and host of catalog URLs with this (a mirror or an upstream upcache)
    #[arg(long, env = "UPCACHE_UPSTREAM")]
    pub upstream: Option<String>,
    /// PEM file of extra root certificates for an HTTPS upstream
    #[arg(long, env = "UPCACHE_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,
    /// HTTP proxy for upstream downloads, e.g. http://user:pass@proxy:3128
    #[arg(long, env = "UPCACHE_UPSTREAM_PROXY", hide_env_values = true)]
    pub upstream_proxy: Option<String>,
    /// Evict least-recently-served files beyond this store size (e.g. 500GiB)
    #[arg(long, env = "UPCACHE_MAX_STORE_BYTES", value_parser = parse_size)]
    pub max_store_bytes: Option<u64>,
    /// Access log: a file path, `-` for stdout, or `off` [default: off]
    #[arg(long, env = "UPCACHE_ACCESS_LOG")]
    pub access_log: Option<String>,
    /// Access log format [default: combined]
    #[arg(long, env = "UPCACHE_ACCESS_LOG_FORMAT", value_enum)]
    pub access_log_format: Option<AccessLogFormat>,
    /// Follow a primary upcache's catalog, approvals, rules and policy (its
    /// admin API, e.g. http://primary:8531); admin writes here then answer 409
    #[arg(long, env = "UPCACHE_FOLLOW")]
    pub follow: Option<String>,
    /// Bearer token for the primary's admin API
    #[arg(long, env = "UPCACHE_FOLLOW_TOKEN", hide_env_values = true)]
    pub follow_token: Option<String>,
    /// PEM file of extra root certificates for an HTTPS primary
    #[arg(long, env = "UPCACHE_FOLLOW_CA")]
    pub follow_ca: Option<PathBuf>,
    /// S3-compatible endpoint of the shared tier, e.g. http://seaweed:8333 (unset: AWS)
    #[arg(long, env = "UPCACHE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Bucket of the shared tier (set: every node serves any file from it)
    #[arg(long, env = "UPCACHE_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// Region of the bucket [default: us-east-1]
    #[arg(long, env = "UPCACHE_S3_REGION")]
    pub s3_region: Option<String>,
    /// Key prefix inside the bucket [default: none]
    #[arg(long, env = "UPCACHE_S3_PREFIX")]
    pub s3_prefix: Option<String>,
}

/// The keys of `upcache.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    listen_tls: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    admin_listen: Option<SocketAddr>,
    admin_token: Option<String>,
    admin_tls_cert: Option<PathBuf>,
    admin_tls_key: Option<PathBuf>,
    upstream: Option<String>,
    upstream_ca: Option<PathBuf>,
    upstream_proxy: Option<String>,
    upstream_no_proxy: Option<String>,
    upstream_rate_limit: Option<Size>,
    connect_timeout_secs: Option<u64>,
    read_timeout_secs: Option<u64>,
    background_downloads: Option<usize>,
    max_downloads: Option<usize>,
    max_resumes: Option<u32>,
    /// Replaced by `far_ahead_wait_ms`; named in the error if still set.
    far_ahead_bytes: Option<toml::Value>,
    far_ahead_wait_ms: Option<u64>,
    stall_secs: Option<u64>,
    queue_wait_secs: Option<u64>,
    max_queued_downloads: Option<usize>,
    max_file_bytes: Option<Size>,
    disk_reserve_bytes: Option<Size>,
    quarantine_max_bytes: Option<Size>,
    open_file_cache: Option<u64>,
    header_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    fast_path: Option<bool>,
    admin_hosts: Option<Vec<String>>,
    proxy_protocol_from: Option<Vec<String>>,
    allow_clients: Option<Vec<String>>,
    max_store_bytes: Option<Size>,
    access_log: Option<String>,
    access_log_format: Option<AccessLogFormat>,
    follow: Option<String>,
    follow_interval_secs: Option<u64>,
    follow_token: Option<String>,
    follow_ca: Option<PathBuf>,
    s3_endpoint: Option<String>,
    s3_bucket: Option<String>,
    s3_region: Option<String>,
    s3_prefix: Option<String>,
}

impl FileConfig {
    /// The keys this file leaves unset. Destructured without `..`: a new
    /// key does not compile until it is listed here, and the packaged
    /// `dist/upcache.toml` test then asks for it there too.
    #[cfg(test)]
    fn unset_keys(&self) -> Vec<&'static str> {
        let FileConfig {
            data_dir,
            listen,
            listen_tls,
            tls_cert,
            tls_key,
            admin_listen,
            admin_token,
            admin_tls_cert,
            admin_tls_key,
            upstream,
            upstream_ca,
            upstream_proxy,
            upstream_no_proxy,
            upstream_rate_limit,
            connect_timeout_secs,
            read_timeout_secs,
            background_downloads,
            max_downloads,
            max_resumes,
            far_ahead_bytes,
            far_ahead_wait_ms,
            stall_secs,
            queue_wait_secs,
            max_queued_downloads,
            max_file_bytes,
            disk_reserve_bytes,
            quarantine_max_bytes,
            open_file_cache,
            header_timeout_secs,
            idle_timeout_secs,
            max_connections,
            fast_path,
            admin_hosts,
            proxy_protocol_from,
            allow_clients,
            max_store_bytes,
            access_log,
            access_log_format,
            follow,
            follow_interval_secs,
            follow_token,
            follow_ca,
            s3_endpoint,
            s3_bucket,
            s3_region,
            s3_prefix,
        } = self;
        [
            ("data_dir", data_dir.is_none()),
            ("listen", listen.is_none()),
            ("listen_tls", listen_tls.is_none()),
            ("tls_cert", tls_cert.is_none()),
            ("tls_key", tls_key.is_none()),
            ("admin_listen", admin_listen.is_none()),
            ("admin_token", admin_token.is_none()),
            ("admin_tls_cert", admin_tls_cert.is_none()),
            ("admin_tls_key", admin_tls_key.is_none()),
            ("upstream", upstream.is_none()),
            ("upstream_ca", upstream_ca.is_none()),
            ("upstream_proxy", upstream_proxy.is_none()),
            ("upstream_no_proxy", upstream_no_proxy.is_none()),
            ("upstream_rate_limit", upstream_rate_limit.is_none()),
            ("connect_timeout_secs", connect_timeout_secs.is_none()),
            ("read_timeout_secs", read_timeout_secs.is_none()),
            ("background_downloads", background_downloads.is_none()),
            ("max_downloads", max_downloads.is_none()),
            ("max_resumes", max_resumes.is_none()),
            ("far_ahead_bytes", far_ahead_bytes.is_none()),
            ("far_ahead_wait_ms", far_ahead_wait_ms.is_none()),
            ("stall_secs", stall_secs.is_none()),
            ("queue_wait_secs", queue_wait_secs.is_none()),
            ("max_queued_downloads", max_queued_downloads.is_none()),
            ("max_file_bytes", max_file_bytes.is_none()),
            ("disk_reserve_bytes", disk_reserve_bytes.is_none()),
            ("quarantine_max_bytes", quarantine_max_bytes.is_none()),
            ("open_file_cache", open_file_cache.is_none()),
            ("header_timeout_secs", header_timeout_secs.is_none()),
            ("idle_timeout_secs", idle_timeout_secs.is_none()),
            ("max_connections", max_connections.is_none()),
            ("fast_path", fast_path.is_none()),
            ("admin_hosts", admin_hosts.is_none()),
            ("proxy_protocol_from", proxy_protocol_from.is_none()),
            ("allow_clients", allow_clients.is_none()),
            ("max_store_bytes", max_store_bytes.is_none()),
            ("access_log", access_log.is_none()),
            ("access_log_format", access_log_format.is_none()),
            ("follow", follow.is_none()),
            ("follow_interval_secs", follow_interval_secs.is_none()),
            ("follow_token", follow_token.is_none()),
            ("follow_ca", follow_ca.is_none()),
            ("s3_endpoint", s3_endpoint.is_none()),
            ("s3_bucket", s3_bucket.is_none()),
            ("s3_region", s3_region.is_none()),
            ("s3_prefix", s3_prefix.is_none()),
        ]
        .into_iter()
        .filter_map(|(key, unset)| unset.then_some(key))
        .collect()
    }
}

/// A size in `upcache.toml`: bytes, or a string with a unit ("500GiB").
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

/// The resolved configuration of a server.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// A second content listener over HTTPS, and its certificate.
    pub listen_tls: Option<(SocketAddr, TlsFiles)>,
    pub admin_listen: SocketAddr,
    pub admin_token: Option<String>,
    /// Set: the admin API speaks HTTPS with this certificate.
    pub admin_tls: Option<TlsFiles>,
    pub fetch: FetchSettings,
    /// Open file maps kept in memory.
    pub open_file_cache: u64,
    /// Longest wait for a request head (slow or idle clients are dropped).
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed (h2
    /// gets a GOAWAY); HTTP/1.1 is also bounded by `header_timeout`.
    pub idle_timeout: Duration,
    /// Connections held at once on the content listener; more wait in the
    /// kernel's accept queue until one closes.
    pub max_connections: usize,
    /// Warm hits and whole-file downloads on HTTP/1.1 are sent with
    /// `sendfile` by the fast path (`http::fast`); off, hyper answers everything.
    pub fast_path: bool,
    /// Host names (besides the listen address and loopback names) the admin
    /// API answers to: a DNS-rebinding page's host is none of them.
    pub admin_hosts: Vec<String>,
    /// Peers (load balancers) whose connections to the content listener may
    /// start with a PROXY protocol header naming the client.
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
    /// Clients the content listeners serve (empty: all); others get `403`.
    pub allow_clients: Vec<ipnet::IpNet>,
    /// Store size beyond which least-recently-served files are evicted.
    pub max_store_bytes: Option<u64>,
    /// Bytes of rejected downloads kept in `quarantine/` for inspection.
    pub quarantine_max_bytes: u64,
    /// Where the access log goes; `None` is off.
    pub access_log: Option<AccessLogDestination>,
    pub access_log_format: AccessLogFormat,
    /// The primary's admin API this node follows; `None`: a primary itself.
    pub follow: Option<reqwest::Url>,
    /// How often a follower pulls the primary's changes.
    pub follow_interval: Duration,
    pub follow_token: Option<String>,
    /// Extra root certificates for an HTTPS primary.
    pub follow_ca: Option<PathBuf>,
    /// The shared tier (S3); `None`: the local disk is the only store.
    pub s3: Option<S3Settings>,
}

impl Config {
    /// Resolves flags/env over the config file over the defaults, and validates.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                read_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => FileConfig::default(),
        };
        let defaults = FetchSettings::default();
        let upstream = args.upstream.clone().or(file.upstream);
        let config = Config {
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().unwrap()),
            listen_tls: content_tls(
                args.listen_tls.or(file.listen_tls),
                args.tls_cert.clone().or(file.tls_cert),
                args.tls_key.clone().or(file.tls_key),
            )?,
            admin_listen: args
                .admin_listen
                .or(file.admin_listen)
                .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.parse().unwrap()),
            admin_token: args
                .admin_token
                .clone()
                .or(file.admin_token)
                .filter(|t| !t.is_empty()),
            admin_tls: admin_tls(
                args.admin_tls_cert.clone().or(file.admin_tls_cert),
                args.admin_tls_key.clone().or(file.admin_tls_key),
            )?,
            fetch: FetchSettings {
                upstream: upstream.as_deref().map(parse_upstream).transpose()?,
                connect_timeout: file
                    .connect_timeout_secs
                    .map_or(defaults.connect_timeout, Duration::from_secs),
                read_timeout: file
                    .read_timeout_secs
                    .map_or(defaults.read_timeout, Duration::from_secs),
                background_concurrency: file
                    .background_downloads
                    .unwrap_or(defaults.background_concurrency),
                max_downloads: file.max_downloads.unwrap_or(defaults.max_downloads),
                max_resumes: file.max_resumes.unwrap_or(defaults.max_resumes),
                far_ahead_wait: file
                    .far_ahead_wait_ms
                    .map_or(defaults.far_ahead_wait, Duration::from_millis),
                stall: file.stall_secs.map_or(defaults.stall, Duration::from_secs),
                queue_wait: file
                    .queue_wait_secs
                    .map_or(defaults.queue_wait, Duration::from_secs),
                max_queued: file.max_queued_downloads.unwrap_or(defaults.max_queued),
                max_file_bytes: size_setting("max_file_bytes", file.max_file_bytes)?,
                disk_reserve: size_setting("disk_reserve_bytes", file.disk_reserve_bytes)?
                    .unwrap_or(defaults.disk_reserve),
                upstream_ca_file: args.upstream_ca.clone().or(file.upstream_ca),
                proxy: upstream_proxy(
                    args.upstream_proxy.clone().or(file.upstream_proxy),
                    file.upstream_no_proxy,
                )?,
                rate_limit: rate_limit(file.upstream_rate_limit)?,
            },
            open_file_cache: file.open_file_cache.unwrap_or(4096),
            header_timeout: file
                .header_timeout_secs
                .map_or(crate::net::DEFAULT_HEADER_TIMEOUT, Duration::from_secs),
            idle_timeout: file
                .idle_timeout_secs
                .map_or(crate::net::DEFAULT_IDLE_TIMEOUT, Duration::from_secs),
            max_connections: file
                .max_connections
                .unwrap_or(crate::net::DEFAULT_MAX_CONNECTIONS),
            fast_path: file.fast_path.unwrap_or(true),
            admin_hosts: file.admin_hosts.unwrap_or_default(),
            proxy_protocol_from: networks(
                "proxy_protocol_from",
                file.proxy_protocol_from.unwrap_or_default(),
            )?,
            allow_clients: networks("allow_clients", file.allow_clients.unwrap_or_default())?,
            max_store_bytes: match args.max_store_bytes {
                Some(flag) => Some(flag),
                None => size_setting("max_store_bytes", file.max_store_bytes)?,
            },
            quarantine_max_bytes: size_setting("quarantine_max_bytes", file.quarantine_max_bytes)?
                .unwrap_or(crate::store::DEFAULT_QUARANTINE_MAX_BYTES),
            access_log: access_log_setting(args.access_log.clone().or(file.access_log))?,
            access_log_format: args
                .access_log_format
                .or(file.access_log_format)
                .unwrap_or_default(),
            follow: args
                .follow
                .clone()
                .or(file.follow)
                .filter(|f| !f.is_empty())
                .map(|f| parse_http_url("follow", &f))
                .transpose()?,
            follow_interval: Duration::from_secs(
                file.follow_interval_secs
                    .unwrap_or(DEFAULT_FOLLOW_INTERVAL_SECS),
            ),
            follow_token: args
                .follow_token
                .clone()
                .or(file.follow_token)
                .filter(|t| !t.is_empty()),
            follow_ca: args.follow_ca.clone().or(file.follow_ca),
            s3: s3_settings(
                args.s3_endpoint.clone().or(file.s3_endpoint),
                args.s3_bucket.clone().or(file.s3_bucket),
                args.s3_region.clone().or(file.s3_region),
                args.s3_prefix.clone().or(file.s3_prefix),
            )?,
        };
        if file.far_ahead_bytes.is_some() {
            return Err(ConfigError::Invalid {
                setting: "far_ahead_bytes",
                message: "replaced by far_ahead_wait_ms: a range is fetched on its own when the running download would take longer than that to reach it".into(),
            });
        }
        config.validate()?;
        Ok(config)
    }

    /// A configuration on ephemeral loopback ports (tests, demo).
    pub fn ephemeral(data_dir: &Path) -> Config {
        Config {
            data_dir: data_dir.to_owned(),
            listen: "127.0.0.1:0".parse().unwrap(),
            listen_tls: None,
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            admin_token: None,
            admin_tls: None,
            // Tests and the demo run wherever there is a little room.
            fetch: FetchSettings {
                disk_reserve: 8 << 20,
                ..FetchSettings::default()
            },
            open_file_cache: 1024,
            header_timeout: crate::net::DEFAULT_HEADER_TIMEOUT,
            idle_timeout: crate::net::DEFAULT_IDLE_TIMEOUT,
            max_connections: crate::net::DEFAULT_MAX_CONNECTIONS,
            fast_path: true,
            admin_hosts: Vec::new(),
            proxy_protocol_from: Vec::new(),
            allow_clients: Vec::new(),
            max_store_bytes: None,
            quarantine_max_bytes: crate::store::DEFAULT_QUARANTINE_MAX_BYTES,
            access_log: None,
            access_log_format: AccessLogFormat::default(),
            follow: None,
            follow_interval: Duration::from_secs(DEFAULT_FOLLOW_INTERVAL_SECS),
            follow_token: None,
            follow_ca: None,
            s3: None,
        }
    }

    /// The content listener's connection bounds.
    pub fn content_limits(&self) -> crate::net::Limits {
        crate::net::Limits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
        }
    }

    /// The admin listener's: few clients, and never one that holds a slot
    /// by trickling its head.
    pub fn admin_limits(&self) -> crate::net::Limits {
        crate::net::Limits {
            max_connections: 256,
            ..self.content_limits()
        }
    }

    /// Checks what the types cannot: the admin API is never exposed without a token.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.admin_listen.ip().is_loopback() && self.admin_token.is_none() {
            return Err(ConfigError::Invalid {
                setting: "admin_listen",
                message: format!(
                    "{} is not a loopback address; set an admin token (--admin-token or UPCACHE_ADMIN_TOKEN) to expose the admin API",
                    self.admin_listen
                ),
            });
        }
        if let Some(t) = &self.admin_token {
            if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::Invalid {
                    setting: "admin_token",
                    message: "must be at least 16 printable ASCII characters".into(),
                });
            }
        }
        if self.fetch.max_downloads == 0 || self.fetch.background_concurrency == 0 {
            return Err(ConfigError::Invalid {
                setting: "max_downloads",
                message: "download limits must be at least 1".into(),
            });
        }
        if self.fetch.read_timeout.is_zero()
            || self.fetch.connect_timeout.is_zero()
            || self.fetch.stall.is_zero()
            || self.fetch.queue_wait.is_zero()
            || self.header_timeout.is_zero()
            || self.idle_timeout.is_zero()
            || self.follow_interval.is_zero()
        {
            return Err(ConfigError::Invalid {
                setting: "timeouts",
                message: "must be at least one second".into(),
            });
        }
        if self.max_connections == 0 || self.fetch.max_queued == 0 {
            return Err(ConfigError::Invalid {
                setting: "max_connections",
                message: "connection and queue limits must be at least 1".into(),
            });
        }
        if let Some(host) = self
            .admin_hosts
            .iter()
            .find(|h| h.is_empty() || h.contains(['/', ' ', '@']))
        {
            return Err(ConfigError::Invalid {
                setting: "admin_hosts",
                message: format!("{host:?} is not a host name (give names like \"upcache.corp.example\", no scheme or path)"),
            });
        }
        if self.max_store_bytes == Some(0) {
            return Err(ConfigError::Invalid {
                setting: "max_store_bytes",
                message: "must be more than 0 (leave it unset for no limit)".into(),
            });
        }
        Ok(())
    }
}

/// Addresses (`10.0.0.5`) and networks (`10.0.0.0/24`, `fd00::/8`).
fn networks(setting: &'static str, given: Vec<String>) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    given
        .iter()
        .map(|n| {
            let n = n.trim();
            n.parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| ConfigError::Invalid {
                    setting,
                    message: format!(
                        "{n:?} is not an address or network (e.g. \"10.0.0.5\" or \"10.0.0.0/24\")"
                    ),
                })
        })
        .collect()
}

/// The HTTPS content listener: an address with a certificate and key, or
/// none of the three.
fn content_tls(
    listen: Option<SocketAddr>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<(SocketAddr, TlsFiles)>, ConfigError> {
    match (listen, cert, key) {
        (Some(addr), Some(cert), Some(key)) => Ok(Some((addr, TlsFiles { cert, key }))),
        (None, None, None) => Ok(None),
        (listen, cert, _) => Err(ConfigError::Invalid {
            setting: match (listen, cert) {
                (None, _) => "listen_tls",
                (Some(_), None) => "tls_cert",
                (Some(_), Some(_)) => "tls_key",
            },
            message: "listen_tls, tls_cert and tls_key are set together (an address, the certificate chain and its private key, PEM)".into(),
        }),
    }
}

/// The admin listener's certificate and key: both, or neither.
fn admin_tls(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (None, None) => Ok(None),
        (cert, _) => Err(ConfigError::Invalid {
            setting: if cert.is_some() {
                "admin_tls_key"
            } else {
                "admin_tls_cert"
            },
            message: "admin_tls_cert and admin_tls_key are set together (the certificate chain and its private key, PEM)".into(),
        }),
    }
}

/// `1073741824`, `1GiB`, `500 GB`, `2TiB`: binary (KiB..TiB) and decimal
/// (KB..TB) units, case-insensitive.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 500GiB or 1073741824)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// The shared tier: on when a bucket is named; an endpoint or region
/// without one is a mistake worth stopping for.
fn s3_settings(
    endpoint: Option<String>,
    bucket: Option<String>,
    region: Option<String>,
    prefix: Option<String>,
) -> Result<Option<S3Settings>, ConfigError> {
    let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let (endpoint, region, prefix) = (nonempty(endpoint), nonempty(region), nonempty(prefix));
    let Some(bucket) = nonempty(bucket) else {
        if endpoint.is_some() || region.is_some() || prefix.is_some() {
            return Err(ConfigError::Invalid {
                setting: "s3_bucket",
                message: "s3_endpoint, s3_region or s3_prefix is set but no bucket: name one (UPCACHE_S3_BUCKET)".into(),
            });
        }
        return Ok(None);
    };
    if let Some(e) = &endpoint {
        parse_http_url("s3_endpoint", e)?;
    }
    let env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(key_id), Some(secret)) => Some(S3Credentials { key_id, secret }),
        _ => None,
    };
    Ok(Some(S3Settings {
        endpoint,
        bucket,
        region: region.unwrap_or_else(|| "us-east-1".into()),
        prefix: prefix.unwrap_or_default(),
        credentials,
    }))
}

/// `access_log`: a path, `-` (stdout), or `off`/empty (none).
fn access_log_setting(value: Option<String>) -> Result<Option<AccessLogDestination>, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("") | Some("off") => Ok(None),
        Some(v) if v.ends_with('/') => Err(ConfigError::Invalid {
            setting: "access_log",
            message: format!("{v:?} is a directory; name a file (or - for stdout)"),
        }),
        Some(v) => Ok(Some(AccessLogDestination::parse(v))),
    }
}

/// A size setting of the file, resolved to bytes.
fn size_setting(setting: &'static str, size: Option<Size>) -> Result<Option<u64>, ConfigError> {
    match size {
        None => Ok(None),
        Some(Size::Bytes(n)) => Ok(Some(n)),
        Some(Size::Text(t)) => parse_size(&t)
            .map(Some)
            .map_err(|message| ConfigError::Invalid { setting, message }),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn parse_upstream(s: &str) -> Result<reqwest::Url, ConfigError> {
    parse_http_url("upstream", s)
}

/// An http(s) URL with a host, for `setting`.
fn parse_http_url(setting: &'static str, s: &str) -> Result<reqwest::Url, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { setting, message };
    let url = reqwest::Url::parse(s).map_err(|e| invalid(format!("{s:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(format!("{s:?} is not an http(s) URL with a host")));
    }
    Ok(url)
}

/// `upstream_rate_limit`: bytes per second, at least [`MIN_RATE`] (slower,
/// one piece would not pass within a read timeout).
fn rate_limit(size: Option<Size>) -> Result<Option<u64>, ConfigError> {
    let rate = size_setting("upstream_rate_limit", size)?;
    match rate {
        Some(rate) if rate < MIN_RATE => Err(ConfigError::Invalid {
            setting: "upstream_rate_limit",
            message: format!("{rate} bytes a second is below the least, 64KiB"),
        }),
        _ => Ok(rate),
    }
}

/// `upstream_proxy` and `upstream_no_proxy`. The URL may hold the proxy's
/// credentials, so no error shows its password.
fn upstream_proxy(
    url: Option<String>,
    no_proxy: Option<String>,
) -> Result<Option<UpstreamProxy>, ConfigError> {
    let Some(s) = url.filter(|s| !s.is_empty()) else {
        return match no_proxy {
            Some(_) => Err(ConfigError::Invalid {
                setting: "upstream_no_proxy",
                message: "applies to upstream_proxy, which is not set".into(),
            }),
            None => Ok(None),
        };
    };
    let invalid = |message: String| ConfigError::Invalid {
        setting: "upstream_proxy",
        message,
    };
    let url = reqwest::Url::parse(&s).map_err(|e| invalid(format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {:?}: a proxy URL is http:// or https://",
            url.scheme()
        )));
    }
    if url.host_str().is_none() {
        return Err(invalid("the proxy URL has no host".into()));
    }
    let proxy = UpstreamProxy { url, no_proxy };
    if !matches!(proxy.url.path(), "" | "/") || proxy.url.query().is_some() {
        return Err(invalid(format!(
            "{} has a path or query; a proxy URL is scheme, host and port",
            proxy.shown()
        )));
    }
    Ok(Some(proxy))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_with(args: ServeArgs, toml: Option<&str>) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let mut args = args;
        if let Some(t) = toml {
            let p = dir.path().join("upcache.toml");
            std::fs::write(&p, t).unwrap();
            args.config = Some(p);
        }
        Config::load(&args)
    }

    #[test]
    fn balancers_are_addresses_or_networks() {
        let c = load_with(
            ServeArgs::default(),
            Some("proxy_protocol_from = [\"10.0.0.5\", \"10.1.0.0/16\", \"fd00::/8\"]"),
        )
        .unwrap();
        let nets: Vec<String> = c
            .proxy_protocol_from
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.5/32", "10.1.0.0/16", "fd00::/8"]);
        for bad in ["haproxy.corp", "10.0.0.0/33", ""] {
            let toml = format!("proxy_protocol_from = [{bad:?}]");
            let e = load_with(ServeArgs::default(), Some(&toml))
                .unwrap_err()
                .to_string();
            assert!(e.contains("proxy_protocol_from") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_https_listener_needs_its_address_certificate_and_key() {
        for (toml, named) in [
            ("listen_tls = \"0.0.0.0:8532\"", "tls_cert"),
            (
                "listen_tls = \"0.0.0.0:8532\"\ntls_cert = \"/c\"",
                "tls_key",
            ),
            ("tls_cert = \"/c\"\ntls_key = \"/k\"", "listen_tls"),
        ] {
            let e = load_with(ServeArgs::default(), Some(toml))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(named), "{toml}: {e}");
        }
        let c = load_with(
            ServeArgs::default(),
            Some("listen_tls = \"0.0.0.0:8532\"\ntls_cert = \"/c\"\ntls_key = \"/k\""),
        )
        .unwrap();
        let (addr, files) = c.listen_tls.unwrap();
        assert_eq!(addr.port(), 8532);
        assert_eq!(files.key, std::path::Path::new("/k"));
    }

    #[test]
    fn the_admin_certificate_and_key_go_together() {
        let half = ServeArgs {
            admin_tls_key: Some("/etc/upcache/admin.key".into()),
            ..ServeArgs::default()
        };
        let e = load_with(half, None).unwrap_err().to_string();
        assert!(e.starts_with("admin_tls_cert:"), "{e}");
        let both = load_with(
            ServeArgs::default(),
            Some("admin_tls_cert = \"/a.crt\"\nadmin_tls_key = \"/a.key\""),
        )
        .unwrap();
        assert_eq!(
            both.admin_tls,
            Some(TlsFiles {
                cert: "/a.crt".into(),
                key: "/a.key".into()
            })
        );
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = load_with(ServeArgs::default(), Some("")).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(c.fetch.upstream.is_none());
    }

    #[test]
    fn flags_override_the_file() {
        let args = ServeArgs {
            listen: Some("127.0.0.1:9000".parse().unwrap()),
            ..Default::default()
        };
        let c = load_with(
            args,
            Some("listen = \"127.0.0.1:9001\"\ndata_dir = \"/srv/u\""),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.data_dir, PathBuf::from("/srv/u"));
    }

    #[test]
    fn bad_files_and_values_are_named() {
        let e = load_with(ServeArgs::default(), Some("listn = \"x\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listn"), "{e}");
        let e = load_with(ServeArgs::default(), Some("upstream = \"ftp://x\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("upstream"), "{e}");
    }

    #[test]
    fn a_proxy_is_checked_without_showing_its_password() {
        let c = load_with(
            ServeArgs::default(),
            Some("upstream_proxy = \"http://u:s3cret@proxy:3128\"\nupstream_no_proxy = \".corp\""),
        )
        .unwrap();
        let proxy = c.fetch.proxy.clone().unwrap();
        assert_eq!(proxy.url.password(), Some("s3cret"));
        assert_eq!(proxy.no_proxy.as_deref(), Some(".corp"));
        assert!(!format!("{c:?}").contains("s3cret"), "Debug hides it");
        for (toml, named) in [
            (
                "upstream_proxy = \"socks5://u:s3cret@proxy:1080\"",
                "upstream_proxy",
            ),
            (
                "upstream_proxy = \"http://u:s3cret@proxy:3128/path\"",
                "upstream_proxy",
            ),
            ("upstream_proxy = \"u:s3cret@proxy\"", "upstream_proxy"),
            ("upstream_no_proxy = \".corp\"", "upstream_no_proxy"),
        ] {
            let e = load_with(ServeArgs::default(), Some(toml))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(named), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        let args = ServeArgs {
            upstream_proxy: Some("http://flag-proxy:8080".into()),
            ..ServeArgs::default()
        };
        let c = load_with(args, Some("upstream_proxy = \"http://file-proxy:3128\"")).unwrap();
        assert_eq!(c.fetch.proxy.unwrap().url.host_str(), Some("flag-proxy"));
    }

    #[test]
    fn the_upstream_rate_limit_takes_units_and_has_a_floor() {
        let c = load_with(
            ServeArgs::default(),
            Some("upstream_rate_limit = \"12MiB\""),
        )
        .unwrap();
        assert_eq!(c.fetch.rate_limit, Some(12 << 20));
        let c = load_with(ServeArgs::default(), None).unwrap();
        assert_eq!(c.fetch.rate_limit, None);
        for toml in [
            "upstream_rate_limit = 1000",
            "upstream_rate_limit = \"fast\"",
        ] {
            let e = load_with(ServeArgs::default(), Some(toml))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("upstream_rate_limit"), "{e}");
        }
    }

    #[test]
    fn far_ahead_bytes_is_named_as_replaced() {
        let e = load_with(ServeArgs::default(), Some("far_ahead_bytes = 8388608"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("far_ahead_wait_ms"), "{e}");
        let c = load_with(
            ServeArgs::default(),
            Some("far_ahead_wait_ms = 250\nstall_secs = 5\nmax_file_bytes = \"1GiB\""),
        )
        .unwrap();
        assert_eq!(c.fetch.far_ahead_wait, Duration::from_millis(250));
        assert_eq!(c.fetch.stall, Duration::from_secs(5));
        assert_eq!(c.fetch.max_file_bytes, Some(1 << 30));
        let e = load_with(ServeArgs::default(), Some("admin_hosts = [\"http://x/\"]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin_hosts"), "{e}");
    }

    #[test]
    fn store_sizes_take_units() {
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("500GiB"), Ok(500 << 30));
        assert_eq!(parse_size("2 tb"), Ok(2_000_000_000_000));
        assert!(parse_size("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999TiB")
            .unwrap_err()
            .contains("too large"));
        let c = load_with(ServeArgs::default(), Some("max_store_bytes = \"10MiB\"")).unwrap();
        assert_eq!(c.max_store_bytes, Some(10 << 20));
        let c = load_with(ServeArgs::default(), Some("max_store_bytes = 4096")).unwrap();
        assert_eq!(c.max_store_bytes, Some(4096));
        let e = load_with(ServeArgs::default(), Some("max_store_bytes = \"lots\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_store_bytes"), "{e}");
    }

    #[test]
    fn access_log_is_off_unless_named() {
        let c = load_with(ServeArgs::default(), Some("")).unwrap();
        assert_eq!(c.access_log, None);
        assert_eq!(c.access_log_format, AccessLogFormat::Combined);
        let c = load_with(
            ServeArgs::default(),
            Some("access_log = \"/var/log/upcache/access.log\"\naccess_log_format = \"json\""),
        )
        .unwrap();
        assert_eq!(
            c.access_log,
            Some(AccessLogDestination::File(
                "/var/log/upcache/access.log".into()
            ))
        );
        assert_eq!(c.access_log_format, AccessLogFormat::Json);
        let args = ServeArgs {
            access_log: Some("-".into()),
            ..Default::default()
        };
        let c = load_with(args, Some("access_log = \"/x.log\"")).unwrap();
        assert_eq!(c.access_log, Some(AccessLogDestination::Stdout));
        let args = ServeArgs {
            access_log: Some("off".into()),
            ..Default::default()
        };
        assert_eq!(
            load_with(args, Some("access_log = \"/x.log\""))
                .unwrap()
                .access_log,
            None
        );
        let e = load_with(ServeArgs::default(), Some("access_log_format = \"clf\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("access_log_format") || e.contains("clf"), "{e}");
    }

    /// `dist/upcache.toml` (installed as /etc/upcache/upcache.toml) holds
    /// every key: the package's own values uncommented, each default as a
    /// commented `# key = value`, and examples (keys unset by default)
    /// marked `# example`.
    #[test]
    fn the_packaged_config_holds_every_key_and_its_default() {
        let text = include_str!("../dist/upcache.toml");
        let (mut set, mut defaults, mut examples) = (String::new(), String::new(), String::new());
        for line in text.lines() {
            let key_line = |l: &str| {
                l.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                })
            };
            match line.strip_prefix("# ") {
                Some(rest) if key_line(rest) && rest.ends_with("# example") => {
                    examples.push_str(rest);
                    examples.push('\n');
                }
                Some(rest) if key_line(rest) => {
                    defaults.push_str(rest);
                    defaults.push('\n');
                }
                _ if key_line(line) => {
                    set.push_str(line);
                    set.push('\n');
                }
                _ => {}
            }
        }
        // Every key once (toml refuses duplicates; the struct, unknown keys).
        let all = format!("{set}{defaults}{examples}");
        let file: FileConfig = toml::from_str(&all).unwrap_or_else(|e| panic!("{e}\n{all}"));
        assert_eq!(
            file.unset_keys(),
            ["far_ahead_bytes"],
            "keys missing from dist/upcache.toml"
        );
        // The commented values are the built-in defaults.
        let from_defaults = load_with(ServeArgs::default(), Some(&defaults)).unwrap();
        let built_in = load_with(ServeArgs::default(), Some("")).unwrap();
        assert_eq!(format!("{from_defaults:?}"), format!("{built_in:?}"));
        // The package's values and the examples are valid settings.
        let all_loaded = load_with(ServeArgs::default(), Some(&all)).unwrap();
        assert_eq!(all_loaded.data_dir, PathBuf::from("/var/lib/upcache"));
        assert!(all_loaded.admin_listen.ip().is_loopback());
        assert!(!examples.is_empty() && set.contains("access_log"));
    }

    #[test]
    fn exposed_admin_api_needs_a_token() {
        let args = ServeArgs {
            admin_listen: Some("0.0.0.0:8531".parse().unwrap()),
            ..Default::default()
        };
        let e = load_with(args.clone(), Some("")).unwrap_err().to_string();
        assert!(e.contains("admin token"), "{e}");
        let with_token = ServeArgs {
            admin_token: Some("0123456789abcdef0123".into()),
            ..args
        };
        assert!(load_with(with_token, Some("")).is_ok());
    }
}
