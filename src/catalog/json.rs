//! The upcache JSON catalog format (import and export share these types).
//!
//! Parsing is strict: unknown fields, bad digests, relative URLs and duplicate
//! ids are rejected with the path of the offending field, before anything is
//! written.

use std::collections::HashSet;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::{CatalogError, UpdateState};
use crate::digest::{Sha1Digest, Sha256Digest};

/// A whole catalog document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogDoc {
    pub updates: Vec<UpdateDoc>,
}

/// One update as it appears in the document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateDoc {
    pub id: String,
    #[serde(default)]
    pub revision: u32,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kb: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msrc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    #[serde(default)]
    pub products: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_date: Option<String>,
    /// Approval state; only honoured by `sync` from another upcache, ignored
    /// by a plain import so a catalog file cannot approve behind an admin's back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<UpdateState>,
    /// A newer update replaces this one; honoured with `state`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub superseded: bool,
    pub files: Vec<FileDoc>,
    /// With an `approved` state: the computer groups it is approved for,
    /// honoured with `state` (none listed: `All Computers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<ApprovalDoc>,
}

/// One group's approval, by the group's name (ids differ between servers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalDoc {
    pub group: String,
    #[serde(default, with = "super::approvals::deadline_text")]
    pub deadline: Option<i64>,
}

/// One file of an update.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDoc {
    pub name: String,
    pub sha1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub url: String,
}

/// A file after validation.
#[derive(Debug, Clone)]
pub struct ValidFile {
    pub name: String,
    pub sha1: Sha1Digest,
    pub sha256: Option<Sha256Digest>,
    pub size: Option<u64>,
    pub url: String,
}

/// An update after validation, with its release date as unix seconds.
#[derive(Debug, Clone)]
pub struct ValidUpdate {
    pub doc: UpdateDoc,
    pub released: Option<i64>,
    pub files: Vec<ValidFile>,
}

/// Parses and validates a whole JSON catalog (small documents, fuzzing).
pub fn parse(body: &[u8]) -> Result<Vec<ValidUpdate>, CatalogError> {
    let mut updates = Vec::new();
    parse_stream(body, |u| {
        updates.push(u);
        Ok(())
    })?;
    Ok(updates)
}

/// What an export from another upcache carries after its updates: the
/// change number it was taken at, and the primary's policy and rules (for
/// followers; a plain import ignores them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DocExtras {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::Policy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<super::rules::Rule>>,
}

/// Streams a JSON catalog, handing each update to `sink` as soon as it is
/// parsed and valid: memory holds one update, whatever the document's size.
/// Errors name the line (syntax) or the field path (`updates[3].files[0].sha1`).
pub fn parse_stream<R: std::io::Read>(
    input: R,
    mut sink: impl FnMut(ValidUpdate) -> Result<(), CatalogError>,
) -> Result<DocExtras, CatalogError> {
    let mut de = serde_json::Deserializer::from_reader(input);
    let mut failure = None;
    let parsed = DocSeed {
        sink: &mut sink,
        failure: &mut failure,
    }
    .deserialize(&mut de)
    .and_then(|extras| de.end().map(|()| extras));
    if let Some(e) = failure {
        return Err(e);
    }
    parsed.map_err(|e| CatalogError::Invalid {
        at: format!("line {} column {}", e.line(), e.column()),
        reason: e.to_string(),
    })
}

/// `{"updates": [...]}`, visited without collecting the array.
struct DocSeed<'a, F> {
    sink: &'a mut F,
    /// Why the sink stopped the parse (serde's error cannot carry it).
    failure: &'a mut Option<CatalogError>,
}

impl<'de, F> DeserializeSeed<'de> for DocSeed<'_, F>
where
    F: FnMut(ValidUpdate) -> Result<(), CatalogError>,
{
    type Value = DocExtras;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<DocExtras, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F> Visitor<'de> for DocSeed<'_, F>
where
    F: FnMut(ValidUpdate) -> Result<(), CatalogError>,
{
    type Value = DocExtras;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(r#"a catalog object {"updates": [...]}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DocExtras, A::Error> {
        const FIELDS: &[&str] = &["updates", "seq", "policy", "rules"];
        let mut updates_seen = false;
        let mut extras = DocExtras::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "updates" if updates_seen => return Err(de::Error::duplicate_field("updates")),
                "updates" => {
                    updates_seen = true;
                    map.next_value_seed(UpdatesSeed {
                        sink: &mut *self.sink,
                        failure: &mut *self.failure,
                    })?;
                }
                "seq" => extras.seq = Some(map.next_value()?),
                "policy" => extras.policy = Some(map.next_value()?),
                "rules" => extras.rules = Some(map.next_value()?),
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        if !updates_seen {
            return Err(de::Error::missing_field("updates"));
        }
        Ok(extras)
    }
}

/// The `updates` array: each element validated and handed on as it ends.
struct UpdatesSeed<'a, F> {
    sink: &'a mut F,
    failure: &'a mut Option<CatalogError>,
}

impl<'de, F> DeserializeSeed<'de> for UpdatesSeed<'_, F>
where
    F: FnMut(ValidUpdate) -> Result<(), CatalogError>,
{
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F> Visitor<'de> for UpdatesSeed<'_, F>
where
    F: FnMut(ValidUpdate) -> Result<(), CatalogError>,
{
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of updates")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut ids = HashSet::new();
        let mut i = 0usize;
        while let Some(u) = seq.next_element::<UpdateDoc>()? {
            let at = format!("updates[{i}]");
            let handled = if ids.insert(u.id.trim().to_ascii_lowercase()) {
                validate_update(&at, u).and_then(|valid| (self.sink)(valid))
            } else {
                Err(invalid(
                    &at,
                    "id",
                    format!("duplicate update id {:?}", u.id),
                ))
            };
            if let Err(e) = handled {
                *self.failure = Some(e);
                return Err(de::Error::custom("the import stopped"));
            }
            i += 1;
        }
        Ok(())
    }
}

