//! Imports a `package.xml` into a fresh catalog and reports what it cost:
//! wall time of the first import and of a no-op re-import, peak RSS, and
//! the cost of the request path's policy lookup on a catalog of this size.
//!
//! Usage: `import_package_xml PACKAGE.xml [DATA_DIR]`
//! (pair with `gen_package_xml 500000 package.xml`).

use std::io::BufReader;
use std::time::Instant;

use upcache::catalog::Catalog;
use upcache::digest::Sha1Digest;
use upcache::store::DiskStore;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(xml) = args.get(1) else {
        eprintln!("usage: import_package_xml PACKAGE.xml [DATA_DIR]");
        std::process::exit(2);
    };
    let scratch = tempfile::tempdir()?;
    let data_dir = args
        .get(2)
        .map_or_else(|| scratch.path().to_path_buf(), Into::into);
    let store = DiskStore::open(&data_dir, 64)?;
    let catalog = Catalog::open(&data_dir, store)?;

    for run in ["first import", "re-import"] {
        let started = Instant::now();
        let file = BufReader::with_capacity(1 << 20, std::fs::File::open(xml)?);
        let report = catalog.import_package_xml(file)?;
        println!("{run}: {:.1} s ({report})", started.elapsed().as_secs_f64());
    }
    println!("peak RSS: {} MiB", peak_rss_kib() / 1024);

    let sample: Vec<Sha1Digest> = catalog
        .missing_where(|_| true)
        .into_iter()
        .take(100_000)
        .collect();
    let started = Instant::now();
    let mut found = 0;
    for _ in 0..10 {
        for sha1 in &sample {
            found += usize::from(catalog.lookup_sha1(sha1).is_some());
        }
    }
    let per = started.elapsed() / found.max(1) as u32;
    println!("policy lookup: {per:?} per request ({found} lookups)");
    Ok(())
}

/// `VmHWM` of /proc/self/status: the most resident memory this process had.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
