//! `Snapshot`: the plain Kubernetes objects a build reads, keyed by namespace and name.
//!
//! Both sources (manifest files and the Kubernetes API) produce the same `Snapshot`; `build()`
//! cannot tell them apart. Maps are hashed for speed; `build()` sorts whatever it iterates, so
//! builds stay deterministic.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
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
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
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

    fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Object::Ingress(o) => &o.metadata,
            Object::IngressClass(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
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
        }
    }

    /// Kind, namespace (empty for IngressClass) and name.
    pub fn object_ref(&self) -> ObjectRef {
        let m = self.metadata();
        let ns = match self {
            Object::IngressClass(_) | Object::Namespace(_) | Object::GatewayClass(_) => "",
            _ => m.namespace.as_deref().unwrap_or("default"),
        };
        ObjectRef::new(self.kind(), ns, m.name.as_deref().unwrap_or(""))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub ingresses: HashMap<Key, Arc<Ingress>>,
    /// Cluster-scoped: keyed by name.
    pub ingress_classes: HashMap<String, Arc<IngressClass>>,
    pub services: HashMap<Key, Arc<Service>>,
    pub endpoint_slices: HashMap<Key, Arc<EndpointSlice>>,
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
        let m = obj.metadata();
        let name = m.name.clone().unwrap_or_default();
        let key = || (m.namespace.clone().unwrap_or_else(|| "default".into()), name.clone());
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
}
