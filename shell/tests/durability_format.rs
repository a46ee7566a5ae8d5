//! The event log's on-disk format, pinned by golden data directories checked in under
//! `tests/golden/` (a format change must be a deliberate one: bump `FORMAT_VERSION`, keep the
//! old version readable or refuse it with a message, and add a golden for the new one).
//!
//! Each golden holds the same history, written by the release of its version with
//! `--workers 2 --case-capacity 16`: workflow `seq` (WPC1Sequence.yawl); cases 1-3 created;
//! `fire 1 A`, `fire 2 A`, `fire 2 B`, `cancel 3`; 14 more creations (the last one evicts the
//! cancelled case 3 and reuses its slot with generation 1: id (1 << 32) | 3). Version 3's
//! golden (written by the writer below as it was then, 4 KiB segments) then registers `sync`
//! (WPC3Synchronization.yawl), which seals a segment: its checkpoint holds the 16 cases as
//! snapshots, and replay restores them from there. Version 4's golden (`write_golden_current`)
//! holds the same history in version 4 (saved cases in libknhk's format 2, 248 bytes); the
//! records version 4 added for multiple-instance tasks are pinned by `knhk-log`'s
//! `instance_op_roundtrip` and replayed by `grpc_mi.rs`'s restart test.

use std::path::{Path, PathBuf};

use knhk_shell::proto;

mod support;
use support::{list_cases, scratch, spawn, Client};

/// The goldens were written without an archive, which replay does not change: with one, a
/// case that the history evicts (case 3) may be archived on its way out, depending on timing.
const NO_ARCHIVE: &[&str] = &["--archive", "off"];

fn golden(version: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(version)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("golden dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy golden segment");
    }
}

async fn states(c: &mut Client) -> Vec<(u64, i32, u64)> {
    let mut v: Vec<_> = list_cases(c)
        .await
        .into_iter()
        .map(|case| (case.case_id, case.state, case.seq))
        .collect();
    v.sort_unstable();
    v
}

