//! Service routing at the edge: load-balancing policies (statistical distribution, consistent
//! hashing with minimal remapping), passive outlier detection and recovery, retries of 5xx
//! answers within a budget, and upstream protocols from `appProtocol` (h2c, TLS to the pod).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A Service (port 80, name `http`) over `endpoints`, with extra metadata and port fields.
fn service_with(name: &str, endpoints: &[SocketAddr], annotations: &str, port_extra: &str) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default, annotations: {{{annotations}}}}}\nspec:\n  ports:\n  - {{name: http, port: 80{port_extra}}}\n"
    );
    for (i, ep) in endpoints.iter().enumerate() {
        out += &endpoint_slice(&format!("{name}-{i}"), name, "http", ep, "ready: true");
    }
    out
}

async fn get_with(ferry: &Ferry, host: &str, header: Option<(&str, &str)>) -> Reply {
    let mut req = client().get(format!("http://{}/", ferry.http)).header("host", host);
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    Reply::read(req.send().await.expect("request")).await
}

fn count(picks: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in picks {
        *m.entry(p.clone()).or_insert(0) += 1;
    }
    m
}

/// Every one of `n` endpoints got a share within `tolerance` (relative) of an even split.
fn assert_spread(what: &str, counts: &BTreeMap<String, usize>, n: usize, tolerance: f64) {
    let total: usize = counts.values().sum();
    let share = total as f64 / n as f64;
    assert_eq!(counts.len(), n, "{what}: every endpoint serves: {counts:?}");
    for c in counts.values() {
        assert!((*c as f64 - share).abs() <= share * tolerance, "{what}: uneven: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_distribute_as_documented() {
    let eps = [echo("127.0.0.2", "e").await, echo("127.0.0.3", "e").await, echo("127.0.0.4", "e").await];
    let policies = [
        ("rr", ""),
        ("random", "ferry.dev/load-balancer: random"),
        ("least", "ferry.dev/load-balancer: least-request"),
        ("hdr", "ferry.dev/load-balancer: \"header-hash:X-User\""),
        ("ck", "ferry.dev/load-balancer: \"cookie:session\""),
        ("src", "ferry.dev/load-balancer: source-hash"),
        ("bad", "ferry.dev/load-balancer: fastest"),
    ];
    let manifests = |eps: &[SocketAddr]| {
        let mut parts = Vec::new();
        for (name, annotation) in policies {
            parts.push(service_with(name, eps, annotation, ""));
            parts.push(ingress(name, &[(&format!("{name}.test"), "Prefix", "/", name)]));
        }
        docs(&parts)
    };
    let (slow, _) = scripted_server("127.0.0.5", 200, Duration::from_millis(30)).await;
    let mut files = manifests(&eps);
    files += &format!(
        "\n---\n{}\n---\n{}",
        service_with("lat", &[eps[0], eps[1], slow], "ferry.dev/load-balancer: ewma", ""),
        ingress("lat", &[("lat.test", "Prefix", "/", "lat")])
    );
    let ferry = Ferry::start(&[("lb.yaml", files)], &[]).await;

    // ewma: a pod 30 ms slower than its peers gets few requests once measured.
    let mut picks = Vec::new();
    for _ in 0..200 {
        picks.push(ferry.get("lat.test", "/").await.endpoint().to_string());
    }
    let to_slow = picks.iter().filter(|p| **p == slow.to_string()).count();
    assert!(to_slow <= 10, "{to_slow} of 200 requests went to the slow endpoint");

    // Round-robin is exact; random and least-request (idle: ties) spread statistically.
    for (host, tolerance) in [("rr.test", 0.0), ("random.test", 0.35), ("least.test", 0.35)] {
        let mut picks = Vec::new();
        for _ in 0..300 {
            picks.push(ferry.get(host, "/").await.endpoint().to_string());
        }
        assert_spread(host, &count(&picks), 3, tolerance);
    }

    // Hash policies: a key keeps its endpoint; 240 keys spread over all three.
    let keyed = |host: &'static str, user: usize| {
        let header = match host {
            "hdr.test" => ("x-user", format!("user-{user}")),
            _ => ("cookie", format!("theme=dark; session=s{user}; lang=en")),
        };
        let ferry = &ferry;
        async move { get_with(ferry, host, Some((header.0, &header.1))).await.endpoint().to_string() }
    };
    let mut before: HashMap<(&str, usize), String> = HashMap::new();
    for host in ["hdr.test", "ck.test"] {
        for user in 0..240 {
            let first = keyed(host, user).await;
            assert_eq!(keyed(host, user).await, first, "{host}: key {user} sticks");
            before.insert((host, user), first);
        }
        let picks: Vec<String> = (0..240).map(|u| before[&(host, u)].clone()).collect();
        assert_spread(host, &count(&picks), 3, 0.35);
    }
    // Without the key, requests still spread (round-robin).
    let keyless: Vec<String> = futures_util::future::join_all((0..30).map(|_| get_with(&ferry, "hdr.test", None)))
        .await
        .iter()
        .map(|r| r.endpoint().to_string())
        .collect();
    assert_eq!(count(&keyless).len(), 3);

    // source-hash: one client address, one endpoint; many addresses, several endpoints.
    let from = |ip: String| async move {
        let c = reqwest::Client::builder().no_proxy().local_address(ip.parse::<std::net::IpAddr>().unwrap()).build();
        let r = c.unwrap().get(format!("http://{}/", ferry.http)).header("host", "src.test").send().await.unwrap();
        Reply::read(r).await.endpoint().to_string()
    };
    let mut by_source = Vec::new();
    for i in 10..40 {
        let ip = format!("127.0.0.{i}");
        let first = from(ip.clone()).await;
        assert_eq!(from(ip).await, first, "source 127.0.0.{i} sticks");
        by_source.push(first);
    }
    assert!(count(&by_source).len() >= 2, "sources spread: {:?}", count(&by_source));

    // An unknown policy warns and serves round-robin.
    assert_eq!(get_with(&ferry, "bad.test", None).await.status, 200);
    assert!(ferry.log().contains("unknown load-balancing policy \"fastest\""), "{}", ferry.log());

    // One of three endpoints leaves: only its keys move (about a third), the others stay.
    let removed = eps[1].to_string();
    ferry.write("lb.yaml", &manifests(&[eps[0], eps[2]]));
    eventually("the endpoint is gone", || async {
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(ferry.get("rr.test", "/").await.endpoint().to_string());
        }
        !seen.contains(&removed)
    })
    .await;
    for host in ["hdr.test", "ck.test"] {
        let mut moved = 0;
        for user in 0..240 {
            let now = keyed(host, user).await;
            let was = &before[&(host, user)];
            if *was != removed {
                assert_eq!(&now, was, "{host}: key {user} of a remaining endpoint must not move");
            } else {
                moved += 1;
            }
        }
        assert!(moved as f64 <= 240.0 * (1.0 / 3.0 + 0.1), "{host}: {moved} of 240 keys moved");
    }
}

