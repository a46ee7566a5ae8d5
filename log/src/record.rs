//! The log's record vocabulary and its byte encoding: framing (length, CRC32C, kind), the
//! segment header, workflow, batch and counter records. This is the on-disk format that
//! `FORMAT_VERSION` names; `shell/tests/golden/` pins it. All integers little-endian.
//!
//! ```text
//! record    := len u32 | crc u32 | kind u8 | payload      crc = CRC32C(len bytes ++ kind ++ payload)
//! header    (kind 1) := version u16 | segment u64 | checkpoint u8 | workers u32 | slots per worker u32
//! workflow  (kind 2) := index u16 | registered unix ns u64 | format i32 (1 YAWL, 2 PNML, 3 JSON)
//!                       | id bytes | source model bytes | compiled form bytes     (bytes := len u32 | data)
//!                       | [namespace bytes: version 3 on; absent = "default"]
//!                       | [options u32: bit 0 client predicates, bit 1 silent tasks run
//!                          themselves; absent = 0]
//!                       | [task timers given at registration: n u16 | (task bytes | trigger u8
//!                          (1 on enablement, 2 on start) | ISO 8601 duration bytes) × n;
//!                          absent = none]
//! batch     (kind 3) := shard u16 | time unix ns u64 | n u32 | op × n
//! op                 := case id u64 | slot u32 | op code u8 | task u8 | flags u8 | registers written u8
//!                       | seq after u64 | state after u8
//!                       | [workflow index u16: create only] | [branch bits u32: flags & 1]
//!                         (flags: 1 branch bits, 2 instance, 4 instance count, 8 a task timer's expiry)
//!                       | [instance u32: flags & 2 (version 4 on): the instance of an
//!                         instance op, or with flags & 4 the instance count of a start]
//!                       | [nonzero mask u8 | value i64 per set bit: registers written ≠ 0]
//! counters  (kind 4) := fresh-slot cursor u64 | n u32 | (global slot u64 | generation u32) × n
//! case      (kind 5) := shard u16 | slot u32 | case id u64 | workflow index u16 | created unix ns u64
//!                       | seq u64 | state u8 | terminal u8 | nonzero mask u8 | value i64 per set bit
//!                       | history dropped u64 | n u32 | (time unix ns u64 | task u8 | lifecycle u8
//!                         [| instance u32: lifecycle & 0x80, version 4 on]) × n
//!                       | saved case bytes (libknhk's `knhk_case_save` encoding)
//!                       | [armed timers: n u8 | (task u8 | deadline unix ns u64) × n;
//!                          absent = none]
//! retire    (kind 6) := workflow index u16 | retired unix ns u64     (RetireWorkflow; kept by
//!                       checkpoints; an older reader ignores it)
//! delete    (kind 7) := workflow index u16 | deleted unix ns u64     (DeleteWorkflow; kept by
//!                       checkpoints with the workflow's record; an older reader ignores it)
//!                       | [flags u8: bit 0 its finished cases were deleted with it; absent = 0]
//! events    (kind 8) := shard u16 | n u32 | (case id u64 | workflow index u16 | time unix ns u64
//!                       | event u8 (1 task, 2 case created, 3 completed, 4 cancelled,
//!                         5 deadlocked) | task u8 | lifecycle u8 (0: none, else as in case
//!                         records) | instance u32) × n
//!                       (the events of the batch record just before it, written only while
//!                       an exporter is configured, for the exporters: replay ignores them,
//!                       checkpoints drop them, an older reader ignores them)
//! ```
//!
//! Case records (version 3 on) appear only in checkpoints: one per case the engine held when
//! the checkpoint was taken, saved at one point of its history (its seq); replay restores the
//! case and then applies only the logged ops on it whose seq is above that.
//!
//! Op codes, flag bits and state codes are the log's own ([`op_code`], [`FLAG_BRANCH_BITS`],
//! [`state_code`]), mapped from the engine's types in one place, so a change of an engine enum
//! cannot silently change the format.

use knhk_engine::command::EventKind;
use knhk_engine::command::NO_INSTANCE;
use knhk_engine::engine::{ArmedTimer, Hist, Lifecycle, WatchItem};
use knhk_engine::workers::{
    Job, Op, OpKind, SavedCase, State, Status, OP_COUNT, OP_TIMER, OP_USE_BITS, REGISTERS,
};
use knhk_engine::workflow::{RegisteredTimer, Workflow, DEFAULT_NAMESPACE};
use knhk_import::ir::TimerTrigger;
use knhk_import::Format;

