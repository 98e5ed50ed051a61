//! Gateway API → the table: GatewayClasses of ours, their Gateways' listeners, and the
//! HTTPRoutes attached to them.
//!
//! Each Gateway port is an address of its own ([`gateway::PortTable`]): routes attached to one
//! Gateway are never served on another's. Listeners are validated first (protocol, hostname,
//! conflicts on a port, certificates, allowed route kinds); routes then attach to the listeners
//! their parentRefs select and that allow them, their hostnames intersected with each listener's.
//! Every rule match becomes a candidate for (port, host, path); candidates are inserted in the
//! Gateway API's precedence order (method, then most headers, then most query parameters, then
//! the oldest route, then namespace/name, then rule and match order), so the first candidate
//! whose conditions a request meets is the one the API says wins. Exact paths come before
//! regular expressions, which come before prefixes (longest first).
//!
//! What each object's status would say is kept as data ([`GatewayInfo`] for Gateways and their
//! listeners) and as diagnostics for routes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use gateway::table::{
    path_regex, GatewayInfo, HeaderEdits, ListenerInfo, PortTable, RequestRedirect, Rewrite, Rule, Target, ValueMatch,
};
use gateway::{Backend, BackendState, HostKey, ListenerKey, PathKind, Route, RouteOptions};
use http::{HeaderName, HeaderValue, Method};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::service::PortRef;
use super::Context;
use crate::diagnostic::{Diagnostic, ObjectRef};
use crate::gateway_api::types as gw;

#[path = "gateway_l4.rs"]
mod gateway_l4;

pub const GROUP: &str = "gateway.networking.k8s.io";

/// A listener protocol ferry knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Http,
    Https,
    Tls,
    Tcp,
    Udp,
}

impl Proto {
    fn parse(s: &str) -> Option<Proto> {
        Some(match s {
            "HTTP" => Proto::Http,
            "HTTPS" => Proto::Https,
            "TLS" => Proto::Tls,
            "TCP" => Proto::Tcp,
            "UDP" => Proto::Udp,
            _ => return None,
        })
    }

    /// Route kinds a listener of this protocol takes by default (and at most).
    fn kinds(self) -> &'static [&'static str] {
        match self {
            Proto::Http | Proto::Https => &["HTTPRoute", "GRPCRoute"],
            Proto::Tls => &["TLSRoute"],
            Proto::Tcp => &["TCPRoute"],
            Proto::Udp => &["UDPRoute"],
        }
    }

    /// Protocols that can share a port: HTTPS and TLS (by SNI); otherwise only the same one.
    fn compatible(self, other: Proto) -> bool {
        self == other || matches!((self, other), (Proto::Https, Proto::Tls) | (Proto::Tls, Proto::Https))
    }
}

/// A condition as status would carry it.
#[derive(Debug, Clone)]
struct Cond {
    status: bool,
    reason: &'static str,
    message: String,
}

impl Cond {
    fn ok(reason: &'static str) -> Cond {
        Cond { status: true, reason, message: String::new() }
    }

    fn fail(reason: &'static str, message: impl Into<String>) -> Cond {
        Cond { status: false, reason, message: message.into() }
    }
}

/// What the status of every Gateway API object of ours should say, computed by `build()` beside
/// the table (the status writer in Kubernetes mode applies it; `/routes` shows a summary).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GatewayApiStatus {
    pub classes: Vec<ClassReport>,
    pub gateways: Vec<GatewayReport>,
    pub routes: Vec<RouteReport>,
    /// BackendTLSPolicies that apply to a backend of a route attached to one of our Gateways.
    pub policies: Vec<PolicyReport>,
}

/// One status condition (`metav1.Condition` without the transition time, which the writer keeps).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CondReport {
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl CondReport {
    fn of(type_: &'static str, c: &Cond) -> CondReport {
        CondReport { type_, status: c.status, reason: c.reason, message: c.message.clone() }
    }

    /// A route parent's `ResolvedRefs`: the first reference that did not resolve, if any.
    fn resolved_refs(unresolved: Option<&(&'static str, String)>) -> CondReport {
        match unresolved {
            Some((reason, why)) => CondReport { type_: "ResolvedRefs", status: false, reason, message: why.clone() },
            None => CondReport::of("ResolvedRefs", &Cond::ok("ResolvedRefs")),
        }
    }
}

/// A GatewayClass of ours: `Accepted` and the features ferry claims.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassReport {
    pub name: String,
    pub generation: Option<i64>,
    pub conditions: Vec<CondReport>,
    pub supported_features: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GatewayReport {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub conditions: Vec<CondReport>,
    pub listeners: Vec<ListenerReport>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ListenerReport {
    pub name: String,
    pub port: i32,
    /// Route kinds (group `gateway.networking.k8s.io`) the listener takes.
    pub supported_kinds: Vec<&'static str>,
    pub attached_routes: u32,
    pub conditions: Vec<CondReport>,
}

/// A route with the parents of ours it names.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RouteReport {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub parents: Vec<ParentReport>,
}

/// How a route stands on one parentRef (group, kind and namespace always spelled out).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ParentReport {
    pub parent_ref: gw::ParentReference,
    pub conditions: Vec<CondReport>,
}

/// A policy (BackendTLSPolicy) and how it stands for each Gateway whose routes use a backend
/// it targets (`status.ancestors`, our controller's entries).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PolicyReport {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub ancestors: Vec<AncestorReport>,
}

/// One ancestor (a Gateway; group, kind and namespace spelled out) of a policy.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AncestorReport {
    pub ancestor_ref: gw::ParentReference,
    pub conditions: Vec<CondReport>,
}

/// The features ferry claims in `GatewayClass.status.supportedFeatures` (GATEWAY-HTTP, -TLS,
/// -GRPC, -TCP, -UDP; sorted).
pub const SUPPORTED_FEATURES: &[&str] = &[
    "BackendTLSPolicy",
    "BackendTLSPolicySANValidation",
    "Gateway",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayPort8080",
    "GRPCRoute",
    "GRPCRouteNamedRouteRule",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteRetry",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
    "TCPRoute",
    "TLSRoute",
    "TLSRouteModeMixed",
    "TLSRouteModeTerminate",
    "UDPRoute",
];

/// One listener of one of our Gateways, as validated.
struct ListenerState<'a> {
    spec: &'a gw::Listener,
    field: String,
    port: u16,
    proto: Option<Proto>,
    hostname: Option<&'a str>,
    accepted: Cond,
    resolved: Cond,
    conflicted: Option<&'static str>,
    kinds: Vec<&'static str>,
    certs: Vec<gateway::Cert>,
    attached: u32,
}

impl ListenerState<'_> {
    /// Routes may attach (they count in `attachedRoutes`).
    fn attachable(&self) -> bool {
        self.accepted.status && self.conflicted.is_none()
    }

    /// Served: attachable, its references resolved, and a protocol ferry serves on Gateways
    /// (every one it knows; TLS, TCP and UDP routes in `gateway_l4`).
    fn programmed(&self) -> bool {
        self.attachable() && self.resolved.status && self.proto.is_some()
    }
}

struct GatewayState<'a> {
    obj: &'a gw::Gateway,
    ns: &'a str,
    name: &'a str,
    listeners: Vec<ListenerState<'a>>,
}

/// A rule match waiting to be inserted in precedence order.
struct Candidate {
    /// The listener (index within its Gateway).
    listener: usize,
    host: HostKey,
    kind: PathKind,
    path: String,
    order: (u8, usize, usize, Option<i64>, String, usize, usize),
    rule: Rule,
}

