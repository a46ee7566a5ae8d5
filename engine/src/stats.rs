//! What the kernel workers count, without locks, allocation or syscalls: per-worker
//! cache-padded op counters ([`KernelCounters`]) and a tick histogram per worker
//! ([`WorkerMeter`]) handed to the collector through SPSC rings ([`TickExport`]). The binary's
//! metrics module encodes them; this crate names no metrics library.
//!
//! Ticks are read around a whole job (a batch of ops, run as beats of up to 8 lanes),
//! accumulated over one drain round and recorded as `total ticks / ops` with weight `ops` —
//! never around one op. About every 10 ms of work, or as soon as it goes idle, the worker
//! hands its histogram over through an SPSC ring and takes an empty one back from a second
//! ring (three buffers circulate; when none is free it keeps recording into the one it has,
//! losing nothing).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram as HdrHistogram;
use knhk_kernel::clock;
use knhk_kernel::ring::{self, OwnedConsumer as Consumer, OwnedProducer as Producer};
use knhk_kernel::{Join, Split};

use crate::workers::{Job, NetTable, OpKind, State, Status};

// ------------------------------------------------------------------------------ worker side

/// Op kinds, in `OpKind` order (label `op`); saves and restores (6, 7) are not counted.
pub const OP_NAMES: [&str; 11] = [
    "create_case",
    "start",
    "complete",
    "fire",
    "cancel_task",
    "cancel_case",
    "save",
    "restore",
    "start_instance",
    "complete_instance",
    "add_instance",
];
/// Statuses, in `Status` order (label `status`).
pub const STATUS_NAMES: [&str; 15] = [
    "ok",
    "no_case",
    "no_workflow",
    "not_enabled",
    "not_started",
    "safety_violation",
    "case_complete",
    "bad_task",
    "refused",
    "stopped",
    "mi_task",
    "not_mi_task",
    "bad_instance",
    "mi_limit",
    "mi_window",
];
const JOINS: [&str; 4] = ["and", "xor", "or", "discriminator"];
const SPLITS: [&str; 3] = ["and", "xor", "or"];
/// Pattern index of case-level ops (create, cancel case).
pub const PATTERN_CASE: usize = 12;
/// Pattern index of ops refused before a task could be named (unknown case or workflow).
pub const PATTERN_UNKNOWN: usize = 13;
pub const PATTERNS: usize = 14;
pub const EVENT_CELLS: usize = OP_NAMES.len() * PATTERNS * STATUS_NAMES.len();

/// The label value of pattern `p`: `"<join>_join+<split>_split"` for task ops, `"case"` for
/// create/cancel case, `"unknown"` when the op was refused before its task was known.
pub fn pattern_name(p: usize) -> String {
    match p {
        PATTERN_CASE => "case".to_string(),
        PATTERN_UNKNOWN => "unknown".to_string(),
        _ => format!("{}_join+{}_split", JOINS[p / 3 % 4], SPLITS[p % 3]),
    }
}

fn join_index(j: Join) -> usize {
    match j {
        Join::And => 0,
        Join::Xor => 1,
        Join::Or => 2,
        Join::Discriminator => 3,
    }
}

fn split_index(s: Split) -> usize {
    match s {
        Split::And => 0,
        Split::Xor => 1,
        Split::Or => 2,
    }
}

/// Counters one worker writes (and only it: relaxed load + store, no locked instruction) and
/// anyone reads. Cache-padded; part of [`crate::workers::WorkerStats`].
#[repr(align(128))]
pub struct KernelCounters {
    /// Ops by (op kind, pattern, status).
    events: [AtomicU64; EVENT_CELLS],
    /// Cases created (creation ops that succeeded).
    pub cases_created: AtomicU64,
    /// Cases an op completed (output condition marked, or implicit termination).
    pub cases_completed: AtomicU64,
    /// Cases an op cancelled.
    pub cases_cancelled: AtomicU64,
    /// Cases an op left deadlocked (tokens, nothing enabled, nothing busy).
    pub cases_deadlocked: AtomicU64,
}

