//! The gRPC server: `knhk.v1.Knhk` (proto/knhk/v1/knhk.proto), `grpc.health.v1.Health` and
//! server reflection (`grpc.reflection.v1` and `v1alpha`), on one port.
//!
//! Endpoints (all on `--grpc-addr`, default 127.0.0.1:50051):
//!
//! | service | what |
//! |---|---|
//! | `knhk.v1.Knhk` | workflows, cases, task operations, WatchCase, ListCases, ExportCaseXes, SubmitEvents |
//! | `grpc.health.v1.Health` | `""` and `knhk.v1.Knhk`: NOT_SERVING while starting and draining, SERVING otherwise |
//! | `grpc.reflection.v1.ServerReflection` | descriptors of all three services (also `v1alpha`) |
//!
//! Life cycle: health starts NOT_SERVING; the engine starts its workers; health flips to
//! SERVING. On the shutdown signal (SIGINT/SIGTERM for `knhk serve`): health flips to
//! NOT_SERVING and new work is refused (UNAVAILABLE) for `drain_grace`; open streams are told to
//! finish (watchers end, bulk streams answer what they took and end); the transport shuts down
//! gracefully, waiting for in-flight calls up to `shutdown_timeout`; the workers stop.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};
use tokio_stream::{Stream, StreamExt, StreamMap};
use tonic::{Request, Response, Status, Streaming};
use tonic_health::ServingStatus;

use knhk_engine::catalog;
use knhk_engine::EngineError;

use crate::engine::{self, BatchHook, Engine, EngineConfig, EventBatch, Hist, WatchItem};
use crate::grpc::convert;
use crate::grpc::status::OrStatus;
use crate::http::{Check, ObserveConfig, Observer, Phase};
use crate::journal::{self, JournalConfig};
use crate::proto::knhk_server::{Knhk, KnhkServer};
use crate::proto::{self, *};
use crate::telemetry;
use crate::workers::OpKind;
use crate::workflow::Workflow;
use crate::xes;

/// Server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub engine: EngineConfig,
    /// HTTP/2 concurrent streams per connection.
    pub max_concurrent_streams: u32,
    /// How long health says NOT_SERVING (and new work is refused) before the transport stops.
    pub drain_grace: Duration,
    /// Deadline for in-flight calls and open streams once the transport stops.
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            engine: EngineConfig::default(),
            max_concurrent_streams: 1024,
            drain_grace: Duration::from_millis(500),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// The name health reports for the knhk service.
pub const SERVICE_NAME: &str = "knhk.v1.Knhk";

/// Bulk batches a SubmitEvents stream may have in flight before it stops reading input.
const PIPELINE_DEPTH: usize = 64;

/// A running server's handles, for tests and embedding.
#[derive(Clone)]
pub struct Running {
    pub engine: Arc<Engine>,
    pub health: tonic_health::server::HealthReporter,
    /// The event log's counters, when durability is on.
    pub journal: Option<Arc<journal::JournalStats>>,
}

/// Serves on `listener` until `shutdown` resolves, then shuts down as described above.
/// `on_ready` receives the handles once health says SERVING.
pub async fn serve(
    listener: TcpListener,
    cfg: ServerConfig,
    hook: Option<Arc<dyn BatchHook>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(Running) + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    serve_journaled(listener, cfg, hook, None, shutdown, on_ready).await
}

/// [`serve`] with the durable event log of `journal` (docs/durability.md): the log is replayed
/// before anything is served (health NOT_SERVING and the startup probe failing until then),
/// and the journal replaces `hook`.
pub async fn serve_journaled(
    listener: TcpListener,
    cfg: ServerConfig,
    hook: Option<Arc<dyn BatchHook>>,
    journal: Option<JournalConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(Running) + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let observer = Observer::new(ObserveConfig::default());
    serve_observed(listener, cfg, hook, journal, observer, shutdown, on_ready).await
}

