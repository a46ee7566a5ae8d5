//! The knhk server over loopback with a real tonic client: every RPC, both server streams,
//! bulk submission, every error code, health, reflection and shutdown.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use knhk_shell::engine::EngineConfig;
use knhk_shell::proto::knhk_client::KnhkClient;
use knhk_shell::proto::{self, value::Kind, Value};
use knhk_shell::server::{self, Running, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

type Client = KnhkClient<Channel>;

struct Server {
    url: String,
    running: Running,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), String>>,
}

fn corpus(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus")
        .join(rel)
}

fn model(rel: &str) -> Vec<u8> {
    std::fs::read(corpus(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn config(workers: usize, capacity: usize, watch_buffer: usize) -> ServerConfig {
    ServerConfig {
        engine: EngineConfig {
            workers,
            case_capacity: capacity,
            pin: false,
            history_limit: 1 << 12,
            watch_buffer,
            ..EngineConfig::default()
        },
        max_concurrent_streams: 1024,
        drain_grace: Duration::from_millis(300),
        shutdown_timeout: Duration::from_secs(3),
    }
}

async fn start(cfg: ServerConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = oneshot::channel::<Running>();
    let done = tokio::spawn(async move {
        server::serve(
            listener,
            cfg,
            None,
            async move {
                let _ = stop_rx.await;
            },
            move |r| {
                let _ = ready_tx.send(r);
            },
        )
        .await
        .map_err(|e| e.to_string())
    });
    let running = ready_rx.await.expect("server ready");
    Server {
        url: format!("http://{addr}"),
        running,
        stop: Some(stop_tx),
        done,
    }
}

impl Server {
    async fn client(&self) -> Client {
        KnhkClient::connect(self.url.clone())
            .await
            .expect("connect")
    }

    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(10), self.done).await;
        r.expect("shutdown within deadline")
            .expect("join")
            .expect("serve ok");
    }
}

async fn register(c: &mut Client, rel: &str) -> proto::Workflow {
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: model(rel),
        format: 0,
        workflow_id: String::new(),
    })
    .await
    .expect("register")
    .into_inner()
    .workflow
    .expect("workflow")
}

fn task(case_id: u64, task: &str) -> proto::TaskRequest {
    proto::TaskRequest {
        case_id,
        task: task.into(),
        ..Default::default()
    }
}

fn int(i: i64) -> Value {
    Value {
        kind: Some(Kind::Int(i)),
    }
}

fn expect_code<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, needle: &str) {
    match r {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "message: {}", s.message());
            assert!(
                s.message().contains(needle),
                "'{}' does not mention '{needle}'",
                s.message()
            );
        }
    }
}

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
    let again = register(&mut c, "yawl/WPC1Sequence.yawl").await;
    assert_eq!(again.workflow_id, "WP1Sequence-2");
    let got = c
        .get_workflow(proto::GetWorkflowRequest {
            workflow_id: "WP1Sequence".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.input_condition, "InputCondition");
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
        .get_case(proto::GetCaseRequest { case_id: id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(seen, after);

    // Cancel.
    let second = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "WP1Sequence".into(),
            data: HashMap::new(),
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
            workflow_id: "WP1Sequence-2".into(),
            data: HashMap::new(),
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
            workflow_id: "WP1Sequence-2".into(),
            data: HashMap::new(),
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
        })
        .await
        .expect("list")
        .into_inner();
    let mut ids = Vec::new();
    while let Some(x) = s.next().await {
        ids.push(x.expect("case").case_id);
    }
    assert_eq!(ids, [id, second.case_id]);
    let mut s = c
        .list_cases(proto::ListCasesRequest {
            workflow_id: String::new(),
            state: proto::CaseState::Cancelled as i32,
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
        })
        .await;
    expect_code(r, Code::InvalidArgument, "model refused");
    let r = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: model("yawl/WPC8MultiMerge.yawl"),
            format: 0,
            workflow_id: String::new(),
        })
        .await;
    expect_code(r, Code::InvalidArgument, "model refused");
    let r = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: model("yawl/WPC1Sequence.yawl"),
            format: proto::ModelFormat::Pnml as i32,
            workflow_id: String::new(),
        })
        .await;
    expect_code(r, Code::InvalidArgument, "MODEL_FORMAT_YAWL");
    // ALREADY_EXISTS.
    let r = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: model("yawl/WPC1Sequence.yawl"),
            format: 0,
            workflow_id: "WP1Sequence".into(),
        })
        .await;
    expect_code(r, Code::AlreadyExists, "WP1Sequence");

    // NOT_FOUND: workflow, case, task.
    let r = c
        .get_workflow(proto::GetWorkflowRequest {
            workflow_id: "nope".into(),
        })
        .await;
    expect_code(r, Code::NotFound, "'nope'");
    let r = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "nope".into(),
            data: HashMap::new(),
        })
        .await;
    expect_code(r, Code::NotFound, "'nope'");
    expect_code(
        c.get_case(proto::GetCaseRequest { case_id: 4242 }).await,
        Code::NotFound,
        "4242",
    );
    expect_code(c.fire_task(task(4242, "A")).await, Code::NotFound, "4242");
    expect_code(
        c.get_case(proto::GetCaseRequest { case_id: 0 }).await,
        Code::NotFound,
        "case 0",
    );
    let third = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "WP1Sequence".into(),
            data: HashMap::new(),
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
        })
        .await
        .expect("get");
    assert_eq!(unchanged.into_inner(), third);

    // INVALID_ARGUMENT: data naming no variable.
    let r = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "WP1Sequence".into(),
            data: HashMap::from([("nosuch".to_string(), int(1))]),
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
        })
        .await
        .expect("declared variable")
        .into_inner();
    assert!(declared.data.is_empty());

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
        })
        .await;
    expect_code(r, Code::InvalidArgument, "'c'");
    // Caller-computed branch bits override the guards: bit 1 = the second flow (to C).
    let case = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: wf.workflow_id.clone(),
            data: HashMap::new(),
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
        })
        .await
        .expect("fire")
        .into_inner();
    assert_eq!(done.enabled_tasks, ["C"]);
    srv.shutdown().await;
}

