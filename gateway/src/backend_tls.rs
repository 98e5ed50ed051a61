//! TLS to a backend's pods as a BackendTLSPolicy says: the policy's trust anchors (a CA bundle,
//! or the system's roots), its `hostname` as SNI, and the certificate's identity checked against
//! that hostname or, when the policy lists `subjectAltNames`, against those names only.
//!
//! Both HTTP engines reach pods through Pingora's connector. Its TLS verifies one name (the
//! SNI) against a CA list rebuilt for every connection, which cannot express SAN validation, so a
//! policy's backends are plaintext peers to Pingora whose L4 connect (`custom_l4`) opens TCP and
//! does the handshake here, with a client configuration built once per policy. The peer's
//! `group_key` carries the policy's identity: pooled connections are never shared between
//! policies, nor with plaintext peers of the same address.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::{Error, ErrorType, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Where a policy's trust comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TrustAnchors {
    /// The platform's trusted roots (`wellKnownCACertificates: System`).
    System,
    /// PEM certificates (the `ca.crt` of the referenced ConfigMaps or Secrets, concatenated).
    Pem(Vec<u8>),
}

/// A subject alternative name the backend's certificate may hold (any one suffices).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubjectAltName {
    /// A DNS name; the certificate's own wildcard names match as usual.
    Dns(String),
    /// A URI (a SPIFFE ID, say), compared exactly.
    Uri(String),
}

/// A compiled BackendTLSPolicy: what every connection to its backends' pods uses.
pub struct BackendTls {
    /// `namespace/name` of the policy, for logs and `/routes`.
    pub policy: Arc<str>,
    hostname: ServerName<'static>,
    /// ALPN `http/1.1`, and `h2` for backends spoken to in HTTP/2.
    http1: Arc<ClientConfig>,
    http2: Arc<ClientConfig>,
    group: u64,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls").field("policy", &self.policy).field("hostname", &self.hostname).finish()
    }
}

impl BackendTls {
    /// Compiles a policy; `Err` says why its trust anchors or names cannot be used (the
    /// backend then answers 5xx: it never falls back to an unverified connection).
    pub fn new(
        policy: &str,
        anchors: &TrustAnchors,
        hostname: &str,
        sans: Vec<SubjectAltName>,
    ) -> Result<Self, String> {
        let server_name = ServerName::try_from(hostname.to_string())
            .map_err(|_| format!("hostname {hostname:?} is not a DNS name"))?;
        if !matches!(server_name, ServerName::DnsName(_)) {
            return Err(format!("hostname {hostname:?} must be a DNS name, not an IP address"));
        }
        for san in &sans {
            if let SubjectAltName::Dns(name) = san {
                ServerName::try_from(name.as_str())
                    .map_err(|_| format!("subjectAltName {name:?} is not a DNS name"))?;
            }
        }
        let roots = match anchors {
            TrustAnchors::System => system_roots()?,
            TrustAnchors::Pem(pem) => Arc::new(roots_from_pem(pem)?),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| format!("the CA certificates cannot be used: {e}"))?;
        let verifier = Arc::new(Verifier { chain, sans: sans.clone() });
        let config = |alpn: &[u8]| -> Result<Arc<ClientConfig>, String> {
            let mut c = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth();
            c.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(c))
        };
        let mut h = DefaultHasher::new();
        (policy, anchors, hostname, &sans).hash(&mut h);
        Ok(BackendTls {
            policy: policy.into(),
            hostname: server_name,
            http1: config(b"http/1.1")?,
            http2: config(b"h2")?,
            // 0 is a plaintext peer's group: never collide with it.
            group: h.finish() | 1,
        })
    }

    /// The SNI sent to the pods.
    pub fn hostname(&self) -> &str {
        match &self.hostname {
            ServerName::DnsName(n) => n.as_ref(),
            _ => "",
        }
    }

    /// The pool group of this policy's connections (see the module comment).
    pub fn group(&self) -> u64 {
        self.group
    }

    /// The verified handshake over `tcp`: peers' L4 connect, and mirrored requests (which do not
    /// go through Pingora's connector).
    /// `http2`: offer ALPN `h2` instead of `http/1.1`.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        http2: bool,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let config = if http2 { &self.http2 } else { &self.http1 };
        tokio_rustls::TlsConnector::from(config.clone()).connect(self.hostname.clone(), tcp).await
    }

    /// The L4 connector of a peer: TCP within `timeout`, then the handshake within `timeout`.
    pub fn connector(self: &Arc<Self>, http2: bool, timeout: Duration) -> Arc<dyn L4Connect + Send + Sync> {
        Arc::new(Connect { tls: self.clone(), http2, timeout })
    }
}

