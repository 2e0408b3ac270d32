//! The content listeners: where Windows clients download from.

use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::net::tls::TlsFiles;
use crate::settings::Invalid;

/// The content listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ContentSettings {
    /// The content listener: the URL Windows clients download from
    /// (UpdateServiceUrlAlternate, DOCacheHost; see docs/windows.md).
    #[schemars(with = "String")]
    pub listen: SocketAddr,
    /// A second content listener over HTTPS, for clients that must use it
    /// (UpdateServiceUrlAlternate = "https://upcache:8532"): the same files
    /// and rules, answered without sendfile. Set listen_tls, tls_cert and
    /// tls_key together; the certificate and key are re-read at
    /// `systemctl reload`.
    #[schemars(with = "Option<String>", example = &"0.0.0.0:8532")]
    pub listen_tls: Option<SocketAddr>,
    /// PEM certificate chain of the HTTPS content listener.
    #[schemars(example = &"/etc/upcache/upcache.crt")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of tls_cert.
    #[schemars(example = &"/etc/upcache/upcache.key")]
    pub tls_key: Option<PathBuf>,
    /// Send warm hits and whole-file downloads over HTTP/1.1 with
    /// sendfile(2); off, hyper answers everything.
    pub fast_path: bool,
}

impl Default for ContentSettings {
    fn default() -> Self {
        ContentSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8530)),
            listen_tls: None,
            tls_cert: None,
            tls_key: None,
            fast_path: true,
        }
    }
}

impl ContentSettings {
    /// The HTTPS content listener: an address with a certificate and key,
    /// or none of the three.
    pub fn https(&self) -> Result<Option<(SocketAddr, TlsFiles)>, Invalid> {
        match (self.listen_tls, self.tls_cert.clone(), self.tls_key.clone()) {
            (Some(addr), Some(cert), Some(key)) => Ok(Some((addr, TlsFiles { cert, key }))),
            (None, None, None) => Ok(None),
            (listen, cert, _) => Err(Invalid::new(
                match (listen, cert) {
                    (None, _) => "listen_tls",
                    (Some(_), None) => "tls_cert",
                    (Some(_), Some(_)) => "tls_key",
                },
                "listen_tls, tls_cert and tls_key are set together (an address, the certificate chain and its private key, PEM)",
            )),
        }
    }

    /// Sets the HTTPS listener's three keys at once.
    pub fn set_https(&mut self, addr: SocketAddr, files: TlsFiles) {
        self.listen_tls = Some(addr);
        self.tls_cert = Some(files.cert);
        self.tls_key = Some(files.key);
    }
}
