//! The content-addressed store: one immutable file per SHA-256, whatever its
//! names in the catalog.
//!
//! Layout under the data directory:
//! - `store/sha256/ab/cd/<64 hex>`: published files, read-only;
//! - `tmp/`: ingests in progress (deleted at start: a crash leaves nothing half-published);
//! - `quarantine/`: downloads that failed verification, kept (bounded) for inspection.
//!
//! Files are only ever opened by digest; [`ingest::Ingest`] is the only way in.
//!
//! [`Storage`] is the seam the request path sees (after pingora-cache's
//! `Storage`): `lookup` gives a [`Hit`] that serves ranges, `begin_ingest`
//! a write that verifies on commit and discards on drop. [`DiskStore`] is
//! the local-disk backend, and the local tier of any other.

mod ingest;
mod lock;
pub mod s3;
mod settings;

pub use ingest::{Expected, Ingest, IngestError, Ingested, PartWriter, Partial};
pub use lock::{DataLock, LockError};
pub use settings::StoreSettings;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::digest::Sha256Digest;

/// How many rejected downloads `quarantine/` keeps; older ones are deleted.
const QUARANTINE_KEEP: usize = 32;
/// How many bytes of them it keeps by default (`quarantine_max_bytes`).
pub const DEFAULT_QUARANTINE_MAX_BYTES: u64 = 1 << 30;

/// Errors of the store itself (not of a particular ingest).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What `http`, `fetch`, `quota` and `catalog` need of a store: no paths,
/// no files, no filesystem calls beyond it.
pub trait Storage: Send + Sync + 'static {
    /// A published file, open for serving; `None` if it is not stored.
    fn lookup(&self, digest: &Sha256Digest) -> Result<Option<Hit>, StoreError>;
    /// A new file: written and hashed as it arrives; [`Ingest::commit`]
    /// verifies and publishes it, dropping it discards it.
    fn begin_ingest(self: Arc<Self>) -> Result<Ingest, StoreError>;
    /// When a file was published, if it is.
    fn published_at(&self, digest: &Sha256Digest) -> Option<std::time::SystemTime>;
    /// Removes a published file (eviction, gc). Missing is not an error.
    fn remove(&self, digest: &Sha256Digest) -> Result<(), StoreError>;
    /// Starts tracking which files are being served (eviction needs it;
    /// without eviction it is per-request work for nothing).
    fn track_serving(&self);
    fn tracks_serving(&self) -> bool;
    /// Whether a response is sending this file right now.
    fn is_serving(&self, digest: &Sha256Digest) -> bool;
}

/// A published file, open for serving: the whole file as `Bytes` over a
/// read-only map (slicing it for a range copies nothing) and the open file
/// (what a zero-copy send asks for). With serving tracked, the file counts
/// as being served until every slice of its bytes is dropped.
#[derive(Clone)]
pub struct Hit {
    bytes: Bytes,
    file: Arc<fs::File>,
}

impl Hit {
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The file's bytes (mapped), borrowed.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The file's bytes (shared, mapped).
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The open file, for `sendfile`-style sends by offset.
    pub fn file(&self) -> &fs::File {
        &self.file
    }
}

/// The disk store. Cheap to share behind an `Arc`.
pub struct DiskStore {
    root: PathBuf,
    /// Open files of recently served digests: a hit costs no `open`/`mmap`.
    maps: moka::sync::Cache<Sha256Digest, Hit>,
    tmp_seq: AtomicU64,
    /// Files being sent to clients right now, with how many responses;
    /// kept only when something evicts (`max_store_bytes`).
    pins: Arc<Mutex<HashMap<Sha256Digest, u32>>>,
    tracks_serving: AtomicBool,
    /// Bytes `quarantine/` may hold; a larger rejected file is deleted.
    quarantine_max: AtomicU64,
}

/// Marks a file as being served while it lives (eviction skips it).
struct Pin {
    pins: Arc<Mutex<HashMap<Sha256Digest, u32>>>,
    digest: Sha256Digest,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pins.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.digest);
            }
        }
    }
}

/// A response's view of a stored file: the shared map plus its pin.
struct Served {
    bytes: Bytes,
    _pin: Pin,
}

