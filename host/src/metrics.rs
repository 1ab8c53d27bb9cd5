//! Prometheus metrics: requests and latency per route, outbound requests and latency per
//! certificate, and certificate expiry for alerting.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboundLabels {
    certificate: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateOnly {
    certificate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExpiryLabels {
    name: String,
    environment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebSocketLabels {
    route: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonOnly {
    reason: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The host's metrics registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    request_seconds: Family<RouteOnly, Histogram, fn() -> Histogram>,
    outbound: Family<OutboundLabels, Counter>,
    outbound_seconds: Family<CertificateOnly, Histogram, fn() -> Histogram>,
    expiry: Family<ExpiryLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
    reloads: Counter<u64, AtomicU64>,
    store_reachable: Gauge<i64, std::sync::atomic::AtomicI64>,
    instances: Family<RouteOnly, Counter>,
    handshake_failures: Family<ReasonOnly, Counter>,
    callers_refused: Family<ReasonOnly, Counter>,
    websockets: Family<WebSocketLabels, Counter>,
    websockets_open: Gauge<i64, std::sync::atomic::AtomicI64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every edgemtls metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("edgemtls");
        let requests = Family::<RouteLabels, Counter>::default();
        let request_seconds = Family::<RouteOnly, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let outbound = Family::<OutboundLabels, Counter>::default();
        let outbound_seconds = Family::<CertificateOnly, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let expiry = Family::default();
        let reloads = Counter::default();
        let instances = Family::<RouteOnly, Counter>::default();
        registry.register("requests", "Requests served, by route and status", requests.clone());
        registry.register("request_duration_seconds", "Request latency by route", request_seconds.clone());
        registry.register(
            "outbound_requests",
            "Outbound requests by certificate name ('none' without) and outcome (status code or error)",
            outbound.clone(),
        );
        registry.register("outbound_duration_seconds", "Outbound request latency by certificate", outbound_seconds.clone());
        registry.register(
            "certificate_expiry_seconds",
            "Seconds until each certificate usable in this environment expires (negative: expired)",
            expiry.clone(),
        );
        registry.register("config_reloads", "Successful config reloads", reloads.clone());
        let store_reachable = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register(
            "store_reachable",
            "1 when the certificate store answered the last look, 0 while it does not (the host serves its last snapshot)",
            store_reachable.clone(),
        );
        registry.register(
            "instances_created",
            "Handler instances created, by route (with reuse, far fewer than requests)",
            instances.clone(),
        );
        let handshake_failures = Family::<ReasonOnly, Counter>::default();
        registry.register(
            "inbound_handshake_failures",
            "TLS handshakes on the listener that did not complete, by reason",
            handshake_failures.clone(),
        );
        let callers_refused = Family::<ReasonOnly, Counter>::default();
        registry.register(
            "inbound_callers_refused",
            "Requests refused for their client certificate (401), by reason",
            callers_refused.clone(),
        );
        registry.register(
            "upstream_revocation_checks",
            "Revocation checks of upstream server certificates, by result (good, revoked, unknown_soft_fail, failed)",
            crate::revocation::CHECKS.clone(),
        );
        registry.register(
            "inbound_caller_revocation_checks",
            "Revocation checks of callers' certificates on the TLS listener, by result (good, revoked, unknown_soft_fail, failed)",
            crate::revocation::CALLER_CHECKS.clone(),
        );
        let websockets = Family::<WebSocketLabels, Counter>::default();
        registry.register(
            "websockets",
            "WebSocket upgrades forwarded, by route and outcome (opened, over-limit, refused: the upstream did not switch protocols)",
            websockets.clone(),
        );
        let websockets_open = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register("websockets_open", "WebSocket tunnels open now", websockets_open.clone());
        Self {
            registry,
            requests,
            request_seconds,
            outbound,
            outbound_seconds,
            expiry,
            reloads,
            store_reachable,
            instances,
            handshake_failures,
            callers_refused,
            websockets,
            websockets_open,
        }
    }

    /// Counts a served request.
    pub fn record_request(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests.get_or_create(&RouteLabels { route: route.to_string(), status }).inc();
        self.request_seconds.get_or_create(&RouteOnly { route: route.to_string() }).observe(elapsed.as_secs_f64());
    }

    /// Counts an outbound request.
    pub fn record_outbound(&self, certificate: Option<&str>, outcome: &str, elapsed: Duration) {
        let certificate = certificate.unwrap_or("none").to_string();
        self.outbound.get_or_create(&OutboundLabels { certificate: certificate.clone(), outcome: outcome.to_string() }).inc();
        self.outbound_seconds.get_or_create(&CertificateOnly { certificate }).observe(elapsed.as_secs_f64());
    }

    /// Counts a new handler instance for `route`.
    pub fn record_instance(&self, route: &str) {
        self.instances.get_or_create(&RouteOnly { route: route.to_string() }).inc();
    }

    /// How many instances were created for `route`.
    pub fn instances_created(&self, route: &str) -> u64 {
        self.instances.get_or_create(&RouteOnly { route: route.to_string() }).get()
    }

    /// Counts a TLS handshake on the listener that did not complete.
    pub fn record_handshake_failure(&self, reason: &'static str) {
        self.handshake_failures.get_or_create(&ReasonOnly { reason }).inc();
    }

    /// Counts a request refused for its caller's certificate.
    pub fn record_caller_refused(&self, reason: &'static str) {
        self.callers_refused.get_or_create(&ReasonOnly { reason }).inc();
    }

    /// Counts a WebSocket upgrade on `route` by its outcome.
    pub fn record_websocket(&self, route: &str, outcome: &'static str) {
        self.websockets.get_or_create(&WebSocketLabels { route: route.to_string(), outcome }).inc();
    }

    /// Counts a tunnel as open (`opened`) or no longer open.
    pub fn set_websocket_open(&self, opened: bool) {
        if opened {
            self.websockets_open.inc();
        } else {
            self.websockets_open.dec();
        }
    }

    /// Counts a config reload.
    pub fn record_reload(&self) {
        self.reloads.inc();
    }

    /// Sets the expiry gauge of one certificate.
    pub fn set_expiry(&self, name: &str, environment: &str, seconds: i64) {
        self.expiry.get_or_create(&ExpiryLabels { name: name.to_string(), environment: environment.to_string() }).set(seconds);
    }

    /// Records whether the store answered the last look.
    pub fn set_store_reachable(&self, reachable: bool) {
        self.store_reachable.set(i64::from(reachable));
    }

    /// Forgets all expiry gauges (before setting the current ones).
    pub fn clear_expiry(&self) {
        self.expiry.clear();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
