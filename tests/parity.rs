//! Parity: one behaviour table, run against every way a request reaches ferry.
//!
//! Every HTTP request goes through the same phases of one lifecycle (`gateway/src/http/`,
//! README "Architecture"), whatever engine or protocol carries it; this file holds ferry to that.
//! Each row (no route, a refusal, a limit, a redirect, CORS, canary, affinity, retries, forwarded
//! headers, metrics and the access log) is sent on each transport:
//!
//! - `h1-fast`: HTTP/1.1 in plaintext to ferry's default HTTP/1 engine;
//! - `h1-pingora`: the same to a ferry started with `--http1-engine pingora`;
//! - `h2-tls`: HTTP/2 over TLS (ALPN `h2`) to the HTTPS listener;
//! - `h2c`: HTTP/2 with prior knowledge to the plaintext listener.
//!
//! The expected answer is the same on all four (status, ferry's own body where ferry answers,
//! the listed headers); what differs is only what the transport itself implies (`https` in
//! `X-Forwarded-Proto` and a `Secure` cookie over TLS, no HTTPS redirect on the TLS listener).
//! HTTP/1 goes out as raw bytes, so the status line, `Connection: close` and what becomes of the
//! connection are asserted exactly; a connection a reply keeps alive must serve another request.
//! HTTP/2 has no connection-level `close`: where HTTP/1 closes, the HTTP/2 reply is asserted, and
//! where HTTP/1 keeps the connection, the HTTP/2 connection must carry another stream.
//!
//! Each test is a group of rows: it starts two ferry processes on one table (the default engine,
//! which also serves both HTTP/2 transports, and the `pingora` engine), runs every row on every
//! transport, and fails listing each row × transport that differs from the table, with all the
//! differences, rather than stopping at the first.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Between the pieces of a streamed body, so each is its own read on ferry's side.
const GAP: Duration = Duration::from_millis(10);
/// How long an HTTP/2 answer (head, then body) may take.
const H2_WAIT: Duration = Duration::from_secs(5);

const NO_ROUTE: &str = "ferry: no route for this host and path\n";
const NO_ENDPOINTS: &str = "ferry: service unavailable: no ready endpoints for default/empty:80\n";
const BAD_GATEWAY: &str = "ferry: bad gateway: ";
const FORBIDDEN: &str = "ferry: forbidden: source address not allowed\n";
const TOO_MANY: &str = "ferry: too many requests\n";
const TOO_LARGE: &str = "ferry: request body too large\n";

// ---- transports ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    H1Fast,
    H1Pingora,
    H2Tls,
    H2c,
}

const TRANSPORTS: [Transport; 4] = [Transport::H1Fast, Transport::H1Pingora, Transport::H2Tls, Transport::H2c];

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::H1Fast => "h1-fast",
            Transport::H1Pingora => "h1-pingora",
            Transport::H2Tls => "h2-tls",
            Transport::H2c => "h2c",
        }
    }

    fn is_h2(self) -> bool {
        matches!(self, Transport::H2Tls | Transport::H2c)
    }

    fn tls(self) -> bool {
        self == Transport::H2Tls
    }

    fn scheme(self) -> &'static str {
        if self.tls() {
            "https"
        } else {
            "http"
        }
    }

    /// The address the transport's connections come from: one per transport, so per-client
    /// state (rate limits) is not shared between them and `X-Forwarded-For` and the access log
    /// show which one a request came on. TLS connections (`TlsStream`) come from 127.0.0.1.
    fn client_ip(self) -> &'static str {
        match self {
            Transport::H1Fast => "127.0.0.11",
            Transport::H1Pingora => "127.0.0.12",
            Transport::H2Tls => "127.0.0.1",
            Transport::H2c => "127.0.0.14",
        }
    }
}

// ---- requests and replies ----

/// A request, sent the same way on every transport.
#[derive(Clone)]
struct Req {
    method: &'static str,
    host: String,
    path: String,
    headers: Vec<(&'static str, String)>,
    /// Connection-level fields: sent on HTTP/1 only (HTTP/2 forbids them).
    h1_headers: Vec<(&'static str, &'static str)>,
    body: Body,
    /// Find out afterwards whether the connection still serves a request (see [`Reply::reusable`]).
    probe: bool,
}

#[derive(Clone)]
enum Body {
    None,
    /// N bytes with their length declared (`Content-Length`).
    Sized(usize),
    /// A declared length and no bytes sent: the answer must come from the head alone.
    Declared(usize),
    /// Chunks of these sizes without a declared length (HTTP/1 `Transfer-Encoding: chunked`,
    /// HTTP/2 DATA frames), each its own write; `end`: the body is finished (last chunk,
    /// END_STREAM), else it is left open.
    Streamed {
        chunks: Vec<usize>,
        end: bool,
    },
}

impl Req {
    fn get(host: &str, path: &str) -> Req {
        Req {
            method: "GET",
            host: host.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            h1_headers: Vec::new(),
            body: Body::None,
            probe: true,
        }
    }

