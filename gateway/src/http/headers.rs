//! The header edits of the lifecycle: the upstream request's target, request id and forwarding
//! headers, and the values the response gains (affinity cookie, CORS).

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::{Error, ErrorType, Result};

use crate::addr::format_ip;
use crate::head::{EditHead, Name};
use crate::safety;
use crate::table::Route;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The request's `X-Request-Id` if it carries a usable one (visible ASCII, at most 200 bytes).
fn client_request_id(req: &RequestHeader) -> Option<&HeaderValue> {
    let v = req.headers.get(&X_REQUEST_ID)?;
    (!v.is_empty() && v.len() <= 200 && v.as_bytes().iter().all(u8::is_ascii_graphic)).then_some(v)
}

/// The request id: the client's (shared with its head, not copied), or a new one (128 random
/// bits in hex).
pub(super) fn request_id(req: &RequestHeader) -> (HeaderValue, bool) {
    match client_request_id(req) {
        Some(id) => (id.clone(), true),
        None => {
            let mut id = [0u8; 32];
            crate::trace::hex_u64(&mut id[..16], fastrand::u64(..));
            crate::trace::hex_u64(&mut id[16..], fastrand::u64(..));
            (HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("-")), false)
        }
    }
}

/// Puts the request id on the upstream request: a generated one (replacing an unusable one), or
/// the client's again where it is no longer there.
pub(super) fn set_request_id(upstream: &mut impl EditHead, id: &HeaderValue, from_client: bool) -> Result<()> {
    if !from_client || !upstream.contains(&X_REQUEST_ID) {
        upstream.insert(Name::spelled("x-request-id", "X-Request-Id"), id.clone())?;
    }
    Ok(())
}

/// `https://host/target` for the HTTPS redirect (the port is dropped: clients come back on 443).
pub(super) fn https_location(host: &str, req: &RequestHeader) -> String {
    let host = match host.strip_prefix('[') {
        Some(v6) => &host[..v6.find(']').map_or(host.len(), |i| i + 2)],
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    format!("https://{host}{}", origin_form(req))
}

/// The path and query of the upstream request's target (an absolute-form one's, whose URI
/// Pingora has parsed, is made origin form by [`to_origin_form`]).
fn upstream_target(upstream: &impl EditHead) -> &str {
    std::str::from_utf8(upstream.raw_path()).unwrap_or("/")
}

/// The request's path and query as received (from the URI of an absolute-form target).
pub(crate) fn origin_form(req: &RequestHeader) -> &str {
    let target = std::str::from_utf8(req.raw_path()).unwrap_or("/");
    if target.starts_with('/') {
        target
    } else {
        req.uri.path_and_query().map_or("/", |p| p.as_str())
    }
}

/// An absolute-form target (`GET http://host/path`) goes upstream in origin form; the `Host`
/// already names the authority (the safety rules require it to).
pub(super) fn to_origin_form(upstream: &mut impl EditHead) -> Result<()> {
    let target = upstream.raw_path();
    if target.starts_with(b"/") || target == b"*" {
        return Ok(());
    }
    let target = std::str::from_utf8(target).unwrap_or_default();
    let after_scheme = target.split_once("://").map_or(target, |(_, rest)| rest);
    let path_at = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
    let (authority, origin) = after_scheme.split_at(path_at);
    let origin = match origin {
        "" => "/".to_string(),
        o if o.starts_with('?') => format!("/{o}"),
        o => o.to_string(),
    };
    // An HTTP/1.0 client may send the authority only in the target; the backend gets it
    // as `Host` (RFC 9112 §3.2.2).
    if !upstream.contains(&header::HOST) && !authority.is_empty() {
        let authority = HeaderValue::from_str(authority).map_err(|_| Error::new(ErrorType::InvalidHTTPHeader))?;
        upstream.insert(Name::from(&header::HOST), authority)?;
    }
    upstream.set_raw_path(origin.as_bytes())
}

/// The upstream request target after the route's rewrite, if it has one.
pub(super) fn rewrite(route: &Route, upstream: &mut impl EditHead) -> Result<()> {
    if let Some(rewrite) = &route.options.rewrite {
        // The route's prefix is replaced in the form the route was matched on.
        let target = upstream_target(upstream);
        let (path, query) = target.split_at(target.find('?').unwrap_or(target.len()));
        let new = rewrite.apply(&format!("{}{query}", safety::match_path(path)));
        upstream.set_raw_path(new.as_bytes())?;
    }
    if let Some(host) = &route.options.host_rewrite {
        let host = HeaderValue::from_str(host).map_err(|_| Error::new(ErrorType::InvalidHTTPHeader))?;
        upstream.insert(Name::from(&header::HOST), host)?;
    }
    if let Some(edits) = &route.options.request_headers {
        for (n, v) in &edits.set {
            upstream.insert(Name::from(n), v.clone())?;
        }
        for (n, v) in &edits.add {
            upstream.append(Name::from(n), v.clone())?;
        }
        for n in &edits.remove {
            upstream.remove(n);
        }
    }
    Ok(())
}

/// The route's response header changes (Gateway API `ResponseHeaderModifier`).
pub(super) fn edit_response(route: &Route, resp: &mut ResponseHeader) -> Result<()> {
    if let Some(edits) = &route.options.response_headers {
        edits.apply(
            resp,
            |h, n, v| h.insert_header(n.clone(), v.clone()),
            |h, n, v| h.append_header(n.clone(), v.clone()).map(|_| ()),
            |h, n| {
                h.remove_header(n);
            },
        )?;
    }
    Ok(())
}

/// The `Set-Cookie` for cookie affinity when the request's cookie did not already name `chosen`.
pub(super) fn affinity_cookie(route: &Route, prefer: Option<u64>, chosen: SocketAddr, tls: bool) -> Option<String> {
    let c = route.options.affinity_cookie.as_ref()?;
    (prefer != Some(crate::balance::endpoint_token(&chosen))).then(|| c.set_cookie(&chosen, tls))
}

/// CORS headers on a proxied response, when the route has CORS and the origin is allowed.
pub(super) fn add_cors(route: &Route, req: &RequestHeader, resp: &mut ResponseHeader) -> Result<()> {
    if let Some(cors) = &route.options.cors {
        if let Some(allow) = cors.allow_origin(req) {
            cors.apply(resp, allow, None)?;
        }
    }
    Ok(())
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(super) fn cookie<'r>(req: &'r RequestHeader, name: &str) -> Option<&'r [u8]> {
    req.headers.get_all(header::COOKIE).iter().flat_map(|v| v.as_bytes().split(|b| *b == b';')).find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
    })
}

