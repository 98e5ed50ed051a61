//! ferry's HTTP safety rules, in one place: which requests are accepted (target, path, Host,
//! framing, method), which upgrades are passed, and which headers are removed or overwritten on
//! the way to a backend. Both engines and the controller (which refuses Ingress paths that could
//! never match) read them from here; README "Security" lists them for users.
//!
//! Paths are matched exactly as received, never decoded, so what ferry matches is what the
//! backend gets. A path a backend could read differently from ferry is refused with 400, since a
//! normalising backend would otherwise serve a path other than the one ferry's route (and its
//! allow-list, rate limit, body limit) was chosen for:
//! - invalid percent-encoding (`%zz`, `%4`);
//! - an encoded `/` or `\` (`%2F`, `%5C`) and a literal `\`: backends that decode or treat `\` as a
//!   separator see more segments than ferry did (`/public/..%2fadmin`);
//! - a dot segment, `.` or `..`, with any dot written `%2E`, and with any `;parameters` after it
//!   (`..;/`, `.%3Bx`), which several servers strip before resolving dots;
//! - an encoded control character (`%00`–`%1F`, `%7F`), which C backends may cut the path at.
//!
//! This module must stay free of I/O and allocation on the common path: it runs on every request.

use http::header::{self, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::head::{EditHead, Name};

/// A request ferry refuses before routing: the status and a short reason for the reply body.
/// The connection is closed after the reply (where the next request starts cannot be trusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: &'static str,
}

/// RFC 9112 §3.2: a Host that is not a valid host is refused (400). Accepted: a DNS-style name or
/// IPv4 address (letters, digits, `-`, `.`, `_`, `~`), or a bracketed IPv6 literal, each with an
/// optional `:port` of digits; empty (HTTP/1.0 without Host). Anything else — spaces, lists,
/// `#`, `?`, `/`, `\`, percent-encodings — would be matched, logged and forwarded as something
/// else than what a backend or cache parses.
fn valid_host(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else { return false };
        if literal.is_empty() || !literal.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return false;
        }
        match after {
            "" => return true,
            p => ("x", p.strip_prefix(':').unwrap_or("!")),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, p),
            None => (host, "0"),
        }
    };
    let name_ok = (host.is_empty() || !name.is_empty())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let port_ok = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    name_ok && port_ok
}

const fn bad(reason: &'static str) -> Reject {
    Reject { status: 400, reason }
}

/// Largest request head (target, names and values) ferry forwards. Pingora refuses heads over
/// 1 MiB itself; backends commonly stop at 8–64 KiB, so a smaller bound keeps oversized heads at
/// the edge.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most request header fields ferry forwards (Pingora's parser stops at 256).
pub const MAX_HEADERS: usize = 100;

/// The host and path a request is routed on, borrowed from its head, and how its body is framed.
#[derive(Debug, PartialEq, Eq)]
pub struct Target<'a> {
    pub host: &'a str,
    pub path: &'a str,
    /// The request target was in absolute form (`GET http://host/path`); the upstream gets the
    /// origin form.
    pub absolute: bool,
}

