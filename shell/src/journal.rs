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
//! form), batch records (the successful ops of one executed job with their results) and, in a
//! checkpoint, the allocator counters.
//!
//! Recovery ([`start`]): scan the segments, verify every CRC; the first torn or corrupt record
//! of the last segment and everything after it is cut off (logged, counted in
//! [`JournalStats::corrupt_tails`]), never replayed; damage before the last segment stops the
//! start with an error. The records are then replayed through the engine's normal op path (the
//! kernel workers run them, the reply threads rebuild the case book) with the recorded case
//! ids, slots, registers and timestamps, and every result is checked against the recorded
//! one. Nothing is served until replay has ended (the server's startup latch).
//!
//! Bounded replay: the active segment is sealed past `segment_bytes`; then a compactor thread
//! rewrites all sealed segments into one checkpoint segment holding every workflow, the
//! allocator counters and the records of the cases the engine still holds (running, or
//! finished but not yet evicted). Records of evicted cases are dropped. The log is thus bounded
//! by the live cases' records plus two segments.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::engine::{BatchHook, Engine, EngineConfig};
use crate::ids::CaseId;
use crate::workers::{Job, Op, OpKind, Status, OP_USE_BITS, REGISTERS};
use crate::workflow::Workflow;
use knhk_engine::{catalog, EngineError};
use knhk_import::Format;

/// On-disk format version, in every segment header. Version 2: case ids carry a partition
/// field ([`crate::ids`]). Version 1 segments are read (their ids are partition-0 ids, the
/// same numbers) and never appended to: the server continues in a new version-2 segment.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this server reads.
pub const OLDEST_READABLE_VERSION: u16 = 1;
/// The first 8 bytes of every segment.
pub const MAGIC: &[u8; 8] = b"KNHKWAL\x01";
/// Largest record accepted on reading (a longer length field is corruption).
const MAX_RECORD: u32 = 256 << 20;
/// Relaxed mode: how often the writer syncs.
const RELAXED_SYNC: Duration = Duration::from_millis(5);
/// Ops per replayed job.
const REPLAY_JOB_OPS: usize = 4096;
/// Replayed jobs in flight per shard.
const REPLAY_DEPTH: usize = 64;

const K_HEADER: u8 = 1;
const K_WORKFLOW: u8 = 2;
const K_BATCH: u8 = 3;
const K_COUNTERS: u8 = 4;

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
    /// 1 once a write or sync failed: from then on the server refuses work.
    pub failed: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------------------------- framing

/// Appends one framed record of `kind` whose payload `fill` writes.
fn frame(buf: &mut Vec<u8>, kind: u8, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]);
    buf.push(kind);
    fill(buf);
    let len = u32::try_from(buf.len() - start - 8).unwrap_or(u32::MAX);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), &buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why a scan stopped before the end of a segment.
#[derive(Debug)]
struct Damage {
    offset: usize,
    reason: &'static str,
}

/// The records of one segment: (kind, payload) from `MAGIC` on; stops at the first damaged
/// record.
fn scan(data: &[u8]) -> (Vec<(u8, std::ops::Range<usize>)>, Option<Damage>) {
    let mut out = Vec::new();
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return (
            out,
            Some(Damage {
                offset: 0,
                reason: "bad or missing segment magic",
            }),
        );
    }
    let mut at = MAGIC.len();
    while at < data.len() {
        let Some(head) = data.get(at..at + 8) else {
            return (
                out,
                Some(Damage {
                    offset: at,
                    reason: "torn record header",
                }),
            );
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 || len > MAX_RECORD {
            return (
                out,
                Some(Damage {
                    offset: at,
                    reason: "impossible record length",
                }),
            );
        }
        let end = at + 8 + len as usize;
        let Some(body) = data.get(at + 8..end) else {
            return (
                out,
                Some(Damage {
                    offset: at,
                    reason: "torn record (shorter than its length)",
                }),
            );
        };
        if crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), body) != crc {
            return (
                out,
                Some(Damage {
                    offset: at,
                    reason: "checksum mismatch",
                }),
            );
        }
        out.push((body[0], at + 9..end));
        at = end;
    }
    (out, None)
}

