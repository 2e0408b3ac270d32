//! One running download and the readers that follow it.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

use super::parts::Parts;
use super::{FetchError, FetchStatus};
use crate::catalog::FileEntry;
use crate::store::{Ingest, Partial};

/// Largest piece a follower reads from the temp file at once.
const READ_CHUNK: u64 = 256 * 1024;
/// A follower's first read: small, so that a hundred clients woken by the
/// same first bytes all get theirs quickly (at 256 KiB each, the last of
/// 100 waited for 25 MiB of copies); each read doubles up to [`READ_CHUNK`].
const FIRST_READ: u64 = 16 * 1024;

/// Where a download is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for an upstream slot (the number of downloads is bounded).
    Queued,
    /// Waiting for the upstream's response head.
    Connecting,
    /// Bytes are arriving.
    Receiving,
    /// Verified and published in the store.
    Done,
    Failed(FetchError),
}

/// A download's state as seen by its followers.
#[derive(Debug, Clone)]
pub struct Progress {
    pub phase: Phase,
    /// Bytes written to the temp file (readable by followers).
    pub written: u64,
    /// Expected size: from the catalog, else the upstream's Content-Length.
    pub total: Option<u64>,
    /// When the first response head arrived (for the transfer rate).
    pub receiving_since: Option<Instant>,
    /// Times the transfer, or one of its parts, was resumed after an
    /// interruption.
    pub resumes: u32,
    /// Bytes per second over the last measuring window (0 until known).
    pub rate: u64,
    /// Bytes the parts beyond the first have written (see `parts.rs`):
    /// each write wakes the followers, and counts as progress.
    pub parted: u64,
}

impl Progress {
    /// How far a follower may read: what is written, less the file's last
    /// byte until the whole file is verified. A response that ends at the
    /// end of the file therefore cannot complete before verification, and a
    /// failed one is cut one byte short (unknown sizes hold back the newest
    /// byte, which is the last one when the upstream ends).
    fn readable(&self) -> u64 {
        match self.phase {
            Phase::Done => self.written,
            _ if self.total.is_some_and(|t| self.written < t) => self.written,
            _ => self.written.saturating_sub(1),
        }
    }

    /// When the download will have written up to `pos` at its current
    /// rate: `Some(ZERO)` if it has, `None` while no rate is known.
    pub fn reaches(&self, pos: u64) -> Option<Duration> {
        if pos <= self.written {
            return Some(Duration::ZERO);
        }
        (self.rate > 0)
            .then(|| Duration::from_secs_f64((pos - self.written) as f64 / self.rate as f64))
    }
}

/// A download in progress, shared by the task that runs it and its followers.
pub struct Download {
    /// What status shows: the file's SHA-1 in hex, or an object's key.
    id: Arc<str>,
    name: Arc<str>,
    /// Our own handle on the temp file, set once the download holds a slot
    /// and has created it; stays valid across the commit's rename.
    reader: OnceLock<Partial>,
    progress: watch::Sender<Progress>,
    started: Instant,
    /// Where the bytes come from once known: the origin, or a presigned
    /// URL of the shared tier (`true`); a far-ahead range is asked of the
    /// same place.
    source: OnceLock<(String, bool)>,
    /// The request that started the download was handed to another path
    /// before it was answered: the next join answers it, and counts the miss.
    start_handed_over: AtomicBool,
    /// An object fetched in parts side by side: where each has written.
    parts: OnceLock<Arc<Parts>>,
}

impl Download {
    /// A queued download: no temp file yet (see [`Download::attach`]).
    pub(super) fn new(file: &FileEntry, name: &str) -> Download {
        Download::queued(file.sha1.to_hex().into(), name, file.size)
    }

    /// A queued download of an object without a catalog entry, by its key.
    pub(super) fn new_object(key: &str, size: Option<u64>) -> Download {
        Download::queued(key.into(), key, size)
    }

