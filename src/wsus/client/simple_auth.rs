//! `/SimpleAuthWebService/SimpleAuth.asmx` ([MS-WUSP] 2.2.2.1, processed as
//! 3.1.5.3 says): the
//! authorization cookie, carrying the client's id and the target group it
//! asks for (client-side targeting).

use crate::wsus::soap::{Element, Xml};

use super::cookie::{Claims, Kind};
use super::{requests, ClientError, ClientServices};

pub const NS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/SimpleAuthWebService";
/// The plug-in `GetConfig` names and the cookie carries.
pub const PLUG_IN: &str = "SimpleTargeting";

pub fn call(s: &ClientServices, op: &Element) -> Result<String, ClientError> {
    match op.name.as_str() {
        "GetAuthorizationCookie" => authorization_cookie(s, op),
        other => Err(ClientError::UnknownOperation(other.to_owned())),
    }
}

fn authorization_cookie(s: &ClientServices, op: &Element) -> Result<String, ClientError> {
    let req = requests::authorization(op)?;
    let data = s.cookies.mint(&Claims {
        kind: Kind::Authorization,
        expires: super::now() + s.settings.wusp_cookie_lifetime_secs,
        client_id: req.client_id,
        target_group: req.target_group,
    });
    let mut w = Xml::default();
    w.open(
        "GetAuthorizationCookieResponse",
        &format!(" xmlns=\"{NS}\""),
    )
    .open("GetAuthorizationCookieResult", "")
    .leaf("PlugInId", PLUG_IN)
    .leaf("CookieData", &data)
    .close("GetAuthorizationCookieResult")
    .close("GetAuthorizationCookieResponse");
    Ok(w.finish())
}
