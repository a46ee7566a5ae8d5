//! The HTTP side (axum): metrics and health probes, on their own address, off the kernel path.
//!
//! Endpoints (on `--http-addr` / `KNHK_HTTP_ADDR`, default 127.0.0.1:9090; `off` disables them
//! and the gRPC request metrics with them):
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | every metric, OpenMetrics text (prometheus-client), see docs/operations.md |
//! | `GET /health/startup` | 200 once the workers run (pinned where asked) and persisted state is loaded; latched |
//! | `GET /health/ready` | 200 while accepting work: started, not draining, no input ring saturated, every worker live, the event log writable |
//! | `GET /health/live` | 200 while every kernel worker's heartbeat has moved within `--heartbeat-timeout-ms` |
//! | `GET /health/capacity` | 200 while ready and a new case has a slot (free, or a finished case to evict); not a readiness probe: a full engine still serves its running cases |
//! | `GET /health` | JSON: `status` (healthy, degraded, unhealthy), `version`, `uptime_seconds`, a check per component |
//!
//! Probes answer 200 or 503 with a one-line reason. Unknown paths are 404, other methods 405.
//!
//! A watchdog task samples the workers' heartbeats and ring counters ten times a second (a few
//! atomic loads; it never touches a worker) and keeps the gRPC health service
//! (`grpc.health.v1`, service `""` and `knhk.v1.Knhk`) in agreement with readiness: SERVING
//! exactly when `/health/ready` is 200; and service `knhk.v1.Knhk.CreateCase` in agreement with
//! `/health/capacity`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use crate::engine::Engine;
use crate::metrics::{Metrics, RpcLayer};
use crate::workers::RING_CAPACITY;

/// Observability settings (the server's flags).
#[derive(Debug, Clone)]
pub struct ObserveConfig {
    /// Address of the HTTP endpoints; `None` serves none and records no gRPC metrics.
    pub http_addr: Option<SocketAddr>,
    /// A worker whose heartbeat has not moved for this long is wedged: liveness fails.
    pub heartbeat_timeout: Duration,
    /// An input ring at least this full (fraction of its capacity) makes the server unready.
    pub saturation: f64,
    /// A connection on the HTTP port must deliver a whole request head within this long of
    /// opening, or of its previous response (an idle keep-alive connection counts too);
    /// else it is closed. Bounds what a slowloris client can hold.
    pub header_read_timeout: Duration,
    /// Authentication (crate::auth): when set and the HTTP address is not a loopback one,
    /// `/metrics` and `/health` need a bearer token of a principal with role `reader` in some
    /// namespace. The probes (`/health/live|ready|startup|capacity`) stay open.
    pub auth: Option<Arc<crate::auth::AuthState>>,
    /// TLS on the HTTP port (`--http-tls`, `--http-tls-cert`): HTTPS only, ALPN http/1.1,
    /// reloaded like the gRPC port's; no client certificates (probes present none).
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig {
            http_addr: None,
            heartbeat_timeout: Duration::from_secs(2),
            saturation: 0.9,
            header_read_timeout: Duration::from_secs(10),
            auth: None,
            tls: None,
        }
    }
}

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Workers starting, persisted state loading.
    Starting = 0,
    /// Accepting work.
    Serving = 1,
    /// Shutdown signalled: new work refused, in-flight work finishing.
    Draining = 2,
    /// Workers stopped.
    Stopped = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Starting,
            1 => Phase::Serving,
            2 => Phase::Draining,
            _ => Phase::Stopped,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Draining => "draining",
            Phase::Stopped => "stopped",
        }
    }
}

/// Health of one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Healthy,
    Degraded,
    Unhealthy,
}

/// One component's check: its level and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub status: Level,
    pub reason: String,
}

impl Check {
    pub fn healthy(reason: impl Into<String>) -> Check {
        Check {
            status: Level::Healthy,
            reason: reason.into(),
        }
    }
    pub fn degraded(reason: impl Into<String>) -> Check {
        Check {
            status: Level::Degraded,
            reason: reason.into(),
        }
    }
    pub fn unhealthy(reason: impl Into<String>) -> Check {
        Check {
            status: Level::Unhealthy,
            reason: reason.into(),
        }
    }
}