/// Compiles every Gateway of our GatewayClasses and the HTTPRoutes attached to them.
pub(super) fn compile_all(cx: &mut Context<'_>) {
    let snapshot = cx.snapshot;
    let ours: Vec<&str> = snapshot
        .gateway_classes
        .iter()
        .filter(|(_, c)| c.spec.controller_name == cx.opts.gateway_controller_name)
        .map(|(n, _)| n.as_str())
        .collect();
    if ours.is_empty() {
        return;
    }
    let mut gateways: Vec<GatewayState<'_>> = snapshot
        .gateways
        .iter()
        .filter(|(_, g)| ours.contains(&g.spec.gateway_class_name.as_str()))
        .map(|((ns, name), g)| GatewayState { obj: g, ns, name, listeners: Vec::new() })
        .collect();
    gateways.sort_by(|a, b| (a.ns, a.name).cmp(&(b.ns, b.name)));
    for g in &mut gateways {
        g.listeners = validate_listeners(cx, g.obj, g.ns, g.name);
    }

    cx.backend_tls = super::backend_tls::Policies::compile(snapshot, &mut cx.diagnostics);
    let mut candidates: HashMap<usize, Vec<Candidate>> = HashMap::new();
    // HTTPRoutes and GRPCRoutes share the tables; a GRPCRoute is compiled as the HTTPRoute it
    // amounts to (its methods are paths `/service/method`).
    let mut routes: Vec<(&'static str, &(String, String), std::borrow::Cow<'_, gw::HTTPRoute>)> =
        snapshot.http_routes.iter().map(|(k, r)| ("HTTPRoute", k, std::borrow::Cow::Borrowed(&**r))).collect();
    for (k, r) in &snapshot.grpc_routes {
        let obj = ObjectRef::new("GRPCRoute", &k.0, &k.1);
        routes.push(("GRPCRoute", k, std::borrow::Cow::Owned(grpc_as_http(cx, &obj, r))));
    }
    routes.sort_by(|a, b| (created(&a.2.metadata), a.1, a.0).cmp(&(created(&b.2.metadata), b.1, b.0)));
    for (age, (kind, (ns, name), route)) in routes.into_iter().enumerate() {
        let parents = attach_route(cx, &mut gateways, &mut candidates, age, kind, ns, name, &route);
        if !parents.is_empty() {
            cx.gateway_status.routes.push(RouteReport {
                kind,
                namespace: ns.clone(),
                name: name.clone(),
                generation: route.metadata.generation,
                parents,
            });
        }
    }
    let mut l4_routes = gateway_l4::attach_all(cx, &mut gateways);
    let mut classes: Vec<&str> = ours.clone();
    classes.sort();
    for c in classes {
        let generation = snapshot.gateway_classes.get(c).and_then(|c| c.metadata.generation);
        cx.gateway_status.classes.push(ClassReport {
            name: c.to_string(),
            generation,
            conditions: vec![CondReport::of("Accepted", &Cond::ok("Accepted"))],
            supported_features: {
                let mut f = SUPPORTED_FEATURES.to_vec();
                f.sort_unstable();
                f
            },
        });
    }

    let mut info = Vec::new();
    for (gi, g) in gateways.iter().enumerate() {
        let id: Arc<str> = format!("{}/{}", g.ns, g.name).into();
        let mut ports: BTreeMap<u16, PortTable> = BTreeMap::new();
        // Listener index within its port's table, by listener index within the Gateway.
        let mut slot: HashMap<usize, usize> = HashMap::new();
        for (li, l) in g.listeners.iter().enumerate().filter(|(_, l)| l.programmed()) {
            let protocol = gateway_l4::port_protocol(&g.listeners, l.port);
            let port = ports
                .entry(l.port)
                .or_insert_with(|| PortTable::new(ListenerKey { gateway: id.clone(), port: l.port }, protocol));
            let hostname = l.hostname.map(str::to_ascii_lowercase);
            if let Some(i) = port.add_listener(&l.spec.name, hostname.as_deref(), l.certs.first().cloned()) {
                slot.insert(li, i);
                if let Some(l4) = l4_routes.remove(&(gi, li)) {
                    port.listener_mut(i).l4 = l4;
                }
            }
        }
        let mut list: Vec<Candidate> = candidates.remove(&gi).unwrap_or_default();
        list.sort_by(|a, b| a.order.cmp(&b.order));
        for c in list {
            let (Some(l), Some(i)) = (g.listeners.get(c.listener), slot.get(&c.listener)) else { continue };
            if let Some(port) = ports.get_mut(&l.port) {
                port.listener_mut(*i).routes.add_rule(&c.host, c.kind, &c.path, c.rule);
            }
        }
        for (_, port) in ports {
            cx.table.add_gateway_port(port);
        }
        cx.gateway_status.gateways.push(gateway_report(g));
        info.push(GatewayInfo {
            namespace: g.ns.to_string(),
            name: g.name.to_string(),
            listeners: g
                .listeners
                .iter()
                .map(|l| ListenerInfo {
                    name: l.spec.name.clone(),
                    port: l.port,
                    protocol: l.spec.protocol.clone(),
                    hostname: l.hostname.map(str::to_string),
                    address: None,
                    attached_routes: l.attached,
                    programmed: l.programmed(),
                    conditions: listener_conditions(l),
                })
                .collect(),
        });
    }
    cx.table.set_gateway_info(info);
    cx.gateway_status.policies = cx.backend_tls.reports();
}

/// The Gateway's and its listeners' conditions.
fn gateway_report(g: &GatewayState<'_>) -> GatewayReport {
    let valid = g.listeners.iter().filter(|l| l.attachable()).count();
    let programmed = g.listeners.iter().filter(|l| l.programmed()).count();
    let accepted = if valid == g.listeners.len() {
        Cond::ok("Accepted")
    } else {
        // Accepted with the listeners that are valid (the API's reason for a partial Gateway).
        Cond { status: true, reason: "ListenersNotValid", message: "some listeners are not valid".into() }
    };
    let programmed =
        if programmed > 0 { Cond::ok("Programmed") } else { Cond::fail("Invalid", "no listener can be served") };
    let listeners = g
        .listeners
        .iter()
        .map(|l| {
            let conditions = listener_condition_reports(l);
            ListenerReport {
                name: l.spec.name.clone(),
                port: l.spec.port,
                supported_kinds: l.kinds.clone(),
                attached_routes: l.attached,
                conditions,
            }
        })
        .collect();
    GatewayReport {
        namespace: g.ns.to_string(),
        name: g.name.to_string(),
        generation: g.obj.metadata.generation,
        conditions: vec![CondReport::of("Accepted", &accepted), CondReport::of("Programmed", &programmed)],
        listeners,
    }
}

fn listener_programmed(l: &ListenerState<'_>) -> Cond {
    if l.programmed() {
        Cond::ok("Programmed")
    } else if !l.attachable() {
        Cond::fail("Invalid", "the listener is not accepted")
    } else if !l.resolved.status {
        Cond::fail("Invalid", "references not resolved")
    } else {
        Cond::fail("Invalid", format!("ferry does not serve {} listeners on Gateways yet", l.spec.protocol))
    }
}

fn created(m: &ObjectMeta) -> Option<i64> {
    m.creation_timestamp.as_ref().map(|t| t.0.as_second())
}

/// A listener's conditions as status reports them.
fn listener_condition_reports(l: &ListenerState<'_>) -> Vec<CondReport> {
    let conflicted = match l.conflicted {
        Some(reason) => CondReport { type_: "Conflicted", status: true, reason, message: String::new() },
        None => CondReport { type_: "Conflicted", status: false, reason: "NoConflicts", message: String::new() },
    };
    vec![
        CondReport::of("Accepted", &l.accepted),
        CondReport::of("ResolvedRefs", &l.resolved),
        CondReport::of("Programmed", &listener_programmed(l)),
        conflicted,
    ]
}

/// The same conditions as `/routes` shows them (`Type=Status(Reason): message`; a listener
/// without conflicts does not say so).
fn listener_conditions(l: &ListenerState<'_>) -> Vec<String> {
    listener_condition_reports(l)
        .into_iter()
        .filter(|c| c.type_ != "Conflicted" || c.status)
        .map(|c| {
            let s = if c.status { "True" } else { "False" };
            if c.message.is_empty() {
                format!("{}={s}({})", c.type_, c.reason)
            } else {
                format!("{}={s}({}): {}", c.type_, c.reason, c.message)
            }
        })
        .collect()
}

