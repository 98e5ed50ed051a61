//! L4 routes end to end: TCP streams relayed to a Service's pods (large transfers, half-close,
//! idle timeout), TLS passthrough by SNI where the pod terminates TLS itself, and L4Routes that
//! cannot be served reporting why.

mod support;

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    free_addr().port()
}

async fn l4_status(ferry: &Ferry, route: &str) -> serde_json::Value {
    let routes: serde_json::Value = serde_json::from_str(&ferry.admin_get("/routes").await).unwrap();
    routes["l4_status"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["route"] == route).cloned())
        .unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_stream_large_transfer_half_close_and_idle_timeout() {
    let db = tcp_echo("127.0.0.2", "db").await;
    let (port, idle_port, undeclared) = (free_port(), free_port(), free_port());
    let files = docs(&[
        tcp_service("db", &[db]),
        l4_route("db", port, &[], "db", ""),
        l4_route("idle", idle_port, &[], "db", "  idleTimeout: 1s\n"),
        l4_route("second", port, &[], "db", ""),
        l4_route("nowhere", undeclared, &[], "db", ""),
    ]);
    let ports = format!("{port},{idle_port}");
    let ferry = Ferry::start(&[("l4.yaml", files)], &["--l4-ports", &ports]).await;

    // 8 MiB each way, written and read concurrently, then a half-close.
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let payload: Arc<Vec<u8>> = Arc::new((0..8 * 1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect());
    let (mut rd, mut wr) = conn.split();
    let send = async {
        wr.write_all(&payload).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let recv = async { rd.read_to_end(&mut got).await.unwrap() };
    tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(send, recv) }).await.expect("transfer");
    let (echoed, trailer) = got.split_at(payload.len().min(got.len()));
    assert!(echoed == &payload[..], "echoed bytes differ ({} of {} received)", got.len(), payload.len());
    assert_eq!(trailer, b"bye from db", "the backend's reply after our half-close arrived");

    // Idle streams are closed after the route's idleTimeout; busy ones are not.
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", idle_port)).await.unwrap();
    let started = Instant::now();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        idle.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        idle.read_exact(&mut buf).await.unwrap();
    }
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await.expect("closed when idle");
    assert_eq!(n.unwrap_or(0), 0, "EOF after idling");
    let lived = started.elapsed();
    assert!(lived >= Duration::from_millis(2500), "traffic kept the stream open ({lived:?})");

    // Routes that cannot be served say why.
    let second = l4_status(&ferry, "default/second").await;
    assert_eq!((second["accepted"].as_bool(), second["reason"].as_str()), (Some(false), Some("PortConflict")));
    let nowhere = l4_status(&ferry, "default/nowhere").await;
    assert_eq!(nowhere["reason"], "PortNotDeclared", "{nowhere}");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["check", "--l4-ports", &ports, "--manifests"])
        .arg(ferry.manifests())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout).to_string() + &String::from_utf8_lossy(&check.stderr);
    assert!(report.contains("L4Route default/second") && report.contains("is taken by L4Route default/db"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_and_missing_backend() {
    let (a, b) = (tcp_echo("127.0.0.2", "a").await, tcp_echo("127.0.0.3", "b").await);
    let port = free_port();
    let ferry = Ferry::start(
        &[("l4.yaml", docs(&[tcp_service("db", &[a]), l4_route("db", port, &[], "db", "")]))],
        &["--l4-ports", &port.to_string()],
    )
    .await;
    assert!(l4_talk(port, b"x").await.ends_with("bye from a"));

    // A dead endpoint next to a live one: every connection still lands (connect retried).
    let dead = closed_addr("127.0.0.4");
    ferry.write("l4.yaml", &docs(&[tcp_service("db", &[dead, b]), l4_route("db", port, &[], "db", "")]));
    eventually("the new endpoint serves", || async { l4_talk(port, b"x").await.ends_with("bye from b") }).await;
    for _ in 0..6 {
        assert!(l4_talk(port, b"x").await.ends_with("bye from b"));
    }

    // The Service goes away: accepted but unresolved, connections closed at once.
    ferry.write("l4.yaml", &l4_route("db", port, &[], "db", ""));
    eventually("the route reports its missing backend", || async {
        l4_status(&ferry, "default/db").await["reason"] == "BackendNotFound"
    })
    .await;
    assert_eq!(l4_talk(port, b"x").await, "");
}

/// A TLS backend with its own self-signed certificate for `host`: answers each line with
/// `NAME: line`. Returns its address and certificate (DER).
fn tls_backend(ip: &str, name: &'static str, host: &str) -> (SocketAddr, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    let der = ck.cert.der().to_vec();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone().into()], key)
        .unwrap();
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind(format!("{ip}:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else { return };
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while tls.read(&mut byte).unwrap_or(0) == 1 {
                    line.push(byte[0]);
                    if byte[0] == b'\n' {
                        let _ = tls.write_all(format!("{name}: ").as_bytes());
                        let _ = tls.write_all(&line);
                        let _ = tls.flush();
                        line.clear();
                    }
                }
            });
        }
    });
    (addr, der)
}

