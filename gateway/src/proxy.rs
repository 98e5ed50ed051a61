//! The HTTP data plane as a Pingora `ProxyHttp`.
//!
//! Phases, in Pingora's order:
//! 1. `request_filter`: validate the request target (`check_target`), find the host, look the
//!    route up in the live table, and answer 400/404/503 ourselves when there is nothing to proxy.
//! 2. `upstream_peer`: pick a pod endpoint (round-robin, avoiding one that just failed).
//! 3. `fail_to_connect`: count the error; retry once on a different endpoint.
//! 4. `upstream_request_filter`: add X-Forwarded-* and X-Real-IP; `Host` is passed unchanged.
//! 5. `logging`: record the request in metrics.
//!
//! This module must not block or allocate in the lookup; it reads one `ArcSwap` snapshot per
//! request and keeps the matched `Route` (an `Arc`) for the later phases, so a table swap in the
//! middle of a request never changes where that request goes.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::proxy::FailToProxy;
use pingora::ErrorSource;

use crate::access_log::{self, AccessLog, Entry};
use crate::balance::{hash_bytes, hash_ip, Pick, PickInput, Policy};
use crate::cors::Cors;
use crate::metrics::{BackendLabels, Metrics, StatusCounters};
use crate::safety;
use crate::table::{Backend, BackendState, HttpsRedirect, Match, Route, RouteOptions, UpstreamProtocol};
use crate::trace::TraceContext;
use crate::SharedTable;

/// What the routing decision needs to know of the connection a request came on.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ConnFacts<'a> {
    pub client: Option<IpAddr>,
    /// The TLS server name the client asked for (TLS listeners only).
    pub sni: Option<&'a str>,
    /// The HTTP/1 head as received had a `Content-Length` (see [`safety::check_request`]).
    pub raw_content_length: bool,
}

/// The gateway's timeouts: upstream (per route overridable) and client side.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    /// How long an idle pooled connection to a pod is kept.
    pub idle: Duration,
    /// How long a new client connection may take to send its first request head (slow clients
    /// holding connections open, "slowloris").
    pub client_header: Duration,
    /// How long a keep-alive client connection may sit idle between requests.
    pub client_idle: Duration,
    /// How long a client may take between two reads of a request body (nginx's
    /// `client_body_timeout`); a body that stalls longer gets 408 and the connection closes.
    pub client_body: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            client_header: Duration::from_secs(30),
            client_idle: Duration::from_secs(60),
            client_body: Duration::from_secs(60),
        }
    }
}

/// One proxy per listener; `tls` says which, for `X-Forwarded-Proto`.
pub struct Proxy {
    table: SharedTable,
    metrics: Arc<Metrics>,
    tls: bool,
    timeouts: Timeouts,
    /// Counters for requests that matched no route (route label `none`).
    unmatched: StatusCounters,
    access_log: Option<Arc<AccessLog>>,
    otlp: Option<Arc<crate::otlp::Exporter>>,
    /// Clients whose forwarding headers (`X-Forwarded-*`, `Forwarded`) are kept
    /// (`--trusted-proxies`); everyone else's are replaced or removed.
    trusted_proxies: Arc<[ipnet::IpNet]>,
}

impl Proxy {
    pub fn new(table: SharedTable, metrics: Arc<Metrics>, tls: bool, timeouts: Timeouts) -> Self {
        let unmatched = metrics.status_counters(&Arc::from("none"));
        Proxy { table, metrics, tls, timeouts, unmatched, access_log: None, otlp: None, trusted_proxies: Arc::new([]) }
    }

    pub fn with_trusted_proxies(mut self, nets: Arc<[ipnet::IpNet]>) -> Self {
        self.trusted_proxies = nets;
        self
    }

    /// Whether `client` may state forwarding facts (it is a trusted proxy).
    pub(crate) fn trusts(&self, client: Option<IpAddr>) -> bool {
        !self.trusted_proxies.is_empty() && client.is_some_and(|ip| crate::limits::allowed(&self.trusted_proxies, ip))
    }

    pub fn with_access_log(mut self, log: Option<Arc<AccessLog>>) -> Self {
        self.access_log = log;
        self
    }

    pub fn with_otlp(mut self, otlp: Option<Arc<crate::otlp::Exporter>>) -> Self {
        self.otlp = otlp;
        self
    }

    /// The trace of a new request (sampled for export by the OTLP exporter's ratio).
    pub(crate) fn trace_of(&self, req: &RequestHeader) -> TraceContext {
        TraceContext::of(req, self.otlp.as_ref().map_or(0.0, |o| o.sample_ratio()))
    }

    /// Whether finished requests need `log` at all.
    pub(crate) fn observed(&self) -> bool {
        self.access_log.is_some() || self.otlp.is_some() || tracing::enabled!(tracing::Level::DEBUG)
    }

