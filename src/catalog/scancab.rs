//! The per-revision metadata of `wsusscn2.cab`, beside `package.xml`:
//! `index.xml` names the detail cabinets (`package2.cab` ...), each holding,
//! per revision id, the fragments [MS-WUSP] 2.2.2.2 describes:
//!
//! - `c/<RevisionId>`: the core fragment (`UpdateIdentity`, `Properties`,
//!   `Relationships`, `ApplicabilityRules`);
//! - `x/<RevisionId>`: the extended fragment (`ExtendedProperties`,
//!   `Files`, `HandlerSpecificData`);
//! - `l/<language>/<RevisionId>`: one localized fragment
//!   (`LocalizedProperties`: `Language`, `Title`, `Description`);
//! - `e/` (EULAs) and other folders, not read.
//!
//! [`assemble`] puts one revision's fragments back into the whole
//! `<Update>` document the metadata store keeps (the shape `GetUpdateData`
//! carries), which the update server splits again into the same fragments.
//! Everything here reads untrusted bytes: sizes and depth are bounded, a
//! DTD is refused, no entity is expanded.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::metadata::update_xml::{MAX_DEPTH, MAX_DOCUMENT};
use crate::metadata::xml::{self, local};

/// The namespace of the assembled document (every element unprefixed).
pub const UPDATE_NS: &str = "http://schemas.microsoft.com/msus/2002/12/Update";
/// The largest `index.xml` read (a real one lists tens of cabinets).
pub const MAX_INDEX: usize = 1 << 20;
/// Most detail cabinets one index may name.
pub const MAX_CABINETS: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScanCabError {
    #[error("index.xml: {0}")]
    Index(String),
    #[error("{0} fragment: {1}")]
    Fragment(&'static str, String),
    #[error("assembled document refused: {0}")]
    Document(String),
}

/// A detail cabinet `index.xml` names: its first revision id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailCabinet {
    pub name: String,
    pub range_start: u64,
}

