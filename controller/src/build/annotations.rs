//! Ingress annotations: ferry's typed `ferry.dev/*` keys (never snippets or templates), and with
//! `--nginx-annotations` the subset of `nginx.ingress.kubernetes.io/*` that maps onto them.
//!
//! Every value is validated; a bad value is a diagnostic naming the annotation, and the setting
//! keeps its default (or, for the source allow-list, fails closed). Without `--nginx-annotations`
//! an nginx annotation is reported as ignored; with it, one without a ferry equivalent is reported
//! as unsupported. Neither is ever dropped silently.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway::cors::Cors;
use gateway::limits::{Rate, RateLimiter};
use gateway::table::{AffinityCookie, Redirect};
use gateway::{RouteOptions, UpstreamProtocol};
use k8s_openapi::api::networking::v1::Ingress;

use crate::diagnostic::{Diagnostic, ObjectRef};

pub const CONNECT_TIMEOUT: &str = "ferry.dev/connect-timeout";
pub const READ_TIMEOUT: &str = "ferry.dev/read-timeout";
pub const RETRIES: &str = "ferry.dev/retries";
pub const ALLOW_SOURCES: &str = "ferry.dev/allow-source-ranges";
pub const RATE_LIMIT: &str = "ferry.dev/rate-limit";
pub const MAX_BODY: &str = "ferry.dev/max-body-size";
pub const SSL_REDIRECT: &str = "ferry.dev/ssl-redirect";
pub const FORCE_SSL_REDIRECT: &str = "ferry.dev/force-ssl-redirect";
pub const REDIRECT: &str = "ferry.dev/redirect";
pub const REDIRECT_CODE: &str = "ferry.dev/redirect-code";
pub const APP_ROOT: &str = "ferry.dev/app-root";
pub const REWRITE_TARGET: &str = "ferry.dev/rewrite-target";
pub const BACKEND_PROTOCOL: &str = "ferry.dev/backend-protocol";
pub const CORS_ALLOW_ORIGIN: &str = "ferry.dev/cors-allow-origin";
pub const CORS_ALLOW_METHODS: &str = "ferry.dev/cors-allow-methods";
pub const CORS_ALLOW_HEADERS: &str = "ferry.dev/cors-allow-headers";
pub const CORS_EXPOSE_HEADERS: &str = "ferry.dev/cors-expose-headers";
pub const CORS_ALLOW_CREDENTIALS: &str = "ferry.dev/cors-allow-credentials";
pub const CORS_MAX_AGE: &str = "ferry.dev/cors-max-age";
pub const AFFINITY: &str = "ferry.dev/affinity";
pub const CANARY: &str = "ferry.dev/canary";
pub const CANARY_WEIGHT: &str = "ferry.dev/canary-weight";
pub const CANARY_HEADER: &str = "ferry.dev/canary-header";
pub const CANARY_HEADER_VALUE: &str = "ferry.dev/canary-header-value";
pub const AFFINITY_COOKIE_NAME: &str = "ferry.dev/affinity-cookie-name";
pub const AFFINITY_COOKIE_MAX_AGE: &str = "ferry.dev/affinity-cookie-max-age";

const CORS_DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const CORS_DEFAULT_HEADERS: &str =
    "DNT, Keep-Alive, User-Agent, X-Requested-With, If-Modified-Since, Cache-Control, Content-Type, Range, Authorization";

const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// Most retries of a 5xx answer per request.
const MAX_RETRIES: u8 = 5;
/// Longest per-route timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// What an Ingress's annotations say, beyond the per-route options.
#[derive(Debug, Clone)]
pub struct IngressSettings {
    pub options: RouteOptions,
    /// Redirect plain HTTP to HTTPS for the Ingress's TLS hosts (default on).
    pub ssl_redirect: bool,
    /// Redirect plain HTTP to HTTPS for every host of the Ingress, TLS section or not.
    pub force_ssl_redirect: bool,
    /// Replaces the matched path (prefix, or whole exact path).
    pub rewrite_target: Option<String>,
    /// Upstream protocol for backends whose Service port has no `appProtocol`.
    pub backend_protocol: Option<UpstreamProtocol>,
    /// This Ingress is a canary of the Ingresses serving the same hosts and paths.
    pub canary: Option<CanaryRule>,
}

