//! The DO object index: object key → the SHA-256 its bytes are stored
//! under, with the identity the origin gave them and whether they were
//! verified. A table in the catalog's database (its own connection; its
//! own schema version in `settings`, so it migrates independently of the
//! catalog's), mirrored in memory for the request path.
//!
//! A key maps to one SHA-256: once stored, a later request for the key can
//! only get those bytes, whatever the origin does since.
//!
//! Beside it, the digests objects are bound to before they are fetched:
//! an administrator's bindings (this node's and, on a follower, its
//! primary's; see `bindings`) and those learned from the files updates
//! name at DO URLs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use super::bindings::{Binding, Bindings, Source};
use super::path::{self, ObjectKey};
use crate::digest::{Sha1Digest, Sha256Digest};
use crate::store::{Expected, Storage};

/// The schema's versions in order (a database at version `n` has had
/// the first `n` applied), kept in the catalog's `settings` table.
const VERSIONS: [&str; 2] = [V1, V2];
const VERSION_KEY: &str = "do_schema_version";

/// `do_objects`: one row per stored DO object. `unverified` is 1 when no
/// digest from elsewhere checked the bytes (their SHA-256 was computed on
/// the way in); `do_digests`: digests an administrator or synced metadata
/// binds to an object key, checked like a catalog file's.
const V1: &str = "
CREATE TABLE IF NOT EXISTS do_objects (
    key           TEXT PRIMARY KEY,
    sha256        BLOB NOT NULL,
    size          INTEGER NOT NULL,
    etag          TEXT,
    last_modified TEXT,
    unverified    INTEGER NOT NULL,
    stored_at     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS do_objects_sha256 ON do_objects(sha256);
CREATE TABLE IF NOT EXISTS do_digests (
    key    TEXT PRIMARY KEY,
    sha256 BLOB NOT NULL
);
";

/// `do_digests` by source: a follower's copy of its primary's bindings
/// (`primary`) beside its own (`local`, every binding made before).
const V2: &str = "
CREATE TABLE do_digests_v2 (
    key    TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('local', 'primary')),
    sha256 BLOB NOT NULL,
    PRIMARY KEY (key, source)
);
INSERT INTO do_digests_v2(key, source, sha256) SELECT key, 'local', sha256 FROM do_digests;
DROP TABLE do_digests;
ALTER TABLE do_digests_v2 RENAME TO do_digests;
";

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("DO object index: {0}")]
    Db(#[from] rusqlite::Error),
}

/// What the origin said the object was, pinned from its first response.
pub use crate::fetch::Identity;

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub sha256: Sha256Digest,
    pub size: u64,
    pub unverified: bool,
    pub identity: Identity,
}

struct Entry {
    stored: Stored,
    /// Microseconds since the index was opened at the last serve (LRU order).
    served: AtomicU64,
}

/// The index, in memory and on disk.
pub struct Index {
    db: Mutex<Connection>,
    entries: RwLock<HashMap<ObjectKey, Entry>>,
    /// Administrators' bindings (`do_digests`): this node's, its primary's.
    digests: RwLock<Bindings>,
    /// Learned from the files updates name: a catalog file or a synced
    /// update's file whose location is a DO content URL.
    learned: RwLock<HashMap<ObjectKey, Expected>>,
    opened: std::time::Instant,
    /// `opened` as Unix milliseconds (serve times in the catalog's unit).
    opened_unix_ms: u64,
}

/// The catalog's files (imports and synced updates projected into it),
/// then the synced metadata's own file locations (every synced file, also
/// of updates not projected): a location that is a DO content URL binds
/// its object to the file's digests. Either table may be absent (an index
/// opened on its own).
const LEARN_FROM: [(&str, &str); 2] = [
    (
        "files",
        "SELECT url, sha1, sha256, size FROM files
         WHERE url LIKE '%/filestreamingservice/files/%'",
    ),
    (
        "meta_file_urls",
        "SELECT u.mu_url, f.sha1, f.sha256, f.size
         FROM meta_file_urls u JOIN meta_files f ON f.sha1 = u.sha1
         WHERE u.mu_url LIKE '%/filestreamingservice/files/%'",
    ),
];

