//! A real HTTP upstream on loopback serving generated update files: what the
//! demo, the integration tests and the benchmarks download from, in place of
//! Microsoft Update. It counts requests, honours single `Range` requests, and
//! can be told to misbehave the ways real links do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::body::{self, ResponseBody};

/// Size of the pieces a body is sent in.
const PIECE: usize = 64 * 1024;

/// Ways to misbehave, each for the next `times` responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Send this many body bytes, then reset the connection.
    DropAfter(u64),
    /// Send this many body bytes, then stop sending (never finish).
    StallAfter(u64),
    /// Send the body, then this many extra bytes (chunked, no Content-Length).
    ExtraBytes(u64),
}

#[derive(Default)]
struct State {
    files: RwLock<HashMap<String, Bytes>>,
    hits: Mutex<HashMap<String, u64>>,
    total: AtomicU64,
    ranged: AtomicU64,
    corrupt: AtomicBool,
    ignore_range: AtomicBool,
    /// Bytes per second; 0 is unthrottled.
    rate: AtomicU64,
    /// Delay before the response head, in milliseconds.
    head_delay_ms: AtomicU64,
    faults: Mutex<Option<(Fault, u32)>>,
}

/// A running upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    shutdown: CancellationToken,
}

impl Upstream {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> std::io::Result<Upstream> {
        Self::start_on("127.0.0.1:0".parse().expect("address")).await
    }

    /// Starts on `addr` (to come back on the same port after [`Upstream::stop`]).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Upstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let shutdown = CancellationToken::new();
        let s = state.clone();
        let handler = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let s = s.clone();
            async move { Ok::<_, std::convert::Infallible>(answer(&s, req).await) }
        });
        let limits = crate::net::Limits {
            // Every client of the test upstream is on loopback.
            max_connections_per_ip: usize::MAX,
            ..crate::net::NetSettings::default().content_limits()
        };
        tokio::spawn(crate::net::serve(
            listener,
            handler,
            limits,
            crate::net::Front::Plain,
            Arc::default(),
            shutdown.clone(),
        ));
        Ok(Upstream {
            addr,
            state,
            shutdown,
        })
    }

    /// Serves `bytes` at `path` (e.g. `/c/msdownload/update/.../x_<sha1>.cab`).
    pub fn add(&self, path: &str, bytes: Bytes) {
        self.state
            .files
            .write()
            .unwrap()
            .insert(path.to_owned(), bytes);
    }

    /// The absolute URL of `path` on this upstream.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received for `path`.
    pub fn requests(&self, path: &str) -> u64 {
        self.state
            .hits
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Requests received in all.
    pub fn total_requests(&self) -> u64 {
        self.state.total.load(Ordering::SeqCst)
    }

    /// Requests that carried a `Range` header.
    pub fn ranged_requests(&self) -> u64 {
        self.state.ranged.load(Ordering::SeqCst)
    }

    /// Flip one byte in the middle of every body from now on.
    pub fn set_corrupt(&self, on: bool) {
        self.state.corrupt.store(on, Ordering::SeqCst);
    }

    /// Answer `Range` requests with the whole file (200), as some servers do.
    pub fn set_ignore_range(&self, on: bool) {
        self.state.ignore_range.store(on, Ordering::SeqCst);
    }

    /// Send bodies at `bytes_per_sec` (0: as fast as possible).
    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.state.rate.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Wait this long before answering.
    pub fn set_head_delay(&self, delay: Duration) {
        self.state
            .head_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Misbehave with `fault` on the next `times` responses that carry a file.
    pub fn inject(&self, fault: Fault, times: u32) {
        *self.state.faults.lock().unwrap() = Some((fault, times));
    }

    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn take_fault(s: &State) -> Option<Fault> {
    let mut faults = s.faults.lock().unwrap();
    let (fault, times) = faults.as_mut()?;
    let fault = *fault;
    *times -= 1;
    if *times == 0 {
        *faults = None;
    }
    Some(fault)
}

/// `bytes=a-` or `bytes=a-b` → the half-open range, if satisfiable.
fn single_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let (a, b) = value.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = a.parse().ok()?;
    let end = if b.is_empty() {
        len
    } else {
        b.parse::<u64>().ok()?.saturating_add(1).min(len)
    };
    (start < end).then_some((start, end))
}

async fn answer<B>(s: &State, req: Request<B>) -> Response<ResponseBody> {
    let path = req.uri().path().to_owned();
    s.total.fetch_add(1, Ordering::SeqCst);
    *s.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let delay = s.head_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let Some(mut bytes) = s.files.read().unwrap().get(&path).cloned() else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(body::text("not here\n"))
            .unwrap();
    };
    if s.corrupt.load(Ordering::SeqCst) && !bytes.is_empty() {
        let mut v = bytes.to_vec();
        let mid = v.len() / 2;
        v[mid] ^= 0xff;
        bytes = v.into();
    }
    let full_len = bytes.len() as u64;
    let mut response = Response::builder().header(header::CONTENT_TYPE, "application/octet-stream");
    if let Some(range) = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        s.ranged.fetch_add(1, Ordering::SeqCst);
        if !s.ignore_range.load(Ordering::SeqCst) {
            let Some((start, end)) = single_range(range, full_len) else {
                return Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{full_len}"))
                    .body(body::empty())
                    .unwrap();
            };
            bytes = bytes.slice(start as usize..end as usize);
            response = response.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{full_len}", end - 1),
            );
        }
    }
    let fault = take_fault(s);
    if !matches!(fault, Some(Fault::ExtraBytes(_))) {
        response = response.header(header::CONTENT_LENGTH, bytes.len());
    }
    let rate = s.rate.load(Ordering::SeqCst);
    response.body(body_of(bytes, rate, fault)).unwrap()
}

/// The body: pieces at `rate`, shaped by `fault`.
fn body_of(bytes: Bytes, rate: u64, fault: Option<Fault>) -> ResponseBody {
    let (send, tail): (u64, Option<Fault>) = match fault {
        Some(Fault::DropAfter(n) | Fault::StallAfter(n)) => (n.min(bytes.len() as u64), fault),
        _ => (bytes.len() as u64, fault),
    };
    let data = bytes.slice(..send as usize);
    let len = data.len();
    let pieces =
        (0..len.div_ceil(PIECE)).map(move |i| data.slice(i * PIECE..((i + 1) * PIECE).min(len)));
    let pause = (rate > 0).then(|| Duration::from_secs_f64(PIECE as f64 / rate as f64));
    let body = futures_util::stream::iter(pieces).then(move |piece| async move {
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
        Ok::<_, std::io::Error>(Frame::data(piece))
    });
    let ending = futures_util::stream::once(async move {
        match tail {
            Some(Fault::DropAfter(_)) => {
                Some(Err(std::io::Error::other("injected connection drop")))
            }
            Some(Fault::StallAfter(_)) => {
                std::future::pending::<()>().await;
                None
            }
            Some(Fault::ExtraBytes(n)) => {
                Some(Ok(Frame::data(Bytes::from(vec![0xEE; n as usize]))))
            }
            None => None,
        }
    })
    .filter_map(|x| async move { x });
    StreamBody::new(body.chain(ending)).boxed_unsync()
}
