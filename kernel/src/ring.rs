//! A wait-free single-producer single-consumer ring for handing events between a pinned
//! kernel worker and the shell.
//!
//! Contract: `try_push` on a full ring returns the value back (`Err(value)`), `try_pop` on an
//! empty ring returns `None`; values are never overwritten or dropped; neither side ever
//! blocks, spins, allocates or makes a syscall. Capacity `N` is a power of two. Head and tail
//! sit on their own cache lines (128 bytes apart, the adjacent-line prefetcher pair on x86),
//! and each side caches the other side's index so the common case touches one shared line.
//!
//! ```
//! use knhk_kernel::ring::Ring;
//! let mut ring: Ring<u32, 4> = Ring::new();
//! let (mut tx, mut rx) = ring.split();
//! for i in 0..4 { tx.try_push(i).unwrap(); }
//! assert_eq!(tx.try_push(9), Err(9)); // full: handed back
//! assert_eq!(rx.try_pop(), Some(0));
//! ```
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ops::Deref;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Pads and aligns a value to 128 bytes so two of them never share a cache-line pair.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CachePadded<T>(pub T);

impl<T> Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The ring's storage. Create it, then `split` it (or use `channel` with feature `std`).
pub struct Ring<T, const N: usize> {
    /// Next slot the consumer reads (written only by the consumer).
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer writes (written only by the producer).
    tail: CachePadded<AtomicUsize>,
    slots: [UnsafeCell<MaybeUninit<T>>; N],
}

// SAFETY: a Ring is only reachable through one Producer and one Consumer (split takes &mut
// self; channel creates exactly one pair). A slot is written by the producer only while it is
// outside [head, tail) and read by the consumer only while inside it; the Release store of
// tail (resp. head) after the write (resp. read) and the Acquire load on the other side order
// the slot accesses. Values move between threads, so T: Send is required.
unsafe impl<T: Send, const N: usize> Sync for Ring<T, N> {}
// SAFETY: as above; moving the ring moves its values, which are Send.
unsafe impl<T: Send, const N: usize> Send for Ring<T, N> {}

impl<T, const N: usize> Ring<T, N> {
    const VALID: () = assert!(N.is_power_of_two(), "ring capacity must be a power of two");

    /// An empty ring.
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID;
        Ring {
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
            slots: [const { UnsafeCell::new(MaybeUninit::uninit()) }; N],
        }
    }

    /// Capacity in values.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Values currently queued (a snapshot when the other side is active).
    pub fn len(&self) -> usize {
        let tail = self.tail.load(Ordering::Acquire);
        let head = self.head.load(Ordering::Acquire);
        tail.wrapping_sub(head)
    }

    /// True when nothing is queued (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The producer and consumer handles, borrowing the ring.
    pub fn split(&mut self) -> (Producer<&Self>, Consumer<&Self>) {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let ring: &Self = self;
        (
            Producer {
                ring,
                tail,
                cached_head: head,
            },
            Consumer {
                ring,
                head,
                cached_tail: tail,
            },
        )
    }
}

impl<T, const N: usize> Default for Ring<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Drop for Ring<T, N> {
    fn drop(&mut self) {
        let head = *self.head.0.get_mut();
        let tail = *self.tail.0.get_mut();
        let mut i = head;
        while i != tail {
            // SAFETY: slots in [head, tail) hold initialised values that nobody else owns
            // (we have &mut self); each is dropped exactly once.
            unsafe { (*self.slots[i & (N - 1)].get()).assume_init_drop() };
            i = i.wrapping_add(1);
        }
    }
}

/// The producing end. `R` is `&Ring` (split) or `Arc<Ring>` (channel).
pub struct Producer<R> {
    ring: R,
    tail: usize,
    cached_head: usize,
}

/// The consuming end. `R` is `&Ring` (split) or `Arc<Ring>` (channel).
pub struct Consumer<R> {
    ring: R,
    head: usize,
    cached_tail: usize,
}

impl<T, const N: usize, R: Deref<Target = Ring<T, N>>> Producer<R> {
    /// Queues `value`, or hands it back when the ring is full. Wait-free.
    #[inline]
    pub fn try_push(&mut self, value: T) -> Result<(), T> {
        if self.tail.wrapping_sub(self.cached_head) == N {
            self.cached_head = self.ring.head.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.cached_head) == N {
                return Err(value);
            }
        }
        let slot = &self.ring.slots[self.tail & (N - 1)];
        // SAFETY: the slot is outside [head, tail) (checked above against a head value the
        // consumer published with Release after reading it), so only this producer touches it.
        unsafe { (*slot.get()).write(value) };
        self.tail = self.tail.wrapping_add(1);
        self.ring.tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Free slots (a lower bound while the consumer runs).
    #[inline]
    pub fn free(&mut self) -> usize {
        self.cached_head = self.ring.head.load(Ordering::Acquire);
        N - self.tail.wrapping_sub(self.cached_head)
    }

    /// Capacity in values.
    pub fn capacity(&self) -> usize {
        N
    }
}

