//! The archive's cost (issue 16, item 7), not a test: an in-process server with the durable
//! event log (`sync`) and 4,096 case slots runs short cases (WPC1Sequence: create, fire A, fire
//! B) through the bulk stream, so every case finishes and its slot is reused; the same run
//! alternates `--archive off` and the SQLite archive, two rounds each, and prints finished
//! cases per second for each. Then each archive alone: stores of batches of 1,024 cases per
//! second. With `KNHK_BENCH_POSTGRES_URL` set (a PostgreSQL server whose `knhk_cases` table
//! the bench may empty), the PostgreSQL archive takes part in the same alternation.
//!
//! `cargo bench -p knhk-shell --bench archive`. Environment: `KNHK_BENCH_SECS` (per round,
//! default 4), `KNHK_BENCH_BATCH` (cases per bulk message, default 1024),
//! `KNHK_BENCH_POSTGRES_URL`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use knhk_archive::{PgArchive, SqliteArchive};
use knhk_engine::archive::{CaseArchive, FinishedCase, Retention};
use knhk_engine::engine::{Hist, Lifecycle};
use knhk_shell::engine::EngineConfig;
use knhk_shell::journal::JournalConfig;
use knhk_shell::proto::knhk_client::KnhkClient;
use knhk_shell::proto::{self, EventOp};
use knhk_shell::server::{self, ServerConfig};
use tokio_stream::StreamExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("knhk-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Which archive a round runs with.
#[derive(Clone, Copy)]
enum Kind<'a> {
    Off,
    Sqlite,
    Postgres(&'a str),
}

impl Kind<'_> {
    fn name(&self) -> &'static str {
        match self {
            Kind::Off => "off",
            Kind::Sqlite => "sqlite",
            Kind::Postgres(_) => "postgres",
        }
    }

    /// A fresh, empty archive of this kind (None for `Off`).
    fn open(&self, dir: &std::path::Path) -> Result<Option<Arc<dyn CaseArchive>>, BoxError> {
        Ok(match self {
            Kind::Off => None,
            Kind::Sqlite => Some(Arc::new(SqliteArchive::open_in(dir)?)),
            Kind::Postgres(url) => {
                let a = PgArchive::connect(url)?;
                // Emptied through retention (keep none): every round starts from no rows.
                a.prune(
                    &Retention {
                        max_age_secs: None,
                        max_cases: Some(0),
                    },
                    0,
                )?;
                Some(Arc::new(a))
            }
        })
    }
}

/// One round: a fresh server (archive on or off), bulk cases for `secs`; finished cases/s.
fn round(kind: Kind<'_>, secs: u64, batch: usize) -> Result<f64, BoxError> {
    let dir = scratch(kind.name());
    let engine = EngineConfig {
        case_capacity: 4096,
        archive: kind.open(&dir)?,
        ..EngineConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let served = rt.spawn(server::serve_journaled(
        listener,
        ServerConfig {
            engine,
            ..ServerConfig::default()
        },
        None,
        Some(JournalConfig::new(dir.join("log"))),
        async move {
            let _ = stop_rx.await;
        },
        move |r| {
            let _ = ready_tx.send(r);
        },
    ));
    let _running = ready_rx.recv_timeout(Duration::from_secs(30))?;
    let rate = rt.block_on(async move {
        let mut c = KnhkClient::connect(url).await?;
        c.register_workflow(proto::RegisterWorkflowRequest {
            model: std::fs::read(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../../shared/corpus/yawl/WPC1Sequence.yawl"),
            )?,
            format: proto::ModelFormat::Yawl as i32,
            workflow_id: "seq".into(),
            ..Default::default()
        })
        .await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<proto::SubmitEventsRequest>(2);
        let mut answers = c
            .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let t0 = Instant::now();
        let mut finished = 0u64;
        let mut refused = 0u64;
        while t0.elapsed() < Duration::from_secs(secs) {
            let creates = (0..batch)
                .map(|_| proto::Event {
                    op: EventOp::CreateCase as i32,
                    workflow_id: "seq".into(),
                    ..Default::default()
                })
                .collect();
            tx.send(proto::SubmitEventsRequest { events: creates })
                .await?;
            let r = answers.next().await.ok_or("stream ended")??;
            let ids: Vec<u64> = r
                .results
                .iter()
                .filter(|x| x.code == 0)
                .map(|x| x.case_id)
                .collect();
            refused += (r.results.len() - ids.len()) as u64;
            let fires = ids
                .iter()
                .flat_map(|&id| {
                    ["A", "B"].map(|t| proto::Event {
                        op: EventOp::Fire as i32,
                        case_id: id,
                        task: Some(proto::event::Task::TaskName(t.into())),
                        ..Default::default()
                    })
                })
                .collect();
            tx.send(proto::SubmitEventsRequest { events: fires })
                .await?;
            let r = answers.next().await.ok_or("stream ended")??;
            finished += r.results.iter().filter(|x| x.code == 0).count() as u64 / 2;
        }
        let rate = finished as f64 / t0.elapsed().as_secs_f64();
        println!(
            "  archive {}: {finished} cases finished, {refused} creations refused (no slot yet)",
            kind.name()
        );
        Ok::<f64, BoxError>(rate)
    })?;
    let _ = stop_tx.send(());
    let _ = rt.block_on(served);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rate)
}

