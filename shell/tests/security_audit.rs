//! The audit log (issue 12 item 4, docs/security.md "Audit log"): every state-changing call and
//! every refusal has a record (when, principal, namespace, peer, RPC, target ids, result code);
//! an acknowledged change keeps its record through SIGKILL; no token reaches the records or the
//! server's log; `knhk audit` prints the records and finds damage, edits, gaps and reordering;
//! files rotate and the oldest are removed past `max_files`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use knhk_shell::audit::{self, code_name, AuditConfig, AuditLog, Record};
use knhk_shell::proto;
use knhk_shell::proto::knhk_client::KnhkClient;
use tonic::Code;

use support::tokens::{claims, hs256, AUD, ISS, SECRET};

type Stamp = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
type Intercepted =
    KnhkClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Stamp>>;

/// A client that sends `token` (if any) and acts in namespace `ns`.
async fn client(url: &str, token: Option<&str>, ns: &str) -> Intercepted {
    let ch = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let auth: Option<tonic::metadata::MetadataValue<_>> =
        token.map(|t| format!("Bearer {t}").parse().expect("metadata"));
    let ns: tonic::metadata::MetadataValue<_> = ns.parse().expect("namespace");
    let f: Stamp = Box::new(move |mut req: tonic::Request<()>| {
        if let Some(a) = &auth {
            req.metadata_mut().insert("authorization", a.clone());
        }
        req.metadata_mut().insert("knhk-namespace", ns.clone());
        Ok(req)
    });
    KnhkClient::with_interceptor(ch, f)
}

fn serve(dir: &Path, data: &Path, log: &str) -> support::Proc {
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let secret = secret.display().to_string();
    support::spawn(
        data,
        &dir.join(log),
        &[
            "--auth-hs256-secret-file",
            &secret,
            "--auth-issuer",
            ISS,
            "--auth-audience",
            AUD,
        ],
        None,
    )
}

