//! Registration is durable before it is visible (docs/durability.md): a workflow whose
//! `RegisterWorkflow` is held between building the workflow and appending its log record
//! (the `testing` feature's `KNHK_TESTING_HOLD_REGISTRATION`) must not accept cases; the
//! server is SIGKILLed inside that window and restarted on the same data directory, and every
//! acknowledged operation must be there, with nothing referring to a workflow that was never
//! acknowledged. Then the same for a registration that was acknowledged.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use knhk_shell::proto;

mod support;
use support::{corpus, list_cases, scratch, spawn, Client};

const HOLD_MS: u64 = 4000;

async fn create(c: &mut Client, workflow: &str) -> Result<u64, tonic::Status> {
    c.create_case(proto::CreateCaseRequest {
        workflow_id: workflow.into(),
        data: Default::default(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().case_id)
}

async fn workflow_ids(c: &mut Client) -> HashSet<String> {
    c.list_workflows(proto::ListWorkflowsRequest {})
        .await
        .expect("ListWorkflows")
        .into_inner()
        .workflows
        .into_iter()
        .map(|w| w.workflow_id)
        .collect()
}

/// Every case names a workflow the server has; every acknowledged case id is there.
async fn check_recovered(c: &mut Client, acked: &[u64]) {
    let wfs = workflow_ids(c).await;
    let all = list_cases(c).await;
    for case in &all {
        assert!(
            wfs.contains(&case.workflow_id),
            "case {} refers to workflow '{}', which the recovered server does not have",
            case.case_id,
            case.workflow_id
        );
    }
    let ids: HashSet<u64> = all.iter().map(|c| c.case_id).collect();
    let lost: Vec<&u64> = acked.iter().filter(|id| !ids.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged CreateCase lost across the crash: {lost:?} (recovered cases {ids:?}, workflows {wfs:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_inside_a_held_registration_loses_no_acknowledged_event() {
    let dir = scratch("register");
    let log = dir.join("server.log");
    let data = dir.join("data");
    let hold = format!("export KNHK_TESTING_HOLD_REGISTRATION=held:{HOLD_MS}");
    let mut p = spawn(&data, &log, &[], Some(&hold));
    let mut registering = p.ready().await.expect("server ready");
    let mut creator = p.ready().await.expect("second client");

    // An acknowledged workflow and case first, so the crash has something to keep.
    creator
        .register_workflow(proto::RegisterWorkflowRequest {
            model: corpus("yawl/WPC1Sequence.yawl"),
            format: proto::ModelFormat::Yawl as i32,
            workflow_id: "early".into(),
            ..Default::default()
        })
        .await
        .expect("register 'early'");
    let mut acked = vec![create(&mut creator, "early")
        .await
        .expect("case on 'early'")];

    // The held registration: its answer never comes (the server is killed first).
    let held = tokio::spawn(async move {
        registering
            .register_workflow(proto::RegisterWorkflowRequest {
                model: corpus("yawl/WPC1Sequence.yawl"),
                format: proto::ModelFormat::Yawl as i32,
                workflow_id: "held".into(),
                ..Default::default()
            })
            .await
    });
    let t0 = Instant::now();
    while !p.log_text().contains("registration held") {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the server never logged the held registration:\n{}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Inside the window: a second client tries to use the workflow. Each acknowledged
    // creation must survive the crash.
    let mut refused = 0u32;
    let window = Instant::now();
    while window.elapsed() < Duration::from_millis(HOLD_MS / 2) {
        match create(&mut creator, "held").await {
            Ok(id) => acked.push(id),
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::NotFound, "unexpected refusal: {s:?}");
                refused += 1;
            }
        }
        // Cases on the acknowledged workflow go on meanwhile.
        acked.push(
            create(&mut creator, "early")
                .await
                .expect("case on 'early'"),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !held.is_finished(),
        "the registration was not held long enough"
    );
    p.kill();
    assert!(
        held.await.expect("join").is_err(),
        "the held registration must not have been acknowledged"
    );

    let mut p = spawn(&data, &log, &[], None);
    let mut c = p.ready().await.expect("restarted server ready");
    check_recovered(&mut c, &acked).await;
    let wfs = workflow_ids(&mut c).await;
    assert!(wfs.contains("early"), "acknowledged workflow lost: {wfs:?}");
    eprintln!(
        "held window: {refused} CreateCase refused (NOT_FOUND), {} acknowledged, all recovered",
        acked.len()
    );

    // The id is free again (the unacknowledged registration left nothing behind); an
    // acknowledged registration and its cases survive the next crash.
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: corpus("yawl/WPC1Sequence.yawl"),
        format: proto::ModelFormat::Yawl as i32,
        workflow_id: "held".into(),
        ..Default::default()
    })
    .await
    .expect("register 'held' after the crash");
    acked.push(create(&mut c, "held").await.expect("case on 'held'"));
    p.kill();
    let mut p = spawn(&data, &log, &[], None);
    let mut c = p.ready().await.expect("second restart ready");
    check_recovered(&mut c, &acked).await;
    assert!(workflow_ids(&mut c).await.contains("held"));
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
