//! `ferry check`: every diagnostic printed with file, object, field and reason; exit codes.

mod support;

use std::process::Command;

use support::*;

fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry")).arg("check").args(args).output().expect("run ferry check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn clean_manifests_exit_zero() {
    let (code, out) = check(&["--manifests", "examples/quickstart/manifests"]);
    // The quickstart's TLS Secret is generated at run time, so its absence is the one error here.
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Secret demo/blog-tls not found"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let ep: std::net::SocketAddr = "127.0.0.2:8080".parse().unwrap();
    std::fs::write(
        dir.path().join("ok.yaml"),
        docs(&[service("web", &[ep]), ingress("i", &[("a.test", "Prefix", "/", "web")])]),
    )
    .unwrap();
    let (code, out) = check(&["--manifests", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 routes, 0 errors, 0 warnings"), "{out}");
}

#[test]
fn every_problem_is_reported_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let ep: std::net::SocketAddr = "127.0.0.2:8080".parse().unwrap();
    let bad_ingress = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bad, namespace: default}
spec:
  ingressClassName: ferry
  rules:
  - host: 10.0.0.1
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
  - host: Mixed.Case.test
    http:
      paths:
      - {path: relative, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /ok, pathType: Prefix, backend: {service: {name: ghost, port: {number: 80}}}}
      - {path: /port, pathType: Prefix, backend: {service: {name: web, port: {name: nope}}}}
      - {path: '/re[0-9]+$', pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
  - host: foo.*.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
";
    let dup = ingress("dup", &[("mixed.case.test", "Exact", "/re[0-9]+$", "web")]).replace("name: dup", "name: zz-dup");
    std::fs::write(dir.path().join("a.yaml"), docs(&[service("web", &[ep]), bad_ingress.to_string(), dup])).unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: c}\n---\nkind: [\n",
    )
    .unwrap();

    let (code, out) = check(&["--manifests", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let a = dir.path().join("a.yaml").display().to_string();
    let b = dir.path().join("b.yaml").display().to_string();
    for expected in [
        format!("error: {a}#3: Ingress default/bad: spec.rules[0].host: host \"10.0.0.1\" is an IP address"),
        format!("warning: {a}#3: Ingress default/bad: spec.rules[1].host: host \"Mixed.Case.test\" normalised"),
        format!("error: {a}#3: Ingress default/bad: spec.rules[1].http.paths[0].path: path \"relative\" must start with \"/\""),
        format!("error: {a}#3: Ingress default/bad: spec.rules[1].http.paths[1].backend.service: Service default/ghost not found"),
        format!("error: {a}#3: Ingress default/bad: spec.rules[1].http.paths[2].backend.service: Service default/web has no port named \"nope\""),
        format!("error: {a}#3: Ingress default/bad: spec.rules[2].host: host \"foo.*.test\""),
        format!("error: {a}#4: Ingress default/zz-dup: spec.rules[0].http.paths[0].path: Exact path \"/re[0-9]+$\" on host mixed.case.test is already served by Ingress default/bad"),
        format!("error: {b}#2: File {b}: document 2:"),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
    assert!(out.contains("(1 of other kinds ignored)"), "{out}");

    let (code, json) = check(&["--manifests", dir.path().to_str().unwrap(), "--output", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["errors"], 7, "{json}");
    assert!(v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["object"]["kind"].is_string() && d["field"].is_string()));
}

#[test]
fn unreadable_path_exits_two() {
    let (code, out) = check(&["--manifests", "/nonexistent/ferry-manifests"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no such file or directory"));
}

#[test]
fn l4_and_services_example_compiles_cleanly() {
    let args = ["--manifests", "examples/l4-and-services", "--l4-ports", "5432,9443", "--allow-external-name"];
    let (code, out) = check(&args);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 errors, 0 warnings"), "{out}");
    let (_, routes) = check(&[&args[..], &["--routes", "--output", "json"]].concat());
    for expected in [r#""sni": "vault.example.test""#, r#""protocol": "h2c""#, r#""state": "external""#] {
        assert!(routes.contains(expected), "{expected} missing: {routes}");
    }
    // Without the flags, the L4Routes and the ExternalName Service are reported, not served.
    let (code, out) = check(&["--manifests", "examples/l4-and-services"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("port 5432 is not an L4 port of the gateway") && out.contains("--allow-external-name"),
        "{out}"
    );
}

#[test]
fn unknown_annotations_bad_limits_and_unroutable_paths_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let ep: std::net::SocketAddr = "127.0.0.2:8080".parse().unwrap();
    let annotated = |name: &str, host: &str, annotations: &str| {
        ingress(name, &[(host, "Prefix", "/", "web")])
            .replace("namespace: default}", &format!("namespace: default, annotations: {{{annotations}}}}}"))
    };
    let paths = ingress("paths", &[("p.test", "Prefix", "/a/../b", "web"), ("p.test", "Prefix", "/ok", "web")]);
    std::fs::write(
        dir.path().join("a.yaml"),
        docs(&[
            service("web", &[ep]),
            annotated("typo", "typo.test", "ferry.dev/allow-source-range: 10.0.0.0/8"),
            annotated("size", "size.test", "ferry.dev/max-body-size: 8 MB"),
            paths,
            annotated("rps", "rps.test", "nginx.ingress.kubernetes.io/limit-rps: ten"),
        ]),
    )
    .unwrap();
    let manifests = dir.path().to_str().unwrap();
    let a = dir.path().join("a.yaml").display().to_string();

    let (code, out) = check(&["--manifests", manifests]);
    assert_eq!(code, 1, "{out}");
    for expected in [
        format!(
            "error: {a}#3: Ingress default/typo: metadata.annotations[ferry.dev/allow-source-range]: unknown annotation \
             ferry.dev/allow-source-range (did you mean ferry.dev/allow-source-ranges?); the Ingress is not served until it is fixed"
        ),
        format!(
            "error: {a}#4: Ingress default/size: metadata.annotations[ferry.dev/max-body-size]: \"8 MB\" is not a size \
             (e.g. 512k, 8m, 1g, or bytes; 0 for no limit); the Ingress is not served until it is fixed"
        ),
        format!(
            "error: {a}#5: Ingress default/paths: spec.rules[0].http.paths[0].path: path \"/a/../b\" can never match: \
             dot-segment in path"
        ),
        format!("warning: {a}#6: Ingress default/rps: metadata.annotations[nginx.ingress.kubernetes.io/limit-rps]: ignored"),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
    // Served: the good path of `paths`, and `rps` (its nginx annotation is ignored without the flag).
    assert!(out.contains("2 routes, 3 errors, 1 warnings"), "{out}");

    // With the nginx bridge, the rate that does not parse refuses its Ingress too.
    let (code, out) = check(&["--manifests", manifests, "--nginx-annotations"]);
    assert_eq!(code, 1, "{out}");
    let expected = format!(
        "error: {a}#6: Ingress default/rps: metadata.annotations[nginx.ingress.kubernetes.io/limit-rps]: \"ten\" is not \
         a number of requests; the Ingress is not served until it is fixed"
    );
    assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    assert!(out.contains("1 routes, 4 errors, 0 warnings"), "{out}");
}
