//! upcache as the update server Windows clients scan against: the
//! client-server protocol [MS-WUSP], on the content listener, at the paths
//! a WSUS serves it.
//!
//! - `simple_auth`: `/SimpleAuthWebService/SimpleAuth.asmx`;
//! - `web_service`: `/ClientWebService/client.asmx`, with `scan` (the
//!   `SyncUpdates` algorithm) and `fragments` (core, extended and localized
//!   fragments of a stored update document);
//! - `reporting`: `/ReportingWebService/ReportingWebService.asmx` (and
//!   `WebService.asmx`);
//! - `self_update`: the self-update content directory, `/SelfUpdate/...`;
//! - `cookie`: the cookies; `intake`: where every report enters
//!   (`outbox`: on a follower, kept until the primary has it); `requests`:
//!   the typed reading of every request body; `wsdl`; `xpress`: the
//!   compressed answers a client asks for with `Accept-Encoding: xpress`.
//!   Computers, their groups and what they report are the `fleet`'s.
//!
//! The envelope is `wsus::soap`'s (bounded, no DTDs); every error becomes
//! a SOAP fault through [`SoapFault`], never a 404 or a 500 page.

pub mod cookie;
mod fragment_cache;
pub mod fragments;
mod intake;
pub mod outbox;
pub mod reporting;
pub mod requests;
pub mod scan;
pub mod self_update;
mod simple_auth;
mod web_service;
mod wsdl;
pub mod xpress;

pub use web_service::content_url;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, header::HeaderValue, Method, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::fleet::{Fleet, FleetError};
use crate::metadata::{MetaError, MetaStore};
use crate::wsus::soap::{self, ErrorCode, Fault, SoapError, SoapFault};
use cookie::{CookieError, Cookies};
use outbox::{Outbox, OutboxError};

/// The services and their paths (case-insensitive, as IIS matches them).
const CLIENT_PATH: &str = "/clientwebservice/client.asmx";
const SIMPLE_AUTH_PATH: &str = "/simpleauthwebservice/simpleauth.asmx";
const REPORTING_PATHS: [&str; 2] = [
    "/reportingwebservice/reportingwebservice.asmx",
    "/reportingwebservice/webservice.asmx",
];

/// The update server for Windows clients: [MS-WUSP] on the content listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct ClientSettings {
    /// Most updates in one `SyncUpdates` answer; more are sent on later
    /// pages (`Truncated`), as a WSUS sends pages of 30.
    pub wusp_page_size: usize,
    /// How long a client cookie stays valid, in seconds; then the client
    /// gets `CookieExpired` and asks for a new one.
    pub wusp_cookie_lifetime_secs: u64,
    /// Largest SOAP request body accepted, in bytes (over it: 413).
    pub wusp_max_body_bytes: usize,
    /// Answers a client that sends `Accept-Encoding: xpress` in that
    /// compressed coding, as a WSUS does (a page of 30 updates: ~10 % of
    /// its bytes). Off: every answer goes uncompressed, which HTTP allows.
    pub wusp_xpress: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            wusp_page_size: 30,
            wusp_cookie_lifetime_secs: 3600,
            wusp_max_body_bytes: 4 << 20,
            wusp_xpress: true,
        }
    }
}

