//! Automatic approval rules, as WSUS has them: "approve every Security
//! Update for Windows 10", stored, and applied to updates as they are
//! imported (new ones, and new revisions). Declines first, then approvals,
//! and only to updates nobody has decided on yet. A rule may name a
//! computer group: it approves for that group (several such rules add up);
//! one without approves for `All Computers`. Deleting a group deletes its
//! rules.

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
    /// The computer group an approve rule approves for (none: `All Computers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
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
    Ok(list_with_gids(conn)?.into_iter().map(|(r, _)| r).collect())
}

/// The rules, each with its group's id.
fn list_with_gids(conn: &Connection) -> Result<Vec<(Rule, Option<i64>)>, CatalogError> {
    let mut stmt = conn.prepare(
        "SELECT r.id, r.action, r.classification, r.product, r.title, g.name, r.gid
         FROM rules r LEFT JOIN computer_groups g ON g.gid = r.gid ORDER BY r.id",
    )?;
    let rules = stmt
        .query_map([], |r| {
            Ok((
                Rule {
                    id: r.get(0)?,
                    action: r.get(1)?,
                    classification: r.get(2)?,
                    product: r.get(3)?,
                    title: r.get(4)?,
                    group: r.get(5)?,
                },
                r.get(6)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    Ok(rules)
}

/// The group a rule names, if any; `create`: make it when missing (a
/// follower taking its primary's rules).
fn rule_gid(conn: &Connection, rule: &Rule, create: bool) -> Result<Option<i64>, CatalogError> {
    let Some(name) = &rule.group else {
        return Ok(None);
    };
    if rule.action != "approve" {
        return Err(CatalogError::Invalid {
            at: "group".into(),
            reason: "a decline is for every group: only an approve rule names one".into(),
        });
    }
    if create {
        let name = super::groups::check_name(name)?;
        conn.execute(
            "INSERT OR IGNORE INTO computer_groups(name) VALUES (?1)",
            [name],
        )?;
    }
    Ok(Some(super::groups::by_name(conn, name)?.id))
}

/// Replaces every rule with `rules` (a follower takes its primary's), ids kept.
pub fn replace_all(conn: &Connection, rules: &[Rule]) -> Result<(), CatalogError> {
    conn.execute("DELETE FROM rules", [])?;
    let mut stmt = conn.prepare(
        "INSERT INTO rules(id, action, classification, product, title, gid)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for r in rules {
        r.state()?;
        let gid = rule_gid(conn, r, true)?;
        stmt.execute(params![
            r.id,
            r.action,
            r.classification,
            r.product,
            r.title,
            gid
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
    let gid = rule_gid(conn, &rule, false)?;
    conn.execute(
        "INSERT INTO rules(action, classification, product, title, gid) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![rule.action, rule.classification, rule.product, rule.title, gid],
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
    let mut rules = list_with_gids(tx)?;
    rules.sort_by_key(|(r, _)| r.action != "decline"); // declines win
    let mut changed = 0;
    for (rule, gid) in rules {
        let selects = "uid IN (SELECT uid FROM x_new)
               AND (?2 IS NULL OR lower(classification) = lower(?2))
               AND (?3 IS NULL OR lower(products) LIKE '%\"' || lower(?3) || '\"%')
               AND (?4 IS NULL OR lower(title) LIKE '%' || lower(?4) || '%')";
        let args = params![
            rule.state()?.as_str(),
            rule.classification,
            rule.product,
            rule.title
        ];
        if let Some(gid) = gid {
            // The group's approval first: the state trigger then adds no
            // `All Computers` one. Group rules add up (not declined only).
            tx.execute(
                &format!(
                    "INSERT OR IGNORE INTO update_approvals(uid, gid)
                     SELECT uid, {gid} FROM updates WHERE state != 'declined' AND {selects}
                       AND ?1 = 'approved'"
                ),
                args,
            )?;
            changed += tx.execute(
                &format!(
                    "UPDATE updates SET state = ?1 WHERE state = 'not-approved' AND {selects}"
                ),
                args,
            )? as u64;
            continue;
        }
        changed += tx.execute(
            &format!("UPDATE updates SET state = ?1 WHERE state = 'not-approved' AND {selects}"),
            args,
        )? as u64;
    }
    Ok(changed)
}
