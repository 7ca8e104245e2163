//! Counting a response allocates nothing once a code's handles exist, and reading the common
//! rate-limit headers allocates nothing either: proven with a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use remedy::catalog::Catalog;
use remedy::metrics::{Origin, Outcome, Recorder};
use remedy::observe::ratelimit::{self, Policies, ResetStyle, Window};

thread_local! {
    /// Allocations made by this thread: the test harness's own threads, which allocate while
    /// another test measures, are not counted.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: the slot may be gone while a thread exits.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn recording_a_response_does_not_allocate() {
    let recorder = Recorder::new(&remedy::config::DEFAULT_BUCKETS);
    let source = recorder.source("github", &Catalog::builtin());
    let outcomes: Vec<Outcome> = [
        (200, Origin::Upstream),
        (429, Origin::Upstream),
        (502, Origin::Proxy),
    ]
    .into_iter()
    .map(|(status, origin)| Outcome {
        status,
        origin,
        elapsed: Duration::from_millis(30),
        error: None,
        remediation: None,
        endpoint: None,
        api_errors: None,
    })
    .collect();
    let quota = Window {
        remaining: Some(7.0),
        limit: Some(100.0),
        used_ratio: Some(0.93),
        reset_seconds: Some(30.0),
    };
    for o in &outcomes {
        source.retry_after(1.0);
        source.quota(&quota);
        source.start();
        source.record(o);
    }
    let before = allocations();
    for _ in 0..10_000 {
        for o in &outcomes {
            source.start();
            source.record(o);
        }
        source.retry_after(2.0);
        source.quota(&quota);
    }
    let after = allocations();
    assert_eq!(
        after - before,
        0,
        "recording allocated {} times",
        after - before
    );
    assert!(String::from_utf8(recorder.render()).unwrap().contains(
        "remedy_upstream_responses_total{class=\"4xx\",code=\"429\",origin=\"upstream\",remediation=\"reduce_concurrency\",source=\"github\"} 10001"
    ));
}

#[test]
fn reading_integer_rate_limit_headers_does_not_allocate() {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("x-ratelimit-limit", "5000"),
        ("x-ratelimit-remaining", "4987"),
        ("x-ratelimit-used", "13"),
        ("x-ratelimit-reset", "1772464800"),
        ("x-ratelimit-resource", "core"),
        ("ratelimit-limit", "100"),
        ("ratelimit-remaining", "50"),
        ("ratelimit-reset", "30"),
        ("ratelimit-policy", "\"burst\";q=100;w=60"),
        ("ratelimit", "\"burst\";r=50;t=30"),
        ("retry-after", "120"),
    ] {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    let policies = Policies::default();
    let now = SystemTime::now();
    let first = ratelimit::read(&h, 429, || now, ResetStyle::Guess, &policies, "github");
    assert!(first.window.is_some());
    let before = allocations();
    for _ in 0..10_000 {
        let seen = ratelimit::read(&h, 200, || now, ResetStyle::Guess, &policies, "github");
        assert_eq!(seen.window.and_then(|w| w.remaining), Some(50.0));
    }
    let after = allocations();
    assert_eq!(
        after - before,
        0,
        "reading allocated {} times",
        after - before
    );
}
