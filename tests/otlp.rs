//! OpenTelemetry export: request spans reach an OTLP/HTTP collector (a stub started here that
//! decodes the protobuf), joined to the client's trace and the parent of the upstream's hop.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};
use prost::Message;
use support::*;

#[derive(Debug, Clone)]
struct Received {
    path: String,
    content_type: String,
    service_name: String,
    span: Span,
}

/// An OTLP/HTTP collector on loopback that keeps every span it is sent.
async fn collector() -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let store = store.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let store = store.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let content_type =
                            req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                        for rs in export.resource_spans {
                            let service_name = rs
                                .resource
                                .iter()
                                .flat_map(|r| &r.attributes)
                                .find(|kv| kv.key == "service.name")
                                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                                    Value::StringValue(s) => Some(s.clone()),
                                    _ => None,
                                })
                                .unwrap_or_default();
                            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                                store.lock().unwrap().push(Received {
                                    path: path.clone(),
                                    content_type: content_type.clone(),
                                    service_name: service_name.clone(),
                                    span,
                                });
                            }
                        }
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
            });
        }
    });
    (addr, got)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let v = span.attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match v {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}

async fn metric(ferry: &Ferry, name: &str) -> f64 {
    let text = ferry.admin_get("/metrics").await;
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0)
}

/// GET through ferry with an optional `traceparent`; returns the status and the upstream's one.
async fn get_traced(ferry: &Ferry, path: &str, traceparent: Option<&str>) -> (u16, String) {
    let mut req = client().get(format!("http://{}{path}", ferry.http)).header("host", "a.test");
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    let seen = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|b| b["headers"]["traceparent"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_are_exported_over_otlp() {
    let (collector, got) = collector().await;
    let web = echo("127.0.0.2", "web").await;
    let files = docs(&[
        service("web", &[web]),
        service("gone", &[closed_addr("127.0.0.3")]),
        ingress("shop", &[("a.test", "Prefix", "/", "web"), ("a.test", "Prefix", "/broken", "gone")]),
    ]);
    let endpoint = format!("http://{collector}");
    let ferry = Ferry::start(&[("a.yaml", files)], &["--otlp-endpoint", &endpoint, "--otlp-sample-ratio", "1"]).await;

    // The client decided not to sample: nothing is exported for its trace.
    let unsampled_trace = "0af7651916cd43dd8448eb211c80319c";
    let (status, _) = get_traced(&ferry, "/quiet", Some(&format!("00-{unsampled_trace}-b7ad6b7169203331-00"))).await;
    assert_eq!(status, 200);

    // A sampled client trace: ferry's span joins it, and is the parent of the upstream's hop.
    let (client_trace, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let (status, upstream_tp) =
        get_traced(&ferry, "/joined?x=1", Some(&format!("00-{client_trace}-{client_span}-01"))).await;
    assert_eq!(status, 200);
    let ferry_span = upstream_tp.split('-').nth(2).unwrap().to_string();

    // No traceparent: ferry starts a trace, sampled at ratio 1, and says so upstream.
    let (status, started_tp) = get_traced(&ferry, "/fresh", None).await;
    assert_eq!(status, 200);
    assert!(started_tp.ends_with("-01"), "{started_tp}");
    let started_trace = started_tp.split('-').nth(1).unwrap().to_string();

    // A failing upstream is an error span.
    let (status, _) = get_traced(&ferry, "/broken", None).await;
    assert_eq!(status, 502);

    let mut spans = Vec::new();
    eventually_within("three spans reach the collector", Duration::from_secs(10), || {
        spans = got.lock().unwrap().clone();
        let n = spans.len();
        async move { n >= 3 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let spans = got.lock().unwrap().clone();
    assert_eq!(spans.len(), 3, "{spans:#?}");
    assert!(spans.iter().all(|r| hex(&r.span.trace_id) != unsampled_trace), "an unsampled trace was exported");
    for r in &spans {
        assert_eq!(r.path, "/v1/traces");
        assert_eq!(r.content_type, "application/x-protobuf");
        assert_eq!(r.service_name, "ferry");
        assert_eq!(r.span.kind, SpanKind::Server as i32);
        assert!(r.span.end_time_unix_nano >= r.span.start_time_unix_nano);
    }

    let joined = spans.iter().find(|r| hex(&r.span.trace_id) == client_trace).expect("the client's trace");
    assert_eq!(hex(&joined.span.span_id), ferry_span, "the upstream's parent is ferry's exported span");
    assert_eq!(hex(&joined.span.parent_span_id), client_span);
    assert_eq!(joined.span.name, "GET");
    assert_eq!(attr(&joined.span, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr(&joined.span, "url.path").as_deref(), Some("/joined"));
    assert_eq!(attr(&joined.span, "server.address").as_deref(), Some("a.test"));
    assert_eq!(attr(&joined.span, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(&joined.span, "ferry.route").as_deref(), Some("default/shop"));
    assert_eq!(attr(&joined.span, "ferry.backend").as_deref(), Some("default/web:80"));
    assert_eq!(attr(&joined.span, "network.peer.address").as_deref(), Some("127.0.0.2"));
    assert_eq!(attr(&joined.span, "network.peer.port"), Some(web.port().to_string()));
    assert_ne!(joined.span.status.as_ref().map_or(0, |s| s.code), StatusCode::Error as i32);

    let fresh = spans.iter().find(|r| hex(&r.span.trace_id) == started_trace).expect("ferry's own trace");
    assert!(fresh.span.parent_span_id.is_empty(), "a root span");
    assert_eq!(attr(&fresh.span, "url.path").as_deref(), Some("/fresh"));

    let broken = spans.iter().find(|r| attr(&r.span, "url.path").as_deref() == Some("/broken")).unwrap();
    assert_eq!(attr(&broken.span, "http.response.status_code").as_deref(), Some("502"));
    assert_eq!(broken.span.status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));

    assert_eq!(metric(&ferry, "ferry_otlp_spans_total{outcome=\"exported\"}").await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_costs_spans_not_requests() {
    let web = echo("127.0.0.2", "web").await;
    let files = docs(&[service("web", &[web]), ingress("shop", &[("a.test", "Prefix", "/", "web")])]);
    let endpoint = format!("http://{}", closed_addr("127.0.0.1"));
    let ferry = Ferry::start(&[("a.yaml", files)], &["--otlp-endpoint", &endpoint, "--otlp-sample-ratio", "1"]).await;
    for i in 0..20 {
        let (status, tp) = get_traced(&ferry, &format!("/{i}"), None).await;
        assert_eq!(status, 200);
        assert!(tp.ends_with("-01"));
    }
    eventually_within("failed exports are counted", Duration::from_secs(10), || {
        let ferry = &ferry;
        async move { metric(ferry, "ferry_otlp_spans_total{outcome=\"failed\"}").await >= 20.0 }
    })
    .await;
    assert!(ferry.log().contains("OTLP export failed"), "{}", ferry.log());
    assert_eq!(ferry.get("a.test", "/after").await.status, 200);
}

#[test]
fn bad_otlp_flags_are_refused_at_start() {
    for (args, expect) in [
        (&["--otlp-endpoint", "collector:4318"][..], "--otlp-endpoint collector:4318"),
        (&["--otlp-endpoint", "http://c:4318", "--otlp-sample-ratio", "2"][..], "sample ratio 2"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("--manifests")
            .arg(dir.path())
            .args(["--http-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}
