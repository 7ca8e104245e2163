//! Shutdown drains and lingers; reloads swap the config whole or not at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::config::Source;
use crate::support::{Answer, Config, Remedy, Upstream, request, send, source, wait_for};

/// The source `name` at `u`, matched by the prefix `/name`.
fn named(name: &str, u: &Upstream) -> Source {
    source(name, u.url()).prefix(&format!("/{name}"))
}

/// The admin section that lets `POST /-/reload` through.
const RELOAD_ON: &str = "{ listen: 127.0.0.1:0, enable_reload: true }";

#[test]
fn sigterm_drains_in_flight_requests_then_exits_after_a_scrape_of_the_final_counts() {
    let u = Upstream::builder()
        .route(
            "/slow",
            Answer::status(200).delay(Duration::from_millis(800)),
        )
        .http();
    // One worker: the current-thread runtime drains the same way. A linger far longer than
    // the test's wait for the exit: only the scrape can end it in time.
    let mut remedy = Remedy::start(
        Config::new()
            .section("runtime", "{ worker_threads: 1 }")
            .section("shutdown", "{ drain_timeout: 10s, linger: 120s }")
            .source(named("api", &u)),
    );
    let proxy = remedy.proxy;
    let slow: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || send(proxy, "/api/slow").status))
        .collect();
    remedy.wait_in_flight("api", 3.0);
    remedy.signal("TERM");
    wait_for("/-/ready to turn 503", Duration::from_secs(5), || {
        (send(remedy.admin, "/-/ready").status == 503).then_some(())
    });
    for t in slow {
        assert_eq!(
            t.join().unwrap(),
            200,
            "an in-flight request was cut by shutdown"
        );
    }
    // New connections are refused once draining started.
    wait_for(
        "the proxy listener to close",
        Duration::from_secs(5),
        || std::net::TcpStream::connect(proxy).is_err().then_some(()),
    );
    // Once drained, the next scrape holds the final counts, and remedy exits right after it.
    remedy.wait_log("drained");
    let s = remedy.scrape();
    assert_eq!(s.responses("api", 200, "none", "upstream"), 3.0);
    assert_eq!(s.in_flight("api"), 0.0);
    assert_eq!(remedy.wait_exit(Duration::from_secs(20)), Some(0));
    remedy.wait_log("final scrape served; exiting");
}

#[test]
fn probes_during_the_wait_do_not_end_it_and_linger_bounds_it() {
    let u = Upstream::http();
    let mut remedy = Remedy::start(
        Config::new()
            .section("shutdown", "{ drain_timeout: 1s, linger: 2s }")
            .source(named("api", &u)),
    );
    assert_eq!(send(remedy.proxy, "/api/ok").status, 200);
    remedy.signal("TERM");
    remedy.wait_log("drained");
    // Probes and the other admin routes are not scrapes of the counts.
    assert_eq!(send(remedy.admin, "/-/ready").status, 503);
    assert_eq!(send(remedy.admin, "/-/healthy").status, 200);
    assert_eq!(send(remedy.admin, "/rules").status, 200);
    assert_eq!(remedy.wait_exit(Duration::from_secs(20)), Some(0));
    let logs = remedy.logs();
    assert!(
        logs.contains("no scrape within shutdown.linger; exiting"),
        "{logs}"
    );
    assert!(!logs.contains("final scrape served"), "{logs}");
}

#[test]
fn a_scrape_before_the_drain_ends_is_not_the_final_one() {
    let u = Upstream::builder()
        .route(
            "/slow",
            Answer::status(200).delay(Duration::from_millis(1500)),
        )
        .http();
    let mut remedy = Remedy::start(
        Config::new()
            .section("shutdown", "{ drain_timeout: 30s, linger: 120s }")
            .source(named("api", &u)),
    );
    let proxy = remedy.proxy;
    let held = std::thread::spawn(move || send(proxy, "/api/slow").status);
    remedy.wait_in_flight("api", 1.0);
    remedy.signal("TERM");
    wait_for("draining", Duration::from_secs(5), || {
        (send(remedy.admin, "/-/ready").status == 503).then_some(())
    });
    // Scraped while the request is still in flight: not the final counts, no exit.
    assert_eq!(remedy.scrape().in_flight("api"), 1.0);
    assert_eq!(held.join().unwrap(), 200);
    remedy.wait_log("drained");
    assert!(!remedy.logs().contains("exiting"), "{}", remedy.logs());
    let s = remedy.scrape();
    assert_eq!(s.responses("api", 200, "none", "upstream"), 1.0);
    assert_eq!(remedy.wait_exit(Duration::from_secs(20)), Some(0));
    remedy.wait_log("final scrape served; exiting");
}

