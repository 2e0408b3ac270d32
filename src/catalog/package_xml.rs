//! Microsoft's offline sync package (`package.xml` from `wsusscn2.cab`),
//! parsed as a stream: the document (hundreds of MB) is never held in memory.
//!
//! ```xml
//! <OfflineSyncPackage xmlns="http://schemas.microsoft.com/msus/2004/02/OfflineSync">
//!   <Updates><Update UpdateId= RevisionNumber= RevisionId= CreationDate= IsBundle=>
//!     <PayloadFiles><File Id="base64 SHA-1"/></PayloadFiles>
//!     <BundledBy><Revision Id=/></BundledBy> <SupersededBy><Revision Id=/></SupersededBy>
//!     <Categories><Category Type= Id=/></Categories>
//!   </Update></Updates>
//!   <FileLocations><FileLocation Id= Url=/></FileLocations>
//! </OfflineSyncPackage>
//! ```

use std::io::BufRead;

use base64::Engine as _;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use super::CatalogError;
use crate::digest::Sha1Digest;

pub const NAMESPACE: &str = "http://schemas.microsoft.com/msus/2004/02/OfflineSync";

/// One `<Update>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XmlUpdate {
    pub update_id: String,
    pub revision_number: u32,
    pub revision_id: u64,
    pub creation_date: Option<String>,
    pub is_bundle: bool,
    pub payload: Vec<Sha1Digest>,
    pub bundled_by: Vec<u64>,
    pub superseded_by: Vec<u64>,
    pub classification: Option<String>,
    pub products: Vec<String>,
}

/// What the stream yields, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Update(XmlUpdate),
    FileLocation { sha1: Sha1Digest, url: String },
}

/// Where in `<Update>` we are: which child list the `<Revision>`s belong to.
#[derive(Clone, Copy, PartialEq)]
enum List {
    None,
    BundledBy,
    SupersededBy,
}

/// The longest run of bytes without `<` or `>` in a document we accept.
/// quick-xml buffers a whole text or tag before returning it, so garbage
/// (a gigabyte of anything but markup) would otherwise be buffered whole.
pub const MAX_MARKUP_GAP: usize = 1 << 20;

/// A reader that fails once `MAX_MARKUP_GAP` bytes pass without markup.
struct MarkupGuard<R> {
    inner: R,
    gap: usize,
    offset: u64,
}

impl<R> MarkupGuard<R> {
    fn new(inner: R) -> Self {
        MarkupGuard {
            inner,
            gap: 0,
            offset: 0,
        }
    }
}

impl<R: BufRead> std::io::Read for MarkupGuard<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for MarkupGuard<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.gap > MAX_MARKUP_GAP {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{MAX_MARKUP_GAP} bytes without markup before byte {}: not a package.xml",
                    self.offset
                ),
            ));
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            let consumed = &buf[..n.min(buf.len())];
            match consumed.iter().rposition(|b| matches!(b, b'<' | b'>')) {
                Some(i) => self.gap = consumed.len() - i - 1,
                None => self.gap += consumed.len(),
            }
        }
        self.offset += n as u64;
        self.inner.consume(n);
    }
}

/// Streams `package.xml`, handing each update and file location to `sink`.
/// Errors name the byte offset and the element or attribute at fault.
pub fn parse<R: BufRead>(
    input: R,
    mut sink: impl FnMut(Item) -> Result<(), CatalogError>,
) -> Result<(), CatalogError> {
    let mut reader = NsReader::from_reader(MarkupGuard::new(input));
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut seen_root = false;
    let mut root_closed = false;
    let mut current: Option<XmlUpdate> = None;
    let mut list = List::None;
    loop {
        let at = reader.buffer_position();
        let (ns, event) = reader
            .read_resolved_event_into(&mut buf)
            .map_err(|e| invalid(at, "XML", e.to_string()))?;
        let (start, is_empty) = match &event {
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            Event::End(e) => {
                match e.local_name().as_ref() {
                    b"Update" => {
                        let update = current
                            .take()
                            .ok_or_else(|| invalid(at, "Update", "unbalanced"))?;
                        sink(Item::Update(update))?;
                    }
                    b"BundledBy" | b"SupersededBy" => list = List::None,
                    b"OfflineSyncPackage" => root_closed = true,
                    _ => {}
                }
                buf.clear();
                continue;
            }
            Event::Eof => break,
            Event::Text(t) if !seen_root && !t.is_empty() => {
                return Err(invalid(
                    at,
                    "XML",
                    "text before the root element: not a package.xml",
                ));
            }
            _ => (None, false),
        };
        if let Some(e) = start {
            let name = e.local_name();
            if !seen_root {
                check_root(at, &ns, name.as_ref())?;
                seen_root = true;
            } else {
                match name.as_ref() {
                    b"Update" => {
                        if current.is_some() {
                            return Err(invalid(at, "Update", "nested <Update>"));
                        }
                        let update = read_update(at, &e)?;
                        if is_empty {
                            sink(Item::Update(update))?;
                        } else {
                            current = Some(update);
                        }
                    }
                    b"File" if current.is_some() => {
                        let id = attr(at, &e, "File", "Id")?;
                        current.as_mut().unwrap().payload.push(file_id(at, &id)?);
                    }
                    b"BundledBy" => list = List::BundledBy,
                    b"SupersededBy" => list = List::SupersededBy,
                    b"Revision" if current.is_some() => {
                        let id = number(at, "Revision@Id", &attr(at, &e, "Revision", "Id")?)?;
                        let u = current.as_mut().unwrap();
                        match list {
                            List::BundledBy => u.bundled_by.push(id),
                            List::SupersededBy => u.superseded_by.push(id),
                            List::None => {}
                        }
                    }
                    b"Category" if current.is_some() => {
                        let kind = attr(at, &e, "Category", "Type")?;
                        let id = attr(at, &e, "Category", "Id")?.to_ascii_lowercase();
                        let u = current.as_mut().unwrap();
                        match kind.as_str() {
                            "UpdateClassification" => u.classification = Some(id),
                            "Product" => u.products.push(id),
                            _ => {}
                        }
                    }
                    b"FileLocation" => {
                        let sha1 = file_id(at, &attr(at, &e, "FileLocation", "Id")?)?;
                        let url = attr(at, &e, "FileLocation", "Url")?;
                        sink(Item::FileLocation { sha1, url })?;
                    }
                    _ => {}
                }
            }
        }
        buf.clear();
    }
    if !seen_root {
        return Err(invalid(0, "OfflineSyncPackage", "empty document"));
    }
    if current.is_some() || !root_closed {
        return Err(invalid(
            reader.buffer_position(),
            "OfflineSyncPackage",
            "truncated: the document ends before </OfflineSyncPackage>",
        ));
    }
    Ok(())
}

