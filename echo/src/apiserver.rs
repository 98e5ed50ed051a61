//! A Kubernetes API server for tests, on 127.0.0.1: enough of the real wire protocol for the
//! kinds ferry uses that the real `ferry` binary (kube-rs) and `kubectl` talk to it unchanged.
//!
//! Covered: `/version`, legacy discovery (`/api`, `/apis`, group/version resource lists), list
//! (with `resourceVersion`, field and label selectors, pages by `limit` and `continue`), watch
//! streams (ADDED / MODIFIED / DELETED, BOOKMARK, `410 Gone` for compacted versions), get,
//! create, replace (resourceVersion conflicts), delete, merge / strategic-merge (treated as JSON
//! merge patch) and apply patches, the `status` subresource. Objects are JSON values in memory; every write bumps one global
//! resourceVersion, as etcd's revision does.
//!
//! Test controls: `stop`/`start` (the port stays; open watches are cut), `set_forbidden` (403, as
//! RBAC without a rule answers), `compact` (old
//! resourceVersions answer 410, open watches are cut), `writes` (who changed what).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

/// A kind the server knows: where it lives and what it is called.
struct Kind {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
}

/// (group, plural, singular, kind, namespaced, has a `status` subresource); every version is v1.
const KINDS: &[Kind] = &[
    kind("", "services", "service", "Service", true, true),
    kind("", "secrets", "secret", "Secret", true, false),
    kind("", "configmaps", "configmap", "ConfigMap", true, false),
    kind("", "events", "event", "Event", true, false),
    kind("", "namespaces", "namespace", "Namespace", false, true),
    kind("networking.k8s.io", "ingresses", "ingress", "Ingress", true, true),
    kind("networking.k8s.io", "ingressclasses", "ingressclass", "IngressClass", false, false),
    kind("discovery.k8s.io", "endpointslices", "endpointslice", "EndpointSlice", true, false),
    kind("coordination.k8s.io", "leases", "lease", "Lease", true, false),
    kind("apps", "deployments", "deployment", "Deployment", true, true),
    kind("events.k8s.io", "events", "event", "Event", true, false),
    Kind { version: "v1alpha1", ..kind("ferry.dev", "l4routes", "l4route", "L4Route", true, true) },
    // Gateway API: every version v1.6's CRDs serve (standard and experimental channels); one
    // stored object per name, read and written in any of them, as CRD versions are.
    kind(GW, "gatewayclasses", "gatewayclass", "GatewayClass", false, true),
    Kind { version: "v1beta1", ..kind(GW, "gatewayclasses", "gatewayclass", "GatewayClass", false, true) },
    kind(GW, "gateways", "gateway", "Gateway", true, true),
    Kind { version: "v1beta1", ..kind(GW, "gateways", "gateway", "Gateway", true, true) },
    kind(GW, "httproutes", "httproute", "HTTPRoute", true, true),
    Kind { version: "v1beta1", ..kind(GW, "httproutes", "httproute", "HTTPRoute", true, true) },
    kind(GW, "grpcroutes", "grpcroute", "GRPCRoute", true, true),
    Kind { version: "v1alpha2", ..kind(GW, "grpcroutes", "grpcroute", "GRPCRoute", true, true) },
    kind(GW, "tlsroutes", "tlsroute", "TLSRoute", true, true),
    Kind { version: "v1alpha3", ..kind(GW, "tlsroutes", "tlsroute", "TLSRoute", true, true) },
    Kind { version: "v1alpha2", ..kind(GW, "tlsroutes", "tlsroute", "TLSRoute", true, true) },
    kind(GW, "tcproutes", "tcproute", "TCPRoute", true, true),
    Kind { version: "v1alpha2", ..kind(GW, "tcproutes", "tcproute", "TCPRoute", true, true) },
    kind(GW, "udproutes", "udproute", "UDPRoute", true, true),
    Kind { version: "v1alpha2", ..kind(GW, "udproutes", "udproute", "UDPRoute", true, true) },
    kind(GW, "referencegrants", "referencegrant", "ReferenceGrant", true, false),
    Kind { version: "v1beta1", ..kind(GW, "referencegrants", "referencegrant", "ReferenceGrant", true, false) },
    kind(GW, "backendtlspolicies", "backendtlspolicy", "BackendTLSPolicy", true, true),
    Kind { version: "v1alpha3", ..kind(GW, "backendtlspolicies", "backendtlspolicy", "BackendTLSPolicy", true, true) },
    kind(GW, "listenersets", "listenerset", "ListenerSet", true, true),
];

