//! gRPC health, reflection and graceful shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use knhk_shell::proto::knhk_client::KnhkClient;
use knhk_shell::proto::{self};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

mod support;
use support::grpc::*;

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
            ..Default::default()
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
            ..Default::default()
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
