//! Exporters of committed events (docs/durability.md, "Exporters"): a stalled sink holds the
//! log's compaction and never the kernel, catches up in log order when it resumes; the XES
//! file exporter of `knhk serve --export-xes` survives SIGKILL (every event of every case in
//! the document exactly once, compared with the server's own per-case history) and its
//! document replays on the model with fitness 1.0 in pm4py, an outside tool.

mod support;
use support::engine::run_case;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use knhk_engine::command::EventKind;
use knhk_engine::engine::{Engine, EngineConfig};
use knhk_log::{EventLog, ExportSink, Exported, Journal, JournalConfig, Position};
use knhk_shell::proto;

/// A sink that takes deliveries only while its gate is open, and keeps what it took.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    /// Set once a delivery is waiting at the gate.
    waiting: std::sync::atomic::AtomicBool,
    got: Mutex<Vec<Exported>>,
    positions: Mutex<Vec<Position>>,
}

struct GateSink(Arc<Gate>);

impl ExportSink for GateSink {
    fn name(&self) -> String {
        "gate".into()
    }
    fn resume(&mut self) -> Result<Option<Position>, String> {
        Ok(None)
    }
    fn deliver(&mut self, events: &[Exported], upto: Position) -> Result<(), String> {
        let mut open = self.0.open.lock().unwrap();
        self.0.waiting.store(true, Ordering::SeqCst);
        while !*open {
            open = self.0.opened.wait(open).unwrap();
        }
        self.0.got.lock().unwrap().extend_from_slice(events);
        self.0.positions.lock().unwrap().push(upto);
        Ok(())
    }
}

/// An engine of `capacity` slots on an event log in `dir` (segments of `segment_bytes`) with a
/// [`GateSink`] exporter, the sequence workflow registered as "seq".
fn gated(
    dir: &std::path::Path,
    segment_bytes: u64,
    capacity: usize,
) -> (
    Arc<dyn EventLog>,
    Arc<Engine>,
    Arc<Gate>,
    Arc<knhk_log::ExporterStats>,
) {
    let journal = Journal::open(JournalConfig {
        segment_bytes,
        ..JournalConfig::new(dir)
    })
    .expect("journal");
    let log: Arc<dyn EventLog> = journal.clone();
    let cfg = EngineConfig {
        workers: 1,
        case_capacity: capacity,
        pin: false,
        ..EngineConfig::default()
    };
    let engine = Engine::start(cfg, log.clone()).expect("engine");
    log.recover(&engine).expect("recover");
    let gate = Arc::new(Gate::default());
    let stats = journal
        .add_exporter(&engine, Box::new(GateSink(gate.clone())))
        .expect("exporter");
    let model = support::corpus("yawl/WPC1Sequence.yawl");
    support::engine::register(&log, &engine, "seq", &model);
    (log, engine, gate, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_exporter_holds_compaction_not_the_kernel_and_catches_up_in_order() {
    let dir = support::scratch("export-stall").join("data");
    let (log, engine, gate, stats) = gated(&dir, 4096, 256);

    // The sink is stalled: cases still run to completion, segments fill and are sealed, and
    // their compaction waits.
    let mut cases = Vec::new();
    for _ in 0..200 {
        cases.push(run_case(&engine, "seq").await);
    }
    let st = log.stats();
    let segments = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
            })
            .count()
    };
    assert!(
        segments() > 2,
        "several sealed segments kept: {}",
        segments()
    );
    assert_eq!(
        st.compactions.load(Ordering::SeqCst),
        0,
        "nothing compacted"
    );
    assert!(st.compactions_held.load(Ordering::SeqCst) >= 1);
    assert!(gate.got.lock().unwrap().is_empty());
    // it has events to read and has not moved: stalled (the health check's verdict)
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.lag_bytes.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let trouble = stats
        .trouble(Duration::ZERO)
        .expect("a stalled exporter is reported");
    assert!(trouble.contains("stalled"), "{trouble}");

    // Open the gate: every event arrives, in log order, each case's as the engine recorded it.
    {
        *gate.open.lock().unwrap() = true;
        gate.opened.notify_all();
    }
    let want: usize = cases
        .iter()
        .map(|&id| engine.history(id).expect("history").events.len())
        .sum();
    let task_events = |g: &Gate| {
        g.got
            .lock()
            .unwrap()
            .iter()
            .filter(|x| x.event.kind == EventKind::Task)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while task_events(&gate) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = gate.got.lock().unwrap().clone();
    assert_eq!(task_events(&gate), want, "every task event delivered once");
    assert!(
        got.windows(2).all(|w| w[0].position <= w[1].position),
        "events in log order"
    );
    let positions = gate.positions.lock().unwrap().clone();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions move forward"
    );
    for &id in &cases {
        let exported: Vec<(u8, _)> = got
            .iter()
            .filter(|x| x.event.case_id == id && x.event.kind == EventKind::Task)
            .map(|x| (x.event.task, x.event.lifecycle))
            .collect();
        let recorded: Vec<(u8, _)> = engine
            .history(id)
            .expect("history")
            .events
            .iter()
            .map(|h| (h.task, Some(h.lifecycle)))
            .collect();
        assert_eq!(exported, recorded, "case {id}");
        assert!(got
            .iter()
            .any(|x| x.event.case_id == id && x.event.kind == EventKind::CaseCompleted));
    }
    assert!(stats.trouble(Duration::from_secs(10)).is_none());

    // Caught up: the next sealed segment is compacted with the ones held before.
    let deadline = Instant::now() + Duration::from_secs(20);
    while st.compactions.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        run_case(&engine, "seq").await;
    }
    assert!(
        st.compactions.load(Ordering::SeqCst) >= 1,
        "compaction resumed"
    );
    engine.stop();
    log.close();
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

