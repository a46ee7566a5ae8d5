//! Cluster mode (docs/cluster.md): case partitions whose logs are subjects of NATS JetStream
//! streams, owned through etcd leases, served by whichever node owns them and reachable
//! through any node.
//!
//! - A fixed number of partitions, chosen when the cluster is created (stored in etcd; a node
//!   started with another count refuses to start). Case ids carry their partition.
//! - Each owned partition is one engine (one worker: a partition is a serial state machine, as
//!   in Zeebe) whose batch hook is the partition's [`plog::PartitionLog`].
//! - Ownership: every node keeps a lease; a partition goes to the first live node in its
//!   rendezvous ranking, which claims it with a transaction on the partition's owner key; the
//!   key's create revision is the partition's epoch. A new owner publishes a fence frame,
//!   replays the subject under the epoch rule, then serves.
//! - A node acknowledges only while its lease is valid by its own monotonic clock (deadline:
//!   keepalive sent + TTL − margin). A node that loses its lease exits (its supervisor restarts
//!   it): it never holds a partition another node may own.
//! - Workflows: one stream subject holds every registration record in order; every node applies
//!   them, in that order, to its catalog and to every partition engine it runs.

pub mod bulk;
pub mod plog;
pub mod router;
mod xes_join;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use tokio::sync::watch;
use tokio_stream::StreamExt;

use knhk_engine::engine::{BatchHook, Engine, EngineConfig};
use knhk_engine::workflow::Workflow;
use knhk_engine::EngineError;

use crate::grpc::service::KnhkService;
use plog::PartitionLog;

/// Cluster settings (`knhk serve --nats … --etcd …`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URLs (JetStream enabled).
    pub nats: Vec<String>,
    /// etcd endpoints.
    pub etcd: Vec<String>,
    /// This node's id (unique in the cluster).
    pub node_id: String,
    /// The gRPC address other nodes and clients reach this node at.
    pub advertise: String,
    /// Partitions (fixed when the cluster is created).
    pub partitions: u16,
    /// The cluster's name: prefix of its etcd keys, subjects and streams.
    pub name: String,
    /// Lease time-to-live.
    pub lease_ttl: Duration,
    /// JetStream stream replicas (3 in production; at most the number of servers).
    pub replicas: usize,
    /// Case slots per partition engine.
    pub partition_capacity: usize,
}

/// How long before its lease's expiry (as etcd counts it) a node stops acknowledging.
pub const LEASE_MARGIN: Duration = Duration::from_secs(1);
/// Ownership rounds (300 ms each) a partition must be ranked first for by another node before
/// it is handed over.
pub const HANDOFF_ROUNDS: u32 = 4;
/// Streams the partitions' subjects are spread over.
pub const LOG_STREAMS: u16 = 3;

/// Cluster counters (on /metrics as `knhk_cluster_*`).
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub handoffs: AtomicU64,
    pub epoch_changes: AtomicU64,
    pub forwarded: AtomicU64,
    pub fenced: AtomicU64,
    pub ambiguous: AtomicU64,
    pub resolved_landed: AtomicU64,
    pub frames: AtomicU64,
    pub replayed_frames: AtomicU64,
    pub dropped_frames: AtomicU64,
}

/// The node's lease as its own monotonic clock sees it: acknowledgements are allowed until
/// `deadline` (last keepalive sent + TTL − margin).
#[derive(Debug)]
pub struct LeaseClock {
    origin: Instant,
    deadline_ns: AtomicU64,
    /// Set when the node gives its lease up (shutdown): no keepalive answer revives it.
    revoked: std::sync::atomic::AtomicBool,
}

impl LeaseClock {
    fn new() -> LeaseClock {
        LeaseClock {
            origin: Instant::now(),
            deadline_ns: AtomicU64::new(0),
            revoked: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The node is giving its lease up: from now on it acknowledges and serves nothing.
    fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The lease was renewed by a keepalive sent at `sent`.
    fn renewed(&self, sent: Instant, ttl: Duration) {
        let until = sent.saturating_duration_since(self.origin) + ttl.saturating_sub(LEASE_MARGIN);
        let ns = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX);
        self.deadline_ns.fetch_max(ns, Ordering::SeqCst);
    }

    /// Whether this node may still acknowledge work.
    pub fn valid(&self) -> bool {
        !self.revoked.load(Ordering::SeqCst)
            && self.now_ns() < self.deadline_ns.load(Ordering::SeqCst)
    }
}

/// A partition this node owns and serves.
pub struct Part {
    pub partition: u16,
    pub epoch: u64,
    pub engine: Arc<Engine>,
    pub log: Arc<PartitionLog>,
    pub service: KnhkService,
}

/// Another node's ownership of a partition, as the owner keys say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    pub address: String,
    pub epoch: u64,
}

/// The catalog records applied so far (in stream order), and the stream position they cover.
#[derive(Default)]
struct Catalog {
    /// Every record of the workflow stream applied, in order: registrations, retirements and
    /// deletions (a partition engine being built applies them all).
    records: Vec<Vec<u8>>,
    /// How many of them are registrations (the index the next one takes).
    workflows: usize,
    applied_seq: u64,
}

