//! Durability (docs/durability.md): the real `knhk serve` binary is driven over gRPC, killed
//! with SIGKILL at random moments and restarted on the same data directory; every
//! acknowledged event must be there and nothing unacknowledged may appear half-applied. Also:
//! torn and corrupt tails, an unwritable data directory, a full disk (RLIMIT_FSIZE), exact
//! state after replay and across checkpoints, and (ignored) the durable bulk throughput bench.
//!
//! `KNHK_CRASH_ITERS` (default 300) and `KNHK_CRASH_SECS` (default 80) bound the kill loop.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use knhk_shell::engine::EngineConfig;
use knhk_shell::journal::{Durability, JournalConfig};
use knhk_shell::proto::knhk_client::KnhkClient;
use knhk_shell::proto::{self, event::Task, EventOp};
use knhk_shell::server::{self, Running, ServerConfig};
use tokio_stream::StreamExt;
use tonic::Code;

mod support;
use support::{corpus, env_u64, free_port, http_get, scratch, spawn, Client, Rng};

const NAMES: [&str; 3] = ["A", "B", "C"];

fn cycles_model() -> Vec<u8> {
    corpus("yawl/WPC10AbitraryCycles.yawl")
}

async fn register_cycles(c: &mut Client) {
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: cycles_model(),
        format: proto::ModelFormat::Yawl as i32,
        workflow_id: "cycles".into(),
        ..Default::default()
    })
    .await
    .expect("register");
}

// ------------------------------------------------------------------------------- the model

/// What the client knows of one case.
#[derive(Debug, Clone, Default)]
struct Track {
    /// Creation acknowledged.
    acked: bool,
    /// Highest acknowledged seq.
    acked_seq: u64,
    /// Fires sent whose answer never came (the server died first).
    unacked: u64,
    /// Next task to fire (index into NAMES).
    pos: usize,
    /// Enabled tasks as acknowledged at a seq.
    seen: HashMap<u64, Vec<String>>,
}

#[derive(Default)]
struct Model {
    cases: HashMap<u64, Track>,
    /// Creations sent and not answered: such cases may or may not exist after a crash.
    unacked_creates: u64,
    acked_events: u64,
}

type Shared = Arc<Mutex<Model>>;

fn lock(m: &Shared) -> std::sync::MutexGuard<'_, Model> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Largest seq step of one fire (start + complete).
const SEQ_PER_FIRE: u64 = 2;

/// Checks the recovered server against the model; resynchronises the model's positions.
async fn verify(c: &mut Client, model: &Shared) -> Result<u64, String> {
    let mut s = c
        .list_cases(proto::ListCasesRequest::default())
        .await
        .map_err(|e| format!("list_cases: {e}"))?
        .into_inner();
    let mut found: HashMap<u64, proto::Case> = HashMap::new();
    while let Some(cs) = s.next().await {
        let cs = cs.map_err(|e| format!("list_cases stream: {e}"))?;
        found.insert(cs.case_id, cs);
    }
    let mut m = lock(model);
    let mut checked = 0u64;
    for (id, t) in m.cases.iter_mut() {
        let Some(cs) = found.get(id) else {
            if t.acked {
                return Err(format!("acknowledged case {id} is missing after restart"));
            }
            continue;
        };
        // Not half-applied: a fire is atomic, nothing may be left busy; exactly one of the
        // cycle's tasks is enabled.
        if !cs.busy_tasks.is_empty() || cs.enabled_tasks.len() != 1 {
            return Err(format!("case {id} is half-applied: {cs:?}"));
        }
        if cs.seq < t.acked_seq {
            return Err(format!(
                "case {id}: acknowledged seq {} but recovered seq {} (acknowledged events lost)",
                t.acked_seq, cs.seq
            ));
        }
        if cs.seq > t.acked_seq + SEQ_PER_FIRE * t.unacked {
            return Err(format!(
                "case {id}: recovered seq {} is past everything sent (acked {}, {} unanswered)",
                cs.seq, t.acked_seq, t.unacked
            ));
        }
        if let Some(en) = t.seen.get(&cs.seq) {
            if *en != cs.enabled_tasks {
                return Err(format!(
                    "case {id} at seq {}: enabled {:?}, acknowledged {:?}",
                    cs.seq, cs.enabled_tasks, en
                ));
            }
        }
        checked += 1;
        t.acked = true;
        t.acked_seq = cs.seq;
        t.unacked = 0;
        t.pos = NAMES
            .iter()
            .position(|n| cs.enabled_tasks.first().is_some_and(|e| e == n))
            .unwrap_or(0);
        t.seen.clear();
        t.seen.insert(cs.seq, cs.enabled_tasks.clone());
    }
    let unknown = found.keys().filter(|id| !m.cases.contains_key(id)).count() as u64;
    if unknown > m.unacked_creates {
        return Err(format!(
            "{unknown} cases appeared that were never created ({} creations unanswered)",
            m.unacked_creates
        ));
    }
    for (id, cs) in &found {
        if !m.cases.contains_key(id) {
            if !cs.busy_tasks.is_empty() || cs.enabled_tasks.len() != 1 {
                return Err(format!("unacknowledged case {id} is half-applied: {cs:?}"));
            }
            let pos = NAMES
                .iter()
                .position(|n| cs.enabled_tasks.first().is_some_and(|e| e == n))
                .unwrap_or(0);
            m.cases.insert(
                *id,
                Track {
                    acked: true,
                    acked_seq: cs.seq,
                    pos,
                    ..Track::default()
                },
            );
        }
    }
    m.unacked_creates = 0;
    Ok(checked)
}

