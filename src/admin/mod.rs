//! The admin API: JSON over HTTP on its own listener (loopback by default,
//! bearer token required when exposed). The CLI is a thin client of it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::TryStreamExt;
use http_body_util::BodyExt;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use fleet::GroupInfo;

use crate::catalog::{CatalogError, Counts, UpdateQuery, UpdateState};
use crate::fetch::{FetchStatus, RateLimit, MIN_RATE};
use crate::http::error::HttpStatus;
use crate::net::tls::Terminator;
use crate::net::{Front, Peer};
use crate::node::App;
use crate::policy::Policy;
use crate::upkeep::scrub::ScrubStatus;

/// The largest catalog upload: imports stream, so this bounds the length of
/// one import transaction, not memory.
const MAX_CATALOG_BYTES: usize = 4 << 30;

/// The largest JSON control body (approvals, rules, policy): they are small.
const MAX_CONTROL_BYTES: usize = 1 << 20;

/// The largest batch of forwarded client reports: a follower sends up to
/// 4 MiB of reports, or one larger report alone (a `ReportEventBatch` is at
/// most `wusp_max_body_bytes`, its JSON about as long).
const MAX_FORWARD_BYTES: usize = 64 << 20;
const FORWARD_PATH: &str = "/api/v1/reports/forwarded";

/// An API error: a status and a message, sent as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl<E: HttpStatus + std::fmt::Display> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.status(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Serves the admin API until `shutdown` fires, with the content
/// listener's plumbing (head timeout, idle timeout, connection cap), over
/// TLS when given a certificate.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<Arc<Terminator>>,
    shutdown: CancellationToken,
) {
    let limits = app.config.net.admin_limits();
    let metrics = app.metrics.clone();
    let service = hyper_util::service::TowerToHyperService::new(router(app));
    let front = match tls {
        Some(tls) => Front::Tls(tls),
        None => Front::Plain,
    };
    // Reached directly, never through the balancer; guarded by the token.
    // Its metrics count send timeouts and connections over the per-address cap.
    let gate = Arc::new(crate::net::Gate {
        metrics: Some(metrics),
        ..crate::net::Gate::default()
    });
    crate::net::serve(listener, service, limits, front, gate, shutdown).await;
}

/// The API's routes.
pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route(
            "/api/v1/catalog",
            post(import_catalog)
                .layer(DefaultBodyLimit::max(MAX_CATALOG_BYTES))
                .get(export_catalog),
        )
        .route(
            "/api/v1/documents",
            post(documents::import)
                .layer(DefaultBodyLimit::max(MAX_CATALOG_BYTES))
                .get(documents::info),
        )
        .route("/api/v1/updates", get(list_updates))
        .route("/api/v1/updates/{id}", get(get_update))
        .route("/api/v1/updates/{id}/xml", get(server_sync::document))
        .route("/api/v1/updates/{id}/status", get(fleet::update_status))
        .route("/api/v1/computers", get(fleet::list))
        .route("/api/v1/computers/{id}", get(fleet::computer))
        .route("/api/v1/computers/{id}/events", get(fleet::events))
        .route(
            "/api/v1/computers/{id}/groups",
            axum::routing::put(fleet::set_groups),
        )
        .route(
            "/api/v1/groups",
            get(fleet::groups).post(fleet::create_group),
        )
        .route(
            "/api/v1/groups/{name}",
            axum::routing::put(fleet::rename_group).delete(fleet::delete_group),
        )
        .route("/api/v1/reports/compliance.csv", get(fleet::compliance_csv))
        .route("/api/v1/attention/updates", get(attention::updates))
        .route("/api/v1/updates/{id}/{action}", post(set_state))
        .route(
            "/api/v1/server-sync",
            get(server_sync::status).post(server_sync::start),
        )
        .route(
            "/api/v1/categories",
            get(server_sync::categories).put(server_sync::select),
        )
        .route("/api/v1/approvals", post(set_state_where))
        .route("/api/v1/rules", get(list_rules).post(add_rule))
        .route("/api/v1/rules/{id}", axum::routing::delete(remove_rule))
        .route("/api/v1/policy", get(get_policy).put(put_policy))
        .route("/api/v1/status", get(status))
        .route("/api/v1/facets", get(facets))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            refuse_writes_on_followers,
        ))
        // A follower's clients' reports: a follower of a follower passes
        // them on, so a follower takes them too.
        .route(
            FORWARD_PATH,
            post(forwarded::take).layer(DefaultBodyLimit::max(MAX_FORWARD_BYTES)),
        )
        // This node's own, not the catalog's: a follower sets it too.
        .route(
            "/api/v1/upstream/rate-limit",
            get(get_rate_limit).put(put_rate_limit),
        )
        .route("/api/v1/cleanup", post(maintenance::cleanup))
        // This node's DO bindings: a digest binds an object key for its
        // next download. A follower makes its own beside its primary's.
        .route(
            "/api/v1/delivery/digests",
            get(digests::list)
                .put(digests::bind)
                .delete(digests::unbind),
        )
        .route(
            "/api/v1/scrub",
            get(maintenance::scrub_status)
                .post(maintenance::start_scrub)
                .delete(maintenance::stop_scrub),
        )
        .layer(middleware::from_fn_with_state(app.clone(), require_token))
        .layer(middleware::from_fn(refuse_announced_oversize))
        .layer(DefaultBodyLimit::max(MAX_CONTROL_BYTES));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(console::page))
        .merge(api)
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such admin endpoint".into()) })
        .layer(middleware::from_fn_with_state(
            app.clone(),
            browser::refuse_cross_site,
        ))
        .layer(middleware::from_fn(audit_writes))
        .with_state(app)
}

