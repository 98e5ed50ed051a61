//! Gateway API end to end: the real binary in manifest mode, Gateways served on addresses of
//! their own (found in `/routes`), HTTPRoutes attached to them, echo backends on 127.0.0.x.
//!
//! Each test restates one or more of the upstream conformance tests (kubernetes-sigs/gateway-api
//! v1.6, `conformance/tests/`): the same objects, the same requests, the same expectations,
//! with ferry's own names for the namespaces (`infra`, `web`, `app`).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{echo, eventually, Ferry, Reply};

/// GatewayClass `ferry` (ours), the namespaces, and the base Gateways of the conformance suite.
fn base() -> String {
    r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ferry}
spec: {controllerName: ferry.dev/gateway-controller}
---
apiVersion: v1
kind: Namespace
metadata: {name: infra, labels: {gateway-conformance: infra}}
---
apiVersion: v1
kind: Namespace
metadata: {name: web, labels: {gateway-conformance: backend}}
---
apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {gateway-conformance: backend}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace, namespace: infra}
spec:
  gatewayClassName: ferry
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: all-namespaces, namespace: infra}
spec:
  gatewayClassName: ferry
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: backend-namespaces, namespace: infra}
spec:
  gatewayClassName: ferry
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {gateway-conformance: backend}}}}
"#
    .to_string()
}

/// A Service `ns/name` port 8080 (name `http`) with one ready endpoint.
fn svc(ns: &str, name: &str, ep: SocketAddr) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports:\n  - {{name: http, port: 8080}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports:\n- {{name: http, port: {}}}\nendpoints:\n- addresses: [\"{}\"]\n",
        ep.port(),
        ep.ip()
    )
}

/// Echo backends `infra-backend-v1..v3` in `infra`, `web-backend` in `web`, `app-backend-v1/v2`
/// in `app`; their Services.
async fn backends() -> String {
    let mut out = String::new();
    for (ip, ns, name) in [
        ("127.0.0.11", "infra", "infra-backend-v1"),
        ("127.0.0.12", "infra", "infra-backend-v2"),
        ("127.0.0.13", "infra", "infra-backend-v3"),
        ("127.0.0.14", "web", "web-backend"),
        ("127.0.0.15", "app", "app-backend-v1"),
        ("127.0.0.16", "app", "app-backend-v2"),
    ] {
        let ep = echo(ip, name).await;
        out += &svc(ns, name, ep);
    }
    out
}

async fn start(routes: &str) -> Ferry {
    let files = format!("{}{}\n---\n{routes}", base(), backends().await);
    Ferry::start(&[("gw.yaml", files)], &[]).await
}

/// The `/routes` JSON.
async fn routes(f: &Ferry) -> serde_json::Value {
    serde_json::from_str(&f.admin_get("/routes").await).expect("routes JSON")
}

/// The listener `gateway` (`ns/name`) / `listener` as `/routes` shows it, once it has an address.
async fn listener(f: &Ferry, gateway: &str, listener: &str) -> serde_json::Value {
    let (ns, name) = gateway.split_once('/').expect("ns/name");
    let mut found = serde_json::Value::Null;
    for _ in 0..400 {
        let r = routes(f).await;
        let gws = r["gateways"].as_array().cloned().unwrap_or_default();
        if let Some(l) = gws
            .iter()
            .filter(|g| g["namespace"] == ns && g["name"] == name)
            .flat_map(|g| g["listeners"].as_array().cloned().unwrap_or_default())
            .find(|l| l["name"] == listener)
        {
            found = l.clone();
            if l["address"].is_string() || l["programmed"] == false {
                return l;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("listener {gateway}/{listener} never got an address: {found}\n{}", f.log());
}

async fn addr(f: &Ferry, gateway: &str, name: &str) -> SocketAddr {
    let l = listener(f, gateway, name).await;
    l["address"].as_str().unwrap_or_else(|| panic!("{gateway}/{name} not served: {l}")).parse().expect("address")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// A request to a Gateway address (`host` empty: the address itself).
async fn send(at: SocketAddr, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client().request(method, format!("http://{at}{path}"));
    if !host.is_empty() {
        req = req.header("host", host);
    }
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    Reply::read(req.send().await.expect("request")).await
}

async fn get(at: SocketAddr, host: &str, path: &str) -> Reply {
    send(at, "GET", host, path, &[]).await
}

/// `path` on `at` is served by `backend` (200, the echo's name), or answered `status`.
#[track_caller]
fn expect(r: &Reply, want: &str, what: &str) {
    match want.parse::<u16>() {
        Ok(status) => assert_eq!(r.status, status, "{what}: {} {}", r.status, r.body),
        Err(_) => {
            assert_eq!(r.status, 200, "{what}: {}", r.body);
            assert_eq!(r.service(), want, "{what}: {}", r.body);
        }
    }
}

/// HTTPRouteSimpleSameNamespace, HTTPRouteMultipleGateways: two Gateways both on port 80 are two
/// addresses; a route attached to one is never served on the other; an Ingress keeps the main
/// listener.
#[tokio::test]
async fn gateways_on_one_port_are_separate_addresses() {
    let f = start(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shared-host, namespace: infra}
spec:
  ingressClassName: ferry
  rules:
  - host: shared.test
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: infra-backend-v1, port: {number: 8080}}}}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shared-host, namespace: infra}
spec:
  parentRefs: [{name: all-namespaces}]
  hostnames: [shared.test]
  rules: [{backendRefs: [{name: infra-backend-v2, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: multiple-gateways-shared-route, namespace: infra}
spec:
  parentRefs: [{name: same-namespace}, {name: all-namespaces}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /shared}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: same-namespace-dedicated-route, namespace: infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: all-namespaces-dedicated-route, namespace: infra}
spec:
  parentRefs: [{name: all-namespaces}]
  rules:
  - backendRefs: [{name: infra-backend-v3, port: 8080}]
"#,
    )
    .await;
    let same = addr(&f, "infra/same-namespace", "http").await;
    let all = addr(&f, "infra/all-namespaces", "http").await;
    assert_ne!(same, all);
    assert_ne!(same, f.http);
    expect(&get(same, "", "/shared").await, "infra-backend-v1", "same /shared");
    expect(&get(same, "", "/").await, "infra-backend-v2", "same /");
    expect(&get(all, "", "/shared").await, "infra-backend-v1", "all /shared");
    expect(&get(all, "", "/").await, "infra-backend-v3", "all /");
    // The Ingress listener serves none of it; an Ingress and an HTTPRoute for the same host are
    // each served on their own address.
    expect(&f.get("any.test", "/shared").await, "404", "ingress listener");
    expect(&f.get("shared.test", "/").await, "infra-backend-v1", "the Ingress on the main listener");
    expect(&get(all, "shared.test", "/").await, "infra-backend-v2", "the HTTPRoute on its Gateway");
    expect(&get(same, "shared.test", "/").await, "infra-backend-v2", "same-namespace's catch-all route");
    let l = listener(&f, "infra/same-namespace", "http").await;
    assert_eq!(l["port"], 80);
    assert_eq!(l["protocol"], "HTTP");
    assert_eq!(l["attached_routes"], 2, "{l}");
    let backend_ns = listener(&f, "infra/backend-namespaces", "http").await;
    assert_eq!(backend_ns["attached_routes"], 0, "{backend_ns}");
}

/// HTTPRouteExactPathMatching, HTTPRoutePathMatchOrder.
#[tokio::test]
async fn exact_paths_and_path_match_order() {
    let f = start(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: exact-matching, namespace: infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: Exact, value: /one}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: Exact, value: /two}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: path-matching-order, namespace: infra}
spec:
  parentRefs: [{name: all-namespaces}]
  rules:
  - matches: [{path: {type: Exact, value: /match}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: Exact, value: /match/exact}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: Exact, value: /match/exact/one}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /match/}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /match/prefix/}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /match/prefix/one}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
"#,
    )
    .await;
    let gw = addr(&f, "infra/same-namespace", "http").await;
    for (path, want) in [
        ("/one", "infra-backend-v1"),
        ("/two", "infra-backend-v2"),
        ("/", "404"),
        ("/one/example", "404"),
        ("/two/", "404"),
        ("/Two", "404"),
    ] {
        expect(&get(gw, "", path).await, want, path);
    }
    let gw = addr(&f, "infra/all-namespaces", "http").await;
    for (path, want) in [
        ("/match/exact/one", "infra-backend-v3"),
        ("/match/exact", "infra-backend-v2"),
        ("/match", "infra-backend-v1"),
        ("/match/prefix/one/any", "infra-backend-v2"),
        ("/match/prefix/any", "infra-backend-v1"),
        ("/match/any", "infra-backend-v3"),
    ] {
        expect(&get(gw, "", path).await, want, path);
    }
}

/// HTTPRouteHeaderMatching, HTTPRouteMatching, HTTPRouteMatchingAcrossRoutes.
#[tokio::test]
async fn header_matches_and_precedence_across_rules_and_routes() {
    let f = start(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: header-matching, namespace: infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{headers: [{name: version, value: one}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: version, value: two}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{headers: [{name: version, value: two}, {name: color, value: orange}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: color, value: blue}]}, {headers: [{name: color, value: green}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: color, value: red}]}, {headers: [{name: color, value: yellow}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching, namespace: infra, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: all-namespaces}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching-part1, namespace: infra}
spec:
  parentRefs: [{name: backend-namespaces}]
  hostnames: [example.com, example.net]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching-part2, namespace: web}
spec:
  parentRefs: [{name: backend-namespaces, namespace: infra}]
  hostnames: [example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]
    backendRefs: [{name: web-backend, port: 8080}]
