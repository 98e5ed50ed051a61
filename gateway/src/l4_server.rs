//! The L4 servers: [`L4Server`] accepts the streams of the `--l4-ports`, reads a passthrough
//! client's ClientHello for its SNI, picks the route in the live table's
//! [`L4Table`](crate::l4::L4Table) and relays the stream both ways. [`GatewayL4App`] serves the
//! TCP and TLS ports of Gateways (accepted by the binary's Gateway port manager) the same way:
//! TCPRoutes, TLSRoutes passed through or terminated here, and, on a port that TLS and HTTPS
//! listeners share, the HTTPS connections handed to the HTTP engines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::Backend;
use crate::balance::{hash_ip, Pick, PickInput, Policy};
use crate::l4::{L4Mode, L4Route, PortUse};
use crate::limits::ConnLimiter;
use crate::metrics::{BackendLabels, L4Labels, Metrics};
use crate::table::{ListenerKey, PortProtocol};
use crate::SharedTable;

/// Bytes read from a client before its ClientHello is complete, at most (a ClientHello with
/// post-quantum key shares and many extensions is a few KiB).
const MAX_CLIENT_HELLO: usize = 64 * 1024;
/// Time a passthrough client has to send its ClientHello.
const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Endpoints tried per stream when connects fail.
const CONNECT_ATTEMPTS: usize = 3;
const RELAY_BUFFER: usize = 32 * 1024;

/// Accepts and relays the streams of the L4 ports.
pub struct L4Server {
    table: SharedTable,
    metrics: Arc<Metrics>,
    connect_timeout: Duration,
    /// Connection limits per port: total, per client IP (0 = none).
    max_connections: (usize, usize),
}

impl L4Server {
    pub fn new(
        table: SharedTable,
        metrics: Arc<Metrics>,
        connect_timeout: Duration,
        max_connections: (usize, usize),
    ) -> Arc<Self> {
        Arc::new(L4Server { table, metrics, connect_timeout, max_connections })
    }