async fn collect_events(
    s: &mut tonic::Streaming<proto::WatchEvent>,
    n: usize,
) -> Vec<proto::WatchEvent> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(5), s.next()).await {
            Ok(Some(Ok(e))) => out.push(e),
            other => panic!("stream ended early after {} events: {other:?}", out.len()),
        }
    }
    out
}

fn lc(e: &proto::WatchEvent) -> String {
    if e.kind == proto::EventKind::Task as i32 {
        let l = proto::Lifecycle::try_from(e.lifecycle)
            .map(|l| l.as_str_name())
            .unwrap_or("?");
        format!("{} {}", e.task, l.trim_start_matches("LIFECYCLE_"))
    } else {
        proto::EventKind::try_from(e.kind)
            .map(|k| k.as_str_name().to_string())
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_case_streams_events_in_order() {
    let srv = start(config(2, 64, 64)).await;
    let mut c = srv.client().await;
    let wf = register(&mut c, "yawl/WPC3Synchronization.yawl").await;
    let wf_id = wf.workflow_id.clone();
    let mut by_workflow = c
        .watch_case(proto::WatchCaseRequest {
            case_id: 0,
            workflow_id: wf_id.clone(),
            from_start: false,
        })
        .await
        .expect("watch workflow")
        .into_inner();
    let case = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: wf_id.clone(),
            data: HashMap::new(),
        })
        .await
        .expect("create")
        .into_inner();
    let id = case.case_id;
    let mut fired = Vec::new();
    // Fire whatever is enabled (first by name) until the case completes.
    let mut enabled = case.enabled_tasks.clone();
    // Start the first task, then watch from the start: the earlier event comes first.
    c.start_task(task(id, &enabled[0])).await.expect("start");
    let mut by_case = c
        .watch_case(proto::WatchCaseRequest {
            case_id: id,
            workflow_id: String::new(),
            from_start: true,
        })
        .await
        .expect("watch case")
        .into_inner();
    let after = c
        .complete_task(task(id, &enabled[0]))
        .await
        .expect("complete")
        .into_inner();
    fired.push(enabled[0].clone());
    enabled = after.enabled_tasks;
    let mut state = after.state;
    while state == proto::CaseState::Running as i32 {
        let t = enabled.first().expect("something enabled").clone();
        let after = c.fire_task(task(id, &t)).await.expect("fire").into_inner();
        fired.push(t);
        enabled = after.enabled_tasks;
        state = after.state;
    }
    assert_eq!(state, proto::CaseState::Complete as i32);
    let mut expected = Vec::new();
    for t in &fired {
        expected.push(format!("{t} START"));
        expected.push(format!("{t} COMPLETE"));
    }
    expected.push("EVENT_KIND_CASE_COMPLETED".to_string());
    let got: Vec<String> = collect_events(&mut by_case, expected.len())
        .await
        .iter()
        .map(lc)
        .collect();
    assert_eq!(got, expected);
    // The single-case stream ends after the case completed.
    assert!(tokio::time::timeout(Duration::from_secs(5), by_case.next())
        .await
        .expect("ends")
        .is_none());
    // The workflow watcher saw the creation, then the same events, in order, with names.
    let all = collect_events(&mut by_workflow, expected.len() + 1).await;
    assert_eq!(lc(&all[0]), "EVENT_KIND_CASE_CREATED");
    assert_eq!(all[1..].iter().map(lc).collect::<Vec<_>>(), expected);
    assert!(all
        .iter()
        .all(|e| e.case_id == id && e.workflow_id == wf_id && e.lagged == 0));
    assert_eq!(
        all.last().map(|e| e.marking.clone()),
        Some(vec!["OutputCondition".to_string()])
    );
    // Watching a finished case from the start replays its history, then ends.
    let mut replay = c
        .watch_case(proto::WatchCaseRequest {
            case_id: id,
            workflow_id: String::new(),
            from_start: true,
        })
        .await
        .expect("watch finished case")
        .into_inner();
    let mut replayed = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(5), replay.next())
        .await
        .expect("ends")
    {
        replayed.push(lc(&e.expect("event")));
    }
    assert_eq!(replayed, expected[..expected.len() - 1]);
    // Watching an unknown case or workflow is NOT_FOUND.
    let r = c
        .watch_case(proto::WatchCaseRequest {
            case_id: 999_999,
            ..Default::default()
        })
        .await;
    expect_code(r.map(|_| ()), Code::NotFound, "999999");
    let r = c
        .watch_case(proto::WatchCaseRequest {
            case_id: 0,
            workflow_id: "nope".into(),
            from_start: false,
        })
        .await;
    expect_code(r.map(|_| ()), Code::NotFound, "'nope'");
    srv.shutdown().await;
}

