//! Fuzz targets for ferry's HTTP safety rules (`gateway::safety`) and the fast path's chunked
//! re-framing (`gateway::h1`), each checked against a differential oracle written here from the
//! RFCs, independently of the code under test. The targets in fuzz_targets/ call [`request::check`]
//! and [`reframe::check`]; README.md in this directory says how to run them.

use std::sync::LazyLock;

pub mod chunked;
pub mod head;
pub mod path;
pub mod pipe;
pub mod reframe;
pub mod request;

/// ferry's safety rules, compiled from the gateway's own source file (it depends on `http` and
/// Pingora only): the code under test, not a copy.
#[path = "../../gateway/src/safety.rs"]
pub mod safety;

/// One current-thread runtime for every input (Pingora's sessions are async).
pub static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime"));
