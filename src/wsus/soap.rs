//! SOAP 1.1 envelopes for the WSUS protocols ([MS-WSUSSS], later
//! [MS-WUSP]): a bounded read of the body, a parse into a small element
//! tree, envelopes and faults written back, and the one mapping from errors
//! to SOAP faults.
//!
//! Bodies come from the network (an upstream's answers, a downstream's
//! requests), so the parser refuses any DOCTYPE outright: no DTD is ever
//! read, so no entity is ever declared, and a "billion laughs" body fails
//! at its first declaration instead of expanding. Only the five predefined
//! entities and character references are understood. Depth, element count
//! and body size are bounded.

use quick_xml::events::Event;
use quick_xml::Reader;

/// The SOAP 1.1 envelope namespace.
pub const ENVELOPE_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// The deepest nesting accepted (WSUS messages are under 10 deep; update
/// documents travel as text inside them, not as markup).
pub const MAX_DEPTH: usize = 64;
/// The most elements one message may hold (a `GetRevisionIdList` answer of
/// 25,000 revisions is ~75,000 elements).
pub const MAX_ELEMENTS: usize = 4_000_000;

/// What can go wrong with an envelope.
#[derive(Debug, thiserror::Error)]
pub enum SoapError {
    #[error("SOAP body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("SOAP body declares a DTD (refused: entities are never expanded)")]
    Dtd,
    #[error("SOAP body nests deeper than {MAX_DEPTH} elements")]
    TooDeep,
    #[error("SOAP body holds more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    #[error("malformed SOAP body: {0}")]
    Malformed(String),
    #[error("no operation inside the SOAP body")]
    NoOperation,
    #[error("expected {expected}, got {got}")]
    Unexpected { expected: String, got: String },
    #[error("{0}")]
    Fault(Fault),
    #[error("reading the SOAP body: {0}")]
    Read(#[from] std::io::Error),
}

/// The `ErrorCode` values of [MS-WSUSSS] 2.2.9.3 (and `CookieExpired`,
/// which [MS-WUSP] 2.2.2.4 adds for clients); any other text is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidParameters,
    InvalidCookie,
    CookieExpired,
    InternalServerError,
    IncompatibleProtocolVersion,
    InvalidAuthorizationCookie,
    FileDigestsMissing,
    ServerChanged,
    ServerBusy,
    Other(String),
}

impl ErrorCode {
    const KNOWN: [ErrorCode; 9] = [
        Self::InvalidParameters,
        Self::InvalidCookie,
        Self::CookieExpired,
        Self::InternalServerError,
        Self::IncompatibleProtocolVersion,
        Self::InvalidAuthorizationCookie,
        Self::FileDigestsMissing,
        Self::ServerChanged,
        Self::ServerBusy,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidParameters => "InvalidParameters",
            Self::InvalidCookie => "InvalidCookie",
            Self::CookieExpired => "CookieExpired",
            Self::InternalServerError => "InternalServerError",
            Self::IncompatibleProtocolVersion => "IncompatibleProtocolVersion",
            Self::InvalidAuthorizationCookie => "InvalidAuthorizationCookie",
            Self::FileDigestsMissing => "FileDigestsMissing",
            Self::ServerChanged => "ServerChanged",
            Self::ServerBusy => "ServerBusy",
            Self::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> Self {
        let s = s.trim();
        Self::KNOWN
            .into_iter()
            .find(|c| c.as_str() == s)
            .unwrap_or_else(|| Self::Other(s.to_owned()))
    }

    /// Whether a fresh cookie (the protocol from its start) cures it
    /// (2.2.9.3: "MUST restart the protocol from the beginning").
    pub fn needs_new_cookie(&self) -> bool {
        matches!(
            self,
            Self::InvalidCookie | Self::CookieExpired | Self::InvalidAuthorizationCookie
        )
    }

    /// What an administrator reads for it in the log and the sync status.
    pub fn meaning(&self) -> &'static str {
        match self {
            Self::InvalidParameters => "the upstream refused a parameter of the request",
            Self::InvalidCookie => "the upstream did not accept our cookie",
            Self::CookieExpired => "our cookie expired",
            Self::InternalServerError => "the upstream failed internally (or does not know an id)",
            Self::IncompatibleProtocolVersion => "the upstream speaks another protocol version",
            Self::InvalidAuthorizationCookie => {
                "the upstream did not accept our authorization cookie"
            }
            Self::FileDigestsMissing => "the upstream does not know some file digests",
            Self::ServerChanged => "the upstream server changed (anchors reset)",
            Self::ServerBusy => "the upstream is too busy",
            Self::Other(_) => "an error code the specification does not name",
        }
    }
}

