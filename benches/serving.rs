//! Warm-store serving, measured in-process: routing, catalog lookup, policy,
//! range resolution, response building and body delivery of mapped bytes.
//! Also the parsers on the request path and the ingest hashing path.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http_body_util::BodyExt;
use upcache::catalog::{Catalog, UpdateState};
use upcache::demo::SampleFile;
use upcache::fetch::{FetchSettings, Fetcher};
use upcache::http::content::ContentService;
use upcache::store::{DiskStore, Expected, Storage};
use upcache::telemetry::metrics::Metrics;
use upcache::upkeep::quota::Quota;

const FILE_SIZE: usize = 64 << 20;
const RANGE: u64 = 64 * 1024;

struct Warm {
    _dir: tempfile::TempDir,
    service: ContentService,
    path: String,
}

/// A store holding one approved 64 MiB file, as after a first download.
fn warm_store() -> Warm {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path(), 1024).unwrap();
    let catalog = Catalog::open(dir.path(), store.clone()).unwrap();
    let file = SampleFile::generate("5034122", "msu", FILE_SIZE);
    let doc = serde_json::json!({"updates": [{
        "id": "bench-1", "title": "bench", "files": [{
            "name": file.name, "sha1": file.sha1.to_hex(), "size": FILE_SIZE,
            "url": format!("http://upstream.invalid{}", file.path)}]}]});
    catalog
        .import_json(doc.to_string().as_bytes(), false)
        .unwrap();
    catalog.set_state("bench-1", UpdateState::Approved).unwrap();
    let mut ingest = store.clone().begin_ingest().unwrap();
    ingest.write(&file.bytes).unwrap();
    let got = ingest
        .commit(&Expected {
            sha1: Some(file.sha1),
            ..Default::default()
        })
        .unwrap();
    catalog.record_stored(&file.sha1, &got);
    let metrics = Arc::new(Metrics::default());
    let quota = Quota::new(None, catalog.clone(), store.clone(), metrics.clone());
    let fetcher = Fetcher::new(
        store.clone(),
        catalog.clone(),
        quota,
        FetchSettings::default(),
        metrics.clone(),
        None,
    )
    .unwrap();
    Warm {
        _dir: dir,
        path: file.content_path(),
        service: ContentService {
            store,
            catalog,
            fetcher,
            metrics,
            access_log: None,
            validators: upcache::http::content::ValidatorCache::new(1024),
            delivery: None,
        },
    }
}

fn serving(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let warm = warm_store();
    let service = Arc::new(warm.service);
    let mut offset = 0u64;
    // Per-request cost: bodies are slices of the shared map, so "bytes per
    // second" here would only measure pointer hand-off; count requests.
    let mut g = c.benchmark_group("serve_warm");
    g.throughput(Throughput::Elements(1));
    g.bench_function("range_64KiB", |b| {
        b.iter(|| {
            offset = (offset + 7 * RANGE + 4093) % (FILE_SIZE as u64 - RANGE);
            let req = http::Request::get(&warm.path)
                .header("range", format!("bytes={}-{}", offset, offset + RANGE - 1))
                .body(())
                .unwrap();
            rt.block_on(async {
                let resp = service.handle(req).await;
                assert_eq!(resp.status(), 206);
                black_box(resp.into_body().collect().await.unwrap());
            })
        })
    });
    g.bench_function("whole_64MiB", |b| {
        b.iter(|| {
            let req = http::Request::get(&warm.path).body(()).unwrap();
            rt.block_on(async {
                let mut body = service.handle(req).await.into_body();
                let mut n = 0;
                while let Some(frame) = body.frame().await {
                    n += frame.unwrap().into_data().map_or(0, |d| d.len());
                }
                assert_eq!(n, FILE_SIZE);
            })
        })
    });
    g.finish();
}

fn parsers(c: &mut Criterion) {
    let path = "/c/msdownload/update/software/secu/2024/01/windows10.0-kb5034122-x64_0011223344556677889900aabbccddeeff00110a.msu";
    c.bench_function("route_parse_mu_path", |b| {
        b.iter(|| upcache::http::route::parse(black_box(path)))
    });
    c.bench_function("range_resolve_multi", |b| {
        b.iter(|| {
            upcache::http::range::resolve(
                black_box(Some("bytes=0-99,500-599,-100")),
                black_box(1 << 30),
            )
        })
    });
}

fn ingest(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path(), 16).unwrap();
    let data = bytes::Bytes::from(vec![0x5au8; 16 << 20]);
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("write_and_hash_16MiB", |b| {
        // Timed: the writes only (creating the temp file and deleting it are not ingest work).
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                let mut ingest = store.clone().begin_ingest().unwrap();
                let t = std::time::Instant::now();
                // As the fetch path does: 1 MiB batches of upstream chunks.
                for batch in 0..16 {
                    let chunks = (0..4)
                        .map(|i| data.slice((batch * 4 + i) << 18..(batch * 4 + i + 1) << 18))
                        .collect();
                    ingest.write_chunks(chunks).unwrap();
                }
                total += t.elapsed();
                drop(ingest); // temp file removed, nothing published
            }
            total
        })
    });
    g.bench_function("sha1_alone_16MiB", |b| {
        use sha1::Digest;
        b.iter(|| sha1::Sha1::digest(black_box(&data[..])))
    });
    g.bench_function("sha256_alone_16MiB", |b| {
        use sha2::Digest;
        b.iter(|| sha2::Sha256::digest(black_box(&data[..])))
    });
    g.finish();
}

/// The policy decision's lookup with a large catalog: 100,000 files.
fn catalog_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path(), 16).unwrap();
    let catalog = Catalog::open(dir.path(), store).unwrap();
    let sha1s: Vec<upcache::digest::Sha1Digest> = (0..100_000u32)
        .map(|i| {
            use sha1::Digest;
            upcache::digest::Sha1Digest::from_slice(&sha1::Sha1::digest(i.to_le_bytes())).unwrap()
        })
        .collect();
    let updates: Vec<_> = sha1s
        .chunks(4)
        .enumerate()
        .map(|(i, files)| {
            serde_json::json!({"id": format!("u-{i}"), "title": format!("update {i}"), "files": files.iter().map(|d| serde_json::json!({
                "name": format!("f_{d}.cab"), "sha1": d.to_hex(), "size": 1000,
                "url": format!("http://upstream.invalid/f_{d}.cab")})).collect::<Vec<_>>()})
        })
        .collect();
    let doc = serde_json::json!({ "updates": updates }).to_string();
    catalog.import_json(doc.as_bytes(), false).unwrap();
    let mut i = 0;
    c.bench_function("catalog_lookup_100k_files", |b| {
        b.iter(|| {
            i = (i + 7919) % sha1s.len();
            black_box(catalog.lookup_sha1(&sha1s[i]))
        })
    });
}

criterion_group!(benches, serving, parsers, ingest, catalog_lookup);
criterion_main!(benches);
