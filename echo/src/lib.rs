//! Echo backend for ferry's quickstart and end-to-end tests.
//!
//! Answers every request with JSON naming the service and the endpoint that answered, plus what
//! it received (method, target, Host, headers) and how many requests its TCP connection has
//! carried (`conn_requests`), so a test can see where ferry sent a request and
//! how it was rewritten. Special paths:
//! - `/echo-body…` streams the request body back;
//! - `/bytes/N` answers N bytes;
//! - `/status/N` answers status N;
//! - `/slow/MS` waits MS milliseconds first;
//! - any request with `Upgrade: websocket` becomes a WebSocket that echoes `"<name>: <msg>"`.
//!
//! Serves HTTP/1.1 and h2c on the same port (or HTTPS with `spawn_tls`).
//!
//! Also the test Kubernetes API server ([`apiserver`]) the end-to-end tests and the benchmarks
//! run ferry's Kubernetes mode against.

pub mod apiserver;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

type Body = BoxBody<Bytes, hyper::Error>;

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, name: String) {
    serve_with(listener, name, None).await
}

/// Serves plaintext, or TLS when `tls` is given (HTTP/1.1 and h2 by ALPN, or h2c in plaintext).
async fn serve_with(listener: TcpListener, name: String, tls: Option<tokio_rustls::TlsAcceptor>) {
    let name: std::sync::Arc<str> = name.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let local = stream.local_addr().ok();
        let name = name.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let is_tls = tls.is_some();
            // Requests served on this TCP connection, so tests can see upstream connection reuse.
            let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let svc = hyper::service::service_fn(move |req| {
                let n = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                handle(req, name.clone(), local, n, is_tls)
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match tls {
                None => {
                    let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).await;
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).await;
                    }
                }
            }
        });
    }
}

/// Binds `addr` and serves HTTPS with a fresh self-signed certificate for `hosts`; returns the
/// bound address and the certificate (DER).
pub async fn spawn_tls(addr: &str, name: &str, hosts: &[String]) -> std::io::Result<(SocketAddr, Vec<u8>)> {
    let ck = rcgen::generate_simple_self_signed(hosts.to_vec()).map_err(std::io::Error::other)?;
    let der = ck.cert.der().to_vec();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).map_err(std::io::Error::other)?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![der.clone().into()], key)
            .map_err(std::io::Error::other)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    tokio::spawn(serve_with(listener, name.to_string(), Some(acceptor)));
    Ok((bound, der))
}

/// Binds `addr` and serves in a background task; returns the bound address.
pub async fn spawn(addr: &str, name: &str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, name.to_string()));
    Ok(bound)
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

async fn handle(
    mut req: Request<Incoming>,
    name: std::sync::Arc<str>,
    local: Option<SocketAddr>,
    conn_requests: u64,
    tls: bool,
) -> Result<Response<Body>, Infallible> {
    let endpoint = local.map(|a| a.to_string()).unwrap_or_default();
    let path = req.uri().path().to_string();
    if req.headers().get(hyper::header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket")) {
        return Ok(websocket(&mut req, name));
    }
    if let Some(ms) = path.strip_prefix("/slow/").and_then(|s| s.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    // `/retry/...?responseCode=C&succeedAfter=N&uuid=U`: the first N requests with that uuid
    // are answered C, later ones normally (the Gateway API conformance retry simulator).
    if path.starts_with("/retry/") {
        let q: std::collections::HashMap<&str, &str> =
            req.uri().query().unwrap_or("").split('&').filter_map(|p| p.split_once('=')).collect();
        let after = q.get("succeedAfter").and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
        let seen = {
            static SEEN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, u32>>> =
                std::sync::OnceLock::new();
            let mut map = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(q.get("uuid").copied().unwrap_or("").to_string()).or_insert(0);
            *n += 1;
            *n
        };
        if seen <= after {
            let code = q.get("responseCode").and_then(|c| c.parse::<u16>().ok()).unwrap_or(500);
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(response(status, &name, &endpoint, full(format!("attempt {seen} of {after} failing\n"))));
        }
    }
    // `?delay=1s` / `?delay=250ms`, as the Gateway API conformance echo takes it.
    let delay = req.uri().query().unwrap_or("").split('&').find_map(|p| p.strip_prefix("delay="));
    if let Some(d) = delay {
        let ms = match d.strip_suffix("ms") {
            Some(n) => n.parse::<u64>().ok(),
            None => d.strip_suffix('s').and_then(|n| n.parse::<u64>().ok()).map(|s| s * 1000),
        };
        if let Some(ms) = ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
    if let Some(n) = path.strip_prefix("/bytes/").and_then(|s| s.parse::<usize>().ok()) {
        return Ok(response(StatusCode::OK, &name, &endpoint, full(vec![b'x'; n])));
    }
    if req.headers().get(hyper::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc")) {
        return Ok(grpc(&req, &name, &endpoint));
    }
    if path.starts_with("/echo-body") {
        let body = req.into_body().boxed();
        return Ok(response(StatusCode::OK, &name, &endpoint, body));
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    // A header sent several times is reported as its values joined by `,`.
    let mut headers: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::String(prev)) => {
                prev.push(',');
                prev.push_str(&v);
            }
            _ => {
                headers.insert(k.to_string(), v.into());
            }
        }
    }
    // `X-Echo-Set-Header: Name:value,Name2:value2` asks for those response headers.
    let set_headers: Vec<(String, String)> = req
        .headers()
        .get("x-echo-set-header")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .filter_map(|p| p.split_once(':'))
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let target = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let host = req.headers().get(hyper::header::HOST).map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let body_bytes = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => 0,
    };
    let json = serde_json::json!({
        "service": &*name,
        "endpoint": endpoint,
        "method": method,
        "path": target,
        "host": host,
        "version": version,
        "headers": headers,
        "body_bytes": body_bytes,
        "conn_requests": conn_requests,
        "tls": tls,
    });
    let mut resp = response(status, &name, &endpoint, full(format!("{json}\n")));
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, "application/json".parse().expect("static"));
    for (n, v) in set_headers {
        if let (Ok(n), Ok(v)) = (hyper::header::HeaderName::from_bytes(n.as_bytes()), v.parse()) {
            resp.headers_mut().append(n, v);
        }
    }
    Ok(resp)
}

