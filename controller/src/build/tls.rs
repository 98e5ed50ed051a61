//! TLS Secrets → certificates by host.
//!
//! A `spec.tls[]` entry names a Secret in the Ingress's namespace; it must be of type
//! `kubernetes.io/tls` with a PEM chain in `tls.crt` and a matching key in `tls.key`. A bad
//! Secret skips only the hosts of that entry; other hosts keep their certificates. Each Secret is
//! parsed once per build however many Ingresses reference it.

use std::collections::HashMap;
use std::sync::Arc;

use gateway::Cert;
use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;

use super::Context;
use crate::diagnostic::{Diagnostic, ObjectRef};

pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

#[derive(Default)]
pub struct CertCache {
    parsed: HashMap<(String, String), Result<Cert, String>>,
}

impl CertCache {
    /// The certificate in Secret `ns/name`, or why there is none.
    pub fn get(&mut self, snapshot: &super::Snapshot, ns: &str, name: &str) -> Result<Cert, String> {
        let key = (ns.to_string(), name.to_string());
        self.parsed
            .entry(key.clone())
            .or_insert_with(|| match snapshot.secrets.get(&key) {
                None => Err(format!("Secret {ns}/{name} not found")),
                Some(secret) => parse_secret(secret)
                    .map(|key| Cert { source: format!("{ns}/{name}").into(), key: Arc::new(key) })
                    .map_err(|e| format!("Secret {ns}/{name}: {e}")),
            })
            .clone()
    }
}

fn secret_field<'s>(secret: &'s Secret, field: &str) -> Option<std::borrow::Cow<'s, [u8]>> {
    if let Some(s) = secret.string_data.as_ref().and_then(|d| d.get(field)) {
        return Some(s.as_bytes().into());
    }
    secret.data.as_ref().and_then(|d| d.get(field)).map(|b| b.0.as_slice().into())
}

/// Parses a `kubernetes.io/tls` Secret into a rustls certified key.
pub fn parse_secret(secret: &Secret) -> Result<CertifiedKey, String> {
    let ty = secret.type_.as_deref().unwrap_or("Opaque");
    if ty != TLS_SECRET_TYPE {
        return Err(format!("type is {ty:?}, expected {TLS_SECRET_TYPE:?}"));
    }
    let crt = secret_field(secret, "tls.crt").ok_or("no tls.crt")?;
    let key = secret_field(secret, "tls.key").ok_or("no tls.key")?;
    parse_pem(&crt, &key)
}

pub fn parse_pem(crt: &[u8], key: &[u8]) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &*crt)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = rustls_pemfile::private_key(&mut &*key)
        .map_err(|e| format!("tls.key is not valid PEM: {e}"))?
        .ok_or("tls.key holds no private key")?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("tls.key is not a usable private key: {e}"))?;
    let ck = CertifiedKey::new(chain, signer);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err("tls.key does not match the certificate in tls.crt".into())
        }
        Err(e) => Err(format!("tls.crt is not a usable certificate: {e}")),
    }
}

/// Adds the certificates of one Ingress TLS entry for `hosts` (already validated).
pub(super) fn compile_entry(cx: &mut Context<'_>, from: &ObjectRef, field: &str, secret_name: &str, hosts: &[String]) {
    let cert = match cx.certs.get(cx.snapshot, &from.namespace, secret_name) {
        Ok(c) => c,
        Err(why) => {
            cx.diagnostics.push(Diagnostic::error(from, format!("{field}.secretName"), why));
            return;
        }
    };
    for host in hosts {
        let store = cx.table.certs_mut();
        if let Some(owner) = store.owner(host) {
            if *owner != *cert.source {
                let why = format!("host {host} already has the certificate of Secret {owner}; keeping it");
                cx.diagnostics.push(Diagnostic::warning(from, format!("{field}.hosts"), why));
            }
            continue;
        }
        store.insert(host, cert.clone());
    }
}

/// `--default-tls-secret`.
pub(super) fn compile_default(cx: &mut Context<'_>) {
    let Some((ns, name)) = &cx.opts.default_tls_secret else { return };
    match cx.certs.get(cx.snapshot, ns, name) {
        Ok(c) => cx.table.certs_mut().set_default(c),
        Err(why) => {
            let obj = ObjectRef::new("Secret", ns, name);
            cx.diagnostics.push(Diagnostic::error(&obj, "--default-tls-secret", why));
        }
    }
}
