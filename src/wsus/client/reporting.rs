//! `/ReportingWebService/ReportingWebService.asmx` (and `WebService.asmx`,
//! the name older clients use): `ReportEventBatch` ([MS-WUSP] 2.2.2.3.1),
//! taken whole (`intake`: kept for the primary on a follower), read into
//! the fleet's events and stored with their effect before the client is
//! told `true`; the computer is the one the cookie names, so no client
//! writes another's events.

use crate::fleet::Event;
use crate::wsus::soap::{Element, Xml};

use super::cookie::Kind;
use super::{requests, ClientError, ClientServices};

pub const NS: &str = "http://www.microsoft.com/SoftwareDistribution";
/// Most `MiscData` strings read from one event.
const MAX_MISC: usize = 64;

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

/// One `ReportingEvent`: its `BasicData` (`EventID`, `UpdateID`,
/// `Win32HResult`), its `ExtendedData/MiscData` strings, and all of it as
/// JSON.
pub fn event(e: &Element) -> Event {
    let basic = e.child("BasicData");
    let text = |path: &[&str]| {
        basic
            .and_then(|b| b.path(path))
            .map(|x| x.text.trim().to_owned())
            .unwrap_or_default()
    };
    let event_id_text = text(&["EventID"]);
    let hresult_text = text(&["Win32HResult"]);
    let misc = e
        .path(&["ExtendedData", "MiscData"])
        .map(|m| {
            m.children
                .iter()
                .take(MAX_MISC)
                .map(|c| c.text.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    Event {
        event_id: event_id_text.parse().unwrap_or(0),
        update_id: text(&["UpdateID", "UpdateID"]).to_ascii_lowercase(),
        hresult: parse_hresult(&hresult_text),
        misc,
        event_id_text,
        hresult_text,
        raw: to_json(e),
        instance: parse_guid(&text(&["EventInstanceID"])),
    }
}

/// A GUID as text (`8-4-4-4-12` hex digits, braces allowed) as its 16
/// bytes in the order written; the zero GUID names nothing. The shape is
/// the one status reports are read with ([`crate::fleet::status::is_guid`]).
fn parse_guid(text: &str) -> Option<[u8; 16]> {
    let text = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(text);
    if !crate::fleet::status::is_guid(text) {
        return None;
    }
    let mut bytes = [0u8; 16];
    let mut at = 0;
    for group in text.split('-') {
        let end = at + group.len() / 2;
        hex::decode_to_slice(group, &mut bytes[at..end]).ok()?;
        at = end;
    }
    (bytes != [0; 16]).then_some(bytes)
}

/// What a whole `ReportEventBatch` body would do to the states, read the
/// way the service reads it: the fuzz target's entry point.
pub fn effects_of(body: &[u8]) -> Result<Vec<crate::fleet::status::Effect>, ClientError> {
    let op = crate::wsus::soap::parse_envelope(body)?;
    Ok(requests::events(&op)?
        .iter()
        .map(|e| crate::fleet::status::effect(&event(e)))
        .collect())
}

/// `Win32HResult` is an `int` (`-2145124329`); `0x80240017` is read too.
fn parse_hresult(text: &str) -> i32 {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).map_or(0, |h| h as i32),
        None => text
            .parse::<i64>()
            .ok()
            .and_then(|n| {
                i32::try_from(n)
                    .ok()
                    .or(u32::try_from(n).ok().map(|u| u as i32))
            })
            .unwrap_or(0),
    }
}

/// An element as JSON: `{name: text}` for a leaf, `{name: [children]}` else.
fn to_json(e: &Element) -> serde_json::Value {
    let value = if e.children.is_empty() {
        serde_json::Value::String(e.text.clone())
    } else {
        serde_json::Value::Array(e.children.iter().map(to_json).collect())
    };
    serde_json::json!({ e.name.clone(): value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_read_with_its_update_result_and_misc_data() {
        let e = crate::wsus::soap::parse_tree(
            b"<ReportingEvent><BasicData><EventID>156</EventID><Win32HResult>-2145124329</Win32HResult>\
              <UpdateID><UpdateID>A2FEF9B0-7951-4C2C-A42B-9E351DD1C1FE</UpdateID><RevisionNumber>200</RevisionNumber></UpdateID>\
              </BasicData><ExtendedData><ReplacementStrings/><MiscData><string>U=x;y</string>\
              <string>AppName=AU</string></MiscData></ExtendedData></ReportingEvent>",
        )
        .unwrap();
        let ev = event(&e);
        assert_eq!(ev.event_id, 156);
        assert_eq!(ev.update_id, "a2fef9b0-7951-4c2c-a42b-9e351dd1c1fe");
        assert_eq!(ev.hresult, 0x8024_0017_u32 as i32);
        assert_eq!(ev.misc, ["U=x;y", "AppName=AU"]);
        assert_eq!(ev.instance, None, "no EventInstanceID");
        assert!(ev.raw.to_string().contains("RevisionNumber"));
        assert_eq!(parse_hresult("0x80240017"), 0x8024_0017_u32 as i32);
        assert_eq!(parse_hresult("2149842967"), 0x8024_0017_u32 as i32);
        assert_eq!(parse_hresult("junk"), 0);
    }

    #[test]
    fn an_events_instance_id_is_read_as_its_guid() {
        let e = crate::wsus::soap::parse_tree(
            b"<ReportingEvent><BasicData><TimeAtTarget>2026-10-04T15:21:00Z</TimeAtTarget>\
              <EventInstanceID>7E6A9A6A-0000-4000-8000-0000000000A1</EventInstanceID>\
              <EventID>183</EventID></BasicData></ReportingEvent>",
        )
        .unwrap();
        let want = [
            0x7e, 0x6a, 0x9a, 0x6a, 0, 0, 0x40, 0, 0x80, 0, 0, 0, 0, 0, 0, 0xa1,
        ];
        assert_eq!(event(&e).instance, Some(want));
        assert_eq!(
            parse_guid("{7e6a9a6a-0000-4000-8000-0000000000a1}"),
            Some(want)
        );
        for not_one in [
            "",
            "00000000-0000-0000-0000-000000000000",
            "7e6a9a6a00004000800000000000000a1",
            "7e6a9a6a-0000-4000-8000-0000000000g1",
            "7e6a9a6a-0000-4000-8000-0000000000a1-00",
            "+e6a9a6a-0000-4000-8000-0000000000a1",
        ] {
            assert_eq!(parse_guid(not_one), None, "{not_one:?}");
        }
    }
}