async fn ready(p: &mut support::Proc, token: &str) -> Intercepted {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = p.child.try_wait() {
            panic!("knhk serve exited ({st}): {}", p.log_text());
        }
        if tonic::transport::Endpoint::from_shared(p.url.clone())
            .expect("url")
            .connect()
            .await
            .is_ok()
        {
            let mut c = client(&p.url, Some(token), "team-a").await;
            if c.list_workflows(proto::ListWorkflowsRequest {})
                .await
                .is_ok()
            {
                return c;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "not ready: {}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `knhk audit DIR`: (exit code, records, stderr).
fn knhk_audit(dir: &Path) -> (i32, Vec<Record>, String) {
    let out = Command::new(support::bin())
        .arg("audit")
        .arg(dir)
        .output()
        .expect("knhk audit");
    let recs = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        recs,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn find<'a>(recs: &'a [Record], rpc: &str, code: &str) -> Vec<&'a Record> {
    recs.iter()
        .filter(|r| r.rpc == format!("/knhk.v1.Knhk/{rpc}") && r.code == code)
        .collect()
}

/// Every kind of state-changing call and of refusal leaves its record; the server is then
/// killed with SIGKILL right after the last acknowledgement, and `knhk audit` finds every
/// acknowledged change, in order, chained, with no token anywhere; a restart goes on with the
/// next sequence number in a new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_and_refusal_is_recorded_and_survives_sigkill() {
    let dir = support::scratch("audit");
    let data = dir.join("data");
    let alice = hs256(&claims("alice", &["team-a:admin"]));
    let bob = hs256(&claims("bob", &["team-a:reader"]));
    let mut p = serve(&dir, &data, "serve.log");
    let mut a = ready(&mut p, &alice).await;

    let wf = a
        .register_workflow(proto::RegisterWorkflowRequest {
            model: support::corpus("yawl/WPC1Sequence.yawl"),
            workflow_id: "audited".into(),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .workflow
        .expect("workflow");
    let create = || proto::CreateCaseRequest {
        workflow_id: "audited".into(),
        ..Default::default()
    };
    let c1 = a.create_case(create()).await.expect("create").into_inner();
    let task = c1.enabled_tasks.first().expect("an enabled task").clone();
    a.fire_task(proto::TaskRequest {
        case_id: c1.case_id,
        task: task.clone(),
        ..Default::default()
    })
    .await
    .expect("fire");
    let c2 = a.create_case(create()).await.expect("create").into_inner();
    a.cancel_case(proto::CancelCaseRequest {
        case_id: c2.case_id,
    })
    .await
    .expect("cancel");
    // A refusal by the kernel (recorded once its op has executed) and the multiple-instance
    // calls.
    let e = a
        .fire_task(proto::TaskRequest {
            case_id: c1.case_id,
            task: task.clone(),
            ..Default::default()
        })
        .await
        .expect_err("fired twice");
    assert_eq!(e.code(), Code::FailedPrecondition);
    let mi_model = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../import/tests/models/MultipleInstances.yawl"),
    )
    .expect("the MI model");
    a.register_workflow(proto::RegisterWorkflowRequest {
        model: mi_model,
        workflow_id: "mi".into(),
        manual_silent_tasks: true,
        ..Default::default()
    })
    .await
    .expect("register mi");
    let mi = a
        .create_case(proto::CreateCaseRequest {
            workflow_id: "mi".into(),
            ..Default::default()
        })
        .await
        .expect("create mi")
        .into_inner();
    a.fire_task(proto::TaskRequest {
        case_id: mi.case_id,
        task: "Prepare".into(),
        ..Default::default()
    })
    .await
    .expect("Prepare");
    let inst = |instance| proto::InstanceRequest {
        case_id: mi.case_id,
        task: "Review".into(),
        instance,
        ..Default::default()
    };
    a.start_instances(inst(2)).await.expect("StartInstances");
    let bad_instance = a
        .complete_instance(inst(7))
        .await
        .expect_err("no instance 7")
        .code();
    a.start_instance(inst(0)).await.expect("StartInstance");
    a.complete_instance(inst(0))
        .await
        .expect("CompleteInstance");
    let e = a
        .create_case(proto::CreateCaseRequest {
            workflow_id: "no-such".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown workflow");
    assert_eq!(e.code(), Code::NotFound);

    // Refusals: no token, a reader changing something.
    let mut anon = client(&p.url, None, "team-a").await;
    let e = anon.create_case(create()).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut b = client(&p.url, Some(&bob), "team-a").await;
    let e = b.create_case(create()).await.expect_err("reader");
    assert_eq!(e.code(), Code::PermissionDenied);

    // The last acknowledged change: a bulk message with one good and one refused event.
    let ev = |op: proto::EventOp, case_id: u64, wf: &str| proto::Event {
        op: op as i32,
        case_id,
        workflow_id: wf.into(),
        ..Default::default()
    };
    let batch = proto::SubmitEventsRequest {
        events: vec![
            ev(proto::EventOp::CreateCase, 0, "audited"),
            ev(proto::EventOp::Start, 999_999, ""),
        ],
    };
    let mut answers = a
        .submit_events(tokio_stream::iter(vec![batch]))
        .await
        .expect("SubmitEvents")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    assert_eq!(answer.results.len(), 2);
    p.kill();

    let audit_dir = data.join("audit");
    let (code, recs, err) = knhk_audit(&audit_dir);
    assert_eq!(code, 0, "knhk audit: {err}");
    assert!(err.contains("verified"), "{err}");
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1, "sequence: {recs:#?}");
        assert!(!r.time.is_empty() && r.time_unix_ns > 0, "{r:?}");
    }
    let one = |rpc: &str, code: &str| -> Record {
        let v = find(&recs, rpc, code);
        assert_eq!(v.len(), 1, "{rpc} {code}: {recs:#?}");
        v[0].clone()
    };
    let regs = find(&recs, "RegisterWorkflow", "OK");
    let regs: Vec<_> = regs.iter().map(|r| r.workflow.as_deref()).collect();
    assert_eq!(regs, [Some(wf.workflow_id.as_str()), Some("mi")]);
    for r in recs.iter().filter(|r| r.code == "OK") {
        assert_eq!(r.principal.as_deref(), Some("alice"), "{r:?}");
        assert_eq!(r.via.as_deref(), Some("token"), "{r:?}");
        assert_eq!(r.namespace, "team-a", "{r:?}");
        assert!(
            r.peer
                .as_deref()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{r:?}"
        );
    }
    let creates = find(&recs, "CreateCase", "OK");
    let ids: Vec<_> = creates.iter().map(|r| r.case).collect();
    assert_eq!(
        ids,
        vec![Some(c1.case_id), Some(c2.case_id), Some(mi.case_id)]
    );
    let fires = find(&recs, "FireTask", "OK");
    assert_eq!(
        (fires[0].case, fires[0].task.as_deref()),
        (Some(c1.case_id), Some(task.as_str()))
    );
    let twice = one("FireTask", "FAILED_PRECONDITION");
    assert_eq!(twice.case, Some(c1.case_id));
    assert!(
        twice
            .message
            .as_deref()
            .is_some_and(|m| m.contains("not enabled")),
        "{twice:?}"
    );
    let started = one("StartInstances", "OK");
    assert_eq!(
        (started.case, started.task.as_deref(), started.instance),
        (Some(mi.case_id), Some("Review"), Some(2))
    );
    assert_eq!(one("StartInstance", "OK").instance, Some(0));
    assert_eq!(one("CompleteInstance", "OK").instance, Some(0));
    assert_eq!(
        one("CompleteInstance", code_name(bad_instance)).instance,
        Some(7)
    );
    assert_eq!(one("CancelCase", "OK").case, Some(c2.case_id));
    let nf = one("CreateCase", "NOT_FOUND");
    assert_eq!(nf.workflow.as_deref(), Some("no-such"));
    assert!(nf.message.is_some());
    let un = one("CreateCase", "UNAUTHENTICATED");
    assert_eq!(un.principal, None);
    let denied = one("CreateCase", "PERMISSION_DENIED");
    assert_eq!(denied.principal.as_deref(), Some("bob"));
    let bulk = one("SubmitEvents", "OK");
    assert_eq!((bulk.events, bulk.refused), (Some(2), Some(1)));

    // No token, nor its signature, in the audit files or the server's log.
    let mut bytes = Vec::new();
    for (_, f) in audit::list_files(&audit_dir).expect("files") {
        bytes.extend(std::fs::read(f).expect("read"));
    }
    let text = String::from_utf8_lossy(&bytes).into_owned() + &p.log_text();
    for t in [&alice, &bob] {
        let sig = t.rsplit('.').next().expect("signature");
        assert!(!text.contains(sig), "a token signature was written");
    }

    // A restart continues the sequence and the chain in a new file.
    let mut p = serve(&dir, &data, "serve2.log");
    let mut a = ready(&mut p, &alice).await;
    a.create_case(create()).await.expect("create after restart");
    p.kill();
    let (code, recs2, err) = knhk_audit(&audit_dir);
    assert_eq!(code, 0, "knhk audit: {err}");
    assert_eq!(recs2.len(), recs.len() + 1, "{err}");
    assert_eq!(recs2.last().map(|r| r.seq), Some(recs.len() as u64 + 1));
    assert!(audit::list_files(&audit_dir).expect("files").len() >= 2);
}

fn log_with(dir: &Path, n: u64, max_file_bytes: u64, max_files: usize) -> AuditConfig {
    let cfg = AuditConfig {
        dir: dir.to_path_buf(),
        max_file_bytes,
        max_files,
    };
    let log = AuditLog::open(cfg.clone()).expect("open");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for i in 0..n {
        let mut r = Record::new("/knhk.v1.Knhk/CancelCase", "default", Code::Ok);
        r.case = Some(i);
        rt.block_on(log.append(r)).expect("append");
    }
    log.close();
    cfg
}

fn only_file(dir: &Path) -> PathBuf {
    let files = audit::list_files(dir).expect("files");
    assert_eq!(files.len(), 1);
    files[0].1.clone()
}

/// (offset, length) of each record in an audit file.
fn frames(data: &[u8]) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut at = audit::MAGIC.len();
    while at + 8 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("len")) as usize;
        v.push((at, 8 + len));
        at += 8 + len;
    }
    v
}

