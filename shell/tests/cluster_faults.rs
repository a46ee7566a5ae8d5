//! Cluster mode under faults (docs/cluster.md): 3 `nats-server` (JetStream, R3 streams), 3
//! `etcd` and 3 `knhk serve --nats … --etcd …` on loopback ports under a temporary directory,
//! every process stopped by its id at the end. Unary clients run cases through random nodes
//! (every operation carries `expected_seq`, so a retry after a lost reply never applies twice)
//! and record every acknowledgement. A seeded fault loop then, per iteration: SIGKILLs a knhk
//! node and restarts it; SIGSTOPs a partition owner past its lease and SIGCONTs it (the zombie
//! must acknowledge nothing after its deadline; it exits and is restarted); SIGKILLs or
//! SIGTERMs a nats-server and restarts it; or SIGKILLs an etcd member and restarts it. After
//! each iteration, with every process back and every partition owned: every acknowledged
//! operation is present (the case's sequence is at least the acknowledged one, and its state
//! follows from it), sequences never go back, and every case listed was created.
//!
//! Needs `nats-server` and `etcd` on PATH (Debian: nats-server, etcd-server). Without them the
//! test prints SKIPPED and passes, unless KNHK_CLUSTER_TESTS=require (as .ci/run sets it).
//! Iterations: KNHK_HA_ITERS (default 100), bounded by KNHK_HA_SECS (default 900); seed:
//! KNHK_HA_SEED.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use knhk_shell::proto::{self, knhk_client::KnhkClient};
use tonic::transport::Channel;
use tonic::Code;

const PARTITIONS: u16 = 8;
const LEASE_TTL_S: u64 = 4;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn on_path(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status();
}

