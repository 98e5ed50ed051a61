//! `sessionAffinity: ClientIP`: the same client IP keeps the same endpoint until it has been
//! idle for the Service's timeout or the endpoint goes away, as kube-proxy does.
//!
//! Tables are immutable and swapped on every change, but a client's endpoint must survive those
//! swaps (losing affinity on reload is what this project exists to avoid). So the affinity state
//! of a backend lives outside the table: `Affinity::shared` hands every build the same
//! `Affinity` for the same backend name and timeout, for as long as some table still uses it.
//!
//! Memory is bounded: at most `MAX_CLIENTS` entries per backend. When full, expired entries are
//! dropped; if it is still full, a new client is served without being remembered.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use std::time::{Duration, Instant};

/// Entries kept per backend (a few MB at most: an entry is ~64 bytes).
pub const MAX_CLIENTS: usize = 65_536;

#[derive(Debug)]
pub struct Affinity {
    timeout: Duration,
    clients: Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>,
}

impl Affinity {
    /// Fresh affinity state; builds take the live one from [`crate::Runtime::affinity`], so
    /// clients keep their endpoints across table swaps.
    pub fn new(timeout: Duration) -> Self {
        Affinity { timeout, clients: Mutex::new(HashMap::new()) }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The endpoint `client` is bound to, if the binding is live and the endpoint is still one
    /// of `endpoints` (and not `avoid`); refreshes the binding's idle timer.
    pub fn get(
        &self,
        client: IpAddr,
        endpoints: &[SocketAddr],
        avoid: Option<SocketAddr>,
        now: Instant,
    ) -> Option<SocketAddr> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let (ep, seen) = clients.get_mut(&client)?;
        if now.duration_since(*seen) > self.timeout || Some(*ep) == avoid || endpoints.binary_search(ep).is_err() {
            return None;
        }
        *seen = now;
        Some(*ep)
    }

    /// Binds `client` to `endpoint`.
    pub fn set(&self, client: IpAddr, endpoint: SocketAddr, now: Instant) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&client) {
            clients.retain(|_, (_, seen)| now.duration_since(*seen) <= self.timeout);
            if clients.len() >= MAX_CLIENTS {
                return;
            }
        }
        clients.insert(client, (endpoint, now));
    }

    pub fn len(&self) -> usize {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 80))
    }

    #[test]
    fn binding_holds_until_idle_timeout_or_endpoint_removal() {
        let a = Affinity::new(Duration::from_secs(10));
        let client: IpAddr = [192, 0, 2, 1].into();
        let t0 = Instant::now();
        let eps = [ep(1), ep(2)];
        assert_eq!(a.get(client, &eps, None, t0), None);
        a.set(client, ep(2), t0);
        assert_eq!(a.get(client, &eps, None, t0 + Duration::from_secs(9)), Some(ep(2)));
        // The get above refreshed the idle timer.
        assert_eq!(a.get(client, &eps, None, t0 + Duration::from_secs(18)), Some(ep(2)));
        assert_eq!(a.get(client, &eps, None, t0 + Duration::from_secs(29)), None, "idle past the timeout");
        assert_eq!(a.get(client, &[ep(1)], None, t0 + Duration::from_secs(18)), None, "endpoint gone");
        assert_eq!(a.get(client, &eps, Some(ep(2)), t0 + Duration::from_secs(18)), None, "endpoint just failed");
    }

    #[test]
    fn memory_is_bounded() {
        let a = Affinity::new(Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 100) {
            a.set(IpAddr::from(i.to_be_bytes()), ep(1), now);
        }
        assert_eq!(a.len(), MAX_CLIENTS);
        // Once entries expire, new clients are remembered again.
        let later = now + Duration::from_secs(61);
        a.set([203, 0, 113, 1].into(), ep(1), later);
        assert_eq!(a.len(), 1);
    }
}
