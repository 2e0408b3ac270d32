//! Behind a load balancer: connections from `proxy_protocol_from` may start
//! with a PROXY protocol header (v1 or v2), and the access log names the
//! Windows client it carries; from anyone else such a header is refused as
//! the HTTP it is not. A real HAProxy with `send-proxy-v2` proves it end to
//! end. `allow_clients` judges the client so named, not the balancer.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use upcache::config::AccessLogFormat;

use crate::common::*;

/// A harness trusting 127.0.0.1 to send PROXY headers, logging JSON to `log`.
async fn behind_balancer(log: &Path, fast_path: bool) -> Harness {
    let log = log.to_owned();
    let h = Harness::with(|c| {
        c.net.proxy_protocol_from = vec!["127.0.0.1/32".parse().unwrap()];
        c.access_log.access_log = log.display().to_string();
        c.access_log.access_log_format = AccessLogFormat::Json;
        c.content.fast_path = fast_path;
    })
    .await;
    h.setup(&[ID_B]).await;
    assert_eq!(h.get(&h.b.content_path()).await.status(), 200);
    h.settled().await;
    h
}

/// A connection to `h`'s content listener from `source` (any 127/8 address).
async fn connect_from(h: &Harness, source: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(h.running().content_addr).await.unwrap()
}

/// Sends `bytes` and reads until the server closes.
async fn exchange(mut s: TcpStream, bytes: &[u8]) -> String {
    s.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: upcache\r\nConnection: close\r\n\r\n")
}

