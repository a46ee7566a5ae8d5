//! The archive seam: where finished cases go before their slots are reused.
//!
//! Without an archive (the default), the oldest finished case is evicted when a new case needs
//! its slot, and its history is gone. With one ([`crate::EngineConfig::archive`]), a case
//! that completes or is cancelled is queued for the archive; an archiver thread of the engine
//! copies it from the book (final state, data, full history) and stores it in batches, and
//! only a case the archive has confirmed may be evicted. While the archive fails, finished
//! cases keep their slots (nothing is lost) and a new case that would need one is refused
//! with a status that says why. Reads of a case no longer in memory ([`crate::Engine::get_case`],
//! [`crate::Engine::history`], [`crate::Engine::list_archived`]) go to the archive.
//!
//! Implementations: `knhk-archive` (SQLite, embedded; PostgreSQL is not built yet).

use std::ops::Range;

use crate::command::Hist;
use crate::workers::{Outcome, State, REGISTERS};

/// A finished case as the archive keeps it.
#[derive(Debug, Clone, Default)]
pub struct FinishedCase {
    pub case_id: u64,
    /// The workflow's kernel index (stable across restarts: replayed in order) and id.
    pub workflow: u16,
    pub workflow_id: String,
    pub namespace: String,
    pub created_ns: u64,
    /// When the case completed or was cancelled (its last event).
    pub finished_ns: u64,
    /// The case's last state as the engine saw it (marking, enabled and busy sets, seq).
    pub last: Outcome,
    pub regs: [i64; REGISTERS],
    pub history: Vec<Hist>,
    /// Events dropped from the front of `history` (the history limit).
    pub history_dropped: u64,
}

/// Which archived cases a listing wants. Ordered by (creation time, case id); `after` is the
/// last (creation time, case id) of the previous page.
#[derive(Debug, Clone)]
pub struct ArchiveQuery {
    pub namespace: Option<String>,
    /// A workflow id: the cases of every version of it (with `namespace`, of that
    /// namespace's).
    pub workflow_id: Option<String>,
    pub state: Option<State>,
    /// Creation time, nanoseconds since the Unix epoch, end excluded.
    pub created: Range<u64>,
    pub after: Option<(u64, u64)>,
    /// Case ids, end excluded: an engine asks for its partition's only (the archive may be
    /// shared by the engines of every partition: cluster mode with PostgreSQL).
    pub case_ids: Range<u64>,
    pub limit: usize,
    /// Include each case's history (exports); listings leave it out.
    pub with_history: bool,
}

impl Default for ArchiveQuery {
    fn default() -> Self {
        ArchiveQuery {
            namespace: None,
            workflow_id: None,
            state: None,
            created: 0..u64::MAX,
            after: None,
            case_ids: 0..u64::MAX,
            limit: 1000,
            with_history: false,
        }
    }
}

/// What retention removes: cases finished before a time, and the oldest beyond a count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Delete cases that finished more than this many seconds ago.
    pub max_age_secs: Option<u64>,
    /// Keep at most this many archived cases (the most recently finished).
    pub max_cases: Option<u64>,
}

/// An archive of finished cases. Calls block (the engine makes them from its archiver thread
/// and from blocking readers); every error is a message naming what failed.
pub trait CaseArchive: Send + Sync + std::fmt::Debug + 'static {
    /// Stores `cases` (insert, or replace a case stored before: storing is idempotent by case
    /// id). Returns once they are durable.
    fn store(&self, cases: &[FinishedCase]) -> Result<(), String>;
    /// One case, with its history.
    fn get(&self, case_id: u64) -> Result<Option<FinishedCase>, String>;
    /// Cases matching `q`, in (creation time, case id) order.
    fn list(&self, q: &ArchiveQuery) -> Result<Vec<FinishedCase>, String>;
    /// Deletes what `r` says; returns how many cases were deleted.
    fn prune(&self, r: &Retention, now_ns: u64) -> Result<u64, String>;
    /// Deletes every case of the workflow at kernel index `workflow` (a version deleted with
    /// its history); returns how many. Idempotent.
    fn delete_workflow(&self, workflow: u16) -> Result<u64, String>;
    /// Whether any case of the workflow at kernel index `workflow` is archived (the event
    /// log keeps a deleted version's source while one is: its cases are read through it).
    fn holds_workflow(&self, workflow: u16) -> Result<bool, String>;
    /// Cases archived.
    fn count(&self) -> Result<u64, String>;
    /// A short name for logs and metrics ("sqlite").
    fn kind(&self) -> &'static str;
}