    /// Accepts connections on one declared port until `stop` turns true (the listener is then
    /// closed: new connections are refused; streams in flight go on).
    pub async fn serve(self: Arc<Self>, listener: TcpListener, mut stop: tokio::sync::watch::Receiver<bool>) {
        let port = listener.local_addr().map_or(0, |a| a.port());
        let limiter = ConnLimiter::new(self.max_connections.0, self.max_connections.1);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, client)) => {
                    let permit = match limiter.acquire(Some(client.ip())) {
                        Ok(p) => p,
                        Err(why) => {
                            self.metrics.refused("l4", why);
                            continue;
                        }
                    };
                    let this = self.clone();
                    tokio::spawn(async move {
                        this.handle(stream, client, port).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(port, error = %e, "L4 accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn handle(&self, mut client: TcpStream, peer: SocketAddr, port: u16) {
        let _work = crate::drain::Work::start();
        let _ = client.set_nodelay(true);
        let (route, head) = match self.route_for(&mut client, port).await {
            Ok(found) => found,
            Err(why) => {
                tracing::debug!(port, client = %peer, "L4 connection refused: {why}");
                self.count(&Arc::from("none"), "no_route");
                return;
            }
        };
        let Some((mut upstream, _in_flight)) =
            connect(route.backend(), peer, self.connect_timeout, &self.metrics).await
        else {
            self.count(&route.name, "no_upstream");
            return;
        };
        if !head.is_empty() && upstream.write_all(&head).await.is_err() {
            self.count(&route.name, "upstream_error");
            return;
        }
        self.count(&route.name, "accepted");
        relay(client, upstream, route.idle_timeout).await;
    }

    fn count(&self, route: &Arc<str>, outcome: &'static str) {
        count(&self.metrics, route, outcome);
    }

    /// Finds the route of a new connection; for a passthrough port, reads the ClientHello first
    /// and returns the bytes read, to be sent upstream before anything else.
    async fn route_for(&self, client: &mut TcpStream, port: u16) -> Result<(Arc<L4Route>, Vec<u8>), String> {
        {
            let table = self.table.load();
            if let Some(r) = table.l4.plain(port) {
                return Ok((r.clone(), Vec::new()));
            }
            if table.l4.port_use(port) != PortUse::Sni {
                return Err("no L4Route on this port".into());
            }
        }
        let (sni, head) = tokio::time::timeout(CLIENT_HELLO_TIMEOUT, read_client_hello(client))
            .await
            .map_err(|_| "no ClientHello in time".to_string())??;
        let sni = sni.ok_or("ClientHello without SNI")?;
        // Looked up in the table current now: it may have changed while the client spoke.
        let route = self.table.load().l4.by_sni(port, &sni)?.clone();
        Ok((route, head))
    }
}

fn count(metrics: &Metrics, route: &Arc<str>, outcome: &'static str) {
    metrics.l4_connections.get_or_create(&L4Labels { route: route.clone(), outcome }).inc();
}

/// The endpoint choice inputs for a client: its IP (affinity) and, for source-hash backends,
/// the hash of that IP.
pub(crate) fn pick_input(backend: &Backend, client: std::net::IpAddr) -> PickInput {
    let mut input = PickInput { client: Some(client), ..PickInput::default() };
    if backend.policy == Policy::SourceHash {
        input.key = Some(hash_ip(client));
    }
    input
}

/// Connects to an endpoint of `backend`, trying others when a connect fails. The `Pick` counts
/// the stream as in flight on its endpoint while held.
async fn connect(
    backend: &Backend,
    client: SocketAddr,
    timeout: Duration,
    metrics: &Metrics,
) -> Option<(TcpStream, Pick)> {
    let mut input = pick_input(backend, client.ip());
    let attempts = if backend.has_alternatives() { CONNECT_ATTEMPTS } else { 1 };
    for _ in 0..attempts {
        let pick = backend.pick_async(&input).await?;
        let endpoint = pick.addr;
        let started = Instant::now();
        match tokio::time::timeout(timeout, TcpStream::connect(endpoint)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                pick.success(started.elapsed());
                return Some((stream, pick));
            }
            Ok(Err(e)) => tracing::debug!(%endpoint, error = %e, "L4 connect failed"),
            Err(_) => tracing::debug!(%endpoint, "L4 connect timed out"),
        }
        pick.failure();
        metrics.upstream_connect_errors.get_or_create(&BackendLabels { backend: backend.name.clone() }).inc();
        input.avoid = Some(endpoint);
    }
    None
}

/// Serves the TCP and TLS ports of one Gateway (`key`): a TCP port's connections go to its
/// listener's TCPRoute; on a TLS port the ClientHello's server name picks the listener (as for
/// HTTPS: exact hostname, then the longest wildcard, then none) and that listener passes the
/// stream through to the TLSRoute for the name, terminates TLS with its certificate and relays
/// the plaintext, or, for an HTTPS listener sharing the port, hands the connection (ClientHello
/// replayed) to `https`. A name without a route, or a backend that cannot be reached, closes the
/// connection without an answer. Connection limits apply per port, as on every listener.
pub struct GatewayL4App<H> {
    table: SharedTable,
    key: ListenerKey,
    metrics: Arc<Metrics>,
    connect_timeout: Duration,
    limiter: Arc<ConnLimiter>,
    /// Terminate listeners: the acceptor (its resolver gives the listener's certificate) and how
    /// long a client has for its ClientHello and handshake.
    tls: Option<(Arc<pingora::listeners::tls::Acceptor>, Duration)>,
    /// The HTTPS listeners of the port, if any.
    https: Option<Arc<H>>,
}

impl<H> GatewayL4App<H> {
    pub fn new(
        table: SharedTable,
        key: ListenerKey,
        metrics: Arc<Metrics>,
        connect_timeout: Duration,
        max_connections: (usize, usize),
    ) -> Self {
        let limiter = ConnLimiter::new(max_connections.0, max_connections.1);
        GatewayL4App { table, key, metrics, connect_timeout, limiter, tls: None, https: None }
    }

    /// TLS termination for the port's Terminate listeners, handshakes limited to `limit`.
    pub fn with_tls(mut self, acceptor: Arc<pingora::listeners::tls::Acceptor>, limit: Duration) -> Self {
        self.tls = Some((acceptor, limit));
        self
    }

    /// The app of the port's HTTPS listeners (it terminates TLS itself).
    pub fn with_https(mut self, https: Arc<H>) -> Self {
        self.https = Some(https);
        self
    }

    /// The route of a connection and the stream to relay (TLS ended here when the listener
    /// terminates), or `Err` with the outcome to count; `Ok(Err(stream))` hands an HTTPS
    /// connection back to the caller.
    async fn route_for(
        &self,
        stream: pingora::protocols::Stream,
    ) -> Result<Result<(Arc<L4Route>, pingora::protocols::Stream), pingora::protocols::Stream>, (Arc<str>, String)>
    {
        let none = || Arc::<str>::from("none");
        let port = self.table.load().gateway(&self.key).cloned().ok_or((none(), "the port is gone".to_string()))?;
        if port.protocol != PortProtocol::Tls {
            let route = port.listeners().first().and_then(|l| l.l4.route(None)).cloned();
            return route.map(|r| Ok((r, stream))).ok_or((none(), "no TCPRoute on this listener".into()));
        }
        let limit = self.tls.as_ref().map_or(CLIENT_HELLO_TIMEOUT, |(_, l)| *l);
        let mut tcp =
            stream.into_any().downcast::<crate::conn::Conn>().map_err(|_| (none(), "not a TCP stream".into()))?;
        let (sni, head) = tokio::time::timeout(limit, read_client_hello(&mut *tcp))
            .await
            .map_err(|_| (none(), "no ClientHello in time".to_string()))?
            .map_err(|e| (none(), e))?;
        tcp.rewind(&head);
        // Looked up in the table current now: it may have changed while the client spoke.
        let port = self.table.load().gateway(&self.key).cloned().ok_or((none(), "the port is gone".to_string()))?;
        let listener = port.listener_for(sni.as_deref()).ok_or_else(|| (none(), format!("no listener for {sni:?}")))?;
        let route = match listener.l4.mode {
            L4Mode::Http if self.https.is_some() => return Ok(Err(tcp)),
            L4Mode::Passthrough | L4Mode::Terminate => listener.l4.route(sni.as_deref()).cloned(),
            _ => None,
        };
        let route = route.ok_or_else(|| (none(), format!("no TLSRoute for server name {sni:?}")))?;
        if listener.l4.mode == L4Mode::Passthrough {
            return Ok(Ok((route, tcp)));
        }
        let Some((acceptor, limit)) = &self.tls else { return Err((route.name.clone(), "TLS not set up".into())) };
        match tokio::time::timeout(*limit, acceptor.tls_handshake(*tcp)).await {
            Ok(Ok(tls)) => Ok(Ok((route, Box::new(tls)))),
            Ok(Err(e)) => {
                self.metrics.client_fault("gateway tls", "tls_handshake");
                Err((route.name.clone(), format!("TLS handshake failed: {e}")))
            }
            Err(_) => Err((route.name.clone(), "TLS handshake not completed in time".into())),
        }
    }
}

#[async_trait::async_trait]
impl<H: pingora::apps::ServerApp + Send + Sync + 'static> pingora::apps::ServerApp for GatewayL4App<H> {
    async fn process_new(
        self: &Arc<Self>,
        stream: pingora::protocols::Stream,
        shutdown: &pingora::server::ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        let digest = stream.get_socket_digest();
        let peer = digest.as_ref().and_then(|d| d.peer_addr()).and_then(|a| a.as_inet().copied());
        let _permit = match self.limiter.acquire(peer.map(|p| p.ip())) {
            Ok(p) => p,
            Err(why) => {
                self.metrics.refused("gateway l4", why);
                return None;
            }
        };
        let work = crate::drain::Work::start();
        let (route, client) = match self.route_for(stream).await {
            Ok(Ok(found)) => found,
            Ok(Err(https)) => {
                drop(work);
                let app = self.https.as_ref()?;
                return app.process_new(https, shutdown).await;
            }
            Err((route, why)) => {
                tracing::debug!(gateway = %self.key.gateway, port = self.key.port, client = ?peer, "Gateway L4 connection closed: {why}");
                count(&self.metrics, &route, "no_route");
                return None;
            }
        };
        let peer = peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let Some((upstream, _in_flight)) = connect(route.backend(), peer, self.connect_timeout, &self.metrics).await
        else {
            count(&self.metrics, &route.name, "no_upstream");
            return None;
        };
        count(&self.metrics, &route.name, "accepted");
        relay_streams(client, upstream, route.idle_timeout).await;
        None
    }
}

