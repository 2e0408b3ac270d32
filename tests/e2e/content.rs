//! Serving: routes, ranges, conditionals, headers.

use crate::common::*;

/// Splits a multipart/byteranges body into (Content-Range, bytes) parts.
fn multipart_parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type.split("boundary=").nth(1).expect("boundary");
    let delim = format!("--{boundary}");
    let text = body;
    let mut parts = Vec::new();
    let mut pos = 0;
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    while let Some(start) = find(text, delim.as_bytes(), pos) {
        let after = start + delim.len();
        if text[after..].starts_with(b"--") {
            break;
        }
        let head_end = find(text, b"\r\n\r\n", after).unwrap();
        let head = String::from_utf8_lossy(&text[after..head_end]).to_string();
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .unwrap()
            .to_owned();
        let next = find(text, format!("\r\n{delim}").as_bytes(), head_end).unwrap();
        parts.push((range, text[head_end + 4..next].to_vec()));
        pos = next + 2;
    }
    parts
}

async fn warm(h: &Harness) -> String {
    h.setup(&[ID_A]).await;
    let path = h.a.content_path();
    assert!(h.get(&path).await.bytes().await.unwrap() == h.a.bytes);
    h.settled().await;
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_suffix_and_open_ranges_are_byte_exact() {
    let h = Harness::new().await;
    let path = warm(&h).await;
    let len = h.a.bytes.len();
    for (range, want, content_range) in [
        ("bytes=0-0", 0..1, format!("bytes 0-0/{len}")),
        (
            "bytes=1000-65535",
            1000..65536,
            format!("bytes 1000-65535/{len}"),
        ),
        (
            "bytes=-500",
            len - 500..len,
            format!("bytes {}-{}/{len}", len - 500, len - 1),
        ),
        (
            "bytes=3000000-",
            3_000_000..len,
            format!("bytes 3000000-{}/{len}", len - 1),
        ),
        (
            "bytes=100-99999999",
            100..len,
            format!("bytes 100-{}/{len}", len - 1),
        ),
    ] {
        let r = h.get_range(&path, range).await;
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(r.headers()["content-range"], content_range.as_str());
        assert_eq!(
            r.headers()["content-length"],
            (want.end - want.start).to_string().as_str()
        );
        assert!(r.bytes().await.unwrap() == h.a.bytes[want], "{range}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiple_ranges_are_multipart_and_merged() {
    let h = Harness::new().await;
    let path = warm(&h).await;
    let len = h.a.bytes.len();
    let r = h.get_range(&path, "bytes=500-599,0-99,50-149,-10").await;
    assert_eq!(r.status(), 206);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("multipart/byteranges; boundary="), "{ct}");
    let declared: usize = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), declared);
    let parts = multipart_parts(&ct, &body);
    let want = [(0, 150), (500, 600), (len - 10, len)];
    assert_eq!(parts.len(), want.len());
    for ((range, data), (s, e)) in parts.iter().zip(want) {
        assert_eq!(range, &format!("bytes {s}-{}/{len}", e - 1));
        assert_eq!(&data[..], &h.a.bytes[s..e]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsatisfiable_ranges_get_416_and_invalid_ones_are_ignored() {
    let h = Harness::new().await;
    let path = warm(&h).await;
    let len = h.a.bytes.len();
    let r = h.get_range(&path, &format!("bytes={len}-")).await;
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{len}").as_str()
    );
    for bad in ["bytes=abc", "bytes=5-1", "lines=0-1"] {
        let r = h.get_range(&path, bad).await;
        assert_eq!(r.status(), 200, "{bad}");
        assert_eq!(r.bytes().await.unwrap().len(), len);
    }
    // A thousand disjoint ranges are not amplified into a huge multipart
    // body: served whole, or refused outright when the head is over 16 KiB.
    let many = |n: usize| {
        (0..n)
            .map(|i| format!("{}-{}", i * 100, i * 100 + 1))
            .collect::<Vec<_>>()
            .join(",")
    };
    let r = h.get_range(&path, &format!("bytes={}", many(1000))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), len);
    let r = h.get_range(&path, &format!("bytes={}", many(10_000))).await;
    assert_eq!(r.status(), 431);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_and_conditional_requests() {
    let h = Harness::new().await;
    let path = warm(&h).await;
    let r = h.get(&path).await;
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        etag,
        format!("\"sha1:{}\"", h.a.sha1),
        "the URL names the file by SHA-1"
    );
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(r.headers()["content-type"], "application/x-ms-update");
    assert_eq!(
        r.headers()["last-modified"],
        "Tue, 09 Jan 2024 00:00:00 GMT"
    );

    let r = h
        .http
        .get(h.url(&path))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], etag.as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = h
        .http
        .get(h.url(&path))
        .header("if-modified-since", "Wed, 10 Jan 2024 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    let ranged = |if_range: &str| {
        h.http
            .get(h.url(&path))
            .header("range", "bytes=0-9")
            .header("if-range", if_range)
            .send()
    };
    assert_eq!(ranged(&etag).await.unwrap().status(), 206);
    let r = ranged("\"sha256:stale\"").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), h.a.bytes.len());
    let r = h
        .http
        .get(h.url(&path))
        .header("if-match", "\"nope\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_sends_headers_without_a_body() {
    let h = Harness::new().await;
    let path = warm(&h).await;
    let r = h.http.head(h.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        h.a.bytes.len().to_string().as_str()
    );
    assert!(r.bytes().await.unwrap().is_empty());
    let r = h
        .http
        .head(h.url(&path))
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-length"], "10");
    let r = h.http.post(h.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_content_route_names_the_same_file() {
    let h = Harness::new().await;
    h.setup(&[ID_B]).await;
    let sha1 = h.b.sha1.to_hex();
    let folder = format!("{:X}", h.b.sha1.last_byte());
    for path in [
        h.b.content_path(),
        format!("/Content/{folder}/{sha1}.cab"),
        h.b.path.clone(),
        format!("/microsoftupdate/content/{sha1}"),
    ] {
        let r = h.get(&path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.bytes().await.unwrap() == h.b.bytes, "{path}");
    }
    // Once stored, the SHA-256 routes work too.
    h.settled().await;
    for path in [
        format!("/blobs/sha256/{}", h.b.sha256),
        format!("/microsoftupdate/content/{}", h.b.sha256),
    ] {
        assert!(
            h.get(&path).await.bytes().await.unwrap() == h.b.bytes,
            "{path}"
        );
    }
    assert_eq!(h.upstream.requests(&h.b.path), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_are_rejected_without_touching_the_filesystem() {
    let h = Harness::new().await;
    h.setup(&[ID_A, ID_B, ID_C]).await;
    let sha1 = h.b.sha1.to_hex();
    for (path, want) in [
        ("/Content/../../etc/passwd".to_owned(), 400),
        (format!("/Content/00/../../{sha1}.cab"), 400),
        (
            "/Content/0A/zz1122334455667788990011223344556677880a.cab".to_owned(),
            400,
        ),
        ("/Content/0A/0011.cab".to_owned(), 400),
        (
            format!(
                "/Content/{:02X}/{sha1}.cab",
                h.b.sha1.last_byte().wrapping_add(1)
            ),
            404,
        ),
        ("/Content/0A/%2e%2e%2fetc.cab".to_owned(), 400),
        ("/blobs/sha256/../../catalog.sqlite3".to_owned(), 400),
        ("/favicon.ico".to_owned(), 404),
        (format!("/Content/00/{}.cab", "0".repeat(40)), 404),
        (format!("/Content/00/{}.cab", "a".repeat(2000)), 414),
    ] {
        assert_eq!(h.raw_status(&path).await, want, "{path}");
    }
    assert_eq!(h.upstream.total_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etag_does_not_change_when_the_download_completes() {
    // Without a SHA-256 in the catalog (as with Microsoft's), the SHA-256 is
    // learned at the end of the first download; the ETag must not change then.
    let h = Harness::new().await;
    h.setup(&[ID_A]).await;
    h.upstream.set_rate(4 << 20);
    let path = h.a.content_path();
    let during = h.get(&path).await;
    let tag = during.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        h.running().app.fetcher.is_fetching(&h.a.sha1),
        "first response came from a running download"
    );
    assert!(during.bytes().await.unwrap() == h.a.bytes);
    h.settled().await;
    let after = h
        .http
        .get(h.url(&path))
        .header("range", "bytes=5-9")
        .header("if-range", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(after.headers()["etag"], tag.as_str());
    assert_eq!(
        after.status(),
        206,
        "If-Range with the first response's tag still holds"
    );
    assert!(after.bytes().await.unwrap() == h.a.bytes[5..10]);
}