"#,
    )
    .await;
    let gw = addr(&f, "infra/same-namespace", "http").await;
    for (headers, want) in [
        (vec![("Version", "one")], "infra-backend-v1"),
        (vec![("Version", "two")], "infra-backend-v2"),
        (vec![("Version", "two"), ("Color", "orange")], "infra-backend-v1"),
        (vec![("Version", "two"), ("Color", "blue")], "infra-backend-v2"),
        (vec![("Color", "orange")], "404"),
        (vec![("Some-Other-Header", "one")], "404"),
        (vec![("Color", "blue")], "infra-backend-v1"),
        (vec![("Color", "green")], "infra-backend-v1"),
        (vec![("Color", "red")], "infra-backend-v2"),
        (vec![("Color", "yellow")], "infra-backend-v2"),
        (vec![("Color", "purple")], "404"),
    ] {
        expect(&send(gw, "GET", "", "/", &headers).await, want, &format!("{headers:?}"));
    }
    let gw = addr(&f, "infra/all-namespaces", "http").await;
    for (path, headers, want) in [
        ("/", vec![], "infra-backend-v1"),
        ("/example", vec![], "infra-backend-v1"),
        ("/", vec![("Version", "one")], "infra-backend-v1"),
        ("/v2", vec![], "infra-backend-v2"),
        ("/v2/example", vec![], "infra-backend-v2"),
        ("/", vec![("Version", "two")], "infra-backend-v2"),
        ("/v2/", vec![], "infra-backend-v2"),
        ("/v2example", vec![], "infra-backend-v1"),
        ("/foo/v2/example", vec![], "infra-backend-v1"),
    ] {
        expect(&send(gw, "GET", "", path, &headers).await, want, &format!("{path} {headers:?}"));
    }
    // Across routes (the second route lives in another namespace the listener selects).
    let gw = addr(&f, "infra/backend-namespaces", "http").await;
    for (host, path, headers, want) in [
        ("example.com", "/", vec![], "404"),
        ("example.com", "/v2", vec![], "web-backend"),
        ("example.com", "/", vec![("Version", "two")], "web-backend"),
    ] {
        expect(&send(gw, "GET", host, path, &headers).await, want, &format!("{host}{path} {headers:?}"));
    }
}

/// HTTPRouteQueryParamMatching and HTTPRouteMethodMatching.
#[tokio::test]
async fn query_param_and_method_matches() {
    let f = start(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: query-param-matching, namespace: infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{queryParams: [{name: animal, value: whale}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{queryParams: [{name: animal, value: dolphin}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches:
    - queryParams: [{name: animal, value: dolphin}, {name: color, value: blue}]
    - queryParams: [{name: ANIMAL, value: Whale}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /path1}, queryParams: [{name: animal, value: whale}]}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: version, value: one}], queryParams: [{name: animal, value: whale}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /path2}, headers: [{name: version, value: two}], queryParams: [{name: animal, value: whale}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches:
    - {path: {type: PathPrefix, value: /path3}, queryParams: [{name: animal, value: shark}]}
    - {path: {type: PathPrefix, value: /path4}, headers: [{name: version, value: three}], queryParams: [{name: animal, value: kraken}]}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /path5}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{queryParams: [{name: animal, value: hydra}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{headers: [{name: version, value: four}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: method-matching, namespace: infra}
spec:
  parentRefs: [{name: all-namespaces}]
  rules:
  - matches: [{method: POST}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{method: GET}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /path1}, method: GET}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{headers: [{name: version, value: one}], method: PUT}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /path2}, headers: [{name: version, value: two}], method: POST}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches:
    - {path: {type: PathPrefix, value: /path3}, method: PATCH}
    - {path: {type: PathPrefix, value: /path4}, headers: [{name: version, value: three}], method: DELETE}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /path5}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{method: PATCH}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{headers: [{name: version, value: four}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
"#,
    )
    .await;
    let gw = addr(&f, "infra/same-namespace", "http").await;
    for (path, headers, want) in [
        ("/?animal=whale", vec![], "infra-backend-v1"),
        ("/?animal=dolphin", vec![], "infra-backend-v2"),
        ("/?animal=dolphin&color=blue", vec![], "infra-backend-v3"),
        ("/?ANIMAL=Whale", vec![], "infra-backend-v3"),
        ("/?animal=whale&otherparam=irrelevant", vec![], "infra-backend-v1"),
        ("/?animal=dolphin&color=yellow", vec![], "infra-backend-v2"),
        ("/?color=blue", vec![], "404"),
        ("/?animal=dog", vec![], "404"),
        ("/?animal=whaledolphin", vec![], "404"),
        ("/", vec![], "404"),
        ("/path1?animal=whale", vec![], "infra-backend-v1"),
        ("/?animal=whale", vec![("version", "one")], "infra-backend-v2"),
        ("/path2?animal=whale", vec![("version", "two")], "infra-backend-v3"),
        ("/path3?animal=shark", vec![], "infra-backend-v1"),
        ("/path4?animal=kraken", vec![("version", "three")], "infra-backend-v1"),
        ("/?animal=shark", vec![], "404"),
        ("/path4?animal=kraken", vec![], "404"),
        ("/path5?animal=hydra", vec![], "infra-backend-v1"),
        ("/?animal=hydra", vec![("version", "four")], "infra-backend-v3"),
    ] {
        let r = send(gw, "GET", "", path, &headers).await;
        expect(&r, want, &format!("{path} {headers:?}"));
        if r.status == 200 {
            assert_eq!(r.json["path"], path, "the query goes upstream verbatim");
        }
    }
    let gw = addr(&f, "infra/all-namespaces", "http").await;
    for (method, path, headers, want) in [
        ("POST", "/", vec![], "infra-backend-v1"),
        ("GET", "/", vec![], "infra-backend-v2"),
        ("HEAD", "/", vec![], "404"),
        ("GET", "/path1", vec![], "infra-backend-v1"),
        ("PUT", "/", vec![("version", "one")], "infra-backend-v2"),
        ("POST", "/path2", vec![("version", "two")], "infra-backend-v3"),
        ("PATCH", "/path3", vec![], "infra-backend-v1"),
        ("DELETE", "/path4", vec![("version", "three")], "infra-backend-v1"),
        ("PUT", "/", vec![], "404"),
        ("DELETE", "/path4", vec![], "404"),
        ("PATCH", "/path5", vec![], "infra-backend-v1"),
        ("PATCH", "/", vec![("version", "four")], "infra-backend-v2"),
    ] {
        let r = send(gw, method, "", path, &headers).await;
        if method == "HEAD" {
            assert_eq!(r.status, 404, "HEAD /");
            continue;
        }
        expect(&r, want, &format!("{method} {path} {headers:?}"));
        if r.status == 200 {
            assert_eq!(r.json["method"], method);
        }
    }
}

/// HTTPRouteHostnameIntersection and HTTPRouteListenerHostnameMatching (and listener
/// isolation: a request for a host a more specific listener names is that listener's alone).
#[tokio::test]
async fn hostnames_intersect_with_listener_hostnames() {
    let f = start(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: httproute-hostname-intersection, namespace: infra}
spec:
  gatewayClassName: ferry
  listeners:
  - {name: listener-1, hostname: very.specific.com, port: 80, protocol: HTTP}
  - {name: listener-2, hostname: "*.wildcard.io", port: 80, protocol: HTTP}
  - {name: listener-3, hostname: "*.anotherwildcard.io", port: 80, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: specific-host-matches-listener-specific-host, namespace: infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection, namespace: infra}]
  hostnames: [non.matching.com, "*.nonmatchingwildcard.io", very.specific.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /s1}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: specific-host-matches-listener-wildcard-host, namespace: infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection, namespace: infra}]
  hostnames: [non.matching.com, wildcard.io, foo.wildcard.io, bar.wildcard.io, foo.bar.wildcard.io]
  rules:
  - matches: [{path: {type: PathPrefix, value: /s2}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wildcard-host-matches-listener-specific-host, namespace: infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection, namespace: infra}]
  hostnames: [non.matching.com, "*.specific.com"]
  rules:
  - matches: [{path: {type: PathPrefix, value: /s3}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wildcard-host-matches-listener-wildcard-host, namespace: infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection, namespace: infra}]
  hostnames: ["*.anotherwildcard.io"]
  rules:
  - matches: [{path: {type: PathPrefix, value: /s4}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: no-intersecting-hosts, namespace: infra}
spec:
  parentRefs: [{name: httproute-hostname-intersection, namespace: infra}]
  hostnames: [specific.but.wrong.com, wildcard.io]
  rules:
  - matches: [{path: {type: PathPrefix, value: /s5}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: httproute-listener-hostname-matching, namespace: infra}
spec:
  gatewayClassName: ferry
  listeners:
  - {name: listener-1, hostname: bar.com, port: 80, protocol: HTTP}
  - {name: listener-2, hostname: foo.bar.com, port: 80, protocol: HTTP}
  - {name: listener-3, hostname: "*.bar.com", port: 80, protocol: HTTP}
  - {name: listener-4, hostname: "*.foo.com", port: 80, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v1, namespace: infra}
spec:
  parentRefs: [{name: httproute-listener-hostname-matching, namespace: infra, sectionName: listener-1}]
  rules:
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v2, namespace: infra}
spec:
  parentRefs: [{name: httproute-listener-hostname-matching, namespace: infra, sectionName: listener-2}]
  rules:
  - backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend-v3, namespace: infra}
spec:
  parentRefs:
  - {name: httproute-listener-hostname-matching, namespace: infra, sectionName: listener-3}
  - {name: httproute-listener-hostname-matching, namespace: infra, sectionName: listener-4}
  rules:
  - backendRefs: [{name: infra-backend-v3, port: 8080}]
