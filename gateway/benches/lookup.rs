//! Lookup micro-benchmarks: host + path resolution in a table of 10,000 hosts (20,000 routes),
//! for the shapes of request the data plane sees. Whole-system numbers come from `bench/run`.

use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gateway::{Backend, BackendState, HostKey, PathKind, Route, RouteTable, TableBuilder};

fn table(n: usize) -> RouteTable {
    let ep: SocketAddr = "10.0.0.1:8080".parse().expect("addr");
    let mut b = TableBuilder::new();
    for i in 0..n {
        let backend =
            Arc::new(Backend::new(format!("ns/svc{i}:80"), BackendState::Endpoints(vec![ep]), &Default::default()));
        let route = Arc::new(Route::new(format!("ns/ing{i}").into(), backend));
        let host = HostKey::parse(&format!("h{i}.example.com"));
        b.add_path(&host, PathKind::Prefix, "/", route.clone());
        b.add_path(&host, PathKind::Prefix, "/api/v1", route.clone());
        b.add_path(&host, PathKind::Exact, "/login", route);
    }
    let wild = Arc::new(Route::new(
        "ns/wild".into(),
        Arc::new(Backend::new("ns/wild:80", BackendState::Endpoints(vec![ep]), &Default::default())),
    ));
    b.add_path(&HostKey::parse("*.wild.example.com"), PathKind::Prefix, "/", wild);
    b.finish()
}

fn lookups(c: &mut Criterion) {
    let t = table(10_000);
    let mut g = c.benchmark_group("lookup_10k_hosts");
    for (name, host, path) in [
        ("exact_host_root", "h4242.example.com", "/"),
        ("exact_host_with_port_mixed_case", "H4242.Example.com:8080", "/index.html"),
        ("exact_path", "h4242.example.com", "/login"),
        ("prefix_deep_path", "h4242.example.com", "/api/v1/users/42/orders/7/items"),
        ("wildcard_host", "shop.wild.example.com", "/cart"),
        ("no_match", "unknown.example.org", "/"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(t.lookup(black_box(host), black_box(path))).route_name().is_some())
        });
    }
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
