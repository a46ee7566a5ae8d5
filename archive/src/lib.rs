//! knhk-archive: finished cases in SQLite, the embedded implementation of knhk-engine's
//! [`CaseArchive`] (docs/durability.md, "Archive"), and in PostgreSQL ([`PgArchive`], module
//! [`postgres`]).
//!
//! One file in the data directory (`archive.sqlite`), WAL journal, `synchronous=FULL`: a
//! store returns once its transaction is durable. One row per case (its id the primary key,
//! so storing a case again replaces it: the engine may store a case twice across a crash,
//! never keep two copies); its final state, data and history in the archive's own encoding
//! (below), independent of the engine's in-memory layout.
//!
//! ```text
//! regs     := 8 × i64 LE
//! history  := (time unix ns u64 LE | task u8 | lifecycle u8 [| instance u32 LE: lifecycle
//!             bit 0x80, an instance of a multiple-instance task]) × n
//!             lifecycle: 1 start, 2 complete, 3 withdraw, 4 ate_abort, 5 pi_abort,
//!             6 skipped by its timer (autoskip), 7 completed by its timer
//! state    := 0 running, 1 complete, 2 deadlocked, 3 cancelled
//! ```

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use knhk_engine::archive::{ArchiveQuery, CaseArchive, FinishedCase, Retention};
use knhk_engine::command::NO_INSTANCE;
use knhk_engine::engine::{Hist, Lifecycle};
use knhk_engine::workers::{Outcome, State, Status, REGISTERS};
use rusqlite::{params, Connection, OptionalExtension};

pub mod postgres;
pub use postgres::PgArchive;

/// The file the archive keeps in the data directory.
pub const FILE_NAME: &str = "archive.sqlite";