#[test]
fn a_second_signal_exits_at_once() {
    let u = Upstream::builder().route("/stall", Answer::stall()).http();
    let mut remedy = Remedy::start(
        Config::new()
            .section("shutdown", "{ drain_timeout: 60s, linger: 60s }")
            .source(named("api", &u)),
    );
    let proxy = remedy.proxy;
    let _held = std::thread::spawn(move || {
        crate::support::raw(proxy, b"GET /api/stall HTTP/1.1\r\nHost: x\r\n\r\n")
    });
    remedy.wait_in_flight("api", 1.0);
    remedy.signal("TERM");
    wait_for("draining", Duration::from_secs(5), || {
        (send(remedy.admin, "/-/ready").status == 503).then_some(())
    });
    remedy.signal("INT");
    assert_eq!(remedy.wait_exit(Duration::from_secs(10)), Some(1));
}

#[test]
fn reload_swaps_sources_keeps_counts_of_those_that_stay_and_serves_those_that_go_once_more() {
    let (a, b, c) = (
        Upstream::builder().statuses(&[429]).http(),
        Upstream::http(),
        Upstream::http(),
    );
    let remedy = Remedy::start(
        Config::new()
            .source(named("alpha", &a))
            .source(named("beta", &b)),
    );
    for _ in 0..3 {
        send(remedy.proxy, "/alpha/429");
    }
    send(remedy.proxy, "/beta/x");
    remedy.rewrite_config(
        Config::new()
            .source(named("alpha", &a))
            .source(named("gamma", &c)),
    );
    remedy.signal("HUP");
    wait_for("gamma to be routed", Duration::from_secs(10), || {
        (send(remedy.proxy, "/gamma/x").status == 200).then_some(())
    });
    assert_eq!(send(remedy.proxy, "/beta/x").status, 404);
    let s = remedy.scrape();
    assert_eq!(
        s.responses("alpha", 429, "reduce_concurrency", "upstream"),
        3.0
    );
    assert_eq!(s.responses("gamma", 200, "none", "upstream"), 1.0);
    // A removed source's counts are served once more, so a reload between two scrapes loses
    // none of them; the scrape after has none of its series.
    assert_eq!(s.responses("beta", 200, "none", "upstream"), 1.0);
    assert!(
        !remedy.scrape().text.contains("source=\"beta\""),
        "beta's series stayed"
    );
    assert_eq!(
        s.get("remedy_config_last_reload_successful", &[]),
        Some(1.0)
    );
}

#[test]
fn bad_reload_keeps_the_running_config_and_says_why() {
    let a = Upstream::http();
    let config = |alpha: Source| Config::new().section("admin", RELOAD_ON).source(alpha);
    let remedy = Remedy::start(config(named("alpha", &a)));
    remedy.rewrite_config(config(
        named("alpha", &a).set("timeouts", "{ connect: soon }"),
    ));
    let r = request(remedy.admin, "POST", "/-/reload", &[], b"");
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("sources[0].timeouts.connect"),
        "{}",
        r.text()
    );
    assert_eq!(send(remedy.proxy, "/alpha/x").status, 200);
    let s = remedy.scrape();
    assert_eq!(
        s.get("remedy_config_last_reload_successful", &[]),
        Some(0.0)
    );
    remedy.wait_log("keeping the running config");

    remedy.rewrite_config(config(named("alpha", &a)));
    assert_eq!(
        request(remedy.admin, "POST", "/-/reload", &[], b"").status,
        200
    );
    assert_eq!(
        remedy
            .scrape()
            .get("remedy_config_last_reload_successful", &[]),
        Some(1.0)
    );
}

