//! A document out of `ServerSyncUpdateData`: `XmlUpdateBlob` is the text
//! itself; `XmlUpdateBlobCompressed` is base64 of a cabinet (LZX from a
//! real WSUS, as recorded by wsus-rs) whose one member holds the document,
//! UTF-16LE as WSUS stores it. upcache keeps every document as UTF-8.

use std::io::{Cursor, Read};

use base64::Engine as _;

use crate::metadata::update_xml::MAX_DOCUMENT;

use super::messages::Blob;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlobError {
    #[error("XmlUpdateBlobCompressed is not base64")]
    Base64,
    #[error("XmlUpdateBlobCompressed is not a readable cabinet: {0}")]
    Cabinet(String),
    #[error("the cabinet holds no file")]
    Empty,
    #[error("the document is larger than {MAX_DOCUMENT} bytes")]
    TooLarge,
    #[error("the document is neither UTF-8 nor UTF-16")]
    Encoding,
}

/// The document's bytes, as UTF-8.
pub fn decode(blob: &Blob) -> Result<Vec<u8>, BlobError> {
    match blob {
        Blob::Plain(text) => Ok(text.as_bytes().to_vec()),
        Blob::Compressed(b64) => {
            let cab = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| BlobError::Base64)?;
            to_utf8(unpack(&cab)?)
        }
    }
}

/// The first member of a cabinet, bounded.
pub fn unpack(cab: &[u8]) -> Result<Vec<u8>, BlobError> {
    let bad = |e: std::io::Error| BlobError::Cabinet(e.to_string());
    let mut cabinet = cab::Cabinet::new(Cursor::new(cab)).map_err(bad)?;
    let name = cabinet
        .folder_entries()
        .flat_map(|f| f.file_entries())
        .map(|f| (f.name().to_owned(), f.uncompressed_size()))
        .next();
    let (name, size) = name.ok_or(BlobError::Empty)?;
    if size as usize > MAX_DOCUMENT {
        return Err(BlobError::TooLarge);
    }
    let mut out = Vec::with_capacity(size as usize);
    cabinet
        .read_file(&name)
        .map_err(bad)?
        .take(MAX_DOCUMENT as u64 + 1)
        .read_to_end(&mut out)
        .map_err(bad)?;
    if out.len() > MAX_DOCUMENT {
        return Err(BlobError::TooLarge);
    }
    Ok(out)
}

/// UTF-16LE (with or without its byte-order mark) or UTF-8, to UTF-8.
pub fn to_utf8(bytes: Vec<u8>) -> Result<Vec<u8>, BlobError> {
    let utf16 = match bytes.as_slice() {
        [0xFF, 0xFE, rest @ ..] => Some(rest),
        [b, 0, ..] if *b != 0 => Some(&bytes[..]),
        _ => None,
    };
    let Some(units) = utf16 else {
        let bytes = bytes
            .strip_prefix(&[0xEF, 0xBB, 0xBF])
            .map(<[u8]>::to_vec)
            .unwrap_or(bytes);
        return std::str::from_utf8(&bytes)
            .map(|_| bytes.clone())
            .map_err(|_| BlobError::Encoding);
    };
    if units.len() % 2 != 0 {
        return Err(BlobError::Encoding);
    }
    let units = units
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map(String::into_bytes)
        .map_err(|_| BlobError::Encoding)
}

/// A cabinet holding `doc` as UTF-16LE under the name `blob` (MSZIP), as
/// an upstream's `XmlUpdateBlobCompressed` carries it (tests, the server side).
pub fn pack(doc: &str) -> Vec<u8> {
    use std::io::Write as _;
    let utf16: Vec<u8> = doc.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut builder = cab::CabinetBuilder::new();
    builder
        .add_folder(cab::CompressionType::MsZip)
        .add_file("blob");
    let mut writer = builder
        .build(Cursor::new(Vec::new()))
        .expect("writing to memory");
    while let Some(mut w) = writer.next_file().expect("writing to memory") {
        w.write_all(&utf16).expect("writing to memory");
    }
    writer.finish().expect("writing to memory").into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compressed_blob_comes_back_as_the_same_utf8_text() {
        let doc = "<upd:Update><upd:Title>Défense — ü</upd:Title></upd:Update>".repeat(100);
        let b64 = base64::engine::general_purpose::STANDARD.encode(pack(&doc));
        assert_eq!(decode(&Blob::Compressed(b64)).unwrap(), doc.as_bytes());
        assert_eq!(decode(&Blob::Plain(doc.clone())).unwrap(), doc.as_bytes());
    }

    #[test]
    fn encodings_and_garbage() {
        let bom: Vec<u8> = [0xFF, 0xFE, b'<', 0, b'a', 0].to_vec();
        assert_eq!(to_utf8(bom).unwrap(), b"<a");
        assert_eq!(to_utf8(b"\xEF\xBB\xBF<a/>".to_vec()).unwrap(), b"<a/>");
        assert_eq!(to_utf8(vec![b'<', 0, b'a']), Err(BlobError::Encoding));
        assert_eq!(
            decode(&Blob::Compressed("!!".into())),
            Err(BlobError::Base64)
        );
        assert!(matches!(
            decode(&Blob::Compressed("TVNDRgAAAA==".into())),
            Err(BlobError::Cabinet(_))
        ));
    }
}
