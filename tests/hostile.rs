//! Hostile and malformed requests get a 4xx or a closed connection, never a crash, and never
//! reach a backend on a path the backend could read differently from ferry.

mod support;

use support::*;

async fn setup() -> (Ferry, std::net::SocketAddr) {
    let web = echo("127.0.0.2", "web").await;
    let admin = echo("127.0.0.3", "admin").await;
    let files = docs(&[
        service("web", &[web]),
        service("admin", &[admin]),
        ingress("i", &[("a.test", "Prefix", "/public", "web"), ("a.test", "Prefix", "/admin", "admin")]),
    ]);
    (Ferry::start(&[("a.yaml", files)], &[]).await, web)
}

async fn status(ferry: &Ferry, raw: &[u8]) -> u16 {
    RawConn::open(ferry.http).await.exchange(raw).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_targets_are_refused() {
    let (mut ferry, _) = setup().await;
    let cases: &[(&str, &[u8], u16)] = &[
        ("dot-dot escaping a prefix", b"GET /public/../admin HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
        ("encoded dot-dot", b"GET /public/%2e%2e/admin HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
        ("invalid percent-encoding", b"GET /public/%zz HTTP/1.1\r\nHost: a.test\r\n\r\n", 400),
        ("no Host on HTTP/1.1", b"GET /public/x HTTP/1.1\r\nUser-Agent: t\r\n\r\n", 400),
        ("two Host headers", b"GET /public HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", 400),
        ("absolute-form whose Host disagrees", b"GET http://a.test/admin HTTP/1.1\r\nHost: evil.test\r\n\r\n", 400),
        ("garbage request line", b"\x16\x03\x01 this is not an http request\r\n\r\n", 400),
    ];
    for (what, raw, want) in cases {
        let got = status(&ferry, raw).await;
        assert!(got == *want || got == 0, "{what}: got {got}, want {want} or a closed connection");
    }
    assert!(ferry.is_running());
    assert_eq!(ferry.get("a.test", "/public/ok").await.service(), "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_routes_by_its_authority() {
    let (ferry, _) = setup().await;
    let mut conn = RawConn::open(ferry.http).await;
    let (status, _, body) = conn.exchange(b"GET http://a.test/public/x?q=1 HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"service\":\"web\""), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_and_the_gateway_stays_up() {
    let (mut ferry, _) = setup().await;
    let mut huge = b"GET /public HTTP/1.1\r\nHost: a.test\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let got = status(&ferry, &huge).await;
    // 0: the client's write can fail once ferry has answered and closed.
    assert!(got == 431 || got == 0, "2 MiB header: {got}");

    let mut many = b"GET /public HTTP/1.1\r\nHost: a.test\r\n".to_vec();
    for i in 0..1000 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let got = status(&ferry, &many).await;
    assert_eq!(got, 431, "1000 headers");

    let long_uri = format!("GET /public/{} HTTP/1.1\r\nHost: a.test\r\n\r\n", "u".repeat(40 * 1024));
    assert_eq!(status(&ferry, long_uri.as_bytes()).await, 431, "40 KiB request target");

    let mut big_but_allowed = b"GET /public HTTP/1.1\r\nHost: a.test\r\nX-Big: ".to_vec();
    big_but_allowed.extend(std::iter::repeat_n(b'a', 40 * 1024));
    big_but_allowed.extend_from_slice(b"\r\n\r\n");
    let got = status(&ferry, &big_but_allowed).await;
    assert_eq!(got, 431, "headers over ferry's 32 KiB limit");

    assert!(ferry.is_running());
    assert_eq!(ferry.get("a.test", "/public").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_encoded_paths_are_matched_as_received() {
    let (ferry, _) = setup().await;
    // An encoded `/` is refused (a decoding backend would see another path than ferry matched);
    // other escapes reach the backend unchanged.
    let mut conn = RawConn::open(ferry.http).await;
    let (status, body) = conn.get("a.test", "/public%2Fx").await;
    assert_eq!(status, 400, "{body}");
    let mut conn = RawConn::open(ferry.http).await;
    let (status, body) = conn.get("a.test", "/public/a%20b%7Ec").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"path\":\"/public/a%20b%7Ec\""), "{body}");
}
