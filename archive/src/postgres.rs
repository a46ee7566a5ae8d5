//! Finished cases in PostgreSQL, for users who outgrow one machine's disk or want SQL over
//! their history (`knhk serve --archive postgres --archive-url URL`; docs/operations.md,
//! "Archive").
//!
//! The client is tokio-postgres (the async client of rust-postgres) on a runtime of its own
//! (one thread, `knhk-archive-pg`): the [`CaseArchive`] calls block their caller, which may
//! be the engine's archiver thread or a task of the server's runtime, on a channel, never on
//! a runtime. Two connections: one for stores and retention (a store is one transaction), one
//! for reads, so that a large store does not hold up `GetCase`. A connection found closed (the
//! server restarted, the network dropped) is opened again on the next call; the call that
//! found it broken fails, and the engine's archiver retries it (nothing is evicted meanwhile).
//! A store returns once its transaction has committed, which with PostgreSQL's default
//! `synchronous_commit = on` means it is durable on the server.
//!
//! One table, `knhk_cases`, one row per case (its id the primary key: storing a case again
//! replaces it), the history as three parallel arrays, and a view `knhk_events` with one row
//! per event for SQL:
//!
//! ```sql
//! SELECT workflow_id, lifecycle, count(*) FROM knhk_events GROUP BY 1, 2;
//! ```
//!
//! No TLS: the archive connects without it (`sslmode=require` is refused by the client);
//! reach a remote server through a local tunnel or socket.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use knhk_engine::archive::{ArchiveQuery, CaseArchive, FinishedCase, Retention};
use knhk_engine::engine::Hist;
use knhk_engine::workers::{Outcome, Status, REGISTERS};
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::config::Host;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row};

use crate::{lifecycle_code, lifecycle_of, state_code, state_of};

/// Tables and the events view (idempotent: run on every new store connection).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS knhk_cases (
    case_id         BIGINT   PRIMARY KEY,
    namespace       TEXT     NOT NULL,
    workflow        INTEGER  NOT NULL,
    workflow_id     TEXT     NOT NULL,
    state           SMALLINT NOT NULL,
    created_ns      BIGINT   NOT NULL,
    finished_ns     BIGINT   NOT NULL,
    seq             BIGINT   NOT NULL,
    flags           BIGINT   NOT NULL,
    marking         BIGINT   NOT NULL,
    busy            BIGINT   NOT NULL,
    enabled         BIGINT   NOT NULL,
    regs            BIGINT[]   NOT NULL,
    event_ns        BIGINT[]   NOT NULL,
    event_task      SMALLINT[] NOT NULL,
    event_lifecycle SMALLINT[] NOT NULL,
    history_dropped BIGINT   NOT NULL
);
CREATE INDEX IF NOT EXISTS knhk_cases_by_created ON knhk_cases (created_ns, case_id);
CREATE OR REPLACE VIEW knhk_events AS
    SELECT c.case_id, c.namespace, c.workflow_id,
           c.history_dropped + e.n - 1 AS position, e.time_ns, e.task,
           CASE e.lifecycle WHEN 1 THEN 'start' WHEN 2 THEN 'complete' WHEN 3 THEN 'withdraw'
                            WHEN 4 THEN 'ate_abort' WHEN 5 THEN 'pi_abort'
                            WHEN 6 THEN 'autoskip' WHEN 7 THEN 'complete' END AS lifecycle,
           e.lifecycle IN (6, 7) AS by_timer
    FROM knhk_cases c,
         unnest(c.event_ns, c.event_task, c.event_lifecycle)
             WITH ORDINALITY AS e(time_ns, task, lifecycle, n);
";

const COLUMNS: &str = "case_id, namespace, workflow, workflow_id, state, created_ns, \
                       finished_ns, seq, flags, marking, busy, enabled, regs, event_ns, \
                       event_task, event_lifecycle, history_dropped";
