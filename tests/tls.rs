//! TLS termination: certificate by SNI from `kubernetes.io/tls` Secrets, wildcard and default
//! certificates, h2 by ALPN, bad Secrets that skip only their own hosts, and certificates that
//! change with the table.

mod support;

use support::*;

struct Generated {
    manifest: String,
    pem: String,
}

fn secret(name: &str, hosts: &[&str]) -> Generated {
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    let (manifest, pem) = ferry_echo::tls_secret_manifest("default", name, &hosts).unwrap();
    Generated { manifest, pem }
}

fn tls_ingress(name: &str, host: &str, secret: &str, svc: &str) -> String {
    format!(
        "{}  tls:\n  - hosts: [\"{host}\"]\n    secretName: {secret}\n",
        ingress(name, &[(host, "Prefix", "/", svc)])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_by_sni_with_wildcard_and_h2() {
    let a = echo("127.0.0.2", "a").await;
    let b = echo("127.0.0.3", "b").await;
    let cert_a = secret("cert-a", &["a.test"]);
    let cert_w = secret("cert-w", &["*.wild.test"]);
    let files = docs(&[
        service("a", &[a]),
        service("b", &[b]),
        cert_a.manifest.clone(),
        cert_w.manifest.clone(),
        tls_ingress("ia", "a.test", "cert-a", "a"),
        tls_ingress("iw", "*.wild.test", "cert-w", "b"),
    ]);
    let ferry = Ferry::start(&[("a.yaml", files)], &[]).await;

    let (r, der) = get_tls(ferry.https, "a.test", &[&cert_a.pem], false).await.unwrap();
    assert_eq!((r.status, r.service()), (200, "a"));
    assert_eq!(der, der_of(&cert_a.pem));
    assert_eq!(r.header("x-forwarded-proto"), "https");

    let (r, der) = get_tls(ferry.https, "x.wild.test", &[&cert_w.pem], true).await.unwrap();
    assert_eq!((r.status, r.service()), (200, "b"));
    assert_eq!(r.version, reqwest::Version::HTTP_2, "ALPN h2");
    assert_eq!(der, der_of(&cert_w.pem));

    // Trusting only cert A, the wildcard host must fail verification: each host got its own cert.
    assert!(get_tls(ferry.https, "x.wild.test", &[&cert_a.pem], false).await.is_err());
    // No certificate for this name and no default: the handshake is refused.
    assert!(get_tls(ferry.https, "none.test", &[&cert_a.pem, &cert_w.pem], false).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_certificate_for_unknown_sni() {
    let a = echo("127.0.0.2", "a").await;
    let def = secret("fallback", &["fallback.test"]);
    let files = docs(&[service("a", &[a]), def.manifest.clone(), ingress("i", &[("", "Prefix", "/", "a")])]);
    let ferry = Ferry::start(&[("a.yaml", files)], &["--default-tls-secret", "default/fallback"]).await;
    // The name does not match the certificate, so only check which certificate was sent.
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_info(true)
        .danger_accept_invalid_certs(true)
        .resolve("other.test", ferry.https)
        .build()
        .unwrap();
    let resp = client.get(format!("https://other.test:{}/", ferry.https.port())).send().await.unwrap();
    let der = resp.extensions().get::<reqwest::tls::TlsInfo>().and_then(|i| i.peer_certificate().map(<[u8]>::to_vec));
    assert_eq!(der, Some(der_of(&def.pem)));
    assert_eq!(Reply::read(resp).await.service(), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_secrets_skip_only_their_hosts_and_certs_follow_the_table() {
    let a = echo("127.0.0.2", "a").await;
    let good = secret("good", &["good.test"]);
    let other = secret("other", &["mismatch.test"]);
    // Key of one certificate with the chain of another.
    let mismatched = good.manifest.replace("name: good", "name: mismatched");
    let key_start = mismatched.find("  tls.key:").unwrap();
    let other_key = &other.manifest[other.manifest.find("  tls.key:").unwrap()..];
    let mismatched = format!("{}{}", &mismatched[..key_start], other_key);
    let opaque = good.manifest.replace("name: good", "name: opaque").replace("type: kubernetes.io/tls", "type: Opaque");
    let garbage = "apiVersion: v1\nkind: Secret\nmetadata: {name: garbage, namespace: default}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: not a pem\n  tls.key: nope\n".to_string();
    let files = docs(&[
        service("a", &[a]),
        good.manifest.clone(),
        mismatched,
        opaque,
        garbage,
        tls_ingress("good", "good.test", "good", "a"),
        tls_ingress("mis", "mismatch.test", "mismatched", "a"),
        tls_ingress("opq", "opaque.test", "opaque", "a"),
        tls_ingress("gar", "garbage.test", "garbage", "a"),
        tls_ingress("missing", "missing.test", "does-not-exist", "a"),
    ]);
    let ferry = Ferry::start(&[("a.yaml", files.clone())], &[]).await;
    let (r, _) = get_tls(ferry.https, "good.test", &[&good.pem], false).await.unwrap();
    assert_eq!(r.status, 200);
    for host in ["mismatch.test", "opaque.test", "garbage.test", "missing.test"] {
        assert!(
            get_tls(ferry.https, host, &[&good.pem, &other.pem], false).await.is_err(),
            "{host} must have no certificate"
        );
        // Plain HTTP for the same host still routes.
        assert_eq!(ferry.get(host, "/").await.status, 200, "{host}");
    }
    let metrics = ferry.admin_get("/metrics").await;
    assert!(metrics.contains("ferry_build_diagnostics{severity=\"error\"} 4"), "{metrics}");

    // Rotate: replace good's certificate; new handshakes get the new one, no restart.
    let rotated = secret("good", &["good.test"]);
    ferry.write("a.yaml", &files.replace(&good.manifest, &rotated.manifest));
    eventually("rotated certificate served", || async {
        matches!(get_tls(ferry.https, "good.test", &[&rotated.pem], false).await, Ok((_, der)) if der == der_of(&rotated.pem))
    })
    .await;
}
