//! Lazy fetching in the real world: interrupted, stalled, lying and slow
//! upstreams, ranges while downloading, bounded download slots.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use upcache::demo::upstream::Fault;

use crate::common::*;

/// Reads a whole body; `Err` if the connection was cut before its end.
async fn read_all(r: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    r.bytes().await.map(|b| b.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_resumed_with_ranges() {
    let h = Harness::new().await;
    h.setup(&[ID_A]).await;
    h.upstream.inject(Fault::DropAfter(700_000), 2);
    let body = read_all(h.get(&h.a.content_path()).await).await.unwrap();
    assert!(body == h.a.bytes[..], "byte-exact across two resumes");
    h.settled().await;
    assert_eq!(h.upstream.requests(&h.a.path), 3);
    assert_eq!(h.upstream.ranged_requests(), 2);
    assert_eq!(h.counter("upcache_upstream_resumes_total").await, 2);
    assert_eq!(h.stored(), vec![h.a.sha256]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_ignores_range_is_resumed_from_the_start() {
    let h = Harness::new().await;
    h.setup(&[ID_A]).await;
    h.upstream.set_ignore_range(true);
    h.upstream.inject(Fault::DropAfter(1_000_000), 1);
    let body = read_all(h.get(&h.a.content_path()).await).await.unwrap();
    assert!(body == h.a.bytes[..]);
    h.settled().await;
    assert_eq!(h.upstream.requests(&h.a.path), 2);
    assert_eq!(h.stored(), vec![h.a.sha256]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upstream_times_out_and_is_resumed() {
    let h = Harness::with(|c| c.fetch.read_timeout = Duration::from_millis(300)).await;
    h.setup(&[ID_A]).await;
    h.upstream.inject(Fault::StallAfter(500_000), 1);
    let body = read_all(h.get(&h.a.content_path()).await).await.unwrap();
    assert!(body == h.a.bytes[..]);
    assert_eq!(h.upstream.ranged_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_interruptions_fail_cleanly_and_the_next_request_starts_afresh() {
    let h = Harness::with(|c| c.fetch.max_resumes = 2).await;
    h.setup(&[ID_A]).await;
    h.upstream.inject(Fault::DropAfter(300_000), 3);
    let r = h.get(&h.a.content_path()).await;
    assert_eq!(r.status(), 200, "the head went out with the first bytes");
    assert!(
        read_all(r).await.is_err(),
        "the body must be cut, not completed"
    );
    h.settled().await;
    assert!(h.stored().is_empty());
    assert!(h.running().app.store.temp_files().is_empty());
    let body = read_all(h.get(&h.a.content_path()).await).await.unwrap();
    assert!(body == h.a.bytes[..]);
    assert_eq!(h.upstream.requests(&h.a.path), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_bytes_beyond_the_catalog_size_are_cut() {
    let h = Harness::new().await;
    h.setup(&[ID_B]).await;
    h.upstream.inject(Fault::ExtraBytes(4096), 1);
    let r = h.get(&h.b.content_path()).await;
    if r.status() == 200 {
        // Content-Length came from the catalog: the client gets exactly the
        // file's bytes, or a cut connection, never the extra ones.
        if let Ok(body) = read_all(r).await {
            assert_eq!(body.len(), h.b.bytes.len());
        }
    }
    h.settled().await;
    assert!(
        h.stored().is_empty(),
        "an oversized download is never stored"
    );
    assert!(h.running().app.store.temp_files().is_empty());
    assert!(read_all(h.get(&h.b.content_path()).await).await.unwrap() == h.b.bytes[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_during_a_download_are_served_in_place_waited_for_or_passed_through() {
    let h = Harness::new().await;
    h.setup(&[ID_A]).await;
    h.upstream.set_rate(1 << 20); // 3 MiB at 1 MiB/s
    let path = h.a.content_path();
    let mut whole = h.get(&path).await.bytes_stream();
    let first = whole.next().await.unwrap().unwrap();

    // Already written: at once.
    let r = h.get_range(&path, "bytes=0-999").await;
    assert!(r.bytes().await.unwrap() == h.a.bytes[..1000]);
    // Far ahead (2.5 MB, download near the start): its own upstream range, quickly.
    let t = Instant::now();
    let r = h.get_range(&path, "bytes=2500000-2599999").await;
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == h.a.bytes[2_500_000..2_600_000]);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "did not wait for the download: {:?}",
        t.elapsed()
    );
    assert_eq!(h.upstream.ranged_requests(), 1);
    // Just ahead: waits for the download, multipart too.
    let r = h.get_range(&path, "bytes=10-19,900000-900009").await;
    assert_eq!(r.status(), 206);
    let body = r.bytes().await.unwrap();
    assert!(body.windows(10).any(|w| w == &h.a.bytes[900_000..900_010]));
    assert_eq!(
        h.upstream.ranged_requests(),
        1,
        "near ranges do not go upstream"
    );

    let mut got = first.to_vec();
    while let Some(chunk) = whole.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert!(got == h.a.bytes[..]);
    assert_eq!(h.content_requests("passthrough").await, 1);
    h.settled().await;
    assert_eq!(
        h.stored(),
        vec![h.a.sha256],
        "the pass-through did not disturb the download"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_beyond_the_limit_queue_and_show_in_status() {
    let h = Harness::with(|c| c.fetch.max_downloads = 1).await;
    h.setup(&[ID_A, ID_B]).await;
    h.upstream.set_rate(2 << 20);
    let (a, b) = (h.url(&h.a.content_path()), h.url(&h.b.content_path()));
    let first = tokio::spawn(h.http.get(a).send());
    h.eventually("A downloading", |h| {
        !h.running().app.fetcher.status().is_empty()
    })
    .await;
    let second = tokio::spawn(h.http.get(b).send());
    h.eventually("B queued", |h| {
        h.running().app.fetcher.status().iter().any(|f| f.queued)
    })
    .await;
    let status = h.status().await;
    let queued: Vec<_> = status["fetches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["queued"] == true)
        .collect();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["sha1"], h.b.sha1.to_hex());
    let a = first.await.unwrap().unwrap().bytes().await.unwrap();
    let b = second.await.unwrap().unwrap().bytes().await.unwrap();
    assert!(a == h.a.bytes && b == h.b.bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_download_cleanly_and_stored_files_keep_serving() {
    // No reserve: this test fills the disk to the brim.
    let Some((h, disk)) = TinyDisk::harness("2m", 0).await else {
        return;
    };
    let data = disk.path().to_owned();
    h.setup(&[ID_A, ID_B]).await;
    assert!(h.get(&h.b.content_path()).await.bytes().await.unwrap() == h.b.bytes);
    h.settled().await;
    // A (3 MiB) cannot fit: refused before any byte, 507.
    let r = h.get(&h.a.content_path()).await;
    assert_eq!(r.status(), 507);
    assert_eq!(
        h.upstream.requests(&h.a.path),
        0,
        "no upstream request for a download that cannot fit"
    );
    // C of unknown size (none in the catalog, none announced) on a nearly
    // full disk: ENOSPC mid-way; the body is cut, nothing half-written remains.
    let mut catalog = h.catalog();
    catalog["updates"][2]["files"][0]
        .as_object_mut()
        .unwrap()
        .remove("size");
    catalog["updates"][2]["revision"] = 2.into();
    h.import(&catalog).await;
    h.set_state(ID_C, "approve").await;
    let free = h.running().app.store.free_bytes().unwrap();
    std::fs::write(data.join("filler"), vec![0u8; (free - 20_000) as usize]).unwrap();
    h.upstream
        .inject(upcache::demo::upstream::Fault::ExtraBytes(0), 1); // chunked
    let r = h.get(&h.c.content_path()).await;
    assert!(
        r.status() == 507 || r.bytes().await.is_err(),
        "never a complete body"
    );
    h.settled().await;
    assert!(
        h.running().app.store.temp_files().is_empty(),
        "nothing half-written remains"
    );
    assert_eq!(h.stored(), vec![h.b.sha256]);
    assert!(
        h.get(&h.b.content_path()).await.bytes().await.unwrap() == h.b.bytes,
        "still serving"
    );
    let mut h = h;
    h.server.take().unwrap().shutdown().await;
    drop(h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_hold_back_the_download() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::new().await;
    // A file far larger than any socket buffer between the two.
    let big = upcache::demo::SampleFile::generate("5099999", "cab", 24 << 20);
    h.upstream.add(&big.path, big.bytes.clone());
    let mut catalog = h.catalog();
    let update = upcache::demo::update_json(ID_D, "5099999", "Big update", &[&big], &h.upstream);
    catalog["updates"].as_array_mut().unwrap().push(update);
    assert_eq!(h.import(&catalog).await.status(), 200);
    h.set_state(ID_D, "approve").await;
    h.upstream.set_rate(48 << 20);
    // Asks for the file with a tiny receive window and never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(h.running().content_addr).await.unwrap();
    let req = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", big.content_path());
    stalled.write_all(req.as_bytes()).await.unwrap();
    // The download still runs at upstream speed to the store.
    h.eventually("stored despite the stalled client", |h| {
        h.stored() == vec![big.sha256]
    })
    .await;
    // The file is committed a moment before its download leaves the table.
    h.settled().await;
    assert_eq!(h.status().await["fetches"].as_array().unwrap().len(), 0);
    // And a reading client is served meanwhile.
    assert!(h.get(&big.content_path()).await.bytes().await.unwrap() == big.bytes);
    drop(stalled);
}
