//! epochmap's benchmarks against its peers: the code is in the bench targets next to this file
//! (`single_thread.rs`, `mixes.rs`, `clear.rs`, `iter.rs`, `memory.rs`, with shared helpers in
//! `common/mod.rs`); see `benches/README.md`. Cargo wants a library or binary target in every
//! package, and this empty library is it; each bench keeps `mod common;` so its helpers are
//! compiled (and inlined) into the bench binary as before the benches had a package of their own.
