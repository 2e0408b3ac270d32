//! `upcache import wsusscn2.cab` beyond `package.xml`: the detail cabinets'
//! core, extended and localized fragments ([MS-WUSP] 2.2) become whole
//! update documents, so a site that never synced serves them to Windows
//! clients; a later server sync replaces them, and wins for good.
//!
//! The fixture is written here: an outer cabinet with `index.xml`,
//! `package.cab` (`package.xml`) and two detail cabinets of `c/`, `x/` and
//! `l/<lang>/` fragments, several members to a folder (as the real file
//! has them), plus one revision whose core fragment is broken.

use std::io::Write;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::*;
use crate::fake_wsus::*;
use crate::update_server::{all_between, between, by_id, machine, sync_now, unescape, Client};
use upcache::demo::SampleFile;

const OFFLINE_NS: &str = "http://schemas.microsoft.com/msus/2004/02/OfflineSync";
const LEAF_TITLE: &str = "Full Deltas 1.459.547.0 for Defender amd64fre";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A cabinet of one MSZIP folder holding `files` in order.
fn cabinet(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = cab::CabinetBuilder::new();
    let folder = builder.add_folder(cab::CompressionType::MsZip);
    for (name, _) in files {
        folder.add_file(name.as_str());
    }
    let mut writer = builder.build(std::io::Cursor::new(Vec::new())).unwrap();
    let mut i = 0;
    while let Some(mut w) = writer.next_file().unwrap() {
        w.write_all(&files[i].1).unwrap();
        i += 1;
    }
    writer.finish().unwrap().into_inner()
}

fn localized(lang: &str, title: &str) -> Vec<u8> {
    format!(
        "<LocalizedProperties><Language>{lang}</Language><Title>{title}</Title>\
         <Description>{title}.</Description></LocalizedProperties>"
    )
    .into_bytes()
}

/// A category's fragments: (core, extended).
fn category(id: &str, kind: &str) -> (Vec<u8>, Vec<u8>) {
    (
        format!("<UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"100\" /><Properties UpdateType=\"Category\" />")
            .into_bytes(),
        format!(
            "<ExtendedProperties DefaultPropertiesLanguage=\"en\" /><HandlerSpecificData type=\"cat:Category\">\
             <CategoryInformation CategoryType=\"{kind}\" ProhibitsSubcategories=\"false\" ProhibitsUpdates=\"false\" />\
             </HandlerSpecificData>"
        )
        .into_bytes(),
    )
}