    /// Writes the access log line of one finished request (when logging is on), and a debug
    /// event with the same facts.
    pub(crate) fn log(&self, req: &RequestHeader, done: &Done<'_>) {
        tracing::debug!(
            route = done.route.map(|r| &*r.name),
            backend = done.route.map(|r| &*r.backend.name),
            upstream = ?done.upstream,
            status = done.status,
            duration_ms = done.started.elapsed().as_secs_f64() * 1e3,
            request_id = done.request_id,
            trace_id = done.trace_id(),
            "request done"
        );
        if self.access_log.is_none() && self.otlp.is_none() {
            return;
        }
        let host = req
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("");
        let path = std::str::from_utf8(req.raw_path()).unwrap_or("");
        if let Some(otlp) = &self.otlp {
            otlp.record(req, host, done);
        }
        let Some(log) = &self.access_log else { return };
        log.log(&Entry {
            time: access_log::now(),
            client: done.client,
            host,
            method: req.method.as_str(),
            path,
            status: done.status,
            bytes: done.bytes,
            duration_ms: done.started.elapsed().as_secs_f64() * 1e3,
            upstream: done.upstream,
            upstream_ms: done.upstream_sent.map(|t| t.elapsed().as_secs_f64() * 1e3),
            route: done.route.map(|r| &*r.name),
            request_id: done.request_id,
            trace_id: done.trace_id(),
        });
    }

    /// The routing decision, shared by both data-plane paths: the matched route (if any) and
    /// why we answer ourselves instead of proxying (if we do).
    pub(crate) fn route(&self, req: &RequestHeader, conn: &ConnFacts<'_>) -> (Option<Arc<Route>>, Option<Refusal>) {
        let client = conn.client;
        let table = self.table.load();
        let target = match safety::check_request(req, self.tls, conn.raw_content_length) {
            Ok(t) => t,
            Err(r) => return (None, Some(Refusal::Reject(r))),
        };
        if let Some(sni) = conn.sni {
            if table.certs.misdirected(sni, target.host) {
                return (None, Some(Refusal::Misdirected));
            }
        }
        let path = safety::match_path(target.path);
        match table.lookup(target.host, &path) {
            Match::NotFound => (None, Some(Refusal::NoRoute)),
            Match::Route(route) => {
                let route = route.for_request(&req.headers);
                if let Some(refusal) = check_limits(&route.options, req, client) {
                    return (Some(route.clone()), Some(refusal));
                }
                if let Some(cors) = &route.options.cors {
                    if Cors::is_preflight(req) {
                        return (Some(route.clone()), Some(Refusal::Preflight(cors.clone(), cors.allow_origin(req))));
                    }
                }
                let options = &route.options;
                if let Some(to) = &options.redirect {
                    return (Some(route.clone()), Some(Refusal::Redirect(to.code, to.location.clone())));
                }
                let to_https = !self.tls
                    && match options.https_redirect {
                        HttpsRedirect::Never => false,
                        HttpsRedirect::IfCertified => table.certs.covers(target.host),
                        HttpsRedirect::Always => true,
                    };
                if to_https {
                    return (Some(route.clone()), Some(Refusal::Redirect(308, https_location(target.host, req))));
                }
                if let Some(root) = options.app_root.as_ref().filter(|_| path == "/") {
                    return (Some(route.clone()), Some(Refusal::Redirect(302, root.to_string())));
                }
                let refusal = match &route.backend.state {
                    BackendState::Endpoints(_) | BackendState::External { .. } => None,
                    BackendState::NoEndpoints => Some(Refusal::no_endpoints(&route.backend)),
                    BackendState::Unresolved(why) => Some(Refusal::Unavailable(why.clone())),
                };
                (Some(route.clone()), refusal)
            }
        }
    }

    /// The upstream peer for one pod endpoint, with the route's timeouts where it sets them and
    /// the gateway's otherwise.
    pub(crate) fn peer(&self, endpoint: SocketAddr, route: &Route) -> HttpPeer {
        let backend = &route.backend;
        let tls = backend.protocol == UpstreamProtocol::Tls;
        let mut peer = HttpPeer::new(endpoint, tls, backend.server_name().to_string());
        peer.options.connection_timeout = Some(route.options.connect.unwrap_or(self.timeouts.connect));
        peer.options.read_timeout = Some(route.options.read.unwrap_or(self.timeouts.read));
        peer.options.idle_timeout = Some(self.timeouts.idle);
        // The upstream head is prepared by `safety::strip_request_headers` on both engines;
        // Pingora's own policy would differ from it (it answers `Connection: Host` with 400 and
        // strips a nominated `X-Request-Id` before ferry sees the head).
        peer.options.http_upstream_request_policy = pingora::upstreams::peer::HttpUpstreamRequestPolicy::preserve();
        match backend.protocol {
            UpstreamProtocol::Http1 => {}
            // Prior knowledge: a plaintext peer whose lowest version is 2 is spoken to in h2c.
            UpstreamProtocol::H2c => peer.options.set_http_version(2, 2),
            UpstreamProtocol::Tls => {
                peer.options.verify_cert = false;
                peer.options.verify_hostname = false;
            }
        }
        peer
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        self.timeouts.idle
    }

