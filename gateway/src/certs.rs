//! Certificates by host name: exact host, then the one-label wildcard, then the default
//! certificate (`--default-tls-secret`), which also serves clients that send no SNI. The store
//! lives inside `RouteTable`, so certificates change exactly when routes do.

use std::sync::Arc;

use rustls::sign::CertifiedKey;
use serde::Serialize;

use crate::host::{exact_or_wildcard, lowercase_name, normalize_host, MAX_HOST_LEN};
use crate::sharded::ShardedMap;

/// A certificate and where it came from (`namespace/secret`), for dumps and logs.
#[derive(Debug, Clone)]
pub struct Cert {
    pub source: Arc<str>,
    pub key: Arc<CertifiedKey>,
}

/// Cloning is shallow: names and keys are shared.
#[derive(Debug, Default, Clone)]
pub struct CertStore {
    exact: ShardedMap<Cert>,
    /// Keyed by the suffix after `*.`.
    wildcard: ShardedMap<Cert>,
    default: Option<Cert>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CertDump {
    pub host: String,
    pub secret: String,
}

impl CertStore {
    /// Adds a certificate for a lower-case host or `*.` wildcard; the first one for a host
    /// wins and `false` is returned for later ones.
    pub fn insert(&mut self, host: &str, cert: Cert) -> bool {
        let (map, key) = match host.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix),
            None => (&mut self.exact, host),
        };
        if map.contains_key(key) {
            return false;
        }
        map.insert(key, cert);
        true
    }

    /// Who holds the certificate for `host`, if anyone.
    pub fn owner(&self, host: &str) -> Option<&str> {
        match host.strip_prefix("*.") {
            Some(suffix) => self.wildcard.get(suffix),
            None => self.exact.get(host),
        }
        .map(|c| &*c.source)
    }

    /// Makes `host`'s certificate (lower-case, or a `*.` wildcard) what it is in `from`.
    pub fn copy_from(&mut self, from: &CertStore, host: &str) {
        let (map, theirs, key) = match host.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, &from.wildcard, suffix),
            None => (&mut self.exact, &from.exact, host),
        };
        match theirs.get_key_value(key) {
            Some((k, cert)) => {
                map.insert_key(k.clone(), cert.clone());
            }
            None => {
                map.remove(key);
            }
        }
    }

    pub fn set_default(&mut self, cert: Cert) {
        self.default = Some(cert);
    }

    /// The certificate for a client's SNI (any case; `None` = no SNI sent).
    pub fn resolve(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let mut buf = [0u8; MAX_HOST_LEN];
        let found = sni
            .and_then(|name| lowercase_name(name, &mut buf))
            .and_then(|name| exact_or_wildcard(&self.exact, &self.wildcard, name));
        found.or(self.default.as_ref()).map(|c| &c.key)
    }

    /// Whether a request for `host` (as in a Host header) on a connection whose TLS server name
    /// was `sni` is misdirected: the two names select different certificates, so the client
    /// verified a certificate that does not vouch for the host it asks for (answered 421).
    /// Names that share a certificate (a wildcard, a SAN list) may share a connection, as HTTP/2
    /// clients do.
    pub fn misdirected(&self, sni: &str, host: &str) -> bool {
        let mut buf = [0u8; MAX_HOST_LEN];
        let Some(host) = normalize_host(host, &mut buf) else { return false };
        if host.eq_ignore_ascii_case(sni) {
            return false;
        }
        let for_host = exact_or_wildcard(&self.exact, &self.wildcard, host).or(self.default.as_ref()).map(|c| &c.key);
        match (self.resolve(Some(sni)), for_host) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (a, b) => a.is_some() != b.is_some(),
        }
    }

    /// Whether `host` (as in a Host header: any case, maybe with a port) has a certificate of
    /// its own (not the default one).
    pub fn covers(&self, host: &str) -> bool {
        let mut buf = [0u8; MAX_HOST_LEN];
        normalize_host(host, &mut buf)
            .is_some_and(|name| exact_or_wildcard(&self.exact, &self.wildcard, name).is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }

    pub fn dump(&self) -> Vec<CertDump> {
        let mut out: Vec<CertDump> = self
            .exact
            .iter()
            .map(|(h, c)| CertDump { host: h.to_string(), secret: c.source.to_string() })
            .chain(self.wildcard.iter().map(|(h, c)| CertDump { host: format!("*.{h}"), secret: c.source.to_string() }))
            .chain(self.default.iter().map(|c| CertDump { host: "(default)".into(), secret: c.source.to_string() }))
            .collect();
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }
}
