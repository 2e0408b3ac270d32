//! upcache as an upstream server ([MS-WSUSSS], server side): upcache B
//! syncs from upcache A, which synced from the fake WSUS. B ends with A's
//! documents byte for byte and the same files; a repeated sync transfers
//! nothing, a new revision on A comes alone; B takes A's approvals only
//! in replica mode; the file reaches B's clients through A; A answers
//! faults for forged cookies and unknown revisions.

use serde_json::{json, Value};

use crate::common::*;
use crate::fake_wsus::*;
use upcache::demo::SampleFile;

const ALL: [&str; 9] = [
    PRODUCT,
    CLASSIFICATION,
    SECURITY,
    DETECTOID,
    BUNDLE,
    LEAF,
    OLD,
    MIDDLE,
    TOP,
];

async fn document(h: &Harness, id: &str) -> String {
    let r = h
        .http
        .get(h.admin(&format!("/api/v1/updates/{id}/xml")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{id}");
    r.text().await.unwrap()
}

/// A full sync: the categories, the selection, the updates.
async fn sync_all(h: &Harness, upstream: &str) -> Value {
    let first = h.sync_from_server(upstream).await;
    assert_eq!(first["error"], Value::Null, "{first}");
    select_categories(h).await;
    let second = h.sync_from_server(upstream).await;
    assert_eq!(second["error"], Value::Null, "{second}");
    assert_eq!(second["failed"], json!([]), "{second}");
    assert_eq!(second["complete"], true, "{second}");
    json!({ "first": first, "second": second })
}

async fn soap_post(h: &Harness, path: &str, op: &str, inner: &str) -> (u16, String) {
    let body = upcache::wsus::soap::envelope(inner);
    let r = h
        .http
        .post(h.url(path))
        .header("Content-Type", "text/xml; charset=utf-8")
        .header(
            "SOAPAction",
            format!("\"http://www.microsoft.com/SoftwareDistribution/{op}\""),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_upcache_syncs_from_an_upstream_upcache_byte_for_byte() {
    let a = Harness::new().await;
    let file = SampleFile::generate("2267602", "exe", 200_000);
    a.upstream.add(&file.path, file.bytes.clone());
    let fake = FakeWsus::start(file, &a.upstream.url("")).await;
    sync_all(&a, &fake.url).await;
    a.set_state(BUNDLE, "approve").await;
    a.set_state(OLD, "decline").await;

    // B fetches files from A's content listener, metadata from its
    // server-sync service.
    let upstream = a.url("");
    let content = reqwest::Url::parse(&upstream).unwrap();
    let mut b = Harness::with(|c| c.fetch.upstream = Some(content)).await;
    let both = sync_all(&b, &upstream).await;
    assert_eq!(both["first"]["categories"], 4, "{both}");
    assert_eq!(both["second"]["revisions_new"], 5, "{both}");
    assert_eq!(both["second"]["documents"], 5, "{both}");

    // The same documents, byte for byte, as the fake first served them.
    for id in ALL {
        let on_b = document(&b, id).await;
        assert_eq!(on_b, document(&a, id).await, "{id}");
        assert_eq!(on_b, fake.doc(id).xml, "{id}");
    }
    // The same catalog entries: files, digests, locations, supersedence.
    for id in [BUNDLE, OLD, TOP, MIDDLE] {
        let (on_a, on_b) = (
            a.admin_json(&format!("/api/v1/updates/{id}")).await,
            b.admin_json(&format!("/api/v1/updates/{id}")).await,
        );
        for field in [
            "files",
            "kb",
            "classification",
            "products",
            "superseded",
            "title",
        ] {
            assert_eq!(on_a[field], on_b[field], "{id} {field}");
        }
    }
    let bundle = b.admin_json(&format!("/api/v1/updates/{BUNDLE}")).await;
    assert_eq!(
        bundle["files"][0]["sha256"],
        fake.file.sha256.to_hex(),
        "{bundle}"
    );
    // Not a replica: A's approvals stay A's.
    assert_eq!(bundle["state"], "not-approved", "{bundle}");

    // Nothing changed: nothing listed, nothing fetched.
    let third = b.sync_from_server(&upstream).await;
    assert_eq!(third["revisions_listed"], 0, "{third}");
    assert_eq!(third["documents"], 0, "{third}");
    assert_eq!(third["complete"], true, "{third}");

    // A new revision reaches A, then B: alone.
    let mut newer = fake.doc(TOP);
    newer.rev = 2;
    newer.xml = newer
        .xml
        .replace("RevisionNumber=\"1\"", "RevisionNumber=\"2\"");
    fake.publish(newer.clone());
    let on_a = a.sync_from_server(&fake.url).await;
    assert_eq!(on_a["revisions_changed"], 1, "{on_a}");
    let fourth = b.sync_from_server(&upstream).await;
    assert_eq!(fourth["revisions_listed"], 1, "{fourth}");
    assert_eq!(fourth["revisions_changed"], 1, "{fourth}");
    assert_eq!(fourth["documents"], 1, "{fourth}");
    assert_eq!(document(&b, TOP).await, newer.xml);

    // Replica mode: A's approvals become B's.
    b.restart_with(|c| c.server_sync.sync_replica = true).await;
    let replica = b.sync_from_server(&upstream).await;
    assert_eq!(replica["error"], Value::Null, "{replica}");
    assert_eq!(replica["approvals_changed"], 2, "{replica}");
    let bundle = b.admin_json(&format!("/api/v1/updates/{BUNDLE}")).await;
    assert_eq!(bundle["state"], "approved", "{bundle}");
    let old = b.admin_json(&format!("/api/v1/updates/{OLD}")).await;
    assert_eq!(old["state"], "declined", "{old}");
    let top = b.admin_json(&format!("/api/v1/updates/{TOP}")).await;
    assert_eq!(top["state"], "not-approved", "{top}");
    // A group's approval with its deadline: the replica gets the group too.
    let r = a
        .http
        .post(a.admin("/api/v1/groups"))
        .json(&json!({ "name": "Pilot" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = a
        .http
        .post(a.admin(&format!("/api/v1/updates/{TOP}/approve")))
        .json(&json!({ "group": "Pilot", "deadline": "2031-01-02T03:04:05Z" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let pilot = b.sync_from_server(&upstream).await;
    assert_eq!(pilot["approvals_changed"], 1, "{pilot}");
    let approvals = |v: Value| -> Vec<(Value, Value)> {
        v["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["group"].clone(), x["deadline"].clone()))
            .collect()
    };
    let on_b = approvals(b.admin_json(&format!("/api/v1/updates/{TOP}")).await);
    assert_eq!(on_b, [(json!("Pilot"), json!("2031-01-02T03:04:05Z"))]);
    assert_eq!(
        on_b,
        approvals(a.admin_json(&format!("/api/v1/updates/{TOP}")).await)
    );
    let groups = b.admin_json("/api/v1/groups").await;
    assert!(groups.to_string().contains("\"Pilot\""), "{groups}");
    // Unchanged upstream: nothing changes.
    let same = b.sync_from_server(&upstream).await;
    assert_eq!(same["approvals_changed"], 0, "{same}");
    // Unapproved on A: unapproved on B at the next sync.
    a.set_state(BUNDLE, "unapprove").await;
    let again = b.sync_from_server(&upstream).await;
    assert_eq!(again["approvals_changed"], 1, "{again}");
    let bundle = b.admin_json(&format!("/api/v1/updates/{BUNDLE}")).await;
    assert_eq!(bundle["state"], "not-approved", "{bundle}");
    a.set_state(BUNDLE, "approve").await;
    b.sync_from_server(&upstream).await;

    // The approved file reaches B's clients through A.
    let got = b.get(&fake.file.path).await;
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap() == fake.file.bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_service_answers_faults_a_downstream_understands() {
    let a = Harness::new().await;
    let sync = "/ServerSyncWebService/ServerSyncWebService.asmx";
    let ns = "xmlns=\"http://www.microsoft.com/SoftwareDistribution\"";
    let forged = format!(
        "<GetUpdateData {ns}><cookie><Expiration>2099-01-01T00:00:00Z</Expiration>\
         <EncryptedData>QUFBQQ==</EncryptedData></cookie><updateIds><UpdateIdentity>\
         <UpdateID>{BUNDLE}</UpdateID><RevisionNumber>1</RevisionNumber></UpdateIdentity></updateIds></GetUpdateData>"
    );
    let (status, body) = soap_post(&a, sync, "GetUpdateData", &forged).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("<ErrorCode>InvalidCookie</ErrorCode>"),
        "{body}"
    );

    // The handshake, by hand, then an unknown revision.
    let dss = "/DssAuthWebService/DssAuthWebService.asmx";
    let (status, body) = soap_post(
        &a,
        dss,
        "GetAuthorizationCookie",
        "<GetAuthorizationCookie xmlns=\"http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService\">\
         <accountName>dss.corp</accountName><accountGuid>5e1c9d1a-0000-4000-8000-000000000001</accountGuid></GetAuthorizationCookie>",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let data = between(&body, "CookieData");
    let (status, body) = soap_post(
        &a,
        sync,
        "GetCookie",
        &format!(
            "<GetCookie {ns}><authCookies><AuthorizationCookie><PlugInId>DssTargeting</PlugInId>\
             <CookieData>{data}</CookieData></AuthorizationCookie></authCookies><protocolVersion>1.20</protocolVersion></GetCookie>"
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let cookie = between(&body, "EncryptedData");
    let unknown = forged.replace("QUFBQQ==", &cookie);
    let (status, body) = soap_post(&a, sync, "GetUpdateData", &unknown).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("<ErrorCode>InternalServerError</ErrorCode>"),
        "{body}"
    );
    // A protocol version 2 is refused as such.
    let (_, body) = soap_post(
        &a,
        sync,
        "GetCookie",
        &format!(
            "<GetCookie {ns}><authCookies><AuthorizationCookie><PlugInId>DssTargeting</PlugInId>\
             <CookieData>{data}</CookieData></AuthorizationCookie></authCookies><protocolVersion>2.0</protocolVersion></GetCookie>"
        ),
    )
    .await;
    assert!(body.contains("IncompatibleProtocolVersion"), "{body}");
    // An empty upstream lists nothing and says so with an anchor.
    let (status, body) = soap_post(
        &a,
        sync,
        "GetRevisionIdList",
        &format!(
            "<GetRevisionIdList {ns}><cookie><Expiration /><EncryptedData>{cookie}</EncryptedData></cookie>\
             <filter><GetConfig>true</GetConfig></filter></GetRevisionIdList>"
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<Anchor>upcache:"), "{body}");
    assert!(!body.contains("<UpdateIdentity>"), "{body}");
    // A DTD is refused before anything is read.
    let r = a
        .http
        .post(a.url(sync))
        .body("<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert!(r.text().await.unwrap().contains("DTD"));
}

fn between(body: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = body.find(&open).expect(tag) + open.len();
    let end = body[start..].find(&format!("</{tag}>")).unwrap() + start;
    body[start..end].to_owned()
}

/// Over HTTPS: the upstream upcache's HTTPS content listener, a private
/// CA the downstream trusts through `upstream_ca`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_syncs_over_https_trusting_the_upstreams_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    let pki = private_ca(certs.path(), "hq");
    let files = pki.files.clone();
    let a = Harness::with(|c| c.content.set_https("127.0.0.1:0".parse().unwrap(), files)).await;
    let file = SampleFile::generate("2267602", "exe", 1000);
    let fake = FakeWsus::start(file, &a.upstream.url("")).await;
    sync_all(&a, &fake.url).await;

    let port = a
        .running()
        .content_tls_addr
        .expect("an HTTPS listener")
        .port();
    let upstream = format!("https://127.0.0.1:{port}");
    // Without the CA: refused, and said.
    let untrusting = Harness::new().await;
    let refused = untrusting.sync_from_server(&upstream).await;
    assert!(refused["error"].as_str().is_some(), "{refused}");
    drop(untrusting);

    let ca = pki.ca.clone();
    let b = Harness::with(|c| c.fetch.upstream_ca_file = Some(ca)).await;
    let both = sync_all(&b, &upstream).await;
    assert_eq!(both["second"]["documents"], 5, "{both}");
    assert_eq!(document(&b, BUNDLE).await, fake.doc(BUNDLE).xml);
}

/// A WSUS replica forgets a deployment only when told it is dead
/// ([MS-WSUSSS] 3.2.4.3): a withdrawn approval is listed in
/// `DeadDeployments` to a replica whose anchor predates it, once; given
/// again, it comes under a new `DeploymentGuid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_approval_is_a_dead_deployment_for_a_wsus_replica() {
    let a = Harness::new().await;
    let file = SampleFile::generate("2267602", "exe", 200_000);
    a.upstream.add(&file.path, file.bytes.clone());
    let fake = FakeWsus::start(file, &a.upstream.url("")).await;
    sync_all(&a, &fake.url).await;
    a.set_state(BUNDLE, "approve").await;

    // A replica's handshake, by hand, as WSUS makes it.
    let sync = "/ServerSyncWebService/ServerSyncWebService.asmx";
    let ns = "xmlns=\"http://www.microsoft.com/SoftwareDistribution\"";
    let (_, body) = soap_post(
        &a,
        "/DssAuthWebService/DssAuthWebService.asmx",
        "GetAuthorizationCookie",
        "<GetAuthorizationCookie xmlns=\"http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService\">\
         <accountName>wsus.corp</accountName><accountGuid>5e1c9d1a-0000-4000-8000-000000000002</accountGuid></GetAuthorizationCookie>",
    )
    .await;
    let data = between(&body, "CookieData");
    let (_, body) = soap_post(
        &a,
        sync,
        "GetCookie",
        &format!(
            "<GetCookie {ns}><authCookies><AuthorizationCookie><PlugInId>DssTargeting</PlugInId>\
             <CookieData>{data}</CookieData></AuthorizationCookie></authCookies><protocolVersion>1.20</protocolVersion></GetCookie>"
        ),
    )
    .await;
    let cookie = between(&body, "EncryptedData");
    let deployments = async |anchor: &str| {
        let anchor = if anchor.is_empty() {
            String::new()
        } else {
            format!("<deploymentAnchor>{anchor}</deploymentAnchor>")
        };
        let (status, body) = soap_post(
            &a,
            sync,
            "GetDeployments",
            &format!(
                "<GetDeployments {ns}><cookie><Expiration /><EncryptedData>{cookie}</EncryptedData></cookie>\
                 {anchor}<syncAnchor></syncAnchor></GetDeployments>"
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body
    };
    // The GUID of the bundle's Install deployment in an answer, if any.
    let install_of = |body: &str| {
        body.split("<ServerSyncDeployment>")
            .skip(1)
            .find(|d| d.contains(&format!("<UpdateId>{BUNDLE}</UpdateId>")))
            .map(|d| between(d, "DeploymentGuid"))
    };
    let dead_of = |body: &str| between(body, "DeadDeployments");

    let first = deployments("").await;
    let approved = install_of(&first).expect("the approval as a deployment");
    assert!(!dead_of(&first).contains("<guid>"), "{first}");
    let anchor1 = between(&first, "Anchor");

    // Withdrawn: dead for the replica that had it, the leaf's Bundle too.
    a.set_state(BUNDLE, "unapprove").await;
    let second = deployments(&anchor1).await;
    assert_eq!(install_of(&second), None, "{second}");
    let dead = dead_of(&second);
    assert!(
        dead.contains(&format!("<guid>{approved}</guid>")),
        "{second}"
    );
    assert_eq!(dead.matches("<guid>").count(), 2, "{second}");
    // Told once: the next answer to that replica lists it no more.
    let anchor2 = between(&second, "Anchor");
    let third = deployments(&anchor2).await;
    assert!(!dead_of(&third).contains("<guid>"), "{third}");

    // Approved again: a new GUID, which no later answer calls dead.
    a.set_state(BUNDLE, "approve").await;
    let fourth = deployments(&between(&third, "Anchor")).await;
    let again = install_of(&fourth).expect("the new approval");
    assert_ne!(again, approved);
    assert!(!dead_of(&fourth).contains(&again), "{fourth}");
}

/// On a replica, a synced update's approval is the upstream's: changing
/// it here is refused with a 409 that says so (the next sync would undo
/// it), through the API and the CLI; updates imported otherwise, and a
/// server that is no replica, keep local approvals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_local_approvals_of_synced_updates() {
    let mut b = Harness::new().await;
    let file = SampleFile::generate("2267602", "exe", 200_000);
    b.upstream.add(&file.path, file.bytes.clone());
    let fake = FakeWsus::start(file, &b.upstream.url("")).await;
    sync_all(&b, &fake.url).await;
    b.setup(&[]).await;
    let imported = b.catalog()["updates"][0]["id"].as_str().unwrap().to_owned();
    // Not a replica: local approvals are the only ones.
    b.set_state(TOP, "approve").await;
    b.set_state(TOP, "unapprove").await;

    b.restart_with(|c| c.server_sync.sync_replica = true).await;
    for action in ["approve", "decline", "unapprove"] {
        let r = b
            .http
            .post(b.admin(&format!("/api/v1/updates/{BUNDLE}/{action}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409, "{action}");
        let body = r.text().await.unwrap();
        assert!(body.contains("replica") && body.contains(BUNDLE), "{body}");
    }
    let bulk = b
        .http
        .post(b.admin("/api/v1/approvals"))
        .json(&json!({ "action": "approve", "kb": "2267602" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bulk.status(), 409);
    let bundle = b.admin_json(&format!("/api/v1/updates/{BUNDLE}")).await;
    assert_eq!(bundle["state"], "not-approved", "{bundle}");
    // The CLI says why.
    let out = run_cli(&["approve", BUNDLE, "--admin", &b.admin("")], &[]).await;
    assert!(!out.ok, "{}", out.stdout);
    assert!(out.stderr.contains("sync_replica"), "{}", out.stderr);
    // An update imported otherwise keeps local approvals.
    b.set_state(&imported, "approve").await;
}
