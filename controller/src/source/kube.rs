//! Kubernetes mode: watch the API server and keep the objects ferry reads.
//!
//! One kube-rs watcher (list, then watch; re-list with backoff after errors or `410 Gone`) per
//! kind and namespace. Each watcher owns one `Store`: its objects keyed by namespace and name.
//! A re-list fills a fresh buffer that replaces the store only when the list is complete, so a
//! watch reset never publishes an empty or partial table. Every change marks the source dirty;
//! after a short quiet period the stores are assembled into a `Snapshot` and published through
//! the same `Publisher` and pure `build()` as manifest mode.
//!
//! The gateway becomes ready once every watcher has completed its first list. After that, an
//! unreachable API server changes nothing in the data plane: the last table keeps serving, and
//! `ferry_source_connected` / `ferry_source_sync_age_seconds` say what is going on.
//!
//! Kinds from CRDs (`L4Route`, every Gateway API kind) are optional: ferry becomes ready without
//! them and picks them up once installed. A Gateway API kind is watched in the first version of
//! its list that the API server serves (discovery, repeated while none is and after the watch
//! answers 404), as [`DynamicObject`]s read into the one Rust type of the kind. Namespaces are
//! watched for their labels (listener `allowedRoutes` selectors), also optionally: RBAC that
//! cannot list them only loses those selectors. ConfigMaps are watched for the CA bundles
//! (`ca.crt`) of BackendTLSPolicies, keeping nothing else of them, and are optional too (see
//! [`ca_bundle_only`] and where the watch starts).
//!
//! Gateway API writes (per-Gateway Services, status) run beside the Ingress writer, on the same
//! leadership ([`crate::gateway_status`]); the Services of ferry's namespace that carry its label
//! are watched by every replica, which binds the container ports they name.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gateway::ListenerKey;

use crate::metrics::ControlMetrics;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;
use kube::core::ApiResource;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::build::is_ours;
use crate::crd::L4Route;
use crate::diagnostic::ObjectRef;
use crate::gateway_service::{self, OwnedServices, ServiceOptions};
use crate::gateway_status::{self, GatewayApiInput, Served, WriterOptions};
use crate::publish::Publisher;
use crate::snapshot::{Changes, Key, Object, Snapshot};
use crate::status::{self, IngressState, L4State, LeaseOptions, WriterInput};
use gateway::sharded::ShardedMap;

use super::secret_refs::{self, SecretRefs};

/// Field selector for the only Secrets ferry may read. CA bundles that a BackendTLSPolicy names in
/// a Secret (kind `Secret`, group "") are read from these too: such a Secret must be of type
/// `kubernetes.io/tls` and hold the bundle under `ca.crt` (as cert-manager's Secrets do); one of
/// another type is never sent to ferry, and the policy's reference does not resolve.
const TLS_SECRETS: &str = "type=kubernetes.io/tls";

/// The ConfigMap (and Secret) key of a BackendTLSPolicy's CA bundle.
const CA_BUNDLE_KEY: &str = "ca.crt";

/// What ferry keeps of a ConfigMap: its identity and `data["ca.crt"]`, the only key the build
/// reads (a BackendTLSPolicy's CA bundle). Every other key, `binaryData`, annotations (kubectl's
/// last-applied-configuration repeats the whole object), labels and managedFields are dropped as
/// the object arrives, so memory stays bounded in clusters with many large ConfigMaps. The
/// resourceVersion goes too: a write that changes nothing ferry keeps (another key, a leader
/// election annotation) then compares equal and causes no rebuild ([`apply`]).
fn ca_bundle_only(cm: ConfigMap) -> Object {
    let m = cm.metadata;
    let metadata = ObjectMeta { name: m.name, namespace: m.namespace, uid: m.uid, ..ObjectMeta::default() };
    let data =
        cm.data.and_then(|mut d| d.remove(CA_BUNDLE_KEY)).map(|ca| BTreeMap::from([(CA_BUNDLE_KEY.to_string(), ca)]));
    Object::ConfigMap(Arc::new(ConfigMap { metadata, data, ..ConfigMap::default() }))
}

