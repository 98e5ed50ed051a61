//! BackendTLSPolicy end to end: the real binary in manifest mode, HTTPRoutes to HTTPS backends
//! (rustls servers on 127.0.0.x with certificates from a CA made here) that report the SNI they
//! were reached by. Restates the upstream conformance tests BackendTLSPolicy,
//! BackendTLSPolicySANValidation, BackendTLSPolicyConflictResolution,
//! BackendTLSPolicyInvalidCACertificateRef and BackendTLSPolicyInvalidKind (v1.6), with ferry's
//! namespace `infra`, plus what they leave out: system roots, bad policies, and the fallback to
//! a 5xx rather than an unverified connection.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use support::{eventually, Ferry, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA, and a server certificate it signed for `abc.example.com`, `other.example.com` and
/// `spiffe://abc.example.com/test-identity`.
struct Pki {
    ca: String,
    cert: String,
    key: String,
    /// Another CA, which signed nothing the backends serve.
    other_ca: String,
}

fn pki() -> Pki {
    let ca = |cn: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        rcgen::CertifiedIssuer::self_signed(p, key).unwrap()
    };
    let issuer = ca("ferry test CA");
    let other = ca("unrelated CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p =
        rcgen::CertificateParams::new(vec!["abc.example.com".to_string(), "other.example.com".to_string()]).unwrap();
    p.subject_alt_names.push(rcgen::SanType::URI("spiffe://abc.example.com/test-identity".try_into().unwrap()));
    let cert = p.signed_by(&key, &issuer).unwrap();
    Pki { ca: issuer.pem(), cert: cert.pem(), key: key.serialize_pem(), other_ca: other.pem() }
}

/// An HTTPS backend named `name` on `ip`: HTTP/1.1 or (ALPN `h2`) HTTP/2 over TLS with
/// `pki.cert`; every answer is JSON with its name, the SNI the connection came with, the
/// request's path and the protocol.
async fn tls_backend(ip: &str, name: &'static str, pki: &Pki) -> SocketAddr {
    tls_backend_recording(ip, name, pki).await.0
}

/// [`tls_backend`], and the `sni path` of every request it got.
async fn tls_backend_recording(
    ip: &str,
    name: &'static str,
    pki: &Pki,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let log = seen.clone();
    let certs = vec![CertificateDer::from_pem_slice(pki.cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.key.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(format!("{ip}:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let sni = tls.get_ref().1.server_name().unwrap_or("").to_string();
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    let Ok(mut conn) = h2::server::handshake(tls).await else { return };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        let body =
                            serde_json::json!({"service": name, "sni": sni, "path": req.uri().path(), "proto": "h2"})
                                .to_string();
                        let head = http::Response::builder().status(200).header("content-type", "application/json");
                        if let Ok(mut send) = respond.send_response(head.body(()).unwrap(), false) {
                            let _ = send.send_data(body.into(), true);
                        }
                    }
                    return;
                }
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end);
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    log.lock().unwrap().push(format!("{sni} {path}"));
                    let body =
                        serde_json::json!({"service": name, "sni": sni, "path": path, "proto": "http/1.1"}).to_string();
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tls.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Service `infra/name` with `ports` (name, port, appProtocol) all served by the pod at `ep`.
fn service(name: &str, ports: &[(&str, u16, Option<&str>)], ep: SocketAddr) -> String {
    let spec: Vec<String> = ports
        .iter()
        .map(|(n, p, a)| match a {
            Some(a) => format!("  - {{name: {n}, port: {p}, appProtocol: {a}}}\n"),
            None => format!("  - {{name: {n}, port: {p}}}\n"),
        })
        .collect();
    let slice: Vec<String> = ports.iter().map(|(n, _, _)| format!("- {{name: {n}, port: {}}}\n", ep.port())).collect();
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: infra}}\nspec:\n  ports:\n{}---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: infra\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports:\n{}endpoints:\n- addresses: [\"{}\"]\n",
        spec.concat(),
        slice.concat(),
        ep.ip()
    )
}

