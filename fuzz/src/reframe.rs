//! `chunked_reframe`: a client's chunked request body, split across reads, through the fast
//! path's body loop (gateway/src/h1.rs `forward` and `read_body`), checked against the reference
//! decoder in [`crate::chunked`].
//!
//! The server side is Pingora's HTTP/1 server session, as in h1.rs: it reads the head
//! `POST / HTTP/1.1`, `Host: a`, `Transfer-Encoding: chunked`, then the body in the reads the
//! input chooses; `read_body_bytes` pieces are read until the end, empty ones skipped, and each
//! written to Pingora's HTTP/1 client session (which re-chunks it) and `finish_body` adds the
//! last-chunk. What the client session writes is the upstream request.
//!
//! Input: `flags`, `n`, `n` split offsets (u16 little-endian, taken modulo the body's length + 1),
//! then the body. Flags: bit 0 sends the first body piece in the head's read; bit 1 splits the
//! body before every byte; bit 2 after every CR and every LF; bit 3 hands the first read to the
//! session as bytes already received (`set_pipelined_prefix`), as h1.rs does for the next request
//! on a kept-alive connection and the Pingora engine for every request head.
//!
//! Oracle (see [`problem`]):
//! 1. The upstream body is one chunked message of exactly the forwarded bytes, ending at its
//!    single last-chunk with nothing after it, when the client's body ended; when the session
//!    failed, it is a cut message (the reference reads it as incomplete: no last-chunk).
//! 2. A body the reference accepts is forwarded as the same bytes and ends where the reference
//!    says (what follows is the next request on the connection, never part of this one). The
//!    session may refuse it only where [`crate::chunked::Decoded::refusable`] allows.
//! 3. A body the reference finds incomplete is never forwarded as complete.
//! 4. Whatever the outcome, the bytes forwarded and the reference's bytes agree up to where
//!    either stopped.
//!
//! Bodies the reference refuses and Pingora takes (it tolerates some grammar errors: see
//! [`LENIENCY`]) are allowed when 1 holds: the backend gets ferry's re-framing, never the
//! client's bytes.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession as ClientSession;
use pingora::protocols::http::v1::server::HttpSession as ServerSession;

use crate::chunked::{self, Outcome};
use crate::pipe::Pipe;
use crate::RUNTIME;

/// The request head the client sends before the body.
pub const HEAD: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";

/// A fuzz input, decoded.
#[derive(Debug, Clone)]
pub struct Case {
    pub body: Vec<u8>,
    /// What the client's successive reads return, the head first.
    pub reads: Vec<Vec<u8>>,
    /// The first read is handed over as already received bytes.
    pub prefix: bool,
}

pub const WITH_HEAD: u8 = 1;
pub const EVERY_BYTE: u8 = 2;
pub const AT_LINE_ENDS: u8 = 4;
pub const AS_PREFIX: u8 = 8;

