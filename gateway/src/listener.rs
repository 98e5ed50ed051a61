//! The wrapper every HTTP listener's app runs in: connection limits, then the TLS handshake.

use std::sync::Arc;

/// A Pingora listener app that admits connections through a [`ConnLimiter`], terminates TLS
/// (on TLS listeners) within the client header timeout, and hands them to `inner`. Connections
/// are counted from accept, so a client that never completes its handshake holds a permit like
/// any other and is closed after `handshake_timeout`.
pub struct Limited<A> {
    pub inner: Arc<A>,
    pub limiter: Arc<crate::limits::ConnLimiter>,
    pub metrics: Arc<crate::Metrics>,
    pub listener: &'static str,
    /// TLS listeners: the acceptor (certificates by SNI) and how long a handshake may take.
    pub tls: Option<(Arc<pingora::listeners::tls::Acceptor>, std::time::Duration)>,
}

#[async_trait::async_trait]
impl<A: pingora::apps::ServerApp + Send + Sync + 'static> pingora::apps::ServerApp for Limited<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: pingora::protocols::Stream,
        shutdown: &pingora::server::ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        let digest = stream.get_socket_digest();
        let ip = crate::addr::inet_ip(digest.as_ref().and_then(|d| d.peer_addr()));
        let _permit = match self.limiter.acquire(ip) {
            Ok(p) => p,
            Err(why) => {
                self.metrics.refused(self.listener, why);
                return None;
            }
        };
        let stream = match &self.tls {
            None => stream,
            // Boxed: inline, the handshake's state would stay in this future for the whole
            // connection.
            Some((acceptor, limit)) => match Box::pin(crate::tls::handshake(acceptor, stream, *limit)).await {
                Ok(tls) => tls,
                Err(crate::tls::HandshakeError::Closed) => return None,
                Err(e) => {
                    // Any client can fail a handshake (a port scan, a plain-HTTP request on
                    // the TLS port): debug level and a counter, not an error line.
                    tracing::debug!(client = ?ip, error = %e, "TLS handshake failed");
                    self.metrics.client_fault(self.listener, "tls_handshake");
                    return None;
                }
            },
        };
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
