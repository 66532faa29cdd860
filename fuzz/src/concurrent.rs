//! Concurrent target: two or three threads apply their own operation sequences to one map, then
//! the run checks global invariants and exact drop counts (see `concurrent/threads.rs`). Every
//! input runs twice, on an [`EpochMap`](epochmap::EpochMap) and then on a
//! [`FlatEpochMap`](epochmap::FlatEpochMap) built from the same configuration, so each committed
//! input checks both layouts and the corpus needs no layout byte. A `FlatEpochMap` clones its
//! values when a table is rebuilt; a clone of a [`Counted`](crate::Counted) is a new value with
//! an id of its own in the ledger, so the exact drop counts cover the copies too.

/// Runs one input on both layouts.
pub fn run(data: &[u8]) {
    stable::threads::run(data);
    flat::threads::run(data);
}

// The map's layout is a type parameter the crate does not export as a bound, so the run cannot
// be generic over it: `concurrent/threads.rs` is compiled once per layout instead, as a submodule of
// `concurrent/stable.rs` and of `concurrent/flat.rs`, each copy reading `super::Map` and
// `super::new_builder` from the module that includes it.
mod flat;
mod stable;
