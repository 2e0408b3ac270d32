//! How much `xpress` saves on a page, and what it costs: reads a file (a
//! `SyncUpdates` page written by `scan_storm` with `SCAN_STORM_PAGE=FILE`,
//! or any answer), encodes it as upcache sends it to a client that asks
//! (`Accept-Encoding: xpress`), checks that it decodes back, and prints the
//! sizes and the median encode and decode times of 50 rounds.
//!
//! Usage: `cargo run --release --example xpress_page -- FILE`.

use std::time::{Duration, Instant};

use upcache::wsus::client::xpress::{decode, encode};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: xpress_page FILE"))?;
    let plain = std::fs::read(&path)?;
    let packed = encode(&plain);
    anyhow::ensure!(
        decode(&packed, plain.len())? == plain,
        "the encoded page does not decode back"
    );
    let (mut enc, mut dec) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        let t = Instant::now();
        std::hint::black_box(encode(std::hint::black_box(&plain)));
        enc.push(t.elapsed());
        let t = Instant::now();
        std::hint::black_box(decode(std::hint::black_box(&packed), plain.len())?);
        dec.push(t.elapsed());
    }
    println!(
        "{path}: {} bytes, {} with xpress ({:.1} %); encode {:.2} ms, decode {:.2} ms (median of 50)",
        plain.len(),
        packed.len(),
        packed.len() as f64 * 100.0 / plain.len().max(1) as f64,
        median(enc).as_secs_f64() * 1e3,
        median(dec).as_secs_f64() * 1e3,
    );
    Ok(())
}
