//! The request lifecycle, written once for every engine and protocol.
//!
//! ferry serves HTTP through two engines: the fast HTTP/1 engine ([`crate::h1`]) and Pingora's
//! proxy ([`crate::proxy`], which serves every HTTP/2 request and HTTP/1 with `--http1-engine
//! pingora`). Both are adapters: they move bytes and call the phases of one [`Exchange`] per
//! request, in this order. Every decision (what to refuse, where to send, what to add or remove,
//! when to retry, what to answer after an error, what to count and log) is made here.
//!
//! | phase | runs | an error |
//! |---|---|---|
//! | [`Exchange::begin`] | once, after the request head is read | is a [`Reply`] the adapter sends; the request ends |
//! | [`Exchange::next_peer`] | before each upstream attempt | 503 (no endpoint) via [`Exchange::fail`] |
//! | [`Exchange::connected`] | after each connect (new or pooled) | — |
//! | [`Exchange::connect_failed`] | when a connect fails | says whether to try the next peer |
//! | [`Exchange::upstream_request`] | once, on the head sent upstream | 500 via [`Exchange::fail`] |
//! | [`Exchange::body_chunk`] | per request body piece, before it is sent | 413, the client's fault |
//! | [`Exchange::upstream_response`] | per final response head from upstream | — (may say retry) |
//! | [`Exchange::downstream_response`] | once, on the head sent to the client | 500 via [`Exchange::fail`] |
//! | [`Exchange::fail`] | once, when anything after `begin` failed | gives the reply, if one can still be sent |
//! | [`Exchange::finish`] | once, last, whatever happened | — |
//!
//! [`Gateway`] is the per-listener context the phases read (the live table, timeouts, metrics,
//! logs), and [`Reply`] is the one type of answer ferry gives itself, with the one function
//! that maps every refusal and every proxy error to a response. The layer adds no `dyn`, no
//! boxing and no allocation per request: the exchange lives on the adapter's stack (fast engine)
//! or as Pingora's per-request context.

mod exchange;
mod headers;
mod mirror;
mod reply;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::header;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;

pub use crate::head::{EditHead, Name, UpstreamHead};
pub use exchange::{Answer, Exchange};
pub(crate) use headers::origin_form;
pub use reply::Reply;

use crate::access_log::{AccessLog, Entry};
use crate::cors::Cors;
use crate::metrics::{BackendLabels, Metrics, StatusCounters};
use crate::record::Done;
use crate::safety;
use crate::table::{BackendState, HttpsRedirect, ListenerKey, Match, Route, RouteOptions, UpstreamProtocol};
use crate::trace::TraceContext;
use crate::SharedTable;

/// What the routing decision needs to know of the connection a request came on.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConnFacts<'a> {
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

/// The final response head an engine has sent, if one was (an interim `100 Continue` is not:
/// after it, ferry's reply to a failure is still to be sent).
pub fn final_head(written: Option<&pingora::http::ResponseHeader>) -> Option<&pingora::http::ResponseHeader> {
    written.filter(|r| !r.status.is_informational())
}

/// The routing decision for one request: the route to proxy to, or ferry's own reply (with the
/// route it is for, when one matched, so its metrics and log line name it).
#[derive(Debug)]
pub enum Routing {
    Proxy(Arc<Route>),
    Reply(Option<Arc<Route>>, Reply),
}

/// The per-listener context of the lifecycle: one per listener (`tls` says which), shared by
/// the engines that serve it.
pub struct Gateway {
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
    /// The Gateway address this listener serves (`None`: the Ingress listeners).
    scope: Option<ListenerKey>,
}

impl Gateway {
    pub fn new(table: SharedTable, metrics: Arc<Metrics>, tls: bool, timeouts: Timeouts) -> Self {
        let unmatched = metrics.status_counters(&Arc::from("none"));
        Gateway {
            table,
            metrics,
            tls,
            timeouts,
            unmatched,
            access_log: None,
            otlp: None,
            trusted_proxies: Arc::new([]),
            scope: None,
        }
    }

    /// A listener of a Gateway address: requests are routed by that address's routes only.
    pub fn with_scope(mut self, key: ListenerKey) -> Self {
        self.scope = Some(key);
        self
    }

    pub fn with_trusted_proxies(mut self, nets: Arc<[ipnet::IpNet]>) -> Self {
        self.trusted_proxies = nets;
        self
    }

    pub fn with_access_log(mut self, log: Option<Arc<AccessLog>>) -> Self {
        self.access_log = log;
        self
    }

