//! A scan storm: many simulated Windows clients run the whole [MS-WUSP]
//! sequence at once against the real `upcache` binary holding a catalog
//! of 25,000 revisions, as on a Patch Tuesday morning.
//!
//! Usage: `scan_storm [--clients N] [--seconds S] [--revisions R]
//! [--xpress true]` (defaults 64, 20, 25000, false), after
//! `cargo build --release --bin upcache --example scan_storm`.
//!
//! The catalog is `sync_bench`'s generated upstream (`benches/sync/generator.rs`),
//! written straight into a metadata store and projected into the catalog,
//! spread over 20 products. Each client is a machine of one product that
//! scanned last month: it reports the classification and its product
//! installed, holds every other revision it was offered in its cache
//! (~1,250 ids, as a real client's ~1,340), and this month's 30 updates of
//! its product are new and approved. One scan, each a new computer id:
//!
//! GetConfig → GetAuthorizationCookie → GetCookie → RegisterComputer →
//! StartCategoryScan → SyncUpdates (the 30 new updates, `Install`) →
//! the driver pass (`SkipSoftwareSync` + `SystemSpec`) →
//! GetExtendedUpdateInfo (the 30) → GetFileLocations → the download of a
//! 64 KiB file through upcache → ReportEventBatch (3 events).
//!
//! With `SCAN_STORM_PAGE=FILE`, the first `SyncUpdates` page (30 updates)
//! is written to FILE. With `--xpress true` every SOAP call sends
//! `Accept-Encoding: xpress`, as a Windows client does, and each answer is
//! decoded with upcache's decoder; the bytes on the wire and decoded are
//! printed.
//!
//! Printed: complete scans per second, each SOAP call's p50/p99/max (as the
//! clients saw them, queueing included), the server's CPU seconds per scan
//! (`/proc/PID/stat`, so other load on the machine does not count) and its
//! peak RSS (`VmHWM`). Clients and server share the machine's cores.

#[path = "../sync/generator.rs"]
mod generator;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha1::Digest as _;

use generator::{category, document_in, update_id, Payload, CLASSIFICATION, PRODUCT};
use upcache::catalog::{Catalog, UpdateState};
use upcache::metadata::store::{FileUrl, Incoming};
use upcache::metadata::MetaStore;
use upcache::store::DiskStore;

const PRODUCTS: usize = 20;
const NEW_PER_PRODUCT: usize = 30;
const PAYLOAD: usize = 64 << 10;
const MU_BASE: &str = "http://download.windowsupdate.com";
const PAYLOAD_PATH: &str =
    "/c/msdownload/update/software/secu/2026/12/windows11.0-kb5099999-x64_storm.cab";
const CLIENT_NS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService";
const AUTH_NS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/SimpleAuthWebService";
const REPORTING_NS: &str = "http://www.microsoft.com/SoftwareDistribution";

