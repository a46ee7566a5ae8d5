//! The park handshake between a polling thread and the threads that feed it: one type, used by
//! the worker (fed by submitters), the reply thread (fed by its worker) and nowhere else.
//!
//! Contract: a thread that parks through a [`Parker`] misses no wake-up. Whatever a feeder
//! published before calling [`Unparker::wake`] is seen by the parking side's re-check, or the
//! feeder sees the parking side's flag and unparks it. `wake` costs one `SeqCst` fence and one
//! load of a flag when nobody is parked, and makes no syscall then; the parking side pays for
//! the flag, and the futex only when it actually parks. The park timeout is not what makes
//! this correct (engine/tests/loom_park.rs model-checks the handshake with parks that never
//! time out); it only bounds how long a parked thread sleeps before it re-checks for work.
//!
//! ```text
//!  parking thread                          feeder
//!  announce: parked = true                 publish the work (ring tail, stop flag, ...)
//!  fence(SeqCst)                           fence(SeqCst)
//!  re-check for work → park or not         if parked { unpark }
//!  parked = false (on drop)
//! ```
//!
//! The two fences are a Dekker pair: whichever comes first in their single total order, the
//! other side's load after its own fence sees the store before the first fence. So either the
//! re-check sees the work, or the feeder sees `parked == true`. Take away either fence and both
//! loads may read the old value (store buffering), and the thread sleeps with work queued.
//!
//! Under `--cfg loom` the atomics, fences and thread handles are loom's and a park never times
//! out, so a lost wake-up shows up as a deadlock in the model.
//!
//! ```
//! use knhk_engine::park;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let (parker, unparker) = park::pair();
//! let work = Arc::new(AtomicBool::new(false));
//! let feeder = {
//!     let work = work.clone();
//!     std::thread::spawn(move || {
//!         work.store(true, Ordering::Release); // publish
//!         unparker.wake(); // then wake
//!     })
//! };
//! while !work.load(Ordering::Acquire) {
//!     let parking = parker.announce();
//!     if !work.load(Ordering::Acquire) {
//!         parking.park(Duration::from_millis(100));
//!     }
//! }
//! feeder.join().unwrap();
//! ```

use std::sync::OnceLock;
use std::time::Duration;

#[cfg(loom)]
use loom::{
    sync::atomic::{fence, AtomicBool, Ordering},
    sync::Arc,
    thread::{self, Thread},
};
#[cfg(not(loom))]
use std::{
    sync::atomic::{fence, AtomicBool, Ordering},
    sync::Arc,
    thread::{self, Thread},
};

struct Shared {
    /// True from [`Parker::announce`] until the [`Parking`] guard is dropped.
    parked: AtomicBool,
    /// The parking thread, registered by itself before its first announcement (so whoever
    /// reads `parked == true` with Acquire finds it set).
    thread: OnceLock<Thread>,
}

/// The parking side: owned by the one thread that parks (the worker, or a reply thread).
pub struct Parker {
    shared: Arc<Shared>,
}

/// The waking side: cloned into every thread that feeds the parking one.
#[derive(Clone)]
pub struct Unparker {
    shared: Arc<Shared>,
}

/// A parker and its unparker. The parker may move to its thread before first use: the thread
/// it parks is the one that calls [`Parker::announce`].
pub fn pair() -> (Parker, Unparker) {
    let shared = Arc::new(Shared {
        parked: AtomicBool::new(false),
        thread: OnceLock::new(),
    });
    (
        Parker {
            shared: shared.clone(),
        },
        Unparker { shared },
    )
}

impl Parker {
    /// Announces that this thread is about to park: sets the flag, then fences. The caller
    /// must re-check for work after this and call [`Parking::park`] only if there is none;
    /// dropping the guard (after parking or instead of it) clears the flag.
    #[inline]
    #[must_use = "re-check for work, then park or drop"]
    pub fn announce(&self) -> Parking<'_> {
        let shared = &*self.shared;
        shared.thread.get_or_init(thread::current);
        // Release: a feeder that reads `true` with Acquire also sees `thread` set.
        shared.parked.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        Parking { shared }
    }
}

/// Between [`Parker::announce`] and the re-check: a feeder that publishes now will unpark.
#[must_use = "re-check for work, then park or drop"]
pub struct Parking<'a> {
    shared: &'a Shared,
}

impl Parking<'_> {
    /// Parks this thread for at most `timeout` (under loom: until unparked). May return early
    /// (an unpark, or a stale one from an earlier round): the caller loops and re-checks.
    #[inline]
    pub fn park(self, timeout: Duration) {
        #[cfg(not(loom))]
        thread::park_timeout(timeout);
        #[cfg(loom)]
        {
            let _ = timeout;
            thread::park();
        }
    }
}

impl Drop for Parking<'_> {
    #[inline]
    fn drop(&mut self) {
        // Relaxed: a feeder that still reads `true` unparks once more for nothing, and the
        // unpark token only makes a later park return early.
        self.shared.parked.store(false, Ordering::Relaxed);
    }
}

impl Unparker {
    /// Call after publishing work (or a stop flag) the parking thread re-checks: unparks it if
    /// it announced. One fence and one load when it did not; no syscall.
    #[inline]
    pub fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.shared.parked.load(Ordering::Acquire) {
            self.unpark_cold();
        }
    }

    #[cold]
    #[inline(never)]
    fn unpark_cold(&self) {
        if let Some(t) = self.shared.thread.get() {
            t.unpark();
        }
    }
}

impl std::fmt::Debug for Parker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parker")
            .field("parked", &self.shared.parked.load(Ordering::Relaxed))
            .finish()
    }
}

impl std::fmt::Debug for Unparker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unparker")
            .field("parked", &self.shared.parked.load(Ordering::Relaxed))
            .finish()
    }
}

impl std::fmt::Debug for Parking<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parking").finish_non_exhaustive()
    }
}
