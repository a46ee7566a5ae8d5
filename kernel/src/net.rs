//! A net: built once through the builder methods into memory the caller owns, sealed
//! (validated) once, then immutable and shared by any number of threads.
use crate::{Case, CaseState, Element, Error, Event, Guard, SealError};
use core::mem::MaybeUninit;
use knhk_sys as sys;

/// Join codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Join {
    /// Every input condition marked; start consumes all.
    And = sys::KNHK_JOIN_AND,
    /// Any input marked; start consumes one.
    Xor = sys::KNHK_JOIN_XOR,
    /// OR-join. With a matching structured OR-split: the structured synchronizing merge
    /// (WCP-7, side words in the case). Otherwise general (WCP-37, WCP-38), decided as the
    /// YAWL engine decides it: enabled when an input is marked and no state reachable without
    /// firing it marks a further input (cancellation regions and busy tasks included); seal
    /// derives the decision tables, or refuses with [`Error::OrJoinCap`] above its caps.
    /// Start consumes every marked input.
    Or = sys::KNHK_JOIN_OR,
    /// Structured discriminator (WCP-9).
    Discriminator = sys::KNHK_JOIN_DISCRIMINATOR,
}

/// Split codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Split {
    /// Every outgoing flow.
    And = sys::KNHK_SPLIT_AND,
    /// First true guard in order, else the default flow.
    Xor = sys::KNHK_SPLIT_XOR,
    /// Every true guard, else the default flow.
    Or = sys::KNHK_SPLIT_OR,
}

impl Join {
    fn from_raw(v: u8) -> Join {
        match v as u32 {
            sys::KNHK_JOIN_AND => Join::And,
            sys::KNHK_JOIN_OR => Join::Or,
            sys::KNHK_JOIN_DISCRIMINATOR => Join::Discriminator,
            _ => Join::Xor,
        }
    }
}

impl Split {
    fn from_raw(v: u8) -> Split {
        match v as u32 {
            sys::KNHK_SPLIT_XOR => Split::Xor,
            sys::KNHK_SPLIT_OR => Split::Or,
            _ => Split::And,
        }
    }
}

/// A read-only view of one task of a net.
#[derive(Debug, Clone, Copy)]
pub struct TaskView<'a> {
    raw: &'a sys::knhk_task_t,
    branches: &'a [sys::knhk_branch_t],
}

impl<'a> TaskView<'a> {
    /// Input condition mask.
    pub fn pre(&self) -> u64 {
        self.raw.pre
    }
    /// Union of the outgoing flows' conditions.
    pub fn post(&self) -> u64 {
        self.raw.post
    }
    /// Join code (after sealing, single-input AND/OR joins read as XOR).
    pub fn join(&self) -> Join {
        Join::from_raw(self.raw.join)
    }
    /// Split code.
    pub fn split(&self) -> Split {
        Split::from_raw(self.raw.split)
    }
    /// Conditions emptied when this task completes.
    pub fn cancel_conditions(&self) -> u64 {
        self.raw.cancel_conditions
    }
    /// Tasks withdrawn when this task completes.
    pub fn cancel_tasks(&self) -> u64 {
        self.raw.cancel_tasks
    }
    /// The condition index of each outgoing flow, in evaluation order.
    pub fn branch_conditions(&self) -> impl Iterator<Item = u32> + 'a {
        self.branches.iter().map(|b| b.conditions.trailing_zeros())
    }
    /// Number of outgoing flows.
    pub fn branch_count(&self) -> usize {
        self.branches.len()
    }
    /// Index of the default flow, if any.
    pub fn default_branch(&self) -> Option<usize> {
        (self.raw.ndefaults > 0).then_some(self.raw.default_branch as usize)
    }
    /// The task's multiple-instance attributes, if it is an MI task.
    pub fn mi(&self) -> Option<crate::MiSpec> {
        crate::MiSpec::from_raw(&self.raw.mi)
    }
    pub(crate) fn mi_slot(&self) -> Option<usize> {
        (self.raw.mi.slot != 0).then(|| (self.raw.mi.slot as usize - 1) % crate::MAX_MI_TASKS)
    }
}

/// A workflow net in the kernel's hot form (~36 KB). Keep it in a `Box` or a `static` when
/// the stack is small; [`Net::init_in`] builds one in caller-provided storage.
#[repr(transparent)]
pub struct Net {
    pub(crate) raw: sys::knhk_net_t,
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}