fn reframe(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    let mut out = len.to_vec();
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// `knhk audit` (the binary) verifies an intact log and refuses a flipped byte (CRC), an
/// edited record with a valid CRC (chain), a removed record (gap) and two swapped records
/// (order), naming the record; a torn tail (a crash while writing) is reported, not an error.
#[test]
fn knhk_audit_finds_damage_edits_gaps_and_reordering() {
    let dir = support::scratch("audit-verify");
    log_with(&dir, 4, 64 << 20, 0);
    let file = only_file(&dir);
    let good = std::fs::read(&file).expect("read");
    let fr = frames(&good);
    assert_eq!(fr.len(), 4);
    let (code, recs, err) = knhk_audit(&dir);
    assert_eq!((code, recs.len()), (0, 4), "{err}");

    let check = |bytes: Vec<u8>, want_code: i32, want: &str| {
        std::fs::write(&file, &bytes).expect("write");
        let (code, _, err) = knhk_audit(&dir);
        assert_eq!(code, want_code, "{want}: {err}");
        assert!(err.contains(want), "want {want:?} in: {err}");
    };
    // A byte of the second record's payload flipped.
    let mut flipped = good.clone();
    flipped[fr[1].0 + 12] ^= 0x01;
    check(flipped, 1, "CRC mismatch");
    // The second record edited (case 1 -> case 7) with its CRC recomputed.
    let (o, l) = fr[1];
    let text = String::from_utf8(good[o + 8..o + l].to_vec()).expect("json");
    assert!(text.contains("\"case\":1"), "{text}");
    let mut edited = good[..o].to_vec();
    edited.extend(reframe(text.replace("\"case\":1", "\"case\":7").as_bytes()));
    edited.extend_from_slice(&good[o + l..]);
    check(edited, 1, "does not chain");
    // The second record removed.
    let mut gap = good[..o].to_vec();
    gap.extend_from_slice(&good[o + l..]);
    check(gap, 1, "seq 3 follows seq 1");
    // The second and third swapped.
    let (o3, l3) = fr[2];
    let mut swapped = good[..o].to_vec();
    swapped.extend_from_slice(&good[o3..o3 + l3]);
    swapped.extend_from_slice(&good[o..o + l]);
    swapped.extend_from_slice(&good[o3 + l3..]);
    check(swapped, 1, "follows seq");
    // A torn tail: reported, and the log still verifies.
    check(good[..good.len() - 5].to_vec(), 0, "torn tail");
    // The server cuts it off at its next start and goes on after the last whole record.
    log_with(&dir, 1, 64 << 20, 0);
    let (code, recs, err) = knhk_audit(&dir);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("torn"), "{err}");
    let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
}