    pub fn with_otlp(mut self, otlp: Option<Arc<crate::otlp::Exporter>>) -> Self {
        self.otlp = otlp;
        self
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Whether this is the TLS listener.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The listener's name in metrics.
    pub fn listener_name(&self) -> &'static str {
        match (self.scope.is_some(), self.tls) {
            (false, false) => "ferry http",
            (false, true) => "ferry https",
            (true, false) => "gateway http",
            (true, true) => "gateway https",
        }
    }

    /// Counts a client fault seen before any request began (a head that never came whole, a
    /// malformed one): `kind` is `timeout` or `request`.
    pub fn client_fault(&self, kind: &'static str) {
        self.metrics.client_fault(self.listener_name(), kind);
    }

    /// Counts a reply that is the client's fault.
    fn count_fault(&self, reply: &Reply) {
        if reply.is_client_fault() {
            self.client_fault(if *reply == Reply::RequestTimeout { "timeout" } else { "request" });
        }
    }

    /// Whether `client` may state forwarding facts (it is a trusted proxy).
    fn trusts(&self, client: Option<IpAddr>) -> bool {
        !self.trusted_proxies.is_empty() && client.is_some_and(|ip| crate::limits::allowed(&self.trusted_proxies, ip))
    }

    /// The routing decision: the safety rules, the TLS name check, the route lookup and the
    /// route's policy (limits, CORS preflight, redirects, backend state).
    pub fn route(&self, req: &RequestHeader, conn: &ConnFacts<'_>) -> Routing {
        let table = self.table.load();
        let target = match safety::check_request(req, self.tls, conn.raw_content_length) {
            Ok(t) => t,
            Err(r) => return Routing::Reply(None, Reply::Reject(r)),
        };
        let path = safety::match_path(target.path);
        let (found, listener_port) = match &self.scope {
            None => {
                if conn.sni.is_some_and(|sni| table.certs.misdirected(sni, target.host)) {
                    return Routing::Reply(None, Reply::Misdirected);
                }
                (table.lookup(target.host, &path), if self.tls { 443 } else { 80 })
            }
            Some(key) => {
                let Some(port) = table.gateway(key) else { return Routing::Reply(None, Reply::GatewayGone) };
                if conn.sni.is_some_and(|sni| port.misdirected(sni, target.host)) {
                    return Routing::Reply(None, Reply::Misdirected);
                }
                (port.lookup(target.host, &path, Some(req)), key.port)
            }
        };
        let route = match found {
            Match::NotFound => return Routing::Reply(None, Reply::NoRoute),
            Match::Route(route) => route.for_request(&req.headers),
        };
        let options = &route.options;
        let reply = if let Some(refusal) = check_limits(options, req, conn.client) {
            refusal
        } else if let Some(cors) = options.cors.as_ref().filter(|_| Cors::is_preflight(req)) {
            Reply::Preflight(cors.clone(), cors.preflight(req).map(Box::new))
        } else if let Some(to) = &options.redirect {
            Reply::Redirect(to.code, to.location.clone())
        } else if let Some(to) = &options.request_redirect {
            // The path the route matched (normalised), so a prefix is replaced where it matched.
            let query = req.uri.query().map_or(String::new(), |q| format!("?{q}"));
            Reply::Redirect(to.code, to.location(self.tls, listener_port, target.host, &format!("{path}{query}")))
        } else if !self.tls
            && match options.https_redirect {
                HttpsRedirect::Never => false,
                HttpsRedirect::IfCertified => table.certs.covers(target.host),
                HttpsRedirect::Always => true,
            }
        {
            Reply::Redirect(308, headers::https_location(target.host, req))
        } else if let Some(root) = options.app_root.as_ref().filter(|_| path == "/") {
            Reply::Redirect(302, root.to_string())
        } else {
            if route.backend.is_serving() {
                return Routing::Proxy(route.clone());
            }
            // Endpoints here too: they came between the flag's read and this one.
            match &*route.backend.state() {
                BackendState::Endpoints(_) | BackendState::External { .. } => return Routing::Proxy(route.clone()),
                BackendState::NoEndpoints => Reply::no_endpoints(&route.backend),
                BackendState::Unresolved(why) => Reply::Unavailable(why.clone()),
                BackendState::Invalid(why) => Reply::InvalidBackend(why.clone()),
            }
        };
        Routing::Reply(Some(route.clone()), reply)
    }