fn invalid(at: u64, what: &str, reason: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        at: format!("byte {at}, {what}"),
        reason: reason.into(),
    }
}

fn check_root(at: u64, ns: &ResolveResult<'_>, name: &[u8]) -> Result<(), CatalogError> {
    if name != b"OfflineSyncPackage" {
        let name = String::from_utf8_lossy(name);
        return Err(invalid(
            at,
            "root",
            format!("expected <OfflineSyncPackage>, found <{name}>"),
        ));
    }
    match ns {
        ResolveResult::Bound(n) if n.as_ref() == NAMESPACE.as_bytes() => Ok(()),
        ResolveResult::Bound(n) => Err(invalid(
            at,
            "OfflineSyncPackage",
            format!(
                "namespace {:?}, expected {NAMESPACE}",
                String::from_utf8_lossy(n.as_ref())
            ),
        )),
        _ => Err(invalid(
            at,
            "OfflineSyncPackage",
            format!("no namespace, expected {NAMESPACE}"),
        )),
    }
}

fn read_update(at: u64, e: &BytesStart<'_>) -> Result<XmlUpdate, CatalogError> {
    let update_id = attr(at, e, "Update", "UpdateId")?.to_ascii_lowercase();
    if update_id.is_empty()
        || update_id.len() > 64
        || !update_id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
    {
        return Err(invalid(
            at,
            "Update@UpdateId",
            format!("{update_id:?} is not a GUID"),
        ));
    }
    let revision_id = number(
        at,
        "Update@RevisionId",
        &attr(at, e, "Update", "RevisionId")?,
    )?;
    let revision_number = match optional_attr(at, e, "RevisionNumber")? {
        Some(v) => number(at, "Update@RevisionNumber", &v)? as u32,
        None => 0,
    };
    Ok(XmlUpdate {
        update_id,
        revision_number,
        revision_id,
        creation_date: optional_attr(at, e, "CreationDate")?,
        is_bundle: optional_attr(at, e, "IsBundle")?.is_some_and(|v| v == "true"),
        ..Default::default()
    })
}

fn attr(at: u64, e: &BytesStart<'_>, element: &str, name: &str) -> Result<String, CatalogError> {
    optional_attr(at, e, name)?
        .ok_or_else(|| invalid(at, &format!("{element}@{name}"), "missing attribute"))
}

