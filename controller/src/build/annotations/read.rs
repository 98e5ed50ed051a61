//! The readers of the registry: each takes one annotation's value into the settings being built
//! (or into the parts of a setting several keys make), with a located diagnostic for a bad value.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway::cors::Cors;
use gateway::limits::Rate;
use gateway::table::{AffinityCookie, Redirect};
use gateway::{RouteOptions, Runtime, UpstreamProtocol};

use super::{CanaryRule, Found, IngressSettings, NOT_SERVED};
use crate::diagnostic::{Diagnostic, ObjectRef};

const CORS_DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const CORS_DEFAULT_HEADERS: &str =
    "DNT, Keep-Alive, User-Agent, X-Requested-With, If-Modified-Since, Cache-Control, Content-Type, Range, Authorization";
const CORS_DEFAULT_MAX_AGE: u32 = 86_400;
const DEFAULT_COOKIE: &str = "ferry-affinity";

/// Most retries of a 5xx answer per request.
pub(super) const MAX_RETRIES: u8 = 5;
/// Longest per-route timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Takes one annotation's value.
pub(super) type Read = fn(&mut Reader<'_>, Found);

/// The settings of one Ingress while its annotations are read, in registry order.
pub(super) struct Reader<'a> {
    obj: &'a ObjectRef,
    route_name: &'a Arc<str>,
    runtime: &'a Runtime,
    diagnostics: &'a mut Vec<Diagnostic>,
    /// Cleared by a value that refuses the Ingress.
    pub(super) served: bool,
    out: IngressSettings,
    // Settings made of several keys, put together by `finish`.
    redirect: Option<String>,
    redirect_code: u16,
    cors: CorsParts,
    affinity_cookie: bool,
    cookie_name: Option<String>,
    cookie_max_age: Option<u64>,
    canary: bool,
    canary_weight: u8,
    canary_header: Option<http::HeaderName>,
    /// `Some(None)`: a value that cannot be sent, so no header rule at all.
    canary_header_value: Option<Option<String>>,
}

/// CORS as its keys are read; `valid` is cleared by any bad value (CORS then stays off).
struct CorsParts {
    /// The allowed origins (empty: any), once the origin key is read.
    origins: Option<Vec<String>>,
    valid: bool,
    methods: Option<String>,
    headers: Option<String>,
    expose: Option<String>,
    credentials: bool,
    max_age: u32,
}

impl<'a> Reader<'a> {
    pub(super) fn new(
        obj: &'a ObjectRef,
        route_name: &'a Arc<str>,
        runtime: &'a Runtime,
        diagnostics: &'a mut Vec<Diagnostic>,
    ) -> Self {
        Reader {
            obj,
            route_name,
            runtime,
            diagnostics,
            served: true,
            out: IngressSettings::default(),
            redirect: None,
            redirect_code: 301,
            cors: CorsParts {
                origins: None,
                valid: true,
                methods: None,
                headers: None,
                expose: None,
                credentials: false,
                max_age: CORS_DEFAULT_MAX_AGE,
            },
            affinity_cookie: false,
            cookie_name: None,
            cookie_max_age: None,
            canary: false,
            canary_weight: 0,
            canary_header: None,
            canary_header_value: None,
        }
    }

    pub(super) fn warn(&mut self, f: &Found, why: impl Into<String>) {
        self.diagnostics.push(Diagnostic::warning(self.obj, f.field.clone(), why));
    }

    fn error(&mut self, f: &Found, why: impl Into<String>) {
        self.diagnostics.push(Diagnostic::error(self.obj, f.field.clone(), why));
    }

    /// An error that keeps the whole Ingress from being served.
    fn refuse(&mut self, f: &Found, why: &str) {
        self.error(f, format!("{why}; {NOT_SERVED}"));
        self.served = false;
    }

    fn options(&mut self) -> &mut RouteOptions {
        &mut self.out.options
    }

