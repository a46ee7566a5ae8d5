//! The worker handoff: one event through the SPSC ring (`knhk_kernel::ring::channel`) from a
//! producer thread to a consumer thread, each pinned to its own core. One-way latency is
//! `consumer's counter read after the pop - producer's counter read before the push` (the
//! TSC is constant and synchronised across cores); only one event is in flight at a time so
//! no queueing is measured. The path is two atomics and a slot: no mutex, no syscall.
#![allow(dead_code)]
use knhk_kernel::clock::ticks_fenced;
use knhk_kernel::ring::channel;
use knhk_kernel::Event;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One-way latencies in ticks, sorted.
pub struct Latencies {
    pub sorted: Vec<u64>,
    pub pinned: bool,
}

impl Latencies {
    pub fn pct(&self, p: f64) -> u64 {
        let n = self.sorted.len();
        self.sorted[((n as f64 - 1.0) * p).round() as usize]
    }
}

#[repr(align(128))]
struct Ack(AtomicU64);

/// Sends `n` events one at a time and returns the one-way latencies.
pub fn measure(cores: &[core_affinity::CoreId], n: usize) -> Latencies {
    let (mut tx, mut rx) = channel::<(u64, Event), 1024>();
    let ack = Arc::new(Ack(AtomicU64::new(0)));
    let pinned = cores.len() >= 2;
    let (pc, cc) = if pinned {
        (Some(cores[0]), Some(cores[1]))
    } else {
        (None, None)
    };
    let ack2 = ack.clone();
    let consumer = std::thread::spawn(move || {
        if let Some(c) = cc {
            core_affinity::set_for_current(c);
        }
        let mut lat = Vec::with_capacity(n);
        while lat.len() < n {
            if let Some((stamp, ev)) = rx.try_pop() {
                let now = ticks_fenced();
                std::hint::black_box(ev);
                lat.push(now.wrapping_sub(stamp));
                ack2.0.store(lat.len() as u64, Ordering::Release);
            } else {
                std::hint::spin_loop();
            }
        }
        lat
    });
    let producer = std::thread::spawn(move || {
        if let Some(c) = pc {
            core_affinity::set_for_current(c);
        }
        let ev = Event::new(0, knhk_kernel::Op::Fire, 0);
        for i in 0..n as u64 {
            while ack.0.load(Ordering::Acquire) < i {
                std::hint::spin_loop();
            }
            // a short pause so the consumer is back to spinning on an empty ring
            for _ in 0..32 {
                std::hint::spin_loop();
            }
            let stamp = ticks_fenced();
            if tx.try_push((stamp, ev)).is_err() {
                unreachable!("one event in flight never fills the ring");
            }
        }
    });
    producer.join().expect("producer");
    let mut sorted = consumer.join().expect("consumer");
    sorted.sort_unstable();
    Latencies { sorted, pinned }
}