/// Validates a request head and extracts what routing needs. `tls` says whether the listener
/// terminated TLS (an absolute-form target must name the listener's scheme);
/// `raw_content_length` whether the head as received carried a `Content-Length` (Pingora drops it
/// from the parsed head when `Transfer-Encoding` is present, so engines tell it from the raw
/// bytes: [`crate::wire::RequestHead::content_length`]).
///
/// Rules, in order:
/// - `CONNECT` is not served (405): ferry is not a forward proxy.
/// - The target is origin-form (`/path`), `*` (only for `OPTIONS`), or absolute-form with the
///   listener's scheme; anything else is 400.
/// - The path passes [`check_path`].
/// - The head is at most [`MAX_HEADER_BYTES`] and [`MAX_HEADERS`] fields (else 431).
/// - HTTP/1.1 needs exactly one `Host` (RFC 9112 §3.2), also with an absolute-form target, whose
///   authority it must then equal; no userinfo.
/// - Framing ([`check_framing`]).
pub fn check_request(req: &RequestHeader, tls: bool, raw_content_length: bool) -> Result<Target<'_>, Reject> {
    if req.method == http::Method::CONNECT {
        return Err(Reject { status: 405, reason: "CONNECT is not supported" });
    }
    let raw = std::str::from_utf8(req.raw_path()).map_err(|_| bad("request target is not UTF-8"))?;
    let h2 = req.version == http::Version::HTTP_2;
    let (authority, path_and_query) = if raw.starts_with('/') {
        (None, raw)
    } else if raw == "*" && req.method == http::Method::OPTIONS {
        (None, "/")
    } else if let Some((scheme, rest)) = raw.split_once("://").filter(|_| !h2) {
        let expected = if tls { "https" } else { "http" };
        if !scheme.eq_ignore_ascii_case(expected) {
            return Err(bad("request target scheme does not match the listener"));
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        if end == 0 {
            return Err(bad("request target has no authority"));
        }
        let path = &rest[end..];
        (Some(&rest[..end]), if path.starts_with('/') { path } else { "/" })
    } else {
        return Err(bad("unsupported request target"));
    };
    let path = path_and_query.split_once('?').map_or(path_and_query, |(p, _)| p);
    check_path(path).map_err(bad)?;
    let head: usize = raw.len() + req.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>();
    if head > MAX_HEADER_BYTES || req.headers.len() > MAX_HEADERS {
        return Err(Reject { status: 431, reason: "request headers too large" });
    }

    let mut hosts = req.headers.get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("more than one Host header"));
    }
    let host_header = match host_header {
        Some(h) => Some(h.to_str().map_err(|_| bad("Host header is not ASCII"))?),
        None => None,
    };
    let host = match (authority, req.uri.authority(), host_header) {
        (Some(a), _, Some(h)) if a.eq_ignore_ascii_case(h) => a,
        (Some(_), _, Some(_)) => return Err(bad("Host header differs from the request target's authority")),
        (Some(a), _, None) if req.version == http::Version::HTTP_10 => a,
        (None, Some(a), _) if h2 => a.as_str(),
        (None, _, Some(h)) => h,
        (_, _, None) if req.version == http::Version::HTTP_10 => "",
        (_, _, None) => return Err(bad("missing Host header")),
    };
    if host.contains('@') {
        return Err(bad("userinfo in host"));
    }
    if !valid_host(host) {
        return Err(bad("Host is not a host name or address with an optional port"));
    }
    if !h2 {
        check_framing(req, raw_content_length)?;
    }
    Ok(Target { host, path, absolute: authority.is_some() })
}

/// HTTP/1 body framing (RFC 9112 §6): at most one of `Content-Length` (one field, digits only) and
/// `Transfer-Encoding`; a `Transfer-Encoding` must be exactly `chunked` (any case): other codings
/// before it are 501 (ferry does not decode them), anything else is 400, as is any
/// `Transfer-Encoding` on HTTP/1.0.
pub fn check_framing(req: &RequestHeader, raw_content_length: bool) -> Result<(), Reject> {
    let mut lengths = req.headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(length) = lengths.next() {
        let digits = length.as_bytes();
        if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad("invalid Content-Length"));
        }
        if lengths.next().is_some() {
            return Err(bad("more than one Content-Length"));
        }
    }
    let mut codings = req.headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if codings.peek().is_none() {
        return Ok(());
    }
    if raw_content_length || req.headers.contains_key(header::CONTENT_LENGTH) {
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    if req.version != http::Version::HTTP_11 {
        return Err(bad("Transfer-Encoding on HTTP/1.0"));
    }
    let (mut chunked, mut other, mut last_chunked) = (0, 0, false);
    for coding in codings.flat_map(|v| v.as_bytes().split(|b| *b == b',')) {
        let coding = coding.trim_ascii();
        if coding.is_empty() {
            continue;
        }
        last_chunked = coding.eq_ignore_ascii_case(b"chunked");
        if last_chunked {
            chunked += 1;
        } else {
            other += 1;
        }
    }
    match (last_chunked, chunked, other) {
        (true, 1, 0) => Ok(()),
        (true, 1, _) => Err(Reject { status: 501, reason: "transfer coding other than chunked" }),
        _ => Err(bad("Transfer-Encoding must end in one chunked")),
    }
}

