//! Which Secrets keep their data in Kubernetes mode, followed change by change.
//!
//! Every `kubernetes.io/tls` Secret of the watched namespaces reaches ferry, but only the ones
//! something of ours references are worth their data: our Ingresses' `spec.tls`,
//! `--default-tls-secret`, Gateway and ListenerSet listener certificates, BackendTLSPolicy CA
//! bundles. The others are kept as metadata alone. This tracker knows which are referenced
//! without walking every Ingress on every change: each Ingress's references are counted when it
//! changes, and the few Gateway API references are made again when one of those kinds changes.
//!
//! An unreferenced Secret keeps its data for [`STRIP_AFTER`] before it is stripped: its Ingress
//! often comes right after it (one `kubectl apply` of both, a chart's templates in order), and
//! stripping it at once meant fetching it again from the API server a moment later.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::networking::v1::Ingress;

use crate::snapshot::{Key, Snapshot};

/// How long an unreferenced Secret keeps its data.
pub const STRIP_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct SecretRefs {
    /// The Secrets each of our Ingresses references (only Ingresses that reference any).
    by_ingress: HashMap<Key, Vec<Key>>,
    /// How many of our Ingresses reference each Secret.
    count: HashMap<Key, usize>,
    /// Secrets referenced by `--default-tls-secret` and the Gateway API kinds.
    others: HashSet<Key>,
    /// Unreferenced Secrets that still hold data, since when.
    unreferenced_since: HashMap<Key, Instant>,
    /// Referenced Secrets whose data could not be fetched: tried again with the next pass.
    retry: BTreeSet<Key>,
}

impl SecretRefs {
    pub fn contains(&self, secret: &Key) -> bool {
        self.count.contains_key(secret) || self.others.contains(secret)
    }

    /// Sets the Secrets one Ingress references (none: it is gone or not ours). The Secrets that
    /// became referenced or stopped being so are added to `flipped`.
    pub fn set_ingress(&mut self, ingress: &Key, refs: Vec<Key>, flipped: &mut BTreeSet<Key>) {
        let old = match refs.is_empty() {
            true => self.by_ingress.remove(ingress),
            false => self.by_ingress.insert(ingress.clone(), refs.clone()),
        };
        for secret in old.unwrap_or_default() {
            let n = self.count.get_mut(&secret).expect("counted when added");
            *n -= 1;
            if *n == 0 {
                self.count.remove(&secret);
                flipped.insert(secret);
            }
        }
        for secret in refs {
            let n = self.count.entry(secret.clone()).or_default();
            *n += 1;
            if *n == 1 {
                flipped.insert(secret);
            }
        }
    }

    /// Counts every Ingress of `snapshot` that is in `ours` again (after a re-list, or an
    /// IngressClass change that may change which Ingresses are ours).
    pub fn reset_ingresses(&mut self, snapshot: &Snapshot, ours: &HashSet<Key>) {
        self.by_ingress.clear();
        self.count.clear();
        let mut ignored = BTreeSet::new();
        for (key, ing) in snapshot.ingresses.iter().filter(|(key, _)| ours.contains(*key)) {
            self.set_ingress(key, ingress_secrets(&key.0, ing), &mut ignored);
        }
    }

    /// Sets the Secrets referenced other than by Ingresses; those that flipped go to `flipped`.
    pub fn set_others(&mut self, others: HashSet<Key>, flipped: &mut BTreeSet<Key>) {
        let old = std::mem::replace(&mut self.others, others);
        let moved: Vec<Key> = old.symmetric_difference(&self.others).cloned().collect();
        flipped.extend(moved.into_iter().filter(|k| !self.count.contains_key(k)));
    }

    /// Notes whether `secret`, which holds data, is referenced; returns whether it is to be
    /// stripped now (unreferenced for [`STRIP_AFTER`]).
    pub fn strip_now(&mut self, secret: &Key, now: Instant) -> bool {
        if self.contains(secret) {
            self.unreferenced_since.remove(secret);
            return false;
        }
        let since = *self.unreferenced_since.entry(secret.clone()).or_insert(now);
        now.duration_since(since) >= STRIP_AFTER
    }

    /// Forgets `secret`'s wait or retry (it was stripped, fetched, deleted or referenced).
    pub fn settled(&mut self, secret: &Key) {
        self.unreferenced_since.remove(secret);
        self.retry.remove(secret);
    }

    /// Notes that fetching the data of referenced `secret` failed.
    pub fn fetch_failed(&mut self, secret: &Key) {
        self.retry.insert(secret.clone());
    }

    /// Secrets to look at again at `now`: those whose wait is over, and failed fetches.
    pub fn due(&self, now: Instant) -> BTreeSet<Key> {
        let over = |since: &Instant| now.duration_since(*since) >= STRIP_AFTER;
        let waited = self.unreferenced_since.iter().filter(|(_, since)| over(since)).map(|(k, _)| k.clone());
        waited.chain(self.retry.iter().cloned()).collect()
    }
}