/// A log closing while an exporter is inside a delivery waits for that delivery and then
/// returns (it once held the exporters' lock while joining them, and the exporter needed it
/// after its delivery: a deadlock at shutdown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_while_an_exporter_delivers_returns() {
    let dir = support::scratch("export-close").join("data");
    let (log, engine, gate, _) = gated(&dir, 64 << 20, 16);
    run_case(&engine, "seq").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gate.waiting.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "no delivery started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let closer = {
        let (engine, log) = (engine.clone(), log.clone());
        std::thread::spawn(move || {
            engine.stop();
            log.close();
            let _ = tx.send(());
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        *gate.open.lock().unwrap() = true;
        gate.opened.notify_all();
    }
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the log closed once the delivery ended");
    closer.join().expect("closer");
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

/// `(case, activity, transition)` of each event of an XES document, in document order (the
/// documents here are knhk's own: one attribute per line).
fn xes_events(doc: &str) -> Vec<(String, String, String)> {
    let value = |line: &str| {
        line.split("value=\"")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .unwrap_or_default()
            .to_string()
    };
    let mut out = Vec::new();
    let (mut case, mut name, mut in_event) = (String::new(), String::new(), false);
    for line in doc.lines().map(str::trim) {
        if line == "<event>" {
            in_event = true;
        } else if line == "</event>" {
            in_event = false;
        } else if line.starts_with("<string key=\"concept:name\"") {
            if in_event {
                name = value(line);
            } else {
                case = value(line);
            }
        } else if in_event && line.starts_with("<string key=\"lifecycle:transition\"") {
            out.push((case.clone(), name.clone(), value(line)));
        }
    }
    out
}

async fn register_running_example(c: &mut support::Client) {
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: support::corpus("pnml/running-example.pnml"),
        format: proto::ModelFormat::Pnml as i32,
        workflow_id: "running-example".into(),
        ..Default::default()
    })
    .await
    .expect("register");
}

