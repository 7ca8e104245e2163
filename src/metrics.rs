//! The Recorder: remedy's own registry, handles resolved once per (source, code), and
//! `record(outcome)`.
//!
//! The proxy never touches Prometheus types: it hands an [`Outcome`] to a [`SourceMetrics`].
//! Recording reads pre-resolved handles (a `OnceLock` per status code and origin), so the
//! per-response path formats no label string, takes no lock and does not allocate.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::catalog::{Catalog, class_label};
use crate::observe::classify::ApiErrors;

/// Who made the status the connector received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Upstream,
    Proxy,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Upstream => "upstream",
            Origin::Proxy => "proxy",
        }
    }
}

/// Why remedy made a 502/504 itself: the upstream could not be reached, answered too late, or
/// answered with what remedy cannot pass on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Connect,
    Dns,
    Tls,
    Timeout,
    Reset,
    /// The upstream's answer was not HTTP remedy can pass on: a malformed status line, a head
    /// over `max_response_headers` or `max_response_header_bytes`.
    Protocol,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Connect,
        ErrorKind::Dns,
        ErrorKind::Tls,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Dns => "dns",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Protocol => "protocol",
        }
    }
}

/// What happened to one request: computed once by the proxy, recorded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The status the connector received.
    pub status: u16,
    pub origin: Origin,
    /// From the request's arrival to the end of the response body.
    pub elapsed: Duration,
    /// Set when remedy answered for an unreachable upstream.
    pub error: Option<ErrorKind>,
    /// remedy's own remediation key for an answer of its own whose status and origin do not
    /// give it (running out of file descriptors).
    pub remediation: Option<&'static str>,
    /// The index of the source's endpoint (`routes`) the request called, `other` the last.
    pub endpoint: Option<u16>,
    /// The errors the API reported inside the response (a gRPC status, an error body), whose
    /// most frequent gives the response its remediation. Boxed: most responses have none.
    pub api_errors: Option<Box<ApiErrors>>,
}

pub const SOURCE_UNMATCHED: &str = "unmatched";

/// Which series remedy exports before they count anything (`metrics.series`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Series {
    /// What the run counted, and the in-flight gauge of each source: a series appears with
    /// its first count. The rules count a run from zero, so nothing is lost; the FAQ's info
    /// series come from the rules, once, rather than from every pod; the duration histogram
    /// is by source.
    #[default]
    Lean,
    /// As remedy exported before `lean`: every source's catalog codes and error kinds at 0,
    /// the `CONNECT` outcomes at 0, the duration histogram by source and class, and
    /// `remedy_faq_info` from every pod.
    Full,
}

/// All of remedy's metrics, in a registry of their own.
pub struct Recorder {
    registry: Registry,
    responses: IntCounterVec,
    route_responses: IntCounterVec,
    api_errors: IntCounterVec,
    duration: HistogramVec,
    errors: IntCounterVec,
    in_flight: IntGaugeVec,
    retry_after: GaugeVec,
    quota: [GaugeVec; 4],
    faq_info: IntGaugeVec,
    reload_successful: IntGauge,
    reload_timestamp: Gauge,
    intercept: Connects,
    series: Series,
    /// Sources a reload removed, whose series stay until a scrape has served their last counts.
    retiring: std::sync::Mutex<Vec<Retiring>>,
}

/// A removed source on its way out of the exposition.
#[derive(Debug)]
struct Retiring {
    name: String,
    /// Its handles as the routes held them: once no request holds them, nothing counts more.
    handles: std::sync::Weak<SourceMetrics>,
    /// A scrape has served its counts since the last request that could count ended.
    served: bool,
}

/// What became of a `CONNECT`, as `remedy_intercept_connections_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// Answered with remedy's TLS: its requests are routed and counted.
    Intercepted = 0,
    /// Passed through unobserved (`proxy.intercept.tunnel`).
    Tunnelled = 1,
    /// Refused: 403, or 405 with interception off.
    Refused = 2,
    /// Answered 200, then the connector's TLS handshake with remedy failed: it does not trust
    /// remedy's CA, or its SNI names another host.
    HandshakeFailed = 3,
}

