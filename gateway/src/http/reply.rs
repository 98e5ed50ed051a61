//! ferry's own answers: every refusal and every proxy error, mapped to one response by
//! [`Reply::of_error`] and [`Reply::to_response`], on every engine and protocol.

use std::sync::Arc;

use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::cors::Cors;
use crate::safety;
use crate::table::{Backend, Route};

/// Why ferry answers a request itself.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// A request the safety rules refuse ([`safety::check_request`]).
    Reject(safety::Reject),
    /// A malformed request or body (a client fault).
    BadRequest(&'static str),
    /// The client's body did not arrive in time (`--client-body-timeout`).
    RequestTimeout,
    /// The TLS server name and the `Host` name different certificates (RFC 9110 §15.5.20).
    Misdirected,
    HeadersTooLarge,
    NoRoute,
    /// The Gateway address this connection came to is no longer in the table (the Gateway or its
    /// port was removed): 404, and the connection closes.
    GatewayGone,
    Unavailable(String),
    /// A Gateway API backendRef that cannot be used (500, as the Gateway API says).
    InvalidBackend(String),
    /// No usable response from the upstream (connect failed, reset, malformed).
    BadGateway,
    /// The upstream did not answer within the route's (or the gateway's) read timeout.
    GatewayTimeout,
    /// The client's address is not in the route's allow-list.
    Forbidden,
    /// Over the route's rate limit; retry after this many seconds.
    TooManyRequests(u64),
    /// The request body is over the route's limit.
    PayloadTooLarge,
    /// A redirect (HTTP to HTTPS, the route's redirect, its app root): status and location.
    Redirect(u16, String),
    /// A CORS preflight, answered here (with the allowed origin's headers, if it is allowed).
    Preflight(Arc<Cors>, Option<Box<crate::cors::PreflightAnswer>>),
}

