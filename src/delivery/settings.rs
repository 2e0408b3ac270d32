//! The DO wing's settings (`delivery_optimization`, `do_origins`,
//! `do_origin_networks`, `do_origin_scheme`, `do_max_bytes`).

use serde::{Deserialize, Serialize};

use super::origin::{HostPattern, OriginPolicy, DEFAULT_PATTERNS};

/// What upcache does with `/filestreamingservice/` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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

/// The settings, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliverySettings {
    pub delivery_optimization: Mode,
    /// Host patterns an origin name must match (`*.` matches one or more labels).
    pub do_origins: Vec<String>,
    /// Networks an origin address (a literal, or a name's answer) may lie in,
    /// besides public addresses for names.
    pub do_origin_networks: Vec<String>,
    pub do_origin_scheme: Scheme,
    /// Bytes of unverified objects kept; the least recently served are
    /// evicted beyond it. `None`: no limit of their own.
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
    pub fn origin_policy(&self) -> Result<OriginPolicy, String> {
        let patterns = self
            .do_origins
            .iter()
            .map(|p| {
                p.parse::<HostPattern>()
                    .map_err(|e| format!("do_origins: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let networks = self
            .do_origin_networks
            .iter()
            .map(|n| {
                parse_network(n).ok_or(format!(
                    "do_origin_networks: {n:?} is not an address or network"
                ))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OriginPolicy::new(patterns, networks))
    }
}

/// `10.0.0.0/8`, or one address (`10.0.0.5`: a /32 or /128).
fn parse_network(s: &str) -> Option<ipnet::IpNet> {
    s.parse()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_patterns() {
        let d = DeliverySettings::default();
        assert_eq!(d.delivery_optimization.as_str(), "cache");
        assert_eq!(d.do_origins.len(), 4);
        d.origin_policy().unwrap();
        let bad = DeliverySettings {
            do_origins: vec!["evil:80".into()],
            ..d
        };
        assert!(bad.origin_policy().unwrap_err().contains("do_origins"));
        let parsed: DeliverySettings = toml::from_str(
            "delivery_optimization = \"pass-through\"\ndo_origin_scheme = \"https\"\ndo_origin_networks = [\"127.0.0.0/8\"]",
        )
        .unwrap();
        assert_eq!(parsed.delivery_optimization, Mode::PassThrough);
        assert_eq!(parsed.do_origin_scheme, Scheme::Https);
        assert_eq!(parsed.do_origins.len(), 4);
    }
}
