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
//! TLS (`ServerConfig::tls`, crate::tls): when set, the port speaks TLS only (ALPN h2), with
//! optional client certificates checked against a CA bundle and CRLs; the files are reloaded
//! on SIGHUP and when they change, without a restart.
//!
//! Life cycle: health starts NOT_SERVING; the engine starts its workers; health flips to
//! SERVING. On the shutdown signal (SIGINT/SIGTERM for `knhk serve`): health flips to
//! NOT_SERVING and new work is refused (UNAVAILABLE) for `drain_grace`; open streams are told to
//! finish (watchers end, bulk streams answer what they took and end); the transport shuts down
//! gracefully, waiting for in-flight calls up to `shutdown_timeout`; the workers stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use crate::admin::{Check, ObserveConfig, Observer, Phase};
use crate::auth::{AuthLayer, AuthState};
use crate::engine::{BatchHook, Engine, EngineConfig};
use crate::grpc::service::KnhkService;
use crate::journal::{self, JournalConfig};
use crate::proto;

use crate::tls::{Incoming, TlsConfig, TlsState};

/// Largest gRPC message the server sends or accepts (64 MiB). A unary XES export whose
/// document would not fit is refused with OUT_OF_RANGE, pointing at the streaming `ExportXes`.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

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
    /// TLS on the gRPC port (crate::tls); `None`: plaintext.
    pub tls: Option<TlsConfig>,
    /// Authentication (crate::auth, loaded by `AuthState::load`); `None`: every call is
    /// allowed (in the namespace it names).
    pub auth: Option<Arc<AuthState>>,
    /// Open connections on the gRPC port, at most (more are closed at once, and logged).
    pub max_connections: usize,
    /// Open WatchCase streams, at most (more get RESOURCE_EXHAUSTED).
    pub max_watchers: usize,
    /// Largest request message of every method but RegisterWorkflow.
    pub max_message_bytes: usize,
    /// Largest RegisterWorkflow request (the model).
    pub max_model_bytes: usize,
    /// The audit log (crate::audit); `None`: no audit records.
    pub audit: Option<crate::audit::AuditConfig>,
    /// The most a call's handler may take before it answers (DEADLINE_EXCEEDED past it).
    pub request_timeout: Option<Duration>,
    /// A connection with no open call for this long is closed.
    pub idle_timeout: Option<Duration>,
    /// Workflows and unfinished cases per namespace (0: no limit).
    pub namespace_limits: crate::grpc::service::NamespaceLimits,
    /// Bytes of partly received request messages the server may hold, over every call
    /// (`crate::grpc::limits::RequestBudget`); 0: no limit.
    pub max_request_bytes_in_flight: u64,
    /// Exporters of committed events (`--export-xes`, `--export-otlp-logs`); they need the
    /// event log.
    pub export: crate::app::ExportConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            engine: EngineConfig::default(),
            max_concurrent_streams: 1024,
            drain_grace: Duration::from_millis(500),
            shutdown_timeout: Duration::from_secs(10),
            tls: None,
            auth: None,
            max_connections: 4096,
            max_watchers: 1024,
            max_message_bytes: 4 << 20,
            max_model_bytes: MAX_MESSAGE_BYTES,
            audit: None,
            request_timeout: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(300)),
            namespace_limits: crate::grpc::service::NamespaceLimits {
                workflows: 1024,
                live_cases: 0,
            },
            max_request_bytes_in_flight: DEFAULT_REQUEST_BYTES_IN_FLIGHT,
            export: crate::app::ExportConfig::default(),
        }
    }
}

/// The port's budget of partly received request bytes, shown on `/metrics`.
fn request_budget(
    cfg: &ServerConfig,
    observer: &Observer,
) -> Arc<crate::grpc::limits::RequestBudget> {
    let budget = Arc::new(crate::grpc::limits::RequestBudget::new(
        cfg.max_request_bytes_in_flight,
    ));
    observer.metrics().slot.set_request_budget(budget.clone());
    budget
}

/// `--max-request-bytes-in-flight` by default: 256 MiB.
pub const DEFAULT_REQUEST_BYTES_IN_FLIGHT: u64 = 256 << 20;

/// The name health reports for the knhk service.
pub use crate::grpc::SERVICE_NAME;

/// The encoded file descriptor sets of every service the gRPC port serves: `knhk.v1`,
/// `grpc.health.v1`, `grpc.reflection.v1` and `v1alpha` (what the auth table must cover).
pub fn served_descriptor_sets() -> [&'static [u8]; 4] {
    [
        proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]
}

