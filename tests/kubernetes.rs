//! Kubernetes mode end to end: the real `ferry` binary watches the test API server on loopback
//! (echo/src/apiserver.rs) through a kubeconfig; objects arrive the way users send them,
//! with `kubectl apply`.

mod support;

use std::time::{Duration, Instant};

use support::apiserver::ApiServer;
use support::*;

async fn metric(ferry: &Ferry, name: &str) -> Option<f64> {
    let text = ferry.admin_get("/metrics").await;
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_routes_updates_and_deletes() {
    let api = ApiServer::start_new().await;
    let (web, web2) = (echo("127.0.0.2", "web").await, echo("127.0.0.3", "web").await);
    api.apply(&docs(&[service("web", &[web]), ingress("shop", &[("a.test", "Prefix", "/", "web")])])).await;

    let ferry = Ferry::start_kube(&api, &[]);
    ferry.wait_ready().await;
    let r = ferry.get("a.test", "/").await;
    assert_eq!((r.status, r.endpoint()), (200, web.to_string().as_str()), "{}", r.body);

    // The endpoint moves: the EndpointSlice is re-applied with the new pod.
    api.apply(&service("web", &[web2])).await;
    eventually("the new endpoint serves", || async { ferry.get("a.test", "/").await.endpoint() == web2.to_string() })
        .await;

    // A second Ingress added by kubectl is served next to the first.
    api.apply(&ingress("blog", &[("b.test", "Prefix", "/", "web")])).await;
    eventually("the new Ingress serves", || async { ferry.get("b.test", "/").await.status == 200 }).await;

    let (ok, out) = api.kubectl(&["delete", "ingress", "shop"], None).await;
    assert!(ok, "kubectl delete: {out}");
    eventually("the deleted Ingress answers 404", || async { ferry.get("a.test", "/").await.status == 404 }).await;
    assert_eq!(ferry.get("b.test", "/").await.status, 200);
    assert_eq!(metric(&ferry, "ferry_source_connected").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_listed_then_serves_through_api_outages() {
    let api = ApiServer::start_new().await;
    let (web, web2) = (echo("127.0.0.2", "web").await, echo("127.0.0.3", "web").await);
    api.upsert(&docs(&[service("web", &[web]), ingress("shop", &[("a.test", "Prefix", "/", "web")])]));

    // Started while the API server is down: alive but not ready, and it never serves an empty table.
    api.stop();
    let mut ferry = Ferry::start_kube(&api, &[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(ferry.is_running(), "ferry must wait for the API server, not exit; log:\n{}", ferry.log());
    assert_eq!(ferry.readyz().await, Some(503), "not ready before the first complete list");
    api.start().await;
    ferry.wait_ready().await;
    assert_eq!(ferry.get("a.test", "/").await.endpoint(), web.to_string());

    // Outage: the API server goes away for a few seconds. Traffic keeps flowing on the last
    // table, readiness holds, and the metric says the source is disconnected.
    api.stop();
    let until = Instant::now() + Duration::from_secs(3);
    let mut served = 0;
    while Instant::now() < until {
        let r = ferry.get("a.test", "/").await;
        assert_eq!(r.status, 200, "request during the API outage: {}", r.body);
        assert_eq!(ferry.readyz().await, Some(200), "stays ready during the outage");
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served > 10);
    eventually("ferry_source_connected drops to 0", || async {
        metric(&ferry, "ferry_source_connected").await == Some(0.0)
    })
    .await;

    // Meanwhile the endpoint changed and history was compacted: the watch resumes with
    // 410 Gone, ferry re-lists, and the change is picked up without a gap in service.
    api.upsert(&service("web", &[web2]));
    api.compact();
    api.start().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = ferry.get("a.test", "/").await;
        assert_eq!(r.status, 200, "no partial table during the re-list: {}", r.body);
        if r.endpoint() == web2.to_string() {
            break;
        }
        assert!(Instant::now() < deadline, "change made during the outage not picked up; log:\n{}", ferry.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every watch is back within its retry delay (at most ~6 s, twice: the resumed watch gets
    // 410, then the re-list).
    eventually_within("ferry_source_connected back to 1", Duration::from_secs(20), || async {
        metric(&ferry, "ferry_source_connected").await == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_namespace_limits_what_is_served() {
    let api = ApiServer::start_new().await;
    let web = echo("127.0.0.2", "web").await;
    let in_ns = |ns: &str, host: &str| {
        docs(&[service("web", &[web]), ingress("shop", &[(host, "Prefix", "/", "web")])])
            .replace("namespace: default", &format!("namespace: {ns}"))
    };
    api.upsert(&in_ns("team-a", "a.test"));
    api.upsert(&in_ns("team-b", "b.test"));
    let ferry = Ferry::start_kube(&api, &["--watch-namespace", "team-a"]);
    ferry.wait_ready().await;
    assert_eq!(ferry.get("a.test", "/").await.status, 200);
    assert_eq!(ferry.get("b.test", "/").await.status, 404, "team-b is not watched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_secret_rotation_reaches_new_handshakes() {
    let api = ApiServer::start_new().await;
    let web = echo("127.0.0.2", "web").await;
    let hosts = vec!["a.test".to_string()];
    let (first, first_pem) = ferry_echo::tls_secret_manifest("default", "a-tls", &hosts).unwrap();
    let (second, second_pem) = ferry_echo::tls_secret_manifest("default", "a-tls", &hosts).unwrap();
    let tls_ingress = format!(
        "{}  tls:\n  - hosts: [a.test]\n    secretName: a-tls\n",
        ingress("shop", &[("a.test", "Prefix", "/", "web")])
    );
    api.apply(&docs(&[service("web", &[web]), tls_ingress, first])).await;
    let ferry = Ferry::start_kube(&api, &[]);
    ferry.wait_ready().await;

    let (reply, der) = get_tls(ferry.https, "a.test", &[&first_pem], false).await.expect("TLS request");
    assert_eq!((reply.status, der), (200, der_of(&first_pem)));

    api.apply(&second).await;
    eventually("new handshakes present the rotated certificate", || async {
        matches!(get_tls(ferry.https, "a.test", &[&second_pem], false).await, Ok((_, der)) if der == der_of(&second_pem))
    })
    .await;

    // A Secret no Ingress references is kept as metadata only; once an Ingress names it, ferry
    // fetches its data again and serves it.
    let (b_secret, b_pem) = ferry_echo::tls_secret_manifest("default", "b-tls", &["b.test".to_string()]).unwrap();
    api.apply(&b_secret).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b_ingress = format!(
        "{}  tls:\n  - hosts: [b.test]\n    secretName: b-tls\n",
        ingress("blog", &[("b.test", "Prefix", "/", "web")])
    );
    api.apply(&b_ingress).await;
    eventually("the later-referenced Secret is served", || async {
        matches!(get_tls(ferry.https, "b.test", &[&b_pem], false).await, Ok((r, der)) if r.status == 200 && der == der_of(&b_pem))
    })
    .await;

    // An Ingress of a class that is not (yet) ours: its Secret is kept as metadata only. When
    // the IngressClass arrives naming ferry's controller, the Ingress is ours and its Secret is
    // fetched again and served (the IngressClass change alone brings that about).
    let (c_secret, c_pem) = ferry_echo::tls_secret_manifest("default", "c-tls", &["c.test".to_string()]).unwrap();
    let c_ingress = format!(
        "{}  tls:\n  - hosts: [c.test]\n    secretName: c-tls\n",
        ingress("partner-shop", &[("c.test", "Prefix", "/", "web")])
    )
    .replace("ingressClassName: ferry", "ingressClassName: partner");
    assert!(c_ingress.contains("ingressClassName: partner"), "{c_ingress}");
    api.apply(&docs(&[c_secret, c_ingress])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(get_tls(ferry.https, "c.test", &[&c_pem], false).await.is_err(), "not ours yet: no certificate");
    api.apply(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: partner}\n\
         spec: {controller: ferry.dev/ingress-controller}\n",
    )
    .await;
    eventually("the Secret of an Ingress that became ours through its class is served", || async {
        matches!(get_tls(ferry.https, "c.test", &[&c_pem], false).await, Ok((r, der)) if r.status == 200 && der == der_of(&c_pem))
    })
    .await;
}

/// A Secret no Ingress references keeps its data for a grace period (its Ingress usually comes
/// right after it) and is then kept as metadata alone; when an Ingress names it later, ferry
/// reads it again by name and serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreferenced_secrets_keep_their_data_for_a_while_then_are_fetched_again() {
    let api = ApiServer::start_new().await;
    let web = echo("127.0.0.2", "web").await;
    api.apply(&docs(&[service("web", &[web]), ingress("shop", &[("a.test", "Prefix", "/", "web")])])).await;
    let ferry = Ferry::start_kube(&api, &[]);
    ferry.wait_ready().await;
    let tls_ingress = |name: &str, host: &str, secret: &str| {
        format!(
            "{}  tls:\n  - hosts: [{host}]\n    secretName: {secret}\n",
            ingress(name, &[(host, "Prefix", "/", "web")])
        )
    };
    let served = |host: &'static str, pem: String| {
        let ferry = &ferry;
        async move {
            matches!(get_tls(ferry.https, host, &[&pem], false).await, Ok((r, der)) if r.status == 200 && der == der_of(&pem))
        }
    };

    // Referenced within the grace period: served from the data the watch brought.
    let (soon, soon_pem) = ferry_echo::tls_secret_manifest("default", "soon-tls", &["soon.test".to_string()]).unwrap();
    // Referenced only after it: stripped, then read again.
    let (late, late_pem) = ferry_echo::tls_secret_manifest("default", "late-tls", &["late.test".to_string()]).unwrap();
    api.apply(&docs(&[soon, late])).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.apply(&tls_ingress("soon", "soon.test", "soon-tls")).await;
    eventually("a Secret referenced soon after it arrived is served", || served("soon.test", soon_pem.clone())).await;

    // The wait is 10 s, checked every second.
    tokio::time::sleep(Duration::from_millis(12_500)).await;
    assert_eq!(api.gets("secrets", "ferry"), [], "ferry read nothing by name yet");
    api.apply(&tls_ingress("late", "late.test", "late-tls")).await;
    eventually("a Secret referenced after its data was dropped is read again and served", || {
        served("late.test", late_pem.clone())
    })
    .await;
    assert_eq!(
        api.gets("secrets", "ferry"),
        [("default".to_string(), "late-tls".to_string())],
        "only the stripped one"
    );
    assert!(served("soon.test", soon_pem.clone()).await, "the referenced Secret kept its data");
}

fn lb_ips(api: &ApiServer, ns: &str, name: &str) -> Vec<String> {
    api.get("ingresses", ns, name)
        .and_then(|i| i["status"]["loadBalancer"]["ingress"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["ip"].as_str().or(e["hostname"].as_str()).map(str::to_string))
        .collect()
}

fn status_writes(api: &ApiServer, name: &str) -> Vec<support::apiserver::Write> {
    api.writes()
        .into_iter()
        .filter(|w| w.plural == "ingresses" && w.subresource == "status" && w.name == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_the_publish_service_and_is_cleared_when_not_ours() {
    let api = ApiServer::start_new().await;
    let web = echo("127.0.0.2", "web").await;
    api.upsert(
        "apiVersion: v1\nkind: Service\nmetadata: {name: ferry, namespace: ingress}\nspec:\n  type: LoadBalancer\n  \
         ports: [{name: http, port: 80}]\nstatus:\n  loadBalancer:\n    ingress: [{ip: 192.0.2.10}]\n",
    );
    api.apply(&docs(&[service("web", &[web]), ingress("shop", &[("a.test", "Prefix", "/", "web")])])).await;
    let ferry = Ferry::start_kube(&api, &["--publish-service", "ingress/ferry", "--lease-duration", "2"]);
    ferry.wait_ready().await;
    eventually("status carries the LoadBalancer address", || async {
        lb_ips(&api, "default", "shop") == ["192.0.2.10"]
    })
    .await;

    // Our own status write comes back as a watch event; it must not cause another write.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes = status_writes(&api, "shop");
    assert_eq!(writes.len(), 1, "one status write, no loop: {writes:?}");
    assert_eq!(writes[0].field_manager, "ferry");

    // The LoadBalancer gets a new address: status follows.
    api.upsert(
        "apiVersion: v1\nkind: Service\nmetadata: {name: ferry, namespace: ingress}\n\
         status:\n  loadBalancer:\n    ingress: [{hostname: lb.example.test}]\n",
    );
    eventually("status follows the Service", || async { lb_ips(&api, "default", "shop") == ["lb.example.test"] }).await;

    // The Ingress moves to another class: ferry stops serving it and clears its status.
    api.apply(
        &ingress("shop", &[("a.test", "Prefix", "/", "web")])
            .replace("ingressClassName: ferry", "ingressClassName: other"),
    )
    .await;
    eventually("status cleared", || async { lb_ips(&api, "default", "shop").is_empty() }).await;
    assert_eq!(ferry.get("a.test", "/").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_writes_and_a_follower_takes_over() {
    let api = ApiServer::start_new().await;
    let web = echo("127.0.0.2", "web").await;
    api.apply(&docs(&[service("web", &[web]), ingress("shop", &[("a.test", "Prefix", "/", "web")])])).await;
    let flags = ["--publish-address", "192.0.2.30", "--lease-duration", "2"];
    let mut first = Ferry::start_kube(&api, &flags);
    first.wait_ready().await;
    eventually("the first replica leads and writes status", || async {
        lb_ips(&api, "default", "shop") == ["192.0.2.30"]
    })
    .await;
    let second = Ferry::start_kube(&api, &flags);
    second.wait_ready().await;
    assert_eq!(second.get("a.test", "/").await.status, 200, "every replica serves traffic");

    let holder = |api: &ApiServer| {
        api.get("leases", "default", "ferry-leader")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let leader = holder(&api);
    assert!(!leader.is_empty());

    // A change that needs a status write: only the leader makes it.
    api.apply(&ingress("blog", &[("b.test", "Prefix", "/", "web")])).await;
    eventually("the new Ingress gets status", || async { lb_ips(&api, "default", "blog") == ["192.0.2.30"] }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for w in status_writes(&api, "shop").iter().chain(&status_writes(&api, "blog")) {
        assert!(w.user_agent.contains(&leader), "status written by {:?}, leader is {leader}", w.user_agent);
    }
    assert_eq!(status_writes(&api, "blog").len(), 1, "exactly one replica wrote");

    // The leader dies: the follower takes the Lease within the lease time and writes.
    first.kill();
    let killed_at = Instant::now();
    eventually("the follower takes the lease", || async { holder(&api) != leader && !holder(&api).is_empty() }).await;
    assert!(killed_at.elapsed() < Duration::from_secs(5), "takeover took {:?}", killed_at.elapsed());
    api.apply(&ingress("docs", &[("c.test", "Prefix", "/", "web")])).await;
    eventually("the new leader writes status", || async { lb_ips(&api, "default", "docs") == ["192.0.2.30"] }).await;
    let new_leader = holder(&api);
    assert!(status_writes(&api, "docs").iter().all(|w| w.user_agent.contains(&new_leader)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_ingress_gets_an_event_and_the_others_keep_serving() {
    let api = ApiServer::start_new().await;
    let web = echo("127.0.0.2", "web").await;
    api.apply(&docs(&[
        service("web", &[web]),
        ingress("good", &[("a.test", "Prefix", "/", "web")]),
        ingress("bad", &[("b.test", "Prefix", "/", "missing")]),
    ]))
    .await;
    let ferry = Ferry::start_kube(&api, &["--lease-duration", "2"]);
    ferry.wait_ready().await;
    assert_eq!(ferry.get("a.test", "/").await.status, 200);
    eventually("an Event names the bad Ingress", || async {
        api.list("events").iter().any(|e| {
            e["involvedObject"]["name"] == "bad"
                && e["involvedObject"]["kind"] == "Ingress"
                && e["type"] == "Warning"
                && e["message"].as_str().is_some_and(|m| m.contains("missing"))
        })
    })
    .await;
    // Deduplicated: later rebuilds do not repeat it.
    api.apply(&ingress("other", &[("c.test", "Prefix", "/", "web")])).await;
    eventually("the unrelated change is served", || async { ferry.get("c.test", "/").await.status == 200 }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let about_bad = api.list("events").iter().filter(|e| e["involvedObject"]["name"] == "bad").count();
    assert_eq!(about_bad, 1, "one Event per distinct problem");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_the_lease_stops_writing() {
    let api = ApiServer::start_new().await;
    let web = echo("127.0.0.2", "web").await;
    api.apply(&docs(&[service("web", &[web]), ingress("shop", &[("a.test", "Prefix", "/", "web")])])).await;
    let ferry = Ferry::start_kube(&api, &["--publish-address", "192.0.2.40", "--lease-duration", "2"]);
    ferry.wait_ready().await;
    eventually("ferry leads and writes status", || async { lb_ips(&api, "default", "shop") == ["192.0.2.40"] }).await;

    // Another holder takes the Lease (renewed far into the future, so it stays valid).
    api.upsert(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: ferry-leader, namespace: default}\n\
         spec: {holderIdentity: someone-else, leaseDurationSeconds: 3600, renewTime: \"2099-01-01T00:00:00.000000Z\"}\n",
    );
    // Within one renew period (2 s / 5) ferry sees it has lost the Lease; give it two.
    tokio::time::sleep(Duration::from_millis(800)).await;
    api.apply(&ingress("blog", &[("b.test", "Prefix", "/", "web")])).await;
    eventually("the new Ingress is served", || async { ferry.get("b.test", "/").await.status == 200 }).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(status_writes(&api, "blog").is_empty(), "a replica without the Lease must not write status");
    assert!(lb_ips(&api, "default", "blog").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_routes_with_status_and_a_late_crd() {
    let api = ApiServer::start_new().await;
    // The CRD is not installed yet: ferry must still become ready and serve HTTP.
    api.set_installed("l4routes", false);
    let (web, db) = (echo("127.0.0.2", "web").await, tcp_echo("127.0.0.3", "db").await);
    api.apply(&docs(&[
        service("web", &[web]),
        tcp_service("db", &[db]),
        ingress("shop", &[("a.test", "Prefix", "/", "web")]),
    ]))
    .await;
    let port = free_addr().port();
    let ferry = Ferry::start_kube(&api, &["--l4-ports", &port.to_string()]);
    ferry.wait_ready().await;
    assert_eq!(ferry.get("a.test", "/").await.status, 200);
    assert_eq!(l4_talk(port, b"x").await, "", "no L4Route yet: connections are closed");

    // The CRD arrives, then L4Routes by kubectl: one served, one on a port the gateway lacks.
    api.set_installed("l4routes", true);
    let undeclared = free_addr().port();
    api.apply(&docs(&[l4_route("db", port, &[], "db", ""), l4_route("elsewhere", undeclared, &[], "db", "")])).await;
    eventually_within("the L4Route serves", Duration::from_secs(15), || async {
        l4_talk(port, b"hi").await == "hibye from db"
    })
    .await;

    let condition = |name: &'static str, type_: &'static str| {
        let route = api.get("l4routes", "default", name);
        route.and_then(|r| r["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).cloned())
    };
    eventually("status conditions are written", || async {
        condition("db", "Accepted").is_some_and(|c| c["status"] == "True")
            && condition("elsewhere", "Accepted").is_some_and(|c| c["status"] == "False")
    })
    .await;
    assert_eq!(condition("db", "ResolvedRefs").unwrap()["status"], "True");
    let rejected = condition("elsewhere", "Accepted").unwrap();
    assert_eq!(rejected["reason"], "PortNotDeclared", "{rejected}");
    assert!(rejected["message"].as_str().unwrap().contains(&port.to_string()), "names the declared ports: {rejected}");

    // Written once: the status coming back through the watch causes no further writes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let l4_writes = || api.writes().into_iter().filter(|w| w.plural == "l4routes" && w.subresource == "status").count();
    assert_eq!(l4_writes(), 2, "{:?}", api.writes());
    assert!(api
        .writes()
        .iter()
        .all(|w| w.plural != "l4routes" || w.subresource != "status" || w.field_manager == "ferry"));
}

/// The test API server pages lists as the real one does, and ferry reads paged lists whole:
/// kube-rs lists 500 objects at a time, so 1,201 Services are three pages. Raw requests check
/// the pages themselves: `limit` objects each and a `continue` token until the last; every page
/// has the first page's resourceVersion; an object changed between pages is listed as it is now
/// (and the watch from that version brings the change again); a token older than the compacted
/// history answers 410 and a malformed one 400; kubectl reads the list in chunks too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_come_in_pages_and_are_read_whole() {
    let api = ApiServer::start_new().await;
    let web = echo("127.0.0.2", "web").await;
    let mut objects: Vec<String> = (0..1200)
        .map(|i| format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s{i:04}, namespace: default}}\nspec:\n  ports:\n  - {{name: http, port: 80}}\n"))
        .collect();
    objects.push(service("web", &[web]));
    objects.push(ingress("shop", &[("a.test", "Prefix", "/", "web")]));
    for o in &objects {
        api.upsert(o);
    }
    let ferry = Ferry::start_kube(&api, &[]);
    ferry.wait_ready().await;
    assert_eq!(ferry.get("a.test", "/").await.endpoint(), web.to_string());

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let page = |token: Option<String>| {
        let mut url = format!("http://{}/api/v1/namespaces/default/services?limit=500", api.addr);
        if let Some(t) = token {
            url += &format!("&continue={}", t.replace('/', "%2F"));
        }
        let client = client.clone();
        async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let names = |list: &serde_json::Value| -> Vec<String> {
        list["items"].as_array().unwrap().iter().map(|o| o["metadata"]["name"].as_str().unwrap().to_string()).collect()
    };
    let (status, first) = page(None).await;
    assert_eq!((status, names(&first).len()), (200, 500));
    let rv = first["metadata"]["resourceVersion"].clone();
    // A change between pages: s0900 (on a later page) is listed as it is now.
    api.upsert("apiVersion: v1\nkind: Service\nmetadata: {name: s0900, namespace: default, labels: {changed: \"yes\"}}\nspec:\n  ports:\n  - {name: http, port: 80}\n");
    let mut seen = names(&first);
    let mut token = first["metadata"]["continue"].as_str().map(String::from);
    let mut pages = 1;
    while let Some(t) = token {
        let (status, next) = page(Some(t)).await;
        assert_eq!(status, 200, "{next}");
        assert_eq!(next["metadata"]["resourceVersion"], rv, "every page has the first page's version");
        for o in next["items"].as_array().unwrap() {
            if o["metadata"]["name"] == "s0900" {
                assert_eq!(o["metadata"]["labels"]["changed"], "yes");
            }
        }
        seen.extend(names(&next));
        token = next["metadata"]["continue"].as_str().map(String::from);
        pages += 1;
    }
    let mut want: Vec<String> = (0..1200).map(|i| format!("s{i:04}")).collect();
    want.push("web".into());
    assert_eq!(pages, 3);
    assert_eq!(seen, want, "every Service once, in order");

    let (status, _) = page(Some("1/default/s0001".into())).await;
    assert_eq!(status, 200);
    api.compact();
    let (status, body) = page(Some(first["metadata"]["continue"].as_str().unwrap().to_string())).await;
    assert_eq!((status, body["reason"].as_str()), (410, Some("Expired")), "{body}");
    let (status, _) = page(Some("not-a-token".into())).await;
    assert_eq!(status, 400);

    let (ok, out) = api.kubectl(&["get", "services", "--chunk-size=100", "-o", "name"], None).await;
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 1201, "kubectl reads every chunk");
}
