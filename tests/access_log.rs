//! Access log lines and request ids, end to end.

mod support;

use std::time::Duration;

use support::*;

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_line_per_request_with_request_ids() {
    let web = echo("127.0.0.2", "web").await;
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("access.log");
    let files = docs(&[service("web", &[web]), ingress("shop", &[("a.test", "Prefix", "/", "web")])]);
    let ferry = Ferry::start(&[("a.yaml", files)], &["--access-log", log.to_str().unwrap()]).await;

    // No id from the client: one is made, sent upstream and logged.
    let r = ferry.get("a.test", "/bytes/42?q=1").await;
    assert_eq!(r.status, 200);
    let r2 = ferry.get("a.test", "/x").await;
    let generated = serde_json::from_str::<serde_json::Value>(&r2.body).unwrap()["headers"]["x-request-id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(generated.len() == 32 && generated.bytes().all(|b| b.is_ascii_hexdigit()), "{generated}");
    // The client's id is kept.
    let started_trace = serde_json::from_str::<serde_json::Value>(&r2.body).unwrap()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        started_trace.starts_with("00-") && started_trace.ends_with("-00"),
        "a new, unsampled trace: {started_trace}"
    );
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = client()
        .get(format!("http://{}/y", ferry.http))
        .header("host", "a.test")
        .header("x-request-id", "trace-abc-123")
        .header("traceparent", incoming)
        .header("tracestate", "vendor=1")
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["headers"]["x-request-id"], "trace-abc-123");
    let joined = body["headers"]["traceparent"].as_str().unwrap();
    assert!(joined.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && joined.ends_with("-01"), "{joined}");
    assert_ne!(joined, incoming, "ferry is a hop of its own");
    assert_eq!(body["headers"]["tracestate"], "vendor=1");
    // Unmatched.
    assert_eq!(ferry.get("nowhere.test", "/z").await.status, 404);

    let mut logged = Vec::new();
    eventually_within("four lines are written", Duration::from_secs(3), || {
        logged = lines(&log);
        let n = logged.len();
        async move { n >= 4 }
    })
    .await;
    assert_eq!(logged.len(), 4, "{logged:?}");
    let first = &logged[0];
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes"], 42);
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/bytes/42?q=1");
    assert_eq!(first["host"], "a.test");
    assert_eq!(first["route"], "default/shop");
    assert_eq!(first["upstream"], web.to_string());
    assert_eq!(first["client"], "127.0.0.1");
    assert!(first["duration_ms"].as_f64().unwrap() >= first["upstream_ms"].as_f64().unwrap());
    let time = first["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.len() == "2026-01-01T00:00:00.000000Z".len(), "{time}");
    assert_eq!(logged[1]["request_id"], generated.as_str());
    assert_eq!(logged[2]["request_id"], "trace-abc-123");
    assert_eq!(logged[2]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(logged[1]["trace_id"].as_str().unwrap(), &started_trace[3..35]);
    let miss = &logged[3];
    assert_eq!((miss["status"].as_u64(), miss["route"].is_null(), miss["upstream"].is_null()), (Some(404), true, true));
    assert!(miss["request_id"].as_str().is_some_and(|id| id.len() == 32));
}

/// Lines are written in batches; whatever is pending when ferry exits (drained after SIGTERM, or
/// stopped by SIGINT) is written first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_lines_are_written_before_exit() {
    let web = echo("127.0.0.2", "web").await;
    let files = docs(&[service("web", &[web]), ingress("shop", &[("a.test", "Prefix", "/", "web")])]);
    for (signal, n) in [("TERM", 50), ("INT", 20)] {
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("access.log");
        let mut ferry = Ferry::start(
            &[("a.yaml", files.clone())],
            &["--access-log", log.to_str().unwrap(), "--shutdown-delay", "0"],
        )
        .await;
        for i in 0..n {
            assert_eq!(ferry.get("a.test", &format!("/{i}")).await.status, 200);
        }
        ferry.signal(signal);
        assert!(ferry.wait_exit(Duration::from_secs(10)).await.is_some(), "SIG{signal}: exited");
        let logged = lines(&log);
        assert_eq!(logged.len(), n, "SIG{signal}: every request is logged");
        let paths: Vec<&str> = logged.iter().map(|l| l["path"].as_str().unwrap()).collect();
        assert_eq!(paths, (0..n).map(|i| format!("/{i}")).collect::<Vec<_>>(), "SIG{signal}: in order");
    }
}