/// Validates a Gateway's listeners: protocol, port, hostname, conflicts, certificates, kinds.
fn validate_listeners<'a>(cx: &mut Context<'a>, g: &'a gw::Gateway, ns: &str, name: &str) -> Vec<ListenerState<'a>> {
    let obj = ObjectRef::new("Gateway", ns, name);
    let mut out: Vec<ListenerState<'a>> = Vec::new();
    for (i, l) in g.spec.listeners.iter().enumerate() {
        let field = format!("spec.listeners[{i}]");
        let mut st = ListenerState {
            spec: l,
            field: field.clone(),
            port: u16::try_from(l.port).unwrap_or(0),
            proto: Proto::parse(&l.protocol),
            hostname: l.hostname.as_deref().filter(|h| !h.is_empty()),
            accepted: Cond::ok("Accepted"),
            resolved: Cond::ok("ResolvedRefs"),
            conflicted: None,
            kinds: Vec::new(),
            certs: Vec::new(),
            attached: 0,
        };
        if out.iter().any(|o| o.spec.name == l.name) {
            let why = format!("listener name {:?} is used twice", l.name);
            cx.diagnostics.push(Diagnostic::error(&obj, format!("{field}.name"), why.clone()));
            st.conflicted = Some("HostnameConflict");
        }
        if st.port == 0 {
            let why = format!("port {} is not a TCP/UDP port number", l.port);
            cx.diagnostics.push(Diagnostic::error(&obj, format!("{field}.port"), why.clone()));
            st.accepted = Cond::fail("PortUnavailable", why);
        }
        match st.proto {
            None => {
                let why = format!("protocol {:?} is not supported (HTTP, HTTPS, TLS, TCP, UDP)", l.protocol);
                cx.diagnostics.push(Diagnostic::error(&obj, format!("{field}.protocol"), why.clone()));
                st.accepted = Cond::fail("UnsupportedProtocol", why);
            }
            Some(p) => {
                if let Some(h) = st.hostname {
                    if let Err(why) = super::ingress::validate_host(h) {
                        cx.diagnostics.push(Diagnostic::error(&obj, format!("{field}.hostname"), why.clone()));
                        st.accepted = Cond::fail("UnsupportedValue", why);
                    }
                }
                if matches!(p, Proto::Tcp | Proto::Udp) && st.hostname.is_some() {
                    cx.diagnostics.push(Diagnostic::warning(
                        &obj,
                        format!("{field}.hostname"),
                        "hostname is ignored on TCP and UDP listeners",
                    ));
                }
                st.kinds = allowed_kinds(cx, &obj, &field, l, p, &mut st.resolved);
                if p == Proto::Https || p == Proto::Tls {
                    tls_config(cx, &obj, &field, g, ns, l, p, &mut st);
                }
            }
        }
        out.push(st);
    }
    // Conflicts on a port: incompatible protocols conflict all of them; the same hostname twice
    // (of compatible protocols) conflicts every listener after the first.
    let n = out.len();
    for i in 0..n {
        if out[i].port == 0 || out[i].proto.is_none() || !out[i].accepted.status {
            continue;
        }
        for j in 0..n {
            if i == j || out[j].port != out[i].port || out[j].proto.is_none() || !out[j].accepted.status {
                continue;
            }
            let (pi, pj) = (out[i].proto.unwrap_or(Proto::Http), out[j].proto.unwrap_or(Proto::Http));
            if !pi.compatible(pj) {
                out[i].conflicted = Some("ProtocolConflict");
                out[i].kinds.clear();
            } else if j < i
                // HTTPS and TLS listeners share a port by hostname; TCP and UDP have none.
                && (same_host(out[i].hostname, out[j].hostname) || matches!(pi, Proto::Tcp | Proto::Udp))
                && out[i].conflicted.is_none()
            {
                out[i].conflicted = Some("HostnameConflict");
            }
        }
    }
    for l in &out {
        if let Some(reason) = l.conflicted {
            let why = format!("{reason}: another listener on port {} conflicts with this one", l.port);
            cx.diagnostics.push(Diagnostic::error(&obj, l.field.clone(), why));
        }
    }
    out
}

fn same_host(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

/// The route kinds a listener allows; kinds it cannot take make `ResolvedRefs` false.
fn allowed_kinds(
    cx: &mut Context<'_>,
    obj: &ObjectRef,
    field: &str,
    l: &gw::Listener,
    p: Proto,
    resolved: &mut Cond,
) -> Vec<&'static str> {
    let listed = l.allowed_routes.as_ref().map(|a| a.kinds.as_slice()).unwrap_or_default();
    if listed.is_empty() {
        return p.kinds().to_vec();
    }
    let mut kinds = Vec::new();
    for (k, rk) in listed.iter().enumerate() {
        let group_ok = rk.group.as_deref().is_none_or(|g| g == GROUP);
        match p.kinds().iter().find(|known| **known == rk.kind) {
            Some(known) if group_ok => {
                if !kinds.contains(known) {
                    kinds.push(*known);
                }
            }
            _ => {
                let why = format!("route kind {:?} cannot attach to a {:?} listener", rk.kind, l.protocol);
                cx.diagnostics.push(Diagnostic::error(obj, format!("{field}.allowedRoutes.kinds[{k}]"), why.clone()));
                *resolved = Cond::fail("InvalidRouteKinds", why);
            }
        }
    }
    kinds
}

/// HTTPS and TLS listeners: mode and certificates.
#[allow(clippy::too_many_arguments)]
fn tls_config<'a>(
    cx: &mut Context<'a>,
    obj: &ObjectRef,
    field: &str,
    g: &gw::Gateway,
    ns: &str,
    l: &gw::Listener,
    p: Proto,
    st: &mut ListenerState<'a>,
) {
    let _ = g;
    let Some(tls) = &l.tls else {
        if p == Proto::Https || p == Proto::Tls {
            let why = "an HTTPS or TLS listener needs tls (certificateRefs to terminate TLS)";
            cx.diagnostics.push(Diagnostic::error(obj, format!("{field}.tls"), why));
            st.resolved = Cond::fail("InvalidCertificateRef", why);
        }
        return;
    };
    let mode = tls.mode.as_deref().unwrap_or("Terminate");
    match (p, mode) {
        (_, "Terminate") => {}
        (Proto::Tls, "Passthrough") => return,
        (Proto::Https, "Passthrough") => {
            let why = "HTTPS listeners terminate TLS; use protocol TLS for passthrough";
            cx.diagnostics.push(Diagnostic::error(obj, format!("{field}.tls.mode"), why));
            st.accepted = Cond::fail("UnsupportedValue", why);
            return;
        }
        (_, other) => {
            let why = format!("TLS mode {other:?} is not Terminate or Passthrough");
            cx.diagnostics.push(Diagnostic::error(obj, format!("{field}.tls.mode"), why.clone()));
            st.accepted = Cond::fail("UnsupportedValue", why);
            return;
        }
    }
    if tls.certificate_refs.is_empty() {
        let why = "no tls.certificateRefs";
        cx.diagnostics.push(Diagnostic::error(obj, format!("{field}.tls.certificateRefs"), why));
        st.resolved = Cond::fail("InvalidCertificateRef", why);
    }
    for (i, r) in tls.certificate_refs.iter().enumerate() {
        let rf = format!("{field}.tls.certificateRefs[{i}]");
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Secret");
        let rns = r.namespace.as_deref().unwrap_or(ns);
        let result = if !group.is_empty() || kind != "Secret" {
            Err(("InvalidCertificateRef", format!("{group}/{kind} is not a Secret")))
        } else if rns != ns && !granted(cx.snapshot, "Gateway", ns, "", "Secret", rns, &r.name) {
            Err(("RefNotPermitted", format!("no ReferenceGrant in {rns} lets Gateways of {ns} use Secret {}", r.name)))
        } else {
            cx.certs.get(cx.snapshot, rns, &r.name).map_err(|e| ("InvalidCertificateRef", e))
        };
        match result {
            Ok(cert) => st.certs.push(cert),
            Err((reason, why)) => {
                cx.diagnostics.push(Diagnostic::error(obj, rf, why.clone()));
                st.resolved = Cond::fail(reason, why);
            }
        }
    }
}

/// Whether a ReferenceGrant in `to_ns` lets `from_kind` objects of `from_ns` refer to
/// `to_kind` `to_name` (`to_group` `""` = core).
pub(super) fn granted(
    snapshot: &crate::Snapshot,
    from_kind: &str,
    from_ns: &str,
    to_group: &str,
    to_kind: &str,
    to_ns: &str,
    to_name: &str,
) -> bool {
    snapshot.reference_grants.iter().filter(|((ns, _), _)| ns == to_ns).any(|(_, g)| {
        g.spec.from.iter().any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_ns)
            && g.spec.to.iter().any(|t| {
                t.group == to_group
                    && t.kind == to_kind
                    && t.name.as_deref().is_none_or(|n| n.is_empty() || n == to_name)
            })
    })
}

