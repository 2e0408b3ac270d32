//! Upstream over HTTPS (with an administrator-supplied CA) and through an
//! organisation's proxy; clients over h2c.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

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

/// A forward proxy the test starts, as an organisation's way out: it asks
/// for Basic credentials (407 without the right ones), relays
/// absolute-form requests to their origin and tunnels `CONNECT`, and
/// records each request line.
struct ForwardProxy {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl ForwardProxy {
    async fn start(credentials: &str) -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let token = base64::engine::general_purpose::STANDARD.encode(credentials);
        let recorded = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (token, seen) = (token.clone(), recorded.clone());
                tokio::spawn(async move {
                    let _ = relay(client, &token, &seen).await;
                });
            }
        });
        ForwardProxy { port, seen }
    }

    /// The proxy's URL with `credentials` (percent-encoded as a URL needs).
    fn url(&self, credentials: &str) -> reqwest::Url {
        format!("http://{credentials}@127.0.0.1:{}", self.port)
            .parse()
            .unwrap()
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn relay(client: TcpStream, token: &str, seen: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut client = BufReader::new(client);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if client.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    // The clients here send nothing more before an answer: nothing is buffered.
    let mut client = client.into_inner();
    let request_line = lines.remove(0);
    seen.lock().unwrap().push(request_line.clone());
    let authorized = lines.iter().any(|l| {
        let Some((name, value)) = l.split_once(':') else {
            return false;
        };
        let credentials = value.trim().split_once(' ');
        name.eq_ignore_ascii_case("proxy-authorization")
            && credentials
                .is_some_and(|(scheme, t)| scheme.eq_ignore_ascii_case("basic") && t == token)
    });
    if !authorized {
        let refusal = "HTTP/1.1 407 Proxy Authentication Required\r\n\
                       Proxy-Authenticate: Basic realm=\"corp\"\r\n\
                       Content-Length: 0\r\nConnection: close\r\n\r\n";
        return client.write_all(refusal.as_bytes()).await;
    }
    let mut parts = request_line.split(' ');
    let (method, target, version) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    if method == "CONNECT" {
        let mut origin = TcpStream::connect(target).await?;
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        tokio::io::copy_bidirectional(&mut client, &mut origin).await?;
        return Ok(());
    }
    let url = reqwest::Url::parse(target).expect("absolute-form");
    let mut origin = TcpStream::connect((
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap(),
    ))
    .await?;
    let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
    let mut head = format!("{method} {}{query} {version}\r\n", url.path());
    for line in &lines {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if !matches!(
            name.as_str(),
            "proxy-authorization" | "connection" | "proxy-connection"
        ) {
            head += &format!("{line}\r\n");
        }
    }
    head += "Connection: close\r\n\r\n"; // one request per relayed connection
    origin.write_all(head.as_bytes()).await?;
    tokio::io::copy_bidirectional(&mut client, &mut origin).await?;
    Ok(())
}

/// Plain HTTP goes to the proxy in absolute form, HTTPS by `CONNECT`, both
/// with the URL's credentials (percent-decoded) as Basic
/// `Proxy-Authorization`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_downloads_go_through_the_configured_proxy() {
    let proxy = ForwardProxy::start("upcache:p@ss:word").await;
    let probe = Harness::new().await;
    let (port, pem) = tls_upstream(probe.b.path.clone(), probe.b.bytes.clone()).await;
    let ca = probe.dir.path().join("mirror-ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let url = proxy.url("upcache:p%40ss%3Aword");
    let h = Harness::with(|c| {
        c.fetch.upstream_ca_file = Some(ca.clone());
        c.fetch.upstream_proxy = Some(url.to_string());
    })
    .await;
    let mut catalog = h.catalog();
    catalog["updates"][1]["files"][0]["url"] =
        format!("https://localhost:{port}{}", h.b.path).into();
    assert_eq!(h.import(&catalog).await.status(), 200);
    h.set_state(ID_A, "approve").await;
    h.set_state(ID_B, "approve").await;

    let r = h.get(&h.a.content_path()).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == h.a.bytes);
    let r = h.get(&h.b.content_path()).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == h.b.bytes);

    let seen = proxy.seen();
    let plain = format!("GET {} HTTP/1.1", h.upstream.url(&h.a.path));
    assert_eq!(seen, [plain, format!("CONNECT localhost:{port} HTTP/1.1")]);
    assert_eq!(h.upstream.total_requests(), 1, "through the proxy, once");
    assert_eq!(h.stored().len(), 2);
    let status = h.status().await;
    let shown = format!("http://upcache:***@127.0.0.1:{}/", proxy.port);
    assert_eq!(status["upstream"]["proxy"], shown.as_str(), "{status}");
    assert!(
        !status.to_string().contains("word"),
        "no password in status"
    );
}

/// Wrong credentials: the proxy's 407 is the client's 502 and nothing is
/// stored; a host in `upstream_no_proxy` is reached directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_proxy_is_a_502_and_no_proxy_hosts_go_direct() {
    let proxy = ForwardProxy::start("upcache:right").await;
    let url = proxy.url("upcache:wrong");
    let h = Harness::with(|c| {
        c.fetch.upstream_proxy = Some(url.to_string());
    })
    .await;
    h.setup(&[ID_A]).await;
    let r = h.get(&h.a.content_path()).await;
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("407"));
    assert_eq!(proxy.seen().len(), 1);
    assert_eq!(h.upstream.total_requests(), 0);
    assert!(h.stored().is_empty());

    let direct = Some("upcache-hq.corp.example, 127.0.0.1".to_owned());
    let h = Harness::with(|c| {
        c.fetch.upstream_proxy = Some(url.to_string());
        c.fetch.upstream_no_proxy = direct;
    })
    .await;
    h.setup(&[ID_A]).await;
    let r = h.get(&h.a.content_path()).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == h.a.bytes);
    assert_eq!(proxy.seen().len(), 1, "not through the proxy");
    assert_eq!(h.upstream.total_requests(), 1);
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
    let h = Harness::with(|c| c.net.header_timeout = std::time::Duration::from_millis(300)).await;
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
    within(
        "no new connections after SIGTERM",
        std::time::Duration::from_secs(5),
        async || {
            reqwest::get(format!("{}/healthz", server.admin))
                .await
                .is_err()
        },
    )
    .await;
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