    pub(crate) fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    pub(crate) fn tls(&self) -> bool {
        self.tls
    }

    /// The listener's name in metrics.
    pub(crate) fn listener_name(&self) -> &'static str {
        if self.tls {
            "ferry https"
        } else {
            "ferry http"
        }
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn connect_failed(&self, route: &Route) {
        self.metrics
            .upstream_connect_errors
            .get_or_create(&BackendLabels { backend: route.backend.name.clone() })
            .inc();
    }

    /// Counts one finished request (status 0: no response was sent).
    pub(crate) fn record(&self, route: Option<&Arc<Route>>, status: u16) {
        let counters = match route {
            Some(r) => r.counters.get_or_init(|| self.metrics.status_counters(&r.name)),
            None => &self.unmatched,
        };
        counters.record(status);
    }
}

/// What the access log and the OTLP span need of a finished request besides its head.
pub(crate) struct Done<'a> {
    pub client: Option<IpAddr>,
    pub status: u16,
    pub bytes: usize,
    pub started: Instant,
    pub upstream: Option<SocketAddr>,
    /// When the (last) upstream attempt was sent.
    pub upstream_sent: Option<Instant>,
    pub route: Option<&'a Route>,
    pub request_id: &'a str,
    pub trace: Option<&'a TraceContext>,
}

