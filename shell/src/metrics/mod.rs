//! Metrics: what the kernel workers count, how the shell collects it, and the one registry
//! that `/metrics` encodes (prometheus-client, re-exported here as [`prometheus_client`]).
//!
//! Two sides, one rule: the worker never locks, allocates or makes a syscall to be observed.
//!
//! - **Worker side** ([`WorkerMeter`](knhk_engine::stats::WorkerMeter),
//!   [`KernelCounters`](knhk_engine::stats::KernelCounters)): after each job the worker adds to
//!   its own cache-padded counters (plain relaxed load + store: one writer per counter) and
//!   records the job's kernel ticks per op into its own pre-sized hdrhistogram. Ticks are read
//!   around a whole job (a batch of ops, run as beats of up to 8 lanes), accumulated over one
//!   drain round and recorded as `total ticks / ops` with weight `ops` — never around one op.
//!   About every 10 ms of work, or as soon as it goes idle, the worker hands its histogram to
//!   the shell through an SPSC ring and takes an empty one back from a second ring (three
//!   buffers circulate; when none is free it keeps recording into the one it has, losing
//!   nothing).
//! - **Shell side** ([`EngineCollector`], registered in [`Metrics`]): on each scrape it drains
//!   the returned histograms into a cumulative one, reads the atomics and the engine's ring and
//!   watch state, and encodes them. gRPC requests are counted and timed by [`RpcLayer`], a
//!   tower layer on the tonic server, which also opens one tracing span per RPC.
//!
//! Names follow Prometheus conventions: `knhk_` prefix, base units in the name (`_seconds`,
//! `_ticks`), `_total` on counters. The reference is `docs/operations.md`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use std::time::Instant;

pub use prometheus_client;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::engine::Engine;
use crate::journal::JournalStats;
use knhk_engine::stats::{pattern_name, EVENT_CELLS, OP_NAMES, PATTERNS, STATUS_NAMES};

// ------------------------------------------------------------------------------- shell side

/// What the collector needs of the engine, filled in once it has started.
#[derive(Debug, Default)]
pub struct EngineSlot {
    engine: OnceLock<Weak<Engine>>,
    journal: OnceLock<Arc<JournalStats>>,
    cluster: OnceLock<Weak<crate::cluster::Node>>,
    request_budget: OnceLock<Arc<crate::grpc::limits::RequestBudget>>,
    exporters: OnceLock<Vec<Arc<knhk_log::ExporterStats>>>,
    /// Seconds since each worker's heartbeat last moved (maintained by the probes' watchdog).
    pub heartbeat_age: Mutex<Vec<f64>>,
}

impl EngineSlot {
    /// Points the collector at a started engine and, when durability is on, its event log.
    pub fn set(&self, engine: &Arc<Engine>, journal: Option<Arc<JournalStats>>) {
        let _ = self.engine.set(Arc::downgrade(engine));
        if let Some(j) = journal {
            let _ = self.journal.set(j);
        }
    }

    /// Points the collector at the event log's exporters (`--export-xes`, `--export-otlp-logs`).
    pub fn set_exporters(&self, exporters: Vec<Arc<knhk_log::ExporterStats>>) {
        let _ = self.exporters.set(exporters);
    }

    /// The event log's exporters.
    pub fn exporters(&self) -> &[Arc<knhk_log::ExporterStats>] {
        self.exporters.get().map_or(&[], |v| v.as_slice())
    }

    /// Points the collector at the gRPC port's request byte budget.
    pub fn set_request_budget(&self, budget: Arc<crate::grpc::limits::RequestBudget>) {
        let _ = self.request_budget.set(budget);
    }

    /// Points the collector at a cluster node (cluster mode).
    pub fn set_cluster(&self, node: &Arc<crate::cluster::Node>) {
        let _ = self.cluster.set(Arc::downgrade(node));
    }

    /// The event log's counters, when durability is on.
    pub fn journal(&self) -> Option<Arc<JournalStats>> {
        self.journal.get().cloned()
    }

    /// The engine, while it exists.
    pub fn get(&self) -> Option<Arc<Engine>> {
        self.engine.get().and_then(Weak::upgrade)
    }

    /// Whether the collector serves a cluster node.
    pub fn is_cluster(&self) -> bool {
        self.cluster.get().is_some()
    }

