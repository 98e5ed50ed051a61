//! The fast engine's upstream session: one type for HTTP/1.x and h2c backends, over Pingora's
//! connectors and sessions (HTTP/1 connections pooled per thread here, h2c by Pingora), so
//! everything the fast engine does with a backend — retries, body limits, relaying — is written
//! once for both protocols.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::http::client::HttpSession as ClientSession;
use pingora::protocols::http::v1::client::HttpSession as H1Session;
use pingora::protocols::http::v1::server::HttpSession as Downstream;
use pingora::protocols::Stream;
use pingora::upstreams::peer::Peer;
use pingora::{Error, ErrorType, Result};
use thread_local::ThreadLocal;

use crate::http::origin_form;
use crate::tunnel;

/// The fast engine's upstream connections: HTTP/1-only peers (most) connect through Pingora's
/// HTTP/1 connector and are kept idle in ferry's per-thread pool ([`IdlePool`]); peers that may
/// speak h2c connect and are pooled through the full connector.
pub struct Connectors {
    h1: pingora::connectors::http::v1::Connector,
    any: Connector,
    idle: ThreadLocal<RefCell<IdlePool>>,
}

impl Connectors {
    pub fn new(options: Option<pingora::connectors::ConnectorOptions>) -> Connectors {
        Connectors {
            h1: pingora::connectors::http::v1::Connector::new(options.clone()),
            any: Connector::new(options),
            idle: ThreadLocal::new(),
        }
    }

    fn idle(&self) -> std::cell::RefMut<'_, IdlePool> {
        self.idle.get_or(|| RefCell::new(IdlePool::new())).borrow_mut()
    }
}

/// Idle connections kept per peer, per thread, at most.
const IDLE_PER_PEER: usize = 64;

/// The idle HTTP/1 connections of one worker thread, by peer (Pingora's reuse hash, which
/// covers address, TLS settings and group key), most recently used last.
///
/// Why not Pingora's pool: it takes a global lock and spawns a task per idle connection that
/// watches it for a close; together ~10,000 instructions per request (callgrind), a seventh of
/// the fast engine's. Here nothing watches an idle connection: it is tested when taken (a
/// closed one, or one with unexpected bytes, is dropped and the next tried); one whose idle time
/// is over is dropped when the thread next takes a connection to that peer or sweeps its pool
/// (at a return, at most twice per idle time). A backend that
/// closes a connection as a request goes out is the keep-alive race the lifecycle replays.
struct IdlePool {
    by_peer: HashMap<u64, Vec<(Stream, Instant)>, BuildHasherDefault<PeerHashHasher>>,
    next_sweep: Instant,
}

impl IdlePool {
    fn new() -> IdlePool {
        IdlePool { by_peer: HashMap::default(), next_sweep: Instant::now() }
    }

    /// The most recently returned usable connection to the peer `key`.
    fn take(&mut self, key: u64) -> Option<Stream> {
        let idle = self.by_peer.get_mut(&key)?;
        let now = Instant::now();
        while let Some((mut stream, until)) = idle.pop() {
            if until <= now {
                // The rest went idle earlier still.
                idle.clear();
                return None;
            }
            if still_open(&mut stream) {
                return Some(stream);
            }
        }
        None
    }

    /// Keeps `stream` for `idle`; drops connections whose idle time is over (every connection
    /// of the thread, at most twice per idle time).
    fn put(&mut self, key: u64, stream: Stream, idle: Duration) {
        let now = Instant::now();
        if now >= self.next_sweep {
            self.by_peer.retain(|_, kept| {
                kept.retain(|(_, until)| *until > now);
                !kept.is_empty()
            });
            self.next_sweep = now + idle / 2;
        }
        let kept = self.by_peer.entry(key).or_default();
        if kept.len() < IDLE_PER_PEER {
            kept.push((stream, now + idle));
        }
    }
}

/// Whether an idle connection can carry a request: reading it would block (no close, no bytes
/// the backend sent unasked).
fn still_open(stream: &mut Stream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    tunnel::poll_now(stream.read(&mut byte)).is_pending()
}

/// The pool's keys are already hashes.
#[derive(Default)]
struct PeerHashHasher(u64);

