//! HTTP safety rules end to end, one test per row of issue 14 (`rowNN_…`), plus the issue's
//! "Also" items (`extra_…`). Each sends the exact bytes a hostile (or merely unlucky) client
//! sends, split across writes where the bug needs it, and asserts what the backend received —
//! byte for byte where the row is about forwarding — not only the status the client got.
//!
//! Backends: `RecordingBackend` (raw HTTP/1.1, records every byte and parses requests itself, so
//! a smuggled request shows up as an extra request) and `H2RecordingBackend` (h2c, records
//! pseudo-headers, body and resets). Both engines run these (`FERRY_HTTP1_ENGINE=pingora`).

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Between the pieces of a split write: long enough for each piece to be its own read.
const GAP: Duration = Duration::from_millis(20);

/// Time for bytes ferry might still be forwarding to reach a backend before asserting on it.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

/// ferry with one route: `a.test` Prefix `/` → a recording backend (Ingress `default/i`).
async fn recorded(extra: &[&str]) -> (Ferry, RecordingBackend) {
    let rec = RecordingBackend::start("127.0.0.2").await;
    let files = docs(&[service("rec", &[rec.addr]), ingress("i", &[("a.test", "Prefix", "/", "rec")])]);
    (Ferry::launch(&[("a.yaml", files)], extra).await, rec)
}

/// ferry with `a.test` `/` open and `a.test` `/admin` allowed only from 10.0.0.0/8 (so 403 for
/// the loopback client), both → the same recording backend.
async fn recorded_with_acl() -> (Ferry, RecordingBackend) {
    let rec = RecordingBackend::start("127.0.0.2").await;
    let files = docs(&[
        service("rec", &[rec.addr]),
        ingress("open", &[("a.test", "Prefix", "/", "rec")]),
        ingress_annotated(
            "admin",
            &[("a.test", "Prefix", "/admin", "rec")],
            "ferry.dev/allow-source-ranges: \"10.0.0.0/8\"",
        ),
    ]);
    (Ferry::launch(&[("a.yaml", files)], &[]).await, rec)
}

/// A TLS Secret manifest for `hosts` and its certificate PEM.
fn secret(name: &str, hosts: &[&str]) -> (String, String) {
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    ferry_echo::tls_secret_manifest("default", name, &hosts).expect("certificate")
}