/// kubectl's copy of the whole object as last applied, in an annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what the API server attaches to every object and ferry never reads, as the object
/// arrives: `managedFields` (often larger than the object) and kubectl's last-applied copy of it.
fn slim(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Retry delays after a failed list or watch: 0.8 s doubling to at most 5 s (with ±20% jitter), back
/// to the start after any success. kube-rs's default grows to 30 s and only forgets failures after
/// two quiet minutes, so after a short API server outage a watch could stay away for half a
/// minute; 5 s bounds how stale the table gets after the API server returns.
struct WatchBackoff {
    next: Duration,
    seed: u64,
}

const BACKOFF_MIN: Duration = Duration::from_millis(800);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Default for WatchBackoff {
    fn default() -> Self {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        WatchBackoff { next: BACKOFF_MIN, seed: seed | 1 }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // xorshift: jitter only needs to spread watchers apart, not to be unpredictable.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = 0.8 + (self.seed % 1000) as f64 / 2500.0;
        let delay = self.next.mul_f64(jitter);
        self.next = (self.next * 2).min(BACKOFF_MAX);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// What one watcher reports to the source loop.
#[derive(Debug)]
enum Update {
    /// A (re-)list started: objects until `ListDone` form the new complete set.
    ListStart,
    Listed(Object),
    ListDone,
    Applied(Object),
    Deleted(Object),
    /// The watch failed; it retries with backoff. The message is for the log.
    Failed(String),
}

/// The objects one watcher has seen.
#[derive(Default)]
struct Store {
    objects: HashMap<Key, Object>,
    /// Filled during a re-list; replaces `objects` when the list completes.
    relist: Option<HashMap<Key, Object>>,
    synced: bool,
    connected: bool,
    label: String,
    /// A kind from a CRD that may not be installed: readiness does not wait for it once a list
    /// has failed, and the gateway runs without its objects until it appears.
    optional: bool,
    failed: bool,
    /// What to check when an optional kind cannot be listed.
    hint: &'static str,
    /// Objects added, changed or removed since the last publish.
    changed: Vec<ObjectRef>,
    /// A list replaced the objects since the last publish.
    relisted: bool,
}

impl Store {
    /// Counts as listed for readiness.
    fn settled(&self) -> bool {
        self.synced || (self.optional && self.failed)
    }
}

/// What the stores changed since the last publish: the objects, or (after a re-list) anything.
enum Pending {
    Objects(Vec<ObjectRef>),
    Everything,
}

fn take_pending(stores: &mut [Store]) -> Pending {
    let mut objects = Vec::new();
    let mut everything = false;
    for store in stores.iter_mut() {
        everything |= std::mem::take(&mut store.relisted);
        objects.append(&mut store.changed);
    }
    if everything {
        Pending::Everything
    } else {
        Pending::Objects(objects)
    }
}

/// Makes `snapshot`'s object `r` what the stores hold (as [`assemble`] would), and records it.
fn settle(snapshot: &mut Snapshot, stores: &[Store], r: ObjectRef, changes: &mut Changes) {
    let key = (r.namespace.clone(), r.name.clone());
    match stores.iter().rev().find_map(|s| s.objects.get(&key).filter(|o| o.kind() == r.kind)) {
        Some(obj) => snapshot.insert(obj.clone()),
        None => {
            snapshot.remove(&r);
        }
    }
    changes.push(r);
}

fn key_of(obj: &Object) -> Key {
    let r = obj.object_ref();
    (r.namespace, r.name)
}

/// Starts one watcher for kind `K` (all namespaces when `namespace` is `None`), forwarding its
/// events as `Update`s tagged with `id`.
fn spawn_watcher<K>(
    api: Api<K>,
    config: watcher::Config,
    id: usize,
    tx: mpsc::Sender<(usize, Update)>,
    wrap: fn(K) -> Object,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let mut events = watcher(api, config).backoff(WatchBackoff::default()).boxed();
        let wrap = |mut o: K| {
            slim(o.meta_mut());
            wrap(o)
        };
        while let Some(event) = events.next().await {
            let update = match event {
                Ok(watcher::Event::Init) => Update::ListStart,
                Ok(watcher::Event::InitApply(o)) => Update::Listed(wrap(o)),
                Ok(watcher::Event::InitDone) => Update::ListDone,
                Ok(watcher::Event::Apply(o)) => Update::Applied(wrap(o)),
                Ok(watcher::Event::Delete(o)) => Update::Deleted(wrap(o)),
                Err(e) => Update::Failed(e.to_string()),
            };
            if tx.send((id, update)).await.is_err() {
                return;
            }
        }
    });
}

/// What Kubernetes mode watches and writes.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// `--watch-namespace`; empty = all namespaces.
    pub namespaces: Vec<String>,
    /// `--publish-service` (namespace, name): its LoadBalancer addresses go into Ingress status.
    pub publish_service: Option<(String, String)>,
    /// `--publish-address`: written into Ingress status as given (takes precedence).
    pub publish_addresses: Vec<String>,
    pub lease: LeaseOptions,
    /// Per-Gateway Services (Gateway API); `None`: none are made.
    pub gateway_services: Option<ServiceOptions>,
    /// Told, on every replica, the container port each Gateway listener port is to be served
    /// on, as the per-Gateway Services say.
    pub gateway_pins: Option<tokio::sync::watch::Sender<HashMap<ListenerKey, u16>>>,
}

/// A Gateway API kind: the versions ferry reads it in (preferred first) and how its objects
/// become [`Object`]s.
struct GatewayApiKind {
    kind: &'static str,
    plural: &'static str,
    versions: &'static [&'static str],
    namespaced: bool,
    wrap: fn(serde_json::Value) -> Result<Object, serde_json::Error>,
}

const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

