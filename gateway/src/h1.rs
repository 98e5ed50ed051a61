//! The HTTP/1.x fast path: a Pingora `ServerApp` written directly on pingora-core's
//! HTTP/1 sessions and upstream connector.
//!
//! Why: measured under callgrind, pingora-proxy's generic request machinery (its per-request
//! boxed state machine, module and cache hooks, task channels) costs about 40% of the
//! instructions of a minimal fixed-peer proxy (bench/bare-pingora `--lean` vs default). This path
//! does the same job for the common case with one straight-line async function per request:
//! read the head, route it (the same [`Proxy::route`] decision the full proxy uses), connect with
//! one retry on another endpoint, stream the request body, stream the response back, return the
//! upstream connection to the pool and loop for the next request on the connection.
//!
//! What it hands to the full Pingora proxy instead: HTTP/2 — h2c connections (detected by the
//! preface, before anything is read) and TLS connections that negotiated `h2` by ALPN. TLS
//! connections speaking HTTP/1.x are served here too, after Pingora's TLS handshake.
//!
//! Semantics kept equal to the full proxy (the end-to-end tests run against this path):
//! hop-by-hop request headers are dropped, forwarding headers added, `Host` passed unchanged,
//! WebSocket/Upgrade tunnels after a `101`, 502 when no upstream answers, keep-alive both ways,
//! idle keep-alive connections closed when shutdown starts.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use http::header;
use pingora::apps::ServerApp;
use pingora::connectors::http::v1::Connector;
use pingora::connectors::http::v2;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession as ClientSession;
use pingora::protocols::http::v1::server::HttpSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
// Pingora's coarse timer wheel: a tokio timer per request head would wake the runtime's driver
// (an eventfd write, and an extra epoll round) on every request of a kept-alive connection.
use pingora::time::fast_timeout::fast_timeout;

use crate::balance::{Pick, PickInput};
use crate::proxy::{
    add_cors, add_forwarding_headers, affinity_cookie, inet_ip, may_retry_5xx, origin_form, pick_input, record_answer,
    request_id, rewrite, set_request_id, to_origin_form, ConnFacts, Done, Proxy, Refusal, CONNECT_ATTEMPTS,
};
use crate::safety;
use crate::table::Route;
use crate::table::UpstreamProtocol;

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One request's bookkeeping for the access log and the upstream request id.
struct Exchange {
    started: std::time::Instant,
    trace: crate::trace::TraceContext,
    request_id: String,
    request_id_from_client: bool,
    upstream: Option<std::net::SocketAddr>,
    upstream_sent: Option<std::time::Instant>,
}

/// Listener app: HTTP/1.x here, HTTP/2 delegated to the full proxy. With `lean` off (the
/// `pingora` engine), HTTP/1.x requests are served by the full proxy too, but their heads are
/// still read here, under ferry's timeouts.
pub struct H1App {
    proxy: Proxy,
    full: Arc<HttpProxy<Proxy>>,
    lean: bool,
    connector: Connector,
    /// For h2c backends.
    h2: v2::Connector,
}

impl H1App {
    /// `proxy` makes the routing decisions here; `full` (built on an equal `Proxy`) serves HTTP/2.
    pub fn new(proxy: Proxy, full: HttpProxy<Proxy>, options: Option<ConnectorOptions>) -> Self {
        let connector = Connector::new(options.clone());
        H1App { proxy, full: Arc::new(full), lean: true, connector, h2: v2::Connector::new(options) }
    }

    /// HTTP/1.x requests go to the full proxy (`--http1-engine pingora`).
    pub fn with_full_proxy_for_http1(mut self) -> Self {
        self.lean = false;
        self
    }

