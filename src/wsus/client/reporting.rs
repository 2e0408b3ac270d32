//! `/ReportingWebService/ReportingWebService.asmx` (and `WebService.asmx`,
//! the name older clients use): `ReportEventBatch` ([MS-WUSP] 2.2.2.3.1), stored
//! per computer without loss; the computer is the one the cookie names, so
//! no client writes another's events.

use crate::wsus::soap::{Element, Xml};

use super::cookie::Kind;
use super::{requests, ClientError, ClientServices};

pub const NS: &str = "http://www.microsoft.com/SoftwareDistribution";

pub fn call(s: &ClientServices, op: &Element) -> Result<String, ClientError> {
    match op.name.as_str() {
        "ReportEventBatch" => report(s, op),
        other => Err(ClientError::UnknownOperation(other.to_owned())),
    }
}

fn report(s: &ClientServices, op: &Element) -> Result<String, ClientError> {
    let cookie = requests::cookie(op, "cookie")?;
    let claims = s.cookies.verify(cookie, Kind::Client, super::now())?;
    let events = requests::events(op)?;
    s.take(super::outbox::ClientReport::Events {
        id: claims.client_id,
        events: events.to_vec(),
        at: super::now() as i64,
    })?;
    let mut w = Xml::default();
    w.open("ReportEventBatchResponse", &format!(" xmlns=\"{NS}\""))
        .leaf("ReportEventBatchResult", "true")
        .close("ReportEventBatchResponse");
    Ok(w.finish())
}