    /// The engines that hold cases: in cluster mode the partition engines the node serves,
    /// with their partitions (its catalog engine holds none), else the engine.
    pub fn holding_engines(&self) -> Vec<(Option<u16>, Arc<Engine>)> {
        match self.cluster.get() {
            Some(node) => node.upgrade().map_or_else(Vec::new, |n| {
                n.partition_engines()
                    .into_iter()
                    .map(|(p, e)| (Some(p), e))
                    .collect()
            }),
            None => self.get().map(|e| (None, e)).into_iter().collect(),
        }
    }
}

/// How full `engines` are, summed.
pub fn capacity_of(engines: &[(Option<u16>, Arc<Engine>)]) -> knhk_engine::engine::Capacity {
    engines.iter().map(|(_, e)| e.capacity()).fold(
        knhk_engine::engine::Capacity::default(),
        |a, c| knhk_engine::engine::Capacity {
            slots: a.slots + c.slots,
            used: a.used + c.used,
            evictable: a.evictable + c.evictable,
            history_events: a.history_events + c.history_events,
            history_room: a.history_room + c.history_room,
        },
    )
}

/// Labels of the gRPC metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub service: String,
    pub method: String,
    pub code: String,
}

/// The gRPC request metrics, updated by [`RpcLayer`].
#[derive(Clone, Debug)]
pub struct RpcMetrics {
    requests: Family<RpcLabels, Counter>,
    duration: Family<RpcLabels, Histogram>,
    in_flight: Gauge,
    /// Watch events a slow subscriber lost (overwritten in the bounded buffer).
    pub watch_lost: Counter,
}

/// The registry and the metrics the shell updates directly.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub rpc: RpcMetrics,
    pub slot: Arc<EngineSlot>,
}

/// Ticks-per-op histogram bounds (powers of two from 4 to 65536 ticks).
const TICK_BOUNDS: [u64; 15] = [
    4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every knhk metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let rpc = RpcMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                // 50 µs .. ~13 s
                Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
            }),
            in_flight: Gauge::default(),
            watch_lost: Counter::default(),
        };
        registry.register(
            "knhk_grpc_requests",
            "gRPC requests answered, by service, method and status code",
            rpc.requests.clone(),
        );
        registry.register_with_unit(
            "knhk_grpc_request_duration",
            "gRPC request latency (to the end of the response stream), by service, method and status code",
            Unit::Seconds,
            rpc.duration.clone(),
        );
        registry.register(
            "knhk_grpc_requests_in_flight",
            "gRPC requests being served (streams count until they end)",
            rpc.in_flight.clone(),
        );
        registry.register(
            "knhk_watch_events_lost",
            "Watch events slow subscribers lost because the bounded per-worker buffer overwrote them",
            rpc.watch_lost.clone(),
        );
        let slot = Arc::new(EngineSlot::default());
        registry.register_collector(Box::new(EngineCollector {
            slot: slot.clone(),
            started: Instant::now(),
        }));
        Metrics {
            registry,
            rpc,
            slot,
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 << 10);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The Prometheus text format (0.0.4) of an OpenMetrics text from [`Metrics::encode`], for
/// scrapers that do not ask for OpenMetrics (curl, `promtool check metrics`): the same samples,
/// with counter families named after their `_total` samples, and no `# UNIT` or `# EOF` lines.
/// Prometheus itself negotiates OpenMetrics and gets prometheus-client's text unchanged.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Reads the engine on each scrape. Holds a weak reference: metrics never keep an engine alive.
#[derive(Debug)]
pub struct EngineCollector {
    slot: Arc<EngineSlot>,
    started: Instant,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    op: &'static str,
    pattern: String,
    status: &'static str,
}

/// [`EventLabels`] of one partition's engine (cluster mode).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionEventLabels {
    op: &'static str,
    pattern: String,
    status: &'static str,
    partition: String,
}

/// The partition a series counts (cluster mode: a partition's counters restart when another
/// node takes it over, as a series of its own, never as a drop in a node's sum).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExporterLabel {
    exporter: String,
}

