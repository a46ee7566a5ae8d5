//! The event log keeps a workflow's source only while its version is live or a case of it can
//! still be read: a checkpoint writes a deleted version of which no case is held or archived
//! as a stand-in without its model, and a restart from that checkpoint still knows the version
//! as deleted and numbers the next one after it. A deleted version with a case left keeps its
//! source (the case is read through its task and condition names).

mod support;
use support::engine::{register, run_case};

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use knhk_engine::archive::CaseArchive;
use knhk_engine::engine::{Engine, EngineConfig};
use knhk_engine::workflow::DEFAULT_NAMESPACE;
use knhk_engine::EngineError;
use knhk_log::{EventLog, Journal, JournalConfig};

/// An engine of `capacity` slots on the event log in `dir` (segments of 4 KiB, so that a few
/// cases seal one and start a checkpoint) with `archive`, recovered from what the directory
/// holds.
fn open(
    dir: &Path,
    capacity: usize,
    archive: Option<Arc<dyn CaseArchive>>,
) -> (Arc<dyn EventLog>, Arc<Engine>) {
    let journal = Journal::open(JournalConfig {
        segment_bytes: 4096,
        ..JournalConfig::new(dir)
    })
    .expect("journal");
    let log: Arc<dyn EventLog> = journal;
    let cfg = EngineConfig {
        workers: 1,
        case_capacity: capacity,
        pin: false,
        archive,
        ..EngineConfig::default()
    };
    let engine = Engine::start(cfg, log.clone()).expect("engine");
    log.recover(&engine).expect("recover");
    (log, engine)
}

/// [`open`] on a blocking thread (recovery waits for its replay jobs).
async fn reopen(
    dir: &Path,
    capacity: usize,
    archive: Option<Arc<dyn CaseArchive>>,
) -> (Arc<dyn EventLog>, Arc<Engine>) {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || open(&dir, capacity, archive))
        .await
        .expect("open")
}

/// Whether any segment of `dir` holds `needle`.
fn logged(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).expect("data dir").any(|e| {
        let p = e.expect("entry").path();
        p.extension().is_some_and(|x| x == "log")
            && std::fs::read(&p)
                .expect("segment")
                .windows(needle.len())
                .any(|w| w == needle)
    })
}