/// Runs `n` cases of the running example to completion: a pseudo-random walk over the
/// enabled tasks, mixing FireTask with StartTask + CompleteTask.
async fn run_cases(c: &mut support::Client, n: usize, rng: &mut u64) {
    for _ in 0..n {
        let mut case = c
            .create_case(proto::CreateCaseRequest {
                workflow_id: "running-example".into(),
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner();
        let mut steps = 0;
        while case.state == proto::CaseState::Running as i32 {
            steps += 1;
            assert!(steps < 200, "case {} does not finish", case.case_id);
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            let t = case.enabled_tasks[(*rng % case.enabled_tasks.len() as u64) as usize].clone();
            let req = |t: &str| proto::TaskRequest {
                case_id: case.case_id,
                task: t.into(),
                ..Default::default()
            };
            case = if *rng & 0x100 == 0 {
                c.fire_task(req(&t)).await.expect("fire").into_inner()
            } else {
                c.start_task(req(&t)).await.expect("start");
                c.complete_task(req(&t))
                    .await
                    .expect("complete")
                    .into_inner()
            };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xes_exporter_survives_sigkill_exactly_once_and_replays_with_fitness_one() {
    let root = support::scratch("export-xes");
    let data = root.join("data");
    let doc = root.join("events.xes");
    let flags = ["--export-xes", doc.to_str().unwrap()];
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;

    let mut p = support::spawn(&data, &root.join("a.log"), &flags, None);
    let mut c = p.ready().await.expect("first start");
    register_running_example(&mut c).await;
    run_cases(&mut c, 15, &mut rng).await;
    p.kill(); // SIGKILL: the exporter may be anywhere

    let mut p = support::spawn(&data, &root.join("b.log"), &flags, None);
    let mut c = p.ready().await.expect("restart");
    run_cases(&mut c, 15, &mut rng).await;
    let server = c
        .export_case_xes(proto::ExportCaseXesRequest {
            case_id: 0,
            workflow_id: "running-example".into(),
        })
        .await
        .expect("export")
        .into_inner();
    assert_eq!(server.traces, 30);
    let mut want = xes_events(&String::from_utf8_lossy(&server.xes));
    assert_eq!(want.len() as u64, server.events);
    // the exporter follows the log: wait until it has written every event
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while Instant::now() < deadline {
        got = xes_events(&std::fs::read_to_string(&doc).unwrap_or_default());
        if got.len() >= want.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.kill();
    // per case, in order: the document's events are the server's history, each once
    let by_case = |v: &mut Vec<(String, String, String)>| {
        let mut m: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for (c, a, t) in v.drain(..) {
            m.entry(c).or_default().push((a, t));
        }
        m
    };
    let (want, got) = (by_case(&mut want), by_case(&mut got));
    assert_eq!(got.len(), 30, "every case in the exported document");
    assert_eq!(
        got, want,
        "the exported events are the server's history, each once"
    );

    let python = std::env::var("KNHK_PM4PY_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_pm4py = std::process::Command::new(&python)
        .args(["-c", "import pm4py"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_pm4py {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but pm4py is not installed for {python} (set KNHK_PM4PY_PYTHON)"
        );
        eprintln!("pm4py not installed for {python}: replay of the exported document skipped");
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pm4py_fitness.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(support::corpus_path("pnml/running-example.pnml"))
        .arg(&doc)
        .output()
        .expect("run pm4py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "pm4py replay of the exported document:\n{text}"
    );
    assert!(text.contains("30 traces"), "{text}");
    let _ = std::fs::remove_dir_all(&root);
}

/// `GET path` on `addr` (HTTP/1.1, `Connection: close`): the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("reply");
    let text = String::from_utf8_lossy(&buf).to_string();
    text.split_once("\r\n\r\n")
        .map_or(text.clone(), |(_, b)| b.to_string())
}

/// The value of `series` in a Prometheus text body (0 when absent).
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().ok())?
        })
        .unwrap_or(0.0)
}

/// The `/health` document once it says `needle` (at most 10 s; the last one otherwise), parsed
/// and as text.
async fn health_saying(http: std::net::SocketAddr, needle: &str) -> (serde_json::Value, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut health = http_get(http, "/health").await;
    while !health.contains(needle) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        health = http_get(http, "/health").await;
    }
    (serde_json::from_str(&health).expect("health json"), health)
}

/// A server in this process with the event log in `root/data` and the exporters of
/// `export`, observed on an HTTP port of its own: that port, a client, the stop switch and the
/// server's task.
async fn start_observed(
    root: &std::path::Path,
    export: knhk_shell::app::ExportConfig,
) -> (
    std::net::SocketAddr,
    support::Client,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    use knhk_shell::admin::{ObserveConfig, Observer};
    use knhk_shell::server::{self, ServerConfig};
    let observer = Observer::new(ObserveConfig {
        http_addr: Some("127.0.0.1:0".parse().expect("addr")),
        ..ObserveConfig::default()
    });
    let http = observer
        .start_http()
        .await
        .expect("bind http")
        .expect("enabled");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind grpc");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let cfg = ServerConfig {
        engine: EngineConfig {
            workers: 1,
            case_capacity: 256,
            pin: false,
            ..EngineConfig::default()
        },
        export,
        ..ServerConfig::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let journal = JournalConfig::new(root.join("data"));
    let done = tokio::spawn(async move {
        server::serve_observed(
            listener,
            cfg,
            None,
            Some(journal),
            observer,
            async move {
                let _ = stop_rx.await;
            },
            move |_| {
                let _ = ready_tx.send(());
            },
        )
        .await
        .map_err(|e| e.to_string())
    });
    ready_rx.await.expect("server ready");
    let c = proto::knhk_client::KnhkClient::connect(url)
        .await
        .expect("connect");
    (http, c, stop_tx, done)
}

/// A sink that fails (its position file cannot be written: a directory stands where it is
/// written aside) shows on `/health` (the `exporters` check degraded, naming the error) and on
/// `/metrics` (failures, lag), while cases go on; once it can write again it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_exporter_shows_on_health_and_metrics_then_recovers() {
    let root = support::scratch("export-health");
    let doc = root.join("events.xes");
    let (http, mut c, stop_tx, done) = start_observed(
        &root,
        knhk_shell::app::ExportConfig {
            xes_file: Some(doc.clone()),
            ..Default::default()
        },
    )
    .await;
    register_running_example(&mut c).await;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    run_cases(&mut c, 3, &mut rng).await;

    // the position file's temporary name taken by a directory: every delivery fails
    let blocker = root.join("events.xes.position.tmp");
    // (the exporter's own temporary file may be there for a moment: until it is renamed)
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = std::fs::create_dir(&blocker) {
        assert!(Instant::now() < deadline, "blocker: {e}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    run_cases(&mut c, 3, &mut rng).await;
    let (h, health) = health_saying(http, "its sink fails").await;
    assert_eq!(h["checks"]["exporters"]["status"], "degraded", "{health}");
    assert!(
        h["checks"]["exporters"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("position.tmp"),
        "the reason names the failing file: {health}"
    );
    let metrics = http_get(http, "/metrics").await;
    assert!(
        sample(
            &metrics,
            "knhk_exporter_failures_total{exporter=\"xes-file\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(sample(&metrics, "knhk_exporter_lag_bytes{exporter=\"xes-file\"}") > 0.0);
    // the kernel is not held: cases still run meanwhile
    run_cases(&mut c, 2, &mut rng).await;

    std::fs::remove_dir(&blocker).expect("unblock");
    let server = c
        .export_case_xes(proto::ExportCaseXesRequest {
            case_id: 0,
            workflow_id: "running-example".into(),
        })
        .await
        .expect("export")
        .into_inner();
    let want = xes_events(&String::from_utf8_lossy(&server.xes)).len();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got = 0;
    while Instant::now() < deadline {
        got = xes_events(&std::fs::read_to_string(&doc).unwrap_or_default()).len();
        if got >= want && !http_get(http, "/health").await.contains("\"degraded\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got, want, "every event once, after the sink recovered");
    let h: serde_json::Value =
        serde_json::from_str(&http_get(http, "/health").await).expect("health json");
    assert_eq!(h["checks"]["exporters"]["status"], "healthy", "{h}");
    let _ = stop_tx.send(());
    done.await.expect("join").expect("served");
    let _ = std::fs::remove_dir_all(&root);
}

/// An exporter needs the event log (and the embedded one): refused with a line, not ignored.
#[test]
fn export_without_the_event_log_is_refused() {
    let root = support::scratch("export-refused");
    for extra in [
        vec!["--durability", "off"],
        vec![
            "--nats",
            "nats://127.0.0.1:1",
            "--etcd",
            "http://127.0.0.1:1",
        ],
    ] {
        let mut args = vec![
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--export-xes",
            "/nonexistent/events.xes",
        ];
        args.extend(extra.iter().copied());
        let out = std::process::Command::new(support::bin())
            .args(&args)
            .env("KNHK_DATA_DIR", root.join("data"))
            .env("KNHK_HTTP_ADDR", "off")
            .output()
            .expect("run knhk serve");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(extra[0]), "{extra:?}: {err}");
    }
    // an endpoint that is not an http URL stops the start, naming the flag
    let out = std::process::Command::new(support::bin())
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--export-otlp-logs",
            "ftp://collector:4317",
        ])
        .env("KNHK_DATA_DIR", root.join("data"))
        .env("KNHK_HTTP_ADDR", "off")
        .output()
        .expect("run knhk serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--export-otlp-logs ftp://collector:4317"),
        "{err}"
    );
    // a CA file that cannot be read stops the start, naming the flag and the file
    let out = std::process::Command::new(support::bin())
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--export-otlp-logs",
            "https://collector:4317",
            "--export-otlp-logs-ca",
            "/nonexistent/ca.pem",
        ])
        .env("KNHK_DATA_DIR", root.join("data"))
        .env("KNHK_HTTP_ADDR", "off")
        .output()
        .expect("run knhk serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--export-otlp-logs-ca: cannot read /nonexistent/ca.pem"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

// ------------------------------------------------------------------------- OTLP logs

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;

/// An OTLP logs collector on loopback: every request it was sent.
#[derive(Clone, Default)]
struct Collector {
    got: Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
}

#[tonic::async_trait]
impl LogsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.got.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves `c` on `addr` until the returned sender is used (or dropped).
async fn serve_collector(
    c: &Collector,
    addr: std::net::SocketAddr,
) -> tokio::sync::oneshot::Sender<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind collector");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let svc = c.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(LogsServiceServer::new(svc))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stopped.await;
                },
            )
            .await
    });
    stop
}

