//! Workflow versions (issue 16 item 4): a model registered under an id that exists is the
//! id's next version; new cases start on the newest version and a case keeps its own to the
//! end; registering the content of any version again is that version (idempotent);
//! GetWorkflow reads the newest or a given version, ListWorkflows lists every version, and
//! ListCases and the XES export by workflow id cover the cases of every version. A generated
//! id is the model's name, whatever was registered before. All of it holds after a SIGKILL and
//! restart (the versions are replayed in registration order); RetireWorkflow retires every
//! version so far, and a later registration is a live new version. DeleteWorkflow: see the
//! second test.

use knhk_shell::proto;
use tokio_stream::StreamExt;
use tonic::Code;

mod support;
use support::{scratch, spawn, Client};

/// A then B.
const V1: &str = r#"{ "name": "order", "id": "Net",
  "conditions": [ { "id": "i", "kind": "input", "flows": [ { "to": "A" } ] },
                  { "id": "o", "kind": "output" } ],
  "tasks": [ { "id": "A", "flows": [ { "to": "B" } ] },
             { "id": "B", "flows": [ { "to": "o" } ] } ] }"#;

/// A, then C (B is gone), then D.
const V2: &str = r#"{ "name": "order", "id": "Net",
  "conditions": [ { "id": "i", "kind": "input", "flows": [ { "to": "A" } ] },
                  { "id": "o", "kind": "output" } ],
  "tasks": [ { "id": "A", "flows": [ { "to": "C" } ] },
             { "id": "C", "flows": [ { "to": "D" } ] },
             { "id": "D", "flows": [ { "to": "o" } ] } ] }"#;

async fn register(c: &mut Client, model: &str, id: &str) -> proto::Workflow {
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: model.as_bytes().to_vec(),
        workflow_id: id.into(),
        ..Default::default()
    })
    .await
    .expect("register")
    .into_inner()
    .workflow
    .expect("workflow")
}

async fn create(c: &mut Client, id: &str) -> proto::Case {
    c.create_case(proto::CreateCaseRequest {
        workflow_id: id.into(),
        ..Default::default()
    })
    .await
    .expect("create")
    .into_inner()
}