    /// The settings, put together; `None` when the Ingress must not be served.
    pub(super) fn finish(mut self) -> Option<IngressSettings> {
        if let Some(location) = self.redirect.take() {
            let code = self.redirect_code;
            self.options().redirect = Some(Arc::new(Redirect { location, code }));
        }
        let c = &mut self.cors;
        if let Some(origins) = c.origins.take().filter(|_| c.valid) {
            let methods = c.methods.take().unwrap_or_else(|| CORS_DEFAULT_METHODS.into());
            let headers = c.headers.take().unwrap_or_else(|| CORS_DEFAULT_HEADERS.into());
            let (expose, credentials, max_age) = (c.expose.take(), c.credentials, c.max_age);
            let cors = Cors { origins, methods, headers, expose, credentials, max_age };
            self.options().cors = Some(Arc::new(cors));
        }
        if self.affinity_cookie {
            let name = self.cookie_name.take().unwrap_or_else(|| DEFAULT_COOKIE.into());
            let max_age = self.cookie_max_age;
            self.options().affinity_cookie = Some(Arc::new(AffinityCookie { name, max_age }));
        }
        if self.canary {
            let (header, header_value) = match self.canary_header_value.take() {
                Some(None) => (None, None),
                Some(value) => (self.canary_header.take(), value),
                None => (self.canary_header.take(), None),
            };
            self.out.canary = Some(CanaryRule { weight: self.canary_weight, header, header_value });
        }
        self.served.then_some(self.out)
    }
}

impl Default for IngressSettings {
    fn default() -> Self {
        IngressSettings {
            options: RouteOptions::default(),
            ssl_redirect: true,
            force_ssl_redirect: false,
            rewrite_target: None,
            backend_protocol: None,
            canary: None,
        }
    }
}

// Protection settings: a value that does not parse refuses the Ingress rather than leave the
// route open.

pub(super) fn rate_limit(r: &mut Reader<'_>, f: Found) {
    match parse_rate(&f.value) {
        Some(rate) => r.out.options.rate_limit = Some(r.runtime.rate_limiter(r.route_name, rate)),
        // An nginx count that is not a whole number (translated to nothing).
        None if f.value != f.written => r.refuse(&f, &format!("{:?} is not a number of requests", f.written)),
        None => r.refuse(&f, &format!("{:?} is not a rate (e.g. 10r/s, 600r/m, \"10r/s burst=20\")", f.value)),
    }
}

pub(super) fn max_body(r: &mut Reader<'_>, f: Found) {
    match parse_size(&f.value) {
        Some(0) => {}
        Some(n) => r.options().max_body = Some(n),
        None => r.refuse(&f, &format!("{:?} is not a size (e.g. 512k, 8m, 1g, or bytes; 0 for no limit)", f.value)),
    }
}

/// Read as a main route, a canary would take its paths' traffic (or own them, if older).
pub(super) fn canary(r: &mut Reader<'_>, f: Found) {
    match f.value.trim() {
        "true" => r.canary = true,
        "false" => {}
        other => r.refuse(&f, &format!("{other:?} is not true or false")),
    }
}

/// A source allow-list without a valid entry refuses every client.
pub(super) fn allow_sources(r: &mut Reader<'_>, f: Found) {
    let mut nets = Vec::new();
    for entry in f.value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match parse_net(entry) {
            Some(net) => nets.push(net),
            None => r.error(&f, format!("{entry:?} is not an IP address or CIDR range; not allowed")),
        }
    }
    if nets.is_empty() {
        r.error(&f, "no valid range: every client is refused (403) until it is fixed");
    }
    r.options().allow_sources = Some(nets.into());
}

// Upstream behaviour: a bad value warns and keeps the default.

fn timeout(r: &mut Reader<'_>, f: Found) -> Option<Duration> {
    match parse_duration(&f.value) {
        Some(d) if !d.is_zero() && d <= MAX_TIMEOUT => Some(d),
        _ => {
            r.warn(
                &f,
                format!("{:?} is not a duration between 1ms and 1h (e.g. 500ms, 30s, 2m); default used", f.value),
            );
            None
        }
    }
}

pub(super) fn connect_timeout(r: &mut Reader<'_>, f: Found) {
    r.out.options.connect = timeout(r, f);
}

pub(super) fn read_timeout(r: &mut Reader<'_>, f: Found) {
    r.out.options.read = timeout(r, f);
}

pub(super) fn retries(r: &mut Reader<'_>, f: Found) {
    match f.value.trim().parse::<u8>() {
        Ok(n) if n <= MAX_RETRIES => r.options().retries = n,
        _ => r.warn(&f, format!("{:?} is not a retry count 0..={MAX_RETRIES}; no retries", f.value)),
    }
}

