//! `GET /api/v1/attention/updates[?limit=N]`: the updates computers need
//! and no group has approved, most needed first (the console's "Needs
//! attention" page; `fleet::attention`).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiResult};
use crate::fleet::attention::NeededUnapproved;
use crate::node::App;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    limit: Option<u32>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct Unapproved {
    updates: Vec<NeededUnapproved>,
}

pub(super) async fn updates(
    State(app): State<Arc<App>>,
    Query(p): Query<Params>,
) -> ApiResult<Unapproved> {
    let fleet = app.fleet.clone();
    let limit = p.limit.unwrap_or(20);
    let updates = tokio::task::spawn_blocking(move || fleet.needed_unapproved(limit))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(Unapproved { updates }))
}
