//! The typed reading of [MS-WUSP] request bodies (section 2.2 messages, the
//! WSDL of section 6), from the element tree `wsus::soap` parsed. Every
//! list is bounded; anything missing or malformed is an `InvalidParameters`
//! naming the parameter.

use crate::wsus::soap::Element;

use super::ClientError;

/// Most ids one list may carry (a client's cache: the capture of a real
/// Windows 11 client sent ~1,400 other cached ids).
pub const MAX_IDS: usize = 50_000;
/// Most installed non-leaf ids one `SyncUpdates` may report, as a real WSUS
/// limits them (recorded from a Windows 11 client against WSUS).
pub const MAX_INSTALLED_NON_LEAF: usize = 400;
/// Most revisions one `GetExtendedUpdateInfo` may ask for.
pub const MAX_EXTENDED: usize = 1_000;

fn bad(name: &'static str, why: impl Into<String>) -> ClientError {
    ClientError::Parameter {
        name,
        why: why.into(),
    }
}

/// The `cookie` (or `oldCookie`) element: its `EncryptedData`.
pub fn cookie<'a>(op: &'a Element, name: &'static str) -> Result<&'a str, ClientError> {
    op.path(&[name, "EncryptedData"])
        .map(|e| e.text.as_str())
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| bad(name, "missing EncryptedData"))
}

/// `GetAuthorizationCookie`.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub target_group: String,
    pub dns_name: String,
}

pub fn authorization(op: &Element) -> Result<AuthorizationRequest, ClientError> {
    let client_id = op
        .child_text("clientId")
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 64)
        .ok_or_else(|| bad("clientId", "missing or too long"))?;
    Ok(AuthorizationRequest {
        client_id: client_id.to_owned(),
        target_group: op
            .child_text("targetGroupName")
            .unwrap_or_default()
            .trim()
            .chars()
            .take(255)
            .collect(),
        dns_name: op
            .child_text("dnsName")
            .unwrap_or_default()
            .chars()
            .take(255)
            .collect(),
    })
}

/// The `CookieData` of the first `AuthorizationCookie` in `authCookies`.
pub fn authorization_cookie(op: &Element) -> Result<&str, ClientError> {
    op.child("authCookies")
        .into_iter()
        .flat_map(|a| a.children_named("AuthorizationCookie"))
        .filter_map(|c| c.child_text("CookieData"))
        .next()
        .ok_or_else(|| bad("authCookies", "no AuthorizationCookie"))
}

/// `RegisterComputer`'s `computerInfo`.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ComputerInfo {
    pub dns_name: String,
    pub os: String,
    pub os_version: String,
    pub manufacturer: String,
    pub model: String,
}

pub fn computer_info(op: &Element) -> Result<ComputerInfo, ClientError> {
    let info = op
        .child("computerInfo")
        .ok_or_else(|| bad("computerInfo", "missing"))?;
    let text = |n: &str| -> String {
        info.child_text(n)
            .unwrap_or_default()
            .trim()
            .chars()
            .take(255)
            .collect()
    };
    let version = ["OSMajorVersion", "OSMinorVersion", "OSBuildNumber"]
        .iter()
        .map(|n| text(n))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(".");
    Ok(ComputerInfo {
        dns_name: text("DnsName"),
        os: text("OSDescription"),
        os_version: version,
        manufacturer: text("ComputerManufacturer"),
        model: text("ComputerModel"),
    })
}

/// `SyncUpdates`' `parameters`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncParameters {
    pub installed_non_leaf: Vec<i64>,
    pub other_cached: Vec<i64>,
    /// The driver pass.
    pub skip_software: bool,
    /// Hardware and compatible ids of `SystemSpec`'s devices (the driver
    /// pass), lowercase.
    pub hardware_ids: Vec<String>,
}

pub fn sync_parameters(op: &Element) -> Result<SyncParameters, ClientError> {
    let p = op
        .child("parameters")
        .ok_or_else(|| bad("parameters", "missing"))?;
    let installed = ints(
        p.child("InstalledNonLeafUpdateIDs"),
        "InstalledNonLeafUpdateIDs",
    )?;
    if installed.len() > MAX_INSTALLED_NON_LEAF {
        return Err(bad(
            "InstalledNonLeafUpdateIDs",
            format!("more than {MAX_INSTALLED_NON_LEAF}"),
        ));
    }
    let mut hardware_ids = Vec::new();
    if let Some(spec) = p.child("SystemSpec") {
        collect_hardware_ids(spec, &mut hardware_ids);
    }
    Ok(SyncParameters {
        installed_non_leaf: installed,
        other_cached: ints(p.child("OtherCachedUpdateIDs"), "OtherCachedUpdateIDs")?,
        skip_software: boolean(p.child_text("SkipSoftwareSync")),
        hardware_ids,
    })
}

