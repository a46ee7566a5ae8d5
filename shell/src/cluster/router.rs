//! `knhk.v1.Knhk` in cluster mode: every call goes to the partition it concerns. A partition
//! this node owns is served in process by the partition's own service; another node's is
//! forwarded over gRPC to its owner with the caller's credentials (`authorization`,
//! `knhk-namespace`) and a `knhk-forwarded` mark, which the owner never forwards again. A
//! partition without an owner (changing hands) answers UNAVAILABLE with `retry-after-ms`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use knhk_engine::ids::CaseId;

use super::{partition_of_key, Node};
use crate::proto::knhk_client::KnhkClient;
use crate::proto::knhk_server::Knhk;
use crate::proto::*;

/// Marks a forwarded call (the owner serves it or refuses; it never forwards it again).
pub const FORWARDED: &str = "knhk-forwarded";
/// Asks a node for its own partitions only (the scatter half of a scatter-gather).
pub const SCOPE_LOCAL: &str = "knhk-scope";
/// How long a client should wait before retrying a partition that is changing hands.
pub const RETRY_AFTER_MS: &str = "500";

/// The two halves of a scatter-gather (see `ClusterService::scatter_plan`).
struct ScatterPlan {
    here: Vec<Arc<super::Part>>,
    remote: Vec<(String, Vec<u16>)>,
}

