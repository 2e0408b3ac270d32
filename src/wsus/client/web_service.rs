//! `/ClientWebService/client.asmx` ([MS-WUSP] 2.2.2.2, processed as 3.1.5
//! says): configuration, cookies,
//! registration, the scan (`SyncUpdates`, `RefreshCache`), the extended
//! fragments and the file locations.
//!
//! File locations point at upcache's own content paths
//! (`/Content/XX/<SHA1>.<ext>` on the host the client used), so files go
//! through the store with its approvals and verification; with the
//! metadata-only policy they point at Microsoft's URL, as WSUS does.

use std::collections::HashMap;

use base64::Engine as _;

use crate::catalog::approvals::Effective;
use crate::catalog::UpdateState;
use crate::digest::Sha1Digest;
use crate::metadata::store::RevisionFile;
use crate::policy::Mode;
use crate::wsus::soap::{Element, Xml};

use super::cookie::{Claims, Kind};
use super::outbox::ClientReport;
use super::scan::{Ask, Offered, ScanIndex};
use super::{fragments, requests, simple_auth, Call, ClientError, ClientServices};

pub const NS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService";
/// Most revisions a client asks `GetExtendedUpdateInfo` for at once.
const MAX_EXTENDED_PER_REQUEST: usize = 50;
/// Event ids clients may report (all: reports are stored whole).
const ALLOWED_EVENT_IDS: &[u32] = &[
    147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157, 161, 162, 163, 164, 165, 166, 167, 168,
    169, 170, 171, 172, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187,
    188, 189, 190, 191, 192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205,
];

pub fn call(s: &ClientServices, op: &Element, c: &Call<'_>) -> Result<String, ClientError> {
    match op.name.as_str() {
        "GetConfig" | "GetConfig2" => Ok(config(&op.name)),
        "GetCookie" => cookie(s, op),
        "RegisterComputer" => register(s, op, c),
        "StartCategoryScan" => Ok(start_category_scan(op)),
        "SyncUpdates" => sync_updates(s, op, c),
        "RefreshCache" => refresh_cache(s, op),
        "GetExtendedUpdateInfo" => extended_info(s, op, c),
        "GetFileLocations" => file_locations(s, op, c),
        "SyncPrinterCatalog" => sync_printer_catalog(s, op),
        other => Err(ClientError::UnknownOperation(other.to_owned())),
    }
}

fn response(name: &str) -> (Xml, String) {
    let mut w = Xml::default();
    w.open(&format!("{name}Response"), &format!(" xmlns=\"{NS}\""));
    (w, format!("{name}Response"))
}

/// The client cookie's claims (or the fault that makes the client get one).
fn client(s: &ClientServices, op: &Element) -> Result<Claims, ClientError> {
    let text = requests::cookie(op, "cookie")?;
    Ok(s.cookies.verify(text, Kind::Client, super::now())?)
}

fn config(name: &str) -> String {
    let (mut w, end) = response(name);
    w.open(&format!("{name}Result"), "")
        .leaf("LastChange", "2026-01-01T00:00:00Z")
        .leaf("IsRegistrationRequired", "true")
        .open("AuthInfo", "")
        .open("AuthPlugInInfo", "")
        .leaf("PlugInID", simple_auth::PLUG_IN)
        .leaf("ServiceUrl", "/SimpleAuthWebService/SimpleAuth.asmx")
        .leaf("Parameter", "")
        .close("AuthPlugInInfo")
        .close("AuthInfo")
        .open("AllowedEventIds", "");
    for id in ALLOWED_EVENT_IDS {
        w.leaf("int", &id.to_string());
    }
    w.close("AllowedEventIds").open("Properties", "");
    for (k, v) in [
        (
            "MaxExtendedUpdatesPerRequest",
            MAX_EXTENDED_PER_REQUEST.to_string(),
        ),
        ("ProtocolVersion", "3.2".to_owned()),
    ] {
        w.open("ConfigurationProperty", "")
            .leaf("Name", k)
            .leaf("Value", &v)
            .close("ConfigurationProperty");
    }
    w.close("Properties")
        .close(&format!("{name}Result"))
        .close(&end);
    w.finish()
}

