//! TLSRoute, TCPRoute and UDPRoute → the L4 side of Gateway listeners.
//!
//! A child module of `gateway_api`: listeners are validated there, and these routes attach to
//! them with the same rules as HTTPRoutes (parentRef `sectionName` and `port`, the listener's
//! allowed kinds and namespaces, TLSRoute hostnames intersected with the listener hostname) and
//! get the same status shapes and reasons.
//!
//! - A TCP or UDP listener serves one route: every connection (or UDP flow) goes to it. When
//!   several attach, the oldest (then namespace/name) is served and the others are still
//!   `Accepted`, as the API's conformance tests expect; a warning says they get no traffic.
//! - A TLS listener is Passthrough (the server name of the ClientHello picks a route, the pod
//!   terminates TLS) or Terminate (TLS ends here with the listener's certificate and the
//!   plaintext goes to the route). Each name a route serves is the intersection of its
//!   hostnames with the listener's; a name served already belongs to the older route. Listeners
//!   of both modes can share a port, and TLS and HTTPS listeners can too: the server name picks
//!   the listener first, as on HTTPS ports.
//! - Backends are weighted Service ports. An invalid backendRef (not a Service, not permitted by
//!   a ReferenceGrant, not found) keeps its weight and its share of connections is closed, as an
//!   invalid HTTP backend answers 500 for its share; the route's `ResolvedRefs` is false with
//!   the reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gateway::{Backend, BackendState, L4Mode, L4Route, ListenerL4, PortProtocol};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::super::service::PortRef;
use super::{
    created, granted, select_parent, Cond, CondReport, Context, GatewayState, ListenerState, ParentReport, Proto,
    RouteReport, Selected,
};
use crate::diagnostic::{Diagnostic, ObjectRef};
use crate::gateway_api::types as gw;

/// Idle time of a stream before it is closed (L4Routes' default; the Gateway API has no field).
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The L4 routes of each TLS, TCP and UDP listener, by (Gateway index, listener index).
pub(super) type ListenerRoutes = HashMap<(usize, usize), ListenerL4>;

