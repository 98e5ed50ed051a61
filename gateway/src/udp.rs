//! The UDP relay of Gateway UDP listeners (UDPRoutes).
//!
//! UDP has no connections, so the relay makes flows: the first datagram from a client address
//! (IP and port) picks a backend of the listener's route (by weight) and an endpoint of it (with
//! the Service's client-IP affinity, like a TCP stream), and opens an upstream socket connected
//! to that endpoint. The client's later datagrams go out on the same socket, so a flow sticks to
//! its endpoint; whatever the endpoint sends back is relayed to the client from the Gateway's
//! own socket, the address the client wrote to. A flow ends after `idle_timeout` without a
//! datagram in either direction.
//!
//! The flow table of a port is bounded ([`FlowTable`]): when it is full, the flow idle the
//! longest is evicted (counted in `ferry_udp_flows_total{outcome="evicted"}`) to make room, so a
//! flood of new source addresses cannot exhaust sockets or memory, and the port keeps serving.
//! Routes are looked up in the live table when a flow starts; a flow keeps its endpoint across
//! table swaps while the endpoint still serves the port's route (checked on the flow's first
//! datagram after each swap, as kube-proxy clears the conntrack entries of a removed UDP
//! endpoint); otherwise the datagram starts a new flow.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{watch, Notify};

use crate::l4_server::pick_input;
use crate::metrics::{L4Labels, Metrics};
use crate::table::ListenerKey;
use crate::SharedTable;

/// Largest datagram relayed (the UDP maximum; larger ones cannot exist).
const MAX_DATAGRAM: usize = 65_535;

/// How UDP flows are kept.
#[derive(Debug, Clone, Copy)]
pub struct UdpConfig {
    /// A flow without a datagram in either direction for this long ends.
    pub idle_timeout: Duration,
    /// Flows per port, at most; a new flow beyond it evicts the one idle the longest.
    pub max_flows: usize,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig { idle_timeout: Duration::from_secs(60), max_flows: 16_384 }
    }
}

/// The flows of one port by client address, at most `max` of them. Times are milliseconds on
/// the caller's clock; each flow's last activity is shared with whoever relays its replies.
#[derive(Debug)]
pub struct FlowTable<T> {
    flows: HashMap<SocketAddr, Flow<T>>,
    max: usize,
    next_id: u64,
}

#[derive(Debug)]
struct Flow<T> {
    id: u64,
    last: Arc<AtomicU64>,
    value: T,
}

/// A flow's identity (a later flow of the same client is another one) and its activity clock.
#[derive(Debug, Clone)]
pub struct FlowRef {
    pub id: u64,
    pub last: Arc<AtomicU64>,
}

impl FlowRef {
    pub fn touch(&self, now: u64) {
        self.last.store(now, Ordering::Relaxed);
    }

    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }
}

impl<T> FlowTable<T> {
    pub fn new(max: usize) -> Self {
        FlowTable { flows: HashMap::new(), max: max.max(1), next_id: 0 }
    }

    /// The flow of `client`, marked active at `now`.
    pub fn get(&self, client: &SocketAddr, now: u64) -> Option<&T> {
        let f = self.flows.get(client)?;
        f.last.store(now, Ordering::Relaxed);
        Some(&f.value)
    }

    /// Adds the flow of `client` (replacing any); when the table is full, the flow idle the
    /// longest is evicted and returned. The scan is linear, but only a full table pays it, once
    /// per new flow.
    pub fn insert(&mut self, client: SocketAddr, value: T, now: u64) -> (FlowRef, Option<(SocketAddr, T)>) {
        let mut evicted = None;
        if self.flows.len() >= self.max && !self.flows.contains_key(&client) {
            let oldest = self.flows.iter().min_by_key(|(_, f)| (f.last.load(Ordering::Relaxed), f.id)).map(|(k, _)| *k);
            if let Some(key) = oldest {
                evicted = self.flows.remove(&key).map(|f| (key, f.value));
            }
        }
        self.next_id += 1;
        let flow = FlowRef { id: self.next_id, last: Arc::new(AtomicU64::new(now)) };
        self.flows.insert(client, Flow { id: flow.id, last: flow.last.clone(), value });
        (flow, evicted)
    }

    /// Removes the flow of `client` if it is still flow `id` (a newer flow of the same client
    /// stays).
    pub fn remove(&mut self, client: &SocketAddr, id: u64) -> Option<T> {
        if self.flows.get(client).is_some_and(|f| f.id == id) {
            return self.flows.remove(client).map(|f| f.value);
        }
        None
    }

    /// Removes the flow of `client`, whichever it is.
    pub fn take(&mut self, client: &SocketAddr) -> Option<T> {
        self.flows.remove(client).map(|f| f.value)
    }