impl<T, const N: usize, R: Deref<Target = Ring<T, N>>> Consumer<R> {
    /// Takes the oldest value, or `None` when the ring is empty. Wait-free.
    #[inline]
    pub fn try_pop(&mut self) -> Option<T> {
        if self.head == self.cached_tail {
            self.cached_tail = self.ring.tail.load(Ordering::Acquire);
            if self.head == self.cached_tail {
                return None;
            }
        }
        let slot = &self.ring.slots[self.head & (N - 1)];
        // SAFETY: the slot is inside [head, tail) (tail was published with Release after the
        // write), so it holds an initialised value that only this consumer reads, once.
        let value = unsafe { (*slot.get()).assume_init_read() };
        self.head = self.head.wrapping_add(1);
        self.ring.head.store(self.head, Ordering::Release);
        Some(value)
    }

    /// Values queued (a lower bound while the producer runs).
    #[inline]
    pub fn len(&mut self) -> usize {
        self.cached_tail = self.ring.tail.load(Ordering::Acquire);
        self.cached_tail.wrapping_sub(self.head)
    }

    /// True when nothing is queued (a snapshot).
    #[inline]
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }
}

/// The producing end of a [`channel`].
#[cfg(feature = "std")]
pub type OwnedProducer<T, const N: usize> = Producer<std::sync::Arc<Ring<T, N>>>;
/// The consuming end of a [`channel`].
#[cfg(feature = "std")]
pub type OwnedConsumer<T, const N: usize> = Consumer<std::sync::Arc<Ring<T, N>>>;

/// A heap-allocated ring shared by an owned producer and consumer (feature `std`); both ends
/// are `Send` and can move to their threads.
#[cfg(feature = "std")]
pub fn channel<T, const N: usize>() -> (OwnedProducer<T, N>, OwnedConsumer<T, N>) {
    #[allow(clippy::let_unit_value)]
    let () = Ring::<T, N>::VALID;
    // Built in place: a large ring would not fit on the stack on its way into the Arc.
    let zeroed = std::sync::Arc::<Ring<T, N>>::new_zeroed();
    // SAFETY: all-zero bytes are a valid empty Ring: the atomics are 0 (head == tail) and
    // the slots are MaybeUninit, valid for any bytes.
    let ring = unsafe { zeroed.assume_init() };
    (
        Producer {
            ring: ring.clone(),
            tail: 0,
            cached_head: 0,
        },
        Consumer {
            ring,
            head: 0,
            cached_tail: 0,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_full_and_wraparound() {
        let mut ring: Ring<u64, 4> = Ring::new();
        let (mut tx, mut rx) = ring.split();
        assert_eq!(rx.try_pop(), None);
        for round in 0..10u64 {
            for i in 0..4 {
                tx.try_push(round * 10 + i).unwrap();
            }
            assert_eq!(tx.try_push(99), Err(99));
            assert_eq!(tx.free(), 0);
            for i in 0..4 {
                assert_eq!(rx.try_pop(), Some(round * 10 + i));
            }
            assert_eq!(rx.try_pop(), None);
        }
    }

    #[test]
    fn capacity_one() {
        let mut ring: Ring<u8, 1> = Ring::new();
        let (mut tx, mut rx) = ring.split();
        tx.try_push(1).unwrap();
        assert_eq!(tx.try_push(2), Err(2));
        assert_eq!(rx.try_pop(), Some(1));
        tx.try_push(3).unwrap();
        assert_eq!(rx.try_pop(), Some(3));
    }

    #[cfg(feature = "std")]
    #[test]
    fn drops_queued_values() {
        let value = std::sync::Arc::new(());
        {
            let (mut tx, _rx) = channel::<std::sync::Arc<()>, 8>();
            tx.try_push(value.clone()).unwrap();
            tx.try_push(value.clone()).unwrap();
            assert_eq!(std::sync::Arc::strong_count(&value), 3);
        }
        assert_eq!(std::sync::Arc::strong_count(&value), 1);
    }

    #[cfg(feature = "std")]
    #[test]
    fn two_threads_keep_order() {
        // Boxed values: miri and ThreadSanitizer also check that what a slot points to is
        // published with it. Miri interprets every step: fewer values there, still many laps.
        let (mut tx, mut rx) = channel::<Box<u64>, 64>();
        const COUNT: u64 = if cfg!(miri) { 2_000 } else { 200_000 };
        let producer = std::thread::spawn(move || {
            let mut i = 0;
            let mut next = Box::new(i);
            while i < COUNT {
                match tx.try_push(next) {
                    Ok(()) => {
                        i += 1;
                        next = Box::new(i);
                    }
                    Err(back) => {
                        next = back;
                        std::hint::spin_loop();
                    }
                }
            }
        });
        let mut expect = 0;
        while expect < COUNT {
            if let Some(v) = rx.try_pop() {
                assert_eq!(*v, expect);
                expect += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        producer.join().unwrap();
    }
}
