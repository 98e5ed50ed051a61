//! Names → values, kept in shards that successive versions of a map share.
//!
//! A routing table is immutable, and an update makes the next one from the last by replacing
//! the few hosts it touched (the controller's per-Ingress status inputs work the same way). With one hash map per table that copy was the whole map: at 50,000
//! hosts, cloning and later dropping it took most of an update (1.6 ms against 0.25 ms at
//! 10,000). Here the entries are split by hash into shards of at most [`SHARD_MAX`] (their count
//! doubles as the map grows), each behind an `Arc`: cloning the map copies one pointer per shard,
//! and changing an entry copies only its shard. A lookup hashes the name once; the shard is
//! chosen by bits of that hash the shard's own table does not use.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;

/// Entries per shard above which the number of shards doubles.
const SHARD_MAX: usize = 64;

/// Entries of one shard.
type Shard<V> = HashTable<(Arc<str>, V)>;

/// A map from names to `V` whose clone is shallow and whose changes copy one shard.
#[derive(Clone)]
pub struct ShardedMap<V> {
    /// Seeded per map, kept by its clones (which share its shards).
    hasher: foldhash::fast::RandomState,
    /// None (an empty map allocates nothing) or a power of two.
    shards: Vec<Arc<Shard<V>>>,
    len: usize,
}

impl<V> Default for ShardedMap<V> {
    fn default() -> Self {
        ShardedMap { hasher: Default::default(), shards: Vec::new(), len: 0 }
    }
}

impl<V> ShardedMap<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, name: &str) -> Option<&V> {
        self.get_key_value(name).map(|(_, v)| v)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The entry of `name`, with the key as stored (shared, so it can be copied cheaply).
    pub fn get_key_value(&self, name: &str) -> Option<(&Arc<str>, &V)> {
        if self.len == 0 {
            return None;
        }
        let hash = self.hasher.hash_one(name);
        let (k, v) = self.shards[shard_of(hash, self.shards.len())].find(hash, |(k, _)| **k == *name)?;
        Some((k, v))
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &V)> {
        self.shards.iter().flat_map(|s| s.iter().map(|(k, v)| (k, v)))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// How many shards this map shares with `other` (the same allocation), for tests and
    /// diagnostics of how much an update copied.
    pub fn shared_shards(&self, other: &ShardedMap<V>) -> usize {
        self.shards.iter().zip(&other.shards).filter(|(a, b)| Arc::ptr_eq(a, b)).count()
    }
}

impl<V: Clone> ShardedMap<V> {
    /// Sets `name` to `value`, returning the value it replaces.
    pub fn insert(&mut self, name: &str, value: V) -> Option<V> {
        self.insert_key(name.into(), value)
    }

    /// Like [`Self::insert`], with the key already shared (a host copied from another table).
    pub fn insert_key(&mut self, name: Arc<str>, value: V) -> Option<V> {
        if let Some(v) = self.get_mut(&name) {
            return Some(std::mem::replace(v, value));
        }
        self.add(name, value);
        None
    }

    /// The value of `name`, made with `make` if it has none.
    pub fn get_or_insert_with(&mut self, name: &str, make: impl FnOnce() -> V) -> &mut V {
        if !self.contains_key(name) {
            self.add(name.into(), make());
        }
        self.get_mut(name).expect("just added")
    }

    pub fn remove(&mut self, name: &str) -> Option<V> {
        if self.len == 0 {
            return None;
        }
        let hash = self.hasher.hash_one(name);
        let i = shard_of(hash, self.shards.len());
        // Only a shard that has the name is copied.
        self.shards[i].find(hash, |(k, _)| **k == *name)?;
        let shard = Arc::make_mut(&mut self.shards[i]);
        let ((_, v), _) = shard.find_entry(hash, |(k, _)| **k == *name).ok()?.remove();
        self.len -= 1;
        Some(v)
    }

