//! The engine: workflows, the case directory, the kernel workers and their reply threads.
//!
//! The binary's gRPC service, event log and probes reach the kernel only through this type.
//! Data flow of one request:
//!
//! 1. A tokio task resolves names (workflow, task, variables) and the case's shard and slot, and
//!    builds a [`Job`] per shard: one op for a unary call, every event of a bulk batch that
//!    falls on that shard otherwise.
//! 2. [`WorkerHandle::submit`] pushes the job into the shard's ring, or fails at once when the
//!    ring is full (RESOURCE_EXHAUSTED). The task then awaits one oneshot per job.
//! 3. The worker runs the ops in beats and pushes the job to its out ring.
//! 4. The shard's reply thread records the outcomes in the case [`Book`] (the mirror that
//!    GetCase, ListCases and ExportCaseXes read, and the per-case history), publishes watch
//!    events on the shard's bounded broadcast channel (a slow watcher loses events and is told
//!    how many; nothing waits for it), and hands the job to the [`BatchHook`], which releases
//!    it to the waiting task. A journal hook can hold jobs until their records are durable.
//!
//! Case ids: [`crate::ids`] (partition, generation, global slot + 1), `global_slot = slot *
//! workers + shard`; a single node owns partition 0, so its ids are `(generation << 32) |
//! (global_slot + 1)`.
//! The first cases get ids 1, 2, 3...; a slot reused after eviction gets a new generation, so a
//! stale id is NOT_FOUND, never another case. When every slot is taken, the oldest completed or
//! cancelled case is evicted; when none is, creation is refused with RESOURCE_EXHAUSTED.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, oneshot};

use crate::archive::{ArchiveQuery, CaseArchive, FinishedCase, Retention};
use crate::command::{BatchEvent, Data, EventKind, EventResult, TaskRef, NO_INSTANCE};
pub use crate::command::{Hist, Lifecycle};
use crate::error::EngineError;
use crate::ids::{self, CaseId};
use crate::workers::{
    self, Job, NetTable, OnExecuted, Op, OpKind, Outcome, ReplyPort, State, Status, SubmitError,
    WorkerHandle, WorkerSpec, OP_EXPECT_SEQ, OP_USE_BITS, REGISTERS,
};
use crate::workflow::{bits, Workflow, DEFAULT_NAMESPACE};

mod auto;
mod subnets;
mod timers;
pub use auto::{MAX_PATH, MAX_ROUNDS};
pub use timers::{ArmedTimer, TimerStats};

/// Engine configuration (the server's flags).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Kernel worker threads (shards).
    pub workers: usize,
    /// Total case slots, divided among the shards.
    pub case_capacity: usize,
    /// Pin workers to cores (core_affinity); falls back to unpinned when it fails.
    pub pin: bool,
    /// Events kept per case for export; older ones are dropped (and counted) past it.
    pub history_limit: usize,
    /// Watch event batches buffered per shard for slow watchers.
    pub watch_buffer: usize,
    /// The partition whose cases this engine holds (written into every case id; a single
    /// node owns partition 0). Ids of another partition answer "unknown case".
    pub partition: u16,
    /// Where finished cases go before their slots are reused (`crate::archive`); none: the
    /// oldest finished case is evicted, history and all.
    pub archive: Option<Arc<dyn CaseArchive>>,
    /// What the archiver deletes from the archive, deliberately (checked every minute).
    pub retention: Retention,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: default_workers(),
            case_capacity: 1 << 16,
            pin: true,
            history_limit: 1 << 12,
            watch_buffer: 1024,
            partition: 0,
            archive: None,
            retention: Retention::default(),
        }
    }
}

/// One kernel worker per core, leaving one core to the network side; at least one.
pub fn default_workers() -> usize {
    let cores = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    cores.saturating_sub(1).clamp(1, 64)
}

/// One event as published to watchers.
#[derive(Debug, Clone, Copy)]
pub struct WatchItem {
    pub case_id: u64,
    pub workflow: u16,
    pub kind: EventKind,
    pub task: u8,
    pub lifecycle: Option<Lifecycle>,
    /// The instance of a multiple-instance task ([`crate::command::NO_INSTANCE`]: none).
    pub instance: u32,
    pub time_ns: u64,
    pub seq: u64,
    pub state: State,
    pub marking: u64,
    pub enabled: u64,
}

/// Events published by one reply-thread step. `first` is the shard-wide number of the first
/// item: numbers are contiguous per shard, so a watcher that sees a gap knows exactly how many
/// it lost.
#[derive(Debug)]
pub struct EventBatch {
    pub shard: usize,
    pub first: u64,
    pub items: Vec<WatchItem>,
}

/// What the server knows of one slot.
#[derive(Debug, Clone)]
pub struct SlotBook {
    /// Case id in the slot (0: empty).
    pub id: u64,
    pub generation: u32,
    pub workflow: u16,
    pub created_ns: u64,
    /// False until the worker has run the creation.
    pub live: bool,
    /// Completed or cancelled (evictable, once archived when there is an archive).
    pub terminal: bool,
    /// When it became terminal (ns since the Unix epoch).
    pub finished_ns: u64,
    /// Stored by the archive (when there is one): its slot may be reused.
    pub archived: bool,
    /// The case as of its last op.
    pub last: Outcome,
    pub regs: [i64; REGISTERS],
    pub history: VecDeque<Hist>,
    /// Events dropped from the front of `history` (history_limit).
    pub history_dropped: u64,
    /// The case's armed timers (`timers`).
    pub timers: Vec<ArmedTimer>,
    /// A sub-net case: its link to its parent (`subnets`).
    pub parent: Option<workers::ParentLink>,
}

impl SlotBook {
    fn empty() -> SlotBook {
        SlotBook {
            id: 0,
            generation: 0,
            workflow: 0,
            created_ns: 0,
            live: false,
            terminal: false,
            finished_ns: 0,
            archived: false,
            last: Outcome::default(),
            regs: [0; REGISTERS],
            history: VecDeque::new(),
            history_dropped: 0,
            timers: Vec::new(),
            parent: None,
        }
    }
}

/// The directory of one shard: its slots as the server sees them.
#[derive(Debug)]
pub struct Book {
    pub slots: Vec<SlotBook>,
    /// Slots freed (failed creation) and never-used slots past the fresh cursor.
    free: Vec<u32>,
    /// Terminal cases, oldest first: (slot, id).
    done: VecDeque<(u32, u64)>,
    /// Number of watch events this shard has produced.
    pub event_seq: u64,
    /// History events held by the shard's slots, and the room their buffers hold (in events;
    /// a reused slot keeps its buffer).
    history_events: u64,
    history_room: u64,
    /// Cases of each workflow (by index) created and not finished (running or deadlocked).
    unfinished: Vec<u32>,
}

impl Book {
    fn history_held(&self, slot: u32) -> (usize, usize) {
        self.slots
            .get(slot as usize)
            .map_or((0, 0), |s| (s.history.len(), s.history.capacity()))
    }

    fn account_history(&mut self, before: (usize, usize), after: (usize, usize)) {
        self.history_events =
            (self.history_events + after.0 as u64).saturating_sub(before.0 as u64);
        self.history_room = (self.history_room + after.1 as u64).saturating_sub(before.1 as u64);
    }
}

/// Where an archive listing continues: the last (creation time, case id) of a page.
pub type ArchivePosition = (u64, u64);

/// How full the engine is ([`Engine::capacity`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Case slots in all.
    pub slots: u64,
    /// Slots holding a case, running or finished.
    pub used: u64,
    /// Of those, finished cases a new case may evict (oldest first).
    pub evictable: u64,
    /// History events held, and the room the history buffers take (events).
    pub history_events: u64,
    pub history_room: u64,
}

impl Capacity {
    /// Slots holding no case.
    pub fn free(&self) -> u64 {
        self.slots.saturating_sub(self.used)
    }

    /// Whether a new case can be created now (a free slot, or a finished case to evict).
    pub fn accepts_new_cases(&self) -> bool {
        self.free() > 0 || self.evictable > 0
    }
}

/// Bytes one case slot takes whether or not it holds a case: the kernel's case, the worker's
/// id and workflow index, and the reply thread's book entry (its history buffer comes on top:
/// [`HISTORY_EVENT_BYTES`] per event held).
pub const SLOT_BYTES: usize = std::mem::size_of::<knhk_kernel::Case>()
    + std::mem::size_of::<u64>()
    + std::mem::size_of::<u16>()
    + std::mem::size_of::<SlotBook>();

/// Bytes of one history event in a slot's buffer.
pub const HISTORY_EVENT_BYTES: usize = std::mem::size_of::<Hist>();

/// The recorded history of one case, for export.
#[derive(Debug, Clone)]
pub struct CaseHistory {
    pub case_id: u64,
    pub workflow: u16,
    pub created_ns: u64,
    pub events: Vec<Hist>,
    /// Events dropped from the front of the history (`history_limit`).
    pub dropped: u64,
}

/// A case an export covers, without its history: what [`Engine::case_refs`] lists, so that an
/// export can read one history at a time ([`Engine::history`]) instead of copying them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaseRef {
    pub case_id: u64,
    pub workflow: u16,
    pub created_ns: u64,
}

/// A watcher's subscription to one shard: the receiver, the shard's event number at the
/// subscription point, and the case's history until then (when asked for).
#[derive(Debug)]
pub struct Subscription {
    pub rx: broadcast::Receiver<Arc<EventBatch>>,
    pub seq: u64,
    pub history: Vec<Hist>,
    /// The case (when one was named) had already completed or been cancelled: no event will
    /// follow.
    pub finished: bool,
}

/// A point-in-time view of one case.
#[derive(Debug, Clone)]
pub struct CaseView {
    pub id: u64,
    pub workflow: Arc<Workflow>,
    pub last: Outcome,
    pub regs: [i64; REGISTERS],
    pub created_ns: u64,
    /// Read from the archive: the case is no longer in memory.
    pub archived: bool,
    /// Its armed task timers.
    pub timers: Vec<ArmedTimer>,
    /// A sub-net case: its parent case, the name of the parent's composite task and the
    /// instance (or [`NO_INSTANCE`]).
    pub parent: Option<(u64, String, u32)>,
    /// Its sub-net cases the engine links to it: (composite task's name, instance or
    /// [`NO_INSTANCE`], child case), oldest first.
    pub children: Vec<(String, u32, u64)>,
}

/// Called on a shard's reply thread with every executed job, in execution order. The hook owns
/// the job and must eventually call [`Job::release`] (a journal appends the batch and releases
/// it once durable). Runs off the kernel workers; may block briefly but should not stall.
pub trait BatchHook: Send + Sync + 'static {
    fn executed(&self, shard: usize, job: Box<Job>);

    /// Why new work must be refused (the journal cannot persist it), if it must.
    fn refusal(&self) -> Option<EngineError> {
        None
    }

    /// Makes a workflow's retirement durable before it takes effect (the journal appends its
    /// record and returns once it is synced). The default keeps nothing.
    fn retired(&self, _wf: &Workflow) -> Result<(), EngineError> {
        Ok(())
    }

    /// Makes the deletion of a workflow version durable before it takes effect, as
    /// [`BatchHook::retired`]. The default keeps nothing.
    fn deleted(&self, _wf: &Workflow) -> Result<(), EngineError> {
        Ok(())
    }

    /// A workflow was registered from `model`: returns once that is durable (blocking; the
    /// server calls it on a blocking thread before answering).
    fn registered(&self, _wf: &Workflow, _model: &[u8]) -> Result<(), EngineError> {
        Ok(())
    }
}

/// What a caller learns once the op it asked for has executed: on the shard's reply thread,
/// before the batch hook (the event log) takes the job, so before the job is durable and before
/// the call returns. Gets the case id and the op's result. The audit log queues a change's
/// record here, so that the record is written in the same commit window as the change.
pub type ExecutedNote = Box<dyn FnOnce(u64, Result<(), EngineError>) + Send>;

tokio::task_local! {
    static EXECUTED_NOTE: std::cell::RefCell<Option<ExecutedNote>>;
}

/// Runs `call`, one of the engine's case operations ([`Engine::create_case_in`],
/// [`Engine::task_op`], [`Engine::instance_op`], [`Engine::cancel_case`]), with `note` called
/// once its op has executed. A call refused before its op reaches a kernel worker (unknown case,
/// bad data, draining), or whose first outcome is not final and whose retry never ran, does not
/// call it: the caller then knows the outcome only from the call's result.
pub async fn with_executed_note<F: std::future::Future>(note: ExecutedNote, call: F) -> F::Output {
    EXECUTED_NOTE
        .scope(std::cell::RefCell::new(Some(note)), call)
        .await
}

/// The executed note of the call in progress, shared by the jobs that may decide its outcome.
#[derive(Clone, Default)]
struct NoteSlot(Option<Arc<Mutex<Option<ExecutedNote>>>>);

impl NoteSlot {
    /// Takes the note [`with_executed_note`] set for this call, if any.
    fn take_current() -> NoteSlot {
        NoteSlot(
            EXECUTED_NOTE
                .try_with(|n| n.borrow_mut().take())
                .ok()
                .flatten()
                .map(|n| Arc::new(Mutex::new(Some(n)))),
        )
    }

    /// A job callback that calls the note with `decide(job)`, the call's result, unless
    /// `decide` says the outcome is not final (None: a later job decides it).
    fn on_executed(
        &self,
        case_id: u64,
        decide: impl FnOnce(&Job) -> Option<Result<(), EngineError>> + Send + 'static,
    ) -> OnExecuted {
        let Some(slot) = self.0.clone() else {
            return OnExecuted(None);
        };
        OnExecuted(Some(Box::new(move |job: &Job| {
            if let Some(r) = decide(job) {
                if let Some(note) = lock(&slot).take() {
                    note(case_id, r);
                }
            }
        })))
    }
}

