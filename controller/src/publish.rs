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
use crate::diagnostic::{Diagnostic, Filed, Severity};
use crate::metrics::{ControlMetrics, SeverityLabels};
use crate::snapshot::{Changes, Snapshot};

pub struct Publisher {
    table: SharedTable,
    metrics: Arc<ControlMetrics>,
    ready: Arc<AtomicBool>,
    /// Builds each table from the last (recompiling what changed), with the state each build's
    /// routes share with the live table's.
    builder: Incremental,
    /// The build's diagnostics as last published (with their origins).
    diagnostics: Filed,
    /// The source's diagnostics (parse errors) as last published.
    source_diagnostics: BTreeSet<Diagnostic>,
    /// Bumped whenever a publish changes a diagnostic.
    diagnostics_generation: u64,
    /// Told after every swap (the Gateway port manager binds and closes sockets then).
    notify: Option<tokio::sync::watch::Sender<()>>,
    /// The Gateway API status of the last publish.
    gateway_status: Arc<GatewayApiStatus>,
    /// What each L4Route's status says as of the last publish (shared with `/routes`).
    l4_status: Arc<ArcSwap<Vec<gateway::L4Status>>>,
    /// Called after a whole build is live, on the thread that read and built it.
    after_whole_build: Option<fn()>,
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
            diagnostics: Filed::default(),
            source_diagnostics: BTreeSet::new(),
            diagnostics_generation: 0,
            notify: None,
            gateway_status,
            l4_status,
            after_whole_build: None,
        }
    }

    /// Calls `f` after every whole build (the first, of everything loaded, among them) is live
    /// and logged: the binary gives the memory the build left free back to the system there.
    pub fn with_after_whole_build(mut self, f: fn()) -> Self {
        self.after_whole_build = Some(f);
        self
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
        let table = built.table;
        self.gateway_status = built.gateway_status;
        self.l4_status.store(built.l4_status);
        let routes = table.route_count();
        // An endpoint change is made in the backends of the table already live.
        if matches!(built.outcome, Outcome::Partial { .. } | Outcome::Full(_)) {
            self.table.store(table);
        }
        let elapsed = started.elapsed();
        if let Some(notify) = &self.notify {
            notify.send_replace(());
        }

        // Diagnostics: only those of the Ingresses the update recompiled are new (a whole build
        // may change any). They get their origins, and the ones not reported before are logged.
        let mut fresh: Vec<Diagnostic> = Vec::new();
        match &built.replaced {
            None => {
                let mut all: Vec<Diagnostic> = built.diagnostics.iter().cloned().collect();
                annotate(&mut all);
                let before: BTreeSet<&Diagnostic> = self.diagnostics.iter().collect();
                fresh.extend(all.iter().filter(|d| !before.contains(d)).cloned());
                self.diagnostics = Filed::new(all);
                self.diagnostics_generation += 1;
            }
            Some(keys) => {
                let lens: Vec<usize> = keys.iter().map(|k| built.diagnostics.ingress(k).len()).collect();
                let mut flat: Vec<Diagnostic> =
                    keys.iter().flat_map(|k| built.diagnostics.ingress(k).iter().cloned()).collect();
                annotate(&mut flat);
                let mut flat = flat.into_iter();
                for (key, len) in keys.iter().zip(lens) {
                    let list: Vec<Diagnostic> = flat.by_ref().take(len).collect();
                    let old = self.diagnostics.ingress(key);
                    if old != list.as_slice() {
                        fresh.extend(list.iter().filter(|d| !old.contains(d)).cloned());
                        self.diagnostics.set_ingress(key, list);
                        self.diagnostics_generation += 1;
                    }
                }
            }
        }
        let source: BTreeSet<Diagnostic> = source_diagnostics.into_iter().collect();
        if source != self.source_diagnostics {
            fresh.extend(source.difference(&self.source_diagnostics).cloned());
            self.source_diagnostics = source;
            self.diagnostics_generation += 1;
        }
        fresh.sort();
        for d in &fresh {
            match d.severity {
                Severity::Error => tracing::warn!(object = %d.object, field = %d.field, "{d}"),
                Severity::Warning => tracing::info!(object = %d.object, field = %d.field, "{d}"),
            }
        }

        self.metrics.table_builds.inc();
        self.metrics.build_duration.observe(elapsed.as_secs_f64());
        self.metrics.routes.set(routes as i64);
        self.metrics.objects_ignored.set(ignored as i64);
        for (sev, label) in [(Severity::Error, "error"), (Severity::Warning, "warning")] {
            let n = self.diagnostics.count(sev) + self.source_diagnostics.iter().filter(|d| d.severity == sev).count();
            self.metrics.diagnostics.get_or_create(&SeverityLabels { severity: label }).set(n as i64);
        }
        let (build, recompiled, new_endpoints) = match built.outcome {
            Outcome::Unchanged => ("unchanged", 0, 0),
            Outcome::Partial { ingresses } => ("partial", ingresses, 0),
            Outcome::Endpoints { backends } => ("endpoints", 0, backends),
            Outcome::Full(why) => (why, objects, 0),
        };
        tracing::info!(
            objects,
            routes,
            diagnostics = self.diagnostics.len() + self.source_diagnostics.len(),
            build_ms = elapsed.as_secs_f64() * 1e3,
            build,
            recompiled,
            backends_with_new_endpoints = new_endpoints,
            "routing table stored"
        );
        if complete && !self.ready.swap(true, Ordering::SeqCst) {
            tracing::info!("first table live; ready");
        }
        if let (Some(f), Outcome::Full(_)) = (self.after_whole_build, built.outcome) {
            let started = Instant::now();
            f();
            tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, "after a whole build");
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

    /// The diagnostics of the last publish: the source's, then the build's (in no particular
    /// order).
    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.source_diagnostics.iter().chain(self.diagnostics.iter())
    }

    /// The build's diagnostics of the last publish, and a number that changes whenever any
    /// diagnostic does (so readers need not compare them).
    pub fn build_diagnostics(&self) -> (&Filed, u64) {
        (&self.diagnostics, self.diagnostics_generation)
    }
}
