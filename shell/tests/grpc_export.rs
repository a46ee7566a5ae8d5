//! ExportXes, the streamed XES export: the same bytes as the unary ExportCaseXes for small
//! exports, its filters (one case, a workflow, a creation-time range) and their refusals, a
//! document past the 64 MiB message limit that streams while the unary call refuses it, and
//! `knhk export` writing the stream to a file. Every document is read back with the import
//! crate's XES reader (`knhk_import::xes`), a reader independent of the writer.

use std::collections::HashMap;
use std::time::Instant;

use knhk_shell::proto::{self, EventOp};
use tokio_stream::StreamExt;
use tonic::Code;

mod support;
use support::grpc::*;

fn request(case_id: u64, workflow_id: &str) -> proto::ExportXesRequest {
    proto::ExportXesRequest {
        case_id,
        workflow_id: workflow_id.into(),
        ..Default::default()
    }
}

/// The chunks of one streamed export, all of them (the stream must end after the last).
async fn stream(c: &mut Client, r: proto::ExportXesRequest) -> Vec<proto::XesChunk> {
    let mut s = c.export_xes(r).await.expect("export_xes").into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.push(chunk.expect("chunk"));
    }
    out
}

/// The document of a stream and its last chunk, after checking the framing: only the last
/// chunk is marked last and carries counts.
fn document(chunks: &[proto::XesChunk]) -> (Vec<u8>, proto::XesChunk) {
    let (last, rest) = chunks.split_last().expect("at least one chunk");
    assert!(last.last, "the stream ended without its last chunk");
    for c in rest {
        assert!(
            !c.last && c.traces == 0 && c.events == 0,
            "counts before the end"
        );
        assert!(!c.xes.is_empty(), "empty chunk");
    }
    let mut doc = Vec::new();
    for c in chunks {
        doc.extend_from_slice(&c.xes);
    }
    let mut last = last.clone();
    last.xes.clear();
    (doc, last)
}

/// Trace names of a document, read with the import crate's reader.
fn trace_names(doc: &[u8]) -> Vec<String> {
    let log = knhk_import::xes::read(doc).expect("the import crate reads the document");
    log.traces
        .iter()
        .map(|t| t.name.clone().unwrap_or_default())
        .collect()
}

