//! [`EpochMap`](epochmap::EpochMap): entries at stable addresses.

use std::collections::hash_map::RandomState;

type Map = epochmap::EpochMap<Box<u16>, Box<u32>, crate::FuzzHasher>;

fn new_builder() -> epochmap::Builder<RandomState> {
    epochmap::EpochMap::builder()
}

#[allow(clippy::duplicate_mod)] // the same run, compiled for the other layout in `flat.rs`
#[path = "differential.rs"]
pub(super) mod differential;
