//! What the server tells its operators: Prometheus metrics ([`metrics`])
//! and the access log ([`access_log`]).

pub mod access_log;
pub mod metrics;