fn optional_attr(at: u64, e: &BytesStart<'_>, name: &str) -> Result<Option<String>, CatalogError> {
    for a in e.attributes() {
        let a = a.map_err(|err| invalid(at, name, err.to_string()))?;
        if a.key.local_name().as_ref() == name.as_bytes() {
            let v = a
                .unescape_value()
                .map_err(|err| invalid(at, name, err.to_string()))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

fn number(at: u64, what: &str, v: &str) -> Result<u64, CatalogError> {
    v.parse()
        .map_err(|_| invalid(at, what, format!("{v:?} is not a number")))
}

/// A file `Id`: the base64 of its 20-byte SHA-1.
fn file_id(at: u64, id: &str) -> Result<Sha1Digest, CatalogError> {
    base64::engine::general_purpose::STANDARD
        .decode(id)
        .ok()
        .and_then(|b| Sha1Digest::from_slice(&b))
        .ok_or_else(|| {
            invalid(
                at,
                "File@Id",
                format!("{id:?} is not the base64 of a SHA-1"),
            )
        })
}

/// The KB number in a Microsoft Update file URL (`...-kb5034122-x64_...`).
pub fn kb_from_url(url: &str) -> Option<String> {
    let lower = url.to_ascii_lowercase();
    let name = lower.rsplit('/').next()?;
    let i = name.find("kb")?;
    let digits: String = name[i + 2..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    (!digits.is_empty()).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_without_markup_is_refused_without_buffering_it() {
        use std::io::Read as _;
        let garbage = std::io::repeat(0).take(64 << 20);
        let err = parse(std::io::BufReader::new(garbage), |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("without markup"), "{err}");
    }

    fn items(xml: &str) -> Result<Vec<Item>, CatalogError> {
        let mut out = Vec::new();
        parse(xml.as_bytes(), |i| {
            out.push(i);
            Ok(())
        })?;
        Ok(out)
    }

    const SHA1_B64: &str = "bl63nhPgDOgxEUi4i9v+eHBtXXA=";

    #[test]
    fn updates_files_bundles_and_supersedence() {
        let xml = format!(
            r#"<?xml version="1.0"?><OfflineSyncPackage xmlns="{NAMESPACE}" PackageVersion="1.1">
            <Updates>
              <Update UpdateId="631FDCEA-0000-0000-0000-000000000001" RevisionNumber="201" RevisionId="43268251" CreationDate="2025-05-12T20:45:23Z" IsBundle="true">
                <SupersededBy><Revision Id="44174230"/></SupersededBy>
                <Categories><Category Type="UpdateClassification" Id="0FA1201D-4330-4FA8-8AE9-B877473B6441"/><Category Type="Product" Id="a3c2375d-0c8a-42f9-bce0-28333e198407"/></Categories>
              </Update>
              <Update UpdateId="f87dda5a-0000-0000-0000-000000000002" RevisionId="21221682" DeploymentAction="Bundle">
                <PayloadFiles><File Id="{SHA1_B64}"/></PayloadFiles>
                <BundledBy><Revision Id="43268251"/></BundledBy>
              </Update>
            </Updates>
            <FileLocations><FileLocation Id="{SHA1_B64}" Url="http://download.windowsupdate.com/c/x/windows10.0-kb5034122-x64_6e5eb79e13e00ce8311148b88bdbfe78706d5d70.cab"/></FileLocations>
            </OfflineSyncPackage>"#
        );
        let items = items(&xml).unwrap();
        let Item::Update(bundle) = &items[0] else {
            panic!()
        };
        assert_eq!(bundle.update_id, "631fdcea-0000-0000-0000-000000000001");
        assert_eq!(
            (bundle.revision_number, bundle.revision_id, bundle.is_bundle),
            (201, 43268251, true)
        );
        assert_eq!(bundle.superseded_by, vec![44174230]);
        assert_eq!(
            bundle.classification.as_deref(),
            Some("0fa1201d-4330-4fa8-8ae9-b877473b6441")
        );
        let Item::Update(child) = &items[1] else {
            panic!()
        };
        assert_eq!(child.bundled_by, vec![43268251]);
        assert_eq!(
            child.payload[0].to_hex(),
            "6e5eb79e13e00ce8311148b88bdbfe78706d5d70"
        );
        let Item::FileLocation { sha1, url } = &items[2] else {
            panic!()
        };
        assert_eq!(sha1, &child.payload[0]);
        assert_eq!(kb_from_url(url).as_deref(), Some("5034122"));
    }

    #[test]
    fn bad_documents_name_the_place() {
        let wrong_ns = r#"<OfflineSyncPackage xmlns="urn:other"><Updates/></OfflineSyncPackage>"#;
        assert!(items(wrong_ns)
            .unwrap_err()
            .to_string()
            .contains("namespace"));
        let bad_b64 = format!(
            r#"<OfflineSyncPackage xmlns="{NAMESPACE}"><FileLocations><FileLocation Id="!!" Url="http://x/y"/></FileLocations></OfflineSyncPackage>"#
        );
        assert!(items(&bad_b64).unwrap_err().to_string().contains("File@Id"));
        let truncated = format!(
            r#"<OfflineSyncPackage xmlns="{NAMESPACE}"><Updates><Update UpdateId="ab" RevisionId="1">"#
        );
        assert!(items(&truncated).is_err());
        let missing = format!(
            r#"<OfflineSyncPackage xmlns="{NAMESPACE}"><Updates><Update UpdateId="ab"/></Updates></OfflineSyncPackage>"#
        );
        assert!(items(&missing)
            .unwrap_err()
            .to_string()
            .contains("RevisionId"));
        assert!(items("").is_err());
        assert!(items("<html><body>not a catalog</body></html>")
            .unwrap_err()
            .to_string()
            .contains("OfflineSyncPackage"));
    }
}