"#,
    )
    .await;
    let gw = addr(&f, "infra/httproute-hostname-intersection", "listener-1").await;
    assert_eq!(gw, addr(&f, "infra/httproute-hostname-intersection", "listener-2").await, "one port, one address");
    for (host, path, want) in [
        ("very.specific.com", "/s1", "infra-backend-v1"),
        ("very.specific.com:1234", "/s1", "infra-backend-v1"),
        ("non.matching.com", "/s1", "404"),
        ("foo.nonmatchingwildcard.io", "/s1", "404"),
        ("foo.wildcard.io", "/s1", "404"),
        ("very.specific.com", "/non-matching-prefix", "404"),
        ("foo.wildcard.io", "/s2", "infra-backend-v2"),
        ("bar.wildcard.io", "/s2", "infra-backend-v2"),
        ("foo.bar.wildcard.io", "/s2", "infra-backend-v2"),
        ("non.matching.com", "/s2", "404"),
        ("wildcard.io", "/s2", "404"),
        ("very.specific.com", "/s2", "404"),
        ("very.specific.com", "/s3", "infra-backend-v3"),
        ("non.matching.com", "/s3", "404"),
        ("foo.specific.com", "/s3", "404"),
        ("foo.wildcard.io", "/s3", "404"),
        ("foo.anotherwildcard.io", "/s4", "infra-backend-v1"),
        ("bar.anotherwildcard.io", "/s4", "infra-backend-v1"),
        ("foo.bar.anotherwildcard.io", "/s4", "infra-backend-v1"),
        ("anotherwildcard.io", "/s4", "404"),
        ("foo.wildcard.io", "/s4", "404"),
        ("very.specific.com", "/s4", "404"),
        ("specific.but.wrong.com", "/s5", "404"),
        ("wildcard.io", "/s5", "404"),
    ] {
        expect(&get(gw, host, path).await, want, &format!("{host}{path}"));
    }
    let counts: Vec<serde_json::Value> = {
        let mut v = Vec::new();
        for l in ["listener-1", "listener-2", "listener-3"] {
            v.push(listener(&f, "infra/httproute-hostname-intersection", l).await["attached_routes"].clone());
        }
        v
    };
    assert_eq!(counts, [2, 1, 1], "the route with no intersecting host is not counted");
    let check = ferry_check(&f).await;
    assert!(
        check.contains("no-intersecting-hosts") && check.contains("NoMatchingListenerHostname"),
        "located diagnostic: {check}"
    );

    let gw = addr(&f, "infra/httproute-listener-hostname-matching", "listener-1").await;
    for (host, want) in [
        ("bar.com", "infra-backend-v1"),
        ("foo.bar.com", "infra-backend-v2"),
        ("baz.bar.com", "infra-backend-v3"),
        ("boo.bar.com", "infra-backend-v3"),
        ("multiple.prefixes.bar.com", "infra-backend-v3"),
        ("multiple.prefixes.foo.com", "infra-backend-v3"),
        ("foo.com", "404"),
        ("no.matching.host", "404"),
    ] {
        expect(&get(gw, host, "/").await, want, host);
    }
}

/// Sends `request` as bytes and returns what came back until the server closed or paused.
async fn raw_request(at: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(at).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `ferry check` over the test's manifests.
async fn ferry_check(f: &Ferry) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["check", "--manifests"])
        .arg(f.manifests())
        .output()
        .await
        .expect("ferry check");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// HTTPRouteRequestHeaderModifier, HTTPRouteBackendRequestHeaderModifier,
/// HTTPRouteResponseHeaderModifier, HTTPRouteRequestHeaderModifierBackendWeights.
#[tokio::test]
async fn header_modifiers_on_requests_and_responses() {
    let modifier = |kind: &str| {
        format!(
            r#"
  - matches: [{{path: {{type: PathPrefix, value: /set}}}}]
    filters: [{{type: {kind}, {field}: {{set: [{{name: X-Header-Set, value: set-overwrites-values}}]}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /add}}}}]
    filters: [{{type: {kind}, {field}: {{add: [{{name: X-Header-Add, value: add-appends-values}}]}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /remove}}}}]
    filters: [{{type: {kind}, {field}: {{remove: [X-Header-Remove]}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /case-insensitivity}}}}]
    filters: [{{type: {kind}, {field}: {{set: [{{name: X-Header-Set, value: header-set}}], add: [{{name: X-Header-Add, value: header-add}}], remove: [X-Header-Remove]}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
"#,
            field = if kind == "RequestHeaderModifier" { "requestHeaderModifier" } else { "responseHeaderModifier" }
        )
    };
    let routes = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: request-header-modifier, namespace: infra}}
spec:
  parentRefs: [{{name: same-namespace}}]
  rules:{}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: response-header-modifier, namespace: infra}}
spec:
  parentRefs: [{{name: all-namespaces}}]
  rules:{}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: request-header-modifier-backend-weights, namespace: web}}
spec:
  parentRefs: [{{name: backend-namespaces, namespace: infra}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /weights}}}}]
    backendRefs:
    - name: app-backend-v1
      namespace: app
      port: 8080
      weight: 10
      filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: Backend, value: app-backend-v1}}]}}}}]
    - name: web-backend
      port: 8080
      weight: 10
      filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: Backend, value: web-backend}}]}}}}]
  - matches: [{{path: {{type: PathPrefix, value: /set}}}}]
    backendRefs:
    - name: web-backend
      port: 8080
      filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: X-Header-Set, value: set-overwrites-values}}], add: [{{name: X-Header-Add, value: add-appends-values}}], remove: [X-Header-Remove]}}}}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: app-from-web, namespace: app}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}}]
  to: [{{group: "", kind: Service}}]
"#,
        modifier("RequestHeaderModifier"),
        modifier("ResponseHeaderModifier")
    );
    let f = start(&routes).await;
    let gw = addr(&f, "infra/same-namespace", "http").await;
    let r = send(gw, "GET", "", "/set", &[("Some-Other-Header", "val"), ("X-Header-Set", "some-other-value")]).await;
    assert_eq!((r.header("some-other-header"), r.header("x-header-set")), ("val", "set-overwrites-values"));
    let r = send(gw, "GET", "", "/add", &[("Some-Other-Header", "val"), ("X-Header-Add", "some-other-value")]).await;
    assert_eq!(r.header("x-header-add"), "some-other-value,add-appends-values");
    let r = send(gw, "GET", "", "/remove", &[("X-Header-Remove", "val")]).await;
    assert_eq!(r.status, 200);
    assert!(r.json["headers"].get("x-header-remove").is_none(), "{}", r.body);
    let r = send(
        gw,
        "GET",
        "",
        "/case-insensitivity",
        &[
            ("x-header-set", "original-val-set"),
            ("x-header-add", "original-val-add"),
            ("x-header-remove", "original-val-remove"),
            ("Another-Header", "another-header-val"),
        ],
    )
    .await;
    assert_eq!(r.header("x-header-set"), "header-set");
    assert_eq!(r.header("x-header-add"), "original-val-add,header-add");
    assert_eq!(r.header("another-header"), "another-header-val");
    assert!(r.json["headers"].get("x-header-remove").is_none());

    // Responses: the backend sets headers (X-Echo-Set-Header), the route edits them.
    let gw = addr(&f, "infra/all-namespaces", "http").await;
    let raw = |path: &str, set: &str| {
        let url = format!("http://{gw}{path}");
        let set = set.to_string();
        async move { client().get(url).header("X-Echo-Set-Header", set).send().await.expect("request") }
    };
    let joined = |r: &reqwest::Response, n: &str| {
        r.headers().get_all(n).iter().map(|v| v.to_str().unwrap_or("").to_string()).collect::<Vec<_>>().join(",")
    };
    let r = raw("/set", "Some-Other-Header:val,X-Header-Set:some-other-value").await;
    assert_eq!(
        (joined(&r, "some-other-header"), joined(&r, "x-header-set")),
        ("val".into(), "set-overwrites-values".into())
    );
    let r = raw("/add", "Some-Other-Header:val,X-Header-Add:some-other-value").await;
    assert_eq!(joined(&r, "x-header-add"), "some-other-value,add-appends-values");
    let r = raw("/remove", "X-Header-Remove:val").await;
    assert_eq!((r.status().as_u16(), joined(&r, "x-header-remove")), (200, String::new()));

    // Backend filters apply to their own backend only.
    let gw = addr(&f, "infra/backend-namespaces", "http").await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let r = get(gw, "", "/weights").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("backend"), r.service(), "each backend gets its own header: {}", r.body);
        seen.insert(r.service().to_string());
    }
    assert_eq!(seen.len(), 2, "both backends served: {seen:?}");
    let r = send(gw, "GET", "", "/set", &[("X-Header-Set", "x"), ("X-Header-Remove", "y")]).await;
    assert_eq!((r.header("x-header-set"), r.header("x-header-add")), ("set-overwrites-values", "add-appends-values"));
    assert!(r.json["headers"].get("x-header-remove").is_none());
}

/// HTTPRouteRedirectHostAndStatus, -Port, -Scheme, -Path, -PortAndScheme (the 80 and 8080
/// listeners: GatewayPort8080), HTTPRoute303/307/308Redirect.
#[tokio::test]
async fn redirects_are_built_from_the_request_and_the_listener() {
    let redirect = |path: &str, spec: &str| {
        format!("  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    filters: [{{type: RequestRedirect, requestRedirect: {spec}}}]\n")
    };
    let mut rules80 = String::new();
    for (p, s) in [
        ("/hostname-redirect", "{hostname: example.org}"),
        ("/host-and-status", "{statusCode: 301, hostname: example.org}"),
        ("/port", "{port: 8083}"),
        ("/port-and-host", "{hostname: example.org, port: 8083}"),
        ("/port-and-status", "{port: 8083, statusCode: 301}"),
        ("/scheme", "{scheme: https}"),
        ("/scheme-and-host", "{hostname: example.org, scheme: https}"),
        ("/scheme-and-status", "{scheme: https, statusCode: 301}"),
        ("/original-prefix", "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}"),
        ("/full", "{path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}"),
        (
            "/path-and-host",
            "{hostname: example.org, path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}",
        ),
        (
            "/full-path-and-status",
            "{path: {type: ReplaceFullPath, replaceFullPath: /replacement-full}, statusCode: 301}",
        ),
        ("/scheme-nil-and-port-nil", "{hostname: example.org}"),
        ("/scheme-nil-and-port-80", "{hostname: example.org, port: 80}"),
        ("/scheme-nil-and-port-8080", "{hostname: example.org, port: 8080}"),
        ("/scheme-https-and-port-nil", "{hostname: example.org, scheme: https}"),
        ("/scheme-https-and-port-443", "{hostname: example.org, scheme: https, port: 443}"),
        ("/scheme-https-and-port-8443", "{hostname: example.org, scheme: https, port: 8443}"),
        ("/redirect-303", "{hostname: example.org, statusCode: 303}"),
        ("/redirect-307", "{hostname: example.org, statusCode: 307}"),
        ("/redirect-308", "{hostname: example.org, statusCode: 308}"),
    ] {
        rules80 += &redirect(p, s);
    }
    let mut rules8080 = String::new();
    for (p, s) in [
        ("/scheme-nil-and-port-nil", "{hostname: example.org}"),
        ("/scheme-nil-and-port-80", "{hostname: example.org, port: 80}"),
        ("/scheme-https-and-port-nil", "{hostname: example.org, scheme: https}"),
    ] {
        rules8080 += &redirect(p, s);
    }
    let f = start(&format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: same-namespace-with-http-listener-on-8080, namespace: infra}}