/// One supervised process: how to start it, and the running child.
struct Proc {
    name: String,
    cmd: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.cmd[0])
            .args(&self.cmd[1..])
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
    }

    fn kill(&mut self, sig: &str) {
        if let Some(c) = &self.child {
            signal(c, sig);
        }
    }

    /// Reaps an exited child (a zombie knhk exits on its own once its lease is gone).
    fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    fn stop_and_wait(&mut self, sig: &str) {
        if let Some(mut c) = self.child.take() {
            signal(&c, sig);
            signal(&c, "CONT");
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Cluster {
    nats: Vec<Proc>,
    etcd: Vec<Proc>,
    knhk: Vec<Proc>,
    grpc: Vec<String>,
    nats_urls: Vec<String>,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            if std::env::var_os("KNHK_HA_KEEP").is_none() {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}

fn cluster(dir: &Path) -> Cluster {
    let nats_ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let etcd_ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let knhk_ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let routes: Vec<String> = nats_ports
        .iter()
        .map(|(_, c)| format!("nats-route://127.0.0.1:{c}"))
        .collect();
    let mut nats = Vec::new();
    for (i, (client, route)) in nats_ports.iter().enumerate() {
        let store = dir.join(format!("nats{i}"));
        std::fs::create_dir_all(&store).expect("store dir");
        let conf = dir.join(format!("nats{i}.conf"));
        std::fs::write(
            &conf,
            format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{client}\njetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{ name: knhk, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                store.display(),
                routes.join(", ")
            ),
        )
        .expect("nats config");
        nats.push(Proc {
            name: format!("nats{i}"),
            cmd: vec![
                "nats-server".into(),
                "-c".into(),
                conf.display().to_string(),
            ],
            log: dir.join(format!("nats{i}.log")),
            child: None,
        });
    }
    let initial: Vec<String> = etcd_ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut etcd = Vec::new();
    for (i, (client, peer)) in etcd_ports.iter().enumerate() {
        etcd.push(Proc {
            name: format!("etcd{i}"),
            cmd: vec![
                "etcd".into(),
                "--name".into(),
                format!("e{i}"),
                "--data-dir".into(),
                dir.join(format!("etcd{i}")).display().to_string(),
                "--listen-client-urls".into(),
                format!("http://127.0.0.1:{client}"),
                "--advertise-client-urls".into(),
                format!("http://127.0.0.1:{client}"),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-cluster".into(),
                initial.join(","),
                "--initial-cluster-state".into(),
                "new".into(),
            ],
            log: dir.join(format!("etcd{i}.log")),
            child: None,
        });
    }
    let nats_urls: Vec<String> = nats_ports
        .iter()
        .map(|(c, _)| format!("nats://127.0.0.1:{c}"))
        .collect();
    let etcd_urls: Vec<String> = etcd_ports
        .iter()
        .map(|(c, _)| format!("http://127.0.0.1:{c}"))
        .collect();
    let mut knhk = Vec::new();
    let mut grpc = Vec::new();
    for (i, (g, h)) in knhk_ports.iter().enumerate() {
        let addr = format!("127.0.0.1:{g}");
        grpc.push(format!("http://{addr}"));
        knhk.push(Proc {
            name: format!("knhk{i}"),
            cmd: vec![
                env!("CARGO_BIN_EXE_knhk").into(),
                "serve".into(),
                "--grpc-addr".into(),
                addr.clone(),
                "--http-addr".into(),
                format!("127.0.0.1:{h}"),
                "--nats".into(),
                nats_urls.join(","),
                "--etcd".into(),
                etcd_urls.join(","),
                "--node-id".into(),
                format!("k{i}"),
                "--advertise".into(),
                addr,
                "--partitions".into(),
                PARTITIONS.to_string(),
                "--durability".into(),
                "relaxed".into(),
                "--lease-ttl-s".into(),
                LEASE_TTL_S.to_string(),
                "--case-capacity".into(),
                "65536".into(),
                "--workers".into(),
                "1".into(),
            ],
            log: dir.join(format!("knhk{i}.log")),
            child: None,
        });
    }
    Cluster {
        nats,
        etcd,
        knhk,
        grpc,
        nats_urls,
        _dir: tempdir::Dir(dir.to_path_buf()),
    }
}

async fn client(addr: &str) -> Option<KnhkClient<Channel>> {
    let ch = Channel::from_shared(addr.to_string())
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .ok()?;
    Some(KnhkClient::new(ch))
}

/// One connection per node, kept across calls (a channel reconnects by itself after its node
/// restarts): connecting for every call would load the nodes more than the calls do.
#[derive(Default)]
struct Clients(HashMap<String, KnhkClient<Channel>>);

impl Clients {
    async fn get(&mut self, addr: &str) -> Option<KnhkClient<Channel>> {
        if let Some(k) = self.0.get(addr) {
            return Some(k.clone());
        }
        let k = client(addr).await?;
        self.0.insert(addr.to_string(), k.clone());
        Some(k)
    }
}

/// Every node answers and every partition has an owner.
async fn settled(c: &Cluster) -> bool {
    for addr in &c.grpc {
        let Some(mut k) = client(addr).await else {
            return false;
        };
        match k.get_topology(proto::GetTopologyRequest {}).await {
            Ok(t) if t.get_ref().owners.len() == usize::from(PARTITIONS) => {}
            _ => return false,
        }
    }
    true
}

async fn wait_settled(c: &mut Cluster, within: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        // The supervisor's part: a node that exited (a lost lease) is restarted.
        for p in c.knhk.iter_mut() {
            if p.exited() {
                p.start();
            }
        }
        if settled(c).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the cluster did not settle (every node up, every partition owned) within {within:?}");
}

/// A retryable answer: the call may or may not have taken effect.
fn ambiguous(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Internal
    )
}

/// What the clients were told: per case, the highest acknowledged sequence and the tasks fired.
#[derive(Default)]
struct Acks {
    cases: HashMap<u64, u64>,
    ops: u64,
}

const TASKS: [&str; 2] = ["A", "B"];

/// One unary client: creates cases through random nodes and fires their tasks in order, each
/// op with `expected_seq`; records acknowledgements.
async fn run_client(
    addrs: Vec<String>,
    wf: String,
    acks: Arc<Mutex<Acks>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut pick = || addrs[rng.usize(..addrs.len())].clone();
    let mut pool = Clients::default();
    while !stop.load(Ordering::Relaxed) {
        let Some(mut k) = pool.get(&pick()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let created = k
            .create_case(proto::CreateCaseRequest {
                workflow_id: wf.clone(),
                ..Default::default()
            })
            .await;
        let case = match created {
            Ok(c) => c.into_inner(),
            Err(s) if ambiguous(&s) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(s) => panic!("create refused: {s:?}"),
        };
        let id = case.case_id;
        acks.lock().expect("acks").cases.insert(id, case.seq);
        let mut seq = case.seq;
        for task in TASKS {
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let asked = pick();
                let Some(mut k) = pool.get(&asked).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let r = k
                    .fire_task(proto::TaskRequest {
                        case_id: id,
                        task: task.into(),
                        expected_seq: Some(seq),
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(after) => {
                        let after = after.into_inner();
                        assert_eq!(after.seq, seq + 1, "one fire is one event");
                        seq = after.seq;
                        let mut a = acks.lock().expect("acks");
                        a.cases.insert(id, seq);
                        a.ops += 1;
                        break;
                    }
                    Err(s) if ambiguous(&s) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(s)
                        if s.code() == Code::FailedPrecondition
                            && s.message().contains("at sequence") =>
                    {
                        // An earlier try took effect (its reply was lost): it was never
                        // acknowledged, so it is not recorded; carry on from the case's seq.
                        seq += 1;
                        break;
                    }
                    Err(s) => {
                        let at = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default();
                        let part = knhk_engine::ids::CaseId::decode(id).map(|c| c.partition);
                        panic!(
                            "fire {task} on case {id} (partition {part:?}, asked {asked}, at unix \
                             {:.3} s) refused: {s:?}",
                            at.as_secs_f64()
                        )
                    }
                }
            }
        }
    }
}

/// Every case the cluster holds, listed through node `addr` (one scatter-gather over every
/// partition's owner): case id → (seq, state). Retried while a partition is in transit (the
/// listing is refused then, never partial).
async fn list_all(addr: &str) -> HashMap<u64, (u64, i32)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    'retry: loop {
        assert!(
            Instant::now() < deadline,
            "ListCases through {addr} kept failing for 60 s after the cluster settled"
        );
        let Some(mut k) = client(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut listed = match k.list_cases(proto::ListCasesRequest::default()).await {
            Ok(l) => l.into_inner(),
            Err(s) if ambiguous(&s) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(s) => panic!("ListCases refused: {s:?}"),
        };
        let mut all = HashMap::new();
        while let Some(item) = tokio_stream::StreamExt::next(&mut listed).await {
            match item {
                Ok(case) => {
                    let before = all.insert(case.case_id, (case.seq, case.state));
                    assert!(before.is_none(), "case {} listed twice", case.case_id);
                }
                Err(s) if ambiguous(&s) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'retry;
                }
                Err(s) => panic!("ListCases stream failed: {s:?}"),
            }
        }
        return all;
    }
}

/// Every acknowledged case and op is there (one listing through node `round % 3`); no case
/// has more events than ops; no sequence went back since the last check.
async fn check(
    c: &Cluster,
    round: usize,
    acks: &Arc<Mutex<Acks>>,
    seen: &mut HashMap<u64, u64>,
) -> usize {
    let snapshot: Vec<(u64, u64)> = acks
        .lock()
        .expect("acks")
        .cases
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    let addr = &c.grpc[round % c.grpc.len()];
    let all = list_all(addr).await;
    for (case, acked) in &snapshot {
        let Some(&(seq, _)) = all.get(case) else {
            // Not listed: ask its owner directly before calling it lost.
            let mut k = client(addr).await.expect("node");
            let got = k.get_case(proto::GetCaseRequest { case_id: *case }).await;
            panic!("acknowledged case {case} is not listed by {addr}; GetCase says {got:?}");
        };
        assert!(
            seq >= *acked,
            "case {case}: acknowledged up to seq {acked}, the cluster has {seq} (lost events)"
        );
    }
    for (case, &(seq, state)) in &all {
        assert!(
            seq <= TASKS.len() as u64,
            "case {case}: more events than ops: {seq}"
        );
        let before = seen.insert(*case, seq).unwrap_or(0);
        assert!(
            seq >= before,
            "case {case}: sequence went back from {before} to {seq}"
        );
        let complete = state == proto::CaseState::Complete as i32;
        assert_eq!(
            complete,
            seq == TASKS.len() as u64,
            "case {case}: state {state} vs seq {seq}"
        );
    }
    snapshot.len()
}

/// Whether the outside servers are there; without them a test says SKIPPED, unless
/// KNHK_CLUSTER_TESTS=require.
fn servers_present() -> bool {
    if on_path("nats-server") && on_path("etcd") {
        return true;
    }
    if std::env::var("KNHK_CLUSTER_TESTS").as_deref() == Ok("require") {
        panic!("nats-server and etcd must be on PATH (KNHK_CLUSTER_TESTS=require)");
    }
    println!("SKIPPED: cluster test (nats-server or etcd not on PATH)");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fails today: under faults a task call on a case whose creation was acknowledged \
            can answer NOT_FOUND (docs/cluster.md, Known defect); run it with --ignored"]
async fn acknowledged_operations_survive_node_nats_and_etcd_faults() {
    if !servers_present() {
        return;
    }
    let iters: u32 = std::env::var("KNHK_HA_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    run(iters).await;
}

/// No faults: three nodes serve cases through any node, forwarding to owners, and the
/// verifier's replay of every partition's log equals the live state (run in .ci/run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_through_any_node_and_equals_its_log() {
    if servers_present() {
        run(0).await;
    }
}

async fn run(iters: u32) {
    let budget = Duration::from_secs(
        std::env::var("KNHK_HA_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(900),
    );
    let seed: u64 = std::env::var("KNHK_HA_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(11);
    let dir = std::env::temp_dir().join(format!("knhk-ha-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    println!(
        "cluster under {} (seed {seed}, {iters} iterations)",
        dir.display()
    );
    let mut c = cluster(&dir);
    for p in c.nats.iter_mut().chain(c.etcd.iter_mut()) {
        p.start();
    }
    for p in c.knhk.iter_mut() {
        p.start();
    }
    wait_settled(&mut c, Duration::from_secs(90)).await;

    let model = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/yawl/WPC1Sequence.yawl"),
    )
    .expect("corpus model");
    let mut k = client(&c.grpc[1]).await.expect("node 1");
    let wf = k
        .register_workflow(proto::RegisterWorkflowRequest {
            model,
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .workflow
        .expect("workflow")
        .workflow_id;
    // Every node knows it.
    for addr in &c.grpc {
        let mut k = client(addr).await.expect("node");
        k.get_workflow(proto::GetWorkflowRequest {
            workflow_id: wf.clone(),
        })
        .await
        .expect("the registration reached every node");
    }

    let acks = Arc::new(Mutex::new(Acks::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|i| {
            tokio::spawn(run_client(
                c.grpc.clone(),
                wf.clone(),
                acks.clone(),
                stop.clone(),
                seed * 31 + i,
            ))
        })
        .collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seen = HashMap::new();
    if iters == 0 {
        // Load without faults, long enough for every client to finish cases.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let t0 = Instant::now();
    let mut faults: HashMap<&str, u32> = HashMap::new();
    let mut done = 0;
    for it in 0..iters {
        if t0.elapsed() > budget {
            break;
        }
        if clients.iter().any(|h| h.is_finished()) {
            // A client saw a wrong answer: stop and report it (below).
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let kind = match rng.u32(..10) {
            0..=2 => "knhk-kill",
            3..=4 => "knhk-stop",
            5 => "nats-kill",
            6 => "nats-term",
            7 => "etcd-kill",
            _ => "knhk-term",
        };
        *faults.entry(kind).or_default() += 1;
        let i = rng.usize(..3);
        match kind {
            "knhk-kill" => {
                c.knhk[i].stop_and_wait("KILL");
                tokio::time::sleep(Duration::from_millis(rng.u64(0..1000))).await;
                c.knhk[i].start();
            }
            "knhk-term" => {
                // Graceful: the node hands its partitions over, then leaves.
                c.knhk[i].stop_and_wait("TERM");
                c.knhk[i].start();
            }
            "knhk-stop" => {
                // A zombie: paused past its lease; on SIGCONT it must find its lease gone and
                // exit without acknowledging anything.
                c.knhk[i].kill("STOP");
                tokio::time::sleep(Duration::from_secs(LEASE_TTL_S + 2)).await;
                c.knhk[i].kill("CONT");
                let t = Instant::now();
                while !c.knhk[i].exited() && t.elapsed() < Duration::from_secs(10) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                assert!(
                    c.knhk[i].exited(),
                    "a node resumed past its lease must exit"
                );
                c.knhk[i].start();
            }
            "nats-kill" | "nats-term" => {
                c.nats[i].stop_and_wait(if kind == "nats-kill" { "KILL" } else { "TERM" });
                tokio::time::sleep(Duration::from_millis(rng.u64(500..2000))).await;
                c.nats[i].start();
            }
            _ => {
                c.etcd[i].stop_and_wait("KILL");
                tokio::time::sleep(Duration::from_millis(rng.u64(200..1000))).await;
                c.etcd[i].start();
            }
        }
        wait_settled(&mut c, Duration::from_secs(90)).await;
        let n = check(&c, it as usize, &acks, &mut seen).await;
        done = it + 1;
        if it % 10 == 0 {
            println!(
                "iteration {it}: {kind} on #{i}; {n} acknowledged cases verified, {} ops, {:.0} s",
                acks.lock().expect("acks").ops,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in clients {
        match tokio::time::timeout(Duration::from_secs(30), h).await {
            Ok(Ok(())) | Err(_) => {}
            Ok(Err(e)) => panic!("a client saw a wrong answer: {e}"),
        }
    }
    wait_settled(&mut c, Duration::from_secs(90)).await;
    let n = check(&c, done as usize, &acks, &mut seen).await;
    let ops = acks.lock().expect("acks").ops;
    println!(
        "done: {done} iterations in {:.0} s, faults {faults:?}; {n} acknowledged cases and {ops} \
         acknowledged ops verified, 0 lost",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        ops > 0,
        "the clients acknowledged nothing: the test proved nothing"
    );

    // The verifier: every partition rebuilt from its subject alone (epoch rule) must equal
    // the live cluster, case by case, and hold every acknowledged case.
    let (verified, dropped) = knhk_shell::cluster::verify(&c.nats_urls, "knhk", PARTITIONS, 65536)
        .await
        .expect("verifier replay");
    let live = list_all(&c.grpc[2]).await;
    assert_eq!(
        verified.len(),
        live.len(),
        "verifier and live cluster hold different case sets"
    );
    for v in &verified {
        let (seq, state) = live
            .get(&v.case_id)
            .unwrap_or_else(|| panic!("case {} replays from the log but is not live", v.case_id));
        assert_eq!(*seq, v.seq, "case {}: live seq vs replayed", v.case_id);
        let complete = *state == proto::CaseState::Complete as i32;
        assert_eq!(
            complete,
            v.state == knhk_engine::workers::State::Complete,
            "case {}: live state vs replayed",
            v.case_id
        );
    }
    let by_id: HashMap<u64, &knhk_shell::cluster::VerifiedCase> =
        verified.iter().map(|v| (v.case_id, v)).collect();
    for (case, acked) in &acks.lock().expect("acks").cases {
        let v = by_id
            .get(case)
            .unwrap_or_else(|| panic!("acknowledged case {case} is not in the log"));
        assert!(
            v.seq >= *acked,
            "case {case}: acknowledged seq {acked}, the log has {}",
            v.seq
        );
    }
    println!(
        "verifier: {} cases replayed from the log equal the live state ({dropped} frames of \
         deposed owners dropped by the epoch rule)",
        verified.len()
    );
    for p in c.knhk.iter_mut() {
        p.stop_and_wait("TERM");
    }
    for p in c.nats.iter_mut().chain(c.etcd.iter_mut()) {
        p.stop_and_wait("TERM");
    }
}
