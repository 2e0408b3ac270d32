//! The fragments of [MS-WUSP] 2.2.2.2.x that a client gets of an update: a
//! whole `<upd:Update>` document (as [MS-WSUSSS] `GetUpdateData` sends it,
//! and the metadata store keeps it) is split into
//!
//! - the **core** fragment (`SyncUpdates`): `UpdateIdentity`, the core
//!   `Properties`, `Relationships`, `ApplicabilityRules`;
//! - the **extended** fragment (`GetExtendedUpdateInfo`): the other
//!   properties as `ExtendedProperties`, `Files`, `HandlerSpecificData`;
//! - one **localized** fragment per language (`LocalizedProperties`).
//!
//! Fragments carry no namespace prefixes, as a real WSUS sends them: each
//! element and attribute keeps its local name, prefix declarations are
//! dropped and default-namespace declarations (`xmlns="…"` of embedded
//! manifests) kept. The document was parsed when it was stored; this
//! reading is bounded and refuses DTDs all the same.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::metadata::xml::{self, local};

/// `Properties` attributes that belong to the core fragment.
const CORE_PROPERTIES: &[&str] = &[
    "UpdateType",
    "ExplicitlyDeployable",
    "AutoSelectOnWebSites",
    "BrowseOnly",
    "PerUser",
    "IsBeta",
    "EulaID",
];
/// `Properties` attributes neither fragment carries (server bookkeeping).
const SERVER_ONLY: &[&str] = &[
    "PublicationState",
    "CreationDate",
    "PublisherID",
    "LegacyName",
];
const MAX_DEPTH: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FragmentError {
    #[error("stored update document is malformed: {0}")]
    Malformed(String),
}

/// The fragments of one document.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fragments {
    pub core: String,
    pub extended: String,
    /// (language, fragment), in document order.
    pub localized: Vec<(String, String)>,
}

impl Fragments {
    /// The localized fragment for the first of `locales` the document has
    /// (matched on the language before any `-`), else its first one.
    pub fn localized_for(&self, locales: &[String]) -> Option<&str> {
        let wanted = |lang: &str| {
            locales.iter().any(|l| {
                let l = l.split('-').next().unwrap_or(l);
                l.eq_ignore_ascii_case(lang)
                    || l.eq_ignore_ascii_case(lang.split('-').next().unwrap_or(lang))
            })
        };
        self.localized
            .iter()
            .find(|(lang, _)| wanted(lang))
            .or(self.localized.first())
            .map(|(_, f)| f.as_str())
    }
}

/// Where a top-level child of the update goes.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    Core,
    Extended,
    Localized,
    Skip,
}