const NCOLS: usize = 17;
/// Rows per INSERT statement (17 parameters each: under PostgreSQL's 65,535).
const CHUNK: usize = 1000;
/// How long one call may wait for the server before it fails (a store of a full batch of
/// long histories included).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Connection timeout when the URL does not set one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL archive.
pub struct PgArchive {
    /// Taken on drop (shut down without blocking: the archive may be dropped on a runtime).
    rt: Option<tokio::runtime::Runtime>,
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    /// "host:port/dbname", for messages (never the password).
    target: String,
    writer: Mutex<Option<Client>>,
    reader: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PgArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgArchive")
            .field("target", &self.inner.target)
            .finish()
    }
}

impl Drop for PgArchive {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// "host:port/dbname" of a configuration.
fn describe(c: &Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = c
                .get_ports()
                .get(i)
                .or(c.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost".to_string()
    } else {
        hosts.join(",")
    };
    format!(
        "{hosts}/{}",
        c.get_dbname().or(c.get_user()).unwrap_or("postgres")
    )
}

impl Inner {
    /// The connection in `slot`, opened (again) when missing or closed.
    async fn ready<'a>(
        &self,
        slot: &'a Mutex<Option<Client>>,
        schema: bool,
    ) -> Result<MutexGuard<'a, Option<Client>>, String> {
        let mut g = slot.lock().await;
        if g.as_ref().is_none_or(Client::is_closed) {
            *g = None;
            let (client, conn) = self.config.connect(NoTls).await.map_err(|e| {
                format!(
                    "archive: cannot connect to PostgreSQL at {}: {}",
                    self.target,
                    chain(&e)
                )
            })?;
            // Drives the connection; ends when it closes (the client then reports closed).
            tokio::spawn(async move {
                let _ = conn.await;
            });
            if schema {
                client.batch_execute(SCHEMA).await.map_err(|e| {
                    format!(
                        "archive: cannot create the archive's tables in PostgreSQL at {}: {}",
                        self.target,
                        chain(&e)
                    )
                })?;
            }
            *g = Some(client);
        }
        Ok(g)
    }
}

/// An error with its causes ("error connecting to server: Connection refused (os error 111)").
fn chain(e: &tokio_postgres::Error) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cause = c.source();
    }
    s
}

fn pg(what: &str, e: tokio_postgres::Error) -> String {
    format!("archive (PostgreSQL): {what}: {}", chain(&e))
}

/// A case as the columns of its row, in [`COLUMNS`] order.
struct PgRow {
    case_id: i64,
    namespace: String,
    workflow: i32,
    workflow_id: String,
    state: i16,
    created_ns: i64,
    finished_ns: i64,
    seq: i64,
    flags: i64,
    marking: i64,
    busy: i64,
    enabled: i64,
    regs: Vec<i64>,
    event_ns: Vec<i64>,
    event_task: Vec<i16>,
    event_lifecycle: Vec<i16>,
    history_dropped: i64,
}

impl PgRow {
    fn of(c: &FinishedCase) -> PgRow {
        PgRow {
            case_id: c.case_id as i64,
            namespace: c.namespace.clone(),
            workflow: i32::from(c.workflow),
            workflow_id: c.workflow_id.clone(),
            state: state_code(c.last.state) as i16,
            created_ns: c.created_ns as i64,
            finished_ns: c.finished_ns as i64,
            seq: c.last.seq as i64,
            flags: i64::from(c.last.flags),
            marking: c.last.marking as i64,
            busy: c.last.busy as i64,
            enabled: c.last.enabled as i64,
            regs: c.regs.to_vec(),
            event_ns: c.history.iter().map(|h| h.time_ns as i64).collect(),
            event_task: c.history.iter().map(|h| i16::from(h.task)).collect(),
            event_lifecycle: c
                .history
                .iter()
                .map(|h| i16::from(lifecycle_code(h.lifecycle)))
                .collect(),
            history_dropped: c.history_dropped as i64,
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); NCOLS] {
        [
            &self.case_id,
            &self.namespace,
            &self.workflow,
            &self.workflow_id,
            &self.state,
            &self.created_ns,
            &self.finished_ns,
            &self.seq,
            &self.flags,
            &self.marking,
            &self.busy,
            &self.enabled,
            &self.regs,
            &self.event_ns,
            &self.event_task,
            &self.event_lifecycle,
            &self.history_dropped,
        ]
    }
}