/// One log line per admin write (anything but GET and HEAD), refused ones
/// included: who changed approvals, rules, the policy or the rate limit,
/// and what came of it. The token is never logged.
async fn audit_writes(req: Request, next: Next) -> Response {
    if matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let peer = req
        .extensions()
        .get::<Peer>()
        .map_or_else(|| "-".to_owned(), |p| p.0.to_string());
    let response = next.run(req).await;
    tracing::info!(
        target: "upcache::audit",
        %method,
        path,
        %peer,
        status = response.status().as_u16(),
        "admin write"
    );
    response
}

mod attention;
mod browser;
mod console;
mod digests;
pub mod documents;
mod fleet;
mod forwarded;
mod maintenance;
mod server_sync;
mod settings;

pub use maintenance::CleanupRequest;
pub use settings::AdminSettings;

/// Checks `Authorization: Bearer <token>` when a token is configured.
async fn require_token(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(token) = &app.config.admin.admin_token {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
            let mut r = ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".into(),
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    next.run(req).await
}

/// A body whose `Content-Length` is over its endpoint's limit gets `413`
/// at once, as nginx's `client_max_body_size` does: unread, so the client
/// is not left writing into a connection that was refused (it may then
/// fail its write before it reads the answer). Bodies without a length are
/// cut at the limit as they are read.
async fn refuse_announced_oversize(req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let (limit, what) = if matches!(req.uri().path(), "/api/v1/catalog" | "/api/v1/documents") {
        (MAX_CATALOG_BYTES, "a catalog upload")
    } else if req.uri().path() == FORWARD_PATH {
        (MAX_FORWARD_BYTES, "a batch of forwarded reports")
    } else {
        (MAX_CONTROL_BYTES, "a request body here")
    };
    if announced.is_some_and(|n| n > limit as u64) {
        let message = format!("{what} is at most {limit} bytes");
        return ApiError(StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
    }
    next.run(req).await
}

/// On a follower, every change is the primary's to make: writes answer
/// `409 Conflict` naming the primary (after the token check, so the name
/// is only told to whoever may write).
async fn refuse_writes_on_followers(
    State(app): State<Arc<App>>,
    req: Request,
    next: Next,
) -> Response {
    let write = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    match &app.follower {
        Some(follower) if write => ApiError(
            StatusCode::CONFLICT,
            format!(
                "this node follows the primary at {}: make changes there (they arrive here within {} s)",
                follower.primary(),
                app.config.follow.follow_interval.as_secs()
            ),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

/// The token of `Bearer <token>`: the scheme is case-insensitive (RFC
/// 9110 §11.1), and may be followed by more than one space.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs blocking catalog work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportParams {
    /// Apply the approval states in the document (sync from another upcache).
    #[serde(default)]
    with_approvals: bool,
}

async fn import_catalog(
    State(app): State<Arc<App>>,
    Query(params): Query<ImportParams>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<crate::catalog::ImportReport> {
    // The guard has checked the type is one of the two.
    let xml = browser::media_type(&headers) == Some("application/xml");
    // An announced length over the limit was refused before (see
    // `refuse_announced_oversize`). Streamed straight from the socket into
    // the parser: a catalog of hundreds of MB is never held in memory.
    let stream = http_body_util::Limited::new(body, MAX_CATALOG_BYTES)
        .into_data_stream()
        .map_err(std::io::Error::other);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let catalog = app.catalog.clone();
    let report = blocking(move || {
        let mut input = std::io::BufReader::with_capacity(1 << 18, reader);
        let imported = if xml {
            catalog.import_package_xml(&mut input)
        } else {
            catalog.import_json(&mut input, params.with_approvals)
        };
        if imported.is_err() {
            // Read the rest of a refused upload (into nothing, up to the
            // limit), so the client gets our answer and not a broken pipe.
            let _ = std::io::copy(&mut input, &mut std::io::sink());
        }
        imported
    })
    .await?;
    tracing::info!(?report, "catalog imported");
    app.catalog_changed();
    Ok(Json(report))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportParams {
    /// Only updates changed after this change number (a follower's pull).
    since: Option<u64>,
    /// A follower's pull asks for the groups (when changed) and, with
    /// `targeting = "server"` here, the computers whose groups changed
    /// after this change number (0: all).
    members_since: Option<u64>,
}

/// `GET /api/v1/catalog[?since=N[&members_since=M]]`: streamed as it is
/// read, ending with the change number (`seq`), policy and rules of the
/// snapshot; with `members_since`, the groups first and the computers'
/// memberships after the updates (`catalog::export`). A failure
/// half-way cuts the stream, which the importing side rejects as truncated JSON.
async fn export_catalog(
    State(app): State<Arc<App>>,
    Query(params): Query<ExportParams>,
) -> Response {
    let (writer, reader) = tokio::io::duplex(256 << 10);
    let catalog = app.catalog.clone();
    let fleet = params
        .members_since
        .map(|since| crate::catalog::FleetExport {
            since,
            // A follower passes on the memberships it took from its
            // primary, so they travel down a chain of followers.
            members: (app.fleet.settings().targeting == crate::fleet::Targeting::Server).then(
                || match app.follower {
                    None => crate::catalog::Memberships::Own,
                    Some(_) => crate::catalog::Memberships::Mirrored,
                },
            ),
        });
    tokio::task::spawn_blocking(move || {
        let out =
            std::io::BufWriter::with_capacity(256 << 10, tokio_util::io::SyncIoBridge::new(writer));
        if let Err(e) = catalog.export_to(out, params.since, fleet) {
            tracing::warn!(error = %e, "catalog export cut short");
        }
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(reader)),
    )
        .into_response()
}

async fn list_updates(
    State(app): State<Arc<App>>,
    Query(q): Query<UpdateQuery>,
) -> ApiResult<crate::catalog::UpdateList> {
    let catalog = app.catalog.clone();
    blocking(move || catalog.list_updates(&q)).await.map(Json)
}

/// `GET /api/v1/facets`: the classifications and products updates name,
/// for the console's filters.
async fn facets(State(app): State<Arc<App>>) -> ApiResult<crate::catalog::Facets> {
    let catalog = app.catalog.clone();
    blocking(move || catalog.facets()).await.map(Json)
}

async fn get_update(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<crate::catalog::UpdateDetail> {
    let catalog = app.catalog.clone();
    let mut detail = blocking(move || catalog.update(&id)).await?;
    for f in &mut detail.files {
        if f.local_state != "stored" && f.sha1.parse().is_ok_and(|s| app.fetcher.is_fetching(&s)) {
            f.local_state = "fetching".into();
        }
    }
    Ok(Json(detail))
}

/// For which group an approval is, and by when (an optional body of
/// `POST /api/v1/updates/{id}/{action}`; none: `All Computers`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ForGroup {
    group: Option<String>,
    #[serde(default, with = "crate::catalog::approvals::deadline_text")]
    deadline: Option<i64>,
}

impl ForGroup {
    fn read(body: &Bytes) -> Result<ForGroup, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(ForGroup::default());
        }
        serde_json::from_slice(body).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("invalid approval: {e} (send {{\"group\": \"...\", \"deadline\": \"YYYY-MM-DD\"}})"),
            )
        })
    }

    /// Refuses what a state cannot take: a decline is for everyone, a
    /// deadline goes with an approval.
    fn check(&self, state: UpdateState) -> Result<(), ApiError> {
        let bad = |m: &str| Err(ApiError(StatusCode::BAD_REQUEST, m.into()));
        match state {
            UpdateState::Declined if self.group.is_some() || self.deadline.is_some() => {
                bad("a decline is for every group: it takes no group or deadline")
            }
            UpdateState::NotApproved if self.deadline.is_some() => {
                bad("a deadline goes with an approval")
            }
            _ => Ok(()),
        }
    }
}

async fn set_state(
    State(app): State<Arc<App>>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<crate::catalog::UpdateSummary> {
    let state = action_state(&action)?;
    let asked = ForGroup::read(&body)?;
    asked.check(state)?;
    refuse_on_replica(&app, vec![id.clone()]).await?;
    let catalog = app.catalog.clone();
    let id2 = id.clone();
    let group = asked.group.clone();
    let summary = blocking(move || match (state, group) {
        (UpdateState::Approved, group) => {
            catalog.approve_for(&id2, group.as_deref(), asked.deadline)
        }
        (UpdateState::NotApproved, Some(group)) => catalog.unapprove_for(&id2, &group),
        (state, _) => catalog.set_state(&id2, state),
    })
    .await?;
    tracing::info!(update = %id, state = state.as_str(), group = ?asked.group, "approval changed");
    if state == UpdateState::Approved && app.catalog.policy().downloads_on_approve() {
        app.sync_downloads();
    }
    Ok(Json(summary))
}

/// On a replica (`sync_replica`), the approvals of synced updates are the
/// upstream's, and each sync makes them so again: changing one here is
/// refused (`409`) rather than silently undone later. Updates imported by
/// other means keep local approvals.
async fn refuse_on_replica(app: &App, ids: Vec<String>) -> Result<(), ApiError> {
    let Some(upstream) = app.server_sync.replica_of().map(str::to_owned) else {
        return Ok(());
    };
    let upstream = if upstream.is_empty() {
        "its upstream".to_owned()
    } else {
        upstream
    };
    let store = app.server_sync.store().clone();
    let synced = tokio::task::spawn_blocking(move || store.synced_updates(&ids))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let Some(first) = synced.first() else {
        return Ok(());
    };
    let which = match synced.len() {
        1 => format!("{first} is a synced update"),
        n => format!("{n} of the updates selected are synced updates ({first}, ...)"),
    };
    Err(ApiError(
        StatusCode::CONFLICT,
        format!(
            "this server is a replica of {upstream} (sync_replica): {which}, whose approvals are \
             the upstream's and would be undone at the next sync; change them there"
        ),
    ))
}

/// `POST /api/v1/approvals`: `{"action": "decline", "superseded": true}`,
/// `{"action": "approve", "kb": "5034122"}`, `{"action": "approve",
/// "classification": "Security Updates", "product": "Windows 10"}`...
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkApproval {
    action: String,
    state: Option<UpdateState>,
    q: Option<String>,
    kb: Option<String>,
    classification: Option<String>,
    product: Option<String>,
    superseded: Option<bool>,
    title: Option<String>,
    /// Approve for this group only (none: `All Computers`).
    group: Option<String>,
    /// With an approval: install by then (RFC 3339 or `YYYY-MM-DD`).
    #[serde(default, with = "crate::catalog::approvals::deadline_text")]
    deadline: Option<i64>,
}

async fn set_state_where(State(app): State<Arc<App>>, body: Bytes) -> ApiResult<serde_json::Value> {
    let req: BulkApproval = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("invalid approval request: {e}"),
        )
    })?;
    let state = action_state(&req.action)?;
    let for_group = ForGroup {
        group: req.group.clone(),
        deadline: req.deadline,
    };
    for_group.check(state)?;
    if state == UpdateState::NotApproved && req.group.is_some() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a bulk unapproval is for every group: take one group's back update by update".into(),
        ));
    }
    let query = UpdateQuery {
        state: req.state,
        q: req.q,
        kb: req.kb,
        classification: req.classification,
        product: req.product,
        superseded: req.superseded,
        title: req.title,
        limit: None,
        offset: None,
    };
    let catalog = app.catalog.clone();
    let q = query.clone();
    let selected = blocking(move || catalog.ids_where(&q)).await?;
    refuse_on_replica(&app, selected).await?;
    let catalog = app.catalog.clone();
    let changed = blocking(move || match state {
        UpdateState::Approved => {
            catalog.approve_where_for(&query, for_group.group.as_deref(), for_group.deadline)
        }
        _ => catalog.set_state_where(&query, state),
    })
    .await?;
    tracing::info!(changed, state = state.as_str(), "bulk approval change");
    if changed > 0 && state == UpdateState::Approved && app.catalog.policy().downloads_on_approve()
    {
        app.sync_downloads();
    }
    Ok(Json(serde_json::json!({ "changed": changed })))
}