struct Args {
    clients: usize,
    seconds: u64,
    revisions: usize,
    xpress: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        clients: 64,
        seconds: 20,
        revisions: 25_000,
        xpress: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair
            .get(1)
            .ok_or_else(|| anyhow::anyhow!("{} needs a value", pair[0]))?;
        match pair[0].as_str() {
            "--clients" => a.clients = value.parse()?,
            "--seconds" => a.seconds = value.parse()?,
            "--revisions" => a.revisions = value.parse()?,
            "--xpress" => a.xpress = value.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn product_id(p: usize) -> String {
    if p == 0 {
        PRODUCT.to_owned()
    } else {
        format!("cccccccc-0000-4000-8000-{p:012x}")
    }
}

/// What the clients of one product send and expect.
struct ProductPlan {
    installed: String,
    cached: String,
    new_rids: Vec<i64>,
}

struct Layout {
    plans: Vec<ProductPlan>,
    payload: Vec<u8>,
    payload_sha1: String,
}

/// Writes the generated catalog into `dir`: metadata, catalog, approvals.
fn fill(dir: &Path, revisions: usize) -> anyhow::Result<Layout> {
    let started = Instant::now();
    let payload: Vec<u8> = (0..PAYLOAD as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let file = Payload {
        sha1: b64(&sha1::Sha1::digest(&payload)),
        sha256: b64(&sha2::Sha256::digest(&payload)),
        size: payload.len() as u64,
        name: "windows11.0-kb5099999-x64_storm.cab".into(),
    };
    let meta = MetaStore::open(dir)?;
    let mut docs = vec![(
        category(CLASSIFICATION, "Security Updates", "UpdateClassification"),
        false,
    )];
    for p in 0..PRODUCTS {
        docs.push((
            category(&product_id(p), &format!("Product {p}"), "Product"),
            false,
        ));
    }
    let updates = revisions.saturating_sub(docs.len());
    // The newest updates of each product are this month's.
    let is_new = |i: usize| i + NEW_PER_PRODUCT * PRODUCTS >= updates;
    for i in 0..updates {
        let id = update_id(i);
        let payload = is_new(i).then_some(&file);
        docs.push((
            document_in(&id, &product_id(i % PRODUCTS), payload).0,
            is_new(i),
        ));
    }
    let mut docs_bytes = 0;
    for batch in docs.chunks(500) {
        let incoming: Vec<Incoming> = batch
            .iter()
            .map(|(xml, _)| {
                docs_bytes += xml.len() as u64;
                Incoming {
                    info: upcache::metadata::update_xml::parse(xml.as_bytes(), "en")
                        .expect("generated documents parse"),
                    doc: xml.clone().into_bytes(),
                }
            })
            .collect();
        meta.write_batch(&incoming, &[])?;
    }
    let sha1 =
        upcache::digest::Sha1Digest::from_slice(&sha1::Sha1::digest(&payload)).expect("20 bytes");
    meta.write_batch(
        &[],
        &[FileUrl {
            sha1,
            mu_url: format!("{MU_BASE}{PAYLOAD_PATH}"),
            uss_url: String::new(),
        }],
    )?;
    let store = DiskStore::open(dir, 64)?;
    let catalog = Catalog::open(dir, store)?;
    upcache::metadata::project::project(&meta, &catalog, MU_BASE)?;
    let rid = |id: &str| -> anyhow::Result<i64> {
        meta.rid(id, 1)?
            .ok_or_else(|| anyhow::anyhow!("{id} not stored"))
    };
    let classification = rid(CLASSIFICATION)?;
    let product_rids: Vec<i64> = (0..PRODUCTS)
        .map(|p| rid(&product_id(p)))
        .collect::<Result<_, _>>()?;
    let mut plans = Vec::new();
    for p in 0..PRODUCTS {
        let mut cached: Vec<i64> = product_rids
            .iter()
            .enumerate()
            .filter(|(q, _)| *q != p)
            .map(|(_, r)| *r)
            .collect();
        let mut new_rids = Vec::new();
        for i in (p..updates).step_by(PRODUCTS) {
            let r = rid(&update_id(i))?;
            if is_new(i) {
                catalog.set_state(&update_id(i), UpdateState::Approved)?;
                new_rids.push(r);
            } else {
                cached.push(r);
            }
        }
        let ints = |v: &[i64]| {
            v.iter()
                .map(|r| format!("<int>{r}</int>"))
                .collect::<String>()
        };
        plans.push(ProductPlan {
            installed: ints(&[classification, product_rids[p]]),
            cached: ints(&cached),
            new_rids,
        });
    }
    println!(
        "catalog: {} revisions ({} updates, {} MB of XML), {} products, {} new approved updates; filled in {:.1} s",
        docs.len(),
        updates,
        docs_bytes >> 20,
        PRODUCTS,
        plans.iter().map(|p| p.new_rids.len()).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    Ok(Layout {
        plans,
        payload,
        payload_sha1: file.sha1,
    })
}

/// The server under test: the release binary beside this example.
fn spawn_server(dir: &Path, upstream: &str) -> anyhow::Result<(Child, String)> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("upcache"))
        .filter(|b| b.exists())
        .ok_or_else(|| anyhow::anyhow!("build it first: cargo build --release --bin upcache"))?;
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir)
        .args(["--upstream", upstream])
        .env("RUST_LOG", "upcache=warn")
        // Every simulated computer comes from 127.0.0.1: the per-address
        // cap (64) is for real networks, where each has its own.
        .env("UPCACHE_MAX_CONNECTIONS_PER_IP", "4096")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut banner = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut banner)?;
    let content = banner
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .ok_or_else(|| anyhow::anyhow!("no URL in the banner: {banner:?}"))?
        .trim_end_matches(['/', ',', ';'])
        .to_owned();
    Ok((child, content))
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the command: state is 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Latencies per operation, in microseconds.
#[derive(Default)]
struct Stats {
    calls: Mutex<HashMap<&'static str, Vec<u32>>>,
    scans: AtomicU64,
    failures: AtomicU64,
    first_failure: Mutex<Option<String>>,
    sync_page_bytes: AtomicU64,
    sync_page_wire_bytes: AtomicU64,
    /// SOAP answers' bytes as sent, and decoded.
    wire_bytes: AtomicU64,
    xml_bytes: AtomicU64,
}

impl Stats {
    fn record(&self, op: &'static str, took: Duration) {
        let us = took.as_micros().min(u32::MAX as u128) as u32;
        self.calls.lock().unwrap().entry(op).or_default().push(us);
    }

