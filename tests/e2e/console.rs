//! The web console in a real browser (headless Chromium driven by
//! Selenium, `tests/browser/console.py`): it asks for the token once per
//! session, its figures are the API's, a running download's bar advances,
//! and searching and clicking Approve approves the update; over HTTPS
//! (h2 by ALPN) it works the same and shows its certificate's expiry.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::browser::browser_available;
use crate::common::*;

const TOKEN: &str = "console-test-token-0123456789";

/// The script's report lines, as they come.
struct Script {
    child: std::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Script {
    fn start(args: &[&str]) -> Script {
        Script::start_file("console.py", args)
    }

    fn start_file(file: &str, args: &[&str]) -> Script {
        let script = format!("{}/tests/browser/{file}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
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

    fn proceed(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Script {
    /// Lets the script close its browser (a killed script leaves Chromium
    /// and ChromeDriver running), and kills it only if it hangs.
    fn drop(&mut self) {
        drop(self.child.stdin.take());
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

/// A client that sends the console's token with every request.
fn with_token(builder: reqwest::ClientBuilder) -> reqwest::Client {
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    builder.default_headers(auth).build().unwrap()
}

fn number(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_api_figures_live_and_approves_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let mut h = Harness::with(|c| c.admin.admin_token = Some(TOKEN.into())).await;
    h.http = with_token(reqwest::Client::builder());
    h.setup(&[ID_A, ID_B]).await;
    // One miss and one hit of B: a hit ratio of 1/2.
    for _ in 0..2 {
        assert_eq!(
            h.get(&h.b.content_path()).await.bytes().await.unwrap(),
            h.b.bytes
        );
        h.settled().await;
    }
    let served = 2 * h.b.bytes.len() as u64;
    for _ in 0..100 {
        if h.status().await["traffic"]["bytes_served"] == served {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let admin = h.admin("");
    let mut browser = Script::start(&[&admin, "KB5031455", ID_C, TOKEN]);
    let page = browser.next("figures").await;
    let status = h.status().await;
    let traffic = &status["traffic"];
    assert_eq!(number(&page["hit-ratio"]), 0.5, "{page}");
    assert_eq!(traffic["hit_ratio"], 0.5);
    for (id, api) in [
        ("bytes-served", &traffic["bytes_served"]),
        ("bytes-upstream", &traffic["bytes_upstream"]),
        ("store-bytes", &status["catalog"]["bytes_stored"]),
        ("updates-approved", &status["catalog"]["updates_approved"]),
        ("do-objects", &status["delivery"]["unverified_objects"]),
    ] {
        assert_eq!(
            number(&page[id]),
            api.as_f64().unwrap(),
            "{id}: page {page}, API {status}"
        );
    }
    assert_eq!(number(&page["updates-approved"]), 2.0);

    // A slow download of A: its bar must move while the page polls.
    h.upstream.set_rate(600_000);
    let url = h.url(&h.a.content_path());
    let client = h.http.clone();
    let download = tokio::spawn(async move { client.get(url).send().await?.bytes().await });
    browser.proceed();
    assert_eq!(
        browser.next("bars").await,
        1,
        "one progress bar per running download"
    );
    let samples: Vec<f64> = serde_json::from_value(browser.next("progress").await).unwrap();
    assert!(samples.len() >= 3, "{samples:?}");
    assert!(
        samples.windows(2).all(|w| w[0] <= w[1]) && samples.last() > samples.first(),
        "the bar advances: {samples:?}"
    );

    assert_eq!(browser.next("approved").await, "approved");
    let c = h.admin_json(&format!("/api/v1/updates/{ID_C}")).await;
    assert_eq!(c["state"], "approved", "{c}");

    let reload = browser.next("reload").await;
    assert_eq!(
        reload["dialog_hidden"], true,
        "asked for the token again: {reload}"
    );
    assert_eq!(number(&reload["figures"]["updates-approved"]), 3.0);

    // Maintenance: B declined (and stored a while ago) is found, removed,
    // and a scrub of what is left passes.
    h.upstream.set_rate(0);
    assert_eq!(download.await.unwrap().unwrap(), h.a.bytes);
    h.settled().await;
    h.set_state(ID_B, "decline").await;
    age_store(&h, Duration::from_secs(120));
    browser.proceed();
    assert_eq!(browser.next("unneeded").await, 1);
    assert_eq!(browser.next("removed").await, 1);
    assert_eq!(h.stored(), vec![h.a.sha256]);
    let scrub = browser.next("scrub").await;
    assert_eq!(scrub, serde_json::json!({"state": "done", "bad": 0}));
    assert_eq!(h.status().await["scrub"]["files_done"], 1);

    let errors = browser.next("console").await;
    assert_eq!(errors, serde_json::json!([]), "console errors");
}

/// Over HTTPS the browser speaks h2 (no `Host` header: the guard reads the
/// authority), sends an `https://` origin, and the page shows when the
/// certificate expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_over_https_and_shows_the_certificate_expiry() {
    if !browser_available() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let pki = private_ca(certs.path(), "console");
    let files = pki.files.clone();
    let mut h = Harness::with(|c| {
        c.admin.set_tls(files);
        c.admin.admin_token = Some(TOKEN.into());
    })
    .await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    h.http = with_token(reqwest::Client::builder().add_root_certificate(ca));
    let admin = h.admin("");
    assert!(admin.starts_with("https://"), "{admin}");

    let mut browser = Script::start_file("console_tls.py", &[&admin, TOKEN]);
    let page = browser.next("tls").await;
    assert_eq!(page["protocol"], "h2", "{page}");
    let not_after = h.status().await["admin_tls"]["not_after"].as_i64().unwrap();
    assert_eq!(not_after, leaf_expiry().unix_timestamp());
    let expiry = time::OffsetDateTime::from_unix_timestamp(not_after)
        .unwrap()
        .date();
    let shown = format!(
        "Admin certificate {}, valid until {expiry}",
        pki.files.cert.display()
    );
    assert_eq!(page["certificate"], shown.as_str(), "{page}");
    assert_eq!(page["updates-approved"], "0", "{page}");
    assert_eq!(page["errors"], serde_json::json!([]), "console errors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_one_page_that_only_runs_its_own_script() {
    let h = Harness::new().await;
    let r = h.http.get(h.admin("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'sha256-") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let page = r.text().await.unwrap();
    // Self-contained: nothing is loaded from anywhere else.
    for external in ["src=\"http", "href=\"http", "@import", "url("] {
        assert!(!page.contains(external), "{external}");
    }
    assert!(page.contains("data-token-required=\"false\""));
    // A page elsewhere cannot load it under a rebound name.
    let r = h
        .http
        .get(h.admin("/"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// The Synchronization card in a real browser: the last sync's figures,
/// the products and classifications as checkboxes (each tick saved with
/// `PUT /api/v1/categories`), and "Sync now", whose end the card shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_chooses_categories_and_syncs_now_in_a_real_browser() {
    use crate::fake_wsus::*;
    if !browser_available() {
        return;
    }
    let file = upcache::demo::SampleFile::generate("2267602", "exe", 1000);
    // The files are never fetched here: any base will do.
    let fake = FakeWsus::start(file, "http://127.0.0.1:9").await;
    let url = fake.url.clone();
    let h = Harness::with(|c| c.server_sync.upstream_server = url).await;
    let first = h.sync_from_server(&fake.url).await;
    assert_eq!(first["categories_only"], true, "{first}");

    let admin = h.admin("");
    let mut script = Script::start_file("sync_console.py", &[&admin, PRODUCT, CLASSIFICATION]);
    let last = script.next("last").await;
    assert_eq!(last["complete"], "true", "{last}");
    assert_eq!(last["documents"], "4", "{last}");
    assert_eq!(last["state"], "idle", "{last}");
    let choices = script.next("choices").await;
    assert_eq!(
        choices["products"],
        serde_json::json!([PRODUCT_TITLE]),
        "{choices}"
    );
    assert_eq!(
        choices["classifications"].as_array().unwrap().len(),
        2,
        "{choices}"
    );
    assert_eq!(script.next("saved").await, 2);
    let synced = script.next("synced").await;
    assert_eq!(synced["complete"], "true", "{synced}");
    assert_eq!(synced["documents"], "5", "{synced}");
    assert_eq!(synced["errors"], "0", "{synced}");
    assert_eq!(script.next("console").await, serde_json::json!([]));

    // What the browser chose is the server's selection, and was synced.
    let cats = h.admin_json("/api/v1/categories").await;
    assert_eq!(cats["products"][0]["selected"], true, "{cats}");
    let chosen: Vec<_> = cats["classifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["selected"] == true)
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(chosen, [CLASSIFICATION]);
    let status = h.admin_json("/api/v1/server-sync").await;
    assert_eq!(status["last"]["revisions_new"], 5, "{status}");
}
