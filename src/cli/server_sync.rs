//! `upcache sync --server [URL]` (one server sync now, with progress and a
//! summary) and `upcache categories [--select NAME ...]`.

use std::time::Duration;

use anyhow::bail;

use super::client::AdminClient;
use crate::wsus::sync::service::{Categories, CategoryChoice};
use crate::wsus::sync::{Selection, SyncReport};

/// Starts a sync on the server, follows it, prints its summary; fails when
/// the sync stopped on an error or left revisions behind.
pub async fn run(client: &AdminClient, upstream: Option<String>) -> anyhow::Result<()> {
    let started = client.start_server_sync(upstream).await?;
    eprintln!("syncing from {}", started.upstream);
    let mut last_line = String::new();
    let report = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = client.server_sync_status().await?;
        if let Some(r) = &status.running {
            let p = &r.progress;
            let line = format!(
                "{}: {}/{} documents, {} bytes",
                p.phase, p.documents_done, p.documents_total, p.bytes
            );
            if line != last_line {
                eprintln!("{line}");
                last_line = line;
            }
            continue;
        }
        match status.last {
            Some(last) if last.started >= started.started => break last,
            _ => continue,
        }
    };
    print_report(&report);
    if let Some(e) = &report.error {
        bail!("the sync stopped: {e}");
    }
    if !report.failed.is_empty() {
        bail!(
            "{} revisions could not be synced; the next sync asks for them again",
            report.failed.len()
        );
    }
    Ok(())
}

fn print_report(r: &SyncReport) {
    println!("synced from {}", r.upstream);
    println!("  categories: {}", r.categories);
    println!(
        "  revisions: {} new, {} changed, {} removed ({} listed, {} already here)",
        r.revisions_new,
        r.revisions_changed,
        r.revisions_removed,
        r.revisions_listed,
        r.already_stored
    );
    println!("  documents: {} ({} bytes)", r.documents, r.bytes);
    println!("  time: {:.1} s", r.seconds);
    if let Some(c) = &r.catalog {
        println!("  catalog: {c}");
    }
    if r.categories_only {
        println!("  only categories: choose products and classifications with `upcache categories --select`");
    }
    for f in &r.faults {
        println!("  fault: {f}");
    }
    for f in &r.failed {
        println!("  failed: {f}");
    }
}

/// Lists the categories, or replaces the selection with `select` (titles
/// or GUIDs, each a product or a classification).
pub async fn categories(client: &AdminClient, select: &[String], json: bool) -> anyhow::Result<()> {
    let mut list = client.categories().await?;
    if !select.is_empty() {
        let selection = split(&list, select)?;
        list = client.select_categories(&selection).await?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    print_list("Products", &list.products);
    print_list("Classifications", &list.classifications);
    if list.products.is_empty() && list.classifications.is_empty() {
        println!("no categories yet: run `upcache sync --server` first");
    }
    Ok(())
}

/// Sorts names into products and classifications.
fn split(list: &Categories, names: &[String]) -> anyhow::Result<Selection> {
    let is = |c: &CategoryChoice, n: &str| {
        c.id.eq_ignore_ascii_case(n.trim()) || c.title.eq_ignore_ascii_case(n.trim())
    };
    let mut selection = Selection::default();
    for n in names {
        if list.products.iter().any(|c| is(c, n)) {
            selection.products.push(n.clone());
        } else if list.classifications.iter().any(|c| is(c, n)) {
            selection.classifications.push(n.clone());
        } else {
            bail!("no product or classification named {n:?} (`upcache categories` lists them)");
        }
    }
    Ok(selection)
}

fn print_list(heading: &str, items: &[CategoryChoice]) {
    println!("{heading}:");
    for c in items {
        let mark = if c.selected { "x" } else { " " };
        println!("  [{mark}] {}  {}", c.title, c.id);
    }
}
