//! Automatic approval rules, as WSUS has them: "approve every Security
//! Update for Windows 10", stored, and applied to updates as they are
//! imported (new ones, and new revisions). Declines first, then approvals,
//! and only to updates nobody has decided on yet.

use rusqlite::{params, Connection, Transaction};
use serde::{Deserialize, Serialize};

use super::{CatalogError, UpdateState};

/// One rule. At least one selector is required.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub id: i64,
    /// `approve` or `decline`.
    pub action: String,
    /// Classification name or GUID, exactly (case-insensitive).
    pub classification: Option<String>,
    /// Product name or GUID, one of the update's products.
    pub product: Option<String>,
    /// Case-insensitive substring of the title.
    pub title: Option<String>,
}

impl Rule {
    fn state(&self) -> Result<UpdateState, CatalogError> {
        match self.action.as_str() {
            "approve" => Ok(UpdateState::Approved),
            "decline" => Ok(UpdateState::Declined),
            other => Err(CatalogError::Invalid {
                at: "action".into(),
                reason: format!("{other:?}: a rule approves or declines"),
            }),
        }
    }
}

pub fn list(conn: &Connection) -> Result<Vec<Rule>, CatalogError> {
    let mut stmt =
        conn.prepare("SELECT id, action, classification, product, title FROM rules ORDER BY id")?;
    let rules = stmt
        .query_map([], |r| {
            Ok(Rule {
                id: r.get(0)?,
                action: r.get(1)?,
                classification: r.get(2)?,
                product: r.get(3)?,
                title: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rules)
}

/// Replaces every rule with `rules` (a follower takes its primary's), ids kept.
pub fn replace_all(conn: &Connection, rules: &[Rule]) -> Result<(), CatalogError> {
    conn.execute("DELETE FROM rules", [])?;
    let mut stmt = conn.prepare(
        "INSERT INTO rules(id, action, classification, product, title) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for r in rules {
        r.state()?;
        stmt.execute(params![
            r.id,
            r.action,
            r.classification,
            r.product,
            r.title
        ])?;
    }
    Ok(())
}

pub fn add(conn: &Connection, mut rule: Rule) -> Result<Rule, CatalogError> {
    rule.state()?;
    if rule.classification.is_none() && rule.product.is_none() && rule.title.is_none() {
        return Err(CatalogError::Invalid {
            at: "rule".into(),
            reason: "a rule needs a classification, product or title to match".into(),
        });
    }
    conn.execute(
        "INSERT INTO rules(action, classification, product, title) VALUES (?1, ?2, ?3, ?4)",
        params![rule.action, rule.classification, rule.product, rule.title],
    )?;
    rule.id = conn.last_insert_rowid();
    Ok(rule)
}

pub fn remove(conn: &Connection, id: i64) -> Result<bool, CatalogError> {
    Ok(conn.execute("DELETE FROM rules WHERE id = ?1", [id])? > 0)
}

/// Starts tracking the updates an import writes.
pub fn begin(tx: &Transaction<'_>) -> Result<(), CatalogError> {
    tx.execute_batch("DELETE FROM x_new;")?;
    Ok(())
}

/// Records that an import added or replaced this update.
pub fn mark_new(tx: &Transaction<'_>, uid: i64) -> Result<(), CatalogError> {
    tx.prepare_cached("INSERT OR IGNORE INTO x_new(uid) VALUES (?1)")?
        .execute([uid])?;
    Ok(())
}

/// Applies every rule to the updates this import wrote that are still
/// not approved; returns how many changed.
pub fn apply_to_new(tx: &Transaction<'_>) -> Result<u64, CatalogError> {
    let mut rules = list(tx)?;
    rules.sort_by_key(|r| r.action != "decline"); // declines win
    let mut changed = 0;
    for rule in rules {
        changed += tx.execute(
            "UPDATE updates SET state = ?1
             WHERE uid IN (SELECT uid FROM x_new) AND state = 'not-approved'
               AND (?2 IS NULL OR lower(classification) = lower(?2))
               AND (?3 IS NULL OR lower(products) LIKE '%\"' || lower(?3) || '\"%')
               AND (?4 IS NULL OR lower(title) LIKE '%' || lower(?4) || '%')",
            params![
                rule.state()?.as_str(),
                rule.classification,
                rule.product,
                rule.title
            ],
        )? as u64;
    }
    Ok(changed)
}
