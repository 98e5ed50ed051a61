//! The state that outlives routing tables, owned by the gateway process and handed to each
//! build explicitly: rate-limit buckets, client affinity, and each endpoint's load and health,
//! plus the process-wide outlier detection settings they use.
//!
//! Tables are immutable and rebuilt on every change; a build asks the [`Runtime`] for the
//! object of each key and gets the one the live table holds, so clients keep their buckets,
//! their endpoints and an ejected endpoint stays ejected across swaps. Two runtimes share
//! nothing (each test, and `ferry check`, builds with its own).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::affinity::Affinity;
use crate::balance::{EndpointState, OutlierConfig};
use crate::limits::{Rate, RateLimiter};
use crate::shared::Registry;

#[derive(Debug, Default)]
pub struct Runtime {
    endpoints: Registry<SocketAddr, EndpointState>,
    /// (route name, rate bits, burst).
    limits: Registry<(Arc<str>, u64, u32), RateLimiter>,
    affinity: Registry<(Arc<str>, Duration), Affinity>,
    outlier: OutlierConfig,
}

impl Runtime {
    /// A runtime whose endpoints eject by `outlier` (`--outlier-*`).
    pub fn new(outlier: OutlierConfig) -> Self {
        Runtime { outlier, ..Runtime::default() }
    }

    /// The load and health of endpoint `addr`, shared by every table that has it.
    pub fn endpoint(&self, addr: SocketAddr) -> Arc<EndpointState> {
        self.endpoints.get_or_make(addr, || EndpointState::new(self.outlier))
    }

    /// The rate limiter of route `name` with `rate`, shared with the live table's.
    pub fn rate_limiter(&self, name: &Arc<str>, rate: Rate) -> Arc<RateLimiter> {
        let key = (name.clone(), rate.per_second.to_bits(), rate.burst);
        self.limits.get_or_make(key, || RateLimiter::new(rate))
    }

    /// The client affinity of backend `name` with `timeout`, shared with the live table's.
    pub fn affinity(&self, name: &Arc<str>, timeout: Duration) -> Arc<Affinity> {
        self.affinity.get_or_make((name.clone(), timeout), || Affinity::new(timeout))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn one_runtime_shares_state_across_builds_and_two_share_nothing() {
        let (a, b) = (Runtime::default(), Runtime::default());
        let ep: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let held = a.endpoint(ep);
        assert!(Arc::ptr_eq(&held, &a.endpoint(ep)), "the live state is handed out again");
        assert!(!Arc::ptr_eq(&held, &b.endpoint(ep)), "another runtime has its own");
        let name: Arc<str> = Arc::from("ns/route");
        let rate = Rate { per_second: 2.0, burst: 3 };
        let limiter = a.rate_limiter(&name, rate);
        assert!(Arc::ptr_eq(&limiter, &a.rate_limiter(&name, rate)));
        assert!(!Arc::ptr_eq(&limiter, &a.rate_limiter(&name, Rate { per_second: 3.0, burst: 3 })));
        assert!(!Arc::ptr_eq(&limiter, &b.rate_limiter(&name, rate)));
        let affinity = a.affinity(&name, Duration::from_secs(5));
        assert!(Arc::ptr_eq(&affinity, &a.affinity(&name, Duration::from_secs(5))));
        assert!(!Arc::ptr_eq(&affinity, &b.affinity(&name, Duration::from_secs(5))));
    }

    #[test]
    fn affinity_is_shared_across_builds_while_a_table_holds_it() {
        let rt = Runtime::default();
        let name: Arc<str> = Arc::from("t/shared");
        let first = rt.affinity(&name, Duration::from_secs(5));
        first.set([192, 0, 2, 7].into(), "10.0.0.1:80".parse().unwrap(), Instant::now());
        let second = rt.affinity(&name, Duration::from_secs(5));
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(second.len(), 1);
        let other_timeout = rt.affinity(&name, Duration::from_secs(6));
        assert!(!Arc::ptr_eq(&first, &other_timeout), "a changed timeout starts afresh");
        drop((first, second));
        assert!(rt.affinity(&name, Duration::from_secs(5)).is_empty(), "dropped with the last table");
    }

    #[test]
    fn endpoints_eject_by_the_runtimes_settings() {
        let rt = Runtime::new(OutlierConfig { consecutive_failures: 1, base_ejection: Duration::from_secs(10) });
        let state = rt.endpoint("10.0.0.1:80".parse().unwrap());
        assert_eq!(state.outlier().consecutive_failures, 1);
        assert_eq!(Runtime::default().endpoint("10.0.0.1:80".parse().unwrap()).outlier().consecutive_failures, 5);
    }
}
