//! The content listener: what Windows clients talk to.
//!
//! `route` turns a path into a digest, `content` runs the request through
//! catalog, policy, store and fetch, `range` and `conditional` implement the
//! RFC 9110 semantics, `body` builds zero-copy bodies. [`serve`] is the
//! connection plumbing (HTTP/1.1 with keep-alive and pipelining, and h2c).

pub mod body;
pub mod conditional;
pub mod content;
pub mod range;
pub mod route;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use body::ResponseBody;

/// A client that sends no complete request head in this time is dropped
/// (slow-loris clients, idle keep-alive connections).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head buffered per connection (bounded memory per client).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long in-flight responses may run on after shutdown is asked for.
const DRAIN: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` fires, then lets open ones finish
/// (bounded by [`DRAIN`]).
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: Arc<H>,
    header_timeout: Duration,
    shutdown: CancellationToken,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    builder.http2().max_header_list_size(MAX_HEAD_BYTES as u32);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Responses are written as soon as they are ready; Nagle would hold
        // back the tail of each one.
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let fut = handler(req);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain period; closing them");
    }
}
