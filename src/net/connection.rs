//! Connection plumbing shared by the content and admin listeners: a cap on
//! connections, bounded head reads, idle timeouts for HTTP/1.1 and h2,
//! h2 keep-alive pings, TLS where configured, and a bounded drain at
//! shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::{service_fn, Service};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::proxy_protocol::{read_start, Start};
use super::rewind::Rewind;
use super::tls::Terminator;

/// Largest request head buffered per connection (bounded memory per client).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long in-flight responses may run on after shutdown is asked for.
const DRAIN: Duration = Duration::from_secs(10);
/// How long a connection closed for idleness may take to say goodbye (h2
/// waits for the peer to acknowledge its GOAWAY ping) before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);
/// h2 pings an otherwise silent peer this often, and drops it if the ping
/// is not answered in [`H2_PING_TIMEOUT`]: a vanished client costs nothing.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The client's address, in every request's extensions (for the access log).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::IpAddr);

/// The bounds one listener enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for a complete request head.
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Connections held at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
}

/// A service hyper can run on every connection of a listener.
pub trait ConnService<B>:
    Service<Request<Incoming>, Response = Response<B>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S, B> ConnService<B> for S where
    S: Service<
            Request<Incoming>,
            Response = Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// A response body hyper can send.
pub trait ResponseBody:
    Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + Unpin + 'static
{
}

impl<B> ResponseBody for B where
    B: Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static
{
}

/// What a listener puts before hyper on each connection.
#[derive(Clone)]
pub enum Front {
    /// Hyper answers everything.
    Plain,
    /// An HTTP/1.1 fast path answers what it owns and hands the connection
    /// to hyper at the first request it does not.
    Fast(Arc<dyn FastPath>),
    /// TLS is terminated first ([`super::tls`]).
    Tls(Arc<Terminator>),
}

/// A server that answers HTTP/1.1 requests straight off the socket before
/// hyper sees them (the content listener's `sendfile` path): the
/// connection layer only knows it by this.
pub trait FastPath: Send + Sync + 'static {
    /// Serves `stream` until it closes or holds a request this path does
    /// not answer; `read`: bytes already read from it.
    fn serve<'a>(
        &'a self,
        stream: &'a mut TcpStream,
        client: std::net::IpAddr,
        limits: Limits,
        shutdown: &'a CancellationToken,
        read: BytesMut,
    ) -> Pin<Box<dyn Future<Output = Exit> + Send + 'a>>;
}

/// How a fast path left a connection.
pub enum Exit {
    /// Closed (by the client, a timeout, shutdown or `Connection: close`).
    Closed,
    /// For hyper to serve from here on, these bytes first.
    Handoff(Bytes),
}

/// Who may use a listener, and whose word on a client's address it takes.
#[derive(Clone, Default)]
pub struct Gate {
    /// Peers (load balancers) whose connections may start with a PROXY
    /// protocol header naming the client ([`super::proxy_protocol`]).
    pub proxies: Vec<IpNet>,
    /// The clients served; empty: all of them.
    pub allow: Vec<IpNet>,
    /// Where refusals are counted.
    pub metrics: Option<Arc<crate::telemetry::metrics::Metrics>>,
}

impl Gate {
    fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.proxies.iter().any(|net| net.contains(&peer))
    }

    fn admits(&self, client: std::net::IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&client))
    }
}

/// Accepts connections until `shutdown` fires, then lets open ones finish
/// (bounded by `DRAIN`). A client `gate` does not admit (judged by the
/// address a trusted balancer names, if one does) gets a `403` and the
/// connection is closed.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    front: Front,
    gate: Arc<Gate>,
    shutdown: CancellationToken,
) where
    S: ConnService<B>,
    B: ResponseBody,
{
    let builder = Arc::new(hyper_builder(limits));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        // At the cap, stop accepting: new clients wait in the kernel's
        // backlog (or time out there) instead of being taken and starved.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let connection = Connection {
            stream,
            peer,
            front: front.clone(),
            gate: gate.clone(),
            hyper: Hyper {
                builder: builder.clone(),
                service: service.clone(),
                peer: Peer(peer.ip()),
                limits,
                shutdown: shutdown.clone(),
            },
        };
        connections.spawn(async move {
            connection.run().await;
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain period; closing them");
    }
}