async fn list_rules(State(app): State<Arc<App>>) -> ApiResult<Vec<crate::catalog::rules::Rule>> {
    let catalog = app.catalog.clone();
    blocking(move || catalog.rules()).await.map(Json)
}

/// `POST /api/v1/rules`: `{"action": "approve", "classification": "...", "product": "..."}`.
async fn add_rule(
    State(app): State<Arc<App>>,
    body: Bytes,
) -> ApiResult<crate::catalog::rules::Rule> {
    let rule = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid rule: {e}")))?;
    let catalog = app.catalog.clone();
    blocking(move || catalog.add_rule(rule)).await.map(Json)
}

async fn remove_rule(
    State(app): State<Arc<App>>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let catalog = app.catalog.clone();
    match blocking(move || catalog.remove_rule(id)).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError(StatusCode::NOT_FOUND, format!("no rule {id}"))),
    }
}

fn action_state(action: &str) -> Result<UpdateState, ApiError> {
    match action {
        "approve" => Ok(UpdateState::Approved),
        "decline" => Ok(UpdateState::Declined),
        "unapprove" => Ok(UpdateState::NotApproved),
        other => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown action {other:?}: use approve, decline or unapprove"),
        )),
    }
}

async fn get_policy(State(app): State<Arc<App>>) -> Json<Policy> {
    Json(app.catalog.policy())
}

