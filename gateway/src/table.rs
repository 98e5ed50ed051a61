//! The compiled routing table: hosts → paths → backends → endpoints.
//!
//! A `RouteTable` is immutable once built. The controller builds a new one for every change and
//! swaps it in through `ArcSwap`; requests already holding the old table finish with it. The
//! one exception is a backend's endpoints: an EndpointSlice change replaces them in the backend
//! that the routes share ([`Backend::set_endpoints`]), with no new table.
//! Lookups never allocate: host names are lower-cased into a stack buffer, and path matching is
//! a handful of hash probes (one per `/` boundary of the request path).
//!
//! Path semantics follow Ingress v1: `Exact` matches the path string exactly; `Prefix` matches
//! element-wise on `/` (`/foo` matches `/foo`, `/foo/` and `/foo/bar`, never `/foobar`), a trailing
//! `/` on the prefix is ignored. The longest match wins and `Exact` beats `Prefix` on equal length.
//! We probe a hash map per path boundary rather than use a router crate: Ingress paths are
//! literals (no parameters), and a literal `{` in a user's path must not change its meaning.

use crate::shared::FastMap as HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;

pub use crate::backend::{Backend, BackendState, UpstreamProtocol};
use crate::balance::{self, Policy};
use crate::certs::CertStore;
use crate::host::{exact_or_wildcard, normalize_host, MAX_HOST_LEN};
use crate::l4::{L4Dump, L4Status, L4Table};
pub use crate::rules::{Conditions, HeaderEdits, ValueMatch};
use crate::sharded::ShardedMap;

/// The whole compiled state the data plane reads per request. Cloning is shallow (every part
/// is shared), so an incremental build can replace a few hosts of a table and share the rest.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    /// Ingress routes, served on `--http-addr` and `--https-addr`.
    ingress: HostTable,
    /// Certificates by SNI, swapped together with the routes.
    pub certs: CertStore,
    /// TCP and TLS-passthrough routes of the `--l4-ports`.
    pub l4: Arc<L4Table>,
    /// Gateway API: the routes of each Gateway address (a Gateway and one of its listener ports).
    gateways: HashMap<ListenerKey, Arc<PortTable>>,
    /// Gateway API: every Gateway of ours and its listeners, as `/routes` shows them.
    pub gateway_info: Vec<GatewayInfo>,
}

/// The routes by host of one address: the Ingress listeners', or one Gateway port's. A host's
/// routes are shared (`Arc`) with the tables before and after this one that have them unchanged.
#[derive(Debug, Default, Clone)]
pub struct HostTable {
    /// Exact host names, lower-case, no port. Cloning copies a pointer per shard, and a patch
    /// copies the shards of the hosts it changes.
    hosts: ShardedMap<Arc<HostRoutes>>,
    /// Wildcard hosts keyed by the suffix after `*.` (`*.example.com` → `example.com`).
    wildcards: ShardedMap<Arc<HostRoutes>>,
    /// Rules without a host: they apply to any host not listed above.
    any_host: Option<Arc<HostRoutes>>,
    /// `spec.defaultBackend` of the winning Ingress, used when no rule matches.
    default_route: Option<Arc<Route>>,
    /// Gateway API wildcards: `*.example.com` takes any number of labels before `example.com`
    /// (the most specific wildcard wins); Ingress wildcards take exactly one.
    suffix_wildcards: bool,
    /// Routes of every host, counted once the table is built (and kept by a patch).
    routes: OnceLock<usize>,
}

/// The paths served for one host.
#[derive(Debug, Default)]
pub struct HostRoutes {
    exact: HashMap<Box<str>, Entry>,
    /// Keys are normalised prefixes: no trailing `/`, except the root `/` itself.
    prefix: HashMap<Box<str>, Entry>,
    /// Gateway API `RegularExpression` paths, tried after exact paths and before prefixes, in
    /// the order the rules' precedence gives them.
    regex: Vec<(regex::Regex, Entry)>,
    /// Longest prefix key, so long request paths skip probes that cannot match.
    max_prefix_len: usize,
    /// How many routes (Ingress paths, Gateway API rules) the host has, counted once it is built.
    count: OnceLock<usize>,
}

/// What one path key leads to: an Ingress route, or Gateway API rules tried in order (the first
/// whose conditions the request meets wins; when none does, shorter paths are tried).
#[derive(Debug)]
pub enum Entry {
    Route(Arc<Route>),
    Rules(Vec<Rule>),
}

/// A Gateway API rule's match (besides host and path) and where it sends requests.
#[derive(Debug)]
pub struct Rule {
    pub when: Conditions,
    pub target: Target,
}

/// One route, or several by weight (each backendRef of a rule is a route of its own, with the
/// rule's and its own filters).
#[derive(Debug)]
pub enum Target {
    One(Arc<Route>),
    /// Routes with their cumulative weights (strictly increasing, the last is the total > 0).
    Split(Box<[(u32, Arc<Route>)]>),
}

impl Target {
    /// Routes by weight; `None` when no weight is positive.
    pub fn split(weighted: Vec<(u32, Arc<Route>)>) -> Option<Target> {
        let mut total = 0u32;
        let mut out = Vec::with_capacity(weighted.len());
        for (w, r) in weighted {
            if w > 0 {
                total = total.saturating_add(w);
                out.push((total, r));
            }
        }
        match out.len() {
            0 => None,
            1 => out.pop().map(|(_, r)| Target::One(r)),
            _ => Some(Target::Split(out.into())),
        }
    }

    fn pick(&self) -> &Arc<Route> {
        match self {
            Target::One(r) => r,
            Target::Split(routes) => {
                let total = routes.last().map_or(1, |(w, _)| *w);
                let n = fastrand::u32(..total);
                routes.iter().find(|(w, _)| n < *w).map_or(&routes[0].1, |(_, r)| r)
            }
        }
    }

    fn routes(&self) -> Vec<(Option<u32>, &Arc<Route>)> {
        match self {
            Target::One(r) => vec![(None, r)],
            Target::Split(routes) => {
                let mut prev = 0;
                routes
                    .iter()
                    .map(|(w, r)| {
                        let weight = w - prev;
                        prev = *w;
                        (Some(weight), r)
                    })
                    .collect()
            }
        }
    }
}

impl Entry {
    /// The route for a request: the Ingress route, or the first rule whose conditions it meets.
    #[inline]
    fn pick(&self, req: Option<&http::request::Parts>) -> Option<&Arc<Route>> {
        match self {
            Entry::Route(r) => Some(r),
            Entry::Rules(rules) => rules
                .iter()
                .find(|rule| {
                    rule.when.is_empty() || req.is_some_and(|q| rule.when.matches(&q.method, &q.headers, q.uri.query()))
                })
                .map(|rule| rule.target.pick()),
        }
    }

    fn count(&self) -> usize {
        match self {
            Entry::Route(_) => 1,
            Entry::Rules(rules) => rules.len(),
        }
    }
}

/// One Gateway address: a Gateway and one of its listener ports (`gateway` is `namespace/name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerKey {
    pub gateway: Arc<str>,
    pub port: u16,
}

