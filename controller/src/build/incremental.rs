//! Incremental builds: a change recompiles only the Ingresses it touches, and the new table
//! shares everything else with the live one.
//!
//! A dependency index says, for every Ingress of ours, what it claims (hosts, certificate
//! hosts, the default backend) and what it reads (Services, Secrets), and which EndpointSlices
//! belong to which Service. A change makes Ingresses dirty: the changed ones, and the readers of
//! a changed Service, EndpointSlice or Secret. Every Ingress sharing a claim with a dirty one
//! (transitively) is compiled with it, in the order of a whole build, so first-claim-wins
//! conflicts, canaries and certificate owners come out as a whole build decides them; their
//! hosts, certificates and default backend then replace the live table's
//! ([`RouteTable::patched`]), and their diagnostics replace theirs.
//!
//! An EndpointSlice change recompiles nothing: the backends made for its Service (one per
//! Service port, shared by every route to it, kept from build to build while the Service is
//! unchanged) get the Service's new endpoints in place ([`gateway::Backend::set_endpoints`]).
//! No route, diagnostic or status depends on endpoints, so this is what a whole build would give.
//!
//! A whole build stays the oracle (the equivalence property test in `tests/incremental.rs`
//! compares every update with it) and is what a change takes when the index does not follow it:
//! IngressClasses, Gateway API kinds, L4Routes, ConfigMaps, Namespaces, a Service, EndpointSlice
//! or Secret while Gateway API or L4 routes are present (they may read it), the
//! `--default-tls-secret`, or a change touching half of the Ingresses or more.

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::hash::Hash;
use std::sync::Arc;

use gateway::FastMap as HashMap;
use gateway::{HostKey, L4Status, RouteTable, Runtime};
use k8s_openapi::api::networking::v1::Ingress;

use super::{build_ingresses, build_keeping, is_ours, service, BuildOptions, GatewayApiStatus};
use crate::diagnostic::{Diagnostic, Filed};
use crate::snapshot::{Changes, Key, Snapshot};

/// Builds tables from successive snapshots, recompiling only what changed.
pub struct Incremental {
    opts: BuildOptions,
    runtime: Arc<Runtime>,
    last: Option<Last>,
}

/// What one update produced: the table to serve and everything reported beside it.
pub struct Update {
    pub table: Arc<RouteTable>,
    /// Every diagnostic of the build (as a whole build gives them, filed by object).
    pub diagnostics: Filed,
    /// The Ingresses (as [`Filed::key`]s) whose diagnostics this update replaced; `None`: all
    /// of them may have changed (a whole build).
    pub replaced: Option<Vec<String>>,
    pub gateway_status: Arc<GatewayApiStatus>,
    pub l4_status: Arc<Vec<L4Status>>,
    pub outcome: Outcome,
}

/// How an update was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing that is compiled changed: the table is the last one.
    Unchanged,
    /// These Ingresses were recompiled; the rest of the table is shared with the last one.
    Partial { ingresses: usize },
    /// Only EndpointSlices changed: these backends got their new endpoints in place, and the
    /// table is the last one.
    Endpoints { backends: usize },
    /// A whole build, and why.
    Full(&'static str),
}

/// The last build and its index.
struct Last {
    table: Arc<RouteTable>,
    /// Diagnostics by Ingress, and of everything else (from the last whole build).
    diagnostics: Filed,
    gateway_status: Arc<GatewayApiStatus>,
    l4_status: Arc<Vec<L4Status>>,
    index: Index,
    /// The backends of the table, by Service port: reused while their Service and its
    /// EndpointSlices are unchanged, so every route to a Service port shares one backend (and
    /// its round-robin position) as in a whole build.
    backends: service::Backends,
}

/// Something only one Ingress can have, so Ingresses claiming the same one are compiled together.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Claim {
    /// A rule's host, lower-case (`""`: rules without a host).
    Host(Arc<str>),
    /// A `spec.tls` host's certificate, lower-case.
    Cert(Arc<str>),
    /// `spec.defaultBackend`.
    Default,
}

