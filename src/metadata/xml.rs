//! Start tags read the same way by every reader of update documents: the
//! streaming parser (`update_xml`), the assembly of wsusscn2.cab's
//! fragments (`catalog::scancab`) and the fragments a scan sends
//! (`wsus::client::fragments`). Names lose their prefixes; namespace
//! declarations (`xmlns:p=`) are not attributes (a default-namespace
//! `xmlns=` is, as embedded manifests need it); values are unescaped
//! (the five predefined entities and character references only: no DTD
//! is ever read, so nothing else expands).

use quick_xml::events::BytesStart;

/// A malformed attribute: quick-xml's reason, as it says it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AttributeError(String);

/// A name as text (bytes that are not UTF-8 replaced).
pub fn local(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// An element's attributes, by local name, in document order.
pub fn attributes(e: &BytesStart<'_>) -> Result<Vec<(String, String)>, AttributeError> {
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| AttributeError(err.to_string()))?;
        if a.key.as_ref().starts_with(b"xmlns:") {
            continue;
        }
        let value = a
            .unescape_value()
            .map_err(|err| AttributeError(err.to_string()))?;
        out.push((local(a.key.local_name().as_ref()), value.into_owned()));
    }
    Ok(out)
}

/// The first attribute whose local name is `name` (ASCII case ignored),
/// unescaped; read up to it and no further.
pub fn attr(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, AttributeError> {
    for a in e.attributes() {
        let a = a.map_err(|err| AttributeError(err.to_string()))?;
        if a.key.as_ref().starts_with(b"xmlns:")
            || !a
                .key
                .local_name()
                .as_ref()
                .eq_ignore_ascii_case(name.as_bytes())
        {
            continue;
        }
        let value = a
            .unescape_value()
            .map_err(|err| AttributeError(err.to_string()))?;
        return Ok(Some(value.into_owned()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(tag: &str) -> BytesStart<'_> {
        BytesStart::from_content(tag, tag.find(' ').unwrap_or(tag.len()))
    }

    #[test]
    fn attributes_lose_prefixes_and_namespace_declarations_are_none() {
        let e = start(r#"upd:File xmlns:upd="u" xmlns="m" upd:Digest="a&amp;b" Size="40""#);
        assert_eq!(
            attributes(&e).unwrap(),
            [
                ("xmlns".to_owned(), "m".to_owned()),
                ("Digest".to_owned(), "a&b".to_owned()),
                ("Size".to_owned(), "40".to_owned()),
            ]
        );
        assert_eq!(attr(&e, "digest").unwrap().as_deref(), Some("a&b"));
        assert_eq!(attr(&e, "upd").unwrap(), None);
        assert_eq!(attr(&e, "FileName").unwrap(), None);
        assert!(attributes(&start("a b")).is_err());
        assert!(attr(&start(r#"a x="&nope;""#), "x").is_err());
    }
}
