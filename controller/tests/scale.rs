//! Scale: 10,000 Ingresses (each with its Service and EndpointSlice) compile into a table of the
//! expected size, and lookups find every host. Sizes are asserted; time is measured by `bench/`.

use controller::{build, BuildOptions, Object, Snapshot};
use gateway::Match;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;

const N: usize = 10_000;

fn objects(i: usize) -> (Ingress, Service, EndpointSlice) {
    let ns = format!("ns{}", i % 50);
    let ing = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("ing{i}"), "namespace": ns},
        "spec": {"ingressClassName": "ferry", "rules": [{"host": format!("h{i}.example.com"), "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": format!("svc{i}"), "port": {"number": 80}}}},
            {"path": format!("/api/v{}", i % 3), "pathType": "Exact", "backend": {"service": {"name": format!("svc{i}"), "port": {"number": 80}}}},
        ]}}]}
    }))
    .unwrap();
    let svc = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("svc{i}"), "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80}]}
    }))
    .unwrap();
    let slice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("svc{i}-x"), "namespace": ns, "labels": {"kubernetes.io/service-name": format!("svc{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": [format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)]}]
    }))
    .unwrap();
    (ing, svc, slice)
}

#[test]
fn ten_thousand_ingresses() {
    let mut snap = Snapshot::default();
    for i in 0..N {
        let (ing, svc, slice) = objects(i);
        snap.insert(Object::Ingress(std::sync::Arc::new(ing)));
        snap.insert(Object::service(svc));
        snap.insert(Object::endpoint_slice(slice));
    }
    let (table, diagnostics) = build(&snap, &BuildOptions::default());
    assert!(diagnostics.is_empty(), "{:?}", &diagnostics[..diagnostics.len().min(3)]);
    assert_eq!(table.host_count(), N);
    assert_eq!(table.route_count(), 2 * N);
    for i in (0..N).step_by(97) {
        let host = format!("H{i}.Example.com");
        let exact = format!("/api/v{}", i % 3);
        for path in ["/", "/x/y", exact.as_str()] {
            match table.lookup(&host, path) {
                Match::Route(r) => assert_eq!(&*r.name, format!("ns{}/ing{i}", i % 50)),
                Match::NotFound => panic!("{host}{path} not found"),
            }
        }
    }
    assert_eq!(table.lookup("h10001.example.com", "/").route_name(), None);
}