/// Reads `index.xml`'s `<CABLIST>`: every `<CAB NAME= RANGESTART=>` but
/// `package.cab` (which holds `package.xml`), in document order.
pub fn parse_index(xml: &[u8]) -> Result<Vec<DetailCabinet>, ScanCabError> {
    let bad = |why: String| ScanCabError::Index(why);
    if xml.len() > MAX_INDEX {
        return Err(bad(format!("larger than {MAX_INDEX} bytes")));
    }
    let text = crate::wsus::sync::blob::to_utf8(xml.to_vec())
        .map_err(|_| bad("neither UTF-8 nor UTF-16".into()))?;
    let mut reader = Reader::from_reader(text.as_slice());
    let mut depth = 0usize;
    let mut out = Vec::new();
    loop {
        let event = reader.read_event().map_err(|e| bad(e.to_string()))?;
        match event {
            Event::DocType(_) => return Err(bad("declares a DTD (refused)".into())),
            Event::Start(ref e) | Event::Empty(ref e) => {
                if e.local_name().as_ref().eq_ignore_ascii_case(b"CAB") {
                    let name = attr(e, "NAME")
                        .map_err(&bad)?
                        .ok_or_else(|| bad("<CAB> without NAME".into()))?;
                    if !plain_cabinet_name(&name) {
                        return Err(bad(format!("{name:?} is not a cabinet file name")));
                    }
                    let range_start = match attr(e, "RANGESTART").map_err(&bad)? {
                        Some(v) => v
                            .trim()
                            .parse()
                            .map_err(|_| bad(format!("RANGESTART {v:?} is not a number")))?,
                        None => 0,
                    };
                    if !name.eq_ignore_ascii_case("package.cab") {
                        if out.len() == MAX_CABINETS {
                            return Err(bad(format!("names more than {MAX_CABINETS} cabinets")));
                        }
                        out.push(DetailCabinet { name, range_start });
                    }
                }
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(bad("nests too deep".into()));
                    }
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

fn plain_cabinet_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.to_ascii_lowercase().ends_with(".cab")
        && !name.contains(['/', '\\', '\0', ':'])
        && name != ".."
}

/// Which fragment a detail cabinet's member is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Core,
    Extended,
    /// The language, lowercase.
    Localized(String),
}

impl Part {
    /// The scratch table's column values: (0 core, 1 extended, 2 localized; language).
    pub fn key(&self) -> (u8, &str) {
        match self {
            Part::Core => (0, ""),
            Part::Extended => (1, ""),
            Part::Localized(l) => (2, l),
        }
    }
}

/// A member name (`c/123`, `x\123`, `l/en/123`; folders in any case) as
/// the revision id and fragment it holds; `None` for anything else.
pub fn member(name: &str) -> Option<(u64, Part)> {
    let parts: Vec<&str> = name.split(['/', '\\']).collect();
    let rid = |s: &str| {
        (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match parts.as_slice() {
        [dir, id] if dir.eq_ignore_ascii_case("c") => Some((rid(id)?, Part::Core)),
        [dir, id] if dir.eq_ignore_ascii_case("x") => Some((rid(id)?, Part::Extended)),
        [dir, lang, id] if dir.eq_ignore_ascii_case("l") => {
            let ok = !lang.is_empty()
                && lang.len() <= 32
                && lang.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            ok.then_some(())?;
            Some((rid(id)?, Part::Localized(lang.to_ascii_lowercase())))
        }
        _ => None,
    }
}

/// Whether a localized fragment in `lang` is wanted for `languages` (the
/// configured `sync_languages`): the same language, or its primary tag.
pub fn wanted_language(lang: &str, languages: &[String]) -> bool {
    let primary = |l: &str| l.split('-').next().unwrap_or(l).to_ascii_lowercase();
    languages
        .iter()
        .any(|l| l.eq_ignore_ascii_case(lang) || primary(l) == primary(lang))
}

/// The top-level elements of one fragment, each re-written without
/// prefixes: (local name, its attributes, its serialized content).
struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    /// Children and text, serialized.
    inner: String,
    empty: bool,
}

impl Element {
    fn write(&self, out: &mut String) {
        write_start(out, &self.name, &self.attributes, self.empty);
        if !self.empty {
            out.push_str(&self.inner);
            out.push_str("</");
            out.push_str(&self.name);
            out.push('>');
        }
    }
}

/// Assembles one revision's whole document from its core fragment, its
/// extended fragment (when the cabinet has one) and its localized ones.
///
/// A fragment is the sequence of elements [MS-WUSP] 2.2 gives (a wrapping
/// `<Update>` or `<LocalizedPropertiesCollection>` is read through), UTF-8
/// or UTF-16. Prefixes are dropped and every element lands in the update
/// namespace, as the update server serves fragments anyway.
pub fn assemble(
    core: &[u8],
    extended: Option<&[u8]>,
    localized: &[&[u8]],
) -> Result<String, ScanCabError> {
    let total = core.len()
        + extended.map_or(0, <[u8]>::len)
        + localized.iter().map(|l| l.len()).sum::<usize>();
    if total > MAX_DOCUMENT {
        return Err(ScanCabError::Fragment(
            "the",
            format!("fragments larger than {MAX_DOCUMENT} bytes together"),
        ));
    }
    let core = top_level("core", core, &["Update"])?;
    let extended = match extended {
        Some(x) => top_level("extended", x, &["Update"])?,
        None => Vec::new(),
    };
    let mut locals = Vec::new();
    for l in localized {
        locals.extend(
            top_level("localized", l, &["LocalizedPropertiesCollection"])?
                .into_iter()
                .filter(|e| e.name == "LocalizedProperties"),
        );
    }
    let find = |list: &[Element], name: &str| list.iter().position(|e| e.name == name);
    let identity = find(&core, "UpdateIdentity")
        .ok_or_else(|| ScanCabError::Fragment("core", "no <UpdateIdentity>".into()))?;
    let identity_attrs = &core[identity].attributes;
    for needed in ["UpdateID", "RevisionNumber"] {
        if !identity_attrs.iter().any(|(n, _)| n == needed) {
            return Err(ScanCabError::Fragment(
                "core",
                format!("<UpdateIdentity> without {needed}"),
            ));
        }
    }

    let mut out = format!("<Update xmlns=\"{UPDATE_NS}\">");
    core[identity].write(&mut out);
    // Properties: the core's attributes, then the extended ones it lacks,
    // with ExtendedProperties' children (KBArticleID, ...).
    let mut attributes = find(&core, "Properties")
        .map(|i| core[i].attributes.clone())
        .unwrap_or_default();
    let mut inner = String::new();
    if let Some(i) = find(&extended, "ExtendedProperties") {
        for (n, v) in &extended[i].attributes {
            if !attributes.iter().any(|(m, _)| m == n) {
                attributes.push((n.clone(), v.clone()));
            }
        }
        inner.push_str(&extended[i].inner);
    }
    Element {
        name: "Properties".into(),
        attributes,
        empty: inner.is_empty(),
        inner,
    }
    .write(&mut out);
    if !locals.is_empty() {
        out.push_str("<LocalizedPropertiesCollection>");
        for l in &locals {
            l.write(&mut out);
        }
        out.push_str("</LocalizedPropertiesCollection>");
    }
    for e in &core {
        if !matches!(e.name.as_str(), "UpdateIdentity" | "Properties") {
            e.write(&mut out);
        }
    }
    for e in &extended {
        if e.name != "ExtendedProperties" {
            e.write(&mut out);
        }
    }
    out.push_str("</Update>");
    // What the store would refuse is refused here, with the reason.
    crate::metadata::update_xml::parse(out.as_bytes(), "en")
        .map_err(|e| ScanCabError::Document(e.to_string()))?;
    Ok(out)
}

/// The top-level elements of a fragment, read through one wrapper named
/// in `wrappers` when it is the fragment's only element.
fn top_level(
    what: &'static str,
    bytes: &[u8],
    wrappers: &[&str],
) -> Result<Vec<Element>, ScanCabError> {
    let bad = |why: String| ScanCabError::Fragment(what, why);
    let text = crate::wsus::sync::blob::to_utf8(bytes.to_vec())
        .map_err(|_| bad("neither UTF-8 nor UTF-16".into()))?;
    let mut reader = Reader::from_reader(text.as_slice());
    reader.config_mut().trim_text(false);
    let mut out: Vec<Element> = Vec::new();
    // The open elements below the top level being copied into `out.last()`.
    let mut open: Vec<String> = Vec::new();
    let mut wrapped = false;
    let mut wrapper_depth = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| bad(e.to_string()))?;
        match event {
            Event::DocType(_) => return Err(bad("declares a DTD (refused)".into())),
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let name = local(e.local_name().as_ref());
                let depth = open.len() + wrapper_depth;
                if depth + 1 > MAX_DEPTH {
                    return Err(bad(format!("nests deeper than {MAX_DEPTH}")));
                }
                let attributes = attributes(e).map_err(&bad)?;
                if open.is_empty() {
                    if out.is_empty() && !wrapped && !empty && wrappers.contains(&name.as_str()) {
                        wrapped = true;
                        wrapper_depth = 1;
                        continue;
                    }
                    out.push(Element {
                        name: name.clone(),
                        attributes,
                        inner: String::new(),
                        empty,
                    });
                    if !empty {
                        open.push(name);
                    }
                } else {
                    let target = &mut out.last_mut().expect("an open element").inner;
                    write_start(target, &name, &attributes, empty);
                    if !empty {
                        open.push(name);
                    }
                }
            }
            Event::End(ref e) => {
                let name = local(e.local_name().as_ref());
                match open.pop() {
                    Some(expected) if expected == name => {
                        if !open.is_empty() {
                            let target = &mut out.last_mut().expect("an open element").inner;
                            target.push_str("</");
                            target.push_str(&name);
                            target.push('>');
                        }
                    }
                    Some(expected) => {
                        return Err(bad(format!("</{name}> closes <{expected}>")));
                    }
                    None if wrapper_depth == 1 => wrapper_depth = 0,
                    None => return Err(bad(format!("unbalanced </{name}>"))),
                }
            }
            Event::Text(t) => {
                // Checked to be well-formed text without entities beyond
                // the five predefined ones, then kept escaped as it is.
                t.unescape().map_err(|e| bad(e.to_string()))?;
                let raw = std::str::from_utf8(&t).map_err(|e| bad(e.to_string()))?;
                match out.last_mut().filter(|_| !open.is_empty()) {
                    Some(e) => e.inner.push_str(raw),
                    None if raw.trim().is_empty() => {}
                    None => return Err(bad("text outside any element".into())),
                }
            }
            Event::CData(c) => {
                let raw = std::str::from_utf8(&c).map_err(|e| bad(e.to_string()))?;
                match out.last_mut().filter(|_| !open.is_empty()) {
                    Some(e) => {
                        e.inner.push_str("<![CDATA[");
                        e.inner.push_str(raw);
                        e.inner.push_str("]]>");
                    }
                    None => return Err(bad("CDATA outside any element".into())),
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if let Some(name) = open.last() {
        return Err(bad(format!("<{name}> is not closed")));
    }
    if wrapper_depth != 0 {
        return Err(bad("the wrapping element is not closed".into()));
    }
    if out.is_empty() {
        return Err(bad("empty".into()));
    }
    Ok(out)
}

/// An element's attributes without prefixes ([`xml::attributes`]), the
/// first of a name only.
fn attributes(e: &BytesStart<'_>) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in xml::attributes(e).map_err(|err| err.to_string())? {
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, value));
        }
    }
    Ok(out)
}

