//! ferry's HTTP/1 client codec: one request and its response on a connection to an endpoint.
//!
//! The fast engine's HTTP/1 exchanges with backends go through here instead of Pingora's client
//! session. The request head is written in one write; the response head is parsed in place
//! (httparse) from a buffer that also holds the first body bytes, and made into the
//! `ResponseHeader` the lifecycle edits, whose values share that buffer; the body is decoded
//! (length, chunked, until close) and handed out as slices of the same buffer. The connection
//! is given back only when the response was read exactly to its end and the backend keeps it
//! alive (RFC 9112 §9.3).
//!
//! Framing of the response (RFC 9112 §6.3): no body for a `HEAD`, `1xx`, `204` or `304`; a
//! `101` to an upgrade request makes the connection a tunnel; `Transfer-Encoding` (which
//! removes a `Content-Length` beside it) frames the body as chunks when `chunked` is its last
//! coding and until the close otherwise; a `Content-Length` whose values disagree or are not
//! numbers is refused (502), a valid one frames the body; without either, the body ends at the
//! close. A response head over [`MAX_RESPONSE_HEAD`] bytes is refused.

use std::mem::MaybeUninit;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::protocols::Stream;
use pingora::time::fast_timeout::fast_timeout;
use pingora::{Error, ErrorType, Result, RetryType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::head::{EditHead, UpstreamHead};

/// Bytes of a response head past which it is refused (nginx refuses past `proxy_buffer_size`,
/// 4–8 KiB by default; this allows large cookies).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

static KEEP_ALIVE: http::HeaderName = http::HeaderName::from_static("keep-alive");

/// Header fields a response head may have.
const MAX_FIELDS: usize = 256;

/// A read's room: the first read of a response (its head and, often, its whole body), and each
/// read of a larger body.
const HEAD_READ: usize = 4 * 1024;
const READ_SIZE: usize = 16 * 1024;

/// Bytes of a chunk-size line, or of the trailer section, past which a chunked body is refused.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 32 * 1024;

/// One HTTP/1 exchange with a backend on `stream`.
pub struct H1Client {
    stream: Stream,
    /// Bytes read from the backend and not yet consumed (after the response head: the body).
    buf: BytesMut,
    /// Bytes of `buf` handed out by the last [`read_body`](Self::read_body), consumed at the next.
    handed_out: usize,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// What the request asked for.
    head_request: bool,
    upgrade_request: bool,
    chunked_request: bool,
    /// Whether the request carried `Connection: close` (the connection is not kept then).
    close_request: bool,
    response: Option<ResponseHeader>,
    body: Body,
    /// Whether the backend keeps the connection after this response, and for how long at most
    /// (its `Keep-Alive: timeout=`).
    keepalive: bool,
    keepalive_timeout: Option<Duration>,
    upgraded: bool,
}

/// Where the response body's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// The head is not read yet.
    Unread,
    /// `n` more bytes.
    Length(u64),
    /// A chunk-size line next.
    ChunkSize,
    /// `n` more bytes of the current chunk.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// The trailer section after the last chunk, `n` bytes of it seen.
    Trailers(usize),
    /// Until the backend closes.
    UntilClose,
    /// The body has been read whole.
    Done,
}

impl H1Client {
    pub fn new(stream: Stream, read_timeout: Option<Duration>, write_timeout: Option<Duration>) -> H1Client {
        H1Client {
            stream,
            buf: BytesMut::new(),
            handed_out: 0,
            read_timeout,
            write_timeout,
            head_request: false,
            upgrade_request: false,
            chunked_request: false,
            close_request: false,
            response: None,
            body: Body::Unread,
            keepalive: false,
            keepalive_timeout: None,
            upgraded: false,
        }
    }

