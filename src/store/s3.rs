//! The shared tier: an S3-compatible object store (AWS, SeaweedFS, MinIO,
//! Ceph RGW) behind every node's local disk.
//!
//! - A verified file is uploaded under `<prefix>/sha256/ab/cd/<hex>`
//!   (multipart past `PART`: S3 shows an object only once it is
//!   complete), then a marker `<prefix>/sha1/<hex>` holding its SHA-256 and
//!   size, so that a node whose catalog knows only the SHA-1 (Microsoft's
//!   catalogs give no SHA-256) finds it by one GET, with no bucket listing.
//! - On a local miss, [`S3Tier::locate`] answers with a presigned URL of
//!   the object, which the fetcher downloads like any upstream: streamed to
//!   every waiting client as it lands, ranges and resumption included,
//!   verified, and kept in the local tier (which `max_store_bytes` bounds;
//!   S3 keeps everything). Only a file absent from both comes from the origin.
//! - S3 down is degraded, not down: a failed lookup is a miss (the origin
//!   serves), a failed upload leaves the file local only; both are logged
//!   and counted, and every call is bounded by short timeouts and few retries.
//!
//! - A Delivery Optimization object (no catalog names it) is uploaded the
//!   same way under its SHA-256, with a marker `<prefix>/do/<key>` naming
//!   its SHA-256, size and its origin's validators, so that a node asked
//!   for the key finds it by one GET ([`S3Tier::locate_object`]).
//!
//! Credentials follow the AWS conventions (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, ...); addressing is path-style.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, PutPayload, RetryConfig};

use crate::digest::{Sha1Digest, Sha256Digest};

/// Parts of a multipart upload (S3's minimum is 5 MiB).
const PART: usize = 16 << 20;
/// How long a presigned URL stays valid: longer than any download.
const URL_LIFETIME: Duration = Duration::from_secs(6 * 3600);

/// Why a call to the object store failed.
#[derive(Debug, thiserror::Error)]
#[error("S3 {op}: {source}")]
pub struct S3Error {
    op: &'static str,
    #[source]
    source: object_store::Error,
}

/// Where the shared tier is (`s3_*` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `http(s)://host:port`; `None` for AWS itself.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    /// Key prefix, without slashes at either end ("" for none).
    pub prefix: String,
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, read once at start;
    /// `None`: whatever else the AWS conventions provide (instance roles...).
    pub credentials: Option<S3Credentials>,
}

/// The shared tier's keys (`s3_*`): on when a bucket is named.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(default)]
pub struct SharedTierSettings {
    /// The shared tier: an S3-compatible bucket behind every node's local
    /// disk (SeaweedFS, MinIO, Ceph RGW or AWS; path-style addressing).
    /// Verified files are uploaded under `<prefix>/sha256/ab/cd/<hex>`; a
    /// node missing a file locally takes it from there before asking the
    /// origin. Credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in
    /// the environment (for the service: `systemctl edit upcache`,
    /// Environment=...). Unset: no shared tier.
    #[schemars(example = &"upcache")]
    pub s3_bucket: Option<String>,
    /// S3-compatible endpoint of the shared tier (unset: AWS).
    #[schemars(example = &"http://seaweedfs.corp.example:8333")]
    pub s3_endpoint: Option<String>,
    /// Region of the bucket.
    pub s3_region: String,
    /// Key prefix inside the bucket (unset: none).
    #[schemars(example = &"site-a")]
    pub s3_prefix: Option<String>,
    /// A key pair given by a program (tests); unset, the environment's.
    #[serde(skip)]
    #[schemars(skip)]
    pub credentials: Option<S3Credentials>,
}

impl Default for SharedTierSettings {
    fn default() -> Self {
        SharedTierSettings {
            s3_bucket: None,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_prefix: None,
            credentials: None,
        }
    }
}