async fn fire(c: &mut Client, case_id: u64, task: &str) -> Result<proto::Case, tonic::Status> {
    c.fire_task(proto::TaskRequest {
        case_id,
        task: task.into(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner())
}

async fn get(c: &mut Client, id: &str, version: u32) -> Result<proto::Workflow, tonic::Status> {
    c.get_workflow(proto::GetWorkflowRequest {
        workflow_id: id.into(),
        version,
    })
    .await
    .map(|r| r.into_inner())
}

/// (workflow id, version, retired) of every listed workflow, sorted.
async fn listed(c: &mut Client) -> Vec<(String, u32, bool)> {
    let mut v: Vec<_> = c
        .list_workflows(proto::ListWorkflowsRequest {})
        .await
        .expect("list workflows")
        .into_inner()
        .workflows
        .into_iter()
        .map(|w| (w.workflow_id, w.version, w.retired))
        .collect();
    v.sort();
    v
}

/// The ids of the cases ListCases gives for workflow `id`, sorted.
async fn cases_of(c: &mut Client, id: &str) -> Vec<u64> {
    let mut s = c
        .list_cases(proto::ListCasesRequest {
            workflow_id: id.into(),
            ..Default::default()
        })
        .await
        .expect("list cases")
        .into_inner();
    let mut ids = Vec::new();
    while let Some(x) = s.next().await {
        ids.push(x.expect("case").case_id);
    }
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_keep_their_cases_and_survive_a_restart() {
    let dir = scratch("versions");
    let data = dir.join("data");
    let mut p = spawn(&data, &dir.join("1.log"), &[], None);
    let mut c = p.ready().await.expect("server");

    let v1 = register(&mut c, V1, "order").await;
    assert_eq!((v1.workflow_id.as_str(), v1.version), ("order", 1));
    let old = create(&mut c, "order").await;
    assert_eq!(old.workflow_version, 1);
    fire(&mut c, old.case_id, "A")
        .await
        .expect("A on version 1");

    let v2 = register(&mut c, V2, "order").await;
    assert_eq!((v2.workflow_id.as_str(), v2.version), ("order", 2));
    let new = create(&mut c, "order").await;
    assert_eq!(new.workflow_version, 2);
    // Registering either version's content again is that version.
    assert_eq!(register(&mut c, V1, "order").await.version, 1);
    assert_eq!(register(&mut c, V2, "order").await.version, 2);
    // The generated id is the model's name, the same for both: no suffix.
    assert_eq!(register(&mut c, V2, "").await.version, 2);

    // Each case runs on its own version.
    let e = fire(&mut c, old.case_id, "C").await.expect_err("no C in 1");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    fire(&mut c, new.case_id, "A")
        .await
        .expect("A on version 2");
    let e = fire(&mut c, new.case_id, "B").await.expect_err("no B in 2");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    assert_eq!(get(&mut c, "order", 0).await.expect("newest").version, 2);
    let first = get(&mut c, "order", 1).await.expect("version 1");
    let names: Vec<_> = first.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["A", "B"]);
    let e = get(&mut c, "order", 3).await.expect_err("no version 3");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("versions 1 to 2"), "{e:?}");
    assert_eq!(
        listed(&mut c).await,
        [("order".into(), 1, false), ("order".into(), 2, false)]
    );
    let both = {
        let mut v = vec![old.case_id, new.case_id];
        v.sort_unstable();
        v
    };
    assert_eq!(cases_of(&mut c, "order").await, both);
    let mut doc = c
        .export_xes(proto::ExportXesRequest {
            workflow_id: "order".into(),
            ..Default::default()
        })
        .await
        .expect("export")
        .into_inner();
    let mut traces = 0;
    while let Some(chunk) = doc.next().await {
        traces += chunk.expect("chunk").traces;
    }
    assert_eq!(traces, 2, "one trace per case, both versions");

    // SIGKILL and restart: the same versions, each case on its own.
    p.kill();
    let mut p = spawn(&data, &dir.join("2.log"), &[], None);
    let mut c = p.ready().await.expect("restart");
    assert_eq!(
        listed(&mut c).await,
        [("order".into(), 1, false), ("order".into(), 2, false)]
    );
    assert_eq!(register(&mut c, V1, "order").await.version, 1);
    let done = fire(&mut c, old.case_id, "B")
        .await
        .expect("B on version 1");
    assert_eq!(
        (done.state, done.workflow_version),
        (proto::CaseState::Complete as i32, 1)
    );
    fire(&mut c, new.case_id, "C")
        .await
        .expect("C on version 2");
    assert_eq!(create(&mut c, "order").await.workflow_version, 2);

    // Retiring retires every version; a later registration is a live version 3.
    c.retire_workflow(proto::RetireWorkflowRequest {
        workflow_id: "order".into(),
    })
    .await
    .expect("retire");
    assert_eq!(
        listed(&mut c).await,
        [("order".into(), 1, true), ("order".into(), 2, true)]
    );
    let e = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "order".into(),
            ..Default::default()
        })
        .await
        .expect_err("retired");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // Other bytes (a trailing space), the same model: another registration.
    let v3 = register(&mut c, &format!("{V1} "), "order").await;
    assert_eq!((v3.version, v3.retired), (3, false));
    assert_eq!(create(&mut c, "order").await.workflow_version, 3);
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

async fn delete(c: &mut Client, id: &str, version: u32) -> Result<proto::Workflow, tonic::Status> {
    c.delete_workflow(proto::DeleteWorkflowRequest {
        workflow_id: id.into(),
        version,
        delete_history: false,
    })
    .await
    .map(|r| r.into_inner())
}

fn refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, text: &str) {
    let e = r.expect_err("refused");
    assert_eq!(e.code(), code, "{e:?}");
    assert!(
        e.message().contains(text),
        "'{}' lacks '{text}'",
        e.message()
    );
}