    fn method(mut self, method: &'static str) -> Req {
        self.method = method;
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Req {
        self.headers.push((name, value.to_string()));
        self
    }

    fn h1_header(mut self, name: &'static str, value: &'static str) -> Req {
        self.h1_headers.push((name, value));
        self
    }

    fn body(mut self, body: Body) -> Req {
        self.body = body;
        self
    }

    fn no_probe(mut self) -> Req {
        self.probe = false;
        self
    }
}

/// A reply. Header names and values are lower-cased on every transport (`RawConn` lower-cases
/// HTTP/1 heads), so expectations are written in lower case.
#[derive(Debug, Default)]
struct Reply {
    /// 0 when no reply came (see `error`).
    status: u16,
    /// The HTTP/1 status line (lower-cased); empty on HTTP/2.
    status_line: String,
    headers: Vec<(String, String)>,
    body: String,
    /// Whether the connection served another request after this reply (`None`: not probed).
    reusable: Option<bool>,
    error: Option<String>,
}

impl Reply {
    fn failed(error: String) -> Reply {
        Reply { error: Some(error), ..Reply::default() }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Every value of `name`, joined with `, `.
    fn joined(&self, name: &str) -> String {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// What a probe sends to find out whether a connection still serves requests: a host with no
/// route, so the rows' routes (their rate limits, their counters) are not touched.
fn probe() -> Req {
    Req::get("probe.invalid", "/probe").no_probe()
}

// ---- the two ferries and their backends ----

/// Backends, the table, and the two ferry processes serving it.
struct Fixture {
    fast: Ferry,
    pingora: Ferry,
    logs: tempfile::TempDir,
    /// Records what the `fwd.test` backend receives.
    rec: RecordingBackend,
    /// Requests the always-503 endpoints of `retry.test` (HTTP/1) and `retry-h2c.test` (h2c) got.
    bad_h1: Arc<AtomicUsize>,
    bad_h2c: Arc<AtomicUsize>,
    /// The only endpoint of `dead.test`: a port nothing listens on.
    _dead: tokio::net::TcpSocket,
}

fn annotated(name: &str, host: &str, svc: &str, annotations: &str) -> String {
    ingress_annotated(name, &[(host, "Prefix", "/", svc)], annotations)
}

impl Fixture {
    /// Starts every backend and both ferries (with `extra` flags) on the whole table.
    async fn start(extra: &[&str]) -> Fixture {
        let web = echo("127.0.0.2", "web").await;
        let stable = echo("127.0.0.2", "stable").await;
        let next = echo("127.0.0.3", "next").await;
        let sticky = [echo("127.0.0.4", "sticky").await, echo("127.0.0.5", "sticky").await];
        let (bad_h1_addr, bad_h1) = unavailable_h1("127.0.0.6").await;
        let good_h1 = echo("127.0.0.7", "good").await;
        let (bad_h2c_addr, bad_h2c) = unavailable_h2c("127.0.0.8").await;
        let good_h2c = echo("127.0.0.9", "good-h2c").await;
        let rec = RecordingBackend::start_with(
            "127.0.0.10",
            "X-Kept: yes\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
             Proxy-Authenticate: Basic realm=\"parity\"\r\nConnection: X-Bar\r\nX-Bar: 1\r\n",
        )
        .await;
        // Bound and never listening: connections are refused, and while it is held no other
        // socket (a parallel test's backend) can take its port, as one could `closed_addr`'s.
        let dead = tokio::net::TcpSocket::new_v4().expect("socket");
        dead.bind("127.0.0.3:0".parse().unwrap()).expect("bind");
        let empty = "apiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: default}\nspec:\n  ports:\n  - {name: http, port: 80}\n".to_string();
        let (secure_secret, _) =
            ferry_echo::tls_secret_manifest("default", "secure", &["secure.test".into()]).expect("certificate");
        // Served for every other name, so the TLS transport can reach every host.
        let (fallback_secret, _) =
            ferry_echo::tls_secret_manifest("default", "fallback", &["fallback.test".into()]).expect("certificate");
        let files = docs(&[
            service("web", &[web]),
            service_with_app_protocol("web-h2c", &[web], "kubernetes.io/h2c"),
            empty,
            service("dead", &[dead.local_addr().expect("addr")]),
            service("stable", &[stable]),
            service("next", &[next]),
            service("sticky", &sticky),
            service("retry-h1", &[bad_h1_addr, good_h1]),
            service_with_app_protocol("retry-h2c", &[bad_h2c_addr, good_h2c], "kubernetes.io/h2c"),
            service("rec", &[rec.addr]),
            secure_secret,
            fallback_secret,
            ingress("ok", &[("ok.test", "Prefix", "/", "web")]),
            ingress("empty", &[("empty.test", "Prefix", "/", "empty")]),
            ingress("dead", &[("dead.test", "Prefix", "/", "dead")]),
            annotated("deny", "deny.test", "web", "ferry.dev/allow-source-ranges: \"10.0.0.0/8\""),
            annotated("rate", "rate.test", "web", "ferry.dev/rate-limit: \"1r/m\""),
            annotated("limit", "limit.test", "web", "ferry.dev/max-body-size: 1k"),
            annotated("limit-h2c", "limit-h2c.test", "web-h2c", "ferry.dev/max-body-size: 1k"),
            annotated("redirect", "redirect.test", "web", "ferry.dev/redirect: \"https://new.test/welcome\""),
            annotated(
                "temp",
                "temp.test",
                "web",
                "ferry.dev/redirect: \"https://maintenance.test/\", ferry.dev/redirect-code: \"302\"",
            ),
            annotated("approot", "approot.test", "web", "ferry.dev/app-root: /dashboard"),
            with_tls(ingress("secure", &[("secure.test", "Prefix", "/", "web")]), &["secure.test"], "secure"),
            annotated("cors", "cors.test", "web", "ferry.dev/cors-allow-origin: \"https://app.test\""),
            ingress("main", &[("canary.test", "Prefix", "/", "stable")]),
            annotated("canary", "canary.test", "next", "ferry.dev/canary: \"true\", ferry.dev/canary-header: X-Canary"),
            annotated("sticky", "sticky.test", "sticky", "ferry.dev/affinity: cookie"),
            annotated("retry", "retry.test", "retry-h1", "ferry.dev/retries: \"2\""),
            annotated("retry-h2c", "retry-h2c.test", "retry-h2c", "ferry.dev/retries: \"2\""),
            ingress("fwd", &[("fwd.test", "Prefix", "/", "rec")]),
        ]);
        let logs = tempfile::tempdir().expect("tempdir");
        // A host only this ferry serves, to tell its listeners from another process's.
        let marker = |engine: &str| {
            static FIXTURES: AtomicUsize = AtomicUsize::new(0);
            let n = FIXTURES.fetch_add(1, Ordering::Relaxed);
            format!("{engine}-{}-{n}.marker.test", std::process::id())
        };
        let flags = |engine: &str| {
            let log = logs.path().join(format!("{engine}.log")).to_string_lossy().into_owned();
            let mut flags = vec!["--http1-engine".to_string(), engine.to_string(), "--access-log".to_string(), log];
            flags.extend(["--default-tls-secret".to_string(), "default/fallback".to_string()]);
            flags.extend(extra.iter().map(|f| f.to_string()));
            flags
        };
        let (fast_flags, pingora_flags) = (flags("fast"), flags("pingora"));
        let fast_flags: Vec<&str> = fast_flags.iter().map(String::as_str).collect();
        let pingora_flags: Vec<&str> = pingora_flags.iter().map(String::as_str).collect();
        let (fast_marker, pingora_marker) = (marker("fast"), marker("pingora"));
        // Boxed, like `send`.
        let (fast, pingora) = tokio::join!(
            Box::pin(launch_own(&files, &fast_flags, &fast_marker, true)),
            Box::pin(launch_own(&files, &pingora_flags, &pingora_marker, false)),
        );
        Fixture { fast, pingora, logs, rec, bad_h1, bad_h2c, _dead: dead }
    }

    fn ferry(&self, t: Transport) -> &Ferry {
        if t == Transport::H1Pingora {
            &self.pingora
        } else {
            &self.fast
        }
    }

    fn access_log(&self, t: Transport) -> PathBuf {
        let engine = if t == Transport::H1Pingora { "pingora" } else { "fast" };
        self.logs.path().join(format!("{engine}.log"))
    }

    /// Sends `req` on a new connection of transport `t`.
    async fn send(&self, t: Transport, req: Req) -> Reply {
        let ferry = self.ferry(t);
        // Boxed, so the tests' own futures stay small (a test thread's stack is 2 MiB).
        match t {
            Transport::H1Fast | Transport::H1Pingora => Box::pin(send_h1(ferry.http, t.client_ip(), &req)).await,
            Transport::H2Tls | Transport::H2c => Box::pin(send_h2(ferry, t, &req)).await,
        }
    }
}

/// Starts ferry on `files` plus a route for `marker`, and makes sure its ports are its own.
/// `support` picks free ports by binding and releasing them, so a test running in parallel can
/// take one before ferry binds it: ferry then exits (admin port), or keeps retrying the bind of
/// a listener and still becomes ready, because the other process accepts the connections that
/// tell it so, and its requests go there. Either way ferry is started again on new ports; the
/// marker route (only this ferry serves it) tells its listeners from another process's.
async fn launch_own(files: &str, flags: &[&str], marker: &str, tls: bool) -> Ferry {
    let files = docs(&[files.to_string(), ingress("marker", &[(marker, "Prefix", "/", "web")])]);
    let mut why = String::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).expect("mkdir");
        std::fs::write(manifests.join("a.yaml"), &files).expect("write");
        let mut ferry = Ferry::start_at(dir, &manifests, flags);
        let deadline = Instant::now() + Duration::from_secs(20);
        let port_taken = |ferry: &Ferry| ferry.log().contains(" is in use, will try again");
        while ferry.readyz().await != Some(200) && ferry.is_running() && !port_taken(&ferry) {
            assert!(Instant::now() < deadline, "ferry {flags:?} not ready in time; log:\n{}", ferry.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !ferry.is_running() || port_taken(&ferry) {
            why = format!("ferry {flags:?} could not take its ports; log:\n{}", ferry.log());
            eprintln!("{why}");
            continue;
        }
        let mut own = vec![send_h1(ferry.http, "127.0.0.1", &Req::get(marker, "/").no_probe()).await];
        if tls {
            own.push(send_h2(&ferry, Transport::H2Tls, &Req::get(marker, "/").no_probe()).await);
        }
        if own.iter().all(|r| r.status == 200 && r.header("x-echo-service") == Some("web")) {
            return ferry;
        }
        why = format!("another process answered on a port of ferry {flags:?}: {own:?}");
        eprintln!("{why}");
    }
    panic!("ferry could not be started on ports of its own, three times; the last: {why}");
}

/// An HTTP/1.1 endpoint that answers every request `503` (keeping the connection) and counts them.
async fn unavailable_h1(ip: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(format!("{ip}:0")).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let hits = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..i + 4);
                        hits.fetch_add(1, Ordering::Relaxed);
                        let reply = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbad\n";
                        if s.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, hits)
}

/// An h2c endpoint that answers every stream `503` and counts them.
async fn unavailable_h2c(ip: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(format!("{ip}:0")).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let hits = counter.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(s).await else { return };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    hits.fetch_add(1, Ordering::Relaxed);
                    let head = http::Response::builder().status(503).header("content-length", "4").body(()).unwrap();
                    if let Ok(mut body) = respond.send_response(head, false) {
                        let _ = body.send_data(Bytes::from_static(b"bad\n"), true);
                    }
                }
            });
        }
    });
    (addr, hits)
}

