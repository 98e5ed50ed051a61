//! The listener app of the plaintext and TLS HTTP ports, and the fast HTTP/1 engine.
//!
//! The app tells HTTP/2 (the h2c preface on plaintext, ALPN `h2` on TLS) from HTTP/1.x and hands
//! HTTP/2 to the Pingora engine ([`crate::proxy`]). HTTP/1.x requests are served here, by the fast
//! engine, unless `--http1-engine pingora` sends them to the Pingora engine too (their heads are
//! still read here, under ferry's timeouts).
//!
//! The fast engine is an adapter of the request lifecycle ([`crate::http`]) written directly on
//! pingora-core's HTTP/1 sessions and connector: per connection, one straight-line loop that
//! reads a head, runs the [`Exchange`] phases around moving the bytes (to HTTP/1.x and h2c
//! backends alike, through [`Upstream`]), and reads the next head. Why: measured under
//! callgrind, pingora-proxy's generic request machinery (its per-request boxed state machine,
//! module and cache hooks, task channels) costs about 40% of the instructions of a minimal
//! fixed-peer proxy (bench/bare-pingora `--lean` vs default).

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::connectors::ConnectorOptions;
use pingora::prelude::*;
use pingora::protocols::http::v1::server::HttpSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
// Pingora's coarse timer wheel: a tokio timer per request head would wake the runtime's driver
// (an eventfd write, and an extra epoll round) on every request of a kept-alive connection.
use pingora::time::fast_timeout::fast_timeout;

