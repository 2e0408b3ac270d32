//! Where the store lives and how large it may grow.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::settings::{opt_size, size, Invalid};

/// The store (content-addressed files) and the catalog beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct StoreSettings {
    /// The store (content-addressed files) and the catalog (SQLite).
    pub data_dir: PathBuf,
    /// Evict least-recently-served files beyond this store size (units:
    /// KiB..TiB, KB..TB). Unset: no limit (disk_reserve_bytes still
    /// applies).
    #[serde(with = "opt_size")]
    #[schemars(with = "Option<String>", example = &"500GiB")]
    pub max_store_bytes: Option<u64>,
    /// Rejected downloads kept in quarantine/ for inspection (oldest
    /// dropped).
    #[serde(with = "size")]
    #[schemars(with = "String")]
    pub quarantine_max_bytes: u64,
    /// Open file maps kept in memory.
    pub open_file_cache: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            data_dir: "./upcache-data".into(),
            max_store_bytes: None,
            quarantine_max_bytes: super::DEFAULT_QUARANTINE_MAX_BYTES,
            open_file_cache: 4096,
        }
    }
}

impl StoreSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.max_store_bytes == Some(0) {
            return Err(Invalid::new(
                "max_store_bytes",
                "must be more than 0 (leave it unset for no limit)",
            ));
        }
        Ok(())
    }
}