pub(super) fn backend_protocol(r: &mut Reader<'_>, f: Found) {
    r.out.backend_protocol = match f.value.trim().to_ascii_lowercase().as_str() {
        "http" => Some(UpstreamProtocol::Http1),
        "h2c" | "grpc" => Some(UpstreamProtocol::H2c),
        "https" => Some(UpstreamProtocol::Tls),
        other => {
            r.warn(&f, format!("{other:?} is not http, https or h2c; appProtocol or HTTP/1.1 used"));
            None
        }
    };
}

// Redirects and rewrites.

pub(super) fn ssl_redirect(r: &mut Reader<'_>, f: Found) {
    r.out.ssl_redirect = flag(r, f, true);
}

pub(super) fn force_ssl_redirect(r: &mut Reader<'_>, f: Found) {
    r.out.force_ssl_redirect = flag(r, f, false);
}

pub(super) fn redirect(r: &mut Reader<'_>, f: Found) {
    match redirect_location(f.value.trim()) {
        Ok(location) => r.redirect = Some(location),
        Err(why) => r.error(&f, format!("{why}; not redirected")),
    }
}

pub(super) fn redirect_code(r: &mut Reader<'_>, f: Found) {
    match f.value.trim().parse::<u16>() {
        Ok(n @ (301 | 302 | 303 | 307 | 308)) => r.redirect_code = n,
        _ => r.warn(&f, format!("{:?} is not a redirect status (301, 302, 303, 307, 308); 301 used", f.value)),
    }
}

pub(super) fn app_root(r: &mut Reader<'_>, f: Found) {
    let root = f.value.trim();
    // A path ferry can route, and a redirect location on the same host: not `//host` (another
    // host to a browser), no `$` variables.
    let checked = crate::build::ingress::validate_path(root)
        .and_then(|()| safe_path(root))
        .and_then(|()| redirect_location(root))
        .and_then(|root| if root == "/" { Err("\"/\" would redirect to itself".to_string()) } else { Ok(root) });
    match checked {
        Ok(root) => r.options().app_root = Some(root.into()),
        Err(why) => r.error(&f, format!("{why}; not redirected")),
    }
}

pub(super) fn rewrite_target(r: &mut Reader<'_>, f: Found) {
    let target = f.value.trim();
    if target.contains('$') {
        r.error(&f, format!("{target:?}: regex captures are not supported (prefix rewrites only); not rewritten"));
    } else if let Err(why) = crate::build::ingress::validate_path(target).and_then(|()| safe_path(target)) {
        r.error(&f, format!("{why}; not rewritten"));
    } else {
        r.out.rewrite_target = Some(target.to_string());
    }
}

// CORS: an origin list with no valid entry, or any value that could not be sent as a header,
// leaves CORS off, the side on which browsers allow nothing cross-origin.

const CORS_OFF: &str = "CORS stays off";

pub(super) fn cors_allow_origin(r: &mut Reader<'_>, f: Found) {
    let v = f.value.trim();
    if let Some(why) = control_char(v) {
        // Not read at all.
        r.error(&f, format!("{why}; {CORS_OFF}"));
        r.cors.valid = false;
        r.cors.origins = Some(Vec::new());
        return;
    }
    let (mut origins, mut any) = (Vec::new(), false);
    for o in v.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let ok = o.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains(['/', ' ', '*'])
        });
        if o == "*" {
            any = true;
        } else if ok {
            origins.push(o.to_ascii_lowercase());
        } else {
            r.error(&f, format!("{o:?} is not an origin (scheme://host[:port]) or *; left out"));
        }
    }
    if any {
        origins.clear();
    } else if origins.is_empty() {
        // Never widen a list whose every entry was wrong into "any origin".
        r.error(&f, format!("no valid origin: {CORS_OFF}"));
        r.cors.valid = false;
    }
    r.cors.origins = Some(origins);
}

/// A list of HTTP tokens; an empty one keeps the default.
fn cors_list(r: &mut Reader<'_>, f: Found) -> Option<String> {
    match token_list(f.value.trim()) {
        Ok(l) => Some(l).filter(|l| !l.is_empty()),
        Err(why) => {
            r.error(&f, format!("{why}; {CORS_OFF}"));
            r.cors.valid = false;
            None
        }
    }
}

pub(super) fn cors_allow_methods(r: &mut Reader<'_>, f: Found) {
    r.cors.methods = cors_list(r, f);
}