    /// The value of `name`, for changing it: its shard is copied first if another map shares it.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        if self.len == 0 {
            return None;
        }
        let hash = self.hasher.hash_one(name);
        let i = shard_of(hash, self.shards.len());
        self.shards[i].find(hash, |(k, _)| **k == *name)?;
        let (_, v) = Arc::make_mut(&mut self.shards[i]).find_mut(hash, |(k, _)| **k == *name)?;
        Some(v)
    }

    /// Adds an entry the map does not have.
    fn add(&mut self, name: Arc<str>, value: V) {
        if self.len >= self.shards.len() * SHARD_MAX {
            self.grow();
        }
        let ShardedMap { hasher, shards, len } = self;
        let hash = hasher.hash_one(&*name);
        let i = shard_of(hash, shards.len());
        Arc::make_mut(&mut shards[i]).insert_unique(hash, (name, value), |(k, _)| hasher.hash_one(&**k));
        *len += 1;
    }

    /// Doubles the shards (or makes the first), moving every entry to its new shard.
    fn grow(&mut self) {
        let count = (self.shards.len() * 2).max(1);
        let each = self.len / count + 1;
        let mut shards: Vec<Shard<V>> = (0..count).map(|_| HashTable::with_capacity(each)).collect();
        let hasher = &self.hasher;
        for shard in std::mem::take(&mut self.shards) {
            let entries = Arc::try_unwrap(shard).unwrap_or_else(|shared| (*shared).clone());
            for entry in entries {
                let hash = hasher.hash_one(&*entry.0);
                shards[shard_of(hash, count)].insert_unique(hash, entry, |(k, _)| hasher.hash_one(&**k));
            }
        }
        self.shards = shards.into_iter().map(Arc::new).collect();
    }
}

/// The shard of a hash among `count` (a power of two). The shard's table places entries by the
/// hash's low bits and tags them with its top seven, so the shard is chosen by bits between.
fn shard_of(hash: u64, count: usize) -> usize {
    (hash >> 32) as usize & (count - 1)
}

impl<V: fmt::Debug> fmt::Debug for ShardedMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        /// A clone is taken and changed; the original must not see the change.
        Fork(u16, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u16..600, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => (0u16..600).prop_map(Op::Remove),
            1 => (0u16..600, any::<u32>()).prop_map(|(k, v)| Op::Fork(k, v)),
        ]
    }

    fn same(map: &ShardedMap<u32>, model: &HashMap<String, u32>) -> Result<(), TestCaseError> {
        prop_assert_eq!(map.len(), model.len());
        let mut entries: Vec<(String, u32)> = map.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        entries.sort();
        let mut want: Vec<(String, u32)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
        want.sort();
        prop_assert_eq!(entries, want);
        for (k, v) in model {
            prop_assert_eq!(map.get(k), Some(v));
        }
        Ok(())
    }

    proptest! {
        /// Inserts, removes and changes of clones give what a plain hash map gives, through the
        /// shards' growth, and a clone's change never shows in the map it was cloned from.
        #[test]
        fn behaves_as_a_hash_map(ops in proptest::collection::vec(op(), 0..1500)) {
            let (mut map, mut model) = (ShardedMap::default(), HashMap::new());
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let name = format!("h{k}.example");
                        prop_assert_eq!(map.insert(&name, v), model.insert(name, v));
                    }
                    Op::Remove(k) => {
                        let name = format!("h{k}.example");
                        prop_assert_eq!(map.remove(&name), model.remove(&name));
                        prop_assert_eq!(map.get(&name), None);
                    }
                    Op::Fork(k, v) => {
                        let mut fork = map.clone();
                        let name = format!("h{k}.example");
                        fork.insert(&name, v);
                        fork.remove("h0.example");
                        same(&map, &model)?;
                    }
                }
            }
            same(&map, &model)?;
        }
    }

    /// A change to a clone copies the one shard it touches; the others stay shared.
    #[test]
    fn a_change_copies_one_shard() {
        let mut map = ShardedMap::default();
        for i in 0..10_000 {
            map.insert(&format!("host{i}.example"), i);
        }
        let shards = map.shards.len();
        assert!(shards >= 10_000 / SHARD_MAX && map.iter().count() == 10_000, "{shards} shards");
        assert!(map.shards.iter().all(|s| s.len() <= 2 * SHARD_MAX), "shards stay small");

        let mut next = map.clone();
        assert_eq!(next.shared_shards(&map), shards);
        next.insert("host7.example", 70);
        assert_eq!(next.shared_shards(&map), shards - 1);
        next.remove("absent.example");
        next.get_mut("absent.example");
        assert_eq!(next.shared_shards(&map), shards - 1, "a miss copies nothing");
        next.insert("new.example", 1);
        next.remove("host8.example");
        assert!(next.shared_shards(&map) >= shards - 3);
        assert_eq!((map.get("host7.example"), next.get("host7.example")), (Some(&7), Some(&70)));
        assert_eq!((map.get("host8.example"), next.get("host8.example")), (Some(&8), None));
        assert_eq!((map.get("new.example"), next.get("new.example")), (None, Some(&1)));
    }

    #[test]
    fn an_empty_map_allocates_nothing() {
        let map: ShardedMap<u32> = ShardedMap::default();
        assert!(map.shards.is_empty() && map.get("a").is_none() && map.iter().next().is_none());
        let mut map = map;
        assert_eq!(map.remove("a"), None);
        *map.get_or_insert_with("a", || 1) += 1;
        assert_eq!(map.get("a"), Some(&2));
    }
}
