//! HTTP/1 request heads as they arrive on the wire, read strictly (RFC 9112): the gate every
//! HTTP/1 request head passes before either engine parses it, so a head that two parsers could
//! read differently (and a backend behind ferry differently from ferry) is refused with 400 and
//! the connection closed, never repaired or forwarded.
//!
//! Parsed in place with httparse (which hyper uses), in its strict configuration, plus what
//! httparse accepts but ferry does not:
//! - every line ends in CRLF: a bare LF (which httparse, like many parsers, takes for a line end)
//!   or a bare CR is refused, in the request line, the field lines and the empty lines a client
//!   may send before the request line (RFC 9112 §2.2);
//! - the request line is exactly `method SP target SP HTTP/1.x`: one space each (a raw space in
//!   the target is refused, not percent-encoded), a token method, a target of visible ASCII only
//!   (no byte over 0x7E: RFC 3986 has none, and backends decode them differently) without a
//!   fragment (`#`, which no request target has and parsers drop or keep);
//! - field names are tokens with nothing between name and colon; obs-fold (a line starting with
//!   space or tab) is refused (RFC 9112 §5.2), as are NUL, CR, LF and other controls in values.
//!
//! Framing (`Content-Length`, `Transfer-Encoding`) is judged by `safety::check_framing` on the
//! parsed head; this module reports whether a `Content-Length` line was present at all, which
//! Pingora's parsed head hides when `Transfer-Encoding` is there too.
//!
//! Free of I/O and allocation: it runs on every HTTP/1 request. Compiled into the fuzz crate too
//! (fuzz/src/lib.rs), where it is checked against an independent parser.

use std::mem::MaybeUninit;

/// Most field lines a head may have here; more is 431 (the safety rules allow fewer:
/// `safety::MAX_HEADERS`, also 431).
pub const MAX_FIELDS: usize = 256;

/// A request head read whole and found well-formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head, up to and including its empty line (and any empty lines before it).
    pub len: usize,
    /// The minor version: `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    /// Field lines.
    pub fields: usize,
    /// A `Content-Length` field line was present (any value).
    pub content_length: bool,
}

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed (400), with a short reason for the reply body.
    Malformed(&'static str),
    /// More than [`MAX_FIELDS`] field lines (431).
    TooManyFields,
}

/// Reads the request head at the start of `buf` (bytes after it, a body or a pipelined request,
/// are left alone). `Ok(None)`: the head is not whole in `buf` yet.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<RequestHead>, Refusal> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            // A bare LF or CR already seen is refused now, not once the head completes.
            line_ends(buf, true)?;
            return Ok(None);
        }
        Err(e) => {
            // The first malformation in reading order: a bare LF before the error is the reason.
            line_ends(buf, true)?;
            return Err(refusal(e));
        }
    };
    line_ends(&buf[..len], false)?;
    let target = req.path.unwrap_or_default().as_bytes();
    if target.iter().any(|b| *b > 0x7e) {
        return Err(Refusal::Malformed("request target has a byte outside visible ASCII"));
    }
    // A fragment is never part of a request target (RFC 9112 §3.2); parsers drop it or keep it
    // in the path (Pingora forwards `/a#/../b` as `/a`).
    if target.contains(&b'#') {
        return Err(Refusal::Malformed("request target has a fragment (#)"));
    }
    let content_length = req.headers.iter().any(|h| h.name.eq_ignore_ascii_case("content-length"));
    Ok(Some(RequestHead { len, minor_version: req.version.unwrap_or(1), fields: req.headers.len(), content_length }))
}

/// Checks that every LF in `head` follows a CR and every CR precedes an LF. `partial`: `head`
/// may end inside a line (a final CR is then not yet bare).
fn line_ends(head: &[u8], partial: bool) -> Result<(), Refusal> {
    let mut from = 0;
    while let Some(at) = head[from..].iter().position(|b| *b == b'\n' || *b == b'\r') {
        let at = from + at;
        if head[at] == b'\n' {
            return Err(Refusal::Malformed("bare LF in the request head (lines end in CRLF)"));
        }
        match head.get(at + 1) {
            Some(b'\n') => from = at + 2,
            None if partial => return Ok(()),
            _ => return Err(Refusal::Malformed("bare CR in the request head")),
        }
    }
    Ok(())
}

