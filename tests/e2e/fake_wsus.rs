//! A fake upstream server speaking [MS-WSUSSS] on loopback: SOAP answers
//! written by hand from the spec's schema (3.1.4, section 6 WSDL), the
//! documents from [MS-WUSP] 2.2, and `XmlUpdateBlobCompressed` cabinets
//! built here (MSZIP through the `cab` crate, which writes cabinets; a
//! real WSUS sends LZX, which the client reads through the same crate).
//!
//! Requests are read with plain string searches, not with upcache's own
//! parser, so a parser bug cannot agree with itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;

use upcache::demo::SampleFile;

const SYNC_NS: &str = "http://www.microsoft.com/SoftwareDistribution";
const DSS_NS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService";

pub const PRODUCT: &str = "8c3fcc84-7410-4a95-8b89-a166a0190486";
pub const PRODUCT_TITLE: &str = "Microsoft Defender Antivirus";
pub const CLASSIFICATION: &str = "e0789628-ce08-4437-be74-2495b842f43b";
pub const CLASSIFICATION_TITLE: &str = "Definition Updates";
pub const SECURITY: &str = "0fa1201d-4330-4fa8-8ae9-b877473b6441";
pub const DETECTOID: &str = "59653007-e2e9-4f71-8525-2ff588527978";
/// The Defender-like bundle, its leaf (with the file) and the bundle it supersedes.
pub const BUNDLE: &str = "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe";
pub const LEAF: &str = "266f6222-c89d-43f2-9f8a-69340271e677";
pub const OLD: &str = "11111111-7951-4c2c-a42b-9e351dd1c1fe";
/// A prerequisite chain: TOP needs MIDDLE needs the detectoid.
pub const TOP: &str = "22222222-0000-4000-8000-000000000001";
pub const MIDDLE: &str = "22222222-0000-4000-8000-000000000002";
/// Listed, but `GetUpdateData` fails on it (as a real WSUS does for an id
/// it does not know: `InternalServerError`).
pub const UNKNOWN: &str = "33333333-0000-4000-8000-000000000003";

/// One document the fake holds.
#[derive(Clone)]
pub struct Doc {
    pub id: String,
    pub rev: u32,
    pub xml: String,
    /// Listed with `GetConfig` true (categories, detectoids).
    pub config: bool,
    pub compressed: bool,
    /// The fake's version it appeared in (anchors are versions).
    pub since: u64,
}

/// What a test can turn on, and what the fake saw.
#[derive(Default)]
pub struct Behaviour {
    /// The next `GetUpdateData` answers `InvalidCookie` (once).
    pub invalid_cookie_once: bool,
    /// At most this many documents per `GetUpdateData` answer.
    pub page_cap: Option<usize>,
    /// List `UNKNOWN` among the updates.
    pub list_unknown: bool,
    /// `GetUpdateData` calls wait on this before answering (crash tests).
    pub hold_after: Option<usize>,
    /// Operations called, in order (`GetUpdateData:n` with n documents).
    pub log: Vec<String>,
    pub cookies_issued: u64,
}

pub struct FakeWsus {
    pub url: String,
    pub docs: Arc<Mutex<Vec<Doc>>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    pub file: SampleFile,
    version: Arc<Mutex<u64>>,
    _task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Shared {
    docs: Arc<Mutex<Vec<Doc>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    version: Arc<Mutex<u64>>,
    /// SHA-1 (base64) to MUUrl.
    urls: Arc<HashMap<String, String>>,
}

impl FakeWsus {
    /// Starts the fake with its catalog; the Defender file's URL points at
    /// `files_base` (a server that serves `file.path`).
    pub async fn start(file: SampleFile, files_base: &str) -> FakeWsus {
        let docs = Arc::new(Mutex::new(catalog(&file)));
        let behaviour = Arc::new(Mutex::new(Behaviour::default()));
        let version = Arc::new(Mutex::new(1));
        let digest = b64(&file.sha1.0);
        let urls = HashMap::from([(digest, format!("{files_base}{}", file.path))]);
        let shared = Shared {
            docs: docs.clone(),
            behaviour: behaviour.clone(),
            version: version.clone(),
            urls: Arc::new(urls),
        };
        let app = Router::new()
            .route(
                "/ServerSyncWebService/ServerSyncWebService.asmx",
                post(sync),
            )
            .route("/DssAuthWebService/DssAuthWebService.asmx", post(dss))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeWsus {
            url: format!("http://{addr}"),
            docs,
            behaviour,
            file,
            version,
            _task: task,
        }
    }