/// Whether the request may be passed on as an upgrade: HTTP/1.1 `GET`, `Upgrade: websocket`
/// (the only protocol ferry passes; never `h2c`, whose streams would bypass routing and policy),
/// `Connection: upgrade`, and no body. Any other `Upgrade` is dropped by [`drop_refused_upgrade`],
/// and the request is served as a plain one (RFC 9110 §7.8 lets a server ignore it).
pub fn is_websocket_upgrade(req: &RequestHeader, body_empty: bool) -> bool {
    let Some(upgrade) = req.headers.get(header::UPGRADE) else { return false };
    body_empty
        && req.version == http::Version::HTTP_11
        && req.method == http::Method::GET
        && upgrade.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket")
        && req.headers.get_all(header::UPGRADE).iter().count() == 1
        && connection_tokens(req).any(|t| t.eq_ignore_ascii_case(b"upgrade"))
}

static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Removes an `Upgrade` ferry does not pass (see [`is_websocket_upgrade`]) from the request as
/// received, so no engine treats it as an upgrade. Returns whether the request is an upgrade.
pub fn drop_refused_upgrade(req: &mut RequestHeader, body_empty: bool) -> bool {
    if !req.headers.contains_key(header::UPGRADE) {
        return false;
    }
    if is_websocket_upgrade(req, body_empty) {
        return true;
    }
    req.remove_header(&header::UPGRADE);
    if req.headers.contains_key(&HTTP2_SETTINGS) {
        req.remove_header(&HTTP2_SETTINGS);
    }
    false
}

fn connection_tokens(req: &RequestHeader) -> impl Iterator<Item = &[u8]> {
    tokens_of(&req.headers)
}

fn tokens_of(headers: &http::HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers.get_all(header::CONNECTION).iter().flat_map(tokens_in)
}

