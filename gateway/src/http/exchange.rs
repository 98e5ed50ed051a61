//! One request's passage through the gateway, phase by phase (the table in [`crate::http`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use super::headers::{self, cookie};
use super::{ConnFacts, Gateway, Reply, Routing};
use crate::balance::{hash_bytes, hash_ip, Pick, PickInput, Policy};
use crate::head::EditHead;
use crate::record::Done;
use crate::safety;
use crate::table::Route;
use crate::trace::TraceContext;

/// Endpoints tried per request when connects fail.
pub const CONNECT_ATTEMPTS: u8 = 3;

/// What to do with an upstream's response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Send it on to the client.
    Relay,
    /// Drop it and make the request again on another endpoint (a 502/503/504 the route retries).
    Retry,
}

/// Per-request state carried between the phases.
pub struct Exchange {
    started: Instant,
    /// This request counts as in flight (for draining) while the exchange lives.
    _work: crate::drain::Work,
    client: Option<IpAddr>,
    /// The client is a trusted proxy (its forwarding headers are kept).
    trusted: bool,
    trace: Option<TraceContext>,
    /// The request id, as sent upstream (visible ASCII).
    request_id: http::HeaderValue,
    /// The client sent the request id (so it is already on the upstream request).
    request_id_from_client: bool,
    route: Option<Arc<Route>>,
    /// The client, hash key, affinity preference and endpoint to avoid for the next pick.
    input: PickInput,
    /// The endpoint of the current attempt (in flight while held).
    pick: Option<Pick>,
    /// When the current attempt was sent (latency is measured from the connect).
    sent_at: Option<Instant>,
    connect_attempts: u8,
    retries_5xx: u8,
    /// The request was made again after a pooled connection was lost (at most once).
    replayed: bool,
    /// The current attempt's outcome is recorded in its endpoint's health.
    answered: bool,
    /// The request has no body (so a retry need not replay one).
    body_empty: bool,
    /// A WebSocket upgrade ferry passes on.
    upgrade: bool,
    /// The client waits for `100 Continue` before sending its body.
    expect_continue: bool,
    /// Request body bytes seen (for the body size limit).
    body_bytes: u64,
    /// The exchange failed because the client's body stalled.
    client_stalled: bool,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange::new()
    }
}

impl Exchange {
    /// A new exchange, counted as in flight until dropped.
    pub fn new() -> Exchange {
        Exchange {
            started: Instant::now(),
            _work: crate::drain::Work::start(),
            client: None,
            trusted: false,
            trace: None,
            request_id: http::HeaderValue::from_static(""),
            request_id_from_client: false,
            route: None,
            input: PickInput::default(),
            pick: None,
            sent_at: None,
            connect_attempts: 0,
            retries_5xx: 0,
            replayed: false,
            answered: false,
            body_empty: true,
            upgrade: false,
            expect_continue: false,
            body_bytes: 0,
            client_stalled: false,
        }
    }

    /// **begin** — after the request head is read, before anything is sent upstream. Applies the
    /// safety rules and the route's policy (limits, CORS preflight, redirects, backend state),
    /// refuses upgrades the rules do not pass (`req` loses their headers), and starts the
    /// request's id and trace. `Err`: ferry answers with the reply and the request ends.
    pub fn begin(
        &mut self,
        gw: &Gateway,
        req: &mut RequestHeader,
        conn: &ConnFacts<'_>,
        body_empty: bool,
    ) -> std::result::Result<(), Reply> {
        self.client = conn.client;
        self.trusted = gw.trusts(conn.client);
        self.body_empty = body_empty;
        self.upgrade = safety::drop_refused_upgrade(req, body_empty);
        (self.request_id, self.request_id_from_client) = headers::request_id(req);
        self.trace = Some(gw.trace_of(req));
        match gw.route(req, conn) {
            Routing::Proxy(route) => {
                self.input = pick_input(&route, req, conn.client);
                self.expect_continue = !body_empty && headers::expects_continue(req);
                self.route = Some(route);
                Ok(())
            }
            Routing::Reply(route, reply) => {
                self.route = route;
                gw.count_fault(&reply);
                Err(reply)
            }
        }
    }

