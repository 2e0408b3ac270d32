//! Response bodies: mapped store bytes, followers of a download, and the
//! `multipart/byteranges` framing over either.
//!
//! Stored content is sent as slices of one shared map (no copy, no per-request
//! allocation proportional to the file); downloads are streamed as they land.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};

use crate::fetch::Download;

/// The body type of every response of the content listener.
pub type ResponseBody = UnsyncBoxBody<Bytes, io::Error>;

/// Largest frame handed to hyper: big enough for few syscalls, small enough
/// that a connection's unsent data stays bounded.
const FRAME: usize = 512 * 1024;

pub fn empty() -> ResponseBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn text(s: impl Into<String>) -> ResponseBody {
    Full::new(Bytes::from(s.into()))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Where the bytes of a response come from.
#[derive(Clone)]
pub enum Source {
    /// The whole file, mapped from the store.
    Stored(Bytes),
    /// A download in progress.
    Downloading(Arc<Download>),
    /// One range fetched from the upstream on its own (far ahead of a download).
    Upstream(Arc<UpstreamRange>),
}

/// A range's bytes arriving from the upstream; can be streamed once.
pub struct UpstreamRange {
    range: Range<u64>,
    body: std::sync::Mutex<Option<BoxStream<'static, io::Result<Bytes>>>>,
}

impl UpstreamRange {
    pub fn new(range: Range<u64>, body: BoxStream<'static, io::Result<Bytes>>) -> Self {
        UpstreamRange {
            range,
            body: std::sync::Mutex::new(Some(body)),
        }
    }

    fn take(&self, r: Range<u64>) -> BoxStream<'static, io::Result<Bytes>> {
        match self.body.lock().unwrap().take() {
            Some(body) if r == self.range => body,
            _ => stream::once(async { Err(io::Error::other("upstream range mismatch")) }).boxed(),
        }
    }
}

impl Source {
    fn stream(&self, r: Range<u64>) -> BoxStream<'static, io::Result<Bytes>> {
        match self {
            Source::Stored(b) => {
                stream::iter(frames(b.slice(r.start as usize..r.end as usize)).map(Ok)).boxed()
            }
            Source::Downloading(dl) => dl.clone().stream_range(r.start, r.end).boxed(),
            Source::Upstream(up) => up.take(r),
        }
    }
}

/// A piece of a response body: literal framing bytes or a range of the file.
pub enum Part {
    Literal(Bytes),
    File(Range<u64>),
}

impl Part {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> u64 {
        match self {
            Part::Literal(b) => b.len() as u64,
            Part::File(r) => r.end - r.start,
        }
    }
}

/// Builds the body for a sequence of parts.
pub fn from_parts(source: &Source, parts: Vec<Part>) -> ResponseBody {
    let len: u64 = parts.iter().map(Part::len).sum();
    match source {
        Source::Stored(bytes) => {
            let mut queue = VecDeque::new();
            for part in parts {
                match part {
                    Part::Literal(b) => queue.push_back(b),
                    Part::File(r) => {
                        queue.extend(frames(bytes.slice(r.start as usize..r.end as usize)))
                    }
                }
            }
            SliceBody {
                queue,
                remaining: len,
            }
            .boxed_unsync()
        }
        Source::Downloading(_) | Source::Upstream(_) => {
            let source = source.clone();
            let pieces = stream::iter(parts).flat_map(move |part| match part {
                Part::Literal(b) => stream::once(async move { Ok(b) }).boxed(),
                Part::File(r) => source.stream(r),
            });
            StreamBody::new(pieces.map(|r| r.map(Frame::data))).boxed_unsync()
        }
    }
}

/// The bytes of `range` of a download whose length is not known yet:
/// streamed until the download ends.
pub fn open_ended(dl: Arc<Download>) -> ResponseBody {
    let s = dl.stream_range(0, u64::MAX);
    StreamBody::new(s.map(|r| r.map(Frame::data))).boxed_unsync()
}

fn frames(b: Bytes) -> impl Iterator<Item = Bytes> {
    let n = b.len().div_ceil(FRAME);
    (0..n).map(move |i| b.slice(i * FRAME..((i + 1) * FRAME).min(b.len())))
}

/// A body of ready `Bytes` slices with an exact size hint.
struct SliceBody {
    queue: VecDeque<Bytes>,
    remaining: u64,
}

impl Body for SliceBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        Poll::Ready(self.queue.pop_front().map(|b| {
            self.remaining -= b.len() as u64;
            Ok(Frame::data(b))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.queue.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
