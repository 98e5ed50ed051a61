//! Host names as requests and rules carry them: normalised for lookup without allocating.

use std::collections::HashMap;

/// Longest host name we look up (RFC 1035 limit is 253; the rest is port and slack).
pub const MAX_HOST_LEN: usize = 300;

/// Lower-cases `host` into `buf` and strips the port and a trailing dot. Returns `None` for a
/// host that is too long or not ASCII (it cannot match a rule; rules are validated ASCII).
pub fn normalize_host<'b>(host: &str, buf: &'b mut [u8; MAX_HOST_LEN]) -> Option<&'b str> {
    let host = if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: `[::1]:8080` → `[::1]`.
        let end = rest.find(']')?;
        &host[..end + 2]
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    lowercase_name(host, buf)
}

/// Lower-cases a DNS name (no port) into `buf` without allocating, dropping a trailing dot.
pub fn lowercase_name<'b>(name: &str, buf: &'b mut [u8; MAX_HOST_LEN]) -> Option<&'b str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() > buf.len() || !name.is_ascii() {
        return None;
    }
    let out = &mut buf[..name.len()];
    out.copy_from_slice(name.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

/// A map [`exact_or_wildcard`] can look names up in.
pub trait NameMap<T> {
    fn get_name(&self, name: &str) -> Option<&T>;
}

impl<K, T, S> NameMap<T> for HashMap<K, T, S>
where
    K: std::borrow::Borrow<str> + std::hash::Hash + Eq,
    S: std::hash::BuildHasher,
{
    fn get_name(&self, name: &str) -> Option<&T> {
        self.get(name)
    }
}

impl<T> NameMap<T> for crate::sharded::ShardedMap<T> {
    fn get_name(&self, name: &str) -> Option<&T> {
        self.get(name)
    }
}

/// Exact name first, then the one-label wildcard: `*.example.com` (stored under `example.com`)
/// takes `a.example.com`, not `example.com` and not `a.b.example.com`.
pub fn exact_or_wildcard<'a, T>(
    exact: &'a impl NameMap<T>,
    wildcard: &'a impl NameMap<T>,
    name: &str,
) -> Option<&'a T> {
    exact.get_name(name).or_else(|| wildcard.get_name(name.split_once('.')?.1))
}