    /// Writes the request head: the client's with the lifecycle's edits, names in their case.
    /// The request body that follows is framed as the head says: chunks when its
    /// `Transfer-Encoding` ends in `chunked`, else as many bytes as its `Content-Length`.
    pub async fn write_head(&mut self, req: &UpstreamHead<'_>) -> Result<()> {
        if req.raw_path().iter().any(|b| matches!(b, b'\0' | b'\r' | b'\n' | b' ')) {
            return Err(up_err(ErrorType::InvalidHTTPHeader, "request target with a byte HTTP/1 cannot carry"));
        }
        let base = req.base();
        let mut head = BytesMut::with_capacity(512 + 64 * base.headers.len());
        req.write_h1(&mut head);
        self.head_request = base.method == http::Method::HEAD;
        self.upgrade_request = base.version == http::Version::HTTP_11 && req.contains(&header::UPGRADE);
        self.chunked_request = last_coding_is_chunked(req.get_all(&header::TRANSFER_ENCODING).last());
        self.close_request = has_token(req.get_all(&header::CONNECTION), b"close");
        self.write_all(&head).await
    }

    /// Writes a piece of the request body (as a chunk when the request is chunked).
    pub async fn write_body(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if !self.chunked_request {
            return self.write_all(data).await;
        }
        let mut framed = Vec::with_capacity(data.len() + 20);
        framed.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        framed.extend_from_slice(data);
        framed.extend_from_slice(b"\r\n");
        self.write_all(&framed).await
    }

    /// Ends the request body (the last chunk of a chunked one).
    pub async fn finish_body(&mut self) -> Result<()> {
        if self.chunked_request {
            self.write_all(b"0\r\n\r\n").await?;
        }
        Ok(())
    }