/// `remedy_intercept_connections_total`, one handle per outcome, each made at its first count.
#[derive(Debug, Clone)]
pub struct Connects(std::sync::Arc<(IntCounterVec, [OnceLock<IntCounter>; 4])>);

impl Connects {
    pub fn count(&self, outcome: ConnectOutcome) {
        self.handle(outcome).inc();
    }

    fn handle(&self, outcome: ConnectOutcome) -> &IntCounter {
        let (vec, handles) = &*self.0;
        handles[outcome as usize].get_or_init(|| vec.with_label_values(&[outcome.as_str()]))
    }
}

impl ConnectOutcome {
    const ALL: [ConnectOutcome; 4] = [
        ConnectOutcome::Intercepted,
        ConnectOutcome::Tunnelled,
        ConnectOutcome::Refused,
        ConnectOutcome::HandshakeFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectOutcome::Intercepted => "intercepted",
            ConnectOutcome::Tunnelled => "tunnelled",
            ConnectOutcome::Refused => "refused",
            ConnectOutcome::HandshakeFailed => "handshake_failed",
        }
    }
}

/// Every metric's name, defined here once: the recorder registers them, and the rules, the
/// dashboard and the runbook query them by these constants.
pub mod names {
    pub const RESPONSES: &str = "remedy_upstream_responses_total";
    pub const DURATION: &str = "remedy_upstream_request_duration_seconds";
    pub const ERRORS: &str = "remedy_upstream_request_errors_total";
    pub const IN_FLIGHT: &str = "remedy_upstream_requests_in_flight";
    pub const RETRY_AFTER: &str = "remedy_upstream_retry_after_seconds";
    pub const REMAINING: &str = "remedy_upstream_ratelimit_remaining";
    pub const LIMIT: &str = "remedy_upstream_ratelimit_limit";
    pub const USED_RATIO: &str = "remedy_upstream_ratelimit_used_ratio";
    pub const RESET: &str = "remedy_upstream_ratelimit_reset_seconds";
    pub const INTERCEPT: &str = "remedy_intercept_connections_total";
    pub const API_ERRORS: &str = "remedy_upstream_api_errors_total";
    pub const ROUTE_RESPONSES: &str = "remedy_upstream_route_responses_total";
    pub const FAQ_INFO: &str = "remedy_faq_info";
    pub const BUILD_INFO: &str = "remedy_build_info";
    pub const RELOAD_SUCCESSFUL: &str = "remedy_config_last_reload_successful";
    pub const RELOAD_TIMESTAMP: &str = "remedy_config_last_reload_success_timestamp_seconds";
}

use names::RESPONSES;

/// The rate-limit gauges, in the order of [`SourceMetrics::quota`]'s fields, with their help.
pub const QUOTA_GAUGES: [(&str, &str); 4] = [
    (
        names::REMAINING,
        "Requests (or quota units) left in the source's quota, as of the last response that stated it.",
    ),
    (
        names::LIMIT,
        "The size of the source's quota, as of the last response that stated it.",
    ),
    (
        names::USED_RATIO,
        "Share of the source's quota used, 0 to 1, for the window nearest exhaustion.",
    ),
    (
        names::RESET,
        "Seconds until the source's quota is restored, as of the last response that stated it.",
    ),
];

/// Registers each metric as it is made.
struct Registering<'r>(&'r Registry);

impl Registering<'_> {
    fn add<C: Collector + Clone + 'static>(&self, metric: C) -> C {
        self.0
            .register(Box::new(metric.clone()))
            .expect("metric names are unique");
        metric
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn int_gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }
}

impl Recorder {
    /// A recorder whose duration histogram has `buckets`, exporting the `lean` series.
    pub fn new(buckets: &[f64]) -> Self {
        Self::with_series(buckets, Series::Lean)
    }

