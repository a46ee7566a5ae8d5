//! Observability against real clients: `/metrics` through `promtool check metrics` with counters
//! that move by exactly the events submitted; the probes (and gRPC health) flipping as the
//! server starts, saturates, wedges and drains; spans reaching an OTLP/gRPC receiver (a small
//! tonic server implementing the OTLP trace service) from a `knhk serve` process, and serving
//! unharmed when that collector goes away.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use knhk_shell::admin::{ObserveConfig, Observer};
use knhk_shell::engine::EngineConfig;
use knhk_shell::proto::knhk_client::KnhkClient;
use knhk_shell::proto::{self, EventOp};
use knhk_shell::server::{self, Running, ServerConfig};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

mod support;
use support::free_port;
use support::grpc::{ev_create, ev_task, model};

// ------------------------------------------------------------------------- a tiny HTTP client

struct Reply {
    code: u16,
    headers: String,
    body: String,
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`).
async fn http(addr: SocketAddr, method: &str, path: &str, accept: Option<&str>) -> Reply {
    let mut s = TcpStream::connect(addr).await.expect("connect http");
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("http head");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    Reply {
        code,
        headers: head.to_lowercase(),
        body: body.to_string(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    http(addr, "GET", path, None).await
}

/// Polls `path` until it answers `code` (or panics after `within`).
async fn wait_code(addr: SocketAddr, path: &str, code: u16, within: Duration) -> Reply {
    let t0 = Instant::now();
    loop {
        let r = get(addr, path).await;
        if r.code == code {
            return r;
        }
        assert!(
            t0.elapsed() < within,
            "{path} still {} ({}) after {within:?}, expected {code}",
            r.code,
            r.body.trim()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one sample line (`name{labels} value`) in a text exposition; 0 when absent.
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().ok())?
        })
        .unwrap_or(0.0)
}

/// Runs `promtool check metrics` on `body`. Required in CI (.ci/run installs it); skipped with
/// a note elsewhere when it is missing.
fn promtool(body: &str) {
    use std::io::Write;
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is required in CI: {e}"
            );
            eprintln!("promtool not installed ({e}): skipping the lint");
            return;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- body ---\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn grpc_health(url: &str) -> ServingStatus {
    grpc_health_of(url, "knhk.v1.Knhk").await
}

async fn grpc_health_of(url: &str, service: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("health connect");
    let mut h = HealthClient::new(channel);
    let r = h
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health check")
        .into_inner();
    ServingStatus::try_from(r.status).unwrap_or(ServingStatus::Unknown)
}

async fn wait_grpc_health(url: &str, want: ServingStatus, within: Duration) {
    let t0 = Instant::now();
    while grpc_health(url).await != want {
        assert!(t0.elapsed() < within, "gRPC health never became {want:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------- metrics and probes

/// Serves `cfg` on `listener`, observed by `observer`, in a task: the stop switch, the task,
/// and what the server reported once ready.
async fn serve_in_task(
    observer: &Arc<Observer>,
    listener: TcpListener,
    cfg: ServerConfig,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), String>>,
    Running,
) {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = oneshot::channel::<Running>();
    let obs = observer.clone();
    let done = tokio::spawn(async move {
        server::serve_observed(
            listener,
            cfg,
            None,
            None,
            obs,
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
    (stop_tx, done, running)
}

/// A full engine (every slot holds a running case) refuses new cases and says so on every
/// channel, while it stays ready: its running cases must still be served, or they could never
/// finish and free a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_is_visible_and_a_full_engine_refuses_new_cases_but_stays_ready() {
    let observer = Observer::new(ObserveConfig {
        http_addr: Some("127.0.0.1:0".parse().expect("addr")),
        ..ObserveConfig::default()
    });
    let http_addr = observer
        .start_http()
        .await
        .expect("bind http")
        .expect("enabled");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let cfg = ServerConfig {
        engine: EngineConfig {
            workers: 1,
            case_capacity: 4,
            pin: false,
            ..EngineConfig::default()
        },
        ..ServerConfig::default()
    };
    let (stop_tx, done, _running) = serve_in_task(&observer, listener, cfg).await;
    let new_cases = "knhk.v1.Knhk.CreateCase";
    wait_code(http_addr, "/health/capacity", 200, Duration::from_secs(5)).await;
    let t0 = Instant::now();
    while grpc_health_of(&url, new_cases).await != ServingStatus::Serving {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "new cases never SERVING"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = get(http_addr, "/metrics").await.body;
    assert_eq!(sample(&metrics, "knhk_case_slots"), 4.0, "{metrics}");
    assert_eq!(sample(&metrics, "knhk_case_slots_free"), 4.0);
    assert_eq!(sample(&metrics, "knhk_case_slots_used"), 0.0);

    let mut c = KnhkClient::connect(url.clone()).await.expect("connect");
    let wf = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: model("yawl/WPC1Sequence.yawl"),
            format: 0,
            workflow_id: "seq".into(),
            ..Default::default()
        })
        .await
        .expect("register");
    drop(wf);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = c
            .create_case(proto::CreateCaseRequest {
                workflow_id: "seq".into(),
                data: HashMap::new(),
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner()
            .case_id;
        ids.push(id);
    }
    c.fire_task(proto::TaskRequest {
        case_id: ids[0],
        task: "A".into(),
        ..Default::default()
    })
    .await
    .expect("fire");
    let refused = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "seq".into(),
            data: HashMap::new(),
            ..Default::default()
        })
        .await
        .expect_err("a fifth case has no slot");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");

    // Full: the capacity probe and its gRPC health name say so; readiness does not.
    let full = wait_code(http_addr, "/health/capacity", 503, Duration::from_secs(5)).await;
    assert!(full.body.contains("full"), "{}", full.body);
    assert_eq!(get(http_addr, "/health/ready").await.code, 200);
    assert_eq!(grpc_health(&url).await, ServingStatus::Serving);
    let t0 = Instant::now();
    while grpc_health_of(&url, new_cases).await != ServingStatus::NotServing {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "new cases still SERVING"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let h: serde_json::Value =
        serde_json::from_str(&get(http_addr, "/health").await.body).expect("health json");
    assert_eq!(h["checks"]["capacity"]["status"], "degraded", "{h}");
    let metrics = get(http_addr, "/metrics").await.body;
    assert_eq!(sample(&metrics, "knhk_case_slots_used"), 4.0, "{metrics}");
    assert_eq!(sample(&metrics, "knhk_case_slots_free"), 0.0);
    assert_eq!(sample(&metrics, "knhk_case_slots_evictable"), 0.0);
    // Case 0's fire recorded start and complete of A.
    assert_eq!(sample(&metrics, "knhk_history_events"), 2.0, "{metrics}");
    assert!(sample(&metrics, "knhk_history_bytes") >= 32.0);

    // A running case served while full finishes: its slot becomes evictable, new cases are
    // accepted again.
    c.cancel_case(proto::CancelCaseRequest { case_id: ids[1] })
        .await
        .expect("cancel while full");
    wait_code(http_addr, "/health/capacity", 200, Duration::from_secs(5)).await;
    let metrics = get(http_addr, "/metrics").await.body;
    assert_eq!(
        sample(&metrics, "knhk_case_slots_evictable"),
        1.0,
        "{metrics}"
    );
    c.create_case(proto::CreateCaseRequest {
        workflow_id: "seq".into(),
        data: HashMap::new(),
        ..Default::default()
    })
    .await
    .expect("a new case evicts the cancelled one");
    let _ = stop_tx.send(());
    let _ = done.await;
}

/// A case capacity the machine cannot hold is refused at start, before it is allocated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_capacity_beyond_memory_is_refused_at_start() {
    let dir = support::scratch("capacity-refused");
    // 64 workers of 2^26 slots: hundreds of GB.
    let out = Command::new(support::bin())
        .args(["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "off"])
        .args([
            "--durability",
            "off",
            "--workers",
            "64",
            "--case-capacity",
            "4294967296",
        ])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("run knhk serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must not start: {err}");
    assert!(
        err.contains("needs") && err.contains("lower the case capacity"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_probes_follow_the_server() {
    let observer = Observer::new(ObserveConfig {
        http_addr: Some("127.0.0.1:0".parse().expect("addr")),
        heartbeat_timeout: Duration::from_millis(400),
        ..ObserveConfig::default()
    });
    let http_addr = observer
        .start_http()
        .await
        .expect("bind http")
        .expect("enabled");

    // Before the engine starts: not started, not ready, alive (nothing can be wedged yet).
    assert_eq!(get(http_addr, "/health/startup").await.code, 503);
    assert_eq!(get(http_addr, "/health/ready").await.code, 503);
    assert_eq!(get(http_addr, "/health/live").await.code, 200);
    let h = get(http_addr, "/health").await;
    assert_eq!(h.code, 503, "{}", h.body);
    assert!(h.body.contains("\"starting\""), "{}", h.body);

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let cfg = ServerConfig {
        engine: EngineConfig {
            workers: 2,
            case_capacity: 4096,
            pin: false,
            ..EngineConfig::default()
        },
        drain_grace: Duration::from_millis(600),
        shutdown_timeout: Duration::from_secs(3),
        ..ServerConfig::default()
    };
    let (stop_tx, done, running) = serve_in_task(&observer, listener, cfg).await;

    // Started: every probe 200, /health healthy, gRPC health SERVING.
    wait_code(http_addr, "/health/startup", 200, Duration::from_secs(5)).await;
    wait_code(http_addr, "/health/ready", 200, Duration::from_secs(5)).await;
    assert_eq!(get(http_addr, "/health/live").await.code, 200);
    let h = get(http_addr, "/health").await;
    assert_eq!(h.code, 200, "{}", h.body);
    let doc: serde_json::Value = serde_json::from_str(&h.body).expect("health json");
    assert_eq!(doc["status"], "healthy", "{doc}");
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc["uptime_seconds"].as_f64().is_some());
    for c in ["server", "workers", "rings", "watch", "state"] {
        assert_eq!(doc["checks"][c]["status"], "healthy", "{c}: {doc}");
        assert!(doc["checks"][c]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()));
    }
    wait_grpc_health(&url, ServingStatus::Serving, Duration::from_secs(5)).await;

    // Unknown paths and wrong methods.
    assert_eq!(get(http_addr, "/nope").await.code, 404);
    assert_eq!(get(http_addr, "/health/nope").await.code, 404);
    for path in [
        "/metrics",
        "/health",
        "/health/live",
        "/health/ready",
        "/health/startup",
    ] {
        assert_eq!(
            http(http_addr, "POST", path, None).await.code,
            405,
            "{path}"
        );
    }

    // Counters move by exactly what was submitted.
    let before = get(http_addr, "/metrics").await;
    assert_eq!(before.code, 200);
    assert!(
        before.headers.contains("text/plain; version=0.0.4"),
        "{}",
        before.headers
    );
    let mut c = KnhkClient::connect(url.clone()).await.expect("connect");
    let wf = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: model("yawl/WPC1Sequence.yawl"),
            format: 0,
            workflow_id: "seq".into(),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .workflow
        .expect("workflow");
    const CASES: usize = 37;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut responses = c
        .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("bulk")
        .into_inner();
    tx.send(proto::SubmitEventsRequest {
        events: (0..CASES).map(|_| ev_create(&wf.workflow_id)).collect(),
    })
    .await
    .expect("send");
    let created = responses.next().await.expect("reply").expect("ok");
    let ids: Vec<u64> = created.results.iter().map(|r| r.case_id).collect();
    assert!(created.results.iter().all(|r| r.code == 0));
    // Fire A then B on every case, plus one refused event (B again on case 0: complete).
    let mut evs: Vec<proto::Event> = ids
        .iter()
        .map(|&id| ev_task(EventOp::Fire, id, "A"))
        .collect();
    tx.send(proto::SubmitEventsRequest {
        events: evs.clone(),
    })
    .await
    .expect("send");
    responses.next().await.expect("reply").expect("ok");
    evs = ids
        .iter()
        .map(|&id| ev_task(EventOp::Fire, id, "B"))
        .collect();
    evs.push(ev_task(EventOp::Fire, ids[0], "B"));
    tx.send(proto::SubmitEventsRequest { events: evs })
        .await
        .expect("send");
    let last = responses.next().await.expect("reply").expect("ok");
    assert_eq!(
        last.results.iter().filter(|r| r.code != 0).count(),
        1,
        "one refused event"
    );
    drop(tx);
    while responses.next().await.is_some() {}
    // A unary call that fails, for the code label.
    let missing = c
        .get_case(proto::GetCaseRequest {
            case_id: 999_999,
            ..Default::default()
        })
        .await;
    assert_eq!(
        missing.expect_err("unknown case").code(),
        tonic::Code::NotFound
    );

    let after = get(http_addr, "/metrics").await;
    promtool(&after.body);
    let delta = |series: &str| sample(&after.body, series) - sample(&before.body, series);
    let n = CASES as f64;
    assert_eq!(
        delta(r#"knhk_events_total{op="create_case",pattern="case",status="ok"}"#),
        n,
        "{}",
        after.body
    );
    assert_eq!(
        delta(r#"knhk_events_total{op="fire",pattern="xor_join+and_split",status="ok"}"#),
        2.0 * n
    );
    assert_eq!(
        delta(
            r#"knhk_events_total{op="fire",pattern="xor_join+and_split",status="case_complete"}"#
        ),
        1.0
    );
    assert_eq!(delta("knhk_cases_created_total"), n);
    assert_eq!(delta("knhk_cases_completed_total"), n);
    assert_eq!(delta("knhk_cases_active"), 0.0);
    assert_eq!(
        delta(
            r#"knhk_grpc_requests_total{service="knhk.v1.Knhk",method="SubmitEvents",code="OK"}"#
        ),
        1.0
    );
    assert_eq!(
        delta(
            r#"knhk_grpc_requests_total{service="knhk.v1.Knhk",method="GetCase",code="NOT_FOUND"}"#
        ),
        1.0
    );
    assert_eq!(
        delta(
            r#"knhk_grpc_request_duration_seconds_count{service="knhk.v1.Knhk",method="RegisterWorkflow",code="OK"}"#
        ),
        1.0
    );
    assert_eq!(sample(&after.body, "knhk_ring_capacity"), 1024.0);
    assert_eq!(
        sample(
            &after.body,
            &format!(
                r#"knhk_build_info{{version="0.1.0",kernel_abi="{}"}}"#,
                knhk_kernel::sys::KNHK_ABI_VERSION
            )
        ),
        1.0
    );
    // Ticks per op: every executed op lands in the histogram once the workers publish (within
    // ~100 ms of going idle).
    let t0 = Instant::now();
    loop {
        let m = get(http_addr, "/metrics").await.body;
        let ops = sample(&m, "knhk_kernel_op_ticks_count");
        if ops >= 3.0 * n + 1.0 {
            assert!(sample(&m, "knhk_kernel_op_ticks_sum") > 0.0);
            assert_eq!(sample(&m, r#"knhk_kernel_op_ticks_bucket{le="+Inf"}"#), ops);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "tick histogram stuck at {ops}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // OpenMetrics when asked for, as prometheus-client wrote it.
    let om = http(
        http_addr,
        "GET",
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    )
    .await;
    assert!(om.headers.contains("application/openmetrics-text"));
    assert!(om.body.ends_with("# EOF\n"));
    assert!(om.body.contains("# TYPE knhk_events counter"));

    // Saturation: held workers fill their input rings; readiness and gRPC health drop.
    running.engine.hold_workers(true);
    let mut pending = Vec::new();
    for _ in 0..1100 {
        pending.push(
            running
                .engine
                .submit_batch(vec![knhk_shell::grpc::convert::event_in(ev_task(
                    EventOp::Fire,
                    ids[1],
                    "A",
                ))]),
        );
    }
    let r = wait_code(http_addr, "/health/ready", 503, Duration::from_secs(5)).await;
    assert!(r.body.contains("saturated"), "{}", r.body);
    assert_eq!(get(http_addr, "/health/live").await.code, 200);
    wait_grpc_health(&url, ServingStatus::NotServing, Duration::from_secs(5)).await;
    let m = get(http_addr, "/metrics").await.body;
    assert!(sample(&m, r#"knhk_unpublished_total{reason="in_ring_full"}"#) > 0.0);
    running.engine.hold_workers(false);
    for p in pending {
        let _ = p.finish(&running.engine).await;
    }
    wait_code(http_addr, "/health/ready", 200, Duration::from_secs(5)).await;
    wait_grpc_health(&url, ServingStatus::Serving, Duration::from_secs(5)).await;

    // Wedge one worker: its heartbeat stops, liveness (and readiness, and gRPC health) fail
    // and name it; unwedged, everything recovers.
    let stats = running.engine.worker_stats();
    stats[1].wedge.store(true, Ordering::SeqCst);
    let r = wait_code(http_addr, "/health/live", 503, Duration::from_secs(5)).await;
    assert!(r.body.contains("worker 1 heartbeat stuck"), "{}", r.body);
    assert_eq!(get(http_addr, "/health/ready").await.code, 503);
    assert_eq!(
        get(http_addr, "/health/startup").await.code,
        200,
        "startup is latched"
    );
    let h = get(http_addr, "/health").await;
    assert_eq!(h.code, 503);
    assert!(h.body.contains("\"unhealthy\""), "{}", h.body);
    wait_grpc_health(&url, ServingStatus::NotServing, Duration::from_secs(5)).await;
    // The gauges come from a sample the server reuses for 100 ms, which may predate the
    // health check that saw the wedge: wait (bounded) for a sample that shows it.
    let t0 = std::time::Instant::now();
    let m = loop {
        let m = get(http_addr, "/metrics").await.body;
        if sample(&m, r#"knhk_worker_heartbeat_age_seconds{worker="1"}"#) >= 0.4
            || t0.elapsed() > Duration::from_secs(3)
        {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(sample(&m, r#"knhk_worker_heartbeat_age_seconds{worker="1"}"#) >= 0.4);
    assert!(sample(&m, r#"knhk_worker_heartbeat_age_seconds{worker="0"}"#) < 0.4);
    stats[1].wedge.store(false, Ordering::SeqCst);
    wait_code(http_addr, "/health/live", 200, Duration::from_secs(5)).await;
    wait_code(http_addr, "/health/ready", 200, Duration::from_secs(5)).await;
    wait_grpc_health(&url, ServingStatus::Serving, Duration::from_secs(5)).await;

    // Drain: readiness drops at once while liveness holds; then everything stops.
    let _ = stop_tx.send(());
    let r = wait_code(http_addr, "/health/ready", 503, Duration::from_secs(2)).await;
    assert!(r.body.contains("draining"), "{}", r.body);
    assert_eq!(get(http_addr, "/health/live").await.code, 200);
    let h = get(http_addr, "/health").await;
    assert!(h.body.contains("draining"), "{}", h.body);
    tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .expect("shutdown in time")
        .expect("join")
        .expect("serve ok");
    assert!(
        TcpStream::connect(http_addr).await.is_err() || get_fails(http_addr).await,
        "HTTP endpoints stop with the server"
    );
}

async fn get_fails(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return true;
    };
    let _ = s
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    buf.is_empty()
}

// ------------------------------------------------------------------------------ OTLP traces

#[derive(Default, Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.got.lock().expect("lock").push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[derive(Debug, Clone)]
struct SpanSeen {
    service: String,
    name: String,
    id: Vec<u8>,
    parent: Vec<u8>,
    attrs: HashMap<String, String>,
}

fn value_text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn attrs(kv: &[KeyValue]) -> HashMap<String, String> {
    kv.iter()
        .map(|a| (a.key.clone(), value_text(&a.value)))
        .collect()
}

fn spans(r: &Receiver) -> Vec<SpanSeen> {
    let got = r.got.lock().expect("lock");
    let mut out = Vec::new();
    for req in got.iter() {
        for rs in &req.resource_spans {
            let res = rs
                .resource
                .as_ref()
                .map(|r| attrs(&r.attributes))
                .unwrap_or_default();
            let service = res.get("service.name").cloned().unwrap_or_default();
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.push(SpanSeen {
                        service: service.clone(),
                        name: s.name.clone(),
                        id: s.span_id.clone(),
                        parent: s.parent_span_id.clone(),
                        attrs: attrs(&s.attributes),
                    });
                }
            }
        }
    }
    out
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_spans_reach_a_collector_and_its_absence_harms_nothing() {
    // The collector: OTLP trace service on loopback.
    let receiver = Receiver::default();
    let collector = TcpListener::bind("127.0.0.1:0").await.expect("bind otlp");
    let otlp_addr = collector.local_addr().expect("addr");
    let (stop_collector, collector_stopped) = oneshot::channel::<()>();
    let svc = receiver.clone();
    let collector_task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(svc))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(collector),
                async move {
                    let _ = collector_stopped.await;
                },
            )
            .await
    });

    let grpc_port = free_port();
    let http_port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_knhk"))
        .args([
            "serve",
            "--grpc-addr",
            &format!("127.0.0.1:{grpc_port}"),
            "--http-addr",
            &format!("127.0.0.1:{http_port}"),
            "--workers",
            "1",
            "--no-pin",
            "--durability",
            "off",
            "--log-format",
            "json",
            "--drain-grace-ms",
            "100",
        ])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp_addr}"))
        .env("OTEL_SERVICE_NAME", "knhk-under-test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "500")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn knhk serve");
    let mut proc = Proc(child);
    let http_addr: SocketAddr = format!("127.0.0.1:{http_port}").parse().expect("addr");
    let url = format!("http://127.0.0.1:{grpc_port}");
    let t0 = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(http_addr).await {
            let _ = s.shutdown().await;
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "knhk serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_code(http_addr, "/health/ready", 200, Duration::from_secs(20)).await;

    let mut c = KnhkClient::connect(url.clone()).await.expect("connect");
    let wf = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: model("yawl/WPC1Sequence.yawl"),
            format: 0,
            workflow_id: "traced".into(),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .workflow
        .expect("workflow");
    let case = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: wf.workflow_id.clone(),
            data: HashMap::new(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    c.fire_task(proto::TaskRequest {
        case_id: case.case_id,
        task: "A".into(),
        ..Default::default()
    })
    .await
    .expect("fire");
    let refused = c
        .fire_task(proto::TaskRequest {
            case_id: case.case_id,
            task: "A".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        refused.expect_err("A again").code(),
        tonic::Code::FailedPrecondition
    );
    let batches = vec![
        proto::SubmitEventsRequest {
            events: vec![ev_create(&wf.workflow_id), ev_create(&wf.workflow_id)],
        },
        proto::SubmitEventsRequest {
            events: vec![ev_task(EventOp::Fire, case.case_id, "B")],
        },
    ];
    let mut bulk = c
        .submit_events(tokio_stream::iter(batches))
        .await
        .expect("bulk")
        .into_inner();
    while let Some(r) = bulk.next().await {
        r.expect("batch");
    }

    // The spans arrive, with the RPC and knhk attributes, the batches under their stream.
    let t0 = Instant::now();
    let seen = loop {
        let s = spans(&receiver);
        if s.iter().filter(|s| s.name == "knhk.batch").count() >= 2
            && s.iter().any(|s| s.name == "knhk.v1.Knhk/SubmitEvents")
            && s.iter().any(|s| s.name == "knhk.v1.Knhk/CreateCase")
        {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "spans not received: {:?}",
            s.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(seen.iter().all(|s| s.service == "knhk-under-test"));
    let one = |name: &str| {
        seen.iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}"))
    };
    let create = one("knhk.v1.Knhk/CreateCase");
    assert_eq!(create.attrs["rpc.system"], "grpc");
    assert_eq!(create.attrs["rpc.service"], "knhk.v1.Knhk");
    assert_eq!(create.attrs["rpc.method"], "CreateCase");
    assert_eq!(create.attrs["rpc.grpc.status_code"], "0");
    assert_eq!(create.attrs["knhk.workflow_id"], "traced");
    assert_eq!(create.attrs["knhk.case_id"], case.case_id.to_string());
    let fires: Vec<&SpanSeen> = seen
        .iter()
        .filter(|s| s.name == "knhk.v1.Knhk/FireTask")
        .collect();
    assert_eq!(fires.len(), 2);
    assert!(fires.iter().all(
        |s| s.attrs["knhk.task"] == "A" && s.attrs["knhk.case_id"] == case.case_id.to_string()
    ));
    assert!(fires.iter().any(|s| s.attrs["rpc.grpc.status_code"] == "9"));
    let stream = one("knhk.v1.Knhk/SubmitEvents");
    let batches: Vec<&SpanSeen> = seen.iter().filter(|s| s.name == "knhk.batch").collect();
    assert_eq!(batches.len(), 2, "one span per batch, none per event");
    assert!(batches.iter().all(|b| b.parent == stream.id));
    let mut sizes: Vec<&str> = batches
        .iter()
        .map(|b| b.attrs["knhk.events"].as_str())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, ["1", "2"]);
    assert_eq!(
        seen.len(),
        7,
        "one span per RPC and per batch: {:?}",
        seen.iter().map(|s| &s.name).collect::<Vec<_>>()
    );

    // The collector goes away: serving goes on, as fast.
    let _ = stop_collector.send(());
    let _ = collector_task.await;
    let t0 = Instant::now();
    for _ in 0..200 {
        c.get_case(proto::GetCaseRequest {
            case_id: case.case_id,
            ..Default::default()
        })
        .await
        .expect("get_case without a collector");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "200 calls took {:?} without a collector",
        t0.elapsed()
    );
    assert_eq!(get(http_addr, "/health/ready").await.code, 200);

    // SIGTERM: a clean exit within the bounded flush, JSON log lines on stdout.
    let pid = proc.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = proc.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "knhk serve did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit {status}");
    let mut out = String::new();
    if let Some(mut o) = proc.0.stdout.take() {
        use std::io::Read;
        let _ = o.read_to_string(&mut out);
    }
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log output");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
    assert!(out.contains("knhk serving gRPC"));
}
