//! Tasks without work run themselves (issue 14 item 6), end to end through `knhk serve`:
//!
//! - pm4py's running example (a net mined from a log, with two silent transitions: an AND
//!   split and a skip in a deferred choice with `reinitiate request`) takes the six traces of
//!   its own log exactly as they are — events for visible activities only — unary and in one
//!   bulk stream, and every case completes; registered with `manual_silent_tasks` the same
//!   traces are refused at their second event (nothing fires the silent split);
//! - a deferred choice between a working task and a silent skip waits for the client: starting
//!   the working task withdraws the skip, naming the task after the skip runs the skip first;
//! - a YAWL net of empty routing tasks (WPC3Synchronization) completes on creation;
//! - everything survives a SIGKILL and restart: the engine's fires are logged ops, replay
//!   reproduces them (same states, same sequence numbers).

use std::collections::HashMap;

use knhk_shell::proto;
use tokio_stream::StreamExt;
use tonic::Code;

mod support;
use support::{
    corpus, corpus_path, create_case as create, get_case as case, scratch, spawn, Client,
};

const RUNNING: &str = "pnml/running-example.pnml";

/// The traces of pm4py's running-example log: activity names in order.
fn traces() -> Vec<Vec<String>> {
    let log = knhk_import::xes::read_file(&corpus_path("xes/running-example.xes")).expect("xes");
    log.traces
        .iter()
        .map(|t| t.events.iter().map(|e| e.name.clone()).collect())
        .collect()
}

async fn register(c: &mut Client, id: &str, file: &str, manual: bool) -> proto::Workflow {
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: corpus(file),
        workflow_id: id.into(),
        manual_silent_tasks: manual,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("register {file}: {e}"))
    .into_inner()
    .workflow
    .expect("workflow")
}

fn fire(case_id: u64, task: &str) -> proto::TaskRequest {
    proto::TaskRequest {
        case_id,
        task: task.into(),
        ..Default::default()
    }
}

const COMPLETE: i32 = proto::CaseState::Complete as i32;