    /// A recorder whose duration histogram has `buckets` and which exports `series`; both
    /// fixed for the process's life.
    pub fn with_series(buckets: &[f64], series: Series) -> Self {
        let registry = Registry::new();
        let reg = Registering(&registry);
        let responses = reg.counters(
            RESPONSES,
            "Responses the connector received, by source, status and the FAQ's remediation key.",
            &["source", "code", "class", "remediation", "origin"],
        );
        let api_errors = reg.counters(
            names::API_ERRORS,
            "Errors the API reported inside a response rather than in its status (a gRPC status, an error body), by its code and the HTTP status it stands for.",
            &["source", "api_code", "code"],
        );
        let route_responses = reg.counters(
            names::ROUTE_RESPONSES,
            "Responses of the sources that declare routes, by the route (template) the request matched, or other.",
            &["source", "route", "code", "remediation"],
        );
        let intercept = reg.counters(
            names::INTERCEPT,
            "CONNECT requests, by what became of them: intercepted, tunnelled, refused, handshake_failed.",
            &["outcome"],
        );
        let duration = reg.add(
            HistogramVec::new(
                HistogramOpts::new(
                    names::DURATION,
                    "Time from a request's arrival to the end of its response body.",
                )
                .buckets(buckets.to_vec()),
                match series {
                    Series::Lean => &["source"][..],
                    Series::Full => &["source", "class"][..],
                },
            )
            .expect("valid metric"),
        );
        let errors = reg.counters(
            names::ERRORS,
            "Why remedy answered 502/504 itself: connect, dns, tls, timeout, reset, protocol.",
            &["source", "kind"],
        );
        let in_flight = reg.int_gauges(
            names::IN_FLIGHT,
            "Requests received and not yet fully answered.",
            &["source"],
        );
        let retry_after = reg.gauges(
            names::RETRY_AFTER,
            "The last Retry-After the upstream sent, in seconds.",
            &["source"],
        );
        let faq_info = reg.int_gauges(
            names::FAQ_INFO,
            "The FAQ catalog: meaning and advised action per status code. Always 1.",
            &["code", "name", "remediation", "advice"],
        );
        reg.int_gauges(
            names::BUILD_INFO,
            "remedy's version. Always 1.",
            &["version", "revision"],
        )
        .with_label_values(&[crate::VERSION, crate::REVISION])
        .set(1);
        let reload_successful = reg.add(
            IntGauge::new(
                names::RELOAD_SUCCESSFUL,
                "Whether the last config load or reload succeeded.",
            )
            .expect("valid metric"),
        );
        let reload_timestamp = reg.add(
            Gauge::new(
                names::RELOAD_TIMESTAMP,
                "When the config was last loaded successfully, as a Unix timestamp.",
            )
            .expect("valid metric"),
        );
        let quota = QUOTA_GAUGES.map(|(name, help)| reg.gauges(name, help, &["source"]));
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics register once");
        Recorder {
            registry,
            responses,
            route_responses,
            api_errors,
            duration,
            errors,
            in_flight,
            retry_after,
            quota,
            faq_info,
            reload_successful,
            reload_timestamp,
            retiring: std::sync::Mutex::default(),
            intercept: {
                let c = Connects(std::sync::Arc::new((intercept, Default::default())));
                if series == Series::Full {
                    for o in ConnectOutcome::ALL {
                        c.handle(o);
                    }
                }
                c
            },
            series,
        }
    }

    /// The `CONNECT` counters, for the proxy to count with.
    pub fn connects(&self) -> Connects {
        self.intercept.clone()
    }

    /// Handles for one source, its in-flight gauge exported at once; with `series: full`, the
    /// catalog's codes (and 200, 502/504 made by remedy), the error kinds and the duration
    /// classes at 0 too.
    pub fn source(&self, name: &str, catalog: &Catalog) -> SourceMetrics {
        self.source_with_routes(name, catalog, &[])
    }