/// What an Ingress of ours claims and reads. The names are the index's own (shared with its
/// maps' keys): one copy of each, however many lists it is in.
#[derive(Debug, Default)]
struct Deps {
    claims: Vec<Claim>,
    services: Vec<Arc<Key>>,
    secrets: Vec<Arc<Key>>,
}

/// Who depends on what. Every name is held once, behind an `Arc` that the lists and maps
/// mentioning it share: at 10,000 Ingresses, copies of the same names in every map were a
/// kilobyte per Ingress.
#[derive(Default)]
struct Index {
    deps: HashMap<Arc<Key>, Deps>,
    claimed_by: HashMap<Claim, Users>,
    /// Services read by an Ingress or named by an EndpointSlice.
    services: HashMap<Arc<Key>, ServiceLinks>,
    secret_readers: HashMap<Arc<Key>, Users>,
    /// EndpointSlice → its Service (`kubernetes.io/service-name`).
    slice_service: HashMap<Arc<Key>, Arc<Key>>,
}

/// A Service's readers and EndpointSlices.
#[derive(Default)]
struct ServiceLinks {
    readers: Users,
    slices: Users,
}

/// Keys that share something: sorted, without duplicates. Usually one or two, so a vector (a
/// B-tree set would allocate a node of eleven for each).
type Users = Vec<Arc<Key>>;

/// Adds `key` to the sorted `users`.
fn link(users: &mut Users, key: &Arc<Key>) {
    if let Err(i) = users.binary_search(key) {
        if users.is_empty() {
            // Most have one user: room for four would be three pointers no one uses.
            users.reserve_exact(1);
        }
        users.insert(i, key.clone());
    }
}

/// Removes `key` from the sorted `users`.
fn unlink(users: &mut Users, key: &Key) {
    if let Ok(i) = users.binary_search_by(|u| (**u).cmp(key)) {
        users.remove(i);
    }
}

/// Removes `key` from the users of `at`, and `at` from `map` when none is left.
fn unlink_at<K: Hash + Eq + Borrow<Q>, Q: Hash + Eq + ?Sized>(map: &mut HashMap<K, Users>, at: &Q, key: &Key) {
    if let Some(users) = map.get_mut(at) {
        unlink(users, key);
        if users.is_empty() {
            map.remove(at);
        }
    }
}

/// The map's own `Arc` of `key` and its value, both made (the value by default) if it has none.
fn intern<'m, V: Default>(map: &'m mut HashMap<Arc<Key>, V>, key: &Key) -> (Arc<Key>, &'m mut V) {
    let shared = match map.get_key_value(key) {
        Some((k, _)) => k.clone(),
        None => Arc::new(key.clone()),
    };
    let value = map.entry(shared.clone()).or_default();
    (shared, value)
}

impl Deps {
    fn of(ing: &Ingress, ns: &str) -> (Deps, Vec<Key>, Vec<Key>) {
        let mut deps = Deps::default();
        let (mut services, mut secrets) = (Vec::new(), Vec::new());
        let Some(spec) = &ing.spec else { return (deps, services, secrets) };
        let key = |name: &str| (ns.to_string(), name.to_string());
        let mut rule_hosts: Vec<Arc<str>> = Vec::new();
        for rule in spec.rules.iter().flatten() {
            let host: Arc<str> = rule.host.as_deref().unwrap_or("").to_ascii_lowercase().into();
            if !host.is_empty() {
                rule_hosts.push(host.clone());
            }
            deps.claims.push(Claim::Host(host));
            for path in rule.http.iter().flat_map(|h| &h.paths) {
                services.extend(path.backend.service.as_ref().map(|s| key(&s.name)));
            }
        }
        if let Some(def) = &spec.default_backend {
            deps.claims.push(Claim::Default);
            services.extend(def.service.as_ref().map(|s| key(&s.name)));
        }
        for entry in spec.tls.iter().flatten() {
            match entry.hosts.as_deref() {
                None | Some([]) => deps.claims.extend(rule_hosts.iter().map(|h| Claim::Cert(h.clone()))),
                Some(hosts) => deps.claims.extend(hosts.iter().map(|h| Claim::Cert(h.to_ascii_lowercase().into()))),
            }
            secrets.extend(entry.secret_name.as_deref().map(key));
        }
        for list in [&mut services, &mut secrets] {
            list.sort();
            list.dedup();
        }
        deps.claims.sort();
        deps.claims.dedup();
        // Kept while the Ingress exists: mostly one of each, where a push leaves room for four.
        deps.claims.shrink_to_fit();
        (deps, services, secrets)
    }
}

