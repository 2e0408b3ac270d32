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

/// Sends raw bytes and reads until the server closes (or 5 s pass).
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let h = Harness::new().await;
    h.setup(&[ID_A]).await;
    assert_eq!(h.get(&h.a.content_path()).await.status(), 200);
    h.settled().await;
    let path = h.a.content_path();
    let mut req = String::new();
    for (i, range) in ["0-99", "1000-1099", "2000-2099"].iter().enumerate() {
        let close = if i == 2 { "Connection: close\r\n" } else { "" };
        req += &format!("GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes={range}\r\n{close}\r\n");
    }
    req += &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"); // after close: never answered
    let out = raw_exchange(h.running().content_addr, req.as_bytes()).await;
    let positions: Vec<usize> = [0usize, 1000, 2000]
        .iter()
        .map(|&s| find(&out, &h.a.bytes[s..s + 100]).expect("every range answered"))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "answers in request order"
    );
    assert_eq!(out.windows(12).filter(|w| w == b"HTTP/1.1 206").count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_dropped_and_huge_heads_refused() {
    let h = Harness::with(|c| c.header_timeout = std::time::Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    let out = raw_exchange(
        h.running().content_addr,
        b"GET /Content/00/x.cab HTTP/1.1\r\nHost: x\r\n",
    )
    .await;
    assert!(
        t.elapsed() < std::time::Duration::from_secs(3),
        "a slow-loris client is dropped"
    );
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let out = raw_exchange(h.running().content_addr, big.as_bytes()).await;
    assert!(
        out.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&out[..out.len().min(100)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_downloads_finish_then_exits() {
    let h = Harness::new().await; // upstream and sample files
    h.upstream.set_rate(3 << 20); // A takes about a second
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_binary(dir.path()).await;
    let http = reqwest::Client::new();
    server.setup(&h, &[ID_A]).await;
    let response = http
        .get(format!("{}{}", server.content, h.a.content_path()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // SIGTERM mid-download.
    assert_eq!(
        unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) },
        0
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        reqwest::get(format!("{}/healthz", server.admin))
            .await
            .is_err(),
        "no new connections after SIGTERM"
    );
    let body = response.bytes().await.unwrap();
    assert!(body == h.a.bytes, "the in-flight response completed");
    let status = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "clean exit: {status}");
    // The download was committed before exit: the next run serves it from the store.
    let mut again = start_binary(dir.path()).await;
    let body = again.body(&h.a.content_path()).await;
    assert!(body == h.a.bytes);
    assert_eq!(h.upstream.requests(&h.a.path), 1);
    again.child.kill().unwrap();
    again.child.wait().unwrap();
}
