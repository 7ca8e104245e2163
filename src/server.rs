//! The sidecar's life: bind both listeners, serve, reload, drain, wait for a final scrape, exit.
//!
//! The proxy runs on a multi-thread runtime of `runtime.worker_threads` workers. The admin
//! listener runs on a thread of its own with a current-thread runtime, so rendering
//! `/metrics` or the rules never takes a proxy worker. A reload (SIGHUP or `POST /-/reload`)
//! goes through [`Sidecar::reload`](crate::sidecar::Sidecar::reload): all or nothing, and visible in
//! `remedy_config_last_reload_successful`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::Config;
use crate::proxy::listener::{Guarded, Requests, Slots, Timeouts};
use crate::proxy::trim::{self, Burst};
use crate::proxy::{self, Tunnels, Via};
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
        sidecar.ready.store(true, Ordering::Release);
        tracing::info!(
            sources = config.sources.len(),
            catalog_codes = config.catalog.len(),
            "ready"
        );

        serve_proxy(sidecar.clone(), proxy, stop_rx).await;

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

async fn serve_proxy(
    sidecar: Arc<Sidecar>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let config = sidecar.config();
    let p = &config.proxy;
    let mut http = http1::Builder::new();
    // The header read timeout is kept by `Guarded`, which arms one timer per connection
    // rather than one per request. `max_header_size` is exact however the head arrives
    // (`max_buf_size` alone let a head that came in one read run past it). Flat writes: one buffer per `write` costs less than a
    // vectored write's queue for the small heads and bodies of API calls.
    http.header_read_timeout(None)
        .max_header_size(p.max_header_bytes)
        .max_buf_size(p.max_header_bytes)
        .writev(false)
        .keep_alive(true);
    // hyper keeps up to 100 header slots on the stack; any other count puts them on the heap
    // for every request.
    if p.max_headers != 100 {
        http.max_headers(p.max_headers);
    }
    let timeouts = Timeouts {
        header_read: p.header_read_timeout.0,
        send: p.send_timeout.0,
        max_headers: p.max_headers,
    };
    let connections = Arc::new(Semaphore::new(p.max_connections));
    let slots = Slots::new(connections.clone(), p.max_connections);
    let graceful = crate::proxy::drain::Drain::default();
    let tunnels = Tunnels::new(
        sidecar.routes.clone(),
        http.clone(),
        timeouts,
        slots.clone(),
    );
    let burst = Arc::new(Burst::default());
    let trimmer = tokio::spawn({
        let burst = burst.clone();
        async move {
            loop {
                tokio::time::sleep(trim::CHECK_EVERY).await;
                if burst.trim() {
                    tracing::debug!("a burst of connections ended; freed memory given back");
                }
            }
        }
    });

    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, never die.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let sidecar = sidecar.clone();
        let routes = sidecar.clone();
        let client_ip = proxy::client_ip(peer);
        let requests = Arc::new(Requests::holding(permit));
        let io = Guarded::new(stream, requests.clone(), timeouts, slots.clone());
        let tunnels = tunnels.clone();
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let via = if req.method() == hyper::Method::CONNECT {
                Via::Connect(tunnels.clone())
            } else {
                Via::Listener
            };
            proxy::handle(
                sidecar.routes.load_full(),
                client_ip.clone(),
                requests.serve(),
                req,
                via,
            )
        });
        let conn = http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let conn = graceful.watcher().watch(conn, |c| c.graceful_shutdown());
        burst.opened();
        let burst = burst.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
                proxy::count_parser_refusal(&routes.routes.load(), &e);
            }
            burst.closed();
        });
    }
    drop(listener);
    trimmer.abort();

    let drain = config.shutdown.drain_timeout.0;
    let drained = async {
        graceful.shutdown().await;
        tunnels.shutdown().await;
    };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!(?drain, "drain timeout passed with requests still in flight");
    }
}
