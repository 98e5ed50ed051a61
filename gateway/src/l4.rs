//! L4 routes (the data structures; `l4_server` and `udp` serve them): the TCP streams and TLS
//! passthrough of the L4Routes on the ports declared with `--l4-ports` ([`L4Table`]), and the
//! L4 side of Gateway API listeners ([`ListenerL4`]: TLSRoutes, TCPRoutes, UDPRoutes).
//!
//! An `--l4-ports` port serves either one plain route (every connection goes to its backend) or
//! any number of passthrough routes told apart by the SNI of the client's TLS ClientHello, which
//! is read and parsed (by rustls, never answered) and then forwarded unchanged: the client's TLS
//! session is with the pod. A Gateway listener is plain (TCP, UDP), passthrough or terminate
//! (TLS ended here with the listener's certificate, the plaintext relayed); its TLS routes are
//! found by server name with Gateway API wildcards (`*.example.com` takes any number of labels,
//! the most specific name wins). Streams go straight to pod endpoints chosen like HTTP requests
//! (round-robin or client-IP affinity, another endpoint when a connect fails), are relayed both
//! ways with half-close passed on, and end after `idle_timeout` without traffic in either
//! direction. A route with several backends picks one per stream (or UDP flow) by weight.
//!
//! Like the HTTP routes, the L4 routes live in the `RouteTable` and change with it; a stream
//! keeps the route it started with.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::backend::Backend;
use crate::host::{exact_or_wildcard, lowercase_name, MAX_HOST_LEN};

/// One L4 route as served (an L4Route, or a Gateway API TLS/TCP/UDP route): where its streams
/// go and how long they may idle.
#[derive(Debug)]
pub struct L4Route {
    /// `namespace/name` of the route.
    pub name: Arc<str>,
    /// Backends with their cumulative weights (strictly increasing; the last is the total > 0).
    backends: Box<[(u32, Arc<Backend>)]>,
    pub idle_timeout: Duration,
}

impl L4Route {
    /// A route to one backend.
    pub fn new(name: Arc<str>, backend: Arc<Backend>, idle_timeout: Duration) -> L4Route {
        L4Route { name, backends: Box::new([(1, backend)]), idle_timeout }
    }

    /// A route to several backends by weight (backends of weight 0 take nothing); `None` when
    /// no weight is positive.
    pub fn weighted(name: Arc<str>, weighted: Vec<(u32, Arc<Backend>)>, idle_timeout: Duration) -> Option<L4Route> {
        let mut total = 0u32;
        let mut backends = Vec::with_capacity(weighted.len());
        for (w, b) in weighted {
            if w > 0 {
                total = total.saturating_add(w);
                backends.push((total, b));
            }
        }
        if backends.is_empty() {
            return None;
        }
        Some(L4Route { name, backends: backends.into(), idle_timeout })
    }

    /// The backend of a new stream or flow: by weight, at random.
    pub fn backend(&self) -> &Arc<Backend> {
        if let [(_, only)] = &*self.backends {
            return only;
        }
        let total = self.backends.last().map_or(1, |(w, _)| *w);
        let n = fastrand::u32(..total);
        self.backends.iter().find(|(w, _)| n < *w).map_or(&self.backends[0].1, |(_, b)| b)
    }

    /// Every backend with its own weight.
    pub fn backends(&self) -> impl Iterator<Item = (u32, &Arc<Backend>)> {
        let mut prev = 0;
        self.backends.iter().map(move |(w, b)| {
            let weight = w - prev;
            prev = *w;
            (weight, b)
        })
    }

    fn dump_backends(&self) -> Vec<L4BackendDump> {
        self.backends()
            .map(|(weight, b)| L4BackendDump { backend: b.name.to_string(), weight, state: b.state().clone() })
            .collect()
    }
}

