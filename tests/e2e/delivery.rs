//! Delivery Optimization content (`/filestreamingservice/files/<guid>`)
//! against a fake DO origin: a real HTTP server on loopback that wants an
//! unexpired `P1`, serves ranges and can change its `ETag`, cut
//! connections and refuse a token mid-file. upcache reaches it as its
//! `upstream_proxy`, so clients can name Microsoft's real origin hosts (the
//! proxy resolves names; upcache checks the name alone).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::common::*;

pub const GUID: &str = "2f7c5a3e-1b2d-4c1e-9f00-0123456789ab";
pub const ORIGIN: &str = "7.tlu.dl.delivery.mp.microsoft.com";
const PROBE: &str =
    "/filestreamingservice/files/7bc846e0-af9c-49be-a03d-bb04428c9bb5/Microsoft.png";

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// What the fake origin does.
#[derive(Default)]
pub struct OriginState {
    objects: Mutex<HashMap<String, Bytes>>,
    /// The object's `ETag` (empty: none sent).
    etag: Mutex<String>,
    /// Tokens with `P1` below this are expired (403).
    min_p1: AtomicU64,
    /// Cut the next body after this many bytes (0: never), once.
    cut_after: AtomicU64,
    /// Only a body whose range starts here or later is cut (0: any).
    cut_from: AtomicU64,
    /// A range it cannot satisfy is a 416, as RFC 9110 has it (by default
    /// the whole object is sent instead, as many servers do).
    strict_ranges: AtomicBool,
    /// A 206 says `bytes first-last/*`: the length withheld.
    hide_total: AtomicBool,
    /// A 206 carries at most this many bytes, whatever was asked (0: no
    /// cap), as some CDNs cap a range.
    max_range: AtomicU64,
    /// A range's end is ignored, but for one from the first byte: its 206
    /// runs to the object's end.
    ignore_range_end: AtomicBool,
    /// When cutting, switch to this ETag.
    etag_after_cut: Mutex<Option<String>>,
    /// When cutting, expire tokens below this `P1`.
    min_p1_after_cut: AtomicU64,
    /// Bytes per second per response (0: unthrottled).
    rate: AtomicU64,
    /// Every request gets no answer at all (the connection stays open).
    pub hang: AtomicBool,
    /// Every body stops after this many bytes and sends nothing more, the
    /// connection left open (0: never).
    pub stall_after: AtomicU64,
    /// Every body is cut after this many bytes by a reset (RST), as is
    /// every new connection at once with `reset_connections` (0: never).
    pub reset_after: AtomicU64,
    pub reset_connections: AtomicBool,
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub body_bytes: AtomicU64,
    pub refused_tokens: AtomicU64,
    /// Request targets seen (absolute form: through a proxy).
    pub targets: Mutex<Vec<String>>,
    /// Their `Range` headers, in the same order.
    pub ranges: Mutex<Vec<Option<String>>>,
    /// Their methods, in the same order.
    pub methods: Mutex<Vec<String>>,
    /// `CONNECT` targets (over TLS, as a proxy's tunnel that ends here).
    pub connects: Mutex<Vec<String>>,
}

pub struct DoOrigin {
    pub addr: SocketAddr,
    pub state: Arc<OriginState>,
}

impl DoOrigin {
    pub async fn start() -> DoOrigin {
        Self::start_on("127.0.0.1:0").await
    }

    /// On `addr` (port 80 of a loopback address, for direct fetches).
    pub async fn start_on(addr: &str) -> DoOrigin {
        Self::listen(addr, None).await
    }

    /// Over TLS on `addr`, with a certificate for [`ORIGIN`] and `ip`
    /// signed by a private CA whose PEM is written to `ca`. As
    /// `upstream_proxy` it also takes `CONNECT` and ends the tunnel
    /// itself, so `https://{ORIGIN}/...` through it reaches it.
    pub async fn start_tls(addr: &str, ip: &str, ca: &std::path::Path) -> DoOrigin {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fake DO origin CA");
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![ORIGIN.to_owned(), ip.to_owned()])
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        std::fs::write(ca, ca_cert.pem()).unwrap();
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], der)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::listen(addr, Some(acceptor)).await
    }

    async fn listen(addr: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> DoOrigin {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(OriginState {
            etag: Mutex::new("\"v1\"".into()),
            ..OriginState::default()
        });
        let s = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let reset = s.reset_connections.load(Ordering::SeqCst);
                if reset || s.reset_after.load(Ordering::SeqCst) > 0 {
                    // Closed (or dropped by hyper on a body error) with RST.
                    tcp.set_zero_linger().unwrap();
                }
                if reset {
                    drop(tcp);
                    continue;
                }
                let (s, tls) = (s.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve(s, tcp).await,
                        Some(acceptor) => {
                            let Some(tcp) = connect_tunnel(&s, tcp).await else {
                                return;
                            };
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                serve(s, tls).await;
                            }
                        }
                    }
                });
            }
        });
        DoOrigin { addr, state }
    }

    pub fn add(&self, path: &str, bytes: Bytes) {
        self.state
            .objects
            .lock()
            .unwrap()
            .insert(path.into(), bytes);
    }

    /// As `upstream_proxy`.
    pub fn proxy(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn body_bytes(&self) -> u64 {
        self.state.body_bytes.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }
}

/// HTTP/1.1 on `io`, answered by [`answer`] (or never, with `hang`).
async fn serve<I>(s: Arc<OriginState>, io: I)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let s = s.clone();
        async move {
            let r = answer(&s, req);
            if s.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            Ok::<_, Infallible>(r)
        }
    });
    let io = hyper_util::rt::TokioIo::new(io);
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

/// A connection that starts with `CONNECT host:port`: the target recorded
/// and `200` answered, then the TLS the client starts is ours. Anything
/// else is left as it is (a TLS client straight to us).
async fn connect_tunnel(
    s: &OriginState,
    mut tcp: tokio::net::TcpStream,
) -> Option<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut first = [0u8; 1];
    tcp.peek(&mut first).await.ok()?;
    if first[0] != b'C' {
        return Some(tcp);
    }
    // Byte by byte: the client sends nothing past the head before our 200.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        head.push(tcp.read_u8().await.ok()?);
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split(' ').nth(1).unwrap_or("").to_owned();
    s.connects.lock().unwrap().push(target);
    tcp.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .ok()?;
    Some(tcp)
}

fn p1(query: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("P1="))
        .and_then(|v| v.parse().ok())
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(
        http_body_util::Empty::new()
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = code;
    r
}

/// A branch's resume that reaches its HQ after the HQ stored the object:
/// the origin gave no `ETag`, so the HQ tagged the download
/// `W/"upcache-downloading"` and tags the stored bytes `"sha256:…"`. The
/// branch goes on (the same bytes), it does not take it for a change. A
/// relay between them cuts the branch's first answer after 1 MiB and holds
/// every later connection until the HQ has stored the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_resuming_after_its_hq_stored_the_object_goes_on() {
    let origin = DoOrigin::start().await;
    let data = object(4 << 20);
    origin.add(&object_path(), data.clone());
    origin.state.etag.lock().unwrap().clear();
    origin.state.rate.store(2 << 20, Ordering::SeqCst);
    let hq = harness(&origin).await;
    let relay = CuttingRelay::start(hq.running().content_addr, 1 << 20).await;
    let branch_upstream: reqwest::Url = format!("http://{}/", relay.addr).parse().unwrap();
    let branch = Harness::with(move |c| c.fetch.upstream = Some(branch_upstream)).await;
    let url = branch.url(&do_url(8_600));
    let got = tokio::spawn(async move { reqwest::get(url).await?.bytes().await });
    hq.eventually("HQ stores it", |h| !h.stored().is_empty())
        .await;
    relay.release.store(true, Ordering::SeqCst);
    assert!(got.await.unwrap().unwrap() == data, "byte-exact");
    assert!(
        relay.connections.load(Ordering::SeqCst) >= 2,
        "the branch resumed on a connection of its own"
    );
    branch
        .eventually("the branch stores it", |h| !h.stored().is_empty())
        .await;
    assert_eq!(branch.counter("upcache_do_identity_changed_total").await, 0);
    assert_eq!(branch.stored(), hq.stored(), "under the HQ's SHA-256");
    assert_eq!(
        origin.body_bytes(),
        data.len() as u64,
        "the origin sent it once"
    );
}

/// A TCP relay to `to`: its first connection is cut after `cut` bytes
/// from `to`; later ones wait for `release`, then pass everything.
struct CuttingRelay {
    addr: SocketAddr,
    release: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
}

impl CuttingRelay {
    async fn start(to: SocketAddr, cut: u64) -> CuttingRelay {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let release = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let (held, count) = (release.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let first = count.fetch_add(1, Ordering::SeqCst) == 0;
                let held = held.clone();
                tokio::spawn(async move {
                    while !first && !held.load(Ordering::SeqCst) {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    let mut server = tokio::net::TcpStream::connect(to).await.unwrap();
                    if !first {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                    let (mut from_client, mut to_client) = client.into_split();
                    let (from_server, mut to_server) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                    });
                    let _ = tokio::io::copy(&mut from_server.take(cut), &mut to_client).await;
                    // Dropping both halves ends the connection mid-body.
                });
            }
        });
        CuttingRelay {
            addr,
            release,
            connections,
        }
    }
}

