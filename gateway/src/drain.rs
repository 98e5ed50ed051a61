//! Graceful shutdown bookkeeping: whether the gateway is draining, and how much work is in
//! flight (HTTP requests on both engines, L4 streams).
//!
//! On SIGTERM the binary sets `draining` (readiness turns 503 and HTTP/1.1 responses carry
//! `Connection: close`, so clients and load balancers move away), keeps accepting for the
//! shutdown delay, then stops the listeners and exits as soon as nothing is in flight (or when
//! the drain timeout ends).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static DRAINING: AtomicBool = AtomicBool::new(false);
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

pub fn start_draining() {
    DRAINING.store(true, Ordering::SeqCst);
}

pub fn is_draining() -> bool {
    DRAINING.load(Ordering::Relaxed)
}

/// Requests and L4 streams in flight.
pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::SeqCst)
}

/// Counts one request or stream as in flight until dropped.
#[derive(Debug)]
pub struct Work(());

impl Work {
    pub fn start() -> Work {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        Work(())
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}
