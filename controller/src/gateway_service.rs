//! Kubernetes mode: one Service per Gateway of ours, and the container ports those Services pin.
//!
//! A Service selects pods of its own namespace only, so every Gateway's Service lives in ferry's
//! namespace (`POD_NAMESPACE`), selects ferry's pods (`--gateway-service-selector`) and has one
//! port per distinct listener port: `port` is the listener's port, `targetPort` a container port
//! taken from `--gateway-ports`. The Services are the record of that allocation: every replica
//! watches them and binds exactly the `targetPort`s they name ([`pins`]), so all replicas serve a
//! listener on the same container port, and the leader keeps a port for as long as its listener
//! exists ([`plan`] reuses what a Service already says, and hands out the lowest free port only
//! to new listener ports).
//!
//! ferry touches only Services carrying `ferry.dev/owned-by=<election id>` (RBAC cannot restrict
//! updates to some Services of a namespace; this label is where ferry restricts itself): it
//! watches with that label selector, updates and deletes only what that watch returns, and
//! never takes over a Service of the same name without the label.
//!
//! Everything here is pure; the writer ([`crate::gateway_status`]) does the I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::RangeInclusive;
use std::sync::Arc;

use gateway::ListenerKey;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::build::GatewayApiStatus;
use crate::gateway_api::types as gw;
use crate::snapshot::Key;

/// Label that marks a Service as ferry's (value: the installation's election id).
pub const OWNED_BY: &str = "ferry.dev/owned-by";
/// Annotation naming the Gateway (`namespace/name`) a Service serves; labels cannot hold every
/// Gateway name (63 characters at most), so this is the authoritative link.
pub const GATEWAY_ANNOTATION: &str = "ferry.dev/gateway";
/// Labels naming the Gateway, for `kubectl get svc -l`, set when the value fits in a label.
pub const GATEWAY_NAMESPACE_LABEL: &str = "ferry.dev/gateway-namespace";
pub const GATEWAY_NAME_LABEL: &str = "ferry.dev/gateway-name";

/// How ferry makes the per-Gateway Services.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// ferry's own namespace (`POD_NAMESPACE`), where the Services live.
    pub namespace: String,
    /// Value of the `ferry.dev/owned-by` label (the election id: unique per installation in a
    /// namespace, as the installations could not share a Lease).
    pub instance: String,
    /// `LoadBalancer`, `NodePort` or `ClusterIP`.
    pub service_type: String,
    /// Labels of ferry's pods.
    pub selector: BTreeMap<String, String>,
    /// `--gateway-ports`: container ports to allocate from.
    pub ports: RangeInclusive<u16>,
}

impl ServiceOptions {
    /// The label selector of ferry's own Services.
    pub fn label_selector(&self) -> String {
        format!("{OWNED_BY}={}", self.instance)
    }
}

/// The Services carrying our label, as the watch of ferry's namespace last listed them.
#[derive(Debug, Clone, Default)]
pub struct OwnedServices {
    /// By name.
    pub services: Arc<BTreeMap<String, Arc<Service>>>,
    /// The watch has completed a list (before that, a missing Service may just not be seen yet).
    pub synced: bool,
}

/// The `ferry.dev/owned-by` value for an election id: the id itself when it is a valid label
/// value, else a prefix of it and a hash.
pub fn instance_label(election_id: &str) -> String {
    let valid = |s: &str| {
        s.len() <= 63
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if valid(election_id) {
        return election_id.to_string();
    }
    let hash = format!("{:010x}", fnv1a(election_id.as_bytes()) & 0xff_ffff_ffff);
    let prefix: String =
        election_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(63 - 1 - hash.len()).collect();
    let prefix = prefix.trim_matches('-');
    if prefix.is_empty() {
        format!("ferry-{hash}")
    } else {
        format!("{prefix}-{hash}")
    }
}

/// What the leader should change.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Services to create or update (complete desired objects, for server-side apply).
    pub apply: Vec<Service>,
    /// Names of our Services to delete.
    pub delete: Vec<String>,
    /// Listener ports that got no container port (the range is used up).
    pub unallocated: Vec<(Key, u16)>,
}

/// The Gateway (`namespace/name`) a Service of ours serves.
pub fn gateway_of(svc: &Service) -> Option<&str> {
    svc.metadata.annotations.as_ref()?.get(GATEWAY_ANNOTATION).map(String::as_str)
}