fn store_rate(kind: Kind<'_>) -> Result<f64, BoxError> {
    let dir = scratch("store");
    let a = kind.open(&dir)?.ok_or("no archive")?;
    let history: Vec<Hist> = (0..4)
        .map(|i| Hist {
            time_ns: 1_000 + i,
            task: (i / 2) as u8,
            lifecycle: if i % 2 == 0 {
                Lifecycle::Start
            } else {
                Lifecycle::Complete
            },
            instance: knhk_engine::command::NO_INSTANCE,
        })
        .collect();
    let mut next = 1u64;
    let t0 = Instant::now();
    let mut stored = 0u64;
    while t0.elapsed() < Duration::from_secs(2) {
        let batch: Vec<FinishedCase> = (0..1024)
            .map(|i| {
                next += 1;
                FinishedCase {
                    case_id: next,
                    workflow_id: "seq".into(),
                    namespace: "default".into(),
                    created_ns: next,
                    finished_ns: next + i,
                    history: history.clone(),
                    ..FinishedCase::default()
                }
            })
            .collect();
        a.store(&batch)?;
        stored += 1024;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(stored as f64 / t0.elapsed().as_secs_f64())
}

fn main() -> Result<(), BoxError> {
    let secs = env_or("KNHK_BENCH_SECS", 4).clamp(1, 60);
    let batch = env_or("KNHK_BENCH_BATCH", 1024).clamp(1, 4096) as usize;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pg_url = std::env::var("KNHK_BENCH_POSTGRES_URL").ok();
    println!(
        "knhk archive bench: {cores} cores, durability sync, 4096 slots, {batch} cases per bulk message, {secs}s per round"
    );
    let mut kinds = vec![Kind::Off, Kind::Sqlite];
    match &pg_url {
        Some(url) => kinds.push(Kind::Postgres(url)),
        None => println!("  (KNHK_BENCH_POSTGRES_URL not set: no PostgreSQL rounds)"),
    }
    let mut rates = vec![Vec::new(); kinds.len()];
    for _ in 0..2 {
        for (k, r) in kinds.iter().zip(rates.iter_mut()) {
            r.push(round(*k, secs, batch)?);
        }
    }
    let med = |v: &[f64]| (v[0] + v[1]) / 2.0;
    let off = med(&rates[0]);
    for (k, r) in kinds.iter().zip(&rates) {
        println!(
            "finished cases/s: archive {} {:.0} ({:.0}, {:.0}); cost {:.1} %",
            k.name(),
            med(r),
            r[0],
            r[1],
            (1.0 - med(r) / off) * 100.0
        );
    }
    for k in &kinds[1..] {
        println!(
            "{} archive alone: {:.0} cases/s stored (batches of 1024, 4 history events each)",
            k.name(),
            store_rate(*k)?
        );
    }
    Ok(())
}