pub(super) fn cors_allow_headers(r: &mut Reader<'_>, f: Found) {
    r.cors.headers = cors_list(r, f);
}

pub(super) fn cors_expose_headers(r: &mut Reader<'_>, f: Found) {
    r.cors.expose = cors_list(r, f);
}

pub(super) fn cors_allow_credentials(r: &mut Reader<'_>, f: Found) {
    r.cors.credentials = flag(r, f, false);
}

pub(super) fn cors_max_age(r: &mut Reader<'_>, f: Found) {
    match f.value.trim().parse() {
        Ok(n) => r.cors.max_age = n,
        Err(_) => r.warn(&f, format!("{:?} is not a number of seconds; {CORS_DEFAULT_MAX_AGE} used", f.value)),
    }
}

// Cookie affinity.

pub(super) fn affinity(r: &mut Reader<'_>, f: Found) {
    match f.value.trim() {
        "cookie" => r.affinity_cookie = true,
        _ => r.warn(&f, format!("{:?} is not a known affinity (cookie); none used", f.value)),
    }
}

pub(super) fn affinity_cookie_name(r: &mut Reader<'_>, f: Found) {
    let otherwise = format!("{DEFAULT_COOKIE} used");
    let Some(name) = header_text(r, &f, &otherwise) else { return };
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        r.cookie_name = Some(name.to_string());
    } else {
        r.warn(&f, format!("{name:?} is not a cookie name (letters, digits, - _ .); {otherwise}"));
    }
}

pub(super) fn affinity_cookie_max_age(r: &mut Reader<'_>, f: Found) {
    match f.value.trim().parse::<u64>() {
        Ok(n) => r.cookie_max_age = Some(n),
        Err(_) => r.warn(&f, format!("{:?} is not a number of seconds; a session cookie is used", f.value)),
    }
}

// Canary: how a canary Ingress takes traffic.

const NO_HEADER: &str = "the canary is not chosen by header";

pub(super) fn canary_weight(r: &mut Reader<'_>, f: Found) {
    match f.value.trim().parse::<u8>() {
        Ok(w) if w <= 100 => r.canary_weight = w,
        _ => r.warn(&f, format!("{:?} is not a percentage 0..=100; 0 used", f.value)),
    }
}

pub(super) fn canary_header(r: &mut Reader<'_>, f: Found) {
    let Some(name) = header_text(r, &f, NO_HEADER) else { return };
    match http::HeaderName::from_bytes(name.as_bytes()) {
        Ok(name) => r.canary_header = Some(name),
        Err(_) => r.warn(&f, format!("{:?} is not a header name; {NO_HEADER}", f.value)),
    }
}

/// Without its value, the header would mean `always`/`never` instead: a value that cannot be
/// sent drops the header rule.
pub(super) fn canary_header_value(r: &mut Reader<'_>, f: Found) {
    let value = header_text(r, &f, NO_HEADER).map(str::to_string);
    r.canary_header_value = Some(value);
}

/// A `true`/`false` annotation; anything else is reported and `default` kept.
fn flag(r: &mut Reader<'_>, f: Found, default: bool) -> bool {
    match f.value.trim() {
        "true" => true,
        "false" => false,
        other => {
            r.warn(&f, format!("{other:?} is not true or false; {default} used (the default)"));
            default
        }
    }
}

/// A value that becomes (part of) a header, trimmed; `None`, with an error whose reason ends in
/// `otherwise`, when it holds a control character: CR or LF would end the header, NUL cut it.
fn header_text<'f>(r: &mut Reader<'_>, f: &'f Found, otherwise: &str) -> Option<&'f str> {
    let v = f.value.trim();
    match control_char(v) {
        None => Some(v),
        Some(why) => {
            r.error(f, format!("{why}; {otherwise}"));
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
pub(super) fn redirect_location(v: &str) -> Result<String, String> {
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

/// `500ms`, `30s`, `2m`, `1h`, or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
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
fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>().ok().or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

/// `10r/s`, `600r/m`, optionally followed by ` burst=N` (default: one second's worth, at least 1).
pub(super) fn parse_rate(s: &str) -> Option<Rate> {
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
pub(super) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (digits, mult) = match s.as_bytes().last()? {
        b'k' => (&s[..s.len() - 1], 1 << 10),
        b'm' => (&s[..s.len() - 1], 1 << 20),
        b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s.as_str(), 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}
