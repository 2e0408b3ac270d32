//! The storage policy and the decision it makes for every content request.
//!
//! Pure: given the policy and what the catalog and store know of a file, say
//! what to do. Everything that acts on the decision lives in `http` and `fetch`.

use serde::{Deserialize, Serialize};

use crate::digest::Sha256Digest;

/// Whether upcache keeps file bytes at all (the WSUS 3.0 choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Only metadata: clients are sent to the upstream for bytes.
    MetadataOnly,
    /// Files are stored here and served from the store.
    #[default]
    StoreLocally,
}

/// When a stored file is downloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Download {
    /// Lazily, on the first request after the update is approved.
    #[default]
    OnApproval,
    /// Every file of every non-declined update, when the catalog is imported.
    AtSync,
}

/// The administrator's storage policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub download: Download,
    /// Download an update's files in the background as soon as it is approved.
    #[serde(default)]
    pub prefetch_on_approve: bool,
}

impl Policy {
    /// Whether files are fetched without a client asking (at import time).
    pub fn downloads_at_sync(&self) -> bool {
        self.mode == Mode::StoreLocally && self.download == Download::AtSync
    }

    /// Whether approving an update should start fetching its files.
    pub fn downloads_on_approve(&self) -> bool {
        self.mode == Mode::StoreLocally && self.prefetch_on_approve
    }

    /// Whether a stored file with this approval is kept by a cleanup:
    /// approved ones in every mode (switching back from metadata-only
    /// serves them again), and whatever would be downloaded again at once.
    pub fn keeps_stored(&self, approval: Approval) -> bool {
        approval == Approval::Approved || self.fetches_in_background(approval)
    }

    /// Whether a missing file with this approval is downloaded in the
    /// background: every non-declined one at sync, approved ones with
    /// `prefetch_on_approve`, none in metadata-only mode.
    pub fn fetches_in_background(&self, approval: Approval) -> bool {
        self.mode == Mode::StoreLocally
            && match approval {
                Approval::Declined => false,
                Approval::Approved => self.download == Download::AtSync || self.prefetch_on_approve,
                Approval::NotApproved => self.download == Download::AtSync,
            }
    }
}

/// What the catalog says about the updates that reference a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// At least one referencing update is approved.
    Approved,
    /// None approved, and at least one is neither approved nor declined.
    NotApproved,
    /// Every referencing update is declined.
    Declined,
}

/// What the decision needs to know of a file (the catalog knows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub approval: Approval,
    /// Published in the store under this SHA-256; `None`: not stored, or
    /// stored under a name not known yet (then it is fetched, never served
    /// blind).
    pub stored: Option<Sha256Digest>,
}

/// Why a file is not served; the message is shown to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No catalog entry knows the file.
    #[error("no update contains this file")]
    NotFound,
    /// Known, but every update that contains it is declined.
    #[error("every update that contains this file is declined")]
    Declined,
    /// Known, but no update that contains it is approved.
    #[error("no approved update contains this file")]
    NotApproved,
}

/// What to do with a content request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not served: unknown, or not approved.
    Refused(Refusal),
    /// Metadata-only: send the client to the file's upstream URL.
    Redirect,
    /// Serve the stored bytes, published under this SHA-256.
    Serve(Sha256Digest),
    /// Not stored yet: start (or join) the upstream fetch and stream it.
    Fetch,
}

