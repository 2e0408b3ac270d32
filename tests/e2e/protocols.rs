//! Upstream over HTTPS (with an administrator-supplied CA) and clients over h2c.

use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::common::*;

/// An HTTPS upstream serving one file, with a self-signed certificate for
/// `localhost`. Returns its port and the CA PEM.
async fn tls_upstream(path: String, bytes: bytes::Bytes) -> (u16, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, path, bytes) = (acceptor.clone(), path.clone(), bytes.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let found = req.uri().path() == path;
                        let body = if found {
                            bytes.clone()
                        } else {
                            bytes::Bytes::new()
                        };
                        async move {
                            let status = if found { 200 } else { 404 };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(http_body_util::Full::new(body))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified_against_the_configured_ca() {
    let probe = Harness::new().await;
    let (port, pem) = tls_upstream(probe.b.path.clone(), probe.b.bytes.clone()).await;
    let ca = probe.dir.path().join("mirror-ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let mut catalog = probe.catalog();
    catalog["updates"][1]["files"][0]["url"] =
        format!("https://localhost:{port}{}", probe.b.path).into();

    // Without the CA: the certificate is refused, 502, nothing stored.
    probe.import(&catalog).await;
    probe.set_state(ID_B, "approve").await;
    let r = probe.get(&probe.b.content_path()).await;
    assert_eq!(r.status(), 502);
    assert!(probe.stored().is_empty());

    // With it: fetched over TLS and verified.
    let h = Harness::with(|c| c.fetch.upstream_ca_file = Some(ca.clone())).await;
    h.import(&catalog).await;
    h.set_state(ID_B, "approve").await;
    let r = h.get(&h.b.content_path()).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == h.b.bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_get_the_same_bytes() {
    let h = Harness::new().await;
    h.setup(&[ID_A]).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2
        .get(h.url(&h.a.content_path()))
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == h.a.bytes[100..200]);
    let r = h2.get(h.url(&h.a.content_path())).send().await.unwrap();
    assert!(r.bytes().await.unwrap() == h.a.bytes);
}
