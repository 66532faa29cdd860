//! Builder target: arbitrary [`Builder`] settings.
//!
//! `try_build` must never panic, must return exactly the documented error for an invalid setting
//! (`ZeroShards`, `TooManyShards` with the count asked for, `CapacityOverflow` with the capacity
//! asked for, checked in that order), and a map it builds must have the rounded shard count, at
//! least the requested capacity, and work: inserts, reads, growth, clear and reclamation.
//!
//! Capacities are drawn from three ranges: small ones (built and used), huge ones from `2^60` up
//! (no table layout can hold them: `CapacityOverflow` is the only right answer), and everything
//! between, which would make a run allocate gigabytes, so it is only checked not to be rejected
//! as anything but `CapacityOverflow` when the shard count is invalid first.

use std::fmt::Write as _;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use epochmap::{BuildError, Builder, EpochMap, ReclaimMode, MAX_SHARDS};

use crate::FuzzHasher;

/// Largest capacity a run builds (about 12 MiB of tables).
const BUILD_LIMIT: usize = 1 << 20;
/// From here on no table layout fits in the address space: at least `(4/3) / 7 * 64` bytes per
/// entry, so `2^60` entries need more than `isize::MAX` bytes.
const OVERFLOW_FROM: usize = 1 << 60;

#[derive(Debug, Arbitrary)]
enum Shards {
    Default,
    Small(u8),
    Near(u8),
    Any(usize),
}

#[derive(Debug, Arbitrary)]
enum Capacity {
    Small(u16),
    Medium(u32),
    Huge(u8),
    Any(usize),
}

#[derive(Debug, Arbitrary)]
struct Input {
    shards: Shards,
    capacity: Capacity,
    hasher: FuzzHasher,
    inline: bool,
    backpressure: usize,
    /// Use `build` rather than `try_build` when the settings are valid.
    panicking_build: bool,
    /// Keys to insert into a built map.
    keys: Vec<u16>,
}

/// Runs one input: see the module docs.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(input) = Input::arbitrary(&mut u) else {
        return;
    };
    let shards = match input.shards {
        Shards::Default => None,
        Shards::Small(n) => Some(usize::from(n)),
        // Around the limit: MAX_SHARDS - 128 ..= MAX_SHARDS + 127.
        Shards::Near(n) => Some(MAX_SHARDS - 128 + usize::from(n)),
        Shards::Any(n) => Some(n),
    };
    let capacity = match input.capacity {
        Capacity::Small(n) => usize::from(n),
        Capacity::Medium(n) => n as usize,
        Capacity::Huge(n) => usize::MAX - (usize::MAX >> (1 + n % 4)) + usize::from(n),
        Capacity::Any(n) => n,
    };
    let mode = if input.inline {
        ReclaimMode::Inline
    } else {
        ReclaimMode::Background
    };
    let mut builder: Builder<FuzzHasher> = EpochMap::builder()
        .capacity(capacity)
        .hasher(input.hasher)
        .reclaim_mode(mode)
        .backpressure_bytes(input.backpressure);
    if let Some(n) = shards {
        builder = builder.shards(n);
    }
    let mut text = String::new();
    write!(text, "{builder:?}").unwrap();

    let expected_error = match shards {
        Some(0) => Some(BuildError::ZeroShards),
        Some(n) if n > MAX_SHARDS => Some(BuildError::TooManyShards { requested: n }),
        _ if capacity >= OVERFLOW_FROM => Some(BuildError::CapacityOverflow {
            requested: capacity,
        }),
        _ if capacity <= BUILD_LIMIT => None,
        // Valid shards and a capacity that might fit but would allocate gigabytes: not built.
        _ => return,
    };

    if let Some(want) = expected_error {
        let err = builder
            .clone()
            .try_build::<Box<u16>, u32>()
            .expect_err("an invalid setting was accepted");
        assert_eq!(err, want);
        let message = err.to_string();
        match err {
            BuildError::TooManyShards { requested }
            | BuildError::CapacityOverflow { requested } => {
                assert!(message.contains(&requested.to_string()), "{message}")
            }
            _ => assert!(message.contains("at least 1"), "{message}"),
        }
        return;
    }

    let map: EpochMap<Box<u16>, u32, FuzzHasher> = if input.panicking_build {
        builder.build()
    } else {
        builder
            .try_build()
            .unwrap_or_else(|e| panic!("valid settings rejected: {e}"))
    };
    let count = map.shard_count();
    assert!(count.is_power_of_two() && count <= MAX_SHARDS);
    if let Some(n) = shards {
        assert_eq!(
            count,
            n.next_power_of_two(),
            "shard count rounds up to a power of two"
        );
    }
    assert!(
        map.capacity() >= capacity,
        "capacity {} < {capacity}",
        map.capacity()
    );
    let stats = map.memory_stats();
    assert_eq!(stats.len, 0);
    assert!(stats.buckets >= count && stats.table_bytes > 0, "{stats:?}");

    let keys: Vec<u16> = input.keys.into_iter().take(512).collect();
    for &k in &keys {
        map.insert(Box::new(k), u32::from(k) * 3);
    }
    for &k in &keys {
        assert_eq!(map.get_cloned(&k), Some(u32::from(k) * 3));
    }
    let distinct: std::collections::HashSet<u16> = keys.iter().copied().collect();
    assert_eq!(map.len(), distinct.len());
    map.clear();
    assert!(map.is_empty());
    assert!(
        map.wait_for_reclamation(Duration::from_secs(30)),
        "reclamation did not finish: {:?}",
        map.memory_stats()
    );
    assert_eq!(map.memory_stats().pending_bytes, 0);
}
