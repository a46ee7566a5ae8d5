//! Composite tasks as sub-net cases (issue 13 item 3), end to end through `knhk serve`:
//!
//! - asked for (`subnet_cases`): the composite task starts by itself, its child case runs the
//!   sub-net and names its parent; a client cannot complete the composite task; the child's
//!   completion completes it; cancelling the parent cancels the child, cancelling the child
//!   withdraws the parent's task;
//! - not asked for: a model whose flattened form exceeds the kernel's 64 conditions runs with
//!   sub-net cases (the registration says so), one child per composite task in turn;
//! - recursion (WCP-22): a net that decomposes into itself runs child in child, each level's
//!   completion completing the level above; starting a level past the depth limit is refused;
//! - a multiple-instance composite task runs one child per instance; its threshold completes
//!   the task and cancels the children of the withdrawn instances;
//! - everything survives a SIGKILL and restart: the link is in the child's logged creation, and
//!   a child finished after the restart completes its parent's task.

use knhk_shell::proto;
use tonic::Code;

#[path = "support/subnet_models.rs"]
mod subnet_models;
mod support;
use subnet_models::NESTED;
use support::{create_case as create, get_case as case, scratch, spawn, Client};

const COMPLETE: i32 = proto::CaseState::Complete as i32;
const CANCELLED: i32 = proto::CaseState::Cancelled as i32;

fn task(case_id: u64, task: &str) -> proto::TaskRequest {
    proto::TaskRequest {
        case_id,
        task: task.into(),
        ..Default::default()
    }
}

async fn register(c: &mut Client, id: &str, model: &str, subnet_cases: bool) -> Vec<String> {
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: model.as_bytes().to_vec(),
        format: proto::ModelFormat::Json as i32,
        workflow_id: id.into(),
        subnet_cases,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("register {id}: {e}"))
    .into_inner()
    .notes
}

/// `A`, then `C`, a multiple-instance composite task of 3 instances with threshold 2, each
/// running `Sub` (`X`), then `B`.
const FANOUT: &str = r#"{
  "name": "fanout", "id": "Top",
  "conditions": [
    { "id": "i", "kind": "input", "flows": [ { "to": "A" } ] },
    { "id": "o", "kind": "output" }
  ],
  "tasks": [
    { "id": "A", "flows": [ { "to": "C" } ] },
    { "id": "C", "decomposesTo": "Sub", "flows": [ { "to": "B" } ],
      "multiInstance": { "min": 3, "max": 3, "threshold": 2, "creationMode": "static" } },
    { "id": "B", "flows": [ { "to": "o" } ] }
  ],
  "subnets": [ {
    "id": "Sub",
    "conditions": [
      { "id": "si", "kind": "input", "flows": [ { "to": "X" } ] },
      { "id": "so", "kind": "output" }
    ],
    "tasks": [ { "id": "X", "flows": [ { "to": "so" } ] } ]
  } ]
}"#;

