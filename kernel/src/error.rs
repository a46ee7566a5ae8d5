//! Statuses of libknhk as a Rust error enum, one variant per non-OK `knhk_status`.
use core::fmt;
use knhk_sys as sys;

/// Why libknhk refused an operation. The discriminants are the C `knhk_status` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum Error {
    /// The task is not enabled (or is already busy).
    NotEnabled = sys::KNHK_NOT_ENABLED,
    /// Complete of a task that was never started.
    NotStarted = sys::KNHK_NOT_STARTED,
    /// A produced token would land on a marked condition (the net is not 1-safe here).
    SafetyViolation = sys::KNHK_SAFETY_VIOLATION,
    /// The case has completed or was cancelled.
    CaseComplete = sys::KNHK_CASE_COMPLETE,
    /// Task index out of range for this net.
    BadTask = sys::KNHK_BAD_TASK,
    /// Case operation on a net that is not sealed.
    NotSealed = sys::KNHK_NOT_SEALED,
    /// Bad argument: unknown code, beat longer than 8 lanes, case index out of range.
    BadArgument = sys::KNHK_BAD_ARGUMENT,
    /// Builder call on a sealed net.
    Sealed = sys::KNHK_SEALED,
    /// Condition index out of range.
    BadCondition = sys::KNHK_BAD_CONDITION,
    /// More than 64 conditions.
    CapacityConditions = sys::KNHK_CAPACITY_CONDITIONS,
    /// More than 64 tasks.
    CapacityTasks = sys::KNHK_CAPACITY_TASKS,
    /// More than 64 outgoing flows on one task, or more than 512 in the net.
    CapacityBranches = sys::KNHK_CAPACITY_BRANCHES,
    /// The same flow added twice.
    DuplicateFlow = sys::KNHK_DUPLICATE_FLOW,
    /// Guard with an unknown operator or a register out of range.
    BadGuard = sys::KNHK_BAD_GUARD,
    /// Seal: no input condition.
    NoInput = sys::KNHK_NO_INPUT,
    /// Seal: no output condition.
    NoOutput = sys::KNHK_NO_OUTPUT,
    /// Seal: a flow enters the input condition.
    InputHasInflow = sys::KNHK_INPUT_HAS_INFLOW,
    /// Seal: a flow leaves the output condition.
    OutputHasOutflow = sys::KNHK_OUTPUT_HAS_OUTFLOW,
    /// Seal: a task without an incoming flow.
    TaskNoInput = sys::KNHK_TASK_NO_INPUT,
    /// Seal: a task without an outgoing flow.
    TaskNoOutput = sys::KNHK_TASK_NO_OUTPUT,
    /// Seal: element unreachable from the input condition.
    Unreachable = sys::KNHK_UNREACHABLE,
    /// Seal: element from which the output condition cannot be reached.
    CannotComplete = sys::KNHK_CANNOT_COMPLETE,
    /// Seal: XOR/OR split without a default flow.
    NoDefault = sys::KNHK_NO_DEFAULT,
    /// Seal: XOR/OR split with more than one default flow.
    TwoDefaults = sys::KNHK_TWO_DEFAULTS,
    /// Seal: concurrent branches can put two tokens on one condition (WCP-8 multi-merge).
    MultiMerge = sys::KNHK_MULTI_MERGE,
    /// Seal: no longer returned since ABI 3 (a non-local OR-join is decided by the YAWL
    /// rule, or refused with [`Error::OrJoinCap`]); kept for its value.
    NonlocalOrJoin = sys::KNHK_NONLOCAL_OR_JOIN,
    /// Seal: input and output are the same condition.
    InputIsOutput = sys::KNHK_INPUT_IS_OUTPUT,
    /// Block beats: the lane had no event ([`crate::NO_TASK`] or its bit clear); nothing
    /// changed.
    LaneIdle = sys::KNHK_LANE_IDLE,
    /// Restore: the bytes are not [`crate::CASE_BYTES`] long; save: less room than that.
    BadLength = sys::KNHK_BAD_LENGTH,
    /// Restore: not a saved case (magic), another format version, or a reserved field set.
    BadFormat = sys::KNHK_BAD_FORMAT,
    /// Restore: the CRC-32C does not match the bytes.
    BadChecksum = sys::KNHK_BAD_CHECKSUM,
    /// Restore: the case was saved from a net with another fingerprint.
    WrongNet = sys::KNHK_WRONG_NET,
    /// A marked condition the net does not have.
    BadMarking = sys::KNHK_BAD_MARKING,
    /// A busy task the net does not have.
    BadBusy = sys::KNHK_BAD_BUSY,
    /// Unknown flag bits, or a combination no operation produces.
    BadFlags = sys::KNHK_BAD_FLAGS,
    /// OR-join or discriminator side words outside the net's joins' inputs (or absorbing a
    /// marked condition).
    BadSideWords = sys::KNHK_BAD_SIDE_WORDS,
    /// The flags disagree with the marking (running with the output marked or nothing left,
    /// complete without the output token alone, cancelled with work left).
    BadCaseState = sys::KNHK_BAD_CASE_STATE,
    /// Restore: the saved enabled set is not the one the net's rules give for the marking.
    BadEnabled = sys::KNHK_BAD_ENABLED,
    /// Seal: a non-local OR-join whose decision tables would exceed a seal-time cap
    /// ([`crate::ORJOIN_MAX_STATES`] states, [`crate::ORJOIN_MAX_INPUTS`] inputs,
    /// [`crate::ORJOIN_MAX_KEYS`] enabling keys or [`crate::ORJOIN_MAX_WORK`] generated states);
    /// [`SealError::or_join_cap`] says which.
    OrJoinCap = sys::KNHK_OR_JOIN_CAP,
    /// Complete or fire (or a block lane) names a multiple-instance task: its instances
    /// complete one by one ([`crate::Net::complete_instance`]).
    MiTask = sys::KNHK_MI_TASK,
    /// An instance operation names a task that is not multiple-instance.
    NotMiTask = sys::KNHK_NOT_MI_TASK,
    /// The instance was not created, or is already started (start), not started or already
    /// completed (complete).
    BadInstance = sys::KNHK_BAD_INSTANCE,
    /// Start: the instance count is outside the task's [minimum, maximum]; add: the task has
    /// its maximum, or creates instances statically.
    MiLimit = sys::KNHK_MI_LIMIT,
    /// Instance start [`crate::MI_WINDOW`] or more past the oldest unfinished instance.
    MiWindow = sys::KNHK_MI_WINDOW,
    /// Builder: bad multiple-instance attributes (minimum 0 or above the maximum, maximum past
    /// [`crate::MI_MAX_INSTANCES`], threshold 0 without keep, count register out of range).
    BadMi = sys::KNHK_BAD_MI,
    /// Builder: more than [`crate::MAX_MI_TASKS`] multiple-instance tasks.
    CapacityMi = sys::KNHK_CAPACITY_MI,
    /// Case check: the MI slots or `mi_live` disagree with the net or the busy set.
    BadMiSlot = sys::KNHK_BAD_MI_SLOT,
}

