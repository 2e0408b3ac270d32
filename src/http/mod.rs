//! The content listener: what Windows clients talk to.
//!
//! `route` turns a path into a digest, `content` runs the request through
//! catalog, policy, store and fetch, `range` and `conditional` implement the
//! RFC 9110 semantics, `body` builds zero-copy bodies, `plan` is a response both
//! writers send, `fast` is the HTTP/1.1 `sendfile` path (plugged into
//! `net` as its [`crate::net::FastPath`]), `observe` records each answer,
//! `error` maps every module's errors to status codes.

pub mod body;
pub mod conditional;
pub mod content;
pub mod error;
pub mod fast;
pub mod observe;
pub mod plan;
pub mod range;
pub mod route;
mod settings;

pub use settings::ContentSettings;

/// A request the content service does not take, whatever it names.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("an HTTP/1.1 request needs one valid Host header")]
    Host,
    #[error("only GET and HEAD are served here")]
    Method,
}

/// Whether a request's `Host` fields are what RFC 9112 §3.2 requires of
/// it, whose answer otherwise MUST be 400 (as nginx's is): exactly one in an
/// HTTP/1.1 request, never two, and none malformed. An empty value is
/// allowed (a target without an authority); `@`, `/`, spaces and controls
/// are not.
pub fn host_fields_valid<'a>(http_1_1: bool, mut hosts: impl Iterator<Item = &'a [u8]>) -> bool {
    match (hosts.next(), hosts.next()) {
        (None, _) => !http_1_1,
        (Some(host), None) => host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b)),
        (Some(_), Some(_)) => false,
    }
}
