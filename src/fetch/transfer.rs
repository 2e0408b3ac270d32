//! The upstream side of a download: the request, resumption after an
//! interruption, and the writer thread that hashes into the store (all but
//! the first bytes, which the receiving task writes itself: see
//! [`Transfer::write_first_bytes`]).
//!
//! An interrupted transfer (reset, stall, early close) is resumed with
//! `Range: bytes={written}-` a bounded number of times with exponential
//! backoff. An upstream that ignores `Range` (answers 200) is handled by
//! discarding the prefix already written. Followers never notice: they read
//! the temp file, which only ever grows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::download::{Download, Phase};
use super::parts::{PartSink, Parts, FIRST_SPAN};
use super::{FetchError, FetchSettings, ObjectSource};
use crate::store::{Expected, Ingest, IngestError, Ingested};
use crate::telemetry::metrics::Metrics;

/// Upstream chunks queued for the writer thread: bounds memory per download
/// while letting hashing overlap the network. A chunk is at most hyper's
/// largest read (~408 KiB), so a download holds at most ~3.3 MiB queued
/// plus the batch being written. It was 32 (~13 MiB): five large downloads
/// at once left ~60 MiB that glibc kept after they ended; one cold 512 MiB
/// download is as fast with 8 (0.79-0.86 s against 0.81-0.96 s).
const WRITE_QUEUE: usize = 8;

/// The first bytes written by the receiving task itself.
const INLINE_FIRST: usize = 16 << 10;

/// Most bytes handed to the ingest at once.
const WRITE_BATCH: usize = 1 << 20;
/// The first batch is small and each next one twice as large. Followers
/// can send nothing before a batch is hashed and written; a writer thread
/// scheduled late on a busy machine found a megabyte queued, and a cold
/// burst's first bytes waited ~5 ms for it (0.2 ms now).
const FIRST_WRITE_BATCH: usize = 16 << 10;

type Body = BoxStream<'static, Result<Bytes, FetchError>>;

/// What one upstream transfer needs.
pub(super) struct Transfer<'a> {
    pub client: &'a reqwest::Client,
    /// The upstream rate limit, when this transfer is from the upstream.
    pub throttle: Option<&'a Arc<super::Throttle>>,
    pub settings: &'a FetchSettings,
    pub metrics: &'a Metrics,
    pub url: &'a str,
    /// A file larger than the store may hold is refused up front.
    pub max_store: Option<u64>,
    /// An object without a catalog entry: its URL (fresh tokens) and
    /// pinned identity (see `object.rs`).
    pub object: Option<&'a super::ObjectSource>,
}

/// Where a receive stands.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// Bytes of the file written so far: where the next one goes.
    pos: u64,
    /// Where the current response ends, if known.
    response_end: Option<u64>,
    /// Where this receive stops: the file's end, or its part's.
    end: Option<u64>,
    /// The file's length, if known.
    total: Option<u64>,
}

/// What the first response says.
struct Opened {
    total: Option<u64>,
    /// Where its body ends: the file's end, or part of the way for an
    /// object's first range.
    response_end: Option<u64>,
}

enum Pumped {
    /// The body ended.
    Finished,
    /// The writer refused a chunk; its own error says why.
    WriterStopped,
    Failed(FetchError),
}

