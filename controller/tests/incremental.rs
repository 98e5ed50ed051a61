//! Incremental builds equal whole builds. Random sequences of adds, changes and deletes of
//! Ingresses, Services, EndpointSlices, Secrets, IngressClasses and HTTPRoutes (drawn from a small
//! pool of names, hosts and paths, so Ingresses conflict, canaries find or miss their main
//! routes, certificates compete and backends appear and vanish) are applied one at a time; after
//! each, the incremental builder's table dump, diagnostics and status must equal a whole build's
//! of the same snapshot. The same is checked for every golden fixture case with each of its
//! objects removed and put back.

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;

use controller::source::files::{parse_file, ManifestSource};
use controller::{build_with, BuildOptions, Changes, Incremental, Object, ObjectRef, Outcome, Snapshot};
use gateway::{BackendState, Runtime};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

mod common;

/// Asserts that an update to `snapshot` (which differs from the last by `changes`) gives what a
/// whole build of it gives.
fn check(inc: &mut Incremental, snapshot: &Snapshot, changes: &Changes, opts: &BuildOptions, what: &str) -> Outcome {
    let update = inc.update(snapshot, changes);
    let whole = build_with(snapshot, opts, &Arc::new(Runtime::default()));
    let mut got = update.table.dump();
    got.l4_status = (*update.l4_status).clone();
    let mut want = whole.table.dump();
    want.l4_status = whole.l4_status;
    let pretty = |v| serde_json::to_string_pretty(&v).expect("json");
    assert_eq!(
        pretty(serde_json::to_value(&got).unwrap()),
        pretty(serde_json::to_value(&want).unwrap()),
        "{what}: table differs from a whole build ({:?})",
        update.outcome
    );
    // Counted anew for a whole build; carried over and adjusted by a patch.
    assert_eq!(update.table.route_count(), whole.table.route_count(), "{what}: route count");
    let (got, mut want) = (update.diagnostics.to_vec(), whole.diagnostics);
    want.sort();
    assert_eq!(got, want, "{what}: diagnostics differ from a whole build ({:?})", update.outcome);
    assert_eq!(
        serde_json::to_value(&*update.gateway_status).unwrap(),
        serde_json::to_value(&whole.gateway_status).unwrap(),
        "{what}: Gateway API status differs"
    );
    update.outcome
}

fn object(v: Value) -> Object {
    let mut parsed = parse_file(Path::new("generated.json"), v.to_string().as_bytes());
    assert!(
        parsed.diagnostics.iter().all(|d| d.severity != controller::Severity::Error),
        "{v}: {:?}",
        parsed.diagnostics
    );
    parsed.objects.pop().expect("one object").1
}

/// A few bits at a time from one random number.
struct Bits(u64);

impl Bits {
    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        let i = (self.0 % from.len() as u64) as usize;
        self.0 = (self.0 / from.len() as u64) ^ self.0.rotate_left(29).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        &from[i]
    }

    fn chance(&mut self, one_in: u64) -> bool {
        *self.pick(&(0..one_in).collect::<Vec<_>>()) == 0
    }
}

const NAMESPACES: &[&str] = &["a", "b"];
const HOSTS: &[&str] = &["x.test", "y.test", "X.Test", "*.w.test", "", "z.test", "bad_host", "v.w.test"];
const PATHS: &[&str] = &["/", "/p", "/p/q", "/p/", "/a/../b"];
const PATH_TYPES: &[&str] = &["Prefix", "Exact", "ImplementationSpecific"];

fn backend(b: &mut Bits) -> Value {
    let port = match b.pick(&[0, 1, 2, 3]) {
        0 => json!({"name": "http"}),
        1 => json!({"number": 81}),
        _ => json!({"number": 80}),
    };
    json!({"service": {"name": format!("s{}", b.pick(&[0, 1, 2, 3])), "port": port}})
}

