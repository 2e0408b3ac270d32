//! Time to first body byte for N clients asking for one URL at the same
//! moment (the load benchmark's cold-start test). A Rust client, so the
//! measurement floor is well under a millisecond.
//!
//! Usage: `ttfb HOST:PORT PATH CLIENTS` → one JSON line:
//! `{"ttfb_ms":[...],"whole":N}` (bodies received complete).

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, path, clients] = args.as_slice() else {
        eprintln!("usage: ttfb HOST:PORT PATH CLIENTS");
        std::process::exit(2);
    };
    let clients: usize = clients.parse().expect("CLIENTS is a number");
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        let s = TcpStream::connect(addr.as_str()).await.expect("connect");
        s.set_nodelay(true).unwrap();
        conns.push(s);
    }
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    // From the first request sent: a fast server may answer the first
    // clients before the last request is written.
    let t0 = Instant::now();
    for c in &mut conns {
        c.write_all(request.as_bytes()).await.unwrap();
    }
    let all_started = std::sync::Arc::new(tokio::sync::Barrier::new(clients));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::spawn(client(c, t0, all_started.clone())))
        .collect();
    let mut ttfb = Vec::new();
    let mut whole = 0;
    for t in tasks {
        let (ms, ok) = t.await.unwrap();
        ttfb.push(ms);
        whole += ok as usize;
    }
    let list: Vec<String> = ttfb.iter().map(|t| format!("{t:.3}")).collect();
    println!("{{\"ttfb_ms\":[{}],\"whole\":{whole}}}", list.join(","));
}

/// Reads the head and the first body byte (timed) in small reads; once
/// every client has its first byte, drains the body. Draining waits for
/// the others so that, on a machine whose cores the tool shares with the
/// server, one client emptying its socket (tokio lets a task run 128
/// reads before it yields) does not delay another's first read: the
/// times measure the server, not the tool's scheduling.
async fn client(
    mut c: TcpStream,
    t0: Instant,
    all_started: std::sync::Arc<tokio::sync::Barrier>,
) -> (f64, bool) {
    let mut buf = vec![0u8; 16 << 10];
    let mut got = Vec::new();
    let (head_end, ttfb) = loop {
        let n = c.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the body");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() > i + 4 {
                break (i + 4, t0.elapsed().as_secs_f64() * 1e3);
            }
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = got.len() - head_end;
    all_started.wait().await;
    buf.resize(1 << 20, 0);
    loop {
        match c.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body += n,
        }
    }
    (ttfb, body == length)
}
