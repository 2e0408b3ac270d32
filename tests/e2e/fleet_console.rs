//! The console's fleet pages in a real browser (headless Chromium driven
//! by Selenium, `tests/browser/fleet_console.py`): the Computers page lists,
//! searches and filters what the API holds; an update's bar per group
//! shows the API's counts, and its "Approve for" button approves it for
//! that group alone; the "Needs attention" page lists failed installs,
//! stale computers and the updates needed by many and approved for none.
//! With `UPCACHE_CONSOLE_SHOTS=docs/img` it also takes the screenshots the
//! manual shows.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::browser::browser_available;
use crate::common::*;
use crate::wusp_client::Windows;

/// The script's report lines, as they come.
struct Script {
    child: std::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Script {
    fn start(args: &[&str]) -> Script {
        let script = format!(
            "{}/tests/browser/fleet_console.py",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Script { child, lines }
    }

    /// The value of the next report, which must be `step`.
    async fn next(&mut self, step: &str) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no {step:?} report in 60 s"))
            .unwrap_or_else(|| panic!("the browser script ended before {step:?} (see its stderr)"));
        let (got, json) = line.split_once(' ').unwrap_or((&line, "null"));
        assert_eq!(got, step, "{line}");
        serde_json::from_str(json).unwrap()
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        for _ in 0..200 {
            if self.child.try_wait().is_ok_and(|s| s.is_some()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn send(h: &Harness, method: reqwest::Method, path: &str, body: Value) -> Value {
    let r = h
        .http
        .request(method, h.admin(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Sorted ids of a list of computers, or of the page's rows.
fn ids(v: &Value) -> Vec<String> {
    let list = v.get("computers").unwrap_or(v);
    let mut out: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.get("id").unwrap_or(c).as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_pages_show_the_api_and_approve_for_a_group_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let h = Harness::new().await;
    h.setup(&[]).await;
    for group in ["Pilot", "Ring 2"] {
        send(
            &h,
            reqwest::Method::POST,
            "/api/v1/groups",
            json!({ "name": group }),
        )
        .await;
    }
    // Ten computers: A needed by all, installed on three, failed on two.
    let (a, b) = (ID_A, ID_B);
    for n in 0..10 {
        let id = format!("pc-{n:02}");
        let pc = Windows::start(&h.url(""), &id, "").await;
        pc.register().await;
        let mut events = vec![match n {
            0..=2 => pc.status_event(&[b], &[a]),
            _ => pc.status_event(&[a, b], &[]),
        }];
        if n == 3 || n == 4 {
            events.push(pc.update_event(182, a, "-2145124330"));
        }
        pc.report_events(&events).await;
        let group = if n < 4 { "Pilot" } else { "Ring 2" };
        send(
            &h,
            reqwest::Method::PUT,
            &format!("/api/v1/computers/{id}/groups"),
            json!({ "groups": [group] }),
        )
        .await;
    }
    // One silent for 40 days (as a follower's report kept that long tells it).
    let old = upcache::fleet::now() - 40 * 86_400;
    send(
        &h,
        reqwest::Method::POST,
        "/api/v1/reports/forwarded",
        json!({"origin": "branch", "reports": [{"seq": 1, "report": {
            "kind": "registered", "id": "pc-old", "target_group": "", "address": null, "at": old,
            "info": {"dns_name": "pc-old.example.test", "os": "Windows 10 Pro", "os_version": "10.0.19045",
                     "manufacturer": "", "model": ""}}}]}),
    )
    .await;

    let shots = std::env::var("UPCACHE_CONSOLE_SHOTS").unwrap_or_else(|_| "-".into());
    let shots = if shots == "-" {
        shots
    } else {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(shots);
        std::fs::create_dir_all(&dir).unwrap();
        dir.to_str().unwrap().to_owned()
    };
    let admin = h.admin("");
    let mut browser = Script::start(&[admin.trim_end_matches('/'), a, "Pilot", "pc-0", &shots]);

    let all = h.admin_json("/api/v1/computers?limit=200").await;
    let page = browser.next("computers").await;
    assert_eq!(ids(&page), ids(&all), "{page}");
    assert_eq!(all["total"], 11);
    let stale: Vec<_> = page
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["stale"] == true)
        .collect();
    assert_eq!(stale.len(), 1, "{page}");
    assert_eq!(stale[0]["id"], "pc-old");
    let pilot = h
        .admin_json("/api/v1/computers?group=Pilot&limit=200")
        .await;
    assert_eq!(ids(&browser.next("in_group").await), ids(&pilot));
    assert_eq!(ids(&pilot).len(), 4);
    let searched = browser.next("searched").await;
    assert_eq!(ids(&searched).len(), 10, "pc-00 … pc-09: {searched}");
    let failed = h
        .admin_json("/api/v1/computers?status=failed&limit=200")
        .await;
    assert_eq!(ids(&browser.next("failed").await), ids(&failed));
    assert_eq!(ids(&failed), ["pc-03", "pc-04"]);

    // The bars are the API's counts, group by group.
    let bars = browser.next("bars").await;
    let status = h.admin_json(&format!("/api/v1/updates/{a}/status")).await;
    for g in status["groups"].as_array().unwrap() {
        let c = |k: &str| g[k].as_u64().unwrap();
        let want: serde_json::Map<String, Value> = [
            ("installed", c("installed") + c("installed_pending_reboot")),
            ("needed", c("needed") + c("downloaded")),
            ("failed", c("failed")),
            ("unknown", c("unknown")),
            ("not-applicable", c("not_applicable")),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_owned(), json!(n)))
        .collect();
        let group = g["group"].as_str().unwrap();
        assert_eq!(
            bars[group],
            Value::Object(want),
            "{group}: {bars} against {status}"
        );
    }
    assert_eq!(bars["Pilot"], json!({"installed": 3, "failed": 1}));
    assert_eq!(
        bars["All Computers"]["unknown"], 1,
        "pc-old never sent a status"
    );

    // Approved for Pilot alone, from the bar.
    let approved = browser.next("approved").await;
    assert_eq!(approved["Pilot"], true, "{approved}");
    assert_eq!(approved["Ring 2"], false, "{approved}");
    let update = h.admin_json(&format!("/api/v1/updates/{a}")).await;
    let groups: Vec<_> = update["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].clone())
        .collect();
    assert_eq!(groups, [json!("Pilot")], "{update}");

    // Needs attention: the failures, the silent one, and B (needed by all
    // ten, approved for none; A is approved for Pilot now).
    let attention = browser.next("attention").await;
    assert_eq!(ids(&attention["failed"]), ["pc-03", "pc-04"]);
    assert_eq!(ids(&attention["stale"]), ["pc-old"]);
    assert_eq!(attention["unapproved"], json!([[b, 10]]), "{attention}");

    assert_eq!(browser.next("console").await, json!([]), "console errors");
}