async fn put_policy(State(app): State<Arc<App>>, body: Bytes) -> ApiResult<Policy> {
    let policy: Policy = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid policy: {e}")))?;
    let catalog = app.catalog.clone();
    blocking(move || catalog.set_policy(policy)).await?;
    tracing::info!(?policy, "policy changed");
    app.sync_downloads();
    Ok(Json(policy))
}

async fn get_rate_limit(State(app): State<Arc<App>>) -> Json<RateLimit> {
    Json(RateLimit {
        bytes_per_sec: app.fetcher.upstream_status().rate_limit,
    })
}

/// Sets the upstream rate limit until the next one or a restart (which
/// goes back to `upstream_rate_limit`): a timer can lift it at night.
async fn put_rate_limit(State(app): State<Arc<App>>, body: Bytes) -> ApiResult<RateLimit> {
    let limit: RateLimit = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid rate limit: {e}")))?;
    if let Some(rate) = limit.bytes_per_sec.filter(|&r| r < MIN_RATE) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("bytes_per_sec: {rate} is below the least, {MIN_RATE} (64KiB); null lifts the limit"),
        ));
    }
    app.fetcher.set_rate_limit(limit.bytes_per_sec);
    Ok(Json(limit))
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let (store_files, store_bytes) = app.catalog.stored_totals();
    let fetches = app.fetcher.status();
    let queued = fetches.iter().filter(|f| f.queued).count() as u64;
    app.metrics.snapshot(crate::telemetry::metrics::Snapshot {
        store_bytes,
        store_files,
        store_max_bytes: app.quota.max().unwrap_or(0),
        downloads_running: fetches.len() as u64 - queued,
        downloads_queued: queued,
        admin_tls_not_after: app.admin_tls.as_ref().and_then(|t| t.not_after()),
        content_tls_not_after: app.content_tls.as_ref().and_then(|t| t.not_after()),
    });
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}

