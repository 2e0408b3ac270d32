//! upcache: a caching proxy for Windows update files.
//!
//! A request flows `http` (route → digest) → `catalog` (in-memory index) →
//! `policy` (decision) → `store` (mapped file) or `fetch` (single-flight
//! download streamed to every waiting client, verified, committed to the
//! store). `admin` and `cli` drive the catalog and policy through `app`; `server`
//! wires it up.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod catalog;
pub mod cleanup;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod digest;
pub mod fetch;
pub mod follow;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod quota;
pub mod scrub;
pub mod server;
pub mod store;