fn ingress(id: u8, b: &mut Bits) -> Value {
    let mut annotations = serde_json::Map::new();
    if b.chance(4) {
        annotations.insert("ferry.dev/canary".into(), json!("true"));
        annotations.insert("ferry.dev/canary-weight".into(), json!("30"));
    }
    if b.chance(5) {
        annotations.insert("ferry.dev/rate-limit".into(), json!("10r/s"));
    }
    if b.chance(8) {
        annotations.insert("ferry.dev/retires".into(), json!("2"));
    }
    if b.chance(5) {
        annotations.insert("ferry.dev/ssl-redirect".into(), json!("true"));
    }
    let mut rules = Vec::new();
    for _ in 0..*b.pick(&[0, 1, 1, 2, 2, 3]) {
        let paths: Vec<Value> = (0..*b.pick(&[1, 1, 2]))
            .map(|_| json!({"path": b.pick(PATHS), "pathType": b.pick(PATH_TYPES), "backend": backend(b)}))
            .collect();
        let host = *b.pick(HOSTS);
        rules.push(if host.is_empty() {
            json!({"http": {"paths": paths}})
        } else {
            json!({"host": host, "http": {"paths": paths}})
        });
    }
    let mut spec = json!({"rules": rules});
    match b.pick(&[0, 0, 0, 0, 0, 0, 1, 2]) {
        0 => spec["ingressClassName"] = json!("ferry"),
        1 => spec["ingressClassName"] = json!("other"),
        _ => {}
    }
    if b.chance(5) {
        spec["defaultBackend"] = backend(b);
    }
    let tls: Vec<Value> = (0..*b.pick(&[0, 0, 1, 2]))
        .map(|_| {
            let secret = format!("t{}", b.pick(&[0, 1, 2]));
            match b.pick(&[0, 1, 2]) {
                0 => json!({"secretName": secret}),
                _ => json!({"secretName": secret, "hosts": [b.pick(HOSTS), b.pick(HOSTS)]}),
            }
        })
        .collect();
    if !tls.is_empty() {
        spec["tls"] = json!(tls);
    }
    let mut metadata =
        json!({"name": format!("i{id}"), "namespace": NAMESPACES[id as usize % 2], "annotations": annotations});
    if let Some(t) = b.pick(&[Some(0), Some(1), Some(2), None]) {
        metadata["creationTimestamp"] = json!(format!("2026-01-01T00:00:0{t}Z"));
    }
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": metadata, "spec": spec})
}

fn service(id: u8, b: &mut Bits) -> Value {
    let mut port = json!({"name": "http", "port": 80});
    if let Some(p) = b.pick(&[None, None, None, Some("kubernetes.io/h2c"), Some("bogus")]) {
        port["appProtocol"] = json!(p);
    }
    let mut spec = json!({"ports": [port]});
    if b.chance(5) {
        spec["sessionAffinity"] = json!("ClientIP");
        if b.chance(2) {
            spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 0}});
        }
    }
    if b.chance(8) {
        spec = json!({"type": "ExternalName", "externalName": "ext.test"});
    }
    let mut metadata = json!({"name": format!("s{}", id % 4), "namespace": NAMESPACES[id as usize / 4 % 2]});
    if let Some(lb) = b.pick(&[None, None, Some("least-request"), Some("bogus")]) {
        metadata["annotations"] = json!({"ferry.dev/load-balancer": lb});
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": spec})
}

fn slice(id: u8, b: &mut Bits) -> Value {
    let endpoints: Vec<Value> = (0..*b.pick(&[0, 1, 2, 3]))
        .map(|k| {
            json!({"addresses": [format!("10.0.{id}.{k}")], "conditions": {"ready": *b.pick(&[true, true, false])}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("e{}", id % 4), "namespace": NAMESPACES[id as usize / 4 % 2],
                     "labels": {"kubernetes.io/service-name": format!("s{}", b.pick(&[0, 1, 2, 3]))}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}], "endpoints": endpoints,
    })
}

fn secret(id: u8, b: &mut Bits, pem: &(String, String)) -> Value {
    let (ty, crt, key) = match b.pick(&[0, 0, 1, 2]) {
        0 => ("kubernetes.io/tls", pem.0.as_str(), pem.1.as_str()),
        1 => ("Opaque", "x", "y"),
        _ => ("kubernetes.io/tls", "not pem", "not pem"),
    };
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": ty,
        "metadata": {"name": format!("t{}", id % 3), "namespace": NAMESPACES[id as usize / 3 % 2]},
        "stringData": {"tls.crt": crt, "tls.key": key},
    })
}