/// What a Gateway port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum PortProtocol {
    /// HTTP/1.1 and h2c.
    #[serde(rename = "HTTP")]
    Http,
    /// TLS terminated here (certificates by SNI), then HTTP/1.1 or h2.
    #[serde(rename = "HTTPS")]
    Https,
    /// TLS whose ClientHello's server name picks the listener: passed through or terminated for
    /// TLSRoutes (`PortListener::l4`), or HTTPS for the port's HTTPS listeners.
    #[serde(rename = "TLS")]
    Tls,
    /// Every connection to the listener's TCPRoute.
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP datagrams relayed per client flow to the listener's UDPRoute.
    #[serde(rename = "UDP")]
    Udp,
}

/// The routes of one Gateway address: its listeners (one port, several hostnames), each with
/// routes of its own. A request is served by the most specific listener its host matches (exact
/// hostname, then the longest wildcard, then a listener without hostname) and by that
/// listener's routes only (listener isolation); on TLS, the server name picks a listener the
/// same way and a `Host` that picks another one is misdirected (421).
#[derive(Debug)]
pub struct PortTable {
    pub key: ListenerKey,
    pub protocol: PortProtocol,
    listeners: Vec<PortListener>,
    exact: HashMap<Box<str>, usize>,
    /// Keyed by the suffix after `*.`.
    wildcards: HashMap<Box<str>, usize>,
    any: Option<usize>,
}

/// One listener of a Gateway port.
#[derive(Debug)]
pub struct PortListener {
    pub name: Box<str>,
    /// Lower-case; `*.` for a wildcard.
    pub hostname: Option<Box<str>>,
    pub routes: HostTable,
    /// HTTPS: the certificate presented to clients whose server name picks this listener.
    pub cert: Option<crate::certs::Cert>,
    /// TLS, TCP and UDP listeners: their routes.
    pub l4: crate::l4::ListenerL4,
}

impl PortTable {
    pub fn new(key: ListenerKey, protocol: PortProtocol) -> Self {
        PortTable {
            key,
            protocol,
            listeners: Vec::new(),
            exact: HashMap::default(),
            wildcards: HashMap::default(),
            any: None,
        }
    }

    /// Adds a listener (`hostname` lower-case, `*.` wildcards allowed); returns its index, or
    /// `None` when a listener with that hostname is already on the port.
    pub fn add_listener(
        &mut self,
        name: &str,
        hostname: Option<&str>,
        cert: Option<crate::certs::Cert>,
    ) -> Option<usize> {
        let i = self.listeners.len();
        let slot = match hostname {
            None => &mut self.any,
            Some(h) => {
                let map = match h.strip_prefix("*.") {
                    Some(suffix) => self.wildcards.entry(suffix.into()),
                    None => self.exact.entry(h.into()),
                };
                match map {
                    std::collections::hash_map::Entry::Occupied(_) => return None,
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(i);
                        self.listeners.push(PortListener {
                            name: name.into(),
                            hostname: Some(h.into()),
                            routes: HostTable::gateway_api(),
                            cert,
                            l4: Default::default(),
                        });
                        return Some(i);
                    }
                }
            }
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(i);
        self.listeners.push(PortListener {
            name: name.into(),
            hostname: None,
            routes: HostTable::gateway_api(),
            cert,
            l4: Default::default(),
        });
        Some(i)
    }

    pub fn listener_mut(&mut self, i: usize) -> &mut PortListener {
        &mut self.listeners[i]
    }

    pub fn listeners(&self) -> &[PortListener] {
        &self.listeners
    }

    /// The listener a TLS server name (any case; none: the listener without hostname) picks.
    pub fn listener_for(&self, sni: Option<&str>) -> Option<&PortListener> {
        let mut buf = [0u8; MAX_HOST_LEN];
        match sni.and_then(|s| crate::host::lowercase_name(s, &mut buf)) {
            Some(name) => self.select(name),
            None => self.any.map(|i| &self.listeners[i]),
        }
    }

    /// The listener a (lower-case, port-less) host name picks.
    fn select(&self, name: &str) -> Option<&PortListener> {
        if let Some(&i) = self.exact.get(name) {
            return Some(&self.listeners[i]);
        }
        let mut rest = name;
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(&i) = self.wildcards.get(suffix) {
                return Some(&self.listeners[i]);
            }
            rest = suffix;
        }
        self.any.map(|i| &self.listeners[i])
    }

    /// The route for a request (`host` as in `Host`: any case, maybe a port).
    pub fn lookup<'a>(&'a self, host: &str, path: &str, req: Option<&http::request::Parts>) -> Match<'a> {
        let mut buf = [0u8; MAX_HOST_LEN];
        let Some(name) = normalize_host(host, &mut buf) else { return Match::NotFound };
        match self.select(name) {
            Some(l) => l.routes.lookup(name, path, req),
            None => Match::NotFound,
        }
    }

    /// Whether the TLS server name and the `Host` pick different listeners.
    pub fn misdirected(&self, sni: &str, host: &str) -> bool {
        let (mut a, mut b) = ([0u8; MAX_HOST_LEN], [0u8; MAX_HOST_LEN]);
        let sni = crate::host::lowercase_name(sni, &mut a);
        let host = normalize_host(host, &mut b);
        match (sni.and_then(|s| self.select(s)), host.and_then(|h| self.select(h))) {
            (Some(x), Some(y)) => !std::ptr::eq(x, y),
            (x, y) => x.is_some() != y.is_some(),
        }
    }

    /// The certificate for a TLS server name (none: the listener without hostname's).
    pub fn cert(&self, sni: Option<&str>) -> Option<&Arc<rustls::sign::CertifiedKey>> {
        self.listener_for(sni)?.cert.as_ref().map(|c| &c.key)
    }

    pub fn route_count(&self) -> usize {
        self.listeners.iter().map(|l| l.routes.route_count()).sum()
    }

    fn dump(&self) -> PortDump {
        let mut listeners: Vec<PortListenerDump> = self
            .listeners
            .iter()
            .map(|l| PortListenerDump {
                name: l.name.to_string(),
                hostname: l.hostname.as_deref().map(str::to_string),
                certificate: l.cert.as_ref().map(|c| c.source.to_string()),
                hosts: l.routes.dump(),
                l4: l.l4.dump(),
            })
            .collect();
        listeners.sort_by(|a, b| a.name.cmp(&b.name));
        PortDump { gateway: self.key.gateway.to_string(), port: self.key.port, protocol: self.protocol, listeners }
    }
}

/// A Gateway of ours as `/routes` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GatewayInfo {
    pub namespace: String,
    pub name: String,
    pub listeners: Vec<ListenerInfo>,
}

/// One listener of a Gateway, its state and (filled in by whoever binds it) its address.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListenerInfo {
    pub name: String,
    pub port: u16,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `ip:port` ferry serves this listener on; `None` while not bound (or not servable).
    pub address: Option<String>,
    pub attached_routes: u32,
    /// Whether the listener is served (its `Programmed` condition).
    pub programmed: bool,
    /// Conditions as `type=status(reason)`, e.g. `Accepted=False(PortUnavailable)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<String>,
}

