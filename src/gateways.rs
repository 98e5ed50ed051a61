//! Gateway API addresses: one socket per Gateway listener port, bound and closed while ferry
//! runs, as Gateways come and go (no restart).
//!
//! After every table swap the manager compares the table's Gateway ports with the sockets it
//! holds: a new port gets a socket (an ephemeral port, or the lowest free one of
//! `--gateway-ports`), a port no longer in the table stops accepting (connections in flight
//! finish). A port that cannot be bound is reported in `/routes` with its error. Connections are
//! served by the same listener app as the Ingress listeners, scoped to that port's routes.
//!
//! Kubernetes mode pins the ports ([`GatewayListeners::set_pins`]): every replica must serve a
//! listener on the container port its Gateway's Service targets, so a Gateway port is bound only
//! once the Services name a port for it, on exactly that port (a failed bind is retried: the
//! port may be held by a socket that is just closing).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use gateway::{ListenerKey, PortProtocol, SharedTable};
use pingora::apps::ServerApp;
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
    /// Kubernetes mode: the container port of each Gateway port; others are not bound.
    pins: Mutex<Option<HashMap<ListenerKey, u16>>>,
    /// Serves the UDP ports (their sockets are UDP, not a stream app's).
    udp: std::sync::OnceLock<Arc<gateway::udp::UdpRelay>>,
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
            pins: Mutex::new(None),
            udp: std::sync::OnceLock::new(),
        })
    }

    /// From now on, binds a Gateway port only when `pins` names its container port, and on
    /// exactly that port (Kubernetes mode, where the Gateway's Service targets it).
    pub fn set_pins(&self, pins: HashMap<ListenerKey, u16>) {
        *self.pins.lock().unwrap_or_else(|e| e.into_inner()) = Some(pins);
    }

    /// Follows the pinned ports forever (Kubernetes mode), retrying failed binds every second
    /// (whichever reconcile failed them). Runs on the runtime that serves the connections.
    pub async fn follow_pins(self: Arc<Self>, mut pins: watch::Receiver<HashMap<ListenerKey, u16>>) {
        let mut changed = true;
        loop {
            if changed {
                self.set_pins(pins.borrow_and_update().clone());
            }
            let failing = self.bound.lock().unwrap_or_else(|e| e.into_inner()).values().any(|b| b.addr.is_err());
            if changed || failing {
                self.reconcile();
            }
            changed = tokio::select! {
                r = pins.changed() => if r.is_err() { return } else { true },
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => false,
            };
        }
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
        // Table and pins are read under the lock: reconciles (after a table swap, after new pins)
        // run one after the other, each on the latest of both.
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        let table = self.table.load();
        let mut want: HashMap<ListenerKey, PortProtocol> =
            table.gateway_ports().map(|p| (p.key.clone(), p.protocol)).collect();
        let pins = self.pins.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut waiting: Vec<ListenerKey> = Vec::new();
        if let Some(pins) = &pins {
            waiting = want.keys().filter(|k| !pins.contains_key(*k)).cloned().collect();
            want.retain(|k, _| pins.contains_key(k));
        }
        let before = bound.len();
        // Pinned: a failed bind is tried again, a socket on a port no longer pinned is replaced.
        let mut failed_before: HashMap<ListenerKey, String> = HashMap::new();
        bound.retain(|key, b| {
            let pinned = pins.as_ref().map(|p| p.get(key).copied());
            if let (Some(_), Err(e)) = (&pinned, &b.addr) {
                failed_before.insert(key.clone(), e.clone());
                return false;
            }
            let keep = want.get(key) == Some(&b.protocol)
                && pinned.is_none_or(|port| b.addr.as_ref().ok().map(SocketAddr::port) == port);
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
            let pinned = pins.as_ref().and_then(|p| p.get(key).copied());
            if *protocol == PortProtocol::Udp {
                let b = self.bind_udp(key, pinned, &taken);
                if let (Err(e), false) = (&b.addr, failed_before.get(key) == b.addr.as_ref().err()) {
                    tracing::error!(gateway = %key.gateway, port = key.port, error = %e, "cannot bind a UDP socket for a Gateway port");
                }
                bound.insert(key.clone(), b);
                changed = true;
                continue;
            }
            let socket = match pinned {
                Some(port) => self.listen(port).map_err(|e| format!("cannot bind {}:{port}: {e}", self.ip)),
                None => self.bind(&taken),
            };
            let served = socket.and_then(|l| {
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
                    if failed_before.get(key) != Some(&e) {
                        tracing::error!(gateway = %key.gateway, port = key.port, error = %e, "cannot bind a socket for a Gateway port");
                    }
                    Bound { protocol: *protocol, addr: Err(e), _stop: None }
                }
            };
            bound.insert(key.clone(), b);
            changed = true;
        }
        if changed || pins.is_some() {
            let mut addresses: Addresses = bound.iter().map(|(k, b)| (k.clone(), b.addr.clone())).collect();
            for k in waiting {
                addresses.insert(k, Err("waiting for the Gateway's Service to name a container port".into()));
            }
            if changed || **self.addresses.load() != addresses {
                self.addresses.store(Arc::new(addresses));
            }
        }
    }

    fn listen(&self, port: u16) -> std::io::Result<tokio::net::TcpListener> {
        let addr = SocketAddr::new(self.ip, port);
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    }

    /// A listening socket: ephemeral, or the lowest port of the range that is free.
    fn bind(&self, taken: &[u16]) -> Result<tokio::net::TcpListener, String> {
        let try_bind = |port: u16| self.listen(port);
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

impl<A> GatewayListeners<A> {
    /// Serves the Gateways' UDP ports with `relay` (set once, before the first reconcile).
    pub fn serve_udp(&self, relay: Arc<gateway::udp::UdpRelay>) {
        let _ = self.udp.set(relay);
    }

    /// A UDP Gateway port: its socket (the pinned port, an ephemeral one, or the lowest free port
    /// of the range) relayed by the UDP relay until the port goes.
    fn bind_udp(&self, key: &ListenerKey, pinned: Option<u16>, taken: &[u16]) -> Bound {
        let try_bind = |port: u16| std::net::UdpSocket::bind(SocketAddr::new(self.ip, port));
        let socket = match (pinned, &self.range) {
            (Some(port), _) => try_bind(port).map_err(|e| format!("cannot bind UDP {}:{port}: {e}", self.ip)),
            (None, None) => try_bind(0).map_err(|e| format!("cannot bind UDP {}:0: {e}", self.ip)),
            (None, Some(range)) => range
                .clone()
                .filter(|p| !taken.contains(p))
                .find_map(|p| try_bind(p).ok())
                .ok_or_else(|| format!("no free UDP port in --gateway-ports {}-{}", range.start(), range.end())),
        };
        let served = socket.and_then(|s| {
            let relay = self.udp.get().ok_or("UDP is not served")?.clone();
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok((tokio::net::UdpSocket::from_std(s).map_err(|e| e.to_string())?, relay))
        });
        match served {
            Ok((socket, relay)) => {
                let addr = socket.local_addr().map_err(|e| e.to_string());
                let (stop, stopped) = watch::channel(false);
                tokio::spawn(relay.serve(key.clone(), socket, stopped, self.shutdown.clone()));
                if let Ok(a) = &addr {
                    tracing::info!(gateway = %key.gateway, port = key.port, address = %a, "serving a Gateway UDP port");
                }
                Bound { protocol: PortProtocol::Udp, addr, _stop: Some(stop) }
            }
            Err(e) => Bound { protocol: PortProtocol::Udp, addr: Err(e), _stop: None },
        }
    }
}

/// Accepts connections until `stop` fires (or its sender is dropped) or shutdown begins, and
/// serves each with `app`.
async fn accept<A: ServerApp + Send + Sync + 'static>(
    listener: tokio::net::TcpListener,
    app: Arc<A>,
    mut stop: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) {
    let mut closing = shutdown.clone();
    let stopped = async {
        tokio::select! {
            _ = stop.changed() => {}
            _ = closing.changed() => {}
        }
    };
    gateway::listener::accept(&listener, &app, stopped, &shutdown).await;
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