/// The result of a one-op call from its job's outcome.
fn op_result(job: &Job, case_id: u64, wf: &Workflow, task: u8) -> Result<(), EngineError> {
    match job.out.last() {
        Some(o) if o.status == Status::Ok => Ok(()),
        Some(o) => Err(status_error(o, case_id, wf, task)),
        None => Err(EngineError::Internal(
            "a job came back without an outcome".into(),
        )),
    }
}

/// The default hook: release at once.
#[derive(Debug, Default)]
pub struct Immediate;

impl BatchHook for Immediate {
    fn executed(&self, _shard: usize, job: Box<Job>) {
        job.release();
    }
}

struct ShardCtl {
    worker: WorkerHandle,
    book: Arc<Mutex<Book>>,
    events: broadcast::Sender<Arc<EventBatch>>,
}

#[derive(Default)]
struct Registry {
    list: Vec<Arc<Workflow>>,
    /// By namespace, then id, the versions in order (version n at n - 1): ids are unique
    /// within a namespace only (another namespace may use the same id, and registering never
    /// reveals that it does).
    by_id: HashMap<String, HashMap<String, Vec<Arc<Workflow>>>>,
}

/// The engine. Cheap to share (`Arc<Engine>`).
pub struct Engine {
    cfg: EngineConfig,
    per_shard: usize,
    registry: RwLock<Registry>,
    /// Serialises registrations between reserving an index and publishing it.
    registering: Mutex<()>,
    nets: NetTable,
    shards: Vec<ShardCtl>,
    fresh: AtomicU64,
    recycle_cursor: AtomicU64,
    draining: AtomicBool,
    stopped: AtomicBool,
    reply_threads: Mutex<Vec<JoinHandle<()>>>,
    hook: Arc<dyn BatchHook>,
    archiver: Mutex<Option<JoinHandle<()>>>,
    archive_stats: Arc<ArchiveStats>,
    /// Some workflow was registered with client predicates (bulk events then look up their
    /// task's flows).
    client_predicates: AtomicBool,
    /// Some workflow has tasks the engine runs itself (bulk events then look up their case's
    /// workflow: such events run through `auto::apply`).
    auto_tasks: AtomicBool,
    /// Woken each time the archiver stored a batch (a creation waiting for a slot retries).
    archived: Arc<tokio::sync::Notify>,
    /// Task timers: their specifications, schedule and counters.
    timers: Arc<timers::Timers>,
    /// Whether the reply threads hand each job's events to the batch hook (the event log's
    /// exporters): [`Engine::set_export_events`].
    export_events: Arc<AtomicBool>,
    /// Live sub-net cases by parent (`subnets`).
    children: Arc<subnets::Children>,
    /// Parent links whose child case is being created (one creation per link).
    creating: Mutex<std::collections::HashSet<workers::ParentLink>>,
}

/// Counters of the archiver (metrics, health).
#[derive(Debug, Default)]
pub struct ArchiveStats {
    /// Finished cases stored.
    pub archived: AtomicU64,
    /// Finished cases waiting to be stored.
    pub pending: AtomicU64,
    /// Store attempts that failed.
    pub failures: AtomicU64,
    /// Cases deleted by retention.
    pub pruned: AtomicU64,
    /// The last store error, while the archive is failing.
    pub failing: Mutex<Option<String>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Memory this process may still take, and where that figure comes from: the smaller of the
/// kernel's `MemAvailable` and the room left under the cgroup's `memory.max` (v2). `None`
/// where neither can be read (not Linux).
fn available_memory() -> Option<(u64, &'static str)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb.saturating_mul(1024))
    });
    let read = |f: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{f}"))
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    // "max" (no limit) does not parse: no cgroup bound then.
    let cgroup =
        read("memory.max").map(|max| max.saturating_sub(read("memory.current").unwrap_or(0)));
    match (meminfo, cgroup) {
        (Some(m), Some(c)) if c < m => Some((c, "the cgroup's memory.max")),
        (Some(m), _) => Some((m, "MemAvailable")),
        (None, Some(c)) => Some((c, "the cgroup's memory.max")),
        (None, None) => None,
    }
}

/// A creation on a retired workflow (or on a version deleted since it was looked up):
/// refused, naming it.
fn refuse_retired(wf: &Workflow) -> Result<(), EngineError> {
    if wf.deleted.load(Ordering::Acquire) {
        return Err(EngineError::VersionDeleted {
            workflow: wf.id.clone(),
            version: wf.version,
        });
    }
    if wf.retired.load(Ordering::Acquire) {
        return Err(EngineError::Precondition(format!(
            "workflow {} is retired: it takes no new cases (its cases run on)",
            crate::error::echo(&wf.id)
        )));
    }
    Ok(())
}