spec:
  gatewayClassName: ferry
  listeners:
  - {{name: http, port: 8080, protocol: HTTP, allowedRoutes: {{namespaces: {{from: Same}}}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: http-route-for-listener-on-port-80, namespace: infra}}
spec:
  parentRefs: [{{name: same-namespace}}]
  rules:
{rules80}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: http-route-for-listener-on-port-8080, namespace: infra}}
spec:
  parentRefs: [{{name: same-namespace-with-http-listener-on-8080}}]
  rules:
{rules8080}"#
    ))
    .await;
    let gw = addr(&f, "infra/same-namespace", "http").await;
    let host = gw.ip().to_string();
    for (method, path, status, location) in [
        ("GET", "/hostname-redirect", 302, "http://example.org/hostname-redirect".to_string()),
        ("GET", "/host-and-status", 301, "http://example.org/host-and-status".into()),
        ("GET", "/port", 302, format!("http://{host}:8083/port")),
        ("GET", "/port-and-host", 302, "http://example.org:8083/port-and-host".into()),
        ("GET", "/port-and-status", 301, format!("http://{host}:8083/port-and-status")),
        ("GET", "/scheme", 302, format!("https://{host}/scheme")),
        ("GET", "/scheme-and-host", 302, "https://example.org/scheme-and-host".into()),
        ("GET", "/scheme-and-status", 301, format!("https://{host}/scheme-and-status")),
        ("GET", "/original-prefix/lemon", 302, format!("http://{host}/replacement-prefix/lemon")),
        ("GET", "/full/path/original", 302, format!("http://{host}/full-path-replacement")),
        ("GET", "/path-and-host", 302, "http://example.org/replacement-prefix".into()),
        ("GET", "/full-path-and-status", 301, format!("http://{host}/replacement-full")),
        ("GET", "/scheme-nil-and-port-nil", 302, "http://example.org/scheme-nil-and-port-nil".into()),
        ("GET", "/scheme-nil-and-port-80", 302, "http://example.org/scheme-nil-and-port-80".into()),
        ("GET", "/scheme-nil-and-port-8080", 302, "http://example.org:8080/scheme-nil-and-port-8080".into()),
        ("GET", "/scheme-https-and-port-nil", 302, "https://example.org/scheme-https-and-port-nil".into()),
        ("GET", "/scheme-https-and-port-443", 302, "https://example.org/scheme-https-and-port-443".into()),
        ("GET", "/scheme-https-and-port-8443", 302, "https://example.org:8443/scheme-https-and-port-8443".into()),
        ("POST", "/redirect-303", 303, "http://example.org/redirect-303".into()),
        ("GET", "/redirect-307", 307, "http://example.org/redirect-307".into()),
        ("GET", "/redirect-308", 308, "http://example.org/redirect-308".into()),
    ] {
        let r = client().request(method.parse().unwrap(), format!("http://{gw}{path}")).send().await.expect("request");
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(r.headers()["location"], location.as_str(), "{path}");
    }
    // Hostile requests (found by a hostile run): the prefix is replaced in the path the route
    // matched, so nothing a client puts after it can become the Location's authority; a Host
    // that is not a host is refused.
    for (path, location) in [
        ("/original-prefix;@evil.example/x", format!("http://{host}/replacement-prefix/x")),
        ("//original-prefix/x", format!("http://{host}/replacement-prefix/x")),
    ] {
        let r = raw_request(gw, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")).await;
        assert!(r.starts_with("HTTP/1.1 302"), "{path}: {r}");
        assert!(r.to_ascii_lowercase().contains(&format!("location: {location}\r\n")), "{path}: {r}");
    }
    for bad in ["evil.example#.example.com", "a.example.com, b.example.com", "a/b", "a\\b"] {
        let r = raw_request(gw, &format!("GET /hostname-redirect HTTP/1.1\r\nHost: {bad}\r\n\r\n")).await;
        assert!(r.starts_with("HTTP/1.1 400"), "Host {bad:?}: {r}");
    }
    let gw = addr(&f, "infra/same-namespace-with-http-listener-on-8080", "http").await;
    for (path, location) in [
        ("/scheme-nil-and-port-nil", "http://example.org:8080/scheme-nil-and-port-nil"),
        ("/scheme-nil-and-port-80", "http://example.org/scheme-nil-and-port-80"),
        ("/scheme-https-and-port-nil", "https://example.org/scheme-https-and-port-nil"),
    ] {
        let r = client().get(format!("http://{gw}{path}")).send().await.expect("request");
        assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap()), (302, location), "8080 {path}");
    }
}

/// HTTPRouteRewriteHost and HTTPRouteRewritePath.
#[tokio::test]
async fn url_rewrites_change_host_and_path_upstream() {
    let headers = "{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites-values}], add: [{name: X-Header-Add, value: header-val-1}, {name: X-Header-Add-Append, value: header-val-2}], remove: [X-Header-Remove]}}";
    let f = start(&format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: rewrite-host, namespace: infra}}
spec:
  parentRefs: [{{name: same-namespace}}]
  hostnames: [rewrite.example]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /one}}}}]
    filters: [{{type: URLRewrite, urlRewrite: {{hostname: one.example.org}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - filters: [{{type: URLRewrite, urlRewrite: {{hostname: example.org}}}}]
    backendRefs: [{{name: infra-backend-v2, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /rewrite-host-and-modify-headers}}}}]
    filters: [{{type: URLRewrite, urlRewrite: {{hostname: test.example.org}}}}, {headers}]
    backendRefs: [{{name: infra-backend-v2, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: rewrite-path, namespace: infra}}
spec:
  parentRefs: [{{name: all-namespaces}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /prefix/one}}}}]
    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /one}}}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /strip-prefix}}}}]
    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /}}}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /full/one}}}}]
    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplaceFullPath, replaceFullPath: /one}}}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /full/rewrite-path-and-modify-headers}}}}]
    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplaceFullPath, replaceFullPath: /test}}}}}}, {headers}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /prefix/rewrite-path-and-modify-headers}}}}]
    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /prefix}}}}}}, {headers}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
"#
    ))
    .await;
    let gw = addr(&f, "infra/same-namespace", "http").await;
    let r = get(gw, "rewrite.example", "/one").await;
    assert_eq!(
        (r.service(), r.json["host"].as_str(), r.json["path"].as_str()),
        ("infra-backend-v1", Some("one.example.org"), Some("/one"))
    );
    let r = get(gw, "rewrite.example", "/two").await;
    assert_eq!(
        (r.service(), r.json["host"].as_str(), r.json["path"].as_str()),
        ("infra-backend-v2", Some("example.org"), Some("/two"))
    );
    let sent =
        [("X-Header-Remove", "remove-val"), ("X-Header-Add-Append", "append-val-1"), ("X-Header-Set", "set-val")];
    let r = send(gw, "GET", "rewrite.example", "/rewrite-host-and-modify-headers", &sent).await;
    assert_eq!(r.json["host"], "test.example.org");
    let modified = |r: &Reply| {
        assert_eq!(r.header("x-header-add"), "header-val-1");
        assert_eq!(r.header("x-header-add-append"), "append-val-1,header-val-2");
        assert_eq!(r.header("x-header-set"), "set-overwrites-values");
        assert!(r.json["headers"].get("x-header-remove").is_none(), "{}", r.body);
    };
    modified(&r);

    let gw = addr(&f, "infra/all-namespaces", "http").await;
    for (path, upstream) in [
        ("/prefix/one/two", "/one/two"),
        ("/strip-prefix/three", "/three"),
        ("/strip-prefix", "/"),
        ("/full/one/two", "/one"),
        ("/prefix/one/two?q=1", "/one/two?q=1"),
    ] {
        let r = get(gw, "", path).await;
        assert_eq!(r.json["path"], upstream, "{path}: {}", r.body);
    }
    let r = send(gw, "GET", "", "/full/rewrite-path-and-modify-headers/test", &sent).await;
    assert_eq!(r.json["path"], "/test");
    modified(&r);
    let r = send(gw, "GET", "", "/prefix/rewrite-path-and-modify-headers/one", &sent).await;
    assert_eq!(r.json["path"], "/prefix/one");
    modified(&r);
}

/// HTTPRouteInvalidBackendRefUnknownKind, -NonExistentBackendRef, -CrossNamespaceBackendRef,
/// HTTPRouteNoBackendRefs, HTTPRoutePartiallyInvalidViaInvalidReferenceGrant,
/// HTTPRouteInvalidReferenceGrant, HTTPRouteReferenceGrant (and the grant removed: 500).
#[tokio::test]
async fn invalid_backend_refs_answer_500_for_their_share() {
    let grants = r#"apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: reference-grant, namespace: web}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]
  to: [{group: "", kind: Service, name: web-backend}]
"#;
    let wrong = r#"apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: wrong-from-kind, namespace: app}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
  to: [{group: "", kind: Service}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: wrong-to-name, namespace: app}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]
  to: [{group: "", kind: Service, name: app-backend-v1}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: wrong-namespace, namespace: infra}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]
  to: [{group: "", kind: Service}]
"#;
    let routes = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: invalid, namespace: infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /unknown-kind}}]
    backendRefs: [{group: unknownkind.example.com, kind: NonExistent, name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /nonexistent}}]
    backendRefs: [{name: nonexistent, port: 8080}]
  - matches: [{path: {type: Exact, value: /omitted-no-forward}}]
  - matches: [{path: {type: Exact, value: /empty-no-forward}}]
    backendRefs: []
  - matches: [{path: {type: PathPrefix, value: /web}}]
    backendRefs: [{name: web-backend, namespace: web, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /app-v2}}]
    backendRefs: [{name: app-backend-v2, namespace: app, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /app-v1}}]
    backendRefs: [{name: app-backend-v1, namespace: app, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /half}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}, {name: nonexistent, port: 8080}]
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
"#;
    let f = start(&format!("{routes}---\n{grants}---\n{wrong}")).await;
    let gw = addr(&f, "infra/same-namespace", "http").await;
    for (path, want) in [
        ("/unknown-kind", "500"),
        ("/nonexistent", "500"),
        ("/omitted-no-forward", "500"),
        ("/empty-no-forward", "500"),
        ("/forward", "infra-backend-v1"),
        ("/web", "web-backend"),
        ("/app-v2", "500"),
        ("/app-v1", "app-backend-v1"),
    ] {
        expect(&get(gw, "", path).await, want, path);
    }
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..200 {
        *statuses.entry(get(gw, "", "/half").await.status).or_insert(0) += 1;
    }
    let ok = statuses.get(&200).copied().unwrap_or(0);
    assert!(statuses.keys().all(|s| *s == 200 || *s == 500) && (70..=130).contains(&ok), "{statuses:?}");
    let check = ferry_check(&f).await;
    for reason in ["InvalidKind", "BackendNotFound", "RefNotPermitted"] {
        assert!(check.contains(reason), "{reason} in: {check}");
    }
    // The grant removed: the reference is no longer permitted.
    f.write("gw.yaml", &std::fs::read_to_string(f.manifests().join("gw.yaml")).unwrap().replace(grants, ""));
    eventually("web backend refused without its grant", || async { get(gw, "", "/web").await.status == 500 }).await;
    expect(&get(gw, "", "/forward").await, "infra-backend-v1", "other rules keep working");
}

