//! A follower's clients report to it; the primary sees them: each report is
//! kept in the follower's outbox before the client is answered, forwarded
//! in order, applied once on the primary, and kept while the primary is
//! down, across a kill -9 of the follower.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::wusp_client::Windows;

async fn json_of(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// The computers an admin API lists, by id: (name, group, events, address).
async fn fleet(http: &reqwest::Client, admin: &str) -> Vec<(String, String, u64, String)> {
    let list = json_of(http, &format!("{admin}/api/v1/computers")).await;
    let mut out: Vec<_> = list["computers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["target_group"].as_str().unwrap().to_owned(),
                c["events"].as_u64().unwrap(),
                c["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn admin_base(h: &Harness) -> String {
    h.admin("").trim_end_matches('/').to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_its_clients_reports_to_the_primary() {
    let primary = Harness::new().await;
    let url = reqwest::Url::parse(&primary.admin("/")).unwrap();
    let follower = Harness::with(|c| {
        c.follow.follow = Some(url);
        c.follow.follow_interval = Duration::from_secs(1);
    })
    .await;
    let pc = Windows::start(&follower.url(""), "pc-follower-1", "Pilot").await;
    pc.register().await;
    pc.report(&[182, 183]).await;
    pc.report(&[161]).await;

    let want = vec![(
        "pc-follower-1".to_owned(),
        "Pilot".to_owned(),
        3,
        "pc-follower-1.example.test".to_owned(),
    )];
    let http = &primary.http;
    let admin = admin_base(&primary);
    within(
        "the reports on the primary",
        Duration::from_secs(10),
        async || fleet(http, &admin).await == want,
    )
    .await;
    // Written where the client reported too.
    assert_eq!(fleet(http, &admin_base(&follower)).await, want);
    let events = json_of(
        http,
        &format!("{admin}/api/v1/computers/pc-follower-1/events"),
    )
    .await;
    let ids: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["182", "183", "161"], "in the order they were taken");
    within("an empty outbox", Duration::from_secs(10), async || {
        let s = follower.status().await;
        s["report_forwarding"]["waiting"] == 0 && s["report_forwarding"]["forwarded"] == 3
    })
    .await;
    let computer = &json_of(http, &format!("{admin}/api/v1/computers")).await["computers"][0];
    assert_eq!(
        computer["address"], "127.0.0.1",
        "the client's, not the follower's"
    );
    assert_eq!(computer["os"], "Windows 11 Pro");
}

/// A batch sent again (its answer was lost) is applied once; a batch out of
/// order is refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_batch_sent_twice_counts_once() {
    let h = Harness::new().await;
    let event = |n: u32| {
        json!({"name": "ReportingEvent", "text": "", "children": [
            {"name": "BasicData", "text": "", "children": [
                {"name": "EventID", "text": n.to_string(), "children": []}]}]})
    };
    let batch = |seqs: &[(i64, u32)]| {
        json!({"origin": "a-follower", "reports": seqs.iter().map(|(seq, e)| json!({
            "seq": seq,
            "report": {"kind": "events", "id": "pc-7", "events": [event(*e)], "at": 1_790_000_000},
        })).collect::<Vec<_>>()})
    };
    let send = async |body: Value| {
        let r = h
            .http
            .post(h.admin("/api/v1/reports/forwarded"))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let first = batch(&[(1, 182), (2, 183)]);
    assert_eq!(
        send(first.clone()).await,
        (200, json!({"applied_through": 2}))
    );
    assert_eq!(send(first).await, (200, json!({"applied_through": 2})));
    // Overlapping: only seq 3 is new.
    assert_eq!(
        send(batch(&[(2, 183), (3, 161)])).await,
        (200, json!({"applied_through": 3}))
    );
    let (status, body) = send(batch(&[(5, 1), (4, 2)])).await;
    assert_eq!(status, 400, "{body}");
    let events = h.admin_json("/api/v1/computers/pc-7/events").await;
    let ids: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["182", "183", "161"]);
    let pc = &h.admin_json("/api/v1/computers").await["computers"][0];
    assert_eq!(pc["last_report"], 1_790_000_000, "the time it was taken");
}

/// A port nothing listens on now, for a primary that starts later.
fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_wait_for_a_primary_that_is_down_and_survive_kill_9() {
    let primary_addr = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("upcache.toml");
    std::fs::write(&config, "follow_interval_secs = 1\n").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let follow = format!("http://{primary_addr}");
    let args = [
        "--follow",
        follow.as_str(),
        "--config",
        config.to_str().unwrap(),
    ];
    let start = || {
        let (data, args) = (data.clone(), args.map(String::from));
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            spawn_server_args(&data, &args, std::process::Stdio::null())
        })
    };
    let mut follower = start().await.unwrap();

    // The primary is down: every report is still acknowledged, and kept.
    let mut want = Vec::new();
    for n in 0..5 {
        let id = format!("pc-{n}");
        let pc = Windows::start(&follower.content, &id, "Ring 1").await;
        pc.register().await;
        pc.report(&[182, 183]).await;
        want.push((
            id.clone(),
            "Ring 1".to_owned(),
            2,
            format!("{id}.example.test"),
        ));
    }
    let http = reqwest::Client::new();
    let status = json_of(&http, &format!("{}/api/v1/status", follower.admin)).await;
    assert_eq!(status["report_forwarding"]["waiting"], 10, "{status}");
    assert!(
        status["report_forwarding"]["error"].as_str().is_some(),
        "{status}"
    );

    // Killed between acknowledging and forwarding, then started again.
    follower.child.kill().unwrap();
    follower.child.wait().unwrap();
    follower = start().await.unwrap();

    let mut primary = Harness::with(|c| c.admin.admin_listen = primary_addr).await;
    let admin = admin_base(&primary);
    within(
        "the kept reports on the primary",
        Duration::from_secs(20),
        async || fleet(&http, &admin).await == want,
    )
    .await;
    within("an empty outbox", Duration::from_secs(10), async || {
        let s = json_of(&http, &format!("{}/api/v1/status", follower.admin)).await;
        s["report_forwarding"]["waiting"] == 0
    })
    .await;

    // Down again, for a while: reports wait, then arrive, none twice.
    primary.server.take().unwrap().shutdown().await;
    let late = Windows::start(&follower.content, "pc-0", "Ring 1").await;
    late.report(&[161]).await;
    within("a failed try", Duration::from_secs(10), async || {
        let s = json_of(&http, &format!("{}/api/v1/status", follower.admin)).await;
        s["report_forwarding"]["error"].is_string() && s["report_forwarding"]["waiting"] == 1
    })
    .await;
    primary.restart_stopped().await;
    want[0].2 = 3;
    within("the late report", Duration::from_secs(20), async || {
        fleet(&http, &admin).await == want
    })
    .await;
}