fn ev_create(wf: &str) -> proto::Event {
    proto::Event {
        op: proto::EventOp::CreateCase as i32,
        workflow_id: wf.into(),
        ..Default::default()
    }
}

fn ev_task(op: proto::EventOp, case_id: u64, t: &str) -> proto::Event {
    proto::Event {
        op: op as i32,
        case_id,
        task: Some(proto::event::Task::TaskName(t.into())),
        ..Default::default()
    }
}

fn ev_index(op: proto::EventOp, case_id: u64, t: u32) -> proto::Event {
    proto::Event {
        op: op as i32,
        case_id,
        task: Some(proto::event::Task::TaskIndex(t)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_stream_answers_each_event_in_order() {
    use proto::EventOp::{CancelCase, Fire, Start};
    let srv = start(config(2, 4096, 64)).await;
    let mut c = srv.client().await;
    register(&mut c, "yawl/WPC1Sequence.yawl").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::SubmitEventsRequest>(16);
    let mut responses = c
        .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("bulk")
        .into_inner();

    // Batch 1: create 100 cases.
    let creates = (0..100).map(|_| ev_create("WP1Sequence")).collect();
    tx.send(proto::SubmitEventsRequest { events: creates })
        .await
        .expect("send");
    let r1 = responses.next().await.expect("response").expect("ok");
    assert_eq!(r1.results.len(), 100);
    assert!(
        r1.results.iter().all(|r| r.code == 0),
        "{:?}",
        r1.results.first()
    );
    let ids: Vec<u64> = r1.results.iter().map(|r| r.case_id).collect();
    let mut uniq = ids.clone();
    uniq.sort_unstable();
    uniq.dedup();
    assert_eq!(uniq.len(), 100);

    // Batch 2: per case A then B (by name and by index), mixed with failures, in order.
    let mut events = Vec::new();
    for &id in &ids {
        events.push(ev_task(Fire, id, "A"));
        events.push(ev_index(Fire, id, 1));
    }
    events.push(ev_task(Fire, ids[0], "A")); // case complete: FAILED_PRECONDITION
    events.push(ev_task(Fire, 987_654, "A")); // unknown case: NOT_FOUND
    events.push(ev_task(Fire, ids[1], "Zed")); // unknown task: NOT_FOUND
    events.push(ev_create("nope")); // unknown workflow: NOT_FOUND
    events.push(proto::Event {
        op: 99,
        case_id: ids[2],
        ..Default::default()
    }); // INVALID_ARGUMENT
    let n = events.len();
    tx.send(proto::SubmitEventsRequest { events })
        .await
        .expect("send");
    // Batch 3, pipelined before reading batch 2's answer.
    let created = (0..3).map(|_| ev_create("WP1Sequence")).collect();
    tx.send(proto::SubmitEventsRequest { events: created })
        .await
        .expect("send");
    let r2 = responses.next().await.expect("response").expect("ok");
    assert_eq!(r2.results.len(), n);
    for (i, r) in r2.results[..200].iter().enumerate() {
        assert_eq!(r.code, 0, "event {i}: {}", r.message);
        assert_eq!(r.case_id, ids[i / 2]);
        assert_eq!(r.case_seq, (i % 2) as u64 + 1);
    }
    assert!(r2.results[..200]
        .iter()
        .skip(1)
        .step_by(2)
        .all(|r| r.state == proto::CaseState::Complete as i32));
    let tail: Vec<(i32, &str)> = r2.results[200..]
        .iter()
        .map(|r| (r.code, r.message.as_str()))
        .collect();
    assert_eq!(tail[0].0, Code::FailedPrecondition as i32, "{}", tail[0].1);
    assert_eq!(tail[1].0, Code::NotFound as i32);
    assert!(tail[1].1.contains("987654"));
    assert_eq!(tail[2].0, Code::NotFound as i32);
    assert!(tail[2].1.contains("'Zed'"));
    assert_eq!(tail[3].0, Code::NotFound as i32);
    assert!(tail[3].1.contains("'nope'"));
    assert_eq!(tail[4].0, Code::InvalidArgument as i32);
    let r3 = responses.next().await.expect("response").expect("ok");
    assert_eq!(r3.results.len(), 3);
    let fresh = r3.results[0].case_id;

    // Same case twice in one batch applies in order; a cancel in between is respected.
    let events = vec![
        ev_task(Start, fresh, "A"),
        ev_task(Fire, fresh, "A"),
        ev_index(CancelCase, fresh, 0),
    ];
    tx.send(proto::SubmitEventsRequest { events })
        .await
        .expect("send");
    let r4 = responses.next().await.expect("response").expect("ok");
    let codes: Vec<i32> = r4.results.iter().map(|r| r.code).collect();
    assert_eq!(codes, [0, Code::FailedPrecondition as i32, 0]);
    assert_eq!(r4.results[2].state, proto::CaseState::Cancelled as i32);
    drop(tx);
    assert!(responses.next().await.is_none());

    // The mirror agrees with the bulk results.
    let last = c
        .get_case(proto::GetCaseRequest { case_id: ids[99] })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(last.state, proto::CaseState::Complete as i32);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_is_resource_exhausted() {
    let srv = start(config(1, 4, 64)).await;
    let mut c = srv.client().await;
    register(&mut c, "yawl/WPC1Sequence.yawl").await;
    // Case capacity: 4 running cases fill it; the 5th is refused until one finishes.
    let mut ids = Vec::new();
    for _ in 0..4 {
        let r = c
            .create_case(proto::CreateCaseRequest {
                workflow_id: "WP1Sequence".into(),
                data: HashMap::new(),
            })
            .await
            .expect("create");
        ids.push(r.into_inner().case_id);
    }
    let r = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "WP1Sequence".into(),
            data: HashMap::new(),
        })
        .await;
    expect_code(r, Code::ResourceExhausted, "case capacity");
    c.fire_task(task(ids[0], "A")).await.expect("fire");
    c.fire_task(task(ids[0], "B")).await.expect("fire");
    // The finished case is evicted for the new one; its id is then unknown, never reused.
    let r = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "WP1Sequence".into(),
            data: HashMap::new(),
        })
        .await
        .expect("create after a case finished")
        .into_inner();
    assert!(!ids.contains(&r.case_id));
    expect_code(
        c.get_case(proto::GetCaseRequest { case_id: ids[0] }).await,
        Code::NotFound,
        "unknown case",
    );

    // Ring full: hold the worker, flood it from many bulk streams, then release it.
    srv.running.engine.hold_workers(true);
    let mut streams = Vec::new();
    for _ in 0..24 {
        let mut c = srv.client().await;
        let id = ids[1];
        streams.push(tokio::spawn(async move {
            let batches = (0..60).map(move |_| proto::SubmitEventsRequest {
                events: vec![ev_index(proto::EventOp::Start, id, 1)],
            });
            let mut resp = c
                .submit_events(tokio_stream::iter(batches))
                .await
                .expect("bulk")
                .into_inner();
            let mut codes = Vec::new();
            while let Some(r) = resp.next().await {
                codes.extend(r.expect("ok").results.into_iter().map(|r| r.code));
            }
            codes
        }));
    }
    // Wait until the ring is full; then a unary call is refused too, at once.
    let stats = srv.running.engine.worker_stats();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats[0].in_full.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "ring never filled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = tokio::time::timeout(Duration::from_secs(5), c.fire_task(task(ids[2], "A")))
        .await
        .expect("refused at once, not blocked");
    expect_code(r, Code::ResourceExhausted, "saturated");
    srv.running.engine.hold_workers(false);
    let mut exhausted = 0;
    let mut answered = 0;
    for s in streams {
        for code in s.await.expect("join") {
            answered += 1;
            if code == Code::ResourceExhausted as i32 {
                exhausted += 1;
            }
        }
    }
    assert_eq!(answered, 24 * 60);
    assert!(
        exhausted > 0,
        "no RESOURCE_EXHAUSTED among {answered} answers"
    );
    // After the flood the server works normally.
    c.fire_task(task(ids[3], "A"))
        .await
        .expect("fire after release");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_never_stalls_the_kernel() {
    let srv = start(config(1, 1 << 14, 16)).await;
    let mut c = srv.client().await;
    let wf = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: model("yawl/WPC10AbitraryCycles.yawl"),
            format: proto::ModelFormat::Yawl as i32,
            workflow_id: "cycles".into(),
        })
        .await
        .expect("register")
        .into_inner()
        .workflow
        .expect("workflow");
    // A watcher that never reads.
    let mut stalled = c
        .watch_case(proto::WatchCaseRequest {
            case_id: 0,
            workflow_id: wf.workflow_id.clone(),
            from_start: false,
        })
        .await
        .expect("watch")
        .into_inner();
    // Many small bulk batches, each a broadcast batch: far more than the watcher's buffers.
    const N: usize = 6000;
    let creates: Vec<_> = (0..N).map(|_| ev_create(&wf.workflow_id)).collect();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut resp = c
        .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("bulk")
        .into_inner();
    let start = Instant::now();
    let sender = tokio::spawn(async move {
        for chunk in creates.chunks(3) {
            if tx
                .send(proto::SubmitEventsRequest {
                    events: chunk.to_vec(),
                })
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut ok = 0;
    while let Some(r) = resp.next().await {
        ok += r
            .expect("ok")
            .results
            .iter()
            .filter(|r| r.code == 0)
            .count();
        if ok == N {
            break;
        }
    }
    sender.await.expect("sender");
    assert_eq!(ok, N);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "kernel stalled: {:?}",
        start.elapsed()
    );
    // Now read: the watcher lost events and is told how many.
    let mut lagged = 0;
    let mut seen = 0u64;
    while let Ok(Some(Ok(e))) =
        tokio::time::timeout(Duration::from_millis(500), stalled.next()).await
    {
        seen += 1;
        lagged += e.lagged;
    }
    assert!(lagged > 0, "watcher saw {seen} events and no lag");
    assert_eq!(
        seen + lagged,
        N as u64,
        "every event is either delivered or counted as lost"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_xes_one_trace_per_case() {
    let srv = start(config(2, 64, 64)).await;
    let mut c = srv.client().await;
    register(&mut c, "yawl/WPC1Sequence.yawl").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = c
            .create_case(proto::CreateCaseRequest {
                workflow_id: "WP1Sequence".into(),
                data: HashMap::new(),
            })
            .await
            .expect("create")
            .into_inner()
            .case_id;
        c.fire_task(task(id, "A")).await.expect("fire");
        ids.push(id);
    }
    c.start_task(task(ids[2], "B")).await.expect("start");
    c.cancel_case(proto::CancelCaseRequest { case_id: ids[2] })
        .await
        .expect("cancel");
    let one = c
        .export_case_xes(proto::ExportCaseXesRequest {
            case_id: ids[0],
            workflow_id: String::new(),
        })
        .await
        .expect("export")
        .into_inner();
    assert_eq!((one.traces, one.events), (1, 2));
    let all = c
        .export_case_xes(proto::ExportCaseXesRequest {
            case_id: 0,
            workflow_id: "WP1Sequence".into(),
        })
        .await
        .expect("export")
        .into_inner();
    assert_eq!(all.traces, 3);
    assert_eq!(all.dropped_events, 0);
    assert_eq!(all.events, 2 + 2 + 4);
    let xml = String::from_utf8(all.xes).expect("utf8");
    for needle in [
        "concept.xesext",
        "lifecycle.xesext",
        "time.xesext",
        "<global scope=\"event\">",
        "key=\"lifecycle:transition\" value=\"pi_abort\"",
        "key=\"concept:instance\"",
        "key=\"time:timestamp\"",
    ] {
        assert!(xml.contains(needle), "missing {needle}");
    }
    assert_eq!(xml.matches("<trace>").count(), 3);
    let r = c
        .export_case_xes(proto::ExportCaseXesRequest {
            case_id: 777,
            workflow_id: String::new(),
        })
        .await;
    expect_code(r, Code::NotFound, "777");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_graceful_shutdown() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let srv = start(config(2, 64, 64)).await;
    let channel = Channel::from_shared(srv.url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "knhk.v1.Knhk"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(
            r.status,
            ServingStatus::Serving as i32,
            "service '{service}'"
        );
    }

    // Reflection lists every service.
    let mut refl = ServerReflectionClient::new(channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .expect("reflect")
        .into_inner();
    let Some(Ok(first)) = resp.next().await else {
        panic!("no reflection answer")
    };
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("unexpected reflection answer")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for n in ["knhk.v1.Knhk", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|x| x == n), "{n} not in {names:?}");
    }

    // Open streams before shutdown: a health watch, a case watch and a bulk stream.
    let mut c = KnhkClient::new(channel.clone());
    register(&mut c, "yawl/WPC1Sequence.yawl").await;
    let case = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "WP1Sequence".into(),
            data: HashMap::new(),
        })
        .await
        .expect("create")
        .into_inner();
    let mut hw = health
        .watch(HealthCheckRequest {
            service: "knhk.v1.Knhk".into(),
        })
        .await
        .expect("watch health")
        .into_inner();
    let first = hw.next().await.expect("status").expect("ok");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let mut watch = c
        .watch_case(proto::WatchCaseRequest {
            case_id: case.case_id,
            workflow_id: String::new(),
            from_start: false,
        })
        .await
        .expect("watch")
        .into_inner();
    let (btx, brx) = tokio::sync::mpsc::channel(4);
    let mut bulk = c
        .submit_events(tokio_stream::wrappers::ReceiverStream::new(brx))
        .await
        .expect("bulk")
        .into_inner();
    btx.send(proto::SubmitEventsRequest {
        events: vec![ev_task(proto::EventOp::Fire, case.case_id, "A")],
    })
    .await
    .expect("send");
    let r = bulk.next().await.expect("answer").expect("ok");
    assert_eq!(r.results[0].code, 0);

    let stats = srv.running.engine.worker_stats();
    let engine = srv.running.engine.clone();
    let Server { stop, done, .. } = srv;
    let started = Instant::now();
    if let Some(s) = stop {
        let _ = s.send(());
    }
    // Health flips to NOT_SERVING and new work is refused while draining.
    let flipped = hw.next().await.expect("status").expect("ok");
    assert_eq!(flipped.status, ServingStatus::NotServing as i32);
    let r = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "WP1Sequence".into(),
            data: HashMap::new(),
        })
        .await;
    let s = r.expect_err("refused while draining");
    assert!(matches!(s.code(), Code::Unavailable), "{s:?}");
    // Open streams finish: the watch sees the end, the bulk stream is closed by the server.
    let mut watch_ended = false;
    while let Ok(next) = tokio::time::timeout(Duration::from_secs(5), watch.next()).await {
        if !matches!(next, Some(Ok(_))) {
            watch_ended = true;
            break;
        }
    }
    assert!(watch_ended, "watch stream still open");
    let end = tokio::time::timeout(Duration::from_secs(5), bulk.next())
        .await
        .expect("bulk ends");
    assert!(!matches!(end, Some(Ok(_))));
    drop(btx);
    drop(hw);
    drop(health);
    drop(refl);
    drop(c);
    drop(channel);
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("serve returns within the deadline")
        .expect("join")
        .expect("serve ok");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    // Workers stopped: heartbeats no longer move.
    let beat = stats[0]
        .heartbeat
        .load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        beat,
        stats[0]
            .heartbeat
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(engine.is_draining());
    let _ = Arc::strong_count(&engine);
}

