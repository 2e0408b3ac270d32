//! The content listener: what Windows clients talk to.
//!
//! `route` turns a path into a digest, `content` runs the request through
//! catalog, policy, store and fetch, `range` and `conditional` implement the
//! RFC 9110 semantics, `body` builds zero-copy bodies, `error` maps module
//! errors to status codes. [`serve`] is the connection plumbing of both
//! listeners (HTTP/1.1 with keep-alive and pipelining, and h2c), with every
//! wait bounded.

pub mod body;
pub mod conditional;
pub mod content;
pub mod error;
pub mod fast;
pub mod observe;
pub mod plan;
pub mod proxy_protocol;
pub mod range;
pub mod route;
pub mod tls;

mod connection;

pub use connection::{serve, ConnService, Front, Gate, Limits, Peer, ResponseBody};

use std::time::Duration;

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

/// A client that sends no complete request head in this time is dropped
/// (slow-loris clients; on HTTP/1.1 hyper's timer also runs while a
/// keep-alive connection waits for its next request).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection with no request in flight for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections held at once on one listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
