//! Counting a response allocates nothing once a code's handles exist: proven with a counting
//! global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use remedy::catalog::Catalog;
use remedy::metrics::{Origin, Outcome, Recorder};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
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
    })
    .collect();
    for o in &outcomes {
        source.retry_after(1.0);
        source.ratelimit_remaining(1.0);
        source.start();
        source.record(o);
    }
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..10_000 {
        for o in &outcomes {
            source.start();
            source.record(o);
        }
        source.retry_after(2.0);
        source.ratelimit_remaining(5.0);
    }
    let after = ALLOCATIONS.load(Ordering::SeqCst);
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
