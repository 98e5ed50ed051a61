//! Kubernetes mode writes: leader election, Ingress status, Events.
//!
//! Every replica serves traffic; only the holder of a `coordination.k8s.io/v1` Lease writes.
//! The leader renews every `renew_period`; a replica takes over a Lease whose holder has not
//! renewed for `lease_duration`. A failed renewal (conflict, API error) stops writing at once, so
//! a leader that lost the Lease stops within one renew period.
//!
//! Status: each of our Ingresses gets `.status.loadBalancer.ingress` = the published addresses
//! (`--publish-address`, else the LoadBalancer ingress of `--publish-service`); an Ingress that
//! stops being ours and still carries exactly our addresses is cleared. Writes are merge patches
//! with field manager `ferry`, made only when the stored status differs, so our own status
//! writes (which come back as watch events) never cause another write.
//!
//! Events: an error diagnostic about an object becomes a Warning Event on that object, once per
//! distinct message (until the diagnostic goes away), at most `EVENTS_PER_PASS` per pass.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::crd::{Condition, L4Route};
use crate::diagnostic::{Diagnostic, Filed, Severity};
use gateway::sharded::ShardedMap;
use gateway::L4Status;

pub const FIELD_MANAGER: &str = "ferry";
const EVENTS_PER_PASS: usize = 20;

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (pod name, else host name plus process id).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_period: Duration,
}

/// Runs leader election forever; `leader` is `true` while this replica holds the Lease.
pub async fn elect(client: Client, opts: LeaseOptions, leader: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &opts.namespace);
    loop {
        let holds = match try_hold(&api, &opts).await {
            Ok(holds) => holds,
            Err(e) => {
                tracing::warn!(lease = %opts.name, error = %e, "lease renewal failed; not writing until it succeeds");
                false
            }
        };
        leader.send_if_modified(|was| {
            if *was != holds {
                tracing::info!(lease = %opts.name, identity = %opts.identity, leader = holds, "leadership changed");
                *was = holds;
                true
            } else {
                false
            }
        });
        tokio::time::sleep(opts.renew_period).await;
    }
}

/// One election round: create, renew or take over the Lease. `Ok(true)` while we hold it.
async fn try_hold(api: &Api<Lease>, opts: &LeaseOptions) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let duration_s = opts.lease_duration.as_secs().max(1) as i32;
    let Some(mut lease) = api.get_opt(&opts.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(opts.name.clone()), ..ObjectMeta::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(opts.identity.clone()),
                lease_duration_seconds: Some(duration_s),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let ours = spec.holder_identity.as_deref() == Some(opts.identity.as_str());
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(MicroTime(renewed)), Some(d)) => {
            let until = renewed.checked_add(jiff_seconds(d)).unwrap_or(*renewed);
            until < now
        }
        _ => true,
    };
    if !ours && !expired && spec.holder_identity.as_deref().is_some_and(|h| !h.is_empty()) {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(opts.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(duration_s);
    // `replace` carries the resourceVersion we read: a concurrent writer makes it fail (409).
    match api.replace(&opts.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
        Err(e) => Err(e),
    }
}

fn jiff_seconds(s: i32) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(i64::from(s))
}

/// What the status writer needs to know about one Ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressState {
    pub namespace: String,
    pub name: String,
    pub ours: bool,
    /// `.status.loadBalancer.ingress` as stored: IPs and hostnames.
    pub current: Vec<String>,
}

impl IngressState {
    pub fn of(ing: &Ingress, ours: bool) -> IngressState {
        let current = ing
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|list| list.iter().filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone())).collect())
            .unwrap_or_default();
        IngressState {
            namespace: ing.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            name: ing.metadata.name.clone().unwrap_or_default(),
            ours,
            current,
        }
    }
}

/// What the status writer needs to know about one L4Route: its stored conditions and the ones
/// the last build gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct L4State {
    pub namespace: String,
    pub name: String,
    pub current: Vec<Condition>,
    pub desired: Vec<Condition>,
}

impl L4State {
    /// Pairs every L4Route of `snapshot` with its build status.
    pub fn all(snapshot: &crate::Snapshot, status: &[L4Status]) -> Vec<L4State> {
        let by_name: BTreeMap<&str, &L4Status> = status.iter().map(|s| (s.route.as_str(), s)).collect();
        let mut out = Vec::new();
        for ((ns, name), route) in &snapshot.l4_routes {
            let Some(built) = by_name.get(format!("{ns}/{name}").as_str()) else { continue };
            let current = route.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
            let desired = desired_conditions(built, route.metadata.generation, &current, &Timestamp::now().to_string());
            out.push(L4State { namespace: ns.clone(), name: name.clone(), current, desired });
        }
        out
    }
}