/// How long an exporter with events to read may stand still before `/health` says it stalled.
pub const EXPORTER_STALL: Duration = Duration::from_secs(10);

/// The `/health` document.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub status: Level,
    pub version: &'static str,
    pub uptime_seconds: f64,
    pub probes: Probes,
    pub checks: BTreeMap<String, Check>,
}

/// The three probes' answers.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Probes {
    pub startup: bool,
    pub ready: bool,
    pub live: bool,
}

#[derive(Debug, Default)]
struct Beat {
    heartbeat: u64,
    moved_at: Option<Instant>,
    in_full: u64,
    saturated_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct Sample {
    beats: Vec<Beat>,
    at: Option<Instant>,
}

/// Probe state and metrics of one server; shared by the server, the HTTP endpoints and the
/// watchdog. Create it with [`Observer::new`], start the endpoints with
/// [`Observer::start_http`], hand it to [`crate::server::serve_observed`].
pub struct Observer {
    cfg: ObserveConfig,
    started: Instant,
    phase: AtomicU8,
    startup_latch: AtomicBool,
    metrics: Metrics,
    extra: Mutex<BTreeMap<String, (Check, bool)>>,
    sample: Mutex<Sample>,
    http_addr: OnceLock<SocketAddr>,
    stop: watch::Sender<bool>,
    /// The HTTP server task, awaited by [`Observer::stop_http`] so that the listener is closed
    /// when shutdown returns.
    http_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("cfg", &self.cfg)
            .field("phase", &self.phase())
            .finish_non_exhaustive()
    }
}

impl Observer {
    /// A fresh observer (phase Starting).
    pub fn new(cfg: ObserveConfig) -> Arc<Observer> {
        let (stop, _) = watch::channel(false);
        Arc::new(Observer {
            cfg,
            started: Instant::now(),
            phase: AtomicU8::new(Phase::Starting as u8),
            startup_latch: AtomicBool::new(false),
            metrics: Metrics::new(),
            extra: Mutex::new(BTreeMap::new()),
            sample: Mutex::new(Sample::default()),
            http_addr: OnceLock::new(),
            http_task: Mutex::new(None),
            stop,
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &ObserveConfig {
        &self.cfg
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// True when HTTP endpoints and gRPC metrics are on.
    pub fn enabled(&self) -> bool {
        self.cfg.http_addr.is_some()
    }

    /// Binds `http_addr` and serves the endpoints until [`Observer::stop_http`]. Returns the
    /// bound address (None when disabled). Call before the engine starts, so that the startup
    /// probe can say "not yet".
    pub async fn start_http(self: &Arc<Self>) -> std::io::Result<Option<SocketAddr>> {
        let Some(addr) = self.cfg.http_addr else {
            return Ok(None);
        };
        let tls = match self.cfg.tls.clone() {
            Some(t) => {
                crate::tls::install_crypto_provider();
                Some(
                    crate::tls::TlsState::new_http1(t)
                        .map_err(|e| std::io::Error::other(format!("HTTP port TLS: {e}")))?,
                )
            }
            None => None,
        };
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let _ = self.http_addr.set(local);
        let app = router(self.clone());
        // Reload of the HTTP port's TLS files on SIGHUP and on change.
        let tls_watch = tls.clone().map(|t| tokio::spawn(t.watch()));
        let mut stop = self.stop.subscribe();
        let header_timeout = self.cfg.header_read_timeout;
        let task = tokio::spawn(async move {
            let shutdown = async move {
                while !*stop.borrow() {
                    if stop.changed().await.is_err() {
                        break;
                    }
                }
            };
            serve_http(listener, tls, app, header_timeout, shutdown).await;
            if let Some(w) = tls_watch {
                w.abort();
            }
        });
        *self.http_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        tracing::info!(addr = %local, "knhk serving HTTP (/metrics, /health)");
        Ok(Some(local))
    }

    /// The bound HTTP address, once started.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr.get().copied()
    }

    /// Stops the HTTP endpoints and waits until the listener is closed (graceful: open
    /// requests get up to five seconds to finish).
    pub async fn stop_http(&self) {
        let _ = self.stop.send(true);
        let task = self
            .http_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!("http endpoints: open connections did not finish within 5 s");
            }
        }
    }

    /// The tower layer for the gRPC server: spans always, metrics when enabled.
    pub fn rpc_layer(&self) -> RpcLayer {
        RpcLayer::new(self.enabled().then(|| self.metrics.rpc.clone()))
    }

    /// Points probes and metrics at the started engine and starts the watchdog, which keeps
    /// `health` (gRPC) in agreement with readiness.
    pub fn attach(
        self: &Arc<Self>,
        engine: &Arc<Engine>,
        journal: Option<Arc<crate::journal::JournalStats>>,
        health: tonic_health::server::HealthReporter,
    ) {
        self.metrics.slot.set(engine, journal);
        self.sample_now();
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last: Option<bool> = None;
            let mut last_new: Option<bool> = None;
            let mut last_full: Option<bool> = None;
            loop {
                tick.tick().await;
                let Some(obs) = me.upgrade() else { return };
                match obs.phase() {
                    Phase::Stopped => return,
                    // Until the server says it serves, it sets the health statuses itself: a
                    // verdict computed here before that could land after its SERVING.
                    Phase::Starting => continue,
                    _ => {}
                }
                obs.sample_now();
                let ready = obs.ready().is_ok();
                if last != Some(ready) {
                    if last.is_some() {
                        tracing::info!(ready, "readiness changed");
                    }
                    last = Some(ready);
                    let s = if ready {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    health.set_service_status("", s).await;
                    health
                        .set_service_status(crate::grpc::SERVICE_NAME, s)
                        .await;
                }
                // Readiness is known: only the capacity is asked.
                let accepting = if ready {
                    obs.has_room()
                } else {
                    Err("not ready".to_string())
                };
                let new = accepting.is_ok();
                // Logged when a ready server fills up or has room again (not at start or stop).
                let full = ready && !new;
                if last_full.is_some_and(|was| was != full) {
                    match &accepting {
                        Err(why) if full => tracing::warn!(reason = %why, "new cases refused"),
                        _ => tracing::info!("case capacity available again"),
                    }
                }
                last_full = Some(full);
                if last_new != Some(new) {
                    last_new = Some(new);
                    let s = if new {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    health
                        .set_service_status(crate::grpc::NEW_CASES_SERVICE, s)
                        .await;
                }
            }
        });
    }

    /// Moves the life cycle on.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::SeqCst))
    }