async fn create(c: &mut Client, wf: &str) -> proto::Case {
    c.create_case(proto::CreateCaseRequest {
        workflow_id: wf.into(),
        data: HashMap::new(),
        ..Default::default()
    })
    .await
    .expect("create")
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_export_matches_unary_and_filters() {
    let srv = start(config(2, 256, 64)).await;
    let mut c = srv.client().await;
    register(&mut c, "yawl/WPC1Sequence.yawl").await;
    let sync = register(&mut c, "yawl/WPC3Synchronization.yawl")
        .await
        .workflow_id;
    let mut cases = Vec::new();
    for i in 0..24 {
        let case = create(&mut c, "WP1Sequence").await;
        c.fire_task(task(case.case_id, "A")).await.expect("fire");
        if i % 3 == 0 {
            c.fire_task(task(case.case_id, "B")).await.expect("fire");
        }
        cases.push(case);
    }
    let other = create(&mut c, &sync).await;

    // Small exports: the stream's bytes are the unary document's, whatever the chunk size.
    for (case_id, wf) in [(0, "WP1Sequence"), (cases[3].case_id, ""), (0, "")] {
        let unary = c
            .export_case_xes(proto::ExportCaseXesRequest {
                case_id,
                workflow_id: wf.into(),
            })
            .await
            .expect("unary")
            .into_inner();
        for chunk_bytes in [0, 1024, 4096] {
            let chunks = stream(
                &mut c,
                proto::ExportXesRequest {
                    chunk_bytes,
                    ..request(case_id, wf)
                },
            )
            .await;
            let (doc, last) = document(&chunks);
            assert!(
                doc == unary.xes,
                "case {case_id} wf '{wf}' chunk {chunk_bytes}"
            );
            assert_eq!(
                (
                    last.traces,
                    last.events,
                    last.dropped_events,
                    last.evicted_cases
                ),
                (
                    u64::from(unary.traces),
                    unary.events,
                    unary.dropped_events,
                    0
                )
            );
            if chunk_bytes != 0 {
                // Past the header (one element larger than 1 KiB), every chunk fits the size.
                assert!(chunks.len() > 2 || case_id != 0, "{} chunks", chunks.len());
                for ch in chunks.iter().skip(1) {
                    assert!(
                        ch.xes.len() <= chunk_bytes as usize,
                        "{} bytes",
                        ch.xes.len()
                    );
                }
            }
        }
    }
    let all = document(&stream(&mut c, request(0, "WP1Sequence")).await).0;
    let ids: Vec<String> = cases.iter().map(|k| k.case_id.to_string()).collect();
    assert_eq!(
        trace_names(&all),
        ids,
        "one trace per case, in creation order"
    );

    // A creation-time range: [created of case 10, created of case 20).
    let chunks = stream(
        &mut c,
        proto::ExportXesRequest {
            created_from_unix_nanos: cases[10].created_unix_nanos,
            created_to_unix_nanos: cases[20].created_unix_nanos,
            ..request(0, "")
        },
    )
    .await;
    let (doc, last) = document(&chunks);
    let want: Vec<String> = cases
        .iter()
        .filter(|k| {
            (cases[10].created_unix_nanos..cases[20].created_unix_nanos)
                .contains(&k.created_unix_nanos)
        })
        .map(|k| k.case_id.to_string())
        .collect();
    assert!(want.len() >= 10, "case creation times are increasing");
    assert_eq!(trace_names(&doc), want);
    assert_eq!(last.traces, want.len() as u64);
    // Only a lower bound: the cases from case 20 on, the other workflow's included.
    let doc = document(
        &stream(
            &mut c,
            proto::ExportXesRequest {
                created_from_unix_nanos: cases[20].created_unix_nanos,
                ..request(0, "")
            },
        )
        .await,
    )
    .0;
    let names = trace_names(&doc);
    assert!(names.contains(&other.case_id.to_string()));
    assert!(names.contains(&cases[23].case_id.to_string()));
    assert!(!names.contains(&cases[19].case_id.to_string()));

    // One case: its trace; with a workflow it does not run, or outside the range: none.
    let doc = document(&stream(&mut c, request(cases[0].case_id, "")).await).0;
    let log = knhk_import::xes::read(&doc[..]).expect("read");
    assert_eq!(log.traces.len(), 1);
    let acts: Vec<&str> = log.traces[0]
        .events
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        acts,
        ["A", "B"],
        "complete events of case {}",
        cases[0].case_id
    );
    let (_, last) = document(&stream(&mut c, request(cases[0].case_id, &sync)).await);
    assert_eq!(last.traces, 0);
    let (_, last) = document(
        &stream(
            &mut c,
            proto::ExportXesRequest {
                created_from_unix_nanos: cases[1].created_unix_nanos,
                ..request(cases[0].case_id, "")
            },
        )
        .await,
    );
    assert_eq!(last.traces, 0);

    // Bad filters are refused before anything is sent, naming the field.
    let r = c
        .export_xes(proto::ExportXesRequest {
            created_from_unix_nanos: 20,
            created_to_unix_nanos: 10,
            ..request(0, "")
        })
        .await;
    expect_code(r, Code::InvalidArgument, "created_to_unix_nanos");
    for chunk_bytes in [1, 1023, (2 << 20) + 1, u32::MAX] {
        let r = c
            .export_xes(proto::ExportXesRequest {
                chunk_bytes,
                ..request(0, "")
            })
            .await;
        expect_code(r, Code::InvalidArgument, "chunk_bytes");
    }
    expect_code(
        c.export_xes(request(0, "nope")).await,
        Code::NotFound,
        "nope",
    );
    expect_code(c.export_xes(request(777, "")).await, Code::NotFound, "777");

    // `knhk export -o FILE` (no `.gz`): the unary document's bytes, uncompressed.
    let unary = c
        .export_case_xes(proto::ExportCaseXesRequest {
            case_id: 0,
            workflow_id: "WP1Sequence".into(),
        })
        .await
        .expect("unary")
        .into_inner();
    let dir = std::env::temp_dir().join(format!("knhk-export-plain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("seq.xes");
    let out = knhk_export(&srv.url, "WP1Sequence", &path);
    assert!(
        out.status.success(),
        "knhk export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&path).expect("read output") == unary.xes);
    let _ = std::fs::remove_dir_all(&dir);
    srv.shutdown().await;
}

/// A JSON sequence of `n` tasks with long activity names (more XML per event, so that fewer
/// events pass the 64 MiB limit).
fn long_sequence(n: usize) -> (Vec<u8>, Vec<String>) {
    let names: Vec<String> = (0..n)
        .map(|i| format!("step-{i:02}-of-a-sequence-with-a-rather-long-activity-name"))
        .collect();
    let mut tasks = Vec::new();
    for (i, t) in names.iter().enumerate() {
        let to = names.get(i + 1).map_or("end", |s| s.as_str());
        tasks.push(format!(
            r#"{{ "id": "{t}", "flows": [ {{ "to": "{to}" }} ] }}"#
        ));
    }
    let json = format!(
        r#"{{ "name": "long-sequence", "id": "Net",
  "conditions": [ {{ "id": "start", "kind": "input", "flows": [ {{ "to": "{}" }} ] }},
                  {{ "id": "end", "kind": "output" }} ],
  "tasks": [ {} ] }}"#,
        names[0],
        tasks.join(",\n")
    );
    (json.into_bytes(), names)
}

/// Runs `cases` cases of the long sequence to completion through SubmitEvents, one batch per
/// step (every case fires its next task).
async fn run_cases(c: &mut Client, wf: &str, names: &[String], cases: usize) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut out = c
        .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("submit_events")
        .into_inner();
    const BATCH: usize = 10_000;
    let mut ids: Vec<u64> = Vec::with_capacity(cases);
    for n in (0..cases).step_by(BATCH) {
        let events = (n..cases.min(n + BATCH)).map(|_| ev_create(wf)).collect();
        tx.send(proto::SubmitEventsRequest { events })
            .await
            .expect("send");
        for r in out.next().await.expect("answer").expect("ok").results {
            assert_eq!(r.code, 0, "{}", r.message);
            ids.push(r.case_id);
        }
    }
    for (k, name) in names.iter().enumerate() {
        for part in ids.chunks(BATCH) {
            let events = part
                .iter()
                .map(|&id| ev_index(EventOp::Fire, id, k as u32))
                .collect();
            tx.send(proto::SubmitEventsRequest { events })
                .await
                .expect("send");
            for r in out.next().await.expect("answer").expect("ok").results {
                assert_eq!(r.code, 0, "{name}: {}", r.message);
            }
        }
    }
}