/// [`serve_journaled`] observed (http.rs, metrics.rs): `observer`'s HTTP endpoints are started
/// here unless already running, its probes follow the life cycle (starting, serving, draining,
/// stopped), every RPC gets a span and, when metrics are on, a count and a latency.
pub async fn serve_observed(
    listener: TcpListener,
    cfg: ServerConfig,
    hook: Option<Arc<dyn BatchHook>>,
    journal: Option<JournalConfig>,
    observer: Arc<Observer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(Running) + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if observer.http_addr().is_none() {
        observer.start_http().await?;
    }
    let durable = journal.is_some();
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
        .await;

    // While the engine starts (workers, journal replay), a startup server on the same listener
    // answers health (NOT_SERVING) so probes get an answer rather than a stalled connection.
    let listener = Arc::new(listener);
    let (startup_stop_tx, startup_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let startup = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service.clone())
            .serve_with_incoming_shutdown(SharedIncoming(listener.clone()), async move {
                let _ = startup_stop_rx.await;
            }),
    );

    let engine_cfg = cfg.engine.clone();
    let started =
        tokio::task::spawn_blocking(move || crate::app::start(engine_cfg, hook, journal)).await;
    // Hand the listener over: the startup server stops (a health watcher opened during startup
    // is cut after 500 ms and reconnects to the full server).
    let _ = startup_stop_tx.send(());
    let startup_abort = startup.abort_handle();
    if tokio::time::timeout(Duration::from_millis(500), startup)
        .await
        .is_err()
    {
        startup_abort.abort();
    }
    let core = started??;
    let engine = core.engine.clone();
    let journal = core.log.clone();
    let state = if durable {
        "persisted state loaded (journal replayed)"
    } else {
        "in memory only (no journal)"
    };
    observer.set_check("state", Check::healthy(state), true);
    observer.attach(&engine, journal.as_ref().map(|j| j.stats()), health.clone());

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let (closing_tx, closing_rx) = watch::channel(false);
    let service = KnhkService {
        engine: engine.clone(),
        closing: closing_rx,
        metrics: observer.enabled().then(|| observer.metrics().rpc.clone()),
    };

    // Shutdown sequence, driven by the signal.
    let (stop_transport_tx, stop_transport_rx) = tokio::sync::oneshot::channel::<()>();
    let (deadline_tx, deadline_rx) = tokio::sync::oneshot::channel::<()>();
    {
        let engine = engine.clone();
        let health = health.clone();
        let grace = cfg.drain_grace;
        let timeout = cfg.shutdown_timeout;
        let observer = observer.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutdown: draining");
            observer.set_phase(Phase::Draining);
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health
                .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
                .await;
            engine.drain();
            let _ = closing_tx.send(true);
            tokio::time::sleep(grace).await;
            let _ = stop_transport_tx.send(());
            tokio::time::sleep(timeout).await;
            let _ = deadline_tx.send(());
        });
    }

    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(cfg.max_concurrent_streams))
        .tcp_nodelay(true)
        .layer(observer.rpc_layer())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            KnhkServer::new(service)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        );
    let incoming = SharedIncoming(listener);
    let transport = router.serve_with_incoming_shutdown(incoming, async move {
        let _ = stop_transport_rx.await;
    });

    observer.set_phase(Phase::Serving);
    health.set_service_status("", ServingStatus::Serving).await;
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    on_ready(Running {
        engine: engine.clone(),
        health: health.clone(),
        journal: journal.as_ref().map(|j| j.stats()),
    });

    let result = tokio::select! {
        r = transport => r.map_err(|e| e.into()),
        _ = deadline_rx => {
            tracing::warn!("shutdown: deadline reached with calls still open; closing them");
            Ok(())
        }
    };
    let _ = tokio::task::spawn_blocking(move || core.stop()).await;
    observer.set_phase(Phase::Stopped);
    observer.stop_http().await;
    tracing::info!("shutdown: workers stopped");
    result
}

/// Connections accepted from a listener shared by the startup server and the full server.
struct SharedIncoming(Arc<TcpListener>);

