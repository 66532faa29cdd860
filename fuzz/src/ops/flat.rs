//! [`FlatEpochMap`](epochmap::FlatEpochMap): entries inline in the table, cloned when a table
//! is rebuilt.

use std::collections::hash_map::RandomState;

use epochmap::layouts::Inline;

type Map = epochmap::FlatEpochMap<Box<u16>, Box<u32>, crate::FuzzHasher>;

fn new_builder() -> epochmap::Builder<RandomState, Inline> {
    epochmap::FlatEpochMap::builder()
}

#[allow(clippy::duplicate_mod)] // the same run, compiled for the other layout in `stable.rs`
#[path = "differential.rs"]
pub(super) mod differential;