/// A BackendTLSPolicy `infra/name` for Service `target` (port `section`, if any), created at
/// `created` (it orders conflicting policies); `validation` is the YAML of `spec.validation`.
fn policy(name: &str, created: &str, target: &str, section: Option<&str>, validation: &str) -> String {
    let section = section.map_or(String::new(), |s| format!(", sectionName: {s}"));
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: {name}, namespace: infra, creationTimestamp: \"{created}\"}}\nspec:\n  targetRefs: [{{group: \"\", kind: Service, name: {target}{section}}}]\n  validation:\n{validation}"
    )
}

/// `spec.validation` with the ConfigMap `ca` and `hostname` (and extra lines).
fn with_ca(configmap: &str, hostname: &str, extra: &str) -> String {
    format!("    caCertificateRefs: [{{group: \"\", kind: ConfigMap, name: {configmap}}}]\n    hostname: {hostname}\n{extra}")
}

fn configmap(name: &str, ca: &str) -> String {
    let indented: String = ca.lines().map(|l| format!("    {l}\n")).collect();
    format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: infra}}\ndata:\n  ca.crt: |\n{indented}")
}

/// GatewayClass, namespace, Gateway `same-namespace` (HTTP on 80) and an HTTPRoute on it for
/// `abc.example.com` sending each exact path to a Service port.
fn gateway(paths: &[(&str, &str, u16)]) -> String {
    let mut out = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: ferry}\nspec: {controllerName: ferry.dev/gateway-controller}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: infra}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: same-namespace, namespace: infra}\nspec:\n  gatewayClassName: ferry\n  listeners:\n  - {name: http, port: 80, protocol: HTTP}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: backendtlspolicy, namespace: infra}\nspec:\n  parentRefs: [{name: same-namespace}]\n  hostnames: [abc.example.com]\n  rules:\n".to_string();
    for (path, svc, port) in paths {
        out += &format!(
            "  - matches: [{{path: {{type: Exact, value: {path}}}}}]\n    backendRefs: [{{name: {svc}, port: {port}}}]\n"
        );
    }
    out
}

