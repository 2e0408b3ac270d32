//! Listing and selecting updates: the filters of `GET /api/v1/updates` and
//! of bulk approvals, as one SQL clause, and the rows they return.

use rusqlite::{Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::{CatalogError, UpdateState};

/// The largest page of a listing.
const MAX_PAGE: u32 = 1000;

/// A page of updates, newest release first.
pub(super) fn list(db: &Connection, q: &UpdateQuery) -> Result<UpdateList, CatalogError> {
    let limit = q.limit.unwrap_or(100).min(MAX_PAGE);
    let offset = q.offset.unwrap_or(0);
    let filter = q.filter_params();
    let total: i64 = db.query_row(
        &format!("SELECT count(*) FROM updates WHERE {FILTER}"),
        filter.with(&[]).as_slice(),
        |r| r.get(0),
    )?;
    let mut stmt = db.prepare(&format!(
        "SELECT {UPDATE_COLUMNS}, {FILE_COUNT} FROM updates u WHERE {FILTER}
         ORDER BY release_date DESC, id LIMIT :limit OFFSET :offset"
    ))?;
    let updates = stmt
        .query_map(
            filter
                .with(&[(":limit", &limit), (":offset", &offset)])
                .as_slice(),
            summary_from_row,
        )?
        .collect::<Result<_, _>>()?;
    Ok(UpdateList {
        total: total as u64,
        updates,
    })
}

/// One update's summary.
pub(super) fn summary(db: &Connection, id: &str) -> Result<UpdateSummary, CatalogError> {
    db.query_row(
        &format!("SELECT {UPDATE_COLUMNS}, {FILE_COUNT} FROM updates u WHERE id = ?1"),
        [id],
        summary_from_row,
    )
    .optional()?
    .ok_or_else(|| CatalogError::UnknownUpdate(id.to_owned()))
}

/// Sets the state of every update `q` selects, listing their files for the
/// index refresh. Returns how many changed; refuses an empty selection.
pub(super) fn set_state(
    tx: &Transaction<'_>,
    q: &UpdateQuery,
    state: UpdateState,
) -> Result<u64, CatalogError> {
    if !q.selects_something() {
        return Err(CatalogError::Invalid {
            at: "selection".into(),
            reason: "select updates by kb, classification, product, title, q, superseded or state"
                .into(),
        });
    }
    let filter = q.filter_params();
    let new_state = state.as_str();
    let args = filter.with(&[(":new_state", &new_state)]);
    tx.execute(
        &format!(
            "INSERT OR IGNORE INTO x_touched(fid) SELECT uf.fid FROM updates
             JOIN update_files uf ON uf.uid = updates.uid
             WHERE state != :new_state AND {FILTER}"
        ),
        args.as_slice(),
    )?;
    let changed = tx.execute(
        &format!("UPDATE updates SET state = :new_state WHERE state != :new_state AND {FILTER}"),
        args.as_slice(),
    )?;
    Ok(changed as u64)
}

/// The row ids of every update `q` selects (refusing an empty selection).
pub(super) fn select_uids(tx: &Transaction<'_>, q: &UpdateQuery) -> Result<Vec<i64>, CatalogError> {
    if !q.selects_something() {
        return Err(CatalogError::Invalid {
            at: "selection".into(),
            reason: "select updates by kb, classification, product, title, q, superseded or state"
                .into(),
        });
    }
    let filter = q.filter_params();
    let mut stmt = tx.prepare(&format!(
        "SELECT uid FROM updates WHERE {FILTER} ORDER BY uid"
    ))?;
    let uids = stmt
        .query_map(filter.with(&[]).as_slice(), |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(uids)
}

/// The ids of the updates `q` selects (as [`select_uids`] does).
pub(super) fn select_ids(conn: &Connection, q: &UpdateQuery) -> Result<Vec<String>, CatalogError> {
    if !q.selects_something() {
        return Ok(Vec::new());
    }
    let filter = q.filter_params();
    let mut stmt = conn.prepare(&format!(
        "SELECT id FROM updates WHERE {FILTER} ORDER BY uid"
    ))?;
    let ids = stmt
        .query_map(filter.with(&[]).as_slice(), |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

/// One update in a listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateSummary {
    pub id: String,
    pub revision: u32,
    pub title: String,
    pub kb: Option<String>,
    pub msrc: Option<String>,
    pub classification: Option<String>,
    pub products: Vec<String>,
    pub release_date: Option<String>,
    pub state: UpdateState,
    pub file_count: u64,
    /// A newer update replaces this one (from package.xml's `SupersededBy`).
    #[serde(default)]
    pub superseded: bool,
}

/// One file of an update, with its local state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileDetail {
    pub name: String,
    pub sha1: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
    pub url: String,
    /// `absent`, `fetching` or `stored`.
    pub local_state: String,
}

/// One update with its files and the groups it is approved for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateDetail {
    #[serde(flatten)]
    pub summary: UpdateSummary,
    pub description: String,
    pub files: Vec<FileDetail>,
    #[serde(default)]
    pub approvals: Vec<super::approvals::GroupApproval>,
}

/// Filters of `GET /api/v1/updates` and of bulk approvals.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<UpdateState>,
    /// Case-insensitive substring of title, KB, MSRC number or id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// KB number, exactly (`5034122` or `KB5034122`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kb: Option<String>,
    /// Classification (name or GUID), exactly, case-insensitive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    /// Product (name or GUID), one of the update's products.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded: Option<bool>,
    /// Case-insensitive substring of the title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
}

