//! knhk-import: workflow import for the knhk kernel.
//!
//! Reads YAWL XML (schemas 2.x, 3.0, 4.0 and Beta), PNML place/transition nets (ptnet,
//! pnmlcoremodel, WoPeD, pm4py) and the project's JSON form, compiles them into the
//! intermediate [`Model`], verifies them at ingress, and lowers them into a sealed
//! [`knhk_kernel::Net`]. Cold-path code: it allocates freely and never panics on input.
//!
//! Contract: every input, however malformed, gives either a [`Model`] or an [`ImportError`]
//! that names the element and the reason; nothing panics. Verification ([`verify`]) reports
//! structural defects, kernel seal refusals and the soundness findings of an exploration of
//! the reachable states (driven by the kernel itself: the firing rules exist once, in C).
//!
//! ```no_run
//! use knhk_import::{import_file, verify, Options};
//! let model = import_file("corpus/yawl/WPC1Sequence.yawl".as_ref(), &Options::default())?;
//! let report = verify(&model, &Options::default());
//! assert!(report.accepted());
//! # Ok::<(), knhk_import::ImportError>(())
//! ```
//!
//! The library returns reports ([`Report`], [`replay::ReplayReport`], compiled nets); it prints
//! nothing and chooses no exit code. The `knhk check`, `compile` and `replay` commands that
//! print them live in the binary (crate `knhk-shell`, `shell/src/cli.rs`).
//!
//! Mapping decisions (composite tasks flattened, OR-joins, multiple instances, external
//! predicates) are documented in `docs/import.md`.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod check;
pub mod error;
pub mod explore;
pub mod ir;
mod json;
pub mod lower;
mod pnml;
mod raw;
pub mod replay;
pub mod xes;
mod xml;
pub mod xpath;
mod yawl;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use check::{verify, Finding, FindingKind, Report, Severity};
pub use error::ImportError;
pub use ir::Model;
pub use lower::{lower, Compiled};

// The kernel's limits, from knhk-kernel (the one source: libknhk's header).
pub use knhk_kernel::{MAX_BRANCHES, MAX_CONDITIONS, MAX_FLOWS, MAX_TASKS, REGISTERS};
/// Largest input file accepted (bytes); larger files are refused before parsing.
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// Import options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Accept predicates outside the compiled XPath subset: the client supplies the branch
    /// bits when it completes such a task (`Net::complete_with`). Off: such a predicate is an
    /// import error that quotes it.
    pub external_predicates: bool,
    /// Most states the soundness exploration visits; above it the exploration stops and says
    /// the soundness findings are incomplete.
    pub state_cap: usize,
    /// Set by the caller when the result is no longer wanted (a server's client went away):
    /// the import stops at its next check (between stages, and every 1,024 explored states)
    /// with [`ImportError::Cancelled`] or a refusal.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Refuse a model whose soundness exploration hit `state_cap` (not decided) instead of
    /// accepting it with a warning.
    pub refuse_undecided: bool,
    /// YAWL tasks without a decomposition (empty routing tasks) are silent: no work, no log
    /// event, and the engine runs them itself. Off: they are ordinary tasks a client drives
    /// (the behaviour before silent tasks ran themselves; registrations logged then).
    pub empty_tasks_silent: bool,
    /// How composite tasks run: flattened into their parent, or as sub-net (child) cases.
    pub subnet_cases: SubnetCases,
}

/// How composite tasks run ([`Options::subnet_cases`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubnetCases {
    /// Flattened where the flattened net fits the kernel (64 conditions, 64 tasks) and the
    /// decompositions are neither recursive nor nested past 16 levels; otherwise every
    /// composite task runs as a sub-net case.
    #[default]
    Auto,
    /// Every composite task runs as a sub-net case.
    Always,
    /// Always flattened (a model that does not fit is refused).
    Never,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            external_predicates: false,
            state_cap: 200_000,
            cancel: None,
            refuse_undecided: false,
            empty_tasks_silent: true,
            subnet_cases: SubnetCases::Auto,
        }
    }
}

impl Options {
    /// Whether the caller cancelled the import.
    pub fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    fn check_cancelled(&self) -> Result<(), ImportError> {
        if self.cancelled() {
            Err(ImportError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// The input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yawl,
    Pnml,
    Json,
}

/// Guesses the format from the content (the file name is only a hint for error messages).
pub fn detect(text: &str) -> Result<Format, ImportError> {
    let t = text.trim_start_matches('\u{feff}').trim_start();
    if t.starts_with('{') {
        return Ok(Format::Json);
    }
    if !t.starts_with('<') {
        return Err(ImportError::UnknownFormat("neither XML nor JSON".into()));
    }
    // The first element name after the prolog, comments and processing instructions.
    let mut rest = t;
    loop {
        let Some(i) = rest.find('<') else {
            return Err(ImportError::Syntax {
                format: "XML",
                reason: "no root element".into(),
            });
        };
        rest = &rest[i..];
        if rest.starts_with("<?") || rest.starts_with("<!") {
            let end = if rest.starts_with("<!--") {
                rest.find("-->")
            } else {
                rest.find('>')
            };
            match end {
                Some(e) => rest = &rest[e + 1..],
                None => {
                    return Err(ImportError::Syntax {
                        format: "XML",
                        reason: "truncated prolog".into(),
                    })
                }
            }
            continue;
        }
        let name: String = rest[1..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '>' && *c != '/')
            .collect();
        let local = name.rsplit(':').next().unwrap_or(&name);
        return match local {
            "specificationSet" | "specification" => Ok(Format::Yawl),
            "pnml" => Ok(Format::Pnml),
            other => Err(ImportError::UnknownFormat(format!(
                "root element <{other}> is neither YAWL (<specificationSet>) nor PNML (<pnml>)"
            ))),
        };
    }
}

/// Imports a model from bytes.
pub fn import_bytes(bytes: &[u8], opts: &Options) -> Result<Model, ImportError> {
    let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if len > MAX_INPUT_BYTES {
        return Err(ImportError::TooLarge {
            size: len,
            limit: MAX_INPUT_BYTES,
        });
    }
    let text = xml::decode(bytes);
    opts.check_cancelled()?;
    import_str(&text, opts)
}

/// Imports a model from text.
pub fn import_str(text: &str, opts: &Options) -> Result<Model, ImportError> {
    let spec = match detect(text)? {
        Format::Yawl => yawl::read(text)?,
        Format::Pnml => pnml::read(text)?,
        Format::Json => json::read(text)?,
    };
    opts.check_cancelled()?;
    raw::build(spec, opts)
}

/// Reads and imports a file.
pub fn import_file(path: &Path, opts: &Options) -> Result<Model, ImportError> {
    let io = |e: std::io::Error| ImportError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_INPUT_BYTES {
        return Err(ImportError::TooLarge {
            size: meta.len(),
            limit: MAX_INPUT_BYTES,
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    import_bytes(&bytes, opts)
}
