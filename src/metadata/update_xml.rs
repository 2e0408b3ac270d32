//! The update document of [MS-WUSP] 2.2 (`<upd:Update>`), as an upstream
//! sends it in `GetUpdateData`: read as a stream of events, never as a tree,
//! because a real document can be 47 MB (most of it applicability rules we
//! keep only as stored bytes).
//!
//! ```xml
//! <upd:Update>
//!   <upd:UpdateIdentity UpdateID= RevisionNumber= />
//!   <upd:Properties UpdateType="Software|Driver|Category|Detectoid" PublicationState= CreationDate=>
//!     <upd:KBArticleID>…</upd:KBArticleID> </upd:Properties>
//!   <upd:LocalizedPropertiesCollection><upd:LocalizedProperties>
//!     <upd:Language/> <upd:Title/> <upd:Description/> </…>
//!   <upd:Relationships>
//!     <upd:Prerequisites> UpdateIdentity | <upd:AtLeastOne IsCategory=> UpdateIdentity… </…>
//!     <upd:BundledUpdates> UpdateIdentity (with RevisionNumber), maybe inside AtLeastOne
//!     <upd:SupersededUpdates> UpdateIdentity
//!   </upd:Relationships>
//!   <upd:Files><upd:File Digest="base64 SHA-1" DigestAlgorithm="SHA1" FileName= Size= Modified=>
//!     <upd:AdditionalDigest Algorithm="SHA256">base64</…></upd:File></upd:Files>
//!   <upd:HandlerSpecificData><cat:CategoryInformation CategoryType="Product|UpdateClassification|…"/>
//!   (a driver: <upd:ApplicabilityRules><upd:Metadata>
//!     <drv:WindowsDriverMetaData HardwareID= WhqlDriverID= Class= DriverVerDate= …/> per hardware id)
//! </upd:Update>
//! ```
//!
//! Like every parser of network input here: DTDs are refused (no entity is
//! ever expanded), depth and size are bounded.

use base64::Engine as _;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::digest::{Sha1Digest, Sha256Digest};

/// The largest document accepted (the largest seen upstream is ~47 MB).
pub const MAX_DOCUMENT: usize = 128 << 20;
/// The deepest nesting accepted (applicability rules nest `And`/`Or`/`Not`).
pub const MAX_DEPTH: usize = 256;
/// Most hardware ids kept of one driver document (a real one lists tens).
pub const MAX_HARDWARE_IDS: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpdateXmlError {
    #[error("update document larger than {MAX_DOCUMENT} bytes")]
    TooLarge,
    #[error("update document declares a DTD (refused)")]
    Dtd,
    #[error("update document nests deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("malformed update document: {0}")]
    Malformed(String),
    #[error("update document has no {0}")]
    Missing(&'static str),
}

/// What kind of revision a document describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Category,
    Detectoid,
    Software,
    Driver,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Category => "category",
            Kind::Detectoid => "detectoid",
            Kind::Software => "software",
            Kind::Driver => "driver",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [
            Kind::Category,
            Kind::Detectoid,
            Kind::Software,
            Kind::Driver,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    fn from_update_type(t: &str) -> Kind {
        match t {
            "Category" => Kind::Category,
            "Detectoid" => Kind::Detectoid,
            "Driver" => Kind::Driver,
            _ => Kind::Software,
        }
    }
}

/// One prerequisite: `group` 0 is required on its own; the same non-zero
/// `group` is one `AtLeastOne` (any member satisfies it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prerequisite {
    pub id: String,
    pub group: u32,
    pub is_category: bool,
}

/// One payload file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateFile {
    pub name: String,
    pub size: Option<u64>,
    pub sha1: Option<Sha1Digest>,
    pub sha256: Option<Sha256Digest>,
    pub modified: Option<String>,
}

/// What upcache derives from one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateInfo {
    /// Lowercase.
    pub id: String,
    pub revision: u32,
    pub kind: Kind,
    /// For categories: `Product`, `UpdateClassification`, `ProductFamily`, `Company`.
    pub category_type: Option<String>,
    pub title: String,
    pub description: String,
    pub kb: Option<String>,
    pub publication_state: Option<String>,
    pub creation_date: Option<String>,
    pub prerequisites: Vec<Prerequisite>,
    /// Bundled updates, with the revision when the document names it.
    pub bundled: Vec<(String, Option<u32>)>,
    pub superseded: Vec<String>,
    pub files: Vec<UpdateFile>,
    /// A driver's hardware ids (`WindowsDriverMetaData/@HardwareID`),
    /// lowercase: the devices it is for.
    pub hardware_ids: Vec<String>,
}