impl Done<'_> {
    fn trace_id(&self) -> &str {
        self.trace.map_or("", |t| &t.trace_id)
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's `X-Request-Id` if it carries a usable one (visible ASCII, at most 200 bytes).
pub(crate) fn client_request_id(req: &RequestHeader) -> Option<&str> {
    let v = req.headers.get(&X_REQUEST_ID)?.to_str().ok()?;
    (!v.is_empty() && v.len() <= 200 && v.bytes().all(|b| b.is_ascii_graphic())).then_some(v)
}

/// The request id: the client's, or a new one.
pub(crate) fn request_id(req: &RequestHeader) -> (String, bool) {
    match client_request_id(req) {
        Some(id) => (id.to_string(), true),
        None => (access_log::new_request_id(), false),
    }
}

/// Puts the request id on the upstream request: a generated one (replacing an unusable one), or
/// the client's again where it is no longer there.
pub(crate) fn set_request_id(upstream: &mut RequestHeader, id: &str, from_client: bool) -> Result<()> {
    if !from_client || !upstream.headers.contains_key(&X_REQUEST_ID) {
        let v = HeaderValue::from_str(id).map_err(|_| Error::new(ErrorType::InternalError))?;
        upstream.insert_header(X_REQUEST_ID.clone(), v)?;
    }
    Ok(())
}

/// `https://host/target` for the HTTPS redirect (the port is dropped: clients come back on 443).
fn https_location(host: &str, req: &RequestHeader) -> String {
    let host = match host.strip_prefix('[') {
        Some(v6) => &host[..v6.find(']').map_or(host.len(), |i| i + 2)],
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    format!("https://{host}{}", origin_form(req))
}

/// The request's path and query as received (from the URI of an absolute-form target).
pub(crate) fn origin_form(req: &RequestHeader) -> &str {
    let target = std::str::from_utf8(req.raw_path()).unwrap_or("/");
    if target.starts_with('/') {
        target
    } else {
        req.uri.path_and_query().map_or("/", |p| p.as_str())
    }
}

/// An absolute-form target (`GET http://host/path`) goes upstream in origin form; the `Host`
/// already names the authority (the safety rules require it to).
pub(crate) fn to_origin_form(upstream: &mut RequestHeader) -> Result<()> {
    if !upstream.raw_path().starts_with(b"/") && upstream.raw_path() != b"*" {
        // An HTTP/1.0 client may send the authority only in the target; the backend gets it
        // as `Host` (RFC 9112 §3.2.2).
        if !upstream.headers.contains_key(header::HOST) {
            let target = std::str::from_utf8(upstream.raw_path()).unwrap_or_default();
            let authority =
                target.split_once("://").map(|(_, rest)| &rest[..rest.find(['/', '?']).unwrap_or(rest.len())]);
            if let Some(authority) = authority.filter(|a| !a.is_empty()).map(str::to_string) {
                upstream.insert_header(header::HOST, authority)?;
            }
        }
        let origin = origin_form(upstream).to_string();
        upstream.set_raw_path(origin.as_bytes())?;
    }
    Ok(())
}

/// The upstream request target after the route's rewrite, if it has one.
pub(crate) fn rewrite(route: &Route, upstream: &mut RequestHeader) -> Result<()> {
    if let Some(rewrite) = &route.options.rewrite {
        // The route's prefix is replaced in the form the route was matched on.
        let target = origin_form(upstream);
        let (path, query) = target.split_at(target.find('?').unwrap_or(target.len()));
        let new = rewrite.apply(&format!("{}{query}", safety::match_path(path)));
        upstream.set_raw_path(new.as_bytes())?;
    }
    Ok(())
}

/// The `Set-Cookie` for cookie affinity when the request's cookie did not already name `chosen`.
pub(crate) fn affinity_cookie(route: &Route, prefer: Option<u64>, chosen: SocketAddr, tls: bool) -> Option<String> {
    let c = route.options.affinity_cookie.as_ref()?;
    (prefer != Some(crate::balance::endpoint_token(&chosen))).then(|| c.set_cookie(&chosen, tls))
}

/// CORS headers on a proxied response, when the route has CORS and the origin is allowed.
pub(crate) fn add_cors(route: Option<&Route>, req: &RequestHeader, resp: &mut ResponseHeader) -> Result<()> {
    if let Some(cors) = route.and_then(|r| r.options.cors.as_ref()) {
        if let Some(allow) = cors.allow_origin(req) {
            cors.apply(resp, allow, false)?;
        }
    }
    Ok(())
}

/// The route's source allow-list, rate limit and body size limit (by `Content-Length`; bodies
/// without one are counted as they stream).
fn check_limits(options: &RouteOptions, req: &RequestHeader, client: Option<IpAddr>) -> Option<Refusal> {
    if let Some(nets) = &options.allow_sources {
        if !client.is_some_and(|ip| crate::limits::allowed(nets, ip)) {
            return Some(Refusal::Forbidden);
        }
    }
    if let (Some(limiter), Some(ip)) = (&options.rate_limit, client) {
        if let Err(wait) = limiter.check(ip, Instant::now()) {
            return Some(Refusal::TooManyRequests(wait.as_secs_f64().ceil().max(1.0) as u64));
        }
    }
    if let Some(max) = options.max_body {
        let length = req.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        if length.is_some_and(|n| n > max) {
            return Some(Refusal::PayloadTooLarge);
        }
    }
    None
}

/// Per-request state carried between phases.
pub struct Ctx {
    /// The affinity cookie to set on the response (a new or changed binding).
    set_cookie: Option<String>,
    /// Request body bytes seen (for the body size limit).
    body_bytes: u64,
    started: Instant,
    trace: Option<TraceContext>,
    request_id: String,
    /// The client sent the request id (so it is already on the upstream request).
    request_id_from_client: bool,
    /// This request counts as in flight (for draining) while the context lives.
    _work: crate::drain::Work,
    route: Option<Arc<Route>>,
    /// The endpoint of the current attempt (in flight while held).
    pick: Option<Pick>,
    sent_at: Option<Instant>,
    /// The endpoint that failed last; a retry avoids it.
    failed: Option<SocketAddr>,
    connect_attempts: u8,
    retries_5xx: u8,
    /// The upstream answered with a response head (its health is already recorded).
    answered: bool,
    /// The request has no body (so a retry need not replay one).
    body_empty: bool,
    /// A WebSocket upgrade ferry passes on.
    upgrade: bool,
    /// The exchange failed because the client's body stalled (see `fail_to_proxy`).
    client_stalled: bool,
}

/// Endpoints tried per request when connects fail.
pub(crate) const CONNECT_ATTEMPTS: u8 = 3;

/// What a pick for this request needs: the client and the request's hash key for hash policies.
pub(crate) fn pick_input(route: &Route, req: &RequestHeader, client: Option<IpAddr>) -> PickInput {
    let backend = &route.backend;
    let prefer = route.options.affinity_cookie.as_ref().and_then(|c| {
        let value = cookie(req, &c.name)?;
        u64::from_str_radix(std::str::from_utf8(value).ok()?, 16).ok()
    });
    let key = match &backend.policy {
        Policy::SourceHash => client.map(hash_ip),
        Policy::HeaderHash(name) => req.headers.get(name).map(|v| hash_bytes(v.as_bytes())),
        Policy::Cookie(name) => cookie(req, name).map(hash_bytes),
        _ => None,
    };
    PickInput { client, key, avoid: None, prefer }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'r>(req: &'r RequestHeader, name: &str) -> Option<&'r [u8]> {
    req.headers.get_all(header::COOKIE).iter().flat_map(|v| v.as_bytes().split(|b| *b == b';')).find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
    })
}