    /// Sets the check of an extra component (the journal, say). With `required`, startup waits
    /// for it to be healthy and readiness fails while it is unhealthy.
    pub fn set_check(&self, name: &str, check: Check, required: bool) {
        self.extra
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), (check, required));
    }

    fn engine(&self) -> Option<Arc<Engine>> {
        self.metrics.slot.get()
    }

    /// Samples heartbeats and ring counters (the watchdog does this every 100 ms; probes also
    /// do it when the last sample is older than that).
    fn sample_now(&self) {
        let Some(engine) = self.engine() else { return };
        let now = Instant::now();
        let stats = engine.worker_stats();
        let mut sample = self.sample.lock().unwrap_or_else(|p| p.into_inner());
        sample.beats.resize_with(stats.len(), Beat::default);
        let mut ages = Vec::with_capacity(stats.len());
        for (b, s) in sample.beats.iter_mut().zip(&stats) {
            // Take the workers' published tick histograms, handing their buffers back.
            s.ticks.drain();
            let hb = s.heartbeat.load(Ordering::Relaxed);
            if hb != b.heartbeat || b.moved_at.is_none() {
                if hb != b.heartbeat && hb != 0 {
                    b.moved_at = Some(now);
                }
                b.heartbeat = hb;
            }
            let in_full = s.in_full.load(Ordering::Relaxed);
            if in_full != b.in_full {
                b.in_full = in_full;
                b.saturated_until = Some(now + Duration::from_secs(1));
            }
            ages.push(
                b.moved_at
                    .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64()),
            );
        }
        sample.at = Some(now);
        drop(sample);
        *self
            .metrics
            .slot
            .heartbeat_age
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = ages;
    }

    fn fresh_sample(&self) {
        let stale = self
            .sample
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .at
            .is_none_or(|t| t.elapsed() > Duration::from_millis(100));
        if stale {
            self.sample_now();
        }
    }

    /// Workers check: Unhealthy when any is wedged or not yet running.
    fn workers_check(&self, engine: &Engine) -> Check {
        let stats = engine.worker_stats();
        let sample = self.sample.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut wedged = Vec::new();
        let mut waiting = 0usize;
        for (i, b) in sample.beats.iter().enumerate() {
            match b.moved_at {
                None => waiting += 1,
                Some(t) if now.saturating_duration_since(t) > self.cfg.heartbeat_timeout => {
                    wedged.push(format!(
                        "worker {i} heartbeat stuck for {:.1}s",
                        now.saturating_duration_since(t).as_secs_f64()
                    ));
                }
                Some(_) => {}
            }
        }
        drop(sample);
        let n = stats.len();
        if self.phase() == Phase::Stopped {
            return Check::unhealthy(format!("{n} workers stopped"));
        }
        if !wedged.is_empty() {
            return Check::unhealthy(format!(
                "{} (bound {}ms)",
                wedged.join("; "),
                self.cfg.heartbeat_timeout.as_millis()
            ));
        }
        if waiting > 0 {
            return Check::unhealthy(format!("{waiting} of {n} workers not running yet"));
        }
        let pinned: Vec<String> = stats
            .iter()
            .filter_map(|s| {
                let c = s.core.load(Ordering::Relaxed);
                (c != u64::MAX).then(|| c.to_string())
            })
            .collect();
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let want_pin = engine.config().pin && cores > 1;
        let base = format!(
            "{n} workers running, heartbeats within {}ms",
            self.cfg.heartbeat_timeout.as_millis()
        );
        if want_pin && pinned.len() < n {
            Check::degraded(format!(
                "{base}; only {} of {n} pinned (pinning failed: running unpinned)",
                pinned.len()
            ))
        } else if pinned.is_empty() {
            Check::healthy(format!("{base}, unpinned"))
        } else {
            Check::healthy(format!("{base}, pinned to cores {}", pinned.join(",")))
        }
    }

    /// Rings check: Degraded while saturated.
    fn rings_check(&self, engine: &Engine) -> Check {
        let depths = engine.ring_depths();
        let limit = ((RING_CAPACITY as f64) * self.cfg.saturation).ceil() as usize;
        let sample = self.sample.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut full = Vec::new();
        for (i, d) in depths.iter().enumerate() {
            let recent = sample
                .beats
                .get(i)
                .and_then(|b| b.saturated_until)
                .is_some_and(|t| t > now);
            if *d >= limit || recent {
                full.push(format!("worker {i} input ring {d}/{RING_CAPACITY}"));
            }
        }
        if full.is_empty() {
            let max = depths.iter().copied().max().unwrap_or(0);
            Check::healthy(format!("deepest input ring {max}/{RING_CAPACITY}"))
        } else {
            Check::degraded(format!(
                "saturated (submissions get RESOURCE_EXHAUSTED): {}",
                full.join("; ")
            ))
        }
    }

    /// Event log check (only when durability is on): Unhealthy once a write or sync failed,
    /// because from then on every change is refused rather than acknowledged unpersisted.
    fn journal_check(&self, engine: &Engine) -> Option<Check> {
        let hook = engine.hook();
        let stats = self.metrics.slot.journal()?;
        if stats.failed.load(Ordering::Relaxed) != 0 {
            let why = hook
                .refusal()
                .map_or_else(|| "event log write failed".to_string(), |e| e.to_string());
            return Some(Check::unhealthy(format!("refusing work: {why}")));
        }
        Some(Check::healthy(format!(
            "event log: {} fsyncs, {} events",
            stats.fsyncs.load(Ordering::Relaxed),
            stats.events.load(Ordering::Relaxed)
        )))
    }

    /// Exporters check (when there are exporters): Degraded while one's sink fails or it has
    /// stalled behind the log for [`EXPORTER_STALL`] (compaction waits for it meanwhile; the
    /// kernel does not).
    fn exporter_check(&self) -> Option<Check> {
        let exporters = self.metrics.slot.exporters();
        if exporters.is_empty() {
            return None;
        }
        let trouble: Vec<String> = exporters
            .iter()
            .filter_map(|e| e.trouble(EXPORTER_STALL))
            .collect();
        Some(if trouble.is_empty() {
            Check::healthy(
                exporters
                    .iter()
                    .map(|e| {
                        format!(
                            "exporter {}: {} events delivered, at {}",
                            e.name,
                            e.events.load(Ordering::Relaxed),
                            e.position()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        } else {
            Check::degraded(trouble.join("; "))
        })
    }

    /// Capacity check: Degraded while a new case has no slot (every slot holds a running
    /// case); the running cases are still served. In cluster mode over the partitions the
    /// node serves.
    fn capacity_check(&self) -> Check {
        let c = crate::metrics::capacity_of(&self.metrics.slot.holding_engines());
        if self.metrics.slot.is_cluster() && c.slots == 0 {
            return Check::healthy("this node serves no partition yet".to_string());
        }
        let history = c
            .history_room
            .saturating_mul(crate::engine::HISTORY_EVENT_BYTES as u64);
        let reason = format!(
            "{} of {} case slots used ({} finished, evictable), {} free; {} history events \
             ({history} bytes)",
            c.used,
            c.slots,
            c.evictable,
            c.free(),
            c.history_events
        );
        if c.accepts_new_cases() {
            Check::healthy(reason)
        } else {
            Check::degraded(format!(
                "full: every case slot holds a running case, so CreateCase gets \
                 RESOURCE_EXHAUSTED (running cases are served; raise --case-capacity): {reason}"
            ))
        }
    }

    /// Archive check (when there is an archive): Degraded while its stores fail (finished
    /// cases keep their slots meanwhile; nothing is lost).
    /// In cluster mode over the partition engines the node serves (they share one archive).
    fn archive_check(&self) -> Option<Check> {
        let engines = self.metrics.slot.holding_engines();
        let archive = engines.iter().find_map(|(_, e)| e.archive())?;
        let (mut pending, mut stored, mut failing) = (0u64, 0u64, None);
        for (_, e) in &engines {
            let stats = e.archive_stats();
            pending += stats.pending.load(Ordering::Relaxed);
            stored += stats.archived.load(Ordering::Relaxed);
            if failing.is_none() {
                failing = stats
                    .failing
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
            }
        }
        Some(match failing {
            Some(e) => Check::degraded(format!(
                "{} archive failing ({e}): {pending} finished cases keep their slots until it \
                 stores them",
                archive.kind()
            )),
            None => Check::healthy(format!(
                "{} archive: {stored} cases stored, {pending} pending",
                archive.kind(),
            )),
        })
    }

    /// Capacity probe: Ok while ready and a new case has a slot.
    pub fn accepting_cases(&self) -> Result<String, String> {
        self.ready()?;
        self.has_room()
    }

    /// The capacity half of [`Observer::accepting_cases`], for a caller that knows readiness.
    fn has_room(&self) -> Result<String, String> {
        self.engine().ok_or("not ready: no engine")?;
        let c = self.capacity_check();
        match c.status {
            Level::Healthy => Ok(c.reason),
            _ => Err(c.reason),
        }
    }

    fn watch_check(&self, engine: &Engine) -> Check {
        let w = engine.watch_stats();
        let subs: usize = w.iter().map(|x| x.0).sum();
        let lag = w.iter().map(|x| x.1).max().unwrap_or(0);
        let cap = engine.config().watch_buffer.max(16);
        let reason = format!("{subs} subscriptions, slowest {lag}/{cap} batches behind");
        if subs > 0 && lag >= cap {
            Check::degraded(format!("{reason}: a slow subscriber is losing events"))
        } else {
            Check::healthy(reason)
        }
    }

    fn server_check(&self) -> Check {
        match self.phase() {
            Phase::Serving => Check::healthy("serving"),
            Phase::Starting => Check::unhealthy("starting"),
            Phase::Draining => Check::degraded("draining: new work refused"),
            Phase::Stopped => Check::unhealthy("stopped"),
        }
    }

    fn required_failing(&self, level: Level) -> Option<String> {
        let extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        extra
            .iter()
            .find(|(_, (c, req))| *req && c.status >= level)
            .map(|(n, (c, _))| format!("{n}: {}", c.reason))
    }

    /// Startup probe: Ok once the workers run and required components are healthy (latched).
    pub fn startup(&self) -> Result<String, String> {
        if self.startup_latch.load(Ordering::SeqCst) {
            return Ok("started".into());
        }
        self.fresh_sample();
        let Some(engine) = self.engine() else {
            return Err("starting: workers not started".into());
        };
        if self.phase() == Phase::Starting {
            return Err("starting: loading persisted state".into());
        }
        let w = self.workers_check(&engine);
        if w.status == Level::Unhealthy {
            return Err(format!("starting: {}", w.reason));
        }
        if let Some(why) = self.required_failing(Level::Degraded) {
            return Err(format!("starting: {why}"));
        }
        self.startup_latch.store(true, Ordering::SeqCst);
        Ok(format!("started: {}", w.reason))
    }

    /// Readiness probe: Ok while accepting work.
    pub fn ready(&self) -> Result<String, String> {
        self.startup()?;
        let phase = self.phase();
        if phase != Phase::Serving {
            return Err(format!("not ready: {}", phase.name()));
        }
        let engine = self.engine().ok_or("not ready: no engine")?;
        self.live()?;
        let r = self.rings_check(&engine);
        if r.status != Level::Healthy {
            return Err(format!("not ready: {}", r.reason));
        }
        if let Some(j) = self.journal_check(&engine) {
            if j.status == Level::Unhealthy {
                return Err(format!("not ready: {}", j.reason));
            }
        }
        if let Some(why) = self.required_failing(Level::Unhealthy) {
            return Err(format!("not ready: {why}"));
        }
        Ok("ready".into())
    }

    /// Liveness probe: Ok while every worker's heartbeat moved within the bound.
    pub fn live(&self) -> Result<String, String> {
        self.fresh_sample();
        let Some(engine) = self.engine() else {
            // Nothing to be wedged yet; the startup probe covers this period.
            return Ok("alive (starting)".into());
        };
        let w = self.workers_check(&engine);
        match w.status {
            Level::Unhealthy if self.phase() != Phase::Starting => Err(w.reason),
            _ => Ok(w.reason),
        }
    }

    /// The `/health` document.
    pub fn report(&self) -> HealthReport {
        self.fresh_sample();
        let mut checks = BTreeMap::new();
        checks.insert("server".to_string(), self.server_check());
        if let Some(engine) = self.engine() {
            checks.insert("workers".to_string(), self.workers_check(&engine));
            checks.insert("rings".to_string(), self.rings_check(&engine));
            checks.insert("watch".to_string(), self.watch_check(&engine));
            checks.insert("capacity".to_string(), self.capacity_check());
            if let Some(a) = self.archive_check() {
                checks.insert("archive".to_string(), a);
            }
            if let Some(j) = self.journal_check(&engine) {
                checks.insert("journal".to_string(), j);
            }
            if let Some(x) = self.exporter_check() {
                checks.insert("exporters".to_string(), x);
            }
        } else {
            checks.insert("workers".to_string(), Check::unhealthy("not started"));
        }
        for (name, (c, _)) in self.extra.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            checks.insert(name.clone(), c.clone());
        }
        let status = checks
            .values()
            .map(|c| c.status)
            .max()
            .unwrap_or(Level::Healthy);
        HealthReport {
            status,
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            probes: Probes {
                startup: self.startup().is_ok(),
                ready: self.ready().is_ok(),
                live: self.live().is_ok(),
            },
            checks,
        }
    }
}

/// The axum router of the endpoints.
pub fn router(obs: Arc<Observer>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/health/startup", get(startup))
        .route("/health/capacity", get(capacity))
        .with_state(obs)
}

/// OpenMetrics content type (what prometheus-client writes).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prometheus text format 0.0.4 content type.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics when the scraper asks for it (Prometheus does), the classic text format
/// otherwise (curl, promtool); both from the same prometheus-client encoding.
/// `/metrics` and `/health` on a non-loopback HTTP address with authentication configured:
/// `Some(response)` (401 or 403) unless the request carries a bearer token of a principal with
/// role `reader` in some namespace. The rule follows the configured bind address.
fn guard(obs: &Observer, headers: &HeaderMap, path: &str) -> Option<Response> {
    let auth = obs.cfg.auth.as_ref()?;
    let bound = obs.http_addr().or(obs.cfg.http_addr)?;
    if bound.ip().is_loopback() {
        return None;
    }
    let values: Vec<&[u8]> = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let who = if values.is_empty() {
        Err("no credentials: send `Authorization: Bearer <JWT>`".to_string())
    } else {
        auth.authenticate(&values, None)
    };
    let plain = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        (header::WWW_AUTHENTICATE, "Bearer"),
    ];
    let refusal = match who {
        Err(why) => crate::auth::Refusal::Unauthenticated(why),
        Ok(p) if p.permissions.any_role().is_some() => return None,
        Ok(p) => crate::auth::Refusal::Denied(format!(
            "{path} needs role reader in some namespace; {} {} holds none",
            p.via.name(),
            p.subject_escaped()
        )),
    };
    auth.note_refusal(&refusal, path, None);
    Some(match refusal {
        crate::auth::Refusal::Denied(why) => {
            (StatusCode::FORBIDDEN, plain, format!("{why}\n")).into_response()
        }
        crate::auth::Refusal::Unauthenticated(why) | crate::auth::Refusal::BadNamespace(why) => {
            (StatusCode::UNAUTHORIZED, plain, format!("{why}\n")).into_response()
        }
        crate::auth::Refusal::Throttled(t) => (
            StatusCode::TOO_MANY_REQUESTS,
            plain,
            format!("{}\n", t.message),
        )
            .into_response(),
    })
}

async fn metrics(State(obs): State<Arc<Observer>>, headers: HeaderMap) -> Response {
    if let Some(r) = guard(&obs, &headers, "/metrics") {
        return r;
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    // Scrapes read atomics and take short shell-side locks: keep them off the async workers.
    let encoded = tokio::task::spawn_blocking(move || obs.metrics.encode()).await;
    match encoded {
        Ok(Ok(body)) if openmetrics => {
            ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response()
        }
        Ok(Ok(body)) => (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            crate::metrics::to_prometheus_text(&body),
        )
            .into_response(),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        )
            .into_response(),
    }
}

fn probe(r: Result<String, String>) -> Response {
    let plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    match r {
        Ok(why) => (StatusCode::OK, plain, format!("{why}\n")).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, plain, format!("{why}\n")).into_response(),
    }
}