/// Whether the listener lets a route of `route_ns` attach (its `allowedRoutes.namespaces`).
fn namespace_allowed(cx: &Context<'_>, l: &gw::Listener, gw_ns: &str, route_ns: &str) -> bool {
    let from = l.allowed_routes.as_ref().and_then(|a| a.namespaces.as_ref());
    match from.and_then(|f| f.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Same" => gw_ns == route_ns,
        "Selector" => {
            let Some(selector) = from.and_then(|f| f.selector.as_ref()) else { return false };
            let labels = cx.snapshot.namespaces.get(route_ns).and_then(|n| n.metadata.labels.clone());
            let mut labels = labels.unwrap_or_default();
            labels.entry("kubernetes.io/metadata.name".into()).or_insert_with(|| route_ns.to_string());
            selects(selector, &labels)
        }
        _ => false,
    }
}

/// Label selector semantics (`matchLabels` and `matchExpressions`, all must hold).
fn selects(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = sel.match_labels.as_ref().is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let exprs_ok = sel.match_expressions.as_deref().unwrap_or_default().iter().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let v = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => v.is_some_and(|v| values.contains(v)),
            "NotIn" => v.is_none_or(|v| !values.contains(v)),
            "Exists" => v.is_some(),
            "DoesNotExist" => v.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// The hostnames a route serves on a listener: the intersection of the route's and the
/// listener's (`None`: any host). Empty: none in common.
fn intersect(listener: Option<&str>, route: &[String]) -> Vec<Option<String>> {
    let lower = |s: &str| s.to_ascii_lowercase();
    match (listener, route.is_empty()) {
        (None, true) => vec![None],
        (None, false) => route.iter().map(|r| Some(lower(r))).collect(),
        (Some(l), true) => vec![Some(lower(l))],
        (Some(l), false) => {
            let l = lower(l);
            let mut out = Vec::new();
            for r in route.iter().map(|r| lower(r)) {
                let pick = if r == l || covers(&l, &r) {
                    Some(r)
                } else if covers(&r, &l) {
                    Some(l.clone())
                } else {
                    None
                };
                if let Some(p) = pick {
                    if !out.contains(&Some(p.clone())) {
                        out.push(Some(p));
                    }
                }
            }
            out
        }
    }
}

/// Whether wildcard `pattern` (`*.example.com`) covers `name` (one or more labels before
/// `example.com`; `name` may itself be a narrower wildcard).
fn covers(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else { return false };
    let name = name.strip_prefix("*.").unwrap_or(name);
    name.len() > suffix.len() && name.ends_with(suffix) && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
}

/// Compiled rules of a route and what compiling them found.
struct Compiled {
    matches: Vec<CompiledMatch>,
    /// The first reference that did not resolve: reason and message (`ResolvedRefs=False`).
    refs: Option<(&'static str, String)>,
    /// Rules or matches skipped (`PartiallyInvalid`, or `Accepted=False` when nothing is left).
    dropped: Option<String>,
    /// The Service ports the backends use (namespace, Service, port name): BackendTLSPolicies
    /// targeting them get the route's Gateways as ancestors.
    services: BTreeSet<(String, String, Option<String>)>,
}

/// Attaches an HTTPRoute (or a GRPCRoute as one: `kind`) to the listeners its parentRefs
/// select and allow, and returns its status on each parent of ours.
#[allow(clippy::too_many_arguments)]
fn attach_route<'a>(
    cx: &mut Context<'a>,
    gateways: &mut [GatewayState<'a>],
    candidates: &mut HashMap<usize, Vec<Candidate>>,
    age: usize,
    kind: &'static str,
    ns: &'a str,
    name: &'a str,
    route: &gw::HTTPRoute,
) -> Vec<ParentReport> {
    let obj = ObjectRef::new(kind, ns, name);
    let mut compiled: Option<Compiled> = None;
    let mut reports = Vec::new();
    for (pi, parent) in route.spec.parent_refs.iter().enumerate() {
        let hostnames = Some(route.spec.hostnames.as_slice());
        let Some(selected) = select_parent(cx, gateways, &obj, pi, parent, hostnames, &mut reports) else { continue };
        let Selected { gi, parent_ref, hosted, .. } = selected;
        let c = compiled.get_or_insert_with(|| compile_rules(cx, &obj, ns, name, route));
        let mut conditions = Vec::new();
        match (&c.dropped, c.matches.is_empty()) {
            (Some(why), true) => {
                conditions.push(CondReport {
                    type_: "Accepted",
                    status: false,
                    reason: "UnsupportedValue",
                    message: why.clone(),
                });
            }
            (Some(why), false) => {
                conditions.push(CondReport::of("Accepted", &Cond::ok("Accepted")));
                conditions.push(CondReport {
                    type_: "PartiallyInvalid",
                    status: true,
                    reason: "UnsupportedValue",
                    message: why.clone(),
                });
            }
            (None, _) => conditions.push(CondReport::of("Accepted", &Cond::ok("Accepted"))),
        }
        conditions.push(CondReport::resolved_refs(c.refs.as_ref()));
        if conditions[0].status {
            let (gns, gname) = (gateways[gi].ns, gateways[gi].name);
            for (sns, sname, port) in &c.services {
                cx.backend_tls.used(sns, sname, port.as_deref(), (gns, gname));
            }
        }
        reports.push(ParentReport { parent_ref, conditions });
        for (i, hosts) in hosted {
            let l = &mut gateways[gi].listeners[i];
            l.attached += 1;
            if !l.programmed() {
                continue;
            }
            for host in &hosts {
                for m in c.matches.iter() {
                    let host = HostKey::parse(host.as_deref().unwrap_or(""));
                    candidates.entry(gi).or_default().push(Candidate {
                        listener: i,
                        host,
                        kind: m.kind,
                        path: m.path.clone(),
                        order: (
                            u8::from(m.rule.when.method.is_none()),
                            usize::MAX - m.rule.when.headers.len(),
                            usize::MAX - m.rule.when.query.len(),
                            created(&route.metadata),
                            format!("{ns}/{name}"),
                            m.rule_index * 1000 + m.match_index,
                            age,
                        ),
                        rule: Rule { when: m.rule.when.clone(), target: m.target() },
                    });
                }
            }
        }
    }
    reports
}

/// A GRPCRoute as the HTTPRoute it amounts to: a method match is a path (`/service/method`
/// exact, `/service` as a prefix, a regular expression otherwise); headers, filters and backends
/// carry over. Invalid method matches are located errors and leave their match out.
fn grpc_as_http(cx: &mut Context<'_>, obj: &ObjectRef, r: &gw::GRPCRoute) -> gw::HTTPRoute {
    let filter = |f: &gw::GRPCRouteFilter| gw::HTTPRouteFilter {
        type_: f.type_.clone(),
        request_header_modifier: f.request_header_modifier.clone(),
        response_header_modifier: f.response_header_modifier.clone(),
        request_mirror: f.request_mirror.clone(),
        extension_ref: f.extension_ref.clone(),
        ..Default::default()
    };
    let mut rules = Vec::new();
    for (ri, rule) in r.spec.rules.iter().enumerate() {
        let mut matches = Vec::new();
        for (mi, m) in rule.matches.iter().enumerate() {
            let field = format!("spec.rules[{ri}].matches[{mi}].method");
            let path = match &m.method {
                None => None,
                Some(method) => match grpc_path(method) {
                    Ok(p) => Some(p),
                    Err(why) => {
                        cx.diagnostics.push(Diagnostic::error(obj, field, why));
                        continue;
                    }
                },
            };
            let headers = m
                .headers
                .iter()
                .map(|h| gw::HTTPHeaderMatch { type_: h.type_.clone(), name: h.name.clone(), value: h.value.clone() })
                .collect();
            matches.push(gw::HTTPRouteMatch { path, headers, ..Default::default() });
        }
        if !rule.matches.is_empty() && matches.is_empty() {
            continue;
        }
        rules.push(gw::HTTPRouteRule {
            name: rule.name.clone(),
            matches,
            filters: rule.filters.iter().map(filter).collect(),
            backend_refs: rule
                .backend_refs
                .iter()
                .map(|b| gw::HTTPBackendRef {
                    group: b.group.clone(),
                    kind: b.kind.clone(),
                    name: b.name.clone(),
                    namespace: b.namespace.clone(),
                    port: b.port,
                    weight: b.weight,
                    filters: b.filters.iter().map(filter).collect(),
                })
                .collect(),
            ..Default::default()
        });
    }
    gw::HTTPRoute {
        metadata: r.metadata.clone(),
        spec: gw::HTTPRouteSpec { parent_refs: r.spec.parent_refs.clone(), hostnames: r.spec.hostnames.clone(), rules },
        status: None,
    }
}

/// The path match of a gRPC method match.
fn grpc_path(m: &gw::GRPCMethodMatch) -> Result<gw::HTTPPathMatch, String> {
    let (service, method) =
        (m.service.as_deref().filter(|s| !s.is_empty()), m.method.as_deref().filter(|s| !s.is_empty()));
    let path = |type_: &str, value: String| gw::HTTPPathMatch { type_: Some(type_.into()), value: Some(value) };
    let plain = |s: &str| !s.is_empty() && !s.contains('/') && s.bytes().all(|b| b.is_ascii_graphic());
    match m.type_.as_deref().unwrap_or("Exact") {
        "Exact" => match (service, method) {
            (None, None) => Err("a method match needs a service or a method".into()),
            (Some(s), _) | (_, Some(s)) if !plain(s) => Err(format!("{s:?} is not a gRPC service or method name")),
            (Some(s), Some(m)) => Ok(path("Exact", format!("/{s}/{m}"))),
            (Some(s), None) => Ok(path("PathPrefix", format!("/{s}"))),
            (None, Some(m)) => Ok(path("RegularExpression", format!("/[^/]+/{}", regex::escape(m)))),
        },
        "RegularExpression" => {
            for re in [service, method].into_iter().flatten() {
                regex::Regex::new(re).map_err(|e| format!("regular expression {re:?} does not compile: {e}"))?;
            }
            Ok(path(
                "RegularExpression",
                format!("/(?:{})/(?:{})", service.unwrap_or("[^/]+"), method.unwrap_or("[^/]+")),
            ))
        }
        other => Err(format!("method match type {other:?} is not Exact or RegularExpression")),
    }
}

/// The listeners of ours one parentRef of a route attaches to.
struct Selected {
    /// The Gateway (index in the compiled Gateways).
    gi: usize,
    /// The parentRef with group, kind and namespace spelled out (as status reports it).
    parent_ref: gw::ParentReference,
    field: String,
    /// Each listener (index in its Gateway) with the hostnames the route serves on it (empty for
    /// kinds without hostnames).
    hosted: Vec<(usize, Vec<Option<String>>)>,
}

/// Resolves parentRef `pi` of route `obj` (of kind `obj.kind`, in `obj.namespace`): the Gateway
/// of ours it names, the listeners its `sectionName`/`port` select, those that allow the route
/// (kind and namespace), and the hostnames it shares with each (`hostnames`: `None` for kinds
/// without hostnames). `None`: nothing to attach to — a parent that is not ours is skipped
/// silently, a refusal is reported with the spec's reason (`NoMatchingParent`,
/// `NotAllowedByListeners`, `NoMatchingListenerHostname`) into `reports` and the diagnostics.
fn select_parent(
    cx: &mut Context<'_>,
    gateways: &[GatewayState<'_>],
    obj: &ObjectRef,
    pi: usize,
    parent: &gw::ParentReference,
    hostnames: Option<&[String]>,
    reports: &mut Vec<ParentReport>,
) -> Option<Selected> {
    let field = format!("spec.parentRefs[{pi}]");
    if parent.group.as_deref().is_some_and(|g| g != GROUP) || parent.kind.as_deref().is_some_and(|k| k != "Gateway") {
        return None;
    }
    let (ns, kind) = (obj.namespace.as_str(), obj.kind.as_str());
    let gw_ns = parent.namespace.as_deref().unwrap_or(ns);
    let gi = gateways.iter().position(|g| g.ns == gw_ns && g.name == parent.name)?;
    let parent_ref = gw::ParentReference {
        group: Some(GROUP.into()),
        kind: Some("Gateway".into()),
        namespace: Some(gw_ns.to_string()),
        ..parent.clone()
    };
    let mut refused = |cx: &mut Context<'_>, reason: &'static str, why: String| {
        cx.diagnostics.push(Diagnostic::error(obj, field.clone(), format!("{reason}: {why}")));
        reports.push(ParentReport {
            parent_ref: parent_ref.clone(),
            conditions: vec![
                CondReport { type_: "Accepted", status: false, reason, message: why },
                CondReport::resolved_refs(None),
            ],
        });
        None
    };
    let g = &gateways[gi];
    let selected: Vec<usize> = (0..g.listeners.len())
        .filter(|&i| {
            let l = &g.listeners[i];
            parent.section_name.as_deref().is_none_or(|s| s == l.spec.name)
                && parent.port.is_none_or(|p| p == l.spec.port)
        })
        .collect();
    if selected.is_empty() {
        return refused(
            cx,
            "NoMatchingParent",
            format!("Gateway {gw_ns}/{} has no listener this parentRef selects", parent.name),
        );
    }
    let allowed: Vec<usize> = selected
        .into_iter()
        .filter(|&i| {
            let l = &g.listeners[i];
            l.attachable() && l.kinds.contains(&kind) && namespace_allowed(cx, l.spec, g.ns, ns)
        })
        .collect();
    if allowed.is_empty() {
        let why = format!("no listener of Gateway {gw_ns}/{} allows {kind}s from {ns}", parent.name);
        return refused(cx, "NotAllowedByListeners", why);
    }
    let hosted: Vec<(usize, Vec<Option<String>>)> = allowed
        .into_iter()
        .filter_map(|i| match hostnames {
            None => Some((i, Vec::new())),
            Some(names) => {
                let hosts = intersect(g.listeners[i].hostname, names);
                (!hosts.is_empty()).then_some((i, hosts))
            }
        })
        .collect();
    if hosted.is_empty() {
        return refused(cx, "NoMatchingListenerHostname", "no route hostname matches a listener hostname".into());
    }
    Some(Selected { gi, parent_ref, field, hosted })
}

/// One match of one rule, compiled once and inserted for every host and listener it attaches to.
struct CompiledMatch {
    kind: PathKind,
    path: String,
    rule_index: usize,
    match_index: usize,
    rule: Rule,
    /// The routes (with weights) the target is built from.
    routes: Vec<(u32, Arc<Route>)>,
}

impl CompiledMatch {
    fn target(&self) -> Target {
        Target::split(self.routes.clone()).unwrap_or_else(|| Target::One(self.routes[0].1.clone()))
    }
}

fn compile_rules<'a>(
    cx: &mut Context<'a>,
    obj: &ObjectRef,
    ns: &'a str,
    name: &'a str,
    route: &gw::HTTPRoute,
) -> Compiled {
    let route_name: Arc<str> = format!("{ns}/{name}").into();
    let mut out = Compiled { matches: Vec::new(), refs: None, dropped: None, services: BTreeSet::new() };
    let default_match = [gw::HTTPRouteMatch::default()];
    for (ri, rule) in route.spec.rules.iter().enumerate() {
        let rfield = format!("spec.rules[{ri}]");
        let matches: &[gw::HTTPRouteMatch] = if rule.matches.is_empty() { &default_match } else { &rule.matches };
        for (mi, m) in matches.iter().enumerate() {
            let mfield = format!("{rfield}.matches[{mi}]");
            let before = cx.diagnostics.len();
            let parsed = path_match(cx, obj, &mfield, m).zip(conditions(cx, obj, &mfield, m));
            let Some(((kind, path, prefix), when)) = parsed else {
                let why = cx.diagnostics.get(before).map_or_else(|| format!("{mfield} is invalid"), |d| d.to_string());
                out.dropped.get_or_insert(why);
                continue;
            };
            let Some(options) = filters(cx, obj, &format!("{rfield}.filters"), &rule.filters, prefix.as_deref()) else {
                // A filter that cannot be applied must not be skipped: the rule answers 500.
                let r = invalid_route(&route_name, "a filter of this rule cannot be applied");
                out.matches.push(CompiledMatch {
                    kind,
                    path,
                    rule_index: ri,
                    match_index: mi,
                    rule: Rule { when, target: Target::One(r.clone()) },
                    routes: vec![(1, r)],
                });
                continue;
            };
            let mut options = options;
            if let Some(t) = &rule.timeouts {
                match timeouts(t) {
                    Ok(read) => options.read = read.or(options.read),
                    Err(why) => {
                        cx.diagnostics.push(Diagnostic::error(obj, format!("{rfield}.timeouts"), why.clone()));
                        out.dropped.get_or_insert(why);
                    }
                }
            }
            if let Some(r) = &rule.retry {
                match retry(r) {
                    Ok((codes, attempts, backoff)) => {
                        options.retry_on = Some(codes);
                        options.retries = attempts;
                        options.retry_backoff = backoff;
                    }
                    Err(why) => {
                        cx.diagnostics.push(Diagnostic::error(obj, format!("{rfield}.retry"), why.clone()));
                        out.dropped.get_or_insert(why);
                    }
                }
            }
            let routes = backends(cx, obj, &rfield, ns, &route_name, rule, &options, prefix.as_deref(), &mut out);
            out.matches.push(CompiledMatch {
                kind,
                path,
                rule_index: ri,
                match_index: mi,
                rule: Rule { when, target: Target::One(routes[0].1.clone()) },
                routes,
            });
        }
    }
    out
}

/// `retry`: the statuses retried (default 500, 502, 503, 504), the number of retries (default
/// 1, at most 10) and the pause before each.
#[allow(clippy::type_complexity)]
fn retry(r: &gw::HTTPRouteRetry) -> Result<(Arc<[u16]>, u8, Option<std::time::Duration>), String> {
    let codes: Vec<u16> = if r.codes.is_empty() {
        vec![500, 502, 503, 504]
    } else {
        r.codes
            .iter()
            .map(|c| {
                u16::try_from(*c).ok().filter(|c| (500..=599).contains(c)).ok_or(format!("retry code {c} is not 5xx"))
            })
            .collect::<Result<_, _>>()?
    };
    let attempts = r.attempts.unwrap_or(1);
    let attempts =
        u8::try_from(attempts).ok().filter(|a| *a <= 10).ok_or(format!("{attempts} retry attempts (0-10)"))?;
    let backoff = r.backoff.as_deref().map(gateway_duration).transpose()?.filter(|d| !d.is_zero());
    Ok((codes.into(), attempts, backoff))
}

/// `timeouts.request` and `timeouts.backendRequest` as the time the backend has to answer
/// (504 after it; the shorter of the two; `0s` turns a timeout off, leaving the gateway's).
fn timeouts(t: &gw::HTTPRouteTimeouts) -> Result<Option<std::time::Duration>, String> {
    let request = t.request.as_deref().map(gateway_duration).transpose()?;
    let backend = t.backend_request.as_deref().map(gateway_duration).transpose()?;
    if let (Some(r), Some(b)) = (request, backend) {
        if !r.is_zero() && b > r {
            return Err(format!("backendRequest ({b:?}) is longer than request ({r:?})"));
        }
    }
    Ok([request, backend].into_iter().flatten().filter(|d| !d.is_zero()).min())
}

/// A Gateway API duration: one to four `<digits><unit>` parts, units `h`, `m`, `s`, `ms`
/// (`1h30m`, `500ms`, `0s`).
pub(super) fn gateway_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a Gateway API duration (e.g. 500ms, 10s, 1h30m)");
    let (mut rest, mut total, mut parts) = (s, std::time::Duration::ZERO, 0);
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (std::time::Duration::from_millis(1), 2)
        } else {
            match rest.as_bytes()[0] {
                b'h' => (std::time::Duration::from_secs(3600), 1),
                b'm' => (std::time::Duration::from_secs(60), 1),
                b's' => (std::time::Duration::from_secs(1), 1),
                _ => return Err(bad()),
            }
        };
        rest = &rest[len..];
        total += unit * n as u32;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}

