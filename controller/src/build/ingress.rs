//! Ingress v1 → host/path routes, default backend and TLS entries.
//!
//! Ingresses are compiled oldest first (`creationTimestamp`, then namespace/name; objects without
//! a timestamp sort first), and the first claim on a host+pathType+path wins; later claims are
//! reported. That makes conflict resolution deterministic and stable as new Ingresses arrive.

use std::net::IpAddr;
use std::sync::Arc;

use gateway::table::{HttpsRedirect, Rewrite};
use gateway::{HostKey, PathKind, Route, RouteOptions, UpstreamProtocol};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::service::PortRef;
use super::{annotations, tls, Context};
use crate::diagnostic::{Diagnostic, Field, ObjectRef};

pub(super) fn compile_all<'a>(cx: &mut Context<'a>) {
    let ours: Vec<&Ingress> =
        cx.snapshot.ingresses.values().map(|i| &**i).filter(|i| super::is_ours(i, cx.snapshot, cx.opts)).collect();
    compile_set(cx, ours);
}

/// Compiles some Ingresses of ours in the order a whole build would (an incremental build
/// compiles the ones whose hosts changed).
pub(super) fn compile_set<'a>(cx: &mut Context<'a>, mut ours: Vec<&'a Ingress>) {
    // Oldest first; ties by namespace/name. Borrowed keys: no allocation per comparison.
    fn order_key(i: &Ingress) -> (Option<k8s_openapi::jiff::Timestamp>, Option<&str>, Option<&str>) {
        let m = &i.metadata;
        (m.creation_timestamp.as_ref().map(|t| t.0), m.namespace.as_deref(), m.name.as_deref())
    }
    ours.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
    // Canaries attach to routes compiled by the others, so they come last.
    ours.sort_by_key(|i| annotations::is_canary(i, cx.opts.nginx_annotations));
    for ing in ours {
        compile(cx, ing);
    }
}