impl Default for KernelCounters {
    fn default() -> Self {
        KernelCounters {
            events: std::array::from_fn(|_| AtomicU64::new(0)),
            cases_created: AtomicU64::new(0),
            cases_completed: AtomicU64::new(0),
            cases_cancelled: AtomicU64::new(0),
            cases_deadlocked: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for KernelCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelCounters")
            .field("events", &self.events_total())
            .field("cases_created", &self.cases_created)
            .field("cases_completed", &self.cases_completed)
            .finish_non_exhaustive()
    }
}

#[inline]
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl KernelCounters {
    /// Counts the ops of an executed job. Worker thread only.
    #[inline]
    fn count(&self, job: &Job, nets: &NetTable, workflows: &[u16]) {
        for (op, o) in job.ops.iter().zip(job.out.iter()) {
            if matches!(op.kind, OpKind::Save | OpKind::Restore) {
                // Checkpoint traffic, not events: a saved completed case completes nothing.
                continue;
            }
            let pattern = match op.kind {
                OpKind::Create | OpKind::CancelCase => PATTERN_CASE,
                _ => workflows
                    .get(op.slot as usize)
                    .and_then(|&wf| nets.get(usize::from(wf)))
                    .and_then(|s| s.get())
                    .and_then(|net| net.task(u32::from(op.task)))
                    .map_or(PATTERN_UNKNOWN, |t| {
                        join_index(t.join()) * 3 + split_index(t.split())
                    }),
            };
            let pattern = if matches!(o.status, Status::NoCase | Status::NoWorkflow) {
                PATTERN_UNKNOWN
            } else {
                pattern
            };
            let cell = ((op.kind as usize) * PATTERNS + pattern) * STATUS_NAMES.len()
                + (o.status as usize).min(STATUS_NAMES.len() - 1);
            if let Some(c) = self.events.get(cell) {
                bump(c, 1);
            }
            if o.status == Status::Ok {
                if op.kind == OpKind::Create {
                    bump(&self.cases_created, 1);
                }
                // A successful op on a terminal or deadlocked case is refused, so an op that
                // succeeded and left the case in one of these states is the one that put it there.
                match o.state {
                    State::Running => {}
                    State::Complete => bump(&self.cases_completed, 1),
                    State::Cancelled => bump(&self.cases_cancelled, 1),
                    State::Deadlocked => bump(&self.cases_deadlocked, 1),
                }
            }
        }
    }

    /// Ops counted for (op, pattern, status) cell `i`.
    pub fn cell(&self, i: usize) -> u64 {
        self.events.get(i).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Every op this worker executed.
    pub fn events_total(&self) -> u64 {
        self.events.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Highest ticks-per-op value the histogram resolves (larger values saturate to it).
const TICKS_MAX: u64 = 1 << 24;
/// Significant figures of the tick histograms (relative error ≤ 1%).
const TICKS_SIGFIG: u8 = 2;
/// Publish about every 2^25 ticks of wall time (≈ 10 ms at 3 GHz) while busy.
const PUBLISH_TICKS: u64 = 1 << 25;
/// Histogram buffers in circulation per worker: one recording, the rest in flight or spare.
const BUFFERS: usize = 3;
const RING: usize = 4;

/// One published delta: ticks per op (weighted by ops) and the exact tick sum.
#[derive(Debug)]
pub struct TickSnapshot {
    hist: HdrHistogram<u64>,
    /// Sum of kernel ticks over the recorded ops.
    sum: u64,
}

impl TickSnapshot {
    fn new() -> TickSnapshot {
        let mut hist = HdrHistogram::new_with_bounds(1, TICKS_MAX, TICKS_SIGFIG)
            .unwrap_or_else(|_| HdrHistogram::new(TICKS_SIGFIG).unwrap_or_else(|_| unreachable()));
        // Never resize on the worker: out-of-range values saturate instead.
        hist.auto(false);
        TickSnapshot { hist, sum: 0 }
    }

    fn reset(&mut self) {
        self.hist.reset();
        self.sum = 0;
    }
}

#[cold]
fn unreachable() -> ! {
    // new(2) only fails for sigfig > 5.
    std::process::abort()
}

/// The worker's meter: owned by the worker thread, never shared.
pub struct WorkerMeter {
    current: Box<TickSnapshot>,
    full: Producer<Box<TickSnapshot>, RING>,
    empty: Consumer<Box<TickSnapshot>, RING>,
    round_ticks: u64,
    round_ops: u64,
    last_publish: u64,
    dirty: bool,
}

impl std::fmt::Debug for WorkerMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerMeter").finish_non_exhaustive()
    }
}

/// The shell's end of one worker's tick histograms: lives in
/// [`crate::workers::WorkerStats::ticks`], read on scrape.
#[derive(Default)]
pub struct TickExport {
    inner: Mutex<Option<TickCollector>>,
}

impl std::fmt::Debug for TickExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TickExport").finish_non_exhaustive()
    }
}

struct TickCollector {
    full: Consumer<Box<TickSnapshot>, RING>,
    empty: Producer<Box<TickSnapshot>, RING>,
    total: TickSnapshot,
}

