//! `request_wire`: ferry's strict reading of a request head (`gateway::wire`, httparse in place
//! plus ferry's own rules), against two other readings of the same bytes.
//!
//! Oracle:
//! - (a) nothing panics;
//! - (b) a reference parser, picohttpparser (H2O's, C; shares no code with httparse), reads every
//!   head ferry accepts as the same message: the same length, method, target, minor version and
//!   field lines (name and value, byte for byte, trailing blanks of values aside), and no
//!   continuation line; a head the reference refuses, ferry refuses. picohttpparser skips one
//!   empty line before the request line where httparse skips any number; the reference is given
//!   the input without them. A head ferry waits on is not complete to the reference;
//! - (c) ferry's rules themselves, checked on the raw bytes of every accepted head: every line
//!   ends in CRLF (no bare LF or CR anywhere), the request line is `method SP target SP
//!   HTTP/1.x` with one space each and a visible-ASCII target without `#`, no field line starts
//!   with a blank, every field name is a token directly followed by its colon, and values hold
//!   no control character but tab;
//! - (d) Pingora's HTTP/1 session, which both engines use after the gate, reads an accepted head
//!   as the same method, target, version and number of fields (no repair happens behind the
//!   gate), or refuses it as an invalid head (its own authority checks, which ferry's safety
//!   rules make too); it never reads more or less of it or fails otherwise.

use std::os::raw::{c_char, c_int};

use picohttpparser_sys::{phr_header, phr_parse_request};
use pingora::protocols::http::v1::server::HttpSession as ServerSession;

use crate::pipe::Pipe;
use crate::wire::{parse_request_head, RequestHead, MAX_FIELDS};
use crate::RUNTIME;

/// One message as the reference read it.
#[derive(Debug, PartialEq, Eq)]
struct Message<'a> {
    len: usize,
    method: &'a [u8],
    target: &'a [u8],
    minor_version: u8,
    fields: Vec<(&'a [u8], &'a [u8])>,
}

enum Reference<'a> {
    Complete(Message<'a>),
    Partial,
    Invalid,
    /// A continuation (obs-fold) line, which the reference joins to the field before it.
    Folded,
}

fn trim_end(mut v: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// picohttpparser's reading of `buf`.
fn reference(buf: &[u8]) -> Reference<'_> {
    let mut method: *const c_char = std::ptr::null();
    let mut method_len = 0;
    let mut path: *const c_char = std::ptr::null();
    let mut path_len = 0;
    let mut minor: c_int = -1;
    let mut headers = [phr_header::default(); MAX_FIELDS + 1];
    let mut count = headers.len();
    // SAFETY: every pointer is to a live local or into `buf`, with its length; the parser writes
    // at most `count` headers and points only into `buf`.
    let n = unsafe {
        phr_parse_request(
            buf.as_ptr().cast(),
            buf.len(),
            &mut method,
            &mut method_len,
            &mut path,
            &mut path_len,
            &mut minor,
            headers.as_mut_ptr(),
            &mut count,
            0,
        )
    };
    match n {
        -2 => return Reference::Partial,
        n if n < 0 => return Reference::Invalid,
        _ => {}
    }
    let at = |p: *const c_char, len: usize| -> &[u8] {
        if len == 0 {
            return &[];
        }
        let start = (p as usize).wrapping_sub(buf.as_ptr() as usize);
        &buf[start..start + len]
    };
    let mut fields = Vec::with_capacity(count);
    for h in &headers[..count] {
        if h.name.is_null() {
            return Reference::Folded;
        }
        fields.push((at(h.name, h.name_len), trim_end(at(h.value, h.value_len))));
    }
    Reference::Complete(Message {
        len: n as usize,
        method: at(method, method_len),
        target: at(path, path_len),
        minor_version: minor as u8,
        fields,
    })
}

/// ferry's accepted head as the same kind of message (httparse again, the fields ferry counted).
fn ferry_message<'a>(buf: &'a [u8], head: &RequestHead) -> Message<'a> {
    let mut fields = vec![httparse::EMPTY_HEADER; head.fields];
    let mut req = httparse::Request::new(&mut fields);
    let parsed = req.parse(&buf[..head.len]);
    assert!(matches!(parsed, Ok(httparse::Status::Complete(n)) if n == head.len), "ferry's head reparses: {parsed:?}");
    Message {
        len: head.len,
        method: req.method.unwrap_or_default().as_bytes(),
        target: req.path.unwrap_or_default().as_bytes(),
        minor_version: req.version.unwrap_or(9),
        fields: req.headers.iter().map(|h| (h.name.as_bytes(), trim_end(h.value))).collect(),
    }
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// (c): what is wrong with a head ferry accepted, read from its bytes with no parser.
fn rule_problem(head: &[u8]) -> Option<String> {
    for (i, b) in head.iter().enumerate() {
        if *b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            return Some(format!("bare LF at {i}"));
        }
        if *b == b'\r' && head.get(i + 1) != Some(&b'\n') {
            return Some(format!("bare CR at {i}"));
        }
    }
    let mut lines =
        head.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).skip_while(|l| l.is_empty());
    let request_line = lines.next()?;
    let parts: Vec<&[u8]> = request_line.split(|b| *b == b' ').collect();
    let [method, target, version] = parts[..] else {
        return Some(format!("request line {:?} is not three words", String::from_utf8_lossy(request_line)));
    };
    if method.is_empty() || !method.iter().all(|b| is_token(*b)) {
        return Some(format!("method {:?}", String::from_utf8_lossy(method)));
    }
    if target.is_empty() || !target.iter().all(|b| (0x21..=0x7e).contains(b) && *b != b'#') {
        return Some(format!("target {:?}", String::from_utf8_lossy(target)));
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Some(format!("version {:?}", String::from_utf8_lossy(version)));
    }
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Some(format!("field line {:?} has no colon", String::from_utf8_lossy(line)));
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| is_token(*b)) {
            return Some(format!("field name {:?}", String::from_utf8_lossy(name)));
        }
        if value.iter().any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f) {
            return Some(format!("control character in the value {:?}", String::from_utf8_lossy(value)));
        }
    }
    None
}