/// The one sub-net case of `parent`, checked to name its parent and task.
async fn only_child(c: &mut Client, parent: u64, task: &str) -> proto::Case {
    let p = case(c, parent).await;
    assert_eq!(p.subnet_cases.len(), 1, "one child: {p:?}");
    assert_eq!(p.subnet_cases[0].task, task);
    let child = case(c, p.subnet_cases[0].case_id).await;
    assert_eq!(child.parent_case_id, parent);
    assert_eq!(child.parent_task, task);
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_tasks_run_as_child_cases_and_survive_restart() {
    let dir = scratch("subnets");
    let data = dir.join("data");
    let log = dir.join("serve.log");
    let mut p = spawn(&data, &log, &["--workers", "2"], None);
    let mut c = p.ready().await.expect("server");

    let notes = register(&mut c, "nested", NESTED, true).await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("composite task 'C'") && n.contains("sub-net case")),
        "{notes:?}"
    );

    // Runs: C starts by itself once A is done, its child runs X and Y, then B.
    let id = create(&mut c, "nested").await.case_id;
    let after_a = c.fire_task(task(id, "A")).await.expect("A").into_inner();
    assert_eq!(after_a.busy_tasks, vec!["C".to_string()], "{after_a:?}");
    let child = only_child(&mut c, id, "C").await;
    assert_eq!(child.workflow_id, "nested/Sub");
    assert_eq!(child.enabled_tasks, vec!["X".to_string()]);
    let e = c
        .complete_task(task(id, "C"))
        .await
        .expect_err("the child completes C, not a client");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("child case"), "{e}");
    c.fire_task(task(child.case_id, "X")).await.expect("X");
    c.fire_task(task(child.case_id, "Y")).await.expect("Y");
    assert_eq!(case(&mut c, child.case_id).await.state, COMPLETE);
    let parent = case(&mut c, id).await;
    assert!(parent.busy_tasks.is_empty(), "{parent:?}");
    assert_eq!(parent.enabled_tasks, vec!["B".to_string()]);
    assert!(parent.subnet_cases.is_empty(), "followed: {parent:?}");
    c.fire_task(task(id, "B")).await.expect("B");
    assert_eq!(case(&mut c, id).await.state, COMPLETE);
    let export = c
        .export_case_xes(proto::ExportCaseXesRequest {
            case_id: id,
            ..Default::default()
        })
        .await
        .expect("xes")
        .into_inner();
    let xes = String::from_utf8_lossy(&export.xes).to_string();
    assert!(
        xes.contains("\"C\""),
        "the composite task is an event of its case: {xes}"
    );

    // Cancelling the parent cancels its child.
    let id2 = create(&mut c, "nested").await.case_id;
    c.fire_task(task(id2, "A")).await.expect("A");
    let child2 = only_child(&mut c, id2, "C").await.case_id;
    c.cancel_case(proto::CancelCaseRequest { case_id: id2 })
        .await
        .expect("cancel");
    assert_eq!(case(&mut c, child2).await.state, CANCELLED);

    // Cancelling the child withdraws the parent's composite task.
    let id3 = create(&mut c, "nested").await.case_id;
    c.fire_task(task(id3, "A")).await.expect("A");
    let child3 = only_child(&mut c, id3, "C").await.case_id;
    c.cancel_case(proto::CancelCaseRequest { case_id: child3 })
        .await
        .expect("cancel child");
    let p3 = case(&mut c, id3).await;
    assert!(p3.busy_tasks.is_empty(), "C withdrawn: {p3:?}");

    // One child per instance; the threshold completes C and withdraws the third instance,
    // whose child is cancelled.
    register(&mut c, "fanout", FANOUT, true).await;
    let f = create(&mut c, "fanout").await.case_id;
    c.fire_task(task(f, "A")).await.expect("A");
    let fan = case(&mut c, f).await;
    let mut by_instance: Vec<(Option<u32>, u64)> = fan
        .subnet_cases
        .iter()
        .map(|s| (s.instance, s.case_id))
        .collect();
    by_instance.sort();
    assert_eq!(
        by_instance.iter().map(|x| x.0).collect::<Vec<_>>(),
        vec![Some(0), Some(1), Some(2)],
        "{fan:?}"
    );
    for &(i, child) in &by_instance {
        let k = case(&mut c, child).await;
        assert_eq!((k.parent_case_id, k.parent_instance), (f, i));
    }
    c.fire_task(task(by_instance[0].1, "X")).await.expect("X 0");
    assert_eq!(case(&mut c, f).await.busy_tasks, vec!["C".to_string()]);
    c.fire_task(task(by_instance[1].1, "X")).await.expect("X 1");
    let done = case(&mut c, f).await;
    assert_eq!(
        done.enabled_tasks,
        vec!["B".to_string()],
        "threshold reached: {done:?}"
    );
    assert_eq!(case(&mut c, by_instance[2].1).await.state, CANCELLED);

    // A case whose child runs when the server is killed: after the restart the child still
    // names its parent, and its completion completes the parent's task.
    let id4 = create(&mut c, "nested").await.case_id;
    c.fire_task(task(id4, "A")).await.expect("A");
    let child4 = only_child(&mut c, id4, "C").await.case_id;
    c.fire_task(task(child4, "X")).await.expect("X");
    drop(c);
    p.kill();
    let mut p = spawn(&data, &log, &["--workers", "2"], None);
    let mut c = p.ready().await.expect("restarted");
    let again = only_child(&mut c, id4, "C").await;
    assert_eq!(again.case_id, child4);
    assert_eq!(again.enabled_tasks, vec!["Y".to_string()]);
    assert_eq!(case(&mut c, child2).await.state, CANCELLED);
    c.fire_task(task(child4, "Y"))
        .await
        .expect("Y after restart");
    let p4 = case(&mut c, id4).await;
    assert_eq!(p4.enabled_tasks, vec!["B".to_string()], "{p4:?}");
    assert_eq!(case(&mut c, id).await.state, COMPLETE);
    drop(c);
    p.kill();
}