// ---- HTTP/1 ----

/// The request as HTTP/1.1 bytes, in the pieces it is written in.
fn h1_pieces(req: &Req) -> Vec<Vec<u8>> {
    let mut head = format!("{} {} HTTP/1.1\r\nHost: {}\r\n", req.method, req.path, req.host);
    for (name, value) in &req.headers {
        head += &format!("{name}: {value}\r\n");
    }
    for (name, value) in &req.h1_headers {
        head += &format!("{name}: {value}\r\n");
    }
    match &req.body {
        Body::None => {}
        Body::Sized(n) | Body::Declared(n) => head += &format!("Content-Length: {n}\r\n"),
        Body::Streamed { .. } => head += "Transfer-Encoding: chunked\r\n",
    }
    head += "\r\n";
    let mut pieces = vec![head.into_bytes()];
    match &req.body {
        Body::Sized(n) => pieces[0].extend(std::iter::repeat_n(b'x', *n)),
        Body::Streamed { chunks, end } => {
            for size in chunks {
                let mut piece = format!("{size:x}\r\n").into_bytes();
                piece.extend(std::iter::repeat_n(b'x', *size));
                piece.extend_from_slice(b"\r\n");
                pieces.push(piece);
            }
            if *end {
                pieces.push(b"0\r\n\r\n".to_vec());
            }
        }
        Body::None | Body::Declared(_) => {}
    }
    pieces
}