/// A watch by workflow id covers versions registered after it began. DeleteWorkflow removes
/// one version with no unfinished case: it is no longer listed or
/// readable and takes no new case (new cases go to the newest version left), its finished
/// cases stay readable and listed under the id, its content again is a new version, and all
/// of it holds after a SIGKILL and restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_version_is_gone_and_its_history_stays() {
    let dir = scratch("versions-delete");
    let data = dir.join("data");
    let mut p = spawn(&data, &dir.join("1.log"), &[], None);
    let mut c = p.ready().await.expect("server");
    assert_eq!(register(&mut c, V1, "order").await.version, 1);
    let old = create(&mut c, "order").await;
    // A watch of the id, begun while it has one version, sees the cases of a later one.
    let mut watch = c
        .watch_case(proto::WatchCaseRequest {
            workflow_id: "order".into(),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(register(&mut c, V2, "order").await.version, 2);
    let running = create(&mut c, "order").await;
    assert_eq!(running.workflow_version, 2);
    let ev = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
        .await
        .expect("an event within 5 s")
        .expect("an event")
        .expect("ok");
    assert_eq!(
        (ev.case_id, ev.kind),
        (running.case_id, proto::EventKind::CaseCreated as i32),
        "{ev:?}"
    );
    drop(watch);

    refused(
        delete(&mut c, "order", 0).await,
        Code::InvalidArgument,
        "version",
    );
    refused(
        delete(&mut c, "order", 9).await,
        Code::NotFound,
        "no version 9",
    );
    refused(delete(&mut c, "nope", 1).await, Code::NotFound, "'nope'");
    // Version 1 has a case that has not finished: refused, and nothing changed.
    refused(
        delete(&mut c, "order", 1).await,
        Code::FailedPrecondition,
        "1 unfinished case",
    );
    assert_eq!(get(&mut c, "order", 1).await.expect("v1").version, 1);
    for t in ["A", "B"] {
        fire(&mut c, old.case_id, t)
            .await
            .expect("fire on version 1");
    }
    let gone = delete(&mut c, "order", 1).await.expect("delete version 1");
    assert_eq!((gone.version, gone.deleted), (1, true));
    // A retry answers the same.
    let again = delete(&mut c, "order", 1).await.expect("delete it again");
    assert_eq!((again.version, again.deleted), (1, true));
    refused(
        get(&mut c, "order", 1).await,
        Code::NotFound,
        "version 1 was deleted",
    );
    assert_eq!(listed(&mut c).await, [("order".into(), 2, false)]);
    // The finished case of version 1: still read and listed.
    let read = c
        .get_case(proto::GetCaseRequest {
            case_id: old.case_id,
            ..Default::default()
        })
        .await
        .expect("a case of the deleted version")
        .into_inner();
    assert_eq!(
        (read.state, read.workflow_version),
        (proto::CaseState::Complete as i32, 1)
    );
    let mut both = vec![old.case_id, running.case_id];
    both.sort_unstable();
    assert_eq!(cases_of(&mut c, "order").await, both);
    // Version 1's content again: a new version (numbers are never reused).
    assert_eq!(register(&mut c, V1, "order").await.version, 3);
    // The newest deleted: new cases go to version 2, the newest left.
    delete(&mut c, "order", 3).await.expect("delete version 3");
    assert_eq!(create(&mut c, "order").await.workflow_version, 2);

    // SIGKILL and restart: the deletions hold.
    p.kill();
    let mut p = spawn(&data, &dir.join("2.log"), &[], None);
    let mut c = p.ready().await.expect("restart");
    assert_eq!(listed(&mut c).await, [("order".into(), 2, false)]);
    refused(
        get(&mut c, "order", 1).await,
        Code::NotFound,
        "version 1 was deleted",
    );
    refused(
        get(&mut c, "order", 3).await,
        Code::NotFound,
        "version 3 was deleted",
    );
    assert_eq!(get(&mut c, "order", 0).await.expect("newest").version, 2);
    assert_eq!(create(&mut c, "order").await.workflow_version, 2);
    assert_eq!(register(&mut c, V2, "order").await.version, 2, "idempotent");
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
