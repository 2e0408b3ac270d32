//! upcache as the update server of a Windows client ([MS-WUSP]): a client
//! simulator drives the sequence a Windows 11 client runs (GetConfig →
//! GetAuthorizationCookie → GetCookie → RegisterComputer →
//! StartCategoryScan → SyncUpdates pages → the driver pass →
//! GetExtendedUpdateInfo → the download → ReportEventBatch) against
//! documents synced from the fake [MS-WSUSSS] upstream.
//!
//! Request bodies are written here from the spec's schema (section 2.2 and
//! the section 4 examples); answers are read with plain string searches,
//! not with upcache's parser, so a parser bug cannot agree with itself.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;
use sha1::Digest as _;

use crate::common::*;
use crate::fake_wsus::*;
use upcache::demo::SampleFile;

pub(crate) const CLIENT_NS: &str =
    "http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService";
pub(crate) const AUTH_NS: &str =
    "http://www.microsoft.com/SoftwareDistribution/Server/SimpleAuthWebService";
pub(crate) const REPORTING_NS: &str = "http://www.microsoft.com/SoftwareDistribution";
const CLIENT_ID: &str = "e1da06a3-5601-43c9-bac3-52d5db701494";

pub(crate) fn envelope(inner: &str) -> String {
    format!(
        "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>{inner}</s:Body></s:Envelope>"
    )
}

/// The text between `<tag>` and `</tag>`, every occurrence.
pub(crate) fn all_between<'a>(body: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find(&open) {
        let from = start + open.len();
        let Some(len) = rest[from..].find(&close) else {
            break;
        };
        out.push(&rest[from..from + len]);
        rest = &rest[from + len + close.len()..];
    }
    out
}

pub(crate) fn between<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    all_between(body, tag).into_iter().next()
}

pub(crate) fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// One update as `SyncUpdates` offered it.
#[derive(Debug, Clone)]
pub(crate) struct Offer {
    pub(crate) rid: i64,
    pub(crate) update_id: String,
    pub(crate) action: String,
    pub(crate) is_leaf: bool,
    /// Its deployment's `LastChangeTime`.
    pub(crate) last_change: String,
    /// The call (1-based) it came in.
    pub(crate) call: usize,
}

/// Where a client talks: a listener's base URL and an HTTP client for it.
#[derive(Clone)]
pub(crate) struct Endpoint {
    http: reqwest::Client,
    base: String,
}