/// HTTPRouteWeight: 70/30/0.
#[tokio::test]
async fn weighted_backends_split_traffic() {
    let f = start(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: weighted-backends, namespace: infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - backendRefs:
    - {name: infra-backend-v1, port: 8080, weight: 70}
    - {name: infra-backend-v2, port: 8080, weight: 30}
    - {name: infra-backend-v3, port: 8080, weight: 0}
"#,
    )
    .await;
    let gw = addr(&f, "infra/same-namespace", "http").await;
    let mut counts = std::collections::BTreeMap::new();
    // 2,000 samples put ±0.05 at about five standard deviations.
    let c = client();
    for _ in 0..2000 {
        let r = Reply::read(c.get(format!("http://{gw}/")).send().await.expect("request")).await;
        assert_eq!(r.status, 200);
        *counts.entry(r.service().to_string()).or_insert(0usize) += 1;
    }
    let share = |n: &str| counts.get(n).copied().unwrap_or(0) as f64 / 2000.0;
    assert!((share("infra-backend-v1") - 0.7).abs() <= 0.05, "{counts:?}");
    assert!((share("infra-backend-v2") - 0.3).abs() <= 0.05, "{counts:?}");
    assert_eq!(share("infra-backend-v3"), 0.0, "{counts:?}");
}

/// GatewayWithAttachedRoutes, GatewayListenerUnsupportedProtocol, GatewayInvalidRouteKind,
/// HTTPRouteInvalidCrossNamespaceParentRef, HTTPRouteInvalidParentRefNotMatchingSectionName,
/// conflicts on a port, and a listener port that cannot be bound (`--gateway-ports` exhausted).
#[tokio::test]
async fn listener_states_and_attached_routes() {
    let f = start(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-with-two-attached-routes, namespace: infra}
spec:
  gatewayClassName: ferry
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    hostname: foo.example.com
    allowedRoutes:
      kinds: [{kind: HTTPRoute}]
      namespaces: {from: Selector, selector: {matchLabels: {kubernetes.io/metadata.name: infra}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-route-2, namespace: infra}
spec:
  parentRefs: [{name: gateway-with-two-attached-routes, kind: Gateway}]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-route-3, namespace: infra}
spec:
  parentRefs: [{name: gateway-with-two-attached-routes, kind: Gateway}]
  rules: [{matches: [{path: {type: PathPrefix, value: /three}}], backendRefs: [{name: infra-backend-v2, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: http-route-not-accepted, namespace: infra}
spec:
  parentRefs: [{name: gateway-with-two-attached-routes}]
  hostnames: [not-accepted.test.com]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: invalid-cross-namespace-parent-ref, namespace: web}
spec:
  parentRefs: [{name: same-namespace, namespace: infra}]
  rules: [{backendRefs: [{name: web-backend, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: not-matching-section-name, namespace: infra}
spec:
  parentRefs: [{name: same-namespace, port: 80, sectionName: http1}]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gateway-supported-and-unsupported-protocols, namespace: infra}
spec:
  gatewayClassName: ferry
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: unsupported, port: 8081, protocol: example.com/some-protocol}
  - {name: bad-kinds, port: 8082, protocol: HTTP, allowedRoutes: {kinds: [{kind: FooRoute}]}}
  - {name: conflict-a, port: 9000, protocol: HTTP}
  - {name: conflict-b, port: 9000, protocol: HTTPS, tls: {certificateRefs: [{name: missing}]}}
  - {name: dup-host-a, port: 9001, protocol: HTTP, hostname: a.test}
  - {name: dup-host-b, port: 9001, protocol: HTTP, hostname: a.test}
"#,
    )
    .await;
    let l = listener(&f, "infra/gateway-with-two-attached-routes", "http").await;
    assert_eq!(l["attached_routes"], 2, "{l}");
    let gw = addr(&f, "infra/gateway-with-two-attached-routes", "http").await;
    expect(&get(gw, "foo.example.com", "/").await, "infra-backend-v1", "route 2");
    expect(&get(gw, "foo.example.com", "/three").await, "infra-backend-v2", "route 3");
    expect(&get(gw, "not-accepted.test.com", "/").await, "404", "not accepted");
    expect(&get(gw, "other.example.com", "/").await, "404", "listener hostname only");
    let same = listener(&f, "infra/same-namespace", "http").await;
    assert_eq!(same["attached_routes"], 0, "cross-namespace and unmatched section: {same}");

    let gw = "infra/gateway-supported-and-unsupported-protocols";
    let cond = |l: &serde_json::Value| l["conditions"].to_string();
    let http = listener(&f, gw, "http").await;
    assert!(http["address"].is_string() && cond(&http).contains("Accepted=True"), "{http}");
    let unsupported = listener(&f, gw, "unsupported").await;
    assert!(cond(&unsupported).contains("Accepted=False(UnsupportedProtocol)"), "{unsupported}");
    assert!(unsupported["address"].is_null());
    let kinds = listener(&f, gw, "bad-kinds").await;
    assert!(cond(&kinds).contains("ResolvedRefs=False(InvalidRouteKinds)"), "{kinds}");
    for name in ["conflict-a", "conflict-b"] {
        let l = listener(&f, gw, name).await;
        assert!(cond(&l).contains("Conflicted=True(ProtocolConflict)") && l["address"].is_null(), "{l}");
    }
    let a = listener(&f, gw, "dup-host-a").await;
    let b = listener(&f, gw, "dup-host-b").await;
    assert!(a["address"].is_string() && !cond(&a).contains("Conflicted"), "{a}");
    assert!(cond(&b).contains("Conflicted=True(HostnameConflict)") && b["address"].is_null(), "{b}");
    let check = ferry_check(&f).await;
    for what in [
        "NotAllowedByListeners",
        "NoMatchingParent",
        "invalid-cross-namespace-parent-ref",
        "spec.listeners[1].protocol",
    ] {
        assert!(check.contains(what), "{what} in: {check}");
    }
}

/// Gateways created and deleted while ferry runs are served and closed without a restart; a
/// bad route change never removes a working route.
#[tokio::test]
async fn gateways_come_and_go_without_restart() {
    let f = start(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: first, namespace: infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 8080}]}]
"#,
    )
    .await;
    let first = addr(&f, "infra/same-namespace", "http").await;
    expect(&get(first, "", "/").await, "infra-backend-v1", "first");
    let late = r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: late, namespace: infra}
spec:
  gatewayClassName: ferry
  listeners: [{name: web, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: late, namespace: infra}
spec:
  parentRefs: [{name: late}]
  rules:
  - matches: [{path: {type: RegularExpression, value: "/v[0-9]+/.*"}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
"#;
    f.write("late.yaml", late);
    let late_addr = addr(&f, "infra/late", "web").await;
    expect(&get(late_addr, "", "/v2/items").await, "infra-backend-v2", "regex path");
    expect(&get(late_addr, "", "/vx/items").await, "404", "regex does not match");
    assert_eq!(get(first, "", "/").await.service(), "infra-backend-v1", "the first Gateway kept its address");
    // A regex that does not compile is a located error; the route keeps its old rules? No: the
    // rule is skipped, the Gateway stays served, other routes keep working.
    f.write("late.yaml", &late.replace("/v[0-9]+/.*", "/v[0-9+/.*"));
    eventually("bad regex reported", || async { ferry_check(&f).await.contains("does not compile") }).await;
    expect(&get(first, "", "/").await, "infra-backend-v1", "first still served");
    // The Gateway deleted: its address stops accepting, and a kept-alive connection to it gets
    // 404 and is closed.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut kept = tokio::net::TcpStream::connect(late_addr).await.unwrap();
    kept.write_all(b"GET /v1/x HTTP/1.1\r\nHost: a.test\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 65536];
    let n = kept.read(&mut buf).await.unwrap();
    let opened = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(opened.starts_with("http/1.1 ") && !opened.contains("connection: close"), "{opened}");
    f.write("late.yaml", "");
    eventually("late Gateway closed", || async { tokio::net::TcpStream::connect(late_addr).await.is_err() }).await;
    kept.write_all(b"GET /v1/x HTTP/1.1\r\nHost: a.test\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut answer)).await.expect("closed");
    let answer = String::from_utf8_lossy(&answer);
    // (The first answer's body may still be unread ahead of it.)
    assert!(answer.contains("HTTP/1.1 404") && answer.contains("no longer served"), "{answer}");
    expect(&get(first, "", "/").await, "infra-backend-v1", "first still served");
}

/// GatewayHTTPListenerIsolation (both Gateways of the test): a request is served by the most
/// specific listener its host matches, by that listener's routes only.
#[tokio::test]
async fn listener_isolation() {
    let listeners = r#"
  - {name: empty-hostname, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: wildcard-example-com, port: 80, protocol: HTTP, hostname: "*.example.com", allowedRoutes: {namespaces: {from: All}}}
  - {name: wildcard-foo-example-com, port: 80, protocol: HTTP, hostname: "*.foo.example.com", allowedRoutes: {namespaces: {from: All}}}
  - {name: abc-foo-example-com, port: 80, protocol: HTTP, hostname: abc.foo.example.com, allowedRoutes: {namespaces: {from: All}}}
"#;
    let mut docs = String::new();
    for (gw, hostnames) in [
        ("http-listener-isolation", ""),
        (
            "http-listener-isolation-with-hostname-intersection",
            "  hostnames: [bar.com, \"*.example.com\", \"*.foo.example.com\", abc.foo.example.com]\n",
        ),
    ] {
        docs += &format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {gw}, namespace: infra}}\nspec:\n  gatewayClassName: ferry\n  listeners:{listeners}"
        );
        for l in ["empty-hostname", "wildcard-example-com", "wildcard-foo-example-com", "abc-foo-example-com"] {
            docs += &format!(
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {gw}-{l}, namespace: infra}}\nspec:\n  parentRefs: [{{name: {gw}, sectionName: {l}}}]\n{hostnames}  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /{l}}}}}]\n    backendRefs: [{{name: infra-backend-v1, port: 8080}}]\n"
            );
        }
    }
    let f = start(&docs).await;
    for gw in ["infra/http-listener-isolation", "infra/http-listener-isolation-with-hostname-intersection"] {
        let at = addr(&f, gw, "empty-hostname").await;
        let paths = ["/empty-hostname", "/wildcard-example-com", "/wildcard-foo-example-com", "/abc-foo-example-com"];
        for (row, host) in
            ["bar.com", "bar.example.com", "bar.foo.example.com", "abc.foo.example.com"].iter().enumerate()
        {
            for (col, path) in paths.iter().enumerate() {
                let want = if row == col { "infra-backend-v1" } else { "404" };
                expect(&get(at, host, path).await, want, &format!("{gw}: {host}{path}"));
            }
        }
    }
}

