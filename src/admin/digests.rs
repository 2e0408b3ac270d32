//! `/api/v1/delivery/digests`: an administrator's DO digest bindings on
//! this node. `PUT` binds an object key to a SHA-256 (its next download
//! is verified against it), `DELETE` removes this node's binding, `GET`
//! lists the bindings that apply here: this node's own and, on a
//! follower, its primary's (which the follower pulls; a local binding
//! wins). A node's own, so a follower takes them too.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::{ApiError, ApiResult};
use crate::delivery::bindings::Binding;
use crate::delivery::index::{Index, IndexError};
use crate::delivery::path::ObjectKey;
use crate::digest::Sha256Digest;
use crate::node::App;

/// `PUT`'s body: `{"path": "/filestreamingservice/files/<guid>[/<name>]",
/// "sha256": "<hex>"}`.
#[derive(Debug, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DoDigest {
    path: String,
    sha256: Sha256Digest,
}

/// `DELETE`'s body: `{"path": "/filestreamingservice/files/<guid>[/<name>]"}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DoPath {
    path: String,
}

/// `GET`: the bindings that apply here, one per object, by path.
pub(super) async fn list(State(app): State<Arc<App>>) -> Json<Vec<Binding>> {
    Json(app.delivery.index().digest_bindings())
}

/// Binds a DO object to a digest known from elsewhere (an administrator's
/// mapping): its next download is verified against it, as a catalog
/// file's is, and stored as verified.
pub(super) async fn bind(State(app): State<Arc<App>>, body: Bytes) -> ApiResult<DoDigest> {
    let digest: DoDigest = serde_json::from_slice(&body).map_err(|e| {
        bad_request(format!(
            "invalid digest: {e} (send {{\"path\": \"/filestreamingservice/files/<guid>\", \"sha256\": \"<hex>\"}})"
        ))
    })?;
    let key = object_key(&digest.path)?;
    let sha256 = digest.sha256;
    on_index(&app, move |index| index.set_known_digest(&key, sha256)).await?;
    tracing::info!(path = %digest.path, %sha256, "DO digest bound");
    Ok(Json(digest))
}

/// Removes this node's binding of an object: `204`, or `404` when it has
/// none (a follower's copy of its primary's is removed on the primary).
pub(super) async fn unbind(
    State(app): State<Arc<App>>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let asked: DoPath = serde_json::from_slice(&body).map_err(|e| {
        bad_request(format!(
            "invalid digest removal: {e} (send {{\"path\": \"/filestreamingservice/files/<guid>\"}})"
        ))
    })?;
    let key = object_key(&asked.path)?;
    let key2 = key.clone();
    if on_index(&app, move |index| index.remove_known_digest(&key2)).await? {
        tracing::info!(path = %asked.path, "DO digest binding removed");
        return Ok(StatusCode::NO_CONTENT);
    }
    let message = match app.delivery.index().primary_binds(&key) {
        true => format!(
            "{} is bound by the primary only: remove the binding there (it goes here with the next pull)",
            key.path()
        ),
        false => format!("no binding of {} here", key.path()),
    };
    Err(ApiError(StatusCode::NOT_FOUND, message))
}

fn object_key(path: &str) -> Result<ObjectKey, ApiError> {
    crate::delivery::path::parse(path).map_err(|e| bad_request(format!("path: {e}")))
}

fn bad_request(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

/// Runs `f` on the DO index off the async threads (it writes the database).
async fn on_index<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&Index) -> Result<T, IndexError> + Send + 'static,
) -> Result<T, ApiError> {
    let index = app.delivery.index().clone();
    tokio::task::spawn_blocking(move || f(&index))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}