#[test]
fn reloads_under_continuous_traffic_fail_no_request() {
    let a = Upstream::builder()
        .route("/slow", Answer::status(200).delay(Duration::from_millis(2)))
        .http();
    let config = |alpha: Source| Config::new().section("admin", RELOAD_ON).source(alpha);
    let remedy = Remedy::start(config(named("alpha", &a)));
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let proxy = remedy.proxy;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            std::thread::spawn(move || {
                // Bounded: stops when told, or after 5,000 requests.
                for _ in 0..5_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if send(proxy, "/alpha/slow").status != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for i in 0..10 {
        let alpha = named("alpha", &a);
        remedy.rewrite_config(config(if i % 2 == 0 {
            alpha.set("timeouts", format!("{{ response_header: {}s }}", 30 + i))
        } else {
            alpha.set("bad_key", 1)
        }));
        let status = request(remedy.admin, "POST", "/-/reload", &[], b"").status;
        assert_eq!(status, if i % 2 == 0 { 200 } else { 500 });
        remedy.signal("HUP");
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 0);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "of {sent} requests");
    let s = remedy.scrape();
    assert_eq!(s.responses("alpha", 200, "none", "upstream"), sent as f64);
}

#[test]
fn a_changed_config_file_is_picked_up_when_watching() {
    let (a, b) = (Upstream::http(), Upstream::http());
    let watched = Config::new()
        .section("reload", "{ watch_interval: 200ms }")
        .source(named("alpha", &a));
    let remedy = Remedy::start(&watched);
    assert_eq!(send(remedy.proxy, "/beta/x").status, 404);
    remedy.rewrite_config(watched.source(named("beta", &b)));
    wait_for("beta to be routed", Duration::from_secs(10), || {
        (send(remedy.proxy, "/beta/x").status == 200).then_some(())
    });
    remedy.wait_log("config file changed on disk");
    assert_eq!(
        remedy
            .scrape()
            .get("remedy_config_last_reload_successful", &[]),
        Some(1.0)
    );
}

/// Each thread of the process: its name and its scheduling policy (0 normal, 5 idle).
fn thread_policies(pid: i32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the parenthesised name start at field 3; the policy is field 41.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap();
        out.push((name.trim().to_owned(), fields[38].parse().unwrap()));
    }
    out
}

#[test]
fn the_admin_thread_gives_way_to_the_proxy_workers() {
    let u = Upstream::http();
    let remedy = Remedy::start(
        Config::new()
            .section("runtime", "{ worker_threads: 2 }")
            .source(named("api", &u)),
    );
    assert_eq!(send(remedy.proxy, "/api/x").status, 200);
    let threads = thread_policies(remedy.pid());
    let policy = |name: &str| {
        threads
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .collect::<Vec<_>>()
    };
    assert_eq!(policy("remedy-admin"), [5], "{threads:?}");
    assert_eq!(policy("remedy-proxy"), [0, 0], "{threads:?}");
}

#[test]
fn the_reload_endpoint_is_off_unless_enabled_and_refuses_other_origins() {
    let a = Upstream::http();
    let off = Remedy::start(Config::new().source(named("alpha", &a)));
    let r = request(off.admin, "POST", "/-/reload", &[], b"");
    assert_eq!(r.status, 403);
    assert!(r.text().contains("admin.enable_reload"), "{}", r.text());
    assert!(!off.logs().contains("config reloaded"));

    let on = Remedy::start(
        Config::new()
            .section("admin", RELOAD_ON)
            .source(named("alpha", &a)),
    );
    let own = format!("http://{}", on.admin);
    for (origin, status) in [
        ("http://evil.example", 403),
        ("null", 403),
        (own.as_str(), 200),
    ] {
        let r = request(
            on.admin,
            "POST",
            "/-/reload",
            &[("Origin", origin), ("Content-Type", "text/plain")],
            b"x",
        );
        assert_eq!(r.status, status, "Origin: {origin}: {}", r.text());
    }
    assert_eq!(request(on.admin, "POST", "/-/reload", &[], b"").status, 200);
}
