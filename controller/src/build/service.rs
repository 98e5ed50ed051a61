//! Service references: Ingress backend (Service + port) → pod endpoints from EndpointSlices.
//!
//! The Ingress names a Service port (by number or name); the Service port's name selects the
//! EndpointSlice port, whose number is the pod's target port. Endpoints are those with
//! `conditions.ready` (absent = true) across every slice of the Service (both address families);
//! when a port has none, serving-and-terminating endpoints are used, as kube-proxy does.
//! Backends are shared per (namespace, service, port) within one build, so every route to the
//! same Service port round-robins over one counter.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use gateway::backend_tls::BackendTls;
use gateway::balance::Policy;
use gateway::FastMap as HashMap;
use gateway::{Backend, BackendState, Runtime, UpstreamProtocol};
use k8s_openapi::api::networking::v1::ServiceBackendPort;

use super::annotations::LOAD_BALANCER;
use crate::diagnostic::{Diagnostic, Field, ObjectRef};
use crate::snapshot::{Slice, Snapshot, Svc, SvcPort, SvcSpec};

pub struct Resolver<'a> {
    /// Services by (namespace, name), borrowed from the snapshot: lookups allocate nothing.
    services: HashMap<(&'a str, &'a str), &'a Svc>,
    /// Slices by (namespace, service name), built once per build.
    slices: HashMap<(&'a str, &'a str), Vec<&'a Slice>>,
    /// By Service port, protocol fallback and BackendTLSPolicy (its pool group), with the
    /// warnings its Service gave (every reference to the backend gets them, so what an object is
    /// told does not depend on which other objects are compiled before it).
    #[allow(clippy::type_complexity)]
    cache: HashMap<(&'a str, &'a str, PortRef<'a>, Option<UpstreamProtocol>, Option<u64>), (Arc<Backend>, Vec<String>)>,
    allow_external_name: bool,
    /// Endpoint and affinity state that outlives this build.
    runtime: &'a Arc<Runtime>,
    /// Backends of earlier builds whose Service and EndpointSlices have not changed since (an
    /// incremental build's): reused, so every route to a Service port keeps sharing one backend.
    prior: Option<&'a Backends>,
}

/// What tells the backends of one Service apart: port, protocol fallback, BackendTLSPolicy group.
pub type BackendKey = (PortKey, Option<UpstreamProtocol>, Option<u64>);

/// Resolved backends with the warnings their Services gave, by Service (namespace, name); a
/// Service has few (one per port, usually one), so they are listed rather than hashed.
pub type Backends = HashMap<(String, String), Vec<(BackendKey, (Arc<Backend>, Vec<String>))>>;

/// [`PortRef`], owned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortKey {
    Name(String),
    Number(i32),
    Missing,
}

impl From<PortRef<'_>> for PortKey {
    fn from(port: PortRef<'_>) -> Self {
        match port {
            PortRef::Name(n) => PortKey::Name(n.to_string()),
            PortRef::Number(n) => PortKey::Number(n),
            PortRef::Missing => PortKey::Missing,
        }
    }
}

impl<'a> From<&'a PortKey> for PortRef<'a> {
    fn from(port: &'a PortKey) -> Self {
        match port {
            PortKey::Name(n) => PortRef::Name(n),
            PortKey::Number(n) => PortRef::Number(*n),
            PortKey::Missing => PortRef::Missing,
        }
    }
}

/// A Service port as an Ingress names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortRef<'a> {
    Name(&'a str),
    Number(i32),
    Missing,
}

impl<'a> PortRef<'a> {
    pub fn of(port: Option<&'a ServiceBackendPort>) -> Self {
        match port.map(|p| (p.name.as_deref(), p.number)) {
            Some((Some(name), _)) if !name.is_empty() => PortRef::Name(name),
            Some((_, Some(n))) => PortRef::Number(n),
            _ => PortRef::Missing,
        }
    }
}