impl Error {
    /// Maps a C status to `Ok(())` or the error. Unknown values (a newer library) map to
    /// `BadArgument` rather than being trusted.
    #[inline(always)]
    pub fn check(status: sys::knhk_status) -> Result<(), Error> {
        if status == sys::KNHK_OK {
            Ok(())
        } else {
            Err(Self::from_raw(status))
        }
    }

    /// The error for a non-OK C status.
    #[cold]
    pub fn from_raw(status: u32) -> Error {
        use Error::*;
        const ALL: [Error; 47] = [
            NotEnabled,
            NotStarted,
            SafetyViolation,
            CaseComplete,
            BadTask,
            NotSealed,
            BadArgument,
            Sealed,
            BadCondition,
            CapacityConditions,
            CapacityTasks,
            CapacityBranches,
            DuplicateFlow,
            BadGuard,
            NoInput,
            NoOutput,
            InputHasInflow,
            OutputHasOutflow,
            TaskNoInput,
            TaskNoOutput,
            Unreachable,
            CannotComplete,
            NoDefault,
            TwoDefaults,
            MultiMerge,
            NonlocalOrJoin,
            InputIsOutput,
            LaneIdle,
            BadLength,
            BadFormat,
            BadChecksum,
            WrongNet,
            BadMarking,
            BadBusy,
            BadFlags,
            BadSideWords,
            BadCaseState,
            BadEnabled,
            OrJoinCap,
            MiTask,
            NotMiTask,
            BadInstance,
            MiLimit,
            MiWindow,
            BadMi,
            CapacityMi,
            BadMiSlot,
        ];
        const _: () = assert!(ALL.len() + 1 == sys::KNHK_STATUS_COUNT as usize);
        ALL.iter()
            .copied()
            .find(|e| *e as u32 == status)
            .unwrap_or(BadArgument)
    }

