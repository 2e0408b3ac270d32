//! Offline maintenance of a data directory: `verify` and `gc`. They open the
//! store (and catalog) directly, so they work with the server stopped; with
//! it running they are safe too: the server notices a file that vanished
//! and fetches it again.

use std::path::Path;

use anyhow::Context;

use crate::catalog::Catalog;
use crate::store::DiskStore;

/// Re-hashes every stored file; bad ones go to quarantine. Fails if any was bad.
pub fn verify(data_dir: &Path) -> anyhow::Result<()> {
    let store = DiskStore::open_existing(data_dir)?;
    let _lock = crate::store::DataLock::acquire(data_dir)?;
    let digests = store.published();
    let sizes: Vec<u64> = digests
        .iter()
        .map(|d| store.size_of(d).unwrap_or(0))
        .collect();
    let bar = super::progress::verifying(sizes.iter().sum());
    let (mut good, mut bad) = (0u64, 0u64);
    for (d, size) in digests.iter().zip(sizes) {
        bar.set_message(format!("{} of {} files", good + bad, digests.len()));
        if store.verify(d)? {
            good += 1;
        } else {
            let to = match store.quarantine_published(d)? {
                Some(path) => format!("moved to {}", path.display()),
                None => "deleted (larger than the quarantine holds)".into(),
            };
            // Printed even when the bar is hidden (not a terminal: cron, scripts).
            bar.suspend(|| println!("BAD  {d}: contents do not match the name; {to}"));
            bad += 1;
        }
        bar.inc(size);
    }
    bar.finish_and_clear();
    println!("verified {} files: {good} good, {bad} bad", digests.len());
    anyhow::ensure!(
        bad == 0,
        "{bad} stored files failed verification and were quarantined"
    );
    Ok(())
}

/// [`crate::upkeep::cleanup`] on a stopped server's data directory.
pub fn gc(data_dir: &Path, remove: bool) -> anyhow::Result<()> {
    let store = DiskStore::open_existing(data_dir)?;
    let _lock = crate::store::DataLock::acquire(data_dir)?;
    let catalog = Catalog::open(data_dir, store.clone()).context("opening the catalog")?;
    // Nothing is downloading: no file is too fresh to judge.
    // DO objects are bounded by do_max_bytes, not by the catalog: kept.
    let keep = crate::delivery::index::Index::open(data_dir, &*store)
        .context("opening the Delivery Optimization index")?
        .sha256s();
    let report =
        crate::upkeep::cleanup::run(&store, &catalog, &keep, remove, std::time::Duration::ZERO);
    super::print::print_cleanup(&report, false);
    Ok(())
}