/// `INSERT … VALUES (…), … ON CONFLICT … DO UPDATE` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let mut sql = format!("INSERT INTO knhk_cases ({COLUMNS}) VALUES ");
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..NCOLS {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * NCOLS + c + 1));
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (case_id) DO UPDATE SET ");
    let sets: Vec<String> = COLUMNS
        .split(", ")
        .skip(1)
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    sql.push_str(&sets.join(", "));
    sql
}

/// A row (in [`COLUMNS`] order) as a finished case.
fn row_case(row: &Row) -> Result<FinishedCase, String> {
    let get = |e: tokio_postgres::Error| pg("reading a row", e);
    let case_id = row.try_get::<_, i64>(0).map_err(get)? as u64;
    let busy = row.try_get::<_, i64>(10).map_err(get)? as u64;
    let enabled = row.try_get::<_, i64>(11).map_err(get)? as u64;
    let regs_v: Vec<i64> = row.try_get(12).map_err(get)?;
    let mut regs = [0i64; REGISTERS];
    for (r, v) in regs.iter_mut().zip(regs_v) {
        *r = v;
    }
    let ns: Vec<i64> = row.try_get(13).map_err(get)?;
    let task: Vec<i16> = row.try_get(14).map_err(get)?;
    let life: Vec<i16> = row.try_get(15).map_err(get)?;
    if ns.len() != task.len() || ns.len() != life.len() {
        return Err(format!(
            "archive (PostgreSQL): case {case_id}: event arrays of different lengths ({}, {}, {})",
            ns.len(),
            task.len(),
            life.len()
        ));
    }
    let history = ns
        .iter()
        .zip(&task)
        .zip(&life)
        .map(|((&t, &k), &l)| {
            Ok(Hist {
                time_ns: t as u64,
                task: u8::try_from(k).map_err(|_| {
                    format!("archive (PostgreSQL): case {case_id}: task index {k} out of range")
                })?,
                lifecycle: u8::try_from(l).ok().and_then(lifecycle_of).ok_or_else(|| {
                    format!("archive (PostgreSQL): case {case_id}: unknown lifecycle code {l}")
                })?,
                // the PostgreSQL schema keeps no instance ids of multiple-instance tasks
                // (docs/durability.md): an archived MI event reads as the task's
                instance: knhk_engine::command::NO_INSTANCE,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(FinishedCase {
        case_id,
        namespace: row.try_get(1).map_err(get)?,
        workflow: u16::try_from(row.try_get::<_, i32>(2).map_err(get)?).unwrap_or(u16::MAX),
        workflow_id: row.try_get(3).map_err(get)?,
        created_ns: row.try_get::<_, i64>(5).map_err(get)? as u64,
        finished_ns: row.try_get::<_, i64>(6).map_err(get)? as u64,
        last: Outcome {
            status: Status::Ok,
            state: state_of(i64::from(row.try_get::<_, i16>(4).map_err(get)?)),
            flags: u32::try_from(row.try_get::<_, i64>(8).map_err(get)?).unwrap_or(0),
            seq: row.try_get::<_, i64>(7).map_err(get)? as u64,
            marking: row.try_get::<_, i64>(9).map_err(get)? as u64,
            busy_before: busy,
            busy,
            enabled_before: enabled,
            enabled,
            ..Outcome::default()
        },
        regs,
        history,
        history_dropped: row.try_get::<_, i64>(16).map_err(get)? as u64,
    })
}

fn clamp(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

impl PgArchive {
    /// Connects to the server at `url` (`postgresql://user:password@host:port/dbname` or
    /// `host=… user=… dbname=…`) and creates the archive's table and view when missing.
    /// Errors name the server (host, port, database), never the password.
    pub fn connect(url: &str) -> Result<PgArchive, String> {
        let config: Config = url.parse().map_err(|e| {
            format!("archive: the PostgreSQL URL is not valid ({e}); expected postgresql://user@host:port/dbname")
        })?;
        PgArchive::open(config)
    }

    /// [`PgArchive::connect`] with a parsed configuration.
    pub fn open(mut config: Config) -> Result<PgArchive, String> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("knhk-archive-pg")
            .enable_all()
            .build()
            .map_err(|e| format!("archive: cannot start the PostgreSQL client's runtime: {e}"))?;
        let a = PgArchive {
            rt: Some(rt),
            inner: Arc::new(Inner {
                target: describe(&config),
                config,
                writer: Mutex::new(None),
                reader: Mutex::new(None),
            }),
        };
        a.call(|inner| async move {
            drop(inner.ready(&inner.writer, true).await?);
            Ok(())
        })?;
        Ok(a)
    }

    /// Runs `f` on the client's runtime and waits for its result (from any thread, a
    /// runtime's included: the wait is on a channel).
    fn call<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
        T: Send + 'static,
    {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| "archive (PostgreSQL): closed".to_string())?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let fut = f(self.inner.clone());
        let target = self.inner.target.clone();
        rt.spawn(async move {
            let r = match tokio::time::timeout(CALL_TIMEOUT, fut).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "archive: PostgreSQL at {target} did not answer within {} s",
                    CALL_TIMEOUT.as_secs()
                )),
            };
            let _ = tx.send(r);
        });
        rx.recv()
            .map_err(|_| "archive (PostgreSQL): the client's runtime stopped".to_string())?
    }
}