    /// The C name of the status, e.g. `"KNHK_NOT_ENABLED"`.
    pub fn name(self) -> &'static str {
        // SAFETY: knhk_status_name returns a pointer to a static NUL-terminated string for
        // every input (unknown values included) and never NULL.
        let ptr = unsafe { sys::knhk_status_name(self as u32) };
        // SAFETY: see above; the string lives for the whole program and is ASCII.
        let cstr = unsafe { core::ffi::CStr::from_ptr(ptr) };
        cstr.to_str().unwrap_or("KNHK_UNKNOWN_STATUS")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Error::NotEnabled => "task is not enabled",
            Error::NotStarted => "task was not started",
            Error::SafetyViolation => "a token would land on a marked condition",
            Error::CaseComplete => "case is already complete or cancelled",
            Error::BadTask => "no such task",
            Error::NotSealed => "net is not sealed",
            Error::BadArgument => "bad argument",
            Error::Sealed => "net is sealed",
            Error::BadCondition => "no such condition",
            Error::CapacityConditions => "more than 64 conditions",
            Error::CapacityTasks => "more than 64 tasks",
            Error::CapacityBranches => "more than 64 outgoing flows on one task, or 512 in the net",
            Error::DuplicateFlow => "duplicate flow",
            Error::BadGuard => "bad guard",
            Error::NoInput => "no input condition",
            Error::NoOutput => "no output condition",
            Error::InputHasInflow => "a flow enters the input condition",
            Error::OutputHasOutflow => "a flow leaves the output condition",
            Error::TaskNoInput => "task has no incoming flow",
            Error::TaskNoOutput => "task has no outgoing flow",
            Error::Unreachable => "not reachable from the input condition",
            Error::CannotComplete => "cannot reach the output condition",
            Error::NoDefault => "XOR/OR split has no default flow",
            Error::TwoDefaults => "XOR/OR split has more than one default flow",
            Error::MultiMerge => {
                "concurrent branches can put two tokens on one condition (multi-merge)"
            }
            Error::NonlocalOrJoin => "OR-join has no matching structured OR-split (non-local)",
            Error::InputIsOutput => "input and output are the same condition",
            Error::LaneIdle => "the lane had no event",
            Error::BadLength => "saved case has the wrong length",
            Error::BadFormat => "not a saved case of this format",
            Error::BadChecksum => "saved case fails its checksum",
            Error::WrongNet => "saved case belongs to another net",
            Error::BadMarking => "case marks a condition the net does not have",
            Error::BadBusy => "case has a busy task the net does not have",
            Error::BadFlags => "case flags are not a combination any operation produces",
            Error::BadSideWords => {
                "case side words lie outside the net's OR-join or discriminator inputs"
            }
            Error::BadCaseState => "case flags disagree with its marking",
            Error::BadEnabled => "saved enabled set differs from the one the net's rules give",
            Error::OrJoinCap => "non-local OR-join past a seal-time cap of its analysis",
            Error::MiTask => "task is multiple-instance: complete its instances",
            Error::NotMiTask => "task is not multiple-instance",
            Error::BadInstance => {
                "no such instance in this state (not created, already started, not started or already completed)"
            }
            Error::MiLimit => {
                "instance count outside the task's minimum and maximum (or the task creates statically)"
            }
            Error::MiWindow => {
                "instance starts 64 or more past the task's oldest unfinished instance"
            }
            Error::BadMi => "bad multiple-instance attributes",
            Error::CapacityMi => "more than 4 multiple-instance tasks in one net",
            Error::BadMiSlot => "case's multiple-instance state disagrees with the net",
        };
        write!(f, "{} ({})", what, self.name())
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// The element a seal defect concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Element {
    /// The defect concerns the net as a whole.
    None,
    /// A condition, by index.
    Condition(u32),
    /// A task, by index.
    Task(u32),
}