    fn fail(&self, what: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.first_failure.lock().unwrap().get_or_insert(what);
    }
}

fn envelope(inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>{inner}</s:Body></s:Envelope>"
    )
}

fn between<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(&body[start..end])
}

struct Machine<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    stats: &'a Stats,
    plan: &'a ProductPlan,
    layout: &'a Layout,
    n: u64,
    xpress: bool,
}

impl Machine<'_> {
    async fn soap(
        &self,
        op: &'static str,
        path: &str,
        ns: &str,
        inner: String,
    ) -> anyhow::Result<String> {
        let started = Instant::now();
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{ns}/{op}\""))
            .header(
                "User-Agent",
                "Windows-Update-Agent/1507.2601.30012.0 Client-Protocol/2.90",
            );
        if self.xpress {
            r = r.header("Accept-Encoding", "xpress");
        }
        let r = r.body(envelope(&inner)).send().await?;
        let status = r.status();
        let packed = r
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v == "xpress");
        let wire = r.bytes().await?;
        let body = match packed {
            true => upcache::wsus::client::xpress::decode(&wire, 64 << 20)?,
            false => wire.to_vec(),
        };
        self.stats.record(op, started.elapsed());
        let stats = self.stats;
        stats
            .wire_bytes
            .fetch_add(wire.len() as u64, Ordering::Relaxed);
        stats
            .xml_bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        if op == "SyncUpdates" {
            stats
                .sync_page_wire_bytes
                .fetch_max(wire.len() as u64, Ordering::Relaxed);
        }
        let body = String::from_utf8(body)?;
        anyhow::ensure!(
            status == 200,
            "{op}: {status}: {}",
            &body[..body.len().min(400)]
        );
        Ok(body)
    }

    async fn client(&self, op: &'static str, inner: String) -> anyhow::Result<String> {
        self.soap(
            op,
            "/ClientWebService/client.asmx",
            CLIENT_NS,
            format!("<{op} xmlns=\"{CLIENT_NS}\">{inner}</{op}>"),
        )
        .await
    }

    fn cookie(data: &str) -> String {
        format!("<cookie><Expiration>2026-12-08T16:03:35Z</Expiration><EncryptedData>{data}</EncryptedData></cookie>")
    }

    fn sync_parameters(&self, driver_pass: bool) -> String {
        let mut p = format!(
            "<parameters><ExpressQuery>false</ExpressQuery><InstalledNonLeafUpdateIDs>{}</InstalledNonLeafUpdateIDs>\
             <OtherCachedUpdateIDs>{}</OtherCachedUpdateIDs><SkipSoftwareSync>{driver_pass}</SkipSoftwareSync>\
             <NeedTwoGroupOutOfScopeUpdates>true</NeedTwoGroupOutOfScopeUpdates><AlsoPerformRegularSync>false</AlsoPerformRegularSync>",
            self.plan.installed, self.plan.cached
        );
        if driver_pass {
            p.push_str(
                "<SystemSpec><Device><HardwareIDs><string>PCI\\VEN_8086&amp;DEV_10D3&amp;SUBSYS_11001AF4</string>\
                 <string>PCI\\VEN_8086&amp;DEV_10D3</string></HardwareIDs><CompatibleIDs><string>PCI\\VEN_8086&amp;CC_0200</string>\
                 </CompatibleIDs></Device><Device><HardwareIDs><string>ROOT\\BasicDisplay</string></HardwareIDs></Device>\
                 <Device><HardwareIDs><string>ACPI\\VEN_PNP&amp;DEV_0303</string><string>*PNP0303</string></HardwareIDs></Device></SystemSpec>",
            );
        }
        p.push_str(
            "<ProductsParameters><SyncCurrentVersionOnly>false</SyncCurrentVersionOnly>\
             <DeviceAttributes>App=WU_OS;OSVersion=10.0.26200.8037;</DeviceAttributes></ProductsParameters></parameters>",
        );
        p
    }

    /// One complete scan.
    async fn scan(&self) -> anyhow::Result<()> {
        let id = format!("{:08x}-5c4a-4000-8000-{:012x}", std::process::id(), self.n);
        self.client(
            "GetConfig",
            "<protocolVersion>2.90</protocolVersion>".into(),
        )
        .await?;
        let auth = self
            .soap(
                "GetAuthorizationCookie",
                "/SimpleAuthWebService/SimpleAuth.asmx",
                AUTH_NS,
                format!(
                    "<GetAuthorizationCookie xmlns=\"{AUTH_NS}\"><clientId>{id}</clientId>\
                     <targetGroupName></targetGroupName><dnsName>pc-{}.storm.test</dnsName></GetAuthorizationCookie>",
                    self.n
                ),
            )
            .await?;
        let auth = between(&auth, "CookieData").ok_or_else(|| anyhow::anyhow!("no CookieData"))?;
        let body = self
            .client(
                "GetCookie",
                format!(
                    "<authCookies><AuthorizationCookie><PlugInId>SimpleTargeting</PlugInId><CookieData>{auth}</CookieData>\
                     </AuthorizationCookie></authCookies><oldCookie><Expiration>2026-12-08T15:03:36Z</Expiration></oldCookie>\
                     <lastChange>2026-12-08T13:17:07.59Z</lastChange><currentTime>2026-12-08T15:03:36Z</currentTime>\
                     <protocolVersion>2.90</protocolVersion>"
                ),
            )
            .await?;
        let mut cookie = between(&body, "EncryptedData")
            .ok_or_else(|| anyhow::anyhow!("no cookie"))?
            .to_owned();
        self.client(
            "RegisterComputer",
            format!(
                "{}<computerInfo><DnsName>pc-{}.storm.test</DnsName><OSMajorVersion>10</OSMajorVersion><OSMinorVersion>0</OSMinorVersion>\
                 <OSBuildNumber>26200</OSBuildNumber><OSServicePackMajorNumber>0</OSServicePackMajorNumber>\
                 <OSServicePackMinorNumber>0</OSServicePackMinorNumber><OSLocale>en-US</OSLocale>\
                 <ComputerManufacturer>QEMU</ComputerManufacturer><ComputerModel>Standard PC</ComputerModel>\
                 <ProcessorArchitecture>AMD64</ProcessorArchitecture><OSDescription>Windows 11 Pro</OSDescription></computerInfo>",
                Self::cookie(&cookie),
                self.n
            ),
        )
        .await?;
        self.client(
            "StartCategoryScan",
            format!(
                "{}<requestedCategories><CategoryRelationship><IndexOfAndGroup>0</IndexOfAndGroup>\
                 <CategoryId>{PRODUCT}</CategoryId></CategoryRelationship></requestedCategories>",
                Self::cookie(&cookie)
            ),
        )
        .await?;
        let page = self
            .client(
                "SyncUpdates",
                format!("{}{}", Self::cookie(&cookie), self.sync_parameters(false)),
            )
            .await?;
        let before = self
            .stats
            .sync_page_bytes
            .fetch_max(page.len() as u64, Ordering::Relaxed);
        // The first page, for measuring compression on it (docs/windows.md).
        if before == 0 {
            if let Ok(to) = std::env::var("SCAN_STORM_PAGE") {
                std::fs::write(to, &page)?;
            }
        }
        let offered = page.matches("<UpdateInfo>").count();
        let installs = page.matches("<Action>Install</Action>").count();
        anyhow::ensure!(
            offered == self.plan.new_rids.len() && installs == offered,
            "SyncUpdates offered {offered} ({installs} to install), expected {}",
            self.plan.new_rids.len()
        );
        anyhow::ensure!(between(&page, "Truncated") == Some("false"), "truncated");
        cookie = between(&page, "NewCookie")
            .and_then(|c| between(c, "EncryptedData"))
            .ok_or_else(|| anyhow::anyhow!("no NewCookie"))?
            .to_owned();
        let drivers = self
            .client(
                "SyncUpdates",
                format!("{}{}", Self::cookie(&cookie), self.sync_parameters(true)),
            )
            .await?;
        anyhow::ensure!(
            !drivers.contains("<UpdateInfo>"),
            "the driver pass offered something"
        );
        let ids: String = self
            .plan
            .new_rids
            .iter()
            .map(|r| format!("<int>{r}</int>"))
            .collect();
        let ext = self
            .client(
                "GetExtendedUpdateInfo",
                format!(
                    "{}<revisionIDs>{ids}</revisionIDs><infoTypes><XmlUpdateFragmentType>Extended</XmlUpdateFragmentType>\
                     <XmlUpdateFragmentType>LocalizedProperties</XmlUpdateFragmentType></infoTypes>\
                     <locales><string>en-US</string><string>en</string></locales>",
                    Self::cookie(&cookie)
                ),
            )
            .await?;
        anyhow::ensure!(ext.contains("<FileLocation>"), "no FileLocations");
        let locations = self
            .client(
                "GetFileLocations",
                format!(
                    "{}<fileDigests><base64Binary>{}</base64Binary></fileDigests>",
                    Self::cookie(&cookie),
                    self.layout.payload_sha1
                ),
            )
            .await?;
        let url = between(&locations, "Url")
            .ok_or_else(|| anyhow::anyhow!("no Url"))?
            .replace("&amp;", "&");
        let started = Instant::now();
        let r = self.http.get(&url).send().await?;
        anyhow::ensure!(r.status() == 200, "download: {}", r.status());
        let bytes = r.bytes().await?;
        self.stats.record("download", started.elapsed());
        anyhow::ensure!(
            bytes.len() == self.layout.payload.len(),
            "download: {} bytes",
            bytes.len()
        );
        let events: String = [183, 182, 184]
            .iter()
            .enumerate()
            .map(|(k, e)| {
                format!(
                    "<ReportingEvent><BasicData><TargetID><Sid>{id}</Sid></TargetID><SequenceNumber>{k}</SequenceNumber>\
                     <TimeAtTarget>2026-12-08T15:21:00Z</TimeAtTarget><EventInstanceID>{id}</EventInstanceID>\
                     <NamespaceID>1</NamespaceID><EventID>{e}</EventID><SourceID>1</SourceID>\
                     <UpdateID><UpdateID>{}</UpdateID><RevisionNumber>1</RevisionNumber></UpdateID>\
                     <Win32HResult>0</Win32HResult><AppName>AutomaticUpdates</AppName></BasicData>\
                     <ExtendedData><ReplacementStrings><string>2026-12 Cumulative Update</string></ReplacementStrings></ExtendedData>\
                     <PrivateData>Provider=Windows Update</PrivateData></ReportingEvent>",
                    update_id(0)
                )
            })
            .collect();
        let report = self
            .soap(
                "ReportEventBatch",
                "/ReportingWebService/ReportingWebService.asmx",
                REPORTING_NS,
                format!(
                    "<ReportEventBatch xmlns=\"{REPORTING_NS}\">{}<clientTime>2026-12-08T15:21:01Z</clientTime>\
                     <eventBatch>{events}</eventBatch></ReportEventBatch>",
                    Self::cookie(&cookie)
                ),
            )
            .await?;
        anyhow::ensure!(
            between(&report, "ReportEventBatchResult") == Some("true"),
            "report refused"
        );
        Ok(())
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at] as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let dir = tempfile::tempdir()?;
    let layout = Arc::new(fill(dir.path(), a.revisions)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let upstream = rt.block_on(upcache::demo::upstream::Upstream::start())?;
    upstream.add(PAYLOAD_PATH, bytes::Bytes::from(layout.payload.clone()));
    let (mut server, base) = spawn_server(dir.path(), &upstream.url(""))?;
    let pid = server.id();
    let result = rt.block_on(storm(&a, layout.clone(), base, pid));
    let _ = server.kill();
    let _ = server.wait();
    result
}

