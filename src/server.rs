//! The sidecar's life: bind both listeners, start the proxy's runtime and the admin thread,
//! reload on SIGHUP or a changed file, drain on SIGTERM, wait for a final scrape, exit. The
//! listeners themselves are [`crate::proxy::accept`] and [`crate::admin`].
//!
//! The proxy runs on a multi-thread runtime of `runtime.worker_threads` workers. The admin
//! listener runs on a thread of its own with a current-thread runtime, so rendering
//! `/metrics` or the rules never takes a proxy worker. A reload (SIGHUP or `POST /-/reload`)
//! goes through [`Sidecar::reload`](crate::sidecar::Sidecar::reload): all or nothing, and visible in
//! `remedy_config_last_reload_successful`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::sidecar::{Sidecar, StartError};

/// Listeners bound and ready to serve; the addresses are what tests read.
pub struct Bound {
    pub proxy: std::net::TcpListener,
    pub admin: std::net::TcpListener,
}

impl Bound {
    pub fn bind(config: &Config) -> Result<Self, StartError> {
        let bind = |listener, addr| -> Result<std::net::TcpListener, StartError> {
            let l = std::net::TcpListener::bind(addr).map_err(|error| StartError::Bind {
                listener,
                addr,
                error,
            })?;
            l.set_nonblocking(true).map_err(|error| StartError::Bind {
                listener,
                addr,
                error,
            })?;
            Ok(l)
        };
        Ok(Bound {
            proxy: bind("proxy", config.proxy.listen)?,
            admin: bind("admin", config.admin.listen)?,
        })
    }
}

/// Raises the soft file-descriptor limit to the hard one, and says when `max_connections` can
/// need more than that: the proxy then takes fewer connections at once ([`descriptors`]).
///
/// [`descriptors`]: crate::descriptors
fn raise_descriptor_limit(max_connections: usize) {
    match crate::descriptors::Limit::raise() {
        Ok(limit) => {
            tracing::info!(
                soft = limit.soft,
                hard = limit.hard,
                "file descriptor limit"
            );
            if let Some(short) = crate::descriptors::shortfall(max_connections, limit) {
                tracing::warn!("{short}");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read or raise the file descriptor limit"),
    }
}

/// Serves until SIGTERM/SIGINT, drains, waits for a scrape of the final counts, and returns.
pub fn run(
    sidecar: Arc<Sidecar>,
    bound: Bound,
    web: Option<Arc<crate::admin::webconfig::WebConfig>>,
) -> Result<(), StartError> {
    let config = sidecar.config();
    let workers = config
        .runtime
        .worker_threads
        .map(|n| n.get())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // One worker needs no work stealing: a current-thread runtime skips its cross-thread
    // queues and atomics, as linkerd2-proxy does on a single core.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers).thread_name("remedy-proxy");
        b
    };
    let runtime = builder.enable_all().build().map_err(StartError::Runtime)?;
    raise_descriptor_limit(config.proxy.max_connections);

    let admin_addr = bound.admin.local_addr().ok();
    let admin = {
        let sidecar = sidecar.clone();
        let listener = bound.admin;
        std::thread::Builder::new()
            .name("remedy-admin".into())
            .spawn(move || crate::admin::serve_blocking(sidecar, listener, web))
            .map_err(StartError::Runtime)?
    };
    drop(admin);

    runtime.block_on(async move {
        let proxy = TcpListener::from_std(bound.proxy).map_err(|error| StartError::Bind {
            listener: "proxy",
            addr: config.proxy.listen,
            error,
        })?;
        let proxy_addr = proxy.local_addr().map_err(StartError::Runtime)?;
        tracing::info!(address = %proxy_addr, workers, "proxy listening");
        if let Some(a) = admin_addr {
            tracing::info!(address = %a, "admin listening");
        }

        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(signals(sidecar.clone(), stop_tx));
        tokio::spawn(watch_config(sidecar.clone()));
        let holder = sidecar.clone();
        tokio::spawn(crate::intercept_ca::keep_renewed(
            move || holder.authority(),
            std::time::SystemTime::now,
        ));
        sidecar.ready.store(true, Ordering::Release);
        tracing::info!(
            sources = config.sources.len(),
            catalog_codes = config.catalog.len(),
            "ready"
        );

        crate::proxy::accept::serve(
            sidecar.routes.clone(),
            &config.proxy,
            proxy,
            stop_rx,
            config.shutdown.drain_timeout.0,
        )
        .await;

        wait_for_final_scrape(&sidecar).await;
        Ok(())
    })
}

/// Keeps `/metrics` up after the drain until one scrape has seen the final counts, so a run
/// shorter than a scrape interval still reaches Prometheus whole; `shutdown.linger` bounds
/// the wait for pods nobody scrapes.
async fn wait_for_final_scrape(sidecar: &Sidecar) {
    let linger = sidecar.config().shutdown.linger.0;
    let served = sidecar.final_scrape.notified();
    tokio::pin!(served);
    // Registered before the flag is raised: a scrape that follows cannot be missed.
    served.as_mut().enable();
    sidecar.drained.store(true, Ordering::Release);
    tracing::info!(
        ?linger,
        "drained; /metrics stays up until a scrape has seen the final counts"
    );
    tokio::select! {
        _ = &mut served => tracing::info!("final scrape served; exiting"),
        _ = tokio::time::sleep(linger) => {
            tracing::info!(?linger, "no scrape within shutdown.linger; exiting")
        }
    }
}

/// SIGHUP reloads; the first SIGTERM/SIGINT starts the drain, a second exits at once.
async fn signals(sidecar: Arc<Sidecar>, stop: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => {
                let s = sidecar.clone();
                // Building TLS clients reads files: keep it off the async workers.
                let _ = tokio::task::spawn_blocking(move || s.reload()).await;
                continue;
            }
        };
        if *stop.borrow() {
            tracing::warn!(signal = name, "second signal: exiting without draining");
            std::process::exit(1);
        }
        sidecar.ready.store(false, Ordering::Release);
        tracing::info!(signal = name, "shutting down: draining in-flight requests");
        let _ = stop.send(true);
    }
}

/// Reloads when the config file's content changes, if `reload.watch_interval` asks for it.
/// Content, not modification time: a ConfigMap update swaps a symlink.
async fn watch_config(sidecar: Arc<Sidecar>) {
    let fingerprint = |path: &std::path::Path| {
        use std::hash::{Hash, Hasher};
        let bytes = std::fs::read(path).ok()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        Some(h.finish())
    };
    let mut last = fingerprint(&sidecar.config_path);
    loop {
        let Some(interval) = sidecar.config().reload.watch_interval else {
            // Off: look again later, in case a reload turns it on.
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        };
        tokio::time::sleep(interval.0).await;
        let now = fingerprint(&sidecar.config_path);
        if now != last && now.is_some() {
            last = now;
            tracing::info!("config file changed on disk; reloading");
            let s = sidecar.clone();
            let _ = tokio::task::spawn_blocking(move || s.reload()).await;
        }
    }
}