/// Runs cases of the corpus's PNML models to completion (a deterministic pseudo-random walk
/// over enabled tasks, mixing FireTask with StartTask + CompleteTask), exports each workflow's
/// cases as XES, checks the documents, and, when pm4py is installed (`KNHK_PM4PY_PYTHON` or
/// `python3`), replays them on the same PNML files with token-based replay: fitness must be 1.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xes_export_replays_with_fitness_one() {
    let srv = start(config(2, 1024, 64)).await;
    let mut c = srv.client().await;
    let dir = std::env::temp_dir().join(format!("knhk-xes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut pairs = Vec::new();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    // The WoPeD XOR file is run and exported but not replayed: its alternative source places
    // are a WoPeD operator that pm4py reads as a plain net with both sources marked, a model
    // no log of it can fit.
    for (rel, id, replay) in [
        ("pnml/running-example.pnml", "running-example", true),
        ("pnml/woped-AndSplitJoin.pnml", "and-split-join", true),
        ("pnml/woped-XorSplitJoin.pnml", "xor-split-join", false),
    ] {
        c.register_workflow(proto::RegisterWorkflowRequest {
            model: model(rel),
            format: proto::ModelFormat::Pnml as i32,
            workflow_id: id.into(),
        })
        .await
        .expect("register");
        for _ in 0..12 {
            let mut case = c
                .create_case(proto::CreateCaseRequest {
                    workflow_id: id.into(),
                    data: HashMap::new(),
                })
                .await
                .expect("create")
                .into_inner();
            let mut steps = 0;
            while case.state == proto::CaseState::Running as i32 {
                steps += 1;
                assert!(steps < 200, "{id}: case {} does not finish", case.case_id);
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let n = case.enabled_tasks.len();
                assert!(n > 0, "{id}: case {} has nothing enabled", case.case_id);
                let t = case.enabled_tasks[(rng % n as u64) as usize].clone();
                case = if rng & 0x100 == 0 {
                    c.fire_task(task(case.case_id, &t))
                        .await
                        .expect("fire")
                        .into_inner()
                } else {
                    c.start_task(task(case.case_id, &t)).await.expect("start");
                    c.complete_task(task(case.case_id, &t))
                        .await
                        .expect("complete")
                        .into_inner()
                };
            }
            assert_eq!(case.state, proto::CaseState::Complete as i32, "{id}");
        }
        let doc = c
            .export_case_xes(proto::ExportCaseXesRequest {
                case_id: 0,
                workflow_id: id.into(),
            })
            .await
            .expect("export")
            .into_inner();
        assert_eq!(doc.traces, 12);
        let path = dir.join(format!("{id}.xes"));
        std::fs::write(&path, &doc.xes).expect("write xes");
        if replay {
            pairs.push((corpus(rel), path));
        }
    }
    srv.shutdown().await;

    let python = std::env::var("KNHK_PM4PY_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_pm4py = std::process::Command::new(&python)
        .args(["-c", "import pm4py"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_pm4py {
        // CI installs pm4py (.ci/run): there a missing tool is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but pm4py is not installed for {python} (set KNHK_PM4PY_PYTHON)"
        );
        eprintln!(
            "pm4py not installed for {python}: XES replay check skipped (set KNHK_PM4PY_PYTHON)"
        );
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pm4py_fitness.py");
    let mut cmd = std::process::Command::new(&python);
    cmd.arg(script);
    for (m, l) in &pairs {
        cmd.arg(m).arg(l);
    }
    let out = cmd.output().expect("run pm4py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "pm4py replay did not fit:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
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
        let _ = c.get_case(proto::GetCaseRequest { case_id: r }).await;
        let _ = c
            .register_workflow(proto::RegisterWorkflowRequest {
                model: (0..(r % 64)).map(|i| (r >> (i % 56)) as u8).collect(),
                format: (r % 6) as i32,
                workflow_id: String::new(),
            })
            .await;
        let _ = c
            .list_cases(proto::ListCasesRequest {
                workflow_id: String::new(),
                state: (r % 7) as i32,
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
