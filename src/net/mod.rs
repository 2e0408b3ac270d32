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
mod settings;
pub mod tls;
mod watch;

pub use connection::{
    serve, ConnService, Exit, FastPath, Front, Gate, Limits, Peer, ResponseBody, MAX_HEAD_BYTES,
};
pub use rewind::Rewind;
pub use settings::NetSettings;
