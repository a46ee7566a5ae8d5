//! Multiple-instance tasks (WCP-12..15, 34..36): attributes on the net, instances in the case.
//!
//! A task made multiple-instance with [`Net::set_mi`] creates its instances when it starts
//! ([`Net::start`] takes the count from the task's count register or its minimum,
//! [`Net::start_mi`] from the caller); each instance then starts and completes on its own, and
//! the task completes with the instance completion that reaches its threshold (or completes
//! every created instance). The instances not completed then are withdrawn (YAWL's cancelling
//! partial join, WCP-35), or run on with [`MiSpec::keep`] (WCP-34; threshold 0: WCP-12). A
//! dynamic task ([`MiSpec::dynamic`]) gains instances while it runs, up to its maximum
//! (WCP-15, WCP-36). The state lives in the case: a fixed 32-byte slot per MI task
//! ([`MAX_MI_TASKS`] per net), no allocation. Instance ids are `0..created`; up to
//! [`MI_MAX_INSTANCES`] per activation, started at most [`MI_WINDOW`] past the oldest
//! unfinished one.
use crate::{Case, Error, Net};
use knhk_sys as sys;

/// Multiple-instance tasks per net (a slot each in every case).
pub const MAX_MI_TASKS: usize = sys::KNHK_MAX_MI_TASKS as usize;
/// Instances one activation of an MI task may create: 2^16.
pub const MI_MAX_INSTANCES: u32 = sys::KNHK_MI_MAX_INSTANCES;
/// Started instances are tracked in a window of this many from the oldest unfinished one.
pub const MI_WINDOW: u32 = sys::KNHK_MI_WINDOW_SIZE;

/// A multiple-instance task's attributes, as YAWL's `multipleInstanceAttributes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MiSpec {
    /// Instances created when no count is given (>= 1).
    pub minimum: u32,
    /// Most instances (>= minimum, <= [`MI_MAX_INSTANCES`]).
    pub maximum: u32,
    /// Completions after which the task completes (capped by the number created); 0 only
    /// with `keep`.
    pub threshold: u32,
    /// Instances may be added while the task runs (YAWL creationMode "dynamic").
    pub dynamic: bool,
    /// At the threshold the other instances run on instead of being withdrawn.
    pub keep: bool,
    /// The register holding the instance count the task's start reads (WCP-14), if any.
    pub count_register: Option<u8>,
}

impl MiSpec {
    /// `n` instances, all of which must complete (WCP-13).
    pub fn fixed(n: u32) -> MiSpec {
        MiSpec {
            minimum: n,
            maximum: n,
            threshold: n,
            dynamic: false,
            keep: false,
            count_register: None,
        }
    }

    fn to_raw(self) -> sys::knhk_mi_spec_t {
        sys::knhk_mi_spec_t {
            minimum: self.minimum,
            maximum: self.maximum,
            threshold: self.threshold,
            flags: (if self.dynamic {
                sys::KNHK_MI_DYNAMIC
            } else {
                0
            } | if self.keep { sys::KNHK_MI_KEEP } else { 0 }) as u8,
            count_reg: self.count_register.unwrap_or(sys::KNHK_MI_NO_REG as u8),
            slot: 0,
            reserved: 0,
        }
    }

    pub(crate) fn from_raw(raw: &sys::knhk_mi_spec_t) -> Option<MiSpec> {
        (raw.slot != 0).then(|| MiSpec {
            minimum: raw.minimum,
            maximum: raw.maximum,
            threshold: raw.threshold,
            dynamic: u32::from(raw.flags) & sys::KNHK_MI_DYNAMIC != 0,
            keep: u32::from(raw.flags) & sys::KNHK_MI_KEEP != 0,
            count_register: (u32::from(raw.count_reg) != sys::KNHK_MI_NO_REG)
                .then_some(raw.count_reg),
        })
    }
}

/// Where one instance of an MI task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceState {
    /// No such instance in the task's live slot (never created, withdrawn, or the slot ended).
    None,
    /// Created, not started.
    Created,
    /// Started, not completed.
    Started,
    /// Completed (while the slot is live).
    Completed,
}

/// The instances of one activation of an MI task in a case (a copy of its slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Instances {
    /// Instances created (ids `0..created`).
    pub created: u32,
    /// Every instance below `base` has completed.
    pub base: u32,
    /// Bit k: instance `base + k` started.
    pub started: u64,
    /// Bit k: instance `base + k` completed.
    pub done: u64,
}