/// How a canary Ingress takes traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryRule {
    pub weight: u8,
    pub header: Option<http::HeaderName>,
    pub header_value: Option<String>,
}

/// Whether an Ingress is a canary (read before compiling, so canaries come after the routes
/// they attach to).
pub fn is_canary(ing: &Ingress, nginx: bool) -> bool {
    let Some(map) = &ing.metadata.annotations else { return false };
    Annotations { map, nginx }.get(CANARY).is_some_and(|f| f.value.trim() == "true")
}

/// One annotation value and the field it came from (for diagnostics).
struct Found {
    value: String,
    field: String,
}

struct Annotations<'a> {
    map: &'a BTreeMap<String, String>,
    nginx: bool,
}

impl Annotations<'_> {
    /// The value for a ferry key: its own annotation, else (with `--nginx-annotations`) the
    /// translated nginx equivalent.
    fn get(&self, key: &str) -> Option<Found> {
        if let Some(v) = self.map.get(key) {
            return Some(Found { value: v.clone(), field: format!("metadata.annotations[{key}]") });
        }
        if !self.nginx {
            return None;
        }
        let nginx = |name: &str| {
            let k = format!("{NGINX}{name}");
            self.map.get(&k).map(|v| (v.clone(), format!("metadata.annotations[{k}]")))
        };
        let (value, field) = match key {
            CONNECT_TIMEOUT => nginx("proxy-connect-timeout")?,
            READ_TIMEOUT => nginx("proxy-read-timeout")?,
            MAX_BODY => nginx("proxy-body-size")?,
            ALLOW_SOURCES => nginx("allowlist-source-range").or_else(|| nginx("whitelist-source-range"))?,
            SSL_REDIRECT => nginx("ssl-redirect")?,
            FORCE_SSL_REDIRECT => nginx("force-ssl-redirect")?,
            // ingress-nginx lets a temporal redirect win over a permanent one.
            REDIRECT => nginx("temporal-redirect").or_else(|| nginx("permanent-redirect"))?,
            REDIRECT_CODE => match nginx("temporal-redirect") {
                Some((_, f)) => ("302".to_string(), f),
                None => nginx("permanent-redirect-code")?,
            },
            APP_ROOT => nginx("app-root")?,
            // ingress-nginx turns CORS on with `enable-cors`; its origin defaults to `*`.
            CORS_ALLOW_ORIGIN => {
                let (on, f) = nginx("enable-cors")?;
                if on.trim() != "true" {
                    return None;
                }
                nginx("cors-allow-origin").unwrap_or(("*".into(), f))
            }
            CORS_ALLOW_METHODS => nginx("cors-allow-methods")?,
            CORS_ALLOW_HEADERS => nginx("cors-allow-headers")?,
            CORS_EXPOSE_HEADERS => nginx("cors-expose-headers")?,
            CORS_ALLOW_CREDENTIALS => nginx("cors-allow-credentials")?,
            CORS_MAX_AGE => nginx("cors-max-age")?,
            AFFINITY => nginx("affinity")?,
            CANARY => nginx("canary")?,
            CANARY_WEIGHT => nginx("canary-weight")?,
            CANARY_HEADER => nginx("canary-by-header")?,
            CANARY_HEADER_VALUE => nginx("canary-by-header-value")?,
            // ingress-nginx's default cookie name, so existing cookies keep meaning something.
            AFFINITY_COOKIE_NAME => nginx("session-cookie-name")
                .or_else(|| nginx("affinity").map(|(_, f)| ("INGRESSCOOKIE".to_string(), f)))?,
            AFFINITY_COOKIE_MAX_AGE => nginx("session-cookie-max-age")?,
            REWRITE_TARGET => nginx("rewrite-target")?,
            BACKEND_PROTOCOL => {
                let (v, f) = nginx("backend-protocol")?;
                let mapped = match v.to_ascii_uppercase().as_str() {
                    "HTTP" => "http",
                    "HTTPS" => "https",
                    "GRPC" | "H2C" => "h2c",
                    _ => v.as_str(),
                };
                (mapped.to_string(), f)
            }
            RATE_LIMIT => {
                // nginx allows a burst of five times the rate by default.
                if let Some((v, f)) = nginx("limit-rps") {
                    let burst = v.trim().parse::<u32>().map_or(0, |n| n.saturating_mul(5));
                    (format!("{}r/s burst={burst}", v.trim()), f)
                } else {
                    let (v, f) = nginx("limit-rpm")?;
                    (format!("{}r/m", v.trim()), f)
                }
            }
            _ => return None,
        };
        Some(Found { value, field })
    }

    /// nginx annotations ferry does not take: each is reported.
    fn report_nginx(&self, obj: &ObjectRef, diagnostics: &mut Vec<Diagnostic>) {
        for key in self.map.keys().filter(|k| k.starts_with(NGINX)) {
            let name = &key[NGINX.len()..];
            let field = format!("metadata.annotations[{key}]");
            if !self.nginx {
                let why = "ignored: ferry reads nginx annotations only with --nginx-annotations";
                diagnostics.push(Diagnostic::warning(obj, field, why));
            } else if !NGINX_SUPPORTED.contains(&name) {
                let why = "not supported by ferry (see the README's annotation table); ignored";
                diagnostics.push(Diagnostic::warning(obj, field, why));
            }
        }
    }
}