impl Transfer<'_> {
    /// Downloads into `ingest`, resuming after interruptions, and commits.
    pub async fn run(
        &self,
        dl: &Arc<Download>,
        mut ingest: Ingest,
        expected: &Expected,
    ) -> Result<Ingested, FetchError> {
        self.check_room(&ingest, expected.size)?;
        if expected.sha256.is_some() || self.unverified(expected) {
            // Declared by the catalog or learned from a verified copy, the
            // SHA-256 binds the bytes as the SHA-1 does: one hash, not two.
            // An unverified object needs only the SHA-256 it is stored under.
            ingest.without_sha1();
        }
        let mut response = self.request(self.first_range(), false).await?;
        if asks_again_whole(&response) {
            // An empty object (every range of it is unsatisfiable), or one
            // of unknown length: the whole of it, in one piece.
            response = self.request(None, false).await?;
        }
        let opened = self.open(&response, expected.size)?;
        let total = opened.total;
        self.check_room(&ingest, total)?;
        if let Some(size) = total {
            ingest.limit_size(size);
        }
        let parts = self.parts_of(&opened);
        if let Some(parts) = &parts {
            dl.set_parts(parts.clone());
        }
        dl.update(|p| {
            p.phase = Phase::Receiving;
            p.total = total;
            p.receiving_since = Some(Instant::now());
        });

        let (first, body) = self
            .write_first_bytes(dl, &mut ingest, self.body(response))
            .await?;
        let span = Span {
            pos: first,
            response_end: opened.response_end,
            end: total,
            total,
        };
        let ingest = match parts {
            None => self.receive_span(dl, ingest, body, span).await?,
            Some(parts) => self.receive_parts(dl, ingest, body, span, &parts).await?,
        };
        // An HQ upcache whose tag changed while this download ran vouched
        // for the object's SHA-256: the bytes from before and after must
        // make it, or it was another object and nothing is stored.
        let vouched = self
            .object
            .and_then(ObjectSource::vouched)
            .filter(|_| self.unverified(expected));
        let expected = Expected {
            size: total,
            sha256: expected.sha256.or(vouched),
            ..expected.clone()
        };
        let unverified = self.unverified(&expected);
        let committed = tokio::task::spawn_blocking(move || {
            if unverified {
                ingest.commit_unverified(expected.size)
            } else {
                ingest.commit(&expected)
            }
        })
        .await
        .map_err(|e| FetchError::Store(e.to_string()))?;
        committed
            .map_err(ingest_error)
            .map_err(|e| match (e, vouched) {
                (FetchError::Verification(why), Some(digest)) => FetchError::Changed(format!(
                    "the bytes are not the {digest} the upstream upcache vouched for: {why}"
                )),
                (e, _) => e,
            })
    }

    /// The range of an object's first request: the whole of a small one,
    /// part 0 of a large one (see `parts.rs`). A catalog file's first
    /// request asks for all of it.
    fn first_range(&self) -> Option<(u64, Option<u64>)> {
        self.object.map(|_| (0, Some(FIRST_SPAN)))
    }

    /// Checks the first response: a 200, or a 206 from the first byte for
    /// an object. Pins an object's identity; says the file's length and
    /// where this response ends.
    fn open(
        &self,
        response: &reqwest::Response,
        catalog_size: Option<u64>,
    ) -> Result<Opened, FetchError> {
        let status = response.status();
        if status == reqwest::StatusCode::OK {
            if let Some(object) = self.object {
                object.pin(super::Identity::of(response));
            }
            let total = expected_total(catalog_size, response.content_length())?;
            return Ok(Opened {
                total,
                response_end: total,
            });
        }
        let Some(object) = self
            .object
            .filter(|_| status == reqwest::StatusCode::PARTIAL_CONTENT)
        else {
            return Err(self.status_error(response));
        };
        let identity = super::Identity::of(response);
        let (start, end) = content_range(response).ok_or_else(|| {
            FetchError::Transfer(format!("{} answered 206 without a Content-Range", self.url))
        })?;
        let total = identity.len.filter(|_| start == 0).ok_or_else(|| {
            FetchError::Transfer(format!(
                "{} answered the first range with bytes {start}-{end} of an unknown length",
                self.url
            ))
        })?;
        let total = expected_total(catalog_size, Some(total))?;
        object.pin(identity);
        Ok(Opened {
            total,
            response_end: Some(end + 1),
        })
    }

    /// The parts of an object whose first response was part of it.
    /// Not under `upstream_rate_limit` (the parts would share its rate, each
    /// flow slowed to a trickle that a read timeout may take for a stall),
    /// nor below an HQ upcache (`upstream`).
    fn parts_of(&self, opened: &Opened) -> Option<Arc<Parts>> {
        self.object?;
        if self.throttle.is_some_and(|t| t.bytes_per_sec().is_some()) {
            return None;
        }
        // Below an HQ upcache, which fetches in parts itself: a branch's
        // parts would be ranges far ahead of an HQ download in one piece.
        if self.settings.upstream.is_some() {
            return None;
        }
        let (Some(end), Some(total)) = (opened.response_end, opened.total) else {
            return None;
        };
        let most = self.settings.do_download_parts;
        (end < total)
            .then(|| Parts::layout(total, most))
            .flatten()
            .map(Arc::new)
    }

    /// Receives `span` into `ingest` on the writer thread, resuming after
    /// interruptions; gives the ingest back.
    async fn receive_span(
        &self,
        dl: &Arc<Download>,
        ingest: Ingest,
        body: Body,
        span: Span,
    ) -> Result<Ingest, FetchError> {
        let (tx, rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        let writer = spawn_writer(dl.clone(), ingest, rx, self.settings);
        // The watchdog bounds the whole transfer, resumptions included: a
        // link that trickles nothing is given up, and its followers with it.
        let received = tokio::select! {
            received = self.receive(dl, body, span, &tx) => received,
            idle = dl.stalled(self.settings.stall) => Err(FetchError::Stalled(idle)),
        };
        drop(tx);
        let ingest = writer
            .await
            .map_err(|e| FetchError::Store(e.to_string()))??;
        received?;
        Ok(ingest)
    }

    /// An object in parts: part 0 here (its first bytes are in `body`),
    /// each other part by a worker of its own, all at once; then the
    /// other parts adopted into the hashes, in order, as they fill.
    async fn receive_parts(
        &self,
        dl: &Arc<Download>,
        ingest: Ingest,
        body: Body,
        span: Span,
        parts: &Parts,
    ) -> Result<Ingest, FetchError> {
        tracing::info!(url = %self.url, parts = parts.len(), "fetching an object in parts");
        let writer = ingest.part_writer();
        let workers = futures_util::future::try_join_all((1..parts.len()).map(|index| {
            let sink = PartSink {
                parts,
                index,
                writer: &writer,
            };
            self.fetch_part(dl, sink)
        }));
        let main = async {
            let first = Span {
                end: Some(parts.span(0).end),
                ..span
            };
            let ingest = self.receive_span(dl, ingest, body, first).await?;
            self.adopt_parts(dl, ingest, parts, span.total).await
        };
        tokio::pin!(main, workers);
        // The main future ends once every part is adopted (each worker is
        // done or has given up by then); failing, it drops the workers. A
        // worker that finds the object changed (or the disk full) fails
        // the download at once, before more of it is served.
        tokio::select! {
            result = &mut main => result,
            workers = &mut workers => match workers {
                Ok(_) => main.await,
                Err(e) => Err(e),
            },
        }
    }

    /// Adopts parts 1.. into the ingest in order as their workers write
    /// them; a part its worker gave up on is fetched on from here.
    async fn adopt_parts(
        &self,
        dl: &Arc<Download>,
        mut ingest: Ingest,
        parts: &Parts,
        total: Option<u64>,
    ) -> Result<Ingest, FetchError> {
        let mut changes = dl.changes();
        for i in 1..parts.len() {
            let end = parts.span(i).end;
            while ingest.written() < end {
                changes.borrow_and_update();
                // Read before how far it got: a worker gives up after its
                // last write, so a part seen given up has its end final.
                let abandoned = parts.is_abandoned(i);
                let to = parts.written_to(i);
                if ingest.written() < to {
                    ingest = adopt(dl, ingest, to).await?;
                } else if abandoned {
                    let pos = ingest.written();
                    let rest = Span {
                        pos,
                        response_end: Some(pos),
                        end: Some(end),
                        total,
                    };
                    let nothing = stream::empty().boxed();
                    ingest = self.receive_span(dl, ingest, nothing, rest).await?;
                } else {
                    tokio::select! {
                        _ = changes.changed() => {}
                        idle = dl.stalled(self.settings.stall) => return Err(FetchError::Stalled(idle)),
                    }
                }
            }
        }
        Ok(ingest)
    }

    /// One part's worker: a bounded range request from where the part has
    /// got to, resumed after transient failures. Gives up (the transfer
    /// then fetches the rest) on other failures of the link or when its
    /// resumes are spent; fails the download when the object changed or
    /// the disk is full.
    async fn fetch_part(&self, dl: &Download, sink: PartSink<'_>) -> Result<(), FetchError> {
        let mut resumes = 0u32;
        while sink.pos() < sink.end() {
            let failure = match self.part_body(sink.pos(), sink.end()).await {
                Ok((body, response_end)) => match self.pump_part(dl, body, &sink).await {
                    Ok(()) if sink.pos() >= sink.end() => return Ok(()),
                    // A 206 shorter than asked (some CDNs cap a range's
                    // length) is not a failure: ask for the rest.
                    Ok(()) if sink.pos() == response_end => continue,
                    Ok(()) => FetchError::Transfer(format!(
                        "{} closed part {} after {} bytes",
                        self.url,
                        sink.index,
                        sink.pos()
                    )),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if matches!(failure, FetchError::Changed(_) | FetchError::DiskFull) {
                return Err(failure);
            }
            if !is_transient(&failure) || resumes >= self.settings.max_resumes {
                tracing::warn!(part = sink.index, at = sink.pos(), error = %failure, "a part's worker gave up; the download fetches the rest");
                sink.parts.abandon(sink.index);
                dl.part_wrote(0);
                return Ok(());
            }
            resumes += 1;
            self.metrics.resume();
            dl.resumed();
            tokio::time::sleep(backoff(resumes)).await;
        }
        Ok(())
    }

    /// The origin's answer for bytes `pos..end` of the object: a 206 from
    /// `pos`, of the pinned identity; its body and where it ends.
    async fn part_body(&self, pos: u64, end: u64) -> Result<(Body, u64), FetchError> {
        let response = self.request(Some((pos, Some(end))), true).await?;
        // Another identity first: an origin whose object changed answers
        // `If-Range` with the whole of the new one (a 200).
        if let Some(object) = self.object.filter(|_| response.status().is_success()) {
            object.check(&response)?;
        }
        if response.status() != reqwest::StatusCode::PARTIAL_CONTENT {
            return Err(self.status_error(&response));
        }
        // An answer running past the part's end is cut there (`pump_part`).
        match content_range(&response) {
            Some((start, last)) if start == pos => Ok((self.body(response), (last + 1).min(end))),
            other => Err(FetchError::Transfer(format!(
                "{} answered a part of {pos}..{end} with {other:?}",
                self.url
            ))),
        }
    }

    /// A body's next chunk, `None` at its end; a read that waits longer
    /// than `read_timeout` is a timeout.
    async fn next_chunk(&self, body: &mut Body) -> Result<Option<Bytes>, FetchError> {
        match tokio::time::timeout(self.settings.read_timeout, body.next()).await {
            Err(_) => Err(FetchError::Timeout(format!(
                "{} stalled for {:?}",
                self.url, self.settings.read_timeout
            ))),
            Ok(next) => next.transpose(),
        }
    }

    /// Writes one part's body where it belongs, waking the followers.
    async fn pump_part(
        &self,
        dl: &Download,
        mut body: Body,
        sink: &PartSink<'_>,
    ) -> Result<(), FetchError> {
        loop {
            let Some(chunk) = self.next_chunk(&mut body).await? else {
                return Ok(());
            };
            let room = sink.end() - sink.pos();
            let overran = chunk.len() as u64 > room;
            let chunk = if overran {
                chunk.slice(..room as usize)
            } else {
                chunk
            };
            self.metrics.upstream_bytes(chunk.len() as u64);
            let free = sink.writer.free_bytes();
            check_reserve(free, chunk.len() as u64, sink.pos(), self.settings)?;
            // Into the page cache: as cheap as the followers' own reads.
            sink.write(&chunk)
                .map_err(|e| FetchError::Store(e.to_string()))?;
            dl.part_wrote(chunk.len() as u64);
            if overran {
                return Ok(());
            }
        }
    }

    /// Writes the body's first bytes (at most [`INLINE_FIRST`]) from this
    /// task; returns how many, and the rest of the body. Every follower
    /// waits for these bytes; handed to the writer thread they waited for
    /// its wake-up, which on a busy machine waits for a core (0.3-2 ms
    /// measured in a cold burst), while hashing and writing them takes
    /// tens of microseconds. An error or the end stays in the body.
    async fn write_first_bytes(
        &self,
        dl: &Download,
        ingest: &mut Ingest,
        mut body: Body,
    ) -> Result<(u64, Body), FetchError> {
        let first = tokio::time::timeout(self.settings.read_timeout, body.next()).await;
        let mut chunk = match first {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) => return Ok((0, body)),
            // For `receive` to resume or give up on, as on any other read.
            Ok(Some(Err(e))) => return Ok((0, put_back(Err(e), body))),
            Err(_) => {
                let why = format!("{} stalled for {:?}", self.url, self.settings.read_timeout);
                return Ok((0, put_back(Err(FetchError::Timeout(why)), body)));
            }
        };
        let rest = chunk.split_off(chunk.len().min(INLINE_FIRST));
        self.metrics.upstream_bytes(chunk.len() as u64);
        let len = chunk.len() as u64;
        let written = write_checked(ingest, vec![chunk], len, self.settings)?;
        dl.update(|p| p.written = written);
        if rest.is_empty() {
            return Ok((written, body));
        }
        Ok((written, put_back(Ok(rest), body)))
    }

    /// Feeds bodies to the writer until `span.end`, resuming on transient
    /// failures; a bounded response that ends where it should is followed
    /// by a request for the next bytes (not a resume).
    async fn receive(
        &self,
        dl: &Download,
        first: Body,
        span: Span,
        tx: &mpsc::Sender<Bytes>,
    ) -> Result<(), FetchError> {
        let Span {
            mut pos,
            mut response_end,
            end,
            total,
        } = span;
        let mut body = first;
        let mut skip = 0u64; // bytes to discard from a body that restarted at 0
        let mut resumes = 0u32;
        loop {
            // A part's end is a hard stop: the bytes after it are another
            // part's, written by its own worker.
            let stop = end.filter(|&e| Some(e) != total);
            let failure = match self.pump(body, tx, &mut pos, &mut skip, stop).await {
                Pumped::WriterStopped => return Ok(()),
                Pumped::Finished if end.is_none_or(|e| pos >= e) => return Ok(()),
                Pumped::Finished if response_end == Some(pos) => None,
                Pumped::Finished => Some(FetchError::Transfer(format!(
                    "{} closed after {pos} bytes",
                    self.url
                ))),
                Pumped::Failed(e) => Some(e),
            };
            if let Some(failure) = failure {
                if !is_transient(&failure) || resumes >= self.settings.max_resumes {
                    return Err(failure);
                }
                resumes += 1;
                self.metrics.resume();
                dl.resumed();
                tracing::warn!(url = %self.url, at = pos, attempt = resumes, error = %failure, "resuming download");
                tokio::time::sleep(backoff(resumes)).await;
            }
            body = match self.reopen(pos, end, total).await {
                Ok((b, discard, ends)) => {
                    skip = discard;
                    response_end = ends;
                    b
                }
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            };
        }
    }

    /// Moves one body's chunks to the writer, none past `stop`: a body
    /// that runs on beyond it ends there.
    async fn pump(
        &self,
        mut body: Body,
        tx: &mpsc::Sender<Bytes>,
        pos: &mut u64,
        skip: &mut u64,
        stop: Option<u64>,
    ) -> Pumped {
        loop {
            let mut chunk = match self.next_chunk(&mut body).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Pumped::Finished,
                Err(e) => return Pumped::Failed(e),
            };
            self.metrics.upstream_bytes(chunk.len() as u64);
            if *skip > 0 {
                let n = (*skip).min(chunk.len() as u64);
                chunk.advance(n as usize);
                *skip -= n;
                if chunk.is_empty() {
                    continue;
                }
            }
            let overran = stop.is_some_and(|stop| *pos + chunk.len() as u64 > stop);
            if let Some(stop) = stop.filter(|_| overran) {
                chunk.truncate((stop - *pos) as usize);
            }
            *pos += chunk.len() as u64;
            if tx.send(chunk).await.is_err() {
                return Pumped::WriterStopped;
            }
            if overran {
                return Pumped::Finished;
            }
        }
    }

    /// Asks for the file's bytes from `pos` to `end` (to its end when
    /// `end` is the file's). Returns the body, how many of its leading
    /// bytes to discard (all of `pos` if Range was ignored), and where it
    /// ends: a 206 may be shorter than asked (some CDNs cap a range's
    /// length), which is no failure: the next request asks for the rest.
    async fn reopen(
        &self,
        pos: u64,
        end: Option<u64>,
        total: Option<u64>,
    ) -> Result<(Body, u64, Option<u64>), FetchError> {
        let bounded = end.filter(|&e| Some(e) != total);
        let response = self.request(Some((pos, bounded)), true).await?;
        if let Some(object) = self.object {
            if response.status().is_success() {
                object.check(&response)?;
            }
        }
        match response.status() {
            reqwest::StatusCode::PARTIAL_CONTENT => match content_range(&response) {
                Some((start, last)) if start == pos => Ok((self.body(response), 0, Some(last + 1))),
                other => Err(FetchError::Transfer(format!(
                    "{} answered a resume from {pos} with Content-Range {other:?}",
                    self.url
                ))),
            },
            reqwest::StatusCode::OK if bounded.is_none() => {
                expected_total(total, response.content_length())?;
                tracing::info!(url = %self.url, "upstream ignored Range; skipping {pos} bytes");
                Ok((self.body(response), pos, total))
            }
            _ => Err(self.status_error(&response)),
        }
    }

    /// Asks the upstream for the file, or for `range` (its start, and its
    /// end unless it runs to the file's). An object's request is made with
    /// its freshest URL; a `resume`'s refused for its token waits for a
    /// fresher one, where clients bring them (not from the shared tier).
    async fn request(
        &self,
        range: Option<(u64, Option<u64>)>,
        resume: bool,
    ) -> Result<reqwest::Response, FetchError> {
        let Some(object) = self.object else {
            return self.request_from(self.url, range, None).await;
        };
        loop {
            let url = object.url();
            let if_range = object
                .identity()
                .and_then(|i| i.if_range().map(str::to_owned));
            let response = self.request_from(&url, range, if_range.as_deref()).await?;
            // A resume refused for its token (expired since the download
            // began): the bytes written stay, and the next client's request
            // brings a fresh token (the stall watchdog bounds the wait).
            let expired = matches!(response.status().as_u16(), 403 | 410);
            if !resume || !expired || !object.is_renewable() {
                return Ok(response);
            }
            tracing::info!(range = ?range, status = %response.status(), "object token refused on resume; waiting for a fresh one");
            object.fresher_than(&url).await;
        }
    }

    async fn request_from(
        &self,
        url: &str,
        range: Option<(u64, Option<u64>)>,
        if_range: Option<&str>,
    ) -> Result<reqwest::Response, FetchError> {
        let mut req = self.client.get(url);
        if let Some((from, to)) = range {
            let value = match to {
                Some(to) => format!("bytes={from}-{}", to - 1),
                None => format!("bytes={from}-"),
            };
            req = req.header(reqwest::header::RANGE, value);
            if let Some(validator) = if_range {
                req = req.header(reqwest::header::IF_RANGE, validator);
            }
        }
        tokio::time::timeout(self.settings.read_timeout, req.send())
            .await
            .map_err(|_| {
                FetchError::Timeout(format!(
                    "no response from {url} in {:?}",
                    self.settings.read_timeout
                ))
            })?
            .map_err(|e| classify(&e, url))
    }

    /// An object with no digest known from elsewhere: stored unverified.
    /// Never a catalog file, which always has its SHA-1.
    fn unverified(&self, expected: &Expected) -> bool {
        self.object.is_some() && expected.sha1.is_none() && expected.sha256.is_none()
    }

    fn body(&self, response: reqwest::Response) -> Body {
        let url = self.url.to_owned();
        let body = response
            .bytes_stream()
            .map(move |r| r.map_err(|e| classify(&e, &url)))
            .boxed();
        match self.throttle {
            Some(throttle) => throttle.limit(body),
            None => body,
        }
    }

    fn status_error(&self, response: &reqwest::Response) -> FetchError {
        FetchError::UpstreamStatus {
            status: response.status().as_u16(),
            url: self.url.to_owned(),
        }
    }
}