/// The Service of Gateway `ns/name` among ours.
pub fn service_of<'a>(owned: &'a BTreeMap<String, Arc<Service>>, ns: &str, name: &str) -> Option<&'a Arc<Service>> {
    let id = format!("{ns}/{name}");
    owned.values().find(|s| gateway_of(s) == Some(id.as_str()))
}

/// The container port each Gateway listener port is served on, as our Services say: every
/// replica binds exactly these.
pub fn pins(owned: &BTreeMap<String, Arc<Service>>) -> HashMap<ListenerKey, u16> {
    let mut out = HashMap::new();
    for svc in owned.values() {
        let Some(gateway) = gateway_of(svc) else { continue };
        let gateway: Arc<str> = gateway.into();
        for p in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
            let (Ok(port), Some(IntOrString::Int(target))) = (u16::try_from(p.port), &p.target_port) else { continue };
            if let Ok(target) = u16::try_from(*target) {
                out.insert(ListenerKey { gateway: gateway.clone(), port }, target);
            }
        }
    }
    out
}

/// Where clients reach a Gateway: its Service's LoadBalancer ingress (IP or host name), else its
/// ClusterIPs.
pub fn addresses(svc: &Service) -> Vec<gw::GatewayStatusAddress> {
    let address = |type_: &str, value: &str| gw::GatewayStatusAddress {
        type_: Some(type_.to_string()),
        value: value.to_string(),
    };
    let lb: Vec<gw::GatewayStatusAddress> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| match (&i.ip, &i.hostname) {
            (Some(ip), _) if !ip.is_empty() => Some(address("IPAddress", ip)),
            (_, Some(host)) if !host.is_empty() => Some(address("Hostname", host)),
            _ => None,
        })
        .collect();
    if !lb.is_empty() {
        return lb;
    }
    let spec = svc.spec.as_ref();
    let mut ips: Vec<&String> = spec.and_then(|s| s.cluster_ips.as_ref()).into_iter().flatten().collect();
    if ips.is_empty() {
        ips.extend(spec.and_then(|s| s.cluster_ip.as_ref()));
    }
    ips.into_iter().filter(|ip| !ip.is_empty() && *ip != "None").map(|ip| address("IPAddress", ip)).collect()
}

/// The Service name for a Gateway: `<namespace>-<name>` made a DNS label (dots become dashes,
/// a leading digit gets `gw-` before it), shortened with a hash when longer than 63 characters.
pub fn service_name(ns: &str, name: &str) -> String {
    let base = dns_label(ns, name);
    if base.len() <= 63 {
        base
    } else {
        hashed_name(ns, name)
    }
}

/// `<namespace>-<name>` cut to 52 characters, then a hash of the Gateway: unique per Gateway, at
/// most 63 characters.
pub fn hashed_name(ns: &str, name: &str) -> String {
    let hash = format!("{:010x}", fnv1a(format!("{ns}/{name}").as_bytes()) & 0xff_ffff_ffff);
    let mut base = dns_label(ns, name);
    base.truncate(63 - 1 - hash.len());
    format!("{}-{hash}", base.trim_end_matches('-'))
}

fn dns_label(ns: &str, name: &str) -> String {
    let mut base: String = format!("{ns}-{name}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
        base.insert_str(0, "gw-");
    }
    base
}