fn invalid_route(name: &Arc<str>, why: &str) -> Arc<Route> {
    let backend = Arc::new(Backend::unserved(format!("{name}:invalid"), BackendState::Invalid(why.to_string())));
    Arc::new(Route::new(name.clone(), backend))
}

/// The path part of a match: kind, table path, and the prefix a `ReplacePrefixMatch` replaces.
fn path_match(
    cx: &mut Context<'_>,
    obj: &ObjectRef,
    field: &str,
    m: &gw::HTTPRouteMatch,
) -> Option<(PathKind, String, Option<String>)> {
    let (kind, value) = match &m.path {
        None => ("PathPrefix", "/"),
        Some(p) => (p.type_.as_deref().unwrap_or("PathPrefix"), p.value.as_deref().unwrap_or("/")),
    };
    let err = |cx: &mut Context<'_>, why: String| {
        cx.diagnostics.push(Diagnostic::error(obj, format!("{field}.path"), why));
    };
    match kind {
        "Exact" | "PathPrefix" => {
            if !value.starts_with('/') {
                err(cx, format!("path {value:?} must start with /"));
                return None;
            }
            if kind == "Exact" {
                Some((PathKind::Exact, value.to_string(), None))
            } else {
                Some((PathKind::Prefix, value.to_string(), Some(value.to_string())))
            }
        }
        "RegularExpression" => match path_regex(value) {
            Ok(anchored) => Some((PathKind::RegularExpression, anchored, None)),
            Err(e) => {
                err(cx, format!("regular expression {value:?} does not compile: {e}"));
                None
            }
        },
        other => {
            err(cx, format!("path match type {other:?} is not Exact, PathPrefix or RegularExpression"));
            None
        }
    }
}

