//! Server-to-server sync from the admin API: start one (`409` while one
//! runs), its state, progress, last result and next run; the products and
//! classifications to sync; and each synced update's whole document.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, ApiResult};
use crate::node::App;
use crate::wsus::sync::service::{Categories, SyncRequest, SyncStatus};
use crate::wsus::sync::Selection;

/// Starts a sync: `202` with its start, `409` while one runs.
pub(super) async fn start(State(app): State<Arc<App>>, body: Bytes) -> Result<Response, ApiError> {
    let asked: SyncRequest = if body.is_empty() {
        SyncRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("invalid sync request: {e}"),
            )
        })?
    };
    if let Some(u) = &asked.upstream {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("upstream {u:?} is not an http(s) URL"),
            ));
        }
    }
    let running = app.start_server_sync(asked.upstream)?;
    Ok((StatusCode::ACCEPTED, Json(running)).into_response())
}

pub(super) async fn status(State(app): State<Arc<App>>) -> ApiResult<SyncStatus> {
    let sync = app.server_sync.clone();
    Ok(Json(blocking(move || sync.status()).await??))
}

pub(super) async fn categories(State(app): State<Arc<App>>) -> ApiResult<Categories> {
    let sync = app.server_sync.clone();
    Ok(Json(blocking(move || sync.categories()).await??))
}

/// Replaces the selection (`{"products": [...], "classifications": [...]}`,
/// titles or GUIDs); unknown names are refused (`400`).
pub(super) async fn select(State(app): State<Arc<App>>, body: Bytes) -> ApiResult<Categories> {
    let wanted: Selection = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid selection: {e} (send {{\"products\": [...], \"classifications\": [...]}})"
            ),
        )
    })?;
    let sync = app.server_sync.clone();
    Ok(Json(blocking(move || sync.select(&wanted)).await??))
}

/// The whole update document of the latest synced revision, as XML.
pub(super) async fn document(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = app.server_sync.store().clone();
    let id2 = id.clone();
    let doc = blocking(move || store.document(&id2)).await??;
    let Some((revision, bytes)) = doc else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no synced metadata for update {id:?}"),
        ));
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/xml; charset=utf-8".to_owned(),
            ),
            (
                header::HeaderName::from_static("x-revision-number"),
                revision.to_string(),
            ),
        ],
        bytes,
    )
        .into_response())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
