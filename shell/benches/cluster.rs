//! Cluster-mode bench (issue 11; not a test): the same client load against one node on its
//! embedded event log and against a three-node cluster (3 nats-server, 3 etcd, 3 knhk on
//! loopback, `tests/support/cluster.rs`), in one run on one machine, then failover times.
//!
//! 1. Bulk `SubmitEvents`: events per second (per node in cluster mode: one stream per node,
//!    each on cases created through that node), messages pipelined; and the round trip of one
//!    message in flight (p50/p99).
//! 2. Unary `FireTask` through one node (in cluster mode two thirds of the calls are forwarded
//!    to the owner): acknowledgement latency p50/p99.
//! 3. Failover: SIGKILL of a knhk node → the first acknowledged write on each partition it
//!    owned (through another node); SIGTERM of a node (graceful handoff) → the same; SIGKILL of
//!    a nats-server → the longest pause between acknowledged writes of a client that cycles
//!    over every partition.
//!
//! `cargo bench -p knhk-shell --bench cluster`. Needs `nats-server` and `etcd` on PATH (else
//! prints SKIPPED). Environment: `KNHK_BENCH_SECS` (per phase, default 5), `KNHK_BENCH_BATCH`
//! (events per bulk message, default 3072), `KNHK_BENCH_PARTITIONS` (default 16),
//! `KNHK_BENCH_LEASE_TTL_S` (default 5).

#[path = "common/cpu.rs"]
mod cpu;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use knhk_shell::proto::{self, event::Task, knhk_client::KnhkClient, EventOp};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

#[path = "../tests/support/cluster.rs"]
mod harness;
use harness::{client, cluster, on_path, wait_settled, Proc};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// p50 and p99 of `ns`, in microseconds.
fn p50_p99(ns: &mut [u64]) -> (f64, f64) {
    if ns.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0;
    (at(0.50), at(0.99))
}

fn model() -> Result<Vec<u8>, BoxError> {
    Ok(std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/corpus/yawl/WPC10AbitraryCycles.yawl"),
    )?)
}

async fn register(addr: &str) -> Result<(), BoxError> {
    let mut c = connect(addr).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .register_workflow(proto::RegisterWorkflowRequest {
                model: model()?,
                format: proto::ModelFormat::Yawl as i32,
                workflow_id: "cycles".into(),
                ..Default::default()
            })
            .await;
        match r {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(s) => return Err(format!("register: {s}").into()),
        }
    }
}

