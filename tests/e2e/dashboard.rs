//! `dist/grafana/upcache.json` queries only what `/metrics` exports, and
//! the histograms follow Prometheus naming.

use serde_json::Value;

use crate::common::*;

/// Every PromQL string of the dashboard: panel targets and variable queries.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| queries(i, out)),
        _ => {}
    }
}

/// The `upcache_*` names a query reads.
fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("upcache_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exported() {
    let h = Harness::new().await;
    h.setup(&[ID_B]).await;
    // A miss (and its download), a hit, a refusal, an admin refusal: every
    // labelled family gets a member.
    for _ in 0..2 {
        let r = h.get(&h.b.content_path()).await;
        assert_eq!(r.bytes().await.unwrap(), h.b.bytes);
        h.settled().await;
    }
    assert_eq!(h.get(&h.c.content_path()).await.status(), 403);
    let r = h
        .http
        .post(h.admin("/api/v1/rules"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // A response is counted when its body ends, which the server may see
    // just after the client has read the last byte.
    let served = format!("upcache_served_bytes_total {}", 2 * h.b.bytes.len());
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = h
            .http
            .get(h.admin("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains(&served) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let exported: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();

    let dashboard: Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dist/grafana/upcache.json"
    )))
    .unwrap();
    let mut all = Vec::new();
    queries(&dashboard, &mut all);
    assert!(all.len() >= 15, "{all:?}");
    let mut checked = 0;
    for query in &all {
        for name in metric_names(query) {
            assert!(
                exported.contains(&name.as_str()),
                "the dashboard queries {name}, which /metrics does not export (in {query})"
            );
            checked += 1;
        }
    }
    assert!(checked >= 20);
    // Histograms by Prometheus naming: seconds, with _bucket/_sum/_count.
    for family in [
        "upcache_request_duration_seconds",
        "upcache_upstream_download_duration_seconds",
    ] {
        for suffix in ["_bucket", "_sum", "_count"] {
            let series = format!("{family}{suffix}");
            assert!(exported.contains(&series.as_str()), "{series}\n{metrics}");
        }
    }
    assert!(metrics.contains("upcache_request_duration_seconds_count{outcome=\"hit\"} 1"));
    assert!(metrics.contains("upcache_request_duration_seconds_count{outcome=\"miss\"} 1"));
    assert!(metrics.contains(&served), "{metrics}");
    assert!(metrics.contains(&format!("upcache_store_bytes {}", h.b.bytes.len())));
    assert!(metrics.contains("upcache_store_files 1"));
}