fn compile<'a>(cx: &mut Context<'a>, ing: &'a Ingress) {
    let ns = ing.metadata.namespace.as_deref().unwrap_or("default");
    let name = ing.metadata.name.as_deref().unwrap_or("");
    let obj = ObjectRef::new("Ingress", ns, name);
    let route_name: Arc<str> = format!("{ns}/{name}").into();
    let Some(spec) = &ing.spec else {
        cx.diagnostics.push(Diagnostic::error(&obj, "spec", "Ingress has no spec"));
        return;
    };
    // An unknown `ferry.dev/*` key or a protection setting that does not parse: nothing of this
    // Ingress is served (the diagnostics say why), rather than its routes without the setting.
    let Some(settings) =
        annotations::settings(ing, &obj, &route_name, cx.opts.nginx_annotations, cx.runtime, &mut cx.diagnostics)
    else {
        return;
    };
    let tls_hosts = TlsHosts::of(spec);
    let protocol = settings.backend_protocol;

    if settings.canary.is_some() && (spec.default_backend.is_some() || spec.tls.as_ref().is_some_and(|t| !t.is_empty()))
    {
        let why = "a canary only adds backends to its main Ingress's paths: its defaultBackend and tls are not used";
        cx.diagnostics.push(Diagnostic::warning(&obj, "spec", why));
    }
    if let Some(def) = spec.default_backend.as_ref().filter(|_| settings.canary.is_none()) {
        let route =
            backend_route(cx, ns, &obj, "spec.defaultBackend".into(), def, &route_name, &settings.options, protocol);
        if let Some(route) = route {
            if !cx.table.set_default(route) {
                let owner = cx.table.default_route().map(|r| r.name.to_string()).unwrap_or_default();
                let why = format!("the default backend is already set by Ingress {owner} (older); ignored");
                cx.diagnostics.push(Diagnostic::error(&obj, "spec.defaultBackend", why));
            }
        }
    }

    let mut rule_hosts = Vec::new();
    for (ri, rule) in spec.rules.iter().flatten().enumerate() {
        // Field paths are formatted only for a diagnostic.
        let rule_field = || format!("spec.rules[{ri}]");
        let host = match rule.host.as_deref() {
            None | Some("") => String::new(),
            Some(h) => match validate_host(h) {
                Ok((host, normalised)) => {
                    if normalised {
                        let why = format!("host {h:?} normalised to {host:?}");
                        cx.diagnostics.push(Diagnostic::warning(&obj, format!("{}.host", rule_field()), why));
                    }
                    host
                }
                Err(why) => {
                    cx.diagnostics.push(Diagnostic::error(&obj, format!("{}.host", rule_field()), why));
                    continue;
                }
            },
        };
        if !host.is_empty() {
            rule_hosts.push(host.clone());
        }
        let host_key = HostKey::parse(&host);
        let Some(http) = &rule.http else { continue };
        let mut host_options = settings.options.clone();
        host_options.https_redirect = if settings.force_ssl_redirect {
            HttpsRedirect::Always
        } else if settings.ssl_redirect && tls_hosts.covers(&host) {
            HttpsRedirect::IfCertified
        } else {
            HttpsRedirect::Never
        };
        for (pi, p) in http.paths.iter().enumerate() {
            let field = || format!("{}.http.paths[{pi}]", rule_field());
            let kind = match p.path_type.as_str() {
                "Exact" => PathKind::Exact,
                "Prefix" | "ImplementationSpecific" => PathKind::Prefix,
                other => {
                    let why = format!("pathType {other:?} is not Exact, Prefix or ImplementationSpecific");
                    cx.diagnostics.push(Diagnostic::error(&obj, format!("{}.pathType", field()), why));
                    continue;
                }
            };
            let path = match p.path.as_deref() {
                None | Some("") if p.path_type == "ImplementationSpecific" => "/",
                None | Some("") => {
                    cx.diagnostics.push(Diagnostic::error(&obj, format!("{}.path", field()), "path is required"));
                    continue;
                }
                Some(path) => path,
            };
            if let Err(why) = validate_path(path).and_then(|()| routable_path(path)) {
                cx.diagnostics.push(Diagnostic::error(&obj, format!("{}.path", field()), why));
                continue;
            }
            if let Some(rule) = &settings.canary {
                let main = cx.table.owner(&host_key, kind, path).map(|r| r.name.clone());
                if main.is_none() {
                    let shown = if host.is_empty() { "*" } else { host.as_str() };
                    let why = format!("canary: no Ingress serves {kind:?} path {path:?} on host {shown}; skipped");
                    cx.diagnostics.push(Diagnostic::error(&obj, format!("{}.path", field()), why));
                    continue;
                }
                let backend_field = || format!("{}.backend", field());
                let at = Field::Lazy(&backend_field);
                let Some(route) = backend_route(cx, ns, &obj, at, &p.backend, &route_name, &host_options, protocol)
                else {
                    continue;
                };
                let canary = gateway::table::Canary {
                    route,
                    weight: rule.weight,
                    header: rule.header.clone(),
                    header_value: rule.header_value.clone(),
                };
                if let Err(Some(other)) = cx.table.set_canary(&host_key, kind, path, canary) {
                    let why = format!("path {path:?} already has the canary {other}; skipped");
                    cx.diagnostics.push(Diagnostic::error(&obj, backend_field(), why));
                }
                continue;
            }
            // Conflicts first: a path that loses is not compiled, so its backend is not resolved
            // (and not reported) either.
            if let Some(owner) = cx.table.owner(&host_key, kind, path) {
                let shown = if host.is_empty() { "*" } else { host.as_str() };
                let why = format!(
                    "{kind:?} path {path:?} on host {shown} is already served by Ingress {} (older); skipped",
                    owner.name
                );
                cx.diagnostics.push(Diagnostic::error(&obj, format!("{}.path", field()), why));
                continue;
            }
            let mut options = host_options.clone();
            options.rewrite = settings.rewrite_target.as_deref().map(|to| {
                let from = if kind == PathKind::Prefix { gateway::table::prefix_key(path) } else { path };
                Arc::new(Rewrite { from: from.into(), to: to.into(), exact: kind == PathKind::Exact })
            });
            let backend_field = || format!("{}.backend", field());
            let at = Field::Lazy(&backend_field);
            let Some(route) = backend_route(cx, ns, &obj, at, &p.backend, &route_name, &options, protocol) else {
                continue;
            };
            cx.table.add_path(&host_key, kind, path, route);
        }
    }

    let tls_entries = if settings.canary.is_some() { None } else { spec.tls.as_ref() };
    for (ti, entry) in tls_entries.into_iter().flatten().enumerate() {
        let field = format!("spec.tls[{ti}]");
        let Some(secret) = entry.secret_name.as_deref().filter(|s| !s.is_empty()) else {
            cx.diagnostics.push(Diagnostic::error(&obj, format!("{field}.secretName"), "secretName is required"));
            continue;
        };
        let mut hosts = Vec::new();
        for (hi, h) in entry.hosts.iter().flatten().enumerate() {
            match validate_host(h) {
                Ok((host, _)) => hosts.push(host),
                Err(why) => cx.diagnostics.push(Diagnostic::error(&obj, format!("{field}.hosts[{hi}]"), why)),
            }
        }
        // An entry without hosts covers the hosts of this Ingress's rules.
        if entry.hosts.as_ref().is_none_or(|h| h.is_empty()) {
            hosts = rule_hosts.clone();
        }
        tls::compile_entry(cx, &obj, &field, secret, &hosts);
    }
}

/// The hosts an Ingress's `spec.tls` covers (for the HTTPS redirect).
struct TlsHosts {
    hosts: Vec<String>,
    /// An entry without hosts covers every host of the Ingress's rules.
    all: bool,
}

