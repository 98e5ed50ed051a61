//! ferry's control plane: sources of Kubernetes objects, the `Snapshot` they fill, and the pure
//! `build()` that compiles a snapshot into the data plane's `RouteTable`.
//!
//! Data flows one way: source → `Snapshot` → `build()` → `Publisher` → `ArcSwap<RouteTable>`.
//! Nothing here serves traffic, and nothing in the data plane reaches back here.

pub mod build;
pub mod crd;
pub mod diagnostic;
pub mod gateway_api;
pub mod gateway_service;
pub mod gateway_status;
pub mod metrics;
pub mod publish;
pub mod snapshot;
pub mod source;
pub mod status;

pub use build::{build, build_all, build_with, BuildOptions, Built, GatewayApiStatus, Incremental, Outcome, Update};
pub use diagnostic::{Diagnostic, ObjectRef, Severity};
pub use metrics::ControlMetrics;
pub use publish::Publisher;
pub use snapshot::{Changes, Object, Snapshot};
pub use source::kube::KubeOptions;
pub use status::LeaseOptions;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

/// How long a burst of events must be quiet before we rebuild, and the longest we wait. The
/// events of one write or rename arrive within microseconds, and every millisecond here is
/// propagation delay, so the quiet window is short; an event that ends its burst (a file closed
/// after writing, renamed into place or removed; an endpoint change) does not wait for it.
const DEBOUNCE_QUIET: Duration = Duration::from_millis(3);
const DEBOUNCE_MAX: Duration = Duration::from_millis(100);
/// Full rescan even without file events.
const RESYNC: Duration = Duration::from_secs(2);

/// Manifest mode: scan, publish, then rebuild on every (coalesced) change. Runs forever.
pub async fn run_manifests(paths: Vec<PathBuf>, mut publisher: Publisher) {
    let mut source = source::files::ManifestSource::new(paths);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _watcher = source::files::watch(source.roots(), tx, RESYNC);
    let mut published = false;
    let mut complained = false;
    // The paths events named since the last scan; `None`: scan everything.
    let mut named: Option<Vec<std::path::PathBuf>> = None;
    loop {
        let started = std::time::Instant::now();
        let report = match named.take() {
            Some(paths) => source.scan_paths(&paths),
            None => source.scan(),
        };
        if !report.missing.is_empty() && !complained {
            for p in &report.missing {
                tracing::error!(path = %p.display(), "manifest path does not exist; waiting for it (not ready)");
            }
        }
        complained = !report.missing.is_empty();
        let complete = report.missing.is_empty();
        if report.changed || !published || complete && !publisher.is_ready() {
            let scanned = started.elapsed();
            let changes = source.take_changes();
            tracing::debug!(scan_ms = scanned.as_secs_f64() * 1e3, changes = changes.objects().len(), "manifests read");
            let diagnostics = source.diagnostics();
            publisher.publish(source.snapshot(), &changes, diagnostics, |d| source.annotate(d), complete);
            published = true;
        }
        let Some(first) = rx.recv().await else { return };
        let ended = first.complete;
        named = first.paths;
        let ends = |event: &source::files::FileEvent| event.complete;
        coalesce(&mut rx, ended, ends, |event| match (&mut named, event.paths) {
            (Some(paths), Some(more)) => paths.extend(more),
            (all, _) => *all = None,
        })
        .await;
    }
}

/// A channel [`coalesce`] drains: bounded (the Kubernetes watches) or not (file events).
trait Events<T> {
    async fn next(&mut self) -> Option<T>;
    /// An event already queued.
    fn ready(&mut self) -> Option<T>;
}

impl<T> Events<T> for mpsc::Receiver<T> {
    async fn next(&mut self) -> Option<T> {
        self.recv().await
    }
    fn ready(&mut self) -> Option<T> {
        self.try_recv().ok()
    }
}

impl<T> Events<T> for mpsc::UnboundedReceiver<T> {
    async fn next(&mut self) -> Option<T> {
        self.recv().await
    }
    fn ready(&mut self) -> Option<T> {
        self.try_recv().ok()
    }
}

/// The Kubernetes client configuration: in-cluster when running in a pod, else `KUBECONFIG` /
/// `~/.kube/config`. Called before the gateway starts so a missing configuration fails start-up.
pub async fn kube_config() -> Result<::kube::Config, String> {
    ::kube::Config::infer().await.map_err(|e| e.to_string())
}

/// Kubernetes mode: watch the API server and publish on every change. Runs forever.
pub async fn run_kube(
    config: ::kube::Config,
    opts: KubeOptions,
    metrics: std::sync::Arc<ControlMetrics>,
    publisher: Publisher,
) -> Result<(), String> {
    let mut config = config;
    // The API server's audit log then says which replica did what.
    let agent = format!("ferry/{} ({})", env!("CARGO_PKG_VERSION"), opts.lease.identity);
    if let Ok(agent) = http::HeaderValue::from_str(&agent) {
        config.headers.push((http::header::USER_AGENT, agent));
    }
    let client = ::kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;
    source::kube::run(client, opts, metrics, publisher).await;
    Ok(())
}

/// Drains the rest of a burst whose first event came, handing each event to `each`: until the
/// burst has been quiet for `DEBOUNCE_QUIET` (at most `DEBOUNCE_MAX`), or, as soon as an event
/// `ends` the burst (`ended`: the first one did), only what is already queued. Returns `false`
/// once the channel is closed.
async fn coalesce<T>(
    rx: &mut impl Events<T>,
    mut ended: bool,
    ends: impl Fn(&T) -> bool,
    mut each: impl FnMut(T),
) -> bool {
    let deadline = tokio::time::Instant::now() + DEBOUNCE_MAX;
    loop {
        if ended {
            while let Some(event) = rx.ready() {
                each(event);
            }
            return true;
        }
        let quiet = tokio::time::Instant::now() + DEBOUNCE_QUIET;
        match tokio::time::timeout_at(quiet.min(deadline), rx.next()).await {
            Ok(Some(event)) => {
                ended = ends(&event);
                each(event);
                if tokio::time::Instant::now() >= deadline {
                    return true;
                }
            }
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `coalesce` hands over after `first`, with `later` sent at the given (virtual) times.
    async fn burst(first: (u32, bool), later: &[(u64, u32, bool)]) -> Vec<u32> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for &(at, n, ends) in later {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(at)).await;
                let _ = tx.send((n, ends));
            });
        }
        tokio::task::yield_now().await;
        let mut got = vec![first.0];
        assert!(coalesce(&mut rx, first.1, |e: &(u32, bool)| e.1, |e| got.push(e.0)).await);
        got
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_waits_for_quiet_unless_an_event_ends_it() {
        // Events 1 ms apart join the burst until 3 ms pass without one.
        assert_eq!(burst((1, false), &[(1_000, 2, false), (2_000, 3, false), (6_000, 4, false)]).await, [1, 2, 3]);
        // An event that ends the burst: what is queued comes with it, later events do not.
        assert_eq!(burst((1, false), &[(1_000, 2, true), (1_500, 3, false)]).await, [1, 2]);
        assert_eq!(burst((1, true), &[(0, 2, false), (100, 3, false)]).await, [1, 2]);
        // A burst that never goes quiet ends after DEBOUNCE_MAX.
        let steady: Vec<(u64, u32, bool)> = (1..=200).map(|i| (i * 1_000, i as u32 + 1, false)).collect();
        let n = burst((1, false), &steady).await.len();
        assert!((99..=101).contains(&n), "{n} events in a 100 ms burst of one per ms");
    }
}