/// This node's view of the cluster and the partitions it runs.
pub struct Node {
    pub cfg: ClusterConfig,
    pub js: jetstream::Context,
    etcd: etcd_client::Client,
    lease_id: i64,
    pub lease: Arc<LeaseClock>,
    pub stats: Arc<ClusterStats>,
    pub parts: RwLock<BTreeMap<u16, Arc<Part>>>,
    pub owners: RwLock<HashMap<u16, Owner>>,
    /// Workflows: an engine that only holds the catalog (ids, namespaces, compiled nets).
    pub catalog_engine: Arc<Engine>,
    pub catalog_service: KnhkService,
    /// Written by the registration applier and by registrations (one at a time); read by
    /// partition rebuilds, several at once.
    catalog: tokio::sync::RwLock<Catalog>,
    applied: watch::Sender<u64>,
    /// The stream sequence of the last registration this node published.
    published: Arc<AtomicU64>,
    closing: watch::Receiver<bool>,
    metrics: Option<crate::metrics::RpcMetrics>,
    max_watchers: usize,
    /// This node's audit log: the changes its partitions make (whichever node the caller
    /// reached), the registrations and bulk messages callers sent to it, its refusals.
    pub audit: Option<Arc<crate::audit::AuditLog>>,
    /// Set once every partition this node ranks first for has been claimed or found owned.
    pub ready: watch::Sender<bool>,
    /// Set when a graceful stop begins: the lease is revoked on purpose then.
    stopping: std::sync::atomic::AtomicBool,
    /// Ownership rounds each held partition has been ranked first for by another live node.
    misplaced: std::sync::Mutex<HashMap<u16, u32>>,
    engine_template: EngineConfig,
}

fn key(cfg: &ClusterConfig, what: &str) -> String {
    format!("/knhk/{}/{what}", cfg.name)
}

/// Rendezvous ranking: the node with the highest score for partition `p` owns it.
fn score(node: &str, p: u16) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same on every node running this build.
    let mut h = std::hash::DefaultHasher::new();
    node.hash(&mut h);
    p.hash(&mut h);
    h.finish()
}

