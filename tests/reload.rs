//! Live reconfiguration: editing manifests changes routing with no restart, and never drops an
//! open WebSocket, a keep-alive connection or a request in flight; a broken file keeps routes.

mod support;

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn config(target: &str, web: std::net::SocketAddr, api: std::net::SocketAddr) -> String {
    docs(&[service("web", &[web]), service("api", &[api]), ingress("i", &[("a.test", "Prefix", "/", target)])])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_reroute_without_dropping_connections() {
    let web = echo("127.0.0.2", "web").await;
    let api = echo("127.0.0.3", "api").await;
    let ferry = Ferry::start(&[("a.yaml", config("web", web, api))], &[]).await;

    // A WebSocket through ferry.
    let mut req = format!("ws://{}/ws", ferry.http).into_client_request().unwrap();
    req.headers_mut().insert("host", "a.test".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.expect("websocket upgrade through ferry");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("web: one"));

    // A keep-alive connection.
    let mut conn = RawConn::open(ferry.http).await;
    let (status, body) = conn.get("a.test", "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"service\":\"web\""), "{body}");

    // A slow request in flight across the swap.
    let slow = tokio::spawn({
        let http = ferry.http;
        async move {
            let r = client().get(format!("http://{http}/slow/700")).header("host", "a.test").send().await.unwrap();
            Reply::read(r).await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    ferry.write("a.yaml", &config("api", web, api));
    eventually("new route served", || async { ferry.get("a.test", "/").await.service() == "api" }).await;

    let slow = slow.await.unwrap();
    assert_eq!((slow.status, slow.service()), (200, "web"), "in-flight request finishes where it started");
    let (status, body) = conn.get("a.test", "/").await;
    assert_eq!(status, 200, "keep-alive connection survived the swap");
    assert!(body.contains("\"service\":\"api\""), "next request on it follows the new table: {body}");

    // Many swaps while the WebSocket stays open.
    for i in 0..10 {
        let target = if i % 2 == 0 { "web" } else { "api" };
        ferry.write("a.yaml", &config(target, web, api));
        eventually("swap applied", || async { ferry.get("a.test", "/").await.service() == target }).await;
    }
    ws.send(Message::text("two")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("web: two"), "WebSocket survived 11 table swaps");
    let (status, _) = conn.get("a.test", "/").await;
    assert_eq!(status, 200);
    let metrics = ferry.admin_get("/metrics").await;
    let builds: u64 =
        metrics.lines().find_map(|l| l.strip_prefix("ferry_table_builds_total ")).and_then(|v| v.parse().ok()).unwrap();
    assert!(builds >= 12, "every edit rebuilt the table ({builds})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_file_keeps_its_routes() {
    let web = echo("127.0.0.2", "web").await;
    let api = echo("127.0.0.3", "api").await;
    let ferry = Ferry::start(&[("a.yaml", config("web", web, api))], &[]).await;
    assert_eq!(ferry.get("a.test", "/").await.service(), "web");

    ferry.write("a.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: [unclosed\n");
    eventually("parse error logged with file and document", || async { ferry.log().contains("a.yaml#1") }).await;
    assert!(ferry.log().contains("keeping its last good objects"), "{}", ferry.log());
    for _ in 0..5 {
        assert_eq!(ferry.get("a.test", "/").await.service(), "web", "route kept while the file is broken");
    }

    // A second file arriving still gets built alongside the kept objects.
    ferry.write("b.yaml", &ingress("j", &[("b.test", "Prefix", "/", "api")]));
    eventually("other files still apply", || async { ferry.get("b.test", "/").await.service() == "api" }).await;
    assert_eq!(ferry.get("a.test", "/").await.service(), "web");

    // Fixing the file applies its new content.
    ferry.write("a.yaml", &config("api", web, api));
    eventually("fixed file applied", || async { ferry.get("a.test", "/").await.service() == "api" }).await;
}
