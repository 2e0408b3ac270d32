//! One rate limit for everything upcache takes from its upstream
//! (`upstream_rate_limit`): a branch office's WAN link is shared with
//! everyone else's work, as BITS's bandwidth policy knows. Downloads,
//! their resumptions and far-ahead ranges all draw on it; the shared tier,
//! inside the network, does not.
//!
//! The rate can change while transfers run (`upcache rate-limit`, a timer
//! for business hours); unlimited, a body passes as it comes.
//!
//! A body is let through in pieces, each when the rate allows (a generic
//! cell rate algorithm: one instant, no timer task). While a transfer
//! waits it does not read, so TCP's window slows the sender: the link
//! carries the rate, not bursts. Pieces are small so that the writes, the
//! followers and the stall watchdog see steady progress even when many
//! downloads share a slow limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::time::Instant;

/// Largest piece let through at once.
const PIECE: usize = 64 << 10;

/// Slowest limit taken: a piece must pass well within any read timeout.
pub const MIN_RATE: u64 = 64 << 10;

/// Bytes per second, shared by every transfer that holds it; 0 is none.
pub struct Throttle {
    bytes_per_sec: AtomicU64,
    /// When the bytes let through so far will have gone at the rate (the
    /// "theoretical arrival time").
    due: Mutex<Instant>,
}

impl Throttle {
    /// `None`: unlimited until [`Throttle::set`] says otherwise.
    pub fn new(bytes_per_sec: Option<u64>) -> Throttle {
        Throttle {
            bytes_per_sec: AtomicU64::new(bytes_per_sec.unwrap_or(0)),
            due: Mutex::new(Instant::now()),
        }
    }

    pub fn bytes_per_sec(&self) -> Option<u64> {
        Some(self.bytes_per_sec.load(Ordering::Relaxed)).filter(|&r| r > 0)
    }

    /// A new rate for every transfer from their next piece; what was let
    /// through at the old rate is not owed at the new one.
    pub fn set(&self, bytes_per_sec: Option<u64>) {
        let mut due = self.due.lock().unwrap();
        self.bytes_per_sec
            .store(bytes_per_sec.unwrap_or(0), Ordering::Relaxed);
        *due = Instant::now();
    }

    /// Waits until `bytes` more fit in the rate. An idle limit lets one
    /// piece through at once; beyond that, each waits its turn.
    pub async fn take(&self, bytes: usize) {
        let Some(rate) = self.bytes_per_sec() else {
            return; // no lock taken while there is no limit
        };
        let time_for = |n: usize| Duration::from_secs_f64(n as f64 / rate as f64);
        let now = Instant::now();
        let wait = {
            let mut due = self.due.lock().unwrap();
            let next = (*due).max(now) + time_for(bytes);
            *due = next;
            next.saturating_duration_since(now + time_for(PIECE))
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// `body` in pieces of at most 64 KiB, each as the rate allows; whole
    /// chunks, at once, while there is no limit.
    pub fn limit<E: Send + 'static>(
        self: &Arc<Self>,
        body: BoxStream<'static, Result<Bytes, E>>,
    ) -> BoxStream<'static, Result<Bytes, E>> {
        let splitter = self.clone();
        let throttle = self.clone();
        body.flat_map(move |item| match item {
            Ok(chunk) if splitter.bytes_per_sec().is_none() => {
                stream::iter(Some(Ok(chunk))).left_stream().left_stream()
            }
            Ok(chunk) => stream::iter(pieces(chunk).map(Ok))
                .right_stream()
                .left_stream(),
            Err(e) => stream::once(async { Err(e) }).right_stream(),
        })
        .then(move |item| {
            let throttle = throttle.clone();
            async move {
                if let Ok(piece) = &item {
                    throttle.take(piece.len()).await;
                }
                item
            }
        })
        .boxed()
    }
}

/// `chunk` split into pieces of at most [`PIECE`] bytes (no copy).
fn pieces(mut chunk: Bytes) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || (!chunk.is_empty()).then(|| chunk.split_to(chunk.len().min(PIECE))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_chunk_in_order() {
        let chunk = Bytes::from((0..200_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let parts: Vec<Bytes> = pieces(chunk.clone()).collect();
        assert_eq!(parts.len(), 4);
        assert!(parts.iter().all(|p| p.len() <= PIECE));
        assert_eq!(parts.concat(), chunk);
        assert_eq!(pieces(Bytes::new()).count(), 0);
    }

    /// On tokio's paused clock: the time is the algorithm's, not the machine's.
    #[tokio::test(start_paused = true)]
    async fn a_body_takes_its_size_over_the_rate() {
        let throttle = Arc::new(Throttle::new(Some(1 << 20)));
        let chunks = (0..8).map(|_| Ok::<_, ()>(Bytes::from(vec![7u8; 256 << 10])));
        let started = Instant::now();
        let got: Vec<Bytes> = throttle
            .limit(stream::iter(chunks).boxed())
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(got.iter().map(Bytes::len).sum::<usize>(), 2 << 20);
        // 2 MiB at 1 MiB/s, less the one piece an idle limit lets through.
        let took = started.elapsed();
        let want = Duration::from_secs(2) - Duration::from_secs_f64(1.0 / 16.0);
        assert!(took >= want - Duration::from_millis(1), "{took:?}");
        assert!(took <= want + Duration::from_millis(5), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_set_or_lifted_holds_from_the_next_piece() {
        let throttle = Arc::new(Throttle::new(None));
        let body = || stream::iter((0..4).map(|_| Ok::<_, ()>(Bytes::from(vec![0u8; 256 << 10]))));
        let started = Instant::now();
        assert_eq!(
            throttle.limit(body().boxed()).count().await,
            4,
            "whole chunks"
        );
        assert_eq!(started.elapsed(), Duration::ZERO);
        throttle.set(Some(1 << 20));
        assert_eq!(throttle.bytes_per_sec(), Some(1 << 20));
        let started = Instant::now();
        assert_eq!(
            throttle.limit(body().boxed()).count().await,
            16,
            "64 KiB pieces"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(930),
            "{:?}",
            started.elapsed()
        );
        throttle.set(None);
        let started = Instant::now();
        throttle.limit(body().boxed()).count().await;
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "nothing owed once lifted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn transfers_share_one_rate() {
        let throttle = Arc::new(Throttle::new(Some(1 << 20)));
        let started = Instant::now();
        let one = |t: Arc<Throttle>| async move {
            let body = stream::iter((0..4).map(|_| Ok::<_, ()>(Bytes::from(vec![0u8; 128 << 10]))));
            t.limit(body.boxed()).count().await
        };
        let (a, b) = tokio::join!(one(throttle.clone()), one(throttle.clone()));
        assert_eq!((a, b), (8, 8));
        let took = started.elapsed();
        // 1 MiB in all at 1 MiB/s, less one piece.
        assert!(took >= Duration::from_millis(930), "{took:?}");
        assert!(took <= Duration::from_millis(945), "{took:?}");
    }
}
