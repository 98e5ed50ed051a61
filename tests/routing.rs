//! Routing end to end: hosts, paths, default backend, 404/503, retries, forwarded headers,
//! bodies, h2c, class selection, readiness and the admin endpoints.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_and_paths_route_to_their_services() {
    let web = echo("127.0.0.2", "web").await;
    let api = echo("127.0.0.3", "api").await;
    let exact = echo("127.0.0.4", "exact").await;
    let other = echo("127.0.0.5", "other").await;
    let manifests = docs(&[
        service("web", &[web]),
        service("api", &[api]),
        service("exact", &[exact]),
        service("other", &[other]),
        ingress(
            "shop",
            &[
                ("shop.test", "Prefix", "/", "web"),
                ("shop.test", "Prefix", "/api", "api"),
                ("shop.test", "Exact", "/api/status", "exact"),
                ("*.wild.test", "Prefix", "/", "other"),
            ],
        ),
    ]);
    let ferry = Ferry::start(&[("all.yaml", manifests)], &[]).await;

    for (host, path, want) in [
        ("shop.test", "/", "web"),
        ("shop.test", "/apix", "web"),
        ("shop.test", "/api", "api"),
        ("shop.test", "/api/", "api"),
        ("shop.test", "/api/users?id=1", "api"),
        ("SHOP.test:8080", "/api/status", "exact"),
        ("shop.test", "/api/status/", "api"),
        ("a.wild.test", "/x", "other"),
    ] {
        let r = ferry.get(host, path).await;
        assert_eq!((r.status, r.service()), (200, want), "{host}{path}: {}", r.body);
    }
    // The backend receives the path and query exactly as sent.
    assert_eq!(ferry.get("shop.test", "/api/users?id=1").await.json["path"], "/api/users?id=1");

    for (host, path) in [("unknown.test", "/"), ("a.b.wild.test", "/"), ("wild.test", "/")] {
        let r = ferry.get(host, path).await;
        assert_eq!(r.status, 404, "{host}{path}");
        assert!(r.body.contains("no route"), "{}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_backend_takes_unmatched_requests() {
    let web = echo("127.0.0.2", "web").await;
    let fallback = echo("127.0.0.3", "fallback").await;
    let ing = format!(
        "{}  defaultBackend: {{service: {{name: fallback, port: {{number: 80}}}}}}\n",
        ingress("site", &[("site.test", "Exact", "/", "web")])
    );
    let ferry =
        Ferry::start(&[("a.yaml", docs(&[service("web", &[web]), service("fallback", &[fallback]), ing]))], &[]).await;
    assert_eq!(ferry.get("site.test", "/").await.service(), "web");
    assert_eq!(ferry.get("site.test", "/other").await.service(), "fallback");
    assert_eq!(ferry.get("elsewhere.test", "/").await.service(), "fallback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_service_and_no_endpoints_answer_503_with_reason() {
    let svc_without_endpoints =
        "apiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: default}\nspec:\n  ports:\n  - {name: http, port: 80}\n".to_string();
    let not_ready = closed_addr("127.0.0.2");
    let unready_svc = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: unready, namespace: default}}\nspec:\n  ports:\n  - {{name: http, port: 80}}\n{}",
        endpoint_slice("unready-0", "unready", "http", &not_ready, "ready: false")
    );
    let ing = ingress(
        "i",
        &[
            ("a.test", "Prefix", "/empty", "empty"),
            ("a.test", "Prefix", "/missing", "ghost"),
            ("a.test", "Prefix", "/unready", "unready"),
        ],
    );
    let ferry = Ferry::start(&[("a.yaml", docs(&[svc_without_endpoints, unready_svc, ing]))], &[]).await;

    let r = ferry.get("a.test", "/empty").await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("no ready endpoints for default/empty:80"), "{}", r.body);
    let r = ferry.get("a.test", "/missing").await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains("Service default/ghost not found"), "{}", r.body);
    let r = ferry.get("a.test", "/unready").await;
    assert_eq!(r.status, 503, "endpoints that are neither ready nor serving+terminating get no traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_endpoints_are_used_only_when_none_is_ready() {
    let term = echo("127.0.0.2", "terminating").await;
    let svc = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: default}}\nspec:\n  ports:\n  - {{name: http, port: 80}}\n{}",
        endpoint_slice("s-0", "s", "http", &term, "ready: false, serving: true, terminating: true")
    );
    let ferry =
        Ferry::start(&[("a.yaml", docs(&[svc.clone(), ingress("i", &[("a.test", "Prefix", "/", "s")])]))], &[]).await;
    assert_eq!(ferry.get("a.test", "/").await.service(), "terminating");

    let ready = echo("127.0.0.3", "ready").await;
    let both = format!("{svc}{}", endpoint_slice("s-1", "s", "http", &ready, "ready: true"));
    ferry.write("a.yaml", &docs(&[both, ingress("i", &[("a.test", "Prefix", "/", "s")])]));
    eventually("ready endpoint preferred", || async { ferry.get("a.test", "/").await.service() == "ready" }).await;
    for _ in 0..6 {
        assert_eq!(ferry.get("a.test", "/").await.service(), "ready");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_and_retry_on_a_closed_endpoint() {
    let a = echo("127.0.0.2", "svc").await;
    let b = echo("127.0.0.3", "svc").await;
    let dead = closed_addr("127.0.0.4");
    let ferry = Ferry::start(
        &[("a.yaml", docs(&[service("svc", &[a, b, dead]), ingress("i", &[("a.test", "Prefix", "/", "svc")])]))],
        &[],
    )
    .await;

    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..30 {
        let r = ferry.get("a.test", "/").await;
        assert_eq!(r.status, 200, "a closed endpoint must be retried elsewhere: {}", r.body);
        *seen.entry(r.endpoint().to_string()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both live endpoints serve: {seen:?}");
    assert!(seen.values().all(|n| *n >= 10), "round-robin spreads load: {seen:?}");
    let metrics = ferry.admin_get("/metrics").await;
    assert!(
        metrics.lines().any(|l| l.starts_with("ferry_upstream_connect_errors_total{backend=\"default/svc:80\"}")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    let (ferry, _) = Ferry::one_route("shop").await;
    let mut last = 0;
    for _ in 0..5 {
        // A new client connection each time: reuse can only come from ferry's upstream pool.
        let mut conn = RawConn::open(ferry.http).await;
        let (status, body) = conn.get("a.test", "/").await;
        assert_eq!(status, 200);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        last = json["conn_requests"].as_u64().unwrap();
        // The client can read the whole response a moment before ferry has put the upstream
        // connection back in its pool; under a loaded machine the next request could win that race.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(last, 5, "all five requests rode one pooled upstream connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_added_and_host_preserved() {
    let (ferry, _) = Ferry::one_route("shop").await;
    let resp = client()
        .get(format!("http://{}/h", ferry.http))
        .header("host", "A.test:1234")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    let r = Reply::read(resp).await;
    assert_eq!(r.json["host"], "A.test:1234");
    // The client is not a trusted proxy (--trusted-proxies): its X-Forwarded-For is replaced.
    assert_eq!(r.header("x-forwarded-for"), "127.0.0.1");
    assert_eq!(r.header("x-real-ip"), "127.0.0.1");
    assert_eq!(r.header("x-forwarded-proto"), "http");
    assert_eq!(r.header("x-forwarded-host"), "A.test:1234");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways() {
    let (ferry, _) = Ferry::one_route("shop").await;
    let payload: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let resp = client()
        .post(format!("http://{}/echo-body", ferry.http))
        .header("host", "a.test")
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.bytes().await.unwrap();
    assert!(got[..] == payload[..], "8 MiB echoed intact ({} bytes back)", got.len());

    let big =
        client().get(format!("http://{}/bytes/3000000", ferry.http)).header("host", "a.test").send().await.unwrap();
    assert_eq!(big.bytes().await.unwrap().len(), 3_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_on_the_plaintext_port() {
    let (ferry, _) = Ferry::one_route("shop").await;
    let h2 =
        reqwest::Client::builder().no_proxy().http2_prior_knowledge().resolve("a.test", ferry.http).build().unwrap();
    // h2 carries the host in :authority; the route matches on it.
    let resp = h2.get(format!("http://a.test:{}/x", ferry.http.port())).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let r = Reply::read(resp).await;
    assert_eq!((r.status, r.service()), (200, "web"), "{}", r.body);
    // The h1 backend gets :authority as Host, and as X-Forwarded-Host.
    let authority = format!("a.test:{}", ferry.http.port());
    assert_eq!(r.json["host"], authority.as_str());
    assert_eq!(r.header("x-forwarded-host"), authority);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_ingresses_of_our_class_are_served() {
    let web = echo("127.0.0.2", "web").await;
    let class = |name: &str, controller: &str, default: bool| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: {name}\n  annotations: {{ingressclass.kubernetes.io/is-default-class: \"{default}\"}}\nspec: {{controller: {controller}}}\n"
        )
    };
    let with_class = |name: &str, host: &str, class_line: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n{class_line}spec:\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}\n"
        )
    };
    let ing_by_controller = with_class("mine", "mine.test", "").replace("spec:\n", "spec:\n  ingressClassName: edge\n");
    let ing_other = with_class("theirs", "theirs.test", "").replace("spec:\n", "spec:\n  ingressClassName: nginx\n");
    let ing_legacy = with_class("legacy", "legacy.test", "  annotations: {kubernetes.io/ingress.class: ferry}\n");
    let ing_legacy_other =
        with_class("legacy-other", "legacy-other.test", "  annotations: {kubernetes.io/ingress.class: nginx}\n");
    let ing_none = with_class("none", "none.test", "");
    let files = docs(&[
        service("web", &[web]),
        class("edge", "ferry.dev/ingress-controller", false),
        class("nginx", "k8s.io/ingress-nginx", true),
        ing_by_controller,
        ing_other,
        ing_legacy,
        ing_legacy_other,
        ing_none.clone(),
    ]);
    let ferry = Ferry::start(&[("a.yaml", files.clone())], &[]).await;
    for (host, status) in
        [("mine.test", 200), ("legacy.test", 200), ("theirs.test", 404), ("legacy-other.test", 404), ("none.test", 404)]
    {
        assert_eq!(ferry.get(host, "/").await.status, status, "{host}");
    }
    // Make our class the default: class-less Ingresses become ours.
    ferry.write(
        "a.yaml",
        &files.replace(
            "name: edge\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"false\"}",
            "name: edge\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}",
        ),
    );
    eventually("class-less Ingress served once our class is default", || async {
        ferry.get("none.test", "/").await.status == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_first_table() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("later");
    let ferry = Ferry::start_at(dir, &manifests, &[]);
    eventually("admin answers", || async { ferry.readyz().await.is_some() }).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(ferry.readyz().await, Some(503), "not ready while the manifest path is missing");
    assert_eq!(ferry.admin_get("/healthz").await, "ok\n");

    let web = echo("127.0.0.2", "web").await;
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("a.yaml"),
        docs(&[service("web", &[web]), ingress("i", &[("a.test", "Prefix", "/", "web")])]),
    )
    .unwrap();
    ferry.wait_ready().await;
    assert_eq!(ferry.get("a.test", "/").await.service(), "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reports_routes_and_metrics() {
    let (ferry, web) = Ferry::one_route("shop").await;
    assert_eq!(ferry.get("a.test", "/").await.status, 200);
    assert_eq!(ferry.get("b.test", "/").await.status, 404);

    let routes: serde_json::Value = serde_json::from_str(&ferry.admin_get("/routes").await).unwrap();
    let path = &routes["hosts"][0]["paths"][0];
    assert_eq!(routes["hosts"][0]["host"], "a.test");
    assert_eq!(path["route"], "default/shop");
    assert_eq!(path["backend"], "default/web:80");
    assert_eq!(path["detail"][0], web.to_string());

    // Request metrics are recorded once the response has been sent, so poll for them.
    eventually("request metrics recorded", || async {
        let m = ferry.admin_get("/metrics").await;
        m.contains("ferry_requests_total{route=\"none\",code=\"4xx\"} 1")
            && m.contains("ferry_requests_total{route=\"default/shop\",code=\"2xx\"} 1")
    })
    .await;
    let metrics = ferry.admin_get("/metrics").await;
    for line in [
        "ferry_requests_total{route=\"default/shop\",code=\"2xx\"} 1",
        "ferry_requests_total{route=\"none\",code=\"4xx\"} 1",
        "ferry_table_builds_total 1",
        "ferry_routes 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    assert!(metrics.contains("ferry_table_build_duration_seconds_count 1"));
    assert!(metrics.contains("ferry_build_diagnostics{severity=\"error\"} 0"));
}

/// HTTP/1.x details that both plaintext engines (ferry's fast path and Pingora's full proxy) must
/// get right, checked on each: chunked request bodies, `100 Continue`, hop-by-hop headers (and
/// headers a client nominates in `Connection`) kept from the backend, HEAD framing, HTTP/1.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_semantics_hold_on_both_engines() {
    let web = echo("127.0.0.2", "web").await;
    let files = docs(&[service("web", &[web]), ingress("i", &[("a.test", "Prefix", "/", "web")])]);
    for engine in ["fast", "pingora"] {
        let ferry = Ferry::start(&[("a.yaml", files.clone())], &["--http1-engine", engine]).await;
        let mut conn = RawConn::open(ferry.http).await;

        let chunked = b"POST /echo-body HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                        5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let (status, _, body) = conn.exchange(chunked).await;
        assert_eq!((status, body.as_str()), (200, "hello world"), "{engine}: chunked request body");

        let (status, _, _) = conn
            .exchange(b"POST /echo-body HTTP/1.1\r\nHost: a.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            .await;
        assert_eq!(status, 100, "{engine}: 100 Continue before the body is sent");
        let (status, _, body) = conn.exchange(b"12345").await;
        assert_eq!((status, body.as_str()), (200, "12345"), "{engine}: body after 100 Continue");

        let hop = b"GET /h HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n\
                    Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Kept: k\r\n\r\n";
        let (status, _, body) = conn.exchange(hop).await;
        assert_eq!(status, 200, "{engine}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let headers = json["headers"].as_object().unwrap();
        for gone in ["x-secret", "keep-alive", "proxy-connection", "connection"] {
            assert!(!headers.contains_key(gone), "{engine}: {gone} must not reach the backend: {body}");
        }
        assert_eq!(headers["x-kept"], "k", "{engine}");

        let head = client().head(format!("http://{}/h", ferry.http)).header("host", "a.test").send().await.unwrap();
        assert_eq!(head.status(), 200, "{engine}: HEAD");
        assert_eq!(head.bytes().await.unwrap().len(), 0, "{engine}: HEAD has no body");

        let mut old = RawConn::open(ferry.http).await;
        let (status, head, body) = old.exchange(b"GET /h HTTP/1.0\r\nHost: a.test\r\n\r\n").await;
        assert_eq!(status, 200, "{engine}: HTTP/1.0");
        assert!(body.contains("\"version\":\"HTTP/1.0\"") || body.contains("\"version\":\"HTTP/1.1\""), "{body}");
        assert!(!head.contains("connection: keep-alive"), "{engine}: HTTP/1.0 without keep-alive is closed: {head}");
        assert_eq!(old.exchange(b"GET /h HTTP/1.1\r\nHost: a.test\r\n\r\n").await.0, 0, "{engine}: closed after 1.0");
    }
}

/// `sessionAffinity: ClientIP`: each client IP sticks to one endpoint — across table swaps — and
/// moves when the binding has been idle for the timeout or its endpoint goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_affinity_sticks_across_swaps_and_moves_on_timeout_or_removal() {
    let (a, b) = (echo("127.0.0.2", "web").await, echo("127.0.0.3", "web").await);
    let sticky = |eps: &[std::net::SocketAddr]| {
        service("web", eps).replacen(
            "spec:\n  ports:",
            "spec:\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 1}}\n  ports:",
            1,
        )
    };
    let files = docs(&[sticky(&[a, b]), ingress("i", &[("a.test", "Prefix", "/", "web")])]);
    let ferry = Ferry::start(&[("a.yaml", files)], &[]).await;
    let from = |ip: &str| {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let (one, two) = (from("127.0.0.4"), from("127.0.0.5"));
    let endpoint = |c: &reqwest::Client| {
        let req = c.get(format!("http://{}/", ferry.http)).header("host", "a.test");
        async move { Reply::read(req.send().await.unwrap()).await.endpoint().to_string() }
    };
    let bound = endpoint(&one).await;
    for _ in 0..5 {
        assert_eq!(endpoint(&one).await, bound, "one client, one endpoint");
        endpoint(&two).await;
    }
    // An unrelated change swaps the table; the binding survives it.
    ferry.write("b.yaml", &ingress("other", &[("b.test", "Prefix", "/", "web")]));
    eventually("the swap is live", || async { ferry.get("b.test", "/").await.status == 200 }).await;
    assert_eq!(endpoint(&one).await, bound, "affinity survives a table swap");

    // Idle past the timeout: the next request makes a new binding (round-robin moves it on).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let rebound = endpoint(&one).await;
    assert_ne!(rebound, bound, "binding expired after 1 s idle");
    assert_eq!(endpoint(&one).await, rebound);

    // The bound endpoint goes away: the client moves to the one that is left.
    let remaining = if rebound == a.to_string() { b } else { a };
    let files = docs(&[sticky(&[remaining]), ingress("i", &[("a.test", "Prefix", "/", "web")])]);
    ferry.write("a.yaml", &files);
    eventually("the client moves off the removed endpoint", || async { endpoint(&one).await == remaining.to_string() })
        .await;
}

/// `ferry.dev/read-timeout` on an Ingress bounds how long its backend may take to answer (504
/// after it); Ingresses without it keep the default. Checked on both HTTP/1 engines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeout_annotation_applies_per_ingress() {
    let web = echo("127.0.0.2", "web").await;
    let hurried = ingress("hurried", &[("fast.test", "Prefix", "/", "web")]).replacen(
        "metadata: {name: hurried, namespace: default}",
        "metadata: {name: hurried, namespace: default, annotations: {ferry.dev/read-timeout: 300ms}}",
        1,
    );
    let files = docs(&[service("web", &[web]), hurried, ingress("patient", &[("slow.test", "Prefix", "/", "web")])]);
    for engine in ["fast", "pingora"] {
        let ferry = Ferry::start(&[("a.yaml", files.clone())], &["--http1-engine", engine]).await;
        let routes = ferry.admin_get("/routes").await;
        assert!(routes.contains("\"read_timeout_ms\": 300"), "{routes}");
        let started = std::time::Instant::now();
        let r = ferry.get("fast.test", "/slow/2000").await;
        assert_eq!(r.status, 504, "{engine}: a backend slower than the route's read timeout: {}", r.body);
        assert!(
            started.elapsed() < std::time::Duration::from_millis(1500),
            "{engine}: gave up after {:?}",
            started.elapsed()
        );
        assert_eq!(ferry.get("slow.test", "/slow/700").await.status, 200, "{engine}: default timeout elsewhere");
    }
}

/// An EndpointSlice change moves every route to its Service at once, on both HTTP/1 engines. Two
/// Ingresses read one Service whose endpoints go from one pod to the other, to none (503 with the
/// reason) and to both; each change is made in the backend the routes share (the log says the
/// update compiled nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_move_every_route_to_the_service_at_once() {
    let (a, b) = (echo("127.0.0.2", "web").await, echo("127.0.0.3", "web").await);
    let routes = docs(&[
        ingress("one", &[("one.test", "Prefix", "/", "web")]),
        ingress("two", &[("two.test", "Prefix", "/", "web")]),
    ]);
    for engine in ["fast", "pingora"] {
        let files = [("web.yaml", service("web", &[a])), ("routes.yaml", routes.clone())];
        let ferry = Ferry::start(&files, &["--http1-engine", engine]).await;
        // Whether both hosts are answered by one of `eps` (503 and the reason when there is none).
        let on = |eps: Vec<std::net::SocketAddr>| {
            let ferry = &ferry;
            async move {
                for host in ["one.test", "two.test"] {
                    let r = ferry.get(host, "/").await;
                    let ok = if eps.is_empty() {
                        r.status == 503 && r.body.contains("no ready endpoints for default/web:80")
                    } else {
                        r.status == 200 && eps.iter().any(|ep| r.endpoint() == ep.to_string())
                    };
                    if !ok {
                        return false;
                    }
                }
                true
            }
        };
        assert!(on(vec![a]).await, "{engine}: both hosts on the first endpoint");
        for (i, eps) in [vec![b], vec![], vec![a, b]].into_iter().enumerate() {
            ferry.write("web.yaml", &service("web", &eps));
            eventually(&format!("{engine}: step {i}: both hosts on {eps:?}"), || on(eps.clone())).await;
        }
        let log = ferry.log();
        let stored: Vec<&str> = log.lines().filter(|l| l.contains("routing table stored")).collect();
        let in_place = stored.iter().filter(|l| l.contains("build=\"endpoints\"") || l.contains("build=endpoints"));
        assert_eq!(in_place.count(), 3, "{engine}: every endpoint change made in place\n{log}");
        assert!(!stored.iter().any(|l| l.contains("partial")), "{engine}: nothing recompiled\n{log}");
    }
}

/// The binary (built with mimalloc, the default) runs with transparent huge pages off: mimalloc
/// advises 2 MiB pages, which the kernel zeroes whole, and with them a gateway under load held
/// half as much memory again. Kernels that do not report the flag (before 6.x) are not checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_runs_without_transparent_huge_pages() {
    let (ferry, _web) = Ferry::one_route("web").await;
    assert_eq!(ferry.get("a.test", "/").await.status, 200);
    let status = std::fs::read_to_string(format!("/proc/{}/status", ferry.pid())).expect("/proc status");
    let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) else {
        eprintln!("this kernel does not report THP_enabled; not checked");
        return;
    };
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}