impl SharedTierSettings {
    /// The tier these keys describe; `None`: no bucket, no shared tier. An
    /// endpoint, region or prefix without a bucket is a mistake worth
    /// stopping for.
    pub fn tier(&self) -> Result<Option<S3Settings>, crate::settings::Invalid> {
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let (endpoint, prefix) = (nonempty(&self.s3_endpoint), nonempty(&self.s3_prefix));
        let Some(bucket) = nonempty(&self.s3_bucket) else {
            if endpoint.is_some() || prefix.is_some() {
                return Err(crate::settings::Invalid::new(
                    "s3_bucket",
                    "s3_endpoint or s3_prefix is set but no bucket: name one (UPCACHE_S3_BUCKET)",
                ));
            }
            return Ok(None);
        };
        if let Some(e) = &endpoint {
            crate::settings::opt_http_url::parse(e)
                .map_err(|m| crate::settings::Invalid::new("s3_endpoint", m))?;
        }
        let env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        let from_env = || match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(key_id), Some(secret)) => Some(S3Credentials { key_id, secret }),
            _ => None,
        };
        Ok(Some(S3Settings {
            endpoint,
            bucket,
            region: match self.s3_region.trim() {
                "" => "us-east-1".into(),
                region => region.to_owned(),
            },
            prefix: prefix.unwrap_or_default(),
            credentials: self.credentials.clone().or_else(from_env),
        }))
    }
}

/// A static key pair (never printed).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub key_id: String,
    pub secret: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Credentials({}, <secret>)", self.key_id)
    }
}

/// A file's object, as the bucket lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub sha256: Sha256Digest,
    pub size: u64,
    pub modified: SystemTime,
}

/// Markers read at once by [`S3Tier::marker_index`].
const MARKER_READS: usize = 16;

/// A file found in the shared tier.
#[derive(Debug, Clone)]
pub struct Located {
    pub sha256: Sha256Digest,
    pub size: u64,
    /// A presigned GET of the object.
    pub url: String,
}

/// What the bucket keeps beside a Delivery Optimization object, under
/// `<prefix>/do/<key>`: the SHA-256 its bytes are stored under, their size,
/// and the validators its origin gave, so that every node answers
/// `If-Range` with the origin's, whichever node fetched it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMarker {
    pub sha256: Sha256Digest,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// Longest marker read, of either kind (a few lines; anything longer is no
/// marker).
const MAX_MARKER: usize = 4096;

impl ObjectMarker {
    /// `<sha256 hex> <size>`, then `etag: <value>` and
    /// `last-modified: <value>` lines when known.
    pub fn to_text(&self) -> String {
        let mut text = format!("{} {}\n", self.sha256.to_hex(), self.size);
        if let Some(etag) = &self.etag {
            text.push_str(&format!("etag: {etag}\n"));
        }
        if let Some(lm) = &self.last_modified {
            text.push_str(&format!("last-modified: {lm}\n"));
        }
        text
    }

    /// Reads [`ObjectMarker::to_text`]'s form; `None` for anything else
    /// (the object is then fetched from its origin and the marker
    /// rewritten). Values are kept only if they could be header values.
    /// Pure and bounded (a bucket's bytes are not trusted): the fuzz
    /// target `s3_markers` calls it.
    pub fn parse(text: &[u8]) -> Option<ObjectMarker> {
        if text.len() > MAX_MARKER {
            return None;
        }
        let text = std::str::from_utf8(text).ok()?;
        let mut lines = text.lines();
        let (hex, size) = lines.next()?.split_once(' ')?;
        let mut marker = ObjectMarker {
            sha256: hex.parse().ok()?,
            size: size.trim().parse().ok()?,
            etag: None,
            last_modified: None,
        };
        let visible = |v: &str| !v.is_empty() && v.bytes().all(|b| (0x20..0x7f).contains(&b));
        for line in lines {
            let Some((name, value)) = line.split_once(": ") else {
                continue;
            };
            if !visible(value) {
                continue;
            }
            match name {
                "etag" => marker.etag = Some(value.to_owned()),
                "last-modified" => marker.last_modified = Some(value.to_owned()),
                _ => {}
            }
        }
        Some(marker)
    }
}

