//! `Pinned::sample`: distinct present entries, deterministic per seed, uniform across entries
//! whatever the shard sizes (chi-square), defined results for `n = 0` and `n >= len`, sparse
//! tables, and removal of sampled entries while the `Pinned` is held.

mod common;

use std::collections::{HashMap, HashSet};

use common::{Rng, TestHasher, Tracked, Tracker};
use epochmap::ReclaimMode;

for_each_map! {
    #[test]
    fn a_sample_holds_distinct_present_entries_with_their_values() {
        with_map::<u64, u64>(|config, make| {
            let map = make();
            let len = config.scale(1000) as u64;
            for k in 0..len {
                map.insert(k, k * 3);
            }
            let pinned = map.pin();
            for (seed, n) in [(1, 1), (2, 7), (3, 40), (4, 100)] {
                let n = n.min(len as usize / 2 - 1);
                let picked = pinned.sample(n, seed);
                assert_eq!(picked.len(), n, "{config} n={n}");
                let keys: HashSet<u64> = picked.iter().map(|(k, _)| **k).collect();
                assert_eq!(keys.len(), n, "{config}: a key sampled twice");
                for (k, v) in picked {
                    assert!(*k < len, "{config}");
                    assert_eq!(*v, *k * 3, "{config}");
                }
            }
        });
    }

    #[test]
    fn sampling_zero_entries_or_an_empty_map_returns_nothing() {
        with_map::<u64, u64>(|config, make| {
            let map = make();
            assert!(map.pin().sample(10, 1).is_empty(), "{config}");
            map.insert(1, 1);
            assert!(map.pin().sample(0, 1).is_empty(), "{config}");
            map.remove(&1);
            assert!(map.pin().sample(3, 1).is_empty(), "{config}");
        });
    }

    #[test]
    fn asking_for_at_least_half_the_map_returns_that_many_and_asking_for_more_returns_all() {
        with_map::<u64, u64>(|config, make| {
            let map = make();
            let len = config.scale(500);
            for k in 0..len as u64 {
                map.insert(k, k);
            }
            let pinned = map.pin();
            let half = pinned.sample(len / 2, 9);
            assert_eq!(half.len(), len / 2, "{config}");
            assert_eq!(
                half.iter().map(|(k, _)| **k).collect::<HashSet<_>>().len(),
                len / 2,
                "{config}"
            );
            let mut all: Vec<u64> = pinned
                .sample(len + 10, 9)
                .iter()
                .map(|(k, _)| **k)
                .collect();
            all.sort_unstable();
            assert_eq!(all, (0..len as u64).collect::<Vec<_>>(), "{config}");
            let exact: HashSet<u64> = pinned.sample(len, 10).iter().map(|(k, _)| **k).collect();
            assert_eq!(exact.len(), len, "{config}");
        });
    }

    #[test]
    fn the_same_seed_on_the_same_map_gives_the_same_sample() {
        with_map::<u64, u64>(|config, make| {
            let map = make();
            for k in 0..config.scale(1000) as u64 {
                map.insert(k, k);
            }
            let pinned = map.pin();
            for n in [5, 300, 2000] {
                let a: Vec<u64> = pinned.sample(n, 77).iter().map(|(k, _)| **k).collect();
                let b: Vec<u64> = pinned.sample(n, 77).iter().map(|(k, _)| **k).collect();
                assert_eq!(a, b, "{config} n={n}");
            }
            let a: Vec<u64> = pinned.sample(20, 1).iter().map(|(k, _)| **k).collect();
            let b: Vec<u64> = pinned.sample(20, 2).iter().map(|(k, _)| **k).collect();
            assert_ne!(
                a,
                b,
                "{config}: two seeds gave the same 20 of {} keys",
                map.len()
            );
        });
    }

    #[test]
    fn a_table_thinned_by_removals_still_yields_a_full_sample() {
        with_map::<u64, u64>(|config, make| {
            let map = make();
            let len = config.scale(20_000) as u64;
            for k in 0..len {
                map.insert(k, k);
            }
            // Keep one key in 500: most buckets are empty and rejection mostly fails, so draws reach
            // the forward fallback.
            map.retain(|k, _| k % 500 == 0);
            let kept: HashSet<u64> = (0..len).filter(|k| k % 500 == 0).collect();
            let pinned = map.pin();
            let n = kept.len() / 2 - 1;
            let picked = pinned.sample(n, 5);
            assert_eq!(picked.len(), n, "{config}");
            let keys: HashSet<u64> = picked.iter().map(|(k, _)| **k).collect();
            assert_eq!(keys.len(), n, "{config}");
            assert!(keys.is_subset(&kept), "{config}");
        });
    }

    #[test]
    fn removing_sampled_entries_while_pinned_keeps_their_references_readable() {
        let tracker = Tracker::new();
        for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
            let map: TestMap<u64, Tracked> = TestMap::builder().shards(4).reclaim_mode(mode).build();
            for k in 0..200 {
                map.insert(k, tracker.value(k));
            }
            {
                let pinned = map.pin();
                let picked = pinned.sample(20, 3);
                assert_eq!(picked.len(), 20);
                for (k, v) in &picked {
                    // `remove_if` checks the entry is still the one sampled (same value).
                    let removed = map.remove_if(*k, |_, current| std::ptr::eq(current, *v));
                    assert!(removed.is_some(), "key {k}");
                }
                // Retire enough to fill batches, and drive reclamation: nothing sampled is freed.
                for k in 0..200 {
                    if let Some(v) = pinned.get(&k) {
                        assert_eq!(v.id(), k);
                    }
                }
                assert!(!map.wait_for_reclamation(std::time::Duration::from_millis(50)));
                for (k, v) in &picked {
                    assert_eq!(
                        v.id(),
                        **k,
                        "a sampled value changed or was freed under the pin"
                    );
                    assert!(!map.contains_key(*k));
                }
                assert_eq!(map.len(), 180);
            }
            map.clear();
            assert!(map.wait_for_reclamation(common::RECLAIM_TIMEOUT));
        }
        tracker.assert_all_dropped_once();
    }

    /// Pearson's chi-square statistic of `counts` against `expected` each.
    fn chi_square(counts: &[u64], expected: f64) -> f64 {
        counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum()
    }

    /// 1000 keys over 4 shards of very different sizes (700, 200, 90, 10): with the identity hasher
    /// the top bits of a key pick its shard and its low bits its home bucket.
    fn lopsided_map() -> (TestMap<u64, u64, TestHasher>, Vec<Vec<u64>>) {
        let map = TestMap::builder()
            .shards(4)
            .hasher(TestHasher::Identity)
            .build();
        let sizes = [700u64, 200, 90, 10];
        let mut by_shard = Vec::new();
        for (shard, &size) in sizes.iter().enumerate() {
            let keys: Vec<u64> = (0..size)
                .map(|i| ((shard as u64) << 48) | (i.wrapping_mul(0x9e37_79b9) & 0xff_ffff))
                .collect();
            for &k in &keys {
                map.insert(k, k);
            }
            by_shard.push(keys);
        }
        assert_eq!(map.len(), 1000);
        (map, by_shard)
    }

    /// Each key's position in `by_shard` read shard after shard: the index of its counter.
    fn position_of_each_key(by_shard: &[Vec<u64>]) -> HashMap<u64, usize> {
        by_shard
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, &k)| (k, i))
            .collect()
    }

    /// Chi-square bound for 999 degrees of freedom: the mean is 999 and the standard deviation 44.7,
    /// so a uniform sampler exceeds 1300 with probability about 1e-10 (and sampling without
    /// replacement within one call only lowers the statistic).
    const CHI_SQUARE_BOUND: f64 = 1300.0;

    #[test]
    fn samples_are_uniform_across_entries_whatever_the_shard_sizes() {
        let (map, by_shard) = lopsided_map();
        let index = position_of_each_key(&by_shard);
        let pinned = map.pin();
        let (samples, n) = (10_000u64, 10usize);
        let mut counts = vec![0u64; 1000];
        let seed = common::rng::seed(0x5eed);
        // Consecutive seeds from a random base, as a caller with a counter would pass them.
        let base = Rng::new(seed).next_u64();
        for s in 0..samples {
            for (k, _) in pinned.sample(n, base.wrapping_add(s)) {
                counts[index[k]] += 1;
            }
        }
        let expected = (samples * n as u64) as f64 / 1000.0;
        let stat = chi_square(&counts, expected);
        let per_shard: Vec<u64> = {
            let mut start = 0;
            by_shard
                .iter()
                .map(|keys| {
                    let sum = counts[start..start + keys.len()].iter().sum();
                    start += keys.len();
                    sum
                })
                .collect()
        };
        println!("sample: chi-square {stat:.1} (999 df, bound {CHI_SQUARE_BOUND}); picks per shard {per_shard:?} for sizes 700/200/90/10");
        assert!(
            stat < CHI_SQUARE_BOUND,
            "chi-square {stat} per shard {per_shard:?}"
        );

        // The same statistic rejects a naive sampler (a uniform shard, then a uniform entry of it):
        // the 10 entries of the smallest shard would each get 1/40 of the picks instead of 1/1000.
        let mut rng = Rng::new(seed);
        let mut naive = vec![0u64; 1000];
        for _ in 0..samples * n as u64 {
            let keys = &by_shard[rng.below(4) as usize];
            naive[index[&keys[rng.below(keys.len() as u64) as usize]]] += 1;
        }
        let naive_stat = chi_square(&naive, expected);
        println!("naive uniform-shard sampler: chi-square {naive_stat:.1}");
        assert!(naive_stat > 10.0 * CHI_SQUARE_BOUND);
    }

    #[test]
    fn the_walk_used_for_large_samples_is_uniform_too() {
        let (map, by_shard) = lopsided_map();
        let index = position_of_each_key(&by_shard);
        let pinned = map.pin();
        let (samples, n) = (200u64, 600usize);
        let mut counts = vec![0u64; 1000];
        for s in 0..samples {
            let picked = pinned.sample(n, 1000 + s);
            assert_eq!(picked.len(), n);
            for (k, _) in picked {
                counts[index[k]] += 1;
            }
        }
        let expected = (samples * n as u64) as f64 / 1000.0;
        // Each entry is in a sample with probability p = 0.6, so its count has variance
        // expected * (1 - p) rather than `expected`: scale the statistic back to chi-square(999).
        let stat = chi_square(&counts, expected) / (1.0 - n as f64 / 1000.0);
        println!("walk: chi-square {stat:.1} (999 df)");
        assert!(stat < CHI_SQUARE_BOUND, "chi-square {stat}");
    }
}