async fn listener_addr(f: &Ferry) -> SocketAddr {
    for _ in 0..400 {
        let v: Value = serde_json::from_str(&f.admin_get("/routes").await).unwrap_or(Value::Null);
        let at = v["gateways"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["name"] == "same-namespace")
            .and_then(|g| g["listeners"][0]["address"].as_str())
            .and_then(|a| a.parse().ok());
        if let Some(at) = at {
            return at;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the Gateway's listener got no address");
}

async fn get(at: SocketAddr, path: &str) -> Reply {
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    Reply::read(c.get(format!("http://{at}{path}")).header("host", "abc.example.com").send().await.unwrap()).await
}

/// `type=Status(reason)` of policy `name`'s conditions on Gateway `same-namespace`, from
/// `ferry check --output json` over the test's manifests.
async fn policy_conds(f: &Ferry, name: &str) -> Vec<String> {
    let v = f.check_json().await;
    let p = v["gateway_status"]["policies"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no status for BackendTLSPolicy {name}: {}", v["gateway_status"]));
    let a = p["ancestors"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["ancestor_ref"]["name"] == "same-namespace"))
        .unwrap_or_else(|| panic!("{name} has no ancestor same-namespace: {p}"));
    assert_eq!(a["ancestor_ref"]["kind"], "Gateway");
    a["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let status = if c["status"] == true { "True" } else { "False" };
            format!("{}={status}({})", c["type"].as_str().unwrap(), c["reason"].as_str().unwrap())
        })
        .collect()
}

#[track_caller]
fn conds_are(got: Vec<String>, want: &[&str]) {
    assert_eq!(got, want.iter().map(|s| s.to_string()).collect::<Vec<_>>());
}

const OK: &[&str] = &["Accepted=True(Accepted)", "ResolvedRefs=True(ResolvedRefs)"];

/// BackendTLSPolicy: the CA of a ConfigMap and the hostname as SNI; a hostname the certificate
/// does not hold, or a CA that did not sign it, fails the request (502, never unverified); a
/// change of the ConfigMap is followed (emptied: NoValidCACertificate and 500; restored: served
/// again); BackendTLSPolicyInvalidCACertificateRef and BackendTLSPolicyInvalidKind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_hostname_mismatches_and_reconciled_ca() {
    let pki = pki();
    let ep = tls_backend("127.0.0.71", "tls-backend", &pki).await;
    let mut docs = gateway(&[
        ("/backendtlspolicy", "backendtlspolicy-test", 443),
        ("/backendtlspolicy-host-mismatch", "backendtlspolicy-host-mismatch-test", 443),
        ("/backendtlspolicy-cert-mismatch", "backendtlspolicy-cert-mismatch-test", 443),
        ("/backendtlspolicy-reconcile-test", "backendtlspolicy-reconcile-test", 443),
        ("/backendtlspolicy-nonexistent-ca-certificate-ref", "nonexistent-test", 443),
        ("/backendtlspolicy-malformed-ca-certificate-ref", "malformed-test", 443),
        ("/backendtlspolicy-invalid-kind", "invalid-kind-test", 443),
        ("/no-policy", "no-policy-test", 443),
        ("/h2", "h2-test", 443),
    ]);
    for (svc, app) in [
        ("backendtlspolicy-test", None),
        ("backendtlspolicy-host-mismatch-test", Some("HTTPS")),
        ("backendtlspolicy-cert-mismatch-test", Some("HTTPS")),
        ("backendtlspolicy-reconcile-test", None),
        ("nonexistent-test", None),
        ("malformed-test", None),
        ("invalid-kind-test", None),
        ("no-policy-test", Some("https")),
        ("h2-test", Some("kubernetes.io/h2c")),
    ] {
        docs += &service(svc, &[("btls", 443, app)], ep);
    }
    let t = "2026-01-01T00:00:00Z";
    docs += &policy(
        "normative-test",
        t,
        "backendtlspolicy-test",
        Some("btls"),
        &with_ca("tls-checks-ca", "abc.example.com", ""),
    );
    docs += &policy(
        "host-mismatch",
        t,
        "backendtlspolicy-host-mismatch-test",
        Some("btls"),
        &with_ca("tls-checks-ca", "mismatch.example.com", ""),
    );
    docs += &policy(
        "cert-mismatch",
        t,
        "backendtlspolicy-cert-mismatch-test",
        Some("btls"),
        &with_ca("mismatch-ca", "abc.example.com", ""),
    );
    docs += &policy("h2", t, "h2-test", None, &with_ca("tls-checks-ca", "abc.example.com", ""));
    docs += &policy(
        "reconcile-test",
        t,
        "backendtlspolicy-reconcile-test",
        Some("btls"),
        &with_ca("reconcile-ca", "abc.example.com", ""),
    );
    docs += &policy(
        "nonexistent-ca-certificate-ref",
        t,
        "nonexistent-test",
        None,
        &with_ca("nonexistent-ca", "abc.example.com", ""),
    );
    docs += &policy(
        "malformed-ca-certificate-ref",
        t,
        "malformed-test",
        None,
        &with_ca("malformed-ca", "abc.example.com", ""),
    );
    docs += &policy(
        "invalid-kind",
        t,
        "invalid-kind-test",
        None,
        "    caCertificateRefs: [{group: invalid.io, kind: InvalidKind, name: x}]\n    hostname: abc.example.com\n",
    );
    docs += &configmap("tls-checks-ca", &pki.ca);
    docs += &configmap("mismatch-ca", &pki.other_ca);
    docs += "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: malformed-ca, namespace: infra}\ndata: {}\n";
    let f = Ferry::start(&[("gw.yaml", docs), ("reconcile.yaml", configmap("reconcile-ca", &pki.ca))], &[]).await;
    let at = listener_addr(&f).await;

    // Valid: verified TLS, SNI = hostname.
    conds_are(policy_conds(&f, "normative-test").await, OK);
    let r = get(at, "/backendtlspolicy").await;
    assert_eq!(
        (r.status, r.json["sni"].as_str(), r.json["path"].as_str()),
        (200, Some("abc.example.com"), Some("/backendtlspolicy")),
        "{}",
        r.body
    );
    // appProtocol kubernetes.io/h2c under a policy: HTTP/2 over the verified TLS (ALPN h2).
    let r = get(at, "/h2").await;
    assert_eq!(
        (r.status, r.json["sni"].as_str(), r.json["proto"].as_str()),
        (200, Some("abc.example.com"), Some("h2")),
        "{}",
        r.body
    );
    assert_eq!(get(at, "/backendtlspolicy").await.json["proto"], "http/1.1");
    // An HTTPS Service port without a policy keeps today's behaviour: TLS, not verified.
    let r = get(at, "/no-policy").await;
    assert_eq!((r.status, r.json["sni"].as_str()), (200, Some("no-policy-test.infra.svc")), "{}", r.body);
    // Hostname the certificate does not hold; CA that did not sign it: accepted policies whose
    // connections fail.
    for (name, path) in
        [("host-mismatch", "/backendtlspolicy-host-mismatch"), ("cert-mismatch", "/backendtlspolicy-cert-mismatch")]
    {
        conds_are(policy_conds(&f, name).await, OK);
        let r = get(at, path).await;
        assert_eq!(r.status, 502, "{name}: {}", r.body);
    }
    // Invalid references: 5xx (500), with the spec's conditions.
    for (name, path, resolved) in [
        (
            "nonexistent-ca-certificate-ref",
            "/backendtlspolicy-nonexistent-ca-certificate-ref",
            "ResolvedRefs=False(InvalidCACertificateRef)",
        ),
        (
            "malformed-ca-certificate-ref",
            "/backendtlspolicy-malformed-ca-certificate-ref",
            "ResolvedRefs=False(InvalidCACertificateRef)",
        ),
        ("invalid-kind", "/backendtlspolicy-invalid-kind", "ResolvedRefs=False(InvalidKind)"),
    ] {
        conds_are(policy_conds(&f, name).await, &["Accepted=False(NoValidCACertificate)", resolved]);
        let r = get(at, path).await;
        assert_eq!(r.status, 500, "{name}: {}", r.body);
    }

    // The ConfigMap a policy uses changes: emptied, then restored.
    assert_eq!(get(at, "/backendtlspolicy-reconcile-test").await.status, 200);
    f.write("reconcile.yaml", &configmap("reconcile-ca", ""));
    eventually("an emptied CA answers 500", || async {
        get(at, "/backendtlspolicy-reconcile-test").await.status == 500
    })
    .await;
    conds_are(
        policy_conds(&f, "reconcile-test").await,
        &["Accepted=False(NoValidCACertificate)", "ResolvedRefs=False(InvalidCACertificateRef)"],
    );
    f.write("reconcile.yaml", &configmap("reconcile-ca", &pki.ca));
    eventually("the restored CA is used", || async { get(at, "/backendtlspolicy-reconcile-test").await.status == 200 })
        .await;
    conds_are(policy_conds(&f, "reconcile-test").await, OK);
    // Deleted: like a reference to nothing.
    f.write("reconcile.yaml", "");
    eventually("a deleted CA answers 500", || async {
        get(at, "/backendtlspolicy-reconcile-test").await.status == 500
    })
    .await;
}

