//! Admin server: `/healthz`, `/readyz`, `/metrics`, `/routes`.
//!
//! Separate from the data plane (own port, own runtime), so it answers while traffic is heavy
//! and is never reachable through a route.

use std::convert::Infallible;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway::SharedTable;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct State {
    pub table: SharedTable,
    /// Every metric of the process (data plane and controller).
    pub registry: Arc<Registry>,
    /// The first table is live.
    pub ready: Arc<AtomicBool>,
    /// The data-plane listeners accept connections.
    pub listening: Arc<AtomicBool>,
    /// Where each Gateway port is served.
    pub gateway_addresses: Arc<arc_swap::ArcSwap<crate::gateways::Addresses>>,
    /// What each L4Route's status says (the last build's, beside the table).
    pub l4_status: Arc<arc_swap::ArcSwap<Vec<gateway::L4Status>>>,
}

/// Sets `listening` once Pingora runs and every data-plane address accepts a connection.
pub async fn wait_listening(
    mut phases: tokio::sync::broadcast::Receiver<pingora::server::ExecutionPhase>,
    addrs: [SocketAddr; 2],
    listening: Arc<AtomicBool>,
) {
    use pingora::server::ExecutionPhase;
    loop {
        match phases.recv().await {
            Ok(ExecutionPhase::Running) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
            Ok(_) => continue,
            Err(_) => return,
        }
    }
    for addr in addrs {
        let mut probe = addr;
        if probe.ip().is_unspecified() {
            probe.set_ip(if addr.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
        }
        while tokio::net::TcpStream::connect(probe).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    listening.store(true, Ordering::SeqCst);
    tracing::info!("data-plane listeners accepting");
}

pub async fn serve(listener: std::net::TcpListener, state: State) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener unusable");
            return;
        }
    };
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

fn handle(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    // Read-only endpoints: anything but GET and HEAD changes nothing and says so.
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        let mut resp =
            respond(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed; the admin port is read-only\n");
        resp.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        "/healthz" => respond(StatusCode::OK, TEXT, "ok\n"),
        "/readyz" if gateway::drain::is_draining() => {
            respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready: shutting down\n")
        }
        "/readyz" => match (state.ready.load(Ordering::SeqCst), state.listening.load(Ordering::SeqCst)) {
            (true, true) => respond(StatusCode::OK, TEXT, "ready\n"),
            (false, _) => respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready: first table not live yet\n"),
            (true, false) => respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready: listeners not up yet\n"),
        },
        "/metrics" => respond(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", {
            let mut out = String::new();
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &state.registry);
            out
        }),
        "/routes" => {
            let mut dump = state.table.load().dump();
            dump.l4_status = state.l4_status.load().to_vec();
            let addresses = state.gateway_addresses.load();
            for gw in &mut dump.gateways {
                let id: Arc<str> = format!("{}/{}", gw.namespace, gw.name).into();
                for l in gw.listeners.iter_mut().filter(|l| l.programmed) {
                    let key = gateway::ListenerKey { gateway: id.clone(), port: l.port };
                    match addresses.get(&key) {
                        Some(Ok(addr)) => l.address = Some(addr.to_string()),
                        // Not bound yet (Kubernetes mode: its Service names no port yet) is
                        // pending; a bind that failed is an unavailable port.
                        Some(Err(e)) if e.starts_with("waiting") => {
                            l.conditions.push(format!("Programmed=False(Pending): {e}"))
                        }
                        Some(Err(e)) => l.conditions.push(format!("Programmed=False(PortUnavailable): {e}")),
                        None => {}
                    }
                }
            }
            match serde_json::to_vec_pretty(&dump) {
                Ok(body) => respond(StatusCode::OK, "application/json", body),
                Err(e) => respond(StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("{e}\n")),
            }
        }
        _ => respond(StatusCode::NOT_FOUND, TEXT, "not found; try /healthz /readyz /metrics /routes\n"),
    }
}
