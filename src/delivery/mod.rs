//! Delivery Optimization (DO) content: `/filestreamingservice/files/<guid>`
//! objects, cached by their path alone (never the query, which holds DO's
//! short-lived token), fetched once from the origin the client names in
//! `cacheHostOrigin` after that origin has passed the administrator's
//! policy, and stored in the same content-addressed store as update files.
//!
//! - `path`: GUID paths → object keys.
//! - `origin`: `cacheHostOrigin` → a checked origin (patterns, networks).
//! - `resolve`: origin names resolved, checked and pinned for the connection.

pub mod index;
pub mod origin;
pub mod path;
pub mod resolve;
