//! How upstream downloads are made: where from, through what, how many at
//! once, and every wait's bound.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{UpstreamProxy, MIN_RATE};
use crate::settings::{millis, nonempty, opt_http_url, opt_size, secs, size, Invalid};

/// Upstream downloads.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct FetchSettings {
    /// Replace scheme and host of catalog URLs with this: a mirror, or an
    /// upstream upcache (a downstream server in a hierarchy).
    #[serde(with = "opt_http_url")]
    #[schemars(with = "Option<String>", example = &"http://upcache-hq.corp.example:8530")]
    pub upstream: Option<reqwest::Url>,
    /// PEM file of extra root certificates for an HTTPS upstream (an
    /// internal mirror's CA); server sync trusts it too, for an HTTPS
    /// `upstream_server` (a WSUS or an upcache) with a private CA, and so
    /// do Delivery Optimization origins with do_origin_scheme = "https",
    /// through the proxy or reached directly.
    #[serde(rename = "upstream_ca")]
    #[schemars(example = &"/etc/upcache/upstream-ca.pem")]
    pub upstream_ca_file: Option<PathBuf>,
    /// HTTP proxy for every upstream download (HTTPS goes through it by
    /// CONNECT); credentials in the URL are sent as Basic
    /// Proxy-Authorization (percent-encode '@' and ':' in them). Unset: the
    /// HTTP_PROXY / HTTPS_PROXY / NO_PROXY environment variables apply, as
    /// for curl.
    #[serde(with = "nonempty")]
    #[schemars(with = "Option<String>", example = &"http://upcache:secret@proxy.corp.example:3128")]
    pub upstream_proxy: Option<String>,
    /// Hosts, domains and networks reached without the proxy,
    /// comma-separated.
    #[schemars(example = &"upcache-hq.corp.example, .corp.example, 10.0.0.0/8")]
    pub upstream_no_proxy: Option<String>,
    /// Bytes a second taken from the upstream, all downloads together
    /// (resumes and far-ahead ranges included; the shared tier is not
    /// limited). At least 64KiB; 12MiB is about 100 Mbit/s. Unset: as fast
    /// as the link goes. `upcache rate-limit 12MiB|off` changes it until
    /// the next restart.
    #[serde(rename = "upstream_rate_limit", with = "opt_size")]
    #[schemars(with = "Option<String>", example = &"12MiB")]
    pub rate_limit: Option<u64>,
    /// Seconds to wait for the upstream's TCP (and TLS) connection.
    #[serde(rename = "connect_timeout_secs", with = "secs")]
    #[schemars(with = "u64")]
    pub connect_timeout: Duration,
    /// Seconds to wait for the response head or for the next body chunk.
    #[serde(rename = "read_timeout_secs", with = "secs")]
    #[schemars(with = "u64")]
    pub read_timeout: Duration,
    /// Upstream downloads for clients at once; more wait in a queue of
    /// max_queued_downloads, each client at most queue_wait_secs (then 503
    /// with Retry-After).
    pub max_downloads: usize,
    /// At-sync and prefetch downloads at once (they never take the last
    /// slots clients need).
    #[serde(rename = "background_downloads")]
    pub background_concurrency: usize,
    /// Downloads waiting for a slot; a miss beyond this gets 503 at once.
    #[serde(rename = "max_queued_downloads")]
    pub max_queued: usize,
    /// Longest a client waits, in seconds, for its download to get a slot.
    #[serde(rename = "queue_wait_secs", with = "secs")]
    #[schemars(with = "u64")]
    pub queue_wait: Duration,
    /// A download that receives nothing for this many seconds is cut (its
    /// clients too), retries included.
    #[serde(rename = "stall_secs", with = "secs")]
    #[schemars(with = "u64")]
    pub stall: Duration,
    /// Interrupted downloads resume with a Range request at most this many
    /// times.
    pub max_resumes: u32,
    /// A range the running download would reach later than this, in
    /// milliseconds at its current rate, is fetched from the upstream on
    /// its own.
    #[serde(rename = "far_ahead_wait_ms", with = "millis")]
    #[schemars(with = "u64")]
    pub far_ahead_wait: Duration,
    /// Most parts a Delivery Optimization object of 16 MiB or more is
    /// fetched in side by side: each part is its own connection to the
    /// origin, at least 8 MiB long. 1: one sequential download; at most 64.
    pub do_download_parts: u64,
    /// Refuse any single file larger than this (a catalog size above it is
    /// refused with 507; an unknown size is cut there). Unset: no limit.
    #[serde(with = "opt_size")]
    #[schemars(with = "Option<String>", example = &"16GiB")]
    pub max_file_bytes: Option<u64>,
    /// Free space always left on the store's disk: downloads that would eat
    /// into it are refused (known sizes) or cut (unknown sizes).
    #[serde(rename = "disk_reserve_bytes", with = "size")]
    #[schemars(with = "String")]
    pub disk_reserve: u64,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            upstream: None,
            upstream_ca_file: None,
            upstream_proxy: None,
            upstream_no_proxy: None,
            rate_limit: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            max_downloads: 16,
            background_concurrency: 4,
            max_queued: 256,
            queue_wait: Duration::from_secs(15),
            stall: Duration::from_secs(60),
            max_resumes: 5,
            far_ahead_wait: Duration::from_secs(1),
            do_download_parts: 16,
            max_file_bytes: None,
            disk_reserve: 128 << 20,
        }
    }
}