/// The SQLite archive.
#[derive(Debug)]
pub struct SqliteArchive {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cases (
    case_id         INTEGER PRIMARY KEY,
    namespace       TEXT    NOT NULL,
    workflow        INTEGER NOT NULL,
    workflow_id     TEXT    NOT NULL,
    state           INTEGER NOT NULL,
    created_ns      INTEGER NOT NULL,
    finished_ns     INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    flags           INTEGER NOT NULL,
    marking         INTEGER NOT NULL,
    busy            INTEGER NOT NULL,
    enabled         INTEGER NOT NULL,
    regs            BLOB    NOT NULL,
    history         BLOB    NOT NULL,
    history_dropped INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS cases_by_created ON cases (created_ns, case_id);
-- No index on finished_ns: retention by age scans the table once a minute, and each index
-- costs every store (docs/performance.md, 'Archive').

";

fn err(what: &str, e: rusqlite::Error) -> String {
    format!("{what}: {e}")
}

impl SqliteArchive {
    /// Opens (creating when missing) the archive at `path`.
    pub fn open(path: &Path) -> Result<SqliteArchive, String> {
        let conn = Connection::open(path)
            .map_err(|e| format!("cannot open the archive {}: {e}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| err("archive: journal_mode=WAL", e))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| err("archive: synchronous=FULL", e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| err("archive: busy timeout", e))?;
        conn.execute_batch(SCHEMA).map_err(|e| {
            format!(
                "cannot create the archive's tables in {}: {e}",
                path.display()
            )
        })?;
        Ok(SqliteArchive {
            conn: Mutex::new(conn),
        })
    }

    /// Opens the archive of a data directory (`<dir>/archive.sqlite`).
    pub fn open_in(dir: &Path) -> Result<SqliteArchive, String> {
        if dir.exists() && !dir.is_dir() {
            return Err(format!(
                "data directory {} exists and is not a directory",
                dir.display()
            ));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
        SqliteArchive::open(&dir.join(FILE_NAME))
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn state_code(s: State) -> i64 {
    match s {
        State::Running => 0,
        State::Complete => 1,
        State::Deadlocked => 2,
        State::Cancelled => 3,
    }
}

pub(crate) fn state_of(c: i64) -> State {
    match c {
        1 => State::Complete,
        2 => State::Deadlocked,
        3 => State::Cancelled,
        _ => State::Running,
    }
}

pub(crate) fn lifecycle_code(l: Lifecycle) -> u8 {
    match l {
        Lifecycle::Start => 1,
        Lifecycle::Complete => 2,
        Lifecycle::Withdraw => 3,
        Lifecycle::AteAbort => 4,
        Lifecycle::PiAbort => 5,
        Lifecycle::TimerSkip => 6,
        Lifecycle::TimerComplete => 7,
    }
}

pub(crate) fn lifecycle_of(c: u8) -> Option<Lifecycle> {
    Some(match c {
        1 => Lifecycle::Start,
        2 => Lifecycle::Complete,
        3 => Lifecycle::Withdraw,
        4 => Lifecycle::AteAbort,
        5 => Lifecycle::PiAbort,
        6 => Lifecycle::TimerSkip,
        7 => Lifecycle::TimerComplete,
        _ => return None,
    })
}

fn encode_regs(regs: &[i64; REGISTERS]) -> Vec<u8> {
    regs.iter().flat_map(|r| r.to_le_bytes()).collect()
}

fn decode_regs(b: &[u8]) -> [i64; REGISTERS] {
    let mut regs = [0i64; REGISTERS];
    for (r, chunk) in regs.iter_mut().zip(b.chunks_exact(8)) {
        let mut a = [0u8; 8];
        a.copy_from_slice(chunk);
        *r = i64::from_le_bytes(a);
    }
    regs
}

/// Lifecycle code bit: an instance (u32 LE) of a multiple-instance task follows.
const WITH_INSTANCE: u8 = 0x80;

fn encode_history(h: &[Hist]) -> Vec<u8> {
    let mut b = Vec::with_capacity(h.len() * 10);
    for e in h {
        b.extend_from_slice(&e.time_ns.to_le_bytes());
        b.push(e.task);
        if e.instance == NO_INSTANCE {
            b.push(lifecycle_code(e.lifecycle));
        } else {
            b.push(lifecycle_code(e.lifecycle) | WITH_INSTANCE);
            b.extend_from_slice(&e.instance.to_le_bytes());
        }
    }
    b
}

fn decode_history(mut b: &[u8]) -> Result<Vec<Hist>, String> {
    let mut out = Vec::with_capacity(b.len() / 10);
    while !b.is_empty() {
        if b.len() < 10 {
            return Err(format!(
                "history ends inside an event ({} bytes left)",
                b.len()
            ));
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[..8]);
        let code = b[9];
        let (instance, len) = if code & WITH_INSTANCE != 0 {
            let i = b
                .get(10..14)
                .ok_or_else(|| "history ends inside an instance id".to_string())?;
            (u32::from_le_bytes([i[0], i[1], i[2], i[3]]), 14)
        } else {
            (NO_INSTANCE, 10)
        };
        out.push(Hist {
            time_ns: u64::from_le_bytes(t),
            task: b[8],
            lifecycle: lifecycle_of(code & !WITH_INSTANCE)
                .ok_or_else(|| format!("unknown lifecycle code {code}"))?,
            instance,
        });
        b = &b[len..];
    }
    Ok(out)
}

const COLUMNS: &str = "case_id, namespace, workflow, workflow_id, state, created_ns, finished_ns, \
                       seq, flags, marking, busy, enabled, regs, history_dropped";

/// A row (without its history) as a finished case.
fn row_case(row: &rusqlite::Row<'_>) -> rusqlite::Result<FinishedCase> {
    let state = state_of(row.get(4)?);
    let busy = row.get::<_, i64>(10)? as u64;
    let enabled = row.get::<_, i64>(11)? as u64;
    let regs: Vec<u8> = row.get(12)?;
    Ok(FinishedCase {
        case_id: row.get::<_, i64>(0)? as u64,
        namespace: row.get(1)?,
        workflow: u16::try_from(row.get::<_, i64>(2)?).unwrap_or(u16::MAX),
        workflow_id: row.get(3)?,
        created_ns: row.get::<_, i64>(5)? as u64,
        finished_ns: row.get::<_, i64>(6)? as u64,
        last: Outcome {
            status: Status::Ok,
            state,
            flags: u32::try_from(row.get::<_, i64>(8)?).unwrap_or(0),
            seq: row.get::<_, i64>(7)? as u64,
            marking: row.get::<_, i64>(9)? as u64,
            busy_before: busy,
            busy,
            enabled_before: enabled,
            enabled,
            // finished cases hold no live instances
            ..Outcome::default()
        },
        regs: decode_regs(&regs),
        history: Vec::new(),
        history_dropped: row.get::<_, i64>(13)? as u64,
    })
}

impl CaseArchive for SqliteArchive {
    fn store(&self, cases: &[FinishedCase]) -> Result<(), String> {
        if cases.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| err("archive: begin", e))?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO cases (case_id, namespace, workflow, workflow_id, \
                     state, created_ns, finished_ns, seq, flags, marking, busy, enabled, regs, \
                     history, history_dropped) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .map_err(|e| err("archive: prepare insert", e))?;
            for c in cases {
                st.execute(params![
                    c.case_id as i64,
                    c.namespace,
                    i64::from(c.workflow),
                    c.workflow_id,
                    state_code(c.last.state),
                    c.created_ns as i64,
                    c.finished_ns as i64,
                    c.last.seq as i64,
                    i64::from(c.last.flags),
                    c.last.marking as i64,
                    c.last.busy as i64,
                    c.last.enabled as i64,
                    encode_regs(&c.regs),
                    encode_history(&c.history),
                    c.history_dropped as i64,
                ])
                .map_err(|e| format!("archive: storing case {}: {e}", c.case_id))?;
            }
        }
        tx.commit().map_err(|e| err("archive: commit", e))
    }

    fn get(&self, case_id: u64) -> Result<Option<FinishedCase>, String> {
        let conn = self.conn();
        let found = conn
            .query_row(
                &format!("SELECT {COLUMNS}, history FROM cases WHERE case_id = ?1"),
                params![case_id as i64],
                |row| Ok((row_case(row)?, row.get::<_, Vec<u8>>(14)?)),
            )
            .optional()
            .map_err(|e| format!("archive: reading case {case_id}: {e}"))?;
        match found {
            None => Ok(None),
            Some((mut c, h)) => {
                c.history = decode_history(&h).map_err(|e| format!("case {case_id}: {e}"))?;
                Ok(Some(c))
            }
        }
    }

    fn list(&self, q: &ArchiveQuery) -> Result<Vec<FinishedCase>, String> {
        let conn = self.conn();
        let (after_created, after_id) = q.after.unwrap_or((0, 0));
        // The page's start only when there is one: inside an OR it would keep SQLite from
        // seeking the index to it, and every page would scan from the range's start.
        let sql = format!(
            "SELECT {COLUMNS}, {} FROM cases \
             WHERE (?1 IS NULL OR namespace = ?1) AND (?2 IS NULL OR workflow_id = ?2) \
               AND (?3 IS NULL OR state = ?3) AND created_ns >= ?4 AND created_ns < ?5 \
               AND case_id >= ?10 AND case_id < ?11 AND {} \
             ORDER BY created_ns, case_id LIMIT ?9",
            if q.with_history { "history" } else { "x''" },
            if q.after.is_some() {
                "(created_ns, case_id) > (?7, ?8)"
            } else {
                "?6 = 0"
            }
        );
        let mut st = conn
            .prepare_cached(&sql)
            .map_err(|e| err("archive: prepare list", e))?;
        let rows = st
            .query_map(
                params![
                    q.namespace,
                    q.workflow_id,
                    q.state.map(state_code),
                    q.created.start.min(i64::MAX as u64) as i64,
                    q.created.end.min(i64::MAX as u64) as i64,
                    i64::from(q.after.is_some()),
                    after_created as i64,
                    after_id as i64,
                    q.limit.max(1) as i64,
                    q.case_ids.start.min(i64::MAX as u64) as i64,
                    q.case_ids.end.min(i64::MAX as u64) as i64,
                ],
                |row| Ok((row_case(row)?, row.get::<_, Vec<u8>>(14)?)),
            )
            .map_err(|e| err("archive: list", e))?;
        let mut out = Vec::new();
        for r in rows {
            let (mut c, h) = r.map_err(|e| err("archive: list", e))?;
            if q.with_history {
                c.history = decode_history(&h).map_err(|e| format!("case {}: {e}", c.case_id))?;
            }
            out.push(c);
        }
        Ok(out)
    }

    fn prune(&self, r: &Retention, now_ns: u64) -> Result<u64, String> {
        let conn = self.conn();
        let mut deleted = 0u64;
        if let Some(age) = r.max_age_secs {
            let before = now_ns.saturating_sub(age.saturating_mul(1_000_000_000));
            deleted += conn
                .execute(
                    "DELETE FROM cases WHERE finished_ns < ?1",
                    params![before.min(i64::MAX as u64) as i64],
                )
                .map_err(|e| err("archive: retention by age", e))? as u64;
        }
        if let Some(keep) = r.max_cases {
            deleted += conn
                .execute(
                    "DELETE FROM cases WHERE case_id NOT IN \
                     (SELECT case_id FROM cases ORDER BY finished_ns DESC, case_id DESC LIMIT ?1)",
                    params![keep.min(i64::MAX as u64) as i64],
                )
                .map_err(|e| err("archive: retention by count", e))? as u64;
        }
        Ok(deleted)
    }

    fn delete_workflow(&self, workflow: u16) -> Result<u64, String> {
        self.conn()
            .execute(
                "DELETE FROM cases WHERE workflow = ?1",
                params![i64::from(workflow)],
            )
            .map(|n| n as u64)
            .map_err(|e| err("archive: deleting a workflow version's cases", e))
    }

    fn holds_workflow(&self, workflow: u16) -> Result<bool, String> {
        self.conn()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM cases WHERE workflow = ?1)",
                params![i64::from(workflow)],
                |r| r.get::<_, bool>(0),
            )
            .map_err(|e| err("archive: looking for a workflow version's cases", e))
    }

    fn count(&self) -> Result<u64, String> {
        self.conn()
            .query_row("SELECT count(*) FROM cases", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| err("archive: count", e))
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }
}