const GW: &str = "gateway.networking.k8s.io";

const fn kind(
    group: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
) -> Kind {
    Kind { group, version: "v1", plural, singular, kind, namespaced, status }
}

impl Kind {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// One recorded write: method, kind plural and the version written in, namespace, name,
/// subresource, field manager.
#[derive(Debug, Clone)]
pub struct Write {
    pub method: String,
    pub plural: String,
    pub version: String,
    pub namespace: String,
    pub name: String,
    pub subresource: String,
    pub field_manager: String,
    pub user_agent: String,
}

#[derive(Clone)]
struct Event {
    rv: u64,
    plural: &'static str,
    group: &'static str,
    namespace: String,
    event_type: &'static str,
    object: Value,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    /// (group, plural, namespace, name) → object.
    objects: BTreeMap<(&'static str, &'static str, String, String), Value>,
    log: Vec<Event>,
    /// Watches from a resourceVersion below this answer 410 Gone.
    compacted: u64,
    writes: Vec<Write>,
    /// GETs of single objects: (plural, namespace, name, user agent).
    gets: Vec<(String, String, String, String)>,
    /// Kinds (plural) served as if their CRD were not installed, or single versions of them
    /// (`plural/version`) served as if the CRD lacked that version.
    missing: std::collections::BTreeSet<String>,
    /// Kinds (plural) the client may not read or write: every request for them answers 403, as
    /// the real server does when RBAC grants nothing on the resource.
    forbidden: std::collections::BTreeSet<String>,
    /// ClusterIPs handed out so far (10.96.0.x, as a cluster's Service CIDR would).
    cluster_ips: u32,
}

impl Inner {
    fn hidden(&self, k: &Kind) -> bool {
        self.missing.contains(k.plural) || self.missing.contains(&format!("{}/{}", k.plural, k.version))
    }
}

struct State {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
    /// Bumped to cut every open watch (stop, compact).
    cut: watch::Sender<u64>,
}

pub struct ApiServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    serving: Mutex<Option<tokio::task::JoinHandle<()>>>,
    dir: tempfile::TempDir,
}