/// `GET /api/v1/status`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Status {
    pub version: String,
    pub uptime_seconds: u64,
    pub policy: Policy,
    pub catalog: Counts,
    pub fetches: Vec<FetchStatus>,
    /// At-sync and prefetch downloads.
    #[serde(default)]
    pub background: crate::fetch::BackgroundStatus,
    pub quarantined: usize,
    /// `max_store_bytes`, if set (files beyond it are evicted, least recently served first).
    #[serde(default)]
    pub max_store_bytes: Option<u64>,
    /// The catalog import running now, if any.
    #[serde(default)]
    pub import: Option<crate::catalog::ImportStatus>,
    /// What the content listener has done: hit ratio, bytes, the last hour.
    #[serde(default)]
    pub traffic: crate::telemetry::metrics::Traffic,
    /// On a follower: the primary, its change number here, the last pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<crate::node::follow::FollowStatus>,
    /// On a follower: its clients' reports waiting for the primary, and
    /// the last forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_forwarding: Option<crate::node::forward::ForwardStatus>,
    /// The proxy and rate limit of upstream downloads, when set.
    #[serde(default)]
    pub upstream: crate::fetch::UpstreamStatus,
    /// The admin listener's certificate, when it speaks HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_tls: Option<TlsCertificate>,
    /// The HTTPS content listener's certificate, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_tls: Option<TlsCertificate>,
    /// The last scrub since start, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrub: Option<ScrubStatus>,
    /// Delivery Optimization content: the mode and the objects stored.
    #[serde(default)]
    pub delivery: crate::delivery::DeliveryStatus,
}

