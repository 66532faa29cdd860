//! Atomic read-modify-write: [`EpochMap::compute`](Map::compute), [`EpochMap::try_insert`](Map::try_insert) and
//! [`EpochMap::get_or_try_insert_with`](Map::get_or_try_insert_with).
//!
//! Each of them looks the key up and decides what to do while holding the key's shard writer lock
//! (the same `Shard::writer` handle every locked write uses), so the decision is atomic with respect
//! to every other writer of that shard: no other thread can insert, replace or remove the key
//! between the look-up and the write. Readers are never blocked; they see the old entry or the new
//! one, never anything in between.
//!
//! The caller's closures run under that lock. They must be short (other writers to the shard wait
//! for them) and must not write to the same map: that would wait for a lock the thread already
//! holds. The re-entrancy detector (`src/reentrancy.rs`) turns such a write into a panic with an
//! explanation instead of a silent deadlock. Reads (`get`, `get_cloned`, `with`, `iter`, ...) take no
//! lock and are allowed inside the closures. A closure may write to *another* map, but a closure
//! of map A writing to B on one thread and one of B writing to A on another can deadlock, and that
//! is not detected (see the crate docs, "Closures that run under a shard lock").

use std::borrow::Borrow;
use std::error::Error;
use std::fmt;
use std::hash::{BuildHasher, Hash};

use crate::entry::Entry;
use crate::key::{Borrowed, KeyArg, Owned};
use crate::layout::Layout;
use crate::refs::Ref;
use crate::sync::epoch;
use crate::Map;

/// What a [`EpochMap::compute`](Map::compute) closure decides to do with its key.
///
/// ```
/// use epochmap::{EpochMap, Operation};
///
/// let map = EpochMap::new();
/// // Count occurrences, removing a counter when it would drop to zero.
/// map.compute("word", |entry| match entry {
///     Some((_, n)) => Operation::Insert(n + 1),
///     None => Operation::Insert(1),
/// });
/// assert_eq!(map.get_cloned("word"), Some(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation<V> {
    /// Publish this value for the key: inserts it if the key was absent, replaces the current
    /// entry otherwise.
    Insert(V),
    /// Remove the key's entry. A no-op if the key was absent.
    Remove,
    /// Leave the map as it is.
    Abort,
}

/// What [`EpochMap::compute`](Map::compute) did, with the entries involved as [`Ref`]s.
///
/// Every `Ref` reads the entry it names even after a later write replaces or removes it.
///
/// ```
/// use epochmap::{Compute, EpochMap, Operation};
///
/// let map = EpochMap::new();
/// match map.compute(1, |_| Operation::Insert("a")) {
///     Compute::Inserted(new) => assert_eq!(*new, "a"),
///     other => panic!("unexpected {other:?}"),
/// }
/// match map.compute(1, |_| Operation::Insert("b")) {
///     Compute::Updated { old, new } => assert_eq!((*old, *new), ("a", "b")),
///     other => panic!("unexpected {other:?}"),
/// }
/// ```
#[derive(Debug)]
pub enum Compute<'a, K, V> {
    /// The key was absent and the closure's value was inserted.
    Inserted(Ref<'a, K, V>),
    /// The key was present and its entry was replaced.
    Updated {
        /// The entry that was replaced (retired; readable through this `Ref`).
        old: Ref<'a, K, V>,
        /// The entry now in the map.
        new: Ref<'a, K, V>,
    },
    /// The key was present and its entry was removed (retired; readable through this `Ref`).
    Removed(Ref<'a, K, V>),
    /// Nothing changed: the closure returned [`Operation::Abort`], or [`Operation::Remove`] for an
    /// absent key. Holds the key's current entry, if any.
    Unchanged(Option<Ref<'a, K, V>>),
}

impl<'a, K, V> Compute<'a, K, V> {
    /// The key's entry before the call, if it had one.
    ///
    /// ```
    /// use epochmap::{EpochMap, Operation};
    ///
    /// let map = EpochMap::new();
    /// map.insert("k", 1);
    /// let done = map.compute("k", |_| Operation::Remove);
    /// assert_eq!(done.previous().map(|r| **r), Some(1));
    /// ```
    pub fn previous(&self) -> Option<&Ref<'a, K, V>> {
        match self {
            Compute::Inserted(_) | Compute::Unchanged(None) => None,
            Compute::Updated { old, .. } => Some(old),
            Compute::Removed(old) | Compute::Unchanged(Some(old)) => Some(old),
        }
    }

    /// The key's entry after the call, if it has one.
    ///
    /// ```
    /// use epochmap::{EpochMap, Operation};
    ///
    /// let map = EpochMap::new();
    /// let done = map.compute("k", |_| Operation::Insert(7));
    /// assert_eq!(done.current().map(|r| **r), Some(7));
    /// ```
    pub fn current(&self) -> Option<&Ref<'a, K, V>> {
        match self {
            Compute::Removed(_) | Compute::Unchanged(None) => None,
            Compute::Updated { new, .. } => Some(new),
            Compute::Inserted(new) | Compute::Unchanged(Some(new)) => Some(new),
        }
    }
}

