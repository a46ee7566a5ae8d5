//! Errors at the service edge: one enum whose variants map one-to-one to gRPC codes, each
//! message naming the offending workflow, case, task or variable.

use thiserror::Error;
use tonic::{Code, Status};

/// Why a request was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ShellError {
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
    /// The server is draining.
    #[error("server is shutting down: new work is refused")]
    Draining,
    #[error("internal error: {0}")]
    Internal(String),
    /// The event log cannot persist work (disk full, I/O error): nothing more is accepted.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl ShellError {
    /// The gRPC code of the error.
    pub fn code(&self) -> Code {
        match self {
            ShellError::BadModel(_) | ShellError::BadData { .. } => Code::InvalidArgument,
            ShellError::NoWorkflow(_) | ShellError::NoCase(_) | ShellError::NoTask { .. } => {
                Code::NotFound
            }
            ShellError::WorkflowExists(_) => Code::AlreadyExists,
            ShellError::Precondition(_) | ShellError::CaseDone { .. } => Code::FailedPrecondition,
            ShellError::Exhausted(_) => Code::ResourceExhausted,
            ShellError::Draining => Code::Unavailable,
            ShellError::Internal(_) => Code::Internal,
            ShellError::Unavailable(_) => Code::Unavailable,
        }
    }
}

impl From<ShellError> for Status {
    fn from(e: ShellError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}
