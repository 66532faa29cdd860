//! Reclamation jobs a thread could not run because it held a shard lock (see
//! `reclaim::run_or_owe`), kept per thread and paid when it releases its last lock
//! (`reentrancy::Held`'s `Drop` calls [`pay_owed`]).
//!
//! It sits below both: `reclaim` owes jobs here, `reentrancy` pays them, and neither has to
//! import the other for it.

use std::cell::{Cell, RefCell};

use crate::sync::thread_local;

/// Type-erased work for the reclaimer thread.
pub(crate) trait Job: Send {
    fn run_boxed(self: Box<Self>);
}

#[cfg(not(epochmap_loom))]
thread_local! {
    static ANY: Cell<bool> = const { Cell::new(false) };
    static JOBS: RefCell<Vec<Box<dyn Job>>> = const { RefCell::new(Vec::new()) };
}
#[cfg(epochmap_loom)]
thread_local! {
    static ANY: Cell<bool> = Cell::new(false);
    static JOBS: RefCell<Vec<Box<dyn Job>>> = RefCell::new(Vec::new());
}

/// Runs the jobs this thread put off while it held a shard lock; called when it releases its last
/// one. Cheap when there are none (one thread-local read).
#[inline]
pub(crate) fn pay_owed() {
    if any() {
        pay();
    }
}

/// Owes `job`; hands it back if the thread's record is already gone.
pub(crate) fn push(job: Box<dyn Job>) -> Result<(), Box<dyn Job>> {
    let mut job = Some(job);
    let _ = JOBS.try_with(|jobs| {
        // The job is taken only once the borrow is had: a failed borrow must hand it back,
        // not drop it unrun (its entries would leak and their counts never come down).
        if let Ok(mut jobs) = jobs.try_borrow_mut() {
            jobs.extend(job.take());
        }
    });
    match job {
        Some(job) => Err(job),
        None => {
            let _ = ANY.try_with(|any| any.set(true));
            Ok(())
        }
    }
}

#[inline]
fn any() -> bool {
    ANY.try_with(Cell::get).unwrap_or(false)
}

/// Runs every owed job. Taken out of the record first: a job's `Drop`s may write to a map,
/// and so lock, release and come back here.
#[cold]
fn pay() {
    let _ = ANY.try_with(|any| any.set(false));
    let jobs = JOBS
        .try_with(|jobs| jobs.try_borrow_mut().map(|mut j| std::mem::take(&mut *j)))
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    for job in jobs {
        // Each job contains its users' `Drop` panics (see `reclaim::free_entry`).
        job.run_boxed();
    }
}