/// The shared tier's client.
pub struct S3Tier {
    store: Arc<AmazonS3>,
    prefix: String,
    bucket: String,
    endpoint: Option<String>,
}

impl S3Tier {
    /// A client for `settings`, with credentials from the environment.
    /// Nothing is contacted yet: a store that is down at start is degraded
    /// service, not a failed start.
    pub fn new(settings: &S3Settings) -> Result<S3Tier, S3Error> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_millis(500),
                    base: 2.0,
                },
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_timeout(Duration::from_secs(300)),
            );
        if let Some(c) = &settings.credentials {
            builder = builder
                .with_access_key_id(&c.key_id)
                .with_secret_access_key(&c.secret);
        }
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder.build().map_err(|source| S3Error {
            op: "setup",
            source,
        })?;
        Ok(S3Tier {
            store: Arc::new(store),
            prefix: settings.prefix.trim_matches('/').to_owned(),
            bucket: settings.bucket.clone(),
            endpoint: settings.endpoint.clone(),
        })
    }

    /// The endpoint (`None`: AWS itself).
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The bucket, for logs and status.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn key(&self, rest: String) -> Path {
        if self.prefix.is_empty() {
            Path::from(rest)
        } else {
            Path::from(format!("{}/{rest}", self.prefix))
        }
    }

    /// `<prefix>/sha256/ab/cd/<hex>`: the object of a file.
    pub fn object_key(&self, sha256: &Sha256Digest) -> Path {
        let hex = sha256.to_hex();
        self.key(format!("sha256/{}/{}/{hex}", &hex[0..2], &hex[2..4]))
    }

    /// `<prefix>/sha1/<hex>`: the marker naming a file's SHA-256 and size.
    pub fn marker_key(&self, sha1: &Sha1Digest) -> Path {
        self.key(format!("sha1/{}", sha1.to_hex()))
    }

    /// `<prefix>/do/<key>`: the marker of a Delivery Optimization object.
    pub fn object_marker_key(&self, key: &str) -> Path {
        self.key(format!("do/{key}"))
    }

    /// The file with this SHA-1 (and SHA-256, when the catalog knows it),
    /// if the shared tier has it; a presigned URL to download it from.
    pub async fn locate(
        &self,
        sha1: &Sha1Digest,
        sha256: Option<Sha256Digest>,
    ) -> Result<Option<Located>, S3Error> {
        let sha256 = match sha256 {
            Some(d) => d,
            None => match self.read_marker(sha1).await? {
                Some(d) => d,
                None => return Ok(None),
            },
        };
        self.locate_sha256(sha256).await
    }

    /// The Delivery Optimization object of `key` (an object key of the DO
    /// wing), if a node uploaded it: where to download it, and its marker.
    pub async fn locate_object(
        &self,
        key: &str,
    ) -> Result<Option<(Located, ObjectMarker)>, S3Error> {
        let Some(marker) = self.read_object_marker(key).await? else {
            return Ok(None);
        };
        Ok(self
            .locate_sha256(marker.sha256)
            .await?
            .filter(|found| found.size == marker.size)
            .map(|found| (found, marker)))
    }

    async fn read_object_marker(&self, key: &str) -> Result<Option<ObjectMarker>, S3Error> {
        read_object_marker(&self.store, &self.object_marker_key(key)).await
    }

    /// The object stored under `sha256`, if any, with a presigned URL.
    async fn locate_sha256(&self, sha256: Sha256Digest) -> Result<Option<Located>, S3Error> {
        let key = self.object_key(&sha256);
        let meta = match self.store.head(&key).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(S3Error { op: "head", source }),
        };
        let url = self
            .store
            .signed_url(reqwest::Method::GET, &key, URL_LIFETIME)
            .await
            .map_err(|source| S3Error { op: "sign", source })?;
        Ok(Some(Located {
            sha256,
            size: meta.size,
            url: url.to_string(),
        }))
    }

    async fn read_marker(&self, sha1: &Sha1Digest) -> Result<Option<Sha256Digest>, S3Error> {
        read_marker(&self.store, &self.marker_key(sha1)).await
    }

    /// Uploads a verified file (`bytes`, its whole content) unless the
    /// object is there already, then its SHA-1 marker. The object becomes
    /// visible only when complete.
    pub async fn upload(
        &self,
        sha1: &Sha1Digest,
        sha256: &Sha256Digest,
        bytes: Bytes,
    ) -> Result<bool, S3Error> {
        let marker = format!("{} {}\n", sha256.to_hex(), bytes.len());
        let uploaded = self.put_unless_present(sha256, bytes).await?;
        self.put_marker(&self.marker_key(sha1), marker).await?;
        Ok(uploaded)
    }

    /// Uploads a Delivery Optimization object (its whole content, stored
    /// under `marker.sha256`) unless there already, then its marker.
    pub async fn upload_object(
        &self,
        key: &str,
        marker: &ObjectMarker,
        bytes: Bytes,
    ) -> Result<bool, S3Error> {
        let uploaded = self.put_unless_present(&marker.sha256, bytes).await?;
        self.put_marker(&self.object_marker_key(key), marker.to_text())
            .await?;
        Ok(uploaded)
    }

    /// Removes a Delivery Optimization object's marker (and the object it
    /// named, which failed verification): the next node asked fetches it
    /// from its origin.
    pub async fn delete_object(&self, key: &str, sha256: &Sha256Digest) -> Result<(), S3Error> {
        self.delete_keys([self.object_marker_key(key), self.object_key(sha256)])
            .await
    }

    /// The SHA-256s the Delivery Optimization markers name: objects a
    /// cleanup of the bucket must keep (no catalog names them).
    pub async fn object_sha256s(&self) -> Result<std::collections::HashSet<Sha256Digest>, S3Error> {
        let listed: Vec<_> = self
            .store
            .list(Some(&self.key("do".into())))
            .try_collect()
            .await
            .map_err(|source| S3Error { op: "list", source })?;
        let store = self.store.clone();
        let read = futures_util::stream::iter(listed)
            .map(move |meta| {
                let store = store.clone();
                async move { read_object_marker(&store, &meta.location).await }
            })
            .buffer_unordered(MARKER_READS);
        let markers: Vec<_> = read.try_collect().await?;
        Ok(markers.into_iter().flatten().map(|m| m.sha256).collect())
    }

    /// Uploads `bytes` as the object of `sha256` unless it is there with
    /// that size; whether it uploaded.
    async fn put_unless_present(
        &self,
        sha256: &Sha256Digest,
        bytes: Bytes,
    ) -> Result<bool, S3Error> {
        let key = self.object_key(sha256);
        let present = match self.store.head(&key).await {
            Ok(meta) => meta.size == bytes.len() as u64,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(source) => return Err(S3Error { op: "head", source }),
        };
        if !present {
            self.put(&key, bytes).await?;
        }
        Ok(!present)
    }

    async fn put_marker(&self, key: &Path, text: String) -> Result<(), S3Error> {
        self.store
            .put(key, PutPayload::from(text))
            .await
            .map(|_| ())
            .map_err(|source| S3Error {
                op: "put marker",
                source,
            })
    }

    /// One PUT for a small file; a multipart upload of [`PART`]-sized
    /// slices of the (mapped) file otherwise: no copy of the file in memory.
    async fn put(&self, key: &Path, bytes: Bytes) -> Result<(), S3Error> {
        if bytes.len() <= PART {
            self.store
                .put(key, PutPayload::from(bytes))
                .await
                .map_err(|source| S3Error { op: "put", source })?;
            return Ok(());
        }
        let mut upload = self
            .store
            .put_multipart(key)
            .await
            .map_err(|source| S3Error {
                op: "start multipart",
                source,
            })?;
        for start in (0..bytes.len()).step_by(PART) {
            let part = bytes.slice(start..(start + PART).min(bytes.len()));
            if let Err(source) = upload.put_part(PutPayload::from(part)).await {
                let _ = upload.abort().await;
                return Err(S3Error {
                    op: "put part",
                    source,
                });
            }
        }
        upload.complete().await.map_err(|source| S3Error {
            op: "complete multipart",
            source,
        })?;
        Ok(())
    }

    /// Every file's object in the bucket (under `<prefix>/sha256/`); keys
    /// that do not end in a SHA-256 are not upcache's and are left out.
    pub async fn list_files(&self) -> Result<Vec<Listed>, S3Error> {
        let listed: Vec<_> = self
            .store
            .list(Some(&self.key("sha256".into())))
            .try_collect()
            .await
            .map_err(|source| S3Error { op: "list", source })?;
        Ok(listed
            .into_iter()
            .filter_map(|meta| {
                let sha256 = meta.location.filename()?.parse().ok()?;
                let seconds = u64::try_from(meta.last_modified.timestamp()).unwrap_or(0);
                Some(Listed {
                    sha256,
                    size: meta.size,
                    modified: UNIX_EPOCH + Duration::from_secs(seconds),
                })
            })
            .collect())
    }

    /// The SHA-1 markers, read: which SHA-1 each object's SHA-256 is for.
    /// For files a catalog knows by SHA-1 only (Microsoft's), downloaded by
    /// another node. One GET per marker, a few at a time.
    pub async fn marker_index(&self) -> Result<HashMap<Sha256Digest, Sha1Digest>, S3Error> {
        let listed: Vec<_> = self
            .store
            .list(Some(&self.key("sha1".into())))
            .try_collect()
            .await
            .map_err(|source| S3Error { op: "list", source })?;
        let markers: Vec<(Path, Sha1Digest)> = listed
            .into_iter()
            .filter_map(|meta| {
                let sha1 = meta.location.filename()?.parse().ok()?;
                Some((meta.location, sha1))
            })
            .collect();
        let store = self.store.clone();
        let read = futures_util::stream::iter(markers)
            .map(move |(key, sha1)| {
                let store = store.clone();
                async move { Ok::<_, S3Error>((read_marker(&store, &key).await?, sha1)) }
            })
            .buffer_unordered(MARKER_READS);
        let pairs: Vec<_> = read.try_collect().await?;
        Ok(pairs
            .into_iter()
            .filter_map(|(sha256, sha1)| Some((sha256?, sha1)))
            .collect())
    }

    /// Removes a file's object, then its marker when the SHA-1 is known (a
    /// marker left naming a removed object is no copy: `locate` finds none).
    pub async fn delete(
        &self,
        sha1: Option<&Sha1Digest>,
        sha256: &Sha256Digest,
    ) -> Result<(), S3Error> {
        let marker = sha1.map(|sha1| self.marker_key(sha1));
        self.delete_keys(std::iter::once(self.object_key(sha256)).chain(marker))
            .await
    }

    /// Deletes keys in order; one already gone counts as deleted.
    async fn delete_keys(&self, keys: impl IntoIterator<Item = Path>) -> Result<(), S3Error> {
        for key in keys {
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => {
                    return Err(S3Error {
                        op: "delete",
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

/// The SHA-256 a SHA-1 marker names; `None` when there is no marker.
async fn read_marker(store: &AmazonS3, key: &Path) -> Result<Option<Sha256Digest>, S3Error> {
    Ok(get_marker(store, key)
        .await?
        .and_then(|text| parse_sha1_marker(&text)))
}

/// A SHA-1 marker's bytes, `<sha256 hex> <size>`: the SHA-256 they name.
/// `None` for anything else, or more than a marker's bound (the file is
/// then fetched, verified and uploaded again, rewriting it). Pure and
/// bounded: the fuzz target `s3_markers` calls it.
pub fn parse_sha1_marker(text: &[u8]) -> Option<Sha256Digest> {
    if text.len() > MAX_MARKER {
        return None;
    }
    std::str::from_utf8(text)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The marker of a Delivery Optimization object; `None` when there is none
/// or it is not one.
async fn read_object_marker(store: &AmazonS3, key: &Path) -> Result<Option<ObjectMarker>, S3Error> {
    Ok(get_marker(store, key)
        .await?
        .and_then(|text| ObjectMarker::parse(&text)))
}

/// A marker's bytes; `None` when there is none, or when it is larger than
/// any marker we write (a bucket is not trusted to bound it).
async fn get_marker(store: &AmazonS3, key: &Path) -> Result<Option<Bytes>, S3Error> {
    let got = match store.get(key).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(source) => {
            return Err(S3Error {
                op: "get marker",
                source,
            })
        }
    };
    if got.meta.size > MAX_MARKER as u64 {
        return Ok(None);
    }
    let text = got.bytes().await.map_err(|source| S3Error {
        op: "get marker",
        source,
    })?;
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_markers_round_trip_and_refuse_what_is_not_one() {
        let marker = ObjectMarker {
            sha256: "ab".repeat(32).parse().unwrap(),
            size: 12,
            etag: Some("\"v1\"".into()),
            last_modified: Some("Tue, 14 Nov 2023 22:13:20 GMT".into()),
        };
        assert_eq!(
            ObjectMarker::parse(marker.to_text().as_bytes()),
            Some(marker.clone())
        );
        let bare = ObjectMarker {
            etag: None,
            last_modified: None,
            ..marker
        };
        assert_eq!(
            ObjectMarker::parse(bare.to_text().as_bytes()),
            Some(bare.clone())
        );
        let text = format!("{} 12\netag: \"a\u{7f}\"\n", "ab".repeat(32));
        assert_eq!(
            ObjectMarker::parse(text.as_bytes()),
            Some(bare),
            "not a header value"
        );
        assert_eq!(ObjectMarker::parse(b"zz 12\n"), None);
        assert_eq!(ObjectMarker::parse(&vec![b'a'; MAX_MARKER + 1]), None);
    }

    #[test]
    fn sha1_markers_name_a_sha256_or_are_no_marker() {
        let sha256: Sha256Digest = "ab".repeat(32).parse().unwrap();
        let text = format!("{} 12\n", sha256.to_hex());
        assert_eq!(parse_sha1_marker(text.as_bytes()), Some(sha256));
        assert_eq!(parse_sha1_marker(b"zz 12\n"), None);
        assert_eq!(parse_sha1_marker(b""), None);
        assert_eq!(parse_sha1_marker(&[0xff, 0xfe]), None);
        let mut long = text.into_bytes();
        long.resize(MAX_MARKER + 1, b' ');
        assert_eq!(parse_sha1_marker(&long), None, "longer than any marker");
    }

    #[test]
    fn keys_are_content_addressed_under_the_prefix() {
        let settings = S3Settings {
            endpoint: Some("http://127.0.0.1:1".into()),
            bucket: "b".into(),
            region: "us-east-1".into(),
            prefix: "/upcache/".into(),
            credentials: Some(S3Credentials {
                key_id: "id".into(),
                secret: "hunter2".into(),
            }),
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
        let tier = S3Tier::new(&settings).unwrap();
        let sha256: Sha256Digest = "ab".repeat(32).parse().unwrap();
        let sha1: Sha1Digest = "cd".repeat(20).parse().unwrap();
        assert_eq!(
            tier.object_key(&sha256).as_ref(),
            format!("upcache/sha256/ab/ab/{}", "ab".repeat(32))
        );
        assert_eq!(
            tier.marker_key(&sha1).as_ref(),
            format!("upcache/sha1/{}", "cd".repeat(20))
        );
    }
}
