//! The access log: one line per content request, on both the fast path and
//! hyper's, with what the cache did; `SIGHUP` reopens the file.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use upcache::config::AccessLogFormat;

use crate::common::*;

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_one_json_line_with_what_the_cache_did() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let h = Harness::with(|c| {
        c.access_log.access_log = log.display().to_string();
        c.access_log.access_log_format = AccessLogFormat::Json;
    })
    .await;
    h.setup(&[ID_B]).await;
    let path = h.b.content_path();
    // A miss (hyper path), then a ranged hit with a user agent (fast path).
    assert_eq!(h.get(&path).await.bytes().await.unwrap(), h.b.bytes);
    h.settled().await;
    // Logged when the server sees the body end, which can be just after
    // the client has the last byte: wait, so the lines keep their order.
    for _ in 0..100 {
        h.running().flush_access_log().await;
        if std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = h
        .http
        .get(h.url(&format!("{path}?cacheHostOrigin=do.example")))
        .header("range", "bytes=10-109")
        .header("user-agent", "Microsoft BITS/7.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().len(), 100);
    // A HEAD, an h2 hit (hyper path), an unknown file, an unapproved one.
    let r = h.http.head(h.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(h.url(&path)).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), h.b.bytes);
    let unknown = format!(
        "/c/msdownload/update/software/secu/x_{}.cab",
        "0".repeat(40)
    );
    assert_eq!(h.get(&unknown).await.status(), 404);
    assert_eq!(h.get(&h.c.content_path()).await.status(), 403);
    for _ in 0..100 {
        h.running().flush_access_log().await;
        if std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 6) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let lines = json_lines(&std::fs::read_to_string(&log).unwrap());
    // Sorted: a line is written when its response ends, and an h2 stream
    // may end after the next request on another connection has begun.
    let mut summary: Vec<(String, u64, u64, String)> = lines
        .iter()
        .map(|l| {
            (
                l["method"].as_str().unwrap().to_owned(),
                l["status"].as_u64().unwrap(),
                l["bytes"].as_u64().unwrap(),
                l["cache"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    summary.sort();
    let len = h.b.bytes.len() as u64;
    let not_found = "no update contains this file\n".len() as u64;
    let mut expected = vec![
        ("GET", 200, len, "MISS"),
        ("GET", 206, 100, "HIT"),
        ("HEAD", 200, 0, "HIT"),
        ("GET", 200, len, "HIT"),
        ("GET", 404, not_found, "REFUSED"),
    ];
    expected.sort();
    let forbidden = summary
        .iter()
        .position(|l| l.1 == 403)
        .expect("the 403's line");
    assert_eq!(summary.remove(forbidden).3, "REFUSED");
    let got: Vec<(&str, u64, u64, &str)> = summary
        .iter()
        .map(|(m, s, b, c)| (m.as_str(), *s, *b, c.as_str()))
        .collect();
    assert_eq!(got, expected, "{lines:#?}");
    assert_eq!(lines[0]["cache"], "MISS", "the miss was logged first");
    let ranged = lines.iter().find(|l| l["status"] == 206).unwrap();
    assert_eq!(ranged["path"], format!("{path}?cacheHostOrigin=do.example"));
    assert_eq!(ranged["range"], "bytes=10-109");
    assert_eq!(ranged["ua"], "Microsoft BITS/7.8");
    assert_eq!(ranged["remote"], "127.0.0.1");
    assert!(lines[0]["range"].is_null());
    for l in &lines {
        assert!(l["duration_ms"].as_f64().unwrap() >= 0.0);
        let time = l["time"].as_str().unwrap();
        assert!(time.starts_with("20") && time.ends_with('Z'), "{time}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_file_for_logrotate() {
    let h = Harness::new().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let server = spawn_server_args(
        dir.path(),
        &["--access-log", log.to_str().unwrap()],
        Stdio::null(),
    );
    server.setup(&h, &[ID_B]).await;
    let path = h.b.content_path();
    assert_eq!(server.body(&path).await, h.b.bytes);
    let rotated = dir.path().join("access.log.1");
    within("the first line", Duration::from_secs(10), async || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 1)
    })
    .await;
    std::fs::rename(&log, &rotated).unwrap();
    // SAFETY: signalling our own child.
    assert_eq!(
        unsafe { libc::kill(server.child.id() as i32, libc::SIGHUP) },
        0
    );
    within("the reopened file", Duration::from_secs(10), async || {
        log.exists()
    })
    .await;
    assert_eq!(server.body(&path).await, h.b.bytes);
    within(
        "the second line in the new file",
        Duration::from_secs(10),
        async || std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 1),
    )
    .await;
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&log).unwrap();
    assert!(old.contains(" MISS "), "{old}");
    // combined: host, time, request line, status, bytes, referer, UA, cache, seconds.
    assert!(new.starts_with("127.0.0.1 - - ["), "{new}");
    assert!(
        new.contains(&format!(
            "\"GET {path} HTTP/1.1\" 200 {} \"-\" \"-\" HIT ",
            h.b.bytes.len()
        )),
        "{new}"
    );
    drop(server);
}

/// Lines follow the order responses end: a miss the client has read to
/// its end is logged before the hit it asks for next, on a new connection
/// (the fast path), over h2 and as a range (hyper's). One pair shows it
/// only now and then (the line of the miss was sent after its last bytes,
/// and the hit could be logged in between): thirty pairs show it in most
/// runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_is_logged_before_the_hit_that_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let h = Harness::with(|c| {
        c.access_log.access_log = log.display().to_string();
        c.access_log.access_log_format = AccessLogFormat::Json;
    })
    .await;
    let mut files = Vec::new();
    let mut updates = Vec::new();
    for i in 0..30u32 {
        let kb = format!("51{i:05}");
        let f = upcache::demo::SampleFile::generate(&kb, "cab", 300_000);
        h.upstream.add(&f.path, f.bytes.clone());
        let id = format!("00000000-0000-4000-8000-0000001{i:05}");
        updates.push(upcache::demo::update_json(
            &id,
            &kb,
            "u",
            &[&f],
            &h.upstream,
        ));
        files.push((id, f));
    }
    let r = h.import(&serde_json::json!({ "updates": updates })).await;
    assert_eq!(r.status(), 200);
    for (id, _) in &files {
        h.set_state(id, "approve").await;
    }
    // A connection a request: the hit is not queued behind the miss.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut expected = Vec::new();
    for (i, (_, f)) in files.iter().enumerate() {
        let path = f.content_path();
        let client = if i % 3 == 1 { &h2 } else { &fresh };
        for cache in ["MISS", "HIT"] {
            let mut r = client.get(h.url(&path));
            if i % 3 == 2 {
                r = r.header("range", "bytes=0-"); // the full path for a miss
            }
            assert!(r.send().await.unwrap().bytes().await.unwrap() == f.bytes);
            expected.push(format!("{cache} {path}"));
        }
    }
    within("every line", Duration::from_secs(10), async || {
        h.running().flush_access_log().await;
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == expected.len())
    })
    .await;
    let lines = json_lines(&std::fs::read_to_string(&log).unwrap());
    let got: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["cache"].as_str().unwrap(),
                l["path"].as_str().unwrap()
            )
        })
        .collect();
    let out_of_order: Vec<_> = (got.iter().zip(&expected).enumerate())
        .filter(|(_, (g, e))| g != e)
        .collect();
    assert!(out_of_order.is_empty(), "{out_of_order:?}");
}
