//! The one place the shell calls the kernel's case operations (DESIGN.md §1: the semantics live
//! in libknhk; this module only sequences calls and records before/after state).
//!
//! Everything here runs on a worker thread: no allocation, no locks.

use std::sync::OnceLock;

use knhk_kernel::{Case, Error, Event, Join, Net, Op as KOp, Split, CASE_BYTES};

use crate::workers::{
    Op, OpKind, Outcome, State, Status, OP_COUNT, OP_EXPECT_SEQ, OP_USE_BITS, REGISTERS,
};

/// Lanes per kernel beat (the kernel's `BEAT_LANES`, from libknhk's header).
pub use knhk_kernel::BEAT_LANES as LANES;

/// The value of an empty slot: a case of a one-task placeholder net, never run (a slot is
/// initialised by `create` before any op names it). `None` only if libknhk refused the fixed
/// placeholder net, which means the library is broken.
pub fn empty_case() -> Option<Case> {
    static PLACEHOLDER: OnceLock<Option<Case>> = OnceLock::new();
    *PLACEHOLDER.get_or_init(|| {
        let mut net = Box::new(Net::new());
        let i = net.add_condition().ok()?;
        let o = net.add_condition().ok()?;
        let t = net.add_task(Join::Xor, Split::And).ok()?;
        net.set_input(i).ok()?;
        net.set_output(o).ok()?;
        net.input_flow(i, t).ok()?;
        net.output_flow(t, o, None, false).ok()?;
        net.seal().ok()?;
        Case::new(&net).ok()
    })
}

fn status_of(e: Error) -> Status {
    match e {
        Error::NotEnabled => Status::NotEnabled,
        Error::NotStarted => Status::NotStarted,
        Error::SafetyViolation => Status::SafetyViolation,
        Error::CaseComplete => Status::CaseComplete,
        Error::BadTask => Status::BadTask,
        Error::MiTask => Status::MiTask,
        Error::NotMiTask => Status::NotMiTask,
        Error::BadInstance => Status::BadInstance,
        Error::MiLimit => Status::MiLimit,
        Error::MiWindow => Status::MiWindow,
        _ => Status::Refused,
    }
}

fn status_of_code(code: u8) -> Status {
    if code == 0 {
        Status::Ok
    } else {
        status_of(Error::from_raw(u32::from(code)))
    }
}

/// The state of a case as an outcome (before = after), for refusals and snapshots.
fn observe(net: &Net, case: &Case, status: Status) -> Outcome {
    let enabled = net.enabled(case);
    // the live instances of multiple-instance tasks (none in most nets: no work)
    let mut mi = [(0u8, knhk_kernel::Instances::default()); knhk_kernel::MAX_MI_TASKS];
    let mut live = case.mi_live();
    let mut k = 0;
    while live != 0 && k < mi.len() {
        let t = live.trailing_zeros();
        if let Some(i) = case.instances(net, t) {
            mi[k] = (t as u8, i);
            k += 1;
        }
        live &= live - 1;
    }
    Outcome {
        instance: 0,
        mi_live: case.mi_live(),
        mi,
        status,
        state: net.state(case).into(),
        flags: case.flags(),
        seq: case.seq(),
        marking: case.marking(),
        busy_before: case.busy(),
        busy: case.busy(),
        enabled_before: enabled,
        enabled,
    }
}

/// Initialises a slot as a new case of `net`, registers from `regs` where `mask` says.
pub fn create(net: &Net, case: &mut Case, mask: u8, regs: Option<[i64; REGISTERS]>) -> Outcome {
    match Case::new(net) {
        Ok(c) => *case = c,
        Err(e) => {
            return Outcome {
                status: status_of(e),
                ..Outcome::default()
            }
        }
    }
    if let Some(values) = regs {
        let dst = case.regs_mut();
        for (r, v) in values.iter().enumerate() {
            if mask & (1 << r) != 0 {
                dst[r] = *v;
            }
        }
    }
    let mut o = observe(net, case, Status::Ok);
    o.busy_before = 0;
    o.enabled_before = 0;
    o
}

/// A refusal of an op whose arguments do not fit (a Save or Restore op without its buffer).
pub fn refused() -> Outcome {
    Outcome {
        status: Status::Refused,
        ..Outcome::default()
    }
}

/// Saves `case` into `out` for a checkpoint; the outcome is the case as saved (its seq is the
/// checkpoint's position in the case's history). Changes nothing.
pub fn save(net: &Net, case: &Case, out: &mut [u8; CASE_BYTES]) -> Outcome {
    match case.save(net) {
        Ok(bytes) => {
            *out = bytes;
            observe(net, case, Status::Ok)
        }
        Err(e) => observe(net, case, status_of(e)),
    }
}

/// Puts the case saved in `bytes` into `case` (replay of a checkpoint). A refusal (the bytes
/// are not a valid case of `net`) leaves `case` unchanged.
pub fn restore(net: &Net, case: &mut Case, bytes: &[u8]) -> Outcome {
    match Case::restore(net, bytes) {
        Ok(c) => {
            *case = c;
            observe(net, case, Status::Ok)
        }
        Err(e) => Outcome {
            status: status_of(e),
            ..Outcome::default()
        },
    }
}