impl std::hash::Hasher for PeerHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
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
            let idle = pools.idle().take(peer.reuse_hash());
            match idle {
                Some(stream) => (ClientSession::H1(H1Session::new_with_options(stream, peer)), true),
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

    /// Whether the exchange became an upgraded connection (WebSocket or another `101`
    /// protocol): both sides upgraded (HTTP/1 only).
    pub fn upgraded(&self, ds: &Downstream) -> bool {
        matches!(&self.0, ClientSession::H1(us) if us.was_upgraded()) && ds.was_upgraded()
    }

    /// Relays an [upgraded](Self::upgraded) connection both ways until both sides have closed
    /// or one fails ([`tunnel::relay`]): the connections leave their sessions (and the sessions'
    /// buffers are freed), bytes either session had read past its head go first. Returns the bytes sent to
    /// the client and how the tunnel ended.
    pub async fn tunnel(self, mut ds: Downstream) -> (u64, Result<()>) {
        let ClientSession::H1(mut us) = self.0 else {
            return (0, Err(up_err(ErrorType::InternalError, "no HTTP/1 connection to tunnel")));
        };
        let to_backend = match down(tunnel::take_buffered(|| tunnel::poll_now(ds.read_body_bytes()))) {
            Ok(bytes) => bytes,
            Err(e) => return (0, Err(e)),
        };
        let to_client = match up(tunnel::take_buffered(|| tunnel::poll_now(us.read_body_bytes()))) {
            Ok(bytes) => bytes,
            Err(e) => return (0, Err(e)),
        };
        let (mut client, mut backend) = (ds.into_inner(), us.into_inner());
        let (end, sent) = tunnel::relay(&mut client, &mut backend, to_backend, to_client).await;
        let ended = match end {
            tunnel::End::Closed => Ok(()),
            tunnel::End::Client(e) => down(Err(Error::because(ErrorType::ConnectionClosed, "tunnel: client", e))),
            tunnel::End::Backend(e) => up(Err(Error::because(ErrorType::ConnectionClosed, "tunnel: backend", e))),
        };
        (sent, ended)
    }

    /// Back to the pool (a connection that cannot carry another request is closed). Not
    /// awaited for HTTP/1-only peers: giving a kept connection back is immediate; closing one
    /// that is not kept may want to write (a TLS close), and if that would wait, the connection
    /// is dropped (closed) instead, so no per-request state waits here.
    pub async fn release(self, pools: &Connectors, peer: &HttpPeer, idle: Duration) {
        match self.0 {
            ClientSession::H1(mut h1) if h1_only(peer) => {
                h1.respect_keepalive();
                if let Poll::Ready(Some(stream)) = tunnel::poll_now(h1.reuse()) {
                    pools.idle().put(peer.reuse_hash(), stream, idle);
                }
            }
            // Boxed: the full connector's release is large and rare (peers that may speak h2c).
            session => Box::pin(pools.any.release_http_session(session, peer, Some(idle))).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connection to a loopback listener: ferry's end (as a Pingora stream) and the backend's.
    async fn pair(listener: &TcpListener) -> (Stream, TcpStream) {
        let ours = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (theirs, _) = listener.accept().await.unwrap();
        (Box::new(pingora::protocols::l4::stream::Stream::from(ours)), theirs)
    }

    fn id(stream: &Stream) -> i32 {
        pingora::protocols::UniqueID::id(&**stream)
    }

    #[tokio::test]
    async fn idle_connections_are_taken_newest_first_and_only_while_usable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let idle = Duration::from_secs(60);
        let mut pool = IdlePool::new();
        let (a, _keep_a) = pair(&listener).await;
        let (b, mut b_backend) = pair(&listener).await;
        let (c, c_backend) = pair(&listener).await;
        let a_id = id(&a);
        pool.put(1, a, idle);
        pool.put(1, b, idle);
        pool.put(1, c, idle);
        assert!(pool.take(2).is_none(), "another peer's connections are not given");
        // c's backend closed it, b's sent bytes nobody asked for: both are dropped, a is given.
        drop(c_backend);
        b_backend.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let taken = pool.take(1).expect("a is still open");
        assert_eq!(id(&taken), a_id);
        assert!(pool.take(1).is_none(), "b and c were dropped");
    }

    #[tokio::test]
    async fn connections_idle_too_long_are_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut pool = IdlePool::new();
        let (a, _keep_a) = pair(&listener).await;
        pool.put(1, a, Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(pool.take(1).is_none(), "over its idle time");
        // Returning a connection sweeps every peer's expired ones.
        let (b, _keep_b) = pair(&listener).await;
        let (c, _keep_c) = pair(&listener).await;
        pool.put(2, b, Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(40)).await;
        pool.put(3, c, Duration::from_secs(60));
        assert!(!pool.by_peer.contains_key(&2), "swept");
        assert!(pool.take(3).is_some());
    }

    #[tokio::test]
    async fn at_most_a_bounded_number_per_peer_are_kept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut pool = IdlePool::new();
        let mut backends = Vec::new();
        for _ in 0..IDLE_PER_PEER + 3 {
            let (s, backend) = pair(&listener).await;
            backends.push(backend);
            pool.put(1, s, Duration::from_secs(60));
        }
        assert_eq!(pool.by_peer[&1].len(), IDLE_PER_PEER);
    }
}