impl ClientSettings {
    pub fn validate(&self) -> Result<(), crate::settings::Invalid> {
        if self.wusp_page_size == 0 {
            return Err(crate::settings::Invalid {
                setting: "wusp_page_size",
                message: "must be at least 1".into(),
            });
        }
        if self.wusp_cookie_lifetime_secs == 0 {
            return Err(crate::settings::Invalid {
                setting: "wusp_cookie_lifetime_secs",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// Why an operation failed; each maps to one fault ([`SoapFault`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Soap(#[from] SoapError),
    #[error("{0}")]
    Cookie(#[from] CookieError),
    #[error("the authorization cookie is not one this server issued")]
    AuthorizationCookie,
    #[error("{name}: {why}")]
    Parameter { name: &'static str, why: String },
    #[error("unknown operation {0}")]
    UnknownOperation(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("catalog: {0}")]
    Catalog(#[from] crate::catalog::CatalogError),
}

impl SoapFault for ClientError {
    fn fault(&self) -> Fault {
        match self {
            ClientError::Soap(e) => e.fault(),
            ClientError::Cookie(CookieError::Expired) => Fault::new(ErrorCode::CookieExpired, ""),
            ClientError::Cookie(CookieError::Invalid) => Fault::new(ErrorCode::InvalidCookie, ""),
            ClientError::AuthorizationCookie => {
                Fault::new(ErrorCode::InvalidAuthorizationCookie, "")
            }
            ClientError::Parameter { name, .. } => Fault::new(ErrorCode::InvalidParameters, *name),
            ClientError::UnknownOperation(op) => {
                Fault::new(ErrorCode::InvalidParameters, op.as_str())
            }
            ClientError::Meta(_)
            | ClientError::Fleet(_)
            | ClientError::Outbox(_)
            | ClientError::Catalog(_) => Fault::new(ErrorCode::InternalServerError, ""),
        }
    }
}

/// What a request is, as the listener saw it.
pub struct Call<'a> {
    /// The `Host` the client used (the content URLs are built on it).
    pub host: &'a str,
    pub tls: bool,
    pub peer: Option<std::net::IpAddr>,
    /// Its `Accept-Encoding` names `xpress` ([`xpress::accepted`]): the
    /// answer goes compressed (unless `wusp_xpress` is off).
    pub xpress: bool,
}

impl Call<'_> {
    /// `http(s)://host` of this listener, as the client named it.
    fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host)
    }
}

/// The [MS-WUSP] server.
pub struct ClientServices {
    pub(crate) meta: Arc<MetaStore>,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) cookies: Cookies,
    pub fleet: Arc<Fleet>,
    /// Reports kept for the primary (a follower's), and what was applied
    /// of each follower's (a primary's).
    pub outbox: Arc<Outbox>,
    pub(crate) settings: ClientSettings,
    /// `DATA/selfupdate`: the files of the self-update directory.
    self_update_dir: std::path::PathBuf,
    /// The scan index, rebuilt when the store holds a newer revision.
    index: Mutex<Option<Arc<scan::ScanIndex>>>,
    /// The approvals of the index's updates, read again when the catalog
    /// or the index changed (not once per call: a scan storm reads them
    /// hundreds of times a second).
    approvals: Mutex<Option<Approvals>>,
    /// Fragments split from stored documents, escaped for the SOAP body.
    pub(crate) fragments: fragment_cache::FragmentCache,
}

/// What a computer's groups make of the catalog's approvals: the state of
/// each update for it, and its deployments (deadline, when last changed).
pub(crate) type Approved = (
    HashMap<String, crate::catalog::UpdateState>,
    web_service::Deployments,
);

/// Approvals as of a catalog change number and an index, per group set.
struct Approvals {
    seq: u64,
    last_rid: i64,
    by_groups: HashMap<Vec<i64>, Arc<Approved>>,
}

/// Largest answer `xpress`-encoded on the async worker itself; a larger
/// one goes to the blocking pool. At the encoder's ~4 µs a KiB (release
/// build, XML), 16 KiB is ~60 µs of a worker, within the 10-100 µs a task
/// may run between awaits; handing an answer to the pool costs ~5 µs
/// (~50 µs on the loaded shared machine), as much as encoding 1-16 KiB,
/// so smaller answers (cookies, configuration, reports, faults) stay
/// inline. Measured on 2026-12-02, see benches/README.md.
pub const XPRESS_INLINE_BYTES: usize = 16 << 10;

/// Group sets kept per catalog change (computers share a few).
const MAX_GROUP_SETS: usize = 1024;

/// Which service a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Client,
    SimpleAuth,
    Reporting,
    /// The self-update content directory: files, not SOAP.
    SelfUpdate,
}

/// The service at `path`, if it is one of ours.
pub fn service_of(path: &str) -> Option<Service> {
    // Compared without a lowercased copy: this runs before every content
    // request, whose warm hits allocate nothing.
    let is = |known: &str| path.eq_ignore_ascii_case(known);
    if is(CLIENT_PATH) {
        Some(Service::Client)
    } else if is(SIMPLE_AUTH_PATH) {
        Some(Service::SimpleAuth)
    } else if REPORTING_PATHS.iter().any(|r| is(r)) {
        Some(Service::Reporting)
    } else if self_update::is_self_update(path) {
        Some(Service::SelfUpdate)
    } else {
        None
    }
}

impl ClientServices {
    pub fn open(
        data_dir: &std::path::Path,
        meta: Arc<MetaStore>,
        catalog: Arc<Catalog>,
        fleet: Arc<Fleet>,
        settings: ClientSettings,
    ) -> Result<ClientServices, String> {
        let cookies = Cookies::open(data_dir).map_err(|e| e.to_string())?;
        let outbox = Outbox::open(data_dir).map_err(|e| e.to_string())?;
        Ok(ClientServices {
            meta,
            catalog,
            cookies,
            fleet,
            outbox: Arc::new(outbox),
            settings,
            self_update_dir: data_dir.join(self_update::FOLDER),
            index: Mutex::new(None),
            approvals: Mutex::new(None),
            fragments: fragment_cache::FragmentCache::new(fragment_cache::CAPACITY),
        })
    }

