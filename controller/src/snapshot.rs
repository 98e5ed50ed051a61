//! `Snapshot`: the plain Kubernetes objects a build reads, keyed by namespace and name.
//!
//! Objects are k8s-openapi's types, except the two kinds a cluster has one or more of per route:
//! Services and EndpointSlices are kept as the fields a build reads ([`Svc`], [`Slice`]), made
//! from Kubernetes' types by both sources as objects arrive.
//!
//! Both sources (manifest files and the Kubernetes API) produce the same `Snapshot`; `build()`
//! cannot tell them apart. Maps are hashed for speed; `build()` sorts whatever it iterates, so
//! builds stay deterministic.

use gateway::FastMap as HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::crd::L4Route;
use crate::diagnostic::ObjectRef;
use crate::gateway_api::types as gw;

/// `(namespace, name)`.
pub type Key = (String, String);

/// One object of a kind ferry reads. Shared (`Arc`): a source keeps its parsed objects and every
/// snapshot it hands out points at the same ones, so a rebuild never deep-copies objects.
#[derive(Debug, Clone)]
pub enum Object {
    Ingress(Arc<Ingress>),
    IngressClass(Arc<IngressClass>),
    /// What a build reads of a Service (see [`Svc`]).
    Service(Arc<Svc>),
    /// What a build reads of an EndpointSlice (see [`Slice`]).
    EndpointSlice(Arc<Slice>),
    Secret(Arc<Secret>),
    /// Read for CA bundles (`ca.crt`) of BackendTLSPolicies.
    ConfigMap(Arc<ConfigMap>),
    L4Route(Arc<L4Route>),
    Namespace(Arc<Namespace>),
    GatewayClass(Arc<gw::GatewayClass>),
    Gateway(Arc<gw::Gateway>),
    HTTPRoute(Arc<gw::HTTPRoute>),
    GRPCRoute(Arc<gw::GRPCRoute>),
    TLSRoute(Arc<gw::TLSRoute>),
    TCPRoute(Arc<gw::TCPRoute>),
    UDPRoute(Arc<gw::UDPRoute>),
    ReferenceGrant(Arc<gw::ReferenceGrant>),
    BackendTLSPolicy(Arc<gw::BackendTLSPolicy>),
    ListenerSet(Arc<gw::ListenerSet>),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Ingress(_) => "Ingress",
            Object::IngressClass(_) => "IngressClass",
            Object::Service(_) => "Service",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::Secret(_) => "Secret",
            Object::ConfigMap(_) => "ConfigMap",
            Object::L4Route(_) => "L4Route",
            Object::Namespace(_) => "Namespace",
            Object::GatewayClass(_) => "GatewayClass",
            Object::Gateway(_) => "Gateway",
            Object::HTTPRoute(_) => "HTTPRoute",
            Object::GRPCRoute(_) => "GRPCRoute",
            Object::TLSRoute(_) => "TLSRoute",
            Object::TCPRoute(_) => "TCPRoute",
            Object::UDPRoute(_) => "UDPRoute",
            Object::ReferenceGrant(_) => "ReferenceGrant",
            Object::BackendTLSPolicy(_) => "BackendTLSPolicy",
            Object::ListenerSet(_) => "ListenerSet",
        }
    }

    /// Namespace and name, as the object's metadata gives them.
    fn names(&self) -> (Option<&str>, Option<&str>) {
        let m = match self {
            Object::EndpointSlice(o) => return (o.namespace.as_deref(), o.name.as_deref()),
            Object::Service(o) => return (o.namespace.as_deref(), o.name.as_deref()),
            Object::Ingress(o) => &o.metadata,
            Object::IngressClass(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::L4Route(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::GatewayClass(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HTTPRoute(o) => &o.metadata,
            Object::GRPCRoute(o) => &o.metadata,
            Object::TLSRoute(o) => &o.metadata,
            Object::TCPRoute(o) => &o.metadata,
            Object::UDPRoute(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::BackendTLSPolicy(o) => &o.metadata,
            Object::ListenerSet(o) => &o.metadata,
        };
        (m.namespace.as_deref(), m.name.as_deref())
    }

    /// An Ingress, as ferry keeps it: its lists sized to what they hold. Read from JSON (the
    /// Kubernetes source), a list of one has room for four, as serde's sequence visitor is given
    /// no length; kept for every Ingress, that was most of a kilobyte a route.
    pub fn ingress(mut ingress: Ingress) -> Object {
        if let Some(spec) = &mut ingress.spec {
            if let Some(rules) = &mut spec.rules {
                for rule in rules.iter_mut() {
                    if let Some(http) = &mut rule.http {
                        http.paths.shrink_to_fit();
                    }
                }
                rules.shrink_to_fit();
            }
            if let Some(tls) = &mut spec.tls {
                for t in tls.iter_mut() {
                    if let Some(hosts) = &mut t.hosts {
                        hosts.shrink_to_fit();
                    }
                }
                tls.shrink_to_fit();
            }
        }
        Object::Ingress(Arc::new(ingress))
    }

    /// A Service, as ferry keeps it.
    pub fn service(service: k8s_openapi::api::core::v1::Service) -> Object {
        Object::Service(Arc::new(Svc::from(service)))
    }

    /// An EndpointSlice, as ferry keeps it.
    pub fn endpoint_slice(slice: k8s_openapi::api::discovery::v1::EndpointSlice) -> Object {
        Object::EndpointSlice(Arc::new(Slice::from(slice)))
    }

    /// Whether two objects are the same: equal values for the Kubernetes kinds, the same
    /// allocation for the others (a replaced equal object then counts as a change, which costs
    /// only a rebuild).
    pub fn same_as(&self, other: &Object) -> bool {
        fn eq<T: PartialEq>(a: &Arc<T>, b: &Arc<T>) -> bool {
            Arc::ptr_eq(a, b) || **a == **b
        }
        match (self, other) {
            (Object::Ingress(a), Object::Ingress(b)) => eq(a, b),
            (Object::IngressClass(a), Object::IngressClass(b)) => eq(a, b),
            (Object::Service(a), Object::Service(b)) => eq(a, b),
            (Object::EndpointSlice(a), Object::EndpointSlice(b)) => eq(a, b),
            (Object::Secret(a), Object::Secret(b)) => eq(a, b),
            (Object::ConfigMap(a), Object::ConfigMap(b)) => eq(a, b),
            (Object::Namespace(a), Object::Namespace(b)) => eq(a, b),
            (a, b) => a.kind() == b.kind() && a.ptr() == b.ptr(),
        }
    }

    fn ptr(&self) -> *const () {
        match self {
            Object::Ingress(o) => Arc::as_ptr(o).cast(),
            Object::IngressClass(o) => Arc::as_ptr(o).cast(),
            Object::Service(o) => Arc::as_ptr(o).cast(),
            Object::EndpointSlice(o) => Arc::as_ptr(o).cast(),
            Object::Secret(o) => Arc::as_ptr(o).cast(),
            Object::ConfigMap(o) => Arc::as_ptr(o).cast(),
            Object::L4Route(o) => Arc::as_ptr(o).cast(),
            Object::Namespace(o) => Arc::as_ptr(o).cast(),
            Object::GatewayClass(o) => Arc::as_ptr(o).cast(),
            Object::Gateway(o) => Arc::as_ptr(o).cast(),
            Object::HTTPRoute(o) => Arc::as_ptr(o).cast(),
            Object::GRPCRoute(o) => Arc::as_ptr(o).cast(),
            Object::TLSRoute(o) => Arc::as_ptr(o).cast(),
            Object::TCPRoute(o) => Arc::as_ptr(o).cast(),
            Object::UDPRoute(o) => Arc::as_ptr(o).cast(),
            Object::ReferenceGrant(o) => Arc::as_ptr(o).cast(),
            Object::BackendTLSPolicy(o) => Arc::as_ptr(o).cast(),
            Object::ListenerSet(o) => Arc::as_ptr(o).cast(),
        }
    }

    /// Kind, namespace (empty for IngressClass) and name.
    pub fn object_ref(&self) -> ObjectRef {
        let (kind, ns, name) = self.identity();
        ObjectRef::new(kind, ns, name)
    }

    /// What [`Self::object_ref`] names, borrowed: kind, namespace, name.
    pub fn identity(&self) -> (&'static str, &str, &str) {
        let (namespace, name) = self.names();
        let ns = match self {
            Object::IngressClass(_) | Object::Namespace(_) | Object::GatewayClass(_) => "",
            _ => namespace.unwrap_or("default"),
        };
        (self.kind(), ns, name.unwrap_or(""))
    }
}

/// What ferry keeps of a Service: the fields a build reads. Kubernetes' type is 824 bytes
/// before its strings and a port 112.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Svc {
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Its `ferry.dev/` annotations, the only ones a build reads, by key.
    pub annotations: Vec<(String, String)>,
    /// `None`: the Service has no spec.
    pub spec: Option<SvcSpec>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SvcSpec {
    /// `type: ExternalName`, and its `externalName`.
    pub external: bool,
    pub external_name: Option<String>,
    /// `sessionAffinity: ClientIP`, and its `sessionAffinityConfig.clientIP.timeoutSeconds`.
    pub client_ip_affinity: bool,
    pub affinity_timeout: Option<i32>,
    pub ports: Vec<SvcPort>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SvcPort {
    pub name: Option<String>,
    pub port: i32,
    pub app_protocol: Option<String>,
}

impl Svc {
    /// The `ferry.dev/` annotation `key`.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        let i = self.annotations.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok()?;
        Some(&self.annotations[i].1)
    }
}

/// A list sized to what it holds. A list collected from another in place keeps the other's
/// allocation, sized for elements several times larger (and, read from JSON, for four of them).
trait Shrunk {
    fn shrunk(self) -> Self;
}

impl<T> Shrunk for Vec<T> {
    fn shrunk(mut self) -> Self {
        self.shrink_to_fit();
        self
    }
}

impl From<k8s_openapi::api::core::v1::Service> for Svc {
    fn from(svc: k8s_openapi::api::core::v1::Service) -> Svc {
        let meta = svc.metadata;
        // A B-tree map iterates in key order, which `annotation` searches by.
        let prefix = crate::build::ANNOTATION_PREFIX;
        let annotations =
            meta.annotations.unwrap_or_default().into_iter().filter(|(k, _)| k.starts_with(prefix)).collect();
        let spec = svc.spec.map(|spec| SvcSpec {
            external: spec.type_.as_deref() == Some("ExternalName"),
            external_name: spec.external_name,
            client_ip_affinity: spec.session_affinity.as_deref() == Some("ClientIP"),
            affinity_timeout: spec.session_affinity_config.and_then(|c| c.client_ip).and_then(|c| c.timeout_seconds),
            ports: spec
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| SvcPort { name: p.name, port: p.port, app_protocol: p.app_protocol })
                .collect::<Vec<_>>()
                .shrunk(),
        });
        Svc { namespace: meta.namespace, name: meta.name, annotations, spec }
    }
}

/// What ferry keeps of an EndpointSlice: the fields a build reads. Kubernetes' own type holds
/// an endpoint in 352 bytes before its strings, and a slice's labels in a B-tree node of 536:
/// with a Service per Ingress, that was a kilobyte per route no build read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Slice {
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The Service the slice belongs to (its `kubernetes.io/service-name` label).
    pub service: Option<String>,
    /// `addressType: FQDN`: the addresses are names, which a build does not route to.
    pub fqdn: bool,
    pub ports: Vec<SlicePort>,
    /// Every address of every endpoint that may take traffic, in order.
    pub addresses: Vec<SliceAddress>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SlicePort {
    /// `""` when the port has no name.
    pub name: String,
    /// `None` when absent or not a port number.
    pub port: Option<u16>,
}

/// One address of an endpoint that may take traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliceAddress {
    pub ip: std::net::IpAddr,
    /// Ready (`conditions.ready`, true when unknown); otherwise serving while terminating,
    /// which takes traffic only when no endpoint of the Service is ready.
    pub ready: bool,
}

/// The label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl From<k8s_openapi::api::discovery::v1::EndpointSlice> for Slice {
    fn from(slice: k8s_openapi::api::discovery::v1::EndpointSlice) -> Slice {
        let mut meta = slice.metadata;
        let service = meta.labels.as_mut().and_then(|l| l.remove(SERVICE_NAME_LABEL));
        let fqdn = slice.address_type == "FQDN";
        let ports = slice
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| SlicePort { name: p.name.unwrap_or_default(), port: p.port.and_then(|p| u16::try_from(p).ok()) })
            .collect::<Vec<_>>()
            .shrunk();
        let mut addresses = Vec::new();
        for ep in slice.endpoints.into_iter().filter(|_| !fqdn) {
            let c = ep.conditions.unwrap_or_default();
            let ready = c.ready.unwrap_or(true);
            let serving = c.serving.unwrap_or(ready);
            let terminating = serving && c.terminating.unwrap_or(false);
            if !ready && !terminating {
                continue;
            }
            // Addresses that are not IPs are skipped, as a build would.
            let ips = ep.addresses.iter().filter_map(|a| a.parse().ok());
            addresses.extend(ips.map(|ip| SliceAddress { ip, ready }));
        }
        addresses.shrink_to_fit();
        Slice { namespace: meta.namespace, name: meta.name, service, fqdn, ports, addresses }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub ingresses: HashMap<Key, Arc<Ingress>>,
    /// Cluster-scoped: keyed by name.
    pub ingress_classes: HashMap<String, Arc<IngressClass>>,
    pub services: HashMap<Key, Arc<Svc>>,
    pub endpoint_slices: HashMap<Key, Arc<Slice>>,
    pub secrets: HashMap<Key, Arc<Secret>>,
    /// CA bundles of BackendTLSPolicies (`data["ca.crt"]`).
    pub config_maps: HashMap<Key, Arc<ConfigMap>>,
    pub l4_routes: HashMap<Key, Arc<L4Route>>,
    /// Cluster-scoped: keyed by name (labels select Gateway API route namespaces).
    pub namespaces: HashMap<String, Arc<Namespace>>,
    /// Gateway API. Cluster-scoped: keyed by name.
    pub gateway_classes: HashMap<String, Arc<gw::GatewayClass>>,
    pub gateways: HashMap<Key, Arc<gw::Gateway>>,
    pub http_routes: HashMap<Key, Arc<gw::HTTPRoute>>,
    pub grpc_routes: HashMap<Key, Arc<gw::GRPCRoute>>,
    pub tls_routes: HashMap<Key, Arc<gw::TLSRoute>>,
    pub tcp_routes: HashMap<Key, Arc<gw::TCPRoute>>,
    pub udp_routes: HashMap<Key, Arc<gw::UDPRoute>>,
    pub reference_grants: HashMap<Key, Arc<gw::ReferenceGrant>>,
    pub backend_tls_policies: HashMap<Key, Arc<gw::BackendTLSPolicy>>,
    pub listener_sets: HashMap<Key, Arc<gw::ListenerSet>>,
    /// Objects of kinds ferry does not use.
    pub ignored: usize,
}

