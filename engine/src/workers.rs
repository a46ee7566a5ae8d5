//! Kernel workers: OS threads, pinned to cores, each owning a shard of the cases.
//!
//! ```text
//!  tokio tasks ──try_push(Box<Job>)──▶ [SPSC ring in] ──▶ worker thread (pinned)
//!        ▲                                                   │ beats of ≤ 8 lanes
//!        │ oneshot per job                                    ▼
//!  reply thread ◀──────────────── [SPSC ring out] ◀──── Box<Job> with outcomes
//!  (history, watchers, journal hook)
//! ```
//!
//! Contract of a worker thread: it never allocates, locks or blocks. Everything it touches was
//! allocated before it started (the case array, the ids, the workflow table) or arrives in a
//! [`Job`] whose vectors the submitter sized (`out` has one slot per op). A job goes back out
//! through the out ring unchanged in size; the worker never drops one. When the out ring is
//! full the worker keeps the one job it could not hand back and stops taking input until it
//! can: the in ring then fills and submitters see [`SubmitError::Full`], which the server
//! answers with RESOURCE_EXHAUSTED.
//!
//! Idle policy ([`Backoff`]): spin (`spin_loop` hints) for 50 µs after the last work, then
//! `yield_now` until 1 ms, then `park_timeout` with a timeout that doubles from 50 µs to 1 ms. A
//! submitter that pushes while the worker is parked unparks it (one futex wake, only then).
//!
//! Every worker publishes [`WorkerStats`]: a heartbeat bumped each loop and per-core counters,
//! read by health probes and metrics without touching the worker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use knhk_kernel::ring::{self, OwnedConsumer as Consumer, OwnedProducer as Producer};
use knhk_kernel::{Case, CaseState, Net};

use crate::exec;
use crate::park::{self, Parker, Unparker};

/// Capacity of each ring, in jobs (a job is one unary request or one bulk batch per shard).
pub const RING_CAPACITY: usize = 1024;
/// Maximum number of registered workflows (the worker's net table is preallocated).
pub const MAX_WORKFLOWS: usize = 4096;
/// Registers per case (the kernel's `REGISTERS`, from libknhk's header).
pub use knhk_kernel::REGISTERS;

/// Worker idle policy: spin this long after the last work, then yield until `IDLE_YIELD`, then
/// park (timeouts doubling from `PARK_MIN` to `PARK_MAX`).
const WORKER_SPIN: Duration = Duration::from_micros(50);
const IDLE_YIELD: Duration = Duration::from_millis(1);
const PARK_MIN: Duration = Duration::from_micros(50);
const PARK_MAX: Duration = Duration::from_millis(1);

/// What an idle loop should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStep {
    Spin,
    Yield,
    /// Set the parked flag, re-check for work, then park this long.
    Park(Duration),
}

/// Bounded backoff of an idle polling thread (workers and reply threads): spin for `spin`
/// after the last work (a request that follows within it is picked up without any wake-up),
/// then `yield_now` until `yield_until`, then park with a timeout doubling from 50 µs to 1 ms
/// (the producer wakes a parked thread through [`crate::park`], which misses no wake-up; the
/// timeout only bounds how long a parked thread sleeps before it re-checks). The clock is read
/// once per 32 idle polls.
#[derive(Debug)]
pub struct Backoff {
    spin: Duration,
    yield_until: Duration,
    polls: u32,
    since: Option<std::time::Instant>,
    elapsed: Duration,
    park: Duration,
}

impl Backoff {
    pub fn new(spin: Duration, yield_until: Duration) -> Backoff {
        Backoff {
            spin,
            yield_until,
            polls: 0,
            since: None,
            elapsed: Duration::ZERO,
            park: PARK_MIN,
        }
    }

    /// Work was found: start over.
    #[inline]
    pub fn reset(&mut self) {
        self.polls = 0;
        self.since = None;
        self.elapsed = Duration::ZERO;
        self.park = PARK_MIN;
    }