/// The decision table of the design, in one place.
///
/// Metadata-only redirects even when bytes happen to be stored (from an
/// earlier store-locally period): the administrator chose to have clients
/// download from Microsoft, and that is what WSUS does too.
pub fn decide(policy: &Policy, file: Option<Known>) -> Decision {
    let Some(file) = file else {
        return Decision::Refused(Refusal::NotFound);
    };
    match file.approval {
        Approval::Declined => return Decision::Refused(Refusal::Declined),
        Approval::NotApproved => return Decision::Refused(Refusal::NotApproved),
        Approval::Approved => {}
    }
    match (policy.mode, file.stored) {
        (Mode::MetadataOnly, _) => Decision::Redirect,
        (Mode::StoreLocally, Some(sha256)) => Decision::Serve(sha256),
        (Mode::StoreLocally, None) => Decision::Fetch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORE: Policy = Policy {
        mode: Mode::StoreLocally,
        download: Download::OnApproval,
        prefetch_on_approve: false,
    };
    const META: Policy = Policy {
        mode: Mode::MetadataOnly,
        download: Download::OnApproval,
        prefetch_on_approve: false,
    };

    const SHA256: Sha256Digest = Sha256Digest([2; 32]);

    /// A file with this approval, stored or not.
    fn file(approval: Approval, stored: bool) -> Option<Known> {
        Some(Known {
            approval,
            stored: stored.then_some(SHA256),
        })
    }

    #[test]
    fn unknown_files_are_not_found_in_every_mode() {
        let not_found = Decision::Refused(Refusal::NotFound);
        assert_eq!(decide(&STORE, None), not_found);
        assert_eq!(decide(&META, None), not_found);
    }

    #[test]
    fn unapproved_or_declined_files_are_forbidden_in_every_mode() {
        for p in [STORE, META] {
            for stored in [false, true] {
                assert_eq!(
                    decide(&p, file(Approval::NotApproved, stored)),
                    Decision::Refused(Refusal::NotApproved)
                );
                assert_eq!(
                    decide(&p, file(Approval::Declined, stored)),
                    Decision::Refused(Refusal::Declined)
                );
            }
        }
    }

    #[test]
    fn approved_files_follow_the_mode() {
        let (absent, stored) = (
            file(Approval::Approved, false),
            file(Approval::Approved, true),
        );
        assert_eq!(decide(&META, absent), Decision::Redirect);
        assert_eq!(decide(&META, stored), Decision::Redirect);
        assert_eq!(decide(&STORE, absent), Decision::Fetch);
        assert_eq!(decide(&STORE, stored), Decision::Serve(SHA256));
    }

    #[test]
    fn a_cleanup_keeps_approved_files_and_what_would_be_fetched_again() {
        let at_sync = Policy {
            download: Download::AtSync,
            ..STORE
        };
        let meta_at_sync = Policy {
            download: Download::AtSync,
            ..META
        };
        for p in [STORE, META, at_sync, meta_at_sync] {
            assert!(p.keeps_stored(Approval::Approved), "{p:?}");
            assert!(!p.keeps_stored(Approval::Declined), "{p:?}");
        }
        assert!(at_sync.keeps_stored(Approval::NotApproved));
        for p in [STORE, META, meta_at_sync] {
            assert!(!p.keeps_stored(Approval::NotApproved), "{p:?}");
        }
    }

    #[test]
    fn policy_json_uses_the_design_names() {
        let p: Policy = serde_json::from_str(
            r#"{"mode":"store-locally","download":"at-sync","prefetch_on_approve":true}"#,
        )
        .unwrap();
        assert!(p.downloads_at_sync());
        assert!(serde_json::from_str::<Policy>(r#"{"mode":"sometimes"}"#).is_err());
        assert!(serde_json::from_str::<Policy>(r#"{"modes":"metadata-only"}"#).is_err());
    }

    #[test]
    fn background_downloads_follow_mode_download_and_prefetch() {
        use Approval::*;
        let at_sync = Policy {
            download: Download::AtSync,
            ..STORE
        };
        let prefetch = Policy {
            prefetch_on_approve: true,
            ..STORE
        };
        let meta_at_sync = Policy {
            download: Download::AtSync,
            prefetch_on_approve: true,
            ..META
        };
        for (policy, approved, not_approved, declined) in [
            (STORE, false, false, false),
            (prefetch, true, false, false),
            (at_sync, true, true, false),
            (meta_at_sync, false, false, false),
        ] {
            assert_eq!(
                policy.fetches_in_background(Approved),
                approved,
                "{policy:?}"
            );
            assert_eq!(
                policy.fetches_in_background(NotApproved),
                not_approved,
                "{policy:?}"
            );
            assert_eq!(
                policy.fetches_in_background(Declined),
                declined,
                "{policy:?}"
            );
        }
    }
}