    /// The `pingora` engine's HTTP/1.x connection loop. Pingora bounds each read of a request
    /// head, not the head, so a client trickling a byte at a time could hold a connection
    /// forever; here each head is read whole under the header timeout (from its first byte on a
    /// kept-alive connection) and handed to the full proxy as already-received bytes. A request
    /// the client pipelined behind the previous one is already buffered by Pingora and read by
    /// it directly.
    async fn serve_full(&self, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let timeouts = *self.proxy.timeouts();
        let mut stopping = shutdown.clone();
        let mut settings: Option<pingora::apps::HttpPersistentSettings> = None;
        let mut kept_alive = false;
        loop {
            if settings.as_ref().is_some_and(carries_pipelined_bytes) {
                let mut session = pingora::protocols::http::ServerSession::new_http1(stream);
                if let Some(settings) = settings.take() {
                    settings.apply_to_session(&mut session);
                }
                let reused = pingora::apps::HttpServerApp::process_new_http(&self.full, session, shutdown).await?;
                (stream, settings) = reused.consume();
                continue;
            }
            let idle = kept_alive.then_some(timeouts.client_idle);
            let head = tokio::select! {
                biased;
                head = read_head(&mut stream, idle, timeouts.client_header) => head,
                _ = stopping.wait_for(|stopping| *stopping) => return None,
            };
            let head = match head {
                Ok(head) => head,
                Err(HeadWait::TimedOut) => {
                    tracing::debug!("client sent no complete request head in time; closed");
                    self.proxy.metrics().client_fault(self.proxy.listener_name(), "timeout");
                    return None;
                }
                Err(HeadWait::Closed) => return None,
            };
            // Pingora's parser stops at 256 fields (and 1 MiB) and answers 400; the answer is 431,
            // as on the fast engine.
            let too_large = match head_end(&head, &mut 0) {
                Some(end) => field_count(&head[..end]) > 256,
                None => true,
            };
            if too_large {
                self.proxy.metrics().client_fault(self.proxy.listener_name(), "request");
                let (status, body) = Refusal::HeadersTooLarge.response();
                let reply = format!(
                    "HTTP/1.1 {status} Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, &[reply.as_bytes(), &body].concat()).await;
                return None;
            }
            let mut session = pingora::protocols::http::ServerSession::new_http1(stream);
            match settings.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => session.set_keepalive(Some(timeouts.client_idle.as_secs().max(1))),
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            session.set_pipelined_prefix(head);
            let reused = pingora::apps::HttpServerApp::process_new_http(&self.full, session, shutdown).await?;
            (stream, settings) = reused.consume();
            kept_alive = true;
        }
    }

    /// Serves one request whose head has been read. Returns the status sent (0 if none) and
    /// whether the downstream connection may carry another request.
    async fn serve(
        &self,
        ds: &mut HttpSession,
        conn: &ConnFacts<'_>,
        exchange: &mut Exchange,
    ) -> (Option<Arc<Route>>, u16, bool) {
        let (route, refusal) = self.proxy.route(ds.req_header(), conn);
        if let Some(refusal) = refusal {
            self.count_fault(&refusal);
            let (status, reusable) = respond(ds, &refusal).await;
            return (route, status, reusable);
        }
        let Some(route) = route else { return (None, 0, false) };
        let outcome = self.forward(ds, &route, conn.client, exchange).await;
        let (status, reusable) = match outcome {
            Ok(reusable) => (ds.response_written().map_or(0, |r| r.status.as_u16()), reusable),
            Err(e) => {
                tracing::debug!(route = %route.name, error = %e, "proxying failed");
                match (ds.response_written(), Refusal::of_error(&e, Some(&route))) {
                    // Mid-response failure: the client sees a truncated body and a closed connection.
                    (Some(r), _) => (r.status.as_u16(), false),
                    (None, Some(why)) => {
                        self.count_fault(&why);
                        let (status, _) = respond(ds, &why).await;
                        (status, false)
                    }
                    (None, None) => (0, false),
                }
            }
        };
        (Some(route), status, reusable)
    }

    fn count_fault(&self, refusal: &Refusal) {
        if refusal.is_client_fault() {
            let kind = if *refusal == Refusal::RequestTimeout { "timeout" } else { "request" };
            self.proxy.metrics().client_fault(self.proxy.listener_name(), kind);
        }
    }

    /// Proxies one request to the route's backend. `Ok(reusable)` once the response is complete.
    async fn forward(
        &self,
        ds: &mut HttpSession,
        route: &Route,
        client: Option<IpAddr>,
        exchange: &mut Exchange,
    ) -> Result<bool> {
        let mut req = ds.req_header().clone();
        let upgrade = ds.is_upgrade_req();
        let trusted = self.proxy.trusts(client);
        let expect_continue = safety::strip_request_headers(&mut req, upgrade, trusted);
        to_origin_form(&mut req)?;
        add_forwarding_headers(&mut req, client, self.proxy.tls(), trusted)?;
        set_request_id(&mut req, &exchange.request_id, exchange.request_id_from_client)?;
        exchange.trace.set_on(&mut req)?;
        rewrite(route, &mut req)?;
        let backend = &route.backend;
        let mut input = pick_input(route, ds.req_header(), client);
        let body_empty = ds.is_body_empty();
        if route.options.retries > 0 {
            backend.retry_budget.deposit();
        }
        if backend.protocol == UpstreamProtocol::H2c && !upgrade {
            return self.forward_h2(ds, route, req, input, exchange).await;
        }

        // Connect, retrying on another endpoint when a connect fails, once on a fresh connection
        // when a pooled one turns out to be closed before taking the request, and (where the
        // route allows) on another endpoint when the answer is 502/503/504.
        let mut connect_failures = 0;
        let mut retries_5xx = 0;
        let mut stale_retry = true;
        let mut req = Some(req);
        loop {
            let Some(pick) = backend.pick_async(&input).await else {
                return Error::e_explain(ErrorType::HTTPStatus(503), "backend has no endpoints");
            };
            let peer = self.proxy.peer(pick.addr, route);
            let (mut us, reused) = match self.connector.get_http_session(&peer).await {
                Ok((mut us, reused)) => {
                    // The connector leaves the session's timeouts unset; they come from the peer.
                    us.read_timeout = peer.options.read_timeout;
                    us.write_timeout = peer.options.write_timeout;
                    (us, reused)
                }
                Err(e) if self.after_connect_failure(route, &pick, &mut connect_failures, &mut input) => {
                    tracing::debug!(endpoint = %pick.addr, error = %e, "connect failed; trying another endpoint");
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Copy the head only when a retry could still need it.
            let may_retry = (reused && stale_retry) || retries_5xx < route.options.retries;
            let head = match (may_retry, &mut req) {
                (true, Some(r)) => r.clone(),
                (_, r) => r.take().expect("request head is kept until the last attempt"),
            };
            let sent_at = std::time::Instant::now();
            exchange.upstream = Some(pick.addr);
            exchange.upstream_sent = Some(sent_at);
            match up(us.write_request_header(Box::new(head)).await) {
                Ok(_) => {}
                Err(_) if reused && stale_retry => {
                    stale_retry = false;
                    continue;
                }
                Err(e) => {
                    pick.failure();
                    return Err(e);
                }
            }

            // Request body, streamed. A client waiting for `100 Continue` gets it from us: the
            // upstream request carries no `Expect`, so the upstream will not send one.
            if !body_empty && !upgrade {
                if expect_continue {
                    // The session would otherwise treat a head sent before the body as an early
                    // final response and close the connection afterwards.
                    ds.set_close_on_response_before_downstream_finish(false);
                    down(ds.write_continue_response().await)?;
                    ds.set_close_on_response_before_downstream_finish(true);
                }
                let mut body = BodyLimit::new(route);
                while let Some(chunk) = read_body(ds).await? {
                    // The upstream connection is dropped with the request unfinished when the
                    // body goes over the limit.
                    body.count(&chunk)?;
                    up(us.write_body(&chunk).await)?;
                }
            }
            up(us.finish_body().await)?;

            // Response head; informational responses other than 101 are not relayed.
            let head = async {
                loop {
                    us.read_response().await?;
                    match us.get_status() {
                        Some(s) if s.is_informational() && s.as_u16() != 101 => continue,
                        _ => return Ok::<_, Box<Error>>(()),
                    }
                }
            };
            if let Err(e) = head.await {
                // No answer: a reset, a timeout or a malformed head counts against the endpoint.
                pick.failure();
                return Err(e);
            }
            let Some(resp) = us.resp_header() else {
                pick.failure();
                return Error::e_explain(ErrorType::InvalidHTTPHeader, "upstream sent no response head");
            };
            let status = resp.status.as_u16();
            record_answer(&pick, status, sent_at);
            if may_retry_5xx(route, ds.req_header(), body_empty, retries_5xx, status) && req.is_some() {
                retries_5xx += 1;
                input.avoid = Some(pick.addr);
                tracing::debug!(route = %route.name, endpoint = %pick.addr, status, "retrying on another endpoint");
                continue;
            }
            let mut resp = resp.clone();
            safety::strip_response_headers(&mut resp);
            add_cors(Some(route), ds.req_header(), &mut resp)?;
            if let Some(cookie) = affinity_cookie(route, input.prefer, pick.addr, self.proxy.tls()) {
                resp.append_header(header::SET_COOKIE, cookie)?;
            }
            down(ds.write_response_header(Box::new(resp)).await)?;

            if ds.was_upgraded() && us.was_upgraded() {
                us.maybe_upgrade_body_writer();
                tunnel(ds, &mut us).await?;
                return Ok(false);
            }

            while let Some(chunk) = up(us.read_body_ref().await)? {
                if !chunk.is_empty() {
                    down(ds.write_body(chunk).await)?;
                }
            }
            // Back to the pool before the client's response is finished, so a request the client
            // sends right after it finds the connection there.
            self.connector.release_http_session(us, &peer, Some(self.proxy.idle_timeout())).await;
            down(ds.finish_body().await)?;
            return Ok(true);
        }
    }

    /// Records a failed connect to `pick` and says whether to try another endpoint (which the
    /// next pick then avoids).
    fn after_connect_failure(&self, route: &Route, pick: &Pick, failures: &mut u8, input: &mut PickInput) -> bool {
        self.proxy.connect_failed(route);
        pick.failure();
        *failures += 1;
        input.avoid = Some(pick.addr);
        *failures < CONNECT_ATTEMPTS && route.backend.has_alternatives()
    }

    /// Proxies one HTTP/1.x request to an h2c backend (`appProtocol: kubernetes.io/h2c`).
    async fn forward_h2(
        &self,
        ds: &mut HttpSession,
        route: &Route,
        mut req: RequestHeader,
        mut input: PickInput,
        exchange: &mut Exchange,
    ) -> Result<bool> {
        // HTTP/2 has no connection-level headers; the body is framed by DATA frames.
        for name in [&header::TRANSFER_ENCODING, &header::CONNECTION, &header::UPGRADE] {
            if req.headers.contains_key(name) {
                req.remove_header(name);
            }
        }
        // `:scheme` names the hop to the backend (cleartext), as Pingora's engine sends it;
        // `X-Forwarded-Proto` carries the client's.
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(req.headers.get(header::HOST).map_or(&b""[..], |h| h.as_bytes()))
            .path_and_query(origin_form(&req))
            .build()
            .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "no authority for the h2c request"))?;
        req.set_uri(uri);
        let backend = &route.backend;
        let mut connect_failures = 0;
        let (mut us, pick, peer) = loop {
            let Some(pick) = backend.pick_async(&input).await else {
                return Error::e_explain(ErrorType::HTTPStatus(503), "backend has no endpoints");
            };
            let peer = self.proxy.peer(pick.addr, route);
            let session = match self.h2.reused_http_session(&peer).await {
                Ok(Some(s)) => Ok(s),
                _ => match self.h2.new_http_session::<_, ()>(&peer).await {
                    Ok(ClientSession::H2(s)) => Ok(s),
                    Ok(_) => Error::e_explain(ErrorType::H2Error, "h2c backend did not speak HTTP/2"),
                    Err(e) => Err(e),
                },
            };
            match session {
                Ok(mut us) => {
                    us.read_timeout = peer.options.read_timeout;
                    us.write_timeout = peer.options.write_timeout;
                    break (us, pick, peer);
                }
                Err(e) if self.after_connect_failure(route, &pick, &mut connect_failures, &mut input) => {
                    tracing::debug!(endpoint = %pick.addr, error = %e, "connect failed; trying another endpoint");
                    continue;
                }
                Err(e) => return Err(e),
            }
        };
        let sent_at = std::time::Instant::now();
        exchange.upstream = Some(pick.addr);
        exchange.upstream_sent = Some(sent_at);
        let body_empty = ds.is_body_empty();
        up(us.write_request_header(Box::new(req), body_empty))?;
        if !body_empty {
            let mut body = BodyLimit::new(route);
            while let Some(chunk) = read_body(ds).await? {
                // Over the limit, the stream is reset when `us` is dropped unfinished.
                body.count(&chunk)?;
                up(us.write_request_body(chunk, false).await)?;
            }
            up(us.finish_request_body())?;
        }
        if let Err(e) = up(us.read_response_header().await) {
            pick.failure();
            return Err(e);
        }
        let Some(resp) = us.response_header() else {
            pick.failure();
            return Error::e_explain(ErrorType::InvalidHTTPHeader, "upstream sent no response head");
        };
        record_answer(&pick, resp.status.as_u16(), sent_at);
        let mut resp = resp.clone();
        resp.set_version(http::Version::HTTP_11);
        if !resp.headers.contains_key(header::CONTENT_LENGTH) && ds.req_header().version == http::Version::HTTP_11 {
            resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
        }
        safety::strip_response_headers(&mut resp);
        add_cors(Some(route), ds.req_header(), &mut resp)?;
        if let Some(cookie) = affinity_cookie(route, input.prefer, pick.addr, self.proxy.tls()) {
            resp.append_header(header::SET_COOKIE, cookie)?;
        }
        down(ds.write_response_header(Box::new(resp)).await)?;
        while let Some(chunk) = up(us.read_response_body().await)? {
            if !chunk.is_empty() {
                down(ds.write_body(&chunk).await)?;
            }
        }
        self.h2.release_http_session(us, &peer, Some(self.proxy.idle_timeout()));
        down(ds.finish_body().await)?;
        Ok(true)
    }
}

/// Relays an upgraded connection (WebSocket or other `101` protocol) both ways until either side
/// closes. Bytes already buffered by either session are relayed first.
async fn tunnel(ds: &mut HttpSession, us: &mut pingora::protocols::http::v1::client::HttpSession) -> Result<()> {
    let (mut down_open, mut up_open) = (true, true);
    while down_open && up_open {
        tokio::select! {
            chunk = ds.read_body_bytes(), if down_open => match down(chunk)? {
                Some(b) if b.is_empty() => {}
                Some(b) => { up(us.write_body(&b).await)?; }
                None => { down_open = false; up(us.finish_body().await)?; }
            },
            chunk = us.read_body_bytes(), if up_open => match up(chunk)? {
                Some(b) if b.is_empty() => {}
                Some(b) => { down(ds.write_body(&b).await)?; }
                None => { up_open = false; down(ds.finish_body().await)?; }
            },
        }
    }
    Ok(())
}

/// Writes a refusal; returns the status and whether the connection may be reused.
async fn respond(ds: &mut HttpSession, refusal: &Refusal) -> (u16, bool) {
    let Ok((resp, body, close)) = refusal.to_response() else { return (0, false) };
    let status = resp.status.as_u16();
    if close {
        ds.set_server_keepalive(None);
    }
    let written = async {
        ds.write_response_header(Box::new(resp)).await?;
        ds.write_body(&body).await?;
        ds.finish_body().await
    };
    match written.await {
        Ok(_) => (status, !close),
        Err(_) => (status, false),
    }
}

/// Marks an error as the client's (its connection: a malformed or stalled body, a client gone),
/// which never counts against an endpoint and is answered 400/408 or not at all.
fn down<T>(r: Result<T>) -> Result<T> {
    r.map_err(|mut e| {
        e.as_down();
        e
    })
}

/// Marks an error as the upstream's.
fn up<T>(r: Result<T>) -> Result<T> {
    r.map_err(|mut e| {
        e.as_up();
        e
    })
}

/// The next piece of the client's request body, decoded. Pingora's chunked decoder yields empty
/// pieces when a read ends inside a chunk-size line or trailer; they carry nothing and are
/// skipped here (written to a chunked upstream body, an empty piece would end it early).
async fn read_body(ds: &mut HttpSession) -> Result<Option<bytes::Bytes>> {
    loop {
        match down(ds.read_body_bytes().await)? {
            Some(chunk) if chunk.is_empty() => continue,
            other => return Ok(other),
        }
    }
}

/// Counts a request body against the route's `max-body-size` as it streams.
struct BodyLimit {
    max: Option<u64>,
    seen: u64,
}

impl BodyLimit {
    fn new(route: &Route) -> Self {
        BodyLimit { max: route.options.max_body, seen: 0 }
    }