/// A client that sent its batch twice to a follower (the first answer was
/// lost) has two reports forwarded: the primary keeps its events once, by
/// their `EventInstanceID`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_a_client_sent_twice_through_a_follower_is_kept_once_on_the_primary() {
    let h = Harness::new().await;
    let event = |n: u32, instance: u32| {
        json!({"name": "ReportingEvent", "text": "", "children": [
            {"name": "BasicData", "text": "", "children": [
                {"name": "EventInstanceID", "text": format!("7e6a9a6a-0000-4000-8000-{instance:012}"), "children": []},
                {"name": "EventID", "text": n.to_string(), "children": []}]}]})
    };
    let report = |seq: i64, events: &[(u32, u32)]| {
        json!({"seq": seq, "report": {"kind": "events", "id": "pc-8", "at": 1_790_000_000,
            "events": events.iter().map(|&(n, i)| event(n, i)).collect::<Vec<_>>()}})
    };
    let sent = [(182, 1), (183, 2)];
    let body = json!({"origin": "a-follower", "reports": [
        report(1, &sent), report(2, &sent), report(3, &[(161, 3)])]});
    let r = h
        .http
        .post(h.admin("/api/v1/reports/forwarded"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = h.admin_json("/api/v1/computers/pc-8/events").await;
    let ids: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["182", "183", "161"]);
}
