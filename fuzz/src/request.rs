//! `request_head`: a request head, as both engines get it (ferry's strict reading, `gateway::wire`,
//! lets it through; Pingora's HTTP/1 server session parses it), through ferry's safety rules
//! exactly as gateway/src/h1.rs and proxy.rs apply them: `drop_refused_upgrade`, the raw
//! `Content-Length` (from the strict reading), `check_request` (plain and TLS listener),
//! `check_path` on the path and `strip_request_headers` on what would be forwarded.
//!
//! Oracle, for every head ferry accepts (see [`problem`]):
//! - (a) nothing panics (for every head);
//! - (b) the path: a naive normalising backend ([`crate::path`]) sees the same segments as
//!   ferry's raw split, and no decoded control character; `check_path` accepts any path
//!   `check_request` routed on, and wherever `check_path` accepts a request's path, (b) holds;
//! - (c) framing, read from the raw field lines ([`crate::head`]): at most one `Content-Length`,
//!   digits only; a `Transfer-Encoding` only on HTTP/1.1, exactly one `chunked` element and no
//!   `Content-Length`;
//! - (d) the host: HTTP/1.1 has exactly one `Host` line and the routed host is its value; with an
//!   absolute-form target the routed host is the target's authority, which equals `Host` when
//!   there is one; never userinfo; `CONNECT` is never accepted, `*` only for `OPTIONS`;
//! - (e) what goes upstream: an `Upgrade` survives only as the websocket upgrade ferry passes
//!   (HTTP/1.1 `GET`, one `Upgrade: websocket`, `Connection: upgrade`, no body); hop-by-hop,
//!   proxy credentials, rewrite and untrusted forwarding headers are gone, as is any header the
//!   client's `Connection` nominated except framing, `Host`, `X-Request-Id` and `traceparent`;
//!   `Transfer-Encoding` is exactly `chunked`.

use http::header;
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::server::HttpSession as ServerSession;

use crate::safety;

use crate::path::accepted_path_problem;
use crate::pipe::Pipe;
use crate::raw_head::{accepted_framing_problem, RawHead};
use crate::RUNTIME;

/// Headers that never reach a backend from an untrusted client (README "Security").
const NEVER_FORWARDED: [&str; 12] = [
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "expect",
    "proxy-authorization",
    "http2-settings",
    "x-original-url",
    "x-rewrite-url",
    "forwarded",
    "x-forwarded-port",
    "x-forwarded-prefix",
];
/// Names a client's `Connection` may not remove.
const PROTECTED: [&str; 5] = ["transfer-encoding", "content-length", "host", "x-request-id", "traceparent"];

/// The authority of an absolute-form target (RFC 3986: up to `/`, `?` or `#`).
fn authority(target: &str) -> Option<&str> {
    let (_, rest) = target.split_once("://")?;
    Some(&rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())])
}

