//! Helpers for tests that make the map's user code panic on purpose.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Once};
use std::time::Duration;

/// Every panic a test raises on purpose carries this marker, so the panic hook installed by
/// [`quiet_expected_panics`] can keep them out of the test output.
pub const EXPECTED_PANIC: &str = "[expected test panic]";

/// Installs (once per process) a panic hook that stays silent for panics whose message contains
/// [`EXPECTED_PANIC`] and prints every other panic as the default hook would.
pub fn quiet_expected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !panic_message(info.payload()).contains(EXPECTED_PANIC) {
                default(info);
            }
        }));
    });
}

/// The text of a panic payload (`&str` or `String`), or a placeholder.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// Runs `f`, which must panic, and returns the panic message.
#[track_caller]
pub fn expect_panic<R>(f: impl FnOnce() -> R) -> String {
    quiet_expected_panics();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(_) => panic!("expected a panic, but the call returned"),
        Err(payload) => panic_message(&*payload),
    }
}

/// Runs `f` on a helper thread and panics if it has not finished within `limit`: turns a deadlock
/// (a shard lock left held) into a test failure instead of a hung test run.
#[track_caller]
pub fn completes_within<R: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(_) => panic!("{what} did not complete within {limit:?} (deadlock?)"),
    }
}

/// Compile-time proof that a type implements *none* of the given traits (the
/// `static_assertions::assert_not_impl_any!` trick: if it did, the call below would be ambiguous).
#[macro_export]
macro_rules! assert_not_impl {
    ($ty:ty: $($trait:path),+ $(,)?) => {
        const _: fn() = || {
            trait AmbiguousIfImpl<A> {
                fn some_item() {}
            }
            impl<T: ?Sized> AmbiguousIfImpl<()> for T {}
            $({
                #[allow(dead_code)]
                struct Invalid;
                impl<T: ?Sized + $trait> AmbiguousIfImpl<Invalid> for T {}
            })+
            let _ = <$ty as AmbiguousIfImpl<_>>::some_item;
        };
    };
}

/// Compile-time proof that a type implements all of the given traits.
#[macro_export]
macro_rules! assert_impl {
    ($ty:ty: $($trait:path),+ $(,)?) => {
        const _: fn() = || {
            fn check<T: ?Sized $(+ $trait)+>() {}
            check::<$ty>();
        };
    };
}

/// The environment variable that tells a re-run test binary which test is the child's.
const CHILD_VAR: &str = "EPOCHMAP_TEST_CHILD";

/// Runs `body` in a child process and asserts that the child neither aborted nor failed: for
/// code that, when broken, aborts the process (a panic while panicking, a failed allocation),
/// which would otherwise take the whole test binary down with it.
///
/// `test` is the calling test's name as the harness knows it (for an integration test at the top
/// of its file, the function name). The parent re-runs this test binary with `--exact test`
/// and `EPOCHMAP_TEST_CHILD=test`; in the child the same test function calls this again, which
/// then runs `body`. The parent checks that the child was not killed by `SIGABRT` (and did not
/// exit with 134, a shell's report of it), that it exited successfully, and that the test ran.
#[track_caller]
pub fn in_child_process(test: &str, body: impl FnOnce()) {
    if std::env::var(CHILD_VAR).as_deref() == Ok(test) {
        quiet_expected_panics();
        body();
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, test)
        .output()
        .expect("the test binary runs again as a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = format!(
        "child `{test}`: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_ne!(out.status.signal(), Some(6), "the child aborted; {report}");
    }
    assert_ne!(out.status.code(), Some(134), "the child aborted; {report}");
    assert!(out.status.success(), "the child failed; {report}");
    assert!(
        stdout.contains("1 passed"),
        "the child did not run the test; {report}"
    );
}