/// nginx annotations honoured with `--nginx-annotations`.
const NGINX_SUPPORTED: &[&str] = &[
    "proxy-connect-timeout",
    "proxy-read-timeout",
    "proxy-body-size",
    "allowlist-source-range",
    "whitelist-source-range",
    "ssl-redirect",
    "force-ssl-redirect",
    "permanent-redirect",
    "permanent-redirect-code",
    "temporal-redirect",
    "app-root",
    "rewrite-target",
    "backend-protocol",
    "limit-rps",
    "limit-rpm",
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
    "affinity",
    "session-cookie-name",
    "session-cookie-max-age",
    "canary",
    "canary-weight",
    "canary-by-header",
    "canary-by-header-value",
];

/// Reads every annotation of `ing` that ferry understands.
pub fn settings(
    ing: &Ingress,
    obj: &ObjectRef,
    route_name: &Arc<str>,
    nginx: bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> IngressSettings {
    let mut out = IngressSettings {
        options: RouteOptions::default(),
        ssl_redirect: true,
        force_ssl_redirect: false,
        rewrite_target: None,
        backend_protocol: None,
        canary: None,
    };
    let Some(map) = &ing.metadata.annotations else { return out };
    let a = Annotations { map, nginx };
    a.report_nginx(obj, diagnostics);
    let options = &mut out.options;
    for (key, slot) in [(CONNECT_TIMEOUT, &mut options.connect), (READ_TIMEOUT, &mut options.read)] {
        let Some(f) = a.get(key) else { continue };
        match parse_duration(&f.value) {
            Some(d) if !d.is_zero() && d <= MAX_TIMEOUT => *slot = Some(d),
            _ => {
                let why =
                    format!("{:?} is not a duration between 1ms and 1h (e.g. 500ms, 30s, 2m); default used", f.value);
                diagnostics.push(Diagnostic::warning(obj, f.field, why));
            }
        }
    }
    if let Some(f) = a.get(ALLOW_SOURCES) {
        let (nets, bad): (Vec<_>, Vec<_>) =
            f.value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(parse_net).partition(Result::is_ok);
        let nets: Vec<ipnet::IpNet> = nets.into_iter().flatten().collect();
        for entry in bad.into_iter().filter_map(Result::err) {
            let why = format!("{entry:?} is not an IP address or CIDR range; not allowed");
            diagnostics.push(Diagnostic::error(obj, f.field.clone(), why));
        }
        if nets.is_empty() {
            let why = "no valid range: every client is refused (403) until it is fixed";
            diagnostics.push(Diagnostic::error(obj, f.field.clone(), why));
        }
        options.allow_sources = Some(nets.into());
    }
    if let Some(f) = a.get(RATE_LIMIT) {
        match parse_rate(&f.value) {
            Some(rate) => options.rate_limit = Some(RateLimiter::shared(route_name, rate)),
            None => {
                let why = format!("{:?} is not a rate (e.g. 10r/s, 600r/m, \"10r/s burst=20\"); no limit", f.value);
                diagnostics.push(Diagnostic::warning(obj, f.field, why));
            }
        }
    }
    if let Some(f) = a.get(MAX_BODY) {
        match parse_size(&f.value) {
            Some(0) => {}
            Some(n) => options.max_body = Some(n),
            None => {
                let why = format!("{:?} is not a size (e.g. 512k, 8m, 1g, or bytes); no limit", f.value);
                diagnostics.push(Diagnostic::warning(obj, f.field, why));
            }
        }
    }
    if let Some(f) = a.get(RETRIES) {
        match f.value.trim().parse::<u8>() {
            Ok(n) if n <= MAX_RETRIES => options.retries = n,
            _ => {
                let why = format!("{:?} is not a retry count 0..={MAX_RETRIES}; no retries", f.value);
                diagnostics.push(Diagnostic::warning(obj, f.field, why));
            }
        }
    }
    if let Some(f) = a.get(SSL_REDIRECT) {
        out.ssl_redirect = flag(f, true, obj, diagnostics);
    }
    if let Some(f) = a.get(FORCE_SSL_REDIRECT) {
        out.force_ssl_redirect = flag(f, false, obj, diagnostics);
    }
    if let Some(f) = a.get(REDIRECT) {
        let code = match a.get(REDIRECT_CODE) {
            None => 301,
            Some(c) => match c.value.trim().parse::<u16>() {
                Ok(n @ (301 | 302 | 303 | 307 | 308)) => n,
                _ => {
                    let why = format!("{:?} is not a redirect status (301, 302, 303, 307, 308); 301 used", c.value);
                    diagnostics.push(Diagnostic::warning(obj, c.field, why));
                    301
                }
            },
        };
        match redirect_location(f.value.trim()) {
            Ok(location) => options.redirect = Some(Arc::new(Redirect { location, code })),
            Err(why) => diagnostics.push(Diagnostic::error(obj, f.field, format!("{why}; not redirected"))),
        }
    }
    if let Some(f) = a.get(APP_ROOT) {
        let root = f.value.trim();
        // A path ferry can route, and a redirect location on the same host: not `//host`
        // (another host to a browser), no `$` variables.
        let checked = super::ingress::validate_path(root).and_then(|()| redirect_location(root)).and_then(|root| {
            if root == "/" {
                Err("\"/\" would redirect to itself".to_string())
            } else {
                Ok(root)
            }
        });
        match checked {
            Ok(root) => options.app_root = Some(root.into()),
            Err(why) => diagnostics.push(Diagnostic::error(obj, f.field, format!("{why}; not redirected"))),
        }
    }
    if let Some(f) = a.get(REWRITE_TARGET) {
        let target = f.value.trim();
        if target.contains('$') {
            let why = format!("{target:?}: regex captures are not supported (prefix rewrites only); not rewritten");
            diagnostics.push(Diagnostic::error(obj, f.field, why));
        } else if let Err(why) = super::ingress::validate_path(target) {
            diagnostics.push(Diagnostic::error(obj, f.field, format!("{why}; not rewritten")));
        } else {
            out.rewrite_target = Some(target.to_string());
        }
    }
    if let Some(f) = a.get(CORS_ALLOW_ORIGIN) {
        options.cors = cors(&a, &f, obj, diagnostics).map(Arc::new);
    }
    if let Some(f) = a.get(AFFINITY) {
        if f.value.trim() == "cookie" {
            let name = a.get(AFFINITY_COOKIE_NAME).map(|f| (f.value.trim().to_string(), f.field));
            let name = match name {
                None => "ferry-affinity".to_string(),
                Some((n, _))
                    if !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
                {
                    n
                }
                Some((n, field)) => {
                    let why = format!("{n:?} is not a cookie name (letters, digits, - _ .); ferry-affinity used");
                    diagnostics.push(Diagnostic::warning(obj, field, why));
                    "ferry-affinity".to_string()
                }
            };
            let max_age = a.get(AFFINITY_COOKIE_MAX_AGE).and_then(|f| match f.value.trim().parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    let why = format!("{:?} is not a number of seconds; a session cookie is used", f.value);
                    diagnostics.push(Diagnostic::warning(obj, f.field, why));
                    None
                }
            });
            options.affinity_cookie = Some(Arc::new(AffinityCookie { name, max_age }));
        } else {
            let why = format!("{:?} is not a known affinity (cookie); none used", f.value);
            diagnostics.push(Diagnostic::warning(obj, f.field, why));
        }
    }
    if a.get(CANARY).is_some_and(|f| f.value.trim() == "true") {
        let weight = match a.get(CANARY_WEIGHT) {
            None => 0,
            Some(f) => f.value.trim().parse::<u8>().ok().filter(|w| *w <= 100).unwrap_or_else(|| {
                let why = format!("{:?} is not a percentage 0..=100; 0 used", f.value);
                diagnostics.push(Diagnostic::warning(obj, f.field, why));
                0
            }),
        };
        let header = a.get(CANARY_HEADER).and_then(|f| {
            http::HeaderName::from_bytes(f.value.trim().as_bytes()).ok().or_else(|| {
                let why = format!("{:?} is not a header name; ignored", f.value);
                diagnostics.push(Diagnostic::warning(obj, f.field, why));
                None
            })
        });
        let header_value = a.get(CANARY_HEADER_VALUE).map(|f| f.value);
        out.canary = Some(CanaryRule { weight, header, header_value });
    }
    if let Some(f) = a.get(BACKEND_PROTOCOL) {
        match f.value.trim().to_ascii_lowercase().as_str() {
            "http" => out.backend_protocol = Some(UpstreamProtocol::Http1),
            "h2c" | "grpc" => out.backend_protocol = Some(UpstreamProtocol::H2c),
            "https" => out.backend_protocol = Some(UpstreamProtocol::Tls),
            other => {
                let why = format!("{other:?} is not http, https or h2c; appProtocol or HTTP/1.1 used");
                diagnostics.push(Diagnostic::warning(obj, f.field, why));
            }
        }
    }
    out
}

