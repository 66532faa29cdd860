//! Single-flight loading: [`EpochMap::get_or_load`](Map::get_or_load) and its fallible, async, hashed and borrowed
//! forms.
//!
//! `get_or_insert_with` runs its closure under the shard lock, so a slow loader stalls every
//! writer of the shard. These calls run the loader with **no map lock held**:
//!
//! 1. A present key is found lock-free, exactly as [`EpochMap::get`](Map::get) finds it.
//! 2. On a miss the shard lock is taken briefly: if the key is still absent and no load of it is
//!    registered in the shard's [`Pending`](crate::flight::Pending) list, the caller registers one
//!    (moving the owned key into the list) and becomes its *leader*; if a load is registered, the
//!    caller becomes a *waiter* of that load's [`Flight`]. The lock is released either way.
//! 3. The leader runs the loader, lock-free. Waiters block on the flight's condition variable (or,
//!    async, park their `Waker` in it) holding no lock and no epoch guard.
//! 4. The leader takes the shard lock again, takes its key back out of the list, and inserts its
//!    value unless the key is present by then (a concurrent `insert`, `compute`, ... won: the map
//!    keeps that entry and the loaded value is dropped). Then it resolves the flight, which wakes
//!    every waiter once.
//! 5. A woken waiter starts over at step 1. Normally it finds the loaded entry lock-free; if the
//!    load failed (the loader returned `Err`, panicked, or its async caller was dropped), the key
//!    is absent and not loading, so one waiter becomes the next leader and the others wait for it.
//!
//! Registration and completion happen under the shard lock, so "absent and not loading" is
//! decided atomically with every other write of the shard: two callers can never both lead a
//! load of one key, and a load can never overwrite an entry that a writer published meanwhile.
//! A leader that fails leaves through [`Leading`]'s `Drop`, which unregisters the load and
//! resolves the flight: no waiter is left waiting for a load nobody runs.

use std::borrow::Borrow;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, Hash};

use crate::entry::Entry;
use crate::flight::{Flight, FlightWait};
use crate::key::{Borrowed, KeyArg, Owned};
use crate::layout::{Layout, Stable};
use crate::reentrancy::thread_token;
use crate::refs::Ref;
use crate::sync::{epoch, Arc};
use crate::Map;

/// What a caller of `get_or_load` does next, decided under the shard lock.
enum Step<K, V> {
    /// The key is present: this entry, found or published under the caller's guard.
    Present(*const Entry<K, V>),
    /// Another caller is loading the key: wait for its flight, then look again.
    Wait(Arc<Flight>),
    /// The caller registered a load of the key (its key is now in the pending list) and runs it.
    Lead(Arc<Flight>),
}

/// A leader's duty to finish its load: [`complete`](Leading::complete) it, or, if the loader
/// fails, panics or the async caller is dropped, unregister it in `Drop` so the waiters move on.
struct Leading<'m, K, V, S, L: Layout<K, V> = Stable>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher,
{
    map: &'m Map<K, V, S, L>,
    hash: u64,
    /// `None` once the load is completed or abandoned.
    flight: Option<Arc<Flight>>,
}

impl<'m, K, V, S, L: Layout<K, V>> Leading<'m, K, V, S, L>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher,
{
    /// Inserts the loaded `value` unless the key became present meanwhile (the map's entry wins;
    /// `value` is dropped after the lock is released), resolves the flight, and returns the key's
    /// entry.
    fn complete(mut self, value: V, guard: &epoch::Guard) -> &Entry<K, V> {
        let map = self.map;
        let hash = self.hash;
        let ctx = map.ctx();
        let (entry, unused) = {
            let flight = self.flight.as_ref().expect("a leader completes once");
            // Declared before the writer: locals drop in reverse order, so if `Eq` panics in
            // `find` the key is dropped after the lock is released (a `Drop` of the key may write
            // to this map). `value`, a parameter, drops after both. A `Hash` panic during growth
            // in `insert` is handled there the same way. `self`'s `Drop` then resolves the
            // flight: the waiters retry.
            let key;
            let mut writer = map.shard(hash).writer(&ctx, guard);
            key = writer
                .pending()
                .take(flight)
                .expect("a load stays registered until its leader completes or abandons it");
            match writer.find(hash, &key) {
                Some(at) => (at.entry, Some((key, value))),
                None => (writer.insert(hash, key, value, &|k| map.hash(k)), None),
            }
            // The writer drops here: the lock is released before anyone is woken.
        };
        if let Some(flight) = self.flight.take() {
            flight.resolve();
        }
        drop(unused);
        entry
    }
}

