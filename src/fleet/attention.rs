//! What needs an administrator's attention that the listings do not
//! already answer: the updates computers need (needed, downloaded or
//! failed) that are approved for no group, most needed first. Failed
//! installs and stale computers are `GET /api/v1/computers?status=failed`
//! and `?stale=true`.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::status::State;
use super::{Fleet, FleetError};

/// The longest list asked for.
const MAX_LIMIT: u32 = 500;

/// An update computers need that no group has approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeededUnapproved {
    pub update_id: String,
    pub title: String,
    pub kb: Option<String>,
    /// Computers that need it (needed, downloaded or failed).
    pub needed: u64,
}

impl Fleet {
    /// The `limit` unapproved, undeclined updates the most computers need.
    /// One range of the `(n, state, cid)` index per such update that any
    /// computer reported.
    pub fn needed_unapproved(&self, limit: u32) -> Result<Vec<NeededUnapproved>, FleetError> {
        let db = self.reader();
        let mut q = db.prepare_cached(
            "SELECT u.id, u.title, u.kb, count(*) AS needed
             FROM updates u
             JOIN status_updates su ON su.update_id = u.id
             JOIN update_status s ON s.n = su.n AND s.state BETWEEN ?1 AND ?2
             WHERE u.state = 'not-approved'
             GROUP BY u.uid ORDER BY needed DESC, u.id LIMIT ?3",
        )?;
        let rows = q.query_map(
            params![
                State::Needed as i64,
                State::Failed as i64,
                limit.min(MAX_LIMIT)
            ],
            |r| {
                Ok(NeededUnapproved {
                    update_id: r.get(0)?,
                    title: r.get(1)?,
                    kb: r.get(2)?,
                    needed: r.get::<_, i64>(3)? as u64,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
