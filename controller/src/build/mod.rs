//! `build()`: compile a `Snapshot` into a `RouteTable` plus diagnostics.
//!
//! Pure: no I/O, no clock, no randomness; the same snapshot always gives the same table and the
//! same diagnostics in the same order. All Kubernetes semantics live here; the data plane only
//! looks things up. One module per input kind (`ingress`, `service`, `tls`); references between
//! objects are resolved in `service` and `tls`, which record why a reference failed.

mod annotations;
mod backend_tls;
mod class;
pub mod gateway_api;
mod ingress;
mod l4;
mod service;
mod tls;

use gateway::{RouteTable, TableBuilder};

use crate::diagnostic::Diagnostic;
use crate::snapshot::Snapshot;

pub use class::is_ours;
pub use gateway_api::{GatewayApiStatus, SUPPORTED_FEATURES};

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
/// path, one rule, one TLS entry) with a diagnostic; everything else is built.
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
}

/// [`build`], with the Gateway API status beside the table and diagnostics.
pub fn build_all(snapshot: &Snapshot, opts: &BuildOptions) -> Built {
    let mut cx = Context {
        snapshot,
        opts,
        table: TableBuilder::new(),
        diagnostics: Vec::new(),
        services: service::Resolver::new(snapshot, opts.allow_external_name),
        certs: tls::CertCache::default(),
        gateway_status: GatewayApiStatus::default(),
        backend_tls: Default::default(),
    };
    ingress::compile_all(&mut cx);
    gateway_api::compile_all(&mut cx);
    tls::compile_default(&mut cx);
    l4::compile_all(&mut cx);
    let Context { table, diagnostics, gateway_status, .. } = cx;
    Built { table: table.finish(), diagnostics, gateway_status }
}

/// State shared by the processors during one build.
struct Context<'a> {
    snapshot: &'a Snapshot,
    opts: &'a BuildOptions,
    table: TableBuilder,
    diagnostics: Vec<Diagnostic>,
    services: service::Resolver<'a>,
    certs: tls::CertCache,
    gateway_status: GatewayApiStatus,
    /// BackendTLSPolicies of this build (Gateway API backends only).
    backend_tls: backend_tls::Policies,
}
