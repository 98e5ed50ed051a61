//! L4 routes: TCP streams and TLS passthrough on the gateway ports declared with `--l4-ports`
//! (the data structure; [`crate::l4_server`] serves it).
//!
//! A port serves either one plain route (every connection goes to its backend) or any number of
//! passthrough routes told apart by the SNI of the client's TLS ClientHello, which is read and
//! parsed (by rustls, never answered) and then forwarded unchanged: the client's TLS session is
//! with the pod. Streams go straight to pod endpoints chosen like HTTP requests (round-robin or
//! client-IP affinity, another endpoint when a connect fails), are relayed both ways with
//! half-close passed on, and end after `idle_timeout` without traffic in either direction.
//!
//! Like the HTTP routes, the L4 routes live in the `RouteTable` and change with it; a stream
//! keeps the route it started with.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::backend::Backend;
use crate::host::{exact_or_wildcard, lowercase_name, MAX_HOST_LEN};

/// One L4Route as served: where its streams go and how long they may idle.
#[derive(Debug)]
pub struct L4Route {
    /// `namespace/name` of the L4Route.
    pub name: Arc<str>,
    pub backend: Arc<Backend>,
    pub idle_timeout: Duration,
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

/// Every L4 route of a table, by gateway port, and the status of every L4Route object.
#[derive(Debug, Default)]
pub struct L4Table {
    ports: HashMap<u16, L4Port>,
    status: Vec<L4Status>,
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

    pub fn set_status(&mut self, status: L4Status) {
        self.status.push(status);
    }

    pub fn status(&self) -> &[L4Status] {
        &self.status
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty() && self.status.is_empty()
    }

    pub fn dump(&self) -> Vec<L4Dump> {
        let mut out = Vec::new();
        for (port, p) in &self.ports {
            let mut add = |sni: Option<String>, r: &L4Route| {
                out.push(L4Dump {
                    port: *port,
                    sni,
                    route: r.name.to_string(),
                    backend: r.backend.name.to_string(),
                    state: r.backend.state.clone(),
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