    /// One idle poll: what to do now.
    #[inline]
    pub fn idle(&mut self) -> IdleStep {
        self.polls = self.polls.wrapping_add(1);
        if self.polls % 32 == 1 {
            let now = std::time::Instant::now();
            let since = *self.since.get_or_insert(now);
            self.elapsed = now.duration_since(since);
        }
        if self.elapsed < self.spin {
            IdleStep::Spin
        } else if self.elapsed < self.yield_until {
            IdleStep::Yield
        } else {
            let p = self.park;
            self.park = (self.park * 2).min(PARK_MAX);
            IdleStep::Park(p)
        }
    }
}

/// What an op asks the worker to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpKind {
    /// Initialise the slot as a new case of `workflow`; registers from `data` when given.
    Create = 0,
    Start = 1,
    Complete = 2,
    Fire = 3,
    CancelTask = 4,
    CancelCase = 5,
    /// Checkpoint: save the slot's case into `job.saved[data]` (the worker writes its kernel
    /// bytes, the reply thread what the server knows of it). Changes nothing.
    Save = 6,
    /// Replay: put the case saved in `job.saved[data]` into the slot, as case `case_id` of
    /// `workflow` (the reply thread installs its history and data).
    Restore = 7,
    /// Start instance `instance` of a multiple-instance task.
    StartInstance = 8,
    /// Complete instance `instance` of a multiple-instance task (data and branch bits as
    /// Complete); the task completes with it at its threshold.
    CompleteInstance = 9,
    /// Add an instance to a running dynamic multiple-instance task (its id in the outcome).
    AddInstance = 10,
}

impl OpKind {
    /// Ops on one instance of a multiple-instance task (they run alone, never in a beat).
    pub fn is_instance_op(self) -> bool {
        matches!(
            self,
            OpKind::StartInstance | OpKind::CompleteInstance | OpKind::AddInstance
        )
    }
}

/// Op flag: `branch_bits` replaces guard evaluation (KNHK_EVENT_USE_BITS).
pub const OP_USE_BITS: u8 = 1;
/// Op flag: a Start of a multiple-instance task creates `instance` instances (the caller's
/// count) instead of the task's count register or minimum.
pub const OP_COUNT: u8 = 2;
/// Op flag: refuse the op ([`Status::SeqMismatch`], the case unchanged) unless the case's
/// sequence number (mod 2^32) is `expect_seq`: a retried op that already took effect is never
/// applied twice.
pub const OP_EXPECT_SEQ: u8 = 4;
/// Op flag: the op is a task timer's expiry (a Fire skips the enabled task, a Complete ends the
/// started one): its events say so ([`crate::command::Lifecycle::TimerSkip`],
/// [`crate::command::Lifecycle::TimerComplete`]). The worker ignores it.
pub const OP_TIMER: u8 = 8;

/// One operation of a job. 48 bytes, `Copy`.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// The case id the op is for: the worker refuses it (NotFound) when the slot holds another.
    pub case_id: u64,
    /// Slot in the shard.
    pub slot: u32,
    /// Create: the workflow index. Other ops ignore it (the slot knows its workflow).
    pub workflow: u16,
    pub kind: OpKind,
    pub task: u8,
    pub flags: u8,
    /// Bit r set: write `job.data[data][r]` to register r before the op (Create, Complete, Fire).
    pub reg_mask: u8,
    pub branch_bits: u32,
    /// Index into `job.data` (meaningful when `reg_mask != 0`).
    pub data: u32,
    /// Instance ops: the instance; a Start with [`OP_COUNT`]: the instance count.
    pub instance: u32,
    /// With [`OP_EXPECT_SEQ`]: the case sequence number (mod 2^32) the op expects.
    pub expect_seq: u32,
    /// Create of a sub-net case: the parent case (0: none); `task` is then the parent's
    /// composite task the child runs for, and `instance` its instance (a multiple-instance
    /// task) or [`crate::command::NO_INSTANCE`]. The worker ignores them; the book and the log
    /// keep them ([`ParentLink`]).
    pub parent: u64,
}

