//! Multiple-instance tasks through the server (issue 13 item 2): the model written for the
//! import tests (`import/tests/models/MultipleInstances.yawl`: Review, static, minimum 1,
//! maximum 10, threshold 2; Collect, dynamic, up to 3) registered over gRPC and run with
//! StartInstances (a count at run time), StartInstance, CompleteInstance, AddInstance and ListInstances;
//! the threshold withdraws the open reviews; refusals leave the case as it was; watch events
//! and the XES export carry one event per instance (`concept:instance`); and the real binary,
//! killed and restarted on its data directory, replays the instances exactly.

use std::collections::HashMap;

use knhk_shell::proto;
use tonic::Code;

mod support;
use support::grpc::*;

fn model() -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../import/tests/models/MultipleInstances.yawl");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn inst(case_id: u64, task: &str, instance: u32) -> proto::InstanceRequest {
    proto::InstanceRequest {
        case_id,
        task: task.into(),
        instance,
        data: HashMap::new(),
        branch_bits: None,
    }
}

fn start_with(case_id: u64, task: &str, count: u32) -> proto::InstanceRequest {
    inst(case_id, task, count)
}

/// (instance, state name) of a task's instances, and whether it has live ones.
async fn instances(c: &mut Client, case_id: u64, task: &str) -> (bool, Vec<(u32, String)>) {
    let r = c
        .list_instances(proto::ListInstancesRequest {
            case_id,
            task: task.into(),
        })
        .await
        .expect("list instances")
        .into_inner();
    let v = r
        .instances
        .iter()
        .map(|i| {
            let s = proto::InstanceState::try_from(i.state)
                .map(|s| {
                    s.as_str_name()
                        .trim_start_matches("INSTANCE_STATE_")
                        .to_string()
                })
                .unwrap_or_default();
            (i.instance, s)
        })
        .collect();
    (r.live, v)
}

async fn register(c: &mut Client) -> String {
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: model(),
        format: 0,
        workflow_id: "mi".into(),
        // The test drives the silent tasks (Prepare, Decide) itself.
        manual_silent_tasks: true,
        ..Default::default()
    })
    .await
    .expect("register")
    .into_inner()
    .workflow
    .expect("workflow")
    .workflow_id
}

