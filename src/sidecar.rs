//! The running state both listeners share: the live config and routes, the recorder,
//! readiness, the drain's flags, the interception CA, and the reload that swaps them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::{self, Config};
use crate::intercept_ca::{Authority, CaError};
use crate::metrics::Recorder;
use crate::proxy::Routes;

/// State shared by the proxy, the admin listener and the reload path.
pub struct Sidecar {
    pub(crate) config_path: PathBuf,
    config: ArcSwap<Config>,
    pub(crate) routes: Arc<ArcSwap<Routes>>,
    /// The interception CA, while `proxy.intercept` is on; kept across reloads.
    authority: Mutex<Option<Arc<Authority>>>,
    recorder: Recorder,
    pub(crate) ready: AtomicBool,
    reloading: Mutex<()>,
    /// Set once the proxy has drained: every response the connector got is counted.
    pub(crate) drained: AtomicBool,
    /// Woken when a scrape rendered after the drain has been written out in full.
    pub(crate) final_scrape: tokio::sync::Notify,
}

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("sources[{index}]: {error}")]
    Upstream {
        index: usize,
        error: crate::proxy::upstream::BuildError,
    },
    #[error("cannot listen on {addr} ({listener}): {error}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{key}: {error}", key = .error.key())]
    Intercept { error: CaError },
}

impl Sidecar {
    /// Builds routes and metrics for a validated config.
    pub fn new(config_path: PathBuf, config: Config) -> Result<Arc<Self>, StartError> {
        let recorder =
            Recorder::with_series(&config.metrics.duration_buckets, config.metrics.series);
        let authority =
            intercept_authority(&config, None).map_err(|error| StartError::Intercept { error })?;
        let routes = Routes::new(&config, &recorder, authority.clone())
            .map_err(|(index, error)| StartError::Upstream { index, error })?;
        recorder.set_catalog(&config.catalog);
        recorder.config_loaded(true);
        Ok(Arc::new(Sidecar {
            config_path,
            config: ArcSwap::from_pointee(config),
            routes: Arc::new(ArcSwap::from_pointee(routes)),
            authority: Mutex::new(authority),
            recorder,
            ready: AtomicBool::new(false),
            reloading: Mutex::new(()),
            drained: AtomicBool::new(false),
            final_scrape: tokio::sync::Notify::new(),
        }))
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The interception CA, while `proxy.intercept` is on.
    pub fn authority(&self) -> Option<Arc<Authority>> {
        self.authority
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// True once the proxy has drained, so a scrape rendered now holds the final counts.
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Acquire)
    }

    /// Called by the admin listener once a scrape rendered after the drain has been sent in
    /// full and its connection closed: the run's counts have reached Prometheus.
    pub fn final_scrape_served(&self) {
        self.final_scrape.notify_one();
    }

    /// Re-reads the config file and swaps it in whole, or keeps the running one.
    /// In-flight requests keep the routes they started with.
    pub fn reload(&self) -> Result<(), String> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.try_reload();
        self.recorder.config_loaded(result.is_ok());
        match &result {
            Ok(()) => tracing::info!(file = %self.config_path.display(), "config reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; keeping the running config")
            }
        }
        result
    }

    fn try_reload(&self) -> Result<(), String> {
        let new = config::load(&self.config_path).map_err(|e| e.to_string())?;
        let old = self.config.load_full();
        let mut authority = self.authority.lock().unwrap_or_else(|e| e.into_inner());
        let (was, now) = (&old.proxy.intercept, &new.proxy.intercept);
        if was.enabled
            && now.enabled
            && (was.ca_cert_file != now.ca_cert_file
                || was.ca_key_file != now.ca_key_file
                || was.ca_dir != now.ca_dir)
        {
            tracing::warn!("proxy.intercept's CA and ca_dir change only on restart");
        }
        let next = intercept_authority(&new, authority.clone()).map_err(|e| e.to_string())?;
        let routes = Routes::new(&new, &self.recorder, next.clone())
            .map_err(|(i, e)| format!("sources[{i}]: {e}"))?;
        *authority = next;
        drop(authority);
        if new.proxy.listen != old.proxy.listen || new.admin.listen != old.admin.listen {
            tracing::warn!("listen addresses change only on restart; keeping the bound ones");
        }
        if new.metrics.duration_buckets != old.metrics.duration_buckets {
            tracing::warn!("metrics.duration_buckets change only on restart");
        }
        if new.metrics.series != old.metrics.series {
            tracing::warn!("metrics.series changes only on restart");
        }
        self.recorder.set_catalog(&new.catalog);
        let old_routes = self.routes.swap(Arc::new(routes));
        for gone in old
            .sources
            .iter()
            .filter(|o| !new.sources.iter().any(|n| n.name == o.name))
        {
            if let Some(handles) = old_routes.source_metrics(gone.name.as_str()) {
                self.recorder.retire_source(handles);
            }
        }
        self.config.store(Arc::new(new));
        Ok(())
    }
}

/// The interception CA for `config`: `kept` (from before a reload) with the hosts brought
/// up to date, or a new one; `None` while interception is off.
fn intercept_authority(
    config: &Config,
    kept: Option<Arc<Authority>>,
) -> Result<Option<Arc<Authority>>, CaError> {
    let i = &config.proxy.intercept;
    if !i.enabled {
        return Ok(None);
    }
    let mut hosts: Vec<String> = config
        .sources
        .iter()
        .flat_map(|s| s.matcher.hosts.iter().map(|h| h.to_ascii_lowercase()))
        .collect();
    hosts.sort();
    hosts.dedup();
    let now = std::time::SystemTime::now();
    if let Some(authority) = kept {
        authority.set_hosts(hosts, now)?;
        return Ok(Some(authority));
    }
    let dir = i.ca_dir.as_deref().unwrap_or(std::path::Path::new("."));
    let user = i.ca_cert_file.as_deref().zip(i.ca_key_file.as_deref());
    let authority = Authority::new(dir, user, hosts, now)?;
    let ca = if user.is_some() {
        "from proxy.intercept.ca_cert_file"
    } else {
        "made by remedy at start"
    };
    tracing::info!(
        ca_dir = %dir.display(),
        ca,
        "interception on: ca.pem and bundle.pem written"
    );
    Ok(Some(Arc::new(authority)))
}