impl Op {
    /// An op without data or branch bits.
    pub fn new(kind: OpKind, case_id: u64, slot: u32, task: u8) -> Op {
        Op {
            case_id,
            slot,
            workflow: 0,
            kind,
            task,
            flags: 0,
            reg_mask: 0,
            branch_bits: 0,
            data: 0,
            instance: 0,
            expect_seq: 0,
            parent: 0,
        }
    }
}

/// A sub-net case's link to its parent: the parent case, its composite task and, for a
/// multiple-instance composite task, the instance the child runs
/// ([`crate::command::NO_INSTANCE`] otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParentLink {
    pub case: u64,
    pub task: u8,
    pub instance: u32,
}

impl ParentLink {
    /// The link a Create op carries, if it creates a sub-net case.
    pub fn of_create(op: &Op) -> Option<ParentLink> {
        (op.kind == OpKind::Create && op.parent != 0).then_some(ParentLink {
            case: op.parent,
            task: op.task,
            instance: op.instance,
        })
    }
}

/// Result of one op, as the worker saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Status {
    #[default]
    Ok = 0,
    /// The slot does not hold this case (evicted, or never existed).
    NoCase = 1,
    /// The workflow index is not loaded.
    NoWorkflow = 2,
    NotEnabled = 3,
    NotStarted = 4,
    SafetyViolation = 5,
    CaseComplete = 6,
    BadTask = 7,
    /// Anything else the kernel refused (bad argument, unsealed net).
    Refused = 8,
    /// Not executed: the worker was stopping.
    Stopped = 9,
    /// Complete or fire of a multiple-instance task (its instances complete one by one).
    MiTask = 10,
    /// An instance op on a task that is not multiple-instance.
    NotMiTask = 11,
    /// No such instance in the state the op needs.
    BadInstance = 12,
    /// An instance count outside the task's minimum and maximum, or an add past the maximum
    /// (or to a task that creates statically).
    MiLimit = 13,
    /// An instance start 64 or more past the task's oldest unfinished instance.
    MiWindow = 14,
    /// Not executed: the case's sequence number is not the one the op expected
    /// ([`OP_EXPECT_SEQ`]); the outcome carries the current one.
    SeqMismatch = 15,
}

/// Life state of a case (mirrors the kernel's `CaseState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum State {
    #[default]
    Running = 0,
    Complete = 1,
    Deadlocked = 2,
    Cancelled = 3,
}

impl From<CaseState> for State {
    fn from(s: CaseState) -> State {
        match s {
            CaseState::Running => State::Running,
            CaseState::Complete => State::Complete,
            CaseState::Deadlocked => State::Deadlocked,
            CaseState::Cancelled => State::Cancelled,
        }
    }
}

/// What one op did: the status and the case's state before and after (equal when refused).
/// The reply thread derives lifecycle events from the before/after sets.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    pub status: Status,
    pub state: State,
    /// Case flags after (KNHK_FLAG_*).
    pub flags: u32,
    pub seq: u64,
    pub marking: u64,
    pub busy_before: u64,
    pub busy: u64,
    pub enabled_before: u64,
    pub enabled: u64,
    /// Instance ops: the instance (an add: the new one); a Start with a count: the count.
    pub instance: u32,
    /// Multiple-instance tasks with live instances after the op, and their instances (the
    /// first `mi_live.count_ones()` entries, in task order).
    pub mi_live: u64,
    pub mi: [(u8, knhk_kernel::Instances); knhk_kernel::MAX_MI_TASKS],
}

impl Outcome {
    /// The live instances of task `t` after the op.
    pub fn instances(&self, t: u8) -> Option<&knhk_kernel::Instances> {
        let n = self.mi_live.count_ones() as usize;
        self.mi
            .iter()
            .take(n)
            .find(|(task, _)| *task == t)
            .map(|(_, i)| i)
    }
}