    /// Removes every flow.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.flows.drain().map(|(_, f)| f.value)
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

/// What the flow table holds per flow: the upstream socket and how to end the flow's reply task.
struct Upstream {
    socket: Arc<UdpSocket>,
    stop: Arc<Notify>,
    endpoint: SocketAddr,
    /// The table (its address) the endpoint was last found in for the port's route.
    checked: std::sync::atomic::AtomicUsize,
}

/// Serves the UDP ports of Gateways.
pub struct UdpRelay {
    table: SharedTable,
    metrics: Arc<Metrics>,
    config: UdpConfig,
}

impl UdpRelay {
    pub fn new(table: SharedTable, metrics: Arc<Metrics>, config: UdpConfig) -> Arc<Self> {
        Arc::new(UdpRelay { table, metrics, config })
    }

    /// Relays the datagrams of Gateway port `key` arriving on `socket` until `stop` or
    /// `shutdown` changes or its sender is dropped (the socket is then closed and every flow
    /// ends).
    pub async fn serve(
        self: Arc<Self>,
        key: ListenerKey,
        socket: UdpSocket,
        mut stop: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let socket = Arc::new(socket);
        let flows: Arc<Mutex<FlowTable<Upstream>>> = Arc::new(Mutex::new(FlowTable::new(self.config.max_flows)));
        let start = Instant::now();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (n, client) = tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = shutdown.changed() => break,
                r = socket.recv_from(&mut buf) => match r {
                    Ok(r) => r,
                    Err(e) => {
                        // An ICMP error reported on the listening socket, or out of buffers.
                        tracing::debug!(gateway = %key.gateway, port = key.port, error = %e, "UDP receive failed");
                        continue;
                    }
                },
            };
            let now = start.elapsed().as_millis() as u64;
            let table = self.table.load();
            let current = Arc::as_ptr(&*table) as usize;
            let known = lock(&flows).get(&client, now).map(|u| {
                let stale = u.checked.swap(current, Ordering::Relaxed) != current;
                (u.socket.clone(), u.endpoint, stale)
            });
            let known = match known {
                // The table changed since this flow was last checked: keep it only while its
                // endpoint still serves the port's route.
                Some((_, endpoint, true)) if !serves(&table, &key, endpoint) => {
                    if let Some(old) = lock(&flows).take(&client) {
                        old.stop.notify_one();
                    }
                    None
                }
                other => other.map(|(u, _, _)| u),
            };
            drop(table);
            let upstream = match known {
                Some(u) => u,
                None => match self.open(&key, client, &socket, &flows, start).await {
                    Some(u) => u,
                    None => continue,
                },
            };
            // A send error (the endpoint's ICMP port unreachable) loses this datagram, as UDP may.
            let _ = upstream.send(&buf[..n]).await;
        }
        for u in lock(&flows).drain() {
            u.stop.notify_one();
        }
    }

    /// Starts the flow of `client`: route, backend, endpoint, upstream socket, reply task.
    async fn open(
        &self,
        key: &ListenerKey,
        client: SocketAddr,
        socket: &Arc<UdpSocket>,
        flows: &Arc<Mutex<FlowTable<Upstream>>>,
        start: Instant,
    ) -> Option<Arc<UdpSocket>> {
        let route = {
            let table = self.table.load();
            table.gateway(key).and_then(|p| p.listeners().first()).and_then(|l| l.l4.route(None)).cloned()
        };
        let Some(route) = route else {
            self.count(&Arc::from("none"), "no_route");
            return None;
        };
        let backend = route.backend();
        let Some(pick) = backend.pick_async(&pick_input(backend, client.ip())).await else {
            self.count(&route.name, "no_upstream");
            return None;
        };
        let endpoint = pick.addr;
        let local: SocketAddr = if endpoint.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let upstream = match UdpSocket::bind(local).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%endpoint, error = %e, "cannot open a UDP socket for a flow");
                self.count(&route.name, "no_upstream");
                return None;
            }
        };
        if let Err(e) = upstream.connect(endpoint).await {
            tracing::debug!(%endpoint, error = %e, "UDP connect failed");
            pick.failure();
            self.count(&route.name, "no_upstream");
            return None;
        }
        let upstream = Arc::new(upstream);
        let stop = Arc::new(Notify::new());
        let now = start.elapsed().as_millis() as u64;
        let checked = std::sync::atomic::AtomicUsize::new(Arc::as_ptr(&*self.table.load()) as usize);
        let entry = Upstream { socket: upstream.clone(), stop: stop.clone(), endpoint, checked };
        let (flow, evicted) = lock(flows).insert(client, entry, now);
        if let Some((who, old)) = evicted {
            tracing::debug!(gateway = %key.gateway, port = key.port, client = %who, "UDP flow table full; evicted the flow idle the longest");
            old.stop.notify_one();
            self.count(&route.name, "evicted");
        }
        self.count(&route.name, "created");
        self.metrics.udp_flows_active.inc();
        let task = FlowTask {
            client,
            socket: socket.clone(),
            upstream: upstream.clone(),
            flows: flows.clone(),
            flow,
            stop,
            idle: self.config.idle_timeout,
            start,
            route: route.name.clone(),
            metrics: self.metrics.clone(),
            _pick: pick,
        };
        tokio::spawn(task.run());
        Some(upstream)
    }

    fn count(&self, route: &Arc<str>, outcome: &'static str) {
        self.metrics.udp_flows.get_or_create(&L4Labels { route: route.clone(), outcome }).inc();
    }
}