    /// The upstream peer for one pod endpoint, with the route's timeouts where it sets them and
    /// the gateway's otherwise. An upgrade (WebSocket) is always HTTP/1.1.
    fn peer(&self, endpoint: SocketAddr, route: &Route, upgrade: bool) -> HttpPeer {
        let backend = &route.backend;
        let connect = route.options.connect.unwrap_or(self.timeouts.connect);
        let mut peer = match &backend.tls {
            // A BackendTLSPolicy: plaintext to Pingora, TLS (verified) inside its L4 connect.
            Some(policy) => {
                let mut peer = HttpPeer::new(endpoint, false, policy.hostname().to_string());
                let http2 = backend.protocol == UpstreamProtocol::H2c && !upgrade;
                peer.options.custom_l4 = Some(policy.connector(http2, connect));
                peer.group_key = policy.group();
                peer
            }
            None => {
                HttpPeer::new(endpoint, backend.protocol == UpstreamProtocol::Tls, backend.server_name().to_string())
            }
        };
        peer.options.connection_timeout = Some(connect);
        peer.options.read_timeout = Some(route.options.read.unwrap_or(self.timeouts.read));
        peer.options.idle_timeout = Some(self.timeouts.idle);
        // The upstream head is prepared by `Exchange::upstream_request` on every engine;
        // Pingora's own policy would differ from it (it answers `Connection: Host` with 400 and
        // strips a nominated `X-Request-Id` before ferry sees the head).
        peer.options.http_upstream_request_policy = pingora::upstreams::peer::HttpUpstreamRequestPolicy::preserve();
        match backend.protocol {
            UpstreamProtocol::Http1 => {}
            // Prior knowledge: a plaintext peer whose lowest version is 2 is spoken to in h2c.
            UpstreamProtocol::H2c if !upgrade => peer.options.set_http_version(2, 2),
            UpstreamProtocol::H2c => {}
            UpstreamProtocol::Tls => {
                peer.options.verify_cert = false;
                peer.options.verify_hostname = false;
            }
        }
        peer
    }

    /// How long a pooled upstream connection may idle.
    pub fn upstream_idle(&self) -> Duration {
        self.timeouts.idle
    }

    fn connect_failed(&self, route: &Route) {
        self.metrics
            .upstream_connect_errors
            .get_or_create(&BackendLabels { backend: route.backend.name.clone() })
            .inc();
    }

    /// Counts one finished request (status 0: no response was sent).
    fn record(&self, route: Option<&Arc<Route>>, status: u16) {
        let counters = match route {
            Some(r) => r.counters.get_or_init(|| self.metrics.status_counters(&r.name)),
            None => &self.unmatched,
        };
        counters.record(status);
    }

    /// Whether finished requests need `log` at all.
    fn observed(&self) -> bool {
        self.access_log.is_some() || self.otlp.is_some() || tracing::enabled!(tracing::Level::DEBUG)
    }

    /// Writes the access log line of one finished request (when logging is on), its OTLP span
    /// (when sampled), and a debug event with the same facts.
    fn log(&self, req: &RequestHeader, done: &Done<'_>) {
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
            time: std::time::SystemTime::now(),
            client: done.client,
            host,
            method: req.method.as_str(),
            path,
            status: done.status,
            bytes: done.bytes,
            duration_ms: millis(done.started.elapsed()),
            upstream: done.upstream,
            upstream_ms: done.upstream_sent.map(|t| millis(t.elapsed())),
            route: done.route.map(|r| &*r.name),
            request_id: done.request_id,
            trace_id: done.trace_id(),
        });
    }

    /// The trace of a new request (sampled for export by the OTLP exporter's ratio).
    fn trace_of(&self, req: &RequestHeader) -> TraceContext {
        TraceContext::of(req, self.otlp.as_ref().map_or(0.0, |o| o.sample_ratio()))
    }
}

/// The route's source allow-list, rate limit and body size limit (by `Content-Length`; bodies
/// without one are counted as they stream, by [`Exchange::body_chunk`]).
fn check_limits(options: &RouteOptions, req: &RequestHeader, client: Option<IpAddr>) -> Option<Reply> {
    if let Some(nets) = &options.allow_sources {
        if !client.is_some_and(|ip| crate::limits::allowed(nets, ip)) {
            return Some(Reply::Forbidden);
        }
    }
    if let (Some(limiter), Some(ip)) = (&options.rate_limit, client) {
        if let Err(wait) = limiter.check(ip, std::time::Instant::now()) {
            return Some(Reply::TooManyRequests(wait.as_secs_f64().ceil().max(1.0) as u64));
        }
    }
    if let Some(max) = options.max_body {
        let length = req.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        if length.is_some_and(|n| n > max) {
            return Some(Reply::PayloadTooLarge);
        }
    }
    None
}

/// Milliseconds at microsecond resolution, as the access log writes them (`0.814`, not the
/// binary fraction's `0.8149299999999999`).
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1e3
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_are_logged_in_milliseconds_to_the_microsecond() {
        let ms = super::millis(std::time::Duration::from_nanos(814_930));
        assert_eq!(ryu::Buffer::new().format_finite(ms), "0.814");
        assert_eq!(super::millis(std::time::Duration::from_secs(2)), 2000.0);
    }
}