/// Whether a failed answer (502, 503, 504) to this request may be retried on another endpoint:
/// the route allows it, the method is idempotent, there is no body to replay, and the backend's
/// retry budget has room.
pub(crate) fn may_retry_5xx(route: &Route, req: &RequestHeader, body_empty: bool, retried: u8, status: u16) -> bool {
    matches!(status, 502..=504)
        && retried < route.options.retries
        && body_empty
        && req.method.is_idempotent()
        && route.backend.has_alternatives()
        && route.backend.retry_budget.withdraw()
}

/// Records an upstream's answer in its endpoint's health and latency.
pub(crate) fn record_answer(pick: &Pick, status: u16, sent_at: Instant) {
    if status >= 500 {
        pick.failure();
    } else {
        pick.success(sent_at.elapsed());
    }
}

/// Why we answer a request ourselves. The one place that maps a refusal to a response.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A request the safety rules refuse ([`safety::check_request`]).
    Reject(safety::Reject),
    /// A malformed request or body (a client fault).
    BadRequest(&'static str),
    /// The client's body did not arrive in time (`--client-body-timeout`).
    RequestTimeout,
    /// The TLS server name and the `Host` name different certificates (RFC 9110 §15.5.20).
    Misdirected,
    HeadersTooLarge,
    NoRoute,
    Unavailable(String),
    /// No usable response from the upstream (connect failed, reset, timed out, malformed).
    BadGateway,
    /// The client's address is not in the route's allow-list.
    Forbidden,
    /// Over the route's rate limit; retry after this many seconds.
    TooManyRequests(u64),
    /// The request body is over the route's limit.
    PayloadTooLarge,
    /// A redirect (HTTP to HTTPS, the route's redirect, its app root): status and location.
    Redirect(u16, String),
    /// A CORS preflight, answered here (with the allowed origin's headers, if it is allowed).
    Preflight(Arc<Cors>, Option<HeaderValue>),
}

impl Refusal {
    pub(crate) fn response(&self) -> (u16, Bytes) {
        match self {
            Refusal::Reject(r) if r.status == 400 => (400, Bytes::from(format!("ferry: bad request: {}\n", r.reason))),
            Refusal::Reject(r) => (r.status, Bytes::from(format!("ferry: {}\n", r.reason))),
            Refusal::BadRequest(why) => (400, Bytes::from(format!("ferry: bad request: {why}\n"))),
            Refusal::RequestTimeout => (408, Bytes::from_static(b"ferry: request body timed out\n")),
            Refusal::Misdirected => {
                (421, Bytes::from_static(b"ferry: misdirected request: TLS server name and Host differ\n"))
            }
            Refusal::HeadersTooLarge => (431, Bytes::from_static(b"ferry: request headers too large\n")),
            Refusal::NoRoute => (404, Bytes::from_static(b"ferry: no route for this host and path\n")),
            Refusal::Unavailable(why) => (503, Bytes::from(format!("ferry: service unavailable: {why}\n"))),
            Refusal::BadGateway => {
                (502, Bytes::from_static(b"ferry: bad gateway: no usable response from the backend\n"))
            }
            Refusal::Forbidden => (403, Bytes::from_static(b"ferry: forbidden: source address not allowed\n")),
            Refusal::TooManyRequests(_) => (429, Bytes::from_static(b"ferry: too many requests\n")),
            Refusal::PayloadTooLarge => (413, Bytes::from_static(b"ferry: request body too large\n")),
            Refusal::Redirect(code, to) => (*code, Bytes::from(format!("ferry: moved to {to}\n"))),
            Refusal::Preflight(..) => (204, Bytes::new()),
        }
    }
}

