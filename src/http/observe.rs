//! The end of a content request: its duration, the file bytes it sent and
//! its access log line, recorded when the last body byte has gone (or the
//! client has), by the hyper path ([`Observed`]) and the fast path alike.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::body::ResponseBody;
use crate::telemetry::access_log::{self, AccessLog, CacheStatus, Record};
use crate::telemetry::metrics::{Metrics, Outcome};

/// How a request was answered, known when its head went out.
pub struct Answer {
    pub outcome: Outcome,
    pub status: u16,
    pub started: Instant,
    /// The logged fields of the request, when the access log is on.
    pub request: Option<access_log::Request>,
    /// An unverified Delivery Optimization object (marked in the log).
    pub unverified: bool,
}

impl Answer {
    /// Records the request as ended, having sent `sent` body bytes;
    /// `failed` when the body ended in an error of ours.
    pub fn finish(self, metrics: &Metrics, log: Option<&AccessLog>, sent: u64, failed: bool) {
        let duration = self.started.elapsed();
        let file_bytes = match (self.outcome, self.status) {
            (Outcome::Hit | Outcome::Miss | Outcome::Coalesced, 200 | 206) => sent,
            _ => 0,
        };
        metrics.request_finished(self.outcome, duration, file_bytes);
        if let (Some(log), Some(request)) = (log, self.request) {
            log.log(Record {
                request,
                status: self.status,
                bytes: sent,
                duration,
                cache: CacheStatus::of(self.outcome, self.status, failed),
                unverified: self.unverified,
            });
        }
    }
}

/// A response body that counts what it sends and records the request
/// when it ends or is dropped (a client gone mid-body included).
pub struct Observed {
    inner: ResponseBody,
    sent: u64,
    failed: bool,
    end: Option<(Answer, Arc<Metrics>, Option<AccessLog>)>,
}

impl Observed {
    pub fn new(
        inner: ResponseBody,
        answer: Answer,
        metrics: Arc<Metrics>,
        log: Option<AccessLog>,
    ) -> Observed {
        Observed {
            inner,
            sent: 0,
            failed: false,
            end: Some((answer, metrics, log)),
        }
    }

    fn finish(&mut self) {
        if let Some((answer, metrics, log)) = self.end.take() {
            answer.finish(&metrics, log.as_ref(), self.sent, self.failed);
        }
    }
}

impl Body for Observed {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                self.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Poll::Ready(Some(Err(_))) => {
                self.failed = true;
                self.finish();
            }
            Poll::Ready(None) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.finish();
    }
}
