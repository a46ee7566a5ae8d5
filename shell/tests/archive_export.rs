//! History that outlives memory, at size (issue 16 items 6 and 7): a `knhk serve` with 1,024
//! case slots and the default SQLite archive runs `KNHK_ARCHIVE_EXPORT_CASES` cases of
//! WPC1Sequence to completion (default 100,000 here and in CI; the full size is
//! `KNHK_ARCHIVE_EXPORT_CASES=1000000`), so all but the last thousand are read from the
//! archive. Then:
//!
//! - the first case, finished all those cases ago, still answers `GetCase` (from the archive);
//! - `knhk export` streams the workflow's XES document (every case, 4 events each) to a
//!   gzip file (`-o seq.xes.gz`: a few MB on disk instead of about 100) while the server's
//!   resident memory grows by less than 32 MiB (its peak during the export against its size
//!   before, `/proc/PID/status`), whatever the document's size: at the default size the
//!   document is about 3 times that bound, so a server that built it in memory would fail
//!   this;
//! - `knhk replay` replays the document on the model: every trace fits (100 %).
//!
//! It prints the export's rate and the server's memory (with the release binary: `KNHK_BIN`);
//! nothing is asserted on time. On disk it needs about 35 MB at the default size (the
//! server's data directory, most of it the SQLite archive, and the gzip document).

use std::time::{Duration, Instant};

use knhk_shell::proto::{self, EventOp};
use tokio_stream::StreamExt;

mod support;
use support::{corpus_path, scratch, spawn};

/// The server's resident memory, current and peak, in KiB.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_cases_export_streamed_with_bounded_memory_and_replay() {
    const BOUND_KIB: u64 = 32 << 10;
    let cases = support::env_u64("KNHK_ARCHIVE_EXPORT_CASES", 100_000);
    let dir = scratch("archive-export");
    let mut p = spawn(
        &dir.join("data"),
        &dir.join("serve.log"),
        &["--case-capacity", "1024", "--durability", "relaxed"],
        None,
    );
    let mut c = p.ready().await.expect("server");
    let model = corpus_path("yawl/WPC1Sequence.yawl");
    c.register_workflow(proto::RegisterWorkflowRequest {
        model: std::fs::read(&model).expect("model"),
        format: proto::ModelFormat::Yawl as i32,
        workflow_id: "seq".into(),
        ..Default::default()
    })
    .await
    .expect("register");

    // Bulk: creations (those refused while the archive frees slots are simply sent again),
    // then both tasks of every created case.
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::SubmitEventsRequest>(2);
    let mut answers = c
        .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("submit_events")
        .into_inner();
    let t0 = Instant::now();
    let mut finished = 0u64;
    let mut first = None;
    while finished < cases {
        let n = (cases - finished).min(512);
        let creates = (0..n)
            .map(|_| proto::Event {
                op: EventOp::CreateCase as i32,
                workflow_id: "seq".into(),
                ..Default::default()
            })
            .collect();
        tx.send(proto::SubmitEventsRequest { events: creates })
            .await
            .expect("send");
        let r = answers.next().await.expect("answer").expect("ok");
        let ids: Vec<u64> = r
            .results
            .iter()
            .filter(|x| x.code == 0)
            .map(|x| x.case_id)
            .collect();
        if ids.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        first = first.or(ids.first().copied());
        let fires = ids
            .iter()
            .flat_map(|&id| {
                ["A", "B"].map(|t| proto::Event {
                    op: EventOp::Fire as i32,
                    case_id: id,
                    task: Some(proto::event::Task::TaskName(t.into())),
                    ..Default::default()
                })
            })
            .collect();
        tx.send(proto::SubmitEventsRequest { events: fires })
            .await
            .expect("send");
        let r = answers.next().await.expect("answer").expect("ok");
        for x in &r.results {
            assert_eq!(x.code, 0, "fire: {}", x.message);
        }
        finished += ids.len() as u64;
    }
    drop(tx);
    eprintln!("{cases} cases run in {:?}", t0.elapsed());

    // The first case, finished `cases` cases ago: from the archive.
    let first = first.expect("a case");
    let case = c
        .get_case(proto::GetCaseRequest {
            case_id: first,
            ..Default::default()
        })
        .await
        .expect("the first case is still readable")
        .into_inner();
    assert!(case.archived, "case {first} comes from the archive");
    assert_eq!(case.state, proto::CaseState::Complete as i32);

    // The streamed export through `knhk export`, the server's memory watched.
    let pid = p.child.id();
    let (before, _) = rss_kib(pid);
    // Resets the peak the kernel reports (VmHWM) to the current size.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak");
    let xes = dir.join("seq.xes.gz");
    let t0 = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_knhk"))
        .args(["--server", &p.url, "export", "--workflow", "seq", "-o"])
        .arg(&xes)
        .output()
        .expect("run knhk export");
    let secs = t0.elapsed().as_secs_f64();
    let (_, peak) = rss_kib(pid);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "knhk export: {stderr}");
    assert!(stderr.contains(&format!("{cases} traces")), "{stderr}");
    let bytes = std::fs::metadata(&xes).expect("the document").len();
    eprintln!(
        "export: {cases} traces, {} events, {:.1} MB gzip-compressed in {secs:.2} s: {:.0} events/s; \
         server RSS {} MiB before, peak {} MiB during (+{} MiB); {}",
        cases * 4,
        bytes as f64 / 1e6,
        (cases * 4) as f64 / secs,
        before >> 10,
        peak >> 10,
        peak.saturating_sub(before) >> 10,
        stderr.trim()
    );
    assert!(
        peak.saturating_sub(before) < BOUND_KIB,
        "the server grew by {} MiB during an export of {} events",
        peak.saturating_sub(before) >> 10,
        cases * 4
    );

    // Every trace replays on the model.
    let t0 = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_knhk"))
        .arg("replay")
        .arg(&model)
        .arg(&xes)
        .output()
        .expect("run knhk replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "knhk replay: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("fitting traces: {cases}/{cases} (100.0%)")),
        "{stdout}"
    );
    eprintln!("replay: {:?}", t0.elapsed());
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
