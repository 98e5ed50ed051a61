//! Ingress and Service annotations: ferry's typed `ferry.dev/*` keys (never snippets or
//! templates), and with `--nginx-annotations` the subset of `nginx.ingress.kubernetes.io/*` that
//! maps onto them.
//!
//! [`ANNOTATIONS`] is the one registry: every key ferry reads, the object it goes on, the values
//! it takes, the nginx annotations read as it and how their values translate, and its reader.
//! Unknown keys are checked against it, nginx's supported annotations are told from unsupported
//! ones by it, suggestions are drawn from it, and the README's tables are rendered from it.
//!
//! Every value is validated; a bad value is a diagnostic naming the annotation. ferry owns the
//! `ferry.dev/` prefix, so a key it does not know is a typo whose setting would silently be
//! missing: such an Ingress is not served at all (fail closed), as is one whose rate limit, body
//! size limit or canary flag does not parse. A source allow-list without a valid entry refuses
//! every client; a CORS setting with a bad value stays off; a value that would become a header
//! with a control character in it is an error and is not used. Other bad values (timeouts,
//! retries…) are warnings and the setting keeps its default, and a key that is part of a setting
//! whose main key is missing (a redirect code without a redirect) is a warning. Without
//! `--nginx-annotations` an nginx annotation is reported as ignored; with it, one without a ferry
//! equivalent is reported as unsupported. Neither is ever dropped silently.

mod read;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::snapshot::Svc;
use gateway::{RouteOptions, Runtime, UpstreamProtocol};
use k8s_openapi::api::networking::v1::Ingress;

use crate::diagnostic::{Diagnostic, ObjectRef};
pub(crate) use read::parse_duration;
use read::{Read, Reader};

/// The prefix ferry owns: every key under it is one of [`ANNOTATIONS`].
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
pub const AFFINITY_COOKIE_NAME: &str = "ferry.dev/affinity-cookie-name";
pub const AFFINITY_COOKIE_MAX_AGE: &str = "ferry.dev/affinity-cookie-max-age";
pub const CANARY: &str = "ferry.dev/canary";
pub const CANARY_WEIGHT: &str = "ferry.dev/canary-weight";
pub const CANARY_HEADER: &str = "ferry.dev/canary-header";
pub const CANARY_HEADER_VALUE: &str = "ferry.dev/canary-header-value";
/// On a Service: its load-balancing policy.
pub const LOAD_BALANCER: &str = "ferry.dev/load-balancer";

/// The object an annotation goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Ingress,
    Service,
}

/// An `nginx.ingress.kubernetes.io/*` annotation read as a ferry key with `--nginx-annotations`.
pub struct Alias {
    /// Its name after nginx's prefix.
    pub name: &'static str,
    /// Its value in ferry's syntax, given every annotation of the object; `None` when it sets
    /// nothing (the key's next alias is tried).
    translate: fn(&str, &BTreeMap<String, String>) -> Option<String>,
}

/// One annotation ferry reads.
pub struct Annotation {
    pub key: &'static str,
    pub on: On,
    /// The values it takes (Markdown, as the README shows them).
    pub values: &'static str,
    /// What it does (Markdown).
    pub effect: &'static str,
    /// The key of the setting this one is part of; alone it does nothing (and is reported).
    pub part_of: Option<&'static str>,
    /// The nginx annotations read as it, first present wins.
    pub nginx: &'static [Alias],
    /// How the nginx annotations differ (Markdown).
    pub nginx_note: &'static str,
    /// Reads an Ingress key's value; a Service's keys are read where its backends are built.
    read: Option<Read>,
}

const fn ingress(key: &'static str, read: Read, values: &'static str, effect: &'static str) -> Annotation {
    Annotation { key, on: On::Ingress, values, effect, part_of: None, nginx: &[], nginx_note: "", read: Some(read) }
}

const fn service(key: &'static str, values: &'static str, effect: &'static str) -> Annotation {
    Annotation { key, on: On::Service, values, effect, part_of: None, nginx: &[], nginx_note: "", read: None }
}

impl Annotation {
    const fn part_of(mut self, key: &'static str) -> Self {
        self.part_of = Some(key);
        self
    }

    const fn nginx(mut self, aliases: &'static [Alias], note: &'static str) -> Self {
        self.nginx = aliases;
        self.nginx_note = note;
        self
    }
}

/// An nginx annotation whose value is ferry's.
const fn same(name: &'static str) -> Alias {
    Alias { name, translate: |v, _| Some(v.to_string()) }
}

