//! `RegisterWorkflow` with client predicates (issue 14, item 2): a predicate outside the
//! compiled XPath subset refuses the model unless the registration asks for client
//! predicates; then GetWorkflow lists the flows and their bits, a completion without branch
//! bits is refused (the kernel would otherwise pick a branch on its own), the bits given are
//! honoured, and all of it survives a restart (the option is in the log).

use knhk_shell::proto;
use tonic::Code;

mod support;
use support::{scratch, spawn, Client};

/// An XOR split on a predicate the compiler does not take (`starts-with`), default to `no`.
const MODEL: &str = r#"{
  "name": "triage",
  "id": "Net",
  "variables": [ { "name": "code", "type": "string", "initial": "" } ],
  "conditions": [
    { "id": "start", "kind": "input", "flows": [ { "to": "triage" } ] },
    { "id": "end", "kind": "output" }
  ],
  "tasks": [
    { "id": "triage", "split": "xor",
      "flows": [
        { "to": "urgent", "predicate": "starts-with(/Net/code/text(), 'U')", "ordering": 0 },
        { "to": "normal", "default": true }
      ] },
    { "id": "urgent", "flows": [ { "to": "end" } ] },
    { "id": "normal", "flows": [ { "to": "end" } ] }
  ]
}"#;

fn register(client_predicates: bool) -> proto::RegisterWorkflowRequest {
    proto::RegisterWorkflowRequest {
        model: MODEL.as_bytes().to_vec(),
        format: proto::ModelFormat::Json as i32,
        workflow_id: "triage".into(),
        client_predicates,
        ..Default::default()
    }
}

async fn run_case(c: &mut Client, bits: u32) -> proto::Case {
    let id = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "triage".into(),
            data: Default::default(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .case_id;
    c.fire_task(proto::TaskRequest {
        case_id: id,
        task: "triage".into(),
        branch_bits: Some(bits),
        ..Default::default()
    })
    .await
    .expect("fire with bits")
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_predicates_are_listed_required_honoured_and_durable() {
    let dir = scratch("client-predicates");
    let data = dir.join("data");
    let log = dir.join("serve.log");
    let mut p = spawn(&data, &log, &[], None);
    let mut c = p.ready().await.expect("server");

    let e = c
        .register_workflow(register(false))
        .await
        .expect_err("the server cannot evaluate starts-with");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("starts-with"), "{}", e.message());

    let wf = c
        .register_workflow(register(true))
        .await
        .expect("registered with client predicates")
        .into_inner()
        .workflow
        .expect("workflow");
    assert_eq!(
        wf.client_predicates,
        vec![proto::ClientPredicate {
            task: "triage".into(),
            bit: 0,
            target: "urgent".into(),
            predicate: "starts-with(/Net/code/text(), 'U')".into(),
        }]
    );

    // Without bits: refused, naming the predicate; the case is unchanged.
    let id = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "triage".into(),
            data: Default::default(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner()
        .case_id;
    let e = c
        .fire_task(proto::TaskRequest {
            case_id: id,
            task: "triage".into(),
            ..Default::default()
        })
        .await
        .expect_err("bits required");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("branch_bits"), "{}", e.message());
    let case = c
        .get_case(proto::GetCaseRequest {
            case_id: id,
            ..Default::default()
        })
        .await
        .expect("case")
        .into_inner();
    assert_eq!(case.seq, 0, "nothing happened");

    // The same refusal through the bulk stream.
    let mut s = c
        .submit_events(tokio_stream::iter([proto::SubmitEventsRequest {
            events: vec![proto::Event {
                op: proto::EventOp::Fire as i32,
                case_id: id,
                task: Some(proto::event::Task::TaskName("triage".into())),
                ..Default::default()
            }],
        }]))
        .await
        .expect("bulk")
        .into_inner();
    let r = tokio_stream::StreamExt::next(&mut s)
        .await
        .expect("answer")
        .expect("ok");
    assert_eq!(r.results[0].code, Code::InvalidArgument as i32, "{r:?}");

    // The bits decide: bit 0 set takes `urgent`, clear takes the default `normal`.
    let urgent = run_case(&mut c, 1).await;
    assert_eq!(urgent.enabled_tasks, vec!["urgent".to_string()]);
    let normal = run_case(&mut c, 0).await;
    assert_eq!(normal.enabled_tasks, vec!["normal".to_string()]);

    // After a restart the workflow is replayed with the same option and the cases go on.
    p.kill();
    let mut p = spawn(&data, &log, &[], None);
    let mut c = p.ready().await.expect("restart");
    let wf = c
        .get_workflow(proto::GetWorkflowRequest {
            workflow_id: "triage".into(),
            version: 0,
        })
        .await
        .expect("replayed")
        .into_inner();
    assert_eq!(wf.client_predicates.len(), 1);
    let again = c
        .get_case(proto::GetCaseRequest {
            case_id: urgent.case_id,
            ..Default::default()
        })
        .await
        .expect("case replayed")
        .into_inner();
    assert_eq!(again.enabled_tasks, vec!["urgent".to_string()]);
    let e = c
        .fire_task(proto::TaskRequest {
            case_id: id,
            task: "triage".into(),
            ..Default::default()
        })
        .await
        .expect_err("still required after replay");
    assert_eq!(e.code(), Code::InvalidArgument);
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
