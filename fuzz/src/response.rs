//! `response_read`: a backend's response, split across reads, through ferry's HTTP/1 client codec
//! (gateway/src/client.rs, the fast engine's backend side), checked against a reference reading
//! of its framing written here from RFC 9112 §6.3 and the reference chunked decoder
//! ([`crate::chunked`]).
//!
//! Input: `flags`, `n`, `n` split offsets (u16 little-endian, modulo the response's length + 1),
//! then the response bytes. Flags: bit 0 makes the request a `HEAD`; bit 1 an upgrade request
//! (`Connection: upgrade`, `Upgrade: websocket`); bit 2 splits the response before every byte.
//!
//! The reference finds each head's end naively (empty lines before its status line skipped, then
//! the first empty line, LF or CRLF), skips
//! informational heads but a `101`, and frames the body from the head's raw lines (a
//! continuation line folded into its field with a space, as RFC 9112 §5.2 lets a recipient): no body for a `HEAD`, `1xx`, `204`, `304`; a `101` to an upgrade request is a
//! tunnel; `Transfer-Encoding` with `chunked` last is chunked, other codings run to the close;
//! `Content-Length` values that are not all one number are an error; one number frames the body;
//! otherwise it runs to the close.
//!
//! Oracle, when ferry read a final head (heads httparse refuses are not this target's concern):
//! 1. ferry's head ended where the reference's did, with the same status.
//! 2. An invalid `Content-Length` is refused.
//! 3. A length-framed body is exactly the bytes the length covers; cut short, it is an error.
//! 4. A chunked body the reference reads whole is read the same (ferry may refuse what the
//!    reference calls refusable); one it finds incomplete is an error; one it finds invalid is
//!    an error, except for grammar ferry reads past ([`lenient`]: chunk extensions and trailer
//!    fields, whose bytes are dropped), where what ferry gives starts with what the reference
//!    decoded.
//! 5. A body to the close is every byte after the head.
//! 6. The connection is offered for reuse only after a body read exactly to its end, with
//!    nothing read past it, from a backend that keeps the connection (bytes past it not read yet
//!    are the idle pool's to find: it drops a connection that has some when taking it).

use pingora::http::RequestHeader;
use pingora::ErrorType;

use crate::chunked::{self, Outcome};
use crate::client::H1Client;
use crate::head::UpstreamHead;
use crate::pipe::Pipe;
use crate::RUNTIME;

pub const HEAD_REQUEST: u8 = 1;
pub const UPGRADE: u8 = 2;
pub const EVERY_BYTE: u8 = 4;

/// Reference verdicts on chunked bodies ferry may accept: grammar of parts it reads past.
pub const LENIENT: &[&str] = &[
    "chunk extension name is not a token",
    "chunk extension value is not a token or quoted-string",
    "bad byte in quoted chunk extension value",
    "bad quoted-pair in chunk extension",
    "trailer field line has no colon",
    "trailer field name is not a token",
    "bad byte in trailer field value",
];

/// Whether the reference refused the body for grammar ferry reads past: a reason in [`LENIENT`],
/// or a fault inside a chunk extension (the reference then names the line's end it expected).
fn lenient(body: &[u8], why: &str, at: usize) -> bool {
    let line_start = body[..at.min(body.len())].windows(2).rposition(|w| w == b"\r\n").map_or(0, |i| i + 2);
    let line = &body[line_start..at.min(body.len())];
    LENIENT.contains(&why) || line.first().is_some_and(u8::is_ascii_hexdigit) && line.contains(&b';')
}

/// Encodes a case the way [`check`] reads it (for seeds and tests).
pub fn input(flags: u8, splits: &[u16], response: &[u8]) -> Vec<u8> {
    let mut out = vec![flags, splits.len() as u8];
    for s in splits {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.extend_from_slice(response);
    out
}

/// What ferry's codec did with a response.
#[derive(Debug)]
pub struct Run {
    /// The final head's status and the bytes before its body (informational heads included).
    pub head: Result<(u16, usize), ErrorType>,
    pub body: Vec<u8>,
    /// `Ok` when the body ended, else the error.
    pub ended: Result<(), ErrorType>,
    pub reusable: bool,
    /// Bytes the codec had read past the body when it ended.
    pub past_body: usize,
}

fn reads(flags: u8, offsets: &[u8], response: &[u8]) -> Vec<Vec<u8>> {
    let mut cuts = crate::pipe::cuts(offsets, response.len());
    if flags & EVERY_BYTE != 0 {
        cuts.extend(1..response.len());
    }
    crate::pipe::pieces(response, &cuts)
}

pub fn run(flags: u8, pieces: Vec<Vec<u8>>, total: usize) -> Run {
    RUNTIME.block_on(async {
        let pipe = Pipe::new(pieces);
        let mut req = RequestHeader::build(if flags & HEAD_REQUEST != 0 { "HEAD" } else { "GET" }, b"/", None).unwrap();
        req.append_header("Host", "a").unwrap();
        if flags & UPGRADE != 0 {
            req.append_header("Connection", "upgrade").unwrap();
            req.append_header("Upgrade", "websocket").unwrap();
        }
        let mut c = H1Client::new(Box::new(pipe), None, None);
        c.write_head(&UpstreamHead::new(&req)).await.expect("the pipe takes every write");
        let head = match c.read_head().await {
            Ok(resp) => resp.status.as_u16(),
            Err(e) => {
                return Run {
                    head: Err(e.etype().clone()),
                    body: Vec::new(),
                    ended: Ok(()),
                    reusable: false,
                    past_body: 0,
                };
            }
        };
        // The bytes the codec consumed as heads: all it read but what it holds past the head.
        let unread = c.stream().as_any().downcast_ref::<Pipe>().expect("the pipe").unread().len();
        let consumed = total - unread - c.buffered();
        let mut body = Vec::new();
        let ended = loop {
            match c.read_body().await {
                Ok(Some(piece)) => body.extend_from_slice(piece),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.etype().clone()),
            }
            assert!(body.len() <= total, "more body than input");
        };
        // `read_body` consumes what it handed out at its next call, which returned `None`.
        let past_body = c.buffered();
        let reusable = ended.is_ok() && c.into_reusable().is_some();
        Run { head: Ok((head, consumed)), body, ended, reusable, past_body }
    })
}