impl ApiServer {
    pub async fn start_new() -> ApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind test API server");
        let addr = listener.local_addr().unwrap();
        let (events, _) = broadcast::channel(4096);
        let (cut, _) = watch::channel(0);
        let state = Arc::new(State { inner: Mutex::new(Inner { rv: 1, ..Inner::default() }), events, cut });
        let server = ApiServer { addr, state, serving: Mutex::new(None), dir: tempfile::tempdir().unwrap() };
        server.serve(listener);
        std::fs::write(server.kubeconfig(), server.kubeconfig_yaml()).unwrap();
        server
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let state = self.state.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                // As a real API server's sockets are (Go's default): without it, a watch event
                // written while an earlier one is unacknowledged waits for the client's delayed
                // ACK (tens of milliseconds).
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move {
                            // FERRY_TEST_API_TRACE=1 prints every request (for debugging tests).
                            let line = std::env::var_os("FERRY_TEST_API_TRACE")
                                .map(|_| format!("{} {}", req.method(), req.uri()));
                            let resp = handle(&state, req).await;
                            if let Some(line) = line {
                                eprintln!("test API server: {line} -> {}", resp.status());
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        });
        *self.serving.lock().unwrap() = Some(task);
    }

    /// Path of a kubeconfig pointing at this server.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://{}\n\
             users:\n- name: test\n  user:\n    token: test-token\ncontexts:\n- name: test\n  context:\n    \
             cluster: test\n    user: test\n    namespace: default\ncurrent-context: test\n",
            self.addr
        )
    }

    /// Stops answering: the listener closes and open connections (watches included) are cut.
    /// State is kept; `start` serves it again on the same port.
    pub fn stop(&self) {
        if let Some(task) = self.serving.lock().unwrap().take() {
            task.abort();
        }
        self.state.cut.send_modify(|n| *n += 1);
    }

    pub async fn start(&self) {
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("rebinding the test API server on {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// Forgets history: watches from any current resourceVersion get 410 Gone, and open watches
    /// are cut, so clients must re-list (as after an etcd compaction).
    /// Serves kind `plural` as if its CRD were not installed (`false`), or again (`true`).
    pub fn set_installed(&self, plural: &'static str, installed: bool) {
        let mut inner = self.state.inner.lock().unwrap();
        if installed {
            inner.missing.remove(plural);
        } else {
            inner.missing.insert(plural.to_string());
        }
    }

    /// Answers every request for kind `plural` with 403 Forbidden (`true`), as RBAC without a rule
    /// for it does, or serves it again (`false`). Discovery still lists the kind.
    pub fn set_forbidden(&self, plural: &str, forbidden: bool) {
        let mut inner = self.state.inner.lock().unwrap();
        if forbidden {
            inner.forbidden.insert(plural.to_string());
        } else {
            inner.forbidden.remove(plural);
        }
    }

    /// Serves one version of kind `plural` (`true`) or not (`false`), as a CRD lists its versions.
    pub fn set_version_installed(&self, plural: &str, version: &str, installed: bool) {
        let mut inner = self.state.inner.lock().unwrap();
        let key = format!("{plural}/{version}");
        if installed {
            inner.missing.remove(&key);
        } else {
            inner.missing.insert(key);
        }
    }

    /// Serves every kind of the Gateway API group (`true`) or none (`false`), as installing or
    /// removing the upstream CRDs does.
    pub fn set_gateway_api_installed(&self, installed: bool) {
        for k in KINDS.iter().filter(|k| k.group == GW) {
            self.set_installed(k.plural, installed);
        }
    }

    pub fn compact(&self) {
        {
            let mut inner = self.state.inner.lock().unwrap();
            inner.rv += 1;
            inner.compacted = inner.rv;
            inner.log.clear();
        }
        self.state.cut.send_modify(|n| *n += 1);
    }

    /// Writes objects (YAML documents separated by `---`) straight into the store, as another
    /// client would; works while the server is stopped.
    pub fn upsert(&self, yaml: &str) {
        for doc in yaml.split("\n---") {
            let v: Value = serde_yaml_ng::from_str(doc).expect("test YAML");
            if v.is_null() {
                continue;
            }
            let (api_version, kind) = (v["apiVersion"].as_str().unwrap_or(""), v["kind"].as_str().unwrap_or(""));
            let k = KINDS
                .iter()
                .find(|k| k.api_version() == api_version && k.kind == kind)
                .unwrap_or_else(|| panic!("test API server has no {api_version} {kind}"));
            let namespace = k.namespaced.then(|| v["metadata"]["namespace"].as_str().unwrap_or("default").to_string());
            let target = Target {
                kind: k,
                namespace,
                name: v["metadata"]["name"].as_str().map(str::to_string),
                subresource: None,
            };
            let body = Bytes::from(v.to_string());
            let resp =
                mutate(&self.state, &target, &Method::PATCH, "application/apply-patch+json", &body, &BTreeMap::new());
            assert!(resp.status().is_success(), "upsert {kind}: {}", resp.status());
        }
    }

    /// Runs `kubectl --kubeconfig <this server> ARGS` (with `stdin`, if given); returns whether
    /// it succeeded and its combined output.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        let kubeconfig = self.kubeconfig();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let stdin = stdin.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let mut child = std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(&args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("kubectl (install kubectl or Debian's kubernetes-client)");
            let mut input = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).unwrap();
            }
            drop(input);
            let out = child.wait_with_output().unwrap();
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            (out.status.success(), text)
        })
        .await
        .unwrap()
    }

    /// `kubectl apply --validate=false -f -` of `yaml`; panics with kubectl's output on failure.
    pub async fn apply(&self, yaml: &str) {
        let (ok, out) = self.kubectl(&["apply", "--validate=false", "-f", "-"], Some(yaml)).await;
        assert!(ok, "kubectl apply failed:\n{out}");
    }

    pub fn writes(&self) -> Vec<Write> {
        self.state.inner.lock().unwrap().writes.clone()
    }

    /// The objects of kind `plural` read one by one (GET by name) so far by clients whose
    /// user agent starts with `agent` (`kubectl apply` reads what it applies): (namespace, name).
    pub fn gets(&self, plural: &str, agent: &str) -> Vec<(String, String)> {
        let inner = self.state.inner.lock().unwrap();
        let of = |(p, _, _, a): &&(String, String, String, String)| p == plural && a.starts_with(agent);
        inner.gets.iter().filter(of).map(|(_, ns, n, _)| (ns.clone(), n.clone())).collect()
    }

    /// The stored object, if any.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let inner = self.state.inner.lock().unwrap();
        inner
            .objects
            .iter()
            .find(|((_, p, ns, n), _)| *p == plural && ns == namespace && n == name)
            .map(|(_, v)| v.clone())
    }

    /// All stored objects of a kind (by plural), in every namespace.
    pub fn list(&self, plural: &str) -> Vec<Value> {
        let inner = self.state.inner.lock().unwrap();
        inner.objects.iter().filter(|((_, p, _, _), _)| *p == plural).map(|(_, v)| v.clone()).collect()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn full(status: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed_unsync())
        .unwrap()
}