use crate::{
    K_BATCH, K_CASE, K_COUNTERS, K_DELETE, K_EVENTS, K_HEADER, K_RETIRE, K_WORKFLOW, MAGIC,
    MAX_RECORD,
};

/// A saved case in libknhk's format 1 (ABI up to 4): still restored.
const CASE_BYTES_FORMAT1: usize = 144;

// ------------------------------------------------------------------------------- framing

/// Appends one framed record of `kind` whose payload `fill` writes.
pub(crate) fn frame(buf: &mut Vec<u8>, kind: u8, fill: impl FnOnce(&mut Vec<u8>)) {
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
pub(crate) struct Damage {
    pub(crate) offset: usize,
    pub(crate) reason: &'static str,
}

/// The records of one segment: (kind, payload) from `MAGIC` on; stops at the first damaged
/// record.
pub(crate) fn scan(data: &[u8]) -> (Vec<(u8, std::ops::Range<usize>)>, Option<Damage>) {
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
pub(crate) struct Rd<'a> {
    pub(crate) b: &'a [u8],
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

pub(crate) fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    buf.extend_from_slice(b);
}

/// Segment header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) version: u16,
    pub(crate) segment: u64,
    pub(crate) checkpoint: bool,
    pub(crate) workers: u32,
    pub(crate) per_shard: u32,
}

pub(crate) fn put_header(buf: &mut Vec<u8>, h: &Header) {
    frame(buf, K_HEADER, |b| {
        b.extend_from_slice(&h.version.to_le_bytes());
        b.extend_from_slice(&h.segment.to_le_bytes());
        b.push(u8::from(h.checkpoint));
        b.extend_from_slice(&h.workers.to_le_bytes());
        b.extend_from_slice(&h.per_shard.to_le_bytes());
    });
}

pub(crate) fn get_header(p: &[u8]) -> Result<Header, String> {
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
pub(crate) struct WfRec<'a> {
    pub(crate) index: u16,
    pub(crate) registered_ns: u64,
    pub(crate) format: i32,
    pub(crate) id: &'a str,
    pub(crate) model: &'a [u8],
    pub(crate) form: &'a [u8],
    pub(crate) namespace: &'a str,
    pub(crate) options: u32,
    /// Timers the registration gave tasks (`RegisterWorkflowRequest.task_timers`).
    pub(crate) timers: Vec<RegisteredTimer>,
}

/// The log's code of a model format (1 YAWL, 2 PNML, 3 JSON; 0: detect from the content).
/// The same numbers as `knhk.v1.ModelFormat`, but the log's own: they never change.
pub(crate) fn format_code(f: Format) -> i32 {
    match f {
        Format::Yawl => 1,
        Format::Pnml => 2,
        Format::Json => 3,
    }
}

pub(crate) fn format_of_code(code: i32) -> Option<Format> {
    match code {
        1 => Some(Format::Yawl),
        2 => Some(Format::Pnml),
        3 => Some(Format::Json),
        _ => None,
    }
}

pub(crate) fn put_workflow(buf: &mut Vec<u8>, w: &Workflow, model: &[u8]) {
    let form = net_form(&w.net);
    put_workflow_rec(
        buf,
        &WfRec {
            index: w.index,
            registered_ns: w.registered_unix_nanos,
            format: format_code(w.format),
            id: &w.id,
            model,
            form: &form,
            namespace: &w.namespace,
            options: workflow_options(w),
            timers: w.registered_timers.clone(),
        },
    );
}

