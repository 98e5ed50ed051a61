//! State that outlives routing tables: one object per key, shared by every table that uses it.
//!
//! Tables are immutable and rebuilt on every change, but some per-backend or per-endpoint state
//! (client affinity, rate-limit buckets, endpoint load and health) must survive the swap. A build
//! asks the registry for the object of its key and gets the live one when some table still holds
//! it; entries no table holds any more are forgotten as the registry grows.

use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

use FastMap as HashMap;

/// The hash map of the routing table and of every build: foldhash, seeded per process. Its keys
/// (hosts, paths, endpoints, Service names) are hashed on every request and for every object of
/// every build, where SipHash cost several times more; lookups with a client's key cannot add
/// entries, and the seed keeps collisions unpredictable.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug)]
pub(crate) struct Registry<K, T> {
    inner: Mutex<Entries<K, T>>,
}

#[derive(Debug)]
struct Entries<K, T> {
    map: HashMap<K, Weak<T>>,
    /// Size at which dead entries are next swept (doubles with the live count: amortised O(1)).
    sweep_at: usize,
}

const FIRST_SWEEP: usize = 64;

impl<K: Hash + Eq, T> Default for Registry<K, T> {
    fn default() -> Self {
        Registry { inner: Mutex::new(Entries { map: HashMap::default(), sweep_at: FIRST_SWEEP }) }
    }
}

impl<K: Hash + Eq, T> Registry<K, T> {
    /// The live object for `key`, or a new one from `make`.
    pub(crate) fn get_or_make(&self, key: K, make: impl FnOnce() -> T) -> Arc<T> {
        let mut entries = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = entries.map.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        if entries.map.len() >= entries.sweep_at {
            entries.map.retain(|_, w| w.strong_count() > 0);
            entries.sweep_at = (entries.map.len() * 2).max(FIRST_SWEEP);
        }
        let fresh = Arc::new(make());
        entries.map.insert(key, Arc::downgrade(&fresh));
        fresh
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_live_objects_and_forgets_dead_ones() {
        let reg: Registry<u32, String> = Registry::default();
        let a = reg.get_or_make(1, || "a".into());
        assert!(Arc::ptr_eq(&a, &reg.get_or_make(1, || "other".into())));
        drop(a);
        assert_eq!(*reg.get_or_make(1, || "fresh".into()), "fresh", "no table holds the old one");
        let held: Vec<Arc<String>> = (0..200).map(|i| reg.get_or_make(i, String::new)).collect();
        drop(held);
        for i in 1000..1200 {
            drop(reg.get_or_make(i, String::new));
        }
        assert!(reg.len() < 400, "dead entries are swept as the registry grows: {}", reg.len());
    }
}
