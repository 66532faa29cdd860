use epochmap::EpochMap;
use std::time::Duration;

#[test]
fn smoke() {
    let map: EpochMap<u64, u64> = EpochMap::builder().shards(4).build();
    for i in 0..100_000 {
        assert!(map.insert(i, i * 2).is_none());
    }
    assert_eq!(map.len(), 100_000);
    for i in 0..100_000 {
        assert_eq!(*map.get(&i).unwrap(), i * 2);
    }
    assert!(map.get(&100_001).is_none());
    for i in (0..100_000).step_by(2) {
        assert_eq!(*map.remove(&i).unwrap(), i * 2);
    }
    assert_eq!(map.len(), 50_000);
    for i in 0..100_000 {
        assert_eq!(
            map.get(&i).map(|r| *r),
            if i % 2 == 1 { Some(i * 2) } else { None }
        );
    }
    assert_eq!(map.iter().count(), 50_000);
    map.clear();
    assert!(map.is_empty());
    assert!(map.wait_for_reclamation(Duration::from_secs(5)));
    let s = map.memory_stats();
    println!("{s:?}");
    assert_eq!(s.pending_bytes, 0);
}