/// A running server's handles, for tests and embedding.
#[derive(Clone)]
pub struct Running {
    pub engine: Arc<Engine>,
    pub health: tonic_health::server::HealthReporter,
    /// The event log's counters, when durability is on.
    pub journal: Option<Arc<journal::JournalStats>>,
    /// The gRPC port's budget of partly received request bytes.
    pub request_budget: Arc<crate::grpc::limits::RequestBudget>,
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
    // TLS files first: a bad file stops the start with a line naming it, before anything runs.
    let tls = match &cfg.tls {
        Some(t) => {
            crate::tls::install_crypto_provider();
            Some(TlsState::new(t.clone())?)
        }
        None => None,
    };
    // The audit log next: a directory that cannot be written stops the start.
    let audit = open_audit(&cfg).await?;
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
    health
        .set_service_status(crate::grpc::NEW_CASES_SERVICE, ServingStatus::NotServing)
        .await;

    // While the engine starts (workers, journal replay), a startup server on the same listener
    // answers health (NOT_SERVING) so probes get an answer rather than a stalled connection.
    let listener = Arc::new(listener);
    // One cap for the port: the start-up server's connections count too.
    let request_budget = request_budget(&cfg, &observer);
    let conn_limit =
        crate::tls::ConnLimit::with_idle_timeout(cfg.max_connections, cfg.idle_timeout);
    let (startup_stop_tx, startup_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let startup = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service.clone())
            .serve_with_incoming_shutdown(
                Incoming::new(listener.clone(), tls.clone(), conn_limit.clone()),
                async move {
                    let _ = startup_stop_rx.await;
                },
            ),
    );

    let engine_cfg = cfg.engine.clone();
    let commit_peer = audit.clone().map(|a| a as Arc<dyn knhk_log::CommitPeer>);
    let export = cfg.export.clone();
    let started = tokio::task::spawn_blocking(move || {
        crate::app::start_exporting(engine_cfg, hook, journal, commit_peer, &export)
    })
    .await;
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
    // Automatic fires a request caused but the log did not hold when the process ended.
    let settled = engine.settle_all().await;
    if settled > 0 {
        tracing::info!(
            cases = settled,
            "silent tasks enabled at restart were run (their fires are logged now)"
        );
    }
    // Timers start once the log is replayed: those that expired while the server was down fire
    // now, each once.
    engine.start_timers();
    let journal = core.log.clone();
    let state = if durable {
        "persisted state loaded (journal replayed)"
    } else {
        "in memory only (no journal)"
    };
    observer.set_check("state", Check::healthy(state), true);
    observer.attach(&engine, journal.as_ref().map(|j| j.stats()), health.clone());
    observer
        .metrics()
        .slot
        .set_exporters(core.exporters.clone());

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let (closing_tx, closing_rx) = watch::channel(false);
    let service = KnhkService::new(
        engine.clone(),
        closing_rx,
        observer.enabled().then(|| observer.metrics().rpc.clone()),
    )
    .with_max_watchers(cfg.max_watchers)
    .with_audit(audit.clone())
    .with_namespace_limits(cfg.namespace_limits);

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
            health
                .set_service_status(crate::grpc::NEW_CASES_SERVICE, ServingStatus::NotServing)
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
        .layer(
            crate::grpc::limits::LimitsLayer::new(cfg.request_timeout, request_budget.clone())
                .with_message_limits(cfg.max_message_bytes, cfg.max_model_bytes)
                .with_audit(audit.clone()),
        )
        // Inside the RPC layer: refusals are counted and traced like any other answer.
        .layer(AuthLayer::new(cfg.auth.clone()).with_audit(audit.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(crate::grpc::SizedKnhk::new(
            service,
            cfg.max_message_bytes,
            cfg.max_model_bytes,
        ));
    let incoming = Incoming::new(listener, tls.clone(), conn_limit);
    // Reload of the TLS files on SIGHUP and on change (registered before health says SERVING).
    let tls_watch = tls.clone().map(|t| tokio::spawn(t.watch()));
    // Reload of the auth files on SIGHUP and on change.
    let auth_watch = cfg.auth.clone().map(|a| {
        let interval = a.config().reload_interval;
        tokio::spawn(a.watch(interval))
    });
    // The rate limiters forget idle principals once a minute (bounded memory).
    let limits_housekeeping = cfg.auth.clone().map(|a| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                a.limits.housekeep();
            }
        })
    });
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
        request_budget: request_budget.clone(),
    });

    let result = tokio::select! {
        r = transport => r.map_err(|e| e.into()),
        _ = deadline_rx => {
            tracing::warn!("shutdown: deadline reached with calls still open; closing them");
            Ok(())
        }
    };
    if let Some(w) = tls_watch {
        w.abort();
    }
    if let Some(h) = limits_housekeeping {
        h.abort();
    }
    if let Some(w) = auth_watch {
        w.abort();
    }
    let _ = tokio::task::spawn_blocking(move || {
        core.stop();
        if let Some(a) = audit {
            a.close();
        }
    })
    .await;
    observer.set_phase(Phase::Stopped);
    observer.stop_http().await;
    tracing::info!("shutdown: workers stopped");
    result
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
    let tls_mode = match &cfg.tls {
        None => "off",
        Some(t) if t.client_ca.is_none() => "on",
        Some(t) if t.client_auth == crate::tls::ClientAuth::Optional => {
            "on, client certificates optional"
        }
        Some(_) => "on, client certificates required",
    };
    let auth_mode = cfg
        .auth
        .as_ref()
        .map_or_else(|| "off".to_string(), |a| a.describe());
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
                tls = tls_mode,
                auth = %auth_mode,
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

