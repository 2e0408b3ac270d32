//! upcache as an upstream server: the server side of [MS-WSUSSS], on the
//! content listener at a WSUS's paths, answered from the synced metadata
//! (`metadata`) and the catalog's approvals, so that a downstream upcache
//! (`upstream_server = "http://hq:8530"`) or a WSUS syncs from it.
//!
//! - `/DssAuthWebService/DssAuthWebService.asmx`: `GetAuthorizationCookie`
//!   (anonymous, as WSUS: any account name and GUID get one);
//! - `/ServerSyncWebService/ServerSyncWebService.asmx`: `GetAuthConfig`,
//!   `GetCookie`, `GetConfigData`, `GetRevisionIdList` (anchors and
//!   filters: `revisions`), `GetUpdateData` (sent one document at a time,
//!   never built whole), and `GetDeployments` for replicas
//!   (`deployments`).
//!
//! The messages are `wsus::sync::messages`' (the client's own, read and
//! written from the other side); the envelope is `wsus::soap`'s (bounded,
//! no DTD). Cookies are minted and checked as [MS-WUSP]'s are
//! (`wsus::client::cookie`), of their own kinds. Every error is a SOAP
//! fault through [`SoapFault`], in `UpstreamError`'s one mapping.
//!
//! Not served: `GetDriverIdList` and `GetDriverSetData` (a USS calls them
//! on Microsoft Update only, 3.1.4.7), `DownloadFiles`, the reporting
//! roll-up calls, `GetUpdateDecryptionData` (no encrypted updates are
//! kept): they answer `InvalidParameters`.

pub mod deployments;
pub mod revisions;

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Response, StatusCode};

use crate::catalog::{Catalog, CatalogError};
use crate::metadata::{MetaError, MetaStore};
use crate::wsus::client::cookie::{self, CookieError, Cookies};
use crate::wsus::soap::{self, Element, ErrorCode, Fault, SoapError, SoapFault};
use crate::wsus::sync::blob;
use crate::wsus::sync::messages::{
    self, Blob, ConfigData, Cookie, RawFileUrl, RawUpdate, RevisionKey,
};

const SYNC_PATH: &str = "/serversyncwebservice/serversyncwebservice.asmx";
const DSS_PATH: &str = "/dssauthwebservice/dssauthwebservice.asmx";

/// The most revisions one `GetUpdateData` may ask (`GetConfigData` says so).
pub const MAX_UPDATES_PER_REQUEST: usize = 100;
/// The largest request body read (a `GetUpdateData` of 100 ids is ~15 KB).
pub const MAX_REQUEST: usize = 1 << 20;
/// How long a downstream's cookie holds; then `CookieExpired`, and the
/// downstream asks for another (as the sync client does).
const COOKIE_SECS: u64 = 8 * 3600;
/// The DSS authorization cookie is traded at once for the real one.
const AUTH_COOKIE_SECS: u64 = 600;
/// The anonymous plug-in WSUS names for server sync.
const PLUGIN: &str = "DssTargeting";
/// `meta_state`: this server's identity in its anchors, so an anchor of
/// another server (or of this one before its data was wiped) lists all.
const SERVER_ID: &str = "upstream.server_id";

/// Which service a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    ServerSync,
    DssAuth,
}

/// The service at `path`, if it is one of these (case-insensitive, as
/// IIS matches; no allocation: this runs before every content request).
pub fn service_of(path: &str) -> Option<Service> {
    if path.eq_ignore_ascii_case(SYNC_PATH) {
        Some(Service::ServerSync)
    } else if path.eq_ignore_ascii_case(DSS_PATH) {
        Some(Service::DssAuth)
    } else {
        None
    }
}

