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
            proxy_protocol_from: Vec::new(),
            allow_clients: Vec::new(),
        }
    }
}

impl NetSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.max_connections == 0 {
            return Err(Invalid::new("max_connections", "must be at least 1"));
        }
        Ok(())
    }

    /// The content listener's bounds.
    pub fn content_limits(&self) -> super::Limits {
        super::Limits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
        }
    }

    /// The admin listener's: few clients, and never one that holds a slot
    /// by trickling its head.
    pub fn admin_limits(&self) -> super::Limits {
        super::Limits {
            max_connections: 256,
            ..self.content_limits()
        }
    }
}
