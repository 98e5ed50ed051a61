//! The Pingora engine: an adapter of the request lifecycle ([`crate::http`]) to Pingora's
//! `ProxyHttp`. It serves every HTTP/2 request (TLS with ALPN `h2`, h2c) and HTTP/1 with
//! `--http1-engine pingora`. Each hook sets Pingora's session up or calls one phase of the
//! [`Exchange`], which is Pingora's per-request context; Pingora moves the bytes, pools upstream
//! connections and retries where a phase says so.

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::proxy::FailToProxy;

use crate::http::{final_head, Answer, ConnFacts, Exchange, Gateway, Reply};
use crate::tls::ConnInfo;

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Exchange;

    fn new_ctx(&self) -> Exchange {
        Exchange::new()
    }

    /// No downstream modules: ferry does not compress, and each module costs per request.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, x: &mut Exchange) -> Result<bool> {
        if crate::drain::is_draining() {
            // Shutting down: tell HTTP/1.1 clients to take their next request elsewhere.
            session.set_keepalive(None);
        } else if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.timeouts().client_idle.as_secs().max(1)));
        }
        let downstream = session.as_downstream_mut();
        // A stalled body gets 408 (the session's read timeout covers each body read).
        downstream.set_read_timeout(Some(self.timeouts().client_body));
        // Bytes after the body (a pipelined request) start the next request.
        if let ServerSession::H1(h1) = downstream {
            h1.set_pipelining_enabled(true);
            // Interim responses are not relayed to HTTP/1 clients (as on the fast engine):
            // `100 Continue` is ferry's own, and an HTTP/1.0 client cannot take any.
            h1.set_ignore_info_resp(true);
        }
        let body_empty = downstream.is_body_empty();
        // The strict reading of the head ([`crate::wire`]). The listener app read and checked
        // it already, except for a request the client pipelined behind the previous one, which
        // Pingora reads itself (its repair of a raw space in the target happens before this).
        let raw_content_length = match &*downstream {
            ServerSession::H1(h1) => match Reply::of_head(&h1.get_headers_raw_bytes()) {
                Ok(read) => read.content_length,
                Err(reply) => {
                    self.client_fault("request");
                    send(session, &reply, true).await?;
                    return Ok(true);
                }
            },
            _ => false,
        };
        let tls = downstream.digest().and_then(crate::tls::conn_info);
        let client = crate::addr::inet_ip(session.client_addr());
        let conn = ConnFacts { client, sni: tls.as_deref().and_then(ConnInfo::sni), raw_content_length };
        if let Err(reply) = x.begin(self, session.req_header_mut(), &conn, body_empty) {
            send(session, &reply, false).await?;
            return Ok(true);
        }
        if x.upgrade() {
            // A tunnel after the upgrade is not a body: no body timeout.
            session.as_downstream_mut().set_read_timeout(None);
        }
        if x.expect_continue() {
            // Pingora would take the interim head for an early final response and close the
            // connection afterwards.
            let downstream = session.as_downstream_mut();
            downstream.set_close_on_response_before_downstream_finish(false);
            downstream.write_continue_response().await?;
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, x: &mut Exchange) -> Result<Box<HttpPeer>> {
        x.next_peer(self).await.map(Box::new)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        x: &mut Exchange,
    ) -> Result<()> {
        x.connected();
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        x: &mut Exchange,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let retry = x.connect_failed(self, &e);
        e.set_retry(retry);
        e
    }

    /// A failure on a pooled connection that Pingora would retry (a lost connection) is made
    /// again only where the lifecycle says; every other error keeps its own decision.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        x: &mut Exchange,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if matches!(e.retry, pingora::RetryType::ReusedOnly) {
            let replay = client_reused && x.replay_on_new_connection(session.req_header(), &e);
            e.set_retry(replay);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        x: &mut Exchange,
    ) -> Result<()> {
        x.upstream_request(self, upstream)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        x: &mut Exchange,
    ) -> Result<()> {
        body.as_ref().map_or(Ok(()), |chunk| x.body_chunk(chunk.len()))
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        x: &mut Exchange,
    ) -> Result<()> {
        let status = upstream.status.as_u16();
        match x.upstream_response(session.req_header(), status)? {
            Answer::Relay => Ok(()),
            Answer::Retry => {
                let mut e = Error::explain(ErrorType::HTTPStatus(status), "upstream answered 5xx; retrying elsewhere");
                e.set_retry(true);
                Err(e)
            }
        }
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        x: &mut Exchange,
    ) -> Result<()> {
        if x.downstream_response(self, session.req_header(), upstream)? {
            session.set_keepalive(None);
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, x: &mut Exchange) -> FailToProxy {
        let body_unfinished = !session.as_downstream_mut().is_body_done();
        let mut code = 0;
        // After an interim `100 Continue` the final reply is still to be sent.
        if let (Some(reply), None) = (x.fail(self, e, body_unfinished), final_head(session.response_written())) {
            code = send(session, &reply, true).await.unwrap_or(0);
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    fn suppress_error_log(&self, _session: &Session, x: &Exchange, e: &Error) -> bool {
        x.is_client_fault(e)
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, x: &mut Exchange) {
        let status = final_head(session.response_written()).map_or(0, |r| r.status.as_u16());
        x.finish(self, session.req_header(), status, session.body_bytes_sent());
    }
}

/// Sends ferry's reply and returns its status; `close`: the connection ends after it (the
/// exchange failed).
async fn send(session: &mut Session, reply: &Reply, close: bool) -> Result<u16> {
    let close = close || reply.closes();
    // HTTP/2 has no `Connection` header; the stream ends with the reply.
    let (resp, body) = reply.to_response(close && !session.as_downstream().is_http2())?;
    if close {
        session.set_keepalive(None);
    }
    let status = resp.status.as_u16();
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(status)
}