/// The first-ranked node of `live` for partition `p`.
pub fn ranked_first(live: &[String], p: u16) -> Option<&String> {
    live.iter().max_by_key(|n| (score(n, p), n.as_str()))
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// The partition a key lands on: `hash(business_key) mod P` (stable across nodes and builds:
/// CRC-32C).
pub fn partition_of_key(key: &str, partitions: u16) -> u16 {
    (crc32c::crc32c(key.as_bytes()) % u32::from(partitions.max(1))) as u16
}

/// Workflow registrations publish through the catalog engine's hook: the record goes to the
/// workflow subject after the last one this node applied, so registrations from any node get
/// one order (the index of each equals its position).
struct CatalogHook {
    js: jetstream::Context,
    subject: String,
    expected: Arc<AtomicU64>,
    published: Arc<AtomicU64>,
    rt: tokio::runtime::Handle,
}

impl BatchHook for CatalogHook {
    fn executed(&self, _shard: usize, job: Box<knhk_engine::workers::Job>) {
        job.release();
    }

    fn registered(&self, wf: &Workflow, model: &[u8]) -> Result<(), EngineError> {
        let mut rec = Vec::new();
        knhk_log::frames::encode_workflow(&mut rec, wf, model);
        self.publish(rec)
    }

    fn retired(&self, wf: &Workflow) -> Result<(), EngineError> {
        let mut rec = Vec::new();
        knhk_log::frames::encode_retire(&mut rec, wf, knhk_engine::engine::now_ns());
        self.publish(rec)
    }

    fn deleted(&self, wf: &Workflow) -> Result<(), EngineError> {
        let mut rec = Vec::new();
        knhk_log::frames::encode_delete(&mut rec, wf, knhk_engine::engine::now_ns());
        self.publish(rec)
    }
}

impl CatalogHook {
    /// Publishes one catalog record right after the last record this node applied (or
    /// published itself since: a retirement publishes one per version); another node's
    /// record in between makes it fail, and the caller catches up and tries again.
    fn publish(&self, rec: Vec<u8>) -> Result<(), EngineError> {
        let expected = self.expected.load(Ordering::SeqCst);
        let publish = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(rec))
            .expected_last_subject_sequence(expected);
        let js = self.js.clone();
        let subject = self.subject.clone();
        let ack = self.rt.block_on(async move {
            match js.send_publish(subject, publish).await {
                Ok(f) => f.await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        });
        match ack {
            Ok(a) => {
                self.published.store(a.sequence, Ordering::SeqCst);
                self.expected.store(a.sequence, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => Err(EngineError::Unavailable(format!(
                "the workflow catalog could not be written ({e}); retry"
            ))),
        }
    }
}

impl Node {
    /// Connects to NATS and etcd, checks the cluster's partition count, takes a lease, starts
    /// the keepalive, the workflow applier and the ownership loop.
    pub async fn start(
        cfg: ClusterConfig,
        engine_template: EngineConfig,
        closing: watch::Receiver<bool>,
        metrics: Option<crate::metrics::RpcMetrics>,
        max_watchers: usize,
        namespace_limits: crate::grpc::service::NamespaceLimits,
        audit: Option<Arc<crate::audit::AuditLog>>,
    ) -> std::io::Result<Arc<Node>> {
        let nats = async_nats::ConnectOptions::new()
            .name(format!("knhk-{}", cfg.node_id))
            .retry_on_initial_connect()
            .connect(cfg.nats.clone())
            .await
            .map_err(|e| io_err(format!("cannot connect to NATS {:?}: {e}", cfg.nats)))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(2))
            .build(nats);
        let mut etcd = etcd_client::Client::connect(
            &cfg.etcd,
            Some(
                etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_timeout(Duration::from_secs(3)),
            ),
        )
        .await
        .map_err(|e| io_err(format!("cannot connect to etcd {:?}: {e}", cfg.etcd)))?;

        // The partition count is the cluster's: the first node writes it, the others match it.
        let pkey = key(&cfg, "partitions");
        let txn = Txn::new()
            .when([Compare::create_revision(pkey.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(pkey.clone(), cfg.partitions.to_string(), None)])
            .or_else([TxnOp::get(pkey.clone(), None)]);
        // etcd may still be forming its cluster (a fresh start of everything): wait for it.
        let deadline = Instant::now() + Duration::from_secs(60);
        let r = loop {
            match etcd.txn(txn.clone()).await {
                Ok(r) => break r,
                Err(e) if Instant::now() < deadline => {
                    tracing::info!(error = %e, "waiting for etcd");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(io_err(format!("etcd {:?}: {e}", cfg.etcd))),
            }
        };
        if !r.succeeded() {
            let have = etcd
                .get(pkey.clone(), None)
                .await
                .map_err(io_err)?
                .kvs()
                .first()
                .and_then(|kv| kv.value_str().ok().map(str::to_string))
                .unwrap_or_default();
            if have != cfg.partitions.to_string() {
                return Err(io_err(format!(
                    "cluster '{}' was created with {have} partitions, this node was started \
                     with --partitions {}: the count is fixed when the cluster is created",
                    cfg.name, cfg.partitions
                )));
            }
        }

        Self::ensure_streams(&js, &cfg).await?;

        let ttl_s = cfg.lease_ttl.as_secs().max(2) as i64;
        let lease_id = etcd.lease_grant(ttl_s, None).await.map_err(io_err)?.id();
        let lease = Arc::new(LeaseClock::new());
        lease.renewed(Instant::now(), Duration::from_secs(ttl_s as u64));
        etcd.put(
            key(&cfg, &format!("node/{}", cfg.node_id)),
            cfg.advertise.clone(),
            Some(PutOptions::new().with_lease(lease_id)),
        )
        .await
        .map_err(io_err)?;

        let expected = Arc::new(AtomicU64::new(0));
        let published = Arc::new(AtomicU64::new(0));
        let catalog_engine = Engine::start(
            EngineConfig {
                workers: 1,
                case_capacity: 1,
                pin: false,
                archive: None,
                ..engine_template.clone()
            },
            Arc::new(CatalogHook {
                js: js.clone(),
                subject: format!("{}.wf", cfg.name),
                expected: expected.clone(),
                published: published.clone(),
                rt: tokio::runtime::Handle::current(),
            }),
        )?;
        // Registrations go through the catalog: its per-namespace workflow cap is the cluster's.
        let catalog_service = KnhkService::new(catalog_engine.clone(), closing.clone(), None)
            .with_namespace_limits(namespace_limits)
            .with_audit(audit.clone());
        let (applied, _) = watch::channel(0u64);
        let (ready, _) = watch::channel(false);
        let node = Arc::new(Node {
            cfg,
            js,
            etcd,
            lease_id,
            lease,
            stats: Arc::new(ClusterStats::default()),
            parts: RwLock::new(BTreeMap::new()),
            owners: RwLock::new(HashMap::new()),
            catalog_engine,
            catalog_service,
            catalog: tokio::sync::RwLock::new(Catalog::default()),
            applied,
            published: published.clone(),
            closing,
            metrics,
            max_watchers,
            audit,
            ready,
            misplaced: std::sync::Mutex::new(HashMap::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            engine_template,
        });
        tokio::spawn(node.clone().keepalive(ttl_s));
        {
            let node = node.clone();
            tokio::spawn(async move { node.apply_workflows(expected).await });
        }
        tokio::spawn(node.clone().ownership_loop());
        Ok(node)
    }

    async fn ensure_streams(js: &jetstream::Context, cfg: &ClusterConfig) -> std::io::Result<()> {
        let mut configs = vec![stream::Config {
            name: format!("{}_WF", cfg.name.to_uppercase()),
            subjects: vec![format!("{}.wf", cfg.name)],
            storage: stream::StorageType::File,
            num_replicas: cfg.replicas,
            ..Default::default()
        }];
        for s in 0..LOG_STREAMS {
            configs.push(stream::Config {
                name: format!("{}_LOG_{s}", cfg.name.to_uppercase()),
                subjects: (0..cfg.partitions)
                    .filter(|p| p % LOG_STREAMS == s)
                    .map(|p| plog::subject(&cfg.name, p))
                    .collect(),
                storage: stream::StorageType::File,
                num_replicas: cfg.replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            });
        }
        for c in configs {
            let name = c.name.clone();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match js.get_or_create_stream(c.clone()).await {
                    Ok(_) => break,
                    Err(e) if Instant::now() < deadline => {
                        tracing::info!(stream = %name, error = %e, "waiting for JetStream");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(e) => {
                        return Err(io_err(format!("JetStream stream {name}: {e}")));
                    }
                }
            }
        }
        Ok(())
    }

    /// Renews the lease every TTL/5. A lease etcd no longer knows, or no renewal before the
    /// deadline, ends the process: the partitions may already be another node's.
    async fn keepalive(self: Arc<Self>, ttl_s: i64) {
        let ttl = Duration::from_secs(ttl_s as u64);
        let every = ttl / 5;
        let mut etcd = self.etcd.clone();
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let (mut keeper, mut stream) = match etcd.lease_keep_alive(self.lease_id).await {
                Ok(k) => k,
                Err(e) => {
                    self.check_lease(&format!("keepalive stream: {e}"));
                    tokio::time::sleep(every).await;
                    continue;
                }
            };
            loop {
                let sent = Instant::now();
                if let Err(e) = keeper.keep_alive().await {
                    self.check_lease(&format!("keepalive: {e}"));
                    break;
                }
                match tokio::time::timeout(every, stream.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => self.lease.renewed(sent, ttl),
                    Ok(Ok(Some(_))) if self.stopping.load(Ordering::SeqCst) => return,
                    Ok(Ok(Some(_))) => {
                        lease_lost("etcd says the lease has expired");
                    }
                    Ok(Ok(None)) | Ok(Err(_)) => {
                        self.check_lease("keepalive stream ended");
                        break;
                    }
                    Err(_) => self.check_lease("keepalive unanswered"),
                }
                tokio::time::sleep(every.saturating_sub(sent.elapsed())).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn check_lease(&self, why: &str) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        tracing::warn!(error = why, "lease renewal failed");
        if !self.lease.valid() {
            lease_lost(why);
        }
    }

    /// Applies registration records from the workflow subject, in order, to the catalog and
    /// to every partition engine.
    async fn apply_workflows(self: Arc<Self>, expected: Arc<AtomicU64>) {
        let stream_name = format!("{}_WF", self.cfg.name.to_uppercase());
        loop {
            let err = async {
                let stream = self
                    .js
                    .get_stream(&stream_name)
                    .await
                    .map_err(|e| e.to_string())?;
                let from = self.catalog.read().await.applied_seq + 1;
                let consumer = stream
                    .create_consumer(jetstream::consumer::pull::OrderedConfig {
                        filter_subject: format!("{}.wf", self.cfg.name),
                        deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                            start_sequence: from,
                        },
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                let mut msgs = consumer.messages().await.map_err(|e| e.to_string())?;
                while let Some(m) = msgs.next().await {
                    let m = m.map_err(|e| e.to_string())?;
                    let seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
                    let mut cat = self.catalog.write().await;
                    if seq <= cat.applied_seq {
                        continue;
                    }
                    let rec = m.payload.to_vec();
                    let kind = match knhk_log::frames::catalog_record(&rec) {
                        Ok(k) => k,
                        Err(e) => {
                            tracing::error!(seq, error = %e, "workflow stream: unreadable record skipped");
                            cat.applied_seq = seq;
                            continue;
                        }
                    };
                    let (index, id, registration) = match &kind {
                        knhk_log::frames::CatalogRecord::Workflow { index, id } => {
                            (*index, id.clone(), true)
                        }
                        knhk_log::frames::CatalogRecord::Retire { index }
                        | knhk_log::frames::CatalogRecord::Delete { index, .. } => {
                            (*index, String::new(), false)
                        }
                    };
                    if (registration && usize::from(index) != cat.workflows)
                        || (!registration && usize::from(index) >= cat.workflows)
                    {
                        tracing::error!(seq, index, have = cat.workflows, workflow = %id,
                            "workflow stream: record out of order skipped");
                        cat.applied_seq = seq;
                        continue;
                    }
                    let cat_engine = self.catalog_engine.clone();
                    let parts: Vec<(u16, Arc<Engine>)> = self
                        .parts
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .map(|(k, p)| (*k, p.engine.clone()))
                        .collect();
                    let r2 = rec.clone();
                    let failures = tokio::task::spawn_blocking(move || {
                        let mut failures = Vec::new();
                        // the catalog engine has a registration made through this node already
                        if !registration || cat_engine.workflows().len() == usize::from(index) {
                            if let Err(e) = knhk_log::frames::apply_catalog_record(&cat_engine, &r2)
                            {
                                failures.push(("catalog".to_string(), e));
                            }
                        }
                        // Every partition engine gets the record even when one refuses it: a
                        // partition being handed over refuses new work, and the partitions after
                        // it in this list must not miss the workflow (its next owner rebuilds it
                        // from the stream's records anyway).
                        for (partition, e) in parts {
                            if let Err(err) = knhk_log::frames::apply_catalog_record(&e, &r2) {
                                if !e.is_draining() {
                                    failures.push((format!("partition {partition}"), err));
                                }
                            }
                        }
                        failures
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                    for (engine, e) in failures {
                        tracing::error!(workflow = %id, engine, error = %e, "workflow stream: apply failed");
                    }
                    cat.records.push(rec);
                    cat.workflows += usize::from(registration);
                    cat.applied_seq = seq;
                    expected.store(seq, Ordering::SeqCst);
                    self.applied.send_replace(seq);
                }
                Ok::<(), String>(())
            }
            .await;
            if let Err(e) = err {
                tracing::warn!(error = %e, "workflow stream consumer restarting");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Registers a workflow cluster-wide: through the catalog (which publishes its record after
    /// the last applied one), then waits until this node has applied it everywhere.
    pub async fn register_workflow(
        &self,
        request: tonic::Request<crate::proto::RegisterWorkflowRequest>,
    ) -> Result<tonic::Response<crate::proto::RegisterWorkflowResponse>, tonic::Status> {
        // Unaudited here: the node the caller reached records the call once (router.rs), not
        // once per attempt.
        self.change_catalog(request, "registration", |r| {
            self.catalog_service.register(r)
        })
        .await
    }

    /// Retires a workflow cluster-wide: through the catalog (which publishes a retirement record
    /// per version after the last record applied), then waits until this node has applied them
    /// everywhere. Other nodes stop creating cases of it once they have applied the records
    /// (they follow the workflow stream).
    pub async fn retire_workflow(
        &self,
        request: tonic::Request<crate::proto::RetireWorkflowRequest>,
    ) -> Result<tonic::Response<crate::proto::Workflow>, tonic::Status> {
        self.change_catalog(request, "retirement", |r| {
            self.catalog_service.retire_unaudited(r)
        })
        .await
    }

    /// Deletes a workflow version cluster-wide: through the catalog (which publishes the
    /// deletion record after the last record applied), then waits until this node has applied
    /// it everywhere. The caller has counted the version's unfinished cases first
    /// (`router.rs`).
    pub async fn delete_workflow(
        &self,
        request: tonic::Request<crate::proto::DeleteWorkflowRequest>,
    ) -> Result<tonic::Response<crate::proto::Workflow>, tonic::Status> {
        self.change_catalog(request, "deletion", |r| {
            self.catalog_service.delete_unaudited(r)
        })
        .await
    }

    /// Runs `call` (a catalog change through the catalog engine, whose hook publishes its
    /// records) under the catalog's lock, then waits until this node has applied what it
    /// published. Retried when another node changed the catalog first (UNAVAILABLE from the
    /// publish) or when the workflow is one this node has not applied yet (NOT_FOUND after a
    /// catch-up that applied something).
    async fn change_catalog<M: Clone, R, F, Fut>(
        &self,
        request: tonic::Request<M>,
        what: &str,
        call: F,
    ) -> Result<tonic::Response<R>, tonic::Status>
    where
        F: Fn(tonic::Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let (meta, ext, msg) = request.into_parts();
        for attempt in 0..20 {
            let guard = self.catalog.write().await;
            let before = self.published_seq();
            let res = call(tonic::Request::from_parts(
                meta.clone(),
                ext.clone(),
                msg.clone(),
            ))
            .await;
            drop(guard);
            match res {
                Ok(resp) => {
                    let seq = self.published_seq();
                    if seq > before {
                        let mut rx = self.applied.subscribe();
                        let _ = tokio::time::timeout(
                            Duration::from_secs(10),
                            rx.wait_for(|&a| a >= seq),
                        )
                        .await;
                    }
                    return Ok(resp);
                }
                Err(s) if attempt < 19 && s.code() == tonic::Code::Unavailable => {
                    // Another node changed the catalog first: catch up, then try again.
                    tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
                }
                Err(s)
                    if attempt < 19
                        && s.code() == tonic::Code::NotFound
                        && self.catch_up_workflows(Duration::from_secs(2)).await => {}
                Err(s) => return Err(s),
            }
        }
        Err(tonic::Status::unavailable(format!(
            "workflow {what} kept racing; retry"
        )))
    }

    /// Read-your-writes for registrations made through another node: when the workflow stream
    /// holds records this node has not applied yet, waits (at most `within`) until it has.
    /// True when it applied something new (a lookup that failed is worth another try).
    pub async fn catch_up_workflows(&self, within: Duration) -> bool {
        let stream_name = format!("{}_WF", self.cfg.name.to_uppercase());
        let start = *self.applied.borrow();
        let deadline = tokio::time::Instant::now() + within;
        // The stream's last sequence: asked again while JetStream does not answer (a leader
        // election, a restarting server) rather than answering "unknown workflow" for a
        // registration another node acknowledged.
        let last = loop {
            let info = tokio::time::timeout_at(deadline, self.js.get_stream(&stream_name)).await;
            match info {
                Ok(Ok(s)) => break s.cached_info().state.last_sequence,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "catch-up: workflow stream lookup failed");
                    if tokio::time::Instant::now() + Duration::from_millis(100) >= deadline {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(_) => return false,
            }
        };
        if start >= last {
            return false;
        }
        let mut rx = self.applied.subscribe();
        let caught_up = tokio::time::timeout_at(deadline, rx.wait_for(|&a| a >= last))
            .await
            .is_ok();
        caught_up
    }

    fn published_seq(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
    }

    /// Every 300 ms: reads live nodes and owners, claims the partitions this node ranks first
    /// for that have no owner.
    async fn ownership_loop(self: Arc<Self>) {
        let mut etcd = self.etcd.clone();
        loop {
            if *self.closing.borrow() {
                return;
            }
            if let Err(e) = self.ownership_round(&mut etcd).await {
                tracing::warn!(error = %e, "ownership round failed");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn ownership_round(
        self: &Arc<Self>,
        etcd: &mut etcd_client::Client,
    ) -> Result<(), String> {
        let nodes = etcd
            .get(
                key(&self.cfg, "node/"),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| e.to_string())?;
        let prefix = key(&self.cfg, "node/");
        let live: Vec<String> = nodes
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok()?.strip_prefix(&prefix).map(str::to_string))
            .collect();
        let owners_resp = etcd
            .get(
                key(&self.cfg, "owner/"),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| e.to_string())?;
        let oprefix = key(&self.cfg, "owner/");
        let mut owners = HashMap::new();
        for kv in owners_resp.kvs() {
            let Some(p) = kv
                .key_str()
                .ok()
                .and_then(|k| k.strip_prefix(&oprefix))
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            let v = kv.value_str().unwrap_or_default();
            let (node, address) = v.split_once(' ').unwrap_or((v, ""));
            owners.insert(
                p,
                Owner {
                    node: node.to_string(),
                    address: address.to_string(),
                    epoch: kv.create_revision() as u64,
                },
            );
        }
        // A partition this node runs must still be its own: otherwise its lease was lost.
        for (p, part) in self.parts.read().unwrap_or_else(|p| p.into_inner()).iter() {
            match owners.get(p) {
                Some(o) if o.node == self.cfg.node_id && o.epoch == part.epoch => {}
                _ => lease_lost(&format!("partition {p} is no longer owned by this node")),
            }
        }
        *self.owners.write().unwrap_or_else(|p| p.into_inner()) = owners.clone();
        // Rebalance: a partition that another live node now ranks first for (a node joined or
        // came back) is handed over once that has held for a few rounds (a brief view of the
        // node list must not move partitions back and forth).
        let held: Vec<u16> = self
            .parts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        let mut moving = Vec::new();
        {
            let mut misplaced = self.misplaced.lock().unwrap_or_else(|p| p.into_inner());
            misplaced.retain(|p, _| held.contains(p));
            for p in held {
                if ranked_first(&live, p).is_some_and(|n| *n != self.cfg.node_id) {
                    let rounds = misplaced.entry(p).or_insert(0);
                    *rounds += 1;
                    if *rounds >= HANDOFF_ROUNDS {
                        moving.push(p);
                    }
                } else {
                    misplaced.remove(&p);
                }
            }
        }
        // A partition whose log failed (fenced, lease gone, JetStream away too long) is
        // released: whoever ranks first rebuilds it from the log, under a new epoch.
        let failed: Vec<u16> = self
            .parts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, part)| part.log.failure().is_some())
            .map(|(p, _)| *p)
            .collect();
        for p in moving.into_iter().chain(failed) {
            self.hand_off(p, etcd).await;
        }
        let mut all_settled = true;
        // Claims first, then every claimed partition rebuilt at once (a node taking over
        // several partitions replays their subjects side by side, not one after another).
        let mut claimed = Vec::new();
        let mut failed_round = None;
        for p in 0..self.cfg.partitions {
            if self.stopping.load(Ordering::SeqCst) {
                // Shutting down: claim nothing more (shutdown releases what is held).
                break;
            }
            if owners.contains_key(&p) {
                continue;
            }
            if ranked_first(&live, p) != Some(&self.cfg.node_id) {
                all_settled = false;
                continue;
            }
            let okey = key(&self.cfg, &format!("owner/{p}"));
            let txn = Txn::new()
                .when([Compare::create_revision(okey.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    okey.clone(),
                    format!("{} {}", self.cfg.node_id, self.cfg.advertise),
                    Some(PutOptions::new().with_lease(self.lease_id)),
                )]);
            let r = match etcd.txn(txn).await {
                Ok(r) => r,
                Err(e) => {
                    // What was claimed so far is still rebuilt below.
                    failed_round = Some(e.to_string());
                    break;
                }
            };
            if !r.succeeded() {
                continue;
            }
            let epoch = r.header().map_or(0, |h| h.revision()) as u64;
            self.stats.epoch_changes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(partition = p, epoch, "partition claimed; rebuilding");
            claimed.push((p, epoch));
        }
        let rebuilt =
            futures_util::future::join_all(claimed.iter().map(|&(p, epoch)| self.adopt(p, epoch)))
                .await;
        for (&(p, epoch), result) in claimed.iter().zip(rebuilt) {
            if let Err(e) = result {
                tracing::error!(partition = p, error = %e, "partition rebuild failed; releasing it");
                if !self.release_key(p, epoch, etcd).await {
                    lease_lost(&format!(
                        "the owner key of partition {p} could not be released"
                    ));
                }
                all_settled = false;
            }
        }
        if let Some(e) = failed_round {
            return Err(e);
        }
        if all_settled {
            self.ready.send_replace(true);
        }
        Ok(())
    }

    /// Rebuilds partition `p` under `epoch`: engine, workflows, fence, replay of the valid
    /// frames, then serving.
    async fn adopt(self: &Arc<Self>, p: u16, epoch: u64) -> Result<(), String> {
        let t0 = Instant::now();
        let log = PartitionLog::new(
            &self.cfg.name,
            LOG_STREAMS,
            p,
            epoch,
            self.js.clone(),
            self.lease.clone(),
            self.stats.clone(),
        );
        let cfg = EngineConfig {
            workers: 1,
            case_capacity: self.cfg.partition_capacity,
            partition: p,
            pin: false,
            // `--archive postgres` (the only archive cluster mode takes): one database shared
            // by every partition's engine on every node; each engine reads its partition's.
            archive: self.engine_template.archive.clone(),
            ..self.engine_template.clone()
        };
        let hook: Arc<dyn BatchHook> = log.clone();
        let engine = tokio::task::spawn_blocking(move || Engine::start(cfg, hook))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        // Workflows first, under the catalog's read lock (held until the partition is in the
        // routing table): no registration is applied half-way meanwhile.
        let cat = self.catalog.read().await;
        let records = cat.records.clone();
        let fenced = async {
            let e2 = engine.clone();
            tokio::task::spawn_blocking(move || {
                for r in &records {
                    knhk_log::frames::apply_catalog_record(&e2, r)?;
                }
                Ok::<(), std::io::Error>(())
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            let fence_seq = log.fence().await?;
            let frames = self.read_frames(&log, fence_seq).await?;
            let e2 = engine.clone();
            let replayed = tokio::task::spawn_blocking(move || {
                let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_ref()).collect();
                let replayed = knhk_log::frames::replay_frames(&e2, &refs)?;
                // Finished cases of versions deleted with their history came back with their
                // frames: removed again.
                e2.purge_deleted_histories()
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                Ok::<u64, std::io::Error>(replayed)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            Ok::<(u64, u64), String>((fence_seq, replayed))
        };
        // Every step above has its own bound; this one is the last word, so that a rebuild
        // that hangs somewhere unforeseen is released and claimed again, never left holding
        // the partition unserved (and the ownership round that waits for it).
        let fenced = match tokio::time::timeout(REBUILD_LIMIT, fenced).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the rebuild of partition {p} took longer than {REBUILD_LIMIT:?}"
            )),
        };
        let (fence_seq, replayed) = match fenced {
            Ok(v) => v,
            Err(e) => {
                drop(cat);
                let e2 = engine.clone();
                let _ = tokio::task::spawn_blocking(move || e2.stop()).await;
                return Err(e);
            }
        };
        log.start_logging(fence_seq);
        // timers that expired while no node served the partition fire now, once
        engine.start_timers();
        // what the previous owner's requests caused and did not log (automatic fires, sub-net
        // cases created, finished or cancelled) happens now
        let settling = engine.clone();
        tokio::spawn(async move {
            let moved = settling.settle_all().await;
            if moved > 0 {
                tracing::info!(partition = p, cases = moved, "partition cases settled");
            }
        });
        let service = KnhkService::new(engine.clone(), self.closing.clone(), self.metrics.clone())
            .with_max_watchers(self.max_watchers)
            .with_audit(self.audit.clone());
        self.parts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                p,
                Arc::new(Part {
                    partition: p,
                    epoch,
                    engine,
                    log,
                    service,
                }),
            );
        drop(cat);
        tracing::info!(
            partition = p,
            epoch,
            ops = replayed,
            ms = t0.elapsed().as_millis() as u64,
            "partition serving"
        );
        Ok(())
    }

    /// The payloads of the valid frames of `log`'s subject up to `upto` (its fence).
    async fn read_frames(&self, log: &PartitionLog, upto: u64) -> Result<Vec<Bytes>, String> {
        let (out, dropped) = read_valid_frames(&self.js, log.stream(), log.subject(), upto).await?;
        self.stats
            .replayed_frames
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        self.stats
            .dropped_frames
            .fetch_add(dropped, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                partition = log.partition,
                frames = dropped,
                "frames of a deposed owner dropped (epoch rule)"
            );
        }
        Ok(out)
    }

    /// Hands partition `p` over gracefully: no new work, everything taken acknowledged, the
    /// owner key released (only if it is still this epoch's), the engine stopped. The
    /// successor fences and replays; nothing acknowledged is lost.
    async fn hand_off(&self, p: u16, etcd: &mut etcd_client::Client) {
        let Some(part) = self
            .parts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&p)
        else {
            return;
        };
        let t0 = Instant::now();
        part.engine.drain();
        let drained = part.log.drained(Duration::from_secs(5)).await;
        part.log.seal();
        let released = self.release_key(p, part.epoch, etcd).await;
        let e = part.engine.clone();
        let _ = tokio::task::spawn_blocking(move || e.stop()).await;
        if !released {
            lease_lost(&format!(
                "the owner key of partition {p} could not be released"
            ));
        }
        self.stats.handoffs.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            partition = p,
            epoch = part.epoch,
            drained,
            ms = t0.elapsed().as_millis() as u64,
            "partition handed over"
        );
    }

    /// Deletes partition `p`'s owner key if it is still `epoch`'s; retried while etcd is
    /// unavailable. False when it could not be done: the caller exits, so that the key expires
    /// with the lease rather than name a node that no longer serves the partition.
    async fn release_key(&self, p: u16, epoch: u64, etcd: &mut etcd_client::Client) -> bool {
        let okey = key(&self.cfg, &format!("owner/{p}"));
        for attempt in 0..20u32 {
            let txn = Txn::new()
                .when([Compare::create_revision(
                    okey.clone(),
                    CompareOp::Equal,
                    epoch as i64,
                )])
                .and_then([TxnOp::delete(okey.clone(), None)]);
            match etcd.txn(txn).await {
                Ok(_) => return true,
                Err(e) => {
                    tracing::warn!(partition = p, attempt, error = %e,
                        "releasing the owner key failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        false
    }

    /// How many partitions this node serves now.
    pub fn partitions_served(&self) -> usize {
        self.parts.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The engines of the partitions this node serves, with their partitions (metrics and
    /// health report over them).
    pub fn partition_engines(&self) -> Vec<(u16, Arc<Engine>)> {
        self.parts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(p, part)| (*p, part.engine.clone()))
            .collect()
    }

    /// The partition `p` if this node serves it.
    pub fn part(&self, p: u16) -> Option<Arc<Part>> {
        self.parts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&p)
            .cloned()
    }

    /// Graceful stop: stop taking work, wait until every partition's log is acknowledged,
    /// release the partitions and the lease (successors replay only what is logged).
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Out of the routing table first: a call that arrives from now on is forwarded to the
        // successor or answered UNAVAILABLE, never served by an engine that is being stopped
        // (a stopped engine knows no case, and its answers would be stale anyway).
        let parts: Vec<Arc<Part>> =
            std::mem::take(&mut *self.parts.write().unwrap_or_else(|p| p.into_inner()))
                .into_values()
                .collect();
        for p in &parts {
            p.engine.drain();
        }
        for p in &parts {
            p.log.drained(Duration::from_secs(5)).await;
            p.log.seal();
        }
        // Nothing is acknowledged once the owner keys may be gone (the logs are sealed, and
        // the lease clock stops here for the scatter reads too).
        self.lease.revoke();
        let mut etcd = self.etcd.clone();
        for p in &parts {
            let _ = etcd
                .delete(key(&self.cfg, &format!("owner/{}", p.partition)), None)
                .await;
        }
        let _ = etcd.lease_revoke(self.lease_id).await;
        for p in parts {
            let e = p.engine.clone();
            let _ = tokio::task::spawn_blocking(move || e.stop()).await;
        }
        let e = self.catalog_engine.clone();
        let _ = tokio::task::spawn_blocking(move || e.stop()).await;
        tracing::info!("cluster node stopped; partitions and lease released");
    }
}

/// The longest a partition's rebuild (workflows, fence, replay) may take before it is given up
/// and the partition released: longer than the fence's own patience (`APPEND_PATIENCE`) plus
/// a replay of the largest partitions measured (about 1.5 s for 6,000 ops).
const REBUILD_LIMIT: Duration = Duration::from_secs(45);

/// How long reading a subject may go without a message before it counts as stalled.
const READ_STALL: Duration = Duration::from_secs(5);

/// The payloads of the valid frames of a partition's subject up to sequence `upto`, and how
/// many were dropped: a frame is valid iff its epoch is the epoch of the latest fence before it
/// (the rule every reader applies: replay, verifier).
pub async fn read_valid_frames(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    upto: u64,
) -> Result<(Vec<Bytes>, u64), String> {
    let stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: subject.to_string(),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut msgs = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut fence = 0u64;
    let mut out = Vec::new();
    let mut dropped = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    if upto == 0 {
        return Ok((out, 0));
    }
    loop {
        // A consumer that delivers nothing for STALL has stalled (seen after a NATS server
        // was killed: the ordered consumer never resumed): the caller gives up and starts
        // over with a new one (a partition's rebuild is released and claimed again) rather
        // than wait out the whole deadline with the partition unserved.
        let wait = deadline.min(tokio::time::Instant::now() + READ_STALL);
        let next = tokio::time::timeout_at(wait, msgs.next())
            .await
            .map_err(|_| {
                format!("reading {subject} stalled (nothing for {READ_STALL:?}, or past 120 s)")
            })?;
        let Some(m) = next else {
            return Err(format!("{subject} ended before sequence {upto}"));
        };
        let m = m.map_err(|e| e.to_string())?;
        let seq = m.info().map_err(|e| e.to_string())?.stream_sequence;
        let headers = m.headers.clone().unwrap_or_default();
        if let Some(f) = plog::fence_of(&headers) {
            fence = f;
        } else if plog::epoch_of(&headers) == fence {
            out.push(m.payload.clone());
        } else {
            dropped += 1;
        }
        if seq >= upto {
            return Ok((out, dropped));
        }
    }
}

/// One case as a replay of the log leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedCase {
    pub case_id: u64,
    pub seq: u64,
    pub state: knhk_engine::workers::State,
}

/// The verifier: rebuilds every partition from its subject alone (workflows from the workflow
/// stream, frames under the epoch rule, replayed into a fresh engine with every result checked
/// against the logged one) and returns every case it holds. A live cluster's state must equal
/// this. Frames dropped by the epoch rule are counted in the second value.
pub async fn verify(
    nats: &[String],
    name: &str,
    partitions: u16,
    capacity: usize,
) -> Result<(Vec<VerifiedCase>, u64), String> {
    let client = async_nats::connect(nats.to_vec())
        .await
        .map_err(|e| format!("NATS {nats:?}: {e}"))?;
    let js = jetstream::new(client);
    let wf_subject = format!("{name}.wf");
    let wf_stream = format!("{}_WF", name.to_uppercase());
    let last_wf = last_seq(&js, &wf_stream, &wf_subject).await?;
    let (records, _) = read_valid_frames(&js, &wf_stream, &wf_subject, last_wf).await?;
    let mut cases = Vec::new();
    let mut dropped = 0;
    for p in 0..partitions {
        let stream = plog::stream_name(name, p, LOG_STREAMS);
        let subject = plog::subject(name, p);
        let upto = last_seq(&js, &stream, &subject).await?;
        let (frames, d) = read_valid_frames(&js, &stream, &subject, upto).await?;
        dropped += d;
        let records = records.clone();
        let found = tokio::task::spawn_blocking(move || {
            let engine = Engine::start(
                EngineConfig {
                    workers: 1,
                    case_capacity: capacity,
                    partition: p,
                    pin: false,
                    ..EngineConfig::default()
                },
                Arc::new(knhk_engine::Immediate),
            )
            .map_err(|e| e.to_string())?;
            let res = (|| {
                for r in &records {
                    knhk_log::frames::apply_catalog_record(&engine, r)
                        .map_err(|e| format!("workflow record: {e}"))?;
                }
                let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_ref()).collect();
                knhk_log::frames::replay_frames(&engine, &refs)
                    .map_err(|e| format!("partition {p}: {e}"))?;
                // as a partition's owner does after its replay
                engine
                    .purge_deleted_histories()
                    .map_err(|e| format!("partition {p}: {e}"))?;
                Ok::<Vec<VerifiedCase>, String>(
                    engine
                        .list_cases(None, None)
                        .into_iter()
                        .flatten()
                        .map(|c| VerifiedCase {
                            case_id: c.id,
                            seq: c.last.seq,
                            state: c.last.state,
                        })
                        .collect(),
                )
            })();
            engine.stop();
            res
        })
        .await
        .map_err(|e| e.to_string())??;
        cases.extend(found);
    }
    Ok((cases, dropped))
}

async fn last_seq(js: &jetstream::Context, stream: &str, subject: &str) -> Result<u64, String> {
    let s = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| format!("stream {stream}: {e}"))?;
    match s.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(m.sequence),
        Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(e) => Err(format!("last message of {subject}: {e}")),
    }
}

/// The node's lease is gone: its partitions may be another node's already. Exit at once (the
/// supervisor restarts the node, which then joins as a new member).
fn lease_lost(why: &str) -> ! {
    tracing::error!(
        reason = why,
        "ownership lease lost: exiting so that nothing more is acknowledged"
    );
    eprintln!("knhk serve: ownership lease lost ({why}); exiting");
    std::process::exit(3)
}
