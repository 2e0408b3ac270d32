//! A real browser on the administrator's desk opens a hostile page: the
//! page's form posts and `no-cors` fetches, and a DNS-rebound name, must
//! leave approvals and rules unchanged. Headless Chromium, driven by
//! Selenium (`tests/browser/hostile_page.py`); CI installs both.

use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::*;

/// Whether Chromium, ChromeDriver and Selenium are here; says what is
/// missing otherwise. In CI their absence is a failure, not a skip.
pub fn browser_available() -> bool {
    let missing: Vec<&str> = [
        ("/usr/bin/chromium", "chromium"),
        ("/usr/bin/chromedriver", "chromium-driver"),
    ]
    .into_iter()
    .filter(|(path, _)| !std::path::Path::new(path).exists())
    .map(|(_, package)| package)
    .chain(
        (!Command::new("python3")
            .args(["-c", "import selenium"])
            .status()
            .is_ok_and(|s| s.success()))
        .then_some("selenium (pip)"),
    )
    .collect();
    if missing.is_empty() {
        return true;
    }
    skipped_without(
        &format!("{missing:?}"),
        "apt-get install chromium chromium-driver; pip install selenium",
    );
    false
}

/// The attacker's page: every request a page can make without CORS
/// letting it, aimed at the admin API.
fn hostile_page(admin: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>cat pictures</title></head><body>
<form id="f1" method="POST" action="{admin}/api/v1/rules" enctype="text/plain" target="s1">
  <input name='{{"action":"decline","title":"","x":"' value='"}}'></form>
<form id="f2" method="POST" action="{admin}/api/v1/updates/{ID_A}/approve" target="s2"></form>
<form id="f3" method="POST" action="{admin}/api/v1/approvals" target="s3">
  <input name="action" value="approve"><input name="kb" value="5034122"></form>
<iframe name="s1"></iframe><iframe name="s2"></iframe><iframe name="s3"></iframe>
<script>
async function attack() {{
  for (const id of ["f1", "f2", "f3"]) document.getElementById(id).submit();
  const quiet = p => p.catch(() => null);
  await quiet(fetch("{admin}/api/v1/approvals", {{method: "POST", mode: "no-cors",
    headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{action: "approve", kb: "5034122"}})}}));
  await quiet(fetch("{admin}/api/v1/rules", {{method: "POST", mode: "no-cors",
    body: JSON.stringify({{action: "approve", title: "Cumulative"}})}}));
  await quiet(fetch("{admin}/api/v1/updates/{ID_B}/approve", {{method: "POST", mode: "no-cors"}}));
  await quiet(fetch("{admin}/api/v1/policy", {{method: "PUT", mode: "no-cors",
    body: JSON.stringify({{mode: "metadata-only"}})}}));
  document.title = "done";
}}
attack();
</script></body></html>"#
    )
}

/// Serves one page on its own loopback port (another origin).
async fn serve_page(html: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    html.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(html.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_page_in_a_real_browser_changes_nothing() {
    if !browser_available() {
        return;
    }
    let h = Harness::new().await;
    h.setup(&[]).await;
    let admin = h.admin("");
    let page = serve_page(hostile_page(&admin)).await;
    let rebound = format!(
        "http://rebound.test:{}/api/v1/status",
        h.running().admin_addr.port()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/hostile_page.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &page, &rebound])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing changed.
    assert_eq!(h.admin_json("/api/v1/rules").await, serde_json::json!([]));
    let approved = h.admin_json("/api/v1/updates?state=approved").await;
    assert_eq!(approved["total"], 0, "{approved}");
    assert_eq!(
        h.admin_json("/api/v1/policy").await["mode"],
        "store-locally"
    );
    // And not because the requests never left the browser: each was refused.
    let refused = |reason: &str| format!("upcache_admin_refused_total{{reason=\"{reason}\"}}");
    let by_origin = h.counter(&refused("origin")).await;
    let by_type = h.counter(&refused("content_type")).await;
    // (The PUT never leaves the browser: no-cors allows GET, HEAD and POST.)
    assert!(
        by_origin + by_type >= 6,
        "3 forms and 3 POST fetches refused: origin {by_origin}, content type {by_type}"
    );
    assert!(h.counter(&refused("host")).await >= 1);
    assert!(
        stdout.contains("rebound:") && stdout.contains("admin_hosts"),
        "a rebound name gets the refusal: {stdout}"
    );
}
