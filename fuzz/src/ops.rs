//! Differential target: one thread applies an operation sequence to a map and to
//! `std::collections::HashMap`, comparing every result (see `ops/differential.rs`). Every input
//! runs twice, on an [`EpochMap`](epochmap::EpochMap) and then on a
//! [`FlatEpochMap`](epochmap::FlatEpochMap) built from the same configuration, so each committed
//! input checks both layouts and the corpus needs no layout byte.
//!
//! Keys are boxed `u16`s and values boxed `u32`s, so AddressSanitizer catches a read of a freed
//! key or value (or of a `FlatEpochMap` slot whose copy was dropped). Tiny shard counts, a
//! weak-hasher variant and a small key space (from the input) reach collisions, overflow chains
//! across buckets, growth (which clones every entry of a `FlatEpochMap` shard), shrinking and
//! clears of full tables.

/// Runs one input on both layouts.
pub fn run(data: &[u8]) {
    stable::differential::run(data);
    flat::differential::run(data);
}

// The map's layout is a type parameter the crate does not export as a bound, so the run cannot
// be generic over it: `ops/differential.rs` is compiled once per layout instead, as a submodule of
// `ops/stable.rs` and of `ops/flat.rs`, each copy reading `super::Map` and
// `super::new_builder` from the module that includes it.
mod flat;
mod stable;
