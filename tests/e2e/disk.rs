//! The disk: a reserve no download eats into, a largest file, a bounded
//! quarantine.

use upcache::demo::upstream::Fault;

use crate::common::*;

/// The sample catalog with update `index`'s file size removed (learned
/// from the upstream, or never, when it answers chunked).
fn without_size(h: &Harness, index: usize) -> serde_json::Value {
    let mut catalog = h.catalog();
    catalog["updates"][index]["files"][0]
        .as_object_mut()
        .unwrap()
        .remove("size");
    catalog
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_of_unknown_size_stops_at_the_disk_reserve() {
    // ~2 MiB usable above the reserve: A (3 MiB) cannot fit.
    let Some((h, _disk)) = TinyDisk::harness("8m", 6 << 20).await else {
        return;
    };
    assert_eq!(h.import(&without_size(&h, 0)).await.status(), 200);
    h.set_state(ID_A, "approve").await;
    h.set_state(ID_B, "approve").await;
    assert!(h.get(&h.b.content_path()).await.bytes().await.unwrap() == h.b.bytes);
    h.settled().await;
    // Chunked, no length anywhere: only the reserve can stop it.
    h.upstream.inject(Fault::ExtraBytes(0), 1);
    let r = h.get(&h.a.content_path()).await;
    assert!(
        r.status() == 507 || r.bytes().await.is_err(),
        "never a complete body"
    );
    h.settled().await;
    assert!(h.running().app.store.temp_files().is_empty(), "tmp/ empty");
    let free = h.running().app.store.free_bytes().unwrap();
    assert!(free >= 5 << 20, "the reserve was kept: {free} bytes free");
    assert_eq!(h.stored(), vec![h.b.sha256], "the store is intact");
    assert!(h.get(&h.b.content_path()).await.bytes().await.unwrap() == h.b.bytes);
    assert_eq!(
        h.status().await["catalog"]["updates_approved"],
        2,
        "the catalog works"
    );
    let mut h = h;
    h.server.take().unwrap().shutdown().await;
    drop(h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_file_bytes_refuses_known_sizes_and_cuts_unknown_ones() {
    let h = Harness::with(|c| c.fetch.max_file_bytes = Some(1 << 20)).await;
    h.setup(&[ID_A, ID_B]).await;
    // Known: 507 before any upstream request.
    let r = h.get(&h.a.content_path()).await;
    assert_eq!(r.status(), 507);
    assert!(r.text().await.unwrap().contains("max_file_bytes"));
    assert_eq!(h.upstream.requests(&h.a.path), 0);
    // Unknown and chunked: cut at the limit, nothing kept.
    assert_eq!(h.import(&without_size(&h, 0)).await.status(), 200);
    h.upstream.inject(Fault::ExtraBytes(0), 1);
    let r = h.get(&h.a.content_path()).await;
    assert!(r.status() == 507 || r.bytes().await.is_err());
    h.settled().await;
    assert!(h.running().app.store.temp_files().is_empty());
    assert!(h.stored().is_empty());
    // Smaller files are not affected.
    assert!(h.get(&h.b.content_path()).await.bytes().await.unwrap() == h.b.bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quarantine_is_bounded_in_bytes() {
    let h = Harness::with(|c| c.store.quarantine_max_bytes = 150_000).await;
    h.setup(&[ID_A, ID_B, ID_C]).await;
    h.upstream.set_corrupt(true);
    let quarantine_bytes = |h: &Harness| -> (usize, u64) {
        let files = h.running().app.store.quarantined();
        let bytes = files
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum();
        (files.len(), bytes)
    };
    let h = &h;
    let fail = |path: String| async move {
        // A 502 when verification failed before the response began, else a cut body.
        let r = h.get(&path).await;
        let failed = r.status() == 502 || r.bytes().await.is_err();
        h.settled().await;
        failed
    };
    assert!(fail(h.b.content_path()).await); // 100,000 bytes
    assert!(fail(h.c.content_path()).await); // 50,000 bytes
    assert_eq!(quarantine_bytes(h), (2, 150_000), "both fit");
    // Larger than the whole quarantine: deleted, the others kept.
    assert!(fail(h.a.content_path()).await);
    assert_eq!(quarantine_bytes(h), (2, 150_000));
    // B again: the oldest (the first B) makes room.
    assert!(fail(h.b.content_path()).await);
    assert_eq!(quarantine_bytes(h), (2, 150_000));
    assert!(h.running().app.store.temp_files().is_empty());
    assert!(h.stored().is_empty());
}