/// Encodes a case the way [`Case::from_input`] reads it (for seeds and tests).
pub fn input(flags: u8, splits: &[u16], body: &[u8]) -> Vec<u8> {
    assert!(splits.len() <= 32);
    let mut out = vec![flags, splits.len() as u8];
    for s in splits {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.extend_from_slice(body);
    out
}

impl Case {
    pub fn from_input(data: &[u8]) -> Case {
        let flags = data.first().copied().unwrap_or(0);
        let n = data.get(1).map_or(0, |n| (n % 33) as usize);
        let rest = data.get(2..).unwrap_or_default();
        let (offsets, body) = rest.split_at((2 * n).min(rest.len()));
        let body = body.to_vec();
        let mut cuts = crate::pipe::cuts(offsets, body.len());
        if flags & EVERY_BYTE != 0 {
            cuts.extend(1..body.len());
        }
        if flags & AT_LINE_ENDS != 0 {
            cuts.extend(body.iter().enumerate().filter(|(_, b)| matches!(b, b'\r' | b'\n')).map(|(i, _)| i + 1));
        }
        let mut reads = vec![HEAD.to_vec()];
        let mut pieces = crate::pipe::pieces(&body, &cuts).into_iter();
        if flags & WITH_HEAD != 0 {
            if let Some(first) = pieces.next() {
                reads[0].extend(first);
            }
        }
        reads.extend(pieces);
        Case { body, reads, prefix: flags & AS_PREFIX != 0 }
    }
}

/// What the fast path did with a case.
#[derive(Debug, Clone)]
pub struct Run {
    /// The non-empty pieces `read_body_bytes` returned, in order (what was forwarded).
    pub forwarded: Vec<u8>,
    pub empty_pieces: usize,
    /// `Ok` when the session said the body ended, else its error.
    pub ended: Result<(), String>,
    /// The upstream request's body as the client session wrote it.
    pub upstream: Vec<u8>,
    /// After an ended body: the bytes the connection holds for the next request.
    pub leftover: Option<Vec<u8>>,
}

/// Empty pieces in a row after which the loop is taken to make no progress (h1.rs would spin).
const STALL: usize = 10_000;

/// Runs the body loop of h1.rs over `case`. `skip_empty: false` is the loop before the fix of
/// issue 14 (empty pieces written upstream), kept to show the oracle catches it.
pub fn run(case: &Case, skip_empty: bool) -> Run {
    RUNTIME.block_on(async {
        let mut reads = case.reads.clone();
        let prefix = if case.prefix { Some(reads.remove(0)) } else { None };
        let mut ds = ServerSession::new(Box::new(Pipe::new(reads)));
        ds.set_pipelining_enabled(true);
        if let Some(prefix) = prefix {
            ds.set_pipelined_prefix(bytes::BytesMut::from(&prefix[..]));
        }
        match ds.read_request().await {
            Ok(Some(_)) => {}
            other => panic!("the fixed request head did not parse: {other:?}"),
        }
        // As h1.rs: the body read timeout, and the body-empty check before forwarding.
        ds.set_read_timeout(Some(Duration::from_secs(60)));
        assert!(!ds.is_body_empty(), "a chunked request has a body");

        let upstream = Pipe::new([]);
        let written = upstream.written.clone();
        let mut us = ClientSession::new(Box::new(upstream));
        let mut head = RequestHeader::build("POST", b"/", None).unwrap();
        head.insert_header("host", "a").unwrap();
        head.insert_header("transfer-encoding", "chunked").unwrap();
        us.write_request_header(Box::new(head)).await.expect("writing to memory");
        let head_len = written.lock().unwrap().len();

        let mut forwarded = Vec::new();
        let mut empty_pieces = 0;
        let mut stalled = 0;
        let ended = loop {
            match ds.read_body_bytes().await {
                Ok(Some(piece)) if piece.is_empty() => {
                    empty_pieces += 1;
                    stalled += 1;
                    if stalled > STALL {
                        break Err(format!("read_body_bytes returned {STALL} empty pieces in a row (no progress)"));
                    }
                    if !skip_empty {
                        us.write_body(&piece).await.expect("writing to memory");
                    }
                }
                Ok(Some(piece)) => {
                    stalled = 0;
                    forwarded.extend_from_slice(&piece);
                    us.write_body(&piece).await.expect("writing to memory");
                }
                Ok(None) => {
                    us.finish_body().await.expect("writing to memory");
                    break Ok(());
                }
                Err(e) => break Err(e.to_string()),
            }
        };
        let upstream = written.lock().unwrap()[head_len..].to_vec();
        let leftover = match ended {
            Ok(()) => match ds.reuse().await {
                Ok(Some(reusable)) => {
                    let (stream, prefix) = reusable.into_parts();
                    let pipe = stream.into_any().downcast::<Pipe>().expect("the session's stream is the pipe");
                    let mut rest = prefix.map(|p| p.to_vec()).unwrap_or_default();
                    rest.extend(pipe.unread());
                    Some(rest)
                }
                other => panic!("a session whose body ended is reusable: {:?}", other.map(|r| r.is_some())),
            },
            Err(_) => None,
        };
        Run { forwarded, empty_pieces, ended, upstream, leftover }
    })
}

/// Grammar errors of the reference that Pingora tolerated (each noted once on stderr).
pub static LENIENCY: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

fn esc(b: &[u8]) -> String {
    let s = b.escape_ascii().to_string();
    if s.len() > 400 {
        format!("{}…({} bytes)", &s[..400], b.len())
    } else {
        s
    }
}

/// The first broken oracle property of `run` over `case`, if any.
pub fn problem(case: &Case, run: &Run) -> Option<String> {
    // 1. One message upstream, or a cut one.
    let up = chunked::decode(&run.upstream);
    match (&run.ended, &up.outcome) {
        (Ok(()), Outcome::Complete { end }) if *end == run.upstream.len() && up.data == run.forwarded => {}
        (Ok(()), outcome) => {
            return Some(format!(
                "upstream body is not one chunked message of the forwarded bytes ({outcome:?}, {} of {} bytes decoded \
                 as the message): {}",
                up.data.len(),
                run.forwarded.len(),
                esc(&run.upstream)
            ))
        }
        (Err(_), Outcome::Incomplete) if up.data == run.forwarded => {}
        (Err(e), outcome) => {
            return Some(format!(
                "the session failed ({e}) but the upstream got {outcome:?}, not a cut message: {}",
                esc(&run.upstream)
            ))
        }
    }
    // 4. Agreement up to where either stopped.
    let reference = chunked::decode(&case.body);
    if !(run.forwarded.starts_with(&reference.data) || reference.data.starts_with(&run.forwarded)) {
        return Some(format!(
            "forwarded bytes {} disagree with the reference's {} ({:?})",
            esc(&run.forwarded),
            esc(&reference.data),
            reference.outcome
        ));
    }
    // 2. and 3.
    match (&reference.outcome, &run.ended) {
        (Outcome::Complete { end }, Ok(())) => {
            if run.forwarded != reference.data {
                return Some(format!("forwarded {} instead of {}", esc(&run.forwarded), esc(&reference.data)));
            }
            let leftover = run.leftover.as_deref().unwrap_or_default();
            if leftover != &case.body[*end..] {
                return Some(format!(
                    "the body ended with {} left for the next request; the reference ends it at byte {end}, leaving {}",
                    esc(leftover),
                    esc(&case.body[*end..])
                ));
            }
        }
        (Outcome::Complete { .. }, Err(e)) if reference.refusable.is_none() => {
            return Some(format!("a valid chunked body was refused: {e}"));
        }
        (Outcome::Incomplete, Ok(())) => {
            return Some(format!(
                "the body was forwarded as complete ({} bytes) but the client had not finished it",
                run.forwarded.len()
            ));
        }
        (Outcome::Invalid { why, .. }, Ok(())) if LENIENCY.lock().unwrap().insert(why) => {
            eprintln!("chunked_reframe: note: Pingora accepts a body the reference refuses ({why})");
        }
        _ => {}
    }
    None
}

/// The fuzz target: panics with a report when the oracle finds a problem.
pub fn check(data: &[u8]) {
    let case = Case::from_input(data);
    let run = run(&case, true);
    if let Some(p) = problem(&case, &run) {
        panic!(
            "chunked_reframe: {p}\n  body: {}\n  reads: {:?}\n  forwarded: {}\n  session: {:?}\n  upstream: {}",
            esc(&case.body),
            case.reads.iter().map(|r| esc(r)).collect::<Vec<_>>(),
            esc(&run.forwarded),
            run.ended,
            esc(&run.upstream)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(flags: u8, splits: &[u16], body: &[u8], skip_empty: bool) -> Option<String> {
        let case = Case::from_input(&input(flags, splits, body));
        problem(&case, &run(&case, skip_empty))
    }

    #[test]
    fn splits_come_from_the_input() {
        let case = Case::from_input(&input(0, &[3, 1, 300], b"abcdef"));
        assert_eq!(case.reads, [HEAD.to_vec(), b"a".to_vec(), b"bc".to_vec(), b"def".to_vec()]);
        let case = Case::from_input(&input(WITH_HEAD | AT_LINE_ENDS, &[], b"1\r\nx"));
        assert_eq!(case.reads, [[HEAD, b"1\r"].concat(), b"\n".to_vec(), b"x".to_vec()]);
        assert_eq!(Case::from_input(&input(EVERY_BYTE, &[], b"abc")).reads.len(), 4);
    }

    #[test]
    fn valid_bodies_pass_however_split() {
        let bodies: &[&[u8]] = &[
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for body in bodies {
            for flags in
                [0, WITH_HEAD, EVERY_BYTE, AT_LINE_ENDS, WITH_HEAD | EVERY_BYTE, WITH_HEAD | AS_PREFIX, AS_PREFIX]
            {
                assert_eq!(verdict(flags, &[], body, true), None, "{flags} {}", esc(body));
            }
        }
    }

    /// The request desync of issue 14: without skipping empty pieces, a body split inside a
    /// chunk-size line ends early upstream. The oracle must see it.
    #[test]
    fn the_issue_14_desync_is_caught() {
        let body = b"5\r\nhello\r\n2D\r\nGET /admin/secret HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n\r\n0\r\n\r\n";
        assert_eq!(verdict(EVERY_BYTE, &[], body, true), None);
        let found = verdict(EVERY_BYTE, &[], body, false).expect("the old loop's desync is found");
        assert!(found.contains("not one chunked message"), "{found}");
    }

    #[test]
    fn truncated_and_invalid_bodies_are_not_forwarded_as_complete() {
        for body in [&b"5\r\nhel"[..], b"5\r\nhello\r\n", b"5\r\nhello\r\n0\r\n", b"zz\r\n", b"5\r\nhelloXX0\r\n\r\n"] {
            for flags in [0, EVERY_BYTE] {
                assert_eq!(verdict(flags, &[], body, true), None, "{}", esc(body));
            }
        }
    }
}
