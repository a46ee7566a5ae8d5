//! `knhk.v1.Knhk` over the engine: decode, call the engine, encode. No business logic here;
//! refusals become statuses in [`super::status`], messages convert in [`super::convert`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};
use tokio_stream::{Stream, StreamExt, StreamMap};
use tonic::{Request, Response, Status, Streaming};

use knhk_engine::catalog;

use super::convert;
use super::status::{status, OrStatus};
use crate::engine::{self, Engine, EventBatch, Hist, WatchItem};
use crate::proto::knhk_server::Knhk;
use crate::proto::{self, *};
use crate::telemetry;
use crate::workers::OpKind;
use crate::workflow::Workflow;
use crate::xes;

/// Bulk batches a SubmitEvents stream may have in flight before it stops reading input.
const PIPELINE_DEPTH: usize = 64;
/// The `knhk.v1.Knhk` implementation.
pub struct KnhkService {
    engine: Arc<Engine>,
    closing: watch::Receiver<bool>,
    /// RPC metrics (None when metrics are off): watch events lost to slow subscribers.
    metrics: Option<crate::metrics::RpcMetrics>,
}

impl KnhkService {
    /// The service over `engine`; `closing` flips when shutdown begins (streams end).
    pub fn new(
        engine: Arc<Engine>,
        closing: watch::Receiver<bool>,
        metrics: Option<crate::metrics::RpcMetrics>,
    ) -> KnhkService {
        KnhkService {
            engine,
            closing,
            metrics,
        }
    }

    fn live(&self) -> Result<(), Status> {
        if self.engine.is_draining() {
            Err(status(knhk_engine::EngineError::Draining))
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
