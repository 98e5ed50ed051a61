//! Ingress annotations: ferry's typed `ferry.dev/*` keys (never snippets or templates), and with
//! `--nginx-annotations` the subset of `nginx.ingress.kubernetes.io/*` that maps onto them.
//!
//! Every value is validated; a bad value is a diagnostic naming the annotation. ferry owns the
//! `ferry.dev/` prefix and [`KEYS`] lists every key it reads, so a key it does not know is a typo
//! whose setting would silently be missing: such an Ingress is not served at all (fail closed),
//! as is one whose rate limit, body size limit or canary flag does not parse. A source allow-list
//! without a valid entry refuses every client; a CORS setting with a bad value stays off; a value
//! that would become a header with a control character in it is an error and is not used. Other
//! bad values (timeouts, retries…) are warnings and the setting keeps its default. Without
//! `--nginx-annotations` an nginx annotation is reported as ignored; with it, one without a ferry
//! equivalent is reported as unsupported. Neither is ever dropped silently.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway::cors::Cors;
use gateway::limits::Rate;
use gateway::table::{AffinityCookie, Redirect};
use gateway::{RouteOptions, Runtime, UpstreamProtocol};
use k8s_openapi::api::networking::v1::Ingress;

use crate::diagnostic::{Diagnostic, ObjectRef};

/// The prefix ferry owns: every key under it is one of [`KEYS`].
pub const PREFIX: &str = "ferry.dev/";
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

/// Every `ferry.dev/*` key an Ingress may carry, each with the `nginx.ingress.kubernetes.io/*`
/// annotations read as it with `--nginx-annotations`. The one list unknown keys are checked
/// against, supported nginx annotations are told from unsupported ones by, and suggestions are
/// drawn from; [`Annotations::get`] translates the nginx values (a unit test keeps the two in step).
pub const KEYS: &[(&str, &[&str])] = &[
    (CONNECT_TIMEOUT, &["proxy-connect-timeout"]),
    (READ_TIMEOUT, &["proxy-read-timeout"]),
    (RETRIES, &[]),
    (ALLOW_SOURCES, &["allowlist-source-range", "whitelist-source-range"]),
    (RATE_LIMIT, &["limit-rps", "limit-rpm"]),
    (MAX_BODY, &["proxy-body-size"]),
    (SSL_REDIRECT, &["ssl-redirect"]),
    (FORCE_SSL_REDIRECT, &["force-ssl-redirect"]),
    (REDIRECT, &["temporal-redirect", "permanent-redirect"]),
    (REDIRECT_CODE, &["permanent-redirect-code"]),
    (APP_ROOT, &["app-root"]),
    (REWRITE_TARGET, &["rewrite-target"]),
    (BACKEND_PROTOCOL, &["backend-protocol"]),
    (CORS_ALLOW_ORIGIN, &["enable-cors", "cors-allow-origin"]),
    (CORS_ALLOW_METHODS, &["cors-allow-methods"]),
    (CORS_ALLOW_HEADERS, &["cors-allow-headers"]),
    (CORS_EXPOSE_HEADERS, &["cors-expose-headers"]),
    (CORS_ALLOW_CREDENTIALS, &["cors-allow-credentials"]),
    (CORS_MAX_AGE, &["cors-max-age"]),
    (AFFINITY, &["affinity"]),
    (AFFINITY_COOKIE_NAME, &["session-cookie-name"]),
    (AFFINITY_COOKIE_MAX_AGE, &["session-cookie-max-age"]),
    (CANARY, &["canary"]),
    (CANARY_WEIGHT, &["canary-weight"]),
    (CANARY_HEADER, &["canary-by-header"]),
    (CANARY_HEADER_VALUE, &["canary-by-header-value"]),
];

/// The end of the reason of every diagnostic that refuses a whole Ingress.
const NOT_SERVED: &str = "the Ingress is not served until it is fixed";

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
/// they attach to). One whose flag does not parse sorts with the canaries too; it is refused when
/// compiled.
pub fn is_canary(ing: &Ingress, nginx: bool) -> bool {
    let Some(map) = &ing.metadata.annotations else { return false };
    Annotations { map, nginx }.get(CANARY).is_some_and(|f| f.value.trim() != "false")
}