/// `GetCookie`: an authorization cookie traded for a client cookie.
fn cookie(s: &ClientServices, op: &Element) -> Result<String, ClientError> {
    let data = requests::authorization_cookie(op)?;
    let auth = s
        .cookies
        .verify(data, Kind::Authorization, super::now())
        .map_err(|_| ClientError::AuthorizationCookie)?;
    let (expiration, text) = s.client_cookie(&auth.client_id, &auth.target_group);
    let (mut w, end) = response("GetCookie");
    w.open("GetCookieResult", "")
        .leaf("Expiration", &expiration)
        .leaf("EncryptedData", &text)
        .close("GetCookieResult")
        .close(&end);
    Ok(w.finish())
}

fn register(s: &ClientServices, op: &Element, c: &Call<'_>) -> Result<String, ClientError> {
    let claims = client(s, op)?;
    let info = requests::computer_info(op)?;
    s.take(ClientReport::Registered {
        id: claims.client_id,
        info,
        target_group: claims.target_group,
        address: c.peer,
        at: super::now() as i64,
    })?;
    let (mut w, end) = response("RegisterComputer");
    w.close(&end);
    Ok(w.finish())
}

/// `StartCategoryScan`: every category the client asks for is served here.
fn start_category_scan(op: &Element) -> String {
    let (mut w, end) = response("StartCategoryScan");
    w.open("preferredCategoryIds", "");
    let asked = op
        .child("requestedCategories")
        .map(|r| r.children.as_slice())
        .unwrap_or_default();
    for rel in asked.iter().take(1000) {
        if let Some(id) = rel.child_text("CategoryId") {
            w.leaf("guid", id.trim());
        }
    }
    w.close("preferredCategoryIds").close(&end);
    w.finish()
}

fn sync_updates(s: &ClientServices, op: &Element, c: &Call<'_>) -> Result<String, ClientError> {
    let claims = client(s, op)?;
    let p = requests::sync_parameters(op)?;
    let index = s.index()?;
    // The scan is noted first: with client-side targeting it sets the
    // computer's groups, which decide what it is offered.
    s.take(ClientReport::Scanned {
        id: claims.client_id.clone(),
        target_group: claims.target_group.clone(),
        address: c.peer,
        at: super::now() as i64,
    })?;
    let groups = s.fleet.groups_of(&claims.client_id)?;
    let approved = approval_states(s, &index, &groups)?;
    let (states, deployments) = (&approved.0, &approved.1);
    let answer = index.answer(
        &Ask {
            installed_non_leaf: &p.installed_non_leaf,
            other_cached: &p.other_cached,
            drivers: p.skip_software,
            hardware_ids: &p.hardware_ids,
            page: s.settings.wusp_page_size,
        },
        states,
    );
    let (mut w, end) = response("SyncUpdates");
    w.open("SyncUpdatesResult", "").open("NewUpdates", "");
    for o in &answer.new {
        let f = split(s, o.revision.rid)?;
        let core = f.as_deref().map_or("", |f| &f.core);
        update_info(&mut w, o, &deployed(deployments, &index, o), Some(core));
    }
    w.close("NewUpdates");
    if !answer.changed.is_empty() {
        w.open("ChangedUpdates", "");
        for o in &answer.changed {
            update_info(&mut w, o, &deployed(deployments, &index, o), None);
        }
        w.close("ChangedUpdates");
    }
    if !answer.out_of_scope.is_empty() {
        w.open("OutOfScopeRevisionIDs", "");
        for rid in &answer.out_of_scope {
            w.leaf("int", &rid.to_string());
        }
        w.close("OutOfScopeRevisionIDs");
    }
    w.leaf("Truncated", bool_text(answer.truncated));
    let (expiration, text) = s.client_cookie(&claims.client_id, &claims.target_group);
    w.open("NewCookie", "")
        .leaf("Expiration", &expiration)
        .leaf("EncryptedData", &text)
        .close("NewCookie");
    if !p.skip_software {
        // No approved driver at all: the client skips its driver pass.
        w.leaf(
            "DriverSyncNotNeeded",
            bool_text(!index.has_approved_drivers(states)),
        );
    }
    w.close("SyncUpdatesResult").close(&end);
    Ok(w.finish())
}