const GATEWAY_API_KINDS: &[GatewayApiKind] = &[
    GatewayApiKind {
        kind: "GatewayClass",
        plural: "gatewayclasses",
        versions: &["v1", "v1beta1"],
        namespaced: false,
        wrap: |v| serde_json::from_value(v).map(|o| Object::GatewayClass(Arc::new(o))),
    },
    GatewayApiKind {
        kind: "Gateway",
        plural: "gateways",
        versions: &["v1", "v1beta1"],
        namespaced: true,
        wrap: |v| serde_json::from_value(v).map(|o| Object::Gateway(Arc::new(o))),
    },
    GatewayApiKind {
        kind: "HTTPRoute",
        plural: "httproutes",
        versions: &["v1", "v1beta1"],
        namespaced: true,
        wrap: |v| serde_json::from_value(v).map(|o| Object::HTTPRoute(Arc::new(o))),
    },
    GatewayApiKind {
        kind: "GRPCRoute",
        plural: "grpcroutes",
        versions: &["v1", "v1alpha2"],
        namespaced: true,
        wrap: |v| serde_json::from_value(v).map(|o| Object::GRPCRoute(Arc::new(o))),
    },
    GatewayApiKind {
        kind: "TLSRoute",
        plural: "tlsroutes",
        versions: &["v1", "v1alpha3", "v1alpha2"],
        namespaced: true,
        wrap: |v| serde_json::from_value(v).map(|o| Object::TLSRoute(Arc::new(o))),
    },
    GatewayApiKind {
        kind: "TCPRoute",
        plural: "tcproutes",
        versions: &["v1", "v1alpha2"],
        namespaced: true,
        wrap: |v| serde_json::from_value(v).map(|o| Object::TCPRoute(Arc::new(o))),
    },
    GatewayApiKind {
        kind: "UDPRoute",
        plural: "udproutes",
        versions: &["v1", "v1alpha2"],
        namespaced: true,
        wrap: |v| serde_json::from_value(v).map(|o| Object::UDPRoute(Arc::new(o))),
    },
    GatewayApiKind {
        kind: "ReferenceGrant",
        plural: "referencegrants",
        versions: &["v1", "v1beta1"],
        namespaced: true,
        wrap: |v| serde_json::from_value(v).map(|o| Object::ReferenceGrant(Arc::new(o))),
    },
    GatewayApiKind {
        kind: "BackendTLSPolicy",
        plural: "backendtlspolicies",
        versions: &["v1", "v1alpha3"],
        namespaced: true,
        wrap: |v| serde_json::from_value(v).map(|o| Object::BackendTLSPolicy(Arc::new(o))),
    },
    GatewayApiKind {
        kind: "ListenerSet",
        plural: "listenersets",
        versions: &["v1"],
        namespaced: true,
        wrap: |v| serde_json::from_value(v).map(|o| Object::ListenerSet(Arc::new(o))),
    },
];

