//! The connection bounds and client rules of the listeners.

use std::time::Duration;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::settings::{networks, secs, Invalid};

/// Client connections (both listeners).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct NetSettings {
    /// Longest wait, in seconds, for a complete request head: slow or idle
    /// clients are dropped.
    #[serde(rename = "header_timeout_secs", with = "secs")]
    #[schemars(with = "u64")]
    pub header_timeout: Duration,
    /// A connection with no request in flight for this many seconds is
    /// closed (h2 gets a GOAWAY).
    #[serde(rename = "idle_timeout_secs", with = "secs")]
    #[schemars(with = "u64")]
    pub idle_timeout: Duration,
    /// Connections held at once on the content listener; more wait in the
    /// kernel's accept queue until one closes.
    pub max_connections: usize,
    /// A response whose client takes no bytes for this many seconds is cut
    /// and counted (upcache_send_timeouts_total), as nginx's send_timeout:
    /// HTTP/1.0 and 1.1, HTTPS, each h2 stream, both listeners.
    #[serde(rename = "send_timeout_secs", with = "secs")]
    #[schemars(with = "u64")]
    pub send_timeout: Duration,
    /// Connections one client address may hold at once on each listener;
    /// more are closed as they come (upcache_connections_over_ip_cap_total).
    /// Balancers in proxy_protocol_from are exempt.
    pub max_connections_per_ip: usize,
    /// Connections held at once on the admin listener.
    pub admin_max_connections: usize,
    /// Load balancers (addresses or networks) whose connections to the
    /// content listener may start with a PROXY protocol header (HAProxy:
    /// send-proxy or send-proxy-v2), so that logs name the Windows client.
    /// From anyone else such a header is refused.
    #[serde(with = "networks")]
    #[schemars(with = "Vec<String>")]
    pub proxy_protocol_from: Vec<IpNet>,
    /// The clients the content listeners serve (addresses or networks,
    /// judged by the address a trusted balancer names); others get 403.
    /// Empty: everyone.
    #[serde(with = "networks")]
    #[schemars(with = "Vec<String>")]
    pub allow_clients: Vec<IpNet>,
}

impl Default for NetSettings {
    fn default() -> Self {
        NetSettings {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 16_384,
            send_timeout: Duration::from_secs(60),
            max_connections_per_ip: 64,
            admin_max_connections: 256,
            proxy_protocol_from: Vec::new(),
            allow_clients: Vec::new(),
        }
    }
}

impl NetSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        for (key, n) in [
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("admin_max_connections", self.admin_max_connections),
        ] {
            if n == 0 {
                return Err(Invalid::new(key, "must be at least 1"));
            }
        }
        if self.send_timeout.is_zero() {
            return Err(Invalid::new("send_timeout_secs", "must be at least 1"));
        }
        Ok(())
    }

    /// The content listener's bounds.
    pub fn content_limits(&self) -> super::Limits {
        super::Limits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            send_timeout: self.send_timeout,
            max_connections_per_ip: self.max_connections_per_ip,
        }
    }

    /// The admin listener's: few clients, and never one that holds a slot
    /// by trickling its head.
    pub fn admin_limits(&self) -> super::Limits {
        super::Limits {
            max_connections: self.admin_max_connections,
            ..self.content_limits()
        }
    }
}
