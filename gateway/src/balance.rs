//! Endpoint selection: load-balancing policies, per-endpoint load and latency, passive outlier
//! detection.
//!
//! Policies (per Service, annotation `ferry.dev/load-balancer`):
//! - `round-robin` (default) and `random`;
//! - `least-request`: the less loaded of two random endpoints (power of two choices);
//! - `ewma`: the lower of two random endpoints by peak-EWMA latency × (in-flight + 1);
//! - `source-hash`, `header-hash:<name>`, `cookie:<name>`: rendezvous hashing of the key, so the
//!   same key keeps its endpoint and removing one of N endpoints moves only the keys it had
//!   (about 1/N). Without a key (header or cookie absent), round-robin.
//!
//! Per-endpoint state (requests in flight, latency, failures) belongs to the pod address, not to
//! a table: like client affinity it lives in a registry outside the immutable table, so a table
//! swap neither resets a busy endpoint's load nor forgives an ejected one.
//!
//! Outlier detection: after `consecutive_failures` failures in a row (connect errors, 5xx, broken
//! responses) an endpoint is ejected for `base_ejection` × 2^(ejections so far), at most 5 minutes,
//! then returns. Ejected endpoints are skipped only while another endpoint can take the request:
//! ejection never leaves a backend without endpoints.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use std::time::{Duration, Instant};

/// How a backend chooses among its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Policy {
    #[default]
    RoundRobin,
    Random,
    LeastRequest,
    Ewma,
    SourceHash,
    /// Lower-case header name.
    HeaderHash(http::HeaderName),
    Cookie(Box<str>),
}

impl Policy {
    /// Parses an annotation value.
    pub fn parse(s: &str) -> Result<Policy, String> {
        let s = s.trim();
        Ok(match s {
            "round-robin" => Policy::RoundRobin,
            "random" => Policy::Random,
            "least-request" => Policy::LeastRequest,
            "ewma" => Policy::Ewma,
            "source-hash" => Policy::SourceHash,
            _ => {
                if let Some(name) = s.strip_prefix("header-hash:") {
                    let header = http::HeaderName::from_bytes(name.trim().as_bytes())
                        .map_err(|_| format!("{name:?} is not a header name"))?;
                    Policy::HeaderHash(header)
                } else if let Some(name) = s.strip_prefix("cookie:") {
                    let name = name.trim();
                    if name.is_empty()
                        || !name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
                    {
                        return Err(format!("{name:?} is not a cookie name"));
                    }
                    Policy::Cookie(name.into())
                } else {
                    return Err(format!(
                        "unknown load-balancing policy {s:?} (round-robin, random, least-request, ewma, \
                         source-hash, header-hash:NAME, cookie:NAME)"
                    ));
                }
            }
        })
    }

    pub fn name(&self) -> String {
        match self {
            Policy::RoundRobin => "round-robin".into(),
            Policy::Random => "random".into(),
            Policy::LeastRequest => "least-request".into(),
            Policy::Ewma => "ewma".into(),
            Policy::SourceHash => "source-hash".into(),
            Policy::HeaderHash(h) => format!("header-hash:{h}"),
            Policy::Cookie(c) => format!("cookie:{c}"),
        }
    }

    pub fn is_hash(&self) -> bool {
        matches!(self, Policy::SourceHash | Policy::HeaderHash(_) | Policy::Cookie(_))
    }
}

/// Outlier detection settings (`--outlier-*` flags), held by the [`crate::Runtime`] and copied
/// into each endpoint's state.
#[derive(Debug, Clone, Copy)]
pub struct OutlierConfig {
    /// Failures in a row that eject an endpoint; 0 turns ejection off.
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig { consecutive_failures: 5, base_ejection: Duration::from_secs(10) }
    }
}

const MAX_EJECTION: Duration = Duration::from_secs(300);
/// Time constant of the latency average: older samples weigh e^(-age/τ).
const EWMA_TAU: Duration = Duration::from_secs(10);

/// Milliseconds since the process's first use of this module: the clock of the atomics below.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Load, latency and health of one endpoint (pod address).
#[derive(Debug, Default)]
pub struct EndpointState {
    in_flight: AtomicU32,
    /// Peak-EWMA latency in microseconds and when it was last updated (ms clock).
    ewma_us: AtomicU64,
    ewma_at: AtomicU64,
    failures: AtomicU32,
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    outlier: OutlierConfig,
}

impl EndpointState {
    /// A fresh state ejecting by `outlier`; builds take the live one from
    /// [`crate::Runtime::endpoint`].
    pub fn new(outlier: OutlierConfig) -> Self {
        EndpointState { outlier, ..EndpointState::default() }
    }

