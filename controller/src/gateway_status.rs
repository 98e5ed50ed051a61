//! Kubernetes mode writes for the Gateway API (leader only): the per-Gateway Services, then the
//! status of GatewayClasses, Gateways and routes.
//!
//! Every build computes what each object of ours should say ([`GatewayApiStatus`]); this writer
//! turns that into the API's status objects and writes a `/status` subresource only when the
//! stored one differs. Conditions carry `observedGeneration` and keep their
//! `lastTransitionTime` while their status stays the same, so a write that comes back as a watch
//! event compares equal and causes no further write. A route's `status.parents` is shared with
//! other controllers: their entries are kept as they are, ours are replaced, and ours for parents
//! the route no longer names are dropped; that write carries the `resourceVersion` it was computed
//! from, so a concurrent writer's change is never lost (the conflict is retried with the next
//! build). A BackendTLSPolicy's `status.ancestors` (one entry per Gateway whose routes use a
//! backend it targets) is shared and written the same way. Writes are JSON merge patches with
//! field manager `ferry`.
//!
//! Services are created and updated with server-side apply, and only ever after checking that no
//! Service of that name exists without ferry's label ([`gateway_service`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::build::gateway_api::{AncestorReport, ClassReport, CondReport, GatewayReport, ParentReport, GROUP};
use crate::build::GatewayApiStatus;
use crate::crd::Condition;
use crate::gateway_api::types as gw;
use crate::gateway_service::{self, OwnedServices, ServiceOptions, OWNED_BY};
use crate::snapshot::Key;
use crate::status::FIELD_MANAGER;

/// The version each Gateway API kind is served in (by kind), as the watchers discovered it;
/// status is written in that version.
pub type Served = Arc<Mutex<HashMap<&'static str, ApiResource>>>;

/// A route (any kind) with our report and the parents stored in its status.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteObject {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub current: Vec<gw::RouteParentStatus>,
    /// Our parents as the last build saw them (empty: none of ours any more).
    pub ours: Vec<ParentReport>,
}

/// A policy (BackendTLSPolicy) with our report and the ancestors stored in its status.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyObject {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub current: Vec<gw::PolicyAncestorStatus>,
    /// Our ancestors as the last build saw them (empty: none of ours any more).
    pub ours: Vec<AncestorReport>,
}

/// At most this many entries in a policy's `status.ancestors` (the API's limit). When the list
/// is full, no further entry may be added; entries already stored are never pushed out.
pub const MAX_ANCESTORS: usize = 16;

/// What the writer needs, replaced as a whole after every build.
#[derive(Debug, Clone, Default)]
pub struct GatewayApiInput {
    pub status: Arc<GatewayApiStatus>,
    pub classes: gateway::FastMap<String, Arc<gw::GatewayClass>>,
    pub gateways: gateway::FastMap<Key, Arc<gw::Gateway>>,
    /// Routes that have a parent of ours, or had one (our entries must then go).
    pub routes: Vec<RouteObject>,
    /// Policies that have an ancestor of ours, or had one (our entries must then go).
    pub policies: Vec<PolicyObject>,
    /// GatewayClasses and Gateways have been listed: without that, an empty list is no reason to
    /// delete a Service.
    pub synced: bool,
}