/// The Secrets an Ingress in namespace `ns` names in `spec.tls`, each once.
pub fn ingress_secrets(ns: &str, ing: &Ingress) -> Vec<Key> {
    let mut out: Vec<Key> = ing
        .spec
        .iter()
        .flat_map(|s| s.tls.iter().flatten())
        .filter_map(|t| t.secret_name.clone().map(|n| (ns.to_string(), n)))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The Secrets `--default-tls-secret`, Gateway and ListenerSet listeners (whoever's class, in
/// any namespace: whether a ReferenceGrant allows it is the build's decision) and
/// BackendTLSPolicies (CA bundles in Secrets, always in the policy's namespace) reference.
pub fn other_secrets(snapshot: &Snapshot, default_secret: Option<Key>) -> HashSet<Key> {
    let mut out: HashSet<Key> = default_secret.into_iter().collect();
    let listeners =
        snapshot.gateways.iter().flat_map(|((ns, _), g)| g.spec.listeners.iter().map(move |l| (ns, l))).chain(
            snapshot.listener_sets.iter().flat_map(|((ns, _), s)| s.spec.listeners.iter().map(move |l| (ns, l))),
        );
    for (ns, l) in listeners {
        for r in l.tls.iter().flat_map(|t| t.certificate_refs.iter()) {
            let core = r.group.as_deref().unwrap_or("").is_empty() && r.kind.as_deref().unwrap_or("Secret") == "Secret";
            if core {
                out.insert((r.namespace.clone().unwrap_or_else(|| ns.clone()), r.name.clone()));
            }
        }
    }
    for ((ns, _), policy) in &snapshot.backend_tls_policies {
        for r in &policy.spec.validation.ca_certificate_refs {
            if r.group.is_empty() && r.kind == "Secret" {
                out.insert((ns.clone(), r.name.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> Key {
        (ns.into(), name.into())
    }

    #[test]
    fn references_are_counted_per_ingress() {
        let mut refs = SecretRefs::default();
        let mut flipped = BTreeSet::new();
        let (a, b) = (key("ns", "a"), key("ns", "b"));
        refs.set_ingress(&key("ns", "one"), vec![a.clone()], &mut flipped);
        refs.set_ingress(&key("ns", "two"), vec![a.clone(), b.clone()], &mut flipped);
        assert_eq!(flipped, BTreeSet::from([a.clone(), b.clone()]));
        assert!(refs.contains(&a) && refs.contains(&b));

        flipped.clear();
        refs.set_ingress(&key("ns", "two"), vec![], &mut flipped);
        assert_eq!(flipped, BTreeSet::from([b.clone()]), "`a` is still referenced by `one`");
        assert!(refs.contains(&a) && !refs.contains(&b));

        flipped.clear();
        refs.set_ingress(&key("ns", "one"), vec![b.clone()], &mut flipped);
        assert_eq!(flipped, BTreeSet::from([a.clone(), b.clone()]));
        assert!(!refs.contains(&a) && refs.contains(&b));

        flipped.clear();
        refs.set_others(HashSet::from([b.clone(), key("gw", "c")]), &mut flipped);
        assert_eq!(flipped, BTreeSet::from([key("gw", "c")]));
        refs.set_ingress(&key("ns", "one"), vec![], &mut flipped);
        assert!(refs.contains(&b), "still a Gateway's");
    }

    #[test]
    fn an_unreferenced_secret_is_stripped_after_its_wait() {
        let mut refs = SecretRefs::default();
        let t0 = Instant::now();
        let s = key("ns", "s");
        assert!(!refs.strip_now(&s, t0));
        assert!(!refs.strip_now(&s, t0 + STRIP_AFTER / 2), "the wait counts from the first look");
        assert!(refs.due(t0 + STRIP_AFTER / 2).is_empty());
        assert_eq!(refs.due(t0 + STRIP_AFTER), BTreeSet::from([s.clone()]));
        assert!(refs.strip_now(&s, t0 + STRIP_AFTER));

        // Referenced before the wait is over: kept, and the wait forgotten.
        refs.set_ingress(&key("ns", "ing"), vec![s.clone()], &mut BTreeSet::new());
        assert!(!refs.strip_now(&s, t0 + STRIP_AFTER));
        assert!(refs.due(t0 + 2 * STRIP_AFTER).is_empty());

        // A failed fetch is due at once, until it succeeds.
        refs.fetch_failed(&s);
        assert_eq!(refs.due(t0), BTreeSet::from([s.clone()]));
        refs.settled(&s);
        assert!(refs.due(t0 + 2 * STRIP_AFTER).is_empty());
    }
}
