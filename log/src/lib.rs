//! The event log: nothing acknowledged is ever lost (DESIGN.md §5, docs/durability.md).
//!
//! Contract: in [`Durability::Sync`] (the default) a job's results reach its client only after
//! every record of that job is on disk (`fdatasync` returned). Jobs arrive through the
//! [`BatchHook`] on the shards' reply threads, are encoded into one shared buffer and held; a
//! writer thread of its own (never a kernel worker, never a tokio thread) writes the buffer,
//! calls `fdatasync` once for everything appended so far (group commit) and then releases the
//! held jobs. [`Durability::Relaxed`] releases jobs as soon as they are encoded and syncs every
//! few milliseconds: a process crash loses nothing already written, a power loss may lose the
//! last few milliseconds of acknowledged events.
//!
//! On disk, in the data directory: segments `wal-<16 digits>.log`, each `MAGIC` then records
//!
//! ```text
//!  record := len: u32 LE | crc: u32 LE | kind: u8 | payload (len - 1 bytes)
//!            crc = CRC32C(len bytes ++ kind ++ payload)
//! ```
//!
//! The first record of a segment is its header (format version, segment number, whether it is
//! a checkpoint that supersedes every earlier segment, and the engine layout: workers and
//! slots per worker, which case ids encode). Then workflow records (id, source model, compiled
//! form, namespace), batch records (the successful ops of one executed job with their results)
//! and, in a checkpoint, the allocator counters and one case record per case the engine held.
//!
//! Recovery ([`Journal::open`], then [`EventLog::recover`]): scan the segments, verify every CRC; the first torn or corrupt record
//! of the last segment and everything after it is cut off (logged, counted in
//! [`JournalStats::corrupt_tails`]), never replayed; damage before the last segment stops the
//! start with an error. The records are then replayed through the engine's normal op path (the
//! kernel workers run them, the reply threads rebuild the case book) with the recorded case
//! ids, slots, registers and timestamps, and every result is checked against the recorded
//! one. Nothing is served until replay has ended (the server's startup latch).
//!
//! Bounded replay: the active segment is sealed past `segment_bytes`; then a compactor thread
//! rewrites all sealed segments into one checkpoint segment holding every workflow, the
//! allocator counters and a snapshot of each case the engine holds (running, or finished but
//! not yet evicted): its kernel state saved by libknhk, its data and its history, taken by a
//! save op that the case's worker runs in order with its other ops, and written only once
//! every earlier op of that worker is durable. Replay restores each case from its snapshot and
//! then applies only the later segments' ops whose seq is above the snapshot's, so an op logged
//! while the checkpoint was being taken is neither lost nor applied twice. The log is thus
//! bounded by one snapshot per held case plus the ops since the last checkpoint.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use knhk_engine::engine::{BatchHook, Engine, EngineConfig};
use knhk_engine::ids::CaseId;
use knhk_engine::workers::{Job, Op, OpKind, SavedCase, Status, REGISTERS};
use knhk_engine::workflow::Workflow;
use knhk_engine::{catalog, EngineError};

pub mod export;
pub mod frames;
mod record;
mod segment;

pub use export::{ExportSink, Exported, ExporterStats, Position, PositionFile, SavedPosition};
pub use record::LoggedEvent;
use record::*;
use segment::*;

/// On-disk format version, in every segment header. Version 4: multiple-instance tasks: op codes
/// 6..8 (start, complete, add instance) and an instance field in op records, history events
/// with an instance in case records, saved cases of libknhk's format 2 (248 bytes; format 1's
/// 144 bytes are still read). Version 3: checkpoints hold case snapshots
/// (case records) instead of the ops of held cases, and workflow records their namespace.
/// Version 2: case ids carry a partition field ([`knhk_engine::ids`]). Older segments are read
/// (version-1 ids are partition-0 ids, the same numbers) and never appended to: the server
/// continues in a new segment of the current version.
pub const FORMAT_VERSION: u16 = 4;
/// The oldest format version this server reads.
pub const OLDEST_READABLE_VERSION: u16 = 1;
/// The first 8 bytes of every segment.
pub const MAGIC: &[u8; 8] = b"KNHKWAL\x01";
/// Largest record accepted on reading (a longer length field is corruption).
pub(crate) const MAX_RECORD: u32 = 256 << 20;
/// Relaxed mode: how often the writer syncs.
const RELAXED_SYNC: Duration = Duration::from_millis(5);
/// Ops per replayed job.
const REPLAY_JOB_OPS: usize = 4096;
/// Replayed jobs in flight per shard.
const REPLAY_DEPTH: usize = 64;

pub(crate) const K_HEADER: u8 = 1;
pub(crate) const K_WORKFLOW: u8 = 2;
pub(crate) const K_BATCH: u8 = 3;
pub(crate) const K_COUNTERS: u8 = 4;
pub(crate) const K_CASE: u8 = 5;
pub(crate) const K_RETIRE: u8 = 6;
pub(crate) const K_DELETE: u8 = 7;
pub(crate) const K_EVENTS: u8 = 8;
/// Cases saved per save job of a checkpoint.
const SAVE_JOB_CASES: usize = 4096;

/// When an event is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After the record holding it is durable (`fdatasync`). The default.
    Sync,
    /// As soon as it is executed; the log is synced every few milliseconds.
    Relaxed,
}

/// Where and how the event log is kept.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// The data directory (created if missing).
    pub dir: PathBuf,
    pub durability: Durability,
    /// A segment is sealed (and compaction starts) once it is this large.
    pub segment_bytes: u64,
}

impl JournalConfig {
    /// Sync mode, 64 MiB segments.
    pub fn new(dir: impl Into<PathBuf>) -> JournalConfig {
        JournalConfig {
            dir: dir.into(),
            durability: Durability::Sync,
            segment_bytes: 64 << 20,
        }
    }
}

/// Counters of the event log (read by metrics; written by the journal only).
#[derive(Debug, Default)]
pub struct JournalStats {
    /// `fdatasync` calls that covered at least one record.
    pub fsyncs: AtomicU64,
    /// Successful ops appended (events made durable, in sync mode).
    pub events: AtomicU64,
    /// Records appended.
    pub records: AtomicU64,
    /// Bytes appended.
    pub bytes: AtomicU64,
    /// Torn or corrupt tail records found (and cut off) at start.
    pub corrupt_tails: AtomicU64,
    /// Bytes cut off at start.
    pub truncated_bytes: AtomicU64,
    /// Ops replayed at start, and how long replay took.
    pub replayed_events: AtomicU64,
    pub replay_ns: AtomicU64,
    /// Checkpoints written by the compactor.
    pub compactions: AtomicU64,
    /// Cases restored from checkpoint snapshots at start.
    pub restored_cases: AtomicU64,
    /// 1 once a write or sync failed: from then on the server refuses work.
    pub failed: AtomicU64,
    /// Compactions put off because an exporter had not read the sealed segments yet.
    pub compactions_held: AtomicU64,
}

/// Another log whose records must be durable in the same group commit as the event log's (the
/// audit log): the writer marks it before its own `fdatasync` and waits for it after, before
/// it releases the commit's jobs. Its sync runs on its own thread, alongside the event log's.
pub trait CommitPeer: Send + Sync + 'static {
    /// Marks everything queued so far and starts making it durable; returns the mark.
    fn mark(&self) -> u64;
    /// Returns once everything up to `mark` is durable; `Err` says why it cannot be.
    fn wait(&self, mark: u64) -> Result<(), String>;

    /// Told once, when the log joins the peer to its commits (sync mode): the peer may leave
    /// the records meant for those commits to be started by [`CommitPeer::mark`], so that one
    /// of its syncs lines up with each of the log's.
    fn joined(&self) {}
}

