//! The DO wing's settings (`delivery_optimization`, `do_origins`,
//! `do_origin_networks`, `do_origin_scheme`, `do_max_bytes`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::origin::{HostPattern, OriginPolicy, DEFAULT_PATTERNS};
use crate::settings::{networks, opt_size, Invalid};

/// What upcache does with `/filestreamingservice/` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Fetch each object once, store it, serve it from the store.
    #[default]
    Cache,
    /// Relay each request to the origin (checked the same way); store nothing.
    PassThrough,
    /// 404, as before this wing: DO goes to its other sources.
    Off,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Cache => "cache",
            Mode::PassThrough => "pass-through",
            Mode::Off => "off",
        }
    }
}

/// `http` (what DO itself uses for this content) or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Delivery Optimization content (`/filestreamingservice/files/<guid>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct DeliverySettings {
    /// What to do with Delivery Optimization's own content requests
    /// (`/filestreamingservice/files/<guid>`): "cache" (fetch each object once
    /// from its cacheHostOrigin and serve it from the store), "pass-through"
    /// (relay each request, store nothing) or "off" (404; DO falls back).
    pub delivery_optimization: Mode,
    /// Host patterns a cacheHostOrigin name must match to be fetched from;
    /// "*." matches one or more labels. Any other origin is refused (403)
    /// before any connection.
    pub do_origins: Vec<String>,
    /// Addresses and networks an origin may be in besides public ones: an
    /// IP-literal cacheHostOrigin, or a name's answer (loopback, private and
    /// link-local answers are refused otherwise). Unset: none.
    #[serde(with = "networks")]
    #[schemars(with = "Vec<String>", example = &["10.20.0.0/16"])]
    pub do_origin_networks: Vec<ipnet::IpNet>,
    /// Scheme of requests to the origin: "http", as DO itself uses for this
    /// content, or "https".
    pub do_origin_scheme: Scheme,
    /// Bytes of unverified DO objects (no digest known from elsewhere) kept
    /// in the store; beyond it the least recently served are evicted.
    /// Unset: no limit of their own (every DO object also counts under
    /// max_store_bytes).
    #[serde(with = "opt_size")]
    #[schemars(with = "Option<String>", example = &"200GiB")]
    pub do_max_bytes: Option<u64>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            delivery_optimization: Mode::Cache,
            do_origins: DEFAULT_PATTERNS.iter().map(|p| (*p).to_owned()).collect(),
            do_origin_networks: Vec::new(),
            do_origin_scheme: Scheme::Http,
            do_max_bytes: None,
        }
    }
}

impl DeliverySettings {
    /// The origin policy, or the pattern that is not one.
    pub fn origin_policy(&self) -> Result<OriginPolicy, Invalid> {
        let patterns = self
            .do_origins
            .iter()
            .map(|p| p.parse::<HostPattern>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Invalid::new("do_origins", e))?;
        Ok(OriginPolicy::new(patterns, self.do_origin_networks.clone()))
    }

    /// What the types cannot check.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.origin_policy().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_patterns() {
        let d = DeliverySettings::default();
        assert_eq!(d.delivery_optimization.as_str(), "cache");
        assert_eq!(d.do_origins.len(), 4);
        d.validate().unwrap();
        let bad = DeliverySettings {
            do_origins: vec!["evil:80".into()],
            ..d
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("do_origins"));
        let parsed: DeliverySettings = toml::from_str(
            "delivery_optimization = \"pass-through\"\ndo_origin_scheme = \"https\"\ndo_origin_networks = [\"127.0.0.0/8\", \"10.0.0.5\"]\ndo_max_bytes = \"1GiB\"",
        )
        .unwrap();
        assert_eq!(parsed.delivery_optimization, Mode::PassThrough);
        assert_eq!(parsed.do_origin_scheme, Scheme::Https);
        assert_eq!(parsed.do_origins.len(), 4);
        assert_eq!(parsed.do_origin_networks.len(), 2);
        assert_eq!(parsed.do_max_bytes, Some(1 << 30));
    }
}
