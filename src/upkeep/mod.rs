//! Keeping the store healthy while it serves: the size cap and its
//! evictions ([`quota`]), re-hashing stored files ([`scrub`]), and removing
//! files no update needs ([`cleanup`]).

pub mod cleanup;
pub mod quota;
pub mod scrub;

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The store's upkeep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct UpkeepSettings {
    /// A file published (or written to the shared tier) this many seconds
    /// ago or less is left for the next cleanup: a download that has just
    /// published its file may not have told the catalog its SHA-256 yet,
    /// and would look unknown.
    #[serde(rename = "cleanup_settle_secs", with = "crate::settings::secs")]
    #[schemars(with = "u64")]
    pub cleanup_settle: Duration,
}

impl Default for UpkeepSettings {
    fn default() -> Self {
        UpkeepSettings {
            cleanup_settle: Duration::from_secs(60),
        }
    }
}