/// A gRPC-shaped answer (any method): one length-prefixed message holding the JSON of what was
/// called, then the trailers `grpc-status: 0` and `x-echo-service` (so a proxy's trailer
/// handling shows).
fn grpc(req: &Request<Incoming>, name: &str, endpoint: &str) -> Response<Body> {
    let json = serde_json::json!({
        "service": name,
        "method": req.uri().path(),
        "authority": req.uri().authority().map(|a| a.to_string()).or_else(|| req.headers().get(hyper::header::HOST).map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())),
        "version": format!("{:?}", req.version()),
    })
    .to_string();
    let mut msg = Vec::with_capacity(5 + json.len());
    msg.push(0);
    msg.extend_from_slice(&(json.len() as u32).to_be_bytes());
    msg.extend_from_slice(json.as_bytes());
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
    if let Ok(v) = name.parse() {
        trailers.insert("x-echo-service", v);
    }
    let frames = futures_util::stream::iter([
        Ok::<_, hyper::Error>(hyper::body::Frame::data(Bytes::from(msg))),
        Ok(hyper::body::Frame::trailers(trailers)),
    ]);
    let mut resp = response(StatusCode::OK, name, endpoint, BodyExt::boxed(http_body_util::StreamBody::new(frames)));
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, "application/grpc".parse().expect("static"));
    resp
}

fn response(status: StatusCode, name: &str, endpoint: &str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = name.parse() {
        resp.headers_mut().insert("x-echo-service", v);
    }
    if let Ok(v) = endpoint.parse() {
        resp.headers_mut().insert("x-echo-endpoint", v);
    }
    resp
}

fn websocket(req: &mut Request<Incoming>, name: std::sync::Arc<str>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key") else {
        let mut r = Response::new(full("missing Sec-WebSocket-Key\n"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(t) => Message::text(format!("{name}: {t}")),
                Message::Binary(b) => Message::Binary(b),
                Message::Ping(p) => Message::Pong(p),
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(hyper::header::CONNECTION, "upgrade".parse().expect("static"));
    h.insert(hyper::header::UPGRADE, "websocket".parse().expect("static"));
    if let Ok(v) = accept.parse() {
        h.insert("sec-websocket-accept", v);
    }
    resp
}

/// A self-signed certificate for `hosts` as a `kubernetes.io/tls` Secret manifest (YAML, with
/// PEM in `stringData`). Returns (manifest, certificate PEM).
pub fn tls_secret_manifest(namespace: &str, name: &str, hosts: &[String]) -> Result<(String, String), rcgen::Error> {
    let ck = rcgen::generate_simple_self_signed(hosts.to_vec())?;
    let cert = ck.cert.pem();
    let key = ck.signing_key.serialize_pem();
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&cert),
        indent(&key)
    );
    Ok((manifest, cert))
}