impl std::fmt::Display for PortRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Name(n) => f.write_str(n),
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Missing => Ok(()),
        }
    }
}

/// kube-proxy's default and maximum for `sessionAffinityConfig.clientIP.timeoutSeconds`.
const AFFINITY_DEFAULT_SECONDS: i32 = 10_800;
const AFFINITY_MAX_SECONDS: i32 = 86_400;

/// `sessionAffinity: ClientIP` → its idle timeout, and a warning when the configured timeout is
/// out of range (the API server would refuse it, but manifests are not validated) and the
/// default is used instead.
fn client_ip_affinity(svc: &Svc) -> (Option<Duration>, Option<String>) {
    let Some(spec) = &svc.spec else { return (None, None) };
    if !spec.client_ip_affinity {
        return (None, None);
    }
    match spec.affinity_timeout.unwrap_or(AFFINITY_DEFAULT_SECONDS) {
        s @ 1..=AFFINITY_MAX_SECONDS => (Some(Duration::from_secs(s as u64)), None),
        s => {
            let name = svc.name.as_deref().unwrap_or("");
            let why = format!(
                "Service {name}: sessionAffinityConfig.clientIP.timeoutSeconds {s} is outside 1..={AFFINITY_MAX_SECONDS}; \
                 using {AFFINITY_DEFAULT_SECONDS}"
            );
            (Some(Duration::from_secs(AFFINITY_DEFAULT_SECONDS as u64)), Some(why))
        }
    }
}

/// The Service's load-balancing policy; an unknown value warns and keeps round-robin.
fn load_balancer(svc: &Svc) -> (Policy, Option<String>) {
    match svc.annotation(LOAD_BALANCER).map(Policy::parse) {
        None => (Policy::RoundRobin, None),
        Some(Ok(policy)) => (policy, None),
        Some(Err(why)) => {
            let name = svc.name.as_deref().unwrap_or("");
            (Policy::RoundRobin, Some(format!("Service {name}: {LOAD_BALANCER}: {why}; using round-robin")))
        }
    }
}

/// How to speak to the pods, from the Service port's `appProtocol`.
fn upstream_protocol(service: &str, app_protocol: Option<&str>) -> (UpstreamProtocol, Option<String>) {
    match app_protocol {
        None | Some("http" | "kubernetes.io/ws" | "ws") => (UpstreamProtocol::Http1, None),
        Some("kubernetes.io/h2c" | "h2c") => (UpstreamProtocol::H2c, None),
        Some("https" | "kubernetes.io/https" | "kubernetes.io/wss" | "wss") => (UpstreamProtocol::Tls, None),
        Some(other) => (
            UpstreamProtocol::Http1,
            Some(format!(
                "Service {service}: appProtocol {other:?} is not an HTTP protocol ferry knows; using HTTP/1.1"
            )),
        ),
    }
}

impl<'a> Resolver<'a> {
    pub fn new(snapshot: &'a Snapshot, allow_external_name: bool, runtime: &'a Arc<Runtime>) -> Self {
        let mut slices: HashMap<(&str, &str), Vec<&Slice>> = HashMap::default();
        for ((ns, _), slice) in &snapshot.endpoint_slices {
            if let Some(svc) = &slice.service {
                slices.entry((ns.as_str(), svc.as_str())).or_default().push(slice);
            }
        }
        let services =
            snapshot.services.iter().map(|((ns, name), svc)| ((ns.as_str(), name.as_str()), &**svc)).collect();
        Resolver { services, slices, cache: HashMap::default(), allow_external_name, runtime, prior: None }
    }

