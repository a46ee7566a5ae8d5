//! Finished cases read back through the API once their slots are reused (issue 16): a server
//! with 4 case slots and the default SQLite archive runs 12 cases to completion; the 8 evicted
//! ones answer GetCase with `archived` set, ListCases lists them after the cases in memory
//! when asked (and not otherwise), WatchCase(from_start) replays an archived case's history
//! and ends, and the XES export of the workflow holds all 12 traces. The same run against
//! `--archive postgres` on the server at KNHK_TEST_POSTGRES_URL (a database of its own).

use std::time::{Duration, Instant};

use knhk_shell::proto;
use tokio_stream::StreamExt;

#[path = "../../archive/tests/pg_scratch/mod.rs"]
mod pg_scratch;
mod support;
use support::{corpus, scratch, spawn, Client};

async fn list(c: &mut Client, include_archived: bool, limit: u32) -> Vec<proto::Case> {
    let mut s = c
        .list_cases(proto::ListCasesRequest {
            workflow_id: "seq".into(),
            include_archived,
            limit,
            ..Default::default()
        })
        .await
        .expect("ListCases")
        .into_inner();
    let mut v = Vec::new();
    while let Some(x) = s.next().await {
        v.push(x.expect("case"));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_cases_are_read_listed_watched_and_exported_from_the_archive() {
    evicted_cases_come_from_the_archive("grpc-archive", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_cases_come_from_the_postgres_archive() {
    let Some(db) = pg_scratch::fresh("grpc") else {
        return;
    };
    let url = db.url();
    evicted_cases_come_from_the_archive(
        "grpc-archive-pg",
        &["--archive", "postgres", "--archive-url", &url],
    )
    .await;
    // The cases are in PostgreSQL, each once.
    let (client, conn) = db
        .config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let n: i64 = client
        .query_one("SELECT count(DISTINCT case_id) FROM knhk_cases", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 12);
}

async fn evicted_cases_come_from_the_archive(name: &str, archive: &[&str]) {
    let dir = scratch(name);
    let mut args = vec!["--case-capacity", "4"];
    args.extend_from_slice(archive);
    let mut p = spawn(&dir.join("data"), &dir.join("serve.log"), &args, None);
    let mut c = p.ready().await.expect("server");
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: corpus("yawl/WPC1Sequence.yawl"),
        format: proto::ModelFormat::Yawl as i32,
        workflow_id: "seq".into(),
        ..Default::default()
    })
    .await
    .expect("register");
    let mut ids = Vec::new();
    for _ in 0..12 {
        let id = c
            .create_case(proto::CreateCaseRequest {
                workflow_id: "seq".into(),
                data: Default::default(),
                ..Default::default()
            })
            .await
            .expect("create (waits for the archive to free a slot)")
            .into_inner()
            .case_id;
        for t in ["A", "B"] {
            c.fire_task(proto::TaskRequest {
                case_id: id,
                task: t.into(),
                ..Default::default()
            })
            .await
            .expect("fire");
        }
        ids.push(id);
    }

    // The first 8 were evicted: read from the archive, final state intact.
    for &id in &ids[..8] {
        let case = c
            .get_case(proto::GetCaseRequest {
                case_id: id,
                ..Default::default()
            })
            .await
            .expect("an evicted case is still readable")
            .into_inner();
        assert!(case.archived, "case {id} comes from the archive");
        assert_eq!(case.state, proto::CaseState::Complete as i32);
        assert_eq!(case.seq, 2);
        assert_eq!(case.workflow_id, "seq");
    }
    let last = c
        .get_case(proto::GetCaseRequest {
            case_id: ids[11],
            ..Default::default()
        })
        .await
        .expect("in memory")
        .into_inner();
    assert!(!last.archived);

    // ListCases: memory only by default; with include_archived every case, each once.
    assert_eq!(list(&mut c, false, 0).await.len(), 4);
    let all = list(&mut c, true, 0).await;
    let mut seen: Vec<u64> = all.iter().map(|x| x.case_id).collect();
    seen.sort_unstable();
    let mut want = ids.clone();
    want.sort_unstable();
    assert_eq!(seen, want, "every case once");
    assert_eq!(all.iter().filter(|x| x.archived).count(), 8);
    assert!(all[..4].iter().all(|x| !x.archived), "memory first");
    assert_eq!(list(&mut c, true, 6).await.len(), 6, "limit");

    // WatchCase from the start on an archived case: its 4 events, then the end.
    let mut w = c
        .watch_case(proto::WatchCaseRequest {
            case_id: ids[0],
            workflow_id: String::new(),
            from_start: true,
        })
        .await
        .expect("watch an archived case")
        .into_inner();
    let mut events = Vec::new();
    let t0 = Instant::now();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("the stream ends")
    {
        events.push(e.expect("event"));
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
    assert_eq!(events.len(), 4, "{events:?}");

    // The workflow's XES export: all 12 traces, 4 events each.
    let mut s = c
        .export_xes(proto::ExportXesRequest {
            workflow_id: "seq".into(),
            ..Default::default()
        })
        .await
        .expect("export")
        .into_inner();
    let mut last_chunk = None;
    while let Some(chunk) = s.next().await {
        last_chunk = Some(chunk.expect("chunk"));
    }
    let last_chunk = last_chunk.expect("a last chunk");
    assert_eq!((last_chunk.traces, last_chunk.events), (12, 48));
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs one case of `workflow` to completion, firing its first enabled task each step.
async fn run_one(c: &mut Client, workflow: &str) -> u64 {
    let mut case = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: workflow.into(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    while case.state == proto::CaseState::Running as i32 {
        let t = case.enabled_tasks.first().expect("a task enabled").clone();
        case = c
            .fire_task(proto::TaskRequest {
                case_id: case.case_id,
                task: t,
                ..Default::default()
            })
            .await
            .expect("fire")
            .into_inner();
    }
    case.case_id
}

/// DeleteWorkflow with `delete_history`: the version's finished cases leave memory and the
/// archive (GetCase NOT_FOUND, absent from ListCases and the export), the next version's stay,
/// and it holds after SIGKILL and a restart, whose replay brings the cases back from the log
/// only for them to be removed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_deleted_with_its_history_is_gone_from_memory_archive_and_restarts() {
    let dir = scratch("grpc-delete-history");
    let args = ["--case-capacity", "4"];
    let mut p = spawn(&dir.join("data"), &dir.join("a.log"), &args, None);
    let mut c = p.ready().await.expect("server");
    let mut v1 = Vec::new();
    for (model, version) in [
        ("yawl/WPC1Sequence.yawl", 1),
        ("yawl/WPC3Synchronization.yawl", 2),
    ] {
        let w = c
            .register_workflow(proto::RegisterWorkflowRequest {
                model: corpus(model),
                format: proto::ModelFormat::Yawl as i32,
                workflow_id: "seq".into(),
                ..Default::default()
            })
            .await
            .expect("register")
            .into_inner()
            .workflow
            .expect("workflow");
        assert_eq!(w.version, version);
        if version == 1 {
            // version 1's cases run before version 2 exists: 6 cases through 4 slots
            for _ in 0..6 {
                v1.push(run_one(&mut c, "seq").await);
            }
        }
    }
    let mut v2 = Vec::new();
    for _ in 0..3 {
        v2.push(run_one(&mut c, "seq").await);
    }
    c.delete_workflow(proto::DeleteWorkflowRequest {
        workflow_id: "seq".into(),
        version: 1,
        delete_history: true,
    })
    .await
    .expect("delete version 1 with its history");
    for round in ["before the restart", "after SIGKILL and a restart"] {
        for &id in &v1 {
            let r = c
                .get_case(proto::GetCaseRequest {
                    case_id: id,
                    ..Default::default()
                })
                .await;
            assert_eq!(
                r.map(|_| ()).unwrap_err().code(),
                tonic::Code::NotFound,
                "{round}: case {id} of the deleted version"
            );
        }
        for &id in &v2 {
            c.get_case(proto::GetCaseRequest {
                case_id: id,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{round}: case {id} of version 2: {e}"));
        }
        let mut listed: Vec<u64> = list(&mut c, true, 0)
            .await
            .iter()
            .map(|x| x.case_id)
            .collect();
        listed.sort_unstable();
        assert_eq!(listed, v2, "{round}: only version 2's cases are listed");
        let doc = c
            .export_case_xes(proto::ExportCaseXesRequest {
                case_id: 0,
                workflow_id: "seq".into(),
            })
            .await
            .expect("export")
            .into_inner();
        assert_eq!(doc.traces, 3, "{round}: the export holds version 2's cases");
        if round.starts_with("before") {
            p.kill();
            p = spawn(&dir.join("data"), &dir.join("b.log"), &args, None);
            c = p.ready().await.expect("restart");
        }
    }
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