/// Path match kind, as in Ingress `pathType` (`ImplementationSpecific` is compiled as `Prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PathKind {
    Exact,
    Prefix,
    /// Gateway API only.
    RegularExpression,
}

/// A matched rule: who declared it and where it goes.
#[derive(Debug)]
pub struct Route {
    /// `namespace/ingress`, used in metrics and logs.
    pub name: Arc<str>,
    pub backend: Arc<Backend>,
    /// This route's request counters by status class, taken from the metrics family on first use
    /// so a request costs one atomic add. The family owns the series, so a route rebuilt into a
    /// new table keeps counting where the old one stopped.
    pub(crate) counters: OnceLock<crate::metrics::StatusCounters>,
    /// Per-route upstream timeouts and retries (Ingress annotations).
    pub options: RouteOptions,
    /// A canary Ingress taking part of this path's traffic.
    pub canary: Option<Canary>,
}

/// `ferry.dev/canary`: another Ingress's route for the same host and path that takes requests
/// by header, else by weight.
#[derive(Debug)]
pub struct Canary {
    pub route: Arc<Route>,
    /// Percent of requests (without a deciding header) sent to the canary.
    pub weight: u8,
    /// With this header: `always` → canary, `never` → main; or, with `header_value`, that exact
    /// value → canary.
    pub header: Option<http::HeaderName>,
    pub header_value: Option<String>,
}

impl Route {
    /// This route, or its canary for this request.
    pub fn for_request<'a>(self: &'a Arc<Route>, headers: &http::HeaderMap) -> &'a Arc<Route> {
        let Some(canary) = &self.canary else { return self };
        if let Some(v) = canary.header.as_ref().and_then(|h| headers.get(h)) {
            let v = v.as_bytes();
            match &canary.header_value {
                Some(want) if v == want.as_bytes() => return &canary.route,
                Some(_) => {}
                None if v == b"always" => return &canary.route,
                None if v == b"never" => return self,
                None => {}
            }
        }
        if canary.weight > 0 && fastrand::u8(..100) < canary.weight {
            &canary.route
        } else {
            self
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RouteOptions {
    /// Upstream timeouts; `None` = the gateway's defaults.
    pub connect: Option<Duration>,
    pub read: Option<Duration>,
    /// Extra attempts, on another endpoint, for idempotent requests without a body whose
    /// upstream answered 502, 503 or 504 (within the backend's retry budget).
    pub retries: u8,
    /// Gateway API `retry`: the statuses retried instead of 502-504 (also on the same endpoint
    /// when the backend has only one), and the pause before each retry.
    pub retry_on: Option<Arc<[u16]>>,
    pub retry_backoff: Option<Duration>,
    /// Only clients from these networks are served (403 otherwise).
    pub allow_sources: Option<Arc<[ipnet::IpNet]>>,
    /// Requests per client IP (429 beyond).
    pub rate_limit: Option<Arc<crate::limits::RateLimiter>>,
    /// Largest request body in bytes (413 beyond).
    pub max_body: Option<u64>,
    /// Whether plain-HTTP requests are redirected (308) to HTTPS.
    pub https_redirect: HttpsRedirect,
    /// Every request is answered with this redirect instead of being proxied.
    pub redirect: Option<Arc<Redirect>>,
    /// A request for `/` is redirected (302) to this path.
    pub app_root: Option<Arc<str>>,
    /// The matched path is replaced before the request goes upstream.
    pub rewrite: Option<Arc<Rewrite>>,
    /// CORS headers and preflight answers.
    pub cors: Option<Arc<crate::cors::Cors>>,
    /// Cookie affinity: clients are pinned to an endpoint by a cookie ferry sets.
    pub affinity_cookie: Option<Arc<AffinityCookie>>,
    /// Gateway API `RequestHeaderModifier`: header changes on the request sent upstream.
    pub request_headers: Option<Arc<HeaderEdits>>,
    /// Gateway API `ResponseHeaderModifier`: header changes on the response sent to the client.
    pub response_headers: Option<Arc<HeaderEdits>>,
    /// Gateway API `RequestRedirect`: the redirect is built from the request.
    pub request_redirect: Option<Arc<RequestRedirect>>,
    /// Gateway API `URLRewrite` hostname: the `Host` sent upstream.
    pub host_rewrite: Option<Arc<str>>,
    /// Gateway API `RequestMirror`: copies of the request sent to other backends.
    pub mirrors: Option<Arc<[Mirror]>>,
}

/// A backend that gets a copy of a share of the route's requests (`numerator / denominator`);
/// its answers are discarded.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub backend: Arc<Backend>,
    pub numerator: u32,
    pub denominator: u32,
}

/// Gateway API `RequestRedirect`: each part the filter leaves unset is the request's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRedirect {
    /// `http` or `https`.
    pub scheme: Option<Box<str>>,
    pub hostname: Option<Box<str>>,
    pub port: Option<u16>,
    /// The new path: `exact` replaces it whole, else `from` (the matched prefix) is replaced.
    pub path: Option<Rewrite>,
    /// 301, 302, 303, 307 or 308.
    pub code: u16,
}

impl RequestRedirect {
    /// The `Location` for a request: `tls` and `listener_port` describe where it came in,
    /// `host` is its `Host` (a port in it is ignored), `target` its path and query.
    pub fn location(&self, tls: bool, listener_port: u16, host: &str, target: &str) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(if tls { "https" } else { "http" });
        let hostname = match &self.hostname {
            Some(h) => h.as_ref(),
            None => strip_port(host),
        };
        let port = match (self.port, &self.scheme) {
            (Some(p), _) => p,
            // A new scheme without a port: that scheme's own port.
            (None, Some(_)) => default_port(scheme),
            (None, None) => listener_port,
        };
        let target = match &self.path {
            Some(rewrite) => rewrite.apply(target),
            None => target.to_string(),
        };
        if port == default_port(scheme) {
            format!("{scheme}://{hostname}{target}")
        } else {
            format!("{scheme}://{hostname}:{port}{target}")
        }
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    }
}

/// `host` without a `:port` (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { host })
}

/// When a plain-HTTP request is redirected (308) to HTTPS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HttpsRedirect {
    #[default]
    Never,
    /// While a certificate of the table names the host (one of the Ingress's TLS hosts): a broken
    /// Secret must not turn a working plain-HTTP route into a redirect to a failing handshake.
    IfCertified,
    /// Always (`force-ssl-redirect`): where no Secret names the host, the default certificate
    /// answers.
    Always,
}

/// `ferry.dev/affinity: cookie`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityCookie {
    pub name: String,
    /// `Max-Age` in seconds; `None` = a session cookie.
    pub max_age: Option<u64>,
}

impl AffinityCookie {
    /// The `Set-Cookie` value pinning the client to `endpoint`.
    pub fn set_cookie(&self, endpoint: &SocketAddr, tls: bool) -> String {
        let mut v = format!("{}={:016x}; Path=/; HttpOnly; SameSite=Lax", self.name, balance::endpoint_token(endpoint));
        if let Some(age) = self.max_age {
            v.push_str(&format!("; Max-Age={age}"));
        }
        if tls {
            v.push_str("; Secure");
        }
        v
    }
}