    /// A resolver for the Services `wanted` only, their slices found through `slices_of`
    /// (an incremental build's index): its cost does not grow with the snapshot.
    pub fn scoped(
        snapshot: &'a Snapshot,
        wanted: impl IntoIterator<Item = &'a (String, String)>,
        slices_of: impl Fn(&(String, String)) -> Option<&'a Vec<Arc<(String, String)>>>,
        prior: &'a Backends,
        allow_external_name: bool,
        runtime: &'a Arc<Runtime>,
    ) -> Self {
        let (mut services, mut slices) = (HashMap::default(), HashMap::default());
        for key @ (ns, name) in wanted {
            let at = (ns.as_str(), name.as_str());
            if let Some(svc) = snapshot.services.get(key) {
                services.insert(at, &**svc);
            }
            let found: Vec<&Slice> = slices_of(key)
                .into_iter()
                .flatten()
                .filter_map(|k| snapshot.endpoint_slices.get(&**k))
                .map(|s| &**s)
                .collect();
            if !found.is_empty() {
                slices.insert(at, found);
            }
        }
        Resolver { services, slices, cache: HashMap::default(), allow_external_name, runtime, prior: Some(prior) }
    }

    /// Every backend this resolver made or reused, for the next incremental build.
    pub fn into_backends(self) -> Backends {
        let mut out = Backends::default();
        for ((ns, name, port, fallback, tls), value) in self.cache {
            let of_service = out.entry((ns.to_string(), name.to_string())).or_default();
            of_service.push(((port.into(), fallback, tls), value));
        }
        // Kept for the next build: mostly one port per Service, where a push leaves room for four.
        for of_service in out.values_mut() {
            of_service.shrink_to_fit();
        }
        out
    }

    /// Resolves a backend. Failures still yield a backend (it answers 503 with the reason) and a
    /// diagnostic against `from` at `field`.
    #[allow(clippy::too_many_arguments)]
    pub fn backend(
        &mut self,
        namespace: &'a str,
        service: &'a str,
        port_ref: PortRef<'a>,
        protocol_fallback: Option<UpstreamProtocol>,
        from: &ObjectRef,
        field: Field<'_>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Arc<Backend> {
        self.resolve_backend(namespace, service, port_ref, protocol_fallback, None, from, field, diagnostics)
    }

    /// A backend whose pods are spoken to in TLS as a BackendTLSPolicy says (verified; it
    /// replaces the Service port's `appProtocol` TLS, and keeps h2c as HTTP/2 over that TLS).
    #[allow(clippy::too_many_arguments)]
    pub fn backend_tls(
        &mut self,
        namespace: &'a str,
        service: &'a str,
        port_ref: PortRef<'a>,
        tls: Arc<BackendTls>,
        from: &ObjectRef,
        field: Field<'_>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Arc<Backend> {
        self.resolve_backend(namespace, service, port_ref, None, Some(tls), from, field, diagnostics)
    }

