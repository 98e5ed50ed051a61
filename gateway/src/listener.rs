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
        // Not kept: the future would hold the digest for the connection's life.
        let ip = crate::addr::inet_ip(stream.get_socket_digest().as_ref().and_then(|d| d.peer_addr()));
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

/// A listening socket served by ferry's own accept loop, as a Pingora service (so it runs on the
/// service's runtime and stops accepting at Pingora's shutdown, like Pingora's listening
/// service). Each connection is a [`crate::conn::Conn`] in a task that holds nothing else
/// between requests than the app's own state.
pub struct Accepting<A> {
    name: String,
    listener: Option<std::net::TcpListener>,
    app: Arc<A>,
}

impl<A> Accepting<A> {
    /// `listener` is bound and listening (non-blocking).
    pub fn new(name: impl Into<String>, listener: std::net::TcpListener, app: Arc<A>) -> Self {
        Accepting { name: name.into(), listener: Some(listener), app }
    }
}

#[async_trait::async_trait]
impl<A: pingora::apps::ServerApp + Send + Sync + 'static> pingora::services::Service for Accepting<A> {
    async fn start_service(
        &mut self,
        _fds: Option<pingora::server::ListenFds>,
        shutdown: pingora::server::ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let Some(listener) = self.listener.take() else { return };
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listener = %self.name, error = %e, "cannot serve the listening socket");
                return;
            }
        };
        let mut stop = shutdown.clone();
        let stopping = async move { stop.wait_for(|s| *s).await.is_ok() };
        accept(&listener, &self.app, stopping, &shutdown).await;
        tracing::info!(listener = %self.name, "stopped accepting");
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Accepts connections on `listener` until `stop` completes, and serves each with `app` in a task
/// of its own (a connection the app hands back is served again).
pub async fn accept<A: pingora::apps::ServerApp + Send + Sync + 'static>(
    listener: &tokio::net::TcpListener,
    app: &Arc<A>,
    stop: impl std::future::Future,
    shutdown: &pingora::server::ShutdownWatch,
) {
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most often: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut next: Option<pingora::protocols::Stream> = Some(Box::new(crate::conn::Conn::accepted(tcp, peer)));
            while let Some(s) = next.take() {
                next = app.process_new(s, &shutdown).await;
            }
        });
    }
}