fn conditions(
    cx: &mut Context<'_>,
    obj: &ObjectRef,
    field: &str,
    m: &gw::HTTPRouteMatch,
) -> Option<gateway::table::Conditions> {
    let method = match m.method.as_deref() {
        None => None,
        Some(s) => match Method::from_bytes(s.as_bytes()) {
            Ok(m) => Some(m),
            Err(_) => {
                cx.diagnostics.push(Diagnostic::error(
                    obj,
                    format!("{field}.method"),
                    format!("{s:?} is not a method"),
                ));
                return None;
            }
        },
    };
    let value = |cx: &mut Context<'_>, f: String, kind: Option<&str>, v: &str| -> Option<ValueMatch> {
        match kind.unwrap_or("Exact") {
            "Exact" => Some(ValueMatch::Exact(v.into())),
            "RegularExpression" => match ValueMatch::regex(v) {
                Ok(m) => Some(m),
                Err(e) => {
                    let why = format!("regular expression {v:?} does not compile: {e}");
                    cx.diagnostics.push(Diagnostic::error(obj, f, why));
                    None
                }
            },
            other => {
                let why = format!("match type {other:?} is not Exact or RegularExpression");
                cx.diagnostics.push(Diagnostic::error(obj, f, why));
                None
            }
        }
    };
    let mut headers: Vec<(HeaderName, ValueMatch)> = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        let f = format!("{field}.headers[{i}]");
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            cx.diagnostics.push(Diagnostic::error(obj, f, format!("{:?} is not a header name", h.name)));
            return None;
        };
        // The first entry for a name wins; later ones are ignored, as the API says.
        if headers.iter().any(|(n, _)| *n == name) {
            continue;
        }
        headers.push((name, value(cx, f, h.type_.as_deref(), &h.value)?));
    }
    let mut query: Vec<(Box<str>, ValueMatch)> = Vec::new();
    for (i, q) in m.query_params.iter().enumerate() {
        let f = format!("{field}.queryParams[{i}]");
        if query.iter().any(|(n, _)| **n == *q.name) {
            continue;
        }
        query.push((q.name.as_str().into(), value(cx, f, q.type_.as_deref(), &q.value)?));
    }
    Some(gateway::table::Conditions { method, headers: headers.into(), query: query.into() })
}