/// BackendTLSPolicySANValidation: with subjectAltNames the certificate must hold one of them
/// (DNS or URI); the hostname is only the SNI (every policy here has hostname abc.example.com,
/// which the certificate holds, and the mismatching ones still fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_alt_names_replace_the_hostname_check() {
    let pki = pki();
    let ep = tls_backend("127.0.0.72", "tls-backend", &pki).await;
    let cases = [
        ("san-dns", "    subjectAltNames: [{type: Hostname, hostname: abc.example.com}]\n", 200),
        ("san-dns-mismatch", "    subjectAltNames: [{type: Hostname, hostname: dce.example.com}]\n", 502),
        ("san-dns-other-name", "    subjectAltNames: [{type: Hostname, hostname: other.example.com}]\n", 200),
        ("san-uri", "    subjectAltNames: [{type: URI, uri: \"spiffe://abc.example.com/test-identity\"}]\n", 200),
        ("san-uri-mismatch", "    subjectAltNames: [{type: URI, uri: \"spiffe://def.example.com/test-identity\"}]\n", 502),
        (
            "multiple-sans",
            "    subjectAltNames:\n    - {type: URI, uri: \"spiffe://abc.example.com/test-identity\"}\n    - {type: Hostname, hostname: abc.example.com}\n",
            200,
        ),
        (
            "multiple-mismatch-sans",
            "    subjectAltNames:\n    - {type: URI, uri: \"spiffe://def.example.com/test-identity\"}\n    - {type: Hostname, hostname: def.example.com}\n",
            502,
        ),
    ];
    let paths: Vec<(String, String)> =
        cases.iter().map(|(n, _, _)| (format!("/backendtlspolicy-{n}"), format!("{n}-test"))).collect();
    let refs: Vec<(&str, &str, u16)> = paths.iter().map(|(p, s)| (p.as_str(), s.as_str(), 443)).collect();
    let mut docs = gateway(&refs);
    for (name, sans, _) in &cases {
        docs += &service(&format!("{name}-test"), &[("btls", 443, None)], ep);
        docs += &policy(
            name,
            "2026-01-01T00:00:00Z",
            &format!("{name}-test"),
            Some("btls"),
            &with_ca("ca", "abc.example.com", sans),
        );
    }
    docs += &configmap("ca", &pki.ca);
    let f = Ferry::start(&[("gw.yaml", docs)], &[]).await;
    let at = listener_addr(&f).await;
    for (name, _, want) in cases {
        conds_are(policy_conds(&f, name).await, OK);
        let r = get(at, &format!("/backendtlspolicy-{name}")).await;
        assert_eq!(r.status, want, "{name}: {}", r.body);
        if want == 200 {
            assert_eq!(r.json["sni"], "abc.example.com", "{name}");
        }
    }
}

