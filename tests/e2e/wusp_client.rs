//! A Windows client of one node's content listener, from [MS-WUSP]'s
//! bodies (as in `update_server.rs`), reduced to what reports: it signs in,
//! registers, and sends events and status reports.

const CLIENT_NS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService";
const AUTH_NS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/SimpleAuthWebService";
const REPORTING_NS: &str = "http://www.microsoft.com/SoftwareDistribution";

/// One Windows client, signed in.
pub struct Windows {
    base: String,
    http: reqwest::Client,
    id: String,
    cookie: String,
}

fn text_of<'a>(body: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let from = body.find(&open).unwrap_or_else(|| panic!("{tag}: {body}")) + open.len();
    &body[from..from + body[from..].find(&format!("</{tag}>")).unwrap()]
}

impl Windows {
    /// GetAuthorizationCookie → GetCookie, as a client starts.
    pub async fn start(base: &str, id: &str, group: &str) -> Windows {
        let mut pc = Windows {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            id: id.to_owned(),
            cookie: String::new(),
        };
        let auth = pc
            .soap(
                "/SimpleAuthWebService/SimpleAuth.asmx",
                AUTH_NS,
                "GetAuthorizationCookie",
                &format!(
                    "<clientId>{id}</clientId><targetGroupName>{group}</targetGroupName><dnsName>{id}.example.test</dnsName>"
                ),
            )
            .await;
        let auth = text_of(&auth, "CookieData").to_owned();
        let cookie = pc
            .soap(
                "/ClientWebService/client.asmx",
                CLIENT_NS,
                "GetCookie",
                &format!(
                    "<authCookies><AuthorizationCookie><PlugInId>SimpleTargeting</PlugInId><CookieData>{auth}</CookieData>\
                     </AuthorizationCookie></authCookies><protocolVersion>2.90</protocolVersion>"
                ),
            )
            .await;
        pc.cookie = text_of(&cookie, "EncryptedData").to_owned();
        pc
    }

    /// One call that must succeed; its body.
    pub async fn soap(&self, path: &str, ns: &str, op: &str, inner: &str) -> String {
        let body = format!(
            "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
             <{op} xmlns=\"{ns}\">{inner}</{op}></s:Body></s:Envelope>"
        );
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{ns}/{op}\""))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, 200, "{op}: {body}");
        body
    }

    fn cookie(&self) -> String {
        format!(
            "<cookie><Expiration>2026-10-04T16:03:35Z</Expiration><EncryptedData>{}</EncryptedData></cookie>",
            self.cookie
        )
    }

    pub async fn register(&self) {
        let inner = format!(
            "{}<computerInfo><DnsName>{}.example.test</DnsName><OSMajorVersion>10</OSMajorVersion>\
             <OSMinorVersion>0</OSMinorVersion><OSBuildNumber>26200</OSBuildNumber>\
             <ComputerManufacturer>QEMU</ComputerManufacturer><ComputerModel>Standard PC</ComputerModel>\
             <OSDescription>Windows 11 Pro</OSDescription></computerInfo>",
            self.cookie(),
            self.id
        );
        let body = self
            .soap(
                "/ClientWebService/client.asmx",
                CLIENT_NS,
                "RegisterComputer",
                &inner,
            )
            .await;
        assert!(body.contains("RegisterComputerResponse"), "{body}");
    }

    /// One `ReportEventBatch` with one event per id; acknowledged.
    pub async fn report(&self, event_ids: &[u32]) {
        let events: String = event_ids
            .iter()
            .map(|e| {
                format!(
                    "<ReportingEvent><BasicData><TargetID><Sid>{}</Sid></TargetID><EventID>{e}</EventID>\
                     <UpdateID><UpdateID>a2fef9b0-0000-4000-8000-000000000001</UpdateID><RevisionNumber>200</RevisionNumber></UpdateID>\
                     <Win32HResult>0</Win32HResult><AppName>AutomaticUpdates</AppName></BasicData></ReportingEvent>",
                    self.id
                )
            })
            .collect();
        let inner = format!(
            "{}<clientTime>2026-10-04T15:21:01Z</clientTime><eventBatch>{events}</eventBatch>",
            self.cookie()
        );
        let body = self
            .soap(
                "/ReportingWebService/ReportingWebService.asmx",
                REPORTING_NS,
                "ReportEventBatch",
                &inner,
            )
            .await;
        assert_eq!(text_of(&body, "ReportEventBatchResult"), "true");
    }
}

impl Windows {
    /// One `ReportEventBatch` of whole `ReportingEvent` elements.
    pub async fn report_events(&self, events: &[String]) {
        let inner = format!(
            "{}<clientTime>2026-10-04T15:21:01Z</clientTime><eventBatch>{}</eventBatch>",
            self.cookie(),
            events.concat()
        );
        let body = self
            .soap(
                "/ReportingWebService/ReportingWebService.asmx",
                REPORTING_NS,
                "ReportEventBatch",
                &inner,
            )
            .await;
        assert_eq!(text_of(&body, "ReportEventBatchResult"), "true");
    }

    /// A status report (event 156): the updates it needs (`U=`) and has
    /// installed (`V=`), as the Windows Update Agent sends after a scan.
    pub fn status_event(&self, needed: &[&str], installed: &[&str]) -> String {
        format!(
            "<ReportingEvent><BasicData><TargetID><Sid>{}</Sid></TargetID><EventID>156</EventID>\
             <UpdateID><UpdateID>00000000-0000-0000-0000-000000000000</UpdateID><RevisionNumber>0</RevisionNumber></UpdateID>\
             <Win32HResult>0</Win32HResult><AppName>AutomaticUpdates</AppName></BasicData>\
             <ExtendedData><MiscData><string>U={}</string><string>V={}</string></MiscData></ExtendedData></ReportingEvent>",
            self.id,
            needed.join(";"),
            installed.join(";")
        )
    }

    /// An event about one update (`183` installed, `182` failed with
    /// `hresult`, ...).
    pub fn update_event(&self, event_id: u32, update_id: &str, hresult: &str) -> String {
        format!(
            "<ReportingEvent><BasicData><TargetID><Sid>{}</Sid></TargetID><EventID>{event_id}</EventID>\
             <UpdateID><UpdateID>{update_id}</UpdateID><RevisionNumber>1</RevisionNumber></UpdateID>\
             <Win32HResult>{hresult}</Win32HResult><AppName>AutomaticUpdates</AppName></BasicData></ReportingEvent>",
            self.id
        )
    }
}