/// One annotation value and the field it came from (for diagnostics).
struct Found {
    /// The value in ferry's syntax (an nginx value translated).
    value: String,
    /// The value as the annotation writes it.
    written: String,
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
            return Some(Found { value: v.clone(), written: v.clone(), field: field(key) });
        }
        if !self.nginx {
            return None;
        }
        let nginx = |name: &str| {
            let k = format!("{NGINX}{name}");
            self.map.get(&k).map(|v| (v.clone(), k))
        };
        let (value, key) = match key {
            CONNECT_TIMEOUT => nginx("proxy-connect-timeout")?,
            READ_TIMEOUT => nginx("proxy-read-timeout")?,
            MAX_BODY => nginx("proxy-body-size")?,
            ALLOW_SOURCES => nginx("allowlist-source-range").or_else(|| nginx("whitelist-source-range"))?,
            SSL_REDIRECT => nginx("ssl-redirect")?,
            FORCE_SSL_REDIRECT => nginx("force-ssl-redirect")?,
            // ingress-nginx lets a temporal redirect win over a permanent one.
            REDIRECT => nginx("temporal-redirect").or_else(|| nginx("permanent-redirect"))?,
            REDIRECT_CODE => match nginx("temporal-redirect") {
                Some((_, k)) => ("302".to_string(), k),
                None => nginx("permanent-redirect-code")?,
            },
            APP_ROOT => nginx("app-root")?,
            // ingress-nginx turns CORS on with `enable-cors`; its origin defaults to `*`.
            CORS_ALLOW_ORIGIN => {
                let (on, k) = nginx("enable-cors")?;
                if on.trim() != "true" {
                    return None;
                }
                nginx("cors-allow-origin").unwrap_or(("*".into(), k))
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
                .or_else(|| nginx("affinity").map(|(_, k)| ("INGRESSCOOKIE".to_string(), k)))?,
            AFFINITY_COOKIE_MAX_AGE => nginx("session-cookie-max-age")?,
            REWRITE_TARGET => nginx("rewrite-target")?,
            BACKEND_PROTOCOL => {
                let (v, k) = nginx("backend-protocol")?;
                let mapped = match v.to_ascii_uppercase().as_str() {
                    "HTTP" => "http",
                    "HTTPS" => "https",
                    "GRPC" | "H2C" => "h2c",
                    _ => v.as_str(),
                };
                (mapped.to_string(), k)
            }
            RATE_LIMIT => {
                // A whole number of requests; 0 is no limit, as in ingress-nginx. Anything else
                // becomes a value that does not parse as a rate (which refuses the Ingress).
                let counted = |name: &str| {
                    let (v, k) = nginx(name)?;
                    match v.trim().parse::<u32>() {
                        Ok(0) => None,
                        Ok(n) => Some((Some(n), k)),
                        Err(_) => Some((None, k)),
                    }
                };
                if let Some((n, k)) = counted("limit-rps") {
                    // nginx allows a burst of five times the rate by default.
                    (n.map(|n| format!("{n}r/s burst={}", n.saturating_mul(5))).unwrap_or_default(), k)
                } else {
                    let (n, k) = counted("limit-rpm")?;
                    (n.map(|n| format!("{n}r/m")).unwrap_or_default(), k)
                }
            }
            _ => return None,
        };
        let written = self.map.get(&key).cloned().unwrap_or_default();
        Some(Found { value, written, field: field(&key) })
    }

    /// nginx annotations ferry does not take: each is reported.
    /// Reports the nginx annotations ferry does not read. Returns `false` when one of them is a
    /// protection ferry cannot enforce while it was asked to honour nginx annotations: the
    /// Ingress would be served open (fail closed).
    fn report_nginx(&self, obj: &ObjectRef, diagnostics: &mut Vec<Diagnostic>) -> bool {
        let mut servable = true;
        for key in self.map.keys().filter(|k| k.starts_with(NGINX)) {
            let name = &key[NGINX.len()..];
            if !self.nginx {
                let why = "ignored: ferry reads nginx annotations only with --nginx-annotations";
                diagnostics.push(Diagnostic::warning(obj, field(key), why));
            } else if KEYS.iter().any(|(_, nginx)| nginx.contains(&name)) {
                continue;
            } else if is_nginx_protection(name) {
                let why = format!(
                    "a protection ferry does not support (see the README's annotation table): served without it, \
                     the route would be open; {NOT_SERVED}"
                );
                diagnostics.push(Diagnostic::error(obj, field(key), why));
                servable = false;
            } else {
                let why = "not supported by ferry (see the README's annotation table); ignored";
                diagnostics.push(Diagnostic::warning(obj, field(key), why));
            }
        }
        servable
    }

    /// `ferry.dev/*` keys ferry does not know: each is an error naming the closest known key.
    /// Returns whether every key is known.
    fn check_keys(&self, obj: &ObjectRef, diagnostics: &mut Vec<Diagnostic>) -> bool {
        let mut known = true;
        for key in self.map.keys().filter(|k| k.starts_with(PREFIX)) {
            if KEYS.iter().any(|(k, _)| k == key) {
                continue;
            }
            known = false;
            let hint = match suggest(key) {
                Some(Suggestion::Key(k)) => format!(" (did you mean {k}?)"),
                Some(Suggestion::OnService) => " (an annotation of the Service, not of the Ingress)".to_string(),
                None => String::new(),
            };
            let why = format!("unknown annotation {key}{hint}; {NOT_SERVED}");
            diagnostics.push(Diagnostic::error(obj, field(key), why));
        }
        known
    }
}

