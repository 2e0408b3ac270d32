//! A full server sync of a generated upstream, then the incremental one:
//! wall time, documents, bytes and the syncing process's peak RSS.
//!
//! Then the same from upcache itself as the upstream: a server started
//! on the synced data directory, and a downstream (a child process, this
//! binary with `--downstream URL`) that syncs everything from it over
//! [MS-WSUSSS], then again.
//!
//! Usage: `sync_bench [REVISIONS]` (default 25000). The upstream runs in a
//! child process (this binary with `--upstream`), so the RSS is the
//! syncer's alone. Its documents are generated per request: most of a few
//! KB, some of hundreds of KB, one in a thousand of 4 MB (applicability
//! rules padded out), each with one file; documents under 1 MB travel as
//! `XmlUpdateBlobCompressed` (an MSZIP cabinet), larger ones as
//! `XmlUpdateBlob`, to keep the generator's own CPU (on the same two
//! cores) from dominating.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use base64::Engine as _;

use upcache::catalog::Catalog;
use upcache::metadata::MetaStore;
use upcache::store::DiskStore;
use upcache::wsus::sync::{self, SyncJob, SyncSettings, Tuning};

mod generator;

use generator::{document, update_id, CLASSIFICATION, PRODUCT};

const NS: &str = "http://www.microsoft.com/SoftwareDistribution";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--upstream") {
        let n = args[2].parse()?;
        return upstream(n);
    }
    if args.get(1).map(String::as_str) == Some("--downstream") {
        return downstream(&args[2]);
    }
    let n: usize = args.get(1).map_or(Ok(25_000), |a| a.parse())?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--upstream", &n.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut url = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut url)?;
    let url = url.trim().to_owned();

    let dir = tempfile::tempdir()?;
    let rt = runtime()?;
    sync_twice(&rt, dir.path(), &url, "")?;
    println!(
        "peak RSS of the syncing process: {} MiB",
        peak_rss_kib() / 1024
    );
    let db = std::fs::metadata(dir.path().join("catalog.sqlite3"))?.len();
    println!("catalog.sqlite3: {} MiB", db >> 20);
    let _ = child.kill();
    let _ = child.wait();

    // upcache as the upstream: a server on what was just synced.
    let server = rt.block_on(upcache::server::start(upcache::config::Config::ephemeral(
        dir.path(),
    )))?;
    let url = format!("http://{}", server.content_addr);
    let status = Command::new(std::env::current_exe()?)
        .args(["--downstream", &url])
        .status()?;
    rt.block_on(server.shutdown());
    anyhow::ensure!(status.success(), "the downstream failed");
    Ok(())
}

