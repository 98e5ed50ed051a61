//! Per-route protection: source address allow-lists and per-client request rate limits.
//!
//! A rate limit is a token bucket per client IP: `burst` requests at once, refilled at `rate`
//! per second. Like affinity, the buckets live outside the table (shared by every build with
//! the same route and limit), so a config change does not hand every client a fresh burst.
//! Memory is bounded: at most `MAX_CLIENTS` buckets per route; when full, buckets that have
//! refilled completely (idle clients) are dropped; if none has, a new client is let through
//! unmetered rather than refused (the limit protects backends from heavy clients, not from many).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

/// Buckets kept per route.
pub const MAX_CLIENTS: usize = 65_536;

/// `rate` requests per second, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug)]
pub struct RateLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// Empty buckets; builds take the live limiter from [`crate::Runtime::rate_limiter`], so
    /// clients keep their buckets across table swaps.
    pub fn new(rate: Rate) -> Self {
        RateLimiter { rate, buckets: Mutex::new(HashMap::new()) }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes a token for `client`; `Err(wait)` says how long until one is available.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.rate.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            let rate = self.rate.per_second;
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_CLIENTS {
                return Ok(());
            }
        }
        let (tokens, at) = buckets.entry(client).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate.per_second).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate.per_second))
        }
    }
}

/// Whether `ip` is in one of `nets` (IPv4-mapped IPv6 addresses count as IPv4).
pub fn allowed(nets: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    nets.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_burst_then_rate() {
        let l = RateLimiter::new(Rate { per_second: 2.0, burst: 3 });
        let ip: IpAddr = [192, 0, 2, 1].into();
        let t0 = Instant::now();
        assert!((0..3).all(|_| l.check(ip, t0).is_ok()));
        let wait = l.check(ip, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(l.check(ip, t0 + Duration::from_millis(500)).is_ok(), "one token after 1/rate");
        assert!(l.check([192, 0, 2, 2].into(), t0).is_ok(), "per client");
    }

    #[test]
    fn allow_lists_match_mapped_addresses() {
        let nets: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
        assert!(allowed(&nets, "10.1.2.3".parse().unwrap()));
        assert!(allowed(&nets, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(allowed(&nets, "2001:db8::1".parse().unwrap()));
        assert!(!allowed(&nets, "11.0.0.1".parse().unwrap()));
    }
}

/// Concurrent connections of one listener: at most `max_total`, and at most `max_per_ip` from
/// one client address (0 = no per-client limit). A connection over a limit is closed at once.
#[derive(Debug)]
pub struct ConnLimiter {
    max_total: usize,
    max_per_ip: usize,
    total: std::sync::atomic::AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Listener,
    Client,
}

/// One admitted connection; released when dropped.
#[derive(Debug)]
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    ip: Option<IpAddr>,
}

impl ConnLimiter {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter { max_total, max_per_ip, total: Default::default(), per_ip: Mutex::new(HashMap::new()) })
    }

    /// Admits a connection from `ip`; the per-client limit is checked first (the more specific
    /// reason).
    pub fn acquire(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnPermit, Refused> {
        use std::sync::atomic::Ordering;
        let ip = ip.filter(|_| self.max_per_ip > 0);
        if let Some(ip) = ip {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                return Err(Refused::Client);
            }
            *n += 1;
        }
        let permit = ConnPermit { limiter: self.clone(), ip };
        if self.total.fetch_add(1, Ordering::SeqCst) >= self.max_total {
            // Dropping the permit gives back both counts.
            drop(permit);
            return Err(Refused::Listener);
        }
        Ok(permit)
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.limiter.total.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(ip) = self.ip {
            let mut per_ip = self.limiter.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod conn_tests {
    use super::*;

    #[test]
    fn connection_limits_per_listener_and_client() {
        let l = ConnLimiter::new(3, 2);
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        let p1 = l.acquire(Some(a)).unwrap();
        let _p2 = l.acquire(Some(a)).unwrap();
        assert_eq!(l.acquire(Some(a)).unwrap_err(), Refused::Client);
        let _p3 = l.acquire(Some(b)).unwrap();
        assert_eq!(l.acquire(Some(b)).unwrap_err(), Refused::Listener);
        drop(p1);
        assert!(l.acquire(Some(b)).is_ok(), "released");
    }
}