/// `(case, activity, transition)` of every non-silent task event the collector holds, each
/// once (a repeat is one with the same position and index), in arrival order.
fn collected(c: &Collector) -> Vec<(String, String, String)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for req in c.got.lock().unwrap().iter() {
        for rl in &req.resource_logs {
            let service = rl
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref()?.value.clone());
            assert_eq!(service, Some(AnyValue::StringValue("knhk".into())));
            for sl in &rl.scope_logs {
                for r in &sl.log_records {
                    let attr = |k: &str| {
                        r.attributes
                            .iter()
                            .find(|a| a.key == k)
                            .and_then(|a| a.value.as_ref()?.value.clone())
                    };
                    let text = |k: &str| match attr(k) {
                        Some(AnyValue::StringValue(s)) => s,
                        Some(AnyValue::IntValue(i)) => i.to_string(),
                        other => panic!("attribute {k}: {other:?}"),
                    };
                    assert!(r.time_unix_nano > 0);
                    if !seen.insert((text("knhk.position"), text("knhk.index"))) {
                        continue;
                    }
                    if r.event_name != "knhk.task" || attr("knhk.silent").is_some() {
                        continue;
                    }
                    out.push((
                        text("knhk.case_id"),
                        text("knhk.activity"),
                        text("knhk.lifecycle"),
                    ));
                }
            }
        }
    }
    out
}

