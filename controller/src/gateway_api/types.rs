//! Serde types for the Kubernetes Gateway API kinds (`gateway.networking.k8s.io`), following the
//! v1.6.1 CustomResourceDefinitions: the whole standard channel, plus the experimental route rule
//! fields `retry` (HTTPRoute) and `sessionPersistence` (HTTPRoute, GRPCRoute).
//!
//! Hand-written rather than taken from the `gateway-api` crate: its 0.22.0 release is generated
//! from Gateway API v1.5.1 and needs kube ^4.2 / k8s-openapi ^0.28, which cannot live next to
//! ferry's kube 5 / k8s-openapi 0.29.
//!
//! Parsing is deliberately lenient, because ferry reports problems as diagnostics instead of
//! rejecting objects:
//! - values that the API restricts to a set (match types, filter types, protocols, TLS modes,
//!   ...) are plain `String`s (or integers), so an unsupported value reaches the compiler;
//! - every field takes `#[serde(default)]`, required ones too, so one missing field does not
//!   lose the whole object (only `spec` itself is required);
//! - CRD defaults are *not* filled in: an omitted optional field stays `None`.
//!
//! Every field serialises back under the key it was read from; ferry finds unknown fields by
//! comparing an object's keys with the keys of its re-serialised form.
//!
//! Left out on purpose (so they show up as unknown fields): the experimental-only
//! `useDefaultGateways` on routes, `defaultScope` on Gateways and the `ExternalAuth` HTTPRoute
//! filter.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::crd::Condition;

// ---------------------------------------------------------------------------------------------
// References shared by several kinds
// ---------------------------------------------------------------------------------------------

/// The object a route (or a policy's ancestor status) attaches to; a Gateway unless `kind` says
/// otherwise.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// API group; omitted means `gateway.networking.k8s.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Omitted means `Gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Omitted means the namespace of the referring object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: String,
    /// A listener name of the Gateway (or a section of another parent kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Restricts the attachment to the listeners on this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// A ListenerSet's Gateway.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentGatewayReference {
    /// Omitted means `gateway.networking.k8s.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Omitted means `Gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    /// Omitted means the ListenerSet's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A reference to an object in the referrer's namespace; all three parts are required (`group`
/// may be `""` for the core API group).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

/// A reference to a Secret (by default), possibly in another namespace (which then needs a
/// ReferenceGrant).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretObjectReference {
    /// Omitted or `""`: the core API group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Omitted means `Secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A reference with explicit group and kind, possibly in another namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A backend: a Service port by default.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendObjectReference {
    /// Omitted or `""`: the core API group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Omitted means `Service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    /// Another namespace needs a ReferenceGrant there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Required when the backend is a Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// A weighted backend of a TLS, TCP or UDP route rule (and the shape the HTTP and gRPC backend
/// references extend).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Share of the rule's traffic relative to the other backends; omitted means 1, 0 means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// The `group`/`kind` of a route kind, as allowed on a listener or reported as supported.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteGroupKind {
    /// Omitted means `gateway.networking.k8s.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: String,
}

/// Sticky sessions for a route rule (experimental channel).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionPersistence {
    /// Name of the cookie or header carrying the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// Duration (`1h`, `30m`, ...) after which a session ends regardless of activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute_timeout: Option<String>,
    /// `Cookie` (the default) or `Header`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_config: Option<CookieConfig>,
}

/// Cookie settings of a cookie-based session.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CookieConfig {
    /// `Session` (the default: no expiry) or `Permanent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_type: Option<String>,
}

/// `numerator / denominator` (denominator omitted: 100).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fraction {
    #[serde(default)]
    pub numerator: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<i32>,
}

/// A route's status: one entry per parent that a controller has processed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// Always serialised: the API requires the list, even empty.
    #[serde(default)]
    pub parents: Vec<RouteParentStatus>,
}

/// How one controller sees a route on one parent.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    #[serde(default)]
    pub parent_ref: ParentReference,
    /// The controller writing this entry (a GatewayClass's `controllerName`).
    #[serde(default)]
    pub controller_name: String,
    /// `Accepted`, `ResolvedRefs`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

// ---------------------------------------------------------------------------------------------
// GatewayClass
// ---------------------------------------------------------------------------------------------

/// A class of Gateways implemented by one controller.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "GatewayClass",
    status = "GatewayClassStatus",
    shortname = "gc",
    category = "gateway-api",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassSpec {
    /// Which controller implements the class (`example.com/path`); immutable.
    #[serde(default)]
    pub controller_name: String,
    /// Implementation-specific configuration object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_ref: Option<ParametersReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A GatewayClass's configuration object; cluster-scoped unless `namespace` is set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParametersReference {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassStatus {
    /// `Accepted`, `SupportedVersion`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The features the implementation claims for this class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supported_features: Vec<SupportedFeature>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SupportedFeature {
    /// A feature name of the conformance suite, e.g. `HTTPRouteQueryParamMatching`.
    #[serde(default)]
    pub name: String,
}

// ---------------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------------

/// A set of listeners (ports, protocols, host names) on addresses, run by a GatewayClass's
/// controller.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "Gateway",
    namespaced,
    status = "GatewayStatus",
    shortname = "gtw",
    category = "gateway-api",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    #[serde(default)]
    pub gateway_class_name: String,
    /// Always serialised: the API requires the list.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Addresses requested for the Gateway; omitted means the implementation picks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<GatewaySpecAddress>,
    /// Labels, annotations and parameters for the resources the controller creates for this
    /// Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure: Option<GatewayInfrastructure>,
    /// Which namespaces' ListenerSets may add listeners; omitted means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_listeners: Option<AllowedListeners>,
    /// Gateway-wide TLS: client certificate validation (frontend) and the certificate presented
    /// to backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTLSConfig>,
}

