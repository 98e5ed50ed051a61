//! Gateway API in Kubernetes mode, end to end: the real `ferry` binary against the test API
//! server (echo/src/apiserver.rs), objects applied with `kubectl` as users do. Status of
//! GatewayClasses, Gateways and HTTPRoutes; one Service per Gateway, created, updated and deleted
//! with it; Gateways created at runtime served on the container ports their Services name; CRDs
//! installed late, older served versions, and no status write loops. BackendTLSPolicy
//! `status.ancestors` following its CA bundle (ConfigMaps, TLS Secrets), and ConfigMaps that
//! RBAC does not let ferry read.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::apiserver::ApiServer;
use support::*;

const GROUP: &str = "gateway.networking.k8s.io";
const CONTROLLER: &str = "ferry.dev/gateway-controller";
const SELECTOR: [&str; 2] = ["--gateway-service-selector", "app.kubernetes.io/name=ferry"];

fn class() -> String {
    format!("apiVersion: {GROUP}/v1\nkind: GatewayClass\nmetadata: {{name: ferry}}\nspec: {{controllerName: {CONTROLLER}}}\n")
}

/// A Gateway of class `ferry` with HTTP listeners `(name, port)` that take routes from its own
/// namespace; `extra` is appended to the spec.
fn gateway(ns: &str, name: &str, listeners: &[(&str, u16)], extra: &str) -> String {
    let mut out = format!(
        "apiVersion: {GROUP}/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  gatewayClassName: ferry\n{extra}  listeners:\n"
    );
    for (l, port) in listeners {
        out += &format!("  - {{name: {l}, port: {port}, protocol: HTTP}}\n");
    }
    out
}

/// An HTTPRoute in `ns` for `host` on Gateway `parent` (`ns/name`) to Service `backend` port 80.
fn route(ns: &str, name: &str, parent: &str, host: &str, backend: &str) -> String {
    let (pns, pname) = parent.split_once('/').expect("ns/name");
    format!(
        "apiVersion: {GROUP}/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  \
         parentRefs: [{{name: {pname}, namespace: {pns}}}]\n  hostnames: [\"{host}\"]\n  \
         rules:\n  - backendRefs: [{{name: {backend}, port: 80}}]\n"
    )
}

fn status(api: &ApiServer, plural: &str, ns: &str, name: &str) -> Value {
    api.get(plural, ns, name).map(|o| o["status"].clone()).unwrap_or(Value::Null)
}

fn condition(conditions: &Value, type_: &str) -> Value {
    conditions.as_array().into_iter().flatten().find(|c| c["type"] == type_).cloned().unwrap_or(Value::Null)
}