/// A rule's (or backendRef's) filters as route options. `None`: a filter cannot be applied
/// (the requests it would have handled are answered 500).
fn filters<'a>(
    cx: &mut Context<'a>,
    obj: &ObjectRef,
    field: &str,
    list: &[gw::HTTPRouteFilter],
    prefix: Option<&str>,
) -> Option<RouteOptions> {
    let mut o = RouteOptions::default();
    for (i, f) in list.iter().enumerate() {
        let ff = format!("{field}[{i}]");
        let fail = |cx: &mut Context<'_>, why: String| {
            cx.diagnostics.push(Diagnostic::error(obj, ff.clone(), why));
            None::<RouteOptions>
        };
        match f.type_.as_str() {
            "RequestHeaderModifier" | "ResponseHeaderModifier" => {
                let spec = if f.type_ == "RequestHeaderModifier" {
                    f.request_header_modifier.as_ref()
                } else {
                    f.response_header_modifier.as_ref()
                };
                let Some(spec) = spec else { return fail(cx, format!("{} filter without its settings", f.type_)) };
                let edits = match header_edits(spec) {
                    Ok(e) => e,
                    Err(why) => return fail(cx, why),
                };
                let slot =
                    if f.type_ == "RequestHeaderModifier" { &mut o.request_headers } else { &mut o.response_headers };
                let merged = match slot.take() {
                    Some(prev) => {
                        let mut p = (*prev).clone();
                        p.set.extend(edits.set);
                        p.add.extend(edits.add);
                        p.remove.extend(edits.remove);
                        p
                    }
                    None => edits,
                };
                *slot = Some(Arc::new(merged));
            }
            "RequestRedirect" => {
                let Some(r) = &f.request_redirect else {
                    return fail(cx, "RequestRedirect without its settings".into());
                };
                let code = r.status_code.unwrap_or(302);
                if ![301, 302, 303, 307, 308].contains(&code) {
                    return fail(cx, format!("redirect status {code} is not 301, 302, 303, 307 or 308"));
                }
                let scheme = match r.scheme.as_deref() {
                    None => None,
                    Some(s @ ("http" | "https")) => Some(s.into()),
                    Some(other) => return fail(cx, format!("redirect scheme {other:?} is not http or https")),
                };
                let port = match r.port {
                    None => None,
                    Some(p) => match u16::try_from(p) {
                        Ok(p) if p > 0 => Some(p),
                        _ => return fail(cx, format!("redirect port {p} is not a port number")),
                    },
                };
                let path = match &r.path {
                    None => None,
                    Some(m) => match path_modifier(m, prefix) {
                        Ok(p) => Some(p),
                        Err(why) => return fail(cx, why),
                    },
                };
                o.request_redirect = Some(Arc::new(RequestRedirect {
                    scheme,
                    hostname: r.hostname.as_deref().map(Into::into),
                    port,
                    path,
                    code: code as u16,
                }));
            }
            "URLRewrite" => {
                let Some(r) = &f.url_rewrite else { return fail(cx, "URLRewrite without its settings".into()) };
                if let Some(h) = &r.hostname {
                    if HeaderValue::from_str(h).is_err() || h.is_empty() {
                        return fail(cx, format!("rewrite hostname {h:?} is not a host name"));
                    }
                    o.host_rewrite = Some(h.as_str().into());
                }
                if let Some(m) = &r.path {
                    match path_modifier(m, prefix) {
                        Ok(p) => o.rewrite = Some(Arc::new(p)),
                        Err(why) => return fail(cx, why),
                    }
                }
            }
            "CORS" => {
                let Some(c) = &f.cors else { return fail(cx, "CORS without its settings".into()) };
                let list = |v: &[String]| v.iter().map(|s| s.trim()).collect::<Vec<_>>().join(", ");
                let values = [list(&c.allow_methods), list(&c.allow_headers), list(&c.expose_headers)];
                if let Some(bad) = values.iter().find(|v| HeaderValue::from_str(v).is_err()) {
                    return fail(cx, format!("{bad:?} is not a header value"));
                }
                let [methods, headers, expose] = values;
                o.cors = Some(Arc::new(gateway::cors::Cors {
                    origins: c.allow_origins.iter().map(|o| o.trim().to_ascii_lowercase()).collect(),
                    methods: if methods.is_empty() { "GET, HEAD, POST".into() } else { methods },
                    headers,
                    expose: (!expose.is_empty()).then_some(expose),
                    credentials: c.allow_credentials.unwrap_or(false),
                    max_age: c.max_age.map_or(5, |a| a.max(0) as u32),
                }));
            }
            "RequestMirror" => {
                let Some(m) = &f.request_mirror else { return fail(cx, "RequestMirror without its settings".into()) };
                let b = &m.backend_ref;
                let (group, kind) = (b.group.as_deref().unwrap_or(""), b.kind.as_deref().unwrap_or("Service"));
                let bns = b.namespace.as_deref().unwrap_or(&obj.namespace);
                if !group.is_empty() || kind != "Service" {
                    return fail(cx, format!("mirror backend {group}/{kind} is not a Service"));
                }
                if bns != obj.namespace && !granted(cx.snapshot, &obj.kind, &obj.namespace, "", "Service", bns, &b.name)
                {
                    return fail(
                        cx,
                        format!("no ReferenceGrant in {bns} lets this route mirror to Service {}", b.name),
                    );
                }
                let snapshot = cx.snapshot;
                let Some(((sns, sname), _)) = snapshot.services.get_key_value(&(bns.to_string(), b.name.clone()))
                else {
                    return fail(cx, format!("mirror Service {bns}/{} not found", b.name));
                };
                let (numerator, denominator) = match (m.percent, &m.fraction) {
                    (Some(p), _) => (p, 100),
                    (None, Some(fr)) => (fr.numerator, fr.denominator.unwrap_or(100)),
                    (None, None) => (100, 100),
                };
                if numerator < 0 || denominator <= 0 || numerator > denominator {
                    return fail(cx, format!("mirror share {numerator}/{denominator} is not between 0 and 1"));
                }
                let port = PortRef::Number(b.port.unwrap_or(0));
                let port_name = snapshot.services.get(&(sns.clone(), sname.clone())).and_then(|s| port_name(s, b.port));
                let backend = match service_backend(cx, sns, sname, port, port_name.as_deref(), obj, &ff) {
                    Ok(backend) => backend,
                    // A mirror never fails the request it copies: no copies, and the reason.
                    Err(why) => {
                        let why = format!("no copies are sent to Service {sns}/{sname}: {why}");
                        cx.diagnostics.push(Diagnostic::warning(obj, ff.clone(), why));
                        continue;
                    }
                };
                let mut list: Vec<gateway::table::Mirror> = o.mirrors.as_deref().map(<[_]>::to_vec).unwrap_or_default();
                list.push(gateway::table::Mirror {
                    backend,
                    numerator: numerator as u32,
                    denominator: denominator as u32,
                });
                o.mirrors = Some(list.into());
            }
            "ExtensionRef" => {
                return fail(cx, format!("filter {} is not supported by ferry yet", f.type_));
            }
            other => return fail(cx, format!("unknown filter type {other:?}")),
        }
    }
    if o.request_redirect.is_some() && (o.rewrite.is_some() || o.host_rewrite.is_some()) {
        cx.diagnostics.push(Diagnostic::error(obj, field, "RequestRedirect and URLRewrite cannot be used together"));
        return None;
    }
    Some(o)
}

/// Headers that frame or route a message on its connection: a filter that set, added or removed
/// them could make ferry and the backend (or the client) read different messages (request
/// smuggling, response splitting), so filters may not touch them.
const FRAMING_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn header_edits(spec: &gw::HTTPHeaderFilter) -> Result<HeaderEdits, String> {
    let name = |n: &str| {
        let h = HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("{n:?} is not a header name"))?;
        if FRAMING_HEADERS.contains(&h.as_str()) {
            return Err(format!("{n:?} frames the message on its connection; filters may not change it"));
        }
        Ok(h)
    };
    let pair = |h: &gw::HTTPHeader| -> Result<(HeaderName, HeaderValue), String> {
        let v = HeaderValue::from_str(&h.value).map_err(|_| format!("{:?} is not a header value", h.value))?;
        Ok((name(&h.name)?, v))
    };
    Ok(HeaderEdits {
        set: spec.set.iter().map(pair).collect::<Result<_, _>>()?,
        add: spec.add.iter().map(pair).collect::<Result<_, _>>()?,
        remove: spec.remove.iter().map(|n| name(n)).collect::<Result<_, _>>()?,
    })
}

/// `ReplaceFullPath` / `ReplacePrefixMatch` (which needs a `PathPrefix` match).
fn path_modifier(m: &gw::HTTPPathModifier, prefix: Option<&str>) -> Result<Rewrite, String> {
    match m.type_.as_str() {
        "ReplaceFullPath" => {
            let to = m.replace_full_path.as_deref().ok_or("ReplaceFullPath without replaceFullPath")?;
            Ok(Rewrite { from: "".into(), to: to.into(), exact: true })
        }
        "ReplacePrefixMatch" => {
            let to = m.replace_prefix_match.as_deref().ok_or("ReplacePrefixMatch without replacePrefixMatch")?;
            let from = prefix.ok_or("ReplacePrefixMatch needs a PathPrefix match")?;
            Ok(Rewrite { from: gateway::table::prefix_key(from).into(), to: to.into(), exact: false })
        }
        other => Err(format!("path modifier type {other:?} is not ReplaceFullPath or ReplacePrefixMatch")),
    }
}