    pub fn behave(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().unwrap());
    }

    pub fn log(&self) -> Vec<String> {
        self.behaviour.lock().unwrap().log.clone()
    }

    /// Documents served by `GetUpdateData` so far.
    pub fn documents_served(&self) -> usize {
        self.log()
            .iter()
            .filter_map(|l| l.strip_prefix("GetUpdateData:"))
            .map(|n| n.parse::<usize>().unwrap())
            .sum()
    }

    /// A new revision appears upstream (the next sync's delta).
    pub fn publish(&self, mut doc: Doc) {
        let mut v = self.version.lock().unwrap();
        *v += 1;
        doc.since = *v;
        self.docs.lock().unwrap().push(doc);
    }

    pub fn doc(&self, id: &str) -> Doc {
        self.docs
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|d| d.id == id)
            .cloned()
            .unwrap()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn envelope(inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\">\
         <soap:Body>{inner}</soap:Body></soap:Envelope>"
    )
}

fn xml_ok(body: String) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn fault(code: &str, method: &str) -> Response {
    let body = envelope(&format!(
        "<soap:Fault><faultcode>soap:Client</faultcode><faultstring>Fault occurred</faultstring>\
         <detail><ErrorCode>{code}</ErrorCode><Message></Message><ID>00000000-0000-0000-0000-000000000000</ID>\
         <Method>\"{SYNC_NS}/{method}\"</Method></detail></soap:Fault>"
    ));
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(axum::http::header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The text between `<tag>` and `</tag>`, first occurrence.
fn between<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(&body[start..end])
}

fn action(headers: &HeaderMap) -> String {
    let a = headers
        .get("SOAPAction")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_matches('"');
    a.rsplit('/').next().unwrap_or_default().to_owned()
}

async fn dss(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let op = action(&headers);
    s.behaviour.lock().unwrap().log.push(op.clone());
    if op != "GetAuthorizationCookie" || between(&body, "accountGuid").is_none() {
        return fault("InvalidParameters", &op);
    }
    xml_ok(envelope(&format!(
        "<GetAuthorizationCookieResponse xmlns=\"{DSS_NS}\"><GetAuthorizationCookieResult>\
         <PlugInId>DssTargeting</PlugInId><CookieData>QVVUSA==</CookieData>\
         </GetAuthorizationCookieResult></GetAuthorizationCookieResponse>"
    )))
}

async fn sync(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let op = action(&headers);
    let cookie_ok = {
        let b = s.behaviour.lock().unwrap();
        let issued = format!("cookie-{}", b.cookies_issued);
        between(&body, "EncryptedData") == Some(issued.as_str())
    };
    match op.as_str() {
        "GetAuthConfig" => {
            s.behaviour.lock().unwrap().log.push(op);
            xml_ok(envelope(&format!(
                "<GetAuthConfigResponse xmlns=\"{SYNC_NS}\"><GetAuthConfigResult><LastChange>2026-10-04T13:16:35.433Z</LastChange>\
                 <AuthInfo><AuthPlugInInfo><PlugInID>DssTargeting</PlugInID>\
                 <ServiceUrl>DssAuthWebService/DssAuthWebService.asmx</ServiceUrl><Parameter /></AuthPlugInInfo></AuthInfo>\
                 </GetAuthConfigResult></GetAuthConfigResponse>"
            )))
        }
        "GetCookie" => {
            let mut b = s.behaviour.lock().unwrap();
            b.log.push(op.clone());
            if between(&body, "CookieData") != Some("QVVUSA==") {
                return fault("InvalidAuthorizationCookie", &op);
            }
            b.cookies_issued += 1;
            xml_ok(envelope(&format!(
                "<GetCookieResponse xmlns=\"{SYNC_NS}\"><GetCookieResult><Expiration>2099-01-01T00:00:00Z</Expiration>\
                 <EncryptedData>cookie-{}</EncryptedData></GetCookieResult></GetCookieResponse>",
                b.cookies_issued
            )))
        }
        _ if !cookie_ok => {
            s.behaviour
                .lock()
                .unwrap()
                .log
                .push(format!("{op}:InvalidCookie"));
            fault("InvalidCookie", &op)
        }
        "GetConfigData" => {
            s.behaviour.lock().unwrap().log.push(op);
            xml_ok(envelope(&format!(
                "<GetConfigDataResponse xmlns=\"{SYNC_NS}\"><GetConfigDataResult><CatalogOnlySync>false</CatalogOnlySync>\
                 <LazySync>true</LazySync><ServerHostsPsfFiles>false</ServerHostsPsfFiles>\
                 <MaxNumberOfUpdatesPerRequest>3</MaxNumberOfUpdatesPerRequest><MaxNumberOfDriverSetsPerRequest>0</MaxNumberOfDriverSetsPerRequest>\
                 <MaxNumberOfComputerIdsInRequest>0</MaxNumberOfComputerIdsInRequest><MaxNumberOfPnpHardwareIdsInRequest>0</MaxNumberOfPnpHardwareIdsInRequest>\
                 <NewConfigAnchor>config-1</NewConfigAnchor><ProtocolVersion>1.20</ProtocolVersion>\
                 <LanguageUpdateList><ServerSyncLanguageData><LanguageID>1033</LanguageID><ShortLanguage>en</ShortLanguage>\
                 <LongLanguage>English</LongLanguage><Enabled>true</Enabled></ServerSyncLanguageData></LanguageUpdateList>\
                 <MaxUpdatesPerRequestInGetUpdateDecryptionData>100</MaxUpdatesPerRequestInGetUpdateDecryptionData>\
                 </GetConfigDataResult></GetConfigDataResponse>"
            )))
        }
        "GetRevisionIdList" => revision_ids(&s, &body),
        "GetUpdateData" => update_data(&s, &body).await,
        _ => fault("InvalidParameters", &op),
    }
}

fn revision_ids(s: &Shared, body: &str) -> Response {
    let get_config = between(body, "GetConfig") == Some("true");
    let since: u64 = between(body, "Anchor")
        .and_then(|a| a.strip_prefix('v'))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if !get_config
        && (between(body, "Categories").is_none() || between(body, "Classifications").is_none())
    {
        return fault("InvalidParameters", "GetRevisionIdList");
    }
    let mut ids: Vec<(String, u32)> = s
        .docs
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d.config == get_config && d.since > since)
        .map(|d| (d.id.clone(), d.rev))
        .collect();
    let mut b = s.behaviour.lock().unwrap();
    if !get_config && b.list_unknown && since == 0 {
        ids.push((UNKNOWN.to_owned(), 1));
    }
    b.log
        .push(format!("GetRevisionIdList:{}:{}", get_config, ids.len()));
    let version = *s.version.lock().unwrap();
    let list: String = ids
        .iter()
        .map(|(id, rev)| {
            format!("<UpdateIdentity><UpdateID>{id}</UpdateID><RevisionNumber>{rev}</RevisionNumber></UpdateIdentity>")
        })
        .collect();
    xml_ok(envelope(&format!(
        "<GetRevisionIdListResponse xmlns=\"{SYNC_NS}\"><GetRevisionIdListResult><Anchor>v{version}</Anchor>\
         <NewRevisions>{list}</NewRevisions></GetRevisionIdListResult></GetRevisionIdListResponse>"
    )))
}