impl Snapshot {
    /// Adds an object; a later object with the same kind/namespace/name replaces the earlier one.
    pub fn insert(&mut self, obj: Object) {
        let (namespace, name) = obj.names();
        let name = name.unwrap_or_default().to_string();
        let key = || (namespace.unwrap_or("default").to_string(), name.clone());
        match &obj {
            Object::Ingress(o) => {
                self.ingresses.insert(key(), o.clone());
            }
            Object::IngressClass(o) => {
                self.ingress_classes.insert(name.clone(), o.clone());
            }
            Object::Service(o) => {
                self.services.insert(key(), o.clone());
            }
            Object::EndpointSlice(o) => {
                self.endpoint_slices.insert(key(), o.clone());
            }
            Object::Secret(o) => {
                self.secrets.insert(key(), o.clone());
            }
            Object::ConfigMap(o) => {
                self.config_maps.insert(key(), o.clone());
            }
            Object::L4Route(o) => {
                self.l4_routes.insert(key(), o.clone());
            }
            Object::Namespace(o) => {
                self.namespaces.insert(name.clone(), o.clone());
            }
            Object::GatewayClass(o) => {
                self.gateway_classes.insert(name.clone(), o.clone());
            }
            Object::Gateway(o) => {
                self.gateways.insert(key(), o.clone());
            }
            Object::HTTPRoute(o) => {
                self.http_routes.insert(key(), o.clone());
            }
            Object::GRPCRoute(o) => {
                self.grpc_routes.insert(key(), o.clone());
            }
            Object::TLSRoute(o) => {
                self.tls_routes.insert(key(), o.clone());
            }
            Object::TCPRoute(o) => {
                self.tcp_routes.insert(key(), o.clone());
            }
            Object::UDPRoute(o) => {
                self.udp_routes.insert(key(), o.clone());
            }
            Object::ReferenceGrant(o) => {
                self.reference_grants.insert(key(), o.clone());
            }
            Object::BackendTLSPolicy(o) => {
                self.backend_tls_policies.insert(key(), o.clone());
            }
            Object::ListenerSet(o) => {
                self.listener_sets.insert(key(), o.clone());
            }
        }
    }

