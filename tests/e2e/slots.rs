//! Nothing holds a slot for ever: send timeouts, the admin listener's
//! caps, whole-looking wrong bodies, dual-stack addresses, head sizes, and
//! the small hardening items of the same review.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Sends raw bytes and reads until the server closes or `wait` passes:
/// (what was read, how the read ended: `Ok(true)` closed cleanly,
/// `Ok(false)` still open, `Err` reset).
async fn exchange(
    addr: std::net::SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> (String, std::io::Result<bool>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_to_close(&mut s, wait).await
}

async fn read_to_close(s: &mut TcpStream, wait: Duration) -> (String, std::io::Result<bool>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) => return (String::from_utf8_lossy(&out).into(), Ok(true)),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (String::from_utf8_lossy(&out).into(), Err(e)),
            Err(_) => return (String::from_utf8_lossy(&out).into(), Ok(false)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_without_host_is_answered_by_the_admin_api() {
    let h = Harness::new().await;
    let addr = h.running().admin_addr;
    for path in ["/healthz", "/metrics"] {
        let req = format!("GET {path} HTTP/1.0\r\n\r\n");
        let (answer, _) = exchange(addr, req.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.0 200"), "{path}: {answer}");
    }
    // The API itself still wants a host of its own.
    let (answer, _) = exchange(
        addr,
        b"GET /api/v1/status HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.0 403"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let token = "s3cret-token-0123456789";
    let h = Harness::with(|c| c.admin.admin_token = Some(token.into())).await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = h
            .http
            .get(h.admin("/api/v1/status"))
            .header("authorization", format!("{scheme} {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
    }
    let r = h
        .http
        .get(h.admin("/api/v1/status"))
        .header("authorization", format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_responses_say_nosniff_on_both_paths() {
    let h = Harness::new().await;
    h.setup(&[ID_B]).await;
    let path = h.b.content_path();
    let first = h.get(&path).await; // a download, fast path
    assert_eq!(first.headers()["x-content-type-options"], "nosniff");
    first.bytes().await.unwrap();
    h.settled().await;
    let hit = h.get(&path).await; // a warm hit, fast path
    assert_eq!(hit.headers()["x-content-type-options"], "nosniff");
    let ranged = h.get_range(&path, "bytes=0-9").await;
    assert_eq!(ranged.headers()["x-content-type-options"], "nosniff");
    let refused = h.get(&h.a.content_path()).await; // not approved: hyper's 403
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.headers()["x-content-type-options"], "nosniff");
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(h.url(&path)).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_hyper_refuses_is_refused_by_the_fast_path_too() {
    let h = Harness::new().await;
    h.setup(&[ID_B]).await;
    let path = h.b.content_path();
    h.get(&path).await.bytes().await.unwrap();
    h.settled().await;
    assert_eq!(h.raw_status(&format!("{path}?a=b")).await, 200);
    for query in ["?a=\"b\"", "?<x>", "?a>b"] {
        assert_eq!(
            h.raw_status(&format!("{path}{query}")).await,
            400,
            "{query}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_guard_reads_the_h2_authority_before_host() {
    let h = Harness::new().await;
    let addr = h.running().admin_addr;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("rebound.example", addr)
        .build()
        .unwrap();
    let url = format!("http://rebound.example:{}/api/v1/status", addr.port());
    let r = h2
        .get(&url)
        .header("host", addr.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 403, "judged by :authority, not Host");
    let r = h2
        .get(format!("http://{addr}/api/v1/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_mapped_clients_are_judged_as_ipv4() {
    // A balancer names its client as ::ffff:10.9.9.9 (TCP6).
    let h = Harness::with(|c| {
        c.net.proxy_protocol_from = vec!["127.0.0.1/32".parse().unwrap()];
        c.net.allow_clients = vec!["10.9.9.0/24".parse().unwrap()];
    })
    .await;
    let (answer, _) = exchange(
        h.running().content_addr,
        b"PROXY TCP6 ::ffff:10.9.9.9 ::1 50000 8530\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
    if std::net::TcpListener::bind("[::]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 here, so no dual-stack [::] listener to test");
        return;
    }
    let h = Harness::with(|c| {
        c.content.listen = "[::]:0".parse().unwrap();
        c.net.allow_clients = vec!["127.0.0.0/8".parse().unwrap()];
        c.net.proxy_protocol_from = vec!["127.0.0.2/32".parse().unwrap()];
    })
    .await;
    let port = h.running().content_addr.port();
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (answer, _) = exchange(
        v4,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "allowed: {answer}");
    // The balancer at 127.0.0.2 is trusted through the mapped address too.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 2], port)))
        .await
        .unwrap();
    s.write_all(b"PROXY TCP4 127.0.0.9 127.0.0.2 50000 8530\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "proxied: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_admin_connection_is_closed_at_the_header_timeout() {
    let h = Harness::with(|c| c.net.header_timeout = Duration::from_millis(500)).await;
    let mut s = TcpStream::connect(h.running().admin_addr).await.unwrap();
    let t = Instant::now();
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(
        closed.unwrap_or(true) && t.elapsed() < Duration::from_secs(7),
        "still open after {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_from_one_address_do_not_lock_another_out() {
    let h = Harness::new().await;
    let admin = h.running().admin_addr;
    let content = h.running().content_addr;
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(admin).await.unwrap());
        silent.push(TcpStream::connect(content).await.unwrap());
    }
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    for _ in 0..5 {
        let r = other.get(h.admin("/healthz")).send().await;
        assert_eq!(r.expect("admin /healthz answered").status(), 200);
        let r = other.get(h.url("/healthz")).send().await;
        assert_eq!(r.expect("content /healthz answered").status(), 200);
    }
    let metrics = other.get(h.admin("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("upcache_connections_over_ip_cap_total "))
        .expect("the series")
        .parse()
        .unwrap();
    assert!(refused >= 2 * (300 - 64), "{refused}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_16_kib_is_refused() {
    let h = Harness::new().await;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    for addr in [h.running().content_addr, h.running().admin_addr] {
        let (answer, _) = exchange(addr, big.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{addr}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_client_never_gets_a_whole_looking_wrong_body() {
    let h = Harness::new().await;
    // C without a size, from an upstream that announces none, one byte wrong.
    let mut catalog = h.catalog();
    catalog["updates"][2]["files"][0]
        .as_object_mut()
        .unwrap()
        .remove("size");
    assert_eq!(h.import(&catalog).await.status(), 200);
    h.set_state(ID_C, "approve").await;
    h.upstream.set_corrupt(true);
    h.upstream
        .inject(upcache::demo::upstream::Fault::ExtraBytes(0), 1);
    let req = format!("GET {} HTTP/1.0\r\n\r\n", h.c.content_path());
    let (answer, end) = exchange(
        h.running().content_addr,
        req.as_bytes(),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.0 200"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    let e = end.expect_err("a reset, never a clean end of a wrong body");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_413_reaches_a_client_that_writes_its_whole_body_first() {
    let h = Harness::new().await;
    let addr = h.running().admin_addr;
    let body = vec![b'x'; 32 << 20];
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/approvals HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.expect("the whole body is taken");
    let (answer, _) = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

/// A catalog of `n` generated updates, one file each (never downloaded).
fn big_catalog(n: usize) -> serde_json::Value {
    let updates: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("00000000-0000-4000-8000-{i:012}"),
                "revision": 1,
                "title": format!("Generated update number {i} for the export test"),
                "description": "a description long enough to make the export take some room on the wire",
                "kb": format!("{}", 6_000_000 + i),
                "classification": "Security Updates",
                "products": ["Windows 11"],
                "release_date": "2024-01-09",
                "files": [{
                    "name": format!("windows11-kb{}-x64.msu", 6_000_000 + i),
                    "sha1": format!("{:040x}", i + 1),
                    "size": 1000 + i,
                    "url": format!("http://download.example/{i}.msu"),
                }],
            })
        })
        .collect();
    serde_json::json!({ "updates": updates })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_exports_do_not_make_the_wal_grow() {
    let h = Harness::new().await;
    let r = h.import(&big_catalog(20_000)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let wal = h.dir.path().join("catalog.sqlite3-wal");
    let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    // 20 exports whose clients read the head and then nothing.
    let addr = h.running().admin_addr;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        let req = format!("GET /api/v1/catalog HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut first = [0u8; 64];
        s.read_exact(&mut first).await.unwrap();
        stalled.push(s);
    }
    // Give the exports time to fill every buffer on the way and block.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let toggle = |action: &'static str| {
        h.http
            .post(h.admin("/api/v1/approvals"))
            .json(&serde_json::json!({ "action": action, "title": "Generated" }))
            .send()
    };
    assert_eq!(toggle("approve").await.unwrap().status(), 200);
    assert_eq!(toggle("decline").await.unwrap().status(), 200);
    let after_two = wal_size();
    for _ in 0..5 {
        assert_eq!(toggle("approve").await.unwrap().status(), 200);
        assert_eq!(toggle("decline").await.unwrap().status(), 200);
    }
    let after_twelve = wal_size();
    eprintln!("WAL: {after_two} bytes after 2 bulk changes, {after_twelve} after 12");
    assert!(
        after_twelve < after_two * 2,
        "the WAL grew from {after_two} to {after_twelve} bytes behind stalled exports"
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_hyper_refuses_reach_the_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let h = Harness::with(|c| {
        c.access_log.access_log = log.display().to_string();
        c.access_log.access_log_format = upcache::config::AccessLogFormat::Json;
    })
    .await;
    let addr = h.running().content_addr;
    let (answer, _) = exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let (answer, _) = exchange(addr, big.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let mut lines = Vec::new();
    for _ in 0..100 {
        h.running().flush_access_log().await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        lines = text.lines().map(String::from).collect();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("400") && lines[0].contains("127.0.0.1"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("431"), "{}", lines[1]);
}

/// The send timeout the tests run with.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A harness with one connection per content listener (plain and HTTPS),
/// a 1 s send timeout, and update D: a 48 MiB file, stored, far more than
/// the socket buffers on the way hold.
async fn one_slot_harness(pki: &Pki) -> (Harness, String) {
    let files = pki.files.clone();
    let h = Harness::with(|c| {
        c.net.max_connections = 1;
        set_send_timeout(c, SEND_TIMEOUT);
        c.content.set_https("127.0.0.1:0".parse().unwrap(), files);
    })
    .await;
    let big = upcache::demo::SampleFile::generate("5099999", "cab", 48 << 20);
    h.upstream.add(&big.path, big.bytes.clone());
    let mut catalog = h.catalog();
    catalog["updates"]
        .as_array_mut()
        .unwrap()
        .push(upcache::demo::update_json(
            ID_D,
            "5099999",
            "A big update",
            &[&big],
            &h.upstream,
        ));
    assert_eq!(h.import(&catalog).await.status(), 200);
    h.set_state(ID_D, "approve").await;
    let path = big.content_path();
    // Its own client, dropped with its pooled connection: the listener's
    // only slot is free again.
    let once = reqwest::Client::new();
    let r = once.get(h.url(&path)).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 48 << 20);
    drop(once);
    h.settled().await;
    (h, path)
}

/// Waits for a response to be cut for its send timeout, then checks that
/// the listener's only slot is free again.
async fn cut_and_freed(h: &Harness, before: u64, healthz: &impl AsyncFn() -> bool) {
    let series = "upcache_send_timeouts_total";
    within("the response is cut", Duration::from_secs(20), async || {
        h.counter(series).await > before
    })
    .await;
    within(
        "the slot is free again",
        Duration::from_secs(10),
        async || healthz().await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_on_every_path() {
    let certs = tempfile::tempdir().unwrap();
    let pki = private_ca(certs.path(), "corp");
    let (h, path) = one_slot_harness(&pki).await;
    let addr = h.running().content_addr;
    let plain_healthz = async || {
        let (answer, _) = exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        answer.starts_with("HTTP/1.1 200")
    };
    let series = "upcache_send_timeouts_total";
    // HTTP/1.0, and HTTP/1.1 handed to hyper (an Expect header), never read.
    for (what, head) in [
        ("HTTP/1.0", format!("GET {path} HTTP/1.0\r\n\r\n")),
        (
            "hyper's HTTP/1.1",
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"),
        ),
        (
            "the fast path",
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
        ),
    ] {
        let before = h.counter(series).await;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        eprintln!("{what}: not reading");
        cut_and_freed(&h, before, &plain_healthz).await;
        drop(s);
    }
    // h2 (prior knowledge): the body is never read, so the stream's window
    // stays shut while the client's connection answers pings.
    let before = h.counter(series).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(h.url(&path)).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    cut_and_freed(&h, before, &plain_healthz).await;
    drop(r);
    // HTTPS, HTTP/1.1 and h2 by ALPN.
    let tls = h.running().content_tls_addr.expect("an HTTPS listener");
    let url = format!("https://127.0.0.1:{}", tls.port());
    for http1 in [true, false] {
        let mut client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap(),
            )
            .timeout(Duration::from_secs(60));
        if http1 {
            client = client.http1_only();
        }
        let client = client.build().unwrap();
        let before = h.counter(series).await;
        let r = client.get(format!("{url}{path}")).send().await.unwrap();
        let tls_healthz = async || {
            let probe = trusting(&pki.ca);
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                probe.get(format!("{url}/healthz")).send(),
            )
            .await;
            matches!(r, Ok(Ok(r)) if r.status() == 200)
        };
        cut_and_freed(&h, before, &tls_healthz).await;
        drop(r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_client_that_stops_reading_an_export_is_cut() {
    let h = Harness::with(|c| set_send_timeout(c, SEND_TIMEOUT)).await;
    let r = h.import(&big_catalog(20_000)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let addr = h.running().admin_addr;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let req = format!("GET /api/v1/catalog HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    within("the export is cut", Duration::from_secs(30), async || {
        h.counter("upcache_send_timeouts_total").await > 0
    })
    .await;
    drop(s);
}

fn set_send_timeout(c: &mut upcache::config::Config, limit: Duration) {
    c.net.send_timeout = limit;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_warns_when_its_token_would_cross_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server_args(
        dir.path(),
        &[
            "--follow",
            "http://127.0.0.1:9/",
            "--follow-token",
            "the-primary-token-0123456789",
        ],
        std::process::Stdio::piped(),
    );
    let stderr = server.child.stderr.take().unwrap();
    let warned = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .take(200)
            .any(|l| l.contains("WARN") && l.contains("follow_token") && l.contains("http://"))
    });
    let warned = tokio::time::timeout(Duration::from_secs(10), warned).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert!(
        matches!(warned, Ok(Ok(true))),
        "no warning about the token in clear"
    );
}