/// HTTPRouteHTTPSListener and HTTPRouteHTTPSListenerDetectMisdirectedRequests: four HTTPS
/// listeners on one port; the server name picks the listener (and its certificate); a Host that
/// picks another listener is answered 421.
#[tokio::test]
async fn https_listeners_and_misdirected_requests() {
    let names: Vec<String> = ["example.org", "second-example.org", "*.wildcard.org", "unknown-example.org"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (secret, pem) = ferry_echo::tls_secret_manifest("infra", "tls-validity-checks-certificate", &names).unwrap();
    let listener = |name: &str, host: &str| {
        let host = if host.is_empty() { String::new() } else { format!(", hostname: \"{host}\"") };
        format!("  - {{name: {name}, port: 443, protocol: HTTPS{host}, tls: {{certificateRefs: [{{kind: Secret, group: \"\", name: tls-validity-checks-certificate}}]}}}}\n")
    };
    let mut docs = format!(
        "{secret}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: same-namespace-with-https-listener, namespace: infra}}\nspec:\n  gatewayClassName: ferry\n  listeners:\n{}{}{}{}",
        listener("https", ""),
        listener("https-with-hostname", "second-example.org"),
        listener("https-with-wildcard-hostname", "*.wildcard.org"),
        listener("https-with-hostname-matching-wildcard", "fourth-example.wildcard.org"),
    );
    for (i, section, hostnames, backend) in [
        (1, "https", "[example.org]", "infra-backend-v1"),
        (2, "https-with-hostname", "[]", "infra-backend-v2"),
        (3, "https-with-wildcard-hostname", "[]", "infra-backend-v3"),
        (4, "https-with-hostname-matching-wildcard", "[]", "infra-backend-v1"),
    ] {
        docs += &format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: test-{i}, namespace: infra}}\nspec:\n  parentRefs: [{{name: same-namespace-with-https-listener, sectionName: {section}}}]\n  hostnames: {hostnames}\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /detect-misdirected-requests}}}}]\n    backendRefs: [{{name: {backend}, port: 8080}}]\n"
        );
    }
    let f = start(&docs).await;
    let at = addr(&f, "infra/same-namespace-with-https-listener", "https").await;
    let tls = |sni: &str, h2: bool| {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .resolve(sni, at)
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
        if !h2 {
            b = b.http1_only();
        }
        b.build().unwrap()
    };
    for (sni, host, want) in [
        ("example.org", "example.org", "infra-backend-v1"),
        ("example.org", "second-example.org", "421"),
        ("example.org", "unknown-example.org", "404"),
        ("second-example.org", "second-example.org", "infra-backend-v2"),
        ("second-example.org", "example.org", "421"),
        ("second-example.org", "unknown-example.org", "421"),
        ("third-example.wildcard.org", "third-example.wildcard.org", "infra-backend-v3"),
        ("third-example.wildcard.org", "fith-example.wildcard.org", "infra-backend-v3"),
        ("third-example.wildcard.org", "fourth-example.wildcard.org", "421"),
        ("third-example.wildcard.org", "second-example.org", "421"),
        ("fourth-example.wildcard.org", "fourth-example.wildcard.org", "infra-backend-v1"),
        ("fourth-example.wildcard.org", "fith-example.wildcard.org", "421"),
        ("unknown-example.org", "example.org", "infra-backend-v1"),
        ("unknown-example.org", "unknown-example.org", "404"),
    ] {
        let url = format!("https://{sni}:{}/detect-misdirected-requests", at.port());
        let r = tls(sni, false).get(&url).header("host", host).send().await.expect("request");
        expect(&Reply::read(r).await, want, &format!("SNI {sni}, Host {host}"));
        if sni == host {
            let r = tls(sni, true).get(&url).send().await.expect("h2 request");
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            expect(&Reply::read(r).await, want, &format!("h2 {sni}"));
        }
    }
}

/// A Service `infra/name` (port 8080 `grpc`, appProtocol `kubernetes.io/h2c`) with one endpoint.
fn grpc_svc(name: &str, ep: SocketAddr) -> String {
    svc("infra", name, ep)
        .replace("{name: http, port: 8080}", "{name: http, port: 8080, appProtocol: kubernetes.io/h2c}")
}

/// What a gRPC call through the gateway came back with.
#[derive(Debug)]
struct GrpcReply {
    status: u16,
    /// `grpc-status` of the trailers (or of the head, for a trailers-only answer).
    grpc_status: Option<String>,
    /// The backend named in the trailers (the echo puts it there).
    backend: Option<String>,
    body: Vec<u8>,
}

/// A unary gRPC call over h2c (prior knowledge) to `at`.
async fn grpc_call(at: SocketAddr, authority: &str, path: &str, metadata: &[(&str, &str)]) -> GrpcReply {
    let tcp = tokio::net::TcpStream::connect(at).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    let mut req = http::Request::post(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (n, v) in metadata {
        req = req.header(n.to_ascii_lowercase(), *v);
    }
    let (resp, mut send) = client.send_request(req.body(()).unwrap(), false).expect("send");
    send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true).expect("message");
    let resp = resp.await.expect("response");
    let (head, mut body) = resp.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
    let value = |m: &http::HeaderMap, n: &str| m.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    GrpcReply {
        status: head.status.as_u16(),
        grpc_status: value(&trailers, "grpc-status").or_else(|| value(&head.headers, "grpc-status")),
        backend: value(&trailers, "x-echo-service"),
        body: data,
    }
}

