//! The fast engine's upstream session: one type for HTTP/1.x and h2c backends — HTTP/1.x through
//! ferry's client codec ([`crate::client`]) on connections pooled per thread here, h2c through
//! Pingora's session and pool — so everything the fast engine does with a backend (retries, body
//! limits, relaying) is written once for both protocols.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use pingora::connectors::http::Connector;
use pingora::http::ResponseHeader;
use pingora::prelude::HttpPeer;
use pingora::protocols::http::client::HttpSession as ClientSession;
use pingora::protocols::http::v1::server::HttpSession as Downstream;
use pingora::protocols::Stream;
use pingora::upstreams::peer::Peer;
use pingora::{Error, ErrorType, Result};
use thread_local::ThreadLocal;

use crate::client::{up_err, H1Client};
use crate::http::{origin_form, EditHead, UpstreamHead};
use crate::tunnel;

/// The fast engine's upstream connections: HTTP/1-only peers (most) connect through Pingora's
/// transport connector (TCP, TLS) and are kept idle in ferry's per-thread pool ([`IdlePool`]);
/// peers that may speak h2c connect through the full connector, which pools HTTP/2 sessions
/// (an HTTP/1 connection it makes is kept here too).
pub struct Connectors {
    transport: pingora::connectors::TransportConnector,
    any: Connector,
    idle: ThreadLocal<RefCell<IdlePool>>,
}

