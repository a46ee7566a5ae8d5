//! The engine's request and result vocabulary: values by variable name, bulk events and their
//! results, event kinds. The binary converts its wire types to and from these.

use std::collections::HashMap;

use crate::error::EngineError;
use crate::workers::{OpKind, State};

/// A data value as a client gives it; converted to a register by the workflow's variable
/// types (`Workflow::registers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Str(String),
    /// A value with no content (a protocol may allow it); refused, naming the variable.
    Missing,
}

/// Case data by variable name.
pub type Data = HashMap<String, Value>;

/// The kind of a lifecycle event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A task transition (its lifecycle says which).
    Task,
    CaseCreated,
    CaseCompleted,
    CaseCancelled,
    CaseDeadlocked,
}

/// A task named by a request: by name, or by kernel index (no name lookup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskRef {
    Name(String),
    Index(u32),
}

/// One event of a bulk batch.
#[derive(Debug, Clone)]
pub struct BatchEvent {
    /// The operation, or the undecodable value the client sent (refused, keeping its place).
    pub op: Result<OpKind, i32>,
    /// The case (all operations but a creation).
    pub case_id: u64,
    /// The task (start, complete, fire, cancel task).
    pub task: Option<TaskRef>,
    /// A creation's workflow.
    pub workflow_id: String,
    /// A creation's initial data; a completion's output data.
    pub data: Data,
    /// Caller-computed predicate bits of a completion.
    pub branch_bits: Option<u32>,
    /// A task event applies only at this case sequence number (`OP_EXPECT_SEQ`).
    pub expected_seq: Option<u64>,
}

impl BatchEvent {
    /// The event's expected sequence as an op carries it (mod 2^32 is all a case's ops
    /// compare): refused on a creation or a case cancellation, and past 2^32-1.
    pub fn expect_seq(&self) -> Result<Option<u32>, EngineError> {
        let Some(seq) = self.expected_seq else {
            return Ok(None);
        };
        if matches!(self.op, Ok(OpKind::Create | OpKind::CancelCase)) {
            return Err(EngineError::BadData {
                reason: "expected_seq applies to task events (START, COMPLETE, FIRE, \
                         CANCEL_TASK), not to CREATE_CASE or CANCEL_CASE"
                    .into(),
            });
        }
        u32::try_from(seq)
            .map(Some)
            .map_err(|_| EngineError::BadData {
                reason: format!(
                    "expected_seq {seq} is beyond 2^32-1, the largest sequence an operation can \
                 expect"
                ),
            })
    }
}

/// The result of one bulk event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventResult {
    /// The case (for a creation: the new case's id, when it succeeded).
    pub case_id: u64,
    /// Why the event was refused, if it was.
    pub error: Option<EngineError>,
    /// The case's state and operation count after the event, when the case is known.
    pub state: Option<(State, u64)>,
}

impl EventResult {
    pub(crate) fn refused(e: EngineError, case_id: u64) -> EventResult {
        EventResult {
            case_id,
            error: Some(e),
            state: None,
        }
    }
}

/// Lifecycle transition of a task event (the values of `knhk.v1.Lifecycle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Lifecycle {
    Start = 1,
    Complete = 2,
    Withdraw = 3,
    AteAbort = 4,
    PiAbort = 5,
    /// The task's timer expired while it was enabled: it completed without being started
    /// (YAWL's skip; XES `autoskip`).
    TimerSkip = 6,
    /// The task's timer expired while it was started: the engine completed it (XES
    /// `complete`, with `knhk:timer`).
    TimerComplete = 7,
}

impl Lifecycle {
    /// The XES standard-lifecycle name.
    pub fn xes(self) -> &'static str {
        match self {
            Lifecycle::Start => "start",
            Lifecycle::Complete => "complete",
            Lifecycle::Withdraw => "withdraw",
            Lifecycle::AteAbort => "ate_abort",
            Lifecycle::PiAbort => "pi_abort",
            Lifecycle::TimerSkip => "autoskip",
            Lifecycle::TimerComplete => "complete",
        }
    }

    /// The event is a timer's expiry.
    pub fn by_timer(self) -> bool {
        matches!(self, Lifecycle::TimerSkip | Lifecycle::TimerComplete)
    }
}

/// One recorded task event of a case (history, for export).
#[derive(Debug, Clone, Copy)]
pub struct Hist {
    pub time_ns: u64,
    pub task: u8,
    pub lifecycle: Lifecycle,
    /// The instance of a multiple-instance task the event is about ([`NO_INSTANCE`]: the
    /// task itself).
    pub instance: u32,
}

/// [`Hist::instance`] of an event about a task, not one of its instances.
pub const NO_INSTANCE: u32 = u32::MAX;