    /// [`Self::source`] for a source that declares `routes`: its responses are counted by
    /// route too, each route's series made at its first count.
    pub fn source_with_routes(
        &self,
        name: &str,
        catalog: &Catalog,
        routes: &[String],
    ) -> SourceMetrics {
        // A source that comes back before its series were retired keeps them.
        self.lock_retiring().retain(|r| r.name != name);
        let mut m = self.handles(name, catalog);
        if !routes.is_empty() {
            let mut names = routes.to_vec();
            names.push(crate::endpoints::OTHER.to_owned());
            m.routes = Some(RouteCounts {
                source: name.to_owned(),
                vec: self.route_responses.clone(),
                handles: names.iter().map(|_| OnceLock::new()).collect(),
                names,
            });
        }
        m.in_flight();
        if self.series == Series::Full {
            m.counter(200, Origin::Upstream);
            for e in catalog.entries() {
                m.counter(e.code, Origin::Upstream);
            }
            for code in [502, 504] {
                m.counter(code, Origin::Proxy);
            }
            for class in ["2xx", "4xx", "5xx"] {
                m.histogram(class);
            }
            m.all_error_kinds();
        }
        m
    }

    /// Handles for requests no source matched (404, 405 and 400 made by remedy); with
    /// `series: full`, exported at 0 from the start.
    pub fn unmatched(&self, catalog: &Catalog) -> SourceMetrics {
        let m = self.handles(SOURCE_UNMATCHED, catalog);
        if self.series == Series::Full {
            m.counter(404, Origin::Proxy);
            m.in_flight();
            m.all_error_kinds();
        }
        m
    }

    fn handles(&self, name: &str, catalog: &Catalog) -> SourceMetrics {
        SourceMetrics {
            name: name.to_owned(),
            catalog: catalog.clone(),
            by_class: self.series == Series::Full,
            responses_vec: self.responses.clone(),
            responses: (0..CODE_SLOTS).map(|_| OnceLock::new()).collect(),
            api_errors_vec: self.api_errors.clone(),
            duration_vec: self.duration.clone(),
            duration: Default::default(),
            errors_vec: self.errors.clone(),
            errors: Default::default(),
            in_flight_vec: self.in_flight.clone(),
            in_flight: OnceLock::new(),
            retry_after_vec: self.retry_after.clone(),
            retry_after: OnceLock::new(),
            quota_vec: self.quota.clone(),
            quota: Default::default(),
            routes: None,
        }
    }

    /// Replaces `remedy_faq_info` with `catalog` (with `series: full`; otherwise the rules
    /// serve it).
    pub fn set_catalog(&self, catalog: &Catalog) {
        self.faq_info.reset();
        if self.series == Series::Lean {
            return;
        }
        for e in catalog.entries() {
            self.faq_info
                .with_label_values(&[
                    e.code.to_string().as_str(),
                    &e.name,
                    &e.remediation,
                    &e.advice_text(),
                ])
                .set(1);
        }
    }

    /// Drops every series of a source that left the config.
    /// Retires the series of a source a reload removed, whose `handles` the old routes held:
    /// they stay until requests that still hold them have been counted and one scrape has
    /// served the final counts, so that a reload loses no response.
    pub fn retire_source(&self, handles: &std::sync::Arc<SourceMetrics>) {
        self.lock_retiring().push(Retiring {
            name: handles.name.clone(),
            handles: std::sync::Arc::downgrade(handles),
            served: false,
        });
    }

    fn lock_retiring(&self) -> std::sync::MutexGuard<'_, Vec<Retiring>> {
        self.retiring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Removes every series of source `name`.
    pub fn remove_source(&self, name: &str) {
        remove_series(&self.responses, name);
        remove_series(&self.route_responses, name);
        remove_series(&self.api_errors, name);
        remove_series(&self.duration, name);
        remove_series(&self.errors, name);
        remove_series(&self.in_flight, name);
        remove_series(&self.retry_after, name);
        for g in &self.quota {
            remove_series(g, name);
        }
    }

