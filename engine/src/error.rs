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
    #[error("unknown workflow {}", echo(.0))]
    NoWorkflow(String),
    #[error("unknown case {0}")]
    NoCase(u64),
    #[error("workflow {} has no task {}", echo(.workflow), echo(.task))]
    NoTask { task: String, workflow: String },
    #[error("workflow {} has no version {version} (it has versions 1 to {newest})", echo(.workflow))]
    NoVersion {
        workflow: String,
        version: u32,
        newest: u32,
    },
    #[error("workflow {} version {version} was deleted", echo(.workflow))]
    VersionDeleted { workflow: String, version: u32 },
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

/// Most characters of a client-given name repeated in a message: the rest is cut, so an
/// error for a megabyte-long id stays a short message.
pub const ECHO_CHARS: usize = 64;

/// A client-given name as messages repeat it: quoted, control characters escaped (a newline
/// cannot forge a log line), at most [`ECHO_CHARS`] characters.
pub fn echo(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(ECHO_CHARS) + 8);
    out.push('\'');
    for (i, c) in s.chars().enumerate() {
        if i == ECHO_CHARS {
            out.push('\u{2026}');
            out.push_str(&format!(" ({} bytes)", s.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Longest workflow id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// Checks a workflow id: 1 to [`MAX_ID_BYTES`] bytes, no control characters (ids reach log
/// lines, metrics labels and file names of exports).
pub fn check_id(id: &str) -> Result<(), EngineError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(EngineError::BadData {
            reason: format!(
                "workflow id {} ({} bytes) must be 1 to {MAX_ID_BYTES} bytes without control characters",
                echo(id),
                id.len()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_escapes_and_bounds() {
        assert_eq!(echo("nope"), "'nope'");
        assert_eq!(echo("a\nb"), "'a\\nb'");
        let long = "x".repeat(3 << 20);
        let e = echo(&long);
        assert!(e.len() < 100, "{}", e.len());
        assert!(e.contains("3145728 bytes"));
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("WP1SequencePattern").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("a\nb").is_err());
        assert!(check_id("a\0b").is_err());
        assert!(check_id(&"x".repeat(MAX_ID_BYTES + 1)).is_err());
        assert!(check_id(&"x".repeat(MAX_ID_BYTES)).is_ok());
    }
}