/// The error [`EpochMap::try_insert`](Map::try_insert) returns when the key is already present: the entry that is
/// there, and the value that was not inserted. Mirrors `std`'s unstable
/// `std::collections::hash_map::OccupiedError`.
///
/// Like that type it borrows the map, and its [`Ref`] owns an epoch guard, so it is not `Send`:
/// to return it through `Box<dyn Error + Send + Sync>` (or `anyhow`), map it to something owned
/// first, such as the rejected `value` or a message.
///
/// ```
/// let map = epochmap::EpochMap::new();
/// map.insert("k", 1);
/// let err = map.try_insert("k", 2).unwrap_err();
/// assert_eq!((*err.entry, err.value), (1, 2));
/// assert_eq!(
///     err.to_string(),
///     "failed to insert 2, key \"k\" already exists with value 1"
/// );
/// ```
pub struct OccupiedError<'a, K, V> {
    /// The entry already in the map for the key.
    pub entry: Ref<'a, K, V>,
    /// The value that was not inserted, handed back.
    pub value: V,
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for OccupiedError<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OccupiedError")
            .field("key", self.entry.key())
            .field("old_value", self.entry.value())
            .field("new_value", &self.value)
            .finish()
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Display for OccupiedError<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "failed to insert {:?}, key {:?} already exists with value {:?}",
            self.value,
            self.entry.key(),
            self.entry.value(),
        )
    }
}

impl<K: fmt::Debug, V: fmt::Debug> Error for OccupiedError<'_, K, V> {}

/// The entry already present and the value `try_insert` did not insert.
type Rejected<K, V> = (*const Entry<K, V>, V);

/// What happened under the lock, as raw pointers so the guard can move into the `Ref`s afterwards.
enum Done<K, V> {
    Inserted(*const Entry<K, V>),
    Updated(*const Entry<K, V>, *const Entry<K, V>),
    Removed(*const Entry<K, V>),
    Unchanged(Option<*const Entry<K, V>>),
}

impl<K, V, S, L: Layout<K, V>> Map<K, V, S, L>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher,
{
    /// Reads the key's entry and decides, atomically with respect to other writers, whether to
    /// insert, replace, remove or leave it; returns what happened.
    ///
    /// `f` receives the current key and value (`None` if absent) and returns an [`Operation`]. It
    /// runs exactly once, **under the key's shard writer lock**: no other writer can change the key
    /// between the look-up and the write, other writers to the same shard wait for `f`, and readers
    /// are never blocked. Keep `f` short, and do not write to this map from inside it: that panics
    /// (rather than deadlocking); reads are fine. If `f` panics, nothing changes and the lock is
    /// released.
    ///
    /// The key is consumed: it becomes the new entry's key on [`Operation::Insert`] (a replacing
    /// insert publishes a new entry, as [`insert`](Map::insert) does) and is dropped otherwise.
    ///
    /// ```
    /// use epochmap::{Compute, EpochMap, Operation};
    ///
    /// // A bounded counter: increment, but never past 3; remove it at zero.
    /// let map = EpochMap::new();
    /// let bump = |map: &EpochMap<&'static str, u32>| {
    ///     map.compute("n", |entry| match entry {
    ///         None => Operation::Insert(1),
    ///         Some((_, &n)) if n < 3 => Operation::Insert(n + 1),
    ///         Some(_) => Operation::Abort,
    ///     })
    ///     .current()
    ///     .map(|r| **r)
    /// };
    /// assert_eq!(bump(&map), Some(1));
    /// assert_eq!(bump(&map), Some(2));
    /// assert_eq!(bump(&map), Some(3));
    /// assert_eq!(bump(&map), Some(3)); // aborted: the value stays
    ///
    /// let done = map.compute("n", |_| Operation::Remove);
    /// assert!(matches!(done, Compute::Removed(ref old) if **old == 3));
    /// assert!(map.get("n").is_none());
    /// ```
    pub fn compute<F>(&self, key: K, f: F) -> Compute<'_, K, V>
    where
        F: FnOnce(Option<(&K, &V)>) -> Operation<V>,
    {
        self.compute_with(Owned(key), f)
    }