    fn count(&mut self, chunk: &[u8]) -> Result<()> {
        self.seen += chunk.len() as u64;
        if self.max.is_some_and(|max| self.seen > max) {
            return Error::e_explain(ErrorType::HTTPStatus(413), "request body over the route's limit");
        }
        Ok(())
    }
}

/// Whether Pingora's settings for the next request of a connection carry bytes the client
/// pipelined (read past the previous request's body). Pingora exposes no accessor for them; its
/// `Debug` output names the field, and `pipelined_bytes_are_seen` checks that this still holds.
fn carries_pipelined_bytes(settings: &pingora::apps::HttpPersistentSettings) -> bool {
    format!("{settings:?}").contains("pipelined_prefix: Some(")
}

/// Reads a plaintext connection's first bytes until they are the h2c preface or can no longer
/// become it (an HTTP/1 request line differs at its first byte), then puts them back. Waiting for
/// all 24 bytes instead would leave a shorter HTTP/1 request (`GET / HTTP/1.0`, a health check)
/// unanswered. `Err(true)`: nothing usable within `limit`; `Err(false)`: the client closed.
async fn sniff_h2c(stream: Stream, limit: std::time::Duration) -> std::result::Result<(Stream, bool), bool> {
    use tokio::io::AsyncReadExt;
    // Plaintext listeners hand over their TCP stream, which can take bytes back.
    let Ok(mut tcp) = stream.into_any().downcast::<pingora::protocols::l4::stream::Stream>() else {
        return Err(false);
    };
    let mut seen = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    let read = async {
        while n < seen.len() && seen[..n] == H2_PREFACE[..n] {
            match tcp.read(&mut seen[n..]).await {
                Ok(0) | Err(_) => return false,
                Ok(m) => n += m,
            }
        }
        true
    };
    match fast_timeout(limit, read).await {
        Ok(true) => {}
        Ok(false) => return Err(false),
        Err(_) => return Err(true),
    }
    tcp.rewind(&seen[..n]);
    Ok((tcp, &seen == H2_PREFACE))
}

/// Why no request head was read.
enum HeadWait {
    /// The client closed the connection, or a kept-alive one stayed idle.
    Closed,
    /// The head did not arrive whole within the header timeout.
    TimedOut,
}

/// Bytes past which a head is handed over unfinished (Pingora refuses heads over 1 MiB).
const MAX_HEAD_READ: usize = 1024 * 1024 + 1;

/// Reads one request head up to its blank line (and whatever follows it in the same reads):
/// on a kept-alive connection (`idle` set) the first byte may take the idle timeout, the head
/// then has the header timeout.
async fn read_head(
    stream: &mut Stream,
    idle: Option<std::time::Duration>,
    header: std::time::Duration,
) -> std::result::Result<bytes::BytesMut, HeadWait> {
    use tokio::io::AsyncReadExt;
    let mut buf = bytes::BytesMut::with_capacity(4096);
    if let Some(idle) = idle {
        match fast_timeout(idle, stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(HeadWait::Closed),
        }
    }
    let mut scanned = 0;
    let rest = async {
        loop {
            if head_end(&buf, &mut scanned).is_some() || buf.len() >= MAX_HEAD_READ {
                return Ok(());
            }
            match stream.read_buf(&mut buf).await {
                Ok(n) if n > 0 => {}
                _ => return Err(HeadWait::Closed),
            }
        }
    };
    match fast_timeout(header, rest).await {
        Ok(Ok(())) => Ok(buf),
        Ok(Err(why)) => Err(why),
        Err(_) => Err(HeadWait::TimedOut),
    }
}

/// Where the request head in `buf` ends (just past its blank line, CRLF or bare LF; empty lines
/// before the request line are skipped), if it is whole. `scanned` carries the position reached
/// over calls, so a head arriving a byte at a time is not rescanned from its start.
fn head_end(buf: &[u8], scanned: &mut usize) -> Option<usize> {
    let start = buf.iter().position(|b| *b != b'\r' && *b != b'\n').unwrap_or(buf.len());
    let from = (*scanned).max(start);
    let found = buf[from..].windows(2).enumerate().find_map(|(i, w)| {
        let at = from + i;
        let blank = w[1] == b'\n' && (w[0] == b'\n' || (w[0] == b'\r' && buf[at - 1] == b'\n'));
        blank.then_some(at + 2)
    });
    *scanned = buf.len().saturating_sub(2).max(start);
    found
}

/// The number of header fields in a whole request head (lines between the request line and the
/// blank line).
fn field_count(head: &[u8]) -> usize {
    let start = head.iter().position(|b| *b != b'\r' && *b != b'\n').unwrap_or(head.len());
    head[start..].iter().filter(|b| **b == b'\n').count().saturating_sub(2)
}

/// Whether a head was refused for having more fields than the parser takes, or for being over
/// Pingora's 1 MiB (431, not 400).
fn is_head_too_large(e: &Error) -> bool {
    e.root_cause().to_string().contains("too many headers") || e.to_string().contains("Request header larger than")
}

#[async_trait]
impl ServerApp for H1App {
    async fn process_new(self: &Arc<Self>, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        if stream.get_ssl_digest().is_some() {
            // TLS: the handshake is done; ALPN says whether this is HTTP/2.
            if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
                return self.full.process_new(stream, shutdown).await;
            }
        } else {
            // The first bytes tell HTTP/2 (the h2c preface) from HTTP/1.x; a client that sends
            // none in time is closed like one that sends no request head.
            let (sniffed, h2c) = match sniff_h2c(stream, self.proxy.timeouts().client_header).await {
                Ok(found) => found,
                Err(timed_out) => {
                    if timed_out {
                        self.proxy.metrics().client_fault(self.proxy.listener_name(), "timeout");
                    }
                    return None;
                }
            };
            stream = sniffed;
            if h2c {
                return self.full.process_new(stream, shutdown).await;
            }
        }
        if !self.lean {
            return self.serve_full(stream, shutdown).await;
        }
        let mut shutdown = shutdown.clone();
        // What ferry's TLS handshake learnt (the server name), read once per connection.
        let tls_facts = stream.get_proxy_digest();
        // A request head must arrive within the header timeout, counted from the connection's
        // start for the first request and from the first byte of the next one on a kept-alive
        // connection, which may sit idle for the idle timeout before that byte.
        let timeouts = *self.proxy.timeouts();
        let mut pipelined: Option<bytes::BytesMut> = None;
        let mut kept_alive = false;
        loop {
            if kept_alive && pipelined.is_none() {
                let mut first = bytes::BytesMut::with_capacity(4096);
                let waited = tokio::select! {
                    biased;
                    read = fast_timeout(timeouts.client_idle, tokio::io::AsyncReadExt::read_buf(&mut stream, &mut first)) => read,
                    _ = shutdown.wait_for(|stopping| *stopping) => return None,
                };
                match waited {
                    Ok(Ok(n)) if n > 0 => pipelined = Some(first),
                    _ => return None,
                }
            }
            let mut ds = HttpSession::new(stream);
            // Requests a client sends before the previous response ended are served in turn
            // (never passed upstream inside the previous request).
            ds.set_pipelining_enabled(true);
            if let Some(prefix) = pipelined.take() {
                ds.set_pipelined_prefix(prefix);
            }
            let read = tokio::select! {
                biased;
                read = fast_timeout(timeouts.client_header, ds.read_request()) => match read {
                    Ok(read) => read,
                    Err(_) => {
                        tracing::debug!("client sent no complete request head in time; closed");
                        self.proxy.metrics().client_fault(self.proxy.listener_name(), "timeout");
                        return None;
                    }
                },
                _ = shutdown.wait_for(|stopping| *stopping) => return None,
            };
            kept_alive = true;
            match read {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(e) => {
                    tracing::debug!(error = %e, "malformed request head");
                    if e.etype() == &ErrorType::InvalidHTTPHeader {
                        let why = if is_head_too_large(&e) {
                            Refusal::HeadersTooLarge
                        } else {
                            Refusal::BadRequest("malformed request head")
                        };
                        self.proxy.metrics().client_fault(self.proxy.listener_name(), "request");
                        respond(&mut ds, &why).await;
                    }
                    return None;
                }
            }
            // A stalled body gets 408 (the session's read timeout covers each body read).
            ds.set_read_timeout(Some(self.proxy.timeouts().client_body));
            let body_empty = ds.is_body_empty();
            safety::drop_refused_upgrade(ds.req_header_mut(), body_empty);
            let _work = crate::drain::Work::start();
            if *shutdown.borrow() || crate::drain::is_draining() {
                ds.set_server_keepalive(None);
            }
            let client = inet_ip(ds.client_addr());
            let raw_content_length = ds.get_header(header::TRANSFER_ENCODING).is_some()
                && safety::raw_has_content_length(&ds.get_headers_raw_bytes());
            let conn = ConnFacts { client, sni: tls_facts.as_deref().and_then(crate::tls::sni_in), raw_content_length };
            let (request_id, request_id_from_client) = request_id(ds.req_header());
            let mut exchange = Exchange {
                started: std::time::Instant::now(),
                trace: self.proxy.trace_of(ds.req_header()),
                request_id,
                request_id_from_client,
                upstream: None,
                upstream_sent: None,
            };
            // A span per request (debug level: free unless FERRY_LOG asks for it).
            let span = tracing::debug_span!(
                "request",
                method = %ds.req_header().method,
                request_id = %exchange.request_id,
                trace_id = %exchange.trace.trace_id,
            );
            let (route, status, reusable) =
                tracing::Instrument::instrument(self.serve(&mut ds, &conn, &mut exchange), span).await;
            self.proxy.record(route.as_ref(), status);
            let done = Done {
                client,
                status,
                bytes: ds.body_bytes_sent(),
                started: exchange.started,
                upstream: exchange.upstream,
                upstream_sent: exchange.upstream_sent,
                route: route.as_deref(),
                request_id: &exchange.request_id,
                trace: Some(&exchange.trace),
            };
            self.proxy.log(ds.req_header(), &done);
            if !reusable {
                ds.shutdown().await;
                return None;
            }
            (stream, pipelined) = match ds.reuse().await {
                Ok(Some(reusable)) => reusable.into_parts(),
                _ => return None,
            };
        }
    }