impl Net {
    /// An empty, unsealed net.
    pub fn new() -> Net {
        let mut net = Net {
            raw: sys::knhk_net_t::default(),
        };
        // SAFETY: the pointer comes from a live &mut; knhk_net_init only writes *net.
        let status = unsafe { sys::knhk_net_init(&mut net.raw) };
        debug_assert_eq!(status, sys::KNHK_OK);
        net
    }

    /// Builds an empty net in `slot` (caller-provided storage, no copy of 36 KB).
    pub fn init_in(slot: &mut MaybeUninit<Net>) -> &mut Net {
        // SAFETY: Net is repr(transparent) over knhk_net_t, a plain-data C struct for which
        // knhk_net_init writes every byte (memset then fields), so the slot is initialised
        // when it returns OK, which it does for any non-NULL pointer.
        unsafe {
            let raw = slot.as_mut_ptr().cast::<sys::knhk_net_t>();
            let status = sys::knhk_net_init(raw);
            debug_assert_eq!(status, sys::KNHK_OK);
            slot.assume_init_mut()
        }
    }

    // ---- builder ----

    /// Adds a condition and returns its index.
    pub fn add_condition(&mut self) -> Result<u32, Error> {
        let mut index = 0;
        // SAFETY: pointers from live &mut references.
        Error::check(unsafe { sys::knhk_net_add_condition(&mut self.raw, &mut index) })?;
        Ok(index)
    }

    /// Adds a task and returns its index.
    pub fn add_task(&mut self, join: Join, split: Split) -> Result<u32, Error> {
        let mut index = 0;
        // SAFETY: pointers from live &mut references.
        Error::check(unsafe {
            sys::knhk_net_add_task(&mut self.raw, join as u32, split as u32, &mut index)
        })?;
        Ok(index)
    }

    /// Marks the input condition.
    pub fn set_input(&mut self, condition: u32) -> Result<(), Error> {
        // SAFETY: pointer from a live &mut.
        Error::check(unsafe { sys::knhk_net_set_input(&mut self.raw, condition) })
    }

    /// Marks the output condition.
    pub fn set_output(&mut self, condition: u32) -> Result<(), Error> {
        // SAFETY: pointer from a live &mut.
        Error::check(unsafe { sys::knhk_net_set_output(&mut self.raw, condition) })
    }

    /// Adds the flow `condition -> task`.
    pub fn input_flow(&mut self, condition: u32, task: u32) -> Result<(), Error> {
        // SAFETY: pointer from a live &mut.
        Error::check(unsafe { sys::knhk_net_add_input_flow(&mut self.raw, condition, task) })
    }

    /// Adds the flow `task -> condition` as the task's next branch. `None` guards are true.
    pub fn output_flow(
        &mut self,
        task: u32,
        condition: u32,
        guard: Option<&Guard>,
        is_default: bool,
    ) -> Result<(), Error> {
        let raw_guard = guard.map(|g| g.raw());
        let gptr = raw_guard
            .as_ref()
            .map_or(core::ptr::null(), |g| g as *const _);
        // SAFETY: net pointer from a live &mut; gptr is NULL or points to raw_guard, which
        // outlives the call; libknhk copies the guard.
        Error::check(unsafe {
            sys::knhk_net_add_output_flow(&mut self.raw, task, condition, gptr, is_default as u32)
        })
    }

    /// Adds `condition` to `task`'s cancellation set.
    pub fn add_cancel_condition(&mut self, task: u32, condition: u32) -> Result<(), Error> {
        // SAFETY: pointer from a live &mut.
        Error::check(unsafe { sys::knhk_net_add_cancel_condition(&mut self.raw, task, condition) })
    }

    /// Adds task `victim` to `task`'s cancellation set.
    pub fn add_cancel_task(&mut self, task: u32, victim: u32) -> Result<(), Error> {
        // SAFETY: pointer from a live &mut.
        Error::check(unsafe { sys::knhk_net_add_cancel_task(&mut self.raw, task, victim) })
    }

    /// Validates the net and makes it runnable. On failure the net is unchanged and the error
    /// names the defect and the element.
    pub fn seal(&mut self) -> Result<(), SealError> {
        let mut report = sys::knhk_seal_report_t::default();
        // SAFETY: pointers from live &mut references.
        let status = unsafe { sys::knhk_net_seal(&mut self.raw, &mut report) };
        match Error::check(status) {
            Ok(()) => Ok(()),
            Err(error) => Err(SealError {
                error,
                element: match report.element {
                    sys::KNHK_ELEMENT_CONDITION => Element::Condition(report.index),
                    sys::KNHK_ELEMENT_TASK => Element::Task(report.index),
                    _ => Element::None,
                },
                other: (report.other != u32::MAX).then_some(report.other),
            }),
        }
    }