    /// [`compute`](Map::compute) with a borrowed key: the owned key is made (`Q::to_owned`,
    /// under the shard lock) only when `f` returns [`Operation::Insert`], because the new entry
    /// needs it; [`Operation::Remove`] and [`Operation::Abort`] allocate nothing. (A replacing
    /// insert allocates too: entries are immutable, so the new value goes in a new entry with a
    /// key of its own.)
    ///
    /// ```
    /// use epochmap::{EpochMap, Operation};
    ///
    /// let counts: EpochMap<String, u32> = EpochMap::new();
    /// for word in ["a", "b", "a"] {
    ///     counts.compute_ref(word, |entry| Operation::Insert(entry.map_or(1, |(_, n)| n + 1)));
    /// }
    /// assert_eq!(counts.get_cloned("a"), Some(2));
    /// // Reading through `compute_ref` without changing anything allocates no `String`.
    /// let seen = counts.compute_ref("b", |_| Operation::Abort);
    /// assert_eq!(seen.current().map(|r| **r), Some(1));
    /// ```
    pub fn compute_ref<Q, F>(&self, key: &Q, f: F) -> Compute<'_, K, V>
    where
        K: Borrow<Q>,
        Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
        F: FnOnce(Option<(&K, &V)>) -> Operation<V>,
    {
        self.compute_with(Borrowed(key), f)
    }

    fn compute_with<A, F>(&self, key: A, f: F) -> Compute<'_, K, V>
    where
        A: KeyArg<K>,
        K: Borrow<A::Q>,
        F: FnOnce(Option<(&K, &V)>) -> Operation<V>,
    {
        let guard = epoch::pin();
        // What `f` decided, held outside the block that holds the writer: making the owned key
        // (`Q::to_owned` for a borrowed key) is user code that may panic after `f` returned a new
        // value, and unwinding drops locals in reverse order, so a value held here is dropped
        // after the lock is released, never under it.
        let mut op: Option<Operation<V>>;
        let done = {
            let hash = self.hash(key.get());
            let ctx = self.ctx();
            let mut writer = self.shard(hash).writer(&ctx, &guard);
            let found = writer.find(hash, key.get());
            op = Some(f(found.map(|at| (&at.entry.key, &at.entry.value))));
            match (found, op.as_ref()) {
                (_, Some(Operation::Insert(_))) => {
                    let owned = key.into_owned();
                    let Some(Operation::Insert(value)) = op.take() else {
                        unreachable!("matched as an insert just above")
                    };
                    match found {
                        None => {
                            Done::Inserted(writer.insert(hash, owned, value, &|k| self.hash(k)))
                        }
                        Some(at) => Done::Updated(
                            at.entry,
                            writer.replace(at, owned, value, &|k| self.hash(k)),
                        ),
                    }
                }
                (Some(at), Some(Operation::Remove)) => {
                    writer.remove(hash, at, &|k| self.hash(k));
                    Done::Removed(at.entry)
                }
                (Some(at), _) => Done::Unchanged(Some(at.entry)),
                (None, _) => Done::Unchanged(None),
            }
            // The writer drops here: the lock is released before the `Ref`s are built.
        };
        // Each `Ref` gets its own guard: `guard` itself, or a nested pin taken while `guard` is
        // still pinned, which keeps this thread pinned without a gap from the look-up until that
        // `Ref` drops.
        // Every pointer `done` holds was found or published under `guard` while holding the shard
        // lock, and anything unlinked was retired after `guard` was pinned.
        let make = |guard: epoch::Guard, entry: *const Entry<K, V>| {
            // SAFETY: each `Ref` owns `guard` or a guard pinned while `guard` still was, so the
            // entry (protected since before `guard`'s retirements) outlives it.
            unsafe { Ref::new(guard, &*entry) }
        };
        match done {
            Done::Inserted(new) => Compute::Inserted(make(guard, new)),
            Done::Updated(old, new) => {
                let new = make(epoch::pin(), new);
                Compute::Updated {
                    old: make(guard, old),
                    new,
                }
            }
            Done::Removed(old) => Compute::Removed(make(guard, old)),
            Done::Unchanged(current) => Compute::Unchanged(current.map(|entry| make(guard, entry))),
        }
    }