/// A case as a checkpoint holds it ([`OpKind::Save`], [`OpKind::Restore`]): the kernel's saved
/// bytes (written and read by the worker) and what the reply thread's book knows of it.
#[derive(Debug, Clone)]
pub struct SavedCase {
    /// [`Case::save`]'s encoding: marking, busy set, side words, registers, seq, state, MI
    /// slots. [`knhk_kernel::CASE_BYTES`] long when saved here; a checkpoint of an older log may
    /// hold an earlier format (144 bytes, format 1), which restore still reads. Allocated with
    /// the job, so the worker writes into it without allocating.
    pub bytes: Vec<u8>,
    pub created_ns: u64,
    /// The case's data as the server reports it.
    pub regs: [i64; REGISTERS],
    /// Completed or cancelled (evictable).
    pub terminal: bool,
    pub history: Vec<crate::command::Hist>,
    /// Events dropped from the front of `history` (the engine's history limit).
    pub history_dropped: u64,
    /// The case's armed timers.
    pub timers: Vec<crate::engine::ArmedTimer>,
    /// A sub-net case: its link to its parent.
    pub parent: Option<ParentLink>,
}

impl Default for SavedCase {
    fn default() -> SavedCase {
        SavedCase {
            bytes: vec![0; knhk_kernel::CASE_BYTES],
            created_ns: 0,
            regs: [0; REGISTERS],
            terminal: false,
            history: Vec::new(),
            history_dropped: 0,
            timers: Vec::new(),
            parent: None,
        }
    }
}

/// Where a job's reply goes once the reply thread is done with it.
pub type ReplyTx = tokio::sync::oneshot::Sender<Box<Job>>;

/// A unit of work for one shard: a unary request (one op) or a bulk batch's share.
#[derive(Debug, Default)]
pub struct Job {
    pub ops: Vec<Op>,
    /// One outcome per op, sized by the submitter (`Job::new`), filled by the worker.
    pub out: Vec<Outcome>,
    /// Register payloads referenced by ops.
    pub data: Vec<[i64; REGISTERS]>,
    /// Saved cases referenced by Save and Restore ops (sized by the submitter).
    pub saved: Vec<SavedCase>,
    /// Completed by the reply thread (or by the batch hook).
    pub reply: Option<ReplyTx>,
    /// When the job's events happened (ns since the Unix epoch): stamped by the reply thread
    /// when 0; a replayed job carries its logged time.
    pub time_ns: u64,
    /// Called by the reply thread once the job has executed, before the batch hook (the event
    /// log) takes it: what a caller must do while the job's records are not yet durable.
    pub on_executed: OnExecuted,
    /// The events the job's ops produced, in order, filled by the reply thread only while the
    /// event log's exporters want them ([`crate::engine::Engine::set_export_events`]): the log
    /// writes them next to the job's ops, where exporters read them.
    pub exported: Vec<crate::engine::WatchItem>,
}

/// A callback the reply thread calls with an executed job.
pub type JobCallback = Box<dyn FnOnce(&Job) + Send>;

/// A job's [`Job::on_executed`] callback, if it has one.
#[derive(Default)]
pub struct OnExecuted(pub Option<JobCallback>);

impl std::fmt::Debug for OnExecuted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

impl Job {
    /// A job for `ops`, with its outcome vector sized.
    pub fn new(ops: Vec<Op>, data: Vec<[i64; REGISTERS]>) -> Box<Job> {
        let out = vec![Outcome::default(); ops.len()];
        Box::new(Job {
            ops,
            out,
            data,
            saved: Vec::new(),
            reply: None,
            time_ns: 0,
            on_executed: OnExecuted(None),
            exported: Vec::new(),
        })
    }