impl Transfer<'_> {
    /// Refuses, before any byte is sent to a client, a download the disk
    /// (less its reserve), `max_store_bytes` or `max_file_bytes` cannot hold.
    fn check_room(&self, ingest: &Ingest, size: Option<u64>) -> Result<(), FetchError> {
        let Some(size) = size else { return Ok(()) };
        if let Some(max) = self.max_store.filter(|&max| size > max) {
            return Err(FetchError::LargerThanStore { size, max });
        }
        if let Some(max) = self.settings.max_file_bytes.filter(|&max| size > max) {
            return Err(FetchError::LargerThanLimit { size, max });
        }
        match ingest.free_bytes() {
            Some(free) if size.saturating_add(self.settings.disk_reserve) > free => {
                tracing::error!(
                    size,
                    free,
                    reserve = self.settings.disk_reserve,
                    "not enough disk space for a download"
                );
                Err(FetchError::DiskFull)
            }
            _ => Ok(()),
        }
    }
}

/// Writes `chunks` (`len` bytes) after [`check_write`]; returns the bytes
/// written so far.
fn write_checked(
    ingest: &mut Ingest,
    chunks: Vec<Bytes>,
    len: u64,
    settings: &FetchSettings,
) -> Result<u64, FetchError> {
    check_write(ingest, len, settings)?;
    ingest.write_chunks(chunks).map_err(ingest_error)?;
    Ok(ingest.written())
}

