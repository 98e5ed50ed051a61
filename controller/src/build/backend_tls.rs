//! BackendTLSPolicy: which policy verifies TLS to which Service port, and the status each policy
//! gets for every Gateway whose routes use a Service it targets.
//!
//! A policy targets Services (optionally one named port: `sectionName`). Policies naming the same
//! target are ordered oldest first, then by `namespace/name`; the first applies and the others
//! are `Accepted=False(Conflicted)`. A policy naming a port wins over one for the whole Service
//! on that port. Policies apply to the backends of HTTPRoutes and GRPCRoutes; Ingress backends
//! keep their own settings (`backend-protocol`, `appProtocol`).
//!
//! Trust anchors come from `caCertificateRefs` (ConfigMaps, or TLS Secrets, key `ca.crt`) or
//! `wellKnownCACertificates: System`. A reference that cannot be used makes `ResolvedRefs=False`
//! and is left out; when none is usable the policy is `Accepted=False(NoValidCACertificate)` and
//! its backends answer 500 — never an unverified connection.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use gateway::backend_tls::{self, BackendTls, SubjectAltName, TrustAnchors};

use super::gateway_api::{AncestorReport, CondReport, PolicyReport, GROUP};
use crate::diagnostic::{Diagnostic, ObjectRef};
use crate::gateway_api::types as gw;
use crate::snapshot::{Key, Snapshot};

/// `(namespace, service, sectionName)`.
type Target = (String, String, Option<String>);

/// The compiled policies of one build.
#[derive(Debug, Default)]
pub(super) struct Policies {
    /// Policies naming each target, the one that applies first.
    targets: HashMap<Target, Vec<Key>>,
    compiled: BTreeMap<Key, Compiled>,
}

#[derive(Debug)]
struct Compiled {
    generation: Option<i64>,
    /// What connections use, or why they cannot be made (the backend answers 500).
    tls: Result<Arc<BackendTls>, String>,
    accepted: CondReport,
    resolved_refs: CondReport,
    /// Gateways (namespace, name) whose routes use a target of the policy.
    ancestors: BTreeSet<(String, String)>,
}