    fn queued(id: Arc<str>, name: &str, size: Option<u64>) -> Download {
        Download {
            id,
            name: name.into(),
            reader: OnceLock::new(),
            progress: watch::Sender::new(Progress {
                phase: Phase::Queued,
                written: 0,
                total: size,
                receiving_since: None,
                resumes: 0,
                rate: 0,
                parted: 0,
            }),
            started: Instant::now(),
            source: OnceLock::new(),
            start_handed_over: AtomicBool::new(false),
            parts: OnceLock::new(),
        }
    }

    /// The starter's request goes on elsewhere (the fast path hands a
    /// download of unknown length to hyper, which joins it again): that
    /// join, not this one, is the miss.
    pub fn hand_over_start(&self) {
        self.start_handed_over.store(true, Ordering::SeqCst);
    }

    /// Whether this join takes over a start handed over (once).
    pub(super) fn take_start(&self) -> bool {
        self.start_handed_over.swap(false, Ordering::SeqCst)
    }

    /// Records where the bytes are downloaded from.
    pub(super) fn set_source(&self, url: String, shared_tier: bool) {
        let _ = self.source.set((url, shared_tier));
    }

    /// Where the bytes are downloaded from, once the download has a slot.
    pub fn source(&self) -> Option<&str> {
        self.source.get().map(|(url, _)| url.as_str())
    }

    /// Whether they come from the shared tier, not the upstream.
    pub fn from_shared_tier(&self) -> bool {
        self.source.get().is_some_and(|(_, shared)| *shared)
    }

    /// Lays the download out in parts fetched side by side.
    pub(super) fn set_parts(&self, parts: Arc<Parts>) {
        let _ = self.parts.set(parts);
    }

    /// Whether the download is fetched in parts (every byte is then on its
    /// way already: no range is far ahead).
    pub fn is_parted(&self) -> bool {
        self.parts.get().is_some()
    }

    /// Records `n` more bytes written by a part beyond the first, waking
    /// the followers.
    pub(super) fn part_wrote(&self, n: u64) {
        self.update(|p| p.parted += n);
    }

    /// Counts one more resume, of the transfer or of one of its parts.
    pub(super) fn resumed(&self) {
        self.update(|p| p.resumes += 1);
    }

    /// Gives followers their handle on the temp file `ingest` writes.
    pub(super) fn attach(&self, ingest: &Ingest) -> io::Result<()> {
        let _ = self.reader.set(ingest.reader()?);
        Ok(())
    }

    /// Resolves when nothing has been written for `limit` (a stalled
    /// download, whatever its retries are doing); never resolves otherwise.
    pub(super) async fn stalled(&self, limit: Duration) -> Duration {
        let mut rx = self.progress.subscribe();
        let moved = |p: &Progress| p.written + p.parted;
        let mut last = moved(&rx.borrow_and_update());
        let mut since = tokio::time::Instant::now();
        loop {
            match tokio::time::timeout_at(since + limit, rx.changed()).await {
                Err(_) => return since.elapsed(),
                Ok(Err(_)) => std::future::pending::<()>().await,
                Ok(Ok(())) => {
                    let written = moved(&rx.borrow_and_update());
                    if written != last {
                        last = written;
                        since = tokio::time::Instant::now();
                    }
                }
            }
        }
    }

    /// The progress once it can tell when `pos` will be reached (a rate is
    /// known, `pos` is written, or the download is over), waiting at most `limit`.
    pub async fn measured(&self, pos: u64, limit: Duration) -> Progress {
        let mut rx = self.progress.subscribe();
        let known = |p: &Progress| {
            p.rate > 0 || p.written >= pos || matches!(p.phase, Phase::Done | Phase::Failed(_))
        };
        let _ = tokio::time::timeout(limit, rx.wait_for(known)).await;
        let progress = rx.borrow().clone();
        progress
    }

    /// Waits until the download has been receiving for `window` (its rate
    /// is then measured over a whole window), has written `pos`, or is
    /// over; at most `limit`.
    pub async fn received_for(&self, pos: u64, window: Duration, limit: Duration) {
        let mut rx = self.progress.subscribe();
        let known = |p: &Progress| {
            p.receiving_since.is_some_and(|t| t.elapsed() >= window)
                || p.written >= pos
                || matches!(p.phase, Phase::Done | Phase::Failed(_))
        };
        let _ = tokio::time::timeout(limit, rx.wait_for(known)).await;
    }

