//! `knhk.v1.Knhk` over the engine: decode, call the engine, encode. No business logic here;
//! refusals become statuses in [`super::status`], messages convert in [`super::convert`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};
use tokio_stream::{Stream, StreamExt, StreamMap};
use tonic::{Request, Response, Status, Streaming};

use knhk_engine::archive::ArchiveQuery;
use knhk_engine::command::{BatchEvent, EventResult};
use knhk_engine::{catalog, EngineError};

use super::convert;
use super::status::{status, OrStatus};
use crate::audit::{cap, AuditLog, Record};
use crate::auth::Caller;
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
    /// Open WatchCase streams, and the cap on them.
    watchers: Arc<std::sync::atomic::AtomicUsize>,
    max_watchers: usize,
    /// The audit log: every state-changing call is answered once its record is durable.
    audit: Option<Arc<AuditLog>>,
    /// Workflows a namespace may register, and cases it may have unfinished (0: no limit).
    ns_limits: NamespaceLimits,
}

/// `--max-workflows-per-namespace`, `--max-live-cases-per-namespace` (0: no limit).
#[derive(Debug, Clone, Copy, Default)]
pub struct NamespaceLimits {
    pub workflows: usize,
    pub live_cases: u64,
}

impl NamespaceLimits {
    /// RESOURCE_EXHAUSTED when `ns` has its cap of workflows.
    pub fn check_workflows(&self, engine: &Engine, ns: &str) -> Result<(), EngineError> {
        if self.workflows == 0 {
            return Ok(());
        }
        let n = engine
            .workflows()
            .iter()
            .filter(|w| w.namespace == ns)
            .count();
        if n >= self.workflows {
            return Err(EngineError::Exhausted(format!(
                "namespace '{ns}' has {n} workflows (versions included), the most a namespace may register \
                 (--max-workflows-per-namespace)"
            )));
        }
        Ok(())
    }

    /// How many more cases `ns` may create (None: no limit).
    fn case_room(&self, engine: &Engine, ns: &str) -> Option<u64> {
        if self.live_cases == 0 {
            return None;
        }
        let indices: Vec<u16> = engine
            .workflows()
            .iter()
            .filter(|w| w.namespace == ns)
            .map(|w| w.index)
            .collect();
        Some(
            self.live_cases
                .saturating_sub(engine.unfinished_cases(&indices)),
        )
    }

    fn cases_refusal(&self, ns: &str) -> EngineError {
        EngineError::Exhausted(format!(
            "namespace '{ns}' has {} unfinished cases, the most it may have \
             (--max-live-cases-per-namespace): finish or cancel some first",
            self.live_cases
        ))
    }
}