impl Reply {
    /// The reply for an error after routing began (`None`: the client is gone, nothing to send).
    /// Errors ferry raised itself carry their status; a client's fault is 400 (408 when it
    /// stalled); anything from the upstream is 502.
    pub fn of_error(e: &Error, route: Option<&Route>) -> Option<Reply> {
        Some(match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(503), _) => match route {
                Some(r) => Reply::no_endpoints(&r.backend),
                None => Reply::Unavailable("no endpoints".into()),
            },
            (ErrorType::HTTPStatus(413), _) => Reply::PayloadTooLarge,
            (ErrorType::HTTPStatus(408), _) => Reply::RequestTimeout,
            (ErrorType::HTTPStatus(400), _) => Reply::BadRequest("malformed request"),
            (ErrorType::ReadTimedout, ErrorSource::Downstream) => Reply::RequestTimeout,
            (ErrorType::ReadTimedout, ErrorSource::Upstream) => Reply::GatewayTimeout,
            (ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed, ErrorSource::Downstream) => {
                return None
            }
            (_, ErrorSource::Downstream) => Reply::BadRequest("malformed request body"),
            _ => Reply::BadGateway,
        })
    }

    /// Whether the reply is for the client's fault (not counted against an endpoint, logged at
    /// debug level, counted in `ferry_client_faults_total`).
    /// A whole request head read strictly ([`crate::wire`]), or the reply refusing it: 400
    /// naming the fault, 431 for too many fields. (A head the reading finds unfinished is
    /// malformed here: the caller found its end, with a bare LF the strict reading refuses.)
    pub fn of_head(head: &[u8]) -> std::result::Result<crate::wire::RequestHead, Reply> {
        match crate::wire::parse_request_head(head) {
            Ok(Some(read)) => Ok(read),
            Ok(None) => Err(Reply::BadRequest("malformed request head")),
            Err(crate::wire::Refusal::TooManyFields) => Err(Reply::HeadersTooLarge),
            Err(crate::wire::Refusal::Malformed(why)) => Err(Reply::BadRequest(why)),
        }
    }

    pub fn is_client_fault(&self) -> bool {
        matches!(self, Reply::BadRequest(_) | Reply::RequestTimeout | Reply::Reject(_) | Reply::HeadersTooLarge)
    }

    /// 503 for a backend that exists but has no endpoint to send to.
    pub fn no_endpoints(backend: &Backend) -> Reply {
        Reply::Unavailable(format!("no ready endpoints for {}", backend.name))
    }

    /// Status and body.
    pub fn status_and_body(&self) -> (u16, Bytes) {
        match self {
            Reply::Reject(r) if r.status == 400 => (400, Bytes::from(format!("ferry: bad request: {}\n", r.reason))),
            Reply::Reject(r) => (r.status, Bytes::from(format!("ferry: {}\n", r.reason))),
            Reply::BadRequest(why) => (400, Bytes::from(format!("ferry: bad request: {why}\n"))),
            Reply::RequestTimeout => (408, Bytes::from_static(b"ferry: request body timed out\n")),
            Reply::Misdirected => {
                (421, Bytes::from_static(b"ferry: misdirected request: TLS server name and Host differ\n"))
            }
            Reply::HeadersTooLarge => (431, Bytes::from_static(b"ferry: request headers too large\n")),
            Reply::NoRoute => (404, Bytes::from_static(b"ferry: no route for this host and path\n")),
            Reply::GatewayGone => (404, Bytes::from_static(b"ferry: this Gateway address is no longer served\n")),
            Reply::Unavailable(why) => (503, Bytes::from(format!("ferry: service unavailable: {why}\n"))),
            Reply::InvalidBackend(why) => (500, Bytes::from(format!("ferry: invalid backend: {why}\n"))),
            Reply::BadGateway => {
                (502, Bytes::from_static(b"ferry: bad gateway: no usable response from the backend\n"))
            }
            Reply::GatewayTimeout => {
                (504, Bytes::from_static(b"ferry: gateway timeout: the backend did not answer in time\n"))
            }
            Reply::Forbidden => (403, Bytes::from_static(b"ferry: forbidden: source address not allowed\n")),
            Reply::TooManyRequests(_) => (429, Bytes::from_static(b"ferry: too many requests\n")),
            Reply::PayloadTooLarge => (413, Bytes::from_static(b"ferry: request body too large\n")),
            Reply::Redirect(code, to) => (*code, Bytes::from(format!("ferry: moved to {to}\n"))),
            Reply::Preflight(..) => (204, Bytes::new()),
        }
    }

    /// Whether the connection closes after this reply: after a malformed request we cannot
    /// trust where the next one starts; after refusing a large body we did not read it.
    pub fn closes(&self) -> bool {
        matches!(
            self,
            Reply::Reject(_)
                | Reply::BadRequest(_)
                | Reply::HeadersTooLarge
                | Reply::PayloadTooLarge
                | Reply::RequestTimeout
                | Reply::GatewayGone
        )
    }

    /// The response for this reply: head and body. `close` adds `Connection: close`: an HTTP/1
    /// adapter passes whether the connection ends after the reply (it
    /// [`closes`](Self::closes) it, or the exchange failed after routing).
    pub fn to_response(&self, close: bool) -> Result<(ResponseHeader, Bytes)> {
        let (status, body) = self.status_and_body();
        let mut resp = ResponseHeader::build(status, Some(4))?;
        if status != 204 {
            resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
            resp.insert_header(header::CONTENT_LENGTH, body.len())?;
        }
        match self {
            Reply::TooManyRequests(after) => {
                resp.insert_header(header::RETRY_AFTER, *after)?;
            }
            Reply::Redirect(_, to) => {
                resp.insert_header(header::LOCATION, to.as_str())?;
            }
            Reply::Preflight(cors, Some(answer)) => {
                let (origin, methods, headers) = &**answer;
                cors.apply(&mut resp, origin.clone(), Some((methods, headers)))?
            }
            _ => {}
        }
        if close {
            resp.insert_header(header::CONNECTION, "close")?;
        }
        Ok((resp, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_one_reply_each() {
        let mut upstream = Error::new(ErrorType::ConnectRefused);
        upstream.as_up();
        assert_eq!(Reply::of_error(&upstream, None), Some(Reply::BadGateway));
        let mut timeout = Error::new(ErrorType::ReadTimedout);
        timeout.as_down();
        assert_eq!(Reply::of_error(&timeout, None), Some(Reply::RequestTimeout));
        let mut slow = Error::new(ErrorType::ReadTimedout);
        slow.as_up();
        assert_eq!(Reply::of_error(&slow, None), Some(Reply::GatewayTimeout));
        let mut gone = Error::new(ErrorType::ConnectionClosed);
        gone.as_down();
        assert_eq!(Reply::of_error(&gone, None), None, "nobody to answer");
        let mut garbage = Error::new(ErrorType::InvalidHTTPHeader);
        garbage.as_down();
        assert_eq!(Reply::of_error(&garbage, None), Some(Reply::BadRequest("malformed request body")));
        let limit = Error::new(ErrorType::HTTPStatus(413));
        assert_eq!(Reply::of_error(&limit, None), Some(Reply::PayloadTooLarge));
    }

    #[test]
    fn every_reply_has_a_body_and_says_when_it_closes() {
        let (resp, body) = Reply::BadGateway.to_response(false).unwrap();
        assert_eq!(resp.status.as_u16(), 502);
        assert!(body.starts_with(b"ferry: bad gateway"));
        assert_eq!(resp.headers.get(header::CONTENT_LENGTH).unwrap().as_bytes(), body.len().to_string().as_bytes());
        assert!(resp.headers.get(header::CONNECTION).is_none());
        let (resp, _) = Reply::BadGateway.to_response(true).unwrap();
        assert_eq!(resp.headers.get(header::CONNECTION).unwrap(), "close");
        assert!(Reply::PayloadTooLarge.closes(), "an unread body closes");
        assert!(!Reply::NoRoute.closes());
        let (resp, body) = Reply::TooManyRequests(3).to_response(false).unwrap();
        assert_eq!((resp.status.as_u16(), resp.headers.get(header::RETRY_AFTER).unwrap().as_bytes()), (429, &b"3"[..]));
        assert!(!body.is_empty());
    }
}