/// BackendTLSPolicyConflictResolution: of two policies for the same Service (and port), the
/// older applies and the other is Accepted=False(Conflicted); a policy naming a port and one for
/// the whole Service both apply (the port's own on that port). Also: system roots do not trust
/// the test CA; a policy that cannot be compiled answers 500; unknown options are reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_system_roots_and_invalid_policies() {
    let pki = pki();
    let ep = tls_backend("127.0.0.73", "tls-backend", &pki).await;
    let mut docs = gateway(&[
        ("/conflicted-without-section-name", "conflicted-without-section-name-test", 443),
        ("/conflicted-with-section-name", "conflicted-with-section-name-test", 443),
        ("/not-conflicted-with-section-name", "not-conflicted-test", 443),
        ("/not-conflicted-without-section-name", "not-conflicted-test", 8443),
        ("/system", "system-test", 443),
        ("/both-anchors", "both-anchors-test", 443),
        ("/bad-hostname", "bad-hostname-test", 443),
    ]);
    docs += &service("conflicted-without-section-name-test", &[("https-1", 443, None)], ep);
    docs += &service("conflicted-with-section-name-test", &[("https-1", 443, None)], ep);
    docs += &service("not-conflicted-test", &[("https-1", 443, None), ("https-2", 8443, None)], ep);
    for s in ["system-test", "both-anchors-test", "bad-hostname-test"] {
        docs += &service(s, &[("btls", 443, None)], ep);
    }
    let (old, new) = ("2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z");
    // The newer policy's name sorts first: age decides, not the name.
    docs += &policy(
        "conflicted-without-section-name-1",
        old,
        "conflicted-without-section-name-test",
        None,
        &with_ca("ca", "other.example.com", ""),
    );
    docs += &policy(
        "conflicted-without-section-name-0",
        new,
        "conflicted-without-section-name-test",
        None,
        &with_ca("ca", "abc.example.com", ""),
    );
    // Same age: the name decides.
    docs += &policy(
        "conflicted-with-section-name-1",
        old,
        "conflicted-with-section-name-test",
        Some("https-1"),
        &with_ca("ca", "other.example.com", ""),
    );
    docs += &policy(
        "conflicted-with-section-name-2",
        old,
        "conflicted-with-section-name-test",
        Some("https-1"),
        &with_ca("ca", "abc.example.com", ""),
    );
    docs += &policy(
        "not-conflicted-with-section-name",
        old,
        "not-conflicted-test",
        Some("https-1"),
        &with_ca("ca", "other.example.com", ""),
    );
    docs += &policy(
        "not-conflicted-without-section-name",
        new,
        "not-conflicted-test",
        None,
        &with_ca("ca", "abc.example.com", ""),
    );
    docs += &policy(
        "system",
        old,
        "system-test",
        None,
        "    wellKnownCACertificates: System\n    hostname: abc.example.com\n",
    );
    docs += &policy(
        "both-anchors",
        old,
        "both-anchors-test",
        None,
        "    wellKnownCACertificates: System\n    caCertificateRefs: [{group: \"\", kind: ConfigMap, name: ca}]\n    hostname: abc.example.com\n",
    );
    docs += &policy("bad-hostname", old, "bad-hostname-test", None, &with_ca("ca", "\"*.example.com\"", ""));
    docs += "  options: {example.com/min-version: \"1.3\"}\n";
    docs += &configmap("ca", &pki.ca);
    let f = Ferry::start(&[("gw.yaml", docs)], &[]).await;
    let at = listener_addr(&f).await;

    let conflicted = "Accepted=False(Conflicted)";
    for (winner, loser, path) in [
        ("conflicted-without-section-name-1", "conflicted-without-section-name-0", "/conflicted-without-section-name"),
        ("conflicted-with-section-name-1", "conflicted-with-section-name-2", "/conflicted-with-section-name"),
    ] {
        conds_are(policy_conds(&f, winner).await, OK);
        conds_are(policy_conds(&f, loser).await, &[conflicted, "ResolvedRefs=True(ResolvedRefs)"]);
        let r = get(at, path).await;
        assert_eq!((r.status, r.json["sni"].as_str()), (200, Some("other.example.com")), "{path}: {}", r.body);
    }
    for (name, path, sni) in [
        ("not-conflicted-with-section-name", "/not-conflicted-with-section-name", "other.example.com"),
        ("not-conflicted-without-section-name", "/not-conflicted-without-section-name", "abc.example.com"),
    ] {
        conds_are(policy_conds(&f, name).await, OK);
        let r = get(at, path).await;
        assert_eq!((r.status, r.json["sni"].as_str()), (200, Some(sni)), "{path}: {}", r.body);
    }
    // System roots: accepted, and they do not trust the test CA.
    conds_are(policy_conds(&f, "system").await, OK);
    assert_eq!(get(at, "/system").await.status, 502);
    // Policies that cannot apply answer 500 and say why, located.
    for (name, path) in [("both-anchors", "/both-anchors"), ("bad-hostname", "/bad-hostname")] {
        let c = policy_conds(&f, name).await;
        assert_eq!(c[0], "Accepted=False(Invalid)", "{name}: {c:?}");
        assert_eq!(get(at, path).await.status, 500, "{name}");
    }
    let check = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["check", "--manifests"])
        .arg(f.manifests())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout).to_string() + &String::from_utf8_lossy(&check.stderr);
    for want in ["spec.validation.hostname", "exclusive", "spec.options.example.com/min-version", "takes precedence"] {
        assert!(text.contains(want), "{want} in: {text}");
    }
}