/// Whether `endpoint` is one of the endpoints of the route of UDP port `key` in `table`.
fn serves(table: &crate::RouteTable, key: &ListenerKey, endpoint: SocketAddr) -> bool {
    let route = table.gateway(key).and_then(|p| p.listeners().first()).and_then(|l| l.l4.route(None));
    route.is_some_and(|r| {
        r.backends().any(|(_, b)| {
            matches!(*b.state(), crate::backend::BackendState::External { .. }) || b.has_endpoint(endpoint)
        })
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Relays one flow's replies to its client until the flow idles out or is ended.
struct FlowTask {
    client: SocketAddr,
    socket: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    flows: Arc<Mutex<FlowTable<Upstream>>>,
    flow: FlowRef,
    stop: Arc<Notify>,
    idle: Duration,
    start: Instant,
    route: Arc<str>,
    metrics: Arc<Metrics>,
    /// Counts the flow as in flight on its endpoint (least-request balancing sees it).
    _pick: crate::balance::Pick,
}

impl FlowTask {
    async fn run(self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let idle_ms = self.idle.as_millis() as u64;
        loop {
            let deadline = self.start + Duration::from_millis(self.flow.last()) + self.idle;
            tokio::select! {
                _ = self.stop.notified() => break,
                r = self.upstream.recv(&mut buf) => {
                    // An error is the endpoint's ICMP port unreachable: keep waiting, it may come up.
                    if let Ok(n) = r {
                        self.flow.touch(self.start.elapsed().as_millis() as u64);
                        let _ = self.socket.send_to(&buf[..n], self.client).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = self.start.elapsed().as_millis() as u64;
                    if now.saturating_sub(self.flow.last()) >= idle_ms {
                        lock(&self.flows).remove(&self.client, self.flow.id);
                        self.metrics.udp_flows.get_or_create(&L4Labels { route: self.route.clone(), outcome: "expired" }).inc();
                        break;
                    }
                }
            }
        }
        self.metrics.udp_flows_active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_full_table_evicts_the_flow_idle_the_longest() {
        let mut t = FlowTable::new(3);
        t.insert(addr(1), "a", 0);
        t.insert(addr(2), "b", 10);
        t.insert(addr(3), "c", 20);
        // a is used again: b is now the one idle the longest.
        assert_eq!(t.get(&addr(1), 30), Some(&"a"));
        let (_, evicted) = t.insert(addr(4), "d", 40);
        assert_eq!(evicted, Some((addr(2), "b")));
        assert_eq!(t.len(), 3);
        assert!(t.get(&addr(2), 50).is_none());
        for (port, v) in [(1, "a"), (3, "c"), (4, "d")] {
            assert_eq!(t.get(&addr(port), 50), Some(&v), "{port} kept");
        }
        // Replacing a client's flow in a full table evicts nothing.
        let (_, evicted) = t.insert(addr(4), "d2", 60);
        assert!(evicted.is_none());
        assert_eq!(t.get(&addr(4), 60), Some(&"d2"));
    }

    #[test]
    fn ties_evict_the_older_flow_and_a_table_never_grows_past_its_bound() {
        let mut t = FlowTable::new(2);
        for port in 1..=100u16 {
            let (_, evicted) = t.insert(addr(port), port, 7);
            if port > 2 {
                assert_eq!(evicted, Some((addr(port - 2), port - 2)), "oldest first on equal idle time");
            }
            assert!(t.len() <= 2);
        }
        let mut zero = FlowTable::new(0);
        zero.insert(addr(1), 1, 0);
        assert_eq!(zero.len(), 1, "a bound of 0 still keeps one flow");
    }

    #[test]
    fn removal_only_ends_the_same_flow() {
        let mut t = FlowTable::new(8);
        let (first, _) = t.insert(addr(1), "first", 0);
        let (second, _) = t.insert(addr(1), "second", 5);
        assert_ne!(first.id, second.id);
        assert_eq!(t.remove(&addr(1), first.id), None, "an old flow's expiry leaves the new one");
        assert_eq!(t.remove(&addr(1), second.id), Some("second"));
        assert!(t.is_empty());
    }

    #[test]
    fn activity_is_shared_with_the_reply_side() {
        let mut t = FlowTable::new(2);
        let (a, _) = t.insert(addr(1), "a", 0);
        t.insert(addr(2), "b", 10);
        // Replies on flow a count as activity: b becomes the one idle the longest.
        a.touch(20);
        assert_eq!(a.last(), 20);
        let (_, evicted) = t.insert(addr(3), "c", 30);
        assert_eq!(evicted.map(|(k, _)| k), Some(addr(2)));
        let drained: Vec<_> = t.drain().collect();
        assert_eq!(drained.len(), 2);
        assert!(t.is_empty());
    }
}