/// One port/protocol/host name combination the Gateway accepts traffic on.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// Unique within the Gateway; routes select it with `sectionName`.
    #[serde(default)]
    pub name: String,
    /// Host name (`*.example.com` allowed) the listener is limited to; omitted means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub port: i32,
    /// `HTTP`, `HTTPS`, `TLS`, `TCP`, `UDP` or a domain-prefixed implementation protocol.
    #[serde(default)]
    pub protocol: String,
    /// Required for `HTTPS` and `TLS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTLSConfig>,
    /// Which route kinds from which namespaces may attach; omitted means this protocol's kinds
    /// from the Gateway's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
}

/// A listener of a ListenerSet: the same fields as a Gateway's listener.
pub type ListenerEntry = Listener;

/// TLS settings of a listener.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTLSConfig {
    /// `Terminate` (the default) or `Passthrough`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Certificates (Secrets by default) served; several for different key types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate_refs: Vec<SecretObjectReference>,
    /// Implementation-specific settings keyed by domain-prefixed names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// Gateway-wide TLS settings (`spec.tls`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayTLSConfig {
    /// TLS towards backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<GatewayBackendTLS>,
    /// TLS towards clients: validation of client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend: Option<FrontendTLSConfig>,
}

/// TLS the Gateway uses when connecting to backends.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayBackendTLS {
    /// Client certificate presented to backends that ask for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_ref: Option<SecretObjectReference>,
}

/// Client certificate validation: a default for all HTTPS listeners and overrides per port.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FrontendTLSConfig {
    #[serde(default)]
    pub default: TLSConfig,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_port: Vec<TLSPortConfig>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TLSConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<FrontendTLSValidation>,
}

/// The frontend TLS settings of the listeners on one port.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TLSPortConfig {
    #[serde(default)]
    pub port: i32,
    #[serde(default)]
    pub tls: TLSConfig,
}

/// How client certificates are checked.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FrontendTLSValidation {
    /// CA bundles (ConfigMaps, say) that client certificates must chain to. Always serialised:
    /// the API requires the list.
    #[serde(default)]
    pub ca_certificate_refs: Vec<ObjectReference>,
    /// `AllowValidOnly` (the default) or `AllowInsecureFallback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// Which routes may attach to a listener.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AllowedRoutes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
    /// Omitted: the kinds that fit the listener's protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<RouteGroupKind>,
}

/// The namespaces routes may attach from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteNamespaces {
    /// `Same` (the default), `All` or `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Used with `from: Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Which ListenerSets may attach to a Gateway.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AllowedListeners {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<ListenerNamespaces>,
}

/// The namespaces ListenerSets may attach from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerNamespaces {
    /// `None` (the default), `Same`, `All` or `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Used with `from: Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// An address requested in a Gateway's spec.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpecAddress {
    /// `IPAddress` (the default), `Hostname` or a domain-prefixed type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Omitted: any address of the type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Metadata and parameters for the infrastructure (Deployments, Services, ...) created for a
/// Gateway.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayInfrastructure {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Per-Gateway configuration object, in the Gateway's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_ref: Option<LocalParametersReference>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocalParametersReference {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// The addresses the Gateway is reachable at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<GatewayStatusAddress>,
    /// `Accepted`, `Programmed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerStatus>,
    /// How many ListenerSets are attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_listener_sets: Option<i32>,
}

/// An address a Gateway is bound to.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatusAddress {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default)]
    pub value: String,
}

/// The state of one listener (of a Gateway or a ListenerSet).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supported_kinds: Vec<RouteGroupKind>,
    /// Routes accepted on this listener.
    #[serde(default)]
    pub attached_routes: i32,
    /// `Accepted`, `Programmed`, `ResolvedRefs`, `Conflicted`, ... Always serialised: the API
    /// requires the list.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// The state of one listener of a ListenerSet: the same fields as for a Gateway's listener.
pub type ListenerEntryStatus = ListenerStatus;

// ---------------------------------------------------------------------------------------------
// ListenerSet
// ---------------------------------------------------------------------------------------------

/// Listeners added to a Gateway from (possibly) another namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "ListenerSet",
    namespaced,
    status = "ListenerSetStatus",
    shortname = "lset",
    category = "gateway-api",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSetSpec {
    #[serde(default)]
    pub parent_ref: ParentGatewayReference,
    /// Always serialised: the API requires the list.
    #[serde(default)]
    pub listeners: Vec<ListenerEntry>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSetStatus {
    /// `Accepted`, `Programmed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerEntryStatus>,
}

// ---------------------------------------------------------------------------------------------
// HTTPRoute
// ---------------------------------------------------------------------------------------------

/// HTTP routing rules for some host names, attached to Gateway listeners.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    namespaced,
    status = "HTTPRouteStatus",
    category = "gateway-api",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    /// Host names (`*.example.com` allowed) matched against the request's host; omitted means
    /// the listener's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Omitted means one rule matching the `/` prefix with no backends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HTTPRouteRule>,
}

pub type HTTPRouteStatus = RouteStatus;

/// Requests matching any of `matches` get `filters` applied and go to `backendRefs`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteRule {
    /// Unique within the route; parent references and policies can name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Omitted means a `/` prefix match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HTTPRouteMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HTTPRouteFilter>,
    /// Omitted (and no redirect filter): requests get a 500 response.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HTTPBackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HTTPRouteTimeouts>,
    /// Experimental channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<HTTPRouteRetry>,
    /// Experimental channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<SessionPersistence>,
}

/// Durations (`10s`, `1m`, `0s` = none) limiting a request.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteTimeouts {
    /// From the start of the request to the end of the response sent to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// One attempt towards a backend (retries get their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

/// When and how often to retry a request towards a backend (experimental channel).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteRetry {
    /// Response status codes (400-599) that trigger a retry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codes: Vec<i64>,
    /// Most retries after the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i64>,
    /// Duration to wait before a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
}