    async fn cleanup(&self) {
        self.full.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_bytes_are_seen() {
        let session =
            pingora::protocols::http::ServerSession::new_http1(Box::new(tokio_test::io::Builder::new().build()));
        let mut settings = pingora::apps::HttpPersistentSettings::for_session(&session);
        assert!(!carries_pipelined_bytes(&settings));
        settings.set_pipelined_prefix(bytes::BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]));
        assert!(carries_pipelined_bytes(&settings));
    }

    #[test]
    fn request_head_ends() {
        let cases: &[(&[u8], Option<usize>)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Some(27)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", Some(27)),
            (b"GET / HTTP/1.1\nHost: a\n\n", Some(24)),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", Some(26)),
            (b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", Some(22)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", None),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r", None),
            (b"\r\n\r\n", None),
            (b"", None),
        ];
        for (head, want) in cases {
            assert_eq!(head_end(head, &mut 0), *want, "{:?}", String::from_utf8_lossy(head));
            // Byte by byte, resuming where the last call stopped.
            let mut scanned = 0;
            let found = (1..=head.len()).find_map(|n| head_end(&head[..n], &mut scanned));
            assert_eq!(found, *want, "byte by byte: {:?}", String::from_utf8_lossy(head));
        }
        assert_eq!(field_count(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n"), 2);
        assert_eq!(field_count(b"\r\nGET / HTTP/1.1\n\n"), 0);
    }

    #[test]
    fn bad_gateway_refusal_keeps_the_connection() {
        let (resp, _, close) = Refusal::BadGateway.to_response().unwrap();
        assert_eq!(resp.status.as_u16(), 502);
        assert!(!close);
    }
}