/// The first reference of a route that did not resolve: `ResolvedRefs` reason and message.
type Unresolved = Option<(&'static str, String)>;

/// One route of any of the three kinds.
struct Spec<'a> {
    kind: &'static str,
    ns: &'a str,
    name: &'a str,
    meta: &'a ObjectMeta,
    parent_refs: &'a [gw::ParentReference],
    /// TLSRoute only.
    hostnames: &'a [String],
    /// `(field, backendRef)` over every rule.
    backend_refs: Vec<(String, &'a gw::BackendRef)>,
}

fn refs<'a, R>(rules: &'a [R], of: impl Fn(&'a R) -> &'a [gw::BackendRef]) -> Vec<(String, &'a gw::BackendRef)> {
    let mut out = Vec::new();
    for (ri, rule) in rules.iter().enumerate() {
        for (bi, b) in of(rule).iter().enumerate() {
            out.push((format!("spec.rules[{ri}].backendRefs[{bi}]"), b));
        }
    }
    out
}

/// What a Gateway port speaks, from its programmed listeners (the listener validation left only
/// compatible protocols on one port: one of them, or HTTPS and TLS).
pub(super) fn port_protocol(listeners: &[ListenerState<'_>], port: u16) -> PortProtocol {
    let mut protocol = PortProtocol::Http;
    for l in listeners.iter().filter(|l| l.port == port && l.programmed()) {
        protocol = match (l.proto, protocol) {
            (Some(Proto::Tls), _) | (_, PortProtocol::Tls) => PortProtocol::Tls,
            (Some(Proto::Https), _) => PortProtocol::Https,
            (Some(Proto::Tcp), _) => PortProtocol::Tcp,
            (Some(Proto::Udp), _) => PortProtocol::Udp,
            _ => protocol,
        };
    }
    protocol
}

/// How a listener serves its connections.
fn mode(l: &ListenerState<'_>) -> Option<L4Mode> {
    match l.proto? {
        Proto::Tcp | Proto::Udp => Some(L4Mode::Plain),
        Proto::Tls => match l.spec.tls.as_ref().and_then(|t| t.mode.as_deref()).unwrap_or("Terminate") {
            "Passthrough" => Some(L4Mode::Passthrough),
            _ => Some(L4Mode::Terminate),
        },
        Proto::Http | Proto::Https => None,
    }
}

/// Attaches every TLSRoute, TCPRoute and UDPRoute to the listeners of `gateways` (counting them
/// in `attachedRoutes`), reports their status, and returns the routes each listener serves.
pub(super) fn attach_all<'a>(cx: &mut Context<'a>, gateways: &mut [GatewayState<'a>]) -> ListenerRoutes {
    let snapshot = cx.snapshot;
    let mut served = ListenerRoutes::new();
    for (gi, g) in gateways.iter().enumerate() {
        for (li, l) in g.listeners.iter().enumerate().filter(|(_, l)| l.programmed()) {
            if let Some(m) = mode(l) {
                served.insert((gi, li), ListenerL4::new(m));
            }
        }
    }
    let mut specs: Vec<Spec<'a>> = Vec::new();
    for ((ns, name), r) in &snapshot.tls_routes {
        specs.push(Spec {
            kind: "TLSRoute",
            ns,
            name,
            meta: &r.metadata,
            parent_refs: &r.spec.parent_refs,
            hostnames: &r.spec.hostnames,
            backend_refs: refs(&r.spec.rules, |rule| &rule.backend_refs),
        });
    }
    for ((ns, name), r) in &snapshot.tcp_routes {
        specs.push(Spec {
            kind: "TCPRoute",
            ns,
            name,
            meta: &r.metadata,
            parent_refs: &r.spec.parent_refs,
            hostnames: &[],
            backend_refs: refs(&r.spec.rules, |rule| &rule.backend_refs),
        });
    }
    for ((ns, name), r) in &snapshot.udp_routes {
        specs.push(Spec {
            kind: "UDPRoute",
            ns,
            name,
            meta: &r.metadata,
            parent_refs: &r.spec.parent_refs,
            hostnames: &[],
            backend_refs: refs(&r.spec.rules, |rule| &rule.backend_refs),
        });
    }
    // Oldest first: the first claim on a listener (or a server name) wins.
    specs.sort_by(|a, b| (created(a.meta), a.ns, a.name, a.kind).cmp(&(created(b.meta), b.ns, b.name, b.kind)));
    for spec in &specs {
        let parents = attach(cx, gateways, &mut served, spec);
        if !parents.is_empty() {
            cx.gateway_status.routes.push(RouteReport {
                kind: spec.kind,
                namespace: spec.ns.to_string(),
                name: spec.name.to_string(),
                generation: spec.meta.generation,
                parents,
            });
        }
    }
    served
}

/// Attaches one route to the listeners its parentRefs select and allow.
fn attach<'a>(
    cx: &mut Context<'a>,
    gateways: &mut [GatewayState<'a>],
    served: &mut ListenerRoutes,
    spec: &Spec<'a>,
) -> Vec<ParentReport> {
    let obj = ObjectRef::new(spec.kind, spec.ns, spec.name);
    let mut compiled: Option<(Arc<L4Route>, Unresolved)> = None;
    let mut reports = Vec::new();
    for (pi, parent) in spec.parent_refs.iter().enumerate() {
        // TLSRoutes serve the names they share with each listener; TCP and UDP routes have none.
        let hostnames = (spec.kind == "TLSRoute").then_some(spec.hostnames);
        let Some(selected) = select_parent(cx, gateways, &obj, pi, parent, hostnames, &mut reports) else { continue };
        let Selected { gi, parent_ref, field: pfield, hosted } = selected;
        let gw_ns = parent_ref.namespace.clone().unwrap_or_default();
        let (route, unresolved) = compiled.get_or_insert_with(|| compile(cx, &obj, spec));
        let mut conditions = vec![CondReport::of("Accepted", &Cond::ok("Accepted"))];
        conditions.push(CondReport::resolved_refs(unresolved.as_ref()));
        reports.push(ParentReport { parent_ref, conditions });
        for (i, hosts) in hosted {
            let l = &mut gateways[gi].listeners[i];
            l.attached += 1;
            let Some(listener) = served.get_mut(&(gi, i)) else { continue };
            let lfield = format!("{pfield} (listener {})", l.spec.name);
            if hosts.is_empty() {
                if !listener.set_plain(route.clone()) {
                    let why = format!(
                        "listener {} of Gateway {gw_ns}/{} is served by an older {}; this route is attached but gets no traffic",
                        l.spec.name, parent.name, spec.kind
                    );
                    cx.diagnostics.push(Diagnostic::warning(&obj, lfield, why));
                }
                continue;
            }
            for host in &hosts {
                if !listener.add_host(host.as_deref(), route.clone()) {
                    let why = format!(
                        "server name {} on listener {} of Gateway {gw_ns}/{} is served by an older TLSRoute",
                        host.as_deref().unwrap_or("(any)"),
                        l.spec.name,
                        parent.name
                    );
                    cx.diagnostics.push(Diagnostic::warning(&obj, lfield.clone(), why));
                }
            }
        }
    }
    reports
}

/// The route's backends as one weighted route, and the first reference that did not resolve.
fn compile<'a>(cx: &mut Context<'a>, obj: &ObjectRef, spec: &Spec<'a>) -> (Arc<L4Route>, Unresolved) {
    let name: Arc<str> = format!("{}/{}", spec.ns, spec.name).into();
    let mut unresolved: Unresolved = None;
    let mut weighted = Vec::new();
    for (field, b) in &spec.backend_refs {
        let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
        weighted.push((weight, backend(cx, obj, field, spec, b, &mut unresolved)));
    }
    let invalid = |why: &str| {
        let backend = Arc::new(Backend::unserved(format!("{name}:invalid"), BackendState::Invalid(why.to_string())));
        Arc::new(L4Route::new(name.clone(), backend, IDLE_TIMEOUT))
    };
    let route = if weighted.is_empty() {
        let why = "the route has no backendRefs";
        cx.diagnostics.push(Diagnostic::error(obj, "spec.rules", why));
        invalid(why)
    } else {
        match L4Route::weighted(name.clone(), weighted, IDLE_TIMEOUT) {
            Some(r) => Arc::new(r),
            None => invalid("every backendRef has weight 0"),
        }
    };
    (route, unresolved)
}

/// One backendRef: a Service port, or an invalid backend that closes its share of connections.
fn backend<'a>(
    cx: &mut Context<'a>,
    obj: &ObjectRef,
    field: &str,
    spec: &Spec<'a>,
    b: &'a gw::BackendRef,
    unresolved: &mut Unresolved,
) -> Arc<Backend> {
    let group = b.group.as_deref().unwrap_or("");
    let kind = b.kind.as_deref().unwrap_or("Service");
    let bns = b.namespace.as_deref().unwrap_or(spec.ns);
    let invalid: Unresolved = if !group.is_empty() || kind != "Service" {
        Some(("InvalidKind", format!("backend {group}/{kind} is not a Service")))
    } else if bns != spec.ns && !granted(cx.snapshot, spec.kind, spec.ns, "", "Service", bns, &b.name) {
        Some((
            "RefNotPermitted",
            format!("no ReferenceGrant in {bns} lets {}s of {} use Service {}", spec.kind, spec.ns, b.name),
        ))
    } else if b.port.is_none() {
        Some(("UnsupportedValue", "a Service backendRef needs a port".to_string()))
    } else if !cx.snapshot.services.contains_key(&(bns.to_string(), b.name.clone())) {
        Some(("BackendNotFound", format!("Service {bns}/{} not found", b.name)))
    } else {
        None
    };
    if let Some((reason, why)) = invalid {
        let why = format!("{reason}: {why}");
        cx.diagnostics.push(Diagnostic::error(obj, field, why.clone()));
        unresolved.get_or_insert((reason, why.clone()));
        return Arc::new(Backend::unserved(format!("{bns}/{}:invalid", b.name), BackendState::Invalid(why)));
    }
    let Some(((sns, sname), _)) = cx.snapshot.services.get_key_value(&(bns.to_string(), b.name.clone())) else {
        unreachable!("the Service was found above");
    };
    let port = PortRef::Number(b.port.unwrap_or(0));
    let backend = cx.services.backend(sns, sname, port, None, obj, field.into(), &mut cx.diagnostics);
    let why = match &*backend.state() {
        BackendState::Unresolved(why) => why.clone(),
        _ => return backend,
    };
    unresolved.get_or_insert(("BackendNotFound", why.clone()));
    Arc::new(Backend::unserved(backend.name.clone(), BackendState::Invalid(why)))
}

