//! `POST /api/v1/reports/forwarded`: a follower's clients' reports, applied
//! as if they had come here, once per origin and seq however often they
//! are sent (`wsus::client::outbox`). Taken on a follower too, which passes
//! them on to its own primary.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use axum::http::StatusCode;

use super::{ApiError, ApiResult};
use crate::node::App;
use crate::wsus::client::outbox::{Applied, ForwardBatch};

pub(super) async fn take(
    State(app): State<Arc<App>>,
    Json(batch): Json<ForwardBatch>,
) -> ApiResult<Applied> {
    let services = app.update_server.clone();
    let applied_through = tokio::task::spawn_blocking(move || services.apply_forwarded(&batch))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(Applied { applied_through }))
}