fn status_error(code: u16, reason: &str, message: &str) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap(),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

/// What a resource path names.
struct Target {
    kind: &'static Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Result<Target, Response<Body>>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    if rest.is_empty() {
        return None;
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let Some(kind) = KINDS.iter().find(|k| k.group == group && k.version == version && k.plural == rest[0]) else {
        return Some(Err(status_error(
            404,
            "NotFound",
            &format!("the server could not find the requested resource {path}"),
        )));
    };
    Some(Ok(Target {
        kind,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    }))
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=b,c!=d` field or label selectors (equality only), applied to a JSON object.
fn selected(obj: &Value, fields: Option<&String>, labels: Option<&String>) -> bool {
    let field = |path: &str| -> Option<String> {
        let mut v = obj;
        for part in path.split('.') {
            v = v.get(part)?;
        }
        v.as_str().map(str::to_string)
    };
    let clauses = |sel: Option<&String>| -> Vec<(String, bool, String)> {
        sel.map(|s| {
            s.split(',')
                .filter(|c| !c.is_empty())
                .filter_map(|c| {
                    if let Some((k, v)) = c.split_once("!=") {
                        Some((k.to_string(), false, v.to_string()))
                    } else {
                        let (k, v) = c.split_once("==").or_else(|| c.split_once('='))?;
                        Some((k.to_string(), true, v.to_string()))
                    }
                })
                .collect()
        })
        .unwrap_or_default()
    };
    clauses(fields).iter().all(|(k, eq, v)| (field(k).as_deref() == Some(v.as_str())) == *eq)
        && clauses(labels)
            .iter()
            .all(|(k, eq, v)| (obj["metadata"]["labels"].get(k).and_then(Value::as_str) == Some(v.as_str())) == *eq)
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/version" => {
            return full(
                StatusCode::OK,
                &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-ferry-test", "platform": "linux/amd64"}),
            )
        }
        "/api" => {
            return full(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            )
        }
        "/apis" => {
            let inner = state.inner.lock().unwrap();
            // Versions per group in the order KINDS lists them (the first is the preferred one).
            let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
            for k in KINDS.iter().filter(|k| !k.group.is_empty() && !inner.hidden(k)) {
                match groups.iter_mut().find(|(g, _)| *g == k.group) {
                    Some((_, versions)) if !versions.contains(&k.version) => versions.push(k.version),
                    Some(_) => {}
                    None => groups.push((k.group, vec![k.version])),
                }
            }
            drop(inner);
            let groups: Vec<Value> = groups
                .iter()
                .map(|(g, versions)| {
                    let gvs: Vec<Value> =
                        versions.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
                    json!({"name": g, "versions": gvs, "preferredVersion": gvs[0].clone()})
                })
                .collect();
            return full(StatusCode::OK, &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}));
        }
        _ => {}
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let group_version = match segs.as_slice() {
        ["api", v] => Some(("", *v)),
        ["apis", g, v] => Some((*g, *v)),
        _ => None,
    };
    if let Some((group, version)) = group_version {
        let mut resources = Vec::new();
        let inner = state.inner.lock().unwrap();
        let served: Vec<&Kind> =
            KINDS.iter().filter(|k| k.group == group && k.version == version && !inner.hidden(k)).collect();
        drop(inner);
        for k in served {
            resources.push(json!({"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
                "kind": k.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}));
            if k.status {
                resources.push(json!({"name": format!("{}/status", k.plural), "singularName": "",
                    "namespaced": k.namespaced, "kind": k.kind, "verbs": ["get", "patch", "update"]}));
            }
        }
        if resources.is_empty() {
            return status_error(404, "NotFound", "no such group version");
        }
        let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        return full(
            StatusCode::OK,
            &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
        );
    }
    let target = match parse_path(&path) {
        None => {
            return status_error(404, "NotFound", &format!("the server could not find the requested resource {path}"))
        }
        Some(Err(resp)) => return resp,
        Some(Ok(t)) => t,
    };
    if state.inner.lock().unwrap().hidden(target.kind) {
        return status_error(404, "NotFound", &format!("the server could not find the requested resource {path}"));
    }
    let q = query(&req);
    if state.inner.lock().unwrap().forbidden.contains(target.kind.plural) {
        let verb = match (req.method(), &target.name) {
            (&Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
            (&Method::GET, None) => "list",
            (&Method::GET, Some(_)) => "get",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::DELETE, _) => "delete",
            _ => "patch",
        };
        let scope = match &target.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        let (plural, group) = (target.kind.plural, target.kind.group);
        return status_error(
            403,
            "Forbidden",
            &format!(
                "{plural} is forbidden: User \"system:serviceaccount:default:ferry\" cannot {verb} resource \"{plural}\" in API group \"{group}\" {scope}"
            ),
        );
    }
    let method = req.method().clone();
    let user_agent = req.headers().get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();

    match (&method, &target.name) {
        (&Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch_stream(state, &target, &q)
        }
        (&Method::GET, None) => list(state, &target, &q),
        (&Method::GET, Some(name)) => {
            // Namespaces always exist here.
            if target.kind.plural == "namespaces" {
                return full(
                    StatusCode::OK,
                    &json!({"kind": "Namespace", "apiVersion": "v1",
                    "metadata": {"name": name, "resourceVersion": "1"}, "status": {"phase": "Active"}}),
                );
            }
            let mut inner = state.inner.lock().unwrap();
            let namespace = target.namespace.clone().unwrap_or_default();
            inner.gets.push((target.kind.plural.to_string(), namespace, name.to_string(), user_agent.clone()));
            match inner.objects.get(&key(&target, name)) {
                Some(obj) => full(StatusCode::OK, &as_version(obj.clone(), target.kind)),
                None => not_found(&target, name),
            }
        }
        _ => {
            let write = Write {
                method: method.to_string(),
                plural: target.kind.plural.to_string(),
                version: target.kind.version.to_string(),
                namespace: target.namespace.clone().unwrap_or_default(),
                name: target.name.clone().unwrap_or_default(),
                subresource: target.subresource.clone().unwrap_or_default(),
                field_manager: q.get("fieldManager").cloned().unwrap_or_default(),
                user_agent,
            };
            let resp = mutate(state, &target, &method, &content_type, &body, &q);
            if resp.status().is_success() {
                state.inner.lock().unwrap().writes.push(write);
            }
            resp
        }
    }
}

fn key(target: &Target, name: &str) -> (&'static str, &'static str, String, String) {
    (target.kind.group, target.kind.plural, target.namespace.clone().unwrap_or_default(), name.to_string())
}

fn not_found(target: &Target, name: &str) -> Response<Body> {
    let what = if target.kind.group.is_empty() {
        target.kind.plural.to_string()
    } else {
        format!("{}.{}", target.kind.plural, target.kind.group)
    };
    status_error(404, "NotFound", &format!("{what} \"{name}\" not found"))
}

/// A list, or with `limit` one page of it, as the real server pages lists (kube-rs's watchers
/// ask for 500 objects at a time, kubectl too): the `continue` token names the list's
/// resourceVersion and the last object given; the next page goes on after that object. Every
/// page carries the first page's resourceVersion, so a watch from it sees whatever changed while
/// the pages were read. A token older than the compacted history answers 410, as the real one's
/// does once etcd has compacted its revision.
fn list(state: &Arc<State>, target: &Target, q: &BTreeMap<String, String>) -> Response<Body> {
    use std::ops::Bound;
    let inner = state.inner.lock().unwrap();
    let limit = q.get("limit").and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0).unwrap_or(usize::MAX);
    let (rv, after) = match q.get("continue").filter(|t| !t.is_empty()) {
        None => (inner.rv, None),
        Some(token) => match parse_continue(token) {
            Some((rv, _)) if rv < inner.compacted => {
                return status_error(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter.",
                )
            }
            Some((rv, last)) => (rv, Some(last)),
            None => return status_error(400, "BadRequest", &format!("continue key is not valid: {token:?}")),
        },
    };
    let (group, plural) = (target.kind.group, target.kind.plural);
    let start = match after {
        Some((ns, name)) => Bound::Excluded((group, plural, ns, name)),
        None => Bound::Included((group, plural, String::new(), String::new())),
    };
    let mut page = inner
        .objects
        .range((start, Bound::Unbounded))
        .take_while(|((g, p, _, _), _)| *g == group && *p == plural)
        .filter(|((_, _, ns, _), obj)| {
            target.namespace.as_ref().is_none_or(|want| want == ns)
                && selected(obj, q.get("fieldSelector"), q.get("labelSelector"))
        });
    let mut items = Vec::new();
    let mut last = None;
    for ((_, _, ns, name), obj) in page.by_ref().take(limit) {
        items.push(as_version(obj.clone(), target.kind));
        last = Some((ns, name));
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let (Some(_), Some((ns, name))) = (page.next(), last) {
        metadata["continue"] = json!(format!("{rv}/{ns}/{name}"));
    }
    full(
        StatusCode::OK,
        &json!({"kind": format!("{}List", target.kind.kind), "apiVersion": target.kind.api_version(),
                "metadata": metadata, "items": items}),
    )
}

/// A `continue` token: `resourceVersion/namespace/name` of the last object of the page before
/// (names and namespaces cannot hold a `/`).
fn parse_continue(token: &str) -> Option<(u64, (String, String))> {
    let (rv, rest) = token.split_once('/')?;
    let (ns, name) = rest.split_once('/')?;
    Some((rv.parse().ok()?, (ns.to_string(), name.to_string())))
}

fn watch_stream(state: &Arc<State>, target: &Target, q: &BTreeMap<String, String>) -> Response<Body> {
    let from: u64 = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q.get("timeoutSeconds").and_then(|v| v.parse().ok()).map(Duration::from_secs);
    let fields = q.get("fieldSelector").cloned();
    let labels = q.get("labelSelector").cloned();
    let (group, plural, kind) = (target.kind.group, target.kind.plural, target.kind);
    let namespace = target.namespace.clone();

    let mut live = state.events.subscribe();
    let mut cut = state.cut.subscribe();
    cut.borrow_and_update();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let (backlog, gone, current) = {
        let inner = state.inner.lock().unwrap();
        let gone = from != 0 && from < inner.compacted;
        let backlog: Vec<Event> = inner.log.iter().filter(|e| e.rv > from).cloned().collect();
        (backlog, gone, inner.rv)
    };
    let matches = move |e: &Event| {
        e.group == group
            && e.plural == plural
            && namespace.as_ref().is_none_or(|ns| *ns == e.namespace)
            && selected(&e.object, fields.as_ref(), labels.as_ref())
    };
    let line = |v: Value| {
        let mut s = v.to_string();
        s.push('\n');
        Bytes::from(s)
    };
    tokio::spawn(async move {
        if gone {
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410});
            let _ = tx.send(line(json!({"type": "ERROR", "object": status}))).await;
            return;
        }
        let mut last = from;
        for e in backlog.iter().filter(|e| matches(e)) {
            last = e.rv;
            if tx.send(line(event_json(e, kind))).await.is_err() {
                return;
            }
        }
        let _ = current;
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let sleep_until = deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                e = live.recv() => match e {
                    Ok(e) if e.rv > last && matches(&e) => {
                        last = e.rv;
                        if tx.send(line(event_json(&e, kind))).await.is_err() { return; }
                    }
                    Ok(_) => {}
                    // Fell behind: end the watch; the client resumes from its last version.
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    let rv = last.max(from);
                    let obj = json!({"kind": kind.kind, "apiVersion": kind.api_version(),
                        "metadata": {"resourceVersion": rv.to_string()}});
                    if tx.send(line(json!({"type": "BOOKMARK", "object": obj}))).await.is_err() { return; }
                }
                _ = cut.changed() => return,
                _ = tokio::time::sleep_until(sleep_until) => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream.boxed())))
        .unwrap()
}

fn event_json(e: &Event, kind: &Kind) -> Value {
    json!({"type": e.event_type, "object": as_version(e.object.clone(), kind)})
}

/// The object as the version `kind` names serves it (stored objects keep the version they were
/// written in; the schemas of the versions agree on every field the tests use).
fn as_version(mut obj: Value, kind: &Kind) -> Value {
    obj["apiVersion"] = json!(kind.api_version());
    obj
}

fn mutate(
    state: &Arc<State>,
    target: &Target,
    method: &Method,
    content_type: &str,
    body: &Bytes,
    _q: &BTreeMap<String, String>,
) -> Response<Body> {
    let parsed: Result<Value, String> = if content_type.contains("yaml") {
        serde_yaml_ng::from_slice(body).map_err(|e| e.to_string())
    } else if body.is_empty() {
        Ok(Value::Null)
    } else {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    };
    let incoming = match parsed {
        Ok(v) => v,
        Err(e) => return status_error(400, "BadRequest", &format!("cannot decode body: {e}")),
    };
    let mut inner = state.inner.lock().unwrap();
    let name =
        target.name.clone().or_else(|| incoming["metadata"]["name"].as_str().map(str::to_string)).or_else(|| {
            let prefix = incoming["metadata"]["generateName"].as_str()?;
            Some(format!("{prefix}{:05x}", inner.rv + 1))
        });
    let Some(name) = name else {
        return status_error(422, "Invalid", "metadata.name: Required value");
    };
    let k = key(target, &name);
    let existing = inner.objects.get(&k).cloned();
    let status_only = target.subresource.as_deref() == Some("status");
    let old_spec = existing.as_ref().map(|o| (o["spec"].clone(), o["metadata"]["generation"].as_i64().unwrap_or(1)));

    let (mut obj, event_type, code) = match *method {
        Method::POST => {
            if existing.is_some() {
                return status_error(
                    409,
                    "AlreadyExists",
                    &format!("{} \"{name}\" already exists", target.kind.plural),
                );
            }
            let mut obj = incoming;
            obj["metadata"]["uid"] = json!(format!("uid-{}-{}", target.kind.plural, inner.rv + 1));
            obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            obj["metadata"]["generation"] = json!(1);
            (obj, "ADDED", StatusCode::CREATED)
        }
        Method::PUT => {
            let Some(old) = existing else { return not_found(target, &name) };
            let sent_rv = incoming["metadata"]["resourceVersion"].as_str().unwrap_or("");
            if !sent_rv.is_empty() && sent_rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("") {
                return status_error(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                              please apply your changes to the latest version and try again",
                        target.kind.plural
                    ),
                );
            }
            let obj = if status_only {
                let mut o = old.clone();
                o["status"] = incoming["status"].clone();
                o
            } else {
                let mut o = incoming;
                o["metadata"]["uid"] = old["metadata"]["uid"].clone();
                o["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
                if !old.get("status").is_none_or(Value::is_null) && o.get("status").is_none_or(Value::is_null) {
                    o["status"] = old["status"].clone();
                }
                o
            };
            (obj, "MODIFIED", StatusCode::OK)
        }
        Method::PATCH => {
            let apply = content_type.starts_with("application/apply-patch");
            let (mut obj, event_type, code) = match existing {
                Some(old) => (old, "MODIFIED", StatusCode::OK),
                None if apply && !status_only => {
                    let mut o = json!({"apiVersion": target.kind.api_version(), "kind": target.kind.kind,
                        "metadata": {"name": name}});
                    o["metadata"]["uid"] = json!(format!("uid-{}-{}", target.kind.plural, inner.rv + 1));
                    o["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                    (o, "ADDED", StatusCode::CREATED)
                }
                None => return not_found(target, &name),
            };
            let mut patch = incoming;
            if let Some(m) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
                m.remove("managedFields");
            }
            if status_only {
                let status = patch.get("status").cloned().unwrap_or(Value::Null);
                merge(&mut obj, &json!({ "status": status }));
            } else {
                merge(&mut obj, &patch);
            }
            (obj, event_type, code)
        }
        Method::DELETE => {
            let Some(old) = existing else { return not_found(target, &name) };
            inner.rv += 1;
            let rv = inner.rv;
            let mut obj = old;
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            inner.objects.remove(&k);
            record(state, &mut inner, target, rv, obj.clone(), "DELETED");
            return full(StatusCode::OK, &obj);
        }
        _ => return status_error(405, "MethodNotAllowed", "method not allowed"),
    };
    if target.kind.namespaced {
        obj["metadata"]["namespace"] = json!(target.namespace.clone().unwrap_or_else(|| "default".into()));
    }
    obj["metadata"]["name"] = json!(name);
    // As the real API server does: `stringData` is write-only, merged into base64 `data`.
    if target.kind.kind == "Secret" {
        if let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
            for (k, v) in string_data {
                obj["data"][k] = json!(base64(v.as_str().unwrap_or("").as_bytes()));
            }
        }
    }
    // As the real API server does: `metadata.generation` counts changes of the spec.
    if !status_only {
        let generation = match &old_spec {
            Some((spec, generation)) if *spec != obj["spec"] => generation + 1,
            Some((_, generation)) => *generation,
            None => 1,
        };
        obj["metadata"]["generation"] = json!(generation);
    }
    // As the real API server does: a Service gets a ClusterIP when it is created.
    if target.kind.kind == "Service"
        && event_type == "ADDED"
        && obj["spec"]["clusterIP"].is_null()
        && obj["spec"]["type"] != "ExternalName"
    {
        inner.cluster_ips += 1;
        let ip = format!("10.96.{}.{}", inner.cluster_ips / 250, 1 + inner.cluster_ips % 250);
        obj["spec"]["clusterIP"] = json!(ip);
        obj["spec"]["clusterIPs"] = json!([ip]);
    }
    obj["apiVersion"] = json!(target.kind.api_version());
    obj["kind"] = json!(target.kind.kind);
    inner.rv += 1;
    let rv = inner.rv;
    obj["metadata"]["resourceVersion"] = json!(rv.to_string());
    inner.objects.insert(k, obj.clone());
    record(state, &mut inner, target, rv, obj.clone(), event_type);
    full(code, &obj)
}

fn record(state: &Arc<State>, inner: &mut Inner, target: &Target, rv: u64, object: Value, event_type: &'static str) {
    let e = Event {
        rv,
        plural: target.kind.plural,
        group: target.kind.group,
        namespace: target.namespace.clone().unwrap_or_default(),
        event_type,
        object,
    };
    inner.log.push(e.clone());
    let _ = state.events.send(e);
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