fn ingress_class(b: &mut Bits) -> Value {
    let controller = *b.pick(&["ferry.dev/ingress-controller", "example.com/other"]);
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "other"},
           "spec": {"controller": controller}})
}

fn http_route(b: &mut Bits) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": "r", "namespace": "a"},
           "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": format!("s{}", b.pick(&[0, 1])), "port": 80}]}]}})
}

/// One step: the kind, which object of it, how to make it, and whether to delete it instead.
type Op = (u8, u8, u64, bool);

/// Applies one step; says what it did and which object it touched.
fn apply(snapshot: &mut Snapshot, (kind, id, seed, delete): Op, pem: &(String, String)) -> (String, ObjectRef) {
    let mut b = Bits(seed);
    let v = match kind {
        0..=7 => ingress(id, &mut b),
        8..=10 => service(id, &mut b),
        11..=14 => slice(id, &mut b),
        15..=16 => secret(id, &mut b, pem),
        17 => ingress_class(&mut b),
        _ => http_route(&mut b),
    };
    // HTTPRoutes are rare and mostly deleted again: while one exists, Service changes take a
    // whole build.
    let delete = delete || kind > 17 && id > 1;
    let obj = object(v.clone());
    let r = obj.object_ref();
    if delete {
        snapshot.remove(&r);
        (format!("delete {r}"), r)
    } else {
        snapshot.insert(obj);
        (format!("put {v}"), r)
    }
}

fn op() -> impl Strategy<Value = Op> {
    (0u8..19, 0u8..8, any::<u64>(), proptest::bool::weighted(0.2))
}

fn test_pem() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["x.test".into(), "*.w.test".into()]).expect("cert");
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

#[test]
fn random_changes_build_what_a_whole_build_does() {
    let pem = test_pem();
    let (partial, full, unchanged) = (Cell::new(0usize), Cell::new(0usize), Cell::new(0usize));
    let endpoints = Cell::new(0usize);
    let reasons = std::cell::RefCell::new(std::collections::BTreeMap::new());
    let mut runner = TestRunner::new(Config { cases: 192, ..Config::default() });
    for nginx in [false, true] {
        let opts = BuildOptions { nginx_annotations: nginx, ..BuildOptions::default() };
        runner
            .run(&proptest::collection::vec(op(), 1..48), |ops| {
                let mut inc = Incremental::new(opts.clone(), Arc::new(Runtime::default()));
                let mut snapshot = Snapshot::default();
                let mut done = Vec::new();
                for op in ops {
                    let before = snapshot.clone();
                    let (did, touched) = apply(&mut snapshot, op, &pem);
                    done.push(did);
                    let what = format!("after {} steps, the last: {}", done.len(), done.last().unwrap());
                    // What a source records (the object it touched, whether or not that changed
                    // anything), or the exact difference.
                    let changes = if op.2 % 2 == 0 {
                        let mut log = Changes::default();
                        log.push(touched);
                        log
                    } else {
                        Changes::between(&before, &snapshot)
                    };
                    match check(&mut inc, &snapshot, &changes, &opts, &what) {
                        Outcome::Partial { .. } => partial.set(partial.get() + 1),
                        Outcome::Endpoints { .. } => endpoints.set(endpoints.get() + 1),
                        Outcome::Full(why) => {
                            full.set(full.get() + 1);
                            *reasons.borrow_mut().entry(why).or_insert(0) += 1;
                        }
                        Outcome::Unchanged => unchanged.set(unchanged.get() + 1),
                    }
                }
                Ok(())
            })
            .unwrap();
    }
    // The test means something only if most updates took the incremental path.
    let (partial, full, unchanged, endpoints) = (partial.get(), full.get(), unchanged.get(), endpoints.get());
    eprintln!(
        "updates: {partial} partial, {endpoints} endpoints only, {unchanged} unchanged, {full} whole builds: {:?}",
        reasons.borrow()
    );
    assert!(
        partial + endpoints > 2 * full,
        "{partial} partial and {endpoints} endpoint updates vs {full} whole builds"
    );
    assert!(unchanged > 0 && endpoints > 0);
}

