//! remedy: a Prometheus exporter sidecar for data connectors. The connector's API calls go
//! through remedy's proxy; every response is counted by source, status and the FAQ's
//! remediation key.
//!
//! Data flows one way: [`server`] accepts, [`route`] picks the source, [`proxy`] forwards
//! through [`upstream`] and hands an [`metrics::Outcome`] to the [`metrics::Recorder`].

pub mod admin;
pub mod ca;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod connector_body;
pub mod dashboard;
pub mod deadline;
pub mod drain;
pub mod framing;
pub mod memory;
pub mod metrics;
pub mod pem;
pub mod pool;
pub mod proxy;
pub mod ratelimit;
pub mod redact;
pub mod route;
pub mod rules;
pub mod runbook;
pub mod server;
pub mod upstream;
pub mod webconfig;

/// The crate version, the `version` label of `remedy_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision the binary was built from, when the build knew it (`REMEDY_REVISION`).
pub const REVISION: &str = match option_env!("REMEDY_REVISION") {
    Some(r) => r,
    None => "unknown",
};
