//! Graceful shutdown: on SIGTERM readiness turns 503 at once while the listeners keep accepting
//! for the shutdown delay; then they stop accepting, requests and L4 streams in flight finish,
//! and ferry exits as soon as nothing is left (well before the drain timeout).

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_work_then_exits() {
    let web = echo("127.0.0.2", "web").await;
    let db = tcp_echo("127.0.0.3", "db").await;
    let port = free_addr().port();
    let files = docs(&[
        service("web", &[web]),
        ingress("shop", &[("a.test", "Prefix", "/", "web")]),
        tcp_service("db", &[db]),
        l4_route("db", port, &[], "db", ""),
    ]);
    let mut ferry = Ferry::start(
        &[("a.yaml", files)],
        &["--shutdown-delay", "1", "--drain-timeout", "20", "--l4-ports", &port.to_string()],
    )
    .await;
    let http = ferry.http;

    // Work in flight when SIGTERM arrives: five slow requests and an L4 stream.
    let slow: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn(async move {
                let r = client().get(format!("http://{http}/slow/2500")).header("host", "a.test").send().await;
                r.map(|r| r.status().as_u16()).unwrap_or(0)
            })
        })
        .collect();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(b"before ").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    ferry.signal("TERM");

    // At once: not ready, but still serving new connections during the shutdown delay, and
    // telling HTTP/1.1 clients to go elsewhere next time.
    eventually_within("readiness turns 503", Duration::from_millis(500), || async {
        ferry.readyz().await == Some(503)
    })
    .await;
    let resp = client().get(format!("http://{http}/")).header("host", "a.test").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("connection").map(|v| v.to_str().unwrap()), Some("close"));

    // After the delay the listeners refuse new connections while work is still in flight.
    tokio::time::sleep(Duration::from_millis(1300).saturating_sub(signalled.elapsed())).await;
    eventually_within("the HTTP listener refuses", Duration::from_secs(2), || async {
        tokio::net::TcpStream::connect(http).await.is_err()
    })
    .await;
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "the L4 listener refuses");
    assert!(ferry.is_running(), "still draining");

    // The L4 stream keeps flowing both ways, then ends normally.
    stream.write_all(b"after").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut got = String::new();
    stream.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "before afterbye from db");

    for r in slow {
        assert_eq!(r.await.unwrap(), 200, "a request in flight at SIGTERM completes");
    }
    // Nothing left in flight: exit long before the 20 s drain timeout.
    let code = ferry.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(code, Some(0), "exits once drained");
    assert!(signalled.elapsed() < Duration::from_secs(8), "{:?}", signalled.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_at_once() {
    let (mut ferry, _) = Ferry::one_route("shop").await;
    ferry.signal("INT");
    assert!(ferry.wait_exit(Duration::from_secs(3)).await.is_some());
}

/// An HTTP/2 client is told to go away (GOAWAY) once the listeners stop; its stream in flight
/// still completes, and the connection then ends cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connections_get_goaway_and_finish_their_streams() {
    let web = echo("127.0.0.2", "web").await;
    let files = docs(&[service("web", &[web]), ingress("shop", &[("a.test", "Prefix", "/", "web")])]);
    let mut ferry = Ferry::start(&[("a.yaml", files)], &["--shutdown-delay", "1"]).await;
    let tcp = tokio::net::TcpStream::connect(ferry.http).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    let conn = tokio::spawn(conn);
    let request = |path: &str| http::Request::get(format!("http://a.test{path}")).body(()).unwrap();
    let mut send = send.ready().await.unwrap();
    let (first, _) = send.send_request(request("/"), true).unwrap();
    assert_eq!(first.await.unwrap().status(), 200);
    let mut send = send.ready().await.unwrap();
    let (slow, _) = send.send_request(request("/slow/2000"), true).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    ferry.signal("TERM");
    let resp = slow.await.expect("the stream in flight completes");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        chunk.expect("body");
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "connection closed by a clean GOAWAY: {ended:?}");
    assert!(send.ready().await.is_err(), "no new streams after GOAWAY");
    assert_eq!(ferry.wait_exit(Duration::from_secs(5)).await, Some(0));
}
