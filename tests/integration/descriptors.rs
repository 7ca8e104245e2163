//! File descriptors: remedy raises its soft limit to the hard one, and when even that cannot
//! hold `proxy.max_connections`, it says so and takes fewer connections at once, so that the
//! admin listener (the kubelet's probes, the final scrape) and every connection it does take
//! keep working. Limits are set with util-linux's `prlimit`, as a container runtime would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use crate::support::launcher::{binary, write_config};
use crate::support::{Answer, Config, Remedy, Upstream, send, source};

fn api(u: &Upstream) -> Config {
    Config::new().source(source("api", u.url()).prefix("/api"))
}

/// The soft and hard limits of `pid`, from `/proc`.
fn nofile(pid: i32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

#[test]
fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
    let u = Upstream::http();
    let remedy = Remedy::start_with_nofile(api(&u), 1024, 4096);
    assert_eq!(nofile(remedy.pid()), (4096, 4096));
    assert!(remedy.logs().contains("\"soft\":4096"), "{}", remedy.logs());
    assert!(
        !remedy.logs().contains("needs up to"),
        "no shortfall to warn of"
    );
}

/// 100 connectors download at once under a limit of 128 descriptors: remedy serves as many as
/// leave its reserve free (32), the others wait their turn, and meanwhile `/-/healthy` and
/// `/metrics` answer and nothing is counted against the API.
#[test]
fn short_of_descriptors_the_proxy_takes_fewer_connections_and_the_admin_listener_answers() {
    let u = Upstream::builder()
        .route("/big", Answer::download(256 << 20))
        .http();
    let remedy = Remedy::start_with_nofile(api(&u), 128, 128);
    let logs = remedy.logs();
    assert!(logs.contains("needs up to 2112 file descriptors"), "{logs}");
    assert!(logs.contains("at most 32 connections"), "{logs}");
    let readers: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(remedy.proxy).unwrap();
            s.write_all(b"GET /api/big HTTP/1.1\r\nHost: api\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    remedy.wait_in_flight("api", 32.0);
    assert_eq!(send(remedy.admin, "/-/healthy").status, 200);
    let s = remedy.scrape();
    assert_eq!(s.in_flight("api"), 32.0, "{}", s.text);
    assert_eq!(s.sum("remedy_upstream_request_errors_total", &[]), 0.0);
    assert_eq!(s.sum("remedy_upstream_responses_total", &[]), 0.0);
    drop(readers);
    remedy.wait_in_flight("api", 0.0);
    let mut one = TcpStream::connect(remedy.proxy).unwrap();
    one.write_all(b"GET /api/small HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    one.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let s = remedy.scrape();
    assert_eq!(s.sum("remedy_upstream_request_errors_total", &[]), 0.0);
}

#[test]
fn check_config_warns_when_the_limit_cannot_hold_max_connections() {
    let dir = tempfile::tempdir().unwrap();
    let u = Upstream::http();
    let path = write_config(dir.path(), api(&u));
    let check = |nofile: &str| {
        let out = Command::new("prlimit")
            .arg(format!("--nofile={nofile}"))
            .args(["--", binary(), "check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let short = check("128:128");
    assert!(
        short.contains("file descriptors: limit 128")
            && short.contains("warning: proxy.max_connections 1024 needs up to 2112"),
        "{short}"
    );
    let enough = check("1024:4096");
    assert!(enough.contains("file descriptors: limit 4096"), "{enough}");
    assert!(!enough.contains("warning"), "{enough}");
}
