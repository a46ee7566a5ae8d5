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
            .get_case(proto::GetCaseRequest { case_id: id })
            .await
            .expect("an evicted case is still readable")
            .into_inner();
        assert!(case.archived, "case {id} comes from the archive");
        assert_eq!(case.state, proto::CaseState::Complete as i32);
        assert_eq!(case.seq, 2);
        assert_eq!(case.workflow_id, "seq");
    }
    let last = c
        .get_case(proto::GetCaseRequest { case_id: ids[11] })
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