/// Why a call failed; each maps to one fault ([`SoapFault`]).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Soap(#[from] SoapError),
    #[error("{0}")]
    Cookie(#[from] CookieError),
    #[error("no cookie in the request")]
    NoCookie,
    #[error("the authorization cookie is not one this server issued")]
    AuthorizationCookie,
    #[error("protocol version {0:?} is not 1.x")]
    ProtocolVersion(String),
    #[error("{name}: {why}")]
    Parameter { name: &'static str, why: String },
    #[error("unknown revision {0} {1}")]
    UnknownRevision(String, u32),
    #[error("unknown operation {0}")]
    UnknownOperation(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("upstream task: {0}")]
    Task(String),
}

impl SoapFault for UpstreamError {
    fn fault(&self) -> Fault {
        use UpstreamError as E;
        match self {
            E::Soap(e) => e.fault(),
            E::Cookie(CookieError::Expired) => Fault::new(ErrorCode::CookieExpired, ""),
            E::Cookie(CookieError::Invalid) | E::NoCookie => {
                Fault::new(ErrorCode::InvalidCookie, "")
            }
            E::AuthorizationCookie => Fault::new(ErrorCode::InvalidAuthorizationCookie, ""),
            E::ProtocolVersion(_) => Fault::new(ErrorCode::IncompatibleProtocolVersion, ""),
            E::Parameter { name, .. } => Fault::new(ErrorCode::InvalidParameters, *name),
            E::UnknownOperation(op) => Fault::new(ErrorCode::InvalidParameters, op.as_str()),
            // What a WSUS answers for an id it does not know (wsus-rs recordings).
            E::UnknownRevision(..) | E::Meta(_) | E::Catalog(_) | E::Task(_) => {
                Fault::new(ErrorCode::InternalServerError, "")
            }
        }
    }
}

/// A response body: whole, or a `GetUpdateData` sent document by document.
pub enum Answer {
    Whole(Bytes),
    Streamed(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>),
}

/// The [MS-WSUSSS] server.
pub struct UpstreamService {
    meta: Arc<MetaStore>,
    catalog: Arc<Catalog>,
    cookies: Cookies,
    server_id: String,
}

/// What an operation answers before it is sent.
enum Reply {
    Whole(String),
    Documents(Vec<RevisionKey>),
}

impl UpstreamService {
    pub fn open(
        data_dir: &std::path::Path,
        meta: Arc<MetaStore>,
        catalog: Arc<Catalog>,
    ) -> Result<UpstreamService, String> {
        let cookies = Cookies::open(data_dir).map_err(|e| e.to_string())?;
        let server_id = match meta.state(SERVER_ID).map_err(|e| e.to_string())? {
            Some(id) => id,
            None => {
                let id = crate::wsus::sync::new_guid();
                meta.set_state(SERVER_ID, &id).map_err(|e| e.to_string())?;
                id
            }
        };
        Ok(UpstreamService {
            meta,
            catalog,
            cookies,
            server_id,
        })
    }

    /// Answers one request; `base` is `http(s)://host` as the downstream
    /// named this listener (the files' `UssUrl`s are built on it).
    pub async fn answer(
        self: &Arc<Self>,
        service: Service,
        method: &Method,
        body: Bytes,
        base: String,
    ) -> Response<Answer> {
        if method != Method::POST {
            let fault = Fault::new(ErrorCode::InvalidParameters, "a SOAP call is a POST");
            return fault_response(&fault);
        }
        let me = self.clone();
        let work = tokio::task::spawn_blocking(move || {
            let op = soap::parse_envelope(&body)?;
            me.call(service, &op)
        });
        let result = match work.await {
            Ok(r) => r,
            Err(e) => Err(UpstreamError::Task(e.to_string())),
        };
        match result {
            Ok(Reply::Whole(inner)) => xml(StatusCode::OK, soap::envelope(&inner)),
            Ok(Reply::Documents(keys)) => {
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                let me = self.clone();
                tokio::task::spawn_blocking(move || me.send_documents(&keys, &base, &tx));
                Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "text/xml; charset=utf-8")
                    .body(Answer::Streamed(rx))
                    .expect("static headers")
            }
            Err(e) => {
                if matches!(
                    e,
                    UpstreamError::Meta(_) | UpstreamError::Catalog(_) | UpstreamError::Task(_)
                ) {
                    tracing::warn!(error = %e, "server sync (upstream) call failed");
                }
                fault_response(&e.fault())
            }
        }
    }

    /// The answer to a body over [`MAX_REQUEST`].
    pub fn too_large() -> Response<Answer> {
        let fault = Fault::new(
            ErrorCode::InvalidParameters,
            format!("request body over {MAX_REQUEST} bytes"),
        );
        let mut r = fault_response(&fault);
        *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
        r.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        r
    }

    fn call(&self, service: Service, op: &Element) -> Result<Reply, UpstreamError> {
        if service == Service::DssAuth {
            let (name, guid) = messages::decode_authorization_cookie_request(op)?;
            if guid.is_empty() {
                return Err(UpstreamError::Parameter {
                    name: "accountGuid",
                    why: "empty".into(),
                });
            }
            let data = self.cookies.mint(&cookie::Claims {
                kind: cookie::Kind::ServerAuthorization,
                expires: now() + AUTH_COOKIE_SECS,
                client_id: guid,
                target_group: name,
            });
            return Ok(Reply::Whole(messages::authorization_cookie_response(
                PLUGIN, &data,
            )));
        }
        match op.name.as_str() {
            "GetAuthConfig" => Ok(Reply::Whole(messages::auth_config_response(
                "2026-01-01T00:00:00Z",
                &[(
                    PLUGIN.to_owned(),
                    "DssAuthWebService/DssAuthWebService.asmx".to_owned(),
                )],
            ))),
            "GetCookie" => self.get_cookie(op).map(Reply::Whole),
            name => {
                let cookie = messages::request_cookie(op).ok_or(UpstreamError::NoCookie)?;
                self.cookies
                    .verify(&cookie.encrypted_data, cookie::Kind::Server, now())?;
                match name {
                    "GetConfigData" => {
                        messages::decode_config_data_request(op)?;
                        Ok(Reply::Whole(self.config_data()))
                    }
                    "GetRevisionIdList" => self.revision_ids(op).map(Reply::Whole),
                    "GetUpdateData" => self.update_data(op).map(Reply::Documents),
                    "GetDeployments" => {
                        let (anchor, _) = messages::decode_deployments_request(op)?;
                        let now = crate::wsus::client::rfc3339(now());
                        let d = deployments::current(
                            &self.meta,
                            &self.catalog,
                            &now,
                            anchor.as_deref(),
                        )?;
                        Ok(Reply::Whole(messages::deployments_response(&d)))
                    }
                    other => Err(UpstreamError::UnknownOperation(other.to_owned())),
                }
            }
        }
    }

    fn get_cookie(&self, op: &Element) -> Result<String, UpstreamError> {
        let (auth, version) = messages::decode_cookie_request(op)?;
        let major = version.split('.').next().unwrap_or_default();
        if !major.is_empty() && major != "1" {
            return Err(UpstreamError::ProtocolVersion(version));
        }
        let claims = auth
            .iter()
            .find_map(|(_, data)| {
                self.cookies
                    .verify(data, cookie::Kind::ServerAuthorization, now())
                    .ok()
            })
            .ok_or(UpstreamError::AuthorizationCookie)?;
        let expires = now() + COOKIE_SECS;
        let data = self.cookies.mint(&cookie::Claims {
            kind: cookie::Kind::Server,
            expires,
            ..claims
        });
        Ok(messages::cookie_response(&Cookie {
            expiration: crate::wsus::client::rfc3339(expires),
            encrypted_data: data,
        }))
    }

    fn config_data(&self) -> String {
        messages::config_data_response(&ConfigData {
            max_updates_per_request: MAX_UPDATES_PER_REQUEST,
            languages: LANGUAGES
                .iter()
                .map(|(id, short)| (*id, (*short).to_owned()))
                .collect(),
            new_config_anchor: Some(format!("upcache:{}", self.server_id)),
            protocol_version: Some(messages::PROTOCOL_VERSION.to_owned()),
        })
    }

    /// `upcache:<server id>:<rid>`; another server's anchor (or none)
    /// lists everything.
    fn since(&self, anchor: Option<&str>) -> Result<i64, UpstreamError> {
        let Some(a) = anchor else { return Ok(0) };
        let bad = || UpstreamError::Parameter {
            name: "Anchor",
            why: format!("{a:?} is not an anchor this server wrote"),
        };
        let rest = a.strip_prefix("upcache:").ok_or_else(bad)?;
        let (server, rid) = rest.rsplit_once(':').ok_or_else(bad)?;
        let rid: i64 = rid.parse().map_err(|_| bad())?;
        Ok(if server == self.server_id { rid } else { 0 })
    }

    fn revision_ids(&self, op: &Element) -> Result<String, UpstreamError> {
        let filter = messages::decode_revision_id_list_request(op)?;
        let since = self.since(filter.anchor.as_deref())?;
        // Taken first: a revision stored while this runs is listed again
        // next time rather than never.
        let last = self.meta.last_rid()?;
        let graph = self.meta.revision_graph()?;
        let ids = if filter.get_config {
            revisions::categories(&graph, since)
        } else {
            revisions::updates(&graph, &filter, since)
        };
        let anchor = format!("upcache:{}:{last}", self.server_id);
        Ok(messages::revision_id_list_response(&anchor, &ids))
    }

    /// Checks a `GetUpdateData` before its answer starts: the count, and
    /// that every revision is stored (an unknown one fails the call, as a
    /// WSUS's does, before a byte is sent).
    fn update_data(&self, op: &Element) -> Result<Vec<RevisionKey>, UpstreamError> {
        let keys = messages::decode_update_data_request(op)?;
        if keys.is_empty() || keys.len() > MAX_UPDATES_PER_REQUEST {
            return Err(UpstreamError::Parameter {
                name: "updateIds",
                why: format!("{} ids (1 to {MAX_UPDATES_PER_REQUEST})", keys.len()),
            });
        }
        let stored = self.meta.stored(&keys)?;
        if let Some((id, rev)) = keys.iter().find(|k| !stored.contains(*k)) {
            return Err(UpstreamError::UnknownRevision(id.clone(), *rev));
        }
        Ok(keys)
    }

    /// Writes the `GetUpdateData` answer into `tx` one document at a time
    /// (memory holds one document, whatever the batch), then the files'
    /// locations. A failure mid-way breaks the body off: the downstream
    /// sees a transport error and asks again.
    fn send_documents(
        &self,
        keys: &[RevisionKey],
        base: &str,
        tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    ) {
        let send = |s: String| tx.blocking_send(Ok(Bytes::from(s))).is_ok();
        if !send(soap::envelope_open() + &messages::update_data_open()) {
            return;
        }
        let mut files = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (id, rev) in keys {
            let item = match self.document_item(id, *rev) {
                Ok(Some((rid, item))) => {
                    match self.meta.files_by_rid(rid) {
                        Ok(fs) => files.extend(fs.into_iter().filter(|f| seen.insert(f.sha1))),
                        Err(e) => return broken(tx, e.to_string()),
                    }
                    item
                }
                Ok(None) => continue,
                Err(e) => return broken(tx, e),
            };
            if !send(item) {
                return;
            }
        }
        let mut tail = messages::update_data_files().to_owned();
        for f in &files {
            tail.push_str(&messages::file_url_item(&RawFileUrl {
                digest: base64::engine::general_purpose::STANDARD.encode(f.sha1.0),
                mu_url: f.mu_url.clone(),
                uss_url: crate::wsus::client::content_url(base, f),
            }));
        }
        tail.push_str(messages::update_data_close());
        tail.push_str(soap::ENVELOPE_CLOSE);
        send(tail);
    }

    /// One `ServerSyncUpdateData`: the document as a cabinet of UTF-16LE
    /// text, as WSUS sends it (`XmlUpdateBlobCompressed`).
    fn document_item(&self, id: &str, rev: u32) -> Result<Option<(i64, String)>, String> {
        let Some((rid, doc)) = self
            .meta
            .revision_document(id, rev)
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let text = String::from_utf8(doc).map_err(|_| format!("{id} {rev}: not UTF-8"))?;
        let cab = base64::engine::general_purpose::STANDARD.encode(blob::pack(&text));
        Ok(Some((
            rid,
            messages::update_data_item(&RawUpdate {
                key: (id.to_owned(), rev),
                blob: Blob::Compressed(cab),
            }),
        )))
    }
}