/// How a Gateway listener's connections are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum L4Mode {
    /// Not at L4: HTTP or HTTPS, served by the HTTP engines.
    #[default]
    Http,
    /// TLS passed through: the ClientHello's server name picks a route; the pod terminates TLS.
    Passthrough,
    /// TLS terminated here with the listener's certificate; the plaintext goes to the route picked
    /// by the server name.
    Terminate,
    /// TCP or UDP: every connection (or datagram flow) goes to the listener's route.
    Plain,
}

/// The L4 routes of one Gateway listener: the route of a TCP or UDP listener, or the TLS routes
/// of a TLS listener by server name (exact, then the most specific wildcard, then a route
/// without hostnames). The controller decides which route owns a name (the oldest).
#[derive(Debug, Default)]
pub struct ListenerL4 {
    pub mode: L4Mode,
    plain: Option<Arc<L4Route>>,
    exact: HashMap<Box<str>, Arc<L4Route>>,
    /// `*.example.com` stored under `example.com`; matches any number of labels before it.
    wildcards: HashMap<Box<str>, Arc<L4Route>>,
    any: Option<Arc<L4Route>>,
}

impl ListenerL4 {
    pub fn new(mode: L4Mode) -> Self {
        ListenerL4 { mode, ..ListenerL4::default() }
    }

    /// Serves every connection of a plain listener with `route`, unless it has one (`false`).
    pub fn set_plain(&mut self, route: Arc<L4Route>) -> bool {
        if self.plain.is_some() {
            return false;
        }
        self.plain = Some(route);
        true
    }

    /// Serves TLS connections whose server name is `host` (lower-case, `*.` wildcards; `None`:
    /// any name) with `route`, unless the name has a route already (`false`).
    pub fn add_host(&mut self, host: Option<&str>, route: Arc<L4Route>) -> bool {
        let slot = match host {
            None => {
                if self.any.is_some() {
                    return false;
                }
                self.any = Some(route);
                return true;
            }
            Some(h) => match h.strip_prefix("*.") {
                Some(suffix) => self.wildcards.entry(suffix.into()),
                None => self.exact.entry(h.into()),
            },
        };
        match slot {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(route);
                true
            }
        }
    }

    /// The route of a connection: the plain route, or the one for its server name (any case).
    pub fn route(&self, sni: Option<&str>) -> Option<&Arc<L4Route>> {
        if let Some(r) = &self.plain {
            return Some(r);
        }
        let mut buf = [0u8; MAX_HOST_LEN];
        let Some(name) = sni.and_then(|s| lowercase_name(s, &mut buf)) else { return self.any.as_ref() };
        if let Some(r) = self.exact.get(name) {
            return Some(r);
        }
        let mut rest = name;
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(r) = self.wildcards.get(suffix) {
                return Some(r);
            }
            rest = suffix;
        }
        self.any.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.plain.is_none() && self.exact.is_empty() && self.wildcards.is_empty() && self.any.is_none()
    }

    pub fn dump(&self) -> Vec<ListenerL4Dump> {
        let mut out = Vec::new();
        let mut add = |sni: Option<String>, r: &L4Route| {
            out.push(ListenerL4Dump {
                sni,
                route: r.name.to_string(),
                backends: r.dump_backends(),
                idle_timeout_seconds: r.idle_timeout.as_secs(),
            })
        };
        if let Some(r) = &self.plain {
            add(None, r);
        }
        for (name, r) in &self.exact {
            add(Some(name.to_string()), r);
        }
        for (suffix, r) in &self.wildcards {
            add(Some(format!("*.{suffix}")), r);
        }
        if let Some(r) = &self.any {
            add(Some("*".into()), r);
        }
        out.sort_by(|a, b| a.sni.cmp(&b.sni));
        out
    }
}

/// A Gateway listener's L4 route as `/routes` shows it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ListenerL4Dump {
    /// The server name it serves (`*`: any); absent for TCP and UDP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    pub route: String,
    pub backends: Vec<L4BackendDump>,
    pub idle_timeout_seconds: u64,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct L4BackendDump {
    pub backend: String,
    pub weight: u32,
    #[serde(flatten)]
    pub state: crate::backend::BackendState,
}

