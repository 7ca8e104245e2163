//! Upstream connections are kept alive and reused between requests, closed when idle too
//! long, and a connection the upstream closed is replaced without the connector noticing.

use std::time::Duration;

use crate::support::config::Source;
use crate::support::{Answer, Config, Remedy, Upstream, request, send, source, wait_for};

/// The source `api` at `u`, trusting its certificate when it has one.
fn api(u: &Upstream) -> Source {
    let api = source("api", u.url()).prefix("/api");
    match &u.ca_file {
        Some(ca) => api.ca_file(ca),
        None => api,
    }
}

#[test]
fn sequential_requests_share_one_upstream_connection() {
    let u = Upstream::http();
    let remedy = Remedy::start(Config::new().source(api(&u)));
    for i in 0..20 {
        assert_eq!(send(remedy.proxy, &format!("/api/r/{i}")).status, 200);
    }
    assert_eq!(u.hits(), 20);
    assert_eq!(u.accepted(), 1);
}

#[test]
fn answers_without_a_body_leave_the_connection_reusable() {
    let u = Upstream::builder().statuses(&[204]).http();
    let remedy = Remedy::start(Config::new().source(api(&u)));
    for i in 0..5 {
        let head = request(remedy.proxy, "HEAD", &format!("/api/h/{i}"), &[], b"");
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());
        let empty = send(remedy.proxy, &format!("/api/e/{i}/204"));
        assert_eq!(empty.status, 204);
    }
    assert_eq!(u.hits(), 10);
    assert_eq!(u.accepted(), 1);
}

#[test]
fn uploads_and_tls_upstreams_reuse_connections_too() {
    let plain = Upstream::builder()
        .route("/upload", Answer::count_upload())
        .http();
    let tls = Upstream::builder()
        .route("/upload", Answer::count_upload())
        .tls();
    for u in [&plain, &tls] {
        let remedy = Remedy::start(Config::new().source(api(u)));
        for _ in 0..10 {
            let r = request(remedy.proxy, "POST", "/api/upload", &[], b"0123456789");
            assert_eq!(r.status, 200);
            assert_eq!(r.json()["body_len"], 10);
        }
        // hyper-util's client puts a connection back in its pool from a task of its own, once
        // the connection is ready again; on a loaded machine the next request can come first
        // and open a second one. Ten requests on at most two connections is reuse.
        let accepted = u.accepted();
        assert!(
            (1..=2).contains(&accepted),
            "{accepted} connections: {}",
            u.url()
        );
    }
}

#[test]
fn a_connection_the_upstream_closed_while_idle_is_replaced() {
    let u = Upstream::http();
    let remedy = Remedy::start(Config::new().source(api(&u)));
    assert_eq!(send(remedy.proxy, "/api/first").status, 200);
    u.close_connections();
    assert_eq!(u.open(), 0);
    for i in 0..5 {
        assert_eq!(send(remedy.proxy, &format!("/api/after/{i}")).status, 200);
    }
    assert_eq!(u.accepted(), 2);
    let scrape = remedy.scrape();
    assert_eq!(scrape.responses("api", 200, "none", "upstream"), 6.0);
    assert_eq!(scrape.sum("remedy_upstream_request_errors_total", &[]), 0.0);
}

#[test]
fn connection_close_from_the_upstream_is_honoured() {
    let u = Upstream::builder()
        .route("/close", Answer::status(200).header("connection", "close"))
        .http();
    let remedy = Remedy::start(Config::new().source(api(&u)));
    for _ in 0..3 {
        assert_eq!(send(remedy.proxy, "/api/close").status, 200);
    }
    assert_eq!(u.accepted(), 3);
    wait_for(
        "upstream connections closed",
        Duration::from_secs(5),
        || (u.open() == 0).then_some(()),
    );
}

#[test]
fn idle_connections_close_after_the_idle_timeout() {
    let u = Upstream::http();
    let remedy = Remedy::start(Config::new().source(api(&u).set("timeouts", "{ idle: 300ms }")));
    assert_eq!(send(remedy.proxy, "/api/x").status, 200);
    assert_eq!(u.accepted(), 1);
    wait_for("the idle connection closed", Duration::from_secs(5), || {
        (u.open() == 0).then_some(())
    });
    assert_eq!(send(remedy.proxy, "/api/y").status, 200);
    assert_eq!(u.accepted(), 2);
}
