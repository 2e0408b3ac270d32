//! TLS for a listener (the admin API, whose bearer token must not cross a
//! network in clear): certificate and key from PEM files, re-read on
//! [`Terminator::reload`] (SIGHUP) so a renewed certificate needs no restart.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::pem::{self, PemError};
use super::rewind::Rewind;

/// Where a listener's certificate chain and private key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a certificate or key could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{path}: the private key does not fit the certificate, or cannot sign: {message}")]
    Key { path: PathBuf, message: String },
}

/// The first byte of a TLS handshake record; anything else on a TLS port is
/// a client speaking plain HTTP (or noise).
const HANDSHAKE_RECORD: u8 = 0x16;

/// What a client speaking plain HTTP to the TLS port is told, as nginx
/// does, instead of a reset it cannot explain.
const PLAIN_HTTP_ERROR: &str =
    "{\"error\":\"this port speaks HTTPS: use an https:// URL (plain HTTP refused)\"}\n";

/// Fewer days than this left on the certificate are warned about at each
/// load (the metric is what alerts).
const RENEW_WARNING_DAYS: i64 = 14;

/// A listener's TLS: accepts handshakes with the certificate in force.
pub struct Terminator {
    files: TlsFiles,
    current: Arc<Current>,
    acceptor: TlsAcceptor,
}

/// The certificate in force, replaced whole by a reload: a handshake takes
/// the one it finds, so none ever sees half of a change.
#[derive(Debug)]
struct Current(RwLock<Loaded>);

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The server certificate's `notAfter`, Unix seconds.
    not_after: Option<i64>,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap().key.clone())
    }
}

impl Terminator {
    /// Loads `files` (checking that the key fits the certificate); the
    /// listener offers h2 and HTTP/1.1 by ALPN.
    pub fn load(files: TlsFiles) -> Result<Terminator, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = Arc::new(Current(RwLock::new(load_pair(&files, &provider)?)));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Terminator {
            files,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the files again; on any error the certificate in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let provider = rustls::crypto::ring::default_provider();
        let fresh = load_pair(&self.files, &provider)?;
        *self.current.0.write().unwrap() = fresh;
        Ok(())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// When the certificate in force expires (its `notAfter`), Unix seconds.
    pub fn not_after(&self) -> Option<i64> {
        self.current.0.read().unwrap().not_after
    }

    /// The handshake on `stream` (whose first bytes may have been read
    /// already, past a PROXY protocol header), within `limit`: a client that
    /// never finishes it holds a connection slot no longer than one that
    /// never sends its head. A client speaking plain HTTP gets a 400 saying
    /// to use HTTPS. `None`: the connection is done with.
    pub async fn accept(&self, mut stream: Rewind, limit: Duration) -> Option<TlsStream<Rewind>> {
        let handshake = async {
            let first = match stream.replay.first() {
                Some(&byte) => byte,
                None => {
                    let mut first = [0u8; 1];
                    if stream.inner.peek(&mut first).await.ok()? == 0 {
                        return None;
                    }
                    first[0]
                }
            };
            if first != HANDSHAKE_RECORD {
                let answer = super::answer::answer_and_close(
                    &mut stream.inner,
                    "400 Bad Request",
                    PLAIN_HTTP_ERROR,
                );
                answer.await;
                return None;
            }
            match self.acceptor.accept(stream).await {
                Ok(tls) => Some(tls),
                Err(e) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    None
                }
            }
        };
        tokio::time::timeout(limit, handshake).await.ok().flatten()
    }
}

/// The chain and key of `files`, with the certificate's expiry (said in
/// the log: soon or past is a warning, not a refusal, as in nginx).
fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let key = certified_key(files, provider)?;
    let not_after = not_after(&key.cert[0]);
    let cert = files.cert.display();
    match not_after.and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok()) {
        None => tracing::warn!(%cert, "cannot read the certificate's expiry"),
        Some(expiry) => {
            let left = expiry - time::OffsetDateTime::now_utc();
            let until = expiry
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            if left.is_negative() {
                tracing::error!(%cert, %until, "the certificate has expired: clients will refuse it");
            } else if left.whole_days() < RENEW_WARNING_DAYS {
                tracing::warn!(%cert, %until, days_left = left.whole_days(), "the certificate expires soon");
            } else {
                tracing::info!(%cert, %until, "certificate loaded");
            }
        }
    }
    Ok(Loaded {
        key: Arc::new(key),
        not_after,
    })
}