/// `ferry.dev/redirect`: answer with `code` and `Location: location`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub location: String,
    /// 301, 302, 303, 307 or 308.
    pub code: u16,
}

/// `ferry.dev/rewrite-target`: the matched prefix `from` (or the whole exact path) becomes `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub from: Box<str>,
    pub to: Box<str>,
    pub exact: bool,
}

impl Rewrite {
    /// The upstream request target for `target` (path and query as received).
    pub fn apply(&self, target: &str) -> String {
        let (path, query) = match target.find('?') {
            Some(i) => target.split_at(i),
            None => (target, ""),
        };
        let rest = if self.exact || &*self.from == "/" {
            if self.exact {
                ""
            } else {
                path
            }
        } else {
            path.get(self.from.len()..).unwrap_or("")
        };
        let base = if rest.is_empty() { &*self.to } else { self.to.trim_end_matches('/') };
        let mut out = format!("{base}{rest}");
        if out.is_empty() {
            out.push('/');
        }
        out.push_str(query);
        out
    }
}

impl Route {
    pub fn new(name: Arc<str>, backend: Arc<Backend>) -> Self {
        Route { name, backend, counters: OnceLock::new(), options: RouteOptions::default(), canary: None }
    }

    pub fn with_options(mut self, options: RouteOptions) -> Self {
        self.options = options;
        self
    }
}

/// What a lookup found.
#[derive(Debug, Clone, Copy)]
pub enum Match<'a> {
    Route(&'a Arc<Route>),
    /// No rule and no default backend.
    NotFound,
}

impl Match<'_> {
    /// The matched route's name (`namespace/ingress`), if any.
    pub fn route_name(&self) -> Option<&str> {
        match self {
            Match::Route(r) => Some(&r.name),
            Match::NotFound => None,
        }
    }
}

impl RouteTable {
    /// Finds the Ingress route for a request. `host` may carry a port and any case; `path` is
    /// the path as received (no decoding), without the query.
    pub fn lookup<'a>(&'a self, host: &str, path: &str) -> Match<'a> {
        self.ingress.lookup(host, path, None)
    }

    /// The routes of a Gateway address, if the table has it.
    pub fn gateway(&self, key: &ListenerKey) -> Option<&Arc<PortTable>> {
        self.gateways.get(key)
    }

    /// Every Gateway address of the table.
    pub fn gateway_ports(&self) -> impl Iterator<Item = &Arc<PortTable>> {
        self.gateways.values()
    }

    pub fn host_count(&self) -> usize {
        self.ingress.host_count()
    }

    /// Ingress paths and Gateway API rules.
    pub fn route_count(&self) -> usize {
        self.ingress.route_count() + self.gateways.values().map(|p| p.route_count()).sum::<usize>()
    }

    /// This table with some of its Ingress parts replaced by `from`'s: the routes of `hosts`,
    /// the certificates of `cert_hosts` (lower-case, `*.` wildcards as written) and, if
    /// `default_route`, the default backend. What `from` lacks is removed; everything else is
    /// shared with this table. An incremental build compiles only the Ingresses behind those
    /// parts into `from`.
    pub fn patched<'h>(
        &self,
        from: &RouteTable,
        hosts: impl IntoIterator<Item = &'h HostKey>,
        cert_hosts: impl IntoIterator<Item = &'h str>,
        default_route: bool,
    ) -> RouteTable {
        let mut out = self.clone();
        let mut routes = self.ingress.routes.get().copied();
        for host in hosts {
            let (old, new) = (out.ingress.shared(host), from.ingress.shared(host));
            let count = |h: &Option<Arc<HostRoutes>>| h.as_ref().map_or(0, |h| h.count());
            routes = routes.map(|n| n - count(&old) + count(&new));
            out.ingress.slot(host).set(new);
        }
        out.ingress.routes = routes.map(OnceLock::from).unwrap_or_default();
        for host in cert_hosts {
            out.certs.copy_from(&from.certs, host);
        }
        if default_route {
            out.ingress.default_route = from.ingress.default_route.clone();
        }
        out
    }

    /// A serialisable view of the table, for `/routes`, `ferry check` and golden tests.
    /// Sorted, so equal tables dump equally.
    pub fn dump(&self) -> TableDump {
        let mut ports: Vec<PortDump> = self.gateways.values().map(|p| p.dump()).collect();
        ports.sort_by(|a, b| (&a.gateway, a.port).cmp(&(&b.gateway, b.port)));
        TableDump {
            hosts: self.ingress.dump(),
            default_backend: self.ingress.default_route.as_ref().map(|r| RouteDump::new(r)),
            tls: self.certs.dump(),
            l4_routes: self.l4.dump(),
            l4_status: Vec::new(),
            gateways: self.gateway_info.clone(),
            gateway_routes: ports,
        }
    }
}

impl HostTable {
    /// An empty table with Gateway API host semantics.
    pub fn gateway_api() -> Self {
        HostTable { suffix_wildcards: true, ..HostTable::default() }
    }