/// The routes of one gateway port.
#[derive(Debug, Default)]
struct L4Port {
    plain: Option<Arc<L4Route>>,
    sni: HashMap<Box<str>, Arc<L4Route>>,
    /// `*.example.com` stored under `example.com`.
    sni_wildcard: HashMap<Box<str>, Arc<L4Route>>,
}

/// Whether an L4Route is served, and why not; the controller writes it into the object's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L4Status {
    /// `namespace/name`.
    pub route: String,
    pub port: i32,
    /// `Accepted` condition.
    pub accepted: bool,
    /// `ResolvedRefs` condition: the backend Service and port exist.
    pub resolved: bool,
    /// CamelCase reason of the condition that is false (or `Accepted`).
    pub reason: String,
    pub message: String,
}

/// Every L4 route of a table, by gateway port. (What each L4Route's status should say is the
/// build's output beside the table, not part of it.)
#[derive(Debug, Default)]
pub struct L4Table {
    ports: HashMap<u16, L4Port>,
}

/// What currently holds a port: one plain route, or SNI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortUse<'a> {
    Free,
    Plain(&'a str),
    Sni,
}

impl L4Table {
    pub fn port_use(&self, port: u16) -> PortUse<'_> {
        match self.ports.get(&port) {
            None => PortUse::Free,
            Some(p) => match &p.plain {
                Some(r) => PortUse::Plain(&r.name),
                None if p.sni.is_empty() && p.sni_wildcard.is_empty() => PortUse::Free,
                None => PortUse::Sni,
            },
        }
    }

    /// The route that serves every connection on `port`, if the port has a plain route.
    pub fn plain(&self, port: u16) -> Option<&Arc<L4Route>> {
        self.ports.get(&port)?.plain.as_ref()
    }

    /// The passthrough route on `port` for a ClientHello's server name (any case).
    pub fn by_sni(&self, port: u16, sni: &str) -> Result<&Arc<L4Route>, String> {
        let mut buf = [0u8; MAX_HOST_LEN];
        let name = lowercase_name(sni, &mut buf).ok_or("unusable SNI")?;
        let p = self.ports.get(&port).ok_or("no L4Route on this port")?;
        exact_or_wildcard(&p.sni, &p.sni_wildcard, name).ok_or_else(|| format!("no route for SNI {name}"))
    }

    /// The route that already serves `sni` (lower-case; `*.x` for a wildcard) on `port`.
    pub fn sni_owner(&self, port: u16, sni: &str) -> Option<&str> {
        let p = self.ports.get(&port)?;
        let r = match sni.strip_prefix("*.") {
            Some(suffix) => p.sni_wildcard.get(suffix),
            None => p.sni.get(sni),
        };
        r.map(|r| &*r.name)
    }

    /// Serves every connection on `port` with `route`. The caller checked `port_use` is `Free`.
    pub fn add_plain(&mut self, port: u16, route: Arc<L4Route>) {
        self.ports.entry(port).or_default().plain = Some(route);
    }

    /// Serves TLS connections on `port` whose SNI is one of `names` (lower-case, validated;
    /// `*.x` for one-label wildcards). The caller checked that none is taken.
    pub fn add_sni(&mut self, port: u16, names: &[String], route: Arc<L4Route>) {
        let p = self.ports.entry(port).or_default();
        for name in names {
            match name.strip_prefix("*.") {
                Some(suffix) => p.sni_wildcard.insert(suffix.into(), route.clone()),
                None => p.sni.insert(name.as_str().into(), route.clone()),
            };
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    pub fn dump(&self) -> Vec<L4Dump> {
        let mut out = Vec::new();
        for (port, p) in &self.ports {
            let mut add = |sni: Option<String>, r: &L4Route| {
                out.push(L4Dump {
                    port: *port,
                    sni,
                    route: r.name.to_string(),
                    backend: r.backends[0].1.name.to_string(),
                    state: r.backends[0].1.state().clone(),
                    idle_timeout_seconds: r.idle_timeout.as_secs(),
                })
            };
            if let Some(r) = &p.plain {
                add(None, r);
            }
            for (name, r) in &p.sni {
                add(Some(name.to_string()), r);
            }
            for (name, r) in &p.sni_wildcard {
                add(Some(format!("*.{name}")), r);
            }
        }
        out.sort_by(|a, b| (a.port, &a.sni).cmp(&(b.port, &b.sni)));
        out
    }
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct L4Dump {
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    pub route: String,
    pub backend: String,
    #[serde(flatten)]
    pub state: crate::backend::BackendState,
    pub idle_timeout_seconds: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendState;

    fn route(name: &str) -> Arc<L4Route> {
        let backend = Arc::new(Backend::new(format!("{name}-svc"), BackendState::NoEndpoints, &Default::default()));
        Arc::new(L4Route::new(name.into(), backend, Duration::from_secs(1)))
    }

    fn served(l: &ListenerL4, sni: Option<&str>) -> Option<String> {
        l.route(sni).map(|r| r.name.to_string())
    }

    #[test]
    fn tls_routes_by_server_name_most_specific_first() {
        let mut l = ListenerL4::new(L4Mode::Passthrough);
        assert!(l.add_host(Some("abc.example.com"), route("exact")));
        assert!(l.add_host(Some("*.example.com"), route("wild")));
        assert!(l.add_host(Some("*.com"), route("wider")));
        assert!(!l.add_host(Some("abc.example.com"), route("newer")), "the first route keeps a name");
        for (sni, want) in [
            ("abc.example.com", Some("exact")),
            ("ABC.Example.COM.", Some("exact")),
            ("other.example.com", Some("wild")),
            ("a.b.example.com", Some("wild")),
            ("example.com", Some("wider")),
            ("x.org", None),
        ] {
            assert_eq!(served(&l, Some(sni)).as_deref(), want, "{sni}");
        }
        assert_eq!(served(&l, None), None, "no server name, no route without hostnames");
        assert!(l.add_host(None, route("any")));
        assert_eq!(served(&l, Some("x.org")).as_deref(), Some("any"));
        assert_eq!(served(&l, None).as_deref(), Some("any"));
        let names: Vec<_> = l.dump().into_iter().map(|d| d.sni.unwrap_or_default()).collect();
        assert_eq!(names, ["*", "*.com", "*.example.com", "abc.example.com"]);
    }

    #[test]
    fn plain_listeners_serve_the_first_route() {
        let mut l = ListenerL4::new(L4Mode::Plain);
        assert!(l.is_empty());
        assert!(l.set_plain(route("older")));
        assert!(!l.set_plain(route("newer")));
        assert_eq!(served(&l, Some("anything")).as_deref(), Some("older"));
        assert_eq!(served(&l, None).as_deref(), Some("older"));
    }

    #[test]
    fn weighted_backends() {
        let b = |n: &str| Arc::new(Backend::new(n, BackendState::NoEndpoints, &Default::default()));
        assert!(L4Route::weighted("r".into(), vec![(0, b("a"))], Duration::ZERO).is_none());
        let r = L4Route::weighted("r".into(), vec![(70, b("a")), (0, b("z")), (30, b("b"))], Duration::ZERO).unwrap();
        let weights: Vec<(u32, String)> = r.backends().map(|(w, b)| (w, b.name.to_string())).collect();
        assert_eq!(weights, [(70, "a".to_string()), (30, "b".to_string())], "weight 0 takes nothing");
        let mut a = 0;
        for _ in 0..10_000 {
            if &*r.backend().name == "a" {
                a += 1;
            }
        }
        assert!((6_500..=7_500).contains(&a), "{a} of 10000 by 70/30");
    }
}