/// Hyper's settings for every connection of a listener: HTTP/1.1 with the
/// head limits and timeout, h2 with pings that find dead peers.
fn hyper_builder(limits: Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

/// One accepted connection, until it ends.
struct Connection<S> {
    stream: TcpStream,
    peer: std::net::SocketAddr,
    front: Front,
    gate: Arc<Gate>,
    hyper: Hyper<S>,
}

impl<S> Connection<S> {
    /// Learns who the client is (a PROXY header from a trusted balancer),
    /// refuses it outside `allow_clients`, then serves it on its front.
    async fn run<B>(mut self)
    where
        S: ConnService<B>,
        B: ResponseBody,
    {
        // Responses are written as soon as they are ready; Nagle would hold
        // back the tail of each one.
        let _ = self.stream.set_nodelay(true);
        let proxied = self.gate.trusts(self.peer.ip());
        let limits = self.hyper.limits;
        let Some((client, read)) = client_of(&mut self.stream, self.peer, proxied, limits).await
        else {
            return;
        };
        if !self.gate.admits(client) {
            tracing::debug!(%client, "not in allow_clients: refused");
            if let Some(m) = &self.gate.metrics {
                m.client_refused();
            }
            if !matches!(self.front, Front::Tls(_)) {
                super::answer::answer_and_close(&mut self.stream, "403 Forbidden", NOT_ALLOWED)
                    .await;
            }
            return;
        }
        let mut hyper = self.hyper;
        hyper.peer = Peer(client);
        let mut stream = self.stream;
        match self.front {
            Front::Plain => {
                let replay = read.freeze();
                hyper
                    .drive(Rewind {
                        replay,
                        inner: stream,
                    })
                    .await
            }
            Front::Fast(fast) => {
                let served = fast.serve(&mut stream, client, limits, &hyper.shutdown, read);
                if let Exit::Handoff(replay) = served.await {
                    hyper
                        .drive(Rewind {
                            replay,
                            inner: stream,
                        })
                        .await;
                }
            }
            Front::Tls(tls) => {
                let replay = read.freeze();
                let stream = Rewind {
                    replay,
                    inner: stream,
                };
                if let Some(stream) = tls.accept(stream, limits.header_timeout).await {
                    hyper.drive(stream).await;
                }
            }
        }
    }
}

/// What a client outside `allow_clients` is told.
const NOT_ALLOWED: &str = "this upcache serves the networks in its allow_clients only\n";

/// The client a connection is from, and what was read from it already:
/// from a trusted balancer, the address its PROXY header names (if it sent
/// one). `None`: a bad header; the connection is dropped.
async fn client_of(
    stream: &mut TcpStream,
    peer: std::net::SocketAddr,
    proxied: bool,
    limits: Limits,
) -> Option<(std::net::IpAddr, BytesMut)> {
    if !proxied {
        return Some((peer.ip(), BytesMut::new()));
    }
    match read_start(stream, limits.header_timeout).await {
        Ok(Start::Proxied(client, rest)) => Some((client, rest)),
        Ok(Start::Direct(rest)) => Some((peer.ip(), rest)),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "connection dropped");
            None
        }
    }
}

/// What hyper needs to serve one connection.
struct Hyper<S> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: S,
    peer: Peer,
    limits: Limits,
    shutdown: CancellationToken,
}

impl<S> Hyper<S> {
    /// Serves `io` until the peer leaves, it idles out, or shutdown drains it.
    async fn drive<IO, B>(self, io: IO)
    where
        S: ConnService<B>,
        B: ResponseBody,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Hyper {
            builder,
            service,
            peer,
            limits,
            shutdown,
        } = self;
        let activity = Arc::new(Activity::new());
        let tracked = {
            let activity = activity.clone();
            service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(peer);
                let guard = activity.begin();
                let fut = service.call(req);
                async move { Ok::<_, Infallible>(fut.await?.map(|b| Tracked::new(b, guard))) }
            })
        };
        let mut conn = pin!(builder.serve_connection(TokioIo::new(io), tracked));
        let mut closing = false;
        let give_up = tokio::time::sleep(Duration::MAX);
        tokio::pin!(give_up);
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    break;
                }
                _ = shutdown.cancelled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = activity.idle_for(limits.idle_timeout), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    give_up.as_mut().reset(Instant::now() + IDLE_CLOSE_GRACE);
                }
                _ = &mut give_up => break,
            }
        }
    }
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            changed: Notify::new(),
        }
    }

    /// A request has started; it ends when the guard (held by its response
    /// body) is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let changed = self.changed.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                let deadline = *self.idle_since.lock().unwrap() + limit;
                if Instant::now() >= deadline {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}

/// One request in flight (see [`Activity::begin`]).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *self.0.idle_since.lock().unwrap() = Instant::now();
        }
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request counted as in flight until the
/// last byte is sent (or the body is dropped).
struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    fn new(inner: B, in_flight: InFlight) -> Self {
        Tracked {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