/// `wsusscn2.cab` for `file` (the leaf's payload, served at `url`).
fn wsusscn2(file: &SampleFile, url: &str) -> Vec<u8> {
    let digest = b64(&file.sha1.0);
    let package_xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><OfflineSyncPackage xmlns=\"{OFFLINE_NS}\" PackageVersion=\"1.1\">\
         <Updates>\
         <Update UpdateId=\"{BUNDLE}\" RevisionNumber=\"200\" RevisionId=\"2001\" CreationDate=\"2026-10-04T09:39:26Z\" IsBundle=\"true\">\
         <Categories><Category Type=\"Product\" Id=\"{PRODUCT}\"/><Category Type=\"UpdateClassification\" Id=\"{CLASSIFICATION}\"/></Categories></Update>\
         <Update UpdateId=\"{LEAF}\" RevisionNumber=\"200\" RevisionId=\"2002\"><PayloadFiles><File Id=\"{digest}\"/></PayloadFiles>\
         <BundledBy><Revision Id=\"2001\"/></BundledBy></Update>\
         </Updates><FileLocations><FileLocation Id=\"{digest}\" Url=\"{url}\"/></FileLocations></OfflineSyncPackage>"
    );
    let index = "<?xml version=\"1.0\" encoding=\"utf-8\"?><INDEX><CABLIST>\
                 <CAB NAME=\"package.cab\" RANGESTART=\"0\"/>\
                 <CAB NAME=\"package2.cab\" RANGESTART=\"0\" FILESDIR=\"1\"/>\
                 <CAB NAME=\"package3.cab\" RANGESTART=\"2000\"/></CABLIST></INDEX>";
    let (product_c, product_x) = category(PRODUCT, "Product");
    let (class_c, class_x) = category(CLASSIFICATION, "UpdateClassification");
    // Sorted by folder, as cabinet tools store them: every core first.
    let package2 = cabinet(&[
        ("c\\1001".into(), product_c),
        ("c\\1002".into(), class_c),
        ("e\\1001".into(), b"EULA text".to_vec()),
        (
            "l\\de\\1001".into(),
            localized("de", "Microsoft Defender Antivirus (de)"),
        ),
        ("l\\en\\1001".into(), localized("en", PRODUCT_TITLE)),
        ("l\\en\\1002".into(), localized("en", CLASSIFICATION_TITLE)),
        ("x\\1001".into(), product_x),
        ("x\\1002".into(), class_x),
    ]);
    let bundle_c = format!(
        "<UpdateIdentity UpdateID=\"{BUNDLE}\" RevisionNumber=\"200\" /><Properties UpdateType=\"Software\" />\
         <Relationships><Prerequisites><AtLeastOne IsCategory=\"true\"><UpdateIdentity UpdateID=\"{CLASSIFICATION}\" /></AtLeastOne>\
         <AtLeastOne IsCategory=\"true\"><UpdateIdentity UpdateID=\"{PRODUCT}\" /></AtLeastOne></Prerequisites>\
         <BundledUpdates><UpdateIdentity UpdateID=\"{LEAF}\" RevisionNumber=\"200\" /></BundledUpdates></Relationships>\
         <ApplicabilityRules><IsInstalled><False /></IsInstalled></ApplicabilityRules>"
    );
    let leaf_c = format!(
        "<UpdateIdentity UpdateID=\"{LEAF}\" RevisionNumber=\"200\" /><Properties UpdateType=\"Software\" />\
         <ApplicabilityRules><IsInstalled><False /></IsInstalled><IsInstallable><True /></IsInstallable></ApplicabilityRules>"
    );
    let leaf_x = format!(
        "<ExtendedProperties DefaultPropertiesLanguage=\"en\" Handler=\"http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/CommandLineInstallation\" \
         MaxDownloadSize=\"{size}\" MinDownloadSize=\"{size}\"><InstallationBehavior RebootBehavior=\"NeverReboots\" /></ExtendedProperties>\
         <Files><File Digest=\"{digest}\" DigestAlgorithm=\"SHA1\" FileName=\"AM_Delta.exe\" Size=\"{size}\" Modified=\"2026-10-04T09:39:26Z\">\
         <AdditionalDigest Algorithm=\"SHA256\">{sha256}</AdditionalDigest></File></Files>\
         <HandlerSpecificData type=\"cmd:CommandLineInstallation\"><InstallCommand Arguments=\"-q\" IsAdministrator=\"true\" /></HandlerSpecificData>",
        size = file.bytes.len(),
        sha256 = b64(&file.sha256.0),
    );
    let package3 = cabinet(&[
        ("c\\2001".into(), bundle_c.into_bytes()),
        ("c\\2002".into(), leaf_c.into_bytes()),
        ("c\\2003".into(), b"<UpdateIdentity UpdateID=\"broken\"".to_vec()),
        ("l\\en\\2001".into(), localized("en", "Security Intelligence Update - KB2267602")),
        ("l\\en\\2002".into(), localized("en", LEAF_TITLE)),
        (
            "x\\2001".into(),
            b"<ExtendedProperties DefaultPropertiesLanguage=\"en\"><KBArticleID>2267602</KBArticleID></ExtendedProperties>".to_vec(),
        ),
        ("x\\2002".into(), leaf_x.into_bytes()),
    ]);
    cabinet(&[
        ("index.xml".into(), index.as_bytes().to_vec()),
        (
            "package.cab".into(),
            cabinet(&[("package.xml".into(), package_xml.into_bytes())]),
        ),
        ("package2.cab".into(), package2),
        ("package3.cab".into(), package3),
    ])
}

async fn import(h: &Harness, cab: &std::path::Path) -> String {
    let out = run_cli(
        &["import", cab.to_str().unwrap(), "--admin", &h.admin("")],
        &[],
    )
    .await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    out.stdout
}