impl TlsHosts {
    fn of(spec: &k8s_openapi::api::networking::v1::IngressSpec) -> TlsHosts {
        let mut out = TlsHosts { hosts: Vec::new(), all: false };
        for entry in spec.tls.iter().flatten() {
            match entry.hosts.as_deref() {
                None | Some([]) => out.all = true,
                Some(hosts) => out.hosts.extend(hosts.iter().map(|h| h.to_ascii_lowercase())),
            }
        }
        out
    }

    fn covers(&self, host: &str) -> bool {
        !host.is_empty()
            && (self.all
                || self.hosts.iter().any(|h| {
                    h == host
                        || h.strip_prefix("*.")
                            .is_some_and(|suffix| host.split_once('.').is_some_and(|(_, rest)| rest == suffix))
                }))
    }
}

#[allow(clippy::too_many_arguments)]
fn backend_route<'a>(
    cx: &mut Context<'a>,
    ns: &'a str,
    obj: &ObjectRef,
    field: Field<'_>,
    backend: &'a IngressBackend,
    route_name: &Arc<str>,
    options: &RouteOptions,
    protocol: Option<UpstreamProtocol>,
) -> Option<Arc<Route>> {
    let Some(svc) = &backend.service else {
        let why = "only Service backends are supported (resource backends are not)";
        cx.diagnostics.push(Diagnostic::error(obj, field.path(), why));
        return None;
    };
    let service_field = || format!("{}.service", field.path());
    let port = PortRef::of(svc.port.as_ref());
    let at = Field::Lazy(&service_field);
    let b = cx.services.backend(ns, &svc.name, port, protocol, obj, at, &mut cx.diagnostics);
    Some(Arc::new(Route::new(route_name.clone(), b).with_options(options.clone())))
}

/// Validates an Ingress host; returns it lower-cased and whether lower-casing changed it.
pub fn validate_host(host: &str) -> Result<(String, bool), String> {
    let lower = host.to_ascii_lowercase();
    let normalised = lower != host;
    if lower.parse::<IpAddr>().is_ok() || lower.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
        return Err(format!("host {host:?} is an IP address; Ingress hosts must be DNS names"));
    }
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    if name.contains('*') {
        return Err(format!("host {host:?}: a wildcard must be the whole first label (\"*.example.com\")"));
    }
    if name.len() > 253 || name.is_empty() {
        return Err(format!("host {host:?} is not a valid DNS name (length)"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("host {host:?} is not a valid DNS name (label {label:?})"));
        }
    }
    Ok((lower, normalised))
}

/// An Ingress path must be absolute and free of characters that cannot appear in a request path
/// as received (whitespace, control characters, `?`, `#`). Other characters, regex syntax
/// included, are literals.
pub fn validate_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with \"/\""));
    }
    if let Some(c) = path.chars().find(|c| c.is_whitespace() || c.is_control() || *c == '?' || *c == '#') {
        return Err(format!("path {path:?} contains {c:?}, which cannot be matched"));
    }
    Ok(())
}

/// A path the data plane can be asked for: requests whose path breaks ferry's safety rules
/// (`gateway::safety`: dot segments, encoded `/` or `\`, bad percent-encoding…) are refused
/// with 400, so a route on such a path could never match one.
pub fn routable_path(path: &str) -> Result<(), String> {
    gateway::safety::check_path(path).map_err(|why| format!("path {path:?} can never match: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(validate_host("Foo.Example.com"), Ok(("foo.example.com".into(), true)));
        assert_eq!(validate_host("*.example.com"), Ok(("*.example.com".into(), false)));
        for bad in ["10.0.0.1", "::1", "[::1]", "foo.*.com", "*foo.com", "*", "-a.com", "a..b", "a_b.com"] {
            assert!(validate_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert!(validate_path("/a/[0-9]+$").is_ok());
        for bad in ["a", "", "/a b", "/a?x", "/a#x"] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
        // Paths no request can have (the data plane answers 400) are refused with the reason.
        assert!(routable_path("/a/[0-9]+$").is_ok());
        assert!(routable_path("/a;v=1/.well-known").is_ok());
        for (bad, why) in [
            ("/a/../b", "dot-segment in path"),
            ("/a/%2e%2e/b", "dot-segment in path"),
            ("/a/..;/b", "dot-segment in path"),
            ("/a/.", "dot-segment in path"),
            ("/a%2fb", "encoded slash or backslash in path"),
            ("/a\\b", "backslash in path"),
            ("/a%zz", "invalid percent-encoding in path"),
            ("/a%00", "encoded control character in path"),
        ] {
            assert_eq!(routable_path(bad), Err(format!("path {bad:?} can never match: {why}")));
        }
    }
}
