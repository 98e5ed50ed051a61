//! L4Routes: gateway port (+ SNI names) → Service port in the same namespace.
//!
//! Compiled oldest first, like Ingresses; the first claim on a port (or on an SNI name of a
//! passthrough port) wins. A port serves either one plain route or SNI routes, never both.
//! Every L4Route gets a status: `Accepted` (served on its port, or why not) and `ResolvedRefs`
//! (its Service and port exist; an accepted route whose backend is missing closes connections).

use std::sync::Arc;
use std::time::Duration;

use gateway::{L4Route as ServedRoute, L4Status, PortUse};

use super::annotations::parse_duration;
use super::ingress::validate_host;
use super::service::PortRef;
use super::Context;
use crate::crd::L4Route;
use crate::diagnostic::{Diagnostic, ObjectRef};

/// Default and longest idle time of an L4 stream.
const DEFAULT_IDLE: Duration = Duration::from_secs(3600);
const MAX_IDLE: Duration = Duration::from_secs(24 * 3600);

pub(super) fn compile_all<'a>(cx: &mut Context<'a>) {
    let mut routes: Vec<&'a L4Route> = cx.snapshot.l4_routes.values().map(|r| &**r).collect();
    routes.sort_by(|a, b| {
        let key = |r: &'a L4Route| {
            let m = &r.metadata;
            (m.creation_timestamp.as_ref().map(|t| t.0), m.namespace.as_deref(), m.name.as_deref())
        };
        key(a).cmp(&key(b))
    });
    for route in routes {
        let status = compile(cx, route);
        cx.l4_status.push(status);
    }
}

fn compile<'a>(cx: &mut Context<'a>, route: &'a L4Route) -> L4Status {
    let ns = route.metadata.namespace.as_deref().unwrap_or("default");
    let name = route.metadata.name.as_deref().unwrap_or("");
    let obj = ObjectRef::new("L4Route", ns, name);
    let spec = &route.spec;
    let mut status = L4Status {
        route: format!("{ns}/{name}"),
        port: spec.port,
        accepted: false,
        resolved: false,
        reason: String::new(),
        message: String::new(),
    };
    let mut reject = |cx: &mut Context<'a>, field: &str, reason: &str, message: String| {
        cx.diagnostics.push(Diagnostic::error(&obj, field, message.clone()));
        status.reason = reason.into();
        status.message = message;
        status.clone()
    };

    let port = match u16::try_from(spec.port) {
        Ok(p) if p > 0 && cx.opts.l4_ports.contains(&p) => p,
        _ => {
            let declared: Vec<String> = cx.opts.l4_ports.iter().map(u16::to_string).collect();
            let declared = if declared.is_empty() { "none".to_string() } else { declared.join(", ") };
            let why = format!("port {} is not an L4 port of the gateway (--l4-ports: {declared})", spec.port);
            return reject(cx, "spec.port", "PortNotDeclared", why);
        }
    };
    let mut names = Vec::with_capacity(spec.sni.len());
    for (i, sni) in spec.sni.iter().enumerate() {
        match validate_host(sni) {
            Ok((lower, _)) if !names.contains(&lower) => names.push(lower),
            Ok(_) => {}
            Err(why) => return reject(cx, &format!("spec.sni[{i}]"), "InvalidSNI", why.replace("host", "SNI name")),
        }
    }
    let l4 = cx.table.l4_mut();
    match (l4.port_use(port), names.is_empty()) {
        (PortUse::Plain(owner), _) => {
            let why = format!("port {port} is taken by L4Route {owner} (a port without SNI serves one route)");
            return reject(cx, "spec.port", "PortConflict", why);
        }
        (PortUse::Sni, true) => {
            let why = format!("port {port} routes by SNI for other L4Routes; this route must name its SNI hosts");
            return reject(cx, "spec.sni", "PortConflict", why);
        }
        (_, false) => {
            if let Some((i, owner)) =
                names.iter().enumerate().find_map(|(i, n)| l4.sni_owner(port, n).map(|o| (i, o.to_string())))
            {
                let why = format!("SNI {} on port {port} is taken by L4Route {owner}", names[i]);
                return reject(cx, &format!("spec.sni[{i}]"), "PortConflict", why);
            }
        }
        (PortUse::Free, true) => {}
    }

    let idle_timeout = match spec.idle_timeout.as_deref() {
        None => DEFAULT_IDLE,
        Some(v) => match parse_duration(v) {
            Some(d) if !d.is_zero() && d <= MAX_IDLE => d,
            _ => {
                let why = format!("{v:?} is not a duration between 1ms and 24h (e.g. 30s, 10m, 1h); 1h used");
                cx.diagnostics.push(Diagnostic::warning(&obj, "spec.idleTimeout", why));
                DEFAULT_IDLE
            }
        },
    };
    let errors_before = cx.diagnostics.len();
    let backend = cx.services.backend(
        ns,
        &spec.backend.service,
        PortRef::Number(spec.backend.port),
        None,
        &obj,
        "spec.backend".into(),
        &mut cx.diagnostics,
    );
    let unresolved = cx.diagnostics[errors_before..].iter().find(|d| d.severity == crate::Severity::Error);
    status.accepted = true;
    status.resolved = unresolved.is_none();
    match unresolved {
        Some(d) => {
            status.reason = "BackendNotFound".into();
            status.message = d.reason.clone();
        }
        None => {
            status.reason = "Accepted".into();
            status.message = format!("served on port {port}");
        }
    }
    let served = Arc::new(ServedRoute::new(Arc::from(status.route.as_str()), backend, idle_timeout));
    let l4 = cx.table.l4_mut();
    if names.is_empty() {
        l4.add_plain(port, served);
    } else {
        l4.add_sni(port, &names, served);
    }
    status
}