/// Splits a document into its fragments.
pub fn split(doc: &[u8]) -> Result<Fragments, FragmentError> {
    let mut reader = Reader::from_reader(doc);
    reader.config_mut().trim_text(false);
    let mut out = Fragments::default();
    let mut depth = 0usize;
    // The destination of the subtree being copied, and its buffer.
    let mut target = Target::Skip;
    let mut in_properties = false;
    let mut extended_open = false;
    let mut localized: Option<(String, String)> = None;
    let mut language_text = false;
    let malformed = |e: &dyn std::fmt::Display| FragmentError::Malformed(e.to_string());
    loop {
        let event = reader.read_event().map_err(|e| malformed(&e))?;
        match event {
            Event::DocType(_) => return Err(FragmentError::Malformed("DTD".into())),
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let name = local(e.local_name().as_ref());
                if depth + 1 > MAX_DEPTH {
                    return Err(FragmentError::Malformed("too deep".into()));
                }
                match depth {
                    0 => {}
                    1 if name == "Properties" => {
                        write_properties(&mut out, e, empty)?;
                        extended_open = true;
                        in_properties = !empty;
                        target = Target::Skip;
                    }
                    1 | 2 if name == "LocalizedPropertiesCollection" => target = Target::Localized,
                    1 => {
                        target = match name.as_str() {
                            "UpdateIdentity" | "Relationships" | "ApplicabilityRules" => {
                                Target::Core
                            }
                            _ => Target::Extended,
                        };
                        close_extended_properties(&mut out, &mut extended_open, target);
                        push(&mut out, target, &mut localized, e, empty)?;
                    }
                    2 if in_properties && target != Target::Localized => {
                        // A child of `Properties`: extended (KBArticleID,
                        // InstallationBehavior, ...).
                        target = Target::Extended;
                        push(&mut out, target, &mut localized, e, empty)?;
                    }
                    _ if target == Target::Localized && name == "LocalizedProperties" => {
                        localized = Some((String::new(), String::new()));
                        push(&mut out, target, &mut localized, e, empty)?;
                    }
                    _ => {
                        language_text = target == Target::Localized && name == "Language";
                        push(&mut out, target, &mut localized, e, empty)?;
                    }
                }
                if !empty {
                    depth += 1;
                }
            }
            Event::End(ref e) => {
                depth = depth.saturating_sub(1);
                let name = local(e.local_name().as_ref());
                language_text = false;
                match depth {
                    0 => {}
                    1 if name == "Properties" => in_properties = false,
                    1 | 2 if name == "LocalizedPropertiesCollection" => target = Target::Skip,
                    _ => {
                        write_to(&mut out, target, &mut localized, &format!("</{name}>"));
                        if target == Target::Localized && name == "LocalizedProperties" {
                            if let Some(done) = localized.take() {
                                out.localized.push(done);
                            }
                        }
                    }
                }
            }
            Event::Text(t) if depth > 1 => {
                let raw = std::str::from_utf8(&t).map_err(|e| malformed(&e))?;
                if language_text {
                    if let Some((lang, _)) = localized.as_mut() {
                        lang.push_str(&t.unescape().map_err(|e| malformed(&e))?);
                    }
                }
                write_to(&mut out, target, &mut localized, raw);
            }
            Event::CData(c) if depth > 1 => {
                let raw = std::str::from_utf8(&c).map_err(|e| malformed(&e))?;
                write_to(
                    &mut out,
                    target,
                    &mut localized,
                    &format!("<![CDATA[{raw}]]>"),
                );
            }
            Event::Eof => break,
            _ => {}
        }
    }
    close_extended_properties(&mut out, &mut extended_open, Target::Skip);
    Ok(out)
}

/// `Properties` becomes the core `<Properties …/>` and the opening of
/// `<ExtendedProperties …>` (closed before the next top-level element).
fn write_properties(
    out: &mut Fragments,
    e: &BytesStart,
    _empty: bool,
) -> Result<(), FragmentError> {
    let mut core = String::from("<Properties");
    let mut extended = String::from("<ExtendedProperties");
    for (name, value) in attributes(e)? {
        if CORE_PROPERTIES.contains(&name.as_str()) {
            push_attr(&mut core, &name, &value);
        } else if !SERVER_ONLY.contains(&name.as_str()) && name != "xmlns" {
            push_attr(&mut extended, &name, &value);
        }
    }
    core.push_str(" />");
    extended.push('>');
    out.core.push_str(&core);
    out.extended.push_str(&extended);
    Ok(())
}

fn close_extended_properties(out: &mut Fragments, open: &mut bool, next: Target) {
    if *open && next != Target::Localized {
        out.extended.push_str("</ExtendedProperties>");
        *open = false;
    }
}

/// Writes an element's start (or empty) tag to its fragment.
fn push(
    out: &mut Fragments,
    target: Target,
    localized: &mut Option<(String, String)>,
    e: &BytesStart,
    empty: bool,
) -> Result<(), FragmentError> {
    if target == Target::Skip {
        return Ok(());
    }
    let mut tag = format!("<{}", local(e.local_name().as_ref()));
    for (name, value) in attributes(e)? {
        push_attr(&mut tag, &name, &value);
    }
    tag.push_str(if empty { " />" } else { ">" });
    write_to(out, target, localized, &tag);
    Ok(())
}

fn write_to(
    out: &mut Fragments,
    target: Target,
    localized: &mut Option<(String, String)>,
    text: &str,
) {
    match target {
        Target::Core => out.core.push_str(text),
        Target::Extended => out.extended.push_str(text),
        Target::Localized => {
            if let Some((_, buf)) = localized.as_mut() {
                buf.push_str(text);
            }
        }
        Target::Skip => {}
    }
}

/// An element's attributes without prefixes ([`xml::attributes`]).
fn attributes(e: &BytesStart) -> Result<Vec<(String, String)>, FragmentError> {
    xml::attributes(e).map_err(|err| FragmentError::Malformed(err.to_string()))
}

