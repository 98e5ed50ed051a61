//! Gateway API addresses: one socket per Gateway listener port, bound and closed while ferry
//! runs, as Gateways come and go (no restart).
//!
//! After every table swap the manager compares the table's Gateway ports with the sockets it
//! holds: a new port gets a socket (an ephemeral port, or the lowest free one of
//! `--gateway-ports`), a port no longer in the table stops accepting (connections in flight
//! finish). A port that cannot be bound is reported in `/routes` with its error. Connections are
//! served by the same listener app as the Ingress listeners, scoped to that port's routes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use gateway::{ListenerKey, PortProtocol, SharedTable};
use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use tokio::sync::watch;

/// Where each Gateway port is served: its socket address, or why it is not.
pub type Addresses = HashMap<ListenerKey, Result<SocketAddr, String>>;

/// Makes the listener app for a Gateway port (`None`: it cannot be served).
pub type AppFactory<A> = Box<dyn Fn(&ListenerKey, PortProtocol) -> Option<Arc<A>> + Send + Sync>;

pub struct GatewayListeners<A> {
    table: SharedTable,
    ip: IpAddr,
    /// `None`: ephemeral ports.
    range: Option<RangeInclusive<u16>>,
    make_app: AppFactory<A>,
    bound: Mutex<HashMap<ListenerKey, Bound>>,
    addresses: Arc<ArcSwap<Addresses>>,
    shutdown: watch::Receiver<bool>,
}

struct Bound {
    protocol: PortProtocol,
    addr: Result<SocketAddr, String>,
    /// Dropped (or sent) to stop accepting.
    _stop: Option<watch::Sender<bool>>,
}

impl<A: ServerApp + Send + Sync + 'static> GatewayListeners<A> {
    pub fn new(
        table: SharedTable,
        ip: IpAddr,
        range: Option<RangeInclusive<u16>>,
        make_app: AppFactory<A>,
        shutdown: watch::Receiver<bool>,
        addresses: Arc<ArcSwap<Addresses>>,
    ) -> Arc<Self> {
        Arc::new(GatewayListeners {
            table,
            ip,
            range,
            make_app,
            bound: Mutex::new(HashMap::new()),
            addresses,
            shutdown,
        })
    }

    /// Reconciles the sockets with the table after each swap (`changed` fires), forever. Runs on
    /// the runtime that serves the connections.
    pub async fn run(self: Arc<Self>, mut changed: watch::Receiver<()>) {
        loop {
            self.reconcile();
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    fn reconcile(&self) {
        let table = self.table.load();
        let want: HashMap<ListenerKey, PortProtocol> =
            table.gateway_ports().map(|p| (p.key.clone(), p.protocol)).collect();
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        let before = bound.len();
        bound.retain(|key, b| {
            let keep = want.get(key) == Some(&b.protocol);
            if !keep {
                tracing::info!(gateway = %key.gateway, port = key.port, "Gateway port removed; its socket stops accepting");
            }
            keep
        });
        let mut changed = bound.len() != before;
        let mut keys: Vec<_> = want.iter().filter(|(k, _)| !bound.contains_key(*k)).collect();
        keys.sort();
        for (key, protocol) in keys {
            let taken: Vec<u16> = bound.values().filter_map(|b| b.addr.as_ref().ok().map(SocketAddr::port)).collect();
            let served = self.bind(&taken).and_then(|l| {
                let app = (self.make_app)(key, *protocol).ok_or("cannot set up TLS for this port")?;
                Ok((l, app))
            });
            let b = match served {
                Ok((listener, app)) => {
                    let addr = listener.local_addr().map_err(|e| e.to_string());
                    let (stop, stopped) = watch::channel(false);
                    tokio::spawn(accept(listener, app, stopped, self.shutdown.clone()));
                    if let Ok(a) = &addr {
                        tracing::info!(gateway = %key.gateway, port = key.port, address = %a, protocol = ?protocol, "serving a Gateway port");
                    }
                    Bound { protocol: *protocol, addr, _stop: Some(stop) }
                }
                Err(e) => {
                    tracing::error!(gateway = %key.gateway, port = key.port, error = %e, "cannot bind a socket for a Gateway port");
                    Bound { protocol: *protocol, addr: Err(e), _stop: None }
                }
            };
            bound.insert(key.clone(), b);
            changed = true;
        }
        if changed {
            let addresses: Addresses = bound.iter().map(|(k, b)| (k.clone(), b.addr.clone())).collect();
            self.addresses.store(Arc::new(addresses));
        }
    }

    /// A listening socket: ephemeral, or the lowest port of the range that is free.
    fn bind(&self, taken: &[u16]) -> Result<tokio::net::TcpListener, String> {
        let try_bind = |port: u16| -> std::io::Result<tokio::net::TcpListener> {
            let addr = SocketAddr::new(self.ip, port);
            let socket =
                if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(1024)
        };
        match &self.range {
            None => try_bind(0).map_err(|e| format!("cannot bind {}:0: {e}", self.ip)),
            Some(range) => {
                for port in range.clone().filter(|p| !taken.contains(p)) {
                    if let Ok(l) = try_bind(port) {
                        return Ok(l);
                    }
                }
                Err(format!("no free port in --gateway-ports {}-{}", range.start(), range.end()))
            }
        }
    }
}

/// Accepts connections until `stop` fires (or its sender is dropped) and serves each with `app`,
/// as Pingora's listening service does (a connection the app hands back is served again).
async fn accept<A: ServerApp + Send + Sync + 'static>(
    listener: tokio::net::TcpListener,
    app: Arc<A>,
    mut stop: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) {
    let mut closing = shutdown.clone();
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on a Gateway port");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
            _ = closing.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
        let mut stream = L4Stream::from(tcp);
        stream.set_socket_digest(SocketDigest::from_raw_fd(fd));
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut next: Option<pingora::protocols::Stream> = Some(Box::new(stream));
            while let Some(s) = next.take() {
                next = app.process_new(s, &shutdown).await;
            }
        });
    }
}

/// `--gateway-ports`: `None` for ephemeral ports.
#[derive(Debug, Clone)]
pub struct PortRange(pub Option<RangeInclusive<u16>>);

/// Parses `--gateway-ports`: `0` (ephemeral ports) or `FIRST-LAST`.
pub fn parse_range(s: &str) -> Result<PortRange, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(PortRange(None));
    }
    let (a, b) = s.split_once('-').ok_or_else(|| format!("{s:?} is neither 0 nor FIRST-LAST"))?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| format!("{a:?} is not a port"))?,
        b.trim().parse().map_err(|_| format!("{b:?} is not a port"))?,
    );
    if a == 0 || a > b {
        return Err(format!("{s:?}: FIRST must be at least 1 and not above LAST"));
    }
    Ok(PortRange(Some(a..=b)))
}
