//! The fleet in the admin API: computers (filtered by group, state and
//! staleness; one with its updates and events; its groups), computer
//! groups, one update's status by group, and the compliance report as CSV.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiResult};
use crate::catalog::groups::Group;
use crate::fleet::views::{
    ComplianceRow, ComputerDetail, ComputerList, ComputerQuery, UpdateStatus,
};
use crate::fleet::StoredEvent;
use crate::http::error::HttpStatus;
use crate::node::App;

/// Runs blocking database work off the async threads.
async fn blocking<T: Send + 'static, E: HttpStatus + std::fmt::Display + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes, what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid {what}: {e}")))
}

/// `GET /api/v1/computers?group=&status=&update=&stale=&q=&limit=&offset=`.
pub(super) async fn list(
    State(app): State<Arc<App>>,
    Query(q): Query<ComputerQuery>,
) -> ApiResult<ComputerList> {
    let fleet = app.fleet.clone();
    blocking(move || fleet.computers(&q, crate::fleet::now()))
        .await
        .map(Json)
}

/// `GET /api/v1/computers/{id}`: its groups, updates and their states, its
/// last events.
pub(super) async fn computer(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<ComputerDetail> {
    let fleet = app.fleet.clone();
    blocking(move || fleet.computer(&id, crate::fleet::now()))
        .await
        .map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsParams {
    limit: Option<u32>,
}

/// `GET /api/v1/computers/{id}/events[?limit=N]`: its last events (1000
/// unless asked), oldest first; 404 for a computer never seen.
pub(super) async fn events(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(p): Query<EventsParams>,
) -> ApiResult<Vec<StoredEvent>> {
    let fleet = app.fleet.clone();
    let limit = p.limit.unwrap_or(1000).min(100_000);
    blocking(move || fleet.events(&id, limit)).await.map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupsBody {
    groups: Vec<String>,
}

/// `PUT /api/v1/computers/{id}/groups` `{"groups": ["Pilot"]}`: exactly
/// these groups (`[]`: Unassigned Computers).
pub(super) async fn set_groups(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> ApiResult<ComputerDetail> {
    let asked: GroupsBody = body(&bytes, "groups")?;
    let fleet = app.fleet.clone();
    blocking(move || {
        fleet.set_groups(&id, &asked.groups)?;
        fleet.computer(&id, crate::fleet::now())
    })
    .await
    .map(Json)
}

/// A group with how many computers are in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupInfo {
    #[serde(flatten)]
    pub group: Group,
    pub computers: u64,
}

/// `GET /api/v1/groups`.
pub(super) async fn groups(State(app): State<Arc<App>>) -> ApiResult<Vec<GroupInfo>> {
    let (catalog, fleet) = (app.catalog.clone(), app.fleet.clone());
    let groups = blocking(move || catalog.groups()).await?;
    let sizes = blocking(move || fleet.group_sizes()).await?;
    Ok(Json(
        groups
            .into_iter()
            .map(|group| GroupInfo {
                computers: sizes.get(&group.id).copied().unwrap_or(0),
                group,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
}

/// `POST /api/v1/groups` `{"name": "Pilot"}`: `201`, `409` if it exists.
pub(super) async fn create_group(
    State(app): State<Arc<App>>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let asked: NameBody = body(&bytes, "group")?;
    let catalog = app.catalog.clone();
    let group = blocking(move || catalog.create_group(&asked.name)).await?;
    tracing::info!(group = %group.name, "group created");
    Ok((StatusCode::CREATED, Json(group)).into_response())
}

/// `PUT /api/v1/groups/{name}` `{"name": "Ring 1"}`: renames it.
pub(super) async fn rename_group(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> ApiResult<Group> {
    let asked: NameBody = body(&bytes, "group")?;
    let catalog = app.catalog.clone();
    let group = blocking(move || catalog.rename_group(&name, &asked.name)).await?;
    tracing::info!(group = %group.name, "group renamed");
    Ok(Json(group))
}

/// `DELETE /api/v1/groups/{name}`: `204`; its approvals and memberships go.
pub(super) async fn delete_group(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let catalog = app.catalog.clone();
    let group = blocking(move || catalog.delete_group(&name)).await?;
    tracing::info!(group = %group.name, "group deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/updates/{id}/status`: counts by state, in all and per group.
pub(super) async fn update_status(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> ApiResult<UpdateStatus> {
    let fleet = app.fleet.clone();
    blocking(move || fleet.update_status(&id)).await.map(Json)
}

/// `GET /api/v1/reports/compliance.csv`: computer, group, update, KB,
/// state, time; streamed as it is read.
pub(super) async fn compliance_csv(State(app): State<Arc<App>>) -> Response {
    let (writer, reader) = tokio::io::duplex(64 << 10);
    let fleet = app.fleet.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut out =
            std::io::BufWriter::with_capacity(64 << 10, tokio_util::io::SyncIoBridge::new(writer));
        let written = out
            .write_all(csv_line(&CSV_HEADER).as_bytes())
            .map_err(|e| crate::fleet::FleetError::Invalid(e.to_string()))
            .and_then(|()| fleet.compliance(|row| out.write_all(csv_row(row).as_bytes())))
            .and_then(|()| {
                out.flush()
                    .map_err(|e| crate::fleet::FleetError::Invalid(e.to_string()))
            });
        if let Err(e) = written {
            tracing::warn!(error = %e, "compliance report cut short");
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"compliance.csv\"",
            ),
        ],
        axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(reader)),
    )
        .into_response()
}

const CSV_HEADER: [&str; 9] = [
    "computer",
    "computer_id",
    "group",
    "update",
    "title",
    "kb",
    "state",
    "error",
    "time",
];

fn csv_row(r: &ComplianceRow) -> String {
    let time = r
        .time
        .map(crate::catalog::approvals::deadline_text::format)
        .unwrap_or_default();
    let error = r
        .error
        .map(crate::fleet::status::hresult_hex)
        .unwrap_or_default();
    let kb = if r.kb.is_empty() {
        String::new()
    } else {
        format!("KB{}", r.kb)
    };
    csv_line(&[
        &r.computer,
        &r.computer_id,
        &r.groups,
        &r.update_id,
        &r.title,
        &kb,
        r.state.as_str(),
        &error,
        &time,
    ])
}

/// One CSV record (RFC 4180): a field with a comma, quote or line break is
/// quoted, quotes doubled. A field a spreadsheet would run as a formula
/// (`=`, `+`, `-`, `@` first: names come from clients) gets a leading `'`.
fn csv_line(fields: &[&str]) -> String {
    let mut line = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        let guarded;
        let f = if f.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            guarded = format!("'{f}");
            guarded.as_str()
        } else {
            f
        };
        if f.contains([',', '"', '\n', '\r']) {
            line.push('"');
            line.push_str(&f.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(f);
        }
    }
    line.push_str("\r\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_line(&["a", "b c"]), "a,b c\r\n");
        assert_eq!(
            csv_line(&["pc,1", "say \"hi\"", "two\nlines"]),
            "\"pc,1\",\"say \"\"hi\"\"\",\"two\nlines\"\r\n"
        );
        assert_eq!(
            csv_line(&["=HYPERLINK(\"x\")", "@sum", "ok"]),
            "\"'=HYPERLINK(\"\"x\"\")\",'@sum,ok\r\n"
        );
    }
}