    #[allow(clippy::too_many_arguments)]
    fn resolve_backend(
        &mut self,
        namespace: &'a str,
        service: &'a str,
        port_ref: PortRef<'a>,
        protocol_fallback: Option<UpstreamProtocol>,
        tls: Option<Arc<BackendTls>>,
        from: &ObjectRef,
        field: Field<'_>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Arc<Backend> {
        let key = (namespace, service, port_ref, protocol_fallback, tls.as_ref().map(|t| t.group()));
        if !self.cache.contains_key(&key) {
            let (ns, name, port, fallback, group) = key;
            let of_service = self.prior.and_then(|p| p.get(&(ns.to_string(), name.to_string())));
            let wanted: BackendKey = (port.into(), fallback, group);
            if let Some((_, known)) = of_service.and_then(|b| b.iter().find(|(k, _)| *k == wanted)) {
                self.cache.insert(key, known.clone());
            }
        }
        if let Some((b, warnings)) = self.cache.get(&key) {
            if let BackendState::Unresolved(why) = &*b.state() {
                diagnostics.push(Diagnostic::error(from, field.path(), why.clone()));
            }
            for why in warnings {
                diagnostics.push(Diagnostic::warning(from, field.path(), why.clone()));
            }
            return b.clone();
        }
        let mut warnings = Vec::new();
        let mut name = String::with_capacity(namespace.len() + service.len() + 8);
        for part in [namespace, "/", service, ":"] {
            name.push_str(part);
        }
        match port_ref {
            PortRef::Name(n) => name.push_str(n),
            PortRef::Number(n) => name.push_str(itoa::Buffer::new().format(n)),
            PortRef::Missing => {}
        }
        let (state, app_protocol) = match self.resolve(namespace, service, port_ref) {
            Ok((state, app_protocol)) => (state, app_protocol),
            Err(why) => {
                diagnostics.push(Diagnostic::error(from, field.path(), why.clone()));
                (BackendState::Unresolved(why), None)
            }
        };
        let mut backend = Backend::new(name, state, self.runtime);
        if let Some(svc) = self.services.get(&(namespace, service)) {
            let (timeout, warning) = client_ip_affinity(svc);
            if let Some(timeout) = timeout {
                backend = backend.with_affinity(timeout);
            }
            warnings.extend(warning);
            warnings.extend(super::annotations::service_warnings(svc));
            let (policy, warning) = load_balancer(svc);
            backend = backend.with_policy(policy);
            warnings.extend(warning);
            let (protocol, warning) = match (app_protocol, protocol_fallback) {
                (None, Some(fallback)) => (fallback, None),
                _ => upstream_protocol(service, app_protocol),
            };
            let server_name = match &*backend.state() {
                BackendState::External { host, .. } => host.clone(),
                _ => format!("{service}.{namespace}.svc"),
            };
            backend = backend.with_protocol(protocol, &server_name);
            if let Some(tls) = tls {
                // TLS is the policy's: a plain `https` appProtocol adds nothing to it.
                if backend.protocol == UpstreamProtocol::Tls {
                    backend = backend.with_protocol(UpstreamProtocol::Http1, &server_name);
                }
                backend = backend.with_tls(tls);
            }
            warnings.extend(warning);
        }
        for why in &warnings {
            diagnostics.push(Diagnostic::warning(from, field.path(), why.clone()));
        }
        let backend = Arc::new(backend);
        self.cache.insert(key, (backend.clone(), warnings));
        backend
    }

    /// Gives `backend`, made by an earlier build for `port` of Service `ns/name`, the endpoints
    /// that the Service's EndpointSlices give it now; whether they changed. Only for a Service
    /// that has not changed since: everything else the backend holds came from it and still
    /// holds. A backend whose state does not come from EndpointSlices is left as it is.
    pub fn refresh(&self, ns: &str, name: &str, port: &PortKey, backend: &Backend) -> bool {
        match self.resolve(ns, name, port.into()) {
            Ok((BackendState::Endpoints(endpoints), _)) => backend.set_endpoints(endpoints),
            _ => false,
        }
    }

