//! Publishing: compile a snapshot, swap the table in, and report what happened.
//!
//! The one place where a new table becomes live: build, one `ArcSwap::store`, then metrics,
//! readiness and logs. Diagnostics are logged when they change, not on every rebuild.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use gateway::{Runtime, SharedTable};

use crate::build::{BuildOptions, GatewayApiStatus, Incremental, Outcome};
use crate::diagnostic::{Diagnostic, Severity};
use crate::metrics::{ControlMetrics, SeverityLabels};
use crate::snapshot::{Changes, Snapshot};

pub struct Publisher {
    table: SharedTable,
    metrics: Arc<ControlMetrics>,
    ready: Arc<AtomicBool>,
    /// Builds each table from the last (recompiling what changed), with the state each build's
    /// routes share with the live table's.
    builder: Incremental,
    last: BTreeSet<Diagnostic>,
    /// Told after every swap (the Gateway port manager binds and closes sockets then).
    notify: Option<tokio::sync::watch::Sender<()>>,
    /// The Gateway API status of the last publish.
    gateway_status: Arc<GatewayApiStatus>,
    /// What each L4Route's status says as of the last publish (shared with `/routes`).
    l4_status: Arc<ArcSwap<Vec<gateway::L4Status>>>,
}

impl Publisher {
    pub fn new(
        table: SharedTable,
        metrics: Arc<ControlMetrics>,
        ready: Arc<AtomicBool>,
        opts: BuildOptions,
        runtime: Arc<Runtime>,
    ) -> Self {
        let (gateway_status, l4_status) = (Arc::default(), Arc::default());
        Publisher {
            table,
            metrics,
            ready,
            builder: Incremental::new(opts, runtime),
            last: BTreeSet::new(),
            notify: None,
            gateway_status,
            l4_status,
        }
    }

    /// Tells `notify` after every table swap.
    pub fn with_notify(mut self, notify: tokio::sync::watch::Sender<()>) -> Self {
        self.notify = Some(notify);
        self
    }

    /// Builds and stores a table from `snapshot`, which differs from the last one published by
    /// `changes` (only what they touch is recompiled); `source_diagnostics` (parse errors) are
    /// reported with the build's, after `annotate` (the source's way to say where an object came
    /// from). Marks the gateway ready when `complete` (every source synced).
    pub fn publish(
        &mut self,
        snapshot: &Snapshot,
        changes: &Changes,
        source_diagnostics: Vec<Diagnostic>,
        annotate: impl FnOnce(&mut [Diagnostic]),
        complete: bool,
    ) {
        let started = Instant::now();
        let (objects, ignored) = (snapshot.len(), snapshot.ignored);
        let built = self.builder.update(snapshot, changes);
        let (table, mut build_diagnostics) = (built.table, built.diagnostics);
        self.gateway_status = built.gateway_status;
        self.l4_status.store(built.l4_status);
        let routes = table.route_count();
        if built.outcome != Outcome::Unchanged {
            self.table.store(table);
        }
        let elapsed = started.elapsed();
        if let Some(notify) = &self.notify {
            notify.send_replace(());
        }
        annotate(&mut build_diagnostics);

        self.metrics.table_builds.inc();
        self.metrics.build_duration.observe(elapsed.as_secs_f64());
        self.metrics.routes.set(routes as i64);
        self.metrics.objects_ignored.set(ignored as i64);
        let all: BTreeSet<Diagnostic> = source_diagnostics.into_iter().chain(build_diagnostics).collect();
        for (sev, label) in [(Severity::Error, "error"), (Severity::Warning, "warning")] {
            let n = all.iter().filter(|d| d.severity == sev).count();
            self.metrics.diagnostics.get_or_create(&SeverityLabels { severity: label }).set(n as i64);
        }
        for d in all.difference(&self.last) {
            match d.severity {
                Severity::Error => tracing::warn!(object = %d.object, field = %d.field, "{d}"),
                Severity::Warning => tracing::info!(object = %d.object, field = %d.field, "{d}"),
            }
        }
        self.last = all;
        let (build, recompiled) = match built.outcome {
            Outcome::Unchanged => ("unchanged", 0),
            Outcome::Partial { ingresses } => ("partial", ingresses),
            Outcome::Full(why) => (why, objects),
        };
        tracing::info!(
            objects,
            routes,
            diagnostics = self.last.len(),
            build_ms = elapsed.as_secs_f64() * 1e3,
            build,
            recompiled,
            "routing table stored"
        );
        if complete && !self.ready.swap(true, Ordering::SeqCst) {
            tracing::info!("first table live; ready");
        }
    }
}

impl Publisher {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn options(&self) -> &BuildOptions {
        self.builder.options()
    }

    /// What the status of every L4Route says, as of the last publish.
    pub fn l4_status(&self) -> Arc<Vec<gateway::L4Status>> {
        self.l4_status.load_full()
    }

    /// The L4Route status of each publish from now on, for readers elsewhere (`/routes`).
    pub fn l4_status_handle(&self) -> Arc<ArcSwap<Vec<gateway::L4Status>>> {
        self.l4_status.clone()
    }

    /// What the status of each Gateway API object of ours should say, as of the last publish.
    pub fn gateway_status(&self) -> Arc<GatewayApiStatus> {
        self.gateway_status.clone()
    }

    /// The diagnostics of the last publish.
    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.last.iter()
    }
}
