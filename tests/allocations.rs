//! Allocations per warm hit on the HTTP/1.1 fast path, counted by a global
//! allocator in this test binary alone (the server runs in-process, so
//! every allocation it makes is counted). The client is a plain blocking
//! socket on its own thread that allocates nothing per request.

#[allow(dead_code)]
#[path = "e2e/common.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use common::{Harness, ID_B};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

const REQUESTS: u64 = 2_000;

/// Sends `request` [`REQUESTS`] times on one keep-alive connection, each
/// after the previous response is read in full; returns allocations per
/// request. The first response (read to learn its length) is not counted.
fn allocations_per_request(addr: std::net::SocketAddr, request: &str) -> f64 {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    conn.write_all(request.as_bytes()).unwrap();
    let len = read_response(&mut conn, &mut buf, request.starts_with("HEAD"));
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..REQUESTS {
        conn.write_all(request.as_bytes()).unwrap();
        conn.read_exact(&mut buf[..len]).unwrap();
    }
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    (after - before) as f64 / REQUESTS as f64
}

/// Reads one response with a `Content-Length` body; returns its length
/// (every later response to the same request has the same length: the
/// `Date` value is fixed-width).
fn read_response(conn: &mut std::net::TcpStream, buf: &mut [u8], head_only: bool) -> usize {
    let mut got = 0;
    loop {
        let n = conn.read(&mut buf[got..]).unwrap();
        assert!(n > 0, "the server closed the connection");
        got += n;
        let text = String::from_utf8_lossy(&buf[..got]).into_owned();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        assert!(
            text.starts_with("HTTP/1.1 2") || text.starts_with("HTTP/1.1 304"),
            "{}",
            &text[..end]
        );
        let body: usize = text[..end]
            .lines()
            .find_map(|l| {
                let l = l.to_ascii_lowercase();
                l.strip_prefix("content-length: ")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let bodiless = head_only || text.starts_with("HTTP/1.1 304");
        let total = end + 4 + if bodiless { 0 } else { body };
        while got < total {
            got += conn.read(&mut buf[got..total]).unwrap();
        }
        return total;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_hit_on_the_fast_path_allocates_nothing_per_request() {
    let h = Harness::new().await;
    h.setup(&[ID_B]).await;
    let path = h.b.content_path();
    assert_eq!(h.get(&path).await.bytes().await.unwrap(), h.b.bytes);
    let addr = h.running().content_addr;
    // Budgets per request. Background work (metrics, timers) allocates a
    // little now and then, hence the half allocation; a range pays for the
    // parsed range list (one in `http-range-header`, one resolved).
    let cases = [
        ("whole file", format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"), 0.5),
        (
            "one range",
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-66535\r\n\r\n"),
            2.5,
        ),
        (
            "HEAD",
            format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: Windows-Update-Agent\r\n\r\n"),
            0.5,
        ),
        (
            "revalidation (304)",
            format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n\r\n"
            ),
            0.5,
        ),
    ];
    for (what, request, budget) in cases {
        let per_request =
            tokio::task::spawn_blocking(move || allocations_per_request(addr, &request))
                .await
                .unwrap();
        println!("{what}: {per_request:.2} allocations per request (budget {budget})");
        assert!(
            per_request <= budget,
            "{what}: {per_request:.2} allocations per request, budget {budget}"
        );
    }
}
