//! Resource limits that hold (issue 12, item 5): open watch streams are capped
//! (`--max-watchers`: RESOURCE_EXHAUSTED past it, room again once one closes) and so are open
//! connections (`--max-connections`: a connection past it is closed at once and the refusal
//! logged; room again once one closes).

use std::time::{Duration, Instant};

use knhk_shell::proto;
use knhk_shell::proto::knhk_client::KnhkClient;
use knhk_shell::server::ServerConfig;
use tonic::Code;

mod support;
use support::grpc::{config, start};
use support::{scratch, spawn};

fn watch_all() -> proto::WatchCaseRequest {
    proto::WatchCaseRequest {
        case_id: 0,
        workflow_id: String::new(),
        from_start: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_are_capped() {
    let srv = start(ServerConfig {
        max_watchers: 2,
        ..config(1, 64, 64)
    })
    .await;
    let mut c = srv.client().await;
    let first = c.watch_case(watch_all()).await.expect("first watch");
    let _second = c.watch_case(watch_all()).await.expect("second watch");
    let e = c
        .watch_case(watch_all())
        .await
        .expect_err("a third watch is over the cap");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(e.message().contains("--max-watchers"), "{}", e.message());
    // Closing one gives its place back (once its forwarding task has ended).
    drop(first);
    let t0 = Instant::now();
    loop {
        match c.watch_case(watch_all()).await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted);
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "the place never came back"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_and_logged() {
    let dir = scratch("conn-cap");
    let mut p = spawn(
        &dir.join("data"),
        &dir.join("serve.log"),
        &["--max-connections", "2"],
        None,
    );
    // ready() holds one connection of its own while it polls: take it as the first.
    let mut a = p.ready().await.expect("server");
    let mut b = KnhkClient::connect(p.url.clone()).await.expect("second");
    b.list_workflows(proto::ListWorkflowsRequest {})
        .await
        .expect("second connection served");
    // A third connection is accepted and closed: its call fails.
    let third = async {
        let mut c = KnhkClient::connect(p.url.clone()).await?;
        c.list_workflows(proto::ListWorkflowsRequest {})
            .await
            .map_err(|e| e.into())
            .map(|_| ())
    };
    let r: Result<(), Box<dyn std::error::Error>> = third.await;
    assert!(r.is_err(), "a third connection was served");
    assert!(
        p.log_text()
            .contains("connection refused: the open-connection cap is reached"),
        "the refusal is logged: {}",
        p.log_text()
    );
    // The first two are still served; closing one makes room.
    a.list_workflows(proto::ListWorkflowsRequest {})
        .await
        .expect("first still served");
    drop(b);
    let t0 = Instant::now();
    loop {
        let ok = match KnhkClient::connect(p.url.clone()).await {
            Ok(mut c) => c
                .list_workflows(proto::ListWorkflowsRequest {})
                .await
                .is_ok(),
            Err(_) => false,
        };
        if ok {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no room after a close"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_messages_are_refused_except_models_up_to_their_own_limit() {
    let srv = start(ServerConfig {
        max_message_bytes: 64 << 10,
        max_model_bytes: 8 << 20,
        ..config(1, 64, 64)
    })
    .await;
    let mut c = srv
        .client()
        .await
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    // 100 KiB in an ordinary call: over the 64 KiB message limit.
    let e = c
        .get_workflow(proto::GetWorkflowRequest {
            workflow_id: "w".repeat(100 << 10),
        })
        .await
        .expect_err("oversize");
    assert_eq!(e.code(), Code::OutOfRange, "{e}");
    assert!(e.message().contains("too large"), "{}", e.message());
    // A 1 MiB model is read (and refused for what it is, not for its size).
    let mut model = b"{\"name\":\"x\",".to_vec();
    model.extend(std::iter::repeat_n(b' ', 1 << 20));
    model.extend_from_slice(b"\"id\":\"Net\"}");
    let e = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model,
            format: proto::ModelFormat::Json as i32,
            ..Default::default()
        })
        .await
        .expect_err("not a valid model");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    // Past the model limit: refused for its size.
    let e = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: vec![b' '; 9 << 20],
            ..Default::default()
        })
        .await
        .expect_err("oversize model");
    assert_eq!(e.code(), Code::OutOfRange, "{e}");
    // The server goes on serving.
    c.list_workflows(proto::ListWorkflowsRequest {})
        .await
        .expect("still serving");
    srv.shutdown().await;
}