    pub fn len(&self) -> usize {
        self.ingresses.len()
            + self.ingress_classes.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.secrets.len()
            + self.config_maps.len()
            + self.l4_routes.len()
            + self.namespaces.len()
            + self.gateway_classes.len()
            + self.gateways.len()
            + self.http_routes.len()
            + self.grpc_routes.len()
            + self.tls_routes.len()
            + self.tcp_routes.len()
            + self.udp_routes.len()
            + self.reference_grants.len()
            + self.backend_tls_policies.len()
            + self.listener_sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether anything besides Ingresses routes traffic (Gateway API routes and Gateways,
    /// L4Routes): what else may read Services, EndpointSlices and Secrets.
    pub fn has_other_routes(&self) -> bool {
        !(self.l4_routes.is_empty()
            && self.gateways.is_empty()
            && self.http_routes.is_empty()
            && self.grpc_routes.is_empty()
            && self.tls_routes.is_empty()
            && self.tcp_routes.is_empty()
            && self.udp_routes.is_empty()
            && self.listener_sets.is_empty())
    }
}

impl Snapshot {
    /// The object the snapshot has under `r`'s kind, namespace and name.
    pub fn get(&self, r: &ObjectRef) -> Option<Object> {
        let key = (r.namespace.clone(), r.name.clone());
        let name = r.name.as_str();
        Some(match r.kind.as_str() {
            "Ingress" => Object::Ingress(self.ingresses.get(&key)?.clone()),
            "IngressClass" => Object::IngressClass(self.ingress_classes.get(name)?.clone()),
            "Service" => Object::Service(self.services.get(&key)?.clone()),
            "EndpointSlice" => Object::EndpointSlice(self.endpoint_slices.get(&key)?.clone()),
            "Secret" => Object::Secret(self.secrets.get(&key)?.clone()),
            "ConfigMap" => Object::ConfigMap(self.config_maps.get(&key)?.clone()),
            "L4Route" => Object::L4Route(self.l4_routes.get(&key)?.clone()),
            "Namespace" => Object::Namespace(self.namespaces.get(name)?.clone()),
            "GatewayClass" => Object::GatewayClass(self.gateway_classes.get(name)?.clone()),
            "Gateway" => Object::Gateway(self.gateways.get(&key)?.clone()),
            "HTTPRoute" => Object::HTTPRoute(self.http_routes.get(&key)?.clone()),
            "GRPCRoute" => Object::GRPCRoute(self.grpc_routes.get(&key)?.clone()),
            "TLSRoute" => Object::TLSRoute(self.tls_routes.get(&key)?.clone()),
            "TCPRoute" => Object::TCPRoute(self.tcp_routes.get(&key)?.clone()),
            "UDPRoute" => Object::UDPRoute(self.udp_routes.get(&key)?.clone()),
            "ReferenceGrant" => Object::ReferenceGrant(self.reference_grants.get(&key)?.clone()),
            "BackendTLSPolicy" => Object::BackendTLSPolicy(self.backend_tls_policies.get(&key)?.clone()),
            "ListenerSet" => Object::ListenerSet(self.listener_sets.get(&key)?.clone()),
            _ => return None,
        })
    }

    /// Removes the object `r` names; returns whether there was one.
    pub fn remove(&mut self, r: &ObjectRef) -> bool {
        let key = (r.namespace.clone(), r.name.clone());
        let name = r.name.as_str();
        match r.kind.as_str() {
            "Ingress" => self.ingresses.remove(&key).is_some(),
            "IngressClass" => self.ingress_classes.remove(name).is_some(),
            "Service" => self.services.remove(&key).is_some(),
            "EndpointSlice" => self.endpoint_slices.remove(&key).is_some(),
            "Secret" => self.secrets.remove(&key).is_some(),
            "ConfigMap" => self.config_maps.remove(&key).is_some(),
            "L4Route" => self.l4_routes.remove(&key).is_some(),
            "Namespace" => self.namespaces.remove(name).is_some(),
            "GatewayClass" => self.gateway_classes.remove(name).is_some(),
            "Gateway" => self.gateways.remove(&key).is_some(),
            "HTTPRoute" => self.http_routes.remove(&key).is_some(),
            "GRPCRoute" => self.grpc_routes.remove(&key).is_some(),
            "TLSRoute" => self.tls_routes.remove(&key).is_some(),
            "TCPRoute" => self.tcp_routes.remove(&key).is_some(),
            "UDPRoute" => self.udp_routes.remove(&key).is_some(),
            "ReferenceGrant" => self.reference_grants.remove(&key).is_some(),
            "BackendTLSPolicy" => self.backend_tls_policies.remove(&key).is_some(),
            "ListenerSet" => self.listener_sets.remove(&key).is_some(),
            _ => false,
        }
    }
}

/// Which objects of a snapshot were added, changed or removed since the last publish, as the
/// source saw them happen (an incremental build recompiles what they touch). Spurious entries
/// cost only work; a missing one would leave the table stale, so a source that cannot tell says
/// [`Changes::everything`].
#[derive(Debug, Default, Clone)]
pub struct Changes {
    objects: Vec<ObjectRef>,
    everything: bool,
}

impl Changes {
    /// Anything may have changed: the next build is a whole one.
    pub fn everything() -> Self {
        Changes { objects: Vec::new(), everything: true }
    }

    pub fn push(&mut self, object: ObjectRef) {
        if !self.everything {
            self.objects.push(object);
        }
    }

    pub fn is_everything(&self) -> bool {
        self.everything
    }

    pub fn is_empty(&self) -> bool {
        !self.everything && self.objects.is_empty()
    }

    pub fn objects(&self) -> &[ObjectRef] {
        &self.objects
    }

    /// The objects that differ between two snapshots (by identity: objects are shared, so an
    /// object that was not replaced is the same allocation).
    pub fn between(old: &Snapshot, new: &Snapshot) -> Changes {
        fn diff<K: std::hash::Hash + Eq, V>(
            kind: &str,
            old: &HashMap<K, Arc<V>>,
            new: &HashMap<K, Arc<V>>,
            name: fn(&K) -> (&str, &str),
            out: &mut Changes,
        ) {
            let mut differ = |k: &K| {
                let (ns, n) = name(k);
                out.push(ObjectRef::new(kind, ns, n));
            };
            for (k, v) in new {
                if old.get(k).is_none_or(|o| !Arc::ptr_eq(o, v)) {
                    differ(k);
                }
            }
            for k in old.keys().filter(|k| !new.contains_key(*k)) {
                differ(k);
            }
        }
        fn ns(k: &Key) -> (&str, &str) {
            (k.0.as_str(), k.1.as_str())
        }
        #[allow(clippy::ptr_arg)] // the key type of the cluster-scoped maps
        fn cluster(k: &String) -> (&str, &str) {
            ("", k.as_str())
        }
        let mut out = Changes::default();
        let o = &mut out;
        diff("Ingress", &old.ingresses, &new.ingresses, ns, o);
        diff("IngressClass", &old.ingress_classes, &new.ingress_classes, cluster, o);
        diff("Service", &old.services, &new.services, ns, o);
        diff("EndpointSlice", &old.endpoint_slices, &new.endpoint_slices, ns, o);
        diff("Secret", &old.secrets, &new.secrets, ns, o);
        diff("ConfigMap", &old.config_maps, &new.config_maps, ns, o);
        diff("L4Route", &old.l4_routes, &new.l4_routes, ns, o);
        diff("Namespace", &old.namespaces, &new.namespaces, cluster, o);
        diff("GatewayClass", &old.gateway_classes, &new.gateway_classes, cluster, o);
        diff("Gateway", &old.gateways, &new.gateways, ns, o);
        diff("HTTPRoute", &old.http_routes, &new.http_routes, ns, o);
        diff("GRPCRoute", &old.grpc_routes, &new.grpc_routes, ns, o);
        diff("TLSRoute", &old.tls_routes, &new.tls_routes, ns, o);
        diff("TCPRoute", &old.tcp_routes, &new.tcp_routes, ns, o);
        diff("UDPRoute", &old.udp_routes, &new.udp_routes, ns, o);
        diff("ReferenceGrant", &old.reference_grants, &new.reference_grants, ns, o);
        diff("BackendTLSPolicy", &old.backend_tls_policies, &new.backend_tls_policies, ns, o);
        diff("ListenerSet", &old.listener_sets, &new.listener_sets, ns, o);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(yaml: &str) -> Slice {
        Slice::from(serde_yaml_ng::from_str::<k8s_openapi::api::discovery::v1::EndpointSlice>(yaml).unwrap())
    }

    /// An EndpointSlice keeps its Service, ports and the addresses that may take traffic, with
    /// the conditions' defaults Kubernetes documents.
    #[test]
    fn a_slice_keeps_what_a_build_reads() {
        let s = slice(
            "metadata: {name: web-1, namespace: a, labels: {kubernetes.io/service-name: web, app: web}}
addressType: IPv4
ports: [{name: http, port: 8080}, {port: 9090}, {name: big, port: 70000}]
endpoints:
- addresses: [10.0.0.1, 10.0.0.2]
- addresses: [10.0.0.3]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [10.0.0.4]
  conditions: {ready: false, serving: false, terminating: true}
- addresses: [10.0.0.5]
  conditions: {ready: false, terminating: true}
- addresses: [10.0.0.6]
  conditions: {ready: false}
- addresses: [not-an-ip, 10.0.0.7]
  conditions: {ready: true, serving: false}
",
        );
        assert_eq!(
            (s.namespace.as_deref(), s.name.as_deref(), s.service.as_deref()),
            (Some("a"), Some("web-1"), Some("web"))
        );
        let ports: Vec<(&str, Option<u16>)> = s.ports.iter().map(|p| (p.name.as_str(), p.port)).collect();
        assert_eq!(ports, [("http", Some(8080)), ("", Some(9090)), ("big", None)]);
        let addresses: Vec<(String, bool)> = s.addresses.iter().map(|a| (a.ip.to_string(), a.ready)).collect();
        let want = [("10.0.0.1", true), ("10.0.0.2", true), ("10.0.0.3", false), ("10.0.0.7", true)];
        assert_eq!(addresses, want.map(|(ip, ready)| (ip.to_string(), ready)));
        assert!(!s.fqdn);
        assert_eq!(
            Object::endpoint_slice(
                serde_yaml_ng::from_str("metadata: {name: x}\naddressType: IPv6\nendpoints: []").unwrap()
            )
            .identity(),
            ("EndpointSlice", "default", "x")
        );
    }

    /// A Service keeps its `ferry.dev/` annotations, type, affinity and ports.
    #[test]
    fn a_service_keeps_what_a_build_reads() {
        let svc = |yaml: &str| Svc::from(serde_yaml_ng::from_str::<k8s_openapi::api::core::v1::Service>(yaml).unwrap());
        let s = svc("metadata: {name: web, namespace: a, labels: {app: web}, annotations: {ferry.dev/load-balancer: ewma, a.io/b: c, ferry.dev/x: y}}
spec:
  type: ClusterIP
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  ports: [{name: http, port: 80, targetPort: 8080, appProtocol: kubernetes.io/h2c}, {port: 81}]
");
        assert_eq!((s.namespace.as_deref(), s.name.as_deref()), (Some("a"), Some("web")));
        assert_eq!(
            s.annotations,
            [("ferry.dev/load-balancer".into(), "ewma".into()), ("ferry.dev/x".into(), "y".into())]
        );
        assert_eq!((s.annotation("ferry.dev/load-balancer"), s.annotation("a.io/b")), (Some("ewma"), None));
        let spec = s.spec.unwrap();
        assert_eq!((spec.external, spec.client_ip_affinity, spec.affinity_timeout), (false, true, Some(60)));
        let ports: Vec<_> = spec.ports.iter().map(|p| (p.name.as_deref(), p.port, p.app_protocol.as_deref())).collect();
        assert_eq!(ports, [(Some("http"), 80, Some("kubernetes.io/h2c")), (None, 81, None)]);
        let external = svc("metadata: {name: e}\nspec: {type: ExternalName, externalName: example.com}").spec.unwrap();
        assert_eq!((external.external, external.external_name.as_deref()), (true, Some("example.com")));
        assert_eq!(svc("metadata: {name: bare}").spec, None);
    }

    #[test]
    fn an_fqdn_slice_has_no_addresses() {
        let s = slice("metadata: {name: e, labels: {kubernetes.io/service-name: ext}}\naddressType: FQDN\nports: [{port: 80}]\nendpoints: [{addresses: [example.com]}]");
        assert!(s.fqdn);
        assert!(s.addresses.is_empty());
        assert_eq!(s.service.as_deref(), Some("ext"));
    }

    /// Objects as the Kubernetes source reads them (JSON) keep lists no larger than what they
    /// hold: a list of one is read with room for four, and collecting Service and slice ports in
    /// place kept Kubernetes' larger port type's allocation.
    #[test]
    fn objects_read_from_json_keep_lists_sized_to_their_contents() {
        let svc: k8s_openapi::api::core::v1::Service = serde_json::from_str(
            r#"{"metadata": {"name": "web", "namespace": "a"}, "spec": {"ports": [{"name": "http", "port": 80}]}}"#,
        )
        .unwrap();
        assert!(
            svc.spec.as_ref().unwrap().ports.as_ref().unwrap().capacity() > 1,
            "serde_json reads a list of one with room to spare"
        );
        let Object::Service(svc) = Object::service(svc) else { unreachable!() };
        assert_eq!(svc.spec.as_ref().unwrap().ports.capacity(), 1);

        let s: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_str(
            r#"{"metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}], "endpoints": [{"addresses": ["10.0.0.1"]}]}"#,
        )
        .unwrap();
        let Object::EndpointSlice(s) = Object::endpoint_slice(s) else { unreachable!() };
        assert_eq!((s.ports.capacity(), s.addresses.capacity()), (1, 1));

        let ing: Ingress = serde_json::from_str(
            r#"{"metadata": {"name": "web", "namespace": "a"}, "spec": {
                "tls": [{"hosts": ["a.test"], "secretName": "t"}],
                "rules": [{"host": "a.test", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}"#,
        )
        .unwrap();
        let Object::Ingress(ing) = Object::ingress(ing) else { unreachable!() };
        let spec = ing.spec.as_ref().unwrap();
        let rules = spec.rules.as_ref().unwrap();
        let tls = spec.tls.as_ref().unwrap();
        assert_eq!(rules.capacity(), 1);
        assert_eq!(rules[0].http.as_ref().unwrap().paths.capacity(), 1);
        assert_eq!(tls.capacity(), 1);
        assert_eq!(tls[0].hosts.as_ref().unwrap().capacity(), 1);
        assert_eq!(rules[0].http.as_ref().unwrap().paths[0].path.as_deref(), Some("/"), "contents are kept");
    }
}