/// A downstream upcache's syncs from an upcache upstream at `url`, in
/// this (child) process so its RSS is its own.
fn downstream(url: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    sync_twice(&runtime()?, dir.path(), url, "from upcache: ")?;
    println!(
        "peak RSS of the downstream syncing process: {} MiB",
        peak_rss_kib() / 1024
    );
    Ok(())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// A first and an incremental sync from `url` into a catalog in `dir`,
/// each timed and printed (`label` names which side syncs).
fn sync_twice(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    url: &str,
    label: &str,
) -> anyhow::Result<()> {
    let store = DiskStore::open(dir, 64)?;
    let catalog = Catalog::open(dir, store)?;
    let meta = Arc::new(MetaStore::open(dir)?);
    let settings = SyncSettings {
        upstream_server: url.to_owned(),
        sync_products: vec![PRODUCT.into()],
        sync_classifications: vec![CLASSIFICATION.into()],
        ..SyncSettings::default()
    };
    for run in ["first sync", "incremental sync"] {
        let job = SyncJob {
            settings: settings.clone(),
            store: meta.clone(),
            catalog: Some(catalog.clone()),
            progress: Arc::new(Mutex::default()),
            tuning: Tuning::default(),
        };
        let started = Instant::now();
        let report = rt.block_on(sync::run(job));
        println!(
            "{label}{run}: {:.1} s; {} documents, {} MB of XML; {} failed; error {:?}",
            started.elapsed().as_secs_f64(),
            report.documents,
            report.bytes >> 20,
            report.failed.len(),
            report.error
        );
    }
    Ok(())
}

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

/// The generated upstream: serves until killed.
fn upstream(n: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app = Router::new()
            .route(
                "/ServerSyncWebService/ServerSyncWebService.asmx",
                post(move |h: HeaderMap, b: String| async move { answer(n, &h, &b) }),
            )
            .route(
                "/DssAuthWebService/DssAuthWebService.asmx",
                post(|| async {
                    envelope(
                        "<GetAuthorizationCookieResponse xmlns=\"http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService\">\
                         <GetAuthorizationCookieResult><PlugInId>DssTargeting</PlugInId><CookieData>QQ==</CookieData>\
                         </GetAuthorizationCookieResult></GetAuthorizationCookieResponse>",
                    )
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("http://{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

fn envelope(inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">\
         <soap:Body>{inner}</soap:Body></soap:Envelope>"
    )
}

fn between<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(&body[start..end])
}

fn answer(n: usize, headers: &HeaderMap, body: &str) -> String {
    let action = headers
        .get("SOAPAction")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_matches('"')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let inner = match action.as_str() {
        "GetAuthConfig" => format!(
            "<GetAuthConfigResponse xmlns=\"{NS}\"><GetAuthConfigResult><LastChange>2026-01-01T00:00:00Z</LastChange>\
             <AuthInfo><AuthPlugInInfo><PlugInID>DssTargeting</PlugInID><ServiceUrl>DssAuthWebService/DssAuthWebService.asmx</ServiceUrl>\
             </AuthPlugInInfo></AuthInfo></GetAuthConfigResult></GetAuthConfigResponse>"
        ),
        "GetCookie" => format!(
            "<GetCookieResponse xmlns=\"{NS}\"><GetCookieResult><Expiration>2099-01-01T00:00:00Z</Expiration>\
             <EncryptedData>Qw==</EncryptedData></GetCookieResult></GetCookieResponse>"
        ),
        "GetConfigData" => format!(
            "<GetConfigDataResponse xmlns=\"{NS}\"><GetConfigDataResult><MaxNumberOfUpdatesPerRequest>100</MaxNumberOfUpdatesPerRequest>\
             <NewConfigAnchor>c</NewConfigAnchor><LanguageUpdateList><ServerSyncLanguageData><LanguageID>1033</LanguageID>\
             <ShortLanguage>en</ShortLanguage></ServerSyncLanguageData></LanguageUpdateList></GetConfigDataResult></GetConfigDataResponse>"
        ),
        "GetRevisionIdList" => {
            let config = between(body, "GetConfig") == Some("true");
            let ids: Vec<String> = if between(body, "Anchor").is_some() {
                Vec::new()
            } else if config {
                vec![PRODUCT.to_owned(), CLASSIFICATION.to_owned()]
            } else {
                (0..n).map(update_id).collect()
            };
            let list: String = ids
                .iter()
                .map(|id| {
                    format!("<UpdateIdentity><UpdateID>{id}</UpdateID><RevisionNumber>1</RevisionNumber></UpdateIdentity>")
                })
                .collect();
            format!(
                "<GetRevisionIdListResponse xmlns=\"{NS}\"><GetRevisionIdListResult><Anchor>a</Anchor>\
                 <NewRevisions>{list}</NewRevisions></GetRevisionIdListResult></GetRevisionIdListResponse>"
            )
        }
        "GetUpdateData" => update_data(body),
        _ => String::new(),
    };
    envelope(&inner)
}

fn update_data(body: &str) -> String {
    let mut items = String::new();
    let mut urls = String::new();
    for part in body.split("<UpdateID>").skip(1) {
        let id = &part[..part.find('<').unwrap_or(0)];
        let (xml, sha1) = document(id);
        let blob = if xml.len() < (1 << 20) {
            let cab = upcache::wsus::sync::blob::pack(&xml);
            format!(
                "<XmlUpdateBlobCompressed>{}</XmlUpdateBlobCompressed>",
                base64::engine::general_purpose::STANDARD.encode(cab)
            )
        } else {
            format!(
                "<XmlUpdateBlob>{}</XmlUpdateBlob>",
                xml.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            )
        };
        items.push_str(&format!(
            "<ServerSyncUpdateData><Id><UpdateID>{id}</UpdateID><RevisionNumber>1</RevisionNumber></Id>{blob}</ServerSyncUpdateData>"
        ));
        if sha1.is_empty() {
            continue;
        }
        urls.push_str(&format!(
            "<ServerSyncUrlData><FileDigest>{sha1}</FileDigest>\
             <MUUrl>http://download.windowsupdate.com/c/msdownload/update/software/secu/2026/01/f_{id}.cab</MUUrl>\
             <UssUrl /></ServerSyncUrlData>"
        ));
    }
    format!(
        "<GetUpdateDataResponse xmlns=\"{NS}\"><GetUpdateDataResult><updates>{items}</updates>\
         <fileUrls>{urls}</fileUrls></GetUpdateDataResult></GetUpdateDataResponse>"
    )
}