fn answer(s: &Arc<OriginState>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    s.requests.fetch_add(1, Ordering::SeqCst);
    s.targets.lock().unwrap().push(req.uri().to_string());
    let range = req.headers().get("range").and_then(|v| v.to_str().ok());
    s.ranges.lock().unwrap().push(range.map(str::to_owned));
    s.methods.lock().unwrap().push(req.method().to_string());
    let query = req.uri().query().unwrap_or("");
    if p1(query).unwrap_or(0) < s.min_p1.load(Ordering::SeqCst) {
        s.refused_tokens.fetch_add(1, Ordering::SeqCst);
        return status(StatusCode::FORBIDDEN);
    }
    let Some(bytes) = s.objects.lock().unwrap().get(req.uri().path()).cloned() else {
        return status(StatusCode::NOT_FOUND);
    };
    let etag = s.etag.lock().unwrap().clone();
    let len = bytes.len() as u64;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let if_range_ok = header("if-range").is_none_or(|v| v == etag);
    let range = header("range")
        .filter(|_| if_range_ok)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            let start: u64 = a.parse().ok()?;
            let ignored = start > 0 && s.ignore_range_end.load(Ordering::SeqCst);
            let end: u64 = if b.is_empty() || ignored {
                len.saturating_sub(1)
            } else {
                b.parse().ok()?
            };
            let cap = s.max_range.load(Ordering::SeqCst);
            let end = if cap > 0 {
                end.min(start + cap - 1)
            } else {
                end
            };
            (start <= end && (end < len || s.strict_ranges.load(Ordering::SeqCst)))
                .then_some((start, (end + 1).min(len)))
        });
    if range.is_some_and(|(a, b)| a >= b) {
        let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE);
        r.headers_mut()
            .insert("content-range", format!("bytes */{len}").parse().unwrap());
        return r;
    }
    let (code, start, end) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b),
        None => (StatusCode::OK, 0, len),
    };
    let cut_here = start >= s.cut_from.load(Ordering::SeqCst);
    let cut = match s.reset_after.load(Ordering::SeqCst) {
        0 if cut_here => s.cut_after.swap(0, Ordering::SeqCst),
        0 => 0,
        reset => reset,
    };
    let stall = s.stall_after.load(Ordering::SeqCst);
    let rate = s.rate.load(Ordering::SeqCst);
    let body = bytes.slice(start as usize..end as usize);
    let state = s.clone();
    let stream = futures_util::stream::unfold((body, 0u64), move |(rest, sent)| {
        let state = state.clone();
        async move {
            if rest.is_empty() {
                return None;
            }
            if stall > 0 && sent >= stall {
                std::future::pending::<()>().await;
            }
            if cut > 0 && sent >= cut {
                // The cut: what the origin does next takes effect now.
                if let Some(e) = state.etag_after_cut.lock().unwrap().take() {
                    *state.etag.lock().unwrap() = e;
                }
                let min = state.min_p1_after_cut.swap(0, Ordering::SeqCst);
                if min > 0 {
                    state.min_p1.store(min, Ordering::SeqCst);
                }
                return Some((Err(std::io::Error::other("cut")), (Bytes::new(), sent)));
            }
            let mut n = rest.len().min(64 << 10);
            for limit in [cut, stall].into_iter().filter(|&l| l > 0) {
                n = n.min((limit - sent) as usize);
            }
            if rate > 0 {
                tokio::time::sleep(std::time::Duration::from_secs_f64(n as f64 / rate as f64))
                    .await;
            }
            state.body_bytes.fetch_add(n as u64, Ordering::SeqCst);
            let chunk = rest.slice(..n);
            Some((Ok(Frame::data(chunk)), (rest.slice(n..), sent + n as u64)))
        }
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    *r.status_mut() = code;
    let h = r.headers_mut();
    if !etag.is_empty() {
        h.insert("etag", etag.parse().unwrap());
    }
    h.insert("content-length", (end - start).into());
    h.insert("accept-ranges", "bytes".parse().unwrap());
    if code == StatusCode::PARTIAL_CONTENT {
        h.insert(
            "content-range",
            match s.hide_total.load(Ordering::SeqCst) {
                true => format!("bytes {start}-{}/*", end - 1),
                false => format!("bytes {start}-{}/{len}", end - 1),
            }
            .parse()
            .unwrap(),
        );
    }
    r
}

pub fn object_path() -> String {
    format!("/filestreamingservice/files/{GUID}")
}

/// A DO client's URL: the path, its own token, the origin appended.
pub fn do_url(p1: u64) -> String {
    format!(
        "{}?P1={p1}&P2=404&P3=2&P4=dG9rZW4{p1}&cacheHostOrigin={ORIGIN}",
        object_path()
    )
}

pub fn object(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(7) as u8)
        .collect::<Vec<_>>()
        .into()
}