/// A little-endian reader over a payload; every read is checked.
struct Rd<'a> {
    b: &'a [u8],
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() < n {
            return Err("record payload shorter than its fields".into());
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    buf.extend_from_slice(b);
}

/// Segment header.
#[derive(Debug, Clone, Copy)]
struct Header {
    version: u16,
    segment: u64,
    checkpoint: bool,
    workers: u32,
    per_shard: u32,
}

fn put_header(buf: &mut Vec<u8>, h: &Header) {
    frame(buf, K_HEADER, |b| {
        b.extend_from_slice(&h.version.to_le_bytes());
        b.extend_from_slice(&h.segment.to_le_bytes());
        b.push(u8::from(h.checkpoint));
        b.extend_from_slice(&h.workers.to_le_bytes());
        b.extend_from_slice(&h.per_shard.to_le_bytes());
    });
}

fn get_header(p: &[u8]) -> Result<Header, String> {
    let mut r = Rd { b: p };
    Ok(Header {
        version: r.u16()?,
        segment: r.u64()?,
        checkpoint: r.u8()? != 0,
        workers: r.u32()?,
        per_shard: r.u32()?,
    })
}

/// A registered workflow as logged.
struct WfRec<'a> {
    index: u16,
    registered_ns: u64,
    format: i32,
    id: &'a str,
    model: &'a [u8],
    form: &'a [u8],
}

/// The log's code of a model format (1 YAWL, 2 PNML, 3 JSON; 0: detect from the content).
/// The same numbers as `knhk.v1.ModelFormat`, but the log's own: they never change.
fn format_code(f: Format) -> i32 {
    match f {
        Format::Yawl => 1,
        Format::Pnml => 2,
        Format::Json => 3,
    }
}

fn format_of_code(code: i32) -> Option<Format> {
    match code {
        1 => Some(Format::Yawl),
        2 => Some(Format::Pnml),
        3 => Some(Format::Json),
        _ => None,
    }
}

fn put_workflow(buf: &mut Vec<u8>, w: &Workflow, model: &[u8]) {
    let form = net_form(&w.net);
    frame(buf, K_WORKFLOW, |b| {
        b.extend_from_slice(&w.index.to_le_bytes());
        b.extend_from_slice(&w.registered_unix_nanos.to_le_bytes());
        b.extend_from_slice(&format_code(w.format).to_le_bytes());
        put_bytes(b, w.id.as_bytes());
        put_bytes(b, model);
        put_bytes(b, &form);
    });
}

fn get_workflow(p: &[u8]) -> Result<WfRec<'_>, String> {
    let mut r = Rd { b: p };
    let index = r.u16()?;
    let registered_ns = r.u64()?;
    let format = r.u32()? as i32;
    let id = std::str::from_utf8(r.bytes()?).map_err(|_| "workflow id is not UTF-8")?;
    let model = r.bytes()?;
    let form = r.bytes()?;
    Ok(WfRec {
        index,
        registered_ns,
        format,
        id,
        model,
        form,
    })
}

/// The compiled form of a net as logged: its structure through the kernel's public views
/// (conditions, tasks, join/split codes, pre/post sets, cancellation sets, branches). Replay
/// recompiles the logged source and refuses to go on if the form differs (a changed compiler
/// would otherwise replay events on another net).
pub fn net_form(net: &knhk_kernel::Net) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + 64 * net.task_count() as usize);
    b.extend_from_slice(&net.condition_count().to_le_bytes());
    b.extend_from_slice(&net.task_count().to_le_bytes());
    b.extend_from_slice(&net.input_condition().unwrap_or(u32::MAX).to_le_bytes());
    b.extend_from_slice(&net.output_condition().unwrap_or(u32::MAX).to_le_bytes());
    for t in 0..net.task_count() {
        let Some(v) = net.task(t) else { continue };
        b.extend_from_slice(&v.pre().to_le_bytes());
        b.extend_from_slice(&v.post().to_le_bytes());
        b.push(v.join() as u8);
        b.push(v.split() as u8);
        b.extend_from_slice(&v.cancel_conditions().to_le_bytes());
        b.extend_from_slice(&v.cancel_tasks().to_le_bytes());
        b.extend_from_slice(&(v.branch_count() as u32).to_le_bytes());
        for c in v.branch_conditions() {
            b.extend_from_slice(&c.to_le_bytes());
        }
        b.extend_from_slice(
            &v.default_branch()
                .map_or(u32::MAX, |d| d as u32)
                .to_le_bytes(),
        );
    }
    b
}

