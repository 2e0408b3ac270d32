//! One conversation with an upstream over HTTP(S): the anonymous DSS
//! authorization, the cookie, and every call after it. A call that fails
//! for want of a good cookie (`InvalidCookie`, `CookieExpired`,
//! `InvalidAuthorizationCookie`) gets a new one and is sent again; a
//! transport error, an HTTP error without a fault, or `ServerBusy` is
//! retried after a pause. Every fault is kept, named, for the report.

use std::time::Duration;

use futures_util::StreamExt as _;

use super::messages::{self, Cookie};
use super::SyncError;
use crate::wsus::soap::{parse_envelope, Element, ErrorCode, SoapError};

/// The largest answer read (a `GetUpdateData` page of a real upstream
/// reached 51 MB).
pub const MAX_RESPONSE: usize = 256 << 20;
/// Attempts per call before it fails.
const ATTEMPTS: u32 = 3;

pub struct Session {
    http: reqwest::Client,
    base: String,
    account_name: String,
    account_guid: String,
    cookie: Option<Cookie>,
    pub retry_delay: Duration,
    /// Faults and transport errors met, in order, as logged.
    pub faults: Vec<String>,
}

impl Session {
    pub fn new(
        base: &str,
        account_name: &str,
        account_guid: &str,
        retry_delay: Duration,
        ca: Option<&std::path::Path>,
    ) -> Result<Session, SyncError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(600))
            .user_agent(concat!("upcache/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca {
            builder = crate::net::pem::trust_roots_from(builder, ca)
                .map_err(|e| SyncError::Setup(e.to_string()))?;
        }
        let http = builder
            .build()
            .map_err(|e| SyncError::Setup(e.to_string()))?;
        Ok(Session {
            http,
            base: base.trim_end_matches('/').to_owned(),
            account_name: account_name.to_owned(),
            account_guid: account_guid.to_owned(),
            cookie: None,
            retry_delay,
            faults: Vec::new(),
        })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            return path.to_owned();
        }
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// Posts one envelope and returns the answer: parsed whole, or
    /// spooled to a temporary file for a read piece by piece (a fault
    /// becomes an error either way).
    async fn post(
        &self,
        path: &str,
        action: &str,
        body: String,
        want: Want,
    ) -> Result<Got, SyncError> {
        let url = self.url(path);
        let resp = self
            .http
            .post(&url)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{action}\""))
            .body(body)
            .send()
            .await
            .map_err(|e| SyncError::Transport(format!("{url}: {e}")))?;
        let status = resp.status();
        if status.is_success() && want == Want::Spooled {
            return Ok(Got::Spooled(spool(resp, MAX_RESPONSE).await?));
        }
        let bytes = read_limited(resp, MAX_RESPONSE).await?;
        match parse_envelope(&bytes) {
            Err(SoapError::Fault(f)) => Err(SyncError::Fault(f)),
            _ if !status.is_success() => Err(SyncError::Transport(format!("{url}: HTTP {status}"))),
            Ok(op) => Ok(Got::Tree(op)),
            Err(e) => Err(SyncError::Soap(e)),
        }
    }

    /// Posts with retries for transport errors and `ServerBusy`.
    async fn post_retrying(
        &mut self,
        path: &str,
        action: &str,
        body: &str,
    ) -> Result<Element, SyncError> {
        match self
            .post_retrying_as(path, action, body, Want::Tree)
            .await?
        {
            Got::Tree(op) => Ok(op),
            Got::Spooled(_) => unreachable!("asked for a tree"),
        }
    }

    async fn post_retrying_as(
        &mut self,
        path: &str,
        action: &str,
        body: &str,
        want: Want,
    ) -> Result<Got, SyncError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.post(path, action, body.to_owned(), want).await {
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    self.note(&e);
                    tokio::time::sleep(self.retry_delay * attempt).await;
                }
                other => return other,
            }
        }
    }

    /// Records a fault or error for the report and the log.
    pub fn note(&mut self, e: &SyncError) {
        tracing::warn!(upstream = %self.base, "server sync: {e}");
        self.faults.push(e.to_string());
    }

    /// `GetAuthConfig`, `GetAuthorizationCookie` (DSS auth), `GetCookie`.
    async fn authenticate(&mut self) -> Result<Cookie, SyncError> {
        let op = self
            .post_retrying(
                messages::SYNC_PATH,
                &messages::action("GetAuthConfig"),
                &messages::get_auth_config(),
            )
            .await?;
        let plugins = messages::decode_auth_config(&op)?;
        // Anonymous server sync is the `DssTargeting` plug-in; any other is
        // tried last.
        let (plugin, service) = plugins
            .iter()
            .find(|(id, _)| id == "DssTargeting")
            .or(plugins.first())
            .cloned()
            .unwrap_or_else(|| ("DssTargeting".into(), messages::DSS_AUTH_PATH.into()));
        let service = if service.is_empty() {
            messages::DSS_AUTH_PATH.to_owned()
        } else {
            service
        };
        let body = messages::get_authorization_cookie(&self.account_name, &self.account_guid);
        let op = self
            .post_retrying(&service, &messages::dss_action(), &body)
            .await?;
        let (plugin_id, data) = messages::decode_authorization_cookie(&op)?;
        let plugin_id = if plugin_id.is_empty() {
            plugin
        } else {
            plugin_id
        };
        let body = messages::get_cookie(&plugin_id, &data);
        let op = self
            .post_retrying(messages::SYNC_PATH, &messages::action("GetCookie"), &body)
            .await?;
        Ok(messages::decode_cookie(&op)?)
    }

    /// Calls a server-sync operation with the cookie, renewing it when the
    /// upstream refuses it.
    pub async fn call(
        &mut self,
        op: &str,
        build: impl Fn(&Cookie) -> String,
    ) -> Result<Element, SyncError> {
        match self.call_as(op, build, Want::Tree).await? {
            Got::Tree(op) => Ok(op),
            Got::Spooled(_) => unreachable!("asked for a tree"),
        }
    }

    /// [`Session::call`] whose answer is left in a temporary file, to be
    /// read item by item (`soap::stream_items`): a `GetUpdateData` page is
    /// never held whole in memory.
    pub async fn call_spooled(
        &mut self,
        op: &str,
        build: impl Fn(&Cookie) -> String,
    ) -> Result<std::io::BufReader<std::fs::File>, SyncError> {
        match self.call_as(op, build, Want::Spooled).await? {
            Got::Spooled(f) => Ok(std::io::BufReader::with_capacity(256 << 10, f)),
            Got::Tree(_) => unreachable!("asked for a file"),
        }
    }

    async fn call_as(
        &mut self,
        op: &str,
        build: impl Fn(&Cookie) -> String,
        want: Want,
    ) -> Result<Got, SyncError> {
        let mut renewals = 0;
        loop {
            let cookie = match &self.cookie {
                Some(c) => c.clone(),
                None => {
                    let c = self.authenticate().await?;
                    self.cookie = Some(c.clone());
                    c
                }
            };
            let body = build(&cookie);
            match self
                .post_retrying_as(messages::SYNC_PATH, &messages::action(op), &body, want)
                .await
            {
                Err(SyncError::Fault(f))
                    if f.error_code
                        .as_ref()
                        .is_some_and(ErrorCode::needs_new_cookie)
                        && renewals < ATTEMPTS =>
                {
                    renewals += 1;
                    self.note(&SyncError::Fault(f));
                    self.cookie = None;
                }
                other => return other,
            }
        }
    }
}

