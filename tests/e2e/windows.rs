//! What Windows clients send (docs/windows.md): WSUS content paths from
//! `UpdateServiceUrlAlternate`, Microsoft Update paths with a Delivery
//! Optimization cache host's `?cacheHostOrigin=`, and DO's own
//! `/filestreamingservice/` URLs, on the fast path and through hyper.

use crate::common::*;

/// Queries a client (or anyone) might add to a file's URL; none may
/// change which file is served.
fn queries(other_sha1: &str, other_path: &str) -> Vec<String> {
    vec![
        "?cacheHostOrigin=dl.delivery.mp.microsoft.com".into(),
        "?cacheHostOrigin=au.download.windowsupdate.com&P1=1&P2=2".into(),
        format!("?sha1={other_sha1}"),
        format!("?file={other_path}"),
        format!("?{}", &other_path[1..]),
        "?".into(),
        "?../../etc/passwd".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_string_never_changes_which_file_is_served() {
    let h = Harness::new().await;
    h.setup(&[ID_B, ID_C]).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let (b, c) = (&h.b, &h.c);
    let wsus_b = format!("/Content/{:02X}/{}.cab", b.sha1.last_byte(), b.sha1);
    // First request, with a query, is a miss: the download takes the
    // catalog's URL, whatever the query said.
    let first = format!("{}?cacheHostOrigin=dl.delivery.mp.microsoft.com", b.path);
    assert_eq!(h.get(&first).await.bytes().await.unwrap(), b.bytes);
    h.settled().await;
    assert_eq!(h.upstream.requests(&b.path), 1);
    assert_eq!(h.upstream.requests(&c.path), 0);
    let mut tried = 0;
    for base in [b.path.clone(), b.content_path(), wsus_b] {
        for query in queries(&c.sha1.to_string(), &c.path) {
            let url = h.url(&format!("{base}{query}"));
            // HTTP/1.1: the fast path (a warm hit)...
            let r = h.http.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
            assert_eq!(r.headers()["etag"], format!("\"sha1:{}\"", b.sha1), "{url}");
            assert_eq!(r.bytes().await.unwrap(), b.bytes, "{url}");
            // ...and h2, through hyper; ranged, too.
            let r = h2
                .get(&url)
                .header("range", "bytes=5-14")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 206, "{url}");
            assert_eq!(r.bytes().await.unwrap(), b.bytes[5..15], "{url}");
            tried += 1;
        }
    }
    assert_eq!(tried, 21);
    // Nothing else was fetched because of a query.
    assert_eq!(h.upstream.requests(&c.path), 0);
    assert_eq!(h.upstream.requests(&b.path), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_optimization_file_urls_without_an_origin_are_refused_and_never_a_file() {
    let h = Harness::new().await;
    h.setup(&[ID_B]).await;
    assert_eq!(h.get(&h.b.path).await.bytes().await.unwrap(), h.b.bytes);
    h.settled().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for path in [
        "/filestreamingservice/files/2f7c5a3e-1b2d-4c1e-9f00-0123456789ab?P1=1700000000&P2=404&P3=2&P4=abc".to_string(),
        // Even one that ends like a stored file's name.
        format!("/filestreamingservice/files/{}", h.b.name),
    ] {
        for client in [&h.http, &h2] {
            let r = client
                .get(h.url(&path))
                .header("range", "bytes=0-99")
                .send()
                .await
                .unwrap();
            // The DO wing answers (tests/e2e/delivery.rs): no cacheHostOrigin,
            // or no GUID, is a request it refuses; never a stored file.
            assert_eq!(r.status(), 400, "{path}");
            // A cache in front must not keep the answer.
            assert_eq!(r.headers()["cache-control"], "no-store");
            let r = client.head(h.url(&path)).send().await.unwrap();
            assert_eq!(r.status(), 400, "{path}");
        }
        assert_eq!(h.raw_status(&path).await, 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_content_listener_answers_health_checks_uncounted() {
    let h = Harness::new().await;
    for _ in 0..3 {
        let r = h.get("/healthz").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok\n");
    }
    assert_eq!(h.status().await["traffic"]["requests"]["refused"], 0);
}