/// (d): Pingora's session reading an accepted head.
fn pingora_problem(buf: &[u8], head: &RequestHead, message: &Message<'_>) -> Option<String> {
    RUNTIME.block_on(async {
        let mut ds = ServerSession::new(Box::new(Pipe::new([buf[..head.len].to_vec()])));
        match ds.read_request().await {
            Ok(Some(_)) => {}
            // Pingora refuses some heads on their authority (two `Host`, userinfo, a `Host`
            // differing from an absolute target), as ferry's safety rules do: a 400 either way.
            Err(e) if e.etype() == &pingora::ErrorType::InvalidHTTPHeader => return None,
            other => return Some(format!("Pingora does not read a head ferry accepted: {other:?}")),
        }
        let req = ds.req_header();
        let version = if head.minor_version == 0 { http::Version::HTTP_10 } else { http::Version::HTTP_11 };
        if req.method.as_str().as_bytes() != message.method
            || req.raw_path() != message.target
            || req.version != version
        {
            return Some(format!(
                "Pingora read {} {:?} {:?}, ferry {:?} {:?} 1.{}",
                req.method,
                String::from_utf8_lossy(req.raw_path()),
                req.version,
                String::from_utf8_lossy(message.method),
                String::from_utf8_lossy(message.target),
                head.minor_version
            ));
        }
        // Pingora drops `Content-Length` from a head with `Transfer-Encoding` (ferry's rules
        // then refuse it, from `content_length`).
        let named = |name: &[u8]| message.fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count();
        let dropped = if named(b"transfer-encoding") > 0 { named(b"content-length") } else { 0 };
        if req.headers.len() + dropped != head.fields {
            return Some(format!("Pingora read {} fields, ferry {}", req.headers.len(), head.fields));
        }
        None
    })
}

/// The first broken oracle property for `data`, if any.
pub fn problem(data: &[u8]) -> Option<String> {
    let verdict = parse_request_head(data);
    // The reference skips one empty line before the request line; give it the input without
    // the ones httparse skipped.
    let mut skipped = 0;
    while data[skipped..].starts_with(b"\r\n") {
        skipped += 2;
    }
    let reference = reference(&data[skipped..]);
    let head = match verdict {
        Err(_) => return None,
        Ok(None) => {
            return matches!(reference, Reference::Complete(_))
                .then(|| "ferry waits for more of a head the reference read whole".to_string());
        }
        Ok(Some(head)) => head,
    };
    let mut ours = ferry_message(data, &head);
    match reference {
        Reference::Complete(mut theirs) => {
            theirs.len += skipped;
            ours.len = head.len;
            if ours != theirs {
                return Some(format!("ferry read {ours:?}, the reference {theirs:?}"));
            }
        }
        Reference::Partial => return Some("ferry accepted a head the reference finds incomplete".into()),
        Reference::Invalid => return Some("ferry accepted a head the reference refuses".into()),
        Reference::Folded => return Some("ferry accepted a head with a continuation line".into()),
    }
    if let Some(p) = rule_problem(&data[..head.len]) {
        return Some(p);
    }
    let content_length = ours.fields.iter().any(|(n, _)| n.eq_ignore_ascii_case(b"content-length"));
    if head.content_length != content_length {
        return Some(format!("content_length {} for fields {:?}", head.content_length, ours.fields));
    }
    pingora_problem(data, &head, &ours)
}

pub fn check(data: &[u8]) {
    if let Some(p) = problem(data) {
        panic!("{p}\ninput: {:?}", String::from_utf8_lossy(data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_heads_agree() {
        for head in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"\r\n\r\nPOST /x?y HTTP/1.0\r\nContent-Length: 3\r\nX:  v \t\r\n\r\nabc",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n",
        ] {
            assert!(matches!(parse_request_head(head), Ok(Some(_))));
            assert_eq!(problem(head), None, "{:?}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn the_oracle_sees_what_ferry_refuses() {
        // The reference accepts these; ferry must not (if it did, (c) would say so).
        for head in [&b"GET / HTTP/1.1\nHost: a\n\n"[..], b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"] {
            assert!(parse_request_head(head).is_err());
            assert!(rule_problem(head).is_some());
        }
    }
}