/// An event log: the engine's executed jobs go in through its [`BatchHook`] side (each job is
/// held until its records are durable, then released to its caller; a refusal comes back
/// while the log cannot persist), registrations through [`BatchHook::registered`] (returns
/// once durable), and on start the log replays itself into the engine through the engine's
/// recovery API. Shaped for the embedded segment log ([`Journal`]: durable = `fdatasync`
/// returned) and a replicated one (durable = the replicated stream acknowledged the append).
pub trait EventLog: BatchHook + std::fmt::Debug {
    /// The engine layout (workers, slots per worker) the logged case ids encode, if anything is
    /// logged: the engine must be started with it ([`apply_layout`]).
    fn layout(&self) -> Option<(u32, u32)>;

    /// Replays everything logged into `engine` (started with this log as its hook), checking
    /// every result against the logged one, then starts appending. Returns the ops replayed.
    /// Blocking; call once.
    fn recover(&self, engine: &Arc<Engine>) -> io::Result<u64>;

    /// The log's counters.
    fn stats(&self) -> Arc<JournalStats>;

    /// Why the log refuses work, once an append has failed.
    fn failure(&self) -> Option<String>;

    /// Flushes what is buffered, makes it durable and stops (after the engine has stopped).
    fn close(&self);

    /// Makes `peer`'s queued records part of every later group commit that releases jobs.
    /// A log whose appends are not synced with peers ignores it (the default).
    fn set_commit_peer(&self, _peer: Arc<dyn CommitPeer>) {}
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------------------------- the journal

struct Queue {
    buf: Vec<u8>,
    // Boxed: a job travels the rings and goes back to its submitter as a Box.
    #[allow(clippy::vec_box)]
    held: Vec<Box<Job>>,
    waiters: Vec<mpsc::SyncSender<Result<(), String>>>,
    events: u64,
    records: u64,
}

struct Shared {
    q: Mutex<Queue>,
    wake: Condvar,
    replaying: AtomicBool,
    stop: AtomicBool,
    failed: OnceLock<String>,
    relaxed: bool,
    stats: Arc<JournalStats>,
    /// Synced in the same group commit (the audit log), when set.
    peer: OnceLock<Arc<dyn CommitPeer>>,
    /// The end of what is durable (synced; in relaxed mode, written): exporters read up to it.
    durable: Mutex<Position>,
    durable_moved: Condvar,
    /// Exporters, and the lowest segment any of them is in (`u64::MAX`: none): compaction
    /// of a segment at or above it waits.
    exporters: Mutex<export::Exporters>,
    export_floor: AtomicU64,
}

impl Shared {
    fn set_durable(&self, segment: u64, offset: u64) {
        *lock(&self.durable) = Position { segment, offset };
        self.durable_moved.notify_all();
    }
}

/// The event log: a [`BatchHook`] that holds each job until its records are durable.
pub struct Journal {
    cfg: JournalConfig,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The engine layout the logged case ids encode.
    layout: Option<(u32, u32)>,
    /// What the start-up scan found, until [`EventLog::recover`] replays it.
    found: Mutex<Option<Found>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// The configuration in force.
    pub fn config(&self) -> &JournalConfig {
        &self.cfg
    }

    /// Starts an exporter for `sink` (after [`EventLog::recover`], before serving): from now
    /// on `engine`'s jobs carry their events into the log, and the exporter streams them to
    /// the sink from where it resumes ([`export`]). Fails when the sink cannot say where.
    pub fn add_exporter(
        &self,
        engine: &Arc<Engine>,
        sink: Box<dyn ExportSink>,
    ) -> io::Result<Arc<ExporterStats>> {
        if self.shared.replaying.load(Ordering::SeqCst) {
            return Err(io::Error::other(
                "event log: exporters start after the log has been replayed",
            ));
        }
        engine.set_export_events(true);
        export::start(&self.cfg.dir, &self.shared, sink)
    }

    /// The exporters' counters.
    pub fn exporters(&self) -> Vec<Arc<ExporterStats>> {
        lock(&self.shared.exporters).stats.clone()
    }
}

fn fail(s: &Shared, why: String) {
    if s.failed.set(why.clone()).is_ok() {
        s.stats.failed.store(1, Ordering::Relaxed);
        tracing::error!(error = %why, "event log failed: the server refuses new work");
    }
    // Unpersisted jobs are dropped unreleased: their submitters see the refusal, never OK.
    let (held, waiters) = {
        let mut q = lock(&s.q);
        q.buf.clear();
        (std::mem::take(&mut q.held), std::mem::take(&mut q.waiters))
    };
    drop(held);
    for w in waiters {
        let _ = w.send(Err(why.clone()));
    }
}

impl BatchHook for Journal {
    fn executed(&self, shard: usize, job: Box<Job>) {
        let s = &*self.shared;
        if s.replaying.load(Ordering::Relaxed) {
            job.release();
            return;
        }
        if s.failed.get().is_some() {
            drop(job);
            return;
        }
        let mut q = lock(&s.q);
        let n = put_batch(&mut q.buf, shard, &job);
        q.events += n;
        q.records += u64::from(n > 0);
        // the job's events, for the exporters, in the same group commit as its ops
        q.records += u64::from(put_events(&mut q.buf, shard, &job.exported));
        if s.relaxed {
            drop(q);
            job.release();
        } else {
            // Held in order even when nothing was appended: a refusal may depend on an
            // earlier, not yet durable event.
            q.held.push(job);
            drop(q);
        }
        s.wake.notify_one();
    }

    fn refusal(&self) -> Option<EngineError> {
        self.shared
            .failed
            .get()
            .map(|w| EngineError::Unavailable(w.clone()))
    }

    fn retired(&self, wf: &Workflow) -> Result<(), EngineError> {
        self.append_durably("retirement", |buf| {
            put_retire(buf, wf.index, knhk_engine::engine::now_ns())
        })
    }

    fn deleted(&self, wf: &Workflow) -> Result<(), EngineError> {
        self.append_durably("deletion", |buf| {
            put_delete(
                buf,
                wf.index,
                knhk_engine::engine::now_ns(),
                wf.history_deleted.load(Ordering::Acquire),
            )
        })
    }

    fn registered(&self, wf: &Workflow, model: &[u8]) -> Result<(), EngineError> {
        self.append_durably("workflow", |buf| put_workflow(buf, wf, model))
    }
}

impl Journal {
    /// Appends one record (`put` writes it) with the next group commit and waits until it is
    /// durable; `what` names it in the error when the writer stops first.
    fn append_durably(
        &self,
        what: &str,
        put: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), EngineError> {
        let s = &*self.shared;
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut q = lock(&s.q);
            put(&mut q.buf);
            q.records += 1;
            q.waiters.push(tx);
        }
        s.wake.notify_one();
        match rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(EngineError::Unavailable(why)),
            Err(_) => Err(EngineError::Unavailable(format!(
                "event log writer stopped before the {what} was durable"
            ))),
        }
    }
}

// ------------------------------------------------------------------------------- writer

struct Writer {
    dir: PathBuf,
    file: File,
    segment: u64,
    size: u64,
    segment_bytes: u64,
    workers: u32,
    per_shard: u32,
    engine: Weak<Engine>,
    compacting: Arc<AtomicBool>,
    /// The last sealed segment, when its compaction was put off for an exporter.
    deferred: Option<u64>,
    /// The last compaction started: joined before the writer ends, so that no checkpoint is
    /// written into the directory after the log was closed.
    compactor: Option<JoinHandle<()>>,
}

impl Writer {
    fn append(&mut self, buf: &[u8], sync: bool) -> io::Result<()> {
        let path = seg_path(&self.dir, self.segment);
        self.file
            .write_all(buf)
            .map_err(|e| ctx_err("event log write failed in", &path, e))?;
        self.size += buf.len() as u64;
        if sync {
            self.file
                .sync_data()
                .map_err(|e| ctx_err("event log fdatasync failed in", &path, e))?;
        }
        Ok(())
    }

    /// Seals the active segment and starts the next; starts a compaction of the sealed ones.
    fn rotate(&mut self, shared: &Arc<Shared>) -> io::Result<()> {
        self.file.sync_data()?;
        let sealed = self.segment;
        let (f, size) = create_segment(&self.dir, sealed + 1, self.workers, self.per_shard)?;
        self.file = f;
        self.segment = sealed + 1;
        self.size = size;
        shared.set_durable(self.segment, self.size);
        self.compact_sealed(shared);
        Ok(())
    }

