//! Followers: a node started with `follow` keeps its catalog, approvals,
//! rules and policy in step with a primary by pulling the changes since its
//! last pull, refuses admin writes with 409 naming the primary, and keeps
//! serving what it knows when the primary is gone.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

const INTERVAL: Duration = Duration::from_secs(1);

/// A follower of `primary`, pulling every [`INTERVAL`].
async fn follower_of(primary: &Harness) -> Harness {
    let url = reqwest::Url::parse(&primary.admin("/")).unwrap();
    Harness::with(|c| {
        c.follow.follow = Some(url);
        c.follow.follow_interval = INTERVAL;
    })
    .await
}

/// The updates of a `?since=` export of `h`'s catalog.
async fn changes_since(h: &Harness, since: u64) -> (Vec<Value>, u64) {
    let doc: Value = h
        .http
        .get(h.admin(&format!("/api/v1/catalog?since={since}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        doc["updates"].as_array().unwrap().clone(),
        doc["seq"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_keeps_in_step_and_refuses_writes() {
    let primary = Harness::new().await;
    primary.setup(&[]).await;
    let r = primary
        .http
        .post(primary.admin("/api/v1/rules"))
        .json(&json!({"action": "decline", "title": "Driver"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let follower = follower_of(&primary).await;
    within("the first pull", Duration::from_secs(10), async || {
        follower.status().await["catalog"]["updates_not_approved"] == 3
    })
    .await;
    assert_eq!(
        follower.admin_json("/api/v1/rules").await,
        primary.admin_json("/api/v1/rules").await
    );
    // Not approved on the primary: refused here too.
    assert_eq!(follower.get(&follower.a.content_path()).await.status(), 403);

    // An approval on the primary is served by the follower within one interval.
    primary.set_state(ID_B, "approve").await;
    let took = within("the approval", 3 * INTERVAL, async || {
        follower.get(&follower.b.content_path()).await.status() == 200
    })
    .await;
    assert!(took <= INTERVAL + Duration::from_millis(500), "{took:?}");
    follower.assert_serves(&follower.b).await;

    // Pulls carry changes only: nothing since the follower's seq, then the one update.
    let seq = follower.status().await["follow"]["seq"].as_u64().unwrap();
    let (nothing, same) = changes_since(&primary, seq).await;
    assert!(nothing.is_empty(), "{nothing:?}");
    assert_eq!(same, seq);
    primary.set_state(ID_C, "decline").await;
    let (one, newer) = changes_since(&primary, seq).await;
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(
        (one[0]["id"].as_str(), one[0]["state"].as_str()),
        (Some(ID_C), Some("declined"))
    );
    assert!(newer > seq);
    within("the decline", 3 * INTERVAL, async || {
        follower.status().await["catalog"]["updates_declined"] == 1
    })
    .await;

    // An update imported on the primary later arrives too.
    let d = upcache::demo::SampleFile::generate("5036000", "cab", 10_000);
    let newer = json!({ "updates": [upcache::demo::update_json(
        ID_D, "5036000", "Later update (KB5036000)", &[&d], &primary.upstream,
    )]});
    assert_eq!(primary.import(&newer).await.status(), 200);
    within("the later import", 3 * INTERVAL, async || {
        follower
            .admin_json(&format!("/api/v1/updates/{ID_D}"))
            .await["id"]
            == ID_D
    })
    .await;

    // What the primary learns by downloading (the SHA-256) reaches the follower.
    primary.set_state(ID_A, "approve").await;
    assert_eq!(
        primary.get(&primary.a.path).await.bytes().await.unwrap(),
        primary.a.bytes
    );
    primary.settled().await;
    within("the learned digest", 3 * INTERVAL, async || {
        let a = follower
            .admin_json(&format!("/api/v1/updates/{ID_A}"))
            .await;
        a["files"][0]["sha256"] == primary.a.sha256.to_string()
    })
    .await;

    // The policy follows too.
    primary.set_policy(json!({"mode": "metadata-only"})).await;
    within("the policy", 3 * INTERVAL, async || {
        follower.get(&follower.b.content_path()).await.status() == 302
    })
    .await;

    // Every write on the follower answers 409 and names the primary.
    let primary_url = primary.admin("/");
    for (method, path) in [
        (Method::POST, format!("/api/v1/updates/{ID_A}/decline")),
        (Method::POST, "/api/v1/approvals".to_string()),
        (Method::POST, "/api/v1/rules".to_string()),
        (Method::DELETE, "/api/v1/rules/1".to_string()),
        (Method::PUT, "/api/v1/policy".to_string()),
        (Method::POST, "/api/v1/catalog".to_string()),
    ] {
        let r = follower
            .http
            .request(method.clone(), follower.admin(&path))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409, "{method} {path}");
        let error = r.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(error.contains(&primary_url), "{error}");
    }
    assert_eq!(
        follower
            .admin_json(&format!("/api/v1/updates/{ID_A}"))
            .await["state"],
        "approved"
    );
    // The upstream rate limit is the node's own, not the catalog's.
    let r = follower
        .http
        .put(follower.admin("/api/v1/upstream/rate-limit"))
        .json(&serde_json::json!({ "bytes_per_sec": 1 << 20 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(follower.status().await["upstream"]["rate_limit"], 1 << 20);
    // So are its disk's upkeep: cleanup and scrub.
    let r = follower
        .http
        .post(follower.admin("/api/v1/cleanup"))
        .json(&serde_json::json!({ "remove": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = follower.call(Method::POST, "/api/v1/scrub").await;
    assert_eq!(r.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_without_its_primary_serves_what_it_knows_and_catches_up() {
    let mut primary = Harness::new().await;
    primary.setup(&[ID_B]).await;
    let follower = follower_of(&primary).await;
    within("the approval", Duration::from_secs(10), async || {
        follower.get(&follower.b.content_path()).await.status() == 200
    })
    .await;
    let admin = primary.running().admin_addr;

    primary.server.take().unwrap().shutdown().await;
    within("the failure in status", 3 * INTERVAL, async || {
        follower.status().await["follow"]["error"].is_string()
    })
    .await;
    // Still serving, from what it knows.
    let r = follower.get(&follower.b.content_path()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), follower.b.bytes);
    assert_eq!(follower.get(&follower.c.content_path()).await.status(), 403);

    // The primary comes back (same address) with a change made meanwhile.
    primary.restart_with(|c| c.admin.admin_listen = admin).await;
    primary.set_state(ID_C, "approve").await;
    within("catching up", Duration::from_secs(5), async || {
        follower.get(&follower.c.content_path()).await.status() == 200
    })
    .await;
    assert!(follower.status().await["follow"]["error"].is_null());
}