    /// Finds the route for a request (`req` is needed only by rules with conditions).
    pub fn lookup<'a>(&'a self, host: &str, path: &str, req: Option<&http::request::Parts>) -> Match<'a> {
        let mut buf = [0u8; MAX_HOST_LEN];
        let host = normalize_host(host, &mut buf);
        let routes = host.and_then(|h| self.host_routes(h)).or(self.any_host.as_deref());
        if let Some(r) = routes.and_then(|r| r.lookup(path, req)) {
            return Match::Route(r);
        }
        match &self.default_route {
            Some(r) => Match::Route(r),
            None => Match::NotFound,
        }
    }

    fn host_routes(&self, host: &str) -> Option<&HostRoutes> {
        if !self.suffix_wildcards {
            return exact_or_wildcard(&self.hosts, &self.wildcards, host).map(|r| &**r);
        }
        if let Some(r) = self.hosts.get(host) {
            return Some(r);
        }
        // `a.b.example.com` tries `b.example.com`, then `example.com`, then `com`.
        let mut rest = host;
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(r) = self.wildcards.get(suffix) {
                return Some(r);
            }
            rest = suffix;
        }
        None
    }

    pub fn host_count(&self) -> usize {
        self.hosts.len() + self.wildcards.len() + usize::from(self.any_host.is_some())
    }

    pub fn route_count(&self) -> usize {
        *self.routes.get_or_init(|| {
            self.hosts.values().chain(self.wildcards.values()).chain(&self.any_host).map(|h| h.count()).sum()
        })
    }

    fn dump(&self) -> Vec<HostDump> {
        let mut hosts: Vec<HostDump> = Vec::new();
        let mut add = |host: String, r: &HostRoutes| {
            let mut paths: Vec<PathDump> = Vec::new();
            let mut entry = |p: &str, kind: PathKind, e: &Entry| match e {
                Entry::Route(route) => paths.push(PathDump::new(p, kind, route, None, None)),
                Entry::Rules(rules) => {
                    for rule in rules {
                        for (weight, route) in rule.target.routes() {
                            paths.push(PathDump::new(p, kind, route, rule.when.describe(), weight));
                        }
                    }
                }
            };
            for (p, e) in &r.exact {
                entry(p, PathKind::Exact, e);
            }
            for (p, e) in &r.prefix {
                entry(p, PathKind::Prefix, e);
            }
            for (re, e) in &r.regex {
                entry(re.as_str(), PathKind::RegularExpression, e);
            }
            // Stable: rules of one path keep their precedence order.
            paths.sort_by(|a, b| (&a.path, a.kind).cmp(&(&b.path, b.kind)));
            hosts.push(HostDump { host, paths });
        };
        for (h, r) in self.hosts.iter() {
            add(h.to_string(), r);
        }
        for (h, r) in self.wildcards.iter() {
            add(format!("*.{h}"), r);
        }
        if let Some(r) = &self.any_host {
            add("*".to_string(), r);
        }
        hosts.sort_by(|a, b| a.host.cmp(&b.host));
        hosts
    }

    /// The routes of a host of a table under construction (which owns every host it has).
    fn routes_mut(&mut self, host: &HostKey) -> &mut HostRoutes {
        Arc::get_mut(self.slot(host).get_or_insert_with(Default::default))
            .expect("a table under construction owns its hosts")
    }

    fn routes(&self, host: &HostKey) -> Option<&HostRoutes> {
        match host {
            HostKey::Exact(h) => self.hosts.get(h.as_str()),
            HostKey::Wildcard(h) => self.wildcards.get(h.as_str()),
            HostKey::Any => self.any_host.as_ref(),
        }
        .map(|r| &**r)
    }

    /// A host's entry: taken out of the table, to be put back (or not) by the caller.
    fn slot<'a, 'h>(&'a mut self, host: &'h HostKey) -> Slot<'a, 'h> {
        match host {
            HostKey::Exact(h) => Slot::Map(&mut self.hosts, h),
            HostKey::Wildcard(h) => Slot::Map(&mut self.wildcards, h),
            HostKey::Any => Slot::Any(&mut self.any_host),
        }
    }
}

/// Where one host's routes live in a [`HostTable`].
enum Slot<'a, 'h> {
    Map(&'a mut ShardedMap<Arc<HostRoutes>>, &'h str),
    Any(&'a mut Option<Arc<HostRoutes>>),
}

impl<'a> Slot<'a, '_> {
    fn get_or_insert_with(self, new: impl FnOnce() -> Arc<HostRoutes>) -> &'a mut Arc<HostRoutes> {
        match self {
            Slot::Map(map, host) => map.get_or_insert_with(host, new),
            Slot::Any(any) => any.get_or_insert_with(new),
        }
    }

    fn set(self, routes: Option<Arc<HostRoutes>>) {
        match (self, routes) {
            (Slot::Map(map, host), Some(r)) => {
                map.insert(host, r);
            }
            (Slot::Map(map, host), None) => {
                map.remove(host);
            }
            (Slot::Any(any), r) => *any = r,
        }
    }
}

impl HostTable {
    fn shared(&self, host: &HostKey) -> Option<Arc<HostRoutes>> {
        match host {
            HostKey::Exact(h) => self.hosts.get(h.as_str()),
            HostKey::Wildcard(h) => self.wildcards.get(h.as_str()),
            HostKey::Any => self.any_host.as_ref(),
        }
        .cloned()
    }

    /// Adds a Gateway API rule for host+kind+path after the rules already there (callers add
    /// rules in precedence order). `RegularExpression` paths must be compiled by the caller
    /// (see [`path_regex`]).
    pub fn add_rule(&mut self, host: &HostKey, kind: PathKind, path: &str, rule: Rule) {
        let routes = self.routes_mut(host);
        let slot = match kind {
            PathKind::Exact => routes.exact.entry(path.into()),
            PathKind::Prefix => {
                let key = prefix_key(path);
                routes.max_prefix_len = routes.max_prefix_len.max(key.len());
                routes.prefix.entry(key.into())
            }
            PathKind::RegularExpression => {
                match routes.regex.iter_mut().find(|(re, _)| re.as_str() == path) {
                    Some((_, Entry::Rules(rules))) => rules.push(rule),
                    Some((_, Entry::Route(_))) => {}
                    None => {
                        if let Ok(re) = regex::Regex::new(path) {
                            routes.regex.push((re, Entry::Rules(vec![rule])));
                        }
                    }
                }
                return;
            }
        };
        match slot.or_insert_with(|| Entry::Rules(Vec::new())) {
            Entry::Rules(rules) => rules.push(rule),
            Entry::Route(_) => {}
        }
    }
}

/// A Gateway API `RegularExpression` path compiled to match the whole path (the form
/// [`HostTable::add_rule`] takes).
pub fn path_regex(pattern: &str) -> Result<String, regex::Error> {
    let anchored = format!("^(?:{pattern})$");
    regex::Regex::new(&anchored).map(|_| anchored)
}

impl HostRoutes {
    /// Its routes: Ingress paths and Gateway API rules.
    fn count(&self) -> usize {
        *self.count.get_or_init(|| {
            self.exact
                .values()
                .chain(self.prefix.values())
                .chain(self.regex.iter().map(|(_, e)| e))
                .map(Entry::count)
                .sum()
        })
    }

    fn lookup(&self, path: &str, req: Option<&http::request::Parts>) -> Option<&Arc<Route>> {
        let path = if path.is_empty() { "/" } else { path };
        if let Some(r) = self.exact.get(path).and_then(|e| e.pick(req)) {
            return Some(r);
        }
        for (re, e) in &self.regex {
            if re.is_match(path) {
                if let Some(r) = e.pick(req) {
                    return Some(r);
                }
            }
        }
        if self.prefix.is_empty() {
            return None;
        }
        let trimmed = path.trim_end_matches('/');
        if !trimmed.is_empty() && trimmed.len() <= self.max_prefix_len {
            if let Some(r) = self.prefix.get(trimmed).and_then(|e| e.pick(req)) {
                return Some(r);
            }
        }
        // Walk `/` boundaries from the right: `/a/b/c` probes `/a/b`, then `/a`.
        let mut end = trimmed.len();
        while let Some(i) = trimmed[..end].rfind('/') {
            end = i;
            let candidate = &trimmed[..i];
            if candidate.is_empty() || candidate.ends_with('/') || candidate.len() > self.max_prefix_len {
                continue;
            }
            if let Some(r) = self.prefix.get(candidate).and_then(|e| e.pick(req)) {
                return Some(r);
            }
        }
        self.prefix.get("/").and_then(|e| e.pick(req))
    }
}

/// Normalises an Ingress `Prefix` path into its table key.
pub fn prefix_key(path: &str) -> &str {
    let t = path.trim_end_matches('/');
    if t.is_empty() {
        "/"
    } else {
        t
    }
}