    /// Starts a compaction of every sealed segment, unless one runs already or an exporter
    /// has not read them all (then it is put off until it has: `deferred`).
    fn compact_sealed(&mut self, shared: &Arc<Shared>) {
        let sealed = self.segment - 1;
        if shared.export_floor.load(Ordering::SeqCst) <= sealed {
            if self.deferred.is_none() {
                shared
                    .stats
                    .compactions_held
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    upto = sealed,
                    "event log: compaction put off until every exporter has read the sealed \
                     segments"
                );
            }
            self.deferred = Some(sealed);
            return;
        }
        if self
            .compacting
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            let (dir, engine, flag, shared) = (
                self.dir.clone(),
                self.engine.clone(),
                self.compacting.clone(),
                shared.clone(),
            );
            let layout = (self.workers, self.per_shard);
            let spawned = thread::Builder::new()
                .name("knhk-compactor".into())
                .spawn(move || {
                    let t0 = Instant::now();
                    match compact(&dir, sealed, layout, &engine, &shared) {
                        Ok(Some((kept, bytes))) => {
                            shared.stats.compactions.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(
                                upto = sealed,
                                cases = kept,
                                bytes,
                                ms = t0.elapsed().as_millis() as u64,
                                "event log: checkpoint written, older segments removed"
                            );
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(
                            error = %e,
                            "event log: compaction failed; the sealed segments are kept"
                        ),
                    }
                    flag.store(false, Ordering::SeqCst);
                });
            match spawned {
                Ok(h) => {
                    if let Some(old) = self.compactor.replace(h) {
                        let _ = old.join();
                    }
                }
                Err(_) => self.compacting.store(false, Ordering::SeqCst),
            }
        }
    }
}

fn writer_loop(shared: Arc<Shared>, mut w: Writer) {
    write_until_stopped(&shared, &mut w);
    // A compaction in progress sees the stop (or the failure) and gives up without writing.
    if let Some(h) = w.compactor.take() {
        let _ = h.join();
    }
}

fn write_until_stopped(shared: &Arc<Shared>, w: &mut Writer) {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut held: Vec<Box<Job>> = Vec::with_capacity(1024);
    let mut last_sync = Instant::now();
    let mut dirty = false;
    loop {
        let (waiters, events, records, stopping) = {
            let mut q = lock(&shared.q);
            loop {
                if !q.buf.is_empty() || !q.held.is_empty() || !q.waiters.is_empty() {
                    break;
                }
                if shared.stop.load(Ordering::SeqCst) || shared.failed.get().is_some() {
                    break;
                }
                if w.deferred
                    .is_some_and(|d| shared.export_floor.load(Ordering::SeqCst) > d)
                {
                    break;
                }
                let timeout = if dirty {
                    RELAXED_SYNC
                } else {
                    Duration::from_millis(100)
                };
                let (g, t) = shared
                    .wake
                    .wait_timeout(q, timeout)
                    .unwrap_or_else(|p| p.into_inner());
                q = g;
                if t.timed_out() && dirty {
                    break;
                }
            }
            std::mem::swap(&mut q.buf, &mut buf);
            std::mem::swap(&mut q.held, &mut held);
            let waiters = std::mem::take(&mut q.waiters);
            let ev = std::mem::take(&mut q.events);
            let rc = std::mem::take(&mut q.records);
            (waiters, ev, rc, shared.stop.load(Ordering::SeqCst))
        };
        if shared.failed.get().is_some() {
            return;
        }
        let wrote = !buf.is_empty();
        // Sync mode: every write is synced before its jobs are released. Relaxed: jobs are
        // already released; sync every RELAXED_SYNC, and always for a workflow or at stop.
        let sync = if shared.relaxed {
            dirty |= wrote;
            let due =
                dirty && (last_sync.elapsed() >= RELAXED_SYNC || !waiters.is_empty() || stopping);
            if due {
                dirty = false;
            }
            due
        } else {
            wrote
        };
        // The peer's records queued for these jobs' calls are made durable alongside.
        let peer = shared
            .peer
            .get()
            .filter(|_| !shared.relaxed && !held.is_empty())
            .map(|p| (p, p.mark()));
        let res = if wrote || sync {
            w.append(&buf, sync)
        } else {
            Ok(())
        };
        match res {
            Ok(()) => {
                if let Some((p, mark)) = peer {
                    // Released anyway on failure: each call waits for its own record too,
                    // and answers UNAVAILABLE when it cannot be written.
                    if let Err(why) = p.wait(mark) {
                        tracing::warn!(error = %why, "event log: the commit's peer log failed");
                    }
                }
                let st = &shared.stats;
                if sync {
                    st.fsyncs.fetch_add(1, Ordering::Relaxed);
                    last_sync = Instant::now();
                }
                st.events.fetch_add(events, Ordering::Relaxed);
                st.records.fetch_add(records, Ordering::Relaxed);
                st.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                if wrote {
                    shared.set_durable(w.segment, w.size);
                }
                for job in held.drain(..) {
                    job.release();
                }
                for tx in waiters {
                    let _ = tx.send(Ok(()));
                }
            }
            Err(e) => {
                // The failure first, then the unpersisted jobs dropped: a submitter woken by
                // the drop asks the log why, and must get this error, not "shutting down".
                fail(
                    shared,
                    format!("{e}; the server refuses work it cannot persist"),
                );
                held.clear();
                for tx in &waiters {
                    let _ = tx.send(Err(e.to_string()));
                }
                return;
            }
        }
        buf.clear();
        if w.deferred
            .is_some_and(|d| shared.export_floor.load(Ordering::SeqCst) > d)
        {
            // the exporters have passed the segments whose compaction was put off
            w.deferred = None;
            w.compact_sealed(shared);
        }
        if w.size >= w.segment_bytes {
            if let Err(e) = w.rotate(shared) {
                fail(
                    shared,
                    format!(
                        "event log rotation failed: {e}; the server refuses work it cannot persist"
                    ),
                );
                return;
            }
        }
        if stopping && !dirty {
            let q = lock(&shared.q);
            if q.buf.is_empty() && q.held.is_empty() && q.waiters.is_empty() {
                return;
            }
        }
    }
}

