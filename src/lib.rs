//! upcache: a caching proxy for Windows update files.
//!
//! The map of the house:
//!
//! - **A request's way.** `net` accepts the connection (cap, PROXY header,
//!   allow list, TLS) and runs hyper or, for plain HTTP/1.1, the `http::fast`
//!   path. `http::route` turns the path into a digest, `http::content` looks
//!   it up in the `catalog`'s in-memory index and asks `policy` what to do;
//!   a stored file is sent from the `store`, a missing one is joined to its
//!   download in `fetch`. `http::plan`, `range` and `conditional` shape the
//!   answer; `telemetry` counts and logs it.
//! - **A download's way.** `fetch` runs one single-flight download per file:
//!   from the shared tier (`fetch::shared`, over `store::s3`) or the upstream
//!   (`fetch::upstream`, `transfer`, `throttle`), streamed to every waiting
//!   client, verified and committed by `store::ingest`, then shared.
//!   `upkeep` keeps the store within its quota, scrubs it, cleans it.
//! - **A sync's way.** `admin` (the admin API and console, driven by `cli`)
//!   imports catalogs into `catalog` (package.xml, wsusscn2.cab, JSON, or
//!   another upcache's export); a follower's `node::follow` pulls its
//!   primary's changes the same way. After each, `node::App` replans the
//!   background downloads the policy asks for. `wsus::sync` pulls update
//!   metadata from an upstream over [MS-WSUSSS] into `metadata` (whole
//!   documents, stable revision ids) and projects new updates into `catalog`.
//! - **A scan's way.** A Windows client's [MS-WUSP] calls reach
//!   `wsus::client` on the content listener (`server` routes its paths
//!   there): cookies, the `SyncUpdates` pages over `metadata`, approvals
//!   from `catalog`, file locations that point back at the content paths,
//!   computers and their reports.
//! - **Who needs what.** `fleet` keeps the computers, the groups they are
//!   in (the groups and approvals per group are the `catalog`'s), and the
//!   state of every update on each, moved by their reports; `admin` shows
//!   it and exports the compliance report.
//!
//! `server` wires it all up; `config` merges file, environment and flags.

pub mod admin;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod digest;
pub mod fetch;
pub mod fleet;
pub mod http;
pub mod metadata;
pub mod net;
pub mod node;
pub mod policy;
pub mod server;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod upkeep;
pub mod wsus;