/// Every fixture case, with each object removed and then put back (and once replaced by an
/// equal copy, which must change nothing).
#[test]
fn fixtures_with_each_object_removed_and_restored() {
    let mut cases: Vec<_> =
        std::fs::read_dir("tests/fixtures").unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    cases.sort();
    let mut partial = 0;
    for case in cases {
        let mut source = ManifestSource::new(vec![case.join("input.yaml")]);
        source.scan();
        let base = source.snapshot().clone();
        let opts = common::options(&case);
        let parsed = parse_file(&case.join("input.yaml"), &std::fs::read(case.join("input.yaml")).unwrap());
        let mut inc = Incremental::new(opts.clone(), Arc::new(Runtime::default()));
        check(&mut inc, &base, &Changes::everything(), &opts, &format!("{}", case.display()));
        for (_, obj) in &parsed.objects {
            let r = obj.object_ref();
            let what = format!("{}: without {r}", case.display());
            let mut without = base.clone();
            without.remove(&r);
            let mut changes = Changes::default();
            changes.push(r.clone());
            if matches!(
                check(&mut inc, &without, &changes, &opts, &what),
                Outcome::Partial { .. } | Outcome::Endpoints { .. }
            ) {
                partial += 1;
            }
            check(&mut inc, &base, &changes, &opts, &format!("{}: {r} restored", case.display()));
        }
        // The file rewritten with the same objects: the source reports no change where it can
        // compare objects, and nothing is recompiled.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("input.yaml");
        std::fs::copy(case.join("input.yaml"), &file).unwrap();
        let mut source = ManifestSource::new(vec![file.clone()]);
        source.scan();
        source.take_changes();
        let mut text = std::fs::read_to_string(&file).unwrap();
        text.push_str("\n# rewritten\n");
        std::fs::write(&file, text).unwrap();
        source.scan();
        let changes = source.take_changes();
        let outcome = check(&mut inc, source.snapshot(), &changes, &opts, &format!("{}: rewritten", case.display()));
        // Gateway API and L4Route objects are compared by identity only (see Object::same_as).
        let comparable = !base.has_other_routes()
            && base.gateway_classes.is_empty()
            && base.reference_grants.is_empty()
            && base.backend_tls_policies.is_empty();
        if comparable {
            assert!(changes.is_empty(), "{}: {:?}", case.display(), changes);
            assert_eq!(outcome, Outcome::Unchanged, "{}: an equal snapshot recompiled", case.display());
        }
    }
    assert!(partial > 20, "only {partial} removals took the incremental path");
}