    /// Records a config load: the success flag, and the time when it succeeded.
    pub fn config_loaded(&self, ok: bool) {
        self.reload_successful.set(i64::from(ok));
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.reload_timestamp.set(now.as_secs_f64());
        }
    }

    /// The text exposition of every metric. A retired source whose final counts an earlier
    /// scrape served is gone from it; one that nothing can count any more is in it one last time.
    pub fn render(&self) -> Vec<u8> {
        let mut retiring = self.lock_retiring();
        retiring.retain(|r| {
            if r.served {
                self.remove_source(&r.name);
            }
            !r.served
        });
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding into a Vec cannot fail");
        for r in retiring.iter_mut() {
            r.served = r.handles.strong_count() == 0;
        }
        out
    }
}

fn remove_series<B: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<B>,
    source: &str,
) {
    for family in Collector::collect(vec) {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if labels.get("source") == Some(&source) {
                let _ = vec.remove(&labels);
            }
        }
    }
}

/// Two slots (upstream, proxy) for each status 100–999, every status HTTP allows.
const CODE_SLOTS: usize = 900 * 2;

/// One source's handles. Cheap to share behind an `Arc`.
pub struct SourceMetrics {
    name: String,
    /// The catalog the handles were made with: the `remediation` label of each code.
    catalog: Catalog,
    responses_vec: IntCounterVec,
    responses: Box<[OnceLock<IntCounter>]>,
    api_errors_vec: IntCounterVec,
    /// Whether the duration histogram has a `class` label (`series: full`).
    by_class: bool,
    duration_vec: HistogramVec,
    duration: [OnceLock<Histogram>; 9],
    errors_vec: IntCounterVec,
    errors: [OnceLock<IntCounter>; 6],
    in_flight_vec: IntGaugeVec,
    in_flight: OnceLock<IntGauge>,
    retry_after_vec: GaugeVec,
    retry_after: OnceLock<Gauge>,
    quota_vec: [GaugeVec; 4],
    quota: [OnceLock<Gauge>; 4],
    /// By route, for a source that declares `routes`.
    routes: Option<RouteCounts>,
}

/// `remedy_upstream_route_responses_total` of one source: for each route (template, then
/// `other`), a handle per status and origin, the route's made at its first count.
struct RouteCounts {
    source: String,
    names: Vec<String>,
    vec: IntCounterVec,
    handles: Box<[OnceLock<Slots>]>,
}

/// A handle per status and origin, each made at its first count.
type Slots = Box<[OnceLock<IntCounter>]>;

impl RouteCounts {
    /// One response of route `i`, counted with `remediation`; `cached` says the label is what
    /// the status and origin give, so the handle of that slot may be kept.
    fn count(&self, i: u16, status: u16, origin: Origin, remediation: &str, cached: bool) {
        let i = usize::from(i).min(self.names.len() - 1);
        let handle = || {
            let code = status.to_string();
            self.vec.with_label_values(&[
                self.source.as_str(),
                self.names[i].as_str(),
                &code,
                remediation,
            ])
        };
        if !cached {
            handle().inc();
            return;
        }
        let slots =
            self.handles[i].get_or_init(|| (0..CODE_SLOTS).map(|_| OnceLock::new()).collect());
        slots[usize::from(status - 100) * 2 + origin as usize]
            .get_or_init(handle)
            .inc();
    }
}

impl SourceMetrics {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A request arrived.
    pub fn start(&self) {
        self.in_flight().inc();
    }

    fn in_flight(&self) -> &IntGauge {
        self.in_flight
            .get_or_init(|| self.in_flight_vec.with_label_values(&[&self.name]))
    }

    fn error_kind(&self, kind: ErrorKind) -> &IntCounter {
        self.errors[kind as usize].get_or_init(|| {
            self.errors_vec
                .with_label_values(&[self.name.as_str(), kind.as_str()])
        })
    }

    fn all_error_kinds(&self) {
        for kind in ErrorKind::ALL {
            self.error_kind(kind);
        }
    }