fn tokens(req: &RequestHeader, name: header::HeaderName) -> Vec<String> {
    req.headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn accepted_problem(
    req: &RequestHeader,
    raw: &RawHead<'_>,
    target: &safety::Target<'_>,
    tls: bool,
    upgrade: bool,
    body_empty: bool,
) -> Option<String> {
    let http10 = req.version == http::Version::HTTP_10;
    let raw_target = String::from_utf8_lossy(req.raw_path()).into_owned();
    // (b)
    if let Some(p) = accepted_path_problem(target.path.as_bytes()) {
        return Some(format!("path {:?}: {p}", target.path));
    }
    if target.path.contains('?') {
        return Some(format!("routed on {:?}, which has the query", target.path));
    }
    if let Err(why) = safety::check_path(target.path) {
        return Some(format!("check_request routed on {:?}, which check_path refuses ({why})", target.path));
    }
    // (c)
    if let Some(p) = accepted_framing_problem(raw, http10) {
        return Some(p);
    }
    // (d)
    if req.method == http::Method::CONNECT {
        return Some("accepted CONNECT".into());
    }
    if raw_target == "*" && req.method != http::Method::OPTIONS {
        return Some(format!("accepted target * for {}", req.method));
    }
    let hosts = raw.values("host");
    if hosts.len() > 1 || (!http10 && hosts.len() != 1) {
        return Some(format!("accepted {} Host fields on {:?}", hosts.len(), req.version));
    }
    if target.host.contains('@') {
        return Some(format!("accepted userinfo in host {:?}", target.host));
    }
    let host = hosts.first().map(|h| String::from_utf8_lossy(h).into_owned());
    if target.absolute {
        let scheme = if tls { "https://" } else { "http://" };
        if !raw_target.get(..scheme.len()).is_some_and(|s| s.eq_ignore_ascii_case(scheme)) {
            return Some(format!("accepted target {raw_target:?} on a {} listener", if tls { "TLS" } else { "plain" }));
        }
        let Some(authority) = authority(&raw_target) else {
            return Some(format!("absolute target {raw_target:?} has no authority"));
        };
        if target.host != authority {
            return Some(format!("routed on host {:?}, the target's authority is {authority:?}", target.host));
        }
        if host.as_deref().is_some_and(|h| !h.eq_ignore_ascii_case(authority)) {
            return Some(format!("authority {authority:?} differs from Host {host:?}"));
        }
    } else if target.host != host.as_deref().unwrap_or("") {
        return Some(format!("routed on host {:?}, Host is {host:?}", target.host));
    }
    // (e)
    if upgrade {
        let ok = req.version == http::Version::HTTP_11
            && req.method == http::Method::GET
            && body_empty
            && tokens(req, header::UPGRADE) == ["websocket"]
            && req.headers.get_all(header::UPGRADE).iter().count() == 1
            && tokens(req, header::CONNECTION).iter().any(|t| t == "upgrade");
        if !ok {
            return Some(format!("passed an upgrade to {:?}", req.headers.get(header::UPGRADE)));
        }
    } else if req.headers.contains_key(header::UPGRADE) {
        return Some("kept an Upgrade it does not pass".into());
    }
    let nominated = tokens(req, header::CONNECTION);
    let mut forwarded = req.clone();
    safety::strip_request_headers(&mut forwarded, upgrade, false);
    for name in NEVER_FORWARDED {
        if forwarded.headers.contains_key(name) {
            return Some(format!("forwards {name}"));
        }
    }
    // An upgrade is forwarded with `Upgrade` and ferry's own `Connection: upgrade`, whatever the
    // client nominated.
    for name in nominated
        .iter()
        .filter(|n| !(PROTECTED.contains(&n.as_str()) || upgrade && (*n == "upgrade" || *n == "connection")))
    {
        if forwarded.headers.contains_key(name.as_str()) {
            return Some(format!("forwards {name}, which Connection nominated"));
        }
    }
    let connection: Vec<_> = forwarded.headers.get_all(header::CONNECTION).iter().collect();
    if upgrade && (connection.len() != 1 || connection[0] != "upgrade") {
        return Some(format!("upgrade forwarded with Connection {connection:?}"));
    }
    if !upgrade && (!connection.is_empty() || forwarded.headers.contains_key(header::UPGRADE)) {
        return Some("forwards Connection or Upgrade on a plain request".into());
    }
    for name in PROTECTED.iter().filter(|n| **n != "transfer-encoding") {
        if forwarded.headers.get_all(*name).iter().ne(req.headers.get_all(*name).iter()) {
            return Some(format!("changed {name} on the way upstream"));
        }
    }
    let te: Vec<_> = forwarded.headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    if !(te.is_empty() || te.len() == 1 && te[0] == "chunked") {
        return Some(format!("forwards Transfer-Encoding {te:?}"));
    }
    None
}

/// The first broken oracle property for the head in `data`, if any (`None` too when it does not
/// parse as a request head: both engines answer such a head 400 before any rule runs).
pub fn problem(data: &[u8]) -> Option<String> {
    RUNTIME.block_on(async {
        let mut ds = ServerSession::new(Box::new(Pipe::new([data.to_vec()])));
        ds.set_pipelining_enabled(true);
        if !matches!(ds.read_request().await, Ok(Some(_))) {
            return None;
        }
        // As h1.rs and proxy.rs, in their order.
        let body_empty = ds.is_body_empty();
        let upgrade = safety::drop_refused_upgrade(ds.req_header_mut(), body_empty);
        let head = ds.get_headers_raw_bytes();
        // Heads ferry's strict reading refuses are answered 400 before Pingora or any rule reads
        // them (the engines read the bytes as received, before Pingora's repairs).
        let Ok(Some(read)) = crate::wire::parse_request_head(data) else { return None };
        let raw_cl = read.content_length;
        let raw = RawHead::parse(&head);
        let req = ds.req_header();
        let raw_target = std::str::from_utf8(req.raw_path()).ok();
        let path = raw_target.map(|t| t.split_once('?').map_or(t, |(p, _)| p));
        // check_path on the request's path, whatever check_request says.
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            if safety::check_path(path).is_ok() {
                if let Some(p) = accepted_path_problem(path.as_bytes()) {
                    return Some(format!("check_path accepts {path:?}: {p}"));
                }
            }
        }
        for tls in [false, true] {
            let Ok(target) = safety::check_request(req, tls, raw_cl) else { continue };
            if let Some(p) = accepted_problem(req, &raw, &target, tls, upgrade, body_empty) {
                return Some(format!("{} listener: {p}", if tls { "TLS" } else { "plain" }));
            }
        }
        None
    })
}

/// The fuzz target: panics with a report when the oracle finds a problem.
pub fn check(data: &[u8]) {
    if let Some(p) = problem(data) {
        panic!("request_head: {p}\n  input: {}", data.escape_ascii());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_hold_on_ordinary_requests() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET http://a/x?y HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret, Host\r\nX-Secret: 1\r\nUpgrade: h2c\r\n\r\n",
            b"GET /a/..%2fb HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
        ] {
            assert_eq!(problem(head), None, "{}", head.escape_ascii());
        }
    }

    /// The finding of regressions/request_head is refused now.
    #[test]
    fn empty_content_length_with_chunked_is_refused() {
        let found = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length:\n\r\n";
        assert_eq!(problem(found), None);
    }
}
