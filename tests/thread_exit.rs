//! Writing to a map from a thread-local destructor, at thread exit. A common pattern: a per-thread
//! token registers itself in a global map and deregisters in its `Drop`. Thread-locals are
//! destroyed in reverse order of first use, so the map's own thread-local state (its re-entrancy
//! detector) may already be gone when the token's destructor writes. That write must work; it used
//! to panic inside a thread-local destructor, which aborts the whole process.
//!
//! Its own test binary: a regression here aborts the process.

use std::sync::OnceLock;

use epochmap::{EpochMap, ReclaimMode};

fn registry(mode: ReclaimMode) -> &'static EpochMap<u64, String> {
    static INLINE: OnceLock<EpochMap<u64, String>> = OnceLock::new();
    static BACKGROUND: OnceLock<EpochMap<u64, String>> = OnceLock::new();
    let cell = match mode {
        ReclaimMode::Inline => &INLINE,
        _ => &BACKGROUND,
    };
    cell.get_or_init(|| EpochMap::builder().shards(2).reclaim_mode(mode).build())
}

/// Deregisters thread `id` from the registry when the thread exits, with every kind of write.
struct Token {
    id: u64,
    mode: ReclaimMode,
}

impl Drop for Token {
    fn drop(&mut self) {
        let map = registry(self.mode);
        assert!(map.remove(&self.id).is_some(), "the token was registered");
        map.insert(self.id + 1_000, "exited".into());
        map.get_or_insert_with(self.id + 2_000, || "exited".into());
        map.update(&(self.id + 1_000), |v| format!("{v}!"));
        map.remove_if(&(self.id + 2_000), |_, _| true);
        map.retain(|_, _| true);
        if self.id % 2 == 0 {
            map.clear_keep_capacity();
        }
    }
}

thread_local! {
    static TOKEN: std::cell::RefCell<Option<Token>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn a_thread_local_destructor_can_write_to_a_map_at_thread_exit() {
    for mode in [ReclaimMode::Inline, ReclaimMode::Background] {
        for id in [1u64, 2, 3] {
            std::thread::spawn(move || {
                // The token's thread-local is touched before any map write on this thread, so it is
                // destroyed after the map's own thread-local state.
                TOKEN.with(|t| *t.borrow_mut() = Some(Token { id, mode }));
                registry(mode).insert(id, "running".into());
            })
            .join()
            .expect("the thread exits cleanly");
            let map = registry(mode);
            assert!(!map.contains_key(&id));
            if id % 2 == 1 {
                assert_eq!(map.get_cloned(&(id + 1_000)).as_deref(), Some("exited!"));
            }
        }
    }
}