    /// The request's response ended (or was abandoned): counts it once.
    pub fn record(&self, o: &Outcome) {
        self.in_flight().dec();
        // What the connector received, as received: hyper passes on any status 100–999.
        let status = o.status.clamp(100, 999);
        let api = o.api_errors.as_deref().and_then(|e| Some((e, e.status()?)));
        match (o.remediation, api) {
            (Some(key), _) => self.own(status, o.origin, key),
            (None, None) => self.counter(status, o.origin).inc(),
            (None, Some((errors, stands_for))) => {
                self.api_errors(status, o.origin, errors, stands_for)
            }
        }
        if let (Some(routes), Some(i)) = (&self.routes, o.endpoint) {
            let (key, cached) = match (o.remediation, api) {
                (Some(key), _) => (key, false),
                (None, Some((_, stands_for))) => {
                    (self.catalog.remediation_label(stands_for), false)
                }
                (None, None) => (self.remediation_of(status, o.origin), true),
            };
            routes.count(i, status, o.origin, key, cached);
        }
        self.histogram(class_label(status))
            .observe(o.elapsed.as_secs_f64());
        if let Some(kind) = o.error {
            self.error_kind(kind).inc();
        }
    }

    /// The upstream's `Retry-After`, in seconds.
    pub fn retry_after(&self, seconds: f64) {
        self.retry_after
            .get_or_init(|| self.retry_after_vec.with_label_values(&[&self.name]))
            .set(seconds);
    }

    /// The quota a response stated: each field it knows replaces the last one.
    pub fn quota(&self, w: &crate::observe::ratelimit::Window) {
        let fields = [w.remaining, w.limit, w.used_ratio, w.reset_seconds];
        for (i, v) in fields.into_iter().enumerate() {
            if let Some(v) = v {
                self.quota[i]
                    .get_or_init(|| self.quota_vec[i].with_label_values(&[&self.name]))
                    .set(v);
            }
        }
    }

    /// A response in which the API reported errors: counted with `code` as received and the
    /// remediation of the status its most frequent error stands for, and each error by its code.
    /// Resolved by name on each call, since this is the rarer path.
    fn api_errors(&self, status: u16, origin: Origin, errors: &ApiErrors, stands_for: u16) {
        self.responses_vec
            .with_label_values(&[
                self.name.as_str(),
                &status.to_string(),
                class_label(status),
                self.catalog.remediation_label(stands_for),
                origin.as_str(),
            ])
            .inc();
        for e in errors.iter() {
            self.api_errors_vec
                .with_label_values(&[self.name.as_str(), &e.code, &e.status.to_string()])
                .inc_by(u64::from(e.count));
        }
    }

    /// An answer of remedy's own counted with `key`: resolved by name, the rare path.
    fn own(&self, status: u16, origin: Origin, key: &str) {
        self.responses_vec
            .with_label_values(&[
                self.name.as_str(),
                &status.to_string(),
                class_label(status),
                key,
                origin.as_str(),
            ])
            .inc();
    }

    /// The remediation a response of `status` made by `origin` is counted with.
    fn remediation_of(&self, status: u16, origin: Origin) -> &str {
        match (status, origin) {
            (503, Origin::Proxy) => crate::catalog::IN_FLIGHT_KEY,
            // remedy's own gRPC UNAVAILABLE: the upstream cannot take the call.
            (200, Origin::Proxy) => crate::catalog::UNREACHABLE_KEY,
            _ => self.catalog.remediation_label(status),
        }
    }

    fn counter(&self, status: u16, origin: Origin) -> &IntCounter {
        let slot = usize::from(status - 100) * 2 + origin as usize;
        self.responses[slot].get_or_init(|| {
            let code = status.to_string();
            self.responses_vec.with_label_values(&[
                self.name.as_str(),
                &code,
                class_label(status),
                self.remediation_of(status, origin),
                origin.as_str(),
            ])
        })
    }

