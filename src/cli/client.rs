//! A small client of the admin API, shared by the CLI subcommands and the demo.

use anyhow::{anyhow, Context};
use serde::de::DeserializeOwned;

use std::path::PathBuf;

use crate::admin::documents::{CabinetReport, DocumentsInfo, SkippedDocument};
use crate::admin::GroupInfo;
use crate::admin::{CleanupRequest, Status};
use crate::catalog::cabinet::DetailRead;
use crate::catalog::groups::Group;
use crate::catalog::rules::Rule;
use crate::catalog::{ImportReport, UpdateList, UpdateQuery, UpdateSummary};
use crate::fetch::RateLimit;
use crate::fleet::views::{ComputerDetail, ComputerList, ComputerQuery, UpdateStatus};
use crate::policy::Policy;
use crate::upkeep::cleanup::CleanupReport;
use crate::upkeep::scrub::{ScrubRequest, ScrubStatus};

/// How [`CabinetSink`] says the side that sends has stopped taking: its
/// own type inside the `io::Error`, never mistaken for the reader's own.
#[derive(Debug, thiserror::Error)]
#[error("the upload ended")]
struct UploadEnded;

fn upload_ended<T>(_: T) -> std::io::Error {
    std::io::Error::other(UploadEnded)
}

fn is_upload_ended(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<UploadEnded>())
}

/// How long a failed `package.xml` import waits for the cabinet's reader
/// to say why (its own error says more), which may be in the middle of
/// expanding a detail cabinet and stop only at its end.
const READER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Hands what `read_wsusscn2` reads to the tasks that send it.
struct CabinetSink {
    /// `package.xml`'s upload (until its end).
    xml: Option<tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>>,
    documents: tokio::sync::mpsc::Sender<(String, std::fs::File, DetailRead)>,
}

impl crate::catalog::cabinet::Wsusscn2Sink for CabinetSink {
    fn package_xml(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        let xml = self.xml.as_ref().expect("package.xml before its end");
        xml.blocking_send(Ok(bytes::Bytes::copy_from_slice(chunk)))
            .map_err(upload_ended)
    }

    fn package_end(&mut self) -> std::io::Result<()> {
        // The upload's body ends here.
        self.xml = None;
        Ok(())
    }

    fn documents(
        &mut self,
        cabinet: &str,
        lines: std::fs::File,
        read: DetailRead,
    ) -> std::io::Result<()> {
        self.documents
            .blocking_send((cabinet.to_owned(), lines, read))
            .map_err(upload_ended)
    }
}

/// What an import is doing, for whoever shows it.
#[derive(Debug)]
pub enum ImportEvent {
    /// The upload starts; `total` bytes (0: unknown).
    Uploading { total: u64 },
    /// This many more bytes were sent.
    Sent(u64),
    /// What the server reports of the import it runs.
    Server(crate::catalog::ImportStatus),
    /// The server answered.
    Done,
}

/// Where import progress goes (a terminal bar in the CLI; nothing in tests).
pub type Progress = std::sync::Arc<dyn Fn(ImportEvent) + Send + Sync>;

/// Whether `e` is a TLS handshake that failed on the server's certificate.
fn certificate_refused(e: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if matches!(
            c.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_))
        ) {
            return true;
        }
        // rustls's error travels wrapped in io::Errors, whose `source`
        // skips what they wrap.
        cause = match c.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => c.source(),
        };
    }
    false
}

/// For which computer group an approval is, and by when (as the admin API
/// takes them; none: `All Computers`, no deadline).
#[derive(Debug, Clone, Default, serde::Serialize, clap::Args)]
pub struct ForGroup {
    /// For this computer group only [default: All Computers]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// With an approval: install by then (YYYY-MM-DD or RFC 3339, UTC)
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
}

/// Where the admin API is and how to authenticate to it.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Admin API base URL
    #[arg(
        long = "admin",
        env = "UPCACHE_ADMIN",
        default_value = "http://127.0.0.1:8531"
    )]
    pub url: String,
    /// Bearer token for the admin API
    #[arg(long, env = "UPCACHE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed an https:// admin API's certificate
    /// (besides the system's roots)
    #[arg(long = "admin-ca", env = "UPCACHE_ADMIN_CA")]
    pub ca: Option<PathBuf>,
}

pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl AdminClient {
    pub fn new(args: &AdminArgs) -> anyhow::Result<AdminClient> {
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = &args.ca {
            builder = crate::net::pem::trust_roots_from(builder, ca).context("--admin-ca")?;
        }
        Ok(AdminClient {
            http: builder.build()?,
            base: args.url.trim_end_matches('/').to_owned(),
            token: args.token.clone(),
        })
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let body = self.execute(req).await?;
        serde_json::from_slice(&body).context("unexpected answer from the admin API")
    }

    /// Sends with the token; a non-2xx answer becomes its error message.
    async fn execute(&self, req: reqwest::RequestBuilder) -> anyhow::Result<bytes::Bytes> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|e| {
            if certificate_refused(&e) {
                anyhow::Error::new(e).context(format!(
                    "the admin API at {} has a certificate this client does not trust (a private CA: give its PEM file with --admin-ca)",
                    self.base
                ))
            } else if e.is_connect() {
                anyhow!(
                    "cannot reach the admin API at {} (is upcache serve running?)",
                    self.base
                )
            } else {
                anyhow::Error::new(e).context(format!("request to the admin API at {}", self.base))
            }
        })?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(anyhow!("{status}: {msg}"));
        }
        Ok(body)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Uploads a catalog, streamed from `file`; `progress` hears how much
    /// was sent and what the server is doing.
    pub async fn import(
        &self,
        file: tokio::fs::File,
        xml: bool,
        with_approvals: bool,
        progress: Progress,
    ) -> anyhow::Result<ImportReport> {
        use futures_util::StreamExt;
        let content_type = if xml {
            "application/xml"
        } else {
            "application/json"
        };
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        progress(ImportEvent::Uploading { total: len });
        let counted = progress.clone();
        let stream =
            tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).inspect(move |chunk| {
                if let Ok(c) = chunk {
                    counted(ImportEvent::Sent(c.len() as u64));
                }
            });
        let body = reqwest::Body::wrap_stream(stream);
        let path = if with_approvals {
            "/api/v1/catalog?with_approvals=true"
        } else {
            "/api/v1/catalog"
        };
        let req = self
            .http
            .post(self.url(path))
            .header("content-type", content_type)
            // Announced, so the server can refuse an oversized file at once.
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body);
        self.follow_import(self.send(req), &progress).await
    }

    /// Awaits an import, telling `progress` what the server is doing (it
    /// reads as it receives, then links, applies rules, commits, indexes).
    async fn follow_import(
        &self,
        import: impl std::future::Future<Output = anyhow::Result<ImportReport>>,
        progress: &Progress,
    ) -> anyhow::Result<ImportReport> {
        tokio::pin!(import);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tokio::select! {
                report = &mut import => {
                    progress(ImportEvent::Done);
                    return report;
                }
                _ = tick.tick() => {
                    if let Ok(Some(i)) = self.status().await.map(|s| s.import) {
                        progress(ImportEvent::Server(i));
                    }
                }
            }
        }
    }

    /// Imports `wsusscn2.cab` (or `package.cab`), reading it on a blocking
    /// thread in one pass where its order allows
    /// (`catalog::cabinet::read_wsusscn2`): its `package.xml` into the
    /// catalog, streamed to the server as it is decompressed; then, once
    /// the server has answered for it (`imported` hears), the update
    /// documents of each detail cabinet `index.xml` names, spooled to temp
    /// files and sent one request per cabinet, the next cabinet read while
    /// one is sent (`done` hears of each as the server answers). `None`:
    /// the cabinet has no `index.xml` (no detail cabinets).
    pub async fn import_cab(
        &self,
        path: PathBuf,
        progress: Progress,
        imported: &mut dyn FnMut(&ImportReport),
        done: &mut dyn FnMut(&CabinetReport),
    ) -> anyhow::Result<Option<Vec<CabinetReport>>> {
        let info: DocumentsInfo = self
            .send(self.http.get(self.url("/api/v1/documents")))
            .await?;
        progress(ImportEvent::Uploading { total: 0 });
        let (xml_tx, xml_rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
        let (docs_tx, mut docs_rx) =
            tokio::sync::mpsc::channel::<(String, std::fs::File, DetailRead)>(1);
        let reader = tokio::task::spawn_blocking(move || {
            let mut sink = CabinetSink {
                xml: Some(xml_tx),
                documents: docs_tx,
            };
            let result = crate::catalog::cabinet::read_wsusscn2(&path, &info.languages, &mut sink);
            if let (Err(e), Some(xml)) = (&result, &sink.xml) {
                let _ = xml.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
            }
            result
        });
        let stream = futures_util::stream::unfold(xml_rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let req = self
            .http
            .post(self.url("/api/v1/catalog"))
            .header("content-type", "application/xml")
            .body(reqwest::Body::wrap_stream(stream));
        let report = match self.follow_import(self.send(req), &progress).await {
            Ok(report) => report,
            Err(e) => {
                // The reader's own failure says more, when it has one.
                drop(docs_rx);
                match tokio::time::timeout(READER_GRACE, reader).await {
                    Ok(Ok(Err(r))) if !is_upload_ended(&r) => {
                        return Err(r).context("expanding the cabinet")
                    }
                    _ => return Err(e),
                }
            }
        };
        imported(&report);
        let mut reports = Vec::new();
        while let Some((name, lines, read)) = docs_rx.recv().await {
            let body = tokio_util::io::ReaderStream::with_capacity(
                tokio::fs::File::from_std(lines),
                256 << 10,
            );
            let req = self
                .http
                .post(self.url(&format!("/api/v1/documents?cabinet={}", urlencode(&name))))
                .header("content-type", "application/x-ndjson")
                .body(reqwest::Body::wrap_stream(body));
            let mut report: CabinetReport = self
                .send(req)
                .await
                .with_context(|| format!("sending the documents of {name}"))?;
            report.skipped.extend(
                read.skipped
                    .into_iter()
                    .map(|(rid, reason)| SkippedDocument { rid, reason }),
            );
            report.skipped.sort_by_key(|s| s.rid);
            done(&report);
            reports.push(report);
        }
        let read = reader.await?.context("reading the detail cabinets")?;
        Ok(read.had_index.then_some(reports))
    }

    /// The whole catalog with approval states, policy and rules (for a
    /// downstream sync, or `upcache export`). Streamed as it arrives.
    pub async fn export(&self) -> anyhow::Result<reqwest::Response> {
        let req = self.http.get(self.url("/api/v1/catalog"));
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = resp.status();
        anyhow::ensure!(status.is_success(), "{} answered {status}", self.base);
        Ok(resp)
    }

    /// Imports a catalog as another upcache exports it, streamed, and
    /// applies its approval states (downstream sync).
    pub async fn import_with_approvals(
        &self,
        export: reqwest::Response,
        progress: Progress,
    ) -> anyhow::Result<ImportReport> {
        progress(ImportEvent::Uploading { total: 0 });
        let req = self
            .http
            .post(self.url("/api/v1/catalog?with_approvals=true"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(export.bytes_stream()));
        self.follow_import(self.send(req), &progress).await
    }

    /// Uploads a JSON catalog held in memory.
    pub async fn import_json(&self, body: Vec<u8>) -> anyhow::Result<ImportReport> {
        let req = self
            .http
            .post(self.url("/api/v1/catalog"))
            .header("content-type", "application/json")
            .body(body);
        self.send(req).await
    }

    pub async fn set_state(&self, id: &str, action: &str) -> anyhow::Result<UpdateSummary> {
        self.set_state_for(id, action, &ForGroup::default()).await
    }

    /// [`Self::set_state`] for one computer group, with a deadline.
    pub async fn set_state_for(
        &self,
        id: &str,
        action: &str,
        group: &ForGroup,
    ) -> anyhow::Result<UpdateSummary> {
        let path = format!("/api/v1/updates/{}/{action}", urlencode(id));
        let mut req = self.http.post(self.url(&path));
        if group.group.is_some() || group.deadline.is_some() {
            req = req.json(group);
        }
        self.send(req).await
    }

    /// Changes every update a selector picks; returns how many changed.
    pub async fn set_state_where(
        &self,
        select: &super::Selector,
        action: &str,
        group: &ForGroup,
    ) -> anyhow::Result<u64> {
        let mut body = serde_json::to_value(select.query())?;
        body["action"] = action.into();
        if let Some(g) = &group.group {
            body["group"] = g.as_str().into();
        }
        if let Some(d) = &group.deadline {
            body["deadline"] = d.as_str().into();
        }
        let answer: serde_json::Value = self
            .send(self.http.post(self.url("/api/v1/approvals")).json(&body))
            .await?;
        Ok(answer["changed"].as_u64().unwrap_or(0))
    }

    pub async fn policy(&self) -> anyhow::Result<Policy> {
        self.send(self.http.get(self.url("/api/v1/policy"))).await
    }

    pub async fn set_policy(&self, policy: &Policy) -> anyhow::Result<Policy> {
        self.send(self.http.put(self.url("/api/v1/policy")).json(policy))
            .await
    }

    pub async fn rate_limit(&self) -> anyhow::Result<RateLimit> {
        self.send(self.http.get(self.url("/api/v1/upstream/rate-limit")))
            .await
    }

    pub async fn set_rate_limit(&self, bytes_per_sec: Option<u64>) -> anyhow::Result<RateLimit> {
        let limit = RateLimit { bytes_per_sec };
        self.send(
            self.http
                .put(self.url("/api/v1/upstream/rate-limit"))
                .json(&limit),
        )
        .await
    }

    /// Starts a scrub of the store at `bytes_per_sec` (`None`: no limit).
    pub async fn start_scrub(&self, bytes_per_sec: Option<u64>) -> anyhow::Result<ScrubStatus> {
        self.send(
            self.http
                .post(self.url("/api/v1/scrub"))
                .json(&ScrubRequest { bytes_per_sec }),
        )
        .await
    }

    pub async fn scrub_status(&self) -> anyhow::Result<ScrubStatus> {
        self.send(self.http.get(self.url("/api/v1/scrub"))).await
    }

    pub async fn stop_scrub(&self) -> anyhow::Result<ScrubStatus> {
        self.send(self.http.delete(self.url("/api/v1/scrub"))).await
    }

    /// Lists (or with `remove`, removes) the stored files no update needs.
    pub async fn cleanup(&self, asked: &CleanupRequest) -> anyhow::Result<CleanupReport> {
        self.send(self.http.post(self.url("/api/v1/cleanup")).json(asked))
            .await
    }

    /// Starts a server sync (from `upstream`, else the configured one).
    pub async fn start_server_sync(
        &self,
        upstream: Option<String>,
    ) -> anyhow::Result<crate::wsus::sync::service::RunningStatus> {
        let body = crate::wsus::sync::service::SyncRequest { upstream };
        self.send(self.http.post(self.url("/api/v1/server-sync")).json(&body))
            .await
    }

    pub async fn server_sync_status(
        &self,
    ) -> anyhow::Result<crate::wsus::sync::service::SyncStatus> {
        self.send(self.http.get(self.url("/api/v1/server-sync")))
            .await
    }

    pub async fn categories(&self) -> anyhow::Result<crate::wsus::sync::service::Categories> {
        self.send(self.http.get(self.url("/api/v1/categories")))
            .await
    }

    pub async fn select_categories(
        &self,
        selection: &crate::wsus::sync::Selection,
    ) -> anyhow::Result<crate::wsus::sync::service::Categories> {
        self.send(
            self.http
                .put(self.url("/api/v1/categories"))
                .json(selection),
        )
        .await
    }

    pub async fn status(&self) -> anyhow::Result<Status> {
        self.send(self.http.get(self.url("/api/v1/status"))).await
    }

    pub async fn updates(&self, query: &UpdateQuery) -> anyhow::Result<UpdateList> {
        self.send(self.http.get(self.url("/api/v1/updates")).query(query))
            .await
    }

    pub async fn rules(&self) -> anyhow::Result<Vec<Rule>> {
        self.send(self.http.get(self.url("/api/v1/rules"))).await
    }

    pub async fn add_rule(&self, rule: &Rule) -> anyhow::Result<Rule> {
        self.send(self.http.post(self.url("/api/v1/rules")).json(rule))
            .await
    }

    pub async fn computers(&self, q: &ComputerQuery) -> anyhow::Result<ComputerList> {
        self.send(self.http.get(self.url("/api/v1/computers")).query(q))
            .await
    }

    pub async fn computer(&self, id: &str) -> anyhow::Result<ComputerDetail> {
        let path = format!("/api/v1/computers/{}", urlencode(id));
        self.send(self.http.get(self.url(&path))).await
    }

    pub async fn set_groups(&self, id: &str, groups: &[String]) -> anyhow::Result<ComputerDetail> {
        let path = format!("/api/v1/computers/{}/groups", urlencode(id));
        let body = serde_json::json!({ "groups": groups });
        self.send(self.http.put(self.url(&path)).json(&body)).await
    }

    pub async fn groups(&self) -> anyhow::Result<Vec<GroupInfo>> {
        self.send(self.http.get(self.url("/api/v1/groups"))).await
    }

    pub async fn create_group(&self, name: &str) -> anyhow::Result<Group> {
        let body = serde_json::json!({ "name": name });
        self.send(self.http.post(self.url("/api/v1/groups")).json(&body))
            .await
    }

    pub async fn rename_group(&self, from: &str, to: &str) -> anyhow::Result<Group> {
        let path = format!("/api/v1/groups/{}", urlencode(from));
        let body = serde_json::json!({ "name": to });
        self.send(self.http.put(self.url(&path)).json(&body)).await
    }

    pub async fn delete_group(&self, name: &str) -> anyhow::Result<()> {
        let path = format!("/api/v1/groups/{}", urlencode(name));
        self.execute(self.http.delete(self.url(&path)))
            .await
            .map(drop)
    }

    pub async fn update_status(&self, id: &str) -> anyhow::Result<UpdateStatus> {
        let path = format!("/api/v1/updates/{}/status", urlencode(id));
        self.send(self.http.get(self.url(&path))).await
    }

    pub async fn remove_rule(&self, id: i64) -> anyhow::Result<()> {
        self.execute(self.http.delete(self.url(&format!("/api/v1/rules/{id}"))))
            .await
            .map(drop)
    }
}

/// Update ids are GUIDs, but ids typed by people may hold anything.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