const fn alias(name: &'static str, translate: fn(&str, &BTreeMap<String, String>) -> Option<String>) -> Alias {
    Alias { name, translate }
}

/// A whole number of requests per `unit` as a ferry rate; 0 is no limit, as in ingress-nginx.
/// Anything else becomes a value that does not parse as a rate (which refuses the Ingress).
fn nginx_rate(v: &str, unit: char) -> Option<String> {
    match v.trim().parse::<u32>() {
        Ok(0) => None,
        // nginx allows a burst of five times the rate by default.
        Ok(n) if unit == 's' => Some(format!("{n}r/s burst={}", n.saturating_mul(5))),
        Ok(n) => Some(format!("{n}r/m")),
        Err(_) => Some(String::new()),
    }
}

/// ingress-nginx turns CORS on with `enable-cors: "true"` only.
fn nginx_cors(map: &BTreeMap<String, String>) -> bool {
    map.get(&format!("{NGINX}enable-cors")).is_some_and(|v| v.trim() == "true")
}

/// Every annotation ferry reads, in the order an Ingress's are read (protections first, so their
/// diagnostics lead).
pub static ANNOTATIONS: &[Annotation] = &[
    ingress(RATE_LIMIT, read::rate_limit, "`10r/s`, `600r/m`, `\"10r/s burst=20\"`", "429 beyond, per client IP; anything else refuses the Ingress")
        .nginx(
            &[alias("limit-rps", |v, _| nginx_rate(v, 's')), alias("limit-rpm", |v, _| nginx_rate(v, 'm'))],
            "whole numbers; `0` is no limit, as in ingress-nginx; anything else refuses the Ingress; burst 5× the per-second rate, as ingress-nginx's default multiplier",
        ),
    ingress(MAX_BODY, read::max_body, "`512k`, `8m`, `1g`, bytes, `0` (no limit)", "413 beyond; anything else refuses the Ingress")
        .nginx(&[same("proxy-body-size")], "a value that does not parse refuses the Ingress"),
    ingress(CANARY, read::canary, "`true`, `false` (anything else refuses the Ingress)", "this Ingress is a canary: each of its paths attaches to the route another Ingress serves for the same host, pathType and path (no such route: error, skipped); its `tls` and `defaultBackend` are not used")
        .nginx(&[same("canary")], "`canary-by-cookie` and `canary-weight-total` unsupported"),
    ingress(ALLOW_SOURCES, read::allow_sources, "CIDRs and addresses, comma-separated", "403 for other clients; with no valid entry, 403 for all")
        .nginx(&[same("allowlist-source-range"), same("whitelist-source-range")], ""),
    ingress(CONNECT_TIMEOUT, read::connect_timeout, "`500ms`, `30s`, `2m`, `1h`, seconds", "upstream connect timeout")
        .nginx(&[same("proxy-connect-timeout")], "seconds"),
    ingress(READ_TIMEOUT, read::read_timeout, "`500ms`, `30s`, `2m`, `1h`, seconds", "upstream read timeout")
        .nginx(&[same("proxy-read-timeout")], "seconds"),
    ingress(RETRIES, read::retries, "`0`–`5`", "retries of 502/503/504 for idempotent requests without a body, within a budget"),
    ingress(SSL_REDIRECT, read::ssl_redirect, "`true` (default), `false`", "308 from HTTP to HTTPS for the Ingress's TLS hosts (only while a certificate for the host is loaded)")
        .nginx(&[same("ssl-redirect")], ""),
    ingress(FORCE_SSL_REDIRECT, read::force_ssl_redirect, "`true`, `false` (default)", "308 to HTTPS for every host of the Ingress, TLS section or not (the certificate comes from another Ingress or `--default-tls-secret`); wins over `ssl-redirect: \"false\"`")
        .nginx(&[same("force-ssl-redirect")], "ferry does not read `X-Forwarded-Proto` for it: put TLS on ferry, not on a load balancer in front"),
    // ingress-nginx lets a temporal redirect win over a permanent one.
    ingress(REDIRECT, read::redirect, "an `http(s)://` URL or a path starting with `/`", "every request of the Ingress's paths is answered with a redirect to this location, exactly as written (the request's path is not appended; `$` variables are refused); the backend is not used")
        .nginx(&[same("temporal-redirect"), same("permanent-redirect")], "`temporal-redirect` wins, as in ingress-nginx; nginx variables such as `$request_uri` in the URL are refused (ferry sends the location as written)"),
    ingress(REDIRECT_CODE, read::redirect_code, "`301` (default), `302`, `303`, `307`, `308`", "status of `ferry.dev/redirect`")
        .part_of(REDIRECT)
        .nginx(&[alias("temporal-redirect", |_, _| Some("302".into())), same("permanent-redirect-code")], "302 for `temporal-redirect`"),
    ingress(APP_ROOT, read::app_root, "a path on this host other than `/` (not `//…`, no `$` variables)", "a request for `/` (any query) is answered with 302 to this path; all others are proxied")
        .nginx(&[same("app-root")], ""),
    ingress(REWRITE_TARGET, read::rewrite_target, "a path, e.g. `/` or `/v2`", "the matched prefix (or exact path) is replaced upstream: `/api/items?q` with path `/api` → `/v2/items?q`; regex captures (`$1`) are refused")
        .nginx(&[same("rewrite-target")], "prefix rewrites only; targets with `$1` captures are refused"),
    ingress(CORS_ALLOW_ORIGIN, read::cors_allow_origin, "`*` or origins (`https://app.example.com`), comma-separated", "turns CORS on: preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) are answered by ferry with 204; responses to allowed origins get `Access-Control-Allow-Origin` (+ `Vary: Origin`); an invalid list turns nothing on")
        .nginx(
            &[
                alias("cors-allow-origin", |v, m| nginx_cors(m).then(|| v.to_string())),
                alias("enable-cors", |_, m| nginx_cors(m).then(|| "*".to_string())),
            ],
            "CORS only with `enable-cors: \"true\"`; the origin defaults to `*`",
        ),
    ingress(CORS_ALLOW_METHODS, read::cors_allow_methods, "HTTP methods, comma-separated", "default `GET, PUT, POST, DELETE, PATCH, OPTIONS`; sent as `A, B`; a bad entry or a control character leaves CORS off")
        .part_of(CORS_ALLOW_ORIGIN)
        .nginx(&[same("cors-allow-methods")], ""),
    ingress(CORS_ALLOW_HEADERS, read::cors_allow_headers, "header names, comma-separated", "default: the common request headers; sent as `A, B`; a bad entry or a control character leaves CORS off")
        .part_of(CORS_ALLOW_ORIGIN)
        .nginx(&[same("cors-allow-headers")], ""),
    ingress(CORS_EXPOSE_HEADERS, read::cors_expose_headers, "header names, comma-separated", "`Access-Control-Expose-Headers` on responses")
        .part_of(CORS_ALLOW_ORIGIN)
        .nginx(&[same("cors-expose-headers")], ""),
    ingress(CORS_ALLOW_CREDENTIALS, read::cors_allow_credentials, "`true`, `false` (default)", "with `*`, the request's origin is echoed (browsers refuse `*` with credentials)")
        .part_of(CORS_ALLOW_ORIGIN)
        .nginx(&[same("cors-allow-credentials")], "ingress-nginx defaults it to true, ferry to false"),
    ingress(CORS_MAX_AGE, read::cors_max_age, "seconds (default 86400)", "preflight cache time")
        .part_of(CORS_ALLOW_ORIGIN)
        .nginx(&[same("cors-max-age")], ""),
    ingress(AFFINITY, read::affinity, "`cookie`", "pins each client to an endpoint with a cookie ferry sets (`HttpOnly; SameSite=Lax; Path=/`, `Secure` over TLS); the value is an opaque endpoint token, the same in every replica; a cookie naming a gone, ejected or failing endpoint is replaced")
        .nginx(&[same("affinity")], "ingress-nginx's cookie values differ, so clients are re-pinned once"),
    // ingress-nginx's default cookie name, so existing cookies keep meaning something.
    ingress(AFFINITY_COOKIE_NAME, read::affinity_cookie_name, "letters, digits, `-`, `_`, `.` (default `ferry-affinity`)", "name of the affinity cookie")
        .part_of(AFFINITY)
        .nginx(&[same("session-cookie-name"), alias("affinity", |_, _| Some("INGRESSCOOKIE".into()))], "defaults to `INGRESSCOOKIE`, as in ingress-nginx"),
    ingress(AFFINITY_COOKIE_MAX_AGE, read::affinity_cookie_max_age, "seconds (default: a session cookie)", "`Max-Age` of the affinity cookie")
        .part_of(AFFINITY)
        .nginx(&[same("session-cookie-max-age")], ""),
    ingress(CANARY_WEIGHT, read::canary_weight, "`0`–`100`", "percent of the other requests sent to the canary (its own timeouts, limits and metrics route label apply)")
        .part_of(CANARY)
        .nginx(&[same("canary-weight")], ""),
    ingress(CANARY_HEADER, read::canary_header, "a header name", "with the header `always` (or exactly `ferry.dev/canary-header-value`) → canary, `never` → main")
        .part_of(CANARY)
        .nginx(&[same("canary-by-header")], ""),
    ingress(CANARY_HEADER_VALUE, read::canary_header_value, "a header value", "the value of `ferry.dev/canary-header` that chooses the canary")
        .part_of(CANARY)
        .nginx(&[same("canary-by-header-value")], ""),
    ingress(BACKEND_PROTOCOL, read::backend_protocol, "`http`, `https`, `h2c` (`grpc`)", "upstream protocol when the Service port has no `appProtocol`")
        .nginx(
            &[alias("backend-protocol", |v, _| {
                Some(match v.to_ascii_uppercase().as_str() {
                    "HTTP" => "http".to_string(),
                    "HTTPS" => "https".to_string(),
                    "GRPC" | "H2C" => "h2c".to_string(),
                    _ => v.to_string(),
                })
            })],
            "`HTTP`, `HTTPS`, `GRPC`/`H2C` (→ h2c); `GRPCS`, `FCGI`, `AUTO_HTTP` unsupported",
        ),
    service(LOAD_BALANCER, "see \"L4 and Service semantics\"", "endpoint choice; a bad value warns and keeps round-robin"),
    service(crate::gateway_service::GATEWAY_ANNOTATION, "`namespace/name`", "set by ferry on the Service it makes for a Gateway"),
];