/// Conditions on a request, all of which must hold.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteMatch {
    /// Omitted means a `/` prefix match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HTTPPathMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HTTPHeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<HTTPQueryParamMatch>,
    /// `GET`, `POST`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPPathMatch {
    /// `PathPrefix` (the default), `Exact` or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Omitted means `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPHeaderMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Case-insensitive header name.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPQueryParamMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Case-sensitive parameter name.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// One processing step of an HTTP rule or backend; `type` says which of the other fields is set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteFilter {
    /// `RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestMirror`, `RequestRedirect`,
    /// `URLRewrite`, `CORS` or `ExtensionRef`.
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HTTPHeaderFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HTTPHeaderFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<HTTPRequestMirrorFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<HTTPRequestRedirectFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<HTTPURLRewriteFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<HTTPCORSFilter>,
    /// An implementation-specific filter object in the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<LocalObjectReference>,
}

/// Header edits: `set` replaces, `add` appends, `remove` deletes (by name).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPHeaderFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HTTPHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HTTPHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPHeader {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// Answers with a redirect; omitted parts keep the request's.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRequestRedirectFilter {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HTTPPathModifier>,
    /// Omitted: the listener's port, or the scheme's default port when the scheme changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// 301, 302 (the default), 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i64>,
}

/// Rewrites the host and/or path before forwarding.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPURLRewriteFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HTTPPathModifier>,
}

/// A new path: the whole path, or only the part matched by a `PathPrefix` match.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPPathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

/// Sends a copy of requests to another backend and ignores its responses.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRequestMirrorFilter {
    #[serde(default)]
    pub backend_ref: BackendObjectReference,
    /// Share of requests mirrored, 0-100; at most one of `percent` and `fraction`, neither means
    /// all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
}

/// Answers CORS preflight requests and adds CORS headers to responses.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPCORSFilter {
    /// Origins (`https://*.example.com` allowed, `*` for any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    /// Methods, or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Seconds a preflight answer may be cached; omitted means 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<i32>,
}

/// A weighted backend of an HTTP rule, with filters applied only to requests sent to it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HTTPBackendRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HTTPRouteFilter>,
}

// ---------------------------------------------------------------------------------------------
// GRPCRoute
// ---------------------------------------------------------------------------------------------

/// gRPC routing rules (by service, method and metadata) for some host names.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "GRPCRoute",
    namespaced,
    status = "GRPCRouteStatus",
    category = "gateway-api",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct GRPCRouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<GRPCRouteRule>,
}

pub type GRPCRouteStatus = RouteStatus;

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GRPCRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Omitted means every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<GRPCRouteMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<GRPCRouteFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<GRPCBackendRef>,
    /// Experimental channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<SessionPersistence>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GRPCRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GRPCMethodMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<GRPCHeaderMatch>,
}

/// Matches the `/service/method` request path; an omitted part matches anything.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GRPCMethodMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Fully qualified service name, e.g. `foo.bar.Baz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GRPCHeaderMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// One processing step of a gRPC rule or backend.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GRPCRouteFilter {
    /// `RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestMirror` or `ExtensionRef`.
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HTTPHeaderFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HTTPHeaderFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<HTTPRequestMirrorFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<LocalObjectReference>,
}

/// A weighted backend of a gRPC rule, with its own filters.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GRPCBackendRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<GRPCRouteFilter>,
}

// ---------------------------------------------------------------------------------------------
// TLSRoute, TCPRoute, UDPRoute
// ---------------------------------------------------------------------------------------------

/// Routes TLS connections by the server name (SNI) of their ClientHello.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "TLSRoute",
    namespaced,
    status = "TLSRouteStatus",
    category = "gateway-api",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct TLSRouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    /// Server names (`*.example.com` allowed); required by the API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<TLSRouteRule>,
}

pub type TLSRouteStatus = RouteStatus;

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TLSRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
}

/// Forwards the TCP connections of a listener to backends.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "TCPRoute",
    namespaced,
    status = "TCPRouteStatus",
    category = "gateway-api",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct TCPRouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<TCPRouteRule>,
}

pub type TCPRouteStatus = RouteStatus;

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TCPRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
}

/// Forwards the UDP datagrams of a listener to backends.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "UDPRoute",
    namespaced,
    status = "UDPRouteStatus",
    category = "gateway-api",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct UDPRouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<UDPRouteRule>,
}

pub type UDPRouteStatus = RouteStatus;

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UDPRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<BackendRef>,
}

// ---------------------------------------------------------------------------------------------
// ReferenceGrant
// ---------------------------------------------------------------------------------------------