/// A file past `max_file_bytes` is closed and a new one started; past `max_files` the oldest
/// are removed, and what is left still verifies (from the first record kept).
#[test]
fn files_rotate_and_the_oldest_are_removed() {
    let dir = support::scratch("audit-rotate");
    log_with(&dir, 200, 4096, 3);
    let files = audit::list_files(&dir).expect("files");
    assert_eq!(files.len(), 3, "{files:?}");
    let mut seen = Vec::new();
    let rep = audit::verify(&dir, |r, _| seen.push(r.seq)).expect("verify");
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert_eq!(seen.last(), Some(&200));
    assert!(
        seen[0] > 1,
        "the oldest records were removed with their files"
    );
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1));
}

/// The audit file cannot grow (RLIMIT_FSIZE, as on a full disk): the change whose record
/// failed is answered UNAVAILABLE, never OK, and so is every later change; every change that
/// was acknowledged has its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_record_cannot_be_written_is_not_acknowledged() {
    let dir = support::scratch("audit-full");
    let data = dir.join("data");
    let mut p = support::spawn(
        &data,
        &dir.join("serve.log"),
        &[],
        Some("trap '' XFSZ; ulimit -f 512"),
    );
    let mut c = p.ready().await.expect("start");
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: support::corpus("yawl/WPC1Sequence.yawl"),
        workflow_id: "full".into(),
        ..Default::default()
    })
    .await
    .expect("register");
    let create = || proto::CreateCaseRequest {
        workflow_id: "full".into(),
        ..Default::default()
    };
    let mut acked = Vec::new();
    let refusal = loop {
        assert!(acked.len() < 100_000, "the size limit was never reached");
        match c.create_case(create()).await {
            Ok(r) => acked.push(r.into_inner().case_id),
            Err(s) => break s,
        }
    };
    assert_eq!(refusal.code(), Code::Unavailable, "{refusal:?}");
    assert!(
        refusal
            .message()
            .contains("audit record could not be written"),
        "{}",
        refusal.message()
    );
    let again = c
        .create_case(create())
        .await
        .expect_err("refused from now on");
    assert_eq!(again.code(), Code::Unavailable);
    assert!(again.message().contains("audit log"), "{}", again.message());
    p.kill();
    let (code, recs, err) = knhk_audit(&data.join("audit"));
    assert_eq!(code, 0, "{err}");
    let recorded: Vec<u64> = find(&recs, "CreateCase", "OK")
        .iter()
        .filter_map(|r| r.case)
        .collect();
    for id in &acked {
        assert!(
            recorded.contains(id),
            "acknowledged case {id} has no record"
        );
    }
}

