//! One file on its way into the store.
//!
//! An [`Ingest`] owns its temp file: [`Ingest::commit`] verifies and publishes
//! it, and dropping it without a commit deletes it. No error path can forget
//! to clean up, and nothing unverified is ever published.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};

use bytes::Bytes;

use sha1::Digest as _;

use super::DiskStore;
use crate::digest::{Sha1Digest, Sha256Digest};

/// What the catalog says the bytes must be. Unknown fields are not checked,
/// but at least one digest must be known for a commit to succeed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub size: Option<u64>,
    pub sha1: Option<Sha1Digest>,
    pub sha256: Option<Sha256Digest>,
}

/// The identity of a committed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub sha256: Sha256Digest,
    /// `None` when the ingest ran [`Ingest::without_sha1`].
    pub sha1: Option<Sha1Digest>,
    pub size: u64,
}

/// Why an ingest did not become a stored file.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("writing the temp file: {0}")]
    Io(#[from] io::Error),
    #[error("upstream sent more than the expected {expected} bytes")]
    TooLarge { expected: u64 },
    #[error("size mismatch: expected {expected} bytes, got {got}")]
    SizeMismatch { expected: u64, got: u64 },
    #[error("{algorithm} mismatch: expected {expected}, got {got}")]
    DigestMismatch {
        algorithm: &'static str,
        expected: String,
        got: String,
    },
    #[error("no digest is known to verify the file against")]
    NothingToVerify,
}

impl IngestError {
    /// The bytes were wrong (as opposed to our disk failing).
    pub fn is_verification_failure(&self) -> bool {
        matches!(
            self,
            Self::TooLarge { .. } | Self::SizeMismatch { .. } | Self::DigestMismatch { .. }
        )
    }

    /// The disk is full: clients get 507, not 502.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Io(e) if e.kind() == io::ErrorKind::StorageFull)
    }
}

/// A reader of a file still being written (or just published): reads by
/// offset, never past what the writer reports as written.
pub struct Partial(File);

impl Partial {
    /// Fills `buf` from `offset`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.0, buf, offset)
    }

    /// The open file, for `sendfile`-style sends by offset.
    pub fn file(&self) -> &File {
        &self.0
    }
}

/// Writes bytes of a temp file at their own offsets: a part fetched beside
/// the ingest's own writes (`fetch::parts`), hashed later, when the ingest
/// adopts it ([`Ingest::adopt`]).
#[derive(Clone)]
pub struct PartWriter {
    file: Arc<File>,
    store: Arc<DiskStore>,
}

impl PartWriter {
    /// Writes `bytes` at `offset`. Blocking, but into the page cache.
    pub fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }

    /// Space left on the store's filesystem.
    pub fn free_bytes(&self) -> Option<u64> {
        self.store.free_bytes()
    }
}

/// A temp file being written and hashed.
pub struct Ingest {
    store: Arc<DiskStore>,
    path: PathBuf,
    file: Arc<File>,
    /// Computes SHA-1 and writes half of each large batch on its own thread
    /// (without SHA-1: writes all of it).
    sidecar: Option<Sidecar>,
    sha256: sha2::Sha256,
    /// Lent to the sidecar for a large batch, updated here for a small one;
    /// `None` after [`Ingest::without_sha1`].
    sha1: Option<sha1::Sha1>,
    written: u64,
    /// Bytes already handed to the disk's writeback (see [`Ingest::start_writeback`]).
    flushed: u64,
    limit: Option<u64>,
}

/// The most bytes [`Ingest::adopt`] reads back at once.
const ADOPT_READ: u64 = 1 << 20;

/// How many written bytes are left dirty before their writeback is started.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Batches up to this size are hashed and written on the caller's thread
/// alone. Handing one to the sidecar costs a thread wake-up, which on a
/// busy machine waits for a core (0.3-2 ms measured for a download's
/// first bytes, which every follower is waiting for); hashing 64 KiB twice
/// takes ~70 µs.
const INLINE_MAX: u64 = 64 << 10;