fn segments(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("data dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("wal-"))
        .collect();
    v.sort();
    v
}

async fn golden_history_is_replayed_exactly(version: &str) {
    use proto::CaseState::{Complete, Running};
    let dir = scratch(&format!("golden-{version}"));
    let data = dir.join("data");
    copy_dir(&golden(version), &data);
    let before = segments(&data);
    let log = dir.join("server.log");
    let mut p = spawn(&data, &log, NO_ARCHIVE, None);
    let mut c = p
        .ready()
        .await
        .expect("server on the golden data directory");

    let mut expect: Vec<(u64, i32, u64)> = vec![
        (1, Running as i32, 1),
        (2, Complete as i32, 2),
        ((1 << 32) | 3, Running as i32, 0),
    ];
    expect.extend((4..=16).map(|id| (id, Running as i32, 0)));
    expect.sort_unstable();
    assert_eq!(states(&mut c).await, expect, "{version}: replayed cases");
    let evicted = c
        .get_case(proto::GetCaseRequest {
            case_id: 3,
            ..Default::default()
        })
        .await
        .expect_err("case 3 was evicted");
    assert_eq!(evicted.code(), tonic::Code::NotFound);

    // The allocator came back too: the next case evicts the completed case 2 and takes its
    // slot with a new generation, never a logged id.
    let next = c
        .create_case(proto::CreateCaseRequest {
            workflow_id: "seq".into(),
            data: Default::default(),
            ..Default::default()
        })
        .await
        .expect("create after replay")
        .into_inner()
        .case_id;
    assert_eq!(next, (1 << 32) | 2, "{version}: id after replay");
    p.kill();

    let after = segments(&data);
    if version != "v3" && version != "v4" {
        assert_eq!(
            after.len(),
            before.len() + 1,
            "an older version's log is never appended to: new records go to a new segment \
             ({after:?})"
        );
    }
    let replayed = std::fs::read_to_string(&log).expect("server log");
    let restored = if version == "v3" || version == "v4" {
        16
    } else {
        0
    };
    assert!(
        replayed.contains(&format!("restored_cases={restored}")),
        "{version}: {restored} cases restored from snapshots: {replayed}"
    );
    let mut p = spawn(&data, &log, NO_ARCHIVE, None);
    let mut c = p.ready().await.expect("restart after appending");
    let got = states(&mut c).await;
    assert!(
        got.iter()
            .any(|&(id, st, _)| id == next && st == Running as i32),
        "{version}: the case created after replay survives a restart: {got:?}"
    );
    assert!(!got.iter().any(|&(id, _, _)| id == 2), "case 2 was evicted");
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_data_directory_is_read_and_continued_in_a_new_segment() {
    golden_history_is_replayed_exactly("v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_2_data_directory_is_replayed_exactly_and_continued_in_a_new_segment() {
    golden_history_is_replayed_exactly("v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_3_checkpoint_of_case_snapshots_is_restored_exactly() {
    golden_history_is_replayed_exactly("v3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_4_checkpoint_of_case_snapshots_is_restored_exactly() {
    golden_history_is_replayed_exactly("v4").await;
}

/// Writes the current format version's golden, `tests/golden/v4` (run explicitly, after a
/// deliberate format change; v3's was written the same way by the release of version 3):
/// `cargo test -p knhk-shell --test durability_format -- --ignored write_golden_current`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the current version's golden: run explicitly"]
async fn write_golden_current() {
    use knhk_shell::engine::EngineConfig;
    use knhk_shell::journal::JournalConfig;
    use knhk_shell::server::{self, ServerConfig};
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    let out = golden("v4");
    let _ = std::fs::remove_dir_all(&out);
    let mut jc = JournalConfig::new(&out);
    jc.segment_bytes = 4096;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let cfg = ServerConfig {
        engine: EngineConfig {
            workers: 2,
            case_capacity: 16,
            pin: false,
            ..EngineConfig::default()
        },
        drain_grace: Duration::from_millis(0),
        ..ServerConfig::default()
    };
    let done = tokio::spawn(async move {
        let r = server::serve_journaled(
            listener,
            cfg,
            None,
            Some(jc),
            async move {
                let _ = stop_rx.await;
            },
            move |r| {
                let _ = ready_tx.send(r);
            },
        )
        .await;
        assert!(r.is_ok(), "serve: {r:?}");
    });
    let running = ready_rx.await.expect("ready");
    let stats = running.journal.clone().expect("journal");
    let compactions = || stats.compactions.load(Relaxed);
    let mut c = proto::knhk_client::KnhkClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let register = |id: &str, file: &str| proto::RegisterWorkflowRequest {
        model: support::corpus(file),
        format: proto::ModelFormat::Yawl as i32,
        workflow_id: id.into(),
        ..Default::default()
    };
    c.register_workflow(register("seq", "yawl/WPC1Sequence.yawl"))
        .await
        .expect("register seq");
    // The registration sealed the first segment: let its (empty) checkpoint finish, so that
    // the next seal starts a compaction of its own.
    while compactions() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let create = || proto::CreateCaseRequest {
        workflow_id: "seq".into(),
        data: Default::default(),
        ..Default::default()
    };
    for _ in 0..3 {
        c.create_case(create()).await.expect("create");
    }
    for (case_id, task) in [(1, "A"), (2, "A"), (2, "B")] {
        c.fire_task(proto::TaskRequest {
            case_id,
            task: task.into(),
            ..Default::default()
        })
        .await
        .expect("fire");
    }
    c.cancel_case(proto::CancelCaseRequest { case_id: 3 })
        .await
        .expect("cancel");
    for _ in 0..14 {
        c.create_case(create()).await.expect("create");
    }
    c.register_workflow(register("sync", "yawl/WPC3Synchronization.yawl"))
        .await
        .expect("register sync");
    while compactions() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(());
    done.await.expect("server task");
    eprintln!("wrote {}: {:?}", out.display(), segments(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_format_version_is_refused_with_what_to_do() {
    let dir = scratch("golden-future");
    let data = dir.join("data");
    copy_dir(&golden("v2"), &data);
    // The version field follows the magic (8 bytes), the record length and CRC (8) and the
    // record kind (1): bump it and fix the record's CRC (over the length's bytes, then the
    // record) so that only the version is wrong.
    let seg = data.join(segments(&data).remove(0));
    let mut bytes = std::fs::read(&seg).expect("segment");
    let len = u32::from_le_bytes(bytes[8..12].try_into().expect("len")) as usize;
    bytes[17] = 99;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[8..12]), &bytes[16..16 + len]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&seg, &bytes).expect("write");
    let log = dir.join("server.log");
    let mut p = spawn(&data, &log, &[], None);
    let err = p
        .ready()
        .await
        .expect_err("a version-99 log must not start");
    assert!(
        err.contains("format version 99") && err.contains("reads versions 1 to 4"),
        "the refusal names the version and what to do: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