/// The registry entry of `key`, one of the constants above.
fn annotation(key: &str) -> &'static Annotation {
    ANNOTATIONS.iter().find(|a| a.key == key).unwrap_or_else(|| panic!("{key} is not in ANNOTATIONS"))
}

/// The end of the reason of every diagnostic that refuses a whole Ingress.
const NOT_SERVED: &str = "the Ingress is not served until it is fixed";

const NGINX: &str = "nginx.ingress.kubernetes.io/";

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
    Annotations { map, nginx }.get(annotation(CANARY)).is_some_and(|f| f.value.trim() != "false")
}

/// One annotation value and the field it came from (for diagnostics).
struct Found {
    /// The value in ferry's syntax (an nginx value translated).
    value: String,
    /// The value as the annotation writes it.
    written: String,
    field: String,
}

/// An Ingress's annotations.
struct Annotations<'a> {
    map: &'a BTreeMap<String, String>,
    nginx: bool,
}

impl Annotations<'_> {
    /// The value for a key: its own annotation, else (with `--nginx-annotations`) the first of
    /// its nginx aliases that sets something, translated.
    fn get(&self, a: &Annotation) -> Option<Found> {
        if let Some(v) = self.map.get(a.key) {
            return Some(Found { value: v.clone(), written: v.clone(), field: field(a.key) });
        }
        if !self.nginx {
            return None;
        }
        a.nginx.iter().find_map(|alias| {
            let key = format!("{NGINX}{}", alias.name);
            let written = self.map.get(&key)?;
            let value = (alias.translate)(written, self.map)?;
            Some(Found { value, written: written.clone(), field: field(&key) })
        })
    }

    /// The annotations that would set `key`, for a diagnostic.
    fn names(&self, key: &str) -> String {
        let a = annotation(key);
        let mut names = a.key.to_string();
        if self.nginx && !a.nginx.is_empty() {
            let aliases: Vec<String> = a.nginx.iter().map(|al| format!("{NGINX}{}", al.name)).collect();
            names = format!("{names} (or {})", aliases.join(", "));
        }
        names
    }

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
            } else if nginx_supported(name) {
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

    /// `ferry.dev/*` keys that are not an Ingress's: each is an error naming the closest known
    /// key. Returns whether every key is known.
    fn check_keys(&self, obj: &ObjectRef, diagnostics: &mut Vec<Diagnostic>) -> bool {
        let mut known = true;
        for key in self.map.keys().filter(|k| k.starts_with(PREFIX)) {
            if let Some(why) = unknown(key, On::Ingress) {
                known = false;
                diagnostics.push(Diagnostic::error(obj, field(key), format!("{why}; {NOT_SERVED}")));
            }
        }
        known
    }
}