    /// The histogram of `class` (`series: full`), or the source's one.
    fn histogram(&self, class: &'static str) -> &Histogram {
        if !self.by_class {
            return self.duration[0]
                .get_or_init(|| self.duration_vec.with_label_values(&[self.name.as_str()]));
        }
        let slot = usize::from(class.as_bytes()[0] - b'1');
        self.duration[slot].get_or_init(|| {
            self.duration_vec
                .with_label_values(&[self.name.as_str(), class])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: u16, origin: Origin) -> Outcome {
        Outcome {
            status,
            origin,
            elapsed: Duration::from_millis(20),
            error: None,
            remediation: None,
            endpoint: None,
            api_errors: None,
        }
    }

    #[test]
    fn lean_exports_what_was_counted_and_the_in_flight_gauge() {
        let r = Recorder::new(&[0.1, 1.0]);
        let m = r.source("github", &Catalog::builtin());
        let _u = r.unmatched(&Catalog::builtin());
        r.set_catalog(&Catalog::builtin());
        let series = |r: &Recorder| {
            let text = String::from_utf8(r.render()).unwrap();
            text.lines()
                .filter(|l| l.starts_with("remedy_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let before = series(&r);
        assert!(
            before.iter().all(|l| l
                .starts_with("remedy_upstream_requests_in_flight{source=\"github\"}")
                || l.starts_with("remedy_build_info")
                || l.starts_with("remedy_config_")),
            "{before:#?}"
        );
        m.start();
        m.record(&Outcome {
            error: Some(ErrorKind::Tls),
            remediation: None,
            endpoint: None,
            ..outcome(502, Origin::Proxy)
        });
        r.connects().count(ConnectOutcome::Refused);
        let after = series(&r);
        for line in [
            "remedy_upstream_responses_total{class=\"5xx\",code=\"502\",origin=\"proxy\",remediation=\"retry_later\",source=\"github\"} 1",
            "remedy_upstream_request_errors_total{kind=\"tls\",source=\"github\"} 1",
            "remedy_upstream_request_duration_seconds_count{source=\"github\"} 1",
            "remedy_intercept_connections_total{outcome=\"refused\"} 1",
        ] {
            assert!(
                after.iter().any(|l| l == line),
                "missing {line}\n{after:#?}"
            );
        }
        assert!(
            !after
                .iter()
                .any(|l| l.contains("kind=\"dns\"") || l.starts_with("remedy_faq_info"))
        );
    }

    #[test]
    fn full_exports_the_catalog_codes_at_zero() {
        let r = Recorder::with_series(&[0.1, 1.0], Series::Full);
        r.set_catalog(&Catalog::builtin());
        let _m = r.source("github", &Catalog::builtin());
        let text = String::from_utf8(r.render()).unwrap();
        assert!(text.contains(
            "remedy_upstream_responses_total{class=\"4xx\",code=\"429\",origin=\"upstream\",remediation=\"reduce_concurrency\",source=\"github\"} 0\n"
        ));
        assert!(text.contains(
            "remedy_upstream_responses_total{class=\"5xx\",code=\"502\",origin=\"proxy\",remediation=\"retry_later\",source=\"github\"} 0\n"
        ));
        assert!(text.contains("remedy_upstream_requests_in_flight{source=\"github\"} 0\n"));
        assert!(
            text.contains(
                "remedy_upstream_request_errors_total{kind=\"tls\",source=\"github\"} 0\n"
            )
        );
        assert!(text.contains(
            "remedy_upstream_request_duration_seconds_count{class=\"4xx\",source=\"github\"} 0\n"
        ));
        assert!(
            text.contains("remedy_intercept_connections_total{outcome=\"handshake_failed\"} 0\n")
        );
        assert!(text.contains("remedy_faq_info{advice=\"Check that the credentials are correct and valid.\",code=\"401\""));
    }

    #[test]
    fn record_counts_once_with_the_catalog_labels() {
        let r = Recorder::with_series(&[0.1, 1.0], Series::Full);
        let m = r.source("hub", &Catalog::builtin());
        for (status, origin) in [
            (200, Origin::Upstream),
            (418, Origin::Upstream),
            (504, Origin::Proxy),
            (302, Origin::Upstream),
        ] {
            m.start();
            m.record(&outcome(status, origin));
        }
        let text = String::from_utf8(r.render()).unwrap();
        for line in [
            "remedy_upstream_responses_total{class=\"2xx\",code=\"200\",origin=\"upstream\",remediation=\"none\",source=\"hub\"} 1",
            "remedy_upstream_responses_total{class=\"4xx\",code=\"418\",origin=\"upstream\",remediation=\"unlisted\",source=\"hub\"} 1",
            "remedy_upstream_responses_total{class=\"5xx\",code=\"504\",origin=\"proxy\",remediation=\"reduce_query_volume\",source=\"hub\"} 1",
            "remedy_upstream_responses_total{class=\"3xx\",code=\"302\",origin=\"upstream\",remediation=\"none\",source=\"hub\"} 1",
            "remedy_upstream_request_duration_seconds_count{class=\"2xx\",source=\"hub\"} 1",
            "remedy_upstream_requests_in_flight{source=\"hub\"} 0",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
    }

    /// A source a reload removes keeps its series while a request still holds its handles,
    /// and for one scrape after: that scrape serves its final counts, the next has none.
    #[test]
    fn a_retired_source_is_served_once_more_after_its_last_count() {
        let r = Recorder::new(&[1.0]);
        let gone = std::sync::Arc::new(r.source("gone", &Catalog::builtin()));
        let stays = r.source("stays", &Catalog::builtin());
        gone.start();
        r.retire_source(&gone);
        let in_flight = gone.clone();
        drop(gone);
        let has = |text: &[u8], line: &str| String::from_utf8_lossy(text).contains(line);
        let counted = "code=\"429\",origin=\"upstream\",remediation=\"reduce_concurrency\",source=\"gone\"} 1";
        assert!(has(
            &r.render(),
            "remedy_upstream_requests_in_flight{source=\"gone\"} 1"
        ));
        in_flight.record(&outcome(429, Origin::Upstream));
        drop(in_flight);
        assert!(has(&r.render(), counted), "the final counts are served");
        let after = r.render();
        assert!(!has(&after, "source=\"gone\""), "then the series are gone");
        stays.start();
        stays.record(&outcome(200, Origin::Upstream));
        assert!(has(&r.render(), "source=\"stays\"} 1"));
        // A source that comes back before it was served keeps its series.
        let back = std::sync::Arc::new(r.source("back", &Catalog::builtin()));
        back.start();
        back.record(&outcome(200, Origin::Upstream));
        r.retire_source(&back);
        drop(back);
        let _again = r.source("back", &Catalog::builtin());
        r.render();
        assert!(has(&r.render(), "source=\"back\"} 1"));
    }

    /// An answer of remedy's own with a key of its own is counted with it, whatever its status
    /// would give (remedy's 503 is otherwise `raise_max_in_flight`), and counts no error kind.
    #[test]
    fn an_own_answer_is_counted_with_its_own_key() {
        let r = Recorder::new(&[1.0]);
        let m = r.source("api", &Catalog::builtin());
        m.start();
        m.record(&Outcome {
            remediation: Some(crate::catalog::DESCRIPTORS_KEY),
            ..outcome(503, Origin::Proxy)
        });
        m.start();
        m.record(&outcome(503, Origin::Proxy));
        let text = String::from_utf8(r.render()).unwrap();
        for key in ["raise_file_descriptor_limit", "raise_max_in_flight"] {
            let line = format!(
                "remedy_upstream_responses_total{{class=\"5xx\",code=\"503\",origin=\"proxy\",remediation=\"{key}\",source=\"api\"}} 1"
            );
            assert!(text.contains(&line), "missing {line}\n{text}");
        }
        assert!(
            !text.contains("remedy_upstream_request_errors_total{"),
            "{text}"
        );
    }

    #[test]
    fn removed_source_loses_its_series_and_others_keep_counts() {
        let r = Recorder::new(&[1.0]);
        let a = r.source("a", &Catalog::builtin());
        let b = r.source("b", &Catalog::builtin());
        b.retry_after(3.0);
        a.start();
        a.record(&outcome(401, Origin::Upstream));
        r.remove_source("b");
        let text = String::from_utf8(r.render()).unwrap();
        assert!(!text.contains("source=\"b\""));
        assert!(text.contains(
            "code=\"401\",origin=\"upstream\",remediation=\"check_credentials\",source=\"a\"} 1"
        ));
    }
}
