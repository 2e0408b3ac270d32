//! Lazy fetching: single flight, streaming, verification, upstream faults.

use std::time::Duration;

use futures_util::StreamExt;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_clients_share_one_upstream_download() {
    let h = Harness::new().await;
    h.setup(&[ID_A]).await;
    h.upstream.set_rate(8 << 20); // ~0.4 s for 3 MiB: the clients overlap the download
    let path = h.a.content_path();
    let clients = (0..50).map(|i| {
        let req = h.http.get(h.url(&path));
        let req = if i % 2 == 0 {
            req
        } else {
            req.header("range", "bytes=1000-2000000")
        };
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap())
        }
    });
    let results = futures_util::future::join_all(clients).await;
    for (i, (status, body)) in results.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!((*status, body.len()), (200, h.a.bytes.len()));
            assert!(body[..] == h.a.bytes[..], "client {i} body differs");
        } else {
            assert_eq!(*status, 206);
            assert!(
                body[..] == h.a.bytes[1000..2_000_001],
                "client {i} range differs"
            );
        }
    }
    assert_eq!(h.upstream.requests(&h.a.path), 1);
    assert_eq!(h.content_requests("miss").await, 1);
    let joined = h.content_requests("coalesced").await + h.content_requests("hit").await;
    assert_eq!(joined, 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_streamed_bytes_before_the_download_ends() {
    let h = Harness::new().await;
    h.setup(&[ID_A]).await;
    h.upstream.set_rate(1 << 20); // 3 MiB at 1 MiB/s: three seconds
    let r = h.get(&h.a.content_path()).await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    let status = h.status().await;
    let fetches = status["fetches"].as_array().unwrap();
    assert_eq!(
        fetches.len(),
        1,
        "still downloading when the first bytes arrived: {status}"
    );
    assert!(fetches[0]["bytes_done"].as_u64().unwrap() < h.a.bytes.len() as u64);
    // A range inside what is already written is answered while it runs.
    let r = h.get_range(&h.a.content_path(), "bytes=0-99").await;
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == h.a.bytes[..100]);
    let mut got = first.to_vec();
    while let Some(chunk) = body.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert!(got == h.a.bytes[..]);
    assert_eq!(h.upstream.requests(&h.a.path), 1);
}

/// Reads a response to its end: `Ok` only if the transfer completed.
async fn read_whole(r: reqwest::Response) -> Result<bytes::Bytes, reqwest::Error> {
    r.error_for_status()?.bytes().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_size_wrong_bytes_reach_no_client_whole_over_h1_or_h2() {
    wrong_bytes_reach_no_client_whole(false).await;
}

/// With the SHA-256 in the catalog upcache computes no SHA-1: the SHA-256
/// alone must stop the same corruption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_size_wrong_bytes_are_caught_by_a_declared_sha256_alone() {
    wrong_bytes_reach_no_client_whole(true).await;
}