/// A field line of a head: name and value (a continuation line folded into the value).
type Field = (Vec<u8>, Vec<u8>);

/// The reference's reading of the response's heads: the final head's status, the position its
/// body starts at, its version, and its field lines (obs-fold replaced by a space, RFC 9112 §5.2).
fn reference_head(response: &[u8]) -> Option<(u16, usize, &[u8], Vec<Field>)> {
    let mut at = 0;
    loop {
        // Empty lines before a status line are skipped (RFC 9112 §2.2).
        while let Some(skip) = [&b"\r\n"[..], b"\n"].into_iter().find(|e| response[at..].starts_with(e)) {
            at += skip.len();
        }
        let rest = &response[at..];
        let end = (0..rest.len()).find_map(|i| {
            if rest[i] != b'\n' {
                return None;
            }
            match rest.get(i + 1..) {
                Some([b'\n', ..]) => Some(i + 2),
                Some([b'\r', b'\n', ..]) => Some(i + 3),
                _ => None,
            }
        })?;
        let head = &rest[..end];
        let mut lines = head.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let status_line = lines.next()?;
        let status: u16 = std::str::from_utf8(status_line.get(9..12)?).ok()?.parse().ok()?;
        let version = status_line.get(..8)?;
        let mut fields: Vec<Field> = Vec::new();
        for l in lines.filter(|l| !l.is_empty()) {
            if matches!(l[0], b' ' | b'\t') {
                if let Some((_, value)) = fields.last_mut() {
                    value.push(b' ');
                    value.extend_from_slice(l.trim_ascii());
                }
            } else if let Some(colon) = l.iter().position(|b| *b == b':') {
                fields.push((l[..colon].trim_ascii().to_vec(), l[colon + 1..].trim_ascii().to_vec()));
            }
        }
        at += end;
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        return Some((status, at, version, fields));
    }
}

fn values<'a>(fields: &'a [Field], name: &str) -> Vec<&'a [u8]> {
    fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| &v[..]).collect()
}

fn tokens<'a>(fields: &'a [Field], name: &str) -> Vec<&'a [u8]> {
    values(fields, name).into_iter().flat_map(|v| v.split(|b| *b == b',')).map(<[u8]>::trim_ascii).collect()
}

