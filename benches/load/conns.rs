//! Connections held: starts the real `upcache serve` with the soft open-file
//! limit a shell hands over (`ulimit -Sn 1024`), then
//! 1. opens 10,000 keep-alive connections, each served a range of a stored
//!    file and then served again while all of them are open;
//! 2. opens 2,000 slow-loris connections that trickle header bytes, and
//!    times 200 ordinary requests meanwhile.
//!
//! `cargo run --release --example conns -- target/release/upcache [CONNS] [LORIS]`
//! (`scripts/connections.sh` builds and runs it). Loopback only.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use upcache::demo::upstream::Upstream;
use upcache::demo::{update_json, SampleFile};

#[path = "child.rs"]
mod child;

use child::KillOnDrop;

const ID: &str = "00000000-0000-4000-8000-0000000000c1";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .context("usage: conns UPCACHE_BINARY [CONNS] [LORIS]")?;
    let conns: usize = args.get(2).map_or(Ok(10_000), |a| a.parse())?;
    let loris: usize = args.get(3).map_or(Ok(2_000), |a| a.parse())?;
    raise_own_fd_limit();

    let upstream = Upstream::start().await?;
    let file = SampleFile::generate("5040001", "cab", 1 << 20);
    upstream.add(&file.path, file.bytes.clone());
    let dir = tempfile::tempdir()?;
    let mut child = KillOnDrop(Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn 1024 && exec {bin} serve --data-dir {} --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --max-connections-per-ip 1000000",
            dir.path().display()
        ))
        .env("RUST_LOG", "upcache=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?);
    let mut banner = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut banner)?;
    let urls: Vec<&str> = banner
        .split_whitespace()
        .filter(|w| w.starts_with("http://"))
        .collect();
    let [content, admin] = urls[..] else {
        bail!("unexpected banner {banner:?}")
    };
    let addr = content.trim_start_matches("http://").to_owned();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let limit_line = std::thread::spawn(move || {
        stderr
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("open file limit"))
    });

    let http = reqwest::Client::new();
    let catalog = serde_json::json!({ "updates": [update_json(ID, "5040001", "Held connections", &[&file], &upstream)] });
    http.post(format!("{admin}/api/v1/catalog"))
        .json(&catalog)
        .send()
        .await?
        .error_for_status()?;
    http.post(format!("{admin}/api/v1/updates/{ID}/approve"))
        .send()
        .await?
        .error_for_status()?;
    let path = format!("/microsoftupdate/content/{}", file.sha1);
    let warm = http
        .get(format!("{content}{path}"))
        .send()
        .await?
        .bytes()
        .await?;
    assert!(warm == file.bytes, "warm-up download");
    println!(
        "server: {}",
        limit_line.join().unwrap().unwrap_or_default().trim()
    );

    // 1. Connections held.
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1023\r\n\r\n");
    let started = Instant::now();
    let mut held = Vec::with_capacity(conns);
    let mut failed = 0;
    for batch in (0..conns).collect::<Vec<_>>().chunks(500) {
        let opened = futures_util::future::join_all(batch.iter().map(|_| async {
            let mut s = TcpStream::connect(&addr).await?;
            exchange(&mut s, &request).await?;
            Ok::<_, std::io::Error>(s)
        }))
        .await;
        for s in opened {
            match s {
                Ok(s) => held.push(s),
                Err(_) => failed += 1,
            }
        }
    }
    let opened_in = started.elapsed();
    let pid = child.id();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let rss = proc_status_kib(pid, "RssAnon:");
    let again =
        futures_util::future::join_all(held.iter_mut().map(|s| exchange(s, &request))).await;
    let served_again = again.iter().filter(|r| r.is_ok()).count();
    println!(
        "connections: {} of {conns} opened and served in {:.1} s ({failed} failed); all {} open at once, {served_again} served again; server fds {fds}, anonymous RSS {} MiB",
        held.len(),
        opened_in.as_secs_f64(),
        held.len(),
        rss / 1024
    );
    drop(held);

    // 2. Slow loris.
    let mut trickling = Vec::with_capacity(loris);
    for _ in 0..loris {
        let mut s = TcpStream::connect(&addr).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await?;
        trickling.push(tokio::spawn(async move {
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if s.write_all(b"X").await.is_err() {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let range = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=65536-131071\r\nConnection: close\r\n\r\n"
    );
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let mut s = TcpStream::connect(&addr).await?;
        exchange(&mut s, &range).await?;
        times.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "slow loris: {loris} connections trickling headers; 200 requests (new connection, 64 KiB range): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(times[100]),
        ms(times[198]),
        ms(times[199])
    );
    for t in trickling {
        t.abort();
    }
    drop(child);
    Ok(())
}

/// Sends one request and reads its whole response (by Content-Length).
async fn exchange(s: &mut TcpStream, request: &str) -> std::io::Result<()> {
    s.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 2") {
            return Err(std::io::Error::other(head));
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Ok(());
        }
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn raise_own_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid struct pointers.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
