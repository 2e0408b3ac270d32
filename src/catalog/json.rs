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
    sink: impl FnMut(ValidUpdate) -> Result<(), CatalogError>,
) -> Result<DocExtras, CatalogError> {
    parse_stream_with(input, sink, None)
}

/// Most groups a primary's export may list.
pub const MAX_GROUPS: usize = 10_000;
/// Most groups one computer may be in, in a primary's export.
pub const MAX_MEMBER_GROUPS: usize = 1_000;
/// Longest client id in a primary's export (they are GUIDs).
pub const MAX_CLIENT_ID: usize = 256;

/// One of the primary's own groups (never a built-in one), by the
/// primary's id: a follower follows a rename by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDoc {
    pub id: i64,
    pub name: String,
}

/// One computer's groups on the primary (`[]`: in none of its own), by
/// the client's id and the primary's group ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberDoc {
    pub id: String,
    #[serde(deserialize_with = "bounded_ids")]
    pub groups: Vec<i64>,
}

/// What a primary's export carries for a follower's fleet, besides the
/// updates (asked with `members_since`), in the order it comes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetItem {
    /// The primary's own groups, the whole list (sent when one changed).
    Groups(Vec<GroupDoc>),
    /// The memberships start (with `members_since=0`: all of them).
    MembersBegin,
    /// One computer's groups.
    Member(MemberDoc),
}

/// Handles a [`FleetItem`] as it is parsed.
pub type FleetSink<'a> = &'a mut dyn FnMut(FleetItem) -> Result<(), CatalogError>;

