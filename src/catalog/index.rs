//! The in-memory view of the catalog that every content request consults.
//!
//! A request's policy decision is a hash lookup, never a database query. The
//! index is refreshed from the database for exactly the files a write
//! touched, so the database stays the single source of truth.
//!
//! It is laid out for million-file catalogs: entries live in one dense
//! `Vec` (the maps hold 4-byte slot numbers), and a URL is an interned
//! directory plus the file's own name, which is also its display name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::digest::{Sha1Digest, Sha256Digest};
use crate::policy::Approval;

/// What serving one file needs to know: small and `Copy`, so a lookup on
/// the request path allocates nothing. Where the file comes from is asked
/// for separately (`Index::location`), by the paths that fetch or redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileEntry {
    pub sha1: Sha1Digest,
    pub sha256: Option<Sha256Digest>,
    pub size: Option<u64>,
    pub modified: Option<SystemTime>,
    pub approval: Approval,
    /// Published in the store under `sha256`.
    pub stored: bool,
}

impl FileEntry {
    /// What the policy's decision needs of this file.
    pub fn known(&self) -> crate::policy::Known {
        crate::policy::Known {
            approval: self.approval,
            stored: self.sha256.filter(|_| self.stored),
        }
    }
}

/// Where a file is downloaded from, and what it is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub url: String,
    pub name: String,
}

/// One file, compactly (~110 bytes plus its file name).
struct Slot {
    sha1: Sha1Digest,
    sha256: Option<Sha256Digest>,
    size: Option<u64>,
    /// Unix seconds; 0 when unknown.
    modified: u32,
    /// Unix milliseconds of the last response served from the store (for eviction).
    last_served: AtomicU64,
    dir: u32,
    /// The URL's last segment, with the file's SHA-1 hex (Microsoft puts it
    /// in almost every file name) folded into one [`SHA1_MARK`].
    file: Box<str>,
    folded: bool,
    /// Only when the display name is not the URL's last segment.
    name: Option<Box<str>>,
    approval: Approval,
    stored: bool,
}

/// Files by SHA-1 (the WSUS name) and by SHA-256 (the store's name).
#[derive(Default)]
pub struct Index {
    slots: Vec<Slot>,
    by_sha1: HashMap<Sha1Digest, u32>,
    by_sha256: HashMap<Sha256Digest, u32>,
    dirs: Vec<Arc<str>>,
    dir_ids: HashMap<Arc<str>, u32>,
}

/// Stands for the file's own SHA-1 hex in [`Slot::file`] (when `folded`).
const SHA1_MARK: char = '\0';

/// A stored file eviction may remove.
#[derive(Debug, Clone, Copy)]
pub struct StoredFile {
    pub sha1: Sha1Digest,
    pub sha256: Sha256Digest,
    pub size: u64,
    /// Unix milliseconds.
    pub last_served: u64,
}

impl Index {
    /// The file's upstream URL and name.
    pub fn location(&self, sha1: &Sha1Digest) -> Option<Location> {
        let s = &self.slots[*self.by_sha1.get(sha1)? as usize];
        let file = match s.file.split_once(SHA1_MARK).filter(|_| s.folded) {
            Some((before, after)) => [before, &s.sha1.to_hex(), after].concat(),
            None => s.file.to_string(),
        };
        Some(Location {
            url: [&self.dirs[s.dir as usize], file.as_str()].concat(),
            name: s.name.as_deref().map_or(file, str::to_owned),
        })
    }

    pub fn get(&self, sha1: &Sha1Digest) -> Option<FileEntry> {
        let slot = *self.by_sha1.get(sha1)?;
        Some(self.entry(slot))
    }

    pub fn get_by_sha256(&self, sha256: &Sha256Digest) -> Option<FileEntry> {
        let slot = *self.by_sha256.get(sha256)?;
        Some(self.entry(slot))
    }

    /// Makes room for `additional` more files at once (a full load knows how
    /// many: growing by doubling would briefly hold two copies).
    pub fn reserve(&mut self, additional: usize) {
        self.slots.reserve_exact(additional);
        self.by_sha1.reserve(additional);
    }