/// Every device id under a `SystemSpec`, bounded: each `Device`'s
/// `HardwareIDs` and `CompatibleIDs` are arrays of `string` (the WSDL's
/// `ArrayOfString`, as a Windows 11 client sends them); a bare `HardwareID`
/// element is read too.
fn collect_hardware_ids(e: &Element, out: &mut Vec<String>) {
    for c in &e.children {
        if out.len() >= MAX_IDS {
            return;
        }
        match c.name.as_str() {
            "HardwareIDs" | "CompatibleIDs" if !c.children.is_empty() => {
                let ids =
                    (c.children.iter()).filter(|s| s.name == "string" || s.name == "HardwareID");
                for id in ids.take(MAX_IDS - out.len()) {
                    out.push(id.text.trim().to_ascii_lowercase());
                }
            }
            "HardwareID" | "HardwareIDs" | "CompatibleIDs" => {
                out.push(c.text.trim().to_ascii_lowercase())
            }
            // What a device's installed driver matched: not one of its ids.
            "installedDriver" | "extensionDrivers" => {}
            _ => collect_hardware_ids(c, out),
        }
    }
}

/// `GetExtendedUpdateInfo`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExtendedRequest {
    pub revision_ids: Vec<i64>,
    /// `Extended`, `LocalizedProperties`, `Eula`, ...
    pub info_types: Vec<String>,
    pub locales: Vec<String>,
}

