//! Update documents assembled from `wsusscn2.cab` (see `catalog::scancab`):
//! `upcache import wsusscn2.cab` asks which languages to keep, then sends
//! each detail cabinet's documents, one request per cabinet, each written
//! in one transaction (an upload cut short stores nothing of it).
//!
//! The body is one JSON line per document, `{"rid": n, "doc": "<Update…>"}`,
//! then `{"end": count}`: without that last line (a client killed
//! mid-upload) nothing is stored. Each document is read by the same
//! bounded parser as a synced one; one it refuses is reported and skipped.

use std::io::BufRead;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use futures_util::TryStreamExt;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiResult};
use crate::metadata::store::{CabinetCounts, Packed};
use crate::metadata::update_xml::{self, MAX_DOCUMENT};
use crate::metadata::MetaError;
use crate::node::App;

/// The longest line accepted: a document, JSON-escaped (at most 6 bytes
/// per byte in the worst case, far less in practice).
const MAX_LINE: u64 = 2 * MAX_DOCUMENT as u64;

/// `GET /api/v1/documents`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DocumentsInfo {
    /// The languages documents keep (`sync_languages`).
    pub languages: Vec<String>,
    /// Documents stored, by origin (`sync`, `cabinet`).
    pub origins: std::collections::BTreeMap<String, u64>,
}

pub(super) async fn info(State(app): State<Arc<App>>) -> ApiResult<DocumentsInfo> {
    let sync = app.server_sync.clone();
    let origins = tokio::task::spawn_blocking(move || sync.store().origins())
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(DocumentsInfo {
        languages: app.server_sync.languages().to_vec(),
        origins: origins.into_iter().collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CabinetParams {
    /// The detail cabinet's name, for the report and the log.
    cabinet: String,
}

/// A document the server did not store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SkippedDocument {
    pub rid: u64,
    pub reason: String,
}

/// `POST /api/v1/documents?cabinet=NAME`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CabinetReport {
    pub cabinet: String,
    #[serde(flatten)]
    pub counts: CabinetCounts,
    pub skipped: Vec<SkippedDocument>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    rid: Option<u64>,
    doc: Option<String>,
    end: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("reading the upload: {0}")]
    Read(#[from] std::io::Error),
    #[error("line {0}: {1}")]
    Line(u64, String),
    #[error("the upload ends without its end line (cut short?): nothing of it was stored")]
    Truncated,
}

pub(super) async fn import(
    State(app): State<Arc<App>>,
    Query(params): Query<CabinetParams>,
    body: axum::body::Body,
) -> ApiResult<CabinetReport> {
    let stream = http_body_util::Limited::new(body, super::MAX_CATALOG_BYTES)
        .into_data_stream()
        .map_err(std::io::Error::other);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let store = app.server_sync.store().clone();
    let language = app
        .server_sync
        .languages()
        .first()
        .cloned()
        .unwrap_or_else(|| "en".into());
    let cabinet = params.cabinet;
    let report = tokio::task::spawn_blocking(move || {
        // The whole upload first, into an unlinked temp file: the write
        // transaction below holds the database's write lock, which a slow
        // client must not hold for as long as its upload takes.
        let mut spool = crate::store::scratch_file()?;
        std::io::copy(
            &mut std::io::BufReader::with_capacity(1 << 18, reader),
            &mut spool,
        )?;
        std::io::Seek::rewind(&mut spool)?;
        let mut input = std::io::BufReader::with_capacity(1 << 18, spool);
        let mut skipped = Vec::new();
        let result = store.write_cabinet(|w| {
            read_lines(&mut input, &language, &mut skipped, &mut |p| {
                w.write(p).map_err(UploadError::from)
            })
        });
        result.map(|counts| CabinetReport {
            cabinet,
            counts,
            skipped,
        })
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| {
        let status = match e {
            UploadError::Meta(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(status, e.to_string())
    })?;
    tracing::info!(?report, "documents of a cabinet stored");
    Ok(Json(report))
}

/// Reads the lines, handing each document that parses to `write`.
fn read_lines(
    input: &mut impl BufRead,
    language: &str,
    skipped: &mut Vec<SkippedDocument>,
    write: &mut dyn FnMut(&Packed) -> Result<(), UploadError>,
) -> Result<(), UploadError> {
    let mut line = Vec::new();
    let (mut number, mut documents) = (0u64, 0u64);
    loop {
        line.clear();
        number += 1;
        let n = std::io::Read::take(&mut *input, MAX_LINE + 1).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(UploadError::Truncated);
        }
        if n as u64 > MAX_LINE {
            return Err(UploadError::Line(
                number,
                format!("longer than {MAX_LINE} bytes"),
            ));
        }
        let parsed: Line =
            serde_json::from_slice(&line).map_err(|e| UploadError::Line(number, e.to_string()))?;
        match parsed {
            Line {
                end: Some(count), ..
            } => {
                if count != documents {
                    return Err(UploadError::Line(
                        number,
                        format!("{count} documents announced, {documents} sent"),
                    ));
                }
                return Ok(());
            }
            Line {
                rid,
                doc: Some(doc),
                ..
            } => {
                documents += 1;
                let rid = rid.unwrap_or(0);
                match update_xml::parse(doc.as_bytes(), language) {
                    Ok(info) => write(&Packed::new(info, doc.as_bytes()))?,
                    Err(e) => skipped.push(SkippedDocument {
                        rid,
                        reason: e.to_string(),
                    }),
                }
            }
            _ => {
                return Err(UploadError::Line(
                    number,
                    "neither a document nor the end".into(),
                ))
            }
        }
    }
}