/// `Accepted`, and for an accepted route `ResolvedRefs`, as the build decided. A condition keeps
/// its stored `lastTransitionTime` while its status does not change.
pub fn desired_conditions(
    built: &L4Status,
    generation: Option<i64>,
    current: &[Condition],
    now: &str,
) -> Vec<Condition> {
    let condition = |type_: &str, ok: bool, reason: &str, message: &str| {
        let status = if ok { "True" } else { "False" };
        let since = current
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: since,
            observed_generation: generation,
        }
    };
    if !built.accepted {
        return vec![condition("Accepted", false, &built.reason, &built.message)];
    }
    let accepted = format!("served on port {}", built.port);
    vec![
        condition("Accepted", true, "Accepted", &accepted),
        if built.resolved {
            condition("ResolvedRefs", true, "ResolvedRefs", "backend Service and port exist")
        } else {
            condition("ResolvedRefs", false, &built.reason, &built.message)
        },
    ]
}

/// How often the writer goes over its inputs again without a change (to retry failed writes).
const WRITE_RETRY: Duration = Duration::from_secs(10);

/// The writer's inputs, replaced as a whole after a build that changed them.
#[derive(Debug, Clone, Default)]
pub struct WriterInput {
    /// Each Ingress's state by `namespace/name`, changed Ingress by Ingress: a new input shares
    /// the shards of every Ingress that did not change (most builds, for endpoints, Services or
    /// Secrets, change none).
    pub ingresses: ShardedMap<IngressState>,
    /// Counts the changes of `ingresses`, so inputs compare without walking them.
    pub ingresses_generation: u64,
    pub l4_routes: Vec<L4State>,
    /// The build's diagnostics (shared with the publisher's), compared by generation.
    pub diagnostics: Filed,
    pub diagnostics_generation: u64,
}

impl WriterInput {
    /// Whether `self` says what `other` says (the Ingress states compared by generation).
    pub fn same_as(&self, other: &WriterInput) -> bool {
        self.ingresses_generation == other.ingresses_generation
            && self.l4_routes == other.l4_routes
            && self.diagnostics_generation == other.diagnostics_generation
    }
}

/// Writes Ingress status and Events while this replica leads. Runs forever.
pub async fn write(
    client: Client,
    mut input: watch::Receiver<WriterInput>,
    mut addresses: watch::Receiver<Vec<String>>,
    mut leader: watch::Receiver<bool>,
    status_enabled: bool,
) {
    // Events already posted: (object, message) → still relevant.
    let mut posted: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    loop {
        if *leader.borrow_and_update() {
            let snapshot = input.borrow_and_update().clone();
            let published = addresses.borrow_and_update().clone();
            if status_enabled {
                write_status(&client, snapshot.ingresses.values(), &published, &leader).await;
            }
            write_l4_status(&client, &snapshot.l4_routes, &leader).await;
            post_events(&client, snapshot.diagnostics.iter(), &mut posted, &leader).await;
        }
        tokio::select! {
            r = input.changed() => if r.is_err() { return },
            r = addresses.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
            // A write that failed is tried again even when nothing changes meanwhile.
            _ = tokio::time::sleep(WRITE_RETRY) => {}
        }
    }
}

/// The status an Ingress should carry, or `None` to leave it alone.
pub fn desired_status(ing: &IngressState, published: &[String]) -> Option<Vec<String>> {
    if ing.ours {
        (ing.current != published).then(|| published.to_vec())
    } else {
        // Not ours (any more): clear only what we wrote.
        (!ing.current.is_empty() && ing.current == published).then(Vec::new)
    }
}

async fn write_status(
    client: &Client,
    ingresses: impl Iterator<Item = &IngressState>,
    published: &[String],
    leader: &watch::Receiver<bool>,
) {
    for ing in ingresses {
        if !*leader.borrow() {
            return;
        }
        let Some(want) = desired_status(ing, published) else { continue };
        let entries: Vec<IngressLoadBalancerIngress> = want
            .iter()
            .map(|a| {
                if a.parse::<std::net::IpAddr>().is_ok() {
                    IngressLoadBalancerIngress { ip: Some(a.clone()), ..Default::default() }
                } else {
                    IngressLoadBalancerIngress { hostname: Some(a.clone()), ..Default::default() }
                }
            })
            .collect();
        let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": entries } } });
        let api: Api<Ingress> = Api::namespaced(client.clone(), &ing.namespace);
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        match api.patch_status(&ing.name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(ingress = %format!("{}/{}", ing.namespace, ing.name), addresses = ?want, "status written")
            }
            Err(e) => {
                tracing::warn!(ingress = %format!("{}/{}", ing.namespace, ing.name), error = %e, "status write failed")
            }
        }
    }
}

/// Writes L4Route conditions that differ from the stored ones (ignoring nothing but order).
async fn write_l4_status(client: &Client, routes: &[L4State], leader: &watch::Receiver<bool>) {
    for route in routes {
        if !*leader.borrow() {
            return;
        }
        if route.current == route.desired {
            continue;
        }
        let patch = serde_json::json!({ "status": { "conditions": route.desired } });
        let api: Api<L4Route> = Api::namespaced(client.clone(), &route.namespace);
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        let who = format!("{}/{}", route.namespace, route.name);
        match api.patch_status(&route.name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => tracing::info!(l4route = %who, "status written"),
            Err(e) => tracing::warn!(l4route = %who, error = %e, "status write failed"),
        }
    }
}