/// `model` with an XML comment holding `marker` after its root element: the same net, bytes
/// that only this registration logs.
fn marked(model: &[u8], marker: &str) -> Vec<u8> {
    let mut m = model.to_vec();
    m.extend_from_slice(format!("\n<!-- {marker} -->\n").as_bytes());
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_drops_the_source_of_a_version_deleted_with_its_history() {
    let dir = support::scratch("deleted-source").join("data");
    let sequence = support::corpus("yawl/WPC1Sequence.yawl");
    let sync = support::corpus("yawl/WPC3Synchronization.yawl");
    let (log, engine) = reopen(&dir, 64, None).await;
    // "seq": version 1 (to be deleted with its history), version 2 (live).
    register(&log, &engine, "seq", &marked(&sequence, "seq-version-1"));
    for _ in 0..3 {
        run_case(&engine, "seq").await;
    }
    register(&log, &engine, "seq", &marked(&sync, "seq-version-2"));
    // "kept": version 1 deleted with its history kept (its case stays in memory: 64 slots),
    // version 2 live.
    register(&log, &engine, "kept", &marked(&sequence, "kept-version-1"));
    run_case(&engine, "kept").await;
    register(&log, &engine, "kept", &marked(&sync, "kept-version-2"));
    assert!(logged(&dir, b"seq-version-1"));
    engine
        .delete_in(DEFAULT_NAMESPACE, "seq", 1, true)
        .expect("delete seq version 1 with its history");
    engine
        .delete_in(DEFAULT_NAMESPACE, "kept", 1, false)
        .expect("delete kept version 1, its history kept");

    // Cases of the live versions until two checkpoints were written after the deletions.
    let compactions = |log: &Arc<dyn EventLog>| log.stats().compactions.load(Ordering::SeqCst);
    let before = compactions(&log);
    let mut live = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while compactions(&log) < before + 2 {
        assert!(Instant::now() < deadline, "no checkpoint within 60 s");
        live.push(run_case(&engine, "seq").await);
        live.push(run_case(&engine, "kept").await);
    }
    assert!(
        !logged(&dir, b"seq-version-1"),
        "the source of a version deleted with its history is still in the log"
    );
    assert!(logged(&dir, b"seq-version-2"), "a live version's source");
    assert!(
        logged(&dir, b"kept-version-1"),
        "a deleted version whose case is held keeps its source"
    );
    engine.stop();
    log.close();
    drop(engine);
    drop(log);

    // A restart from the checkpoint: version 1 of "seq" is deleted, version 2 serves, the
    // cases of version 2 are back, and the next registration is version 3.
    let (log, engine) = reopen(&dir, 64, None).await;
    match engine.workflow_version_in(DEFAULT_NAMESPACE, "seq", 1) {
        Err(EngineError::VersionDeleted { version: 1, .. }) => {}
        Err(other) => panic!("seq version 1: {other:?}"),
        Ok(_) => panic!("seq version 1 is not deleted after the restart"),
    }
    let v2 = engine.workflow("seq").expect("seq");
    assert_eq!(v2.version, 2);
    assert!(engine
        .workflow_version_in(DEFAULT_NAMESPACE, "kept", 1)
        .is_err());
    let versions = engine
        .versions_in(DEFAULT_NAMESPACE, "seq")
        .expect("versions");
    assert_eq!(versions.len(), 2);
    assert!(versions[0].history_deleted.load(Ordering::Acquire));
    for id in &live {
        engine
            .get_case(*id)
            .unwrap_or_else(|e| panic!("case {id} after the restart: {e}"));
    }
    run_case(&engine, "seq").await;
    let v3 = register(&log, &engine, "seq", &marked(&sequence, "seq-version-3"));
    assert_eq!(v3.version, 3);
    run_case(&engine, "seq").await;
    engine.stop();
    log.close();
    let _ = std::fs::remove_dir_all(dir.parent().expect("scratch"));
}

/// With an archive: a version deleted with its history kept keeps its source while the archive
/// holds a case of it, and loses it at the next checkpoints once that history is deleted too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_version_keeps_its_source_while_the_archive_holds_a_case_of_it() {
    let root = support::scratch("deleted-archived");
    let dir = root.join("data");
    let archive: Arc<dyn CaseArchive> =
        Arc::new(knhk_archive::SqliteArchive::open(&root.join("archive.db")).expect("archive"));
    let sequence = support::corpus("yawl/WPC1Sequence.yawl");
    let sync = support::corpus("yawl/WPC3Synchronization.yawl");
    // 4 slots: finished cases are archived and leave memory as new ones need their slots
    let (log, engine) = reopen(&dir, 4, Some(archive.clone())).await;
    let v1 = register(&log, &engine, "kept", &marked(&sequence, "kept-version-1"));
    let old = run_case(&engine, "kept").await;
    register(&log, &engine, "kept", &marked(&sync, "kept-version-2"));
    engine
        .delete_in(DEFAULT_NAMESPACE, "kept", 1, false)
        .expect("delete version 1, its history kept");
    let compactions = |log: &Arc<dyn EventLog>| log.stats().compactions.load(Ordering::SeqCst);
    let run_until_checkpoints = |n: u64| {
        let (log, engine) = (log.clone(), engine.clone());
        async move {
            let before = compactions(&log);
            let deadline = Instant::now() + Duration::from_secs(60);
            while compactions(&log) < before + n {
                assert!(Instant::now() < deadline, "no checkpoint within 60 s");
                run_case(&engine, "kept").await;
            }
        }
    };
    run_until_checkpoints(2).await;
    assert_eq!(
        archive.holds_workflow(v1.index),
        Ok(true),
        "the old case was archived"
    );
    assert!(
        engine.get_case(old).is_ok_and(|c| c.archived),
        "the old case is read from the archive"
    );
    assert!(
        logged(&dir, b"kept-version-1"),
        "the source stays while the archive holds a case of the version"
    );
    // Its history deleted now: the archive holds none, the source goes.
    engine
        .delete_in(DEFAULT_NAMESPACE, "kept", 1, true)
        .expect("delete version 1's history");
    assert_eq!(archive.holds_workflow(v1.index), Ok(false));
    run_until_checkpoints(2).await;
    assert!(
        !logged(&dir, b"kept-version-1"),
        "the source of a version of which no case is left is still in the log"
    );
    engine.stop();
    log.close();
    drop(engine);
    drop(log);
    let (log, engine) = reopen(&dir, 4, Some(archive)).await;
    assert!(engine
        .workflow_version_in(DEFAULT_NAMESPACE, "kept", 1)
        .is_err());
    assert_eq!(engine.workflow("kept").expect("kept").version, 2);
    run_case(&engine, "kept").await;
    engine.stop();
    log.close();
    let _ = std::fs::remove_dir_all(&root);
}