/// A workflow record in the current format (a checkpoint rewrites older ones with it).
pub(crate) fn put_workflow_rec(buf: &mut Vec<u8>, w: &WfRec<'_>) {
    frame(buf, K_WORKFLOW, |b| {
        b.extend_from_slice(&w.index.to_le_bytes());
        b.extend_from_slice(&w.registered_ns.to_le_bytes());
        b.extend_from_slice(&w.format.to_le_bytes());
        put_bytes(b, w.id.as_bytes());
        put_bytes(b, w.model);
        put_bytes(b, w.form);
        put_bytes(b, w.namespace.as_bytes());
        b.extend_from_slice(&w.options.to_le_bytes());
        // registered timers: only when there are some (a record without keeps its old form)
        if !w.timers.is_empty() {
            b.extend_from_slice(&(w.timers.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
            for t in w.timers.iter().take(usize::from(u16::MAX)) {
                put_bytes(b, t.task.as_bytes());
                b.push(match t.trigger {
                    TimerTrigger::OnEnabled => 1,
                    TimerTrigger::OnExecuting => 2,
                });
                put_bytes(b, t.duration.as_bytes());
            }
        }
    });
}

/// Workflow option bit: registered with client predicates.
pub(crate) const OPTION_CLIENT_PREDICATES: u32 = 1;

/// Workflow option bit: silent tasks run themselves (registered without
/// `manual_silent_tasks`). Absent in records logged before they did: those replay with the
/// client driving every task, as they ran.
pub(crate) const OPTION_AUTO_TASKS: u32 = 2;

/// Workflow option bit: a stand-in for a deleted version, written by a checkpoint in place of
/// the version's record once no case of it is held or archived: index, id, namespace and
/// registration time only, no model (the log keeps a source only while its version is live
/// or a case of it can still be read). Replayed as a deleted version that holds its version
/// number.
pub(crate) const OPTION_DELETED_STAND_IN: u32 = 4;

/// Workflow option bit: registered asking for every composite task to run as a sub-net case.
pub(crate) const OPTION_SUBNET_CASES: u32 = 8;

pub(crate) fn workflow_options(w: &Workflow) -> u32 {
    let mut o = 0;
    if w.subnet_cases {
        o |= OPTION_SUBNET_CASES;
    }
    if w.client_predicates {
        o |= OPTION_CLIENT_PREDICATES;
    }
    if !w.manual_silent_tasks {
        o |= OPTION_AUTO_TASKS;
    }
    o
}

pub(crate) fn get_workflow(p: &[u8]) -> Result<WfRec<'_>, String> {
    let mut r = Rd { b: p };
    let index = r.u16()?;
    let registered_ns = r.u64()?;
    let format = r.u32()? as i32;
    let id = std::str::from_utf8(r.bytes()?).map_err(|_| "workflow id is not UTF-8")?;
    let model = r.bytes()?;
    let form = r.bytes()?;
    let namespace = if r.b.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        std::str::from_utf8(r.bytes()?).map_err(|_| "workflow namespace is not UTF-8")?
    };
    let options = if r.b.is_empty() { 0 } else { r.u32()? };
    let mut timers = Vec::new();
    if !r.b.is_empty() {
        let n = r.u16()?;
        for _ in 0..n {
            let task = std::str::from_utf8(r.bytes()?).map_err(|_| "timer task is not UTF-8")?;
            let trigger = match r.u8()? {
                1 => TimerTrigger::OnEnabled,
                2 => TimerTrigger::OnExecuting,
                c => return Err(format!("unknown timer trigger {c}")),
            };
            let duration =
                std::str::from_utf8(r.bytes()?).map_err(|_| "timer duration is not UTF-8")?;
            timers.push(RegisteredTimer {
                task: task.to_string(),
                trigger,
                duration: duration.to_string(),
            });
        }
    }
    Ok(WfRec {
        index,
        registered_ns,
        format,
        id,
        model,
        form,
        namespace,
        options,
        timers,
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
pub(crate) fn put_batch(buf: &mut Vec<u8>, shard: usize, job: &Job) -> u64 {
    let logged = |op: &Op, o: &knhk_engine::workers::Outcome| {
        o.status == Status::Ok && op_code(op.kind).is_some()
    };
    let n = job
        .ops
        .iter()
        .zip(job.out.iter())
        .filter(|(op, o)| logged(op, o))
        .count();
    if n == 0 {
        return 0;
    }
    frame(buf, K_BATCH, |b| {
        b.extend_from_slice(&(shard as u16).to_le_bytes());
        b.extend_from_slice(&job.time_ns.to_le_bytes());
        b.extend_from_slice(&(n as u32).to_le_bytes());
        for (op, o) in job.ops.iter().zip(job.out.iter()) {
            if !logged(op, o) {
                continue;
            }
            put_op(
                b,
                op,
                o.seq,
                state_code(o.state),
                job.data.get(op.data as usize),
            );
        }
    });
    n as u64
}

pub(crate) fn put_op(
    b: &mut Vec<u8>,
    op: &Op,
    seq: u64,
    state: u8,
    regs: Option<&[i64; REGISTERS]>,
) {
    b.extend_from_slice(&op.case_id.to_le_bytes());
    b.extend_from_slice(&op.slot.to_le_bytes());
    // Only ops with a code reach here (put_batch, and checkpoints copying logged ops).
    b.push(op_code(op.kind).unwrap_or(u8::MAX));
    b.push(op.task);
    let with_instance = op.kind.is_instance_op() || op.flags & OP_COUNT != 0;
    b.push(
        if op.flags & OP_USE_BITS != 0 {
            FLAG_BRANCH_BITS
        } else {
            0
        } | if with_instance { FLAG_INSTANCE } else { 0 }
            | if op.flags & OP_COUNT != 0 {
                FLAG_COUNT
            } else {
                0
            }
            | if op.flags & OP_TIMER != 0 {
                FLAG_TIMER
            } else {
                0
            }
            | if op.kind == OpKind::Create && op.parent != 0 {
                FLAG_PARENT
            } else {
                0
            },
    );
    b.push(op.reg_mask);
    b.extend_from_slice(&seq.to_le_bytes());
    b.push(state);
    if op.kind == OpKind::Create {
        b.extend_from_slice(&op.workflow.to_le_bytes());
        if op.parent != 0 {
            b.extend_from_slice(&op.parent.to_le_bytes());
            b.extend_from_slice(&op.instance.to_le_bytes());
        }
    }
    if op.flags & OP_USE_BITS != 0 {
        b.extend_from_slice(&op.branch_bits.to_le_bytes());
    }
    if with_instance {
        b.extend_from_slice(&op.instance.to_le_bytes());
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
pub(crate) struct OpRec {
    pub(crate) op: Op,
    pub(crate) regs: Option<[i64; REGISTERS]>,
    pub(crate) seq: u64,
    pub(crate) state: u8,
}

// The op record's codes. They are the log's own and never change with the engine's types;
// the mapping below is the only place that relates the two.

/// Op kinds: 0 create, 1 start, 2 complete, 3 fire, 4 cancel task, 5 cancel case; version 4
/// on: 6 start instance, 7 complete instance, 8 add instance. Saves and restores are checkpoint
/// traffic, never logged as ops: `None`.
pub(crate) fn op_code(k: OpKind) -> Option<u8> {
    Some(match k {
        OpKind::Create => 0,
        OpKind::Start => 1,
        OpKind::Complete => 2,
        OpKind::Fire => 3,
        OpKind::CancelTask => 4,
        OpKind::CancelCase => 5,
        OpKind::StartInstance => 6,
        OpKind::CompleteInstance => 7,
        OpKind::AddInstance => 8,
        OpKind::Save | OpKind::Restore => return None,
    })
}

pub(crate) fn kind_of(k: u8) -> Result<OpKind, String> {
    Ok(match k {
        0 => OpKind::Create,
        1 => OpKind::Start,
        2 => OpKind::Complete,
        3 => OpKind::Fire,
        4 => OpKind::CancelTask,
        5 => OpKind::CancelCase,
        6 => OpKind::StartInstance,
        7 => OpKind::CompleteInstance,
        8 => OpKind::AddInstance,
        _ => return Err(format!("unknown op kind {k}")),
    })
}

/// Flag bit of an op record: the op carried caller-computed branch bits (a u32 follows).
pub(crate) const FLAG_BRANCH_BITS: u8 = 1;
/// Flag bit of an op record (version 4 on): an instance u32 follows the branch bits.
pub(crate) const FLAG_INSTANCE: u8 = 2;
/// Flag bit of an op record (version 4 on): a start with the caller's instance count (in the
/// instance field).
pub(crate) const FLAG_COUNT: u8 = 4;
/// Flag bit of an op record: a task timer's expiry (engine `OP_TIMER`); its events are the
/// timer's (`autoskip`, or a completion by the timer).
pub(crate) const FLAG_TIMER: u8 = 8;
/// Op flags bit: a Create of a sub-net case; the parent case id and the instance follow the
/// workflow index (the op's task is the parent's composite task).
pub(crate) const FLAG_PARENT: u8 = 16;
/// Bit of a history event's lifecycle code (version 4 on): an instance u32 follows.
pub(crate) const LIFECYCLE_INSTANCE: u8 = 0x80;

/// Lifecycle codes of a case record's history: 1 start, 2 complete, 3 withdraw, 4 ate_abort,
/// 5 pi_abort, 6 skipped by its timer, 7 completed by its timer.
pub(crate) fn lifecycle_code(l: Lifecycle) -> u8 {
    match l {
        Lifecycle::Start => 1,
        Lifecycle::Complete => 2,
        Lifecycle::Withdraw => 3,
        Lifecycle::AteAbort => 4,
        Lifecycle::PiAbort => 5,
        Lifecycle::TimerSkip => 6,
        Lifecycle::TimerComplete => 7,
    }
}

pub(crate) fn lifecycle_of(c: u8) -> Result<Lifecycle, String> {
    Ok(match c {
        1 => Lifecycle::Start,
        2 => Lifecycle::Complete,
        3 => Lifecycle::Withdraw,
        4 => Lifecycle::AteAbort,
        5 => Lifecycle::PiAbort,
        6 => Lifecycle::TimerSkip,
        7 => Lifecycle::TimerComplete,
        _ => return Err(format!("unknown lifecycle code {c}")),
    })
}

/// Appends the events record of a job's events (nothing when it has none); returns whether
/// one was written.
pub(crate) fn put_events(buf: &mut Vec<u8>, shard: usize, events: &[WatchItem]) -> bool {
    if events.is_empty() {
        return false;
    }
    frame(buf, K_EVENTS, |b| {
        b.extend_from_slice(&(shard as u16).to_le_bytes());
        b.extend_from_slice(&(events.len() as u32).to_le_bytes());
        for e in events {
            b.extend_from_slice(&e.case_id.to_le_bytes());
            b.extend_from_slice(&e.workflow.to_le_bytes());
            b.extend_from_slice(&e.time_ns.to_le_bytes());
            b.push(match e.kind {
                EventKind::Task => 1,
                EventKind::CaseCreated => 2,
                EventKind::CaseCompleted => 3,
                EventKind::CaseCancelled => 4,
                EventKind::CaseDeadlocked => 5,
            });
            b.push(e.task);
            b.push(e.lifecycle.map_or(0, lifecycle_code));
            b.extend_from_slice(&e.instance.to_le_bytes());
        }
    });
    true
}

/// One event of an events record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedEvent {
    pub case_id: u64,
    /// The workflow's kernel index.
    pub workflow: u16,
    pub time_ns: u64,
    pub kind: EventKind,
    pub task: u8,
    /// The task's transition ([`EventKind::Task`] only).
    pub lifecycle: Option<Lifecycle>,
    /// The instance of a multiple-instance task, or [`knhk_engine::command::NO_INSTANCE`].
    pub instance: u32,
}

/// Decodes an events record's payload, appending to `out`; returns the shard.
pub(crate) fn get_events(p: &[u8], out: &mut Vec<LoggedEvent>) -> Result<u16, String> {
    let mut r = Rd { b: p };
    let shard = r.u16()?;
    let n = r.u32()?;
    for _ in 0..n {
        let case_id = r.u64()?;
        let workflow = r.u16()?;
        let time_ns = r.u64()?;
        let kind = match r.u8()? {
            1 => EventKind::Task,
            2 => EventKind::CaseCreated,
            3 => EventKind::CaseCompleted,
            4 => EventKind::CaseCancelled,
            5 => EventKind::CaseDeadlocked,
            k => return Err(format!("unknown event code {k}")),
        };
        let task = r.u8()?;
        let lifecycle = match r.u8()? {
            0 => None,
            c => Some(lifecycle_of(c)?),
        };
        let instance = r.u32()?;
        out.push(LoggedEvent {
            case_id,
            workflow,
            time_ns,
            kind,
            task,
            lifecycle,
            instance,
        });
    }
    if !r.b.is_empty() {
        return Err(format!("{} bytes after the last event", r.b.len()));
    }
    Ok(shard)
}

/// Case states after an op: 0 running, 1 complete, 2 deadlocked, 3 cancelled.
pub(crate) fn state_code(s: State) -> u8 {
    match s {
        State::Running => 0,
        State::Complete => 1,
        State::Deadlocked => 2,
        State::Cancelled => 3,
    }
}

pub(crate) fn get_batch(p: &[u8], out: &mut Vec<OpRec>) -> Result<(u16, u64), String> {
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
        if flags & FLAG_BRANCH_BITS != 0 {
            op.flags |= OP_USE_BITS;
        }
        op.reg_mask = reg_mask;
        if kind == OpKind::Create {
            op.workflow = r.u16()?;
            if flags & FLAG_PARENT != 0 {
                op.parent = r.u64()?;
                op.instance = r.u32()?;
            }
        }
        if flags & FLAG_BRANCH_BITS != 0 {
            op.branch_bits = r.u32()?;
        }
        if flags & FLAG_INSTANCE != 0 {
            op.instance = r.u32()?;
        }
        if flags & FLAG_COUNT != 0 {
            op.flags |= OP_COUNT;
        }
        if flags & FLAG_TIMER != 0 {
            op.flags |= OP_TIMER;
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
pub(crate) fn put_counters(buf: &mut Vec<u8>, fresh: u64, gens: &[(u64, u32)]) {
    frame(buf, K_COUNTERS, |b| {
        b.extend_from_slice(&fresh.to_le_bytes());
        b.extend_from_slice(&(gens.len() as u32).to_le_bytes());
        for (g, gen) in gens {
            b.extend_from_slice(&g.to_le_bytes());
            b.extend_from_slice(&gen.to_le_bytes());
        }
    });
}

pub(crate) fn get_counters(p: &[u8]) -> Result<(u64, Vec<(u64, u32)>), String> {
    let mut r = Rd { b: p };
    let fresh = r.u64()?;
    let n = r.u32()?;
    let mut gens = Vec::with_capacity(n.min(1 << 20) as usize);
    for _ in 0..n {
        gens.push((r.u64()?, r.u32()?));
    }
    Ok((fresh, gens))
}

/// A case saved in a checkpoint: where it lives, its saved point (seq, state) and the case.
pub(crate) struct CaseRec {
    pub(crate) shard: u16,
    pub(crate) slot: u32,
    pub(crate) case_id: u64,
    pub(crate) workflow: u16,
    pub(crate) seq: u64,
    pub(crate) state: u8,
    pub(crate) saved: SavedCase,
}

pub(crate) fn put_case(buf: &mut Vec<u8>, c: &CaseRec) {
    frame(buf, K_CASE, |b| {
        b.extend_from_slice(&c.shard.to_le_bytes());
        b.extend_from_slice(&c.slot.to_le_bytes());
        b.extend_from_slice(&c.case_id.to_le_bytes());
        b.extend_from_slice(&c.workflow.to_le_bytes());
        b.extend_from_slice(&c.saved.created_ns.to_le_bytes());
        b.extend_from_slice(&c.seq.to_le_bytes());
        b.push(c.state);
        b.push(u8::from(c.saved.terminal));
        let mut nz = 0u8;
        for (r, v) in c.saved.regs.iter().enumerate() {
            if *v != 0 {
                nz |= 1 << r;
            }
        }
        b.push(nz);
        for v in c.saved.regs.iter().filter(|v| **v != 0) {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&c.saved.history_dropped.to_le_bytes());
        b.extend_from_slice(&(c.saved.history.len() as u32).to_le_bytes());
        for h in &c.saved.history {
            b.extend_from_slice(&h.time_ns.to_le_bytes());
            b.push(h.task);
            if h.instance == NO_INSTANCE {
                b.push(lifecycle_code(h.lifecycle));
            } else {
                b.push(lifecycle_code(h.lifecycle) | LIFECYCLE_INSTANCE);
                b.extend_from_slice(&h.instance.to_le_bytes());
            }
        }
        put_bytes(b, &c.saved.bytes);
        // armed timers: only when there are some (or a parent link follows), so that a case
        // without timers keeps the record it always had
        if !c.saved.timers.is_empty() || c.saved.parent.is_some() {
            b.push(u8::try_from(c.saved.timers.len()).unwrap_or(u8::MAX));
            for t in c.saved.timers.iter().take(usize::from(u8::MAX)) {
                b.push(t.task);
                b.extend_from_slice(&t.deadline_ns.to_le_bytes());
            }
        }
        // a sub-net case: its parent, the parent's composite task and the instance
        if let Some(link) = c.saved.parent {
            b.extend_from_slice(&link.case.to_le_bytes());
            b.push(link.task);
            b.extend_from_slice(&link.instance.to_le_bytes());
        }
    });
}

pub(crate) fn get_case(p: &[u8]) -> Result<CaseRec, String> {
    let mut r = Rd { b: p };
    let shard = r.u16()?;
    let slot = r.u32()?;
    let case_id = r.u64()?;
    let workflow = r.u16()?;
    let mut saved = SavedCase {
        created_ns: r.u64()?,
        ..SavedCase::default()
    };
    let seq = r.u64()?;
    let state = r.u8()?;
    saved.terminal = r.u8()? != 0;
    let nz = r.u8()?;
    for (i, x) in saved.regs.iter_mut().enumerate() {
        if nz & (1 << i) != 0 {
            *x = r.u64()? as i64;
        }
    }
    saved.history_dropped = r.u64()?;
    let n = r.u32()?;
    // Each event takes 10 bytes: a count the payload cannot hold is corruption.
    if n as usize > r.b.len() / 10 {
        return Err(format!(
            "case {case_id}: history of {n} events exceeds the record"
        ));
    }
    saved.history.reserve(n as usize);
    for _ in 0..n {
        let time_ns = r.u64()?;
        let task = r.u8()?;
        let code = r.u8()?;
        let lifecycle = lifecycle_of(code & !LIFECYCLE_INSTANCE)?;
        let instance = if code & LIFECYCLE_INSTANCE != 0 {
            r.u32()?
        } else {
            NO_INSTANCE
        };
        saved.history.push(Hist {
            time_ns,
            task,
            lifecycle,
            instance,
        });
    }
    let bytes = r.bytes()?;
    // this libknhk's format, or format 1 (144 bytes, before multiple-instance slots), which
    // knhk_case_restore still reads
    if bytes.len() != saved.bytes.len() && bytes.len() != CASE_BYTES_FORMAT1 {
        return Err(format!(
            "case {case_id}: saved case of {} bytes, this libknhk saves {} (and reads {})",
            bytes.len(),
            saved.bytes.len(),
            CASE_BYTES_FORMAT1
        ));
    }
    saved.bytes = bytes.to_vec();
    if !r.b.is_empty() {
        let n = r.u8()?;
        for _ in 0..n {
            saved.timers.push(ArmedTimer {
                task: r.u8()?,
                deadline_ns: r.u64()?,
            });
        }
    }
    if !r.b.is_empty() {
        saved.parent = Some(knhk_engine::workers::ParentLink {
            case: r.u64()?,
            task: r.u8()?,
            instance: r.u32()?,
        });
    }
    Ok(CaseRec {
        shard,
        slot,
        case_id,
        workflow,
        seq,
        state,
        saved,
    })
}

/// A workflow's retirement: its index and when.
pub(crate) fn put_retire(buf: &mut Vec<u8>, index: u16, at_ns: u64) {
    frame(buf, K_RETIRE, |b| {
        b.extend_from_slice(&index.to_le_bytes());
        b.extend_from_slice(&at_ns.to_le_bytes());
    });
}

/// A workflow version's deletion: its index and when (the retirement's layout), then, when its
/// finished cases were deleted with it, a flags byte with bit 0 set (an older reader ignores
/// it).
pub(crate) fn put_delete(buf: &mut Vec<u8>, index: u16, at_ns: u64, with_history: bool) {
    frame(buf, K_DELETE, |b| {
        b.extend_from_slice(&index.to_le_bytes());
        b.extend_from_slice(&at_ns.to_le_bytes());
        if with_history {
            b.push(DELETE_WITH_HISTORY);
        }
    });
}

/// Bit of a delete record's optional flags byte: the version's finished cases went with it.
pub(crate) const DELETE_WITH_HISTORY: u8 = 1;

/// Reads a deletion's payload: index, when, and whether its history went with it.
pub(crate) fn get_delete(p: &[u8]) -> Result<(u16, u64, bool), String> {
    let mut r = Rd { b: p };
    let (index, at) = (r.u16()?, r.u64()?);
    let flags = if r.b.is_empty() { 0 } else { r.u8()? };
    Ok((index, at, flags & DELETE_WITH_HISTORY != 0))
}

/// Reads a retirement's or a deletion's payload.
pub(crate) fn get_retire(p: &[u8]) -> Result<(u16, u64), String> {
    let mut r = Rd { b: p };
    Ok((r.u16()?, r.u64()?))
}