use crate::http::{final_head, Answer, ConnFacts, Exchange, Gateway, Reply, UpstreamHead};
use crate::safety;
use crate::tls::ConnInfo;
use crate::upstream::{down, Connectors, Upstream};
use crate::wire;

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Listener app: HTTP/1.x here, HTTP/2 delegated to the full proxy. With `lean` off (the
/// `pingora` engine), HTTP/1.x requests are served by the full proxy too, but their heads are
/// still read here, under ferry's timeouts.
pub struct H1App {
    gw: Gateway,
    full: Arc<HttpProxy<Gateway>>,
    lean: bool,
    /// Upstream connections (HTTP/1.x and h2c), pooled.
    connector: Connectors,
}

impl H1App {
    /// `gw` is the fast engine's lifecycle context; `full` (built on an equal one) is the Pingora
    /// engine, which serves HTTP/2.
    pub fn new(gw: Gateway, full: HttpProxy<Gateway>, options: Option<ConnectorOptions>) -> Self {
        H1App { gw, full: Arc::new(full), lean: true, connector: Connectors::new(options) }
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
        let timeouts = *self.gw.timeouts();
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
            let (head, whole) = self.next_head(&mut stream, None, kept_alive, &mut stopping).await?;
            if let Err(reply) = gate(&head, whole) {
                self.gw.client_fault("request");
                respond(&mut HttpSession::new(stream), &reply, true).await;
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

    /// The next request head of a connection, as [`read_head`] gives it (after `prefix`; on a
    /// kept-alive connection the first byte may take the idle timeout), or `None` when the
    /// connection ends: the client closed it or stayed idle, shutdown began, or the head did not
    /// arrive whole in time (a client fault, counted).
    async fn next_head(
        &self,
        stream: &mut Stream,
        prefix: Option<bytes::BytesMut>,
        kept_alive: bool,
        shutdown: &mut ShutdownWatch,
    ) -> Option<(bytes::BytesMut, bool)> {
        let timeouts = self.gw.timeouts();
        let idle = kept_alive.then_some(timeouts.client_idle);
        let head = tokio::select! {
            biased;
            head = read_head(stream, prefix, idle, timeouts.client_header) => head,
            _ = shutdown.wait_for(|stopping| *stopping) => return None,
        };
        match head {
            Ok(head) => Some(head),
            Err(HeadWait::TimedOut) => {
                tracing::debug!("client sent no complete request head in time; closed");
                self.gw.client_fault("timeout");
                None
            }
            Err(HeadWait::Closed) => None,
        }
    }

    /// One request of a connection whose head (`whole`, or over the size limit) has been read:
    /// parsed by the session, served, logged. Returns the connection and any bytes the client
    /// sent past the request when the connection may carry another one.
    async fn serve_one(
        &self,
        stream: Stream,
        head: bytes::BytesMut,
        whole: bool,
        tls: Option<&ConnInfo>,
        stopping: bool,
    ) -> Option<(Stream, Option<bytes::BytesMut>)> {
        let timeouts = self.gw.timeouts();
        let mut ds = HttpSession::new(stream);
        let read = match gate(&head, whole) {
            Ok(read) => read,
            Err(reply) => {
                self.gw.client_fault("request");
                respond(&mut ds, &reply, true).await;
                return None;
            }
        };
        // Requests a client sends before the previous response ended are served in turn
        // (never passed upstream inside the previous request).
        ds.set_pipelining_enabled(true);
        ds.set_pipelined_prefix(head);
        // Bytes the session still wants past what `read_head` saw whole (a reading of the
        // head's end the parser does not share) wait at most the header timeout per read.
        ds.set_read_timeout(Some(timeouts.client_header));
        match ds.read_request().await {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "malformed request head");
                if e.etype() == &ErrorType::InvalidHTTPHeader {
                    let why = if is_head_too_large(&e) {
                        Reply::HeadersTooLarge
                    } else {
                        Reply::BadRequest("malformed request head")
                    };
                    self.gw.client_fault("request");
                    respond(&mut ds, &why, true).await;
                }
                return None;
            }
        }
        // A stalled body gets 408 (the session's read timeout covers each body read).
        ds.set_read_timeout(Some(timeouts.client_body));
        if stopping || crate::drain::is_draining() {
            ds.set_server_keepalive(None);
        }
        let client = crate::addr::inet_ip(ds.client_addr());
        let conn = ConnFacts { client, sni: tls.and_then(ConnInfo::sni), raw_content_length: read.content_length };
        let mut x = Exchange::new();
        let (status, relayed) = self.serve(&mut ds, &mut x, &conn).await;
        let reusable = match relayed {
            Relayed::Done { reusable } => reusable,
            Relayed::Upgraded(us) => {
                // The connections leave their sessions for the tunnel; the head stays for the log.
                let req = ds.req_header().clone();
                // Boxed: the tunnel's state is the largest of a request's, and only WebSockets need it.
                let (sent, ended) = Box::pin(us.tunnel(ds)).await;
                if let Err(e) = ended {
                    x.fail(&self.gw, &e, false);
                }
                x.finish(&self.gw, &req, status, sent as usize);
                return None;
            }
        };
        x.finish(&self.gw, ds.req_header(), status, ds.body_bytes_sent());
        if !reusable {
            ds.shutdown().await;
            return None;
        }
        match ds.reuse().await {
            Ok(Some(reusable)) => Some(reusable.into_parts()),
            _ => None,
        }
    }

    /// Serves one request whose head has been read: the lifecycle's phases around the bytes.
    /// Returns the status sent (0 if none) and what became of the connection.
    async fn serve(&self, ds: &mut HttpSession, x: &mut Exchange, conn: &ConnFacts<'_>) -> (u16, Relayed) {
        let done = |(status, reusable)| (status, Relayed::Done { reusable });
        let body_empty = ds.is_body_empty();
        if let Err(reply) = x.begin(&self.gw, ds.req_header_mut(), conn, body_empty) {
            return done(respond(ds, &reply, false).await);
        }
        match self.forward(ds, x).await {
            Ok(relayed) => (ds.response_written().map_or(0, |r| r.status.as_u16()), relayed),
            // A failure mid-response leaves the client a truncated body and a closed connection;
            // after an interim `100 Continue` the final reply is still ferry's to send.
            Err(e) => done(match (x.fail(&self.gw, &e, !ds.is_body_done()), final_head(ds.response_written())) {
                (_, Some(r)) => (r.status.as_u16(), false),
                (Some(reply), None) => (respond(ds, &reply, true).await.0, false),
                (None, None) => (0, false),
            }),
        }
    }

    /// Proxies one request to the route's backend: attempts until one gives a response to relay
    /// (connect failures and retried 5xx move to another endpoint; a request a pooled
    /// connection lost is made once more where the lifecycle allows). Each attempt's head is
    /// made from the client's. `Ok` once the response is complete, or the connection upgraded.
    async fn forward(&self, ds: &mut HttpSession, x: &mut Exchange) -> Result<Relayed> {
        loop {
            let peer = x.next_peer(&self.gw).await?;
            let (mut us, reused) = match Upstream::connect(&self.connector, &peer).await {
                Ok(connected) => connected,
                Err(e) if x.connect_failed(&self.gw, &e) => continue,
                Err(e) => return Err(e),
            };
            x.connected();
            // The client's head plus the lifecycle's edits, written as one (no copy of the head).
            let mut head = UpstreamHead::new(ds.req_header());
            x.upstream_request(&self.gw, &mut head)?;
            match us.send_head(&head, x.body_empty()).await {
                Ok(()) => {}
                Err(e) if reused && x.replay_on_new_connection(ds.req_header(), &e) => continue,
                Err(e) => return Err(e),
            }
            if !x.body_empty() && !x.upgrade() {
                if x.expect_continue() {
                    // The session would otherwise take a head sent before the body for an early
                    // final response and close the connection afterwards.
                    ds.set_close_on_response_before_downstream_finish(false);
                    down(ds.write_continue_response().await)?;
                    ds.set_close_on_response_before_downstream_finish(true);
                }
                while let Some(chunk) = read_body(ds).await? {
                    x.body_chunk(chunk.len())?;
                    us.send_body(chunk).await?;
                }
            }
            us.finish(x.body_empty()).await?;
            let status = match us.read_head().await {
                Ok(head) => head.status.as_u16(),
                Err(e) if reused && x.replay_on_new_connection(ds.req_header(), &e) => continue,
                Err(e) => return Err(e),
            };
            if x.upstream_response(ds.req_header(), status)? == Answer::Retry {
                continue;
            }
            let mut resp = us.head_for();
            if x.downstream_response(&self.gw, ds.req_header(), &mut resp)? {
                ds.set_server_keepalive(None);
            }
            down(ds.write_response_header(Box::new(resp)).await)?;
            if us.upgraded(ds) {
                return Ok(Relayed::Upgraded(Box::new(us)));
            }
            us.relay_body(ds).await?;
            // Back to the pool before the client's response is finished, so a request the client
            // sends right after it finds the connection there.
            us.release(&self.connector, &peer, self.gw.upstream_idle()).await;
            down(ds.finish_body().await)?;
            return Ok(Relayed::Done { reusable: true });
        }
    }
}

/// What became of a client connection after a response.
enum Relayed {
    /// The response is complete; the connection may carry another request if `reusable`.
    Done { reusable: bool },
    /// The connection upgraded (WebSocket): a tunnel to the backend's follows.
    Upgraded(Box<Upstream>),
}

/// Writes ferry's reply; `failed`: the exchange failed after routing, so the connection closes.
/// Returns the status and whether the connection may be reused.
async fn respond(ds: &mut HttpSession, reply: &Reply, failed: bool) -> (u16, bool) {
    let close = failed || reply.closes();
    let Ok((resp, body)) = reply.to_response(close) else { return (0, false) };
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
    // Plaintext listeners hand over their accepted connection, which can take bytes back.
    let Ok(mut tcp) = stream.into_any().downcast::<crate::conn::Conn>() else {
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

/// The first read of a request head.
const HEAD_BUFFER: usize = 1024;

/// Bytes past which an unfinished head is refused with 431, so a client cannot make ferry hold
/// more than this per connection while it trickles a head that never ends (Pingora's own reader
/// would buffer up to 1 MiB). Twice the safety rules' limit on a head
/// ([`safety::MAX_HEADER_BYTES`]), which counts fields without their spacing.
const MAX_HEAD_READ: usize = 2 * safety::MAX_HEADER_BYTES + 1;

/// Reads one request head up to its blank line (and whatever follows it in the same reads),
/// starting from `prefix` (bytes already read past the previous request). On a kept-alive
/// connection (`idle` set) the first byte may take the idle timeout, the rest of the head then
/// has the header timeout. Returns the bytes and whether the head is whole in them (it is not
/// when it did not end within [`MAX_HEAD_READ`] bytes; the caller refuses it). The common case,
/// a head whole in the first read, sets one timer.
async fn read_head(
    stream: &mut Stream,
    prefix: Option<bytes::BytesMut>,
    idle: Option<std::time::Duration>,
    header: std::time::Duration,
) -> std::result::Result<(bytes::BytesMut, bool), HeadWait> {
    use tokio::io::AsyncReadExt;
    // 1 KiB, as nginx's `client_header_buffer_size`, taken when the head's first bytes are
    // there: a kept-alive connection waits for them holding no buffer (when it can wait without
    // reading: a plaintext connection).
    let mut buf = prefix.unwrap_or_default();
    let mut scanned = 0;
    if buf.is_empty() {
        if let Some(idle) = idle {
            if let Some(conn) = stream.as_any().downcast_ref::<crate::conn::Conn>() {
                match fast_timeout(idle, conn.read_when_ready(&mut buf, HEAD_BUFFER)).await {
                    Ok(Ok(Some(n))) if n > 0 => {}
                    Ok(Ok(None)) => {}
                    _ => return Err(HeadWait::Closed),
                }
            } else {
                buf.reserve(HEAD_BUFFER);
                match fast_timeout(idle, stream.read_buf(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return Err(HeadWait::Closed),
                }
            }
        }
    }
    if head_end(&buf, &mut scanned).is_some() {
        return Ok((buf, true));
    }
    let rest = async {
        loop {
            if buf.len() >= MAX_HEAD_READ {
                return Ok(false);
            }
            if buf.capacity() == 0 {
                buf.reserve(HEAD_BUFFER);
            } else if buf.capacity() - buf.len() < HEAD_BUFFER / 2 {
                buf.reserve(4 * HEAD_BUFFER);
            }
            match stream.read_buf(&mut buf).await {
                Ok(n) if n > 0 => {}
                _ => return Err(HeadWait::Closed),
            }
            if head_end(&buf, &mut scanned).is_some() {
                return Ok(true);
            }
        }
    };
    match fast_timeout(header, rest).await {
        Ok(Ok(whole)) => Ok((buf, whole)),
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

/// The strict reading of a request head ([`wire`]) both engines' heads pass before Pingora parses
/// them: `whole` says [`read_head`] found its end within the size limit. What a refusal answers.
fn gate(head: &[u8], whole: bool) -> std::result::Result<wire::RequestHead, Reply> {
    if !whole {
        return Err(Reply::HeadersTooLarge);
    }
    Reply::of_head(head)
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
            let (sniffed, h2c) = match sniff_h2c(stream, self.gw.timeouts().client_header).await {
                Ok(found) => found,
                Err(timed_out) => {
                    if timed_out {
                        self.gw.client_fault("timeout");
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
            // Boxed: inline, the Pingora engine's loop would size every fast-engine connection.
            return Box::pin(self.serve_full(stream, shutdown)).await;
        }
        let mut shutdown = shutdown.clone();
        // Per connection: what ferry's TLS handshake learnt (the server name), the client.
        let tls = stream.get_proxy_digest().and_then(|d| crate::tls::conn_info_in(&d));
        // A request head must arrive within the header timeout, counted from the connection's
        // start for the first request and from the first byte of the next one on a kept-alive
        // connection, which may sit idle for the idle timeout before that byte.
        let mut pipelined: Option<bytes::BytesMut> = None;
        let mut kept_alive = false;
        loop {
            // The head is read whole here, under ferry's timeouts and size limit, and parsed by
            // the session from those bytes.
            let (head, whole) = self.next_head(&mut stream, pipelined.take(), kept_alive, &mut shutdown).await?;
            kept_alive = true;
            // The request's state (session, exchange, upstream connect and relay) lives in a box
            // taken per request: inline in this future, every idle connection held its ~12 KB.
            let stopping = *shutdown.borrow();
            (stream, pipelined) = Box::pin(self.serve_one(stream, head, whole, tls.as_deref(), stopping)).await?;
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
    }
}