/// The other half of an ingest, on its own thread. Per large batch of
/// chunks the caller's thread computes SHA-256 and writes the first half of
/// the bytes while the sidecar computes SHA-1 and writes the second half
/// (positioned writes, so the halves go in parallel). The three costs (two
/// hashes and the page-cache copy) are split evenly over two cores. Without
/// SHA-1 the sidecar writes the whole batch while the caller hashes it.
struct Sidecar {
    jobs: Option<mpsc::SyncSender<Job>>,
    done: mpsc::Receiver<(io::Result<()>, Option<sha1::Sha1>)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Hash every chunk into `sha1`, if any (and give it back); write
/// `chunks[write_from..]`, the first of them at `offset`.
struct Job {
    chunks: Vec<Bytes>,
    write_from: usize,
    offset: u64,
    sha1: Option<sha1::Sha1>,
}

impl Sidecar {
    fn spawn(file: Arc<File>) -> io::Result<Sidecar> {
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(1);
        let (done_tx, done) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("upcache-ingest".into())
            .spawn(move || {
                for mut job in job_rx {
                    // Hash first, write last: the caller writes first, so the
                    // two writes rarely meet on the file's inode lock.
                    if let Some(sha1) = &mut job.sha1 {
                        job.chunks.iter().for_each(|c| sha1.update(c));
                    }
                    let result = write_at(&file, &job.chunks[job.write_from..], job.offset);
                    if done_tx.send((result, job.sha1)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Sidecar {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }

    /// Hands a job to the sidecar, runs `meanwhile`, waits for the sidecar;
    /// returns the job's SHA-1 state (`None` inside if the job had none,
    /// outside if the sidecar is gone).
    fn run(
        &self,
        job: Job,
        meanwhile: impl FnOnce() -> io::Result<()>,
    ) -> (io::Result<()>, Option<Option<sha1::Sha1>>) {
        let gone = || io::Error::other("ingest thread ended");
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            return (Err(gone()), None);
        }
        let ours = meanwhile();
        match self.done.recv() {
            Ok((theirs, sha1)) => (ours.and(theirs), Some(sha1)),
            Err(_) => (Err(gone()), None),
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `chunks` back to back starting at `offset`.
fn write_at(file: &File, chunks: &[Bytes], mut offset: u64) -> io::Result<()> {
    for c in chunks {
        file.write_all_at(c, offset)?;
        offset += c.len() as u64;
    }
    Ok(())
}

impl Ingest {
    pub(super) fn create(store: Arc<DiskStore>, path: PathBuf) -> io::Result<Ingest> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let file = Arc::new(file);
        Ok(Ingest {
            store,
            path,
            sidecar: Some(Sidecar::spawn(file.clone())?),
            file,
            sha256: sha2::Sha256::new(),
            sha1: Some(sha1::Sha1::new()),
            written: 0,
            flushed: 0,
            limit: None,
        })
    }

    /// Computes no SHA-1: the caller verifies by the SHA-256 alone (known
    /// from the catalog, it binds the bytes as the SHA-1 does, and more
    /// strongly), and the ingest costs one hash instead of two. Call before
    /// the first write.
    pub fn without_sha1(&mut self) {
        debug_assert_eq!(self.written, 0, "without_sha1 after a write");
        self.sha1 = None;
    }

    /// Refuses writes beyond `size` bytes (a misbehaving upstream is cut off
    /// early instead of filling the disk).
    pub fn limit_size(&mut self, size: u64) {
        self.limit = Some(size);
    }

    /// A second handle on the temp file, for readers that follow the write.
    /// It stays valid after the commit renames the file.
    pub fn reader(&self) -> io::Result<Partial> {
        File::open(&self.path).map(Partial)
    }

    /// A writer for parts of the file beyond what is written (see [`PartWriter`]).
    pub fn part_writer(&self) -> PartWriter {
        PartWriter {
            file: self.file.clone(),
            store: self.store.clone(),
        }
    }

    /// Counts as written the `len` bytes after what is written, which a
    /// [`PartWriter`] has put in the file: reads them back (from the page
    /// cache) into the hashes. Blocking.
    pub fn adopt(&mut self, len: u64) -> Result<(), IngestError> {
        let new_len = self.written + len;
        if let Some(limit) = self.limit.filter(|&l| new_len > l) {
            return Err(IngestError::TooLarge { expected: limit });
        }
        let mut buf = vec![0u8; len.min(ADOPT_READ) as usize];
        while self.written < new_len {
            let n = (new_len - self.written).min(ADOPT_READ) as usize;
            self.file.read_exact_at(&mut buf[..n], self.written)?;
            self.sha256.update(&buf[..n]);
            if let Some(sha1) = &mut self.sha1 {
                sha1.update(&buf[..n]);
            }
            self.written += n as u64;
            self.start_writeback();
        }
        Ok(())
    }

    /// Space left on the store's filesystem.
    pub fn free_bytes(&self) -> Option<u64> {
        self.store.free_bytes()
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends and hashes a chunk (copying it). Blocking.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), IngestError> {
        self.write_chunks(vec![Bytes::copy_from_slice(chunk)])
    }

    /// Appends and hashes chunks without copying them: a large batch split
    /// with the sidecar thread (SHA-256 here, SHA-1 there, half the writes
    /// each), a small one all here. Blocking; when it returns the bytes are
    /// in the file (readable by followers).
    pub fn write_chunks(&mut self, chunks: Vec<Bytes>) -> Result<(), IngestError> {
        let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        let new_len = self.written + len;
        if let Some(limit) = self.limit.filter(|&l| new_len > l) {
            return Err(IngestError::TooLarge { expected: limit });
        }
        if len <= INLINE_MAX {
            write_at(&self.file, &chunks, self.written)?;
            for c in &chunks {
                self.sha256.update(c);
                if let Some(sha1) = &mut self.sha1 {
                    sha1.update(c);
                }
            }
        } else {
            self.write_split(chunks, len)?;
        }
        self.written = new_len;
        self.start_writeback();
        Ok(())
    }

    /// [`Ingest::write_chunks`] of a large batch, half on the sidecar.
    fn write_split(&mut self, chunks: Vec<Bytes>, len: u64) -> io::Result<()> {
        // Split the bytes in two halves: ours [..split], the sidecar's
        // [split..]; without SHA-1 all the writes are the sidecar's.
        let (mut split, mut first_half) = (0, 0u64);
        while self.sha1.is_some() && split < chunks.len() && first_half * 2 < len {
            first_half += chunks[split].len() as u64;
            split += 1;
        }
        let ours = chunks[..split].to_vec(); // Bytes clones: reference counts
        let all = chunks.clone();
        let job = Job {
            chunks,
            write_from: split,
            offset: self.written + first_half,
            sha1: self.sha1.take(),
        };
        let (file, sha256, offset) = (&self.file, &mut self.sha256, self.written);
        let had_sha1 = job.sha1.is_some();
        let sidecar = self.sidecar.as_ref().expect("sidecar present until commit");
        let (result, sha1) = sidecar.run(job, || {
            let written = write_at(file, &ours, offset);
            all.iter().for_each(|c| sha256.update(c));
            written
        });
        // Without its state back the SHA-1 is lost: the ingest has failed.
        self.sha1 = sha1
            .filter(|back| back.is_some() == had_sha1)
            .ok_or_else(|| io::Error::other("ingest thread ended"))?;
        result
    }

    /// Starts writing the last [`WRITEBACK_STEP`] of bytes to disk without
    /// waiting for it, so that the commit's `fsync` finds little left to do.
    /// Left to the end, the fsync of a 512 MiB file took 170-200 ms here,
    /// with one core busy and the other idle; started as the bytes arrive,
    /// the same disk writes overlap the download.
    fn start_writeback(&mut self) {
        if self.written - self.flushed < WRITEBACK_STEP {
            return;
        }
        let (from, len) = (self.flushed, self.written - self.flushed);
        self.flushed = self.written;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid descriptor and an in-file range; the call only
            // queues writeback. Failure is harmless: the fsync does it all.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    from as libc::off64_t,
                    len as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (from, len);
    }

    /// Verifies size and digests, fsyncs and publishes. A mismatch moves the
    /// temp file to quarantine; any error leaves nothing in the store.
    pub fn commit(mut self, expected: &Expected) -> Result<Ingested, IngestError> {
        self.sidecar.take(); // stops its thread
        let got = Ingested {
            sha1: self
                .sha1
                .take()
                .map(|h| Sha1Digest::from_slice(&h.finalize()).expect("20 bytes")),
            sha256: Sha256Digest::from_slice(&self.sha256.clone().finalize()).expect("32 bytes"),
            size: self.written,
        };
        if let Err(e) = verify(expected, &got) {
            self.quarantine(&got);
            return Err(e);
        }
        self.file.sync_all()?;
        self.store.publish(&self.path, &got.sha256)?;
        self.path = PathBuf::new(); // published: nothing left for Drop to delete
        Ok(got)
    }

    /// Publishes bytes no digest from elsewhere can check (a Delivery
    /// Optimization object the catalog knows nothing of) under the SHA-256
    /// computed on the way in, after checking the size when one is known.
    /// The caller records them as unverified; [`Ingest::commit`] is for
    /// everything else.
    pub fn commit_unverified(mut self, size: Option<u64>) -> Result<Ingested, IngestError> {
        self.sidecar.take();
        let got = Ingested {
            sha1: None,
            sha256: Sha256Digest::from_slice(&self.sha256.clone().finalize()).expect("32 bytes"),
            size: self.written,
        };
        if let Some(expected) = size.filter(|&s| s != got.size) {
            self.quarantine(&got);
            return Err(IngestError::SizeMismatch {
                expected,
                got: got.size,
            });
        }
        self.file.sync_all()?;
        self.store.publish(&self.path, &got.sha256)?;
        self.path = PathBuf::new();
        Ok(got)
    }

    fn quarantine(&mut self, got: &Ingested) {
        let label = got.sha1.map_or_else(|| got.sha256.to_hex(), |d| d.to_hex());
        match self.store.quarantine(&self.path, &label) {
            Ok(Some(dest)) => {
                tracing::warn!(path = %dest.display(), "quarantined a download that failed verification");
                self.path = PathBuf::new();
            }
            Ok(None) => tracing::warn!(
                bytes = got.size,
                "a download failed verification; larger than the quarantine holds, deleted"
            ),
            Err(e) => tracing::error!(error = %e, "could not quarantine; deleting instead"),
        }
    }
}

/// Checks every expected fact that was computed; at least one digest must
/// be among them.
fn verify(expected: &Expected, got: &Ingested) -> Result<(), IngestError> {
    let sha1_checked = expected.sha1.is_some() && got.sha1.is_some();
    if !sha1_checked && expected.sha256.is_none() {
        return Err(IngestError::NothingToVerify);
    }
    if let Some(size) = expected.size.filter(|&s| s != got.size) {
        return Err(IngestError::SizeMismatch {
            expected: size,
            got: got.size,
        });
    }
    if let (Some(want), Some(sha1)) = (expected.sha1, got.sha1) {
        if want != sha1 {
            return Err(IngestError::DigestMismatch {
                algorithm: "SHA-1",
                expected: want.to_hex(),
                got: sha1.to_hex(),
            });
        }
    }
    if let Some(sha256) = expected.sha256.filter(|d| *d != got.sha256) {
        return Err(IngestError::DigestMismatch {
            algorithm: "SHA-256",
            expected: sha256.to_hex(),
            got: got.sha256.to_hex(),
        });
    }
    Ok(())
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.sidecar.take();
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Storage;

    fn digests(data: &[u8]) -> (Sha1Digest, Sha256Digest) {
        (
            Sha1Digest::from_slice(&sha1::Sha1::digest(data)).unwrap(),
            Sha256Digest::from_slice(&sha2::Sha256::digest(data)).unwrap(),
        )
    }

    #[test]
    fn commit_publishes_verified_bytes_under_their_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 16).unwrap();
        let data = b"hello update".repeat(1000);
        let (sha1, sha256) = digests(&data);
        let mut ingest = store.clone().begin_ingest().unwrap();
        ingest.write(&data[..100]).unwrap();
        ingest.write(&data[100..]).unwrap();
        let got = ingest
            .commit(&Expected {
                size: Some(data.len() as u64),
                sha1: Some(sha1),
                sha256: None,
            })
            .unwrap();
        assert_eq!(got.sha256, sha256);
        assert_eq!(&store.open_bytes(&sha256).unwrap().unwrap()[..], &data[..]);
        assert!(store.temp_files().is_empty());
        assert_eq!(store.published(), vec![sha256]);
    }

    /// Writes `data` in batches under and over the inline limit, of one
    /// chunk or several.
    fn write_in_mixed_batches(ingest: &mut Ingest, data: &[u8]) {
        let cuts = [0, 10_000, 400_000, 1_100_000, 1_110_000, data.len()];
        for (i, w) in cuts.windows(2).enumerate() {
            let part = Bytes::copy_from_slice(&data[w[0]..w[1]]);
            let chunks = if i % 2 == 1 {
                let third = part.len() / 3;
                vec![
                    part.slice(..third),
                    part.slice(third..third + 5),
                    part.slice(third + 5..),
                ]
            } else {
                vec![part]
            };
            ingest.write_chunks(chunks).unwrap();
        }
    }

    fn mixed_data() -> Vec<u8> {
        (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn small_and_split_batches_hash_and_write_as_one_stream() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 16).unwrap();
        let data = mixed_data();
        let (sha1, sha256) = digests(&data);
        let mut ingest = store.clone().begin_ingest().unwrap();
        write_in_mixed_batches(&mut ingest, &data);
        let got = ingest
            .commit(&Expected {
                size: Some(data.len() as u64),
                sha1: Some(sha1),
                sha256: Some(sha256),
            })
            .unwrap();
        assert_eq!((got.sha1, got.sha256), (Some(sha1), sha256));
        assert_eq!(&store.open_bytes(&sha256).unwrap().unwrap()[..], &data[..]);
    }

    #[test]
    fn without_sha1_the_sha256_alone_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 16).unwrap();
        let data = mixed_data();
        let (sha1, sha256) = digests(&data);
        let expected = Expected {
            size: Some(data.len() as u64),
            sha1: Some(sha1),
            sha256: Some(sha256),
        };
        let mut ingest = store.clone().begin_ingest().unwrap();
        ingest.without_sha1();
        write_in_mixed_batches(&mut ingest, &data);
        let got = ingest.commit(&expected).unwrap();
        assert_eq!((got.sha1, got.sha256), (None, sha256));
        assert_eq!(&store.open_bytes(&sha256).unwrap().unwrap()[..], &data[..]);

        // One byte changed: the SHA-256 alone catches it.
        let mut bad = data.clone();
        bad[2_000_000] ^= 1;
        let mut ingest = store.clone().begin_ingest().unwrap();
        ingest.without_sha1();
        write_in_mixed_batches(&mut ingest, &bad);
        let err = ingest.commit(&expected).unwrap_err();
        assert!(
            matches!(
                err,
                IngestError::DigestMismatch {
                    algorithm: "SHA-256",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(store.published(), vec![sha256]);
        assert_eq!(store.quarantined().len(), 1);
    }

    #[test]
    fn without_sha1_a_known_sha1_alone_verifies_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 16).unwrap();
        let (sha1, _) = digests(b"bytes");
        let mut ingest = store.clone().begin_ingest().unwrap();
        ingest.without_sha1();
        ingest.write(b"bytes").unwrap();
        let expected = Expected {
            size: None,
            sha1: Some(sha1),
            sha256: None,
        };
        assert!(matches!(
            ingest.commit(&expected),
            Err(IngestError::NothingToVerify)
        ));
        assert!(store.published().is_empty());
        assert!(store.temp_files().is_empty());
    }

    #[test]
    fn mismatch_is_quarantined_and_never_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 16).unwrap();
        let (sha1, sha256) = digests(b"the real bytes");
        let mut ingest = store.clone().begin_ingest().unwrap();
        ingest.write(b"the fake bytes").unwrap();
        let err = ingest
            .commit(&Expected {
                size: None,
                sha1: Some(sha1),
                sha256: None,
            })
            .unwrap_err();
        assert!(err.is_verification_failure(), "{err}");
        assert!(store.published().is_empty());
        assert!(!store.contains(&sha256));
        assert_eq!(store.quarantined().len(), 1);
        assert!(store.temp_files().is_empty());
    }

    #[test]
    fn dropping_an_ingest_deletes_its_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 16).unwrap();
        let mut ingest = store.clone().begin_ingest().unwrap();
        ingest.write(b"partial").unwrap();
        assert_eq!(store.temp_files().len(), 1);
        drop(ingest);
        assert!(store.temp_files().is_empty());
    }

    #[test]
    fn writes_beyond_the_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 16).unwrap();
        let mut ingest = store.clone().begin_ingest().unwrap();
        ingest.limit_size(4);
        ingest.write(b"1234").unwrap();
        assert!(matches!(
            ingest.write(b"5"),
            Err(IngestError::TooLarge { expected: 4 })
        ));
    }

    #[test]
    fn leftover_temp_files_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path(), 16).unwrap();
        let ingest = store.clone().begin_ingest().unwrap();
        std::mem::forget(ingest); // as if the process died mid-write
        assert_eq!(store.temp_files().len(), 1);
        let reopened = DiskStore::open(dir.path(), 16).unwrap();
        assert!(reopened.temp_files().is_empty());
    }
}
