//! Retiring a workflow (issue 16 item 4, in part): `RetireWorkflow` stops new cases, unary and
//! bulk, with FAILED_PRECONDITION naming the workflow; the cases it already has run on to
//! their end; the retirement is logged, so it holds after a SIGKILL and restart; retiring
//! again changes nothing; an unknown workflow is NOT_FOUND; `knhk retire` does the same.

use knhk_shell::proto;
use tokio_stream::StreamExt;
use tonic::Code;

mod support;
use support::{scratch, spawn};

const SEQ: &str = r#"{ "name": "seq", "id": "Net",
  "conditions": [ { "id": "i", "kind": "input", "flows": [ { "to": "A" } ] },
                  { "id": "o", "kind": "output" } ],
  "tasks": [ { "id": "A", "flows": [ { "to": "B" } ] },
             { "id": "B", "flows": [ { "to": "o" } ] } ] }"#;

fn create(wf: &str) -> proto::CreateCaseRequest {
    proto::CreateCaseRequest {
        workflow_id: wf.into(),
        ..Default::default()
    }
}

fn fire(case_id: u64, task: &str) -> proto::TaskRequest {
    proto::TaskRequest {
        case_id,
        task: task.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_workflow_takes_no_new_case_and_its_cases_run_on() {
    let dir = scratch("retire");
    let data = dir.join("data");
    let mut p = spawn(&data, &dir.join("1.log"), &[], None);
    let mut c = p.ready().await.expect("server");
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: SEQ.as_bytes().to_vec(),
        workflow_id: "seq".into(),
        ..Default::default()
    })
    .await
    .expect("register");
    let running = c
        .create_case(create("seq"))
        .await
        .expect("create")
        .into_inner();
    c.fire_task(fire(running.case_id, "A"))
        .await
        .expect("fire A");

    let wf = c
        .retire_workflow(proto::RetireWorkflowRequest {
            workflow_id: "seq".into(),
        })
        .await
        .expect("retire")
        .into_inner();
    assert!(wf.retired);
    // No new case, unary or bulk.
    let e = c.create_case(create("seq")).await.expect_err("retired");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("'seq' is retired"), "{e:?}");
    let mut s = c
        .submit_events(tokio_stream::iter([proto::SubmitEventsRequest {
            events: vec![proto::Event {
                op: proto::EventOp::CreateCase as i32,
                workflow_id: "seq".into(),
                ..Default::default()
            }],
        }]))
        .await
        .expect("submit")
        .into_inner();
    let r = s.next().await.expect("answer").expect("ok").results;
    assert_eq!(r[0].code, Code::FailedPrecondition as i32, "{r:?}");
    // Retiring again (here through the CLI) changes nothing; an unknown workflow is NOT_FOUND.
    let out = std::process::Command::new(support::bin())
        .args(["retire", "--server", &p.url, "seq"])
        .output()
        .expect("knhk retire");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("seq retired"),
        "{out:?}"
    );
    let out = std::process::Command::new(support::bin())
        .args(["retire", "--server", &p.url, "nope"])
        .output()
        .expect("knhk retire");
    assert!(!out.status.success(), "an unknown workflow fails: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope"),
        "the error names it: {out:?}"
    );
    let e = c
        .retire_workflow(proto::RetireWorkflowRequest {
            workflow_id: "nope".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // SIGKILL and restart: still retired, listed so, and the old case runs to its end.
    p.kill();
    let mut p = spawn(&data, &dir.join("2.log"), &[], None);
    let mut c = p.ready().await.expect("restart");
    let listed = c
        .list_workflows(proto::ListWorkflowsRequest {})
        .await
        .expect("list")
        .into_inner()
        .workflows;
    assert!(
        listed.iter().any(|w| w.workflow_id == "seq" && w.retired),
        "{listed:?}"
    );
    let e = c
        .create_case(create("seq"))
        .await
        .expect_err("still retired");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let done = c
        .fire_task(fire(running.case_id, "B"))
        .await
        .expect("the running case goes on")
        .into_inner();
    assert_eq!(done.state, proto::CaseState::Complete as i32);
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
