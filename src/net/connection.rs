//! Connection plumbing shared by the content and admin listeners: a cap on
//! connections, bounded head reads, idle timeouts for HTTP/1.1 and h2,
//! h2 keep-alive pings, TLS where configured, and a bounded drain at
//! shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::os::fd::RawFd;
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
use super::watch::Watched;

/// Largest request head buffered per connection: what an unfinished head
/// may cost, renewable every header timeout. Windows clients' heads are
/// under 1 KiB; nginx refuses a header line over 8 KiB. At 64 KiB, 1,500
/// unfinished heads took 100 MB of memory (see benches/README.md).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
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
    /// A response whose client takes no bytes for this long is cut (on
    /// h2: a stream whose body is not asked for its next bytes).
    pub send_timeout: Duration,
    /// Connections one address may hold at once (trusted balancers are
    /// exempt); more are closed as they come.
    pub max_connections_per_ip: usize,
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
    /// Where requests hyper refuses before any service sees them
    /// (malformed heads: its own 400 or 431) are logged.
    pub access_log: Option<crate::telemetry::access_log::AccessLog>,
}

impl Gate {
    fn trusts(&self, peer: std::net::IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.proxies.iter().any(|net| net.contains(&peer))
    }

    fn admits(&self, client: std::net::IpAddr) -> bool {
        let client = client.to_canonical();
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&client))
    }
}

