//! Configuration: flags > `UPCACHE_*` environment > `upcache.toml` > defaults.
//!
//! Every module owns the settings it reads, as a struct with its defaults
//! (`net::NetSettings`, `fetch::FetchSettings`, ...); [`Config`] is those
//! structs side by side. Flags and environment come in through clap
//! ([`ServeArgs`]); here they are laid over the file's keys, once, and each
//! section is read from the result. A key nobody owns, or a value its
//! owner refuses, stops the server at start with a message naming the key.
//! [`mod@reference`] derives the list of keys and the packaged
//! `dist/upcache.toml` from the same structs.

pub mod reference;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::admin::AdminSettings;
use crate::delivery::DeliverySettings;
use crate::fetch::FetchSettings;
use crate::fleet::FleetSettings;
use crate::http::ContentSettings;
use crate::net::NetSettings;
use crate::node::follow::FollowSettings;
pub use crate::settings::parse_size;
use crate::settings::Invalid;
use crate::store::s3::SharedTierSettings;
use crate::store::StoreSettings;
pub use crate::telemetry::access_log::{
    AccessLogSettings, Destination as AccessLogDestination, Format as AccessLogFormat,
};
use crate::upkeep::UpkeepSettings;
use crate::wsus::client::ClientSettings;
use crate::wsus::sync::SyncSettings;

pub const DEFAULT_DATA_DIR: &str = "./upcache-data";
pub const DEFAULT_CONFIG_FILE: &str = "./upcache.toml";

/// Keys that were and are no longer, with what replaced them.
const REMOVED_KEYS: &[(&str, &str)] = &[(
    "far_ahead_bytes",
    "replaced by far_ahead_wait_ms: a range is fetched on its own when the running download would take longer than that to reach it",
)];

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
    Invalid { setting: String, message: String },
}

impl From<Invalid> for ConfigError {
    fn from(e: Invalid) -> Self {
        ConfigError::Invalid {
            setting: e.setting.to_owned(),
            message: e.message,
        }
    }
}

/// `upcache serve` flags (each also read from its `UPCACHE_*` variable).
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct ServeArgs {
    /// Configuration file [default: ./upcache.toml if present]
    #[arg(long, env = "UPCACHE_CONFIG")]
    #[serde(skip)]
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
    /// Connections one client address may hold on each listener [default: 64]
    #[arg(long, env = "UPCACHE_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
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
    /// Delivery Optimization content: cache, pass-through or off [default: cache]
    #[arg(long, env = "UPCACHE_DELIVERY_OPTIMIZATION")]
    pub delivery_optimization: Option<String>,
    /// Host patterns a DO cacheHostOrigin must match, comma-separated
    /// [default: *.dl.delivery.mp.microsoft.com,*.delivery.mp.microsoft.com,*.windowsupdate.com,*.download.windowsupdate.com]
    #[arg(long, env = "UPCACHE_DO_ORIGINS", value_delimiter = ',')]
    pub do_origins: Option<Vec<String>>,
    /// Networks a DO origin may be in besides public addresses, comma-separated
    #[arg(long, env = "UPCACHE_DO_ORIGIN_NETWORKS", value_delimiter = ',')]
    pub do_origin_networks: Option<Vec<String>>,
    /// Scheme of requests to DO origins: http or https [default: http]
    #[arg(long, env = "UPCACHE_DO_ORIGIN_SCHEME")]
    pub do_origin_scheme: Option<String>,
    /// Bytes of unverified DO objects kept (e.g. 200GiB) [default: no limit]
    #[arg(long, env = "UPCACHE_DO_MAX_BYTES", value_parser = parse_size)]
    pub do_max_bytes: Option<u64>,
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
    /// Upstream of server sync [default: `https://sws.update.microsoft.com`]
    #[arg(long, env = "UPCACHE_UPSTREAM_SERVER")]
    pub upstream_server: Option<String>,
    /// Products to sync, by title or GUID (comma-separated) [default: none: categories only]
    #[arg(long, env = "UPCACHE_SYNC_PRODUCTS", value_delimiter = ',')]
    pub sync_products: Option<Vec<String>>,
    /// Classifications to sync, by title or GUID (comma-separated) [default: none]
    #[arg(long, env = "UPCACHE_SYNC_CLASSIFICATIONS", value_delimiter = ',')]
    pub sync_classifications: Option<Vec<String>>,
    /// Languages of synced metadata (comma-separated) [default: en]
    #[arg(long, env = "UPCACHE_SYNC_LANGUAGES", value_delimiter = ',')]
    pub sync_languages: Option<Vec<String>>,
    /// Server sync schedule: off, a daily HH:MM (UTC), or an interval like 6h [default: off]
    #[arg(long, env = "UPCACHE_SYNC_SCHEDULE")]
    pub sync_schedule: Option<String>,
    /// Replica mode: take the upstream server's approvals at each sync (true/false) [default: false]
    #[arg(long, env = "UPCACHE_SYNC_REPLICA")]
    pub sync_replica: Option<bool>,
}

/// The settings of a server: each module's, side by side.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub store: StoreSettings,
    pub content: ContentSettings,
    pub admin: AdminSettings,
    pub net: NetSettings,
    pub fetch: FetchSettings,
    pub shared: SharedTierSettings,
    pub follow: FollowSettings,
    pub access_log: AccessLogSettings,
    pub upkeep: UpkeepSettings,
    pub delivery: DeliverySettings,
    pub server_sync: SyncSettings,
    pub update_server: ClientSettings,
    pub fleet: FleetSettings,
}