#[cfg(test)]
mod tests {
    use crate::build::{build_all, BuildOptions};
    use crate::snapshot::{Object, Snapshot};

    fn snapshot(docs: &str) -> Snapshot {
        let mut s = Snapshot::default();
        for doc in docs.split("---\n") {
            let v: serde_json::Value = serde_yaml_ng::from_str(doc).unwrap();
            let obj = match v["kind"].as_str().unwrap() {
                "L4Route" => Object::L4Route(std::sync::Arc::new(serde_json::from_value(v).unwrap())),
                "Service" => Object::service(serde_json::from_value(v).unwrap()),
                "EndpointSlice" => Object::endpoint_slice(serde_json::from_value(v).unwrap()),
                k => panic!("{k}"),
            };
            s.insert(obj);
        }
        s
    }

    const SERVICE: &str = "kind: Service\nmetadata: {name: db, namespace: a}\nspec: {ports: [{name: pg, port: 5432}]}\n---\nkind: EndpointSlice\nmetadata: {name: db-1, namespace: a, labels: {kubernetes.io/service-name: db}}\naddressType: IPv4\nports: [{name: pg, port: 15432}]\nendpoints: [{addresses: [10.0.0.1]}]\n";

    fn route(name: &str, created: &str, port: i32, sni: &str) -> String {
        format!("---\nkind: L4Route\nmetadata: {{name: {name}, namespace: a, creationTimestamp: \"{created}\"}}\nspec: {{port: {port}, sni: [{sni}], backend: {{service: db, port: 5432}}}}\n")
    }

    #[test]
    fn ports_conflicts_and_status() {
        let docs = format!(
            "{SERVICE}{}{}{}{}{}{}",
            route("plain", "2024-01-01T00:00:00Z", 5432, ""),
            route("second-plain", "2024-01-02T00:00:00Z", 5432, ""),
            route("undeclared", "2024-01-01T00:00:00Z", 7000, ""),
            route("tls-a", "2024-01-01T00:00:00Z", 8443, "a.test, \"*.wild.test\""),
            route("tls-b", "2024-01-02T00:00:00Z", 8443, "B.test, a.test"),
            route("tls-plain", "2024-01-03T00:00:00Z", 8443, ""),
        );
        let opts = BuildOptions { l4_ports: [5432, 8443].into(), ..BuildOptions::default() };
        let built = build_all(&snapshot(&docs), &opts);
        let (table, diags) = (&built.table, &built.diagnostics);
        let status = |n: &str| built.l4_status.iter().find(|s| s.route == format!("a/{n}")).unwrap().clone();
        assert!(status("plain").accepted && status("plain").resolved, "{:?}", status("plain"));
        assert_eq!(status("second-plain").reason, "PortConflict");
        assert!(status("second-plain").message.contains("a/plain"));
        assert_eq!(status("undeclared").reason, "PortNotDeclared");
        assert!(status("tls-a").accepted);
        let b = status("tls-b");
        assert!(!b.accepted && b.reason == "PortConflict" && b.message.contains("a.test"), "{b:?}");
        assert_eq!(status("tls-plain").reason, "PortConflict");
        let dump = table.l4.dump();
        let served: Vec<(u16, Option<&str>, &str)> =
            dump.iter().map(|d| (d.port, d.sni.as_deref(), d.route.as_str())).collect();
        assert_eq!(
            served,
            [(5432, None, "a/plain"), (8443, Some("*.wild.test"), "a/tls-a"), (8443, Some("a.test"), "a/tls-a")]
        );
        assert_eq!(dump[0].state, gateway::BackendState::Endpoints(vec!["10.0.0.1:15432".parse().unwrap()]));
        assert_eq!(diags.iter().filter(|d| d.object.kind == "L4Route").count(), 4, "{diags:?}");
    }

    #[test]
    fn missing_service_is_accepted_but_unresolved() {
        let docs = "kind: L4Route\nmetadata: {name: r, namespace: a}\nspec: {port: 5432, backend: {service: nope, port: 1}, idleTimeout: forever}\n";
        let opts = BuildOptions { l4_ports: [5432].into(), ..BuildOptions::default() };
        let built = build_all(&snapshot(docs), &opts);
        let (s, diags) = (&built.l4_status[0], &built.diagnostics);
        assert!(s.accepted && !s.resolved && s.reason == "BackendNotFound", "{s:?}");
        assert!(s.message.contains("Service a/nope not found"));
        assert!(diags.iter().any(|d| d.field == "spec.idleTimeout"), "{diags:?}");
    }
}