impl GatewayApiInput {
    /// Pairs every route of `snapshot` with the parents of ours the build gave it.
    pub fn routes_of(snapshot: &crate::Snapshot, status: &GatewayApiStatus, controller: &str) -> Vec<RouteObject> {
        let mut reports: HashMap<(&str, &str, &str), &Vec<ParentReport>> = HashMap::new();
        for r in &status.routes {
            reports.insert((r.kind, r.namespace.as_str(), r.name.as_str()), &r.parents);
        }
        let mut out = Vec::new();
        let mut add = |kind: &'static str,
                       key: &Key,
                       meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                       status: Option<&gw::RouteStatus>| {
            let ours = reports.get(&(kind, key.0.as_str(), key.1.as_str())).map(|p| (*p).clone()).unwrap_or_default();
            let current = status.map(|s| s.parents.clone()).unwrap_or_default();
            if ours.is_empty() && !current.iter().any(|p| p.controller_name == controller) {
                return;
            }
            out.push(RouteObject {
                kind,
                namespace: key.0.clone(),
                name: key.1.clone(),
                resource_version: meta.resource_version.clone(),
                generation: meta.generation,
                current,
                ours,
            });
        };
        for (k, r) in &snapshot.http_routes {
            add("HTTPRoute", k, &r.metadata, r.status.as_ref());
        }
        for (k, r) in &snapshot.grpc_routes {
            add("GRPCRoute", k, &r.metadata, r.status.as_ref());
        }
        for (k, r) in &snapshot.tls_routes {
            add("TLSRoute", k, &r.metadata, r.status.as_ref());
        }
        for (k, r) in &snapshot.tcp_routes {
            add("TCPRoute", k, &r.metadata, r.status.as_ref());
        }
        for (k, r) in &snapshot.udp_routes {
            add("UDPRoute", k, &r.metadata, r.status.as_ref());
        }
        out.sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
        out
    }

    /// Pairs every BackendTLSPolicy of `snapshot` with the ancestors of ours the build gave it;
    /// a policy the build no longer reports but whose status still holds entries of ours is
    /// included with none, so that those go.
    pub fn policies_of(snapshot: &crate::Snapshot, status: &GatewayApiStatus, controller: &str) -> Vec<PolicyObject> {
        let mut reports: HashMap<(&str, &str, &str), &Vec<AncestorReport>> = HashMap::new();
        for p in &status.policies {
            reports.insert((p.kind, p.namespace.as_str(), p.name.as_str()), &p.ancestors);
        }
        let kind = "BackendTLSPolicy";
        let mut out: Vec<PolicyObject> = snapshot
            .backend_tls_policies
            .iter()
            .filter_map(|(key, policy)| {
                let ours =
                    reports.get(&(kind, key.0.as_str(), key.1.as_str())).map(|a| (*a).clone()).unwrap_or_default();
                let current = policy.status.as_ref().map(|s| s.ancestors.clone()).unwrap_or_default();
                if ours.is_empty() && !current.iter().any(|a| a.controller_name == controller) {
                    return None;
                }
                Some(PolicyObject {
                    kind,
                    namespace: key.0.clone(),
                    name: key.1.clone(),
                    resource_version: policy.metadata.resource_version.clone(),
                    generation: policy.metadata.generation,
                    current,
                    ours,
                })
            })
            .collect();
        out.sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
        out
    }
}

/// The writer's settings.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// `--gateway-controller-name`: our entries in route status carry it.
    pub controller_name: String,
    /// Per-Gateway Services; `None`: none are made (and Gateways get no addresses).
    pub services: Option<ServiceOptions>,
}

