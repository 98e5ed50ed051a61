//! `build()`: compile a `Snapshot` into a `RouteTable` plus diagnostics.
//!
//! Pure: no I/O, no clock, no randomness; the same snapshot always gives the same table and the
//! same diagnostics in the same order. All Kubernetes semantics live here; the data plane only
//! looks things up. One module per input kind (`ingress`, `service`, `tls`); references between
//! objects are resolved in `service` and `tls`, which record why a reference failed.

mod annotations;
/// The prefix of ferry's own annotations.
pub use annotations::PREFIX as ANNOTATION_PREFIX;
mod backend_tls;
mod class;
pub mod gateway_api;
mod incremental;
mod ingress;
mod l4;
mod service;
mod tls;

use std::sync::Arc;

use gateway::{RouteTable, Runtime, TableBuilder};

use crate::diagnostic::Diagnostic;
use crate::snapshot::Snapshot;

pub use annotations::{markdown_table as annotations_table, nginx_markdown_table as nginx_annotations_table};
pub use class::is_ours;
pub use gateway_api::{GatewayApiStatus, SUPPORTED_FEATURES};
pub use incremental::{Incremental, Outcome, Update};

/// The parts of ferry's configuration that change what is compiled.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `--ingress-class`.
    pub ingress_class: String,
    /// `--controller-name`: `IngressClass.spec.controller` values that are ours.
    pub controller_name: String,
    /// `--gateway-controller-name`: `GatewayClass.spec.controllerName` that is ours.
    pub gateway_controller_name: String,
    /// `--default-tls-secret` as (namespace, name).
    pub default_tls_secret: Option<(String, String)>,
    /// `--l4-ports`: gateway ports L4Routes may use.
    pub l4_ports: std::collections::BTreeSet<u16>,
    /// `--allow-external-name`: route to ExternalName Services.
    pub allow_external_name: bool,
    /// `--nginx-annotations`: honour the supported `nginx.ingress.kubernetes.io/*` annotations.
    pub nginx_annotations: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            ingress_class: "ferry".into(),
            controller_name: "ferry.dev/ingress-controller".into(),
            gateway_controller_name: "ferry.dev/gateway-controller".into(),
            default_tls_secret: None,
            l4_ports: Default::default(),
            allow_external_name: false,
            nginx_annotations: false,
        }
    }
}

/// Compiles a snapshot. Objects that cannot be compiled are skipped (at the finest grain: one
/// path, one rule, one TLS entry) with a diagnostic; everything else is built. With a runtime of
/// its own: the table shares no state with any other (see [`build_with`]).
pub fn build(snapshot: &Snapshot, opts: &BuildOptions) -> (RouteTable, Vec<Diagnostic>) {
    let built = build_all(snapshot, opts);
    (built.table, built.diagnostics)
}

/// Everything one build produces.
pub struct Built {
    pub table: RouteTable,
    pub diagnostics: Vec<Diagnostic>,
    /// What the status of each Gateway API object of ours should say.
    pub gateway_status: GatewayApiStatus,
    /// What the status of each L4Route should say, in compile order.
    pub l4_status: Vec<gateway::L4Status>,
}

/// [`build`], with the Gateway API status beside the table and diagnostics.
pub fn build_all(snapshot: &Snapshot, opts: &BuildOptions) -> Built {
    build_with(snapshot, opts, &Arc::new(Runtime::default()))
}

/// [`build_all`] with the state that outlives tables taken from `runtime` (rate-limit buckets,
/// affinity, endpoint load and health): the same objects as the live table's where a key is
/// unchanged. The result depends on nothing else but the snapshot and the options.
pub fn build_with(snapshot: &Snapshot, opts: &BuildOptions, runtime: &Arc<Runtime>) -> Built {
    build_keeping(snapshot, opts, runtime, |_| {})
}