impl CaseArchive for PgArchive {
    fn store(&self, cases: &[FinishedCase]) -> Result<(), String> {
        if cases.is_empty() {
            return Ok(());
        }
        // One row per case id (ON CONFLICT refuses a statement touching a row twice): the
        // last copy in the batch wins, as it would stored one by one.
        let mut seen = std::collections::HashSet::with_capacity(cases.len());
        let mut rows: Vec<PgRow> = cases
            .iter()
            .rev()
            .filter(|c| seen.insert(c.case_id))
            .map(PgRow::of)
            .collect();
        rows.reverse();
        self.call(move |inner| async move {
            let mut g = inner.ready(&inner.writer, true).await?;
            let client = g
                .as_mut()
                .ok_or_else(|| "archive (PostgreSQL): no connection".to_string())?;
            let tx = client.transaction().await.map_err(|e| pg("begin", e))?;
            for chunk in rows.chunks(CHUNK) {
                let params: Vec<&(dyn ToSql + Sync)> =
                    chunk.iter().flat_map(PgRow::params).collect();
                tx.execute(&insert_sql(chunk.len()), &params)
                    .await
                    .map_err(|e| {
                        pg(
                            &format!(
                                "storing cases {}..={}",
                                chunk[0].case_id as u64,
                                chunk[chunk.len() - 1].case_id as u64
                            ),
                            e,
                        )
                    })?;
            }
            tx.commit().await.map_err(|e| pg("commit", e))
        })
    }