    async fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        let written = match self.write_timeout {
            Some(t) => {
                fast_timeout(t, write).await.map_err(|_| up_err(ErrorType::WriteTimedout, "writing to the backend"))?
            }
            None => write.await,
        };
        written.map_err(|e| up_because(ErrorType::WriteError, "writing to the backend", e))
    }

    /// Reads the response head: the final one, or a `101` (informational heads before it are
    /// read and dropped).
    pub async fn read_head(&mut self) -> Result<&ResponseHeader> {
        loop {
            if let Some(mut resp) = self.take_head()? {
                if resp.status.is_informational() && resp.status != http::StatusCode::SWITCHING_PROTOCOLS {
                    continue;
                }
                self.frame(&mut resp)?;
                return Ok(self.response.insert(resp));
            }
            if self.buf.len() > MAX_RESPONSE_HEAD {
                return Err(up_err(ErrorType::InvalidHTTPHeader, "response head over 64 KiB"));
            }
            let before = self.buf.len();
            if self.read_more().await? == 0 {
                let mut e = up_err(ErrorType::ConnectionClosed, "backend closed before a response head");
                if before == 0 {
                    // The keep-alive race: a pooled connection closed as the request went out.
                    e.retry = RetryType::ReusedOnly;
                }
                return Err(e);
            }
        }
    }

    /// The response head at the start of `buf` once it is whole, taken off `buf`: parsed once in
    /// place, then made into a `ResponseHeader` whose names and values share its bytes.
    fn take_head(&mut self) -> Result<Option<ResponseHeader>> {
        let malformed = |e| mark_up(Error::because(ErrorType::InvalidHTTPHeader, "malformed response head", e));
        // Uninitialised: filling 256 fields (8 KiB) per response cost more than parsing it.
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match response_parser()
            .parse_response_with_uninit_headers(&mut parsed, &self.buf, &mut fields)
            .map_err(malformed)?
        {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return Ok(None),
        };
        let mut resp = ResponseHeader::build(parsed.code.unwrap_or(0), Some(parsed.headers.len())).map_err(mark_up)?;
        resp.set_version(if parsed.version == Some(0) { http::Version::HTTP_10 } else { http::Version::HTTP_11 });
        resp.set_reason_phrase(parsed.reason).map_err(mark_up)?;
        // Where each name and value lies in the head, so that they can share it once it is
        // taken off the buffer.
        let base = self.buf.as_ptr() as usize;
        let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
        let mut spans = [const { MaybeUninit::<((usize, usize), (usize, usize))>::uninit() }; MAX_FIELDS];
        let n = parsed.headers.len();
        for (span, field) in spans.iter_mut().zip(parsed.headers.iter()) {
            span.write((at(field.name.as_bytes()), at(field.value)));
        }
        let head = self.buf.split_to(len).freeze();
        for span in &spans[..n] {
            // SAFETY: the first `n` spans were written above.
            let ((name_at, name_len), (value_at, value_len)) = unsafe { span.assume_init() };
            let name = head.slice(name_at..name_at + name_len);
            let raw = &head[value_at..value_at + value_len];
            let value = if raw.iter().any(|b| matches!(b, b'\r' | b'\n')) {
                // obs-fold, which the parser allows in responses: each fold becomes a space.
                Bytes::from(unfold(raw))
            } else {
                head.slice(value_at..value_at + value_len)
            };
            resp.append_header(name, pingora::http::header_value_from_raw(value)).map_err(mark_up)?;
        }
        Ok(Some(resp))
    }

    /// How the body of `resp` is framed, and whether the connection outlives it.
    fn frame(&mut self, resp: &mut ResponseHeader) -> Result<()> {
        if resp.headers.contains_key(header::TRANSFER_ENCODING) && resp.headers.contains_key(header::CONTENT_LENGTH) {
            resp.remove_header(&header::CONTENT_LENGTH);
        }
        let status = resp.status.as_u16();
        let te = resp.headers.get_all(header::TRANSFER_ENCODING).iter().next_back();
        let connection = resp.headers.get_all(header::CONNECTION);
        self.upgraded = status == 101 && self.upgrade_request && resp.version == http::Version::HTTP_11;
        self.body = if self.upgraded {
            Body::UntilClose
        } else if self.head_request || status < 200 || status == 204 || status == 304 {
            Body::Done
        } else if te.is_some() {
            if last_coding_is_chunked(te) {
                Body::ChunkSize
            } else {
                Body::UntilClose
            }
        } else {
            match content_length(resp)? {
                Some(0) => Body::Done,
                Some(n) => Body::Length(n),
                None => Body::UntilClose,
            }
        };
        self.keepalive = !self.upgraded
            && status != 101
            && self.body != Body::UntilClose
            && !self.close_request
            && !(resp.version == http::Version::HTTP_10 && te.is_some())
            && if has_token(connection.iter(), b"close") {
                false
            } else {
                resp.version == http::Version::HTTP_11 || has_token(connection.iter(), b"keep-alive")
            };
        self.keepalive_timeout = resp.headers.get(&KEEP_ALIVE).and_then(keepalive_timeout);
        if self.keepalive_timeout == Some(Duration::ZERO) {
            self.keepalive = false;
        }
        Ok(())
    }

    /// The response head read (after [`read_head`](Self::read_head)).
    pub fn response(&self) -> Option<&ResponseHeader> {
        self.response.as_ref()
    }

    /// Takes the response head (for the client); [`response`](Self::response) is `None` after.
    pub fn take_response(&mut self) -> Option<ResponseHeader> {
        self.response.take()
    }

    /// Whether the request upgraded the connection (a `101` to an upgrade request).
    pub fn upgraded(&self) -> bool {
        self.upgraded
    }

    /// The next piece of the response body, decoded; `None` at its end.
    pub async fn read_body(&mut self) -> Result<Option<&[u8]>> {
        self.buf.advance(self.handed_out);
        self.handed_out = 0;
        loop {
            match self.body {
                Body::Unread => return Err(up_err(ErrorType::InternalError, "response body before its head")),
                Body::Done => return Ok(None),
                Body::Length(left) | Body::ChunkData(left) => {
                    if self.buf.is_empty() && self.read_more().await? == 0 {
                        return Err(up_err(ErrorType::ConnectionClosed, "backend closed in the response body"));
                    }
                    let n = (self.buf.len() as u64).min(left);
                    let rest = left - n;
                    self.body = match self.body {
                        Body::Length(_) if rest == 0 => Body::Done,
                        Body::Length(_) => Body::Length(rest),
                        _ if rest == 0 => Body::ChunkEnd,
                        _ => Body::ChunkData(rest),
                    };
                    self.handed_out = n as usize;
                    return Ok(Some(&self.buf[..n as usize]));
                }
                Body::UntilClose => {
                    if self.buf.is_empty() && self.read_more().await? == 0 {
                        self.body = Body::Done;
                        return Ok(None);
                    }
                    self.handed_out = self.buf.len();
                    return Ok(Some(&self.buf[..]));
                }
                Body::ChunkSize => match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((len, size))) if chunk_size_line(&self.buf[..len - 2]) => {
                        self.buf.advance(len);
                        self.body = if size == 0 { Body::Trailers(0) } else { Body::ChunkData(size) };
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() <= MAX_CHUNK_LINE => self.need_more().await?,
                    _ => return Err(up_err(ErrorType::InvalidHTTPHeader, "malformed chunk size from the backend")),
                },
                Body::ChunkEnd => {
                    if self.buf.len() < 2 {
                        self.need_more().await?;
                    } else if self.buf.starts_with(b"\r\n") {
                        self.buf.advance(2);
                        self.body = Body::ChunkSize;
                    } else {
                        return Err(up_err(ErrorType::InvalidHTTPHeader, "chunk data longer than its size"));
                    }
                }
                Body::Trailers(seen) => match self.buf.windows(2).position(|w| w == b"\r\n") {
                    // The empty line ends the trailer section (whose fields are not relayed).
                    Some(0) => {
                        self.buf.advance(2);
                        self.body = Body::Done;
                    }
                    Some(line) if self.buf[..line].iter().any(|b| matches!(b, b'\r' | b'\n')) => {
                        return Err(up_err(ErrorType::InvalidHTTPHeader, "bare CR or LF in response trailers"));
                    }
                    Some(line) if seen + line + 2 <= MAX_TRAILERS => {
                        self.buf.advance(line + 2);
                        self.body = Body::Trailers(seen + line + 2);
                    }
                    None if seen + self.buf.len() <= MAX_TRAILERS => self.need_more().await?,
                    _ => return Err(up_err(ErrorType::InvalidHTTPHeader, "response trailers over 32 KiB")),
                },
            }
        }
    }

    /// Reads more when the body's framing needs bytes that have not arrived; the backend
    /// closing meanwhile is an error.
    async fn need_more(&mut self) -> Result<()> {
        if self.read_more().await? == 0 {
            return Err(up_err(ErrorType::ConnectionClosed, "backend closed in the response body"));
        }
        Ok(())
    }

    /// One read from the backend, appended to `buf`; `0` when it closed.
    async fn read_more(&mut self) -> Result<usize> {
        if self.buf.capacity() == 0 {
            self.buf.reserve(HEAD_READ);
        } else if self.buf.capacity() - self.buf.len() < HEAD_READ / 4 {
            self.buf.reserve(READ_SIZE);
        }
        let read = self.stream.read_buf(&mut self.buf);
        let n = match self.read_timeout {
            Some(t) => {
                fast_timeout(t, read).await.map_err(|_| up_err(ErrorType::ReadTimedout, "reading from the backend"))?
            }
            None => read.await,
        };
        n.map_err(|e| up_because(ErrorType::ReadError, "reading from the backend", e))
    }

    /// Bytes read from the backend and not consumed yet (after the head: body bytes).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.handed_out
    }

    /// The connection.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Whether the body has been read to its end.
    pub fn body_done(&self) -> bool {
        self.body == Body::Done
    }

    /// The connection, if it can carry another request: the response was read exactly to its
    /// end (nothing past it) and the backend keeps the connection. With the backend's own
    /// keep-alive timeout, when it sent one.
    pub fn into_reusable(mut self) -> Option<(Stream, Option<Duration>)> {
        self.buf.advance(self.handed_out);
        (self.keepalive && self.body == Body::Done && self.buf.is_empty())
            .then_some((self.stream, self.keepalive_timeout))
    }

    /// The connection and the bytes read past the response head (an upgraded connection's
    /// first bytes).
    pub fn into_parts(mut self) -> (Stream, BytesMut) {
        self.buf.advance(self.handed_out);
        (self.stream, self.buf)
    }
}