/// Checks made before each write: a file of unknown size (or another
/// download) must not run the disk into its reserve or past `max_file_bytes`.
fn check_write(ingest: &Ingest, len: u64, settings: &FetchSettings) -> Result<(), FetchError> {
    let size = ingest.written() + len;
    if let Some(max) = settings.max_file_bytes.filter(|&max| size > max) {
        return Err(FetchError::LargerThanLimit { size, max });
    }
    check_reserve(ingest.free_bytes(), len, size - len, settings)
}

/// Refuses a write of `len` bytes (`at` of the file written before it)
/// that would run the disk into its reserve.
fn check_reserve(
    free: Option<u64>,
    len: u64,
    at: u64,
    settings: &FetchSettings,
) -> Result<(), FetchError> {
    match free {
        Some(free) if free < len.saturating_add(settings.disk_reserve) => {
            tracing::error!(
                free,
                written = at,
                "disk reserve reached mid-download; cutting it"
            );
            Err(FetchError::DiskFull)
        }
        _ => Ok(()),
    }
}

/// The size to expect: the catalog's, checked against the upstream's.
fn expected_total(catalog: Option<u64>, announced: Option<u64>) -> Result<Option<u64>, FetchError> {
    match (catalog, announced) {
        (Some(want), Some(got)) if want != got => Err(FetchError::Verification(format!(
            "upstream announces {got} bytes, the catalog says {want}"
        ))),
        (Some(size), _) | (None, Some(size)) => Ok(Some(size)),
        (None, None) => Ok(None),
    }
}

