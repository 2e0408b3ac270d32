//! Transport, shared by the content and admin listeners: accepting
//! connections under a cap, who a client is (PROXY protocol from a trusted
//! balancer) and whether it may come in, TLS, PEM files, and hyper's
//! HTTP/1.1 and h2 with every wait bounded. What is said over a connection
//! is the services' business (`http`, `admin`).

mod answer;
mod connection;
pub mod pem;
pub mod proxy_protocol;
mod rewind;
mod watch;
pub mod tls;

pub use connection::{
    serve, ConnService, Exit, FastPath, Front, Gate, Limits, Peer, ResponseBody, MAX_HEAD_BYTES,
};
pub use rewind::Rewind;

use std::time::Duration;

/// A client that sends no complete request head in this time is dropped
/// (slow-loris clients; on HTTP/1.1 hyper's timer also runs while a
/// keep-alive connection waits for its next request).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection with no request in flight for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections held at once on one listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// A response whose client takes no bytes for this long is cut.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections one address may hold on one listener.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
