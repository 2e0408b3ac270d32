//! The storage policy, observed through content requests and upstream counts.

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_files_are_fetched_once_and_served_from_the_store_across_restarts() {
    let mut h = Harness::new().await;
    h.setup(&[ID_A]).await;
    let path = h.a.content_path();
    for _ in 0..5 {
        assert!(h.get(&path).await.bytes().await.unwrap() == h.a.bytes);
    }
    assert_eq!(h.upstream.requests(&h.a.path), 1);
    h.settled().await;
    assert_eq!(h.stored(), vec![h.a.sha256]);
    h.restart().await;
    let r = h.get_range(&path, "bytes=10-19").await;
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == h.a.bytes[10..20]);
    assert!(h.get(&path).await.bytes().await.unwrap() == h.a.bytes);
    assert_eq!(
        h.upstream.requests(&h.a.path),
        1,
        "served from the store after a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unapproved_and_declined_files_are_forbidden_and_never_fetched() {
    let h = Harness::new().await;
    h.setup(&[]).await;
    h.set_state(ID_C, "decline").await;
    let r = h.get(&h.a.content_path()).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("no approved update"));
    let r = h.get(&h.c.content_path()).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("declined"));
    assert_eq!(h.upstream.total_requests(), 0);
    // Approve, unapprove: the file follows.
    h.set_state(ID_A, "approve").await;
    assert_eq!(h.get(&h.a.content_path()).await.status(), 200);
    h.set_state(ID_A, "unapprove").await;
    assert_eq!(h.get(&h.a.content_path()).await.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_shared_by_updates_is_servable_if_any_is_approved() {
    let h = Harness::new().await;
    let mut catalog = h.catalog();
    // Update C also ships B's file.
    let b_entry = h.b.catalog_entry(&h.upstream);
    catalog["updates"][2]["files"]
        .as_array_mut()
        .unwrap()
        .push(b_entry);
    assert_eq!(h.import(&catalog).await.status(), 200);
    assert_eq!(h.get(&h.b.content_path()).await.status(), 403);
    h.set_state(ID_C, "approve").await;
    h.assert_serves(&h.b).await;
    h.set_state(ID_B, "decline").await;
    assert_eq!(
        h.get(&h.b.content_path()).await.status(),
        200,
        "C is still approved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_redirects_to_the_upstream_and_stores_nothing() {
    let h = Harness::new().await;
    h.setup(&[ID_A]).await;
    h.set_policy(json!({"mode": "metadata-only"})).await;
    let r = h.get(&h.a.content_path()).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], h.upstream.url(&h.a.path).as_str());
    assert_eq!(
        h.get(&h.c.content_path()).await.status(),
        403,
        "approval still applies"
    );
    assert!(h.stored().is_empty());
    assert_eq!(h.upstream.total_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_sync_downloads_every_non_declined_file_at_import() {
    let h = Harness::new().await;
    h.set_policy(json!({"mode": "store-locally", "download": "at-sync"}))
        .await;
    // Declined before import would need the update to exist; decline C after
    // a first import of only A and B instead.
    let mut catalog = h.catalog();
    let c = catalog["updates"].as_array_mut().unwrap().remove(2);
    assert_eq!(h.import(&catalog).await.status(), 200);
    h.eventually("A and B stored", |h| h.stored().len() == 2)
        .await;
    let mut stored = h.stored();
    stored.sort();
    let mut want = vec![h.a.sha256, h.b.sha256];
    want.sort();
    assert_eq!(stored, want);
    assert_eq!(h.upstream.requests(&h.a.path), 1);
    assert_eq!(h.upstream.requests(&h.c.path), 0);
    // Not approved yet: stored but not served.
    assert_eq!(h.get(&h.a.content_path()).await.status(), 403);
    h.set_state(ID_A, "approve").await;
    h.assert_serves(&h.a).await;
    assert_eq!(h.upstream.requests(&h.a.path), 1);
    let _ = c;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_to_at_sync_downloads_what_is_missing() {
    let h = Harness::new().await;
    h.setup(&[]).await;
    h.set_state(ID_C, "decline").await;
    assert!(h.stored().is_empty());
    h.set_policy(json!({"mode": "store-locally", "download": "at-sync"}))
        .await;
    h.eventually("A and B stored", |h| h.stored().len() == 2)
        .await;
    assert_eq!(
        h.upstream.requests(&h.c.path),
        0,
        "declined files are not downloaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_on_approve_downloads_in_the_background() {
    let h = Harness::new().await;
    h.set_policy(
        json!({"mode": "store-locally", "download": "on-approval", "prefetch_on_approve": true}),
    )
    .await;
    h.setup(&[ID_B]).await;
    h.eventually("B stored", |h| h.stored() == vec![h.b.sha256])
        .await;
    assert_eq!(h.upstream.requests(&h.a.path), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_to_metadata_only_stops_the_background_queue_and_back_resumes_it() {
    let h = Harness::with(|c| c.fetch.background_concurrency = 1).await;
    h.upstream.set_rate(4 << 20); // the 3 MiB file takes a while
    h.set_policy(json!({"mode": "store-locally", "download": "at-sync"}))
        .await;
    assert_eq!(h.import(&h.catalog()).await.status(), 200);
    h.eventually("the first background download runs", |h| {
        !h.running().app.fetcher.status().is_empty()
    })
    .await;
    h.set_policy(json!({"mode": "metadata-only"})).await;
    h.settled().await;
    within(
        "the background queue emptied",
        std::time::Duration::from_secs(5),
        async || h.status().await["background"]["files_queued"] == 0,
    )
    .await;
    assert_eq!(
        h.stored().len(),
        1,
        "the running download finished, no other started"
    );
    assert_eq!(h.upstream.total_requests(), 1);
    assert_eq!(h.status().await["background"]["files_queued"], 0);

    h.upstream.set_rate(0);
    h.set_policy(json!({"mode": "store-locally", "download": "at-sync"}))
        .await;
    h.eventually("the rest downloaded", |h| h.stored().len() == 3)
        .await;
    assert_eq!(h.upstream.total_requests(), 3, "each file fetched once");
}
