//! The admin API's listener and who may use it.

use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::net::tls::TlsFiles;
use crate::settings::{nonempty, Invalid};

/// The admin API and web console.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct AdminSettings {
    /// The admin API and web console (http://127.0.0.1:8531/). Off loopback
    /// it needs admin_token.
    #[schemars(with = "String")]
    pub admin_listen: SocketAddr,
    /// Bearer token for the admin API: at least 16 printable characters.
    /// Prefer UPCACHE_ADMIN_TOKEN or this file (readable by the service
    /// only) to the flag, which `ps` shows.
    #[serde(with = "nonempty")]
    #[schemars(with = "Option<String>", example = &"change-me-to-a-long-random-string")]
    pub admin_token: Option<String>,
    /// TLS for the admin API (PEM: the certificate chain, server first).
    /// Set it with admin_tls_key whenever admin_listen is off loopback:
    /// without them the token crosses the network in clear. `systemctl
    /// reload` (SIGHUP) reads them again after a renewal.
    #[schemars(example = &"/etc/upcache/admin.crt")]
    pub admin_tls_cert: Option<PathBuf>,
    /// The private key of admin_tls_cert (PEM).
    #[schemars(example = &"/etc/upcache/admin.key")]
    pub admin_tls_key: Option<PathBuf>,
    /// Host names the admin API answers to besides its address and
    /// loopback (a DNS-rebinding page's name is none of them).
    pub admin_hosts: Vec<String>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8531)),
            admin_token: None,
            admin_tls_cert: None,
            admin_tls_key: None,
            admin_hosts: Vec::new(),
        }
    }
}

/// The token is never printed.
impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("admin_listen", &self.admin_listen)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("admin_tls_cert", &self.admin_tls_cert)
            .field("admin_tls_key", &self.admin_tls_key)
            .field("admin_hosts", &self.admin_hosts)
            .finish()
    }
}

impl AdminSettings {
    /// The admin listener's certificate and key: both, or neither.
    pub fn tls(&self) -> Result<Option<TlsFiles>, Invalid> {
        match (self.admin_tls_cert.clone(), self.admin_tls_key.clone()) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
            (None, None) => Ok(None),
            (cert, _) => Err(Invalid::new(
                if cert.is_some() {
                    "admin_tls_key"
                } else {
                    "admin_tls_cert"
                },
                "admin_tls_cert and admin_tls_key are set together (the certificate chain and its private key, PEM)",
            )),
        }
    }

    /// Sets the certificate and key at once.
    pub fn set_tls(&mut self, files: TlsFiles) {
        self.admin_tls_cert = Some(files.cert);
        self.admin_tls_key = Some(files.key);
    }

    /// What the types cannot check: the admin API is never exposed without
    /// a token, and hosts are names.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.tls()?;
        if !self.admin_listen.ip().is_loopback() && self.admin_token.is_none() {
            return Err(Invalid::new(
                "admin_listen",
                format!(
                    "{} is not a loopback address; set an admin token (UPCACHE_ADMIN_TOKEN or admin_token in the file) to expose the admin API",
                    self.admin_listen
                ),
            ));
        }
        if let Some(t) = &self.admin_token {
            if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Invalid::new(
                    "admin_token",
                    "must be at least 16 printable ASCII characters",
                ));
            }
        }
        if let Some(host) = self
            .admin_hosts
            .iter()
            .find(|h| h.is_empty() || h.contains(['/', ' ', '@']))
        {
            return Err(Invalid::new(
                "admin_hosts",
                format!("{host:?} is not a host name (give names like \"upcache.corp.example\", no scheme or path)"),
            ));
        }
        Ok(())
    }
}