fn broken(tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>, why: String) {
    tracing::warn!("server sync (upstream): GetUpdateData broken off: {why}");
    let _ = tx.blocking_send(Err(std::io::Error::other(why)));
}

/// The languages `GetConfigData` offers (`LanguageID`, `ShortLanguage`), as
/// WSUS numbers them; upcache keeps documents whole, so every language a
/// document holds travels with it whatever is chosen.
const LANGUAGES: [(u32, &str); 12] = [
    (1033, "en"),
    (1031, "de"),
    (1036, "fr"),
    (3082, "es"),
    (1040, "it"),
    (1043, "nl"),
    (1046, "pt-br"),
    (1049, "ru"),
    (1041, "ja"),
    (1042, "ko"),
    (2052, "zh-cn"),
    (1045, "pl"),
];

fn xml(status: StatusCode, body: String) -> Response<Answer> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/xml; charset=utf-8")
        .body(Answer::Whole(Bytes::from(body)))
        .expect("static headers")
}

/// SOAP 1.1: a fault travels with 500.
fn fault_response(fault: &Fault) -> Response<Answer> {
    xml(StatusCode::INTERNAL_SERVER_ERROR, fault.to_envelope())
}

fn now() -> u64 {
    crate::wsus::client::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_paths_match_case_insensitively() {
        assert_eq!(
            service_of("/ServerSyncWebService/ServerSyncWebService.asmx"),
            Some(Service::ServerSync)
        );
        assert_eq!(
            service_of("/dssauthwebservice/DssAuthWebService.asmx"),
            Some(Service::DssAuth)
        );
        assert_eq!(service_of("/ClientWebService/client.asmx"), None);
    }
}