/// `SyncPrinterCatalog` ([MS-WUSP] 3.1.5.12): the printer drivers the Add
/// Printer Wizard may list. upcache keeps no printer catalog, so the
/// answer is the empty set (with a fresh cookie), never a fault.
fn sync_printer_catalog(s: &ClientServices, op: &Element) -> Result<String, ClientError> {
    let claims = client(s, op)?;
    let (mut w, end) = response("SyncPrinterCatalog");
    w.open("SyncPrinterCatalogResult", "")
        .open("NewUpdates", "")
        .close("NewUpdates")
        .leaf("Truncated", "false");
    let (expiration, text) = s.client_cookie(&claims.client_id, &claims.target_group);
    w.open("NewCookie", "")
        .leaf("Expiration", &expiration)
        .leaf("EncryptedData", &text)
        .close("NewCookie")
        .close("SyncPrinterCatalogResult")
        .close(&end);
    Ok(w.finish())
}

fn bool_text(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// What the computer's groups make of the approvals of each update
/// approved for it (deadline, when last changed), by update id.
pub(crate) type Deployments = HashMap<String, Effective>;

/// [`read_approvals`], kept until the catalog or the index changes (a
/// scan storm asks it hundreds of times a second, for a few group sets).
fn approval_states(
    s: &ClientServices,
    index: &ScanIndex,
    groups: &[i64],
) -> Result<std::sync::Arc<super::Approved>, ClientError> {
    s.approvals(index, groups, || read_approvals(s, index, groups))
}

/// The catalog's approvals of every update a scan may offer, as they are
/// for a computer in `groups`: approved for one of them (with the earliest
/// of their deadlines and the latest of their dates), not approved when
/// only other groups have it, and declined for everyone.
fn read_approvals(
    s: &ClientServices,
    index: &ScanIndex,
    groups: &[i64],
) -> Result<(HashMap<String, UpdateState>, Deployments), ClientError> {
    let ids = index.approvable_ids(index.revisions());
    let mut states = s.catalog.states_of(&ids)?;
    let approvals = s.catalog.group_approvals_of(&ids)?;
    let mut deployments = Deployments::new();
    for (id, state) in states.iter_mut() {
        if *state != UpdateState::Approved {
            continue;
        }
        let by_group = approvals.get(id).map(Vec::as_slice).unwrap_or_default();
        match crate::catalog::approvals::effective(by_group, groups) {
            Some(e) => {
                deployments.insert(id.clone(), e);
            }
            None => *state = UpdateState::NotApproved,
        }
    }
    Ok((states, deployments))
}

/// What an offered revision's `Deployment` says beyond its action.
struct Deployed {
    /// Unix seconds; only an `Install` has one (a bundle's leaf installs
    /// with its bundle, and has none of its own).
    deadline: Option<i64>,
    /// `LastChangeTime`, as [MS-WUSP] 2.2.2.2.4 (`Deployment`) defines it:
    /// when the deployment was created, an `s:date` (`YYYY-MM-DD`,
    /// [XMLSCHEMA2] 3.2.9; typed `s:string` in the WSDL), and the element
    /// MUST be present.
    last_change: String,
}

/// The date of the `Evaluate` deployments upcache makes of every revision
/// it offers without an approval: there is no approval to date them by,
/// and a fixed date tells a client they never changed.
const EVALUATE_SINCE: &str = "2026-01-01";

/// The deployment of an offered revision for this computer: an `Install`
/// is dated by its approval for the computer's groups (the latest, when
/// several of them approved it), a `Bundle` leaf by the latest approval
/// among its approved bundles, an `Evaluate` by [`EVALUATE_SINCE`].
fn deployed(deployments: &Deployments, index: &ScanIndex, o: &Offered<'_>) -> Deployed {
    use super::scan::Action;
    let own = deployments.get(&o.revision.update_id);
    let changed = match o.action {
        Action::Install => own.map(|e| e.changed),
        Action::Bundle => index
            .bundles_of(&o.revision.update_id)
            .iter()
            .filter_map(|b| deployments.get(b).map(|e| e.changed))
            .max(),
        Action::Evaluate => None,
    };
    Deployed {
        deadline: own
            .filter(|_| o.action == Action::Install)
            .and_then(|e| e.deadline),
        last_change: changed.map_or_else(|| EVALUATE_SINCE.to_owned(), date),
    }
}

/// The UTC date of a unix time, `YYYY-MM-DD`.
fn date(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// The fragments of a stored revision, escaped (`None`: no such revision).
fn split(
    s: &ClientServices,
    rid: i64,
) -> Result<Option<std::sync::Arc<fragments::Fragments>>, ClientError> {
    s.fragments.get(&s.meta, rid)
}

/// `<UpdateInfo>`: the id, the deployment (with its deadline, which comes
/// after `Action` in WSUS's `Deployment`), whether a leaf, the core
/// fragment (escaped already).
fn update_info(w: &mut Xml, o: &Offered<'_>, d: &Deployed, core: Option<&str>) {
    let r = o.revision;
    w.open("UpdateInfo", "")
        .leaf("ID", &r.rid.to_string())
        .open("Deployment", "")
        // One id per revision and action, the same after a re-approval
        // (WSUS numbers each approval anew); the approval's date and
        // deadline travel in `LastChangeTime` and `Deadline` instead.
        .leaf("ID", &deployment_id(r.rid, o.action).to_string())
        .leaf("Action", o.action.as_str());
    if let Some(deadline) = d.deadline {
        w.leaf("Deadline", &super::rfc3339(deadline.max(0) as u64));
    }
    w.leaf("IsAssigned", "true")
        .leaf("LastChangeTime", &d.last_change)
        .leaf("AutoSelect", "0")
        .leaf("AutoDownload", "0")
        .leaf("SupersedenceBehavior", "0")
        .close("Deployment")
        .leaf("IsLeaf", bool_text(o.is_leaf));
    if let Some(core) = core {
        w.leaf_escaped("Xml", core);
    }
    w.close("UpdateInfo");
}

fn deployment_id(rid: i64, action: super::scan::Action) -> i64 {
    rid * 4
        + match action {
            super::scan::Action::Evaluate => 0,
            super::scan::Action::Install => 1,
            super::scan::Action::Bundle => 2,
        }
}

/// `RefreshCache`: the local ids of the revisions a client names.
fn refresh_cache(s: &ClientServices, op: &Element) -> Result<String, ClientError> {
    client(s, op)?;
    let ids = requests::global_ids(op)?;
    let (mut w, end) = response("RefreshCache");
    w.open("RefreshCacheResult", "");
    for (id, rev) in ids {
        let Some(rid) = s.meta.rid(&id, rev)? else {
            continue;
        };
        w.open("RefreshCacheResult", "")
            .leaf("RevisionID", &rid.to_string())
            .open("GlobalID", "")
            .leaf("UpdateID", &id)
            .leaf("RevisionNumber", &rev.to_string())
            .close("GlobalID")
            .close("RefreshCacheResult");
    }
    w.close("RefreshCacheResult").close(&end);
    Ok(w.finish())
}

/// `GetExtendedUpdateInfo`: the extended and localized fragments, and
/// where the revisions' files are.
fn extended_info(s: &ClientServices, op: &Element, c: &Call<'_>) -> Result<String, ClientError> {
    client(s, op)?;
    let req = requests::extended(op)?;
    let wants = |t: &str| req.info_types.iter().any(|i| i == t);
    let mut locales = req.locales.clone();
    if locales.is_empty() {
        locales.push("en".into());
    }
    let metadata_only = s.catalog.policy().mode == Mode::MetadataOnly;
    let (mut w, end) = response("GetExtendedUpdateInfo");
    w.open("GetExtendedUpdateInfoResult", "")
        .open("Updates", "");
    let mut files: Vec<RevisionFile> = Vec::new();
    for &rid in &req.revision_ids {
        let Some(f) = split(s, rid)? else {
            continue;
        };
        if wants("Extended") {
            w.open("Update", "")
                .leaf("ID", &rid.to_string())
                .leaf_escaped("Xml", &f.extended)
                .close("Update");
            files.extend(s.meta.files_by_rid(rid)?);
        }
        if wants("LocalizedProperties") {
            if let Some(l) = f.localized_for(&locales) {
                w.open("Update", "")
                    .leaf("ID", &rid.to_string())
                    .leaf_escaped("Xml", l)
                    .close("Update");
            }
        }
    }
    w.close("Updates");
    if !files.is_empty() {
        w.open("FileLocations", "");
        for f in &files {
            file_location(&mut w, f, c, metadata_only);
        }
        w.close("FileLocations");
    }
    w.close("GetExtendedUpdateInfoResult").close(&end);
    Ok(w.finish())
}

/// `GetFileLocations`: where files are, by digest.
fn file_locations(s: &ClientServices, op: &Element, c: &Call<'_>) -> Result<String, ClientError> {
    let claims = client(s, op)?;
    let digests = requests::file_digests(op)?;
    let metadata_only = s.catalog.policy().mode == Mode::MetadataOnly;
    let (mut w, end) = response("GetFileLocations");
    w.open("GetFileLocationsResult", "")
        .open("FileLocations", "");
    for d in digests {
        let Some(sha1) = Sha1Digest::from_slice(&d) else {
            continue;
        };
        if let Some(f) = s.meta.file_by_sha1(&sha1)? {
            file_location(&mut w, &f, c, metadata_only);
        }
    }
    let (expiration, text) = s.client_cookie(&claims.client_id, &claims.target_group);
    w.close("FileLocations")
        .open("NewCookie", "")
        .leaf("Expiration", &expiration)
        .leaf("EncryptedData", &text)
        .close("NewCookie")
        .close("GetFileLocationsResult")
        .close(&end);
    Ok(w.finish())
}

fn file_location(w: &mut Xml, f: &RevisionFile, c: &Call<'_>, metadata_only: bool) {
    let url = if metadata_only && !f.mu_url.is_empty() {
        f.mu_url.clone()
    } else {
        content_url(&c.base_url(), f)
    };
    w.open("FileLocation", "")
        .leaf(
            "FileDigest",
            &base64::engine::general_purpose::STANDARD.encode(f.sha1.0),
        )
        .leaf("Url", &url)
        .close("FileLocation");
}

/// `base/Content/XX/<SHA1>.<ext>`: WSUS's own content path, which upcache
/// serves (`http::route`).
pub fn content_url(base: &str, f: &RevisionFile) -> String {
    let ext = f
        .name
        .rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|e| !e.is_empty() && e.len() <= 8 && e.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or("bin");
    format!(
        "{base}/Content/{:02X}/{}.{}",
        f.sha1.last_byte(),
        f.sha1.to_hex().to_ascii_uppercase(),
        ext.to_ascii_lowercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_urls_are_wsus_content_paths_upcache_routes() {
        let sha1: Sha1Digest = "86542c97261c46d5b379a43ec895f97eaf409ba2".parse().unwrap();
        let f = RevisionFile {
            name: "Windows11.0-KB5017029-x64-NDP481.CAB".into(),
            sha1,
            sha256: None,
            size: None,
            mu_url: String::new(),
            uss_url: String::new(),
        };
        let url = content_url("http://upcache:8530", &f);
        assert_eq!(
            url,
            "http://upcache:8530/Content/A2/86542C97261C46D5B379A43EC895F97EAF409BA2.cab"
        );
        let path = url.strip_prefix("http://upcache:8530").unwrap();
        assert_eq!(
            crate::http::route::parse(path).unwrap(),
            crate::http::route::FileKey::Sha1(sha1)
        );
    }
}