/// Past the 64 MiB message limit: the unary export refuses with OUT_OF_RANGE naming
/// ExportXes; the stream sends the whole document in chunks of at most 1 MiB, which the
/// import crate reads back entirely; `knhk export` writes the same document to a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_past_the_message_limit_streams() {
    const CASES: usize = 2000;
    const TASKS: usize = 60;
    let srv = start(config(2, 4096, 64)).await;
    let mut c = srv.client().await;
    let (model, names) = long_sequence(TASKS);
    let wf = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model,
            format: proto::ModelFormat::Json as i32,
            workflow_id: "long".into(),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .workflow
        .expect("workflow");
    // The kernel indices of the tasks, in sequence order.
    let by_name: HashMap<&str, u32> = wf
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), t.index))
        .collect();
    for (k, n) in names.iter().enumerate() {
        assert_eq!(
            by_name.get(n.as_str()),
            Some(&(k as u32)),
            "task index of {n}"
        );
    }
    let t0 = Instant::now();
    run_cases(&mut c, "long", &names, CASES).await;
    eprintln!("{CASES} cases of {TASKS} tasks run in {:?}", t0.elapsed());

    let t0 = Instant::now();
    let r = c
        .export_case_xes(proto::ExportCaseXesRequest {
            case_id: 0,
            workflow_id: "long".into(),
        })
        .await;
    eprintln!("unary refusal in {:?}", t0.elapsed());
    expect_code(r, Code::OutOfRange, "ExportXes");

    let t0 = Instant::now();
    let chunks = stream(&mut c, request(0, "long")).await;
    let took = t0.elapsed();
    let (doc, last) = document(&chunks);
    eprintln!(
        "streamed {} bytes in {} chunks, {} traces, {} events in {took:?}",
        doc.len(),
        chunks.len(),
        last.traces,
        last.events
    );
    assert!(
        doc.len() > 64 << 20,
        "{} bytes: not past the limit",
        doc.len()
    );
    for ch in &chunks {
        assert!(ch.xes.len() <= 1 << 20, "chunk of {} bytes", ch.xes.len());
    }
    assert_eq!(last.traces, CASES as u64);
    assert_eq!(last.events, (CASES * TASKS * 2) as u64);
    assert_eq!((last.dropped_events, last.evicted_cases), (0, 0));
    let log = knhk_import::xes::read(&doc[..]).expect("the import crate reads the document");
    assert_eq!(log.traces.len(), CASES);
    for t in &log.traces {
        let acts: Vec<&str> = t.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(acts, names, "trace {:?}", t.name);
    }

    // `knhk export` streams it to a gzip file (`.gz`: about 2 MB on disk, not 74): the same
    // bytes once decompressed.
    let dir = std::env::temp_dir().join(format!("knhk-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("long.xes.gz");
    let out = knhk_export(&srv.url, "long", &path);
    assert!(
        out.status.success(),
        "knhk export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{CASES} traces")), "{stderr}");
    let mut unzipped = Vec::with_capacity(doc.len());
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&path).expect("open output")),
        &mut unzipped,
    )
    .expect("the file is gzip");
    assert!(unzipped == doc, "file differs");
    assert!(!dir.join("long.xes.gz.part").exists());
    // A refused export leaves no file behind.
    let bad = dir.join("none.xes");
    let out = knhk_export(&srv.url, "nope", &bad);
    assert!(!out.status.success());
    assert!(!bad.exists() && !dir.join("none.xes.part").exists());
    let _ = std::fs::remove_dir_all(&dir);
    srv.shutdown().await;
}