/// RequestMirror to a Service under a BackendTLSPolicy: the copy goes over the same verified TLS;
/// a mirror whose policy cannot apply sends no copies and the request is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_use_the_policy() {
    let pki = pki();
    let ep = tls_backend("127.0.0.74", "tls-backend", &pki).await;
    let (mirror_ep, mirrored) = tls_backend_recording("127.0.0.75", "mirror", &pki).await;
    let mut docs = gateway(&[]);
    docs += "  - matches: [{path: {type: Exact, value: /mirrored}}]\n    filters:\n    - {type: RequestMirror, requestMirror: {backendRef: {name: mirror-test, port: 443}}}\n    - {type: RequestMirror, requestMirror: {backendRef: {name: broken-mirror-test, port: 443}}}\n    backendRefs: [{name: main-test, port: 443}]\n";
    docs += &service("main-test", &[("btls", 443, None)], ep);
    docs += &service("mirror-test", &[("btls", 443, None)], mirror_ep);
    docs += &service("broken-mirror-test", &[("btls", 443, None)], mirror_ep);
    let t = "2026-01-01T00:00:00Z";
    docs += &policy("main", t, "main-test", None, &with_ca("ca", "abc.example.com", ""));
    docs += &policy("mirror", t, "mirror-test", None, &with_ca("ca", "other.example.com", ""));
    docs += &policy("broken-mirror", t, "broken-mirror-test", None, &with_ca("missing", "abc.example.com", ""));
    docs += &configmap("ca", &pki.ca);
    let f = Ferry::start(&[("gw.yaml", docs)], &[]).await;
    let at = listener_addr(&f).await;
    let r = get(at, "/mirrored").await;
    assert_eq!((r.status, r.json["service"].as_str()), (200, Some("tls-backend")), "{}", r.body);
    eventually("the copy arrives over verified TLS", || async {
        mirrored.lock().unwrap().iter().any(|s| s == "other.example.com /mirrored")
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(mirrored.lock().unwrap().len(), 1, "{:?}", mirrored.lock().unwrap());
}
