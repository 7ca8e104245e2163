//! Fixtures for remedy's integration tests: upstream servers, a config builder, a remedy
//! launcher, a scrape reader and a raw HTTP/1.1 client. Everything listens on 127.0.0.1:0 and waits for
//! readiness by polling.

pub mod client;
pub mod config;
pub mod launcher;
pub mod scrape;
pub mod tools;
pub mod tunnel;
pub mod upstream;

pub use client::{raw, read_one, request, send};
pub use config::{Config, source};
pub use launcher::Remedy;
pub use scrape::Scrape;
pub use upstream::{Answer, GrpcEnd, Upstream};

use std::time::{Duration, Instant};

/// Polls `check` every 20 ms until it returns `Some`, or panics after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
