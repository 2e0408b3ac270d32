//! `max_store_bytes`: least-recently-served files are evicted, files being
//! served are not, and evicted files come back from the upstream.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use upcache::demo::{update_json, SampleFile};

use crate::common::*;
use upcache::store::Storage;

fn is_stored(h: &Harness, f: &SampleFile) -> bool {
    h.stored().contains(&f.sha256)
}

/// Fetches `f` through upcache, checks the bytes and waits for the commit.
async fn fetch(h: &Harness, f: &SampleFile) {
    let body = h.get(&f.content_path()).await.bytes().await.unwrap();
    assert!(body == f.bytes, "{} served whole and exact", f.name);
    h.settled().await;
    // Serve times are in milliseconds: keep successive requests apart.
    tokio::time::sleep(Duration::from_millis(5)).await;
}

fn size(f: &SampleFile) -> u64 {
    f.bytes.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_recently_served_files_are_evicted_and_fetched_again() {
    const MAX: u64 = (3 << 20) + 150_000 - 1; // a, b and c do not all fit
    let h = Harness::with(|c| c.store.max_store_bytes = Some(MAX)).await;
    assert_eq!(size(&h.a) + size(&h.b) + size(&h.c), MAX + 1);
    h.setup(&[ID_A, ID_B, ID_C]).await;
    fetch(&h, &h.c).await;
    fetch(&h, &h.b).await;
    fetch(&h, &h.c).await; // b is now the least recently served
    fetch(&h, &h.a).await;
    assert!(!is_stored(&h, &h.b), "b was evicted to make room for a");
    assert!(is_stored(&h, &h.a) && is_stored(&h, &h.c));

    fetch(&h, &h.b).await;
    assert_eq!(
        h.upstream.requests(&h.b.path),
        2,
        "b came back from the upstream"
    );
    assert!(!is_stored(&h, &h.c), "then c was the least recently served");
    assert!(is_stored(&h, &h.a) && is_stored(&h, &h.b));
    assert_eq!(h.counter("upcache_evicted_files_total").await, 2);
    let status = h.status().await;
    assert_eq!(status["max_store_bytes"], MAX);
    assert!(status["catalog"]["bytes_stored"].as_u64().unwrap() <= MAX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_being_served_is_never_evicted() {
    let big = SampleFile::generate("5035001", "msu", 32 << 20);
    let b_and_c = 150_000;
    let mut h = Harness::with(|c| c.store.max_store_bytes = Some((32 << 20) + b_and_c - 1)).await;
    h.upstream.add(&big.path, big.bytes.clone());
    let mut catalog = h.catalog();
    catalog["updates"].as_array_mut().unwrap().push(update_json(
        ID_D,
        "5035001",
        "Big",
        &[&big],
        &h.upstream,
    ));
    assert_eq!(h.import(&catalog).await.status(), 200);
    for id in [ID_B, ID_C, ID_D] {
        h.set_state(id, "approve").await;
    }
    assert_eq!(size(&h.b) + size(&h.c), b_and_c);
    fetch(&h, &h.b).await;
    fetch(&h, &big).await;

    // A slow client starts on the big file and stops reading.
    let mut slow = TcpStream::connect(h.running().content_addr).await.unwrap();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        big.content_path()
    );
    slow.write_all(req.as_bytes()).await.unwrap();
    let mut received = vec![0u8; 64 << 10];
    slow.read_exact(&mut received).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    fetch(&h, &h.b).await; // the big file is now the least recently served...
    fetch(&h, &h.c).await; // ...but it is being sent, so b makes room for c
    assert!(is_stored(&h, &big), "the file being served stays");
    assert!(!is_stored(&h, &h.b) && is_stored(&h, &h.c));

    slow.read_to_end(&mut received).await.unwrap();
    let body_at = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        received[body_at..] == big.bytes[..],
        "the slow client got it all"
    );
    drop(slow);

    // Served out, it is an ordinary candidate again.
    h.eventually("the response is finished", |h| {
        !h.running().app.store.is_serving(&big.sha256)
    })
    .await;
    fetch(&h, &h.b).await;
    assert!(!is_stored(&h, &big), "now the big file makes room");

    // A lower limit applies at start: c, served before b, goes.
    let b_only = size(&h.b);
    h.restart_with(|c| c.store.max_store_bytes = Some(b_only))
        .await;
    assert!(is_stored(&h, &h.b) && !is_stored(&h, &h.c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_larger_than_the_store_is_refused_before_any_download() {
    let h = Harness::with(|c| c.store.max_store_bytes = Some(1 << 20)).await;
    h.setup(&[ID_A, ID_B]).await;
    fetch(&h, &h.b).await;
    let r = h.get(&h.a.content_path()).await;
    assert_eq!(r.status(), 507);
    assert!(r.text().await.unwrap().contains("max_store_bytes"));
    assert_eq!(h.upstream.requests(&h.a.path), 0);
    h.settled().await;
    assert!(
        is_stored(&h, &h.b),
        "nothing was evicted for a file that cannot fit"
    );
    assert_eq!(h.counter("upcache_evicted_files_total").await, 0);
}

/// The catalog gives only SHA-1s; the first download teaches it the
/// file's SHA-256, and the download after an eviction is verified by that
/// SHA-256 alone (no SHA-1 computed): wrong bytes are still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_file_comes_back_verified_by_its_learned_sha256() {
    const MAX: u64 = 150_000 - 1; // b and c do not both fit
    let h = Harness::with(|c| c.store.max_store_bytes = Some(MAX)).await;
    assert_eq!(size(&h.b) + size(&h.c), MAX + 1);
    h.setup(&[ID_B, ID_C]).await;
    let learned = |h: &Harness| {
        h.running()
            .app
            .catalog
            .lookup_sha1(&h.b.sha1)
            .unwrap()
            .sha256
    };
    assert_eq!(learned(&h), None, "the catalog gives no SHA-256");
    fetch(&h, &h.b).await;
    assert_eq!(learned(&h), Some(h.b.sha256), "learned at the download");
    fetch(&h, &h.c).await;
    assert!(!is_stored(&h, &h.b), "b was evicted to make room for c");

    h.upstream.set_corrupt(true);
    let cut = h.get(&h.b.content_path()).await.bytes().await;
    assert!(cut.is_err(), "a wrong body was completed: {cut:?}");
    h.settled().await;
    assert!(!is_stored(&h, &h.b));
    assert_eq!(h.running().app.store.quarantined().len(), 1);

    h.upstream.set_corrupt(false);
    fetch(&h, &h.b).await;
    assert!(is_stored(&h, &h.b));
    assert_eq!(h.upstream.requests(&h.b.path), 3);
}
