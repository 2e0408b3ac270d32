//! The [MS-WSUSSS] messages, both directions: what a downstream server
//! sends and how an upstream reads it, what an upstream answers and how a
//! downstream reads it. One definition of each message shape serves the
//! sync client (`wsus::sync`) and the upstream server (`wsus::upstream`);
//! pure functions, tested on bodies written from the spec's schema
//! (section 3.1.4, WSDL in section 6) and by round trips.

use crate::wsus::soap::{envelope, Element, SoapError, Xml};

/// The namespace of the server-sync web service's operations.
pub const SYNC_NS: &str = "http://www.microsoft.com/SoftwareDistribution";
/// The namespace of the DSS authorization web service (3.1.4.2).
pub const DSS_AUTH_NS: &str =
    "http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService";
/// Where the server-sync service sits under an upstream's base URL.
pub const SYNC_PATH: &str = "ServerSyncWebService/ServerSyncWebService.asmx";
/// Where the DSS authorization service usually sits (GetAuthConfig says).
pub const DSS_AUTH_PATH: &str = "DssAuthWebService/DssAuthWebService.asmx";
/// The protocol version this client speaks (GetCookie, 3.1.4.3).
pub const PROTOCOL_VERSION: &str = "1.20";

/// The SOAPAction of a server-sync operation.
pub fn action(op: &str) -> String {
    format!("{SYNC_NS}/{op}")
}

/// The SOAPAction of the DSS authorization operation.
pub fn dss_action() -> String {
    format!("{DSS_AUTH_NS}/GetAuthorizationCookie")
}

/// The cookie every call after `GetCookie` carries, sent back verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    pub expiration: String,
    pub encrypted_data: String,
}

/// What `GetConfigData` tells a downstream server (3.1.4.4.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigData {
    pub max_updates_per_request: usize,
    /// `(LanguageID, ShortLanguage)`.
    pub languages: Vec<(u32, String)>,
    pub new_config_anchor: Option<String>,
    pub protocol_version: Option<String>,
}

/// One update identity.
pub type RevisionKey = (String, u32);

/// One entry of `IdAndDelta` (3.1.4.5.3): `delta` asks only for changes
/// since the anchor, for a category already synced with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdAndDelta {
    pub id: String,
    pub delta: bool,
}

/// The filter of `GetRevisionIdList` (3.1.4.5.3.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub anchor: Option<String>,
    pub get_config: bool,
    pub categories: Vec<IdAndDelta>,
    pub classifications: Vec<IdAndDelta>,
    /// `LanguageID`s with their delta flags.
    pub languages: Vec<(u32, bool)>,
}

/// A document as it travels in `ServerSyncUpdateData`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blob {
    /// `XmlUpdateBlob`: the document as text.
    Plain(String),
    /// `XmlUpdateBlobCompressed`: base64 of a cabinet holding it.
    Compressed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawUpdate {
    pub key: RevisionKey,
    pub blob: Blob,
}

/// `fileUrls` entry: SHA-1 (base64 in `FileDigest`) to locations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFileUrl {
    pub digest: String,
    pub mu_url: String,
    pub uss_url: String,
}

fn op(name: &str, ns: &str, body: impl FnOnce(&mut Xml)) -> String {
    let mut w = Xml::default();
    w.open(name, &format!(" xmlns=\"{ns}\""));
    body(&mut w);
    w.close(name);
    envelope(&w.finish())
}

fn cookie_xml(w: &mut Xml, c: &Cookie) {
    w.open("cookie", "");
    w.leaf("Expiration", &c.expiration);
    w.leaf("EncryptedData", &c.encrypted_data);
    w.close("cookie");
}

pub fn get_auth_config() -> String {
    op("GetAuthConfig", SYNC_NS, |_| {})
}

pub fn get_authorization_cookie(account_name: &str, account_guid: &str) -> String {
    op("GetAuthorizationCookie", DSS_AUTH_NS, |w| {
        w.leaf("accountName", account_name);
        w.leaf("accountGuid", account_guid);
    })
}

pub fn get_cookie(plugin_id: &str, cookie_data: &str) -> String {
    op("GetCookie", SYNC_NS, |w| {
        w.open("authCookies", "").open("AuthorizationCookie", "");
        w.leaf("PlugInId", plugin_id);
        w.leaf("CookieData", cookie_data);
        w.close("AuthorizationCookie").close("authCookies");
        w.leaf("protocolVersion", PROTOCOL_VERSION);
    })
}

pub fn get_config_data(cookie: &Cookie, config_anchor: Option<&str>) -> String {
    op("GetConfigData", SYNC_NS, |w| {
        cookie_xml(w, cookie);
        if let Some(a) = config_anchor {
            w.leaf("configAnchor", a);
        }
    })
}