impl Stream for SharedIncoming {
    type Item = std::io::Result<tokio::net::TcpStream>;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_accept(cx).map(|r| {
            Some(r.map(|(stream, _)| {
                // Small replies must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                stream
            }))
        })
    }
}

/// Binds `addr` and serves until SIGINT or SIGTERM.
pub async fn serve_addr(
    addr: SocketAddr,
    cfg: ServerConfig,
    journal: Option<JournalConfig>,
    observe: ObserveConfig,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let observer = Observer::new(observe);
    // HTTP first: the startup probe answers (503) while the journal replays.
    observer.start_http().await?;
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    serve_observed(
        listener,
        cfg,
        None,
        journal,
        observer,
        shutdown_signal(),
        move |r| {
            tracing::info!(
                addr = %local,
                workers = r.engine.shard_count(),
                "knhk serving gRPC (knhk.v1.Knhk, grpc.health.v1, reflection)"
            );
        },
    )
    .await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// The `knhk.v1.Knhk` implementation.
pub struct KnhkService {
    engine: Arc<Engine>,
    closing: watch::Receiver<bool>,
    /// RPC metrics (None when metrics are off): watch events lost to slow subscribers.
    metrics: Option<crate::metrics::RpcMetrics>,
}

impl KnhkService {
    fn live(&self) -> Result<(), Status> {
        if self.engine.is_draining() {
            Err(crate::grpc::status::status(EngineError::Draining))
        } else {
            Ok(())
        }
    }

    async fn task(&self, kind: OpKind, r: TaskRequest) -> Result<Response<Case>, Status> {
        telemetry::record_case(r.case_id, Some(&r.task));
        let view = self
            .engine
            .task_op(
                kind,
                r.case_id,
                &r.task,
                &convert::data_in(&r.data),
                r.branch_bits,
            )
            .await
            .or_status()?;
        Ok(Response::new(convert::case_out(&view)))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Knhk for KnhkService {
    async fn register_workflow(
        &self,
        request: Request<RegisterWorkflowRequest>,
    ) -> Result<Response<RegisterWorkflowResponse>, Status> {
        self.live()?;
        let r = request.into_inner();
        let format = convert::format_in(r.format)?;
        let model = Arc::new(r.model);
        let source = model.clone();
        let catalog::Compiled {
            model: m,
            net,
            format: detected,
        } = tokio::task::spawn_blocking(move || catalog::compile(&model, format))
            .await
            .map_err(|e| Status::internal(format!("compiler task: {e}")))?
            .or_status()?;
        let name = m.name.clone();
        // Durable, then visible (Engine::register): the journal's group commit runs inside,
        // so the whole registration runs on a blocking thread.
        let eng = self.engine.clone();
        let wf = tokio::task::spawn_blocking(move || {
            let hook = eng.hook();
            eng.register(
                &r.workflow_id,
                |index, id| {
                    Ok(Workflow::new(
                        index,
                        id,
                        detected,
                        &m,
                        *net,
                        engine::now_ns(),
                    ))
                },
                &name,
                |wf| hook.registered(wf, &source),
            )
        })
        .await
        .map_err(|e| Status::internal(format!("registration task: {e}")))?
        .or_status()?;
        telemetry::record_workflow(&wf.id);
        tracing::info!(workflow = %wf.id, tasks = wf.tasks.len(), "workflow registered");
        Ok(Response::new(RegisterWorkflowResponse {
            workflow: Some(convert::workflow_out(&wf)),
        }))
    }

    async fn get_workflow(
        &self,
        request: Request<GetWorkflowRequest>,
    ) -> Result<Response<proto::Workflow>, Status> {
        let wf = self
            .engine
            .workflow(&request.into_inner().workflow_id)
            .or_status()?;
        Ok(Response::new(convert::workflow_out(&wf)))
    }

    async fn list_workflows(
        &self,
        _request: Request<ListWorkflowsRequest>,
    ) -> Result<Response<ListWorkflowsResponse>, Status> {
        let workflows = self
            .engine
            .workflows()
            .iter()
            .map(|w| convert::workflow_out(w))
            .collect();
        Ok(Response::new(ListWorkflowsResponse { workflows }))
    }

    async fn create_case(
        &self,
        request: Request<CreateCaseRequest>,
    ) -> Result<Response<Case>, Status> {
        let r = request.into_inner();
        telemetry::record_workflow(&r.workflow_id);
        let view = self
            .engine
            .create_case(&r.workflow_id, &convert::data_in(&r.data))
            .await
            .or_status()?;
        telemetry::record_case(view.id, None);
        Ok(Response::new(convert::case_out(&view)))
    }

    async fn start_task(&self, request: Request<TaskRequest>) -> Result<Response<Case>, Status> {
        self.task(OpKind::Start, request.into_inner()).await
    }

    async fn complete_task(&self, request: Request<TaskRequest>) -> Result<Response<Case>, Status> {
        self.task(OpKind::Complete, request.into_inner()).await
    }

    async fn fire_task(&self, request: Request<TaskRequest>) -> Result<Response<Case>, Status> {
        self.task(OpKind::Fire, request.into_inner()).await
    }

    async fn cancel_task(&self, request: Request<TaskRequest>) -> Result<Response<Case>, Status> {
        self.task(OpKind::CancelTask, request.into_inner()).await
    }

    async fn cancel_case(
        &self,
        request: Request<CancelCaseRequest>,
    ) -> Result<Response<Case>, Status> {
        let case_id = request.into_inner().case_id;
        telemetry::record_case(case_id, None);
        let view = self.engine.cancel_case(case_id).await.or_status()?;
        Ok(Response::new(convert::case_out(&view)))
    }

    async fn get_case(&self, request: Request<GetCaseRequest>) -> Result<Response<Case>, Status> {
        let case_id = request.into_inner().case_id;
        telemetry::record_case(case_id, None);
        let view = self.engine.get_case(case_id).or_status()?;
        Ok(Response::new(convert::case_out(&view)))
    }

    type WatchCaseStream = ReceiverStream<Result<WatchEvent, Status>>;

    async fn watch_case(
        &self,
        request: Request<WatchCaseRequest>,
    ) -> Result<Response<Self::WatchCaseStream>, Status> {
        self.live()?;
        let r = request.into_inner();
        let mut subs = Vec::new();
        let filter;
        let mut history: Vec<Hist> = Vec::new();
        let mut first_wf: Option<Arc<Workflow>> = None;
        let mut finished = false;
        if r.case_id != 0 {
            let (wf, shard, slot) = self.engine.case_workflow(r.case_id).or_status()?;
            let sub = self
                .engine
                .subscribe(shard, Some((slot, r.case_id)))
                .or_status()?;
            if r.from_start {
                history = sub.history;
            }
            finished = sub.finished;
            subs.push((shard, sub.rx, sub.seq));
            filter = Filter::Case(r.case_id);
            first_wf = Some(wf);
        } else {
            filter = if r.workflow_id.is_empty() {
                Filter::All
            } else {
                Filter::Workflow(self.engine.workflow(&r.workflow_id).or_status()?.index)
            };
            for shard in 0..self.engine.shard_count() {
                let sub = self.engine.subscribe(shard, None).or_status()?;
                subs.push((shard, sub.rx, sub.seq));
            }
        }
        let (tx, rx) = mpsc::channel(128);
        let engine = self.engine.clone();
        let closing = self.closing.clone();
        let case_id = r.case_id;
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            if let Some(wf) = first_wf {
                for h in &history {
                    let ev = history_event(case_id, &wf, h);
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
            }
            if finished {
                // A finished case has no more events: the stream ends after its history.
                return;
            }
            forward_watch(engine, subs, filter, tx, closing, metrics).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type ListCasesStream = BoxStream<Case>;

    async fn list_cases(
        &self,
        request: Request<ListCasesRequest>,
    ) -> Result<Response<Self::ListCasesStream>, Status> {
        let r = request.into_inner();
        let wf = if r.workflow_id.is_empty() {
            None
        } else {
            Some(self.engine.workflow(&r.workflow_id).or_status()?.index)
        };
        let state = match proto::CaseState::try_from(r.state) {
            Ok(s) => convert::state_in(s),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "state {} is not a CaseState",
                    r.state
                )))
            }
        };
        let mut views: Vec<_> = self
            .engine
            .list_cases(wf, state)
            .into_iter()
            .flatten()
            .collect();
        views.sort_by_key(|v| v.id & 0xffff_ffff);
        let stream = tokio_stream::iter(views.into_iter().map(|v| Ok(convert::case_out(&v))));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn export_case_xes(
        &self,
        request: Request<ExportCaseXesRequest>,
    ) -> Result<Response<ExportCaseXesResponse>, Status> {
        let r = request.into_inner();
        let wf_filter = if r.case_id == 0 && !r.workflow_id.is_empty() {
            Some(self.engine.workflow(&r.workflow_id).or_status()?.index)
        } else {
            None
        };
        let hists = self.engine.histories(r.case_id, wf_filter).or_status()?;
        let wfs: HashMap<u16, Arc<Workflow>> = self
            .engine
            .workflows()
            .into_iter()
            .map(|w| (w.index, w))
            .collect();
        let inputs: Vec<xes::TraceInput<'_>> = hists
            .iter()
            .filter_map(|h| {
                Some(xes::TraceInput {
                    case_id: h.case_id,
                    workflow: wfs.get(&h.workflow)?,
                    history: &h.events,
                })
            })
            .collect();
        let name = if r.case_id != 0 {
            format!("knhk case {}", r.case_id)
        } else if r.workflow_id.is_empty() {
            "knhk cases".to_string()
        } else {
            format!("knhk cases of {}", r.workflow_id)
        };
        let doc = xes::export(&name, &inputs);
        Ok(Response::new(ExportCaseXesResponse {
            xes: doc.xml.into_bytes(),
            traces: doc.traces,
            events: doc.events,
            dropped_events: hists.iter().map(|h| h.dropped).sum(),
        }))
    }

    type SubmitEventsStream = ReceiverStream<Result<SubmitEventsResponse, Status>>;

    async fn submit_events(
        &self,
        request: Request<Streaming<SubmitEventsRequest>>,
    ) -> Result<Response<Self::SubmitEventsStream>, Status> {
        self.live()?;
        let mut input = request.into_inner();
        let (pending_tx, mut pending_rx) =
            mpsc::channel::<(engine::PendingBatch, tracing::Span)>(PIPELINE_DEPTH);
        let rpc_span = tracing::Span::current();
        let (out_tx, out_rx) = mpsc::channel(PIPELINE_DEPTH);
        let engine = self.engine.clone();
        let mut closing = self.closing.clone();
        // Reader: decodes batches and queues them; stops on end of input, error or shutdown.
        let err_tx = out_tx.clone();
        tokio::spawn(async move {
            loop {
                if *closing.borrow() {
                    break;
                }
                tokio::select! {
                    msg = input.message() => match msg {
                        Ok(Some(m)) => {
                            let span = telemetry::batch_span(&rpc_span, m.events.len());
                            let events = m.events.into_iter().map(convert::event_in).collect();
                            let pending = span.in_scope(|| engine.submit_batch(events));
                            if pending_tx.send((pending, span)).await.is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            let _ = err_tx.send(Err(status)).await;
                            break;
                        }
                    },
                    _ = closing.changed() => break,
                }
            }
        });
        // Writer: answers batches in order as their jobs come back.
        let engine = self.engine.clone();
        tokio::spawn(async move {
            while let Some((p, span)) = pending_rx.recv().await {
                let results =
                    tracing::Instrument::instrument(p.finish(&engine), span.clone()).await;
                span.record(
                    "knhk.refused",
                    results.iter().filter(|r| r.error.is_some()).count(),
                );
                let results = results.into_iter().map(convert::result_out).collect();
                drop(span);
                if out_tx
                    .send(Ok(SubmitEventsResponse { results }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

#[derive(Debug, Clone, Copy)]
enum Filter {
    Case(u64),
    Workflow(u16),
    All,
}

impl Filter {
    fn matches(&self, item: &WatchItem) -> bool {
        match self {
            Filter::Case(id) => item.case_id == *id,
            Filter::Workflow(w) => item.workflow == *w,
            Filter::All => true,
        }
    }
}

fn history_event(case_id: u64, wf: &Workflow, h: &Hist) -> WatchEvent {
    WatchEvent {
        case_id,
        workflow_id: wf.id.clone(),
        kind: EventKind::Task as i32,
        task: wf.task_name(h.task).to_string(),
        lifecycle: h.lifecycle as i32,
        time_unix_nanos: h.time_ns,
        ..WatchEvent::default()
    }
}

fn watch_event(item: &WatchItem, wf: &Workflow, lagged: u64) -> WatchEvent {
    WatchEvent {
        case_id: item.case_id,
        workflow_id: wf.id.clone(),
        kind: convert::event_kind_out(item.kind) as i32,
        task: if item.kind == knhk_engine::EventKind::Task {
            wf.task_name(item.task).to_string()
        } else {
            String::new()
        },
        lifecycle: item.lifecycle.map_or(0, |l| l as i32),
        time_unix_nanos: item.time_ns,
        case_seq: item.seq,
        state: convert::state_out(item.state) as i32,
        marking: wf.marking_names(item.marking),
        enabled_tasks: wf.task_names(item.enabled),
        lagged,
    }
}

/// Moves a watcher's events from the shards' broadcast channels to its gRPC stream. A slow
/// client blocks only this task; the broadcast channel then overwrites what it did not read,
/// and the gap in the shard's event numbers is reported in the next event's `lagged`.
async fn forward_watch(
    engine: Arc<Engine>,
    subs: Vec<(usize, broadcast::Receiver<Arc<EventBatch>>, u64)>,
    filter: Filter,
    tx: mpsc::Sender<Result<WatchEvent, Status>>,
    mut closing: watch::Receiver<bool>,
    metrics: Option<crate::metrics::RpcMetrics>,
) {
    let mut expected: HashMap<usize, u64> = HashMap::new();
    let mut streams = StreamMap::new();
    for (shard, rx, seq) in subs {
        expected.insert(shard, seq);
        streams.insert(shard, BroadcastStream::new(rx));
    }
    let mut wfs: HashMap<u16, Arc<Workflow>> = HashMap::new();
    let mut lagged: u64 = 0;
    loop {
        if *closing.borrow() {
            return;
        }
        let next = tokio::select! {
            n = streams.next() => n,
            _ = closing.changed() => return,
            _ = tx.closed() => return,
        };
        let Some((shard, item)) = next else { return };
        let Ok(batch) = item else {
            // Lagged: the count comes from the sequence gap of the next batch.
            continue;
        };
        let exp = expected.entry(shard).or_insert(batch.first);
        if batch.first + (batch.items.len() as u64) <= *exp {
            continue; // entirely before our subscription point
        }
        if batch.first > *exp {
            lagged += batch.first - *exp;
            crate::metrics::watch_lost(metrics.as_ref(), batch.first - *exp);
        }
        let skip = exp.saturating_sub(batch.first) as usize;
        *exp = batch.first + batch.items.len() as u64;
        for item in batch.items.iter().skip(skip) {
            if !filter.matches(item) {
                continue;
            }
            let wf = match wfs.get(&item.workflow) {
                Some(w) => w.clone(),
                None => match engine.workflow_at(item.workflow) {
                    Some(w) => {
                        wfs.insert(item.workflow, w.clone());
                        w
                    }
                    None => continue,
                },
            };
            let ev = watch_event(item, &wf, lagged);
            lagged = 0;
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
            if let Filter::Case(_) = filter {
                if matches!(
                    item.kind,
                    knhk_engine::EventKind::CaseCompleted | knhk_engine::EventKind::CaseCancelled
                ) {
                    return;
                }
            }
        }
    }
}
