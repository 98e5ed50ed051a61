//! Backends: a Service port resolved to the pod endpoints that serve it, and how ferry picks
//! one of them for a request or stream.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::affinity::Affinity;
use crate::balance::{self, EndpointState, Pick, PickInput, Policy, RetryBudget};
use crate::runtime::Runtime;

/// A Service port resolved to the pod endpoints that serve it.
///
/// Everything a backend holds is fixed when it is built, except its endpoints: when only a
/// Service's EndpointSlices change, the controller gives the Service's backends their new
/// endpoints in place ([`Backend::set_endpoints`]) instead of compiling the routes that use them
/// again. So the routes of a table are immutable, and a backend they share is the one part that
/// moves, as pods come and go, in every table that has it.
#[derive(Debug)]
pub struct Backend {
    /// `namespace/service:port`, for logs, metrics and error bodies.
    pub name: Arc<str>,
    /// The state and the endpoints' load and health, replaced as one.
    live: ArcSwap<Live>,
    /// Whether `live` has endpoints (or is an ExternalName), set after it: a request checks it
    /// with one plain load rather than a guarded one.
    serving: AtomicBool,
    pub policy: Policy,
    rr: AtomicU64,
    /// `sessionAffinity: ClientIP`, shared with the tables before and after this one.
    pub affinity: Option<Arc<Affinity>>,
    /// Retries of 5xx answers this backend may still make.
    pub retry_budget: RetryBudget,
    /// Upstream protocol from the Service port's `appProtocol`.
    pub protocol: UpstreamProtocol,
    /// Name sent as SNI to TLS upstreams (the Service's cluster DNS name).
    server_name: Box<str>,
    /// A BackendTLSPolicy's verified TLS to the pods (it replaces `UpstreamProtocol::Tls`).
    pub tls: Option<Arc<crate::backend_tls::BackendTls>>,
    /// Where the state that outlives tables comes from (an ExternalName's endpoints are only
    /// known per request); `None` for a backend without endpoints ([`Backend::unserved`]).
    runtime: Option<Arc<Runtime>>,
}

/// How ferry speaks to a backend's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (WebSocket upgrades included).
    #[default]
    Http1,
    /// HTTP/2 without TLS (`kubernetes.io/h2c`, e.g. gRPC).
    H2c,
    /// TLS to the pod (`https`, `kubernetes.io/https`, `kubernetes.io/wss`); the pod's
    /// certificate is not verified (pods rarely have publicly verifiable names).
    Tls,
}

/// What an endpoint change replaces.
#[derive(Debug)]
struct Live {
    state: BackendState,
    /// Load, latency and health per endpoint (same order as the endpoints), shared with every
    /// backend that has the endpoint.
    stats: Vec<Arc<EndpointState>>,
}

/// A backend's state as it is now ([`Backend::state`]); hold it briefly.
pub struct StateGuard(arc_swap::Guard<Arc<Live>>);

impl std::ops::Deref for StateGuard {
    type Target = BackendState;

    fn deref(&self) -> &BackendState {
        &self.0.state
    }
}

/// Whether a backend can take traffic, and if not, why (the 503 body says it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum BackendState {
    /// Pod addresses to send traffic to, sorted, without duplicates. Never empty.
    Endpoints(Vec<SocketAddr>),
    /// The Service exists but has no ready (or serving) endpoint for this port.
    NoEndpoints,
    /// The backend could not be resolved (missing Service or port); the text says which.
    Unresolved(String),
    /// A Gateway API backendRef that is invalid (unknown kind, not permitted, not found): its
    /// share of requests is answered 500, as the Gateway API says.
    Invalid(String),
    /// An ExternalName Service: a DNS name resolved when a request needs it.
    External { host: String, port: u16 },
}

impl Backend {
    /// A backend whose endpoints' load and health (and affinity, if turned on) are `runtime`'s.
    pub fn new(name: impl Into<Arc<str>>, state: BackendState, runtime: &Arc<Runtime>) -> Self {
        Backend::with_runtime(name.into(), state, Some(runtime.clone()))
    }

    /// A backend without endpoints to keep state for: invalid, unresolved, or the placeholder of
    /// a route that only redirects.
    pub fn unserved(name: impl Into<Arc<str>>, state: BackendState) -> Self {
        debug_assert!(!matches!(state, BackendState::Endpoints(_) | BackendState::External { .. }), "{state:?}");
        Backend::with_runtime(name.into(), state, None)
    }

    fn with_runtime(name: Arc<str>, state: BackendState, runtime: Option<Arc<Runtime>>) -> Self {
        let live = Live::new(state, runtime.as_ref());
        Backend {
            name,
            serving: AtomicBool::new(live.serving()),
            live: ArcSwap::from_pointee(live),
            policy: Policy::RoundRobin,
            rr: AtomicU64::new(0),
            affinity: None,
            retry_budget: RetryBudget::default(),
            protocol: UpstreamProtocol::Http1,
            server_name: Box::from(""),
            tls: None,
            runtime,
        }
    }

    /// Whether it can take traffic, and if not, why.
    pub fn state(&self) -> StateGuard {
        StateGuard(self.live.load())
    }

