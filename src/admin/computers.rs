//! The computers that scan against upcache ([MS-WUSP] `RegisterComputer`),
//! with their reported events.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::{ApiError, ApiResult};
use crate::node::App;
use crate::wsus::client::computers::{Computer, StoredEvent};

fn failed(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// `GET /api/v1/computers`.
pub(super) async fn list(State(app): State<Arc<App>>) -> ApiResult<Vec<Computer>> {
    let computers = app.update_server.computers.clone();
    let list = tokio::task::spawn_blocking(move || computers.list())
        .await
        .map_err(failed)?
        .map_err(failed)?;
    Ok(Json(list))
}

/// `GET /api/v1/computers/{id}/events`: 404 for a computer never seen.
pub(super) async fn events(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<Vec<StoredEvent>> {
    let computers = app.update_server.computers.clone();
    let (known, events) = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::wsus::client::computers::ComputerError>((
            computers.exists(&id)?,
            computers.events(&id)?,
        ))
    })
    .await
    .map_err(failed)?
    .map_err(failed)?;
    if !known {
        return Err(ApiError(StatusCode::NOT_FOUND, "no such computer".into()));
    }
    Ok(Json(events))
}
