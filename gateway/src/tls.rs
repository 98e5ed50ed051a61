//! TLS on ferry's listeners: the rustls resolver that reads certificates by SNI from the live
//! routing table on every handshake (so they change with no listener restart), the handshake
//! itself, and the server name it records per connection.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use crate::certs::{Cert, CertDump, CertStore};
use crate::table::{ListenerKey, RouteTable};

/// rustls certificate resolver over the live table.
#[derive(Debug)]
pub struct SniResolver {
    table: Arc<ArcSwap<RouteTable>>,
    /// A Gateway port's certificates instead of the Ingress ones.
    scope: Option<ListenerKey>,
}

impl SniResolver {
    pub fn new(table: Arc<ArcSwap<RouteTable>>) -> Self {
        SniResolver { table, scope: None }
    }

    /// The resolver of a Gateway HTTPS port: its listeners' certificates.
    pub fn for_gateway(table: Arc<ArcSwap<RouteTable>>, key: ListenerKey) -> Self {
        SniResolver { table, scope: Some(key) }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        let cert = match &self.scope {
            None => table.certs.resolve(hello.server_name()).cloned(),
            Some(key) => table.gateway(key)?.cert(hello.server_name()).cloned(),
        };
        if cert.is_none() {
            tracing::debug!(sni = ?hello.server_name(), "no certificate for SNI; handshake refused");
        }
        cert
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(host: &str, source: &str) -> Cert {
        let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
        Cert { source: source.into(), key: Arc::new(CertifiedKey::new(vec![ck.cert.der().clone()], signer)) }
    }

    fn who(store: &CertStore, sni: Option<&str>) -> Option<Vec<u8>> {
        store.resolve(sni).map(|k| k.cert[0].to_vec())
    }

    #[test]
    fn misdirected_when_sni_and_host_pick_different_certificates() {
        let mut s = CertStore::default();
        s.insert("a.test", cert("a.test", "ns/a"));
        s.insert("b.test", cert("b.test", "ns/b"));
        let w = cert("*.w.test", "ns/w");
        s.insert("*.w.test", w.clone());
        s.insert("x.test", w);
        let cases = [
            ("a.test", "a.test", false),
            ("a.test", "A.TEST:443", false),
            ("a.test", "b.test", true),
            ("a.test", "x.w.test", true),
            ("x.w.test", "y.w.test", false),
            ("x.w.test", "x.test", false),
            ("a.test", "unknown.test", true),
            ("unknown.test", "a.test", true),
            ("unknown.test", "other.test", false),
        ];
        for (sni, host, want) in cases {
            assert_eq!(s.misdirected(sni, host), want, "SNI {sni}, Host {host}");
        }
        s.set_default(cert("d.test", "ns/d"));
        assert!(!s.misdirected("unknown.test", "other.test"), "both on the default certificate");
        assert!(s.misdirected("unknown.test", "a.test"));
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let a = cert("a.example.com", "ns/a");
        let w = cert("*.example.com", "ns/w");
        let d = cert("default.test", "ns/d");
        let mut s = CertStore::default();
        assert!(s.insert("a.example.com", a.clone()));
        assert!(s.insert("*.example.com", w.clone()));
        assert!(!s.insert("a.example.com", w.clone()), "first certificate for a host wins");
        let der = |c: &Cert| Some(c.key.cert[0].to_vec());
        assert_eq!(who(&s, Some("a.example.com")), der(&a));
        assert_eq!(who(&s, Some("A.EXAMPLE.com")), der(&a));
        assert_eq!(who(&s, Some("b.example.com")), der(&w));
        assert_eq!(who(&s, Some("x.b.example.com")), None, "wildcard covers one label");
        assert_eq!(who(&s, None), None);
        s.set_default(d.clone());
        assert_eq!(who(&s, Some("x.b.example.com")), der(&d));
        assert_eq!(who(&s, None), der(&d));
        assert_eq!(s.owner("*.example.com"), Some("ns/w"));
        let hosts: Vec<_> = s.dump().into_iter().map(|c| c.host).collect();
        assert_eq!(hosts, ["(default)", "*.example.com", "a.example.com"]);
    }

    #[test]
    fn resolver_follows_table_swaps() {
        let table = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
        let resolver = SniResolver::new(table.clone());
        assert!(table.load().certs.resolve(Some("a.test")).is_none());
        let mut t = RouteTable::default();
        t.certs.insert("a.test", cert("a.test", "ns/a"));
        table.store(Arc::new(t));
        assert!(resolver.table.load().certs.resolve(Some("a.test")).is_some());
    }
}

/// Facts of a client connection learnt in ferry's TLS handshake, carried to the request phases in
/// the connection's digest. Pingora's `ProxyDigest` (with its `user_data`) describes a CONNECT
/// proxy on upstream connections and is unused on downstream ones; both HTTP/1 and HTTP/2
/// sessions copy it into their `Digest`.
#[derive(Debug, Default)]
pub struct ConnInfo {
    sni: std::sync::OnceLock<Box<str>>,
}

impl ConnInfo {
    /// The TLS server name the client sent, if any.
    pub fn sni(&self) -> Option<&str> {
        self.sni.get().map(|s| &**s)
    }
}

/// What ferry's handshake recorded of the connection of `digest` (TLS listeners only).
pub fn conn_info(digest: &pingora::protocols::Digest) -> Option<Arc<ConnInfo>> {
    conn_info_in(digest.proxy_digest.as_deref()?)
}

/// What ferry's handshake recorded in a connection's proxy digest.
pub fn conn_info_in(digest: &pingora::protocols::raw_connect::ProxyDigest) -> Option<Arc<ConnInfo>> {
    digest.user_data.as_ref()?.downcast_ref::<Arc<ConnInfo>>().cloned()
}

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client closed the connection before sending anything (a TCP health check, a port
    /// probe): not a fault.
    #[error("closed before the handshake")]
    Closed,
    #[error("TLS handshake not completed within {0:?}")]
    Timeout(std::time::Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(Box<pingora::Error>),
}

/// Terminates TLS on an accepted connection within `limit` (a client that stalls its handshake
/// holds a connection like one that stalls its request head). The server name is recorded for
/// [`sni_of`].
pub async fn handshake(
    acceptor: &pingora::listeners::tls::Acceptor,
    mut stream: pingora::protocols::Stream,
    limit: std::time::Duration,
) -> Result<pingora::protocols::Stream, HandshakeError> {
    use pingora::protocols::raw_connect::ProxyDigest;
    use pingora::protocols::Ssl as _;
    let info = Arc::new(ConnInfo::default());
    let head = pingora::http::ResponseHeader::build(200, Some(0)).map_err(HandshakeError::Failed)?;
    stream.set_proxy_digest(ProxyDigest::new(Box::new(head), Some(Box::new(info.clone()))));
    // The listener hands over its accepted connection boxed; the handshake needs it as it is.
    let mut tcp = stream.into_any().downcast::<crate::conn::Conn>().map_err(|_| {
        HandshakeError::Failed(pingora::Error::explain(pingora::ErrorType::InternalError, "not a TCP stream"))
    })?;
    let started = std::time::Instant::now();
    let mut first = [0u8; 1];
    match pingora::time::timeout(limit, tokio::io::AsyncReadExt::read(&mut *tcp, &mut first)).await {
        Err(_) => return Err(HandshakeError::Timeout(limit)),
        Ok(Ok(0) | Err(_)) => return Err(HandshakeError::Closed),
        Ok(Ok(_)) => tcp.rewind(&first),
    }
    let rest = limit.saturating_sub(started.elapsed());
    let tls = match pingora::time::timeout(rest, acceptor.tls_handshake(*tcp)).await {
        Err(_) => return Err(HandshakeError::Timeout(limit)),
        Ok(Err(e)) => return Err(HandshakeError::Failed(e)),
        Ok(Ok(tls)) => tls,
    };
    if let Some(name) = tls.get_ssl().and_then(|t| t.server_name()) {
        let _ = info.sni.set(name.into());
    }
    Ok(Box::new(tls))
}