impl<K, V, S, L: Layout<K, V>> Drop for Leading<'_, K, V, S, L>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher,
{
    fn drop(&mut self) {
        let Some(flight) = self.flight.take() else {
            return;
        };
        let guard = epoch::pin();
        let ctx = self.map.ctx();
        // `None` if `complete` took the key before a panic in `Eq` or `Hash`.
        let key = self
            .map
            .shard(self.hash)
            .writer(&ctx, &guard)
            .pending()
            .take(&flight);
        flight.resolve();
        // The key's `Drop` is user code: after the lock and after the waiters are on their way.
        drop(key);
    }
}

impl<K, V, S, L: Layout<K, V>> Map<K, V, S, L>
where
    K: Hash + Eq + Send + 'static,
    V: Send + 'static,
    S: BuildHasher,
{
    /// Steps 1 and 2 of the module docs: the lock-free look-up, then the decision under the lock.
    /// On [`Step::Lead`] the key has moved out of `key` into the shard's pending list.
    fn join_or_lead<A>(
        &self,
        hash: u64,
        key: &mut Option<A>,
        guard: &epoch::Guard,
        blocking: bool,
    ) -> Step<K, V>
    where
        A: KeyArg<K>,
        K: Borrow<A::Q>,
    {
        let shard = self.shard(hash);
        let q = key
            .as_ref()
            .expect("the key is taken only by a leader")
            .get();
        if let Some(entry) = shard.find(hash, q, guard) {
            return Step::Present(entry);
        }
        let ctx = self.ctx();
        let mut writer = shard.writer(&ctx, guard);
        if let Some(at) = writer.find(hash, q) {
            return Step::Present(at.entry);
        }
        if let Some(flight) = writer.pending().find(hash, q) {
            return Step::Wait(Arc::clone(flight));
        }
        let flight = Arc::new(Flight::new(if blocking { thread_token() } else { 0 }));
        // A borrowed key is allocated here, under the lock, where it is known to be needed.
        let owned = key.take().expect("checked above").into_owned();
        writer.pending().push(hash, owned, Arc::clone(&flight));
        Step::Lead(flight)
    }

    /// The blocking single-flight load behind `get_or_load` and its forms; `hash` is the map's own
    /// hash of the key.
    fn load_blocking<A, E>(
        &self,
        key: A,
        hash: u64,
        load: impl FnOnce() -> Result<V, E>,
    ) -> Result<Ref<'_, K, V>, E>
    where
        A: KeyArg<K>,
        K: Borrow<A::Q>,
    {
        let mut key = Some(key);
        let flight = loop {
            let guard = epoch::pin();
            match self.join_or_lead(hash, &mut key, &guard, true) {
                // SAFETY: found or published under `guard`, which the `Ref` takes over.
                Step::Present(entry) => return Ok(unsafe { Ref::new(guard, &*entry) }),
                Step::Wait(flight) => {
                    // Unpinned while waiting: a parked thread must not hold reclamation back.
                    drop(guard);
                    flight.wait();
                }
                Step::Lead(flight) => break flight,
            }
        };
        let leading = Leading {
            map: self,
            hash,
            flight: Some(flight),
        };
        // No lock and no guard held: the loader may take as long as it likes, and may use the map.
        let value = load()?;
        let guard = epoch::pin();
        let entry: *const Entry<K, V> = leading.complete(value, &guard);
        // SAFETY: found or published under `guard`, which the `Ref` takes over.
        Ok(unsafe { Ref::new(guard, &*entry) })
    }

    /// The async single-flight load behind `get_or_load_async`.
    async fn load_async<A, F>(&self, key: A, hash: u64, load: F) -> V
    where
        A: KeyArg<K>,
        K: Borrow<A::Q>,
        F: Future<Output = V>,
        V: Clone,
    {
        let mut key = Some(key);
        let flight = loop {
            // The guard lives only inside this block, never across an `.await`: the future
            // stays `Send`, and a suspended task holds reclamation back for nobody.
            let step = {
                let guard = epoch::pin();
                match self.join_or_lead(hash, &mut key, &guard, false) {
                    // SAFETY: found or published under `guard`, which is still pinned.
                    Step::Present(entry) => return unsafe { &*entry }.value.clone(),
                    Step::Wait(flight) => Err(flight),
                    Step::Lead(flight) => Ok(flight),
                }
            };
            match step {
                Ok(flight) => break flight,
                Err(flight) => FlightWait::new(&flight).await,
            }
        };
        // If this future is dropped while `load` runs, `leading`'s `Drop` hands the load on.
        let leading = Leading {
            map: self,
            hash,
            flight: Some(flight),
        };
        let value = load.await;
        let guard = epoch::pin();
        leading.complete(value, &guard).value.clone()
    }

    /// The entry for `key`, loading it with `load()` if absent: **single-flight, and the loader runs
    /// with no map lock held.**
    ///
    /// * A present key is found lock-free, at the cost of [`get`](Map::get).
    /// * Of concurrent callers for one absent key, one runs its `load`; the others block (parked,
    ///   not spinning, holding no lock and no epoch guard) until it finishes, and then return the
    ///   entry it inserted. Their own loaders never run.
    /// * Callers of other keys, readers and writers never wait for a loader: the shard lock is
    ///   held only for a moment before and after it, to register the load and to insert its value.
    /// * If `load` panics, nothing is inserted and the panic propagates to this caller; one of the
    ///   waiters then runs its own loader (see [`try_get_or_load`](Map::try_get_or_load) for
    ///   errors).
    /// * If the key becomes present while `load` runs (an `insert`, `compute`, `try_insert` ... of
    ///   the same key), **the map's entry wins**: the loaded value is dropped, and this caller and
    ///   the waiters get the entry that is in the map. A `remove` or `clear` during the load
    ///   finds nothing to remove (the key is not in the map yet) and does not cancel it: the loaded
    ///   value is inserted when `load` returns.
    /// * A load in flight is invisible to other calls: `get` misses, `insert` inserts.
    ///
    /// `load` may read and write this map, except that asking for the key it is loading (through
    /// `get_or_load` and its forms) would wait for itself. A blocking loader that does so on its
    /// own thread, blocking or by polling
    /// [`get_or_load_async`](Map::get_or_load_async), panics instead; an async loader (a
    /// future given to `get_or_load_async`) that does so never finishes. Nor is a
    /// cycle across threads detected: if the loader of key A waits for key B while the loader of
    /// B, on another thread, waits for A, both wait forever. Loaders that need other keys must
    /// not form such cycles.
    ///
    /// ```
    /// use epochmap::EpochMap;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// let map = Arc::new(EpochMap::new());
    /// let loads = Arc::new(AtomicUsize::new(0));
    /// let callers: Vec<_> = (0..4)
    ///     .map(|_| {
    ///         let (map, loads) = (Arc::clone(&map), Arc::clone(&loads));
    ///         std::thread::spawn(move || {
    ///             *map.get_or_load("config", || {
    ///                 loads.fetch_add(1, Ordering::Relaxed);
    ///                 std::thread::sleep(std::time::Duration::from_millis(50)); // slow, no lock held
    ///                 42
    ///             })
    ///         })
    ///     })
    ///     .collect();
    /// for caller in callers {
    ///     assert_eq!(caller.join().unwrap(), 42);
    /// }
    /// assert_eq!(loads.load(Ordering::Relaxed), 1);
    /// ```
    pub fn get_or_load(&self, key: K, load: impl FnOnce() -> V) -> Ref<'_, K, V> {
        let hash = self.hash(&key);
        match self.load_blocking(Owned(key), hash, || Ok::<V, Infallible>(load())) {
            Ok(entry) => entry,
            Err(never) => match never {},
        }
    }

    /// [`get_or_load`](Map::get_or_load) with a fallible loader. An `Err` inserts nothing
    /// and is returned to this caller only; no error is cached: each waiter of this load wakes,
    /// finds the key absent, and one of them runs its own loader.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// let parse = |s: &'static str| map.try_get_or_load(s, || s.parse::<u32>());
    /// assert!(parse("x").is_err());
    /// assert!(map.get("x").is_none()); // the error inserted nothing
    /// assert_eq!(*parse("7").unwrap(), 7);
    /// ```
    pub fn try_get_or_load<E>(
        &self,
        key: K,
        load: impl FnOnce() -> Result<V, E>,
    ) -> Result<Ref<'_, K, V>, E> {
        let hash = self.hash(&key);
        self.load_blocking(Owned(key), hash, load)
    }

    /// [`get_or_load`](Map::get_or_load) with a borrowed key: the owned key is made
    /// (`Q::to_owned`) only by the caller that runs the load, under the shard lock at the moment
    /// it registers the load. A present key, or a caller that waits for another's load, allocates
    /// nothing.
    ///
    /// ```
    /// let map: epochmap::EpochMap<String, usize> = epochmap::EpochMap::new();
    /// assert_eq!(*map.get_or_load_ref("word", || 4), 4); // allocates "word" once, to insert it
    /// assert_eq!(*map.get_or_load_ref("word", || unreachable!()), 4); // allocates nothing
    /// ```
    pub fn get_or_load_ref<Q>(&self, key: &Q, load: impl FnOnce() -> V) -> Ref<'_, K, V>
    where
        K: Borrow<Q>,
        Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        match self.load_blocking(Borrowed(key), hash, || Ok::<V, Infallible>(load())) {
            Ok(entry) => entry,
            Err(never) => match never {},
        }
    }

    /// [`get_or_load`](Map::get_or_load) with a hash the caller computed with
    /// [`hash_key`](Map::hash_key). A present key is found with `hash` alone (no hashing);
    /// on a miss the key is hashed with the map's hasher, and the load goes on with that hash, so
    /// a wrong `hash` costs a hash and a trip through the shard lock, never a wrong result. See
    /// [`hash_key`](Map::hash_key) for the argument order and wrong hashes.
    ///
    /// ```
    /// let map = epochmap::EpochMap::new();
    /// let hash = map.hash_key("k");
    /// assert_eq!(*map.get_or_load_with_hash("k", hash, || 1), 1);
    /// assert_eq!(*map.get_or_load_with_hash("k", hash, || unreachable!()), 1);
    /// ```
    pub fn get_or_load_with_hash(
        &self,
        key: K,
        hash: u64,
        load: impl FnOnce() -> V,
    ) -> Ref<'_, K, V> {
        {
            let guard = epoch::pin();
            if let Some(entry) = self.shard(hash).find(hash, &key, &guard) {
                let entry: *const Entry<K, V> = entry;
                // SAFETY: found under `guard`, which the `Ref` takes over.
                return unsafe { Ref::new(guard, &*entry) };
            }
        }
        let real = self.hash(&key);
        match self.load_blocking(Owned(key), real, || Ok::<V, Infallible>(load())) {
            Ok(entry) => entry,
            Err(never) => match never {},
        }
    }

    /// The value for `key` (a clone), loading it with the future `load` if absent: the async form
    /// of [`get_or_load`](Map::get_or_load), with the same single-flight rules.
    ///
    /// Runtime-agnostic: waiting callers park their task's [`Waker`](std::task::Waker) in the
    /// load's flight and are woken once when it finishes; no runtime is needed or assumed. The returned future holds
    /// no lock and no epoch guard across any `.await` (it returns a clone, not a [`Ref`]), so it is
    /// `Send` whenever the map is `Sync` and `load` is `Send`, and can be spawned on a
    /// multi-threaded runtime.
    ///
    /// **Cancellation:** dropping a waiting caller's future just stops it waiting (and gives its
    /// place in the load's waiter list to the next waiter: cancelled waiters hold no memory while
    /// the load runs). Dropping the
    /// future that is running `load` drops `load`, inserts nothing, and wakes the waiters: one of
    /// them runs its own `load`. Nobody is left waiting for a load that no one is running (unless
    /// the leader's future is leaked with `mem::forget` instead of dropped: like a leaked lock
    /// guard, that leaves its waiters waiting). A future whose `load` panicked should be dropped,
    /// as runtimes do with a panicked task; dropping it hands the load on.
    ///
    /// ```
    /// use epochmap::EpochMap;
    /// use std::future::Future;
    /// use std::pin::pin;
    /// use std::sync::Arc;
    /// use std::task::{Context, Poll, Wake};
    ///
    /// // The smallest executor: poll on this thread, park until woken.
    /// struct Unpark(std::thread::Thread);
    /// impl Wake for Unpark {
    ///     fn wake(self: Arc<Self>) {
    ///         self.0.unpark();
    ///     }
    /// }
    /// fn block_on<F: Future>(future: F) -> F::Output {
    ///     let waker = Arc::new(Unpark(std::thread::current())).into();
    ///     let mut cx = Context::from_waker(&waker);
    ///     let mut future = pin!(future);
    ///     loop {
    ///         match future.as_mut().poll(&mut cx) {
    ///             Poll::Ready(out) => return out,
    ///             Poll::Pending => std::thread::park(),
    ///         }
    ///     }
    /// }
    ///
    /// let map = EpochMap::new();
    /// let user = block_on(map.get_or_load_async(7, async { String::from("user 7") }));
    /// assert_eq!(user, "user 7");
    /// assert_eq!(map.get_cloned(&7).as_deref(), Some("user 7"));
    /// ```
    pub async fn get_or_load_async<F>(&self, key: K, load: F) -> V
    where
        F: Future<Output = V>,
        V: Clone,
    {
        let hash = self.hash(&key);
        self.load_async(Owned(key), hash, load).await
    }
}

#[cfg(all(test, not(epochmap_loom)))]
mod tests {
    use super::*;
    use crate::EpochMap;

    #[test]
    fn a_failed_load_leaves_nothing_registered() {
        let map: EpochMap<u64, u64> = EpochMap::builder().shards(1).build();
        assert!(map.try_get_or_load(1, || Err::<u64, _>("no")).is_err());
        let guard = epoch::pin();
        let ctx = map.ctx();
        let mut writer = map.shard(map.hash(&1u64)).writer(&ctx, &guard);
        assert_eq!(writer.pending().len(), 0);
    }
}
