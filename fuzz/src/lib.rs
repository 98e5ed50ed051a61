//! Fuzz targets for ferry's HTTP safety rules (`gateway::safety`), its strict reading of request
//! heads (`gateway::wire`) and the fast path's chunked re-framing (`gateway::h1`), each checked
//! against a differential oracle: a reference written here from the RFCs, or (for `wire`) an
//! independent parser, never the code under test. The targets in fuzz_targets/ call
//! [`request::check`], [`request_wire::check`] and [`reframe::check`]; README.md in this
//! directory says how to run them.

use std::sync::LazyLock;

pub mod chunked;
pub mod path;
pub mod pipe;
pub mod raw_head;
pub mod reframe;
pub mod request;
pub mod request_wire;
pub mod response;

/// ferry's safety rules, compiled from the gateway's own source file (it depends on `http` and
/// Pingora only): the code under test, not a copy.
#[path = "../../gateway/src/safety.rs"]
pub mod safety;

/// ferry's strict reading of HTTP/1 request heads, likewise from the gateway's own file.
#[path = "../../gateway/src/wire.rs"]
pub mod wire;

/// The upstream request head as ferry's lifecycle edits it (read by the safety rules).
#[path = "../../gateway/src/head.rs"]
pub mod head;

/// ferry's HTTP/1 client codec (the fast engine's backend side), from the gateway's own file.
#[path = "../../gateway/src/client.rs"]
pub mod client;

/// One current-thread runtime for every input (Pingora's sessions are async).
pub static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime"));