/// GRPCExactMethodMatching, GRPCRouteHeaderMatching, GRPCRouteListenerHostnameMatching,
/// GRPCRouteNamedRule: gRPC over h2c listeners to h2c backends, matched by service/method and
/// metadata, trailers passed through; no matching rule is an HTTP 404 (a client's
/// `Unimplemented`).
#[tokio::test]
async fn grpc_routes_match_services_methods_and_metadata() {
    const SVC: &str = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho";
    let mut backends = String::new();
    for (i, ip) in [(1, "127.0.0.21"), (2, "127.0.0.22"), (3, "127.0.0.23")] {
        let name = format!("grpc-infra-backend-v{i}");
        backends += &grpc_svc(&name, echo(ip, &name).await);
    }
    let header_rules = [
        ("[{name: version, value: one}]", 1),
        ("[{name: version, value: two}]", 2),
        ("[{name: version, value: two}, {name: color, value: orange}]", 1),
    ]
    .iter()
    .map(|(h, v)| {
        format!("  - matches: [{{headers: {h}}}]\n    backendRefs: [{{name: grpc-infra-backend-v{v}, port: 8080}}]\n")
    })
    .collect::<String>();
    let f = start(&format!(
        r#"{backends}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: exact-matching, namespace: infra}}
spec:
  parentRefs: [{{name: same-namespace}}]
  rules:
  - name: named-rule
    matches: [{{method: {{service: {SVC}, method: Echo}}}}]
    backendRefs: [{{name: grpc-infra-backend-v1, port: 8080}}]
  - matches: [{{method: {{service: {SVC}, method: EchoTwo}}}}]
    backendRefs: [{{name: grpc-infra-backend-v2, port: 8080}}]
  - matches: [{{method: {{type: RegularExpression, service: "other\\..*", method: "Echo.*"}}}}]
    backendRefs: [{{name: grpc-infra-backend-v3, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: grpc-header-matching, namespace: infra}}
spec:
  parentRefs: [{{name: all-namespaces}}]
  rules:
{header_rules}  - matches: [{{headers: [{{name: color, value: blue}}]}}, {{headers: [{{name: color, value: green}}]}}]
    backendRefs: [{{name: grpc-infra-backend-v1, port: 8080}}]
  - matches: [{{headers: [{{name: color, value: red}}]}}, {{headers: [{{name: color, value: yellow}}]}}]
    backendRefs: [{{name: grpc-infra-backend-v2, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: grpcroute-listener-hostname-matching, namespace: infra}}
spec:
  gatewayClassName: ferry
  listeners:
  - {{name: listener-1, hostname: bar.com, port: 80, protocol: HTTP}}
  - {{name: listener-2, hostname: foo.bar.com, port: 80, protocol: HTTP}}
  - {{name: listener-3, hostname: "*.bar.com", port: 80, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: backend-v1, namespace: infra}}
spec:
  parentRefs: [{{name: grpcroute-listener-hostname-matching, sectionName: listener-1}}]
  rules: [{{backendRefs: [{{name: grpc-infra-backend-v1, port: 8080}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: backend-v2, namespace: infra}}
spec:
  parentRefs: [{{name: grpcroute-listener-hostname-matching, sectionName: listener-2}}]
  rules: [{{backendRefs: [{{name: grpc-infra-backend-v2, port: 8080}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: backend-v3, namespace: infra}}
spec:
  parentRefs: [{{name: grpcroute-listener-hostname-matching, sectionName: listener-3}}]
  rules: [{{backendRefs: [{{name: grpc-infra-backend-v3, port: 8080}}]}}]
"#
    ))
    .await;
    let gw = addr(&f, "infra/same-namespace", "http").await;
    let auth = gw.to_string();
    for (method, want) in [
        (format!("/{SVC}/Echo"), Some("grpc-infra-backend-v1")),
        (format!("/{SVC}/EchoTwo"), Some("grpc-infra-backend-v2")),
        (format!("/{SVC}/EchoThree"), None),
        ("/other.Svc/EchoAny".to_string(), Some("grpc-infra-backend-v3")),
    ] {
        let r = grpc_call(gw, &auth, &method, &[]).await;
        match want {
            Some(b) => {
                assert_eq!(
                    (r.status, r.grpc_status.as_deref(), r.backend.as_deref()),
                    (200, Some("0"), Some(b)),
                    "{method}"
                );
                let json: serde_json::Value = serde_json::from_slice(&r.body[5..]).expect("message");
                assert_eq!(json["method"], method.as_str());
                assert_eq!(json["version"], "HTTP/2.0", "h2c to the backend");
            }
            None => assert_eq!(r.status, 404, "{method}: Unimplemented for a gRPC client"),
        }
    }
    let gw = addr(&f, "infra/all-namespaces", "http").await;
    let auth = gw.to_string();
    for (metadata, want) in [
        (vec![("Version", "one")], Some("grpc-infra-backend-v1")),
        (vec![("Version", "two")], Some("grpc-infra-backend-v2")),
        (vec![("Version", "two"), ("Color", "orange")], Some("grpc-infra-backend-v1")),
        (vec![("Version", "two"), ("Color", "blue")], Some("grpc-infra-backend-v2")),
        (vec![("Color", "orange")], None),
        (vec![("Some-Other-Header", "one")], None),
        (vec![("Color", "blue")], Some("grpc-infra-backend-v1")),
        (vec![("Color", "green")], Some("grpc-infra-backend-v1")),
        (vec![("Color", "red")], Some("grpc-infra-backend-v2")),
        (vec![("Color", "yellow")], Some("grpc-infra-backend-v2")),
        (vec![("Color", "purple")], None),
    ] {
        let r = grpc_call(gw, &auth, &format!("/{SVC}/Echo"), &metadata).await;
        match want {
            Some(b) => assert_eq!(r.backend.as_deref(), Some(b), "{metadata:?}"),
            None => assert_eq!(r.status, 404, "{metadata:?}"),
        }
    }
    let gw = addr(&f, "infra/grpcroute-listener-hostname-matching", "listener-1").await;
    for (authority, want) in [
        ("bar.com", Some("grpc-infra-backend-v1")),
        ("foo.bar.com", Some("grpc-infra-backend-v2")),
        ("baz.bar.com", Some("grpc-infra-backend-v3")),
        ("multiple.prefixes.bar.com", Some("grpc-infra-backend-v3")),
        ("foo.com", None),
        ("no.matching.host", None),
    ] {
        let r = grpc_call(gw, authority, &format!("/{SVC}/Echo"), &[]).await;
        match want {
            Some(b) => assert_eq!(r.backend.as_deref(), Some(b), "{authority}"),
            None => assert_eq!(r.status, 404, "{authority}"),
        }
    }
}

/// HTTPRouteTimeoutRequest and HTTPRouteTimeoutBackendRequest: a backend slower than the
/// route's timeout is answered 504; `0s` turns the timeout off.
#[tokio::test]
async fn route_timeouts_answer_504() {
    let f = start(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: request-timeout, namespace: infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /request-timeout}}]
    timeouts: {request: 500ms}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /disable-request-timeout}}]
    timeouts: {request: 0s}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /backend-timeout}}]
    timeouts: {backendRequest: 500ms}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /disable-backend-timeout}}]
    timeouts: {backendRequest: 0s}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /bad-timeout}}]
    timeouts: {request: 1s, backendRequest: 2s}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
"#,
    )
    .await;
    let gw = addr(&f, "infra/same-namespace", "http").await;
    for (path, want) in [
        ("/request-timeout", "infra-backend-v1"),
        ("/request-timeout?delay=1s", "504"),
        ("/disable-request-timeout?delay=1s", "infra-backend-v1"),
        ("/backend-timeout", "infra-backend-v1"),
        ("/backend-timeout?delay=1s", "504"),
        ("/disable-backend-timeout?delay=1s", "infra-backend-v1"),
    ] {
        let started = std::time::Instant::now();
        let r = get(gw, "", path).await;
        expect(&r, want, path);
        if want == "504" {
            assert!(started.elapsed() < Duration::from_millis(950), "{path}: gave up after {:?}", started.elapsed());
        }
    }
    assert!(ferry_check(&f).await.contains("longer than request"), "a backendRequest over request is a located error");
}

/// HTTPRouteRetry: the route's codes are retried (on the one endpoint there is) up to its
/// attempts; other codes and exhausted retries pass the backend's status through.
#[tokio::test]
async fn route_retries_by_code_and_attempts() {
    let f = start(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: retries, namespace: infra}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /retry/code-500-attempts-3}}]
    retry: {codes: [500], attempts: 3}
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /retry/code-all-attempts-2}}]
    retry: {codes: [500, 502, 503, 504], attempts: 2, backoff: 10ms}
    backendRefs: [{name: infra-backend-v3, port: 8080}]
"#,
    )
    .await;
    let gw = addr(&f, "infra/same-namespace", "http").await;
    for (i, (path, code, after, want)) in [
        ("/retry/code-500-attempts-3", 500, 2, "infra-backend-v3"),
        ("/retry/code-500-attempts-3", 500, 4, "500"),
        ("/retry/code-500-attempts-3", 503, 2, "503"),
        ("/retry/code-all-attempts-2", 500, 1, "infra-backend-v3"),
        ("/retry/code-all-attempts-2", 500, 3, "500"),
        ("/retry/code-all-attempts-2", 502, 1, "infra-backend-v3"),
        ("/retry/code-all-attempts-2", 502, 3, "502"),
        ("/retry/code-all-attempts-2", 503, 1, "infra-backend-v3"),
        ("/retry/code-all-attempts-2", 503, 3, "503"),
        ("/retry/code-all-attempts-2", 504, 1, "infra-backend-v3"),
        ("/retry/code-all-attempts-2", 504, 3, "504"),
    ]
    .into_iter()
    .enumerate()
    {
        let full = format!("{path}?responseCode={code}&succeedAfter={after}&uuid=u{i}");
        let r = get(gw, "", &full).await;
        expect(&r, want, &full);
        if r.status == 200 {
            assert_eq!(r.json["path"], full.as_str());
        }
    }
}