impl Index {
    /// Opens the index in `data_dir`'s catalog database, migrating it, and
    /// loads the objects the store still has (a missing file is forgotten:
    /// the next request fetches it again).
    pub fn open(data_dir: &Path, store: &dyn Storage) -> Result<Arc<Index>, IndexError> {
        let conn = Connection::open(data_dir.join("catalog.sqlite3"))?;
        conn.busy_timeout(Duration::from_secs(5))?;
        migrate(&conn)?;
        let index = Index {
            db: Mutex::new(conn),
            entries: RwLock::default(),
            digests: RwLock::default(),
            learned: RwLock::default(),
            opened: std::time::Instant::now(),
            opened_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
        };
        index.load(store)?;
        index.learn()?;
        Ok(Arc::new(index))
    }

    fn load(&self, store: &dyn Storage) -> Result<(), IndexError> {
        let db = self.db();
        let mut gone = Vec::new();
        {
            let mut stmt = db.prepare(
                "SELECT key, sha256, size, etag, last_modified, unverified FROM do_objects",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Stored {
                        sha256: r.get(1)?,
                        size: r.get::<_, i64>(2)? as u64,
                        identity: Identity {
                            len: Some(r.get::<_, i64>(2)? as u64),
                            etag: r.get(3)?,
                            last_modified: r.get(4)?,
                        },
                        unverified: r.get::<_, i64>(5)? != 0,
                    },
                ))
            })?;
            let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
            for row in rows {
                let (key, stored) = row?;
                let Some(key) = ObjectKey::from_stored(&key) else {
                    continue;
                };
                if store.published_at(&stored.sha256).is_none() {
                    gone.push(key);
                    continue;
                }
                entries.insert(
                    key,
                    Entry {
                        stored,
                        served: AtomicU64::new(0),
                    },
                );
            }
        }
        for key in gone {
            db.execute("DELETE FROM do_objects WHERE key = ?1", [key.as_str()])?;
        }
        drop(db);
        self.load_bindings()
    }

    fn load_bindings(&self) -> Result<(), IndexError> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT key, source, sha256 FROM do_digests")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
        })?;
        let mut digests = self.digests.write().unwrap_or_else(|p| p.into_inner());
        for row in rows {
            let (key, source, sha256) = row?;
            let (Some(key), Some(source)) =
                (ObjectKey::from_stored(&key), Source::from_stored(&source))
            else {
                continue;
            };
            match source {
                Source::Local => digests.local.insert(key, sha256),
                Source::Primary => digests.primary.insert(key, sha256),
            };
        }
        Ok(())
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stored object of `key`, if any.
    pub fn get(&self, key: &ObjectKey) -> Option<Stored> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries.get(key).map(|e| e.stored.clone())
    }

    /// The digests `key`'s bytes must have, if known from elsewhere: an
    /// administrator's binding first (this node's, else its primary's),
    /// else the file an update names at a DO URL (synced metadata, an
    /// import). `None`: stored unverified.
    pub fn known(&self, key: &ObjectKey) -> Option<Expected> {
        let digests = self.digests.read().unwrap_or_else(|p| p.into_inner());
        if let Some(sha256) = digests.get(key) {
            return Some(Expected {
                sha256: Some(*sha256),
                ..Expected::default()
            });
        }
        drop(digests);
        let learned = self.learned.read().unwrap_or_else(|p| p.into_inner());
        learned.get(key).cloned()
    }

    /// How many objects have digests known from elsewhere.
    pub fn known_count(&self) -> u64 {
        let digests = self.digests.read().unwrap_or_else(|p| p.into_inner());
        let learned = self.learned.read().unwrap_or_else(|p| p.into_inner());
        let extra = learned.keys().filter(|k| !digests.contains(k)).count();
        (digests.len() + extra) as u64
    }

    /// Reads again which DO objects the catalog's files and the synced
    /// metadata's file locations name (after an import or a sync); how many.
    pub fn learn(&self) -> Result<usize, IndexError> {
        let mut learned = HashMap::new();
        {
            let db = self.db();
            for (table, query) in LEARN_FROM {
                let exists: bool = db.query_row(
                    "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [table],
                    |r| r.get(0),
                )?;
                if !exists {
                    continue;
                }
                let mut stmt = db.prepare(query)?;
                let rows = stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Sha1Digest>(1)?,
                        r.get::<_, Option<Sha256Digest>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                })?;
                for row in rows {
                    let (url, sha1, sha256, size) = row?;
                    let Some(key) = path::key_of_url(&url) else {
                        continue;
                    };
                    // The catalog's row first: it may have learned the SHA-256.
                    learned.entry(key).or_insert(Expected {
                        size: size.map(|s| s as u64),
                        sha1: Some(sha1),
                        sha256,
                    });
                }
            }
        }
        let n = learned.len();
        *self.learned.write().unwrap_or_else(|p| p.into_inner()) = learned;
        Ok(n)
    }

    /// Binds `key` to `sha256` on this node (a local binding, which wins
    /// over the primary's): its next download is verified against it.
    pub fn set_known_digest(
        &self,
        key: &ObjectKey,
        sha256: Sha256Digest,
    ) -> Result<(), IndexError> {
        let db = self.db();
        db.execute(
            "INSERT INTO do_digests(key, source, sha256) VALUES (?1, 'local', ?2)
             ON CONFLICT(key, source) DO UPDATE SET sha256 = excluded.sha256",
            params![key.as_str(), sha256],
        )?;
        let mut digests = self.digests.write().unwrap_or_else(|p| p.into_inner());
        digests.local.insert(key.clone(), sha256);
        Ok(())
    }

    /// Removes this node's binding of `key`; `false`: it had none (the
    /// primary's binding, if any, stays: it is the primary's to remove).
    pub fn remove_known_digest(&self, key: &ObjectKey) -> Result<bool, IndexError> {
        let db = self.db();
        let removed = db.execute(
            "DELETE FROM do_digests WHERE key = ?1 AND source = 'local'",
            [key.as_str()],
        )?;
        let mut digests = self.digests.write().unwrap_or_else(|p| p.into_inner());
        digests.local.remove(key);
        Ok(removed > 0)
    }

    /// Whether the primary's list binds `key` (a follower's copy of it).
    pub fn primary_binds(&self, key: &ObjectKey) -> bool {
        let digests = self.digests.read().unwrap_or_else(|p| p.into_inner());
        digests.primary.contains_key(key)
    }

    /// Replaces the copy of the primary's bindings with `primary`, whole,
    /// in one transaction (a binding it no longer lists goes); this
    /// node's own stay, and still win. `false`: the same as held, nothing
    /// written.
    pub fn replace_primary_digests(
        &self,
        primary: HashMap<ObjectKey, Sha256Digest>,
    ) -> Result<bool, IndexError> {
        let mut db = self.db();
        if self
            .digests
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .primary
            == primary
        {
            return Ok(false);
        }
        let tx = db.transaction()?;
        tx.execute("DELETE FROM do_digests WHERE source = 'primary'", [])?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO do_digests(key, source, sha256) VALUES (?1, 'primary', ?2)",
            )?;
            for (key, sha256) in &primary {
                insert.execute(params![key.as_str(), sha256])?;
            }
        }
        tx.commit()?;
        self.digests
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .primary = primary;
        Ok(true)
    }

    /// The bindings that apply on this node, one per object, by path:
    /// its own, and its primary's where it has none of its own.
    pub fn digest_bindings(&self) -> Vec<Binding> {
        self.digests
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .list()
    }

    /// Records a stored object (in memory at once; on disk before return).
    pub fn insert(&self, key: &ObjectKey, stored: Stored) -> Result<(), IndexError> {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        self.db().execute(
            "INSERT INTO do_objects(key, sha256, size, etag, last_modified, unverified, stored_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(key) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size,
                 etag = excluded.etag, last_modified = excluded.last_modified,
                 unverified = excluded.unverified, stored_at = excluded.stored_at",
            params![
                key.as_str(),
                stored.sha256,
                stored.size as i64,
                stored.identity.etag,
                stored.identity.last_modified,
                i64::from(stored.unverified),
                at
            ],
        )?;
        let served = AtomicU64::new(self.now());
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.insert(key.clone(), Entry { stored, served });
        Ok(())
    }

    /// Forgets `key` (its bytes were evicted or went missing).
    pub fn remove(&self, key: &ObjectKey) -> Result<(), IndexError> {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        self.db()
            .execute("DELETE FROM do_objects WHERE key = ?1", [key.as_str()])?;
        Ok(())
    }

    /// Notes that `key` was just served (for eviction order).
    pub fn served(&self, key: &ObjectKey) {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.get(key) {
            e.served.store(self.now(), Ordering::Relaxed);
        }
    }

    /// Whether some key other than `key` keeps these bytes.
    pub fn shared_by_other(&self, key: &ObjectKey, sha256: &Sha256Digest) -> bool {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .iter()
            .any(|(k, e)| k != key && e.stored.sha256 == *sha256)
    }

    /// Every stored object, least recently served first: its key, SHA-256,
    /// size and when it was last served (Unix milliseconds; 0: not since
    /// start).
    pub fn by_last_served(&self) -> Vec<(ObjectKey, Sha256Digest, u64, u64)> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = entries
            .iter()
            .map(|(k, e)| {
                let served = e.served.load(Ordering::Relaxed);
                (served, k.clone(), e.stored.sha256, e.stored.size)
            })
            .collect();
        list.sort();
        let unix_ms = |served: u64| match served {
            0 => 0,
            micros => self.opened_unix_ms + micros / 1000,
        };
        list.into_iter()
            .map(|(served, k, d, s)| (k, d, s, unix_ms(served)))
            .collect()
    }

    /// Unverified objects, least recently served first, with their sizes.
    pub fn unverified_by_last_served(&self) -> Vec<(ObjectKey, Sha256Digest, u64)> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = entries
            .iter()
            .filter(|(_, e)| e.stored.unverified)
            .map(|(k, e)| {
                let served = e.served.load(Ordering::Relaxed);
                (served, k.clone(), e.stored.sha256, e.stored.size)
            })
            .collect();
        list.sort();
        list.into_iter().map(|(_, k, d, s)| (k, d, s)).collect()
    }

    /// Objects and bytes stored: (verified, unverified).
    pub fn totals(&self) -> ((u64, u64), (u64, u64)) {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let (mut verified, mut unverified) = ((0, 0), (0, 0));
        for e in entries.values() {
            let t = if e.stored.unverified {
                &mut unverified
            } else {
                &mut verified
            };
            t.0 += 1;
            t.1 += e.stored.size;
        }
        (verified, unverified)
    }

    /// Every SHA-256 the index keeps (what a store cleanup must leave).
    pub fn sha256s(&self) -> std::collections::HashSet<Sha256Digest> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries.values().map(|e| e.stored.sha256).collect()
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_micros() as u64 + 1
    }
}

