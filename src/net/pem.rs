//! PEM files: reading them, and trusting the certificates they hold. Used
//! by the listeners' TLS and by every client that talks to a private CA's
//! server (the upstream, a primary, the admin API).

use std::path::{Path, PathBuf};

/// Why a PEM file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
}

/// `builder` trusting the certificates in the PEM file at `path` besides
/// the system's roots: a private CA for the upstream, a primary or the
/// admin API.
pub fn trust_roots_from(
    mut builder: reqwest::ClientBuilder,
    path: &Path,
) -> Result<reqwest::ClientBuilder, PemError> {
    let pem = read(path)?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| PemError::Pem {
        path: path.to_owned(),
        message: format!("not valid PEM: {e}"),
    })?;
    if certs.is_empty() {
        return Err(no_certificate(path));
    }
    for cert in certs {
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
}

pub(super) fn no_certificate(path: &Path) -> PemError {
    PemError::Pem {
        path: path.to_owned(),
        message: "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into(),
    }
}

pub(super) fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_owned(),
        source,
    })
}

pub(super) fn malformed(path: &Path, e: rustls::pki_types::pem::Error) -> PemError {
    let message = match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no PEM private key (-----BEGIN ... PRIVATE KEY-----) in the file".into()
        }
        other => format!("not valid PEM: {other}"),
    };
    PemError::Pem {
        path: path.to_owned(),
        message,
    }
}