    /// Adds or replaces the entry for `entry.sha1`.
    pub fn insert(&mut self, entry: FileEntry, location: &Location) {
        let (dir, file) = split_url(&location.url);
        let dir = self.intern(dir);
        let name = (location.name != file).then(|| Box::from(location.name.as_str()));
        let hex = entry.sha1.to_hex();
        let folded = file.contains(&hex) && !file.contains(SHA1_MARK);
        let file = match folded {
            true => file.replacen(&hex, SHA1_MARK.encode_utf8(&mut [0; 4]), 1),
            false => file.to_owned(),
        };
        let slot = Slot {
            sha1: entry.sha1,
            sha256: entry.sha256,
            size: entry.size,
            modified: entry.modified.map_or(0, unix_secs),
            last_served: AtomicU64::new(0),
            dir,
            file: file.into_boxed_str(),
            folded,
            name,
            approval: entry.approval,
            stored: entry.stored,
        };
        match self.by_sha1.get(&entry.sha1) {
            Some(&i) => {
                let old = &mut self.slots[i as usize];
                if let Some(sha256) = old.sha256.filter(|d| Some(*d) != slot.sha256) {
                    unmap(&mut self.by_sha256, &sha256, i);
                }
                let served = old.last_served.load(Ordering::Relaxed);
                slot.last_served.store(served, Ordering::Relaxed);
                *old = slot;
                if let Some(sha256) = entry.sha256 {
                    self.by_sha256.insert(sha256, i);
                }
            }
            None => {
                let i = u32::try_from(self.slots.len()).expect("fewer than 4 billion files");
                self.by_sha1.insert(entry.sha1, i);
                if let Some(sha256) = entry.sha256 {
                    self.by_sha256.insert(sha256, i);
                }
                self.slots.push(slot);
            }
        }
    }

    /// Whether the index already has this file at `url` under `name`: an
    /// unchanged location in a re-import, checked without the database.
    pub fn has_location(&self, sha1: &Sha1Digest, url: &str, name: &str) -> bool {
        let Some(&i) = self.by_sha1.get(sha1) else {
            return false;
        };
        let s = &self.slots[i as usize];
        let (dir, file) = split_url(url);
        if *self.dirs[s.dir as usize] != *dir {
            return false;
        }
        let file_matches = match s.file.split_once(SHA1_MARK).filter(|_| s.folded) {
            Some((before, after)) => {
                let hex = s.sha1.to_hex();
                file.len() == before.len() + hex.len() + after.len()
                    && file.starts_with(before)
                    && file[before.len()..].starts_with(&hex)
                    && file.ends_with(after)
            }
            None => *s.file == *file,
        };
        file_matches && s.name.as_deref().unwrap_or(file) == name
    }

    /// Forgets a file no update references any more.
    pub fn remove(&mut self, sha1: &Sha1Digest) {
        let Some(i) = self.by_sha1.remove(sha1) else {
            return;
        };
        let last = (self.slots.len() - 1) as u32;
        let gone = self.slots.swap_remove(i as usize);
        if let Some(sha256) = gone.sha256 {
            unmap(&mut self.by_sha256, &sha256, i);
        }
        if let Some(moved) = self.slots.get(i as usize) {
            self.by_sha1.insert(moved.sha1, i);
            if let Some(sha256) = moved.sha256 {
                if self.by_sha256.get(&sha256) == Some(&last) {
                    self.by_sha256.insert(sha256, i);
                }
            }
        }
    }

    /// Records that a file is now published under `sha256`.
    pub fn mark_stored(&mut self, sha1: &Sha1Digest, sha256: Sha256Digest, size: u64) {
        let Some(&i) = self.by_sha1.get(sha1) else {
            return;
        };
        let slot = &mut self.slots[i as usize];
        if let Some(old) = slot.sha256.filter(|d| *d != sha256) {
            unmap(&mut self.by_sha256, &old, i);
        }
        slot.sha256 = Some(sha256);
        slot.size = Some(size);
        slot.stored = true;
        slot.last_served.store(now_millis(), Ordering::Relaxed);
        self.by_sha256.insert(sha256, i);
    }

    pub fn mark_absent(&mut self, sha1: &Sha1Digest) {
        if let Some(&i) = self.by_sha1.get(sha1) {
            self.slots[i as usize].stored = false;
        }
    }

    /// Notes a response served from the store: eviction removes the files
    /// served longest ago first. Needs only a read lock.
    pub fn mark_served(&self, sha1: &Sha1Digest) {
        if let Some(&i) = self.by_sha1.get(sha1) {
            self.slots[i as usize]
                .last_served
                .store(now_millis(), Ordering::Relaxed);
        }
    }