/// The `remote` of every access log line so far.
async fn remotes(h: &Harness, log: &Path) -> Vec<String> {
    h.running().flush_access_log().await;
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["remote"].to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_balancer_names_the_client_and_no_one_else_can() {
    for fast_path in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let h = behind_balancer(&log, fast_path).await;
        let path = h.b.content_path();

        // v1 from the balancer: served, logged under the client's address.
        let v1 = format!(
            "PROXY TCP4 192.0.2.7 127.0.0.1 50123 8530\r\n{}",
            get(&path)
        );
        let answer = exchange(connect_from(&h, "127.0.0.1").await, v1.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        // v2, IPv6 client.
        let mut v2 = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "[2001:db8::7]:40000"
                    .parse::<std::net::SocketAddr>()
                    .unwrap(),
                "[2001:db8::1]:8530"
                    .parse::<std::net::SocketAddr>()
                    .unwrap(),
            ),
        )
        .build()
        .unwrap();
        v2.extend_from_slice(get(&path).as_bytes());
        let answer = exchange(connect_from(&h, "127.0.0.1").await, &v2).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        // The balancer's own health check comes without a header.
        let answer = exchange(
            connect_from(&h, "127.0.0.1").await,
            get("/healthz").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        // A garbled header from the balancer: dropped, nothing served.
        let answer = exchange(
            connect_from(&h, "127.0.0.1").await,
            format!("PROXY TCP4 nowhere 127.0.0.1 1 2\r\n{}", get(&path)).as_bytes(),
        )
        .await;
        assert_eq!(answer, "");

        // Anyone else: the header is not HTTP (400), and the log has the
        // real peer, never the address it claimed.
        let spoof = format!(
            "PROXY TCP4 192.0.2.66 127.0.0.1 50123 8530\r\n{}",
            get(&path)
        );
        let answer = exchange(connect_from(&h, "127.0.0.2").await, spoof.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        let answer = exchange(connect_from(&h, "127.0.0.2").await, get(&path).as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");

        let mut seen = Vec::new();
        for _ in 0..100 {
            seen = remotes(&h, &log).await;
            if seen.contains(&"\"127.0.0.2\"".to_owned()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for expected in ["\"192.0.2.7\"", "\"2001:db8::7\"", "\"127.0.0.2\""] {
            assert!(
                seen.iter().any(|r| r == expected),
                "fast_path {fast_path}: {expected} in {seen:?}"
            );
        }
        assert!(
            !seen.iter().any(|r| r.contains("192.0.2.66")),
            "fast_path {fast_path}: {seen:?}"
        );
    }
}

/// A HAProxy in `mode` (`http`, or `tcp` for TLS passed through) on a
/// free loopback port, sending PROXY v2 headers to `backend`; `None` (and a
/// SKIPPED line) where haproxy is not installed.
fn haproxy(dir: &Path, mode: &str, backend: std::net::SocketAddr) -> Option<(Haproxy, u16)> {
    if std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .is_err()
    {
        skipped_without("haproxy", "apt-get install haproxy");
        return None;
    }
    let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = front.local_addr().unwrap().port();
    drop(front);
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "defaults\n  mode {mode}\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
             frontend updates\n  bind 127.0.0.1:{port}\n  default_backend upcache\n\
             backend upcache\n  server node1 {backend} send-proxy-v2\n"
        ),
    )
    .unwrap();
    let child = std::process::Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Some((Haproxy(child), port))
}

/// Stopped when dropped.
struct Haproxy(std::process::Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET `url` as a client on 127.0.0.3 (HAProxy connects from 127.0.0.1),
/// retried while HAProxy starts.
async fn get_from_127_0_0_3(client: reqwest::ClientBuilder, url: &str) -> (u16, bytes::Bytes) {
    let client = client
        .local_address("127.0.0.3".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    for _ in 0..100 {
        if let Ok(r) = client.get(url).send().await {
            return (r.status().as_u16(), r.bytes().await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("HAProxy did not answer {url}");
}

/// The last access log line's `remote`, once there are `lines`.
async fn last_remote(h: &Harness, log: &Path, lines: usize) -> Option<String> {
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = remotes(h, log).await;
        if seen.len() >= lines {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen.last().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_real_haproxy_the_log_names_the_windows_client() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let h = behind_balancer(&log, true).await;
    let Some((_haproxy, port)) = haproxy(dir.path(), "http", h.running().content_addr) else {
        return;
    };
    let url = format!("http://127.0.0.1:{port}{}", h.b.content_path());
    let (status, bytes) = get_from_127_0_0_3(reqwest::Client::builder(), &url).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, h.b.bytes);
    assert_eq!(
        last_remote(&h, &log, 2).await.as_deref(),
        Some("\"127.0.0.3\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_passing_tls_through_names_the_client_on_the_https_listener() {
    let dir = tempfile::tempdir().unwrap();
    let pki = private_ca(dir.path(), "corp");
    let log = dir.path().join("access.log");
    let (files, log_path) = (pki.files.clone(), log.clone());
    let h = Harness::with(|c| {
        c.net.proxy_protocol_from = vec!["127.0.0.1/32".parse().unwrap()];
        c.content.set_https("127.0.0.1:0".parse().unwrap(), files);
        c.access_log.access_log = log_path.display().to_string();
        c.access_log.access_log_format = AccessLogFormat::Json;
    })
    .await;
    h.setup(&[ID_B]).await;
    let https = h.running().content_tls_addr.unwrap();
    let Some((_haproxy, port)) = haproxy(dir.path(), "tcp", https) else {
        return;
    };
    let ca = std::fs::read(&pki.ca).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
    let url = format!("https://127.0.0.1:{port}{}", h.b.content_path());
    let (status, bytes) = get_from_127_0_0_3(client, &url).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, h.b.bytes);
    assert_eq!(
        last_remote(&h, &log, 1).await.as_deref(),
        Some("\"127.0.0.3\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_clients_are_served_judged_by_the_address_the_balancer_names() {
    let h = Harness::with(|c| {
        c.net.proxy_protocol_from = vec!["127.0.0.1/32".parse().unwrap()];
        c.net.allow_clients = vec![
            "127.0.0.1/32".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap(),
        ];
    })
    .await;
    h.setup(&[ID_B]).await;
    let path = h.b.content_path();
    let through =
        |client: &str| format!("PROXY TCP4 {client} 127.0.0.1 50123 8530\r\n{}", get(&path));
    for (source, bytes, served) in [
        ("127.0.0.1", get(&path), true),
        ("127.0.0.2", get(&path), false),
        ("127.0.0.1", through("192.0.2.7"), true),
        ("127.0.0.1", through("198.51.100.1"), false),
    ] {
        let answer = exchange(connect_from(&h, source).await, bytes.as_bytes()).await;
        let expected = if served {
            "HTTP/1.1 200 "
        } else {
            "HTTP/1.1 403 "
        };
        assert!(
            answer.starts_with(expected),
            "{source} {:?}: {answer}",
            bytes.lines().next()
        );
        if !served {
            assert!(answer.contains("allow_clients"), "{answer}");
        }
    }
    assert_eq!(h.counter("upcache_clients_refused_total").await, 2);
}
