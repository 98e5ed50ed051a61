//! ExternalName backends: a DNS name resolved when requests need it, cached briefly.
//!
//! Only compiled into a table when the gateway runs with `--allow-external-name`: otherwise any
//! user who may create a Service could point the gateway at any host, including internal ones
//! the gateway can reach and they cannot.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a resolution is reused.
const TTL: Duration = Duration::from_secs(30);
/// Names kept in the cache at most.
const MAX_NAMES: usize = 4096;

type Cache = Mutex<HashMap<(Box<str>, u16), (Instant, Arc<[SocketAddr]>)>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The addresses of `host:port`, IPv4 first (sorted, so picks are stable between lookups).
pub async fn resolve(host: &str, port: u16) -> std::io::Result<Arc<[SocketAddr]>> {
    let key = (Box::from(host), port);
    if let Some((at, addrs)) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        if at.elapsed() < TTL {
            return Ok(addrs.clone());
        }
    }
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    addrs.sort_by_key(|a| (a.is_ipv6(), *a));
    addrs.dedup();
    if addrs.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host} has no addresses")));
    }
    let addrs: Arc<[SocketAddr]> = addrs.into();
    let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= MAX_NAMES {
        cache.retain(|_, (at, _)| at.elapsed() < TTL);
    }
    cache.insert(key, (Instant::now(), addrs.clone()));
    Ok(addrs)
}