    /// Seeds a stored file's last-served time (from the store's file times
    /// at start-up, so eviction order survives restarts roughly).
    pub fn seed_served(&self, sha1: &Sha1Digest, millis: u64) {
        if let Some(&i) = self.by_sha1.get(sha1) {
            let slot = &self.slots[i as usize];
            slot.last_served.fetch_max(millis, Ordering::Relaxed);
        }
    }

    /// Stored files, least recently served first.
    pub fn stored_by_last_served(&self) -> Vec<StoredFile> {
        let mut files: Vec<StoredFile> = self
            .slots
            .iter()
            .filter(|s| s.stored)
            .filter_map(|s| {
                Some(StoredFile {
                    sha1: s.sha1,
                    sha256: s.sha256?,
                    size: s.size.unwrap_or(0),
                    last_served: s.last_served.load(Ordering::Relaxed),
                })
            })
            .collect();
        files.sort_by_key(|f| f.last_served);
        files
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// SHA-1s of the files whose approval and storage state `keep` accepts.
    pub fn select(&self, keep: impl Fn(Approval, bool) -> bool) -> Vec<Sha1Digest> {
        self.slots
            .iter()
            .filter(|s| keep(s.approval, s.stored))
            .map(|s| s.sha1)
            .collect()
    }

    /// SHA-256s of stored files whose approval `keep` accepts.
    pub fn stored_sha256s(&self, keep: impl Fn(Approval) -> bool) -> Vec<Sha256Digest> {
        self.slots
            .iter()
            .filter(|s| s.stored && keep(s.approval))
            .filter_map(|s| s.sha256)
            .collect()
    }

    /// (files stored, their bytes).
    pub fn stored_totals(&self) -> (u64, u64) {
        self.slots
            .iter()
            .filter(|s| s.stored)
            .fold((0, 0), |(n, b), s| (n + 1, b + s.size.unwrap_or(0)))
    }

    fn entry(&self, i: u32) -> FileEntry {
        let s = &self.slots[i as usize];
        FileEntry {
            sha1: s.sha1,
            sha256: s.sha256,
            size: s.size,
            modified: (s.modified > 0).then(|| UNIX_EPOCH + Duration::from_secs(s.modified.into())),
            approval: s.approval,
            stored: s.stored,
        }
    }

    fn intern(&mut self, dir: &str) -> u32 {
        if let Some(&id) = self.dir_ids.get(dir) {
            return id;
        }
        let id = u32::try_from(self.dirs.len()).expect("fewer than 4 billion directories");
        let dir: Arc<str> = dir.into();
        self.dirs.push(dir.clone());
        self.dir_ids.insert(dir, id);
        id
    }
}

/// Removes `sha256 → slot` unless the digest maps to another slot (a
/// catalog may claim one SHA-256 for two files; the last claim wins).
fn unmap(by_sha256: &mut HashMap<Sha256Digest, u32>, sha256: &Sha256Digest, slot: u32) {
    if by_sha256.get(sha256) == Some(&slot) {
        by_sha256.remove(sha256);
    }
}

/// `http://host/a/b/name.cab` → (`http://host/a/b/`, `name.cab`).
fn split_url(url: &str) -> (&str, &str) {
    match url.rfind('/') {
        Some(i) => url.split_at(i + 1),
        None => ("", url),
    }
}

fn unix_secs(t: SystemTime) -> u32 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> FileEntry {
        FileEntry {
            sha1: Sha1Digest([n; 20]),
            sha256: Some(Sha256Digest([n; 32])),
            size: Some(u64::from(n)),
            modified: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            approval: Approval::Approved,
            stored: false,
        }
    }

    #[test]
    fn a_file_stored_under_an_unknown_sha256_is_not_known_as_stored() {
        let stored = FileEntry {
            stored: true,
            ..entry(1)
        };
        assert_eq!(stored.known().stored, Some(Sha256Digest([1; 32])));
        let unnamed = FileEntry {
            sha256: None,
            ..stored
        };
        // Fetched again, never served blind.
        assert_eq!(unnamed.known().stored, None);
        assert_eq!(entry(1).known().stored, None);
    }

    fn insert(index: &mut Index, n: u8, url: &str, name: &str) {
        let location = Location {
            url: url.into(),
            name: name.into(),
        };
        index.insert(entry(n), &location);
    }

