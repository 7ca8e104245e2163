//! remedy's integration tests, one module per behaviour users rely on, in one test binary
//! (one link instead of one per file). Each test starts real listeners on 127.0.0.1:0: the
//! remedy binary, upstream fixtures, and Prometheus's own tools where a test names them.
//! `alloc` has a binary of its own, since it installs a counting global allocator.

mod support;

mod admin_security;
mod bad_requests;
mod body_errors;
mod config_errors;
mod config_props;
mod counting;
mod descriptors;
mod e2e;
mod failures;
mod first_steps;
mod forwarding;
mod fuzz;
mod generated;
mod grpc;
mod helm;
mod http2;
mod intercept;
mod lifecycle;
mod limits;
mod logs;
mod pooling;
mod routes;
mod series;
mod streaming;