/// RFC 3339 in seconds, as `metav1.Time` is written.
fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Status conditions from the build's reports: `observedGeneration` is the object's generation;
/// a condition keeps its stored `lastTransitionTime` while its status does not change.
pub fn conditions(reports: &[CondReport], generation: Option<i64>, current: &[Condition], now: &str) -> Vec<Condition> {
    reports
        .iter()
        .map(|r| {
            let status = if r.status { "True" } else { "False" };
            let since = current
                .iter()
                .find(|c| c.type_ == r.type_ && c.status == status && !c.last_transition_time.is_empty())
                .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
            Condition {
                type_: r.type_.to_string(),
                status: status.into(),
                reason: r.reason.to_string(),
                message: r.message.clone(),
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect()
}

/// A GatewayClass of ours: `Accepted` and `supportedFeatures`.
pub fn class_status(report: &ClassReport, current: &gw::GatewayClassStatus, now: &str) -> gw::GatewayClassStatus {
    gw::GatewayClassStatus {
        conditions: conditions(&report.conditions, report.generation, &current.conditions, now),
        supported_features: report
            .supported_features
            .iter()
            .map(|f| gw::SupportedFeature { name: f.to_string() })
            .collect(),
    }
}

/// A Gateway of ours: its conditions, its listeners, and where it is reached. With per-Gateway
/// Services (`needs_address`), a Gateway without an address yet is not `Programmed`.
pub fn gateway_status(
    report: &GatewayReport,
    current: &gw::GatewayStatus,
    addresses: Vec<gw::GatewayStatusAddress>,
    needs_address: bool,
    now: &str,
) -> gw::GatewayStatus {
    let mut reports = report.conditions.clone();
    if needs_address && addresses.is_empty() {
        for c in reports.iter_mut().filter(|c| c.type_ == "Programmed" && c.status) {
            *c = CondReport {
                type_: "Programmed",
                status: false,
                reason: "AddressNotAssigned",
                message: "waiting for the Gateway's Service to get an address".into(),
            };
        }
    }
    let listeners = report
        .listeners
        .iter()
        .map(|l| {
            let stored = current.listeners.iter().find(|s| s.name == l.name);
            gw::ListenerStatus {
                name: l.name.clone(),
                supported_kinds: l
                    .supported_kinds
                    .iter()
                    .map(|k| gw::RouteGroupKind { group: Some(GROUP.into()), kind: k.to_string() })
                    .collect(),
                attached_routes: i32::try_from(l.attached_routes).unwrap_or(i32::MAX),
                conditions: conditions(
                    &l.conditions,
                    report.generation,
                    stored.map(|s| s.conditions.as_slice()).unwrap_or_default(),
                    now,
                ),
            }
        })
        .collect();
    gw::GatewayStatus {
        addresses,
        conditions: conditions(&reports, report.generation, &current.conditions, now),
        listeners,
        attached_listener_sets: current.attached_listener_sets,
    }
}

/// A route's `status.parents`: other controllers' entries as stored, then ours in the build's
/// order; ours for parents no longer reported are dropped.
pub fn route_parents(route: &RouteObject, controller: &str, now: &str) -> Vec<gw::RouteParentStatus> {
    let mut out: Vec<gw::RouteParentStatus> =
        route.current.iter().filter(|p| p.controller_name != controller).cloned().collect();
    for p in &route.ours {
        let stored = route
            .current
            .iter()
            .find(|c| c.controller_name == controller && c.parent_ref == p.parent_ref)
            .map(|c| c.conditions.as_slice())
            .unwrap_or_default();
        out.push(gw::RouteParentStatus {
            parent_ref: p.parent_ref.clone(),
            controller_name: controller.to_string(),
            conditions: conditions(&p.conditions, route.generation, stored, now),
        });
    }
    out
}

/// A policy's `status.ancestors`: other controllers' entries as stored, then ours in the build's
/// order; ours for ancestors no longer reported are dropped. The list holds at most
/// [`MAX_ANCESTORS`]: a full list gets no new entry of ours (the API says to add none), while
/// ours already stored keep their place. Returns the entries and how many of ours were left out.
pub fn policy_ancestors(policy: &PolicyObject, controller: &str, now: &str) -> (Vec<gw::PolicyAncestorStatus>, usize) {
    let mut out: Vec<gw::PolicyAncestorStatus> =
        policy.current.iter().filter(|a| a.controller_name != controller).cloned().collect();
    let stored = |a: &AncestorReport| {
        policy.current.iter().find(|c| c.controller_name == controller && c.ancestor_ref == a.ancestor_ref)
    };
    // Room for ours: those already stored first, then new ones in the build's order.
    let mut room = MAX_ANCESTORS.saturating_sub(out.len());
    let already: Vec<bool> = policy.ours.iter().map(|a| stored(a).is_some()).collect();
    let mut kept = vec![false; policy.ours.len()];
    for first in [true, false] {
        for i in (0..already.len()).filter(|i| already[*i] == first) {
            if room > 0 {
                kept[i] = true;
                room -= 1;
            }
        }
    }
    for (a, _) in policy.ours.iter().zip(&kept).filter(|(_, k)| **k) {
        let conds = stored(a).map(|c| c.conditions.as_slice()).unwrap_or_default();
        out.push(gw::PolicyAncestorStatus {
            ancestor_ref: a.ancestor_ref.clone(),
            controller_name: controller.to_string(),
            conditions: conditions(&a.conditions, policy.generation, conds, now),
        });
    }
    (out, kept.iter().filter(|k| !**k).count())
}

/// What was last written for an object: the resourceVersion the write was based on and the
/// status without transition times. A build that still shows the object as it was before our
/// write (its watch event has not arrived yet) must not write the same thing again.
type Memo = HashMap<(&'static str, String, String), (Option<String>, Value)>;

fn without_times(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| *k != "lastTransitionTime").map(|(k, v)| (k.clone(), without_times(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_times).collect()),
        other => other.clone(),
    }
}

/// Writes Services and Gateway API status while this replica leads. Runs forever.
pub async fn run(
    client: Client,
    mut input: watch::Receiver<GatewayApiInput>,
    mut owned: watch::Receiver<OwnedServices>,
    mut leader: watch::Receiver<bool>,
    served: Served,
    opts: WriterOptions,
) {
    let mut w = Writer {
        client,
        served,
        opts,
        memo: Memo::new(),
        foreign: BTreeSet::new(),
        pending: BTreeMap::new(),
        full: BTreeSet::new(),
    };
    let mut owned_open = true;
    loop {
        let retry = if *leader.borrow_and_update() {
            let inp = input.borrow_and_update().clone();
            let own = owned.borrow_and_update().clone();
            w.pass(&inp, &own, &leader).await
        } else {
            // Another replica may write meanwhile: what we wrote says nothing then.
            w.memo.clear();
            false
        };
        tokio::select! {
            r = input.changed() => if r.is_err() { return },
            r = owned.changed(), if owned_open => if r.is_err() { owned_open = false },
            r = leader.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(5)), if retry => {}
        }
    }
}

struct Writer {
    client: Client,
    served: Served,
    opts: WriterOptions,
    memo: Memo,
    /// Service names held by Services that are not ours: never touched, never planned again.
    foreign: BTreeSet<String>,
    /// Services written (`Some`: applied, as stored; `None`: deleted) that the watch has not
    /// shown yet. No new plan is made meanwhile: one made on the older list would hand out the
    /// container ports just given to another Gateway.
    pending: BTreeMap<String, (Option<Arc<Service>>, std::time::Instant)>,
    /// Policies whose full `status.ancestors` left entries of ours out (warned once while so).
    full: BTreeSet<Key>,
}

/// How long a write may wait for the watch to show it before the list is trusted again.
const PENDING_FOR: Duration = Duration::from_secs(10);

impl Writer {
    /// One pass; returns whether something failed (and should be tried again).
    async fn pass(&mut self, inp: &GatewayApiInput, own: &OwnedServices, leader: &watch::Receiver<bool>) -> bool {
        let mut failed = false;
        self.pending.retain(|name, (applied, since)| {
            let seen = match applied {
                Some(svc) => own.services.get(name).is_some_and(|o| !gateway_service::differs(o, svc)),
                None => !own.services.contains_key(name),
            };
            !seen && since.elapsed() < PENDING_FOR
        });
        let mut services: BTreeMap<String, Arc<Service>> = own.services.as_ref().clone();
        for (name, (applied, _)) in &self.pending {
            match applied {
                Some(svc) => services.insert(name.clone(), svc.clone()),
                None => services.remove(name),
            };
        }
        if let Some(sopts) = self.opts.services.clone() {
            if inp.synced && own.synced && self.pending.is_empty() {
                let plan = gateway_service::plan(&inp.status, &inp.gateways, &own.services, &self.foreign, &sopts);
                for ((ns, name), port) in &plan.unallocated {
                    tracing::warn!(gateway = %format!("{ns}/{name}"), port, range = ?sopts.ports, "no free container port in --gateway-ports for this listener port");
                }
                for svc in plan.apply {
                    if !*leader.borrow() {
                        return false;
                    }
                    let name = svc.metadata.name.clone().unwrap_or_default();
                    match self.apply_service(&sopts, &svc).await {
                        Ok(stored) => {
                            tracing::info!(service = %format!("{}/{name}", sopts.namespace), gateway = gateway_service::gateway_of(&svc).unwrap_or(""), "Gateway Service applied");
                            let stored = Arc::new(stored);
                            self.pending.insert(name.clone(), (Some(stored.clone()), std::time::Instant::now()));
                            services.insert(name, stored);
                        }
                        Err(e) => {
                            tracing::warn!(service = %format!("{}/{name}", sopts.namespace), error = %e, "cannot apply a Gateway Service");
                            failed = true;
                        }
                    }
                }
                for name in plan.delete {
                    if !*leader.borrow() {
                        return false;
                    }
                    let api: Api<Service> = Api::namespaced(self.client.clone(), &sopts.namespace);
                    match api.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => {
                            tracing::info!(service = %format!("{}/{name}", sopts.namespace), "Gateway Service deleted");
                            self.pending.insert(name.clone(), (None, std::time::Instant::now()));
                            services.remove(&name);
                        }
                        Err(kube::Error::Api(s)) if s.is_not_found() => {
                            services.remove(&name);
                        }
                        Err(e) => {
                            tracing::warn!(service = %format!("{}/{name}", sopts.namespace), error = %e, "cannot delete a Gateway Service");
                            failed = true;
                        }
                    }
                }
            }
        }

        let now = now();
        for report in &inp.status.classes {
            let Some(obj) = inp.classes.get(&report.name) else { continue };
            let current = obj.status.clone().unwrap_or_default();
            let desired = class_status(report, &current, &now);
            if desired != current {
                let patch = json!({ "status": {
                    "conditions": desired.conditions,
                    "supportedFeatures": desired.supported_features,
                }});
                failed |= !self.write("GatewayClass", None, &report.name, &obj.metadata, patch, None, leader).await;
            }
        }
        for report in &inp.status.gateways {
            let Some(obj) = inp.gateways.get(&(report.namespace.clone(), report.name.clone())) else { continue };
            let current = obj.status.clone().unwrap_or_default();
            let addresses = gateway_service::service_of(&services, &report.namespace, &report.name)
                .map(|s| gateway_service::addresses(s))
                .unwrap_or_default();
            let desired = gateway_status(report, &current, addresses, self.opts.services.is_some(), &now);
            if desired != current {
                let addresses = if desired.addresses.is_empty() { Value::Null } else { json!(desired.addresses) };
                let patch = json!({ "status": {
                    "addresses": addresses,
                    "conditions": desired.conditions,
                    "listeners": desired.listeners,
                }});
                let ns = Some(report.namespace.as_str());
                failed |= !self.write("Gateway", ns, &report.name, &obj.metadata, patch, None, leader).await;
            }
        }
        let controller = self.opts.controller_name.clone();
        for route in &inp.routes {
            let desired = route_parents(route, &controller, &now);
            if desired == route.current {
                continue;
            }
            let patch = json!({ "status": { "parents": desired } });
            let meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                resource_version: route.resource_version.clone(),
                ..Default::default()
            };
            let rv = route.resource_version.clone();
            let ns = Some(route.namespace.as_str());
            failed |= !self.write(route.kind, ns, &route.name, &meta, patch, rv, leader).await;
        }
        for policy in &inp.policies {
            let (desired, left_out) = policy_ancestors(policy, &controller, &now);
            let key = (policy.namespace.clone(), policy.name.clone());
            if left_out == 0 {
                self.full.remove(&key);
            } else if self.full.insert(key) {
                tracing::warn!(
                    policy = %format!("{} {}/{}", policy.kind, policy.namespace, policy.name),
                    left_out,
                    max = MAX_ANCESTORS,
                    "status.ancestors is full: some Gateways using this policy get no entry of ours"
                );
            }
            if desired == policy.current {
                continue;
            }
            let patch = json!({ "status": { "ancestors": desired } });
            let meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                resource_version: policy.resource_version.clone(),
                ..Default::default()
            };
            let rv = policy.resource_version.clone();
            let ns = Some(policy.namespace.as_str());
            failed |= !self.write(policy.kind, ns, &policy.name, &meta, patch, rv, leader).await;
        }
        // Waiting for the watch to show our Service writes: the next pass comes when it does,
        // or after the retry delay.
        failed || !self.pending.is_empty()
    }

    /// Server-side apply of one of our Services, after checking that a Service of that name is
    /// ours (or absent): ferry never takes over someone else's Service.
    async fn apply_service(&mut self, sopts: &ServiceOptions, svc: &Service) -> Result<Service, String> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &sopts.namespace);
        let name = svc.metadata.name.clone().unwrap_or_default();
        if let Some(existing) = api.get_opt(&name).await.map_err(|e| e.to_string())? {
            let ours = existing.metadata.labels.as_ref().and_then(|l| l.get(OWNED_BY)) == Some(&sopts.instance);
            if !ours {
                self.foreign.insert(name.clone());
                return Err(format!(
                    "a Service of that name exists without {OWNED_BY}={}; not touching it (the Gateway gets another name)",
                    sopts.instance
                ));
            }
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(svc)).await.map_err(|e| e.to_string())
    }

    /// Merge-patches the status of one object (in the version its kind is served in); `rv` makes
    /// the write conditional on that resourceVersion. Returns whether it succeeded (or was not
    /// needed).
    #[allow(clippy::too_many_arguments)]
    async fn write(
        &mut self,
        kind: &'static str,
        ns: Option<&str>,
        name: &str,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        mut patch: Value,
        rv: Option<String>,
        leader: &watch::Receiver<bool>,
    ) -> bool {
        if !*leader.borrow() {
            return true;
        }
        let key = (kind, ns.unwrap_or("").to_string(), name.to_string());
        let print = without_times(&patch);
        if self.memo.get(&key).is_some_and(|(based_on, wrote)| *based_on == meta.resource_version && *wrote == print) {
            return true;
        }
        let Some(ar) = self.served.lock().unwrap_or_else(|e| e.into_inner()).get(kind).cloned() else {
            return true;
        };
        if let Some(rv) = rv {
            patch["metadata"] = json!({ "resourceVersion": rv });
        }
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        let who = match ns {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        };
        match api.patch_status(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(object = %who, "status written");
                self.memo.insert(key, (meta.resource_version.clone(), print));
                true
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => {
                tracing::debug!(object = %who, "status changed meanwhile; written again after the next build");
                true
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => true,
            Err(e) => {
                tracing::warn!(object = %who, error = %e, "status write failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(type_: &'static str, status: bool, reason: &'static str) -> CondReport {
        CondReport { type_, status, reason, message: String::new() }
    }

    #[test]
    fn transition_times_are_kept_while_the_status_holds() {
        let first = conditions(&[cond("Accepted", true, "Accepted")], Some(1), &[], "T1");
        assert_eq!((first[0].status.as_str(), first[0].last_transition_time.as_str()), ("True", "T1"));
        assert_eq!(first[0].observed_generation, Some(1));
        let again = conditions(&[cond("Accepted", true, "Accepted")], Some(1), &first, "T2");
        assert_eq!(again, first, "unchanged: nothing to write");
        let newer = conditions(&[cond("Accepted", true, "Accepted")], Some(2), &first, "T3");
        assert_eq!((newer[0].last_transition_time.as_str(), newer[0].observed_generation), ("T1", Some(2)));
        let flipped = conditions(&[cond("Accepted", false, "NotAllowedByListeners")], Some(2), &newer, "T4");
        assert_eq!(flipped[0].last_transition_time, "T4");
    }

    fn parent(name: &str) -> gw::ParentReference {
        gw::ParentReference {
            group: Some(GROUP.into()),
            kind: Some("Gateway".into()),
            namespace: Some("default".into()),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn route_parents_keep_other_controllers_and_drop_our_stale_entries() {
        let other = gw::RouteParentStatus {
            parent_ref: parent("theirs"),
            controller_name: "example.com/other".into(),
            conditions: vec![],
        };
        let stale = gw::RouteParentStatus {
            parent_ref: parent("gone"),
            controller_name: "ferry.dev/gateway-controller".into(),
            conditions: vec![],
        };
        let route = RouteObject {
            kind: "HTTPRoute",
            namespace: "default".into(),
            name: "r".into(),
            resource_version: Some("7".into()),
            generation: Some(3),
            current: vec![other.clone(), stale],
            ours: vec![ParentReport { parent_ref: parent("gw"), conditions: vec![cond("Accepted", true, "Accepted")] }],
        };
        let parents = route_parents(&route, "ferry.dev/gateway-controller", "T");
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[0], other);
        assert_eq!(parents[1].parent_ref.name, "gw");
        assert_eq!(parents[1].controller_name, "ferry.dev/gateway-controller");
        assert_eq!(parents[1].conditions[0].observed_generation, Some(3));

        // Written and read back: equal, so no second write.
        let back = RouteObject { current: parents.clone(), ..route };
        assert_eq!(route_parents(&back, "ferry.dev/gateway-controller", "T2"), parents);
    }

    const OURS: &str = "ferry.dev/gateway-controller";

    fn ancestor(name: &str, controller: &str, conditions: Vec<Condition>) -> gw::PolicyAncestorStatus {
        gw::PolicyAncestorStatus { ancestor_ref: parent(name), controller_name: controller.into(), conditions }
    }

    fn policy(current: Vec<gw::PolicyAncestorStatus>, ours: &[&str]) -> PolicyObject {
        PolicyObject {
            kind: "BackendTLSPolicy",
            namespace: "default".into(),
            name: "p".into(),
            resource_version: Some("9".into()),
            generation: Some(2),
            current,
            ours: ours
                .iter()
                .map(|g| AncestorReport {
                    ancestor_ref: parent(g),
                    conditions: vec![cond("Accepted", true, "Accepted"), cond("ResolvedRefs", true, "ResolvedRefs")],
                })
                .collect(),
        }
    }

    #[test]
    fn policy_ancestors_keep_other_controllers_and_drop_our_stale_entries() {
        let other = ancestor("theirs", "example.com/other", vec![]);
        let stale = ancestor("gone", OURS, vec![]);
        let p = policy(vec![other.clone(), stale], &["gw"]);
        let (ancestors, left_out) = policy_ancestors(&p, OURS, "T");
        assert_eq!(left_out, 0);
        assert_eq!(ancestors.len(), 2);
        assert_eq!(ancestors[0], other, "another controller's entry as stored");
        assert_eq!((ancestors[1].ancestor_ref.name.as_str(), ancestors[1].controller_name.as_str()), ("gw", OURS));
        let accepted = &ancestors[1].conditions[0];
        assert_eq!((accepted.type_.as_str(), accepted.status.as_str()), ("Accepted", "True"));
        assert_eq!((accepted.observed_generation, accepted.last_transition_time.as_str()), (Some(2), "T"));

        // Written and read back: equal, so no second write.
        let back = PolicyObject { current: ancestors.clone(), ..p.clone() };
        assert_eq!(policy_ancestors(&back, OURS, "T2").0, ancestors);

        // The CA bundle goes bad: Accepted flips (new time), ResolvedRefs too; theirs untouched.
        let mut bad = PolicyObject { current: ancestors.clone(), ..p.clone() };
        bad.ours[0].conditions = vec![
            cond("Accepted", false, "NoValidCACertificate"),
            cond("ResolvedRefs", false, "InvalidCACertificateRef"),
        ];
        let (flipped, _) = policy_ancestors(&bad, OURS, "T3");
        assert_eq!(flipped[0], other);
        assert_eq!(
            (flipped[1].conditions[0].reason.as_str(), flipped[1].conditions[0].last_transition_time.as_str()),
            ("NoValidCACertificate", "T3")
        );
    }

    #[test]
    fn a_policy_the_build_no_longer_reports_loses_our_entries() {
        let other = ancestor("theirs", "example.com/other", vec![]);
        let p = policy(vec![ancestor("gw", OURS, vec![]), other.clone()], &[]);
        assert_eq!(policy_ancestors(&p, OURS, "T").0, vec![other]);
        // Ours alone: the list is written empty (the API requires the field).
        let p = policy(vec![ancestor("gw", OURS, vec![])], &[]);
        let (ancestors, _) = policy_ancestors(&p, OURS, "T");
        assert!(ancestors.is_empty());
        assert_eq!(json!({ "status": { "ancestors": ancestors } }), json!({"status": {"ancestors": []}}));
    }

    #[test]
    fn policies_of_takes_reported_policies_and_those_with_stale_entries_of_ours() {
        use crate::build::gateway_api::PolicyReport;
        let mut snapshot = crate::Snapshot::default();
        let mut add = |name: &str, current: Vec<gw::PolicyAncestorStatus>| {
            let mut p = gw::BackendTLSPolicy::new(name, gw::BackendTLSPolicySpec::default());
            p.metadata.namespace = Some("default".into());
            p.metadata.resource_version = Some("5".into());
            p.metadata.generation = Some(1);
            p.status = Some(gw::PolicyStatus { ancestors: current });
            snapshot.insert(crate::snapshot::Object::BackendTLSPolicy(Arc::new(p)));
        };
        add("reported", vec![]);
        add("stale", vec![ancestor("gw", OURS, vec![])]);
        add("theirs-only", vec![ancestor("gw", "example.com/other", vec![])]);
        add("untouched", vec![]);
        let status = GatewayApiStatus {
            policies: vec![PolicyReport {
                kind: "BackendTLSPolicy",
                namespace: "default".into(),
                name: "reported".into(),
                generation: Some(1),
                ancestors: policy(vec![], &["gw"]).ours,
            }],
            ..GatewayApiStatus::default()
        };
        let got = GatewayApiInput::policies_of(&snapshot, &status, OURS);
        let names: Vec<&str> = got.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["reported", "stale"]);
        assert_eq!((got[0].ours.len(), got[0].resource_version.as_deref()), (1, Some("5")));
        assert!(got[1].ours.is_empty() && got[1].current.len() == 1);
    }

    #[test]
    fn a_full_ancestor_list_gets_no_new_entry_and_keeps_ours() {
        let others: Vec<_> =
            (0..MAX_ANCESTORS - 2).map(|i| ancestor(&format!("o{i}"), "example.com/other", vec![])).collect();
        // One of ours stored already ("b"); the build reports three: "a" (new), "b", "c" (new).
        let mut current = others.clone();
        current.push(ancestor("b", OURS, vec![]));
        let p = policy(current, &["a", "b", "c"]);
        let (ancestors, left_out) = policy_ancestors(&p, OURS, "T");
        assert_eq!((ancestors.len(), left_out), (MAX_ANCESTORS, 1));
        let ours: Vec<&str> =
            ancestors.iter().filter(|a| a.controller_name == OURS).map(|a| a.ancestor_ref.name.as_str()).collect();
        assert_eq!(ours, ["a", "b"], "the stored entry keeps its place; the first new one fills the room");
        assert_eq!(&ancestors[..others.len()], &others[..]);
    }

    #[test]
    fn a_gateway_without_an_address_is_not_programmed() {
        let report = GatewayReport {
            namespace: "default".into(),
            name: "gw".into(),
            generation: Some(1),
            conditions: vec![cond("Accepted", true, "Accepted"), cond("Programmed", true, "Programmed")],
            listeners: vec![],
        };
        let s = gateway_status(&report, &gw::GatewayStatus::default(), vec![], true, "T");
        let programmed = s.conditions.iter().find(|c| c.type_ == "Programmed").unwrap();
        assert_eq!((programmed.status.as_str(), programmed.reason.as_str()), ("False", "AddressNotAssigned"));
        let address = gw::GatewayStatusAddress { type_: Some("IPAddress".into()), value: "10.96.0.1".into() };
        let s = gateway_status(&report, &s, vec![address], true, "T2");
        let programmed = s.conditions.iter().find(|c| c.type_ == "Programmed").unwrap();
        assert_eq!((programmed.status.as_str(), programmed.last_transition_time.as_str()), ("True", "T2"));
    }

    #[test]
    fn times_are_ignored_when_remembering_writes() {
        let a = json!({"status": {"conditions": [{"type": "A", "lastTransitionTime": "T1"}]}});
        let b = json!({"status": {"conditions": [{"type": "A", "lastTransitionTime": "T2"}]}});
        assert_eq!(without_times(&a), without_times(&b));
    }
}