fn push_attr(tag: &mut String, name: &str, value: &str) {
    tag.push(' ');
    tag.push_str(name);
    tag.push_str("=\"");
    tag.push_str(&quick_xml::escape::escape(value));
    tag.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"<upd:Update xmlns:upd="http://schemas.microsoft.com/msus/2002/12/Update" xmlns:lar="http://schemas.microsoft.com/msus/2002/12/LogicalApplicabilityRules"><upd:UpdateIdentity UpdateID="f1ff1e3d-dd47-4fcb-9405-8f7275ce1ea6" RevisionNumber="200" /><upd:Properties UpdateType="Software" DefaultPropertiesLanguage="en" Handler="http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Cbs" PublicationState="Published" CreationDate="2022-08-23T21:36:39Z" MaxDownloadSize="40"><upd:KBArticleID>5017029</upd:KBArticleID></upd:Properties><upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language><upd:Title>Fix &amp; more</upd:Title></upd:LocalizedProperties><upd:LocalizedProperties><upd:Language>de</upd:Language><upd:Title>Korrektur</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection><upd:Relationships><upd:Prerequisites><upd:AtLeastOne IsCategory="true"><upd:UpdateIdentity UpdateID="72e7624a-5b00-45d2-b92f-e561c0a6a160" /></upd:AtLeastOne></upd:Prerequisites></upd:Relationships><upd:ApplicabilityRules><upd:IsInstalled><lar:False /></upd:IsInstalled><upd:Metadata><assembly xmlns="urn:schemas-microsoft-com:asm.v3" a="1"/></upd:Metadata></upd:ApplicabilityRules><upd:Files><upd:File Digest="hlQslyYcRtWzeaQ+yJX5fq9Am6I=" FileName="x.cab" Size="40"><upd:AdditionalDigest Algorithm="SHA256">QmjzWV4=</upd:AdditionalDigest></upd:File></upd:Files><upd:HandlerSpecificData xsi:type="cbs:Cbs" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><cbs:CbsData xmlns:cbs="c" PackageIdentity="" /></upd:HandlerSpecificData></upd:Update>"#;

    #[test]
    fn a_document_splits_into_unprefixed_fragments() {
        let f = split(DOC.as_bytes()).unwrap();
        assert_eq!(
            f.core,
            "<UpdateIdentity UpdateID=\"f1ff1e3d-dd47-4fcb-9405-8f7275ce1ea6\" RevisionNumber=\"200\" />\
             <Properties UpdateType=\"Software\" />\
             <Relationships><Prerequisites><AtLeastOne IsCategory=\"true\"><UpdateIdentity UpdateID=\"72e7624a-5b00-45d2-b92f-e561c0a6a160\" /></AtLeastOne></Prerequisites></Relationships>\
             <ApplicabilityRules><IsInstalled><False /></IsInstalled><Metadata><assembly xmlns=\"urn:schemas-microsoft-com:asm.v3\" a=\"1\" /></Metadata></ApplicabilityRules>"
        );
        assert_eq!(
            f.extended,
            "<ExtendedProperties DefaultPropertiesLanguage=\"en\" Handler=\"http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Cbs\" MaxDownloadSize=\"40\">\
             <KBArticleID>5017029</KBArticleID></ExtendedProperties>\
             <Files><File Digest=\"hlQslyYcRtWzeaQ+yJX5fq9Am6I=\" FileName=\"x.cab\" Size=\"40\"><AdditionalDigest Algorithm=\"SHA256\">QmjzWV4=</AdditionalDigest></File></Files>\
             <HandlerSpecificData type=\"cbs:Cbs\"><CbsData PackageIdentity=\"\" /></HandlerSpecificData>"
        );
        assert_eq!(f.localized.len(), 2);
        assert_eq!(
            f.localized_for(&["de-DE".into()]),
            Some("<LocalizedProperties><Language>de</Language><Title>Korrektur</Title></LocalizedProperties>")
        );
        assert_eq!(
            f.localized_for(&["fr".into()]),
            Some("<LocalizedProperties><Language>en</Language><Title>Fix &amp; more</Title></LocalizedProperties>")
        );
    }

    #[test]
    fn dtds_and_broken_documents_are_errors() {
        assert!(split(b"<!DOCTYPE x [<!ENTITY a \"b\">]><x/>").is_err());
        assert!(split(b"<a><b></a>").is_err());
    }
}