/// The id of a workflow registered without one: the model's name, control characters dropped
/// and the length bounded, so the id passes `error::check_id` like a client's would.
fn derived_id(default_name: &str) -> String {
    let mut cleaned = String::new();
    for c in default_name.trim().chars().filter(|c| !c.is_control()) {
        if cleaned.len() + c.len_utf8() > crate::error::MAX_ID_BYTES - 8 {
            break;
        }
        cleaned.push(c);
    }
    if cleaned.is_empty() {
        "workflow".to_string()
    } else {
        cleaned
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Engine {
    /// Starts the workers (pinned where possible) and their reply threads.
    pub fn start(cfg: EngineConfig, hook: Arc<dyn BatchHook>) -> std::io::Result<Arc<Engine>> {
        if u32::from(cfg.partition) >= ids::MAX_PARTITIONS {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "partition {} does not fit a case id (at most {})",
                    cfg.partition,
                    ids::MAX_PARTITIONS - 1
                ),
            ));
        }
        let workers = cfg.workers.clamp(1, 64);
        let per_shard = cfg
            .case_capacity
            .div_ceil(workers)
            .clamp(1, (u32::MAX as usize) / 64);
        // Refuse a capacity the machine cannot hold before allocating it: the slots are
        // allocated (and touched) here, all at once.
        let needed = (per_shard * workers) as u64 * SLOT_BYTES as u64;
        if let Some((available, source)) = available_memory() {
            if needed > available {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::OutOfMemory,
                    format!(
                        "case capacity {} needs {needed} bytes for its case slots ({SLOT_BYTES} \
                         bytes each, before any history) but {source} leaves {available} bytes: \
                         lower the case capacity",
                        per_shard * workers
                    ),
                ));
            }
        }
        let cores = if cfg.pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let nets = workers::net_table();
        let mut shards = Vec::with_capacity(workers);
        let mut ports = Vec::with_capacity(workers);
        for index in 0..workers {
            // With more than one core, leave core 0 to the network side: worker i on core
            // (i + 1) mod n. With one core, pinning buys nothing: run unpinned.
            let core = if cores.len() > 1 {
                cores.get((index + 1) % cores.len()).copied()
            } else {
                None
            };
            let (worker, port) = workers::spawn(WorkerSpec {
                index,
                capacity: per_shard,
                core,
                nets: nets.clone(),
            })?;
            let book = Book {
                slots: vec![SlotBook::empty(); per_shard],
                free: Vec::new(),
                done: VecDeque::new(),
                event_seq: 0,
                history_events: 0,
                history_room: 0,
                unfinished: vec![0; workers::MAX_WORKFLOWS],
            };
            let (events, _) = broadcast::channel(cfg.watch_buffer.max(16));
            shards.push(ShardCtl {
                worker,
                book: Arc::new(Mutex::new(book)),
                events,
            });
            ports.push(port);
        }
        let archive = cfg.archive.clone();
        let (finished_tx, finished_rx) = std::sync::mpsc::channel::<(usize, u32, u64)>();
        let engine = Arc::new(Engine {
            cfg: EngineConfig { workers, ..cfg },
            per_shard,
            registry: RwLock::new(Registry::default()),
            registering: Mutex::new(()),
            nets,
            shards,
            fresh: AtomicU64::new(0),
            recycle_cursor: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            reply_threads: Mutex::new(Vec::new()),
            hook: hook.clone(),
            archiver: Mutex::new(None),
            archive_stats: Arc::new(ArchiveStats::default()),
            client_predicates: AtomicBool::new(false),
            auto_tasks: AtomicBool::new(false),
            archived: Arc::new(tokio::sync::Notify::new()),
            timers: Arc::new(timers::Timers::default()),
            export_events: Arc::new(AtomicBool::new(false)),
            children: Arc::new(subnets::Children::default()),
            creating: Mutex::new(std::collections::HashSet::new()),
        });
        let mut threads = Vec::with_capacity(workers);
        for (index, port) in ports.into_iter().enumerate() {
            let ctx = ReplyCtx {
                shard: index,
                book: engine.shards[index].book.clone(),
                events: engine.shards[index].events.clone(),
                hook: hook.clone(),
                history_limit: engine.cfg.history_limit,
                finished: archive.as_ref().map(|_| finished_tx.clone()),
                timers: engine.timers.clone(),
                export: engine.export_events.clone(),
                children: engine.children.clone(),
            };
            let t = thread::Builder::new()
                .name(format!("knhk-reply-{index}"))
                .spawn(move || reply_loop(port, ctx))?;
            threads.push(t);
        }
        *lock(&engine.reply_threads) = threads;
        drop(finished_tx);
        if let Some(archive) = archive {
            let ctx = ArchiverCtx {
                archive,
                books: engine.shards.iter().map(|s| s.book.clone()).collect(),
                engine: Arc::downgrade(&engine),
                stats: engine.archive_stats.clone(),
                notify: engine.archived.clone(),
                retention: engine.cfg.retention,
            };
            let t = thread::Builder::new()
                .name("knhk-archiver".into())
                .spawn(move || archiver_loop(finished_rx, ctx))?;
            *lock(&engine.archiver) = Some(t);
        }
        Ok(engine)
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The batch hook (the journal, when durability is on).
    pub fn hook(&self) -> Arc<dyn BatchHook> {
        self.hook.clone()
    }

    /// The error for a job whose reply never came: the journal's refusal, else draining.
    fn gone(&self) -> EngineError {
        self.hook.refusal().unwrap_or(EngineError::Draining)
    }

    /// Number of shards (workers).
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Per-worker counters and heartbeats.
    pub fn worker_stats(&self) -> Vec<Arc<workers::WorkerStats>> {
        self.shards.iter().map(|s| s.worker.stats.clone()).collect()
    }

    /// Jobs queued in each worker's input ring (metrics, readiness).
    pub fn ring_depths(&self) -> Vec<usize> {
        self.shards.iter().map(|s| s.worker.queued()).collect()
    }

    /// Per worker: watch subscribers, and event batches the slowest of them has not read.
    pub fn watch_stats(&self) -> Vec<(usize, usize)> {
        self.shards
            .iter()
            .map(|s| (s.events.receiver_count(), s.events.len()))
            .collect()
    }

    /// Holds (or releases) every worker: held workers take no input, so their rings fill and
    /// new work gets RESOURCE_EXHAUSTED. A test switch (`testing` feature).
    #[cfg(feature = "testing")]
    pub fn hold_workers(&self, hold: bool) {
        for s in &self.shards {
            s.worker.set_hold(hold);
        }
    }

    /// Refuse new work from now on (shutdown step 1).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// True once draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Stops the workers and the reply threads (after their rings are empty). Idempotent.
    pub fn stop(&self) {
        self.drain();
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        for s in &self.shards {
            s.worker.stop();
        }
        let threads = std::mem::take(&mut *lock(&self.reply_threads));
        for t in threads {
            let _ = t.join();
        }
        // The reply threads held the archiver's senders: it stores what is pending and ends.
        let archiver = lock(&self.archiver).take();
        if let Some(t) = archiver {
            let _ = t.join();
        }
    }

    /// The archiver's counters (zeros without an archive).
    pub fn archive_stats(&self) -> Arc<ArchiveStats> {
        self.archive_stats.clone()
    }

    /// The archive, when there is one.
    pub fn archive(&self) -> Option<Arc<dyn CaseArchive>> {
        self.cfg.archive.clone()
    }

    // ---------------------------------------------------------------- workflows

    /// Registers a compiled workflow under `requested` (or a name derived from the model):
    /// the durable step first, then publication. `durable` receives the built workflow and
    /// returns once its log record is durable (the hook's [`BatchHook::registered`] for a
    /// client's registration; nothing during replay, whose records are durable already).
    /// Until it returns, the workflow is invisible: no case can be created on it, so no
    /// acknowledged event can refer to a workflow whose record could still be lost. When it
    /// fails, nothing is published and the id and index stay free. Registrations are
    /// serialised (they are rare) so that the index reserved here is the one published.
    pub fn register(
        &self,
        requested: &str,
        build: impl FnOnce(u16, String) -> Result<Workflow, EngineError>,
        default_name: &str,
        durable: impl FnOnce(&Workflow) -> Result<(), EngineError>,
    ) -> Result<Arc<Workflow>, EngineError> {
        self.register_in(
            DEFAULT_NAMESPACE,
            requested,
            None,
            build,
            default_name,
            durable,
        )
    }

    /// [`Engine::register`] in `namespace`; `build` must put the workflow in it
    /// ([`Workflow::in_namespace`]). The id is `requested`, or with none the id derived from
    /// the model's name (`default_name`: the same name always gives the same id). An id
    /// already in the namespace gets a new version of its workflow (version n + 1): new cases
    /// start on the newest version, a case keeps the version it started on.
    ///
    /// With `digest` (the [`crate::workflow::registration_digest`] of the request): a version
    /// of the id with the same digest is returned as it is, built and logged nothing:
    /// registering the same content again is idempotent (a client's retry).
    pub fn register_in(
        &self,
        namespace: &str,
        requested: &str,
        digest: Option<[u8; 32]>,
        build: impl FnOnce(u16, String) -> Result<Workflow, EngineError>,
        default_name: &str,
        durable: impl FnOnce(&Workflow) -> Result<(), EngineError>,
    ) -> Result<Arc<Workflow>, EngineError> {
        if self.is_draining() {
            return Err(EngineError::Draining);
        }
        if let Some(e) = self.hook.refusal() {
            return Err(e);
        }
        let _serial = lock(&self.registering);
        let (index, id, version) = {
            let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
            let id = if requested.is_empty() {
                derived_id(default_name)
            } else {
                requested.to_string()
            };
            let versions = reg.by_id.get(namespace).and_then(|m| m.get(&id));
            if let (Some(d), Some(vs)) = (digest, versions) {
                // A deleted version is not matched: its content again is a new version.
                if let Some(wf) = vs
                    .iter()
                    .find(|wf| wf.source_digest == Some(d) && !wf.deleted.load(Ordering::Acquire))
                {
                    return Ok(wf.clone());
                }
            }
            let index = reg.list.len();
            if index >= workers::MAX_WORKFLOWS {
                return Err(EngineError::Exhausted(format!(
                    "workflow capacity reached ({} workflows, versions included)",
                    workers::MAX_WORKFLOWS
                )));
            }
            let version = versions.map_or(1, |vs| vs.len() as u32 + 1);
            (index, id, version)
        };
        let index16 = u16::try_from(index).map_err(|_| EngineError::Internal("index".into()))?;
        let mut built = build(index16, id.clone())?;
        built.version = version;
        // sub-nets take the indices after the root's, in order (Workflow::with_subnets)
        if index + built.subnets.len() >= workers::MAX_WORKFLOWS {
            return Err(EngineError::Exhausted(format!(
                "workflow capacity reached ({} workflows, versions and sub-nets included)",
                workers::MAX_WORKFLOWS
            )));
        }
        for (k, sub) in built.subnets.iter_mut().enumerate() {
            let Some(sub) = Arc::get_mut(sub) else {
                return Err(EngineError::Internal(format!(
                    "sub-net {k} of '{id}' shared"
                )));
            };
            if usize::from(sub.index) != index + 1 + k {
                return Err(EngineError::Internal(format!(
                    "sub-net '{}' built at index {}, expected {}",
                    sub.id,
                    sub.index,
                    index + 1 + k
                )));
            }
            sub.version = version;
        }
        let wf = Arc::new(built);
        if wf.namespace != namespace {
            return Err(EngineError::Internal(format!(
                "workflow '{id}' built in namespace '{}', registered in '{namespace}'",
                wf.namespace
            )));
        }
        #[cfg(feature = "testing")]
        crate::testing::hold_registration(&id);
        durable(&wf)?;
        for w in std::iter::once(&wf).chain(wf.subnets.iter()) {
            let i = usize::from(w.index);
            if self.nets[i].set(w.net.clone()).is_err() {
                return Err(EngineError::Internal(format!("net slot {i} already set")));
            }
            if w.client_predicates {
                self.client_predicates.store(true, Ordering::Relaxed);
            }
            if w.settles() {
                self.auto_tasks.store(true, Ordering::Relaxed);
            }
            self.timers.register(w);
        }
        let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
        reg.list.push(wf.clone());
        reg.list.extend(wf.subnets.iter().cloned());
        reg.by_id
            .entry(namespace.to_string())
            .or_default()
            .entry(id)
            .or_default()
            .push(wf.clone());
        Ok(wf)
    }

    /// Retires workflow `id` of `namespace`, every version registered so far: it takes no new
    /// case from now on (its cases run on; a later registration under the id makes a new
    /// version that does). Each version's retirement is durable first (the hook's
    /// [`BatchHook::retired`]), then in force; retiring a retired version changes nothing.
    /// Returns the newest version.
    pub fn retire_in(&self, namespace: &str, id: &str) -> Result<Arc<Workflow>, EngineError> {
        if self.is_draining() {
            return Err(EngineError::Draining);
        }
        if let Some(e) = self.hook.refusal() {
            return Err(e);
        }
        // With registrations: a retirement is logged after the workflow's record.
        let _serial = lock(&self.registering);
        let newest = self.workflow_in(namespace, id)?;
        for wf in &self.versions_in(namespace, id)? {
            if !wf.retired.load(Ordering::Acquire) && !wf.deleted.load(Ordering::Acquire) {
                self.hook.retired(wf)?;
                wf.retired.store(true, Ordering::Release);
            }
        }
        Ok(newest)
    }

    /// Deletes version `version` of workflow `id` of `namespace`: from then on it is neither
    /// listed nor found (by id or version) and takes no new case; new cases of the id start on
    /// the newest version not deleted. Refused while the version has unfinished cases (cancel
    /// them, or retire the workflow and wait). The history of its finished cases stays (they
    /// keep their workflow). Durable first (the hook's [`BatchHook::deleted`]), then in force;
    /// deleting a deleted version returns it as it is. Its kernel index is not reused.
    ///
    /// With `delete_history`, its finished cases go too, on purpose: the deletion's record
    /// says so (durable first), then [`Engine::purge_deleted_history`] removes them from memory
    /// and from the archive, and they are never archived again. A version deleted before
    /// without it may be deleted again with it; a retry runs the purge again.
    pub fn delete_in(
        &self,
        namespace: &str,
        id: &str,
        version: u32,
        delete_history: bool,
    ) -> Result<Arc<Workflow>, EngineError> {
        if self.is_draining() {
            return Err(EngineError::Draining);
        }
        if let Some(e) = self.hook.refusal() {
            return Err(e);
        }
        if version == 0 {
            return Err(EngineError::BadData {
                reason: "DeleteWorkflow needs the version to delete (Workflow.version, from 1)"
                    .into(),
            });
        }
        let _serial = lock(&self.registering);
        let versions = self.versions_in(namespace, id)?;
        let wf = versions
            .iter()
            .find(|wf| wf.version == version)
            .cloned()
            .ok_or_else(|| EngineError::NoVersion {
                workflow: id.to_string(),
                version,
                newest: versions.len() as u32,
            })?;
        if wf.deleted.load(Ordering::Acquire) {
            if !delete_history {
                return Ok(wf);
            }
            if !wf.history_deleted.swap(true, Ordering::AcqRel) {
                // deleted before, its history kept then: this deletion's record says so now
                if let Err(e) = self.hook.deleted(&wf) {
                    wf.history_deleted.store(false, Ordering::Release);
                    return Err(e);
                }
            }
            for w in std::iter::once(&wf).chain(wf.subnets.iter()) {
                w.history_deleted.store(true, Ordering::Release);
                self.purge_deleted_history(w)?;
            }
            return Ok(wf);
        }
        // Cases are counted with the version already refusing creations (`refuse_retired`).
        // A creation that passed that check just before is counted if it has taken its slot
        // (the count reads each shard's book under its lock), and otherwise sees the flag
        // once it has (`create_case_in` and `event_op` look again after allocating): no case
        // of a deleted version ever starts.
        wf.deleted.store(true, Ordering::Release);
        // its sub-net cases count too (a deadlocked child can outlive its parent's interest)
        let unfinished: u64 = std::iter::once(&wf)
            .chain(wf.subnets.iter())
            .map(|w| self.unfinished_or_starting(w.index))
            .sum();
        if unfinished > 0 {
            wf.deleted.store(false, Ordering::Release);
            return Err(EngineError::Precondition(format!(
                "workflow {} version {version} has {unfinished} unfinished case{}: cancel \
                 them, or retire the workflow and delete the version once they finished",
                crate::error::echo(id),
                if unfinished == 1 { "" } else { "s" }
            )));
        }
        wf.history_deleted.store(delete_history, Ordering::Release);
        if let Err(e) = self.hook.deleted(&wf) {
            wf.deleted.store(false, Ordering::Release);
            wf.history_deleted.store(false, Ordering::Release);
            return Err(e);
        }
        for sub in &wf.subnets {
            sub.deleted.store(true, Ordering::Release);
            sub.history_deleted.store(delete_history, Ordering::Release);
        }
        if delete_history {
            for w in std::iter::once(&wf).chain(wf.subnets.iter()) {
                self.purge_deleted_history(w)?;
            }
        }
        Ok(wf)
    }

    /// Removes the finished cases of `wf` (deleted with its history) from memory and from the
    /// archive: their slots are free for new cases (a new id each: the slot's generation moves
    /// on), and a read of one answers as for a case that never existed. Idempotent; also run
    /// after a replay, which brings such cases back from the log
    /// ([`Engine::purge_deleted_histories`]). Returns how many were removed.
    pub fn purge_deleted_history(&self, wf: &Workflow) -> Result<u64, EngineError> {
        let mut purged = 0u64;
        for shard in &self.shards {
            let mut book = lock(&shard.book);
            for slot in 0..book.slots.len() as u32 {
                let s = &book.slots[slot as usize];
                if s.id == 0 || !s.terminal || s.workflow != wf.index {
                    continue;
                }
                let held = book.history_held(slot);
                let s = &mut book.slots[slot as usize];
                *s = SlotBook {
                    history: std::mem::take(&mut s.history),
                    generation: s.generation,
                    ..SlotBook::empty()
                };
                s.history.clear();
                let cleared = book.history_held(slot);
                book.account_history(held, cleared);
                book.free.push(slot);
                purged += 1;
            }
        }
        if let Some(archive) = &self.cfg.archive {
            purged += archive.delete_workflow(wf.index).map_err(|e| {
                EngineError::Unavailable(format!(
                    "workflow {} version {} is deleted, but the archive could not delete its \
                     cases yet ({e}): deleting it again with its history retries, and a restart \
                     does",
                    crate::error::echo(&wf.id),
                    wf.version
                ))
            })?;
        }
        if purged > 0 {
            tracing::info!(
                workflow = %wf.id,
                version = wf.version,
                cases = purged,
                "finished cases deleted with their workflow version"
            );
        }
        Ok(purged)
    }

    /// [`Engine::purge_deleted_history`] of every workflow deleted with its history (after a
    /// replay).
    pub fn purge_deleted_histories(&self) -> Result<u64, EngineError> {
        let mut n = 0;
        for wf in self.workflows() {
            if wf.history_deleted.load(Ordering::Acquire) {
                n += self.purge_deleted_history(&wf)?;
            }
        }
        Ok(n)
    }

    /// Replay: the workflow at `index` was deleted (`with_history`: its finished cases with
    /// it; they are purged once the replay has ended).
    pub fn mark_deleted(&self, index: u16, with_history: bool) -> Result<(), EngineError> {
        let wf = self.logged_workflow(index, "deletion")?;
        // a version's sub-nets go with it
        for w in std::iter::once(&wf).chain(wf.subnets.iter()) {
            w.deleted.store(true, Ordering::Release);
            if with_history {
                w.history_deleted.store(true, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Replay: the workflow at `index` was retired.
    pub fn mark_retired(&self, index: u16) -> Result<(), EngineError> {
        self.logged_workflow(index, "retirement")?
            .retired
            .store(true, Ordering::Release);
        Ok(())
    }

    /// The workflow at `index`, which a replayed record (`what`) names.
    fn logged_workflow(&self, index: u16, what: &str) -> Result<Arc<Workflow>, EngineError> {
        self.workflow_at(index).ok_or_else(|| {
            EngineError::Internal(format!("a {what} names workflow index {index}, not loaded"))
        })
    }

    /// A workflow of the default namespace by id.
    pub fn workflow(&self, id: &str) -> Result<Arc<Workflow>, EngineError> {
        self.workflow_in(DEFAULT_NAMESPACE, id)
    }

    /// The newest version of workflow `id` of `namespace` (NOT_FOUND for an id of another
    /// namespace, exactly as for an unknown one).
    pub fn workflow_in(&self, namespace: &str, id: &str) -> Result<Arc<Workflow>, EngineError> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.by_id
            .get(namespace)
            .and_then(|m| m.get(id))
            .and_then(|vs| {
                vs.iter()
                    .rev()
                    .find(|wf| !wf.deleted.load(Ordering::Acquire))
            })
            .cloned()
            .ok_or_else(|| EngineError::NoWorkflow(id.to_string()))
    }

    /// Version `version` of workflow `id` of `namespace` (0: the newest).
    pub fn workflow_version_in(
        &self,
        namespace: &str,
        id: &str,
        version: u32,
    ) -> Result<Arc<Workflow>, EngineError> {
        if version == 0 {
            return self.workflow_in(namespace, id);
        }
        let versions = self.versions_in(namespace, id)?;
        let newest = versions.len() as u32;
        let wf = versions
            .into_iter()
            .find(|wf| wf.version == version)
            .ok_or_else(|| EngineError::NoVersion {
                workflow: id.to_string(),
                version,
                newest,
            })?;
        if wf.deleted.load(Ordering::Acquire) {
            return Err(EngineError::VersionDeleted {
                workflow: id.to_string(),
                version,
            });
        }
        Ok(wf)
    }

    /// Every version of workflow `id` of `namespace`, oldest first, deleted ones included
    /// (NOT_FOUND as [`Self::workflow_in`]).
    pub fn versions_in(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<Vec<Arc<Workflow>>, EngineError> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.by_id
            .get(namespace)
            .and_then(|m| m.get(id))
            .filter(|vs| !vs.is_empty())
            .cloned()
            .ok_or_else(|| EngineError::NoWorkflow(id.to_string()))
    }

    /// The kernel indices of every version of workflow `id` of `namespace` (a filter on the
    /// cases of the workflow, whatever version they started on).
    pub fn version_indices_in(&self, namespace: &str, id: &str) -> Result<Vec<u16>, EngineError> {
        Ok(self
            .versions_in(namespace, id)?
            .iter()
            .map(|wf| wf.index)
            .collect())
    }

    /// [`Engine::unfinished_cases`] of the workflow at `index`, plus its creations that have
    /// taken a slot and not run yet. Scans every slot: for a deletion, not for a hot path.
    fn unfinished_or_starting(&self, index: u16) -> u64 {
        let mut n = 0u64;
        for ctl in &self.shards {
            let book = lock(&ctl.book);
            n += u64::from(
                book.unfinished
                    .get(usize::from(index))
                    .copied()
                    .unwrap_or(0),
            );
            n += book
                .slots
                .iter()
                .filter(|s| s.id != 0 && !s.live && s.workflow == index)
                .count() as u64;
        }
        n
    }

    /// Cases created and not finished (running or deadlocked) of the workflows at `indices`,
    /// summed over the shards (each shard's book locked in turn).
    pub fn unfinished_cases(&self, indices: &[u16]) -> u64 {
        let mut n = 0u64;
        for ctl in &self.shards {
            let book = lock(&ctl.book);
            for i in indices {
                n += u64::from(book.unfinished.get(usize::from(*i)).copied().unwrap_or(0));
            }
        }
        n
    }

    /// A workflow by kernel index.
    pub fn workflow_at(&self, index: u16) -> Option<Arc<Workflow>> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.list.get(usize::from(index)).cloned()
    }

    /// Every workflow, in registration order.
    pub fn workflows(&self) -> Vec<Arc<Workflow>> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .list
            .clone()
    }

    // ---------------------------------------------------------------- case ids

    /// (shard, slot) of a case id, if it names a slot of this engine's partition.
    pub fn locate(&self, case_id: u64) -> Option<(usize, u32)> {
        let id = CaseId::decode(case_id)?;
        if id.partition != self.cfg.partition {
            return None;
        }
        let g = u64::from(id.local) - 1;
        let w = self.shards.len() as u64;
        let shard = (g % w) as usize;
        let slot = g / w;
        (slot < self.per_shard as u64).then_some((shard, slot as u32))
    }

    fn encode(&self, generation: u32, shard: usize, slot: u32) -> u64 {
        let g = u64::from(slot) * self.shards.len() as u64 + shard as u64;
        // The layout is bounded at start (local part below 2^32), and generations are kept
        // within their bits by `next_generation`, so the id always encodes.
        CaseId {
            partition: self.cfg.partition,
            generation: generation & ids::GENERATION_MASK,
            local: u32::try_from(g + 1).unwrap_or(u32::MAX),
        }
        .encode()
        .unwrap_or(0)
    }

    /// Reserves a slot for a new case of `wf`; the caller must submit its creation or call
    /// `release_slot`.
    fn allocate(&self, wf: &Workflow) -> Result<(u64, usize, u32), EngineError> {
        self.try_allocate(wf).map_err(|r| self.refusal_of(r))
    }

    /// [`Engine::allocate`], saying why when there is no slot.
    fn try_allocate(&self, wf: &Workflow) -> Result<(u64, usize, u32), NoSlot> {
        let w = self.shards.len();
        let total = (self.per_shard * w) as u64;
        let now = now_ns();
        let g = self.fresh.fetch_add(1, Ordering::Relaxed);
        if g < total {
            let shard = (g % w as u64) as usize;
            let slot = (g / w as u64) as u32;
            let mut book = lock(&self.shards[shard].book);
            if let Some(s) = book.slots.get_mut(slot as usize) {
                let id = self.encode(0, shard, slot);
                s.id = id;
                s.workflow = wf.index;
                s.created_ns = now;
                return Ok((id, shard, slot));
            }
        }
        // Every slot has been used once: reuse a freed one, else evict the oldest terminal case.
        let start = self.recycle_cursor.fetch_add(1, Ordering::Relaxed) as usize;
        let mut refusal = NoSlot::Full;
        for k in 0..w {
            let shard = (start + k) % w;
            let mut book = lock(&self.shards[shard].book);
            let slot = match pop_reusable(&mut book, self.cfg.archive.is_some()) {
                Reuse::Slot(slot) => slot,
                Reuse::WaitArchive => {
                    refusal = NoSlot::WaitArchive;
                    continue;
                }
                Reuse::Full => continue,
            };
            let held = book.history_held(slot);
            let s = &mut book.slots[slot as usize];
            let generation = ids::next_generation(s.generation);
            let id = self.encode(generation, shard, slot);
            *s = SlotBook {
                history: std::mem::take(&mut s.history),
                ..SlotBook::empty()
            };
            s.history.clear();
            s.generation = generation;
            s.id = id;
            s.workflow = wf.index;
            s.created_ns = now;
            let cleared = book.history_held(slot);
            book.account_history(held, cleared);
            return Ok((id, shard, slot));
        }
        Err(refusal)
    }

    /// The refusal of a creation that found no slot.
    fn refusal_of(&self, r: NoSlot) -> EngineError {
        let total = self.per_shard * self.shards.len();
        match r {
            NoSlot::WaitArchive => {
                let why = lock(&self.archive_stats.failing)
                    .clone()
                    .map_or_else(String::new, |e| format!(" (the archive is failing: {e})"));
                EngineError::Exhausted(format!(
                    "case capacity reached: the oldest finished cases keep their slots until the \
                     archive stores them{why}; retry later"
                ))
            }
            NoSlot::Full => EngineError::Exhausted(format!(
                "case capacity reached: all {total} case slots hold running cases (raise \
                 --case-capacity)"
            )),
        }
    }

    fn release_slot(&self, shard: usize, slot: u32, id: u64) {
        let mut book = lock(&self.shards[shard].book);
        if let Some(s) = book.slots.get_mut(slot as usize) {
            if s.id == id {
                s.id = 0;
                s.live = false;
                book.free.push(slot);
            }
        }
    }

    // ---------------------------------------------------------------- running jobs

    fn submit(
        &self,
        shard: usize,
        mut job: Box<Job>,
    ) -> Result<oneshot::Receiver<Box<Job>>, EngineError> {
        if self.is_draining() {
            return Err(EngineError::Draining);
        }
        if let Some(e) = self.hook.refusal() {
            return Err(e);
        }
        let (tx, rx) = oneshot::channel();
        job.reply = Some(tx);
        match self.shards[shard].worker.submit(job) {
            Ok(()) => Ok(rx),
            Err(SubmitError::Full(_)) => Err(EngineError::Exhausted(format!(
                "kernel worker {shard} is saturated ({} jobs queued): retry later",
                workers::RING_CAPACITY
            ))),
            Err(SubmitError::Stopped(_)) => Err(EngineError::Draining),
        }
    }

    async fn run(&self, shard: usize, job: Box<Job>) -> Result<Box<Job>, EngineError> {
        let rx = self.submit(shard, job)?;
        rx.await.map_err(|_| self.gone())
    }

    // ---------------------------------------------------------------- recovery
    //
    // The API an event log replays through and checkpoints from: jobs submitted as logged,
    // slots restored with their logged ids, the allocator's state saved and restored.

    /// (workers, slots per worker): the layout case ids encode.
    pub fn layout(&self) -> (u32, u32) {
        (self.shards.len() as u32, self.per_shard as u32)
    }

    /// Queues a job as is, for replay (no draining or refusal check). On failure the job comes
    /// back with `true` when the ring was full (retry), `false` when the worker stopped.
    pub fn submit_job(
        &self,
        shard: usize,
        mut job: Box<Job>,
    ) -> Result<oneshot::Receiver<Box<Job>>, (Box<Job>, bool)> {
        let Some(ctl) = self.shards.get(shard) else {
            return Err((job, false));
        };
        let (tx, rx) = oneshot::channel();
        job.reply = Some(tx);
        match ctl.worker.submit(job) {
            Ok(()) => Ok(rx),
            Err(SubmitError::Full(mut j)) => {
                j.reply = None;
                Err((j, true))
            }
            Err(SubmitError::Stopped(j)) => Err((j, false)),
        }
    }

    /// True when the slot holds no case, or holds `id` (replay: no earlier case to wait for).
    pub fn slot_free_for(&self, shard: usize, slot: u32, id: u64) -> bool {
        self.shards.get(shard).is_some_and(|c| {
            lock(&c.book)
                .slots
                .get(slot as usize)
                .is_some_and(|s| s.id == 0 || s.id == id)
        })
    }

    /// Puts case `id` of `workflow` into its slot before its replayed creation runs.
    pub fn restore_slot(
        &self,
        shard: usize,
        slot: u32,
        id: u64,
        workflow: u16,
        created_ns: u64,
    ) -> bool {
        let Some(ctl) = self.shards.get(shard) else {
            return false;
        };
        let mut book = lock(&ctl.book);
        let held = book.history_held(slot);
        let Some(s) = book.slots.get_mut(slot as usize) else {
            return false;
        };
        *s = SlotBook {
            history: std::mem::take(&mut s.history),
            ..SlotBook::empty()
        };
        s.history.clear();
        s.generation = CaseId::decode(id).map_or(0, |c| c.generation);
        s.id = id;
        s.workflow = workflow;
        s.created_ns = created_ns;
        let cleared = book.history_held(slot);
        book.account_history(held, cleared);
        true
    }

    /// After replay: the fresh-slot cursor and slot generations (global slot, generation), so
    /// new cases never reuse a logged id; empty slots below the cursor become free.
    pub fn restore_allocator(&self, fresh: u64, gens: &[(u64, u32)]) {
        let w = self.shards.len() as u64;
        let total = (self.per_shard as u64) * w;
        let fresh = fresh.min(total);
        for &(g, generation) in gens {
            let (shard, slot) = ((g % w) as usize, (g / w) as usize);
            if let Some(ctl) = self.shards.get(shard) {
                if let Some(s) = lock(&ctl.book).slots.get_mut(slot) {
                    s.generation = s.generation.max(generation);
                }
            }
        }
        for g in 0..fresh {
            let (shard, slot) = ((g % w) as usize, (g / w) as u32);
            if let Some(ctl) = self.shards.get(shard) {
                let mut book = lock(&ctl.book);
                if book.slots.get(slot as usize).is_some_and(|s| s.id == 0) {
                    book.free.push(slot);
                }
            }
        }
        // A replayed creation can take the slot of a finished case: drop such entries, so
        // that the evictable count is exact.
        for ctl in &self.shards {
            let mut book = lock(&ctl.book);
            let book = &mut *book;
            let slots = &book.slots;
            book.done.retain(|&(slot, id)| {
                slots
                    .get(slot as usize)
                    .is_some_and(|s| s.id == id && s.terminal)
            });
        }
        self.fresh.store(fresh, Ordering::Relaxed);
    }

    /// For a checkpoint: a job of [`OpKind::Save`] ops for the live cases of `shard` in slots
    /// `from..`, at most `max` of them (None when there is none), and the slot to continue
    /// from (None once the shard is covered). Submit it with [`Engine::submit_job`]: the
    /// worker saves each case after every op it ran before, and the reply thread adds what the
    /// book knows of it as of the same point, so each case is saved at one point of its history
    /// (its outcome's seq). A case evicted before its save runs comes back `NoCase`.
    pub fn save_job(&self, shard: usize, from: u32, max: usize) -> (Option<Box<Job>>, Option<u32>) {
        let Some(ctl) = self.shards.get(shard) else {
            return (None, None);
        };
        let book = lock(&ctl.book);
        let mut ops = Vec::new();
        let mut next = None;
        for (slot, s) in book.slots.iter().enumerate().skip(from as usize) {
            if ops.len() >= max.max(1) {
                next = Some(slot as u32);
                break;
            }
            if s.id != 0 && s.live {
                let mut op = Op::new(OpKind::Save, s.id, slot as u32, 0);
                op.workflow = s.workflow;
                op.data = ops.len() as u32;
                ops.push(op);
            }
        }
        drop(book);
        if ops.is_empty() {
            return (None, next);
        }
        let n = ops.len();
        let mut job = Job::new(ops, Vec::new());
        job.saved = vec![workers::SavedCase::default(); n];
        (Some(job), next)
    }

    /// How full the engine is: slots used, finished cases that may be evicted, history held.
    /// Locks each shard's book briefly (no scan).
    pub fn capacity(&self) -> Capacity {
        let slots = (self.per_shard * self.shards.len()) as u64;
        let mut c = Capacity {
            slots,
            ..Capacity::default()
        };
        let mut free = 0u64;
        for ctl in &self.shards {
            let book = lock(&ctl.book);
            free += book.free.len() as u64;
            c.evictable += book.done.len() as u64;
            c.history_events += book.history_events;
            c.history_room += book.history_room;
        }
        c.used = self
            .fresh
            .load(Ordering::Relaxed)
            .min(slots)
            .saturating_sub(free);
        c
    }

    /// For a checkpoint: the fresh-slot cursor, every nonzero slot generation (global slot,
    /// generation) and the ids of the cases the engine holds.
    pub fn allocator_state(&self) -> (u64, Vec<(u64, u32)>, std::collections::HashSet<u64>) {
        let w = self.shards.len() as u64;
        let mut gens = Vec::new();
        let mut live = std::collections::HashSet::new();
        for (shard, ctl) in self.shards.iter().enumerate() {
            let book = lock(&ctl.book);
            for (slot, s) in book.slots.iter().enumerate() {
                if s.generation != 0 {
                    gens.push((slot as u64 * w + shard as u64, s.generation));
                }
                if s.id != 0 {
                    live.insert(s.id);
                }
            }
        }
        (self.fresh.load(Ordering::Relaxed), gens, live)
    }

    fn view(&self, shard: usize, slot: u32, case_id: u64) -> Result<CaseView, EngineError> {
        let (wf_index, last, regs, created_ns, timers, parent) = {
            let book = lock(&self.shards[shard].book);
            match book.slots.get(slot as usize) {
                Some(s) if s.id == case_id && s.live => (
                    s.workflow,
                    s.last,
                    s.regs,
                    s.created_ns,
                    s.timers.clone(),
                    s.parent,
                ),
                _ => return Err(EngineError::NoCase(case_id)),
            }
        };
        let workflow = self
            .workflow_at(wf_index)
            .ok_or(EngineError::NoCase(case_id))?;
        Ok(CaseView {
            id: case_id,
            last,
            regs,
            created_ns,
            archived: false,
            timers,
            parent: parent.map(|l| (l.case, self.task_name_of(l.case, l.task), l.instance)),
            children: self
                .children
                .of(case_id)
                .into_iter()
                .map(|(t, i, c)| (workflow.task_name(t).to_string(), i, c))
                .collect(),
            workflow,
        })
    }

    /// The workflow of a live case.
    pub fn case_workflow(&self, case_id: u64) -> Result<(Arc<Workflow>, usize, u32), EngineError> {
        let (shard, slot) = self.locate(case_id).ok_or(EngineError::NoCase(case_id))?;
        let wf = {
            let book = lock(&self.shards[shard].book);
            match book.slots.get(slot as usize) {
                Some(s) if s.id == case_id && s.live => s.workflow,
                _ => return Err(EngineError::NoCase(case_id)),
            }
        };
        let wf = self.workflow_at(wf).ok_or(EngineError::NoCase(case_id))?;
        Ok((wf, shard, slot))
    }

    /// Creates a case of `workflow_id` (default namespace) with initial `data`.
    pub async fn create_case(
        &self,
        workflow_id: &str,
        data: &Data,
    ) -> Result<CaseView, EngineError> {
        self.create_case_in(DEFAULT_NAMESPACE, workflow_id, data)
            .await
    }

    /// Creates a case of workflow `workflow_id` of `namespace` with initial `data`.
    pub async fn create_case_in(
        &self,
        namespace: &str,
        workflow_id: &str,
        data: &Data,
    ) -> Result<CaseView, EngineError> {
        if self.is_draining() {
            return Err(EngineError::Draining);
        }
        let note = NoteSlot::take_current();
        let wf = self.workflow_in(namespace, workflow_id)?;
        refuse_retired(&wf)?;
        let (mask, regs) = initial_registers(&wf, data)?;
        let (shard, slot, id, o) = self.create_of(&wf, mask, regs, None, note).await?;
        wf.cases_created.fetch_add(1, Ordering::Relaxed);
        self.settle(&wf, shard, slot, id, o).await;
        self.view(shard, slot, id)
    }

    /// Creates a case of `wf` (a client's, or with `parent` a sub-net case of the parent's
    /// composite task): allocates its slot and runs its creation. Returns where it lives and
    /// its first outcome.
    async fn create_of(
        &self,
        wf: &Arc<Workflow>,
        mask: u8,
        regs: [i64; REGISTERS],
        parent: Option<workers::ParentLink>,
        note: NoteSlot,
    ) -> Result<(usize, u32, u64, Outcome), EngineError> {
        // With an archive, a full engine frees slots as the archiver stores finished cases:
        // wait for it a little rather than refuse at once.
        let deadline = std::time::Instant::now() + ARCHIVE_WAIT;
        let (id, shard, slot) = loop {
            match self.try_allocate(wf) {
                Ok(x) => break x,
                Err(NoSlot::WaitArchive) if std::time::Instant::now() < deadline => {
                    let notified = self.archived.notified();
                    let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
                }
                Err(r) => return Err(self.refusal_of(r)),
            }
        };
        // Deleted (or retired) since the check above, before this creation took its slot: a
        // deletion's count did not see it, so it must not start (`delete_in`). A sub-net case
        // belongs to its parent, which started before.
        if parent.is_none() {
            if let Err(e) = refuse_retired(wf) {
                self.release_slot(shard, slot, id);
                return Err(e);
            }
        }
        let mut op = Op::new(OpKind::Create, id, slot, 0);
        op.workflow = wf.index;
        op.reg_mask = mask;
        if let Some(link) = parent {
            op.parent = link.case;
            op.task = link.task;
            op.instance = link.instance;
        }
        let mut job = Job::new(vec![op], vec![regs]);
        let noted = wf.clone();
        job.on_executed = note.on_executed(id, move |j| Some(op_result(j, id, &noted, 0)));
        let job = match self.submit(shard, job) {
            Ok(rx) => rx.await.map_err(|_| self.gone())?,
            Err(e) => {
                self.release_slot(shard, slot, id);
                return Err(e);
            }
        };
        let o = job.out.first().copied().unwrap_or_default();
        if o.status != Status::Ok {
            return Err(status_error(&o, id, wf, 0));
        }
        Ok((shard, slot, id, o))
    }

    /// Start, complete, fire or cancel a task of a case.
    pub async fn task_op(
        &self,
        kind: OpKind,
        case_id: u64,
        task: &str,
        data: &Data,
        branch_bits: Option<u32>,
        expect_seq: Option<u64>,
    ) -> Result<CaseView, EngineError> {
        self.op_on_task(kind, case_id, task, None, data, branch_bits, expect_seq)
            .await
            .map(|(view, _)| view)
    }

    /// An op on a multiple-instance task: `Start` with an instance count (`instance`),
    /// `StartInstance` and `CompleteInstance` of instance `instance`, `AddInstance` (returns
    /// the new instance's id; `instance` is not read). Returns the case after it and the
    /// instance.
    pub async fn instance_op(
        &self,
        kind: OpKind,
        case_id: u64,
        task: &str,
        instance: u32,
        data: &Data,
        branch_bits: Option<u32>,
    ) -> Result<(CaseView, u32), EngineError> {
        self.op_on_task(kind, case_id, task, Some(instance), data, branch_bits, None)
            .await
    }

    // One private entry for task and instance ops: its arguments are the request's fields.
    #[allow(clippy::too_many_arguments)]
    async fn op_on_task(
        &self,
        kind: OpKind,
        case_id: u64,
        task: &str,
        instance: Option<u32>,
        data: &Data,
        branch_bits: Option<u32>,
        expect_seq: Option<u64>,
    ) -> Result<(CaseView, u32), EngineError> {
        if self.is_draining() {
            return Err(EngineError::Draining);
        }
        let note = NoteSlot::take_current();
        let (wf, shard, slot) = self.case_workflow(case_id)?;
        let t = wf.task(task)?;
        needs_client_bits(&wf, t, kind, branch_bits)?;
        self.refuse_composite_op(&wf, case_id, t, kind)?;
        let mut op = Op::new(kind, case_id, slot, t);
        if let Some(i) = instance {
            op.instance = i;
            if kind == OpKind::Start {
                op.flags |= workers::OP_COUNT;
            }
        }
        if let Some(seq) = expect_seq {
            op.flags |= OP_EXPECT_SEQ;
            op.expect_seq = u32::try_from(seq).map_err(|_| EngineError::BadData {
                reason: format!(
                    "expected_seq {seq} is beyond 2^32-1, the largest sequence an operation can \
                     expect"
                ),
            })?;
        }
        let mut payload = Vec::new();
        if matches!(
            kind,
            OpKind::Complete | OpKind::Fire | OpKind::CompleteInstance
        ) {
            if !data.is_empty() {
                let (mask, regs) = wf.registers(data)?;
                op.reg_mask = mask;
                payload.push(regs);
            }
            if let Some(b) = branch_bits {
                op.flags |= OP_USE_BITS;
                op.branch_bits = b;
            }
        }
        let o = match self.op_settled(&wf, shard, slot, op, payload, note).await {
            Ok(o) => o,
            Err(e) => {
                return Err(match (e, instance, kind) {
                    (EngineError::Precondition(m), Some(i), OpKind::StartInstance)
                    | (EngineError::Precondition(m), Some(i), OpKind::CompleteInstance) => {
                        EngineError::Precondition(format!("{m} (instance {i})"))
                    }
                    (e, ..) => e,
                })
            }
        };
        Ok((self.view(shard, slot, case_id)?, o.instance))
    }

    /// Cancels a case.
    pub async fn cancel_case(&self, case_id: u64) -> Result<CaseView, EngineError> {
        if self.is_draining() {
            return Err(EngineError::Draining);
        }
        let note = NoteSlot::take_current();
        let (wf, shard, slot) = self.case_workflow(case_id)?;
        let op = Op::new(OpKind::CancelCase, case_id, slot, 0);
        let mut job = Job::new(vec![op], Vec::new());
        let noted = wf.clone();
        job.on_executed =
            note.on_executed(case_id, move |j| Some(op_result(j, case_id, &noted, 0)));
        let job = self.run(shard, job).await?;
        let o = job.out.first().copied().unwrap_or_default();
        if o.status != Status::Ok {
            return Err(status_error(&o, case_id, &wf, 0));
        }
        if wf.settles() {
            // its sub-net cases are cancelled with it; a sub-net case cancels its parent's task
            self.reconcile(case_id).await;
        }
        self.view(shard, slot, case_id)
    }

    /// The current state of a case: from memory, else (when there is an archive) from the
    /// archive (blocking: call it off the async runtime's workers when an archive is set).
    pub fn get_case(&self, case_id: u64) -> Result<CaseView, EngineError> {
        let (shard, slot) = self.locate(case_id).ok_or(EngineError::NoCase(case_id))?;
        match self.view(shard, slot, case_id) {
            Err(EngineError::NoCase(_)) => self
                .archived_case(case_id)?
                .and_then(|f| self.archived_view(f))
                .ok_or(EngineError::NoCase(case_id)),
            other => other,
        }
    }

    /// Read-committed: returns once every op that case `case_id`'s worker ran before this call
    /// is durable (the batch hook released a job queued behind them: the journal synced them,
    /// the cluster's JetStream acknowledged them), so a state read before the call was
    /// committed when it returns. A case not held in memory returns at once (its ops ran long
    /// before). UNAVAILABLE when the log gave up on the ops before it (they may be lost: a
    /// state read before shows them, the log may not).
    pub async fn commit_barrier(&self, case_id: u64) -> Result<(), EngineError> {
        let Some((shard, slot)) = self.locate(case_id) else {
            return Ok(());
        };
        let workflow = {
            let book = lock(&self.shards[shard].book);
            match book.slots.get(slot as usize) {
                Some(s) if s.id == case_id => s.workflow,
                _ => return Ok(()),
            }
        };
        // A Save op changes nothing and logs nothing; its job is released in order behind
        // every job before it.
        let mut op = Op::new(OpKind::Save, case_id, slot, 0);
        op.workflow = workflow;
        let mut job = Job::new(vec![op], Vec::new());
        job.saved = vec![workers::SavedCase::default()];
        let rx = loop {
            match self.submit_job(shard, job) {
                Ok(rx) => break rx,
                Err((j, true)) => {
                    job = j;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(_) => return Err(EngineError::Draining),
            }
        };
        rx.await.map(|_| ()).map_err(|_| {
            self.hook.refusal().unwrap_or_else(|| {
                EngineError::Unavailable(
                    "the operations before this read could not be made durable".into(),
                )
            })
        })
    }

    /// A case from the archive, if there is one and it holds the case.
    fn archived_case(&self, case_id: u64) -> Result<Option<FinishedCase>, EngineError> {
        let Some(a) = &self.cfg.archive else {
            return Ok(None);
        };
        a.get(case_id).map_err(|e| archive_error(a.as_ref(), e))
    }

    /// A page of archived cases matching `q` that are no longer in memory (those still held
    /// are listed from memory), and the (creation time, case id) to continue after. Blocking.
    /// Empty without an archive.
    fn archived_page(
        &self,
        q: &ArchiveQuery,
    ) -> Result<(Vec<FinishedCase>, Option<ArchivePosition>), EngineError> {
        let Some(a) = &self.cfg.archive else {
            return Ok((Vec::new(), None));
        };
        // This engine's partition only: in cluster mode every partition's engine shares one
        // archive, and a listing gathers each partition's from its owner.
        let ids = crate::ids::partition_ids(self.cfg.partition);
        let q = ArchiveQuery {
            case_ids: q.case_ids.start.max(ids.start)..q.case_ids.end.min(ids.end),
            ..q.clone()
        };
        let mut found = a.list(&q).map_err(|e| archive_error(a.as_ref(), e))?;
        let next = (found.len() >= q.limit.max(1))
            .then(|| found.last().map(|f| (f.created_ns, f.case_id)))
            .flatten();
        found.retain(|f| !self.holds(f.case_id));
        Ok((found, next))
    }

    fn archived_view(&self, f: FinishedCase) -> Option<CaseView> {
        Some(CaseView {
            id: f.case_id,
            workflow: self.workflow_at(f.workflow)?,
            last: f.last,
            regs: f.regs,
            created_ns: f.created_ns,
            archived: true,
            timers: Vec::new(),
            // the archive keeps no link (a finished case's parent link has done its work)
            parent: None,
            children: Vec::new(),
        })
    }

    /// Archived cases matching `q` that are no longer in memory (those still held are listed
    /// by [`Engine::list_cases`]), as views; and the (creation time, case id) to continue after.
    /// Blocking. Empty without an archive.
    pub fn list_archived(
        &self,
        q: &ArchiveQuery,
    ) -> Result<(Vec<CaseView>, Option<ArchivePosition>), EngineError> {
        let (found, next) = self.archived_page(q)?;
        let views = found
            .into_iter()
            .filter_map(|f| self.archived_view(f))
            .collect();
        Ok((views, next))
    }

    /// Archived cases matching `q` (not held in memory) with their histories, for export; and
    /// where to continue. Blocking. Empty without an archive.
    pub fn archived_histories(
        &self,
        q: &ArchiveQuery,
    ) -> Result<(Vec<CaseHistory>, Option<ArchivePosition>), EngineError> {
        let (found, next) = self.archived_page(&ArchiveQuery {
            with_history: true,
            ..q.clone()
        })?;
        Ok((found.into_iter().map(history_of_finished).collect(), next))
    }

    /// Whether the engine holds case `id` in memory.
    pub fn holds(&self, case_id: u64) -> bool {
        self.locate(case_id).is_some_and(|(shard, slot)| {
            lock(&self.shards[shard].book)
                .slots
                .get(slot as usize)
                .is_some_and(|s| s.id == case_id && s.live)
        })
    }

    /// Every live case matching the filters (`workflow`: the kernel indices of the versions
    /// wanted), shard by shard.
    pub fn list_cases(&self, workflow: Option<&[u16]>, state: Option<State>) -> Vec<Vec<CaseView>> {
        let wfs = self.workflows();
        self.shards
            .iter()
            .map(|s| {
                let book = lock(&s.book);
                book.slots
                    .iter()
                    .filter(|b| b.live && b.id != 0)
                    .filter(|b| workflow.is_none_or(|w| w.contains(&b.workflow)))
                    .filter(|b| state.is_none_or(|st| st == b.last.state))
                    .filter_map(|b| {
                        let view = CaseView {
                            id: b.id,
                            workflow: wfs.get(usize::from(b.workflow))?.clone(),
                            last: b.last,
                            regs: b.regs,
                            created_ns: b.created_ns,
                            archived: false,
                            timers: b.timers.clone(),
                            parent: None,
                            children: Vec::new(),
                        };
                        Some((view, b.parent))
                    })
                    .collect::<Vec<_>>()
            })
            .map(|found| {
                // parents named off the shard's lock (a parent's book may be another shard's)
                found
                    .into_iter()
                    .map(|(mut view, parent)| {
                        view.parent =
                            parent.map(|l| (l.case, self.task_name_of(l.case, l.task), l.instance));
                        view
                    })
                    .collect()
            })
            .collect()
    }

    /// The recorded history of cases, for export: (case id, workflow, created, history,
    /// dropped). `case_id` 0 with a workflow (the kernel indices of its versions): every case
    /// of it.
    pub fn histories(
        &self,
        case_id: u64,
        workflow: Option<&[u16]>,
    ) -> Result<Vec<CaseHistory>, EngineError> {
        if case_id != 0 {
            let (shard, slot) = self.locate(case_id).ok_or(EngineError::NoCase(case_id))?;
            let book = lock(&self.shards[shard].book);
            return match book.slots.get(slot as usize) {
                Some(s) if s.id == case_id && s.live => Ok(vec![history_of(s)]),
                _ => Err(EngineError::NoCase(case_id)),
            };
        }
        let mut out = Vec::new();
        for s in &self.shards {
            let book = lock(&s.book);
            for b in book.slots.iter().filter(|b| b.live && b.id != 0) {
                if workflow.is_none_or(|w| w.contains(&b.workflow)) {
                    out.push(history_of(b));
                }
            }
        }
        out.sort_by_key(|h| h.created_ns);
        Ok(out)
    }

    /// The live cases of `workflow` (the kernel indices of the versions wanted; all when None)
    /// created in `created` (nanoseconds since
    /// the Unix epoch, end excluded), oldest first: by creation time, ties in the order
    /// [`Engine::histories`] uses. Cheap (24 bytes a case, one shard lock at a time); their
    /// histories are read one by one with [`Engine::history`], so a case evicted meanwhile is
    /// simply gone.
    pub fn case_refs(
        &self,
        workflow: Option<&[u16]>,
        created: std::ops::Range<u64>,
    ) -> Vec<CaseRef> {
        let mut out = Vec::new();
        for s in &self.shards {
            let book = lock(&s.book);
            out.extend(
                book.slots
                    .iter()
                    .filter(|b| b.live && b.id != 0)
                    .filter(|b| workflow.is_none_or(|w| w.contains(&b.workflow)))
                    .filter(|b| created.contains(&b.created_ns))
                    .map(|b| CaseRef {
                        case_id: b.id,
                        workflow: b.workflow,
                        created_ns: b.created_ns,
                    }),
            );
        }
        out.sort_by_key(|r| r.created_ns);
        out
    }

    /// One live case's recorded history (a copy taken under its shard's lock); NoCase when the
    /// id is unknown or its slot was reused.
    pub fn history(&self, case_id: u64) -> Result<CaseHistory, EngineError> {
        let (shard, slot) = self.locate(case_id).ok_or(EngineError::NoCase(case_id))?;
        {
            let book = lock(&self.shards[shard].book);
            if let Some(s) = book.slots.get(slot as usize) {
                if s.id == case_id && s.live {
                    return Ok(history_of(s));
                }
            }
        }
        self.archived_case(case_id)?
            .map(history_of_finished)
            .ok_or(EngineError::NoCase(case_id))
    }

    /// From now on, each executed job carries the events its ops produced
    /// ([`crate::workers::Job::exported`]) to the batch hook: the event log writes them for its
    /// exporters. Set before serving (the first jobs after it carry their events).
    pub fn set_export_events(&self, on: bool) {
        self.export_events.store(on, Ordering::SeqCst);
    }

    /// Subscribes to a shard's events; with `history_of`, atomically with a copy of that
    /// case's history so far (no event is missed or seen twice).
    pub fn subscribe(
        &self,
        shard: usize,
        history_of: Option<(u32, u64)>,
    ) -> Result<Subscription, EngineError> {
        let ctl = self
            .shards
            .get(shard)
            .ok_or(EngineError::Internal("shard".into()))?;
        let book = lock(&ctl.book);
        let rx = ctl.events.subscribe();
        let mut hist = Vec::new();
        let mut finished = false;
        if let Some((slot, id)) = history_of {
            match book.slots.get(slot as usize) {
                Some(s) if s.id == id && s.live => {
                    hist = s.history.iter().copied().collect();
                    finished = s.terminal;
                }
                _ => return Err(EngineError::NoCase(id)),
            }
        }
        Ok(Subscription {
            rx,
            seq: book.event_seq,
            history: hist,
            finished,
        })
    }

    // ---------------------------------------------------------------- bulk

    /// Queues a bulk batch. Per-event problems (unknown case, bad task name, full ring) become
    /// that event's result; the returned pending batch resolves to one result per event.
    pub fn submit_batch(&self, events: Vec<BatchEvent>) -> PendingBatch {
        self.submit_batch_in(DEFAULT_NAMESPACE, events)
    }

    /// [`Engine::submit_batch`] with the workflows of creations looked up in `namespace`.
    pub fn submit_batch_in(&self, namespace: &str, events: Vec<BatchEvent>) -> PendingBatch {
        let n = events.len();
        let mut results: Vec<EventResult> = vec![
            EventResult {
                case_id: 0,
                error: None,
                state: None,
            };
            n
        ];
        let draining = self.is_draining();
        let mut per_shard: Vec<ShardBatch> = (0..self.shards.len())
            .map(|_| ShardBatch::default())
            .collect();
        let mut wf_cache: Option<Arc<Workflow>> = None;
        let mut slow = Vec::new();
        for (pos, ev) in events.into_iter().enumerate() {
            if draining {
                results[pos] = EventResult::refused(EngineError::Draining, ev.case_id);
                continue;
            }
            if self.is_auto_event(namespace, &ev) {
                slow.push((pos as u32, ev));
                continue;
            }
            match self.prepare(namespace, &ev, &mut wf_cache) {
                Ok((shard, op, regs, wf)) => {
                    let b = &mut per_shard[shard];
                    let mut op = op;
                    if let Some(r) = regs {
                        op.data = b.data.len() as u32;
                        b.data.push(r);
                    }
                    b.ops.push(op);
                    b.pos.push(pos as u32);
                    b.wfs.push(wf);
                }
                Err(e) => results[pos] = EventResult::refused(e, ev.case_id),
            }
        }
        let mut waits = Vec::new();
        for (shard, b) in per_shard.into_iter().enumerate() {
            if b.ops.is_empty() {
                continue;
            }
            let creates: Vec<(u32, u64)> = b
                .ops
                .iter()
                .filter(|o| o.kind == OpKind::Create)
                .map(|o| (o.slot, o.case_id))
                .collect();
            match self.submit(shard, Job::new(b.ops, b.data)) {
                Ok(rx) => waits.push(ShardWait {
                    rx,
                    pos: b.pos,
                    wfs: b.wfs,
                }),
                Err(e) => {
                    for (slot, id) in creates {
                        self.release_slot(shard, slot, id);
                    }
                    for p in b.pos {
                        let id = results[p as usize].case_id;
                        results[p as usize] = EventResult::refused(e.clone(), id);
                    }
                }
            }
        }
        PendingBatch {
            results,
            waits,
            slow,
            namespace: namespace.to_string(),
        }
    }

    fn prepare(
        &self,
        namespace: &str,
        ev: &BatchEvent,
        cache: &mut Option<Arc<Workflow>>,
    ) -> Result<Prepared, EngineError> {
        let kind = ev.op.map_err(|op| EngineError::BadData {
            reason: format!("event op {op} is not a valid EventOp"),
        })?;
        let expect_seq = ev.expect_seq()?;
        if kind == OpKind::Create {
            let wf = match cache {
                Some(w) if w.id == ev.workflow_id => w.clone(),
                _ => {
                    let w = self.workflow_in(namespace, &ev.workflow_id)?;
                    *cache = Some(w.clone());
                    w
                }
            };
            refuse_retired(&wf)?;
            let (mask, regs) = initial_registers(&wf, &ev.data)?;
            let (id, shard, slot) = self.allocate(&wf)?;
            // as in `create_case_in`: deleted since the check, before the slot was taken
            if let Err(e) = refuse_retired(&wf) {
                self.release_slot(shard, slot, id);
                return Err(e);
            }
            let mut op = Op::new(OpKind::Create, id, slot, 0);
            op.workflow = wf.index;
            op.reg_mask = mask;
            return Ok((shard, op, Some(regs), wf.index));
        }
        let (shard, slot) = self
            .locate(ev.case_id)
            .ok_or(EngineError::NoCase(ev.case_id))?;
        let needs_wf = matches!(ev.task, Some(TaskRef::Name(_)))
            || !ev.data.is_empty()
            || self.client_predicates.load(Ordering::Relaxed);
        let (t, wf_index, regs) = if needs_wf {
            let (wf, _, _) = self.case_workflow(ev.case_id)?;
            let t = match &ev.task {
                Some(TaskRef::Name(name)) => wf.task(name)?,
                Some(TaskRef::Index(i)) => u8::try_from(*i).unwrap_or(u8::MAX),
                None => 0,
            };
            needs_client_bits(&wf, t, kind, ev.branch_bits)?;
            let regs = if !ev.data.is_empty() && matches!(kind, OpKind::Complete | OpKind::Fire) {
                Some(wf.registers(&ev.data)?)
            } else {
                None
            };
            (t, wf.index, regs)
        } else {
            let t = match &ev.task {
                Some(TaskRef::Index(i)) => u8::try_from(*i).unwrap_or(u8::MAX),
                _ => 0,
            };
            (t, u16::MAX, None)
        };
        if kind != OpKind::CancelCase && ev.task.is_none() {
            return Err(EngineError::BadData {
                reason: format!("event on case {} names no task", ev.case_id),
            });
        }
        let mut op = Op::new(kind, ev.case_id, slot, t);
        if let Some(seq) = expect_seq {
            op.flags |= OP_EXPECT_SEQ;
            op.expect_seq = seq;
        }
        if let Some(b) = ev.branch_bits {
            if matches!(kind, OpKind::Complete | OpKind::Fire) {
                op.flags |= OP_USE_BITS;
                op.branch_bits = b;
            }
        }
        let regs = regs.map(|(mask, r)| {
            op.reg_mask = mask;
            r
        });
        Ok((shard, op, regs, wf_index))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Default)]
struct ShardBatch {
    ops: Vec<Op>,
    data: Vec<[i64; REGISTERS]>,
    pos: Vec<u32>,
    wfs: Vec<u16>,
}

/// A shard's share of a bulk batch in flight: its reply, the events' positions in the batch
/// and their workflows (u16::MAX: not resolved).
struct ShardWait {
    rx: oneshot::Receiver<Box<Job>>,
    pos: Vec<u32>,
    wfs: Vec<u16>,
}

/// An event resolved for submission: shard, op, register payload, workflow index.
type Prepared = (usize, Op, Option<[i64; REGISTERS]>, u16);

/// A queued bulk batch: await [`PendingBatch::finish`] for its results.
pub struct PendingBatch {
    results: Vec<EventResult>,
    waits: Vec<ShardWait>,
    /// Events on workflows with automatic tasks, with their positions: run one by one per case
    /// (`auto::apply_all`) once the rest of the batch is done.
    slow: Vec<(u32, BatchEvent)>,
    /// The namespace creations look their workflow up in.
    namespace: String,
}

impl PendingBatch {
    /// Waits for every shard's reply and returns one result per event, in request order.
    pub async fn finish(self, engine: &Engine) -> Vec<EventResult> {
        let PendingBatch {
            mut results,
            waits,
            slow,
            namespace,
        } = self;
        for ShardWait { rx, pos, wfs } in waits {
            match rx.await {
                Ok(job) => {
                    for (i, p) in pos.iter().enumerate() {
                        let (Some(op), Some(o), Some(r)) =
                            (job.ops.get(i), job.out.get(i), results.get_mut(*p as usize))
                        else {
                            continue;
                        };
                        *r = if o.status == Status::Ok {
                            if op.kind == OpKind::Create {
                                if let Some(wf) = engine.workflow_at(op.workflow) {
                                    wf.cases_created.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            EventResult {
                                case_id: op.case_id,
                                error: None,
                                state: Some((o.state, o.seq)),
                            }
                        } else {
                            let wf = wfs
                                .get(i)
                                .and_then(|&w| engine.workflow_at(w))
                                .or_else(|| engine.case_workflow(op.case_id).ok().map(|x| x.0));
                            let e = match wf {
                                Some(wf) => status_error(o, op.case_id, &wf, op.task),
                                None => EngineError::NoCase(op.case_id),
                            };
                            let mut r = EventResult::refused(e, op.case_id);
                            if o.status != Status::NoCase {
                                r.state = Some((o.state, o.seq));
                            }
                            r
                        };
                    }
                }
                Err(_) => {
                    let e = engine.gone();
                    for p in pos {
                        if let Some(r) = results.get_mut(p as usize) {
                            let id = r.case_id;
                            *r = EventResult::refused(e.clone(), id);
                        }
                    }
                }
            }
        }
        if !slow.is_empty() {
            for (pos, r) in engine.apply_all(&namespace, slow).await {
                if let Some(slot) = results.get_mut(pos as usize) {
                    *slot = r;
                }
            }
        }
        results
    }
}

fn initial_registers(wf: &Workflow, data: &Data) -> Result<(u8, [i64; REGISTERS]), EngineError> {
    let mut regs = wf.initial_regs;
    let (mask, given) = wf.registers(data)?;
    for (r, v) in given.iter().enumerate() {
        if mask & (1 << r) != 0 {
            regs[r] = *v;
        }
    }
    Ok((u8::MAX, regs))
}

/// The error for a refused op, naming the case and task.
pub fn status_error(o: &Outcome, case_id: u64, wf: &Workflow, task: u8) -> EngineError {
    let (status, state) = (o.status, o.state);
    let t = wf.task_name(task);
    match status {
        Status::Ok => EngineError::Internal("ok is not an error".into()),
        Status::NoCase => EngineError::NoCase(case_id),
        Status::NoWorkflow => EngineError::NoWorkflow(wf.id.clone()),
        Status::NotEnabled => {
            EngineError::Precondition(format!("task '{t}' of case {case_id} is not enabled"))
        }
        Status::NotStarted => EngineError::Precondition(format!(
            "task '{t}' of case {case_id} was not started: start it before completing it"
        )),
        Status::SafetyViolation => EngineError::Precondition(format!(
            "completing task '{t}' of case {case_id} would put a second token on a marked \
             condition (safety violation): the case is unchanged"
        )),
        Status::CaseComplete => EngineError::CaseDone {
            case: case_id,
            state: if state == State::Cancelled {
                "cancelled"
            } else {
                "complete"
            },
        },
        Status::BadTask => EngineError::NoTask {
            task: format!("#{task}"),
            workflow: wf.id.clone(),
        },
        Status::Refused => {
            EngineError::Internal(format!("the kernel refused an op on case {case_id}"))
        }
        Status::Stopped => EngineError::Draining,
        Status::MiTask => EngineError::Precondition(format!(
            "task '{t}' of case {case_id} is multiple-instance: complete its instances \
             (CompleteInstance) instead"
        )),
        Status::NotMiTask => EngineError::Precondition(format!(
            "task '{t}' of case {case_id} is not multiple-instance"
        )),
        Status::BadInstance => EngineError::Precondition(format!(
            "task '{t}' of case {case_id} has no such instance in the state this needs \
             (not created, already started, not started or already completed)"
        )),
        Status::MiLimit => EngineError::Precondition(format!(
            "task '{t}' of case {case_id}: the instance count would leave the task's \
             minimum..maximum (at most {} per task), or the task creates its instances \
             statically",
            knhk_kernel::MI_MAX_INSTANCES
        )),
        Status::MiWindow => EngineError::Exhausted(format!(
            "task '{t}' of case {case_id}: an instance may start at most {} past the oldest \
             unfinished one: complete earlier instances first",
            knhk_kernel::MI_WINDOW
        )),
        Status::SeqMismatch => EngineError::Precondition(format!(
            "case {case_id} is at sequence {}, not the one the request expected: the operation \
             was not applied (a retry of an operation that already took effect sees this)",
            o.seq
        )),
    }
}

/// A completion of a task whose branches depend on predicates the client evaluates must carry
/// the client's branch bits: without them the kernel would treat those flows as unguarded and
/// pick one on its own.
fn needs_client_bits(
    wf: &Workflow,
    t: u8,
    kind: OpKind,
    bits: Option<u32>,
) -> Result<(), EngineError> {
    if bits.is_some()
        || !matches!(
            kind,
            OpKind::Complete | OpKind::Fire | OpKind::CompleteInstance
        )
    {
        return Ok(());
    }
    match wf.tasks.get(usize::from(t)) {
        Some(meta) if !meta.client_predicates.is_empty() => Err(EngineError::BadData {
            reason: format!(
                "task '{}' chooses its branches by predicates the client evaluates: give \
                 branch_bits ({})",
                meta.name,
                meta.client_predicates
                    .iter()
                    .map(|p| format!("bit {}: {}", p.bit, crate::error::echo(&p.predicate)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
        _ => Ok(()),
    }
}

fn archive_error(a: &dyn CaseArchive, e: String) -> EngineError {
    EngineError::Unavailable(format!("archive ({}): {e}", a.kind()))
}

fn history_of_finished(f: FinishedCase) -> CaseHistory {
    CaseHistory {
        case_id: f.case_id,
        workflow: f.workflow,
        created_ns: f.created_ns,
        events: f.history,
        dropped: f.history_dropped,
    }
}

fn history_of(s: &SlotBook) -> CaseHistory {
    CaseHistory {
        case_id: s.id,
        workflow: s.workflow,
        created_ns: s.created_ns,
        events: s.history.iter().copied().collect(),
        dropped: s.history_dropped,
    }
}

/// Why a creation found no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoSlot {
    /// Every slot holds a running case.
    Full,
    /// The oldest finished case waits for the archive: a slot frees once it is stored.
    WaitArchive,
}

/// What one shard has for a new case.
enum Reuse {
    Slot(u32),
    WaitArchive,
    Full,
}

/// A slot for a new case: a free one, else the oldest finished case's — with an archive, only
/// once the archive holds it (`archived`); an older case waiting for the archive blocks the
/// ones behind it, so eviction stays oldest first.
fn pop_reusable(book: &mut Book, archived_only: bool) -> Reuse {
    if let Some(s) = book.free.pop() {
        return Reuse::Slot(s);
    }
    while let Some(&(slot, id)) = book.done.front() {
        match book.slots.get(slot as usize) {
            Some(s) if s.id == id && s.terminal => {
                if archived_only && !s.archived {
                    return Reuse::WaitArchive;
                }
                book.done.pop_front();
                return Reuse::Slot(slot);
            }
            _ => {
                book.done.pop_front();
            }
        }
    }
    Reuse::Full
}

// -------------------------------------------------------------------- reply threads

struct ReplyCtx {
    shard: usize,
    book: Arc<Mutex<Book>>,
    events: broadcast::Sender<Arc<EventBatch>>,
    hook: Arc<dyn BatchHook>,
    history_limit: usize,
    /// To the archiver: (shard, slot, id) of each case that became terminal.
    finished: Option<std::sync::mpsc::Sender<(usize, u32, u64)>>,
    timers: Arc<timers::Timers>,
    /// Whether jobs carry their events to the batch hook ([`Job::exported`]).
    export: Arc<AtomicBool>,
    /// Live sub-net cases by parent (kept by the reply threads from creations and restores).
    children: Arc<subnets::Children>,
}

fn reply_loop(mut port: ReplyPort, ctx: ReplyCtx) {
    // Replies follow a worker's work by microseconds: spin briefly, yield up to 1 ms, then park.
    let mut backoff = workers::Backoff::new(Duration::from_micros(20), Duration::from_millis(1));
    let mut scratch: Vec<WatchItem> = Vec::with_capacity(256);
    loop {
        let mut any = false;
        while let Some(mut job) = port.consumer.try_pop() {
            any = true;
            if job.time_ns == 0 {
                job.time_ns = now_ns();
            }
            record(&ctx, &mut job, &mut scratch);
            if let Some(f) = job.on_executed.0.take() {
                f(&job);
            }
            ctx.hook.executed(ctx.shard, job);
        }
        if any {
            backoff.reset();
            continue;
        }
        if port.worker_done.load(Ordering::SeqCst) && port.consumer.is_empty() {
            break;
        }
        match backoff.idle() {
            workers::IdleStep::Spin => std::hint::spin_loop(),
            workers::IdleStep::Yield => thread::yield_now(),
            workers::IdleStep::Park(timeout) => {
                let parking = port.parker.announce();
                if port.consumer.is_empty() && !port.worker_done.load(Ordering::SeqCst) {
                    parking.park(timeout);
                }
            }
        }
    }
}

/// Records a job's outcomes in the book and publishes watch events.
fn record(ctx: &ReplyCtx, job: &mut Job, scratch: &mut Vec<WatchItem>) {
    let now = job.time_ns;
    let Job {
        ops,
        out,
        saved,
        data,
        exported,
        ..
    } = job;
    scratch.clear();
    let mut book = lock(&ctx.book);
    // Under the book lock: a watcher subscribes under it too, so it sees every event
    // produced after its subscription point.
    let publishing = ctx.events.receiver_count() > 0;
    let exporting = ctx.export.load(Ordering::Relaxed);
    let watching = publishing || exporting;
    let book = &mut *book;
    let mut produced: u64 = 0;
    for (op, o) in ops.iter().zip(out.iter()) {
        let held_before = book.history_held(op.slot);
        'op: {
            let Some(s) = book.slots.get_mut(op.slot as usize) else {
                break 'op;
            };
            if s.id != op.case_id || op.case_id == 0 {
                break 'op;
            }
            // Checkpoint ops produce no events: a save copies what the book knows of the case
            // (as of exactly the ops the worker ran before it), a restore installs it.
            if op.kind == OpKind::Save {
                if let (Status::Ok, Some(v)) = (o.status, saved.get_mut(op.data as usize)) {
                    v.created_ns = s.created_ns;
                    v.regs = s.regs;
                    v.terminal = s.terminal;
                    v.history = s.history.iter().copied().collect();
                    v.history_dropped = s.history_dropped;
                    v.timers = s.timers.clone();
                    v.parent = s.parent;
                }
                break 'op;
            }
            if op.kind == OpKind::Restore {
                if let (Status::Ok, Some(v)) = (o.status, saved.get_mut(op.data as usize)) {
                    s.last = *o;
                    s.live = true;
                    s.created_ns = v.created_ns;
                    s.regs = v.regs;
                    s.history = std::mem::take(&mut v.history).into();
                    s.history_dropped = v.history_dropped;
                    s.timers = std::mem::take(&mut v.timers);
                    s.parent = v.parent;
                    if let Some(link) = s.parent {
                        ctx.children.link(link, op.case_id);
                    }
                    ctx.timers
                        .restore(ctx.shard, op.slot, op.case_id, &s.timers);
                    if !v.terminal {
                        if let Some(n) = book.unfinished.get_mut(usize::from(s.workflow)) {
                            *n += 1;
                        }
                    }
                    if v.terminal && !s.terminal {
                        s.terminal = true;
                        s.finished_ns = s.history.back().map_or(s.created_ns, |h| h.time_ns);
                        book.done.push_back((op.slot, op.case_id));
                        if let Some(tx) = &ctx.finished {
                            let _ = tx.send((ctx.shard, op.slot, op.case_id));
                        }
                    }
                } else {
                    s.id = 0;
                    book.free.push(op.slot);
                }
                break 'op;
            }
            if o.status != Status::Ok {
                if op.kind == OpKind::Create {
                    s.id = 0;
                    book.free.push(op.slot);
                }
                break 'op;
            }
            let was_state = s.last.state;
            let was_live = s.live;
            let prev = s.last;
            s.last = *o;
            if op.kind == OpKind::Create {
                s.live = true;
                s.created_ns = now;
                s.regs = job_data(data, op).copied().unwrap_or_default();
                if let Some(link) = workers::ParentLink::of_create(op) {
                    s.parent = Some(link);
                    ctx.children.link(link, op.case_id);
                }
            } else if op.reg_mask != 0 {
                if let Some(vals) = job_data(data, op) {
                    for (r, v) in vals.iter().enumerate() {
                        if op.reg_mask & (1 << r) != 0 {
                            s.regs[r] = *v;
                        }
                    }
                }
            }
            // tasks whose episode ended in this op (a timer armed for them falls)
            let mut ended = 0u64;
            let mut emit = |task: u8, kind: EventKind, lc: Option<Lifecycle>, instance: u32| {
                produced += 1;
                if let Some(lc) = lc {
                    if lc != Lifecycle::Start && instance == NO_INSTANCE && task < 64 {
                        ended |= 1u64 << task;
                    }
                    if s.history.len() >= ctx.history_limit {
                        s.history.pop_front();
                        s.history_dropped += 1;
                    }
                    s.history.push_back(Hist {
                        time_ns: now,
                        task,
                        lifecycle: lc,
                        instance,
                    });
                }
                if watching {
                    scratch.push(WatchItem {
                        case_id: op.case_id,
                        workflow: s.workflow,
                        kind,
                        task,
                        lifecycle: lc,
                        instance,
                        time_ns: now,
                        seq: o.seq,
                        state: o.state,
                        marking: o.marking,
                        enabled: o.enabled,
                    });
                }
            };
            derive(op, o, &prev, was_live, &mut emit);
            if op.kind == OpKind::Create && !was_live {
                if let Some(n) = book.unfinished.get_mut(usize::from(s.workflow)) {
                    *n += 1;
                }
            }
            if o.state != was_state || !was_live {
                match o.state {
                    State::Complete => emit(0, EventKind::CaseCompleted, None, NO_INSTANCE),
                    State::Cancelled => emit(0, EventKind::CaseCancelled, None, NO_INSTANCE),
                    State::Deadlocked => emit(0, EventKind::CaseDeadlocked, None, NO_INSTANCE),
                    State::Running => {}
                }
            }
            if !s.timers.is_empty() || o.state == State::Running {
                ctx.timers.update(
                    ctx.shard,
                    op.slot,
                    op.case_id,
                    s.workflow,
                    &mut s.timers,
                    o,
                    ended,
                    &s.regs,
                    now,
                );
            }
            if matches!(o.state, State::Complete | State::Cancelled) && !s.terminal {
                s.terminal = true;
                s.finished_ns = now;
                if let Some(n) = book.unfinished.get_mut(usize::from(s.workflow)) {
                    *n = n.saturating_sub(1);
                }
                book.done.push_back((op.slot, op.case_id));
                if let Some(tx) = &ctx.finished {
                    let _ = tx.send((ctx.shard, op.slot, op.case_id));
                }
            }
        }
        let held_after = book.history_held(op.slot);
        book.account_history(held_before, held_after);
    }
    let first = book.event_seq;
    book.event_seq += produced;
    if exporting {
        exported.clear();
        exported.extend_from_slice(scratch);
    }
    if publishing && !scratch.is_empty() {
        let items = std::mem::replace(scratch, Vec::with_capacity(256));
        let _ = ctx.events.send(Arc::new(EventBatch {
            shard: ctx.shard,
            first,
            items,
        }));
    }
}

fn job_data<'a>(data: &'a [[i64; REGISTERS]], op: &Op) -> Option<&'a [i64; REGISTERS]> {
    data.get(op.data as usize)
}

/// The lifecycle events one successful op produced, from its before/after sets.
///
/// A multiple-instance task has events per instance (`Hist::instance`), none of its own: an
/// instance's start and complete, and an abort for each started instance that an op withdraws
/// (the threshold, a cancellation, the case's end), found against `prev`, the case before.
fn derive(
    op: &Op,
    o: &Outcome,
    prev: &Outcome,
    was_live: bool,
    emit: &mut impl FnMut(u8, EventKind, Option<Lifecycle>, u32),
) {
    use EventKind::{CaseCreated, Task};
    let t = op.task;
    let tb = if t < 64 { 1u64 << t } else { 0 };
    // MI tasks live before the op: their instances speak for them
    let mi_before = if op.kind == OpKind::Create || op.kind == OpKind::Restore {
        0
    } else {
        prev.mi_live
    };
    let aborted = o.busy_before & !o.busy & !tb & !mi_before;
    let withdrawn = o.enabled_before & !o.enabled & !o.busy & !tb;
    match op.kind {
        OpKind::Create => {
            if !was_live {
                emit(0, CaseCreated, None, NO_INSTANCE);
            }
        }
        OpKind::Start => {
            if o.mi_live & tb == 0 {
                emit(t, Task, Some(Lifecycle::Start), NO_INSTANCE);
            }
            for w in bits(withdrawn) {
                emit(w as u8, Task, Some(Lifecycle::Withdraw), NO_INSTANCE);
            }
        }
        OpKind::Complete | OpKind::Fire => {
            let by_timer = op.flags & workers::OP_TIMER != 0;
            if op.kind == OpKind::Fire && !by_timer {
                emit(t, Task, Some(Lifecycle::Start), NO_INSTANCE);
            }
            for a in bits(aborted) {
                emit(a as u8, Task, Some(Lifecycle::AteAbort), NO_INSTANCE);
            }
            for w in bits(withdrawn) {
                emit(w as u8, Task, Some(Lifecycle::Withdraw), NO_INSTANCE);
            }
            let lc = match (by_timer, op.kind) {
                (false, _) => Lifecycle::Complete,
                (true, OpKind::Fire) => Lifecycle::TimerSkip,
                (true, _) => Lifecycle::TimerComplete,
            };
            emit(t, Task, Some(lc), NO_INSTANCE);
        }
        OpKind::CancelTask => {
            let lc = if o.busy_before & tb != 0 {
                Lifecycle::AteAbort
            } else {
                Lifecycle::Withdraw
            };
            if mi_before & tb == 0 {
                emit(t, Task, Some(lc), NO_INSTANCE);
            }
            for a in bits(aborted) {
                emit(a as u8, Task, Some(Lifecycle::AteAbort), NO_INSTANCE);
            }
            for w in bits(withdrawn) {
                emit(w as u8, Task, Some(Lifecycle::Withdraw), NO_INSTANCE);
            }
        }
        OpKind::Save | OpKind::Restore => {}
        OpKind::StartInstance => emit(t, Task, Some(Lifecycle::Start), o.instance),
        OpKind::AddInstance => {}
        OpKind::CompleteInstance => {
            emit(t, Task, Some(Lifecycle::Complete), o.instance);
            if o.busy_before & tb != 0 && o.busy & tb == 0 {
                // the task completed with this instance: its cancellation set and split ran
                for a in bits(aborted) {
                    emit(a as u8, Task, Some(Lifecycle::AteAbort), NO_INSTANCE);
                }
                for w in bits(withdrawn) {
                    emit(w as u8, Task, Some(Lifecycle::Withdraw), NO_INSTANCE);
                }
            }
        }
        OpKind::CancelCase => {
            for a in bits(o.busy_before & !mi_before) {
                emit(a as u8, Task, Some(Lifecycle::PiAbort), NO_INSTANCE);
            }
            for w in bits(o.enabled_before & !o.busy_before) {
                emit(w as u8, Task, Some(Lifecycle::Withdraw), NO_INSTANCE);
            }
        }
    }
    for u in bits(mi_before) {
        let u = u as u8;
        let (Some(was), now) = (prev.instances(u), o.instances(u)) else {
            continue;
        };
        if now.is_some_and(|n| n.created >= was.created && n.base >= was.base) {
            continue; // still live, nothing withdrawn
        }
        let lc = if op.kind == OpKind::CancelCase {
            Lifecycle::PiAbort
        } else {
            Lifecycle::AteAbort
        };
        for (i, st) in was.iter() {
            let completed_now = op.kind == OpKind::CompleteInstance && u == t && i == o.instance;
            if st == knhk_kernel::InstanceState::Started && !completed_now {
                emit(u, Task, Some(lc), i);
            }
        }
    }
}

// -------------------------------------------------------------------- archiver

/// How long a creation waits for the archiver to free a slot before it is refused.
const ARCHIVE_WAIT: Duration = Duration::from_secs(2);
/// Finished cases stored per archive call, at most.
const ARCHIVE_BATCH: usize = 8192;
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

struct ArchiverCtx {
    archive: Arc<dyn CaseArchive>,
    books: Vec<Arc<Mutex<Book>>>,
    engine: std::sync::Weak<Engine>,
    stats: Arc<ArchiveStats>,
    notify: Arc<tokio::sync::Notify>,
    retention: Retention,
}

/// Stores finished cases in batches, oldest first; marks them archived (evictable) once the
/// archive confirmed them. On a failure it keeps them (their slots stay taken) and retries
/// with a growing pause. Ends when the reply threads are gone and nothing is pending (or the
/// archive is failing: the cases are in the event log and are archived after a restart).
fn archiver_loop(rx: std::sync::mpsc::Receiver<(usize, u32, u64)>, ctx: ArchiverCtx) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut pending: VecDeque<(usize, u32, u64)> = VecDeque::new();
    let mut backoff = Duration::from_millis(100);
    let mut retry_at = std::time::Instant::now();
    let mut last_prune = std::time::Instant::now();
    let mut disconnected = false;
    loop {
        let wait = if pending.is_empty() {
            Duration::from_millis(200)
        } else {
            retry_at
                .saturating_duration_since(std::time::Instant::now())
                .max(Duration::from_millis(1))
        };
        match rx.recv_timeout(wait) {
            Ok(x) => {
                pending.push_back(x);
                while let Ok(x) = rx.try_recv() {
                    pending.push_back(x);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => disconnected = true,
        }
        ctx.stats
            .pending
            .store(pending.len() as u64, Ordering::Relaxed);
        let failing = lock(&ctx.stats.failing).is_some();
        if !pending.is_empty() && std::time::Instant::now() >= retry_at {
            let n = pending.len().min(ARCHIVE_BATCH);
            let batch: Vec<(usize, u32, u64)> = pending.iter().take(n).copied().collect();
            let cases = collect_finished(&ctx, &batch);
            match ctx.archive.store(&cases) {
                Ok(()) => {
                    for &(shard, slot, id) in &batch {
                        if let Some(book) = ctx.books.get(shard) {
                            if let Some(s) = lock(book).slots.get_mut(slot as usize) {
                                if s.id == id {
                                    s.archived = true;
                                }
                            }
                        }
                    }
                    pending.drain(..n);
                    ctx.stats
                        .archived
                        .fetch_add(cases.len() as u64, Ordering::Relaxed);
                    ctx.stats
                        .pending
                        .store(pending.len() as u64, Ordering::Relaxed);
                    if lock(&ctx.stats.failing).take().is_some() {
                        tracing::info!(archive = ctx.archive.kind(), "archive stores again");
                    }
                    backoff = Duration::from_millis(100);
                    ctx.notify.notify_waiters();
                }
                Err(e) => {
                    ctx.stats.failures.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        tracing::warn!(
                            archive = ctx.archive.kind(),
                            error = %e,
                            pending = pending.len(),
                            "archive store failed: finished cases keep their slots until it \
                             stores them"
                        );
                    }
                    *lock(&ctx.stats.failing) = Some(e);
                    retry_at = std::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let retain = ctx.retention.max_age_secs.is_some() || ctx.retention.max_cases.is_some();
        if retain && last_prune.elapsed() >= RETENTION_EVERY {
            last_prune = std::time::Instant::now();
            prune(&ctx);
        }
        if disconnected && (pending.is_empty() || lock(&ctx.stats.failing).is_some()) {
            if !pending.is_empty() {
                tracing::warn!(
                    pending = pending.len(),
                    "stopping with finished cases not archived: they are archived after a restart"
                );
            }
            return;
        }
    }
}

/// Deletes what the retention setting says, and says so.
fn prune(ctx: &ArchiverCtx) {
    match ctx.archive.prune(&ctx.retention, now_ns()) {
        Ok(0) => {}
        Ok(n) => {
            ctx.stats.pruned.fetch_add(n, Ordering::Relaxed);
            tracing::info!(
                deleted = n,
                max_age_secs = ctx.retention.max_age_secs,
                max_cases = ctx.retention.max_cases,
                "archive retention: archived cases deleted"
            );
        }
        Err(e) => tracing::warn!(error = %e, "archive retention failed"),
    }
}

/// The finished cases named in `batch`, as the book holds them (a case evicted meanwhile, which
/// cannot happen before it is archived, or whose slot holds another case, is skipped).
fn collect_finished(ctx: &ArchiverCtx, batch: &[(usize, u32, u64)]) -> Vec<FinishedCase> {
    let wfs = ctx
        .engine
        .upgrade()
        .map(|e| e.workflows())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(batch.len());
    for &(shard, slot, id) in batch {
        let Some(book) = ctx.books.get(shard) else {
            continue;
        };
        let book = lock(book);
        let Some(s) = book.slots.get(slot as usize) else {
            continue;
        };
        if s.id != id || !s.terminal {
            continue;
        }
        let wf = wfs.get(usize::from(s.workflow));
        if wf.is_some_and(|w| w.history_deleted.load(Ordering::Acquire)) {
            // deleted with its workflow version: never archived
            continue;
        }
        out.push(FinishedCase {
            case_id: id,
            workflow: s.workflow,
            workflow_id: wf.map(|w| w.id.clone()).unwrap_or_default(),
            namespace: wf.map(|w| w.namespace.clone()).unwrap_or_default(),
            created_ns: s.created_ns,
            finished_ns: s.finished_ns,
            last: s.last,
            regs: s.regs,
            history: s.history.iter().copied().collect(),
            history_dropped: s.history_dropped,
        });
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod deletion_tests {
    use super::*;

    /// A creation that passed its check and took its slot, not run yet, is counted by a
    /// deletion: the deletion is refused and leaves the version as it was; once the slot is
    /// given back the deletion goes through.
    #[test]
    fn a_deletion_counts_a_creation_that_has_taken_its_slot() {
        let engine = Engine::start(
            EngineConfig {
                workers: 1,
                case_capacity: 4,
                pin: false,
                ..EngineConfig::default()
            },
            Arc::new(Immediate),
        )
        .unwrap();
        let model = br#"{"name": "one", "id": "Net",
          "conditions": [{"id": "i", "kind": "input", "flows": [{"to": "t"}]}, {"id": "o", "kind": "output"}],
          "tasks": [{"id": "t", "flows": [{"to": "o"}]}]}"#;
        let compiled = crate::catalog::compile(model, None).unwrap();
        let wf = engine
            .register(
                "one",
                |index, id| {
                    Ok(Workflow::new(
                        index,
                        id,
                        compiled.format,
                        &compiled.model,
                        *compiled.net,
                        now_ns(),
                    ))
                },
                "one",
                |_| Ok(()),
            )
            .unwrap();
        // the slot a creation takes after `refuse_retired`, before its op runs
        let (id, shard, slot) = engine.try_allocate(&wf).ok().unwrap();
        match engine.delete_in(DEFAULT_NAMESPACE, "one", 1, false) {
            Err(EngineError::Precondition(m)) => assert!(m.contains("1 unfinished case"), "{m}"),
            other => panic!("deleted with a creation under way: {other:?}"),
        }
        assert!(!wf.deleted.load(Ordering::Acquire));
        engine.release_slot(shard, slot, id);
        engine
            .delete_in(DEFAULT_NAMESPACE, "one", 1, false)
            .unwrap();
        assert!(wf.deleted.load(Ordering::Acquire));
        // a creation that looked the version up before: refused once it has its slot
        assert!(matches!(
            refuse_retired(&wf),
            Err(EngineError::VersionDeleted { version: 1, .. })
        ));
        engine.stop();
    }
}