    /// Hands the job back to whoever submitted it. Called once, by the reply thread or the
    /// batch hook.
    pub fn release(mut self: Box<Self>) {
        if let Some(tx) = self.reply.take() {
            // The submitter may have gone (client cancelled): nothing to do then.
            let _ = tx.send(self);
        }
    }
}

/// Counters of one worker, cache-padded. Written by the worker only (relaxed stores), read by
/// anyone.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerStats {
    /// Bumped every loop iteration, idle or not: liveness that actually moves.
    pub heartbeat: AtomicU64,
    /// Jobs executed.
    pub jobs: AtomicU64,
    /// Ops executed (any status).
    pub ops: AtomicU64,
    /// Ops refused by the kernel or the shard (status != Ok).
    pub refused: AtomicU64,
    /// Kernel beats run.
    pub beats: AtomicU64,
    /// Times the worker parked.
    pub parks: AtomicU64,
    /// Times the worker found the out ring full and had to hold a reply.
    pub out_full: AtomicU64,
    /// Submissions refused because the in ring was full (written by submitters).
    pub in_full: AtomicU64,
    /// The core the worker is pinned to, or u64::MAX when pinning failed or was off.
    pub core: AtomicU64,
    /// Ops by kind, task pattern and status, and case outcomes (metrics.rs).
    pub kernel: crate::stats::KernelCounters,
    /// The shell's end of the worker's ticks-per-op histograms (metrics.rs).
    pub ticks: crate::stats::TickExport,
    /// Test switch (read only with the `testing` feature): while set, an idle worker stops
    /// its heartbeat and takes no input, as a wedged worker would (liveness must then fail).
    pub wedge: AtomicBool,
}

/// The table of compiled nets, shared read-only with the workers: a slot is written once, at
/// registration, before any job names it.
pub type NetTable = Arc<[OnceLock<Arc<Net>>]>;

/// A fresh, empty net table.
pub fn net_table() -> NetTable {
    (0..MAX_WORKFLOWS)
        .map(|_| OnceLock::new())
        .collect::<Vec<_>>()
        .into()
}

/// Why a job was not queued.
#[derive(Debug)]
pub enum SubmitError {
    /// The in ring is full: back-pressure. The job comes back.
    Full(Box<Job>),
    /// The worker has stopped.
    Stopped(Box<Job>),
}