/// The event log's group commit waits for its peer (the audit log, `CommitPeer`): a change is
/// not released to its caller until the peer's records marked at that commit are durable. The
/// peer here is a gate the test opens; the journal and the engine are the real ones.
#[test]
fn the_event_log_releases_a_commit_only_once_its_peer_is_durable() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Condvar, Mutex};

    use knhk_shell::engine::now_ns;
    use knhk_shell::journal::{CommitPeer, JournalConfig};
    use knhk_shell::workflow::Workflow;
    use knhk_shell::EngineConfig;

    #[derive(Default)]
    struct Gate {
        marks: AtomicU64,
        open: Mutex<bool>,
        opened: Condvar,
    }
    impl CommitPeer for Gate {
        fn mark(&self) -> u64 {
            self.marks.fetch_add(1, Ordering::SeqCst) + 1
        }
        fn wait(&self, _mark: u64) -> Result<(), String> {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
            Ok(())
        }
    }

    let dir = support::scratch("commit-peer");
    let gate = Arc::new(Gate::default());
    let cfg = EngineConfig {
        workers: 1,
        case_capacity: 64,
        pin: false,
        ..EngineConfig::default()
    };
    let core = knhk_shell::app::start(
        cfg,
        None,
        Some(JournalConfig::new(dir.join("data"))),
        Some(gate.clone()),
    )
    .expect("engine and journal start");
    let (engine, log) = (core.engine.clone(), core.log.clone().expect("a journal"));
    let model = support::corpus("yawl/WPC1Sequence.yawl");
    let compiled = knhk_engine::catalog::compile(&model, None).expect("model compiles");
    engine
        .register(
            "seq",
            |index, id| {
                Ok(Workflow::new(
                    index,
                    id,
                    compiled.format,
                    &compiled.model,
                    *compiled.net,
                    now_ns(),
                ))
            },
            "seq",
            |wf| log.registered(wf, &model),
        )
        .expect("registered (a workflow record waits for no peer)");
    assert_eq!(gate.marks.load(Ordering::SeqCst), 0);

    let (tx, rx) = std::sync::mpsc::channel();
    let creator = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let r = rt.block_on(engine.create_case("seq", &Default::default()));
            let _ = tx.send(r.map(|c| c.id).map_err(|e| e.to_string()));
        })
    };
    // The creation is written and synced, but held while the peer is not durable.
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "the change was released before its peer was durable"
    );
    assert!(
        gate.marks.load(Ordering::SeqCst) >= 1,
        "the peer was not marked"
    );
    *gate.open.lock().unwrap() = true;
    gate.opened.notify_all();
    let id = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("released once the peer is durable")
        .expect("created");
    assert!(id > 0);
    creator.join().expect("creator");
    core.stop();
}