impl AsRef<[u8]> for Served {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl DiskStore {
    /// Opens (creating if needed) the store under `data_dir` and deletes leftover temp files.
    pub fn open(data_dir: &Path, cached_maps: u64) -> Result<Arc<DiskStore>, StoreError> {
        let root = data_dir.to_owned();
        for dir in ["store/sha256", "tmp", "quarantine"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let store = DiskStore {
            root,
            maps: moka::sync::Cache::new(cached_maps),
            tmp_seq: AtomicU64::new(0),
            pins: Arc::default(),
            tracks_serving: AtomicBool::new(false),
            quarantine_max: AtomicU64::new(DEFAULT_QUARANTINE_MAX_BYTES),
        };
        store.remove_leftover_temp_files()?;
        Ok(Arc::new(store))
    }

    /// Opens an existing store without touching it (maintenance commands:
    /// temp files may belong to a running server).
    pub fn open_existing(data_dir: &Path) -> Result<Arc<DiskStore>, StoreError> {
        let root = data_dir.join("store/sha256");
        if !root.is_dir() {
            return Err(StoreError::Io {
                path: root,
                source: io::Error::new(io::ErrorKind::NotFound, "no store here"),
            });
        }
        Ok(Arc::new(DiskStore {
            root: data_dir.to_owned(),
            maps: moka::sync::Cache::new(16),
            tmp_seq: AtomicU64::new(0),
            pins: Arc::default(),
            tracks_serving: AtomicBool::new(false),
            quarantine_max: AtomicU64::new(DEFAULT_QUARANTINE_MAX_BYTES),
        }))
    }

    /// Bounds `quarantine/` to `bytes` (the newest rejected files are kept).
    pub fn limit_quarantine(&self, bytes: u64) {
        self.quarantine_max.store(bytes, Ordering::Relaxed);
    }

    /// Where a published file lives: `store/sha256/ab/cd/<hex>`.
    pub fn path_of(&self, digest: &Sha256Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.root
            .join("store/sha256")
            .join(&hex[0..2])
            .join(&hex[2..4])
            .join(hex)
    }

    /// Whether a file with this digest is published.
    pub fn contains(&self, digest: &Sha256Digest) -> bool {
        self.maps.contains_key(digest) || self.path_of(digest).is_file()
    }

    /// The whole file, opened and mapped (cached: a hit costs no
    /// `open`/`mmap`); not pinned.
    pub fn open_hit(&self, digest: &Sha256Digest) -> Result<Option<Hit>, StoreError> {
        if let Some(hit) = self.maps.get(digest) {
            return Ok(Some(hit));
        }
        let path = self.path_of(digest);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let len = file.metadata().map_err(io_err(&path))?.len();
        let bytes = if len == 0 {
            Bytes::new() // mmap of an empty file is an error on Linux
        } else {
            // SAFETY: published files are never written again (read-only,
            // replaced only by rename of identical content), so the map is stable.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(&path))?;
            Bytes::from_owner(map)
        };
        let hit = Hit {
            bytes,
            file: Arc::new(file),
        };
        self.maps.insert(*digest, hit.clone());
        Ok(Some(hit))
    }

    /// The whole file as `Bytes` backed by a read-only map.
    pub fn open_bytes(&self, digest: &Sha256Digest) -> Result<Option<Bytes>, StoreError> {
        Ok(self.open_hit(digest)?.map(Hit::into_bytes))
    }

    /// Counts `digest` as being served until the returned pin is dropped.
    fn pin(&self, digest: &Sha256Digest) -> Pin {
        *self
            .pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(*digest)
            .or_default() += 1;
        Pin {
            pins: self.pins.clone(),
            digest: *digest,
        }
    }

    /// Bytes available to ingests on the store's filesystem, if known.
    pub fn free_bytes(&self) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.root.join("tmp").as_os_str().as_bytes()).ok()?;
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid NUL-terminated path and a properly sized out-struct.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
        (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
    }

    /// Re-hashes one published file: `Ok(true)` if its bytes match its name.
    pub fn verify(&self, digest: &Sha256Digest) -> Result<bool, StoreError> {
        self.verify_with(digest, |_| true).map(|v| v == Some(true))
    }

