//! remedy: a Prometheus exporter sidecar for data connectors. The connector's API calls go
//! through remedy's proxy; every response is counted by source, status and the FAQ's
//! remediation key.
//!
//! Data flows one way: [`server`] accepts on the proxy listener ([`proxy::listener`] watches
//! each connection's bytes), [`proxy::route`] picks the source, [`proxy`] runs the request's
//! phases and forwards through [`proxy::upstream`], and hands a [`metrics::Outcome`] to the
//! [`metrics::Recorder`]. [`admin`] serves what [`artifacts`] generate from the catalog and
//! config.

pub mod admin;
pub mod artifacts;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod descriptors;
pub mod endpoints;
pub mod intercept_ca;
pub mod metrics;
pub mod observe;
pub mod pem;
pub mod proxy;
pub mod server;
pub mod sidecar;

/// The crate version, the `version` label of `remedy_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision the binary was built from (`build.rs`): the image build's
/// `REMEDY_REVISION`, the checkout's `HEAD`, or `unknown`.
pub const REVISION: &str = env!("REMEDY_REVISION");

/// What `remedy --version` prints after the name: the version and the revision.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("REMEDY_REVISION"),
    ")"
);
