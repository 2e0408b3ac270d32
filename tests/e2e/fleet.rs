//! Who needs what (issue #26): a fleet simulator registers computers in
//! groups, scans and reports over [MS-WUSP], and the admin API must show
//! exactly what it sent; approvals per group reach only their group's
//! computers; client-side targeting puts computers in groups; a kill -9
//! in a burst of reports loses none that was acknowledged; and a data
//! directory of release 0.1.0 opens with its approvals as `All Computers`
//! approvals.
//!
//! Requests are written from the spec's schema, answers read with string
//! searches (the helpers of `update_server`).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::fake_wsus::*;
use crate::update_server::{
    all_between, between, envelope, machine, synced, unescape, AUTH_NS, CLIENT_NS, REPORTING_NS,
};

const FAILED: u32 = 0x8024_0017;

/// A Windows client of the simulator: its id and its cookie.
struct Pc {
    http: reqwest::Client,
    /// The content listener, `http://127.0.0.1:port`.
    base: String,
    id: String,
    cookie: String,
}

async fn soap(http: &reqwest::Client, url: String, action: &str, body: String) -> (u16, String) {
    let r = http
        .post(url)
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("SOAPAction", format!("\"{action}\""))
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn cookie_xml(data: &str) -> String {
    format!("<cookie><Expiration>2026-10-04T16:03:35Z</Expiration><EncryptedData>{data}</EncryptedData></cookie>")
}

/// One `ReportingEvent` (the shape a native client sends).
fn event(seq: usize, event_id: u32, update: &str, hresult: u32, misc: &[String]) -> String {
    let misc: String = misc
        .iter()
        .map(|m| format!("<string>{m}</string>"))
        .collect();
    format!(
        "<ReportingEvent><BasicData><TargetID><Sid>x</Sid></TargetID><SequenceNumber>{seq}</SequenceNumber>\
         <TimeAtTarget>2026-10-04T15:21:00Z</TimeAtTarget>\
         <EventInstanceID>7e6a9a6a-0000-4000-8000-{seq:012}</EventInstanceID>\
         <NamespaceID>1</NamespaceID><EventID>{event_id}</EventID><SourceID>101</SourceID>\
         <UpdateID><UpdateID>{update}</UpdateID><RevisionNumber>200</RevisionNumber></UpdateID>\
         <Win32HResult>{}</Win32HResult><AppName>AutomaticUpdates</AppName></BasicData>\
         <ExtendedData><ReplacementStrings/><MiscData>{misc}</MiscData></ExtendedData>\
         <PrivateData/></ReportingEvent>",
        hresult as i32
    )
}

const NO_UPDATE: &str = "00000000-0000-0000-0000-000000000000";

/// The status event a client sends after a scan: `U=` needed, `V=` installed.
fn status(seq: usize, needed: &[&str], installed: &[&str]) -> String {
    let mut misc = Vec::new();
    if !needed.is_empty() {
        misc.push(format!("U={}", needed.join(";").to_uppercase()));
    }
    if !installed.is_empty() {
        misc.push(format!("V={}", installed.join(";").to_uppercase()));
    }
    misc.push("AppName=AutomaticUpdates".into());
    event(seq, 156, NO_UPDATE, 0, &misc)
}

/// One offer of a scan: update id, action, deadline.
type Offer = (String, String, Option<String>);

impl Pc {
    /// GetAuthorizationCookie (asking for `target_group`) → GetCookie.
    async fn start(http: &reqwest::Client, base: &str, id: &str, target_group: &str) -> Pc {
        let (status, body) = soap(
            http,
            format!("{base}/SimpleAuthWebService/SimpleAuth.asmx"),
            &format!("{AUTH_NS}/GetAuthorizationCookie"),
            envelope(&format!(
                "<GetAuthorizationCookie xmlns=\"{AUTH_NS}\"><clientId>{id}</clientId>\
                 <targetGroupName>{target_group}</targetGroupName><dnsName>{id}.example.test</dnsName>\
                 </GetAuthorizationCookie>"
            )),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let auth = between(&body, "CookieData").unwrap().to_owned();
        let mut pc = Pc {
            http: http.clone(),
            base: base.to_owned(),
            id: id.to_owned(),
            cookie: String::new(),
        };
        let (status, body) = pc
            .call(
                "GetCookie",
                &format!(
                    "<authCookies><AuthorizationCookie><PlugInId>SimpleTargeting</PlugInId>\
                     <CookieData>{auth}</CookieData></AuthorizationCookie></authCookies>\
                     <protocolVersion>2.90</protocolVersion>"
                ),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        pc.cookie = between(&body, "EncryptedData").unwrap().to_owned();
        pc
    }

    async fn call(&self, op: &str, inner: &str) -> (u16, String) {
        let cookie = if self.cookie.is_empty() {
            String::new()
        } else {
            cookie_xml(&self.cookie)
        };
        soap(
            &self.http,
            format!("{}/ClientWebService/client.asmx", self.base),
            &format!("{CLIENT_NS}/{op}"),
            envelope(&format!(
                "<{op} xmlns=\"{CLIENT_NS}\">{cookie}{inner}</{op}>"
            )),
        )
        .await
    }

    async fn register(&self) {
        let (status, body) = self
            .call(
                "RegisterComputer",
                &format!(
                    "<computerInfo><DnsName>{}.example.test</DnsName><OSMajorVersion>10</OSMajorVersion>\
                     <OSMinorVersion>0</OSMinorVersion><OSBuildNumber>26200</OSBuildNumber>\
                     <OSDescription>Windows 11 Pro</OSDescription></computerInfo>",
                    self.id
                ),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// SyncUpdates until nothing new comes, reporting the non-leaf updates
    /// of `machine` installed as a client does; every offer with its
    /// deployment's action and deadline.
    async fn scan(&mut self, machine: &HashSet<String>) -> Vec<Offer> {
        let (mut installed, mut cached) = (Vec::<String>::new(), Vec::<String>::new());
        let mut offers = Vec::new();
        for _ in 0..30 {
            let ints =
                |v: &[String]| -> String { v.iter().map(|i| format!("<int>{i}</int>")).collect() };
            let p = format!(
                "<parameters><ExpressQuery>false</ExpressQuery>\
                 <InstalledNonLeafUpdateIDs>{}</InstalledNonLeafUpdateIDs>\
                 <OtherCachedUpdateIDs>{}</OtherCachedUpdateIDs>\
                 <SkipSoftwareSync>false</SkipSoftwareSync></parameters>",
                ints(&installed),
                ints(&cached)
            );
            let (status, body) = self.call("SyncUpdates", &p).await;
            assert_eq!(status, 200, "{body}");
            self.cookie = between(between(&body, "NewCookie").unwrap(), "EncryptedData")
                .unwrap()
                .to_owned();
            let infos = all_between(
                between(&body, "NewUpdates").unwrap_or_default(),
                "UpdateInfo",
            );
            for info in &infos {
                let rid = info[4..info.find("</ID>").unwrap()].to_owned();
                let deployment = between(info, "Deployment").unwrap();
                let core = unescape(between(info, "Xml").unwrap());
                let at = core.find("UpdateID=\"").unwrap() + 10;
                let id = core[at..at + 36].to_ascii_lowercase();
                if between(info, "IsLeaf") == Some("false") && machine.contains(&id) {
                    installed.push(rid);
                } else {
                    cached.push(rid);
                }
                offers.push((
                    id,
                    between(deployment, "Action").unwrap().to_owned(),
                    between(deployment, "Deadline").map(str::to_owned),
                ));
            }
            if infos.is_empty() && between(&body, "Truncated") != Some("true") {
                return offers;
            }
        }
        panic!("the scan did not end: {offers:?}");
    }

    /// ReportEventBatch; whether the server said `true`.
    async fn report(&self, events: &[String]) -> Result<bool, reqwest::Error> {
        let r = self
            .http
            .post(format!(
                "{}/ReportingWebService/ReportingWebService.asmx",
                self.base
            ))
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{REPORTING_NS}/ReportEventBatch\""))
            .body(envelope(&format!(
                "<ReportEventBatch xmlns=\"{REPORTING_NS}\">{}<clientTime>2026-10-04T15:21:01Z</clientTime>\
                 <eventBatch>{}</eventBatch></ReportEventBatch>",
                cookie_xml(&self.cookie),
                events.concat()
            )))
            .send()
            .await?;
        let ok = r.status() == 200;
        let body = r.text().await?;
        Ok(ok && between(&body, "ReportEventBatchResult") == Some("true"))
    }
}

async fn admin_post(h: &Harness, path: &str, body: Value) -> Value {
    let r = h.http.post(h.admin(path)).json(&body).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// What the simulator makes computer `i` report for updates X and Y, and
/// so the state the server must show ("unknown" for a computer that never
/// sent a status report, "not-applicable" for one it left out).
fn plan(i: usize) -> (&'static str, &'static str) {
    match i % 6 {
        0 => ("installed", "needed"),
        1 => ("needed", "not-applicable"),
        2 => ("failed", "not-applicable"),
        3 => ("installed-pending-reboot", "not-applicable"),
        4 => ("downloaded", "needed"),
        _ if i % 12 == 5 => ("installed", "unknown"), // an install event, no status report
        _ => ("unknown", "unknown"),
    }
}

/// The events computer `i` sends for its [`plan`], in its batches.
fn batches(i: usize, x: &str, y: &str) -> Vec<Vec<String>> {
    let s = |n| i * 100 + n;
    match i % 6 {
        0 => vec![vec![
            event(s(0), 147, NO_UPDATE, 0, &[]),
            status(s(1), &[y], &[x]),
        ]],
        1 => vec![vec![status(s(0), &[x], &[])]],
        2 => vec![
            vec![status(s(0), &[x], &[])],
            vec![
                event(s(1), 181, x, 0, &[]),
                event(s(2), 182, x, FAILED, &[]),
            ],
        ],
        3 => vec![
            vec![status(s(0), &[x], &[])],
            vec![
                event(s(1), 181, x, 0, &[]),
                event(s(2), 201, x, 0x0024_0005, &[]),
            ],
        ],
        4 => vec![vec![
            status(s(0), &[x, y], &[]),
            event(s(1), 162, x, 0, &[]),
        ]],
        _ if i % 12 == 5 => vec![vec![event(s(0), 183, x, 0, &[])]],
        _ => vec![],
    }
}

const GROUPS: [&str; 3] = ["Pilot", "Ring 1", "Broad"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_200_reports_and_the_api_shows_exactly_what_it_sent() {
    use upcache::fleet::Targeting;
    let h = Harness::with(|c| c.fleet.targeting = Targeting::Client).await;
    let _fake = synced(&h).await;
    for g in GROUPS {
        admin_post(&h, "/api/v1/groups", json!({ "name": g })).await;
    }
    let (x, y) = (BUNDLE, TOP);
    let base = h.url("");
    let machine = machine();
    // 200 computers, each asking for its group (client-side targeting),
    // registering, scanning and reporting, eight at a time.
    let ids: Vec<String> = (0..200).map(|i| format!("pc-{i:03}")).collect();
    for chunk in ids.chunks(8) {
        let runs = chunk.iter().map(|id| {
            let (http, base, machine) = (h.http.clone(), base.clone(), machine.clone());
            let i: usize = id[3..].parse().unwrap();
            async move {
                let mut pc = Pc::start(&http, &base, id, GROUPS[i % 3]).await;
                pc.register().await;
                pc.scan(&machine).await;
                for batch in batches(i, x, y) {
                    assert!(pc.report(&batch).await.unwrap(), "{id}: not acknowledged");
                }
            }
        });
        futures_util::future::join_all(runs).await;
    }

    // Every computer: its group, its states, its failure's error code.
    for (i, id) in ids.iter().enumerate() {
        let pc = h.admin_json(&format!("/api/v1/computers/{id}")).await;
        assert_eq!(pc["groups"], json!([GROUPS[i % 3]]), "{id}: {pc}");
        assert!(pc["last_scan"].as_i64().is_some(), "{id}");
        let states: BTreeMap<String, (String, Value)> = pc["updates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| {
                let id = u["update_id"].as_str().unwrap().to_owned();
                (
                    id,
                    (u["state"].as_str().unwrap().to_owned(), u["error"].clone()),
                )
            })
            .collect();
        let (want_x, want_y) = plan(i);
        for (update, want) in [(x, want_x), (y, want_y)] {
            let got = states.get(update).map_or_else(
                || {
                    if pc["last_status"].is_null() {
                        "unknown"
                    } else {
                        "not-applicable"
                    }
                },
                |(s, _)| s.as_str(),
            );
            assert_eq!(got, want, "{id} {update}: {pc}");
        }
        if want_x == "failed" {
            assert_eq!(states[x].1, "0x80240017", "{id}");
        }
    }

    // Every count, in all and per group, is the simulator's.
    let status = h.admin_json(&format!("/api/v1/updates/{x}/status")).await;
    let expected = |group: Option<&str>, state: &str| -> u64 {
        (0..200)
            .filter(|i| group.is_none_or(|g| GROUPS[i % 3] == g))
            .filter(|&i| plan(i).0 == state)
            .count() as u64
    };
    for g in status["groups"].as_array().unwrap() {
        let name = g["group"].as_str().unwrap();
        let group = match name {
            "All Computers" => None,
            "Unassigned Computers" => {
                assert_eq!(g["computers"], 0, "{g}");
                continue;
            }
            other => Some(other),
        };
        let size = if group.is_none() {
            200
        } else {
            200 / 3 + u64::from(name == "Pilot") + u64::from(name == "Ring 1")
        };
        assert_eq!(g["computers"], size, "{name}: {g}");
        for state in [
            "installed",
            "needed",
            "downloaded",
            "failed",
            "installed-pending-reboot",
            "not-applicable",
            "unknown",
        ] {
            let key = state.replace('-', "_");
            assert_eq!(g[&key], expected(group, state), "{name} {state}: {g}");
        }
    }
    assert_eq!(status["total"]["failed"], expected(None, "failed"));

    // The listings find them: who failed X, who in Pilot needs it, who never reported.
    let list = |q: &str| {
        let h = &h;
        let q = q.to_owned();
        async move {
            h.admin_json(&format!("/api/v1/computers?limit=1000&{q}"))
                .await
        }
    };
    let failed = list(format!("status=failed&update={x}").as_str()).await;
    assert_eq!(failed["total"], expected(None, "failed"), "{failed}");
    let pilot_needs = list(format!("group=Pilot&status=needed&update={x}").as_str()).await;
    assert_eq!(pilot_needs["total"], expected(Some("Pilot"), "needed"));
    let unknown = list("status=unknown").await;
    let never = (0..200)
        .filter(|i| {
            batches(*i, x, y)
                .iter()
                .all(|b| !b.iter().any(|e| e.contains(">156<")))
        })
        .count();
    assert_eq!(unknown["total"], never as u64, "{unknown}");
    assert_eq!(list("stale=true").await["total"], 0);

    // The compliance report: one row per stored state, and one per computer
    // that never sent a status report, CSV that quotes what it must.
    let r = h
        .http
        .get(h.admin("/api/v1/reports/compliance.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "computer,computer_id,group,update,title,kb,state,error,time"
    );
    let stored: usize = (0..200)
        .map(|i| {
            let (a, b) = plan(i);
            [a, b]
                .iter()
                .filter(|s| !["unknown", "not-applicable"].contains(s))
                .count()
        })
        .sum();
    let unreported = (0..200).filter(|&i| i % 6 == 5).count();
    let x_installed_unreported = (0..200).filter(|&i| i % 12 == 5).count();
    assert_eq!(
        lines.len() - 1,
        stored + unreported - x_installed_unreported,
        "{csv}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("pc-002.example.test,pc-002,Broad,")
                && l.contains(",failed,0x80240017,")),
        "{csv}"
    );

    // The CLI shows the same.
    let admin = h.admin("");
    let admin = admin.trim_end_matches('/');
    let out = run_cli(&["status", x, "--json", "--admin", admin], &[]).await;
    assert!(out.ok, "{}", out.stderr);
    let cli: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(cli["total"], status["total"]);
    let out = run_cli(
        &["computers", "--group", "Pilot", "--json", "--admin", admin],
        &[],
    )
    .await;
    let cli: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(cli["total"], 67, "{}", out.stderr);
    let out = run_cli(&["computers", "pc-002", "--admin", admin], &[]).await;
    assert!(
        out.stdout.contains("failed") && out.stdout.contains("0x80240017"),
        "{}",
        out.stdout
    );
    let out = run_cli(&["groups", "--admin", admin], &[]).await;
    assert!(
        out.stdout.contains("Ring 1") && out.stdout.contains("built in"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_for_the_pilot_group_is_offered_to_pilot_machines_only() {
    let h = Harness::new().await;
    let fake = synced(&h).await;
    let pilot = admin_post(&h, "/api/v1/groups", json!({ "name": "Pilot" })).await;
    assert_eq!(pilot["builtin"], false);
    let base = h.url("");
    let mut pilot_pc = Pc::start(&h.http, &base, "pc-pilot", "").await;
    pilot_pc.register().await;
    let mut other = Pc::start(&h.http, &base, "pc-other", "").await;
    other.register().await;
    // Server-side targeting: the administrator puts it in Pilot.
    let r = h
        .http
        .put(h.admin("/api/v1/computers/pc-pilot/groups"))
        .json(&json!({ "groups": ["pilot"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let summary = admin_post(
        &h,
        &format!("/api/v1/updates/{BUNDLE}/approve"),
        json!({ "group": "Pilot", "deadline": "2026-12-10" }),
    )
    .await;
    assert_eq!(summary["state"], "approved");
    let detail = h.admin_json(&format!("/api/v1/updates/{BUNDLE}")).await;
    assert_eq!(
        detail["approvals"],
        json!([{ "group": "Pilot", "group_id": pilot["id"], "deadline": "2026-12-10T00:00:00Z" }])
    );

    let machine = machine();
    let offered = |offers: &[Offer], id: &str| offers.iter().find(|o| o.0 == id).cloned().unwrap();
    let offers = pilot_pc.scan(&machine).await;
    assert_eq!(
        offered(&offers, BUNDLE),
        (
            BUNDLE.into(),
            "Install".into(),
            Some("2026-12-10T00:00:00Z".into())
        )
    );
    assert_eq!(offered(&offers, LEAF).1, "Bundle");
    let offers = other.scan(&machine).await;
    assert_eq!(
        offered(&offers, BUNDLE),
        (BUNDLE.into(), "Evaluate".into(), None)
    );
    assert_eq!(offered(&offers, LEAF).1, "Evaluate");

    // Approved for a group: its file is served (and fetched).
    let file = h.get(&fake.file.content_path()).await;
    assert_eq!(file.status(), 200);

    // Approved for All Computers too: everyone installs it; Pilot keeps its deadline.
    admin_post(&h, &format!("/api/v1/updates/{BUNDLE}/approve"), json!({})).await;
    let mut fresh = Pc::start(&h.http, &base, "pc-other-2", "").await;
    assert_eq!(offered(&fresh.scan(&machine).await, BUNDLE).1, "Install");
    // Pilot's approval taken back, then All Computers': nobody installs it,
    // and the file is refused again.
    admin_post(
        &h,
        &format!("/api/v1/updates/{BUNDLE}/unapprove"),
        json!({ "group": "Pilot" }),
    )
    .await;
    let d = h.admin_json(&format!("/api/v1/updates/{BUNDLE}")).await;
    assert_eq!(d["approvals"][0]["group"], "All Computers", "{d}");
    admin_post(
        &h,
        &format!("/api/v1/updates/{BUNDLE}/unapprove"),
        json!({}),
    )
    .await;
    let mut again = Pc::start(&h.http, &base, "pc-pilot", "").await;
    assert_eq!(offered(&again.scan(&machine).await, BUNDLE).1, "Evaluate");
    assert_eq!(h.get(&fake.file.content_path()).await.status(), 403);

    // A decline is global and takes no group; a group that does not exist is 404.
    let r = h
        .http
        .post(h.admin(&format!("/api/v1/updates/{BUNDLE}/decline")))
        .json(&json!({ "group": "Pilot" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = h
        .http
        .post(h.admin(&format!("/api/v1/updates/{BUNDLE}/approve")))
        .json(&json!({ "group": "Nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Deleting Pilot takes its approvals with it.
    admin_post(
        &h,
        &format!("/api/v1/updates/{TOP}/approve"),
        json!({ "group": "Pilot" }),
    )
    .await;
    let r = h
        .call(reqwest::Method::DELETE, "/api/v1/groups/Pilot")
        .await;
    assert_eq!(r.status(), 204);
    let d = h.admin_json(&format!("/api/v1/updates/{TOP}")).await;
    assert_eq!(
        (d["state"].as_str(), d["approvals"].as_array().map(Vec::len)),
        (Some("not-approved"), Some(0))
    );
    let r = h
        .call(reqwest::Method::DELETE, "/api/v1/groups/All%20Computers")
        .await;
    assert_eq!(r.status(), 409);
}

async fn computer_groups(h: &Harness, id: &str) -> Value {
    h.admin_json(&format!("/api/v1/computers/{id}")).await["groups"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_targeting_lands_the_computer_in_the_group_it_names() {
    use upcache::fleet::Targeting;
    let h = Harness::with(|c| c.fleet.targeting = Targeting::Client).await;
    admin_post(&h, "/api/v1/groups", json!({ "name": "Ring 1" })).await;
    admin_post(&h, "/api/v1/groups", json!({ "name": "Finance" })).await;
    let base = h.url("");
    let pc = Pc::start(&h.http, &base, "pc-1", "ring 1;Finance;No such group").await;
    pc.register().await;
    assert_eq!(
        computer_groups(&h, "pc-1").await,
        json!(["Finance", "Ring 1"])
    );
    // The policy changes: the next authorization moves it.
    let mut pc = Pc::start(&h.http, &base, "pc-1", "Finance").await;
    pc.scan(&HashSet::new()).await;
    assert_eq!(computer_groups(&h, "pc-1").await, json!(["Finance"]));
    let mut none = Pc::start(&h.http, &base, "pc-2", "Nowhere").await;
    none.scan(&HashSet::new()).await;
    assert_eq!(
        computer_groups(&h, "pc-2").await,
        json!(["Unassigned Computers"])
    );
    // Administrators cannot move computers the clients place.
    let r = h
        .http
        .put(h.admin("/api/v1/computers/pc-1/groups"))
        .json(&json!({ "groups": ["Ring 1"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let list = h.admin_json("/api/v1/groups").await;
    let finance = list
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "Finance")
        .unwrap();
    assert_eq!(finance["computers"], 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_burst_of_reports_loses_no_acknowledged_report() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let server = start_binary(dir.path()).await;
    let mut pcs = Vec::new();
    for i in 0..8 {
        let pc = Pc::start(&http, &server.content, &format!("burst-{i}"), "").await;
        pc.register().await;
        pcs.push(pc);
    }
    // Eight clients send batches of 20 events as fast as they can; the
    // server is killed while they do.
    let runs: Vec<_> = pcs
        .into_iter()
        .enumerate()
        .map(|(c, pc)| {
            tokio::spawn(async move {
                let mut acked = 0usize;
                for b in 0..10_000 {
                    let batch: Vec<String> = (0..20)
                        .map(|e| {
                            event(
                                b * 20 + e,
                                183,
                                &format!("{c:08}-0000-4000-8000-{:012}", b * 20 + e),
                                0,
                                &[],
                            )
                        })
                        .collect();
                    match pc.report(&batch).await {
                        Ok(true) => acked += 1,
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let mut acked = Vec::new();
    for r in runs {
        acked.push(r.await.unwrap());
    }
    assert!(
        acked.iter().sum::<usize>() > 8,
        "the burst was under way: {acked:?}"
    );
    eprintln!("batches of 20 events acknowledged before the kill: {acked:?}");
    let server = start_binary(dir.path()).await;
    for (c, n) in acked.iter().enumerate() {
        let url = format!("{}/api/v1/computers/burst-{c}", server.admin);
        let pc: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        let events = pc["events"].as_u64().unwrap();
        assert!(
            events >= (n * 20) as u64,
            "burst-{c}: {n} batches acknowledged, {events} events kept"
        );
        let installed = pc["updates"].as_array().unwrap().len();
        assert!(
            installed >= n * 20,
            "burst-{c}: {installed} states for {n} batches"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_again_is_acknowledged_and_its_events_are_listed_once() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let server = start_binary(dir.path()).await;
    let pc = Pc::start(&http, &server.content, "resender", "").await;
    pc.register().await;
    let batch = [
        event(1, 147, NO_UPDATE, 0, &[]),
        event(2, 183, BUNDLE, 0, &[]),
        event(3, 182, TOP, FAILED, &[]),
    ];
    // The client did not see the first acknowledgement and sends the
    // same events (same EventInstanceIDs) again.
    assert!(pc.report(&batch).await.unwrap());
    assert!(pc.report(&batch).await.unwrap());
    let url = format!("{}/api/v1/computers/resender", server.admin);
    let got: Value = http.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["events"], 3, "{got}");
    let ids: Vec<&str> = got["recent_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["147", "183", "182"], "{got}");
    let failed = got["updates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["update_id"] == TOP)
        .unwrap();
    assert_eq!(failed["state"], "failed", "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_release_0_1_0_keeps_its_approvals_as_all_computers_approvals() {
    let h = Harness::new().await; // the upstream and the sample files
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir-0.1.0");
    for f in std::fs::read_dir(&fixture).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    let upstream = h.upstream.url("");
    let server = spawn_server_args(
        dir.path(),
        &["--upstream", upstream.trim_end_matches('/')],
        std::process::Stdio::null(),
    );
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let url = format!("{}{path}", server.admin);
        let http = http.clone();
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let a = get(&format!("/api/v1/updates/{ID_A}")).await;
    assert_eq!(a["state"], "approved");
    assert_eq!(
        a["approvals"],
        json!([{ "group": "All Computers", "group_id": 1, "deadline": null }])
    );
    let b = get(&format!("/api/v1/updates/{ID_B}")).await;
    assert_eq!(
        (b["state"].as_str(), b["approvals"].as_array().map(Vec::len)),
        (Some("declined"), Some(0))
    );
    let c = get(&format!("/api/v1/updates/{ID_C}")).await;
    assert_eq!(
        (c["state"].as_str(), c["approvals"].as_array().map(Vec::len)),
        (Some("not-approved"), Some(0))
    );
    let rules = get("/api/v1/rules").await;
    assert_eq!(rules[0]["classification"], "Definition Updates", "{rules}");
    assert!(
        rules[0].get("group").is_none(),
        "an old rule approves for All Computers"
    );
    let groups = get("/api/v1/groups").await;
    assert_eq!(groups[0]["name"], "All Computers");
    assert_eq!(groups[1]["name"], "Unassigned Computers");

    // The computer and its events, now in Unassigned Computers.
    let pc = get("/api/v1/computers/e1da06a3-5601-43c9-bac3-52d5db701494").await;
    assert_eq!(pc["name"], "pc1.example.test", "{pc}");
    assert_eq!(pc["target_group"], "Pilot");
    assert_eq!(pc["groups"], json!(["Unassigned Computers"]));
    assert_eq!(pc["events"], 2);
    assert_eq!(pc["recent_events"][1]["event_id"], "182");

    // Content stays gated: A is served, C is refused until approved for a group.
    let body = server.body(&h.a.content_path()).await;
    assert!(body == h.a.bytes, "A served whole");
    let refused = http
        .get(format!("{}{}", server.content, h.c.content_path()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    http.post(format!("{}/api/v1/groups", server.admin))
        .json(&json!({ "name": "Pilot" }))
        .send()
        .await
        .unwrap();
    let r = http
        .post(format!("{}/api/v1/updates/{ID_C}/approve", server.admin))
        .json(&json!({ "group": "Pilot" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = server.body(&h.c.content_path()).await;
    assert!(body == h.c.bytes, "C served once approved for a group");
}

async fn approvals(h: &Harness, id: &str) -> Value {
    h.admin_json(&format!("/api/v1/updates/{id}")).await["approvals"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_takes_the_primarys_group_approvals_and_their_changes() {
    let primary = Harness::new().await;
    primary.setup(&[ID_A]).await;
    admin_post(&primary, "/api/v1/groups", json!({ "name": "Pilot" })).await;
    admin_post(
        &primary,
        &format!("/api/v1/updates/{ID_B}/approve"),
        json!({ "group": "Pilot", "deadline": "2026-12-10" }),
    )
    .await;
    let url = reqwest::Url::parse(&primary.admin("/")).unwrap();
    let follower = Harness::with(|c| {
        c.follow.follow = Some(url);
        c.follow.follow_interval = Duration::from_secs(1);
    })
    .await;
    let pilot_b = json!([{ "group": "Pilot", "group_id": 3, "deadline": "2026-12-10T00:00:00Z" }]);
    within("the first pull", Duration::from_secs(10), async || {
        approvals(&follower, ID_B).await == pilot_b
    })
    .await;
    assert_eq!(
        approvals(&follower, ID_A).await[0]["group"],
        "All Computers"
    );
    // Taken back for Pilot on the primary: the follower follows.
    admin_post(
        &primary,
        &format!("/api/v1/updates/{ID_B}/unapprove"),
        json!({ "group": "Pilot" }),
    )
    .await;
    within("the next pull", Duration::from_secs(10), async || {
        approvals(&follower, ID_B).await == json!([])
    })
    .await;
}

/// Server-side targeting down a chain, primary → middle → last: the
/// middle passes on the memberships it took from the primary, so a
/// computer scanning against the last node is offered an update approved
/// for Pilot alone on the primary only while it is in Pilot there, and
/// another is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_only_approval_on_the_primary_reaches_its_computers_two_followers_down() {
    let primary = Harness::new().await;
    synced(&primary).await;
    admin_post(&primary, "/api/v1/groups", json!({ "name": "Pilot" })).await;
    let mut middle = Harness::new().await;
    synced(&middle).await;
    let mut last = Harness::new().await;
    synced(&last).await;
    let follow = |url: String| {
        move |c: &mut upcache::config::Config| {
            c.follow.follow = Some(reqwest::Url::parse(&url).unwrap());
            c.follow.follow_interval = Duration::from_secs(1);
        }
    };
    middle.restart_with(follow(primary.admin("/"))).await;
    last.restart_with(follow(middle.admin("/"))).await;
    a_pilot_only_approval_follows_the_computer(&primary, &last, "two followers down").await;
}

/// Server-side targeting with a follower: the primary's administrator puts
/// a computer in Pilot and approves an update for Pilot alone; the computer
/// scanning against the follower is offered it, another is not, and
/// taking it out of Pilot on the primary withdraws it there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_computer_placed_in_a_group_on_the_primary_gets_that_groups_approvals_on_a_follower() {
    let primary = Harness::new().await;
    synced(&primary).await;
    admin_post(&primary, "/api/v1/groups", json!({ "name": "Pilot" })).await;
    // Scans are answered from a node's own metadata: the follower syncs it
    // before it follows.
    let mut follower = Harness::new().await;
    synced(&follower).await;
    let url = reqwest::Url::parse(&primary.admin("/")).unwrap();
    follower
        .restart_with(|c| {
            c.follow.follow = Some(url);
            c.follow.follow_interval = Duration::from_secs(1);
        })
        .await;
    a_pilot_only_approval_follows_the_computer(&primary, &follower, "on the follower").await;
}

/// Server-side targeting seen from `node`, which follows `primary` (or a
/// follower of it; `where_` says which, for the waits' names): the
/// primary's administrator puts a computer in Pilot and approves an update
/// for Pilot alone; the computer scanning against `node` is offered it,
/// another is not, and taking it out of Pilot on the primary withdraws it
/// there too.
async fn a_pilot_only_approval_follows_the_computer(
    primary: &Harness,
    node: &Harness,
    where_: &str,
) {
    let base = node.url("");
    let mut x = Pc::start(&node.http, &base, "pc-x", "").await;
    x.register().await;
    let mut y = Pc::start(&node.http, &base, "pc-y", "").await;
    y.register().await;
    // The reports travel up the chain: the primary knows both.
    within(
        "the computers on the primary",
        Duration::from_secs(30),
        async || {
            let list = primary.admin_json("/api/v1/computers").await;
            list["computers"].as_array().map(Vec::len) == Some(2)
        },
    )
    .await;
    let r = primary
        .http
        .put(primary.admin("/api/v1/computers/pc-x/groups"))
        .json(&json!({ "groups": ["Pilot"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    admin_post(
        primary,
        &format!("/api/v1/updates/{BUNDLE}/approve"),
        json!({ "group": "Pilot", "deadline": "2026-12-10" }),
    )
    .await;

    let machine = machine();
    let action = |offers: &[Offer]| {
        offers
            .iter()
            .find(|o| o.0 == BUNDLE)
            .map(|o| (o.1.clone(), o.2.clone()))
    };
    let install = Some((
        "Install".to_owned(),
        Some("2026-12-10T00:00:00Z".to_owned()),
    ));
    let evaluate = Some(("Evaluate".to_owned(), None));
    within(
        &format!("Pilot's approval offered to X {where_}"),
        Duration::from_secs(30),
        async || action(&x.scan(&machine).await) == install,
    )
    .await;
    assert_eq!(computer_groups(node, "pc-x").await, json!(["Pilot"]));
    assert_eq!(
        action(&y.scan(&machine).await),
        evaluate,
        "Y is not in Pilot"
    );
    assert_eq!(
        computer_groups(node, "pc-y").await,
        json!(["Unassigned Computers"])
    );

    // Out of Pilot on the primary: withdrawn at `node` too.
    let r = primary
        .http
        .put(primary.admin("/api/v1/computers/pc-x/groups"))
        .json(&json!({ "groups": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    within(
        &format!("X out of Pilot {where_}"),
        Duration::from_secs(30),
        async || action(&x.scan(&machine).await) == evaluate,
    )
    .await;
    assert_eq!(
        computer_groups(node, "pc-x").await,
        json!(["Unassigned Computers"])
    );
    let status = node.status().await;
    assert!(
        status["follow"]["members_seq"].as_u64().is_some(),
        "{status}"
    );
}