/// The parser of response heads: tolerant where RFC 9112 lets a recipient be (whitespace
/// before a colon, obs-fold; Pingora's client reads responses so too).
fn response_parser() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    config.allow_spaces_after_header_name_in_responses(true).allow_obsolete_multiline_headers_in_responses(true);
    config
}

/// The response's body length from its `Content-Length` fields: all values (also within one
/// comma-separated field) must be the same number; `None` without the field.
fn content_length(resp: &ResponseHeader) -> Result<Option<u64>> {
    let mut length = None;
    for value in resp.headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            let n = (!part.is_empty() && part.len() <= 18 && part.iter().all(u8::is_ascii_digit))
                .then(|| part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')));
            match (n, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(seen)) if n == seen => {}
                _ => return Err(up_err(ErrorType::InvalidHTTPHeader, "invalid Content-Length from the backend")),
            }
        }
    }
    Ok(length)
}

/// Whether a line httparse read as a chunk size (CRLF taken off) is one by RFC 9112 §7.1: hex
/// digits, then nothing or an extension (`;`, whitespace only before it). The parser also
/// takes a line without digits (as 0), whitespace after the size, and any byte, a bare LF too,
/// in an extension.
fn chunk_size_line(line: &[u8]) -> bool {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let mut rest = line[digits..].iter().skip_while(|b| matches!(b, b' ' | b'\t'));
    digits > 0 && !line.contains(&b'\n') && (digits == line.len() || rest.next() == Some(&b';'))
}