impl Connectors {
    pub fn new(options: Option<pingora::connectors::ConnectorOptions>) -> Connectors {
        Connectors {
            transport: pingora::connectors::TransportConnector::new(options.clone()),
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
pub struct Upstream(Session);

enum Session {
    /// HTTP/1.x, through ferry's client codec.
    H1(H1Client),
    /// HTTP/2 (h2c), through Pingora's session.
    H2(ClientSession),
}

/// Whether `peer` speaks only HTTP/1 (it needs no HTTP/2 connector).
fn h1_only(peer: &HttpPeer) -> bool {
    peer.options.alpn.get_max_http_version() == 1
}

/// The idle pool's key for `peer`'s HTTP/1 connections. Pingora's reuse hash does not cover the
/// protocols a peer may speak, so a peer that may speak HTTP/2 (whose connection answered in
/// HTTP/1) has a key of its own: an HTTP/1-only peer's connection must not serve it.
fn pool_key(peer: &HttpPeer) -> u64 {
    let hash = peer.reuse_hash();
    if h1_only(peer) {
        hash
    } else {
        hash.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15
    }
}

impl Upstream {
    /// A pooled connection to `peer` or a new one; `true` if pooled.
    ///
    /// The pooled case, every request on a busy route, is a small future; a new connection's
    /// (Pingora's connect, with TLS state inline: ~9 KB) is boxed, so it is not part of every
    /// request's state (which the fast engine allocates per request).
    pub async fn connect(pools: &Connectors, peer: &HttpPeer) -> Result<(Upstream, bool)> {
        let h1 = |stream| {
            Upstream(Session::H1(H1Client::new(stream, peer.options.read_timeout, peer.options.write_timeout)))
        };
        if let Some(stream) = pools.idle().take(pool_key(peer)) {
            return Ok((h1(stream), true));
        }
        if h1_only(peer) {
            let stream = up(Box::pin(pools.transport.new_stream(peer)).await)?;
            return Ok((h1(stream), false));
        }
        match up(Box::pin(pools.any.get_http_session(peer)).await)? {
            // A peer that may speak h2c but answered the connection in HTTP/1.
            (ClientSession::H1(session), reused) => Ok((h1(session.into_inner()), reused)),
            (mut session, reused) => {
                // The connector leaves the session's timeouts unset; they come from the peer.
                session.set_read_timeout(peer.options.read_timeout);
                session.set_write_timeout(peer.options.write_timeout);
                Ok((Upstream(Session::H2(session)), reused))
            }
        }
    }

    /// Sends the request head. For HTTP/2 the head loses its connection-level fields and gets
    /// its pseudo-headers: `:scheme` names the hop to the backend (cleartext), as Pingora's
    /// engine sends it (`X-Forwarded-Proto` carries the client's).
    pub async fn send_head(&mut self, head: &UpstreamHead<'_>, body_empty: bool) -> Result<()> {
        match &mut self.0 {
            Session::H1(h1) => h1.write_head(head).await,
            Session::H2(ClientSession::H2(h2)) => {
                let mut head = head.to_request_header().into_owned();
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
            Session::H2(_) => Err(up_err(ErrorType::InternalError, "no such upstream session")),
        }
    }

    pub async fn send_body(&mut self, chunk: Bytes) -> Result<()> {
        match &mut self.0 {
            Session::H1(h1) => h1.write_body(&chunk).await,
            Session::H2(h2) => up(h2.write_request_body(chunk, false).await),
        }
    }

    /// Ends the request (HTTP/2: unless its head already did, for an empty body).
    pub async fn finish(&mut self, body_empty: bool) -> Result<()> {
        match &mut self.0 {
            Session::H1(h1) => h1.finish_body().await,
            Session::H2(_) if body_empty => Ok(()),
            Session::H2(h2) => up(h2.finish_request_body().await),
        }
    }

    /// Reads the final response head (informational ones other than `101` are not relayed).
    pub async fn read_head(&mut self) -> Result<&ResponseHeader> {
        let h2 = match &mut self.0 {
            Session::H1(h1) => return h1.read_head().await,
            Session::H2(h2) => h2,
        };
        up(h2.read_response_header().await)?;
        h2.response_header().ok_or_else(|| up_err(ErrorType::InvalidHTTPHeader, "upstream sent no response head"))
    }

    /// The response head to send to an HTTP/1.x client (from HTTP/2: version 1.1; the body's
    /// framing for the client is the lifecycle's, `safety::frame_response`). HTTP/1: taken
    /// from the session, not copied.
    pub fn head_for(&mut self) -> ResponseHeader {
        match &mut self.0 {
            Session::H1(h1) => h1.take_response().expect("read_head ran"),
            Session::H2(h2) => {
                let mut resp = h2.response_header().expect("read_head ran").clone();
                resp.set_version(http::Version::HTTP_11);
                resp
            }
        }
    }

    /// Relays the response body to the client (then the connection may go back to the pool).
    pub async fn relay_body(&mut self, ds: &mut Downstream) -> Result<()> {
        match &mut self.0 {
            // HTTP/1: borrowed from the codec's buffer, no copy.
            Session::H1(h1) => {
                while let Some(chunk) = h1.read_body().await? {
                    down(ds.write_body(chunk).await)?;
                }
            }
            Session::H2(h2) => {
                while let Some(chunk) = up(h2.read_response_body().await)? {
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
        matches!(&self.0, Session::H1(us) if us.upgraded()) && ds.was_upgraded()
    }

    /// Relays an [upgraded](Self::upgraded) connection both ways until both sides have closed
    /// or one fails ([`tunnel::relay`]): the connections leave their sessions (and the sessions'
    /// buffers are freed), bytes either side had read past its head go first. Returns the
    /// bytes sent to the client and how the tunnel ended.
    pub async fn tunnel(self, mut ds: Downstream) -> (u64, Result<()>) {
        let Session::H1(us) = self.0 else {
            return (0, Err(up_err(ErrorType::InternalError, "no HTTP/1 connection to tunnel")));
        };
        let to_backend = match down(tunnel::take_buffered(|| tunnel::poll_now(ds.read_body_bytes()))) {
            Ok(bytes) => bytes,
            Err(e) => return (0, Err(e)),
        };
        // Only the bytes are kept: the codec's buffer (and the response head sharing it) is
        // freed before the tunnel's life begins.
        let (mut backend, buffered) = us.into_parts();
        let to_client = buffered.to_vec();
        drop(buffered);
        let mut client = ds.into_inner();
        let (end, sent) = tunnel::relay(&mut client, &mut backend, to_backend, to_client).await;
        let ended = match end {
            tunnel::End::Closed => Ok(()),
            tunnel::End::Client(e) => down(Err(Error::because(ErrorType::ConnectionClosed, "tunnel: client", e))),
            tunnel::End::Backend(e) => up(Err(Error::because(ErrorType::ConnectionClosed, "tunnel: backend", e))),
        };
        (sent, ended)
    }

    /// Back to the pool (a connection that cannot carry another request is closed). Not
    /// awaited for HTTP/1: giving a kept connection back is immediate, one that is not kept is
    /// dropped (closed). An HTTP/1 connection is kept for `idle`, or less if the backend's
    /// `Keep-Alive` says so.
    pub async fn release(self, pools: &Connectors, peer: &HttpPeer, idle: Duration) {
        match self.0 {
            Session::H1(h1) => {
                if let Some((stream, theirs)) = h1.into_reusable() {
                    pools.idle().put(pool_key(peer), stream, theirs.map_or(idle, |t| t.min(idle)));
                }
            }
            // Boxed: the full connector's release is large and rare (peers that may speak h2c).
            Session::H2(session) => Box::pin(pools.any.release_http_session(session, peer, Some(idle))).await,
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
