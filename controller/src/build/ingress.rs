//! Ingress v1 → host/path routes, default backend and TLS entries.
//!
//! Ingresses are compiled oldest first (`creationTimestamp`, then namespace/name; objects without
//! a timestamp sort first), and the first claim on a host+pathType+path wins; later claims are
//! reported. That makes conflict resolution deterministic and stable as new Ingresses arrive.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway::limits::{Rate, RateLimiter};
use gateway::{HostKey, PathKind, Route, RouteOptions};
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::service::PortRef;
use super::{tls, Context};
use crate::diagnostic::{Diagnostic, ObjectRef};

pub(super) fn compile_all<'a>(cx: &mut Context<'a>) {
    let mut ours: Vec<&Ingress> =
        cx.snapshot.ingresses.values().map(|i| &**i).filter(|i| super::is_ours(i, cx.snapshot, cx.opts)).collect();
    // Oldest first; ties by namespace/name. Borrowed keys: no allocation per comparison.
    fn order_key(i: &Ingress) -> (Option<k8s_openapi::jiff::Timestamp>, Option<&str>, Option<&str>) {
        let m = &i.metadata;
        (m.creation_timestamp.as_ref().map(|t| t.0), m.namespace.as_deref(), m.name.as_deref())
    }
    ours.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
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
    let options = route_options(ing, &obj, &route_name, &mut cx.diagnostics);

    if let Some(def) = &spec.default_backend {
        if let Some(route) = backend_route(cx, ns, &obj, "spec.defaultBackend", def, &route_name, &options) {
            if !cx.table.set_default(route) {
                let owner = cx.table.default_route().map(|r| r.name.to_string()).unwrap_or_default();
                let why = format!("the default backend is already set by Ingress {owner} (older); ignored");
                cx.diagnostics.push(Diagnostic::error(&obj, "spec.defaultBackend", why));
            }
        }
    }

    let mut rule_hosts = Vec::new();
    for (ri, rule) in spec.rules.iter().flatten().enumerate() {
        let field = format!("spec.rules[{ri}]");
        let host = match rule.host.as_deref() {
            None | Some("") => String::new(),
            Some(h) => match validate_host(h) {
                Ok((host, normalised)) => {
                    if normalised {
                        let why = format!("host {h:?} normalised to {host:?}");
                        cx.diagnostics.push(Diagnostic::warning(&obj, format!("{field}.host"), why));
                    }
                    host
                }
                Err(why) => {
                    cx.diagnostics.push(Diagnostic::error(&obj, format!("{field}.host"), why));
                    continue;
                }
            },
        };
        if !host.is_empty() {
            rule_hosts.push(host.clone());
        }
        let host_key = HostKey::parse(&host);
        let Some(http) = &rule.http else { continue };
        for (pi, p) in http.paths.iter().enumerate() {
            let field = format!("{field}.http.paths[{pi}]");
            let kind = match p.path_type.as_str() {
                "Exact" => PathKind::Exact,
                "Prefix" | "ImplementationSpecific" => PathKind::Prefix,
                other => {
                    let why = format!("pathType {other:?} is not Exact, Prefix or ImplementationSpecific");
                    cx.diagnostics.push(Diagnostic::error(&obj, format!("{field}.pathType"), why));
                    continue;
                }
            };
            let path = match p.path.as_deref() {
                None | Some("") if p.path_type == "ImplementationSpecific" => "/",
                None | Some("") => {
                    cx.diagnostics.push(Diagnostic::error(&obj, format!("{field}.path"), "path is required"));
                    continue;
                }
                Some(path) => path,
            };
            if let Err(why) = validate_path(path) {
                cx.diagnostics.push(Diagnostic::error(&obj, format!("{field}.path"), why));
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
                cx.diagnostics.push(Diagnostic::error(&obj, format!("{field}.path"), why));
                continue;
            }
            let Some(route) =
                backend_route(cx, ns, &obj, &format!("{field}.backend"), &p.backend, &route_name, &options)
            else {
                continue;
            };
            cx.table.add_path(&host_key, kind, path, route);
        }
    }

    for (ti, entry) in spec.tls.iter().flatten().enumerate() {
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

fn backend_route<'a>(
    cx: &mut Context<'a>,
    ns: &'a str,
    obj: &ObjectRef,
    field: &str,
    backend: &'a IngressBackend,
    route_name: &Arc<str>,
    options: &RouteOptions,
) -> Option<Arc<Route>> {
    let Some(svc) = &backend.service else {
        let why = "only Service backends are supported (resource backends are not)";
        cx.diagnostics.push(Diagnostic::error(obj, field, why));
        return None;
    };
    let field = format!("{field}.service");
    let b = cx.services.backend(ns, &svc.name, PortRef::of(svc.port.as_ref()), obj, &field, &mut cx.diagnostics);
    Some(Arc::new(Route::new(route_name.clone(), b).with_options(options.clone())))
}

pub const CONNECT_TIMEOUT_ANNOTATION: &str = "ferry.dev/connect-timeout";
pub const READ_TIMEOUT_ANNOTATION: &str = "ferry.dev/read-timeout";
pub const RETRIES_ANNOTATION: &str = "ferry.dev/retries";
pub const ALLOW_SOURCES_ANNOTATION: &str = "ferry.dev/allow-source-ranges";
pub const RATE_LIMIT_ANNOTATION: &str = "ferry.dev/rate-limit";
pub const MAX_BODY_ANNOTATION: &str = "ferry.dev/max-body-size";

/// `10.0.0.0/8`, or a single address.
fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>().or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from)).map_err(|_| s.to_string())
}