fn refusal(e: httparse::Error) -> Refusal {
    use httparse::Error;
    Refusal::Malformed(match e {
        Error::TooManyHeaders => return Refusal::TooManyFields,
        Error::HeaderName => "invalid field name (a space before the colon, obs-fold, or not a token)",
        Error::HeaderValue => "invalid character in a field value",
        Error::Token => "invalid method",
        Error::Version => "invalid request line (one space between method, target and an HTTP/1.x version)",
        Error::NewLine => "invalid line ending in the request head",
        Error::Status => "invalid request line",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(head: &[u8]) -> Result<Option<RequestHead>, Refusal> {
        parse_request_head(head)
    }

    #[test]
    fn well_formed_heads_are_read() {
        let head = b"GET /a?b=1 HTTP/1.1\r\nHost: a.test\r\nX-Empty:\r\nContent-Length: 0\r\n\r\nbody";
        assert_eq!(
            verdict(head),
            Ok(Some(RequestHead { len: head.len() - 4, minor_version: 1, fields: 3, content_length: true }))
        );
        let head = b"\r\n\r\nGET / HTTP/1.0\r\n\r\n";
        assert_eq!(
            verdict(head),
            Ok(Some(RequestHead { len: 22, minor_version: 0, fields: 0, content_length: false }))
        );
        // obs-text in a value is allowed (RFC 9110 §5.5); tabs around a value too.
        assert!(matches!(verdict(b"GET / HTTP/1.1\r\nHost: a\r\nX: \t\xe9t\xe9\t\r\n\r\n"), Ok(Some(_))));
    }

    #[test]
    fn partial_heads_wait() {
        for head in [&b"GET / HTTP/1.1\r\nHost: a\r\n"[..], b"GET / HTTP/1.1\r", b"GET /", b"", b"\r\n"] {
            assert_eq!(verdict(head), Ok(None), "{:?}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn ambiguous_heads_are_refused() {
        let cases: &[(&str, &[u8])] = &[
            ("bare LF ending a field", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"),
            ("bare LF ending the head", b"GET / HTTP/1.1\nHost: a\n\n"),
            ("bare LF before the request line", b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("bare LF, head incomplete", b"GET / HTTP/1.1\nHost: a"),
            ("bare CR in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"),
            ("bare CR ending a line", b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n"),
            ("NUL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"),
            ("DEL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n"),
            ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
            ("obs-fold with a tab", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n"),
            ("space before the colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
            ("tab before the colon", b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"),
            ("space in a name", b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n"),
            ("empty name", b"GET / HTTP/1.1\r\n: a\r\n\r\n"),
            ("a line without colon", b"GET / HTTP/1.1\r\nHost a\r\n\r\n"),
            ("raw space in the target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("two spaces after the method", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("tab as a separator", b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("UTF-8 in the target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("a fragment in the target", b"GET /a#/../b HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("HTTP/2.0 on HTTP/1", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
            ("lower-case version", b"GET / http/1.1\r\nHost: a\r\n\r\n"),
            ("no version", b"GET /\r\nHost: a\r\n\r\n"),
            ("method with a slash", b"G/T / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("space before the request line", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("space before the first field", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n"),
        ];
        for (what, head) in cases {
            assert!(matches!(verdict(head), Err(Refusal::Malformed(_))), "{what}: {:?}", verdict(head));
        }
    }

    #[test]
    fn content_length_is_seen_whatever_its_case_and_value() {
        let seen = |head: &[u8]| verdict(head).map(|h| h.map(|h| h.content_length));
        assert_eq!(seen(b"POST / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 5\r\n\r\n"), Ok(Some(true)));
        // Found by the request_head fuzz target (then on a bare-LF line): an empty value.
        assert_eq!(seen(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length:\r\n\r\n"), Ok(Some(true)));
        assert_eq!(seen(b"POST / HTTP/1.1\r\nContent-Lengthx: 5\r\nX-Content-Length: 5\r\n\r\n"), Ok(Some(false)));
        assert_eq!(seen(b"POST /content-length: HTTP/1.1\r\n\r\n"), Ok(Some(false)));
        assert!(seen(b"POST / HTTP/1.1\r\nContent-Length :5\r\n\r\n").is_err());
    }

    #[test]
    fn too_many_fields_is_its_own_refusal() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_FIELDS {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert_eq!(verdict(&head), Err(Refusal::TooManyFields));
    }
}
