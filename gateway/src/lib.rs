//! ferry's data plane: the routing table, SNI certificates, endpoint selection, the request
//! lifecycle and the engines that serve it. This crate never imports Kubernetes types; the
//! controller compiles those into a [`RouteTable`] and hands it over through an `ArcSwap`.
//!
//! Modules depend in one direction, lowest first (`tests/layers.rs` checks it):
//! 1. leaves: `host`, `addr`, `shared`, `trace`, `drain`, `safety`, `wire`, `cors`, `external`, `rules`,
//!    `conn` (an accepted client connection);
//! 2. policies and counters: `balance`, `affinity`, `limits`, then `metrics`;
//! 3. the model: `backend`, `certs`, `l4` (L4 routes), then `table`;
//! 4. records and sinks: `record`, `access_log`, `otlp`;
//! 5. the request lifecycle: `http`;
//! 6. servers: `tls` (resolver and handshake); `proxy` (the Pingora engine), `upstream` (the
//!    fast engine's upstream session), `l4_server` (L4Routes, Gateway TCP and TLS ports), then
//!    `udp` (the UDP relay of Gateway UDP listeners); `h1` (the listener app and the fast
//!    engine), `listener` (connection limits and the TLS handshake around an app).

pub mod access_log;
pub mod addr;
pub mod affinity;
pub mod backend;
pub mod backend_tls;
pub mod balance;
pub mod certs;
pub mod client;
pub mod conn;
pub mod cors;
pub mod drain;
pub mod external;
pub mod h1;
pub mod head;
pub mod host;
pub mod http;
pub mod l4;
pub mod l4_server;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod otlp;
pub mod proxy;
pub mod record;
pub mod rules;
pub mod runtime;
pub mod safety;
pub mod sharded;
mod shared;
pub mod table;
pub mod tls;
pub mod trace;
pub mod tunnel;
pub mod udp;
pub mod upstream;
pub mod wire;

pub use backend::{Backend, BackendState, UpstreamProtocol};
pub use l4::{L4Mode, L4Route, L4Status, L4Table, ListenerL4, PortUse};
pub use metrics::Metrics;
pub use runtime::Runtime;
pub use shared::FastMap;
pub use table::{
    HostKey, ListenerKey, Match, PathKind, PortProtocol, PortTable, Route, RouteOptions, RouteTable, TableBuilder,
};
pub use tls::{Cert, CertStore, SniResolver};

/// The live table as shared between the controller (writer) and the data plane (readers).
pub type SharedTable = std::sync::Arc<arc_swap::ArcSwap<RouteTable>>;