#[cfg(test)]
mod tests {
    use crate::build::{build_all, BuildOptions};
    use crate::snapshot::Snapshot;

    fn snapshot(docs: &str) -> Snapshot {
        let parsed = crate::source::files::parse_file(std::path::Path::new("t.yaml"), docs.as_bytes());
        assert!(parsed.diagnostics.iter().all(|d| d.severity != crate::Severity::Error), "{:?}", parsed.diagnostics);
        let mut s = Snapshot::default();
        for (_, obj) in parsed.objects {
            s.insert(obj);
        }
        s
    }

    const BASE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: ferry}\nspec: {controllerName: ferry.dev/gateway-controller}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: infra}\nspec: {ports: [{name: tcp, port: 3000}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: echo-1, namespace: infra, labels: {kubernetes.io/service-name: echo}}\naddressType: IPv4\nports: [{name: tcp, port: 3000}]\nendpoints: [{addresses: [10.0.0.1]}]\n";

    fn gateway(name: &str, listeners: &str) -> String {
        format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: infra}}\nspec:\n  gatewayClassName: ferry\n  listeners:\n{listeners}")
    }

    fn route(kind: &str, name: &str, created: &str, spec: &str) -> String {
        let version = if kind == "TLSRoute" { "v1" } else { "v1alpha2" };
        format!("---\napiVersion: gateway.networking.k8s.io/{version}\nkind: {kind}\nmetadata: {{name: {name}, namespace: infra, creationTimestamp: \"{created}\"}}\nspec:\n{spec}")
    }

    /// `type=status(reason)` of each condition of `kind` `name` on its first parent.
    fn route_conditions(st: &crate::build::GatewayApiStatus, kind: &str, name: &str) -> Vec<String> {
        let r = st.routes.iter().find(|r| r.kind == kind && r.name == name).unwrap_or_else(|| panic!("{kind} {name}"));
        r.parents[0].conditions.iter().map(|c| format!("{}={}({})", c.type_, c.status, c.reason)).collect()
    }

    #[test]
    fn routes_attach_by_kind_section_and_hostname_oldest_first() {
        let docs = format!(
            "{BASE}{}{}{}{}{}{}{}",
            gateway(
                "gw",
                "  - {name: tcp, port: 9000, protocol: TCP}\n  - {name: udp, port: 9001, protocol: UDP}\n  - {name: tls, port: 443, protocol: TLS, hostname: \"*.example.com\", tls: {mode: Passthrough}}\n  - {name: http, port: 80, protocol: HTTP}\n"
            ),
            route("TCPRoute", "older", "2024-01-01T00:00:00Z", "  parentRefs: [{name: gw, sectionName: tcp}]\n  rules: [{backendRefs: [{name: echo, port: 3000}]}]\n"),
            route("TCPRoute", "newer", "2024-01-02T00:00:00Z", "  parentRefs: [{name: gw, port: 9000}]\n  rules: [{backendRefs: [{name: echo, port: 3000}]}]\n"),
            route("UDPRoute", "dns", "2024-01-01T00:00:00Z", "  parentRefs: [{name: gw, sectionName: http}]\n  rules: [{backendRefs: [{name: echo, port: 3000}]}]\n"),
            route("TLSRoute", "nomatch", "2024-01-01T00:00:00Z", "  parentRefs: [{name: gw}]\n  hostnames: [a.other.com]\n  rules: [{backendRefs: [{name: echo, port: 3000}]}]\n"),
            route("TLSRoute", "tls", "2024-01-01T00:00:00Z", "  parentRefs: [{name: gw}]\n  hostnames: [abc.example.com, \"*.com\"]\n  rules: [{backendRefs: [{name: echo, port: 3000}, {name: missing, port: 1}]}]\n"),
            route("TCPRoute", "nosection", "2024-01-01T00:00:00Z", "  parentRefs: [{name: gw, sectionName: nope}]\n  rules: [{backendRefs: [{name: echo, port: 3000}]}]\n"),
        );
        let built = build_all(&snapshot(&docs), &BuildOptions::default());
        let st = &built.gateway_status;
        assert_eq!(
            route_conditions(st, "TCPRoute", "older"),
            ["Accepted=true(Accepted)", "ResolvedRefs=true(ResolvedRefs)"]
        );
        assert_eq!(
            route_conditions(st, "TCPRoute", "newer"),
            ["Accepted=true(Accepted)", "ResolvedRefs=true(ResolvedRefs)"]
        );
        assert_eq!(route_conditions(st, "UDPRoute", "dns")[0], "Accepted=false(NotAllowedByListeners)");
        assert_eq!(route_conditions(st, "TLSRoute", "nomatch")[0], "Accepted=false(NoMatchingListenerHostname)");
        assert_eq!(
            route_conditions(st, "TLSRoute", "tls"),
            ["Accepted=true(Accepted)", "ResolvedRefs=false(BackendNotFound)"]
        );
        assert_eq!(route_conditions(st, "TCPRoute", "nosection")[0], "Accepted=false(NoMatchingParent)");
        let listeners = &st.gateways[0].listeners;
        let attached: Vec<(&str, u32)> = listeners.iter().map(|l| (l.name.as_str(), l.attached_routes)).collect();
        assert_eq!(attached, [("tcp", 2), ("udp", 0), ("tls", 1), ("http", 0)]);
        assert!(listeners.iter().all(|l| l.conditions.iter().any(|c| c.type_ == "Programmed" && c.status)));

        let dump = serde_json::to_value(built.table.dump()).unwrap();
        let ports = dump["gateway_routes"].as_array().unwrap();
        let port = |n: u16| ports.iter().find(|p| p["port"] == n).unwrap().clone();
        assert_eq!(port(9000)["protocol"], "TCP");
        assert_eq!(port(9000)["listeners"][0]["l4"][0]["route"], "infra/older", "the oldest route serves");
        assert_eq!(port(9001)["protocol"], "UDP");
        assert_eq!(port(443)["protocol"], "TLS");
        let tls = port(443);
        let names: Vec<&str> =
            tls["listeners"][0]["l4"].as_array().unwrap().iter().map(|r| r["sni"].as_str().unwrap()).collect();
        assert_eq!(names, ["*.example.com", "abc.example.com"], "route names intersected with the listener's");
        let backends = &port(443)["listeners"][0]["l4"][0]["backends"];
        assert_eq!(backends[1]["state"], "invalid", "the missing backend keeps its share: {backends}");
        assert!(built.diagnostics.iter().any(|d| d.object.name == "newer" && d.reason.contains("older TCPRoute")));
    }

    #[test]
    fn tls_listener_kinds_modes_and_conflicts() {
        let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: cert, namespace: infra}\ntype: kubernetes.io/tls\ndata: {tls.crt: \"\", tls.key: \"\"}\n";
        let docs = format!(
            "{BASE}{secret}{}",
            gateway(
                "gw",
                "  - {name: pass, port: 443, protocol: TLS, tls: {mode: Passthrough}, allowedRoutes: {kinds: [{kind: TCPRoute}, {kind: TLSRoute}]}}\n  - {name: tcp-on-443, port: 443, protocol: TCP}\n  - {name: a, port: 8443, protocol: TLS, hostname: a.test, tls: {mode: Passthrough}}\n  - {name: b, port: 8443, protocol: TLS, hostname: a.test, tls: {mode: Passthrough}}\n  - {name: plain-tcp-a, port: 9000, protocol: TCP, hostname: x.test}\n  - {name: plain-tcp-b, port: 9000, protocol: TCP, hostname: y.test}\n  - {name: no-tls, port: 9443, protocol: TLS}\n"
            ),
        );
        let built = build_all(&snapshot(&docs), &BuildOptions::default());
        let l =
            |name: &str| built.gateway_status.gateways[0].listeners.iter().find(|l| l.name == name).unwrap().clone();
        let conds = |name: &str| {
            l(name).conditions.iter().map(|c| format!("{}={}({})", c.type_, c.status, c.reason)).collect::<Vec<_>>()
        };
        // A TCP listener on the TLS port conflicts both; the kinds list keeps what TLS takes.
        assert!(conds("pass").contains(&"Conflicted=true(ProtocolConflict)".to_string()), "{:?}", conds("pass"));
        assert!(l("pass").supported_kinds.is_empty());
        assert!(conds("pass").contains(&"ResolvedRefs=false(InvalidRouteKinds)".to_string()));
        assert!(conds("b").contains(&"Conflicted=true(HostnameConflict)".to_string()));
        assert!(!conds("a").iter().any(|c| c.starts_with("Conflicted=true")));
        assert!(
            conds("plain-tcp-b").contains(&"Conflicted=true(HostnameConflict)".to_string()),
            "TCP hostnames are ignored"
        );
        assert!(
            conds("no-tls").contains(&"ResolvedRefs=false(InvalidCertificateRef)".to_string()),
            "{:?}",
            conds("no-tls")
        );
    }
}
