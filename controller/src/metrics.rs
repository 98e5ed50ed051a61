//! The controller's Prometheus metrics: builds, diagnostics, the Kubernetes source's health.
//! Registered into the registry the binary owns, beside the data plane's.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeverityLabels {
    pub severity: &'static str,
}

#[derive(Debug)]
pub struct ControlMetrics {
    pub table_builds: Counter,
    pub build_duration: Histogram,
    pub diagnostics: Family<SeverityLabels, Gauge>,
    pub objects_ignored: Gauge,
    pub routes: Gauge,
    /// Kubernetes mode: 1 while every watch is connected.
    pub source_connected: Gauge,
    /// Kubernetes mode: seconds since every watch was last connected (0 while connected).
    pub source_sync_age: Gauge<f64, AtomicU64>,
}

impl Default for ControlMetrics {
    /// Metrics registered nowhere (tests).
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}

impl ControlMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let table_builds = Counter::default();
        registry.register("table_builds", "Routing tables compiled and stored", table_builds.clone());
        let build_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "table_build_duration_seconds",
            "Time to compile a snapshot into a routing table",
            build_duration.clone(),
        );
        let diagnostics = Family::default();
        registry.register(
            "build_diagnostics",
            "Diagnostics of the last build; errors mean an object or part of one was skipped",
            diagnostics.clone(),
        );
        let objects_ignored = Gauge::default();
        registry.register(
            "objects_ignored",
            "Objects of kinds ferry does not use, in the last snapshot",
            objects_ignored.clone(),
        );
        let routes = Gauge::default();
        registry.register("routes", "Host and path rules in the live table", routes.clone());
        let source_connected = Gauge::default();
        registry.register(
            "source_connected",
            "Kubernetes mode: 1 while every watch on the API server is connected, else 0",
            source_connected.clone(),
        );
        let source_sync_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "source_sync_age_seconds",
            "Kubernetes mode: seconds since every watch on the API server was last connected (0 while connected)",
            source_sync_age.clone(),
        );
        ControlMetrics {
            table_builds,
            build_duration,
            diagnostics,
            objects_ignored,
            routes,
            source_connected,
            source_sync_age,
        }
    }
}
