//! ferry's data plane: the routing table, SNI certificates, endpoint selection and the Pingora
//! HTTP proxy. This crate never imports Kubernetes types; the controller compiles those into a
//! [`RouteTable`] and hands it over through an `ArcSwap`.

pub mod access_log;
pub mod affinity;
pub mod balance;
pub mod cors;
pub mod drain;
pub mod external;
pub mod h1;
pub mod l4;
pub mod limits;
pub mod metrics;
pub mod otlp;
pub mod proxy;
pub mod safety;
mod shared;
pub mod table;
pub mod tls;
pub mod trace;

pub use l4::{L4Route, L4Status, L4Table, PortUse};
pub use metrics::Metrics;
pub use table::{
    Backend, BackendState, HostKey, Match, PathKind, Route, RouteOptions, RouteTable, TableBuilder, UpstreamProtocol,
};
pub use tls::{Cert, CertStore, SniResolver};

/// The live table as shared between the controller (writer) and the data plane (readers).
pub type SharedTable = std::sync::Arc<arc_swap::ArcSwap<RouteTable>>;