/// A certificate's `notAfter` (RFC 5280 §4.1.2.5), Unix seconds: the
/// fields before it are skipped whole, not interpreted.
fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    use yasna::tags::{TAG_GENERALIZEDTIME, TAG_UTCTIME};
    let tbs = yasna::parse_der(cert, |r| {
        r.read_sequence(|r| {
            let tbs = r.next().read_der()?;
            r.next().read_der()?; // signatureAlgorithm
            r.next().read_der()?; // signatureValue
            Ok(tbs)
        })
    })
    .ok()?;
    let until = yasna::parse_der(&tbs, |r| {
        r.read_sequence(|r| {
            r.read_optional(|r| r.read_tagged(yasna::Tag::context(0), |r| r.read_der()))?;
            for _serial_signature_issuer in 0..3 {
                r.next().read_der()?;
            }
            let until = r.next().read_sequence(|r| {
                r.next().read_der()?; // notBefore
                let r = r.next();
                match r.lookahead_tag()? {
                    TAG_UTCTIME => Ok(*r.read_utctime()?.datetime()),
                    TAG_GENERALIZEDTIME => Ok(*r.read_generalized_time()?.datetime()),
                    _ => Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid)),
                }
            })?;
            while r.read_optional(|r| r.read_der())?.is_some() {}
            Ok(until)
        })
    })
    .ok()?;
    Some(until.unix_timestamp())
}

/// The chain and key of `files`, checked to belong together.
fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = pem::read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem::malformed(&files.cert, e))?;
    if chain.is_empty() {
        return Err(pem::no_certificate(&files.cert).into());
    }
    let key = pem::read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| pem::malformed(&files.key, e))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A certificate for 127.0.0.1 and its key, written as PEM files.
    fn pair(dir: &Path, name: &str) -> TlsFiles {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, made.cert.pem()).unwrap();
        std::fs::write(&files.key, made.key_pair.serialize_pem()).unwrap();
        files
    }

    /// A certificate valid until `until`, as DER.
    fn valid_until(until: time::OffsetDateTime) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).unwrap();
        params.not_after = until;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_expiry_is_read_in_both_time_encodings() {
        // RFC 5280: UTCTime through 2049, GeneralizedTime from 2050.
        for until in [
            1_930_367_167, // 2031-03-04 05:06:07 UTC
            2_587_679_999, // 2051-12-31 23:59:59 UTC
            1_577_836_800, // 2020-01-01 00:00:00 UTC
        ] {
            let until = time::OffsetDateTime::from_unix_timestamp(until).unwrap();
            assert_eq!(
                not_after(&valid_until(until)),
                Some(until.unix_timestamp()),
                "{until}"
            );
        }
        assert_eq!(not_after(&CertificateDer::from(vec![0x30, 0x00])), None);
    }

    #[test]
    fn a_matching_pair_loads_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let files = pair(dir.path(), "a");
        let t = Terminator::load(files.clone()).unwrap();
        let before = t.current.0.read().unwrap().key.cert[0].clone();
        let renewed = pair(dir.path(), "b");
        std::fs::rename(&renewed.cert, &files.cert).unwrap();
        std::fs::rename(&renewed.key, &files.key).unwrap();
        t.reload().unwrap();
        assert_ne!(t.current.0.read().unwrap().key.cert[0], before);
    }

    #[test]
    fn bad_files_are_named_and_a_failed_reload_keeps_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let a = pair(dir.path(), "a");
        let b = pair(dir.path(), "b");
        let crossed = TlsFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let e = Terminator::load(crossed).err().unwrap().to_string();
        assert!(e.contains("b.key") && e.contains("does not fit"), "{e}");
        let missing = TlsFiles {
            cert: dir.path().join("none.crt"),
            key: a.key.clone(),
        };
        let e = Terminator::load(missing).err().unwrap().to_string();
        assert!(e.contains("none.crt"), "{e}");
        let swapped = TlsFiles {
            cert: a.key.clone(),
            key: a.cert.clone(),
        };
        let e = Terminator::load(swapped).err().unwrap().to_string();
        assert!(
            e.contains("a.key") && e.contains("no PEM certificate"),
            "{e}"
        );
        let t = Terminator::load(a.clone()).unwrap();
        let before = t.current.0.read().unwrap().key.cert[0].clone();
        std::fs::write(&a.cert, "not a certificate").unwrap();
        assert!(t.reload().is_err());
        assert_eq!(t.current.0.read().unwrap().key.cert[0], before);
    }
}
