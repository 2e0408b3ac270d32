//! The admin API and the CLI binary.

use std::process::Command;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

fn cli(h: &Harness, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_upcache"))
        .args(args)
        .env("UPCACHE_ADMIN", h.admin(""))
        .env_remove("UPCACHE_ADMIN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_catalogs_are_rejected_with_the_field_and_nothing_is_written() {
    let h = Harness::new().await;
    let mut catalog = h.catalog();
    catalog["updates"][2]["files"][0]["sha1"] = "not-a-digest".into();
    let r = h.import(&catalog).await;
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("updates[2].files[0].sha1"),
        "{err}"
    );
    let r = h
        .post_raw("/api/v1/catalog", "application/json", "{\"updates\": [")
        .await;
    assert_eq!(r.status(), 400);
    let r = h.post_raw("/api/v1/catalog", "text/csv", "a,b").await;
    assert_eq!(r.status(), 415);
    let list: Value = h.admin_json("/api/v1/updates").await;
    assert_eq!(list["total"], 0, "nothing half-imported");
}

/// A catalog giving one SHA-256 to two different files is refused whole,
/// within one document and against the catalog already there: taking it
/// would serve one file's bytes under the other's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sha256_claimed_for_two_different_files_is_refused_and_nothing_is_written() {
    let h = Harness::new().await;
    let mut catalog = h.catalog_declaring_sha256();
    catalog["updates"][2]["files"][0]["sha256"] = h.a.sha256.to_hex().into();
    let r = h.import(&catalog).await;
    assert_eq!(r.status(), 400);
    let err = r.json::<Value>().await.unwrap()["error"].to_string();
    for named in [
        ID_C,
        &h.c.sha1.to_hex(),
        &h.a.sha1.to_hex(),
        &h.a.sha256.to_hex(),
    ] {
        assert!(err.contains(named), "{named} in {err}");
    }
    assert_eq!(
        h.admin_json("/api/v1/updates").await["total"],
        0,
        "nothing half-imported"
    );

    // Against what is there: A's SHA-256 is known, then claimed for C.
    let good = h.catalog_declaring_sha256();
    assert_eq!(h.import(&good).await.status(), 200);
    h.set_state(ID_A, "approve").await;
    h.set_state(ID_C, "approve").await;
    let mut newer = good.clone();
    newer["updates"][2]["revision"] = 2.into();
    newer["updates"][2]["files"][0]["sha256"] = h.a.sha256.to_hex().into();
    assert_eq!(h.import(&newer).await.status(), 400);
    let c = h.admin_json(&format!("/api/v1/updates/{ID_C}")).await;
    assert_eq!(c["revision"], good["updates"][2]["revision"], "{c}");
    // Each URL still names its own bytes.
    h.assert_serves(&h.c).await;
    h.assert_serves(&h.a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reimport_is_idempotent_and_newer_revisions_replace() {
    let h = Harness::new().await;
    let catalog = h.catalog();
    let first: Value = h.import(&catalog).await.json().await.unwrap();
    assert_eq!(first["updates_added"], 3);
    h.set_state(ID_A, "approve").await;
    let again: Value = h.import(&catalog).await.json().await.unwrap();
    assert_eq!(
        (
            again["updates_added"].as_u64(),
            again["updates_unchanged"].as_u64()
        ),
        (Some(0), Some(3))
    );
    let mut newer = catalog.clone();
    newer["updates"][0]["revision"] = 2.into();
    newer["updates"][0]["title"] = "Re-released".into();
    let r: Value = h.import(&newer).await.json().await.unwrap();
    assert_eq!(r["updates_replaced"], 1);
    let mut older = catalog.clone();
    older["updates"][0]["revision"] = 0.into();
    let r: Value = h.import(&older).await.json().await.unwrap();
    assert_eq!(r["updates_stale"], 1);
    let u: Value = h.admin_json(&format!("/api/v1/updates/{ID_A}")).await;
    assert_eq!(u["title"], "Re-released");
    assert_eq!(u["state"], "approved", "a new revision keeps the approval");
    assert_eq!(u["files"][0]["local_state"], "absent");
}

/// A new revision that swaps a file changes what is servable at once: the
/// in-memory index follows exactly the files the import touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_that_swaps_files_changes_what_is_servable() {
    let h = Harness::new().await;
    h.setup(&[ID_A]).await;
    assert_eq!(h.get(&h.a.content_path()).await.status(), 200);
    assert_eq!(h.get(&h.c.content_path()).await.status(), 403);
    let mut newer = h.catalog();
    newer["updates"][0]["revision"] = 2.into();
    newer["updates"][0]["files"] = json!([h.c.catalog_entry(&h.upstream)]);
    newer["updates"]
        .as_array_mut()
        .unwrap()
        .retain(|u| u["id"] != ID_C);
    let r: Value = h.import(&newer).await.json().await.unwrap();
    assert_eq!(r["updates_replaced"], 1, "{r}");
    assert_eq!(
        h.get(&h.a.content_path()).await.status(),
        404,
        "no update references the old file any more"
    );
    let body = h.get(&h.c.content_path()).await.bytes().await.unwrap();
    assert!(
        body == h.c.bytes,
        "the approved update's new file is served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_and_approvals_survive_a_restart() {
    let mut h = Harness::new().await;
    h.setup(&[ID_B]).await;
    h.set_state(ID_C, "decline").await;
    h.set_policy(json!({"mode": "metadata-only"})).await;
    h.restart().await;
    let policy: Value = h.admin_json("/api/v1/policy").await;
    assert_eq!(policy["mode"], "metadata-only");
    let approved: Value = h.admin_json("/api/v1/updates?state=approved").await;
    assert_eq!(approved["total"], 1);
    assert_eq!(approved["updates"][0]["id"], ID_B);
    let declined: Value = h.admin_json("/api/v1/updates?state=declined").await;
    assert_eq!(declined["updates"][0]["id"], ID_C);
    assert_eq!(h.get(&h.b.content_path()).await.status(), 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_searches_and_pages() {
    let h = Harness::new().await;
    h.setup(&[]).await;
    let get = |q: &str| h.http.get(h.admin(&format!("/api/v1/updates?{q}"))).send();
    let r: Value = get("q=servicing").await.unwrap().json().await.unwrap();
    assert_eq!(
        (r["total"].as_u64(), r["updates"][0]["id"].as_str()),
        (Some(1), Some(ID_B))
    );
    let r: Value = get("q=5031455").await.unwrap().json().await.unwrap();
    assert_eq!(r["updates"][0]["kb"], "5031455");
    let r: Value = get("limit=2&offset=2").await.unwrap().json().await.unwrap();
    assert_eq!(
        (r["total"].as_u64(), r["updates"].as_array().unwrap().len()),
        (Some(3), 1)
    );
    assert_eq!(get("state=maybe").await.unwrap().status(), 400);
    assert_eq!(
        h.call(Method::GET, "/api/v1/updates/nope").await.status(),
        404
    );
    let r = h
        .call(Method::POST, &format!("/api/v1/updates/{ID_A}/promote"))
        .await;
    assert_eq!(r.status(), 404);
    let r = h
        .http
        .put(h.admin("/api/v1/policy"))
        .header("content-type", "application/json")
        .body(r#"{"mode":"sometimes"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_is_required() {
    let token = "s3cret-token-0123456789";
    let h = Harness::with(|c| c.admin.admin_token = Some(token.into())).await;
    let r = h.call(Method::GET, "/api/v1/status").await;
    assert_eq!(r.status(), 401);
    let r = h
        .http
        .get(h.admin("/api/v1/status"))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = h
        .http
        .get(h.admin("/api/v1/status"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h.call(Method::GET, "/healthz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_the_admin_api() {
    let h = Harness::new().await;
    let file = h.dir.path().join("catalog.json");
    std::fs::write(&file, serde_json::to_vec(&h.catalog()).unwrap()).unwrap();
    let (ok, out, err) = cli(&h, &["import", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("3 added"), "{out}");
    let (ok, out, _) = cli(&h, &["approve", ID_A, ID_B]);
    assert!(ok && out.contains("approved"), "{out}");
    let (ok, _, err) = cli(&h, &["decline", "no-such-update"]);
    assert!(!ok && err.contains("no update with id"), "{err}");
    let (ok, out, _) = cli(&h, &["updates", "--state", "approved"]);
    assert!(ok && out.contains("(2 of 2 updates)"), "{out}");
    let (ok, out, err) = cli(&h, &["policy", "set", "--mode", "metadata-only"]);
    assert!(ok && out.contains("metadata-only"), "{out}{err}");
    let (ok, out, _) = cli(&h, &["status"]);
    assert!(ok && out.contains("2 approved, 1 not approved"), "{out}");
    let (ok, _, err) = cli(&h, &["policy", "set", "--mode", "sometimes"]);
    assert!(
        !ok && err.contains("metadata-only or store-locally"),
        "{err}"
    );
}

#[test]
fn serve_refuses_an_exposed_admin_api_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_upcache"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "0.0.0.0:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("UPCACHE_ADMIN_TOKEN")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin token"), "{err}");
}

#[test]
fn the_demo_runs_offline() {
    let out = Command::new(env!("CARGO_BIN_EXE_upcache"))
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "SHA-256 verified",
        "403 Forbidden",
        "302 Found",
        "upstream requests for it: 1",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

/// Every labelled counter has a series for each value it knows from the
/// start, at 0: a dashboard panel shows 0, not "No data", and `rate()`
/// sees the first increment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_server_shows_every_known_labelled_series_at_zero() {
    let h = Harness::new().await;
    let text = h.call(Method::GET, "/metrics").await.text().await.unwrap();
    for line in [
        "upcache_admin_refused_total{reason=\"host\"} 0",
        "upcache_admin_refused_total{reason=\"content_type\"} 0",
        "upcache_content_requests_total{outcome=\"passthrough\"} 0",
        "upcache_content_responses_total{code=\"503\"} 0",
        "upcache_upstream_fetches_total{result=\"failed\"} 0",
        "upcache_upstream_download_duration_seconds_count{result=\"stored\"} 0",
        "upcache_s3_total{event=\"upload_failed\"} 0",
        "upcache_do_refused_total{reason=\"private_answer\"} 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_hits_misses_and_refusals() {
    let h = Harness::new().await;
    h.setup(&[ID_B]).await;
    assert_eq!(h.get(&h.b.content_path()).await.status(), 200);
    h.settled().await;
    assert_eq!(h.get(&h.b.content_path()).await.status(), 200);
    assert_eq!(
        h.get_range(&h.b.content_path(), "bytes=0-0").await.status(),
        206
    );
    assert_eq!(h.get(&h.c.content_path()).await.status(), 403);
    let r = h.call(Method::GET, "/metrics").await;
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = r.text().await.unwrap();
    for line in [
        "upcache_content_requests_total{outcome=\"miss\"} 1",
        "upcache_content_requests_total{outcome=\"hit\"} 2",
        "upcache_content_requests_total{outcome=\"refused\"} 1",
        "upcache_content_responses_total{code=\"206\"} 1",
        "upcache_content_responses_total{code=\"403\"} 1",
        "upcache_upstream_fetches_total{result=\"stored\"} 1",
        &format!("upcache_upstream_bytes_total {}", h.b.bytes.len()),
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_upcache_syncs_catalog_and_approvals_and_fetches_through_the_upstream_one() {
    // Upstream upcache (U) fetching from the origin, behind a token.
    let token = "upstream-token-0123456789";
    let u = Harness::with(|c| c.admin.admin_token = Some(token.into())).await;
    let r = u
        .http
        .post(u.admin("/api/v1/catalog"))
        .bearer_auth(token)
        .json(&u.catalog())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = u
        .http
        .post(u.admin(&format!("/api/v1/updates/{ID_A}/approve")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Downstream (D) whose file upstream is U's content listener.
    let dir = tempfile::tempdir().unwrap();
    let mut config = upcache::config::Config::ephemeral(dir.path());
    config.fetch.upstream = Some(
        format!("http://{}", u.running().content_addr)
            .parse()
            .unwrap(),
    );
    let d = upcache::server::start(config).await.unwrap();
    let (from, admin) = (u.admin(""), format!("http://{}", d.admin_addr));
    let out = run_cli(
        &["sync", "--from", &from, "--admin", &admin],
        &[("UPCACHE_FROM_TOKEN", token)],
    )
    .await;
    assert!(
        out.ok && out.stdout.contains("3 added"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // Approvals came along: A is served by D, fetched through U, from the origin once.
    let body = u
        .http
        .get(format!("http://{}{}", d.content_addr, u.a.content_path()))
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), 200);
    assert!(body.bytes().await.unwrap() == u.a.bytes);
    let r = u
        .http
        .get(format!("http://{}{}", d.content_addr, u.b.content_path()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "B is not approved upstream");
    u.assert_serves(&u.a).await;
    assert_eq!(
        u.upstream.requests(&u.a.path),
        1,
        "the origin saw one request for both tiers"
    );
    d.shutdown().await;
}

/// The states of the three sample updates, by id.
async fn states(h: &Harness) -> Vec<(String, String)> {
    let list = h.admin_json("/api/v1/updates").await;
    let mut states: Vec<(String, String)> = list["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap().to_owned(),
                u["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    states.sort();
    states
}

/// WSUS's export and import, for a server that cannot reach this one: the
/// file carries the catalog and its approvals; `--with-approvals` applies
/// them, a plain import takes the metadata only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_carries_catalog_and_approvals_to_a_server_that_cannot_reach_this_one() {
    let hq = Harness::new().await;
    assert_eq!(hq.import(&hq.catalog()).await.status(), 200);
    hq.set_state(ID_A, "approve").await;
    hq.set_state(ID_C, "decline").await;
    let file = hq.dir.path().join("hq-export.json");
    let out = run_cli(
        &["export", file.to_str().unwrap(), "--admin", &hq.admin("")],
        &[],
    )
    .await;
    assert!(
        out.ok && out.stdout.contains("exported 3 updates"),
        "{}{}",
        out.stdout,
        out.stderr
    );

    let branch = Harness::new().await;
    let admin = branch.admin("");
    let args = [
        "import",
        "--with-approvals",
        file.to_str().unwrap(),
        "--admin",
        &admin,
    ];
    let out = run_cli(&args, &[]).await;
    assert!(
        out.ok && out.stdout.contains("3 added"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(states(&branch).await, states(&hq).await);
    branch.assert_serves(&branch.a).await;

    let plain = Harness::new().await;
    let out = run_cli(
        &[
            "import",
            file.to_str().unwrap(),
            "--admin",
            &plain.admin(""),
        ],
        &[],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let not_approved = states(&plain)
        .await
        .into_iter()
        .all(|(_, s)| s == "not-approved");
    assert!(not_approved, "{:?}", states(&plain).await);

    let xml = hq.dir.path().join("package.xml");
    std::fs::write(&xml, "<OfflineSyncPackage/>").unwrap();
    let args = [
        "import",
        "--with-approvals",
        xml.to_str().unwrap(),
        "--admin",
        &admin,
    ];
    let out = run_cli(&args, &[]).await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains("--with-approvals takes an upcache JSON catalog"),
        "{}",
        out.stderr
    );
}

/// An admin API whose export stops half-way (as a server failing mid-read
/// does: the HTTP body still ends cleanly) or lacks its closing policy and
/// rules: the CLI fails, the earlier file stays as it was, no partial file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_export_never_replaces_the_file() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.json");
    std::fs::write(&file, "the previous export").unwrap();
    let cut = r#"{"updates":[{"id":"6f1c0b6a-0000-0000-0000-000000000001","revision":1,"title":"a"#;
    for body in [cut, r#"{"updates":[]}"#] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = format!("http://{}", listener.local_addr().unwrap());
        let body = body.to_owned();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 4096];
            let _ = s.read(&mut head).await;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            );
            s.write_all(answer.as_bytes()).await.unwrap();
        });
        let out = run_cli(&["export", file.to_str().unwrap(), "--admin", &admin], &[]).await;
        assert!(!out.ok, "{}", out.stdout);
        assert!(
            out.stderr.contains("was not written") && out.stderr.contains("not a whole catalog"),
            "{}",
            out.stderr
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "the previous export"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no partial file left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_rules_apply_to_imported_updates() {
    let h = Harness::new().await;
    let rule = |body: Value| h.http.post(h.admin("/api/v1/rules")).json(&body).send();
    let r = rule(json!({"action": "approve"})).await.unwrap();
    assert_eq!(r.status(), 400, "a rule must match something");
    let r = rule(
        json!({"action": "approve", "classification": "security updates", "product": "Windows 10"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let approve_rule: Value = r.json().await.unwrap();
    rule(json!({"action": "decline", "title": "driver"}))
        .await
        .unwrap();
    assert_eq!(
        h.admin_json("/api/v1/rules")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let report: Value = h.import(&h.catalog()).await.json().await.unwrap();
    assert_eq!(report["changed_by_rules"], 3);
    assert_eq!(
        h.admin_json(&format!("/api/v1/updates/{}", ID_A)).await["state"],
        "approved"
    );
    assert_eq!(
        h.admin_json(&format!("/api/v1/updates/{}", ID_B)).await["state"],
        "approved"
    );
    assert_eq!(
        h.admin_json(&format!("/api/v1/updates/{}", ID_C)).await["state"],
        "declined",
        "declines win over approvals"
    );
    assert_eq!(h.get(&h.a.content_path()).await.status(), 200);

    // Rules touch only updates the import writes, and only undecided ones.
    h.set_state(ID_A, "unapprove").await;
    let report: Value = h.import(&h.catalog()).await.json().await.unwrap();
    assert_eq!(report["changed_by_rules"], 0);
    assert_eq!(
        h.admin_json(&format!("/api/v1/updates/{}", ID_A)).await["state"],
        "not-approved"
    );
    let id = approve_rule["id"].as_i64().unwrap();
    let r = h.call(Method::DELETE, &format!("/api/v1/rules/{id}")).await;
    assert_eq!(r.status(), 204);
    let r = h.call(Method::DELETE, &format!("/api/v1/rules/{id}")).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_title_selections_from_the_cli() {
    let h = Harness::new().await;
    let (ok, out, err) = cli(
        &h,
        &[
            "rules",
            "add",
            "approve",
            "--classification",
            "Security Updates",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("approve  classification=Security Updates"),
        "{out}"
    );
    let (ok, _, err) = cli(&h, &["rules", "add", "decline", "--title", "driver"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&h, &["rules", "add", "approve"]);
    assert!(!ok && err.contains("--classification"), "{err}");
    let (ok, out, _) = cli(&h, &["rules"]);
    assert!(ok && out.lines().count() == 2, "{out}");
    assert!(out.contains("decline  title contains=driver"), "{out}");

    let report: Value = h.import(&h.catalog()).await.json().await.unwrap();
    assert_eq!(report["changed_by_rules"], 3);
    let id = out
        .split_whitespace()
        .next()
        .unwrap()
        .trim_start_matches('#');
    let (ok, _, err) = cli(&h, &["rules", "remove", id]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&h, &["rules", "remove", id]);
    assert!(!ok && err.contains("no rule"), "{err}");

    let (ok, out, err) = cli(&h, &["unapprove", "--title", "CUMULATIVE"]);
    assert!(ok && out.contains("1 updates changed"), "{out}{err}");
    assert_eq!(
        h.admin_json(&format!("/api/v1/updates/{ID_A}")).await["state"],
        "not-approved"
    );
    let (ok, out, _) = cli(&h, &["updates", "--title", "servicing stack"]);
    assert!(ok && out.contains("(1 of 1 updates)"), "{out}");
    let (ok, out, _) = cli(
        &h,
        &[
            "updates",
            "--state",
            "approved",
            "--classification",
            "security updates",
        ],
    );
    assert!(
        ok && out.contains("(1 of 1 updates)") && out.contains("KB5034441"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_follows_at_sync_downloads_to_the_end() {
    let h = Harness::new().await;
    h.upstream.set_rate(8 << 20);
    h.set_policy(json!({"mode": "store-locally", "download": "at-sync"}))
        .await;
    assert_eq!(h.import(&h.catalog()).await.status(), 200);
    let background = h.status().await["background"].clone();
    assert_eq!(background["files_queued"], 3);
    let CliOutput {
        ok,
        stdout: out,
        stderr: err,
    } = run_cli(&["status", "--watch", "--admin", &h.admin("")], &[]).await;
    assert!(ok, "{err}");
    let total = h.a.bytes.len() + h.b.bytes.len() + h.c.bytes.len();
    assert!(
        out.contains(&format!("background: 3/3 files, 0 failed, {total} bytes")),
        "{out}"
    );
    assert_eq!(h.stored().len(), 3);
}

/// 2 GiB of garbage, as package.xml and as JSON: a precise 400 (the rest
/// of the upload is read and dropped so the client sees it), nothing
/// imported, memory untouched, content still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_gib_garbage_upload_is_refused_cleanly() {
    let h = Harness::new().await;
    h.setup(&[ID_A]).await;
    let chunk = bytes::Bytes::from(vec![b'x'; 1 << 20]);
    for (content_type, expected) in [
        ("application/xml", "without markup"),
        ("application/json", "line 1 column 1"),
    ] {
        let chunks = std::iter::repeat_n(chunk.clone(), 2048).map(Ok::<_, std::io::Error>);
        let r = h
            .http
            .post(h.admin("/api/v1/catalog"))
            .header("content-type", content_type)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{content_type}");
        let msg = r.text().await.unwrap();
        assert!(msg.contains(expected), "{content_type}: {msg}");
    }
    assert_eq!(h.admin_json("/api/v1/updates").await["total"], 3);
    h.assert_serves(&h.a).await;

    // An announced length beyond the limit is refused before any byte is read.
    let mut s = tokio::net::TcpStream::connect(h.running().admin_addr)
        .await
        .unwrap();
    let head = "POST /api/v1/catalog HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/xml\r\nContent-Length: 8589934592\r\nConnection: close\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut s, head.as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut answer)
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // The CLI does not even send what cannot be a catalog.
    let garbage = h.dir.path().join("garbage.xml");
    std::fs::write(&garbage, vec![0u8; 1 << 20]).unwrap();
    let (ok, _, err) = cli(&h, &["import", garbage.to_str().unwrap()]);
    assert!(
        !ok && err.contains("does not look like a package.xml"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_write_is_logged_with_who_and_what_came_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let data = dir.path().join("data");
    let server = tokio::task::spawn_blocking(move || spawn_server_with(&data, log.into()))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let rule = http
        .post(format!("{}/api/v1/rules", server.admin))
        .json(&json!({"action": "decline", "title": "preview"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rule.status(), 200);
    // Refused (a form type): logged too.
    let refused = http
        .put(format!("{}/api/v1/policy", server.admin))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 415);
    // Reads are not writes.
    http.get(format!("{}/api/v1/status", server.admin))
        .send()
        .await
        .unwrap();
    let mut audit = Vec::new();
    for _ in 0..100 {
        audit = std::fs::read_to_string(&log_path)
            .unwrap()
            .lines()
            .filter(|l| l.contains("admin write"))
            .map(str::to_owned)
            .collect();
        if audit.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(audit.len(), 2, "{audit:?}");
    for (line, (method, path, status)) in audit.iter().zip([
        ("POST", "/api/v1/rules", 200),
        ("PUT", "/api/v1/policy", 415),
    ]) {
        for field in [
            format!("method={method}"),
            format!("path=\"{path}\""),
            format!("status={status}"),
            "peer=127.0.0.1".to_owned(),
        ] {
            assert!(line.contains(&field), "{field} in {line}");
        }
    }
}

/// A wrong SHA-256 in a catalog fails every download of its file; a newer
/// revision that corrects it is taken, but no claim overrides the SHA-256
/// of bytes stored and verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_revision_corrects_a_wrong_sha256_but_not_a_stored_files() {
    let h = Harness::new().await;
    let wrong = "ab".repeat(32);
    let mut catalog = h.catalog_declaring_sha256();
    catalog["updates"][1]["files"][0]["sha256"] = wrong.clone().into();
    assert_eq!(h.import(&catalog).await.status(), 200);
    h.set_state(ID_B, "approve").await;
    // The bytes never match the claim: the body is cut, nothing stored.
    for _ in 0..2 {
        let cut = h.get(&h.b.content_path()).await.bytes().await;
        assert!(cut.is_err(), "a whole body under a wrong SHA-256");
    }
    h.settled().await;
    assert!(!h.stored().contains(&h.b.sha256));

    let mut corrected = h.catalog_declaring_sha256();
    corrected["updates"][1]["revision"] = 2.into();
    let r = h.import(&corrected).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["sha256_conflicts"], 0);
    assert_eq!(
        h.get(&h.b.content_path()).await.bytes().await.unwrap(),
        h.b.bytes
    );
    h.settled().await;

    // Stored now: a later wrong claim is refused, counted, and changes nothing.
    let mut again = corrected.clone();
    again["updates"][1]["revision"] = 3.into();
    again["updates"][1]["files"][0]["sha256"] = wrong.into();
    let r = h.import(&again).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["sha256_conflicts"], 1);
    let b = h.admin_json(&format!("/api/v1/updates/{ID_B}")).await;
    assert_eq!(b["revision"], 3, "{b}");
    assert_eq!(b["files"][0]["sha256"], h.b.sha256.to_hex(), "{b}");
    let blob = format!("/blobs/sha256/{}", h.b.sha256);
    assert_eq!(h.get(&blob).await.bytes().await.unwrap(), h.b.bytes);
}