pub fn get_revision_id_list(cookie: &Cookie, filter: &Filter) -> String {
    let id_list = |w: &mut Xml, name: &str, items: &[IdAndDelta]| {
        if items.is_empty() {
            return;
        }
        w.open(name, "");
        for i in items {
            w.open("IdAndDelta", "");
            w.leaf("Id", &i.id);
            w.leaf("Delta", if i.delta { "true" } else { "false" });
            w.close("IdAndDelta");
        }
        w.close(name);
    };
    op("GetRevisionIdList", SYNC_NS, |w| {
        cookie_xml(w, cookie);
        w.open("filter", "");
        if let Some(a) = &filter.anchor {
            w.leaf("Anchor", a);
        }
        w.leaf(
            "GetConfig",
            if filter.get_config { "true" } else { "false" },
        );
        w.leaf("Get63LanguageOnly", "false");
        id_list(w, "Categories", &filter.categories);
        id_list(w, "Classifications", &filter.classifications);
        if !filter.languages.is_empty() {
            w.open("Languages", "");
            for (id, delta) in &filter.languages {
                w.open("LanguageAndDelta", "");
                w.leaf("Id", &id.to_string());
                w.leaf("Delta", if *delta { "true" } else { "false" });
                w.close("LanguageAndDelta");
            }
            w.close("Languages");
        }
        w.close("filter");
    })
}

pub fn get_update_data(cookie: &Cookie, ids: &[RevisionKey]) -> String {
    op("GetUpdateData", SYNC_NS, |w| {
        cookie_xml(w, cookie);
        w.open("updateIds", "");
        for (id, rev) in ids {
            identity(w, id, *rev);
        }
        w.close("updateIds");
    })
}

fn identity(w: &mut Xml, id: &str, rev: u32) {
    w.open("UpdateIdentity", "");
    w.leaf("UpdateID", id);
    w.leaf("RevisionNumber", &rev.to_string());
    w.close("UpdateIdentity");
}

/// The `<OpResult>` inside `<OpResponse>`.
fn result<'a>(op: &'a Element, name: &str) -> Result<&'a Element, SoapError> {
    if op.name != format!("{name}Response") {
        return Err(SoapError::Unexpected {
            expected: format!("<{name}Response>"),
            got: format!("<{}>", op.name),
        });
    }
    op.child(&format!("{name}Result"))
        .ok_or_else(|| SoapError::Unexpected {
            expected: format!("<{name}Result>"),
            got: "nothing".into(),
        })
}

