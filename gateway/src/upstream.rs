//! The fast engine's upstream session: one type for HTTP/1.x and h2c backends, over Pingora's
//! connector (which pools both), so everything the fast engine does with a backend — retries,
//! body limits, relaying — is written once for both protocols.

use bytes::Bytes;
use http::header;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::http::client::HttpSession as ClientSession;
use pingora::protocols::http::v1::server::HttpSession as Downstream;
use pingora::{Error, ErrorType, Result};

use crate::http::origin_form;

/// The fast engine's upstream connection pools: HTTP/1-only peers (most) in Pingora's HTTP/1
/// connector, whose pool is looked into without the full connector's connect machinery; peers
/// that may speak h2c in the full connector.
pub struct Connectors {
    h1: pingora::connectors::http::v1::Connector,
    any: Connector,
}

impl Connectors {
    pub fn new(options: Option<pingora::connectors::ConnectorOptions>) -> Connectors {
        Connectors { h1: pingora::connectors::http::v1::Connector::new(options.clone()), any: Connector::new(options) }
    }
}

/// A connection (HTTP/1.x) or stream (HTTP/2) to one endpoint. Every error it returns is marked
/// as the upstream's.
pub struct Upstream(ClientSession);

/// Whether `peer` speaks only HTTP/1 (its connections live in the HTTP/1 pool).
fn h1_only(peer: &HttpPeer) -> bool {
    peer.options.alpn.get_max_http_version() == 1
}

impl Upstream {
    /// A pooled connection to `peer` or a new one; `true` if pooled.
    ///
    /// The pooled case, every request on a busy route, is a small future; a new connection's
    /// (Pingora's connect, with TLS state inline: ~9 KB) is boxed, so it is not part of every
    /// request's state (which the fast engine allocates per request).
    pub async fn connect(pools: &Connectors, peer: &HttpPeer) -> Result<(Upstream, bool)> {
        let (mut session, reused) = if h1_only(peer) {
            match pools.h1.reused_http_session(peer).await {
                Some(h1) => (ClientSession::H1(h1), true),
                None => {
                    let (h1, reused) = up(Box::pin(pools.h1.get_http_session(peer)).await)?;
                    (ClientSession::H1(h1), reused)
                }
            }
        } else {
            up(Box::pin(pools.any.get_http_session(peer)).await)?
        };
        // The connector leaves the session's timeouts unset; they come from the peer.
        session.set_read_timeout(peer.options.read_timeout);
        session.set_write_timeout(peer.options.write_timeout);
        Ok((Upstream(session), reused))
    }

    /// Sends the request head. For HTTP/2 the head loses its connection-level fields and gets
    /// its pseudo-headers: `:scheme` names the hop to the backend (cleartext), as Pingora's
    /// engine sends it (`X-Forwarded-Proto` carries the client's).
    pub async fn send_head(&mut self, mut head: RequestHeader, body_empty: bool) -> Result<()> {
        match &mut self.0 {
            ClientSession::H1(h1) => up(h1.write_request_header(Box::new(head)).await).map(drop),
            ClientSession::H2(h2) => {
                for name in [&header::TRANSFER_ENCODING, &header::CONNECTION, &header::UPGRADE] {
                    if head.headers.contains_key(name) {
                        head.remove_header(name);
                    }
                }
                let uri = http::Uri::builder()
                    .scheme("http")
                    .authority(head.headers.get(header::HOST).map_or(&b""[..], |h| h.as_bytes()))
                    .path_and_query(origin_form(&head))
                    .build()
                    .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "no authority for the h2c request"))?;
                head.set_uri(uri);
                up(h2.write_request_header(Box::new(head), body_empty))
            }
            ClientSession::Custom(_) => Err(Error::explain(ErrorType::InternalError, "no custom upstream sessions")),
        }
    }

    pub async fn send_body(&mut self, chunk: Bytes) -> Result<()> {
        up(self.0.write_request_body(chunk, false).await)
    }

    /// Ends the request (HTTP/2: unless its head already did, for an empty body).
    pub async fn finish(&mut self, body_empty: bool) -> Result<()> {
        match &mut self.0 {
            ClientSession::H2(_) if body_empty => Ok(()),
            session => up(session.finish_request_body().await),
        }
    }

    /// Reads the final response head (informational ones other than `101` are not relayed).
    pub async fn read_head(&mut self) -> Result<&ResponseHeader> {
        loop {
            up(self.0.read_response_header().await)?;
            match self.0.response_header().map(|r| r.status) {
                Some(s) if s.is_informational() && s.as_u16() != 101 && self.0.as_http1().is_some() => continue,
                Some(_) => break,
                None => return Err(up_err(ErrorType::InvalidHTTPHeader, "upstream sent no response head")),
            }
        }
        Ok(self.0.response_header().expect("read above"))
    }

    /// The response head to send to an HTTP/1.x client (from HTTP/2: version 1.1; the body's
    /// framing for the client is the lifecycle's, `safety::frame_response`).
    pub fn head_for(&self) -> ResponseHeader {
        let mut resp = self.0.response_header().expect("read_head ran").clone();
        if self.0.as_http2().is_some() {
            resp.set_version(http::Version::HTTP_11);
        }
        resp
    }

    /// Relays the response body to the client (then the connection may go back to the pool).
    pub async fn relay_body(&mut self, ds: &mut Downstream) -> Result<()> {
        match &mut self.0 {
            // HTTP/1: borrowed from the session's buffer, no copy.
            ClientSession::H1(h1) => {
                while let Some(chunk) = up(h1.read_body_ref().await)? {
                    if !chunk.is_empty() {
                        down(ds.write_body(chunk).await)?;
                    }
                }
            }
            session => {
                while let Some(chunk) = up(session.read_response_body().await)? {
                    if !chunk.is_empty() {
                        down(ds.write_body(&chunk).await)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Relays an upgraded connection (WebSocket or other `101` protocol) both ways until either
    /// side closes, if both sides upgraded (`false`: not an upgrade). Bytes already buffered by
    /// either session are relayed first.
    pub async fn tunnel(&mut self, ds: &mut Downstream) -> Result<bool> {
        let ClientSession::H1(us) = &mut self.0 else { return Ok(false) };
        if !(ds.was_upgraded() && us.was_upgraded()) {
            return Ok(false);
        }
        us.maybe_upgrade_body_writer();
        // A tunnel is not a request body: the body timeout no longer applies.
        ds.set_read_timeout(None);
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
        Ok(true)
    }

    /// Back to the pool.
    pub async fn release(self, pools: &Connectors, peer: &HttpPeer, idle: std::time::Duration) {
        match self.0 {
            ClientSession::H1(h1) if h1_only(peer) => pools.h1.release_http_session(h1, peer, Some(idle)).await,
            session => pools.any.release_http_session(session, peer, Some(idle)).await,
        }
    }
}

/// Marks an error as the client's (its connection: a malformed or stalled body, a client gone),
/// which never counts against an endpoint and is answered 400/408 or not at all.
pub fn down<T>(r: Result<T>) -> Result<T> {
    r.map_err(|mut e| {
        e.as_down();
        e
    })
}

/// Marks an error as the upstream's.
pub fn up<T>(r: Result<T>) -> Result<T> {
    r.map_err(|mut e| {
        e.as_up();
        e
    })
}

fn up_err(kind: ErrorType, why: &'static str) -> Box<Error> {
    let mut e = Error::explain(kind, why);
    e.as_up();
    e
}