async fn send_h1(addr: SocketAddr, ip: &str, req: &Req) -> Reply {
    let mut conn = RawConn::open_from(addr, ip).await;
    let pieces = h1_pieces(req);
    let pieces: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
    // ferry may answer (and close) before the whole body is written: the reply is what counts.
    let _ = conn.send_pieces(&pieces, GAP).await;
    let (status, head, body) = conn.read_response().await;
    if status == 0 {
        return Reply::failed("no HTTP/1 reply (connection closed or timed out)".into());
    }
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_string(), v.trim().to_string())).collect();
    let reusable = if req.probe {
        let probe = h1_pieces(&probe()).concat();
        Some(conn.exchange(&probe).await.0 != 0)
    } else {
        None
    };
    Reply { status, status_line, headers, body, reusable, error: None }
}

// ---- HTTP/2 ----

type H2Client = h2::client::SendRequest<Bytes>;

/// A new HTTP/2 connection: TLS with SNI `host` and ALPN `h2`, or h2c with prior knowledge.
async fn h2_connect(ferry: &Ferry, t: Transport, host: &str) -> Result<H2Client, String> {
    let (send, conn) = if t.tls() {
        let tls = TlsStream::connect(ferry.https, host, &[b"h2"]).await.map_err(|e| format!("TLS: {e}"))?;
        if tls.alpn().as_deref() != Some(&b"h2"[..]) {
            return Err(format!("ALPN {:?}, not h2", tls.alpn().map(|p| String::from_utf8_lossy(&p).into_owned())));
        }
        let (send, conn) = h2::client::handshake(tls).await.map_err(|e| format!("h2 handshake: {e}"))?;
        (send, tokio::spawn(conn))
    } else {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket.bind(SocketAddr::new(t.client_ip().parse().unwrap(), 0)).map_err(|e| e.to_string())?;
        let tcp = socket.connect(ferry.http).await.map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (send, conn) = h2::client::handshake(tcp).await.map_err(|e| format!("h2c handshake: {e}"))?;
        (send, tokio::spawn(conn))
    };
    drop(conn); // detached: the connection task runs until the client is dropped
    Ok(send)
}

async fn send_h2(ferry: &Ferry, t: Transport, req: &Req) -> Reply {
    let client = match h2_connect(ferry, t, &req.host).await {
        Ok(c) => c,
        Err(e) => return Reply::failed(e),
    };
    let mut reply = h2_exchange(&client, t, req).await;
    if req.probe && reply.status != 0 {
        reply.reusable = Some(h2_exchange(&client, t, &probe()).await.status != 0);
    }
    reply
}

/// One stream on `client`.
async fn h2_exchange(client: &H2Client, t: Transport, req: &Req) -> Reply {
    let mut head =
        http::Request::builder().method(req.method).uri(format!("{}://{}{}", t.scheme(), req.host, req.path));
    for (name, value) in &req.headers {
        head = head.header(*name, value.as_str());
    }
    if let Body::Sized(n) | Body::Declared(n) = req.body {
        head = head.header("content-length", n);
    }
    let head = head.body(()).expect("request head");
    let mut client = match client.clone().ready().await {
        Ok(c) => c,
        Err(e) => return Reply::failed(format!("h2 connection unusable: {e}")),
    };
    let (response, mut stream) = match client.send_request(head, matches!(req.body, Body::None)) {
        Ok(pair) => pair,
        Err(e) => return Reply::failed(format!("h2 request refused by the client library: {e}")),
    };
    match &req.body {
        Body::Sized(n) => {
            let _ = stream.send_data(Bytes::from(vec![b'x'; *n]), true);
        }
        Body::Streamed { chunks, end } => {
            for (i, size) in chunks.iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(GAP).await;
                }
                let last = i + 1 == chunks.len();
                // A reset from ferry ends the sending; the answer is what counts.
                if stream.send_data(Bytes::from(vec![b'x'; *size]), *end && last).is_err() {
                    break;
                }
            }
        }
        Body::None | Body::Declared(_) => {}
    }
    let response = match tokio::time::timeout(H2_WAIT, response).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Reply::failed(format!("h2 stream failed before a reply: {e}")),
        Err(_) => return Reply::failed(format!("no h2 reply within {H2_WAIT:?}")),
    };
    let (parts, mut body) = response.into_parts();
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).to_lowercase()))
        .collect();
    let mut bytes = Vec::new();
    let mut error = None;
    let deadline = tokio::time::Instant::now() + H2_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, body.data()).await {
            Ok(Some(Ok(data))) => {
                let _ = body.flow_control().release_capacity(data.len());
                bytes.extend_from_slice(&data);
            }
            Ok(Some(Err(e))) => {
                error = Some(format!("h2 body: {e}"));
                break;
            }
            Ok(None) => break,
            Err(_) => {
                error = Some("h2 body did not end in time".into());
                break;
            }
        }
    }
    drop(stream);
    Reply {
        status: parts.status.as_u16(),
        status_line: String::new(),
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        reusable: None,
        error,
    }
}

