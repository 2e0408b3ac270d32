//! The [MS-WSUSSS] messages a downstream server sends, and the decoding of
//! the answers: pure functions, tested on bodies written from the spec's
//! schema (section 3.1.4, WSDL in section 6).

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

/// `GetUpdateData`: the documents and the file locations.
pub fn decode_update_data(op: &Element) -> Result<(Vec<RawUpdate>, Vec<RawFileUrl>), SoapError> {
    let r = result(op, "GetUpdateData")?;
    let mut updates = Vec::new();
    for u in r
        .child("updates")
        .into_iter()
        .flat_map(|u| u.children_named("ServerSyncUpdateData"))
    {
        let key = decode_identity(u.child("Id").ok_or(SoapError::Unexpected {
            expected: "<Id> in <ServerSyncUpdateData>".into(),
            got: "nothing".into(),
        })?)?;
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
        updates.push(RawUpdate { key, blob });
    }
    let urls = r
        .child("fileUrls")
        .into_iter()
        .flat_map(|u| u.children_named("ServerSyncUrlData"))
        .map(|u| RawFileUrl {
            digest: u
                .child_text("FileDigest")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            mu_url: u.child_text("MUUrl").unwrap_or_default().trim().to_owned(),
            uss_url: u.child_text("UssUrl").unwrap_or_default().trim().to_owned(),
        })
        .collect();
    Ok((updates, urls))
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
}