/// Connections held per client address on one listener.
struct PerIp {
    cap: usize,
    held: Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection's share of its address's cap, given back when dropped.
struct Share {
    ip: std::net::IpAddr,
    of: Arc<PerIp>,
}

impl PerIp {
    fn new(cap: usize) -> PerIp {
        PerIp {
            cap,
            held: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// A share for one more connection from `ip`, if it holds fewer than the cap.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<Share> {
        let mut held = self.held.lock().unwrap();
        let n = held.entry(ip).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Share {
            ip,
            of: self.clone(),
        })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = self.of.held.lock().unwrap();
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
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
    let per_ip = Arc::new(PerIp::new(limits.max_connections_per_ip));
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
        // One address may not take the listener: past its share, a
        // connection is closed at once (a balancer speaks for many).
        let ip = peer.ip().to_canonical();
        let share = if gate.trusts(ip) {
            None
        } else {
            match per_ip.take(ip) {
                Some(share) => Some(share),
                None => {
                    tracing::debug!(%ip, "max_connections_per_ip reached: connection closed");
                    if let Some(m) = &gate.metrics {
                        m.over_ip_cap();
                    }
                    continue;
                }
            }
        };
        let connection = Connection {
            stream,
            peer,
            front: front.clone(),
            gate: gate.clone(),
            hyper: Hyper {
                builder: builder.clone(),
                service: service.clone(),
                peer: Peer(ip),
                socket: -1,
                metrics: gate.metrics.clone(),
                access_log: gate.access_log.clone(),
                limits,
                shutdown: shutdown.clone(),
            },
        };
        connections.spawn(async move {
            connection.run().await;
            drop(share);
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
        hyper.socket = std::os::fd::AsRawFd::as_raw_fd(&self.stream);
        let mut stream = self.stream;
        let metrics = self.gate.metrics.clone();
        let watched = |io| Watched::new(io, limits.send_timeout, metrics);
        match self.front {
            Front::Plain => {
                let replay = read.freeze();
                hyper
                    .drive(watched(Rewind {
                        replay,
                        inner: stream,
                    }))
                    .await
            }
            Front::Fast(fast) => {
                let served = fast.serve(&mut stream, client, limits, &hyper.shutdown, read);
                if let Exit::Handoff(replay) = served.await {
                    hyper
                        .drive(watched(Rewind {
                            replay,
                            inner: stream,
                        }))
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
                    hyper
                        .drive(Watched::new(
                            stream,
                            limits.send_timeout,
                            self.gate.metrics.clone(),
                        ))
                        .await;
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
    // An IPv4 client of a dual-stack (`[::]`) listener, or one a balancer
    // names in a TCP6 header, is `::ffff:a.b.c.d`: compared, counted and
    // logged as the IPv4 address it is.
    let peer_ip = peer.ip().to_canonical();
    if !proxied {
        return Some((peer_ip, BytesMut::new()));
    }
    match read_start(stream, limits.header_timeout).await {
        Ok(Start::Proxied(client, rest)) => Some((client.to_canonical(), rest)),
        Ok(Start::Direct(rest)) => Some((peer_ip, rest)),
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
    /// The connection's socket, reset (not closed) when an HTTP/1 response
    /// body fails (see [`Tracked`]).
    socket: RawFd,
    metrics: Option<Arc<crate::telemetry::metrics::Metrics>>,
    access_log: Option<crate::telemetry::access_log::AccessLog>,
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
            socket,
            metrics,
            access_log,
            limits,
            shutdown,
        } = self;
        let activity = Arc::new(Activity::new());
        let tracked = {
            let activity = activity.clone();
            service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(peer);
                let guard = activity.begin();
                // HTTP/1 bodies are polled by the connection's own task,
                // while its socket is open; h2 streams by their own tasks,
                // and the socket's send timeout cannot see one stream's
                // window stay shut: each gets a watch of its own.
                let watch = if req.version() == http::Version::HTTP_2 {
                    Watch::Stream(limits.send_timeout, metrics.clone(), activity.clone())
                } else {
                    Watch::Socket(socket)
                };
                let fut = service.call(req);
                async move { Ok::<_, Infallible>(fut.await?.map(|b| Tracked::new(b, guard, watch))) }
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
                        if let Some(log) = &access_log {
                            log_refused_head(log, peer, &*e);
                        }
                    }
                    break;
                }
                _ = shutdown.cancelled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = activity.cut.notified(), if !closing => {
                    // An h2 stream's client stopped taking its bytes.
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    give_up.as_mut().reset(Instant::now() + IDLE_CLOSE_GRACE);
                }
                _ = activity.idle_for(limits.idle_timeout, limits.header_timeout), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    give_up.as_mut().reset(Instant::now() + IDLE_CLOSE_GRACE);
                }
                _ = &mut give_up => break,
            }
        }
    }
}

/// A head hyper refused itself (malformed, too large): it answered 400
/// or 431 and closed, and no service saw the request. Only the client and
/// the status are known; the line says `-` for the request.
fn log_refused_head(
    log: &crate::telemetry::access_log::AccessLog,
    peer: Peer,
    e: &(dyn std::error::Error + 'static),
) {
    use crate::telemetry::access_log::{CacheStatus, Record, Request};
    let Some(e) = e.downcast_ref::<hyper::Error>() else {
        return;
    };
    let status = match (e.is_parse_too_large(), e.is_parse()) {
        (true, _) => 431,
        (false, true) => 400,
        _ => return,
    };
    let request = Request::new(
        Some(peer.0),
        http::Method::from_bytes(b"-").expect("a token"),
        "-",
        http::Version::HTTP_11,
        &http::HeaderMap::new(),
    );
    log.log(Record {
        request,
        status,
        bytes: 0,
        duration: Duration::ZERO,
        cache: CacheStatus::Answered(crate::telemetry::metrics::Outcome::Refused),
        unverified: false,
    });
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    /// Whether a request ever began: until then the connection is held
    /// to the header timeout, not the idle one (hyper's own head timer
    /// starts only once it knows the protocol, i.e. after the first bytes).
    begun: std::sync::atomic::AtomicBool,
    idle_since: Mutex<Instant>,
    changed: Notify,
    /// Notified when an h2 stream was cut for its send timeout.
    cut: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            begun: std::sync::atomic::AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
            changed: Notify::new(),
            cut: Notify::new(),
        }
    }

