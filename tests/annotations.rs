//! Typed annotations end to end: HTTPS redirect, prefix rewrite, backend protocol fallback, and
//! nginx annotations taken (or reported) with `--nginx-annotations`; misspelled keys and
//! protection values that do not parse refuse the Ingress, header values with control characters
//! are not used.

mod support;

use support::*;

fn annotated(name: &str, host: &str, path: &str, svc: &str, annotations: &str) -> String {
    ingress(name, &[(host, "Prefix", path, svc)])
        .replace("namespace: default}", &format!("namespace: default, annotations: {{{annotations}}}}}"))
}

fn json(r: &Reply) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {} {}", r.status, r.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_rewrite_and_backend_protocol() {
    let web = echo("127.0.0.2", "web").await;
    let secret =
        ferry_echo::tls_secret_manifest("default", "cert", &["secure.test".into(), "open.test".into()]).unwrap();
    let files = docs(&[
        service("web", &[web]),
        secret.0,
        format!(
            "{}  tls:\n  - hosts: [secure.test]\n    secretName: cert\n",
            ingress("secure", &[("secure.test", "Prefix", "/", "web")])
        ),
        format!(
            "{}  tls:\n  - hosts: [open.test]\n    secretName: cert\n",
            annotated("open", "open.test", "/", "web", "ferry.dev/ssl-redirect: \"false\"")
        ),
        annotated("api", "api.test", "/api", "web", "ferry.dev/rewrite-target: /v2"),
        annotated("h2", "h2.test", "/", "web", "ferry.dev/backend-protocol: h2c"),
    ]);
    let ferry = Ferry::start(&[("a.yaml", files)], &[]).await;

    // Plain HTTP to a TLS host: 308 to HTTPS, path and query kept; HTTPS itself is served.
    let mut raw = RawConn::open(ferry.http).await;
    let (status, head, _) = raw.exchange(b"GET /cart?id=7 HTTP/1.1\r\nHost: secure.test:8080\r\n\r\n").await;
    assert_eq!(status, 308, "{head}");
    assert!(head.contains("location: https://secure.test/cart?id=7"), "{head}");
    let (r, _) = get_tls(ferry.https, "secure.test", &[&secret.1], false).await.unwrap();
    assert_eq!(r.status, 200);
    // Opted out: plain HTTP is served.
    assert_eq!(ferry.get("open.test", "/").await.status, 200);
    // Hosts without TLS are never redirected.
    assert_eq!(json(&ferry.get("api.test", "/api/items?q=1").await)["path"], "/v2/items?q=1", "prefix rewritten");
    assert_eq!(json(&ferry.get("api.test", "/api").await)["path"], "/v2");
    // No appProtocol on the Service: the annotation chooses h2c.
    assert_eq!(json(&ferry.get("h2.test", "/").await)["version"], "HTTP/2.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_annotations_with_and_without_the_flag() {
    let web = echo("127.0.0.2", "web").await;
    let nginx = "nginx.ingress.kubernetes.io/rewrite-target: /, nginx.ingress.kubernetes.io/proxy-body-size: 1k, \
                 nginx.ingress.kubernetes.io/configuration-snippet: \"more_set_headers 'x: y'\"";
    let files = docs(&[service("web", &[web]), annotated("legacy", "legacy.test", "/shop", "web", nginx)]);

    let honoured = Ferry::start(&[("a.yaml", files.clone())], &["--nginx-annotations"]).await;
    assert_eq!(json(&honoured.get("legacy.test", "/shop/item").await)["path"], "/item");
    let big = client()
        .post(format!("http://{}/shop/echo-body", honoured.http))
        .header("host", "legacy.test")
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    assert!(honoured.log().contains("configuration-snippet") && honoured.log().contains("not supported"));

    let ignored = Ferry::start(&[("a.yaml", files)], &[]).await;
    assert_eq!(json(&ignored.get("legacy.test", "/shop/item").await)["path"], "/shop/item");
    assert!(ignored.log().contains("ferry reads nginx annotations only with --nginx-annotations"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_response_headers() {
    let web = echo("127.0.0.2", "web").await;
    let files = docs(&[
        service("web", &[web]),
        annotated(
            "api",
            "api.test",
            "/",
            "web",
            "ferry.dev/cors-allow-origin: \"https://app.test\", ferry.dev/cors-expose-headers: X-Echo-Service",
        ),
    ]);
    let ferry = Ferry::start(&[("a.yaml", files)], &[]).await;
    let c = client();
    let preflight = |origin: &'static str| {
        c.request(reqwest::Method::OPTIONS, format!("http://{}/items", ferry.http))
            .header("host", "api.test")
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .send()
    };
    // Preflight from an allowed origin: answered by ferry, not the backend.
    let r = preflight("https://app.test").await.unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.test");
    assert!(h["access-control-allow-methods"].to_str().unwrap().contains("PUT"));
    assert_eq!(h["access-control-max-age"], "86400");
    assert_eq!(h["vary"], "Origin");
    assert!(h.get("x-echo-service").is_none(), "not forwarded");
    // From another origin: no permission granted.
    let r = preflight("https://evil.test").await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // An actual request: the backend's answer carries the CORS headers.
    let r = c
        .get(format!("http://{}/items", ferry.http))
        .header("host", "api.test")
        .header("origin", "https://app.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.test");
    assert_eq!(r.headers()["access-control-expose-headers"], "X-Echo-Service");
    assert_eq!(r.headers()["x-echo-service"], "web");
    // Without Origin, nothing is added.
    assert!(ferry.get("api.test", "/items").await.header("access-control-allow-origin").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_affinity_pins_clients_to_endpoints() {
    let eps = [echo("127.0.0.2", "web").await, echo("127.0.0.3", "web").await, echo("127.0.0.4", "web").await];
    let files = docs(&[
        service("web", &eps),
        annotated(
            "sticky",
            "s.test",
            "/",
            "web",
            "ferry.dev/affinity: cookie, ferry.dev/affinity-cookie-max-age: \"3600\"",
        ),
    ]);
    let ferry = Ferry::start(&[("a.yaml", files)], &[]).await;
    let get = |cookie: Option<String>| {
        let mut req = client().get(format!("http://{}/", ferry.http)).header("host", "s.test");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        async move {
            let r = req.send().await.unwrap();
            let set = r.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_string());
            (Reply::read(r).await.endpoint().to_string(), set)
        }
    };
    // The first answer sets the cookie; with it every request lands on the same endpoint, and no
    // new cookie is sent.
    let (first, set) = get(None).await;
    let set = set.expect("a cookie is set");
    assert!(set.starts_with("ferry-affinity=") && set.contains("Max-Age=3600") && set.contains("HttpOnly"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    for _ in 0..9 {
        let (ep, again) = get(Some(format!("lang=en; {cookie}"))).await;
        assert_eq!(ep, first);
        assert!(again.is_none(), "no new cookie while the binding holds");
    }
    // Without the cookie, requests spread; a cookie naming no endpoint is replaced.
    let spread: std::collections::BTreeSet<String> =
        futures_util::future::join_all((0..9).map(|_| get(None))).await.into_iter().map(|(ep, _)| ep).collect();
    assert_eq!(spread.len(), 3);
    let (_, replaced) = get(Some("ferry-affinity=0123456789abcdef".into())).await;
    assert!(replaced.is_some_and(|c| c.starts_with("ferry-affinity=")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_by_weight_and_header() {
    let (stable, next) = (echo("127.0.0.2", "stable").await, echo("127.0.0.3", "next").await);
    let files = docs(&[
        service("stable", &[stable]),
        service("next", &[next]),
        ingress("main", &[("c.test", "Prefix", "/", "stable")]),
        annotated(
            "canary",
            "c.test",
            "/",
            "next",
            "ferry.dev/canary: \"true\", ferry.dev/canary-weight: \"25\", ferry.dev/canary-header: X-Canary",
        ),
        annotated("orphan", "none.test", "/", "next", "ferry.dev/canary: \"true\""),
    ]);
    let ferry = Ferry::start(&[("a.yaml", files)], &[]).await;
    let with_header = |v: &'static str| {
        let req = client().get(format!("http://{}/", ferry.http)).header("host", "c.test").header("x-canary", v);
        async move { Reply::read(req.send().await.unwrap()).await.service().to_string() }
    };
    for _ in 0..5 {
        assert_eq!(with_header("always").await, "next");
        assert_eq!(with_header("never").await, "stable");
    }
    // By weight: about a quarter.
    let mut to_canary = 0;
    for _ in 0..400 {
        if ferry.get("c.test", "/").await.service() == "next" {
            to_canary += 1;
        }
    }
    assert!((60..=140).contains(&to_canary), "{to_canary} of 400 to the canary at 25%");
    // The canary counts under its own Ingress; one without a main route is reported, not served.
    let metrics = ferry.admin_get("/metrics").await;
    assert!(metrics.contains("ferry_requests_total{route=\"default/canary\",code=\"2xx\"}"), "{metrics}");
    assert_eq!(ferry.get("none.test", "/").await.status, 404);
    assert!(ferry.log().contains("canary: no Ingress serves"), "{}", ferry.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_app_root_and_forced_https() {
    let web = echo("127.0.0.2", "web").await;
    let files = docs(&[
        service("web", &[web]),
        annotated("moved", "old.test", "/", "web", "ferry.dev/redirect: \"https://new.test/welcome\""),
        annotated(
            "moved-api",
            "old.test",
            "/api",
            "web",
            "ferry.dev/redirect: /v2/api, ferry.dev/redirect-code: \"308\"",
        ),
        annotated("root", "app.test", "/", "web", "ferry.dev/app-root: /dashboard"),
        annotated("forced", "forced.test", "/", "web", "ferry.dev/force-ssl-redirect: \"true\""),
        annotated(
            "bad",
            "bad.test",
            "/",
            "web",
            "ferry.dev/redirect: \"https://new.test$request_uri\", ferry.dev/app-root: dashboard",
        ),
    ]);
    let ferry = Ferry::start(&[("a.yaml", files)], &[]).await;
    let mut raw = RawConn::open(ferry.http).await;
    // The route's redirect answers every request with the location as written (the path is not
    // appended); a body the client sent is not mistaken for the next request.
    let (status, head, _) = raw
        .exchange(b"POST /cart?id=7 HTTP/1.1\r\nHost: old.test\r\nContent-Length: 22\r\n\r\nGET /smuggled HTTP/1.1")
        .await;
    assert_eq!(status, 301, "{head}");
    assert!(head.contains("\r\nlocation: https://new.test/welcome\r\n"), "{head}");
    let (status, head, _) = raw.exchange(b"GET /api/x HTTP/1.1\r\nHost: old.test\r\n\r\n").await;
    if status != 0 {
        assert_eq!(status, 308, "{head}");
        assert!(head.contains("\r\nlocation: /v2/api\r\n"), "{head}");
    }
    let mut raw = RawConn::open(ferry.http).await;
    let (status, head, _) = raw.exchange(b"GET /api/x HTTP/1.1\r\nHost: old.test\r\n\r\n").await;
    assert_eq!(status, 308, "{head}");
    assert!(head.contains("\r\nlocation: /v2/api\r\n"), "{head}");
    // The app root: only `/` is redirected (302), everything else is proxied.
    let (status, head, _) = raw.exchange(b"GET /?tab=1 HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    assert_eq!(status, 302, "{head}");
    assert!(head.contains("\r\nlocation: /dashboard\r\n"), "{head}");
    assert_eq!(json(&ferry.get("app.test", "/dashboard").await)["path"], "/dashboard");
    assert_eq!(json(&ferry.get("app.test", "/x").await)["path"], "/x");
    // Forced HTTPS: redirected although the Ingress has no TLS section.
    let (status, head, _) = raw.exchange(b"GET /a?b=1 HTTP/1.1\r\nHost: forced.test:8080\r\n\r\n").await;
    assert_eq!(status, 308, "{head}");
    assert!(head.contains("\r\nlocation: https://forced.test/a?b=1\r\n"), "{head}");
    // Bad values are reported with their annotation and change nothing: the route is proxied.
    assert_eq!(json(&ferry.get("bad.test", "/").await)["path"], "/");
    let log = ferry.log();
    assert!(
        log.contains("metadata.annotations[ferry.dev/redirect]") && log.contains("$request_uri are not expanded"),
        "{log}"
    );
    assert!(log.contains("metadata.annotations[ferry.dev/app-root]") && log.contains("must start with"), "{log}");
    // `/routes` shows what each route does.
    let routes = serde_json::from_str::<serde_json::Value>(&ferry.admin_get("/routes").await).unwrap().to_string();
    for want in [
        "\"redirect\":\"301 https://new.test/welcome\"",
        "\"redirect\":\"308 /v2/api\"",
        "\"app_root\":\"/dashboard\"",
        "\"force_ssl_redirect\":true",
    ] {
        assert!(routes.contains(want), "{want} in {routes}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_redirect_annotations_migrate_unchanged() {
    let web = echo("127.0.0.2", "web").await;
    let files = docs(&[
        service("web", &[web]),
        annotated(
            "perm",
            "perm.test",
            "/",
            "web",
            "nginx.ingress.kubernetes.io/permanent-redirect: \"https://new.test/\", \
             nginx.ingress.kubernetes.io/permanent-redirect-code: \"308\"",
        ),
        annotated(
            "temp",
            "temp.test",
            "/",
            "web",
            "nginx.ingress.kubernetes.io/temporal-redirect: \"https://maintenance.test/\", \
             nginx.ingress.kubernetes.io/permanent-redirect: \"https://new.test/\"",
        ),
        annotated("root", "root.test", "/", "web", "nginx.ingress.kubernetes.io/app-root: /app"),
        annotated("forced", "forced.test", "/", "web", "nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\""),
    ]);
    let ferry = Ferry::start(&[("a.yaml", files)], &["--nginx-annotations"]).await;
    let mut raw = RawConn::open(ferry.http).await;
    for (host, path, status, location) in [
        ("perm.test", "/x", 308, "https://new.test/"),
        ("temp.test", "/x", 302, "https://maintenance.test/"),
        ("root.test", "/", 302, "/app"),
        ("forced.test", "/x", 308, "https://forced.test/x"),
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let (got, head, _) = raw.exchange(req.as_bytes()).await;
        assert_eq!(got, status, "{host}: {head}");
        assert!(head.contains(&format!("\r\nlocation: {location}\r\n")), "{host}: {head}");
    }
    assert_eq!(json(&ferry.get("root.test", "/app").await)["path"], "/app");
    assert!(!ferry.log().contains("not supported"), "{}", ferry.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misspelled_or_unparsable_protection_refuses_the_ingress() {
    let web = echo("127.0.0.2", "web").await;
    let typo = |ranges_key: &str| annotated("typo", "typo.test", "/", "web", &format!("{ranges_key}: 10.0.0.0/8"));
    let others = [
        service("web", &[web]),
        annotated("guarded", "guarded.test", "/", "web", "ferry.dev/allow-source-ranges: 10.0.0.0/8"),
        annotated("local", "local.test", "/", "web", "ferry.dev/allow-source-ranges: 127.0.0.0/8"),
        annotated("size", "size.test", "/", "web", "ferry.dev/max-body-size: 8 MB"),
        annotated("rps", "rps.test", "/", "web", "nginx.ingress.kubernetes.io/limit-rps: ten"),
    ];
    let files = docs(&[&others[..], &[typo("ferry.dev/allow-source-range")][..]].concat());
    let ferry = Ferry::start(&[("a.yaml", files)], &["--nginx-annotations"]).await;
    // The misspelled allow-list is not served at all (no route: 404), where ignoring the key
    // would serve everyone; the correctly spelled siblings apply theirs.
    assert_eq!(ferry.get("typo.test", "/").await.status, 404);
    assert_eq!(ferry.get("guarded.test", "/").await.status, 403);
    assert_eq!(ferry.get("local.test", "/").await.service(), "web");
    // Limits that do not parse: not served either, rather than served without a limit.
    assert_eq!(ferry.get("size.test", "/").await.status, 404);
    assert_eq!(ferry.get("rps.test", "/").await.status, 404);
    let log = ferry.log();
    for want in [
        "Ingress default/typo: metadata.annotations[ferry.dev/allow-source-range]: unknown annotation \
         ferry.dev/allow-source-range (did you mean ferry.dev/allow-source-ranges?); the Ingress is not served until it is fixed",
        "Ingress default/size: metadata.annotations[ferry.dev/max-body-size]: \"8 MB\" is not a size",
        "Ingress default/rps: metadata.annotations[nginx.ingress.kubernetes.io/limit-rps]: \"ten\" is not a number of requests",
    ] {
        assert!(log.contains(want), "{want:?} not in:\n{log}");
    }
    let metrics = ferry.admin_get("/metrics").await;
    assert!(metrics.contains("ferry_build_diagnostics{severity=\"error\"} 3"), "{metrics}");
    let routes = ferry.admin_get("/routes").await;
    assert!(
        routes.contains("guarded.test") && !routes.contains("typo.test") && !routes.contains("size.test"),
        "{routes}"
    );

    // Fixed, it is served with its allow-list.
    ferry.write("a.yaml", &docs(&[&others[..], &[typo("ferry.dev/allow-source-ranges")][..]].concat()));
    eventually("the fixed Ingress is served", || async { ferry.get("typo.test", "/").await.status == 403 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_values_with_control_characters_leave_cors_off() {
    let web = echo("127.0.0.2", "web").await;
    let files = docs(&[
        service("web", &[web]),
        annotated(
            "broken",
            "broken.test",
            "/",
            "web",
            "ferry.dev/cors-allow-origin: \"https://app.test\", ferry.dev/cors-allow-headers: \"X-A\\r\\nX-Injected: 1\"",
        ),
        annotated(
            "fine",
            "fine.test",
            "/",
            "web",
            "ferry.dev/cors-allow-origin: \"https://app.test\", ferry.dev/cors-allow-headers: \"X-A,X-B\"",
        ),
    ]);
    for engine in ["fast", "pingora"] {
        let ferry = Ferry::start(&[("a.yaml", files.clone())], &["--http1-engine", engine]).await;
        let preflight = |host: &'static str| {
            client()
                .request(reqwest::Method::OPTIONS, format!("http://{}/items", ferry.http))
                .header("host", host)
                .header("origin", "https://app.test")
                .header("access-control-request-method", "PUT")
                .header("access-control-request-headers", "x-a")
                .send()
        };
        // CORS is off on the broken route: the preflight is the backend's to answer, with no
        // permission granted, and never a 5xx or a dropped connection.
        let r = preflight("broken.test").await.unwrap_or_else(|e| panic!("{engine}: {e}"));
        assert!(r.status().is_success(), "{engine}: {}", r.status());
        let granted: Vec<_> = r.headers().keys().filter(|k| k.as_str().starts_with("access-control-")).collect();
        assert!(granted.is_empty(), "{engine}: {granted:?}");
        assert_eq!(Reply::read(r).await.service(), "web", "{engine}");
        let r = client()
            .get(format!("http://{}/items", ferry.http))
            .header("host", "broken.test")
            .header("origin", "https://app.test")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{engine}");
        assert!(r.headers().get("access-control-allow-origin").is_none(), "{engine}");
        // A clean list is written back normalised.
        let r = preflight("fine.test").await.unwrap();
        assert_eq!(r.status(), 204, "{engine}");
        assert_eq!(r.headers()["access-control-allow-headers"], "X-A, X-B", "{engine}");
        let log = ferry.log();
        assert!(
            log.contains("Ingress default/broken: metadata.annotations[ferry.dev/cors-allow-headers]:")
                && log.contains("contains the control character")
                && log.contains("CORS stays off"),
            "{engine}: {log}"
        );
    }
}