    /// Waits while the download is queued for a slot, at most `limit`:
    /// `false` if it is still queued then.
    pub async fn left_queue(&self, limit: Duration) -> bool {
        let mut rx = self.progress.subscribe();
        let left = tokio::time::timeout(limit, rx.wait_for(|p| p.phase != Phase::Queued)).await;
        left.is_ok()
    }

    /// The progress, to wait on its changes.
    pub(super) fn changes(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Waits until the upstream has answered: the expected size is then
    /// known (if it can be), or the download has failed before any byte.
    pub async fn started(&self) -> Result<Option<u64>, FetchError> {
        let mut rx = self.progress.subscribe();
        let p = rx
            .wait_for(|p| !matches!(p.phase, Phase::Queued | Phase::Connecting))
            .await
            .map_err(|_| FetchError::Transfer("download task ended".into()))?;
        match &p.phase {
            Phase::Failed(e) => Err(e.clone()),
            _ => Ok(p.total),
        }
    }

    /// Waits for the end of the download.
    pub async fn finished(&self) -> Result<(), FetchError> {
        let mut rx = self.progress.subscribe();
        let p = rx
            .wait_for(|p| matches!(p.phase, Phase::Done | Phase::Failed(_)))
            .await
            .map_err(|_| FetchError::Transfer("download task ended".into()))?;
        match &p.phase {
            Phase::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Progress)) {
        self.progress.send_modify(f);
    }

    pub(super) fn finish(&self, outcome: Result<(), FetchError>) {
        self.progress.send_modify(|p| {
            p.phase = match outcome {
                Ok(()) => Phase::Done,
                Err(e) => Phase::Failed(e),
            }
        });
    }

    pub(super) fn status(&self) -> FetchStatus {
        let p = self.progress.borrow();
        let parts = self.parts.get();
        let done = parts.map_or(p.written, |parts| parts.written_total(p.written));
        let receiving = p.receiving_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
        // The window's rate sees the download's own flow only: in parts,
        // the average since the first answer over every part's bytes.
        let bytes_per_second = match p.rate {
            rate if rate > 0 && parts.is_none() => rate,
            _ if receiving > 0.0 => (done as f64 / receiving) as u64,
            _ => 0,
        };
        FetchStatus {
            sha1: self.id.to_string(),
            name: self.name.to_string(),
            queued: p.phase == Phase::Queued,
            bytes_done: done,
            bytes_total: p.total,
            bytes_per_second,
            clients: self.progress.receiver_count(),
            resumes: p.resumes,
            seconds: self.started.elapsed().as_secs_f64(),
        }
    }

    /// Bytes `start..end` as they land. A range inside what is already written
    /// streams at once; the rest follows the writer, woken by the `watch`
    /// channel (no polling). If the download fails the stream ends with an
    /// error, which cuts the client's connection mid-body.
    pub fn stream_range(
        self: Arc<Self>,
        start: u64,
        end: u64,
    ) -> impl Stream<Item = io::Result<Bytes>> + Send {
        let state = (self.follow(), start, FIRST_READ);
        futures_util::stream::unfold(state, move |(mut follow, pos, chunk)| async move {
            if pos >= end {
                return None;
            }
            let available = match follow.readable(pos, end).await {
                Ok(Some(available)) => available,
                Ok(None) => return None, // the length was unknown: the end
                Err(e) => return Some((Err(e), (follow, end, chunk))),
            };
            if chunk > FIRST_READ {
                // Between reads, let the other followers have theirs: without
                // this a follower runs until its socket is full, and the
                // last of a hundred woken together waited for the others'
                // copies (tens of ms) for its first byte.
                tokio::task::yield_now().await;
            }
            let len = (end.min(available) - pos).min(chunk);
            // Read in place, not on the blocking pool: these bytes were written
            // moments ago and sit in the page cache, so the read is a memcpy of
            // at most READ_CHUNK. A pool hop per chunk per follower cost 100
            // simultaneous followers of a cold file tens of milliseconds.
            let mut buf = vec![0u8; len as usize];
            let read = match follow.file() {
                Some(reader) => reader
                    .read_exact_at(&mut buf, pos)
                    .map(|_| Bytes::from(buf)),
                None => Err(io::Error::other("bytes before the temp file exists")),
            };
            let next = if read.is_ok() { pos + len } else { end };
            Some((read, (follow, next, (chunk * 2).min(READ_CHUNK))))
        })
    }

    /// How far the bytes from `pos` are readable in a part beyond the
    /// first, if they are: the file's last byte only once all is verified.
    fn part_readable(&self, pos: u64, p: &Progress) -> Option<u64> {
        let to = self.parts.get()?.written_from(pos)?;
        let held = match (&p.phase, p.total) {
            (Phase::Done, _) | (_, None) => to,
            (_, Some(total)) => to.min(total - 1),
        };
        (held > pos).then_some(held)
    }

    /// A follower's own view of the download.
    pub fn follow(self: Arc<Self>) -> Follow {
        let rx = self.progress.subscribe();
        Follow { dl: self, rx }
    }
}

/// One follower of a download: waits for bytes, reads them from the temp
/// file (through the page cache, or by `sendfile` from its descriptor).
pub struct Follow {
    dl: Arc<Download>,
    rx: watch::Receiver<Progress>,
}

impl Follow {
    /// Waits until bytes past `pos` are readable and says how far they go
    /// (woken by the writer, no polling). `None`: a download of unknown
    /// length (`end == u64::MAX`) has ended at `pos`. An error if the
    /// download failed, or ended before `end`.
    pub async fn readable(&mut self, pos: u64, end: u64) -> io::Result<Option<u64>> {
        loop {
            let p = self.rx.borrow_and_update().clone();
            let in_part = self.dl.part_readable(pos, &p);
            match &p.phase {
                Phase::Failed(e) => return Err(io::Error::other(e.clone())),
                _ if p.readable() > pos => return Ok(Some(p.readable())),
                _ if in_part.is_some() => return Ok(in_part),
                Phase::Done if end == u64::MAX => return Ok(None),
                Phase::Done => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shorter than promised",
                    ))
                }
                _ => {}
            }
            if self.rx.changed().await.is_err() {
                return Err(io::Error::other("download task ended"));
            }
        }
    }

    /// Whether the download has failed (a follower cut short by it failed
    /// with it; one whose client left did not).
    pub fn failed(&self) -> bool {
        matches!(self.rx.borrow().phase, Phase::Failed(_))
    }

    /// The temp file being written (valid after its commit too).
    pub fn file(&self) -> Option<&Partial> {
        self.dl.reader.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(phase: Phase, written: u64, total: Option<u64>, rate: u64) -> Progress {
        Progress {
            phase,
            written,
            total,
            receiving_since: None,
            resumes: 0,
            rate,
            parted: 0,
        }
    }

    #[test]
    fn the_last_byte_is_readable_only_once_verified() {
        // Mid-way: everything written is readable.
        assert_eq!(
            progress(Phase::Receiving, 500, Some(1000), 0).readable(),
            500
        );
        // All written but not verified: the last byte is held back.
        assert_eq!(
            progress(Phase::Receiving, 1000, Some(1000), 0).readable(),
            999
        );
        // Size unknown: the newest byte is held back until the end.
        assert_eq!(progress(Phase::Receiving, 700, None, 0).readable(), 699);
        // Verified and published: all of it.
        assert_eq!(progress(Phase::Done, 1000, Some(1000), 0).readable(), 1000);
        let failed = Phase::Failed(FetchError::Verification("x".into()));
        assert_eq!(progress(failed, 1000, Some(1000), 0).readable(), 999);
    }

    #[test]
    fn time_to_a_position_follows_the_current_rate() {
        let p = progress(Phase::Receiving, 1 << 20, Some(10 << 20), 1 << 20);
        assert_eq!(p.reaches(1000), Some(Duration::ZERO), "already written");
        assert_eq!(p.reaches(3 << 20), Some(Duration::from_secs(2)));
        assert_eq!(
            progress(Phase::Receiving, 0, None, 0).reaches(10),
            None,
            "no rate yet"
        );
    }
}