/// Runs one op alone (ops with data): registers written first and restored on refusal.
pub fn single(net: &Net, case: &mut Case, op: &Op, regs: Option<[i64; REGISTERS]>) -> Outcome {
    if op.flags & OP_EXPECT_SEQ != 0 && case.seq() as u32 != op.expect_seq {
        return observe(net, case, Status::SeqMismatch);
    }
    let busy_before = case.busy();
    let enabled_before = net.enabled(case);
    let saved: [i64; REGISTERS] = *case.regs();
    if let (Some(values), true) = (
        regs,
        matches!(
            op.kind,
            OpKind::Complete | OpKind::Fire | OpKind::CompleteInstance
        ),
    ) {
        let dst = case.regs_mut();
        for (r, v) in values.iter().enumerate() {
            if op.reg_mask & (1 << r) != 0 {
                dst[r] = *v;
            }
        }
    }
    let t = u32::from(op.task);
    let bits = (op.flags & OP_USE_BITS != 0).then_some(op.branch_bits);
    let mut instance = op.instance;
    let result = match op.kind {
        OpKind::Create | OpKind::Save | OpKind::Restore => Err(Error::BadArgument),
        OpKind::Start if op.flags & OP_COUNT != 0 => net.start_mi(case, t, op.instance),
        OpKind::Start => net.start(case, t),
        OpKind::StartInstance => net.start_instance(case, t, op.instance),
        OpKind::CompleteInstance => match bits {
            Some(b) => net.complete_instance_with64(case, t, op.instance, u64::from(b)),
            None => net.complete_instance(case, t, op.instance),
        },
        OpKind::AddInstance => net.add_instance(case, t).map(|i| instance = i),
        OpKind::Complete => match bits {
            Some(b) => net.complete_with(case, t, b),
            None => net.complete(case, t),
        },
        OpKind::Fire => match bits {
            Some(b) => net.fire_with(case, t, b),
            None => net.fire(case, t),
        },
        OpKind::CancelTask => net.cancel_task(case, t),
        OpKind::CancelCase => net.cancel_case(case),
    };
    let status = match result {
        Ok(()) => Status::Ok,
        Err(e) => {
            *case.regs_mut() = saved;
            status_of(e)
        }
    };
    let mut o = observe(net, case, status);
    o.busy_before = busy_before;
    o.enabled_before = enabled_before;
    o.instance = instance;
    o
}

/// Collects up to 8 plain ops on distinct cases of one net into one kernel beat.
pub struct BeatBuilder {
    len: usize,
    workflow: u16,
    /// Index of each lane's op in the job.
    index: [usize; LANES],
    slots: [u32; LANES],
    events: [Event; LANES],
    busy_before: [u64; LANES],
    enabled_before: [u64; LANES],
}

impl BeatBuilder {
    pub fn new() -> BeatBuilder {
        BeatBuilder {
            len: 0,
            workflow: 0,
            index: [0; LANES],
            slots: [0; LANES],
            events: [Event::default(); LANES],
            busy_before: [0; LANES],
            enabled_before: [0; LANES],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == LANES
    }

    pub fn workflow(&self) -> u16 {
        self.workflow
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// True when an op on `slot` of `workflow` can join this beat: same net, a case not yet in
    /// it (so each lane's before-state is the state before the beat).
    pub fn accepts(&self, workflow: u16, slot: u32) -> bool {
        self.len == 0
            || (self.len < LANES
                && self.workflow == workflow
                && !self.slots[..self.len].contains(&slot))
    }

    pub fn push(&mut self, index: usize, workflow: u16, op: &Op, net: &Net, case: &Case) {
        let lane = self.len;
        self.workflow = workflow;
        self.index[lane] = index;
        self.slots[lane] = op.slot;
        let kop = match op.kind {
            OpKind::Start => KOp::Start,
            OpKind::Complete => KOp::Complete,
            // Creations, saves and restores never join a beat (the worker runs them alone).
            OpKind::Fire
            | OpKind::Create
            | OpKind::Save
            | OpKind::Restore
            | OpKind::StartInstance
            | OpKind::CompleteInstance
            | OpKind::AddInstance => KOp::Fire,
            OpKind::CancelTask => KOp::CancelTask,
            OpKind::CancelCase => KOp::CancelCase,
        };
        self.events[lane] = if op.flags & OP_USE_BITS != 0 {
            Event::with_bits(op.slot, kop, op.task, op.branch_bits)
        } else {
            Event::new(op.slot, kop, op.task)
        };
        self.busy_before[lane] = case.busy();
        self.enabled_before[lane] = net.enabled(case);
        self.len += 1;
    }

    /// Runs the beat and writes each lane's outcome; returns the number of refused lanes.
    pub fn run(&mut self, net: &Net, cases: &mut [Case], out: &mut [Outcome]) -> u64 {
        let n = self.len;
        self.len = 0;
        let mut statuses = [0u8; LANES];
        let ran = net.beat(cases, &self.events[..n], &mut statuses);
        let mut refused = 0;
        for (lane, &code) in statuses.iter().enumerate().take(n) {
            let status = match ran {
                Ok(()) => status_of_code(code),
                Err(e) => status_of(e),
            };
            if status != Status::Ok {
                refused += 1;
            }
            let Some(case) = cases.get(self.slots[lane] as usize) else {
                continue;
            };
            let mut o = observe(net, case, status);
            o.busy_before = self.busy_before[lane];
            o.enabled_before = self.enabled_before[lane];
            if let Some(slot) = out.get_mut(self.index[lane]) {
                *slot = o;
            }
        }
        refused
    }
}

impl Default for BeatBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Maps the kernel's case state to ours (kept here so `workers` names no kernel enum).
pub fn state_of(net: &Net, case: &Case) -> State {
    net.state(case).into()
}