/// One unary driver: creates a case, then fires its tasks in order until the server dies.
async fn unary_driver(mut c: Client, model: Shared) {
    {
        lock(&model).unacked_creates += 1;
    }
    let created = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "cycles".into(),
            data: HashMap::new(),
            ..Default::default()
        })
        .await;
    let id = match created {
        Ok(r) => {
            let cs = r.into_inner();
            let mut m = lock(&model);
            m.unacked_creates -= 1;
            m.acked_events += 1;
            let mut t = Track {
                acked: true,
                acked_seq: cs.seq,
                ..Track::default()
            };
            t.seen.insert(cs.seq, cs.enabled_tasks.clone());
            m.cases.insert(cs.case_id, t);
            cs.case_id
        }
        Err(_) => return,
    };
    loop {
        let pos = {
            let mut m = lock(&model);
            let Some(t) = m.cases.get_mut(&id) else {
                return;
            };
            t.unacked += 1;
            t.pos
        };
        let r = c
            .fire_task(proto::TaskRequest {
                case_id: id,
                task: NAMES[pos].into(),
                ..Default::default()
            })
            .await;
        match r {
            Ok(r) => {
                let cs = r.into_inner();
                let mut m = lock(&model);
                m.acked_events += 1;
                if let Some(t) = m.cases.get_mut(&id) {
                    t.unacked -= 1;
                    t.acked_seq = t.acked_seq.max(cs.seq);
                    t.pos = (pos + 1) % 3;
                    t.seen.insert(cs.seq, cs.enabled_tasks.clone());
                }
            }
            Err(s) => {
                assert!(
                    matches!(
                        s.code(),
                        Code::Unavailable | Code::Unknown | Code::Cancelled
                    ),
                    "fire refused for a reason other than the crash: {s:?}"
                );
                return;
            }
        }
    }
}