async fn storm(a: &Args, layout: Arc<Layout>, base: String, pid: u32) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(a.clients)
        .timeout(Duration::from_secs(60))
        .build()?;
    // Warm-up: one scan per product (the file is fetched once, the pages
    // are split once), not measured.
    let warm = Stats::default();
    for (p, plan) in layout.plans.iter().enumerate() {
        let m = Machine {
            http: &http,
            base: &base,
            stats: &warm,
            plan,
            layout: &layout,
            n: 1_000_000 + p as u64,
            xpress: a.xpress,
        };
        m.scan().await?;
    }
    let rss_before = status_kib(pid, "VmRSS:");
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_seconds(pid);
    let clients_cpu_before = cpu_seconds(std::process::id());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let xpress = a.xpress;
    for c in 0..a.clients {
        let (http, base, stats, stop, counter, layout) = (
            http.clone(),
            base.clone(),
            stats.clone(),
            stop.clone(),
            counter.clone(),
            layout.clone(),
        );
        tasks.spawn(async move {
            let plan = &layout.plans[c % PRODUCTS];
            while !stop.load(Ordering::Relaxed) {
                let m = Machine {
                    http: &http,
                    base: &base,
                    stats: &stats,
                    plan,
                    layout: &layout,
                    n: counter.fetch_add(1, Ordering::Relaxed),
                    xpress,
                };
                match m.scan().await {
                    Ok(()) => {
                        stats.scans.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => stats.fail(e.to_string()),
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let clients_cpu = cpu_seconds(std::process::id()) - clients_cpu_before;
    let scans = stats.scans.load(Ordering::Relaxed);
    println!(
        "{} clients, {:.1} s: {scans} complete scans, {:.1} scans/s; {} failed{}",
        a.clients,
        wall,
        scans as f64 / wall,
        stats.failures.load(Ordering::Relaxed),
        stats
            .first_failure
            .lock()
            .unwrap()
            .as_deref()
            .map(|f| format!(" (first: {f})"))
            .unwrap_or_default()
    );
    println!(
        "server: {:.2} CPU s in all, {:.2} CPU ms per scan; RSS {} MiB before, {} MiB after, peak {} MiB",
        cpu,
        cpu * 1000.0 / scans.max(1) as f64,
        rss_before / 1024,
        status_kib(pid, "VmRSS:") / 1024,
        status_kib(pid, "VmHWM:") / 1024
    );
    println!(
        "clients (this process): {:.2} CPU s, {:.2} CPU ms per scan",
        clients_cpu,
        clients_cpu * 1000.0 / scans.max(1) as f64
    );
    println!(
        "largest SyncUpdates page: {} KiB, {} KiB on the wire",
        stats.sync_page_bytes.load(Ordering::Relaxed) >> 10,
        stats.sync_page_wire_bytes.load(Ordering::Relaxed) >> 10
    );
    println!(
        "SOAP answers: {:.1} MiB on the wire, {:.1} MiB of XML (xpress {})",
        stats.wire_bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        stats.xml_bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        if a.xpress { "asked" } else { "not asked" }
    );
    let mut calls = std::mem::take(&mut *stats.calls.lock().unwrap());
    let mut all: Vec<u32> = Vec::new();
    let mut ops: Vec<&'static str> = calls.keys().copied().collect();
    ops.sort_unstable();
    println!(
        "{:<24} {:>8} {:>9} {:>9} {:>9}",
        "call", "count", "p50 ms", "p99 ms", "max ms"
    );
    for op in ops {
        let v = calls.get_mut(op).expect("listed");
        v.sort_unstable();
        if op != "download" {
            all.extend_from_slice(v);
        }
        println!(
            "{op:<24} {:>8} {:>9.2} {:>9.2} {:>9.2}",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.99),
            percentile(v, 1.0)
        );
    }
    all.sort_unstable();
    println!(
        "{:<24} {:>8} {:>9.2} {:>9.2} {:>9.2}",
        "every SOAP call",
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&all, 1.0)
    );
    Ok(())
}
