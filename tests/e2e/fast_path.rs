//! The HTTP/1.1 fast path (sendfile) answers exactly as the hyper path does.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// One raw exchange on a fresh connection: the response's status line,
/// its headers (lower-case, sorted, without `date`; the multipart boundary
/// replaced) and its body.
pub async fn exchange(addr: std::net::SocketAddr, request: &str) -> (String, Vec<String>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("the server closes after Connection: close")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    let boundary = head
        .to_ascii_lowercase()
        .split("boundary=")
        .nth(1)
        .map(|b| b.split("\r\n").next().unwrap().to_owned());
    let mut headers: Vec<String> = lines
        .map(|l| l.to_ascii_lowercase())
        .filter(|l| !l.starts_with("date:"))
        .collect();
    if let Some(b) = boundary {
        headers = headers
            .into_iter()
            .map(|h| h.replace(&b, "BOUNDARY"))
            .collect();
        body = String::from_utf8_lossy(&body)
            .replace(&b, "BOUNDARY")
            .into_bytes();
    }
    headers.sort();
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_answers_as_the_hyper_path_does() {
    let fast = Harness::new().await;
    let slow = Harness::with(|c| c.content.fast_path = false).await;
    for h in [&fast, &slow] {
        h.setup(&[ID_A, ID_B]).await;
        for f in [&h.a, &h.b] {
            assert!(h.get(&f.content_path()).await.bytes().await.unwrap() == f.bytes);
        }
        h.settled().await;
    }
    let sendfile = "upcache_sendfile_responses_total";
    let before = fast.counter(sendfile).await; // the downloads above were followed on it
    let a = &fast.a;
    let path = a.content_path();
    let sha1_tag = format!("\"sha1:{}\"", a.sha1);
    let requests = [
        ("GET", path.clone(), String::new()),
        ("HEAD", path.clone(), String::new()),
        (
            "GET",
            format!("{path}?cacheHostOrigin=dohost"),
            String::new(),
        ),
        ("GET", format!("/blobs/sha256/{}", a.sha256), String::new()),
        ("GET", path.clone(), "Range: bytes=0-99\r\n".into()),
        ("GET", path.clone(), "Range: bytes=-100\r\n".into()),
        ("GET", path.clone(), "Range: bytes=3000000-\r\n".into()),
        ("HEAD", path.clone(), "Range: bytes=0-99\r\n".into()),
        (
            "GET",
            path.clone(),
            "Range: bytes=0-0,10-20,100-199\r\n".into(),
        ),
        ("GET", path.clone(), "Range: bytes=5-1\r\n".into()),
        ("GET", path.clone(), "Range: bytes=99999999-\r\n".into()),
        (
            "GET",
            path.clone(),
            format!("If-None-Match: {sha1_tag}\r\n"),
        ),
        ("GET", path.clone(), "If-None-Match: \"other\"\r\n".into()),
        ("GET", path.clone(), "If-Match: \"nope\"\r\n".into()),
        (
            "GET",
            path.clone(),
            "If-Modified-Since: Tue, 01 Jan 2999 00:00:00 GMT\r\n".into(),
        ),
        (
            "GET",
            path.clone(),
            format!("If-Range: {sha1_tag}\r\nRange: bytes=10-19\r\n"),
        ),
        (
            "GET",
            path.clone(),
            "If-Range: \"other\"\r\nRange: bytes=10-19\r\n".into(),
        ),
        (
            "GET",
            fast.b.content_path(),
            "Range: bytes=50000-50009\r\n".into(),
        ),
    ];
    for (method, target, extra) in &requests {
        let request =
            format!("{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n");
        let got = exchange(fast.running().content_addr, &request).await;
        let want = exchange(slow.running().content_addr, &request).await;
        assert_eq!(got.0, want.0, "status of {request:?}");
        assert_eq!(got.1, want.1, "headers of {request:?}");
        assert!(got.2 == want.2, "body of {request:?}");
    }
    assert_eq!(fast.counter(sendfile).await - before, requests.len() as u64);
    assert_eq!(slow.counter(sendfile).await, 0);
}

/// RFC 9112 §3.2: an HTTP/1.1 request without a `Host`, any request with
/// two or with a malformed one, is answered 400, on both paths; HTTP/1.0
/// needs none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_one_valid_host_get_400_on_both_paths() {
    let fast = Harness::new().await;
    let slow = Harness::with(|c| c.content.fast_path = false).await;
    for h in [&fast, &slow] {
        h.setup(&[ID_A]).await;
        assert!(h.get(&h.a.content_path()).await.bytes().await.unwrap() == h.a.bytes);
        h.settled().await;
        let path = h.a.content_path();
        for (host_lines, version, want) in [
            ("", "1.1", "400"),
            ("Host: x\r\nHost: y\r\n", "1.1", "400"),
            ("Host: x\r\nHost: y\r\n", "1.0", "400"),
            ("Host: a b\r\n", "1.1", "400"),
            ("Host: user@upcache\r\n", "1.1", "400"),
            ("Host: upcache/x\r\n", "1.1", "400"),
            ("Host: upcache:8530\r\n", "1.1", "200"),
            ("Host: [::1]:8530\r\n", "1.1", "200"),
            ("Host: \r\n", "1.1", "200"),
            ("", "1.0", "200"),
        ] {
            let request =
                format!("GET {path} HTTP/{version}\r\n{host_lines}Connection: close\r\n\r\n");
            let (status, headers, body) = exchange(h.running().content_addr, &request).await;
            assert_eq!(
                &status[9..12],
                want,
                "{request:?} (fast path: {})",
                h.running().app.config.content.fast_path
            );
            if want == "200" {
                assert!(body == h.a.bytes, "{request:?}");
            } else {
                assert!(
                    headers.contains(&"cache-control: no-store".to_owned()),
                    "{headers:?}"
                );
                assert!(
                    String::from_utf8_lossy(&body).contains("Host"),
                    "{request:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_and_a_handoff_on_one_connection() {
    let h = Harness::new().await;
    h.setup(&[ID_A, ID_B]).await;
    assert!(h.get(&h.b.content_path()).await.bytes().await.unwrap() == h.b.bytes);
    h.settled().await;
    let before = h.counter("upcache_sendfile_responses_total").await;
    let b = h.b.content_path();
    // Two warm hits (fast path), then a miss (handed to hyper), then a hit
    // again (hyper's from then on), all in one write.
    let request =
        |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    let pipelined = [
        request(&b, "Range: bytes=0-9\r\n"),
        request(&b, "Range: bytes=10-19\r\n"),
        request(&h.c.content_path(), ""), // not approved: 403 from hyper
        request(&b, "Range: bytes=20-29\r\nConnection: close\r\n"),
    ]
    .concat();
    let mut s = TcpStream::connect(h.running().content_addr).await.unwrap();
    s.write_all(pipelined.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    let statuses: Vec<&str> = text.split("HTTP/1.1 ").skip(1).map(|r| &r[..3]).collect();
    assert_eq!(statuses, ["206", "206", "403", "206"], "{text}");
    for window in [0..10, 10..20, 20..30] {
        assert!(
            raw.windows(10).any(|w| w == &h.b.bytes[window.clone()]),
            "bytes {window:?}"
        );
    }
    let after = h.counter("upcache_sendfile_responses_total").await;
    assert_eq!(after - before, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_of_a_download_get_it_by_sendfile_as_hyper_would_send_it() {
    let fast = Harness::new().await;
    let slow = Harness::with(|c| c.content.fast_path = false).await;
    let mut first = Vec::new();
    for h in [&fast, &slow] {
        h.setup(&[ID_A]).await;
        h.upstream.set_rate(2 << 20); // 3 MiB in ~1.5 s
        first.push(h.get(&h.a.content_path()).await); // starts the download
    }
    for h in [&fast, &slow] {
        h.eventually("the download is receiving", |h| {
            h.running()
                .app
                .fetcher
                .status()
                .iter()
                .any(|f| f.bytes_done > 0)
        })
        .await;
    }
    let path = fast.a.content_path();
    let sha1_tag = format!("\"sha1:{}\"", fast.a.sha1);
    // The whole file last: its answer ends when the download does.
    let requests = [
        ("HEAD", String::new()),
        ("GET", format!("If-None-Match: {sha1_tag}\r\n")),
        ("GET", "If-Match: \"nope\"\r\n".into()),
        ("GET", "Range: bytes=0-99\r\n".into()), // a range: hyper's on both
        ("GET", String::new()),
    ];
    let in_flight = |h: &Harness| h.running().app.fetcher.is_fetching(&h.a.sha1);
    for (method, extra) in &requests {
        assert!(in_flight(&fast) && in_flight(&slow), "still downloading");
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n");
        let (got, want) = tokio::join!(
            exchange(fast.running().content_addr, &request),
            exchange(slow.running().content_addr, &request)
        );
        assert_eq!(got.0, want.0, "status of {request:?}");
        assert_eq!(got.1, want.1, "headers of {request:?}");
        assert!(got.2 == want.2, "body of {request:?}");
        if *method == "GET" && extra.is_empty() {
            assert!(got.2 == fast.a.bytes, "the whole file");
        }
    }
    for r in first {
        assert!(r.bytes().await.unwrap() == fast.a.bytes);
    }
    let sendfile = "upcache_sendfile_responses_total";
    // The first GET (it started the download) and all but the range.
    assert_eq!(fast.counter(sendfile).await, 5);
    assert_eq!(slow.counter(sendfile).await, 0);
    for h in [&fast, &slow] {
        assert_eq!(h.upstream.requests(&h.a.path), 1, "one download each");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_fails_gets_the_same_error_on_both_paths() {
    let fast = Harness::new().await;
    let slow = Harness::with(|c| c.content.fast_path = false).await;
    // In the catalog and approved, but the upstream does not have it.
    let missing = upcache::demo::SampleFile::generate("5077777", "cab", 10_000);
    for h in [&fast, &slow] {
        let mut catalog = h.catalog();
        let update =
            upcache::demo::update_json(ID_D, "5077777", "Missing", &[&missing], &h.upstream);
        catalog["updates"].as_array_mut().unwrap().push(update);
        assert_eq!(h.import(&catalog).await.status(), 200);
        h.set_state(ID_D, "approve").await;
    }
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        missing.content_path()
    );
    let got = exchange(fast.running().content_addr, &request).await;
    let want = exchange(slow.running().content_addr, &request).await;
    assert!(got.0.starts_with("HTTP/1.1 502"), "{got:?}");
    assert_eq!(got, want);
    // Not the upstream's URL (a presigned one would carry its signature).
    assert_eq!(String::from_utf8_lossy(&got.2), "upstream answered 404\n");
    assert!(got.1.contains(&"cache-control: no-store".to_owned()));
    assert_eq!(fast.counter("upcache_sendfile_responses_total").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_of_unknown_length_is_one_miss_on_both_paths() {
    let fast = Harness::new().await;
    let slow = Harness::with(|c| c.content.fast_path = false).await;
    for h in [&fast, &slow] {
        // No size in the catalog, none from the upstream (chunked): the fast
        // path starts the download, learns nothing of its length and hands
        // the request to hyper, which joins the same download.
        let mut catalog = h.catalog();
        let file = &mut catalog["updates"][0]["files"][0];
        assert_eq!(file["sha1"], h.a.sha1.to_string());
        file.as_object_mut().unwrap().remove("size");
        assert_eq!(h.import(&catalog).await.status(), 200);
        h.set_state(ID_A, "approve").await;
        h.upstream
            .inject(upcache::demo::upstream::Fault::ExtraBytes(0), 1);
        let r = h.get(&h.a.content_path()).await;
        assert_eq!(r.status(), 200);
        assert!(r.bytes().await.unwrap() == h.a.bytes);
        assert_eq!(
            h.content_requests("miss").await,
            1,
            "the one request is the miss"
        );
        assert_eq!(h.content_requests("coalesced").await, 0);
        assert_eq!(h.upstream.requests(&h.a.path), 1);
    }
}