/// [`parse_stream`], and with `fleet`, a primary's `groups` and `members`
/// (refused as unknown fields without).
pub fn parse_stream_with<R: std::io::Read>(
    input: R,
    mut sink: impl FnMut(ValidUpdate) -> Result<(), CatalogError>,
    fleet: Option<FleetSink<'_>>,
) -> Result<DocExtras, CatalogError> {
    let mut de = serde_json::Deserializer::from_reader(input);
    let mut failure = None;
    let parsed = DocSeed {
        sink: &mut sink,
        fleet,
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

/// Parses a whole primary's export with its fleet part (fuzzing, tests).
pub fn parse_follow(body: &[u8]) -> Result<(Vec<ValidUpdate>, Vec<FleetItem>), CatalogError> {
    let mut updates = Vec::new();
    let mut items = Vec::new();
    parse_stream_with(
        body,
        |u| {
            updates.push(u);
            Ok(())
        },
        Some(&mut |i| {
            items.push(i);
            Ok(())
        }),
    )?;
    Ok((updates, items))
}

/// `{"updates": [...]}`, visited without collecting the array.
struct DocSeed<'a, 'f, F> {
    sink: &'a mut F,
    fleet: Option<FleetSink<'f>>,
    /// Why the sink stopped the parse (serde's error cannot carry it).
    failure: &'a mut Option<CatalogError>,
}

impl<'de, F> DeserializeSeed<'de> for DocSeed<'_, '_, F>
where
    F: FnMut(ValidUpdate) -> Result<(), CatalogError>,
{
    type Value = DocExtras;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<DocExtras, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F> Visitor<'de> for DocSeed<'_, '_, F>
where
    F: FnMut(ValidUpdate) -> Result<(), CatalogError>,
{
    type Value = DocExtras;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(r#"a catalog object {"updates": [...]}"#)
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<DocExtras, A::Error> {
        const FIELDS: &[&str] = &["updates", "seq", "policy", "rules"];
        let mut updates_seen = false;
        let mut groups_seen = false;
        let mut members_seen = false;
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
                "groups" if self.fleet.is_some() => {
                    if std::mem::replace(&mut groups_seen, true) {
                        return Err(de::Error::duplicate_field("groups"));
                    }
                    let groups = map.next_value_seed(GroupsSeed)?;
                    self.hand_on(FleetItem::Groups(groups))?;
                }
                "members" if self.fleet.is_some() => {
                    if std::mem::replace(&mut members_seen, true) {
                        return Err(de::Error::duplicate_field("members"));
                    }
                    self.hand_on(FleetItem::MembersBegin)?;
                    let fleet = self.fleet.as_mut().expect("checked");
                    map.next_value_seed(MembersSeed {
                        sink: &mut **fleet,
                        failure: &mut *self.failure,
                    })?;
                }
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        if !updates_seen {
            return Err(de::Error::missing_field("updates"));
        }
        Ok(extras)
    }
}

impl<F> DocSeed<'_, '_, F> {
    /// Gives `item` to the fleet sink; its error stops the parse.
    fn hand_on<E: de::Error>(&mut self, item: FleetItem) -> Result<(), E> {
        let fleet = self.fleet.as_mut().expect("only called with a fleet sink");
        (fleet)(item).map_err(|e| {
            *self.failure = Some(e);
            de::Error::custom("the import stopped")
        })
    }
}

/// A group id list of at most [`MAX_MEMBER_GROUPS`], refused as soon as it
/// is longer (never allocated whole).
fn bounded_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i64>, D::Error> {
    struct Ids;
    impl<'de> Visitor<'de> for Ids {
        type Value = Vec<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "at most {MAX_MEMBER_GROUPS} group ids")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<i64>, A::Error> {
            let mut ids = Vec::new();
            while let Some(id) = seq.next_element::<i64>()? {
                if ids.len() == MAX_MEMBER_GROUPS {
                    return Err(de::Error::invalid_length(ids.len() + 1, &self));
                }
                ids.push(id);
            }
            Ok(ids)
        }
    }
    d.deserialize_seq(Ids)
}

/// The `groups` list: at most [`MAX_GROUPS`], each id an own group's
/// (above the built-in ones), each name usable, no id or name twice.
struct GroupsSeed;

impl<'de> DeserializeSeed<'de> for GroupsSeed {
    type Value = Vec<GroupDoc>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<GroupDoc>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for GroupsSeed {
    type Value = Vec<GroupDoc>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at most {MAX_GROUPS} groups")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<GroupDoc>, A::Error> {
        let mut groups = Vec::new();
        let mut ids = HashSet::new();
        let mut names = HashSet::new();
        while let Some(mut g) = seq.next_element::<GroupDoc>()? {
            if groups.len() == MAX_GROUPS {
                return Err(de::Error::invalid_length(groups.len() + 1, &self));
            }
            let at = groups.len();
            g.name = super::groups::check_name(&g.name)
                .map_err(|e| de::Error::custom(format!("groups[{at}].name: {e}")))?
                .to_owned();
            if g.id <= super::groups::UNASSIGNED {
                return Err(de::Error::custom(format!(
                    "groups[{at}].id: {} is not an own group's id",
                    g.id
                )));
            }
            // Names compare as SQLite's NOCASE does (ASCII letters).
            if !ids.insert(g.id) || !names.insert(g.name.to_ascii_lowercase()) {
                return Err(de::Error::custom(format!("groups[{at}]: listed twice")));
            }
            groups.push(g);
        }
        Ok(groups)
    }
}

/// The `members` array: each computer handed on as it ends.
struct MembersSeed<'a, 'f> {
    sink: &'a mut (dyn FnMut(FleetItem) -> Result<(), CatalogError> + 'f),
    failure: &'a mut Option<CatalogError>,
}

impl<'de> DeserializeSeed<'de> for MembersSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for MembersSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of computers' groups")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        while let Some(m) = seq.next_element::<MemberDoc>()? {
            let handled = if m.id.is_empty()
                || m.id.len() > MAX_CLIENT_ID
                || m.id.chars().any(char::is_control)
            {
                Err(invalid(
                    &format!("members[{i}]"),
                    "id",
                    format!("a client id of 1 to {MAX_CLIENT_ID} bytes, no control characters"),
                ))
            } else {
                (self.sink)(FleetItem::Member(m))
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