impl UpdateQuery {
    /// Whether any filter is set (bulk approval refuses "everything" by accident).
    pub fn selects_something(&self) -> bool {
        self.state.is_some()
            || self.q.is_some()
            || self.kb.is_some()
            || self.classification.is_some()
            || self.product.is_some()
            || self.superseded.is_some()
            || self.title.is_some()
    }

    /// The filters as the named SQL parameters of [`FILTER`].
    fn filter_params(&self) -> FilterParams {
        let like = |s: &String| format!("%{}%", s.to_lowercase());
        FilterParams([
            self.state.map(|s| s.as_str().to_owned()),
            self.q.as_ref().map(like),
            self.kb
                .as_ref()
                .map(|k| k.trim_start_matches(['K', 'k', 'B', 'b']).to_owned()),
            self.classification.as_ref().map(|c| c.to_lowercase()),
            self.product
                .as_ref()
                .map(|p| format!("%\"{}\"%", p.to_lowercase())),
            self.superseded.map(|b| u8::from(b).to_string()),
            self.title.as_ref().map(like),
        ])
    }
}

/// The WHERE clause of a selection of updates.
const FILTER: &str = "(:state IS NULL OR state = :state)
    AND (:q IS NULL OR lower(title) LIKE :q OR kb LIKE :q OR lower(msrc) LIKE :q OR id LIKE :q)
    AND (:kb IS NULL OR kb = :kb)
    AND (:classification IS NULL OR lower(classification) = :classification)
    AND (:product IS NULL OR lower(products) LIKE :product)
    AND (:superseded IS NULL OR superseded = CAST(:superseded AS INTEGER))
    AND (:title IS NULL OR lower(title) LIKE :title)";

/// Values for [`FILTER`]'s parameters.
struct FilterParams([Option<String>; 7]);

impl FilterParams {
    const NAMES: [&'static str; 7] = [
        ":state",
        ":q",
        ":kb",
        ":classification",
        ":product",
        ":superseded",
        ":title",
    ];

    /// The filter's parameters plus a statement's own.
    fn with<'a>(
        &'a self,
        extra: &[(&'static str, &'a dyn rusqlite::ToSql)],
    ) -> Vec<(&'static str, &'a dyn rusqlite::ToSql)> {
        let mut all: Vec<(&'static str, &'a dyn rusqlite::ToSql)> = Self::NAMES
            .iter()
            .zip(&self.0)
            .map(|(name, value)| (*name, value as &dyn rusqlite::ToSql))
            .collect();
        all.extend_from_slice(extra);
        all
    }
}

/// A page of updates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateList {
    pub total: u64,
    pub updates: Vec<UpdateSummary>,
}

/// The distinct classifications and products of the catalog's updates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Facets {
    pub classifications: Vec<String>,
    pub products: Vec<String>,
}

/// [`Facets`], sorted.
pub fn facets(db: &rusqlite::Connection) -> rusqlite::Result<Facets> {
    let column = |sql: &str| -> rusqlite::Result<Vec<String>> {
        let mut stmt = db.prepare(sql)?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect()
    };
    Ok(Facets {
        classifications: column(
            "SELECT DISTINCT classification FROM updates WHERE classification IS NOT NULL ORDER BY 1",
        )?,
        products: column(
            "SELECT DISTINCT p.value FROM updates u, json_each(u.products) p ORDER BY 1",
        )?,
    })
}

/// Catalog-wide counts for status.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    pub updates_not_approved: u64,
    pub updates_approved: u64,
    pub updates_declined: u64,
    /// Updates a newer one replaces (of any approval state).
    #[serde(default)]
    pub updates_superseded: u64,
    pub files: u64,
    pub files_stored: u64,
    pub bytes_stored: u64,
}

/// The columns of an update that [`update_from_row`] reads, first in a
/// row: listings and the export select them alike.
pub(super) const UPDATE_COLUMNS: &str = "id, revision, title, kb, msrc, classification, products,
    release_date, state, superseded";

/// A listing's last column, after [`UPDATE_COLUMNS`]: the update's files.
const FILE_COUNT: &str = "(SELECT count(*) FROM update_files uf WHERE uf.uid = u.uid)";

fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UpdateSummary> {
    update_from_row(r, r.get::<_, i64>(10)? as u64)
}

/// An update from the [`UPDATE_COLUMNS`] that begin `r`, with `file_count` files.
pub(super) fn update_from_row(
    r: &rusqlite::Row<'_>,
    file_count: u64,
) -> rusqlite::Result<UpdateSummary> {
    Ok(UpdateSummary {
        id: r.get(0)?,
        revision: r.get(1)?,
        title: r.get(2)?,
        kb: r.get(3)?,
        msrc: r.get(4)?,
        classification: r.get(5)?,
        products: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
        release_date: r.get(7)?,
        state: UpdateState::parse(&r.get::<_, String>(8)?).ok_or_else(|| bad_column(8))?,
        file_count,
        superseded: r.get(9)?,
    })
}

fn bad_column(i: usize) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(i, "unexpected value".into(), rusqlite::types::Type::Text)
}