async fn document(h: &Harness, id: &str) -> (u16, String, String) {
    let r = h
        .http
        .get(h.admin(&format!("/api/v1/updates/{id}/xml")))
        .send()
        .await
        .unwrap();
    let rev = r
        .headers()
        .get("x-revision-number")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status().as_u16(), rev, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cabinet_only_site_serves_the_documents_and_a_sync_replaces_them() {
    let h = Harness::new().await;
    // The fake upstream's own Defender file, so its documents and the
    // cabinet's name the same payload.
    let file = SampleFile::generate("2267602", "exe", 200_000);
    h.upstream.add(&file.path, file.bytes.clone());
    let cab = h.dir.path().join("wsusscn2.cab");
    std::fs::write(&cab, wsusscn2(&file, &h.upstream.url(&file.path))).unwrap();

    let out = import(&h, &cab).await;
    assert!(
        out.contains("package2.cab: 2 documents added, 0 replaced"),
        "{out}"
    );
    assert!(
        out.contains("package3.cab: 2 documents added, 0 replaced"),
        "{out}"
    );
    assert!(
        out.contains("skipped revision 2003 of package3.cab"),
        "{out}"
    );
    assert!(
        out.contains("4 added, 0 replaced, 0 unchanged, 0 kept (synced), 1 skipped"),
        "{out}"
    );

    // The whole document, assembled from the three fragments.
    let (status, rev, leaf) = document(&h, LEAF).await;
    assert_eq!((status, rev.as_str()), (200, "200"), "{leaf}");
    assert!(
        leaf.contains(&format!("<Title>{LEAF_TITLE}</Title>")),
        "{leaf}"
    );
    assert!(leaf.contains("FileName=\"AM_Delta.exe\""), "{leaf}");
    assert!(
        leaf.contains("<IsInstallable><True /></IsInstallable>"),
        "{leaf}"
    );
    // Only the configured languages (`sync_languages`: en).
    let (_, _, product) = document(&h, PRODUCT).await;
    assert!(
        product.contains(PRODUCT_TITLE) && !product.contains("(de)"),
        "{product}"
    );
    let info = h.admin_json("/api/v1/documents").await;
    assert_eq!(info["origins"], json!({ "cabinet": 4 }), "{info}");

    // A Windows client scans: offered the updates, the leaf's title comes
    // from its localized fragment and its file from its extended one.
    let mut pc = Client::start(&h, "Pilot").await;
    pc.machine = machine();
    pc.register().await;
    let offers = pc.scan().await;
    let seen = by_id(&offers);
    for id in [PRODUCT, CLASSIFICATION, BUNDLE, LEAF] {
        assert!(seen.contains_key(id), "{id} never offered: {offers:#?}");
    }
    let ext = pc.extended(&[seen[LEAF].rid]).await;
    let fragments: Vec<String> = all_between(&ext, "Xml").into_iter().map(unescape).collect();
    assert!(
        fragments
            .iter()
            .any(|f| f.contains(&format!("<Title>{LEAF_TITLE}</Title>"))),
        "{ext}"
    );
    assert!(
        fragments.iter().any(|f| f.contains("<Files><File Digest=")),
        "{ext}"
    );
    let digest = b64(&file.sha1.0);
    let location = all_between(&ext, "FileLocation")
        .into_iter()
        .find(|l| between(l, "FileDigest") == Some(digest.as_str()))
        .and_then(|l| between(l, "Url"))
        .unwrap_or_else(|| panic!("no FileLocation for the leaf's file: {ext}"));
    assert!(location.contains("/Content/"), "{location}");

    // The same cabinet again changes nothing.
    let again = import(&h, &cab).await;
    assert!(
        again.contains("0 added, 0 replaced, 4 unchanged"),
        "{again}"
    );

    // A server sync of the same revisions replaces the cabinet's documents
    // (they are not "stored already"), byte for byte the upstream's.
    let fake = FakeWsus::start(file.clone(), &h.upstream.url("")).await;
    sync_now(&h, &fake.url).await;
    select_categories(&h).await;
    let report = sync_now(&h, &fake.url).await;
    assert_eq!(report["failed"], json!([]), "{report}");
    for id in [PRODUCT, CLASSIFICATION, BUNDLE, LEAF] {
        let (status, _, doc) = document(&h, id).await;
        assert_eq!(status, 200);
        assert_eq!(doc, fake.doc(id).xml, "{id}: the sync's document");
    }
    let info = h.admin_json("/api/v1/documents").await;
    assert_eq!(info["origins"]["cabinet"], Value::Null, "{info}");

    // And wins for good: the cabinet again leaves the synced documents.
    let after = import(&h, &cab).await;
    assert!(
        after.contains("0 added, 0 replaced, 0 unchanged, 4 kept (synced), 1 skipped"),
        "{after}"
    );
    let (_, _, leaf) = document(&h, LEAF).await;
    assert_eq!(leaf, fake.doc(LEAF).xml);
    // The client's next scan is offered the synced revision (a new id).
    let mut fresh = Client::start(&h, "Pilot").await;
    fresh.machine = machine();
    let offers = fresh.scan().await;
    assert!(by_id(&offers)[LEAF].rid != seen[LEAF].rid, "{offers:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_short_stores_nothing() {
    let h = Harness::new().await;
    let doc = format!(
        "<Update xmlns=\"http://schemas.microsoft.com/msus/2002/12/Update\"><UpdateIdentity UpdateID=\"{LEAF}\" RevisionNumber=\"1\" />\
         <Properties UpdateType=\"Software\" /></Update>"
    );
    let line = json!({ "rid": 1, "doc": doc }).to_string();
    let post = |body: String| {
        h.http
            .post(h.admin("/api/v1/documents?cabinet=package2.cab"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
    };
    // No end line: a client killed mid-upload.
    let r = post(format!("{line}\n")).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("nothing of it was stored"));
    assert_eq!(document(&h, LEAF).await.0, 404);
    let r = post(format!("{line}\n{{\"end\":1}}\n")).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(document(&h, LEAF).await.0, 200);
}

/// `kill -9` while a cabinet's documents are being written: a cabinet is
/// one transaction, so after the restart all of its documents are there or
/// none, never some; the same upload then stores every one. Rounds until a
/// kill lands inside the write (the database's WAL growing past where it
/// stood is the sign), at most five.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_while_a_cabinet_is_written_keeps_all_of_it_or_none() {
    const DOCUMENTS: u64 = 30_000;
    let mut upload = String::new();
    for i in 0..DOCUMENTS {
        let doc = format!(
            "<Update xmlns=\"http://schemas.microsoft.com/msus/2002/12/Update\">\
             <UpdateIdentity UpdateID=\"{i:08x}-0000-4000-8000-{i:012x}\" RevisionNumber=\"1\" />\
             <Properties UpdateType=\"Software\" /></Update>"
        );
        upload.push_str(&json!({ "rid": i + 1, "doc": doc }).to_string());
        upload.push('\n');
    }
    upload.push_str(&format!("{{\"end\":{DOCUMENTS}}}\n"));
    let wal_size = |dir: &std::path::Path| {
        std::fs::metadata(dir.join("catalog.sqlite3-wal")).map_or(0, |m| m.len())
    };
    let spawn = |dir: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            spawn_server_args(&dir, &[], std::process::Stdio::null())
        })
    };
    let http = reqwest::Client::new();
    let stored = |server: &Server| {
        let url = format!("{}/api/v1/documents", server.admin);
        let http = http.clone();
        async move {
            let info: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            info["origins"]["cabinet"].as_u64().unwrap_or(0)
        }
    };
    // A fresh data directory a round: a round whose kill came after the
    // commit leaves the documents stored, and the next upload would write
    // next to nothing.
    let mut killed_inside = None;
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let mut server = spawn(dir.path().to_owned()).await.unwrap();
        let before = wal_size(dir.path());
        let post = http
            .post(format!("{}/api/v1/documents?cabinet=big.cab", server.admin))
            .header("content-type", "application/x-ndjson")
            .body(upload.clone())
            .send();
        let post = tokio::spawn(post);
        while !post.is_finished() && wal_size(dir.path()) < before + (1 << 20) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let answered = post.is_finished();
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        let _ = post.await;
        drop(server);

        let server = spawn(dir.path().to_owned()).await.unwrap();
        let count = stored(&server).await;
        assert!(
            count == 0 || count == DOCUMENTS,
            "{count} of {DOCUMENTS} documents survived the kill"
        );
        drop(server);
        if count == 0 && !answered {
            killed_inside = Some(dir);
            break;
        }
    }
    let dir = killed_inside.expect("no kill landed inside the write");

    let server = spawn(dir.path().to_owned()).await.unwrap();
    let r = http
        .post(format!("{}/api/v1/documents?cabinet=big.cab", server.admin))
        .header("content-type", "application/x-ndjson")
        .body(upload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(stored(&server).await, DOCUMENTS);
}