/// Lets objects of the listed kinds in other namespaces refer to objects in this one.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "ReferenceGrant",
    namespaced,
    shortname = "refgrant",
    category = "gateway-api",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantSpec {
    /// Who may refer. Always serialised: the API requires the list.
    #[serde(default)]
    pub from: Vec<ReferenceGrantFrom>,
    /// What may be referred to. Always serialised: the API requires the list.
    #[serde(default)]
    pub to: Vec<ReferenceGrantTo>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantFrom {
    /// `""` for the core API group.
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub namespace: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantTo {
    /// `""` for the core API group.
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    /// Omitted means every object of the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// BackendTLSPolicy
// ---------------------------------------------------------------------------------------------

/// How the Gateway verifies the TLS server certificate of some backends (Services).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "BackendTLSPolicy",
    namespaced,
    status = "PolicyStatus",
    shortname = "btlspolicy",
    category = "gateway-api",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct BackendTLSPolicySpec {
    /// The backends (Services, optionally one named port) the policy applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<LocalPolicyTargetReferenceWithSectionName>,
    #[serde(default)]
    pub validation: BackendTLSPolicyValidation,
    /// Implementation-specific settings keyed by domain-prefixed names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// A policy target in the policy's namespace, optionally narrowed to one section (a Service
/// port name, say).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocalPolicyTargetReferenceWithSectionName {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// Trust anchors and expected identity of the backend's certificate.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendTLSPolicyValidation {
    /// CA bundles (ConfigMaps, say); exclusive with `wellKnownCACertificates`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certificate_refs: Vec<LocalObjectReference>,
    /// `System`: the platform's trusted roots.
    #[serde(rename = "wellKnownCACertificates", default, skip_serializing_if = "Option::is_none")]
    pub well_known_ca_certificates: Option<String>,
    /// The SNI sent, and the name the certificate must hold unless `subjectAltNames` is set.
    #[serde(default)]
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<SubjectAltName>,
}

/// One acceptable subject alternative name of the backend's certificate.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SubjectAltName {
    /// `Hostname` or `URI`: says which of the other fields is set.
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// A policy's status: one entry per ancestor (Gateway, say) and controller.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// Always serialised: the API requires the list, even empty.
    #[serde(default)]
    pub ancestors: Vec<PolicyAncestorStatus>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    #[serde(default)]
    pub ancestor_ref: ParentReference,
    #[serde(default)]
    pub controller_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    /// Parses `yaml` as `T`, serialises it back, and checks that every key of the input with a
    /// non-empty value is in the output (recursively), as ferry's unknown-field check would.
    fn round_trip<T: DeserializeOwned + Serialize>(yaml: &str) -> T {
        let parsed: T = serde_yaml_ng::from_str(yaml).expect("parses");
        let input: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let output = serde_json::to_value(&parsed).unwrap();
        let mut lost = Vec::new();
        keys_kept(&input, &output, String::new(), &mut lost);
        assert!(lost.is_empty(), "keys lost in the round trip: {lost:?}\noutput: {output:#}");
        parsed
    }

    fn keys_kept(input: &Value, output: &Value, path: String, lost: &mut Vec<String>) {
        match (input, output) {
            (Value::Object(i), Value::Object(o)) => {
                for (k, v) in i {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    match o.get(k) {
                        Some(ov) => keys_kept(v, ov, p, lost),
                        None if empty(v) => {}
                        None => lost.push(p),
                    }
                }
            }
            (Value::Array(i), Value::Array(o)) => {
                if i.len() != o.len() {
                    lost.push(format!("{path}[{}..]", i.len().min(o.len())));
                }
                for (n, (iv, ov)) in i.iter().zip(o).enumerate() {
                    keys_kept(iv, ov, format!("{path}[{n}]"), lost);
                }
            }
            (i, o) if i != o => lost.push(format!("{path} ({i} became {o})")),
            _ => {}
        }
    }

    fn empty(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Object(o) => o.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        }
    }

    // Based on examples/standard/basic-grpc.yaml (v1.6.1).
    const GATEWAY_CLASS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: example
spec:
  controllerName: acme.io/gateway-controller
  description: an example class
  parametersRef:
    name: example
    group: acme.io
    kind: Parameters
    namespace: acme-system
status:
  conditions:
  - type: Accepted
    status: "True"
    reason: Accepted
    message: ""
    lastTransitionTime: "2025-01-01T00:00:00Z"
    observedGeneration: 1
  supportedFeatures:
  - name: HTTPRoute
  - name: HTTPRouteQueryParamMatching
"#;

    #[test]
    fn gateway_class() {
        let gc: GatewayClass = round_trip(GATEWAY_CLASS);
        assert_eq!(gc.spec.controller_name, "acme.io/gateway-controller");
        assert_eq!(gc.spec.parameters_ref.as_ref().unwrap().kind, "Parameters");
        let status = gc.status.unwrap();
        assert_eq!(status.conditions[0].type_, "Accepted");
        assert_eq!(status.supported_features[1].name, "HTTPRouteQueryParamMatching");
    }

    // Based on examples/standard/simple-http-https/gateway.yaml, http-route-attachment/
    // gateway-namespaces.yaml, tls-cert-cross-namespace.yaml, gateway-addresses.yaml and
    // conformance/tests/gateway-infrastructure.yaml.
    const GATEWAY_LISTENERS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: example-gateway
  namespace: gateway-api-example-ns1
spec:
  gatewayClassName: prod
  addresses:
  - value: "1.2.3.4"
  - type: Hostname
    value: example.com
  infrastructure:
    annotations:
      key1: value1
    labels:
      key2: value2
    parametersRef:
      group: acme.io
      kind: GatewayParameters
      name: big
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    hostname: "*.example.com"
    allowedRoutes:
      kinds:
      - kind: HTTPRoute
      namespaces:
        from: Selector
        selector:
          matchLabels:
            expose-apps: "true"
          matchExpressions:
          - key: team
            operator: In
            values: [a, b]
  - name: https
    port: 443
    protocol: HTTPS
    hostname: "*.example.com"
    tls:
      mode: Terminate
      certificateRefs:
      - kind: Secret
        group: ""
        name: wildcard-example-com-cert
        namespace: gateway-api-example-ns2
      options:
        example.com/min-version: "1.3"
  - name: tls
    port: 8443
    protocol: TLS
    tls:
      mode: Passthrough
"#;

    #[test]
    fn gateway_listeners() {
        let gw: Gateway = round_trip(GATEWAY_LISTENERS);
        assert_eq!(gw.spec.gateway_class_name, "prod");
        assert_eq!(gw.spec.addresses[0].type_, None);
        assert_eq!(gw.spec.addresses[1].type_.as_deref(), Some("Hostname"));
        let infra = gw.spec.infrastructure.as_ref().unwrap();
        assert_eq!(infra.labels["key2"], "value2");
        assert_eq!(infra.parameters_ref.as_ref().unwrap().name, "big");
        let [http, https, tls] = &gw.spec.listeners[..] else { panic!("three listeners") };
        assert_eq!((http.port, http.protocol.as_str()), (80, "HTTP"));
        let allowed = http.allowed_routes.as_ref().unwrap();
        assert_eq!(allowed.kinds[0].kind, "HTTPRoute");
        let ns = allowed.namespaces.as_ref().unwrap();
        assert_eq!(ns.from.as_deref(), Some("Selector"));
        assert_eq!(ns.selector.as_ref().unwrap().match_labels.as_ref().unwrap()["expose-apps"], "true");
        let tls_cfg = https.tls.as_ref().unwrap();
        assert_eq!(tls_cfg.certificate_refs[0].group.as_deref(), Some(""), "an empty group is kept");
        assert_eq!(tls_cfg.certificate_refs[0].namespace.as_deref(), Some("gateway-api-example-ns2"));
        assert_eq!(tls_cfg.options["example.com/min-version"], "1.3");
        assert_eq!(tls.tls.as_ref().unwrap().mode.as_deref(), Some("Passthrough"));
    }

    // Based on examples/standard/frontend-cert-validation.yaml, backend-tls.yaml and
    // listenerset/listenerset.yaml, with a status.
    const GATEWAY_TLS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: client-validation-basic
spec:
  gatewayClassName: acme-lb
  allowedListeners:
    namespaces:
      from: Selector
      selector:
        matchLabels:
          belongs-to: shared-gateway
  tls:
    backend:
      clientCertificateRef:
        kind: Secret
        group: ""
        name: foo-example-cert
    frontend:
      default:
        validation:
          caCertificateRefs:
          - kind: ConfigMap
            group: ""
            name: foo-example-com-ca-cert
      perPort:
      - port: 8443
        tls:
          validation:
            mode: AllowInsecureFallback
            caCertificateRefs:
            - kind: ConfigMap
              group: ""
              name: bar-example-com-ca-cert
              namespace: certs
  listeners:
  - name: foo-https
    protocol: HTTPS
    port: 443
    hostname: foo.example.com
    tls:
      certificateRefs:
      - name: foo-example-com-cert
status:
  addresses:
  - type: IPAddress
    value: 10.0.0.1
  attachedListenerSets: 2
  conditions:
  - type: Programmed
    status: "True"
    reason: Programmed
    message: ready
    lastTransitionTime: "2025-01-01T00:00:00Z"
  listeners:
  - name: foo-https
    attachedRoutes: 0
    supportedKinds:
    - group: gateway.networking.k8s.io
      kind: HTTPRoute
    conditions:
    - type: ResolvedRefs
      status: "False"
      reason: InvalidCertificateRef
      message: secret not found
      lastTransitionTime: "2025-01-01T00:00:00Z"
"#;

    #[test]
    fn gateway_tls_and_status() {
        let gw: Gateway = round_trip(GATEWAY_TLS);
        let from = gw.spec.allowed_listeners.as_ref().unwrap().namespaces.as_ref().unwrap().from.as_deref();
        assert_eq!(from, Some("Selector"));
        let tls = gw.spec.tls.as_ref().unwrap();
        assert_eq!(tls.backend.as_ref().unwrap().client_certificate_ref.as_ref().unwrap().name, "foo-example-cert");
        let frontend = tls.frontend.as_ref().unwrap();
        let default = frontend.default.validation.as_ref().unwrap();
        assert_eq!(default.ca_certificate_refs[0].kind, "ConfigMap");
        assert_eq!(default.mode, None);
        assert_eq!(frontend.per_port[0].port, 8443);
        let per_port = frontend.per_port[0].tls.validation.as_ref().unwrap();
        assert_eq!(per_port.mode.as_deref(), Some("AllowInsecureFallback"));
        let status = gw.status.unwrap();
        assert_eq!(status.addresses[0].value, "10.0.0.1");
        assert_eq!(status.attached_listener_sets, Some(2));
        assert_eq!(status.listeners[0].attached_routes, 0);
        assert_eq!(status.listeners[0].conditions[0].reason, "InvalidCertificateRef");
    }

    // Based on examples/standard/listenerset/listenerset.yaml.
    const LISTENER_SET: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata:
  name: first-workload-listeners
  namespace: team-1-ns
spec:
  parentRef:
    namespace: default
    name: parent-gateway
    kind: Gateway
    group: gateway.networking.k8s.io
  listeners:
  - name: first
    hostname: first.foo.com
    protocol: HTTPS
    port: 443
    tls:
      mode: Terminate
      certificateRefs:
      - kind: Secret
        group: ""
        name: first-workload-cert
status:
  conditions:
  - type: Accepted
    status: "True"
    reason: Accepted
    message: ""
    lastTransitionTime: "2025-01-01T00:00:00Z"
  listeners:
  - name: first
    attachedRoutes: 3
    supportedKinds:
    - kind: HTTPRoute
    conditions:
    - type: Conflicted
      status: "False"
      reason: NoConflicts
      message: ""
      lastTransitionTime: "2025-01-01T00:00:00Z"
"#;

    #[test]
    fn listener_set() {
        let ls: ListenerSet = round_trip(LISTENER_SET);
        assert_eq!(ls.spec.parent_ref.name, "parent-gateway");
        assert_eq!(ls.spec.parent_ref.namespace.as_deref(), Some("default"));
        assert_eq!(ls.spec.listeners[0].hostname.as_deref(), Some("first.foo.com"));
        assert_eq!(ls.spec.listeners[0].port, 443);
        assert_eq!(ls.status.unwrap().listeners[0].attached_routes, 3);
    }

    // Based on examples/standard/http-routing/foo-httproute.yaml, http-filter.yaml,
    // traffic-splitting/traffic-split-2.yaml and multicluster/httproute-method.yaml.
    const HTTP_ROUTE_MATCHES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: foo-route
  labels:
    gateway: prod-web-gw
spec:
  parentRefs:
  - name: example-gateway
    namespace: infra
    sectionName: https
    port: 443
  - group: gateway.networking.k8s.io
    kind: Gateway
    name: other-gateway
  hostnames:
  - "foo.example.com"
  rules:
  - name: login
    matches:
    - path:
        type: PathPrefix
        value: /login
      method: POST
      headers:
      - name: env
        value: canary
      - type: RegularExpression
        name: x-user
        value: "^a.*"
      queryParams:
      - type: Exact
        name: debug
        value: "1"
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add:
        - name: my-header
          value: foo
        set:
        - name: x-env
          value: prod
        remove: [x-debug]
    backendRefs:
    - name: foo-v1
      port: 8080
      weight: 90
    - name: foo-v2
      group: ""
      kind: Service
      namespace: other
      port: 8080
      weight: 10
      filters:
      - type: ResponseHeaderModifier
        responseHeaderModifier:
          add:
          - name: x-backend
            value: v2
    timeouts:
      request: 10s
      backendRequest: 2s
"#;

    #[test]
    fn http_route_matches_and_backends() {
        let route: HTTPRoute = round_trip(HTTP_ROUTE_MATCHES);
        let spec = &route.spec;
        assert_eq!(spec.parent_refs[0].section_name.as_deref(), Some("https"));
        assert_eq!(spec.parent_refs[0].port, Some(443));
        assert_eq!(spec.parent_refs[1].kind.as_deref(), Some("Gateway"));
        assert_eq!(spec.hostnames, ["foo.example.com"]);
        let rule = &spec.rules[0];
        assert_eq!(rule.name.as_deref(), Some("login"));
        let m = &rule.matches[0];
        let path = m.path.as_ref().unwrap();
        assert_eq!((path.type_.as_deref(), path.value.as_deref()), (Some("PathPrefix"), Some("/login")));
        assert_eq!(m.method.as_deref(), Some("POST"));
        assert_eq!(m.headers[0].type_, None);
        assert_eq!(m.headers[1].type_.as_deref(), Some("RegularExpression"));
        assert_eq!(m.query_params[0].value, "1");
        assert_eq!(rule.filters[0].type_, "RequestHeaderModifier");
        let modifier = rule.filters[0].request_header_modifier.as_ref().unwrap();
        assert_eq!(modifier.add[0].name, "my-header");
        assert_eq!(modifier.remove, ["x-debug"]);
        assert_eq!(rule.backend_refs[0].weight, Some(90));
        assert_eq!(rule.backend_refs[1].weight, Some(10));
        assert_eq!(rule.backend_refs[1].filters[0].type_, "ResponseHeaderModifier");
        assert_eq!(rule.timeouts.as_ref().unwrap().backend_request.as_deref(), Some("2s"));
    }

    // Based on examples/standard/http-redirect-rewrite/httproute-redirect-full.yaml,
    // httproute-rewrite-prefix-path.yaml, http-request-mirroring/httproute-mirroring.yaml and
    // simple-http-https/tls-redirect-route.yaml.
    const HTTP_ROUTE_FILTERS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: http-filters
spec:
  hostnames:
  - redirect.example
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /cayenne
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        hostname: www.example.com
        port: 8443
        path:
          type: ReplaceFullPath
          replaceFullPath: /paprika
        statusCode: 301
  - matches:
    - path:
        type: PathPrefix
        value: /cardamom
    filters:
    - type: URLRewrite
      urlRewrite:
        hostname: elsewhere.example
        path:
          type: ReplacePrefixMatch
          replacePrefixMatch: /fennel
    - type: RequestMirror
      requestMirror:
        backendRef:
          name: foo-v2
          port: 8080
        percent: 42
    - type: RequestMirror
      requestMirror:
        backendRef:
          name: foo-v3
          port: 8080
        fraction:
          numerator: 1
          denominator: 3
    - type: ExtensionRef
      extensionRef:
        group: acme.io
        kind: Filter
        name: my-filter
    backendRefs:
    - name: example-svc
      port: 80
"#;

    #[test]
    fn http_route_redirect_rewrite_mirror() {
        let route: HTTPRoute = round_trip(HTTP_ROUTE_FILTERS);
        let [redirect, rewrite] = &route.spec.rules[..] else { panic!("two rules") };
        let r = redirect.filters[0].request_redirect.as_ref().unwrap();
        assert_eq!(redirect.filters[0].type_, "RequestRedirect");
        assert_eq!((r.scheme.as_deref(), r.port, r.status_code), (Some("https"), Some(8443), Some(301)));
        let path = r.path.as_ref().unwrap();
        assert_eq!((path.type_.as_str(), path.replace_full_path.as_deref()), ("ReplaceFullPath", Some("/paprika")));
        let types: Vec<_> = rewrite.filters.iter().map(|f| f.type_.as_str()).collect();
        assert_eq!(types, ["URLRewrite", "RequestMirror", "RequestMirror", "ExtensionRef"]);
        let u = rewrite.filters[0].url_rewrite.as_ref().unwrap();
        assert_eq!(u.hostname.as_deref(), Some("elsewhere.example"));
        assert_eq!(u.path.as_ref().unwrap().replace_prefix_match.as_deref(), Some("/fennel"));
        let m1 = rewrite.filters[1].request_mirror.as_ref().unwrap();
        assert_eq!((m1.backend_ref.name.as_str(), m1.percent), ("foo-v2", Some(42)));
        let f = rewrite.filters[2].request_mirror.as_ref().unwrap().fraction.as_ref().unwrap();
        assert_eq!((f.numerator, f.denominator), (1, Some(3)));
        assert_eq!(rewrite.filters[3].extension_ref.as_ref().unwrap().kind, "Filter");
    }

    // Based on examples/standard/http-cors/httproute-all-fields-set.yaml,
    // conformance/tests/httproute-retry.yaml and the session persistence API (experimental).
    const HTTP_ROUTE_CORS_RETRY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: cors-allow-credentials
spec:
  parentRefs:
  - name: same-namespace
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /cors-behavior-creds-true
    backendRefs:
    - name: infra-backend-v1
      port: 8080
    filters:
    - cors:
        allowOrigins:
        - "https://www.foo.com"
        - "https://*.bar.com"
        allowMethods:
        - GET
        - OPTIONS
        allowHeaders:
        - "*"
        exposeHeaders:
        - "x-header-3"
        allowCredentials: true
        maxAge: 3600
      type: CORS
  - matches:
    - path:
        type: PathPrefix
        value: /retry/code-all-attempts-2
    retry:
      codes: [500, 502, 503, 504]
      attempts: 2
      backoff: 100ms
    sessionPersistence:
      sessionName: session
      type: Cookie
      absoluteTimeout: 1h
      cookieConfig:
        lifetimeType: Permanent
    backendRefs:
    - name: infra-backend-v3
      port: 8080
status:
  parents:
  - parentRef:
      name: same-namespace
    controllerName: ferry.dev/gateway
    conditions:
    - type: Accepted
      status: "True"
      reason: Accepted
      message: ""
      lastTransitionTime: "2025-01-01T00:00:00Z"
      observedGeneration: 3
"#;

    #[test]
    fn http_route_cors_retry_session() {
        let route: HTTPRoute = round_trip(HTTP_ROUTE_CORS_RETRY);
        let [cors, retry] = &route.spec.rules[..] else { panic!("two rules") };
        assert_eq!(cors.filters[0].type_, "CORS");
        let c = cors.filters[0].cors.as_ref().unwrap();
        assert_eq!(c.allow_origins[1], "https://*.bar.com");
        assert_eq!(c.allow_methods, ["GET", "OPTIONS"]);
        assert_eq!((c.allow_credentials, c.max_age), (Some(true), Some(3600)));
        let r = retry.retry.as_ref().unwrap();
        assert_eq!(
            (r.codes.as_slice(), r.attempts, r.backoff.as_deref()),
            (&[500, 502, 503, 504][..], Some(2), Some("100ms"))
        );
        let sp = retry.session_persistence.as_ref().unwrap();
        assert_eq!(sp.type_.as_deref(), Some("Cookie"));
        assert_eq!(sp.cookie_config.as_ref().unwrap().lifetime_type.as_deref(), Some("Permanent"));
        let status = route.status.unwrap();
        assert_eq!(status.parents[0].controller_name, "ferry.dev/gateway");
        assert_eq!(status.parents[0].conditions[0].observed_generation, Some(3));
    }

    // Based on examples/standard/basic-grpc.yaml and grpc-filter.yaml.
    const GRPC_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: grpc-app-1
spec:
  parentRefs:
  - name: my-gateway
  hostnames:
  - "example.com"
  rules:
  - matches:
    - method:
        service: com.example.User
        method: Login
    backendRefs:
    - name: my-service1
      port: 50051
  - name: things
    matches:
    - headers:
      - type: Exact
        name: magic
        value: foo
      method:
        type: RegularExpression
        service: com.example.Things
        method: "Do.*"
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add:
        - name: my-header
          value: foo
    - type: RequestMirror
      requestMirror:
        backendRef:
          name: mirror
          port: 50051
        fraction:
          numerator: 5
    backendRefs:
    - name: my-service2
      port: 50051
      weight: 3
      filters:
      - type: ResponseHeaderModifier
        responseHeaderModifier:
          remove: [grpc-debug]
"#;

    #[test]
    fn grpc_route() {
        let route: GRPCRoute = round_trip(GRPC_ROUTE);
        let [login, things] = &route.spec.rules[..] else { panic!("two rules") };
        let method = login.matches[0].method.as_ref().unwrap();
        assert_eq!((method.service.as_deref(), method.method.as_deref()), (Some("com.example.User"), Some("Login")));
        assert_eq!(method.type_, None);
        assert_eq!(things.matches[0].headers[0].name, "magic");
        assert_eq!(things.matches[0].method.as_ref().unwrap().type_.as_deref(), Some("RegularExpression"));
        assert_eq!(things.filters[1].type_, "RequestMirror");
        let fraction = things.filters[1].request_mirror.as_ref().unwrap().fraction.as_ref().unwrap();
        assert_eq!((fraction.numerator, fraction.denominator), (5, None));
        assert_eq!(things.backend_refs[0].weight, Some(3));
        assert_eq!(things.backend_refs[0].filters[0].type_, "ResponseHeaderModifier");
    }

    // Based on examples/standard/reference-grant.yaml and tls-cert-cross-namespace.yaml.
    const REFERENCE_GRANT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata:
  name: allow-prod-traffic
  namespace: backends
spec:
  from:
  - group: gateway.networking.k8s.io
    kind: HTTPRoute
    namespace: prod
  - group: gateway.networking.k8s.io
    kind: Gateway
    namespace: gateway-api-example-ns1
  to:
  - group: ""
    kind: Service
  - group: ""
    kind: Secret
    name: wildcard-example-com-cert
"#;

    #[test]
    fn reference_grant() {
        let grant: ReferenceGrant = round_trip(REFERENCE_GRANT);
        assert_eq!(grant.spec.from[1].kind, "Gateway");
        assert_eq!(grant.spec.from[0].namespace, "prod");
        assert_eq!((grant.spec.to[0].group.as_str(), grant.spec.to[0].name.as_deref()), ("", None));
        assert_eq!(grant.spec.to[1].name.as_deref(), Some("wildcard-example-com-cert"));
    }

    // Based on examples/standard/backendtlspolicy/backendtlspolicy-ca-certs.yaml and
    // backendtlspolicy-system-certs.yaml, with a status.
    const BACKEND_TLS_POLICY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata:
  name: tls-upstream-auth
spec:
  targetRefs:
  - kind: Service
    name: auth
    group: ""
    sectionName: https
  validation:
    caCertificateRefs:
    - kind: ConfigMap
      name: auth-cert
      group: ""
    hostname: auth.example.com
    subjectAltNames:
    - type: Hostname
      hostname: auth.internal
    - type: URI
      uri: spiffe://cluster.local/ns/auth/sa/auth
  options:
    example.com/ocsp: required
status:
  ancestors:
  - ancestorRef:
      name: example-gateway
      namespace: infra
    controllerName: ferry.dev/gateway
    conditions:
    - type: Accepted
      status: "True"
      reason: Accepted
      message: ""
      lastTransitionTime: "2025-01-01T00:00:00Z"
"#;

    const BACKEND_TLS_POLICY_SYSTEM: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata:
  name: tls-upstream-dev
spec:
  targetRefs:
    - kind: Service
      name: dev
      group: ""
  validation:
    wellKnownCACertificates: "System"
    hostname: dev.example.com
"#;

    #[test]
    fn backend_tls_policy() {
        let policy: BackendTLSPolicy = round_trip(BACKEND_TLS_POLICY);
        let target = &policy.spec.target_refs[0];
        assert_eq!((target.group.as_str(), target.kind.as_str(), target.name.as_str()), ("", "Service", "auth"));
        assert_eq!(target.section_name.as_deref(), Some("https"));
        let v = &policy.spec.validation;
        assert_eq!(v.hostname, "auth.example.com");
        assert_eq!(v.ca_certificate_refs[0].kind, "ConfigMap");
        assert_eq!(v.subject_alt_names[1].type_, "URI");
        assert_eq!(policy.spec.options["example.com/ocsp"], "required");
        assert_eq!(policy.status.unwrap().ancestors[0].ancestor_ref.namespace.as_deref(), Some("infra"));

        let system: BackendTLSPolicy = round_trip(BACKEND_TLS_POLICY_SYSTEM);
        assert_eq!(system.spec.validation.well_known_ca_certificates.as_deref(), Some("System"));
        assert!(system.spec.validation.ca_certificate_refs.is_empty());
    }

    // Based on examples/standard/tls-routing/tls-route.yaml, tcp-routing/tcp-route.yaml and
    // udp-routing/udp-route.yaml.
    const TLS_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata:
  name: foo-route
spec:
  parentRefs:
  - name: example-gateway
    sectionName: tls
  hostnames:
  - "foo.example.com"
  rules:
  - name: foo
    backendRefs:
    - name: foo-svc
      port: 443
      weight: 2
"#;

    const TCP_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata:
  name: tcp-app-1
spec:
  parentRefs:
    - name: my-tcp-gateway
      sectionName: foo
  rules:
    - backendRefs:
        - name: my-foo-service
          port: 6000
"#;

    const UDP_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata:
  name: udp-app-1
spec:
  parentRefs:
    - name: my-udp-gateway
      sectionName: foo
  rules:
    - backendRefs:
        - name: my-foo-service
          port: 6000
status:
  parents: []
"#;

    #[test]
    fn l4_routes() {
        let tls: TLSRoute = round_trip(TLS_ROUTE);
        assert_eq!(tls.spec.hostnames, ["foo.example.com"]);
        assert_eq!(tls.spec.parent_refs[0].section_name.as_deref(), Some("tls"));
        assert_eq!(tls.spec.rules[0].name.as_deref(), Some("foo"));
        assert_eq!(
            (tls.spec.rules[0].backend_refs[0].port, tls.spec.rules[0].backend_refs[0].weight),
            (Some(443), Some(2))
        );
        let tcp: TCPRoute = round_trip(TCP_ROUTE);
        assert_eq!(tcp.spec.rules[0].backend_refs[0].name, "my-foo-service");
        assert_eq!(tcp.spec.rules[0].backend_refs[0].port, Some(6000));
        let udp: UDPRoute = round_trip(UDP_ROUTE);
        assert_eq!(udp.spec.parent_refs[0].name, "my-udp-gateway");
        let status = serde_json::to_value(udp.status.as_ref().unwrap()).unwrap();
        assert_eq!(status, serde_json::json!({"parents": []}), "the required list is kept even empty");
    }

    #[test]
    fn unknown_enum_values_and_missing_required_fields_still_parse() {
        let route: HTTPRoute = serde_yaml_ng::from_str(
            r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: odd}
spec:
  rules:
  - matches:
    - path: {type: Glob, value: "/a*"}
    filters:
    - type: Teleport
    - type: RequestRedirect
      requestRedirect: {statusCode: 399}
    backendRefs:
    - port: 80
"#,
        )
        .expect("parses");
        let rule = &route.spec.rules[0];
        assert_eq!(rule.matches[0].path.as_ref().unwrap().type_.as_deref(), Some("Glob"));
        assert_eq!(rule.filters[0].type_, "Teleport");
        assert_eq!(rule.filters[1].request_redirect.as_ref().unwrap().status_code, Some(399));
        assert_eq!(rule.backend_refs[0].name, "", "a missing name is left for the compiler to report");

        let gw: Gateway = serde_yaml_ng::from_str(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  listeners:\n  - name: x\n    protocol: SCTP\n",
        )
        .expect("parses");
        assert_eq!((gw.spec.gateway_class_name.as_str(), gw.spec.listeners[0].protocol.as_str()), ("", "SCTP"));
        assert_eq!(gw.spec.listeners[0].port, 0);
    }

    #[test]
    fn experimental_fields_left_out_are_reported_as_unknown() {
        let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  useDefaultGateways: All\n";
        let route: HTTPRoute = serde_yaml_ng::from_str(yaml).unwrap();
        let output = serde_json::to_value(&route).unwrap();
        assert!(output["spec"].get("useDefaultGateways").is_none());
    }

    #[test]
    fn resource_names_match_the_crds() {
        use kube::{CustomResourceExt, Resource};
        // (kind, plural, scope) as in the v1.6.1 CRDs.
        let crds = [
            (GatewayClass::crd(), "GatewayClass", "gatewayclasses", "Cluster"),
            (Gateway::crd(), "Gateway", "gateways", "Namespaced"),
            (ListenerSet::crd(), "ListenerSet", "listenersets", "Namespaced"),
            (HTTPRoute::crd(), "HTTPRoute", "httproutes", "Namespaced"),
            (GRPCRoute::crd(), "GRPCRoute", "grpcroutes", "Namespaced"),
            (TLSRoute::crd(), "TLSRoute", "tlsroutes", "Namespaced"),
            (TCPRoute::crd(), "TCPRoute", "tcproutes", "Namespaced"),
            (UDPRoute::crd(), "UDPRoute", "udproutes", "Namespaced"),
            (ReferenceGrant::crd(), "ReferenceGrant", "referencegrants", "Namespaced"),
            (BackendTLSPolicy::crd(), "BackendTLSPolicy", "backendtlspolicies", "Namespaced"),
        ];
        for (crd, kind, plural, scope) in crds {
            assert_eq!(crd.spec.group, "gateway.networking.k8s.io");
            assert_eq!((crd.spec.names.kind.as_str(), crd.spec.names.plural.as_str()), (kind, plural));
            assert_eq!(crd.spec.scope, scope, "{kind}");
            assert_eq!(crd.spec.versions[0].name, "v1", "{kind}");
        }
        assert_eq!(HTTPRoute::api_version(&()), "gateway.networking.k8s.io/v1");
    }
}