/// `--export-otlp-logs`: every committed task event reaches a real OTLP logs collector
/// (tonic serving the collector protocol), each case's events as the server's history has
/// them; while the collector is down the exporter reports it on /health and the cases go on;
/// once it is back the events written meanwhile arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_logs_exporter_ships_every_event_and_survives_a_collector_outage() {
    let root = support::scratch("export-otlp");
    let collector = Collector::default();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr")
    };
    let stop_collector = serve_collector(&collector, addr).await;
    let (http, mut c, stop_tx, done) = start_observed(
        &root,
        knhk_shell::app::ExportConfig {
            otlp_logs: Some(format!("http://{addr}")),
            ..Default::default()
        },
    )
    .await;
    register_running_example(&mut c).await;
    let mut rng: u64 = 0x0123_4567_89ab_cdef;
    run_cases(&mut c, 3, &mut rng).await;
    let server_events =
        |doc: &[u8]| -> Vec<(String, String, String)> { xes_events(&String::from_utf8_lossy(doc)) };
    let wait_all = |want: usize| {
        let collector = collector.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while collected(&collector).len() < want && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let export = |c: &mut support::Client| {
        let mut c = c.clone();
        async move {
            c.export_case_xes(proto::ExportCaseXesRequest {
                case_id: 0,
                workflow_id: "running-example".into(),
            })
            .await
            .expect("export")
            .into_inner()
            .xes
        }
    };
    let want = server_events(&export(&mut c).await);
    wait_all(want.len()).await;
    let per_case = |v: Vec<(String, String, String)>| {
        let mut m: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for (c, a, t) in v {
            m.entry(c).or_default().push((a, t));
        }
        m
    };
    assert_eq!(per_case(collected(&collector)), per_case(want));

    // The collector goes away: deliveries fail, /health says so, the cases go on.
    let _ = stop_collector.send(());
    tokio::time::sleep(Duration::from_millis(200)).await;
    run_cases(&mut c, 2, &mut rng).await;
    let (h, health) = health_saying(http, "cannot reach the collector").await;
    assert_eq!(h["checks"]["exporters"]["status"], "degraded", "{health}");
    // Back: what was committed meanwhile arrives, each case's events in order.
    let _stop_again = serve_collector(&collector, addr).await;
    let want = server_events(&export(&mut c).await);
    wait_all(want.len()).await;
    assert_eq!(per_case(collected(&collector)), per_case(want));
    let _ = stop_tx.send(());
    done.await.expect("join").expect("served");
    let _ = std::fs::remove_dir_all(&root);
}

