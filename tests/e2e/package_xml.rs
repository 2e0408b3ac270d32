//! Importing Microsoft's package.xml: bundles, supersedence, unknown sizes.

use base64::Engine as _;
use serde_json::Value;

use crate::common::*;

const BUNDLE: &str = "631fdcea-0000-4000-8000-000000000001";
const CHILD: &str = "f87dda5a-0000-4000-8000-000000000002";
const SSU: &str = "0d1e2f3a-0000-4000-8000-000000000003";

/// The fixture with this harness's upstream and files filled in.
fn fixture(h: &Harness) -> String {
    let b64 =
        |d: &upcache::digest::Sha1Digest| base64::engine::general_purpose::STANDARD.encode(d.0);
    // The fixture's URLs follow SampleFile's paths, so the upstream serves them.
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/package.xml"
    ))
    .unwrap()
    .replace("{{UPSTREAM}}", &format!("http://{}", h.upstream.addr))
    .replace("{{A}}", &b64(&h.a.sha1))
    .replace("{{B}}", &b64(&h.b.sha1))
    .replace("{{C}}", &b64(&h.c.sha1))
    .replace("{{A_SHA1}}", &h.a.sha1.to_hex())
    .replace("{{B_SHA1}}", &h.b.sha1.to_hex())
    .replace("{{C_SHA1}}", &h.c.sha1.to_hex())
}