/// A `true`/`false` annotation; anything else is reported and `default` kept.
fn flag(f: Found, default: bool, obj: &ObjectRef, diagnostics: &mut Vec<Diagnostic>) -> bool {
    match f.value.trim() {
        "true" => true,
        "false" => false,
        other => {
            let why = format!("{other:?} is not true or false; {default} used (the default)");
            diagnostics.push(Diagnostic::warning(obj, f.field, why));
            default
        }
    }
}

/// A redirect target: an absolute `http`/`https` URL or a path on the same host, sent as the
/// `Location` header exactly as written.
fn redirect_location(v: &str) -> Result<String, String> {
    if v.contains('$') {
        // ingress-nginx users write `https://example.com$request_uri`; a literal `$request_uri`
        // in every Location would be worse than no redirect.
        return Err(format!("{v:?}: variables such as $request_uri are not expanded"));
    }
    let uri: http::Uri = v.parse().map_err(|_| format!("{v:?} is not a URL"))?;
    let absolute = matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some_and(|h| !h.is_empty());
    let path_only = uri.scheme().is_none() && uri.authority().is_none() && v.starts_with('/') && !v.starts_with("//");
    if absolute || path_only {
        Ok(v.to_string())
    } else {
        Err(format!("{v:?} is neither an http(s) URL nor a path starting with \"/\""))
    }
}