    // ---- introspection ----

    /// The OR-joins decided by the general (YAWL) rule, bit t = task t: those without a
    /// matching structured OR-split (WCP-37/38). 0 before seal.
    pub fn general_or_joins(&self) -> u64 {
        // SAFETY: a pointer from a live reference; the function only reads the net.
        unsafe { sys::knhk_net_general_or_joins(&self.raw) }
    }

    /// True after a successful seal.
    pub fn is_sealed(&self) -> bool {
        self.raw.sealed != 0
    }
    /// Number of conditions.
    pub fn condition_count(&self) -> u32 {
        self.raw.nconditions
    }
    /// Number of tasks.
    pub fn task_count(&self) -> u32 {
        self.raw.ntasks
    }
    /// Input condition index, if set.
    pub fn input_condition(&self) -> Option<u32> {
        (self.raw.input != 0).then(|| self.raw.input.trailing_zeros())
    }
    /// Output condition index, if set.
    pub fn output_condition(&self) -> Option<u32> {
        (self.raw.output != 0).then(|| self.raw.output.trailing_zeros())
    }
    /// A view of task `t`, if it exists.
    pub fn task(&self, t: u32) -> Option<TaskView<'_>> {
        if t >= self.raw.ntasks {
            return None;
        }
        let raw = &self.raw.tasks[t as usize];
        let first = raw.first_branch as usize;
        let branches = &self.raw.branches[first..first + raw.nbranches as usize];
        Some(TaskView { raw, branches })
    }
    /// The raw C struct (read-only).
    pub fn as_raw(&self) -> &sys::knhk_net_t {
        &self.raw
    }
    /// A 64-bit fingerprint of the sealed net's structure (conditions, input, output, every
    /// task's join, split, flows, guards and cancellation sets): equal for nets built by the
    /// same builder calls, in any process. Saved cases carry it ([`Case::save`]). `None` before
    /// a successful seal.
    pub fn fingerprint(&self) -> Option<u64> {
        // SAFETY: the pointer comes from a live reference; libknhk only reads.
        let f = unsafe { sys::knhk_net_fingerprint(&self.raw) };
        (f != 0).then_some(f)
    }

    // ---- cases (hot path: one call into libknhk each, no allocation) ----

    /// Enabled tasks of `case`, one bit each.
    #[inline]
    pub fn enabled(&self, case: &Case) -> u64 {
        // SAFETY: both pointers come from live references; libknhk only reads.
        unsafe { sys::knhk_enabled(&self.raw, &case.raw) }
    }

    /// Starts task `t`.
    #[inline]
    pub fn start(&self, case: &mut Case, t: u32) -> Result<(), Error> {
        // SAFETY: pointers from live references; the case is exclusively borrowed.
        Error::check(unsafe { sys::knhk_start(&self.raw, &mut case.raw, t) })
    }

    /// Completes busy task `t`, evaluating its guards on the case registers.
    #[inline]
    pub fn complete(&self, case: &mut Case, t: u32) -> Result<(), Error> {
        // SAFETY: pointers from live references; the case is exclusively borrowed.
        Error::check(unsafe { sys::knhk_complete(&self.raw, &mut case.raw, t) })
    }

    /// Completes busy task `t` with caller-computed predicate bits (bit k = flow k).
    #[inline]
    pub fn complete_with(&self, case: &mut Case, t: u32, branch_bits: u32) -> Result<(), Error> {
        // SAFETY: pointers from live references; the case is exclusively borrowed.
        Error::check(unsafe { sys::knhk_complete_bits(&self.raw, &mut case.raw, t, branch_bits) })
    }

    /// Start then complete, atomically.
    #[inline]
    pub fn fire(&self, case: &mut Case, t: u32) -> Result<(), Error> {
        // SAFETY: pointers from live references; the case is exclusively borrowed.
        Error::check(unsafe { sys::knhk_fire(&self.raw, &mut case.raw, t) })
    }

    /// Fires `tasks` in order on one case, each as [`Net::fire`] would, stopping at the first
    /// refusal (the case is then as after the fires before it): one call into libknhk for the
    /// whole sequence (`knhk_fire_sequence`). `Err((fired, error))`: the tasks before index
    /// `fired` fired and `tasks[fired]` was refused with `error` (`BadArgument`, nothing fired,
    /// for more than `u32::MAX` tasks).
    #[inline]
    pub fn fire_sequence(&self, case: &mut Case, tasks: &[u32]) -> Result<(), (usize, Error)> {
        let n = u32::try_from(tasks.len()).map_err(|_| (0, Error::BadArgument))?;
        let mut fired = 0u32;
        // SAFETY: pointers from live references; the case is exclusively borrowed; `tasks`
        // holds exactly n elements (empty: n = 0, the pointer is not read).
        let s = unsafe {
            sys::knhk_fire_sequence(&self.raw, &mut case.raw, tasks.as_ptr(), n, &mut fired)
        };
        Error::check(s).map_err(|e| (fired as usize, e))
    }

    /// Start then complete with caller-computed predicate bits.
    #[inline]
    pub fn fire_with(&self, case: &mut Case, t: u32, branch_bits: u32) -> Result<(), Error> {
        // SAFETY: pointers from live references; the case is exclusively borrowed.
        Error::check(unsafe { sys::knhk_fire_bits(&self.raw, &mut case.raw, t, branch_bits) })
    }

    /// [`Net::complete_with`] with a predicate bit for each of up to [`crate::MAX_BRANCHES`]
    /// flows (wide tasks; `complete_with` reads flows 32 and up as false).
    #[inline]
    pub fn complete_with64(&self, case: &mut Case, t: u32, branch_bits: u64) -> Result<(), Error> {
        // SAFETY: pointers from live references; the case is exclusively borrowed.
        Error::check(unsafe { sys::knhk_complete_bits64(&self.raw, &mut case.raw, t, branch_bits) })
    }

    /// [`Net::fire_with`] with a predicate bit for each of up to [`crate::MAX_BRANCHES`] flows.
    #[inline]
    pub fn fire_with64(&self, case: &mut Case, t: u32, branch_bits: u64) -> Result<(), Error> {
        // SAFETY: pointers from live references; the case is exclusively borrowed.
        Error::check(unsafe { sys::knhk_fire_bits64(&self.raw, &mut case.raw, t, branch_bits) })
    }

    /// Cancels task `t` (WCP-19): withdraws it if busy, removes its enabling tokens if enabled.
    #[inline]
    pub fn cancel_task(&self, case: &mut Case, t: u32) -> Result<(), Error> {
        // SAFETY: pointers from live references; the case is exclusively borrowed.
        Error::check(unsafe { sys::knhk_cancel_task(&self.raw, &mut case.raw, t) })
    }

    /// Cancels the case (WCP-20).
    #[inline]
    pub fn cancel_case(&self, case: &mut Case) -> Result<(), Error> {
        // SAFETY: pointers from live references; the case is exclusively borrowed.
        Error::check(unsafe { sys::knhk_cancel_case(&self.raw, &mut case.raw) })
    }

    /// Running, complete, deadlocked or cancelled.
    pub fn state(&self, case: &Case) -> CaseState {
        // SAFETY: both pointers come from live references; libknhk only reads.
        match unsafe { sys::knhk_case_state(&self.raw, &case.raw) } {
            sys::KNHK_STATE_COMPLETE => CaseState::Complete,
            sys::KNHK_STATE_DEADLOCKED => CaseState::Deadlocked,
            sys::KNHK_STATE_CANCELLED => CaseState::Cancelled,
            _ => CaseState::Running,
        }
    }

    /// Executes a beat of up to 8 events on `cases` in lane order; `statuses[i]` receives
    /// lane i's raw status (0 = OK, see [`Error::from_raw`]). Errors only for more than 8
    /// events or an unsealed net (then nothing ran).
    #[inline]
    pub fn beat(
        &self,
        cases: &mut [Case],
        events: &[Event],
        statuses: &mut [u8; crate::BEAT_LANES],
    ) -> Result<(), Error> {
        let ncases = u32::try_from(cases.len()).map_err(|_| Error::BadArgument)?;
        if events.len() > crate::BEAT_LANES {
            return Err(Error::BadArgument);
        }
        // SAFETY: Case and Event are repr(transparent) over the C structs, so the slices are
        // valid arrays of them; libknhk bounds-checks every case_index against ncases and
        // writes events.len() <= 8 statuses into an 8-byte array.
        Error::check(unsafe {
            sys::knhk_beat(
                &self.raw,
                cases.as_mut_ptr().cast(),
                ncases,
                events.as_ptr().cast(),
                events.len() as u32,
                statuses.as_mut_ptr(),
            )
        })
    }
}