/// `10r/s`, `600r/m`, optionally followed by ` burst=N` (default: one second's worth, at least 1).
fn parse_rate(s: &str) -> Option<Rate> {
    let mut parts = s.split_whitespace();
    let (n, unit) = parts.next()?.split_once("r/")?;
    let n: f64 = n.parse().ok().filter(|n: &f64| n.is_finite() && *n > 0.0)?;
    let per_second = match unit {
        "s" => n,
        "m" => n / 60.0,
        _ => return None,
    };
    let burst = match parts.next() {
        None => per_second.ceil().max(1.0) as u32,
        Some(b) => b.strip_prefix("burst=")?.parse().ok().filter(|b| *b > 0)?,
    };
    parts.next().is_none().then_some(Rate { per_second, burst })
}

/// Bytes, or with a `k`, `m`, `g` suffix (powers of 1024).
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (digits, mult) = match s.as_bytes().last()? {
        b'k' => (&s[..s.len() - 1], 1 << 10),
        b'm' => (&s[..s.len() - 1], 1 << 20),
        b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s.as_str(), 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}
/// Most retries of a 5xx answer per request.
const MAX_RETRIES: u8 = 5;
/// Longest per-route timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Upstream timeouts and retries from the Ingress's annotations. A value that is not a duration,
/// or is 0 or over an hour, is ignored with a warning (the gateway default applies); so is a
/// retry count that is not 0..=5.
fn route_options(
    ing: &Ingress,
    obj: &ObjectRef,
    route_name: &Arc<str>,
    diagnostics: &mut Vec<Diagnostic>,
) -> RouteOptions {
    let mut timeouts = RouteOptions::default();
    let Some(annotations) = &ing.metadata.annotations else { return timeouts };
    for (key, slot) in
        [(CONNECT_TIMEOUT_ANNOTATION, &mut timeouts.connect), (READ_TIMEOUT_ANNOTATION, &mut timeouts.read)]
    {
        let Some(value) = annotations.get(key) else { continue };
        match parse_duration(value) {
            Some(d) if !d.is_zero() && d <= MAX_TIMEOUT => *slot = Some(d),
            _ => {
                let why = format!("{value:?} is not a duration between 1ms and 1h (e.g. 500ms, 30s, 2m); default used");
                diagnostics.push(Diagnostic::warning(obj, format!("metadata.annotations[{key}]"), why));
            }
        }
    }
    let field = |key: &str| format!("metadata.annotations[{key}]");
    if let Some(value) = annotations.get(ALLOW_SOURCES_ANNOTATION) {
        let (nets, bad): (Vec<_>, Vec<_>) =
            value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(parse_net).partition(Result::is_ok);
        let nets: Vec<ipnet::IpNet> = nets.into_iter().flatten().collect();
        for entry in bad.into_iter().filter_map(Result::err) {
            let why = format!("{entry:?} is not an IP address or CIDR range; not allowed");
            diagnostics.push(Diagnostic::error(obj, field(ALLOW_SOURCES_ANNOTATION), why));
        }
        if nets.is_empty() {
            let why = "no valid range: every client is refused (403) until it is fixed";
            diagnostics.push(Diagnostic::error(obj, field(ALLOW_SOURCES_ANNOTATION), why));
        }
        timeouts.allow_sources = Some(nets.into());
    }
    if let Some(value) = annotations.get(RATE_LIMIT_ANNOTATION) {
        match parse_rate(value) {
            Some(rate) => timeouts.rate_limit = Some(RateLimiter::shared(route_name, rate)),
            None => {
                let why = format!("{value:?} is not a rate (e.g. 10r/s, 600r/m, \"10r/s burst=20\"); no limit");
                diagnostics.push(Diagnostic::warning(obj, field(RATE_LIMIT_ANNOTATION), why));
            }
        }
    }
    if let Some(value) = annotations.get(MAX_BODY_ANNOTATION) {
        match parse_size(value) {
            Some(0) => {}
            Some(n) => timeouts.max_body = Some(n),
            None => {
                let why = format!("{value:?} is not a size (e.g. 512k, 8m, 1g, or bytes); no limit");
                diagnostics.push(Diagnostic::warning(obj, field(MAX_BODY_ANNOTATION), why));
            }
        }
    }
    if let Some(value) = annotations.get(RETRIES_ANNOTATION) {
        match value.trim().parse::<u8>() {
            Ok(n) if n <= MAX_RETRIES => timeouts.retries = n,
            _ => {
                let why = format!("{value:?} is not a retry count 0..={MAX_RETRIES}; no retries");
                diagnostics.push(Diagnostic::warning(obj, format!("metadata.annotations[{RETRIES_ANNOTATION}]"), why));
            }
        }
    }
    timeouts
}

