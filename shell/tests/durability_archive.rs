//! The archive of finished cases against SIGKILL (issue 16): a server with 16 case slots runs
//! hundreds of short cases (so finished cases are archived and evicted all the time) and is
//! killed at random moments; after each restart, every case whose last event was
//! acknowledged is readable — from memory or from the archive — with its whole history, and
//! once the archiver has caught up the archive holds each of them exactly once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use knhk_archive::SqliteArchive;
use knhk_engine::archive::{ArchiveQuery, CaseArchive};
use knhk_shell::proto;

mod support;
use support::{corpus, env_u64, scratch, spawn, Client, Rng};

async fn finish_one(c: &mut Client) -> Option<u64> {
    let id = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "seq".into(),
            data: Default::default(),
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner()
        .case_id;
    for t in ["A", "B"] {
        c.fire_task(proto::TaskRequest {
            case_id: id,
            task: t.into(),
            ..Default::default()
        })
        .await
        .ok()?;
    }
    Some(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_cases_survive_sigkill_and_are_archived_exactly_once() {
    let dir = scratch("archive-kill");
    let data = dir.join("data");
    let log = dir.join("serve.log");
    let rounds = env_u64("KNHK_ARCHIVE_KILL_ROUNDS", 6);
    let mut rng = Rng(env_u64("KNHK_ARCHIVE_KILL_SEED", 0x5eed));
    let mut finished: BTreeSet<u64> = BTreeSet::new();
    let args = ["--case-capacity", "16", "--workers", "1"];
    for round in 0..rounds {
        let mut p = spawn(&data, &log, &args, None);
        let mut c = p.ready().await.expect("server");
        if round == 0 {
            c.register_workflow(proto::RegisterWorkflowRequest {
                model: corpus("yawl/WPC1Sequence.yawl"),
                format: proto::ModelFormat::Yawl as i32,
                workflow_id: "seq".into(),
                ..Default::default()
            })
            .await
            .expect("register");
        }
        // Every case acknowledged finished in earlier rounds is still readable.
        for &id in &finished {
            let case = c
                .get_case(proto::GetCaseRequest {
                    case_id: id,
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("round {round}: finished case {id} lost: {e}"))
                .into_inner();
            assert_eq!(case.state, proto::CaseState::Complete as i32, "case {id}");
        }
        // Run cases and kill the server at a random moment, mid-flight.
        let until = Instant::now() + Duration::from_millis(rng.range(150, 600));
        let mut client = c.clone();
        let runner = tokio::spawn(async move {
            let mut done = Vec::new();
            while let Some(id) = finish_one(&mut client).await {
                done.push(id);
            }
            done
        });
        tokio::time::sleep_until(until.into()).await;
        p.kill();
        finished.extend(runner.await.expect("runner"));
    }
    assert!(
        finished.len() > 40,
        "too few cases ran to test anything: {}",
        finished.len()
    );

    // A last start: the archiver catches up (cases finished before a kill and not yet
    // archived are archived from the replayed state), then the archive is read directly.
    let mut p = spawn(&data, &log, &args, None);
    let mut c = p.ready().await.expect("server");
    for &id in &finished {
        let case = c
            .get_case(proto::GetCaseRequest {
                case_id: id,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("finished case {id} lost: {e}"))
            .into_inner();
        assert_eq!(case.state, proto::CaseState::Complete as i32);
    }
    let t0 = Instant::now();
    loop {
        let archive = SqliteArchive::open_in(&data).expect("open the archive");
        let held: BTreeSet<u64> = archive
            .list(&ArchiveQuery {
                limit: 1 << 20,
                with_history: true,
                ..ArchiveQuery::default()
            })
            .expect("list")
            .into_iter()
            .map(|f| {
                assert_eq!(
                    f.history.len(),
                    4,
                    "case {}: A and B started and completed",
                    f.case_id
                );
                f.case_id
            })
            .collect();
        let rows = archive.count().expect("count");
        assert_eq!(rows, held.len() as u64, "one row per case");
        if finished.is_subset(&held) {
            break;
        }
        // The cases still in memory (at most 16) may wait for the archiver a moment.
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{} finished cases not archived",
            finished.difference(&held).count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