/// A root of `A` and three composite tasks in sequence, each decomposing into a chain of
/// `n` tasks: flattened it has about 3n + 4 conditions.
fn wide_model(n: usize) -> String {
    let chain = |net: &str| {
        let mut tasks = Vec::new();
        for k in 0..n {
            let to = if k + 1 == n {
                "so".to_string()
            } else {
                format!("{net}{}", k + 1)
            };
            tasks.push(format!(
                r#"{{ "id": "{net}{k}", "flows": [ {{ "to": "{to}" }} ] }}"#
            ));
        }
        format!(
            r#"{{ "id": "{net}", "conditions": [
                {{ "id": "si", "kind": "input", "flows": [ {{ "to": "{net}0" }} ] }},
                {{ "id": "so", "kind": "output" }} ],
              "tasks": [ {} ] }}"#,
            tasks.join(", ")
        )
    };
    format!(
        r#"{{ "name": "wide", "id": "Top",
          "conditions": [
            {{ "id": "i", "kind": "input", "flows": [ {{ "to": "A" }} ] }},
            {{ "id": "o", "kind": "output" }} ],
          "tasks": [
            {{ "id": "A", "flows": [ {{ "to": "P" }} ] }},
            {{ "id": "P", "decomposesTo": "p", "flows": [ {{ "to": "Q" }} ] }},
            {{ "id": "Q", "decomposesTo": "q", "flows": [ {{ "to": "R" }} ] }},
            {{ "id": "R", "decomposesTo": "r", "flows": [ {{ "to": "o" }} ] }} ],
          "subnets": [ {}, {}, {} ] }}"#,
        chain("p"),
        chain("q"),
        chain("r")
    )
}

/// Recursion: `R` runs net `Rec`, where a deferred choice either recurses (`deeper`, a
/// composite task of `Rec` itself) or stops.
const RECURSIVE: &str = r#"{
  "name": "recursive", "id": "Top",
  "conditions": [
    { "id": "i", "kind": "input", "flows": [ { "to": "R" } ] },
    { "id": "o", "kind": "output" }
  ],
  "tasks": [ { "id": "R", "decomposesTo": "Rec", "flows": [ { "to": "o" } ] } ],
  "subnets": [ {
    "id": "Rec",
    "conditions": [
      { "id": "si", "kind": "input", "flows": [ { "to": "deeper" }, { "to": "stop" } ] },
      { "id": "so", "kind": "output" }
    ],
    "tasks": [
      { "id": "deeper", "decomposesTo": "Rec", "flows": [ { "to": "so" } ] },
      { "id": "stop", "flows": [ { "to": "so" } ] }
    ]
  } ]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_past_the_flat_form_and_recursive_nets_run_as_child_cases() {
    let dir = scratch("subnets-wide");
    let mut p = spawn(&dir.join("data"), &dir.join("serve.log"), &[], None);
    let mut c = p.ready().await.expect("server");

    // 3 chains of 30: flattened, 94 conditions, past the kernel's 64.
    let notes = register(&mut c, "wide", &wide_model(30), false).await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("sub-net case") && n.contains("past the kernel's 64")),
        "{notes:?}"
    );
    let id = create(&mut c, "wide").await.case_id;
    c.fire_task(task(id, "A")).await.expect("A");
    for (composite, net) in [("P", "p"), ("Q", "q"), ("R", "r")] {
        let child = only_child(&mut c, id, composite).await.case_id;
        for k in 0..30 {
            c.fire_task(task(child, &format!("{net}{k}")))
                .await
                .unwrap_or_else(|e| panic!("{net}{k}: {e}"));
        }
        assert_eq!(case(&mut c, child).await.state, COMPLETE);
    }
    assert_eq!(case(&mut c, id).await.state, COMPLETE);

    // Recursion: three levels deep, then stop; each completion completes the level above.
    let notes = register(&mut c, "recursive", RECURSIVE, false).await;
    assert!(
        notes.iter().any(|n| n.contains("decomposes into itself")),
        "{notes:?}"
    );
    let root = create(&mut c, "recursive").await.case_id;
    let mut levels = vec![only_child(&mut c, root, "R").await.case_id];
    for _ in 0..2 {
        let at = *levels.last().expect("a level");
        let started = c
            .start_task(task(at, "deeper"))
            .await
            .expect("deeper")
            .into_inner();
        assert_eq!(started.busy_tasks, vec!["deeper".to_string()]);
        levels.push(only_child(&mut c, at, "deeper").await.case_id);
    }
    let deepest = *levels.last().expect("a level");
    c.fire_task(task(deepest, "stop")).await.expect("stop");
    for l in &levels {
        assert_eq!(case(&mut c, *l).await.state, COMPLETE, "level {l}");
    }
    assert_eq!(case(&mut c, root).await.state, COMPLETE);

    // The depth limit: levels 1 to 16 start, the 16th cannot go deeper.
    let root = create(&mut c, "recursive").await.case_id;
    let mut at = only_child(&mut c, root, "R").await.case_id;
    for _ in 1..16 {
        c.start_task(task(at, "deeper")).await.expect("deeper");
        at = only_child(&mut c, at, "deeper").await.case_id;
    }
    let e = c
        .start_task(task(at, "deeper"))
        .await
        .expect_err("past the depth limit");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("deeper than 16"), "{e}");
    // Cancelling the root cancels all sixteen levels.
    c.cancel_case(proto::CancelCaseRequest { case_id: root })
        .await
        .expect("cancel root");
    assert_eq!(case(&mut c, at).await.state, CANCELLED);
    drop(c);
    p.kill();
}