/// Whether the last coding of a `Transfer-Encoding` field is `chunked`.
fn last_coding_is_chunked(te: Option<&HeaderValue>) -> bool {
    te.and_then(|v| v.as_bytes().rsplit(|b| *b == b',').next())
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Whether a comma-separated field (`Connection`) names `token`.
fn has_token<'a>(values: impl Iterator<Item = &'a HeaderValue>, token: &[u8]) -> bool {
    values.flat_map(crate::safety::tokens_in).any(|t| t.eq_ignore_ascii_case(token))
}

/// `timeout=N` of a `Keep-Alive` field.
fn keepalive_timeout(v: &HeaderValue) -> Option<Duration> {
    let v = std::str::from_utf8(v.as_bytes()).ok()?;
    v.split(',').find_map(|p| {
        let (k, n) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("timeout").then(|| n.trim().parse().ok().map(Duration::from_secs))?
    })
}

/// A folded field value with each line break and the whitespace around it made one space.
fn unfold(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut folding = false;
    for &b in value {
        if matches!(b, b'\r' | b'\n') {
            folding = true;
            continue;
        }
        if folding && matches!(b, b' ' | b'\t') {
            continue;
        }
        if folding {
            while out.last().is_some_and(|c| matches!(c, b' ' | b'\t')) {
                out.pop();
            }
            out.push(b' ');
            folding = false;
        }
        out.push(b);
    }
    out
}

fn mark_up(mut e: Box<Error>) -> Box<Error> {
    e.as_up();
    e
}

/// An error of the upstream's, of `kind`.
pub(crate) fn up_err(kind: ErrorType, why: &'static str) -> Box<Error> {
    mark_up(Error::explain(kind, why))
}