/// An incremental update shares what it did not recompile with the last table (the routes of
/// other hosts are the same objects), and every route to a Service port keeps one backend (and so
/// one round-robin position) as in a whole build: a new Ingress to a known Service port gets the
/// backend the others have, and an EndpointSlice change gives all of them a new one.
#[test]
fn updates_share_unchanged_routes_and_one_backend_per_service_port() {
    let route = |update: &controller::Update, host: &str| match update.table.lookup(host, "/") {
        gateway::Match::Route(r) => r.clone(),
        gateway::Match::NotFound => panic!("{host} not routed"),
    };
    let ing = |name: &str, host: &str, svc: &str| {
        object(json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "a"},
            "spec": {"ingressClassName": "ferry", "rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": svc, "port": {"number": 80}}}}]}}]}}))
    };
    let slice = |svc: &str, ip: &str| {
        object(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": svc, "namespace": "a", "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"port": 8080}], "endpoints": [{"addresses": [ip]}]}))
    };
    let mut snapshot = Snapshot::default();
    for svc in ["s0", "s1"] {
        snapshot.insert(object(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": svc, "namespace": "a"}, "spec": {"ports": [{"port": 80}]}})));
        snapshot.insert(slice(svc, "10.0.0.1"));
    }
    snapshot.insert(ing("one", "one.test", "s0"));
    snapshot.insert(ing("other", "other.test", "s1"));
    let opts = BuildOptions::default();
    let mut inc = Incremental::new(opts.clone(), Arc::new(Runtime::default()));
    let first = inc.update(&snapshot, &Changes::everything());
    assert!(matches!(first.outcome, Outcome::Full(_)));

    let before = snapshot.clone();
    snapshot.insert(ing("two", "two.test", "s0"));
    let second = inc.update(&snapshot, &Changes::between(&before, &snapshot));
    assert_eq!(second.outcome, Outcome::Partial { ingresses: 1 });
    assert!(Arc::ptr_eq(&route(&first, "one.test"), &route(&second, "one.test")), "untouched route shared");
    assert!(Arc::ptr_eq(&route(&second, "two.test").backend, &route(&second, "one.test").backend), "one backend");

    // New endpoints for s0: the backend both of its routes share gets them in place. Nothing is
    // recompiled and the table is the one already live, where the routes now see them.
    let endpoints =
        |ips: &[&str]| BackendState::Endpoints(ips.iter().map(|ip| format!("{ip}:8080").parse().unwrap()).collect());
    let before = snapshot.clone();
    snapshot.insert(slice("s0", "10.0.0.2"));
    let third = inc.update(&snapshot, &Changes::between(&before, &snapshot));
    assert_eq!(third.outcome, Outcome::Endpoints { backends: 1 });
    assert!(Arc::ptr_eq(&third.table, &second.table), "the same table");
    let (one, two) = (route(&third, "one.test"), route(&third, "two.test"));
    assert!(Arc::ptr_eq(&one, &route(&second, "one.test")), "the route is untouched");
    assert!(Arc::ptr_eq(&one.backend, &two.backend));
    assert_eq!(*one.backend.state(), endpoints(&["10.0.0.2"]));
    assert_eq!(*route(&third, "other.test").backend.state(), endpoints(&["10.0.0.1"]));
    check(&mut inc, &snapshot, &Changes::default(), &opts, "nothing changed");

    // A slice rewritten with the same endpoints changes nothing.
    let mut changes = Changes::default();
    changes.push(ObjectRef::new("EndpointSlice", "a", "s0"));
    assert_eq!(check(&mut inc, &snapshot, &changes, &opts, "same endpoints"), Outcome::Unchanged);

    // New endpoints and a new Ingress to the same Service in one update: the new route gets the
    // shared backend, with the new endpoints.
    let before = snapshot.clone();
    snapshot.insert(slice("s0", "10.0.0.3"));
    snapshot.insert(ing("three", "three.test", "s0"));
    let fourth = inc.update(&snapshot, &Changes::between(&before, &snapshot));
    assert_eq!(fourth.outcome, Outcome::Partial { ingresses: 1 });
    let three = route(&fourth, "three.test");
    assert!(Arc::ptr_eq(&three.backend, &one.backend));
    assert_eq!(*three.backend.state(), endpoints(&["10.0.0.3"]));
    check(&mut inc, &snapshot, &Changes::default(), &opts, "nothing changed");

    // The Service itself changes: its readers are compiled again, with a new backend.
    let before = snapshot.clone();
    snapshot.insert(object(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "s0", "namespace": "a", "annotations": {"ferry.dev/load-balancer": "least-request"}},
        "spec": {"ports": [{"port": 80}]}})));
    let fifth = inc.update(&snapshot, &Changes::between(&before, &snapshot));
    assert_eq!(fifth.outcome, Outcome::Partial { ingresses: 3 });
    let one = route(&fifth, "one.test");
    assert!(!Arc::ptr_eq(&one.backend, &three.backend), "a changed Service, a new backend");
    assert!(Arc::ptr_eq(&one.backend, &route(&fifth, "three.test").backend));
    assert_eq!(*one.backend.state(), endpoints(&["10.0.0.3"]));
    check(&mut inc, &snapshot, &Changes::default(), &opts, "nothing changed");
}