/// How an answer is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Tree,
    Spooled,
}

enum Got {
    Tree(Element),
    Spooled(std::fs::File),
}

/// Writes a response body to a temporary file (gone when closed),
/// refusing one larger than `limit`; the file is rewound.
async fn spool(resp: reqwest::Response, limit: usize) -> Result<std::fs::File, SyncError> {
    use std::io::{Seek as _, Write as _};
    let url = resp.url().to_string();
    if resp.content_length().is_some_and(|n| n as usize > limit) {
        return Err(SyncError::Soap(SoapError::TooLarge { limit }));
    }
    let local = |e: std::io::Error| SyncError::Setup(format!("spooling an answer: {e}"));
    let mut file = crate::store::scratch_file().map_err(local)?;
    let mut written = 0usize;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| SyncError::Transport(format!("{url}: {e}")))?;
        written += chunk.len();
        if written > limit {
            return Err(SyncError::Soap(SoapError::TooLarge { limit }));
        }
        file.write_all(&chunk).map_err(local)?;
    }
    file.rewind().map_err(local)?;
    Ok(file)
}

/// Reads a response body, refusing one larger than `limit`.
async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, SyncError> {
    let url = resp.url().to_string();
    if resp.content_length().is_some_and(|n| n as usize > limit) {
        return Err(SyncError::Soap(SoapError::TooLarge { limit }));
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| SyncError::Transport(format!("{url}: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(SyncError::Soap(SoapError::TooLarge { limit }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