async fn import_xml(h: &Harness, xml: String) -> reqwest::Response {
    let req = h
        .http
        .post(h.admin("/api/v1/catalog"))
        .header("content-type", "application/xml");
    req.body(xml).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_xml_imports_bundles_supersedence_and_kb_numbers() {
    let h = Harness::new().await;
    let r = import_xml(&h, fixture(&h)).await;
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(
        (
            report["updates_added"].as_u64(),
            report["files_added"].as_u64()
        ),
        (Some(3), Some(3))
    );

    let bundle = h.admin_json(&format!("/api/v1/updates/{BUNDLE}")).await;
    assert_eq!(bundle["superseded"], true);
    assert_eq!(bundle["kb"], "5034122", "KB from the bundled file's URL");
    assert_eq!(bundle["title"], "KB5034122");
    assert_eq!(bundle["revision"], 201);
    assert_eq!(
        bundle["classification"],
        "0fa1201d-4330-4fa8-8ae9-b877473b6441"
    );
    assert_eq!(
        bundle["files"][0]["sha1"],
        h.a.sha1.to_hex(),
        "a bundle carries what it bundles"
    );
    assert_eq!(
        bundle["files"][0]["size"],
        Value::Null,
        "package.xml has no sizes"
    );
    let ssu = h.admin_json(&format!("/api/v1/updates/{SSU}")).await;
    assert_eq!(
        (ssu["superseded"].as_bool(), ssu["file_count"].as_u64()),
        (Some(false), Some(2))
    );

    // Approving the bundle makes its child's file servable; size learned
    // from the upstream, SHA-1 verified.
    h.set_state(BUNDLE, "approve").await;
    let r = h.get(&h.a.content_path()).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == h.a.bytes);
    assert_eq!(h.get(&h.b.content_path()).await.status(), 403);
    h.settled().await;
    let child = h.admin_json(&format!("/api/v1/updates/{CHILD}")).await;
    assert_eq!(child["files"][0]["size"], h.a.bytes.len());
    assert_eq!(child["files"][0]["local_state"], "stored");

    // Re-import: a no-op.
    let again: Value = import_xml(&h, fixture(&h)).await.json().await.unwrap();
    assert_eq!(
        (
            again["updates_unchanged"].as_u64(),
            again["updates_added"].as_u64()
        ),
        (Some(3), Some(0))
    );

    // A file that moved: the new location replaces the old one, once.
    let old_url = format!("http://{}{}", h.upstream.addr, h.a.path);
    let moved_url = format!("http://{}/moved/{}", h.upstream.addr, h.a.name);
    let moved = fixture(&h).replace(&old_url, &moved_url);
    assert_ne!(moved, fixture(&h));
    for changed in [1, 0] {
        let r: Value = import_xml(&h, moved.clone()).await.json().await.unwrap();
        assert_eq!(r["files_changed"], changed, "{r}");
        let child = h.admin_json(&format!("/api/v1/updates/{CHILD}")).await;
        assert_eq!(child["files"][0]["url"], moved_url.as_str());
    }
    // Listed twice in one document, the last location wins.
    let a_id = base64::engine::general_purpose::STANDARD.encode(h.a.sha1.0);
    let twice = moved.replace(
        "<FileLocations>",
        &format!(
            r#"<FileLocations><FileLocation Id="{a_id}" Url="http://{}/elsewhere/{}"/>"#,
            h.upstream.addr, h.a.name
        ),
    );
    assert_ne!(twice, moved);
    import_xml(&h, twice).await;
    let child = h.admin_json(&format!("/api/v1/updates/{CHILD}")).await;
    assert_eq!(child["files"][0]["url"], moved_url.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_package_xml_is_rejected_whole() {
    let h = Harness::new().await;
    let good = fixture(&h);
    for (bad, expect) in [
        (
            good.replace(
                "http://schemas.microsoft.com/msus/2004/02/OfflineSync",
                "urn:wrong",
            ),
            "namespace",
        ),
        (
            good.replace(
                &base64::engine::general_purpose::STANDARD.encode(h.b.sha1.0),
                "%%%",
            ),
            "File@Id",
        ),
        (good[..good.len() / 2].to_owned(), "byte"),
        (good.replace("RevisionId=\"44174230\"", ""), "RevisionId"),
        (
            good.replace(
                &format!("UpdateId=\"{SSU}\""),
                &format!("UpdateId=\"{CHILD}\""),
            ),
            "twice",
        ),
    ] {
        let r = import_xml(&h, bad).await;
        assert_eq!(r.status(), 400, "{expect}");
        let err: Value = r.json().await.unwrap();
        assert!(err["error"].as_str().unwrap().contains(expect), "{err}");
    }
    // A payload without a location.
    let cut = good.replace(
        &format!(
            "<FileLocation Id=\"{}\"",
            base64::engine::general_purpose::STANDARD.encode(h.c.sha1.0)
        ),
        "<Ignored Id=\"x\"",
    );
    let err: Value = import_xml(&h, cut).await.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("no <FileLocation>"),
        "{err}"
    );
    let list = h.admin_json("/api/v1/updates").await;
    assert_eq!(list["total"], 0, "nothing half-imported");
    // The server keeps serving.
    assert_eq!(import_xml(&h, good).await.status(), 200);
}

/// A cabinet holding one file, MSZIP-compressed.
fn cabinet(name: &str, bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut builder = cab::CabinetBuilder::new();
    builder
        .add_folder(cab::CompressionType::MsZip)
        .add_file(name);
    let mut writer = builder.build(std::io::Cursor::new(Vec::new())).unwrap();
    while let Some(mut w) = writer.next_file().unwrap() {
        w.write_all(bytes).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_imports_package_xml_and_the_cabinets_it_comes_in() {
    let h = Harness::new().await;
    let file = h.dir.path().join("package.xml");
    std::fs::write(&file, fixture(&h)).unwrap();
    let cab = h.dir.path().join("wsusscn2.cab");
    let package_cab = cabinet(
        "package.cab",
        &cabinet("package.xml", fixture(&h).as_bytes()),
    );
    std::fs::write(&cab, package_cab).unwrap();
    let out = import_with_cli(&h, &cab).await;
    assert!(out.contains("3 added"), "{out}");
    let out = import_with_cli(&h, &file).await;
    assert!(out.contains("3 unchanged"), "{out}");
}

async fn import_with_cli(h: &Harness, file: &std::path::Path) -> String {
    let out = run_cli(
        &["import", file.to_str().unwrap(), "--admin", &h.admin("")],
        &[],
    )
    .await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_by_kb_classification_and_supersedence() {
    let h = Harness::new().await;
    assert_eq!(import_xml(&h, fixture(&h)).await.status(), 200);
    let list = |q: &'static str| h.admin_json(q);
    assert_eq!(list("/api/v1/updates?superseded=true").await["total"], 1);
    let kb = h.admin_json(&format!("/api/v1/updates/{SSU}")).await["kb"]
        .as_str()
        .unwrap()
        .to_owned();
    let by_kb = h.admin_json(&format!("/api/v1/updates?kb=KB{kb}")).await;
    assert_eq!(
        (by_kb["total"].as_u64(), by_kb["updates"][0]["id"].as_str()),
        (Some(1), Some(SSU))
    );
    let security = "/api/v1/updates?classification=0FA1201D-4330-4FA8-8AE9-B877473B6441";
    assert_eq!(list(security).await["total"], 2);
    assert_eq!(
        list("/api/v1/updates?product=a3c2375d-0c8a-42f9-bce0-28333e198407").await["total"],
        1
    );

    let bulk = |body: Value| h.http.post(h.admin("/api/v1/approvals")).json(&body).send();
    let r = bulk(serde_json::json!({"action": "approve"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "an empty selection is not 'everything'");
    let r: Value = bulk(serde_json::json!({"action": "approve", "classification": "0fa1201d-4330-4fa8-8ae9-b877473b6441"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["changed"], 2);
    assert_eq!(
        h.get(&h.a.content_path()).await.status(),
        200,
        "the approved bundle serves its child's file"
    );
    // Declining superseded updates in one go takes the bundle out again.
    let out = run_cli(&["decline", "--superseded", "--admin", &h.admin("")], &[]).await;
    assert!(
        out.stdout.contains("decline: 1 updates changed"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(h.get(&h.a.content_path()).await.status(), 403);
    assert_eq!(h.get(&h.b.content_path()).await.status(), 200);
}

/// While a long import holds the catalog's writer, status shows it,
/// listings answer, and a download that lands is served and remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_import_shows_progress_and_blocks_neither_reads_nor_downloads() {
    use std::time::Duration;
    let mut h = Harness::new().await;
    h.setup(&[ID_A]).await;
    let xml = fixture(&h).into_bytes();
    let (first, rest) = xml.split_at(xml.len() / 2);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let upload = tokio::spawn(
        h.http
            .post(h.admin("/api/v1/catalog"))
            .header("content-type", "application/xml")
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    tx.send(Ok(first.to_vec())).await.unwrap();
    let mut import = Value::Null;
    for _ in 0..100 {
        import = h.status().await["import"].clone();
        if !import.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(import["phase"], "reading", "{import}");

    let quick = Duration::from_secs(5);
    let list = tokio::time::timeout(quick, h.admin_json("/api/v1/updates"))
        .await
        .expect("listings answer during an import");
    assert_eq!(list["total"], 3);
    let body = tokio::time::timeout(quick, async {
        h.get(&h.a.content_path()).await.bytes().await.unwrap()
    })
    .await
    .expect("downloads finish during an import");
    assert!(body == h.a.bytes);
    h.settled().await;
    assert!(h.get(&h.a.content_path()).await.bytes().await.unwrap() == h.a.bytes);
    assert_eq!(
        h.upstream.requests(&h.a.path),
        1,
        "the second GET was a hit"
    );

    tx.send(Ok(rest.to_vec())).await.unwrap();
    drop(tx);
    let r = upload.await.unwrap().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(h.status().await["import"].is_null());

    // The ingest recorded during the import was written down.
    h.restart().await;
    assert!(h.get(&h.a.content_path()).await.bytes().await.unwrap() == h.a.bytes);
    assert_eq!(
        h.upstream.requests(&h.a.path),
        1,
        "still stored after a restart"
    );
}
