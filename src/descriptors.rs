//! The process's file descriptors: the soft limit raised to the hard one at start, as Go's
//! runtime does for every program (a container's soft limit is often 1,024, far below what a
//! proxy needs), and the share of them the proxy's connections may take, so that the admin
//! listener (scrapes, probes) and everything else always has some left.

use std::io;

/// Descriptors kept for everything but the proxy's connections: both listeners, the admin
/// listener's connections (a scrape, the kubelet's probes), the log, DNS look-ups, the CA files
/// and the runtime's own.
pub const RESERVE: u64 = 64;

/// Descriptors one of the proxy's connection slots may hold: the connector's connection and,
/// while a request is forwarded, the upstream's. Each stream of an HTTP/2 tunnel beyond the
/// first takes a slot of its own.
pub const PER_SLOT: u64 = 2;

/// `RLIMIT_NOFILE` as the process has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: u64,
    pub hard: u64,
}

impl Limit {
    /// The process's limit now.
    pub fn current() -> io::Result<Limit> {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given, which lives for the call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Limit {
            soft: l.rlim_cur,
            hard: l.rlim_max,
        })
    }

    /// Raises the soft limit to the hard one; the limit the process then has.
    pub fn raise() -> io::Result<Limit> {
        let now = Limit::current()?;
        if now.soft >= now.hard {
            return Ok(now);
        }
        let l = libc::rlimit {
            rlim_cur: now.hard,
            rlim_max: now.hard,
        };
        // SAFETY: setrlimit reads the struct it is given, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Limit::current()
    }
}

/// Descriptors the proxy may need with `max_connections` slots, the reserve included.
pub fn needed(max_connections: usize) -> u64 {
    (max_connections as u64)
        .saturating_mul(PER_SLOT)
        .saturating_add(RESERVE)
}

/// The connection slots the proxy may use under a soft limit of `limit`: `max_connections`,
/// or as many as leave the reserve free (at least one).
pub fn slots(max_connections: usize, limit: u64) -> usize {
    let fit = limit.saturating_sub(RESERVE) / PER_SLOT;
    max_connections.min(usize::try_from(fit).unwrap_or(usize::MAX).max(1))
}

/// What `proxy.max_connections` asks of `limit`, when it asks more than it has: the sentence
/// for the start-up warning and `check-config`.
pub fn shortfall(max_connections: usize, limit: Limit) -> Option<String> {
    let need = needed(max_connections);
    (need > limit.soft).then(|| {
        format!(
            "proxy.max_connections {max_connections} needs up to {need} file descriptors \
             ({PER_SLOT} a connection, {RESERVE} for the rest), and the limit is {} (hard {}): \
             remedy serves at most {} connections (and HTTP/2 streams) at once, the others wait; \
             raise the limit (the container runtime's LimitNOFILE, ulimit -n) or lower \
             proxy.max_connections",
            limit.soft,
            limit.hard,
            slots(max_connections, limit.soft)
        )
    })
}

/// Whether `e` is the system refusing a new descriptor (`EMFILE`, `ENFILE`): remedy's own
/// limit, never the API's failure.
pub fn ran_out(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_takes_what_leaves_the_reserve_free() {
        for (max, limit, slots_then, short) in [
            (1024, 1_048_576, 1024, false),
            (1024, 2112, 1024, false),
            (1024, 2111, 1023, true),
            (1024, 1024, 480, true),
            (100, 64, 1, true),
            (1, 0, 1, true),
        ] {
            assert_eq!(slots(max, limit), slots_then, "{max} under {limit}");
            let l = Limit {
                soft: limit,
                hard: limit,
            };
            assert_eq!(shortfall(max, l).is_some(), short, "{max} under {limit}");
        }
        let said = shortfall(
            1024,
            Limit {
                soft: 1024,
                hard: 4096,
            },
        )
        .unwrap();
        assert!(said.contains("needs up to 2112"), "{said}");
        assert!(said.contains("at most 480 connections"), "{said}");
    }

    #[test]
    fn running_out_is_emfile_or_enfile() {
        assert!(ran_out(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(ran_out(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!ran_out(&io::Error::from_raw_os_error(libc::ECONNREFUSED)));
        assert!(!ran_out(&io::Error::other("no")));
    }
}
