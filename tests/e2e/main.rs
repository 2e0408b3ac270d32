//! Black-box tests: a real upstream and a real upcache on loopback, driven
//! over HTTP (and the CLI binary where it matters).

mod access_log;
mod admin;
mod browser;
mod common;
mod console;
mod content;
mod crash;
mod dashboard;
mod delivery;
mod disk;
mod docs;
mod fake_wsus;
mod fast_path;
mod faults;
mod fetch;
mod fleet;
mod follow;
mod maintenance;
mod network;
mod package_xml;
mod policy;
mod protocols;
mod proxy_protocol;
mod quota;
mod redbot;
mod report_forwarding;
mod server_sync;
mod service;
mod shared;
mod slots;
mod sync_upstream;
mod tls;
mod update_server;
mod waits;
mod windows;
