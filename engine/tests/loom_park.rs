//! Loom model of the park handshake (engine/src/park.rs): every interleaving and every value a
//! load may read under the C11 memory model, with parks that never time out, so a lost
//! wake-up is a deadlock loom reports. Built and run only under `--cfg loom`:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p knhk-engine --release --test loom_park
//! ```
//!
//! The "ring" here is a counter: a feeder publishes with a Release store (or a Release
//! read-modify-write, for several submitters), the parking thread reads it with Acquire, as the
//! SPSC ring's tail is published and read (kernel/src/ring.rs).
#![cfg(loom)]

use std::time::Duration;

use knhk_engine::park::{self, Parker};
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Ignored under loom (a park waits for an unpark); here so the calls read like the engine's.
const TIMEOUT: Duration = Duration::from_millis(1);

/// The parking side's idle loop (workers.rs `Worker::run`, engine.rs `reply_loop`): poll,
/// announce, re-check, park; until `want` items were published or `stop` is set.
fn wait_for(parker: &Parker, queued: &AtomicUsize, want: usize, stop: &AtomicBool) -> usize {
    loop {
        let n = queued.load(Ordering::Acquire);
        if n >= want || stop.load(Ordering::Acquire) {
            return n;
        }
        let parking = parker.announce();
        if queued.load(Ordering::Acquire) < want && !stop.load(Ordering::SeqCst) {
            parking.park(TIMEOUT);
        }
    }
}

/// Runs the parking side on its own thread: loom's `JoinHandle::join` must not run on a thread
/// that may hold a leftover unpark token (loom 0.7 then fails an internal assertion), so the
/// model's main thread only feeds and joins.
fn spawn_waiter(
    parker: Parker,
    queued: &Arc<AtomicUsize>,
    wants: &'static [usize],
    stop: &Arc<AtomicBool>,
) -> thread::JoinHandle<usize> {
    let (queued, stop) = (queued.clone(), stop.clone());
    thread::spawn(move || {
        let mut n = 0;
        for &want in wants {
            n = wait_for(&parker, &queued, want, &stop);
        }
        n
    })
}

/// A submitter pushes one job while the worker goes idle: the worker takes it.
#[test]
fn a_push_is_never_missed() {
    loom::model(|| {
        let (parker, unparker) = park::pair();
        let queued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let waiter = spawn_waiter(parker, &queued, &[1], &stop);
        queued.store(1, Ordering::Release);
        unparker.wake();
        assert_eq!(waiter.join().unwrap(), 1);
    });
}

/// Two submitters (the in ring's producer is shared behind a mutex): both pushes are taken.
#[test]
fn two_feeders() {
    loom::model(|| {
        let (parker, unparker) = park::pair();
        let queued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let waiter = spawn_waiter(parker, &queued, &[2], &stop);
        let other = {
            let (queued, unparker) = (queued.clone(), unparker.clone());
            thread::spawn(move || {
                queued.fetch_add(1, Ordering::Release);
                unparker.wake();
            })
        };
        queued.fetch_add(1, Ordering::Release);
        unparker.wake();
        other.join().unwrap();
        assert_eq!(waiter.join().unwrap(), 2);
    });
}

/// Two rounds on one parker: the flag cleared after a round (and an unpark token left over
/// from it) does not hide the second push.
#[test]
fn second_round() {
    loom::model(|| {
        let (parker, unparker) = park::pair();
        let queued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let waiter = spawn_waiter(parker, &queued, &[1, 2], &stop);
        queued.store(1, Ordering::Release);
        unparker.wake();
        queued.store(2, Ordering::Release);
        unparker.wake();
        assert_eq!(waiter.join().unwrap(), 2);
    });
}

/// `WorkerHandle::stop` and the worker's `done` flag: a flag published before `wake` ends
/// the wait as a push does.
#[test]
fn a_stop_is_never_missed() {
    loom::model(|| {
        let (parker, unparker) = park::pair();
        let queued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let waiter = spawn_waiter(parker, &queued, &[1], &stop);
        stop.store(true, Ordering::Release);
        unparker.wake();
        assert_eq!(waiter.join().unwrap(), 0);
    });
}