/// Assembles a `RouteTable`. The controller decides conflicts before calling `add_path`:
/// the first insert of a host+kind+path wins and later ones are reported back as `false`.
#[derive(Debug, Default)]
pub struct TableBuilder {
    table: RouteTable,
}

/// Where a rule's host puts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostKey {
    Exact(String),
    /// Suffix after `*.`.
    Wildcard(String),
    Any,
}

impl HostKey {
    /// Parses an already-validated, lower-case Ingress host (`""` = any host).
    pub fn parse(host: &str) -> HostKey {
        if host.is_empty() {
            HostKey::Any
        } else if let Some(s) = host.strip_prefix("*.") {
            HostKey::Wildcard(s.to_string())
        } else {
            HostKey::Exact(host.to_string())
        }
    }
}

impl TableBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an Ingress path; returns `false` (and changes nothing) if that host+kind+path is
    /// taken.
    pub fn add_path(&mut self, host: &HostKey, kind: PathKind, path: &str, route: Arc<Route>) -> bool {
        let routes = self.table.ingress.routes_mut(host);
        let (map, key) = match kind {
            PathKind::Exact | PathKind::RegularExpression => (&mut routes.exact, path),
            PathKind::Prefix => (&mut routes.prefix, prefix_key(path)),
        };
        if map.contains_key(key) {
            return false;
        }
        if kind == PathKind::Prefix {
            routes.max_prefix_len = routes.max_prefix_len.max(key.len());
        }
        map.insert(key.into(), Entry::Route(route));
        true
    }

    /// Who already serves this Ingress host+kind+path, if anyone.
    pub fn owner(&self, host: &HostKey, kind: PathKind, path: &str) -> Option<&Arc<Route>> {
        let routes = self.table.ingress.routes(host)?;
        let entry = match kind {
            PathKind::Exact | PathKind::RegularExpression => routes.exact.get(path),
            PathKind::Prefix => routes.prefix.get(prefix_key(path)),
        }?;
        match entry {
            Entry::Route(r) => Some(r),
            Entry::Rules(_) => None,
        }
    }

    /// Attaches a canary to the route serving host+kind+path; `Err` says why not (no such route,
    /// or it has a canary already: the owner's name).
    pub fn set_canary(
        &mut self,
        host: &HostKey,
        kind: PathKind,
        path: &str,
        canary: Canary,
    ) -> Result<(), Option<Arc<str>>> {
        let ingress = &mut self.table.ingress;
        let routes = match host {
            HostKey::Exact(h) => ingress.hosts.get_mut(h.as_str()),
            HostKey::Wildcard(h) => ingress.wildcards.get_mut(h.as_str()),
            HostKey::Any => ingress.any_host.as_mut(),
        }
        .ok_or(None)?;
        let routes = Arc::get_mut(routes).expect("a table under construction owns its hosts");
        let slot = match kind {
            PathKind::Exact | PathKind::RegularExpression => routes.exact.get_mut(path),
            PathKind::Prefix => routes.prefix.get_mut(prefix_key(path)),
        }
        .ok_or(None)?;
        let Entry::Route(slot) = slot else { return Err(None) };
        if let Some(existing) = &slot.canary {
            return Err(Some(existing.route.name.clone()));
        }
        let main = Route {
            name: slot.name.clone(),
            backend: slot.backend.clone(),
            counters: OnceLock::new(),
            options: slot.options.clone(),
            canary: Some(canary),
        };
        *slot = Arc::new(main);
        Ok(())
    }

    /// Sets the default backend unless one is set; returns whether it was set.
    pub fn set_default(&mut self, route: Arc<Route>) -> bool {
        if self.table.ingress.default_route.is_some() {
            return false;
        }
        self.table.ingress.default_route = Some(route);
        true
    }

    pub fn default_route(&self) -> Option<&Arc<Route>> {
        self.table.ingress.default_route.as_ref()
    }

    pub fn certs_mut(&mut self) -> &mut CertStore {
        &mut self.table.certs
    }

    pub fn l4_mut(&mut self) -> &mut L4Table {
        Arc::get_mut(&mut self.table.l4).expect("a table under construction owns its L4 routes")
    }

    /// Adds a Gateway address's routes (replacing any with the same key).
    pub fn add_gateway_port(&mut self, port: PortTable) {
        self.table.gateways.insert(port.key.clone(), Arc::new(port));
    }

    pub fn set_gateway_info(&mut self, info: Vec<GatewayInfo>) {
        self.table.gateway_info = info;
    }

    pub fn finish(self) -> RouteTable {
        self.table
    }
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TableDump {
    pub hosts: Vec<HostDump>,
    pub default_backend: Option<RouteDump>,
    pub tls: Vec<crate::certs::CertDump>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub l4_routes: Vec<L4Dump>,
    /// What each L4Route's status says: not part of the table, the build's output beside it
    /// (the caller that has it fills it in; [`RouteTable::dump`] leaves it empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub l4_status: Vec<L4Status>,
    /// Gateway API: every Gateway of ours with its listeners and their addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<GatewayInfo>,
    /// Gateway API: the routes of each Gateway address.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateway_routes: Vec<PortDump>,
}