/// The app of one Gateway TCP port: an HTTP or HTTPS listener app (`H`), or [`GatewayL4App`]
/// for TCP and TLS ports.
pub enum PortApp<H> {
    Http(Arc<H>),
    L4(Arc<GatewayL4App<H>>),
}

#[async_trait::async_trait]
impl<H: pingora::apps::ServerApp + Send + Sync + 'static> pingora::apps::ServerApp for PortApp<H> {
    async fn process_new(
        self: &Arc<Self>,
        stream: pingora::protocols::Stream,
        shutdown: &pingora::server::ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        match &**self {
            PortApp::Http(app) => app.process_new(stream, shutdown).await,
            PortApp::L4(app) => app.process_new(stream, shutdown).await,
        }
    }

    async fn cleanup(&self) {
        match self {
            PortApp::Http(app) => app.cleanup().await,
            PortApp::L4(app) => {
                if let Some(https) = &app.https {
                    https.cleanup().await;
                }
            }
        }
    }
}

/// Reads a TLS ClientHello (possibly over several records and reads) and returns its SNI and
/// every byte read.
async fn read_client_hello<R: AsyncRead + Unpin>(client: &mut R) -> Result<(Option<String>, Vec<u8>), String> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut head = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = client.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("client closed before its ClientHello".into());
        }
        head.extend_from_slice(&chunk[..n]);
        let mut fed = &chunk[..n];
        while !fed.is_empty() {
            acceptor.read_tls(&mut fed).map_err(|e| format!("reading ClientHello: {e}"))?;
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok((accepted.client_hello().server_name().map(str::to_string), head)),
            Ok(None) if head.len() < MAX_CLIENT_HELLO => continue,
            Ok(None) => return Err("ClientHello too large".into()),
            Err((e, _)) => return Err(format!("not a TLS ClientHello: {e}")),
        }
    }
}