/// A rule's backends as weighted routes (each with the rule's filters and its own). Invalid
/// references answer 500 for their share; a rule without backends (and no redirect) answers 500
/// for all of it.
#[allow(clippy::too_many_arguments)]
fn backends<'a>(
    cx: &mut Context<'a>,
    obj: &ObjectRef,
    field: &str,
    ns: &'a str,
    route_name: &Arc<str>,
    rule: &gw::HTTPRouteRule,
    options: &RouteOptions,
    prefix: Option<&str>,
    out_: &mut Compiled,
) -> Vec<(u32, Arc<Route>)> {
    let refs = &mut out_.refs;
    if rule.backend_refs.is_empty() {
        let r = if options.request_redirect.is_some() {
            let backend = Arc::new(Backend::unserved(format!("{route_name}:redirect"), BackendState::NoEndpoints));
            Arc::new(Route::new(route_name.clone(), backend).with_options(options.clone()))
        } else {
            invalid_route(route_name, "the rule has no backendRefs")
        };
        return vec![(1, r)];
    }
    let mut out = Vec::new();
    for (bi, b) in rule.backend_refs.iter().enumerate() {
        let bfield = format!("{field}.backendRefs[{bi}]");
        let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
        let group = b.group.as_deref().unwrap_or("");
        let kind = b.kind.as_deref().unwrap_or("Service");
        let bns = b.namespace.as_deref().unwrap_or(ns);
        let invalid: Option<(&'static str, String)> = if !group.is_empty() || kind != "Service" {
            Some(("InvalidKind", format!("backend {group}/{kind} is not a Service")))
        } else if bns != ns && !granted(cx.snapshot, "HTTPRoute", ns, "", "Service", bns, &b.name) {
            Some((
                "RefNotPermitted",
                format!("no ReferenceGrant in {bns} lets HTTPRoutes of {ns} use Service {}", b.name),
            ))
        } else if b.port.is_none() {
            Some(("UnsupportedValue", "a Service backendRef needs a port".to_string()))
        } else if !cx.snapshot.services.contains_key(&(bns.to_string(), b.name.clone())) {
            Some(("BackendNotFound", format!("Service {bns}/{} not found", b.name)))
        } else {
            None
        };
        let mut opts = options.clone();
        if !b.filters.is_empty() {
            match filters(cx, obj, &format!("{bfield}.filters"), &b.filters, prefix) {
                None => {
                    out.push((weight, invalid_route(route_name, "a filter of this backendRef cannot be applied")));
                    continue;
                }
                Some(own) => merge(&mut opts, own),
            }
        }
        let backend = match invalid {
            Some((reason, why)) => {
                let why = format!("{reason}: {why}");
                cx.diagnostics.push(Diagnostic::error(obj, bfield, why.clone()));
                refs.get_or_insert((reason, why.clone()));
                Arc::new(Backend::unserved(format!("{bns}/{}:invalid", b.name), BackendState::Invalid(why)))
            }
            None => {
                let port = PortRef::Number(b.port.unwrap_or(0));
                let svc = cx.snapshot.services.get_key_value(&(bns.to_string(), b.name.clone()));
                let (sns, sname) = match svc {
                    Some(((sns, sname), _)) => (sns.as_str(), sname.as_str()),
                    None => continue,
                };
                // A BackendTLSPolicy for the Service port (named ports match `sectionName`).
                let port_name = svc.and_then(|(_, s)| port_name(s, b.port));
                out_.services.insert((sns.to_string(), sname.to_string(), port_name.clone()));
                let backend =
                    service_backend(cx, sns, sname, port, port_name.as_deref(), obj, &bfield).unwrap_or_else(|why| {
                        Arc::new(Backend::unserved(format!("{sns}/{sname}:{port}"), BackendState::Invalid(why)))
                    });
                if let BackendState::Unresolved(why) = &*backend.state() {
                    refs.get_or_insert(("BackendNotFound", why.clone()));
                    Arc::new(Backend::unserved(backend.name.clone(), BackendState::Invalid(why.clone())))
                } else {
                    backend
                }
            }
        };
        out.push((weight, Arc::new(Route::new(route_name.clone(), backend).with_options(opts))));
    }
    if out.iter().all(|(w, _)| *w == 0) {
        return vec![(1, invalid_route(route_name, "every backendRef has weight 0"))];
    }
    out
}

/// A Service port as a Gateway API backend: with the verified TLS of the BackendTLSPolicy that
/// applies to it, if any; `Err` when that policy cannot apply (why).
#[allow(clippy::too_many_arguments)]
fn service_backend<'a>(
    cx: &mut Context<'a>,
    ns: &'a str,
    service: &'a str,
    port: PortRef<'a>,
    port_name: Option<&str>,
    obj: &ObjectRef,
    field: &str,
) -> Result<Arc<Backend>, String> {
    match cx.backend_tls.lookup(ns, service, port_name) {
        Some(Err(why)) => Err(why.clone()),
        Some(Ok(tls)) => {
            let tls = tls.clone();
            Ok(cx.services.backend_tls(ns, service, port, tls, obj, field.into(), &mut cx.diagnostics))
        }
        None => Ok(cx.services.backend(ns, service, port, None, obj, field.into(), &mut cx.diagnostics)),
    }
}

/// The name of a Service's port `number` (BackendTLSPolicies name ports by `sectionName`).
fn port_name(svc: &crate::snapshot::Svc, number: Option<i32>) -> Option<String> {
    let ports = &svc.spec.as_ref()?.ports;
    ports.iter().find(|p| Some(p.port) == number).and_then(|p| p.name.clone())
}

/// A backendRef's own filters after its rule's.
fn merge(into: &mut RouteOptions, own: RouteOptions) {
    let edits = |a: &mut Option<Arc<HeaderEdits>>, b: Option<Arc<HeaderEdits>>| {
        if let Some(b) = b {
            let mut m = a.as_deref().cloned().unwrap_or_default();
            m.set.extend(b.set.iter().cloned());
            m.add.extend(b.add.iter().cloned());
            m.remove.extend(b.remove.iter().cloned());
            *a = Some(Arc::new(m));
        }
    };
    edits(&mut into.request_headers, own.request_headers);
    edits(&mut into.response_headers, own.response_headers);
    if own.rewrite.is_some() {
        into.rewrite = own.rewrite;
    }
    if own.host_rewrite.is_some() {
        into.host_rewrite = own.host_rewrite;
    }
    if let Some(m) = own.mirrors {
        let mut list: Vec<gateway::table::Mirror> = into.mirrors.as_deref().map(<[_]>::to_vec).unwrap_or_default();
        list.extend(m.iter().cloned());
        into.mirrors = Some(list.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's conformance table says **yes** for exactly the features ferry claims in
    /// `supportedFeatures`.
    #[test]
    fn readme_conformance_table_matches_supported_features() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let table = readme.split("### Conformance (Gateway API").nth(1).expect("conformance section");
        let mut yes: Vec<&str> = table
            .lines()
            .take_while(|l| l.starts_with('|') || l.trim().is_empty() || !l.starts_with('#'))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells.len() >= 4 && cells[3] == "yes").then(|| cells[2])
            })
            .collect();
        yes.sort_unstable();
        let mut claimed = SUPPORTED_FEATURES.to_vec();
        claimed.sort_unstable();
        assert_eq!(yes, claimed, "README conformance table vs SUPPORTED_FEATURES");
    }

    #[test]
    fn hostname_intersection() {
        let h = |v: Vec<Option<String>>| v.into_iter().map(|o| o.unwrap_or_else(|| "*any*".into())).collect::<Vec<_>>();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(h(intersect(None, &[])), ["*any*"]);
        assert_eq!(h(intersect(Some("*.example.com"), &[])), ["*.example.com"]);
        assert_eq!(h(intersect(Some("*.example.com"), &s(&["a.example.com", "b.other.com"]))), ["a.example.com"]);
        assert_eq!(h(intersect(Some("a.example.com"), &s(&["*.example.com"]))), ["a.example.com"]);
        assert_eq!(h(intersect(Some("*.example.com"), &s(&["*.a.example.com"]))), ["*.a.example.com"]);
        assert!(intersect(Some("example.com"), &s(&["*.example.com"])).is_empty());
        assert!(intersect(Some("a.test"), &s(&["b.test"])).is_empty());
        assert!(covers("*.example.com", "a.b.example.com"));
        assert_eq!(gateway_duration("1h30m"), Ok(std::time::Duration::from_secs(5400)));
        assert_eq!(gateway_duration("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(gateway_duration("0s"), Ok(std::time::Duration::ZERO));
        for bad in ["", "5", "1d", "-1s", "1.5s", "123456s", "1h1m1s1ms1h"] {
            assert!(gateway_duration(bad).is_err(), "{bad}");
        }
        assert!(!covers("*.example.com", "xexample.com"));
    }
}