/// The first broken oracle property, if any.
pub fn problem(flags: u8, response: &[u8], run: &Run) -> Option<String> {
    let Ok((status, consumed)) = run.head else { return None };
    let Some((ref_status, body_at, version, fields)) = reference_head(response) else {
        return Some("ferry read a head the reference finds no end of".into());
    };
    if (status, consumed) != (ref_status, body_at) {
        return Some(format!("head: ferry {status} ending at {consumed}, reference {ref_status} ending at {body_at}"));
    }
    let rest = &response[body_at..];
    let te = values(&fields, "transfer-encoding");
    let lengths = tokens(&fields, "content-length");
    let http11 = version == b"HTTP/1.1";
    let connection = tokens(&fields, "connection");
    let keeps = !connection.iter().any(|t| t.eq_ignore_ascii_case(b"close"))
        && (http11 || connection.iter().any(|t| t.eq_ignore_ascii_case(b"keep-alive")));
    // Bytes past the body the codec has not read are the idle pool's to find (it drops a
    // connection that has some when it is taken); those it read forbid reuse.
    let reuse_ok = |end: usize| keeps && end <= rest.len() && run.past_body == 0;
    let upgraded = status == 101 && flags & UPGRADE != 0 && http11;
    if flags & HEAD_REQUEST != 0 && !upgraded
        || (100..200).contains(&status) && !upgraded
        || status == 204
        || status == 304
    {
        return match (&run.ended, run.body.is_empty(), run.reusable && !reuse_ok(0)) {
            (Ok(()), true, false) => None,
            _ => {
                Some(format!("no-body response: body {:?}, ended {:?}, reusable {}", run.body, run.ended, run.reusable))
            }
        };
    }
    let chunked = te.last().is_some_and(|v| {
        v.rsplit(|b| *b == b',').next().is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
    });
    if upgraded || !te.is_empty() && !chunked {
        return (run.ended.is_err() || run.body != rest || run.reusable)
            .then(|| format!("to the close: body {} of {}, reusable {}", run.body.len(), rest.len(), run.reusable));
    }
    if chunked {
        let d = chunked::decode(rest);
        return match (&d.outcome, &run.ended) {
            (Outcome::Complete { end }, Ok(())) if d.data == run.body && (!run.reusable || reuse_ok(*end)) => None,
            (Outcome::Complete { .. }, Err(_)) if d.refusable.is_some() => None,
            (Outcome::Incomplete, Err(_)) if d.data.starts_with(&run.body) || run.body.starts_with(&d.data) => None,
            // A body the reference refuses and ferry gives up on: ferry's error ends the exchange
            // and the connection (what it relayed before is the client's truncated body).
            (Outcome::Invalid { .. }, Err(_)) if !run.reusable => None,
            (Outcome::Invalid { why, at }, Ok(())) if lenient(rest, why, *at) && run.body.starts_with(&d.data) => None,
            (outcome, ended) => Some(format!(
                "chunked: reference {outcome:?} ({} bytes, refusable {:?}), ferry {ended:?} ({} bytes), reusable {}",
                d.data.len(),
                d.refusable,
                run.body.len(),
                run.reusable
            )),
        };
    }
    if !lengths.is_empty() {
        let numbers: Option<Vec<u64>> = lengths
            .iter()
            .map(|l| {
                (!l.is_empty() && l.len() <= 18 && l.iter().all(u8::is_ascii_digit))
                    .then(|| std::str::from_utf8(l).unwrap().parse().unwrap())
            })
            .collect();
        let n = match numbers {
            Some(ns) if ns.windows(2).all(|w| w[0] == w[1]) => ns[0] as usize,
            _ => {
                return (run.ended.is_ok() || run.reusable).then(|| "an invalid Content-Length was accepted".into());
            }
        };
        return match &run.ended {
            Ok(()) if rest.len() >= n && run.body == rest[..n] && (!run.reusable || reuse_ok(n)) => None,
            Err(_) if rest.len() < n && rest.starts_with(&run.body) && !run.reusable => None,
            ended => Some(format!(
                "length {n}: {} bytes there, ferry {ended:?} with {} bytes, reusable {}",
                rest.len(),
                run.body.len(),
                run.reusable
            )),
        };
    }
    (run.ended.is_err() || run.body != rest || run.reusable)
        .then(|| format!("to the close: body {} of {}, reusable {}", run.body.len(), rest.len(), run.reusable))
}

/// The fuzz target: panics with a report when the oracle finds a problem.
pub fn check(data: &[u8]) {
    let flags = data.first().copied().unwrap_or(0);
    let n = data.get(1).map_or(0, |n| (n % 33) as usize);
    let rest = data.get(2..).unwrap_or_default();
    let (offsets, response) = rest.split_at((2 * n).min(rest.len()));
    let pieces = reads(flags, offsets, response);
    let run = run(flags, pieces.clone(), response.len());
    if let Some(p) = problem(flags, response, &run) {
        panic!(
            "response_read: {p}\n  flags: {flags}\n  response: {}\n  reads: {:?}\n  run: {run:?}",
            response.escape_ascii(),
            pieces.iter().map(|r| r.escape_ascii().to_string()).collect::<Vec<_>>()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(flags: u8, response: &[u8]) -> Option<String> {
        let data = input(flags, &[], response);
        let n = response.len();
        let mut all = None;
        // Whole, and split before every byte.
        for f in [flags, flags | EVERY_BYTE] {
            let pieces = reads(f, &data[2..2], response);
            let run = run(f, pieces, n);
            all = all.or(problem(f, response, &run));
        }
        all
    }

    #[test]
    fn responses_ferry_frames_right_pass() {
        for (flags, r) in [
            (0, &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..]),
            (0, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"),
            (0, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok"),
            (0, b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok"),
            (0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=\"y\"\r\nok\r\n0\r\nT: 1\r\n\r\n"),
            (0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n"),
            (0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n"),
            (0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw"),
            (0, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"),
            (HEAD_REQUEST, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"),
            (UPGRADE, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nframes"),
            (0, b"HTTP/1.0 200 OK\r\n\r\nto the close"),
            (0, b"HTTP/1.1 200 OK\r\nX: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\nz"),
        ] {
            assert_eq!(verdict(flags, r), None, "{}", r.escape_ascii());
        }
    }

    #[test]
    fn the_oracle_sees_a_body_framed_wrong() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let run = |body: &[u8], past_body| Run {
            head: Ok((200, response.len() - 2)),
            body: body.to_vec(),
            ended: Ok(()),
            reusable: true,
            past_body,
        };
        assert!(problem(0, response, &run(b"o", 0)).is_some());
        assert_eq!(problem(0, response, &run(b"ok", 0)), None);
        let reused = run(b"ok", 1);
        assert!(problem(0, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokX", &reused).is_some());
    }
}