    /// Whether the adapter answers `100 Continue` itself before reading the body: the upstream
    /// request carries no `Expect`, so no backend sends one.
    pub fn expect_continue(&self) -> bool {
        self.expect_continue
    }

    /// Whether the request has no body.
    pub fn body_empty(&self) -> bool {
        self.body_empty
    }

    /// Whether the request is a WebSocket upgrade ferry passes on (the adapter tunnels after a
    /// `101`).
    pub fn upgrade(&self) -> bool {
        self.upgrade
    }

    /// The matched route.
    pub fn route(&self) -> Option<&Arc<Route>> {
        self.route.as_ref()
    }

    /// **next peer** — before each upstream attempt: picks the endpoint (the policy, affinity by
    /// client or cookie, avoiding the endpoint that failed last). `Err` (503: no endpoint) ends
    /// the exchange through [`fail`](Self::fail).
    pub async fn next_peer(&mut self, gw: &Gateway) -> Result<HttpPeer> {
        let Some(route) = &self.route else {
            return Err(Error::explain(ErrorType::InternalError, "next_peer without a route"));
        };
        let backend = &route.backend;
        if self.pick.is_none() && route.options.retries > 0 {
            backend.retry_budget.deposit();
        }
        if let (Some(pause), true) = (route.options.retry_backoff, self.retries_5xx > 0) {
            tokio::time::sleep(pause).await;
        }
        let Some(pick) = backend.pick_async(&self.input).await else {
            return Err(Error::explain(ErrorType::HTTPStatus(503), "backend has no endpoints"));
        };
        let peer = gw.peer(pick.addr, route, self.upgrade);
        self.pick = Some(pick);
        // Set by `connected`: an attempt that never connects has no latency to measure.
        self.sent_at = None;
        self.answered = false;
        Ok(peer)
    }

    /// **connected** — after each connect to the peer (new or pooled): the endpoint's latency is
    /// measured from here.
    pub fn connected(&mut self) {
        self.sent_at = Some(Instant::now());
    }

    /// **connect failed** — when connecting to the peer failed: counts it against the endpoint
    /// and says whether to try another one (then call [`next_peer`](Self::next_peer) again).
    pub fn connect_failed(&mut self, gw: &Gateway, e: &Error) -> bool {
        let (Some(route), Some(pick)) = (&self.route, &self.pick) else { return false };
        gw.connect_failed(route);
        pick.failure();
        self.answered = true;
        self.input.avoid = Some(pick.addr);
        self.connect_attempts += 1;
        let retry = self.connect_attempts < CONNECT_ATTEMPTS && route.backend.has_alternatives();
        tracing::debug!(request_id = self.request_id(), endpoint = %pick.addr, error = %e, retry, "connect failed");
        retry
    }

    /// **upstream request** — once, on the head to send upstream (a copy of the client's): hop
    /// by hop and spoofable headers removed, origin-form target, the route's rewrite, request
    /// id, trace context and forwarding headers. `Err` ends the exchange through
    /// [`fail`](Self::fail).
    pub fn upstream_request(&self, gw: &Gateway, upstream: &mut impl EditHead) -> Result<()> {
        safety::strip_request_headers(upstream, self.upgrade, self.trusted);
        headers::to_origin_form(upstream)?;
        headers::set_request_id(upstream, &self.request_id, self.request_id_from_client)?;
        if let Some(trace) = &self.trace {
            trace.set_on(upstream)?;
        }
        if let Some(route) = &self.route {
            headers::rewrite(route, upstream)?;
        }
        headers::add_forwarding_headers(upstream, self.client, gw.tls, self.trusted)?;
        if let Some(mirrors) = self.route.as_ref().and_then(|r| r.options.mirrors.as_ref()) {
            super::mirror::send(mirrors, &upstream.to_request_header(), self.body_empty, gw.timeouts.connect);
        }
        Ok(())
    }

