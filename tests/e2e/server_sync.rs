//! Server-to-server sync ([MS-WSUSSS]) against a fake upstream on
//! loopback (`fake_wsus`): documents kept byte for byte, files in the
//! catalog and served after approval, the incremental second sync, the
//! cookie fault recovered, short pages asked again, an unknown id isolated,
//! and a sync killed with SIGKILL resumed without duplicates.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;
use crate::fake_wsus::*;
use upcache::demo::SampleFile;
use upcache::metadata::MetaStore;
use upcache::wsus::sync::{self, SyncJob, SyncSettings, Tuning};

async fn fake_for(h: &Harness) -> FakeWsus {
    let file = SampleFile::generate("2267602", "exe", 200_000);
    h.upstream.add(&file.path, file.bytes.clone());
    FakeWsus::start(file, &h.upstream.url("")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_keeps_whole_documents_serves_the_files_and_then_fetches_nothing() {
    let h = Harness::new().await;
    let fake = fake_for(&h).await;

    // First: categories only, until products and classifications are chosen.
    let first = h.sync_from_server(&fake.url).await;
    assert_eq!(first["error"], Value::Null, "{first}");
    assert_eq!(first["categories"], 4, "{first}");
    assert_eq!(first["categories_only"], true);
    assert_eq!(first["complete"], true);
    let cats = h.admin_json("/api/v1/categories").await;
    assert_eq!(cats["products"][0]["title"], PRODUCT_TITLE, "{cats}");
    assert_eq!(cats["classifications"].as_array().unwrap().len(), 2);

    select_categories(&h).await;
    let unknown = h
        .http
        .put(h.admin("/api/v1/categories"))
        .json(&json!({ "products": ["Windows 95"], "classifications": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);

    // An automatic approval rule runs on newly synced updates, as on imports.
    let r = h
        .http
        .post(h.admin("/api/v1/rules"))
        .json(&json!({ "action": "approve", "classification": CLASSIFICATION_TITLE, "product": PRODUCT_TITLE }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Second: the updates, in batches of the upstream's maximum (3).
    let second = h.sync_from_server(&fake.url).await;
    assert_eq!(second["error"], Value::Null, "{second}");
    assert_eq!(second["failed"], json!([]), "{second}");
    assert_eq!(second["revisions_new"], 5, "{second}");
    assert_eq!(second["documents"], 5);
    assert_eq!(second["complete"], true);

    // Whole documents, byte for byte: a compressed one and a plain one.
    for id in [LEAF, PRODUCT] {
        let r = h
            .http
            .get(h.admin(&format!("/api/v1/updates/{id}/xml")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), fake.doc(id).xml, "{id}");
    }
    let missing = h
        .http
        .get(h.admin("/api/v1/updates/0000/xml"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // The bundle is the catalog's update, with its leaf's file (both
    // digests); the leaf itself is not listed; the older bundle is superseded.
    let bundle = h.admin_json(&format!("/api/v1/updates/{BUNDLE}")).await;
    assert_eq!(bundle["classification"], CLASSIFICATION_TITLE, "{bundle}");
    assert_eq!(bundle["products"], json!([PRODUCT_TITLE]));
    assert_eq!(bundle["kb"], "2267602");
    let files = bundle["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["sha1"], fake.file.sha1.to_hex());
    assert_eq!(files[0]["sha256"], fake.file.sha256.to_hex());
    let leaf = h
        .call(Method::GET, &format!("/api/v1/updates/{LEAF}"))
        .await;
    assert_eq!(leaf.status(), 404);
    let old = h.admin_json(&format!("/api/v1/updates/{OLD}")).await;
    assert_eq!(old["superseded"], true, "{old}");

    // Approved by the rule, the file is served through the content port.
    assert_eq!(bundle["state"], "approved", "{bundle}");
    assert_eq!(second["catalog"]["changed_by_rules"], 3, "{second}");
    let path = format!("/microsoftupdate/content/{}", fake.file.sha1.to_hex());
    let got = h.get(&path).await;
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap() == fake.file.bytes);

    // Third: nothing changed upstream, so no document is fetched.
    let served = fake.documents_served();
    let third = h.sync_from_server(&fake.url).await;
    assert_eq!(third["revisions_listed"], 0, "{third}");
    assert_eq!(third["documents"], 0);
    assert_eq!(fake.documents_served(), served);

    // A new revision upstream: only it comes.
    let mut newer = fake.doc(TOP);
    newer.rev = 2;
    newer.xml = newer
        .xml
        .replace("RevisionNumber=\"1\"", "RevisionNumber=\"2\"");
    fake.publish(newer);
    let fourth = h.sync_from_server(&fake.url).await;
    assert_eq!(fourth["revisions_changed"], 1, "{fourth}");
    assert_eq!(fourth["documents"], 1);
    assert_eq!(fake.documents_served(), served + 1);
}

/// The faults, in process with short pauses: an `InvalidCookie` answer
/// gets a new cookie, pages shorter than asked are asked again, and the
/// one id the upstream fails on is named while every other is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_recovered_or_named_and_the_rest_is_stored() {
    let files = upcache::demo::upstream::Upstream::start().await.unwrap();
    let file = SampleFile::generate("2267602", "exe", 1000);
    let fake = FakeWsus::start(file, &files.url("")).await;
    fake.behave(|b| {
        b.invalid_cookie_once = true;
        b.page_cap = Some(2);
        b.list_unknown = true;
    });
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MetaStore::open(dir.path()).unwrap());
    let job = || SyncJob {
        settings: SyncSettings {
            upstream_server: fake.url.clone(),
            sync_products: vec![PRODUCT.into()],
            sync_classifications: vec![CLASSIFICATION_TITLE.into()],
            ..SyncSettings::default()
        },
        store: store.clone(),
        catalog: None,
        progress: Arc::new(Mutex::default()),
        tuning: Tuning {
            max_batch: 100,
            retry_delay: Duration::from_millis(5),
            ..Tuning::default()
        },
    };
    let report = sync::run(job()).await;
    assert_eq!(report.error, None, "{report:?}");
    assert!(
        report.faults.iter().any(|f| f.contains("InvalidCookie")),
        "{:?}",
        report.faults
    );
    assert!(report
        .faults
        .iter()
        .any(|f| f.contains("InternalServerError")));
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert!(report.failed[0].starts_with(UNKNOWN), "{:?}", report.failed);
    assert!(report.failed[0].contains("InternalServerError"));
    // 4 categories + 5 updates, in pages of at most 2.
    assert_eq!(report.documents, 9);
    assert!(!report.complete);
    let log = fake.log();
    assert_eq!(
        log.iter().filter(|l| *l == "GetCookie").count(),
        2,
        "{log:?}"
    );
    assert!(log.iter().all(|l| !l.starts_with("GetUpdateData:3")));
    for id in [BUNDLE, LEAF, OLD, MIDDLE, TOP, DETECTOID] {
        assert!(store.document(id).unwrap().is_some(), "{id}");
    }
    // Prerequisites are kept as the chain they are.
    let links = store.links(TOP).unwrap();
    assert!(
        links.contains(&("prerequisite".into(), 0, MIDDLE.into())),
        "{links:?}"
    );
    let links = store.links(MIDDLE).unwrap();
    assert!(links.contains(&("prerequisite".into(), 0, DETECTOID.into())));

    // The anchors did not move: the next sync lists again, fetches only
    // what is missing (the unknown id, failing again), and no duplicate.
    let rid = store.rid(BUNDLE, 200).unwrap();
    fake.behave(|b| b.list_unknown = false);
    let again = sync::run(job()).await;
    assert_eq!(again.documents, 0, "{again:?}");
    assert_eq!(again.already_stored, 5);
    assert!(again.complete, "{again:?}");
    assert_eq!(store.rid(BUNDLE, 200).unwrap(), rid);
}

/// The real binary: `upcache sync --server` and `upcache categories
/// --select` drive it; a sync killed with SIGKILL mid-way (the upstream
/// stalls on its second batch of updates) resumes after a restart,
/// fetching only what the killed one had not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_syncs_and_a_sync_killed_mid_way_resumes_without_duplicates() {
    let files = upcache::demo::upstream::Upstream::start().await.unwrap();
    let file = SampleFile::generate("2267602", "exe", 1000);
    files.add(&file.path, file.bytes.clone());
    let fake = FakeWsus::start(file, &files.url("")).await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_binary(dir.path()).await;
    let admin = server.admin.clone();

    let out = run_cli(&["sync", "--server", &fake.url, "--admin", &admin], &[]).await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("categories: 4"), "{}", out.stdout);
    let out = run_cli(
        &[
            "categories",
            "--select",
            PRODUCT_TITLE,
            "--select",
            "definition updates",
            "--admin",
            &admin,
        ],
        &[],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!("[x] {PRODUCT_TITLE}")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("[ ] Security Updates"),
        "{}",
        out.stdout
    );

    // The updates' second batch never comes: the server is killed waiting.
    let batches = fake
        .log()
        .iter()
        .filter(|l| l.starts_with("GetUpdateData:"))
        .count();
    fake.behave(|b| b.hold_after = Some(batches + 1));
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{admin}/api/v1/server-sync"))
        .json(&json!({ "upstream": fake.url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let busy = http
        .post(format!("{admin}/api/v1/server-sync"))
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 409);
    within(
        "the first batch stored",
        Duration::from_secs(30),
        async || {
            let r = http
                .get(format!("{admin}/api/v1/updates/{OLD}/xml"))
                .send()
                .await
                .unwrap();
            r.status() == 200
        },
    )
    .await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let served_before = fake.documents_served();
    assert_eq!(served_before, 4 + 3);

    fake.behave(|b| b.hold_after = None);
    let server = start_binary(dir.path()).await;
    let out = run_cli(
        &["sync", "--server", &fake.url, "--admin", &server.admin],
        &[],
    )
    .await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("2 new"), "{}", out.stdout);
    assert!(out.stdout.contains("3 already here"), "{}", out.stdout);
    assert_eq!(fake.documents_served(), served_before + 2);
    let bundle: Value = http
        .get(format!("{}/api/v1/updates/{BUNDLE}", server.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bundle["files"].as_array().unwrap().len(), 1, "{bundle}");
    drop(server);
    // Every revision once, with the ids it was given.
    let store = MetaStore::open(dir.path()).unwrap();
    let kinds: u64 = store.counts().unwrap().iter().map(|(_, n)| n).sum();
    assert_eq!(kinds, 9);
}