async fn live(State(obs): State<Arc<Observer>>) -> Response {
    probe(obs.live())
}

async fn ready(State(obs): State<Arc<Observer>>) -> Response {
    probe(obs.ready())
}

async fn capacity(State(obs): State<Arc<Observer>>) -> Response {
    probe(obs.accepting_cases())
}

async fn startup(State(obs): State<Arc<Observer>>) -> Response {
    probe(obs.startup())
}

async fn health(State(obs): State<Arc<Observer>>, headers: HeaderMap) -> Response {
    if let Some(r) = guard(&obs, &headers, "/health") {
        return r;
    }
    let report = obs.report();
    let code = if report.status == Level::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(report)).into_response()
}

/// Serves `app` on `listener` over HTTP/1.1 until `shutdown` resolves, then lets open
/// requests finish (the caller bounds that). Each connection gets hyper's header read
/// timeout with a tokio timer (axum::serve sets none, so a half-sent request or an idle
/// connection was held forever).
async fn serve_http(
    listener: TcpListener,
    tls: Option<Arc<crate::tls::TlsState>>,
    app: axum::Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_accept_error = None::<std::time::Instant>;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors or similar: say so (at most once a second) and
                // back off instead of spinning.
                if last_accept_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(error = %e, "http endpoints: accept failed");
                    last_accept_error = Some(std::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let builder = {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            b
        };
        let service = TowerToHyperService::new(app.clone());
        match &tls {
            None => {
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    // A closed or timed-out connection is not an error of the server.
                    let _ = conn.await;
                });
            }
            Some(tls) => {
                // The handshake (under its deadline) in the connection's own task; a failed
                // one is logged by the TLS state, at most once a second.
                let handshake = crate::tls::TlsState::handshake(tls.clone(), stream);
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let Some(conn) = handshake.await else { return };
                    let conn = watcher.watch(builder.serve_connection(TokioIo::new(conn), service));
                    let _ = conn.await;
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
}