/// `500ms`, `30s`, `2m`, `1h`, or a bare number of seconds.
pub(super) fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration(" 45 "), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "s", "1.5s", "-1s", "10x", "ms"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn timeout_annotations() {
        let ing: Ingress = serde_yaml_ng::from_str(
            "metadata: {name: i, annotations: {ferry.dev/connect-timeout: 250ms, ferry.dev/read-timeout: 2h}}",
        )
        .unwrap();
        let obj = ObjectRef::new("Ingress", "default", "i");
        let mut diags = Vec::new();
        let t = route_options(&ing, &obj, &Arc::from("default/i"), &mut diags);
        assert_eq!(t.connect, Some(Duration::from_millis(250)));
        assert_eq!(t.read, None, "over an hour: default");
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].field, "metadata.annotations[ferry.dev/read-timeout]");
    }

    #[test]
    fn protection_annotations() {
        assert_eq!(parse_rate("10r/s"), Some(Rate { per_second: 10.0, burst: 10 }));
        assert_eq!(parse_rate("30r/m burst=5"), Some(Rate { per_second: 0.5, burst: 5 }));
        for bad in ["10", "10r/h", "0r/s", "10r/s burst=0", "10r/s burst=x", "10r/s b=1"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
        assert_eq!(parse_size("512k"), Some(512 * 1024));
        assert_eq!(parse_size("8M"), Some(8 << 20));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1.5m"), None);
        let ing: Ingress = serde_yaml_ng::from_str(
            "metadata: {name: i, annotations: {ferry.dev/allow-source-ranges: \"10.0.0.0/8, 192.0.2.7, bogus\"}}",
        )
        .unwrap();
        let mut diags = Vec::new();
        let o = route_options(&ing, &ObjectRef::new("Ingress", "default", "i"), &Arc::from("default/i"), &mut diags);
        assert_eq!(o.allow_sources.unwrap().len(), 2);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(diags[0].reason.contains("\"bogus\""));
    }

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
    }
}