/// The routes of one Gateway address, by listener.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PortDump {
    pub gateway: String,
    pub port: u16,
    pub protocol: PortProtocol,
    pub listeners: Vec<PortListenerDump>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PortListenerDump {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The Secret of its certificate (HTTPS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    pub hosts: Vec<HostDump>,
    /// TLS, TCP and UDP listeners: their routes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub l4: Vec<crate::l4::ListenerL4Dump>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct HostDump {
    pub host: String,
    pub paths: Vec<PathDump>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PathDump {
    pub path: String,
    pub kind: PathKind,
    /// A Gateway API rule's method, header and query conditions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// A Gateway API backend's weight, when its rule splits traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(flatten)]
    pub route: RouteDump,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RouteDump {
    pub route: String,
    pub backend: String,
    #[serde(flatten)]
    pub state: BackendState,
    /// `sessionAffinity: ClientIP` timeout, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity_timeout_seconds: Option<u64>,
    /// Per-route upstream timeouts from annotations, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u128>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_timeout_ms: Option<u128>,
    #[serde(skip_serializing_if = "is_zero")]
    pub retries: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_source_ranges: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ssl_redirect: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub force_ssl_redirect: bool,
    /// `"<code> <location>"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_root: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite_target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_allow_origin: Option<String>,
    /// The rest of the CORS policy: methods, headers, exposed headers, credentials, max age.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity_cookie: Option<String>,
    /// The affinity cookie's `Max-Age`, when set (a session cookie otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity_cookie_max_age: Option<u64>,
    /// The canary route (`namespace/ingress`, backend, weight), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// Load-balancing policy, when not round-robin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<String>,
    /// Upstream protocol, when not HTTP/1.1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<UpstreamProtocol>,
    /// The BackendTLSPolicy that verifies TLS to the pods: `namespace/name (hostname …)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_tls: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<String>,
    /// `"<code> <scheme>://<host>:<port><path>"`, `*` for what the request keeps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirrors: Option<Vec<String>>,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl PathDump {
    fn new(path: &str, kind: PathKind, route: &Route, when: Option<String>, weight: Option<u32>) -> Self {
        PathDump { path: path.to_string(), kind, when, weight, route: RouteDump::new(route) }
    }
}

impl RouteDump {
    fn new(route: &Route) -> Self {
        RouteDump {
            route: route.name.to_string(),
            backend: route.backend.name.to_string(),
            state: route.backend.state().clone(),
            affinity_timeout_seconds: route.backend.affinity.as_ref().map(|a| a.timeout().as_secs()),
            connect_timeout_ms: route.options.connect.map(|d| d.as_millis()),
            read_timeout_ms: route.options.read.map(|d| d.as_millis()),
            retries: route.options.retries,
            allow_source_ranges: route
                .options
                .allow_sources
                .as_ref()
                .map(|n| n.iter().map(|n| n.to_string()).collect()),
            rate_limit: route.options.rate_limit.as_ref().map(|l| {
                let r = l.rate();
                format!("{}r/s burst={}", r.per_second, r.burst)
            }),
            max_body_bytes: route.options.max_body,
            ssl_redirect: route.options.https_redirect != HttpsRedirect::Never,
            force_ssl_redirect: route.options.https_redirect == HttpsRedirect::Always,
            redirect: route.options.redirect.as_ref().map(|r| format!("{} {}", r.code, r.location)),
            app_root: route.options.app_root.as_deref().map(str::to_string),
            rewrite_target: route.options.rewrite.as_ref().map(|r| r.to.to_string()),
            affinity_cookie: route.options.affinity_cookie.as_ref().map(|c| c.name.clone()),
            affinity_cookie_max_age: route.options.affinity_cookie.as_ref().and_then(|c| c.max_age),
            canary: route.canary.as_ref().map(|c| {
                let header = c.header.as_ref().map_or(String::new(), |h| format!(", header {h}"));
                format!("{} → {} ({}%{header})", c.route.name, c.route.backend.name, c.weight)
            }),
            cors_allow_origin: route.options.cors.as_ref().map(|c| {
                if c.origins.is_empty() {
                    "*".to_string()
                } else {
                    c.origins.join(", ")
                }
            }),
            cors: route.options.cors.as_ref().map(|c| {
                let expose = c.expose.as_ref().map_or(String::new(), |e| format!("; expose {e}"));
                let credentials = if c.credentials { "; credentials" } else { "" };
                let headers = if c.headers.is_empty() { "none" } else { &c.headers };
                format!("methods {}; headers {headers}{expose}{credentials}; max-age {}", c.methods, c.max_age)
            }),
            load_balancer: (route.backend.policy != Policy::RoundRobin).then(|| route.backend.policy.name()),
            protocol: (route.backend.protocol != UpstreamProtocol::Http1).then_some(route.backend.protocol),
            backend_tls: route.backend.tls.as_ref().map(|t| format!("{} (hostname {})", t.policy, t.hostname())),
            request_headers: route.options.request_headers.as_ref().map(|e| e.describe()),
            response_headers: route.options.response_headers.as_ref().map(|e| e.describe()),
            request_redirect: route.options.request_redirect.as_ref().map(|r| {
                let part = |p: Option<&str>| p.unwrap_or("*").to_string();
                let path =
                    r.path
                        .as_ref()
                        .map(|p| if p.exact { p.to.to_string() } else { format!("{}* → {}*", p.from, p.to) });
                format!(
                    "{} {}://{}:{}{}",
                    r.code,
                    part(r.scheme.as_deref()),
                    part(r.hostname.as_deref()),
                    r.port.map_or("*".to_string(), |p| p.to_string()),
                    path.unwrap_or_else(|| "*".into())
                )
            }),
            host_rewrite: route.options.host_rewrite.as_deref().map(str::to_string),
            mirrors: route
                .options
                .mirrors
                .as_ref()
                .map(|m| m.iter().map(|m| format!("{} ({}/{})", m.backend.name, m.numerator, m.denominator)).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::PickInput;
    use std::collections::BTreeSet;

    fn route(name: &str) -> Arc<Route> {
        let ep: SocketAddr = "127.0.0.1:1".parse().unwrap();
        Arc::new(Route::new(
            name.into(),
            Arc::new(Backend::new(name, BackendState::Endpoints(vec![ep]), &Default::default())),
        ))
    }

    fn name(m: Match<'_>) -> Option<&str> {
        match m {
            Match::Route(r) => Some(&r.name),
            Match::NotFound => None,
        }
    }

    fn table(entries: &[(&str, PathKind, &str, &str)]) -> RouteTable {
        let mut b = TableBuilder::new();
        for (host, kind, path, n) in entries {
            assert!(b.add_path(&HostKey::parse(host), *kind, path, route(n)));
        }
        b.finish()
    }

    use PathKind::*;

    #[test]
    fn prefix_is_element_wise() {
        let t = table(&[("a.test", Prefix, "/foo", "foo")]);
        for p in ["/foo", "/foo/", "/foo/bar", "/foo//x"] {
            assert_eq!(name(t.lookup("a.test", p)), Some("foo"), "{p}");
        }
        for p in ["/foobar", "/fo", "/", "", "/bar/foo"] {
            assert_eq!(name(t.lookup("a.test", p)), None, "{p}");
        }
    }

    #[test]
    fn trailing_slash_on_prefix_is_ignored() {
        let t = table(&[("a.test", Prefix, "/foo/", "foo")]);
        assert_eq!(name(t.lookup("a.test", "/foo")), Some("foo"));
        assert_eq!(name(t.lookup("a.test", "/foo/x")), Some("foo"));
    }

    #[test]
    fn longest_match_and_exact_before_prefix() {
        let t = table(&[
            ("a.test", Prefix, "/", "root"),
            ("a.test", Prefix, "/a", "a"),
            ("a.test", Prefix, "/a/b", "ab"),
            ("a.test", Exact, "/a/b", "ab-exact"),
        ]);
        assert_eq!(name(t.lookup("a.test", "/a/b")), Some("ab-exact"));
        assert_eq!(name(t.lookup("a.test", "/a/b/")), Some("ab"));
        assert_eq!(name(t.lookup("a.test", "/a/b/c")), Some("ab"));
        assert_eq!(name(t.lookup("a.test", "/a/bc")), Some("a"));
        assert_eq!(name(t.lookup("a.test", "/x")), Some("root"));
    }

    #[test]
    fn exact_does_not_match_trailing_slash() {
        let t = table(&[("a.test", Exact, "/foo", "foo")]);
        assert_eq!(name(t.lookup("a.test", "/foo")), Some("foo"));
        assert_eq!(name(t.lookup("a.test", "/foo/")), None);
    }

    #[test]
    fn host_precedence_case_and_port() {
        let t = table(&[
            ("a.example.com", Prefix, "/", "exact"),
            ("*.example.com", Prefix, "/", "wild"),
            ("", Prefix, "/", "any"),
        ]);
        assert_eq!(name(t.lookup("A.Example.COM:8080", "/")), Some("exact"));
        assert_eq!(name(t.lookup("b.example.com", "/")), Some("wild"));
        assert_eq!(name(t.lookup("b.example.com.", "/")), Some("wild"));
        // One label only.
        assert_eq!(name(t.lookup("x.b.example.com", "/")), Some("any"));
        assert_eq!(name(t.lookup("example.com", "/")), Some("any"));
        assert_eq!(name(t.lookup("[::1]:80", "/")), Some("any"));
    }

    #[test]
    fn known_host_does_not_fall_through_to_other_hosts() {
        let t = table(&[("a.test", Exact, "/only", "a"), ("", Prefix, "/", "any")]);
        assert_eq!(name(t.lookup("a.test", "/other")), None);
    }

    #[test]
    fn default_route_when_nothing_matches() {
        let mut b = TableBuilder::new();
        b.add_path(&HostKey::parse("a.test"), Exact, "/", route("a"));
        assert!(b.set_default(route("default")));
        assert!(!b.set_default(route("second")));
        let t = b.finish();
        assert_eq!(name(t.lookup("other.test", "/")), Some("default"));
        assert_eq!(name(t.lookup("a.test", "/x")), Some("default"));
    }

    #[test]
    fn duplicate_insert_is_refused() {
        let mut b = TableBuilder::new();
        let h = HostKey::parse("a.test");
        assert!(b.add_path(&h, Prefix, "/x", route("first")));
        assert!(!b.add_path(&h, Prefix, "/x/", route("second")));
        assert_eq!(&*b.owner(&h, Prefix, "/x").unwrap().name, "first");
        assert!(b.add_path(&h, Exact, "/x", route("exact")));
    }

    #[test]
    fn rewrites_prefixes_and_exact_paths() {
        let prefix = |from: &str, to: &str| Rewrite { from: from.into(), to: to.into(), exact: false };
        assert_eq!(prefix("/api", "/v2").apply("/api/items?x=1"), "/v2/items?x=1");
        assert_eq!(prefix("/api", "/v2").apply("/api"), "/v2");
        assert_eq!(prefix("/api", "/").apply("/api/items"), "/items");
        assert_eq!(prefix("/api", "/").apply("/api?q"), "/?q");
        assert_eq!(prefix("/", "/app").apply("/x/y"), "/app/x/y");
        assert_eq!(prefix("/api", "/v2/").apply("/api/"), "/v2/");
        let exact = Rewrite { from: "/old".into(), to: "/new".into(), exact: true };
        assert_eq!(exact.apply("/old?a"), "/new?a");
    }

    #[test]
    fn pick_round_robins_and_avoids_failed() {
        let eps: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()];
        let rt = Arc::new(crate::Runtime::default());
        let b = Backend::new("b", BackendState::Endpoints(eps.clone()), &rt);
        let pick = |b: &Backend, avoid| b.pick(&PickInput { avoid, ..PickInput::default() }).map(|p| p.addr);
        let picks: Vec<_> = (0..4).map(|_| pick(&b, None).unwrap()).collect();
        assert_eq!(picks, vec![eps[0], eps[1], eps[0], eps[1]]);
        for _ in 0..4 {
            assert_eq!(pick(&b, Some(eps[0])), Some(eps[1]));
        }
        let single = Backend::new("s", BackendState::Endpoints(vec![eps[0]]), &rt);
        assert_eq!(pick(&single, Some(eps[0])), Some(eps[0]));
        assert_eq!(*Backend::new("e", BackendState::Endpoints(vec![]), &rt).state(), BackendState::NoEndpoints);
    }

    /// New endpoints replace a backend's in place: the next pick is among them, an endpoint that
    /// stays keeps its load, and a backend whose state is not endpoints is left alone.
    #[test]
    fn set_endpoints_moves_picks_and_keeps_endpoint_state() {
        let ep = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let rt = Arc::new(crate::Runtime::default());
        let b = Backend::new("b", BackendState::Endpoints(vec![ep(1), ep(2)]), &rt);
        let held = b.pick(&PickInput::default()).unwrap();
        assert_eq!(held.addr, ep(1));
        assert!(!b.set_endpoints(vec![ep(1), ep(2)]), "the same endpoints");
        assert!(b.set_endpoints(vec![ep(1), ep(3)]));
        assert_eq!(*b.state(), BackendState::Endpoints(vec![ep(1), ep(3)]));
        assert!(b.has_endpoint(ep(3)) && !b.has_endpoint(ep(2)));
        let picks: BTreeSet<SocketAddr> =
            (0..4).map(|_| b.pick(&PickInput { avoid: Some(ep(1)), ..PickInput::default() }).unwrap().addr).collect();
        assert_eq!(picks, BTreeSet::from([ep(3)]));
        // The request still on endpoint 1 counts against it after the change.
        assert_eq!(rt.endpoint(ep(1)).in_flight(), 1);
        drop(held);
        assert_eq!(rt.endpoint(ep(1)).in_flight(), 0);

        assert!(b.set_endpoints(Vec::new()));
        assert_eq!(*b.state(), BackendState::NoEndpoints);
        assert!(b.pick(&PickInput::default()).is_none());
        assert!(b.set_endpoints(vec![ep(4)]));
        assert_eq!(b.pick(&PickInput::default()).unwrap().addr, ep(4));

        let unresolved = Backend::unserved("u", BackendState::Unresolved("no Service".into()));
        assert!(!unresolved.set_endpoints(vec![ep(1)]));
        assert_eq!(*unresolved.state(), BackendState::Unresolved("no Service".into()));
        let external = Backend::new("x", BackendState::External { host: "x.test".into(), port: 80 }, &rt);
        assert!(!external.set_endpoints(vec![ep(1)]));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn segs() -> impl Strategy<Value = Vec<String>> {
            prop::collection::vec("[a-c]{1,2}", 0..5)
        }

        fn join(s: &[String]) -> String {
            format!("/{}", s.join("/"))
        }

        proptest! {
            /// Prefix `/p` matches request path `/r` iff p's segments are a prefix of r's segments.
            #[test]
            fn prefix_matches_iff_segment_prefix(p in segs(), r in segs(), slash in any::<bool>()) {
                let t = table(&[("h", Prefix, &join(&p), "p")]);
                let mut req = join(&r);
                if slash && !r.is_empty() { req.push('/'); }
                let expected = r.len() >= p.len() && r[..p.len()] == p[..];
                prop_assert_eq!(name(t.lookup("h", &req)).is_some(), expected);
            }

            /// With many prefixes, the match is the longest segment-prefix among them.
            #[test]
            fn longest_prefix_wins(ps in prop::collection::btree_set(segs(), 1..6), r in segs()) {
                let mut b = TableBuilder::new();
                for p in &ps {
                    b.add_path(&HostKey::Any, Prefix, &join(p), route(&join(p)));
                }
                let t = b.finish();
                let best = ps.iter().filter(|p| r.len() >= p.len() && r[..p.len()] == p[..]).max_by_key(|p| p.len());
                prop_assert_eq!(name(t.lookup("h", &join(&r))).map(str::to_string), best.map(|p| join(p)));
            }
        }
    }
}
