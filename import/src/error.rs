//! Errors of the import layer: every variant names the element (by its id in the source file)
//! and the reason, so that a person can find and fix the defect.

use thiserror::Error;

/// Why a file could not be imported. Structural and soundness findings of a well-formed model are
/// not errors: they are reported by [`crate::verify`] as findings with a verdict.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ImportError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
    /// The file is larger than the import limit.
    #[error("input is {size} bytes; the import limit is {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    /// The bytes are not well-formed XML (or JSON).
    #[error("malformed {format}: {reason}")]
    Syntax {
        format: &'static str,
        reason: String,
    },
    /// The format could not be recognised.
    #[error("unrecognised input: {0}")]
    UnknownFormat(String),
    /// A required element or attribute is missing or has a bad value.
    #[error("element '{element}': {reason}")]
    Malformed { element: String, reason: String },
    /// A reference to an element id that does not exist.
    #[error("element '{from}' refers to unknown element '{id}'")]
    UnknownElement { from: String, id: String },
    /// Two elements share an id.
    #[error("duplicate element id '{0}'")]
    DuplicateId(String),
    /// A flow predicate outside the compiled XPath subset (see `docs/import.md`).
    #[error("predicate on flow {flow}: cannot compile '{expr}': {reason}")]
    Predicate {
        flow: String,
        expr: String,
        reason: String,
    },
    /// The model uses something the kernel cannot run.
    #[error("{element}: {reason}")]
    Unsupported { element: String, reason: String },
    /// A PNML initial marking puts more than one token on a place.
    #[error(
        "place '{place}' holds {tokens} tokens in the initial marking: the kernel runs 1-safe \
         nets (at most one token per condition)"
    )]
    NotSafe { place: String, tokens: u64 },
    /// The caller cancelled the import ([`crate::Options::cancel`]).
    #[error("import cancelled: its caller went away")]
    Cancelled,
}

impl ImportError {
    pub(crate) fn malformed(element: impl Into<String>, reason: impl Into<String>) -> Self {
        ImportError::Malformed {
            element: element.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn unsupported(element: impl Into<String>, reason: impl Into<String>) -> Self {
        ImportError::Unsupported {
            element: element.into(),
            reason: reason.into(),
        }
    }
}