    /// The endpoints of a Service port and the port's `appProtocol`.
    fn resolve(&self, ns: &str, name: &str, port: PortRef<'_>) -> Result<(BackendState, Option<&'a str>), String> {
        let svc = self.services.get(&(ns, name)).ok_or_else(|| format!("Service {ns}/{name} not found"))?;
        let spec = svc.spec.as_ref().ok_or_else(|| format!("Service {ns}/{name} has no spec"))?;
        let ports = spec.ports.as_slice();
        if spec.external {
            return self.external(ns, name, spec, ports, port);
        }
        let svc_port: &'a SvcPort = match port {
            PortRef::Name(pname) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(pname))
                .ok_or_else(|| format!("Service {ns}/{name} has no port named {pname:?}"))?,
            PortRef::Number(num) => {
                ports.iter().find(|p| p.port == num).ok_or_else(|| format!("Service {ns}/{name} has no port {num}"))?
            }
            PortRef::Missing => return Err("backend service has no port".into()),
        };
        let port_name = svc_port.name.as_deref().unwrap_or("");
        Ok((BackendState::Endpoints(self.endpoints(ns, name, port_name)), svc_port.app_protocol.as_deref()))
    }

    /// An ExternalName Service: its DNS name and the port (the Service port's number, or the
    /// Ingress's port number when the Service declares no ports). Only with
    /// `--allow-external-name`.
    fn external(
        &self,
        ns: &str,
        name: &str,
        spec: &SvcSpec,
        ports: &'a [SvcPort],
        port: PortRef<'_>,
    ) -> Result<(BackendState, Option<&'a str>), String> {
        if !self.allow_external_name {
            return Err(format!(
                "Service {ns}/{name} is of type ExternalName; ferry routes to it only with --allow-external-name \
                 (off by default: it lets whoever creates Services send gateway traffic to any host)"
            ));
        }
        let host = spec.external_name.as_deref().unwrap_or("").trim_end_matches('.');
        if super::ingress::validate_host(host).is_err() && host.parse::<IpAddr>().is_err() {
            return Err(format!("Service {ns}/{name}: externalName {host:?} is not a DNS name"));
        }
        let declared = match port {
            PortRef::Name(pname) => Some(
                ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(pname))
                    .ok_or_else(|| format!("Service {ns}/{name} has no port named {pname:?}"))?,
            ),
            PortRef::Number(num) => ports.iter().find(|p| p.port == num),
            PortRef::Missing => return Err("backend service has no port".into()),
        };
        let number = match (declared, port) {
            (Some(p), _) => p.port,
            (None, PortRef::Number(n)) => n,
            _ => unreachable!("named ports are found or refused above"),
        };
        let number = u16::try_from(number).map_err(|_| format!("Service {ns}/{name}: port {number} out of range"))?;
        let app_protocol = declared.and_then(|p| p.app_protocol.as_deref());
        Ok((BackendState::External { host: host.to_string(), port: number }, app_protocol))
    }

    fn endpoints(&self, ns: &str, service: &str, port_name: &str) -> Vec<SocketAddr> {
        let mut ready = BTreeSet::new();
        let mut terminating = BTreeSet::new();
        for slice in self.slices.get(&(ns, service)).into_iter().flatten() {
            if slice.fqdn {
                continue;
            }
            let Some(port) = slice.ports.iter().find(|p| p.name == port_name).and_then(|p| p.port) else {
                continue;
            };
            for a in &slice.addresses {
                match a.ready {
                    true => ready.insert(SocketAddr::new(a.ip, port)),
                    false => terminating.insert(SocketAddr::new(a.ip, port)),
                };
            }
        }
        let chosen = if ready.is_empty() { terminating } else { ready };
        chosen.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(yaml: &str) -> Svc {
        Svc::from(serde_yaml_ng::from_str::<k8s_openapi::api::core::v1::Service>(yaml).unwrap())
    }

    #[test]
    fn client_ip_affinity_timeouts() {
        let none = svc("metadata: {name: s}\nspec: {ports: [{port: 80}]}");
        assert_eq!(client_ip_affinity(&none), (None, None));
        let default = svc("metadata: {name: s}\nspec: {sessionAffinity: ClientIP}");
        assert_eq!(client_ip_affinity(&default), (Some(Duration::from_secs(10_800)), None));
        let short = svc("metadata: {name: s}\nspec: {sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 5}}}");
        assert_eq!(client_ip_affinity(&short), (Some(Duration::from_secs(5)), None));
        let bad = svc("metadata: {name: s}\nspec: {sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}}");
        let (timeout, warning) = client_ip_affinity(&bad);
        assert_eq!(timeout, Some(Duration::from_secs(10_800)));
        assert!(warning.unwrap().contains("timeoutSeconds 0"));
        let explicit_none = svc("metadata: {name: s}\nspec: {sessionAffinity: None}");
        assert_eq!(client_ip_affinity(&explicit_none), (None, None));
    }
}