fn cond(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> CondReport {
    CondReport { type_, status, reason, message: message.into() }
}

impl Policies {
    pub(super) fn compile(snapshot: &Snapshot, diagnostics: &mut Vec<Diagnostic>) -> Policies {
        let mut out = Policies::default();
        let mut order: Vec<(&Key, &Arc<gw::BackendTLSPolicy>)> = snapshot.backend_tls_policies.iter().collect();
        order.sort_by(|a, b| (created(a.1), a.0).cmp(&(created(b.1), b.0)));
        for (key, policy) in order {
            let obj = ObjectRef::new("BackendTLSPolicy", &key.0, &key.1);
            for (i, t) in policy.spec.target_refs.iter().enumerate() {
                if !t.group.is_empty() || t.kind != "Service" {
                    let why =
                        format!("target {}/{} is not a Service; ferry applies policies to Services", t.group, t.kind);
                    diagnostics.push(Diagnostic::warning(&obj, format!("spec.targetRefs[{i}]"), why));
                    continue;
                }
                let target = (key.0.clone(), t.name.clone(), t.section_name.clone());
                let list = out.targets.entry(target).or_default();
                if !list.contains(key) {
                    list.push(key.clone());
                }
            }
            for k in policy.spec.options.keys() {
                let why = format!("option {k:?} is not one ferry knows (it supports none); ignored");
                diagnostics.push(Diagnostic::warning(&obj, format!("spec.options.{k}"), why));
            }
            let compiled = compile_one(snapshot, key, policy, &obj, diagnostics);
            out.compiled.insert(key.clone(), compiled);
        }
        // The policies that lost a target to an older one.
        let mut conflicted: BTreeMap<Key, Key> = BTreeMap::new();
        for list in out.targets.values() {
            for loser in &list[1..] {
                conflicted.entry(loser.clone()).or_insert_with(|| list[0].clone());
            }
        }
        for (loser, winner) in conflicted {
            let obj = ObjectRef::new("BackendTLSPolicy", &loser.0, &loser.1);
            let why = format!(
                "BackendTLSPolicy {}/{} targets the same Service (and port) and takes precedence",
                winner.0, winner.1
            );
            diagnostics.push(Diagnostic::warning(&obj, "spec.targetRefs", why.clone()));
            if let Some(c) = out.compiled.get_mut(&loser) {
                c.accepted = cond("Accepted", false, "Conflicted", why);
            }
        }
        out
    }

    /// The policy that applies to a Service port (named `port_name`, if it has a name): the one
    /// naming the port, else the one for the whole Service.
    pub(super) fn lookup(
        &self,
        ns: &str,
        service: &str,
        port_name: Option<&str>,
    ) -> Option<&Result<Arc<BackendTls>, String>> {
        let key = |section: Option<&str>| (ns.to_string(), service.to_string(), section.map(str::to_string));
        let named = port_name.and_then(|p| self.targets.get(&key(Some(p))));
        let winner = named.or_else(|| self.targets.get(&key(None)))?.first()?;
        self.compiled.get(winner).map(|c| &c.tls)
    }

    /// Records that a route attached to Gateway `gateway` uses the Service port: every policy
    /// naming it (the conflicted ones too) reports that Gateway as an ancestor.
    pub(super) fn used(&mut self, ns: &str, service: &str, port_name: Option<&str>, gateway: (&str, &str)) {
        let key = |section: Option<&str>| (ns.to_string(), service.to_string(), section.map(str::to_string));
        let mut keys: Vec<Key> = self.targets.get(&key(None)).cloned().unwrap_or_default();
        if let Some(p) = port_name {
            keys.extend(self.targets.get(&key(Some(p))).cloned().unwrap_or_default());
        }
        for k in keys {
            if let Some(c) = self.compiled.get_mut(&k) {
                c.ancestors.insert((gateway.0.to_string(), gateway.1.to_string()));
            }
        }
    }

    /// The status of every policy with an ancestor of ours.
    pub(super) fn reports(&self) -> Vec<PolicyReport> {
        self.compiled
            .iter()
            .filter(|(_, c)| !c.ancestors.is_empty())
            .map(|((ns, name), c)| PolicyReport {
                kind: "BackendTLSPolicy",
                namespace: ns.clone(),
                name: name.clone(),
                generation: c.generation,
                ancestors: c
                    .ancestors
                    .iter()
                    .map(|(gns, gname)| AncestorReport {
                        ancestor_ref: gw::ParentReference {
                            group: Some(GROUP.into()),
                            kind: Some("Gateway".into()),
                            namespace: Some(gns.clone()),
                            name: gname.clone(),
                            ..Default::default()
                        },
                        conditions: vec![c.accepted.clone(), c.resolved_refs.clone()],
                    })
                    .collect(),
            })
            .collect()
    }
}

fn created(p: &gw::BackendTLSPolicy) -> Option<i64> {
    p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second())
}

