//! `upcache cleanup` on a running server, and `upcache gc` and `upcache
//! verify` on a real data directory.

use std::os::unix::fs::PermissionsExt;

use crate::common::*;

/// Runs a maintenance subcommand on `data_dir`: (success, stdout + stderr).
async fn run(args: &[&str], data_dir: &std::path::Path) -> (bool, String) {
    let mut args = args.to_vec();
    args.extend(["--data-dir", data_dir.to_str().unwrap()]);
    let out = run_cli(&args, &[]).await;
    (out.ok, out.stdout + &out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_only_files_no_approved_update_references() {
    let mut h = Harness::new().await;
    h.setup(&[ID_A, ID_B]).await;
    for f in [&h.a, &h.b] {
        assert_eq!(h.get(&f.content_path()).await.status(), 200);
    }
    h.settled().await;
    h.set_state(ID_B, "unapprove").await;
    h.server.take().unwrap().shutdown().await;
    let dir = h.dir.path().to_owned();

    let (ok, out) = run(&["gc"], &dir).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("would remove {}", h.b.sha256)),
        "{out}"
    );
    assert!(!out.contains(&h.a.sha256.to_hex()), "{out}");
    let (ok, out) = run(&["gc", "--yes"], &dir).await;
    assert!(
        ok && out.contains(&format!("freed {} bytes", h.b.bytes.len())),
        "{out}"
    );
    h.restart_stopped().await;
    assert_eq!(h.stored(), vec![h.a.sha256]);
    h.assert_serves(&h.a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_quarantines_a_corrupted_stored_file_and_it_is_fetched_again() {
    let mut h = Harness::new().await;
    h.setup(&[ID_B]).await;
    assert_eq!(h.get(&h.b.content_path()).await.status(), 200);
    h.settled().await;
    h.server.take().unwrap().shutdown().await;
    let dir = h.dir.path().to_owned();
    let (ok, out) = run(&["verify"], &dir).await;
    assert!(ok && out.contains("1 good, 0 bad"), "{out}");
    // Flip a byte of the stored file behind upcache's back.
    let hex = h.b.sha256.to_hex();
    let path = dir
        .join("store/sha256")
        .join(&hex[..2])
        .join(&hex[2..4])
        .join(&hex);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let (ok, out) = run(&["verify"], &dir).await;
    assert!(
        !ok && out.contains("BAD") && out.contains("0 good, 1 bad"),
        "{out}"
    );
    assert!(!path.exists());
    h.restart_stopped().await;
    h.assert_serves(&h.b).await;
    assert_eq!(h.upstream.requests(&h.b.path), 2, "fetched again");
}

/// A file in the store that no catalog entry names (left by an older
/// catalog, or copied in by hand).
fn orphan(h: &Harness) -> upcache::digest::Sha256Digest {
    use sha2::Digest as _;
    let bytes = b"a file no update has".to_vec();
    let digest = upcache::digest::Sha256Digest::from_slice(&sha2::Sha256::digest(&bytes)).unwrap();
    let path = h.running().app.store.path_of(&digest);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_while_serving_removes_only_what_no_update_needs() {
    let h = Harness::new().await;
    h.setup(&[ID_A, ID_B, ID_C]).await;
    for f in [&h.a, &h.b, &h.c] {
        assert_eq!(h.get(&f.content_path()).await.status(), 200);
    }
    h.settled().await;
    h.set_state(ID_B, "unapprove").await;
    h.set_state(ID_C, "decline").await;
    let stray = orphan(&h);
    let admin = h.admin("");

    // Just published: left for the next cleanup, and said so.
    let fresh = run_cli(&["cleanup", "--admin", &admin], &[]).await;
    assert!(fresh.ok, "{}", fresh.stderr);
    assert!(
        fresh
            .stdout
            .contains("3 unneeded files published in the last minute"),
        "{}",
        fresh.stdout
    );
    age_store(&h, std::time::Duration::from_secs(120));

    // A dry run lists B (not approved), C (declined) and the stray file.
    let dry = run_cli(&["cleanup", "--admin", &admin], &[]).await;
    assert!(dry.ok, "{}", dry.stderr);
    for (d, why) in [
        (h.b.sha256, "not-approved"),
        (h.c.sha256, "declined"),
        (stray, "not-in-catalog"),
    ] {
        let line = dry
            .stdout
            .lines()
            .find(|l| l.contains(&d.to_hex()))
            .unwrap_or_else(|| panic!("{d} listed: {}", dry.stdout));
        assert!(
            line.starts_with("would remove") && line.contains(why),
            "{line}"
        );
    }
    assert!(!dry.stdout.contains(&h.a.sha256.to_hex()), "{}", dry.stdout);
    let freed = h.b.bytes.len() + h.c.bytes.len() + b"a file no update has".len();
    assert!(
        dry.stdout.contains(&format!(
            "3 files no update needs; would free {freed} bytes"
        )),
        "{}",
        dry.stdout
    );
    assert_eq!(h.stored().len(), 4, "a dry run removes nothing");

    // Removed while serving: A stays and is served; B, approved again, is
    // fetched again.
    let done = run_cli(&["cleanup", "--yes", "--admin", &admin], &[]).await;
    assert!(done.ok, "{}", done.stderr);
    assert!(
        done.stdout.contains(&format!("freed {freed} bytes")),
        "{}",
        done.stdout
    );
    assert_eq!(h.stored(), vec![h.a.sha256]);
    assert_eq!(h.status().await["catalog"]["files_stored"], 1);
    assert_eq!(
        h.get(&h.a.content_path()).await.bytes().await.unwrap(),
        h.a.bytes
    );
    let before = h.upstream.requests(&h.b.path);
    h.set_state(ID_B, "approve").await;
    assert_eq!(
        h.get(&h.b.content_path()).await.bytes().await.unwrap(),
        h.b.bytes
    );
    assert_eq!(h.upstream.requests(&h.b.path), before + 1);
    // C is declined: refused, not fetched.
    assert_eq!(h.get(&h.c.content_path()).await.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_keeps_what_the_policy_downloads_at_sync_and_refuses_a_bodiless_post() {
    let h = Harness::new().await;
    h.set_policy(serde_json::json!({"mode": "store-locally", "download": "at-sync"}))
        .await;
    h.setup(&[]).await;
    h.eventually("all three downloaded at sync", |h| h.stored().len() == 3)
        .await;
    h.set_state(ID_C, "decline").await;
    age_store(&h, std::time::Duration::from_secs(120));
    let r = h
        .http
        .post(h.admin("/api/v1/cleanup"))
        .json(&serde_json::json!({"remove": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = r.json().await.unwrap();
    // Not approved, but at sync they would be downloaded again at once: kept.
    assert_eq!(report["files"], 1, "{report}");
    assert_eq!(report["listed"][0]["sha256"], h.c.sha256.to_hex());
    assert_eq!(report["listed"][0]["why"], "declined");
    let mut stored = h.stored();
    stored.sort();
    let mut kept = vec![h.a.sha256, h.b.sha256];
    kept.sort();
    assert_eq!(stored, kept);

    // Nothing is removed by a POST that does not say what it wants.
    for body in ["", "{}", "{\"remove\": \"yes\"}"] {
        let r = h
            .http
            .post(h.admin("/api/v1/cleanup"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body:?}");
    }
    let r = h.call(reqwest::Method::POST, "/api/v1/cleanup").await;
    assert_eq!(r.status(), 400);
    assert_eq!(h.stored().len(), 2);
}

/// Flips one byte of a stored file behind upcache's back (same size).
fn corrupt(h: &Harness, digest: &upcache::digest::Sha256Digest) {
    let path = h.running().app.store.path_of(digest);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 0xff;
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    perms.set_mode(0o644);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrub_while_serving_quarantines_a_rotten_file_and_it_is_fetched_again() {
    let h = Harness::new().await;
    h.setup(&[ID_A, ID_B, ID_C]).await;
    for f in [&h.a, &h.b, &h.c] {
        assert_eq!(h.get(&f.content_path()).await.status(), 200);
    }
    h.settled().await;
    corrupt(&h, &h.b.sha256);
    let before = h.upstream.requests(&h.b.path);

    let admin = h.admin("");
    let out = run_cli(&["scrub", "--admin", &admin], &[]).await;
    assert!(!out.ok, "a bad file fails the command: {}", out.stdout);
    assert!(
        out.stdout.contains(&format!("BAD  {}", h.b.sha256))
            && out.stdout.contains("3 of 3 files")
            && out.stdout.contains("1 bad"),
        "{}",
        out.stdout
    );
    assert_eq!(h.running().app.store.quarantined().len(), 1);
    assert!(!h.stored().contains(&h.b.sha256));
    assert_eq!(h.status().await["catalog"]["files_stored"], 2);
    assert_eq!(h.counter("upcache_scrub_bad_files_total").await, 1);
    // The next request fetches a good copy; the others were not touched.
    assert_eq!(
        h.get(&h.b.content_path()).await.bytes().await.unwrap(),
        h.b.bytes
    );
    assert_eq!(h.upstream.requests(&h.b.path), before + 1);
    for f in [&h.a, &h.c] {
        assert!(h.stored().contains(&f.sha256));
    }
    // A clean store passes.
    let again = run_cli(&["scrub", "--admin", &admin], &[]).await;
    assert!(again.ok, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stdout.contains("scrub done: 3 of 3 files"),
        "{}",
        again.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_scrub_is_one_at_a_time_and_stops_when_asked() {
    let h = Harness::new().await;
    h.setup(&[ID_A]).await;
    assert_eq!(h.get(&h.a.content_path()).await.status(), 200);
    h.settled().await;
    // 3 MiB at 1 MiB a second: still running a moment later.
    let r = h
        .http
        .post(h.admin("/api/v1/scrub"))
        .json(&serde_json::json!({"bytes_per_sec": 1 << 20}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    within(
        "the scrub under way",
        std::time::Duration::from_secs(5),
        async || h.admin_json("/api/v1/scrub").await["bytes_done"].as_u64() > Some(0),
    )
    .await;
    let second = h.call(reqwest::Method::POST, "/api/v1/scrub").await;
    assert_eq!(second.status(), 409);
    let status = h.admin_json("/api/v1/scrub").await;
    assert_eq!(status["running"], true, "{status}");
    assert!(status["bytes_done"].as_u64().unwrap() < 3 << 20, "{status}");

    let stopped = run_cli(&["scrub", "--stop", "--admin", &h.admin("")], &[]).await;
    assert!(stopped.ok, "{}", stopped.stderr);
    within(
        "the scrub to stop",
        std::time::Duration::from_secs(5),
        async || h.admin_json("/api/v1/scrub").await["running"] == false,
    )
    .await;
    let status = h.status().await["scrub"].clone();
    assert_eq!(status["stopped"], true, "{status}");
    assert_eq!(status["files_done"], 0, "{status}");
    // Too slow a pace is refused.
    let slow = h
        .http
        .post(h.admin("/api/v1/scrub"))
        .json(&serde_json::json!({"bytes_per_sec": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 400);
}
