//! Every wait is bounded, and far-ahead ranges are judged by time.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use upcache::demo::upstream::Fault;

use crate::common::*;

/// Starts A's download with the upstream sending at `rate` (0: as fast as
/// it can), asks for its last `tail` bytes once the first bytes have
/// arrived, and checks them: how long the tail took, and the whole download
/// to read to its end.
async fn tail_during_download(
    h: &Harness,
    rate: u64,
    tail: usize,
) -> (
    Duration,
    impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>>,
) {
    h.setup(&[ID_A]).await;
    h.upstream.set_rate(rate);
    let path = h.a.content_path();
    let mut whole = h.get(&path).await.bytes_stream();
    whole.next().await.unwrap().unwrap();
    let t = Instant::now();
    let r = h.get_range(&path, &format!("bytes=-{tail}")).await;
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == h.a.bytes[h.a.bytes.len() - tail..]);
    (t.elapsed(), whole)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_range_behind_a_slow_download_is_passed_through() {
    let h = Harness::new().await;
    // 3 MiB at 1 MiB/s: the tail is ~3 s away, beyond the 1 s wait, though
    // well under the old 8 MiB rule (which made it wait the whole download).
    let (waited, mut whole) = tail_during_download(&h, 1 << 20, 1024).await;
    assert!(
        waited < Duration::from_millis(900),
        "waited {waited:?} for the tail"
    );
    assert_eq!(h.upstream.ranged_requests(), 1, "its own upstream request");
    assert_eq!(h.content_requests("passthrough").await, 1);
    while let Some(chunk) = whole.next().await {
        chunk.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_range_behind_a_fast_download_waits_for_it() {
    let h = Harness::new().await;
    // 3 MiB at 6 MiB/s: the tail is ~0.5 s away, inside the 1 s wait.
    let (_, mut whole) = tail_during_download(&h, 6 << 20, 1024).await;
    assert_eq!(h.upstream.ranged_requests(), 0, "no extra upstream request");
    assert_eq!(h.upstream.requests(&h.a.path), 1);
    let coalesced = "upcache_content_requests_total{outcome=\"coalesced\"}";
    assert_eq!(h.counter(coalesced).await, 1);
    while let Some(chunk) = whole.next().await {
        chunk.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_stalls_is_abandoned_and_the_next_request_starts_afresh() {
    let h = Harness::with(|c| {
        c.fetch.stall = Duration::from_millis(800);
        c.fetch.read_timeout = Duration::from_secs(30); // the watchdog, not the read timeout
    })
    .await;
    h.setup(&[ID_A]).await;
    h.upstream.inject(Fault::StallAfter(100_000), 1);
    let t = Instant::now();
    let r = h.get(&h.a.content_path()).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.is_err(),
        "the follower sees a failed transfer"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "abandoned after {:?}",
        t.elapsed()
    );
    h.settled().await;
    assert!(h.stored().is_empty());
    assert!(h.running().app.store.temp_files().is_empty());
    h.assert_serves(&h.a).await;
    assert_eq!(h.upstream.requests(&h.a.path), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_clients_wait_a_bounded_time_and_the_queue_is_bounded() {
    let h = Harness::with(|c| {
        c.fetch.max_downloads = 1;
        c.fetch.max_queued = 1;
        c.fetch.queue_wait = Duration::from_millis(400);
    })
    .await;
    h.setup(&[ID_A, ID_B, ID_C]).await;
    h.upstream.set_rate(1 << 20); // A holds the only slot for ~3 s
    let a = h.get(&h.a.content_path()).await;
    assert_eq!(a.status(), 200);
    // B queues: no temp file, no thread until it has a slot; 503 after the wait.
    let b = tokio::spawn(h.http.get(h.url(&h.b.content_path())).send());
    h.eventually("B queued", |h| {
        h.running().app.fetcher.status().iter().any(|f| f.queued)
    })
    .await;
    assert_eq!(
        h.running().app.store.temp_files().len(),
        1,
        "only the running download has a temp file"
    );
    // C finds the queue full: 503 at once.
    let t = Instant::now();
    let c = h.get(&h.c.content_path()).await;
    assert_eq!(c.status(), 503);
    assert!(t.elapsed() < Duration::from_millis(300));
    assert_eq!(c.headers()["retry-after"], "5");
    let b = b.await.unwrap().unwrap();
    assert_eq!(b.status(), 503);
    assert_eq!(b.headers()["retry-after"], "5");
    assert!(b.text().await.unwrap().contains("try again later"));
    // A was never disturbed, and B downloads when its turn comes.
    assert!(a.bytes().await.unwrap() == h.a.bytes);
    h.upstream.set_rate(0);
    h.settled().await;
    h.assert_serves(&h.b).await;
}

/// `upstream_rate_limit` holds for all downloads together, from the first
/// byte to the commit; clients of stored files are not limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_rate_limit_holds_for_all_downloads_together() {
    let h = Harness::with(|c| c.fetch.rate_limit = Some(2 << 20)).await;
    assert_eq!(h.status().await["upstream"]["rate_limit"], 2 << 20);
    h.setup(&[ID_A, ID_B]).await;
    let started = Instant::now();
    let (a, b) = tokio::join!(
        async { h.get(&h.a.content_path()).await.bytes().await.unwrap() },
        async { h.get(&h.b.content_path()).await.bytes().await.unwrap() },
    );
    let took = started.elapsed();
    assert!(a == h.a.bytes && b == h.b.bytes);
    // 3.1 MiB at 2 MiB/s is 1.55 s, less the one 64 KiB piece an idle
    // limit lets through at once; on loopback without it, milliseconds.
    let least = (h.a.bytes.len() + h.b.bytes.len() - (64 << 10)) as f64 / (2 << 20) as f64;
    assert!(
        took.as_secs_f64() >= least - 0.05,
        "{took:?} for {least:.2} s of bytes"
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
    h.settled().await;
    let warm = Instant::now();
    h.assert_serves(&h.a).await;
    assert!(
        warm.elapsed() < Duration::from_millis(500),
        "a hit is not limited"
    );
}

/// The limit changes at run time (`upcache rate-limit`, what a timer for
/// business hours runs): set, it holds for the next download; lifted, the
/// next runs at full speed; a bad value is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_set_and_lifted_at_run_time() {
    let h = Harness::new().await;
    let d = upcache::demo::SampleFile::generate("5034999", "msu", 3 << 20);
    h.upstream.add(&d.path, d.bytes.clone());
    let id_d = "00000000-0000-4000-8000-00000000000d";
    let doc = serde_json::json!({ "updates": [
        upcache::demo::update_json(id_d, "5034999", "Another cumulative update", &[&d], &h.upstream),
    ]});
    assert_eq!(h.import(&doc).await.status(), 200);
    h.setup(&[ID_A]).await;
    h.set_state(id_d, "approve").await;
    let admin = h.admin("");
    let cli = |args: &'static [&'static str]| {
        let admin = admin.clone();
        async move { run_cli(&[args, &["--admin", &admin]].concat(), &[]).await }
    };

    assert!(cli(&["rate-limit"]).await.stdout.contains("no rate limit"));
    let out = cli(&["rate-limit", "2MiB"]).await;
    assert!(
        out.ok && out.stdout.contains("at most 2097152"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(h.status().await["upstream"]["rate_limit"], 2 << 20);
    let started = Instant::now();
    h.assert_serves(&h.a).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );

    let out = cli(&["rate-limit", "1000"]).await;
    assert!(
        !out.ok && out.stderr.contains("below the least"),
        "{}",
        out.stderr
    );
    let out = cli(&["rate-limit", "fast"]).await;
    assert!(!out.ok && out.stderr.contains("\"fast\""), "{}", out.stderr);
    let r = h
        .http
        .put(h.admin("/api/v1/upstream/rate-limit"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "a body without bytes_per_sec lifts nothing"
    );
    assert_eq!(h.status().await["upstream"]["rate_limit"], 2 << 20);

    let out = cli(&["rate-limit", "off"]).await;
    assert!(
        out.ok && out.stdout.contains("no rate limit"),
        "{}",
        out.stderr
    );
    assert!(h.status().await["upstream"].get("rate_limit").is_none());
    let started = Instant::now();
    assert!(h.get(&d.content_path()).await.bytes().await.unwrap() == d.bytes);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
}

/// A far-ahead range is upstream traffic too: under the rate limit it
/// shares the rate with the download it jumped ahead of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_ahead_range_draws_on_the_rate_limit() {
    let h = Harness::with(|c| c.fetch.rate_limit = Some(256 << 10)).await;
    // At 256 KiB/s the tail of 3 MiB is ~11 s away: passed through.
    let (took, whole) = tail_during_download(&h, 0, 256 << 10).await;
    assert_eq!(h.upstream.ranged_requests(), 1, "its own upstream request");
    // 256 KiB alone at the rate is 1 s (less the piece an idle limit
    // lets through); shared with the running download, about twice that.
    assert!(took >= Duration::from_millis(700), "{took:?}");
    drop(whole);
}