fn compile_one(
    snapshot: &Snapshot,
    (ns, name): &Key,
    policy: &gw::BackendTLSPolicy,
    obj: &ObjectRef,
    diagnostics: &mut Vec<Diagnostic>,
) -> Compiled {
    let v = &policy.spec.validation;
    let mut compiled = Compiled {
        generation: policy.metadata.generation,
        tls: Err(String::new()),
        accepted: cond("Accepted", true, "Accepted", ""),
        resolved_refs: cond("ResolvedRefs", true, "ResolvedRefs", ""),
        ancestors: BTreeSet::new(),
    };
    let invalid = |field: &str, why: String, compiled: &mut Compiled, diagnostics: &mut Vec<Diagnostic>| {
        diagnostics.push(Diagnostic::error(obj, field, why.clone()));
        compiled.accepted = cond("Accepted", false, "Invalid", why.clone());
        compiled.tls = Err(format!("BackendTLSPolicy {ns}/{name}: {why}"));
    };
    // The identity expected of the pods.
    let hostname = v.hostname.as_str();
    if hostname.is_empty() || hostname.contains('*') || super::ingress::validate_host(hostname).is_err() {
        invalid(
            "spec.validation.hostname",
            format!("hostname {hostname:?} must be a DNS name without wildcards"),
            &mut compiled,
            diagnostics,
        );
        return compiled;
    }
    let mut sans = Vec::new();
    for (i, san) in v.subject_alt_names.iter().enumerate() {
        let field = format!("spec.validation.subjectAltNames[{i}]");
        match (san.type_.as_str(), &san.hostname, &san.uri) {
            ("Hostname", Some(h), _) if !h.contains('*') && super::ingress::validate_host(h).is_ok() => {
                sans.push(SubjectAltName::Dns(h.clone()))
            }
            ("URI", _, Some(u)) if u.split_once(':').is_some_and(|(s, rest)| !s.is_empty() && !rest.is_empty()) => {
                sans.push(SubjectAltName::Uri(u.clone()))
            }
            (t, _, _) => {
                let why = format!(
                    "subjectAltName of type {t:?} needs a DNS `hostname` without wildcards (Hostname) or a `uri` with a scheme (URI)"
                );
                invalid(&field, why, &mut compiled, diagnostics);
                return compiled;
            }
        }
    }
    // The trust anchors.
    let anchors = match (&v.well_known_ca_certificates, v.ca_certificate_refs.is_empty()) {
        (Some(_), false) => {
            let why = "caCertificateRefs and wellKnownCACertificates are exclusive".to_string();
            invalid("spec.validation", why, &mut compiled, diagnostics);
            return compiled;
        }
        (Some(w), true) if w == "System" => TrustAnchors::System,
        (Some(w), true) => {
            invalid(
                "spec.validation.wellKnownCACertificates",
                format!("{w:?} is not supported (System is)"),
                &mut compiled,
                diagnostics,
            );
            return compiled;
        }
        (None, true) => {
            let why = "one of caCertificateRefs or wellKnownCACertificates is required".to_string();
            invalid("spec.validation", why, &mut compiled, diagnostics);
            return compiled;
        }
        (None, false) => {
            let mut pem = Vec::new();
            for (i, r) in v.ca_certificate_refs.iter().enumerate() {
                let field = format!("spec.validation.caCertificateRefs[{i}]");
                let found = match (r.group.as_str(), r.kind.as_str()) {
                    ("", "ConfigMap") => Ok(snapshot
                        .config_maps
                        .get(&(ns.clone(), r.name.clone()))
                        .map(|c| c.data.as_ref().and_then(|d| d.get("ca.crt")).map(|s| s.as_bytes().to_vec()))),
                    ("", "Secret") => Ok(snapshot
                        .secrets
                        .get(&(ns.clone(), r.name.clone()))
                        .map(|s| s.data.as_ref().and_then(|d| d.get("ca.crt")).map(|b| b.0.clone()))),
                    (g, k) => {
                        Err(format!("{g}/{k} is not a kind ferry reads CA certificates from (ConfigMap, Secret)"))
                    }
                };
                let failed = match found {
                    Err(why) => Some(("InvalidKind", why)),
                    Ok(None) => Some(("InvalidCACertificateRef", format!("{} {ns}/{} not found", r.kind, r.name))),
                    Ok(Some(None)) => {
                        Some(("InvalidCACertificateRef", format!("{} {ns}/{} has no ca.crt", r.kind, r.name)))
                    }
                    Ok(Some(Some(data))) => match backend_tls::ca_certificates(&data) {
                        Ok(_) => {
                            pem.extend_from_slice(&data);
                            pem.push(b'\n');
                            None
                        }
                        Err(why) => Some(("InvalidCACertificateRef", format!("{} {ns}/{}: {why}", r.kind, r.name))),
                    },
                };
                if let Some((reason, why)) = failed {
                    diagnostics.push(Diagnostic::error(obj, field, why.clone()));
                    if compiled.resolved_refs.status {
                        compiled.resolved_refs = cond("ResolvedRefs", false, reason, why);
                    }
                }
            }
            if pem.is_empty() {
                let why = format!("no usable CA certificate: {}", compiled.resolved_refs.message);
                compiled.accepted = cond("Accepted", false, "NoValidCACertificate", why.clone());
                compiled.tls = Err(format!("BackendTLSPolicy {ns}/{name}: {why}"));
                return compiled;
            }
            TrustAnchors::Pem(pem)
        }
    };
    match BackendTls::new(&format!("{ns}/{name}"), &anchors, hostname, sans) {
        Ok(tls) => compiled.tls = Ok(Arc::new(tls)),
        Err(why) => invalid("spec.validation", why, &mut compiled, diagnostics),
    }
    compiled
}