/// Rewrites segments `..= upto` into one checkpoint segment numbered `upto`: the workflows,
/// the allocator counters and a snapshot of every case the engine holds. Returns the cases
/// saved and the checkpoint's size, or `None` when the engine or the log stopped first
/// (nothing is written then).
fn compact(
    dir: &Path,
    upto: u64,
    layout: (u32, u32),
    engine: &Weak<Engine>,
    shared: &Shared,
) -> io::Result<Option<(u64, u64)>> {
    // Every op in segments ..= upto was recorded in the book before it was appended, and the
    // segment was sealed before this started: each case's snapshot covers all of its ops there.
    let Some(cases) = save_cases(engine, shared, layout.0)? else {
        return Ok(None);
    };
    let Some((fresh, gens, _)) = engine.upgrade().map(|e| e.allocator_state()) else {
        return Ok(None);
    };
    let segs: Vec<(u64, PathBuf)> = list_segments(dir)?
        .into_iter()
        .filter(|(n, _)| *n <= upto)
        .collect();
    let mut out = MAGIC.to_vec();
    put_header(
        &mut out,
        &Header {
            version: FORMAT_VERSION,
            segment: upto,
            checkpoint: true,
            workers: layout.0,
            per_shard: layout.1,
        },
    );
    put_counters(&mut out, fresh, &gens);
    let mut segments = Vec::with_capacity(segs.len());
    for (_, path) in &segs {
        let data = fs::read(path)?;
        let (recs, damage) = scan(&data);
        if let Some(d) = damage {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} damaged at {} ({})", path.display(), d.offset, d.reason),
            ));
        }
        segments.push((data, recs));
    }
    // Deleted versions of which no case is left, neither held (a snapshot above) nor archived
    // (a case leaves memory only once the archive has it, so one evicted after the snapshot
    // is found there): their records become stand-ins without the model. A deleted version
    // with a case left keeps its model: the case is read through its task and condition names.
    let held: HashSet<u16> = cases.iter().map(|c| c.workflow).collect();
    let mut deleted: HashMap<u16, bool> = HashMap::new();
    for (data, recs) in &segments {
        for (kind, r) in recs {
            if *kind == K_DELETE {
                let (index, _, with_history) =
                    get_delete(&data[r.clone()]).map_err(io::Error::other)?;
                *deleted.entry(index).or_default() |= with_history;
            }
        }
    }
    let archive = engine.upgrade().and_then(|e| e.archive());
    let mut gone: HashSet<u16> = HashSet::new();
    let has_subnets = |index: u16| {
        engine
            .upgrade()
            .and_then(|e| e.workflow_at(index))
            .is_some_and(|w| !w.subnets.is_empty())
    };
    for (index, with_history) in deleted {
        // A version with sub-nets keeps its model: a stand-in takes one index, the version
        // took one per net.
        if held.contains(&index) || has_subnets(index) {
            continue;
        }
        let archived = match (&archive, with_history) {
            (Some(a), false) => a.holds_workflow(index).unwrap_or_else(|e| {
                tracing::warn!(workflow = index, error = %e,
                    "event log: the archive cannot say whether it holds cases of a deleted \
                     version: its source is kept");
                true
            }),
            _ => false,
        };
        if !archived {
            gone.insert(index);
        }
    }
    for (data, recs) in &segments {
        for (kind, r) in recs.iter().cloned() {
            if kind == K_WORKFLOW {
                let p = &data[r];
                let mut w = get_workflow(p).map_err(io::Error::other)?;
                if gone.contains(&w.index) {
                    w = WfRec {
                        model: &[],
                        form: &[],
                        options: w.options | OPTION_DELETED_STAND_IN,
                        timers: Vec::new(),
                        ..w
                    };
                }
                // Rewritten in the current format (an older record lacks the namespace).
                put_workflow_rec(&mut out, &w);
            } else if kind == K_RETIRE {
                let (index, at) = get_retire(&data[r]).map_err(io::Error::other)?;
                put_retire(&mut out, index, at);
            } else if kind == K_DELETE {
                let (index, at, with_history) = get_delete(&data[r]).map_err(io::Error::other)?;
                put_delete(&mut out, index, at, with_history);
            }
        }
    }
    for c in &cases {
        put_case(&mut out, c);
    }
    if shared.stop.load(Ordering::SeqCst) || shared.failed.get().is_some() {
        return Ok(None);
    }
    let tmp = dir.join(format!("wal-{upto:016}.log.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, seg_path(dir, upto))?;
    sync_dir(dir)?;
    for (n, path) in segs {
        if n < upto {
            fs::remove_file(path)?;
        }
    }
    sync_dir(dir)?;
    Ok(Some((cases.len() as u64, out.len() as u64)))
}

/// Saves every case the engine holds, shard by shard, in jobs of [`SAVE_JOB_CASES`] save ops.
/// Each job goes through the log like any other: it comes back only once every op its worker
/// ran before it is durable, so a snapshot never holds an event that could still be lost.
/// `None` when the engine or the log stopped first.
fn save_cases(
    engine: &Weak<Engine>,
    shared: &Shared,
    workers: u32,
) -> io::Result<Option<Vec<CaseRec>>> {
    let stopped = || shared.stop.load(Ordering::SeqCst) || shared.failed.get().is_some();
    let mut cases = Vec::new();
    for shard in 0..workers as usize {
        let mut from = Some(0u32);
        while let Some(f) = from {
            // The engine is held only to build and queue a job: a stopping server must be able
            // to drop it (and the log with it) while this waits.
            let Some(e) = engine.upgrade() else {
                return Ok(None);
            };
            let (job, next) = e.save_job(shard, f, SAVE_JOB_CASES);
            from = next;
            let Some(mut job) = job else { continue };
            let mut rx = loop {
                match e.submit_job(shard, job) {
                    Ok(rx) => break rx,
                    Err((j, true)) if !stopped() => {
                        job = j;
                        thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => return Ok(None),
                }
            };
            drop(e);
            let job = loop {
                match rx.try_recv() {
                    Ok(job) => break job,
                    Err(oneshot::error::TryRecvError::Empty) if !stopped() => {
                        thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => return Ok(None),
                }
            };
            let Job {
                ops, out, saved, ..
            } = *job;
            for ((op, o), saved) in ops.iter().zip(out.iter()).zip(saved) {
                match o.status {
                    Status::Ok => cases.push(CaseRec {
                        shard: shard as u16,
                        slot: op.slot,
                        case_id: op.case_id,
                        workflow: op.workflow,
                        seq: o.seq,
                        state: state_code(o.state),
                        saved,
                    }),
                    // Evicted before its save ran: its history is gone with it.
                    Status::NoCase => {}
                    other => {
                        return Err(io::Error::other(format!(
                            "saving case {} for a checkpoint failed ({other:?})",
                            op.case_id
                        )))
                    }
                }
            }
        }
    }
    Ok(Some(cases))
}

// ------------------------------------------------------------------------------- start + replay

impl Journal {
    /// Opens the event log of `jc`: creates the data directory, proves it writable, scans every
    /// segment (verifying each record's CRC, cutting a torn or corrupt tail of the last one).
    /// Nothing is replayed yet: start the engine with [`EventLog::layout`] and this journal as
    /// its batch hook, then call [`EventLog::recover`]. Blocking.
    pub fn open(jc: JournalConfig) -> io::Result<Arc<Journal>> {
        let stats = Arc::new(JournalStats::default());
        let found = open_dir(&jc.dir, &stats)?;
        Ok(Arc::new(Journal {
            shared: Arc::new(Shared {
                q: Mutex::new(Queue {
                    buf: Vec::with_capacity(1 << 20),
                    held: Vec::new(),
                    waiters: Vec::new(),
                    events: 0,
                    records: 0,
                }),
                wake: Condvar::new(),
                replaying: AtomicBool::new(true),
                stop: AtomicBool::new(false),
                failed: OnceLock::new(),
                relaxed: jc.durability == Durability::Relaxed,
                peer: OnceLock::new(),
                stats,
                durable: Mutex::new(Position::default()),
                durable_moved: Condvar::new(),
                exporters: Mutex::new(export::Exporters::default()),
                export_floor: AtomicU64::new(u64::MAX),
            }),
            layout: found.layout,
            found: Mutex::new(Some(found)),
            cfg: jc,
            writer: Mutex::new(None),
        }))
    }
}

impl EventLog for Journal {
    fn layout(&self) -> Option<(u32, u32)> {
        self.layout
    }

    fn set_commit_peer(&self, peer: Arc<dyn CommitPeer>) {
        if !self.shared.relaxed {
            peer.joined();
        }
        let _ = self.shared.peer.set(peer);
    }

    fn recover(&self, engine: &Arc<Engine>) -> io::Result<u64> {
        let jc = &self.cfg;
        let found = lock(&self.found)
            .take()
            .ok_or_else(|| io::Error::other("event log: recover called twice"))?;
        let t0 = Instant::now();
        let replayed = replay(engine, &found, &self.stats().restored_cases)?;
        // Finished cases of versions deleted with their history came back with their ops.
        if let Err(e) = engine.purge_deleted_histories() {
            tracing::warn!(error = %e, "event log: deleted history not purged yet");
        }
        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let st = self.stats();
        st.replayed_events.store(replayed, Ordering::Relaxed);
        st.replay_ns.store(ns, Ordering::Relaxed);
        let bytes: usize = found.segments.iter().map(|(_, d, _)| d.len()).sum();
        tracing::info!(
            events = replayed,
            bytes,
            ms = ns / 1_000_000,
            events_per_s = (replayed as f64 / (ns.max(1) as f64 / 1e9)) as u64,
            corrupt_tails = st.corrupt_tails.load(Ordering::Relaxed),
            restored_cases = st.restored_cases.load(Ordering::Relaxed),
            "event log replayed"
        );
        // Continue the last segment when there is one of this format, else start a new one.
        let layout = engine.layout();
        let (file, segment, size) = match found.segments.last() {
            Some((n, _, _)) if found.last_version != FORMAT_VERSION => {
                tracing::info!(
                    from = found.last_version,
                    to = FORMAT_VERSION,
                    "event log: older format read; new records go to a new segment"
                );
                let (f, size) = create_segment(&jc.dir, n + 1, layout.0, layout.1)?;
                (f, n + 1, size)
            }
            Some((n, data, _)) => {
                let path = seg_path(&jc.dir, *n);
                let f = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| ctx_err("cannot open event log segment", &path, e))?;
                (f, *n, data.len() as u64)
            }
            None => {
                let (f, size) = create_segment(&jc.dir, 1, layout.0, layout.1)?;
                (f, 1, size)
            }
        };
        let writer = Writer {
            dir: jc.dir.clone(),
            file,
            segment,
            size,
            segment_bytes: jc.segment_bytes.max(4096),
            workers: layout.0,
            per_shard: layout.1,
            engine: Arc::downgrade(engine),
            compacting: Arc::new(AtomicBool::new(false)),
            deferred: None,
            compactor: None,
        };
        self.shared.set_durable(segment, size);
        let shared = self.shared.clone();
        let handle = thread::Builder::new()
            .name("knhk-journal".into())
            .spawn(move || writer_loop(shared, writer))?;
        *lock(&self.writer) = Some(handle);
        self.shared.replaying.store(false, Ordering::SeqCst);
        Ok(replayed)
    }

    fn stats(&self) -> Arc<JournalStats> {
        self.shared.stats.clone()
    }

    fn failure(&self) -> Option<String> {
        self.shared.failed.get().cloned()
    }

    fn close(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
        self.shared.durable_moved.notify_all();
        // Taken out first: an exporter finishing a delivery locks the list (its floor).
        let threads = std::mem::take(&mut lock(&self.shared.exporters).threads);
        export::join(threads);
    }
}

/// Applies the layout logged in `log` (when there is one) to `cfg`: case ids encode it, so a
/// restarted server keeps its workers and slots per worker whatever its flags say.
pub fn apply_layout(log: &dyn EventLog, cfg: &mut EngineConfig) {
    if let Some((workers, per_shard)) = log.layout() {
        let capacity = workers as usize * per_shard as usize;
        if cfg.workers != workers as usize || cfg.case_capacity != capacity {
            tracing::warn!(
                workers,
                case_capacity = capacity,
                "event log: using the logged engine layout (case ids encode it)"
            );
        }
        cfg.workers = workers as usize;
        cfg.case_capacity = capacity;
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A replayed job's reply and the (seq, state) logged for each of its ops.
type Inflight = (oneshot::Receiver<Box<Job>>, Vec<(u64, u8)>);

/// Jobs of one shard being replayed.
#[derive(Default)]
struct ShardReplay {
    ops: Vec<Op>,
    data: Vec<[i64; REGISTERS]>,
    saved: Vec<SavedCase>,
    expect: Vec<(u64, u8)>,
    time_ns: u64,
    inflight: std::collections::VecDeque<Inflight>,
}

/// Replays every record through the engine; returns the number of ops replayed (case
/// snapshots restored are counted in `restored`).
fn replay(engine: &Arc<Engine>, found: &Found, restored_cases: &AtomicU64) -> io::Result<u64> {
    let (workers, per_shard) = engine.layout();
    let partition = engine.config().partition;
    let mut shards: Vec<ShardReplay> = (0..workers).map(|_| ShardReplay::default()).collect();
    let mut fresh: u64 = 0;
    let mut gens: Vec<(u64, u32)> = Vec::new();
    let mut created: HashSet<u64> = HashSet::new();
    // Cases restored from a checkpoint's snapshot, and the seq each was saved at: a later
    // segment's op on one of them at or below that seq is already in the snapshot.
    let mut restored: HashMap<u64, u64> = HashMap::new();
    let mut covered = 0u64;
    let mut recs = Vec::new();
    let mut total = 0u64;
    let mut skipped = 0u64;
    // Workflows first, in index order: a registration's record can land after the first
    // events of its workflow (or after a later registration's) when requests race.
    let mut wfs: Vec<(u16, u64, &[u8])> = Vec::new();
    for (num, data, spans) in &found.segments {
        for (kind, r) in spans.iter().skip(1) {
            if *kind == K_WORKFLOW {
                let p = &data[r.clone()];
                let index = get_workflow(p)
                    .map_err(|e| bad(format!("event log segment {num}: workflow record: {e}")))?
                    .index;
                wfs.push((index, *num, p));
            }
        }
    }
    wfs.sort_by_key(|w| w.0);
    for (_, num, p) in wfs {
        replay_workflow(engine, p)
            .map_err(|e| bad(format!("event log segment {num}: workflow record: {e}")))?;
    }
    // Retirements and deletions, once every workflow is back (each follows its workflow's
    // record).
    for (num, data, spans) in &found.segments {
        for (kind, r) in spans.iter().skip(1) {
            if *kind == K_RETIRE {
                let (index, _) = get_retire(&data[r.clone()])
                    .map_err(|e| bad(format!("event log segment {num}: retirement: {e}")))?;
                engine
                    .mark_retired(index)
                    .map_err(|e| bad(format!("event log segment {num}: retirement: {e}")))?;
            } else if *kind == K_DELETE {
                let (index, _, with_history) = get_delete(&data[r.clone()])
                    .map_err(|e| bad(format!("event log segment {num}: deletion: {e}")))?;
                engine
                    .mark_deleted(index, with_history)
                    .map_err(|e| bad(format!("event log segment {num}: deletion: {e}")))?;
            }
        }
    }
    for (num, data, spans) in &found.segments {
        for (kind, r) in spans.iter().skip(1) {
            let p = &data[r.clone()];
            match *kind {
                K_CASE => {
                    let c = get_case(p)
                        .map_err(|e| bad(format!("event log segment {num}: case record: {e}")))?;
                    let sh = usize::from(c.shard);
                    if sh >= shards.len() {
                        return Err(bad(format!(
                            "segment {num}: shard {} out of range",
                            c.shard
                        )));
                    }
                    let id = c.case_id;
                    let (g, generation) = logged_id(*num, id, partition)?;
                    fresh = fresh.max(g + 1);
                    gens.push((g, generation));
                    if !engine.slot_free_for(sh, c.slot, id) {
                        flush_shard(engine, &mut shards, sh, true, &mut skipped, &created)?;
                    }
                    if !engine.restore_slot(sh, c.slot, id, c.workflow, c.saved.created_ns) {
                        return Err(bad(format!(
                            "segment {num}: case {id} names slot {} past the layout",
                            c.slot
                        )));
                    }
                    created.insert(id);
                    restored.insert(id, c.seq);
                    restored_cases.fetch_add(1, Ordering::Relaxed);
                    let s = &mut shards[sh];
                    let mut op = Op::new(OpKind::Restore, id, c.slot, 0);
                    op.workflow = c.workflow;
                    op.data = s.saved.len() as u32;
                    s.saved.push(c.saved);
                    s.ops.push(op);
                    s.expect.push((c.seq, c.state));
                    if s.ops.len() >= REPLAY_JOB_OPS {
                        flush_shard(engine, &mut shards, sh, false, &mut skipped, &created)?;
                    }
                }
                K_COUNTERS => {
                    let (f, g) = get_counters(p).map_err(|e| bad(format!("segment {num}: {e}")))?;
                    fresh = fresh.max(f);
                    gens.extend(g);
                }
                K_BATCH => {
                    let (shard, time_ns) = get_batch(p, &mut recs)
                        .map_err(|e| bad(format!("event log segment {num}: batch record: {e}")))?;
                    let sh = usize::from(shard);
                    if sh >= shards.len() {
                        return Err(bad(format!("segment {num}: shard {shard} out of range")));
                    }
                    if shards[sh].time_ns != time_ns && !shards[sh].ops.is_empty() {
                        flush_shard(engine, &mut shards, sh, false, &mut skipped, &created)?;
                    }
                    shards[sh].time_ns = time_ns;
                    for rec in &recs {
                        if restored
                            .get(&rec.op.case_id)
                            .is_some_and(|&at| rec.seq <= at)
                        {
                            covered += 1;
                            continue;
                        }
                        let mut op = rec.op;
                        if op.kind == OpKind::Create {
                            let id = op.case_id;
                            let (g, generation) = logged_id(*num, id, partition)?;
                            fresh = fresh.max(g + 1);
                            gens.push((g, generation));
                            if !engine.slot_free_for(sh, op.slot, id) {
                                // Slot reuse: the previous case's replies come first.
                                flush_shard(engine, &mut shards, sh, true, &mut skipped, &created)?;
                            }
                            if !engine.restore_slot(sh, op.slot, id, op.workflow, time_ns) {
                                return Err(bad(format!(
                                    "segment {num}: case {id} names slot {} past the layout",
                                    op.slot
                                )));
                            }
                            created.insert(id);
                        }
                        let s = &mut shards[sh];
                        if let Some(regs) = rec.regs {
                            op.data = s.data.len() as u32;
                            s.data.push(regs);
                        }
                        s.ops.push(op);
                        s.expect.push((rec.seq, rec.state));
                        total += 1;
                        if s.ops.len() >= REPLAY_JOB_OPS {
                            flush_shard(engine, &mut shards, sh, false, &mut skipped, &created)?;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for sh in 0..shards.len() {
        flush_shard(engine, &mut shards, sh, true, &mut skipped, &created)?;
    }
    if covered > 0 {
        tracing::info!(
            ops = covered,
            "event log: ops logged while a checkpoint was taken are in its snapshots"
        );
    }
    if skipped > 0 {
        tracing::warn!(
            ops = skipped,
            "event log: ops on cases whose creation was compacted away, or on a workflow \
             whose registration never became durable, were skipped"
        );
    }
    let _ = per_shard;
    engine.restore_allocator(fresh, &gens);
    Ok(total)
}

/// The global slot and generation a logged case id (of a creation or a snapshot) encodes: the
/// allocator is restored from them.
fn logged_id(segment: u64, id: u64, partition: u16) -> io::Result<(u64, u32)> {
    let Some(cid) = CaseId::decode(id).filter(|c| c.partition == partition) else {
        return Err(bad(format!(
            "segment {segment}: case id {id:#x} is not a partition-{partition} id of this \
             layout (a version-1 log whose slot generation passed 2^21?): export its cases with \
             a release that reads it and start from a new data directory"
        )));
    };
    Ok((u64::from(cid.local) - 1, cid.generation))
}

/// Submits the pending ops of shard `sh`; with `wait`, waits for everything in flight.
fn flush_shard(
    engine: &Engine,
    shards: &mut [ShardReplay],
    sh: usize,
    wait: bool,
    skipped: &mut u64,
    created: &HashSet<u64>,
) -> io::Result<()> {
    let s = &mut shards[sh];
    if !s.ops.is_empty() {
        let mut job = Job::new(std::mem::take(&mut s.ops), std::mem::take(&mut s.data));
        job.saved = std::mem::take(&mut s.saved);
        job.time_ns = s.time_ns;
        let expect = std::mem::take(&mut s.expect);
        loop {
            match engine.submit_job(sh, job) {
                Ok(rx) => {
                    s.inflight.push_back((rx, expect));
                    break;
                }
                Err((j, true)) => {
                    // Ring full: wait for the oldest job, then retry.
                    job = j;
                    match s.inflight.pop_front() {
                        Some((rx, exp)) => check(rx, &exp, sh, skipped, created)?,
                        None => thread::sleep(Duration::from_micros(50)),
                    }
                }
                Err((_, false)) => return Err(bad("engine stopped during replay".into())),
            }
        }
    }
    let keep = if wait { 0 } else { REPLAY_DEPTH };
    while s.inflight.len() > keep {
        if let Some((rx, exp)) = s.inflight.pop_front() {
            check(rx, &exp, sh, skipped, created)?;
        }
    }
    Ok(())
}

fn check(
    rx: oneshot::Receiver<Box<Job>>,
    expect: &[(u64, u8)],
    shard: usize,
    skipped: &mut u64,
    created: &HashSet<u64>,
) -> io::Result<()> {
    let job = rx
        .blocking_recv()
        .map_err(|_| bad(format!("replay job on shard {shard} was dropped")))?;
    for ((op, o), (seq, state)) in job.ops.iter().zip(job.out.iter()).zip(expect) {
        if (o.status == Status::NoCase && !created.contains(&op.case_id))
            || o.status == Status::NoWorkflow
        {
            *skipped += 1;
            continue;
        }
        if o.status != Status::Ok || o.seq != *seq || state_code(o.state) != *state {
            return Err(bad(format!(
                "replay diverged on case {} ({:?} task {}): logged seq {} state {}, replay gave \
                 {:?} seq {} state {:?}; the server will not start on a state it cannot vouch for",
                op.case_id, op.kind, op.task, seq, state, o.status, o.seq, o.state
            )));
        }
    }
    Ok(())
}

fn replay_workflow(engine: &Engine, p: &[u8]) -> Result<(), String> {
    let w = get_workflow(p)?;
    if w.options & OPTION_DELETED_STAND_IN != 0 {
        return replay_stand_in(engine, &w);
    }
    let catalog::Compiled {
        model: mut m,
        net,
        format: detected,
        subnet_nets,
        ..
    } = catalog::compile_with(
        w.model,
        format_of_code(w.format),
        &knhk_import::Options {
            external_predicates: w.options & OPTION_CLIENT_PREDICATES != 0,
            empty_tasks_silent: w.options & OPTION_AUTO_TASKS != 0,
            subnet_cases: if w.options & OPTION_SUBNET_CASES != 0 {
                knhk_import::SubnetCases::Always
            } else {
                knhk_import::SubnetCases::Auto
            },
            ..knhk_import::Options::default()
        },
    )
    .map_err(|e| format!("'{}': {e}", w.id))?;
    let form = net_form(&net);
    if form != w.form {
        return Err(format!(
            "workflow '{}' compiles to a different net than when it was logged (the importer \
             changed): refusing to replay its events on another net",
            w.id
        ));
    }
    for t in &w.timers {
        t.apply(&mut m)
            .map_err(|e| format!("workflow '{}': {e}", w.id))?;
    }
    let name = m.name.clone();
    let timers = w.timers.clone();
    let digest = knhk_engine::workflow::registration_digest(
        w.model,
        detected,
        w.options & OPTION_CLIENT_PREDICATES != 0,
        w.options & OPTION_AUTO_TASKS == 0,
        w.options & OPTION_SUBNET_CASES != 0,
        &timers,
    );
    register_logged(
        &w,
        &name,
        |index, id| {
            Workflow::new(index, id, detected, &m, *net, w.registered_ns)
                .with_client_predicates(w.options & OPTION_CLIENT_PREDICATES != 0)
                .with_manual_silent_tasks(w.options & OPTION_AUTO_TASKS == 0)
                .with_registered_timers(timers)
                .with_source_digest(digest)
                .with_subnet_cases(w.options & OPTION_SUBNET_CASES != 0)
                .with_subnets(&m, subnet_nets)
        },
        engine,
    )?;
    Ok(())
}

/// Registers the workflow of record `w` as `build` makes it, in the record's namespace and at
/// the index the record names (refused at any other: the log's indices are the kernel's).
/// Replayed from the log: durable already.
fn register_logged(
    w: &WfRec<'_>,
    name: &str,
    build: impl FnOnce(u16, String) -> Workflow,
    engine: &Engine,
) -> Result<Arc<Workflow>, String> {
    let expect = w.index;
    engine
        .register_in(
            w.namespace,
            w.id,
            None,
            |index, id| {
                if index != expect {
                    return Err(EngineError::Internal(format!(
                        "workflow '{id}' replayed at index {index}, logged at {expect}"
                    )));
                }
                Ok(build(index, id).in_namespace(w.namespace))
            },
            name,
            |_| Ok(()),
        )
        .map_err(|e| e.to_string())
}

/// The net a stand-in is registered with: a deleted version of which no case is left runs no
/// case and is never shown, it only keeps its index and version number.
const STAND_IN_MODEL: &str = r#"{"name": "deleted version", "id": "Net",
  "conditions": [{"id": "i", "kind": "input", "flows": [{"to": "t"}]}, {"id": "o", "kind": "output"}],
  "tasks": [{"id": "t", "flows": [{"to": "o"}]}]}"#;

/// Replays a stand-in ([`OPTION_DELETED_STAND_IN`]): a deleted version of which no case is
/// left, at its logged index, with its id, namespace and registration time.
fn replay_stand_in(engine: &Engine, w: &WfRec<'_>) -> Result<(), String> {
    let catalog::Compiled { model, net, .. } = catalog::compile_with(
        STAND_IN_MODEL.as_bytes(),
        Some(knhk_import::Format::Json),
        &knhk_import::Options::default(),
    )
    .map_err(|e| format!("'{}': the stand-in of a deleted version: {e}", w.id))?;
    let wf = register_logged(
        w,
        w.id,
        |index, id| {
            Workflow::new(
                index,
                id,
                knhk_import::Format::Json,
                &model,
                *net,
                w.registered_ns,
            )
        },
        engine,
    )?;
    // Deleted from the start (its deletion record follows too, with its flags): never a live
    // workflow.
    engine
        .mark_deleted(wf.index, false)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c::crc32c(b""), 0);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let whole = crc32c::crc32c(&data);
        assert_eq!(
            crc32c::crc32c_append(crc32c::crc32c(&data[..333]), &data[333..]),
            whole
        );
    }

    #[test]
    fn scan_stops_at_flipped_byte_and_torn_tail() {
        let mut buf = MAGIC.to_vec();
        for i in 0..10u8 {
            frame(&mut buf, K_BATCH, |b| b.extend_from_slice(&[i; 20]));
        }
        let (recs, d) = scan(&buf);
        assert_eq!(recs.len(), 10);
        assert!(d.is_none());
        let mut torn = buf.clone();
        torn.truncate(buf.len() - 3);
        let (recs, d) = scan(&torn);
        assert_eq!(recs.len(), 9);
        assert!(d.is_some());
        let mut flipped = buf.clone();
        let at = flipped.len() - 40;
        flipped[at] ^= 0x10;
        let (recs, d) = scan(&flipped);
        assert!(recs.len() < 10);
        assert_eq!(d.map(|d| d.reason), Some("checksum mismatch"));
    }

    #[test]
    fn case_record_roundtrip_and_bounds() {
        use knhk_engine::engine::{Hist, Lifecycle};
        let mut saved = SavedCase {
            created_ns: 5,
            terminal: true,
            history_dropped: 2,
            ..SavedCase::default()
        };
        saved.regs[3] = -9;
        saved.bytes[0] = 0xAB;
        saved.bytes[143] = 0xCD;
        saved.history = vec![
            Hist {
                time_ns: 10,
                task: 1,
                lifecycle: Lifecycle::Start,
                instance: knhk_engine::command::NO_INSTANCE,
            },
            Hist {
                time_ns: 11,
                task: 1,
                lifecycle: Lifecycle::PiAbort,
                instance: 65_535,
            },
        ];
        let rec = CaseRec {
            shard: 1,
            slot: 7,
            case_id: (1 << 32) | 4,
            workflow: 3,
            seq: 42,
            state: 3,
            saved,
        };
        let mut buf = MAGIC.to_vec();
        put_case(&mut buf, &rec);
        let (recs, d) = scan(&buf);
        assert!(d.is_none());
        assert_eq!(recs[0].0, K_CASE);
        let p = &buf[recs[0].1.clone()];
        let got = get_case(p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                got.shard,
                got.slot,
                got.case_id,
                got.workflow,
                got.seq,
                got.state
            ),
            (1, 7, (1 << 32) | 4, 3, 42, 3)
        );
        assert_eq!(got.saved.regs, rec.saved.regs);
        assert_eq!(got.saved.bytes, rec.saved.bytes);
        assert!(got.saved.terminal);
        assert_eq!((got.saved.created_ns, got.saved.history_dropped), (5, 2));
        let h: Vec<_> = got
            .saved
            .history
            .iter()
            .map(|h| (h.time_ns, h.task, h.lifecycle, h.instance))
            .collect();
        assert_eq!(
            h,
            vec![
                (10, 1, Lifecycle::Start, knhk_engine::command::NO_INSTANCE),
                (11, 1, Lifecycle::PiAbort, 65_535)
            ]
        );
        // A history count the payload cannot hold, and a truncated payload, are errors.
        let mut forged = p.to_vec();
        let at = 2 + 4 + 8 + 2 + 8 + 8 + 1 + 1 + 1 + 8 + 8;
        forged[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(get_case(&forged).is_err_and(|e| e.contains("exceeds the record")));
        assert!(get_case(&p[..p.len() - 1]).is_err());
        assert!(got.saved.timers.is_empty(), "no timers: none read");

        // Armed timers follow the saved case; a torn timer list is an error.
        let timers = vec![
            knhk_engine::engine::ArmedTimer {
                task: 2,
                deadline_ns: 1_700_000_000_123_456_789,
            },
            knhk_engine::engine::ArmedTimer {
                task: 63,
                deadline_ns: u64::MAX,
            },
        ];
        let mut rec = rec;
        rec.saved.timers = timers.clone();
        rec.saved.history.push(Hist {
            time_ns: 12,
            task: 2,
            lifecycle: Lifecycle::TimerSkip,
            instance: knhk_engine::command::NO_INSTANCE,
        });
        let mut buf = MAGIC.to_vec();
        put_case(&mut buf, &rec);
        let (recs, _) = scan(&buf);
        let p = &buf[recs[0].1.clone()];
        let got = get_case(p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.saved.timers, timers);
        assert_eq!(got.saved.bytes, rec.saved.bytes);
        assert_eq!(
            got.saved.history.last().map(|h| h.lifecycle),
            Some(Lifecycle::TimerSkip)
        );
        assert!(get_case(&p[..p.len() - 3]).is_err());
    }

    #[test]
    fn op_roundtrip() {
        let mut op = Op::new(OpKind::Complete, (3 << 32) | 17, 5, 2);
        op.flags = knhk_engine::workers::OP_USE_BITS;
        op.branch_bits = 0b101;
        op.reg_mask = 0b11;
        op.data = 0;
        let mut job = Job::new(vec![op], vec![[7, 0, 0, 0, 0, 0, 0, 0]]);
        job.time_ns = 42;
        job.out[0].seq = 9;
        let mut buf = MAGIC.to_vec();
        assert_eq!(put_batch(&mut buf, 1, &job), 1);
        let (recs, d) = scan(&buf);
        assert!(d.is_none());
        let mut out = Vec::new();
        let (shard, t) = get_batch(&buf[recs[0].1.clone()], &mut out).unwrap_or((0, 0));
        assert_eq!((shard, t), (1, 42));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].op.case_id, op.case_id);
        assert_eq!(out[0].op.branch_bits, 0b101);
        assert_eq!(out[0].regs, Some([7, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(out[0].seq, 9);
    }

    /// A sub-net case's creation keeps its parent link, in the op record and in a checkpoint's
    /// case record (with and without armed timers before it); a plain creation has none.
    #[test]
    fn subnet_case_parent_link_roundtrip() {
        let mut child = Op::new(OpKind::Create, 9, 2, 5);
        child.workflow = 4;
        child.parent = (3 << 32) | 1;
        child.instance = 17;
        let mut plain = Op::new(OpKind::Create, 10, 3, 0);
        plain.workflow = 1;
        let job = Job::new(vec![child, plain], Vec::new());
        let mut buf = MAGIC.to_vec();
        assert_eq!(put_batch(&mut buf, 0, &job), 2);
        let (recs, _) = scan(&buf);
        let mut out = Vec::new();
        get_batch(&buf[recs[0].1.clone()], &mut out).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<_> = out
            .iter()
            .map(|r| {
                (
                    r.op.case_id,
                    r.op.workflow,
                    r.op.task,
                    r.op.parent,
                    r.op.instance,
                )
            })
            .collect();
        assert_eq!(got, vec![(9, 4, 5, (3 << 32) | 1, 17), (10, 1, 0, 0, 0)]);
        let link = knhk_engine::workers::ParentLink {
            case: 77,
            task: 6,
            instance: 3,
        };

        for timers in [0usize, 2] {
            let saved = SavedCase {
                parent: Some(link),
                timers: (0..timers)
                    .map(|k| knhk_engine::engine::ArmedTimer {
                        task: k as u8,
                        deadline_ns: 1000 + k as u64,
                    })
                    .collect(),
                ..SavedCase::default()
            };
            let rec = CaseRec {
                shard: 0,
                slot: 2,
                case_id: 9,
                workflow: 4,
                seq: 3,
                state: 0,
                saved,
            };
            let mut buf = MAGIC.to_vec();
            put_case(&mut buf, &rec);
            let (recs, _) = scan(&buf);
            let got = get_case(&buf[recs[0].1.clone()]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got.saved.parent, Some(link));
            assert_eq!(got.saved.timers.len(), timers);
        }
    }

    /// A timer's expiry keeps its flag (its events are the timer's); the expected sequence
    /// number it ran with is not logged (a replay applies what succeeded).
    #[test]
    fn timer_op_roundtrip() {
        use knhk_engine::workers::{OP_EXPECT_SEQ, OP_TIMER};
        let mut ops = vec![
            Op::new(OpKind::Fire, 7, 1, 3),
            Op::new(OpKind::Complete, 7, 1, 4),
        ];
        for op in &mut ops {
            op.flags = OP_TIMER | OP_EXPECT_SEQ;
            op.expect_seq = 11;
        }
        let job = Job::new(ops, Vec::new());
        let mut buf = MAGIC.to_vec();
        assert_eq!(put_batch(&mut buf, 0, &job), 2);
        let (recs, _) = scan(&buf);
        let mut out = Vec::new();
        get_batch(&buf[recs[0].1.clone()], &mut out).unwrap_or((0, 0));
        let got: Vec<_> = out
            .iter()
            .map(|r| (r.op.kind, r.op.task, r.op.flags))
            .collect();
        assert_eq!(
            got,
            vec![(OpKind::Fire, 3, OP_TIMER), (OpKind::Complete, 4, OP_TIMER)]
        );
    }

    /// Delete records: the history flag survives, and a record without it (as written before
    /// it existed) reads as a deletion that kept the history.
    #[test]
    fn delete_record_with_and_without_history() {
        let mut buf = MAGIC.to_vec();
        put_delete(&mut buf, 7, 123, true);
        put_delete(&mut buf, 8, 456, false);
        let (recs, d) = scan(&buf);
        assert!(d.is_none());
        assert_eq!(get_delete(&buf[recs[0].1.clone()]), Ok((7, 123, true)));
        assert_eq!(get_delete(&buf[recs[1].1.clone()]), Ok((8, 456, false)));
        assert_eq!(
            get_retire(&buf[recs[0].1.clone()]),
            Ok((7, 123)),
            "an older reader"
        );
    }

    /// Events records (exporters): every field survives; a damaged payload is refused.
    #[test]
    fn events_record_roundtrip_and_refusals() {
        use knhk_engine::command::{EventKind, NO_INSTANCE};
        use knhk_engine::engine::{Lifecycle, WatchItem};
        let item = |kind, task, lifecycle, instance| WatchItem {
            case_id: 0x1_0000_0007,
            workflow: 3,
            kind,
            task,
            lifecycle,
            instance,
            time_ns: 1_700_000_000_123_456_789,
            seq: 9,
            state: knhk_engine::workers::State::Running,
            marking: 1,
            enabled: 2,
        };
        let events = vec![
            item(EventKind::CaseCreated, 0, None, NO_INSTANCE),
            item(EventKind::Task, 5, Some(Lifecycle::Start), NO_INSTANCE),
            item(EventKind::Task, 63, Some(Lifecycle::TimerSkip), 65_535),
            item(EventKind::CaseCancelled, 0, None, NO_INSTANCE),
        ];
        let mut buf = MAGIC.to_vec();
        assert!(!put_events(&mut buf, 1, &[]), "no record without events");
        assert!(put_events(&mut buf, 1, &events));
        let (recs, d) = scan(&buf);
        assert!(d.is_none());
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].0, K_EVENTS);
        let mut out = Vec::new();
        assert_eq!(get_events(&buf[recs[0].1.clone()], &mut out), Ok(1));
        let want: Vec<LoggedEvent> = events
            .iter()
            .map(|e| LoggedEvent {
                case_id: e.case_id,
                workflow: e.workflow,
                time_ns: e.time_ns,
                kind: e.kind,
                task: e.task,
                lifecycle: e.lifecycle,
                instance: e.instance,
            })
            .collect();
        assert_eq!(out, want);
        // a payload cut short, or with bytes left over, is refused with a reason
        let p = &buf[recs[0].1.clone()];
        assert!(get_events(&p[..p.len() - 1], &mut out).is_err());
        let mut longer = p.to_vec();
        longer.push(0);
        assert!(get_events(&longer, &mut out)
            .unwrap_err()
            .contains("after the last event"));
        assert_eq!(
            "12:4096".parse::<Position>(),
            Ok(Position {
                segment: 12,
                offset: 4096
            })
        );
        assert_eq!(
            Position {
                segment: 12,
                offset: 4096
            }
            .to_string(),
            "12:4096"
        );
        assert!("12".parse::<Position>().is_err());
    }

    /// Multiple-instance ops (version 4): their instance, and a start's count, survive.
    #[test]
    fn instance_op_roundtrip() {
        use knhk_engine::workers::OP_COUNT;
        let mut ops = vec![
            Op::new(OpKind::Start, 7, 1, 3),
            Op::new(OpKind::StartInstance, 7, 1, 3),
            Op::new(OpKind::CompleteInstance, 7, 1, 3),
            Op::new(OpKind::AddInstance, 7, 1, 3),
        ];
        ops[0].flags = OP_COUNT;
        ops[0].instance = 65_536;
        ops[1].instance = 12;
        ops[2].instance = 40_000;
        ops[2].flags = knhk_engine::workers::OP_USE_BITS;
        ops[2].branch_bits = 2;
        ops[3].instance = 5;
        let job = Job::new(ops.clone(), Vec::new());
        let mut buf = MAGIC.to_vec();
        assert_eq!(put_batch(&mut buf, 0, &job), 4);
        let (recs, d) = scan(&buf);
        assert!(d.is_none());
        let mut out = Vec::new();
        get_batch(&buf[recs[0].1.clone()], &mut out).unwrap_or((0, 0));
        let got: Vec<_> = out
            .iter()
            .map(|r| (r.op.kind, r.op.instance, r.op.flags, r.op.branch_bits))
            .collect();
        assert_eq!(
            got,
            vec![
                (OpKind::Start, 65_536, OP_COUNT, 0),
                (OpKind::StartInstance, 12, 0, 0),
                (
                    OpKind::CompleteInstance,
                    40_000,
                    knhk_engine::workers::OP_USE_BITS,
                    2
                ),
                (OpKind::AddInstance, 5, 0, 0),
            ]
        );
    }
}
