//! The generated upstream catalog the benchmarks share: `sync_bench`
//! serves it over [MS-WSUSSS], `scan_storm` writes it straight into a
//! metadata store. Documents are sized from their id: most of a few KB,
//! some of hundreds of KB, one in a thousand of 4 MB (applicability rules
//! padded out), each with one file.

use base64::Engine as _;
use sha1::Digest as _;

pub const PRODUCT: &str = "8c3fcc84-7410-4a95-8b89-a166a0190486";
pub const CLASSIFICATION: &str = "0fa1201d-4330-4fa8-8ae9-b877473b6441";

pub fn update_id(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i, i)
}

/// A payload file a document names: base64 digests, size, name.
#[allow(dead_code)] // sync_bench names no real file
pub struct Payload {
    pub sha1: String,
    pub sha256: String,
    pub size: u64,
    pub name: String,
}

/// Document `id`: a category, or an update whose size is picked from the
/// id (most small, a few huge), in `PRODUCT`, with a made-up file.
#[allow(dead_code)] // scan_storm places documents in its own products
pub fn document(id: &str) -> (String, String) {
    document_in(id, PRODUCT, None)
}

/// A category document.
pub fn category(id: &str, title: &str, kind: &str) -> String {
    format!(
        "<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\" \
         xmlns:cat=\"http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Category\">\
         <upd:UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"1\" /><upd:Properties UpdateType=\"Category\" />\
         <upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language>\
         <upd:Title>{title}</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection>\
         <upd:HandlerSpecificData><cat:CategoryInformation CategoryType=\"{kind}\" /></upd:HandlerSpecificData></upd:Update>"
    )
}

/// Document `id` in `product`, naming `payload` as its file (else a
/// made-up one). Returns the XML and the file's base64 SHA-1.
pub fn document_in(id: &str, product: &str, payload: Option<&Payload>) -> (String, String) {
    if id == PRODUCT || id == CLASSIFICATION {
        let (title, kind) = if id == PRODUCT {
            ("Windows 11", "Product")
        } else {
            ("Security Updates", "UpdateClassification")
        };
        return (category(id, title, kind), String::new());
    }
    let i = usize::from_str_radix(&id[..8], 16).unwrap_or(0);
    let size = match i % 1000 {
        0 => 4 << 20,
        1..=49 => 300 << 10,
        50..=299 => 40 << 10,
        _ => 6 << 10,
    };
    let (sha1, sha256, file_size, file_name) = match payload {
        Some(p) => (p.sha1.clone(), p.sha256.clone(), p.size, p.name.clone()),
        None => (
            base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(id.as_bytes())),
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(id.as_bytes())),
            1_000_000 + i as u64,
            format!("f_{id}.cab"),
        ),
    };
    let mut rules = String::with_capacity(size);
    let mut k = 0;
    while rules.len() < size {
        k += 1;
        rules.push_str(&format!(
            "<bar:RegDword Key=\"HKEY_LOCAL_MACHINE\" Subkey=\"SOFTWARE\\Microsoft\\Updates\\{id}\" Value=\"V{k}\" Comparison=\"EqualTo\" Data=\"{}\" />",
            (i * 31 + k) % 97
        ));
    }
    let xml = format!(
        "<upd:Update xmlns:upd=\"http://schemas.microsoft.com/msus/2002/12/Update\" \
         xmlns:bar=\"http://schemas.microsoft.com/msus/2002/12/BaseApplicabilityRules\">\
         <upd:UpdateIdentity UpdateID=\"{id}\" RevisionNumber=\"1\" />\
         <upd:Properties UpdateType=\"Software\" PublicationState=\"Published\" CreationDate=\"2026-01-13T18:00:00Z\">\
         <upd:KBArticleID>{}</upd:KBArticleID></upd:Properties>\
         <upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en</upd:Language>\
         <upd:Title>Generated update {i}</upd:Title></upd:LocalizedProperties></upd:LocalizedPropertiesCollection>\
         <upd:Relationships><upd:Prerequisites><upd:AtLeastOne IsCategory=\"true\"><upd:UpdateIdentity UpdateID=\"{CLASSIFICATION}\" />\
         </upd:AtLeastOne><upd:AtLeastOne IsCategory=\"true\"><upd:UpdateIdentity UpdateID=\"{product}\" /></upd:AtLeastOne>\
         </upd:Prerequisites></upd:Relationships>\
         <upd:ApplicabilityRules><upd:IsInstalled>{rules}</upd:IsInstalled></upd:ApplicabilityRules>\
         <upd:Files><upd:File Digest=\"{sha1}\" DigestAlgorithm=\"SHA1\" FileName=\"{file_name}\" Size=\"{file_size}\">\
         <upd:AdditionalDigest Algorithm=\"SHA256\">{sha256}</upd:AdditionalDigest></upd:File></upd:Files></upd:Update>",
        5_000_000 + i,
    );
    (xml, sha1)
}