    /// A request has started; it ends when the guard (held by its response
    /// body) is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.begun.store(true, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `limit` (for
    /// `first`, before any request began).
    async fn idle_for(&self, limit: Duration, first: Duration) {
        loop {
            let changed = self.changed.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                let limit = if self.begun.load(Ordering::SeqCst) {
                    limit
                } else {
                    first.min(limit)
                };
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

/// How a response body's delivery is watched.
enum Watch {
    /// HTTP/1: the socket's writes are (see [`Watched`]); a body that fails
    /// resets this socket, so that a client reading to the end of the
    /// connection (HTTP/1.0, a length not known) never takes a cut body
    /// for a whole one.
    Socket(RawFd),
    /// h2: this stream's own send timeout.
    Stream(
        Duration,
        Option<Arc<crate::telemetry::metrics::Metrics>>,
        Arc<Activity>,
    ),
}

/// A response body that keeps its request counted as in flight until the
/// last byte is sent (or the body is dropped).
struct Tracked<B> {
    body: Held<B>,
}

enum Held<B> {
    /// Polled by the connection's task; the socket to reset if it fails.
    Own {
        inner: B,
        _in_flight: InFlight,
        socket: RawFd,
    },
    /// An h2 stream's: shared with its watchdog, which drops it (and what
    /// it pins) when the client stops taking it.
    Watched(Arc<StreamWatch<B>>),
}

/// An h2 response body and the time it last handed hyper bytes.
struct StreamWatch<B> {
    body: Mutex<Option<(B, InFlight)>>,
    /// When the body was last polled, and whether it was then waiting for
    /// the client (it had given bytes) rather than for its own source.
    polled: Mutex<(Instant, bool)>,
    done: CancellationToken,
}

impl<B: Send + 'static> Tracked<B> {
    fn new(inner: B, in_flight: InFlight, watch: Watch) -> Self {
        let body = match watch {
            Watch::Socket(socket) => Held::Own {
                inner,
                _in_flight: in_flight,
                socket,
            },
            Watch::Stream(limit, metrics, activity) => {
                let watch = Arc::new(StreamWatch {
                    body: Mutex::new(Some((inner, in_flight))),
                    polled: Mutex::new((Instant::now(), true)),
                    done: CancellationToken::new(),
                });
                tokio::spawn(watch.clone().run(limit, metrics, activity));
                Held::Watched(watch)
            }
        };
        Tracked { body }
    }
}

impl<B: Send + 'static> StreamWatch<B> {
    /// Cuts the stream once it has waited `limit` for its client to take
    /// what it gave: the body (and the store map or download it holds) is
    /// dropped, and the connection is asked to close.
    async fn run(
        self: Arc<Self>,
        limit: Duration,
        metrics: Option<Arc<crate::telemetry::metrics::Metrics>>,
        activity: Arc<Activity>,
    ) {
        loop {
            let (at, waiting_on_client) = *self.polled.lock().unwrap();
            let deadline = if waiting_on_client {
                at + limit
            } else {
                Instant::now() + limit
            };
            tokio::select! {
                _ = self.done.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {}
            }
            let (at, waiting_on_client) = *self.polled.lock().unwrap();
            if waiting_on_client && at.elapsed() >= limit {
                let cut = self.body.lock().unwrap().take();
                if cut.is_some() {
                    if let Some(m) = &metrics {
                        m.send_timeout();
                    }
                    tracing::debug!(?limit, "h2 stream not read: cut");
                    drop(cut);
                    activity.cut.notify_one();
                }
                return;
            }
        }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        if let Held::Watched(watch) = &self.body {
            watch.done.cancel();
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
        match &mut self.body {
            Held::Own { inner, socket, .. } => {
                let polled = Pin::new(inner).poll_frame(cx);
                if matches!(polled, Poll::Ready(Some(Err(_)))) {
                    reset_on_close(*socket);
                }
                polled
            }
            Held::Watched(watch) => {
                let mut held = watch.body.lock().unwrap();
                let Some((inner, _)) = held.as_mut() else {
                    // Cut by the watchdog: never an end that looks whole;
                    // the connection is closing and resets the stream.
                    return Poll::Pending;
                };
                let polled = Pin::new(inner).poll_frame(cx);
                let waiting_on_client = matches!(polled, Poll::Ready(Some(Ok(_))));
                *watch.polled.lock().unwrap() = (Instant::now(), waiting_on_client);
                if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
                    watch.done.cancel();
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Held::Own { inner, .. } => inner.is_end_stream(),
            Held::Watched(watch) => watch
                .body
                .lock()
                .unwrap()
                .as_ref()
                .is_none_or(|(b, _)| b.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Held::Own { inner, .. } => inner.size_hint(),
            Held::Watched(watch) => watch
                .body
                .lock()
                .unwrap()
                .as_ref()
                .map_or_else(SizeHint::default, |(b, _)| b.size_hint()),
        }
    }
}

/// Makes the close of `socket` a reset (`SO_LINGER` 0): an HTTP/1 client
/// whose response has no length reads to the end of the connection, and a
/// plain close would end a cut body as if it were whole.
fn reset_on_close(socket: RawFd) {
    if socket < 0 {
        return;
    }
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the socket is open: its connection's task is polling this
    // body. A failure leaves a plain close, which is all one can do.
    unsafe {
        libc::setsockopt(
            socket,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
