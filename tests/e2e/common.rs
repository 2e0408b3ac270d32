//! The harness: a real upstream on loopback, a real upcache on ephemeral
//! ports with a temp data dir, and an HTTP client.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use reqwest::Method;
use serde_json::{json, Value};
use upcache::config::Config;
use upcache::demo::upstream::Upstream;
use upcache::demo::{update_json, SampleFile};
use upcache::net::tls::TlsFiles;
use upcache::server::{self, Running};

pub const ID_A: &str = "00000000-0000-4000-8000-00000000000a";
pub const ID_B: &str = "00000000-0000-4000-8000-00000000000b";
pub const ID_C: &str = "00000000-0000-4000-8000-00000000000c";
pub const ID_D: &str = "00000000-0000-4000-8000-00000000000d";

pub struct Harness {
    pub upstream: Upstream,
    pub server: Option<Running>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    /// Files of updates A (big), B (small) and C (small).
    pub a: SampleFile,
    pub b: SampleFile,
    pub c: SampleFile,
    config: Config,
}

impl Harness {
    /// Starts a server sync through the admin API and waits for its report.
    pub async fn sync_from_server(&self, upstream: &str) -> Value {
        let before = self.admin_json("/api/v1/server-sync").await["last"]["started"]
            .as_i64()
            .unwrap_or(-1);
        let r = self
            .http
            .post(self.admin("/api/v1/server-sync"))
            .json(&json!({ "upstream": upstream }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        let mut report = Value::Null;
        within("the sync's end", Duration::from_secs(60), async || {
            let s = self.admin_json("/api/v1/server-sync").await;
            let done =
                s["state"] == "idle" && s["last"]["started"].as_i64().unwrap_or(-1) >= before;
            if done {
                report = s["last"].clone();
            }
            done
        })
        .await;
        report
    }

    pub async fn new() -> Harness {
        Self::with(|_| {}).await
    }

    /// A harness whose server config is adjusted by `tweak`.
    pub async fn with(tweak: impl FnOnce(&mut Config)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::ephemeral(dir.path());
        tweak(&mut config);
        let upstream = Upstream::start().await.unwrap();
        let a = SampleFile::generate("5034122", "msu", 3 << 20);
        let b = SampleFile::generate("5034441", "cab", 100_000);
        let c = SampleFile::generate("5031455", "cab", 50_000);
        for f in [&a, &b, &c] {
            upstream.add(&f.path, f.bytes.clone());
        }
        let server = server::start(config.clone()).await.unwrap();
        Harness {
            upstream,
            server: Some(server),
            dir,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_gzip()
                .build()
                .unwrap(),
            a,
            b,
            c,
            config,
        }
    }

    pub fn running(&self) -> &Running {
        self.server.as_ref().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running().content_addr)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("{}{path}", self.running().admin_url)
    }

    /// The catalog of the three sample updates.
    pub fn catalog(&self) -> Value {
        json!({ "updates": [
            update_json(ID_A, "5034122", "2024-01 Cumulative Update (KB5034122)", &[&self.a], &self.upstream),
            update_json(ID_B, "5034441", "2024-01 Servicing Stack Update (KB5034441)", &[&self.b], &self.upstream),
            update_json(ID_C, "5031455", "Driver update (KB5031455)", &[&self.c], &self.upstream),
        ]})
    }

    /// [`Harness::catalog`] with each file's SHA-256 too, as WSUS sync
    /// metadata and an upstream upcache's catalog give it.
    pub fn catalog_declaring_sha256(&self) -> Value {
        let mut doc = self.catalog();
        let files = [&self.a, &self.b, &self.c];
        for (update, file) in doc["updates"].as_array_mut().unwrap().iter_mut().zip(files) {
            update["files"][0]["sha256"] = json!(file.sha256.to_hex());
        }
        doc
    }

    pub async fn import(&self, catalog: &Value) -> reqwest::Response {
        self.http
            .post(self.admin("/api/v1/catalog"))
            .json(catalog)
            .send()
            .await
            .unwrap()
    }

    /// Imports the sample catalog and approves `ids`.
    pub async fn setup(&self, ids: &[&str]) {
        let r = self.import(&self.catalog()).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        for id in ids {
            self.set_state(id, "approve").await;
        }
    }

    pub async fn set_state(&self, id: &str, action: &str) {
        let r = self
            .call(Method::POST, &format!("/api/v1/updates/{id}/{action}"))
            .await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    pub async fn set_policy(&self, policy: Value) {
        let r = self
            .http
            .put(self.admin("/api/v1/policy"))
            .json(&policy)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub async fn get_range(&self, path: &str, range: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("range", range)
            .send()
            .await
            .unwrap()
    }

    /// Asserts that `file` is served whole (its bytes are not printed:
    /// they are megabytes).
    pub async fn assert_serves(&self, file: &SampleFile) {
        let r = self.get(&file.content_path()).await;
        let (status, headers) = (r.status(), r.headers().clone());
        let body = r.bytes().await;
        let whole = body.as_ref().is_ok_and(|b| *b == file.bytes);
        assert!(
            whole,
            "{} not served whole: {status}, {headers:?}, {:?}",
            file.path,
            body.map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned())
        );
    }

    /// Sends a bodiless request to the admin API.
    pub async fn call(&self, method: Method, path: &str) -> reqwest::Response {
        self.http
            .request(method, self.admin(path))
            .send()
            .await
            .unwrap()
    }

    /// GET on the admin API, as JSON.
    pub async fn admin_json(&self, path: &str) -> Value {
        self.call(Method::GET, path).await.json().await.unwrap()
    }

    /// Content requests answered with `outcome` (hit, miss, coalesced, ...).
    pub async fn content_requests(&self, outcome: &str) -> u64 {
        let series = format!("upcache_content_requests_total{{outcome=\"{outcome}\"}}");
        self.counter(&series).await
    }

    /// The value of one series of `/metrics` (0 if absent).
    pub async fn counter(&self, series: &str) -> u64 {
        let text = self
            .call(Method::GET, "/metrics")
            .await
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map_or(0, |n| n.parse().unwrap())
    }

    /// POST raw bytes to the admin API.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: &'static str,
    ) -> reqwest::Response {
        let req = self
            .http
            .post(self.admin(path))
            .header("content-type", content_type);
        req.body(body).send().await.unwrap()
    }

    pub async fn status(&self) -> Value {
        self.admin_json("/api/v1/status").await
    }

    /// Stops the server and starts a new one on the same data directory.
    pub async fn restart(&mut self) {
        self.server.take().unwrap().shutdown().await;
        self.restart_stopped().await;
    }

    /// Restarts with a changed configuration (or starts, if stopped).
    pub async fn restart_with(&mut self, tweak: impl FnOnce(&mut Config)) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        tweak(&mut self.config);
        self.restart_stopped().await;
    }