    /// The bound on request bodies.
    pub fn max_body(&self) -> usize {
        self.settings.wusp_max_body_bytes
    }

    /// Answers one request to `service` (its body read, within the bound):
    /// `xpress`-encoded when the client asked for it (and `wusp_xpress` is
    /// on), as a WSUS does, and `Vary: Accept-Encoding` either way. An
    /// answer over [`XPRESS_INLINE_BYTES`] is encoded on the blocking pool,
    /// not on the async worker (a page of 30 updates takes ~0.8 ms).
    pub async fn answer(
        &self,
        service: Service,
        method: &Method,
        query: Option<&str>,
        body: &[u8],
        call: &Call<'_>,
    ) -> Response<Bytes> {
        let mut response = self.answer_plain(service, method, query, body, call);
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        if !(call.xpress && self.settings.wusp_xpress) {
            return response;
        }
        let plain = response.body().clone();
        let packed = if plain.len() <= XPRESS_INLINE_BYTES {
            xpress::encode(&plain)
        } else {
            match tokio::task::spawn_blocking(move || xpress::encode(&plain)).await {
                Ok(packed) => packed,
                // The encoder panicked: the answer goes plain, which a
                // client that asked for `xpress` still reads.
                Err(e) => {
                    tracing::error!(error = %e, "xpress encoding failed; answered plain");
                    return response;
                }
            }
        };
        response.headers_mut().insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(xpress::CODING),
        );
        *response.body_mut() = Bytes::from(packed);
        response
    }

    fn answer_plain(
        &self,
        service: Service,
        method: &Method,
        query: Option<&str>,
        body: &[u8],
        call: &Call<'_>,
    ) -> Response<Bytes> {
        if method == Method::GET && query.is_some_and(|q| q.eq_ignore_ascii_case("wsdl")) {
            return xml(StatusCode::OK, wsdl::of(service).to_owned());
        }
        if method != Method::POST {
            let fault = Fault::new(ErrorCode::InvalidParameters, "a SOAP call is a POST");
            return xml(StatusCode::INTERNAL_SERVER_ERROR, fault.to_envelope());
        }
        let result = soap::parse_envelope(body)
            .map_err(ClientError::from)
            .and_then(|op| match service {
                Service::Client => web_service::call(self, &op, call),
                Service::SimpleAuth => simple_auth::call(self, &op),
                Service::Reporting => reporting::call(self, &op),
                // Files, answered by `self_update_file`, never a SOAP call.
                Service::SelfUpdate => Err(ClientError::UnknownOperation(op.name.clone())),
            });
        match result {
            Ok(inner) => xml(StatusCode::OK, soap::envelope(&inner)),
            Err(e) => {
                if matches!(
                    e,
                    ClientError::Meta(_)
                        | ClientError::Fleet(_)
                        | ClientError::Outbox(_)
                        | ClientError::Catalog(_)
                ) {
                    tracing::warn!(error = %e, "update server call failed");
                }
                // SOAP 1.1: a fault travels with 500.
                xml(StatusCode::INTERNAL_SERVER_ERROR, e.fault().to_envelope())
            }
        }
    }