/// `knhk --server URL export --workflow WF -o PATH`, run to its end.
fn knhk_export(url: &str, workflow: &str, path: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_knhk"))
        .args(["--server", url, "export", "--workflow", workflow, "-o"])
        .arg(path)
        .output()
        .expect("run knhk export")
}

/// The server's resident memory, current and peak, in KiB (`/proc/PID/status`).
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak resident memory the kernel reports for `pid`.
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Measurement, not a check (ignored): the server's memory and rate for a large streamed
/// export. A `knhk serve` child (`KNHK_BIN`, default the test build's binary; use the release
/// one for rates) with room for `KNHK_EXPORT_CASES` cases (default 100,000) of a sequence of
/// `KNHK_EXPORT_TASKS` tasks (default 10, two events each); reports the server's resident
/// memory before the export and its peak during it (reset in between), for the stream and for
/// the unary call's refusal.
///
/// `KNHK_BIN=target/release/knhk cargo test -p knhk-shell --test grpc_export -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn export_memory_and_rate() {
    let cases = support::env_u64("KNHK_EXPORT_CASES", 100_000) as usize;
    let tasks = support::env_u64("KNHK_EXPORT_TASKS", 10) as usize;
    let bin = std::env::var("KNHK_BIN").unwrap_or_else(|_| support::bin().to_string());
    let data = support::scratch("export-mem");
    let addr = format!("127.0.0.1:{}", support::free_port());
    let capacity = (cases + 64).to_string();
    let mut child = std::process::Command::new(&bin)
        .args(["serve", "--grpc-addr", &addr, "--workers", "2", "--no-pin"])
        .args(["--case-capacity", &capacity, "--durability", "off"])
        .args(["--drain-grace-ms", "0", "--data-dir"])
        .arg(&data)
        .env("KNHK_HTTP_ADDR", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn knhk serve");
    let pid = child.id();
    let url = format!("http://{addr}");
    let mut c = None;
    for _ in 0..600 {
        if let Ok(k) = proto::knhk_client::KnhkClient::connect(url.clone()).await {
            c = Some(k);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut c = c.expect("server up");
    let (model, names) = long_sequence(tasks);
    // The server answers before its workers run (UNAVAILABLE until then).
    let mut tries = 0;
    while let Err(e) = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: model.clone(),
            format: proto::ModelFormat::Json as i32,
            workflow_id: "long".into(),
            ..Default::default()
        })
        .await
    {
        tries += 1;
        assert!(tries < 600, "register: {e}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let t0 = Instant::now();
    run_cases(&mut c, "long", &names, cases).await;
    eprintln!(
        "{bin}: {cases} cases x {} events run in {:?}",
        tasks * 2,
        t0.elapsed()
    );

    let (before, _) = rss_kib(pid);
    reset_peak(pid);
    let t0 = Instant::now();
    let mut s = c
        .export_xes(request(0, "long"))
        .await
        .expect("export_xes")
        .into_inner();
    let (mut bytes, mut chunks, mut last) = (0u64, 0u64, None);
    while let Some(ch) = s.next().await {
        let ch = ch.expect("chunk");
        bytes += ch.xes.len() as u64;
        chunks += 1;
        if ch.last {
            last = Some(ch);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let (_, peak) = rss_kib(pid);
    let last = last.expect("last chunk");
    assert_eq!(last.traces, cases as u64);
    eprintln!(
        "ExportXes: {} traces, {} events, {:.1} MB in {chunks} chunks, {secs:.2} s: \
         {:.0} events/s, {:.0} MB/s; server RSS {} MiB before, peak {} MiB during (+{} MiB)",
        last.traces,
        last.events,
        bytes as f64 / 1e6,
        last.events as f64 / secs,
        bytes as f64 / 1e6 / secs,
        before >> 10,
        peak >> 10,
        peak.saturating_sub(before) >> 10
    );

    let (before, _) = rss_kib(pid);
    reset_peak(pid);
    let t0 = Instant::now();
    let r = c
        .export_case_xes(proto::ExportCaseXesRequest {
            case_id: 0,
            workflow_id: "long".into(),
        })
        .await;
    let (_, peak) = rss_kib(pid);
    eprintln!(
        "ExportCaseXes: {:?} in {:?}; server RSS {} MiB before, peak {} MiB during (+{} MiB)",
        r.as_ref().map(|_| "ok").map_err(|s| s.code()),
        t0.elapsed(),
        before >> 10,
        peak >> 10,
        peak.saturating_sub(before) >> 10
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data);
}
