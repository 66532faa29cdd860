//! The heap record a slot points to.
//!
//! An entry is written once, published with a `Release` store of its pointer, and never mutated
//! after that: replacing a value publishes a new entry and retires the old one. That is what lets
//! readers hold `&K`/`&V` without a lock for as long as their epoch guard lives.

/// One key-value pair, in a slot of its shard's slab (`slab.rs`), so readers can keep it alive past
/// its unlinking.
pub(crate) struct Entry<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
}

impl<K, V> Entry<K, V> {
    /// Heap bytes one entry costs, as the map's memory statistics count them.
    ///
    /// At least 1 even for a zero-sized `(K, V)`: the pending-bytes account is how
    /// `wait_for_reclamation` knows retired entries are still waiting, and a zero-sized key or value
    /// may still have a `Drop` whose effects a caller waits for.
    pub(crate) const BYTES: usize = if std::mem::size_of::<Self>() == 0 {
        1
    } else {
        std::mem::size_of::<Self>()
    };
}
