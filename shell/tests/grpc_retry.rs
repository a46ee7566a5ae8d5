//! Safe retries: a task operation carrying `expected_seq` applies only at that case sequence,
//! so a client that retries after a lost reply never applies an operation twice.

use std::collections::HashMap;

use knhk_shell::proto;
use tonic::Code;

mod support;
use support::grpc::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_applies_only_at_the_expected_sequence() {
    let srv = start(config(2, 64, 64)).await;
    let mut c = srv.client().await;
    let wf = register(&mut c, "yawl/WPC1Sequence.yawl").await;
    let case = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: wf.workflow_id.clone(),
            data: HashMap::new(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    let id = case.case_id;
    let first = case.enabled_tasks[0].clone();
    let at = case.seq;
    let fire = |seq: Option<u64>, name: &str| proto::TaskRequest {
        case_id: id,
        task: name.to_string(),
        expected_seq: seq,
        ..Default::default()
    };
    // First try: applied.
    let after = c
        .fire_task(fire(Some(at), &first))
        .await
        .expect("fire at the expected sequence")
        .into_inner();
    assert_eq!(after.seq, at + 1, "one event applied");
    // The retry of the same request (its reply was "lost"): refused, naming the current seq,
    // and the case is unchanged.
    let retry = c
        .fire_task(fire(Some(at), &first))
        .await
        .expect_err("a retried operation must not apply twice");
    assert_eq!(retry.code(), Code::FailedPrecondition);
    assert!(
        retry.message().contains(&format!("at sequence {}", at + 1)),
        "the refusal names the current sequence: {}",
        retry.message()
    );
    let now = c
        .get_case(proto::GetCaseRequest {
            case_id: id,
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(now.seq, after.seq, "the refused retry changed nothing");
    assert_eq!(now.enabled_tasks, after.enabled_tasks);
    // The next task at the right sequence applies; without expected_seq nothing is checked.
    let next = now.enabled_tasks[0].clone();
    let done = c
        .fire_task(fire(Some(now.seq), &next))
        .await
        .expect("fire the next task at the current sequence")
        .into_inner();
    assert_eq!(done.seq, now.seq + 1);
    // A sequence an operation can never expect is refused as invalid, not compared.
    let far = c
        .fire_task(fire(Some(u64::from(u32::MAX) + 1), &next))
        .await
        .expect_err("beyond 2^32-1");
    assert_eq!(far.code(), Code::InvalidArgument, "{}", far.message());
}

/// The same in a bulk stream: a retried batch whose events carry `expected_seq` applies none of
/// them twice, on a workflow the engine runs silent tasks of (events one by one) and on one it
/// does not (events in the worker's batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_bulk_batch_applies_no_event_twice() {
    use proto::{event::Task, EventOp};
    use tokio_stream::StreamExt;
    let srv = start(config(2, 64, 64)).await;
    let mut c = srv.client().await;
    // manual silent tasks (the helper's default) and silent tasks run by the engine
    let manual = register(&mut c, "yawl/WPC1Sequence.yawl").await;
    let auto = c
        .register_workflow(proto::RegisterWorkflowRequest {
            // A, then the silent s the engine runs itself
            model: br#"{ "name": "auto", "id": "Net",
              "conditions": [ { "id": "i", "kind": "input", "flows": [ { "to": "A" } ] },
                              { "id": "o", "kind": "output" } ],
              "tasks": [ { "id": "A", "flows": [ { "to": "s" } ] },
                         { "id": "s", "silent": true, "flows": [ { "to": "o" } ] } ] }"#
                .to_vec(),
            workflow_id: "auto".into(),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .workflow
        .expect("workflow");
    assert!(auto.tasks.iter().any(|t| t.automatic));
    for wf in [manual.workflow_id.clone(), auto.workflow_id.clone()] {
        let case = c
            .create_case(proto::CreateCaseRequest {
                workflow_id: wf.clone(),
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner();
        let task = case.enabled_tasks[0].clone();
        let batch = |seq: Option<u64>| proto::SubmitEventsRequest {
            events: vec![proto::Event {
                op: EventOp::Fire as i32,
                case_id: case.case_id,
                task: Some(Task::TaskName(task.clone())),
                expected_seq: seq,
                ..Default::default()
            }],
        };
        let bulk = c.clone();
        let send = |req: proto::SubmitEventsRequest| {
            let mut c = bulk.clone();
            async move {
                let mut s = c
                    .submit_events(tokio_stream::iter([req]))
                    .await
                    .expect("submit")
                    .into_inner();
                s.next().await.expect("answer").expect("ok").results
            }
        };
        let first = send(batch(Some(case.seq))).await;
        assert_eq!(first[0].code, 0, "{wf}: {first:?}");
        let retry = send(batch(Some(case.seq))).await;
        assert_eq!(
            retry[0].code,
            Code::FailedPrecondition as i32,
            "{wf}: the retried event must not apply: {retry:?}"
        );
        let now = c
            .get_case(proto::GetCaseRequest {
                case_id: case.case_id,
                ..Default::default()
            })
            .await
            .expect("get")
            .into_inner();
        assert_eq!(
            now.seq, first[0].case_seq,
            "{wf}: the retry changed nothing"
        );
        // expected_seq on a case event is refused, naming why
        let bad = send(proto::SubmitEventsRequest {
            events: vec![proto::Event {
                op: EventOp::CancelCase as i32,
                case_id: case.case_id,
                expected_seq: Some(now.seq),
                ..Default::default()
            }],
        })
        .await;
        assert_eq!(bad[0].code, Code::InvalidArgument as i32, "{bad:?}");
        assert!(bad[0].message.contains("task events"), "{bad:?}");
    }
}