/// Whether the client waits for `100 Continue` before sending its body.
pub(crate) fn expects_continue(req: &RequestHeader) -> bool {
    req.headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Sets `X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto` and `X-Forwarded-Host`. From a
/// trusted proxy (`trusted`), the client's `X-Forwarded-For` is appended to and its
/// `X-Forwarded-Proto`/`-Host` are kept; from anyone else they are replaced.
pub(crate) fn add_forwarding_headers(
    upstream: &mut RequestHeader,
    client: Option<std::net::IpAddr>,
    tls: bool,
    trusted: bool,
) -> Result<()> {
    if let Some(ip) = client {
        let mut buf = [0u8; 64];
        let len = format_ip(ip, &mut buf);
        let ip = HeaderValue::from_bytes(&buf[..len]).map_err(|_| Error::new(ErrorType::InternalError))?;
        let xff = match upstream.headers.get(&X_FORWARDED_FOR) {
            Some(prev) if trusted && !prev.is_empty() => {
                let mut joined = Vec::with_capacity(prev.len() + 2 + len);
                joined.extend_from_slice(prev.as_bytes());
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(&buf[..len]);
                HeaderValue::from_bytes(&joined).map_err(|_| Error::new(ErrorType::InvalidHTTPHeader))?
            }
            // Both headers share the one value buffer.
            _ => ip.clone(),
        };
        upstream.insert_header("X-Forwarded-For", xff)?;
        upstream.insert_header("X-Real-IP", ip)?;
    }
    if !trusted && client.is_none() && upstream.headers.contains_key(&X_FORWARDED_FOR) {
        upstream.remove_header(&X_FORWARDED_FOR);
    }
    if !(trusted && upstream.headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
        upstream.insert_header(X_FORWARDED_PROTO.clone(), proto)?;
    }
    if trusted && upstream.headers.contains_key(&X_FORWARDED_HOST) {
        return Ok(());
    }
    // Pingora has already set the upstream `Host` from the request (or from `:authority` /
    // an absolute-form target); that is the host we routed on.
    let host = upstream
        .headers
        .get(header::HOST)
        .filter(|h| !h.is_empty())
        .cloned()
        .or_else(|| upstream.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    if let Some(host) = host {
        upstream.insert_header(X_FORWARDED_HOST.clone(), host)?;
    }
    Ok(())
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Writes `ip` in its text form into `buf` and returns the length. IPv4 (the common case) is
/// formatted by hand: `fmt` machinery costs more per request than the rest of this phase.
fn format_ip(ip: std::net::IpAddr, buf: &mut [u8; 64]) -> usize {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            len
        }
        std::net::IpAddr::V6(_) => {
            let mut w = &mut buf[..];
            let _ = write!(w, "{ip}");
            64 - w.len()
        }
    }
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    inet_ip(session.client_addr())
}

/// The IP of a TCP peer (`None` for Unix sockets and unknown peers).
pub(crate) fn inet_ip(addr: Option<&PingoraAddr>) -> Option<std::net::IpAddr> {
    match addr? {
        PingoraAddr::Inet(addr) => Some(addr.ip()),
        _ => None,
    }
}

impl Refusal {
    /// The reply for an error after routing began (`None`: the client is gone, nothing to send).
    /// Errors ferry raised itself carry their status; a client's fault is 400 (408 when it
    /// stalled); anything from the upstream is 502.
    pub(crate) fn of_error(e: &Error, route: Option<&Route>) -> Option<Refusal> {
        Some(match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(503), _) => match route {
                Some(r) => Refusal::no_endpoints(&r.backend),
                None => Refusal::Unavailable("no endpoints".into()),
            },
            (ErrorType::HTTPStatus(413), _) => Refusal::PayloadTooLarge,
            (ErrorType::HTTPStatus(408), _) => Refusal::RequestTimeout,
            (ErrorType::HTTPStatus(400), _) => Refusal::BadRequest("malformed request"),
            (ErrorType::ReadTimedout, ErrorSource::Downstream) => Refusal::RequestTimeout,
            (ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed, ErrorSource::Downstream) => {
                return None
            }
            (_, ErrorSource::Downstream) => Refusal::BadRequest("malformed request body"),
            _ => Refusal::BadGateway,
        })
    }

    /// Whether the refusal is the client's fault (not counted against an endpoint, logged at
    /// debug level).
    pub(crate) fn is_client_fault(&self) -> bool {
        matches!(self, Refusal::BadRequest(_) | Refusal::RequestTimeout | Refusal::Reject(_))
    }

    /// 503 for a backend that exists but has no endpoint to send to.
    pub(crate) fn no_endpoints(backend: &Backend) -> Refusal {
        Refusal::Unavailable(format!("no ready endpoints for {}", backend.name))
    }

    /// The response for this refusal: head, body, and whether the connection must close (after
    /// a malformed request we cannot trust where the next one starts).
    pub(crate) fn to_response(&self) -> Result<(ResponseHeader, Bytes, bool)> {
        let (status, body) = self.response();
        // After a malformed request we cannot trust where the next one starts; after refusing a
        // large body we did not read it.
        let close = matches!(
            self,
            Refusal::Reject(_)
                | Refusal::BadRequest(_)
                | Refusal::HeadersTooLarge
                | Refusal::PayloadTooLarge
                | Refusal::RequestTimeout
        );
        let mut resp = ResponseHeader::build(status, Some(4))?;
        if status != 204 {
            resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
            resp.insert_header(header::CONTENT_LENGTH, body.len())?;
        }
        match self {
            Refusal::TooManyRequests(after) => {
                resp.insert_header(header::RETRY_AFTER, *after)?;
            }
            Refusal::Redirect(_, to) => {
                resp.insert_header(header::LOCATION, to.as_str())?;
            }
            Refusal::Preflight(cors, Some(allow)) => cors.apply(&mut resp, allow.clone(), true)?,
            _ => {}
        }
        if close {
            resp.insert_header(header::CONNECTION, "close")?;
        }
        Ok((resp, body, close))
    }
}