/// ingress-nginx annotations (after its prefix) that restrict who is served or how much:
/// authentication, client certificates, deny lists, connection and rate limits, WAF rules.
/// ferry supports none of these but `limit-rps`/`limit-rpm` (in [`KEYS`]).
fn is_nginx_protection(name: &str) -> bool {
    const PREFIXES: &[&str] = &["auth-", "global-rate-limit", "limit-", "modsecurity-"];
    const NAMES: &[&str] = &[
        "denylist-source-range",
        "blacklist-source-range",
        "enable-modsecurity",
        "enable-owasp-core-rules",
        "satisfy",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

fn field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// What an unknown `ferry.dev/*` key was probably meant to be.
#[derive(Debug, PartialEq, Eq)]
enum Suggestion {
    Key(&'static str),
    /// A Service annotation put on the Ingress.
    OnService,
}

fn suggest(key: &str) -> Option<Suggestion> {
    let name = key.strip_prefix(PREFIX).unwrap_or(key).to_ascii_lowercase();
    if format!("{PREFIX}{name}") == super::service::LOAD_BALANCER_ANNOTATION {
        return Some(Suggestion::OnService);
    }
    // An ingress-nginx name under ferry's prefix (`ferry.dev/proxy-body-size`).
    if let Some((k, _)) = KEYS.iter().find(|(_, nginx)| nginx.contains(&name.as_str())) {
        return Some(Suggestion::Key(k));
    }
    // The closest key within a few edits (about one in five characters); the first in `KEYS`
    // on a tie, so the suggestion is stable.
    KEYS.iter()
        .map(|(k, _)| (edit_distance(&name, &k[PREFIX.len()..]), *k))
        .filter(|(d, k)| *d <= (k.len() - PREFIX.len()).div_ceil(5).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| Suggestion::Key(k))
}

/// Levenshtein distance (insertions, deletions, substitutions), over bytes: keys are ASCII.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb)).min(above + 1).min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Reads every annotation of `ing` that ferry understands. `None` when the Ingress must not be
/// served (an unknown `ferry.dev/*` key, or a protection setting that does not parse); every
/// reason is a diagnostic, all of them reported at once.
pub fn settings(
    ing: &Ingress,
    obj: &ObjectRef,
    route_name: &Arc<str>,
    nginx: bool,
    runtime: &Runtime,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<IngressSettings> {
    let mut out = IngressSettings {
        options: RouteOptions::default(),
        ssl_redirect: true,
        force_ssl_redirect: false,
        rewrite_target: None,
        backend_protocol: None,
        canary: None,
    };
    let Some(map) = &ing.metadata.annotations else { return Some(out) };
    let a = Annotations { map, nginx };
    let nginx_servable = a.report_nginx(obj, diagnostics);
    let mut served = a.check_keys(obj, diagnostics) && nginx_servable;
    let mut refuse = |f: Found, why: String| {
        diagnostics.push(Diagnostic::error(obj, f.field, format!("{why}; {NOT_SERVED}")));
        served = false;
    };
    // Protection settings first: one that does not parse must not leave the route open.
    let options = &mut out.options;
    if let Some(f) = a.get(RATE_LIMIT) {
        match parse_rate(&f.value) {
            Some(rate) => options.rate_limit = Some(runtime.rate_limiter(route_name, rate)),
            None if f.value != f.written => {
                let why = format!("{:?} is not a number of requests", f.written);
                refuse(f, why);
            }
            None => {
                let why = format!("{:?} is not a rate (e.g. 10r/s, 600r/m, \"10r/s burst=20\")", f.value);
                refuse(f, why);
            }
        }
    }
    if let Some(f) = a.get(MAX_BODY) {
        match parse_size(&f.value) {
            Some(0) => {}
            Some(n) => options.max_body = Some(n),
            None => {
                let why = format!("{:?} is not a size (e.g. 512k, 8m, 1g, or bytes; 0 for no limit)", f.value);
                refuse(f, why);
            }
        }
    }
    // Read as a main route, a canary would take its paths' traffic (or own them, if older).
    let canary = match a.get(CANARY) {
        None => false,
        Some(f) => match f.value.trim() {
            "true" => true,
            "false" => false,
            other => {
                let why = format!("{other:?} is not true or false");
                refuse(f, why);
                false
            }
        },
    };
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
    let options = &mut out.options;
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
        let checked = super::ingress::validate_path(root)
            .and_then(|()| safe_path(root))
            .and_then(|()| redirect_location(root))
            .and_then(|root| if root == "/" { Err("\"/\" would redirect to itself".to_string()) } else { Ok(root) });
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
        } else if let Err(why) = super::ingress::validate_path(target).and_then(|()| safe_path(target)) {
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
            let name = match a.get(AFFINITY_COOKIE_NAME) {
                None => "ferry-affinity".to_string(),
                Some(f) => match header_text(&f, "ferry-affinity used", obj, diagnostics) {
                    Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) => {
                        n.to_string()
                    }
                    Some(n) => {
                        let why = format!("{n:?} is not a cookie name (letters, digits, - _ .); ferry-affinity used");
                        diagnostics.push(Diagnostic::warning(obj, f.field, why));
                        "ferry-affinity".to_string()
                    }
                    None => "ferry-affinity".to_string(),
                },
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
    if canary {
        let weight = match a.get(CANARY_WEIGHT) {
            None => 0,
            Some(f) => f.value.trim().parse::<u8>().ok().filter(|w| *w <= 100).unwrap_or_else(|| {
                let why = format!("{:?} is not a percentage 0..=100; 0 used", f.value);
                diagnostics.push(Diagnostic::warning(obj, f.field, why));
                0
            }),
        };
        const NO_HEADER: &str = "the canary is not chosen by header";
        let mut header = a.get(CANARY_HEADER).and_then(|f| {
            let name = header_text(&f, NO_HEADER, obj, diagnostics)?;
            http::HeaderName::from_bytes(name.as_bytes()).ok().or_else(|| {
                let why = format!("{:?} is not a header name; {NO_HEADER}", f.value);
                diagnostics.push(Diagnostic::warning(obj, f.field, why));
                None
            })
        });
        let mut header_value = None;
        if let Some(f) = a.get(CANARY_HEADER_VALUE) {
            // Without its value, the header would mean `always`/`never` instead: no header rule.
            match header_text(&f, NO_HEADER, obj, diagnostics) {
                Some(v) => header_value = Some(v.to_string()),
                None => header = None,
            }
        }
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
    served.then_some(out)
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

/// A value that becomes (part of) a header, trimmed; `None`, with an error whose reason ends in
/// `otherwise`, when it holds a control character: CR or LF would end the header, NUL cut it.
fn header_text<'f>(
    f: &'f Found,
    otherwise: &str,
    obj: &ObjectRef,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<&'f str> {
    let v = f.value.trim();
    match control_char(v) {
        None => Some(v),
        Some(why) => {
            diagnostics.push(Diagnostic::error(obj, f.field.clone(), format!("{why}; {otherwise}")));
            None
        }
    }
}

/// Why `v` cannot be sent in a header, if it cannot.
fn control_char(v: &str) -> Option<String> {
    let c = v.chars().find(|c| c.is_control())?;
    Some(format!("{v:?} contains the control character {c:?}, which cannot be sent in a header"))
}

/// A comma-separated list of HTTP tokens (methods or header names), written back as `A, B`.
fn token_list(v: &str) -> Result<String, String> {
    if let Some(why) = control_char(v) {
        return Err(why);
    }
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let mut out = Vec::new();
    for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if !t.bytes().all(tchar) {
            return Err(format!("{t:?} is not a method or header name (an HTTP token)"));
        }
        out.push(t);
    }
    Ok(out.join(", "))
}

/// A path ferry sends upstream (rewrite target) or sends clients to (app root) must pass the
/// request path rules (`gateway::safety`), which ferry applies to every request.
fn safe_path(path: &str) -> Result<(), String> {
    gateway::safety::check_path(path).map_err(|why| format!("{path:?}: {why}, which ferry refuses in requests"))
}

/// A redirect target: an absolute `http`/`https` URL or a path on the same host, sent as the
/// `Location` header exactly as written.
fn redirect_location(v: &str) -> Result<String, String> {
    if let Some(why) = control_char(v) {
        return Err(why);
    }
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

/// CORS settings; `None` (with an error) when no allowed origin is valid or a value could not be
/// sent as a header: CORS stays off, the side on which browsers allow nothing cross-origin.
fn cors(a: &Annotations<'_>, origin: &Found, obj: &ObjectRef, diagnostics: &mut Vec<Diagnostic>) -> Option<Cors> {
    const OFF: &str = "CORS stays off";
    let mut valid = true;
    let mut origins = Vec::new();
    let mut any = false;
    if let Some(why) = control_char(origin.value.trim()) {
        diagnostics.push(Diagnostic::error(obj, origin.field.clone(), format!("{why}; {OFF}")));
        valid = false;
    }
    // An origin list with a control character is not read at all: CORS stays off.
    let entries = if valid { origin.value.as_str() } else { "" };
    for o in entries.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let ok = o.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains(['/', ' ', '*'])
        });
        if o == "*" {
            any = true;
        } else if ok {
            origins.push(o.to_ascii_lowercase());
        } else {
            let why = format!("{o:?} is not an origin (scheme://host[:port]) or *; left out");
            diagnostics.push(Diagnostic::error(obj, origin.field.clone(), why));
        }
    }
    if any {
        origins.clear();
    } else if origins.is_empty() && valid {
        // Never widen a list whose every entry was wrong into "any origin".
        diagnostics.push(Diagnostic::error(obj, origin.field.clone(), format!("no valid origin: {OFF}")));
        valid = false;
    }
    let mut list = |key: &str, default: &str| -> Option<String> {
        let Some(f) = a.get(key) else { return Some(default.to_string()) };
        match token_list(f.value.trim()) {
            Ok(l) if l.is_empty() => Some(default.to_string()),
            Ok(l) => Some(l),
            Err(why) => {
                diagnostics.push(Diagnostic::error(obj, f.field, format!("{why}; {OFF}")));
                valid = false;
                None
            }
        }
    };
    let methods = list(CORS_ALLOW_METHODS, CORS_DEFAULT_METHODS);
    let headers = list(CORS_ALLOW_HEADERS, CORS_DEFAULT_HEADERS);
    let expose = list(CORS_EXPOSE_HEADERS, "").filter(|l| !l.is_empty());
    let credentials = a.get(CORS_ALLOW_CREDENTIALS).is_some_and(|f| flag(f, false, obj, diagnostics));
    let max_age = match a.get(CORS_MAX_AGE) {
        None => 86_400,
        Some(f) => f.value.trim().parse().unwrap_or_else(|_| {
            let why = format!("{:?} is not a number of seconds; 86400 used", f.value);
            diagnostics.push(Diagnostic::warning(obj, f.field, why));
            86_400
        }),
    };
    if !valid {
        return None;
    }
    Some(Cors { origins, methods: methods?, headers: headers?, expose, credentials, max_age })
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

    fn ingress(yaml_annotations: &str) -> Ingress {
        serde_yaml_ng::from_str(&format!("metadata: {{name: i, annotations: {{{yaml_annotations}}}}}")).unwrap()
    }

    /// The settings, or `None` when the Ingress is refused, and the diagnostics.
    fn try_read(yaml_annotations: &str, nginx: bool) -> (Option<IngressSettings>, Vec<Diagnostic>) {
        let ing = ingress(yaml_annotations);
        let mut diags = Vec::new();
        let (obj, rt) = (ObjectRef::new("Ingress", "default", "i"), Runtime::default());
        let s = settings(&ing, &obj, &Arc::from("default/i"), nginx, &rt, &mut diags);
        (s, diags)
    }

    /// The settings of an Ingress that is served.
    fn read(yaml_annotations: &str, nginx: bool) -> (IngressSettings, Vec<Diagnostic>) {
        let (s, diags) = try_read(yaml_annotations, nginx);
        (s.unwrap_or_else(|| panic!("{yaml_annotations}: refused: {diags:?}")), diags)
    }

    fn errors(diags: &[Diagnostic]) -> Vec<(&str, &str)> {
        diags
            .iter()
            .filter(|d| d.severity == crate::diagnostic::Severity::Error)
            .map(|d| (d.field.as_str(), d.reason.as_str()))
            .collect()
    }

    #[test]
    fn edit_distances() {
        for (a, b, d) in [
            ("", "", 0),
            ("rate-limit", "rate-limit", 0),
            ("rate-limits", "rate-limit", 1),
            ("allow-source-range", "allow-source-ranges", 1),
            ("maxbodysize", "max-body-size", 2),
            ("retires", "retries", 2),
            ("kitten", "sitting", 3),
            ("", "abc", 3),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} / {b}");
            assert_eq!(edit_distance(b, a), d, "{b} / {a}");
        }
    }

    #[test]
    fn suggestions_for_unknown_keys() {
        use Suggestion::*;
        for (key, want) in [
            ("ferry.dev/allow-source-range", Some(Key(ALLOW_SOURCES))),
            ("ferry.dev/allow-sources-range", Some(Key(ALLOW_SOURCES))),
            ("ferry.dev/maxbodysize", Some(Key(MAX_BODY))),
            ("ferry.dev/rate-limits", Some(Key(RATE_LIMIT))),
            ("ferry.dev/Rate-Limit", Some(Key(RATE_LIMIT))),
            ("ferry.dev/retires", Some(Key(RETRIES))),
            ("ferry.dev/cors-allow-header", Some(Key(CORS_ALLOW_HEADERS))),
            ("ferry.dev/cors-allow-orgin", Some(Key(CORS_ALLOW_ORIGIN))),
            ("ferry.dev/canary-header-values", Some(Key(CANARY_HEADER_VALUE))),
            ("ferry.dev/conect-timout", Some(Key(CONNECT_TIMEOUT))),
            // ingress-nginx's names under ferry's prefix: their ferry key.
            ("ferry.dev/proxy-body-size", Some(Key(MAX_BODY))),
            ("ferry.dev/whitelist-source-range", Some(Key(ALLOW_SOURCES))),
            ("ferry.dev/limit-rps", Some(Key(RATE_LIMIT))),
            ("ferry.dev/canary-by-header", Some(Key(CANARY_HEADER))),
            ("ferry.dev/load-balancer", Some(OnService)),
            // Nothing close: no guess.
            ("ferry.dev/timeout", None),
            ("ferry.dev/snippet", None),
            ("ferry.dev/", None),
        ] {
            assert_eq!(suggest(key), want, "{key}");
        }
    }

    #[test]
    fn unknown_keys_refuse_the_ingress() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "ferry.dev/allow-source-range: 10.0.0.0/8",
                &[(
                    "metadata.annotations[ferry.dev/allow-source-range]",
                    "unknown annotation ferry.dev/allow-source-range (did you mean ferry.dev/allow-source-ranges?); \
                     the Ingress is not served until it is fixed",
                )],
            ),
            // The right key beside a wrong one does not make it servable.
            (
                "ferry.dev/rate-limit: 10r/s, ferry.dev/maxbodysize: 1k",
                &[(
                    "metadata.annotations[ferry.dev/maxbodysize]",
                    "unknown annotation ferry.dev/maxbodysize (did you mean ferry.dev/max-body-size?); \
                     the Ingress is not served until it is fixed",
                )],
            ),
            // Every unknown key is reported, each once.
            (
                "ferry.dev/rate-limits: 10r/s, ferry.dev/snippet: x",
                &[
                    (
                        "metadata.annotations[ferry.dev/rate-limits]",
                        "unknown annotation ferry.dev/rate-limits (did you mean ferry.dev/rate-limit?); \
                         the Ingress is not served until it is fixed",
                    ),
                    (
                        "metadata.annotations[ferry.dev/snippet]",
                        "unknown annotation ferry.dev/snippet; the Ingress is not served until it is fixed",
                    ),
                ],
            ),
            (
                "ferry.dev/load-balancer: least-request",
                &[(
                    "metadata.annotations[ferry.dev/load-balancer]",
                    "unknown annotation ferry.dev/load-balancer (an annotation of the Service, not of the Ingress); \
                     the Ingress is not served until it is fixed",
                )],
            ),
        ];
        for (annotations, want) in cases {
            for nginx in [false, true] {
                let (s, diags) = try_read(annotations, nginx);
                assert!(s.is_none(), "{annotations}: served");
                assert_eq!(errors(&diags), *want, "{annotations}");
            }
        }
        // Every key ferry knows is accepted; other prefixes are not ferry's to judge.
        let all: BTreeMap<String, String> = KEYS.iter().map(|(k, _)| (k.to_string(), String::new())).collect();
        let mut diags = Vec::new();
        assert!(Annotations { map: &all, nginx: false }.check_keys(&ObjectRef::new("Ingress", "d", "i"), &mut diags));
        assert!(diags.is_empty(), "{diags:?}");
        let (s, diags) =
            try_read("example.com/ferry.dev: x, ferry.devx/y: z, kubernetes.io/ingress.class: ferry", false);
        assert!(s.is_some() && diags.is_empty(), "{diags:?}");
        // Unknown nginx keys stay warnings (reported, the Ingress served).
        let (s, diags) = try_read("nginx.ingress.kubernetes.io/server-snippet: x", true);
        assert!(s.is_some() && errors(&diags).is_empty(), "{diags:?}");
    }

    #[test]
    fn unsupported_nginx_protections_refuse_the_ingress() {
        // Asked to honour nginx annotations, ferry will not serve open what one of them guards.
        for name in [
            "auth-url",
            "auth-type",
            "auth-tls-secret",
            "denylist-source-range",
            "limit-connections",
            "global-rate-limit",
            "enable-modsecurity",
            "satisfy",
        ] {
            let (s, diags) = try_read(&format!("nginx.ingress.kubernetes.io/{name}: x"), true);
            assert!(s.is_none(), "{name}: served");
            let field = format!("metadata.annotations[nginx.ingress.kubernetes.io/{name}]");
            assert!(
                errors(&diags).iter().any(|(f, why)| *f == field && why.ends_with(NOT_SERVED)),
                "{name}: {diags:?}"
            );
            // Without the flag every nginx annotation is reported as ignored, this one too.
            let (s, diags) = try_read(&format!("nginx.ingress.kubernetes.io/{name}: x"), false);
            assert!(s.is_some() && errors(&diags).is_empty(), "{name}: {diags:?}");
        }
        // The supported limits are read as ferry's rate limit, not refused.
        let (s, diags) = try_read("nginx.ingress.kubernetes.io/limit-rps: \"5\"", true);
        assert!(s.is_some() && errors(&diags).is_empty(), "{diags:?}");
    }

    #[test]
    fn key_table_matches_the_nginx_translation() {
        // Each nginx name listed in KEYS is read by `get` as its ferry key (CORS needs enable-cors).
        for (key, names) in KEYS {
            for name in *names {
                let mut map = BTreeMap::from([(format!("{NGINX}enable-cors"), "true".to_string())]);
                map.insert(format!("{NGINX}{name}"), "true".to_string());
                let found = Annotations { map: &map, nginx: true }.get(key);
                let found = found.unwrap_or_else(|| panic!("{name} is not read as {key}"));
                assert_eq!(found.field, field(&format!("{NGINX}{name}")), "{key}");
                assert!(Annotations { map: &map, nginx: false }.get(key).is_none(), "{name} without the flag");
            }
        }
    }

    #[test]
    fn protection_values_that_do_not_parse_refuse_the_ingress() {
        let cases = [
            (
                "ferry.dev/rate-limit: \"10 per second\"",
                false,
                "ferry.dev/rate-limit",
                "\"10 per second\" is not a rate",
            ),
            ("ferry.dev/rate-limit: 0r/s", false, "ferry.dev/rate-limit", "\"0r/s\" is not a rate"),
            ("ferry.dev/rate-limit: \"10r/s burst=0\"", false, "ferry.dev/rate-limit", "is not a rate"),
            ("ferry.dev/max-body-size: 8 MB", false, "ferry.dev/max-body-size", "\"8 MB\" is not a size"),
            ("ferry.dev/max-body-size: 1.5m", false, "ferry.dev/max-body-size", "\"1.5m\" is not a size"),
            ("ferry.dev/max-body-size: \"-1\"", false, "ferry.dev/max-body-size", "\"-1\" is not a size"),
            ("ferry.dev/canary: \"yes\"", false, "ferry.dev/canary", "\"yes\" is not true or false"),
            (
                "nginx.ingress.kubernetes.io/limit-rps: ten",
                true,
                "nginx.ingress.kubernetes.io/limit-rps",
                "\"ten\" is not a number of requests",
            ),
            (
                "nginx.ingress.kubernetes.io/limit-rps: \"10r/s\"",
                true,
                "nginx.ingress.kubernetes.io/limit-rps",
                "\"10r/s\" is not a number of requests",
            ),
            (
                "nginx.ingress.kubernetes.io/limit-rpm: \"5.5\"",
                true,
                "nginx.ingress.kubernetes.io/limit-rpm",
                "\"5.5\" is not a number of requests",
            ),
            (
                "nginx.ingress.kubernetes.io/proxy-body-size: 8mb",
                true,
                "nginx.ingress.kubernetes.io/proxy-body-size",
                "\"8mb\" is not a size",
            ),
            (
                "nginx.ingress.kubernetes.io/canary: \"on\"",
                true,
                "nginx.ingress.kubernetes.io/canary",
                "not true or false",
            ),
        ];
        for (annotations, nginx, key, why) in cases {
            let (s, diags) = try_read(annotations, nginx);
            assert!(s.is_none(), "{annotations}: served");
            let errors = errors(&diags);
            assert_eq!(errors.len(), 1, "{annotations}: {diags:?}");
            assert_eq!(errors[0].0, format!("metadata.annotations[{key}]"));
            assert!(errors[0].1.contains(why) && errors[0].1.ends_with(NOT_SERVED), "{annotations}: {}", errors[0].1);
        }
        // An unparsable canary flag sorts with the canaries; `false` is a main route.
        assert!(is_canary(&ingress("ferry.dev/canary: \"yes\""), false));
        assert!(!is_canary(&ingress("ferry.dev/canary: \"false\""), false));
        assert!(is_canary(&ingress("ferry.dev/canary: \"true\""), false));
        // What is served: explicit "no limit" values, nginx values without the flag, a ferry key
        // over a broken nginx one.
        let (s, diags) = read(
            "ferry.dev/max-body-size: \"0\", nginx.ingress.kubernetes.io/limit-rps: \"0\", \
             nginx.ingress.kubernetes.io/limit-rpm: \"0\"",
            true,
        );
        assert!(s.options.max_body.is_none() && s.options.rate_limit.is_none() && diags.is_empty(), "{diags:?}");
        let (s, diags) =
            read("nginx.ingress.kubernetes.io/limit-rps: \"0\", nginx.ingress.kubernetes.io/limit-rpm: \"120\"", true);
        assert_eq!(s.options.rate_limit.map(|l| l.rate().per_second), Some(2.0), "{diags:?}");
        let (s, diags) =
            read("nginx.ingress.kubernetes.io/proxy-body-size: 8mb, nginx.ingress.kubernetes.io/limit-rps: ten", false);
        assert!(s.options.max_body.is_none() && errors(&diags).is_empty(), "{diags:?}");
        let (s, diags) = read("ferry.dev/max-body-size: 1k, nginx.ingress.kubernetes.io/proxy-body-size: bogus", true);
        assert!(s.options.max_body == Some(1024) && diags.is_empty(), "{diags:?}");
        // Settings that protect nothing keep their default with a warning.
        let (s, diags) = read(
            "ferry.dev/connect-timeout: soon, ferry.dev/retries: \"9\", ferry.dev/ssl-redirect: maybe, \
             ferry.dev/backend-protocol: spdy",
            false,
        );
        assert!(s.options.connect.is_none() && s.options.retries == 0 && s.ssl_redirect);
        assert_eq!(diags.len(), 4, "{diags:?}");
        assert!(errors(&diags).is_empty(), "{diags:?}");
    }

    #[test]
    fn header_values_with_control_characters_are_errors() {
        const ORIGIN: &str = "ferry.dev/cors-allow-origin: \"https://a.test\", ";
        // CORS: an error at the annotation and CORS off altogether; the Ingress is served.
        let cors_off = [
            (format!("{ORIGIN}ferry.dev/cors-allow-headers: \"X-A\\r\\nX-B\""), false, CORS_ALLOW_HEADERS, "control character '\\r'"),
            (format!("{ORIGIN}ferry.dev/cors-allow-headers: \"X-A,\\nX-B\""), false, CORS_ALLOW_HEADERS, "control character '\\n'"),
            (format!("{ORIGIN}ferry.dev/cors-allow-methods: \"GET\\u0000\""), false, CORS_ALLOW_METHODS, "control character '\\0'"),
            (format!("{ORIGIN}ferry.dev/cors-expose-headers: \"X-A\\tX-B\""), false, CORS_EXPOSE_HEADERS, "control character '\\t'"),
            (format!("{ORIGIN}ferry.dev/cors-allow-methods: \"GET, P UT\""), false, CORS_ALLOW_METHODS, "\"P UT\" is not a method"),
            (format!("{ORIGIN}ferry.dev/cors-allow-headers: \"X-A, X:B\""), false, CORS_ALLOW_HEADERS, "\"X:B\" is not a method or header name"),
            (format!("{ORIGIN}ferry.dev/cors-expose-headers: \"Ünicode\""), false, CORS_EXPOSE_HEADERS, "not a method or header name"),
            ("ferry.dev/cors-allow-origin: \"https://a.test\\r\\nX-Injected: 1\"".into(), false, CORS_ALLOW_ORIGIN, "control character '\\r'"),
            (
                "nginx.ingress.kubernetes.io/enable-cors: \"true\", nginx.ingress.kubernetes.io/cors-allow-headers: \"X-A\\r\\nX-B\"".into(),
                true,
                "nginx.ingress.kubernetes.io/cors-allow-headers",
                "control character '\\r'",
            ),
        ];
        for (annotations, nginx, key, why) in &cors_off {
            let (s, diags) = read(annotations, *nginx);
            assert!(s.options.cors.is_none(), "{annotations}: CORS on");
            let errors = errors(&diags);
            assert_eq!(errors.len(), 1, "{annotations}: {diags:?}");
            assert_eq!(errors[0].0, format!("metadata.annotations[{key}]"), "{annotations}");
            assert!(
                errors[0].1.contains(why) && errors[0].1.ends_with("CORS stays off"),
                "{annotations}: {}",
                errors[0].1
            );
        }
        // Good lists are written back cleanly; a value ending in a newline (a YAML block) is fine.
        let (s, diags) = read(
            &format!("{ORIGIN}ferry.dev/cors-allow-headers: \" X-A ,X-B,, \", ferry.dev/cors-allow-methods: \"GET,PUT\\n\", ferry.dev/cors-expose-headers: \"*\""),
            false,
        );
        let cors = s.options.cors.unwrap_or_else(|| panic!("{diags:?}"));
        assert_eq!(
            (cors.headers.as_str(), cors.methods.as_str(), cors.expose.as_deref()),
            ("X-A, X-B", "GET, PUT", Some("*"))
        );
        assert!(diags.is_empty(), "{diags:?}");

        // Other values that become headers: an error at the annotation, the value not used.
        let (s, diags) = read(
            "ferry.dev/canary: \"true\", ferry.dev/canary-header: X-Canary, ferry.dev/canary-header-value: \"on\\r\\nX: y\"",
            false,
        );
        let canary = s.canary.unwrap();
        assert!(canary.header.is_none() && canary.header_value.is_none(), "no header rule: {canary:?}");
        assert_eq!(errors(&diags)[0].0, "metadata.annotations[ferry.dev/canary-header-value]");
        let (s, diags) = read("ferry.dev/canary: \"true\", ferry.dev/canary-header: \"X-Canary\\n\\rX\"", false);
        assert!(s.canary.unwrap().header.is_none());
        assert_eq!(errors(&diags)[0].0, "metadata.annotations[ferry.dev/canary-header]");
        let (s, diags) =
            read("ferry.dev/affinity: cookie, ferry.dev/affinity-cookie-name: \"sticky\\r\\nSet-Cookie: x\"", false);
        assert_eq!(s.options.affinity_cookie.unwrap().name, "ferry-affinity");
        assert_eq!(errors(&diags)[0].0, "metadata.annotations[ferry.dev/affinity-cookie-name]");
        for bad in
            ["ferry.dev/redirect: \"/new\\r\\nSet-Cookie: x=1\"", "ferry.dev/redirect: \"https://a.test/\\u0000\""]
        {
            let (s, diags) = read(bad, false);
            assert!(s.options.redirect.is_none(), "{bad}");
            assert!(errors(&diags)[0].1.contains("control character"), "{bad}: {diags:?}");
        }
    }

    #[test]
    fn rewrite_and_app_root_must_be_routable_paths() {
        for (annotations, key, why) in [
            (
                "ferry.dev/rewrite-target: /a/../b",
                REWRITE_TARGET,
                "dot-segment in path, which ferry refuses in requests; not rewritten",
            ),
            (
                "ferry.dev/rewrite-target: /v2%2fadmin",
                REWRITE_TARGET,
                "\"/v2%2fadmin\": encoded slash or backslash in path, which ferry refuses in requests; not rewritten",
            ),
            (
                "ferry.dev/app-root: /app/%2e%2e/admin",
                APP_ROOT,
                "dot-segment in path, which ferry refuses in requests; not redirected",
            ),
        ] {
            let (s, diags) = read(annotations, false);
            assert!(s.rewrite_target.is_none() && s.options.app_root.is_none(), "{annotations}");
            let errors = errors(&diags);
            assert_eq!(errors.len(), 1, "{annotations}: {diags:?}");
            assert_eq!(errors[0].0, field(key));
            assert!(errors[0].1.ends_with(why), "{annotations}: {}", errors[0].1);
        }
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

    proptest::proptest! {
        /// Any annotations, with values near and far from valid ones: reading them never panics,
        /// gives the same answer twice, and refuses an Ingress only with an error that says so
        /// (located at an annotation); a served Ingress's limits are the ones it asked for.
        #[test]
        fn annotation_parsers_hold_on_any_value(
            entries in proptest::collection::vec((0usize..64, value_strategy()), 0..6),
            nginx in proptest::bool::ANY,
        ) {
            let names: Vec<String> = KEYS.iter().map(|(k, _)| k.to_string())
                .chain(KEYS.iter().flat_map(|(_, n)| n.iter().map(|n| format!("{NGINX}{n}"))))
                .chain(["ferry.dev/retires", "nginx.ingress.kubernetes.io/auth-url", "example.com/x"].map(String::from))
                .collect();
            let map: BTreeMap<String, String> =
                entries.into_iter().map(|(i, v)| (names[i % names.len()].clone(), v)).collect();
            let ing = Ingress {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    annotations: Some(map.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let obj = ObjectRef::new("Ingress", "default", "i");
            let route: Arc<str> = Arc::from("default/i");
            let (mut d1, mut d2) = (Vec::new(), Vec::new());
            let rt = Runtime::default();
            let first = settings(&ing, &obj, &route, nginx, &rt, &mut d1);
            let second = settings(&ing, &obj, &route, nginx, &rt, &mut d2);
            proptest::prop_assert_eq!(&d1, &d2);
            proptest::prop_assert_eq!(first.is_some(), second.is_some());
            for d in &d1 {
                proptest::prop_assert!(d.field.starts_with("metadata.annotations["), "{:?}", d);
            }
            match first {
                None => proptest::prop_assert!(
                    errors(&d1).iter().any(|(_, why)| why.ends_with(NOT_SERVED)),
                    "refused without saying so: {:?} {:?}", map, d1
                ),
                Some(s) => {
                    if let Some(v) = map.get(MAX_BODY) {
                        proptest::prop_assert_eq!(s.options.max_body.unwrap_or(0), parse_size(v).unwrap_or(0));
                    }
                    if let Some(v) = map.get(RATE_LIMIT) {
                        proptest::prop_assert_eq!(
                            s.options.rate_limit.map(|l| l.rate().per_second), parse_rate(v).map(|r| r.per_second));
                    }
                }
            }
        }
    }

    /// Values around the valid ones: numbers, units, durations, lists, booleans, control bytes.
    fn value_strategy() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[0-9]{1,12}(r/s|r/m|k|m|g|ms|s|m|h)?( burst=[0-9]{1,6})?",
            "(true|false|cookie|h2c|https|http|grpc|yes|on|0|-1|/app|/|//x|/\\$1|\\*)",
            "(10\\.0\\.0\\.0/8|::1|[0-9.:/]{0,20})(, ?[0-9a-f.:/]{0,18}){0,3}",
            "https?://[a-z.*]{0,12}(:[0-9]{1,6})?(/[a-z$]{0,6})?",
            any::<String>(),
            "[ -~\\t\\r\\n\\x00]{0,24}",
        ]
    }
}