// ---- checks and the report ----

/// The differences found for one row on one transport.
struct Check {
    row: &'static str,
    t: Transport,
    problems: Vec<String>,
}

impl Check {
    fn new(row: &'static str, t: Transport) -> Check {
        Check { row, t, problems: Vec::new() }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        if got != want {
            self.problems.push(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    fn that(&mut self, ok: bool, what: impl std::fmt::Display) {
        if !ok {
            self.problems.push(what.to_string());
        }
    }

    /// The status; when there is no reply at all, why.
    fn status(&mut self, what: &str, r: &Reply, want: u16) {
        match &r.error {
            Some(e) if r.status == 0 => self.problems.push(format!("{what}: no reply: {e}")),
            _ => self.eq(&format!("{what}: status"), r.status, want),
        }
    }

    /// The status and, on HTTP/1, the exact status line.
    fn status_line(&mut self, what: &str, r: &Reply, want: u16) {
        self.status(what, r, want);
        if !self.t.is_h2() && r.status != 0 {
            let reason = http::StatusCode::from_u16(want).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
            let line = format!("http/1.1 {want} {reason}").to_lowercase();
            self.eq(&format!("{what}: status line"), r.status_line.as_str(), line.as_str());
        }
    }

    /// What became of the connection: closed (announced with `Connection: close` on HTTP/1) or
    /// still serving requests. HTTP/2 has no connection-level close, so only "still serving" is
    /// asserted there.
    fn connection(&mut self, r: &Reply, close: bool) {
        if r.status == 0 {
            return;
        }
        if self.t.is_h2() {
            if !close {
                self.eq("the h2 connection carries another stream", r.reusable, Some(true));
            }
            return;
        }
        let announced = r.header("connection").is_some_and(|v| v.split(',').any(|o| o.trim() == "close"));
        if close {
            self.that(announced, format!("no `Connection: close` (connection: {:?})", r.header("connection")));
            self.eq("the connection is closed after the reply", r.reusable, Some(false));
        } else {
            self.that(!announced, "`Connection: close` on a reply that keeps the connection");
            self.eq("the connection serves another request", r.reusable, Some(true));
        }
    }

    /// ferry answered itself: status, exactly `body` as text/plain, and the connection's fate.
    fn own_reply(&mut self, r: &Reply, status: u16, body: &str, close: bool) {
        self.status_line("reply", r, status);
        if r.status == 0 {
            return;
        }
        self.eq("body", r.body.as_str(), body);
        self.own_text(r);
        self.connection(r, close);
    }

    fn own_text(&mut self, r: &Reply) {
        let content_type = r.header("content-type").unwrap_or_default();
        self.that(content_type.starts_with("text/plain"), format!("content-type {content_type:?}, want text/plain"));
        self.that(
            r.body.ends_with('\n') && r.body.starts_with("ferry: "),
            format!("not ferry's own body: {:?}", r.body),
        );
    }

    /// Proxied to the echo service `service`.
    fn proxied(&mut self, what: &str, r: &Reply, service: &str) {
        self.status(what, r, 200);
        if r.status == 0 {
            return;
        }
        self.eq(&format!("{what}: answered by"), r.header("x-echo-service"), Some(service));
        if let Some(e) = &r.error {
            self.problems.push(format!("{what}: {e}"));
        }
    }
}

/// The checks of a group; fails listing every row × transport that differs from the table.
#[derive(Default)]
struct Report {
    checked: usize,
    failures: Vec<String>,
}

impl Report {
    fn add(&mut self, c: Check) {
        self.checked += 1;
        if !c.problems.is_empty() {
            self.failures.push(format!("{} × {}: {}", c.row, c.t.name(), c.problems.join("; ")));
        }
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} row × transport cases differ from the table:\n{}",
            self.failures.len(),
            self.checked,
            self.failures.join("\n")
        );
    }
}

// ---- rows ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals() {
    let fx = Fixture::start(&[]).await;
    let mut report = Report::default();
    for t in TRANSPORTS {
        let mut c = Check::new("no route", t);
        let r = fx.send(t, Req::get("nowhere.test", "/x")).await;
        c.own_reply(&r, 404, NO_ROUTE, false);
        report.add(c);

        let mut c = Check::new("no endpoints", t);
        let r = fx.send(t, Req::get("empty.test", "/x")).await;
        c.own_reply(&r, 503, NO_ENDPOINTS, false);
        report.add(c);

        // Both HTTP/1 engines end the connection after an upstream failure (the request's body
        // may be unread), so the reply must say `Connection: close`.
        let mut c = Check::new("connect failure", t);
        let r = fx.send(t, Req::get("dead.test", "/x")).await;
        c.status_line("reply", &r, 502);
        if r.status != 0 {
            c.that(r.body.starts_with(BAD_GATEWAY), format!("body {:?}, want {BAD_GATEWAY:?}…", r.body));
            c.own_text(&r);
            c.connection(&r, true);
        }
        report.add(c);

        let mut c = Check::new("allow-list", t);
        let r = fx.send(t, Req::get("deny.test", "/x")).await;
        c.own_reply(&r, 403, FORBIDDEN, false);
        report.add(c);

        // `1r/m`: a burst of one, then 429 for about a minute.
        let mut c = Check::new("rate limit", t);
        let mut statuses = Vec::new();
        let mut refused = None;
        for _ in 0..3 {
            let r = fx.send(t, Req::get("rate.test", "/x")).await;
            statuses.push(r.status);
            if r.status != 200 {
                refused = Some(r);
                break;
            }
        }
        c.eq("statuses", statuses, vec![200, 429]);
        if let Some(r) = refused.filter(|r| r.status == 429) {
            c.own_reply(&r, 429, TOO_MANY, false);
            let after = r.header("retry-after").and_then(|v| v.parse::<u64>().ok());
            c.that(after.is_some_and(|s| (1..=60).contains(&s)), format!("retry-after {:?}", r.header("retry-after")));
        }
        report.add(c);
    }
    report.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limits() {
    let fx = Fixture::start(&[]).await;
    let mut report = Report::default();
    // Limit 1k (1024 bytes): 500 + 500 pass, the third 500 does not. The echo backend answers
    // `/upload` once it has the whole body, so only ferry can answer a body left open.
    let over = || Body::Streamed { chunks: vec![500, 500, 500], end: false };
    for t in TRANSPORTS {
        for (row, host, backend) in [
            ("body within the limit", "limit.test", "web"),
            ("body within the limit to an h2c backend", "limit-h2c.test", "web"),
        ] {
            let mut c = Check::new(row, t);
            for (what, body, len) in [
                ("sized", Body::Sized(1000), 1000),
                ("streamed", Body::Streamed { chunks: vec![300, 300], end: true }, 600),
            ] {
                let r = fx.send(t, Req::get(host, "/upload").method("POST").body(body)).await;
                c.proxied(what, &r, backend);
                let got =
                    serde_json::from_str::<serde_json::Value>(&r.body).ok().and_then(|j| j["body_bytes"].as_u64());
                c.eq(&format!("{what}: body bytes the backend got"), got, Some(len));
                c.connection(&r, false);
            }
            report.add(c);
        }

        let mut c = Check::new("body limit by Content-Length", t);
        let r = fx.send(t, Req::get("limit.test", "/upload").method("POST").body(Body::Declared(2000))).await;
        c.own_reply(&r, 413, TOO_LARGE, true);
        report.add(c);

        let mut c = Check::new("body limit while a chunked body streams", t);
        let r = fx.send(t, Req::get("limit.test", "/upload").method("POST").body(over())).await;
        c.own_reply(&r, 413, TOO_LARGE, true);
        report.add(c);

        let mut c = Check::new("body limit toward an h2c backend", t);
        let r = fx.send(t, Req::get("limit-h2c.test", "/upload").method("POST").body(over())).await;
        c.own_reply(&r, 413, TOO_LARGE, true);
        let r = fx.send(t, Req::get("limit-h2c.test", "/upload").method("POST").body(Body::Declared(2000))).await;
        c.own_reply(&r, 413, TOO_LARGE, true);
        report.add(c);
    }
    report.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects() {
    let fx = Fixture::start(&[]).await;
    let mut report = Report::default();
    for t in TRANSPORTS {
        for (row, host, status, location) in [
            ("redirect (default code)", "redirect.test", 301, "https://new.test/welcome"),
            ("redirect (code 302)", "temp.test", 302, "https://maintenance.test/"),
        ] {
            let mut c = Check::new(row, t);
            // The location is sent as written: the request's path is not appended.
            let r = fx.send(t, Req::get(host, "/cart?id=7")).await;
            c.own_reply(&r, status, &format!("ferry: moved to {location}\n"), false);
            c.eq("location", r.header("location"), Some(location));
            report.add(c);
        }

        let mut c = Check::new("app-root", t);
        let r = fx.send(t, Req::get("approot.test", "/?tab=1")).await;
        c.own_reply(&r, 302, "ferry: moved to /dashboard\n", false);
        c.eq("location", r.header("location"), Some("/dashboard"));
        let r = fx.send(t, Req::get("approot.test", "/other")).await;
        c.proxied("another path", &r, "web");
        report.add(c);

        let mut c = Check::new("ssl-redirect", t);
        let r = fx.send(t, Req::get("secure.test", "/cart?id=7")).await;
        if t.tls() {
            c.proxied("over TLS", &r, "web");
        } else {
            let location = "https://secure.test/cart?id=7";
            c.own_reply(&r, 308, &format!("ferry: moved to {location}\n"), false);
            c.eq("location", r.header("location"), Some(location));
        }
        report.add(c);
    }
    report.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_canary_and_affinity() {
    let fx = Fixture::start(&[]).await;
    let mut report = Report::default();
    for t in TRANSPORTS {
        let mut c = Check::new("CORS preflight", t);
        let r = fx
            .send(
                t,
                Req::get("cors.test", "/items")
                    .method("OPTIONS")
                    .header("origin", "https://app.test")
                    .header("access-control-request-method", "PUT"),
            )
            .await;
        c.status_line("preflight", &r, 204);
        c.eq("access-control-allow-origin", r.header("access-control-allow-origin"), Some("https://app.test"));
        let methods = r.joined("access-control-allow-methods");
        c.that(methods.split(',').any(|m| m.trim() == "put"), format!("access-control-allow-methods {methods:?}"));
        c.eq("access-control-max-age", r.header("access-control-max-age"), Some("86400"));
        c.that(r.joined("vary").contains("origin"), format!("vary {:?}", r.joined("vary")));
        c.that(!r.has("x-echo-service"), "the preflight reached the backend");
        c.eq("body", r.body.as_str(), "");
        c.connection(&r, false);
        report.add(c);

        let mut c = Check::new("CORS response", t);
        let r = fx.send(t, Req::get("cors.test", "/items").header("origin", "https://app.test")).await;
        c.proxied("GET with Origin", &r, "web");
        c.eq("access-control-allow-origin", r.header("access-control-allow-origin"), Some("https://app.test"));
        c.that(r.joined("vary").contains("origin"), format!("vary {:?}", r.joined("vary")));
        c.connection(&r, false);
        report.add(c);

        let mut c = Check::new("canary", t);
        for (value, service) in [(Some("always"), "next"), (None, "stable"), (Some("never"), "stable")] {
            for _ in 0..2 {
                let mut req = Req::get("canary.test", "/");
                if let Some(v) = value {
                    req = req.header("x-canary", v);
                }
                let r = fx.send(t, req).await;
                c.proxied(&format!("x-canary {value:?}"), &r, service);
            }
        }
        report.add(c);

        let mut c = Check::new("cookie affinity", t);
        let first = fx.send(t, Req::get("sticky.test", "/")).await;
        c.proxied("first request", &first, "sticky");
        let set = first.header("set-cookie").unwrap_or_default().to_string();
        let attributes: Vec<&str> = set.split(';').map(str::trim).collect();
        c.that(set.starts_with("ferry-affinity="), format!("set-cookie {set:?}"));
        for want in ["path=/", "httponly", "samesite=lax"] {
            c.that(attributes.contains(&want), format!("set-cookie {set:?} without {want}"));
        }
        c.eq("secure attribute (TLS only)", attributes.contains(&"secure"), t.tls());
        let cookie = attributes.first().copied().unwrap_or_default();
        let pinned = first.header("x-echo-endpoint").unwrap_or_default();
        for i in 0..4 {
            let r = fx.send(t, Req::get("sticky.test", "/").header("cookie", cookie)).await;
            c.proxied(&format!("with the cookie, request {i}"), &r, "sticky");
            c.eq(&format!("with the cookie, request {i}: endpoint"), r.header("x-echo-endpoint"), Some(pinned));
            c.that(!r.has("set-cookie"), format!("with the cookie, request {i}: a new cookie was set"));
        }
        // Without it, round-robin: the cookie, not chance, kept the endpoint.
        let mut spread = std::collections::BTreeSet::new();
        for _ in 0..2 {
            let r = fx.send(t, Req::get("sticky.test", "/").no_probe()).await;
            spread.insert(r.header("x-echo-endpoint").unwrap_or_default().to_string());
        }
        c.eq("endpoints without the cookie", spread.len(), 2);
        report.add(c);
    }
    report.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_on_5xx() {
    // Ejection off, so the always-503 endpoint stays in the rotation on every transport; with
    // round-robin over two endpoints, one of two consecutive requests meets it first.
    let fx = Fixture::start(&["--outlier-failures", "0"]).await;
    let mut report = Report::default();
    for t in TRANSPORTS {
        for (row, host, bad, good) in [
            ("retries on 5xx (HTTP/1 backend)", "retry.test", &fx.bad_h1, "good"),
            ("retries on 5xx (h2c backend)", "retry-h2c.test", &fx.bad_h2c, "good-h2c"),
        ] {
            let mut c = Check::new(row, t);
            let before = bad.load(Ordering::Relaxed);
            for i in 0..2 {
                let r = fx.send(t, Req::get(host, "/x")).await;
                c.proxied(&format!("request {i}"), &r, good);
                c.connection(&r, false);
            }
            // Otherwise the rows above prove nothing about retries.
            c.that(bad.load(Ordering::Relaxed) > before, "the failing endpoint was never tried first");
            report.add(c);
        }
    }
    report.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_and_response_headers() {
    let fx = Fixture::start(&[]).await;
    let mut report = Report::default();
    for t in TRANSPORTS {
        let path = format!("/fwd/{}", t.name());
        let req = Req::get("fwd.test", &path)
            // Untrusted client: replaced.
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-real-ip", "6.6.6.6")
            .header("x-forwarded-proto", if t.tls() { "http" } else { "https" })
            .header("x-forwarded-host", "evil.test")
            .header("te", "trailers")
            .h1_header("Connection", "X-Foo")
            .h1_header("X-Foo", "1")
            .h1_header("Keep-Alive", "timeout=5")
            .h1_header("Proxy-Connection", "keep-alive");
        let r = fx.send(t, req).await;
        let sent = |path: &str| {
            let line = format!("GET {path} HTTP/1.1");
            fx.rec.requests().into_iter().find(|r| r.request_line() == line)
        };

        let mut c = Check::new("forwarding headers", t);
        c.status("reply", &r, 200);
        match sent(&path) {
            None => c.that(false, format!("the backend got no `GET {path} HTTP/1.1`")),
            Some(got) => {
                let one = |v: &str| vec![v.to_string()];
                c.eq("host", got.headers("host"), one("fwd.test"));
                c.eq("x-forwarded-for", got.headers("x-forwarded-for"), one(t.client_ip()));
                c.eq("x-real-ip", got.headers("x-real-ip"), one(t.client_ip()));
                c.eq("x-forwarded-proto", got.headers("x-forwarded-proto"), one(t.scheme()));
                c.eq("x-forwarded-host", got.headers("x-forwarded-host"), one("fwd.test"));
                let ids = got.headers("x-request-id");
                c.that(
                    ids.len() == 1 && ids[0].len() == 32 && ids[0].bytes().all(|b| b.is_ascii_hexdigit()),
                    format!("x-request-id {ids:?}, want one new 32-hex-digit id"),
                );
                for name in ["x-foo", "keep-alive", "te", "proxy-connection"] {
                    c.that(!got.has_header(name), format!("hop-by-hop {name} forwarded"));
                }
                for v in got.headers("connection") {
                    c.that(!v.to_ascii_lowercase().contains("x-foo"), format!("upstream connection: {v}"));
                }
            }
        }
        let kept = format!("{path}/id");
        let r2 = fx.send(t, Req::get("fwd.test", &kept).header("x-request-id", "parity-id-1")).await;
        c.status("with x-request-id", &r2, 200);
        let ids = sent(&kept).map(|got| got.headers("x-request-id"));
        c.eq("the client's x-request-id", ids, Some(vec!["parity-id-1".to_string()]));
        report.add(c);

        let mut c = Check::new("response header edits", t);
        c.status("reply", &r, 200);
        if r.status != 0 {
            c.eq("x-kept", r.header("x-kept"), Some("yes"));
            for name in ["keep-alive", "proxy-connection", "proxy-authenticate", "x-bar"] {
                c.that(!r.has(name), format!("hop-by-hop {name}: {:?} relayed", r.header(name)));
            }
            c.that(!r.joined("connection").contains("x-bar"), format!("connection: {}", r.joined("connection")));
            c.connection(&r, false);
        }
        report.add(c);
    }
    report.finish();
}

/// `ferry_requests_total` by (route, class).
fn requests_total(metrics: &str) -> BTreeMap<(String, String), f64> {
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("ferry_requests_total{route=\"")?;
            let (route, rest) = rest.split_once("\",code=\"")?;
            let (class, value) = rest.split_once("\"} ")?;
            Some(((route.to_string(), class.to_string()), value.trim().parse().ok()?))
        })
        .collect()
}

fn access_log_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_access_log() {
    let fx = Fixture::start(&[]).await;
    let mut report = Report::default();
    // (host, method, body, status, route): one of each status class ferry counts.
    let rows: [(&'static str, &'static str, Body, u16, Option<&str>); 7] = [
        ("ok.test", "GET", Body::None, 200, Some("default/ok")),
        ("nowhere.test", "GET", Body::None, 404, None),
        ("deny.test", "GET", Body::None, 403, Some("default/deny")),
        ("limit.test", "POST", Body::Declared(2000), 413, Some("default/limit")),
        ("redirect.test", "GET", Body::None, 301, Some("default/redirect")),
        ("empty.test", "GET", Body::None, 503, Some("default/empty")),
        ("dead.test", "GET", Body::None, 502, Some("default/dead")),
    ];
    let mut want = BTreeMap::new();
    for (_, _, _, status, route) in &rows {
        let key = (route.unwrap_or("none").to_string(), format!("{}xx", status / 100));
        *want.entry(key).or_insert(0.0) += 1.0;
    }
    // One transport at a time, so the counters' changes are that transport's.
    for t in TRANSPORTS {
        let ferry = fx.ferry(t);
        let path = format!("/obs/{}", t.name());
        let before = requests_total(&ferry.admin_get("/metrics").await);
        let mut c = Check::new("metrics", t);
        for &(host, method, ref body, status, _) in &rows {
            let r = fx.send(t, Req::get(host, &path).method(method).body(body.clone()).no_probe()).await;
            c.status(host, &r, status);
        }
        // A request is counted just after its reply is sent.
        let deadline = Instant::now() + Duration::from_secs(2);
        let delta = loop {
            let after = requests_total(&ferry.admin_get("/metrics").await);
            let delta: BTreeMap<_, _> = after
                .into_iter()
                .map(|(k, v)| {
                    let d = v - before.get(&k).copied().unwrap_or(0.0);
                    (k, d)
                })
                .filter(|(_, d)| *d != 0.0)
                .map(|(k, d)| {
                    // A test running in parallel whose ferry lost a port to this one (see
                    // `launch_own`) sends it requests for hosts it has no route for: counted
                    // under `none`, so that count may be higher. The access log below has
                    // exactly this transport's unrouted request.
                    let foreign = k.0 == "none" && d > 1.0;
                    (k, if foreign { 1.0 } else { d })
                })
                .collect();
            if delta == want || Instant::now() > deadline {
                break delta;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        c.eq("ferry_requests_total changes (route, class)", delta, want.clone());
        report.add(c);

        let mut c = Check::new("access log", t);
        let log = fx.access_log(t);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mine = |lines: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
            lines.into_iter().filter(|l| l["path"] == path.as_str()).collect()
        };
        let mut lines = mine(access_log_lines(&log));
        while lines.len() < rows.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
            lines = mine(access_log_lines(&log));
        }
        c.eq("lines", lines.len(), rows.len());
        for (host, method, _, status, route) in &rows {
            let found: Vec<&serde_json::Value> = lines.iter().filter(|l| l["host"] == *host).collect();
            let Some(line) = found.first() else {
                c.that(false, format!("{host}: no line"));
                continue;
            };
            c.eq(&format!("{host}: lines"), found.len(), 1);
            c.eq(&format!("{host}: status"), line["status"].as_u64(), Some(u64::from(*status)));
            c.eq(&format!("{host}: route"), line["route"].as_str(), *route);
            c.eq(&format!("{host}: method"), line["method"].as_str(), Some(*method));
            c.eq(&format!("{host}: client"), line["client"].as_str(), Some(t.client_ip()));
        }
        report.add(c);
    }
    report.finish();
}