/// The most `do_download_parts`: each is a connection to the origin.
const MAX_DO_PARTS: u64 = 64;

/// The proxy's password is never printed.
impl std::fmt::Debug for FetchSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proxy = self.proxy().ok().flatten();
        f.debug_struct("FetchSettings")
            .field("upstream", &self.upstream.as_ref().map(|u| u.as_str()))
            .field("upstream_ca_file", &self.upstream_ca_file)
            .field("proxy", &proxy)
            .field("rate_limit", &self.rate_limit)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("max_downloads", &self.max_downloads)
            .field("background_concurrency", &self.background_concurrency)
            .field("max_queued", &self.max_queued)
            .field("queue_wait", &self.queue_wait)
            .field("stall", &self.stall)
            .field("max_resumes", &self.max_resumes)
            .field("far_ahead_wait", &self.far_ahead_wait)
            .field("do_download_parts", &self.do_download_parts)
            .field("max_file_bytes", &self.max_file_bytes)
            .field("disk_reserve", &self.disk_reserve)
            .finish()
    }
}

impl FetchSettings {
    /// `upstream_proxy` and `upstream_no_proxy`. The URL may hold the
    /// proxy's credentials, so no error shows its password.
    pub fn proxy(&self) -> Result<Option<UpstreamProxy>, Invalid> {
        let Some(s) = &self.upstream_proxy else {
            return match self.upstream_no_proxy {
                Some(_) => Err(Invalid::new(
                    "upstream_no_proxy",
                    "applies to upstream_proxy, which is not set",
                )),
                None => Ok(None),
            };
        };
        let invalid = |message: String| Invalid::new("upstream_proxy", message);
        let url = reqwest::Url::parse(s).map_err(|e| invalid(format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "scheme {:?}: a proxy URL is http:// or https://",
                url.scheme()
            )));
        }
        if url.host_str().is_none() {
            return Err(invalid("the proxy URL has no host".into()));
        }
        let proxy = UpstreamProxy {
            url,
            no_proxy: self.upstream_no_proxy.clone(),
        };
        if !matches!(proxy.url.path(), "" | "/") || proxy.url.query().is_some() {
            return Err(invalid(format!(
                "{} has a path or query; a proxy URL is scheme, host and port",
                proxy.shown()
            )));
        }
        Ok(Some(proxy))
    }

    /// What the types cannot check.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.proxy()?;
        if let Some(rate) = self.rate_limit.filter(|&r| r < MIN_RATE) {
            return Err(Invalid::new(
                "upstream_rate_limit",
                format!("{rate} bytes a second is below the least, 64KiB"),
            ));
        }
        if self.max_downloads == 0 || self.background_concurrency == 0 {
            return Err(Invalid::new(
                "max_downloads",
                "download limits must be at least 1",
            ));
        }
        if self.max_queued == 0 {
            return Err(Invalid::new("max_queued_downloads", "must be at least 1"));
        }
        if !(1..=MAX_DO_PARTS).contains(&self.do_download_parts) {
            return Err(Invalid::new(
                "do_download_parts",
                format!("must be 1 to {MAX_DO_PARTS} (each is a connection to the origin)"),
            ));
        }
        Ok(())
    }
}