/// The first version of `k` the API server serves, if any.
async fn discover(client: &Client, k: &GatewayApiKind) -> Result<Option<ApiResource>, String> {
    for version in k.versions {
        let group_version = format!("{GATEWAY_API_GROUP}/{version}");
        match client.list_api_group_resources(&group_version).await {
            Ok(list) if list.resources.iter().any(|r| r.name == k.plural) => {
                return Ok(Some(ApiResource {
                    group: GATEWAY_API_GROUP.into(),
                    version: version.to_string(),
                    api_version: group_version,
                    kind: k.kind.into(),
                    plural: k.plural.into(),
                }));
            }
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(None)
}

/// A served object as the kind's Rust type (every version is read as v1: the versions ferry
/// reads agree on every field it uses).
fn convert(k: &GatewayApiKind, mut obj: DynamicObject) -> Result<Object, String> {
    slim(&mut obj.metadata);
    let mut v = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    v["apiVersion"] = serde_json::Value::String(format!("{GATEWAY_API_GROUP}/v1"));
    v["kind"] = serde_json::Value::String(k.kind.into());
    (k.wrap)(v).map_err(|e| e.to_string())
}

/// Whether a watch failed because the resource is not served (CRD removed, version dropped).
fn not_served(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.is_not_found(),
        watcher::Error::WatchError(s) => s.is_not_found(),
        _ => false,
    }
}

/// Watches Gateway API kind `k` in the first version served, discovering it again whenever the
/// kind is not served (yet, or any more).
fn spawn_gateway_api_watcher(
    client: Client,
    k: &'static GatewayApiKind,
    scope: Option<String>,
    id: usize,
    tx: mpsc::Sender<(usize, Update)>,
    served: Served,
) {
    tokio::spawn(async move {
        let mut backoff = WatchBackoff::default();
        loop {
            let ar = match discover(&client, k).await {
                Ok(Some(ar)) => ar,
                Ok(None) => {
                    let why = format!("no version of {} ({}) is served", k.kind, k.versions.join(", "));
                    if tx.send((id, Update::Failed(why))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(backoff.next().unwrap_or(BACKOFF_MAX)).await;
                    continue;
                }
                Err(e) => {
                    if tx.send((id, Update::Failed(e))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(backoff.next().unwrap_or(BACKOFF_MAX)).await;
                    continue;
                }
            };
            kube::runtime::utils::Backoff::reset(&mut backoff);
            tracing::debug!(kind = k.kind, version = %ar.version, "watching a Gateway API kind");
            served.lock().unwrap_or_else(|e| e.into_inner()).insert(k.kind, ar.clone());
            let api: Api<DynamicObject> = match &scope {
                Some(ns) if k.namespaced => Api::namespaced_with(client.clone(), ns, &ar),
                _ => Api::all_with(client.clone(), &ar),
            };
            let mut events = watcher(api, watcher::Config::default()).backoff(WatchBackoff::default()).boxed();
            while let Some(event) = events.next().await {
                let object = |o: DynamicObject| {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    convert(k, o)
                        .map_err(|e| tracing::warn!(kind = k.kind, %name, error = %e, "cannot read object; skipped"))
                };
                let update = match event {
                    Ok(watcher::Event::Init) => Update::ListStart,
                    Ok(watcher::Event::InitApply(o)) => match object(o) {
                        Ok(o) => Update::Listed(o),
                        Err(()) => continue,
                    },
                    Ok(watcher::Event::InitDone) => Update::ListDone,
                    Ok(watcher::Event::Apply(o)) => match object(o) {
                        Ok(o) => Update::Applied(o),
                        Err(()) => continue,
                    },
                    Ok(watcher::Event::Delete(o)) => match object(o) {
                        Ok(o) => Update::Deleted(o),
                        Err(()) => continue,
                    },
                    Err(e) => {
                        let gone = not_served(&e);
                        if tx.send((id, Update::Failed(e.to_string()))).await.is_err() {
                            return;
                        }
                        if gone {
                            break;
                        }
                        continue;
                    }
                };
                if tx.send((id, update)).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(backoff.next().unwrap_or(BACKOFF_MAX)).await;
        }
    });
}

/// Watches the Services of ferry's namespace that carry its label: every replica binds the
/// container ports they name (`pins`), and the leader's writer reads them (`owned`).
fn watch_owned_services(
    client: Client,
    opts: &ServiceOptions,
    owned: tokio::sync::watch::Sender<OwnedServices>,
    pins: Option<tokio::sync::watch::Sender<HashMap<ListenerKey, u16>>>,
) {
    let api: Api<Service> = Api::namespaced(client, &opts.namespace);
    let config = watcher::Config::default().labels(&opts.label_selector());
    tokio::spawn(async move {
        let mut events = watcher(api, config).backoff(WatchBackoff::default()).boxed();
        let mut services: std::collections::BTreeMap<String, Arc<Service>> = Default::default();
        let mut relist: Option<std::collections::BTreeMap<String, Arc<Service>>> = None;
        let mut synced = false;
        while let Some(event) = events.next().await {
            let name = |s: &Service| s.metadata.name.clone().unwrap_or_default();
            match event {
                Ok(watcher::Event::Init) => relist = Some(Default::default()),
                Ok(watcher::Event::InitApply(s)) => {
                    relist.get_or_insert_with(Default::default).insert(name(&s), Arc::new(s));
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    services = relist.take().unwrap_or_default();
                    synced = true;
                }
                Ok(watcher::Event::Apply(s)) => {
                    services.insert(name(&s), Arc::new(s));
                }
                Ok(watcher::Event::Delete(s)) => {
                    services.remove(&name(&s));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "Gateway Service watch failed; retrying");
                    continue;
                }
            }
            if !synced {
                continue;
            }
            if let Some(pins) = &pins {
                let now = gateway_service::pins(&services);
                pins.send_if_modified(|old| {
                    let changed = *old != now;
                    *old = now;
                    changed
                });
            }
            owned.send_replace(OwnedServices { services: Arc::new(services.clone()), synced });
        }
    });
}

/// Kubernetes mode: watch, publish on change. Runs forever.
pub async fn run(client: Client, opts: KubeOptions, metrics: Arc<ControlMetrics>, mut publisher: Publisher) {
    // Bounded: a watcher waits while the loop is busy building, rather than queueing without limit.
    let (tx, mut rx) = mpsc::channel(1024);
    let mut stores: Vec<Store> = Vec::new();
    let scopes: Vec<Option<String>> =
        if opts.namespaces.is_empty() { vec![None] } else { opts.namespaces.iter().cloned().map(Some).collect() };

    let add = |stores: &mut Vec<Store>, label: String| {
        stores.push(Store { label, ..Store::default() });
        stores.len() - 1
    };
    // IngressClass is cluster-scoped: one watcher whatever the namespaces.
    let id = add(&mut stores, "IngressClass".into());
    spawn_watcher(Api::<IngressClass>::all(client.clone()), watcher::Config::default(), id, tx.clone(), |o| {
        Object::IngressClass(Arc::new(o))
    });
    for scope in &scopes {
        let ns = scope.as_deref().unwrap_or("*");
        macro_rules! watch {
            ($kind:ty, $variant:ident, $config:expr) => {
                watch!($kind, $variant, $config, |o| Object::$variant(Arc::new(o)))
            };
            // Kinds ferry keeps in its own types, made by `$wrap`.
            ($kind:ty, $variant:ident, $config:expr, $wrap:expr) => {{
                let api: Api<$kind> = match scope {
                    Some(ns) => Api::namespaced(client.clone(), ns),
                    None => Api::all(client.clone()),
                };
                let id = add(&mut stores, format!("{} in {ns}", stringify!($variant)));
                spawn_watcher(api, $config, id, tx.clone(), $wrap);
            }};
        }
        watch!(Ingress, Ingress, watcher::Config::default(), Object::ingress);
        watch!(Service, Service, watcher::Config::default(), Object::service);
        watch!(EndpointSlice, EndpointSlice, watcher::Config::default(), Object::endpoint_slice);
        watch!(Secret, Secret, watcher::Config::default().fields(TLS_SECRETS));
        watch!(L4Route, L4Route, watcher::Config::default());
        let l4 = stores.last_mut().expect("just added");
        (l4.optional, l4.hint) = (true, "is the L4Route CRD installed (kubectl apply -f crds/)?");
        // ConfigMaps, for BackendTLSPolicy CA bundles. Optional: a ClusterRole from before ferry
        // read them (chart or hand-written RBAC without `configmaps`) answers 403, and ferry must
        // still become ready and serve. It logs one warning naming the missing permission, serves
        // without ConfigMaps (a policy's ConfigMap reference then does not resolve, as for a
        // missing ConfigMap: its status says so), and keeps retrying, so granting the permission
        // later takes effect without a restart.
        let api: Api<ConfigMap> = match scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let id = add(&mut stores, format!("ConfigMap in {ns}"));
        (stores[id].optional, stores[id].hint) = (
            true,
            "may ferry list and watch configmaps (RBAC: get, list, watch on core configmaps)? \
             BackendTLSPolicy CA bundles in ConfigMaps do not resolve until it may",
        );
        spawn_watcher(api, watcher::Config::default(), id, tx.clone(), ca_bundle_only);
    }
    // Namespaces (cluster-scoped) for their labels; optional, see the module comment.
    let id = add(&mut stores, "Namespace".into());
    (stores[id].optional, stores[id].hint) = (true, "may ferry list namespaces (RBAC)?");
    spawn_watcher(Api::<Namespace>::all(client.clone()), watcher::Config::default(), id, tx.clone(), |o| {
        Object::Namespace(Arc::new(o))
    });
    // Gateway API: every kind optional; GatewayClass is cluster-scoped.
    let served: Served = Arc::default();
    let mut gateway_lists = Vec::new();
    for k in GATEWAY_API_KINDS {
        let kind_scopes: Vec<Option<String>> = if k.namespaced { scopes.clone() } else { vec![None] };
        for scope in kind_scopes {
            let label =
                format!("{} in {}", k.kind, scope.as_deref().unwrap_or(if k.namespaced { "*" } else { "cluster" }));
            let id = add(&mut stores, label);
            (stores[id].optional, stores[id].hint) =
                (true, "are the Gateway API CRDs installed (README: Gateway API)?");
            if k.kind == "Gateway" || k.kind == "GatewayClass" {
                gateway_lists.push(id);
            }
            spawn_gateway_api_watcher(client.clone(), k, scope, id, tx.clone(), served.clone());
        }
    }
    drop(tx);

    // Writers: leader election, then status and Events while leading.
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(status::elect(client.clone(), opts.lease.clone(), leader_tx));
    let (input_tx, input_rx) = tokio::sync::watch::channel(WriterInput::default());
    let status_enabled = opts.publish_service.is_some() || !opts.publish_addresses.is_empty();
    let (addr_tx, addr_rx) = tokio::sync::watch::channel(opts.publish_addresses.clone());
    if let (Some((ns, name)), true) = (&opts.publish_service, opts.publish_addresses.is_empty()) {
        watch_publish_service(Api::namespaced(client.clone(), ns), name, addr_tx);
    }
    tokio::spawn(status::write(client.clone(), input_rx, addr_rx, leader_rx.clone(), status_enabled));
    let (gw_input_tx, gw_input_rx) = tokio::sync::watch::channel(GatewayApiInput::default());
    let (owned_tx, owned_rx) = tokio::sync::watch::channel(OwnedServices::default());
    if let Some(services) = &opts.gateway_services {
        watch_owned_services(client.clone(), services, owned_tx, opts.gateway_pins.clone());
    }
    let writer = WriterOptions {
        controller_name: publisher.options().gateway_controller_name.clone(),
        services: opts.gateway_services.clone(),
    };
    tokio::spawn(gateway_status::run(client.clone(), gw_input_rx, owned_rx, leader_rx, served, writer));

    let mut last_sync = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut snapshot = Snapshot::default();
    let mut ours: HashSet<Key> = HashSet::new();
    let mut secrets = SecretRefs::default();
    // Secrets stripped by the periodic pass, to be published with the next build.
    let mut stripped: Vec<ObjectRef> = Vec::new();
    let mut ingress_states: ShardedMap<IngressState> = ShardedMap::default();
    let mut states_generation = 0u64;
    // Changes not yet published: they wait while a watcher has not settled (an optional kind
    // settles by failing, which changes no objects but completes the set).
    let mut dirty = false;
    loop {
        let first = tokio::select! {
            got = rx.recv() => Some(got),
            _ = tick.tick() => None,
        };
        if first.is_none() {
            // Unreferenced Secrets whose wait is over lose their data; failed fetches are retried.
            let due = secrets.due(Instant::now());
            if !due.is_empty() {
                stripped.extend(keep_referenced_secrets(&client, &mut stores, &mut secrets, Some(due)).await);
                dirty |= !stripped.is_empty();
            }
        }
        if let Some(got) = first {
            let Some((id, update)) = got else { return };
            // Coalesce a burst (a re-list, objects applied together) into one rebuild. An
            // endpoint change is whole in itself and the most frequent event of a rollout: it
            // ends the burst, and is served with whatever queued meanwhile (while a publish takes
            // longer than events take to come, the queue batches them).
            let ended = ends_burst(&update);
            let ends = |(_, update): &(usize, Update)| ends_burst(update);
            dirty |= apply(&mut stores[id], update);
            if !crate::coalesce(&mut rx, ended, ends, |(id, update)| dirty |= apply(&mut stores[id], update)).await {
                return;
            }
        }
        let connected = stores.iter().all(|s| s.connected || s.optional && !s.synced);
        if connected {
            last_sync = Instant::now();
        }
        metrics.source_connected.set(i64::from(connected));
        metrics.source_sync_age.set(last_sync.elapsed().as_secs_f64());
        let complete = stores.iter().all(Store::settled);
        if dirty && complete {
            dirty = false;
            // The snapshot follows the stores object by object; a re-list reassembles it.
            let mut changes = Changes::default();
            match take_pending(&mut stores) {
                Pending::Everything => {
                    snapshot = assemble(&stores);
                    changes = Changes::everything();
                }
                Pending::Objects(objects) => {
                    for r in objects {
                        settle(&mut snapshot, &stores, r, &mut changes);
                    }
                }
            }
            for r in stripped.drain(..) {
                settle(&mut snapshot, &stores, r, &mut changes);
            }
            // Which Ingresses are ours, for the Secret filter and the status writer: decided
            // again for the changed Ingresses only, unless an IngressClass (or anything) changed.
            let kinds: HashSet<&str> = changes.objects().iter().map(|r| r.kind.as_str()).collect();
            let whole = changes.is_everything() || kinds.contains("IngressClass");
            let changed_ingresses: Vec<Key> = changes
                .objects()
                .iter()
                .filter(|r| r.kind == "Ingress")
                .map(|r| (r.namespace.clone(), r.name.clone()))
                .collect();
            let ours_now =
                |key: &Key| snapshot.ingresses.get(key).is_some_and(|ing| is_ours(ing, &snapshot, publisher.options()));
            if whole {
                ours = snapshot.ingresses.keys().filter(|key| ours_now(key)).cloned().collect();
            } else {
                for key in &changed_ingresses {
                    match ours_now(key) {
                        true => ours.insert(key.clone()),
                        false => ours.remove(key),
                    };
                }
            }
            // Which Secrets keep their data: only the references that changed are looked at.
            let mut check = BTreeSet::new();
            if whole {
                secrets.reset_ingresses(&snapshot, &ours);
            } else {
                for key in &changed_ingresses {
                    let refs = match (ours.contains(key), snapshot.ingresses.get(key)) {
                        (true, Some(ing)) => secret_refs::ingress_secrets(&key.0, ing),
                        _ => Vec::new(),
                    };
                    secrets.set_ingress(key, refs, &mut check);
                }
            }
            if changes.is_everything()
                || ["Gateway", "ListenerSet", "BackendTLSPolicy"].iter().any(|k| kinds.contains(k))
            {
                let default_secret = publisher.options().default_tls_secret.clone();
                secrets.set_others(secret_refs::other_secrets(&snapshot, default_secret), &mut check);
            }
            check.extend(
                changes.objects().iter().filter(|r| r.kind == "Secret").map(|r| (r.namespace.clone(), r.name.clone())),
            );
            if whole || !check.is_empty() {
                let keys = (!whole).then_some(check);
                for r in keep_referenced_secrets(&client, &mut stores, &mut secrets, keys).await {
                    settle(&mut snapshot, &stores, r, &mut changes);
                }
            }
            publisher.publish(&snapshot, &changes, Vec::new(), |_| {}, true);
            // What the status writer is told, after the table is live. Work here delays the next
            // event (and shares the core with the proxy), so only the changed Ingresses' states
            // are made again, and an unchanged input is not sent.
            if whole {
                ingress_states = ShardedMap::default();
            }
            let states_of: Vec<&Key> = match whole {
                true => snapshot.ingresses.keys().collect(),
                false => changed_ingresses.iter().collect(),
            };
            for key in states_of {
                let name = crate::diagnostic::Filed::key(&key.0, &key.1);
                match snapshot.ingresses.get(key) {
                    Some(ing) => ingress_states.insert(&name, IngressState::of(ing, ours.contains(key))),
                    None => ingress_states.remove(&name),
                };
                states_generation += 1;
            }
            states_generation += u64::from(whole);
            let (diagnostics, diagnostics_generation) = publisher.build_diagnostics();
            let input = WriterInput {
                ingresses: ingress_states.clone(),
                ingresses_generation: states_generation,
                l4_routes: L4State::all(&snapshot, &publisher.l4_status()),
                diagnostics: diagnostics.clone(),
                diagnostics_generation,
            };
            input_tx.send_if_modified(|held| {
                !held.same_as(&input) && {
                    *held = input;
                    true
                }
            });
            let gateway_status = publisher.gateway_status();
            let controller = &publisher.options().gateway_controller_name;
            gw_input_tx.send_replace(GatewayApiInput {
                routes: GatewayApiInput::routes_of(&snapshot, &gateway_status, controller),
                policies: GatewayApiInput::policies_of(&snapshot, &gateway_status, controller),
                status: gateway_status,
                classes: snapshot.gateway_classes.clone(),
                gateways: snapshot.gateways.clone(),
                synced: gateway_lists.iter().all(|id| stores[*id].synced),
            });
        }
    }
}

/// Whether a watch event is whole in itself, so its burst need not wait for more: an endpoint
/// change.
fn ends_burst(update: &Update) -> bool {
    matches!(update, Update::Applied(Object::EndpointSlice(_)) | Update::Deleted(Object::EndpointSlice(_)))
}

fn assemble(stores: &[Store]) -> Snapshot {
    let mut snapshot = Snapshot::default();
    for store in stores {
        for obj in store.objects.values() {
            snapshot.insert(obj.clone());
        }
    }
    snapshot
}

/// Brings the Secrets of `keys` (every Secret when `None`) in line with `refs`: a referenced
/// Secret whose data was dropped is fetched again before the build, and one unreferenced for
/// [`secret_refs::STRIP_AFTER`] is kept as metadata alone. Returns the Secrets it replaced in the
/// stores.
async fn keep_referenced_secrets(
    client: &Client,
    stores: &mut [Store],
    refs: &mut SecretRefs,
    keys: Option<BTreeSet<Key>>,
) -> Vec<ObjectRef> {
    let now = Instant::now();
    let keys: Vec<Key> = match keys {
        Some(keys) => keys.into_iter().collect(),
        // A store holds one kind: a store whose first object is no Secret holds none.
        None => stores
            .iter()
            .flat_map(|s| s.objects.iter().take_while(|(_, o)| matches!(o, Object::Secret(_))).map(|(k, _)| k.clone()))
            .collect(),
    };
    let mut changed = Vec::new();
    for key in &keys {
        let found = stores.iter_mut().find_map(|s| s.objects.get_mut(key).filter(|o| matches!(o, Object::Secret(_))));
        let Some(obj) = found else {
            // A Secret that is gone waits for nothing.
            refs.settled(key);
            continue;
        };
        let Object::Secret(secret) = obj else { continue };
        let stripped = secret.data.is_none() && secret.string_data.is_none();
        let referenced = refs.contains(key);
        if stripped || referenced {
            refs.settled(key);
        }
        if !stripped && !referenced && refs.strip_now(key, now) {
            let mut meta_only =
                Secret { metadata: secret.metadata.clone(), type_: secret.type_.clone(), ..Secret::default() };
            meta_only.metadata.managed_fields = None;
            *obj = Object::Secret(Arc::new(meta_only));
            refs.settled(key);
            changed.push(obj.object_ref());
        } else if referenced && stripped {
            let api: Api<Secret> = Api::namespaced(client.clone(), &key.0);
            match tokio::time::timeout(Duration::from_secs(5), api.get(&key.1)).await {
                Ok(Ok(mut full)) => {
                    slim(&mut full.metadata);
                    *obj = Object::Secret(Arc::new(full));
                    changed.push(obj.object_ref());
                }
                Ok(Err(e)) => {
                    refs.fetch_failed(key);
                    tracing::warn!(secret = %format!("{}/{}", key.0, key.1), error = %e, "cannot fetch a newly referenced Secret; retrying")
                }
                Err(_) => {
                    refs.fetch_failed(key);
                    tracing::warn!(secret = %format!("{}/{}", key.0, key.1), "fetching a newly referenced Secret timed out; retrying")
                }
            }
        }
    }
    changed
}

/// Follows the LoadBalancer addresses of the `--publish-service` Service.
fn watch_publish_service(api: Api<Service>, name: &str, addresses: tokio::sync::watch::Sender<Vec<String>>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut events = watcher(api, config).backoff(WatchBackoff::default()).boxed();
        while let Some(event) = events.next().await {
            let svc = match event {
                Ok(watcher::Event::Apply(svc) | watcher::Event::InitApply(svc)) => Some(svc),
                Ok(watcher::Event::Delete(_)) => None,
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "publish-service watch failed; retrying");
                    continue;
                }
            };
            let list: Vec<String> = svc
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .map(|l| l.iter().filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone())).collect())
                .unwrap_or_default();
            addresses.send_if_modified(|old| {
                let changed = *old != list;
                *old = list;
                changed
            });
        }
    });
}