/// A SOAP 1.1 fault, with the WSUS `detail` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `soap:Client` or `soap:Server`.
    pub code: String,
    pub string: String,
    pub error_code: Option<ErrorCode>,
    /// The `detail/Message`: for `InvalidParameters`, the parameter's name.
    pub message: String,
    /// The `detail/Method`: the SOAPAction that failed.
    pub method: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error_code {
            Some(code) => write!(f, "SOAP fault {} ({})", code.as_str(), code.meaning())?,
            None => write!(f, "SOAP fault {}: {}", self.code, self.string)?,
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl Fault {
    /// A fault the server side answers with.
    pub fn new(error_code: ErrorCode, message: impl Into<String>) -> Fault {
        let client = matches!(
            error_code,
            ErrorCode::InvalidParameters
                | ErrorCode::InvalidCookie
                | ErrorCode::CookieExpired
                | ErrorCode::InvalidAuthorizationCookie
                | ErrorCode::IncompatibleProtocolVersion
        );
        Fault {
            code: if client { "soap:Client" } else { "soap:Server" }.into(),
            string: "Fault occurred".into(),
            error_code: Some(error_code),
            message: message.into(),
            method: String::new(),
        }
    }

    fn from_element(e: &Element) -> Fault {
        let detail = e.child("detail");
        let detail_text = |n: &str| {
            detail
                .and_then(|d| d.child_text(n))
                .unwrap_or_default()
                .to_owned()
        };
        let error_code = detail
            .and_then(|d| d.child_text("ErrorCode"))
            .filter(|s| !s.trim().is_empty())
            .map(ErrorCode::parse);
        Fault {
            code: e.child_text("faultcode").unwrap_or_default().to_owned(),
            string: e.child_text("faultstring").unwrap_or_default().to_owned(),
            error_code,
            message: detail_text("Message"),
            method: detail_text("Method"),
        }
    }

    /// The whole envelope carrying this fault.
    pub fn to_envelope(&self) -> String {
        let mut w = Xml::default();
        w.open("soap:Fault", "");
        w.leaf("faultcode", &self.code);
        w.leaf("faultstring", &self.string);
        w.open("detail", "");
        if let Some(code) = &self.error_code {
            w.leaf("ErrorCode", code.as_str());
        }
        w.leaf("Message", &self.message);
        w.leaf("Method", &self.method);
        w.close("detail");
        w.close("soap:Fault");
        envelope(&w.finish())
    }
}

/// The one mapping from errors to SOAP faults (as `HttpStatus` is for HTTP).
pub trait SoapFault {
    fn fault(&self) -> Fault;
}

impl SoapFault for SoapError {
    fn fault(&self) -> Fault {
        match self {
            SoapError::Fault(f) => f.clone(),
            SoapError::Read(_) => Fault::new(ErrorCode::InternalServerError, ""),
            other => Fault::new(ErrorCode::InvalidParameters, other.to_string()),
        }
    }
}

/// One element: its local name (prefix dropped), its text and children.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child with this local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of the first child with this local name.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// Follows a path of local names.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        names.iter().try_fold(self, |e, n| e.child(n))
    }

    /// The child's text, or an error naming what is missing.
    pub fn required(&self, name: &str) -> Result<&str, SoapError> {
        self.child_text(name).ok_or_else(|| SoapError::Unexpected {
            expected: format!("<{name}> in <{}>", self.name),
            got: "nothing".into(),
        })
    }
}

/// Reads at most `limit` bytes of a body; more is an error, not a cut.
pub fn read_bounded(mut input: impl std::io::Read, limit: usize) -> Result<Vec<u8>, SoapError> {
    use std::io::Read as _;
    let mut body = Vec::new();
    let read = (&mut input).take(limit as u64 + 1).read_to_end(&mut body)?;
    if read > limit {
        return Err(SoapError::TooLarge { limit });
    }
    Ok(body)
}