    /// [`DiskStore::verify`], calling `each` with every MiB read (it may
    /// sleep to pace the work); `Ok(None)` if `each` says stop.
    pub fn verify_with(
        &self,
        digest: &Sha256Digest,
        mut each: impl FnMut(usize) -> bool,
    ) -> Result<Option<bool>, StoreError> {
        use sha2::Digest as _;
        use std::io::Read as _;
        let path = self.path_of(digest);
        let mut file = fs::File::open(&path).map_err(io_err(&path))?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(io_err(&path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if !each(n) {
                return Ok(None);
            }
        }
        Ok(Some(hasher.finalize().as_slice() == digest.0))
    }

    /// Moves a published file whose bytes are bad into quarantine (or
    /// deletes it, if it is larger than the quarantine may hold).
    pub fn quarantine_published(
        &self,
        digest: &Sha256Digest,
    ) -> Result<Option<PathBuf>, StoreError> {
        self.maps.invalidate(digest);
        let path = self.path_of(digest);
        let kept = self
            .quarantine(&path, &digest.to_hex())
            .map_err(io_err(&path))?;
        if kept.is_none() {
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
        Ok(kept)
    }

    /// Size of a published file.
    pub fn size_of(&self, digest: &Sha256Digest) -> Option<u64> {
        fs::metadata(self.path_of(digest)).ok().map(|m| m.len())
    }

    /// Files in quarantine (for status and tests).
    pub fn quarantined(&self) -> Vec<PathBuf> {
        list_files(&self.root.join("quarantine"))
    }

    /// Files in `tmp/` (ingests in progress).
    pub fn temp_files(&self) -> Vec<PathBuf> {
        list_files(&self.root.join("tmp"))
    }

    /// Every published digest (walks the tree; for verify, gc and tests).
    pub fn published(&self) -> Vec<Sha256Digest> {
        let mut out = Vec::new();
        for a in list_files(&self.root.join("store/sha256")) {
            for b in list_files(&a) {
                for f in list_files(&b) {
                    let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if let Ok(d) = name.parse() {
                        out.push(d);
                    }
                }
            }
        }
        out
    }

    fn remove_leftover_temp_files(&self) -> Result<(), StoreError> {
        for path in self.temp_files() {
            fs::remove_file(&path).map_err(io_err(&path))?;
            tracing::info!(path = %path.display(), "removed leftover temp file");
        }
        Ok(())
    }

    /// Moves a rejected file into `quarantine/`, keeping only the newest
    /// [`QUARANTINE_KEEP`] files within the byte limit. `None` (the file
    /// left where it is, for the caller to delete) if it alone is over it.
    fn quarantine(&self, tmp: &Path, label: &str) -> io::Result<Option<PathBuf>> {
        let max = self.quarantine_max.load(Ordering::Relaxed);
        if fs::metadata(tmp)?.len() > max {
            return Ok(None);
        }
        let dir = self.root.join("quarantine");
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dest = dir.join(format!("{stamp}-{label}"));
        fs::rename(tmp, &dest)?;
        let mut entries: Vec<(PathBuf, u64)> = list_files(&dir)
            .into_iter()
            .map(|p| {
                let len = fs::metadata(&p).map_or(0, |m| m.len());
                (p, len)
            })
            .collect();
        entries.sort(); // names start with a timestamp: oldest first
        let mut total: u64 = entries.iter().map(|(_, len)| len).sum();
        let mut count = entries.len();
        for (old, len) in &entries {
            if count <= QUARANTINE_KEEP && total <= max {
                break;
            }
            let _ = fs::remove_file(old);
            total -= len;
            count -= 1;
        }
        Ok(Some(dest))
    }

    /// Publishes a verified temp file under its digest: rename, then fsync the
    /// directory so the rename itself survives a power loss.
    fn publish(&self, tmp: &Path, digest: &Sha256Digest) -> io::Result<()> {
        let dest = self.path_of(digest);
        let dir = dest.parent().expect("store paths have parents");
        fs::create_dir_all(dir)?;
        let mut perms = fs::metadata(tmp)?.permissions();
        perms.set_readonly(true);
        fs::set_permissions(tmp, perms)?;
        fs::rename(tmp, &dest)?;
        fs::File::open(dir)?.sync_all()
    }
}

impl Storage for DiskStore {
    fn lookup(&self, digest: &Sha256Digest) -> Result<Option<Hit>, StoreError> {
        let Some(hit) = self.open_hit(digest)? else {
            return Ok(None);
        };
        if !self.tracks_serving() {
            return Ok(Some(hit));
        }
        let served = Served {
            bytes: hit.bytes,
            _pin: self.pin(digest),
        };
        Ok(Some(Hit {
            bytes: Bytes::from_owner(served),
            file: hit.file,
        }))
    }

    fn begin_ingest(self: Arc<Self>) -> Result<Ingest, StoreError> {
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let path = self
            .root
            .join("tmp")
            .join(format!("{}-{seq}.part", std::process::id()));
        Ingest::create(self, path.clone()).map_err(io_err(&path))
    }

    fn published_at(&self, digest: &Sha256Digest) -> Option<std::time::SystemTime> {
        let meta = fs::metadata(self.path_of(digest)).ok()?;
        meta.is_file()
            .then(|| meta.modified().unwrap_or(std::time::UNIX_EPOCH))
    }

    fn remove(&self, digest: &Sha256Digest) -> Result<(), StoreError> {
        self.maps.invalidate(digest);
        let path = self.path_of(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    fn track_serving(&self) {
        self.tracks_serving.store(true, Ordering::Relaxed);
    }

    fn tracks_serving(&self) -> bool {
        self.tracks_serving.load(Ordering::Relaxed)
    }

    fn is_serving(&self, digest: &Sha256Digest) -> bool {
        self.pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(digest)
    }
}

fn list_files(dir: &Path) -> Vec<PathBuf> {
    match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    }
}

/// A file in the temp directory that disappears when closed (unlinked at
/// once): for spooling what must be read twice or held back, never kept.
pub fn scratch_file() -> io::Result<fs::File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "upcache-scratch-{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    fs::remove_file(&path)?;
    Ok(file)
}
