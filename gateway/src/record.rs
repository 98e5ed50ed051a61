//! The record of a finished request, as the access log and the OTLP exporter read it (besides
//! the request head). Written by [`crate::http::Exchange::finish`].

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::table::Route;
use crate::trace::TraceContext;

pub struct Done<'a> {
    pub client: Option<IpAddr>,
    /// The status sent to the client (0: none was sent).
    pub status: u16,
    /// Response body bytes sent to the client.
    pub bytes: usize,
    pub started: Instant,
    /// The endpoint of the last upstream attempt.
    pub upstream: Option<SocketAddr>,
    /// When the (last) upstream attempt was sent.
    pub upstream_sent: Option<Instant>,
    pub route: Option<&'a Route>,
    pub request_id: &'a str,
    pub trace: Option<&'a TraceContext>,
}

impl Done<'_> {
    pub fn trace_id(&self) -> &str {
        self.trace.map_or("", |t| t.trace_id())
    }
}