/// Failures worth resuming after: the link, not the content.
fn is_transient(e: &FetchError) -> bool {
    match e {
        FetchError::Timeout(_) | FetchError::Transfer(_) | FetchError::Connect(_) => true,
        FetchError::UpstreamStatus { status, .. } => *status >= 500,
        _ => false,
    }
}

/// 200 ms, 400 ms, 800 ms ... capped at 10 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(7)).min(Duration::from_secs(10))
}

/// How long the transfer rate is measured over.
pub(super) const RATE_WINDOW: Duration = Duration::from_millis(250);

/// The download's current rate: bytes over the last [`RATE_WINDOW`].
struct RateMeter {
    since: Instant,
    from: u64,
}

impl RateMeter {
    /// The rate once a window is over (restarting it), else `None`. The
    /// first estimate comes sooner, so a range can be judged early.
    fn sample(&mut self, written: u64, first: bool) -> Option<u64> {
        let elapsed = self.since.elapsed();
        let window = if first { RATE_WINDOW / 5 } else { RATE_WINDOW };
        if elapsed < window {
            return None;
        }
        let rate = ((written - self.from) as f64 / elapsed.as_secs_f64()) as u64;
        (self.since, self.from) = (Instant::now(), written);
        Some(rate.max(1))
    }
}