/// FNV-1a (64 bit): a hash that is the same on every replica and every build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// A Service port: listener port and `TCP` or `UDP`.
type ServicePortKey = (u16, &'static str);

/// The ports a Gateway's Service needs: (listener port, `TCP`|`UDP`) of every accepted listener.
fn wanted_ports(report: &crate::build::gateway_api::GatewayReport, g: &gw::Gateway) -> BTreeSet<ServicePortKey> {
    let accepted: BTreeSet<&str> = report
        .listeners
        .iter()
        .filter(|l| l.conditions.iter().any(|c| c.type_ == "Accepted" && c.status))
        .map(|l| l.name.as_str())
        .collect();
    g.spec
        .listeners
        .iter()
        .filter(|l| accepted.contains(l.name.as_str()))
        .filter_map(|l| {
            let port = u16::try_from(l.port).ok().filter(|p| *p > 0)?;
            Some((port, if l.protocol == "UDP" { "UDP" } else { "TCP" }))
        })
        .collect()
}

/// What the per-Gateway Services should be, given the Gateways of ours (`status.gateways`, with
/// their objects in `gateways`) and the Services we have (`owned`, all carrying our label).
/// Names in `foreign` belong to Services that are not ours: new Services avoid them.
pub fn plan(
    status: &GatewayApiStatus,
    gateways: &gateway::FastMap<Key, Arc<gw::Gateway>>,
    owned: &BTreeMap<String, Arc<Service>>,
    foreign: &BTreeSet<String>,
    opts: &ServiceOptions,
) -> Plan {
    // The Gateways that need a Service, oldest first (an older Gateway keeps the plain name
    // when two would get the same one).
    let mut wanted: Vec<(&Key, &Arc<gw::Gateway>, BTreeSet<ServicePortKey>)> = Vec::new();
    for report in &status.gateways {
        let key = (report.namespace.clone(), report.name.clone());
        let Some((key, g)) = gateways.get_key_value(&key) else { continue };
        let ports = wanted_ports(report, g);
        if !ports.is_empty() {
            wanted.push((key, g, ports));
        }
    }
    wanted.sort_by(|a, b| {
        let created = |g: &gw::Gateway| g.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (created(a.1), a.0).cmp(&(created(b.1), b.0))
    });
    let ids: BTreeSet<String> = wanted.iter().map(|(k, _, _)| format!("{}/{}", k.0, k.1)).collect();

    let mut out = Plan::default();
    // Services of Gateways that are gone (or need none): deleted, their ports free again. Of
    // two Services claiming one Gateway, the first by name is kept.
    let mut kept: BTreeMap<String, &Arc<Service>> = BTreeMap::new();
    for (name, svc) in owned {
        match gateway_of(svc) {
            Some(g) if ids.contains(g) && !kept.contains_key(g) => {
                kept.insert(g.to_string(), svc);
            }
            _ => out.delete.push(name.clone()),
        }
    }
    let mut used: BTreeSet<u16> = kept
        .values()
        .flat_map(|s| s.spec.iter().flat_map(|s| s.ports.iter().flatten()))
        .filter_map(|p| match p.target_port {
            Some(IntOrString::Int(t)) => u16::try_from(t).ok(),
            _ => None,
        })
        .collect();
    let mut names: BTreeSet<String> = kept.values().filter_map(|s| s.metadata.name.clone()).collect();
    names.extend(foreign.iter().cloned());

    for (key, g, ports) in wanted {
        let id = format!("{}/{}", key.0, key.1);
        let existing = kept.get(&id).copied();
        let name = match existing.and_then(|s| s.metadata.name.clone()) {
            Some(name) => name,
            None => {
                let plain = service_name(&key.0, &key.1);
                let name = if names.contains(&plain) { hashed_name(&key.0, &key.1) } else { plain };
                names.insert(name.clone());
                name
            }
        };
        let current: BTreeMap<i32, i32> = existing
            .into_iter()
            .flat_map(|s| s.spec.iter().flat_map(|s| s.ports.iter().flatten()))
            .filter_map(|p| match p.target_port {
                Some(IntOrString::Int(t)) => Some((p.port, t)),
                _ => None,
            })
            .collect();
        let mut service_ports = Vec::new();
        for (port, protocol) in ports {
            let target = match current.get(&i32::from(port)) {
                Some(t) => Some(*t),
                None => {
                    let free = opts.ports.clone().find(|p| !used.contains(p));
                    if let Some(p) = free {
                        used.insert(p);
                    }
                    free.map(i32::from)
                }
            };
            let Some(target) = target else {
                out.unallocated.push((key.clone(), port));
                continue;
            };
            service_ports.push(ServicePort {
                name: Some(format!("{}-{port}", protocol.to_ascii_lowercase())),
                port: i32::from(port),
                target_port: Some(IntOrString::Int(target)),
                protocol: Some(protocol.to_string()),
                ..ServicePort::default()
            });
        }
        if service_ports.is_empty() {
            if let Some(s) = existing.and_then(|s| s.metadata.name.clone()) {
                out.delete.push(s);
            }
            continue;
        }
        let desired = desired_service(&name, &key.0, &key.1, g, service_ports, opts);
        if existing.is_none_or(|s| differs(s, &desired)) {
            out.apply.push(desired);
        }
    }
    out.delete.sort();
    out.delete.dedup();
    out
}

fn desired_service(
    name: &str,
    ns: &str,
    gw_name: &str,
    g: &gw::Gateway,
    ports: Vec<ServicePort>,
    opts: &ServiceOptions,
) -> Service {
    let infra = g.spec.infrastructure.as_ref();
    let mut labels: BTreeMap<String, String> = infra.map(|i| i.labels.clone()).unwrap_or_default();
    let mut annotations: BTreeMap<String, String> = infra.map(|i| i.annotations.clone()).unwrap_or_default();
    labels.insert(OWNED_BY.into(), opts.instance.clone());
    for (label, value) in [(GATEWAY_NAMESPACE_LABEL, ns), (GATEWAY_NAME_LABEL, gw_name)] {
        if value.len() <= 63 {
            labels.insert(label.into(), value.into());
        } else {
            labels.remove(label);
        }
    }
    annotations.insert(GATEWAY_ANNOTATION.into(), format!("{ns}/{gw_name}"));
    // Garbage collection when the Gateway goes, where Kubernetes allows it (owners must be in
    // the same namespace); ferry deletes the Service itself either way.
    let owner_references = (ns == opts.namespace).then(|| {
        vec![OwnerReference {
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "Gateway".into(),
            name: gw_name.into(),
            uid: g.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: None,
        }]
    });
    let owner_references = owner_references.filter(|o| !o[0].uid.is_empty());
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(opts.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references,
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(opts.service_type.clone()),
            selector: Some(opts.selector.clone()),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Whether `current` lacks something `desired` says. Fields others add (annotations of cloud
/// controllers, allocated node ports, ClusterIPs) do not count.
pub fn differs(current: &Service, desired: &Service) -> bool {
    let contains = |have: &Option<BTreeMap<String, String>>, want: &Option<BTreeMap<String, String>>| {
        let have = have.clone().unwrap_or_default();
        want.iter().flatten().all(|(k, v)| have.get(k) == Some(v))
    };
    let (c, d) = (&current.metadata, &desired.metadata);
    if !contains(&c.labels, &d.labels) || !contains(&c.annotations, &d.annotations) {
        return true;
    }
    let owners = |m: &ObjectMeta| m.owner_references.iter().flatten().map(|o| o.uid.clone()).collect::<Vec<_>>();
    if d.owner_references.is_some() && owners(c) != owners(d) {
        return true;
    }
    let (Some(cs), Some(ds)) = (&current.spec, &desired.spec) else { return true };
    let ports = |s: &ServiceSpec| -> Vec<(Option<String>, i32, Option<IntOrString>, String)> {
        let mut v: Vec<_> = s
            .ports
            .iter()
            .flatten()
            .map(|p| {
                (p.name.clone(), p.port, p.target_port.clone(), p.protocol.clone().unwrap_or_else(|| "TCP".into()))
            })
            .collect();
        v.sort_by(|a, b| (a.1, &a.3).cmp(&(b.1, &b.3)));
        v
    };
    cs.type_.as_deref().unwrap_or("ClusterIP") != ds.type_.as_deref().unwrap_or("ClusterIP")
        || cs.selector != ds.selector
        || ports(cs) != ports(ds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::gateway_api::{CondReport, GatewayReport, ListenerReport};

    fn opts() -> ServiceOptions {
        ServiceOptions {
            namespace: "ferry".into(),
            instance: "ferry-leader".into(),
            service_type: "LoadBalancer".into(),
            selector: [("app".to_string(), "ferry".to_string())].into(),
            ports: 20000..=20002,
        }
    }

    fn gateway(ns: &str, name: &str, listeners: &[(&str, i32, &str)]) -> (Key, Arc<gw::Gateway>, GatewayReport) {
        let mut g = gw::Gateway::new(name, gw::GatewaySpec::default());
        g.metadata.namespace = Some(ns.into());
        g.metadata.uid = Some(format!("uid-{name}"));
        for (l, port, protocol) in listeners {
            g.spec.listeners.push(gw::Listener {
                name: l.to_string(),
                port: *port,
                protocol: protocol.to_string(),
                ..gw::Listener::default()
            });
        }
        let report = GatewayReport {
            namespace: ns.into(),
            name: name.into(),
            generation: Some(1),
            conditions: vec![],
            listeners: listeners
                .iter()
                .map(|(l, port, _)| ListenerReport {
                    name: l.to_string(),
                    port: *port,
                    supported_kinds: vec!["HTTPRoute"],
                    attached_routes: 0,
                    conditions: vec![CondReport {
                        type_: "Accepted",
                        status: *port != 0,
                        reason: "Accepted",
                        message: String::new(),
                    }],
                })
                .collect(),
        };
        ((ns.into(), name.into()), Arc::new(g), report)
    }

    fn inputs(
        list: Vec<(Key, Arc<gw::Gateway>, GatewayReport)>,
    ) -> (GatewayApiStatus, gateway::FastMap<Key, Arc<gw::Gateway>>) {
        let mut status = GatewayApiStatus::default();
        let mut gateways = gateway::FastMap::default();
        for (k, g, r) in list {
            gateways.insert(k, g);
            status.gateways.push(r);
        }
        (status, gateways)
    }

    fn owned(services: Vec<Service>) -> BTreeMap<String, Arc<Service>> {
        services.into_iter().map(|s| (s.metadata.name.clone().unwrap(), Arc::new(s))).collect()
    }

    fn targets(s: &Service) -> Vec<(i32, String, i32)> {
        s.spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .flatten()
            .map(|p| {
                let Some(IntOrString::Int(t)) = p.target_port else { panic!() };
                (p.port, p.protocol.clone().unwrap(), t)
            })
            .collect()
    }

    #[test]
    fn one_service_per_gateway_with_one_port_per_listener_port() {
        let (status, gateways) = inputs(vec![gateway(
            "team",
            "web",
            &[("http", 80, "HTTP"), ("http-alt", 80, "HTTP"), ("dns", 53, "UDP"), ("bad", 0, "HTTP")],
        )]);
        let p = plan(&status, &gateways, &BTreeMap::new(), &BTreeSet::new(), &opts());
        assert_eq!(p.apply.len(), 1);
        let svc = &p.apply[0];
        assert_eq!(svc.metadata.name.as_deref(), Some("team-web"));
        assert_eq!(svc.metadata.namespace.as_deref(), Some("ferry"));
        assert_eq!(targets(svc), [(53, "UDP".into(), 20000), (80, "TCP".into(), 20001)]);
        let labels = svc.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[OWNED_BY], "ferry-leader");
        assert_eq!((labels[GATEWAY_NAMESPACE_LABEL].as_str(), labels[GATEWAY_NAME_LABEL].as_str()), ("team", "web"));
        assert_eq!(svc.metadata.annotations.as_ref().unwrap()[GATEWAY_ANNOTATION], "team/web");
        assert!(svc.metadata.owner_references.is_none(), "no owner across namespaces");
        assert_eq!(svc.spec.as_ref().unwrap().type_.as_deref(), Some("LoadBalancer"));
    }

    #[test]
    fn allocations_are_stable_and_gone_gateways_lose_their_service() {
        let o = opts();
        let (status, gateways) = inputs(vec![gateway("ferry", "a", &[("http", 80, "HTTP")])]);
        let first = plan(&status, &gateways, &BTreeMap::new(), &BTreeSet::new(), &o);
        let mut have = owned(first.apply.clone());
        assert!(first.apply[0].metadata.owner_references.is_some(), "same namespace: owned by the Gateway");
        assert_eq!(pins(&have)[&ListenerKey { gateway: "ferry/a".into(), port: 80 }], 20000);

        // Nothing changed: nothing to write.
        assert_eq!(plan(&status, &gateways, &have, &BTreeSet::new(), &o), Plan::default());

        // A second Gateway, and a listener added to the first: existing ports keep their
        // container port, new ones take the lowest free one.
        let (status, gateways) = inputs(vec![
            gateway("ferry", "b", &[("http", 80, "HTTP")]),
            gateway("ferry", "a", &[("http", 80, "HTTP"), ("https", 443, "HTTPS")]),
        ]);
        let next = plan(&status, &gateways, &have, &BTreeSet::new(), &o);
        assert_eq!(next.apply.len(), 2);
        for s in &next.apply {
            have.insert(s.metadata.name.clone().unwrap(), Arc::new(s.clone()));
        }
        assert_eq!(targets(&have["ferry-a"]), [(80, "TCP".into(), 20000), (443, "TCP".into(), 20001)]);
        assert_eq!(targets(&have["ferry-b"]), [(80, "TCP".into(), 20002)]);

        // The range is used up: a third Gateway's port is reported, not served on a shared port.
        let (status3, gateways3) = inputs(vec![
            gateway("ferry", "b", &[("http", 80, "HTTP")]),
            gateway("ferry", "a", &[("http", 80, "HTTP"), ("https", 443, "HTTPS")]),
            gateway("ferry", "c", &[("http", 80, "HTTP")]),
        ]);
        let full = plan(&status3, &gateways3, &have, &BTreeSet::new(), &o);
        assert!(full.apply.is_empty());
        assert_eq!(full.unallocated, [(("ferry".to_string(), "c".to_string()), 80)]);

        // Gateway a goes: its Service is deleted and b keeps its port.
        let (status, gateways) = inputs(vec![gateway("ferry", "b", &[("http", 80, "HTTP")])]);
        let after = plan(&status, &gateways, &have, &BTreeSet::new(), &o);
        assert_eq!(after.delete, ["ferry-a"]);
        assert!(after.apply.is_empty());
    }

    #[test]
    fn names_are_dns_labels_and_unique() {
        assert_eq!(service_name("default", "gw.example"), "default-gw-example");
        assert_eq!(service_name("1team", "web"), "gw-1team-web");
        let long = "x".repeat(70);
        let name = service_name("team", &long);
        assert!(name.len() <= 63 && name.starts_with("team-x"), "{name}");
        assert_ne!(service_name("team", &long), service_name("team", &format!("{long}y")));
        // `a-b`/`c` and `a`/`b-c` would both be `a-b-c`: the younger Gateway gets the hashed name.
        let (status, gateways) =
            inputs(vec![gateway("a-b", "c", &[("http", 80, "HTTP")]), gateway("a", "b-c", &[("http", 80, "HTTP")])]);
        let p = plan(&status, &gateways, &BTreeMap::new(), &BTreeSet::new(), &opts());
        let names: BTreeSet<_> = p.apply.iter().map(|s| s.metadata.name.clone().unwrap()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.contains("a-b-c"));
    }

    #[test]
    fn infrastructure_labels_and_annotations_are_propagated_under_ours() {
        let (key, g, report) = gateway("ferry", "a", &[("http", 80, "HTTP")]);
        let mut g = (*g).clone();
        g.spec.infrastructure = Some(gw::GatewayInfrastructure {
            labels: [("team".to_string(), "x".to_string()), (OWNED_BY.to_string(), "someone".to_string())].into(),
            annotations: [("lb.example/type".to_string(), "nlb".to_string())].into(),
            parameters_ref: None,
        });
        let (status, gateways) = inputs(vec![(key, Arc::new(g), report)]);
        let p = plan(&status, &gateways, &BTreeMap::new(), &BTreeSet::new(), &opts());
        let m = &p.apply[0].metadata;
        assert_eq!(m.labels.as_ref().unwrap()["team"], "x");
        assert_eq!(m.labels.as_ref().unwrap()[OWNED_BY], "ferry-leader", "our marker wins");
        assert_eq!(m.annotations.as_ref().unwrap()["lb.example/type"], "nlb");
        // A cloud controller's annotation on the Service is not a difference.
        let mut have = p.apply[0].clone();
        have.metadata.annotations.as_mut().unwrap().insert("cloud/lb-id".into(), "123".into());
        assert!(plan(&status, &gateways, &owned(vec![have]), &BTreeSet::new(), &opts()).apply.is_empty());
    }

    #[test]
    fn addresses_prefer_the_load_balancer() {
        let mut svc = Service {
            spec: Some(ServiceSpec { cluster_ip: Some("10.96.0.7".into()), ..ServiceSpec::default() }),
            ..Service::default()
        };
        assert_eq!(addresses(&svc)[0].value, "10.96.0.7");
        svc.status = Some(k8s_openapi::api::core::v1::ServiceStatus {
            load_balancer: Some(k8s_openapi::api::core::v1::LoadBalancerStatus {
                ingress: Some(vec![
                    k8s_openapi::api::core::v1::LoadBalancerIngress {
                        ip: Some("192.0.2.1".into()),
                        ..Default::default()
                    },
                    k8s_openapi::api::core::v1::LoadBalancerIngress {
                        hostname: Some("lb.example.test".into()),
                        ..Default::default()
                    },
                ]),
            }),
            ..Default::default()
        });
        let a = addresses(&svc);
        assert_eq!(
            a.iter().map(|a| (a.type_.as_deref().unwrap(), a.value.as_str())).collect::<Vec<_>>(),
            [("IPAddress", "192.0.2.1"), ("Hostname", "lb.example.test")]
        );
    }
}