pub(super) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The cluster router (cheap to clone: the clones share the peer connections).
#[derive(Clone)]
pub struct ClusterService {
    pub(super) node: Arc<Node>,
    peers: Arc<Mutex<HashMap<String, KnhkClient<Channel>>>>,
    pub(super) next: Arc<AtomicUsize>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> ClusterService {
        ClusterService {
            node,
            peers: Arc::new(Mutex::new(HashMap::new())),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(super) fn unavailable(p: u16, why: &str) -> Status {
        let mut s = Status::unavailable(format!("partition {p} {why}; retry"));
        s.metadata_mut()
            .insert("retry-after-ms", MetadataValue::from_static(RETRY_AFTER_MS));
        s
    }

    /// The address of partition `p`'s owner when it is another node.
    fn remote_owner<T>(&self, p: u16, req: &Request<T>) -> Result<String, Status> {
        if p >= self.node.cfg.partitions {
            return Err(Status::not_found(format!(
                "partition {p} does not exist (the cluster has {})",
                self.node.cfg.partitions
            )));
        }
        if req.metadata().contains_key(FORWARDED) {
            return Err(Self::unavailable(
                p,
                "is not served by the node it was forwarded to",
            ));
        }
        self.owner_address(p)
    }

    /// The partitions that have an owner, as this node's view of the owner keys says.
    pub(super) fn owned_partitions(&self) -> Vec<u16> {
        self.node
            .owners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// The address of partition `p`'s owner when it is another node (UNAVAILABLE when it has
    /// none, or when it is this node and the partition is not serving yet).
    pub(super) fn owner_address(&self, p: u16) -> Result<String, Status> {
        let owners = self.node.owners.read().unwrap_or_else(|p| p.into_inner());
        match owners.get(&p) {
            Some(o) if o.node != self.node.cfg.node_id => Ok(o.address.clone()),
            Some(_) => Err(Self::unavailable(p, "is being rebuilt on this node")),
            None => Err(Self::unavailable(p, "is changing hands")),
        }
    }

    pub(super) fn peer(&self, addr: &str) -> Result<KnhkClient<Channel>, Status> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let ch = Channel::from_shared(uri)
            .map_err(|e| Status::internal(format!("owner address {addr}: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(2))
            .connect_lazy();
        let c = KnhkClient::new(ch)
            .max_decoding_message_size(crate::server::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::server::MAX_MESSAGE_BYTES);
        peers.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// `req` re-addressed to an owner: the caller's credentials and namespace go along.
    pub(super) fn forward<T>(&self, req: Request<T>) -> Request<T> {
        let (meta, ext, msg) = req.into_parts();
        let mut out = Request::new(msg);
        for k in ["authorization", "knhk-namespace", "grpc-timeout"] {
            if let Some(v) = meta.get(k) {
                out.metadata_mut().insert(k, v.clone());
            }
        }
        // The caller's token: the auth layer moved it out of the headers.
        if let Some(v) = ext
            .get::<crate::auth::ForwardCredential>()
            .and_then(|c| MetadataValue::try_from(c.0.as_bytes()).ok())
        {
            out.metadata_mut().insert("authorization", v);
        }
        out.metadata_mut()
            .insert(FORWARDED, MetadataValue::from_static("1"));
        self.node.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        out
    }

    /// Partition `p` when this node serves it. A node whose lease is not valid serves none of
    /// its partitions, reads included: another node may own them already, and this one's
    /// state may be stale.
    pub(super) fn local(&self, p: u16) -> Result<Option<Arc<super::Part>>, Status> {
        match self.node.part(p) {
            Some(_) if !self.node.lease.valid() => Err(Self::unavailable(
                p,
                "is not served: this node's ownership lease is not valid",
            )),
            found => Ok(found),
        }
    }

    /// Every partition this node serves (none while its lease is not valid).
    pub(super) fn locals(&self) -> Result<Vec<Arc<super::Part>>, Status> {
        if !self.node.lease.valid() {
            return Err(Status::unavailable(
                "this node's ownership lease is not valid; retry",
            ));
        }
        Ok(self
            .node
            .parts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect())
    }

    fn partition_of_case(&self, case_id: u64) -> Result<u16, Status> {
        CaseId::decode(case_id)
            .map(|c| c.partition)
            .ok_or_else(|| Status::not_found(format!("case {case_id} does not exist")))
    }

    /// Where a scatter-gather goes: the partitions served here, and every other owner with the
    /// partitions it must serve. Every partition is covered, or the call is refused: a listing
    /// that silently left out a partition in transit would be wrong, not partial.
    ///
    /// A call scoped by another node (`knhk-scope`) is served from the partitions it names, all
    /// of which must be served here.
    fn scatter_plan<T>(&self, req: &Request<T>) -> Result<ScatterPlan, Status> {
        if let Some(scope) = req.metadata().get(SCOPE_LOCAL) {
            let mut here = Vec::new();
            for p in scope
                .to_str()
                .unwrap_or("")
                .split(',')
                .filter(|p| !p.is_empty())
            {
                let p: u16 = p.parse().map_err(|_| {
                    Status::invalid_argument(format!("{SCOPE_LOCAL}: bad partition {p:?}"))
                })?;
                match self.local(p)? {
                    Some(part) => here.push(part),
                    None => {
                        return Err(Self::unavailable(
                            p,
                            "is not served by the node it was asked of",
                        ))
                    }
                }
            }
            return Ok(ScatterPlan {
                here,
                remote: Vec::new(),
            });
        }
        if req.metadata().contains_key(FORWARDED) {
            return Err(Status::invalid_argument(
                "a forwarded scatter call must name its partitions (knhk-scope)",
            ));
        }
        let owners = self
            .node
            .owners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut here = Vec::new();
        let mut remote: std::collections::BTreeMap<String, Vec<u16>> = Default::default();
        for p in 0..self.node.cfg.partitions {
            match owners.get(&p) {
                Some(o) if o.node == self.node.cfg.node_id => match self.local(p)? {
                    Some(part) => here.push(part),
                    None => return Err(Self::unavailable(p, "is being rebuilt on this node")),
                },
                Some(o) => remote.entry(o.address.clone()).or_default().push(p),
                None => return Err(Self::unavailable(p, "is changing hands")),
            }
        }
        Ok(ScatterPlan {
            here,
            remote: remote.into_iter().collect(),
        })
    }

    /// `req` scoped to `partitions` of the owner it is sent to.
    fn scoped<T: Clone>(&self, req: &Request<T>, partitions: &[u16]) -> Result<Request<T>, Status> {
        let mut r = self.forward(Request::from_parts(
            req.metadata().clone(),
            req.extensions().clone(),
            req.get_ref().clone(),
        ));
        let list: Vec<String> = partitions.iter().map(u16::to_string).collect();
        let v = MetadataValue::try_from(list.join(","))
            .map_err(|e| Status::internal(format!("scope metadata: {e}")))?;
        r.metadata_mut().insert(SCOPE_LOCAL, v);
        Ok(r)
    }

    fn clone_req<T: Clone>(req: &Request<T>) -> Request<T> {
        Request::from_parts(
            req.metadata().clone(),
            req.extensions().clone(),
            req.get_ref().clone(),
        )
    }
}

/// Serves a call on partition `$p` here, or forwards it to the owner.
macro_rules! routed {
    ($self:ident, $p:expr, $req:ident, $method:ident) => {{
        let p = $p;
        match $self.local(p)? {
            Some(part) => {
                let r = part.service.$method($req).await;
                if let Err(s) = &r {
                    if s.code() == tonic::Code::NotFound {
                        // Rare and worth a line: the owner does not hold what was asked.
                        tracing::info!(
                            partition = p,
                            epoch = part.epoch,
                            error = %s.message(),
                            "not found on the owning node"
                        );
                    }
                }
                r
            }
            None => {
                let addr = $self.remote_owner(p, &$req)?;
                let mut c = $self.peer(&addr)?;
                c.$method($self.forward($req)).await
            }
        }
    }};
}

/// A server-streaming call on partition `$p`: served here or forwarded to the owner.
macro_rules! routed_stream {
    ($self:ident, $p:expr, $req:ident, $method:ident) => {{
        let p = $p;
        match $self.local(p)? {
            Some(part) => {
                let r = part.service.$method($req).await?;
                Ok(Response::new(Box::pin(r.into_inner()) as BoxStream<_>))
            }
            None => {
                let addr = $self.remote_owner(p, &$req)?;
                let mut c = $self.peer(&addr)?;
                let r = c.$method($self.forward($req)).await?;
                Ok(Response::new(boxed(r.into_inner())))
            }
        }
    }};
}

/// The streams of a scatter-gather: one per partition served here, one per other owner
/// (scoped to the partitions it must serve); see `ClusterService::scatter_plan`.
macro_rules! scattered {
    ($self:ident, $req:ident, $method:ident) => {{
        let plan = $self.scatter_plan(&$req)?;
        let mut streams = Vec::new();
        for part in plan.here {
            let r = part.service.$method(Self::clone_req(&$req)).await?;
            streams.push(Box::pin(r.into_inner()) as BoxStream<_>);
        }
        for (addr, partitions) in plan.remote {
            let mut c = $self.peer(&addr)?;
            let r = c.$method($self.scoped(&$req, &partitions)?).await?;
            streams.push(boxed(r.into_inner()));
        }
        streams
    }};
}

fn boxed<T: Send + 'static>(s: Streaming<T>) -> BoxStream<T> {
    Box::pin(s)
}

impl ClusterService {
    /// CreateCase once: on the partition of its business key, or on one of this node's
    /// partitions, or forwarded to any owner.
    async fn create_case_once(
        &self,
        request: Request<CreateCaseRequest>,
    ) -> Result<Response<Case>, Status> {
        let key = request.get_ref().business_key.clone();
        if !key.is_empty() {
            return routed!(
                self,
                partition_of_key(&key, self.node.cfg.partitions),
                request,
                create_case
            );
        }
        let local: Vec<u16> = self.locals()?.iter().map(|p| p.partition).collect();
        if !local.is_empty() {
            let p = local[self.next.fetch_add(1, Ordering::Relaxed) % local.len()];
            return routed!(self, p, request, create_case);
        }
        // This node owns nothing yet: any owner takes it.
        let owners = self.owned_partitions();
        if owners.is_empty() || request.metadata().contains_key(FORWARDED) {
            return Err(Status::unavailable(
                "no partition has an owner yet (the cluster is starting); retry",
            ));
        }
        let p = owners[self.next.fetch_add(1, Ordering::Relaxed) % owners.len()];
        routed!(self, p, request, create_case)
    }
}

/// How long a lookup of an unknown workflow waits for this node to apply registrations made
/// through other nodes before it answers NOT_FOUND.
pub(super) const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// A refusal for an unknown workflow (the engine's `NoWorkflow`).
fn unknown_workflow(s: &Status) -> bool {
    s.code() == tonic::Code::NotFound && s.message().starts_with("unknown workflow")
}

#[tonic::async_trait]
impl Knhk for ClusterService {
    async fn register_workflow(
        &self,
        request: Request<RegisterWorkflowRequest>,
    ) -> Result<Response<RegisterWorkflowResponse>, Status> {
        let node = &self.node;
        node.catalog_service
            .register_audited(request, |r| node.register_workflow(r))
            .await
    }

    async fn delete_workflow(
        &self,
        request: Request<crate::proto::DeleteWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        let node = &self.node;
        node.catalog_service
            .delete_audited(request, |r| self.delete_counted(r))
            .await
    }

    async fn retire_workflow(
        &self,
        request: Request<crate::proto::RetireWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        let node = &self.node;
        node.catalog_service
            .retire_audited(request, |r| node.retire_workflow(r))
            .await
    }

    async fn get_workflow(
        &self,
        request: Request<GetWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        // Read-your-writes across nodes: a version registered through another node (the
        // newest one asked for with version 0, not only an unknown id) is applied here first.
        self.node.catch_up_workflows(CATCH_UP).await;
        self.node.catalog_service.get_workflow(request).await
    }

    async fn list_workflows(
        &self,
        request: Request<ListWorkflowsRequest>,
    ) -> Result<Response<ListWorkflowsResponse>, Status> {
        self.node.catch_up_workflows(CATCH_UP).await;
        self.node.catalog_service.list_workflows(request).await
    }

    async fn create_case(
        &self,
        request: Request<CreateCaseRequest>,
    ) -> Result<Response<Case>, Status> {
        let (meta, ext, msg) = request.into_parts();
        let again = Request::from_parts(meta.clone(), ext.clone(), msg.clone());
        match self
            .create_case_once(Request::from_parts(meta, ext, msg))
            .await
        {
            Err(s) if unknown_workflow(&s) && self.node.catch_up_workflows(CATCH_UP).await => {
                self.create_case_once(again).await
            }
            r => r,
        }
    }

    async fn start_task(&self, request: Request<TaskRequest>) -> Result<Response<Case>, Status> {
        routed!(
            self,
            self.partition_of_case(request.get_ref().case_id)?,
            request,
            start_task
        )
    }

    async fn complete_task(&self, request: Request<TaskRequest>) -> Result<Response<Case>, Status> {
        routed!(
            self,
            self.partition_of_case(request.get_ref().case_id)?,
            request,
            complete_task
        )
    }

    async fn fire_task(&self, request: Request<TaskRequest>) -> Result<Response<Case>, Status> {
        routed!(
            self,
            self.partition_of_case(request.get_ref().case_id)?,
            request,
            fire_task
        )
    }

    async fn cancel_task(&self, request: Request<TaskRequest>) -> Result<Response<Case>, Status> {
        routed!(
            self,
            self.partition_of_case(request.get_ref().case_id)?,
            request,
            cancel_task
        )
    }

    async fn cancel_case(
        &self,
        request: Request<CancelCaseRequest>,
    ) -> Result<Response<Case>, Status> {
        routed!(
            self,
            self.partition_of_case(request.get_ref().case_id)?,
            request,
            cancel_case
        )
    }

    async fn get_case(&self, request: Request<GetCaseRequest>) -> Result<Response<Case>, Status> {
        routed!(
            self,
            self.partition_of_case(request.get_ref().case_id)?,
            request,
            get_case
        )
    }

    type WatchCaseStream = BoxStream<WatchEvent>;

    async fn watch_case(
        &self,
        request: Request<WatchCaseRequest>,
    ) -> Result<Response<Self::WatchCaseStream>, Status> {
        let case_id = request.get_ref().case_id;
        if case_id != 0 {
            return routed_stream!(self, self.partition_of_case(case_id)?, request, watch_case);
        }
        // A workflow's events: every owner's partitions, merged.
        let streams = scattered!(self, request, watch_case);
        Ok(Response::new(Box::pin(futures_util::stream::select_all(
            streams,
        ))))
    }

    type ListCasesStream = BoxStream<Case>;

    async fn list_cases(
        &self,
        request: Request<ListCasesRequest>,
    ) -> Result<Response<Self::ListCasesStream>, Status> {
        let limit = request.get_ref().limit as usize;
        let streams = scattered!(self, request, list_cases);
        let merged = futures_util::stream::select_all(streams);
        if limit > 0 {
            Ok(Response::new(Box::pin(merged.take(limit))))
        } else {
            Ok(Response::new(Box::pin(merged)))
        }
    }

    async fn export_case_xes(
        &self,
        request: Request<ExportCaseXesRequest>,
    ) -> Result<Response<ExportCaseXesResponse>, Status> {
        let case_id = request.get_ref().case_id;
        if case_id == 0 {
            return Err(Status::failed_precondition(
                "in cluster mode ExportCaseXes exports one case (case_id); export a workflow's \
                 cases across partitions with the streaming ExportXes (docs/cluster.md)",
            ));
        }
        routed!(
            self,
            self.partition_of_case(case_id)?,
            request,
            export_case_xes
        )
    }

    type ExportXesStream = BoxStream<XesChunk>;

    async fn export_xes(
        &self,
        request: Request<ExportXesRequest>,
    ) -> Result<Response<Self::ExportXesStream>, Status> {
        let r = request.get_ref().clone();
        if r.case_id != 0 {
            return routed_stream!(
                self,
                self.partition_of_case(r.case_id)?,
                request,
                export_xes
            );
        }
        // Every owner's partitions: one document each, joined into one (the headers are the
        // same: the log's name follows from the request alone).
        let parts = scattered!(self, request, export_xes);
        let name = crate::grpc::service::log_name(
            0,
            &r.workflow_id,
            r.created_from_unix_nanos,
            r.created_to_unix_nanos,
        );
        let header = crate::xes::Writer::new(&name, usize::MAX).pending();
        Ok(Response::new(Box::pin(super::xes_join::join(
            parts, header,
        ))))
    }

    type SubmitEventsStream = BoxStream<SubmitEventsResponse>;

    async fn submit_events(
        &self,
        request: Request<Streaming<SubmitEventsRequest>>,
    ) -> Result<Response<Self::SubmitEventsStream>, Status> {
        super::bulk::submit_events(self.clone(), request)
    }

    async fn start_instances(
        &self,
        request: Request<InstanceRequest>,
    ) -> Result<Response<InstanceResponse>, Status> {
        routed!(
            self,
            self.partition_of_case(request.get_ref().case_id)?,
            request,
            start_instances
        )
    }

    async fn start_instance(
        &self,
        request: Request<InstanceRequest>,
    ) -> Result<Response<InstanceResponse>, Status> {
        routed!(
            self,
            self.partition_of_case(request.get_ref().case_id)?,
            request,
            start_instance
        )
    }

    async fn complete_instance(
        &self,
        request: Request<InstanceRequest>,
    ) -> Result<Response<InstanceResponse>, Status> {
        routed!(
            self,
            self.partition_of_case(request.get_ref().case_id)?,
            request,
            complete_instance
        )
    }

    async fn add_instance(
        &self,
        request: Request<InstanceRequest>,
    ) -> Result<Response<InstanceResponse>, Status> {
        routed!(
            self,
            self.partition_of_case(request.get_ref().case_id)?,
            request,
            add_instance
        )
    }

    async fn list_instances(
        &self,
        request: Request<ListInstancesRequest>,
    ) -> Result<Response<ListInstancesResponse>, Status> {
        routed!(
            self,
            self.partition_of_case(request.get_ref().case_id)?,
            request,
            list_instances
        )
    }

    async fn get_topology(
        &self,
        _request: Request<GetTopologyRequest>,
    ) -> Result<Response<Topology>, Status> {
        let owners = self.node.owners.read().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<PartitionOwner> = owners
            .iter()
            .map(|(p, o)| PartitionOwner {
                partition: u32::from(*p),
                node_id: o.node.clone(),
                address: o.address.clone(),
                epoch: o.epoch,
            })
            .collect();
        list.sort_by_key(|o| o.partition);
        Ok(Response::new(Topology {
            partitions: u32::from(self.node.cfg.partitions),
            owners: list,
        }))
    }
}

impl ClusterService {
    /// DeleteWorkflow in cluster mode: the version's unfinished cases (running or deadlocked)
    /// are counted over every partition by one scatter-gather of `ListCases` (refused while
    /// there are some, as on a single node), then the deletion goes through the catalog.
    /// A case created between the count and a node applying the deletion runs on to its end
    /// (a single node counts creations under way and refuses those after; across nodes
    /// nothing orders the count with another node's creations).
    async fn delete_counted(
        &self,
        request: Request<crate::proto::DeleteWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        let (meta, ext, msg) = request.into_parts();
        let listing = Request::from_parts(
            meta.clone(),
            ext.clone(),
            ListCasesRequest {
                workflow_id: msg.workflow_id.clone(),
                ..Default::default()
            },
        );
        let mut cases = self.list_cases(listing).await?.into_inner();
        let mut unfinished = 0u64;
        while let Some(case) = cases.next().await {
            let case = case?;
            let open = matches!(
                crate::proto::CaseState::try_from(case.state),
                Ok(crate::proto::CaseState::Running | crate::proto::CaseState::Deadlocked)
            );
            if open && case.workflow_version == msg.version {
                unfinished += 1;
            }
        }
        if unfinished > 0 {
            return Err(Status::failed_precondition(format!(
                "workflow {} version {} has {unfinished} unfinished case{}: cancel them, or \
                 retire the workflow and delete the version once they finished",
                knhk_engine::error::echo(&msg.workflow_id),
                msg.version,
                if unfinished == 1 { "" } else { "s" }
            )));
        }
        self.node
            .delete_workflow(Request::from_parts(meta, ext, msg))
            .await
    }
}
