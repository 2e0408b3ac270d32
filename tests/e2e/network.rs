//! Safe on a real network: an admin API no web page can drive, connections
//! held and bounded, one server per data directory.

use std::time::{Duration, Instant};

use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Sends raw bytes to `addr` and reads until the server closes or `wait`
/// passes: (what was read, whether the server closed).
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8], wait: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_until_closed(&mut s, wait).await
}

/// Connections waiting in the kernel's accept queue of the listener on
/// `addr` (the receive queue of a listening socket in `/proc/net/tcp`).
fn accept_queue(addr: std::net::SocketAddr) -> u64 {
    let port = format!(":{:04X}", addr.port());
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f[1].ends_with(&port) && f[3] == "0A")
        .and_then(|f| u64::from_str_radix(f[4].split(':').nth(1)?, 16).ok())
        .unwrap_or(0)
}

async fn read_until_closed(s: &mut TcpStream, wait: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_what_a_web_page_can_send() {
    let h = Harness::new().await;
    h.setup(&[]).await;
    let approve = h.admin(&format!("/api/v1/updates/{ID_A}/approve"));
    let rule = r#"{"action":"decline","title":"Cumulative"}"#;
    let with = |method: Method, url: &str, header: &'static str, value: &'static str| {
        h.http.request(method, url).header(header, value).send()
    };
    // DNS rebinding: the page's own name, resolved to 127.0.0.1.
    let r = with(Method::POST, &approve, "host", "rebound.example:8531")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("admin_hosts"));
    let status = h.admin("/api/v1/status");
    let r = with(Method::GET, &status, "host", "rebound.example")
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "reads too: rebinding would read the API");
    // A page on another origin (another loopback port is another origin).
    let r = with(Method::POST, &approve, "origin", "http://127.0.0.1:9")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = with(Method::POST, &approve, "sec-fetch-site", "cross-site")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Bodies a page can send without a preflight: form types, text/plain, none.
    for content_type in [
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        for path in ["/api/v1/rules", "/api/v1/approvals", "/api/v1/catalog"] {
            let mut req = h.http.post(h.admin(path)).body(rule);
            if let Some(t) = content_type {
                req = req.header("content-type", t);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 415, "{path} as {content_type:?}");
        }
    }
    let r = h
        .http
        .put(h.admin("/api/v1/policy"))
        .header("content-type", "text/plain")
        .body(r#"{"mode":"metadata-only"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // Control bodies are small: refused by their announced length, before
    // the body is read. (Sent raw: a client still writing a body the
    // server has refused may see its write fail before it reads the 413.)
    let addr = h.running().admin_addr;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/approvals HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{{\"action\":\"approve\",\"title\":\"xxxx",
        2 << 20
    );
    tokio::io::AsyncWriteExt::write_all(&mut s, head.as_bytes())
        .await
        .unwrap();
    let mut response = vec![0u8; 12];
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut response),
    )
    .await
    .expect("refused without waiting for the body")
    .unwrap();
    assert_eq!(&response, b"HTTP/1.1 413");
    // Nothing changed.
    assert_eq!(h.admin_json("/api/v1/rules").await, serde_json::json!([]));
    let updates = h.admin_json("/api/v1/updates?state=approved").await;
    assert_eq!(updates["total"], 0);
    assert_eq!(
        h.admin_json("/api/v1/policy").await["mode"],
        "store-locally"
    );
    // The real thing still works: same origin, exact type, bodiless approve.
    let r = h
        .http
        .post(h.admin("/api/v1/rules"))
        .header("content-type", "application/json")
        .header("origin", h.admin(""))
        .body(rule)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        h.call(Method::POST, &format!("/api/v1/updates/{ID_A}/approve"))
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_admin_hosts_are_answered() {
    let h = Harness::with(|c| c.admin.admin_hosts = vec!["upcache.corp.example".into()]).await;
    let r = h
        .http
        .get(h.admin("/api/v1/status"))
        .header("host", "upcache.corp.example:8531")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_on_http1_and_h2() {
    let h = Harness::with(|c| c.net.idle_timeout = Duration::from_millis(500)).await;
    let addr = h.running().content_addr;
    // HTTP/1.1: one request, then silence.
    let t = Instant::now();
    let (answer, closed) = exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        closed && t.elapsed() < Duration::from_secs(3),
        "{:?}",
        t.elapsed()
    );
    // h2 (prior knowledge): the preface and empty SETTINGS, then no
    // request; the client answers pings, as real ones do.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    s.write_all(&preface).await.unwrap();
    let t = Instant::now();
    let mut goaway = false;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut head = [0u8; 9];
        while s.read_exact(&mut head).await.is_ok() {
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            s.read_exact(&mut payload).await.unwrap();
            match (head[3], head[4] & 1) {
                (6, 0) => {
                    let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
                    ack.extend_from_slice(&payload);
                    let _ = s.write_all(&ack).await;
                }
                (7, _) => goaway = true,
                _ => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok() && goaway,
        "h2 idle connection not closed with GOAWAY"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_drops_a_client_that_trickles_its_head() {
    let h = Harness::with(|c| c.net.header_timeout = Duration::from_millis(400)).await;
    let mut s = TcpStream::connect(h.running().admin_addr).await.unwrap();
    s.write_all(b"GET /api/v1/status HTTP/1.1\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(
        closed && t.elapsed() < Duration::from_secs(3),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_new_clients_wait_until_one_closes() {
    let h = Harness::with(|c| c.net.max_connections = 2).await;
    let addr = h.running().content_addr;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        assert!(
            s.read(&mut buf).await.unwrap() > 0,
            "held connections are served"
        );
        held.push(s);
    }
    let third = tokio::spawn(exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    ));
    within(
        "the third connection in the accept queue",
        Duration::from_secs(5),
        async || accept_queue(addr) == 1,
    )
    .await;
    assert!(!third.is_finished(), "a third connection is held off");
    drop(held.pop());
    let (answer, _) = third.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "then served: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_dir_exits_and_the_first_finishes_its_download() {
    let h = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = start_binary(dir.path()).await;
    first.setup(&h, &[ID_A]).await;
    h.upstream.set_rate(2 << 20); // ~1.5 s: the second server starts mid-download
    let url = format!("{}{}", first.content, h.a.content_path());
    let download = tokio::spawn(async move { reqwest::get(url).await?.bytes().await });
    within(
        "the download under way",
        Duration::from_secs(5),
        async || std::fs::read_dir(dir.path().join("tmp")).is_ok_and(|d| d.count() == 1),
    )
    .await;
    let t = Instant::now();
    let args = serve_args(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let second = run_cli(&args, &[]).await;
    assert!(!second.ok, "the second server must not run");
    assert!(t.elapsed() < Duration::from_secs(3), "exits at once");
    let pid = first.child.id().to_string();
    assert!(
        second.stderr.contains("in use") && second.stderr.contains(&pid),
        "names the holder's pid {pid}: {}",
        second.stderr
    );
    let temp_after = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
    assert_eq!(temp_after, 1, "the first server's temp file is untouched");
    assert!(download.await.unwrap().unwrap() == h.a.bytes, "intact");
    // Offline maintenance is refused while the server runs, too.
    let gc = run_cli(&["gc", "--data-dir", dir.path().to_str().unwrap()], &[]).await;
    assert!(!gc.ok && gc.stderr.contains(&pid), "{}", gc.stderr);
    first.child.kill().unwrap();
    first.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_log_pipe_does_not_stop_the_server() {
    let h = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server_with(dir.path(), std::process::Stdio::piped());
    drop(server.child.stderr.take()); // the log collector is gone
    let admin = server.admin.clone();
    let r = h
        .http
        .post(format!("{admin}/api/v1/catalog"))
        .json(&h.catalog())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "an import, logged to nowhere");
    let r = h.http.get(format!("{admin}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "still serving");
    assert!(server.child.try_wait().unwrap().is_none(), "still running");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
