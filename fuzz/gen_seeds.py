#!/usr/bin/env python3
"""Writes the checked-in seed corpora (fuzz/seeds/<target>/): the cases of issue 14 and their
neighbours. Run from anywhere; it replaces the seeds it names and leaves other files alone.
The chunked_reframe input format is described in fuzz/src/reframe.rs."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def req(line, *fields, body=b"", eol=b"\r\n"):
    head = line.encode() + eol + b"".join(f.encode() + eol for f in fields) + eol
    return head + body


HOST = "Host: a.test"
heads = {
    # Paths (issue 14 row 3 and the path rules).
    "path-dotdot-encoded-slash": req("GET /public/..%2fadmin/x HTTP/1.1", HOST),
    "path-encoded-dotdot-slash": req("GET /public/%2e%2e%2fadmin/x HTTP/1.1", HOST),
    "path-dotdot-semicolon": req("GET /public/..;/admin HTTP/1.1", HOST),
    "path-dotdot-params": req("GET /public/..;x=1/admin HTTP/1.1", HOST),
    "path-dot-encoded-semicolon": req("GET /public/.%3Bx/admin HTTP/1.1", HOST),
    "path-dotdot-encoded-backslash": req("GET /public/..%5cadmin HTTP/1.1", HOST),
    "path-backslash": req("GET /public\\..\\admin HTTP/1.1", HOST),
    "path-dot-segments": req("GET /a/./b/../c HTTP/1.1", HOST),
    "path-mixed-dots": req("GET /a/.%2e/b/%2E HTTP/1.1", HOST),
    "path-encoded-nul": req("GET /a%00.html HTTP/1.1", HOST),
    "path-encoded-crlf": req("GET /a%0d%0aX:%20y HTTP/1.1", HOST),
    "path-encoded-del": req("GET /a%7F HTTP/1.1", HOST),
    "path-bad-percent": req("GET /a/%zz/%4 HTTP/1.1", HOST),
    "path-double-encoded": req("GET /public/%252e%252e/admin HTTP/1.1", HOST),
    "path-ok-encoded": req("GET /a%20b/%41%7e;v=1/...?q=/../x HTTP/1.1", HOST),
    "path-double-slash": req("GET //a//b HTTP/1.1", HOST),
    "path-query-dots": req("GET /a?x=/../../etc HTTP/1.1", HOST),
    "path-fragment": req("GET /a#/../b HTTP/1.1", HOST),
    "path-raw-control": b"GET /a\x01b HTTP/1.1\r\nHost: a.test\r\n\r\n",
    "path-raw-space": b"GET /a b/../c HTTP/1.1\r\nHost: a.test\r\n\r\n",
    "path-raw-8bit": b"GET /caf\xc3\xa9/\xff HTTP/1.1\r\nHost: a.test\r\n\r\n",
    # Framing (row 10).
    "cl-list": req("POST / HTTP/1.1", HOST, "Content-Length: 5, 5", body=b"hello"),
    "cl-two-lines": req("POST / HTTP/1.1", HOST, "Content-Length: 5", "Content-Length: 5", body=b"hello"),
    "cl-differing": req("POST / HTTP/1.1", HOST, "Content-Length: 5", "Content-Length: 6", body=b"hello"),
    "cl-plus": req("POST / HTTP/1.1", HOST, "Content-Length: +5", body=b"hello"),
    "cl-hex": req("POST / HTTP/1.1", HOST, "Content-Length: 0x5", body=b"hello"),
    "cl-empty": req("POST / HTTP/1.1", HOST, "Content-Length: "),
    "cl-huge": req("POST / HTTP/1.1", HOST, "Content-Length: 99999999999999999999"),
    "cl-ok": req("POST / HTTP/1.1", HOST, "Content-Length: 5", body=b"hello"),
    "cl-space-before-colon": req("POST / HTTP/1.1", HOST, "Content-Length : 5", "Transfer-Encoding: chunked"),
    "te-identity-chunked": req("POST / HTTP/1.1", HOST, "Transfer-Encoding: identity, chunked"),
    "te-uppercase": req("POST / HTTP/1.1", HOST, "Transfer-Encoding: CHUNKED", body=b"0\r\n\r\n"),
    "te-two-lines": req("POST / HTTP/1.1", HOST, "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
    "te-empty-elements": req("POST / HTTP/1.1", HOST, "Transfer-Encoding: , chunked ,"),
    "te-gzip-chunked": req("POST / HTTP/1.1", HOST, "Transfer-Encoding: gzip, chunked"),
    "te-chunked-gzip": req("POST / HTTP/1.1", HOST, "Transfer-Encoding: chunked, gzip"),
    "te-gzip": req("POST / HTTP/1.1", HOST, "Transfer-Encoding: gzip"),
    "te-params": req("POST / HTTP/1.1", HOST, "Transfer-Encoding: chunked;q=1"),
    "te-and-cl": req("POST / HTTP/1.1", HOST, "Transfer-Encoding: chunked", "Content-Length: 5"),
    "te-and-cl-lowercase": req("POST / HTTP/1.1", HOST, "content-length: 5", "transfer-encoding: chunked"),
    "te-http10": req("POST / HTTP/1.0", HOST, "Transfer-Encoding: chunked"),
    "te-ok": req("POST / HTTP/1.1", HOST, "Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n"),
    # Host and targets (rows 16, 19).
    "absolute-no-host": req("GET http://app.test/x HTTP/1.1"),
    "absolute-other-host": req("GET http://app.test/x HTTP/1.1", "Host: other.test"),
    "absolute-ok": req("GET http://app.test/x?y HTTP/1.1", "Host: app.test"),
    "absolute-upper-scheme": req("GET HTTP://App.Test HTTP/1.1", "Host: app.test"),
    "absolute-https": req("GET https://app.test/x HTTP/1.1", "Host: app.test"),
    "absolute-foo": req("GET foo://app.test/x HTTP/1.1", "Host: app.test"),
    "absolute-no-authority": req("GET http:///x HTTP/1.1", "Host: app.test"),
    "absolute-userinfo": req("GET http://u@app.test/x HTTP/1.1", "Host: u@app.test"),
    "absolute-fragment": req("GET http://app.test#x/y HTTP/1.1", "Host: app.test#x"),
    "absolute-http10": req("GET http://app.test/x HTTP/1.0"),
    "absolute-dots": req("GET http://app.test/a/../admin HTTP/1.1", "Host: app.test"),
    "authority-form": req("GET app.test:443 HTTP/1.1", HOST),
    "connect": req("CONNECT app.test:443 HTTP/1.1", "Host: app.test:443"),
    "options-star": req("OPTIONS * HTTP/1.1", HOST),
    "get-star": req("GET * HTTP/1.1", HOST),
    "no-host": req("GET / HTTP/1.1"),
    "two-hosts": req("GET / HTTP/1.1", "Host: a.test", "Host: b.test"),
    "host-userinfo": req("GET / HTTP/1.1", "Host: u@a.test"),
    "host-empty": req("GET / HTTP/1.1", "Host:"),
    "http10-no-host": req("GET /a HTTP/1.0"),
    "leading-empty-lines": b"\r\n\nPOST /a HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5, 5\r\n\r\n",
    "bare-lf": req("GET /a HTTP/1.1", HOST, "Content-Length: 0", eol=b"\n"),
    # Upgrades (rows 2, 7).
    "upgrade-h2c": req(
        "GET / HTTP/1.1", HOST, "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
        "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA"),
    "upgrade-websocket": req(
        "GET /ws HTTP/1.1", HOST, "Connection: keep-alive, Upgrade", "Upgrade: websocket",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"),
    "upgrade-websocket-body": req(
        "POST /ws HTTP/1.1", HOST, "Connection: Upgrade", "Upgrade: websocket", "Content-Length: 1", body=b"x"),
    "upgrade-websocket-http10": req("GET /ws HTTP/1.0", HOST, "Connection: Upgrade", "Upgrade: websocket"),
    "upgrade-two": req("GET /ws HTTP/1.1", HOST, "Connection: Upgrade", "Upgrade: websocket", "Upgrade: h2c"),
    "upgrade-no-connection": req("GET /ws HTTP/1.1", HOST, "Upgrade: websocket"),
    # Headers ferry removes (rows 14, 15).
    "connection-nominates": req(
        "GET / HTTP/1.1", HOST, "Connection: keep-alive, X-Secret, Content-Length, Host, X-Request-Id, traceparent",
        "X-Secret: 1", "X-Request-Id: abc", "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "Keep-Alive: timeout=5", "TE: trailers", "Trailer: X"),
    "proxy-and-rewrite-headers": req(
        "GET / HTTP/1.1", HOST, "Proxy-Authorization: Basic eA==", "Proxy-Connection: keep-alive",
        "X-Original-URL: /admin", "X-Rewrite-URL: /admin", "Forwarded: for=1.2.3.4",
        "X-Forwarded-Port: 443", "X-Forwarded-Prefix: /x", "X-Forwarded-For: 1.2.3.4"),
    "expect-continue": req("POST / HTTP/1.1", HOST, "Expect: 100-continue", "Content-Length: 5"),
}
for name, data in heads.items():
    write("request_head", name, data)

# request_wire: the same heads, and the line-level ambiguities ferry's strict reading refuses
# (issue 17: bare LF and CR, obs-fold, spaces in the request line, controls in values).
wire = dict(heads)
wire.update({
    "bare-lf-field": b"GET / HTTP/1.1\r\nHost: a.test\nX: y\r\n\r\n",
    "bare-lf-all": req("GET / HTTP/1.1", HOST, "X: y", eol=b"\n"),
    "bare-lf-before-request-line": b"\n" + req("GET / HTTP/1.1", HOST),
    "crlf-before-request-line": b"\r\n\r\n" + req("GET / HTTP/1.1", HOST),
    "bare-cr-value": b"GET / HTTP/1.1\r\nHost: a.test\r\nX: a\rb\r\n\r\n",
    "obs-fold-space": b"GET / HTTP/1.1\r\nHost: a.test\r\nX: a\r\n b\r\n\r\n",
    "obs-fold-tab": b"GET / HTTP/1.1\r\nHost: a.test\r\nX: a\r\n\tb\r\n\r\n",
    "space-in-target": req("GET /a b HTTP/1.1", HOST),
    "double-space": req("GET  / HTTP/1.1", HOST),
    "space-before-colon": req("GET / HTTP/1.1", "Host : a.test"),
    "tab-in-value": req("GET / HTTP/1.1", HOST, "X:\tv\t"),
    "nul-in-value": b"GET / HTTP/1.1\r\nHost: a.test\r\nX: a\0b\r\n\r\n",
    "obs-text-value": b"GET / HTTP/1.1\r\nHost: a.test\r\nX: \xe9t\xe9\r\n\r\n",
    "utf8-target": b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a.test\r\n\r\n",
    "empty-value": req("GET / HTTP/1.1", HOST, "X:"),
    "http10": req("GET / HTTP/1.0"),
    "http12": req("GET / HTTP/1.2", HOST),
    "cl-and-te": req("POST / HTTP/1.1", HOST, "Content-Length: 5", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    "partial": b"GET / HTTP/1.1\r\nHost: a.te",
    "partial-cr": b"GET / HTTP/1.1\r\nHost: a.test\r",
})
for name, data in wire.items():
    write("request_wire", name, data)


def chunk(data, size=None, ext=""):
    return (size or b"%X" % len(data)) + ext.encode() + b"\r\n" + data + b"\r\n"


def reframe(flags, splits, body):
    assert len(splits) <= 32
    return bytes([flags, len(splits)]) + b"".join(struct.pack("<H", s) for s in splits) + body


WITH_HEAD, EVERY_BYTE, AT_LINE_ENDS, AS_PREFIX = 1, 2, 4, 8
smuggled = b"GET /admin/secret HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n"
uploads = b"".join(chunk(bytes([0x41 + i % 26]) * 100) for i in range(20)) + b"0\r\n\r\n"
bodies = {
    "hello": b"5\r\nhello\r\n0\r\n\r\n",
    "two-chunks": chunk(b"hello") + chunk(b" world") + b"0\r\n\r\n",
    "smuggle": chunk(b"hello") + chunk(smuggled) + b"0\r\n\r\n",
    "uploads": uploads,
    "extensions": chunk(b"hello", ext=';a=b ; c="d\\"e"') + b"0;last\r\n\r\n",
    "trailers": chunk(b"hello") + b"0\r\nX-Trailer: 1\r\nY: two words \r\n\r\n",
    "trailer-then-request": chunk(b"hello") + b"0\r\nX: y\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "pipelined-request": b"5\r\nhello\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    "leading-zeros": b"0005\r\nhello\r\n000\r\n\r\n",
    "sixteen-digits": b"0000000000000005\r\nhello\r\n0\r\n\r\n",
    "uppercase-hex": b"A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n",
    "empty-body": b"0\r\n\r\n",
    # Malformed (row 8) and truncated.
    "size-overflow": b"10000000000000005\r\nhello\r\n0\r\n\r\n",
    "size-0x": b"0x5\r\nhello\r\n0\r\n\r\n",
    "size-negative": b"-5\r\nhello\r\n0\r\n\r\n",
    "size-bare-lf": b"5\nhello\r\n0\r\n\r\n",
    "size-trailing-space": b"5 \r\nhello\r\n0\r\n\r\n",
    "size-empty": b"\r\nhello\r\n0\r\n\r\n",
    "size-empty-last": b"5\r\nhello\r\n\r\n\r\n",
    "ext-bare-lf": b"5;a\nb\r\nhello\r\n0\r\n\r\n",
    "ext-bare-cr": b"5;a\rb\r\nhello\r\n0\r\n\r\n",
    "data-bare-lf": b"5\r\nhello\n0\r\n\r\n",
    "data-too-long": b"5\r\nhelloXX\r\n0\r\n\r\n",
    "data-short": b"5\r\nhell\r\n0\r\n\r\n",
    "last-bare-lf": b"5\r\nhello\r\n0\n\n",
    "trailer-bare-lf": b"5\r\nhello\r\n0\r\nX: y\n\r\n",
    "trailer-no-colon": b"5\r\nhello\r\n0\r\nfoo\r\n\r\n",
    "trailer-obs-fold": b"5\r\nhello\r\n0\r\nX: y\r\n z\r\n\r\n",
    "truncated-data": b"5\r\nhel",
    "truncated-size": b"5\r\nhello\r\n1",
    "truncated-last": b"5\r\nhello\r\n0\r\n",
    "truncated-trailers": b"5\r\nhello\r\n0\r\nX: y\r\n",
    "huge-size": b"FFFFFFFFFFFFFFF\r\nhello",
}
for name, body in bodies.items():
    write("chunked_reframe", name, reframe(0, [], body))
    write("chunked_reframe", name + "-every-byte", reframe(EVERY_BYTE, [], body))
    write("chunked_reframe", name + "-line-ends", reframe(AT_LINE_ENDS | WITH_HEAD, [], body))
    write("chunked_reframe", name + "-prefix", reframe(AS_PREFIX | WITH_HEAD | AT_LINE_ENDS, [], body))
    # Splits inside every chunk-size line and right after each CR.
    cuts = sorted({i + d for i, b in enumerate(body) for d in (1, 2) if b in b"\r\n;" and i + d < len(body)})[:32]
    write("chunked_reframe", name + "-cuts", reframe(0, cuts, body))
# The upload of issue 14, split at odd offsets as TCP did.
step = len(uploads) // 31
write("chunked_reframe", "uploads-odd-splits", reframe(0, [7 + i * step for i in range(31)], uploads))
write("chunked_reframe", "uploads-with-head", reframe(WITH_HEAD, [1, 2, 3, 104, 105, 106, 107, 108], uploads))

# response_read (format in fuzz/src/response.rs): flags (1 HEAD request, 2 upgrade request, 4 split
# before every byte), split offsets, a backend's response.
RESP_HEAD, RESP_UPGRADE, RESP_EVERY_BYTE = 1, 2, 4


def response(flags, splits, data):
    return bytes([flags, len(splits)]) + b"".join(struct.pack("<H", s) for s in splits) + data


responses = {
    "length": (0, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: b\r\n\r\nhello"),
    "length-past-body": (0, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n"),
    "length-short": (0, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nok"),
    "length-list": (0, b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok"),
    "length-conflict": (0, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"),
    "length-and-chunked": (0, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    "chunked": (0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n"),
    "chunked-empty-size": (0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"),
    "chunked-bare-lf": (0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n"),
    "chunked-ext-lf": (0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a\nb\r\nok\r\n0\r\n\r\n"),
    "chunked-long-data": (0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n"),
    "chunked-cut": (0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n01234"),
    "gzip-to-close": (0, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw bytes"),
    "http10-to-close": (0, b"HTTP/1.0 200 OK\r\n\r\nto the close"),
    "http10-keep-alive": (0, b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"),
    "close": (0, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"),
    "continue-then-ok": (0, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    "no-content": (0, b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
    "not-modified": (0, b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
    "head": (RESP_HEAD, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
    "upgrade": (RESP_UPGRADE, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nframes"),
    "switching-unasked": (0, b"HTTP/1.1 101 Switching Protocols\r\n\r\nframes"),
    "obs-fold": (0, b"HTTP/1.1 200 OK\r\nX: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\nz"),
    "keep-alive-timeout": (0, b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=0\r\nContent-Length: 0\r\n\r\n"),
}
for name, (flags, data) in responses.items():
    write("response_read", name, response(flags, [], data))
    write("response_read", name + "-every-byte", response(flags | RESP_EVERY_BYTE, [], data))
    write("response_read", name + "-cuts", response(flags, [len(data) // 3, len(data) // 2], data))