/// The submitting side of one worker: shared by tokio tasks (the SPSC producer is behind a
/// short mutex on this side; the worker itself never locks).
pub struct WorkerHandle {
    producer: Mutex<Producer<Box<Job>, RING_CAPACITY>>,
    /// Wakes the worker after a push, a stop or a hold change ([`crate::park`]).
    worker: Unparker,
    stopping: Arc<AtomicBool>,
    #[cfg(feature = "testing")]
    hold: Arc<AtomicBool>,
    pub stats: Arc<WorkerStats>,
    join: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// Queues a job. Never blocks beyond the producer mutex (held for one `try_push`).
    pub fn submit(&self, job: Box<Job>) -> Result<(), SubmitError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(SubmitError::Stopped(job));
        }
        let pushed = match self.producer.lock() {
            Ok(mut p) => p.try_push(job),
            Err(poisoned) => poisoned.into_inner().try_push(job),
        };
        match pushed {
            Ok(()) => {
                self.worker.wake();
                Ok(())
            }
            Err(job) => {
                self.stats.in_full.fetch_add(1, Ordering::Relaxed);
                Err(SubmitError::Full(job))
            }
        }
    }

    /// Asks the worker to stop once its in ring is empty, and waits for the thread.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.worker.wake();
        let handle = match self.join.lock() {
            Ok(mut j) => j.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// Maintenance switch: while held, the worker takes no input (its ring fills and
    /// submitters get back-pressure). Used to test back-pressure and to quiesce a shard.
    #[cfg(feature = "testing")]
    pub fn set_hold(&self, hold: bool) {
        self.hold.store(hold, Ordering::SeqCst);
        self.worker.wake();
    }

    /// Jobs waiting in the in ring (takes the producer mutex for one load).
    pub fn queued(&self) -> usize {
        let free = match self.producer.lock() {
            Ok(mut p) => p.free(),
            Err(poisoned) => poisoned.into_inner().free(),
        };
        RING_CAPACITY.saturating_sub(free)
    }

    /// True once `stop` was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// The receiving side of one worker's replies, for the reply thread.
pub struct ReplyPort {
    pub consumer: Consumer<Box<Job>, RING_CAPACITY>,
    /// The reply thread parks through this; the worker wakes it after pushing.
    pub parker: Parker,
    /// Set by the worker when it has exited: the reply thread drains and exits too.
    pub worker_done: Arc<AtomicBool>,
}

/// Everything needed to start one worker.
pub struct WorkerSpec {
    pub index: usize,
    pub capacity: usize,
    pub core: Option<core_affinity::CoreId>,
    pub nets: NetTable,
}

/// Starts one worker thread. The reply thread that takes the [`ReplyPort`] may start later:
/// its parker registers whichever thread parks on it.
pub fn spawn(spec: WorkerSpec) -> std::io::Result<(WorkerHandle, ReplyPort)> {
    let (in_tx, in_rx) = ring::channel::<Box<Job>, RING_CAPACITY>();
    let (out_tx, out_rx) = ring::channel::<Box<Job>, RING_CAPACITY>();
    let stats = Arc::new(WorkerStats::default());
    stats.core.store(u64::MAX, Ordering::Relaxed);
    let (meter, tick_export) = crate::stats::worker_meter();
    stats.ticks.install(tick_export);
    let (worker_parker, worker_unparker) = park::pair();
    let stopping = Arc::new(AtomicBool::new(false));
    #[cfg(feature = "testing")]
    let hold = Arc::new(AtomicBool::new(false));
    let (reply_parker, reply_unparker) = park::pair();
    let worker_done = Arc::new(AtomicBool::new(false));

    // Preallocate the shard before the thread starts: the thread never allocates.
    let shard = Shard::new(spec.capacity).ok_or_else(|| {
        std::io::Error::other("libknhk refused the placeholder net used for empty case slots")
    })?;
    let mut worker = Worker {
        input: in_rx,
        output: out_tx,
        held: None,
        shard,
        nets: spec.nets,
        stats: stats.clone(),
        parker: worker_parker,
        stopping: stopping.clone(),
        #[cfg(feature = "testing")]
        hold: hold.clone(),
        reply: reply_unparker,
        done: worker_done.clone(),
        meter,
    };
    let core = spec.core;
    let join = thread::Builder::new()
        .name(format!("knhk-worker-{}", spec.index))
        .spawn(move || {
            if let Some(core) = core {
                if core_affinity::set_for_current(core) {
                    worker.stats.core.store(core.id as u64, Ordering::Relaxed);
                }
            }
            worker.run();
        })?;
    let handle = WorkerHandle {
        producer: Mutex::new(in_tx),
        worker: worker_unparker,
        stopping,
        #[cfg(feature = "testing")]
        hold,
        stats,
        join: Mutex::new(Some(join)),
    };
    let port = ReplyPort {
        consumer: out_rx,
        parker: reply_parker,
        worker_done,
    };
    Ok((handle, port))
}

/// The cases of one shard, in preallocated, cache-aligned storage (`Case` is 64-byte aligned).
struct Shard {
    cases: Vec<Case>,
    /// The case id each slot holds (0: empty).
    ids: Vec<u64>,
    /// The workflow index of each slot.
    workflows: Vec<u16>,
}

impl Shard {
    fn new(capacity: usize) -> Option<Shard> {
        let empty = exec::empty_case()?;
        Some(Shard {
            cases: vec![empty; capacity],
            ids: vec![0; capacity],
            workflows: vec![0; capacity],
        })
    }
}

struct Worker {
    input: Consumer<Box<Job>, RING_CAPACITY>,
    output: Producer<Box<Job>, RING_CAPACITY>,
    /// A reply the out ring had no room for; no input is taken while it is held.
    held: Option<Box<Job>>,
    shard: Shard,
    nets: NetTable,
    stats: Arc<WorkerStats>,
    /// The worker parks through this; submitters hold its unparker.
    parker: Parker,
    stopping: Arc<AtomicBool>,
    #[cfg(feature = "testing")]
    hold: Arc<AtomicBool>,
    /// Wakes the reply thread after a push to the out ring, or when the worker is done.
    reply: Unparker,
    done: Arc<AtomicBool>,
    meter: crate::stats::WorkerMeter,
}

impl Worker {
    /// Held by the `testing` feature's switch ([`WorkerHandle::set_hold`]); without the
    /// feature this is a constant and the checks fold away.
    #[inline(always)]
    fn held_by_test(&self) -> bool {
        #[cfg(feature = "testing")]
        return self.hold.load(Ordering::Relaxed);
        #[cfg(not(feature = "testing"))]
        return false;
    }

    fn run(&mut self) {
        let mut backoff = Backoff::new(WORKER_SPIN, IDLE_YIELD);
        let mut heartbeat: u64 = 0;
        loop {
            heartbeat = heartbeat.wrapping_add(1);
            self.stats.heartbeat.store(heartbeat, Ordering::Relaxed);

            let mut worked = false;
            if let Some(job) = self.held.take() {
                worked = true;
                if let Err(job) = self.output.try_push(job) {
                    self.held = Some(job);
                }
            }
            if self.held.is_none() && !self.held_by_test() {
                // Bounded drain: hand replies back regularly even under a flood.
                for _ in 0..64 {
                    let Some(mut job) = self.input.try_pop() else {
                        break;
                    };
                    worked = true;
                    let t0 = knhk_kernel::clock::ticks();
                    self.execute(&mut job);
                    let (counters, workflows) = (&self.stats.kernel, &self.shard.workflows);
                    self.meter.job(t0, &job, counters, &self.nets, workflows);
                    if let Err(job) = self.output.try_push(job) {
                        self.stats.out_full.fetch_add(1, Ordering::Relaxed);
                        self.held = Some(job);
                        break;
                    }
                }
                self.meter.end_round();
            }
            if worked {
                self.reply.wake();
                backoff.reset();
                continue;
            }
            self.meter.idle();
            #[cfg(feature = "testing")]
            while self.stats.wedge.load(Ordering::Relaxed) && !self.stopping.load(Ordering::Acquire)
            {
                thread::sleep(Duration::from_millis(1));
            }
            if self.stopping.load(Ordering::Acquire)
                && self.held.is_none()
                && (self.input.is_empty() || self.held_by_test())
            {
                break;
            }
            match backoff.idle() {
                IdleStep::Spin => std::hint::spin_loop(),
                IdleStep::Yield => thread::yield_now(),
                IdleStep::Park(timeout) => {
                    let parking = self.parker.announce();
                    if (self.input.is_empty() || self.held_by_test())
                        && !self.stopping.load(Ordering::SeqCst)
                    {
                        self.stats.parks.fetch_add(1, Ordering::Relaxed);
                        parking.park(timeout);
                    }
                }
            }
        }
        self.done.store(true, Ordering::SeqCst);
        self.reply.wake();
    }

    /// Runs every op of a job, grouping plain ops into beats of up to 8 lanes on one net and
    /// distinct cases; data-bearing ops and creations run alone.
    fn execute(&mut self, job: &mut Job) {
        let Worker {
            nets, shard, stats, ..
        } = self;
        let n = job.ops.len().min(job.out.len());
        let mut beat = exec::BeatBuilder::new();
        let mut refused: u64 = 0;
        let mut beats: u64 = 0;
        for i in 0..n {
            let op = job.ops[i];
            let slot = op.slot as usize;
            let installs = matches!(op.kind, OpKind::Create | OpKind::Restore);
            if slot >= shard.cases.len()
                || (!installs && (op.case_id == 0 || shard.ids[slot] != op.case_id))
            {
                refused += flush(nets, shard, &mut beat, &mut job.out, &mut beats);
                job.out[i] = Outcome {
                    status: Status::NoCase,
                    ..Outcome::default()
                };
                refused += 1;
                continue;
            }
            let wf = if installs {
                op.workflow
            } else {
                shard.workflows[slot]
            };
            let Some(net) = nets.get(usize::from(wf)).and_then(|s| s.get()) else {
                refused += flush(nets, shard, &mut beat, &mut job.out, &mut beats);
                job.out[i] = Outcome {
                    status: Status::NoWorkflow,
                    ..Outcome::default()
                };
                refused += 1;
                continue;
            };
            let plain = !installs
                && op.kind != OpKind::Save
                && op.reg_mask == 0
                && !op.kind.is_instance_op()
                && op.flags & OP_COUNT == 0
                && op.flags & OP_EXPECT_SEQ == 0;
            if plain && beat.accepts(wf, op.slot) {
                beat.push(i, wf, &op, net, &shard.cases[slot]);
                if beat.is_full() {
                    refused += flush(nets, shard, &mut beat, &mut job.out, &mut beats);
                }
                continue;
            }
            refused += flush(nets, shard, &mut beat, &mut job.out, &mut beats);
            if plain {
                beat.push(i, wf, &op, net, &shard.cases[slot]);
                continue;
            }
            let regs = job.data.get(op.data as usize).copied();
            let outcome = match op.kind {
                OpKind::Create => {
                    shard.ids[slot] = op.case_id;
                    shard.workflows[slot] = wf;
                    exec::create(net, &mut shard.cases[slot], op.reg_mask, regs)
                }
                OpKind::Save => match job.saved.get_mut(op.data as usize) {
                    Some(saved) => match <&mut [u8; knhk_kernel::CASE_BYTES]>::try_from(
                        saved.bytes.as_mut_slice(),
                    ) {
                        Ok(out) => exec::save(net, &shard.cases[slot], out),
                        Err(_) => exec::refused(),
                    },
                    None => exec::refused(),
                },
                OpKind::Restore => match job.saved.get(op.data as usize) {
                    Some(saved) => {
                        let o = exec::restore(net, &mut shard.cases[slot], &saved.bytes);
                        if o.status == Status::Ok {
                            shard.ids[slot] = op.case_id;
                            shard.workflows[slot] = wf;
                        }
                        o
                    }
                    None => exec::refused(),
                },
                _ => exec::single(net, &mut shard.cases[slot], &op, regs),
            };
            if outcome.status != Status::Ok {
                refused += 1;
            }
            job.out[i] = outcome;
        }
        refused += flush(nets, shard, &mut beat, &mut job.out, &mut beats);
        bump(&stats.jobs, 1);
        bump(&stats.ops, n as u64);
        bump(&stats.refused, refused);
        bump(&stats.beats, beats);
    }
}

/// Adds to a counter only this thread writes (a plain load and store, no locked instruction).
#[inline]
fn bump(counter: &AtomicU64, by: u64) {
    if by != 0 {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(by),
            Ordering::Relaxed,
        );
    }
}

/// Runs the pending beat, if any; returns the number of refused lanes.
fn flush(
    nets: &NetTable,
    shard: &mut Shard,
    beat: &mut exec::BeatBuilder,
    out: &mut [Outcome],
    beats: &mut u64,
) -> u64 {
    if beat.is_empty() {
        return 0;
    }
    let Some(net) = nets.get(usize::from(beat.workflow())).and_then(|s| s.get()) else {
        beat.clear();
        return 0;
    };
    *beats += 1;
    beat.run(net, &mut shard.cases, out)
}