impl Instances {
    /// Instances completed.
    pub fn completed(&self) -> u32 {
        self.base + self.done.count_ones()
    }
    /// The state of instance `i`.
    pub fn state(&self, i: u32) -> InstanceState {
        if i >= self.created {
            InstanceState::None
        } else if i < self.base {
            InstanceState::Completed
        } else if i - self.base >= MI_WINDOW || self.started >> (i - self.base) & 1 == 0 {
            InstanceState::Created
        } else if self.done >> (i - self.base) & 1 == 1 {
            InstanceState::Completed
        } else {
            InstanceState::Started
        }
    }
    /// Every instance and its state, in id order (`created` items).
    pub fn iter(&self) -> impl Iterator<Item = (u32, InstanceState)> + '_ {
        (0..self.created).map(|i| (i, self.state(i)))
    }
}

impl Case {
    /// MI tasks with unfinished instances (busy, or running on past a keep threshold).
    #[inline]
    pub fn mi_live(&self) -> u64 {
        self.raw.mi_live
    }

    /// The live instances of MI task `t`, or `None` when it has none (or is not MI).
    pub fn instances(&self, net: &Net, t: u32) -> Option<Instances> {
        let slot = net.task(t)?.mi_slot()?;
        if self.raw.mi_live >> t & 1 == 0 {
            return None;
        }
        let m = &self.raw.mi[slot];
        Some(Instances {
            created: m.created,
            base: m.base,
            started: m.started,
            done: m.done,
        })
    }
}

impl Net {
    /// Makes task `t` multiple-instance (a second call replaces the attributes).
    pub fn set_mi(&mut self, t: u32, spec: MiSpec) -> Result<(), Error> {
        let raw = spec.to_raw();
        // SAFETY: pointers from a live &mut and a live local; libknhk copies *spec.
        Error::check(unsafe { sys::knhk_net_set_mi(&mut self.raw, t, &raw) })
    }

    /// The MI attributes of task `t`, if it is multiple-instance.
    pub fn mi_spec(&self, t: u32) -> Option<MiSpec> {
        self.task(t)?.mi()
    }

    /// Starts MI task `t` creating `count` instances (WCP-14 with the caller's count).
    pub fn start_mi(&self, case: &mut Case, t: u32, count: u32) -> Result<(), Error> {
        // SAFETY: pointers from live references; the case is exclusively borrowed.
        Error::check(unsafe { sys::knhk_start_mi(&self.raw, &mut case.raw, t, count) })
    }

    /// Starts instance `i` of MI task `t`.
    pub fn start_instance(&self, case: &mut Case, t: u32, i: u32) -> Result<(), Error> {
        // SAFETY: pointers from live references; the case is exclusively borrowed.
        Error::check(unsafe { sys::knhk_instance_start(&self.raw, &mut case.raw, t, i) })
    }

    /// Completes started instance `i` of MI task `t`; at the threshold the task completes too
    /// (its split's guards evaluated on the case's registers).
    pub fn complete_instance(&self, case: &mut Case, t: u32, i: u32) -> Result<(), Error> {
        // SAFETY: pointers from live references; the case is exclusively borrowed.
        Error::check(unsafe { sys::knhk_instance_complete(&self.raw, &mut case.raw, t, i) })
    }

    /// [`Net::complete_instance`] with the caller's predicate bits for the task's split.
    pub fn complete_instance_with64(
        &self,
        case: &mut Case,
        t: u32,
        i: u32,
        branch_bits: u64,
    ) -> Result<(), Error> {
        // SAFETY: pointers from live references; the case is exclusively borrowed.
        Error::check(unsafe {
            sys::knhk_instance_complete_bits64(&self.raw, &mut case.raw, t, i, branch_bits)
        })
    }

    /// Adds an instance to running dynamic MI task `t`; returns its id.
    pub fn add_instance(&self, case: &mut Case, t: u32) -> Result<u32, Error> {
        let mut id = 0u32;
        // SAFETY: pointers from live references; the case is exclusively borrowed and `id` is
        // a live local libknhk writes on success.
        Error::check(unsafe { sys::knhk_instance_add(&self.raw, &mut case.raw, t, &mut id) })?;
        Ok(id)
    }
}