impl Index {
    fn new(snapshot: &Snapshot, opts: &BuildOptions) -> Index {
        let mut index = Index::default();
        for (key, ing) in &snapshot.ingresses {
            index.add_ingress(key, ing, snapshot, opts);
        }
        for (key, slice) in &snapshot.endpoint_slices {
            index.add_slice(key, slice);
        }
        index
    }

    fn add_ingress(&mut self, key: &Key, ing: &Ingress, snapshot: &Snapshot, opts: &BuildOptions) {
        if !is_ours(ing, snapshot, opts) {
            return;
        }
        let (mut deps, services, secrets) = Deps::of(ing, &key.0);
        let name = Arc::new(key.clone());
        for claim in &mut deps.claims {
            // The map's copy of the name, if it has one.
            if let Some((shared, _)) = self.claimed_by.get_key_value(claim) {
                *claim = shared.clone();
            }
            link(self.claimed_by.entry(claim.clone()).or_default(), &name);
        }
        deps.services.reserve_exact(services.len());
        for service in &services {
            let (shared, links) = intern(&mut self.services, service);
            link(&mut links.readers, &name);
            deps.services.push(shared);
        }
        deps.secrets.reserve_exact(secrets.len());
        for secret in &secrets {
            let (shared, users) = intern(&mut self.secret_readers, secret);
            link(users, &name);
            deps.secrets.push(shared);
        }
        self.deps.insert(name, deps);
    }

    /// Forgets an Ingress; returns what it claimed.
    fn remove_ingress(&mut self, key: &Key) -> Vec<Claim> {
        let Some(deps) = self.deps.remove(key) else { return Vec::new() };
        for claim in &deps.claims {
            unlink_at(&mut self.claimed_by, claim, key);
        }
        for service in &deps.services {
            self.unlink_service(service, key, false);
        }
        for secret in &deps.secrets {
            unlink_at(&mut self.secret_readers, &**secret, key);
        }
        deps.claims
    }

    /// Removes `key` from a Service's readers (or its slices); forgets a Service nothing links.
    fn unlink_service(&mut self, service: &Key, key: &Key, slice: bool) {
        if let Some(links) = self.services.get_mut(service) {
            unlink(if slice { &mut links.slices } else { &mut links.readers }, key);
            if links.readers.is_empty() && links.slices.is_empty() {
                self.services.remove(service);
            }
        }
    }

    fn add_slice(&mut self, key: &Key, slice: &crate::snapshot::Slice) {
        if let Some(service) = &slice.service {
            let (service, links) = intern(&mut self.services, &(key.0.clone(), service.clone()));
            let name = Arc::new(key.clone());
            link(&mut links.slices, &name);
            self.slice_service.insert(name, service);
        }
    }

    /// Forgets an EndpointSlice; returns the Service it belonged to.
    fn remove_slice(&mut self, key: &Key) -> Option<Key> {
        let service = self.slice_service.remove(key)?;
        self.unlink_service(&service, key, true);
        Some(Key::clone(&service))
    }
}