/// One open watch stream's place under the cap; given back when its task ends.
struct WatchSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for WatchSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
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
            watchers: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            max_watchers: usize::MAX,
            audit: None,
            ns_limits: NamespaceLimits::default(),
        }
    }

    /// Caps on workflows and unfinished cases per namespace.
    pub fn with_namespace_limits(mut self, limits: NamespaceLimits) -> KnhkService {
        self.ns_limits = limits;
        self
    }

    /// Records every state-changing call in `audit` before answering it.
    pub fn with_audit(mut self, audit: Option<Arc<AuditLog>>) -> KnhkService {
        self.audit = audit;
        self
    }

    /// The audit record a state-changing call of `method` starts (None without an audit log);
    /// UNAVAILABLE once the audit log has failed (nothing is changed that cannot be recorded).
    pub(crate) fn audit_start<T>(
        &self,
        request: &Request<T>,
        method: &str,
    ) -> Result<Option<Record>, Status> {
        let Some(audit) = &self.audit else {
            return Ok(None);
        };
        if let Some(why) = audit.failure() {
            return Err(Status::unavailable(format!(
                "the audit log cannot record changes: {why}"
            )));
        }
        let rpc = format!("/{}/{method}", super::SERVICE_NAME);
        Ok(Some(Record::of_caller(
            &rpc,
            &Caller::of(request),
            request.remote_addr(),
        )))
    }

    /// Answers `r` once its audit record (`rec`, completed with the outcome) is durable. A
    /// change whose record cannot be written is answered UNAVAILABLE, never OK.
    pub(crate) async fn audited<T>(
        &self,
        rec: Option<Record>,
        r: Result<T, Status>,
    ) -> Result<T, Status> {
        let (Some(audit), Some(mut rec)) = (&self.audit, rec) else {
            return r;
        };
        rec.outcome(&r);
        match audit.append(rec).await {
            Err(why) if r.is_ok() => Err(audit_lost(&why)),
            _ => r,
        }
    }

    /// Runs `call`, a state-changing engine call, so that its audit record (`rec`, completed
    /// with the case id and the op's result) is queued the moment the op has executed: on the
    /// shard's reply thread, before the event log's group commit takes the op. The record's
    /// `fdatasync` then runs alongside the event log's, and the answer waits for both. It is
    /// queued even when the caller goes away meanwhile: a change made is recorded. A call
    /// refused before its op executed is recorded after, as [`Self::audited`] does;
    /// `case_of` names the case of a successful result (a created case's new id).
    async fn audited_call<T>(
        &self,
        rec: Option<Record>,
        call: impl std::future::Future<Output = Result<T, Status>>,
        case_of: impl FnOnce(&T) -> Option<u64>,
    ) -> Result<T, Status> {
        let (Some(audit), Some(mut rec)) = (&self.audit, rec) else {
            return call.await;
        };
        let queued: Arc<std::sync::Mutex<Option<crate::audit::Pending>>> = Arc::default();
        let note: knhk_engine::ExecutedNote = {
            let (audit, mut rec, queued) = (audit.clone(), rec.clone(), queued.clone());
            Box::new(move |case_id, r| {
                rec.case = Some(case_id);
                rec.outcome(&r.map_err(status));
                let pending = audit.append_for_commit(rec);
                *queued.lock().unwrap_or_else(|p| p.into_inner()) = Some(pending);
            })
        };
        let r = knhk_engine::with_executed_note(note, call).await;
        let pending = queued.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(pending) = pending else {
            if let Some(case) = r.as_ref().ok().and_then(case_of) {
                rec.case = Some(case);
            }
            return self.audited(Some(rec), r).await;
        };
        match pending.durable().await {
            Err(why) if r.is_ok() => Err(audit_lost(&why)),
            _ => r,
        }
    }

    /// `refusal` of a call to `method` that changes nothing, recorded in the audit log
    /// (queued, not waited for) as the auth layer records its refusals.
    fn refusal_noted<T>(&self, request: &Request<T>, method: &str, refusal: Status) -> Status {
        if let Some(audit) = &self.audit {
            let rpc = format!("/{}/{method}", super::SERVICE_NAME);
            let mut rec = Record::of_caller(&rpc, &Caller::of(request), request.remote_addr());
            rec.outcome::<()>(&Err(refusal.clone()));
            audit.note(rec);
        }
        refusal
    }

    /// At most `max` open WatchCase streams (more get RESOURCE_EXHAUSTED).
    pub fn with_max_watchers(mut self, max: usize) -> KnhkService {
        self.max_watchers = max.max(1);
        self
    }

    /// A place for one more watch stream, or RESOURCE_EXHAUSTED naming the cap.
    fn watch_slot(&self) -> Result<WatchSlot, Status> {
        use std::sync::atomic::Ordering;
        let n = self.watchers.fetch_add(1, Ordering::AcqRel);
        if n >= self.max_watchers {
            self.watchers.fetch_sub(1, Ordering::AcqRel);
            return Err(Status::resource_exhausted(format!(
                "{n} watch streams are open, the server's cap (--max-watchers): close one or \
                 retry later"
            )));
        }
        Ok(WatchSlot(self.watchers.clone()))
    }

    /// The workflow `id` when it belongs to namespace `ns`; otherwise NOT_FOUND, the same
    /// answer as for an unknown id (another namespace's objects are never revealed).
    fn workflow_in(&self, id: &str, ns: &str) -> Result<Arc<Workflow>, Status> {
        self.engine.workflow_in(ns, id).or_status()
    }

    /// Every version of workflow `id` of namespace `ns`, as a filter on cases; None for an
    /// empty id (no filter).
    fn versions_of(&self, id: &str, ns: &str) -> Result<Option<Versions>, Status> {
        if id.is_empty() {
            return Ok(None);
        }
        Ok(Some(Versions {
            id: id.to_string(),
            indices: self.engine.version_indices_in(ns, id).or_status()?,
        }))
    }

    /// The workflow, shard and slot of case `case_id` when it belongs to namespace `ns`;
    /// otherwise NOT_FOUND, as for an unknown case.
    fn case_in(&self, case_id: u64, ns: &str) -> Result<(Arc<Workflow>, usize, u32), Status> {
        let r = self.engine.case_workflow(case_id).or_status()?;
        if r.0.namespace != ns {
            return Err(status(EngineError::NoCase(case_id)));
        }
        Ok(r)
    }

    fn live(&self) -> Result<(), Status> {
        if self.engine.is_draining() {
            Err(status(knhk_engine::EngineError::Draining))
        } else {
            Ok(())
        }
    }

    async fn task(
        &self,
        kind: OpKind,
        method: &str,
        request: Request<TaskRequest>,
    ) -> Result<Response<Case>, Status> {
        let mut rec = self.audit_start(&request, method)?;
        if let Some(a) = rec.as_mut() {
            a.case = Some(request.get_ref().case_id);
            a.task = Some(cap(&request.get_ref().task));
        }
        self.audited_call(rec, self.task_op(kind, request), |_| None)
            .await
    }

    async fn task_op(
        &self,
        kind: OpKind,
        request: Request<TaskRequest>,
    ) -> Result<Response<Case>, Status> {
        let ns = Caller::of(&request).namespace;
        let r = request.into_inner();
        telemetry::record_case(r.case_id, Some(&r.task));
        self.case_in(r.case_id, &ns)?;
        let view = self
            .engine
            .task_op(
                kind,
                r.case_id,
                &r.task,
                &convert::data_in(&r.data),
                r.branch_bits,
                r.expected_seq,
            )
            .await
            .or_status()?;
        Ok(Response::new(convert::case_out(&view)))
    }

    /// Start, complete or add an instance of a multiple-instance task (audited).
    async fn instance(
        &self,
        kind: OpKind,
        method: &str,
        request: Request<InstanceRequest>,
    ) -> Result<Response<InstanceResponse>, Status> {
        let mut rec = self.audit_start(&request, method)?;
        if let Some(a) = rec.as_mut() {
            let r = request.get_ref();
            a.case = Some(r.case_id);
            a.task = Some(cap(&r.task));
            a.instance = (kind != OpKind::AddInstance).then_some(r.instance);
        }
        self.audited_call(rec, self.instance_op(kind, request), |_| None)
            .await
    }

    async fn instance_op(
        &self,
        kind: OpKind,
        request: Request<InstanceRequest>,
    ) -> Result<Response<InstanceResponse>, Status> {
        let ns = Caller::of(&request).namespace;
        let r = request.into_inner();
        telemetry::record_case(r.case_id, Some(&r.task));
        self.case_in(r.case_id, &ns)?;
        if kind != OpKind::CompleteInstance && (!r.data.is_empty() || r.branch_bits.is_some()) {
            return Err(status(EngineError::BadData {
                reason: "data and branch_bits are for CompleteInstance".into(),
            }));
        }
        let (view, instance) = self
            .engine
            .instance_op(
                kind,
                r.case_id,
                &r.task,
                r.instance,
                &convert::data_in(&r.data),
                r.branch_bits,
            )
            .await
            .or_status()?;
        Ok(Response::new(InstanceResponse {
            case: Some(convert::case_out(&view)),
            instance,
        }))
    }

    /// RegisterWorkflow with its audit record: `register` does the work (this service's
    /// [`Self::register`], or a cluster node's registration through its catalog).
    pub(crate) async fn register_audited<F>(
        &self,
        request: Request<RegisterWorkflowRequest>,
        register: impl FnOnce(Request<RegisterWorkflowRequest>) -> F,
    ) -> Result<Response<RegisterWorkflowResponse>, Status>
    where
        F: std::future::Future<Output = Result<Response<RegisterWorkflowResponse>, Status>>,
    {
        let mut rec = self.audit_start(&request, "RegisterWorkflow")?;
        if let Some(a) = rec.as_mut() {
            let id = &request.get_ref().workflow_id;
            a.workflow = (!id.is_empty()).then(|| cap(id));
        }
        let r = register(request).await;
        if let (Some(a), Ok(resp)) = (rec.as_mut(), &r) {
            a.workflow = resp
                .get_ref()
                .workflow
                .as_ref()
                .map(|w| w.workflow_id.clone());
        }
        self.audited(rec, r).await
    }

    /// RetireWorkflow, audited once around `retire` (this service's own, or the cluster's,
    /// which publishes the retirement to every node).
    pub(crate) async fn retire_audited<F>(
        &self,
        request: Request<proto::RetireWorkflowRequest>,
        retire: impl FnOnce(Request<proto::RetireWorkflowRequest>) -> F,
    ) -> Result<Response<proto::Workflow>, Status>
    where
        F: std::future::Future<Output = Result<Response<proto::Workflow>, Status>>,
    {
        let mut rec = self.audit_start(&request, "RetireWorkflow")?;
        if let Some(a) = rec.as_mut() {
            a.workflow = Some(cap(&request.get_ref().workflow_id));
        }
        let r = retire(request).await;
        self.audited(rec, r).await
    }

    /// RetireWorkflow, unaudited.
    pub(crate) async fn retire_unaudited(
        &self,
        request: Request<proto::RetireWorkflowRequest>,
    ) -> Result<Response<proto::Workflow>, Status> {
        let ns = Caller::of(&request).namespace;
        let id = request.into_inner().workflow_id;
        // The journal's sync (or the cluster's publish) runs inside: on a blocking thread.
        let eng = self.engine.clone();
        tokio::task::spawn_blocking(move || eng.retire_in(&ns, &id))
            .await
            .map_err(|e| Status::internal(format!("retirement task: {e}")))
            .and_then(|r| r.or_status())
            .map(|wf| {
                tracing::info!(workflow = %wf.id, namespace = %wf.namespace, "workflow retired");
                Response::new(convert::workflow_out(&wf))
            })
    }

    /// DeleteWorkflow through `delete` (this engine's deletion, or the cluster's), audited once.
    pub(crate) async fn delete_audited<F>(
        &self,
        request: Request<proto::DeleteWorkflowRequest>,
        delete: impl FnOnce(Request<proto::DeleteWorkflowRequest>) -> F,
    ) -> Result<Response<proto::Workflow>, Status>
    where
        F: std::future::Future<Output = Result<Response<proto::Workflow>, Status>>,
    {
        let mut rec = self.audit_start(&request, "DeleteWorkflow")?;
        if let Some(a) = rec.as_mut() {
            let r = request.get_ref();
            a.workflow = Some(format!("{} version {}", cap(&r.workflow_id), r.version));
        }
        let r = delete(request).await;
        self.audited(rec, r).await
    }

    /// DeleteWorkflow, unaudited.
    pub(crate) async fn delete_unaudited(
        &self,
        request: Request<proto::DeleteWorkflowRequest>,
    ) -> Result<Response<proto::Workflow>, Status> {
        let ns = Caller::of(&request).namespace;
        let r = request.into_inner();
        // The journal's sync (or the cluster's publish) runs inside: on a blocking thread.
        let eng = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            eng.delete_in(&ns, &r.workflow_id, r.version, r.delete_history)
        })
        .await
        .map_err(|e| Status::internal(format!("deletion task: {e}")))
        .and_then(|r| r.or_status())
        .map(|wf| {
            tracing::info!(workflow = %wf.id, version = wf.version, namespace = %wf.namespace,
                    "workflow version deleted");
            Response::new(convert::workflow_out(&wf))
        })
    }

    /// RegisterWorkflow, unaudited.
    pub(crate) async fn register(
        &self,
        request: Request<RegisterWorkflowRequest>,
    ) -> Result<Response<RegisterWorkflowResponse>, Status> {
        self.live()?;
        let ns = Caller::of(&request).namespace;
        // Before the import: a namespace at its cap costs no parsing.
        let limits = self.ns_limits;
        limits.check_workflows(&self.engine, &ns).or_status()?;
        let r = request.into_inner();
        if !r.workflow_id.is_empty() {
            knhk_engine::error::check_id(&r.workflow_id).or_status()?;
        }
        let format = convert::format_in(r.format)?;
        let model = Arc::new(r.model);
        let source = model.clone();
        // Import runs on a blocking thread, which a dropped future cannot stop: when the
        // client goes away (or its deadline passes) this handler is dropped, the guard raises
        // the flag, and the importer stops at its next check instead of finishing unwanted work.
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let client_predicates = r.client_predicates;
        let manual_silent = r.manual_silent_tasks;
        let subnet_cases = r.subnet_cases;
        let timers = r
            .task_timers
            .iter()
            .map(convert::task_timer_in)
            .collect::<Result<Vec<_>, Status>>()?;
        let opts = knhk_import::Options {
            cancel: Some(cancel),
            external_predicates: client_predicates,
            refuse_undecided: r.refuse_undecided,
            empty_tasks_silent: !manual_silent,
            subnet_cases: if subnet_cases {
                knhk_import::SubnetCases::Always
            } else {
                knhk_import::SubnetCases::Auto
            },
            ..knhk_import::Options::default()
        };
        let catalog::Compiled {
            model: mut m,
            net,
            format: detected,
            findings,
            soundness_decided,
            subnet_nets,
        } = tokio::task::spawn_blocking(move || {
            let compiled = catalog::compile_with(&model, format, &opts);
            if compiled.is_err() && opts.cancelled() {
                tracing::info!(
                    bytes = model.len(),
                    "model import stopped: the caller went away"
                );
            }
            compiled
        })
        .await
        .map_err(|e| Status::internal(format!("compiler task: {e}")))?
        .or_status()?;
        for t in &timers {
            t.apply(&mut m).or_status()?;
        }
        let name = m.name.clone();
        let notes = m.notes.clone();
        let digest = knhk_engine::workflow::registration_digest(
            &source,
            detected,
            client_predicates,
            manual_silent,
            subnet_cases,
            &timers,
        );
        // Durable, then visible (Engine::register): the journal's group commit runs inside,
        // so the whole registration runs on a blocking thread.
        let eng = self.engine.clone();
        let wf = tokio::task::spawn_blocking(move || {
            let hook = eng.hook();
            eng.register_in(
                &ns,
                &r.workflow_id,
                Some(digest),
                |index, id| {
                    // Again under the registration lock: concurrent registrations cannot
                    // pass the cap together.
                    limits.check_workflows(&eng, &ns)?;
                    Ok(
                        Workflow::new(index, id, detected, &m, *net, engine::now_ns())
                            .in_namespace(&ns)
                            .with_client_predicates(client_predicates)
                            .with_manual_silent_tasks(manual_silent)
                            .with_registered_timers(timers)
                            .with_source_digest(digest)
                            .with_subnet_cases(subnet_cases)
                            .with_subnets(&m, subnet_nets),
                    )
                },
                &name,
                |wf| hook.registered(wf, &source),
            )
        })
        .await
        .map_err(|e| Status::internal(format!("registration task: {e}")))?
        .or_status()?;
        telemetry::record_workflow(&wf.id);
        tracing::info!(
            workflow = %wf.id,
            namespace = %wf.namespace,
            tasks = wf.tasks.len(),
            "workflow registered"
        );
        let (warnings, infos): (Vec<_>, Vec<_>) = findings
            .into_iter()
            .partition(|f| f.severity == knhk_import::Severity::Warning);
        Ok(Response::new(RegisterWorkflowResponse {
            workflow: Some(convert::workflow_out(&wf)),
            soundness_decided,
            warnings: warnings.into_iter().map(|f| f.message).collect(),
            notes: notes
                .into_iter()
                .chain(infos.into_iter().map(|f| f.message))
                .collect(),
        }))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Knhk for KnhkService {
    async fn register_workflow(
        &self,
        request: Request<RegisterWorkflowRequest>,
    ) -> Result<Response<RegisterWorkflowResponse>, Status> {
        self.register_audited(request, |r| self.register(r)).await
    }

    async fn retire_workflow(
        &self,
        request: Request<proto::RetireWorkflowRequest>,
    ) -> Result<Response<proto::Workflow>, Status> {
        self.retire_audited(request, |r| self.retire_unaudited(r))
            .await
    }

    async fn delete_workflow(
        &self,
        request: Request<proto::DeleteWorkflowRequest>,
    ) -> Result<Response<proto::Workflow>, Status> {
        self.delete_audited(request, |r| self.delete_unaudited(r))
            .await
    }

    async fn get_workflow(
        &self,
        request: Request<GetWorkflowRequest>,
    ) -> Result<Response<proto::Workflow>, Status> {
        let ns = Caller::of(&request).namespace;
        let r = request.into_inner();
        let wf = self
            .engine
            .workflow_version_in(&ns, &r.workflow_id, r.version)
            .or_status()?;
        Ok(Response::new(convert::workflow_out(&wf)))
    }

    async fn list_workflows(
        &self,
        request: Request<ListWorkflowsRequest>,
    ) -> Result<Response<ListWorkflowsResponse>, Status> {
        let ns = Caller::of(&request).namespace;
        let workflows = self
            .engine
            .workflows()
            .iter()
            .filter(|w| {
                w.namespace == ns
                    && w.subnet_of.is_none()
                    && !w.deleted.load(std::sync::atomic::Ordering::Acquire)
            })
            .map(|w| convert::workflow_out(w))
            .collect();
        Ok(Response::new(ListWorkflowsResponse { workflows }))
    }

    async fn get_topology(
        &self,
        _request: Request<GetTopologyRequest>,
    ) -> Result<Response<Topology>, Status> {
        // A single node owns its one partition.
        let partition = u32::from(self.engine.config().partition);
        Ok(Response::new(Topology {
            partitions: 1,
            owners: vec![PartitionOwner {
                partition,
                node_id: String::new(),
                address: String::new(),
                epoch: 0,
            }],
        }))
    }

    async fn create_case(
        &self,
        request: Request<CreateCaseRequest>,
    ) -> Result<Response<Case>, Status> {
        let mut rec = self.audit_start(&request, "CreateCase")?;
        let ns = Caller::of(&request).namespace;
        let r = request.into_inner();
        if let Some(a) = rec.as_mut() {
            a.workflow = Some(cap(&r.workflow_id));
        }
        let call = async {
            telemetry::record_workflow(&r.workflow_id);
            self.workflow_in(&r.workflow_id, &ns)?;
            if self.ns_limits.case_room(&self.engine, &ns) == Some(0) {
                return Err(status(self.ns_limits.cases_refusal(&ns)));
            }
            let view = self
                .engine
                .create_case_in(&ns, &r.workflow_id, &convert::data_in(&r.data))
                .await
                .or_status()?;
            telemetry::record_case(view.id, None);
            Ok(Response::new(convert::case_out(&view)))
        };
        self.audited_call(rec, call, |c| Some(c.get_ref().case_id))
            .await
    }

    async fn start_task(&self, request: Request<TaskRequest>) -> Result<Response<Case>, Status> {
        self.task(OpKind::Start, "StartTask", request).await
    }

    async fn complete_task(&self, request: Request<TaskRequest>) -> Result<Response<Case>, Status> {
        self.task(OpKind::Complete, "CompleteTask", request).await
    }

    async fn fire_task(&self, request: Request<TaskRequest>) -> Result<Response<Case>, Status> {
        self.task(OpKind::Fire, "FireTask", request).await
    }

    async fn cancel_task(&self, request: Request<TaskRequest>) -> Result<Response<Case>, Status> {
        self.task(OpKind::CancelTask, "CancelTask", request).await
    }

    async fn start_instances(
        &self,
        request: Request<InstanceRequest>,
    ) -> Result<Response<InstanceResponse>, Status> {
        self.instance(OpKind::Start, "StartInstances", request)
            .await
    }

    async fn start_instance(
        &self,
        request: Request<InstanceRequest>,
    ) -> Result<Response<InstanceResponse>, Status> {
        self.instance(OpKind::StartInstance, "StartInstance", request)
            .await
    }

    async fn complete_instance(
        &self,
        request: Request<InstanceRequest>,
    ) -> Result<Response<InstanceResponse>, Status> {
        self.instance(OpKind::CompleteInstance, "CompleteInstance", request)
            .await
    }

    async fn add_instance(
        &self,
        request: Request<InstanceRequest>,
    ) -> Result<Response<InstanceResponse>, Status> {
        self.instance(OpKind::AddInstance, "AddInstance", request)
            .await
    }

    async fn list_instances(
        &self,
        request: Request<ListInstancesRequest>,
    ) -> Result<Response<ListInstancesResponse>, Status> {
        let ns = Caller::of(&request).namespace;
        let r = request.into_inner();
        self.case_in(r.case_id, &ns)?;
        let engine = self.engine.clone();
        let case_id = r.case_id;
        let view = tokio::task::spawn_blocking(move || engine.get_case(case_id))
            .await
            .map_err(|e| Status::internal(format!("list instances: {e}")))?
            .or_status()?;
        let t = view.workflow.task(&r.task).or_status()?;
        if view.workflow.mi_spec(t).is_none() {
            return Err(status(EngineError::Precondition(format!(
                "task '{}' of workflow '{}' is not multiple-instance",
                view.workflow.task_name(t),
                view.workflow.id
            ))));
        }
        let mut out = ListInstancesResponse {
            case_id,
            task: view.workflow.task_name(t).to_string(),
            ..ListInstancesResponse::default()
        };
        if let Some(inst) = view.last.instances(t) {
            out.live = true;
            out.created = inst.created;
            out.completed = inst.completed();
            out.instances = inst
                .iter()
                .map(|(i, st)| TaskInstance {
                    instance: i,
                    state: match st {
                        knhk_kernel::InstanceState::Created => InstanceState::Created,
                        knhk_kernel::InstanceState::Started => InstanceState::Started,
                        knhk_kernel::InstanceState::Completed => InstanceState::Completed,
                        knhk_kernel::InstanceState::None => InstanceState::Unspecified,
                    } as i32,
                })
                .collect();
        }
        Ok(Response::new(out))
    }

    async fn cancel_case(
        &self,
        request: Request<CancelCaseRequest>,
    ) -> Result<Response<Case>, Status> {
        let mut rec = self.audit_start(&request, "CancelCase")?;
        let ns = Caller::of(&request).namespace;
        let case_id = request.into_inner().case_id;
        if let Some(a) = rec.as_mut() {
            a.case = Some(case_id);
        }
        let call = async {
            telemetry::record_case(case_id, None);
            self.case_in(case_id, &ns)?;
            let view = self.engine.cancel_case(case_id).await.or_status()?;
            Ok(Response::new(convert::case_out(&view)))
        };
        self.audited_call(rec, call, |_| None).await
    }

    async fn get_case(&self, request: Request<GetCaseRequest>) -> Result<Response<Case>, Status> {
        let ns = Caller::of(&request).namespace;
        let r = request.into_inner();
        let case_id = r.case_id;
        telemetry::record_case(case_id, None);
        let view = if self.engine.holds(case_id) || self.engine.archive().is_none() {
            self.engine.get_case(case_id)
        } else {
            // Not in memory: the archive is read (a blocking SQLite query).
            let engine = self.engine.clone();
            tokio::task::spawn_blocking(move || engine.get_case(case_id))
                .await
                .map_err(|e| Status::internal(format!("archive read task: {e}")))?
        }
        .or_status()?;
        if view.workflow.namespace != ns {
            return Err(status(EngineError::NoCase(case_id)));
        }
        if r.committed {
            // Read first, then wait for what ran before the read: the answer is committed.
            self.engine.commit_barrier(case_id).await.or_status()?;
        }
        Ok(Response::new(convert::case_out(&view)))
    }

    type WatchCaseStream = ReceiverStream<Result<WatchEvent, Status>>;

    async fn watch_case(
        &self,
        request: Request<WatchCaseRequest>,
    ) -> Result<Response<Self::WatchCaseStream>, Status> {
        self.live()?;
        let slot = self
            .watch_slot()
            .map_err(|e| self.refusal_noted(&request, "WatchCase", e))?;
        let caller = Caller::of(&request);
        let deadline = caller.stream_deadline();
        let ns = caller.namespace;
        let r = request.into_inner();
        let mut subs = Vec::new();
        let filter;
        let mut history: Vec<Hist> = Vec::new();
        let mut first_wf: Option<Arc<Workflow>> = None;
        let mut finished = false;
        if r.case_id != 0 && !self.engine.holds(r.case_id) && self.engine.archive().is_some() {
            // A case no longer in memory is finished: its history (when asked for) from the
            // archive, then the end of the stream.
            let engine = self.engine.clone();
            let case_id = r.case_id;
            let (view, hist) = tokio::task::spawn_blocking(move || {
                let view = engine.get_case(case_id)?;
                let hist = engine.history(case_id)?;
                Ok::<_, EngineError>((view, hist))
            })
            .await
            .map_err(|e| Status::internal(format!("archive read task: {e}")))?
            .or_status()?;
            if view.workflow.namespace != ns {
                return Err(status(EngineError::NoCase(case_id)));
            }
            let events: Vec<_> = if r.from_start {
                hist.events
                    .iter()
                    .map(|h| Ok(history_event(case_id, &view.workflow, h)))
                    .collect()
            } else {
                Vec::new()
            };
            let (tx, rx) = mpsc::channel(events.len().max(1));
            for e in events {
                let _ = tx.try_send(e);
            }
            return Ok(Response::new(ReceiverStream::new(rx)));
        }
        if r.case_id != 0 {
            let (wf, shard, slot) = self.case_in(r.case_id, &ns)?;
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
                // An unknown id is NOT_FOUND now; its versions are matched by id as they come.
                self.engine.versions_in(&ns, &r.workflow_id).or_status()?;
                Filter::Workflow(r.workflow_id.clone())
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
            let _slot = slot;
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
            let scope = WatchScope {
                filter,
                ns,
                deadline,
            };
            forward_watch(engine, subs, scope, tx, closing, metrics).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type ListCasesStream = BoxStream<Case>;

    async fn list_cases(
        &self,
        request: Request<ListCasesRequest>,
    ) -> Result<Response<Self::ListCasesStream>, Status> {
        let ns = Caller::of(&request).namespace;
        let r = request.into_inner();
        let wf = self.versions_of(&r.workflow_id, &ns)?;
        let state = match proto::CaseState::try_from(r.state) {
            Ok(s) => convert::state_in(s),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "state {} is not a CaseState",
                    r.state
                )))
            }
        };
        let (from, to) = (r.created_from_unix_nanos, r.created_to_unix_nanos);
        if to != 0 && to <= from {
            return Err(Status::invalid_argument(format!(
                "created_to_unix_nanos {to} must be greater than created_from_unix_nanos {from} \
                 (or 0: no upper bound)"
            )));
        }
        let created = from..if to == 0 { u64::MAX } else { to };
        let limit = if r.limit == 0 {
            usize::MAX
        } else {
            r.limit as usize
        };
        let mut views: Vec<_> = self
            .engine
            .list_cases(wf.as_ref().map(|v| v.indices.as_slice()), state)
            .into_iter()
            .flatten()
            .filter(|v| v.workflow.namespace == ns && created.contains(&v.created_ns))
            .collect();
        views.sort_by_key(|v| v.id & 0xffff_ffff);
        views.truncate(limit);
        let left = limit - views.len();
        let held = tokio_stream::iter(views.into_iter().map(|v| Ok(convert::case_out(&v))));
        if !r.include_archived || left == 0 || self.engine.archive().is_none() {
            return Ok(Response::new(Box::pin(held)));
        }
        // Then the archive, a page at a time on a blocking thread (bounded memory: one page
        // and the channel).
        let query = ArchiveQuery {
            namespace: Some(ns),
            workflow_id: wf.map(|v| v.id),
            state,
            created,
            after: None,
            // the engine narrows this to its partition's ids
            case_ids: 0..u64::MAX,
            limit: ARCHIVE_PAGE.min(left),
            with_history: false,
        };
        let (tx, rx) = mpsc::channel(256);
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let mut q = query;
            let mut left = left;
            loop {
                q.limit = ARCHIVE_PAGE.min(left);
                match engine.list_archived(&q) {
                    Ok((page, next)) => {
                        for v in page.iter().take(left) {
                            if tx.blocking_send(Ok(convert::case_out(v))).is_err() {
                                return;
                            }
                            left -= 1;
                        }
                        match next {
                            Some(p) if left > 0 => q.after = Some(p),
                            _ => return,
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(status(e)));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(held.chain(ReceiverStream::new(rx)))))
    }

    async fn export_case_xes(
        &self,
        request: Request<ExportCaseXesRequest>,
    ) -> Result<Response<ExportCaseXesResponse>, Status> {
        let ns = Caller::of(&request).namespace;
        let r = request.into_inner();
        // With a case id the workflow is ignored (as documented for this RPC).
        let wf = if r.case_id == 0 {
            self.versions_of(&r.workflow_id, &ns)?
        } else {
            None
        };
        let refs = export_refs(&self.engine, &ns, r.case_id, wf.as_ref(), 0..u64::MAX)?;
        let archived = archived_query(&self.engine, &ns, r.case_id, wf.as_ref(), 0..u64::MAX);
        let name = log_name(r.case_id, &r.workflow_id, 0, 0);
        let engine = self.engine.clone();
        // Room for the other fields of the response beside the document.
        let budget = crate::server::MAX_MESSAGE_BYTES - 64;
        tokio::task::spawn_blocking(move || {
            let mut doc: Vec<u8> = Vec::new();
            let too_big = |traces: u64| {
                Status::out_of_range(format!(
                    "the XES document exceeds the {} MiB message limit (past {traces} of {} \
                     traces): use the streaming ExportXes (`knhk export` does)",
                    crate::server::MAX_MESSAGE_BYTES >> 20,
                    refs.len()
                ))
            };
            let traces_done = std::cell::Cell::new(0u64);
            let emit = |chunk: String| {
                if doc.len() + chunk.len() > budget {
                    return Err(too_big(traces_done.get()));
                }
                doc.extend_from_slice(chunk.as_bytes());
                Ok(())
            };
            let last = write_export(
                &engine,
                &name,
                &refs,
                archived,
                EXPORT_CHUNK,
                emit,
                |traces| {
                    traces_done.set(traces);
                    None
                },
            )?;
            if doc.len() + last.xes.len() > budget {
                return Err(too_big(last.traces));
            }
            doc.extend_from_slice(&last.xes);
            Ok(Response::new(ExportCaseXesResponse {
                xes: doc,
                traces: u32::try_from(last.traces).unwrap_or(u32::MAX),
                events: last.events,
                dropped_events: last.dropped_events,
            }))
        })
        .await
        .map_err(|e| Status::internal(format!("export task: {e}")))?
    }

    type ExportXesStream = ReceiverStream<Result<XesChunk, Status>>;

    async fn export_xes(
        &self,
        request: Request<ExportXesRequest>,
    ) -> Result<Response<Self::ExportXesStream>, Status> {
        self.live()?;
        let ns = Caller::of(&request).namespace;
        let r = request.into_inner();
        let chunk = match r.chunk_bytes {
            0 => EXPORT_CHUNK,
            n if (EXPORT_CHUNK_MIN..=EXPORT_CHUNK_MAX).contains(&(n as usize)) => n as usize,
            n => {
                return Err(Status::invalid_argument(format!(
                    "chunk_bytes {n} is out of range: 0 (default {EXPORT_CHUNK}) or \
                     {EXPORT_CHUNK_MIN} to {EXPORT_CHUNK_MAX}"
                )))
            }
        };
        let (from, to) = (r.created_from_unix_nanos, r.created_to_unix_nanos);
        if to != 0 && to <= from {
            return Err(Status::invalid_argument(format!(
                "created_to_unix_nanos {to} must be greater than created_from_unix_nanos {from} \
                 (or 0: no upper bound)"
            )));
        }
        let wf = self.versions_of(&r.workflow_id, &ns)?;
        let created = from..if to == 0 { u64::MAX } else { to };
        let archived = archived_query(&self.engine, &ns, r.case_id, wf.as_ref(), created.clone());
        let refs = export_refs(&self.engine, &ns, r.case_id, wf.as_ref(), created)?;
        let name = log_name(r.case_id, &r.workflow_id, from, to);
        let (tx, rx) = mpsc::channel(EXPORT_DEPTH);
        let engine = self.engine.clone();
        let closing = self.closing.clone();
        // The writer runs on a blocking thread: formatting a large document is CPU work, and
        // `blocking_send` waits while the client is slow (the bounded channel is the
        // back-pressure), so at most EXPORT_DEPTH chunks plus one in progress are held.
        tokio::task::spawn_blocking(move || {
            let t0 = std::time::Instant::now();
            let mut bytes = 0u64;
            let emit = |xes: String| {
                bytes += xes.len() as u64;
                tx.blocking_send(Ok(XesChunk {
                    xes: xes.into_bytes(),
                    ..XesChunk::default()
                }))
                .map_err(|_| ExportStop::Gone)
            };
            let stop = |_| (*closing.borrow()).then_some(ExportStop::Closing);
            match write_export(&engine, &name, &refs, archived, chunk, emit, stop) {
                Ok(last) => {
                    let total = bytes + last.xes.len() as u64;
                    tracing::info!(
                        traces = last.traces,
                        events = last.events,
                        bytes = total,
                        evicted = last.evicted_cases,
                        ms = t0.elapsed().as_millis() as u64,
                        "XES export streamed"
                    );
                    let _ = tx.blocking_send(Ok(last));
                }
                Err(ExportStop::Gone) => {
                    tracing::info!("XES export stopped: the client went away");
                }
                Err(ExportStop::Closing) => {
                    let _ = tx.blocking_send(Err(Status::unavailable(
                        "the server is shutting down: the XES export is incomplete",
                    )));
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type SubmitEventsStream = ReceiverStream<Result<SubmitEventsResponse, Status>>;

    async fn submit_events(
        &self,
        request: Request<Streaming<SubmitEventsRequest>>,
    ) -> Result<Response<Self::SubmitEventsStream>, Status> {
        self.live()?;
        // One audit record per message, made durable before its answer is sent.
        let audit_base = self.audit_start(&request, "SubmitEvents")?;
        let caller = Caller::of(&request);
        let deadline = caller.stream_deadline();
        let ns = caller.namespace.clone();
        let mut input = request.into_inner();
        let ns_limits = self.ns_limits;
        let (pending_tx, mut pending_rx) = mpsc::channel::<(
            engine::PendingBatch,
            Vec<(usize, EventResult)>,
            tracing::Span,
        )>(PIPELINE_DEPTH);
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
                            // The principal's bulk budget (--rate-events): waits up to a second,
                            // then refuses the whole batch, event by event.
                            if let Err(t) = caller.admit_events(m.events.len()).await {
                                let refused = m
                                    .events
                                    .iter()
                                    .enumerate()
                                    .map(|(pos, e)| {
                                        let error = EngineError::Exhausted(t.message.clone());
                                        (pos, EventResult {
                                            case_id: e.case_id,
                                            error: Some(error),
                                            state: None,
                                        })
                                    })
                                    .collect();
                                let pending = engine.submit_batch(Vec::new());
                                if pending_tx.send((pending, refused, span)).await.is_err() {
                                    break;
                                }
                                continue;
                            }
                            let events = m.events.into_iter().map(convert::event_in).collect();
                            let room = ns_limits.case_room(&engine, &ns);
                            let (events, foreign) =
                                split_by_namespace(&engine, &ns, events, room, &ns_limits);
                            let pending =
                                span.in_scope(|| engine.submit_batch_in(&ns, events));
                            if pending_tx.send((pending, foreign, span)).await.is_err() {
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
                    () = until(deadline) => {
                        let _ = err_tx.send(Err(token_expired())).await;
                        break;
                    }
                }
            }
        });
        // Writer: answers batches in order as their jobs come back (with an audit log: each
        // answer once its record is durable; the records of several batches share a sync).
        let engine = self.engine.clone();
        let audit = self.audit.clone().zip(audit_base);
        let (ack_tx, mut ack_rx) =
            mpsc::channel::<(Option<crate::audit::Pending>, SubmitEventsResponse)>(PIPELINE_DEPTH);
        tokio::spawn(async move {
            while let Some((p, foreign, span)) = pending_rx.recv().await {
                let results =
                    tracing::Instrument::instrument(p.finish(&engine), span.clone()).await;
                let results = merge_refused(results, foreign);
                let refused = results.iter().filter(|r| r.error.is_some()).count();
                span.record("knhk.refused", refused);
                let pending = audit.as_ref().map(|(log, base)| {
                    let mut rec = base.clone();
                    rec.events = Some(results.len() as u64);
                    rec.refused = Some(refused as u64);
                    log.append_pending(rec)
                });
                let results = results.into_iter().map(convert::result_out).collect();
                drop(span);
                if ack_tx
                    .send((pending, SubmitEventsResponse { results }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some((pending, resp)) = ack_rx.recv().await {
                if let Some(p) = pending {
                    if let Err(why) = p.durable().await {
                        let _ = out_tx
                            .send(Err(Status::unavailable(format!(
                                "the batch was executed but its audit record could not be \
                                 written ({why}); the server refuses further changes"
                            ))))
                            .await;
                        break;
                    }
                }
                if out_tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

impl KnhkService {
    /// Queues one bulk batch on this service's engine at once (so batches queued one after
    /// another run in that order per case) and returns the future of its results, in event
    /// order. The cluster router runs a partition's share of a caller's `SubmitEvents` batch
    /// this way; the caller's event budget is taken by the router, once per batch.
    pub fn queue_batch(
        &self,
        namespace: &str,
        events: Vec<proto::Event>,
    ) -> impl std::future::Future<Output = Vec<proto::EventResult>> + Send + 'static {
        let engine = self.engine.clone();
        let (pending, foreign) = if let Err(s) = self.live() {
            let refused = events
                .iter()
                .enumerate()
                .map(|(pos, e)| {
                    (
                        pos,
                        EventResult {
                            case_id: e.case_id,
                            error: Some(EngineError::Unavailable(s.message().to_string())),
                            state: None,
                        },
                    )
                })
                .collect();
            (engine.submit_batch(Vec::new()), refused)
        } else {
            let events = events.into_iter().map(convert::event_in).collect();
            let room = self.ns_limits.case_room(&engine, namespace);
            let (events, foreign) =
                split_by_namespace(&engine, namespace, events, room, &self.ns_limits);
            (engine.submit_batch_in(namespace, events), foreign)
        };
        async move {
            let results = pending.finish(&engine).await;
            merge_refused(results, foreign)
                .into_iter()
                .map(convert::result_out)
                .collect()
        }
    }
}

/// Splits a bulk batch into the events the caller's namespace `ns` may run and NOT_FOUND
/// results (by position) for events naming another namespace's case, answered as an unknown
/// one would be (a creation's workflow is looked up in `ns` by the engine), and
/// RESOURCE_EXHAUSTED for creations past `room` (the namespace's cap of unfinished cases).
/// Free when every workflow is in `ns` (one namespace in use) and there is no cap.
fn split_by_namespace(
    engine: &Engine,
    ns: &str,
    events: Vec<BatchEvent>,
    mut room: Option<u64>,
    limits: &NamespaceLimits,
) -> (Vec<BatchEvent>, Vec<(usize, EventResult)>) {
    if room.is_none() && engine.workflows().iter().all(|w| w.namespace == ns) {
        return (events, Vec::new());
    }
    let mut keep = Vec::with_capacity(events.len());
    let mut foreign = Vec::new();
    for (pos, ev) in events.into_iter().enumerate() {
        let refusal = match ev.op {
            // Looked up in `ns` by the engine (Engine::submit_batch_in); past the namespace's
            // cap of unfinished cases, refused.
            Ok(OpKind::Create) => match &mut room {
                Some(0) => Some(limits.cases_refusal(ns)),
                Some(n) => {
                    *n -= 1;
                    None
                }
                None => None,
            },
            Ok(_) => engine
                .case_workflow(ev.case_id)
                .ok()
                .filter(|(w, _, _)| w.namespace != ns)
                .map(|_| EngineError::NoCase(ev.case_id)),
            // Undecodable: the engine refuses it in place.
            Err(_) => None,
        };
        match refusal {
            Some(e) => foreign.push((
                pos,
                EventResult {
                    case_id: ev.case_id,
                    error: Some(e),
                    state: None,
                },
            )),
            None => keep.push(ev),
        }
    }
    (keep, foreign)
}

/// The results of a batch in request order: the engine's for the events it ran, `foreign`
/// (by position) for the others.
fn merge_refused(ran: Vec<EventResult>, foreign: Vec<(usize, EventResult)>) -> Vec<EventResult> {
    if foreign.is_empty() {
        return ran;
    }
    let n = ran.len() + foreign.len();
    let mut out = Vec::with_capacity(n);
    let mut ran = ran.into_iter();
    let mut foreign = foreign.into_iter().peekable();
    for pos in 0..n {
        match foreign.next_if(|(p, _)| *p == pos) {
            Some((_, r)) => out.push(r),
            None => out.extend(ran.next()),
        }
    }
    out
}

/// Resolves at `deadline`; never without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// How a stream ends when the token it was opened with expires.
fn token_expired() -> Status {
    Status::unauthenticated(
        "token expired (exp is past): the stream ends with it; open a new one with a fresh token",
    )
}

/// Default (and unary) XES chunk size: 1 MiB.
const EXPORT_CHUNK: usize = 1 << 20;
/// Smallest and largest chunk size a client may ask for (the largest stays well under the 4 MiB
/// that gRPC clients accept by default).
const EXPORT_CHUNK_MIN: usize = 1 << 10;
const EXPORT_CHUNK_MAX: usize = 2 << 20;
/// Chunks an export stream may have queued before its writer waits for the client.
const EXPORT_DEPTH: usize = 4;
/// Archived cases read per archive query (listings and exports page through the archive).
const ARCHIVE_PAGE: usize = 1000;

/// Why a streamed export stopped early.
enum ExportStop {
    /// The client closed the stream.
    Gone,
    /// The server began shutting down.
    Closing,
}

/// A workflow as a filter on cases: its id and the kernel indices of its versions.
struct Versions {
    id: String,
    indices: Vec<u16>,
}

/// The cases of namespace `ns` an export covers, oldest first: the named case (NOT_FOUND when
/// unknown or of another namespace) if it matches the other filters, or every case matching
/// them.
fn export_refs(
    engine: &Engine,
    ns: &str,
    case_id: u64,
    workflow: Option<&Versions>,
    created: std::ops::Range<u64>,
) -> Result<Vec<engine::CaseRef>, Status> {
    if case_id == 0 {
        let mut refs = engine.case_refs(workflow.map(|v| v.indices.as_slice()), created);
        if workflow.is_none() {
            let mut of_ns: HashMap<u16, bool> = HashMap::new();
            refs.retain(|r| {
                *of_ns.entry(r.workflow).or_insert_with(|| {
                    engine
                        .workflow_at(r.workflow)
                        .is_some_and(|w| w.namespace == ns)
                })
            });
        }
        return Ok(refs);
    }
    let v = engine.get_case(case_id).or_status()?;
    if v.workflow.namespace != ns {
        return Err(status(EngineError::NoCase(case_id)));
    }
    let r = engine::CaseRef {
        case_id,
        workflow: v.workflow.index,
        created_ns: v.created_ns,
    };
    let keep =
        workflow.is_none_or(|w| w.indices.contains(&r.workflow)) && created.contains(&r.created_ns);
    Ok(if keep { vec![r] } else { Vec::new() })
}

/// The archived cases a workflow-wide or time-range export adds to the cases in memory (none
/// for a one-case export, whose case is read from wherever it is, or without an archive).
fn archived_query(
    engine: &Engine,
    ns: &str,
    case_id: u64,
    workflow: Option<&Versions>,
    created: std::ops::Range<u64>,
) -> Option<ArchiveQuery> {
    (case_id == 0 && engine.archive().is_some()).then(|| ArchiveQuery {
        namespace: Some(ns.to_string()),
        workflow_id: workflow.map(|v| v.id.clone()),
        created,
        ..ArchiveQuery::default()
    })
}

/// The XES log's `concept:name`.
pub(crate) fn log_name(case_id: u64, workflow_id: &str, from: u64, to: u64) -> String {
    let mut name = if case_id != 0 {
        format!("knhk case {case_id}")
    } else if workflow_id.is_empty() {
        "knhk cases".to_string()
    } else {
        format!("knhk cases of {workflow_id}")
    };
    if from != 0 {
        name.push_str(&format!(" created from {from}"));
    }
    if to != 0 {
        name.push_str(&format!(" created before {to}"));
    }
    name
}

/// Writes the XES document of `refs`, reading one case's history at a time: `emit` gets each
/// full chunk, `stop` (asked before each case, with the traces written so far) may end the
/// export early. Returns the last chunk, with the footer and the counts. A case evicted since
/// `refs` was taken is left out and counted.
#[allow(clippy::too_many_arguments)]
fn write_export<E>(
    engine: &Engine,
    name: &str,
    refs: &[engine::CaseRef],
    archived: Option<ArchiveQuery>,
    chunk: usize,
    mut emit: impl FnMut(String) -> Result<(), E>,
    mut stop: impl FnMut(u64) -> Option<E>,
) -> Result<XesChunk, E> {
    let mut w = xes::Writer::new(name, chunk);
    let mut wfs: HashMap<u16, Arc<Workflow>> = HashMap::new();
    let (mut dropped, mut evicted) = (0u64, 0u64);
    let mut written: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut write = |w: &mut xes::Writer,
                     h: &engine::CaseHistory,
                     emit: &mut dyn FnMut(String) -> Result<(), E>|
     -> Result<(), E> {
        let wf = match wfs.get(&h.workflow) {
            Some(wf) => wf.clone(),
            None => match engine.workflow_at(h.workflow) {
                Some(wf) => {
                    wfs.insert(h.workflow, wf.clone());
                    wf
                }
                None => return Ok(()),
            },
        };
        w.trace(
            &xes::TraceInput {
                case_id: h.case_id,
                workflow: &wf,
                history: &h.events,
            },
            &mut { emit },
        )
    };
    for r in refs {
        if let Some(e) = stop(w.counts().0) {
            return Err(e);
        }
        // A case evicted since `refs` was taken is read from the archive, when there is one.
        let Ok(h) = engine.history(r.case_id) else {
            evicted += 1;
            continue;
        };
        dropped += h.dropped;
        written.insert(h.case_id);
        write(&mut w, &h, &mut emit)?;
    }
    // Then the archived cases no longer in memory, a page at a time.
    if let Some(mut q) = archived {
        q.limit = ARCHIVE_PAGE;
        loop {
            if let Some(e) = stop(w.counts().0) {
                return Err(e);
            }
            let Ok((page, next)) = engine.archived_histories(&q) else {
                break;
            };
            for h in page.iter().filter(|h| !written.contains(&h.case_id)) {
                dropped += h.dropped;
                write(&mut w, h, &mut emit)?;
            }
            match next {
                Some(p) => q.after = Some(p),
                None => break,
            }
        }
    }
    let (xml, traces, events) = w.finish();
    Ok(XesChunk {
        xes: xml.into_bytes(),
        last: true,
        traces,
        events,
        dropped_events: dropped,
        evicted_cases: evicted,
    })
}

/// What a watcher sees and until when: its filter, its namespace, its token's expiry.
struct WatchScope {
    filter: Filter,
    ns: String,
    deadline: Option<tokio::time::Instant>,
}

#[derive(Debug, Clone)]
enum Filter {
    Case(u64),
    /// A workflow id (of the watch's namespace): the cases of every version, those registered
    /// after the watch began included.
    Workflow(String),
    All,
}

impl Filter {
    /// Whether `item`, of workflow `wf`, passes (the namespace is checked apart).
    fn matches(&self, item: &WatchItem, wf: &Workflow) -> bool {
        match self {
            Filter::Case(id) => item.case_id == *id,
            Filter::Workflow(id) => wf.id == *id,
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
        lifecycle: convert::lifecycle_out(h.lifecycle) as i32,
        timer: h.lifecycle.by_timer(),
        time_unix_nanos: h.time_ns,
        instance: (h.instance != knhk_engine::command::NO_INSTANCE).then_some(h.instance),
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
        lifecycle: item
            .lifecycle
            .map_or(0, |l| convert::lifecycle_out(l) as i32),
        timer: item.lifecycle.is_some_and(|l| l.by_timer()),
        time_unix_nanos: item.time_ns,
        case_seq: item.seq,
        state: convert::state_out(item.state) as i32,
        marking: wf.marking_names(item.marking),
        enabled_tasks: wf.task_names(item.enabled),
        lagged,
        instance: (item.instance != knhk_engine::command::NO_INSTANCE).then_some(item.instance),
    }
}

/// Moves a watcher's events from the shards' broadcast channels to its gRPC stream. A slow
/// client blocks only this task; the broadcast channel then overwrites what it did not read,
/// and the gap in the shard's event numbers is reported in the next event's `lagged`.
async fn forward_watch(
    engine: Arc<Engine>,
    subs: Vec<(usize, broadcast::Receiver<Arc<EventBatch>>, u64)>,
    scope: WatchScope,
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
            () = until(scope.deadline) => {
                let _ = tx.send(Err(token_expired())).await;
                return;
            }
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
            if matches!(scope.filter, Filter::Case(id) if id != item.case_id) {
                continue; // before the lookup: a case's watch passes few items
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
            // Only the caller's namespace (a case filter already is in it).
            if wf.namespace != scope.ns || !scope.filter.matches(item, &wf) {
                continue;
            }
            let ev = watch_event(item, &wf, lagged);
            lagged = 0;
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
            if let Filter::Case(_) = scope.filter {
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

/// Raises its flag when dropped: a handler's cancellation reaches the blocking work it started.
struct CancelOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The answer to a change whose audit record could not be written.
fn audit_lost(why: &str) -> Status {
    Status::unavailable(format!(
        "the change was made but its audit record could not be written ({why}); the server \
         refuses further changes"
    ))
}