async fn create(c: &mut Client, wf: &str) -> u64 {
    c.create_case(proto::CreateCaseRequest {
        workflow_id: wf.into(),
        data: HashMap::new(),
        ..Default::default()
    })
    .await
    .expect("create")
    .into_inner()
    .case_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiple_instances_over_grpc() {
    let srv = start(config(1, 64, 1024)).await;
    let mut c = srv.client().await;
    let wf = register(&mut c).await;
    let id = create(&mut c, &wf).await;
    c.fire_task(task(id, "Prepare")).await.expect("Prepare");

    // refusals: a count past the maximum, a plain completion, an instance before the start
    expect_code(
        c.start_instances(start_with(id, "Review", 11)).await,
        Code::FailedPrecondition,
        "minimum..maximum",
    );
    expect_code(
        c.start_instance(inst(id, "Review", 0)).await,
        Code::FailedPrecondition,
        "not started",
    );
    expect_code(
        c.fire_task(task(id, "Review")).await,
        Code::FailedPrecondition,
        "multiple-instance",
    );
    expect_code(
        c.start_instance(inst(id, "Prepare", 0)).await,
        Code::FailedPrecondition,
        "not multiple-instance",
    );
    let before = c
        .get_case(proto::GetCaseRequest {
            case_id: id,
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(before.enabled_tasks, ["Review"]);

    // WCP-14: three reviews, the count given with the start
    let s = c
        .start_instances(start_with(id, "Review", 3))
        .await
        .expect("start Review")
        .into_inner()
        .case
        .expect("case");
    assert_eq!(s.busy_tasks, ["Review"], "{s:?}");
    assert_eq!(
        instances(&mut c, id, "Review").await,
        (
            true,
            vec![
                (0, "CREATED".into()),
                (1, "CREATED".into()),
                (2, "CREATED".into())
            ]
        )
    );
    for i in 0..3 {
        c.start_instance(inst(id, "Review", i))
            .await
            .expect("start");
    }
    expect_code(
        c.start_instance(inst(id, "Review", 1)).await,
        Code::FailedPrecondition,
        "instance 1",
    );
    expect_code(
        c.complete_task(task(id, "Review")).await,
        Code::FailedPrecondition,
        "CompleteInstance",
    );
    let r = c
        .complete_instance(inst(id, "Review", 2))
        .await
        .expect("complete 2")
        .into_inner();
    assert_eq!(r.instance, 2);
    assert_eq!(r.case.expect("case").busy_tasks, ["Review"]);
    assert_eq!(
        instances(&mut c, id, "Review").await.1,
        vec![
            (0, "STARTED".into()),
            (1, "STARTED".into()),
            (2, "COMPLETED".into())
        ]
    );
    // WCP-35: the second completion reaches the threshold; review 1 is withdrawn
    let r = c
        .complete_instance(inst(id, "Review", 0))
        .await
        .expect("complete 0")
        .into_inner();
    let case = r.case.expect("case");
    assert!(case.busy_tasks.is_empty(), "{case:?}");
    assert_eq!(case.enabled_tasks, ["Collect"]);
    assert_eq!(instances(&mut c, id, "Review").await, (false, vec![]));
    expect_code(
        c.complete_instance(inst(id, "Review", 1)).await,
        Code::FailedPrecondition,
        "not started",
    );

    // WCP-15: Collect starts with its minimum (1) and grows up to its maximum (3)
    c.start_task(task(id, "Collect"))
        .await
        .expect("start Collect");
    let added = c
        .add_instance(inst(id, "Collect", 0))
        .await
        .expect("add")
        .into_inner()
        .instance;
    assert_eq!(added, 1);
    c.add_instance(inst(id, "Collect", 0)).await.expect("add 2");
    expect_code(
        c.add_instance(inst(id, "Collect", 0)).await,
        Code::FailedPrecondition,
        "maximum",
    );
    for i in [2, 0, 1] {
        c.start_instance(inst(id, "Collect", i))
            .await
            .expect("start");
        c.complete_instance(inst(id, "Collect", i))
            .await
            .expect("complete");
    }
    let s = c
        .fire_task(task(id, "Decide"))
        .await
        .expect("Decide")
        .into_inner();
    assert_eq!(s.state, proto::CaseState::Complete as i32);

    // the history: one start and one complete per instance, an abort for withdrawn review 1
    let mut w = c
        .watch_case(proto::WatchCaseRequest {
            case_id: id,
            workflow_id: String::new(),
            from_start: true,
        })
        .await
        .expect("watch")
        .into_inner();
    let events = collect_events(&mut w, 16).await;
    let named: Vec<String> = events
        .iter()
        .filter(|e| e.kind == proto::EventKind::Task as i32)
        .map(|e| match e.instance {
            Some(i) => format!("{} {i}", lc(e)),
            None => lc(e),
        })
        .collect();
    assert_eq!(
        named,
        [
            "Prepare START",
            "Prepare COMPLETE",
            "Review START 0",
            "Review START 1",
            "Review START 2",
            "Review COMPLETE 2",
            "Review COMPLETE 0",
            "Review ATE_ABORT 1",
            "Collect START 2",
            "Collect COMPLETE 2",
            "Collect START 0",
            "Collect COMPLETE 0",
            "Collect START 1",
            "Collect COMPLETE 1",
            "Decide START",
            "Decide COMPLETE",
        ]
    );

    // XES: an event per instance transition, each instance's start and end paired
    let x = c
        .export_case_xes(proto::ExportCaseXesRequest {
            case_id: id,
            workflow_id: String::new(),
        })
        .await
        .expect("xes")
        .into_inner();
    assert_eq!(x.events, 16);
    let xml = String::from_utf8(x.xes).expect("utf-8");
    let pairs: Vec<(String, String, String)> = xml
        .split("<event>")
        .skip(1)
        .map(|e| {
            let v = |k: &str| {
                let at = e.find(&format!("key=\"{k}\" value=\"")).expect(k) + k.len() + 14;
                e[at..].split('"').next().unwrap_or_default().to_string()
            };
            (
                v("concept:name"),
                v("lifecycle:transition"),
                v("concept:instance"),
            )
        })
        .collect();
    let of = |name: &str, lc: &str| -> Vec<String> {
        pairs
            .iter()
            .filter(|p| p.0 == name && p.1 == lc)
            .map(|p| p.2.clone())
            .collect()
    };
    let mut starts = of("Collect", "start");
    let mut ends = of("Collect", "complete");
    starts.sort();
    ends.sort();
    assert_eq!(starts.len(), 3);
    assert_eq!(
        starts, ends,
        "each Collect instance's start pairs with its complete"
    );
    let review_starts = of("Review", "start");
    let mut review_ends = of("Review", "complete");
    review_ends.extend(of("Review", "ate_abort"));
    let (mut a, mut b) = (review_starts.clone(), review_ends.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b, "{pairs:?}");
    let distinct: std::collections::BTreeSet<_> = review_starts.iter().collect();
    assert_eq!(distinct.len(), 3);
    srv.shutdown().await;
}

/// The log replays instance ops: after a SIGKILL, a restarted server holds the same instances,
/// and the case goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_survive_a_restart() {
    let dir = support::scratch("grpc-mi-restart");
    let data = dir.join("data");
    let mut p = support::spawn(&data, &dir.join("serve1.log"), &[], None);
    let mut c = p.ready().await.expect("first start");
    let wf = register(&mut c).await;
    let id = create(&mut c, &wf).await;
    c.fire_task(task(id, "Prepare")).await.expect("Prepare");
    c.start_instances(start_with(id, "Review", 5))
        .await
        .expect("Review");
    for i in [4, 1, 3] {
        c.start_instance(inst(id, "Review", i))
            .await
            .expect("start");
    }
    c.complete_instance(inst(id, "Review", 3))
        .await
        .expect("complete 3");
    let want = instances(&mut c, id, "Review").await;
    assert!(want.0);
    p.kill();

    let mut p = support::spawn(&data, &dir.join("serve2.log"), &[], None);
    let mut c = p.ready().await.expect("restart");
    assert_eq!(
        instances(&mut c, id, "Review").await,
        want,
        "{}",
        p.log_text()
    );
    // the same refusals and the same threshold as before the restart
    expect_code(
        c.start_instance(inst(id, "Review", 3)).await,
        Code::FailedPrecondition,
        "instance 3",
    );
    let r = c
        .complete_instance(inst(id, "Review", 4))
        .await
        .expect("complete 4")
        .into_inner();
    assert_eq!(r.case.expect("case").enabled_tasks, ["Collect"]);
    assert_eq!(instances(&mut c, id, "Review").await, (false, vec![]));
    p.kill();
}