    pub fn outlier(&self) -> OutlierConfig {
        self.outlier
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_ejected_now(&self) -> bool {
        self.is_ejected(now_ms())
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Latency cost for `ewma`, decayed towards zero while no samples arrive.
    fn cost(&self, now: u64) -> f64 {
        let ewma = self.ewma_us.load(Ordering::Relaxed) as f64;
        let age = now.saturating_sub(self.ewma_at.load(Ordering::Relaxed)) as f64;
        let decayed = ewma * (-age / EWMA_TAU.as_millis() as f64).exp();
        (decayed + 1.0) * f64::from(self.in_flight() + 1)
    }

    fn observe_latency(&self, latency: Duration, now: u64) {
        let sample = latency.as_micros().min(u128::from(u64::MAX)) as f64;
        let old = self.ewma_us.load(Ordering::Relaxed) as f64;
        let age = now.saturating_sub(self.ewma_at.load(Ordering::Relaxed)) as f64;
        // Peak: a slower sample is taken at once; faster ones are averaged in.
        let new = if sample > old {
            sample
        } else {
            let w = (-age / EWMA_TAU.as_millis() as f64).exp();
            old * w + sample * (1.0 - w)
        };
        self.ewma_us.store(new as u64, Ordering::Relaxed);
        self.ewma_at.store(now, Ordering::Relaxed);
    }

    fn success(&self, now: u64) {
        self.failures.store(0, Ordering::Relaxed);
        let until = self.ejected_until.load(Ordering::Relaxed);
        if self.ejections.load(Ordering::Relaxed) > 0 && now > until + MAX_EJECTION.as_millis() as u64 {
            // Healthy for a while after its last ejection: the next one starts short again.
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    fn failure(&self, now: u64) {
        let config = self.outlier;
        if config.consecutive_failures == 0 || self.is_ejected(now) {
            return;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= config.consecutive_failures {
            self.failures.store(0, Ordering::Relaxed);
            let n = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
            let period = config.base_ejection.saturating_mul(1 << n).min(MAX_EJECTION);
            self.ejected_until.store(now + period.as_millis() as u64, Ordering::Relaxed);
            tracing::warn!(
                ejected_for_ms = period.as_millis() as u64,
                "endpoint ejected after {failures} failures in a row"
            );
        }
    }
}

/// An endpoint chosen for one request or stream. Counts as in flight until dropped; report the
/// outcome with `success` / `failure`.
#[derive(Debug)]
pub struct Pick {
    pub addr: SocketAddr,
    state: Arc<EndpointState>,
}

impl Pick {
    pub(crate) fn new(addr: SocketAddr, state: Arc<EndpointState>) -> Pick {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Pick { addr, state }
    }

    /// The endpoint answered (a non-5xx response head) after `latency`.
    pub fn success(&self, latency: Duration) {
        let now = now_ms();
        self.state.observe_latency(latency, now);
        self.state.success(now);
    }

    /// Connect error, 5xx, or a broken response.
    pub fn failure(&self) {
        self.state.failure(now_ms());
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a pick may use besides the backend's own state.
#[derive(Debug, Clone, Copy, Default)]
pub struct PickInput {
    pub client: Option<IpAddr>,
    /// Hash of the request's key for hash policies (see [`hash_bytes`]).
    pub key: Option<u64>,
    /// An endpoint that already failed for this request.
    pub avoid: Option<SocketAddr>,
    /// The endpoint named by the request's affinity cookie (its [`endpoint_token`]).
    pub prefer: Option<u64>,
}

/// The opaque, stable name of an endpoint in affinity cookies (the same in every replica).
pub fn endpoint_token(addr: &SocketAddr) -> u64 {
    hash_addr(addr)
}

/// Chooses an endpoint index among `endpoints` (with their `states`) by `policy`.
/// `rr` is the backend's round-robin counter.
pub(crate) fn choose(
    policy: &Policy,
    endpoints: &[SocketAddr],
    states: &[Arc<EndpointState>],
    rr: &AtomicU64,
    input: &PickInput,
) -> Option<usize> {
    let n = endpoints.len();
    if n == 0 {
        return None;
    }
    let now = now_ms();
    // Strictest first: not the failed endpoint and not ejected; then allow ejected; then anything.
    let tiers: [&dyn Fn(usize) -> bool; 3] = [
        &|i| Some(endpoints[i]) != input.avoid && !states[i].is_ejected(now),
        &|i| Some(endpoints[i]) != input.avoid,
        &|_| true,
    ];
    for usable in tiers {
        let found = match policy {
            _ if policy.is_hash() && input.key.is_some() => {
                rendezvous(endpoints, input.key.unwrap_or_default(), usable)
            }
            Policy::Random => probe(n, fastrand::usize(..n), usable),
            Policy::LeastRequest | Policy::Ewma => {
                // Two distinct candidates (where two are usable): the second search starts at
                // another index than the first choice.
                let a = probe(n, fastrand::usize(..n), usable);
                let b = match a {
                    Some(a) if n > 1 => probe(n, a + 1 + fastrand::usize(..n - 1), usable),
                    _ => None,
                };
                match (a, b) {
                    (Some(a), Some(b)) if a != b => {
                        let cost = |i: usize| match policy {
                            Policy::Ewma => states[i].cost(now),
                            _ => f64::from(states[i].in_flight()),
                        };
                        Some(if cost(b) < cost(a) { b } else { a })
                    }
                    (a, _) => a,
                }
            }
            _ => probe(n, rr.fetch_add(1, Ordering::Relaxed) as usize % n, usable),
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The first usable index from `start`, wrapping around.
fn probe(n: usize, start: usize, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
    (0..n).map(|i| (start + i) % n).find(|&i| usable(i))
}

/// Highest-random-weight: each (key, endpoint) pair gets a score; the best usable endpoint wins.
/// Removing an endpoint moves only the keys it won.
fn rendezvous(endpoints: &[SocketAddr], key: u64, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for (i, ep) in endpoints.iter().enumerate() {
        if !usable(i) {
            continue;
        }
        let score = mix(key ^ hash_addr(ep));
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, i));
        }
    }
    best.map(|(_, i)| i)
}

/// The key of a client address for `source-hash`.
pub fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => hash_bytes(&v4.octets()),
        IpAddr::V6(v6) => hash_bytes(&v6.octets()),
    }
}

fn hash_addr(addr: &SocketAddr) -> u64 {
    mix(hash_ip(addr.ip()) ^ u64::from(addr.port()).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// FNV-1a over `bytes`, finished with a 64-bit mixer: stable across processes and versions, so
/// every replica maps a key to the same endpoint.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Retries of 5xx answers a backend may still make: each request earns a fifth of a retry (at
/// most ten banked, ten to start with), each retry spends one. Keeps retries under ~20% of
/// traffic when a backend is failing as a whole, where retrying would only add load.
#[derive(Debug)]
pub struct RetryBudget(AtomicU64);

const MILLI: u64 = 1000;
const BANKED: u64 = 10;

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget(AtomicU64::new(BANKED * MILLI))
    }
}

impl RetryBudget {
    pub fn deposit(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| (b < BANKED * MILLI).then_some(b + MILLI / 5));
    }

    pub fn withdraw(&self) -> bool {
        self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(MILLI)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: u8) -> (Vec<SocketAddr>, Vec<Arc<EndpointState>>) {
        let eps: Vec<SocketAddr> = (1..=n).map(|i| SocketAddr::from(([10, 9, 0, i], 8080))).collect();
        let states = eps.iter().map(|_| Arc::new(EndpointState::default())).collect();
        (eps, states)
    }

    fn counts(policy: &Policy, n: u8, picks: usize, key: impl Fn(usize) -> Option<u64>) -> Vec<usize> {
        let (eps, states) = eps(n);
        let rr = AtomicU64::new(0);
        let mut out = vec![0; n as usize];
        for k in 0..picks {
            let i = choose(policy, &eps, &states, &rr, &PickInput { key: key(k), ..PickInput::default() }).unwrap();
            out[i] += 1;
        }
        out
    }

    /// Every endpoint within ±`tolerance` of an even share.
    fn assert_even(counts: &[usize], tolerance: f64) {
        let total: usize = counts.iter().sum();
        let share = total as f64 / counts.len() as f64;
        for c in counts {
            assert!((*c as f64 - share).abs() <= share * tolerance, "uneven: {counts:?}");
        }
    }

    #[test]
    fn policies_spread_evenly() {
        assert_eq!(counts(&Policy::RoundRobin, 4, 400, |_| None), [100; 4]);
        assert_even(&counts(&Policy::Random, 4, 20_000, |_| None), 0.1);
        assert_even(&counts(&Policy::LeastRequest, 4, 20_000, |_| None), 0.1);
        assert_even(&counts(&Policy::Ewma, 4, 20_000, |_| None), 0.1);
        assert_even(&counts(&Policy::SourceHash, 5, 50_000, |k| Some(hash_bytes(&k.to_le_bytes()))), 0.1);
    }

    #[test]
    fn least_request_prefers_idle_endpoints() {
        let (eps, states) = eps(3);
        let busy: Vec<Pick> = (0..50).map(|_| Pick::new(eps[0], states[0].clone())).collect();
        let rr = AtomicU64::new(0);
        let mut to_busy = 0;
        for _ in 0..3000 {
            let i = choose(&Policy::LeastRequest, &eps, &states, &rr, &PickInput::default()).unwrap();
            to_busy += usize::from(i == 0);
        }
        // P2C never picks the busiest of three unless both choices are it (prevented: distinct).
        assert!(to_busy < 30, "{to_busy} of 3000 went to the loaded endpoint");
        drop(busy);
        assert_eq!(states[0].in_flight(), 0);
    }

    #[test]
    fn ewma_prefers_fast_endpoints() {
        let (eps, states) = eps(2);
        let now = now_ms();
        states[0].observe_latency(Duration::from_millis(200), now);
        states[1].observe_latency(Duration::from_millis(2), now);
        let rr = AtomicU64::new(0);
        let fast =
            (0..1000).filter(|_| choose(&Policy::Ewma, &eps, &states, &rr, &PickInput::default()) == Some(1)).count();
        assert_eq!(fast, 1000);
    }

    #[test]
    fn rendezvous_moves_only_the_removed_endpoints_keys() {
        let (eps, _) = eps(10);
        let keys: Vec<u64> = (0..20_000u32).map(|k| hash_bytes(&k.to_le_bytes())).collect();
        let all = |_| true;
        let before: Vec<SocketAddr> = keys.iter().map(|k| eps[rendezvous(&eps, *k, &all).unwrap()]).collect();
        let removed = eps[3];
        let fewer: Vec<SocketAddr> = eps.iter().copied().filter(|e| *e != removed).collect();
        let after: Vec<SocketAddr> = keys.iter().map(|k| fewer[rendezvous(&fewer, *k, &all).unwrap()]).collect();
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let had = before.iter().filter(|b| **b == removed).count();
        assert_eq!(moved, had, "only keys of the removed endpoint move");
        let fraction = moved as f64 / keys.len() as f64;
        assert!((fraction - 0.1).abs() < 0.02, "about 1/N moved: {fraction}");
    }

    #[test]
    fn ejection_skips_an_endpoint_but_never_all() {
        let (eps, states) = eps(2);
        let rr = AtomicU64::new(0);
        let now = now_ms();
        for _ in 0..5 {
            states[0].failure(now);
        }
        assert!(states[0].is_ejected(now));
        for _ in 0..10 {
            assert_eq!(choose(&Policy::RoundRobin, &eps, &states, &rr, &PickInput::default()), Some(1));
        }
        for _ in 0..5 {
            states[1].failure(now);
        }
        // Both ejected: still served.
        assert!(choose(&Policy::RoundRobin, &eps, &states, &rr, &PickInput::default()).is_some());
        // The failed endpoint is avoided if another exists, ejected or not.
        let input = PickInput { avoid: Some(eps[1]), ..PickInput::default() };
        assert_eq!(choose(&Policy::RoundRobin, &eps, &states, &rr, &input), Some(0));
    }

    #[test]
    fn ejection_period_grows_and_ends() {
        let s = EndpointState::default();
        let t = 1_000_000;
        for _ in 0..5 {
            s.failure(t);
        }
        let first = s.ejected_until.load(Ordering::Relaxed) - t;
        assert_eq!(first, 10_000);
        assert!(!s.is_ejected(t + first));
        for _ in 0..5 {
            s.failure(t + first);
        }
        assert_eq!(s.ejected_until.load(Ordering::Relaxed) - (t + first), 20_000, "doubles");
    }

    #[test]
    fn parses_policies() {
        assert_eq!(Policy::parse("ewma"), Ok(Policy::Ewma));
        assert_eq!(
            Policy::parse("header-hash:X-User"),
            Ok(Policy::HeaderHash(http::HeaderName::from_static("x-user")))
        );
        assert_eq!(Policy::parse("cookie:session"), Ok(Policy::Cookie("session".into())));
        assert!(Policy::parse("cookie:a b").is_err());
        assert!(Policy::parse("fastest").unwrap_err().contains("unknown"));
    }

    #[test]
    fn retry_budget_is_a_fifth_of_requests() {
        let b = RetryBudget::default();
        assert!((0..10).all(|_| b.withdraw()));
        assert!(!b.withdraw());
        for _ in 0..10 {
            b.deposit();
        }
        assert!(b.withdraw() && b.withdraw() && !b.withdraw());
    }
}