/// The tokens of a comma-separated field value.
pub fn tokens_in(v: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    v.as_bytes().split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static X_REWRITE_URL: HeaderName = HeaderName::from_static("x-rewrite-url");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// Request headers that never reach a backend: hop-by-hop ones (RFC 9110 §7.6.1), credentials
/// meant for a proxy, and rewrite instructions some backends obey (`X-Original-URL`,
/// `X-Rewrite-URL`). `Upgrade` and `Connection` are handled by [`strip_request_headers`].
const NEVER_FORWARDED: [&HeaderName; 9] = [
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::EXPECT,
    &header::PROXY_AUTHORIZATION,
    &HTTP2_SETTINGS,
    &X_ORIGINAL_URL,
    &X_REWRITE_URL,
];

/// Forwarding facts a client may only state when it is a trusted proxy (`--trusted-proxies`);
/// from anyone else they are removed (and ferry sets its own `X-Forwarded-For/-Proto/-Host`,
/// `X-Real-IP`).
const FORWARDING: [&HeaderName; 3] = [&FORWARDED, &X_FORWARDED_PORT, &X_FORWARDED_PREFIX];

/// Prepares the request head that goes upstream: removes the headers nominated in `Connection`
/// (never the framing, `Host`, or the request id and trace context ferry logs), the hop-by-hop
/// and never-forwarded ones above, and — unless the client is a trusted proxy — the forwarding
/// facts. An upgrade keeps `Upgrade` and gets `Connection: upgrade`. A chunked body is announced
/// as exactly `Transfer-Encoding: chunked` (ferry re-frames it). Returns whether the client
/// asked for `100 Continue` (ferry answers it; the header is not forwarded).
pub fn strip_request_headers(req: &mut impl EditHead, upgrade: bool, trusted: bool) -> bool {
    let protected = |name: &HeaderName| {
        name == header::TRANSFER_ENCODING
            || name == header::CONTENT_LENGTH
            || name == header::HOST
            || *name == X_REQUEST_ID
            || *name == TRACEPARENT
    };
    if req.contains(&header::CONNECTION) {
        let nominated: Vec<HeaderName> = req
            .get_all(&header::CONNECTION)
            .flat_map(tokens_in)
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .filter(|n| !(protected(n) || upgrade && n == header::UPGRADE))
            .collect();
        for name in &nominated {
            req.remove(name);
        }
        req.remove(&header::CONNECTION);
    }
    if upgrade {
        let _ = req.insert(Name::from(&header::CONNECTION), HeaderValue::from_static("upgrade"));
    }
    let expect = req.get(&header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    // One pass over the fields there are, rather than a lookup for each name that may be.
    let never = |n: &HeaderName| {
        NEVER_FORWARDED.contains(&n) || !trusted && FORWARDING.contains(&n) || !upgrade && n == header::UPGRADE
    };
    let doomed: Vec<HeaderName> = req.names().filter(|n| never(n)).cloned().collect();
    for name in &doomed {
        req.remove(name);
    }
    if req.contains(&header::TRANSFER_ENCODING) {
        let _ = req.insert(Name::from(&header::TRANSFER_ENCODING), HeaderValue::from_static("chunked"));
    }
    drop_underscore_lookalikes(req);
    expect
}

/// Removes header fields whose names spell one ferry sets or controls with `_` for `-`
/// (`X_Forwarded_For`): CGI, WSGI and similar backends read both spellings as the same
/// variable, and would see the client's value first.
fn drop_underscore_lookalikes(req: &mut impl EditHead) {
    const CONTROLLED: [&str; 10] = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
        "x-request-id",
        "x-original-url",
        "x-rewrite-url",
        "forwarded",
    ];
    if !req.names().any(|k| k.as_str().contains('_')) {
        return;
    }
    let lookalikes: Vec<HeaderName> = req
        .names()
        .filter(|k| {
            let name = k.as_str();
            name.contains('_')
                && CONTROLLED.iter().any(|c| {
                    c.len() == name.len()
                        && c.bytes().zip(name.bytes()).all(|(a, b)| a == b || (a == b'-' && b == b'_'))
                })
        })
        .cloned()
        .collect();
    for name in &lookalikes {
        req.remove(name);
    }
}

/// Response headers that never reach the client from a backend: hop-by-hop ones the client's
/// connection does not share, and `Proxy-Authenticate` (meant for a proxy, not for the client).
pub fn strip_response_headers(resp: &mut ResponseHeader) {
    // Fields the backend's `Connection` names are for the hop to ferry (RFC 9110 §7.6.1); the
    // framing fields and a 101's `Upgrade` stay, and `Connection` itself is the engine's. The
    // common single `keep-alive` or `close` names nothing else (Keep-Alive goes below).
    let mut values = resp.headers.get_all(header::CONNECTION).iter();
    let names_fields = match (values.next(), values.next()) {
        (None, _) => false,
        (Some(v), None) => {
            !(v.as_bytes().eq_ignore_ascii_case(b"keep-alive") || v.as_bytes().eq_ignore_ascii_case(b"close"))
        }
        _ => true,
    };
    if names_fields {
        let nominated: Vec<HeaderName> = tokens_of(&resp.headers)
            .filter_map(|t| HeaderName::from_bytes(t).ok())
            .filter(|n| {
                !(n == header::TRANSFER_ENCODING
                    || n == header::CONTENT_LENGTH
                    || n == header::UPGRADE
                    || n == header::CONNECTION
                    || resp.headers.get(n).is_none())
            })
            .collect();
        for name in &nominated {
            resp.remove_header(name);
        }
    }
    for name in [&KEEP_ALIVE, &PROXY_CONNECTION, &header::PROXY_AUTHENTICATE] {
        if resp.headers.contains_key(name) {
            resp.remove_header(name);
        }
    }
}

/// How an HTTP/1 client gets a response's body (RFC 9112 §6.3), whatever framing the backend
/// chose: an HTTP/1.0 client never gets `Transfer-Encoding` (it cannot decode chunks): the body
/// is sent as it is, delimited by closing the connection; an HTTP/1.1 client gets a body the
/// backend delimited by closing re-chunked, so its connection stays open. Responses without a
/// body (to `HEAD`, 1xx, 204, 304) and `101` are left alone, as are HTTP/2 clients. Returns
/// whether the connection must close after this response. (Interim 1xx responses are never
/// relayed to HTTP/1 clients by either engine; `100 Continue` is ferry's own.)
pub fn frame_response(req: &RequestHeader, resp: &mut ResponseHeader) -> Result<bool, Box<pingora::Error>> {
    let status = resp.status.as_u16();
    let bodiless = req.method == http::Method::HEAD || status < 200 || status == 204 || status == 304;
    match req.version {
        http::Version::HTTP_10 | http::Version::HTTP_09 => {
            if resp.headers.contains_key(header::TRANSFER_ENCODING) {
                resp.remove_header(&header::TRANSFER_ENCODING);
                return Ok(!bodiless);
            }
            Ok(!bodiless && !resp.headers.contains_key(header::CONTENT_LENGTH))
        }
        http::Version::HTTP_11 => {
            let delimited = resp.headers.contains_key(header::TRANSFER_ENCODING)
                || resp.headers.contains_key(header::CONTENT_LENGTH);
            if !bodiless && !delimited {
                resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
            }
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// Checks a request path (the target up to `?`). `Err` carries the reason for the 400 reply.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    let bytes = path.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match *b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
                let (Some(hi), Some(lo)) = (hex.first().and_then(hex_value), hex.get(1).and_then(hex_value)) else {
                    return Err("invalid percent-encoding in path");
                };
                match hi << 4 | lo {
                    b'/' | b'\\' => return Err("encoded slash or backslash in path"),
                    0..=0x1f | 0x7f => return Err("encoded control character in path"),
                    _ => {}
                }
            }
            b'\\' => return Err("backslash in path"),
            _ => {}
        }
    }
    if path.split('/').any(is_dot_segment) {
        return Err("dot-segment in path");
    }
    Ok(())
}