/// Whether the client waits for `100 Continue` before sending its body.
pub(super) fn expects_continue(req: &RequestHeader) -> bool {
    req.headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Sets `X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto` and `X-Forwarded-Host`. From a
/// trusted proxy (`trusted`), the client's `X-Forwarded-For` is appended to and its
/// `X-Forwarded-Proto`/`-Host` are kept; from anyone else they are replaced.
pub(super) fn add_forwarding_headers(
    upstream: &mut impl EditHead,
    client: Option<IpAddr>,
    tls: bool,
    trusted: bool,
) -> Result<()> {
    if let Some(ip) = client {
        let mut buf = [0u8; 64];
        let len = format_ip(ip, &mut buf);
        let ip = HeaderValue::from_bytes(&buf[..len]).map_err(|_| Error::new(ErrorType::InternalError))?;
        let xff = match upstream.get(&X_FORWARDED_FOR) {
            Some(prev) if trusted && !prev.is_empty() => {
                let mut joined = Vec::with_capacity(prev.len() + 2 + len);
                joined.extend_from_slice(prev.as_bytes());
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(&buf[..len]);
                HeaderValue::from_bytes(&joined).map_err(|_| Error::new(ErrorType::InvalidHTTPHeader))?
            }
            // Both headers share the one value buffer.
            _ => ip.clone(),
        };
        upstream.insert(Name::spelled("x-forwarded-for", "X-Forwarded-For"), xff)?;
        upstream.insert(Name::spelled("x-real-ip", "X-Real-IP"), ip)?;
    }
    if !trusted && client.is_none() {
        upstream.remove(&X_FORWARDED_FOR);
    }
    if !(trusted && upstream.contains(&X_FORWARDED_PROTO)) {
        let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
        upstream.insert(Name::spelled("x-forwarded-proto", "X-Forwarded-Proto"), proto)?;
    }
    if trusted && upstream.contains(&X_FORWARDED_HOST) {
        return Ok(());
    }
    // The host we routed on: the request's `Host` (or `:authority`, or an absolute-form
    // target's authority, which `to_origin_form` has made the `Host`).
    let host = upstream
        .get(&header::HOST)
        .filter(|h| !h.is_empty())
        .cloned()
        .or_else(|| upstream.authority().and_then(|a| HeaderValue::from_str(a).ok()));
    if let Some(host) = host {
        upstream.insert(Name::spelled("x-forwarded-host", "X-Forwarded-Host"), host)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        for (n, v) in headers {
            req.append_header(n.to_string(), *v).unwrap();
        }
        req
    }

    #[test]
    fn absolute_form_goes_upstream_in_origin_form_with_its_host() {
        let mut req = head("http://a.test:8080/x?q=1", &[]);
        to_origin_form(&mut req).unwrap();
        assert_eq!(req.raw_path(), b"/x?q=1");
        assert_eq!(req.headers.get(header::HOST).unwrap(), "a.test:8080");
        let mut req = head("http://a.test/y", &[("Host", "a.test")]);
        to_origin_form(&mut req).unwrap();
        assert_eq!((req.raw_path(), req.headers.get_all(header::HOST).iter().count()), (&b"/y"[..], 1));
    }

    #[test]
    fn forwarding_headers_replace_an_untrusted_clients() {
        let mut req = head("/", &[("Host", "a.test"), ("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-Proto", "https")]);
        add_forwarding_headers(&mut req, Some([10, 0, 0, 1].into()), false, false).unwrap();
        assert_eq!(req.headers.get("x-forwarded-for").unwrap(), "10.0.0.1");
        assert_eq!(req.headers.get("x-real-ip").unwrap(), "10.0.0.1");
        assert_eq!(req.headers.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(req.headers.get("x-forwarded-host").unwrap(), "a.test");
        let mut req = head("/", &[("Host", "a.test"), ("X-Forwarded-For", "6.6.6.6")]);
        add_forwarding_headers(&mut req, Some([10, 0, 0, 1].into()), true, true).unwrap();
        assert_eq!(req.headers.get("x-forwarded-for").unwrap(), "6.6.6.6, 10.0.0.1");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let req = head("/", &[("Cookie", "a=1; route=abc"), ("Cookie", "b=2")]);
        assert_eq!(cookie(&req, "route"), Some(&b"abc"[..]));
        assert_eq!(cookie(&req, "b"), Some(&b"2"[..]));
        assert_eq!(cookie(&req, "rout"), None);
    }
}