async fn wrong_bytes_reach_no_client_whole(declare_sha256: bool) {
    // Suffix ranges wait for the download here (no pass-through), so every
    // response includes the last byte and must wait for verification.
    let h = Harness::with(|c| c.fetch.far_ahead_wait = Duration::from_secs(60)).await;
    let catalog = match declare_sha256 {
        true => h.catalog_declaring_sha256(),
        false => h.catalog(),
    };
    assert_eq!(h.import(&catalog).await.status(), 200);
    h.set_state(ID_A, "approve").await;
    h.upstream.set_corrupt(true); // one byte flipped in the middle: same size
    h.upstream.set_rate(4 << 20); // 3 MiB in ~0.75 s: the clients join mid-way
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let path = h.a.content_path();
    let first = h.get(&path).await; // starts the download
    let clients = (0..20).map(|i| {
        let client = if i % 4 < 2 { &h.http } else { &h2 };
        let req = client.get(h.url(&path));
        let req = match i % 2 {
            0 => req,
            _ => req.header("range", "bytes=-1024"),
        };
        async move {
            tokio::time::sleep(Duration::from_millis(20 * i)).await;
            match req.send().await {
                Ok(r) => read_whole(r).await.map(|b| b.len()),
                Err(e) => Err(e),
            }
        }
    });
    let (first, results) = tokio::join!(read_whole(first), futures_util::future::join_all(clients));
    assert!(first.is_err(), "the first client got a whole body");
    for (i, result) in results.iter().enumerate() {
        assert!(result.is_err(), "client {i} completed: {result:?}");
    }
    h.settled().await;
    assert!(h.stored().is_empty(), "nothing stored");
    assert!(h.running().app.store.temp_files().is_empty());
    assert_eq!(h.running().app.store.quarantined().len(), 1);
    assert_eq!(h.upstream.requests(&h.a.path), 1, "one shared download");
    let sendfile = h.counter("upcache_sendfile_responses_total").await;
    assert!(
        sendfile > 0,
        "some HTTP/1.1 followers were on the fast path"
    );
    // The next request starts a fresh download, which verifies.
    h.upstream.set_corrupt(false);
    h.upstream.set_rate(0);
    assert!(read_whole(h.get(&path).await).await.unwrap() == h.a.bytes);
    h.settled().await;
    assert_eq!(h.upstream.requests(&h.a.path), 2);
    assert_eq!(h.stored(), vec![h.a.sha256]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_download_is_delivered_whole_to_every_kind_of_range() {
    let h = Harness::new().await;
    h.setup(&[ID_A]).await;
    h.upstream.set_rate(8 << 20);
    let path = h.a.content_path();
    let len = h.a.bytes.len();
    let first = h.get(&path).await;
    let ranges = ["bytes=-1024", "bytes=3000000-", "bytes=0-9,3145000-"];
    let (h_ref, path_ref) = (&h, &path);
    let clients = ranges.iter().map(|r| async move {
        read_whole(h_ref.get_range(path_ref, r).await)
            .await
            .unwrap()
    });
    let (first, bodies) = tokio::join!(read_whole(first), futures_util::future::join_all(clients));
    assert!(first.unwrap() == h.a.bytes);
    assert!(bodies[0] == h.a.bytes[len - 1024..]);
    assert!(bodies[1] == h.a.bytes[3_000_000..]);
    let multipart = &bodies[2];
    assert!(multipart.windows(10).any(|w| w == &h.a.bytes[..10]));
    assert!(multipart
        .windows(len - 3_145_000)
        .any(|w| w == &h.a.bytes[3_145_000..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_become_502_and_504() {
    let h = Harness::with(|c| c.fetch.read_timeout = Duration::from_millis(300)).await;
    // A catalog whose file the upstream does not have → upstream 404 → 502.
    let mut catalog = h.catalog();
    catalog["updates"][1]["files"][0]["url"] = h.upstream.url("/missing.cab").into();
    assert_eq!(h.import(&catalog).await.status(), 200);
    h.set_state(ID_B, "approve").await;
    let r = h.get(&h.b.content_path()).await;
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("404"));
    // An upstream that does not answer in time → 504.
    h.set_state(ID_A, "approve").await;
    h.upstream.set_head_delay(Duration::from_secs(2));
    assert_eq!(h.get(&h.a.content_path()).await.status(), 504);
    h.upstream.set_head_delay(Duration::ZERO);
    h.assert_serves(&h.a).await;
    h.settled().await;
    assert!(h.running().app.store.temp_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_502_and_nothing_is_stored() {
    let h = Harness::new().await;
    h.setup(&[ID_B]).await;
    h.upstream.stop();
    within("the upstream gone", Duration::from_secs(5), async || {
        reqwest::get(h.upstream.url("/")).await.is_err()
    })
    .await;
    let r = h.get(&h.b.content_path()).await;
    assert_eq!(r.status(), 502);
    assert!(h.stored().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_size_mismatch_with_the_catalog_is_a_502() {
    let h = Harness::new().await;
    let mut catalog = h.catalog();
    catalog["updates"][1]["files"][0]["size"] = 99_999.into();
    assert_eq!(h.import(&catalog).await.status(), 200);
    h.set_state(ID_B, "approve").await;
    assert_eq!(h.get(&h.b.content_path()).await.status(), 502);
    assert!(h.stored().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_override_replaces_scheme_and_host() {
    // A second server whose catalog names Microsoft's host, with the override
    // pointing at the local upstream.
    let h = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = upcache::config::Config::ephemeral(dir.path());
    config.fetch.upstream = Some(format!("http://{}", h.upstream.addr).parse().unwrap());
    let server = upcache::server::start(config).await.unwrap();
    let mut catalog = h.catalog();
    catalog["updates"][1]["files"][0]["url"] =
        format!("http://download.windowsupdate.com{}", h.b.path).into();
    let admin = format!("http://{}", server.admin_addr);
    let r = h
        .http
        .post(format!("{admin}/api/v1/catalog"))
        .json(&catalog)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = h
        .http
        .post(format!("{admin}/api/v1/updates/{ID_B}/approve"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let content = format!("http://{}{}", server.content_addr, h.b.content_path());
    assert!(
        h.http
            .get(&content)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            == h.b.bytes
    );
    assert_eq!(h.upstream.requests(&h.b.path), 1);
    server.shutdown().await;
}