/// Whether ferry reads the nginx annotation `name` (after nginx's prefix).
fn nginx_supported(name: &str) -> bool {
    ANNOTATIONS.iter().any(|a| a.nginx.iter().any(|alias| alias.name == name))
}

/// Why `key` (under ferry's prefix) is not a key of an `on` object, with a suggestion.
fn unknown(key: &str, on: On) -> Option<String> {
    if ANNOTATIONS.iter().any(|a| a.key == key && a.on == on) {
        return None;
    }
    let hint = match suggest(key, on) {
        Some(Suggestion::Key(k)) => format!(" (did you mean {k}?)"),
        Some(Suggestion::On(On::Service)) => " (an annotation of the Service, not of the Ingress)".to_string(),
        Some(Suggestion::On(On::Ingress)) => " (an annotation of the Ingress, not of the Service)".to_string(),
        None => String::new(),
    };
    Some(format!("unknown annotation {key}{hint}"))
}

/// The `ferry.dev/*` annotations of a Service that ferry does not know, as warnings (a Service
/// setting is never a protection: the Service is still used).
pub fn service_warnings(svc: &Svc) -> Vec<String> {
    let name = svc.name.as_deref().unwrap_or("");
    svc.annotations
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(PREFIX))
        .filter_map(|k| unknown(k, On::Service))
        .map(|why| format!("Service {name}: {why}; ignored"))
        .collect()
}

