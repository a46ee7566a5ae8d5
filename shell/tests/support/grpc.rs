//! An in-process knhk server on loopback with a real tonic client, and request builders.
#![allow(dead_code)]

use std::time::Duration;

use knhk_shell::engine::EngineConfig;
use knhk_shell::proto::knhk_client::KnhkClient;
use knhk_shell::proto::{self, value::Kind, Value};
use knhk_shell::server::{self, Running, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic::Code;

pub use super::Client;

pub struct Server {
    pub url: String,
    pub running: Running,
    pub stop: Option<oneshot::Sender<()>>,
    pub done: tokio::task::JoinHandle<Result<(), String>>,
}

// Not every test file uses both.
#[allow(unused_imports)]
pub use super::{corpus as model, corpus_path as corpus};

pub fn config(workers: usize, capacity: usize, watch_buffer: usize) -> ServerConfig {
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
        tls: None,
        auth: None,
        ..ServerConfig::default()
    }
}

pub async fn start(cfg: ServerConfig) -> Server {
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
    pub async fn client(&self) -> Client {
        KnhkClient::connect(self.url.clone())
            .await
            .expect("connect")
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(10), self.done).await;
        r.expect("shutdown within deadline")
            .expect("join")
            .expect("serve ok");
    }
}

/// Registers a corpus model with `manual_silent_tasks`: the pattern files' tasks have no
/// decomposition (empty routing tasks, which run themselves by default), and these tests drive
/// every task themselves (tests/grpc_silent_tasks.rs covers the default).
pub async fn register(c: &mut Client, rel: &str) -> proto::Workflow {
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: model(rel),
        format: 0,
        workflow_id: String::new(),
        manual_silent_tasks: true,
        ..Default::default()
    })
    .await
    .expect("register")
    .into_inner()
    .workflow
    .expect("workflow")
}

pub fn task(case_id: u64, task: &str) -> proto::TaskRequest {
    proto::TaskRequest {
        case_id,
        task: task.into(),
        ..Default::default()
    }
}

pub fn int(i: i64) -> Value {
    Value {
        kind: Some(Kind::Int(i)),
    }
}

pub fn expect_code<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, needle: &str) {
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

pub async fn collect_events(
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

pub fn lc(e: &proto::WatchEvent) -> String {
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

pub fn ev_create(wf: &str) -> proto::Event {
    proto::Event {
        op: proto::EventOp::CreateCase as i32,
        workflow_id: wf.into(),
        ..Default::default()
    }
}

pub fn ev_task(op: proto::EventOp, case_id: u64, t: &str) -> proto::Event {
    proto::Event {
        op: op as i32,
        case_id,
        task: Some(proto::event::Task::TaskName(t.into())),
        ..Default::default()
    }
}

pub fn ev_index(op: proto::EventOp, case_id: u64, t: u32) -> proto::Event {
    proto::Event {
        op: op as i32,
        case_id,
        task: Some(proto::event::Task::TaskIndex(t)),
        ..Default::default()
    }
}