/// Writes and hashes queued chunks on a blocking thread, publishing progress.
fn spawn_writer(
    dl: Arc<Download>,
    mut ingest: Ingest,
    mut rx: mpsc::Receiver<Bytes>,
    settings: &FetchSettings,
) -> tokio::task::JoinHandle<Result<Ingest, FetchError>> {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        let mut meter = RateMeter {
            since: Instant::now(),
            from: ingest.written(),
        };
        let mut most = FIRST_WRITE_BATCH;
        while let Some(first) = rx.blocking_recv() {
            // Take whatever else is queued too: fewer, larger hand-offs to
            // the ingest's sidecar thread.
            let mut batch = vec![first];
            let mut size = batch[0].len();
            while size < most {
                let Ok(more) = rx.try_recv() else { break };
                size += more.len();
                batch.push(more);
            }
            most = (most * 2).min(WRITE_BATCH);
            let written = write_checked(&mut ingest, batch, size as u64, &settings)?;
            dl.update(|p| {
                p.written = written;
                if let Some(rate) = meter.sample(written, p.rate == 0) {
                    p.rate = rate;
                }
            });
        }
        Ok(ingest)
    })
}

/// Whether an object's first answer, to its first range, calls for the
/// whole object instead: a 416 (an empty object: no range of it can be
/// satisfied) or a 206 that does not say the object's length.
fn asks_again_whole(response: &reqwest::Response) -> bool {
    match response.status() {
        reqwest::StatusCode::RANGE_NOT_SATISFIABLE => true,
        reqwest::StatusCode::PARTIAL_CONTENT => super::Identity::of(response).len.is_none(),
        _ => false,
    }
}