async fn update_data(s: &Shared, body: &str) -> Response {
    let asked: Vec<(String, u32)> = body
        .split("<UpdateIdentity>")
        .skip(1)
        .filter_map(|p| {
            Some((
                between(p, "UpdateID")?.to_owned(),
                between(p, "RevisionNumber")?.parse().ok()?,
            ))
        })
        .collect();
    {
        let mut b = s.behaviour.lock().unwrap();
        if b.invalid_cookie_once {
            b.invalid_cookie_once = false;
            b.log.push("GetUpdateData:InvalidCookie".into());
            return fault("InvalidCookie", "GetUpdateData");
        }
        if asked.len() > 3 {
            return fault("InvalidParameters", "GetUpdateData");
        }
        if asked.iter().any(|(id, _)| id == UNKNOWN) {
            b.log.push("GetUpdateData:InternalServerError".into());
            return fault("InternalServerError", "GetUpdateData");
        }
    }
    let hold = s.behaviour.lock().unwrap().hold_after;
    if let Some(after) = hold {
        let served: usize = s
            .behaviour
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|l| l.starts_with("GetUpdateData:"))
            .count();
        if served >= after {
            // A stuck upstream: the client is killed while it waits.
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
    }
    let cap = s.behaviour.lock().unwrap().page_cap.unwrap_or(usize::MAX);
    let docs = s.docs.lock().unwrap().clone();
    let mut items = String::new();
    let mut urls = String::new();
    let mut n = 0;
    for (id, rev) in asked.iter().take(cap) {
        let Some(d) = docs.iter().find(|d| &d.id == id && d.rev == *rev) else {
            continue;
        };
        n += 1;
        let blob = if d.compressed {
            let cab = upcache::wsus::sync::blob::pack(&d.xml);
            format!(
                "<XmlUpdateBlobCompressed>{}</XmlUpdateBlobCompressed>",
                b64(&cab)
            )
        } else {
            format!("<XmlUpdateBlob>{}</XmlUpdateBlob>", escape(&d.xml))
        };
        items.push_str(&format!(
            "<ServerSyncUpdateData><Id><UpdateID>{id}</UpdateID><RevisionNumber>{rev}</RevisionNumber></Id>{blob}</ServerSyncUpdateData>"
        ));
        for (digest, url) in s.urls.iter() {
            if d.xml.contains(digest.as_str()) {
                urls.push_str(&format!(
                    "<ServerSyncUrlData><FileDigest>{digest}</FileDigest><MUUrl>{url}</MUUrl><UssUrl /></ServerSyncUrlData>"
                ));
            }
        }
    }
    s.behaviour
        .lock()
        .unwrap()
        .log
        .push(format!("GetUpdateData:{n}"));
    xml_ok(envelope(&format!(
        "<GetUpdateDataResponse xmlns=\"{SYNC_NS}\"><GetUpdateDataResult><updates>{items}</updates>\
         <fileUrls>{urls}</fileUrls></GetUpdateDataResult></GetUpdateDataResponse>"
    )))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn localized(title: &str) -> String {
    format!(
        "<upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language>\
         <upd:Title>{title}</upd:Title><upd:Description>{title}.</upd:Description></upd:LocalizedProperties>\
         </upd:LocalizedPropertiesCollection>"
    )
}

fn category(id: &str, title: &str, kind: &str) -> Doc {
    let xml = format!(
        "<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\" \
         xmlns:cat=\"http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Category\">\
         <upd:UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"100\" />\
         <upd:Properties UpdateType=\"Category\" DefaultPropertiesLanguage=\"en\" PublicationState=\"Published\" \
         CreationDate=\"2004-05-15T05:50:01.611Z\" />{}\
         <upd:HandlerSpecificData xsi:type=\"cat:Category\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
         <cat:CategoryInformation CategoryType=\"{kind}\" ProhibitsSubcategories=\"false\" ProhibitsUpdates=\"false\" /></upd:HandlerSpecificData>\
         </upd:Update>",
        localized(title)
    );
    Doc {
        id: id.into(),
        rev: 100,
        xml,
        config: true,
        compressed: false,
        since: 1,
    }
}

/// A software update; `relationships` and `files` are inner XML.
pub fn software(
    id: &str,
    rev: u32,
    title: &str,
    kb: &str,
    relationships: &str,
    files: &str,
) -> Doc {
    let kb = if kb.is_empty() {
        String::new()
    } else {
        format!("<upd:KBArticleID>{kb}</upd:KBArticleID>")
    };
    let xml = format!(
        "<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\" \
         xmlns:lar=\"http://schemas.microsoft.com/msus/2002/12/LogicalApplicabilityRules\">\
         <upd:UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"{rev}\" />\
         <upd:Properties UpdateType=\"Software\" DefaultPropertiesLanguage=\"en\" PublicationState=\"Published\" \
         CreationDate=\"2026-10-04T12:00:58.381Z\">{kb}</upd:Properties>{}\
         <upd:Relationships>{relationships}</upd:Relationships>\
         <upd:ApplicabilityRules><upd:IsInstalled><lar:False /></upd:IsInstalled></upd:ApplicabilityRules>{files}\
         </upd:Update>",
        localized(title)
    );
    Doc {
        id: id.into(),
        rev,
        xml,
        config: false,
        compressed: true,
        since: 1,
    }
}

fn in_categories() -> String {
    format!(
        "<upd:Prerequisites><upd:AtLeastOne IsCategory=\"true\"><upd:UpdateIdentity UpdateID=\"{CLASSIFICATION}\" /></upd:AtLeastOne>\
         <upd:AtLeastOne IsCategory=\"true\"><upd:UpdateIdentity UpdateID=\"{PRODUCT}\" /></upd:AtLeastOne></upd:Prerequisites>"
    )
}

/// The fake's catalog: a category tree, a Defender-like bundle with its
/// leaf and a superseded bundle, and a prerequisite chain.
fn catalog(file: &SampleFile) -> Vec<Doc> {
    let detectoid = Doc {
        xml: format!(
            "<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\">\
             <upd:UpdateIdentity UpdateID=\"{DETECTOID}\" RevisionNumber=\"100\" />\
             <upd:Properties UpdateType=\"Detectoid\" PublicationState=\"Published\" />{}</upd:Update>",
            localized("Defender is installed")
        ),
        ..category(DETECTOID, "", "")
    };
    let digest = b64(&file.sha1.0);
    let sha256 = b64(&file.sha256.0);
    let leaf_files = format!(
        "<upd:Files><upd:File Digest=\"{digest}\" DigestAlgorithm=\"SHA1\" FileName=\"AM_Delta.exe\" Size=\"{}\" \
         Modified=\"2026-10-04T09:39:26Z\"><upd:AdditionalDigest Algorithm=\"SHA256\">{sha256}</upd:AdditionalDigest>\
         </upd:File></upd:Files>",
        file.bytes.len()
    );
    let bundle_rel = format!(
        "{}<upd:BundledUpdates><upd:UpdateIdentity UpdateID=\"{LEAF}\" RevisionNumber=\"200\" /></upd:BundledUpdates>\
         <upd:SupersededUpdates><upd:UpdateIdentity UpdateID=\"{OLD}\" /></upd:SupersededUpdates>",
        in_categories()
    );
    let leaf_rel = format!(
        "<upd:Prerequisites><upd:UpdateIdentity UpdateID=\"{DETECTOID}\" /></upd:Prerequisites>"
    );
    let middle_rel = format!(
        "<upd:Prerequisites><upd:UpdateIdentity UpdateID=\"{DETECTOID}\" /></upd:Prerequisites>"
    );
    let top_rel = format!(
        "<upd:Prerequisites><upd:UpdateIdentity UpdateID=\"{MIDDLE}\" />\
         <upd:AtLeastOne IsCategory=\"true\"><upd:UpdateIdentity UpdateID=\"{CLASSIFICATION}\" /></upd:AtLeastOne>\
         <upd:AtLeastOne IsCategory=\"true\"><upd:UpdateIdentity UpdateID=\"{PRODUCT}\" /></upd:AtLeastOne></upd:Prerequisites>"
    );
    vec![
        category(PRODUCT, PRODUCT_TITLE, "Product"),
        category(CLASSIFICATION, CLASSIFICATION_TITLE, "UpdateClassification"),
        category(SECURITY, "Security Updates", "UpdateClassification"),
        detectoid,
        software(
            BUNDLE,
            200,
            "Security Intelligence Update for Microsoft Defender Antivirus - KB2267602 (Version 1.459.547.0)",
            "2267602",
            &bundle_rel,
            "",
        ),
        software(LEAF, 200, "Full Deltas 1.459.547.0 for Defender amd64fre", "", &leaf_rel, &leaf_files),
        software(
            OLD,
            100,
            "Security Intelligence Update for Microsoft Defender Antivirus - KB2267602 (Version 1.459.500.0)",
            "2267602",
            &in_categories(),
            "",
        ),
        software(MIDDLE, 1, "Servicing stack for Defender", "", &middle_rel, ""),
        software(TOP, 1, "Defender platform update", "4052623", &top_rel, ""),
    ]
}

/// Selects the fake upstream's product and classification on `h` (as an
/// administrator does before the first sync brings updates).
pub async fn select_categories(h: &crate::common::Harness) {
    let r = h
        .http
        .put(h.admin("/api/v1/categories"))
        .json(&serde_json::json!({ "products": [PRODUCT_TITLE], "classifications": [CLASSIFICATION] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}
