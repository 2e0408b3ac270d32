//! Crash safety: the real binary killed with SIGKILL mid-download, again and
//! again; after each kill the store holds only verified files and a restart
//! serves or re-fetches correctly. Rounds: `UPCACHE_KILL9_ROUNDS` (default 20;
//! `scripts/kill9-loop.sh` runs 100).

use std::path::Path;
use std::time::Duration;

use sha2::Digest;

use crate::common::*;

/// Every published file must hash to its name; returns how many there are.
fn check_store(data_dir: &Path) -> usize {
    let mut n = 0;
    for a in std::fs::read_dir(data_dir.join("store/sha256")).unwrap() {
        for b in std::fs::read_dir(a.unwrap().path()).unwrap() {
            for f in std::fs::read_dir(b.unwrap().path()).unwrap() {
                let path = f.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                let name = path.file_name().unwrap().to_str().unwrap().to_owned();
                assert_eq!(
                    hex::encode(sha2::Sha256::digest(&bytes)),
                    name,
                    "corrupt file in the store"
                );
                n += 1;
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_mid_download_never_leaves_a_bad_file() {
    let rounds: usize = std::env::var("UPCACHE_KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let h = Harness::new().await; // for the upstream and the sample files
    h.upstream.set_rate(6 << 20); // ~0.5 s for A
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (mut killed_mid_download, mut completed) = (0, 0);
    for round in 0..rounds {
        let mut server = start_binary(dir.path()).await;
        assert!(
            std::fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none(),
            "temp files survive a restart"
        );
        if round == 0 {
            server.setup(&h, &[ID_A]).await;
        }
        // Start a download and kill the server somewhere inside it.
        let url = format!("{}{}", server.content, h.a.content_path());
        let download = tokio::spawn(http.get(url).send());
        tokio::time::sleep(Duration::from_millis(30 + (round as u64 * 37) % 400)).await;
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        let _ = download.await;
        match check_store(dir.path()) {
            0 => killed_mid_download += 1,
            _ => {
                completed += 1;
                // Make the next round download again, through the "file
                // vanished from the store" path.
                std::fs::remove_dir_all(dir.path().join("store/sha256")).unwrap();
                std::fs::create_dir_all(dir.path().join("store/sha256")).unwrap();
            }
        }
    }
    // Finally let it finish: byte-exact, approvals intact, nothing lost.
    let mut server = start_binary(dir.path()).await;
    let body = server.body(&h.a.content_path()).await;
    assert!(body == h.a.bytes, "bytes lost after {rounds} kills");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert!(check_store(dir.path()) <= 1);
    eprintln!("kill -9 rounds: {rounds}, mid-download: {killed_mid_download}, after completion: {completed}, bytes lost: 0");
    assert!(killed_mid_download > 0, "no kill landed inside a download");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_downloads_resume_after_a_crash_without_any_client() {
    let h = Harness::new().await;
    h.upstream.set_rate(2 << 20); // A takes 1.5 s
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = start_binary(dir.path()).await;
    let policy = serde_json::json!({"mode": "store-locally", "download": "on-approval", "prefetch_on_approve": true});
    http.put(format!("{}/api/v1/policy", server.admin))
        .json(&policy)
        .send()
        .await
        .unwrap();
    server.setup(&h, &[ID_A]).await;
    h.eventually("the background download under way", |h| {
        h.upstream.requests(&h.a.path) == 1
    })
    .await;
    server.child.kill().unwrap(); // mid-download
    server.child.wait().unwrap();
    assert_eq!(check_store(dir.path()), 0);
    // Restarted, nobody asks: the download is picked up again from the policy and approvals.
    let mut server = start_binary(dir.path()).await;
    for _ in 0..100 {
        if check_store(dir.path()) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(check_store(dir.path()), 1, "A downloaded after the restart");
    assert_eq!(h.upstream.requests(&h.a.path), 2);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