async fn harness(origin: &DoOrigin) -> Harness {
    let proxy = origin.proxy();
    Harness::with(move |c| c.fetch.upstream_proxy = Some(proxy)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_tokens_one_download_and_every_range_byte_exact() {
    let origin = DoOrigin::start().await;
    let data = object(64 << 20);
    origin.add(&object_path(), data.clone());
    // A range the download would reach later than far_ahead_wait at its
    // measured rate goes to the origin on its own, by design
    // (tests/e2e/waits.rs). On a loaded machine (a debug build hashing
    // 64 MiB beside other builds, the writer thread descheduled for a
    // window) the rate can fall low enough for the 63 MiB ahead of it to
    // take over 60 s, the wait this test had. A day takes a rate under
    // 800 B/s, which the stall watchdog cuts first: here only the one
    // download reaches the origin, however slow the machine.
    let proxy = origin.proxy();
    let h = Harness::with(move |c| {
        c.fetch.upstream_proxy = Some(proxy);
        c.fetch.far_ahead_wait = std::time::Duration::from_secs(86_400);
    })
    .await;
    // 20 clients, each with its own token, ask for the 64 ranges of 1 MiB
    // in shuffled order, 16 each, every range asked at least once.
    let mut tasks = Vec::new();
    for client in 0..20u64 {
        let http = h.http.clone();
        let url = h.url(&do_url(2_000_000_000 + client));
        let data = data.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..16u64 {
                let i = (client * 16 + k * 37 + client * client) % 64;
                let range = format!("bytes={}-{}", i << 20, ((i + 1) << 20) - 1);
                let r = http.get(&url).header("range", &range).send().await.unwrap();
                assert_eq!(r.status(), 206, "{range}");
                let body = r.bytes().await.unwrap();
                assert!(
                    body == data.slice((i << 20) as usize..((i + 1) << 20) as usize),
                    "{range}"
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The download's end: stored, indexed and counted (the store publishes
    // the file before the index and the counter are updated, and the
    // download leaves the fetcher's table after both). A 64 MiB commit on
    // a loaded disk may take longer than `eventually`'s 10 s.
    within(
        "the download's end",
        std::time::Duration::from_secs(120),
        async || h.running().app.fetcher.status().is_empty(),
    )
    .await;
    assert_eq!(h.stored().len(), 1);
    assert_eq!(
        origin.body_bytes(),
        64 << 20,
        "the origin sent the object once"
    );
    // One download, in eight parts of 8 MiB side by side: a request each.
    assert_eq!(origin.state.requests.load(Ordering::SeqCst), 8);
    // Warm: from the store, with yet another token; the query is not the key.
    let r = h.get_range(&do_url(2_100_000_000), "bytes=0-1048575").await;
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == data.slice(..1 << 20));
    assert_eq!(origin.state.requests.load(Ordering::SeqCst), 8);
    assert_eq!(
        h.counter("upcache_do_stored_total{verification=\"unverified\"}")
            .await,
        1
    );
    // cacheHostOrigin went nowhere: the origin saw its own name and the token.
    let target = origin.state.targets.lock().unwrap()[0].clone();
    assert!(
        target.starts_with(&format!(
            "http://{ORIGIN}/filestreamingservice/files/{GUID}?P1="
        )),
        "{target}"
    );
    assert!(!target.contains("cacheHostOrigin"), "{target}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_mid_download_is_continued_by_the_next_clients() {
    let origin = DoOrigin::start().await;
    let data = object(4 << 20);
    origin.add(&object_path(), data.clone());
    origin.state.rate.store(4 << 20, Ordering::SeqCst);
    // The first token is refused from the cut on.
    origin.state.cut_after.store(1 << 20, Ordering::SeqCst);
    origin.state.min_p1_after_cut.store(1_500, Ordering::SeqCst);
    let h = harness(&origin).await;
    let first = tokio::spawn({
        let (http, url) = (h.http.clone(), h.url(&do_url(1_000)));
        async move { http.get(url).send().await.unwrap().bytes().await }
    });
    h.eventually("the old token is refused on resume", |_| {
        origin.state.refused_tokens.load(Ordering::SeqCst) > 0
    })
    .await;
    let second = h.get(&do_url(2_000)).await;
    assert_eq!(second.status(), 200);
    assert!(second.bytes().await.unwrap() == data);
    assert!(
        first.await.unwrap().unwrap() == data,
        "the first client got every byte too"
    );
    // Resumed from the bytes upcache received (the cut loses what was in
    // flight), not restarted.
    assert!(origin.body_bytes() < 5 << 20, "{}", origin.body_bytes());
    assert!(origin.state.requests.load(Ordering::SeqCst) >= 3);
    h.eventually("the object is stored", |h| !h.stored().is_empty())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_with_nothing_stored_and_a_missing_object_are_502() {
    let origin = DoOrigin::start().await;
    origin.add(&object_path(), object(1000));
    origin.state.min_p1.store(5_000, Ordering::SeqCst);
    let h = harness(&origin).await;
    assert_eq!(h.get(&do_url(1_000)).await.status(), 502);
    // A fresh token then works: the refusal stored and banned nothing.
    let r = h.get(&do_url(6_000)).await;
    assert_eq!(r.status(), 200);
    let other = format!(
        "/filestreamingservice/files/{}?P1=6000&cacheHostOrigin={ORIGIN}",
        "00000000-0000-4000-8000-000000000000"
    );
    assert_eq!(
        h.get(&other).await.status(),
        502,
        "an origin 404 is the client's 502"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etag_change_mid_file_stores_nothing() {
    let origin = DoOrigin::start().await;
    let data = object(3 << 20);
    origin.add(&object_path(), data.clone());
    origin.state.cut_after.store(1 << 20, Ordering::SeqCst);
    *origin.state.etag_after_cut.lock().unwrap() = Some("\"v2\"".into());
    let h = harness(&origin).await;
    let r = h.get(&do_url(3_000_000_000)).await;
    let status = r.status();
    let body = r.bytes().await;
    assert!(
        status != 200 || body.is_err(),
        "no complete body for a changed object"
    );
    assert_eq!(h.counter("upcache_do_identity_changed_total").await, 1);
    assert!(h.stored().is_empty(), "nothing stored");
    // The next request starts afresh and stores the object as it now is.
    let r = h.get(&do_url(3_000_000_001)).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == data);
}

/// Each refusal: a 4xx, counted by reason, and no connection to the origin.
async fn refused(query: &str, code: u16, reason: &str) {
    let origin = DoOrigin::start().await;
    origin.add(&object_path(), object(1000));
    let h = harness(&origin).await;
    let r = h.get(&format!("{}?{query}", object_path())).await;
    assert_eq!(r.status(), code, "{query}: {}", r.text().await.unwrap());
    let series = format!("upcache_do_refused_total{{reason=\"{reason}\"}}");
    assert_eq!(h.counter(&series).await, 1, "{query}");
    assert_eq!(origin.connections(), 0, "{query}: an upstream connection");
}

#[tokio::test]
async fn ssrf_a_missing_origin_is_refused() {
    refused("P1=9999999999&P2=404", 400, "missing").await;
}

#[tokio::test]
async fn ssrf_a_duplicate_origin_is_refused() {
    refused(
        &format!("P1=1&cacheHostOrigin={ORIGIN}&cacheHostOrigin=evil.example"),
        400,
        "duplicate",
    )
    .await;
}

#[tokio::test]
async fn ssrf_a_percent_encoded_origin_is_refused() {
    refused(
        "P1=1&cacheHostOrigin=7.tlu.dl.delivery.mp.microsoft%2Ecom",
        400,
        "encoded",
    )
    .await;
}

#[tokio::test]
async fn ssrf_userinfo_is_refused() {
    refused(
        &format!("P1=1&cacheHostOrigin=evil.example@{ORIGIN}"),
        400,
        "userinfo",
    )
    .await;
}

#[tokio::test]
async fn ssrf_a_port_is_refused() {
    refused(&format!("P1=1&cacheHostOrigin={ORIGIN}:8080"), 400, "port").await;
}

#[tokio::test]
async fn ssrf_an_ip_literal_is_refused() {
    refused("P1=1&cacheHostOrigin=127.0.0.1", 403, "address").await;
}

#[tokio::test]
async fn ssrf_a_loopback_name_is_refused() {
    refused("P1=1&cacheHostOrigin=localhost", 403, "not_allowed").await;
}

#[tokio::test]
async fn ssrf_a_name_outside_the_patterns_is_refused() {
    refused(
        "P1=1&cacheHostOrigin=dl.delivery.mp.microsoft.com.evil.example",
        403,
        "not_allowed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcc_health_probe_is_served_from_the_origin_and_cached() {
    let origin = DoOrigin::start().await;
    let png = Bytes::from_static(b"\x89PNG\r\n\x1a\nprobe");
    origin.add(PROBE, png.clone());
    let h = harness(&origin).await;
    let url = format!("{PROBE}?cacheHostOrigin=dl.delivery.mp.microsoft.com");
    let r = h.get(&url).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert!(r.bytes().await.unwrap() == png);
    h.eventually("the probe is stored", |h| !h.stored().is_empty())
        .await;
    let again = h.get(&url).await;
    assert_eq!(again.status(), 200);
    assert!(again.bytes().await.unwrap() == png);
    assert_eq!(origin.state.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_mid_object_then_a_restart_fetches_it_whole_and_keeps_it() {
    let requests_before_the_kill = kill_mid_object_then_restart(8 << 20).await;
    assert_eq!(requests_before_the_kill, 1, "8 MiB is fetched in one piece");
}

/// A large object is fetched in parts side by side, each written at its
/// own offsets: a temp file killed mid-way has holes. None of it may
/// survive as the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_mid_object_in_parts_then_a_restart_fetches_it_whole_and_keeps_it() {
    let requests_before_the_kill = kill_mid_object_then_restart(48 << 20).await;
    assert!(
        requests_before_the_kill > 2,
        "parts were under way at the kill: {requests_before_the_kill} requests"
    );
}

/// Starts a download of an object of `len` bytes from an origin paced to
/// 8 MiB/s a response, kills the server with SIGKILL once 2 MiB have been
/// sent, restarts it, and checks that nothing partial survived, that the
/// object is then fetched byte-exact, and that a second restart serves it
/// from the store. Returns the origin's requests before the kill.
async fn kill_mid_object_then_restart(len: usize) -> u64 {
    let origin = DoOrigin::start().await;
    let data = object(len);
    origin.add(&object_path(), data.clone());
    origin.state.rate.store(8 << 20, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let proxy = format!("http://{}", origin.addr);
    let spawn = |dir: std::path::PathBuf, proxy: String| {
        tokio::task::spawn_blocking(move || {
            spawn_server_args(
                &dir,
                &["--upstream-proxy", &proxy],
                std::process::Stdio::null(),
            )
        })
    };
    let mut server = spawn(dir.path().to_owned(), proxy.clone()).await.unwrap();
    let url = format!("{}{}", server.content, do_url(4_000_000_000));
    let download = tokio::spawn(reqwest::get(url));
    for _ in 0..200 {
        if origin.body_bytes() > 2 << 20 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(origin.body_bytes() > 2 << 20, "the download was under way");
    server.child.kill().unwrap(); // SIGKILL mid-object
    server.child.wait().unwrap();
    let requests_before_the_kill = origin.requests();
    assert!(
        origin.body_bytes() < len as u64,
        "killed before the origin had sent it all"
    );
    let _ = download.await;
    drop(server);

    let server = spawn(dir.path().to_owned(), proxy.clone()).await.unwrap();
    let leftovers = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "no partial object survives a restart");
    assert!(
        server.body(&do_url(4_000_000_001)).await == data,
        "byte-exact after the kill"
    );
    let requests = origin.requests();
    drop(server);

    // Stored and indexed: a restart serves it without the origin.
    let server = spawn(dir.path().to_owned(), proxy).await.unwrap();
    assert!(server.body(&do_url(4_000_000_002)).await == data);
    assert_eq!(origin.requests(), requests);
    drop(server);
    requests_before_the_kill
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_do_objects_that_no_catalog_entry_names() {
    let origin = DoOrigin::start().await;
    let data = object(100_000);
    origin.add(&object_path(), data.clone());
    let mut h = harness(&origin).await;
    assert!(h.get(&do_url(5_000_000_000)).await.bytes().await.unwrap() == data);
    h.eventually("the object is stored", |h| !h.stored().is_empty())
        .await;
    h.server.take().unwrap().shutdown().await;
    let dir = h.dir.path().to_str().unwrap().to_owned();
    let gc = run_cli(&["gc", "--yes", "--data-dir", &dir], &[]).await;
    assert!(gc.ok, "{}", gc.stderr);
    h.restart_stopped().await;
    assert_eq!(h.stored().len(), 1, "gc removed a DO object: {}", gc.stdout);
    assert!(h.get(&do_url(5_000_000_001)).await.bytes().await.unwrap() == data);
    assert_eq!(origin.state.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_a_name_answering_loopback_is_refused_without_a_proxy() {
    let origin = DoOrigin::start().await;
    let h = Harness::with(|c| c.delivery.do_origins = vec!["localhost".into()]).await;
    let r = h
        .get(&format!("{}?P1=1&cacheHostOrigin=localhost", object_path()))
        .await;
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
    let series = "upcache_do_refused_total{reason=\"private_answer\"}";
    assert_eq!(h.counter(series).await, 1);
    assert_eq!(origin.connections(), 0);
}

/// Port 80 of a loopback address of its own: needs root (as DO's real
/// origins are on port 80, upcache sends no port).
async fn direct_origin(last: u8) -> Option<DoOrigin> {
    if std::net::TcpListener::bind(("127.0.0.1", 0)).is_ok()
        && std::net::TcpListener::bind((format!("127.0.9.{last}").as_str(), 80)).is_err()
    {
        eprintln!("SKIPPED: binding port 80 needs root");
        return None;
    }
    Some(DoOrigin::start_on(&format!("127.0.9.{last}:80")).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_inside_do_origin_networks_is_fetched_directly() {
    let Some(origin) = direct_origin(1).await else {
        return;
    };
    let data = object(300_000);
    origin.add(&object_path(), data.clone());
    let h =
        Harness::with(|c| c.delivery.do_origin_networks = vec!["127.0.9.0/24".parse().unwrap()])
            .await;
    let url = format!("{}?P1=7&cacheHostOrigin=127.0.9.1", object_path());
    let r = h.get_range(&url, "bytes=1000-1999").await;
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == data.slice(1000..2000));
    let target = origin.state.targets.lock().unwrap()[0].clone();
    assert_eq!(
        target,
        format!("{}?P1=7", object_path()),
        "origin-form, query kept"
    );
    // Outside the networks: refused, no connection.
    let before = origin.connections();
    let r = h
        .get(&format!("{}?P1=7&cacheHostOrigin=127.0.8.1", object_path()))
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(origin.connections(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_relays_ranges_and_stores_nothing_and_off_is_404() {
    let origin = DoOrigin::start().await;
    let data = object(200_000);
    origin.add(&object_path(), data.clone());
    let proxy = origin.proxy();
    let mut h = Harness::with(move |c| {
        c.fetch.upstream_proxy = Some(proxy);
        c.delivery.delivery_optimization = upcache::delivery::Mode::PassThrough;
    })
    .await;
    for _ in 0..2 {
        let r = h.get_range(&do_url(9_000), "bytes=100-199").await;
        assert_eq!(r.status(), 206);
        assert_eq!(r.headers()["content-range"], "bytes 100-199/200000");
        assert!(r.bytes().await.unwrap() == data.slice(100..200));
    }
    assert_eq!(
        origin.state.requests.load(Ordering::SeqCst),
        2,
        "relayed each time"
    );
    assert!(h.stored().is_empty());
    let status = h.status().await;
    assert_eq!(status["delivery"]["mode"], "pass-through", "{status}");
    h.restart_with(|c| c.delivery.delivery_optimization = upcache::delivery::Mode::Off)
        .await;
    assert_eq!(h.get(&do_url(9_000)).await.status(), 404);
    assert_eq!(origin.state.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_digest_verifies_the_object_and_the_log_marks_unverified_ones() {
    use sha2::Digest as _;
    let origin = DoOrigin::start().await;
    let good = object(2 << 20);
    let guid2 = "00000000-0000-4000-8000-0000000000b2";
    let other = format!("/filestreamingservice/files/{guid2}");
    origin.add(&object_path(), good.clone());
    origin.add(&other, good.clone());
    let log = tempfile::NamedTempFile::new().unwrap();
    let (proxy, log_path) = (origin.proxy(), log.path().display().to_string());
    let h = Harness::with(move |c| {
        c.fetch.upstream_proxy = Some(proxy);
        c.access_log.access_log = log_path;
    })
    .await;
    let bind = |path: &str, sha256: String| {
        let body = serde_json::json!({ "path": path, "sha256": sha256 });
        h.http
            .put(h.admin("/api/v1/delivery/digests"))
            .json(&body)
            .send()
    };
    // The right digest: verified and stored as such.
    let right = hex::encode(sha2::Sha256::digest(&good));
    assert_eq!(bind(&object_path(), right).await.unwrap().status(), 200);
    assert!(h.get(&do_url(7_000)).await.bytes().await.unwrap() == good);
    // A wrong one: the body never completes and nothing is stored.
    assert_eq!(bind(&other, "ab".repeat(32)).await.unwrap().status(), 200);
    let r = h
        .get(&format!("{other}?P1=7000&cacheHostOrigin={ORIGIN}"))
        .await;
    assert!(r.bytes().await.is_err(), "a wrong object's body is cut");
    let status = h.status().await;
    assert_eq!(status["delivery"]["verified_objects"], 1, "{status}");
    assert_eq!(status["delivery"]["unverified_objects"], 0, "{status}");
    assert_eq!(status["delivery"]["mode"], "cache");
    assert_eq!(h.stored().len(), 1);
    // An object with no digest is marked in the access log.
    let probe = format!("{PROBE}?cacheHostOrigin=dl.delivery.mp.microsoft.com");
    origin.add(PROBE, Bytes::from_static(b"png"));
    assert_eq!(h.get(&probe).await.status(), 200);
    h.running().flush_access_log().await;
    let text = std::fs::read_to_string(log.path()).unwrap();
    let marked: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with(" UNVERIFIED"))
        .collect();
    assert_eq!(marked.len(), 1, "{text}");
    assert!(marked[0].contains("Microsoft.png"), "{text}");
    let bad = h.put_digest_status("/Content/0A/x.cab").await;
    assert_eq!(bad, 400);
}

impl Harness {
    async fn put_digest_status(&self, path: &str) -> u16 {
        let body = serde_json::json!({ "path": path, "sha256": "ab".repeat(32) });
        let r = self
            .http
            .put(self.admin("/api/v1/delivery/digests"))
            .json(&body)
            .send();
        r.await.unwrap().status().as_u16()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_objects_beyond_do_max_bytes_are_evicted_least_recently_served_first() {
    let origin = DoOrigin::start().await;
    let paths: Vec<String> = (1..=3)
        .map(|i| format!("/filestreamingservice/files/00000000-0000-4000-8000-00000000000{i}"))
        .collect();
    for (i, p) in paths.iter().enumerate() {
        origin.add(p, object(100_000 + i));
    }
    let proxy = origin.proxy();
    let h = Harness::with(move |c| {
        c.fetch.upstream_proxy = Some(proxy);
        c.delivery.do_max_bytes = Some(250_000);
    })
    .await;
    let get = |p: &str| {
        let url = format!("{p}?P1=1&cacheHostOrigin={ORIGIN}");
        let h = &h;
        async move {
            let r = h.get(&url).await;
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap().len()
        }
    };
    get(&paths[0]).await;
    get(&paths[1]).await;
    get(&paths[0]).await; // the first is now the more recently served
    assert_eq!(origin.state.requests.load(Ordering::SeqCst), 2);
    get(&paths[2]).await; // over 250,000: the second goes
    let status = h.status().await;
    assert_eq!(status["delivery"]["unverified_objects"], 2, "{status}");
    assert_eq!(h.stored().len(), 2);
    get(&paths[0]).await;
    assert_eq!(
        origin.state.requests.load(Ordering::SeqCst),
        3,
        "the first was kept"
    );
    get(&paths[1]).await;
    assert_eq!(
        origin.state.requests.load(Ordering::SeqCst),
        4,
        "the second was evicted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_below_an_hq_upcache_caches_do_objects_at_both_tiers() {
    let origin = DoOrigin::start().await;
    let data = object(500_000);
    origin.add(&object_path(), data.clone());
    let hq = harness(&origin).await;
    let hq_url: reqwest::Url = hq.url("/").parse().unwrap();
    let branch = Harness::with(move |c| c.fetch.upstream = Some(hq_url)).await;
    let r = branch.get_range(&do_url(8_000), "bytes=0-99").await;
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == data.slice(..100));
    branch
        .eventually("the branch stores it", |h| !h.stored().is_empty())
        .await;
    hq.eventually("HQ stores it", |h| !h.stored().is_empty())
        .await;
    // HQ got the client's query, cacheHostOrigin included, and checked it.
    assert_eq!(origin.state.requests.load(Ordering::SeqCst), 1);
    let target = origin.state.targets.lock().unwrap()[0].clone();
    assert!(
        target.contains("P1=8000") && !target.contains("cacheHostOrigin"),
        "{target}"
    );
    assert_eq!(hq.content_requests("miss").await, 1);
    // Another branch client, another token: the branch's own store.
    let again = branch.get(&do_url(8_001)).await;
    assert!(again.bytes().await.unwrap() == data);
    assert_eq!(
        hq.content_requests("miss").await + hq.content_requests("hit").await,
        1
    );
    // A refused origin is refused at the branch, before HQ hears of it.
    let r = branch
        .get(&format!(
            "{}?P1=1&cacheHostOrigin=evil.example",
            object_path()
        ))
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(hq.content_requests("refused").await, 0);
}

/// A file an update names at a DO URL (its location in an imported
/// catalog, as in synced update metadata) binds the object to the file's
/// SHA-1: the download is verified against it, and a wrong SHA-1 cuts the
/// body and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_file_at_a_do_url_verifies_its_object() {
    use sha1::Digest as _;
    let origin = DoOrigin::start().await;
    let good = object(1 << 20);
    let guid2 = "00000000-0000-4000-8000-0000000000c2";
    let other = format!("/filestreamingservice/files/{guid2}");
    origin.add(&object_path(), good.clone());
    origin.add(&other, good.clone());
    let h = harness(&origin).await;
    let file = |path: &str, sha1: String| {
        serde_json::json!({
            "name": "windows11.0-kb5099999-x64.esd",
            "sha1": sha1,
            "size": good.len(),
            "url": format!("http://{ORIGIN}{path}?P1=1&P2=2"),
        })
    };
    let catalog = serde_json::json!({"updates": [
        {"id": "do-right", "title": "right", "files": [file(&object_path(), hex::encode(sha1::Sha1::digest(&good)))]},
        {"id": "do-wrong", "title": "wrong", "files": [file(&other, "ab".repeat(20))]},
    ]});
    assert_eq!(h.import(&catalog).await.status(), 200);
    // The import's learning runs beside it.
    for _ in 0..200 {
        if h.status().await["delivery"]["known_objects"] == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(h.status().await["delivery"]["known_objects"], 2);
    assert!(h.get(&do_url(8_000)).await.bytes().await.unwrap() == good);
    h.eventually("stored", |h| !h.stored().is_empty()).await;
    let r = h
        .get(&format!("{other}?P1=8000&cacheHostOrigin={ORIGIN}"))
        .await;
    assert!(r.bytes().await.is_err(), "a wrong object's body is cut");
    let status = h.status().await;
    assert_eq!(status["delivery"]["verified_objects"], 1, "{status}");
    assert_eq!(status["delivery"]["unverified_objects"], 0, "{status}");
}

/// DO objects count toward `max_store_bytes` and are evicted in one
/// least-recently-served order with catalog files: a DO object pushes out
/// a catalog file served before it, and later the DO object served longest
/// ago.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn do_objects_count_toward_max_store_bytes_in_one_eviction_order() {
    const MAX: u64 = (3 << 20) + (1 << 19); // 3.5 MiB
    const OBJECT: usize = 3 << 19; // 1.5 MiB
    let origin = DoOrigin::start().await;
    let paths: Vec<String> = (1..=3)
        .map(|i| format!("/filestreamingservice/files/00000000-0000-4000-8000-00000000001{i}"))
        .collect();
    for (i, p) in paths.iter().enumerate() {
        origin.add(p, object(OBJECT + i));
    }
    let proxy = origin.proxy();
    let h = Harness::with(move |c| {
        c.fetch.upstream_proxy = Some(proxy);
        // The catalog's upstream is on loopback: not through the DO origin.
        c.fetch.upstream_no_proxy = Some("127.0.0.1".into());
        c.store.max_store_bytes = Some(MAX);
    })
    .await;
    assert_eq!(h.a.bytes.len(), 3 << 20);
    h.setup(&[ID_A]).await;
    assert!(h.get(&h.a.content_path()).await.bytes().await.unwrap() == h.a.bytes);
    h.settled().await;
    let get = |i: usize, p1: u64| {
        let url = format!("{}?P1={p1}&cacheHostOrigin={ORIGIN}", paths[i]);
        let h = &h;
        async move {
            let body = h.get(&url).await.bytes().await.unwrap();
            assert_eq!(body.len(), OBJECT + i);
            h.eventually("nothing downloading", |h| {
                h.running().app.fetcher.status().is_empty()
            })
            .await;
            // Serve times are in milliseconds: keep successive requests apart.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    get(0, 10).await;
    assert!(
        !h.stored().contains(&h.a.sha256),
        "the catalog file, served longest ago, made room for the DO object"
    );
    get(1, 11).await;
    assert_eq!(h.stored().len(), 2, "two DO objects fit");
    get(0, 12).await; // the second is now the one served longest ago
    get(2, 13).await;
    let status = h.status().await;
    assert_eq!(status["delivery"]["unverified_objects"], 2, "{status}");
    assert_eq!(h.counter("upcache_evicted_files_total").await, 2);
    assert_eq!(
        origin.state.requests.load(Ordering::SeqCst),
        3,
        "the first object was served from the store the second time"
    );
    let keys = h.running().app.delivery.index().by_last_served();
    let names: Vec<&str> = keys.iter().map(|(k, ..)| k.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "00000000-0000-4000-8000-000000000011",
            "00000000-0000-4000-8000-000000000013"
        ]
    );
}

/// Warm DO objects are sent by the HTTP/1.1 fast path (`sendfile`), with
/// the same answers as the hyper path: ranges, `HEAD`, validators and
/// conditionals, and a refused origin still refused (by the full path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_sends_stored_do_objects_as_the_hyper_path_does() {
    use crate::fast_path::exchange;
    let origin = DoOrigin::start().await;
    let data = object(3 << 20);
    origin.add(&object_path(), data.clone());
    let proxy = origin.proxy();
    let fast = harness(&origin).await;
    let slow = Harness::with(move |c| {
        c.fetch.upstream_proxy = Some(proxy);
        c.content.fast_path = false;
    })
    .await;
    for h in [&fast, &slow] {
        assert!(h.get(&do_url(9_000)).await.bytes().await.unwrap() == data);
        h.eventually("stored", |h| !h.stored().is_empty()).await;
    }
    let sendfile = "upcache_sendfile_responses_total";
    let before = fast.counter(sendfile).await;
    let url = do_url(9_100);
    let requests = [
        ("GET", url.clone(), String::new()),
        ("HEAD", url.clone(), String::new()),
        (
            "GET",
            url.clone(),
            "Range: bytes=1048576-2097151\r\n".into(),
        ),
        ("GET", url.clone(), "Range: bytes=-100\r\n".into()),
        ("GET", url.clone(), "Range: bytes=0-0,10-20\r\n".into()),
        ("GET", url.clone(), "Range: bytes=99999999-\r\n".into()),
        ("GET", url.clone(), "If-None-Match: \"v1\"\r\n".into()),
        (
            "GET",
            url.clone(),
            "If-Range: \"v1\"\r\nRange: bytes=10-19\r\n".into(),
        ),
        (
            "GET",
            url.clone(),
            "If-Range: \"v0\"\r\nRange: bytes=10-19\r\n".into(),
        ),
    ];
    for (method, target, extra) in &requests {
        let request =
            format!("{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n");
        let got = exchange(fast.running().content_addr, &request).await;
        let want = exchange(slow.running().content_addr, &request).await;
        assert_eq!(got.0, want.0, "status of {request:?}");
        assert_eq!(got.1, want.1, "headers of {request:?}");
        assert!(got.2 == want.2, "body of {request:?}");
    }
    assert_eq!(fast.counter(sendfile).await - before, requests.len() as u64);
    assert_eq!(slow.counter(sendfile).await, 0);
    // Refusals are the full path's, counted once.
    let refused = format!("{}?P1=1&cacheHostOrigin=evil.example", object_path());
    let request = format!("GET {refused} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let got = exchange(fast.running().content_addr, &request).await;
    assert!(got.0.starts_with("HTTP/1.1 403"), "{}", got.0);
    assert_eq!(
        fast.counter("upcache_do_refused_total{reason=\"not_allowed\"}")
            .await,
        1
    );
    assert_eq!(origin.state.requests.load(Ordering::SeqCst), 2);
}

/// While an object's download is slow, DO's shuffled ranges are nearly all
/// far ahead of it: at most two at a time go to the origin on their own,
/// and the other clients follow the download (each byte is fetched twice
/// at most for those two, not for every client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_ahead_ranges_of_a_slow_object_go_to_the_origin_two_at_a_time() {
    let origin = DoOrigin::start().await;
    let data = object(6 << 20);
    origin.add(&object_path(), data.clone());
    origin.state.rate.store(1 << 20, Ordering::SeqCst);
    let h = harness(&origin).await;
    let first = h.get_range(&do_url(5_000), "bytes=0-1023").await;
    assert_eq!(first.status(), 206);
    let mut tasks = Vec::new();
    for i in 0..4u64 {
        let (http, url) = (h.http.clone(), h.url(&do_url(5_001 + i)));
        let start = (2 + i) << 20;
        let want = data.slice(start as usize..(start + (1 << 20)) as usize);
        tasks.push(tokio::spawn(async move {
            let range = format!("bytes={start}-{}", start + (1 << 20) - 1);
            let r = http.get(&url).header("range", range).send().await.unwrap();
            assert_eq!(r.status(), 206);
            assert!(r.bytes().await.unwrap() == want);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(first.bytes().await.unwrap() == data.slice(..1024));
    let requests = origin.state.requests.load(Ordering::SeqCst);
    assert!(
        requests <= 3,
        "the download and at most two far-ahead ranges: {requests}"
    );
}

/// A paced origin (a CDN paces each response) keeps a download slow for
/// its whole length, so two far-ahead ranges at a time were on their way
/// all along, each of their bytes sent twice. A download's far-ahead bytes
/// are bounded in all, to an eighth of the object (two ranges at least):
/// the origin sends the object and at most that much more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_origin_sends_the_object_and_at_most_an_eighth_more() {
    const MIB: u64 = 1 << 20;
    let origin = DoOrigin::start().await;
    let data = object(16 << 20);
    origin.add(&object_path(), data.clone());
    origin.state.rate.store(4 << 20, Ordering::SeqCst);
    let h = harness(&origin).await;
    let first = h.get_range(&do_url(6_000), "bytes=0-1023").await;
    assert_eq!(first.status(), 206);
    let mut clients = Vec::new();
    for c in 0..6u64 {
        let (http, h_url) = (h.http.clone(), h.url(&do_url(6_100 + c)));
        let data = data.clone();
        clients.push(tokio::spawn(async move {
            // Each client its own far-ahead ranges, in turn, from 6 MiB on.
            for i in (6..16u64).map(|i| 6 + (i + c * 3) % 10) {
                let range = format!("bytes={}-{}", i * MIB, (i + 1) * MIB - 1);
                let r = http
                    .get(&h_url)
                    .header("range", range)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 206);
                let want = data.slice((i * MIB) as usize..((i + 1) * MIB) as usize);
                assert!(r.bytes().await.unwrap() == want, "range {i} byte-exact");
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    assert!(first.bytes().await.unwrap() == data.slice(..1024));
    let sent = origin.body_bytes();
    assert!(
        sent <= 16 * MIB + 2 * MIB,
        "the origin sent {sent} bytes for a {} byte object",
        16 * MIB
    );
}

/// An object of 32 MiB is fetched in four parts of 8 MiB side by side,
/// each a bounded range asked once, so that a client's range in the last
/// part does not wait for the 24 MiB before it: it is served while the
/// download still runs, from its part, and the object is stored whole,
/// each byte sent once, its SHA-256 computed over the parts in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_is_fetched_in_parts_side_by_side_each_byte_once() {
    const MIB: u64 = 1 << 20;
    let origin = DoOrigin::start().await;
    let data = object(32 << 20);
    origin.add(&object_path(), data.clone());
    // A CDN's pace: one sequential response would take 8 s.
    origin.state.rate.store(4 << 20, Ordering::SeqCst);
    let h = harness(&origin).await;
    let r = h.get_range(&do_url(7_000), "bytes=25165824-26214399").await;
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == data.slice((24 * MIB) as usize..(25 * MIB) as usize));
    assert!(
        !h.running().app.fetcher.status().is_empty(),
        "served from its part while the download runs"
    );
    download_ended(&h).await;
    let mut ranges: Vec<String> = origin
        .state
        .ranges
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .cloned()
        .collect();
    ranges.sort();
    let mut parts: Vec<String> = (0..4u64)
        .map(|i| format!("bytes={}-{}", i * 8 * MIB, (i + 1) * 8 * MIB - 1))
        .collect();
    parts.sort();
    assert_eq!(ranges, parts, "one bounded request a part");
    assert_eq!(origin.body_bytes(), 32 * MIB, "each byte sent once");
    let stored = h.stored();
    assert_eq!(stored.len(), 1);
    let whole = h.get(&do_url(7_001)).await;
    assert_eq!(whole.status(), 200);
    assert!(whole.bytes().await.unwrap() == data, "stored byte-exact");
    use sha2::Digest as _;
    let sha256 = hex::encode(sha2::Sha256::digest(&data));
    assert_eq!(
        stored[0].to_hex(),
        sha256,
        "stored under the SHA-256 of the whole"
    );
}

/// The origin cuts the last part of a 32 MiB object 3 MiB in: its worker
/// asks for the rest of the part alone, and the object is stored whole,
/// byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_cut_mid_way_is_resumed_from_where_it_stopped() {
    const MIB: u64 = 1 << 20;
    let origin = DoOrigin::start().await;
    let data = object(32 << 20);
    origin.add(&object_path(), data.clone());
    origin.state.cut_from.store(24 * MIB, Ordering::SeqCst);
    origin.state.cut_after.store(3 * MIB, Ordering::SeqCst);
    let h = harness(&origin).await;
    let whole = h.get(&do_url(8_000)).await;
    assert_eq!(whole.status(), 200);
    assert!(whole.bytes().await.unwrap() == data, "byte-exact");
    download_ended(&h).await;
    assert_eq!(h.stored().len(), 1);
    // The rest of the part from where its bytes stopped (at most 3 MiB in:
    // what was on its way when the cut came may be lost).
    let ranges = origin.state.ranges.lock().unwrap().clone();
    let resumed = ranges.iter().flatten().any(|r| {
        let tail = format!("-{}", 32 * MIB - 1);
        let start = r.strip_prefix("bytes=").and_then(|r| r.strip_suffix(&tail));
        start
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|s| s > 24 * MIB && s <= 27 * MIB)
    });
    assert!(resumed, "the rest of the part alone: {ranges:?}");
    assert!(h.counter("upcache_upstream_resumes_total").await >= 1);
}

/// Status counts what the parts do: a part's resume is a resume, and the
/// rate is every part's bytes, not the first part's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_the_resumes_and_bytes_of_every_part() {
    const MIB: u64 = 1 << 20;
    let origin = DoOrigin::start().await;
    let data = object(32 << 20);
    origin.add(&object_path(), data.clone());
    origin.state.rate.store(4 * MIB, Ordering::SeqCst);
    origin.state.cut_from.store(24 * MIB, Ordering::SeqCst);
    origin.state.cut_after.store(MIB, Ordering::SeqCst);
    let h = harness(&origin).await;
    let url = h.url(&do_url(8_500));
    let download = tokio::spawn(async move { reqwest::get(url).await?.bytes().await });
    let (mut resumes, mut rates) = (0, vec![]);
    while !download.is_finished() {
        let status = h.admin_json("/api/v1/status").await;
        if let Some(fetch) = status["fetches"].as_array().and_then(|f| f.first()) {
            resumes = resumes.max(fetch["resumes"].as_u64().unwrap());
            rates.extend(fetch["bytes_per_second"].as_u64().filter(|&r| r > 0));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(download.await.unwrap().unwrap() == data, "byte-exact");
    assert!(resumes >= 1, "the cut part's resume is counted");
    // Four parts, each paced to 4 MiB/s: together well above one flow for
    // most of the download.
    rates.sort_unstable();
    let median = rates.get(rates.len() / 2).copied().unwrap_or(0);
    assert!(
        median > 6 * MIB,
        "the rate counts every part: median {median} B/s of {rates:?}"
    );
}

/// The object changes while a part is on its way: the part's resume finds
/// another `ETag` and the download fails at once, nothing stored; the next
/// request downloads the new object from its first byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etag_change_seen_by_a_part_stores_nothing() {
    const MIB: u64 = 1 << 20;
    let origin = DoOrigin::start().await;
    let data = object(32 << 20);
    origin.add(&object_path(), data.clone());
    origin.state.cut_from.store(24 * MIB, Ordering::SeqCst);
    origin.state.cut_after.store(3 * MIB, Ordering::SeqCst);
    *origin.state.etag_after_cut.lock().unwrap() = Some("\"v2\"".into());
    let h = harness(&origin).await;
    let first = h.get(&do_url(9_000)).await;
    let got = first.bytes().await;
    assert!(
        got.is_err() || got.unwrap().len() < data.len(),
        "the body is cut"
    );
    download_ended(&h).await;
    assert!(h.stored().is_empty(), "nothing stored");
    assert!(h.counter("upcache_do_identity_changed_total").await >= 1);
    let again = h.get(&do_url(9_001)).await;
    assert_eq!(again.status(), 200);
    assert!(again.bytes().await.unwrap() == data);
    let firsts = origin
        .state
        .ranges
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.as_deref() == Some("bytes=0-8388607"))
        .count();
    assert_eq!(firsts, 2, "the next request started afresh");
}

/// An empty object: its first range cannot be satisfied (416), so it is
/// asked for whole, and stored. A 206 that withholds the object's length
/// (`bytes 0-…/*`) is asked for whole too, in one piece.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_object_and_one_of_unknown_length_are_asked_for_whole() {
    let origin = DoOrigin::start().await;
    origin.state.strict_ranges.store(true, Ordering::SeqCst);
    origin.add(&object_path(), Bytes::new());
    let h = harness(&origin).await;
    let empty = h.get(&do_url(11_000)).await;
    assert_eq!(empty.status(), 200);
    assert!(empty.bytes().await.unwrap().is_empty());
    h.eventually("the empty object stored", |h| h.stored().len() == 1)
        .await;

    let other = DoOrigin::start().await;
    other.state.hide_total.store(true, Ordering::SeqCst);
    let data = object(12 << 20);
    other.add(&object_path(), data.clone());
    let h = harness(&other).await;
    let whole = h.get(&do_url(11_001)).await;
    assert_eq!(whole.status(), 200);
    assert!(whole.bytes().await.unwrap() == data);
    let ranges = other.state.ranges.lock().unwrap().clone();
    assert_eq!(ranges, vec![Some("bytes=0-8388607".to_owned()), None]);
}

/// An origin that caps every range at 3 MiB (some CDNs do): each short
/// 206 is followed by a request for the rest, never counted as a resume,
/// both for a download in one piece and for one in parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_the_origin_answers_shorter_than_asked_are_continued_not_resumed() {
    for mib in [12usize, 32] {
        let origin = DoOrigin::start().await;
        origin.state.max_range.store(3 << 20, Ordering::SeqCst);
        let data = object(mib << 20);
        origin.add(&object_path(), data.clone());
        let h = harness(&origin).await;
        let whole = h.get(&do_url(12_000)).await;
        assert_eq!(whole.status(), 200);
        assert!(whole.bytes().await.unwrap() == data, "{mib} MiB byte-exact");
        download_ended(&h).await;
        assert_eq!(h.stored().len(), 1);
        assert_eq!(origin.body_bytes(), (mib << 20) as u64, "each byte once");
        assert_eq!(h.counter("upcache_upstream_resumes_total").await, 0);
    }
}

/// An origin that ignores a range's end: each part's answer runs on to
/// the object's end, and is cut at the part's end; nothing is resumed,
/// and the object is stored byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_the_origin_answers_past_their_end_are_cut_at_it() {
    let origin = DoOrigin::start().await;
    origin.state.ignore_range_end.store(true, Ordering::SeqCst);
    let data = object(32 << 20);
    origin.add(&object_path(), data.clone());
    let h = harness(&origin).await;
    let whole = h.get(&do_url(13_000)).await;
    assert_eq!(whole.status(), 200);
    assert!(whole.bytes().await.unwrap() == data);
    download_ended(&h).await;
    assert_eq!(h.stored().len(), 1);
    assert_eq!(h.counter("upcache_upstream_resumes_total").await, 0);
}

/// An object under 16 MiB is one download: its first 8 MiB, then the rest
/// in one request; no parts, no resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_under_16_mib_is_one_download_in_two_requests() {
    let origin = DoOrigin::start().await;
    let data = object(12 << 20);
    origin.add(&object_path(), data.clone());
    let h = harness(&origin).await;
    let whole = h.get(&do_url(10_000)).await;
    assert_eq!(whole.status(), 200);
    assert!(whole.bytes().await.unwrap() == data);
    let ranges = origin.state.ranges.lock().unwrap().clone();
    assert_eq!(
        ranges,
        vec![
            Some("bytes=0-8388607".to_owned()),
            Some("bytes=8388608-".to_owned())
        ]
    );
    assert_eq!(h.counter("upcache_upstream_resumes_total").await, 0);
}

/// `do_origin_scheme = "https"`: the object comes over TLS, the origin's
/// certificate checked against `upstream_ca` (a private CA here), and is
/// served byte-exact. Through `upstream_proxy` the request is a `CONNECT`
/// to the origin's name on 443; reached directly (an address inside
/// `do_origin_networks`, on port 443: root only), the connection trusts
/// `upstream_ca` too. Without the CA the certificate is refused: `502`,
/// nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origins_are_fetched_over_tls_trusting_upstream_ca() {
    use upcache::delivery::Scheme;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("do-origin-ca.pem");
    let origin = DoOrigin::start_tls("127.0.0.1:0", "127.0.9.2", &ca).await;
    let data = object(3 << 20);
    origin.add(&object_path(), data.clone());
    let https = |proxy: Option<String>, ca: Option<std::path::PathBuf>| {
        move |c: &mut upcache::config::Config| {
            c.fetch.upstream_proxy = proxy;
            c.fetch.upstream_ca_file = ca;
            c.delivery.do_origin_scheme = Scheme::Https;
            c.delivery.do_origin_networks = vec!["127.0.9.0/24".parse().unwrap()];
        }
    };

    // Without the CA: refused by the certificate check, a 502.
    let h = Harness::with(https(Some(origin.proxy()), None)).await;
    let r = h.get(&do_url(10_000)).await;
    assert_eq!(r.status(), 502, "{}", r.text().await.unwrap());
    assert_eq!(origin.requests(), 0, "no request went over the failed TLS");
    assert!(h.stored().is_empty());

    // Through the proxy, trusting the CA.
    let h = Harness::with(https(Some(origin.proxy()), Some(ca.clone()))).await;
    let r = h.get_range(&do_url(10_001), "bytes=1048576-2097151").await;
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == data.slice(1 << 20..2 << 20));
    let r = h.get(&do_url(10_002)).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == data);
    h.settled().await;
    assert_eq!(h.stored().len(), 1);
    assert_eq!(origin.requests(), 1, "one download, over TLS");
    // Each harness made one tunnel to the origin's name on 443.
    let connects = origin.state.connects.lock().unwrap().clone();
    assert_eq!(connects, [format!("{ORIGIN}:443"), format!("{ORIGIN}:443")]);
    // Inside the tunnel: origin-form, the client's token, no cacheHostOrigin.
    let target = origin.state.targets.lock().unwrap()[0].clone();
    assert_eq!(
        target,
        format!("{}?P1=10001&P2=404&P3=2&P4=dG9rZW410001", object_path())
    );

    // Directly, to an address inside do_origin_networks, on port 443.
    if std::net::TcpListener::bind(("127.0.9.2", 443)).is_err() {
        eprintln!("SKIPPED (the direct half): binding port 443 needs root");
        return;
    }
    let direct_ca = dir.path().join("direct-origin-ca.pem");
    let direct = DoOrigin::start_tls("127.0.9.2:443", "127.0.9.2", &direct_ca).await;
    direct.add(&object_path(), data.clone());
    let h = Harness::with(https(None, Some(direct_ca))).await;
    let url = format!("{}?P1=7&cacheHostOrigin=127.0.9.2", object_path());
    let r = h.get(&url).await;
    assert_eq!(r.status(), 200, "{:?}", r.headers());
    assert!(r.bytes().await.unwrap() == data);
    assert_eq!(direct.requests(), 1);
    assert!(direct.state.connects.lock().unwrap().is_empty(), "no proxy");
    h.settled().await;
    assert_eq!(h.stored().len(), 1);
}

/// Waits for the object's download to end: stored, or failed and gone
/// (a download of tens of MiB may take longer than `eventually`'s bound on
/// a loaded machine).
async fn download_ended(h: &Harness) {
    within(
        "the download's end",
        std::time::Duration::from_secs(60),
        async || h.running().app.fetcher.status().is_empty(),
    )
    .await;
}

/// Nothing of a failed download is left: no stored object, no index entry,
/// no temp file.
async fn nothing_left(h: &Harness) {
    h.settled().await;
    assert!(h.stored().is_empty(), "nothing stored");
    assert!(
        h.running().app.store.temp_files().is_empty(),
        "no temp file"
    );
    let status = h.status().await;
    assert_eq!(status["delivery"]["unverified_objects"], 0, "{status}");
}

/// A harness whose origin waits are short (`read_timeout` for a head or
/// the next bytes) and whose downloads resume once.
async fn impatient(
    origin: &DoOrigin,
    mode: upcache::delivery::Mode,
    read_timeout: std::time::Duration,
) -> Harness {
    let proxy = origin.proxy();
    Harness::with(move |c| {
        c.fetch.upstream_proxy = Some(proxy);
        c.fetch.read_timeout = read_timeout;
        c.fetch.max_resumes = 1;
        c.delivery.delivery_optimization = mode;
    })
    .await
}

/// An origin that accepts and never answers is a `504`; one that stalls
/// mid-body (the resume too) cuts the client's body after its `200` went
/// out. Never a `4xx`, nothing partial kept: the next request, the origin
/// working again, fetches the object from its first byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_times_out_is_a_504_or_a_cut_body_and_leaves_nothing() {
    let origin = DoOrigin::start().await;
    let data = object(4 << 20);
    origin.add(&object_path(), data.clone());
    let h = impatient(
        &origin,
        upcache::delivery::Mode::Cache,
        std::time::Duration::from_millis(2000),
    )
    .await;

    // A second client joins the download while it waits for the head:
    // the same 504 at the same time, and no second request to the origin.
    origin.state.hang.store(true, Ordering::SeqCst);
    let first = tokio::spawn({
        let (http, url) = (h.http.clone(), h.url(&do_url(11_000)));
        async move { http.get(url).send().await.unwrap() }
    });
    h.eventually("the download asked the origin", |_| origin.requests() == 1)
        .await;
    let second = h.get(&do_url(10_999)).await;
    assert_eq!(second.status(), 504, "{}", second.text().await.unwrap());
    let first = first.await.unwrap();
    assert_eq!(first.status(), 504, "{}", first.text().await.unwrap());
    nothing_left(&h).await;
    assert_eq!(origin.requests(), 1, "the joined client started no other");
    origin.state.hang.store(false, Ordering::SeqCst);

    origin.state.stall_after.store(1 << 20, Ordering::SeqCst);
    let r = h.get(&do_url(11_001)).await;
    assert_eq!(r.status(), 200, "the head went out with the first bytes");
    assert!(r.bytes().await.is_err(), "the body is cut, not completed");
    nothing_left(&h).await;
    assert_eq!(
        origin.requests(),
        3,
        "the hung one, a download and its resume"
    );
    origin.state.stall_after.store(0, Ordering::SeqCst);

    let before = origin.body_bytes();
    let r = h.get(&do_url(11_002)).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == data);
    h.settled().await;
    assert_eq!(h.stored().len(), 1);
    assert_eq!(
        origin.body_bytes() - before,
        data.len() as u64,
        "from the first byte"
    );
}

/// An origin that resets each connection as it accepts it is a `502`; one
/// that resets mid-body (the resume too) cuts the client's body. Never a
/// `4xx`, nothing partial kept, and the next request with the origin
/// working fetches the object whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_resets_is_a_502_or_a_cut_body_and_leaves_nothing() {
    let origin = DoOrigin::start().await;
    let data = object(4 << 20);
    origin.add(&object_path(), data.clone());
    let h = impatient(
        &origin,
        upcache::delivery::Mode::Cache,
        std::time::Duration::from_millis(500),
    )
    .await;

    origin.state.reset_connections.store(true, Ordering::SeqCst);
    let r = h.get(&do_url(12_000)).await;
    assert_eq!(r.status(), 502, "{}", r.text().await.unwrap());
    nothing_left(&h).await;
    assert!(origin.connections() >= 1);
    assert_eq!(origin.requests(), 0, "reset before any request was read");
    origin
        .state
        .reset_connections
        .store(false, Ordering::SeqCst);

    origin.state.reset_after.store(1 << 20, Ordering::SeqCst);
    let r = h.get(&do_url(12_001)).await;
    assert_eq!(r.status(), 200, "the head went out with the first bytes");
    assert!(r.bytes().await.is_err(), "the body is cut, not completed");
    nothing_left(&h).await;
    assert_eq!(origin.requests(), 2, "a download and its resume");
    origin.state.reset_after.store(0, Ordering::SeqCst);

    let before = origin.body_bytes();
    let r = h.get(&do_url(12_002)).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == data);
    h.settled().await;
    assert_eq!(h.stored().len(), 1);
    assert_eq!(origin.body_bytes() - before, data.len() as u64);
}

/// `pass-through` relays each request, and the same failures are a `504`
/// (no answer) or a `502` (reset), and a body the origin stops sending is
/// cut after `read_timeout_secs`, where it used to wait for as long as
/// the origin kept the connection open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_answers_failures_with_5xx_and_cuts_a_stalled_body() {
    let origin = DoOrigin::start().await;
    let data = object(2 << 20);
    origin.add(&object_path(), data.clone());
    let h = impatient(
        &origin,
        upcache::delivery::Mode::PassThrough,
        std::time::Duration::from_millis(500),
    )
    .await;

    origin.state.hang.store(true, Ordering::SeqCst);
    assert_eq!(h.get(&do_url(14_000)).await.status(), 504);
    origin.state.hang.store(false, Ordering::SeqCst);

    origin.state.reset_connections.store(true, Ordering::SeqCst);
    assert_eq!(h.get(&do_url(14_001)).await.status(), 502);
    origin
        .state
        .reset_connections
        .store(false, Ordering::SeqCst);

    origin.state.stall_after.store(1 << 20, Ordering::SeqCst);
    let r = h.get_range(&do_url(14_002), "bytes=0-2097151").await;
    assert_eq!(r.status(), 206);
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), r.bytes()).await;
    let Ok(body) = read else {
        panic!("a stalled pass-through body was never cut");
    };
    assert!(body.is_err(), "the body is cut, not completed");
    origin.state.stall_after.store(0, Ordering::SeqCst);

    let r = h.get(&do_url(14_003)).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == data);
    assert!(h.stored().is_empty());
}

/// A follower serves DO objects as it serves catalog files: it downloads
/// them itself (a follower pulls the primary's catalog; content never goes
/// through the primary), and what the primary's catalog names at a DO URL
/// reaches it with its pulls and verifies its downloads: the right SHA-1
/// stores the object as verified, a wrong one cuts the body and stores
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_fetches_do_objects_itself_verified_by_the_catalog_it_pulls() {
    use sha1::Digest as _;
    let origin = DoOrigin::start().await;
    let good = object(1 << 20);
    let other = "/filestreamingservice/files/00000000-0000-4000-8000-0000000000d2";
    origin.add(&object_path(), good.clone());
    origin.add(other, good.clone());
    let primary = harness(&origin).await;
    let file = |path: &str, sha1: String| {
        serde_json::json!({
            "name": "windows11.0-kb5099998-x64.esd",
            "sha1": sha1,
            "size": good.len(),
            "url": format!("http://{ORIGIN}{path}?P1=1&P2=2"),
        })
    };
    let catalog = serde_json::json!({"updates": [
        {"id": "do-right", "title": "right", "files": [file(&object_path(), hex::encode(sha1::Sha1::digest(&good)))]},
        {"id": "do-wrong", "title": "wrong", "files": [file(other, "ab".repeat(20))]},
    ]});
    assert_eq!(primary.import(&catalog).await.status(), 200);
    let (url, proxy) = (primary.admin("/").parse().unwrap(), origin.proxy());
    let follower = Harness::with(move |c| {
        c.follow.follow = Some(url);
        c.follow.follow_interval = std::time::Duration::from_secs(1);
        c.fetch.upstream_proxy = Some(proxy);
    })
    .await;
    within(
        "the follower learns the objects",
        std::time::Duration::from_secs(10),
        async || follower.status().await["delivery"]["known_objects"] == 2,
    )
    .await;

    let r = follower.get_range(&do_url(15_000), "bytes=0-99").await;
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == good.slice(..100));
    follower.settled().await;
    let r = follower
        .get(&format!("{other}?P1=15000&cacheHostOrigin={ORIGIN}"))
        .await;
    assert!(r.bytes().await.is_err(), "a wrong object's body is cut");
    follower.settled().await;
    let status = follower.status().await;
    assert_eq!(status["delivery"]["verified_objects"], 1, "{status}");
    assert_eq!(status["delivery"]["unverified_objects"], 0, "{status}");
    assert_eq!(follower.stored().len(), 1);
    assert!(follower.get(&do_url(15_001)).await.bytes().await.unwrap() == good);
    assert_eq!(origin.requests(), 2, "the follower's two downloads");
    assert!(
        primary.stored().is_empty(),
        "nothing went through the primary"
    );
    assert_eq!(primary.content_requests("miss").await, 0);
    // An administrator's binding is the node's own: taken by the follower,
    // not the primary's.
    let third = "/filestreamingservice/files/00000000-0000-4000-8000-0000000000d3";
    assert_eq!(follower.put_digest_status(third).await, 200);
    assert_eq!(follower.status().await["delivery"]["known_objects"], 3);
    assert_eq!(primary.status().await["delivery"]["known_objects"], 2);
}

/// `HEAD` of an object not stored yet does what nginx's `proxy_cache` does
/// by default (`proxy_cache_convert_head on`), and what a catalog file's
/// `HEAD` does here: it starts the object's one download, as a `GET` (the
/// origin never sees a `HEAD`; DO itself sends none), answers once the
/// origin's head is in (the length, the origin's `ETag`, no body), and the
/// download goes on to the store, so the `GET`s that follow are hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_of_an_object_not_stored_starts_its_one_download_as_a_get() {
    let origin = DoOrigin::start().await;
    let data = object(2 << 20);
    origin.add(&object_path(), data.clone());
    let h = harness(&origin).await;
    let head = |p1: u64| h.http.head(h.url(&do_url(p1))).send();
    let r = head(13_000).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        (2u64 << 20).to_string().as_str()
    );
    assert_eq!(r.headers()["etag"], "\"v1\"");
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert!(r.bytes().await.unwrap().is_empty());
    h.settled().await;
    assert_eq!(h.stored().len(), 1, "the download went on to the store");
    assert_eq!(*origin.state.methods.lock().unwrap(), ["GET"]);
    let r = h.get(&do_url(13_001)).await;
    assert!(r.bytes().await.unwrap() == data);
    let r = head(13_002).await.unwrap();
    assert_eq!(
        r.headers()["content-length"],
        (2u64 << 20).to_string().as_str()
    );
    assert_eq!(origin.requests(), 1);
    assert_eq!(h.content_requests("hit").await, 2);
}

/// A follower of `primary` pulling every second, its DO origins through
/// `proxy` when given, its config adjusted by `tweak`.
async fn follower_of(
    primary: &Harness,
    proxy: Option<String>,
    tweak: impl FnOnce(&mut upcache::config::Config),
) -> Harness {
    let url = primary.admin("/").parse().unwrap();
    Harness::with(move |c| {
        c.follow.follow = Some(url);
        c.follow.follow_interval = std::time::Duration::from_secs(1);
        c.fetch.upstream_proxy = proxy;
        tweak(c);
    })
    .await
}

impl Harness {
    /// `PUT /api/v1/delivery/digests`: binds `path` to `sha256`; the status.
    async fn bind_digest(&self, path: &str, sha256: &str) -> u16 {
        let body = serde_json::json!({ "path": path, "sha256": sha256 });
        let r = self
            .http
            .put(self.admin("/api/v1/delivery/digests"))
            .json(&body);
        r.send().await.unwrap().status().as_u16()
    }

    /// `DELETE /api/v1/delivery/digests` with `body`: the status and the answer.
    async fn unbind_digest_with(&self, body: String) -> (u16, String) {
        let r = self
            .http
            .delete(self.admin("/api/v1/delivery/digests"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Removes this node's binding of `path`: the status.
    async fn unbind_digest(&self, path: &str) -> u16 {
        let body = serde_json::json!({ "path": path }).to_string();
        self.unbind_digest_with(body).await.0
    }

    /// `GET /api/v1/delivery/digests`: (path, sha256, source), by path.
    async fn digest_bindings(&self) -> Vec<(String, String, String)> {
        let list = self.admin_json("/api/v1/delivery/digests").await;
        let Some(list) = list.as_array() else {
            return Vec::new();
        };
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        list.iter()
            .map(|b| (text(&b["path"]), text(&b["sha256"]), text(&b["source"])))
            .collect()
    }
}

/// An administrator's binding made on the primary reaches its followers
/// with their pulls: a follower's download of the object is verified
/// against it (the right digest stores it verified, a wrong one stores
/// nothing), and a binding removed on the primary goes from the follower
/// with the next pull, after which the object is stored unverified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_on_the_primary_verifies_the_object_on_its_follower_until_removed() {
    use sha2::Digest as _;
    let origin = DoOrigin::start().await;
    let good = object(1 << 20);
    let other = "/filestreamingservice/files/00000000-0000-4000-8000-0000000000e2";
    origin.add(&object_path(), good.clone());
    origin.add(other, good.clone());
    let primary = harness(&origin).await;
    let (right, wrong) = (hex::encode(sha2::Sha256::digest(&good)), "ab".repeat(32));
    assert_eq!(primary.bind_digest(&object_path(), &right).await, 200);
    assert_eq!(primary.bind_digest(other, &wrong).await, 200);
    let log = tempfile::NamedTempFile::new().unwrap();
    let log_path = log.path().display().to_string();
    let follower = follower_of(&primary, Some(origin.proxy()), |c| {
        c.access_log.access_log = log_path;
    })
    .await;
    let ten = std::time::Duration::from_secs(10);
    within(
        "the follower takes the primary's bindings",
        ten,
        async || follower.digest_bindings().await.len() == 2,
    )
    .await;
    let from_primary =
        |path: &str, sha256: &str| (path.to_owned(), sha256.to_owned(), "primary".to_owned());
    assert_eq!(
        follower.digest_bindings().await,
        [
            from_primary(other, &wrong),
            from_primary(&object_path(), &right)
        ]
    );
    let status = follower.status().await;
    assert_eq!(status["follow"]["primary_digests"], 2, "{status}");
    assert!(status["follow"]["digests_error"].is_null(), "{status}");
    assert_eq!(status["delivery"]["known_objects"], 2, "{status}");

    // The right digest: fetched by the follower and stored verified.
    assert!(follower.get(&do_url(16_000)).await.bytes().await.unwrap() == good);
    follower.settled().await;
    // A wrong one: the download fails its check and stores nothing. The
    // status went out with the origin's first bytes, so the body is cut
    // (the last byte waits for the check); a 502 had it failed before.
    let r = follower
        .get(&format!("{other}?P1=16000&cacheHostOrigin={ORIGIN}"))
        .await;
    let failed = r.status() == 502 || r.bytes().await.is_err();
    assert!(failed, "a 502 or a cut body: never the object whole");
    follower.settled().await;
    let status = follower.status().await;
    assert_eq!(status["delivery"]["verified_objects"], 1, "{status}");
    assert_eq!(status["delivery"]["unverified_objects"], 0, "{status}");
    let verified = "upcache_do_stored_total{verification=\"verified\"}";
    assert_eq!(follower.counter(verified).await, 1);
    assert_eq!(follower.stored().len(), 1);
    assert!(
        primary.stored().is_empty(),
        "nothing went through the primary"
    );

    // Removed on the primary: gone from the follower with its next pull.
    assert_eq!(primary.unbind_digest(other).await, 204);
    within("the removal reaches the follower", ten, async || {
        follower.digest_bindings().await == [from_primary(&object_path(), &right)]
    })
    .await;
    assert_eq!(follower.status().await["delivery"]["known_objects"], 1);
    // Nothing checks that object now: stored unverified, and marked so.
    let r = follower
        .get(&format!("{other}?P1=16001&cacheHostOrigin={ORIGIN}"))
        .await;
    assert!(r.bytes().await.unwrap() == good);
    follower.settled().await;
    assert_eq!(follower.status().await["delivery"]["unverified_objects"], 1);
    follower.running().flush_access_log().await;
    let text = std::fs::read_to_string(log.path()).unwrap();
    let marked: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with(" UNVERIFIED"))
        .collect();
    assert_eq!(marked.len(), 1, "{text}");
    assert!(marked[0].contains("0000000000e2"), "{text}");
}

/// A follower of a follower gets the middle node's bindings as they apply
/// there (its own beside its primary's, its own winning), so bindings
/// travel down the chain; a node removes only its own (`404` for the
/// primary's, which it names), and a bad removal is a `400`. The primary
/// wants a token: the follower's pulls of its bindings carry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_travel_down_a_chain_of_followers_and_a_nodes_own_wins() {
    let a = "/filestreamingservice/files/00000000-0000-4000-8000-0000000000f1";
    let b = "/filestreamingservice/files/00000000-0000-4000-8000-0000000000f2";
    let (one, two, mine) = ("01".repeat(32), "02".repeat(32), "bb".repeat(32));
    const TOKEN: &str = "the-primary-token-for-its-followers";
    let mut primary = Harness::with(|c| c.admin.admin_token = Some(TOKEN.into())).await;
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    primary.http = reqwest::Client::builder()
        .default_headers(auth)
        .build()
        .unwrap();
    assert_eq!(primary.bind_digest(a, &one).await, 200);
    assert_eq!(primary.bind_digest(b, &two).await, 200);
    let middle = follower_of(&primary, None, |c| {
        c.follow.follow_token = Some(TOKEN.into());
    })
    .await;
    assert_eq!(middle.bind_digest(b, &mine).await, 200, "a node's own");
    let last = follower_of(&middle, None, |_| {}).await;
    let entry = |path: &str, sha256: &str, source: &str| {
        (path.to_owned(), sha256.to_owned(), source.to_owned())
    };
    let ten = std::time::Duration::from_secs(10);
    within(
        "the chain's end takes the middle's bindings",
        ten,
        async || {
            last.digest_bindings().await == [entry(a, &one, "primary"), entry(b, &mine, "primary")]
        },
    )
    .await;
    assert_eq!(
        middle.digest_bindings().await,
        [entry(a, &one, "primary"), entry(b, &mine, "local")]
    );
    assert_eq!(middle.status().await["follow"]["primary_digests"], 2);

    // The middle cannot remove its primary's binding, only its own.
    let (code, text) = middle
        .unbind_digest_with(serde_json::json!({ "path": a }).to_string())
        .await;
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("primary"), "{text}");
    assert_eq!(middle.unbind_digest(b).await, 204);
    assert_eq!(middle.unbind_digest(b).await, 404);
    within(
        "the primary's binding shows through again",
        ten,
        async || {
            last.digest_bindings().await == [entry(a, &one, "primary"), entry(b, &two, "primary")]
        },
    )
    .await;
    assert_eq!(primary.unbind_digest(a).await, 204);
    within("a removal travels down the chain", ten, async || {
        last.digest_bindings().await == [entry(b, &two, "primary")]
    })
    .await;
    assert_eq!(primary.digest_bindings().await, [entry(b, &two, "local")]);

    // Bad removals.
    for body in [
        r#"{"path": "/Content/0A/x.cab"}"#.to_owned(),
        format!(r#"{{"path": "{b}", "sha256": "{two}"}}"#),
        "not json".to_owned(),
        String::new(),
    ] {
        let (code, text) = primary.unbind_digest_with(body.clone()).await;
        assert_eq!(code, 400, "{body}: {text}");
        assert!(text.contains("\"error\""), "{text}");
    }
    let long = format!(r#"{{"path": "{}"}}"#, "x".repeat(2 << 20));
    assert_eq!(primary.unbind_digest_with(long).await.0, 413);
    assert_eq!(primary.digest_bindings().await.len(), 1);
}
