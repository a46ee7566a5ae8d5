//! Task timers (issue 14 item 3), end to end through `knhk serve`:
//!
//! - an enabled task whose timer expires is skipped (one `autoskip` event marked `timer`, no
//!   start) and the case moves on; a task completed before its timer never sees it fire;
//! - a started task whose `OnExecuting` timer expires is completed by the engine;
//! - a deferred choice between a working task and a silent timeout task goes to the timeout
//!   when the client does nothing, and to the work when the client starts it first;
//! - a timer read from an integer variable; a timer re-armed when its task is enabled again
//!   (a loop) fires once per enablement;
//! - timers survive a SIGKILL: a timer that expired while the server was down fires once after
//!   restart, and a fired timer is not fired again by the next restart;
//! - a deadline given at registration to a model without timers runs like a model's own, and
//!   is replayed with its workflow; a bad one is refused by name;
//! - GetCase lists armed timers, the XES export and /metrics show the expiries, and the YAWL
//!   corpus's timer tasks register with their timers armed (their durations are months).

use std::time::Duration;

use knhk_shell::proto;
use tokio_stream::StreamExt;

mod support;
use support::{
    corpus, create_case as create, free_port, get_case as case, http_get, scratch, spawn, Client,
};

const RUNNING: i32 = proto::CaseState::Running as i32;
const COMPLETE: i32 = proto::CaseState::Complete as i32;
const AUTOSKIP: i32 = proto::Lifecycle::Autoskip as i32;
const LC_START: i32 = proto::Lifecycle::Start as i32;
const LC_COMPLETE: i32 = proto::Lifecycle::Complete as i32;
const LC_WITHDRAW: i32 = proto::Lifecycle::Withdraw as i32;

/// `A` (deadline: 1 s after it is enabled), then `B` (deadline: 1 s after it is started),
/// then the end.
const DEADLINES: &str = r#"{
  "name": "deadlines", "id": "Net",
  "conditions": [
    { "id": "i", "kind": "input", "flows": [ { "to": "A" } ] },
    { "id": "o", "kind": "output" }
  ],
  "tasks": [
    { "id": "A", "timer": { "trigger": "enabled", "duration": "PT1S" }, "flows": [ { "to": "B" } ] },
    { "id": "B", "timer": { "trigger": "started", "duration": "PT1S" }, "flows": [ { "to": "o" } ] }
  ]
}"#;

/// A deferred choice: `Work`, or the silent `timeout` 1 s after both are enabled.
const TIMEOUT: &str = r#"{
  "name": "timeout", "id": "Net",
  "conditions": [
    { "id": "i", "kind": "input", "flows": [ { "to": "Work" }, { "to": "timeout" } ] },
    { "id": "o", "kind": "output" }
  ],
  "tasks": [
    { "id": "Work", "flows": [ { "to": "o" } ] },
    { "id": "timeout", "silent": true, "timer": { "trigger": "enabled", "duration": "PT1S" },
      "flows": [ { "to": "o" } ] }
  ]
}"#;

/// `Wait` skipped after the milliseconds in variable `wait_ms`; then `Again` loops back to
/// `Wait` (re-arming its timer) or ends, as `again` says.
const LOOP: &str = r#"{
  "name": "loop", "id": "Net",
  "variables": [ { "name": "wait_ms", "type": "int", "initial": "700" },
                 { "name": "again", "type": "boolean", "initial": "true" } ],
  "conditions": [
    { "id": "i", "kind": "input", "flows": [ { "to": "Wait" } ] },
    { "id": "o", "kind": "output" }
  ],
  "tasks": [
    { "id": "Wait", "join": "xor", "timer": { "trigger": "enabled", "variable": "wait_ms" },
      "flows": [ { "to": "Again" } ] },
    { "id": "Again", "split": "xor",
      "flows": [ { "to": "Wait", "predicate": "/Net/again = 'true'" },
                 { "to": "o", "default": true } ] }
  ]
}"#;

async fn register(c: &mut Client, id: &str, model: &[u8]) -> proto::RegisterWorkflowResponse {
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: model.to_vec(),
        workflow_id: id.into(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("register {id}: {e}"))
    .into_inner()
}

fn task(case_id: u64, task: &str) -> proto::TaskRequest {
    proto::TaskRequest {
        case_id,
        task: task.into(),
        ..Default::default()
    }
}

