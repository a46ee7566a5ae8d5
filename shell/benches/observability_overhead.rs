//! Serving throughput with observability on and off (not a test; bounded, a few seconds per
//! phase). Each phase starts a fresh `knhk serve` process (this profile's binary) and drives it
//! with bulk SubmitEvents streams over loopback (WPC1 sequence: create, fire A, fire B per
//! case, 1024 events per message, two streams):
//!
//! - **off**: `--http-addr off` (no HTTP endpoints, no gRPC metrics layer), `RUST_LOG=off`, no
//!   OTLP export;
//! - **on**: HTTP endpoints with `/metrics` scraped every 250 ms, `RUST_LOG=info` with JSON logs,
//!   and OTLP span export (`OTEL_BSP_SCHEDULE_DELAY=200`) to a loopback OTLP/gRPC receiver.
//!
//! The kernel workers count and time ops in both modes (that is not switchable, by design: no
//! branch on the hot path). Phases alternate off/on; the medians are compared.
//!
//! `cargo bench -p knhk-shell --bench observability_overhead`. Environment:
//! `KNHK_BENCH_SECS` (per phase, default 4), `KNHK_BENCH_ROUNDS` (pairs, default 3).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use knhk_shell::proto::knhk_client::KnhkClient;
use knhk_shell::proto::{self, EventOp};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Default, Clone)]
struct Sink {
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ev(op: EventOp, case_id: u64, wf: &str, task: &str) -> proto::Event {
    proto::Event {
        op: op as i32,
        case_id,
        workflow_id: wf.into(),
        task: (!task.is_empty()).then(|| proto::event::Task::TaskName(task.into())),
        ..Default::default()
    }
}

/// One bulk stream: create 1024 cases, fire A on each, fire B on each; repeat until `until`.
async fn drive(url: String, wf: String, until: Instant) -> Result<u64, BoxError> {
    let mut c = KnhkClient::connect(url).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let mut resp = c
        .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut events = 0u64;
    while Instant::now() < until {
        tx.send(proto::SubmitEventsRequest {
            events: (0..1024)
                .map(|_| ev(EventOp::CreateCase, 0, &wf, ""))
                .collect(),
        })
        .await?;
        let ids: Vec<u64> = resp
            .next()
            .await
            .ok_or("stream ended")??
            .results
            .iter()
            .filter(|r| r.code == 0)
            .map(|r| r.case_id)
            .collect();
        events += 1024;
        for t in ["A", "B"] {
            tx.send(proto::SubmitEventsRequest {
                events: ids.iter().map(|&id| ev(EventOp::Fire, id, "", t)).collect(),
            })
            .await?;
            resp.next().await.ok_or("stream ended")??;
            events += ids.len() as u64;
        }
    }
    Ok(events)
}

async fn scrape(addr: SocketAddr) -> Result<usize, BoxError> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(buf.len())
}

async fn phase(on: bool, secs: u64, otlp: SocketAddr) -> Result<f64, BoxError> {
    let grpc_port = free_port()?;
    let http_port = free_port()?;
    let http_addr: SocketAddr = format!("127.0.0.1:{http_port}").parse()?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_knhk"));
    cmd.args([
        "serve",
        "--grpc-addr",
        &format!("127.0.0.1:{grpc_port}"),
        "--durability",
        "off",
        "--case-capacity",
        "65536",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
    .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    if on {
        cmd.args([
            "--http-addr",
            &http_addr.to_string(),
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "200");
    } else {
        cmd.args(["--http-addr", "off"]).env("RUST_LOG", "off");
    }
    let _proc = Proc(cmd.spawn()?);
    let url = format!("http://127.0.0.1:{grpc_port}");
    let t0 = Instant::now();
    let mut c = loop {
        match KnhkClient::connect(url.clone()).await {
            Ok(c) => break c,
            Err(_) if t0.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e.into()),
        }
    };
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus/yawl/WPC1Sequence.yawl");
    let wf = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: std::fs::read(path)?,
            format: 0,
            workflow_id: "seq".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .workflow
        .ok_or("no workflow")?
        .workflow_id;
    // Warm up, then measure.
    drive(
        url.clone(),
        wf.clone(),
        Instant::now() + Duration::from_millis(500),
    )
    .await?;
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let scraper = tokio::spawn(async move {
        let mut n = 0u32;
        while on && Instant::now() < until {
            if scrape(http_addr).await.is_ok() {
                n += 1;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        n
    });
    let streams: Vec<_> = (0..2)
        .map(|_| tokio::spawn(drive(url.clone(), wf.clone(), until)))
        .collect();
    let mut events = 0u64;
    for s in streams {
        events += s.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let scrapes = scraper.await?;
    let rate = events as f64 / elapsed;
    println!(
        "  {:<3} {:>12.0} events/s ({events} events in {elapsed:.2}s{})",
        if on { "on" } else { "off" },
        rate,
        if on {
            format!(", {scrapes} scrapes")
        } else {
            String::new()
        }
    );
    Ok(rate)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), BoxError> {
    let secs = env_or("KNHK_BENCH_SECS", 4).clamp(1, 60);
    let rounds = env_or("KNHK_BENCH_ROUNDS", 3).clamp(1, 20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let sink = Sink::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let otlp = listener.local_addr()?;
        let svc = sink.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(svc))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "knhk observability overhead: {cores} cores, {rounds} rounds of {secs}s per mode, bulk SubmitEvents (2 streams x 1024 events)"
        );
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            off.push(phase(false, secs, otlp).await?);
            on.push(phase(true, secs, otlp).await?);
        }
        let (m_off, m_on) = (median(&mut off), median(&mut on));
        println!(
            "median off {m_off:.0} events/s, on {m_on:.0} events/s: on/off = {:.3} ({:+.1}%); spans received {}",
            m_on / m_off,
            (m_on / m_off - 1.0) * 100.0,
            sink.spans.load(Ordering::Relaxed)
        );
        Ok::<(), BoxError>(())
    })
}
