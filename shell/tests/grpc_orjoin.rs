//! A general (non-local) OR-join through the server: the WCP-38 model written for the import
//! tests (`import/tests/models/WCP38GeneralSynchronizingMerge.yawl`) registered over gRPC; its
//! OR-join D waits for a looping branch, busy tasks included, and is released when the
//! branch's cancellation region empties it.

use std::collections::HashMap;

use knhk_shell::proto;
use tonic::Code;

mod support;
use support::grpc::*;

fn wcp38() -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../import/tests/models/WCP38GeneralSynchronizingMerge.yawl");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn general_or_join_over_grpc() {
    let srv = start(config(1, 64, 64)).await;
    let mut c = srv.client().await;
    let wf = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: wcp38(),
            format: 0,
            workflow_id: String::new(),
            // Its tasks have no decomposition: the test drives each one itself.
            manual_silent_tasks: true,
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .workflow
        .expect("workflow");
    let create = |c: &mut Client| {
        let id = wf.workflow_id.clone();
        let mut c = c.clone();
        async move {
            c.create_case(proto::CreateCaseRequest {
                workflow_id: id,
                data: HashMap::new(),
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner()
            .case_id
        }
    };

    // the loop runs (again = 1): D waits for it, busy B and L included
    let id = create(&mut c).await;
    c.fire_task(task(id, "A")).await.expect("A");
    c.fire_task(task(id, "C")).await.expect("C");
    expect_code(
        c.fire_task(task(id, "D")).await,
        Code::FailedPrecondition,
        "'D'",
    );
    let s = c
        .start_task(task(id, "B"))
        .await
        .expect("start B")
        .into_inner();
    assert!(!s.enabled_tasks.contains(&"D".to_string()), "{s:?}");
    let s = c
        .complete_task(task(id, "B"))
        .await
        .expect("B")
        .into_inner();
    assert_eq!(s.enabled_tasks, ["L"], "{s:?}");
    c.fire_task(task(id, "L")).await.expect("L");
    c.start_task(task(id, "B")).await.expect("start B again");
    let s = c
        .complete_task(proto::TaskRequest {
            case_id: id,
            task: "B".into(),
            data: HashMap::from([("again".to_string(), int(0))]),
            branch_bits: None,
            ..Default::default()
        })
        .await
        .expect("B leaves the loop")
        .into_inner();
    assert_eq!(s.enabled_tasks, ["D"], "{s:?}");
    let s = c.fire_task(task(id, "D")).await.expect("D").into_inner();
    assert_eq!(s.state, proto::CaseState::Complete as i32);

    // Z cancels the looping branch while B is busy: D fires on Z's token alone
    let id = create(&mut c).await;
    c.fire_task(task(id, "A")).await.expect("A");
    c.start_task(task(id, "B")).await.expect("start B");
    let s = c.fire_task(task(id, "Z")).await.expect("Z").into_inner();
    assert!(s.busy_tasks.is_empty(), "{s:?}");
    assert_eq!(s.enabled_tasks, ["D"], "{s:?}");
    let s = c.fire_task(task(id, "D")).await.expect("D").into_inner();
    assert_eq!(s.state, proto::CaseState::Complete as i32);
}