/// A meter for a new worker and the export end the shell keeps (all buffers allocated here,
/// before the worker starts).
pub fn worker_meter() -> (WorkerMeter, TickCollectorEnd) {
    let (full_tx, full_rx) = ring::channel::<Box<TickSnapshot>, RING>();
    let (mut empty_tx, empty_rx) = ring::channel::<Box<TickSnapshot>, RING>();
    for _ in 1..BUFFERS {
        let _ = empty_tx.try_push(Box::new(TickSnapshot::new()));
    }
    let meter = WorkerMeter {
        current: Box::new(TickSnapshot::new()),
        full: full_tx,
        empty: empty_rx,
        round_ticks: 0,
        round_ops: 0,
        last_publish: clock::ticks(),
        dirty: false,
    };
    let end = TickCollectorEnd(TickCollector {
        full: full_rx,
        empty: empty_tx,
        total: TickSnapshot::new(),
    });
    (meter, end)
}

/// The shell's end of [`worker_meter`], to [`TickExport::install`].
pub struct TickCollectorEnd(TickCollector);

impl WorkerMeter {
    /// After one job: `t0` is the tick count read before `execute`. Counts the job's ops and
    /// adds its kernel ticks to the round. Worker thread only.
    #[inline]
    pub fn job(
        &mut self,
        t0: u64,
        job: &Job,
        counters: &KernelCounters,
        nets: &NetTable,
        workflows: &[u16],
    ) {
        let t1 = clock::ticks();
        self.round_ticks = self.round_ticks.wrapping_add(t1.wrapping_sub(t0));
        self.round_ops += job.ops.len() as u64;
        counters.count(job, nets, workflows);
    }

    /// At the end of a drain round: records the round's ticks per op, weighted by its ops,
    /// and publishes when due.
    #[inline]
    pub fn end_round(&mut self) {
        if self.round_ops == 0 {
            return;
        }
        let per_op = (self.round_ticks / self.round_ops).max(1);
        self.current
            .hist
            .saturating_record_n(per_op, self.round_ops);
        self.current.sum = self.current.sum.wrapping_add(self.round_ticks);
        self.round_ticks = 0;
        self.round_ops = 0;
        self.dirty = true;
        let now = clock::ticks();
        if now.wrapping_sub(self.last_publish) >= PUBLISH_TICKS {
            self.publish(now);
        }
    }

    /// When the worker finds nothing to do: publish what is pending.
    #[inline]
    pub fn idle(&mut self) {
        if self.dirty {
            self.publish(clock::ticks());
        }
    }

    fn publish(&mut self, now: u64) {
        // Only BUFFERS (< RING) buffers exist, so the full ring always has room; check anyway
        // rather than risk dropping (freeing) a buffer on the worker.
        if self.full.free() == 0 {
            return;
        }
        // Take a spare first: with none free, keep recording into the current buffer.
        let Some(spare) = self.empty.try_pop() else {
            return;
        };
        let full = std::mem::replace(&mut self.current, spare);
        if let Err(back) = self.full.try_push(full) {
            // Unreachable (checked above): put the data back and keep the spare for later.
            let spare = std::mem::replace(&mut self.current, back);
            std::mem::forget(spare);
            return;
        }
        self.last_publish = now;
        self.dirty = false;
    }
}

impl TickExport {
    /// Installs the shell's end (once, when the worker is spawned).
    pub fn install(&self, end: TickCollectorEnd) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = Some(end.0);
    }

    /// Drains what the worker published and returns (sum of ticks, ops, cumulative counts at
    /// each bound of `bounds`).
    pub fn collect(&self, bounds: &[u64]) -> Option<(u64, u64, Vec<u64>)> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let c = guard.as_mut()?;
        while let Some(mut snap) = c.full.try_pop() {
            let _ = c.total.hist.add(&snap.hist);
            c.total.sum = c.total.sum.wrapping_add(snap.sum);
            snap.reset();
            let _ = c.empty.try_push(snap);
        }
        let h = &c.total.hist;
        let counts = bounds
            .iter()
            .map(|&b| {
                if h.is_empty() {
                    0
                } else {
                    h.count_between(0, b)
                }
            })
            .collect();
        Some((c.total.sum, h.len(), counts))
    }

    /// Takes what the worker published into the cumulative histogram and hands the buffers
    /// back, so that the worker always has a spare (the probes' watchdog calls this).
    pub fn drain(&self) {
        let _ = self.collect(&[]);
    }

    /// The p-quantile of ticks per op so far (drains pending deltas first).
    pub fn quantile(&self, q: f64) -> Option<u64> {
        self.collect(&[])?;
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let c = guard.as_ref()?;
        (!c.total.hist.is_empty()).then(|| c.total.hist.value_at_quantile(q))
    }
}