/// Whether `new` is what the store already holds. Only ConfigMaps are compared: they are kept
/// without their resourceVersion ([`ca_bundle_only`]), so most of their writes change nothing
/// ferry keeps; other kinds change with every event that reaches ferry.
fn unchanged(old: Option<&Object>, new: &Object) -> bool {
    matches!((old, new), (Some(Object::ConfigMap(a)), Object::ConfigMap(b)) if a == b)
}

/// Applies one update to its store; returns whether the published objects changed.
/// A watcher that delivers objects or a completed list is connected.
fn apply(store: &mut Store, update: Update) -> bool {
    // `ListStart` comes before the list request is made, so it says nothing about the server.
    if !matches!(update, Update::Failed(_) | Update::ListStart) {
        if !store.connected {
            tracing::info!(watch = %store.label, "watch connected");
        }
        store.connected = true;
    }
    match update {
        Update::ListStart => {
            store.relist = Some(HashMap::new());
            false
        }
        Update::Listed(obj) => {
            let key = key_of(&obj);
            match &mut store.relist {
                Some(buffer) => {
                    buffer.insert(key, obj);
                    false
                }
                None => {
                    store.changed.push(obj.object_ref());
                    store.objects.insert(key, obj);
                    true
                }
            }
        }
        Update::ListDone => {
            if let Some(buffer) = store.relist.take() {
                store.objects = buffer;
                store.relisted = true;
            }
            if !store.synced {
                tracing::info!(watch = %store.label, objects = store.objects.len(), "initial list complete");
            }
            store.synced = true;
            true
        }
        Update::Applied(obj) => {
            let key = key_of(&obj);
            if unchanged(store.objects.get(&key), &obj) {
                return false;
            }
            store.changed.push(obj.object_ref());
            store.objects.insert(key, obj);
            true
        }
        Update::Deleted(obj) => {
            let removed = store.objects.remove(&key_of(&obj)).is_some();
            if removed {
                store.changed.push(obj.object_ref());
            }
            removed
        }
        Update::Failed(e) => {
            if store.optional && !store.failed && !store.synced {
                tracing::warn!(
                    watch = %store.label,
                    error = %e,
                    hint = store.hint,
                    "cannot list; serving without these objects, retrying"
                );
            }
            store.failed = true;
            if store.connected {
                tracing::warn!(watch = %store.label, error = %e, "watch failed; serving the last table, retrying");
            } else {
                tracing::debug!(watch = %store.label, error = %e, "watch still failing");
            }
            store.connected = false;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str) -> Object {
        let mut s = Service::default();
        s.metadata.namespace = Some(ns.into());
        s.metadata.name = Some(name.into());
        Object::service(s)
    }

    #[test]
    fn relist_replaces_the_store_only_when_complete() {
        let mut store = Store::default();
        assert!(!apply(&mut store, Update::ListStart));
        assert!(!apply(&mut store, Update::Listed(svc("a", "one"))));
        assert!(!store.synced && store.objects.is_empty(), "nothing visible before the list completes");
        assert!(apply(&mut store, Update::ListDone));
        assert!(store.synced);
        assert_eq!(store.objects.len(), 1);

        // A watch reset: the re-list buffers; the old objects stay until it completes.
        assert!(!apply(&mut store, Update::Failed("410 Gone".into())));
        assert!(!store.connected);
        apply(&mut store, Update::ListStart);
        apply(&mut store, Update::Listed(svc("a", "two")));
        assert!(store.objects.contains_key(&("a".to_string(), "one".to_string())));
        apply(&mut store, Update::ListDone);
        assert_eq!(store.objects.keys().cloned().collect::<Vec<_>>(), vec![("a".to_string(), "two".to_string())]);
    }

    #[test]
    fn objects_arrive_without_managed_fields_or_the_last_applied_copy() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let mut meta = ObjectMeta {
            name: Some("web".into()),
            managed_fields: Some(vec![ManagedFieldsEntry { manager: Some("kubectl".into()), ..Default::default() }]),
            annotations: Some(BTreeMap::from([
                (LAST_APPLIED.to_string(), "{\"apiVersion\":\"v1\"}".to_string()),
                ("ferry.dev/load-balancer".to_string(), "ewma".to_string()),
            ])),
            resource_version: Some("7".into()),
            ..Default::default()
        };
        slim(&mut meta);
        assert_eq!(meta.managed_fields, None);
        assert_eq!(meta.annotations, Some(BTreeMap::from([("ferry.dev/load-balancer".into(), "ewma".into())])));
        assert_eq!((meta.name.as_deref(), meta.resource_version.as_deref()), (Some("web"), Some("7")));
        // Only the last-applied copy: no annotations left.
        let mut meta = ObjectMeta {
            annotations: Some(BTreeMap::from([(LAST_APPLIED.to_string(), "{}".to_string())])),
            ..Default::default()
        };
        slim(&mut meta);
        assert_eq!(meta.annotations, None);
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        use kube::runtime::utils::Backoff as _;
        let mut b = WatchBackoff::default();
        let delays: Vec<Duration> = (0..6).map(|_| b.next().unwrap()).collect();
        assert!(delays[0] >= BACKOFF_MIN.mul_f64(0.8) && delays[0] <= BACKOFF_MIN.mul_f64(1.2), "{delays:?}");
        assert!(delays[1] > delays[0].mul_f64(1.2), "grows: {delays:?}");
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX.mul_f64(1.2)), "capped: {delays:?}");
        b.reset();
        assert!(b.next().unwrap() <= BACKOFF_MIN.mul_f64(1.2));
    }

    fn config_map(data: &[(&str, &str)], resource_version: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.namespace = Some("a".into());
        cm.metadata.name = Some("ca".into());
        cm.metadata.resource_version = Some(resource_version.into());
        cm.metadata.annotations =
            Some(BTreeMap::from([("kubectl.kubernetes.io/last-applied-configuration".into(), "{...}".into())]));
        cm.data = Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        cm.binary_data = Some(BTreeMap::from([("blob".into(), k8s_openapi::ByteString(vec![0; 1024]))]));
        cm
    }

    #[test]
    fn config_maps_keep_only_the_ca_bundle() {
        let Object::ConfigMap(kept) = ca_bundle_only(config_map(&[("ca.crt", "PEM"), ("big", "x")], "1")) else {
            panic!("a ConfigMap")
        };
        assert_eq!(kept.data, Some(BTreeMap::from([("ca.crt".to_string(), "PEM".to_string())])));
        assert!(kept.binary_data.is_none());
        assert_eq!((kept.metadata.namespace.as_deref(), kept.metadata.name.as_deref()), (Some("a"), Some("ca")));
        assert!(kept.metadata.annotations.is_none() && kept.metadata.resource_version.is_none());
        let Object::ConfigMap(none) = ca_bundle_only(config_map(&[("other", "x")], "1")) else { panic!() };
        assert!(none.data.is_none(), "no ca.crt: nothing kept");
    }

    #[test]
    fn a_config_map_write_that_leaves_the_ca_bundle_alone_causes_no_rebuild() {
        let mut store = Store::default();
        assert!(apply(&mut store, Update::Applied(ca_bundle_only(config_map(&[("ca.crt", "A")], "1")))));
        assert!(!apply(&mut store, Update::Applied(ca_bundle_only(config_map(&[("ca.crt", "A"), ("x", "1")], "2")))));
        assert!(apply(&mut store, Update::Applied(ca_bundle_only(config_map(&[("ca.crt", "B")], "3")))));
        assert!(apply(&mut store, Update::Applied(svc("a", "one"))));
        assert!(apply(&mut store, Update::Applied(svc("a", "one"))), "other kinds are not compared");
    }

    #[test]
    fn applies_and_deletes() {
        let mut store = Store::default();
        assert!(apply(&mut store, Update::Applied(svc("a", "one"))));
        assert!(apply(&mut store, Update::Deleted(svc("a", "one"))));
        assert!(!apply(&mut store, Update::Deleted(svc("a", "one"))), "deleting twice changes nothing");
    }
}