/// CORS settings; `None` (with an error) when no allowed origin is valid.
fn cors(a: &Annotations<'_>, origin: &Found, obj: &ObjectRef, diagnostics: &mut Vec<Diagnostic>) -> Option<Cors> {
    let mut origins = Vec::new();
    let mut any = false;
    for o in origin.value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let valid = o.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains(['/', ' ', '*'])
        });
        if o == "*" {
            any = true;
        } else if valid {
            origins.push(o.to_ascii_lowercase());
        } else {
            let why = format!("{o:?} is not an origin (scheme://host[:port]) or *; left out");
            diagnostics.push(Diagnostic::error(obj, origin.field.clone(), why));
        }
    }
    if any {
        origins.clear();
    } else if origins.is_empty() {
        // Never widen a list whose every entry was wrong into "any origin".
        diagnostics.push(Diagnostic::error(obj, origin.field.clone(), "no valid origin: CORS stays off"));
        return None;
    }
    let list = |key: &str, default: &str| {
        a.get(key).map(|f| f.value.trim().to_string()).filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
    };
    let credentials = a.get(CORS_ALLOW_CREDENTIALS).is_some_and(|f| flag(f, false, obj, diagnostics));
    let max_age = match a.get(CORS_MAX_AGE) {
        None => 86_400,
        Some(f) => f.value.trim().parse().unwrap_or_else(|_| {
            let why = format!("{:?} is not a number of seconds; 86400 used", f.value);
            diagnostics.push(Diagnostic::warning(obj, f.field, why));
            86_400
        }),
    };
    let expose = a.get(CORS_EXPOSE_HEADERS).map(|f| f.value.trim().to_string()).filter(|v| !v.is_empty());
    Some(Cors {
        origins,
        methods: list(CORS_ALLOW_METHODS, CORS_DEFAULT_METHODS),
        headers: list(CORS_ALLOW_HEADERS, CORS_DEFAULT_HEADERS),
        expose,
        credentials,
        max_age,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(yaml_annotations: &str, nginx: bool) -> (IngressSettings, Vec<Diagnostic>) {
        let ing: Ingress =
            serde_yaml_ng::from_str(&format!("metadata: {{name: i, annotations: {{{yaml_annotations}}}}}")).unwrap();
        let mut diags = Vec::new();
        let s = settings(&ing, &ObjectRef::new("Ingress", "default", "i"), &Arc::from("default/i"), nginx, &mut diags);
        (s, diags)
    }

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
    fn redirect_locations() {
        for ok in ["https://new.test/", "http://new.test:8080/a?b=1", "/v2/api", "/"] {
            assert_eq!(redirect_location(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "https://new.test$request_uri",
            "new.test/x",
            "ftp://new.test/",
            "//new.test/",
            "https:///x",
            "/a b",
            "/a\r\nSet-Cookie: x=1",
            "",
        ] {
            assert!(redirect_location(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn redirects_and_app_root() {
        let (s, diags) =
            read("ferry.dev/redirect: /new, ferry.dev/redirect-code: \"307\", ferry.dev/app-root: /app", false);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(s.options.redirect.as_deref(), Some(&Redirect { location: "/new".into(), code: 307 }));
        assert_eq!(s.options.app_root.as_deref(), Some("/app"));
        // A bad code falls back to 301; a bad location or root is an error and nothing redirects.
        let (s, diags) = read("ferry.dev/redirect: /new, ferry.dev/redirect-code: \"200\"", false);
        assert_eq!(s.options.redirect.map(|r| r.code), Some(301));
        assert_eq!(diags[0].field, "metadata.annotations[ferry.dev/redirect-code]");
        for bad in [
            "ferry.dev/redirect: \"https://x.test$request_uri\"",
            "ferry.dev/app-root: /",
            "ferry.dev/app-root: app",
            "ferry.dev/app-root: //evil.test/app",
            "ferry.dev/app-root: /app$1",
        ] {
            let (s, diags) = read(bad, false);
            assert!(s.options.redirect.is_none() && s.options.app_root.is_none(), "{bad}");
            assert_eq!(diags.len(), 1, "{bad}: {diags:?}");
            assert!(diags[0].reason.ends_with("not redirected"), "{bad}: {diags:?}");
        }
        // nginx: a temporal redirect wins over a permanent one and is a 302.
        let (s, _) = read(
            "nginx.ingress.kubernetes.io/permanent-redirect: /p, nginx.ingress.kubernetes.io/permanent-redirect-code: \"308\", \
             nginx.ingress.kubernetes.io/temporal-redirect: /t",
            true,
        );
        assert_eq!(s.options.redirect.as_deref(), Some(&Redirect { location: "/t".into(), code: 302 }));
        let (s, _) = read(
            "nginx.ingress.kubernetes.io/permanent-redirect: /p, nginx.ingress.kubernetes.io/permanent-redirect-code: \"308\"",
            true,
        );
        assert_eq!(s.options.redirect.as_deref(), Some(&Redirect { location: "/p".into(), code: 308 }));
        let (s, _) = read("nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"", true);
        assert!(s.force_ssl_redirect);
        let (s, diags) = read("ferry.dev/force-ssl-redirect: \"yes\"", false);
        assert!(!s.force_ssl_redirect && diags.len() == 1);
    }

    #[test]
    fn timeouts() {
        let (s, diags) = read("ferry.dev/connect-timeout: 250ms, ferry.dev/read-timeout: 2h", false);
        assert_eq!(s.options.connect, Some(Duration::from_millis(250)));
        assert_eq!(s.options.read, None, "over an hour: default");
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].field, "metadata.annotations[ferry.dev/read-timeout]");
    }

    #[test]
    fn protection() {
        assert_eq!(parse_rate("10r/s"), Some(Rate { per_second: 10.0, burst: 10 }));
        assert_eq!(parse_rate("30r/m burst=5"), Some(Rate { per_second: 0.5, burst: 5 }));
        for bad in ["10", "10r/h", "0r/s", "10r/s burst=0", "10r/s burst=x", "10r/s b=1"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
        assert_eq!(parse_size("512k"), Some(512 * 1024));
        assert_eq!(parse_size("8M"), Some(8 << 20));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1.5m"), None);
        let (s, diags) = read("ferry.dev/allow-source-ranges: \"10.0.0.0/8, 192.0.2.7, bogus\"", false);
        assert_eq!(s.options.allow_sources.unwrap().len(), 2);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(diags[0].reason.contains("\"bogus\""));
    }

    #[test]
    fn redirect_rewrite_protocol() {
        let (s, diags) = read(
            "ferry.dev/ssl-redirect: \"false\", ferry.dev/rewrite-target: /v2, ferry.dev/backend-protocol: GRPC",
            false,
        );
        assert!(!s.ssl_redirect && diags.is_empty(), "{diags:?}");
        assert_eq!(s.rewrite_target.as_deref(), Some("/v2"));
        assert_eq!(s.backend_protocol, Some(UpstreamProtocol::H2c));
        let (s, diags) = read("ferry.dev/rewrite-target: /$2", false);
        assert!(s.rewrite_target.is_none() && diags[0].reason.contains("captures"), "{diags:?}");
    }

    #[test]
    fn cors_settings() {
        let (s, diags) = read("ferry.dev/cors-allow-origin: \"https://a.test, http://b.test:8080\", ferry.dev/cors-allow-credentials: \"true\"", false);
        let cors = s.options.cors.unwrap();
        assert_eq!(cors.origins, ["https://a.test", "http://b.test:8080"]);
        assert!(cors.credentials && diags.is_empty());
        let (s, diags) = read("ferry.dev/cors-allow-origin: \"a.test\"", false);
        assert!(s.options.cors.is_none(), "an invalid list never becomes *");
        assert_eq!(diags.len(), 2);
        let (s, _) = read("nginx.ingress.kubernetes.io/enable-cors: \"true\"", true);
        assert!(s.options.cors.unwrap().origins.is_empty(), "nginx default origin *");
    }

    #[test]
    fn nginx_annotations_map_or_are_reported() {
        let nginx = "nginx.ingress.kubernetes.io/proxy-body-size: 8m, nginx.ingress.kubernetes.io/limit-rps: \"5\", \
                     nginx.ingress.kubernetes.io/ssl-redirect: \"false\", nginx.ingress.kubernetes.io/backend-protocol: HTTPS, \
                     nginx.ingress.kubernetes.io/configuration-snippet: \"more_set_headers x: y\"";
        let (s, diags) = read(nginx, true);
        assert_eq!(s.options.max_body, Some(8 << 20));
        assert_eq!(s.options.rate_limit.unwrap().rate(), Rate { per_second: 5.0, burst: 25 });
        assert!(!s.ssl_redirect);
        assert_eq!(s.backend_protocol, Some(UpstreamProtocol::Tls));
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(diags[0].field.contains("configuration-snippet") && diags[0].reason.contains("not supported"));
        // Without the flag nothing is taken, and each one is reported.
        let (s, diags) = read(nginx, false);
        assert!(s.options.max_body.is_none() && s.ssl_redirect);
        assert_eq!(diags.len(), 5);
        // ferry's own key wins over the nginx one.
        let (s, _) = read("ferry.dev/max-body-size: 1k, nginx.ingress.kubernetes.io/proxy-body-size: 8m", true);
        assert_eq!(s.options.max_body, Some(1024));
    }
}