async fn refuse(session: &mut Session, refusal: &Refusal) -> Result<bool> {
    let (resp, body, close) = refusal.to_response()?;
    if close {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            _work: crate::drain::Work::start(),
            started: Instant::now(),
            set_cookie: None,
            trace: None,
            request_id: String::new(),
            request_id_from_client: false,
            route: None,
            pick: None,
            sent_at: None,
            failed: None,
            connect_attempts: 0,
            retries_5xx: 0,
            answered: false,
            body_empty: false,
            upgrade: false,
            client_stalled: false,
            body_bytes: 0,
        }
    }

    /// No downstream modules: ferry does not compress, and each module costs per request.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if crate::drain::is_draining() {
            // Shutting down: tell HTTP/1.1 clients to take their next request elsewhere.
            session.set_keepalive(None);
        } else if session.get_keepalive().is_some() {
            // A connection the client keeps alive is closed after the idle timeout.
            session.set_keepalive(Some(self.timeouts.client_idle.as_secs().max(1)));
        }
        // A stalled body gets 408 (the session's read timeout covers each body read).
        session.as_downstream_mut().set_read_timeout(Some(self.timeouts.client_body));
        // Bytes after the body (a pipelined request, a stray CRLF) start the next request;
        // without this Pingora fails a body that arrives together with them.
        if let pingora::protocols::http::ServerSession::H1(h1) = session.as_downstream_mut() {
            h1.set_pipelining_enabled(true);
        }
        ctx.body_empty = session.as_downstream_mut().is_body_empty();
        let body_empty = ctx.body_empty;
        ctx.upgrade = safety::drop_refused_upgrade(session.req_header_mut(), body_empty);
        (ctx.request_id, ctx.request_id_from_client) = request_id(session.req_header());
        ctx.trace = Some(self.trace_of(session.req_header()));
        let downstream = session.as_downstream();
        let raw_content_length = match downstream {
            pingora::protocols::http::ServerSession::H1(h1) => {
                h1.get_header(header::TRANSFER_ENCODING).is_some()
                    && safety::raw_has_content_length(&h1.get_headers_raw_bytes())
            }
            _ => false,
        };
        let conn = ConnFacts {
            client: client_ip(session),
            sni: downstream.digest().and_then(crate::tls::sni_of),
            raw_content_length,
        };
        let (route, refusal) = self.route(session.req_header(), &conn);
        ctx.route = route;
        if let Some(r) = refusal {
            if r.is_client_fault() {
                self.metrics.client_fault(self.listener_name(), "request");
            }
            return refuse(session, &r).await;
        }
        // `Expect: 100-continue` is answered here and not forwarded (as on the fast path), so
        // the client sends its body at once instead of waiting for a backend's interim reply.
        if expects_continue(session.req_header()) && !session.as_downstream_mut().is_body_empty() {
            // Pingora would treat the interim head as an early final response and close the
            // connection afterwards; reuse still drains any unread body first.
            let ds = session.as_downstream_mut();
            ds.set_close_on_response_before_downstream_finish(false);
            ds.write_continue_response().await?;
        }
        Ok(false)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(route) = &ctx.route else {
            return Err(Error::explain(ErrorType::InternalError, "upstream_peer without a route"));
        };
        let backend = &route.backend;
        if ctx.pick.is_none() && route.options.retries > 0 {
            backend.retry_budget.deposit();
        }
        let mut input = pick_input(route, session.req_header(), client_ip(session));
        let prefer = input.prefer;
        input.avoid = ctx.failed;
        let Some(pick) = backend.pick_async(&input).await else {
            return Err(Error::explain(ErrorType::HTTPStatus(503), "backend has no endpoints"));
        };
        let peer = self.peer(pick.addr, route);
        ctx.set_cookie = affinity_cookie(route, prefer, pick.addr, self.tls);
        ctx.pick = Some(pick);
        ctx.sent_at = Some(Instant::now());
        ctx.answered = false;
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Latency is measured from here: connecting is not the endpoint's answer time.
        ctx.sent_at = Some(Instant::now());
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(route), Some(pick)) = (&ctx.route, &ctx.pick) {
            self.connect_failed(route);
            pick.failure();
            ctx.answered = true;
            ctx.failed = Some(pick.addr);
            ctx.connect_attempts += 1;
            // Retry on another endpoint, where one exists.
            e.set_retry(ctx.connect_attempts < CONNECT_ATTEMPTS && route.backend.has_alternatives());
        }
        e
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let max = ctx.route.as_ref().and_then(|r| r.options.max_body);
        if let (Some(max), Some(chunk)) = (max, body.as_ref()) {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > max {
                // Marked as the client's: toward an HTTP/2 upstream, Pingora ends the exchange
                // (resetting the unfinished upstream stream) only for a downstream error; any
                // other it notes and keeps waiting for an answer that never comes.
                let mut e = Error::explain(ErrorType::HTTPStatus(413), "request body over the route's limit");
                e.as_down();
                return Err(e);
            }
        }
        Ok(())
    }

    async fn response_filter(&self, session: &mut Session, upstream: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        safety::strip_response_headers(upstream);
        if let Some(cookie) = ctx.set_cookie.take() {
            upstream.append_header(header::SET_COOKIE, cookie)?;
        }
        add_cors(ctx.route.as_deref(), session.req_header(), upstream)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (Some(route), Some(pick), Some(sent_at)) = (&ctx.route, &ctx.pick, ctx.sent_at) else { return Ok(()) };
        let status = upstream.status.as_u16();
        if status < 200 {
            return Ok(());
        }
        record_answer(pick, status, sent_at);
        ctx.answered = true;
        if may_retry_5xx(route, session.req_header(), ctx.body_empty, ctx.retries_5xx, status) {
            ctx.retries_5xx += 1;
            ctx.failed = Some(pick.addr);
            let mut e = Error::explain(ErrorType::HTTPStatus(status), "upstream answered 5xx; retrying elsewhere");
            e.set_retry(true);
            return Err(e);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let client = client_ip(session);
        let trusted = self.trusts(client);
        safety::strip_request_headers(upstream, ctx.upgrade, trusted);
        to_origin_form(upstream)?;
        set_request_id(upstream, &ctx.request_id, ctx.request_id_from_client)?;
        if let Some(trace) = &ctx.trace {
            trace.set_on(upstream)?;
        }
        if let Some(route) = &ctx.route {
            rewrite(route, upstream)?;
        }
        add_forwarding_headers(upstream, client, self.tls, trusted)
    }

    /// The one reply for a request that failed after routing began: the same [`Refusal`] the
    /// fast path sends for the same error.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // An upstream that timed out or gave up while the client's body was still unfinished
        // was waiting for the client (an HTTP/2 body has no read timeout of its own in Pingora):
        // the client's fault, answered 408, never the endpoint's.
        ctx.client_stalled = e.esource() == &ErrorSource::Upstream
            && matches!(e.etype(), ErrorType::ReadTimedout | ErrorType::ConnectionClosed)
            && !ctx.body_empty
            && !session.as_downstream_mut().is_body_done();
        let refusal =
            if ctx.client_stalled { Some(Refusal::RequestTimeout) } else { Refusal::of_error(e, ctx.route.as_deref()) };
        if refusal.as_ref().is_some_and(Refusal::is_client_fault) {
            self.metrics.client_fault(
                self.listener_name(),
                if refusal == Some(Refusal::RequestTimeout) { "timeout" } else { "request" },
            );
        }
        let mut code = 0;
        if let (Some(refusal), None) = (&refusal, session.response_written()) {
            if let Ok((resp, body, _)) = refusal.to_response() {
                code = resp.status.as_u16();
                session.set_keepalive(None);
                let written = async {
                    session.write_response_header(Box::new(resp), false).await?;
                    session.write_response_body(Some(body), true).await
                };
                if written.await.is_err() {
                    code = 0;
                }
            }
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    /// Client faults are logged at debug level (and counted); any client can produce them.
    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, e: &Error) -> bool {
        ctx.client_stalled
            || e.esource() == &ErrorSource::Downstream
            || Refusal::of_error(e, None).is_some_and(|r| r.is_client_fault())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if let (Some(pick), Some(e), false) = (&ctx.pick, e, ctx.answered) {
            // No answer from the upstream (reset, timeout, malformed): counts against it. A
            // client's fault (a bad or stalled body, a client gone) never does.
            if e.esource() == &ErrorSource::Upstream && !ctx.client_stalled {
                pick.failure();
            }
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        self.record(ctx.route.as_ref(), status);
        if self.observed() {
            let done = Done {
                client: client_ip(session),
                status,
                bytes: session.body_bytes_sent(),
                started: ctx.started,
                upstream: ctx.pick.as_ref().map(|p| p.addr),
                upstream_sent: ctx.sent_at,
                route: ctx.route.as_deref(),
                request_id: &ctx.request_id,
                trace: ctx.trace.as_ref(),
            };
            self.log(session.req_header(), &done);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_ip_matches_display() {
        let mut buf = [0u8; 64];
        for ip in ["0.0.0.0", "1.2.3.4", "10.0.99.100", "255.255.255.255", "192.168.0.10", "::1", "2001:db8::7"] {
            let parsed: std::net::IpAddr = ip.parse().unwrap();
            let len = format_ip(parsed, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), ip);
        }
        for n in 0..=255u8 {
            let ip = std::net::IpAddr::from([n, 255 - n, n / 3, 7]);
            let len = format_ip(ip, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), ip.to_string());
        }
    }
}
