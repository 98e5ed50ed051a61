//! The L4 server: accepts the streams of the `--l4-ports`, reads a passthrough client's
//! ClientHello for its SNI, picks the route in the live table's [`L4Table`](crate::l4::L4Table)
//! and relays the stream both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::Backend;
use crate::balance::{hash_ip, Pick, PickInput, Policy};
use crate::l4::{L4Route, PortUse};
use crate::limits::ConnLimiter;
use crate::metrics::{BackendLabels, L4Labels, Metrics};
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
        let Some((mut upstream, _in_flight)) = self.connect(&route.backend, peer).await else {
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
        self.metrics.l4_connections.get_or_create(&L4Labels { route: route.clone(), outcome }).inc();
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

    /// Connects to an endpoint of `backend`, trying others when a connect fails. The `Pick`
    /// counts the stream as in flight on its endpoint while held.
    async fn connect(&self, backend: &Backend, client: SocketAddr) -> Option<(TcpStream, Pick)> {
        let mut input = PickInput { client: Some(client.ip()), ..PickInput::default() };
        if backend.policy == Policy::SourceHash {
            input.key = Some(hash_ip(client.ip()));
        }
        let attempts = if backend.has_alternatives() { CONNECT_ATTEMPTS } else { 1 };
        for _ in 0..attempts {
            let pick = backend.pick_async(&input).await?;
            let endpoint = pick.addr;
            let started = Instant::now();
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(endpoint)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    pick.success(started.elapsed());
                    return Some((stream, pick));
                }
                Ok(Err(e)) => tracing::debug!(%endpoint, error = %e, "L4 connect failed"),
                Err(_) => tracing::debug!(%endpoint, "L4 connect timed out"),
            }
            pick.failure();
            self.metrics.upstream_connect_errors.get_or_create(&BackendLabels { backend: backend.name.clone() }).inc();
            input.avoid = Some(endpoint);
        }
        None
    }
}

/// Reads a TLS ClientHello (possibly over several records and reads) and returns its SNI and
/// every byte read.
async fn read_client_hello(client: &mut TcpStream) -> Result<(Option<String>, Vec<u8>), String> {
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
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
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

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
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
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}
