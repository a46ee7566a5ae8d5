//! Engine refusals as gRPC statuses: the only place that knows gRPC codes.

use knhk_engine::EngineError;
use tonic::{Code, Status};

/// The gRPC code of an engine refusal.
pub fn code(e: &EngineError) -> Code {
    match e {
        EngineError::BadModel(_) | EngineError::BadData { .. } => Code::InvalidArgument,
        EngineError::NoWorkflow(_) | EngineError::NoCase(_) | EngineError::NoTask { .. } => {
            Code::NotFound
        }
        EngineError::NoVersion { .. } | EngineError::VersionDeleted { .. } => Code::NotFound,
        EngineError::Precondition(_) | EngineError::CaseDone { .. } => Code::FailedPrecondition,
        EngineError::Exhausted(_) => Code::ResourceExhausted,
        EngineError::Draining => Code::Unavailable,
        EngineError::Internal(_) => Code::Internal,
        EngineError::Unavailable(_) => Code::Unavailable,
    }
}

/// The status a client gets for an engine refusal: its code and message.
pub fn status(e: EngineError) -> Status {
    Status::new(code(&e), e.to_string())
}

/// `?` for engine results inside RPC handlers: `engine.call().or_status()?`.
pub trait OrStatus<T> {
    /// The value, or the refusal as a gRPC status.
    fn or_status(self) -> Result<T, Status>;
}

impl<T> OrStatus<T> for Result<T, EngineError> {
    fn or_status(self) -> Result<T, Status> {
        self.map_err(status)
    }
}