/// `GetAuthConfig`: the plug-ins, `(PlugInID, ServiceUrl)`.
pub fn decode_auth_config(op: &Element) -> Result<Vec<(String, String)>, SoapError> {
    let r = result(op, "GetAuthConfig")?;
    Ok(r.child("AuthInfo")
        .map(|a| {
            a.children_named("AuthPlugInInfo")
                .map(|p| {
                    (
                        p.child_text("PlugInID").unwrap_or_default().to_owned(),
                        p.child_text("ServiceUrl").unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// `GetAuthorizationCookie`: `(PlugInId, CookieData)`.
pub fn decode_authorization_cookie(op: &Element) -> Result<(String, String), SoapError> {
    let r = result(op, "GetAuthorizationCookie")?;
    Ok((
        r.required("PlugInId")?.to_owned(),
        r.required("CookieData")?.to_owned(),
    ))
}

pub fn decode_cookie(op: &Element) -> Result<Cookie, SoapError> {
    let r = result(op, "GetCookie")?;
    Ok(Cookie {
        expiration: r.child_text("Expiration").unwrap_or_default().to_owned(),
        encrypted_data: r.required("EncryptedData")?.to_owned(),
    })
}

pub fn decode_config_data(op: &Element) -> Result<ConfigData, SoapError> {
    let r = result(op, "GetConfigData")?;
    let languages = r
        .child("LanguageUpdateList")
        .map(|l| {
            l.children_named("ServerSyncLanguageData")
                .filter_map(|d| {
                    let id = d.child_text("LanguageID")?.trim().parse().ok()?;
                    Some((id, d.child_text("ShortLanguage")?.trim().to_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ConfigData {
        max_updates_per_request: r
            .child_text("MaxNumberOfUpdatesPerRequest")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0),
        languages,
        new_config_anchor: r.child_text("NewConfigAnchor").map(str::to_owned),
        protocol_version: r.child_text("ProtocolVersion").map(str::to_owned),
    })
}

fn decode_identity(e: &Element) -> Result<RevisionKey, SoapError> {
    let id = e.required("UpdateID")?.trim().to_ascii_lowercase();
    let rev = e
        .required("RevisionNumber")?
        .trim()
        .parse()
        .map_err(|_| SoapError::Malformed(format!("RevisionNumber of {id}")))?;
    Ok((id, rev))
}

/// `GetRevisionIdList`: the new anchor and the revisions.
pub fn decode_revision_id_list(
    op: &Element,
) -> Result<(Option<String>, Vec<RevisionKey>), SoapError> {
    let r = result(op, "GetRevisionIdList")?;
    let ids = match r.child("NewRevisions") {
        Some(n) => n
            .children_named("UpdateIdentity")
            .map(decode_identity)
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok((r.child_text("Anchor").map(str::to_owned), ids))
}

/// `GetUpdateData`: the documents and the file locations (a whole answer;
/// the sync reads it item by item with [`decode_update_item`] and
/// [`decode_url_item`] instead).
pub fn decode_update_data(op: &Element) -> Result<(Vec<RawUpdate>, Vec<RawFileUrl>), SoapError> {
    let r = result(op, "GetUpdateData")?;
    let updates = r
        .child("updates")
        .into_iter()
        .flat_map(|u| u.children_named(UPDATE_ITEM))
        .map(decode_update_item)
        .collect::<Result<_, _>>()?;
    let urls = r
        .child("fileUrls")
        .into_iter()
        .flat_map(|u| u.children_named(URL_ITEM))
        .map(decode_url_item)
        .collect();
    Ok((updates, urls))
}

/// The element of one document in a `GetUpdateData` answer.
pub const UPDATE_ITEM: &str = "ServerSyncUpdateData";
/// The element of one file location in a `GetUpdateData` answer.
pub const URL_ITEM: &str = "ServerSyncUrlData";

/// One `ServerSyncUpdateData`.
pub fn decode_update_item(u: &Element) -> Result<RawUpdate, SoapError> {
    let key = decode_identity(u.child("Id").ok_or_else(|| missing("Id", UPDATE_ITEM))?)?;
    let blob = match (
        u.child_text("XmlUpdateBlobCompressed"),
        u.child_text("XmlUpdateBlob"),
    ) {
        (Some(c), _) if !c.trim().is_empty() => Blob::Compressed(c.to_owned()),
        (_, Some(p)) if !p.trim().is_empty() => Blob::Plain(p.to_owned()),
        _ => {
            return Err(SoapError::Malformed(format!(
                "no document for {} revision {}",
                key.0, key.1
            )))
        }
    };
    Ok(RawUpdate { key, blob })
}

/// One `ServerSyncUrlData`.
pub fn decode_url_item(u: &Element) -> RawFileUrl {
    let text = |n: &str| u.child_text(n).unwrap_or_default().trim().to_owned();
    RawFileUrl {
        digest: text("FileDigest"),
        mu_url: text("MUUrl"),
        uss_url: text("UssUrl"),
    }
}

// ---- the upstream's side: requests read, answers written ----

fn bool_text(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

fn missing(what: &str, within: &str) -> SoapError {
    SoapError::Unexpected {
        expected: format!("<{what}> in <{within}>"),
        got: "nothing".into(),
    }
}

/// The operation element is `name` (the SOAPAction is not trusted alone).
fn request<'a>(op: &'a Element, name: &str) -> Result<&'a Element, SoapError> {
    if op.name != name {
        return Err(SoapError::Unexpected {
            expected: format!("<{name}>"),
            got: format!("<{}>", op.name),
        });
    }
    Ok(op)
}

/// The `cookie` a request carries (`InvalidCookie` when absent: the caller
/// maps a missing cookie to that fault).
pub fn request_cookie(op: &Element) -> Option<Cookie> {
    let c = op.child("cookie")?;
    let data = c.child_text("EncryptedData")?.trim();
    if data.is_empty() {
        return None;
    }
    Some(Cookie {
        expiration: c.child_text("Expiration").unwrap_or_default().to_owned(),
        encrypted_data: data.to_owned(),
    })
}

/// `GetAuthorizationCookie`: `(accountName, accountGuid)`.
pub fn decode_authorization_cookie_request(op: &Element) -> Result<(String, String), SoapError> {
    let op = request(op, "GetAuthorizationCookie")?;
    let guid = op.required("accountGuid")?.trim().to_owned();
    let name = op.child_text("accountName").unwrap_or_default().trim();
    Ok((name.to_owned(), guid))
}

/// `GetCookie`: the authorization cookies `(PlugInId, CookieData)` and the
/// protocol version.
pub fn decode_cookie_request(op: &Element) -> Result<(Vec<(String, String)>, String), SoapError> {
    let op = request(op, "GetCookie")?;
    let cookies = op
        .child("authCookies")
        .into_iter()
        .flat_map(|a| a.children_named("AuthorizationCookie"))
        .map(|c| {
            (
                c.child_text("PlugInId")
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                c.child_text("CookieData")
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            )
        })
        .collect();
    let version = op.child_text("protocolVersion").unwrap_or_default();
    Ok((cookies, version.trim().to_owned()))
}

/// `GetConfigData`: the config anchor, if any.
pub fn decode_config_data_request(op: &Element) -> Result<Option<String>, SoapError> {
    let op = request(op, "GetConfigData")?;
    Ok(op
        .child_text("configAnchor")
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned))
}

fn parse_bool(text: &str) -> bool {
    matches!(text.trim(), "true" | "1")
}

/// `GetRevisionIdList`: the filter.
pub fn decode_revision_id_list_request(op: &Element) -> Result<Filter, SoapError> {
    let op = request(op, "GetRevisionIdList")?;
    let f = op
        .child("filter")
        .ok_or_else(|| missing("filter", "GetRevisionIdList"))?;
    let ids = |name: &str| -> Vec<IdAndDelta> {
        f.child(name)
            .into_iter()
            .flat_map(|l| l.children_named("IdAndDelta"))
            .filter_map(|i| {
                Some(IdAndDelta {
                    id: i.child_text("Id")?.trim().to_ascii_lowercase(),
                    delta: parse_bool(i.child_text("Delta").unwrap_or_default()),
                })
            })
            .collect()
    };
    let languages = f
        .child("Languages")
        .into_iter()
        .flat_map(|l| l.children_named("LanguageAndDelta"))
        .filter_map(|l| {
            Some((
                l.child_text("Id")?.trim().parse().ok()?,
                parse_bool(l.child_text("Delta").unwrap_or_default()),
            ))
        })
        .collect();
    Ok(Filter {
        anchor: f
            .child_text("Anchor")
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned),
        get_config: parse_bool(f.child_text("GetConfig").unwrap_or_default()),
        categories: ids("Categories"),
        classifications: ids("Classifications"),
        languages,
    })
}

/// `GetUpdateData`: the revisions asked for.
pub fn decode_update_data_request(op: &Element) -> Result<Vec<RevisionKey>, SoapError> {
    let op = request(op, "GetUpdateData")?;
    let ids = op
        .child("updateIds")
        .ok_or_else(|| missing("updateIds", "GetUpdateData"))?;
    ids.children_named("UpdateIdentity")
        .map(decode_identity)
        .collect()
}

fn response(name: &str, ns: &str, body: impl FnOnce(&mut Xml)) -> String {
    let mut w = Xml::default();
    w.open(&format!("{name}Response"), &format!(" xmlns=\"{ns}\""));
    w.open(&format!("{name}Result"), "");
    body(&mut w);
    w.close(&format!("{name}Result"));
    w.close(&format!("{name}Response"));
    w.finish()
}

/// `GetAuthConfig`'s answer: the plug-ins `(PlugInID, ServiceUrl)`.
pub fn auth_config_response(last_change: &str, plugins: &[(String, String)]) -> String {
    response("GetAuthConfig", SYNC_NS, |w| {
        w.leaf("LastChange", last_change);
        w.open("AuthInfo", "");
        for (id, url) in plugins {
            w.open("AuthPlugInInfo", "");
            w.leaf("PlugInID", id);
            w.leaf("ServiceUrl", url);
            w.leaf("Parameter", "");
            w.close("AuthPlugInInfo");
        }
        w.close("AuthInfo");
    })
}

/// The DSS authorization service's answer.
pub fn authorization_cookie_response(plugin_id: &str, cookie_data: &str) -> String {
    response("GetAuthorizationCookie", DSS_AUTH_NS, |w| {
        w.leaf("PlugInId", plugin_id);
        w.leaf("CookieData", cookie_data);
    })
}

pub fn cookie_response(c: &Cookie) -> String {
    response("GetCookie", SYNC_NS, |w| {
        w.leaf("Expiration", &c.expiration);
        w.leaf("EncryptedData", &c.encrypted_data);
    })
}

/// `GetConfigData`'s answer (the fields a downstream reads, with the
/// fixed ones an upcache upstream does not use: no catalog-only sync, no
/// lazy sync, no PSF files, no driver sets).
pub fn config_data_response(c: &ConfigData) -> String {
    response("GetConfigData", SYNC_NS, |w| {
        w.leaf("CatalogOnlySync", "false");
        w.leaf("LazySync", "false");
        w.leaf("ServerHostsPsfFiles", "false");
        w.leaf(
            "MaxNumberOfUpdatesPerRequest",
            &c.max_updates_per_request.to_string(),
        );
        w.leaf("MaxNumberOfDriverSetsPerRequest", "0");
        w.leaf("MaxNumberOfComputerIdsInRequest", "0");
        w.leaf("MaxNumberOfPnpHardwareIdsInRequest", "0");
        if let Some(a) = &c.new_config_anchor {
            w.leaf("NewConfigAnchor", a);
        }
        if let Some(v) = &c.protocol_version {
            w.leaf("ProtocolVersion", v);
        }
        w.open("LanguageUpdateList", "");
        for (id, short) in &c.languages {
            w.open("ServerSyncLanguageData", "");
            w.leaf("LanguageID", &id.to_string());
            w.leaf("ShortLanguage", short);
            w.leaf("LongLanguage", short);
            w.leaf("Enabled", "true");
            w.close("ServerSyncLanguageData");
        }
        w.close("LanguageUpdateList");
    })
}

/// `GetRevisionIdList`'s answer.
pub fn revision_id_list_response(anchor: &str, ids: &[RevisionKey]) -> String {
    response("GetRevisionIdList", SYNC_NS, |w| {
        w.leaf("Anchor", anchor);
        w.open("NewRevisions", "");
        for (id, rev) in ids {
            identity(w, id, *rev);
        }
        w.close("NewRevisions");
    })
}

/// `GetUpdateData`'s answer in pieces, so an upstream sends one document
/// at a time: [`update_data_open`], an [`update_data_item`] per document,
/// [`update_data_files`], a [`file_url_item`] per file, [`update_data_close`].
pub fn update_data_open() -> String {
    format!("<GetUpdateDataResponse xmlns=\"{SYNC_NS}\"><GetUpdateDataResult><updates>")
}

pub fn update_data_item(u: &RawUpdate) -> String {
    let mut w = Xml::default();
    w.open("ServerSyncUpdateData", "").open("Id", "");
    w.leaf("UpdateID", &u.key.0);
    w.leaf("RevisionNumber", &u.key.1.to_string());
    w.close("Id");
    match &u.blob {
        Blob::Compressed(b64) => w.leaf("XmlUpdateBlobCompressed", b64),
        Blob::Plain(text) => w.leaf("XmlUpdateBlob", text),
    };
    w.close("ServerSyncUpdateData");
    w.finish()
}

pub fn update_data_files() -> &'static str {
    "</updates><fileUrls>"
}

pub fn file_url_item(u: &RawFileUrl) -> String {
    let mut w = Xml::default();
    w.open("ServerSyncUrlData", "");
    w.leaf("FileDigest", &u.digest);
    w.leaf("MUUrl", &u.mu_url);
    w.leaf("UssUrl", &u.uss_url);
    w.close("ServerSyncUrlData");
    w.finish()
}

pub fn update_data_close() -> &'static str {
    "</fileUrls></GetUpdateDataResult></GetUpdateDataResponse>"
}

/// A target group of a replica's upstream (`ServerSyncTargetGroup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroup {
    pub id: String,
    pub parent_id: String,
    pub name: String,
    pub builtin: bool,
}

/// An approval as a replica receives it (`ServerSyncDeployment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub update_id: String,
    pub revision: u32,
    /// `UpdateApprovalAction`: 0 install, 1 uninstall, 2 scan, 3 block,
    /// 5 bundle.
    pub action: i32,
    pub admin_name: String,
    pub deadline: String,
    pub is_assigned: bool,
    pub go_live_time: String,
    pub guid: String,
    pub target_group_id: String,
    pub download_priority: u8,
}

/// The approval action "install".
pub const ACTION_INSTALL: i32 = 0;
/// The approval action of an update bundled by an approved one.
pub const ACTION_BUNDLE: i32 = 5;

/// `GetDeployments`' answer (3.1.4.10).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deployments {
    pub anchor: Option<String>,
    pub groups: Vec<TargetGroup>,
    pub deployments: Vec<Deployment>,
    /// `DeploymentGuid`s no longer in force.
    pub dead: Vec<String>,
    /// Update ids declined upstream.
    pub hidden: Vec<String>,
}

/// `GetDeployments` (replica servers only).
pub fn get_deployments(
    cookie: &Cookie,
    deployment_anchor: Option<&str>,
    sync_anchor: &str,
) -> String {
    op("GetDeployments", SYNC_NS, |w| {
        cookie_xml(w, cookie);
        if let Some(a) = deployment_anchor {
            w.leaf("deploymentAnchor", a);
        }
        w.leaf("syncAnchor", sync_anchor);
    })
}

/// `GetDeployments`: `(deploymentAnchor, syncAnchor)`.
pub fn decode_deployments_request(op: &Element) -> Result<(Option<String>, String), SoapError> {
    let op = request(op, "GetDeployments")?;
    Ok((
        op.child_text("deploymentAnchor")
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned),
        op.child_text("syncAnchor")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    ))
}

pub fn deployments_response(d: &Deployments) -> String {
    let guids = |w: &mut Xml, name: &str, ids: &[String]| {
        w.open(name, "");
        for id in ids {
            w.leaf("guid", id);
        }
        w.close(name);
    };
    response("GetDeployments", SYNC_NS, |w| {
        if let Some(a) = &d.anchor {
            w.leaf("Anchor", a);
        }
        w.open("Groups", "");
        for g in &d.groups {
            w.open("ServerSyncTargetGroup", "");
            w.leaf("TargetGroupID", &g.id);
            w.leaf("ParentGroupId", &g.parent_id);
            w.leaf("Name", &g.name);
            w.leaf("IsBuiltin", bool_text(g.builtin));
            w.close("ServerSyncTargetGroup");
        }
        w.close("Groups");
        w.open("Deployments", "");
        for x in &d.deployments {
            w.open("ServerSyncDeployment", "");
            w.leaf("UpdateId", &x.update_id);
            w.leaf("RevisionNumber", &x.revision.to_string());
            w.leaf("Action", &x.action.to_string());
            w.leaf("AdminName", &x.admin_name);
            w.leaf("Deadline", &x.deadline);
            w.leaf("IsAssigned", bool_text(x.is_assigned));
            w.leaf("GoLiveTime", &x.go_live_time);
            w.leaf("DeploymentGuid", &x.guid);
            w.leaf("TargetGroupId", &x.target_group_id);
            w.leaf("DownloadPriority", &x.download_priority.to_string());
            w.close("ServerSyncDeployment");
        }
        w.close("Deployments");
        guids(w, "DeadDeployments", &d.dead);
        guids(w, "HiddenUpdates", &d.hidden);
        guids(w, "AcceptedEulas", &[]);
    })
}

pub fn decode_deployments(op: &Element) -> Result<Deployments, SoapError> {
    let r = result(op, "GetDeployments")?;
    let text = |e: &Element, n: &str| e.child_text(n).unwrap_or_default().trim().to_owned();
    let guids = |name: &str| -> Vec<String> {
        r.child(name)
            .into_iter()
            .flat_map(|l| l.children_named("guid"))
            .map(|g| g.text.trim().to_ascii_lowercase())
            .collect()
    };
    let groups = r
        .child("Groups")
        .into_iter()
        .flat_map(|g| g.children_named("ServerSyncTargetGroup"))
        .map(|g| TargetGroup {
            id: text(g, "TargetGroupID").to_ascii_lowercase(),
            parent_id: text(g, "ParentGroupId").to_ascii_lowercase(),
            name: text(g, "Name"),
            builtin: parse_bool(&text(g, "IsBuiltin")),
        })
        .collect();
    let mut deployments = Vec::new();
    for x in r
        .child("Deployments")
        .into_iter()
        .flat_map(|d| d.children_named("ServerSyncDeployment"))
    {
        let number = |n: &str| {
            text(x, n)
                .parse()
                .map_err(|_| SoapError::Malformed(format!("{n} of a deployment")))
        };
        deployments.push(Deployment {
            update_id: text(x, "UpdateId").to_ascii_lowercase(),
            revision: number("RevisionNumber")?,
            action: text(x, "Action")
                .parse()
                .map_err(|_| SoapError::Malformed("Action of a deployment".into()))?,
            admin_name: text(x, "AdminName"),
            deadline: text(x, "Deadline"),
            is_assigned: parse_bool(&text(x, "IsAssigned")),
            go_live_time: text(x, "GoLiveTime"),
            guid: text(x, "DeploymentGuid").to_ascii_lowercase(),
            target_group_id: text(x, "TargetGroupId").to_ascii_lowercase(),
            download_priority: text(x, "DownloadPriority").parse().unwrap_or(1),
        });
    }
    Ok(Deployments {
        anchor: r.child_text("Anchor").map(str::to_owned),
        groups,
        deployments,
        dead: guids("DeadDeployments"),
        hidden: guids("HiddenUpdates"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wsus::soap::{envelope, parse_envelope, parse_tree};

    fn cookie() -> Cookie {
        Cookie {
            expiration: "2026-10-04T20:09:27Z".into(),
            encrypted_data: "AAAA".into(),
        }
    }

    #[test]
    fn revision_id_list_request_carries_the_filter_in_schema_order() {
        let f = Filter {
            anchor: Some("9438,2026-10-04 16:25:43.836".into()),
            get_config: false,
            categories: vec![IdAndDelta {
                id: "8c3fcc84-7410-4a95-8b89-a166a0190486".into(),
                delta: true,
            }],
            classifications: vec![IdAndDelta {
                id: "e0789628-ce08-4437-be74-2495b842f43b".into(),
                delta: false,
            }],
            languages: vec![(1033, true)],
        };
        let body = get_revision_id_list(&cookie(), &f);
        let root = parse_tree(body.as_bytes()).unwrap();
        let op = root.path(&["Body", "GetRevisionIdList"]).unwrap();
        let filter = op.child("filter").unwrap();
        let names: Vec<_> = filter.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Anchor",
                "GetConfig",
                "Get63LanguageOnly",
                "Categories",
                "Classifications",
                "Languages"
            ]
        );
        let c = filter.path(&["Categories", "IdAndDelta"]).unwrap();
        assert_eq!(c.child_text("Delta"), Some("true"));
        assert_eq!(op.path(&["cookie", "EncryptedData"]).unwrap().text, "AAAA");
    }

    #[test]
    fn decodes_update_data_both_blob_forms_and_file_urls() {
        let body = envelope(&format!(
            "<GetUpdateDataResponse xmlns=\"{SYNC_NS}\"><GetUpdateDataResult><updates>\
             <ServerSyncUpdateData><Id><UpdateID>AB-1</UpdateID><RevisionNumber>200</RevisionNumber></Id>\
             <XmlUpdateBlobCompressed>TVNDRg==</XmlUpdateBlobCompressed></ServerSyncUpdateData>\
             <ServerSyncUpdateData><Id><UpdateID>ab-2</UpdateID><RevisionNumber>3</RevisionNumber></Id>\
             <XmlUpdateBlob>&lt;upd:Update/&gt;</XmlUpdateBlob></ServerSyncUpdateData></updates>\
             <fileUrls><ServerSyncUrlData><FileDigest>h/W9BGlYUAaqXTp30cZi/SiV3c0=</FileDigest>\
             <MUUrl>http://download.windowsupdate.com/a.exe</MUUrl><UssUrl /></ServerSyncUrlData></fileUrls>\
             </GetUpdateDataResult></GetUpdateDataResponse>"
        ));
        let op = parse_envelope(body.as_bytes()).unwrap();
        let (updates, urls) = decode_update_data(&op).unwrap();
        assert_eq!(updates[0].key, ("ab-1".to_string(), 200));
        assert_eq!(updates[0].blob, Blob::Compressed("TVNDRg==".into()));
        assert_eq!(updates[1].blob, Blob::Plain("<upd:Update/>".into()));
        assert_eq!(urls[0].mu_url, "http://download.windowsupdate.com/a.exe");
        assert_eq!(urls[0].uss_url, "");
    }

    #[test]
    fn decodes_the_handshake() {
        let auth = envelope(&format!(
            "<GetAuthConfigResponse xmlns=\"{SYNC_NS}\"><GetAuthConfigResult><LastChange>2026-10-04T13:16:35Z</LastChange>\
             <AuthInfo><AuthPlugInInfo><PlugInID>DssTargeting</PlugInID><ServiceUrl>{DSS_AUTH_PATH}</ServiceUrl>\
             <Parameter /></AuthPlugInInfo></AuthInfo></GetAuthConfigResult></GetAuthConfigResponse>"
        ));
        let plugins = decode_auth_config(&parse_envelope(auth.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            plugins,
            [("DssTargeting".to_string(), DSS_AUTH_PATH.to_string())]
        );
        let config = envelope(&format!(
            "<GetConfigDataResponse xmlns=\"{SYNC_NS}\"><GetConfigDataResult><CatalogOnlySync>false</CatalogOnlySync>\
             <MaxNumberOfUpdatesPerRequest>100</MaxNumberOfUpdatesPerRequest><NewConfigAnchor>1,x</NewConfigAnchor>\
             <LanguageUpdateList><ServerSyncLanguageData><LanguageID>1033</LanguageID><ShortLanguage>en</ShortLanguage>\
             </ServerSyncLanguageData></LanguageUpdateList></GetConfigDataResult></GetConfigDataResponse>"
        ));
        let c = decode_config_data(&parse_envelope(config.as_bytes()).unwrap()).unwrap();
        assert_eq!(c.max_updates_per_request, 100);
        assert_eq!(c.languages, [(1033, "en".to_string())]);
        let wrong = envelope("<GetCookieResponse/>");
        assert!(decode_config_data(&parse_envelope(wrong.as_bytes()).unwrap()).is_err());
    }

    /// Each request as the client writes it reads back the same on the
    /// upstream's side, and each answer as the upstream writes it reads
    /// back the same on the client's: one shape, both directions.
    #[test]
    fn requests_and_answers_round_trip_between_the_two_sides() {
        let op = |body: String| parse_envelope(body.as_bytes()).unwrap();
        let filter = Filter {
            anchor: Some("upcache:x:7".into()),
            get_config: false,
            categories: vec![IdAndDelta {
                id: "p1".into(),
                delta: true,
            }],
            classifications: vec![IdAndDelta {
                id: "c1".into(),
                delta: false,
            }],
            languages: vec![(1033, false)],
        };
        let got = decode_revision_id_list_request(&op(get_revision_id_list(&cookie(), &filter)));
        assert_eq!(got.unwrap(), filter);
        assert_eq!(
            request_cookie(&op(get_revision_id_list(&cookie(), &filter))),
            Some(cookie())
        );
        let ids = vec![("a".to_string(), 1), ("b".to_string(), 20)];
        assert_eq!(
            decode_update_data_request(&op(get_update_data(&cookie(), &ids))).unwrap(),
            ids
        );
        assert_eq!(
            decode_authorization_cookie_request(&op(get_authorization_cookie("dss.corp", "g-1")))
                .unwrap(),
            ("dss.corp".to_string(), "g-1".to_string())
        );
        let (auth, version) =
            decode_cookie_request(&op(get_cookie("DssTargeting", "QQ=="))).unwrap();
        assert_eq!(auth, [("DssTargeting".to_string(), "QQ==".to_string())]);
        assert_eq!(version, PROTOCOL_VERSION);
        assert_eq!(
            decode_config_data_request(&op(get_config_data(&cookie(), Some("c-1")))).unwrap(),
            Some("c-1".to_string())
        );
        assert_eq!(
            decode_deployments_request(&op(get_deployments(&cookie(), None, "s-1"))).unwrap(),
            (None, "s-1".to_string())
        );

        let answer = |inner: String| op(envelope(&inner));
        let plugins = vec![("DssTargeting".to_string(), DSS_AUTH_PATH.to_string())];
        assert_eq!(
            decode_auth_config(&answer(auth_config_response(
                "2026-01-01T00:00:00Z",
                &plugins
            )))
            .unwrap(),
            plugins
        );
        assert_eq!(
            decode_authorization_cookie(&answer(authorization_cookie_response(
                "DssTargeting",
                "QQ=="
            )))
            .unwrap(),
            ("DssTargeting".to_string(), "QQ==".to_string())
        );
        assert_eq!(
            decode_cookie(&answer(cookie_response(&cookie()))).unwrap(),
            cookie()
        );
        let config = ConfigData {
            max_updates_per_request: 100,
            languages: vec![(1033, "en".into())],
            new_config_anchor: Some("upcache:x".into()),
            protocol_version: Some("1.20".into()),
        };
        assert_eq!(
            decode_config_data(&answer(config_data_response(&config))).unwrap(),
            config
        );
        assert_eq!(
            decode_revision_id_list(&answer(revision_id_list_response("upcache:x:9", &ids)))
                .unwrap(),
            (Some("upcache:x:9".to_string()), ids.clone())
        );
        let updates = vec![
            RawUpdate {
                key: ("a".into(), 1),
                blob: Blob::Compressed("TVNDRg==".into()),
            },
            RawUpdate {
                key: ("b".into(), 20),
                blob: Blob::Plain("<upd:Update a=\"&amp;\"/>".into()),
            },
        ];
        let url = RawFileUrl {
            digest: "h/W9BGlYUAaqXTp30cZi/SiV3c0=".into(),
            mu_url: "http://dl/a.exe".into(),
            uss_url: "http://up:8530/Content/CD/X.exe".into(),
        };
        let mut body = update_data_open();
        for u in &updates {
            body.push_str(&update_data_item(u));
        }
        body.push_str(update_data_files());
        body.push_str(&file_url_item(&url));
        body.push_str(update_data_close());
        assert_eq!(
            decode_update_data(&answer(body)).unwrap(),
            (updates, vec![url])
        );
        let deployments = Deployments {
            anchor: Some("d-1".into()),
            groups: vec![TargetGroup {
                id: "a0a08746-4dbe-4a37-9adf-9e7652c0b421".into(),
                parent_id: "00000000-0000-0000-0000-000000000000".into(),
                name: "All Computers".into(),
                builtin: true,
            }],
            deployments: vec![Deployment {
                update_id: "a".into(),
                revision: 1,
                action: ACTION_INSTALL,
                admin_name: "upcache".into(),
                deadline: "9999-12-31T23:59:59Z".into(),
                is_assigned: true,
                go_live_time: "2026-01-01T00:00:00Z".into(),
                guid: "g".into(),
                target_group_id: "a0a08746-4dbe-4a37-9adf-9e7652c0b421".into(),
                download_priority: 1,
            }],
            dead: vec!["g0".into()],
            hidden: vec!["b".into()],
        };
        assert_eq!(
            decode_deployments(&answer(deployments_response(&deployments))).unwrap(),
            deployments
        );
    }
}