async fn post_events(
    client: &Client,
    diagnostics: impl Iterator<Item = &Diagnostic>,
    posted: &mut BTreeSet<(String, String, String, String)>,
    leader: &watch::Receiver<bool>,
) {
    let current: BTreeMap<(String, String, String, String), &Diagnostic> = diagnostics
        .filter(|d| d.severity == Severity::Error && d.object.kind != "File" && !d.object.name.is_empty())
        .map(|d| ((d.object.kind.clone(), d.object.namespace.clone(), d.object.name.clone(), message(d)), d))
        .collect();
    // Forget diagnostics that went away, so they are reported again if they come back.
    posted.retain(|k| current.contains_key(k));
    let mut sent = 0;
    for (key, d) in &current {
        if posted.contains(key) || !*leader.borrow() {
            continue;
        }
        if sent == EVENTS_PER_PASS {
            tracing::debug!("event budget for this pass spent; the rest follow on the next change");
            break;
        }
        let namespace = if d.object.namespace.is_empty() { "default" } else { d.object.namespace.as_str() };
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", d.object.name)),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some(api_version_of(&d.object.kind).into()),
                kind: Some(d.object.kind.clone()),
                name: Some(d.object.name.clone()),
                namespace: (!d.object.namespace.is_empty()).then(|| d.object.namespace.clone()),
                ..ObjectReference::default()
            },
            reason: Some("Skipped".into()),
            message: Some(key.3.clone()),
            type_: Some("Warning".into()),
            source: Some(EventSource { component: Some("ferry".into()), ..EventSource::default() }),
            reporting_component: Some("ferry".into()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(client.clone(), namespace);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                posted.insert(key.clone());
                sent += 1;
            }
            Err(e) => tracing::warn!(object = %d.object, error = %e, "cannot post Event"),
        }
    }
}

fn message(d: &Diagnostic) -> String {
    if d.field.is_empty() {
        d.reason.clone()
    } else {
        format!("{}: {}", d.field, d.reason)
    }
}

fn api_version_of(kind: &str) -> &'static str {
    match kind {
        "Ingress" | "IngressClass" => "networking.k8s.io/v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        "L4Route" => "ferry.dev/v1alpha1",
        "GatewayClass" | "Gateway" | "HTTPRoute" | "GRPCRoute" | "TLSRoute" | "TCPRoute" | "UDPRoute"
        | "ReferenceGrant" | "BackendTLSPolicy" | "ListenerSet" => "gateway.networking.k8s.io/v1",
        _ => "v1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ing(ours: bool, current: &[&str]) -> IngressState {
        IngressState {
            namespace: "default".into(),
            name: "i".into(),
            ours,
            current: current.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn l4_conditions_keep_their_transition_time() {
        let built = |accepted, resolved, reason: &str| L4Status {
            route: "a/r".into(),
            port: 5432,
            accepted,
            resolved,
            reason: reason.into(),
            message: "m".into(),
        };
        let first = desired_conditions(&built(true, true, "Accepted"), Some(1), &[], "T1");
        assert_eq!(
            first.iter().map(|c| (c.type_.as_str(), c.status.as_str())).collect::<Vec<_>>(),
            [("Accepted", "True"), ("ResolvedRefs", "True")]
        );
        let again = desired_conditions(&built(true, true, "Accepted"), Some(1), &first, "T2");
        assert_eq!(again, first, "unchanged: no write");
        let broken = desired_conditions(&built(true, false, "BackendNotFound"), Some(2), &first, "T3");
        assert_eq!(broken[0].last_transition_time, "T1");
        assert_eq!((broken[1].status.as_str(), broken[1].last_transition_time.as_str()), ("False", "T3"));
        let rejected = desired_conditions(&built(false, false, "PortConflict"), Some(3), &broken, "T4");
        assert_eq!(rejected.len(), 1);
        assert_eq!((rejected[0].reason.as_str(), rejected[0].last_transition_time.as_str()), ("PortConflict", "T4"));
    }

    #[test]
    fn status_is_written_only_when_it_differs() {
        let published = vec!["192.0.2.10".to_string()];
        assert_eq!(desired_status(&ing(true, &[]), &published), Some(published.clone()));
        assert_eq!(desired_status(&ing(true, &["192.0.2.10"]), &published), None, "no write loop");
        assert_eq!(desired_status(&ing(false, &["192.0.2.10"]), &published), Some(vec![]), "cleared when not ours");
        assert_eq!(desired_status(&ing(false, &["198.51.100.1"]), &published), None, "another controller's status");
        assert_eq!(desired_status(&ing(false, &[]), &published), None);
    }
}