/// A backend that answers every request with `status` and an empty body.
async fn status_server(ip: &str, status: u16) -> SocketAddr {
    scripted_server(ip, status, Duration::ZERO).await.0
}

/// A backend that answers every request with `status` after `delay`; counts the requests.
async fn scripted_server(ip: &str, status: u16, delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(format!("{ip}:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut head = Vec::new();
                loop {
                    let Ok(n) = s.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        head.drain(..end + 4);
                        counter.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                        let reply = format!(
                            "HTTP/1.1 {status} Failing\r\ncontent-length: 0\r\nx-echo-endpoint: {addr}\r\n\r\n"
                        );
                        if s.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, hits)
}

async fn connect_errors(ferry: &Ferry, backend: &str) -> f64 {
    let metrics = ferry.admin_get("/metrics").await;
    let prefix = format!("ferry_upstream_connect_errors_total{{backend=\"{backend}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outliers_are_ejected_and_return_and_no_request_fails() {
    let (a, b) = (echo("127.0.0.2", "a").await, echo("127.0.0.3", "b").await);
    let dead = closed_addr("127.0.0.4");
    let failing = status_server("127.0.0.5", 500).await;
    let files = docs(&[
        service("svc", &[a, b, dead]),
        ingress("i", &[("a.test", "Prefix", "/", "svc")]),
        service("flaky", &[a, failing]),
        ingress("f", &[("f.test", "Prefix", "/", "flaky")]),
    ]);
    let ferry =
        Ferry::start(&[("a.yaml", files)], &["--outlier-failures", "3", "--outlier-ejection-seconds", "5"]).await;

    // One of three endpoints refuses connections: no request fails, and once ejected it is no
    // longer tried (connect errors stop at the ejection threshold).
    for i in 0..60 {
        let r = ferry.get("a.test", "/").await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    let errors = connect_errors(&ferry, "default/svc:80").await;
    assert!((3.0..=4.0).contains(&errors), "ejected after 3 connect errors, tried no more: {errors}");

    // The endpoint comes back: after its ejection it serves again.
    ferry_echo::spawn(&dead.to_string(), "revived").await.unwrap();
    eventually_within("the ejected endpoint returns", Duration::from_secs(15), || async {
        ferry.get("a.test", "/").await.endpoint() == dead.to_string()
    })
    .await;

    // 5xx answers eject too: after 3 in a row the failing endpoint gets no requests.
    let mut failures = 0;
    for _ in 0..40 {
        if ferry.get("f.test", "/").await.status == 500 {
            failures += 1;
        }
    }
    assert_eq!(failures, 3, "ejected after 3 errors in a row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_retry_5xx_elsewhere_within_budget() {
    let a = echo("127.0.0.2", "a").await;
    let (unavailable, unavailable_hits) = scripted_server("127.0.0.3", 503, Duration::ZERO).await;
    let files = docs(&[
        service("svc", &[a, unavailable]),
        ingress_with_annotations("retry", "r.test", "ferry.dev/retries: \"2\""),
        ingress("plain", &[("p.test", "Prefix", "/", "svc")]),
    ]);
    // Ejection off, so every request meets the failing endpoint in turn.
    let ferry = Ferry::start(&[("a.yaml", files)], &["--outlier-failures", "0"]).await;

    let statuses = |host: &'static str, method: reqwest::Method| {
        let ferry = &ferry;
        async move {
            let mut out = Vec::new();
            for _ in 0..10 {
                let mut req = client().request(method.clone(), format!("http://{}/", ferry.http)).header("host", host);
                if method == reqwest::Method::POST {
                    req = req.body("payload");
                }
                out.push(req.send().await.unwrap().status().as_u16());
            }
            out
        }
    };
    // GETs through the retrying route never see the 503 (budget: 3 + a fifth per request).
    assert!(statuses("r.test", reqwest::Method::GET).await.iter().all(|s| *s == 200));
    // Not idempotent, or no retries configured: the 503 reaches the client.
    assert!(statuses("r.test", reqwest::Method::POST).await.contains(&503));
    assert!(statuses("p.test", reqwest::Method::GET).await.contains(&503));

    // The budget bounds retries when everything fails: 40 GETs to a backend of two failing
    // endpoints make at most 3 + 40/5 retries, not 80.
    let (other, other_hits) = scripted_server("127.0.0.4", 503, Duration::ZERO).await;
    ferry.write(
        "a.yaml",
        &docs(&[
            service("svc", &[unavailable, other]),
            ingress_with_annotations("retry", "r.test", "ferry.dev/retries: \"2\""),
        ]),
    );
    eventually("the failing endpoints serve", || async { ferry.get("r.test", "/").await.status == 503 }).await;
    // A request is counted just after its response is sent: let the last one land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = requests_5xx(&ferry).await;
    let hits_before = unavailable_hits.load(Ordering::Relaxed) + other_hits.load(Ordering::Relaxed);
    for _ in 0..40 {
        assert_eq!(ferry.get("r.test", "/").await.status, 503);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(requests_5xx(&ferry).await - before, 40.0);
    let attempts = unavailable_hits.load(Ordering::Relaxed) + other_hits.load(Ordering::Relaxed) - hits_before;
    // 40 requests + at most the banked 10 retries + 40/5 earned; without a budget: 120.
    assert!((41..=40 + 10 + 8 + 1).contains(&attempts), "{attempts} upstream attempts for 40 requests");
}

async fn requests_5xx(ferry: &Ferry) -> f64 {
    let metrics = ferry.admin_get("/metrics").await;
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("ferry_requests_total{route=\"default/retry\",code=\"5xx\"} ")?.trim().parse().ok()
        })
        .unwrap_or(0.0)
}

fn ingress_with_annotations(name: &str, host: &str, annotations: &str) -> String {
    ingress(name, &[(host, "Prefix", "/", "svc")])
        .replace("namespace: default}", &format!("namespace: default, annotations: {{{annotations}}}}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_protocol_h2c_and_tls_upstreams() {
    let h2c = echo("127.0.0.2", "grpcish").await;
    let (tls, _cert) = ferry_echo::spawn_tls("127.0.0.3:0", "secure", &["secure.default.svc".into()]).await.unwrap();
    let files = docs(&[
        service_with("grpcish", &[h2c], "", ", appProtocol: kubernetes.io/h2c"),
        ingress("g", &[("g.test", "Prefix", "/", "grpcish")]),
        service_with("secure", &[tls], "", ", appProtocol: https"),
        ingress("s", &[("s.test", "Prefix", "/", "secure")]),
        service_with("odd", &[h2c], "", ", appProtocol: postgres"),
        ingress("o", &[("o.test", "Prefix", "/", "odd")]),
    ]);
    let ferry = Ferry::start(&[("a.yaml", files)], &[]).await;

    let json = |r: &Reply| {
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap_or_else(|e| panic!("{e}: {} {:?}", r.status, r.body))
    };
    // HTTP/1.1 client → h2c pod.
    let r = ferry.get("g.test", "/x").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["version"], "HTTP/2.0", "{}", r.body);
    // HTTP/2 (h2c) client → h2c pod.
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().resolve("g.test", ferry.http).build();
    let resp = h2.unwrap().get(format!("http://g.test:{}/y", ferry.http.port())).send().await.unwrap();
    let r = Reply::read(resp).await;
    assert_eq!((r.status, json(&r)["version"].as_str()), (200, Some("HTTP/2.0")), "{}", r.body);
    // A POST body crosses to the h2c pod.
    let resp = client()
        .post(format!("http://{}/echo-body", ferry.http))
        .header("host", "g.test")
        .body(vec![b'z'; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().len(), 100_000);

    // TLS to the pod (its self-signed certificate is not verified).
    let r = ferry.get("s.test", "/").await;
    assert_eq!((r.status, json(&r)["tls"].as_bool()), (200, Some(true)), "{}", r.body);

    // An appProtocol that is not HTTP: served as HTTP/1.1, with a warning.
    let r = ferry.get("o.test", "/").await;
    assert_eq!((r.status, json(&r)["version"].as_str()), (200, Some("HTTP/1.1")));
    assert!(ferry.log().contains("appProtocol \"postgres\""), "{}", ferry.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_name_services_only_when_allowed() {
    let ext = echo("127.0.0.1", "outside").await;
    let port = ext.port();
    let files = docs(&[
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: ext, namespace: default}}\nspec:\n  type: ExternalName\n  externalName: localhost\n  ports:\n  - {{name: http, port: {port}}}\n"
        ),
        ingress("e", &[("e.test", "Prefix", "/", "ext")]).replace("number: 80", &format!("number: {port}")),
    ]);
    let refused = Ferry::start(&[("a.yaml", files.clone())], &[]).await;
    let r = refused.get("e.test", "/").await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("--allow-external-name"), "{}", r.body);

    let allowed = Ferry::start(&[("a.yaml", files)], &["--allow-external-name"]).await;
    for _ in 0..5 {
        let r = allowed.get("e.test", "/").await;
        assert_eq!((r.status, r.service()), (200, "outside"), "{}", r.body);
    }
    let routes: serde_json::Value = serde_json::from_str(&allowed.admin_get("/routes").await).unwrap();
    let path = &routes["hosts"][0]["paths"][0];
    assert_eq!(
        (path["state"].as_str(), path["detail"]["host"].as_str()),
        (Some("external"), Some("localhost")),
        "{path}"
    );
}
