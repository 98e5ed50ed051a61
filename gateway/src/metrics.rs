//! The data plane's Prometheus metrics (the controller has its own, in the same registry).
//!
//! Names follow Prometheus conventions (`_total` counters, `_seconds` histograms, base units).
//! The hot path touches only `requests` and `upstream_connect_errors`; label sets are built from
//! `Arc<str>` clones and static strings, so recording a request does not allocate once its
//! series exists.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `namespace/ingress`, or `none` when no route matched.
    pub route: Arc<str>,
    /// Status class: `1xx` … `5xx`, or `error` when no response was sent.
    pub code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct L4Labels {
    /// `namespace/name` of the L4Route (or Gateway API route), or `none`.
    pub route: Arc<str>,
    /// Connections: `accepted`, `no_route`, `no_upstream` or `upstream_error`. UDP flows:
    /// `created`, `expired`, `evicted`, `no_route` or `no_upstream`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OtlpLabels {
    /// `exported`, `failed` (the collector refused or was unreachable) or `dropped` (queue full).
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub listener: &'static str,
    /// `tls_handshake`, `request` (malformed head or body), `timeout` (head or body too slow).
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub listener: &'static str,
    /// `listener` (its limit) or `client` (the per-client limit).
    pub reason: &'static str,
}

/// The data plane's metrics, registered into a registry the binary owns (the controller
/// registers its own beside them).
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub upstream_connect_errors: Family<BackendLabels, Counter>,
    pub l4_connections: Family<L4Labels, Counter>,
    /// UDP flows of Gateway UDP listeners by route and outcome.
    pub udp_flows: Family<L4Labels, Counter>,
    pub udp_flows_active: Gauge,
    pub access_log_dropped: Counter,
    pub otlp_spans: Family<OtlpLabels, Counter>,
    pub connections_refused: Family<RefusedLabels, Counter>,
    /// Client faults (failed TLS handshakes, malformed or stalled requests): logged at debug
    /// level only, since any client can produce them, and counted here.
    pub client_faults: Family<FaultLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    /// Metrics registered nowhere (tests).
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::default();
        registry.register("requests", "HTTP requests by route and status class", requests.clone());
        let upstream_connect_errors = Family::default();
        registry.register(
            "upstream_connect_errors",
            "Failed connection attempts to backend endpoints",
            upstream_connect_errors.clone(),
        );
        let l4_connections = Family::default();
        registry.register(
            "l4_connections",
            "Connections on the L4 ports by L4Route and outcome",
            l4_connections.clone(),
        );
        let udp_flows = Family::default();
        registry.register(
            "udp_flows",
            "UDP flows of Gateway UDP listeners by route and outcome (created, expired, evicted, no_route, no_upstream)",
            udp_flows.clone(),
        );
        let udp_flows_active = Gauge::default();
        registry.register("udp_flows_active", "UDP flows currently relayed", udp_flows_active.clone());
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let otlp_spans = Family::default();
        registry.register("otlp_spans", "Request spans by export outcome", otlp_spans.clone());
        let client_faults = Family::default();
        registry.register(
            "client_faults",
            "Client faults by listener and kind (tls_handshake, request, timeout)",
            client_faults.clone(),
        );
        let connections_refused = Family::default();
        registry.register(
            "connections_refused",
            "Connections closed at once because a connection limit was reached",
            connections_refused.clone(),
        );
        Metrics {
            requests,
            upstream_connect_errors,
            l4_connections,
            udp_flows,
            udp_flows_active,
            access_log_dropped,
            otlp_spans,
            connections_refused,
            client_faults,
        }
    }

    /// Counts a client fault (a failed TLS handshake, a malformed or stalled request).
    pub fn client_fault(&self, listener: &'static str, kind: &'static str) {
        self.client_faults.get_or_create(&FaultLabels { listener, kind }).inc();
    }

    /// Counts a connection refused by a connection limit.
    pub fn refused(&self, listener: &'static str, why: crate::limits::Refused) {
        let reason = match why {
            crate::limits::Refused::Listener => "listener",
            crate::limits::Refused::Client => "client",
        };
        self.connections_refused.get_or_create(&RefusedLabels { listener, reason }).inc();
    }

    /// The request counters of one route, one per status class (created at zero).
    pub fn status_counters(&self, route: &Arc<str>) -> StatusCounters {
        StatusCounters(
            CLASSES.map(|code| self.requests.get_or_create(&RequestLabels { route: route.clone(), code }).clone()),
        )
    }
}

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// One route's `ferry_requests_total` series, indexed by status class.
#[derive(Debug, Clone)]
pub struct StatusCounters([Counter; 6]);

impl StatusCounters {
    /// Counts a request by its status (0 or out of range = `error`: no response was sent).
    pub fn record(&self, status: u16) {
        let class = match status {
            100..=599 => usize::from(status / 100 - 1),
            _ => 5,
        };
        self.0[class].inc();
    }
}