/// An exporter's counters (docs/durability.md, "Exporters"): name, help, field.
const EXPORTER_COUNTERS: [(&str, &str, Field<knhk_log::ExporterStats>); 2] = [
    (
        "knhk_exporter_events",
        "Committed events an exporter delivered to its sink (repeats after a restart included)",
        |e| &e.events,
    ),
    (
        "knhk_exporter_failures",
        "Deliveries of an exporter that failed (each retried)",
        |e| &e.failures,
    ),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RingLabels {
    worker: String,
    ring: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    kernel_abi: String,
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let m = encoder.encode_descriptor(name, help, unit, MetricType::Counter)?;
    ConstCounter::new(value).encode(m)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let m = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

/// A counter field of a stats struct.
type Field<T> = fn(&T) -> &AtomicU64;

/// A cluster node's counters (docs/cluster.md): name, help, field.
const CLUSTER_COUNTERS: [(&str, &str, Field<crate::cluster::ClusterStats>); 9] = [
    (
        "knhk_cluster_epoch_changes",
        "Partitions this node claimed (each claim starts a new epoch)",
        |c| &c.epoch_changes,
    ),
    (
        "knhk_cluster_handoffs",
        "Partitions this node handed over gracefully (rebalance, failed log)",
        |c| &c.handoffs,
    ),
    (
        "knhk_cluster_forwarded_calls",
        "Calls this node forwarded to a partition's owner",
        |c| &c.forwarded,
    ),
    (
        "knhk_cluster_fence_rejections",
        "Publishes refused because a newer owner had fenced the partition",
        |c| &c.fenced,
    ),
    (
        "knhk_cluster_ambiguous_publishes",
        "Publishes whose outcome was ambiguous (timeout, no responders, wrong last sequence) and were resolved by reading the subject",
        |c| &c.ambiguous,
    ),
    (
        "knhk_cluster_ambiguous_landed",
        "Ambiguous publishes found to have landed",
        |c| &c.resolved_landed,
    ),
    (
        "knhk_cluster_frames",
        "Frames this node published to JetStream and had acknowledged",
        |c| &c.frames,
    ),
    (
        "knhk_cluster_replayed_frames",
        "Frames replayed while rebuilding claimed partitions",
        |c| &c.replayed_frames,
    ),
    (
        "knhk_cluster_dropped_frames",
        "Frames of deposed owners dropped by the epoch rule while rebuilding",
        |c| &c.dropped_frames,
    ),
];

/// The event log's counters: name, help, field.
const JOURNAL_COUNTERS: [(&str, &str, Field<JournalStats>); 10] = [
    (
        "knhk_journal_fsyncs",
        "fdatasync calls of the event log that covered at least one record",
        |j| &j.fsyncs,
    ),
    (
        "knhk_journal_events",
        "Events appended to the event log",
        |j| &j.events,
    ),
    (
        "knhk_journal_records",
        "Records appended to the event log",
        |j| &j.records,
    ),
    (
        "knhk_journal_written_bytes",
        "Bytes appended to the event log",
        |j| &j.bytes,
    ),
    (
        "knhk_journal_corrupt_tails",
        "Torn or corrupt tail records detected by checksum at start, cut off, never replayed",
        |j| &j.corrupt_tails,
    ),
    (
        "knhk_journal_truncated_bytes",
        "Bytes cut off the event log's tail at start",
        |j| &j.truncated_bytes,
    ),
    (
        "knhk_journal_replayed_events",
        "Events replayed from the event log at start",
        |j| &j.replayed_events,
    ),
    (
        "knhk_journal_compactions",
        "Checkpoints written by the event log's compactor",
        |j| &j.compactions,
    ),
    (
        "knhk_journal_compactions_held",
        "Compactions put off because an exporter had not read the sealed segments (run once it has)",
        |j| &j.compactions_held,
    ),
    (
        "knhk_journal_restored_cases",
        "Cases restored from checkpoint snapshots at start",
        |j| &j.restored_cases,
    ),
];

/// Per-worker counters: name, help, field.
const WORKER_COUNTERS: [(&str, &str, Field<crate::workers::WorkerStats>); 3] = [
    (
        "knhk_worker_jobs",
        "Jobs (unary requests or per-worker shares of bulk batches) a worker executed",
        |s| &s.jobs,
    ),
    (
        "knhk_worker_beats",
        "Kernel beats (up to 8 lanes) a worker ran",
        |s| &s.beats,
    ),
    (
        "knhk_worker_parks",
        "Times a worker parked for lack of work",
        |s| &s.parks,
    ),
];

impl prometheus_client::collector::Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut m = encoder.encode_descriptor(
                "knhk_build_info",
                "Build information (always 1)",
                None,
                MetricType::Gauge,
            )?;
            let labels = BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                kernel_abi: knhk_kernel::sys::KNHK_ABI_VERSION.to_string(),
            };
            ConstGauge::new(1i64).encode(m.encode_family(&labels)?)?;
        }
        gauge(
            &mut encoder,
            "knhk_uptime_seconds",
            "Seconds since the metrics registry was created (process start)",
            None,
            i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX),
        )?;
        if let Some(node) = self.slot.cluster.get().and_then(Weak::upgrade) {
            let c = &node.stats;
            gauge(
                &mut encoder,
                "knhk_cluster_partitions_owned",
                "Partitions this node owns and serves (cluster mode)",
                None,
                i64::try_from(node.partitions_served()).unwrap_or(i64::MAX),
            )?;
            for (name, help, field) in CLUSTER_COUNTERS {
                counter(
                    &mut encoder,
                    name,
                    help,
                    None,
                    field(c).load(Ordering::Relaxed),
                )?;
            }
        }
        let Some(engine) = self.slot.get() else {
            return Ok(());
        };
        let stats = engine.worker_stats();
        let workers = stats.len();
        gauge(
            &mut encoder,
            "knhk_workers",
            "Kernel worker threads",
            None,
            workers as i64,
        )?;

        // The event log, when durability is on (docs/durability.md).
        if let Some(j) = self.slot.journal() {
            for (name, help, field) in JOURNAL_COUNTERS {
                counter(
                    &mut encoder,
                    name,
                    help,
                    None,
                    field(&j).load(Ordering::Relaxed),
                )?;
            }
            gauge(
                &mut encoder,
                "knhk_journal_failed",
                "1 once an event log write or sync failed: the server refuses work it cannot persist",
                None,
                i64::from(j.failed.load(Ordering::Relaxed) != 0),
            )?;
        }

        // The engines that hold cases and their kernel counters: the engine's (no label), or
        // in cluster mode each partition engine's the node serves (label `partition`).
        let holding = self.slot.holding_engines();
        let groups: Vec<(Option<String>, Vec<Arc<crate::workers::WorkerStats>>)> = holding
            .iter()
            .map(|(p, e)| (p.map(|p| p.to_string()), e.worker_stats()))
            .collect();

        // Events by op, pattern and status: cells summed over workers, zeros left out.
        {
            let mut m = encoder.encode_descriptor(
                "knhk_events",
                "Kernel operations executed, by op, task pattern (join+split) and status",
                None,
                MetricType::Counter,
            )?;
            for (partition, group) in &groups {
                let mut sums = vec![0u64; EVENT_CELLS];
                for s in group {
                    for (i, v) in sums.iter_mut().enumerate() {
                        *v += s.kernel.cell(i);
                    }
                }
                for (i, &v) in sums.iter().enumerate() {
                    if v == 0 {
                        continue;
                    }
                    let status = i % STATUS_NAMES.len();
                    let pattern = i / STATUS_NAMES.len() % PATTERNS;
                    let op = i / STATUS_NAMES.len() / PATTERNS;
                    let labels = EventLabels {
                        op: OP_NAMES.get(op).copied().unwrap_or("unknown"),
                        pattern: pattern_name(pattern),
                        status: STATUS_NAMES.get(status).copied().unwrap_or("unknown"),
                    };
                    match partition {
                        None => ConstCounter::new(v).encode(m.encode_family(&labels)?)?,
                        Some(p) => ConstCounter::new(v).encode(m.encode_family(
                            &PartitionEventLabels {
                                op: labels.op,
                                pattern: labels.pattern,
                                status: labels.status,
                                partition: p.clone(),
                            },
                        )?)?,
                    }
                }
            }
        }

        // Cases.
        {
            let cases = |group: &[Arc<crate::workers::WorkerStats>]| {
                let sum = |f: &dyn Fn(&crate::workers::WorkerStats) -> &AtomicU64| -> u64 {
                    group.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
                };
                let created = sum(&|s| &s.kernel.cases_created);
                let completed = sum(&|s| &s.kernel.cases_completed);
                let cancelled = sum(&|s| &s.kernel.cases_cancelled);
                let deadlocked = sum(&|s| &s.kernel.cases_deadlocked);
                (created, completed, cancelled, deadlocked)
            };
            type Pick = fn((u64, u64, u64, u64)) -> u64;
            let rows: [(&str, &str, Pick); 4] = [
                ("knhk_cases_created", "Cases created", |c| c.0),
                ("knhk_cases_completed", "Cases completed", |c| c.1),
                ("knhk_cases_cancelled", "Cases cancelled", |c| c.2),
                (
                    "knhk_cases_deadlocked",
                    "Cases an operation left deadlocked (tokens, nothing enabled, nothing busy)",
                    |c| c.3,
                ),
            ];
            let active_help =
                "Cases created and neither completed nor cancelled (deadlocked cases included)";
            let active = |c: (u64, u64, u64, u64)| {
                i64::try_from(c.0.saturating_sub(c.1 + c.2)).unwrap_or(i64::MAX)
            };
            match groups.as_slice() {
                [(None, group)] => {
                    let c = cases(group);
                    gauge(
                        &mut encoder,
                        "knhk_cases_active",
                        active_help,
                        None,
                        active(c),
                    )?;
                    for (name, help, pick) in rows {
                        counter(&mut encoder, name, help, None, pick(c))?;
                    }
                }
                _ => {
                    let label = |p: &Option<String>| PartitionLabel {
                        partition: p.clone().unwrap_or_default(),
                    };
                    let mut m = encoder.encode_descriptor(
                        "knhk_cases_active",
                        active_help,
                        None,
                        MetricType::Gauge,
                    )?;
                    for (partition, group) in &groups {
                        ConstGauge::new(active(cases(group)))
                            .encode(m.encode_family(&label(partition))?)?;
                    }
                    for (name, help, pick) in rows {
                        let mut m =
                            encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                        for (partition, group) in &groups {
                            ConstCounter::new(pick(cases(group)))
                                .encode(m.encode_family(&label(partition))?)?;
                        }
                    }
                }
            }
        }
        let sum = |f: &dyn Fn(&crate::workers::WorkerStats) -> &AtomicU64| -> u64 {
            stats.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
        };

        // The gRPC port's budget of partly received request bytes (docs/security.md).
        if let Some(b) = self.slot.request_budget.get() {
            gauge(
                &mut encoder,
                "knhk_request_bytes_in_flight",
                "Bytes of partly received request messages the server holds (all calls)",
                None,
                i64::try_from(b.held()).unwrap_or(i64::MAX),
            )?;
            counter(
                &mut encoder,
                "knhk_request_bytes_refusals",
                "Calls refused because the bytes in flight would pass \
                 --max-request-bytes-in-flight",
                None,
                b.refused(),
            )?;
        }

        // Task timers (docs/api.md, "Timers"): in cluster mode, over the partitions served.
        let scheduled: usize = holding.iter().map(|(_, e)| e.timers_scheduled()).sum();
        let timer_sum = |f: fn(&knhk_engine::engine::TimerStats) -> &AtomicU64| -> u64 {
            holding
                .iter()
                .map(|(_, e)| f(&e.timer_stats()).load(Ordering::Relaxed))
                .sum()
        };
        gauge(
            &mut encoder,
            "knhk_timers_scheduled",
            "Task timers armed and not yet fired or cancelled",
            None,
            i64::try_from(scheduled).unwrap_or(i64::MAX),
        )?;
        for (name, help, value) in [
            (
                "knhk_timers_armed",
                "Task timers armed (a task enabled or started whose timer began to run)",
                timer_sum(|t| &t.armed),
            ),
            (
                "knhk_timers_cancelled",
                "Task timers cancelled before expiry (the task completed or was withdrawn first)",
                timer_sum(|t| &t.cancelled),
            ),
            (
                "knhk_timers_skipped",
                "Expired task timers that skipped an enabled task (autoskip)",
                timer_sum(|t| &t.skipped),
            ),
            (
                "knhk_timers_completed",
                "Expired task timers that completed a started task",
                timer_sum(|t| &t.completed),
            ),
            (
                "knhk_timers_raced",
                "Timer fires refused because the case moved first (looked at again)",
                timer_sum(|t| &t.raced),
            ),
            (
                "knhk_timers_failed",
                "Timer fires that failed (retried a second later)",
                timer_sum(|t| &t.failed),
            ),
        ] {
            counter(&mut encoder, name, help, None, value)?;
        }

        // Capacity: slots and history memory (docs/operations.md, "Capacity"), summed over
        // the engines that hold cases.
        let cap = capacity_of(&holding);
        let bytes = |events: u64| events.saturating_mul(crate::engine::HISTORY_EVENT_BYTES as u64);
        for (name, help, value) in [
            (
                "knhk_case_slots",
                "Case slots in all (--case-capacity)",
                cap.slots,
            ),
            (
                "knhk_case_slots_used",
                "Case slots holding a case, running or finished",
                cap.used,
            ),
            (
                "knhk_case_slots_free",
                "Case slots holding no case",
                cap.free(),
            ),
            (
                "knhk_case_slots_evictable",
                "Case slots holding a finished case that a new case may evict (oldest first)",
                cap.evictable,
            ),
            (
                "knhk_history_events",
                "Task events held in case histories (for export and WatchCase from_start)",
                cap.history_events,
            ),
            (
                "knhk_history_bytes",
                "Bytes the case history buffers take (a reused slot keeps its buffer)",
                bytes(cap.history_room),
            ),
        ] {
            gauge(
                &mut encoder,
                name,
                help,
                None,
                i64::try_from(value).unwrap_or(i64::MAX),
            )?;
        }

        // The archive of finished cases (docs/durability.md, "Archive"), when there is one:
        // summed over the engines that hold cases.
        if holding.iter().any(|(_, e)| e.archive().is_some()) {
            let sum = |f: fn(&knhk_engine::engine::ArchiveStats) -> &AtomicU64| -> u64 {
                holding
                    .iter()
                    .map(|(_, e)| f(&e.archive_stats()).load(Ordering::Relaxed))
                    .sum()
            };
            gauge(
                &mut encoder,
                "knhk_archive_pending",
                "Finished cases waiting for the archive (they keep their slots until stored)",
                None,
                i64::try_from(sum(|a| &a.pending)).unwrap_or(i64::MAX),
            )?;
            for (name, help, value) in [
                (
                    "knhk_archive_stored",
                    "Finished cases stored in the archive (a case stored again after a restart counts again)",
                    sum(|a| &a.archived),
                ),
                (
                    "knhk_archive_failures",
                    "Archive store attempts that failed (retried)",
                    sum(|a| &a.failures),
                ),
                (
                    "knhk_archive_pruned",
                    "Archived cases deleted by the retention setting",
                    sum(|a| &a.pruned),
                ),
            ] {
                counter(&mut encoder, name, help, None, value)?;
            }
        }

        // Kernel ticks per op.
        {
            let mut m = encoder.encode_descriptor(
                "knhk_kernel_op_ticks",
                "Kernel ticks per operation, measured per batch (total ticks / ops of each drain round, weighted by ops)",
                None,
                MetricType::Histogram,
            )?;
            for (partition, group) in &groups {
                let mut total_sum = 0u64;
                let mut total_count = 0u64;
                let mut cumulative = vec![0u64; TICK_BOUNDS.len()];
                for s in group {
                    if let Some((sum, count, counts)) = s.ticks.collect(&TICK_BOUNDS) {
                        total_sum = total_sum.wrapping_add(sum);
                        total_count += count;
                        for (c, v) in cumulative.iter_mut().zip(counts) {
                            *c += v;
                        }
                    }
                }
                // The encoder wants per-bucket counts (it accumulates them itself).
                let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(TICK_BOUNDS.len() + 1);
                let mut prev = 0u64;
                for (b, c) in TICK_BOUNDS.iter().zip(&cumulative) {
                    let c = (*c).max(prev);
                    buckets.push((*b as f64, c - prev));
                    prev = c;
                }
                buckets.push((f64::INFINITY, total_count.saturating_sub(prev)));
                match partition {
                    None => m.encode_histogram::<NoLabelSet>(
                        total_sum as f64,
                        total_count,
                        &buckets,
                        None,
                    )?,
                    Some(p) => m
                        .encode_family(&PartitionLabel {
                            partition: p.clone(),
                        })?
                        .encode_histogram::<NoLabelSet>(
                            total_sum as f64,
                            total_count,
                            &buckets,
                            None,
                        )?,
                }
            }
        }

        // Exporters of committed events (`--export-xes`, `--export-otlp-logs`).
        let exporters = self.slot.exporters();
        if !exporters.is_empty() {
            for (name, help, field) in EXPORTER_COUNTERS {
                let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                for e in exporters {
                    let l = ExporterLabel {
                        exporter: e.name.clone(),
                    };
                    ConstCounter::new(field(e).load(Ordering::Relaxed))
                        .encode(m.encode_family(&l)?)?;
                }
            }
            let mut m = encoder.encode_descriptor(
                "knhk_exporter_lag",
                "Bytes of the durable event log an exporter has not read yet (compaction waits for them)",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            )?;
            for e in exporters {
                let l = ExporterLabel {
                    exporter: e.name.clone(),
                };
                ConstGauge::new(
                    i64::try_from(e.lag_bytes.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
                )
                .encode(m.encode_family(&l)?)?;
            }
        }

        // Worker counters.
        for (name, help, field) in WORKER_COUNTERS {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (i, s) in stats.iter().enumerate() {
                let l = WorkerLabel {
                    worker: i.to_string(),
                };
                ConstCounter::new(field(s).load(Ordering::Relaxed)).encode(m.encode_family(&l)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "knhk_worker_heartbeat_age",
                "Seconds since the worker's heartbeat last moved (a wedged worker grows without bound)",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            let ages = self
                .slot
                .heartbeat_age
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            for (i, age) in ages.iter().enumerate() {
                let l = WorkerLabel {
                    worker: i.to_string(),
                };
                ConstGauge::new(*age).encode(m.encode_family(&l)?)?;
            }
        }

        // Rings.
        {
            let depths = engine.ring_depths();
            let mut m = encoder.encode_descriptor(
                "knhk_ring_depth",
                "Jobs queued in a worker's input ring",
                None,
                MetricType::Gauge,
            )?;
            for (i, d) in depths.iter().enumerate() {
                let l = RingLabels {
                    worker: i.to_string(),
                    ring: "in",
                };
                ConstGauge::new(*d as i64).encode(m.encode_family(&l)?)?;
            }
            gauge(
                &mut encoder,
                "knhk_ring_capacity",
                "Capacity of each worker ring, in jobs",
                None,
                crate::workers::RING_CAPACITY as i64,
            )?;
        }
        {
            let mut m = encoder.encode_descriptor(
                "knhk_unpublished",
                "Work the kernel side could not publish at once: submissions refused on a full input ring (answered RESOURCE_EXHAUSTED), replies held on a full output ring (retried, never dropped)",
                None,
                MetricType::Counter,
            )?;
            let in_full = sum(&|s| &s.in_full);
            let out_full = sum(&|s| &s.out_full);
            for (reason, v) in [("in_ring_full", in_full), ("out_ring_full", out_full)] {
                ConstCounter::new(v).encode(m.encode_family(&ReasonLabel { reason })?)?;
            }
        }

        // Watch streams.
        {
            let watch = engine.watch_stats();
            let mut m = encoder.encode_descriptor(
                "knhk_watch_subscriptions",
                "Watch subscriptions per worker (a WatchCase of all cases subscribes to every worker)",
                None,
                MetricType::Gauge,
            )?;
            for (i, w) in watch.iter().enumerate() {
                let l = WorkerLabel {
                    worker: i.to_string(),
                };
                ConstGauge::new(w.0 as i64).encode(m.encode_family(&l)?)?;
            }
            let mut m = encoder.encode_descriptor(
                "knhk_watch_lag_batches",
                "Event batches the slowest subscriber of a worker has not read yet (the buffer holds knhk_watch_buffer_batches)",
                None,
                MetricType::Gauge,
            )?;
            for (i, w) in watch.iter().enumerate() {
                let l = WorkerLabel {
                    worker: i.to_string(),
                };
                ConstGauge::new(w.1 as i64).encode(m.encode_family(&l)?)?;
            }
            gauge(
                &mut encoder,
                "knhk_watch_buffer_batches",
                "Event batches buffered per worker for watch subscribers",
                None,
                engine.config().watch_buffer.max(16) as i64,
            )?;
        }
        Ok(())
    }
}

mod rpc;
pub use rpc::{code_name, watch_lost, RpcLayer, RpcService};