fn invalid(at: &str, field: &str, reason: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        at: format!("{at}.{field}"),
        reason: reason.into(),
    }
}

fn validate_update(at: &str, mut u: UpdateDoc) -> Result<ValidUpdate, CatalogError> {
    u.id = u.id.trim().to_ascii_lowercase();
    if u.id.is_empty()
        || u.id.len() > 64
        || !u.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(invalid(
            at,
            "id",
            "must be 1-64 letters, digits or '-' (an update GUID)",
        ));
    }
    if u.title.trim().is_empty() {
        return Err(invalid(at, "title", "must not be empty"));
    }
    if let Some(kb) = &u.kb {
        let digits = kb.trim_start_matches("KB").trim_start_matches("kb");
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(invalid(at, "kb", format!("{kb:?} is not a KB number")));
        }
        u.kb = Some(digits.to_owned());
    }
    let released = match &u.release_date {
        None => None,
        Some(d) => Some(
            parse_date(d)
                .ok_or_else(|| invalid(at, "release_date", format!("{d:?} is not YYYY-MM-DD")))?,
        ),
    };
    let mut seen = HashSet::new();
    let files = u
        .files
        .iter()
        .enumerate()
        .map(|(j, f)| {
            let at = format!("{at}.files[{j}]");
            let file = validate_file(&at, f)?;
            if !seen.insert(file.sha1) {
                return Err(invalid(&at, "sha1", "listed twice in the same update"));
            }
            Ok(file)
        })
        .collect::<Result<_, _>>()?;
    Ok(ValidUpdate {
        doc: u,
        released,
        files,
    })
}

fn validate_file(at: &str, f: &FileDoc) -> Result<ValidFile, CatalogError> {
    let sha1: Sha1Digest = f
        .sha1
        .parse()
        .map_err(|e| invalid(at, "sha1", format!("{e}")))?;
    let sha256 = match &f.sha256 {
        None => None,
        Some(s) => Some(
            s.parse::<Sha256Digest>()
                .map_err(|e| invalid(at, "sha256", format!("{e}")))?,
        ),
    };
    if f.name.is_empty() || f.name.len() > 255 || f.name.contains(['/', '\\', '\0']) {
        return Err(invalid(at, "name", "must be a plain file name"));
    }
    let url = http_url(&f.url).map_err(|reason| invalid(at, "url", reason))?;
    Ok(ValidFile {
        name: f.name.clone(),
        sha1,
        sha256,
        size: f.size,
        url: url.to_string(),
    })
}

/// An absolute http(s) URL with a host: what a catalog may point downloads at.
pub(super) fn http_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{url:?} is not an absolute http(s) URL"));
    }
    Ok(parsed)
}

/// `YYYY-MM-DD` (optionally followed by a time, which is ignored) → unix seconds at midnight UTC.
pub fn parse_date(s: &str) -> Option<i64> {
    let date = s.get(..10)?;
    let mut parts = date.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4
        || m.len() != 2
        || d.len() != 2
        || !matches!(s.as_bytes().get(10), None | Some(b'T' | b' '))
    {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(files: &str) -> String {
        format!(
            r#"{{"updates":[{{"id":"6F1C-1","revision":2,"title":"T","kb":"KB5034122","release_date":"2024-01-09","files":[{files}]}}]}}"#
        )
    }
    const GOOD_FILE: &str = r#"{"name":"a.msu","sha1":"00112233445566778899aabbccddeeff00112233","size":3,"url":"http://download.windowsupdate.com/c/a.msu"}"#;

    #[test]
    fn a_valid_document_is_normalised() {
        let ups = parse(doc(GOOD_FILE).as_bytes()).unwrap();
        assert_eq!(ups[0].doc.id, "6f1c-1");
        assert_eq!(ups[0].doc.kb.as_deref(), Some("5034122"));
        assert_eq!(ups[0].released, Some(1_704_758_400));
        assert_eq!(ups[0].files[0].size, Some(3));
    }

    #[test]
    fn errors_name_the_field() {
        let bad = GOOD_FILE.replace("00112233445566778899aabbccddeeff00112233", "xyz");
        let err = parse(doc(&bad).as_bytes()).unwrap_err().to_string();
        assert!(err.contains("updates[0].files[0].sha1"), "{err}");
        let bad = GOOD_FILE.replace("http://download.windowsupdate.com/c/a.msu", "/relative");
        let err = parse(doc(&bad).as_bytes()).unwrap_err().to_string();
        assert!(err.contains("updates[0].files[0].url"), "{err}");
    }

    #[test]
    fn syntax_errors_name_the_line_and_unknown_fields_are_rejected() {
        let err = parse(b"{\"updates\": [\n{\"id\": }]}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        let err = parse(doc(&GOOD_FILE.replace("\"size\"", "\"sizee\"")).as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("sizee"), "{err}");
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let one = r#"{"id":"a","title":"T","files":[]}"#;
        let err = parse(format!(r#"{{"updates":[{one},{one}]}}"#).as_bytes()).unwrap_err();
        assert!(err.to_string().contains("updates[1].id"), "{err}");
    }

    #[test]
    fn dates_are_checked() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-03-01"), Some(951_868_800));
        assert_eq!(parse_date("2024-01-09T10:00:00Z"), Some(1_704_758_400));
        assert_eq!(parse_date("2024-13-01"), None);
        assert_eq!(parse_date("24-01-01"), None);
    }
}