/// The case's task events so far: (task, lifecycle, timer).
async fn history(c: &mut Client, id: u64) -> Vec<(String, i32, bool)> {
    let mut s = c
        .watch_case(proto::WatchCaseRequest {
            case_id: id,
            from_start: true,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let mut out = Vec::new();
    // The recorded events come first; stop once none follows for a moment.
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(300), s.next()).await {
        let ev = ev.expect("event");
        if ev.kind == proto::EventKind::Task as i32 {
            out.push((ev.task, ev.lifecycle, ev.timer));
        }
    }
    out
}

/// Polls the case until `done` holds (at most `within`); the last view.
async fn wait_for(
    c: &mut Client,
    id: u64,
    within: Duration,
    done: impl Fn(&proto::Case) -> bool,
) -> proto::Case {
    let t0 = std::time::Instant::now();
    loop {
        let k = case(c, id).await;
        if done(&k) || t0.elapsed() > within {
            return k;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

fn count(h: &[(String, i32, bool)], t: &str, lc: i32) -> usize {
    h.iter().filter(|(n, l, _)| n == t && *l == lc).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_skip_complete_race_and_survive_a_kill() {
    let dir = scratch("timers");
    let data = dir.join("data");
    let http = format!("127.0.0.1:{}", free_port());
    let mut p = spawn(&data, &dir.join("1.log"), &["--http-addr", &http], None);
    let mut c = p.ready().await.expect("server");

    let wf = register(&mut c, "deadlines", DEADLINES.as_bytes()).await;
    assert!(
        wf.notes.iter().any(|n| n.contains("timer of task 'A'")),
        "the timers are named in the notes: {:?}",
        wf.notes
    );
    let tasks = wf.workflow.expect("workflow").tasks;
    assert_eq!(tasks[0].timer, "PT1S, armed on enablement", "{tasks:?}");
    assert_eq!(tasks[1].timer, "PT1S, armed on start", "{tasks:?}");

    // 1. Nobody acts: A is skipped at its deadline (no start), B is enabled.
    let skipped = create(&mut c, "deadlines").await;
    assert_eq!(skipped.enabled_tasks, vec!["A".to_string()]);
    assert_eq!(skipped.timers.len(), 1, "A's timer is armed: {skipped:?}");
    assert_eq!(skipped.timers[0].task, "A");
    let created_ns = skipped.created_unix_nanos;
    let deadline = skipped.timers[0].deadline_unix_nanos;
    assert!(
        deadline >= created_ns + 1_000_000_000 && deadline < created_ns + 2_000_000_000,
        "deadline {deadline} is 1 s after creation {created_ns}"
    );
    // 2. A completed before its deadline: its timer is cancelled, never fires.
    let raced = create(&mut c, "deadlines").await;
    let k = c
        .fire_task(task(raced.case_id, "A"))
        .await
        .expect("fire A")
        .into_inner();
    assert!(
        k.timers.is_empty(),
        "A's timer cancelled, B's not armed before B starts: {k:?}"
    );

    let k = wait_for(&mut c, skipped.case_id, Duration::from_secs(10), |k| {
        k.enabled_tasks == ["B"]
    })
    .await;
    assert_eq!(k.enabled_tasks, vec!["B".to_string()], "A skipped: {k:?}");
    assert!(k.timers.is_empty(), "B's timer runs only once B starts");
    let h = history(&mut c, skipped.case_id).await;
    assert_eq!(
        h,
        vec![("A".to_string(), AUTOSKIP, true)],
        "one autoskip of A by its timer, no start"
    );

    // 3. B started: its OnExecuting timer completes it.
    let k = c
        .start_task(task(skipped.case_id, "B"))
        .await
        .expect("start B")
        .into_inner();
    assert_eq!(k.timers.len(), 1, "B's timer armed at its start: {k:?}");
    let k = wait_for(&mut c, skipped.case_id, Duration::from_secs(10), |k| {
        k.state == COMPLETE
    })
    .await;
    assert_eq!(k.state, COMPLETE, "B completed by its timer: {k:?}");
    let h = history(&mut c, skipped.case_id).await;
    assert_eq!(
        h,
        vec![
            ("A".to_string(), AUTOSKIP, true),
            ("B".to_string(), LC_START, false),
            ("B".to_string(), LC_COMPLETE, true),
        ]
    );

    // The raced case: past A's deadline nothing happened to it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let k = case(&mut c, raced.case_id).await;
    assert_eq!(k.enabled_tasks, vec!["B".to_string()]);
    let h = history(&mut c, raced.case_id).await;
    assert!(
        h.iter().all(|(_, _, timer)| !timer),
        "no timer event on a case whose task completed first: {h:?}"
    );

    // 4. A deferred choice with a timeout: the client's start wins before the deadline, the
    // silent timeout after it.
    register(&mut c, "timeout", TIMEOUT.as_bytes()).await;
    let worked = create(&mut c, "timeout").await;
    let waited = create(&mut c, "timeout").await;
    let k = c
        .start_task(task(worked.case_id, "Work"))
        .await
        .expect("start Work")
        .into_inner();
    assert!(
        k.timers.is_empty(),
        "starting Work withdrew the timeout and its timer: {k:?}"
    );
    let k = wait_for(&mut c, waited.case_id, Duration::from_secs(10), |k| {
        k.state == COMPLETE
    })
    .await;
    assert_eq!(k.state, COMPLETE, "the timeout took the choice: {k:?}");
    let h = history(&mut c, waited.case_id).await;
    assert_eq!(count(&h, "Work", LC_WITHDRAW), 1, "{h:?}");
    let k = c
        .complete_task(task(worked.case_id, "Work"))
        .await
        .expect("complete Work")
        .into_inner();
    assert_eq!(k.state, COMPLETE);

    // 5. A variable timer in a loop: re-armed at each enablement, skipped each time.
    register(&mut c, "loop", LOOP.as_bytes()).await;
    let looped = create(&mut c, "loop").await;
    let d = &looped.timers[0];
    assert!(
        d.deadline_unix_nanos >= looped.created_unix_nanos + 700_000_000
            && d.deadline_unix_nanos < looped.created_unix_nanos + 1_500_000_000,
        "700 ms from the variable: {looped:?}"
    );
    let k = wait_for(&mut c, looped.case_id, Duration::from_secs(10), |k| {
        k.enabled_tasks == ["Again"]
    })
    .await;
    assert_eq!(k.enabled_tasks, vec!["Again".to_string()]);
    let k = c
        .fire_task(task(looped.case_id, "Again"))
        .await
        .expect("again")
        .into_inner();
    assert_eq!(
        k.enabled_tasks,
        vec!["Wait".to_string()],
        "looped back: {k:?}"
    );
    assert_eq!(k.timers.len(), 1, "re-armed");
    wait_for(&mut c, looped.case_id, Duration::from_secs(10), |k| {
        k.enabled_tasks == ["Again"]
    })
    .await;
    let h = history(&mut c, looped.case_id).await;
    assert_eq!(
        count(&h, "Wait", AUTOSKIP),
        2,
        "one skip per enablement: {h:?}"
    );

    // 6. Metrics and the XES export.
    let m = http_get(&http, "/metrics").await;
    assert_eq!(
        metric(&m, "knhk_timers_skipped_total"),
        4,
        "A, timeout, Wait twice"
    );
    assert_eq!(metric(&m, "knhk_timers_completed_total"), 1, "B");
    assert!(
        metric(&m, "knhk_timers_cancelled_total") >= 2,
        "raced A, worked timeout"
    );
    let xes = c
        .export_case_xes(proto::ExportCaseXesRequest {
            case_id: skipped.case_id,
            ..Default::default()
        })
        .await
        .expect("export")
        .into_inner()
        .xes;
    let xes = String::from_utf8(xes).expect("utf-8");
    assert!(xes.contains("value=\"autoskip\""), "{xes}");
    assert_eq!(
        xes.matches("<boolean key=\"knhk:timer\" value=\"true\"/>")
            .count(),
        2,
        "{xes}"
    );

    // 7. A deadline given at registration, to a model without timers (YAWL here): A of the
    // sequence A, B is skipped after 1 s; what is wrong with a deadline is refused by name.
    let timer = |task: &str, trigger: proto::TimerTrigger, duration: &str| proto::TaskTimer {
        task: task.into(),
        trigger: trigger as i32,
        duration: duration.into(),
    };
    let reg = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: corpus("yawl/WPC1Sequence.yawl"),
            workflow_id: "sequence".into(),
            task_timers: vec![timer("A", proto::TimerTrigger::Enabled, "PT1S")],
            ..Default::default()
        })
        .await
        .expect("register with a deadline")
        .into_inner();
    assert!(
        reg.notes
            .iter()
            .any(|n| n.contains("timer of task 'A' (set at registration)")),
        "{:?}",
        reg.notes
    );
    let seq_case = create(&mut c, "sequence").await;
    assert_eq!(seq_case.timers.len(), 1, "{seq_case:?}");
    for (t, words) in [
        (
            timer("Z", proto::TimerTrigger::Enabled, "PT1S"),
            "no such task",
        ),
        (
            timer("A", proto::TimerTrigger::Unspecified, "PT1S"),
            "trigger",
        ),
        (timer("A", proto::TimerTrigger::Started, "soon"), "ISO 8601"),
    ] {
        let e = c
            .register_workflow(proto::RegisterWorkflowRequest {
                model: corpus("yawl/WPC1Sequence.yawl"),
                task_timers: vec![t],
                ..Default::default()
            })
            .await
            .expect_err(words);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(words), "{words}: {e:?}");
    }
    let e = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: DEADLINES.as_bytes().to_vec(),
            task_timers: vec![timer("A", proto::TimerTrigger::Started, "PT5S")],
            ..Default::default()
        })
        .await
        .expect_err("A has its own timer");
    assert!(e.message().contains("has a timer of its own"), "{e:?}");

    // 8. SIGKILL with a timer running; its deadline passes while the server is down.
    let pending = create(&mut c, "deadlines").await;
    assert_eq!(pending.timers.len(), 1, "A's timer runs: {pending:?}");
    p.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut p = spawn(&data, &dir.join("2.log"), &["--http-addr", &http], None);
    let mut c = p.ready().await.expect("restart");
    let k = wait_for(&mut c, pending.case_id, Duration::from_secs(10), |k| {
        k.enabled_tasks == ["B"]
    })
    .await;
    assert_eq!(
        k.enabled_tasks,
        vec!["B".to_string()],
        "fired after restart: {k:?}"
    );
    let h = history(&mut c, pending.case_id).await;
    assert_eq!(h, vec![("A".to_string(), AUTOSKIP, true)], "fired once");
    let seq = k.seq;
    // ... and not again after another kill.
    p.kill();
    let mut p = spawn(&data, &dir.join("3.log"), &["--http-addr", &http], None);
    let mut c = p.ready().await.expect("second restart");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let k = case(&mut c, pending.case_id).await;
    assert_eq!(
        (k.seq, k.state),
        (seq, RUNNING),
        "nothing fired twice: {k:?}"
    );
    let h = history(&mut c, pending.case_id).await;
    assert_eq!(count(&h, "A", AUTOSKIP), 1, "{h:?}");
    // the registered deadline was replayed with its workflow, and fired
    let w = c
        .get_workflow(proto::GetWorkflowRequest {
            workflow_id: "sequence".into(),
            version: 0,
        })
        .await
        .expect("sequence")
        .into_inner();
    assert_eq!(
        w.tasks[0].timer, "PT1S, armed on enablement",
        "{:?}",
        w.tasks
    );
    let k = case(&mut c, seq_case.case_id).await;
    assert_eq!(k.enabled_tasks, vec!["B".to_string()], "A skipped: {k:?}");
    // the finished cases came back as they were
    assert_eq!(case(&mut c, skipped.case_id).await.state, COMPLETE);
    assert_eq!(case(&mut c, waited.case_id).await.state, COMPLETE);

    // 9. The YAWL corpus's timer tasks: armed at enablement or start, durations in months.
    for (file, armed_at_enablement) in [
        ("yawl-more/TimerTaskOnEnablement.yawl", true),
        ("yawl-more/TimerTaskOnStart.yawl", false),
    ] {
        let id = file
            .trim_start_matches("yawl-more/")
            .trim_end_matches(".yawl");
        let wf = register(&mut c, id, &corpus(file)).await;
        assert!(
            wf.notes.iter().all(|n| !n.contains("no timer is armed")),
            "{file}: {:?}",
            wf.notes
        );
        let k = create(&mut c, id).await;
        assert_eq!(k.state, RUNNING, "{file}: {k:?}");
        assert_eq!(
            !k.timers.is_empty(),
            armed_at_enablement,
            "{file}: an OnEnabled timer runs from enablement, an OnExecuting one from the start: {k:?}"
        );
    }
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
