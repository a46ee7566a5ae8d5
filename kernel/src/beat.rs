//! Beat events: one (case, operation) pair per lane, up to 8 lanes per `Net::beat` call.
use knhk_sys as sys;

/// Operations a beat lane can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// Start a task.
    Start = sys::KNHK_OP_START as u8,
    /// Complete a busy task.
    Complete = sys::KNHK_OP_COMPLETE as u8,
    /// Start and complete.
    Fire = sys::KNHK_OP_FIRE as u8,
    /// Cancel a task.
    CancelTask = sys::KNHK_OP_CANCEL_TASK as u8,
    /// Cancel the case.
    CancelCase = sys::KNHK_OP_CANCEL_CASE as u8,
}

/// One lane of a beat (16 bytes, the C `knhk_event_t`).
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
pub struct Event {
    raw: sys::knhk_event_t,
}

impl Event {
    /// `op` on task `task` of `cases[case_index]`; guards evaluated on the case registers.
    #[inline]
    pub fn new(case_index: u32, op: Op, task: u8) -> Event {
        Event {
            raw: sys::knhk_event_t {
                case_index,
                op: op as u8,
                task,
                flags: 0,
                branch_bits: 0,
                branch_bits_hi: 0,
            },
        }
    }

    /// As `new`, with caller-computed predicate bits for complete/fire.
    #[inline]
    pub fn with_bits(case_index: u32, op: Op, task: u8, branch_bits: u32) -> Event {
        let mut e = Event::new(case_index, op, task);
        e.raw.flags = sys::KNHK_EVENT_USE_BITS as u16;
        e.raw.branch_bits = branch_bits;
        e
    }

    /// As `with_bits`, with a predicate bit for each of up to [`crate::MAX_BRANCHES`] flows
    /// (wide tasks: flows 32..63 travel in the event's `branch_bits_hi`).
    #[inline]
    pub fn with_bits64(case_index: u32, op: Op, task: u8, branch_bits: u64) -> Event {
        let mut e = Event::new(case_index, op, task);
        e.raw.flags = sys::KNHK_EVENT_USE_BITS as u16;
        e.raw.branch_bits = branch_bits as u32;
        e.raw.branch_bits_hi = (branch_bits >> 32) as u32;
        e
    }

    /// The same event on `cases[case_index]`.
    #[inline]
    pub fn with_case_index(mut self, case_index: u32) -> Event {
        self.raw.case_index = case_index;
        self
    }

    /// Index into the beat's case slice.
    pub fn case_index(&self) -> u32 {
        self.raw.case_index
    }
    /// Task index.
    pub fn task(&self) -> u8 {
        self.raw.task
    }
    /// The raw C struct.
    pub fn as_raw(&self) -> &sys::knhk_event_t {
        &self.raw
    }
}

impl core::fmt::Debug for Event {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Event")
            .field("case_index", &self.raw.case_index)
            .field("op", &self.raw.op)
            .field("task", &self.raw.task)
            .field("flags", &self.raw.flags)
            .field("branch_bits", &self.raw.branch_bits)
            .finish()
    }
}