/// The form of a (checked) path that routes are matched on: percent-encoded unreserved
/// characters decoded (`/%61dmin` is `/admin`, RFC 3986 §6.2.2.2), runs of `/` merged (`//admin`),
/// and `;parameters` cut from each segment (`/admin;x`), as common backends (nginx's
/// `merge_slashes`, servlet containers, WSGI and Go servers) read the path. A route chosen on this
/// form is the one a normalising backend would serve, so its allow-list and limits hold; the path
/// is forwarded as received. Borrowed, without allocating, when the path has none of these.
pub fn match_path(path: &str) -> std::borrow::Cow<'_, str> {
    let bytes = path.as_bytes();
    let plain = !bytes
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'%' || *b == b';' || (*b == b'/' && i > 0 && bytes[i - 1] == b'/'));
    if plain {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.into_iter().enumerate() {
        let segment = segment.split(';').next().unwrap_or_default();
        if i > 0 {
            if segment.is_empty() && i != last {
                continue;
            }
            out.push('/');
        }
        let seg = segment.as_bytes();
        let mut j = 0;
        while j < seg.len() {
            let decoded = (seg[j] == b'%')
                .then(|| Some(hex_value(seg.get(j + 1)?)? << 4 | hex_value(seg.get(j + 2)?)?))
                .flatten()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'));
            match decoded {
                Some(c) => {
                    out.push(c as char);
                    j += 3;
                }
                None => {
                    // `segment` is a str and `%`-sequences are ASCII, so this stays on a char boundary.
                    let next = seg[j + 1..].iter().position(|b| *b == b'%').map_or(seg.len(), |p| j + 1 + p);
                    out.push_str(&segment[j..next]);
                    j = next;
                }
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    std::borrow::Cow::Owned(out)
}

fn hex_value(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

/// `.` or `..` (each dot possibly `%2E`), optionally followed by `;` parameters (`;` possibly
/// `%3B`).
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while let Some(&b) = rest.first() {
        if b == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && b == b'%' && rest[1] == b'2' && rest[2].eq_ignore_ascii_case(&b'e') {
            rest = &rest[3..];
        } else if b == b';' || (rest.len() >= 3 && b == b'%' && rest[1] == b'3' && rest[2].eq_ignore_ascii_case(&b'b'))
        {
            break;
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_syntax() {
        for ok in ["a.example.com", "A.Example.COM:8080", "127.0.0.1:80", "[::1]", "[::1]:8443", "x_y.test", "a.test."]
        {
            assert!(valid_host(ok), "{ok}");
        }
        for no in [
            "evil.example#.example.com",
            "a.example.com, b.example.com",
            "a?b.test",
            "a/b.test",
            "a\\b.test",
            "a b.test",
            "a%2eb.test",
            "a.test:",
            "a.test:80x",
            ":80",
            "[::1",
            "[zz]",
            "[::1]x",
            "a.test:123456",
        ] {
            assert!(!valid_host(no), "{no}");
        }
    }

    fn head(method: &str, target: &str, version: http::Version, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/", None).unwrap();
        r.set_raw_path(target.as_bytes()).unwrap();
        r.set_version(version);
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        head("GET", "/", http::Version::HTTP_11, headers)
    }

    fn names(r: &RequestHeader) -> Vec<String> {
        let mut v: Vec<String> = r.headers.keys().map(|k| k.as_str().to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn request_rules() {
        const V10: http::Version = http::Version::HTTP_10;
        const V11: http::Version = http::Version::HTTP_11;
        let host = &[("Host", "a.test")][..];
        type Case<'a> =
            (&'a str, &'a str, http::Version, &'a [(&'a str, &'a str)], bool, Result<(&'a str, &'a str), u16>);
        let cases: &[Case] = &[
            ("GET", "/a/b?x=1", V11, &[("Host", "Example.com:80")], false, Ok(("Example.com:80", "/a/b"))),
            ("GET", "http://a.test/x?q", V11, host, false, Ok(("a.test", "/x"))),
            ("GET", "http://A.test", V11, host, false, Ok(("A.test", "/"))),
            ("GET", "http://a.test/x", V11, &[("Host", "b.test")], false, Err(400)),
            ("GET", "http://a.test/x", V11, &[], false, Err(400)),
            ("GET", "http://a.test/x", V10, &[], false, Ok(("a.test", "/x"))),
            ("GET", "https://a.test/x", V11, host, false, Err(400)),
            ("GET", "foo://a.test/x", V11, host, false, Err(400)),
            ("GET", "http:///x", V11, host, false, Err(400)),
            ("OPTIONS", "*", V11, host, false, Ok(("a.test", "/"))),
            ("GET", "*", V11, host, false, Err(400)),
            ("CONNECT", "a.test:443", V11, host, false, Err(405)),
            ("GET", "a.test:443", V11, host, false, Err(400)),
            ("GET", "/a", V11, &[], false, Err(400)),
            ("GET", "/a", V10, &[], false, Ok(("", "/a"))),
            ("GET", "/a", V11, &[("Host", "a.test"), ("Host", "b.test")], false, Err(400)),
            ("GET", "/a", V11, &[("Host", "u@a.test")], false, Err(400)),
            ("GET", "/public/..%2fadmin", V11, host, false, Err(400)),
            ("GET", "/a/../b", V11, host, false, Err(400)),
            // Framing.
            ("POST", "/", V11, &[("Host", "a"), ("Content-Length", "5")], false, Ok(("a", "/"))),
            ("POST", "/", V11, &[("Host", "a"), ("Content-Length", "5, 5")], false, Err(400)),
            ("POST", "/", V11, &[("Host", "a"), ("Content-Length", "5"), ("Content-Length", "5")], false, Err(400)),
            ("POST", "/", V11, &[("Host", "a"), ("Content-Length", "+5")], false, Err(400)),
            ("POST", "/", V11, &[("Host", "a"), ("Content-Length", "0x5")], false, Err(400)),
            ("POST", "/", V11, &[("Host", "a"), ("Content-Length", "")], false, Err(400)),
            ("POST", "/", V11, &[("Host", "a"), ("Transfer-Encoding", "chunked")], false, Ok(("a", "/"))),
            ("POST", "/", V11, &[("Host", "a"), ("Transfer-Encoding", "CHUNKED")], false, Ok(("a", "/"))),
            ("POST", "/", V11, &[("Host", "a"), ("Transfer-Encoding", "chunked")], true, Err(400)),
            (
                "POST",
                "/",
                V11,
                &[("Host", "a"), ("Transfer-Encoding", "chunked"), ("Content-Length", "5")],
                false,
                Err(400),
            ),
            ("POST", "/", V11, &[("Host", "a"), ("Transfer-Encoding", "identity, chunked")], false, Err(501)),
            ("POST", "/", V11, &[("Host", "a"), ("Transfer-Encoding", "gzip, chunked")], false, Err(501)),
            ("POST", "/", V11, &[("Host", "a"), ("Transfer-Encoding", "chunked, gzip")], false, Err(400)),
            (
                "POST",
                "/",
                V11,
                &[("Host", "a"), ("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
                false,
                Err(400),
            ),
            ("POST", "/", V11, &[("Host", "a"), ("Transfer-Encoding", "gzip")], false, Err(400)),
            ("POST", "/", V10, &[("Host", "a"), ("Transfer-Encoding", "chunked")], false, Err(400)),
        ];
        for (method, target, version, headers, raw_cl, want) in cases {
            let r = head(method, target, *version, headers);
            let got = check_request(&r, false, *raw_cl).map(|t| (t.host, t.path)).map_err(|e| e.status);
            assert_eq!(got, *want, "{method} {target} {version:?} {headers:?}");
        }
        let r = head("GET", "https://a.test/x", http::Version::HTTP_11, host);
        assert_eq!(check_request(&r, true, false).map(|t| (t.host, t.absolute)), Ok(("a.test", true)));
        let mut big = req(host);
        big.insert_header("x-big", "a".repeat(MAX_HEADER_BYTES)).unwrap();
        assert_eq!(check_request(&big, false, false).unwrap_err().status, 431);
    }

    #[test]
    fn only_websocket_upgrades_without_a_body_pass() {
        let ws = [("Host", "a"), ("Connection", "keep-alive, Upgrade"), ("Upgrade", "websocket")];
        let mut r = req(&ws);
        assert!(drop_refused_upgrade(&mut r, true));
        assert!(r.headers.contains_key("upgrade"));
        let mut r = req(&ws);
        assert!(!drop_refused_upgrade(&mut r, false), "with a body");
        assert!(!r.headers.contains_key("upgrade"));
        let mut r = req(&[
            ("Host", "a"),
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ]);
        assert!(!drop_refused_upgrade(&mut r, true));
        assert!(!r.headers.contains_key("upgrade") && !r.headers.contains_key("http2-settings"));
        let mut r = req(&[("Host", "a"), ("Upgrade", "websocket")]);
        assert!(!drop_refused_upgrade(&mut r, true), "no Connection: upgrade");
    }

    #[test]
    fn strips_hop_by_hop_nominated_and_untrusted_headers() {
        let mut r = req(&[
            ("Host", "a.test"),
            ("Connection", "keep-alive, X-Secret, content-length, host, X-Request-Id, traceparent"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("Content-Length", "3"),
            ("X-Request-Id", "abc"),
            ("Proxy-Authorization", "Basic eA=="),
            ("Forwarded", "for=1.2.3.4"),
            ("X-Forwarded-Port", "443"),
            ("X-Forwarded-Prefix", "/x"),
            ("X-Original-URL", "/admin"),
            ("X-Rewrite-URL", "/admin"),
            ("X-Kept", "1"),
        ]);
        assert!(!strip_request_headers(&mut r, false, false));
        assert_eq!(names(&r), ["content-length", "host", "x-kept", "x-request-id"]);

        let mut r =
            req(&[("Host", "a"), ("Forwarded", "for=1.2.3.4"), ("X-Forwarded-Port", "443"), ("X-Original-URL", "/a")]);
        strip_request_headers(&mut r, false, true);
        assert_eq!(names(&r), ["forwarded", "host", "x-forwarded-port"], "trusted proxy");
    }

    #[test]
    fn underscore_spellings_of_controlled_headers_are_dropped() {
        let mut r = req(&[
            ("Host", "a"),
            ("X_Forwarded_For", "6.6.6.6"),
            ("X_Real_IP", "6.6.6.6"),
            ("X-Forwarded_Proto", "https"),
            ("My_Header", "kept"),
        ]);
        strip_request_headers(&mut r, false, false);
        assert_eq!(names(&r), ["host", "my_header"]);
    }

    #[test]
    fn upgrade_keeps_upgrade_and_connection() {
        let mut r = req(&[
            ("Host", "a.test"),
            ("Connection", "Upgrade, X-Secret"),
            ("Upgrade", "websocket"),
            ("X-Secret", "1"),
        ]);
        strip_request_headers(&mut r, true, false);
        assert_eq!(names(&r), ["connection", "host", "upgrade"]);
        assert_eq!(r.headers.get("connection").unwrap(), "upgrade");
    }

    #[test]
    fn expect_continue_is_answered_here_and_chunked_is_normalised() {
        let mut r = req(&[("Host", "a.test"), ("Expect", "100-Continue"), ("Transfer-Encoding", "CHUNKED")]);
        assert!(strip_request_headers(&mut r, false, false));
        assert_eq!(names(&r), ["host", "transfer-encoding"]);
        assert_eq!(r.headers.get("transfer-encoding").unwrap(), "chunked");
    }

    #[test]
    fn paths_are_matched_in_normal_form() {
        let cases = [
            ("/", "/"),
            ("/admin/x", "/admin/x"),
            ("/%61dmin/x", "/admin/x"),
            ("/adm%69n", "/admin"),
            ("/%41%7e%2D%5f%30", "/A~-_0"),
            ("/a%20b%C3%A9", "/a%20b%C3%A9"),
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/a/", "/a/"),
            ("/a//", "/a/"),
            ("/admin;x", "/admin"),
            ("/admin;x/y;jsessionid=1", "/admin/y"),
            ("/a;b/", "/a/"),
            ("/;x", "/"),
            ("/é/%61", "/é/a"),
        ];
        for (path, want) in cases {
            assert_eq!(match_path(path), want, "{path}");
        }
        assert!(matches!(match_path("/plain/path/"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn path_rules() {
        let cases: &[(&str, Result<(), &str>)] = &[
            ("/", Ok(())),
            ("/a/b", Ok(())),
            ("/a/.well-known/x", Ok(())),
            ("/a/...", Ok(())),
            ("/a/b..c", Ok(())),
            ("/a%20b", Ok(())),
            ("/a;v=1/b", Ok(())),
            ("/a/b;.", Ok(())),
            ("/%41%7e", Ok(())),
            ("//a", Ok(())),
            ("/a/%zz", Err("invalid percent-encoding in path")),
            ("/a/%4", Err("invalid percent-encoding in path")),
            ("/a/%", Err("invalid percent-encoding in path")),
            ("/a/%+1", Err("invalid percent-encoding in path")),
            ("/a/../b", Err("dot-segment in path")),
            ("/a/..", Err("dot-segment in path")),
            ("/a/.", Err("dot-segment in path")),
            ("/./a", Err("dot-segment in path")),
            ("/a/%2e%2E/b", Err("dot-segment in path")),
            ("/a/.%2e/b", Err("dot-segment in path")),
            ("/public/..;/admin", Err("dot-segment in path")),
            ("/public/..;x=1/admin", Err("dot-segment in path")),
            ("/public/..%3bx/admin", Err("dot-segment in path")),
            ("/public/.;/admin", Err("dot-segment in path")),
            ("/public/..%2fadmin/x", Err("encoded slash or backslash in path")),
            ("/public/%2e%2e%2fadmin/x", Err("encoded slash or backslash in path")),
            ("/public/..%5cadmin", Err("encoded slash or backslash in path")),
            ("/public/..%5Cadmin", Err("encoded slash or backslash in path")),
            ("/%2F", Err("encoded slash or backslash in path")),
            ("/a%2fb", Err("encoded slash or backslash in path")),
            ("/public\\..\\admin", Err("backslash in path")),
            ("/a\\b", Err("backslash in path")),
            ("/a%00.html", Err("encoded control character in path")),
            ("/a%0d%0aX: y", Err("encoded control character in path")),
            ("/a%7F", Err("encoded control character in path")),
        ];
        for (path, want) in cases {
            assert_eq!(check_path(path), *want, "{path}");
        }
    }
}