    /// **body chunk** — per piece of the request body, before it is sent upstream: counts it
    /// against the route's body size limit. `Err` (413, the client's fault) ends the exchange;
    /// the upstream request is left unfinished (an HTTP/2 stream is reset).
    pub fn body_chunk(&mut self, len: usize) -> Result<()> {
        let Some(max) = self.route.as_ref().and_then(|r| r.options.max_body) else { return Ok(()) };
        self.body_bytes += len as u64;
        if self.body_bytes > max {
            let mut e = Error::explain(ErrorType::HTTPStatus(413), "request body over the route's limit");
            e.as_down();
            return Err(e);
        }
        Ok(())
    }

    /// **pooled connection lost** — an attempt on a pooled connection failed before any answer:
    /// the backend closed the idle connection as the request went out (the keep-alive race).
    /// Says whether to make the request once more, on a new connection: only for a request
    /// without a body and with an idempotent method, once; not counted against the endpoint
    /// nor as one of the route's retries.
    pub fn replay_on_new_connection(&mut self, req: &RequestHeader, e: &Error) -> bool {
        let lost = matches!(e.etype(), ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError)
            && e.esource() != &ErrorSource::Downstream;
        let replay = lost && !self.replayed && !self.answered && self.body_empty && req.method.is_idempotent();
        if replay {
            self.replayed = true;
            tracing::debug!(request_id = self.request_id(), error = %e, "pooled connection lost; once more on a new one");
        }
        replay
    }

    /// **upstream response** — per response head from the upstream: records the endpoint's
    /// health and latency, and says whether to retry elsewhere (a 502/503/504 the route
    /// retries: idempotent method, no body to replay, retry budget left, another endpoint).
    /// Informational heads are relayed.
    ///
    /// `Err` (a `101` to a request that asked for no upgrade: the client could not speak what
    /// follows) ends the exchange through [`fail`](Self::fail) with 502.
    pub fn upstream_response(&mut self, req: &RequestHeader, status: u16) -> Result<Answer> {
        if status == 101 && !self.upgrade {
            if let Some(pick) = &self.pick {
                pick.failure();
                self.answered = true;
            }
            let mut e = Error::explain(ErrorType::InvalidHTTPHeader, "101 to a request without an upgrade");
            e.as_up();
            return Err(e);
        }
        let (Some(route), Some(pick), Some(sent_at)) = (&self.route, &self.pick, self.sent_at) else {
            return Ok(Answer::Relay);
        };
        if status < 200 {
            return Ok(Answer::Relay);
        }
        if status >= 500 {
            pick.failure();
        } else {
            pick.success(sent_at.elapsed());
        }
        self.answered = true;
        // Ingress retries (502-504) go to another endpoint within the backend's retry budget;
        // a Gateway API `retry` names its codes and attempts itself and may retry the only
        // endpoint there is.
        let options = &route.options;
        let (retried, budgeted) = match &options.retry_on {
            Some(codes) => (codes.contains(&status), false),
            None => (matches!(status, 502..=504), true),
        };
        let retry = retried
            && self.retries_5xx < options.retries
            && self.body_empty
            && req.method.is_idempotent()
            && (!budgeted || route.backend.has_alternatives() && route.backend.retry_budget.withdraw());
        if !retry {
            return Ok(Answer::Relay);
        }
        self.retries_5xx += 1;
        self.input.avoid = Some(pick.addr);
        tracing::debug!(request_id = self.request_id(), endpoint = %pick.addr, status, "retrying on another endpoint");
        Ok(Answer::Retry)
    }

    /// **downstream response** — once, on the head sent to the client: hop-by-hop headers
    /// removed, the body framed for the client's HTTP version ([`safety::frame_response`]), the
    /// affinity cookie (a new binding), CORS headers. `Ok(true)`: the connection closes after
    /// this response (the adapter says so in the head). `Err` ends the exchange through
    /// [`fail`](Self::fail).
    pub fn downstream_response(
        &mut self,
        gw: &Gateway,
        req: &RequestHeader,
        resp: &mut ResponseHeader,
    ) -> Result<bool> {
        safety::strip_response_headers(resp);
        let close = safety::frame_response(req, resp)?;
        let Some(route) = &self.route else { return Ok(close) };
        if let Some(pick) = &self.pick {
            if let Some(cookie) = headers::affinity_cookie(route, self.input.prefer, pick.addr, gw.tls) {
                resp.append_header(header::SET_COOKIE, cookie)?;
            }
        }
        headers::add_cors(route, req, resp)?;
        headers::edit_response(route, resp)?;
        Ok(close)
    }