fn attr(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, String> {
    xml::attr(e, name).map_err(|err| err.to_string())
}

fn write_start(out: &mut String, name: &str, attributes: &[(String, String)], empty: bool) {
    out.push('<');
    out.push_str(name);
    for (n, v) in attributes {
        out.push(' ');
        out.push_str(n);
        out.push_str("=\"");
        out.push_str(&quick_xml::escape::escape(v.as_str()));
        out.push('"');
    }
    out.push_str(if empty { " />" } else { ">" });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::update_xml::{self, Kind};

    const CORE: &str = r#"<UpdateIdentity UpdateID="AAAAAAAA-0000-4000-8000-000000000001" RevisionNumber="200" /><Properties UpdateType="Software" ExplicitlyDeployable="true" /><Relationships><Prerequisites><AtLeastOne IsCategory="true"><UpdateIdentity UpdateID="bbbbbbbb-0000-4000-8000-000000000001" /></AtLeastOne></Prerequisites><BundledUpdates><UpdateIdentity UpdateID="cccccccc-0000-4000-8000-000000000001" RevisionNumber="7" /></BundledUpdates></Relationships><ApplicabilityRules><IsInstalled><False /></IsInstalled></ApplicabilityRules>"#;
    const EXTENDED: &str = r#"<ExtendedProperties DefaultPropertiesLanguage="en" Handler="http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/CommandLineInstallation" MaxDownloadSize="3"><KBArticleID>5034122</KBArticleID></ExtendedProperties><Files><File Digest="h/W9BGlYUAaqXTp30cZi/SiV3c0=" DigestAlgorithm="SHA1" FileName="x.exe" Size="3"><AdditionalDigest Algorithm="SHA256">Amt0qymy5KsROiwIXm4QIIV75Ju4r+Cl28Pg8gaLXUA=</AdditionalDigest></File></Files><HandlerSpecificData type="cmd:CommandLineInstallation"><InstallCommand Arguments="/q" /></HandlerSpecificData>"#;
    const EN: &str = "<LocalizedProperties><Language>en</Language><Title>Fix &amp; more</Title><Description>It fixes.</Description></LocalizedProperties>";

    #[test]
    fn fragments_assemble_into_a_document_the_store_and_the_server_read() {
        let doc = assemble(CORE.as_bytes(), Some(EXTENDED.as_bytes()), &[EN.as_bytes()]).unwrap();
        let u = update_xml::parse(doc.as_bytes(), "en").unwrap();
        assert_eq!(u.id, "aaaaaaaa-0000-4000-8000-000000000001");
        assert_eq!((u.revision, u.kind), (200, Kind::Software));
        assert_eq!(u.title, "Fix & more");
        assert_eq!(u.kb.as_deref(), Some("5034122"));
        assert_eq!(u.prerequisites.len(), 1);
        assert_eq!(u.bundled.len(), 1);
        assert_eq!(u.files[0].name, "x.exe");
        assert!(u.files[0].sha256.is_some());
        // Split again, the fragments are the ones the cabinet held.
        let f = crate::wsus::client::fragments::split(doc.as_bytes()).unwrap();
        assert_eq!(f.core, CORE);
        assert_eq!(f.extended, EXTENDED);
        assert_eq!(f.localized, vec![("en".to_owned(), EN.to_owned())]);
    }

    #[test]
    fn prefixes_wrappers_and_utf16_are_read_through() {
        let core = format!(
            "<?xml version=\"1.0\"?><upd:Update xmlns:upd=\"{UPDATE_NS}\">{}</upd:Update>",
            CORE.replace("<Properties", "<upd:Properties")
        );
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(EN.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let doc = assemble(core.as_bytes(), None, &[&utf16]).unwrap();
        let u = update_xml::parse(doc.as_bytes(), "en").unwrap();
        assert_eq!(u.title, "Fix & more");
        assert!(u.files.is_empty());
    }

    #[test]
    fn broken_fragments_are_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            (
                "<UpdateIdentity UpdateID=\"a\" RevisionNumber=\"1\"><Properties>",
                "not closed",
            ),
            (
                "<Properties UpdateType=\"Software\" />",
                "no <UpdateIdentity>",
            ),
            (
                "<UpdateIdentity UpdateID=\"a\" />",
                "without RevisionNumber",
            ),
            ("<!DOCTYPE x [<!ENTITY a \"b\">]><UpdateIdentity/>", "DTD"),
            (
                "<UpdateIdentity UpdateID=\"a\" RevisionNumber=\"1\"/><a>&bomb;</a>",
                "bomb",
            ),
            ("loose text", "outside"),
            ("", "empty"),
            ("<a></b>", "</b>"),
        ];
        for (core, why) in cases {
            let err = assemble(core.as_bytes(), None, &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{core}: {err}");
        }
        let deep = format!(
            "<UpdateIdentity UpdateID=\"a\" RevisionNumber=\"1\"/>{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert!(assemble(deep.as_bytes(), None, &[]).is_err());
    }

    #[test]
    fn the_index_names_the_detail_cabinets() {
        let xml = br#"<?xml version="1.0" encoding="utf-8"?><INDEX><CABLIST>
            <CAB NAME="package.cab" RANGESTART="0"/>
            <CAB NAME="package2.cab" RANGESTART="0" FILESDIR="1"/>
            <CAB NAME="package3.cab" RANGESTART="170753"/></CABLIST></INDEX>"#;
        assert_eq!(
            parse_index(xml).unwrap(),
            vec![
                DetailCabinet {
                    name: "package2.cab".into(),
                    range_start: 0
                },
                DetailCabinet {
                    name: "package3.cab".into(),
                    range_start: 170753
                },
            ]
        );
        for bad in [
            &br#"<CABLIST><CAB NAME="../x.cab"/></CABLIST>"#[..],
            br#"<CABLIST><CAB RANGESTART="1"/></CABLIST>"#,
            br#"<CABLIST><CAB NAME="a.cab" RANGESTART="x"/></CABLIST>"#,
            br#"<!DOCTYPE a [<!ENTITY b "c">]><CABLIST/>"#,
            br#"<CABLIST><CAB NAME="a.cab"></CABLIST>"#,
        ] {
            assert!(
                parse_index(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn member_names_say_revision_and_fragment() {
        assert_eq!(member("c/123"), Some((123, Part::Core)));
        assert_eq!(member("X\\9"), Some((9, Part::Extended)));
        assert_eq!(
            member("l/EN-us/7"),
            Some((7, Part::Localized("en-us".into())))
        );
        for other in [
            "e/1",
            "c/",
            "c/x1",
            "l/en",
            "l/../1",
            "package.xml",
            "c/1/2",
        ] {
            assert_eq!(member(other), None, "{other}");
        }
        let langs = vec!["en".to_owned(), "de-DE".to_owned()];
        assert!(wanted_language("en", &langs) && wanted_language("en-gb", &langs));
        assert!(wanted_language("de", &langs) && !wanted_language("fr", &langs));
    }
}