/// Serves `c` over TLS on `addr`: the collector's certificate `(cert, key)`, and with
/// `client_ca` it asks every caller for a certificate that CA signed (mutual TLS).
async fn serve_collector_tls(
    c: &Collector,
    addr: std::net::SocketAddr,
    cert: &(String, String),
    client_ca: &str,
) -> tokio::sync::oneshot::Sender<()> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind collector");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let svc = c.clone();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&cert.0, &cert.1))
        .client_ca_root(Certificate::from_pem(client_ca));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .tls_config(tls)
            .expect("collector tls")
            .add_service(LogsServiceServer::new(svc))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stopped.await;
                },
            )
            .await
    });
    stop
}

/// `--export-otlp-logs https://...`: the exporter checks the collector's certificate against
/// `--export-otlp-logs-ca` and presents its client certificate (the collector requires one).
/// A server given another CA delivers nothing and says on /health that it cannot reach the
/// collector; every event still arrives at the collector it trusts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_logs_exporter_speaks_mutual_tls_and_checks_the_collector() {
    use support::certs::{ca, leaf};
    let root = support::scratch("export-otlp-tls");
    let collector_ca = ca("collector ca");
    let client_ca = ca("client ca");
    let stranger_ca = ca("another ca");
    let collector_cert = leaf(&collector_ca, 1, true);
    let (client_cert, client_key) = leaf(&client_ca, 2, false);
    let write = |name: &str, pem: &str| {
        let p = root.join(name);
        std::fs::write(&p, pem).expect("write pem");
        p
    };
    let tls = knhk_shell::exporter::OtlpTls {
        ca: Some(write("collector-ca.pem", &collector_ca.pem)),
        client_cert: Some(write("client.pem", &client_cert)),
        client_key: Some(write("client.key", &client_key)),
    };
    let collector = Collector::default();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr")
    };
    let _stop_collector =
        serve_collector_tls(&collector, addr, &collector_cert, &client_ca.pem).await;

    // A server that trusts another CA: the handshake fails, nothing is delivered.
    let wrong = root.join("wrong");
    let (http, mut c, stop_tx, done) = start_observed(
        &wrong,
        knhk_shell::app::ExportConfig {
            otlp_logs: Some(format!("https://localhost:{}", addr.port())),
            otlp_logs_tls: knhk_shell::exporter::OtlpTls {
                ca: Some(write("stranger-ca.pem", &stranger_ca.pem)),
                ..tls.clone()
            },
            ..Default::default()
        },
    )
    .await;
    register_running_example(&mut c).await;
    let mut rng: u64 = 0x5eed_0f75;
    run_cases(&mut c, 1, &mut rng).await;
    let (h, health) = health_saying(http, "cannot reach the collector").await;
    assert_eq!(h["checks"]["exporters"]["status"], "degraded", "{health}");
    assert!(collector.got.lock().unwrap().is_empty());
    let _ = stop_tx.send(());
    done.await.expect("join").expect("served");

    // The right CA and a client certificate: every event arrives, as the server has them.
    let right = root.join("right");
    let (_http, mut c, stop_tx, done) = start_observed(
        &right,
        knhk_shell::app::ExportConfig {
            otlp_logs: Some(format!("https://localhost:{}", addr.port())),
            otlp_logs_tls: tls.clone(),
            ..Default::default()
        },
    )
    .await;
    register_running_example(&mut c).await;
    run_cases(&mut c, 3, &mut rng).await;
    let want = xes_events(&String::from_utf8_lossy(
        &c.export_case_xes(proto::ExportCaseXesRequest {
            case_id: 0,
            workflow_id: "running-example".into(),
        })
        .await
        .expect("export")
        .into_inner()
        .xes,
    ));
    assert!(!want.is_empty());
    let deadline = Instant::now() + Duration::from_secs(20);
    while collected(&collector).len() < want.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut got = collected(&collector);
    let mut want = want;
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let _ = stop_tx.send(());
    done.await.expect("join").expect("served");
    let _ = std::fs::remove_dir_all(&root);
}