    /// **fail** — once, when the exchange failed after [`begin`](Self::begin): in a phase, in
    /// the adapter's I/O with either side, or after the last connect attempt. An upstream that
    /// gave no answer counts against its endpoint; a client's fault never does (a bad or stalled
    /// body, a client gone; `body_unfinished`: the client's body had not all arrived, so an
    /// upstream that timed out was waiting for the client). Returns the reply to send if the
    /// response has not started (`None`: the client is gone). The adapter then closes the
    /// connection.
    pub fn fail(&mut self, gw: &Gateway, e: &Error, body_unfinished: bool) -> Option<Reply> {
        let upstream = e.esource() == &ErrorSource::Upstream;
        self.client_stalled = upstream
            && matches!(e.etype(), ErrorType::ReadTimedout | ErrorType::ConnectionClosed)
            && !self.body_empty
            && body_unfinished;
        if let (Some(pick), false) = (&self.pick, self.answered) {
            if upstream && !self.client_stalled {
                pick.failure();
                self.answered = true;
            }
        }
        let reply =
            if self.client_stalled { Some(Reply::RequestTimeout) } else { Reply::of_error(e, self.route.as_deref()) };
        if let Some(reply) = &reply {
            gw.count_fault(reply);
        }
        tracing::debug!(request_id = self.request_id(), route = self.route.as_deref().map(|r| &*r.name), error = %e, "proxying failed");
        reply
    }

    /// Whether the failure [`fail`](Self::fail) saw is the client's (logged at debug level).
    pub fn is_client_fault(&self, e: &Error) -> bool {
        self.client_stalled
            || e.esource() == &ErrorSource::Downstream
            || Reply::of_error(e, None).is_some_and(|r| r.is_client_fault())
    }

    /// **finish** — once, last, whatever happened: the request's metrics, access log line,
    /// OTLP span and debug event. `status` 0: no response was sent; `bytes`: response body
    /// bytes sent.
    pub fn finish(&mut self, gw: &Gateway, req: &RequestHeader, status: u16, bytes: usize) {
        gw.record(self.route.as_ref(), status);
        if gw.observed() {
            let done = Done {
                client: self.client,
                status,
                bytes,
                started: self.started,
                upstream: self.pick.as_ref().map(|p| p.addr),
                upstream_sent: self.sent_at,
                route: self.route.as_deref(),
                request_id: self.request_id(),
                trace: self.trace.as_ref(),
            };
            gw.log(req, &done);
        }
    }

    /// The request id (for logs).
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    /// The endpoint of the current attempt.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.pick.as_ref().map(|p| p.addr)
    }
}

