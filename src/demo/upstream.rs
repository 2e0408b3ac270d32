//! A real HTTP upstream on loopback serving generated update files: what the
//! demo, the integration tests and the benchmarks download from, in place of
//! Microsoft Update. It counts requests and can be told to misbehave.

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

/// Size of the pieces a throttled upstream sends.
const PIECE: usize = 64 * 1024;

#[derive(Default)]
struct State {
    files: RwLock<HashMap<String, Bytes>>,
    hits: Mutex<HashMap<String, u64>>,
    total: AtomicU64,
    corrupt: AtomicBool,
    /// Bytes per second; 0 is unthrottled.
    rate: AtomicU64,
    /// Delay before the response head, in milliseconds.
    head_delay_ms: AtomicU64,
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
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let shutdown = CancellationToken::new();
        let s = state.clone();
        let handler = Arc::new(move |req: Request<hyper::body::Incoming>| {
            let s = s.clone();
            async move { answer(&s, req).await }
        });
        tokio::spawn(crate::http::serve(listener, handler, shutdown.clone()));
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

    /// Flip one byte in the middle of every body from now on.
    pub fn set_corrupt(&self, on: bool) {
        self.state.corrupt.store(on, Ordering::SeqCst);
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

    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
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
    let rate = s.rate.load(Ordering::SeqCst);
    let len = bytes.len();
    let body = if rate == 0 {
        http_body_util::Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync()
    } else {
        let pause = Duration::from_secs_f64(PIECE as f64 / rate as f64);
        let pieces = futures_util::stream::iter(
            (0..len.div_ceil(PIECE))
                .map(move |i| bytes.slice(i * PIECE..((i + 1) * PIECE).min(len))),
        )
        .then(move |piece| async move {
            tokio::time::sleep(pause).await;
            Ok::<_, std::io::Error>(Frame::data(piece))
        });
        StreamBody::new(pieces).boxed_unsync()
    };
    Response::builder()
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .unwrap()
}