/// The certificate a listener presents.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct TlsCertificate {
    pub cert: String,
    /// Its `notAfter`, Unix seconds (`null`: not readable).
    pub not_after: Option<i64>,
}

impl TlsCertificate {
    fn of(tls: &Terminator) -> TlsCertificate {
        TlsCertificate {
            cert: tls.files().cert.display().to_string(),
            not_after: tls.not_after(),
        }
    }
}

async fn status(State(app): State<Arc<App>>) -> ApiResult<Status> {
    let catalog = app.catalog.clone();
    let counts = blocking(move || catalog.counts()).await?;
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: app.started.elapsed().as_secs(),
        policy: app.catalog.policy(),
        catalog: counts,
        fetches: app.fetcher.status(),
        background: app.fetcher.background_status(),
        quarantined: app.store.quarantined().len(),
        max_store_bytes: app.quota.max(),
        import: app.catalog.import_status(),
        traffic: app.metrics.traffic(),
        follow: app.follower.as_ref().map(|f| f.status()),
        report_forwarding: app.forwarder.as_ref().map(|f| f.status()),
        upstream: app.fetcher.upstream_status(),
        admin_tls: app.admin_tls.as_deref().map(TlsCertificate::of),
        content_tls: app.content_tls.as_deref().map(TlsCertificate::of),
        scrub: Some(app.scrubber.status()).filter(|s| s.started.is_some()),
        delivery: app.delivery.status(),
    }))
}