/// Where in the document the reader is.
#[derive(Clone, Copy, PartialEq)]
enum Section {
    Other,
    Prerequisites,
    Bundled,
    Superseded,
}

/// A localized block being read.
#[derive(Default)]
struct Localized {
    language: String,
    title: String,
    description: String,
}

/// The parse state between events.
struct State<'a> {
    language: &'a str,
    path: Vec<String>,
    section: Section,
    group: u32,
    group_is_category: bool,
    groups: u32,
    localized: Option<Localized>,
    best: Option<(bool, Localized)>,
    additional_sha256: bool,
    info: UpdateInfo,
    identity_seen: bool,
}

/// Parses a document, taking titles in `language` when it has them (else
/// the first language listed).
pub fn parse(doc: &[u8], language: &str) -> Result<UpdateInfo, UpdateXmlError> {
    if doc.len() > MAX_DOCUMENT {
        return Err(UpdateXmlError::TooLarge);
    }
    let mut reader = Reader::from_reader(doc);
    reader.config_mut().trim_text(false);
    let mut st = State {
        language,
        path: Vec::new(),
        section: Section::Other,
        group: 0,
        group_is_category: false,
        groups: 0,
        localized: None,
        best: None,
        additional_sha256: false,
        info: UpdateInfo {
            id: String::new(),
            revision: 0,
            kind: Kind::Software,
            category_type: None,
            title: String::new(),
            description: String::new(),
            kb: None,
            publication_state: None,
            creation_date: None,
            prerequisites: Vec::new(),
            bundled: Vec::new(),
            superseded: Vec::new(),
            files: Vec::new(),
            hardware_ids: Vec::new(),
        },
        identity_seen: false,
    };
    let malformed = |e: &dyn std::fmt::Display| UpdateXmlError::Malformed(e.to_string());
    let mut root_closed = false;
    loop {
        match reader.read_event().map_err(|e| malformed(&e))? {
            Event::DocType(_) => return Err(UpdateXmlError::Dtd),
            Event::Start(e) => {
                if root_closed {
                    return Err(malformed(&"content after the root element"));
                }
                st.start(&e)?;
                st.path.push(local(&e));
                if st.path.len() > MAX_DEPTH {
                    return Err(UpdateXmlError::TooDeep);
                }
            }
            Event::Empty(e) => {
                if root_closed {
                    return Err(malformed(&"content after the root element"));
                }
                st.start(&e)?;
                st.path.push(local(&e));
                st.end();
                st.path.pop();
            }
            Event::End(_) => {
                st.end();
                if st.path.pop().is_none() {
                    return Err(malformed(&"unbalanced end tag"));
                }
                root_closed = st.path.is_empty();
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(|e| malformed(&e))?;
                st.text(&text)?;
            }
            Event::CData(c) => st.text(&String::from_utf8_lossy(&c))?,
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !st.path.is_empty() || !root_closed {
        return Err(malformed(&"unclosed element at the end"));
    }
    st.finish()
}

/// An element's local name.
fn local(e: &BytesStart<'_>) -> String {
    super::xml::local(e.local_name().as_ref())
}

/// An attribute's unescaped value, by local name.
fn attr(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, UpdateXmlError> {
    super::xml::attr(e, name).map_err(|err| UpdateXmlError::Malformed(err.to_string()))
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}

impl State<'_> {
    fn parent(&self) -> Option<&str> {
        self.path.last().map(String::as_str)
    }

    fn start(&mut self, e: &BytesStart<'_>) -> Result<(), UpdateXmlError> {
        let name = local(e);
        let depth = self.path.len();
        match name.as_str() {
            "Update" if depth == 0 => {}
            _ if depth == 0 => return Err(UpdateXmlError::Missing("<Update> root")),
            "UpdateIdentity" if depth == 1 && !self.identity_seen => {
                self.identity_seen = true;
                let id = attr(e, "UpdateID")?.ok_or(UpdateXmlError::Missing("UpdateID"))?;
                self.info.id = id.to_ascii_lowercase();
                self.info.revision = attr(e, "RevisionNumber")?
                    .and_then(|r| r.parse().ok())
                    .ok_or(UpdateXmlError::Missing("RevisionNumber"))?;
            }
            "UpdateIdentity" => self.related(e)?,
            "Properties" if depth == 1 => {
                let t = attr(e, "UpdateType")?.unwrap_or_default();
                self.info.kind = Kind::from_update_type(&t);
                self.info.publication_state = attr(e, "PublicationState")?;
                self.info.creation_date = attr(e, "CreationDate")?;
            }
            "LocalizedProperties" => self.localized = Some(Localized::default()),
            "Prerequisites" => self.section = Section::Prerequisites,
            "BundledUpdates" => self.section = Section::Bundled,
            "SupersededUpdates" => self.section = Section::Superseded,
            "AtLeastOne" if self.section == Section::Prerequisites => {
                self.groups += 1;
                self.group = self.groups;
                self.group_is_category = attr(e, "IsCategory")?.as_deref() == Some("true");
            }
            "File" if self.parent() == Some("Files") => self.file(e)?,
            "AdditionalDigest" => {
                self.additional_sha256 =
                    attr(e, "Algorithm")?.is_some_and(|a| a.eq_ignore_ascii_case("SHA256"));
            }
            "CategoryInformation" => self.info.category_type = attr(e, "CategoryType")?,
            "WindowsDriverMetaData" if self.info.hardware_ids.len() < MAX_HARDWARE_IDS => {
                if let Some(id) = attr(e, "HardwareID")?.filter(|i| !i.trim().is_empty()) {
                    self.info.hardware_ids.push(id.trim().to_ascii_lowercase());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// An `UpdateIdentity` inside a relationship list.
    fn related(&mut self, e: &BytesStart<'_>) -> Result<(), UpdateXmlError> {
        let Some(id) = attr(e, "UpdateID")? else {
            return Ok(());
        };
        let id = id.to_ascii_lowercase();
        match self.section {
            Section::Prerequisites => self.info.prerequisites.push(Prerequisite {
                id,
                group: self.group,
                is_category: self.group != 0 && self.group_is_category,
            }),
            Section::Bundled => {
                let rev = attr(e, "RevisionNumber")?.and_then(|r| r.parse().ok());
                self.info.bundled.push((id, rev));
            }
            Section::Superseded => self.info.superseded.push(id),
            Section::Other => {}
        }
        Ok(())
    }

    fn file(&mut self, e: &BytesStart<'_>) -> Result<(), UpdateXmlError> {
        let digest = attr(e, "Digest")?.and_then(|d| b64(&d));
        let algorithm = attr(e, "DigestAlgorithm")?.unwrap_or_else(|| "SHA1".into());
        let mut file = UpdateFile {
            name: attr(e, "FileName")?.unwrap_or_default(),
            size: attr(e, "Size")?.and_then(|s| s.parse().ok()),
            sha1: None,
            sha256: None,
            modified: attr(e, "Modified")?,
        };
        match algorithm.to_ascii_uppercase().as_str() {
            "SHA1" => file.sha1 = digest.and_then(|d| Sha1Digest::from_slice(&d)),
            "SHA256" => file.sha256 = digest.and_then(|d| Sha256Digest::from_slice(&d)),
            _ => {}
        }
        self.info.files.push(file);
        Ok(())
    }

    fn text(&mut self, text: &str) -> Result<(), UpdateXmlError> {
        let Some(here) = self.path.last() else {
            return if text.trim().is_empty() {
                Ok(())
            } else {
                Err(UpdateXmlError::Malformed("text outside the root".into()))
            };
        };
        match here.as_str() {
            "KBArticleID" if self.path.len() == 3 => self.info.kb = Some(text.trim().to_owned()),
            "Language" => {
                if let Some(l) = self.localized.as_mut() {
                    l.language.push_str(text.trim());
                }
            }
            "Title" => {
                if let Some(l) = self.localized.as_mut() {
                    l.title.push_str(text);
                }
            }
            "Description" => {
                if let Some(l) = self.localized.as_mut() {
                    l.description.push_str(text);
                }
            }
            "AdditionalDigest" if self.additional_sha256 => {
                let d = b64(text).and_then(|d| Sha256Digest::from_slice(&d));
                if let (Some(d), Some(f)) = (d, self.info.files.last_mut()) {
                    f.sha256 = Some(d);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Called before the element at the top of `path` is popped.
    fn end(&mut self) {
        match self.path.last().map(String::as_str) {
            Some("LocalizedProperties") => {
                if let Some(l) = self.localized.take() {
                    let preferred = l.language.eq_ignore_ascii_case(self.language);
                    if self.best.as_ref().is_none_or(|(p, _)| !p && preferred) {
                        self.best = Some((preferred, l));
                    }
                }
            }
            Some("Prerequisites" | "BundledUpdates" | "SupersededUpdates") => {
                self.section = Section::Other;
            }
            Some("AtLeastOne") if self.section == Section::Prerequisites => {
                self.group = 0;
                self.group_is_category = false;
            }
            Some("AdditionalDigest") => self.additional_sha256 = false,
            _ => {}
        }
    }

    fn finish(mut self) -> Result<UpdateInfo, UpdateXmlError> {
        if !self.identity_seen {
            return Err(UpdateXmlError::Missing("UpdateIdentity"));
        }
        if let Some((_, l)) = self.best.take() {
            self.info.title = l.title.trim().to_owned();
            self.info.description = l.description.trim().to_owned();
        }
        Ok(self.info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAF: &str = r#"<upd:Update xmlns:upd="http://schemas.microsoft.com/msus/2002/12/Update">
      <upd:UpdateIdentity UpdateID="AAAAAAAA-0000-0000-0000-000000000001" RevisionNumber="200"/>
      <upd:Properties UpdateType="Software" PublicationState="Published" CreationDate="2026-01-02T03:04:05Z">
        <upd:KBArticleID>2267602</upd:KBArticleID></upd:Properties>
      <upd:LocalizedPropertiesCollection>
        <upd:LocalizedProperties><upd:Language>de</upd:Language><upd:Title>Definitionsupdate</upd:Title></upd:LocalizedProperties>
        <upd:LocalizedProperties><upd:Language>en</upd:Language><upd:Title>Definition &amp; update</upd:Title>
          <upd:Description>Signatures</upd:Description></upd:LocalizedProperties>
      </upd:LocalizedPropertiesCollection>
      <upd:Relationships>
        <upd:Prerequisites>
          <upd:UpdateIdentity UpdateID="bbbbbbbb-0000-0000-0000-000000000001"/>
          <upd:AtLeastOne IsCategory="true"><upd:UpdateIdentity UpdateID="cccccccc-0000-0000-0000-000000000001"/></upd:AtLeastOne>
          <upd:AtLeastOne><upd:UpdateIdentity UpdateID="dddddddd-0000-0000-0000-000000000001"/>
            <upd:UpdateIdentity UpdateID="dddddddd-0000-0000-0000-000000000002"/></upd:AtLeastOne>
        </upd:Prerequisites>
        <upd:BundledUpdates><upd:UpdateIdentity UpdateID="eeeeeeee-0000-0000-0000-000000000001" RevisionNumber="7"/></upd:BundledUpdates>
        <upd:SupersededUpdates><upd:UpdateIdentity UpdateID="ffffffff-0000-0000-0000-000000000001"/></upd:SupersededUpdates>
      </upd:Relationships>
      <upd:ApplicabilityRules><upd:IsInstalled><lar:And xmlns:lar="x"><lar:True/></lar:And></upd:IsInstalled></upd:ApplicabilityRules>
      <upd:Files><upd:File Digest="h/W9BGlYUAaqXTp30cZi/SiV3c0=" DigestAlgorithm="SHA1" FileName="AM_Delta.exe" Size="11606440" Modified="2026-10-04T09:39:26Z">
        <upd:AdditionalDigest Algorithm="SHA256">Amt0qymy5KsROiwIXm4QIIV75Ju4r+Cl28Pg8gaLXUA=</upd:AdditionalDigest></upd:File></upd:Files>
    </upd:Update>"#;

    #[test]
    fn reads_identity_properties_relationships_and_files() {
        let u = parse(LEAF.as_bytes(), "en").unwrap();
        assert_eq!(u.id, "aaaaaaaa-0000-0000-0000-000000000001");
        assert_eq!((u.revision, u.kind), (200, Kind::Software));
        assert_eq!(u.title, "Definition & update");
        assert_eq!(u.description, "Signatures");
        assert_eq!(u.kb.as_deref(), Some("2267602"));
        assert_eq!(u.prerequisites.len(), 4);
        assert_eq!(u.prerequisites[0].group, 0);
        assert!(u.prerequisites[1].is_category);
        assert_eq!(u.prerequisites[2].group, u.prerequisites[3].group);
        assert_eq!(
            u.bundled,
            vec![("eeeeeeee-0000-0000-0000-000000000001".into(), Some(7))]
        );
        assert_eq!(u.superseded, vec!["ffffffff-0000-0000-0000-000000000001"]);
        let f = &u.files[0];
        assert_eq!(f.name, "AM_Delta.exe");
        assert_eq!(f.size, Some(11606440));
        assert_eq!(
            f.sha1.unwrap().to_hex(),
            "87f5bd0469585006aa5d3a77d1c662fd2895ddcd"
        );
        assert!(f.sha256.is_some());
    }

    #[test]
    fn falls_back_to_the_first_language() {
        let u = parse(LEAF.as_bytes(), "fr").unwrap();
        assert_eq!(u.title, "Definitionsupdate");
    }

    #[test]
    fn reads_a_category() {
        let doc = r#"<upd:Update xmlns:upd="u" xmlns:cat="c"><upd:UpdateIdentity UpdateID="0FA1201D-4330-4FA8-8AE9-B877473B6441" RevisionNumber="100"/>
          <upd:Properties UpdateType="Category"/><upd:LocalizedPropertiesCollection><upd:LocalizedProperties>
          <upd:Language>en</upd:Language><upd:Title>Security Updates</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection>
          <upd:HandlerSpecificData><cat:CategoryInformation CategoryType="UpdateClassification"/></upd:HandlerSpecificData></upd:Update>"#;
        let u = parse(doc.as_bytes(), "en").unwrap();
        assert_eq!(u.kind, Kind::Category);
        assert_eq!(u.category_type.as_deref(), Some("UpdateClassification"));
        assert_eq!(u.id, "0fa1201d-4330-4fa8-8ae9-b877473b6441");
    }

    #[test]
    fn reads_a_drivers_hardware_ids() {
        let doc = r#"<upd:Update xmlns:upd="u" xmlns:drv="d"><upd:UpdateIdentity UpdateID="b2a1b2c3-0000-4000-8000-000000000001" RevisionNumber="101"/>
          <upd:Properties UpdateType="Driver"/>
          <upd:ApplicabilityRules><upd:Metadata>
            <drv:WindowsDriverMetaData HardwareID="PCI\VEN_8086&amp;DEV_10D3" WhqlDriverID="1" Class="Net" DriverVerDate="2024-01-01" DriverVerVersion="12.19.1.37"/>
            <drv:WindowsDriverMetaData HardwareID="PCI\VEN_8086&amp;DEV_10D4" Class="Net"><drv:TargetComputerHardwareId>{x}</drv:TargetComputerHardwareId></drv:WindowsDriverMetaData>
          </upd:Metadata></upd:ApplicabilityRules></upd:Update>"#;
        let u = parse(doc.as_bytes(), "en").unwrap();
        assert_eq!(u.kind, Kind::Driver);
        assert_eq!(
            u.hardware_ids,
            ["pci\\ven_8086&dev_10d3", "pci\\ven_8086&dev_10d4"]
        );
        assert!(parse(LEAF.as_bytes(), "en")
            .unwrap()
            .hardware_ids
            .is_empty());
    }

    #[test]
    fn hostile_documents_are_refused() {
        let bomb = r#"<!DOCTYPE u [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]><upd:Update>&b;</upd:Update>"#;
        assert_eq!(parse(bomb.as_bytes(), "en"), Err(UpdateXmlError::Dtd));
        let deep = format!(
            "<Update><UpdateIdentity UpdateID=\"a\" RevisionNumber=\"1\"/>{}{}</Update>",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(parse(deep.as_bytes(), "en"), Err(UpdateXmlError::TooDeep));
        for bad in [
            "",
            "<Update>",
            "<Other/>",
            "<Update/>",
            "<Update></Update><Update/>",
        ] {
            assert!(parse(bad.as_bytes(), "en").is_err(), "{bad}");
        }
    }
}