    /// Gives a backend with endpoints (or none yet) the endpoints its Service has now (sorted,
    /// without duplicates), for every table that has it; whether they changed. An unresolved,
    /// invalid or ExternalName backend is left as it is: its state does not come from
    /// EndpointSlices.
    pub fn set_endpoints(&self, endpoints: Vec<SocketAddr>) -> bool {
        let live = self.live.load();
        if !matches!(live.state, BackendState::Endpoints(_) | BackendState::NoEndpoints)
            || live.endpoints() == endpoints
        {
            return false;
        }
        let live = Live::new(BackendState::Endpoints(endpoints), self.runtime.as_ref());
        let serving = live.serving();
        self.live.store(Arc::new(live));
        self.serving.store(serving, Ordering::Release);
        true
    }

    /// Whether the backend has endpoints to send a request to (or is an ExternalName, resolved
    /// when a request needs it). A request that finds it so and then no endpoint (they were
    /// just removed) is answered as if it had not.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Turns on client-IP affinity with the given idle timeout.
    pub fn with_affinity(mut self, timeout: Duration) -> Self {
        self.affinity = Some(match &self.runtime {
            Some(rt) => rt.affinity(&self.name, timeout),
            None => Arc::new(Affinity::new(timeout)),
        });
        self
    }

    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets how to speak to the pods; `server_name` is the SNI for TLS upstreams.
    pub fn with_protocol(mut self, protocol: UpstreamProtocol, server_name: &str) -> Self {
        self.protocol = protocol;
        self.server_name = server_name.into();
        self
    }

    /// Speaks TLS to the pods as a BackendTLSPolicy says (verified; see `backend_tls`).
    pub fn with_tls(mut self, tls: Arc<crate::backend_tls::BackendTls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The endpoint for a request or stream: the client's affinity binding when the backend has
    /// affinity and the binding is live (and its endpoint usable), else the policy's choice
    /// (which becomes the binding).
    pub fn pick(&self, input: &PickInput) -> Option<Pick> {
        self.pick_from(&self.live.load(), input)
    }

    fn pick_from(&self, live: &Live, input: &PickInput) -> Option<Pick> {
        let (eps, stats) = (live.endpoints(), live.stats.as_slice());
        if let Some(token) = input.prefer {
            // Cookie affinity: the named endpoint while it is in the Service, usable and not the
            // one that just failed.
            let found = eps.iter().position(|ep| balance::endpoint_token(ep) == token);
            if let Some(i) = found.filter(|&i| Some(eps[i]) != input.avoid && !stats[i].is_ejected_now()) {
                return Some(Pick::new(eps[i], stats[i].clone()));
            }
        }
        let (Some(affinity), Some(client)) = (&self.affinity, input.client) else {
            let i = balance::choose(&self.policy, eps, stats, &self.rr, input)?;
            return Some(Pick::new(eps[i], stats[i].clone()));
        };
        let now = Instant::now();
        if let Some(ep) = affinity.get(client, eps, input.avoid, now) {
            if let Ok(i) = eps.binary_search(&ep) {
                return Some(Pick::new(ep, stats[i].clone()));
            }
        }
        let i = balance::choose(&self.policy, eps, stats, &self.rr, input)?;
        affinity.set(client, eps[i], now);
        Some(Pick::new(eps[i], stats[i].clone()))
    }

    /// Whether `addr` is one of the endpoints.
    pub fn has_endpoint(&self, addr: SocketAddr) -> bool {
        self.live.load().endpoints().binary_search(&addr).is_ok()
    }

    /// Whether a request that failed on one endpoint can be retried on another.
    pub fn has_alternatives(&self) -> bool {
        match &self.live.load().state {
            BackendState::Endpoints(v) => v.len() > 1,
            BackendState::External { .. } => true,
            _ => false,
        }
    }

    /// Like [`Backend::pick`], resolving an ExternalName backend's DNS name first (cached).
    pub async fn pick_async(&self, input: &PickInput) -> Option<Pick> {
        let live = self.live.load();
        if !matches!(live.state, BackendState::External { .. }) {
            return self.pick_from(&live, input);
        }
        // Held across the lookup as a counted reference, not a guard.
        let live = arc_swap::Guard::into_inner(live);
        let BackendState::External { host, port } = &live.state else { unreachable!("matched above") };
        let addrs = match crate::external::resolve(host, *port).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(backend = %self.name, %host, error = %e, "cannot resolve ExternalName");
                return None;
            }
        };
        let stats: Vec<Arc<EndpointState>> = addrs.iter().map(|a| endpoint_state(self.runtime.as_ref(), *a)).collect();
        let i = balance::choose(&self.policy, &addrs, &stats, &self.rr, input)?;
        Some(Pick::new(addrs[i], stats[i].clone()))
    }
}

impl Live {
    fn new(state: BackendState, runtime: Option<&Arc<Runtime>>) -> Live {
        let state = match state {
            BackendState::Endpoints(v) if v.is_empty() => BackendState::NoEndpoints,
            s => s,
        };
        let stats = match &state {
            BackendState::Endpoints(v) => v.iter().map(|ep| endpoint_state(runtime, *ep)).collect(),
            _ => Vec::new(),
        };
        Live { state, stats }
    }

    fn endpoints(&self) -> &[SocketAddr] {
        match &self.state {
            BackendState::Endpoints(v) => v,
            _ => &[],
        }
    }

    fn serving(&self) -> bool {
        matches!(self.state, BackendState::Endpoints(_) | BackendState::External { .. })
    }
}

/// The state of `addr`: the runtime's, or a fresh one for a backend without a runtime.
fn endpoint_state(runtime: Option<&Arc<Runtime>>, addr: SocketAddr) -> Arc<EndpointState> {
    match runtime {
        Some(rt) => rt.endpoint(addr),
        None => Arc::default(),
    }
}