/// Connects through the gateway with `sni`, trusting only `trusted`; returns the server's
/// certificate and its answer to one line.
fn tls_talk(port: u16, sni: &str, trusted: &[u8]) -> Result<(Vec<u8>, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.to_vec().into()).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"hello\n").map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\n") {
        match tls.read(&mut byte) {
            Ok(1) => answer.push(byte[0]),
            Ok(_) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    let cert = tls.conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    Ok((cert, String::from_utf8_lossy(&answer).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_passthrough_by_sni() {
    let (a, cert_a) = tls_backend("127.0.0.2", "a", "a.test");
    let (w, cert_w) = tls_backend("127.0.0.3", "w", "x.wild.test");
    let port = free_port();
    let files = docs(&[
        tcp_service("a", &[a]),
        tcp_service("w", &[w]),
        l4_route("a", port, &["a.test"], "a", ""),
        l4_route("w", port, &["*.wild.test"], "w", ""),
    ]);
    let _ferry = Ferry::start(&[("l4.yaml", files)], &["--l4-ports", &port.to_string()]).await;

    let talk = move |sni: &'static str, cert: Vec<u8>| tokio::task::spawn_blocking(move || tls_talk(port, sni, &cert));
    let (der, answer) = talk("a.test", cert_a.clone()).await.unwrap().expect("a.test through passthrough");
    assert_eq!(der, cert_a, "the client sees the pod's own certificate");
    assert_eq!(answer, "a: hello\n");
    let (der, answer) = talk("x.wild.test", cert_w.clone()).await.unwrap().expect("wildcard SNI");
    assert_eq!((der, answer.as_str()), (cert_w.clone(), "w: hello\n"));
    // An SNI no route names is closed without an answer.
    let err = talk("other.test", cert_a.clone()).await.unwrap().unwrap_err();
    assert!(!err.is_empty());
    // Plain bytes on a passthrough port are not TLS: closed.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.expect("closed");
    assert!(out.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_affinity_holds_for_streams() {
    let (a, b) = (tcp_echo("127.0.0.2", "a").await, tcp_echo("127.0.0.3", "b").await);
    let port = free_port();
    let service = tcp_service("db", &[a, b]).replace("spec:\n  ports:", "spec:\n  sessionAffinity: ClientIP\n  ports:");
    let ferry = Ferry::start(
        &[("l4.yaml", docs(&[service, l4_route("db", port, &[], "db", "")]))],
        &["--l4-ports", &port.to_string()],
    )
    .await;
    let first = l4_talk(port, b"").await;
    assert!(first.starts_with("bye from"), "{first}");
    for _ in 0..8 {
        assert_eq!(l4_talk(port, b"").await, first, "one client IP, one endpoint");
    }
    drop(ferry);
}
