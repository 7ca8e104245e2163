//! Giving memory back after a burst of connections.
//!
//! glibc keeps what a burst of connections freed (their buffers, hyper's state, the TLS
//! sessions) in its per-thread arenas for reuse, so after a few hundred slow clients resident
//! memory stays at its peak with no traffic at all. When the open connections have fallen well
//! below their peak, [`Burst::trim`] asks glibc to return its free pages (`malloc_trim`), which
//! costs a walk of the heap: it runs at most once per check period and only after a burst.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// How far the open connections must fall below their peak before memory is given back.
const BURST: usize = 64;
/// How often the connection count is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The proxy listener's open connections, and their peak since memory was last given back.
#[derive(Debug, Default)]
pub struct Burst {
    open: AtomicUsize,
    peak: AtomicUsize,
}

/// One open connection of a [`Burst`], counted closed when dropped: held with the connection's
/// slot, for as long as its bytes are read, a `CONNECT` tunnel's too (hyper's serving of the
/// connection ends at the upgrade, long before the tunnel does).
#[derive(Debug)]
pub struct Open(Arc<Burst>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.closed();
    }
}

impl Burst {
    /// A connection opened; closed when what this gives is dropped.
    pub fn open(self: &Arc<Self>) -> Open {
        self.opened();
        Open(self.clone())
    }

    pub fn opened(&self) {
        let now = self.open.fetch_add(1, Relaxed) + 1;
        self.peak.fetch_max(now, Relaxed);
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    /// Gives freed memory back if a burst has ended since the last time; whether it did.
    pub fn trim(&self) -> bool {
        let open = self.open.load(Relaxed);
        if self.peak.load(Relaxed) < open + BURST {
            return false;
        }
        self.peak.store(open, Relaxed);
        release_free_memory();
        true
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    // SAFETY: malloc_trim has no preconditions; it only returns free pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_given_back_once_a_burst_has_ended() {
        let b = Burst::default();
        for _ in 0..100 {
            b.opened();
        }
        assert!(!b.trim(), "nothing has closed yet");
        for _ in 0..30 {
            b.closed();
        }
        assert!(!b.trim(), "30 closed is no burst");
        for _ in 0..40 {
            b.closed();
        }
        assert!(b.trim());
        assert!(!b.trim(), "once per burst");
    }

    #[test]
    fn a_connection_counts_as_open_while_its_guard_lives() {
        let b = Arc::new(Burst::default());
        let open: Vec<Open> = (0..100).map(|_| b.open()).collect();
        assert_eq!(b.open.load(Relaxed), 100);
        assert!(!b.trim());
        drop(open);
        assert_eq!(b.open.load(Relaxed), 0);
        assert!(b.trim());
    }
}