async fn connect(addr: &str) -> Result<KnhkClient<Channel>, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(c) = client(addr).await {
            return Ok(c
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20));
        }
        if Instant::now() > deadline {
            return Err(format!("{addr}: no connection in 30 s").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `n` cases created through `addr` in one bulk message.
async fn create_cases(addr: &str, n: usize) -> Result<Vec<u64>, BoxError> {
    let mut c = connect(addr).await?;
    let creates: Vec<proto::Event> = (0..n)
        .map(|_| proto::Event {
            op: EventOp::CreateCase as i32,
            workflow_id: "cycles".into(),
            ..Default::default()
        })
        .collect();
    let mut s = c
        .submit_events(tokio_stream::iter([proto::SubmitEventsRequest {
            events: creates,
        }]))
        .await?
        .into_inner();
    let created = s.next().await.ok_or("no answer")??;
    let ids: Vec<u64> = created
        .results
        .iter()
        .filter(|r| r.code == 0)
        .map(|r| r.case_id)
        .collect();
    if ids.len() != n {
        let why = created.results.iter().find(|r| r.code != 0);
        return Err(format!("created {} of {n} cases through {addr}: {why:?}", ids.len()).into());
    }
    Ok(ids)
}

/// Fires A, B, C on every case of `ids` (the cycle of WPC10 with cond = 0), `batch / 3`
/// cases per message.
fn template(ids: &[u64]) -> Vec<proto::Event> {
    let mut t = Vec::with_capacity(ids.len() * 3);
    for &id in ids {
        for task in 0..3u32 {
            t.push(proto::Event {
                op: EventOp::Fire as i32,
                case_id: id,
                task: Some(Task::TaskIndex(task)),
                ..Default::default()
            });
        }
    }
    t
}

/// Refusals by code: count and one message.
type Refusals = HashMap<i32, (u64, String)>;

/// Pipelined bulk stream through `addr` for `secs`: (events acknowledged OK, refusals).
async fn bulk_pipelined(
    addr: String,
    ids: Vec<u64>,
    secs: u64,
) -> Result<(u64, Refusals), BoxError> {
    let mut c = connect(&addr).await?;
    let tpl = template(&ids);
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::SubmitEventsRequest>(8);
    let mut responses = c
        .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let t0 = Instant::now();
    let sender = tokio::spawn(async move {
        while t0.elapsed() < Duration::from_secs(secs) {
            let msg = proto::SubmitEventsRequest {
                events: tpl.clone(),
            };
            if tx.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut ok = 0u64;
    let mut refused = Refusals::new();
    while let Some(r) = responses.next().await {
        let r = r?;
        for e in &r.results {
            if e.code == 0 {
                ok += 1;
            } else {
                let slot = refused.entry(e.code).or_insert((0, e.message.clone()));
                slot.0 += 1;
            }
        }
    }
    sender.await?;
    Ok((ok, refused))
}

/// One message in flight through `addr` for `secs`: round trips in ns.
async fn bulk_round_trips(addr: &str, ids: &[u64], secs: u64) -> Result<Vec<u64>, BoxError> {
    let mut c = connect(addr).await?;
    let tpl = template(ids);
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::SubmitEventsRequest>(1);
    let mut responses = c
        .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut lat = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        let t = Instant::now();
        tx.send(proto::SubmitEventsRequest {
            events: tpl.clone(),
        })
        .await?;
        let r = responses.next().await.ok_or("bulk stream ended")??;
        if r.results.iter().any(|e| e.code != 0) {
            return Err(
                format!("bulk refused: {:?}", r.results.iter().find(|e| e.code != 0)).into(),
            );
        }
        lat.push(t.elapsed().as_nanos() as u64);
    }
    Ok(lat)
}

/// Sequential unary FireTask through `addr` on `ids` (round robin, each case's tasks in
/// cycle order) for `secs`: latencies in ns.
async fn unary(addr: &str, ids: &[u64], secs: u64) -> Result<Vec<u64>, BoxError> {
    let mut c = connect(addr).await?;
    let mut next: HashMap<u64, u32> = HashMap::new();
    let mut lat = Vec::new();
    let t0 = Instant::now();
    let mut i = 0;
    while t0.elapsed() < Duration::from_secs(secs) {
        let id = ids[i % ids.len()];
        i += 1;
        let task = next.entry(id).or_insert(0);
        let t = Instant::now();
        c.fire_task(proto::TaskRequest {
            case_id: id,
            task: ["A", "B", "C"][*task as usize].into(),
            ..Default::default()
        })
        .await
        .map_err(|s| format!("fire on case {id}: {s}"))?;
        lat.push(t.elapsed().as_nanos() as u64);
        *task = (*task + 1) % 3;
    }
    Ok(lat)
}

#[derive(Debug, Default)]
struct Figures {
    events_per_s_per_node: f64,
    refused: Refusals,
    bulk_rt: (f64, f64),
    unary: (f64, f64),
}

/// The load phases through `addrs` (one bulk stream per address at once).
async fn measure(addrs: &[String], secs: u64, batch: usize) -> Result<Figures, BoxError> {
    let per_msg_cases = (batch / 3).max(1);
    let mut sets = Vec::new();
    for a in addrs {
        sets.push(create_cases(a, per_msg_cases).await?);
    }
    let t0 = Instant::now();
    let runs: Vec<_> = addrs
        .iter()
        .zip(&sets)
        .map(|(a, ids)| tokio::spawn(bulk_pipelined(a.clone(), ids.clone(), secs)))
        .collect();
    let mut ok = 0;
    let mut refused = Refusals::new();
    for r in runs {
        let (o, f) = r.await??;
        ok += o;
        for (code, (n, msg)) in f {
            refused.entry(code).or_insert((0, msg)).0 += n;
        }
    }
    let el = t0.elapsed().as_secs_f64();
    let mut rt = bulk_round_trips(&addrs[0], &sets[0], secs).await?;
    let unary_ids = create_cases(&addrs[0], 64).await?;
    let mut un = unary(&addrs[0], &unary_ids, secs).await?;
    Ok(Figures {
        events_per_s_per_node: ok as f64 / el / addrs.len() as f64,
        refused,
        bulk_rt: p50_p99(&mut rt),
        unary: p50_p99(&mut un),
    })
}

/// One case per partition of the cluster, created with business keys through `addr`.
async fn case_per_partition(addr: &str, partitions: u16) -> Result<HashMap<u16, u64>, BoxError> {
    let mut c = connect(addr).await?;
    let mut out = HashMap::new();
    let mut n = 0u64;
    while out.len() < usize::from(partitions) {
        let key = format!("bench-{n}");
        n += 1;
        let p = knhk_shell::cluster::partition_of_key(&key, partitions);
        if out.contains_key(&p) {
            continue;
        }
        let case = c
            .create_case(proto::CreateCaseRequest {
                workflow_id: "cycles".into(),
                business_key: key,
                ..Default::default()
            })
            .await?
            .into_inner();
        out.insert(p, case.case_id);
    }
    Ok(out)
}

/// The partitions node `node_id` owns, as `addr` sees them.
async fn owned_by(addr: &str, node_id: &str) -> Result<Vec<u16>, BoxError> {
    let mut c = connect(addr).await?;
    let t = c
        .get_topology(proto::GetTopologyRequest {})
        .await?
        .into_inner();
    Ok(t.owners
        .iter()
        .filter(|o| o.node_id == node_id)
        .map(|o| o.partition as u16)
        .collect())
}

/// Fires the next task of `case` through `addr` until one is acknowledged; the time from
/// `since` to that acknowledgement.
async fn first_write(addr: String, case: u64, since: Instant) -> Result<Duration, BoxError> {
    let mut c = connect(&addr).await?;
    loop {
        let seq = match c
            .get_case(proto::GetCaseRequest {
                case_id: case,
                ..Default::default()
            })
            .await
        {
            Ok(v) => v.into_inner().seq,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let r = c
            .fire_task(proto::TaskRequest {
                case_id: case,
                task: ["A", "B", "C"][(seq % 3) as usize].into(),
                expected_seq: Some(seq),
                ..Default::default()
            })
            .await;
        match r {
            Ok(_) => return Ok(since.elapsed()),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Waits until every node is up, every partition owned, and the owners have not changed for
/// 2 s (a restarted node gets its partitions back after a few ownership rounds).
async fn wait_stable(c: &mut harness::Cluster) -> Result<(), BoxError> {
    wait_settled(c, Duration::from_secs(90)).await;
    let mut k = connect(&c.grpc[0]).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    let mut same = 0;
    while same < 4 {
        if Instant::now() > deadline {
            return Err("the partitions kept moving for 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(t) = k.get_topology(proto::GetTopologyRequest {}).await else {
            same = 0;
            continue;
        };
        let mut now: Vec<(u32, String, u64)> = t
            .into_inner()
            .owners
            .into_iter()
            .map(|o| (o.partition, o.node_id, o.epoch))
            .collect();
        now.sort();
        if now == last {
            same += 1;
        } else {
            same = 0;
            last = now;
        }
    }
    Ok(())
}

/// Kills (or terminates) knhk node `i` and waits for the first write on each partition it
/// owned: (median, max) over those partitions, and how many.
async fn failover(
    c: &mut harness::Cluster,
    i: usize,
    sig: &str,
    cases: &HashMap<u16, u64>,
) -> Result<(Duration, Duration, usize), BoxError> {
    let via = c.grpc[(i + 1) % 3].clone();
    let moved = owned_by(&via, &format!("k{i}")).await?;
    let t0 = Instant::now();
    c.knhk[i].stop_and_wait(sig);
    let waits: Vec<_> = moved
        .iter()
        .map(|p| tokio::spawn(first_write(via.clone(), cases[p], t0)))
        .collect();
    let mut times = Vec::new();
    for w in waits {
        times.push(tokio::time::timeout(Duration::from_secs(60), w).await???);
    }
    times.sort();
    c.knhk[i].start();
    wait_stable(c).await?;
    if times.is_empty() {
        return Ok((Duration::ZERO, Duration::ZERO, 0));
    }
    Ok((times[times.len() / 2], times[times.len() - 1], times.len()))
}

/// SIGKILLs nats-server `i` while a client cycles writes over every partition through
/// node 0; the longest pause between acknowledged writes.
async fn nats_pause(
    c: &mut harness::Cluster,
    i: usize,
    cases: &HashMap<u16, u64>,
    secs: u64,
) -> Result<Duration, BoxError> {
    let addr = c.grpc[0].clone();
    let ids: Vec<u64> = cases.values().copied().collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let writer = tokio::spawn(async move {
        let mut k = connect(&addr).await?;
        let mut last = Instant::now();
        let mut longest = Duration::ZERO;
        let mut n = 0usize;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let case = ids[n % ids.len()];
            n += 1;
            let Ok(v) = k
                .get_case(proto::GetCaseRequest {
                    case_id: case,
                    ..Default::default()
                })
                .await
            else {
                continue;
            };
            let seq = v.into_inner().seq;
            let r = k
                .fire_task(proto::TaskRequest {
                    case_id: case,
                    task: ["A", "B", "C"][(seq % 3) as usize].into(),
                    expected_seq: Some(seq),
                    ..Default::default()
                })
                .await;
            if r.is_ok() {
                longest = longest.max(last.elapsed());
                last = Instant::now();
            }
        }
        Ok::<Duration, BoxError>(longest)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.nats[i].stop_and_wait("KILL");
    tokio::time::sleep(Duration::from_secs(secs.max(3))).await;
    c.nats[i].start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await?
}

fn main() -> Result<(), BoxError> {
    if !(on_path("nats-server") && on_path("etcd")) {
        println!("SKIPPED: cluster bench (nats-server or etcd not on PATH)");
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> Result<(), BoxError> {
    let secs = env_or("KNHK_BENCH_SECS", 5).clamp(1, 60);
    let batch = env_or("KNHK_BENCH_BATCH", 3072).clamp(3, 1 << 16) as usize;
    let partitions = env_or("KNHK_BENCH_PARTITIONS", 16).clamp(1, 4096) as u16;
    let ttl = env_or("KNHK_BENCH_LEASE_TTL_S", 5).clamp(2, 60);
    let cpu = cpu::model_name();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "knhk cluster bench: {cpu}, {cores} cores, every process on this machine; {secs} s per \
         phase, {batch} events per bulk message, {partitions} partitions, lease TTL {ttl} s"
    );
    let dir = std::env::temp_dir().join(format!("knhk-cluster-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // 1. One node on its embedded event log (relaxed durability, as the cluster's).
    let embedded = embedded_node(&dir)?;
    let (mut node, addr) = embedded;
    node.start();
    register(&addr).await?;
    let single = measure(std::slice::from_ref(&addr), secs, batch).await?;
    node.stop_and_wait("TERM");

    // 2. Three nodes.
    let mut c = cluster(&dir, partitions, ttl, &[]);
    for p in c.nats.iter_mut().chain(c.etcd.iter_mut()) {
        p.start();
    }
    for p in c.knhk.iter_mut() {
        p.start();
    }
    wait_stable(&mut c).await?;
    register(&c.grpc[0]).await?;
    let three = measure(&c.grpc, secs, batch).await?;

    println!();
    println!("| what | embedded log, 1 node | cluster, 3 nodes |");
    println!("|---|---|---|");
    println!(
        "| bulk events/s per node (pipelined, {batch} events per message) | {:.0} | {:.0} |",
        single.events_per_s_per_node, three.events_per_s_per_node
    );
    println!(
        "| bulk round trip, one message in flight, p50 / p99 | {:.0} / {:.0} µs | {:.0} / {:.0} µs |",
        single.bulk_rt.0, single.bulk_rt.1, three.bulk_rt.0, three.bulk_rt.1
    );
    println!(
        "| unary FireTask acknowledgement, p50 / p99 | {:.0} / {:.0} µs | {:.0} / {:.0} µs |",
        single.unary.0, single.unary.1, three.unary.0, three.unary.1
    );
    let show = |r: &Refusals| {
        if r.is_empty() {
            return "0".to_string();
        }
        r.iter()
            .map(|(code, (n, msg))| format!("{n} × code {code} (\"{msg}\")"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    println!(
        "| events refused in the bulk phase | {} | {} |",
        show(&single.refused),
        show(&three.refused)
    );

    // 3. Failover.
    let cases = case_per_partition(&c.grpc[0], partitions).await?;
    let (med, max, n) = failover(&mut c, 2, "KILL", &cases).await?;
    println!(
        "\nSIGKILL of a knhk node: first acknowledged write on each of its {n} partitions: \
         median {:.2} s, max {:.2} s (lease TTL {ttl} s)",
        med.as_secs_f64(),
        max.as_secs_f64()
    );
    let (med, max, n) = failover(&mut c, 1, "TERM", &cases).await?;
    println!(
        "SIGTERM of a knhk node (graceful handoff): first acknowledged write on each of its {n} \
         partitions: median {:.3} s, max {:.3} s",
        med.as_secs_f64(),
        max.as_secs_f64()
    );
    let pause = nats_pause(&mut c, 0, &cases, secs).await?;
    println!(
        "SIGKILL of a nats-server: longest pause between acknowledged writes {:.2} s",
        pause.as_secs_f64()
    );
    for p in c.knhk.iter_mut() {
        p.stop_and_wait("TERM");
    }
    for p in c.nats.iter_mut().chain(c.etcd.iter_mut()) {
        p.stop_and_wait("TERM");
    }
    Ok(())
}

/// A single node on the embedded log under `dir`: (process, gRPC endpoint).
fn embedded_node(dir: &Path) -> Result<(Proc, String), BoxError> {
    let port = harness::free_port();
    let data = dir.join("embedded");
    std::fs::create_dir_all(&data)?;
    let cmd = [
        env!("CARGO_BIN_EXE_knhk"),
        "serve",
        "--grpc-addr",
        &format!("127.0.0.1:{port}"),
        "--http-addr",
        "off",
        "--durability",
        "relaxed",
        "--data-dir",
        &data.display().to_string(),
        "--case-capacity",
        "65536",
        "--workers",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Ok((
        Proc {
            name: "embedded".into(),
            cmd,
            log: dir.join("embedded.log"),
            child: None,
        },
        format!("http://127.0.0.1:{port}"),
    ))
}