    /// A file of the self-update directory. Blocking (it reads the file).
    pub fn self_update_file(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<self_update::SelfUpdateFile, self_update::SelfUpdateError> {
        self_update::read(&self.self_update_dir, method, path)
    }

    /// The answer to a body over the bound.
    pub fn too_large(&self) -> Response<Bytes> {
        let fault = Fault::new(
            ErrorCode::InvalidParameters,
            format!("request body over {} bytes", self.max_body()),
        );
        let mut response = xml(StatusCode::PAYLOAD_TOO_LARGE, fault.to_envelope());
        // The rest of the body is never read: the connection cannot be reused.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }

    /// The scan index of the store's current revisions.
    pub(crate) fn index(&self) -> Result<Arc<scan::ScanIndex>, ClientError> {
        let last = self.meta.last_rid()?;
        let mut held = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(index) = held.as_ref().filter(|i| i.last_rid == last) {
            return Ok(index.clone());
        }
        let index = Arc::new(scan::ScanIndex::new(self.meta.scan_index()?, last));
        *held = Some(index.clone());
        Ok(index)
    }

    /// The approvals a computer in `groups` is offered under, from
    /// `read` (see `web_service`), read again only when the catalog (any
    /// approval, group or import moves its change number) or the index
    /// changed.
    pub(crate) fn approvals(
        &self,
        index: &scan::ScanIndex,
        groups: &[i64],
        read: impl FnOnce() -> Result<Approved, ClientError>,
    ) -> Result<Arc<Approved>, ClientError> {
        let seq = self.catalog.change_seq()?;
        let mut held = self.approvals.lock().unwrap_or_else(|p| p.into_inner());
        let current = held
            .as_ref()
            .is_some_and(|a| a.seq == seq && a.last_rid == index.last_rid);
        if !current
            || held
                .as_ref()
                .is_some_and(|a| a.by_groups.len() >= MAX_GROUP_SETS)
        {
            *held = Some(Approvals {
                seq,
                last_rid: index.last_rid,
                by_groups: HashMap::new(),
            });
        }
        let cache = held.as_mut().expect("set above");
        if let Some(a) = cache.by_groups.get(groups) {
            return Ok(a.clone());
        }
        let a = Arc::new(read()?);
        cache.by_groups.insert(groups.to_vec(), a.clone());
        Ok(a)
    }

    /// A client cookie for `claims`, valid for the configured lifetime.
    pub(crate) fn client_cookie(&self, client_id: &str, target_group: &str) -> (String, String) {
        let expires = now() + self.settings.wusp_cookie_lifetime_secs;
        let text = self.cookies.mint(&cookie::Claims {
            kind: cookie::Kind::Client,
            expires,
            client_id: client_id.to_owned(),
            target_group: target_group.to_owned(),
        });
        (rfc3339(expires), text)
    }
}

fn xml(status: StatusCode, body: String) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/xml; charset=utf-8")
        .body(Bytes::from(body))
        .expect("static headers")
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2026-10-04T16:03:35Z`.
pub(crate) fn rfc3339(unix: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_paths_match_case_insensitively() {
        assert_eq!(
            service_of("/ClientWebService/client.asmx"),
            Some(Service::Client)
        );
        assert_eq!(
            service_of("/SimpleAuthWebService/SimpleAuth.asmx"),
            Some(Service::SimpleAuth)
        );
        assert_eq!(
            service_of("/ReportingWebService/WebService.asmx"),
            Some(Service::Reporting)
        );
        assert_eq!(
            service_of("/reportingwebservice/reportingwebservice.asmx"),
            Some(Service::Reporting)
        );
        assert_eq!(service_of("/Content/AB/x.cab"), None);
        assert_eq!(
            service_of("/selfupdate/wuident.cab"),
            Some(Service::SelfUpdate)
        );
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
