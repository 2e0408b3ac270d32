//! REDbot (HTTP lint; `pip install redbot`) checks a stored file's
//! responses on both serving paths: no BAD finding, and ranges and both
//! kinds of conditional request recognised as working. CI installs it;
//! elsewhere its absence is a skip that says so.

use std::process::Command;

use serde_json::Value;

use crate::common::*;

/// Whether the `redbot` command is here; in CI its absence is a failure.
fn redbot_available() -> bool {
    let here = Command::new("redbot")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    if !here {
        skipped_without("REDbot", "pip install redbot");
    }
    here
}

/// REDbot's notes on `url`, as (note id, level) pairs.
async fn lint(url: &str) -> Vec<(String, String)> {
    let args = ["--output-format", "har", url].map(str::to_owned);
    let out = tokio::task::spawn_blocking(move || Command::new("redbot").args(args).output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let har: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "one checked response: {har}");
    entries[0]["_red_messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let field = |k: &str| m[k].as_str().unwrap().to_owned();
            (field("note_id"), field("level"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_file_has_no_bad_finding_on_either_path() {
    if !redbot_available() {
        return;
    }
    for fast_path in [true, false] {
        let h = Harness::with(|c| c.content.fast_path = fast_path).await;
        h.setup(&[ID_A]).await;
        let path = h.a.content_path();
        assert!(h.get(&path).await.bytes().await.unwrap() == h.a.bytes);
        h.settled().await;
        let sendfile_before = h.counter("upcache_sendfile_responses_total").await;

        let notes = lint(&h.url(&path)).await;
        let bad: Vec<_> = notes.iter().filter(|(_, level)| level == "BAD").collect();
        assert!(bad.is_empty(), "fast_path = {fast_path}: {bad:?}");
        for want in [
            "CL_CORRECT",
            "DATE_CORRECT",
            "RANGE_CORRECT",
            "INM_304",
            "IMS_304",
        ] {
            assert!(
                notes
                    .iter()
                    .any(|(id, level)| id == want && level == "GOOD"),
                "fast_path = {fast_path}: no GOOD {want} in {notes:?}"
            );
        }
        let sendfile = h.counter("upcache_sendfile_responses_total").await - sendfile_before;
        assert_eq!(
            sendfile > 0,
            fast_path,
            "the path REDbot met: {sendfile} sendfile responses"
        );
    }
}