/// The value of `ferry_requests_total{route="ROUTE",code="CLASS"}` (0 when absent).
fn requests_total(metrics: &str, route: &str, class: &str) -> f64 {
    let prefix = format!("ferry_requests_total{{route=\"{route}\",code=\"{class}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok()).unwrap_or(0.0)
}

/// At most 300 characters of `s`, for assertion messages.
fn short(s: &str) -> String {
    if s.len() <= 300 {
        return s.to_string();
    }
    let cut = (0..=300).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
    format!("{}… ({} bytes)", &s[..cut], s.len())
}

/// The last 2,000 characters of `s`.
fn tail(s: &str) -> &str {
    let from = (s.len().saturating_sub(2000)..=s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(0);
    &s[from..]
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The raw body ends with exactly one last chunk (with or without the trailer passed on).
fn ends_with_last_chunk(raw: &[u8]) -> bool {
    raw.ends_with(b"\r\n0\r\n\r\n")
        || raw.ends_with(b"\r\n0\r\nX-T: 1\r\n\r\n")
        || raw.ends_with(b"\r\n0\r\nx-t: 1\r\n\r\n")
}

// ---- row 1: chunked re-framing ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row01_chunked_body_split_at_every_offset_is_reframed_exactly() {
    let (ferry, rec) = recorded(&[]).await;
    let head: &[u8] = b"POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let plain: &[u8] = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let trailer: &[u8] = b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
    let mut iterations = 0;
    for (what, body) in [("plain", plain), ("with trailer", trailer)] {
        for split in 0..body.len() {
            let case = format!("{what}, body split at byte {split}");
            let before = rec.requests().len();
            let mut conn = RawConn::open(ferry.http).await;
            let first = [head, &body[..split]].concat();
            assert!(conn.send_pieces(&[&first, &body[split..]], GAP).await, "{case}: send");
            let (status, h, b) = conn.read_response().await;
            assert_eq!(status, 200, "{case}: {h}{b}");
            let (status, h, b) = conn.exchange(b"GET /second HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
            assert_eq!(status, 200, "{case}: second request on the connection: {h}{b}");
            let got = rec.requests()[before..].to_vec();
            assert_eq!(
                got.len(),
                2,
                "{case}: the backend must get exactly the two client requests: {got:#?}\nreceived (end): {}",
                tail(&rec.received_text())
            );
            assert_eq!(got[0].request_line(), "POST /upload HTTP/1.1", "{case}");
            assert_eq!(text(&got[0].body), "hello world", "{case}: decoded body; raw {:?}", text(&got[0].raw_body));
            assert!(ends_with_last_chunk(&got[0].raw_body), "{case}: one last chunk: {:?}", text(&got[0].raw_body));
            assert!(
                !(got[0].has_header("content-length") && got[0].has_header("transfer-encoding")),
                "{case}: one framing: {}",
                got[0].head
            );
            assert_eq!(got[1].request_line(), "GET /second HTTP/1.1", "{case}: {got:#?}");
            assert!(got[1].raw_body.is_empty(), "{case}: nothing after the second head: {got:#?}");
            iterations += 1;
        }
    }
    settle().await;
    assert_eq!(rec.requests().len(), 2 * iterations, "no extra request arrived late: {}", tail(&rec.received_text()));
    assert_eq!(rec.errors(), Vec::<String>::new(), "backend framing errors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row01_large_chunked_upload_arrives_whole() {
    let (ferry, rec) = recorded(&[]).await;
    let mut expected = Vec::with_capacity(600_000);
    let mut body = Vec::new();
    for i in 0..600 {
        let chunk = vec![b'a' + (i % 26) as u8; 1000];
        body.extend_from_slice(b"3e8\r\n");
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
        expected.extend_from_slice(&chunk);
    }
    body.extend_from_slice(b"0\r\n\r\n");
    // The bug showed in 2 of 3 runs: three uploads, each on its own connection.
    for run in 0..3 {
        let before = rec.requests().len();
        let mut conn = RawConn::open(ferry.http).await;
        let request =
            [&b"POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"[..], &body].concat();
        let (status, h, b) = conn.exchange(&request).await;
        assert_eq!(status, 200, "run {run}: {h}{b}");
        settle().await;
        let got = rec.requests()[before..].to_vec();
        assert_eq!(
            got.len(),
            1,
            "run {run}: one request, heads: {:?}",
            got.iter().map(|r| short(&r.head)).collect::<Vec<_>>()
        );
        assert_eq!(got[0].body.len(), 600_000, "run {run}: decoded bytes");
        assert!(got[0].body == expected, "run {run}: the body arrives intact and in order");
        assert!(ends_with_last_chunk(&got[0].raw_body) || got[0].has_header("content-length"), "run {run}");
    }
    assert_eq!(rec.errors(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row01_request_after_the_last_chunk_is_a_client_request() {
    let (ferry, rec) = recorded_with_acl().await;
    let head: &[u8] = b"POST /public/x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let body: &[u8] = b"5\r\nhello\r\n0\r\n\r\n";
    let smuggled: &[u8] = b"GET /admin/secret HTTP/1.1\r\nHost: a.test\r\n\r\n";
    // All in one write, then split at every offset of the body.
    let splits: Vec<Option<usize>> = std::iter::once(None).chain((0..body.len()).map(Some)).collect();
    for split in splits {
        let case = format!("split {split:?}");
        let before = rec.requests().len();
        let mut conn = RawConn::open(ferry.http).await;
        let ok = match split {
            None => conn.send(&[head, body, smuggled].concat()).await,
            Some(at) => {
                conn.send_pieces(&[&[head, &body[..at]].concat(), &[&body[at..], smuggled].concat()], GAP).await
            }
        };
        assert!(ok, "{case}: send");
        let (status, h, b) = conn.read_response().await;
        assert_eq!(status, 200, "{case}: the POST: {h}{b}");
        let (status, h, b) = conn.read_response().await;
        assert_eq!(status, 403, "{case}: the second request is ferry's to route and refuse: {h}{b}");
        settle().await;
        let got = rec.requests()[before..].to_vec();
        assert_eq!(got.len(), 1, "{case}: only the POST reaches the backend: {got:#?}");
        assert_eq!(text(&got[0].body), "hello", "{case}");
        assert!(!rec.received_text().contains("/admin/secret"), "{case}: smuggled: {}", rec.received_text());
    }
    assert_eq!(rec.errors(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row01_bytes_after_a_sized_body_start_the_next_request() {
    let (ferry, rec) = recorded(&[]).await;
    let head: &[u8] = b"POST /one HTTP/1.1\r\nHost: a.test\r\nContent-Length: 11\r\n\r\n";
    for (after, second) in [(&b"\r\n"[..], false), (&b"GET /two HTTP/1.1\r\nHost: a.test\r\n\r\n"[..], true)] {
        for at in 0..=11 {
            let case = format!("{:?} after the body, split at {at}", text(after));
            let before = rec.requests().len();
            let body = b"hello world";
            let mut conn = RawConn::open(ferry.http).await;
            let (first, rest) = ([head, &body[..at]].concat(), [&body[at..], after].concat());
            assert!(conn.send_pieces(&[&first, &rest], GAP).await, "{case}: send");
            let (status, h, b) = conn.read_response().await;
            assert_eq!(status, 200, "{case}: {h}{b}");
            if second {
                let (status, h, b) = conn.read_response().await;
                assert_eq!(status, 200, "{case}: the second request: {h}{b}");
            }
            settle().await;
            let got = rec.requests()[before..].to_vec();
            assert_eq!(got.len(), 1 + usize::from(second), "{case}: {got:#?}");
            assert_eq!(text(&got[0].body), "hello world", "{case}");
            assert!(got[0].head.starts_with("POST /one HTTP/1.1\r\n"), "{case}: {}", got[0].head);
            if second {
                assert!(got[1].head.starts_with("GET /two HTTP/1.1\r\n") && got[1].body.is_empty(), "{case}: {got:#?}");
            }
        }
    }
    assert_eq!(rec.errors(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row11_stalled_http2_bodies_are_the_clients_fault() {
    let (a, b) = (echo("127.0.0.2", "a").await, echo("127.0.0.3", "b").await);
    // Hashing on X-User sends every stalled stream to one endpoint, as consecutive failures;
    // a 2 s read timeout ends the wait for a body that never comes.
    let svc = service("svc", &[a, b]).replacen(
        "namespace: default}",
        "namespace: default, annotations: {ferry.dev/load-balancer: \"header-hash:X-User\"}}",
        1,
    );
    let files = docs(&[svc, ingress_annotated("i", &[("a.test", "Prefix", "/", "svc")], "ferry.dev/read-timeout: 2s")]);
    let ferry = Ferry::launch(&[("a.yaml", files)], &["--outlier-failures", "5"]).await;
    let tcp = tokio::net::TcpStream::connect(ferry.http).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2c handshake with ferry");
    tokio::spawn(conn);
    let mut answers = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..6 {
        let req = http::Request::post("http://a.test/upload").header("x-user", "stall").body(()).unwrap();
        let mut send = send.clone().ready().await.expect("h2 connection usable");
        // Headers without END_STREAM, then nothing: a body that never comes.
        let (response, stream) = send.send_request(req, false).unwrap();
        streams.push(stream);
        answers.push(tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(8), response).await }));
    }
    for answer in answers {
        let status = match answer.await.unwrap() {
            Ok(Ok(resp)) => resp.status().as_u16(),
            other => panic!("a stalled stream got no answer: {other:?}"),
        };
        assert_eq!(status, 408, "a stalled body is the client's fault");
    }
    drop(streams);
    let metrics = ferry.admin_get("/metrics").await;
    assert_eq!(requests_total(&metrics, "default/i", "5xx"), 0.0, "{metrics}");
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let r =
            client().get(format!("http://{}/", ferry.http)).header("host", "a.test").header("x-user", format!("u{i}"));
        let r = Reply::read(r.send().await.unwrap()).await;
        seen.insert(r.endpoint().to_string());
    }
    assert_eq!(seen, [a.to_string(), b.to_string()].into_iter().collect(), "both endpoints serve");
    let log = ferry.log();
    assert!(!log.contains("endpoint ejected") && !log.contains("ERROR"), "{log}");
}

// ---- row 2: h2c upgrade ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row02_h2c_upgrade_is_never_passed() {
    let rec = RecordingBackend::start("127.0.0.2").await;
    let ws = echo("127.0.0.3", "ws").await;
    let files = docs(&[
        service("rec", &[rec.addr]),
        service("ws", &[ws]),
        ingress("open", &[("a.test", "Prefix", "/", "rec"), ("ws.test", "Prefix", "/", "ws")]),
        ingress_annotated(
            "admin",
            &[("a.test", "Prefix", "/admin", "rec")],
            "ferry.dev/allow-source-ranges: \"10.0.0.0/8\"",
        ),
    ]);
    let ferry = Ferry::launch(&[("a.yaml", files)], &[]).await;
    let upgrade = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
        )
    };

    // The ACL applies to the request carrying the upgrade offer.
    let mut conn = RawConn::open(ferry.http).await;
    let (status, h, b) = conn.exchange(upgrade("/admin/x").as_bytes()).await;
    assert_eq!(status, 403, "{h}{b}");

    // On an open route: a plain HTTP/1.1 answer, and no upgrade offer upstream.
    let mut conn = RawConn::open(ferry.http).await;
    let (status, h, b) = conn.exchange(upgrade("/public/x").as_bytes()).await;
    assert_eq!(status, 200, "never 101: {h}{b}");
    assert!(!h.contains("\r\nupgrade:"), "{h}");
    let (status, h, b) = conn.exchange(b"GET /public/again HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(status, 200, "the connection stays HTTP/1.1: {h}{b}");
    settle().await;
    let got = rec.requests();
    assert_eq!(got.len(), 2, "{got:#?}");
    let first = &got[0];
    assert_eq!(first.request_line(), "GET /public/x HTTP/1.1");
    assert!(!first.has_header("upgrade"), "{}", first.head);
    assert!(!first.has_header("http2-settings"), "{}", first.head);
    for v in first.headers("connection") {
        let v = v.to_ascii_lowercase();
        assert!(!v.contains("upgrade") && !v.contains("http2-settings"), "connection: {v}");
    }
    assert_eq!(got[1].request_line(), "GET /public/again HTTP/1.1");
    let received = rec.received_text();
    assert!(!received.contains("/admin/x") && !received.contains("PRI * HTTP/2.0"), "{received}");

    // WebSocket upgrades still work.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/chat", ferry.http).into_client_request().unwrap();
    req.headers_mut().insert("host", "ws.test".parse().unwrap());
    let (mut socket, resp) = tokio_tungstenite::connect_async(req).await.expect("websocket upgrade through ferry");
    assert_eq!(resp.status(), 101);
    socket.send(tokio_tungstenite::tungstenite::Message::text("hi")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), tokio_tungstenite::tungstenite::Message::text("ws: hi"));
}

// ---- row 3: encoded separators and dot segments ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row03_encoded_separators_and_dot_segments_are_refused() {
    let (ferry, rec) = recorded_with_acl().await;
    for path in [
        "/public/..%2fadmin/x",
        "/public/..%2Fadmin/x",
        "/public/%2e%2e%2fadmin/x",
        "/public/%2E%2E%2Fadmin/x",
        "/public/..;/admin/x",
        "/public/..%5cadmin",
        "/public\\..\\admin",
        "/a%2fb",
        "/x%00y",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n");
        let (status, h, b) = RawConn::open(ferry.http).await.exchange(req.as_bytes()).await;
        assert_eq!(status, 400, "{path}: {h}{b}");
        settle().await;
        assert!(rec.received().is_empty(), "{path} reached the backend: {}", rec.received_text());
    }
    let (status, _) = RawConn::open(ferry.http).await.get("a.test", "/public/ok").await;
    assert_eq!(status, 200, "an ordinary path is still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row03_paths_are_routed_in_the_form_a_normalising_backend_reads() {
    let (ferry, rec) = recorded_with_acl().await;
    // Each reads as /admin/... to a backend that decodes unreserved escapes, merges slashes or
    // drops ;parameters: ferry routes it to /admin, whose allow-list refuses loopback.
    for path in
        ["/%61dmin/x", "/adm%69n", "/%41dmin", "//admin/x", "/admin;x", "/admin;jsessionid=1/x", "/public/../admin"]
    {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n");
        let (status, h, b) = RawConn::open(ferry.http).await.exchange(req.as_bytes()).await;
        let want = if path.contains("..") {
            400
        } else if path == "/%41dmin" {
            200
        } else {
            403
        };
        assert_eq!(status, want, "{path}: {h}{b}");
    }
    settle().await;
    // Only /%41dmin (`/Admin`, another path) reached the backend, as received.
    let got = rec.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].head.starts_with("GET /%41dmin HTTP/1.1\r\n"), "{}", got[0].head);
    // The path reaches the backend as received, on the route of its normal form.
    let (status, h, b) =
        RawConn::open(ferry.http).await.exchange(b"GET /public//x;v=1/%7Ey HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(status, 200, "{h}{b}");
    settle().await;
    let got = rec.requests();
    assert!(got[1].head.starts_with("GET /public//x;v=1/%7Ey HTTP/1.1\r\n"), "{}", got[1].head);
}

// ---- rows 4 and 9: body limits to h2c backends ----

/// ferry with `a.test` `/` → an h2c recording backend, `ferry.dev/max-body-size: "100"`.
async fn limited_h2c() -> (Ferry, H2RecordingBackend) {
    let h2 = H2RecordingBackend::start("127.0.0.2").await;
    let files = docs(&[
        service_with_app_protocol("h2", &[h2.addr], "kubernetes.io/h2c"),
        ingress_annotated("lim", &[("a.test", "Prefix", "/", "h2")], "ferry.dev/max-body-size: \"100\""),
    ]);
    (Ferry::launch(&[("a.yaml", files)], &[]).await, h2)
}

/// Every stream the backend saw after `before` ended in a reset with at most 100 body bytes:
/// none got the 5,000 bytes, and none got a truncated body presented as complete.
async fn assert_cut_off(h2: &H2RecordingBackend, before: usize) {
    let settled = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settled && h2.requests()[before..].iter().any(|r| !r.ended && !r.reset) {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for r in &h2.requests()[before..] {
        assert!(r.body.len() <= 100, "backend got {} body bytes through a 100-byte limit", r.body.len());
        assert!(
            r.reset && !r.ended,
            "the upstream stream must be reset, not ended or left open (ended {}, reset {}, {} bytes)",
            r.ended,
            r.reset,
            r.body.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row04_max_body_size_applies_to_chunked_bodies_to_h2c_backends() {
    let (ferry, h2) = limited_h2c().await;
    // Within the limit: passes whole.
    let mut conn = RawConn::open(ferry.http).await;
    let (status, h, b) = conn
        .exchange(b"POST /small HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n32\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n0\r\n\r\n")
        .await;
    assert_eq!(status, 200, "{h}{b}");
    let small = h2.requests();
    assert_eq!(small.len(), 1);
    assert!(small[0].ended && small[0].body == vec![b'x'; 50], "{small:?}");

    // 5,000 bytes in 100-byte chunks through the 100-byte limit.
    let before = h2.requests().len();
    let mut body = Vec::new();
    for _ in 0..50 {
        body.extend_from_slice(b"64\r\n");
        body.extend_from_slice(&[b'y'; 100]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let started = Instant::now();
    let mut conn = RawConn::open(ferry.http).await;
    let head: &[u8] = b"POST /big HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let sent = conn.send_pieces(&[head, &body], GAP).await;
    let (status, h, b) = conn.read_response().await;
    assert_eq!(status, 413, "chunked body over the limit (sent whole: {sent}): {h}{b}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered in {:?}", started.elapsed());
    assert_cut_off(&h2, before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row09_h2_client_body_over_limit_to_h2c_backend_gets_413() {
    let (ferry, h2) = limited_h2c().await;
    let tcp = tokio::net::TcpStream::connect(ferry.http).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2c handshake with ferry");
    tokio::spawn(conn);
    for declared in [false, true] {
        let case = if declared { "content-length: 5000" } else { "no content-length" };
        let before = h2.requests().len();
        let mut req = http::Request::post("http://a.test/big");
        if declared {
            req = req.header("content-length", "5000");
        }
        let mut send = send.clone().ready().await.expect("h2 connection usable");
        let (response, mut stream) = send.send_request(req.body(()).unwrap(), false).unwrap();
        for i in 0..50 {
            if stream.send_data(bytes::Bytes::from(vec![b'y'; 100]), i == 49).is_err() {
                break; // reset by ferry: fine, the answer is what counts
            }
        }
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), response).await;
        let status = match answer {
            Ok(Ok(resp)) => resp.status().as_u16(),
            Ok(Err(e)) => panic!("{case}: stream failed instead of a 413: {e}"),
            Err(_) => panic!("{case}: no answer within 5 s"),
        };
        assert_eq!(status, 413, "{case}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_cut_off(&h2, before).await;
    }
}

// ---- row 5: TLS handshakes count ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row05_silent_tls_connections_are_limited_and_timed_out() {
    let rec = RecordingBackend::start("127.0.0.2").await;
    let (secret_manifest, _) = secret("cert-a", &["a.test"]);
    let files = docs(&[
        service("rec", &[rec.addr]),
        secret_manifest,
        with_tls(ingress("i", &[("a.test", "Prefix", "/", "rec")]), &["a.test"], "cert-a"),
    ]);
    let ferry = Ferry::launch(&[("a.yaml", files)], &["--max-connections", "50", "--client-header-timeout", "2"]).await;
    let start = Instant::now();
    let mut watchers = Vec::new();
    for _ in 0..80 {
        let mut s = tokio::net::TcpStream::connect(ferry.https).await.expect("connect");
        watchers.push(tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let deadline = start + Duration::from_secs(6);
            loop {
                match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
                    Ok(Ok(_)) => continue,
                    Err(_) => return None,
                }
            }
        }));
    }
    let mut closed = Vec::new();
    for w in watchers {
        closed.push(w.await.unwrap());
    }
    let at_once = closed.iter().filter(|c| c.is_some_and(|t| t < Duration::from_secs(1))).count();
    assert!(
        at_once >= 30,
        "at most 50 of 80 silent TLS connections may stay open; closed at once: {at_once}: {closed:?}"
    );
    let open_after = closed.iter().filter(|c| c.is_none_or(|t| t > Duration::from_millis(4500))).count();
    assert_eq!(open_after, 0, "every silent connection is closed by the header timeout (2 s): {closed:?}");
    // A real client is served afterwards.
    let mut tls = RawConn::open_tls(ferry.https, "a.test", &[b"http/1.1"]).await.expect("TLS handshake");
    let (status, h, b) = tls.exchange(b"GET /after HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(status, 200, "{h}{b}");
}

// ---- row 6: client faults and endpoint health ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row06_client_faults_do_not_eject_endpoints() {
    let (a, b) = (echo("127.0.0.2", "a").await, echo("127.0.0.3", "b").await);
    // Hashing on X-User sends every fault to one endpoint, as consecutive failures.
    let svc = service("svc", &[a, b]).replacen(
        "namespace: default}",
        "namespace: default, annotations: {ferry.dev/load-balancer: \"header-hash:X-User\"}}",
        1,
    );
    let files = docs(&[svc, ingress("i", &[("a.test", "Prefix", "/", "svc")])]);
    let ferry = Ferry::launch(&[("a.yaml", files)], &["--outlier-failures", "5"]).await;
    let endpoint_of = |user: String| {
        let url = format!("http://{}/", ferry.http);
        async move {
            let r = client().get(url).header("host", "a.test").header("x-user", user).send().await.unwrap();
            let r = Reply::read(r).await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.endpoint().to_string()
        }
    };
    let faulty = endpoint_of("fault".into()).await;
    for i in 0..10 {
        let mut conn = RawConn::open(ferry.http).await;
        if i % 2 == 0 {
            // An invalid chunk size after a valid head.
            let head: &[u8] = b"POST / HTTP/1.1\r\nHost: a.test\r\nX-User: fault\r\nTransfer-Encoding: chunked\r\n\r\n";
            conn.send_pieces(&[head, b"zz\r\nhello\r\n0\r\n\r\n"], GAP).await;
            let _ = conn.read_response().await;
        } else {
            // The client goes away in the middle of its body.
            let head: &[u8] = b"POST / HTTP/1.1\r\nHost: a.test\r\nX-User: fault\r\nContent-Length: 100\r\n\r\n";
            conn.send_pieces(&[head, b"0123456789"], GAP).await;
            tokio::time::sleep(GAP).await;
            drop(conn);
        }
        tokio::time::sleep(GAP).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(endpoint_of("fault".into()).await, faulty, "the faults' endpoint still serves its key");
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        seen.insert(endpoint_of(format!("user-{i}")).await);
    }
    assert_eq!(seen, [a.to_string(), b.to_string()].into_iter().collect(), "both endpoints serve");
    assert!(!ferry.log().contains("endpoint ejected"), "{}", ferry.log());
}

// ---- row 7: Upgrade with a body ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row07_upgrade_with_a_body_is_a_plain_request() {
    let (ferry, rec) = recorded(&[]).await;
    for (proto, extra) in [
        ("h2c", "Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"),
        (
            "websocket",
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        ),
    ] {
        let before = rec.requests().len();
        let mut conn = RawConn::open(ferry.http).await;
        let req =
            format!("POST /up HTTP/1.1\r\nHost: a.test\r\n{extra}Upgrade: {proto}\r\nContent-Length: 5\r\n\r\nhello");
        let (status, h, b) = conn.exchange(req.as_bytes()).await;
        assert_eq!(status, 200, "{proto}: {h}{b}");
        let (status, h, b) = conn.exchange(b"GET /next HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
        assert_eq!(status, 200, "{proto}: the connection goes on: {h}{b}");
        settle().await;
        let got = rec.requests()[before..].to_vec();
        assert_eq!(got.len(), 2, "{proto}: {got:#?}");
        assert_eq!(got[0].request_line(), "POST /up HTTP/1.1", "{proto}");
        assert_eq!(
            text(&got[0].body),
            "hello",
            "{proto}: the body, exactly: {}{}",
            got[0].head,
            text(&got[0].raw_body)
        );
        assert!(!got[0].has_header("upgrade"), "{proto}: {}", got[0].head);
        assert!(!got[0].has_header("http2-settings"), "{proto}: {}", got[0].head);
        for v in got[0].headers("connection") {
            assert!(!v.to_ascii_lowercase().contains("upgrade"), "{proto}: connection: {v}");
        }
        assert_eq!(got[1].request_line(), "GET /next HTTP/1.1", "{proto}");
    }
    assert_eq!(rec.errors(), Vec::<String>::new());
}

// ---- row 8: bad chunk sizes ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row08_bad_chunk_sizes_get_400_and_close() {
    let (ferry, rec) = recorded(&[]).await;
    let head: &[u8] = b"POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    for body in [
        &b"10000000000000005\r\nhello\r\n0\r\n\r\n"[..],
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
    ] {
        let case = format!("{:?}", text(body));
        let mut conn = RawConn::open(ferry.http).await;
        // The head first, so it may be forwarded before the bad size is read.
        conn.send_pieces(&[head, body], GAP).await;
        let (status, h, b) = conn.read_response().await;
        assert_eq!(status, 400, "{case}: {h}{b}");
        assert!(h.contains("\r\nconnection: close\r\n"), "{case}: {h}");
        assert!(conn.closed_within(Duration::from_secs(2)).await, "{case}: the connection is closed");
    }
    settle().await;
    assert!(rec.requests().is_empty(), "no complete request reached the backend: {:#?}", rec.requests());
    assert_eq!(rec.errors(), Vec::<String>::new(), "invalid framing forwarded to the backend");
    let metrics = ferry.admin_get("/metrics").await;
    assert_eq!(requests_total(&metrics, "default/i", "5xx"), 0.0, "client faults are not 5xx: {metrics}");
}

// ---- row 10: request framing ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10_request_framing_rules() {
    let (ferry, rec) = recorded(&[]).await;
    let cases: &[(&str, &[u8], u16)] = &[
        ("Content-Length list", b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5, 5\r\n\r\nhello", 400),
        (
            "two Content-Length lines",
            b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            400,
        ),
        (
            "Content-Length and chunked",
            b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        (
            "identity, chunked",
            b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: identity, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            501,
        ),
        (
            "gzip, chunked",
            b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            501,
        ),
        (
            "chunked, gzip",
            b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        (
            "two Transfer-Encoding lines",
            b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        (
            "HTTP/1.0 with Transfer-Encoding",
            b"POST / HTTP/1.0\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        ("Content-Length +5", b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: +5\r\n\r\nhello", 400),
        ("Content-Length 0x5", b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0x5\r\n\r\nhello", 400),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Folded: a\r\n  b\r\n\r\n", 400),
        ("NUL in a header value", b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Nul: a\0b\r\n\r\n", 400),
        ("space before the colon", b"GET / HTTP/1.1\r\nHost : a.test\r\n\r\n", 400),
    ];
    for (what, raw, want) in cases {
        let (status, h, b) = RawConn::open(ferry.http).await.exchange(raw).await;
        assert_eq!(status, *want, "{what}: {h}{b}");
        settle().await;
        assert!(rec.received().is_empty(), "{what}: reached the backend: {}", rec.received_text());
    }

    // Upper-case `chunked` is chunked; the backend gets exactly `chunked`.
    let (status, h, b) = RawConn::open(ferry.http)
        .await
        .exchange(b"POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .await;
    assert_eq!(status, 200, "{h}{b}");
    settle().await;
    let got = rec.requests();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].headers("transfer-encoding"), vec!["chunked".to_string()], "{}", got[0].head);
    assert!(!got[0].has_header("content-length"), "{}", got[0].head);
    assert_eq!(text(&got[0].body), "hello");
    assert!(ends_with_last_chunk(&got[0].raw_body), "{:?}", text(&got[0].raw_body));
}

// ---- row 11: slow bodies and slow second heads ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row11_slow_body_and_slow_second_head_time_out() {
    let (ferry, _rec) = recorded(&["--client-body-timeout", "2", "--client-header-timeout", "2"]).await;

    // A body trickled 1 byte per 3 s: each gap exceeds the 2 s body timeout.
    let s = tokio::net::TcpStream::connect(ferry.http).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = s.into_split();
    let started = Instant::now();
    wr.write_all(b"POST /slow HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10\r\n\r\na").await.unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..9 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            if wr.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let closed = loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    trickle.abort();
    let answer = text(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a slow body gets 408 within 5 s (after {:?}, closed {closed}): {answer:?}",
        started.elapsed()
    );

    // A kept-alive connection whose second head trickles in at 1 byte per second.
    let mut conn = RawConn::open(ferry.http).await;
    let (status, h, b) = conn.exchange(b"GET /first HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(status, 200, "{h}{b}");
    let started = Instant::now();
    let mut closed_after = None;
    for byte in b"GET /second HTTP/1.1\r\nHost: a.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa" {
        if !conn.send(&[*byte]).await || conn.closed_within(Duration::from_secs(1)).await {
            closed_after = Some(started.elapsed());
            break;
        }
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    let took = closed_after.expect("a trickling second request head is cut off");
    assert!(took <= Duration::from_millis(4500), "closed after {took:?}, header timeout 2 s");
}

// ---- row 14: the request id cannot be nominated away ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row14_connection_cannot_remove_the_request_id() {
    let (ferry, rec) = recorded(&[]).await;
    let (status, h, b) = RawConn::open(ferry.http)
        .await
        .exchange(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: X-Request-Id\r\nX-Request-Id: abc123\r\n\r\n")
        .await;
    assert_eq!(status, 200, "{h}{b}");
    let got = rec.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers("x-request-id"), vec!["abc123".to_string()], "{}", got[0].head);
}

// ---- row 15: forwarding headers ----

const CLIENT_FORWARDING: &str = "Proxy-Authorization: Basic dXNlcjpwYXNz\r\nForwarded: for=1.2.3.4;proto=https\r\nX-Forwarded-Port: 8443\r\nX-Forwarded-Prefix: /evil\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\nX-Real-IP: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\n";

async fn forwarding_ferry(extra: &[&str]) -> (Ferry, RecordingBackend) {
    let rec = RecordingBackend::start_with("127.0.0.2", "Proxy-Authenticate: Basic realm=\"upstream\"\r\n").await;
    let files = docs(&[service("rec", &[rec.addr]), ingress("i", &[("a.test", "Prefix", "/", "rec")])]);
    (Ferry::launch(&[("a.yaml", files)], extra).await, rec)
}

/// Sends the forwarding headers from `ip`; returns the response head and what the backend got.
async fn forwarded_from(ferry: &Ferry, rec: &RecordingBackend, ip: &str) -> (String, ParsedRequest) {
    let before = rec.requests().len();
    let req = format!("GET /fwd HTTP/1.1\r\nHost: a.test\r\n{CLIENT_FORWARDING}\r\n");
    let (status, h, b) = RawConn::open_from(ferry.http, ip).await.exchange(req.as_bytes()).await;
    assert_eq!(status, 200, "{h}{b}");
    let got = rec.requests()[before..].to_vec();
    assert_eq!(got.len(), 1);
    (h, got[0].clone())
}

fn assert_untrusted(got: &ParsedRequest, client: &str) {
    for name in [
        "proxy-authorization",
        "forwarded",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-original-url",
        "x-rewrite-url",
        // CGI and WSGI backends read these as X-Forwarded-For and X-Real-IP.
        "x_forwarded_for",
        "x_real_ip",
    ] {
        assert!(!got.has_header(name), "{name} from an untrusted client passed: {}", got.head);
    }
    assert_eq!(got.headers("x-forwarded-for"), vec![client.to_string()], "{}", got.head);
    assert_eq!(got.headers("x-forwarded-proto"), vec!["http".to_string()], "{}", got.head);
    assert_eq!(got.headers("x-forwarded-host"), vec!["a.test".to_string()], "{}", got.head);
    assert_eq!(got.headers("x-real-ip"), vec![client.to_string()], "{}", got.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row15_forwarding_headers_from_clients_are_not_trusted() {
    let (ferry, rec) = forwarding_ferry(&[]).await;
    let (response_head, got) = forwarded_from(&ferry, &rec, "127.0.0.7").await;
    assert_untrusted(&got, "127.0.0.7");
    assert!(!response_head.contains("\r\nproxy-authenticate:"), "hop-by-hop response header passed: {response_head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row15_trusted_proxies_may_set_forwarding_headers() {
    let (ferry, rec) = forwarding_ferry(&["--trusted-proxies", "127.0.0.9/32"]).await;
    let (response_head, got) = forwarded_from(&ferry, &rec, "127.0.0.9").await;
    let one = |v: &str| vec![v.to_string()];
    assert_eq!(got.headers("x-forwarded-for"), one("1.2.3.4, 127.0.0.9"), "{}", got.head);
    assert_eq!(got.headers("x-forwarded-proto"), one("https"), "{}", got.head);
    assert_eq!(got.headers("x-forwarded-host"), one("evil.test"), "{}", got.head);
    assert_eq!(got.headers("forwarded"), one("for=1.2.3.4;proto=https"), "{}", got.head);
    assert_eq!(got.headers("x-forwarded-port"), one("8443"), "{}", got.head);
    assert_eq!(got.headers("x-forwarded-prefix"), one("/evil"), "{}", got.head);
    for name in ["x-original-url", "x-rewrite-url", "proxy-authorization"] {
        assert!(!got.has_header(name), "{name} passed even from a trusted proxy: {}", got.head);
    }
    assert!(!response_head.contains("\r\nproxy-authenticate:"), "{response_head}");
    // Another client of the same ferry is still not trusted.
    let (_, got) = forwarded_from(&ferry, &rec, "127.0.0.7").await;
    assert_untrusted(&got, "127.0.0.7");
}

// ---- row 16: absolute-form targets ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row16_absolute_form_targets() {
    let (ferry, rec) = recorded(&[]).await;
    let cases: &[(&str, &[u8])] = &[
        ("absolute-form without Host", b"GET http://a.test/x HTTP/1.1\r\nUser-Agent: t\r\n\r\n"),
        ("https target on the plaintext port", b"GET https://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n"),
        ("unknown scheme", b"GET foo://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n"),
    ];
    for (what, raw) in cases {
        let (status, h, b) = RawConn::open(ferry.http).await.exchange(raw).await;
        assert_eq!(status, 400, "{what}: {h}{b}");
        settle().await;
        assert!(rec.received().is_empty(), "{what}: reached the backend: {}", rec.received_text());
    }
    let (status, h, b) =
        RawConn::open(ferry.http).await.exchange(b"GET http://a.test/public/x HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(status, 200, "{h}{b}");
    let got = rec.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].request_line(), "GET /public/x HTTP/1.1", "origin-form upstream");
    assert_eq!(got[0].headers("host"), vec!["a.test".to_string()], "{}", got[0].head);
    // HTTP/1.0 may name the authority only in the target: the backend still gets a Host.
    let (status, h, b) = RawConn::open(ferry.http).await.exchange(b"GET http://a.test/ten HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200, "{h}{b}");
    let got = rec.requests();
    assert!(got[1].request_line().starts_with("GET /ten HTTP/1."), "{}", got[1].head);
    assert_eq!(got[1].headers("host"), vec!["a.test".to_string()], "{}", got[1].head);
}

// ---- row 17: :scheme to h2c backends ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row17_h2c_upstream_scheme_is_the_cleartext_hop() {
    let h2 = H2RecordingBackend::start("127.0.0.2").await;
    let (secret_manifest, _) = secret("cert-a", &["a.test"]);
    let files = docs(&[
        service_with_app_protocol("h2", &[h2.addr], "kubernetes.io/h2c"),
        secret_manifest,
        with_tls(
            ingress_annotated("i", &[("a.test", "Prefix", "/", "h2")], "ferry.dev/ssl-redirect: \"false\""),
            &["a.test"],
            "cert-a",
        ),
    ]);
    let ferry = Ferry::launch(&[("a.yaml", files)], &[]).await;
    let (status, h, b) = RawConn::open(ferry.http).await.exchange(b"GET /plain HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(status, 200, "{h}{b}");
    let mut tls = RawConn::open_tls(ferry.https, "a.test", &[b"http/1.1"]).await.expect("TLS handshake");
    let (status, h, b) = tls.exchange(b"GET /tls HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(status, 200, "{h}{b}");
    let got = h2.requests();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!((got[0].path.as_str(), got[0].scheme.as_str()), ("/plain", "http"), "{:?}", got[0]);
    assert_eq!(got[0].header("x-forwarded-proto"), vec!["http".to_string()]);
    // `:scheme` names the cleartext hop to the backend on both engines (Pingora's engine sends
    // what the peer speaks); the client's scheme is in X-Forwarded-Proto.
    assert_eq!((got[1].path.as_str(), got[1].scheme.as_str()), ("/tls", "http"), "{:?}", got[1]);
    assert_eq!(got[1].header("x-forwarded-proto"), vec!["https".to_string()]);
}

// ---- row 18: SNI and Host agree ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row18_sni_and_host_must_agree_on_tls() {
    let rec_a = RecordingBackend::start("127.0.0.2").await;
    let rec_b = RecordingBackend::start("127.0.0.3").await;
    let rec_w = RecordingBackend::start("127.0.0.4").await;
    let (cert_a, pem_a) = secret("cert-a", &["a.test"]);
    let (cert_b, _) = secret("cert-b", &["b.test"]);
    let (cert_w, pem_w) = secret("cert-w", &["*.w.test"]);
    let files = docs(&[
        service("sa", &[rec_a.addr]),
        service("sb", &[rec_b.addr]),
        service("sw", &[rec_w.addr]),
        cert_a,
        cert_b,
        cert_w,
        with_tls(ingress("ia", &[("a.test", "Prefix", "/", "sa")]), &["a.test"], "cert-a"),
        with_tls(ingress("ib", &[("b.test", "Prefix", "/", "sb")]), &["b.test"], "cert-b"),
        with_tls(ingress("iw", &[("*.w.test", "Prefix", "/", "sw")]), &["*.w.test"], "cert-w"),
    ]);
    let ferry = Ferry::launch(&[("a.yaml", files)], &[]).await;

    // HTTP/1.1.
    let stream = TlsStream::connect(ferry.https, "a.test", &[b"http/1.1"]).await.expect("handshake");
    assert_eq!(stream.peer_certificate(), Some(der_of(&pem_a)), "a.test's certificate");
    let mut conn = RawConn::over(stream);
    let (status, h, b) = conn.exchange(b"GET /x HTTP/1.1\r\nHost: b.test\r\n\r\n").await;
    assert_eq!(status, 421, "SNI a.test, Host b.test: {h}{b}");
    let mut conn = RawConn::open_tls(ferry.https, "a.test", &[b"http/1.1"]).await.unwrap();
    let (status, h, b) = conn.exchange(b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(status, 200, "SNI a.test, Host a.test: {h}{b}");
    let stream = TlsStream::connect(ferry.https, "x.w.test", &[b"http/1.1"]).await.expect("handshake");
    assert_eq!(stream.peer_certificate(), Some(der_of(&pem_w)), "the wildcard certificate");
    let mut conn = RawConn::over(stream);
    let (status, h, b) = conn.exchange(b"GET /x HTTP/1.1\r\nHost: y.w.test\r\n\r\n").await;
    assert_eq!(status, 200, "SNI x.w.test, Host y.w.test (same certificate): {h}{b}");

    // HTTP/2 (ALPN h2): :authority against SNI.
    let stream = TlsStream::connect(ferry.https, "a.test", &[b"h2"]).await.expect("handshake");
    assert_eq!(stream.alpn().as_deref(), Some(&b"h2"[..]), "ALPN h2");
    let (send, h2conn) = h2::client::handshake(stream).await.expect("h2 handshake");
    tokio::spawn(h2conn);
    for (authority, want) in [("b.test", 421), ("a.test", 200)] {
        let mut send = send.clone().ready().await.expect("h2 connection usable");
        let req = http::Request::get(format!("https://{authority}/h2")).body(()).unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let status =
            tokio::time::timeout(Duration::from_secs(5), resp).await.expect("answer").expect("response").status();
        assert_eq!(status.as_u16(), want, "h2, SNI a.test, :authority {authority}");
    }

    settle().await;
    assert!(rec_b.received().is_empty(), "b.test's backend got a misdirected request: {}", rec_b.received_text());
    assert_eq!(rec_a.requests().len(), 2);
    assert_eq!(rec_w.requests().len(), 1);
}

// ---- row 19: Connection nominations and CONNECT ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row19_connection_host_and_connect() {
    let (ferry, rec) = recorded(&[]).await;
    let (status, h, b) =
        RawConn::open(ferry.http).await.exchange(b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: Host\r\n\r\n").await;
    assert_eq!(status, 200, "{h}{b}");
    let got = rec.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers("host"), vec!["a.test".to_string()], "{}", got[0].head);

    let (status, h, b) =
        RawConn::open(ferry.http).await.exchange(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n").await;
    assert_eq!(status, 405, "{h}{b}");
    settle().await;
    assert_eq!(rec.requests().len(), 1, "CONNECT reached the backend: {}", rec.received_text());
}

// ---- the "Also" items ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_client_faults_log_no_errors() {
    let rec = RecordingBackend::start("127.0.0.2").await;
    let (secret_manifest, _) = secret("cert-a", &["a.test"]);
    let files = docs(&[
        service("rec", &[rec.addr]),
        secret_manifest,
        with_tls(
            ingress_annotated("i", &[("a.test", "Prefix", "/", "rec")], "ferry.dev/ssl-redirect: \"false\""),
            &["a.test"],
            "cert-a",
        ),
    ]);
    let ferry = Ferry::launch(&[("a.yaml", files)], &[]).await;
    // TCP connect and close on the TLS port.
    for _ in 0..3 {
        drop(tokio::net::TcpStream::connect(ferry.https).await.unwrap());
    }
    // Not TLS at all on the TLS port.
    let mut s = tokio::net::TcpStream::connect(ferry.https).await.unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut [0u8; 256])).await;
    drop(s);
    // A client fault after the head.
    let mut conn = RawConn::open(ferry.http).await;
    conn.send_pieces(&[b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n", b"zz\r\n"], GAP).await;
    let _ = conn.read_response().await;
    // A client that goes away mid-body.
    let mut conn = RawConn::open(ferry.http).await;
    conn.send_pieces(&[b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100\r\n\r\n", b"0123"], GAP).await;
    drop(conn);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = ferry.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "client faults logged as errors:\n{}", errors.join("\n"));
    // Counted instead: the one failed handshake (not the three connect-and-close probes, nor
    // ferry's own readiness probe), and the malformed chunk.
    let metrics = ferry.admin_get("/metrics").await;
    let count = |labels: &str| {
        let prefix = format!("ferry_client_faults_total{{{labels}}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    assert_eq!(count("listener=\"ferry https\",kind=\"tls_handshake\""), 1.0, "{metrics}");
    assert_eq!(count("listener=\"ferry http\",kind=\"request\""), 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_more_than_256_header_fields_get_431() {
    let (ferry, rec) = recorded(&[]).await;
    let mut req = String::from("GET / HTTP/1.1\r\nHost: a.test\r\n");
    for i in 0..300 {
        req += &format!("X-H{i}: v\r\n");
    }
    req += "\r\n";
    let (status, h, b) = RawConn::open(ferry.http).await.exchange(req.as_bytes()).await;
    assert_eq!(status, 431, "{h}{b}");
    settle().await;
    assert!(rec.received().is_empty(), "{}", rec.received_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_requests_shorter_than_the_h2c_preface_are_answered_at_once() {
    let (ferry, _rec) = recorded(&["--client-header-timeout", "10"]).await;
    for raw in [&b"GET / HTTP/1.0\r\n\r\n"[..], b"OPTIONS / HTTP/1.0\r\n\r\n", b"GET /p HTTP/1.1\r\n\r\n"] {
        let started = Instant::now();
        let (status, h, b) = RawConn::open(ferry.http).await.exchange(raw).await;
        assert!(status >= 200, "{:?}: {status} {h}{b}", text(raw));
        assert!(started.elapsed() < Duration::from_secs(3), "{:?} answered after {:?}", text(raw), started.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_admin_refuses_post() {
    let (ferry, _rec) = recorded(&[]).await;
    let resp = client().post(format!("http://{}/routes", ferry.admin)).body("{}").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let resp = client().get(format!("http://{}/routes", ferry.admin)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

// ---- found by the hostile run of the request lifecycle (issue 15) ----

/// A raw HTTP/1.1 backend: `answer(connection, request)` gives the bytes to send for the n-th
/// request (0-based) of the n-th connection (closing after them if their head says
/// `Connection: close`), or `None` to close without answering. Returns the
/// address and every request line received, in order.
async fn scripted_backend(
    answer: impl Fn(usize, usize) -> Option<&'static [u8]> + Send + Sync + 'static,
) -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let answer = std::sync::Arc::new(answer);
    let log = seen.clone();
    tokio::spawn(async move {
        let mut conn_no = 0;
        while let Ok((mut sock, _)) = listener.accept().await {
            let (answer, log, this) = (answer.clone(), log.clone(), conn_no);
            conn_no += 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for req_no in 0.. {
                    // Heads only: these tests send no request bodies upstream that matter here.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let length =
                        header_values(&head, "content-length").first().and_then(|v| v.parse().ok()).unwrap_or(0);
                    while buf.len() < head_end + length {
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + length);
                    log.lock().unwrap().push(head.lines().next().unwrap_or("").to_string());
                    match answer(this, req_no) {
                        Some(bytes) => {
                            if sock.write_all(bytes).await.is_err() {
                                return;
                            }
                            // A response that says `Connection: close` ends the connection
                            // (a close-delimited body ends here).
                            let head = String::from_utf8_lossy(bytes).to_ascii_lowercase();
                            if head.split("\r\n\r\n").next().is_some_and(|h| h.contains("\r\nconnection: close")) {
                                let _ = sock.shutdown().await;
                                return;
                            }
                        }
                        None => return,
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_a_failure_after_100_continue_still_gets_ferrys_final_reply() {
    let rec = RecordingBackend::start("127.0.0.2").await;
    let files = docs(&[
        service("rec", &[rec.addr]),
        ingress_annotated("lim", &[("a.test", "Prefix", "/", "rec")], "ferry.dev/max-body-size: \"100\""),
    ]);
    let ferry = Ferry::launch(&[("a.yaml", files)], &["--client-body-timeout", "1"]).await;
    // Over the limit while the chunked body streams, after the interim 100.
    let mut conn = RawConn::open(ferry.http).await;
    let chunk = |c: &str| format!("50\r\n{}\r\n", c.repeat(80));
    let head = b"POST /up HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert!(conn.send(head).await);
    let (status, h, _) = conn.read_response().await;
    assert_eq!(status, 100, "{h}");
    assert!(conn.send_pieces(&[chunk("a").as_bytes(), format!("{}0\r\n\r\n", chunk("b")).as_bytes()], GAP).await);
    let (status, h, b) = conn.read_response().await;
    assert_eq!(status, 413, "a final reply follows the 100: {h}{b}");
    assert_eq!(b, "ferry: request body too large\n");
    // A body that stalls after the 100: 408, not silence.
    let mut conn = RawConn::open(ferry.http).await;
    let head = b"POST /up HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n";
    assert!(conn.send(head).await);
    assert_eq!(conn.read_response().await.0, 100);
    assert!(conn.send(b"abc").await);
    let (status, h, b) = conn.read_response().await;
    assert_eq!(status, 408, "{h}{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_a_101_the_request_did_not_ask_for_is_a_bad_gateway() {
    let (backend, _) = scripted_backend(|_, _| {
        Some(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\nRAW")
    })
    .await;
    let files = docs(&[service("sw", &[backend]), ingress("i", &[("a.test", "Prefix", "/", "sw")])]);
    let ferry = Ferry::launch(&[("a.yaml", files)], &[]).await;
    let mut conn = RawConn::open(ferry.http).await;
    let (status, h, b) = conn.exchange(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(status, 502, "{h}{b}");
    assert!(!b.contains("RAW"), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_a_lost_pooled_connection_replays_only_bodyless_idempotent_requests() {
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    // Connections 0 and 1 each answer their first request, then read the second and close
    // unanswered (a pooled connection the backend drops as the request goes out).
    let (backend, seen) = scripted_backend(|conn, req| if conn <= 1 && req == 1 { None } else { Some(OK) }).await;
    let files = docs(&[service("b", &[backend]), ingress("i", &[("a.test", "Prefix", "/", "b")])]);
    let ferry = Ferry::launch(&[("a.yaml", files)], &[]).await;
    let mut conn = RawConn::open(ferry.http).await;
    assert_eq!(conn.exchange(b"GET /warm HTTP/1.1\r\nHost: a.test\r\n\r\n").await.0, 200);
    // Lost on connection 0: a GET is made once more, on connection 1.
    let (status, h, b) = conn.exchange(b"GET /lost HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(status, 200, "made once more on a new connection: {h}{b}");
    // Lost on connection 1: a PUT with a body is not sent again.
    let mut conn = RawConn::open(ferry.http).await;
    let (status, h, b) = conn.exchange(b"PUT /data HTTP/1.1\r\nHost: a.test\r\nContent-Length: 7\r\n\r\nPAYLOAD").await;
    assert_eq!(status, 502, "{h}{b}");
    settle().await;
    let lines = seen.lock().unwrap().clone();
    assert_eq!(lines.iter().filter(|l| l.starts_with("GET /lost")).count(), 2, "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("PUT /data")).count(), 1, "the body is sent once: {lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_a_quiet_websocket_outlives_the_body_timeout() {
    let ws = echo("127.0.0.3", "ws").await;
    let files = docs(&[service("ws", &[ws]), ingress("i", &[("ws.test", "Prefix", "/", "ws")])]);
    let ferry = Ferry::launch(&[("a.yaml", files)], &["--client-body-timeout", "1"]).await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/chat", ferry.http).into_client_request().unwrap();
    req.headers_mut().insert("host", "ws.test".parse().unwrap());
    let (mut socket, resp) = tokio_tungstenite::connect_async(req).await.expect("websocket upgrade through ferry");
    assert_eq!(resp.status(), 101);
    tokio::time::sleep(Duration::from_millis(1800)).await;
    socket.send(tokio_tungstenite::tungstenite::Message::text("late")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), tokio_tungstenite::tungstenite::Message::text("ws: late"));
}

/// An upgraded connection relays bytes exactly, both ways: bytes the client sent right behind its
/// upgrade head and bytes the backend sent right behind its `101` (each in the same write as the
/// head), then pieces split across writes; a client that closes its side closes the backend's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_an_upgraded_connection_relays_every_byte_both_ways() {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<(Vec<u8>, bool)>();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        got.drain(..head_end);
        sock.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nRAW-FIRST",
        )
        .await
        .unwrap();
        let mut ponged = false;
        let eof = loop {
            match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut chunk)).await {
                Ok(Ok(0)) => break true,
                Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
                _ => break false,
            }
            if !ponged && got.ends_with(b"PING-2") {
                ponged = true;
                sock.write_all(b"PO").await.unwrap();
                tokio::time::sleep(GAP).await;
                sock.write_all(b"NG").await.unwrap();
            }
        };
        let _ = done_tx.send((got, eof));
    });
    let files = docs(&[service("ws", &[backend]), ingress("i", &[("a.test", "Prefix", "/", "ws")])]);
    let ferry = Ferry::launch(&[("a.yaml", files)], &[]).await;
    let mut client = tokio::net::TcpStream::connect(ferry.http).await.unwrap();
    client.set_nodelay(true).unwrap();
    client
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nEARLY",
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !seen.ends_with(b"RAW-FIRST") {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&seen).to_string();
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    assert!(text.ends_with("\r\n\r\nRAW-FIRST"), "nothing between the head and the backend's bytes: {text}");
    client.write_all(b"PING-1").await.unwrap();
    tokio::time::sleep(GAP).await;
    client.write_all(b"PING-2").await.unwrap();
    let mut pong = Vec::new();
    while pong.len() < 4 {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the answer");
        pong.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(pong, b"PONG");
    client.shutdown().await.unwrap();
    let (got, eof) = tokio::time::timeout(Duration::from_secs(10), done_rx).await.unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&got), "EARLYPING-1PING-2", "what the backend received after the head");
    assert!(eof, "the client's close reached the backend");
    let rest = tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk)).await.unwrap().unwrap();
    assert_eq!(rest, 0, "and the client's connection closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_an_unending_head_is_refused_at_64_kib_not_buffered_to_1_mib() {
    let (ferry, rec) = recorded(&[]).await;
    let mut conn = RawConn::open(ferry.http).await;
    let mut head = b"GET / HTTP/1.1\r\nHost: a.test\r\nX-Big: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 70_000));
    // No end of line, no blank line: ferry stops reading at 64 KiB and answers.
    conn.send(&head).await;
    let (status, h, _) = conn.read_response().await;
    assert_eq!(status, 431, "{h}");
    assert!(conn.closed_within(Duration::from_secs(2)).await);
    settle().await;
    assert!(rec.requests().is_empty());
}

// ---- issue 17: strict HTTP/1 framing (gateway/src/wire.rs, safety::frame_response) ----

/// Request heads two parsers could read differently: refused with ferry's own 400 before either
/// engine parses them, the connection closed, nothing forwarded, whether the head arrives in
/// one write or a byte at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_heads_are_refused_on_every_engine() {
    let (ferry, rec) = recorded(&[]).await;
    let cases: &[(&str, &[u8])] = &[
        ("bare LF ending a field", b"GET / HTTP/1.1\r\nHost: a.test\nX-Smuggle: 1\r\n\r\n"),
        ("bare LF line ends", b"GET / HTTP/1.1\nHost: a.test\n\n"),
        ("bare LF before the request line", b"\nGET / HTTP/1.1\r\nHost: a.test\r\n\r\n"),
        ("bare CR in a value", b"GET / HTTP/1.1\r\nHost: a.test\r\nX: a\rb\r\n\r\n"),
        ("raw space in the target", b"GET /a b HTTP/1.1\r\nHost: a.test\r\n\r\n"),
        ("two spaces after the method", b"GET  / HTTP/1.1\r\nHost: a.test\r\n\r\n"),
        ("tab between method and target", b"GET\t/ HTTP/1.1\r\nHost: a.test\r\n\r\n"),
        ("UTF-8 in the target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a.test\r\n\r\n"),
        ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a.test\r\n\r\n"),
        (
            "a fragment in the target (forwarded as /public before)",
            b"GET /public#/../admin HTTP/1.1\r\nHost: a.test\r\n\r\n",
        ),
        ("obs-fold with a tab", b"GET / HTTP/1.1\r\nHost: a.test\r\nX: a\r\n\tb\r\n\r\n"),
        ("DEL in a value", b"GET / HTTP/1.1\r\nHost: a.test\r\nX: a\x7fb\r\n\r\n"),
        ("tab before the colon", b"GET / HTTP/1.1\r\nHost\t: a.test\r\n\r\n"),
    ];
    for (what, raw) in cases {
        let bytes: Vec<&[u8]> = raw.chunks(1).collect();
        for (how, pieces) in [("whole", vec![*raw]), ("byte by byte", bytes)] {
            let mut conn = RawConn::open(ferry.http).await;
            conn.send_pieces(&pieces, Duration::from_millis(2)).await;
            let (status, h, b) = conn.read_response().await;
            assert_eq!(status, 400, "{what}, {how}: {h}{b}");
            assert!(b.starts_with("ferry: bad request: "), "{what}, {how}: ferry's own reply: {h}{b}");
            assert!(h.contains("\r\nconnection: close\r\n"), "{what}, {how}: {h}");
            assert!(conn.closed_within(Duration::from_secs(2)).await, "{what}, {how}: closed");
        }
    }
    settle().await;
    assert!(rec.received().is_empty(), "reached the backend: {}", rec.received_text());
    let metrics = ferry.admin_get("/metrics").await;
    assert_eq!(requests_total(&metrics, "default/i", "5xx"), 0.0, "client faults are not 5xx: {metrics}");
}

/// A malformed head pipelined behind a good request: the good one is served, the bad one gets
/// 400 and the connection closes; the backend gets exactly the good request. (On the Pingora
/// engine Pingora reads a pipelined head itself; ferry's strict reading runs on its raw bytes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_head_pipelined_behind_a_good_one_is_refused() {
    let (ferry, rec) = recorded(&[]).await;
    for bad in [
        &b"GET /2 HTTP/1.1\r\nHost: a.test\nX: 1\r\n\r\n"[..],
        b"GET /2 HTTP/1.1\r\nHost: a.test\r\nX: a\r\n b\r\n\r\n",
        b"GET /2 HTTP/1.1\r\nHost: a.test\r\nX: a\x01b\r\n\r\n",
    ] {
        let mut conn = RawConn::open(ferry.http).await;
        let mut raw = b"GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec();
        raw.extend_from_slice(bad);
        assert!(conn.send(&raw).await);
        let (status, h, b) = conn.read_response().await;
        assert_eq!(status, 200, "{h}{b}");
        let (status, h, b) = conn.read_response().await;
        assert_eq!(status, 400, "{:?}: {h}{b}", text(bad));
        assert!(conn.closed_within(Duration::from_secs(2)).await);
    }
    settle().await;
    let got: Vec<String> = rec.requests().iter().map(|r| r.head.lines().next().unwrap_or("").to_string()).collect();
    assert_eq!(got, vec!["GET /1 HTTP/1.1"; 3], "{}", rec.received_text());
}

/// Response framing follows the client's HTTP version, whatever the backend chose: an HTTP/1.0
/// client never gets chunks (the body is delimited by the close), an HTTP/1.1 client gets a
/// close-delimited body re-chunked and keeps its connection, and neither gets interim 1xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_framed_for_the_clients_http_version() {
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    const CLOSE_DELIMITED: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-close";
    const BOTH_FRAMINGS: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    const EARLY_HINTS: &[u8] =
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (chunked, _) = scripted_backend(|_, _| Some(CHUNKED)).await;
    let (close, _) = scripted_backend(|_, _| Some(CLOSE_DELIMITED)).await;
    let (hints, _) = scripted_backend(|_, _| Some(EARLY_HINTS)).await;
    let (both, _) = scripted_backend(|_, _| Some(BOTH_FRAMINGS)).await;
    let files = docs(&[
        service("chunked", &[chunked]),
        service("close", &[close]),
        service("hints", &[hints]),
        service("both", &[both]),
        ingress(
            "i",
            &[
                ("a.test", "Prefix", "/chunked", "chunked"),
                ("a.test", "Prefix", "/close", "close"),
                ("a.test", "Prefix", "/hints", "hints"),
                ("a.test", "Prefix", "/both", "both"),
            ],
        ),
    ]);
    let ferry = Ferry::launch(&[("a.yaml", files)], &[]).await;

    // HTTP/1.0 client, chunked backend (also when the client asks to keep the connection).
    for keep in ["", "Connection: keep-alive\r\n"] {
        let mut conn = RawConn::open(ferry.http).await;
        assert!(conn.send(format!("GET /chunked HTTP/1.0\r\nHost: a.test\r\n{keep}\r\n").as_bytes()).await);
        let raw = conn.read_to_close(Duration::from_secs(5)).await.expect("the connection closes after the body");
        let raw = text(&raw);
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        assert!(head.starts_with("HTTP/1.1 200"), "{raw}");
        assert!(!head.to_ascii_lowercase().contains("transfer-encoding"), "no chunks for HTTP/1.0 ({keep:?}): {raw}");
        assert!(head.to_ascii_lowercase().contains("\r\nconnection: close"), "{raw}");
        assert_eq!(body, "hello", "the body as sent, delimited by the close ({keep:?})");
    }
    // HTTP/1.1 client, close-delimited backend: re-chunked, the connection stays open.
    let mut conn = RawConn::open(ferry.http).await;
    for round in 0..2 {
        let (status, h, b) = conn.exchange(b"GET /close HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
        assert_eq!(status, 200, "round {round}: {h}{b}");
        assert!(h.contains("\r\ntransfer-encoding: chunked\r\n"), "round {round}: {h}");
        assert!(!h.contains("connection: close"), "round {round}: {h}");
        assert_eq!(b, "until-close", "round {round}");
    }
    // HTTP/1.0 client, close-delimited backend: close-delimited, closed.
    let mut conn = RawConn::open(ferry.http).await;
    assert!(conn.send(b"GET /close HTTP/1.0\r\nHost: a.test\r\n\r\n").await);
    let raw = text(&conn.read_to_close(Duration::from_secs(5)).await.expect("closed after the body"));
    assert!(raw.ends_with("\r\n\r\nuntil-close"), "{raw}");
    assert!(!raw.to_ascii_lowercase().contains("transfer-encoding"), "{raw}");
    // A backend response with both Content-Length and Transfer-Encoding: the chunks frame it,
    // and the length is not passed on (RFC 9112 §6.3), so no client can read the body by it.
    let mut conn = RawConn::open(ferry.http).await;
    for round in 0..2 {
        let (status, h, b) = conn.exchange(b"GET /both HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
        assert_eq!(status, 200, "round {round}: {h}{b}");
        assert!(!h.contains("content-length"), "round {round}: {h}");
        assert!(h.contains("\r\ntransfer-encoding: chunked\r\n"), "round {round}: {h}");
        assert_eq!(b, "hello", "round {round}");
    }
    let mut conn = RawConn::open(ferry.http).await;
    assert!(conn.send(b"GET /both HTTP/1.0\r\nHost: a.test\r\n\r\n").await);
    let raw = text(&conn.read_to_close(Duration::from_secs(5)).await.expect("closed after the body"));
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let head = head.to_ascii_lowercase();
    assert!(!head.contains("content-length") && !head.contains("transfer-encoding"), "{raw}");
    assert_eq!(body, "hello", "HTTP/1.0: the body, delimited by the close");
    // Interim 1xx from the backend reach no HTTP/1 client.
    for version in ["1.0", "1.1"] {
        let mut conn = RawConn::open(ferry.http).await;
        let (status, h, b) =
            conn.exchange(format!("GET /hints HTTP/{version}\r\nHost: a.test\r\n\r\n").as_bytes()).await;
        assert_eq!(status, 200, "HTTP/{version}: the first response is the final one: {h}{b}");
        assert_eq!(b, "ok");
    }
}