/// ingress-nginx annotations (after its prefix) that restrict who is served or how much:
/// authentication, client certificates, deny lists, connection and rate limits, WAF rules.
/// ferry supports none of these but `limit-rps`/`limit-rpm` (in [`ANNOTATIONS`]).
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
    /// A key of the other kind of object.
    On(On),
}

fn suggest(key: &str, on: On) -> Option<Suggestion> {
    let name = key.strip_prefix(PREFIX).unwrap_or(key).to_ascii_lowercase();
    if let Some(a) = ANNOTATIONS.iter().find(|a| a.key[PREFIX.len()..] == name && a.on != on) {
        return Some(Suggestion::On(a.on));
    }
    let keys = || ANNOTATIONS.iter().filter(move |a| a.on == on);
    // An ingress-nginx name under ferry's prefix (`ferry.dev/proxy-body-size`).
    if let Some(a) = keys().find(|a| a.nginx.iter().any(|alias| alias.name == name)) {
        return Some(Suggestion::Key(a.key));
    }
    // The closest key within a few edits (about one in five characters); the first in the
    // registry on a tie, so the suggestion is stable.
    keys()
        .map(|a| (edit_distance(&name, &a.key[PREFIX.len()..]), a.key))
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

/// Reads every annotation of `ing` that ferry understands, through the registry. `None` when
/// the Ingress must not be served (an unknown `ferry.dev/*` key, or a protection setting that
/// does not parse); every reason is a diagnostic, all of them reported at once.
pub fn settings(
    ing: &Ingress,
    obj: &ObjectRef,
    route_name: &Arc<str>,
    nginx: bool,
    runtime: &Runtime,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<IngressSettings> {
    let Some(map) = &ing.metadata.annotations else { return Some(IngressSettings::default()) };
    let a = Annotations { map, nginx };
    let nginx_servable = a.report_nginx(obj, diagnostics);
    let known = a.check_keys(obj, diagnostics);
    let mut r = Reader::new(obj, route_name, runtime, diagnostics);
    for entry in ANNOTATIONS {
        let (Some(read), Some(found)) = (entry.read, a.get(entry)) else { continue };
        if let Some(whole) = entry.part_of.filter(|k| a.get(annotation(k)).is_none()) {
            r.warn(&found, format!("{} is not set, so this has no effect", a.names(whole)));
            continue;
        }
        read(&mut r, found);
    }
    r.served &= known && nginx_servable;
    r.finish()
}

/// The README's table of annotations, rendered from the registry.
pub fn markdown_table() -> String {
    let mut out = String::from("| annotation | values | effect |\n|---|---|---|\n");
    for a in ANNOTATIONS {
        let on = if a.on == On::Service { " (Service)" } else { "" };
        out += &format!("| `{}`{on} | {} | {} |\n", a.key, a.values, a.effect);
    }
    out
}

/// The README's table of the nginx annotations ferry reads, rendered from the registry.
pub fn nginx_markdown_table() -> String {
    let mut out = String::from("| ingress-nginx | ferry | notes |\n|---|---|---|\n");
    for a in ANNOTATIONS.iter().filter(|a| !a.nginx.is_empty()) {
        let names: Vec<String> = a.nginx.iter().map(|alias| format!("`{}`", alias.name)).collect();
        out += &format!("| {} | `{}` | {} |\n", names.join(", "), &a.key[PREFIX.len()..], a.nginx_note);
    }
    out
}