/// The audit log `cfg` asks for, opened (off the async workers); an error names the directory.
async fn open_audit(
    cfg: &ServerConfig,
) -> Result<Option<Arc<crate::audit::AuditLog>>, Box<dyn std::error::Error + Send + Sync>> {
    let Some(a) = cfg.audit.clone() else {
        return Ok(None);
    };
    let log = tokio::task::spawn_blocking(move || crate::audit::AuditLog::open(a))
        .await
        .map_err(|e| format!("audit log task: {e}"))?
        .map_err(|e| format!("audit log: {e}"))?;
    Ok(Some(log))
}

/// Cluster mode (crate::cluster, docs/cluster.md): joins the cluster of `cluster`, serves
/// `knhk.v1.Knhk` through the cluster router on `addr` until SIGINT or SIGTERM, then hands its
/// partitions back (drained and acknowledged) and leaves. Health says SERVING once every
/// partition this node ranks first for is claimed and rebuilt.
pub async fn serve_cluster(
    addr: SocketAddr,
    cfg: ServerConfig,
    cluster: crate::cluster::ClusterConfig,
    observe: ObserveConfig,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let observer = Observer::new(observe);
    let audit = open_audit(&cfg).await?;
    observer.start_http().await?;
    let listener = TcpListener::bind(addr).await?;
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in ["", SERVICE_NAME, crate::grpc::NEW_CASES_SERVICE] {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    let (closing_tx, closing_rx) = watch::channel(false);
    let node_id = cluster.node_id.clone();
    let partitions = cluster.partitions;
    let node = crate::cluster::Node::start(
        cluster,
        cfg.engine.clone(),
        closing_rx,
        observer.enabled().then(|| observer.metrics().rpc.clone()),
        cfg.max_watchers,
        cfg.namespace_limits,
        audit.clone(),
    )
    .await?;
    observer.set_check(
        "state",
        Check::healthy("cluster mode: partitions rebuilt from JetStream"),
        true,
    );
    observer.attach(&node.catalog_engine, None, health.clone());
    observer.metrics().slot.set_cluster(&node);
    {
        // Readiness: every partition this node ranks first for is claimed and rebuilt.
        let health = health.clone();
        let mut ready = node.ready.subscribe();
        tokio::spawn(async move {
            let _ = ready.wait_for(|r| *r).await;
            for name in ["", SERVICE_NAME, crate::grpc::NEW_CASES_SERVICE] {
                health
                    .set_service_status(name, ServingStatus::Serving)
                    .await;
            }
        });
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let tls = match &cfg.tls {
        Some(t) => {
            crate::tls::install_crypto_provider();
            Some(TlsState::new(t.clone())?)
        }
        None => None,
    };
    let request_budget = request_budget(&cfg, &observer);
    let conn_limit =
        crate::tls::ConnLimit::with_idle_timeout(cfg.max_connections, cfg.idle_timeout);
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(cfg.max_concurrent_streams))
        .tcp_nodelay(true)
        .layer(observer.rpc_layer())
        .layer(
            crate::grpc::limits::LimitsLayer::new(cfg.request_timeout, request_budget.clone())
                .with_message_limits(cfg.max_message_bytes, cfg.max_model_bytes)
                .with_audit(audit.clone()),
        )
        .layer(AuthLayer::new(cfg.auth.clone()).with_audit(audit.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(crate::grpc::SizedKnhk::new(
            crate::cluster::router::ClusterService::new(node.clone()),
            cfg.max_message_bytes,
            cfg.max_model_bytes,
        ));
    let incoming = Incoming::new(Arc::new(listener), tls, conn_limit);
    observer.set_phase(Phase::Serving);
    tracing::info!(
        addr = %addr,
        node = %node_id,
        partitions,
        "knhk serving gRPC in cluster mode"
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let grace = cfg.drain_grace;
    let stopper = {
        let node = node.clone();
        let health = health.clone();
        let observer = observer.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown: handing partitions back");
            observer.set_phase(Phase::Draining);
            for name in ["", SERVICE_NAME, crate::grpc::NEW_CASES_SERVICE] {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            let _ = closing_tx.send(true);
            node.shutdown().await;
            tokio::time::sleep(grace).await;
            let _ = stop_tx.send(());
        })
    };
    let result = router
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop_rx.await;
        })
        .await;
    stopper.abort();
    if let Some(a) = audit {
        let _ = tokio::task::spawn_blocking(move || a.close()).await;
    }
    observer.set_phase(Phase::Stopped);
    observer.stop_http().await;
    result.map_err(|e| e.into())
}