/// How many CA certificates a PEM bundle holds (`Err`: none usable, and why).
pub fn ca_certificates(pem: &[u8]) -> Result<usize, String> {
    roots_from_pem(pem).map(|r| r.len())
}

/// Roots from PEM text: every certificate in it; at least one must be usable.
fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let mut bad = 0;
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        if !cert.is_ok_and(|der| roots.add(der).is_ok()) {
            bad += 1;
        }
    }
    if roots.is_empty() {
        return Err(if bad > 0 {
            "ca.crt holds no usable CA certificate".to_string()
        } else {
            "ca.crt holds no PEM certificate".to_string()
        });
    }
    Ok(roots)
}

/// The platform's roots, read once.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                Err("no system CA certificates were found".to_string())
            } else {
                Ok(Arc::new(roots))
            }
        })
        .clone()
}

/// Chain validation by webpki against the policy's roots; the name checked is the hostname, or
/// (when the policy lists subject alternative names) any one of those instead.
#[derive(Debug)]
struct Verifier {
    chain: Arc<WebPkiServerVerifier>,
    sans: Vec<SubjectAltName>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let checked = self.chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        if self.sans.is_empty() {
            return checked;
        }
        match checked {
            // The chain is valid; the hostname's match or mismatch does not count.
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let found = self.sans.iter().any(|san| match san {
            SubjectAltName::Dns(name) => {
                ServerName::try_from(name.as_str()).is_ok_and(|n| cert.verify_is_valid_for_subject_name(&n).is_ok())
            }
            SubjectAltName::Uri(uri) => cert.valid_uri_names().any(|u| u == uri),
        });
        if found {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// A policy's L4 connect for one peer.
#[derive(Debug)]
struct Connect {
    tls: Arc<BackendTls>,
    http2: bool,
    timeout: Duration,
}

#[async_trait::async_trait]
impl L4Connect for Connect {
    async fn connect(&self, addr: &PeerAddr) -> Result<Stream> {
        let PeerAddr::Inet(addr) = addr else {
            return Error::e_explain(ErrorType::ConnectError, "BackendTLSPolicy peers are TCP addresses");
        };
        let tcp = match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
            Err(_) => return Error::e_explain(ErrorType::ConnectTimedout, format!("connecting to {addr}")),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Error::e_because(ErrorType::ConnectRefused, format!("connecting to {addr}"), e)
            }
            Ok(Err(e)) => return Error::e_because(ErrorType::ConnectError, format!("connecting to {addr}"), e),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        match tokio::time::timeout(self.timeout, self.tls.handshake(tcp, self.http2)).await {
            Err(_) => Error::e_explain(ErrorType::ConnectTimedout, format!("TLS handshake with {addr}")),
            Ok(Err(e)) => Error::e_because(
                ErrorType::TLSHandshakeFailure,
                format!("TLS to {addr} (BackendTLSPolicy {}, hostname {})", self.tls.policy, self.tls.hostname()),
                e,
            ),
            Ok(Ok(tls)) => Ok(Stream::from(VirtualSocketStream::new(Box::new(TlsSocket(tls))))),
        }
    }
}

/// The verified TLS connection, as Pingora's virtual socket.
#[derive(Debug)]
struct TlsSocket(tokio_rustls::client::TlsStream<TcpStream>);

impl VirtualSocket for TlsSocket {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> std::io::Result<()> {
        match opt {
            VirtualSockOpt::NoDelay => self.0.get_ref().0.set_nodelay(true),
            _ => Ok(()),
        }
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_anchors_and_names_are_refused() {
        let e =
            BackendTls::new("ns/p", &TrustAnchors::Pem(b"not pem".to_vec()), "abc.example.com", vec![]).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec();
        let e = BackendTls::new("ns/p", &TrustAnchors::Pem(garbage), "abc.example.com", vec![]).unwrap_err();
        assert!(e.contains("no usable CA certificate"), "{e}");
        let ca = rcgen::generate_simple_self_signed(vec!["ca.example".into()]).unwrap().cert.pem();
        let pem = TrustAnchors::Pem(ca.into_bytes());
        assert!(BackendTls::new("ns/p", &pem, "10.0.0.1", vec![]).unwrap_err().contains("DNS name"));
        assert!(BackendTls::new("ns/p", &pem, "bad host!", vec![]).unwrap_err().contains("DNS name"));
        let ok = BackendTls::new("ns/p", &pem, "abc.example.com", vec![]).unwrap();
        assert_eq!(ok.hostname(), "abc.example.com");
        let other = BackendTls::new("ns/q", &pem, "abc.example.com", vec![]).unwrap();
        assert_ne!(ok.group(), other.group());
        assert_ne!(ok.group(), 0);
    }
}