    #[test]
    fn entries_come_back_as_they_went_in() {
        let mut index = Index::default();
        insert(&mut index, 1, "http://h/a/one.cab", "one.cab");
        insert(&mut index, 2, "http://h/a/two.cab", "Two (renamed).cab");
        let two = index.location(&Sha1Digest([2; 20])).unwrap();
        assert_eq!(two.url, "http://h/a/two.cab");
        assert_eq!(two.name, "Two (renamed).cab");
        let two = index.get(&Sha1Digest([2; 20])).unwrap();
        assert_eq!(two.modified, entry(2).modified);
        let one = index.get_by_sha256(&Sha256Digest([1; 32])).unwrap();
        let one = index.location(&one.sha1).unwrap();
        assert_eq!(
            (one.url.as_str(), one.name.as_str()),
            ("http://h/a/one.cab", "one.cab")
        );
        assert_eq!(index.dirs.len(), 1, "one shared directory");
    }

    #[test]
    fn the_sha1_in_a_file_name_is_kept_once() {
        let mut index = Index::default();
        let hex = Sha1Digest([7; 20]).to_hex();
        let url = format!("http://h/a/windows10.0-kb1-x64_{hex}.msu");
        insert(
            &mut index,
            7,
            &url,
            &format!("windows10.0-kb1-x64_{hex}.msu"),
        );
        assert_eq!(
            index.slots[0].file.len(),
            "windows10.0-kb1-x64_.msu".len() + 1
        );
        let back = index.location(&Sha1Digest([7; 20])).unwrap();
        assert_eq!(back.url, url);
        assert!(back.name.ends_with(&format!("{hex}.msu")));
        let name = format!("windows10.0-kb1-x64_{hex}.msu");
        assert!(index.has_location(&Sha1Digest([7; 20]), &url, &name));
        assert!(!index.has_location(&Sha1Digest([7; 20]), &url.replace("/a/", "/b/"), &name));
        assert!(!index.has_location(&Sha1Digest([7; 20]), &url.replace("kb1", "kb2"), &name));
        assert!(!index.has_location(&Sha1Digest([7; 20]), &url, "other.msu"));
        assert!(!index.has_location(&Sha1Digest([8; 20]), &url, &name));
    }

    /// Files 1, 2 and 3 at `http://h/{n}.cab`.
    fn three_files() -> Index {
        let mut index = Index::default();
        for n in 1..=3 {
            let (url, name) = (format!("http://h/{n}.cab"), format!("{n}.cab"));
            insert(&mut index, n, &url, &name);
        }
        index
    }

    #[test]
    fn removal_keeps_the_other_entries_reachable() {
        let mut index = three_files();
        index.remove(&Sha1Digest([1; 20]));
        assert!(index.get(&Sha1Digest([1; 20])).is_none());
        assert!(index.get_by_sha256(&Sha256Digest([1; 32])).is_none());
        for n in 2..=3 {
            assert_eq!(
                index.get(&Sha1Digest([n; 20])).unwrap().size,
                Some(n.into())
            );
            assert!(index.get_by_sha256(&Sha256Digest([n; 32])).is_some());
        }
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_sha256_claimed_twice_stays_with_the_last_claim() {
        let mut index = Index::default();
        let mut b = entry(2);
        b.sha256 = Some(Sha256Digest([1; 32]));
        insert(&mut index, 1, "http://h/a.cab", "a.cab");
        let at = Location {
            url: "http://h/b.cab".into(),
            name: "b.cab".into(),
        };
        index.insert(b, &at);
        insert(&mut index, 3, "http://h/c.cab", "c.cab");
        index.remove(&Sha1Digest([1; 20]));
        let by_digest = index.get_by_sha256(&Sha256Digest([1; 32])).unwrap();
        assert_eq!(by_digest.sha1, Sha1Digest([2; 20]));
        assert!(
            index.get_by_sha256(&Sha256Digest([3; 32])).is_some(),
            "the moved slot"
        );
    }

    #[test]
    fn least_recently_served_comes_first() {
        let mut index = three_files();
        for n in 1..=3 {
            index.mark_stored(&Sha1Digest([n; 20]), Sha256Digest([n; 32]), 10);
        }
        index.seed_served(&Sha1Digest([1; 20]), u64::MAX);
        index.slots[1].last_served.store(5, Ordering::Relaxed);
        let order: Vec<u8> = index
            .stored_by_last_served()
            .iter()
            .map(|f| f.sha1.0[0])
            .collect();
        assert_eq!(order, [2, 3, 1]);
    }
}