    fn get(&self, case_id: u64) -> Result<Option<FinishedCase>, String> {
        self.call(move |inner| async move {
            let g = inner.ready(&inner.reader, false).await?;
            let client = g
                .as_ref()
                .ok_or_else(|| "archive (PostgreSQL): no connection".to_string())?;
            let row = client
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM knhk_cases WHERE case_id = $1"),
                    &[&(case_id as i64)],
                )
                .await
                .map_err(|e| pg(&format!("reading case {case_id}"), e))?;
            row.as_ref().map(row_case).transpose()
        })
    }

    fn list(&self, q: &ArchiveQuery) -> Result<Vec<FinishedCase>, String> {
        let columns = if q.with_history {
            COLUMNS.to_string()
        } else {
            COLUMNS.replace(
                "event_ns, event_task, event_lifecycle",
                "'{}'::bigint[], '{}'::smallint[], '{}'::smallint[]",
            )
        };
        let sql = format!(
            "SELECT {columns} FROM knhk_cases \
             WHERE ($1::text IS NULL OR namespace = $1) \
               AND ($2::text IS NULL OR workflow_id = $2) \
               AND ($3::smallint IS NULL OR state = $3) \
               AND created_ns >= $4 AND created_ns < $5 \
               AND case_id >= $10 AND case_id < $11 AND {} \
             ORDER BY created_ns, case_id LIMIT $9",
            // The page's start only when there is one (an index seek, not a filter).
            if q.after.is_some() {
                "(created_ns, case_id) > ($7, $8) AND $6::boolean"
            } else {
                "NOT $6::boolean AND $7::bigint = $7 AND $8::bigint = $8"
            }
        );
        let namespace = q.namespace.clone();
        let workflow = q.workflow_id.clone();
        let state = q.state.map(|s| state_code(s) as i16);
        let (start, end) = (clamp(q.created.start), clamp(q.created.end));
        let (after_created, after_id) = q.after.unwrap_or((0, 0));
        let (has_after, after_created, after_id) =
            (q.after.is_some(), after_created as i64, after_id as i64);
        let limit = q.limit.max(1) as i64;
        let (ids_from, ids_to) = (clamp(q.case_ids.start), clamp(q.case_ids.end));
        self.call(move |inner| async move {
            let g = inner.ready(&inner.reader, false).await?;
            let client = g
                .as_ref()
                .ok_or_else(|| "archive (PostgreSQL): no connection".to_string())?;
            let rows = client
                .query(
                    &sql,
                    &[
                        &namespace,
                        &workflow,
                        &state,
                        &start,
                        &end,
                        &has_after,
                        &after_created,
                        &after_id,
                        &limit,
                        &ids_from,
                        &ids_to,
                    ],
                )
                .await
                .map_err(|e| pg("list", e))?;
            rows.iter().map(row_case).collect()
        })
    }

    fn prune(&self, r: &Retention, now_ns: u64) -> Result<u64, String> {
        let r = *r;
        self.call(move |inner| async move {
            let g = inner.ready(&inner.writer, true).await?;
            let client = g
                .as_ref()
                .ok_or_else(|| "archive (PostgreSQL): no connection".to_string())?;
            let mut deleted = 0u64;
            if let Some(age) = r.max_age_secs {
                let before = clamp(now_ns.saturating_sub(age.saturating_mul(1_000_000_000)));
                deleted += client
                    .execute("DELETE FROM knhk_cases WHERE finished_ns < $1", &[&before])
                    .await
                    .map_err(|e| pg("retention by age", e))?;
            }
            if let Some(keep) = r.max_cases {
                deleted += client
                    .execute(
                        "DELETE FROM knhk_cases WHERE case_id IN (SELECT case_id FROM knhk_cases \
                         ORDER BY finished_ns DESC, case_id DESC OFFSET $1)",
                        &[&clamp(keep)],
                    )
                    .await
                    .map_err(|e| pg("retention by count", e))?;
            }
            Ok(deleted)
        })
    }

    fn delete_workflow(&self, workflow: u16) -> Result<u64, String> {
        self.call(move |inner| async move {
            let g = inner.ready(&inner.writer, true).await?;
            let client = g
                .as_ref()
                .ok_or_else(|| "archive (PostgreSQL): no connection".to_string())?;
            client
                .execute(
                    "DELETE FROM knhk_cases WHERE workflow = $1",
                    &[&i32::from(workflow)],
                )
                .await
                .map_err(|e| pg("deleting a workflow version's cases", e))
        })
    }

    fn holds_workflow(&self, workflow: u16) -> Result<bool, String> {
        self.call(move |inner| async move {
            let g = inner.ready(&inner.reader, false).await?;
            let client = g
                .as_ref()
                .ok_or_else(|| "archive (PostgreSQL): no connection".to_string())?;
            let row = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM knhk_cases WHERE workflow = $1)",
                    &[&i32::from(workflow)],
                )
                .await
                .map_err(|e| pg("looking for a workflow version's cases", e))?;
            Ok(row.get::<_, bool>(0))
        })
    }

    fn count(&self) -> Result<u64, String> {
        self.call(|inner| async move {
            let g = inner.ready(&inner.reader, false).await?;
            let client = g
                .as_ref()
                .ok_or_else(|| "archive (PostgreSQL): no connection".to_string())?;
            let row = client
                .query_one("SELECT count(*) FROM knhk_cases", &[])
                .await
                .map_err(|e| pg("count", e))?;
            row.try_get::<_, i64>(0)
                .map(|n| n as u64)
                .map_err(|e| pg("count", e))
        })
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}