/// HTTPRouteListenerPortMatching, HTTPRouteInvalidParentRefNotMatchingListenerPort,
/// HTTPRouteInvalidParentRefSectionNameNotMatchingPort, HTTPRouteNamedRule,
/// HTTPRouteBackendProtocolH2C (h2c from the client and to the backend) and
/// HTTPRouteBackendProtocolWebSocket.
#[tokio::test]
async fn parent_ports_named_rules_and_backend_protocols() {
    let h2c = echo("127.0.0.24", "infra-backend-h2c").await;
    let h2c_svc = svc("infra", "infra-backend-h2c", h2c)
        .replace("{name: http, port: 8080}", "{name: http, port: 8081, appProtocol: kubernetes.io/h2c}");
    let f = start(&format!(
        r#"{h2c_svc}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: httproute-listener-port-matching, namespace: infra}}
spec:
  gatewayClassName: ferry
  listeners:
  - {{name: listener-1, port: 80, protocol: HTTP, hostname: foo.com}}
  - {{name: listener-2, port: 8080, protocol: HTTP, hostname: foo.com}}
  - {{name: listener-3, port: 8080, protocol: HTTP, hostname: bar.com}}
  - {{name: listener-4, port: 8090, protocol: HTTP, hostname: foo.com}}
  - {{name: listener-5, port: 8090, protocol: HTTP, hostname: bar.com}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: backend-v1, namespace: infra}}
spec:
  parentRefs: [{{name: httproute-listener-port-matching, port: 80}}]
  rules: [{{backendRefs: [{{name: infra-backend-v1, port: 8080}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: backend-v2, namespace: infra}}
spec:
  parentRefs: [{{name: httproute-listener-port-matching, port: 8080}}]
  rules: [{{backendRefs: [{{name: infra-backend-v2, port: 8080}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: backend-v3, namespace: infra}}
spec:
  parentRefs: [{{name: httproute-listener-port-matching, port: 8090, sectionName: listener-4}}]
  rules: [{{backendRefs: [{{name: infra-backend-v3, port: 8080}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: not-matching-port, namespace: infra}}
spec:
  parentRefs: [{{name: all-namespaces, port: 81}}, {{name: all-namespaces, sectionName: http, port: 81}}]
  rules: [{{backendRefs: [{{name: infra-backend-v1, port: 8080}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: http-named-rules, namespace: infra}}
spec:
  parentRefs: [{{name: same-namespace}}]
  rules:
  - name: named-rule
    matches: [{{path: {{type: PathPrefix, value: /named}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /unnamed}}}}]
    backendRefs: [{{name: infra-backend-v2, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /h2c}}}}]
    backendRefs: [{{name: infra-backend-h2c, port: 8081}}]
  - matches: [{{path: {{type: PathPrefix, value: /ws}}}}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
"#
    ))
    .await;
    let gw = "infra/httproute-listener-port-matching";
    for (listener, host, want) in [
        ("listener-1", "foo.com", "infra-backend-v1"),
        ("listener-2", "foo.com:8080", "infra-backend-v2"),
        ("listener-3", "bar.com:8080", "infra-backend-v2"),
        ("listener-4", "foo.com:8090", "infra-backend-v3"),
        ("listener-5", "bar.com:8090", "404"),
    ] {
        let at = addr(&f, gw, listener).await;
        expect(&get(at, host, "/").await, want, &format!("{listener} {host}"));
    }
    assert_eq!(listener(&f, "infra/all-namespaces", "http").await["attached_routes"], 0);
    assert!(ferry_check(&f).await.contains("NoMatchingParent"));

    let at = addr(&f, "infra/same-namespace", "http").await;
    expect(&get(at, "", "/named").await, "infra-backend-v1", "named rule");
    expect(&get(at, "", "/unnamed").await, "infra-backend-v2", "unnamed rule");
    // h2c prior knowledge from the client, h2c to the backend (appProtocol kubernetes.io/h2c).
    let c = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let r = Reply::read(c.get(format!("http://{at}/h2c")).send().await.expect("h2c")).await;
    assert_eq!((r.status, r.version, r.service()), (200, reqwest::Version::HTTP_2, "infra-backend-h2c"));
    assert_eq!(r.json["version"], "HTTP/2.0", "the backend was spoken to in h2c: {}", r.body);
    // WebSocket through the Gateway.
    use futures_util::{SinkExt, StreamExt};
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{at}/ws")).await.expect("websocket");
    ws.send(tokio_tungstenite::tungstenite::Message::text("Websocket Support!")).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert!(echoed.to_text().unwrap().contains("Websocket Support!"), "{echoed:?}");
}

/// HTTPRouteCORS: preflights are answered by the gateway (never reach the backend), allowed
/// origins (with `*` patterns) get the CORS headers, with credentials wildcards are answered
/// with what was asked for.
#[tokio::test]
async fn cors_filter() {
    let cors = |path: &str, spec: &str| {
        format!("  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    filters: [{{type: CORS, cors: {spec}}}]\n    backendRefs: [{{name: infra-backend-v1, port: 8080}}]\n")
    };
    let rules = [
        cors("/cors-1", r#"{allowOrigins: ["https://www.foo.com", "https://*.bar.com"], allowMethods: [GET, OPTIONS], allowHeaders: [x-header-1, x-header-2], exposeHeaders: [x-header-3, x-header-4], allowCredentials: true, maxAge: 3600}"#),
        cors("/cors-2", r#"{allowOrigins: ["https://www.foo.com"], allowMethods: ["*"]}"#),
        cors("/cors-wildcard-origin", r#"{allowOrigins: ["*"], allowMethods: [PUT], allowCredentials: false}"#),
        cors("/cors-wildcard-methods-headers", r#"{allowOrigins: ["*"], allowMethods: ["*"], allowHeaders: ["*"], allowCredentials: true}"#),
        cors("/cors-wildcard-unauth", r#"{allowOrigins: ["*"], allowMethods: ["*"], allowHeaders: ["*"], allowCredentials: false}"#),
    ]
    .concat();
    let f = start(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: cors, namespace: infra}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n  rules:\n{rules}"
    ))
    .await;
    let gw = addr(&f, "infra/same-namespace", "http").await;
    let call = |method: &str, path: &str, headers: Vec<(&'static str, &'static str)>| {
        let req = client().request(method.parse().unwrap(), format!("http://{gw}{path}"));
        let req = headers.into_iter().fold(req, |r, (n, v)| r.header(n, v));
        async move { req.send().await.expect("request") }
    };
    let h = |r: &reqwest::Response, n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    let preflight = |origin: &'static str, method: &'static str| {
        vec![
            ("origin", origin),
            ("access-control-request-method", method),
            ("access-control-request-headers", "x-header-1, x-header-2"),
        ]
    };
    for origin in ["https://www.foo.com", "https://www.bar.com", "https://xpto.www.bar.com"] {
        let r = call("OPTIONS", "/cors-1", preflight(origin, "GET")).await;
        assert!(matches!(r.status().as_u16(), 200 | 204), "{origin}");
        assert!(r.headers().get("x-echo-service").is_none(), "answered by the gateway");
        assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some(origin));
        assert_eq!(h(&r, "access-control-allow-methods").as_deref(), Some("GET, OPTIONS"));
        assert_eq!(h(&r, "access-control-allow-headers").as_deref(), Some("x-header-1, x-header-2"));
        assert_eq!(h(&r, "access-control-expose-headers").as_deref(), Some("x-header-3, x-header-4"));
        assert_eq!(h(&r, "access-control-max-age").as_deref(), Some("3600"));
        assert_eq!(h(&r, "access-control-allow-credentials").as_deref(), Some("true"));
        let r = call("GET", "/cors-1", preflight(origin, "GET")).await;
        assert_eq!(r.headers().get("x-echo-service").unwrap(), "infra-backend-v1", "forwarded");
        assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some(origin));
    }
    let r =
        call("OPTIONS", "/cors-1", vec![("origin", "https://foobar.com"), ("access-control-request-method", "GET")])
            .await;
    assert!(r.headers().get("access-control-allow-origin").is_none() && r.headers().get("x-echo-service").is_none());
    let r = call("GET", "/cors-1", vec![("origin", "https://foobar.com")]).await;
    assert!(r.headers().get("access-control-allow-origin").is_none() && r.status() == 200);

    let r =
        call("OPTIONS", "/cors-2", vec![("origin", "https://www.foo.com"), ("access-control-request-method", "POST")])
            .await;
    assert_eq!(h(&r, "access-control-allow-methods").as_deref(), Some("*"));
    assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some("https://www.foo.com"));
    assert!(r.headers().get("access-control-allow-credentials").is_none());

    for origin in ["https://foobar.com", "https://foobar.com:12345"] {
        let r = call(
            "OPTIONS",
            "/cors-wildcard-origin",
            vec![("origin", origin), ("access-control-request-method", "PUT")],
        )
        .await;
        assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some("*"));
        assert_eq!(h(&r, "access-control-allow-methods").as_deref(), Some("PUT"));
        assert!(r.headers().get("access-control-allow-credentials").is_none());
        let r = call("PUT", "/cors-wildcard-origin", vec![("origin", origin)]).await;
        assert_eq!((r.status().as_u16(), h(&r, "access-control-allow-origin").as_deref()), (200, Some("*")));
    }
    let asked = vec![
        ("origin", "https://other.foo.com"),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "x-header-1, x-header-2"),
    ];
    let r = call("OPTIONS", "/cors-wildcard-methods-headers", asked.clone()).await;
    assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some("https://other.foo.com"));
    assert_eq!(h(&r, "access-control-allow-methods").as_deref(), Some("PUT"));
    assert_eq!(h(&r, "access-control-allow-headers").as_deref(), Some("x-header-1, x-header-2"));
    assert_eq!(h(&r, "access-control-allow-credentials").as_deref(), Some("true"));
    let r = call("OPTIONS", "/cors-wildcard-unauth", asked).await;
    assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some("*"));
    assert!(r.headers().get("access-control-allow-credentials").is_none());
    let r = call("GET", "/cors-wildcard-methods-headers", vec![("origin", "https://other.foo.com")]).await;
    assert_eq!(h(&r, "access-control-allow-origin").as_deref(), Some("https://other.foo.com"));
    assert_eq!(h(&r, "access-control-allow-credentials").as_deref(), Some("true"));
}

/// A backend that records the request line of every request and answers 200 (a mirror).
async fn recorder(ip: &str) -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(format!("{ip}:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&buf).to_string();
                log.lock().unwrap().push(text);
                let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            });
        }
    });
    (addr, seen)
}

/// HTTPRouteRequestMirror, -MultipleMirrors, -PercentageMirror: copies go to the mirrors (with
/// the rule's header changes), the share is respected, the client gets the real backend's
/// answer, and a mirror that is down changes nothing for the client.
#[tokio::test]
async fn request_mirrors() {
    let (m2, seen2) = recorder("127.0.0.31").await;
    let (m3, seen3) = recorder("127.0.0.32").await;
    let dead = support::closed_addr("127.0.0.33");
    let headers = "{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Header-Set, value: set-overwrites-values}], remove: [X-Header-Remove]}}";
    let mirror = |svc: &str, share: &str| {
        format!("{{type: RequestMirror, requestMirror: {{backendRef: {{name: {svc}, port: 8080}}{share}}}}}")
    };
    let f = start(&format!(
        r#"{}{}{}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: request-mirror, namespace: infra}}
spec:
  parentRefs: [{{name: same-namespace}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /mirror}}}}]
    filters: [{}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /multi-mirror-and-modify-request-headers}}}}]
    filters: [{headers}, {}, {}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /percent-mirror}}}}]
    filters: [{}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /percent-mirror-fraction}}}}]
    filters: [{}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /dead-mirror}}}}]
    filters: [{}]
    backendRefs: [{{name: infra-backend-v1, port: 8080}}]
"#,
        svc("infra", "mirror-v2", m2),
        svc("infra", "mirror-v3", m3),
        svc("infra", "mirror-dead", dead),
        mirror("mirror-v2", ""),
        mirror("mirror-v2", ""),
        mirror("mirror-v3", ""),
        mirror("mirror-v3", ", percent: 20"),
        mirror("mirror-v3", ", fraction: {numerator: 25, denominator: 50}"),
        mirror("mirror-dead", ""),
    ))
    .await;
    let gw = addr(&f, "infra/same-namespace", "http").await;
    let r = get(gw, "", "/mirror?request-id=one").await;
    expect(&r, "infra-backend-v1", "primary answers");
    eventually("mirrored to v2", || async {
        seen2.lock().unwrap().iter().any(|l| l.starts_with("GET /mirror?request-id=one HTTP/1.1"))
    })
    .await;
    let sent = [("X-Header-Remove", "remove-val"), ("X-Header-Set", "client")];
    let r = send(gw, "GET", "", "/multi-mirror-and-modify-request-headers?request-id=two", &sent).await;
    assert_eq!(r.header("x-header-set"), "set-overwrites-values");
    for (who, seen) in [("v2", &seen2), ("v3", &seen3)] {
        eventually(&format!("mirrored to {who}"), || async {
            seen.lock().unwrap().iter().any(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("request-id=two")
                    && l.contains("x-header-set: set-overwrites-values")
                    && !l.contains("x-header-remove")
            })
        })
        .await;
    }
    // Shares: 20 % and 25/50 of 500 requests each, within three standard deviations.
    for (path, p, lo, hi) in [("/percent-mirror", 0.2, 73, 127), ("/percent-mirror-fraction", 0.5, 217, 283)] {
        let before = seen3.lock().unwrap().len();
        for i in 0..500 {
            assert_eq!(get(gw, "", &format!("{path}?n={i}")).await.status, 200);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = seen3.lock().unwrap()[before..].iter().filter(|l| l.starts_with(&format!("GET {path}?"))).count();
        assert!((lo..=hi).contains(&n), "{path}: {n} of 500 mirrored (p = {p})");
    }
    // A mirror that refuses connections: the client does not notice.
    let started = std::time::Instant::now();
    expect(&get(gw, "", "/dead-mirror").await, "infra-backend-v1", "dead mirror");
    assert!(started.elapsed() < Duration::from_secs(2));
}
