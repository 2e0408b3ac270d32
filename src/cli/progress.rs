//! Progress in the terminal (indicatif): uploads of catalogs, and
//! `status --watch` for downloads. Hidden when output is not a terminal.

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::client::{AdminClient, ImportEvent, Progress};

const BYTES: &str = "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}";
const FILES: &str = "{prefix:>12} [{bar:30}] {pos}/{len} files, ETA {eta} {msg}";

fn bar(len: u64, template: &str, prefix: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix.to_owned());
    pb
}

/// Shows an import: a bar while the file is uploaded (a spinner when its
/// size is unknown), then what the server reports, cleared at the end.
pub fn import_bar(prefix: &'static str) -> Progress {
    let shown = std::sync::Mutex::new(None::<ProgressBar>);
    std::sync::Arc::new(move |event| {
        let mut shown = shown.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            ImportEvent::Uploading { total } if total > 0 => {
                *shown = Some(bar(total, BYTES, prefix));
            }
            ImportEvent::Uploading { .. } => *shown = Some(spinner(prefix)),
            ImportEvent::Sent(n) => {
                if let Some(pb) = shown.as_ref() {
                    pb.inc(n);
                }
            }
            ImportEvent::Server(i) => {
                let pb = shown.get_or_insert_with(|| spinner(prefix));
                pb.set_message(format!(
                    "server: {} ({} updates, {} files read)",
                    i.phase, i.updates, i.files
                ));
            }
            ImportEvent::Done => {
                if let Some(pb) = shown.take() {
                    pb.finish_and_clear();
                }
            }
        }
    })
}

/// A bar for re-hashing `len` bytes of stored files.
pub fn verifying(len: u64) -> ProgressBar {
    bar(len, BYTES, "verifying")
}

/// A spinner for work of unknown length (its message says how far it got).
pub fn spinner(prefix: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} {spinner} {elapsed} {msg}")
            .expect("valid template"),
    );
    pb.set_prefix(prefix.to_owned());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Follows the server's downloads until none is left: one bar for the
/// background (at-sync, prefetch) files, one per download in progress.
pub async fn watch(client: &AdminClient) -> anyhow::Result<()> {
    let multi = MultiProgress::new();
    let background = multi.add(bar(0, FILES, "background"));
    let mut fetches: HashMap<String, ProgressBar> = HashMap::new();
    loop {
        let status = client.status().await?;
        let b = &status.background;
        background.set_length(b.files_queued);
        background.set_position(b.files_done);
        background.set_message(format!(
            "{} failed, {} MB",
            b.files_failed,
            b.bytes_done / 1_000_000
        ));
        for f in &status.fetches {
            let pb = fetches
                .entry(f.sha1.clone())
                .or_insert_with(|| multi.add(bar(f.bytes_total.unwrap_or(0), BYTES, "fetching")));
            pb.set_length(f.bytes_total.unwrap_or(f.bytes_done));
            pb.set_position(f.bytes_done);
            pb.set_message(format!("{} ({} clients)", f.name, f.clients));
        }
        fetches.retain(|sha1, pb| {
            let running = status.fetches.iter().any(|f| &f.sha1 == sha1);
            if !running {
                pb.finish_and_clear();
            }
            running
        });
        if status.fetches.is_empty() && b.files_done >= b.files_queued {
            background.finish();
            println!(
                "no downloads in progress; background: {}/{} files, {} failed, {} bytes",
                b.files_done, b.files_queued, b.files_failed, b.bytes_done
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
