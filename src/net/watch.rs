//! The socket under hyper (and under TLS), watched: a write that makes no
//! progress for the send timeout fails, and a close lingers.
//!
//! - **Send timeout**, as nginx's `send_timeout`: hyper has none, and a
//!   client that stops reading would hold its connection, its slot and
//!   whatever its response pins (a store map, a download) for ever. The
//!   clock runs only while a write waits for room, and restarts at every
//!   byte taken, so a slow reader that keeps reading is never cut.
//! - **Lingering close**, as nginx's `lingering_close`: when hyper closes a
//!   connection whose client may still be sending (a `413` answered before
//!   the body was read), closing at once would reset the connection and the
//!   client, still writing, might never read the answer. The write side is
//!   shut first, then what the client sends is read and dropped until it
//!   closes, for at most [`LINGER`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::telemetry::metrics::Metrics;

/// The longest a closing connection reads what its client still sends.
pub const LINGER: Duration = Duration::from_secs(5);

/// A stream whose writes must make progress within a limit.
pub struct Watched<IO> {
    inner: IO,
    limit: Duration,
    /// Armed while a write waits for room (allocated at the first wait).
    stall: Option<Pin<Box<Sleep>>>,
    armed: bool,
    metrics: Option<Arc<Metrics>>,
    closing: Closing,
}

enum Closing {
    Open,
    /// The write side is shut; reading until the client closes or this.
    Draining(Pin<Box<Sleep>>),
    Closed,
}

impl<IO> Watched<IO> {
    pub fn new(inner: IO, limit: Duration, metrics: Option<Arc<Metrics>>) -> Self {
        Watched {
            inner,
            limit,
            stall: None,
            armed: false,
            metrics,
            closing: Closing::Open,
        }
    }

    /// A write is waiting for room: `Ready` with the error once it has
    /// waited `limit` since the last byte went.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let deadline = Instant::now() + self.limit;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            stall.as_mut().reset(deadline);
            self.armed = true;
        }
        ready!(stall.as_mut().poll(cx));
        if let Some(m) = &self.metrics {
            m.send_timeout();
        }
        tracing::debug!(limit = ?self.limit, "client took no bytes: connection cut");
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client took no bytes for send_timeout",
        ))
    }

    /// What a write returned, with the stall clock run or stopped.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.poll_stalled(cx).map(Err),
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.closing {
                Closing::Open => {
                    let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
                    ready!(this.watch(cx, polled))?;
                    let until = tokio::time::sleep(LINGER);
                    this.closing = Closing::Draining(Box::pin(until));
                }
                Closing::Draining(until) => {
                    if until.as_mut().poll(cx).is_ready() {
                        this.closing = Closing::Closed;
                        continue;
                    }
                    let mut sink = [0u8; 4096];
                    let mut buf = ReadBuf::new(&mut sink);
                    match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf)) {
                        Ok(()) if !buf.filled().is_empty() => {}
                        _ => this.closing = Closing::Closed, // closed by the client, or failed
                    }
                }
                Closing::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}