/// Parses an envelope and returns the operation element inside `Body`; a
/// `Fault` inside the body is returned as `SoapError::Fault`.
pub fn parse_envelope(body: &[u8]) -> Result<Element, SoapError> {
    let root = parse_tree(body)?;
    if root.name != "Envelope" {
        return Err(SoapError::Unexpected {
            expected: "<Envelope>".into(),
            got: format!("<{}>", root.name),
        });
    }
    let soap_body = root.child("Body").ok_or(SoapError::NoOperation)?;
    let op = soap_body.children.first().ok_or(SoapError::NoOperation)?;
    if op.name == "Fault" {
        return Err(SoapError::Fault(Fault::from_element(op)));
    }
    Ok(op.clone())
}

/// Parses a document into an element tree, refusing DTDs and bounded in
/// depth and element count.
pub fn parse_tree(body: &[u8]) -> Result<Element, SoapError> {
    let mut reader = Reader::from_reader(body);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut count = 0usize;
    let mut root = None;
    let malformed = |e: &dyn std::fmt::Display| SoapError::Malformed(e.to_string());
    loop {
        let event = reader.read_event().map_err(|e| malformed(&e))?;
        match event {
            Event::DocType(_) => return Err(SoapError::Dtd),
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                let _ = start;
                return Err(SoapError::Malformed(
                    "content after the root element".into(),
                ));
            }
            Event::Start(start) => {
                count_element(&mut count, stack.len())?;
                stack.push(Element {
                    name: local_name(start.local_name().as_ref()),
                    ..Element::default()
                });
            }
            Event::Empty(start) => {
                count_element(&mut count, stack.len())?;
                let e = Element {
                    name: local_name(start.local_name().as_ref()),
                    ..Element::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(e),
                    None => root = Some(e),
                }
            }
            Event::End(_) => {
                let done = stack
                    .pop()
                    .ok_or_else(|| SoapError::Malformed("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(|e| malformed(&e))?;
                match stack.last_mut() {
                    Some(e) => e.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(SoapError::Malformed("text outside the root".into())),
                }
            }
            Event::CData(c) => {
                let text = std::str::from_utf8(&c).map_err(|e| malformed(&e))?;
                if let Some(e) = stack.last_mut() {
                    e.text.push_str(text);
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(SoapError::Malformed("unclosed element at the end".into()));
    }
    root.ok_or_else(|| SoapError::Malformed("empty document".into()))
}

/// Reads an envelope without building it whole: each element named in
/// `items` (at any depth in the body) is built alone, within the same
/// bounds as [`parse_tree`], handed to `each` and dropped before the next
/// is read, so memory holds one item whatever the answer's size. Other
/// elements are only walked through. A `Fault` in the body is returned as
/// `SoapError::Fault`; a DOCTYPE is refused as in [`parse_tree`]. Returns
/// the operation element's name.
pub fn stream_items<R: std::io::BufRead, E: From<SoapError>>(
    input: R,
    items: &[&str],
    mut each: impl FnMut(Element) -> Result<(), E>,
) -> Result<String, E> {
    let mut reader = Reader::from_reader(input);
    reader.config_mut().trim_text(false);
    let malformed = |e: &dyn std::fmt::Display| SoapError::Malformed(e.to_string());
    let mut buf = Vec::new();
    // The names outside an item, and the item being built.
    let mut path: Vec<String> = Vec::new();
    let mut item: Vec<Element> = Vec::new();
    let mut count = 0usize;
    let mut op = None;
    let mut seen_root = false;
    loop {
        buf.clear();
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| malformed(&e))?;
        let (start, empty) = match &event {
            Event::Start(s) => (Some(s), false),
            Event::Empty(s) => (Some(s), true),
            _ => (None, false),
        };
        if let Some(start) = start {
            count_element(&mut count, path.len() + item.len())?;
            let name = local_name(start.local_name().as_ref());
            if path.is_empty() && item.is_empty() {
                if seen_root {
                    return Err(malformed(&"content after the root element").into());
                }
                seen_root = true;
            }
            if path.len() == 2 && item.is_empty() && op.is_none() {
                op = Some(name.clone());
            }
            let fault = path.len() == 2 && name == "Fault";
            let e = Element {
                name,
                ..Element::default()
            };
            if !item.is_empty() || fault || items.contains(&e.name.as_str()) {
                if empty {
                    match item.last_mut() {
                        Some(parent) => parent.children.push(e),
                        None => finish_item(e, &mut each)?,
                    }
                } else {
                    item.push(e);
                }
            } else if !empty {
                path.push(e.name);
            }
            continue;
        }
        match event {
            Event::DocType(_) => return Err(SoapError::Dtd.into()),
            Event::End(_) => {
                if let Some(done) = item.pop() {
                    match item.last_mut() {
                        Some(parent) => parent.children.push(done),
                        None => finish_item(done, &mut each)?,
                    }
                } else if path.pop().is_none() {
                    return Err(malformed(&"unbalanced end tag").into());
                }
            }
            Event::Text(t) => {
                if let Some(e) = item.last_mut() {
                    e.text.push_str(&t.unescape().map_err(|e| malformed(&e))?);
                }
            }
            Event::CData(c) => {
                if let Some(e) = item.last_mut() {
                    e.text
                        .push_str(std::str::from_utf8(&c).map_err(|e| malformed(&e))?);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !path.is_empty() || !item.is_empty() {
        return Err(malformed(&"unclosed element at the end").into());
    }
    op.ok_or_else(|| SoapError::NoOperation.into())
}

/// An item read whole: a fault ends the read, anything else goes to `each`.
fn finish_item<E: From<SoapError>>(
    e: Element,
    each: &mut impl FnMut(Element) -> Result<(), E>,
) -> Result<(), E> {
    if e.name == "Fault" {
        return Err(SoapError::Fault(Fault::from_element(&e)).into());
    }
    each(e)
}

/// Counts one more element at `depth`, within the bounds.
fn count_element(count: &mut usize, depth: usize) -> Result<(), SoapError> {
    *count += 1;
    if *count > MAX_ELEMENTS {
        return Err(SoapError::TooManyElements);
    }
    if depth >= MAX_DEPTH {
        return Err(SoapError::TooDeep);
    }
    Ok(())
}

fn local_name(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// Wraps an operation's XML in a SOAP 1.1 envelope.
pub fn envelope(inner: &str) -> String {
    let mut out = envelope_open();
    out.push_str(inner);
    out.push_str(ENVELOPE_CLOSE);
    out
}

/// An envelope's start, up to the operation (for answers sent in pieces).
pub fn envelope_open() -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"{ENVELOPE_NS}\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"><soap:Body>"
    )
}

/// An envelope's end, after the operation.
pub const ENVELOPE_CLOSE: &str = "</soap:Body></soap:Envelope>";

/// A small writer of escaped XML (requests and responses are built, never
/// templated from untrusted text).
#[derive(Default)]
pub struct Xml(String);

impl Xml {
    /// `<name attrs>`; `attrs` is trusted markup such as ` xmlns="…"`.
    pub fn open(&mut self, name: &str, attrs: &str) -> &mut Self {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push_str(attrs);
        self.0.push('>');
        self
    }

    pub fn close(&mut self, name: &str) -> &mut Self {
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
        self
    }

    /// `<name>text</name>`, the text escaped.
    pub fn leaf(&mut self, name: &str, text: &str) -> &mut Self {
        self.open(name, "");
        self.0.push_str(&quick_xml::escape::escape(text));
        self.close(name)
    }

    /// `<name>escaped</name>`: `escaped` is text escaped already (kept
    /// so by a cache, so a large fragment is not escaped on every answer).
    pub fn leaf_escaped(&mut self, name: &str, escaped: &str) -> &mut Self {
        self.open(name, "");
        self.0.push_str(escaped);
        self.close(name)
    }

    pub fn finish(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_operation_and_its_children() {
        let body = envelope(
            "<GetCookieResponse xmlns=\"http://www.microsoft.com/SoftwareDistribution\">\
             <GetCookieResult><Expiration>2026-10-04T20:09:27Z</Expiration>\
             <EncryptedData>AAE=</EncryptedData></GetCookieResult></GetCookieResponse>",
        );
        let op = parse_envelope(body.as_bytes()).unwrap();
        assert_eq!(op.name, "GetCookieResponse");
        let result = op.child("GetCookieResult").unwrap();
        assert_eq!(result.child_text("EncryptedData"), Some("AAE="));
    }

    #[test]
    fn escaped_text_comes_back_unescaped_once() {
        let body = envelope("<Op><Blob>&lt;upd:Update a=&quot;1&quot;/&gt;&#65;</Blob></Op>");
        let op = parse_envelope(body.as_bytes()).unwrap();
        assert_eq!(op.child_text("Blob"), Some("<upd:Update a=\"1\"/>A"));
    }

    #[test]
    fn a_billion_laughs_is_refused_at_its_doctype() {
        let mut bomb = String::from("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">");
        for i in 1..10 {
            let prev = if i == 1 {
                "lol".to_string()
            } else {
                format!("lol{}", i - 1)
            };
            bomb.push_str(&format!(
                "<!ENTITY lol{i} \"{}\">",
                format!("&{prev};").repeat(10)
            ));
        }
        bomb.push_str("]><soap:Envelope><soap:Body><Op>&lol9;</Op></soap:Body></soap:Envelope>");
        let started = std::time::Instant::now();
        let err = parse_envelope(bomb.as_bytes()).unwrap_err();
        assert!(matches!(err, SoapError::Dtd), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
    }

    #[test]
    fn an_undeclared_entity_is_an_error_not_an_expansion() {
        let body = envelope("<Op><A>&lol9;</A></Op>");
        assert!(matches!(
            parse_envelope(body.as_bytes()),
            Err(SoapError::Malformed(_))
        ));
    }

    #[test]
    fn deep_nesting_and_big_bodies_are_refused() {
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert!(matches!(
            parse_tree(deep.as_bytes()),
            Err(SoapError::TooDeep)
        ));
        let big = vec![b' '; 1025];
        assert!(matches!(
            read_bounded(&big[..], 1024),
            Err(SoapError::TooLarge { limit: 1024 })
        ));
        assert_eq!(read_bounded(&big[..1024], 1024).unwrap().len(), 1024);
    }

    #[test]
    fn faults_carry_the_wsus_error_code_both_ways() {
        let mut fault = Fault::new(ErrorCode::InvalidCookie, "");
        fault.method = "\"http://www.microsoft.com/SoftwareDistribution/GetUpdateData\"".into();
        let body = fault.to_envelope();
        let Err(SoapError::Fault(back)) = parse_envelope(body.as_bytes()) else {
            panic!("not a fault")
        };
        assert_eq!(back, fault);
        assert!(back.error_code.as_ref().unwrap().needs_new_cookie());
        assert!(back.to_string().contains("InvalidCookie"));
        assert_eq!(
            ErrorCode::parse("Strange"),
            ErrorCode::Other("Strange".into())
        );
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for bad in [
            &b""[..],
            b"<a>",
            b"<a></b>",
            b"<a/><b/>",
            b"text",
            b"<Envelope><Body/></Envelope>",
        ] {
            assert!(
                parse_envelope(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn items_are_read_one_at_a_time_and_faults_and_doctypes_still_end_it() {
        let body = envelope(
            "<GetUpdateDataResponse><GetUpdateDataResult><updates>\
             <Item><Id>1</Id><Blob>&lt;a/&gt;</Blob></Item><Item><Id>2</Id><Blob/></Item>\
             </updates><fileUrls><Url><D>x</D></Url></fileUrls></GetUpdateDataResult></GetUpdateDataResponse>",
        );
        let mut got = Vec::new();
        let op = stream_items::<_, SoapError>(body.as_bytes(), &["Item", "Url"], |e| {
            got.push(e);
            Ok(())
        })
        .unwrap();
        assert_eq!(op, "GetUpdateDataResponse");
        let names: Vec<_> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["Item", "Item", "Url"]);
        assert_eq!(got[0].child_text("Blob"), Some("<a/>"));
        assert_eq!(got[1].child_text("Id"), Some("2"));
        // The callback's error stops the read at once.
        let mut calls = 0;
        let err = stream_items(body.as_bytes(), &["Item"], |_| {
            calls += 1;
            Err(SoapError::NoOperation)
        });
        assert!(err.is_err());
        assert_eq!(calls, 1);

        let fault = Fault::new(ErrorCode::InvalidCookie, "");
        let err =
            stream_items::<_, SoapError>(fault.to_envelope().as_bytes(), &["Item"], |_| Ok(()));
        assert!(
            matches!(err, Err(SoapError::Fault(f)) if f.error_code == Some(ErrorCode::InvalidCookie))
        );
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE a [<!ENTITY b \"c\">]><a>&b;</a>";
        let err = stream_items::<_, SoapError>(bomb.as_bytes(), &["a"], |_| Ok(()));
        assert!(matches!(err, Err(SoapError::Dtd)));
        for bad in ["<a><b></a>", "<a/><b/>", ""] {
            assert!(
                stream_items::<_, SoapError>(bad.as_bytes(), &["b"], |_| Ok(())).is_err(),
                "{bad}"
            );
        }
    }
}
