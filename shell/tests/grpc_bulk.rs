//! SubmitEvents: one answer per event in order, and back-pressure as RESOURCE_EXHAUSTED.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use knhk_shell::proto::{self};
use tokio_stream::StreamExt;
use tonic::Code;

mod support;
use support::grpc::*;

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
        .get_case(proto::GetCaseRequest {
            case_id: ids[99],
            ..Default::default()
        })
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
                ..Default::default()
            })
            .await
            .expect("create");
        ids.push(r.into_inner().case_id);
    }
    let r = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "WP1Sequence".into(),
            data: HashMap::new(),
            ..Default::default()
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
            ..Default::default()
        })
        .await
        .expect("create after a case finished")
        .into_inner();
    assert!(!ids.contains(&r.case_id));
    expect_code(
        c.get_case(proto::GetCaseRequest {
            case_id: ids[0],
            ..Default::default()
        })
        .await,
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