/// Creates or migrates the DO tables (versioned like the catalog's schema).
fn migrate(conn: &Connection) -> Result<(), IndexError> {
    // The catalog creates `settings`; the index may be opened on its own (tests).
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    )?;
    let version: i64 = conn
        .query_row(
            "SELECT value FROM settings WHERE key = ?1",
            [VERSION_KEY],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    for (done, step) in VERSIONS.iter().enumerate().skip(version.max(0) as usize) {
        let to = done + 1;
        conn.execute_batch(&format!(
            "BEGIN; {step} INSERT INTO settings(key, value) VALUES ('{VERSION_KEY}', '{to}')
             ON CONFLICT(key) DO UPDATE SET value = excluded.value; COMMIT;"
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DiskStore, Expected};
    use sha2::Digest as _;

    fn key(s: &str) -> ObjectKey {
        ObjectKey::from_stored(s).unwrap()
    }

    #[test]
    fn objects_survive_a_reopen_unless_their_bytes_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 16).unwrap();
        let mut ingest = store.clone().begin_ingest().unwrap();
        ingest.write(b"object bytes").unwrap();
        let sha256 = Sha256Digest::from_slice(&sha2::Sha256::digest(b"object bytes")).unwrap();
        let expected = Expected {
            sha256: Some(sha256),
            ..Expected::default()
        };
        ingest.commit(&expected).unwrap();
        let index = Index::open(dir.path(), &*store).unwrap();
        let a = key("7bc846e0-af9c-49be-a03d-bb04428c9bb5");
        let b = key("7bc846e0-af9c-49be-a03d-bb04428c9bb5/pieceshash");
        let stored = Stored {
            sha256,
            size: 12,
            unverified: true,
            identity: Identity {
                len: Some(12),
                etag: Some("\"e1\"".into()),
                last_modified: None,
            },
        };
        index.insert(&a, stored.clone()).unwrap();
        index
            .insert(
                &b,
                Stored {
                    sha256: "ab".repeat(32).parse().unwrap(),
                    ..stored.clone()
                },
            )
            .unwrap();
        index.set_known_digest(&a, sha256).unwrap();
        assert_eq!(index.totals(), ((0, 0), (2, 24)));
        drop(index);

        let index = Index::open(dir.path(), &*store).unwrap();
        assert_eq!(index.get(&a), Some(stored));
        assert_eq!(index.get(&b), None, "its bytes are not in the store");
        assert_eq!(index.known(&a).and_then(|e| e.sha256), Some(sha256));
        assert_eq!(
            index.unverified_by_last_served(),
            vec![(a.clone(), sha256, 12)]
        );
        index.remove(&a).unwrap();
        assert_eq!(index.get(&a), None);
    }

    #[test]
    fn synced_file_locations_at_do_urls_bind_their_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 16).unwrap();
        drop(crate::metadata::store::MetaStore::open(dir.path()).unwrap());
        let sha1: Sha1Digest = "cd".repeat(20).parse().unwrap();
        let conn = Connection::open(dir.path().join("catalog.sqlite3")).unwrap();
        // The file's revision is beside the point here.
        conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        conn.execute(
            "INSERT INTO meta_files(rid, sha1, sha256, name, size) VALUES (1, ?1, NULL, 'a.esd', 42)",
            [&sha1],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO meta_file_urls(sha1, mu_url) VALUES (?1, ?2)",
            params![
                sha1,
                "http://7.tlu.dl.delivery.mp.microsoft.com/filestreamingservice/files/2F7C5A3E-1b2d-4c1e-9f00-0123456789ab?P1=1"
            ],
        )
        .unwrap();
        let index = Index::open(dir.path(), &*store).unwrap();
        let expected = index.known(&key("2f7c5a3e-1b2d-4c1e-9f00-0123456789ab"));
        assert_eq!(
            expected,
            Some(Expected {
                size: Some(42),
                sha1: Some(sha1),
                sha256: None
            })
        );
        assert_eq!(index.known_count(), 1);
        // An administrator's binding comes first.
        let sha256: Sha256Digest = "ab".repeat(32).parse().unwrap();
        let k = key("2f7c5a3e-1b2d-4c1e-9f00-0123456789ab");
        index.set_known_digest(&k, sha256).unwrap();
        assert_eq!(index.known(&k).unwrap().sha256, Some(sha256));
        assert_eq!(index.known(&k).unwrap().sha1, None);
        assert_eq!(index.known_count(), 1);
    }

    fn sha(byte: &str) -> Sha256Digest {
        byte.repeat(32).parse().unwrap()
    }

    fn bound(index: &Index, k: &ObjectKey) -> Option<Sha256Digest> {
        index.known(k).and_then(|e| e.sha256)
    }

    #[test]
    fn a_local_binding_wins_over_the_primarys_and_the_primarys_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 16).unwrap();
        let index = Index::open(dir.path(), &*store).unwrap();
        let (a, b, c) = (
            key("00000000-0000-4000-8000-00000000000a"),
            key("00000000-0000-4000-8000-00000000000b"),
            key("00000000-0000-4000-8000-00000000000c"),
        );
        index.set_known_digest(&a, sha("aa")).unwrap();
        let primary = HashMap::from([(a.clone(), sha("01")), (b.clone(), sha("02"))]);
        assert!(index.replace_primary_digests(primary.clone()).unwrap());
        assert!(
            !index.replace_primary_digests(primary).unwrap(),
            "unchanged"
        );
        assert_eq!(bound(&index, &a), Some(sha("aa")), "the local one wins");
        assert_eq!(bound(&index, &b), Some(sha("02")));
        assert_eq!(index.known_count(), 2);
        let listed: Vec<_> = index
            .digest_bindings()
            .into_iter()
            .map(|b| (b.path, b.sha256, b.source))
            .collect();
        assert_eq!(
            listed,
            [
                (a.path(), sha("aa"), Source::Local),
                (b.path(), sha("02"), Source::Primary)
            ]
        );

        // The primary's next list replaces the copy: `b` goes, `c` comes.
        let next = HashMap::from([(a.clone(), sha("03")), (c.clone(), sha("04"))]);
        assert!(index.replace_primary_digests(next).unwrap());
        assert_eq!(bound(&index, &b), None);
        assert_eq!(bound(&index, &c), Some(sha("04")));
        assert_eq!(bound(&index, &a), Some(sha("aa")));
        // Removing the local binding uncovers the primary's; the primary's
        // own cannot be removed here.
        assert!(index.remove_known_digest(&a).unwrap());
        assert_eq!(bound(&index, &a), Some(sha("03")));
        assert!(!index.remove_known_digest(&a).unwrap());
        assert!(index.primary_binds(&a));
        index.set_known_digest(&b, sha("bb")).unwrap();
        drop(index);

        // All of it is on disk, apart.
        let index = Index::open(dir.path(), &*store).unwrap();
        assert_eq!(bound(&index, &a), Some(sha("03")));
        assert_eq!(bound(&index, &b), Some(sha("bb")));
        assert_eq!(bound(&index, &c), Some(sha("04")));
        // An empty list from the primary leaves only the node's own.
        assert!(index.replace_primary_digests(HashMap::new()).unwrap());
        let sources: Vec<_> = index
            .digest_bindings()
            .into_iter()
            .map(|b| b.source)
            .collect();
        assert_eq!(sources, [Source::Local]);
        assert_eq!(bound(&index, &a), None);
        assert_eq!(bound(&index, &b), Some(sha("bb")));
    }

    #[test]
    fn bindings_made_before_sources_stay_as_local_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 16).unwrap();
        let a = key("00000000-0000-4000-8000-00000000000a");
        {
            // A database of the first schema, with one binding.
            let conn = Connection::open(dir.path().join("catalog.sqlite3")).unwrap();
            conn.execute_batch(&format!(
                "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 {V1} INSERT INTO settings VALUES ('{VERSION_KEY}', '1');"
            ))
            .unwrap();
            conn.execute(
                "INSERT INTO do_digests(key, sha256) VALUES (?1, ?2)",
                params![a.as_str(), sha("aa")],
            )
            .unwrap();
        }
        let index = Index::open(dir.path(), &*store).unwrap();
        assert_eq!(bound(&index, &a), Some(sha("aa")));
        assert_eq!(index.digest_bindings()[0].source, Source::Local);
        // The primary's list leaves it alone.
        assert!(!index.replace_primary_digests(HashMap::new()).unwrap());
        let primary = HashMap::from([(a.clone(), sha("01"))]);
        index.replace_primary_digests(primary).unwrap();
        assert_eq!(bound(&index, &a), Some(sha("aa")));
        let conn = Connection::open(dir.path().join("catalog.sqlite3")).unwrap();
        let version: String = conn
            .query_row(
                "SELECT value FROM settings WHERE key = ?1",
                [VERSION_KEY],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, VERSIONS.len().to_string());
    }
}