fn up_because(kind: ErrorType, why: &'static str, cause: std::io::Error) -> Box<Error> {
    mark_up(Error::because(kind, why, cause))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;
    use tokio_test::io::Builder;

    fn request(method: &str, fields: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(method, b"/p?q=1", None).unwrap();
        for (n, v) in fields {
            req.append_header(n.to_string(), *v).unwrap();
        }
        req
    }

    /// A client whose backend expects `sent` (one write each) and answers `reads` (one read each).
    fn client(sent: &[&[u8]], reads: &[&[u8]]) -> H1Client {
        let mut mock = Builder::new();
        for w in sent {
            mock.write(w);
        }
        for r in reads {
            mock.read(r);
        }
        H1Client::new(Box::new(mock.build()), None, None)
    }

    /// The whole body, as the pieces `read_body` gives.
    async fn body(c: &mut H1Client) -> Result<Vec<u8>> {
        let mut all = Vec::new();
        while let Some(piece) = c.read_body().await? {
            all.extend_from_slice(piece);
        }
        Ok(all)
    }

    /// Reads one response to a `GET` from `wire` split at `at` (two reads; one if `at` is 0).
    async fn response_split(wire: &[u8], at: usize) -> (Result<(ResponseHeader, Vec<u8>)>, H1Client) {
        let pieces: Vec<&[u8]> = if at == 0 { vec![wire] } else { vec![&wire[..at], &wire[at..]] };
        let mut c = client(&[], &pieces);
        let got = async {
            c.read_head().await?;
            let head = c.take_response().unwrap();
            Ok((head, body(&mut c).await?))
        }
        .await;
        (got, c)
    }

    #[tokio::test]
    async fn the_request_goes_out_as_its_head_says_with_names_in_their_case() {
        let req = request("POST", &[("Host", "a.test"), ("X-Mixed-Case", "v"), ("transfer-encoding", "chunked")]);
        let mut c = client(
            &[
                b"POST /p?q=1 HTTP/1.1\r\nHost: a.test\r\nX-Mixed-Case: v\r\ntransfer-encoding: chunked\r\n\r\n",
                b"3\r\nabc\r\n",
                b"10\r\n0123456789abcdef\r\n",
                b"0\r\n\r\n",
            ],
            &[],
        );
        c.write_head(&UpstreamHead::new(&req)).await.unwrap();
        c.write_body(b"abc").await.unwrap();
        c.write_body(b"").await.unwrap();
        c.write_body(b"0123456789abcdef").await.unwrap();
        c.finish_body().await.unwrap();
        // A sized body goes as it is.
        let req = request("PUT", &[("Content-Length", "3")]);
        let mut c = client(&[b"PUT /p?q=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\n", b"abc"], &[]);
        c.write_head(&UpstreamHead::new(&req)).await.unwrap();
        c.write_body(b"abc").await.unwrap();
        c.finish_body().await.unwrap();
    }

    #[tokio::test]
    async fn bodies_are_decoded_exactly_however_the_reads_split_them() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: 1\r\n\r\nhello world", b"hello world"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6 ; e\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
                b"hello world",
            ),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", b""),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok", b"ok"),
        ];
        for (wire, want) in cases {
            for at in 0..wire.len() {
                let (got, c) = response_split(wire, at).await;
                let (head, body) = got.unwrap_or_else(|e| panic!("{} at {at}: {e}", String::from_utf8_lossy(wire)));
                assert_eq!(body, *want, "{} at {at}", String::from_utf8_lossy(wire));
                assert!(head.status.as_u16() >= 200);
                assert!(c.into_reusable().is_some(), "{} at {at}: kept", String::from_utf8_lossy(wire));
            }
        }
    }

    #[tokio::test]
    async fn transfer_encoding_removes_content_length_and_other_codings_end_at_the_close() {
        let (got, c) = response_split(
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            0,
        )
        .await;
        let (head, body) = got.unwrap();
        assert_eq!((head.headers.get(header::CONTENT_LENGTH), &body[..]), (None, &b"ok"[..]));
        assert!(c.into_reusable().is_some());
        let (got, c) = response_split(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw bytes", 0).await;
        assert_eq!(got.unwrap().1, b"raw bytes");
        assert!(c.into_reusable().is_none(), "close-delimited");
    }

    #[tokio::test]
    async fn connections_are_kept_only_when_the_backend_keeps_them_and_nothing_is_left_over() {
        let kept = |wire: &'static [u8]| async move {
            let (got, c) = response_split(wire, 0).await;
            got.unwrap();
            c.into_reusable().map(|(_, timeout)| timeout)
        };
        assert_eq!(kept(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await, Some(None));
        assert_eq!(
            kept(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=3, max=9\r\nContent-Length: 0\r\n\r\n").await,
            Some(Some(Duration::from_secs(3)))
        );
        assert_eq!(kept(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n").await, None);
        assert_eq!(kept(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").await, None);
        assert_eq!(kept(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n").await, Some(None));
        assert_eq!(kept(b"HTTP/1.1 200 OK\r\n\r\nuntil close").await, None);
        // Bytes past the response: the backend is out of step.
        assert_eq!(kept(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n").await, None);
        // A request that asked for the close.
        let mut c = client(
            &[b"GET /p?q=1 HTTP/1.1\r\nConnection: close\r\n\r\n"],
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
        );
        c.write_head(&UpstreamHead::new(&request("GET", &[("Connection", "close")]))).await.unwrap();
        c.read_head().await.unwrap();
        assert_eq!(body(&mut c).await.unwrap(), b"");
        assert!(c.into_reusable().is_none());
    }

    #[tokio::test]
    async fn head_requests_and_upgrades_are_framed_by_the_request() {
        let mut c = client(&[b"HEAD /p?q=1 HTTP/1.1\r\n\r\n"], &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"]);
        c.write_head(&UpstreamHead::new(&request("HEAD", &[]))).await.unwrap();
        c.read_head().await.unwrap();
        assert_eq!(body(&mut c).await.unwrap(), b"");
        assert!(c.into_reusable().is_some());

        let up = request("GET", &[("Connection", "upgrade"), ("Upgrade", "websocket")]);
        let mut c = client(
            &[b"GET /p?q=1 HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"],
            &[b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nfirst frame"],
        );
        c.write_head(&UpstreamHead::new(&up)).await.unwrap();
        assert_eq!(c.read_head().await.unwrap().status, 101);
        assert!(c.upgraded());
        let (_, early) = c.into_parts();
        assert_eq!(&early[..], b"first frame");
        // A 101 to a request that asked for no upgrade is not one.
        let mut c = client(&[b"GET /p?q=1 HTTP/1.1\r\n\r\n"], &[b"HTTP/1.1 101 Switching Protocols\r\n\r\n"]);
        c.write_head(&UpstreamHead::new(&request("GET", &[]))).await.unwrap();
        assert_eq!(c.read_head().await.unwrap().status, 101);
        assert!(!c.upgraded());
        assert!(c.into_reusable().is_none());
    }

    #[tokio::test]
    async fn malformed_or_cut_responses_are_errors() {
        let fails = |wire: &'static [u8]| async move {
            let (got, _) = response_split(wire, 0).await;
            got.err().map(|e| e.etype().clone())
        };
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nok\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\nHTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a\nb\r\nok\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\nY: b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nok\r\n0\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        ] {
            assert_eq!(fails(wire).await, Some(ErrorType::InvalidHTTPHeader), "{}", String::from_utf8_lossy(wire));
        }
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nok",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
            b"HTTP/1.1 200 OK\r\nContent-",
            b"",
        ] {
            assert_eq!(fails(wire).await, Some(ErrorType::ConnectionClosed), "{}", String::from_utf8_lossy(wire));
        }
        // The keep-alive race (nothing at all) may be replayed; a cut head may not.
        let (got, _) = response_split(b"", 0).await;
        assert_eq!(got.unwrap_err().retry, RetryType::ReusedOnly);
        let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(MAX_RESPONSE_HEAD));
        let mut c = client(&[], &[big.as_bytes()]);
        assert_eq!(c.read_head().await.unwrap_err().etype(), &ErrorType::InvalidHTTPHeader);
    }

    #[tokio::test]
    async fn folded_values_are_unfolded_and_reason_phrases_kept() {
        let (got, _) =
            response_split(b"HTTP/1.1 299 Fine Indeed\r\nX-Fold: a\r\n  b\r\nContent-Length: 0\r\n\r\n", 0).await;
        let (head, _) = got.unwrap();
        assert_eq!(head.headers.get("x-fold").unwrap(), "a b");
        assert_eq!(head.get_reason_phrase(), Some("Fine Indeed"));
    }
}
