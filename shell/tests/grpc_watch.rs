//! WatchCase: events in order, and a slow watcher that must never stall the kernel.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use knhk_shell::proto::{self};
use tokio_stream::StreamExt;
use tonic::Code;

mod support;
use support::grpc::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_case_streams_events_in_order() {
    let srv = start(config(2, 64, 64)).await;
    let mut c = srv.client().await;
    let wf = register(&mut c, "yawl/WPC3Synchronization.yawl").await;
    let wf_id = wf.workflow_id.clone();
    let mut by_workflow = c
        .watch_case(proto::WatchCaseRequest {
            case_id: 0,
            workflow_id: wf_id.clone(),
            from_start: false,
        })
        .await
        .expect("watch workflow")
        .into_inner();
    let case = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: wf_id.clone(),
            data: HashMap::new(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    let id = case.case_id;
    let mut fired = Vec::new();
    // Fire whatever is enabled (first by name) until the case completes.
    let mut enabled = case.enabled_tasks.clone();
    // Start the first task, then watch from the start: the earlier event comes first.
    c.start_task(task(id, &enabled[0])).await.expect("start");
    let mut by_case = c
        .watch_case(proto::WatchCaseRequest {
            case_id: id,
            workflow_id: String::new(),
            from_start: true,
        })
        .await
        .expect("watch case")
        .into_inner();
    let after = c
        .complete_task(task(id, &enabled[0]))
        .await
        .expect("complete")
        .into_inner();
    fired.push(enabled[0].clone());
    enabled = after.enabled_tasks;
    let mut state = after.state;
    while state == proto::CaseState::Running as i32 {
        let t = enabled.first().expect("something enabled").clone();
        let after = c.fire_task(task(id, &t)).await.expect("fire").into_inner();
        fired.push(t);
        enabled = after.enabled_tasks;
        state = after.state;
    }
    assert_eq!(state, proto::CaseState::Complete as i32);
    let mut expected = Vec::new();
    for t in &fired {
        expected.push(format!("{t} START"));
        expected.push(format!("{t} COMPLETE"));
    }
    expected.push("EVENT_KIND_CASE_COMPLETED".to_string());
    let got: Vec<String> = collect_events(&mut by_case, expected.len())
        .await
        .iter()
        .map(lc)
        .collect();
    assert_eq!(got, expected);
    // The single-case stream ends after the case completed.
    assert!(tokio::time::timeout(Duration::from_secs(5), by_case.next())
        .await
        .expect("ends")
        .is_none());
    // The workflow watcher saw the creation, then the same events, in order, with names.
    let all = collect_events(&mut by_workflow, expected.len() + 1).await;
    assert_eq!(lc(&all[0]), "EVENT_KIND_CASE_CREATED");
    assert_eq!(all[1..].iter().map(lc).collect::<Vec<_>>(), expected);
    assert!(all
        .iter()
        .all(|e| e.case_id == id && e.workflow_id == wf_id && e.lagged == 0));
    assert_eq!(
        all.last().map(|e| e.marking.clone()),
        Some(vec!["OutputCondition".to_string()])
    );
    // Watching a finished case from the start replays its history, then ends.
    let mut replay = c
        .watch_case(proto::WatchCaseRequest {
            case_id: id,
            workflow_id: String::new(),
            from_start: true,
        })
        .await
        .expect("watch finished case")
        .into_inner();
    let mut replayed = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(5), replay.next())
        .await
        .expect("ends")
    {
        replayed.push(lc(&e.expect("event")));
    }
    assert_eq!(replayed, expected[..expected.len() - 1]);
    // Watching an unknown case or workflow is NOT_FOUND.
    let r = c
        .watch_case(proto::WatchCaseRequest {
            case_id: 999_999,
            ..Default::default()
        })
        .await;
    expect_code(r.map(|_| ()), Code::NotFound, "999999");
    let r = c
        .watch_case(proto::WatchCaseRequest {
            case_id: 0,
            workflow_id: "nope".into(),
            from_start: false,
        })
        .await;
    expect_code(r.map(|_| ()), Code::NotFound, "'nope'");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_never_stalls_the_kernel() {
    let srv = start(config(1, 1 << 14, 16)).await;
    let mut c = srv.client().await;
    let wf = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: model("yawl/WPC10AbitraryCycles.yawl"),
            format: proto::ModelFormat::Yawl as i32,
            workflow_id: "cycles".into(),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .workflow
        .expect("workflow");
    // A watcher that never reads.
    let mut stalled = c
        .watch_case(proto::WatchCaseRequest {
            case_id: 0,
            workflow_id: wf.workflow_id.clone(),
            from_start: false,
        })
        .await
        .expect("watch")
        .into_inner();
    // Many small bulk batches, each a broadcast batch: far more than the watcher's buffers.
    const N: usize = 6000;
    let creates: Vec<_> = (0..N).map(|_| ev_create(&wf.workflow_id)).collect();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut resp = c
        .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("bulk")
        .into_inner();
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        for chunk in creates.chunks(3) {
            if tx
                .send(proto::SubmitEventsRequest {
                    events: chunk.to_vec(),
                })
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut ok = 0;
    while let Some(r) = resp.next().await {
        ok += r
            .expect("ok")
            .results
            .iter()
            .filter(|r| r.code == 0)
            .count();
        if ok == N {
            break;
        }
    }
    sender.await.expect("sender");
    assert_eq!(ok, N);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "kernel stalled: {:?}",
        start.elapsed()
    );
    // Now read: the watcher lost events and is told how many.
    let mut lagged = 0;
    let mut seen = 0u64;
    while let Ok(Some(Ok(e))) =
        tokio::time::timeout(Duration::from_millis(500), stalled.next()).await
    {
        seen += 1;
        lagged += e.lagged;
    }
    assert!(lagged > 0, "watcher saw {seen} events and no lag");
    assert_eq!(
        seen + lagged,
        N as u64,
        "every event is either delivered or counted as lost"
    );
    srv.shutdown().await;
}