/// Relays both directions until both are closed, either fails, or nothing moved for `idle`.
/// A direction that reaches end of stream shuts down the other side's write half (half-close),
/// and the other direction keeps flowing.
pub async fn relay(a: TcpStream, b: TcpStream, idle: Duration) {
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    relay_halves((ar, aw), (br, bw), idle).await;
}

/// [`relay`] for any pair of streams (a client stream whose ClientHello was replayed, or whose
/// TLS ended here).
pub async fn relay_streams<A, B>(a: A, b: B, idle: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin + Send,
    B: AsyncRead + AsyncWrite + Unpin + Send,
{
    relay_halves(tokio::io::split(a), tokio::io::split(b), idle).await;
}

async fn relay_halves<AR, AW, BR, BW>(a: (AR, AW), b: (BR, BW), idle: Duration)
where
    AR: AsyncRead + Unpin,
    AW: AsyncWrite + Unpin,
    BR: AsyncRead + Unpin,
    BW: AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let ((ar, aw), (br, bw)) = (a, b);
    let both = async { tokio::try_join!(pump(ar, bw, &last, start), pump(br, aw, &last, start)) };
    let idle_watch = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = start + since + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    };
    tokio::select! {
        _ = both => {}
        _ = idle_watch => tracing::debug!("L4 stream idle; closed"),
    }
}

async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut from: R,
    mut to: W,
    last: &AtomicU64,
    start: Instant,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; RELAY_BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Pass the half-close on; the other direction keeps going.
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        // Pingora's streams buffer writes (a plain socket's flush is free).
        to.flush().await?;
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}