/// Encodes the successful ops of `job` as one batch record; returns how many it holds.
fn put_batch(buf: &mut Vec<u8>, shard: usize, job: &Job) -> u64 {
    let n = job
        .ops
        .iter()
        .zip(job.out.iter())
        .filter(|(_, o)| o.status == Status::Ok)
        .count();
    if n == 0 {
        return 0;
    }
    frame(buf, K_BATCH, |b| {
        b.extend_from_slice(&(shard as u16).to_le_bytes());
        b.extend_from_slice(&job.time_ns.to_le_bytes());
        b.extend_from_slice(&(n as u32).to_le_bytes());
        for (op, o) in job.ops.iter().zip(job.out.iter()) {
            if o.status != Status::Ok {
                continue;
            }
            put_op(b, op, o.seq, o.state as u8, job.data.get(op.data as usize));
        }
    });
    n as u64
}

fn put_op(b: &mut Vec<u8>, op: &Op, seq: u64, state: u8, regs: Option<&[i64; REGISTERS]>) {
    b.extend_from_slice(&op.case_id.to_le_bytes());
    b.extend_from_slice(&op.slot.to_le_bytes());
    b.push(op.kind as u8);
    b.push(op.task);
    b.push(op.flags);
    b.push(op.reg_mask);
    b.extend_from_slice(&seq.to_le_bytes());
    b.push(state);
    if op.kind == OpKind::Create {
        b.extend_from_slice(&op.workflow.to_le_bytes());
    }
    if op.flags & OP_USE_BITS != 0 {
        b.extend_from_slice(&op.branch_bits.to_le_bytes());
    }
    if op.reg_mask != 0 {
        let vals = regs.copied().unwrap_or([0; REGISTERS]);
        let mut nz = 0u8;
        for (r, v) in vals.iter().enumerate() {
            if op.reg_mask & (1 << r) != 0 && *v != 0 {
                nz |= 1 << r;
            }
        }
        b.push(nz);
        for (r, v) in vals.iter().enumerate() {
            if nz & (1 << r) != 0 {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// One logged op: the op (with `data` unset), its registers and its recorded result.
#[derive(Debug, Clone, Copy)]
struct OpRec {
    op: Op,
    regs: Option<[i64; REGISTERS]>,
    seq: u64,
    state: u8,
}

fn kind_of(k: u8) -> Result<OpKind, String> {
    Ok(match k {
        0 => OpKind::Create,
        1 => OpKind::Start,
        2 => OpKind::Complete,
        3 => OpKind::Fire,
        4 => OpKind::CancelTask,
        5 => OpKind::CancelCase,
        _ => return Err(format!("unknown op kind {k}")),
    })
}

fn get_batch(p: &[u8], out: &mut Vec<OpRec>) -> Result<(u16, u64), String> {
    let mut r = Rd { b: p };
    let shard = r.u16()?;
    let time_ns = r.u64()?;
    let n = r.u32()?;
    out.clear();
    for _ in 0..n {
        let case_id = r.u64()?;
        let slot = r.u32()?;
        let kind = kind_of(r.u8()?)?;
        let task = r.u8()?;
        let flags = r.u8()?;
        let reg_mask = r.u8()?;
        let seq = r.u64()?;
        let state = r.u8()?;
        let mut op = Op::new(kind, case_id, slot, task);
        op.flags = flags;
        op.reg_mask = reg_mask;
        if kind == OpKind::Create {
            op.workflow = r.u16()?;
        }
        if flags & OP_USE_BITS != 0 {
            op.branch_bits = r.u32()?;
        }
        let regs = if reg_mask != 0 {
            let nz = r.u8()?;
            let mut v = [0i64; REGISTERS];
            for (i, x) in v.iter_mut().enumerate() {
                if nz & (1 << i) != 0 {
                    *x = r.u64()? as i64;
                }
            }
            Some(v)
        } else {
            None
        };
        out.push(OpRec {
            op,
            regs,
            seq,
            state,
        });
    }
    Ok((shard, time_ns))
}

/// Allocator counters (checkpoints): the fresh-slot cursor and every nonzero slot generation.
fn put_counters(buf: &mut Vec<u8>, fresh: u64, gens: &[(u64, u32)]) {
    frame(buf, K_COUNTERS, |b| {
        b.extend_from_slice(&fresh.to_le_bytes());
        b.extend_from_slice(&(gens.len() as u32).to_le_bytes());
        for (g, gen) in gens {
            b.extend_from_slice(&g.to_le_bytes());
            b.extend_from_slice(&gen.to_le_bytes());
        }
    });
}

fn get_counters(p: &[u8]) -> Result<(u64, Vec<(u64, u32)>), String> {
    let mut r = Rd { b: p };
    let fresh = r.u64()?;
    let n = r.u32()?;
    let mut gens = Vec::with_capacity(n.min(1 << 20) as usize);
    for _ in 0..n {
        gens.push((r.u64()?, r.u32()?));
    }
    Ok((fresh, gens))
}

// ------------------------------------------------------------------------------- segments

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:016}.log"))
}

fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(num) = name
            .strip_prefix("wal-")
            .and_then(|s| s.strip_suffix(".log"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            v.push((num, e.path()));
        } else if name.ends_with(".tmp") {
            // A checkpoint that never got renamed: never valid.
            let _ = fs::remove_file(e.path());
        }
    }
    v.sort();
    Ok(v)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn ctx_err(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Creates a fresh segment holding only its header, synced.
fn create_segment(dir: &Path, n: u64, workers: u32, per_shard: u32) -> io::Result<(File, u64)> {
    let path = seg_path(dir, n);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| ctx_err("cannot create event log segment", &path, e))?;
    let mut buf = MAGIC.to_vec();
    put_header(
        &mut buf,
        &Header {
            version: FORMAT_VERSION,
            segment: n,
            checkpoint: false,
            workers,
            per_shard,
        },
    );
    f.write_all(&buf)
        .and_then(|_| f.sync_all())
        .map_err(|e| ctx_err("cannot write event log segment", &path, e))?;
    sync_dir(dir).map_err(|e| ctx_err("cannot sync data directory", dir, e))?;
    Ok((f, buf.len() as u64))
}

/// The records of a segment: (kind, payload range).
type Spans = Vec<(u8, std::ops::Range<usize>)>;

/// What a scan of the data directory found, before the engine starts.
struct Found {
    /// (segment number, contents up to the last good record, record spans)
    segments: Vec<(u64, Vec<u8>, Spans)>,
    layout: Option<(u32, u32)>,
    /// Format version of the last segment (an older one is not appended to).
    last_version: u16,
}

fn open_dir(dir: &Path, stats: &JournalStats) -> io::Result<Found> {
    if dir.exists() && !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "data directory {} exists and is not a directory",
                dir.display()
            ),
        ));
    }
    fs::create_dir_all(dir).map_err(|e| ctx_err("cannot create data directory", dir, e))?;
    // Prove the directory is writable now, not at the first event.
    let probe = dir.join(".knhk-write-probe");
    fs::write(&probe, b"ok")
        .and_then(|_| fs::remove_file(&probe))
        .map_err(|e| ctx_err("data directory is not writable:", dir, e))?;
    let mut segs = list_segments(dir).map_err(|e| ctx_err("cannot list", dir, e))?;
    // A checkpoint supersedes everything before it (left over when a compaction was cut
    // short after its rename).
    let mut first = 0;
    for (i, (_, path)) in segs.iter().enumerate() {
        let data = fs::read(path).map_err(|e| ctx_err("cannot read", path, e))?;
        let (recs, _) = scan(&data);
        if let Some((K_HEADER, r)) = recs.first().cloned() {
            if get_header(&data[r]).is_ok_and(|h| h.checkpoint) {
                first = i;
            }
        }
    }
    for (_, path) in segs.drain(..first) {
        fs::remove_file(&path).map_err(|e| ctx_err("cannot remove superseded", &path, e))?;
    }
    let count = segs.len();
    let mut found = Found {
        segments: Vec::new(),
        layout: None,
        last_version: FORMAT_VERSION,
    };
    for (i, (num, path)) in segs.into_iter().enumerate() {
        let mut data = fs::read(&path).map_err(|e| ctx_err("cannot read", &path, e))?;
        let (recs, damage) = scan(&data);
        let last = i + 1 == count;
        if let Some(d) = damage {
            if !last {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "event log segment {} is damaged at byte {} ({}) and is not the last \
                         segment: acknowledged events after it would be lost, so the server \
                         will not start; move the data directory aside to start empty",
                        path.display(),
                        d.offset,
                        d.reason
                    ),
                ));
            }
            let dropped = data.len() - d.offset;
            tracing::warn!(
                segment = %path.display(),
                offset = d.offset,
                bytes = dropped,
                reason = d.reason,
                "event log: torn or corrupt tail record detected; truncated, not replayed"
            );
            stats.corrupt_tails.fetch_add(1, Ordering::Relaxed);
            stats
                .truncated_bytes
                .fetch_add(dropped as u64, Ordering::Relaxed);
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| ctx_err("cannot open for truncation", &path, e))?;
            f.set_len(d.offset as u64)
                .and_then(|_| f.sync_all())
                .map_err(|e| ctx_err("cannot truncate", &path, e))?;
            data.truncate(d.offset);
        }
        let header = match recs.first() {
            Some((K_HEADER, r)) => get_header(&data[r.clone()]).ok(),
            _ => None,
        };
        let Some(h) = header else {
            if last {
                // Cut while being created: nothing in it was ever acknowledged.
                fs::remove_file(&path).map_err(|e| ctx_err("cannot remove", &path, e))?;
                continue;
            }
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("event log segment {} has no header", path.display()),
            ));
        };
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&h.version) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "event log segment {} has format version {}; this knhk reads versions {} \
                     to {}: run the knhk release that wrote it (or move the data directory \
                     aside to start empty)",
                    path.display(),
                    h.version,
                    OLDEST_READABLE_VERSION,
                    FORMAT_VERSION
                ),
            ));
        }
        found.last_version = h.version;
        match found.layout {
            None => found.layout = Some((h.workers, h.per_shard)),
            Some(l) if l != (h.workers, h.per_shard) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "event log segment {} has layout {}x{} but earlier ones {}x{}",
                        path.display(),
                        h.workers,
                        h.per_shard,
                        l.0,
                        l.1
                    ),
                ))
            }
            Some(_) => {}
        }
        found.segments.push((num, data, recs));
    }
    Ok(found)
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
}