    /// Starts the server again after it was taken down. A process another
    /// test spawns meanwhile holds a copy of every descriptor of this one,
    /// the old server's data lock included, from its fork until its exec
    /// (brief, but not on a loaded machine): a lock still held is tried
    /// again for a few seconds.
    pub async fn restart_stopped(&mut self) {
        for _ in 0..50 {
            match server::start(self.config.clone()).await {
                Err(server::StartError::Lock(upcache::store::LockError::Held { .. })) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                started => {
                    self.server = Some(started.expect("restart"));
                    return;
                }
            }
        }
        panic!("the data directory's lock was still held 5 s after shutdown");
    }

    /// Digests published in the store.
    pub fn stored(&self) -> Vec<upcache::digest::Sha256Digest> {
        self.running().app.store.published()
    }

    /// Polls `cond` for up to 10 s.
    pub async fn eventually(&self, what: &str, mut cond: impl FnMut(&Harness) -> bool) {
        for _ in 0..200 {
            if cond(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for: {what}");
    }

    /// Sends raw request bytes (paths that HTTP clients would normalise) and
    /// returns the status code.
    pub async fn raw_status(&self, request_line_path: &str) -> u16 {
        let mut s = TcpStream::connect(self.running().content_addr)
            .await
            .unwrap();
        let req =
            format!("GET {request_line_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "no answer for {request_line_path}");
        let out = String::from_utf8_lossy(&out);
        out.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until no download is running (they commit after the last byte is sent).
    pub async fn settled(&self) {
        self.eventually("downloads finished", |h| {
            h.running().app.fetcher.status().is_empty()
        })
        .await;
    }
}

/// [`spawn_server`] off the async threads.
pub async fn start_binary(data_dir: &Path) -> Server {
    let dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || spawn_server(&dir))
        .await
        .unwrap()
}

/// The real binary, serving on ephemeral ports.
pub struct Server {
    pub child: Child,
    pub content: String,
    pub admin: String,
}

/// A server a test forgot to stop is stopped with it (no process outlives the suite).
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `upcache serve` on ephemeral ports and reads its addresses.
pub fn spawn_server(data_dir: &Path) -> Server {
    spawn_server_with(data_dir, Stdio::null())
}

/// `serve` on ephemeral loopback ports over `data_dir`.
pub fn serve_args(data_dir: &Path) -> Vec<String> {
    let dir = data_dir.to_str().expect("a UTF-8 temp path");
    [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--data-dir",
        dir,
    ]
    .map(String::from)
    .to_vec()
}

/// [`spawn_server`] with its log (stderr, at info level) going to `log`.
pub fn spawn_server_with(data_dir: &Path, log: Stdio) -> Server {
    spawn_server_args(data_dir, &[], log)
}

/// [`spawn_server_with`] with `extra` arguments to `serve`.
pub fn spawn_server_args(data_dir: &Path, extra: &[&str], log: Stdio) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_upcache"))
        .args(serve_args(data_dir))
        .args(extra)
        .env("RUST_LOG", "upcache=info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let urls: Vec<&str> = line
        .split_whitespace()
        .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
        .collect();
    assert_eq!(urls.len(), 2, "unexpected banner: {line:?}");
    Server {
        child,
        content: urls[0].to_owned(),
        admin: urls[1].to_owned(),
    }
}

/// What one run of the CLI printed.
pub struct CliOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the real binary with `args` and `env` off the async threads, with
/// no admin token inherited from the environment.
pub async fn run_cli(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_upcache"))
            .args(&args)
            .env_remove("UPCACHE_ADMIN_TOKEN")
            .envs(env)
            .output()
            .unwrap();
        CliOutput {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

impl Server {
    /// GET `path` on this binary's content listener, the whole body.
    pub async fn body(&self, path: &str) -> bytes::Bytes {
        let url = format!("{}{path}", self.content);
        reqwest::get(url).await.unwrap().bytes().await.unwrap()
    }

    /// Imports the harness's sample catalog into this binary and approves `ids`.
    pub async fn setup(&self, h: &Harness, ids: &[&str]) {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{}/api/v1/catalog", self.admin))
            .json(&h.catalog())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        for id in ids {
            let r = http
                .post(format!("{}/api/v1/updates/{id}/approve", self.admin))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
}

/// Says that a test is skipped for want of `tool` (installed by `install`).
/// In CI, which installs every tool, the absence fails the test instead.
pub fn skipped_without(tool: &str, install: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must install {tool} ({install})"
    );
    eprintln!("SKIPPED: {tool} is not installed ({install})");
}

/// A small tmpfs (needs root, as CI has), unmounted when dropped.
pub struct TinyDisk(tempfile::TempDir);

impl TinyDisk {
    /// A harness whose data directory is a fresh tmpfs of `size`, with the
    /// disk reserve set to `reserve`; `None` (and a SKIPPED line) where a
    /// tmpfs cannot be mounted (not root).
    pub async fn harness(size: &str, reserve: u64) -> Option<(Harness, TinyDisk)> {
        let Some(disk) = TinyDisk::mount(size) else {
            eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
            return None;
        };
        let data = disk.path().to_owned();
        let h = Harness::with(|c| {
            c.store.data_dir = data;
            c.fetch.disk_reserve = reserve;
        })
        .await;
        Some((h, disk))
    }

    pub fn mount(size: &str) -> Option<TinyDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(TinyDisk(dir))
    }

    pub fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// Polls `check` until it holds; returns how long that took.
pub async fn within(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within {limit:?}");
}

/// Sets every stored file's time back by `ago`, as if published then (an
/// online cleanup leaves files published in the last minute alone).
pub fn age_store(h: &Harness, ago: std::time::Duration) {
    let store = &h.running().app.store;
    for d in store.published() {
        let file = std::fs::File::open(store.path_of(&d)).unwrap();
        file.set_modified(std::time::SystemTime::now() - ago)
            .unwrap();
    }
}

/// A private CA and, signed by it, a certificate for `127.0.0.1` and
/// `localhost`, as PEM files in `dir` named after `name`.
pub struct Pki {
    pub ca: PathBuf,
    pub files: TlsFiles,
}

/// When every test certificate expires: 30 days after the first call, to
/// the second, the same for the whole run (a test that compares it with a
/// certificate made earlier must not see the clock tick in between).
pub fn leaf_expiry() -> time::OffsetDateTime {
    static EXPIRY: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let at = *EXPIRY.get_or_init(|| time::OffsetDateTime::now_utc().unix_timestamp() + 30 * 86_400);
    time::OffsetDateTime::from_unix_timestamp(at).unwrap()
}

pub fn private_ca(dir: &Path, name: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    leaf.not_after = leaf_expiry();
    let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    let pki = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        files: TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        },
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.files.cert, leaf.pem()).unwrap();
    std::fs::write(&pki.files.key, key.serialize_pem()).unwrap();
    pki
}

/// A client that trusts `ca` (and no longer follows redirects, as the
/// harness's own).
pub fn trusting(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}