/// What `Net::seal` found: the defect, the element it concerns and, where there is one, a
/// second element (e.g. the split whose branches merge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SealError {
    /// The defect.
    pub error: Error,
    /// The element it concerns.
    pub element: Element,
    /// A second element index involved, if any (for MultiMerge: the split task); for
    /// OrJoinCap the cap's code instead (see [`SealError::or_join_cap`]).
    pub other: Option<u32>,
}

/// Which seal-time cap a non-local OR-join exceeded ([`Error::OrJoinCap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrJoinCap {
    /// More than [`crate::ORJOIN_MAX_STATES`] states in one exploration.
    States,
    /// More than [`crate::ORJOIN_MAX_INPUTS`] input conditions on the OR-join.
    Inputs,
    /// More than [`crate::ORJOIN_MAX_KEYS`] enabling keys in the net.
    Keys,
    /// More than [`crate::ORJOIN_MAX_WORK`] states generated by the explorations together
    /// (bounds seal's time).
    Work,
}

impl OrJoinCap {
    /// The cap's name and value, e.g. `"KNHK_ORJOIN_MAX_STATES = 2048"`.
    pub fn describe(self) -> &'static str {
        match self {
            OrJoinCap::States => "KNHK_ORJOIN_MAX_STATES = 2048 states",
            OrJoinCap::Inputs => "KNHK_ORJOIN_MAX_INPUTS = 6 inputs",
            OrJoinCap::Keys => "KNHK_ORJOIN_MAX_KEYS = 512 enabling keys",
            OrJoinCap::Work => "KNHK_ORJOIN_MAX_WORK = 16777216 generated states",
        }
    }
}

impl SealError {
    /// For [`Error::OrJoinCap`]: the cap exceeded (the report's `other` field); else `None`.
    pub fn or_join_cap(&self) -> Option<OrJoinCap> {
        if self.error != Error::OrJoinCap {
            return None;
        }
        match self.other? {
            sys::KNHK_ORJOIN_CAP_STATES => Some(OrJoinCap::States),
            sys::KNHK_ORJOIN_CAP_INPUTS => Some(OrJoinCap::Inputs),
            sys::KNHK_ORJOIN_CAP_KEYS => Some(OrJoinCap::Keys),
            sys::KNHK_ORJOIN_CAP_WORK => Some(OrJoinCap::Work),
            _ => None,
        }
    }
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.element {
            Element::None => write!(f, "{}", self.error)?,
            Element::Condition(c) => write!(f, "condition {c}: {}", self.error)?,
            Element::Task(t) => write!(f, "task {t}: {}", self.error)?,
        }
        if let Some(cap) = self.or_join_cap() {
            write!(f, " [cap {}]", cap.describe())?;
        }
        Ok(())
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SealError {}
