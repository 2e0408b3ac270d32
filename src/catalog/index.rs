//! The in-memory view of the catalog that every content request consults.
//!
//! A request's policy decision is a hash lookup, never a database query. The
//! index is rebuilt from the database after imports and refreshed per file
//! after approvals, so the database stays the single source of truth.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::digest::{Sha1Digest, Sha256Digest};
use crate::policy::Approval;

/// What serving one file needs to know.
#[derive(Debug, Clone)]
pub struct FileEntry {
    pub sha1: Sha1Digest,
    pub sha256: Option<Sha256Digest>,
    pub size: Option<u64>,
    pub name: Arc<str>,
    pub url: Arc<str>,
    pub modified: Option<SystemTime>,
    pub approval: Approval,
    /// Published in the store under `sha256`.
    pub stored: bool,
}

/// Files by SHA-1 (the WSUS name) and by SHA-256 (the store's name).
#[derive(Default)]
pub struct Index {
    by_sha1: HashMap<Sha1Digest, FileEntry>,
    by_sha256: HashMap<Sha256Digest, Sha1Digest>,
}

impl Index {
    pub fn get(&self, sha1: &Sha1Digest) -> Option<&FileEntry> {
        self.by_sha1.get(sha1)
    }

    pub fn get_by_sha256(&self, sha256: &Sha256Digest) -> Option<&FileEntry> {
        self.by_sha256.get(sha256).and_then(|s| self.by_sha1.get(s))
    }

    pub fn insert(&mut self, entry: FileEntry) {
        if let Some(old) = self.by_sha1.get(&entry.sha1).and_then(|e| e.sha256) {
            self.by_sha256.remove(&old);
        }
        if let Some(sha256) = entry.sha256 {
            self.by_sha256.insert(sha256, entry.sha1);
        }
        self.by_sha1.insert(entry.sha1, entry);
    }

    /// Records that a file is now published under `sha256`.
    pub fn mark_stored(&mut self, sha1: &Sha1Digest, sha256: Sha256Digest, size: u64) {
        if let Some(mut e) = self.by_sha1.get(sha1).cloned() {
            e.sha256 = Some(sha256);
            e.size = Some(size);
            e.stored = true;
            self.insert(e);
        }
    }

    pub fn mark_absent(&mut self, sha1: &Sha1Digest) {
        if let Some(e) = self.by_sha1.get_mut(sha1) {
            e.stored = false;
        }
    }

    pub fn len(&self) -> usize {
        self.by_sha1.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &FileEntry> {
        self.by_sha1.values()
    }
}