impl Endpoint {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// What can be reached: the harness's plain HTTP listener, or an endpoint.
pub(crate) trait Reach {
    fn endpoint(&self) -> Endpoint;
}

impl Reach for Harness {
    fn endpoint(&self) -> Endpoint {
        Endpoint {
            http: self.http.clone(),
            base: self.url(""),
        }
    }
}

impl Reach for Endpoint {
    fn endpoint(&self) -> Endpoint {
        self.clone()
    }
}

/// A Windows client: its cookie, and what it has cached and installed.
pub(crate) struct Client {
    to: Endpoint,
    cookie: String,
    /// Update ids this machine has (categories, detectoids, the servicing stack).
    pub(crate) machine: HashSet<String>,
    installed_non_leaf: Vec<i64>,
    other_cached: Vec<i64>,
}

/// A SOAP call's status and body.
async fn soap(to: &impl Reach, path: &str, action: &str, body: String) -> (u16, String) {
    let to = to.endpoint();
    let r = to
        .http
        .post(to.url(path))
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("SOAPAction", format!("\"{action}\""))
        .header(
            "User-Agent",
            "Windows-Update-Agent/1507.2601.30012.0 Client-Protocol/2.90",
        )
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn client_call(h: &impl Reach, op: &str, inner: &str) -> (u16, String) {
    soap(
        h,
        "/ClientWebService/client.asmx",
        &format!("{CLIENT_NS}/{op}"),
        envelope(&format!("<{op} xmlns=\"{CLIENT_NS}\">{inner}</{op}>")),
    )
    .await
}

fn cookie_xml(name: &str, data: &str) -> String {
    format!("<{name}><Expiration>2026-10-04T16:03:35Z</Expiration><EncryptedData>{data}</EncryptedData></{name}>")
}

impl Client {
    /// GetConfig → GetAuthorizationCookie → GetCookie, as a client starts.
    pub(crate) async fn start(h: &impl Reach, group: &str) -> Client {
        let (status, config) =
            client_call(h, "GetConfig", "<protocolVersion>2.90</protocolVersion>").await;
        assert_eq!(status, 200, "{config}");
        assert_eq!(
            between(&config, "PlugInID"),
            Some("SimpleTargeting"),
            "{config}"
        );
        let service = between(&config, "ServiceUrl").unwrap();
        let auth = authorization_cookie(h, service, group).await;
        let cookie = client_cookie(h, &auth).await;
        Client {
            to: h.endpoint(),
            cookie,
            machine: HashSet::new(),
            installed_non_leaf: Vec::new(),
            other_cached: Vec::new(),
        }
    }

    /// A client that kept its cookie (across a server restart).
    fn resume(h: &impl Reach, cookie: &str) -> Client {
        Client {
            to: h.endpoint(),
            cookie: cookie.to_owned(),
            machine: HashSet::new(),
            installed_non_leaf: Vec::new(),
            other_cached: Vec::new(),
        }
    }

    async fn call(&self, op: &str, inner: &str) -> (u16, String) {
        let cookie = cookie_xml("cookie", &self.cookie);
        client_call(&self.to, op, &format!("{cookie}{inner}")).await
    }

    pub(crate) async fn register(&self) {
        let (status, body) = self
            .call(
                "RegisterComputer",
                "<computerInfo><DnsName>pc1.example.test</DnsName><OSMajorVersion>10</OSMajorVersion>\
                 <OSMinorVersion>0</OSMinorVersion><OSBuildNumber>26200</OSBuildNumber>\
                 <OSServicePackMajorNumber>0</OSServicePackMajorNumber><OSServicePackMinorNumber>0</OSServicePackMinorNumber>\
                 <OSLocale>en-US</OSLocale><ComputerManufacturer>QEMU</ComputerManufacturer>\
                 <ComputerModel>Standard PC (Q35 + ICH9, 2009)</ComputerModel><ProcessorArchitecture>AMD64</ProcessorArchitecture>\
                 <OSDescription>Windows 11 Pro</OSDescription></computerInfo>",
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("RegisterComputerResponse"), "{body}");
    }

    fn ints(ids: &[i64]) -> String {
        ids.iter().map(|i| format!("<int>{i}</int>")).collect()
    }

    /// One `SyncUpdates`; `Err` is the fault's body.
    async fn sync_once(&self, driver_pass: bool) -> Result<String, String> {
        let mut p = String::from("<parameters><ExpressQuery>false</ExpressQuery>");
        if !self.installed_non_leaf.is_empty() {
            p += &format!(
                "<InstalledNonLeafUpdateIDs>{}</InstalledNonLeafUpdateIDs>",
                Self::ints(&self.installed_non_leaf)
            );
        }
        if !self.other_cached.is_empty() {
            p += &format!(
                "<OtherCachedUpdateIDs>{}</OtherCachedUpdateIDs>",
                Self::ints(&self.other_cached)
            );
        }
        p += &format!("<SkipSoftwareSync>{driver_pass}</SkipSoftwareSync>");
        p += "<NeedTwoGroupOutOfScopeUpdates>true</NeedTwoGroupOutOfScopeUpdates>\
              <AlsoPerformRegularSync>false</AlsoPerformRegularSync><ComputerSpec/>";
        if driver_pass {
            // As a Windows 11 client sends it: per device its hardware and
            // compatible ids (`ArrayOfString`) and its installed driver.
            p += "<SystemSpec><Device><HardwareIDs><string>PCI\\VEN_8086&amp;DEV_10D3&amp;SUBSYS_11001AF4&amp;REV_00</string>\
                  <string>PCI\\VEN_8086&amp;DEV_10D3&amp;SUBSYS_11001AF4</string><string>PCI\\VEN_8086&amp;DEV_10D3</string></HardwareIDs>\
                  <CompatibleIDs><string>PCI\\VEN_8086&amp;CC_020000</string><string>PCI\\VEN_8086&amp;CC_0200</string></CompatibleIDs>\
                  <installedDriver><MatchingID>PCI\\VEN_8086&amp;DEV_10D3</MatchingID><DriverVerDate>2006-06-21T00:00:00Z</DriverVerDate>\
                  <DriverVerVersion>2814751477604196</DriverVerVersion><Class>Net</Class><DriverRank>16719873</DriverRank></installedDriver></Device>\
                  <Device><HardwareIDs><string>ROOT\\BasicDisplay</string></HardwareIDs></Device></SystemSpec>";
        }
        p += "<ProductsParameters><SyncCurrentVersionOnly>false</SyncCurrentVersionOnly>\
              <DeviceAttributes>App=WU_OS;OSVersion=10.0.26200.8037;</DeviceAttributes><Products/></ProductsParameters></parameters>";
        let (status, body) = self.call("SyncUpdates", &p).await;
        match status {
            200 => Ok(body),
            _ => Err(body),
        }
    }

    /// SyncUpdates until nothing new comes: each non-leaf update this
    /// machine has is reported installed on the next call, as a client
    /// evaluates them. Returns every offer, in order.
    pub(crate) async fn scan(&mut self) -> Vec<Offer> {
        let mut offers = Vec::new();
        for call in 1..=30 {
            let body = self.sync_once(false).await.expect("SyncUpdates");
            let new = between(&body, "NewUpdates").unwrap_or_default();
            let infos = all_between(new, "UpdateInfo");
            for info in &infos {
                let offer = parse_offer(info, call);
                if !offer.is_leaf && self.machine.contains(&offer.update_id) {
                    self.installed_non_leaf.push(offer.rid);
                } else {
                    self.other_cached.push(offer.rid);
                }
                offers.push(offer);
            }
            let cookie = between(&body, "NewCookie").and_then(|c| between(c, "EncryptedData"));
            self.cookie = cookie.expect("a new cookie with every page").to_owned();
            let truncated = between(&body, "Truncated") == Some("true");
            if infos.is_empty() && !truncated {
                return offers;
            }
        }
        panic!("the scan did not end in 30 calls: {offers:#?}");
    }

    pub(crate) async fn extended(&self, rids: &[i64]) -> String {
        let (status, body) = self
            .call(
                "GetExtendedUpdateInfo",
                &format!(
                    "<revisionIDs>{}</revisionIDs><infoTypes><XmlUpdateFragmentType>Extended</XmlUpdateFragmentType>\
                     <XmlUpdateFragmentType>LocalizedProperties</XmlUpdateFragmentType></infoTypes>\
                     <locales><string>en-US</string><string>en</string></locales>",
                    Self::ints(rids)
                ),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

fn parse_offer(info: &str, call: usize) -> Offer {
    let deployment = between(info, "Deployment").expect("every update has a Deployment");
    let action = between(deployment, "Action").expect("a deployment action");
    let core = unescape(between(info, "Xml").expect("the core fragment"));
    let id_at = core.find("UpdateID=\"").expect("UpdateIdentity") + 10;
    Offer {
        rid: info[4..info.find("</ID>").unwrap()].parse().unwrap(),
        update_id: core[id_at..id_at + 36].to_ascii_lowercase(),
        action: action.to_owned(),
        is_leaf: between(info, "IsLeaf") == Some("true"),
        last_change: between(deployment, "LastChangeTime")
            .expect("[MS-WUSP] 2.2.2.2.4: LastChangeTime MUST be present")
            .to_owned(),
        call,
    }
}

async fn authorization_cookie(h: &impl Reach, service: &str, group: &str) -> String {
    let (status, body) = soap(
        h,
        service,
        &format!("{AUTH_NS}/GetAuthorizationCookie"),
        envelope(&format!(
            "<GetAuthorizationCookie xmlns=\"{AUTH_NS}\"><clientId>{CLIENT_ID}</clientId>\
             <targetGroupName>{group}</targetGroupName><dnsName>pc1.example.test</dnsName></GetAuthorizationCookie>"
        )),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(between(&body, "PlugInId"), Some("SimpleTargeting"));
    between(&body, "CookieData").unwrap().to_owned()
}

async fn client_cookie(h: &impl Reach, auth: &str) -> String {
    let (status, body) = client_call(
        h,
        "GetCookie",
        &format!(
            "<authCookies><AuthorizationCookie><PlugInId>SimpleTargeting</PlugInId><CookieData>{auth}</CookieData>\
             </AuthorizationCookie></authCookies><oldCookie><Expiration>2026-10-04T15:03:36Z</Expiration></oldCookie>\
             <lastChange>2026-10-04T13:17:07.59Z</lastChange><currentTime>2026-10-04T15:03:36Z</currentTime>\
             <protocolVersion>2.90</protocolVersion>"
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(between(&body, "Expiration").is_some());
    between(&body, "EncryptedData").unwrap().to_owned()
}

/// A server sync that must end without an error.
pub(crate) async fn sync_now(h: &Harness, upstream: &str) -> Value {
    let report = h.sync_from_server(upstream).await;
    assert_eq!(report["error"], Value::Null, "{report}");
    report
}

/// A server whose metadata store holds the fake upstream's catalog.
pub(crate) async fn synced(h: &Harness) -> FakeWsus {
    let file = SampleFile::generate("2267602", "exe", 200_000);
    h.upstream.add(&file.path, file.bytes.clone());
    let fake = FakeWsus::start(file, &h.upstream.url("")).await;
    sync_now(h, &fake.url).await;
    select_categories(h).await;
    let report = sync_now(h, &fake.url).await;
    assert_eq!(report["revisions_new"], 5, "{report}");
    fake
}

pub(crate) fn machine() -> HashSet<String> {
    [PRODUCT, CLASSIFICATION, SECURITY, DETECTOID, MIDDLE]
        .into_iter()
        .map(String::from)
        .collect()
}

pub(crate) fn by_id(offers: &[Offer]) -> HashMap<&str, &Offer> {
    offers.iter().map(|o| (o.update_id.as_str(), o)).collect()
}

/// The FileLocation URL of `sha1` in an answer.
fn location_of(body: &str, sha1: &[u8]) -> String {
    use base64::Engine as _;
    let digest = base64::engine::general_purpose::STANDARD.encode(sha1);
    all_between(body, "FileLocation")
        .into_iter()
        .find(|l| between(l, "FileDigest") == Some(digest.as_str()))
        .and_then(|l| between(l, "Url"))
        .map(unescape)
        .unwrap_or_else(|| panic!("no FileLocation for {digest}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_client_scans_downloads_and_reports_through_upcache() {
    let h = Harness::with(|c| c.update_server.wusp_page_size = 2).await;
    the_whole_sequence(&h, &h.endpoint()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_sequence_runs_over_the_https_listener() {
    let certs = tempfile::tempdir().unwrap();
    let pki = private_ca(certs.path(), "corp");
    let files = pki.files.clone();
    let h = Harness::with(|c| {
        c.update_server.wusp_page_size = 2;
        c.content.set_https("127.0.0.1:0".parse().unwrap(), files);
    })
    .await;
    let tls = h.running().content_tls_addr.expect("an HTTPS listener");
    // The name the certificate carries, as a client's WUServer would.
    let to = Endpoint {
        http: trusting(&pki.ca),
        base: format!("https://localhost:{}", tls.port()),
    };
    the_whole_sequence(&h, &to).await;
}

/// GetConfig → GetAuthorizationCookie → GetCookie → RegisterComputer →
/// StartCategoryScan → SyncUpdates pages → the driver pass →
/// GetExtendedUpdateInfo → the download → ReportEventBatch, against `to`
/// (the plain or the HTTPS listener of `h`).
async fn the_whole_sequence(h: &Harness, to: &Endpoint) {
    let fake = synced(h).await;
    h.set_state(OLD, "decline").await;

    let mut pc = Client::start(to, "Pilot").await;
    pc.machine = machine();
    pc.register().await;
    let (status, body) = pc
        .call(
            "StartCategoryScan",
            "<requestedCategories><CategoryRelationship><IndexOfAndGroup>0</IndexOfAndGroup>\
             <CategoryId>8c3fcc84-7410-4a95-8b89-a166a0190486</CategoryId></CategoryRelationship></requestedCategories>",
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Nothing approved: everything is offered to evaluate, nothing to install.
    let offers = pc.scan().await;
    let seen = by_id(&offers);
    assert!(offers.iter().all(|o| o.action == "Evaluate"), "{offers:#?}");
    for id in [
        PRODUCT,
        CLASSIFICATION,
        DETECTOID,
        MIDDLE,
        TOP,
        BUNDLE,
        LEAF,
    ] {
        assert!(seen.contains_key(id), "{id} never offered: {offers:#?}");
    }
    assert!(!seen.contains_key(OLD), "a declined update is not offered");
    // Pages of 2 with Truncated; the chain detectoid → middle → top is
    // walked one step per call.
    assert!(offers.iter().filter(|o| o.call == 1).count() == 2);
    assert!(seen[DETECTOID].call < seen[MIDDLE].call);
    assert!(seen[MIDDLE].call < seen[TOP].call, "{offers:#?}");
    assert!(!seen[MIDDLE].is_leaf && seen[TOP].is_leaf);

    // The unapproved leaf's file: a location on upcache, refused there,
    // and never fetched upstream.
    let ext = pc.extended(&[seen[LEAF].rid]).await;
    let url = location_of(&ext, &fake.file.sha1.0);
    assert!(url.starts_with(&to.url("/Content/")), "{url}");
    let r = to.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(h.upstream.requests(&fake.file.path), 0);

    // Approved: the cached bundle comes back as changed (Install, its
    // leaf Bundle), and a fresh scan offers it to install.
    h.set_state(BUNDLE, "approve").await;
    let body = pc.sync_once(false).await.unwrap();
    let changed = between(&body, "ChangedUpdates").expect("changed updates");
    let actions: Vec<_> = all_between(changed, "Action");
    assert!(
        actions.contains(&"Install") && actions.contains(&"Bundle"),
        "{body}"
    );
    let mut fresh = Client::start(to, "Pilot").await;
    fresh.machine = machine();
    let offers = fresh.scan().await;
    let seen = by_id(&offers);
    assert_eq!(seen[BUNDLE].action, "Install");
    assert_eq!(seen[LEAF].action, "Bundle");
    assert_eq!(
        seen[TOP].action, "Evaluate",
        "only approved updates install"
    );

    // The driver pass: no drivers here, and no fault.
    let body = fresh.sync_once(true).await.unwrap();
    assert_eq!(between(&body, "Truncated"), Some("false"), "{body}");

    // Extended and localized fragments, and the file through upcache.
    let ext = fresh.extended(&[seen[LEAF].rid, seen[BUNDLE].rid]).await;
    let fragments: Vec<String> = all_between(&ext, "Xml").into_iter().map(unescape).collect();
    assert!(
        fragments
            .iter()
            .any(|f| f.starts_with("<ExtendedProperties")),
        "{ext}"
    );
    assert!(
        fragments.iter().any(|f| f.contains("<Files><File Digest=")),
        "{ext}"
    );
    assert!(
        fragments.iter().any(|f| f.contains("<Title>Full Deltas")),
        "{ext}"
    );
    let url = location_of(&ext, &fake.file.sha1.0);
    let r = to.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    assert_eq!(sha1::Sha1::digest(&bytes).as_slice(), fake.file.sha1.0);
    assert_eq!(h.upstream.requests(&fake.file.path), 1);
    // GetFileLocations answers the same place by digest.
    let (status, body) = fresh
        .call(
            "GetFileLocations",
            &format!(
                "<fileDigests><base64Binary>{}</base64Binary></fileDigests>",
                {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.encode(fake.file.sha1.0)
                }
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(location_of(&body, &fake.file.sha1.0), url);

    // Reports: two events of the install.
    let event = |id: u32| {
        format!(
            "<ReportingEvent><BasicData><TargetID><Sid>{CLIENT_ID}</Sid></TargetID><SequenceNumber>{id}</SequenceNumber>\
             <TimeAtTarget>2026-10-04T15:21:00Z</TimeAtTarget><EventInstanceID>7e6a9a6a-0000-4000-8000-00000000000{id}</EventInstanceID>\
             <NamespaceID>1</NamespaceID><EventID>{id}</EventID><SourceID>1</SourceID>\
             <UpdateID><UpdateID>{BUNDLE}</UpdateID><RevisionNumber>200</RevisionNumber></UpdateID>\
             <Win32HResult>0</Win32HResult><AppName>AutomaticUpdates</AppName></BasicData>\
             <ExtendedData><ReplacementStrings><string>Security Intelligence Update</string></ReplacementStrings></ExtendedData>\
             <PrivateData>Provider=Windows Update</PrivateData></ReportingEvent>"
        )
    };
    let (status, body) = soap(
        to,
        "/ReportingWebService/ReportingWebService.asmx",
        &format!("{REPORTING_NS}/ReportEventBatch"),
        envelope(&format!(
            "<ReportEventBatch xmlns=\"{REPORTING_NS}\">{}<clientTime>2026-10-04T15:21:01Z</clientTime>\
             <eventBatch>{}{}</eventBatch></ReportEventBatch>",
            cookie_xml("cookie", &fresh.cookie),
            event(182),
            event(183)
        )),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(between(&body, "ReportEventBatchResult"), Some("true"));

    // The computer, with its events.
    let computers = h.admin_json("/api/v1/computers").await;
    let pc1 = &computers["computers"][0];
    assert_eq!(pc1["id"], CLIENT_ID, "{computers}");
    assert_eq!(pc1["name"], "pc1.example.test");
    assert_eq!(pc1["os"], "Windows 11 Pro");
    assert_eq!(pc1["os_version"], "10.0.26200");
    assert_eq!(pc1["target_group"], "Pilot");
    assert_eq!(pc1["address"], "127.0.0.1");
    assert!(pc1["last_scan"].as_i64().unwrap() > 0);
    assert_eq!(pc1["events"], 2);
    let events = h
        .admin_json(&format!("/api/v1/computers/{CLIENT_ID}/events"))
        .await;
    assert_eq!(events[1]["event_id"], "183", "{events}");
    assert_eq!(events[1]["update_id"], BUNDLE);
    assert!(events[1]["event"].to_string().contains("AutomaticUpdates"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_forged_cookie_is_a_fault_and_the_client_recovers() {
    let mut h = Harness::new().await;
    let cookie = Client::start(&h, "").await.cookie;
    assert!(Client::resume(&h, &cookie).sync_once(false).await.is_ok());

    // A restart keeps the key: the issued cookie still works.
    h.restart().await;
    let pc = Client::resume(&h, &cookie);
    assert!(
        pc.sync_once(false).await.is_ok(),
        "a restart keeps cookies valid"
    );

    // Forged: InvalidCookie.
    let mut altered = cookie.clone().into_bytes();
    altered[8] = if altered[8] == b'B' { b'C' } else { b'B' };
    let forged = Client::resume(&h, std::str::from_utf8(&altered).unwrap());
    let fault = forged.sync_once(false).await.unwrap_err();
    assert_eq!(
        between(&fault, "ErrorCode"),
        Some("InvalidCookie"),
        "{fault}"
    );

    // Short-lived cookies expire: CookieExpired, then a new cookie works.
    h.restart_with(|c| c.update_server.wusp_cookie_lifetime_secs = 1)
        .await;
    let short = Client::start(&h, "").await.cookie;
    let mut fault = String::new();
    within(
        "the cookie's expiry",
        Duration::from_secs(10),
        async || match Client::resume(&h, &short).sync_once(false).await {
            Ok(_) => false,
            Err(body) => {
                fault = body;
                true
            }
        },
    )
    .await;
    assert_eq!(
        between(&fault, "ErrorCode"),
        Some("CookieExpired"),
        "{fault}"
    );
    h.restart_with(|c| c.update_server.wusp_cookie_lifetime_secs = 3600)
        .await;
    let expired = Client::resume(&h, &short);
    assert!(
        expired.sync_once(false).await.is_err(),
        "expired stays expired"
    );
    let again = Client::start(&h, "").await;
    assert!(again.sync_once(false).await.is_ok(), "recovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_server_answers_an_empty_scan_and_bad_calls_get_faults() {
    let h = Harness::with(|c| c.update_server.wusp_max_body_bytes = 64 << 10).await;
    let mut pc = Client::start(&h, "").await;
    assert!(pc.scan().await.is_empty(), "no documents: an empty set");

    // An unknown operation: the spec's fault, not a 404 or a 500 page.
    let (status, body) = pc.call("NoSuchOperation", "").await;
    assert_eq!(status, 500);
    assert_eq!(
        between(&body, "ErrorCode"),
        Some("InvalidParameters"),
        "{body}"
    );
    // SyncPrinterCatalog (3.1.5.12) is an operation: no printer catalog
    // here, so an empty set and a fresh cookie.
    let (status, body) = pc
        .call(
            "SyncPrinterCatalog",
            "<installedNonLeafUpdateIDs/><printerUpdateIDs/><deviceAttributes>App=WU_OS</deviceAttributes>",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(between(&body, "NewUpdates"), Some(""), "{body}");
    assert_eq!(between(&body, "Truncated"), Some("false"), "{body}");
    assert!(between(&body, "NewCookie").is_some(), "{body}");
    // Malformed envelopes, a DTD, an oversized body.
    let (status, body) = soap(&h, "/ClientWebService/client.asmx", "x", "<a>".into()).await;
    assert_eq!(
        (status, between(&body, "faultcode")),
        (500, Some("soap:Client"))
    );
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY a \"aaaa\">]><a>&a;</a>".to_owned();
    let (status, _) = soap(&h, "/ClientWebService/client.asmx", "x", bomb).await;
    assert_eq!(status, 500);
    let big = envelope(&"<a/>".repeat(20_000));
    let (status, _) = soap(&h, "/SimpleAuthWebService/SimpleAuth.asmx", "x", big).await;
    assert_eq!(status, 413);
    // ?wsdl on each service.
    for (path, op) in [
        ("/ClientWebService/client.asmx", "SyncUpdates"),
        (
            "/SimpleAuthWebService/SimpleAuth.asmx",
            "GetAuthorizationCookie",
        ),
        (
            "/ReportingWebService/ReportingWebService.asmx",
            "ReportEventBatch",
        ),
        ("/ReportingWebService/WebService.asmx", "ReportEventBatch"),
    ] {
        let r = h.get(&format!("{path}?wsdl")).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.text().await.unwrap().contains(op), "{path}");
    }
    // The content listener is unchanged beside it.
    assert_eq!(h.get("/healthz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_update_directory_serves_the_files_put_there_and_nothing_else() {
    let h = Harness::new().await;
    // Before anything is put there: the directory exists, its files do not.
    assert_eq!(h.get("/selfupdate/wuident.cab").await.status(), 404);
    let root = h.dir.path().join("selfupdate");
    std::fs::create_dir_all(root.join("WSUS3").join("x64")).unwrap();
    let ident = b"MSCF\0\0\0\0 a signed wuident.cab".to_vec();
    std::fs::write(root.join("wuident.cab"), &ident).unwrap();
    std::fs::write(
        root.join("WSUS3/x64/WUClient-SelfUpdate-Core.cab"),
        b"MSCF core",
    )
    .unwrap();

    // As Windows Update Agent asks: any case, a cache-busting query.
    for path in [
        "/selfupdate/wuident.cab?0805191547",
        "/SelfUpdate/WUIDENT.CAB",
        "/SELFUPDATE/wuident.cab",
    ] {
        let r = h.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/vnd.ms-cab-compressed"
        );
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            ident.as_slice(),
            "{path}"
        );
    }
    let r = h
        .get("/selfupdate/wsus3/X64/wuclient-selfupdate-core.cab")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"MSCF core");
    let head = h
        .http
        .head(h.url("/selfupdate/wuident.cab"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        ident.len().to_string().as_str()
    );

    // Nothing else: missing names, the directory itself, other methods,
    // and no way out of the folder (the data directory's files stay there).
    assert_eq!(h.get("/selfupdate/missing.cab").await.status(), 404);
    assert_eq!(h.get("/selfupdate/").await.status(), 404);
    let post = h
        .http
        .post(h.url("/selfupdate/wuident.cab"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    assert_eq!(h.raw_status("/selfupdate/../catalog.sqlite3").await, 400);
    assert_eq!(
        h.raw_status("/selfupdate/%2e%2e/catalog.sqlite3").await,
        400
    );
    assert_eq!(h.raw_status("/SelfUpdate/../../etc/passwd").await, 400);
    // The content paths beside it are unchanged.
    assert_eq!(h.get("/healthz").await.status(), 200);
}

/// A driver update as [MS-WUSP] 2.2 describes one: `UpdateType="Driver"`,
/// in the synced product and classification, and per hardware id a
/// `WindowsDriverMetaData` in its applicability metadata.
fn driver(id: &str, title: &str, hardware_ids: &[&str]) -> Doc {
    let metadata: String = hardware_ids
        .iter()
        .map(|hw| {
            format!(
                "<drv:WindowsDriverMetaData HardwareID=\"{}\" WhqlDriverID=\"1337\" Manufacturer=\"Intel\" \
                 Company=\"Intel\" Provider=\"Intel\" DriverVerDate=\"2025-03-01\" DriverVerVersion=\"12.19.2.62\" \
                 Class=\"Net\" />",
                hw.replace('&', "&amp;")
            )
        })
        .collect();
    let xml = format!(
        "<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\" \
         xmlns:drv=\"http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/WindowsDriver\">\
         <upd:UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"101\" />\
         <upd:Properties UpdateType=\"Driver\" DefaultPropertiesLanguage=\"en\" PublicationState=\"Published\" \
         CreationDate=\"2026-10-04T12:00:58.381Z\" />\
         <upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language>\
         <upd:Title>{title}</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection>\
         <upd:Relationships><upd:Prerequisites>\
         <upd:AtLeastOne IsCategory=\"true\"><upd:UpdateIdentity UpdateID=\"{CLASSIFICATION}\" /></upd:AtLeastOne>\
         <upd:AtLeastOne IsCategory=\"true\"><upd:UpdateIdentity UpdateID=\"{PRODUCT}\" /></upd:AtLeastOne>\
         </upd:Prerequisites></upd:Relationships>\
         <upd:ApplicabilityRules><upd:Metadata>{metadata}</upd:Metadata></upd:ApplicabilityRules>\
         <upd:HandlerSpecificData xsi:type=\"drv:WindowsDriver\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
         <drv:WindowsDriver /></upd:HandlerSpecificData></upd:Update>"
    );
    Doc {
        id: id.into(),
        rev: 101,
        xml,
        config: false,
        compressed: true,
        since: 0,
    }
}

const NIC: &str = "d0000000-0000-4000-8000-00000000000a";
const NIC_OTHER: &str = "d0000000-0000-4000-8000-00000000000b";
const GPU: &str = "d0000000-0000-4000-8000-00000000000c";
const BY_CLASS: &str = "d0000000-0000-4000-8000-00000000000d";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_pass_offers_approved_drivers_for_the_computers_devices() {
    let h = Harness::new().await;
    let fake = synced(&h).await;
    // Drivers for this computer's network card (by hardware id, and one
    // more by compatible id), and one for a device it does not have.
    fake.publish(driver(
        NIC,
        "Intel Ethernet driver",
        &["PCI\\VEN_8086&DEV_10D3"],
    ));
    fake.publish(driver(
        NIC_OTHER,
        "Intel Ethernet driver (beta)",
        &["PCI\\VEN_8086&DEV_10D3"],
    ));
    fake.publish(driver(
        GPU,
        "NVIDIA display driver",
        &["PCI\\VEN_10DE&DEV_2204"],
    ));
    fake.publish(driver(
        BY_CLASS,
        "Intel network class driver",
        &["pci\\ven_8086&cc_0200"],
    ));
    let report = sync_now(&h, &fake.url).await;
    assert_eq!(report["revisions_new"], 4, "{report}");

    let mut pc = Client::start(&h, "").await;
    pc.machine = machine();
    let offers = pc.scan().await;
    let seen = by_id(&offers);
    for d in [NIC, NIC_OTHER, GPU, BY_CLASS] {
        assert!(!seen.contains_key(d), "the software pass offers no driver");
    }
    // Nothing approved: nothing for the driver pass, and the client is
    // told so on its software pages.
    let body = pc.sync_once(false).await.unwrap();
    assert_eq!(
        between(&body, "DriverSyncNotNeeded"),
        Some("true"),
        "{body}"
    );
    let body = pc.sync_once(true).await.unwrap();
    assert!(all_between(&body, "UpdateInfo").is_empty(), "{body}");

    for d in [NIC, GPU, BY_CLASS] {
        h.set_state(d, "approve").await;
    }
    let body = pc.sync_once(false).await.unwrap();
    assert_eq!(
        between(&body, "DriverSyncNotNeeded"),
        Some("false"),
        "{body}"
    );
    let body = pc.sync_once(true).await.unwrap();
    let new = between(&body, "NewUpdates").unwrap_or_default();
    let drivers: Vec<Offer> = all_between(new, "UpdateInfo")
        .iter()
        .map(|i| parse_offer(i, 1))
        .collect();
    let ids: HashSet<&str> = drivers.iter().map(|o| o.update_id.as_str()).collect();
    assert_eq!(ids, HashSet::from([NIC, BY_CLASS]), "{drivers:#?}");
    assert!(
        drivers.iter().all(|o| o.action == "Install"),
        "{drivers:#?}"
    );
    // Its extended fragment carries the driver's metadata to the client.
    let ext = pc
        .extended(&drivers.iter().map(|o| o.rid).collect::<Vec<_>>())
        .await;
    assert!(
        unescape(&ext).contains("<Title>Intel Ethernet driver</Title>"),
        "{ext}"
    );

    // Cached, it is not offered again.
    pc.other_cached.extend(drivers.iter().map(|o| o.rid));
    let body = pc.sync_once(true).await.unwrap();
    let new = between(&body, "NewUpdates").unwrap_or_default();
    assert!(all_between(new, "UpdateInfo").is_empty(), "{body}");
}

/// [MS-WUSP] 2.2.2.2.4: a deployment's `LastChangeTime` is the date (an
/// `s:date`) its approval was made: an approval made on another day shows
/// that day (the bundle's leaf, deployed with it, too), and one taken back
/// and made again shows the day it was made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_is_dated_by_its_approval_and_a_new_approval_dates_it_anew() {
    let h = Harness::new().await;
    synced(&h).await;
    h.set_state(BUNDLE, "approve").await;
    // The approval made on 2025-03-04 (written in the server's own catalog
    // file, before any scan read it).
    let db = rusqlite::Connection::open(h.dir.path().join("catalog.sqlite3")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let dated = db
        .execute(
            "UPDATE update_approvals SET approved = 1741046400
             WHERE uid = (SELECT uid FROM updates WHERE id = ?1)",
            [BUNDLE],
        )
        .unwrap();
    assert_eq!(dated, 1);
    drop(db);

    let mut pc = Client::start(&h, "").await;
    pc.machine = machine();
    let offers = pc.scan().await;
    let seen = by_id(&offers);
    assert_eq!(seen[BUNDLE].action, "Install");
    assert_eq!(seen[BUNDLE].last_change, "2025-03-04", "{offers:#?}");
    assert_eq!(seen[LEAF].action, "Bundle");
    assert_eq!(seen[LEAF].last_change, "2025-03-04", "{offers:#?}");

    let today = || time::OffsetDateTime::now_utc().date().to_string();
    let before = today();
    h.set_state(BUNDLE, "unapprove").await;
    h.set_state(BUNDLE, "approve").await;
    let mut fresh = Client::start(&h, "").await;
    fresh.machine = machine();
    let offers = fresh.scan().await;
    let after = today();
    let got = &by_id(&offers)[BUNDLE].last_change;
    assert!(
        *got == before || *got == after,
        "{got}, made {before}..{after}"
    );
}

/// One call's status, headers and body bytes, `Accept-Encoding: xpress`
/// or not (as a Windows client sends it to a WSUS).
async fn raw_call(
    h: &Harness,
    path: &str,
    action: &str,
    body: &str,
    xpress: bool,
) -> (u16, reqwest::header::HeaderMap, bytes::Bytes) {
    let mut r = h
        .http
        .post(h.url(path))
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("SOAPAction", format!("\"{action}\""));
    if xpress {
        r = r.header("Accept-Encoding", "xpress");
    }
    let r = r.body(body.to_owned()).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.bytes().await.unwrap())
}

/// [MS-WUSP] 2.1: a client that asks for `xpress` gets its answers so
/// encoded (`Content-Encoding: xpress`), in fewer bytes, and they decode
/// to exactly what the same call answers a client that did not ask;
/// `Vary: Accept-Encoding` either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_asking_for_xpress_gets_answers_that_decode_to_the_plain_ones() {
    let h = Harness::new().await;
    let _fake = synced(&h).await;
    let pc = Client::start(&h, "Pilot").await;
    pc.register().await;
    let page = pc.sync_once(false).await.expect("SyncUpdates");
    let rids: Vec<i64> = all_between(
        between(&page, "NewUpdates").unwrap_or_default(),
        "UpdateInfo",
    )
    .iter()
    .map(|info| parse_offer(info, 1).rid)
    .collect();
    assert!(rids.len() >= 2, "{page}");
    let extended = envelope(&format!(
        "<GetExtendedUpdateInfo xmlns=\"{CLIENT_NS}\">{}<revisionIDs>{}</revisionIDs>\
         <infoTypes><XmlUpdateFragmentType>Extended</XmlUpdateFragmentType>\
         <XmlUpdateFragmentType>LocalizedProperties</XmlUpdateFragmentType></infoTypes>\
         <locales><string>en-US</string></locales></GetExtendedUpdateInfo>",
        cookie_xml("cookie", &pc.cookie),
        Client::ints(&rids)
    ));
    let config = envelope(&format!(
        "<GetConfig xmlns=\"{CLIENT_NS}\"><protocolVersion>2.90</protocolVersion></GetConfig>"
    ));
    // An answer over the size encoded on the worker itself: 800
    // categories, each echoed back (encoded on the blocking pool).
    let categories: String = (0..800)
        .map(|i| {
            format!(
                "<CategoryRelationship><IndexOfAndGroup>0</IndexOfAndGroup>\
                 <CategoryId>{i:08x}-7410-4a95-8b89-{i:012x}</CategoryId></CategoryRelationship>"
            )
        })
        .collect();
    let category_scan = envelope(&format!(
        "<StartCategoryScan xmlns=\"{CLIENT_NS}\"><requestedCategories>{categories}\
         </requestedCategories></StartCategoryScan>"
    ));
    let calls = [
        ("GetExtendedUpdateInfo", extended),
        ("StartCategoryScan", category_scan),
        ("GetConfig", config),
        // A fault travels compressed too.
        (
            "SyncUpdates",
            envelope(&format!("<SyncUpdates xmlns=\"{CLIENT_NS}\"/>")),
        ),
    ];
    for (op, body) in calls {
        let action = format!("{CLIENT_NS}/{op}");
        let path = "/ClientWebService/client.asmx";
        let (status, headers, plain) = raw_call(&h, path, &action, &body, false).await;
        assert_eq!(headers.get("content-encoding"), None, "{op}");
        assert_eq!(headers["vary"], "Accept-Encoding", "{op}");
        let (packed_status, packed_headers, packed) =
            raw_call(&h, path, &action, &body, true).await;
        assert_eq!(packed_status, status, "{op}");
        assert_eq!(packed_headers["content-encoding"], "xpress", "{op}");
        assert_eq!(packed_headers["vary"], "Accept-Encoding", "{op}");
        assert_eq!(
            packed_headers["content-length"],
            packed.len().to_string().as_str()
        );
        let decoded = upcache::wsus::client::xpress::decode(&packed, 1 << 24)
            .unwrap_or_else(|e| panic!("{op}: {e}"));
        assert!(
            decoded == plain,
            "{op}: the decoded answer differs from the plain one"
        );
        if op == "StartCategoryScan" {
            assert!(
                plain.len() > upcache::wsus::client::XPRESS_INLINE_BYTES,
                "{op}: {} bytes",
                plain.len()
            );
        }
        if op == "GetExtendedUpdateInfo" {
            assert!(
                String::from_utf8_lossy(&plain).contains("<Xml>"),
                "{}",
                String::from_utf8_lossy(&plain)
            );
            assert!(
                packed.len() * 2 < plain.len(),
                "{op}: {} bytes with xpress, {} without",
                packed.len(),
                plain.len()
            );
        }
    }
    // The reporting service too (a WSUS compresses its answers as well).
    let report = envelope(&format!(
        "<ReportEventBatch xmlns=\"{REPORTING_NS}\">{}<clientTime>2026-10-04T15:20:00Z</clientTime>\
         <eventBatch/></ReportEventBatch>",
        cookie_xml("cookie", &pc.cookie)
    ));
    let action = format!("{REPORTING_NS}/ReportEventBatch");
    let path = "/ReportingWebService/ReportingWebService.asmx";
    let (_, _, plain) = raw_call(&h, path, &action, &report, false).await;
    let (_, headers, packed) = raw_call(&h, path, &action, &report, true).await;
    assert_eq!(headers["content-encoding"], "xpress");
    let decoded = upcache::wsus::client::xpress::decode(&packed, 1 << 20).unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        String::from_utf8(plain.to_vec()).unwrap()
    );
}

/// `wusp_xpress = false`: a client that asks for `xpress` gets the plain
/// XML (the way back if a client cannot read upcache's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wusp_xpress_off_every_answer_goes_plain() {
    let h = Harness::with(|c| c.update_server.wusp_xpress = false).await;
    let config = envelope(&format!(
        "<GetConfig xmlns=\"{CLIENT_NS}\"><protocolVersion>2.90</protocolVersion></GetConfig>"
    ));
    let action = format!("{CLIENT_NS}/GetConfig");
    let path = "/ClientWebService/client.asmx";
    let (status, headers, body) = raw_call(&h, path, &action, &config, true).await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("content-encoding"), None);
    assert_eq!(headers["vary"], "Accept-Encoding");
    assert!(String::from_utf8_lossy(&body).contains("<PlugInID>SimpleTargeting</PlugInID>"));
}
