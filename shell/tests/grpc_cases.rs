//! Unary RPCs over loopback with a real tonic client: every RPC, every error code, data feeding
//! the guards, and random requests that must never panic the server.

use std::collections::HashMap;

use knhk_shell::proto::{self, value::Kind, Value};
use tokio_stream::StreamExt;
use tonic::Code;

mod support;
use support::grpc::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_rpcs_and_their_errors() {
    let srv = start(config(2, 64, 64)).await;
    let mut c = srv.client().await;

    // Register, get, list.
    let wf = register(&mut c, "yawl/WPC1Sequence.yawl").await;
    assert_eq!(wf.workflow_id, "WP1Sequence");
    assert_eq!(
        wf.tasks.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["A", "B"]
    );
    // The same content again (a retry) is the existing workflow; with another option it is
    // version 2 of the id derived from the model's name (stable: never a suffix).
    let same = register(&mut c, "yawl/WPC1Sequence.yawl").await;
    assert_eq!(same, wf, "idempotent");
    let again = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: model("yawl/WPC1Sequence.yawl"),
            manual_silent_tasks: false,
            ..Default::default()
        })
        .await
        .expect("register with another option")
        .into_inner()
        .workflow
        .expect("workflow");
    assert_eq!(
        (wf.version, again.workflow_id.as_str(), again.version),
        (1, "WP1Sequence", 2)
    );
    let got = c
        .get_workflow(proto::GetWorkflowRequest {
            workflow_id: "WP1Sequence".into(),
            version: 0,
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.input_condition, "InputCondition");
    assert_eq!(got.version, 2, "the newest version");
    let list = c
        .list_workflows(proto::ListWorkflowsRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.workflows.len(), 2);

    // A case through start, complete and fire.
    let case = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "WP1Sequence".into(),
            data: HashMap::new(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(case.state, proto::CaseState::Running as i32);
    assert_eq!(case.marking, ["InputCondition"]);
    assert_eq!(case.enabled_tasks, ["A"]);
    let id = case.case_id;
    let after = c
        .start_task(task(id, "A"))
        .await
        .expect("start")
        .into_inner();
    assert_eq!(after.busy_tasks, ["A"]);
    assert!(after.marking.is_empty());
    let after = c
        .complete_task(task(id, "A"))
        .await
        .expect("complete")
        .into_inner();
    assert_eq!(after.enabled_tasks, ["B"]);
    let after = c.fire_task(task(id, "B")).await.expect("fire").into_inner();
    assert_eq!(after.state, proto::CaseState::Complete as i32);
    assert_eq!(after.marking, ["OutputCondition"]);
    assert_eq!(after.seq, 3);
    let seen = c
        .get_case(proto::GetCaseRequest {
            case_id: id,
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(seen, after);

    // Cancel.
    let second = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "WP1Sequence".into(),
            data: HashMap::new(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    c.start_task(task(second.case_id, "A"))
        .await
        .expect("start");
    let cancelled = c
        .cancel_case(proto::CancelCaseRequest {
            case_id: second.case_id,
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.state, proto::CaseState::Cancelled as i32);

    // CancelTask: a busy task is aborted, an enabled one withdrawn, anything else refused.
    let fourth = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "WP1Sequence".into(),
            data: HashMap::new(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    expect_code(
        c.cancel_task(task(fourth.case_id, "B")).await,
        Code::FailedPrecondition,
        "'B'",
    );
    c.start_task(task(fourth.case_id, "A"))
        .await
        .expect("start");
    let aborted = c
        .cancel_task(task(fourth.case_id, "A"))
        .await
        .expect("cancel busy")
        .into_inner();
    assert!(aborted.busy_tasks.is_empty());
    let fifth = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "WP1Sequence".into(),
            data: HashMap::new(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    let withdrawn = c
        .cancel_task(task(fifth.case_id, "A"))
        .await
        .expect("cancel enabled")
        .into_inner();
    assert!(withdrawn.enabled_tasks.is_empty() && withdrawn.marking.is_empty());

    // ListCases streams every case; filters apply.
    let mut s = c
        .list_cases(proto::ListCasesRequest {
            workflow_id: "WP1Sequence".into(),
            state: 0,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let mut ids = Vec::new();
    while let Some(x) = s.next().await {
        ids.push(x.expect("case").case_id);
    }
    // Every case of the id, whatever its version.
    ids.sort_unstable();
    let mut all = vec![id, second.case_id, fourth.case_id, fifth.case_id];
    all.sort_unstable();
    assert_eq!(ids, all);
    let mut s = c
        .list_cases(proto::ListCasesRequest {
            workflow_id: String::new(),
            state: proto::CaseState::Cancelled as i32,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let only = s.next().await.expect("one").expect("case");
    assert_eq!(only.case_id, second.case_id);
    assert!(s.next().await.is_none());

    // INVALID_ARGUMENT: unparseable and refused models, with the importer's words.
    let r = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: b"<specificationSet><oops".to_vec(),
            format: 0,
            workflow_id: String::new(),
            ..Default::default()
        })
        .await;
    expect_code(r, Code::InvalidArgument, "model refused");
    let r = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: model("yawl/WPC8MultiMerge.yawl"),
            format: 0,
            workflow_id: String::new(),
            ..Default::default()
        })
        .await;
    expect_code(r, Code::InvalidArgument, "model refused");
    let r = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: model("yawl/WPC1Sequence.yawl"),
            format: proto::ModelFormat::Pnml as i32,
            workflow_id: String::new(),
            ..Default::default()
        })
        .await;
    expect_code(r, Code::InvalidArgument, "MODEL_FORMAT_YAWL");

    // NOT_FOUND: workflow, case, task.
    let r = c
        .get_workflow(proto::GetWorkflowRequest {
            workflow_id: "nope".into(),
            version: 0,
        })
        .await;
    expect_code(r, Code::NotFound, "'nope'");
    let r = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "nope".into(),
            data: HashMap::new(),
            ..Default::default()
        })
        .await;
    expect_code(r, Code::NotFound, "'nope'");
    expect_code(
        c.get_case(proto::GetCaseRequest {
            case_id: 4242,
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "4242",
    );
    expect_code(c.fire_task(task(4242, "A")).await, Code::NotFound, "4242");
    expect_code(
        c.get_case(proto::GetCaseRequest {
            case_id: 0,
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "case 0",
    );
    let third = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "WP1Sequence".into(),
            data: HashMap::new(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    expect_code(
        c.fire_task(task(third.case_id, "Zed")).await,
        Code::NotFound,
        "'Zed'",
    );

    // FAILED_PRECONDITION: not enabled, not started, completed and cancelled cases.
    expect_code(
        c.fire_task(task(third.case_id, "B")).await,
        Code::FailedPrecondition,
        "'B'",
    );
    expect_code(
        c.complete_task(task(third.case_id, "A")).await,
        Code::FailedPrecondition,
        "not started",
    );
    expect_code(
        c.fire_task(task(id, "A")).await,
        Code::FailedPrecondition,
        "complete",
    );
    expect_code(
        c.cancel_case(proto::CancelCaseRequest {
            case_id: second.case_id,
        })
        .await,
        Code::FailedPrecondition,
        "cancelled",
    );
    // A refused op leaves the case as it was.
    let unchanged = c
        .get_case(proto::GetCaseRequest {
            case_id: third.case_id,
            ..Default::default()
        })
        .await
        .expect("get");
    assert_eq!(unchanged.into_inner(), third);
    // Read-committed on a single node: the same case once the log has it.
    let committed = c
        .get_case(proto::GetCaseRequest {
            case_id: third.case_id,
            committed: true,
        })
        .await
        .expect("committed get");
    assert_eq!(committed.into_inner(), third);

    // INVALID_ARGUMENT: data naming no variable.
    let r = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "WP1Sequence".into(),
            data: HashMap::from([("nosuch".to_string(), int(1))]),
            ..Default::default()
        })
        .await;
    expect_code(r, Code::InvalidArgument, "'nosuch'");
    // A variable the model declares but no guard reads is accepted (and not stored).
    let declared = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "WP1Sequence".into(),
            data: HashMap::from([(
                "var".to_string(),
                Value {
                    kind: Some(Kind::String("x".into())),
                },
            )]),
            ..Default::default()
        })
        .await
        .expect("declared variable")
        .into_inner();
    assert!(declared.data.is_empty());

    // Versions, last: new cases go to the newest version, which from here is another model.
    // Another model under a taken id: its next version.
    let v3 = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: model("yawl/WPC3Synchronization.yawl"),
            format: 0,
            workflow_id: "WP1Sequence".into(),
            ..Default::default()
        })
        .await
        .expect("version 3")
        .into_inner()
        .workflow
        .expect("workflow");
    assert_eq!((v3.workflow_id.as_str(), v3.version), ("WP1Sequence", 3));
    // The same model as an existing version (a client's retry) is idempotent: that version,
    // whichever it is.
    let before = workflow_count(&mut c).await;
    let again = register_sequence(&mut c, true).await;
    assert_eq!(
        (again.workflow_id.as_str(), again.version),
        ("WP1Sequence", 1)
    );
    let after = workflow_count(&mut c).await;
    assert_eq!(before, after, "no new workflow");
    let v2 = register_sequence(&mut c, false).await;
    assert_eq!(v2.version, 2);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_data_feeds_the_guards() {
    let srv = start(config(1, 64, 64)).await;
    let mut c = srv.client().await;
    let wf = register(&mut c, "yawl/WPC4ExclusiveChoice.yawl").await;
    assert_eq!(wf.variables, ["c"]);
    let mut targets = Vec::new();
    for (value, expect) in [(0, "B"), (1, "C"), (7, "D")] {
        let case = c
            .create_case(proto::CreateCaseRequest {
                workflow_id: wf.workflow_id.clone(),
                data: HashMap::new(),
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner();
        c.start_task(task(case.case_id, "A")).await.expect("start");
        let done = c
            .complete_task(proto::TaskRequest {
                case_id: case.case_id,
                task: "A".into(),
                data: HashMap::from([("c".to_string(), int(value))]),
                branch_bits: None,
                ..Default::default()
            })
            .await
            .expect("complete")
            .into_inner();
        assert_eq!(done.enabled_tasks, [expect], "c = {value}");
        assert_eq!(done.data.get("c"), Some(&int(value)));
        targets.push(done.enabled_tasks[0].clone());
    }
    // Initial data works too, and a value of the wrong type is refused by name.
    let r = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: wf.workflow_id.clone(),
            data: HashMap::from([(
                "c".to_string(),
                Value {
                    kind: Some(Kind::Bool(true)),
                },
            )]),
            ..Default::default()
        })
        .await;
    expect_code(r, Code::InvalidArgument, "'c'");
    // Caller-computed branch bits override the guards: bit 1 = the second flow (to C).
    let case = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: wf.workflow_id.clone(),
            data: HashMap::new(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    let done = c
        .fire_task(proto::TaskRequest {
            case_id: case.case_id,
            task: "A".into(),
            data: HashMap::new(),
            branch_bits: Some(0b10),
            ..Default::default()
        })
        .await
        .expect("fire")
        .into_inner();
    assert_eq!(done.enabled_tasks, ["C"]);
    srv.shutdown().await;
}

/// Garbage from the network never panics the server: random ops, case ids, task indices and
/// names, data of every type, in bulk and unary; every event gets an answer and the server
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_never_panic() {
    let srv = start(config(2, 256, 64)).await;
    let mut c = srv.client().await;
    register(&mut c, "yawl/WPC4ExclusiveChoice.yawl").await;
    register(&mut c, "yawl/WPC10AbitraryCycles.yawl").await;
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let names = [
        "A",
        "B",
        "C",
        "D",
        "E",
        "",
        "Zed",
        "InputCondition",
        "\u{0}x",
    ];
    let workflows = ["WP1SequencePattern", "WP1Sequence", "", "nope"];
    let mut total = 0;
    for _ in 0..20 {
        let mut events = Vec::new();
        for _ in 0..200 {
            let r = next();
            let mut data = HashMap::new();
            if r & 3 == 0 {
                let kind = match (r >> 2) % 4 {
                    0 => Kind::Int((r >> 8) as i64),
                    1 => Kind::Bool(r & 64 != 0),
                    2 => Kind::String(format!("s{}", r % 7)),
                    _ => Kind::Int(i64::MIN),
                };
                let var = ["c", "cond", "var", "zz"][((r >> 20) % 4) as usize];
                data.insert(var.to_string(), Value { kind: Some(kind) });
            }
            let task = match (r >> 30) % 3 {
                0 => Some(proto::event::Task::TaskName(
                    names[((r >> 33) % names.len() as u64) as usize].into(),
                )),
                1 => Some(proto::event::Task::TaskIndex(((r >> 33) % 300) as u32)),
                _ => None,
            };
            events.push(proto::Event {
                op: ((r >> 40) % 9) as i32,
                case_id: match (r >> 45) % 4 {
                    0 => (r >> 50) % 40,
                    1 => u64::MAX - (r % 3),
                    2 => (r % 5) << 32 | ((r >> 8) % 40),
                    _ => 0,
                },
                task,
                workflow_id: workflows[((r >> 52) % workflows.len() as u64) as usize].into(),
                data,
                branch_bits: (r & 128 != 0).then_some((r >> 12) as u32),
                expected_seq: (r & 256 != 0).then_some((r >> 20) % 8),
            });
        }
        let n = events.len();
        let mut resp = c
            .submit_events(tokio_stream::iter([proto::SubmitEventsRequest { events }]))
            .await
            .expect("bulk")
            .into_inner();
        let r = resp.next().await.expect("answer").expect("ok");
        assert_eq!(r.results.len(), n);
        total += n;
        // Unary calls with the same kind of garbage.
        let r = next();
        let case_id = (r >> 50) % 40;
        let t = names[(r % names.len() as u64) as usize];
        let _ = c.fire_task(task(case_id, t)).await;
        let _ = c.start_task(task(case_id, t)).await;
        let _ = c.complete_task(task(case_id, t)).await;
        let _ = c.cancel_task(task(case_id, t)).await;
        let _ = c.cancel_case(proto::CancelCaseRequest { case_id }).await;
        let _ = c
            .get_case(proto::GetCaseRequest {
                case_id: r,
                ..Default::default()
            })
            .await;
        let _ = c
            .register_workflow(proto::RegisterWorkflowRequest {
                model: (0..(r % 64)).map(|i| (r >> (i % 56)) as u8).collect(),
                format: (r % 6) as i32,
                workflow_id: String::new(),
                client_predicates: r % 2 == 0,
                refuse_undecided: r % 3 == 0,
                manual_silent_tasks: r % 5 == 0,
                subnet_cases: r % 7 == 0,
                task_timers: vec![proto::TaskTimer {
                    task: format!("t{}", r % 7),
                    trigger: (r % 4) as i32,
                    duration: format!("PT{}S", r % 100),
                }],
            })
            .await;
        let _ = c
            .list_cases(proto::ListCasesRequest {
                workflow_id: String::new(),
                state: (r % 7) as i32,
                ..Default::default()
            })
            .await;
        let _ = c
            .export_case_xes(proto::ExportCaseXesRequest {
                case_id: 0,
                workflow_id: String::new(),
            })
            .await;
    }
    assert_eq!(total, 20 * 200);
    // Still serving.
    let wf = c
        .list_workflows(proto::ListWorkflowsRequest {})
        .await
        .expect("alive")
        .into_inner();
    assert!(wf.workflows.len() >= 2);
    srv.shutdown().await;
}

async fn workflow_count(c: &mut Client) -> usize {
    c.list_workflows(proto::ListWorkflowsRequest {})
        .await
        .expect("list")
        .into_inner()
        .workflows
        .len()
}

/// WPC1Sequence under the id "WP1Sequence", with or without `manual_silent_tasks`.
async fn register_sequence(c: &mut Client, manual_silent_tasks: bool) -> proto::Workflow {
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: model("yawl/WPC1Sequence.yawl"),
        workflow_id: "WP1Sequence".into(),
        manual_silent_tasks,
        ..Default::default()
    })
    .await
    .expect("registration")
    .into_inner()
    .workflow
    .expect("workflow")
}