/// A 206's `Content-Range: bytes first-last/…`: its first and last byte.
fn content_range(response: &reqwest::Response) -> Option<(u64, u64)> {
    let value = response
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let (first, last) = value
        .strip_prefix("bytes ")?
        .split_once('/')?
        .0
        .split_once('-')?;
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some((first, last))
}

/// Adopts what a part has written up to `to` into the ingest's hashes
/// (on the blocking pool: a read of up to a part), publishing the progress.
async fn adopt(dl: &Download, mut ingest: Ingest, to: u64) -> Result<Ingest, FetchError> {
    let len = to - ingest.written();
    let ingest = tokio::task::spawn_blocking(move || ingest.adopt(len).map(|()| ingest))
        .await
        .map_err(|e| FetchError::Store(e.to_string()))?
        .map_err(ingest_error)?;
    let written = ingest.written();
    dl.update(|p| p.written = written);
    Ok(ingest)
}

/// `body` with `item` in front of it again.
fn put_back(item: Result<Bytes, FetchError>, body: Body) -> Body {
    stream::once(async { item }).chain(body).boxed()
}

fn ingest_error(e: IngestError) -> FetchError {
    if e.is_disk_full() {
        FetchError::DiskFull
    } else if e.is_verification_failure() {
        FetchError::Verification(e.to_string())
    } else {
        FetchError::Store(e.to_string())
    }
}

fn classify(e: &reqwest::Error, url: &str) -> FetchError {
    if e.is_timeout() {
        FetchError::Timeout(format!("{url}: {e}"))
    } else if e.is_connect() {
        FetchError::Connect(format!("{url}: {e}"))
    } else {
        FetchError::Transfer(format!("{url}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(30), Duration::from_secs(10));
    }

    #[test]
    fn only_link_failures_are_resumed() {
        assert!(is_transient(&FetchError::Timeout("t".into())));
        assert!(is_transient(&FetchError::UpstreamStatus {
            status: 503,
            url: "u".into()
        }));
        assert!(!is_transient(&FetchError::UpstreamStatus {
            status: 404,
            url: "u".into()
        }));
        assert!(!is_transient(&FetchError::Verification("v".into())));
        assert!(!is_transient(&FetchError::DiskFull));
    }
}
