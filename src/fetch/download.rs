//! One running download and the readers that follow it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};

use super::{FetchError, FetchSettings, FetchStatus};
use crate::catalog::FileEntry;
use crate::digest::Sha1Digest;
use crate::metrics::Metrics;
use crate::store::{Expected, Ingest, IngestError, Ingested};

/// Largest piece a follower reads from the temp file at once.
const READ_CHUNK: u64 = 256 * 1024;
/// Upstream chunks queued for the writer thread: bounds memory per download
/// while letting hashing overlap the network.
const WRITE_QUEUE: usize = 32;

/// Where a download is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
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
}

/// A download in progress, shared by the task that runs it and its followers.
pub struct Download {
    pub sha1: Sha1Digest,
    name: Arc<str>,
    /// Our own handle on the temp file: stays valid across the commit's rename.
    reader: Arc<File>,
    progress: watch::Sender<Progress>,
    started: Instant,
}

impl Download {
    pub(super) fn new(file: &FileEntry, ingest: &Ingest) -> io::Result<Download> {
        Ok(Download {
            sha1: file.sha1,
            name: file.name.clone(),
            reader: Arc::new(ingest.reader()?),
            progress: watch::Sender::new(Progress {
                phase: Phase::Connecting,
                written: 0,
                total: file.size,
            }),
            started: Instant::now(),
        })
    }

    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Waits until the upstream has answered: the expected size is then
    /// known (if it can be), or the download has failed before any byte.
    pub async fn started(&self) -> Result<Option<u64>, FetchError> {
        let mut rx = self.progress.subscribe();
        let p = rx
            .wait_for(|p| p.phase != Phase::Connecting)
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
        FetchStatus {
            sha1: self.sha1.to_hex(),
            name: self.name.to_string(),
            bytes_done: p.written,
            bytes_total: p.total,
            clients: self.progress.receiver_count(),
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
        let rx = self.progress.subscribe();
        futures_util::stream::unfold((self, rx, start), move |(dl, mut rx, pos)| async move {
            if pos >= end {
                return None;
            }
            let available = loop {
                let p = rx.borrow_and_update().clone();
                match p.phase {
                    Phase::Failed(e) => return Some((Err(io::Error::other(e)), (dl, rx, end))),
                    _ if p.written > pos => break p.written,
                    Phase::Done if end == u64::MAX => return None, // length was unknown
                    Phase::Done => {
                        let e = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file shorter than promised",
                        );
                        return Some((Err(e), (dl, rx, end)));
                    }
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    let e = io::Error::other("download task ended");
                    return Some((Err(e), (dl, rx, end)));
                }
            };
            let len = (end.min(available) - pos).min(READ_CHUNK);
            let reader = dl.reader.clone();
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; len as usize];
                reader
                    .read_exact_at(&mut buf, pos)
                    .map(|_| Bytes::from(buf))
            })
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
            let next = if read.is_ok() { pos + len } else { end };
            Some((read, (dl, rx, next)))
        })
    }
}

/// Downloads `url` into `ingest`, verifying against the catalog entry.
pub(super) async fn transfer(
    client: &reqwest::Client,
    settings: &FetchSettings,
    metrics: &Metrics,
    dl: &Arc<Download>,
    mut ingest: Ingest,
    file: &FileEntry,
    url: &str,
) -> Result<Ingested, FetchError> {
    let response = tokio::time::timeout(settings.read_timeout, client.get(url).send())
        .await
        .map_err(|_| {
            FetchError::Timeout(format!(
                "no response from {url} in {:?}",
                settings.read_timeout
            ))
        })?
        .map_err(|e| classify(&e, url))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(FetchError::UpstreamStatus {
            status: response.status().as_u16(),
            url: url.to_owned(),
        });
    }
    let total = match (file.size, response.content_length()) {
        (Some(want), Some(got)) if want != got => {
            return Err(FetchError::Verification(format!(
                "upstream announces {got} bytes, the catalog says {want}"
            )))
        }
        (Some(size), _) | (None, Some(size)) => Some(size),
        (None, None) => None,
    };
    if let Some(size) = total {
        ingest.limit_size(size);
    }
    dl.progress.send_modify(|p| {
        p.phase = Phase::Receiving;
        p.total = total;
    });

    let (tx, rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let writer = spawn_writer(dl.clone(), ingest, rx);
    let mut body = response.bytes_stream();
    let received = loop {
        match tokio::time::timeout(settings.read_timeout, body.next()).await {
            Err(_) => {
                break Err(FetchError::Timeout(format!(
                    "{url} stalled for {:?}",
                    settings.read_timeout
                )))
            }
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(classify(&e, url)),
            Ok(Some(Ok(chunk))) => {
                metrics.upstream_bytes(chunk.len() as u64);
                if tx.send(chunk).await.is_err() {
                    break Ok(()); // the writer stopped: its error says why
                }
            }
        }
    };
    drop(tx);
    let ingest = writer
        .await
        .map_err(|e| FetchError::Store(e.to_string()))?
        .map_err(ingest_error)?;
    received?;
    let expected = Expected {
        size: total,
        sha1: Some(file.sha1),
        sha256: file.sha256,
    };
    tokio::task::spawn_blocking(move || ingest.commit(&expected))
        .await
        .map_err(|e| FetchError::Store(e.to_string()))?
        .map_err(ingest_error)
}

/// Writes and hashes queued chunks on a blocking thread, publishing progress.
fn spawn_writer(
    dl: Arc<Download>,
    mut ingest: Ingest,
    mut rx: mpsc::Receiver<Bytes>,
) -> tokio::task::JoinHandle<Result<Ingest, IngestError>> {
    tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            ingest.write(&chunk)?;
            let written = ingest.written();
            dl.progress.send_modify(|p| p.written = written);
        }
        Ok(ingest)
    })
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
