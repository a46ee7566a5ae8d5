//! The engine's refusals: one variant per kind, each message naming the offending workflow,
//! case, task or variable. The binary maps them to its protocol's codes (gRPC statuses in
//! `shell/src/grpc/status.rs`); nothing here knows a protocol.

use thiserror::Error;

/// Why a request was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// The model did not import, verify or compile.
    #[error("model refused: {0}")]
    BadModel(String),
    /// Malformed request data (unknown variable, wrong value type, unknown format...).
    #[error("{reason}")]
    BadData { reason: String },
    #[error("unknown workflow '{0}'")]
    NoWorkflow(String),
    #[error("unknown case {0}")]
    NoCase(u64),
    #[error("workflow '{workflow}' has no task '{task}'")]
    NoTask { task: String, workflow: String },
    #[error("workflow id '{0}' is already registered")]
    WorkflowExists(String),
    /// The task cannot do that now (not enabled, not started, would violate safety).
    #[error("{0}")]
    Precondition(String),
    /// The case has completed or was cancelled.
    #[error("case {case} is {state}: no further operation")]
    CaseDone { case: u64, state: &'static str },
    /// Back-pressure: a ring is full or the case capacity is reached.
    #[error("{0}")]
    Exhausted(String),
    /// The engine is draining.
    #[error("server is shutting down: new work is refused")]
    Draining,
    #[error("internal error: {0}")]
    Internal(String),
    /// The event log cannot persist work (disk full, I/O error): nothing more is accepted.
    #[error("unavailable: {0}")]
    Unavailable(String),
}