/// The event log: a [`BatchHook`] that holds each job until its records are durable.
pub struct Journal {
    cfg: JournalConfig,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// The counters (fsyncs, events, corrupt tails, replay...).
    pub fn stats(&self) -> Arc<JournalStats> {
        self.shared.stats.clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> &JournalConfig {
        &self.cfg
    }

    /// Why the journal refuses work, once a write or sync has failed.
    pub fn failure(&self) -> Option<&str> {
        self.shared.failed.get().map(String::as_str)
    }

    /// Flushes what is buffered, syncs and stops the writer (after the engine has stopped).
    pub fn close(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
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

    fn registered(&self, wf: &Workflow, model: &[u8]) -> Result<(), EngineError> {
        let s = &*self.shared;
        if let Some(e) = self.refusal() {
            return Err(e);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut q = lock(&s.q);
            put_workflow(&mut q.buf, wf, model);
            q.records += 1;
            q.waiters.push(tx);
        }
        s.wake.notify_one();
        match rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(EngineError::Unavailable(why)),
            Err(_) => Err(EngineError::Unavailable(
                "event log writer stopped before the workflow was durable".into(),
            )),
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
    fn rotate(&mut self, stats: &Arc<JournalStats>) -> io::Result<()> {
        self.file.sync_data()?;
        let sealed = self.segment;
        let (f, size) = create_segment(&self.dir, sealed + 1, self.workers, self.per_shard)?;
        self.file = f;
        self.segment = sealed + 1;
        self.size = size;
        if self
            .compacting
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            let (dir, engine, flag, stats) = (
                self.dir.clone(),
                self.engine.clone(),
                self.compacting.clone(),
                stats.clone(),
            );
            let layout = (self.workers, self.per_shard);
            let spawned = thread::Builder::new()
                .name("knhk-compactor".into())
                .spawn(move || {
                    let t0 = Instant::now();
                    match compact(&dir, sealed, layout, &engine) {
                        Ok((kept, bytes)) => {
                            stats.compactions.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(
                                upto = sealed,
                                kept_events = kept,
                                bytes,
                                ms = t0.elapsed().as_millis() as u64,
                                "event log: checkpoint written, older segments removed"
                            );
                        }
                        Err(e) => tracing::warn!(error = %e, "event log: compaction failed"),
                    }
                    flag.store(false, Ordering::SeqCst);
                });
            if spawned.is_err() {
                self.compacting.store(false, Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

fn writer_loop(shared: Arc<Shared>, mut w: Writer) {
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
        let res = if wrote || sync {
            w.append(&buf, sync)
        } else {
            Ok(())
        };
        match res {
            Ok(()) => {
                let st = &shared.stats;
                if sync {
                    st.fsyncs.fetch_add(1, Ordering::Relaxed);
                    last_sync = Instant::now();
                }
                st.events.fetch_add(events, Ordering::Relaxed);
                st.records.fetch_add(records, Ordering::Relaxed);
                st.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                for job in held.drain(..) {
                    job.release();
                }
                for tx in waiters {
                    let _ = tx.send(Ok(()));
                }
            }
            Err(e) => {
                held.clear();
                for tx in &waiters {
                    let _ = tx.send(Err(e.to_string()));
                }
                fail(
                    &shared,
                    format!("{e}; the server refuses work it cannot persist"),
                );
                return;
            }
        }
        buf.clear();
        if w.size >= w.segment_bytes {
            if let Err(e) = w.rotate(&shared.stats) {
                fail(
                    &shared,
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

/// Rewrites segments `..= upto` into one checkpoint segment numbered `upto`.
fn compact(
    dir: &Path,
    upto: u64,
    layout: (u32, u32),
    engine: &Weak<Engine>,
) -> io::Result<(u64, u64)> {
    let Some(engine) = engine.upgrade() else {
        return Ok((0, 0));
    };
    let (fresh, gens, live) = engine.allocator_state();
    drop(engine);
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
    let mut batches: Vec<u8> = Vec::new();
    let mut ops = Vec::new();
    let mut kept = 0u64;
    for (_, path) in &segs {
        let data = fs::read(path)?;
        let (recs, damage) = scan(&data);
        if let Some(d) = damage {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} damaged at {} ({})", path.display(), d.offset, d.reason),
            ));
        }
        for (kind, r) in recs {
            let p = &data[r];
            match kind {
                K_WORKFLOW => frame(&mut out, K_WORKFLOW, |b| b.extend_from_slice(p)),
                K_BATCH => {
                    let (shard, time_ns) = get_batch(p, &mut ops).map_err(io::Error::other)?;
                    ops.retain(|o| live.contains(&o.op.case_id));
                    if ops.is_empty() {
                        continue;
                    }
                    kept += ops.len() as u64;
                    frame(&mut batches, K_BATCH, |b| {
                        b.extend_from_slice(&shard.to_le_bytes());
                        b.extend_from_slice(&time_ns.to_le_bytes());
                        b.extend_from_slice(&(ops.len() as u32).to_le_bytes());
                        for o in &ops {
                            put_op(b, &o.op, o.seq, o.state, o.regs.as_ref());
                        }
                    });
                }
                _ => {}
            }
        }
    }
    out.extend_from_slice(&batches);
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
    Ok((kept, out.len() as u64))
}

// ------------------------------------------------------------------------------- start + replay

/// Starts the engine on `cfg`, with the event log of `journal` when given: scans and repairs
/// the log, starts the engine with the log's layout, replays, then starts the writer. Blocking
/// (run it on a blocking thread). Replay has ended when it returns.
pub fn start(
    mut cfg: EngineConfig,
    hook: Arc<dyn BatchHook>,
    journal: Option<JournalConfig>,
) -> io::Result<(Arc<Engine>, Option<Arc<Journal>>)> {
    let Some(jc) = journal else {
        let engine = Engine::start(cfg, hook)?;
        return Ok((engine, None));
    };
    let stats = Arc::new(JournalStats::default());
    let found = open_dir(&jc.dir, &stats)?;
    if let Some((workers, per_shard)) = found.layout {
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
    let journal = Arc::new(Journal {
        cfg: jc.clone(),
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
            stats,
        }),
        writer: Mutex::new(None),
    });
    let engine = Engine::start(cfg, journal.clone())?;
    let t0 = Instant::now();
    let replayed = replay(&engine, &found).inspect_err(|_| engine.stop())?;
    let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let st = journal.stats();
    st.replayed_events.store(replayed, Ordering::Relaxed);
    st.replay_ns.store(ns, Ordering::Relaxed);
    let bytes: usize = found.segments.iter().map(|(_, d, _)| d.len()).sum();
    tracing::info!(
        events = replayed,
        bytes,
        ms = ns / 1_000_000,
        events_per_s = (replayed as f64 / (ns.max(1) as f64 / 1e9)) as u64,
        corrupt_tails = st.corrupt_tails.load(Ordering::Relaxed),
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
        engine: Arc::downgrade(&engine),
        compacting: Arc::new(AtomicBool::new(false)),
    };
    let shared = journal.shared.clone();
    let handle = thread::Builder::new()
        .name("knhk-journal".into())
        .spawn(move || writer_loop(shared, writer))?;
    *lock(&journal.writer) = Some(handle);
    journal.shared.replaying.store(false, Ordering::SeqCst);
    Ok((engine, Some(journal)))
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
    expect: Vec<(u64, u8)>,
    time_ns: u64,
    inflight: std::collections::VecDeque<Inflight>,
}

/// Replays every record through the engine; returns the number of ops replayed.
fn replay(engine: &Arc<Engine>, found: &Found) -> io::Result<u64> {
    let (workers, per_shard) = engine.layout();
    let mut shards: Vec<ShardReplay> = (0..workers).map(|_| ShardReplay::default()).collect();
    let mut fresh: u64 = 0;
    let mut gens: Vec<(u64, u32)> = Vec::new();
    let mut created: HashSet<u64> = HashSet::new();
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
    for (num, data, spans) in &found.segments {
        for (kind, r) in spans.iter().skip(1) {
            let p = &data[r.clone()];
            match *kind {
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
                        let mut op = rec.op;
                        if op.kind == OpKind::Create {
                            let id = op.case_id;
                            let Some(cid) = CaseId::decode(id).filter(|c| c.partition == 0) else {
                                return Err(bad(format!(
                                    "segment {num}: case id {id:#x} is not a partition-0 id of \
                                     this layout (a version-1 log whose slot generation passed \
                                     2^21?): export its cases with a release that reads it and \
                                     start from a new data directory"
                                )));
                            };
                            let g = u64::from(cid.local) - 1;
                            fresh = fresh.max(g + 1);
                            gens.push((g, cid.generation));
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
        if o.status != Status::Ok || o.seq != *seq || o.state as u8 != *state {
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
    let catalog::Compiled {
        model: m,
        net,
        format: detected,
    } = catalog::compile(w.model, format_of_code(w.format))
        .map_err(|e| format!("'{}': {e}", w.id))?;
    let form = net_form(&net);
    if form != w.form {
        return Err(format!(
            "workflow '{}' compiles to a different net than when it was logged (the importer \
             changed): refusing to replay its events on another net",
            w.id
        ));
    }
    let name = m.name.clone();
    let expect = w.index;
    engine
        .register(
            w.id,
            |index, id| {
                if index != expect {
                    return Err(EngineError::Internal(format!(
                        "workflow '{id}' replayed at index {index}, logged at {expect}"
                    )));
                }
                Ok(Workflow::new(
                    index,
                    id,
                    detected,
                    &m,
                    *net,
                    w.registered_ns,
                ))
            },
            &name,
            // Replayed from the log: durable already.
            |_| Ok(()),
        )
        .map_err(|e| e.to_string())?;
    Ok(())
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
    fn op_roundtrip() {
        let mut op = Op::new(OpKind::Complete, (3 << 32) | 17, 5, 2);
        op.flags = OP_USE_BITS;
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
}