/// What a pick for this request needs: the client and the request's hash key for hash policies,
/// and the endpoint its affinity cookie names.
fn pick_input(route: &Route, req: &RequestHeader, client: Option<IpAddr>) -> PickInput {
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use arc_swap::ArcSwap;

    use super::*;
    use crate::table::{Backend, BackendState, HostKey, PathKind, RouteOptions, TableBuilder};

    const A: &str = "127.0.0.1:1001";
    const B: &str = "127.0.0.1:1002";

    /// A gateway with `a.test/` → two endpoints, with `options`.
    fn gateway(options: RouteOptions) -> Gateway {
        let eps: Vec<SocketAddr> = vec![A.parse().unwrap(), B.parse().unwrap()];
        let backend = Arc::new(Backend::new("default/svc:80", BackendState::Endpoints(eps), &Default::default()));
        let route = Arc::new(Route::new("default/r".into(), backend).with_options(options));
        let mut b = TableBuilder::new();
        assert!(b.add_path(&HostKey::parse("a.test"), PathKind::Prefix, "/", route));
        let table = Arc::new(ArcSwap::from_pointee(b.finish()));
        Gateway::new(table, Arc::new(crate::Metrics::default()), false, super::super::Timeouts::default())
    }

    fn request(method: &str, host: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(method, b"/x", None).unwrap();
        req.insert_header("Host", host).unwrap();
        for (n, v) in headers {
            req.append_header(n.to_string(), *v).unwrap();
        }
        req
    }

    fn conn() -> ConnFacts<'static> {
        ConnFacts { client: Some([10, 0, 0, 9].into()), sni: None, raw_content_length: false }
    }

    fn begun(gw: &Gateway, req: &mut RequestHeader, body_empty: bool) -> Exchange {
        let mut x = Exchange::new();
        x.begin(gw, req, &conn(), body_empty).expect("proxied");
        x
    }

    #[test]
    fn begin_routes_or_replies() {
        let gw = gateway(RouteOptions { max_body: Some(10), ..RouteOptions::default() });
        let mut x = Exchange::new();
        assert_eq!(x.begin(&gw, &mut request("GET", "b.test", &[]), &conn(), true), Err(Reply::NoRoute));
        assert!(x.route().is_none());
        let mut x = Exchange::new();
        let mut big = request("POST", "a.test", &[("Content-Length", "11")]);
        assert_eq!(x.begin(&gw, &mut big, &conn(), false), Err(Reply::PayloadTooLarge));
        assert_eq!(x.route().map(|r| &*r.name), Some("default/r"), "a refusal keeps its route for metrics");
        let mut x = Exchange::new();
        let mut smuggle = request("POST", "a.test", &[("Content-Length", "1"), ("Transfer-Encoding", "chunked")]);
        assert!(matches!(x.begin(&gw, &mut smuggle, &conn(), false), Err(Reply::Reject(_))));
        let mut ok = request("POST", "a.test", &[("Expect", "100-continue"), ("Content-Length", "3")]);
        let x = begun(&gw, &mut ok, false);
        assert!(x.expect_continue() && !x.body_empty() && !x.upgrade());
    }

    #[tokio::test]
    async fn connect_failures_move_to_the_other_endpoint_then_stop() {
        let gw = gateway(RouteOptions::default());
        let mut x = begun(&gw, &mut request("GET", "a.test", &[]), true);
        let e = Error::new(ErrorType::ConnectRefused);
        let first = x.next_peer(&gw).await.unwrap();
        assert!(x.connect_failed(&gw, &e), "another endpoint exists");
        let second = x.next_peer(&gw).await.unwrap();
        assert_ne!(first._address, second._address, "the failed endpoint is avoided");
        assert!(x.connect_failed(&gw, &e));
        x.next_peer(&gw).await.unwrap();
        x.connected();
        assert!(!x.connect_failed(&gw, &e), "three attempts at most");
    }

    #[tokio::test]
    async fn a_5xx_is_retried_elsewhere_only_when_safe() {
        let gw = gateway(RouteOptions { retries: 1, ..RouteOptions::default() });
        let get = request("GET", "a.test", &[]);
        let mut x = begun(&gw, &mut get.clone(), true);
        x.next_peer(&gw).await.unwrap();
        x.connected();
        assert_eq!(x.upstream_response(&get, 100).unwrap(), Answer::Relay, "informational");
        assert_eq!(x.upstream_response(&get, 503).unwrap(), Answer::Retry);
        let failed = x.endpoint();
        x.next_peer(&gw).await.unwrap();
        x.connected();
        assert_ne!(x.endpoint(), failed);
        assert_eq!(x.upstream_response(&get, 503).unwrap(), Answer::Relay, "retries used up");
        // A body to replay, or no copy of the head left: never retried.
        let post = request("POST", "a.test", &[("Content-Length", "1")]);
        let mut x = begun(&gw, &mut post.clone(), false);
        x.next_peer(&gw).await.unwrap();
        x.connected();
        assert_eq!(x.upstream_response(&post, 502).unwrap(), Answer::Relay);
        // A pooled connection lost before any answer: made again once, without a body only.
        let mut x = begun(&gw, &mut get.clone(), true);
        x.next_peer(&gw).await.unwrap();
        let mut lost = Error::new(ErrorType::ConnectionClosed);
        lost.as_up();
        assert!(x.replay_on_new_connection(&get, &lost));
        assert!(!x.replay_on_new_connection(&get, &lost), "once");
        let mut x = begun(&gw, &mut post.clone(), false);
        x.next_peer(&gw).await.unwrap();
        assert!(!x.replay_on_new_connection(&post, &lost), "a body is never replayed");
        // A 101 the request did not ask for is the upstream's fault (502).
        let mut x = begun(&gw, &mut get.clone(), true);
        x.next_peer(&gw).await.unwrap();
        x.connected();
        let e = x.upstream_response(&get, 101).unwrap_err();
        assert_eq!(x.fail(&gw, &e, false), Some(Reply::BadGateway));
    }

    #[test]
    fn the_body_limit_counts_streamed_pieces() {
        let gw = gateway(RouteOptions { max_body: Some(10), ..RouteOptions::default() });
        let mut x = begun(&gw, &mut request("POST", "a.test", &[("Transfer-Encoding", "chunked")]), false);
        x.body_chunk(6).unwrap();
        x.body_chunk(4).unwrap();
        let e = x.body_chunk(1).unwrap_err();
        assert_eq!((e.etype(), e.esource()), (&ErrorType::HTTPStatus(413), &ErrorSource::Downstream));
        assert_eq!(x.fail(&gw, &e, true), Some(Reply::PayloadTooLarge));
    }

    #[tokio::test]
    async fn failures_are_the_endpoints_or_the_clients() {
        let gw = gateway(RouteOptions::default());
        let mut x = begun(&gw, &mut request("GET", "a.test", &[]), true);
        x.next_peer(&gw).await.unwrap();
        x.connected();
        let mut reset = Error::new(ErrorType::ConnectionClosed);
        reset.as_up();
        assert_eq!(x.fail(&gw, &reset, false), Some(Reply::BadGateway));
        assert!(!x.is_client_fault(&reset));
        // An upstream that timed out while the client's body was unfinished waited for the client.
        let mut x = begun(&gw, &mut request("POST", "a.test", &[("Content-Length", "5")]), false);
        x.next_peer(&gw).await.unwrap();
        x.connected();
        let mut timeout = Error::new(ErrorType::ReadTimedout);
        timeout.as_up();
        assert_eq!(x.fail(&gw, &timeout, true), Some(Reply::RequestTimeout));
        assert!(x.is_client_fault(&timeout));
        // No endpoint at all: 503 naming the backend.
        let none = Error::new(ErrorType::HTTPStatus(503));
        let mut x = begun(&gw, &mut request("GET", "a.test", &[]), true);
        assert!(matches!(x.fail(&gw, &none, false), Some(Reply::Unavailable(why)) if why.contains("default/svc:80")));
    }

    #[tokio::test]
    async fn upstream_and_downstream_heads_are_edited() {
        let gw = gateway(RouteOptions::default());
        let req = request("GET", "a.test", &[("Connection", "x-secret"), ("X-Secret", "1"), ("X-Request-Id", "abc")]);
        let mut x = begun(&gw, &mut req.clone(), true);
        x.next_peer(&gw).await.unwrap();
        x.connected();
        let mut up = req.clone();
        x.upstream_request(&gw, &mut up).unwrap();
        assert!(up.headers.get("x-secret").is_none() && up.headers.get("connection").is_none());
        assert_eq!(up.headers.get("x-request-id").unwrap(), "abc", "a usable client id is kept");
        assert_eq!(up.headers.get("x-forwarded-for").unwrap(), "10.0.0.9");
        assert_eq!(up.headers.get("x-forwarded-proto").unwrap(), "http");
        assert!(up.headers.get("traceparent").is_some());
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("Connection", "x-hop").unwrap();
        resp.insert_header("X-Hop", "1").unwrap();
        resp.insert_header("Keep-Alive", "timeout=5").unwrap();
        x.downstream_response(&gw, &req, &mut resp).unwrap();
        assert!(resp.headers.get("x-hop").is_none() && resp.headers.get("keep-alive").is_none());
    }
}