impl Config {
    /// Lays flags and environment over the config file, reads each
    /// module's settings from the result, and validates.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let mut keys = match &args.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                read_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => toml::Table::new(),
        };
        let flags = toml::Table::try_from(args).map_err(|e| ConfigError::Invalid {
            setting: "flags".into(),
            message: e.to_string(),
        })?;
        keys.extend(flags);
        let config = Config::from_keys(&keys)?;
        config.validate()?;
        Ok(config)
    }

    /// Each section, read from the same keys.
    fn from_keys(keys: &toml::Table) -> Result<Config, ConfigError> {
        Ok(Config {
            store: section(keys)?,
            content: section(keys)?,
            admin: section(keys)?,
            net: section(keys)?,
            fetch: section(keys)?,
            shared: section(keys)?,
            follow: section(keys)?,
            access_log: section(keys)?,
            upkeep: section(keys)?,
            delivery: section(keys)?,
            server_sync: section(keys)?,
            update_server: section(keys)?,
            fleet: section(keys)?,
        })
    }

    /// A configuration on ephemeral loopback ports (tests, demo).
    pub fn ephemeral(data_dir: &Path) -> Config {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut c = Config::default();
        c.store.data_dir = data_dir.to_owned();
        c.store.open_file_cache = 1024;
        c.content.listen = loopback;
        c.admin.admin_listen = loopback;
        // Tests and the demo run wherever there is a little room.
        c.fetch.disk_reserve = 8 << 20;
        c
    }

    /// What the types cannot check, section by section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.store.validate()?;
        self.content.https()?;
        self.admin.validate()?;
        self.net.validate()?;
        self.fetch.validate()?;
        self.shared.tier()?;
        self.access_log.destination()?;
        self.delivery.validate()?;
        self.server_sync.validate()?;
        self.update_server.validate()?;
        self.fleet.validate()?;
        Ok(())
    }
}

/// One module's settings from the merged keys; a refused value is named by
/// its key.
fn section<T: DeserializeOwned>(keys: &toml::Table) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(keys.clone())).map_err(|e| {
        ConfigError::Invalid {
            setting: e.path().to_string(),
            message: e.inner().to_string(),
        }
    })
}

/// The file's keys: every one known (a misspelt key is a mistake worth
/// stopping for), none of the removed ones.
fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let keys: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if let Some((key, why)) = REMOVED_KEYS.iter().find(|(k, _)| keys.contains_key(*k)) {
        return Err(ConfigError::Invalid {
            setting: (*key).into(),
            message: (*why).into(),
        });
    }
    let known = reference::known_keys();
    if let Some(unknown) = keys.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ConfigError::Parse {
            path: path.to_owned(),
            message: format!("unknown key `{unknown}` (`man upcache-serve` and docs/configuration.md list the keys)"),
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
            .net
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
        let (addr, files) = c.content.https().unwrap().unwrap();
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
            both.admin.tls().unwrap(),
            Some(crate::net::tls::TlsFiles {
                cert: "/a.crt".into(),
                key: "/a.key".into()
            })
        );
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = load_with(ServeArgs::default(), Some("")).unwrap();
        assert_eq!(c.content.listen.to_string(), "127.0.0.1:8530");
        assert_eq!(c.admin.admin_listen.to_string(), "127.0.0.1:8531");
        assert_eq!(c.store.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
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
        assert_eq!(c.content.listen.port(), 9000);
        assert_eq!(c.store.data_dir, PathBuf::from("/srv/u"));
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
        let proxy = c.fetch.proxy().unwrap().unwrap();
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
        let proxy = c.fetch.proxy().unwrap().unwrap();
        assert_eq!(proxy.url.host_str(), Some("flag-proxy"));
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
        let c = load_with(ServeArgs::default(), Some("max_store_bytes = \"10MiB\"")).unwrap();
        assert_eq!(c.store.max_store_bytes, Some(10 << 20));
        let c = load_with(ServeArgs::default(), Some("max_store_bytes = 4096")).unwrap();
        assert_eq!(c.store.max_store_bytes, Some(4096));
        let e = load_with(ServeArgs::default(), Some("max_store_bytes = \"lots\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_store_bytes"), "{e}");
    }

    #[test]
    fn access_log_is_off_unless_named() {
        let c = load_with(ServeArgs::default(), Some("")).unwrap();
        assert_eq!(c.access_log.destination().unwrap(), None);
        assert_eq!(c.access_log.access_log_format, AccessLogFormat::Combined);
        let c = load_with(
            ServeArgs::default(),
            Some("access_log = \"/var/log/upcache/access.log\"\naccess_log_format = \"json\""),
        )
        .unwrap();
        assert_eq!(
            c.access_log.destination().unwrap(),
            Some(AccessLogDestination::File(
                "/var/log/upcache/access.log".into()
            ))
        );
        assert_eq!(c.access_log.access_log_format, AccessLogFormat::Json);
        let args = ServeArgs {
            access_log: Some("-".into()),
            ..Default::default()
        };
        let c = load_with(args, Some("access_log = \"/x.log\"")).unwrap();
        assert_eq!(
            c.access_log.destination().unwrap(),
            Some(AccessLogDestination::Stdout)
        );
        let args = ServeArgs {
            access_log: Some("off".into()),
            ..Default::default()
        };
        assert_eq!(
            load_with(args, Some("access_log = \"/x.log\""))
                .unwrap()
                .access_log
                .destination()
                .unwrap(),
            None
        );
        let e = load_with(ServeArgs::default(), Some("access_log_format = \"clf\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("access_log_format") || e.contains("clf"), "{e}");
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