/// The bulk driver: every message fires the next task of each of `ids`, two messages in flight.
async fn bulk_driver(mut c: Client, model: Shared, ids: Vec<u64>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::SubmitEventsRequest>(2);
    let Ok(resp) = c
        .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    else {
        return;
    };
    let mut resp = resp.into_inner();
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u64>>();
    let m2 = model.clone();
    let sender = tokio::spawn(async move {
        loop {
            let events: Vec<proto::Event> = {
                let mut m = lock(&m2);
                ids.iter()
                    .filter_map(|id| {
                        let t = m.cases.get_mut(id)?;
                        // Position of the next fire given what is already in flight.
                        let pos = (t.pos + t.unacked as usize) % 3;
                        t.unacked += 1;
                        Some(proto::Event {
                            op: EventOp::Fire as i32,
                            case_id: *id,
                            task: Some(Task::TaskIndex(pos as u32)),
                            ..Default::default()
                        })
                    })
                    .collect()
            };
            let order: Vec<u64> = events.iter().map(|e| e.case_id).collect();
            // Paced: the cycle cases never finish, so every event stays in the log that each
            // restart replays; a modest rate keeps iterations short.
            tokio::time::sleep(Duration::from_millis(2)).await;
            if sent_tx.send(order).is_err()
                || tx
                    .send(proto::SubmitEventsRequest { events })
                    .await
                    .is_err()
            {
                return;
            }
        }
    });
    while let Some(Ok(r)) = resp.next().await {
        let Some(order) = sent_rx.recv().await else {
            break;
        };
        let mut m = lock(&model);
        for (id, res) in order.iter().zip(r.results.iter()) {
            if res.code != 0 {
                // Only the crash may refuse (UNAVAILABLE): anything else is a driver bug.
                assert_eq!(res.code, Code::Unavailable as i32, "bulk refusal: {res:?}");
                continue;
            }
            m.acked_events += 1;
            if let Some(t) = m.cases.get_mut(id) {
                t.unacked -= 1;
                t.acked_seq = t.acked_seq.max(res.case_seq);
                t.pos = (t.pos + 1) % 3;
            }
        }
    }
    sender.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_loses_no_acknowledged_event() {
    let iters = env_u64("KNHK_CRASH_ITERS", 300);
    let budget = Duration::from_secs(env_u64("KNHK_CRASH_SECS", 80));
    let seed = env_u64(
        "KNHK_CRASH_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1,
    );
    println!("crash loop: seed {seed} (KNHK_CRASH_SEED), up to {iters} iterations in {budget:?}");
    let mut rng = Rng(seed);
    let dir = scratch("crash");
    let data = dir.join("data");
    let model: Shared = Arc::new(Mutex::new(Model::default()));
    let t0 = Instant::now();
    let mut done = 0u64;
    let mut checked_total = 0u64;
    let mut bulk_ids: Vec<u64> = Vec::new();
    while done < iters && t0.elapsed() < budget {
        let mut p = spawn(&data, &dir.join("serve.log"), &["--segment-mb", "1"], None);
        let mut c = match p.ready().await {
            Ok(c) => c,
            Err(e) => panic!("iteration {done}: restart failed: {e}"),
        };
        if done == 0 {
            register_cycles(&mut c).await;
            // The bulk driver's cases, created once, acknowledged before any kill.
            for _ in 0..32 {
                let cs = c
                    .create_case(proto::CreateCaseRequest {
                        workflow_id: "cycles".into(),
                        data: HashMap::new(),
                        ..Default::default()
                    })
                    .await
                    .expect("create")
                    .into_inner();
                bulk_ids.push(cs.case_id);
                let mut t = Track {
                    acked: true,
                    acked_seq: cs.seq,
                    ..Track::default()
                };
                t.seen.insert(cs.seq, cs.enabled_tasks.clone());
                lock(&model).cases.insert(cs.case_id, t);
            }
        } else {
            match verify(&mut c, &model).await {
                Ok(n) => checked_total += n,
                Err(e) => panic!("iteration {done} (seed {seed}): {e}\n{}", p.log_text()),
            }
        }
        let mut tasks = Vec::new();
        for _ in 0..3 {
            tasks.push(tokio::spawn(unary_driver(c.clone(), model.clone())));
        }
        tasks.push(tokio::spawn(bulk_driver(
            c.clone(),
            model.clone(),
            bulk_ids.clone(),
        )));
        tokio::time::sleep(Duration::from_millis(rng.range(5, 60))).await;
        p.kill();
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        done += 1;
    }
    // The last restart: everything acknowledged is there.
    let mut p = spawn(&data, &dir.join("serve.log"), &[], None);
    let mut c = p.ready().await.expect("final restart");
    checked_total += verify(&mut c, &model).await.expect("final verification");
    let log = p.log_text();
    p.kill();
    let acked = lock(&model).acked_events;
    println!(
        "crash loop: {done} SIGKILL/restart iterations in {:.1}s, {acked} acknowledged events, \
         {checked_total} case verifications, 0 lost",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        done >= iters.min(100),
        "only {done} iterations ran (at least 100 expected)"
    );
    assert!(acked > 0, "no event was acknowledged");
    assert!(log.contains("event log replayed"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------------- tails

fn last_segment(data: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data)
        .expect("data dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v.pop().expect("a segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_torn_tails_are_detected_truncated_and_reported() {
    let dir = scratch("tail");
    let data = dir.join("data");
    let mut p = spawn(&data, &dir.join("1.log"), &[], None);
    let mut c = p.ready().await.expect("start");
    register_cycles(&mut c).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        let cs = c
            .create_case(proto::CreateCaseRequest {
                workflow_id: "cycles".into(),
                data: HashMap::new(),
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner();
        ids.push(cs.case_id);
    }
    // The last record: one fire of the last case.
    let last = *ids.last().expect("ids");
    c.fire_task(proto::TaskRequest {
        case_id: last,
        task: "A".into(),
        ..Default::default()
    })
    .await
    .expect("fire");
    p.kill();

    // 1. Flip a byte inside the last record: checksum mismatch, record cut off.
    let seg = last_segment(&data);
    let mut bytes = std::fs::read(&seg).expect("read");
    let len = bytes.len();
    bytes[len - 5] ^= 0x5a;
    std::fs::write(&seg, &bytes).expect("write");
    let http = format!("127.0.0.1:{}", free_port());
    let mut p = spawn(&data, &dir.join("2.log"), &["--http-addr", &http], None);
    let mut c = p.ready().await.expect("restart after flip");
    let log = p.log_text();
    assert!(
        log.contains("torn or corrupt tail") && log.contains("checksum mismatch"),
        "no corruption report in:\n{log}"
    );
    assert!(log.contains("corrupt_tails=1"), "{log}");
    // ... and the metric says so too.
    let metrics = http_get(&http, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "knhk_journal_corrupt_tails_total 1"),
        "no knhk_journal_corrupt_tails_total 1 in /metrics:\n{metrics}"
    );
    for id in &ids {
        c.get_case(proto::GetCaseRequest {
            case_id: *id,
            ..Default::default()
        })
        .await
        .expect("earlier records replayed");
    }
    let cs = c
        .get_case(proto::GetCaseRequest {
            case_id: last,
            ..Default::default()
        })
        .await
        .expect("case")
        .into_inner();
    assert_eq!(
        cs.enabled_tasks,
        vec!["A".to_string()],
        "corrupt record was replayed"
    );
    assert!(std::fs::metadata(&seg).expect("meta").len() < len as u64);
    // A fire appended after the truncation point replays on the next start.
    c.fire_task(proto::TaskRequest {
        case_id: last,
        task: "A".into(),
        ..Default::default()
    })
    .await
    .expect("fire after repair");
    p.kill();

    // 2. Tear the tail (a write cut short): detected, cut, the rest replays.
    let seg = last_segment(&data);
    let len = std::fs::metadata(&seg).expect("meta").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.set_len(len - 3).expect("tear");
    drop(f);
    let mut p = spawn(&data, &dir.join("3.log"), &[], None);
    let mut c = p.ready().await.expect("restart after tear");
    let log = p.log_text();
    assert!(log.contains("torn or corrupt tail"), "{log}");
    let cs = c
        .get_case(proto::GetCaseRequest {
            case_id: last,
            ..Default::default()
        })
        .await
        .expect("case")
        .into_inner();
    assert_eq!(cs.enabled_tasks, vec!["A".to_string()]);
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------------- disks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_data_dir_refuses_to_start_with_a_clear_error() {
    let dir = scratch("unwritable");
    // A file where the data directory should be.
    let data = dir.join("data");
    std::fs::write(&data, b"not a directory").expect("file");
    let mut p = spawn(&data, &dir.join("serve.log"), &[], None);
    let e = p.ready().await.expect_err("must not start");
    assert!(e.contains("is not a directory"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_work_and_keeps_every_acknowledged_event() {
    let dir = scratch("full");
    let data = dir.join("data");
    // RLIMIT_FSIZE of 256 KiB (512-byte blocks), SIGXFSZ ignored: writes past it fail with
    // EFBIG, as on a full disk.
    let http = format!("127.0.0.1:{}", free_port());
    let mut p = spawn(
        &data,
        &dir.join("1.log"),
        // The audit log's file would reach the limit first (security_audit.rs tests that).
        &["--http-addr", &http, "--audit", "off"],
        Some("trap '' XFSZ; ulimit -f 512"),
    );
    let mut c = p.ready().await.expect("start");
    register_cycles(&mut c).await;
    let mut acked: HashMap<u64, u64> = HashMap::new();
    let mut refusal = None;
    'outer: for _ in 0..100_000 {
        let cs = match c
            .create_case(proto::CreateCaseRequest {
                workflow_id: "cycles".into(),
                data: HashMap::new(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => {
                refusal = Some(s);
                break;
            }
        };
        acked.insert(cs.case_id, cs.seq);
        for t in NAMES {
            match c
                .fire_task(proto::TaskRequest {
                    case_id: cs.case_id,
                    task: t.into(),
                    ..Default::default()
                })
                .await
            {
                Ok(r) => {
                    acked.insert(cs.case_id, r.into_inner().seq);
                }
                Err(s) => {
                    refusal = Some(s);
                    break 'outer;
                }
            }
        }
    }
    let s = refusal.expect("the size limit was never reached");
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    assert!(
        s.message().contains("event log") && s.message().contains("refuses work"),
        "unclear refusal: {}",
        s.message()
    );
    // From now on every mutation is refused with the I/O error, never acknowledged.
    let again = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "cycles".into(),
            data: HashMap::new(),
            ..Default::default()
        })
        .await
        .expect_err("must refuse");
    assert_eq!(again.code(), Code::Unavailable);
    // Readiness says the same: not accepting work, and why.
    let ready = http_get(&http, "/health/ready").await;
    assert!(
        ready.contains("not ready") && ready.contains("refusing work"),
        "/health/ready after the log failed: {ready}"
    );
    let bulk = c
        .submit_events(tokio_stream::iter([proto::SubmitEventsRequest {
            events: vec![proto::Event {
                op: EventOp::CreateCase as i32,
                workflow_id: "cycles".into(),
                ..Default::default()
            }],
        }]))
        .await;
    if let Ok(r) = bulk {
        let mut r = r.into_inner();
        if let Some(Ok(m)) = r.next().await {
            assert!(m.results.iter().all(|x| x.code == Code::Unavailable as i32));
        }
    }
    p.kill();
    // Without the limit, every acknowledged event is back.
    let mut p = spawn(&data, &dir.join("2.log"), &[], None);
    let mut c = p.ready().await.expect("restart");
    for (id, seq) in &acked {
        let cs = c
            .get_case(proto::GetCaseRequest {
                case_id: *id,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("acknowledged case {id} lost: {e}"))
            .into_inner();
        assert!(
            cs.seq >= *seq,
            "case {id}: seq {} < acknowledged {seq}",
            cs.seq
        );
    }
    println!(
        "full disk: {} cases acknowledged before the limit, all present after restart",
        acked.len()
    );
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------------- in process

struct InProc {
    url: String,
    running: Running,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

async fn start_in_process(journal: Option<JournalConfig>, workers: usize) -> InProc {
    start_exporting(journal, workers, Default::default()).await
}

/// [`start_in_process`] with `--export-xes export` when given.
async fn start_exporting(
    journal: Option<JournalConfig>,
    workers: usize,
    export: knhk_shell::app::ExportConfig,
) -> InProc {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Running>();
    let cfg = ServerConfig {
        engine: EngineConfig {
            workers,
            case_capacity: 1 << 16,
            pin: false,
            ..EngineConfig::default()
        },
        drain_grace: Duration::from_millis(0),
        export,
        ..ServerConfig::default()
    };
    let done = tokio::spawn(async move {
        let r = server::serve_journaled(
            listener,
            cfg,
            None,
            journal,
            async move {
                let _ = stop_rx.await;
            },
            move |r| {
                let _ = ready_tx.send(r);
            },
        )
        .await;
        if let Err(e) = r {
            eprintln!("serve: {e}");
        }
    });
    let running = ready_rx.await.expect("ready");
    InProc {
        url: format!("http://{addr}"),
        running,
        stop: Some(stop_tx),
        done,
    }
}

impl InProc {
    async fn client(&self) -> Client {
        KnhkClient::connect(self.url.clone())
            .await
            .expect("connect")
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), self.done).await;
    }
}

async fn snapshot(c: &mut Client) -> (Vec<proto::Case>, Vec<u8>) {
    let mut s = c
        .list_cases(proto::ListCasesRequest::default())
        .await
        .expect("list")
        .into_inner();
    let mut v = Vec::new();
    while let Some(cs) = s.next().await {
        v.push(cs.expect("case"));
    }
    v.sort_by_key(|c| c.case_id);
    let xes = c
        .export_case_xes(proto::ExportCaseXesRequest::default())
        .await
        .expect("xes")
        .into_inner()
        .xes;
    (v, xes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_restores_the_exact_state_across_checkpoints() {
    let dir = scratch("exact");
    let mut jc = JournalConfig::new(dir.join("data"));
    // Tiny segments: many rotations and checkpoints during the run.
    jc.segment_bytes = 16 << 10;
    let srv = start_in_process(Some(jc.clone()), 2).await;
    let mut c = srv.client().await;
    register_cycles(&mut c).await;
    // Cases with a task timer armed (an hour: it never fires here): the checkpoints written
    // below carry their timers, and the restart must give them back.
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: br#"{ "name": "deadline", "id": "Net",
          "conditions": [ { "id": "i", "kind": "input", "flows": [ { "to": "A" } ] },
                          { "id": "o", "kind": "output" } ],
          "tasks": [ { "id": "A", "timer": { "trigger": "enabled", "duration": "PT1H" },
                       "flows": [ { "to": "o" } ] } ] }"#
            .to_vec(),
        workflow_id: "deadline".into(),
        ..Default::default()
    })
    .await
    .expect("register deadline");
    let mut timed = Vec::new();
    for _ in 0..20 {
        let cs = c
            .create_case(proto::CreateCaseRequest {
                workflow_id: "deadline".into(),
                ..Default::default()
            })
            .await
            .expect("create timed")
            .into_inner();
        assert_eq!(cs.timers.len(), 1);
        timed.push(cs);
    }
    // Retired early: its record sits in a segment the checkpoints below compact away.
    c.retire_workflow(proto::RetireWorkflowRequest {
        workflow_id: "deadline".into(),
    })
    .await
    .expect("retire deadline");
    // A version deleted early, the same way: its delete record must survive the compaction.
    let doomed = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: br#"{ "name": "doomed", "id": "Net",
              "conditions": [ { "id": "i", "kind": "input", "flows": [ { "to": "A" } ] },
                              { "id": "o", "kind": "output" } ],
              "tasks": [ { "id": "A", "flows": [ { "to": "o" } ] } ] }"#
                .to_vec(),
            workflow_id: "doomed".into(),
            ..Default::default()
        })
        .await
        .expect("register doomed")
        .into_inner()
        .workflow
        .expect("workflow");
    c.delete_workflow(proto::DeleteWorkflowRequest {
        workflow_id: "doomed".into(),
        version: doomed.version,
        delete_history: false,
    })
    .await
    .expect("delete doomed");
    let mut ids = Vec::new();
    for i in 0..400u64 {
        let cs = c
            .create_case(proto::CreateCaseRequest {
                workflow_id: "cycles".into(),
                data: HashMap::new(),
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner();
        ids.push(cs.case_id);
        for k in 0..(i % 7) {
            c.fire_task(proto::TaskRequest {
                case_id: cs.case_id,
                task: NAMES[(k % 3) as usize].into(),
                ..Default::default()
            })
            .await
            .expect("fire");
        }
        if i % 5 == 0 {
            c.cancel_case(proto::CancelCaseRequest {
                case_id: cs.case_id,
            })
            .await
            .expect("cancel");
        }
    }
    let before = snapshot(&mut c).await;
    let stats = srv.running.journal.clone().expect("journal stats");
    srv.stop().await;
    let compactions = stats.compactions.load(std::sync::atomic::Ordering::Relaxed);
    assert!(compactions > 0, "no checkpoint was written");
    let srv = start_in_process(Some(jc), 2).await;
    let mut c = srv.client().await;
    let after = snapshot(&mut c).await;
    let restored = srv
        .running
        .journal
        .clone()
        .expect("journal stats")
        .restored_cases
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        restored > 0,
        "the restart restored no case from a checkpoint's snapshots"
    );
    assert_eq!(before.0.len(), after.0.len());
    for (a, b) in before.0.iter().zip(after.0.iter()) {
        assert_eq!(a, b, "case differs after replay");
    }
    for t in &timed {
        let k = after
            .0
            .iter()
            .find(|k| k.case_id == t.case_id)
            .expect("timed case");
        assert_eq!(
            k.timers, t.timers,
            "armed timers restored from the checkpoint"
        );
    }
    let deadline = c
        .get_workflow(proto::GetWorkflowRequest {
            workflow_id: "deadline".into(),
            version: 0,
        })
        .await
        .expect("deadline")
        .into_inner();
    assert!(deadline.retired, "the retirement survives the checkpoints");
    let e = c
        .get_workflow(proto::GetWorkflowRequest {
            workflow_id: "doomed".into(),
            version: 1,
        })
        .await
        .expect_err("the deletion survives the checkpoints");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("was deleted"), "{e:?}");
    assert_eq!(
        before.1, after.1,
        "XES export (histories, times) differs after replay"
    );
    // New cases never reuse a logged id.
    let cs = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "cycles".into(),
            data: HashMap::new(),
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    assert!(!ids.contains(&cs.case_id));
    srv.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------------- bench

/// `cargo test --release -p knhk-shell --test durability_crash -- --ignored --nocapture bench`
///
/// Mode `sync+export-xes`: `sync` with the XES file exporter (`--export-xes`) following the
/// log, in the same run (its cost to the bulk rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly"]
async fn bench_bulk_throughput_durable_vs_relaxed_vs_memory() {
    let secs = env_u64("KNHK_BENCH_SECS", 5);
    let batch = env_u64("KNHK_BENCH_BATCH", 3072) as usize;
    let workers = env_u64("KNHK_BENCH_WORKERS", 1) as usize;
    for mode in [
        "off",
        "relaxed",
        "sync",
        "sync+export-xes",
        "sync+export-otlp-logs",
    ] {
        let dir = scratch(&format!("bench-{}", mode.replace('+', "-")));
        let collector = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let export = match mode {
            "sync+export-xes" => knhk_shell::app::ExportConfig {
                xes_file: Some(dir.join("events.xes")),
                ..Default::default()
            },
            "sync+export-otlp-logs" => knhk_shell::app::ExportConfig {
                otlp_logs: Some(bench_collector(collector.clone()).await),
                ..Default::default()
            },
            _ => Default::default(),
        };
        let journal = match mode {
            "off" => None,
            m => Some(JournalConfig {
                durability: if m.starts_with("sync") {
                    Durability::Sync
                } else {
                    Durability::Relaxed
                },
                ..JournalConfig::new(dir.join("data"))
            }),
        };
        let srv = start_exporting(journal.clone(), workers, export.clone()).await;
        let mut c = srv.client().await;
        register_cycles(&mut c).await;
        let ncases = (batch / 3).max(1);
        let creates: Vec<proto::Event> = (0..ncases)
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
            .await
            .expect("bulk create")
            .into_inner();
        let ids: Vec<u64> = s
            .next()
            .await
            .expect("answer")
            .expect("ok")
            .results
            .iter()
            .map(|r| r.case_id)
            .collect();
        let mut template = Vec::new();
        for &id in &ids {
            for t in 0..3u32 {
                template.push(proto::Event {
                    op: EventOp::Fire as i32,
                    case_id: id,
                    task: Some(Task::TaskIndex(t)),
                    ..Default::default()
                });
            }
        }
        let stats = srv.running.journal.clone();
        let (f0, e0) = stats.as_ref().map_or((0, 0), |s| {
            (
                s.fsyncs.load(std::sync::atomic::Ordering::Relaxed),
                s.events.load(std::sync::atomic::Ordering::Relaxed),
            )
        });
        let (tx, rx) = tokio::sync::mpsc::channel::<proto::SubmitEventsRequest>(8);
        let mut resp = c
            .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("stream")
            .into_inner();
        let t0 = Instant::now();
        let deadline = Duration::from_secs(secs);
        let tpl = Arc::new(template);
        let sender = tokio::spawn(async move {
            while t0.elapsed() < deadline {
                if tx
                    .send(proto::SubmitEventsRequest {
                        events: tpl.as_ref().clone(),
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let mut events = 0u64;
        let mut failed = 0u64;
        while let Some(r) = resp.next().await {
            let r = r.expect("response");
            events += r.results.len() as u64;
            failed += r.results.iter().filter(|x| x.code != 0).count() as u64;
        }
        let _ = sender.await;
        let el = t0.elapsed().as_secs_f64();
        let (f1, e1) = stats.as_ref().map_or((0, 0), |s| {
            (
                s.fsyncs.load(std::sync::atomic::Ordering::Relaxed),
                s.events.load(std::sync::atomic::Ordering::Relaxed),
            )
        });
        let (fs, ev) = (f1 - f0, e1 - e0);
        println!(
            "durability={mode}: {events} events in {el:.2}s = {:.0} events/s ({failed} refused); \
             {fs} fsyncs = {:.0} fsyncs/s, {:.0} events/fsync",
            events as f64 / el,
            fs as f64 / el,
            if fs > 0 { ev as f64 / fs as f64 } else { 0.0 }
        );
        if export.xes_file.is_some() || export.otlp_logs.is_some() {
            // How far behind the exporter is when the load stops, and how long it takes to
            // write the rest (its count stops growing for 3 s): XES events in the document, or log
            // records the collector received.
            let count = || match &export.xes_file {
                Some(doc) => {
                    std::fs::read_to_string(doc).map_or(0, |d| d.matches("<event>").count())
                }
                None => collector.load(std::sync::atomic::Ordering::Relaxed) as usize,
            };
            let (at_end, t_end) = (count(), Instant::now());
            let (mut last, mut stable) = (at_end, Instant::now());
            while stable.elapsed() < Duration::from_secs(3) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let n = count();
                if n != last {
                    (last, stable) = (n, Instant::now());
                }
            }
            let caught_up = (stable - t_end).as_secs_f64();
            println!(
                "  {}: {at_end} events exported when the load stopped, {last} after \
                 {caught_up:.2}s more ({:.0} events/s over the run and the catch-up){}",
                &mode[5..],
                last as f64 / (el + caught_up),
                export
                    .xes_file
                    .as_ref()
                    .map_or_else(String::new, |doc| format!(
                        "; document {} bytes",
                        std::fs::metadata(doc).map_or(0, |m| m.len())
                    ))
            );
        }
        srv.stop().await;
        if journal.is_some() {
            // Replay speed and size per event, on the log just written.
            let bytes: u64 = std::fs::read_dir(dir.join("data"))
                .expect("dir")
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum();
            let t1 = Instant::now();
            let srv = start_exporting(journal, workers, Default::default()).await;
            let st = srv.running.journal.clone().expect("stats");
            let n = st
                .replayed_events
                .load(std::sync::atomic::Ordering::Relaxed);
            let ns = st.replay_ns.load(std::sync::atomic::Ordering::Relaxed);
            println!(
                "  replay: {n} events in {:.2}s = {:.0} events/s (start to ready {:.2}s); log {bytes} bytes = {:.1} bytes/event",
                ns as f64 / 1e9,
                n as f64 / (ns.max(1) as f64 / 1e9),
                t1.elapsed().as_secs_f64(),
                bytes as f64 / n.max(1) as f64
            );
            srv.stop().await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// An OTLP logs collector for the bench: counts the log records it receives. Returns its URL.
async fn bench_collector(count: Arc<std::sync::atomic::AtomicU64>) -> String {
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
        LogsService, LogsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    struct Counter(Arc<std::sync::atomic::AtomicU64>);
    #[tonic::async_trait]
    impl LogsService for Counter {
        async fn export(
            &self,
            request: tonic::Request<ExportLogsServiceRequest>,
        ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
            let n: usize = request
                .get_ref()
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum();
            self.0
                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            Ok(tonic::Response::new(ExportLogsServiceResponse {
                partial_success: None,
            }))
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind collector");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                LogsServiceServer::new(Counter(count)).max_decoding_message_size(256 << 20),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}
