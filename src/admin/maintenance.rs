//! The store's upkeep while serving: cleanup (files no update needs) and
//! scrub (re-hashing). Both are this node's own, so a follower runs them too.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::{ApiError, ApiResult};
use crate::node::App;
use crate::upkeep::cleanup::CleanupReport;
use crate::upkeep::scrub::{ScrubRequest, ScrubStatus};

/// What `POST /api/v1/cleanup` is asked: without `remove`, a dry run. The
/// field is required, so no bodiless POST deletes anything. `shared`: the
/// shared tier's bucket instead of this node's disk.
#[derive(Debug, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupRequest {
    pub remove: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

/// Removes (or lists) the stored files the policy no longer needs.
pub(super) async fn cleanup(State(app): State<Arc<App>>, body: Bytes) -> ApiResult<CleanupReport> {
    let asked: CleanupRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid cleanup request: {e} (send {{\"remove\": false}} for a dry run)"),
        )
    })?;
    if asked.shared {
        return Ok(Json(app.cleanup_shared(asked.remove).await?));
    }
    let report = tokio::task::spawn_blocking(move || app.cleanup(asked.remove))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(report))
}

pub(super) async fn scrub_status(State(app): State<Arc<App>>) -> Json<ScrubStatus> {
    Json(app.scrubber.status())
}

/// Starts re-hashing the store (`202`, with the status); `409` while one runs.
pub(super) async fn start_scrub(
    State(app): State<Arc<App>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let asked: ScrubRequest = if body.is_empty() {
        ScrubRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("invalid scrub request: {e}"),
            )
        })?
    };
    let status = app.start_scrub(asked)?;
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

/// Stops the running scrub after its current MiB.
pub(super) async fn stop_scrub(State(app): State<Arc<App>>) -> Json<ScrubStatus> {
    app.scrubber.stop();
    Json(app.scrubber.status())
}