pub fn extended(op: &Element) -> Result<ExtendedRequest, ClientError> {
    let revision_ids = ints(op.child("revisionIDs"), "revisionIDs")?;
    if revision_ids.len() > MAX_EXTENDED {
        return Err(bad("revisionIDs", format!("more than {MAX_EXTENDED}")));
    }
    let texts = |name: &str| -> Vec<String> {
        op.child(name)
            .map(|e| {
                e.children
                    .iter()
                    .take(64)
                    .map(|c| c.text.trim().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(ExtendedRequest {
        revision_ids,
        info_types: texts("infoTypes"),
        locales: texts("locales"),
    })
}

/// `GetFileLocations`' `fileDigests` (base64 SHA-1 or SHA-256).
pub fn file_digests(op: &Element) -> Result<Vec<Vec<u8>>, ClientError> {
    use base64::Engine as _;
    let list = op
        .child("fileDigests")
        .ok_or_else(|| bad("fileDigests", "missing"))?;
    if list.children.len() > MAX_EXTENDED {
        return Err(bad("fileDigests", format!("more than {MAX_EXTENDED}")));
    }
    list.children
        .iter()
        .map(|c| {
            base64::engine::general_purpose::STANDARD
                .decode(c.text.trim())
                .map_err(|_| bad("fileDigests", "not base64"))
        })
        .collect()
}

/// `RefreshCache`'s `globalIDs`: (update id lowercase, revision number).
pub fn global_ids(op: &Element) -> Result<Vec<(String, u32)>, ClientError> {
    let list = op
        .child("globalIDs")
        .ok_or_else(|| bad("globalIDs", "missing"))?;
    if list.children.len() > MAX_IDS {
        return Err(bad("globalIDs", format!("more than {MAX_IDS}")));
    }
    list.children
        .iter()
        .map(|c| {
            let id = c.child_text("UpdateID").unwrap_or_default().trim();
            let rev = c.child_text("RevisionNumber").unwrap_or_default().trim();
            match (id.is_empty(), rev.parse()) {
                (false, Ok(rev)) if id.len() <= 64 => Ok((id.to_ascii_lowercase(), rev)),
                _ => Err(bad("globalIDs", "UpdateID and RevisionNumber expected")),
            }
        })
        .collect()
}

/// `ReportEventBatch`'s events, each as its element.
pub fn events(op: &Element) -> Result<&[Element], ClientError> {
    let batch = op
        .child("eventBatch")
        .ok_or_else(|| bad("eventBatch", "missing"))?;
    if batch.children.len() > MAX_EXTENDED {
        return Err(bad(
            "eventBatch",
            format!("more than {MAX_EXTENDED} events"),
        ));
    }
    Ok(&batch.children)
}

/// A list of `<int>`s (absent: empty).
fn ints(list: Option<&Element>, name: &'static str) -> Result<Vec<i64>, ClientError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    if list.children.len() > MAX_IDS {
        return Err(bad(name, format!("more than {MAX_IDS} ids")));
    }
    list.children
        .iter()
        .map(|c| c.text.trim().parse().map_err(|_| bad(name, "not an int")))
        .collect()
}

fn boolean(s: Option<&str>) -> bool {
    matches!(s.map(str::trim), Some("true" | "1"))
}

/// Parses a whole request body for `operation` the way the services do:
/// the fuzz target's entry point.
pub fn parse_any(body: &[u8]) -> Result<(), ClientError> {
    let op = crate::wsus::soap::parse_envelope(body)?;
    match op.name.as_str() {
        "GetAuthorizationCookie" => authorization(&op).map(drop),
        "GetCookie" => authorization_cookie(&op).map(drop),
        "RegisterComputer" => computer_info(&op).map(drop),
        "SyncUpdates" => sync_parameters(&op).map(drop),
        "GetExtendedUpdateInfo" => extended(&op).map(drop),
        "GetFileLocations" => file_digests(&op).map(drop),
        "RefreshCache" => global_ids(&op).map(drop),
        "ReportEventBatch" => events(&op).map(drop),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wsus::soap::parse_envelope;

    const NS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService";

    fn op(inner: &str) -> Element {
        parse_envelope(crate::wsus::soap::envelope(inner).as_bytes()).unwrap()
    }

    #[test]
    fn sync_parameters_read_the_cached_lists_and_refuse_too_many_installed() {
        let o = op(&format!(
            "<SyncUpdates xmlns=\"{NS}\"><cookie><EncryptedData>AA==</EncryptedData></cookie><parameters>\
             <ExpressQuery>false</ExpressQuery><InstalledNonLeafUpdateIDs><int>108226</int></InstalledNonLeafUpdateIDs>\
             <OtherCachedUpdateIDs><int>1</int><int>2</int></OtherCachedUpdateIDs><SkipSoftwareSync>false</SkipSoftwareSync>\
             </parameters></SyncUpdates>"
        ));
        let p = sync_parameters(&o).unwrap();
        assert_eq!(p.installed_non_leaf, [108226]);
        assert_eq!(p.other_cached, [1, 2]);
        assert!(!p.skip_software);
        assert_eq!(cookie(&o, "cookie").unwrap(), "AA==");

        let many: String = (0..401).map(|i| format!("<int>{i}</int>")).collect();
        let o = op(&format!(
            "<SyncUpdates><parameters><InstalledNonLeafUpdateIDs>{many}</InstalledNonLeafUpdateIDs></parameters></SyncUpdates>"
        ));
        assert!(matches!(
            sync_parameters(&o),
            Err(ClientError::Parameter {
                name: "InstalledNonLeafUpdateIDs",
                ..
            })
        ));
    }

    #[test]
    fn the_driver_pass_carries_hardware_and_compatible_ids() {
        // As a Windows 11 client sends them: SystemSpec > Device >
        // HardwareIDs/CompatibleIDs > string, beside the installed driver.
        let o = op("<SyncUpdates><parameters><SkipSoftwareSync>true</SkipSoftwareSync><SystemSpec><Device>\
                    <HardwareIDs><string>PCI\\VEN_8086&amp;DEV_10D3&amp;SUBSYS_11001AF4</string><string>PCI\\VEN_8086&amp;DEV_10D3</string></HardwareIDs>\
                    <CompatibleIDs><string>PCI\\VEN_8086&amp;CC_0200</string></CompatibleIDs>\
                    <installedDriver><MatchingID>PCI\\VEN_8086&amp;DEV_10D3</MatchingID><DriverVerDate>2006-06-21T00:00:00Z</DriverVerDate></installedDriver>\
                    </Device><Device><HardwareIDs><string>ROOT\\BasicDisplay</string></HardwareIDs></Device></SystemSpec>\
                    </parameters></SyncUpdates>");
        let p = sync_parameters(&o).unwrap();
        assert!(p.skip_software);
        assert_eq!(
            p.hardware_ids,
            [
                "pci\\ven_8086&dev_10d3&subsys_11001af4",
                "pci\\ven_8086&dev_10d3",
                "pci\\ven_8086&cc_0200",
                "root\\basicdisplay"
            ]
        );
        // The older shape, a HardwareID element per id.
        let o = op("<SyncUpdates><parameters><SystemSpec><Devices><Device><HardwareIDs>\
                    <HardwareID>PCI\\VEN_1</HardwareID></HardwareIDs></Device></Devices></SystemSpec></parameters></SyncUpdates>");
        assert_eq!(sync_parameters(&o).unwrap().hardware_ids, ["pci\\ven_1"]);
    }

    #[test]
    fn malformed_lists_are_invalid_parameters() {
        let o = op("<GetExtendedUpdateInfo><revisionIDs><int>x</int></revisionIDs></GetExtendedUpdateInfo>");
        assert!(extended(&o).is_err());
        let o = op("<GetAuthorizationCookie><dnsName>pc</dnsName></GetAuthorizationCookie>");
        assert!(authorization(&o).is_err());
        let o = op("<RefreshCache><globalIDs><UpdateIdentity><UpdateID>a</UpdateID></UpdateIdentity></globalIDs></RefreshCache>");
        assert!(global_ids(&o).is_err());
    }
}