/// Why a change needs a whole build, if it does.
fn needs_whole_build(changes: &Changes, snapshot: &Snapshot, opts: &BuildOptions) -> Option<&'static str> {
    if changes.is_everything() {
        return Some("the source could not tell what changed");
    }
    let mut reads = false;
    for object in changes.objects() {
        match object.kind.as_str() {
            "Ingress" => {}
            "Service" | "EndpointSlice" => reads = true,
            "Secret" => {
                reads = true;
                let default = opts.default_tls_secret.as_ref();
                if default.is_some_and(|(ns, name)| *ns == object.namespace && *name == object.name) {
                    return Some("the --default-tls-secret changed");
                }
            }
            "IngressClass" => return Some("an IngressClass changed"),
            _ => return Some("a Gateway API object, L4Route, ConfigMap or Namespace changed"),
        }
    }
    if reads && snapshot.has_other_routes() {
        return Some("a Service, EndpointSlice or Secret changed while Gateway API or L4 routes are present");
    }
    None
}

impl Incremental {
    pub fn new(opts: BuildOptions, runtime: Arc<Runtime>) -> Self {
        Incremental { opts, runtime, last: None }
    }

    pub fn options(&self) -> &BuildOptions {
        &self.opts
    }

    /// The table and diagnostics for `snapshot`, which differs from the last update's by
    /// `changes`: only what they touch is recompiled where the index follows them.
    pub fn update(&mut self, snapshot: &Snapshot, changes: &Changes) -> Update {
        let Some(last) = &mut self.last else { return self.full(snapshot, "first build") };
        if let Some(why) = needs_whole_build(changes, snapshot, &self.opts) {
            return self.full(snapshot, why);
        }
        let of_kind = |kind: &str| -> BTreeSet<Key> {
            let changed = changes.objects().iter().filter(|o| o.kind == kind);
            changed.map(|o| (o.namespace.clone(), o.name.clone())).collect()
        };
        let (ingresses, services, slices, secrets) =
            (of_kind("Ingress"), of_kind("Service"), of_kind("EndpointSlice"), of_kind("Secret"));

        // The index follows the change; what changed Ingresses claimed before is where their
        // routes are to be removed from.
        let index = &mut last.index;
        let mut seeds: BTreeSet<Claim> = BTreeSet::new();
        for key in &ingresses {
            seeds.extend(index.remove_ingress(key));
            if let Some(ing) = snapshot.ingresses.get(key) {
                index.add_ingress(key, ing, snapshot, &self.opts);
            }
        }
        let mut moved: BTreeSet<Key> = BTreeSet::new();
        for key in &slices {
            moved.extend(index.remove_slice(key));
            if let Some(slice) = snapshot.endpoint_slices.get(key) {
                index.add_slice(key, slice);
                moved.extend(index.slice_service.get(key).map(|k| Key::clone(k)));
            }
        }
        // Services whose EndpointSlices changed, but not themselves: their backends get the new
        // endpoints, and the routes that use them stay as they are.
        moved.retain(|s| !services.contains(s));
        let mut refreshed = 0;
        if !moved.is_empty() {
            let resolver = service::Resolver::scoped(
                snapshot,
                &moved,
                |service| index.services.get(service).map(|l| &l.slices),
                &last.backends,
                self.opts.allow_external_name,
                &self.runtime,
            );
            for service in &moved {
                for ((port, ..), (backend, _)) in last.backends.get(service).into_iter().flatten() {
                    refreshed += usize::from(resolver.refresh(&service.0, &service.1, port, backend));
                }
            }
        }
        let mut dirty: BTreeSet<Key> = ingresses;
        for service in &services {
            last.backends.remove(service);
            dirty.extend(index.services.get(service).into_iter().flat_map(|l| &l.readers).map(|k| Key::clone(k)));
        }
        for secret in &secrets {
            dirty.extend(index.secret_readers.get(secret).into_iter().flatten().map(|k| Key::clone(k)));
        }
        for key in &dirty {
            seeds.extend(index.deps.get(key).into_iter().flat_map(|d| d.claims.iter().cloned()));
        }

        // Everything sharing a claim with what changed is compiled together.
        let mut claims = BTreeSet::new();
        let mut compile: BTreeSet<&Key> = dirty.iter().filter(|k| index.deps.contains_key(*k)).collect();
        let mut queue: Vec<Claim> = seeds.into_iter().collect();
        while let Some(claim) = queue.pop() {
            if !claims.insert(claim.clone()) {
                continue;
            }
            for key in index.claimed_by.get(&claim).into_iter().flatten() {
                if compile.insert(&**key) {
                    queue.extend(index.deps[&**key].claims.iter().filter(|c| !claims.contains(*c)).cloned());
                }
            }
        }
        if compile.len() * 2 > index.deps.len().max(16) {
            return self.full(snapshot, "the change touches half of the Ingresses or more");
        }
        if claims.is_empty() && dirty.is_empty() {
            let outcome = match refreshed {
                0 => Outcome::Unchanged,
                backends => Outcome::Endpoints { backends },
            };
            return last.update(outcome, Some(Vec::new()));
        }

        let mut wanted: BTreeSet<&Key> = BTreeSet::new();
        let mut ours: Vec<&Ingress> = Vec::with_capacity(compile.len());
        for key in &compile {
            wanted.extend(index.deps[*key].services.iter().map(|k| &**k));
            ours.push(&snapshot.ingresses[*key]);
        }
        let resolver = service::Resolver::scoped(
            snapshot,
            wanted,
            |service| index.services.get(service).map(|l| &l.slices),
            &last.backends,
            self.opts.allow_external_name,
            &self.runtime,
        );
        let (part, diagnostics, resolver) = build_ingresses(snapshot, &self.opts, &self.runtime, ours, resolver);
        for (service, made) in resolver.into_backends() {
            let known = last.backends.entry(service).or_default();
            for (key, backend) in made {
                if !known.iter().any(|(k, _)| *k == key) {
                    known.push((key, backend));
                }
            }
        }
        let hosts: Vec<HostKey> = claims
            .iter()
            .filter_map(|c| match c {
                Claim::Host(h) => Some(HostKey::parse(h)),
                _ => None,
            })
            .collect();
        let certs = claims.iter().filter_map(|c| match c {
            Claim::Cert(h) => Some(&**h),
            _ => None,
        });
        let table = last.table.patched(&part, &hosts, certs, claims.contains(&Claim::Default));

        let recompiled = compile.len();
        let mut lists: HashMap<String, Vec<Diagnostic>> = HashMap::default();
        for key in compile.iter().copied().chain(&dirty) {
            lists.insert(Filed::key(&key.0, &key.1), Vec::new());
        }
        let others = Filed::group(diagnostics, &mut lists);
        debug_assert!(others.is_empty(), "a partial build compiles Ingresses only: {others:?}");
        let mut replaced = Vec::with_capacity(lists.len());
        for (key, list) in lists {
            last.diagnostics.set_ingress(&key, list);
            replaced.push(key);
        }
        last.table = Arc::new(table);
        last.update(Outcome::Partial { ingresses: recompiled }, Some(replaced))
    }

    /// A whole build of `snapshot`, and a new index.
    pub fn full(&mut self, snapshot: &Snapshot, why: &'static str) -> Update {
        let mut backends = service::Backends::default();
        let built = build_keeping(snapshot, &self.opts, &self.runtime, |r| backends = r.into_backends());
        let last = self.last.insert(Last {
            index: Index::new(snapshot, &self.opts),
            table: Arc::new(built.table),
            diagnostics: Filed::new(built.diagnostics),
            gateway_status: Arc::new(built.gateway_status),
            l4_status: Arc::new(built.l4_status),
            backends,
        });
        last.update(Outcome::Full(why), None)
    }
}

impl Last {
    fn update(&self, outcome: Outcome, replaced: Option<Vec<String>>) -> Update {
        Update {
            table: self.table.clone(),
            diagnostics: self.diagnostics.clone(),
            replaced,
            gateway_status: self.gateway_status.clone(),
            l4_status: self.l4_status.clone(),
            outcome,
        }
    }
}