/// Our entry in a route's `status.parents`.
fn our_parent(api: &ApiServer, ns: &str, name: &str) -> Value {
    let s = status(api, "httproutes", ns, name);
    s["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["controllerName"] == CONTROLLER)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The Service ferry made for Gateway `ns/name` (in ferry's namespace, `default` here).
fn gateway_service(api: &ApiServer, ns: &str, name: &str) -> Option<Value> {
    api.list("services")
        .into_iter()
        .find(|s| s["metadata"]["annotations"]["ferry.dev/gateway"] == format!("{ns}/{name}").as_str())
}

/// `(port, protocol, targetPort)` of a Service, by port.
fn service_ports(svc: &Value) -> Vec<(u64, String, u64)> {
    let mut v: Vec<_> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["port"].as_u64().unwrap_or(0),
                p["protocol"].as_str().unwrap_or("").to_string(),
                p["targetPort"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    v.sort();
    v
}

/// The listener of Gateway `ns/name` as `/routes` shows it, once it has an address.
async fn listener_address(f: &Ferry, gateway: &str, listener: &str) -> SocketAddr {
    let (ns, name) = gateway.split_once('/').expect("ns/name");
    let mut last = Value::Null;
    for _ in 0..600 {
        let routes: Value = serde_json::from_str(&f.admin_get("/routes").await).expect("routes JSON");
        let found = routes["gateways"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|g| g["namespace"] == ns && g["name"] == name)
            .flat_map(|g| g["listeners"].as_array().cloned().unwrap_or_default())
            .find(|l| l["name"] == listener);
        if let Some(l) = found {
            if let Some(a) = l["address"].as_str() {
                return a.parse().expect("address");
            }
            last = l;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("listener {gateway}/{listener} never got an address: {last}\n{}", f.log());
}

async fn get_at(at: SocketAddr, host: &str, path: &str) -> Reply {
    match client().get(format!("http://{at}{path}")).header("host", host).send().await {
        Ok(resp) => Reply::read(resp).await,
        Err(e) => Reply { status: 0, json: Value::Null, body: e.to_string(), version: reqwest::Version::HTTP_11 },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_gateway_and_route_status() {
    let api = ApiServer::start_new().await;
    let web = echo("127.0.0.2", "web").await;
    api.apply(&docs(&[
        class(),
        gateway("default", "gw", &[("http", 80)], ""),
        service("web", &[web]),
        route("default", "good", "default/gw", "good.test", "web"),
        route("default", "broken", "default/gw", "broken.test", "missing"),
    ]))
    .await;
    // Another controller's entry on the good route, and a route from a namespace the listener
    // does not allow.
    api.upsert(&format!(
        "{}status:\n  parents:\n  - parentRef: {{name: theirs}}\n    controllerName: example.com/other\n    \
         conditions: [{{type: Accepted, status: 'True', reason: Accepted, message: '', lastTransitionTime: '2026-01-01T00:00:00Z'}}]\n",
        route("default", "good", "default/gw", "good.test", "web")
    ));
    api.apply(&route("other", "outsider", "default/gw", "outsider.test", "web")).await;

    let ferry = Ferry::start_kube(&api, &["--lease-duration", "2", SELECTOR[0], SELECTOR[1]]);
    ferry.wait_ready().await;

    // GatewayClass: Accepted, with the features ferry claims.
    eventually("the GatewayClass is accepted", || async {
        condition(&status(&api, "gatewayclasses", "", "ferry")["conditions"], "Accepted")["status"] == "True"
    })
    .await;
    let class = status(&api, "gatewayclasses", "", "ferry");
    assert_eq!(condition(&class["conditions"], "Accepted")["observedGeneration"], 1);
    let features: Vec<&str> =
        class["supportedFeatures"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(features.contains(&"Gateway") && features.contains(&"HTTPRoute"), "{features:?}");

    // Gateway: conditions, the listener with its attached routes, addresses from its Service.
    eventually("the Gateway is programmed with an address", || async {
        let s = status(&api, "gateways", "default", "gw");
        condition(&s["conditions"], "Programmed")["status"] == "True" && s["addresses"].is_array()
    })
    .await;
    let svc = gateway_service(&api, "default", "gw").expect("the Gateway's Service");
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let gw = status(&api, "gateways", "default", "gw");
    assert_eq!(gw["addresses"], serde_json::json!([{"type": "IPAddress", "value": cluster_ip}]));
    assert_eq!(condition(&gw["conditions"], "Accepted")["status"], "True");
    assert_eq!(condition(&gw["conditions"], "Accepted")["observedGeneration"], 1);
    let l = &gw["listeners"][0];
    assert_eq!(l["name"], "http");
    assert_eq!(l["attachedRoutes"], 2, "good and broken attach, the outsider does not: {l}");
    assert_eq!(l["supportedKinds"][0], serde_json::json!({"group": GROUP, "kind": "HTTPRoute"}));
    for c in ["Accepted", "ResolvedRefs", "Programmed"] {
        assert_eq!(condition(&l["conditions"], c)["status"], "True", "{c}: {l}");
    }
    assert_eq!(condition(&l["conditions"], "Conflicted")["status"], "False");

    // The LoadBalancer gets an address: the Gateway's addresses follow.
    let svc_name = svc["metadata"]["name"].as_str().unwrap().to_string();
    api.upsert(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {svc_name}, namespace: default}}\n\
         status:\n  loadBalancer:\n    ingress: [{{ip: 192.0.2.50}}, {{hostname: gw.lb.example.test}}]\n"
    ));
    eventually("Gateway addresses come from the LoadBalancer", || async {
        status(&api, "gateways", "default", "gw")["addresses"]
            == serde_json::json!([{"type": "IPAddress", "value": "192.0.2.50"},
                                   {"type": "Hostname", "value": "gw.lb.example.test"}])
    })
    .await;

    // Routes: our entry per parent, group/kind/namespace spelled out; the other controller's kept.
    eventually("route parents are written", || async {
        our_parent(&api, "default", "good").is_object()
            && our_parent(&api, "default", "broken").is_object()
            && our_parent(&api, "other", "outsider").is_object()
    })
    .await;
    let good = our_parent(&api, "default", "good");
    assert_eq!(
        good["parentRef"],
        serde_json::json!({"group": GROUP, "kind": "Gateway", "namespace": "default", "name": "gw"})
    );
    assert_eq!(condition(&good["conditions"], "Accepted")["status"], "True");
    assert_eq!(condition(&good["conditions"], "ResolvedRefs")["status"], "True");
    assert_eq!(condition(&good["conditions"], "Accepted")["observedGeneration"], 1);
    let parents = status(&api, "httproutes", "default", "good")["parents"].clone();
    assert!(parents.as_array().unwrap().iter().any(|p| p["controllerName"] == "example.com/other"), "{parents}");
    let broken = our_parent(&api, "default", "broken");
    assert_eq!(condition(&broken["conditions"], "Accepted")["status"], "True");
    let refs = condition(&broken["conditions"], "ResolvedRefs");
    assert_eq!((refs["status"].as_str(), refs["reason"].as_str()), (Some("False"), Some("BackendNotFound")), "{refs}");
    let outsider = condition(&our_parent(&api, "other", "outsider")["conditions"], "Accepted");
    assert_eq!(
        (outsider["status"].as_str(), outsider["reason"].as_str()),
        (Some("False"), Some("NotAllowedByListeners"))
    );

    // A rejected object gets a Warning Event naming it, with the Gateway API's apiVersion.
    eventually("an Event names the broken route", || async {
        api.list("events").iter().any(|e| {
            e["involvedObject"]["kind"] == "HTTPRoute"
                && e["involvedObject"]["name"] == "broken"
                && e["involvedObject"]["apiVersion"] == format!("{GROUP}/v1").as_str()
                && e["type"] == "Warning"
        })
    })
    .await;

    // The route stops naming our Gateway: our entry goes, the other controller's stays.
    api.apply(&route("default", "good", "default/elsewhere", "good.test", "web")).await;
    eventually("our entry is dropped", || async { our_parent(&api, "default", "good").is_null() }).await;
    let parents = status(&api, "httproutes", "default", "good")["parents"].clone();
    assert_eq!(parents.as_array().unwrap().len(), 1, "{parents}");
    assert_eq!(parents[0]["controllerName"], "example.com/other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_written_once_not_in_a_loop() {
    let api = ApiServer::start_new().await;
    let web = echo("127.0.0.2", "web").await;
    api.apply(&docs(&[
        class(),
        gateway("default", "gw", &[("http", 80)], ""),
        service("web", &[web]),
        route("default", "r", "default/gw", "r.test", "web"),
    ]))
    .await;
    let ferry = Ferry::start_kube(&api, &["--lease-duration", "2", SELECTOR[0], SELECTOR[1]]);
    ferry.wait_ready().await;
    eventually("every status is written", || async {
        our_parent(&api, "default", "r").is_object()
            && condition(&status(&api, "gateways", "default", "gw")["conditions"], "Programmed")["status"] == "True"
            && !status(&api, "gatewayclasses", "", "ferry").is_null()
    })
    .await;
    // Our writes come back as watch events and rebuild the table; an unrelated change does too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counts = |api: &ApiServer| {
        ["gatewayclasses", "gateways", "httproutes", "services"].map(|p| {
            let ours = |w: &&support::apiserver::Write| w.user_agent.starts_with("ferry/");
            api.writes()
                .iter()
                .filter(ours)
                .filter(|w| w.plural == p && (w.subresource == "status" || p == "services"))
                .count()
        })
    };
    let settled = counts(&api);
    api.apply(&ingress("unrelated", &[("u.test", "Prefix", "/", "web")])).await;
    eventually("the unrelated change is served", || async { ferry.get("u.test", "/").await.status == 200 }).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(counts(&api), settled, "no further writes: {:?}", api.writes());
    assert_eq!(settled[0], 1, "GatewayClass status written once");
    assert_eq!(settled[2], 1, "HTTPRoute status written once");
    assert!(settled[1] <= 2, "Gateway status: at most once before and once after its address: {settled:?}");
    assert_eq!(settled[3], 1, "the Gateway's Service written once");
    assert!(api.writes().iter().filter(|w| w.subresource == "status").all(|w| w.field_manager == "ferry"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gateway_gets_a_service_created_updated_and_deleted_with_it() {
    let api = ApiServer::start_new().await;
    // A Service of the name ferry would pick, not ferry's: it must never be touched.
    api.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: default-edge, namespace: default}\n\
         spec:\n  ports: [{name: x, port: 1}]\n",
    )
    .await;
    let infra = "  infrastructure:\n    labels: {team: edge}\n    annotations: {lb.example.test/type: nlb}\n";
    api.apply(&docs(&[
        class(),
        gateway("default", "edge", &[("http", 80)], infra),
        gateway("other", "apps", &[("http", 80)], ""),
    ]))
    .await;
    let (first, last) = free_port_range(10);
    let range = format!("{first}-{last}");
    let flags = ["--lease-duration", "2", "--gateway-ports", &range, SELECTOR[0], SELECTOR[1]];
    let ferry = Ferry::start_kube(&api, &flags);
    ferry.wait_ready().await;

    eventually("both Gateways have a Service", || async {
        gateway_service(&api, "default", "edge").is_some() && gateway_service(&api, "other", "apps").is_some()
    })
    .await;
    let edge = gateway_service(&api, "default", "edge").unwrap();
    let name = edge["metadata"]["name"].as_str().unwrap().to_string();
    assert_ne!(name, "default-edge", "the foreign Service keeps its name");
    assert_eq!(api.get("services", "default", "default-edge").unwrap()["spec"]["ports"][0]["port"], 1);
    assert!(api.writes().iter().all(|w| w.name != "default-edge" || w.field_manager != "ferry"));
    assert_eq!(edge["spec"]["type"], "LoadBalancer");
    assert_eq!(edge["spec"]["selector"], serde_json::json!({"app.kubernetes.io/name": "ferry"}));
    let labels = &edge["metadata"]["labels"];
    assert_eq!(labels["ferry.dev/owned-by"], "ferry-leader");
    assert_eq!(
        (labels["ferry.dev/gateway-namespace"].as_str(), labels["ferry.dev/gateway-name"].as_str()),
        (Some("default"), Some("edge"))
    );
    assert_eq!(labels["team"], "edge", "infrastructure labels propagated");
    assert_eq!(edge["metadata"]["annotations"]["lb.example.test/type"], "nlb");
    let owner = &edge["metadata"]["ownerReferences"][0];
    assert_eq!((owner["kind"].as_str(), owner["name"].as_str()), (Some("Gateway"), Some("edge")));
    let apps = gateway_service(&api, "other", "apps").unwrap();
    assert!(apps["metadata"]["ownerReferences"].is_null(), "no owner across namespaces");
    assert_eq!(apps["metadata"]["namespace"], "default", "in ferry's namespace");
    let ports = service_ports(&edge);
    assert_eq!(ports.len(), 1);
    let (port, protocol, target) = ports[0].clone();
    assert_eq!((port, protocol.as_str()), (80, "TCP"));
    assert!((u64::from(first)..=u64::from(last)).contains(&target), "{target} in {range}");
    let apps_target = service_ports(&apps)[0].2;
    assert_ne!(target, apps_target, "each Gateway port has a container port of its own");

    // A listener is added: one more port; the existing one keeps its container port.
    api.apply(&gateway("default", "edge", &[("http", 80), ("alt", 8080)], infra)).await;
    eventually("the Service gets the new port", || async {
        gateway_service(&api, "default", "edge").is_some_and(|s| service_ports(&s).len() == 2)
    })
    .await;
    let ports = service_ports(&gateway_service(&api, "default", "edge").unwrap());
    assert_eq!(ports[0], (80, "TCP".to_string(), target), "stable allocation");
    assert!(![target, apps_target].contains(&ports[1].2));

    // The Gateway goes: so does its Service (the other Gateway's stays).
    let (ok, out) = api.kubectl(&["delete", "gateway", "edge"], None).await;
    assert!(ok, "{out}");
    eventually("the Service is deleted", || async { gateway_service(&api, "default", "edge").is_none() }).await;
    assert!(gateway_service(&api, "other", "apps").is_some());
    assert!(api.get("services", "default", "default-edge").is_some(), "the foreign Service is never deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_created_at_runtime_is_served_without_restart() {
    let api = ApiServer::start_new().await;
    let web = echo("127.0.0.2", "web").await;
    api.apply(&docs(&[class(), service("web", &[web])])).await;
    let ferry = Ferry::start_kube(&api, &["--lease-duration", "2", SELECTOR[0], SELECTOR[1]]);
    ferry.wait_ready().await;

    api.apply(&docs(&[
        gateway("default", "late", &[("http", 80)], ""),
        route("default", "r", "default/late", "late.test", "web"),
    ]))
    .await;
    let at = listener_address(&ferry, "default/late", "http").await;
    let svc = gateway_service(&api, "default", "late").expect("its Service");
    assert_eq!(u64::from(at.port()), service_ports(&svc)[0].2, "served on the port its Service targets");
    eventually("the runtime Gateway serves its route", || async {
        let r = get_at(at, "late.test", "/").await;
        r.status == 200 && r.endpoint() == web.to_string()
    })
    .await;

    // A listener added later is served too, on its own container port.
    api.apply(&gateway("default", "late", &[("http", 80), ("alt", 8080)], "")).await;
    let alt = listener_address(&ferry, "default/late", "alt").await;
    assert_ne!(alt.port(), at.port());
    eventually("the new listener serves", || async { get_at(alt, "late.test", "/").await.status == 200 }).await;
    assert_eq!(get_at(at, "late.test", "/").await.status, 200, "the first listener is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_without_gateway_api_crds_and_picks_them_up_once_installed() {
    let api = ApiServer::start_new().await;
    api.set_gateway_api_installed(false);
    let web = echo("127.0.0.2", "web").await;
    api.apply(&docs(&[service("web", &[web]), ingress("shop", &[("a.test", "Prefix", "/", "web")])])).await;
    let ferry = Ferry::start_kube(&api, &["--lease-duration", "2", SELECTOR[0], SELECTOR[1]]);
    ferry.wait_ready().await;
    assert_eq!(ferry.get("a.test", "/").await.status, 200, "Ingress works without the Gateway API");

    // The CRDs arrive (no restart): Gateway API objects are watched, served and given status.
    api.set_gateway_api_installed(true);
    api.apply(&docs(&[
        class(),
        gateway("default", "gw", &[("http", 80)], ""),
        route("default", "r", "default/gw", "r.test", "web"),
    ]))
    .await;
    let at = listener_address(&ferry, "default/gw", "http").await;
    eventually_within("the route is served", Duration::from_secs(15), || async {
        get_at(at, "r.test", "/").await.status == 200
    })
    .await;
    eventually("route status is written", || async {
        condition(&our_parent(&api, "default", "r")["conditions"], "Accepted")["status"] == "True"
    })
    .await;
    assert_eq!(ferry.get("a.test", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_served_versions_are_read_and_written() {
    let api = ApiServer::start_new().await;
    // A cluster whose CRDs serve HTTPRoute only as v1beta1 and GRPCRoute only as v1alpha2.
    api.set_version_installed("httproutes", "v1", false);
    api.set_version_installed("grpcroutes", "v1", false);
    let web = echo("127.0.0.2", "web").await;
    api.apply(&docs(&[class(), gateway("default", "gw", &[("http", 80)], ""), service("web", &[web])])).await;
    api.upsert(
        &route("default", "r", "default/gw", "r.test", "web")
            .replace(&format!("{GROUP}/v1"), &format!("{GROUP}/v1beta1")),
    );
    let ferry = Ferry::start_kube(&api, &["--lease-duration", "2", SELECTOR[0], SELECTOR[1]]);
    ferry.wait_ready().await;
    let at = listener_address(&ferry, "default/gw", "http").await;
    eventually("the v1beta1 route is served", || async { get_at(at, "r.test", "/").await.status == 200 }).await;
    eventually("its status is written", || async { our_parent(&api, "default", "r").is_object() }).await;
    let writes: Vec<_> = api.writes().into_iter().filter(|w| w.plural == "httproutes").collect();
    assert!(writes.iter().all(|w| w.version == "v1beta1"), "written in the served version: {writes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_each_listener_on_the_port_its_service_names() {
    let api = ApiServer::start_new().await;
    let web = echo("127.0.0.2", "web").await;
    api.apply(&docs(&[class(), service("web", &[web])])).await;
    let (first, last) = free_port_range(10);
    let range = format!("{first}-{last}");
    let flags = ["--lease-duration", "2", "--gateway-ports", &range, SELECTOR[0], SELECTOR[1]];
    // Two replicas on different loopback addresses, so that both can bind the same port.
    let one = Ferry::start_kube_on(&api, "127.0.0.1", &flags);
    let two = Ferry::start_kube_on(&api, "127.0.0.5", &flags);
    one.wait_ready().await;
    two.wait_ready().await;
    api.apply(&docs(&[
        gateway("default", "a", &[("http", 80)], ""),
        gateway("default", "b", &[("http", 80), ("alt", 8080)], ""),
        route("default", "ra", "default/a", "a.test", "web"),
        route("default", "rb", "default/b", "b.test", "web"),
    ]))
    .await;
    for (gw, l, host) in
        [("default/a", "http", "a.test"), ("default/b", "http", "b.test"), ("default/b", "alt", "b.test")]
    {
        let (at_one, at_two) = (listener_address(&one, gw, l).await, listener_address(&two, gw, l).await);
        assert_eq!(at_one.port(), at_two.port(), "{gw} {l}: both replicas on one container port");
        assert_eq!((at_one.ip().to_string(), at_two.ip().to_string()), ("127.0.0.1".into(), "127.0.0.5".into()));
        for at in [at_one, at_two] {
            eventually("each replica serves the route", || async { get_at(at, host, "/").await.status == 200 }).await;
        }
    }
    // One writer: the Services were written by the leader alone.
    let holder =
        api.get("leases", "default", "ferry-leader").unwrap()["spec"]["holderIdentity"].as_str().unwrap().to_string();
    let service_writes: Vec<_> =
        api.writes().into_iter().filter(|w| w.plural == "services" && w.user_agent.starts_with("ferry/")).collect();
    assert_eq!(service_writes.len(), 2, "{service_writes:?}");
    assert!(service_writes.iter().all(|w| w.user_agent.contains(&holder)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_namespace_applies_to_gateway_api_kinds() {
    let api = ApiServer::start_new().await;
    let web = echo("127.0.0.2", "web").await;
    api.apply(&docs(&[
        class(),
        service("web", &[web]),
        gateway("default", "seen", &[("http", 80)], ""),
        gateway("elsewhere", "unseen", &[("http", 80)], ""),
    ]))
    .await;
    let ferry =
        Ferry::start_kube(&api, &["--watch-namespace", "default", "--lease-duration", "2", SELECTOR[0], SELECTOR[1]]);
    ferry.wait_ready().await;
    eventually("the watched Gateway gets status", || async { !status(&api, "gateways", "default", "seen").is_null() })
        .await;
    assert!(status(&api, "gatewayclasses", "", "ferry").is_object(), "GatewayClasses are cluster-scoped");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(status(&api, "gateways", "elsewhere", "unseen").is_null(), "not watched, not written");
    assert!(gateway_service(&api, "elsewhere", "unseen").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_mode_needs_a_gateway_ports_range() {
    let api = ApiServer::start_new().await;
    let mut ferry = Ferry::start_kube(&api, &["--gateway-ports", "0"]);
    assert_eq!(ferry.wait_exit(Duration::from_secs(10)).await, Some(1), "start-up must fail; log:\n{}", ferry.log());
    assert!(ferry.log().contains("Kubernetes mode needs --gateway-ports FIRST-LAST"), "{}", ferry.log());
}

// ---- BackendTLSPolicy ----

/// A self-signed CA certificate (PEM), as a BackendTLSPolicy's CA bundle holds.
fn ca_pem() -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "ferry test CA");
    let key = rcgen::KeyPair::generate().expect("CA key");
    params.self_signed(&key).expect("CA certificate").pem()
}

/// ConfigMap `name` in `default` whose `ca.crt` is `ca` (and another key ferry ignores).
fn ca_config_map(name: &str, ca: &str) -> String {
    let value = if ca.is_empty() {
        " \"\"\n".to_string()
    } else {
        format!(" |\n{}", ca.lines().map(|l| format!("    {l}\n")).collect::<String>())
    };
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\ndata:\n  \
         unrelated: keep me out of ferry\n  ca.crt:{value}"
    )
}

/// Service `name` with one port `btls`/443 and an EndpointSlice to `ep`.
fn tls_service(name: &str, ep: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  \
         ports:\n  - {{name: btls, port: 443}}\n---\n{}",
        endpoint_slice(&format!("{name}-0"), name, "btls", &ep, "ready: true").trim_start_matches("---\n")
    )
}

/// An HTTPRoute for `host` on Gateway `default/gw` to Service `backend` port 443.
fn tls_route(name: &str, host: &str, backend: &str) -> String {
    format!(
        "apiVersion: {GROUP}/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  \
         parentRefs: [{{name: gw}}]\n  hostnames: [\"{host}\"]\n  \
         rules:\n  - backendRefs: [{{name: {backend}, port: 443}}]\n"
    )
}

/// A BackendTLSPolicy for port `btls` of Service `service`, its CA bundle in `ca_kind` `ca_name`.
fn backend_tls_policy(name: &str, service: &str, ca_kind: &str, ca_name: &str) -> String {
    format!(
        "apiVersion: {GROUP}/v1\nkind: BackendTLSPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  \
         targetRefs: [{{group: \"\", kind: Service, name: {service}, sectionName: btls}}]\n  validation:\n    \
         caCertificateRefs: [{{group: \"\", kind: {ca_kind}, name: {ca_name}}}]\n    hostname: abc.example.com\n"
    )
}

/// Our entry in a BackendTLSPolicy's `status.ancestors`.
fn our_ancestor(api: &ApiServer, name: &str) -> Value {
    status(api, "backendtlspolicies", "default", name)["ancestors"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["controllerName"] == CONTROLLER)
        .cloned()
        .unwrap_or(Value::Null)
}

/// `(status, reason)` of condition `type_` of our ancestor entry.
fn ancestor_condition(api: &ApiServer, name: &str, type_: &str) -> (String, String) {
    let c = condition(&our_ancestor(api, name)["conditions"], type_);
    (c["status"].as_str().unwrap_or("").to_string(), c["reason"].as_str().unwrap_or("").to_string())
}

/// Waits (10 s) until our ancestor entry of policy `name` says `Accepted` and `ResolvedRefs` as
/// given (`(status, reason)`); on timeout, panics with the stored status and ferry's log.
async fn wait_for_policy(api: &ApiServer, f: &Ferry, name: &str, accepted: (&str, &str), resolved: (&str, &str)) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = (ancestor_condition(api, name, "Accepted"), ancestor_condition(api, name, "ResolvedRefs"));
        let want = ((accepted.0.to_string(), accepted.1.to_string()), (resolved.0.to_string(), resolved.1.to_string()));
        if got == want {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "BackendTLSPolicy default/{name}: want Accepted={accepted:?} ResolvedRefs={resolved:?} in our \
                 status.ancestors entry, got {got:?}; stored status: {}\n(the entries come from the build's \
                 GatewayApiStatus.policies; none at all means the build reported no ancestor)\n{}",
                status(api, "backendtlspolicies", "default", name),
                f.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `ferry_table_builds_total`.
async fn builds(f: &Ferry) -> u64 {
    let metrics = f.admin_get("/metrics").await;
    metrics.lines().find_map(|l| l.strip_prefix("ferry_table_builds_total ")).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The number of table builds once it has not changed for a second (our status writes come back
/// as watch events and rebuild the table).
async fn quiet_builds(f: &Ferry) -> u64 {
    let mut last = builds(f).await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let now = builds(f).await;
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("ferry keeps rebuilding its table: {last} builds\n{}", f.log());
}

const ACCEPTED: (&str, &str) = ("True", "Accepted");
const RESOLVED: (&str, &str) = ("True", "ResolvedRefs");
const NO_VALID_CA: (&str, &str) = ("False", "NoValidCACertificate");
const INVALID_CA_REF: (&str, &str) = ("False", "InvalidCACertificateRef");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_policy_status_follows_its_ca_bundle() {
    let api = ApiServer::start_new().await;
    let ca = ca_pem();
    // Endpoints only need to exist: these assertions are about status, not traffic.
    let ep: SocketAddr = "127.0.0.2:1443".parse().unwrap();
    api.apply(&docs(&[
        class(),
        gateway("default", "gw", &[("http", 80)], ""),
        tls_service("tls-svc", ep),
        tls_route("secure", "abc.example.com", "tls-svc"),
        ca_config_map("ca", &ca),
    ]))
    .await;
    // Another controller's ancestor entry is there first; a TLS Secret holding a CA bundle is
    // there too, but no policy names it yet.
    api.upsert(&format!(
        "{}status:\n  ancestors:\n  - ancestorRef: {{name: theirs}}\n    controllerName: example.com/other\n    \
         conditions: [{{type: Accepted, status: 'True', reason: Accepted, message: '', lastTransitionTime: '2026-01-01T00:00:00Z'}}]\n",
        backend_tls_policy("btls", "tls-svc", "ConfigMap", "ca")
    ));
    let theirs = status(&api, "backendtlspolicies", "default", "btls")["ancestors"][0].clone();
    let indented = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    api.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: ca-secret, namespace: default}}\ntype: kubernetes.io/tls\n\
         stringData:\n  tls.crt: |\n{}  tls.key: unused\n  ca.crt: |\n{}",
        indented(&ca),
        indented(&ca)
    ))
    .await;

    let ferry = Ferry::start_kube(&api, &["--lease-duration", "2", SELECTOR[0], SELECTOR[1]]);
    ferry.wait_ready().await;

    // Our entry: the Gateway as ancestor, spelled out; the other controller's entry untouched.
    wait_for_policy(&api, &ferry, "btls", ACCEPTED, RESOLVED).await;
    let ours = our_ancestor(&api, "btls");
    assert_eq!(
        ours["ancestorRef"],
        serde_json::json!({"group": GROUP, "kind": "Gateway", "namespace": "default", "name": "gw"})
    );
    assert_eq!(condition(&ours["conditions"], "Accepted")["observedGeneration"], 1);
    let ancestors = status(&api, "backendtlspolicies", "default", "btls")["ancestors"].clone();
    assert_eq!(ancestors.as_array().map(Vec::len), Some(2), "{ancestors}");
    assert_eq!(ancestors[0], theirs, "the other controller's entry is kept as it was");
    // Written once, not in a loop (our write comes back as a watch event).
    let writes = |api: &ApiServer| {
        api.writes().iter().filter(|w| w.plural == "backendtlspolicies" && w.subresource == "status").count()
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(writes(&api), 1, "{:?}", api.writes());
    assert!(api.writes().iter().all(|w| w.plural != "configmaps" || !w.user_agent.starts_with("ferry/")));

    // The CA bundle is emptied: no valid CA certificate, the reference does not resolve.
    api.apply(&ca_config_map("ca", "")).await;
    wait_for_policy(&api, &ferry, "btls", NO_VALID_CA, INVALID_CA_REF).await;
    assert_eq!(status(&api, "backendtlspolicies", "default", "btls")["ancestors"][0], theirs);
    // A write to the ConfigMap that leaves ca.crt alone is no change for ferry: no rebuild.
    let settled = quiet_builds(&ferry).await;
    api.apply(&ca_config_map("ca", "").replace("keep me out of ferry", "changed")).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(builds(&ferry).await, settled, "an unrelated ConfigMap key caused a rebuild");
    // Restored: accepted again.
    api.apply(&ca_config_map("ca", &ca)).await;
    wait_for_policy(&api, &ferry, "btls", ACCEPTED, RESOLVED).await;

    // A policy whose ConfigMap does not exist yet is accepted once it is created.
    api.apply(&docs(&[
        tls_service("late-svc", ep),
        tls_route("late", "late.example.com", "late-svc"),
        backend_tls_policy("late", "late-svc", "ConfigMap", "ca-late"),
    ]))
    .await;
    wait_for_policy(&api, &ferry, "late", NO_VALID_CA, INVALID_CA_REF).await;
    api.apply(&ca_config_map("ca-late", &ca)).await;
    wait_for_policy(&api, &ferry, "late", ACCEPTED, RESOLVED).await;

    // The CA bundle in a TLS Secret that no policy named when ferry listed it (so ferry kept
    // none of its data): a policy naming it now is accepted.
    api.apply(&docs(&[
        tls_service("secret-svc", ep),
        tls_route("from-secret", "secret.example.com", "secret-svc"),
        backend_tls_policy("from-secret", "secret-svc", "Secret", "ca-secret"),
    ]))
    .await;
    wait_for_policy(&api, &ferry, "from-secret", ACCEPTED, RESOLVED).await;

    // No route of ours uses the Service any more: our entry goes, the other controller's stays.
    let (ok, out) = api.kubectl(&["delete", "httproute", "secure"], None).await;
    assert!(ok, "{out}");
    eventually("our ancestor entry is dropped", || async { our_ancestor(&api, "btls").is_null() }).await;
    let ancestors = status(&api, "backendtlspolicies", "default", "btls")["ancestors"].clone();
    assert_eq!(ancestors, serde_json::json!([theirs]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_without_permission_to_read_config_maps() {
    let api = ApiServer::start_new().await;
    // An older ClusterRole: nothing on configmaps.
    api.set_forbidden("configmaps", true);
    let web = echo("127.0.0.2", "web").await;
    let ep: SocketAddr = "127.0.0.2:1443".parse().unwrap();
    api.apply(&docs(&[
        class(),
        gateway("default", "gw", &[("http", 80)], ""),
        service("web", &[web]),
        ingress("shop", &[("a.test", "Prefix", "/", "web")]),
        tls_service("tls-svc", ep),
        tls_route("secure", "abc.example.com", "tls-svc"),
        backend_tls_policy("btls", "tls-svc", "ConfigMap", "ca"),
    ]))
    .await;
    api.upsert(&ca_config_map("ca", &ca_pem()));
    let ferry = Ferry::start_kube(&api, &["--lease-duration", "2", SELECTOR[0], SELECTOR[1]]);
    ferry.wait_ready().await;
    assert_eq!(ferry.get("a.test", "/").await.status, 200, "serving without ConfigMaps");
    let log = ferry.log();
    assert!(
        log.contains("cannot list; serving without these objects")
            && log.contains("may ferry list and watch configmaps"),
        "the missing permission is named in the log:\n{log}"
    );
    // The ConfigMap cannot be read: the policy's reference does not resolve.
    wait_for_policy(&api, &ferry, "btls", NO_VALID_CA, INVALID_CA_REF).await;

    // The permission is granted (no restart): the CA bundle is read.
    api.set_forbidden("configmaps", false);
    wait_for_policy(&api, &ferry, "btls", ACCEPTED, RESOLVED).await;
}