/// [`build_with`], handing the build's backends to `keep` (an incremental build reuses them).
fn build_keeping(
    snapshot: &Snapshot,
    opts: &BuildOptions,
    runtime: &Arc<Runtime>,
    keep: impl FnOnce(service::Resolver<'_>),
) -> Built {
    let services = service::Resolver::new(snapshot, opts.allow_external_name, runtime);
    let mut cx = Context::new(snapshot, opts, runtime, services);
    ingress::compile_all(&mut cx);
    gateway_api::compile_all(&mut cx);
    tls::compile_default(&mut cx);
    l4::compile_all(&mut cx);
    let Context { table, diagnostics, gateway_status, l4_status, services, .. } = cx;
    keep(services);
    Built { table: table.finish(), diagnostics, gateway_status, l4_status }
}

/// Compiles only `ingresses` (of ours), with a resolver that knows the Services they name: the
/// parts of a table an incremental build replaces (see `incremental`).
fn build_ingresses<'a>(
    snapshot: &'a Snapshot,
    opts: &'a BuildOptions,
    runtime: &'a Arc<Runtime>,
    ingresses: Vec<&'a k8s_openapi::api::networking::v1::Ingress>,
    services: service::Resolver<'a>,
) -> (RouteTable, Vec<Diagnostic>, service::Resolver<'a>) {
    let mut cx = Context::new(snapshot, opts, runtime, services);
    ingress::compile_set(&mut cx, ingresses);
    (cx.table.finish(), cx.diagnostics, cx.services)
}

/// State shared by the processors during one build.
struct Context<'a> {
    snapshot: &'a Snapshot,
    opts: &'a BuildOptions,
    runtime: &'a Arc<Runtime>,
    table: TableBuilder,
    diagnostics: Vec<Diagnostic>,
    services: service::Resolver<'a>,
    certs: tls::CertCache,
    gateway_status: GatewayApiStatus,
    /// BackendTLSPolicies of this build (Gateway API backends only).
    backend_tls: backend_tls::Policies,
    l4_status: Vec<gateway::L4Status>,
}

impl<'a> Context<'a> {
    fn new(
        snapshot: &'a Snapshot,
        opts: &'a BuildOptions,
        runtime: &'a Arc<Runtime>,
        services: service::Resolver<'a>,
    ) -> Self {
        Context {
            snapshot,
            opts,
            runtime,
            table: TableBuilder::new(),
            diagnostics: Vec::new(),
            services,
            certs: tls::CertCache::default(),
            gateway_status: GatewayApiStatus::default(),
            backend_tls: Default::default(),
            l4_status: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}], sessionAffinity: ClientIP}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{port: 8080}]\nendpoints: [{addresses: [10.0.0.1]}]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: limited, annotations: {ferry.dev/rate-limit: 10r/s}}\nspec:\n  ingressClassName: ferry\n  rules: [{host: a.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}}]\n";

    fn route(built: &Built) -> Arc<gateway::Route> {
        match built.table.lookup("a.test", "/") {
            gateway::Match::Route(r) => r.clone(),
            gateway::Match::NotFound => panic!("a.test/ not routed"),
        }
    }

    /// The state that outlives tables is the runtime's: two builds with one runtime share the
    /// rate-limit buckets and affinity of an unchanged route; a build with another runtime (or
    /// `build_all`'s own) shares nothing with them. No state lives in statics.
    #[test]
    fn builds_share_state_only_through_their_runtime() {
        let parsed = crate::source::files::parse_file(std::path::Path::new("t.yaml"), DOCS.as_bytes());
        let mut snapshot = Snapshot::default();
        for (_, obj) in parsed.objects {
            snapshot.insert(obj);
        }
        let opts = BuildOptions::default();
        let runtime = Arc::new(Runtime::default());
        let (first, second) = (build_with(&snapshot, &opts, &runtime), build_with(&snapshot, &opts, &runtime));
        let (a, b) = (route(&first), route(&second));
        let limiter = |r: &gateway::Route| r.options.rate_limit.clone().expect("rate limit");
        let affinity = |r: &gateway::Route| r.backend.affinity.clone().expect("affinity");
        assert!(Arc::ptr_eq(&limiter(&a), &limiter(&b)), "one runtime: the same buckets");
        assert!(Arc::ptr_eq(&affinity(&a), &affinity(&b)), "one runtime: the same affinity");
        for other in [build_with(&snapshot, &opts, &Arc::new(Runtime::default())), build_all(&snapshot, &opts)] {
            let c = route(&other);
            assert!(!Arc::ptr_eq(&limiter(&a), &limiter(&c)), "another runtime: its own buckets");
            assert!(!Arc::ptr_eq(&affinity(&a), &affinity(&c)), "another runtime: its own affinity");
        }
    }
}