    /// Inserts `key → value` only if the key is absent, returning the new entry; if the key is
    /// present, leaves the map unchanged and returns an [`OccupiedError`] holding the entry that is
    /// there and the rejected value.
    ///
    /// A present key is detected without taking the lock; an absent one is checked again under
    /// the shard lock, so of several threads racing to insert the same key exactly one succeeds.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// assert_eq!(*map.try_insert("k", 1).unwrap(), 1);
    ///
    /// let err = map.try_insert("k", 2).unwrap_err();
    /// assert_eq!(*err.entry, 1); // what is there
    /// assert_eq!(err.value, 2); // what was not inserted
    /// assert_eq!(*map.get("k").unwrap(), 1);
    /// ```
    pub fn try_insert(&self, key: K, value: V) -> Result<Ref<'_, K, V>, OccupiedError<'_, K, V>> {
        self.try_insert_with_key(Owned(key), value)
    }

    /// [`try_insert`](Map::try_insert) with a borrowed key: the owned key is made
    /// (`Q::to_owned`, under the shard lock) only if the key is absent and the value is inserted.
    /// A present key allocates nothing and hands `value` back in the [`OccupiedError`].
    ///
    /// ```
    /// let map: epochmap::EpochMap<String, u32> = epochmap::EpochMap::new();
    /// assert_eq!(*map.try_insert_ref("k", 1).unwrap(), 1); // allocates "k" to insert it
    /// let err = map.try_insert_ref("k", 2).unwrap_err(); // allocates nothing
    /// assert_eq!((*err.entry, err.value), (1, 2));
    /// ```
    pub fn try_insert_ref<Q>(
        &self,
        key: &Q,
        value: V,
    ) -> Result<Ref<'_, K, V>, OccupiedError<'_, K, V>>
    where
        K: Borrow<Q>,
        Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
    {
        self.try_insert_with_key(Borrowed(key), value)
    }

    fn try_insert_with_key<A>(
        &self,
        key: A,
        value: V,
    ) -> Result<Ref<'_, K, V>, OccupiedError<'_, K, V>>
    where
        A: KeyArg<K>,
        K: Borrow<A::Q>,
    {
        let guard = epoch::pin();
        let hash = self.hash(key.get());
        let shard = self.shard(hash);
        // Ok(the inserted entry) or Err((the entry already there, the rejected value)).
        let outcome: Result<*const Entry<K, V>, Rejected<K, V>> =
            match shard.find(hash, key.get(), &guard) {
                Some(existing) => Err((existing, value)),
                None => {
                    let ctx = self.ctx();
                    let mut writer = shard.writer(&ctx, &guard);
                    match writer.find(hash, key.get()) {
                        Some(at) => Err((at.entry, value)),
                        None => Ok(writer.insert(hash, key.into_owned(), value, &|k| self.hash(k))),
                    }
                }
            };
        match outcome {
            // SAFETY: published under `guard`, which the `Ref` takes over.
            Ok(new) => Ok(unsafe { Ref::new(guard, &*new) }),
            Err((existing, value)) => Err(OccupiedError {
                // SAFETY: found under `guard`, which the `Ref` takes over.
                entry: unsafe { Ref::new(guard, &*existing) },
                value,
            }),
        }
    }

    /// The entry for `key`, inserting the value `make()` returns if the key is absent; if `make`
    /// fails, nothing is inserted and its error is returned.
    ///
    /// As with [`get_or_insert_with`](Map::get_or_insert_with): a present key is found
    /// without a lock; otherwise `make` runs at most once, **under the shard lock**, and only in
    /// the call that inserts, so under contention for one key exactly one value is computed and
    /// every caller gets that value. `make` must not write to this map (that panics rather than
    /// deadlocks). A failed `make` leaves the key absent, so the next caller tries again.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// let parse = |s: &'static str| map.get_or_try_insert_with(s, || s.parse::<u32>());
    ///
    /// assert!(parse("x").is_err());
    /// assert!(map.get("x").is_none()); // the error inserted nothing
    /// assert_eq!(*parse("42").unwrap(), 42);
    /// assert_eq!(*map.get_or_try_insert_with("42", || "7".parse::<u32>()).unwrap(), 42);
    /// ```
    pub fn get_or_try_insert_with<E>(
        &self,
        key: K,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<Ref<'_, K, V>, E> {
        let guard = epoch::pin();
        let entry: *const Entry<K, V> = {
            let hash = self.hash(&key);
            let shard = self.shard(hash);
            match shard.find(hash, &key, &guard) {
                Some(entry) => entry,
                None => {
                    let ctx = self.ctx();
                    let mut writer = shard.writer(&ctx, &guard);
                    match writer.find(hash, &key) {
                        Some(at) => at.entry,
                        None => {
                            let value = make()?;
                            writer.insert(hash, key, value, &|k| self.hash(k))
                        }
                    }
                }
            }
        };
        // SAFETY: found or published under `guard`, which the `Ref` takes over.
        Ok(unsafe { Ref::new(guard, &*entry) })
    }
}