/// Workflow `skip`: `A`, then a deferred choice between the working task `B` and a silent
/// `skip`, then `C`.
const SKIP: &str = r#"{
  "name": "skip", "id": "Net",
  "conditions": [
    { "id": "i", "kind": "input", "flows": [ { "to": "A" } ] },
    { "id": "p", "flows": [ { "to": "B" }, { "to": "skip" } ] },
    { "id": "q", "flows": [ { "to": "C" } ] },
    { "id": "o", "kind": "output" }
  ],
  "tasks": [
    { "id": "A", "flows": [ { "to": "p" } ] },
    { "id": "B", "flows": [ { "to": "q" } ] },
    { "id": "skip", "silent": true, "flows": [ { "to": "q" } ] },
    { "id": "C", "flows": [ { "to": "o" } ] }
  ]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tasks_run_themselves_and_replay() {
    let dir = scratch("silent-tasks");
    let data = dir.join("data");
    let log = dir.join("serve.log");
    let mut p = spawn(&data, &log, &[], None);
    let mut c = p.ready().await.expect("server");

    // The running example: the silent transitions are automatic; the old behaviour on request.
    let wf = register(&mut c, "running", RUNNING, false).await;
    let auto: Vec<&str> = wf
        .tasks
        .iter()
        .filter(|t| t.automatic)
        .map(|t| t.label.as_str())
        .collect();
    assert_eq!(auto.len(), 2, "two silent transitions: {:?}", wf.tasks);
    assert!(wf.tasks.iter().all(|t| t.automatic == t.silent));
    let manual = register(&mut c, "running-manual", RUNNING, true).await;
    assert!(manual.manual_silent_tasks && manual.tasks.iter().all(|t| !t.automatic));

    // Unary: every trace of the log as it is.
    let traces = traces();
    assert_eq!(traces.len(), 6);
    let mut ids = Vec::new();
    for t in &traces {
        let id = create(&mut c, "running").await.case_id;
        for a in t {
            c.fire_task(fire(id, a))
                .await
                .unwrap_or_else(|e| panic!("case {id}: {a}: {e}"));
        }
        assert_eq!(case(&mut c, id).await.state, COMPLETE, "trace {t:?}");
        ids.push(id);
    }
    // The old behaviour: the silent AND split waits for the client, so the trace's second
    // event is not enabled.
    let id = create(&mut c, "running-manual").await.case_id;
    c.fire_task(fire(id, &traces[0][0])).await.expect("first");
    let e = c
        .fire_task(fire(id, &traces[0][1]))
        .await
        .expect_err("the silent split is the client's to fire");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");

    // Bulk: all six traces in one stream, creations first, then the events by position.
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::SubmitEventsRequest>(4);
    let mut out = c
        .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("bulk")
        .into_inner();
    let creates = (0..traces.len())
        .map(|_| support::grpc::ev_create("running"))
        .collect();
    tx.send(proto::SubmitEventsRequest { events: creates })
        .await
        .expect("send");
    let r = out.next().await.expect("reply").expect("ok");
    assert!(r.results.iter().all(|r| r.code == 0), "{:?}", r.results);
    let bulk_ids: Vec<u64> = r.results.iter().map(|r| r.case_id).collect();
    let mut events = Vec::new();
    for (t, &id) in traces.iter().zip(&bulk_ids) {
        for a in t {
            events.push(support::grpc::ev_task(proto::EventOp::Fire, id, a));
        }
    }
    let n = events.len();
    tx.send(proto::SubmitEventsRequest { events })
        .await
        .expect("send");
    let r = out.next().await.expect("reply").expect("ok");
    assert_eq!(r.results.len(), n);
    assert!(
        r.results.iter().all(|r| r.code == 0),
        "every event of the log is accepted: {:?}",
        r.results.iter().find(|r| r.code != 0)
    );
    drop(tx);
    for &id in &bulk_ids {
        assert_eq!(case(&mut c, id).await.state, COMPLETE);
    }
    ids.extend(bulk_ids);

    // The deferred choice between B and the silent skip.
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: SKIP.as_bytes().to_vec(),
        format: proto::ModelFormat::Json as i32,
        workflow_id: "skip".into(),
        ..Default::default()
    })
    .await
    .expect("register skip");
    let x = create(&mut c, "skip").await.case_id;
    let after_a = c.fire_task(fire(x, "A")).await.expect("A").into_inner();
    assert_eq!(after_a.marking, vec!["p".to_string()], "the skip waits");
    let mut enabled = after_a.enabled_tasks.clone();
    enabled.sort();
    assert_eq!(enabled, vec!["B".to_string(), "skip".into()]);
    let started = c.start_task(fire(x, "B")).await.expect("B").into_inner();
    assert!(
        started.enabled_tasks.is_empty(),
        "starting B withdrew the skip"
    );
    c.complete_task(fire(x, "B")).await.expect("B done");
    c.fire_task(fire(x, "C")).await.expect("C");
    assert_eq!(case(&mut c, x).await.state, COMPLETE);
    // Naming C right after A: the skip runs first.
    let y = create(&mut c, "skip").await.case_id;
    c.fire_task(fire(y, "A")).await.expect("A");
    let done = c.fire_task(fire(y, "C")).await.expect("C after the skip");
    assert_eq!(done.into_inner().state, COMPLETE);
    let export = c
        .export_case_xes(proto::ExportCaseXesRequest {
            case_id: y,
            ..Default::default()
        })
        .await
        .expect("xes")
        .into_inner();
    let xes = String::from_utf8_lossy(&export.xes).to_string();
    assert!(xes.contains("\"A\"") && xes.contains("\"C\"") && !xes.contains("\"skip\""));
    ids.extend([x, y]);

    // A YAWL net of empty routing tasks runs through on creation; manual: it waits.
    register(&mut c, "sync", "yawl/WPC3Synchronization.yawl", false).await;
    register(&mut c, "sync-manual", "yawl/WPC3Synchronization.yawl", true).await;
    let s = create(&mut c, "sync").await;
    assert_eq!(s.state, COMPLETE, "{s:?}");
    let m = create(&mut c, "sync-manual").await;
    assert_eq!(m.enabled_tasks, vec!["A".to_string()]);
    ids.extend([s.case_id, m.case_id]);

    // SIGKILL, restart: replay gives every case back as it was.
    let mut before: HashMap<u64, (i32, u64)> = HashMap::new();
    for &id in &ids {
        let k = case(&mut c, id).await;
        before.insert(id, (k.state, k.seq));
    }
    p.kill();
    let mut p = spawn(&data, &log, &[], None);
    let mut c = p.ready().await.expect("restart");
    for &id in &ids {
        let k = case(&mut c, id).await;
        assert_eq!(
            Some(&(k.state, k.seq)),
            before.get(&id),
            "case {id} replayed"
        );
    }
    let w = c
        .get_workflow(proto::GetWorkflowRequest {
            workflow_id: "running-manual".into(),
            version: 0,
        })
        .await
        .expect("workflow")
        .into_inner();
    assert!(w.manual_silent_tasks, "the option is logged");
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
