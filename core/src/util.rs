//! Small shared helpers: deterministic hash maps.

use foldhash::fast::FixedState;

/// Hash map with a hasher seeded from the node's RNG, never from the process:
/// the same seed gives the same layout and the same iteration order.
pub type Map<K, V> = hashbrown::HashMap<K, V, FixedState>;
/// Hash set counterpart of [`Map`].
pub type Set<K> = hashbrown::HashSet<K, FixedState>;

pub fn new_map<K, V>(seed: u64) -> Map<K, V> {
    Map::with_hasher(FixedState::with_seed(seed))
}

pub fn new_set<K>(seed: u64) -> Set<K> {
    Set::with_hasher(FixedState::with_seed(seed))
}
